/*
 * lora_deform: LoRA on the projections inside multi-scale deformable
 * attention modules (Deformable DETR's value_proj, sampling_offsets,
 * attention_weights, output_proj), the method the study found most
 * parameter-efficient: y = W x + b + scale * B (A x) with A (r, in) and B
 * (out, r), scale = lora_alpha / r, B zero at init so the model starts as
 * the base model.
 *
 * Which modules: the `modules` selector over the deformable modules' paths
 * (backbones and heads declare them with site_module; mask2former's are
 * head.pixel_decoder.encoder.layers.<i>.self_attn). Which projections of
 * them: `targets`, by role (the site path's last component).
 *
 * Config (docs/lora_deform.md):
 *     {"plugin": "lora_deform", "r": 8, "lora_alpha": 8,
 *      "targets": ["sampling_offsets", "value_proj"], "modules": ["head.pixel_decoder.*"]}
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <vpeft/vpeft.h>

static const vp_host_api *H;

static const char *const roles[4] = {"sampling_offsets", "attention_weights", "value_proj",
                                     "output_proj"};

typedef struct lora_deform {
    int64_t r;
    double alpha;
    bool targets[4];
    int init;              /* 0: B zero (default), 1: A gaussian, B zero, 2: B random too */
    vp_selector *modules;
    char tag[72];          /* ".<name>" for an entry named other than "lora_deform", else "" */
} lora_deform;

static void ld_destroy(void *self)
{
    lora_deform *m = self;
    if (!m)
        return;
    if (m->modules)
        H->selector_destroy(m->modules);
    free(m);
}

/* targets: a list of role names (default sampling_offsets, value_proj as
 * the study's scripts). */
static vp_status parse_targets(const vp_config *cfg, lora_deform *m)
{
    vp_cfg_type t = H->cfg_type(cfg, "targets");
    if (t == VP_CFG_ABSENT) {
        m->targets[0] = m->targets[2] = true;
        return VP_OK;
    }
    const vp_config *list = H->cfg_get(cfg, "targets");
    if (t != VP_CFG_ARRAY || H->cfg_len(list) < 1)
        return H->cfg_fail(cfg, "targets", "expected a non-empty list of sampling_offsets, "
                           "attention_weights, value_proj, output_proj");
    for (int i = 0; i < H->cfg_len(list); i++) {
        const char *s;
        vp_status st = H->cfg_string(H->cfg_at(list, i), NULL, NULL, &s);
        if (st)
            return st;
        int k = 0;
        while (k < 4 && strcmp(s, roles[k]))
            k++;
        if (k == 4)
            return H->cfg_fail(H->cfg_at(list, i), NULL, "\"%s\" is not a projection of a "
                               "deformable attention module (sampling_offsets, "
                               "attention_weights, value_proj, output_proj)", s);
        m->targets[k] = true;
    }
    return VP_OK;
}

static vp_status ld_create(const vp_config *cfg, void **self)
{
    static const char *const known[] = {"plugin", "r", "lora_alpha", "targets", "modules",
                                        "init_lora_weights"};
    vp_status st = H->cfg_check_keys(cfg, known, sizeof known / sizeof known[0]);
    if (st)
        return st;
    lora_deform *m = calloc(1, sizeof *m);
    if (!m)
        return H->error(VP_ERR_NOMEM, "lora_deform: out of host memory");
    /* The entry's adapter name in the parameter names, as lora's. */
    const char *name = NULL;
    st = H->cfg_string(cfg, "name", NULL, &name);
    if (!st && name && strcmp(name, "lora_deform"))
        snprintf(m->tag, sizeof m->tag, ".%.64s", name);
    if (!st)
        st = H->cfg_int(cfg, "r", 8, &m->r);
    if (!st && m->r < 1)
        st = H->cfg_fail(cfg, "r", "the rank must be at least 1, got %lld", (long long)m->r);
    if (!st)
        st = H->cfg_float(cfg, "lora_alpha", 8.0, &m->alpha);
    if (!st && !(m->alpha >= 0))
        st = H->cfg_fail(cfg, "lora_alpha", "must be >= 0, got %g", m->alpha);
    if (!st) {
        vp_cfg_type t = H->cfg_type(cfg, "init_lora_weights");
        if (t == VP_CFG_STRING) {
            const char *s;
            st = H->cfg_string(cfg, "init_lora_weights", NULL, &s);
            if (!st && strcmp(s, "gaussian"))
                st = H->cfg_fail(cfg, "init_lora_weights", "expected true, false or "
                                 "\"gaussian\", got \"%s\"", s);
            m->init = 1;
        } else {
            bool on;
            st = H->cfg_bool(cfg, "init_lora_weights", true, &on);
            m->init = on ? 0 : 2;
        }
    }
    if (!st)
        st = parse_targets(cfg, m);
    if (!st)
        st = H->selector_create(cfg, "modules", NULL, 0, &m->modules);
    if (st) {
        ld_destroy(m);
        return st;
    }
    *self = m;
    return VP_OK;
}

static vp_status ld_attach(void *self, vp_build *b, const vp_site *site, vp_gt *x, vp_gt **y,
                           bool *attached)
{
    lora_deform *m = self;
    if (site->kind != VP_SITE_LINEAR || !site->module || site->module_kind != VP_SITE_DEFORM ||
        !H->selector_match(m->modules, site->module))
        return VP_OK;
    int k = 0;
    while (k < 4 && strcmp(site->role, roles[k]))
        k++;
    if (k == 4 || !m->targets[k])
        return VP_OK;

    vp_graph *g = H->graph(b);
    int64_t r = m->r, in = site->in_features, out = site->out_features;
    /* HF PEFT: A as nn.Linear's default (Kaiming uniform, a = sqrt 5) or
     * N(0, 1/r) ("gaussian"); B zero. */
    vp_init ia = m->init == 1 ? vp_init_normal(0.0f, 1.0f / (float)r)
                              : vp_init_kaiming_uniform(2.23606798f);
    vp_init ib = m->init == 2 ? vp_init_normal(0.0f, 0.02f) : vp_init_zeros();
    char name[256];
    snprintf(name, sizeof name, "%s.lora_A%s.weight", site->path, m->tag);
    vp_gt *A = H->param(b, name, 2, (int64_t[]){r, in}, &ia, true);
    snprintf(name, sizeof name, "%s.lora_B%s.weight", site->path, m->tag);
    vp_gt *B = H->param(b, name, 2, (int64_t[]){out, r}, &ib, true);
    vp_gt *d = H->linear(g, H->linear(g, x, A, NULL), B, NULL);
    vp_gt *adapted = H->add(g, *y, H->scale(g, d, (float)(m->alpha / (double)r)));
    vp_status st = H->graph_status(g);
    if (st)
        return st;
    *y = adapted;
    *attached = true;
    return VP_OK;
}

/* W += (alpha / r) B A, in double per element: merged and unmerged
 * outputs agree to float rounding. */
static vp_status ld_merge(void *self, const vp_merge_io *io)
{
    lora_deform *m = self;
    char name[256];
    int nd;
    const int64_t *sa, *sb;
    snprintf(name, sizeof name, "%s.lora_A%s.weight", io->path, m->tag);
    const float *A = io->param(io, name, &nd, &sa);
    snprintf(name, sizeof name, "%s.lora_B%s.weight", io->path, m->tag);
    const float *B = io->param(io, name, &nd, &sb);
    if (!A || !B)
        return H->error(VP_ERR_INTERNAL, "lora_deform: %s: its LoRA parameters are missing",
                        io->path);
    int64_t r = sa[0], in = io->in_features, out = io->out_features;
    double scale = m->alpha / (double)r;
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

static const vp_peft_iface ld_iface = {
    .size = sizeof ld_iface,
    .peft_type = "LORA",
    .create = ld_create,
    .destroy = ld_destroy,
    .attach = ld_attach,
    .merge = ld_merge,
};

static vp_status ld_init(const vp_host_api *host)
{
    H = host;
    return VP_OK;
}

static const void *ld_get_interface(const char *id)
{
    return strcmp(id, VP_PEFT_IFACE_ID) ? NULL : &ld_iface;
}

VP_PLUGIN_EXPORT const vp_plugin_desc *vp_plugin_entry(void)
{
    static const vp_plugin_desc d = {
        .size = sizeof d,
        .abi_major = VP_ABI_MAJOR,
        .abi_minor = VP_ABI_MINOR,
        .name = "lora_deform",
        .kind = VP_PLUGIN_PEFT,
        .version = "0.1.0",
        .description = "LoRA on the projections of multi-scale deformable attention modules",
        .init = ld_init,
        .fini = NULL,
        .get_interface = ld_get_interface,
    };
    return &d;
}
