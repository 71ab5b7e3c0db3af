/*
 * adapter.c - the `adapter` PEFT plugin: sequential bottleneck adapters
 * (Houlsby et al. 2019, "Parameter-Efficient Transfer Learning for NLP";
 * Pfeiffer et al. 2020), the method the study behind vpeft found the best
 * trade-off for instance segmentation (2-3 stacked after every attention
 * sub-layer of the pixel decoder and the transformer decoder).
 *
 * At each selected sub-layer output site (after attention and/or after the
 * FFN), y (..., d) being the sub-layer's output before its residual add:
 *
 *     for k = 0 .. per_site - 1:
 *         y = y + scaling * up_k(act(down_k(y)))     down: d -> m, up: m -> d
 *
 * each adapter residual on its own input, stacked sequentially. Config
 * fields take AdapterHub's BnConfig names where one exists
 * (reduction_factor, non_linearity, init_weights, scaling); docs/adapter.md
 * lists them all, with the AdapterHub equivalents and what is left out.
 *
 * Parameters, per site and adapter k (all trainable):
 *     <site>.adapters.<k>.down.weight (m, d), .down.bias (m)
 *     <site>.adapters.<k>.up.weight (d, m), .up.bias (d)
 */
#include <math.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <vpeft/vpeft.h>

/* The host's function table, from init() until the library is unloaded. */
static const vp_host_api *H;

enum { MAX_PER_SITE = 4, MAX_BOTTLENECK = 1 << 20 };

/* Which output sites, as bits of `sites`. */
enum { AFTER_ATTN = 1, AFTER_FFN = 2 };

typedef enum act_kind { ACT_RELU, ACT_GELU, ACT_SILU } act_kind;

typedef enum init_kind {
    INIT_DEFAULT, /* down as nn.Linear, up zeros: the base model at step 0 */
    INIT_MAM,     /* AdapterHub "mam_adapter": as default with the down bias 0 */
    INIT_BERT     /* AdapterHub "bert": weights N(0, 0.02), biases 0 */
} init_kind;

typedef struct adapter {
    vp_selector *sel;
    unsigned sites;       /* AFTER_ATTN | AFTER_FFN */
    int per_site;
    int64_t bottleneck;   /* m when > 0; else from reduction_factor */
    double reduction;     /* reduction_factor */
    act_kind act;
    init_kind init;
    float scaling;
} adapter;

/* ---- config -------------------------------------------------------------------- */

static const struct {
    const char *name;
    act_kind act;
} activations[] = {{"relu", ACT_RELU}, {"gelu", ACT_GELU}, {"swish", ACT_SILU},
                   {"silu", ACT_SILU}};

static const struct {
    const char *name;
    init_kind init;
} inits[] = {{"default", INIT_DEFAULT}, {"mam_adapter", INIT_MAM}, {"bert", INIT_BERT}};

static void adapter_destroy(void *self)
{
    adapter *m = self;
    if (!m)
        return;
    if (m->sel)
        H->selector_destroy(m->sel);
    free(m);
}

/* non_linearity: AdapterHub's names for the activations the host has (its
 * "gelu" is the exact erf form, as the host's). */
static vp_status read_activation(const vp_config *cfg, adapter *m)
{
    const char *s;
    vp_status st = H->cfg_string(cfg, "non_linearity", "relu", &s);
    if (st)
        return st;
    for (size_t i = 0; i < sizeof activations / sizeof activations[0]; i++)
        if (!strcmp(s, activations[i].name)) {
            m->act = activations[i].act;
            return VP_OK;
        }
    return H->cfg_fail(cfg, "non_linearity", "\"%s\" is not supported (one of \"relu\", \"gelu\", "
                       "\"swish\", \"silu\")", s);
}

static vp_status read_init(const vp_config *cfg, adapter *m)
{
    const char *s;
    vp_status st = H->cfg_string(cfg, "init_weights", "default", &s);
    if (st)
        return st;
    for (size_t i = 0; i < sizeof inits / sizeof inits[0]; i++)
        if (!strcmp(s, inits[i].name)) {
            m->init = inits[i].init;
            return VP_OK;
        }
    return H->cfg_fail(cfg, "init_weights", "\"%s\" is not supported (one of \"default\", "
                       "\"mam_adapter\", \"bert\")", s);
}

/* sites: a list of "after_attn" and/or "after_ffn"; absent: after_attn. */
static vp_status read_sites(const vp_config *cfg, adapter *m)
{
    vp_cfg_type t = H->cfg_type(cfg, "sites");
    if (t == VP_CFG_ABSENT) {
        m->sites = AFTER_ATTN;
        return VP_OK;
    }
    const vp_config *arr = H->cfg_get(cfg, "sites");
    if (t != VP_CFG_ARRAY || H->cfg_len(arr) < 1)
        return H->cfg_fail(cfg, "sites", "expected a list of \"after_attn\" and/or \"after_ffn\"");
    m->sites = 0;
    for (int i = 0; i < H->cfg_len(arr); i++) {
        const vp_config *e = H->cfg_at(arr, i);
        const char *s;
        vp_status st = H->cfg_string(e, NULL, NULL, &s);
        if (st)
            return st;
        if (!strcmp(s, "after_attn"))
            m->sites |= AFTER_ATTN;
        else if (!strcmp(s, "after_ffn"))
            m->sites |= AFTER_FFN;
        else
            return H->cfg_fail(e, NULL, "\"%s\" is not a site kind (one of \"after_attn\", "
                               "\"after_ffn\")", s);
    }
    return VP_OK;
}

static vp_status read_sizes(const vp_config *cfg, adapter *m)
{
    int64_t per_site, bottleneck;
    vp_status st = H->cfg_int(cfg, "per_site", 1, &per_site);
    if (!st && (per_site < 1 || per_site > MAX_PER_SITE))
        st = H->cfg_fail(cfg, "per_site", "must be from 1 to %d, got %lld", MAX_PER_SITE,
                         (long long)per_site);
    if (st)
        return st;
    m->per_site = (int)per_site;
    /* AdapterHub's default reduction, 16; a number, as its float. */
    if ((st = H->cfg_float(cfg, "reduction_factor", 16.0, &m->reduction)))
        return st;
    if (!(m->reduction > 0) || !isfinite(m->reduction))
        return H->cfg_fail(cfg, "reduction_factor", "must be a number above 0, got %g",
                           m->reduction);
    st = H->cfg_int(cfg, "bottleneck", 0, &bottleneck);
    if (!st && H->cfg_type(cfg, "bottleneck") != VP_CFG_ABSENT &&
        (bottleneck < 1 || bottleneck > MAX_BOTTLENECK))
        st = H->cfg_fail(cfg, "bottleneck", "must be from 1 to %d, got %lld", MAX_BOTTLENECK,
                         (long long)bottleneck);
    m->bottleneck = bottleneck;
    return st;
}

/* scaling: AdapterHub's constant multiplier on the adapter's output; its
 * "learned" and "channel" (trained scalings) are not implemented. */
static vp_status read_scaling(const vp_config *cfg, adapter *m)
{
    if (H->cfg_type(cfg, "scaling") == VP_CFG_STRING)
        return H->cfg_fail(cfg, "scaling", "expected a number (AdapterHub's \"learned\" and "
                           "\"channel\" are not supported)");
    double s;
    vp_status st = H->cfg_float(cfg, "scaling", 1.0, &s);
    if (!st && (!isfinite(s) || s == 0 || fabs(s) > 1e6))
        st = H->cfg_fail(cfg, "scaling", "must be a nonzero number up to 1e6 in magnitude, "
                         "got %g", s);
    m->scaling = (float)s;
    return st;
}

static vp_status adapter_create(const vp_config *cfg, void **self)
{
    static const char *const known[] = {"plugin",        "reduction_factor", "bottleneck",
                                        "non_linearity", "per_site",         "sites",
                                        "modules",       "init_weights",     "scaling"};
    /* AdapterHub's placement switches: a clearer word than "unknown field". */
    if (H->cfg_type(cfg, "mh_adapter") != VP_CFG_ABSENT ||
        H->cfg_type(cfg, "output_adapter") != VP_CFG_ABSENT)
        return H->cfg_fail(cfg, H->cfg_type(cfg, "mh_adapter") ? "mh_adapter" : "output_adapter",
                           "not a field here: say \"sites\": [\"after_attn\"] (mh_adapter), "
                           "[\"after_ffn\"] (output_adapter) or both");
    vp_status st = H->cfg_check_keys(cfg, known, sizeof known / sizeof known[0]);
    if (st)
        return st;
    adapter *m = calloc(1, sizeof *m);
    if (!m)
        return H->error(VP_ERR_NOMEM, "adapter: out of host memory");
    st = read_sizes(cfg, m);
    if (!st)
        st = read_activation(cfg, m);
    /* silu was appended to the 1.0 table after its first members: a host
     * whose table ends before it cannot run "swish". */
    if (!st && m->act == ACT_SILU && !VP_HOST_HAS(H, silu))
        st = H->cfg_fail(cfg, "non_linearity", "vpeft %s has no silu op for \"swish\"",
                         H->version);
    if (!st)
        st = read_sites(cfg, m);
    if (!st)
        st = read_init(cfg, m);
    if (!st)
        st = read_scaling(cfg, m);
    /* No defaults: absent means every output site of the chosen kinds. */
    if (!st)
        st = H->selector_create(cfg, "modules", NULL, 0, &m->sel);
    if (st) {
        adapter_destroy(m);
        return st;
    }
    *self = m;
    return VP_OK;
}

/* ---- attach -------------------------------------------------------------------- */

/* AdapterHub's bottleneck, int(d // reduction_factor) at least 1, with
 * Python's float floor division (fmod-based: 16 // 0.1 is 159, not 160). */
static int64_t bottleneck_of(const adapter *m, int64_t d)
{
    if (m->bottleneck > 0)
        return m->bottleneck;
    double a = (double)d, b = m->reduction;
    double mod = fmod(a, b), div = (a - mod) / b;
    double q = floor(div);
    if (div - q > 0.5)
        q += 1.0;
    return q < 1.0 ? 1 : q > MAX_BOTTLENECK ? MAX_BOTTLENECK : (int64_t)q;
}

/* "<path>.adapters.<k>.<what>" in a new malloc'd string, or NULL. */
static char *param_name(const char *path, int k, const char *what)
{
    size_t len = strlen(path) + strlen(what) + 32;
    char *name = malloc(len);
    if (name)
        snprintf(name, len, "%s.adapters.%d.%s", path, k, what);
    return name;
}

/* One parameter <path>.adapters.<k>.<what> into *out. A failing param()
 * leaves NULL and the graph's error, which the caller returns. */
static vp_status param(vp_build *b, const char *path, int k, const char *what, int ndim,
                       const int64_t *shape, const vp_init *init, vp_gt **out)
{
    char *name = param_name(path, k, what);
    if (!name)
        return H->error(VP_ERR_NOMEM, "adapter: out of host memory");
    *out = H->param(b, name, ndim, shape, init, true);
    free(name);
    return VP_OK;
}

/* The first adapter index free at path: 0, unless an earlier adapter
 * instance of the config attached there too, whose stack this one
 * continues (its names must not collide). */
static vp_status first_free(vp_graph *g, const char *path, int *k)
{
    for (*k = 0;; ++*k) {
        char *name = param_name(path, *k, "down.weight");
        if (!name)
            return H->error(VP_ERR_NOMEM, "adapter: out of host memory");
        bool taken = H->find(g, name) != NULL;
        free(name);
        if (!taken)
            return VP_OK;
    }
}

static vp_gt *activate(vp_graph *g, act_kind a, vp_gt *x)
{
    switch (a) {
    case ACT_GELU:
        return H->gelu(g, x);
    case ACT_SILU:
        return H->silu(g, x);
    case ACT_RELU:
    default:
        return H->relu(g, x);
    }
}

/* At an output site of a chosen kind that the selector matches: per_site
 * adapters on y (..., d), each a residual on the previous one's result.
 * Every other site: y unchanged. */
static vp_status adapter_attach(void *self, vp_build *b, const vp_site *site, vp_gt *x,
                                vp_gt **y, bool *attached)
{
    adapter *m = self;
    (void)x; /* NULL at output sites */
    unsigned kind = site->kind == VP_SITE_ATTN_OUT ? AFTER_ATTN
                    : site->kind == VP_SITE_FFN_OUT ? AFTER_FFN
                                                     : 0;
    if (!(kind & m->sites) || !H->selector_match(m->sel, site->path))
        return VP_OK;

    vp_graph *g = H->graph(b);
    int ndim = H->ndim(*y);
    int64_t d = site->in_features;
    if (H->dtype(*y) != VP_F32 || ndim < 1 || d < 1 || H->shape(*y)[ndim - 1] != d)
        return H->error(VP_ERR_SHAPE, "adapter: %s: expected a float32 output (..., %lld)",
                        site->path, (long long)d);
    int64_t r = bottleneck_of(m, d);

    vp_init down_w = vp_init_kaiming_uniform(sqrtf(5.0f)), up_w = vp_init_zeros();
    vp_init down_b = {VP_INIT_LINEAR_BIAS, (float)d, 0.0f, NULL}, up_b = vp_init_zeros();
    if (m->init == INIT_MAM)
        down_b = vp_init_zeros();
    else if (m->init == INIT_BERT)
        down_w = up_w = vp_init_normal(0.0f, 0.02f), down_b = vp_init_zeros();

    int k0;
    vp_status st = first_free(g, site->path, &k0);
    if (st)
        return st;
    vp_gt *h = *y;
    for (int k = k0; k < k0 + m->per_site; k++) {
        vp_gt *dw = NULL, *db = NULL, *uw = NULL, *ub = NULL;
        st = param(b, site->path, k, "down.weight", 2, (int64_t[]){r, d}, &down_w, &dw);
        if (!st)
            st = param(b, site->path, k, "down.bias", 1, &r, &down_b, &db);
        if (!st)
            st = param(b, site->path, k, "up.weight", 2, (int64_t[]){d, r}, &up_w, &uw);
        if (!st)
            st = param(b, site->path, k, "up.bias", 1, &d, &up_b, &ub);
        if (st)
            return st;
        /* (..., d) -> (..., m) -> (..., d); the scale is skipped at 1 so that
         * the default costs no dispatch. */
        vp_gt *u = H->linear(g, activate(g, m->act, H->linear(g, h, dw, db)), uw, ub);
        if (m->scaling != 1.0f)
            u = H->scale(g, u, m->scaling);
        h = H->add(g, h, u);
    }
    if ((st = H->graph_status(g)) != VP_OK)
        return st;
    if (!h)
        return H->error(VP_ERR_INTERNAL, "adapter: %s: the host returned no tensor", site->path);
    *y = h;
    *attached = true;
    return VP_OK;
}

/* Hugging Face PEFT has no bottleneck adapter; this names the method in
 * adapter_config.json the way HF names its own (upper case), for tools
 * that read vpeft's output (docs/adapter.md). */
static const vp_peft_iface adapter_iface = {
    .size = sizeof adapter_iface,
    .peft_type = "BOTTLENECK_ADAPTER",
    .create = adapter_create,
    .destroy = adapter_destroy,
    .attach = adapter_attach,
};

/* ---- the plugin ------------------------------------------------------------------ */

static vp_status adapter_init(const vp_host_api *host)
{
    H = host;
    return VP_OK;
}

static const void *adapter_get_interface(const char *id)
{
    return strcmp(id, VP_PEFT_IFACE_ID) ? NULL : &adapter_iface;
}

VP_PLUGIN_EXPORT const vp_plugin_desc *vp_plugin_entry(void)
{
    static const vp_plugin_desc d = {
        .size = sizeof d,
        .abi_major = VP_ABI_MAJOR,
        .abi_minor = VP_ABI_MINOR,
        .name = "adapter",
        .kind = VP_PLUGIN_PEFT,
        .version = "0.1.0",
        .description = "sequential bottleneck adapters after attention and FFN sub-layers",
        .init = adapter_init,
        .fini = NULL,
        .get_interface = adapter_get_interface,
    };
    return &d;
}
