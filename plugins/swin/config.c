/*
 * config.c - the `swin` backbone plugin's config and its entry point.
 *
 * The architecture is Hugging Face's SwinConfig, under its own field names,
 * read either from a config.json ("hf": a checkpoint directory or the file;
 * a "mask2former" config's backbone_config or a "swin" config) or from the
 * plugin's own config entry (a hand-written Swin). Both are checked the same
 * way, each failure one line naming the file and field. docs/swin.md lists
 * every field, its default (SwinConfig's) and what is refused.
 */
#define _POSIX_C_SOURCE 200809L /* stat */

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
    for (int i = 0; !st && i < m->n_stages; i++) {
        if (swin_dim(m, i) > (1 << 20))
            st = H->cfg_fail(c, "embed_dim", "%lld makes stage %d's width %lld, over 2^20",
                             (long long)m->embed_dim, i + 1, (long long)swin_dim(m, i));
        else if (swin_dim(m, i) % m->heads[i])
            st = H->cfg_fail(c, "num_heads", "stage %d: %lld heads do not divide its width %lld",
                             i + 1, (long long)m->heads[i], (long long)swin_dim(m, i));
    }
    if (!st)
        st = int_in(c, "window_size", 7, 1, 256, &m->window);
    if (!st)
        st = int_in(c, "patch_size", 4, 1, 4096, &m->patch);
    if (!st)
        st = int_in(c, "num_channels", 3, 1, 4096, &m->channels);
    if (!st)
        st = H->cfg_float(c, "mlp_ratio", 4.0, &ratio);
    for (int i = 0; !st && i < m->n_stages; i++) {
        /* SwinIntermediate: int(config.mlp_ratio * dim), in double as Python. */
        double u = ratio * (double)swin_dim(m, i);
        if (!(u >= 1 && u <= (1 << 24)))
            st = H->cfg_fail(c, "mlp_ratio", "must make an MLP of 1 to %d units from stage %d's "
                             "width %lld, got %g", 1 << 24, i + 1, (long long)swin_dim(m, i),
                             ratio);
        else
            m->mlp[i] = (int64_t)u;
    }
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
    return VP_OK;
}

/* The Swin part of the HF config at path (a directory: its config.json). */
static vp_status read_hf(const char *path, swin *m)
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
    vp_config *root = NULL;
    vp_status st = H->cfg_load(file ? file : path, &root);
    if (st) {
        free(file);
        return st;
    }
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
    free(file);
    return st;
}

vp_status swin_create(const vp_config *cfg, void **self)
{
    static const char *const own[] = {"plugin", "hf", "image", "names", "weights",
                                      "output_hidden_states"};
    const char *known[sizeof own / sizeof own[0] + N_HF_FIELDS];
    uint32_t n_known = 0;
    for (size_t i = 0; i < sizeof own / sizeof own[0]; i++)
        known[n_known++] = own[i];
    for (size_t i = 0; i < N_HF_FIELDS; i++)
        known[n_known++] = hf_fields[i];
    swin *m = calloc(1, sizeof *m);
    if (!m)
        return H->error(VP_ERR_NOMEM, "swin: out of memory");
    const char *hf = NULL, *names = NULL;
    vp_status st = H->cfg_check_keys(cfg, known, n_known);
    if (!st)
        st = H->cfg_file(cfg, "hf", &hf);
    /* With "hf" the architecture is the file's: a field given here too
     * would silently disagree with the checkpoint, so it is refused. */
    for (size_t i = 0; !st && hf && i < N_HF_FIELDS; i++)
        if (H->cfg_type(cfg, hf_fields[i]) != VP_CFG_ABSENT)
            st = H->cfg_fail(cfg, hf_fields[i], "not with \"hf\": the architecture comes from %s "
                             "(give one or the other; \"image\" sets the input size)", hf);
    if (!st)
        st = hf ? read_hf(hf, m) : read_arch(cfg, m);
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
        st = H->cfg_fail(cfg, hf ? "hf" : "patch_size", "patch %lld with %d stages gives "
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
                       "backbone), four stages at strides 4 to 32",
        .init = swin_init, .fini = NULL, .get_interface = swin_get_interface};
    return &d;
}
