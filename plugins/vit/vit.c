/*
 * vit.c - the `vit` backbone plugin: a plain Vision Transformer (Dosovitskiy
 * et al. 2021) as Hugging Face's ViTModel computes it, or DINOv2 (Oquab et
 * al. 2023) as its Dinov2Model and Dinov2WithRegistersModel compute it,
 * with a ViTDet-style simple feature pyramid (Li et al. 2022) on top so
 * that a multi-scale head can use it.
 *
 *   image (B, C, S, S) -> patch embedding (p x p, stride p) -> (B, N, D),
 *   N = G*G, G = S/p -> [class token] + learned position embeddings (the
 *   pretrained grid resized when G differs: bilinearly for a ViT, as HF's
 *   interpolate_pos_encoding for DINOv2) [-> register tokens] -> depth
 *   pre-norm blocks (layernorm, multi-head self-attention, layernorm, MLP
 *   with exact GELU or DINOv2's SwiGLU FFN, each with a residual, DINOv2's
 *   scaled per channel by a layer scale) -> final layernorm:
 *   last_hidden_state (B, T, D), T = [1 +] [registers +] N -> the patch
 *   tokens as a map (B, G, G, D), stride p -> pyramid: 2x2 transposed
 *   convolution up (stride p/2), identity (p), 2x2 max-pool down (2p), each
 *   projected to out_channels and layer-normalized.
 *
 * Parameters and sites carry Hugging Face's names under "backbone." (their
 * list is in docs/vit.md), so that ViTModel, Dinov2Model and
 * Dinov2WithRegistersModel safetensors checkpoints (and their
 * *ForImageClassification) load as they are and HF PEFT target_modules such
 * as ["query", "value"] select the same layers. The pyramid is vpeft's own
 * and always starts from random values.
 *
 * Config: see docs/vit.md (every field, its default, and the checks).
 */
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <vpeft/vpeft.h>

#include "resize.h"

/* The host's function table, from init() until the library is unloaded. */
static const vp_host_api *H;

enum { NAME_MAX_LEN = 192 };

/* Which Hugging Face model the backbone computes (config "model_type", HF's
 * names): ViTModel, Dinov2Model, Dinov2WithRegistersModel. */
typedef enum vit_kind { VIT_VIT, VIT_DINOV2, VIT_DINOV2_REG } vit_kind;

static const char *const kind_names[] = {"vit", "dinov2", "dinov2_with_registers"};

typedef struct vit {
    int64_t image, patch, channels, width, depth, heads, mlp, out_channels;
    int64_t pos_grid;  /* the position embeddings' grid side G0; 0: the file's, else G */
    int64_t registers; /* register tokens (dinov2_with_registers) */
    vit_kind kind;
    bool class_token, pyramid, swiglu;
    float eps, layerscale;
    const char *weights; /* resolved path (the host's string) or NULL: random init */
} vit;

/* ---- config ------------------------------------------------------------------ */

static void vit_destroy(void *self) { free(self); }

/* The DINOv2 fields, after the ViT's (in m): model_type's checks and values. */
static vp_status dinov2_config(const vp_config *cfg, vit *m, double *eps_def)
{
    const char *type;
    vp_status st = H->cfg_string(cfg, "model_type", "vit", &type);
    if (st)
        return st;
    uint32_t k = 0;
    while (k < 3 && strcmp(type, kind_names[k]))
        k++;
    if (k == 3)
        return H->cfg_fail(cfg, "model_type", "must be \"vit\", \"dinov2\" or "
                           "\"dinov2_with_registers\", got \"%s\"", type);
    m->kind = (vit_kind)k;
    static const char *const dino_only[] = {"layerscale_value", "use_swiglu_ffn",
                                            "num_register_tokens"};
    for (int i = 0; i < 3 && m->kind == VIT_VIT; i++)
        if (H->cfg_type(cfg, dino_only[i]) != VP_CFG_ABSENT)
            return H->cfg_fail(cfg, dino_only[i], "only for model_type \"dinov2\" or "
                               "\"dinov2_with_registers\" (this is \"vit\")");
    if (m->kind == VIT_VIT)
        return VP_OK;
    *eps_def = 1e-6; /* Dinov2Config's layer_norm_eps */
    double ls = 1.0;
    st = H->cfg_float(cfg, "layerscale_value", 1.0, &ls);
    if (!st && !isfinite(ls))
        st = H->cfg_fail(cfg, "layerscale_value", "must be a finite number, got %g", ls);
    if (!st)
        st = H->cfg_bool(cfg, "use_swiglu_ffn", false, &m->swiglu);
    /* Dinov2WithRegistersConfig's default is 4; a Dinov2Model has none. */
    if (!st)
        st = H->cfg_int(cfg, "num_register_tokens", m->kind == VIT_DINOV2_REG ? 4 : 0,
                        &m->registers);
    if (!st && m->kind == VIT_DINOV2 && m->registers)
        st = H->cfg_fail(cfg, "num_register_tokens", "register tokens need model_type "
                         "\"dinov2_with_registers\" (HF Dinov2WithRegistersModel), got %lld "
                         "with \"dinov2\"", (long long)m->registers);
    if (!st && (m->registers < 0 || m->registers > 1024))
        st = H->cfg_fail(cfg, "num_register_tokens", "must be from 0 to 1024, got %lld",
                         (long long)m->registers);
    if (!st && !m->class_token)
        st = H->cfg_fail(cfg, "class_token", "a DINOv2 always has a class token (model_type "
                         "\"%s\")", kind_names[m->kind]);
    m->layerscale = (float)ls;
    return st;
}

static vp_status vit_create(const vp_config *cfg, void **self)
{
    static const char *const known[] = {
        "plugin",      "image",          "patch",          "channels",       "width",
        "depth",       "heads",          "mlp_ratio",      "class_token",    "layer_norm_eps",
        "weights",     "out_channels",   "pyramid",        "model_type",     "layerscale_value",
        "use_swiglu_ffn", "num_register_tokens", "pretrained_image"};
    vit *m = calloc(1, sizeof *m);
    if (!m)
        return H->error(VP_ERR_NOMEM, "vit: out of memory");
    double ratio = 4.0, eps = 1e-12, eps_def = 1e-12;
    int64_t pre = 0;
    vp_status st = H->cfg_check_keys(cfg, known, sizeof known / sizeof known[0]);
    struct {
        const char *key;
        int64_t def, *out;
    } ints[] = {{"image", 224, &m->image},       {"patch", 16, &m->patch},
                {"channels", 3, &m->channels},   {"width", 768, &m->width},
                {"depth", 12, &m->depth},        {"heads", 12, &m->heads},
                {"out_channels", 256, &m->out_channels}, {"pretrained_image", 0, &pre}};
    for (size_t i = 0; !st && i < sizeof ints / sizeof ints[0]; i++) {
        st = H->cfg_int(cfg, ints[i].key, ints[i].def, ints[i].out);
        /* 2^20 bounds every size well inside int32 products of two. An
         * absent pretrained_image (0) means: the file's grid, else G. */
        bool absent = H->cfg_type(cfg, ints[i].key) == VP_CFG_ABSENT && !ints[i].def;
        if (!st && !absent && (*ints[i].out < 1 || *ints[i].out > (1 << 20)))
            st = H->cfg_fail(cfg, ints[i].key, "must be from 1 to %d, got %lld", 1 << 20,
                             (long long)*ints[i].out);
    }
    /* An input image is allocated whole before anything else can fail:
     * 65536 on a side is 4 GiB a channel. */
    if (!st && m->image > (1 << 14))
        st = H->cfg_fail(cfg, "image", "must be at most %d pixels on a side, got %lld", 1 << 14,
                         (long long)m->image);
    if (!st)
        st = H->cfg_float(cfg, "mlp_ratio", 4.0, &ratio);
    if (!st)
        st = H->cfg_bool(cfg, "class_token", true, &m->class_token);
    if (!st)
        st = dinov2_config(cfg, m, &eps_def);
    if (!st)
        st = H->cfg_float(cfg, "layer_norm_eps", eps_def, &eps);
    if (!st)
        st = H->cfg_file(cfg, "weights", &m->weights);
    if (!st)
        st = H->cfg_bool(cfg, "pyramid", true, &m->pyramid);
    /* The MLP's width as timm's int(dim * mlp_ratio); the epsilon keeps a
     * ratio like 2.6667 that is meant exactly from rounding down a unit. */
    double units = ratio * (double)m->width + 1e-6;
    if (!st && !(units >= 1 && units <= (1 << 22)))
        st = H->cfg_fail(cfg, "mlp_ratio", "must make an MLP of 1 to %d units from the width "
                         "%lld, got %g", 1 << 22, (long long)m->width, ratio);
    /* Dinov2SwiGLUFFN's hidden width: (int(mlp * 2 / 3) + 7) // 8 * 8. */
    if (!st && m->swiglu && ((int64_t)units * 2 / 3 + 7) / 8 * 8 < 1)
        st = H->cfg_fail(cfg, "mlp_ratio", "gives a SwiGLU FFN of 0 units ((int(%lld * 2 / 3) "
                         "+ 7) // 8 * 8)", (long long)(int64_t)units);
    if (!st && !(eps > 0 && eps < 1))
        st = H->cfg_fail(cfg, "layer_norm_eps", "must be in (0, 1), got %g", eps);
    if (!st && m->image % m->patch)
        st = H->cfg_fail(cfg, "image", "%lld is not a multiple of the patch size %lld",
                         (long long)m->image, (long long)m->patch);
    if (!st && pre && pre % m->patch)
        st = H->cfg_fail(cfg, "pretrained_image", "%lld is not a multiple of the patch size "
                         "%lld", (long long)pre, (long long)m->patch);
    if (!st && m->width % m->heads)
        st = H->cfg_fail(cfg, "heads", "%lld does not divide the width %lld",
                         (long long)m->heads, (long long)m->width);
    if (!st && m->pyramid && (m->image / m->patch) % 2)
        st = H->cfg_fail(cfg, "pyramid", "needs an even number of patches per side for its 2x2 "
                         "max-pool, got %lld / %lld = %lld", (long long)m->image,
                         (long long)m->patch, (long long)(m->image / m->patch));
    if (!st && m->pyramid && m->patch % 2)
        st = H->cfg_fail(cfg, "pyramid", "needs an even patch size (its finest level has stride "
                         "patch / 2), got %lld", (long long)m->patch);
    if (st) {
        free(m);
        return st;
    }
    m->mlp = (int64_t)units;
    if (m->swiglu)
        m->mlp = (m->mlp * 2 / 3 + 7) / 8 * 8;
    m->pos_grid = pre / m->patch;
    m->eps = (float)eps;
    *self = m;
    return VP_OK;
}

static vp_status vit_input_size(void *self, int64_t chw[3])
{
    vit *m = self;
    chw[0] = m->channels;
    chw[1] = chw[2] = m->image;
    return VP_OK;
}

/* ---- building, with weights from a file ----------------------------------- */

/* One build: the weights file (if any) and which of its tensors were used. */
typedef struct vit_build {
    const vit *m;
    vp_build *b;
    vp_graph *g;
    vp_weights *w;      /* NULL: random initialization */
    const char *prefix; /* "" or the model's ("vit.", "dinov2.", ...): how the file names
                         * the backbone's tensors */
    uint32_t n_keys;
    bool *used;         /* per tensor of w */
    bool own_init;      /* parameters made now are vpeft's own: never from w */
    vp_status st;       /* our own first failure (the graph keeps its own) */
} vit_build;

static bool failed(const vit_build *c) { return c->st || H->graph_status(c->g); }

static void shape_str(char *buf, size_t n, int ndim, const int64_t *shape)
{
    size_t k = (size_t)snprintf(buf, n, "(");
    for (int i = 0; i < ndim && k < n; i++)
        k += (size_t)snprintf(buf + k, n - k, "%s%lld", i ? ", " : "", (long long)shape[i]);
    if (k < n)
        snprintf(buf + k, n - k, ")");
}

static bool starts_with(const char *s, const char *pre) { return !strncmp(s, pre, strlen(pre)); }

/* The tensors a checkpoint may hold that are not the backbone: ViTModel's
 * pooler and the *ForImageClassification classifiers. */
static bool ignored_key(const char *rest)
{
    return starts_with(rest, "pooler.") || starts_with(rest, "classifier.");
}

/* "ViT" or "DINOv2", for messages. */
static const char *model_name(const vit *m) { return m->kind == VIT_VIT ? "ViT" : "DINOv2"; }

/* Open the file and decide its prefix: the base model's name ("vit.",
 * "dinov2.", "dinov2_with_registers.": a *ForImageClassification, or the
 * model saved inside another) when the patch projection is there with it,
 * else none. A distilled DeiT's extra token has no place here. */
static vp_status open_weights(vit_build *c)
{
    static const char *const prefixes[] = {"vit.", "dinov2.", "dinov2_with_registers."};
    vp_status st = H->weights_open(c->b, c->m->weights, &c->w);
    if (st)
        return st;
    c->n_keys = H->weights_count(c->w);
    c->used = calloc(c->n_keys ? c->n_keys : 1, sizeof *c->used);
    if (!c->used)
        return H->error(VP_ERR_NOMEM, "vit: out of memory");
    c->prefix = "";
    const char *pre = prefixes[c->m->kind];
    size_t np = strlen(pre);
    for (uint32_t i = 0; i < c->n_keys; i++) {
        const char *k = H->weights_key(c->w, i);
        if (strstr(k, "distillation_token"))
            return H->error(VP_ERR_INVALID, "vit: %s: tensor \"%s\": a distilled DeiT checkpoint; "
                            "its distillation token has no place in a %s (use a checkpoint "
                            "without one)", c->m->weights, k, model_name(c->m));
        if (!strncmp(k, pre, np) &&
            !strcmp(k + np, "embeddings.patch_embeddings.projection.weight"))
            c->prefix = pre;
    }
    return VP_OK;
}

/* Whether the file holds <prefix><hf>. */
static bool file_has(const vit_build *c, const char *hf)
{
    char key[NAME_MAX_LEN];
    int ndim;
    int64_t s[VP_MAX_DIMS];
    snprintf(key, sizeof key, "%s%s", c->prefix, hf);
    return c->w && !H->weights_shape(c->w, key, &ndim, s);
}

/* The pretrained grid side: the config's pretrained_image / patch when
 * given; else from the file's position embeddings when they are
 * (1, [1 +] G0*G0, D), else this model's own (a mismatch is then reported by
 * the load, with both shapes). */
static int64_t pretrained_grid(vit_build *c, int64_t G)
{
    if (c->m->pos_grid)
        return c->m->pos_grid;
    if (!c->w)
        return G;
    char key[NAME_MAX_LEN];
    int ndim;
    int64_t s[VP_MAX_DIMS];
    snprintf(key, sizeof key, "%sembeddings.position_embeddings", c->prefix);
    if (H->weights_shape(c->w, key, &ndim, s) || ndim != 3 || s[0] != 1 || s[2] != c->m->width)
        return G;
    int64_t n = s[1] - (c->m->class_token ? 1 : 0);
    int64_t g0 = (int64_t)llround(sqrt((double)(n > 0 ? n : 0)));
    return g0 >= 1 && g0 * g0 == n ? g0 : G;
}

/* p's first values from the file's tensor <prefix><hf>, when there is a
 * file. NULL on failure (ours in c->st, or the host's in the graph). */
static vp_gt *load(vit_build *c, vp_gt *p, const char *hf)
{
    if (failed(c))
        return NULL;
    if (!p || !c->w || c->own_init)
        return p;
    char key[NAME_MAX_LEN];
    snprintf(key, sizeof key, "%s%s", c->prefix, hf);
    uint32_t i = 0;
    while (i < c->n_keys && strcmp(H->weights_key(c->w, i), key))
        i++;
    if (i == c->n_keys) {
        char s[96];
        shape_str(s, sizeof s, H->ndim(p), H->shape(p));
        c->st = H->error(VP_ERR_NOT_FOUND, "vit: %s: no tensor \"%s\" (this %s needs it with "
                         "shape %s)", c->m->weights, key, model_name(c->m), s);
        return NULL;
    }
    if (H->param_load(c->b, p, c->w, key))
        return NULL; /* "<file>: tensor "k" has shape (..), expected (..)", sticky in the graph */
    c->used[i] = true;
    return p;
}

/* A backbone parameter backbone.<hf>, from the file when there is one;
 * trainable unless the run's config says otherwise. */
static vp_gt *param_as(vit_build *c, const char *hf, int ndim, const int64_t *shape, vp_init init,
                       bool trainable)
{
    if (failed(c))
        return NULL;
    char name[NAME_MAX_LEN];
    snprintf(name, sizeof name, "backbone.%s", hf);
    return load(c, H->param(c->b, name, ndim, shape, &init, trainable), hf);
}

static vp_gt *param(vit_build *c, const char *hf, int ndim, const int64_t *shape, vp_init init)
{
    return param_as(c, hf, ndim, shape, init, true);
}

/* x: (..., D) normalized with backbone.<hf>.weight and .bias. */
static vp_gt *norm(vit_build *c, const char *hf, vp_gt *x, int64_t d, float eps)
{
    char wn[NAME_MAX_LEN], bn[NAME_MAX_LEN];
    snprintf(wn, sizeof wn, "%s.weight", hf);
    snprintf(bn, sizeof bn, "%s.bias", hf);
    vp_gt *w = param(c, wn, 1, &d, vp_init_ones());
    vp_gt *b = param(c, bn, 1, &d, vp_init_zeros());
    return H->layernorm(c->g, x, w, b, eps);
}

/* The linear site backbone.<hf>: x (..., in) -> (..., out), HF ViT's
 * initialization (weights N(0, 0.02), biases 0) or the file's values. */
static vp_gt *linear(vit_build *c, const char *hf, vp_gt *x, int64_t out)
{
    if (failed(c))
        return NULL;
    char path[NAME_MAX_LEN], name[NAME_MAX_LEN + 8], key[NAME_MAX_LEN + 8];
    snprintf(path, sizeof path, "backbone.%s", hf);
    vp_init wi = vp_init_normal(0.0f, 0.02f), bi = vp_init_zeros();
    vp_gt *y = H->site_linear(c->b, path, x, out, true, &wi, &bi);
    if (!y || !c->w || c->own_init)
        return y;
    static const char *const part[2] = {"weight", "bias"};
    for (int i = 0; i < 2; i++) {
        snprintf(name, sizeof name, "%s.%s", path, part[i]);
        snprintf(key, sizeof key, "%s.%s", hf, part[i]);
        if (!load(c, H->find(c->g, name), key))
            return NULL;
    }
    return y;
}

/* t (n, D) repeated over the batch: (B, n, D), by adding it onto zeros. */
static vp_gt *repeat_batch(vit_build *c, const char *name, vp_gt *t, int64_t B)
{
    if (failed(c))
        return NULL;
    int64_t n = H->shape(t)[0], D = H->shape(t)[1];
    float *zeros = calloc((size_t)(B * n * D), sizeof *zeros);
    if (!zeros) {
        c->st = H->error(VP_ERR_NOMEM, "vit: out of memory");
        return NULL;
    }
    vp_gt *z = H->constant(c->g, name, 3, (int64_t[]){B, n, D}, zeros);
    free(zeros);
    return H->add(c->g, z, t);
}

/* The pretrained position-embedding grid (G0*G0, D), row-major, resized to
 * (G*G, D): a ViT bilinearly (vpeft's long-standing choice, close to HF's
 * bicubic interpolate_pos_encoding, not equal), DINOv2 exactly as HF's
 * Dinov2Embeddings.interpolate_pos_encoding, F.interpolate(size=(G, G),
 * mode='bicubic', align_corners=False), with antialias=True for the
 * registers model. The bicubic ones are one constant matrix, kron(m, m)
 * (G*G, G0*G0), applied by a gemm: its backward reaches the parameter. */
static vp_gt *resize_grid(vit_build *c, vp_gt *grid, int64_t G0, int64_t G)
{
    const vit *m = c->m;
    int64_t D = m->width;
    static const char *const how[] = {"bilinear", "bicubic", "bicubic, antialiased"};
    H->log(VP_LOG_INFO, "vit: position embeddings resized from a %lldx%lld grid to %lldx%lld "
           "(%s)", (long long)G0, (long long)G0, (long long)G, (long long)G, how[m->kind]);
    if (m->kind == VIT_VIT) {
        grid = H->reshape(c->g, grid, 4, (int64_t[]){1, G0, G0, D});
        return H->reshape(c->g, H->resize_bilinear(c->g, grid, G, G), 2, (int64_t[]){G * G, D});
    }
    if (failed(c))
        return NULL;
    /* 2^28 floats (1 GiB): far beyond any real grid (37 -> 73 is 7.3M). */
    if ((double)(G * G) * (double)(G0 * G0) > (double)(1 << 28)) {
        c->st = H->error(VP_ERR_INVALID, "vit: resizing the position embeddings from a %lldx%lld "
                         "grid to %lldx%lld needs a matrix of more than 2^28 elements",
                         (long long)G0, (long long)G0, (long long)G, (long long)G);
        return NULL;
    }
    double *a = malloc((size_t)(G * G0) * sizeof *a);
    float *k = malloc((size_t)(G * G * G0 * G0) * sizeof *k);
    if (!a || !k) {
        free(a);
        free(k);
        c->st = H->error(VP_ERR_NOMEM, "vit: out of memory (a %lldx%lld resize matrix)",
                         (long long)(G * G), (long long)(G0 * G0));
        return NULL;
    }
    vit_resize_1d(m->kind == VIT_DINOV2 ? VIT_RESIZE_BICUBIC : VIT_RESIZE_BICUBIC_AA, G0, G, a);
    /* Output (i, j) from input (u, v): a[i][u] * a[j][v]. */
    for (int64_t i = 0; i < G; i++)
        for (int64_t j = 0; j < G; j++)
            for (int64_t u = 0; u < G0; u++)
                for (int64_t v = 0; v < G0; v++)
                    k[((i * G + j) * G0 + u) * G0 + v] = (float)(a[i * G0 + u] * a[j * G0 + v]);
    vp_gt *r = H->constant(c->g, "backbone.embeddings.pos_resize", 2,
                           (int64_t[]){G * G, G0 * G0}, k);
    free(a);
    free(k);
    return H->gemm(c->g, r, false, grid, false, NULL);
}

/* Patch embedding, class token, position embeddings and, for DINOv2 with
 * registers, the register tokens after the class token (without position
 * embeddings, as HF inserts them after adding those).
 * image: (B, C, S, S) -> (B, T, D), T = [1 +] registers + N. */
static vp_gt *embeddings(vit_build *c, vp_gt *image)
{
    const vit *m = c->m;
    vp_graph *g = c->g;
    int64_t B = H->shape(image)[0], D = m->width, p = m->patch, G = m->image / p;
    int64_t cls = m->class_token ? 1 : 0, G0 = pretrained_grid(c, G), R = m->registers;
    vp_init std02 = vp_init_normal(0.0f, 0.02f);
    vp_gt *pw = param(c, "embeddings.patch_embeddings.projection.weight", 4,
                      (int64_t[]){D, m->channels, p, p}, std02);
    vp_gt *pb = param(c, "embeddings.patch_embeddings.projection.bias", 1, &D, vp_init_zeros());
    vp_gt *x = H->patch_embed(g, image, pw, pb, (int)p); /* (B, N, D) */
    /* pos: (1, T0, D) as pretrained, T0 = cls + G0*G0; resized in the graph,
     * so the parameter keeps the checkpoint's shape and stays trainable. */
    vp_gt *pos = param(c, "embeddings.position_embeddings", 3, (int64_t[]){1, cls + G0 * G0, D},
                       std02);
    vp_gt *grid = H->reshape(g, cls ? H->slice(g, pos, 1, cls, G0 * G0) : pos, 2,
                             (int64_t[]){G0 * G0, D});
    if (G0 != G)
        grid = resize_grid(c, grid, G0, G);
    x = H->add(g, x, grid); /* (N, D) repeats over B */
    /* HF's Dinov2 mask token (1, D) replaces masked patches in pre-training
     * only (bool_masked_pos); kept, frozen and unused, so that checkpoints
     * load as they are and save back whole. A file without one (HF's
     * use_mask_token false) has none. */
    if (m->kind != VIT_VIT && (!c->w || file_has(c, "embeddings.mask_token")))
        param_as(c, "embeddings.mask_token", 2, (int64_t[]){1, D}, vp_init_zeros(), false);
    if (!cls)
        return x;
    /* The class token with its position embedding: (1, D), over the batch. */
    vp_gt *tok = param(c, "embeddings.cls_token", 3, (int64_t[]){1, 1, D}, std02);
    tok = H->add(g, H->reshape(g, tok, 2, (int64_t[]){1, D}),
                 H->reshape(g, H->slice(g, pos, 1, 0, 1), 2, (int64_t[]){1, D}));
    tok = repeat_batch(c, "backbone.embeddings.cls_repeat", tok, B);
    if (!R)
        return H->concat(g, (vp_gt *[]){tok, x}, 2, 1);
    /* Dinov2WithRegisters initializes them to zeros. */
    vp_gt *reg = param(c, "embeddings.register_tokens", 3, (int64_t[]){1, R, D}, vp_init_zeros());
    reg = repeat_batch(c, "backbone.embeddings.register_repeat",
                       H->reshape(g, reg, 2, (int64_t[]){R, D}), B);
    return H->concat(g, (vp_gt *[]){tok, reg, x}, 3, 1);
}

/* "<a>.<b>" in buf. */
static const char *join(char *buf, size_t n, const char *a, const char *b)
{
    snprintf(buf, n, "%s.%s", a, b);
    return buf;
}

/* Encoder layer i of a ViT. x: (B, T, D) -> (B, T, D). */
static vp_gt *vit_block(vit_build *c, int64_t i, vp_gt *x)
{
    const vit *m = c->m;
    vp_graph *g = c->g;
    int64_t D = m->width;
    char p[NAME_MAX_LEN], n[NAME_MAX_LEN + 40];
    snprintf(p, sizeof p, "encoder.layer.%lld", (long long)i);
    vp_gt *h = norm(c, join(n, sizeof n, p, "layernorm_before"), x, D, m->eps);
    vp_gt *q = linear(c, join(n, sizeof n, p, "attention.attention.query"), h, D);
    vp_gt *k = linear(c, join(n, sizeof n, p, "attention.attention.key"), h, D);
    vp_gt *v = linear(c, join(n, sizeof n, p, "attention.attention.value"), h, D);
    vp_gt *a = H->attention(g, q, k, v, NULL, (int)m->heads);
    a = linear(c, join(n, sizeof n, p, "attention.output.dense"), a, D);
    snprintf(n, sizeof n, "backbone.%s.attention", p);
    x = H->add(g, x, H->site_output_in(c->b, n, VP_SITE_ATTN_OUT, h, a));
    h = norm(c, join(n, sizeof n, p, "layernorm_after"), x, D, m->eps);
    vp_gt *in = h;
    h = H->gelu(g, linear(c, join(n, sizeof n, p, "intermediate.dense"), h, m->mlp));
    h = linear(c, join(n, sizeof n, p, "output.dense"), h, D);
    snprintf(n, sizeof n, "backbone.%s.output", p);
    return H->add(g, x, H->site_output_in(c->b, n, VP_SITE_FFN_OUT, in, h));
}

/* Dinov2LayerScale backbone.<p>.<ls>.lambda1: y (B, T, D) * lambda1 (D). */
static vp_gt *layer_scale(vit_build *c, const char *p, const char *ls, vp_gt *y)
{
    char n[NAME_MAX_LEN + 40];
    snprintf(n, sizeof n, "%s.%s.lambda1", p, ls);
    int64_t D = c->m->width;
    return H->mul(c->g, y, param(c, n, 1, &D, vp_init_const(c->m->layerscale)));
}

/* Encoder layer i of a DINOv2 (HF's Dinov2Layer). x: (B, T, D) -> (B, T, D).
 * The sites' outputs are the modules' (attention, mlp), before the layer
 * scale and the residual. */
static vp_gt *dinov2_block(vit_build *c, int64_t i, vp_gt *x)
{
    const vit *m = c->m;
    vp_graph *g = c->g;
    int64_t D = m->width, M = m->mlp;
    char p[NAME_MAX_LEN], n[NAME_MAX_LEN + 40];
    snprintf(p, sizeof p, "encoder.layer.%lld", (long long)i);
    vp_gt *h = norm(c, join(n, sizeof n, p, "norm1"), x, D, m->eps);
    vp_gt *q = linear(c, join(n, sizeof n, p, "attention.attention.query"), h, D);
    vp_gt *k = linear(c, join(n, sizeof n, p, "attention.attention.key"), h, D);
    vp_gt *v = linear(c, join(n, sizeof n, p, "attention.attention.value"), h, D);
    vp_gt *a = H->attention(g, q, k, v, NULL, (int)m->heads);
    a = linear(c, join(n, sizeof n, p, "attention.output.dense"), a, D);
    snprintf(n, sizeof n, "backbone.%s.attention", p);
    a = H->site_output_in(c->b, n, VP_SITE_ATTN_OUT, h, a);
    x = H->add(g, x, layer_scale(c, p, "layer_scale1", a));
    h = norm(c, join(n, sizeof n, p, "norm2"), x, D, m->eps);
    vp_gt *in = h;
    if (m->swiglu) {
        /* Dinov2SwiGLUFFN: weights_in (B, T, 2M) -> chunk -> silu(x1) * x2. */
        h = linear(c, join(n, sizeof n, p, "mlp.weights_in"), h, 2 * M);
        h = H->mul(g, H->silu(g, H->slice(g, h, 2, 0, M)), H->slice(g, h, 2, M, M));
        h = linear(c, join(n, sizeof n, p, "mlp.weights_out"), h, D);
    } else {
        h = H->gelu(g, linear(c, join(n, sizeof n, p, "mlp.fc1"), h, M));
        h = linear(c, join(n, sizeof n, p, "mlp.fc2"), h, D);
    }
    snprintf(n, sizeof n, "backbone.%s.mlp", p);
    h = H->site_output_in(c->b, n, VP_SITE_FFN_OUT, in, h);
    return H->add(g, x, layer_scale(c, p, "layer_scale2", h));
}

/* The simple feature pyramid. map: (B, G, G, D) -> out's three levels
 * (B, H_l, W_l, out_channels), strides p/2, p, 2p. */
static void pyramid(vit_build *c, vp_gt *map, vp_features *out)
{
    const vit *m = c->m;
    vp_graph *g = c->g;
    int64_t D = m->width, C = m->out_channels, B = H->shape(map)[0];
    /* Not in any HF checkpoint: always initialized, as PyTorch's
     * ConvTranspose2d (weight (Cin, Cout, 2, 2), fan_in = Cout * 4) and
     * ViTDet's 1x1 convolutions (c2_xavier_fill: kaiming_uniform a = 1, bias 0). */
    vp_init wi = vp_init_kaiming_uniform(sqrtf(5.0f)), bi = {VP_INIT_LINEAR_BIAS, (float)(D * 4),
                                                              0.0f, NULL};
    vp_gt *uw = H->param(c->b, "backbone.pyramid.up.weight", 4, (int64_t[]){D, D, 2, 2}, &wi, true);
    vp_gt *ub = H->param(c->b, "backbone.pyramid.up.bias", 1, &D, &bi, true);
    vp_gt *lv[3] = {H->conv_transpose2(g, map, uw, ub), map, H->maxpool2(g, map)};
    int32_t stride[3] = {(int32_t)(m->patch / 2), (int32_t)m->patch, (int32_t)(2 * m->patch)};
    vp_init pw = vp_init_kaiming_uniform(1.0f), pb = vp_init_zeros();
    c->own_init = true;
    for (int l = 0; l < 3 && !failed(c); l++) {
        int64_t h = H->shape(lv[l])[1], w = H->shape(lv[l])[2];
        char path[64], name[80];
        snprintf(path, sizeof path, "backbone.pyramid.%d.proj", l);
        vp_gt *y = H->site_linear(c->b, path, H->reshape(g, lv[l], 3, (int64_t[]){B, h * w, D}),
                                  C, true, &pw, &pb);
        snprintf(path, sizeof path, "pyramid.%d.norm", l);
        /* ViTDet's LayerNorm eps. */
        y = H->reshape(g, norm(c, path, y, C, 1e-6f), 4, (int64_t[]){B, h, w, C});
        snprintf(name, sizeof name, "backbone.features.%d", l);
        out->map[l] = H->output(c->b, name, y);
        out->stride[l] = stride[l];
    }
    c->own_init = false;
    out->n = 3;
}

/* Every tensor of the file must have been used, or be one of the heads a
 * ViT checkpoint carries: a checkpoint of another shape would otherwise
 * half-load without a word. */
static vp_status check_unused(vit_build *c)
{
    size_t np = strlen(c->prefix);
    for (uint32_t i = 0; i < c->n_keys; i++) {
        const char *k = H->weights_key(c->w, i);
        const char *rest = strncmp(k, c->prefix, np) ? k : k + np;
        if (c->used[i])
            continue;
        if (ignored_key(rest)) {
            H->log(VP_LOG_DEBUG, "vit: %s: tensor \"%s\" ignored (a pooler or classifier, not "
                   "the backbone)", c->m->weights, k);
            continue;
        }
        if (c->m->kind == VIT_VIT)
            return H->error(VP_ERR_INVALID, "vit: %s: tensor \"%s\" is not part of this ViT "
                            "(depth %lld, width %lld, %s class token)", c->m->weights, k,
                            (long long)c->m->depth, (long long)c->m->width,
                            c->m->class_token ? "with a" : "no");
        return H->error(VP_ERR_INVALID, "vit: %s: tensor \"%s\" is not part of this DINOv2 "
                        "(model_type \"%s\", depth %lld, width %lld, %lld register tokens, %s)",
                        c->m->weights, k, kind_names[c->m->kind], (long long)c->m->depth,
                        (long long)c->m->width, (long long)c->m->registers,
                        c->m->swiglu ? "SwiGLU FFN" : "MLP");
    }
    return VP_OK;
}

static vp_status vit_build_fn(void *self, vp_build *b, vp_gt *image, vp_features *out)
{
    vit *m = self;
    vit_build c = {.m = m, .b = b, .g = H->graph(b), .prefix = ""};
    const int64_t *is = H->shape(image);
    if (H->ndim(image) != 4 || is[1] != m->channels || is[2] != m->image || is[3] != m->image)
        return H->error(VP_ERR_SHAPE, "vit: the image must be (B, %lld, %lld, %lld)",
                        (long long)m->channels, (long long)m->image, (long long)m->image);
    vp_status st = m->weights ? open_weights(&c) : VP_OK;
    if (st) {
        free(c.used);
        return st;
    }
    int64_t B = is[0], D = m->width, G = m->image / m->patch, N = G * G;
    vp_gt *x = embeddings(&c, image); /* (B, T, D) */
    for (int64_t i = 0; i < m->depth && !failed(&c); i++)
        x = m->kind == VIT_VIT ? vit_block(&c, i, x) : dinov2_block(&c, i, x);
    x = H->output(b, "backbone.last_hidden_state", norm(&c, "layernorm", x, D, m->eps));
    /* The patch tokens as a map: (B, N, D) -> (B, G, G, D), stride p. */
    int64_t first = (m->class_token ? 1 : 0) + m->registers;
    vp_gt *tok = first ? H->slice(c.g, x, 1, first, N) : x;
    vp_gt *map = H->reshape(c.g, tok, 4, (int64_t[]){B, G, G, D});
    if (!failed(&c) && m->pyramid) {
        pyramid(&c, map, out);
    } else if (!failed(&c)) {
        out->n = 1;
        out->map[0] = H->output(b, "backbone.features.0", map);
        out->stride[0] = (int32_t)m->patch;
    }
    if (!failed(&c) && c.w)
        c.st = check_unused(&c);
    free(c.used);
    return c.st ? c.st : H->graph_status(c.g);
}

/* ---- the plugin ---------------------------------------------------------------- */

static vp_status vit_init(const vp_host_api *host)
{
    H = host;
    return VP_OK;
}

static const vp_backbone_iface vit_iface = {
    .size = sizeof vit_iface,
    .create = vit_create,
    .destroy = vit_destroy,
    .input_size = vit_input_size,
    .build = vit_build_fn,
};

static const void *vit_get_interface(const char *id)
{
    return strcmp(id, VP_BACKBONE_IFACE_ID) ? NULL : &vit_iface;
}

VP_PLUGIN_EXPORT const vp_plugin_desc *vp_plugin_entry(void)
{
    static const vp_plugin_desc d = {
        .size = sizeof d, .abi_major = VP_ABI_MAJOR, .abi_minor = VP_ABI_MINOR,
        .name = "vit", .kind = VP_PLUGIN_BACKBONE, .version = "0.1.0",
        .description = "Vision Transformer (Hugging Face ViTModel weights) with a simple feature "
                       "pyramid",
        .init = vit_init, .fini = NULL, .get_interface = vit_get_interface};
    return &d;
}
