/*
 * lora.c - the `lora` PEFT plugin: LoRA (Hu et al. 2021, "LoRA: Low-Rank
 * Adaptation of Large Language Models") configured as Hugging Face PEFT's
 * LoraConfig. At every linear site the config selects, the layer's output
 * gets a trainable low-rank update:
 *
 *     y' = W x + b + scale * B (A x)     x (..., in), A (r, in), B (out, r)
 *     scale = lora_alpha / r             (use_rslora: lora_alpha / sqrt(r))
 *
 * With the default initialization (A Kaiming-uniform as nn.Linear, B zero)
 * the adapted model starts as the base model, exactly. The update is two
 * host linears, a scale and an add: no kernel of its own, so the host's
 * backward rules and CPU references cover it.
 *
 * Config (one entry of the run config's "peft" list; docs/lora.md):
 *     {"plugin": "lora",
 *      "target_modules": ["query", "value"],  required: names/globs, one regex,
 *                                             or "all-linear"
 *      "exclude_modules": ["layer.0.*"],      optional, the same forms
 *      "r": 8, "lora_alpha": 8, "lora_dropout": 0.0, "use_rslora": false,
 *      "init_lora_weights": true,             true, "gaussian" or false
 *      "rank_pattern": {"value": 16}, "alpha_pattern": {"value": 32},
 *      "bias": "none"}
 * Parameters: <site path>.lora_A.weight (r, in), <site path>.lora_B.weight
 * (out, r), trainable.
 */
#define _POSIX_C_SOURCE 200809L /* fnmatch */

#include <fnmatch.h>
#include <math.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <vpeft/vpeft.h>

/* The host's function table, from init() until the library is unloaded. */
static const vp_host_api *H;

/* Larger ranks are almost certainly a typo; the limit keeps r * in_features
 * far from overflowing anything. */
#define LORA_MAX_RANK (1 << 20)

typedef enum lora_init {
    LORA_INIT_DEFAULT,  /* true: A Kaiming-uniform (a = sqrt 5), B zeros */
    LORA_INIT_GAUSSIAN, /* "gaussian": A N(0, (1/r)^2), B zeros */
    LORA_INIT_NONE      /* false: both as nn.Linear leaves them (Kaiming-uniform) */
} lora_init;

/* One member of rank_pattern or alpha_pattern: a glob matched as a
 * target_modules list entry, and its value (a rank or an alpha). The
 * string is the host's config string, valid until destroy. */
typedef struct lora_pattern {
    const char *glob;
    double value;
} lora_pattern;

typedef struct lora {
    vp_selector *targets;   /* NULL with all_linear */
    vp_selector *exclude;   /* NULL: nothing excluded */
    bool all_linear;
    int64_t r;
    double alpha;
    double dropout;         /* lora_dropout: on the LoRA branch's input, training only */
    bool rslora;
    lora_init init;
    lora_pattern *ranks, *alphas;
    uint32_t n_ranks, n_alphas;
    char tag[72];           /* ".<name>" for an entry named other than "lora", else "" */
} lora;

/* ---- config ------------------------------------------------------------------ */

/* As the host's selectors match a list entry: the glob against the whole
 * path or against its last dot-separated components, so "value" and
 * "attention.*" both match "backbone.encoder.layer.0.attention.attention.value". */
static bool glob_match(const char *glob, const char *path)
{
    if (!fnmatch(glob, path, 0))
        return true;
    for (const char *p = strchr(path, '.'); p; p = strchr(p + 1, '.'))
        if (!fnmatch(glob, p + 1, 0))
            return true;
    return false;
}

/* The value of the first pattern (in file order) matching path, as HF
 * PEFT's get_pattern_key takes the first matching key; def when none. */
static double pattern_value(const lora_pattern *p, uint32_t n, const char *path, double def)
{
    for (uint32_t i = 0; i < n; i++)
        if (glob_match(p[i].glob, path))
            return p[i].value;
    return def;
}

static vp_status rank_error(const vp_config *c, const char *key, int64_t r)
{
    return r < 1 ? H->cfg_fail(c, key, "a rank must be at least 1, got %lld", (long long)r)
                 : H->cfg_fail(c, key, "a rank of %lld is more than vpeft allows (%d)",
                               (long long)r, LORA_MAX_RANK);
}

/* rank_pattern (rank true: integers >= 1) or alpha_pattern (numbers >= 0):
 * an object from patterns to values; absent, null and {} mean none. */
static vp_status read_patterns(const vp_config *cfg, const char *key, bool rank,
                               lora_pattern **out, uint32_t *n_out)
{
    vp_cfg_type t = H->cfg_type(cfg, key);
    if (t == VP_CFG_ABSENT || t == VP_CFG_NULL)
        return VP_OK;
    if (t != VP_CFG_OBJECT)
        return H->cfg_fail(cfg, key, "expected an object from module names or globs to %s",
                           rank ? "ranks" : "alphas");
    const vp_config *obj = H->cfg_get(cfg, key);
    int n = H->cfg_len(obj);
    if (n <= 0)
        return VP_OK;
    lora_pattern *p = calloc((size_t)n, sizeof *p);
    if (!p)
        return H->error(VP_ERR_NOMEM, "lora: out of host memory");
    *out = p; /* freed by lora_destroy, also after an error */
    for (int i = 0; i < n; i++) {
        const vp_config *m = H->cfg_at(obj, i);
        const char *glob = H->cfg_key(m);
        if (!glob || !glob[0])
            return H->cfg_fail(m, NULL, "an empty pattern");
        p[i].glob = glob;
        if (rank) {
            int64_t r;
            vp_status st = H->cfg_int(m, NULL, 0, &r);
            if (st)
                return st;
            if (r < 1 || r > LORA_MAX_RANK)
                return rank_error(m, NULL, r);
            p[i].value = (double)r;
        } else {
            double a;
            vp_status st = H->cfg_float(m, NULL, 0.0, &a);
            if (st)
                return st;
            if (!(a >= 0.0) || !isfinite(a))
                return H->cfg_fail(m, NULL, "an alpha must be a number >= 0, got %g", a);
            p[i].value = a;
        }
        *n_out = (uint32_t)(i + 1);
    }
    return VP_OK;
}

/* target_modules: required, as HF (whose None means "the architecture's
 * defaults", which vpeft's sites have no table of). "all-linear" is HF's
 * shorthand for every linear layer. */
static vp_status read_targets(const vp_config *cfg, lora *m)
{
    vp_cfg_type t = H->cfg_type(cfg, "target_modules");
    if (t == VP_CFG_ABSENT || t == VP_CFG_NULL)
        return H->cfg_fail(cfg, "target_modules", "missing: which linear layers to adapt: "
                           "names or globs ([\"query\", \"value\"]), one regular expression, "
                           "or \"all-linear\"");
    if (t == VP_CFG_STRING) {
        const char *s;
        vp_status st = H->cfg_string(cfg, "target_modules", NULL, &s);
        if (st)
            return st;
        if (!strcmp(s, "all-linear")) {
            m->all_linear = true;
            return VP_OK;
        }
    }
    return H->selector_create(cfg, "target_modules", NULL, 0, &m->targets);
}

/* Fields HF's LoraConfig has and this plugin refuses, each with what to do
 * instead. Absent, null, false, "none" and empty lists are their defaults. */
static vp_status read_refused(const vp_config *cfg)
{
    const char *bias;
    vp_status st = H->cfg_string(cfg, "bias", "none", &bias);
    if (st)
        return st;
    if (strcmp(bias, "none"))
        return H->cfg_fail(cfg, "bias", "\"%s\" is not supported, only \"none\": train biases "
                           "with train.trainable (e.g. [\"*.bias\"])", bias);
    vp_cfg_type t = H->cfg_type(cfg, "modules_to_save");
    const vp_config *mts = H->cfg_get(cfg, "modules_to_save");
    bool empty = t == VP_CFG_ABSENT || t == VP_CFG_NULL ||
                 (t == VP_CFG_ARRAY && H->cfg_len(mts) == 0);
    if (!empty)
        return H->cfg_fail(cfg, "modules_to_save", "not supported: train whole modules with "
                           "train.trainable, globs over parameter names (e.g. "
                           "[\"head.classifier.*\"])");
    return VP_OK;
}

static void lora_destroy(void *self)
{
    lora *m = self;
    if (!m)
        return;
    if (m->targets)
        H->selector_destroy(m->targets);
    if (m->exclude)
        H->selector_destroy(m->exclude);
    free(m->ranks);
    free(m->alphas);
    free(m);
}

static vp_status lora_create(const vp_config *cfg, void **self)
{
    static const char *const known[] = {"plugin", "r", "lora_alpha", "lora_dropout",
                                        "target_modules", "exclude_modules", "use_rslora",
                                        "init_lora_weights", "rank_pattern", "alpha_pattern",
                                        "bias", "modules_to_save"};
    vp_status st = H->cfg_check_keys(cfg, known, sizeof known / sizeof known[0]);
    if (st)
        return st;
    lora *m = calloc(1, sizeof *m);
    if (!m)
        return H->error(VP_ERR_NOMEM, "lora: out of host memory");

    /* The entry's adapter name goes into the parameter names as HF PEFT's
     * does (<path>.lora_A.<name>.weight); the default keeps 1.0's names. */
    const char *name = NULL;
    st = H->cfg_string(cfg, "name", NULL, &name);
    if (!st && name && strcmp(name, "lora"))
        snprintf(m->tag, sizeof m->tag, ".%.64s", name);
    if (!st)
        st = H->cfg_int(cfg, "r", 8, &m->r);
    if (!st && (m->r < 1 || m->r > LORA_MAX_RANK))
        st = rank_error(cfg, "r", m->r);
    if (!st)
        st = H->cfg_float(cfg, "lora_alpha", 8.0, &m->alpha);
    if (!st && (!(m->alpha >= 0.0) || !isfinite(m->alpha)))
        st = H->cfg_fail(cfg, "lora_alpha", "must be a number >= 0, got %g", m->alpha);
    if (!st)
        st = H->cfg_float(cfg, "lora_dropout", 0.0, &m->dropout);
    if (!st && !(m->dropout >= 0.0 && m->dropout < 1.0))
        st = H->cfg_fail(cfg, "lora_dropout", "must be in [0, 1), got %g", m->dropout);
    if (!st && m->dropout > 0.0 && !VP_HOST_HAS(H, dropout))
        st = H->cfg_fail(cfg, "lora_dropout", "this vpeft (%s) has no dropout: set 0",
                         H->version);
    if (!st)
        st = H->cfg_bool(cfg, "use_rslora", false, &m->rslora);
    if (!st) {
        /* HF's init_lora_weights is a bool or the name of an initializer. */
        vp_cfg_type t = H->cfg_type(cfg, "init_lora_weights");
        if (t == VP_CFG_STRING) {
            const char *s;
            st = H->cfg_string(cfg, "init_lora_weights", NULL, &s);
            if (!st && !strcmp(s, "gaussian"))
                m->init = LORA_INIT_GAUSSIAN;
            else if (!st)
                st = H->cfg_fail(cfg, "init_lora_weights", "\"%s\" is not supported (true, "
                                 "false or \"gaussian\")", s);
        } else {
            bool on;
            st = H->cfg_bool(cfg, "init_lora_weights", true, &on);
            m->init = on ? LORA_INIT_DEFAULT : LORA_INIT_NONE;
        }
    }
    if (!st)
        st = read_refused(cfg);
    if (!st)
        st = read_targets(cfg, m);
    if (!st) {
        vp_cfg_type t = H->cfg_type(cfg, "exclude_modules");
        if (t != VP_CFG_ABSENT && t != VP_CFG_NULL)
            st = H->selector_create(cfg, "exclude_modules", NULL, 0, &m->exclude);
    }
    if (!st)
        st = read_patterns(cfg, "rank_pattern", true, &m->ranks, &m->n_ranks);
    if (!st)
        st = read_patterns(cfg, "alpha_pattern", false, &m->alphas, &m->n_alphas);
    if (st) {
        lora_destroy(m);
        return st;
    }
    *self = m;
    return VP_OK;
}

/* ---- attach -------------------------------------------------------------------- */

/* "<path><part><tag>.weight", malloc'd (NULL with the error set). */
static char *param_name(const lora *m, const char *path, const char *part)
{
    size_t len = strlen(path) + strlen(part) + strlen(m->tag) + sizeof ".weight";
    char *s = malloc(len);
    if (!s) {
        H->error(VP_ERR_NOMEM, "lora: out of host memory");
        return NULL;
    }
    snprintf(s, len, "%s%s%s.weight", path, part, m->tag);
    return s;
}

/* Whether path is "<m>.out_proj" of a module with a packed
 * "<m>.in_proj_weight": the out_proj of a PyTorch nn.MultiheadAttention
 * (HF Mask2Former's cross-attention). Its forward never runs in PyTorch
 * (the module reads out_proj.weight directly), so HF PEFT documents that
 * LoRA targeting it is ignored. */
static bool mha_out_proj(vp_graph *g, const char *path)
{
    size_t n = strlen(path), k = strlen(".out_proj");
    char name[512];
    if (n <= k || strcmp(path + n - k, ".out_proj") || n - k + 16 > sizeof name)
        return false;
    snprintf(name, sizeof name, "%.*s.in_proj_weight", (int)(n - k), path);
    return H->find(g, name) != NULL;
}

/* At a linear site this instance selects: A (r, in) and B (out, r) under
 * the site's path, and y (..., out) -> y + scale * B (A x), x (..., in).
 * Every other site: y unchanged. */
static vp_status lora_attach(void *self, vp_build *b, const vp_site *site, vp_gt *x, vp_gt **y,
                             bool *attached)
{
    lora *m = self;
    if (site->kind != VP_SITE_LINEAR || !site->path)
        return VP_OK;
    if (!m->all_linear && !H->selector_match(m->targets, site->path))
        return VP_OK;
    if (m->exclude && H->selector_match(m->exclude, site->path))
        return VP_OK;

    vp_graph *g = H->graph(b);
    /* Not adapted: HF's all-linear takes it and its LoRA there does
     * nothing; any other selection of it is the host's error after the
     * build (vp_selector_check_modules), where the model is complete. */
    if (mha_out_proj(g, site->path))
        return VP_OK;
    int64_t in = site->in_features, out = site->out_features;
    int nd = x ? H->ndim(x) : 0;
    if (!x || H->dtype(x) != VP_F32 || nd < 1 || H->shape(x)[nd - 1] != in)
        return H->error(VP_ERR_SHAPE, "lora: %s: expected a float32 input (..., %lld)",
                        site->path, (long long)in);

    int64_t r = (int64_t)pattern_value(m->ranks, m->n_ranks, site->path, (double)m->r);
    double alpha = pattern_value(m->alphas, m->n_alphas, site->path, m->alpha);
    double scale = m->rslora ? alpha / sqrt((double)r) : alpha / (double)r;

    char *na = param_name(m, site->path, ".lora_A");
    char *nb = na ? param_name(m, site->path, ".lora_B") : NULL;
    if (!nb) {
        free(na);
        return VP_ERR_NOMEM;
    }
    /* Two lora entries on one site would make the same names; say which
     * rather than the host's generic duplicate-name error. */
    if (H->find(g, na)) {
        vp_status st = H->error(VP_ERR_CONFIG, "lora: %s: already adapted by an earlier lora "
                                "entry (parameter %s exists); make their target_modules "
                                "disjoint or give one a \"name\"", site->path, na);
        free(na);
        free(nb);
        return st;
    }
    /* HF's reset_lora_parameters: true -> A as nn.Linear's weight, B 0;
     * "gaussian" -> A N(0, 1/r), B 0; false -> both keep nn.Linear's
     * default (Kaiming-uniform, a = sqrt 5, fan_in = in and r). */
    vp_init ia = m->init == LORA_INIT_GAUSSIAN ? vp_init_normal(0.0f, (float)(1.0 / (double)r))
                                               : vp_init_kaiming_uniform(sqrtf(5.0f));
    vp_init ib = m->init == LORA_INIT_NONE ? vp_init_kaiming_uniform(sqrtf(5.0f))
                                           : vp_init_zeros();
    vp_gt *A = H->param(b, na, 2, (int64_t[]){r, in}, &ia, true);
    vp_gt *B = A ? H->param(b, nb, 2, (int64_t[]){out, r}, &ib, true) : NULL;
    free(na);
    free(nb);

    /* HF: B (A dropout(x)); dropout is the identity outside training. */
    vp_gt *xd = m->dropout > 0.0 ? H->dropout(g, x, (float)m->dropout) : x;
    vp_gt *d = H->linear(g, H->linear(g, xd, A, NULL), B, NULL); /* (..., r) -> (..., out) */
    if (scale != 1.0)
        d = H->scale(g, d, (float)scale);
    vp_gt *adapted = H->add(g, *y, d);
    vp_status st = H->graph_status(g);
    if (st)
        return st;
    if (!adapted)
        return H->error(VP_ERR_INTERNAL, "lora: %s: the host returned no tensor", site->path);
    H->log(VP_LOG_DEBUG, "lora: %s: r %lld, alpha %g, scale %g", site->path, (long long)r,
           alpha, scale);
    *y = adapted;
    *attached = true;
    return VP_OK;
}

/* vpeft merge: W += scale B A at a site, the scale as attach() computed
 * it (rank_pattern, alpha_pattern, use_rslora); in double per element. */
static vp_status lora_merge(void *self, const vp_merge_io *io)
{
    lora *m = self;
    char *na = param_name(m, io->path, ".lora_A");
    char *nb = na ? param_name(m, io->path, ".lora_B") : NULL;
    if (!nb) {
        free(na);
        return H->error(VP_ERR_NOMEM, "lora: out of host memory");
    }
    int nd;
    const int64_t *sa, *sb;
    const float *A = io->param(io, na, &nd, &sa), *B = io->param(io, nb, &nd, &sb);
    free(na);
    free(nb);
    if (!A || !B)
        return H->error(VP_ERR_INTERNAL, "lora: %s: its LoRA parameters are missing", io->path);
    int64_t r = sa[0], in = io->in_features, out = io->out_features;
    double alpha = pattern_value(m->alphas, m->n_alphas, io->path, m->alpha);
    double scale = m->rslora ? alpha / sqrt((double)r) : alpha / (double)r;
    /* A host that predates unmerging passes no sign: fold in. */
    double sign = io->size >= offsetof(vp_merge_io, sign) + sizeof io->sign ? io->sign : 1.0;
    for (int64_t o = 0; o < out; o++)
        for (int64_t i = 0; i < in; i++) {
            double s = 0;
            for (int64_t k = 0; k < r; k++)
                s += (double)B[o * r + k] * A[k * in + i];
            io->weight[o * in + i] = (float)(io->weight[o * in + i] + sign * scale * s);
        }
    return VP_OK;
}

static const vp_peft_iface lora_iface = {
    .size = sizeof lora_iface,
    .peft_type = "LORA",
    .create = lora_create,
    .destroy = lora_destroy,
    .attach = lora_attach,
    .merge = lora_merge,
};

/* ---- the plugin ---------------------------------------------------------------- */

static vp_status lora_init_plugin(const vp_host_api *host)
{
    H = host;
    return VP_OK;
}

static const void *lora_get_interface(const char *id)
{
    return strcmp(id, VP_PEFT_IFACE_ID) ? NULL : &lora_iface;
}

VP_PLUGIN_EXPORT const vp_plugin_desc *vp_plugin_entry(void)
{
    static const vp_plugin_desc d = {
        .size = sizeof d,
        .abi_major = VP_ABI_MAJOR,
        .abi_minor = VP_ABI_MINOR,
        .name = "lora",
        .kind = VP_PLUGIN_PEFT,
        .version = "0.1.0",
        .description = "LoRA: trainable low-rank updates B A of linear layers (HF PEFT LoraConfig)",
        .init = lora_init_plugin,
        .fini = NULL,
        .get_interface = lora_get_interface,
    };
    return &d;
}
