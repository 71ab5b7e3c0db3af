/*
 * Hugging Face checkpoints as they are (model.h): "model": {"hf": DIR}
 * names a directory holding config.json and model.safetensors (or a
 * sharded model.safetensors.index.json), as the Hub's
 * facebook/mask2former-swin-*-coco-instance give them.
 *
 * The run config is expanded in the model's own copy into the backbone and
 * head entries that config.json's model_type calls for; the plugins read
 * config.json themselves (so their errors name its keys), and the weights
 * load strictly: every parameter of the base model from the checkpoint
 * under its own name, every tensor of the checkpoint a parameter or a key
 * a plugin declared (buffer_key: buffers it recomputes, a class predictor
 * it re-initializes for other classes).
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

#include "io/safetensors.h"
#include "model/model.h"
#include "util/error.h"

/* The model types "hf" builds, and the plugins for each. */
static const struct {
    const char *model_type, *backbone_type, *backbone, *head;
} hf_models[] = {
    {"mask2former", "swin", "swin", "mask2former"},
};

/* s as a JSON string literal (for vp_cfg_set), into out. */
static void json_string(const char *s, char *out, size_t n)
{
    size_t k = 0;
    if (n < 3)
        return;
    out[k++] = '"';
    for (; *s && k + 3 < n; s++) {
        if (*s == '"' || *s == '\\')
            out[k++] = '\\';
        out[k++] = *s;
    }
    out[k++] = '"';
    out[k] = 0;
}

static vp_status set(vp_config *root, const char *path, const char *value)
{
    char a[8192];
    if ((size_t)snprintf(a, sizeof a, "%s=%s", path, value) >= sizeof a)
        return vp_error_set(VP_ERR_INVALID, "model.hf: the path is too long");
    return vp_cfg_set(root, a);
}

/* The run's own options that model.hf passes to the plugins. */
static const char *const hf_keys[] = {"hf", "image", "classes", "max_targets", "top_k",
                                      "target_stride", "weights"};

vp_status vp_model_hf_expand(vp_config *root)
{
    const vp_config *model = vp_cfg_get(root, "model");
    if (vp_cfg_type_of(model, "hf") == VP_CFG_ABSENT)
        return VP_OK;
    vp_status st = vp_cfg_check_keys(model, hf_keys, sizeof hf_keys / sizeof hf_keys[0]);
    const char *raw = NULL, *dir = NULL;
    if (!st)
        st = vp_cfg_string(model, "hf", NULL, &raw);
    if (!st)
        st = vp_cfg_file(model, "hf", &dir);
    if (st)
        return st;
    char file[4200];
    snprintf(file, sizeof file, "%s%sconfig.json", dir, dir[strlen(dir) - 1] == '/' ? "" : "/");
    vp_config *hf;
    if ((st = vp_cfg_load(file, &hf)))
        return vp_error_wrap(st, "%s: model.hf", vp_cfg_file_name(root));
    const char *type = NULL, *bb_type = NULL;
    st = vp_cfg_string(hf, "model_type", NULL, &type);
    if (!st)
        st = vp_cfg_string(vp_cfg_get(hf, "backbone_config"), "model_type", NULL, &bb_type);
    int k = -1;
    for (size_t i = 0; !st && i < sizeof hf_models / sizeof hf_models[0]; i++)
        if (type && !strcmp(type, hf_models[i].model_type))
            k = (int)i;
    if (!st && k < 0)
        st = vp_cfg_fail(hf, "model_type", "%s%s%s is not supported: vpeft loads \"mask2former\" "
                         "(Mask2FormerForUniversalSegmentation) with a \"swin\" backbone",
                         type ? "\"" : "", type ? type : "missing", type ? "\"" : "");
    if (!st && (!bb_type || strcmp(bb_type, hf_models[k].backbone_type)))
        st = vp_cfg_fail(hf, vp_cfg_get(hf, "backbone_config") ? "backbone_config.model_type"
                                                                 : "backbone_config",
                         "%s%s%s is not supported: vpeft loads %s checkpoints with a \"%s\" "
                         "backbone", bb_type ? "\"" : "", bb_type ? bb_type : "missing",
                         bb_type ? "\"" : "", hf_models[k].model_type,
                         hf_models[k].backbone_type);
    vp_cfg_free(hf);
    if (st)
        return st;

    /* Copies first: vp_cfg_set rebuilds the tree, model's strings go. */
    char path[4096], opt[4][64] = {{0}};
    json_string(raw, path, sizeof path);
    static const char *const head_opts[4] = {"classes", "max_targets", "top_k", "target_stride"};
    int64_t image[2] = {0, 0};
    int n_image = 0;
    vp_cfg_type it = vp_cfg_type_of(model, "image");
    if (it == VP_CFG_ARRAY && vp_cfg_len(vp_cfg_get(model, "image")) == 2) {
        for (int i = 0; !st && i < 2; i++)
            st = vp_cfg_int(vp_cfg_at(vp_cfg_get(model, "image"), i), NULL, 0, &image[i]);
        n_image = 2;
    } else if (it != VP_CFG_ABSENT) {
        st = vp_cfg_int(model, "image", 0, &image[0]);
        n_image = 1;
    }
    if (!st && n_image && (image[0] < 1 || image[n_image - 1] < 1 || image[0] > 16384 ||
                           image[n_image - 1] > 16384))
        st = vp_cfg_fail(model, "image", "expected a side in pixels (1 to 16384) or [height, "
                         "width]");
    for (int i = 0; !st && i < 4; i++) {
        int64_t v;
        if (vp_cfg_type_of(model, head_opts[i]) == VP_CFG_ABSENT)
            continue;
        if (!(st = vp_cfg_int(model, head_opts[i], 0, &v)))
            snprintf(opt[i], sizeof opt[i], "%lld", (long long)v);
    }
    if (st)
        return st;
    char img[64] = "";
    if (n_image == 2)
        snprintf(img, sizeof img, "[%lld,%lld]", (long long)image[0], (long long)image[1]);
    else if (n_image)
        snprintf(img, sizeof img, "%lld", (long long)image[0]);
    char quoted[80];
    json_string(hf_models[k].backbone, quoted, sizeof quoted);
    if ((st = set(root, "model.backbone", "{}")) || (st = set(root, "model.head", "{}")) ||
        (st = set(root, "model.backbone.plugin", quoted)) ||
        (st = set(root, "model.backbone.hf", path)) ||
        (st = set(root, "model.backbone.names", "\"mask2former\"")) ||
        (img[0] && (st = set(root, "model.backbone.image", img))))
        return st;
    json_string(hf_models[k].head, quoted, sizeof quoted);
    if ((st = set(root, "model.head.plugin", quoted)) || (st = set(root, "model.head.hf", path)))
        return st;
    for (int i = 0; i < 4; i++) {
        char key[64];
        snprintf(key, sizeof key, "model.head.%s", head_opts[i]);
        if (opt[i][0] && (st = set(root, key, opt[i])))
            return st;
    }
    return VP_OK;
}

static bool is_file(const char *path)
{
    struct stat sb;
    return stat(path, &sb) == 0 && S_ISREG(sb.st_mode);
}

/* The shard files of a model.safetensors.index.json (its weight_map's
 * values, each once, in order), joined to dir. */
static vp_status index_files(const char *dir, const char *index, char ***files, uint32_t *n)
{
    *files = NULL;
    *n = 0;
    vp_config *ix;
    vp_status st = vp_cfg_load(index, &ix);
    if (st)
        return st;
    const vp_config *map = vp_cfg_get(ix, "weight_map");
    int len = vp_cfg_len(map);
    if (vp_cfg_type_of(ix, "weight_map") != VP_CFG_OBJECT || len < 1)
        st = vp_cfg_fail(ix, "weight_map", "expected an object of tensor names and files");
    char **f = st ? NULL : calloc((size_t)len, sizeof *f);
    if (!st && !f)
        st = vp_error_set(VP_ERR_NOMEM, "out of host memory");
    uint32_t k = 0;
    for (int i = 0; !st && i < len; i++) {
        const char *name;
        st = vp_cfg_string(vp_cfg_at(map, i), NULL, NULL, &name);
        if (!st && (!name || !*name || strchr(name, '/') || !strcmp(name, "..")))
            st = vp_cfg_fail(vp_cfg_at(map, i), NULL, "expected a file name in the "
                             "checkpoint's directory");
        bool seen = false;
        char full[4400];
        if (!st)
            snprintf(full, sizeof full, "%s/%s", dir, name);
        for (uint32_t j = 0; !st && j < k && !seen; j++)
            seen = !strcmp(f[j], full);
        if (!st && !seen && !(f[k++] = strdup(full)))
            st = vp_error_set(VP_ERR_NOMEM, "out of host memory");
    }
    vp_cfg_free(ix);
    if (st) {
        for (uint32_t j = 0; f && j < k; j++)
            free(f[j]);
        free(f);
        return st;
    }
    *files = f;
    *n = k;
    return VP_OK;
}

vp_status vp_model_load_hf(vp_model *m, const char *dir)
{
    const vp_build *b = vp_model_build(m);
    vp_graph *g = vp_model_graph(m);
    char single[4200], index[4200];
    snprintf(single, sizeof single, "%s/model.safetensors", dir);
    snprintf(index, sizeof index, "%s/model.safetensors.index.json", dir);
    char **files = NULL;
    uint32_t nf = 0;
    vp_status st = VP_OK;
    if (is_file(single)) {
        files = malloc(sizeof *files);
        if (!files || !(files[0] = strdup(single)))
            st = vp_error_set(VP_ERR_NOMEM, "out of host memory");
        nf = files && !st ? 1 : 0;
    } else if (is_file(index)) {
        st = index_files(dir, index, &files, &nf);
    } else {
        st = vp_error_set(VP_ERR_IO, "%s: no model.safetensors (nor a sharded "
                          "model.safetensors.index.json): not a Hugging Face checkpoint "
                          "directory", dir);
    }
    uint32_t np = vp_build_param_count(b);
    bool *loaded = st ? NULL : calloc(np ? np : 1, sizeof *loaded);
    if (!st && !loaded)
        st = vp_error_set(VP_ERR_NOMEM, "out of host memory");
    float *buf = NULL;
    for (uint32_t fi = 0; !st && fi < nf; fi++) {
        vp_st *f;
        if ((st = vp_st_open(files[fi], &f)))
            break;
        for (size_t k = 0; !st && k < vp_st_count(f); k++) {
            const char *key = vp_st_get(f, k)->name;
            uint32_t i = 0;
            while (i < np && (vp_build_param_at(b, i)->owner != 0 ||
                              strcmp(vp_gt_name(vp_build_param_at(b, i)->t), key)))
                i++;
            if (vp_build_is_buffer_key(b, key))
                continue; /* recomputed, or re-initialized on purpose */
            if (i == np) {
                st = vp_error_set(VP_ERR_SHAPE, "%s: unexpected tensor \"%s\": the model built "
                                  "from %s/config.json has no such parameter", files[fi], key,
                                  dir);
                break;
            }
            vp_gt *t = vp_build_param_at(b, i)->t;
            size_t n = (size_t)vp_gt_nelem(t);
            if ((st = vp_st_check_shape(f, key, vp_gt_ndim(t), vp_gt_shape(t))))
                break;
            float *nb = realloc(buf, n * sizeof *buf);
            if (!nb) {
                st = vp_error_set(VP_ERR_NOMEM, "out of host memory");
                break;
            }
            buf = nb;
            if (!(st = vp_st_read_f32(f, key, buf, n)))
                st = vp_graph_write(g, t, buf, n * sizeof *buf);
            loaded[i] = true;
        }
        vp_st_close(f);
    }
    /* Every parameter of the base model must have come from the checkpoint. */
    uint32_t missing = 0, first = 0;
    for (uint32_t i = 0; !st && i < np; i++) {
        const vp_build_param *p = vp_build_param_at(b, i);
        if (p->owner == 0 && !loaded[i] && !vp_build_is_buffer_key(b, vp_gt_name(p->t)) &&
            !missing++)
            first = i;
    }
    if (!st && missing)
        st = vp_error_set(VP_ERR_SHAPE, "%s: the checkpoint lacks %u of the model's parameters, "
                          "the first \"%s\"", dir, missing,
                          vp_gt_name(vp_build_param_at(b, first)->t));
    free(buf);
    free(loaded);
    for (uint32_t i = 0; i < nf; i++)
        free(files[i]);
    free(files);
    return st;
}
