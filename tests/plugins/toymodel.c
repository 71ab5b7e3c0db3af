/*
 * A toy backbone and a toy head, as real plugins (SDK headers only), for
 * the model-assembly tests in tests/check_model.c: built twice from this
 * source, -DTOY_BACKBONE into vpeft-toybackbone.so and -DTOY_HEAD into
 * vpeft-toyhead.so.
 *
 *   toybackbone: image (B, 3, S, S) -> patch embedding (p x p) -> one
 *                pre-norm transformer block through the host's sites ->
 *                one map (B, S/p, S/p, D), stride p. Config: image (8),
 *                patch (4), width (8), heads (2), weights (a safetensors
 *                file whose keys are the parameter names without
 *                "backbone."; every parameter must be in it).
 *   toyhead:     the map averaged over positions -> head.classifier ->
 *                logits (B, classes); training: cross-entropy against the
 *                int32 input "target.labels" (B). Config: classes (3).
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <vpeft/vpeft.h>

static const vp_host_api *H;

static vp_status toy_init(const vp_host_api *host)
{
    H = host;
    return VP_OK;
}

#ifdef TOY_BACKBONE

typedef struct toy_bb {
    int64_t image, patch, width, heads;
    const char *weights;
    vp_weights *w;
} toy_bb;

static vp_status bb_create(const vp_config *cfg, void **self)
{
    static const char *const known[] = {"plugin", "image", "patch", "width", "heads", "weights"};
    toy_bb *m = calloc(1, sizeof *m);
    if (!m)
        return H->error(VP_ERR_NOMEM, "out of memory");
    vp_status st = H->cfg_check_keys(cfg, known, 6);
    if (!st)
        st = H->cfg_int(cfg, "image", 8, &m->image);
    if (!st)
        st = H->cfg_int(cfg, "patch", 4, &m->patch);
    if (!st)
        st = H->cfg_int(cfg, "width", 8, &m->width);
    if (!st)
        st = H->cfg_int(cfg, "heads", 2, &m->heads);
    if (!st)
        st = H->cfg_file(cfg, "weights", &m->weights);
    if (!st && (m->patch < 1 || m->image % m->patch))
        st = H->cfg_fail(cfg, "patch", "must divide the image size %lld", (long long)m->image);
    if (!st && (m->heads < 1 || m->width % m->heads))
        st = H->cfg_fail(cfg, "heads", "must divide the width %lld", (long long)m->width);
    if (st) {
        free(m);
        return st;
    }
    *self = m;
    return VP_OK;
}

static void bb_destroy(void *self) { free(self); }

static vp_status bb_input_size(void *self, int64_t chw[3])
{
    toy_bb *m = self;
    chw[0] = 3;
    chw[1] = chw[2] = m->image;
    return VP_OK;
}

/* A parameter, from the weights file when there is one. */
static vp_gt *param(toy_bb *m, vp_build *b, const char *name, int ndim, const int64_t *shape,
                    vp_init init)
{
    vp_gt *p = H->param(b, name, ndim, shape, &init, true);
    if (p && m->w && H->param_load(b, p, m->w, name + strlen("backbone.")))
        return NULL;
    return p;
}

static vp_gt *norm(toy_bb *m, vp_build *b, const char *name, vp_gt *x)
{
    char wn[96], bn[96];
    snprintf(wn, sizeof wn, "%s.weight", name);
    snprintf(bn, sizeof bn, "%s.bias", name);
    vp_gt *w = param(m, b, wn, 1, &m->width, vp_init_ones());
    vp_gt *bias = param(m, b, bn, 1, &m->width, vp_init_zeros());
    return H->layernorm(H->graph(b), x, w, bias, 1e-6f);
}

/* A site linear whose weights come from the file when there is one. */
static vp_gt *linear(toy_bb *m, vp_build *b, const char *path, vp_gt *x, int64_t out)
{
    vp_gt *y = H->site_linear(b, path, x, out, true, NULL, NULL);
    if (y && m->w) {
        char name[96];
        vp_graph *g = H->graph(b);
        snprintf(name, sizeof name, "%s.weight", path);
        if (H->param_load(b, H->find(g, name), m->w, name + strlen("backbone.")))
            return NULL;
        snprintf(name, sizeof name, "%s.bias", path);
        if (H->param_load(b, H->find(g, name), m->w, name + strlen("backbone.")))
            return NULL;
    }
    return y;
}

static vp_status bb_build(void *self, vp_build *b, vp_gt *image, vp_features *out)
{
    toy_bb *m = self;
    vp_graph *g = H->graph(b);
    vp_status st = m->weights ? H->weights_open(b, m->weights, &m->w) : VP_OK;
    if (st)
        return st;
    int64_t B = H->shape(image)[0], D = m->width, p = m->patch, s = m->image / p;
    vp_gt *pw = param(m, b, "backbone.patch.weight", 4, (int64_t[]){D, 3, p, p},
                      vp_init_kaiming_uniform(2.23606798f));
    vp_gt *pb = param(m, b, "backbone.patch.bias", 1, &D, vp_init_zeros());
    vp_gt *x = H->patch_embed(g, image, pw, pb, (int)p); /* (B, s*s, D) */
    vp_gt *h = norm(m, b, "backbone.blocks.0.norm1", x);
    vp_gt *qkv = linear(m, b, "backbone.blocks.0.attn.qkv", h, 3 * D);
    vp_gt *a = H->attention(g, H->slice(g, qkv, 2, 0, D), H->slice(g, qkv, 2, D, D),
                            H->slice(g, qkv, 2, 2 * D, D), NULL, (int)m->heads);
    a = linear(m, b, "backbone.blocks.0.attn.proj", a, D);
    x = H->add(g, x, H->site_output(b, "backbone.blocks.0.attn", VP_SITE_ATTN_OUT, a));
    h = norm(m, b, "backbone.blocks.0.norm2", x);
    h = H->gelu(g, linear(m, b, "backbone.blocks.0.mlp.fc1", h, 2 * D));
    h = linear(m, b, "backbone.blocks.0.mlp.fc2", h, D);
    x = H->add(g, x, H->site_output(b, "backbone.blocks.0.mlp", VP_SITE_FFN_OUT, h));
    out->n = 1;
    out->map[0] = H->reshape(g, x, 4, (int64_t[]){B, s, s, D});
    out->stride[0] = (int32_t)p;
    /* An unused tensor in the file is an error: a wrong checkpoint would
     * otherwise half-load without a word. */
    for (uint32_t i = 0; m->w && i < H->weights_count(m->w); i++) {
        char name[160];
        snprintf(name, sizeof name, "backbone.%s", H->weights_key(m->w, i));
        if (!H->find(g, name))
            return H->error(VP_ERR_INVALID, "toybackbone: %s: tensor \"%s\" is not a parameter "
                            "of this model", m->weights, H->weights_key(m->w, i));
    }
    return H->graph_status(g);
}

static const vp_backbone_iface iface = {sizeof iface, bb_create, bb_destroy, bb_input_size,
                                        bb_build};
#define TOY_NAME "toybackbone"
#define TOY_KIND VP_PLUGIN_BACKBONE
#define TOY_IFACE VP_BACKBONE_IFACE_ID

#elif defined(TOY_HEAD)

typedef struct toy_head {
    int64_t classes;
} toy_head;

static vp_status head_create(const vp_config *cfg, void **self)
{
    static const char *const known[] = {"plugin", "classes"};
    toy_head *m = calloc(1, sizeof *m);
    if (!m)
        return H->error(VP_ERR_NOMEM, "out of memory");
    vp_status st = H->cfg_check_keys(cfg, known, 2);
    if (!st)
        st = H->cfg_int(cfg, "classes", 3, &m->classes);
    if (!st && m->classes < 2)
        st = H->cfg_fail(cfg, "classes", "must be at least 2, got %lld", (long long)m->classes);
    if (st) {
        free(m);
        return st;
    }
    *self = m;
    return VP_OK;
}

static void head_destroy(void *self) { free(self); }

static vp_status head_build(void *self, vp_build *b, const vp_features *f, bool train,
                            vp_head_out *out)
{
    toy_head *m = self;
    vp_graph *g = H->graph(b);
    const int64_t *s = H->shape(f->map[0]);
    int64_t B = s[0], N = s[1] * s[2], C = s[3];
    float *avg = malloc((size_t)N * sizeof *avg);
    if (!avg)
        return H->error(VP_ERR_NOMEM, "out of memory");
    for (int64_t i = 0; i < N; i++)
        avg[i] = 1.0f / (float)N;
    vp_gt *w = H->constant(g, "head.average", 2, (int64_t[]){1, N}, avg);
    free(avg);
    vp_gt *x = H->reshape(g, f->map[0], 3, (int64_t[]){B, N, C});
    /* (1, N) x (B, N, C): the weight operand is batched, so transpose the
     * map to (B, C, N) and put the averaging weights second. */
    vp_gt *pooled = H->reshape(g, H->gemm(g, H->transpose(g, x, 1, 2), false, w, true, NULL), 2,
                               (int64_t[]){B, C});
    vp_gt *logits = H->site_linear(b, "head.classifier", pooled, m->classes, true, NULL, NULL);
    out->outputs[0] = logits;
    out->names[0] = "logits";
    out->n_outputs = 1;
    if (train) {
        vp_gt *t = H->input_i32(g, "target.labels", 1, &B);
        out->loss = H->cross_entropy(g, logits, t, NULL);
    }
    return H->graph_status(g);
}

static const vp_head_iface iface = {sizeof iface, head_create, head_destroy, head_build};
#define TOY_NAME "toyhead"
#define TOY_KIND VP_PLUGIN_HEAD
#define TOY_IFACE VP_HEAD_IFACE_ID

#else
#error "build with -DTOY_BACKBONE or -DTOY_HEAD"
#endif

static const void *toy_get_interface(const char *id)
{
    return strcmp(id, TOY_IFACE) ? NULL : &iface;
}

VP_PLUGIN_EXPORT const vp_plugin_desc *vp_plugin_entry(void)
{
    static const vp_plugin_desc d = {sizeof d, VP_ABI_MAJOR, VP_ABI_MINOR, TOY_NAME, TOY_KIND,
                                     "0.1.0", "a toy model part for vpeft's tests", toy_init, NULL,
                                     toy_get_interface};
    return &d;
}
