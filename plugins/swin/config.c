/*
 * config.c - the `swin` backbone plugin's config and its entry point.
 *
 * The architecture is Hugging Face's SwinConfig, under its own field names,
 * read either from a config.json ("hf": a checkpoint directory or the file;
 * a "mask2former" config's backbone_config or a "swin" config) or from the
 * plugin's own config entry (a hand-written Swin). Both are checked the same
 * way, each failure one line naming the file and field. Or it is
 * detectron2's D2SwinTransformer ("detectron2": a directory whose
 * config.json holds the resolved cfg.MODEL, as Mask2Former's and Mask
 * DINO's repositories build it from cfg.MODEL.SWIN). docs/swin.md lists
 * every field, its default (SwinConfig's, or Mask2Former's
 * add_maskformer2_config) and what is refused.
 */
#define _POSIX_C_SOURCE 200809L /* stat */

#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

#include "swin.h"

const vp_host_api *swin_H;
#define H swin_H

/* SwinConfig's fields that the plugin reads (the rest of an HF config does
 * not change what SwinBackbone computes, or is derived: num_layers,
 * hidden_size, stage_names, encoder_stride, ...). */
static const char *const hf_fields[] = {
    "embed_dim", "depths", "num_heads", "window_size", "patch_size", "num_channels",
    "mlp_ratio", "qkv_bias", "layer_norm_eps", "hidden_act", "use_absolute_embeddings",
    "drop_path_rate", "out_features", "out_indices", "image_size", "initializer_range",
    "hidden_dropout_prob", "attention_probs_dropout_prob"};
enum { N_HF_FIELDS = sizeof hf_fields / sizeof hf_fields[0] };

void swin_destroy(void *self) { free(self); }

vp_status swin_input_size(void *self, int64_t chw[3])
{
    swin *m = self;
    chw[0] = m->channels;
    chw[1] = m->image[0];
    chw[2] = m->image[1];
    return VP_OK;
}

static vp_status int_in(const vp_config *c, const char *key, int64_t def, int64_t lo, int64_t hi,
                        int64_t *out)
{
    vp_status st = H->cfg_int(c, key, def, out);
    if (!st && (*out < lo || *out > hi))
        st = H->cfg_fail(c, key, "must be from %lld to %lld, got %lld", (long long)lo,
                         (long long)hi, (long long)*out);
    return st;
}

static vp_status float_in(const vp_config *c, const char *key, double def, double lo, double hi,
                          bool hi_open, double *out)
{
    vp_status st = H->cfg_float(c, key, def, out);
    if (!st && !(*out >= lo && (hi_open ? *out < hi : *out <= hi)))
        st = H->cfg_fail(c, key, "must be in [%g, %g%c, got %g", lo, hi, hi_open ? ')' : ']',
                         *out);
    return st;
}

/* A list of 1 .. SWIN_MAX_STAGES integers from 1 to hi; absent or null: def. */
static vp_status stage_list(const vp_config *c, const char *key, const int64_t *def, int n_def,
                            int64_t hi, int64_t *out, int *n)
{
    vp_cfg_type t = H->cfg_type(c, key);
    if (t == VP_CFG_ABSENT || t == VP_CFG_NULL) {
        memcpy(out, def, (size_t)n_def * sizeof *out);
        *n = n_def;
        return VP_OK;
    }
    if (t != VP_CFG_ARRAY)
        return H->cfg_fail(c, key, "expected a list of integers, one per stage");
    const vp_config *list = H->cfg_get(c, key);
    *n = H->cfg_len(list);
    if (*n < 1 || *n > SWIN_MAX_STAGES)
        return H->cfg_fail(c, key, "must list 1 to %d stages, got %d", SWIN_MAX_STAGES, *n);
    for (int i = 0; i < *n; i++) {
        vp_status st = int_in(H->cfg_at(list, i), NULL, 0, 1, hi, &out[i]);
        if (st)
            return st;
    }
    return VP_OK;
}

/* An integer or [H, W] (HF's image_size, the plugin's image). */
static vp_status size_hw(const vp_config *c, const char *key, const int64_t def[2], int64_t out[2])
{
    enum { MAX_SIDE = 1 << 14 }; /* an image is allocated whole: 16384^2 x 3 floats is 3 GiB */
    vp_cfg_type t = H->cfg_type(c, key);
    if (t == VP_CFG_ARRAY) {
        const vp_config *list = H->cfg_get(c, key);
        if (H->cfg_len(list) != 2)
            return H->cfg_fail(c, key, "expected an integer or [height, width], got a list of %d",
                               H->cfg_len(list));
        for (int i = 0; i < 2; i++) {
            vp_status st = int_in(H->cfg_at(list, i), NULL, 0, 1, MAX_SIDE, &out[i]);
            if (st)
                return st;
        }
        return VP_OK;
    }
    vp_status st = int_in(c, key, def[0], 1, MAX_SIDE, &out[0]);
    out[1] = t == VP_CFG_ABSENT ? def[1] : out[0];
    return st;
}

/* out_features / out_indices: absent, null, or every stage in order. */
static vp_status check_outputs(const vp_config *c, int n)
{
    static const char *const keys[2] = {"out_features", "out_indices"};
    for (int k = 0; k < 2; k++) {
        vp_cfg_type t = H->cfg_type(c, keys[k]);
        if (t == VP_CFG_ABSENT || t == VP_CFG_NULL)
            continue;
        const vp_config *list = H->cfg_get(c, keys[k]);
        bool ok = t == VP_CFG_ARRAY && H->cfg_len(list) == n;
        for (int i = 0; ok && i < n; i++) {
            const vp_config *e = H->cfg_at(list, i);
            if (k == 0) {
                char want[16];
                snprintf(want, sizeof want, "stage%d", i + 1);
                const char *s = NULL;
                ok = H->cfg_type(e, NULL) == VP_CFG_STRING && !H->cfg_string(e, NULL, NULL, &s) &&
                     !strcmp(s, want);
            } else {
                int64_t v = 0;
                ok = H->cfg_type(e, NULL) == VP_CFG_NUMBER && !H->cfg_int(e, NULL, 0, &v) &&
                     v == i + 1;
            }
        }
        if (!ok && k == 0)
            return H->cfg_fail(c, keys[k], "must be every stage in order, [\"stage1\", ..., "
                               "\"stage%d\"]: the swin backbone gives them all", n);
        if (!ok)
            return H->cfg_fail(c, keys[k], "must be every stage in order, [1, ..., %d]: the "
                               "swin backbone gives them all", n);
    }
    return VP_OK;
}

/* Every stage's width within 2^20 and divided by its heads. */
static vp_status check_widths(const vp_config *c, const swin *m, const char *dim_key,
                              const char *heads_key)
{
    for (int i = 0; i < m->n_stages; i++) {
        if (swin_dim(m, i) > (1 << 20))
            return H->cfg_fail(c, dim_key, "%lld makes stage %d's width %lld, over 2^20",
                               (long long)m->embed_dim, i + 1, (long long)swin_dim(m, i));
        if (swin_dim(m, i) % m->heads[i])
            return H->cfg_fail(c, heads_key, "stage %d: %lld heads do not divide its width %lld",
                               i + 1, (long long)m->heads[i], (long long)swin_dim(m, i));
    }
    return VP_OK;
}

/* The MLP widths int(ratio * dim) (SwinIntermediate's and detectron2's
 * Mlp's, in double as Python computes them). */
static vp_status mlp_units(const vp_config *c, const char *key, double ratio, swin *m)
{
    for (int i = 0; i < m->n_stages; i++) {
        double u = ratio * (double)swin_dim(m, i);
        if (!(u >= 1 && u <= (1 << 24)))
            return H->cfg_fail(c, key, "must make an MLP of 1 to %d units from stage %d's "
                               "width %lld, got %g", 1 << 24, i + 1, (long long)swin_dim(m, i),
                               ratio);
        m->mlp[i] = (int64_t)u;
    }
    return VP_OK;
}

/* What the HF modes have where D2SwinTransformer differs (swin.h). */
static void hf_semantics(swin *m)
{
    m->qk_scale = 0.0f;
    m->patch_norm = true;
    m->proj_drop = m->attn_drop;
    m->mlp_drop = 0.0f;
    m->drop_path_mlp = false;
    m->out_stages = (1u << m->n_stages) - 1;
}

/* SwinConfig's fields from object c (the HF config's Swin part or the
 * plugin's entry), with SwinConfig's defaults. */
static vp_status read_arch(const vp_config *c, swin *m)
{
    static const int64_t def_depths[4] = {2, 2, 6, 2}, def_heads[4] = {3, 6, 12, 24};
    int n_heads = 0;
    double ratio = 4.0, eps = 1e-5, std = 0.02, hd = 0, ad = 0, dpr = 0;
    const char *act = NULL;
    bool abs_pos = false;
    vp_status st = int_in(c, "embed_dim", 96, 1, 1 << 16, &m->embed_dim);
    if (!st)
        st = stage_list(c, "depths", def_depths, 4, 1024, m->depths, &m->n_stages);
    if (!st)
        st = stage_list(c, "num_heads", def_heads, 4, 1 << 16, m->heads, &n_heads);
    if (!st && n_heads != m->n_stages)
        st = H->cfg_fail(c, "num_heads", "lists %d stages, depths %d", n_heads, m->n_stages);
    if (!st)
        st = check_widths(c, m, "embed_dim", "num_heads");
    if (!st)
        st = int_in(c, "window_size", 7, 1, 256, &m->window);
    if (!st)
        st = int_in(c, "patch_size", 4, 1, 4096, &m->patch);
    if (!st)
        st = int_in(c, "num_channels", 3, 1, 4096, &m->channels);
    if (!st)
        st = H->cfg_float(c, "mlp_ratio", 4.0, &ratio);
    if (!st)
        st = mlp_units(c, "mlp_ratio", ratio, m);
    if (!st)
        st = H->cfg_bool(c, "qkv_bias", true, &m->qkv_bias);
    if (!st)
        st = H->cfg_float(c, "layer_norm_eps", 1e-5, &eps);
    if (!st && !(eps > 0 && eps < 1))
        st = H->cfg_fail(c, "layer_norm_eps", "must be in (0, 1), got %g", eps);
    if (!st)
        st = H->cfg_string(c, "hidden_act", "gelu", &act);
    if (!st && strcmp(act, "gelu"))
        st = H->cfg_fail(c, "hidden_act", "\"%s\" is not supported (only \"gelu\", the exact "
                         "erf form)", act);
    if (!st)
        st = H->cfg_bool(c, "use_absolute_embeddings", false, &abs_pos);
    if (!st && abs_pos)
        st = H->cfg_fail(c, "use_absolute_embeddings", "true is not supported (absolute "
                         "position embeddings are not implemented; Swin backbones use none)");
    if (!st)
        st = float_in(c, "drop_path_rate", 0.0, 0.0, 1.0, true, &dpr);
    if (!st)
        st = check_outputs(c, m->n_stages);
    if (!st)
        st = float_in(c, "initializer_range", 0.02, 0.0, 1.0, false, &std);
    if (!st)
        st = float_in(c, "hidden_dropout_prob", 0.0, 0.0, 1.0, true, &hd);
    if (!st)
        st = float_in(c, "attention_probs_dropout_prob", 0.0, 0.0, 1.0, true, &ad);
    if (!st)
        st = size_hw(c, "image_size", (int64_t[]){224, 224}, m->image);
    if (st)
        return st;
    m->drop_path = (float)dpr;
    m->eps = (float)eps;
    m->init_std = (float)std;
    m->hidden_drop = (float)hd;
    m->attn_drop = (float)ad;
    hf_semantics(m);
    return VP_OK;
}

/* The JSON file at path, or a directory's config.json. */
static vp_status load_json(const char *path, vp_config **root)
{
    struct stat sb;
    char *file = NULL;
    if (!stat(path, &sb) && S_ISDIR(sb.st_mode)) {
        size_t n = strlen(path) + sizeof "/config.json";
        file = malloc(n);
        if (!file)
            return H->error(VP_ERR_NOMEM, "swin: out of memory");
        snprintf(file, n, "%s/config.json", path);
    }
    vp_status st = H->cfg_load(file ? file : path, root);
    free(file);
    return st;
}

/* The Swin part of the HF config at path (a directory: its config.json). */
static vp_status read_hf(const char *path, swin *m)
{
    vp_config *root = NULL;
    vp_status st = load_json(path, &root);
    if (st)
        return st;
    const char *type = NULL;
    const vp_config *sw = root;
    st = H->cfg_string(root, "model_type", NULL, &type);
    if (!st && !type)
        st = H->cfg_fail(root, "model_type", "missing: the swin plugin reads \"swin\" configs "
                         "and \"mask2former\" configs with a Swin backbone_config");
    if (!st && !strcmp(type, "mask2former")) {
        sw = H->cfg_get(root, "backbone_config");
        if (H->cfg_type(root, "backbone_config") != VP_CFG_OBJECT)
            st = H->cfg_fail(root, "backbone_config", "missing: this mask2former config names "
                             "no Swin backbone_config (a timm or hub backbone is not supported)");
        if (!st)
            st = H->cfg_string(sw, "model_type", NULL, &type);
        if (!st && !type)
            st = H->cfg_fail(sw, "model_type", "missing: the swin plugin reads a Swin backbone "
                             "(\"swin\")");
        else if (!st && strcmp(type, "swin"))
            st = H->cfg_fail(sw, "model_type", "\"%s\" is not supported: the swin plugin reads "
                             "a Swin backbone (\"swin\")", type);
    } else if (!st && strcmp(type, "swin")) {
        st = H->cfg_fail(root, "model_type", "\"%s\" is not supported: the swin plugin reads "
                         "\"swin\" configs and \"mask2former\" configs with a Swin "
                         "backbone_config", type);
    }
    if (!st)
        st = read_arch(sw, m);
    H->cfg_free(root);
    return st;
}

/* ---- detectron2 ------------------------------------------------------------------ */

/* D2SwinTransformer's output names, stage by stage. */
static const char *const d2_stages[4] = {"res2", "res3", "res4", "res5"};

/* OUT_FEATURES: the stages handed on (absent or null: all four). */
static vp_status d2_out_features(const vp_config *c, swin *m)
{
    vp_cfg_type t = H->cfg_type(c, "OUT_FEATURES");
    m->out_stages = 0xfu;
    if (t == VP_CFG_ABSENT || t == VP_CFG_NULL)
        return VP_OK;
    const vp_config *list = H->cfg_get(c, "OUT_FEATURES");
    if (t != VP_CFG_ARRAY || H->cfg_len(list) < 1)
        return H->cfg_fail(c, "OUT_FEATURES", "expected a list of stages, \"res2\" to \"res5\"");
    m->out_stages = 0;
    for (int i = 0; i < H->cfg_len(list); i++) {
        const vp_config *e = H->cfg_at(list, i);
        const char *name = NULL;
        vp_status st = H->cfg_string(e, NULL, NULL, &name);
        if (st)
            return st;
        int k = 0;
        while (k < 4 && strcmp(name, d2_stages[k]))
            k++;
        if (k == 4)
            return H->cfg_fail(e, NULL, "\"%s\" is not a stage of D2SwinTransformer (\"res2\", "
                               "\"res3\", \"res4\" or \"res5\")", name);
        if (m->out_stages >> k & 1u)
            return H->cfg_fail(e, NULL, "\"%s\" is listed twice", name);
        m->out_stages |= 1u << k;
    }
    return VP_OK;
}

/* D2SwinTransformer's settings, cfg.MODEL.SWIN (object c), with the
 * defaults of Mask2Former's add_maskformer2_config. */
static vp_status read_d2_arch(const vp_config *c, swin *m)
{
    static const int64_t def_depths[4] = {2, 2, 6, 2}, def_heads[4] = {3, 6, 12, 24};
    int n_heads = 0;
    double ratio = 4.0, qk = 0, drop = 0, ad = 0, dpr = 0.3;
    bool ape = false;
    vp_status st = int_in(c, "EMBED_DIM", 96, 1, 1 << 16, &m->embed_dim);
    if (!st)
        st = stage_list(c, "DEPTHS", def_depths, 4, 1024, m->depths, &m->n_stages);
    if (!st && m->n_stages != 4)
        st = H->cfg_fail(c, "DEPTHS", "lists %d stages: D2SwinTransformer has 4 (res2 to res5)",
                         m->n_stages);
    if (!st)
        st = stage_list(c, "NUM_HEADS", def_heads, 4, 1 << 16, m->heads, &n_heads);
    if (!st && n_heads != m->n_stages)
        st = H->cfg_fail(c, "NUM_HEADS", "lists %d stages, DEPTHS %d", n_heads, m->n_stages);
    if (!st)
        st = check_widths(c, m, "EMBED_DIM", "NUM_HEADS");
    if (!st)
        st = int_in(c, "WINDOW_SIZE", 7, 1, 256, &m->window);
    if (!st)
        st = int_in(c, "PATCH_SIZE", 4, 1, 4096, &m->patch);
    if (!st)
        st = H->cfg_float(c, "MLP_RATIO", 4.0, &ratio);
    if (!st)
        st = mlp_units(c, "MLP_RATIO", ratio, m);
    if (!st)
        st = H->cfg_bool(c, "QKV_BIAS", true, &m->qkv_bias);
    /* WindowAttention: self.scale = qk_scale or head_dim ** -0.5, so null
     * and 0 both mean the default */
    vp_cfg_type qt = H->cfg_type(c, "QK_SCALE");
    if (!st && qt != VP_CFG_ABSENT && qt != VP_CFG_NULL)
        st = H->cfg_float(c, "QK_SCALE", 0.0, &qk);
    if (!st && !(fabs(qk) <= 1e6))
        st = H->cfg_fail(c, "QK_SCALE", "must be null (head_dim^-0.5) or a scale of magnitude "
                         "at most 1e6, got %g", qk);
    if (!st)
        st = float_in(c, "DROP_RATE", 0.0, 0.0, 1.0, true, &drop);
    if (!st)
        st = float_in(c, "ATTN_DROP_RATE", 0.0, 0.0, 1.0, true, &ad);
    if (!st)
        st = float_in(c, "DROP_PATH_RATE", 0.3, 0.0, 1.0, true, &dpr);
    if (!st)
        st = H->cfg_bool(c, "APE", false, &ape);
    if (!st && ape)
        st = H->cfg_fail(c, "APE", "true is not supported (absolute position embeddings are not "
                         "implemented; Mask2Former's and Mask DINO's Swin configs use none)");
    if (!st)
        st = H->cfg_bool(c, "PATCH_NORM", true, &m->patch_norm);
    if (!st)
        st = d2_out_features(c, m);
    /* the only size cfg.MODEL holds; "image" sets the input's */
    if (!st)
        st = size_hw(c, "PRETRAIN_IMG_SIZE", (int64_t[]){224, 224}, m->image);
    if (st)
        return st;
    m->channels = 3; /* D2SwinTransformer's in_chans */
    m->eps = SWIN_TORCH_LN_EPS; /* every norm is nn.LayerNorm(C) */
    m->init_std = 0.02f;
    m->qk_scale = (float)qk;
    m->hidden_drop = m->proj_drop = m->mlp_drop = (float)drop;
    m->attn_drop = (float)ad;
    m->drop_path = (float)dpr;
    m->drop_path_mlp = true;
    m->d2 = true;
    return VP_OK;
}

/* detectron2's cfg.MODEL in its config.json: "MODEL" or, as a dump of a
 * run names it, "cfg_MODEL". */
static vp_status d2_model(const vp_config *root, const vp_config **model)
{
    bool a = H->cfg_type(root, "MODEL") != VP_CFG_ABSENT,
         b = H->cfg_type(root, "cfg_MODEL") != VP_CFG_ABSENT;
    const char *key = a ? "MODEL" : "cfg_MODEL";
    if (a && b)
        return H->cfg_fail(root, "cfg_MODEL", "not with \"MODEL\": the file must hold "
                           "detectron2's cfg.MODEL once");
    if (!a && !b)
        return H->cfg_fail(root, "MODEL", "missing: a detectron2 config.json holds the resolved "
                           "cfg.MODEL as \"MODEL\" (or \"cfg_MODEL\")");
    if (H->cfg_type(root, key) != VP_CFG_OBJECT)
        return H->cfg_fail(root, key, "expected an object (detectron2's cfg.MODEL)");
    *model = H->cfg_get(root, key);
    return VP_OK;
}

/* D2SwinTransformer from the detectron2 config at path (a directory: its
 * config.json): MODEL.BACKBONE.NAME must name it, MODEL.SWIN says how. */
static vp_status read_d2(const char *path, swin *m)
{
    vp_config *root = NULL;
    vp_status st = load_json(path, &root);
    if (st)
        return st;
    const vp_config *model = NULL, *bb = NULL;
    const char *name = NULL;
    st = d2_model(root, &model);
    if (!st && H->cfg_type(model, "BACKBONE") != VP_CFG_OBJECT)
        st = H->cfg_fail(model, "BACKBONE", "missing: the swin plugin builds detectron2's "
                         "\"D2SwinTransformer\" backbone");
    if (!st) {
        bb = H->cfg_get(model, "BACKBONE");
        st = H->cfg_string(bb, "NAME", NULL, &name);
    }
    if (!st && (!name || strcmp(name, "D2SwinTransformer")))
        st = H->cfg_fail(bb, "NAME", "%s%s%s%s: the swin plugin builds detectron2's "
                         "\"D2SwinTransformer\"", name ? "\"" : "missing", name ? name : "",
                         name ? "\"" : "", name ? " is not supported" : "");
    if (!st && H->cfg_type(model, "SWIN") != VP_CFG_OBJECT)
        st = H->cfg_fail(model, "SWIN", "missing: D2SwinTransformer's settings (cfg.MODEL.SWIN)");
    if (!st)
        st = read_d2_arch(H->cfg_get(model, "SWIN"), m);
    H->cfg_free(root);
    return st;
}

/* With "detectron2", the entry holds the directory and "image" only: the
 * names are the checkpoint's, the core loads it, and HF's hidden_states are
 * no detectron2 output. */
static vp_status d2_only(const vp_config *cfg, const char *d2)
{
    static const struct {
        const char *key, *why;
    } refused[] = {
        {"names", "the parameters have the checkpoint's names (backbone.patch_embed.proj.weight, "
                  "...)"},
        {"weights", "the core loads the checkpoint's model.safetensors (or give model.weights)"},
        {"output_hidden_states", "detectron2's outputs are backbone.res2 to backbone.res5"},
    };
    for (size_t i = 0; i < sizeof refused / sizeof refused[0]; i++)
        if (H->cfg_type(cfg, refused[i].key) != VP_CFG_ABSENT)
            return H->cfg_fail(cfg, refused[i].key, "not with \"detectron2\" (%s): %s", d2,
                               refused[i].why);
    return VP_OK;
}

vp_status swin_create(const vp_config *cfg, void **self)
{
    static const char *const own[] = {"plugin", "hf", "image", "names", "weights",
                                      "output_hidden_states", "detectron2"};
    const char *known[sizeof own / sizeof own[0] + N_HF_FIELDS];
    uint32_t n_known = 0;
    for (size_t i = 0; i < sizeof own / sizeof own[0]; i++)
        known[n_known++] = own[i];
    for (size_t i = 0; i < N_HF_FIELDS; i++)
        known[n_known++] = hf_fields[i];
    swin *m = calloc(1, sizeof *m);
    if (!m)
        return H->error(VP_ERR_NOMEM, "swin: out of memory");
    const char *hf = NULL, *d2 = NULL, *names = NULL;
    vp_status st = H->cfg_check_keys(cfg, known, n_known);
    if (!st)
        st = H->cfg_file(cfg, "hf", &hf);
    if (!st)
        st = H->cfg_file(cfg, "detectron2", &d2);
    if (!st && hf && d2)
        st = H->cfg_fail(cfg, "detectron2", "not with \"hf\": give one (a Hugging Face or a "
                         "detectron2 checkpoint)");
    /* With "hf" or "detectron2" the architecture is the file's: a field
     * given here too would silently disagree with the checkpoint, so it is
     * refused. */
    const char *form = hf ? "hf" : "detectron2", *arch = hf ? hf : d2;
    for (size_t i = 0; !st && arch && i < N_HF_FIELDS; i++)
        if (H->cfg_type(cfg, hf_fields[i]) != VP_CFG_ABSENT)
            st = H->cfg_fail(cfg, hf_fields[i], "not with \"%s\": the architecture comes from %s "
                             "(give one or the other; \"image\" sets the input size)", form,
                             arch);
    if (!st && d2)
        st = d2_only(cfg, d2);
    if (!st)
        st = hf ? read_hf(hf, m) : d2 ? read_d2(d2, m) : read_arch(cfg, m);
    if (!st)
        st = size_hw(cfg, "image", m->image, m->image);
    if (!st)
        st = H->cfg_string(cfg, "names", "backbone", &names);
    if (!st && strcmp(names, "backbone") && strcmp(names, "mask2former"))
        st = H->cfg_fail(cfg, "names", "must be \"backbone\" (parameters under \"backbone.\") or "
                         "\"mask2former\" (under \"model.pixel_level_module.encoder.\"), got "
                         "\"%s\"", names);
    if (!st)
        st = H->cfg_file(cfg, "weights", &m->weights);
    if (!st)
        st = H->cfg_bool(cfg, "output_hidden_states", false, &m->hidden_states);
    /* Strides patch * 2^i must stay inside int32. */
    if (!st && (m->patch << (m->n_stages - 1)) > INT32_MAX / 2)
        st = H->cfg_fail(cfg, arch ? form : "patch_size", "patch %lld with %d stages gives "
                         "strides beyond int32", (long long)m->patch, m->n_stages);
    if (st) {
        free(m);
        return st;
    }
    m->m2f_names = !strcmp(names, "mask2former");
    *self = m;
    return VP_OK;
}

/* ---- the plugin ---------------------------------------------------------------- */

static vp_status swin_init(const vp_host_api *host)
{
    if (!VP_HOST_HAS(host, buffer_key))
        return host->error(VP_ERR_ABI, "swin: needs vpeft ABI 1.1 (constant_i32, cfg_load, "
                           "buffer_key)");
    H = host;
    return VP_OK;
}

static const vp_backbone_iface swin_iface = {
    .size = sizeof swin_iface,
    .create = swin_create,
    .destroy = swin_destroy,
    .input_size = swin_input_size,
    .build = swin_build_fn,
};

static const void *swin_get_interface(const char *id)
{
    return strcmp(id, VP_BACKBONE_IFACE_ID) ? NULL : &swin_iface;
}

VP_PLUGIN_EXPORT const vp_plugin_desc *vp_plugin_entry(void)
{
    static const vp_plugin_desc d = {
        .size = sizeof d, .abi_major = VP_ABI_MAJOR, .abi_minor = VP_ABI_MINOR,
        .name = "swin", .kind = VP_PLUGIN_BACKBONE, .version = "0.1.0",
        .description = "Swin Transformer as Hugging Face's SwinBackbone (Mask2Former's "
                       "backbone) or detectron2's D2SwinTransformer (Mask2Former's and Mask "
                       "DINO's repositories), four stages at strides 4 to 32",
        .init = swin_init, .fini = NULL, .get_interface = swin_get_interface};
    return &d;
}
