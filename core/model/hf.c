/*
 * Hugging Face checkpoints as they are (model.h): "model": {"hf": DIR}
 * names a directory holding config.json and model.safetensors (or a
 * sharded model.safetensors.index.json), as the Hub's
 * facebook/mask2former-swin-*-coco-instance give them. What the run
 * config's other checkpoint form, "detectron2" (d2.c), shares with it is
 * here too: the expansion with the run's options (vp_ckpt_expand) and the
 * strict loading (vp_ckpt_load).
 *
 * The run config is expanded in the model's own copy into the backbone and
 * head entries that config.json's model_type calls for; the plugins read
 * config.json themselves (so their errors name its keys), and the weights
 * load strictly: every parameter of the base model from the checkpoint
 * under its own name, every tensor of the checkpoint a parameter or a key
 * a plugin declared (buffer_key: buffers it recomputes, a class predictor
 * it re-initializes for other classes).
 *
 * A directory that is not a checkpoint vpeft can load (no config.json, no
 * weights, a model type it does not build, a shard the index names but
 * the directory lacks, a tensor missing, extra or of another shape) is a
 * config error (VP_ERR_CONFIG: the run config names the wrong thing); a
 * file that cannot be read or is malformed keeps its own status. Every
 * message is one line naming the file and the key. config.json, the index
 * and the shards must be regular files (or links to them): a FIFO or a
 * device would block or mislead the readers, so it is refused before it
 * is opened.
 */
#include <errno.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "io/safetensors.h"
#include "model/model.h"
#include "util/error.h"
#include "util/file.h"

/* The model types "hf" builds, and the plugins for each. */
static const struct {
    const char *model_type, *backbone_type, *backbone, *head, *what;
} hf_models[] = {
    {"mask2former", "swin", "swin", "mask2former", "Mask2FormerForUniversalSegmentation"},
};
#define N_HF_MODELS (sizeof hf_models / sizeof hf_models[0])

bool vp_ckpt_json_string(const char *s, char *out, size_t n)
{
    size_t k = 0;
    if (n < 3)
        return false;
    out[k++] = '"';
    for (; *s; s++) {
        unsigned char c = (unsigned char)*s;
        if (k + 8 >= n)
            return false;
        if (c == '"' || c == '\\')
            out[k++] = '\\';
        if (c < 0x20)
            k += (size_t)snprintf(out + k, n - k, "\\u%04x", c);
        else
            out[k++] = (char)c;
    }
    out[k++] = '"';
    out[k] = 0;
    return true;
}

vp_status vp_ckpt_set(vp_config *root, const char *path, const char *value)
{
    char a[8192];
    if ((size_t)snprintf(a, sizeof a, "%s=%s", path, value) >= sizeof a)
        return vp_error_set(VP_ERR_INVALID, "%.64s: the value is too long", path);
    return vp_cfg_set(root, a);
}

int vp_ckpt_regular(const char *path)
{
    int fd;
    vp_status st = vp_file_open_read(path, &fd);
    if (!st)
        close(fd);
    return !st ? 0 : st == VP_ERR_INVALID ? -1 : errno ? errno : ENOENT;
}

const char *vp_ckpt_why_not(int r)
{
    return r < 0 ? "not a regular file" : strerror(r);
}

/* "a", "b" and "c" for the supported values of one column. */
static void supported(bool backbone, char *out, size_t n)
{
    size_t k = 0;
    out[0] = 0;
    for (size_t i = 0; i < N_HF_MODELS && k < n; i++)
        k += (size_t)snprintf(out + k, n - k, "%s\"%s\"", i ? (i + 1 < N_HF_MODELS ? ", " : " or ")
                                                            : "",
                              backbone ? hf_models[i].backbone_type : hf_models[i].model_type);
}

vp_status vp_ckpt_config_file(const vp_config *model, const char *key, const char *dir,
                               const char *what, char *file, size_t n)
{
    snprintf(file, n, "%s%sconfig.json", dir, dir[strlen(dir) - 1] == '/' ? "" : "/");
    struct stat sb;
    if (stat(dir, &sb))
        return vp_cfg_fail(model, key, "%s: %s (expected a %s checkpoint directory: "
                           "config.json and model.safetensors)", dir, strerror(errno), what);
    if (!S_ISDIR(sb.st_mode))
        return vp_cfg_fail(model, key, "%s is not a directory (expected a %s "
                           "checkpoint directory: config.json and model.safetensors)", dir, what);
    int r = vp_ckpt_regular(file);
    if (r == ENOENT)
        return vp_cfg_fail(model, key, "%s has no config.json: not a %s checkpoint "
                           "directory (config.json and model.safetensors)", dir, what);
    if (r)
        return vp_cfg_fail(model, key, "%s: %s", file, vp_ckpt_why_not(r));
    return VP_OK;
}

/* The model type of DIR/config.json, checked against hf_models: the
 * plugins of its row. Errors name config.json and the key. */
static vp_status hf_read(const vp_config *model, const char *dir, vp_ckpt_plugins *out)
{
    char file[4200];
    vp_status st = vp_ckpt_config_file(model, "hf", dir, "Hugging Face", file, sizeof file);
    if (st)
        return st;
    vp_config *hf;
    st = vp_cfg_load(file, &hf);
    if (st)
        return vp_error_wrap(st, "%s: model.hf", vp_cfg_file_name(model));
    const char *type = NULL, *bb_type = NULL;
    /* null reads as missing: HF writes it for timm and Hub backbones */
    vp_cfg_type bt = vp_cfg_type_of(hf, "backbone_config");
    const vp_config *bb = bt == VP_CFG_NULL ? NULL : vp_cfg_get(hf, "backbone_config");
    st = vp_cfg_string(hf, "model_type", NULL, &type);
    if (!st && bb)
        st = vp_cfg_string(bb, "model_type", NULL, &bb_type);
    int k = -1;
    for (size_t i = 0; !st && type && i < N_HF_MODELS; i++)
        if (!strcmp(type, hf_models[i].model_type))
            k = (int)i;
    char list[256];
    supported(false, list, sizeof list);
    /* a detectron2 config (its cfg.MODEL) given as "hf": say which form reads it */
    bool d2 = vp_cfg_type_of(hf, "MODEL") == VP_CFG_OBJECT ||
              vp_cfg_type_of(hf, "cfg_MODEL") == VP_CFG_OBJECT;
    if (!st && !type)
        st = vp_cfg_fail(hf, "model_type", "missing: vpeft loads %s (%s) checkpoints%s", list,
                         hf_models[0].what, d2 ? " (this is a detectron2 config: name its "
                         "directory with \"detectron2\" instead of \"hf\")" : "");
    else if (!st && k < 0)
        st = vp_cfg_fail(hf, "model_type", "\"%s\" is not supported: vpeft loads %s (%s) "
                         "checkpoints", type, list, hf_models[0].what);
    else if (!st && !bb)
        st = vp_cfg_fail(hf, "backbone_config", "missing: vpeft loads %s checkpoints with their "
                         "\"%s\" backbone_config (timm and Hub backbones are not supported)",
                         type, hf_models[k].backbone_type);
    else if (!st && (!bb_type || strcmp(bb_type, hf_models[k].backbone_type)))
        st = vp_cfg_fail(bb, "model_type", "%s%s%s%s: vpeft loads %s checkpoints "
                         "with a \"%s\" backbone", bb_type ? "\"" : "missing",
                         bb_type ? bb_type : "", bb_type ? "\"" : "",
                         bb_type ? " is not supported" : "", type, hf_models[k].backbone_type);
    if (!st)
        *out = (vp_ckpt_plugins){hf_models[k].backbone, hf_models[k].head, "mask2former"};
    vp_cfg_free(hf);
    return st;
}

/* The run's own options that a checkpoint form passes to the plugins,
 * after the form's own key. */
static const char *const ckpt_opts[] = {"image", "classes", "max_targets", "top_k",
                                        "target_stride", "train_num_points", "score_threshold",
                                        "weights", "pretrained"};
#define N_CKPT_OPTS (sizeof ckpt_opts / sizeof ckpt_opts[0])

vp_status vp_ckpt_expand(vp_config *root, const char *key, vp_ckpt_read_fn read)
{
    const vp_config *model = vp_cfg_get(root, "model");
    if (vp_cfg_type_of(model, key) == VP_CFG_ABSENT)
        return VP_OK;
    const char *keys[1 + N_CKPT_OPTS] = {key};
    for (size_t i = 0; i < N_CKPT_OPTS; i++)
        keys[1 + i] = ckpt_opts[i];
    vp_status st = vp_cfg_check_keys(model, keys, 1 + N_CKPT_OPTS);
    const char *raw = NULL, *dir = NULL;
    if (!st)
        st = vp_cfg_string(model, key, NULL, &raw);
    if (!st)
        st = vp_cfg_file(model, key, &dir);
    bool pretrained = true; /* false: config.json only, the plugins' initial values */
    if (!st)
        st = vp_cfg_bool(model, "pretrained", true, &pretrained);
    vp_ckpt_plugins plug = {NULL, NULL, NULL};
    if (!st)
        st = read(model, dir, &plug);
    if (st)
        return st;

    /* Copies first: vp_cfg_set rebuilds the tree, model's strings go. */
    char path[4096], opt[4][64] = {{0}};
    if (!vp_ckpt_json_string(raw, path, sizeof path))
        return vp_cfg_fail(model, key, "the path is too long");
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
    /* train_num_points: a count, or "all" (every target pixel once) */
    char points[64] = "";
    vp_cfg_type pt = vp_cfg_type_of(model, "train_num_points");
    if (pt == VP_CFG_STRING) {
        const char *v;
        if ((st = vp_cfg_string(model, "train_num_points", NULL, &v)))
            return st;
        vp_ckpt_json_string(v, points, sizeof points);
    } else if (pt != VP_CFG_ABSENT) {
        int64_t v;
        if ((st = vp_cfg_int(model, "train_num_points", 0, &v)))
            return st;
        snprintf(points, sizeof points, "%lld", (long long)v);
    }
    /* score_threshold: inference's (HF's post-processing threshold) */
    char thr[64] = "";
    if (vp_cfg_type_of(model, "score_threshold") != VP_CFG_ABSENT) {
        double v;
        if ((st = vp_cfg_float(model, "score_threshold", 0, &v)))
            return st;
        snprintf(thr, sizeof thr, "%.17g", v);
    }
    char img[64] = "";
    if (n_image == 2)
        snprintf(img, sizeof img, "[%lld,%lld]", (long long)image[0], (long long)image[1]);
    else if (n_image)
        snprintf(img, sizeof img, "%lld", (long long)image[0]);
    char quoted[80], bb_key[64], head_key[64], names[80];
    snprintf(bb_key, sizeof bb_key, "model.backbone.%s", key);
    snprintf(head_key, sizeof head_key, "model.head.%s", key);
    vp_ckpt_json_string(plug.backbone, quoted, sizeof quoted);
    if (plug.names)
        vp_ckpt_json_string(plug.names, names, sizeof names);
    if ((st = vp_ckpt_set(root, "model.backbone", "{}")) ||
        (st = vp_ckpt_set(root, "model.head", "{}")) ||
        (st = vp_ckpt_set(root, "model.backbone.plugin", quoted)) ||
        (st = vp_ckpt_set(root, bb_key, path)) ||
        (plug.names && (st = vp_ckpt_set(root, "model.backbone.names", names))) ||
        (img[0] && (st = vp_ckpt_set(root, "model.backbone.image", img))))
        return st;
    vp_ckpt_json_string(plug.head, quoted, sizeof quoted);
    if ((st = vp_ckpt_set(root, "model.head.plugin", quoted)) ||
        (st = vp_ckpt_set(root, head_key, path)))
        return st;
    if ((!pretrained && (st = vp_ckpt_set(root, "model.head.pretrained", "false"))) ||
        (points[0] && (st = vp_ckpt_set(root, "model.head.train_num_points", points))) ||
        (thr[0] && (st = vp_ckpt_set(root, "model.head.score_threshold", thr))))
        return st;
    for (int i = 0; i < 4; i++) {
        char k[64];
        snprintf(k, sizeof k, "model.head.%s", head_opts[i]);
        if (opt[i][0] && (st = vp_ckpt_set(root, k, opt[i])))
            return st;
    }
    return VP_OK;
}

vp_status vp_model_hf_expand(vp_config *root) { return vp_ckpt_expand(root, "hf", hf_read); }

/* The current message again with status VP_ERR_CONFIG (a checkpoint that
 * does not fit the model built from its own config.json). */
static vp_status as_config(void)
{
    char msg[1024];
    snprintf(msg, sizeof msg, "%s", vp_error_last());
    return vp_error_set(VP_ERR_CONFIG, "%s", msg);
}

static void free_files(char **f, uint32_t n)
{
    for (uint32_t i = 0; f && i < n; i++)
        free(f[i]);
    free(f);
}

/* The shard files of a model.safetensors.index.json (its weight_map's
 * values, each once, in order), joined to dir, each checked to be a
 * regular file. */
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
        const vp_config *e = vp_cfg_at(map, i);
        const char *name;
        st = vp_cfg_string(e, NULL, NULL, &name);
        if (!st && (!name || !*name || strchr(name, '/') || !strcmp(name, ".") ||
                    !strcmp(name, "..")))
            st = vp_cfg_fail(e, NULL, "expected a file name in the checkpoint's directory");
        bool seen = false;
        char full[4400];
        if (!st)
            snprintf(full, sizeof full, "%s/%s", dir, name);
        for (uint32_t j = 0; !st && j < k && !seen; j++)
            seen = !strcmp(f[j], full);
        if (st || seen)
            continue;
        int r = vp_ckpt_regular(full);
        if (r == ENOENT)
            st = vp_cfg_fail(e, NULL, "%s: no such shard in %s", name, dir);
        else if (r)
            st = vp_cfg_fail(e, NULL, "%s: %s", full, vp_ckpt_why_not(r));
        else if (!(f[k++] = strdup(full)))
            st = vp_error_set(VP_ERR_NOMEM, "out of host memory");
    }
    vp_cfg_free(ix);
    if (st) {
        free_files(f, k);
        return st;
    }
    *files = f;
    *n = k;
    return VP_OK;
}

/* The weight files of checkpoint dir: model.safetensors, or the shards of
 * model.safetensors.index.json; src receives the one messages name. what:
 * the kind of checkpoint directory, for the message when there are none. */
static vp_status weight_files(const char *dir, const char *what, char ***files, uint32_t *nf,
                              char *src, size_t n)
{
    char single[4200], index[4200];
    snprintf(single, sizeof single, "%s/model.safetensors", dir);
    snprintf(index, sizeof index, "%s/model.safetensors.index.json", dir);
    *files = NULL;
    *nf = 0;
    int rs = vp_ckpt_regular(single), ri = rs ? vp_ckpt_regular(index) : ENOENT;
    if (!rs) {
        snprintf(src, n, "%s", single);
        char **f = malloc(sizeof *f);
        if (!f || !(f[0] = strdup(single))) {
            free(f);
            return vp_error_set(VP_ERR_NOMEM, "out of host memory");
        }
        *files = f;
        *nf = 1;
        return VP_OK;
    }
    if (rs != ENOENT)
        return vp_error_set(VP_ERR_CONFIG, "%s: %s", single, vp_ckpt_why_not(rs));
    if (!ri) {
        snprintf(src, n, "%s", index);
        return index_files(dir, index, files, nf);
    }
    if (ri != ENOENT)
        return vp_error_set(VP_ERR_CONFIG, "%s: %s", index, vp_ckpt_why_not(ri));
    return vp_error_set(VP_ERR_CONFIG, "%s: no model.safetensors (nor a sharded "
                        "model.safetensors.index.json): not a %s checkpoint directory", dir,
                        what);
}

/* The base model's parameters by tensor, for finding a key's parameter
 * through the graph's name hash: n log n for the whole checkpoint, not
 * keys x parameters string compares. */
typedef struct by_tensor {
    const vp_gt *t;
    uint32_t i;
} by_tensor;

static int cmp_tensor(const void *a, const void *b)
{
    uintptr_t x = (uintptr_t)((const by_tensor *)a)->t, y = (uintptr_t)((const by_tensor *)b)->t;
    return (x > y) - (x < y);
}

/* The base model's parameter named key (np when none). */
static uint32_t find_param(const vp_graph *g, const by_tensor *map, uint32_t n, uint32_t np,
                           const char *key)
{
    by_tensor k = {vp_graph_find(g, key), 0};
    const by_tensor *hit = k.t ? bsearch(&k, map, n, sizeof *map, cmp_tensor) : NULL;
    return hit ? hit->i : np;
}

vp_status vp_ckpt_load(vp_model *m, const char *dir, const char *what)
{
    const vp_build *b = vp_model_build(m);
    vp_graph *g = vp_model_graph(m);
    char **files = NULL, src[4200] = "";
    uint32_t nf = 0, np = vp_build_param_count(b);
    vp_status st = weight_files(dir, what, &files, &nf, src, sizeof src);
    /* from[i]: 1 + the file parameter i came from, 0 while not loaded */
    uint32_t *from = st ? NULL : calloc(np ? np : 1, sizeof *from), nmap = 0;
    by_tensor *map = st ? NULL : malloc((np ? np : 1) * sizeof *map);
    if (!st && (!from || !map))
        st = vp_error_set(VP_ERR_NOMEM, "out of host memory");
    for (uint32_t i = 0; !st && i < np; i++)
        if (vp_build_param_at(b, i)->owner == 0)
            map[nmap++] = (by_tensor){vp_build_param_at(b, i)->t, i};
    if (!st)
        qsort(map, nmap, sizeof *map, cmp_tensor);
    float *buf = NULL;
    for (uint32_t fi = 0; !st && fi < nf; fi++) {
        vp_st *f;
        if ((st = vp_st_open(files[fi], &f)))
            break;
        for (size_t k = 0; !st && k < vp_st_count(f); k++) {
            const char *key = vp_st_get(f, k)->name;
            if (vp_build_is_buffer_key(b, key))
                continue; /* recomputed, or re-initialized on purpose */
            uint32_t i = find_param(g, map, nmap, np, key);
            if (i == np) {
                st = vp_error_set(VP_ERR_CONFIG, "%s: unexpected tensor \"%s\": the model built "
                                  "from %s/config.json has no such parameter", files[fi], key,
                                  dir);
                break;
            }
            if (from[i]) {
                st = vp_error_set(VP_ERR_CONFIG, "%s: tensor \"%s\" is in %s as well: each "
                                  "tensor belongs to one shard", files[fi], key,
                                  files[from[i] - 1]);
                break;
            }
            vp_gt *t = vp_build_param_at(b, i)->t;
            size_t n = (size_t)vp_gt_nelem(t);
            if (vp_st_check_shape(f, key, vp_gt_ndim(t), vp_gt_shape(t))) {
                st = as_config();
                break;
            }
            float *nb = realloc(buf, n * sizeof *buf);
            if (!nb) {
                st = vp_error_set(VP_ERR_NOMEM, "out of host memory");
                break;
            }
            buf = nb;
            if (!(st = vp_st_read_f32(f, key, buf, n)) &&
                !(st = vp_build_check_finite(files[fi], key, buf, n)))
                st = vp_graph_write(g, t, buf, n * sizeof *buf);
            from[i] = fi + 1;
        }
        vp_st_close(f);
    }
    /* Every parameter of the base model must have come from the checkpoint. */
    uint32_t missing = 0, first = 0;
    for (uint32_t i = 0; !st && i < np; i++) {
        const vp_build_param *p = vp_build_param_at(b, i);
        if (p->owner == 0 && !from[i] && !vp_build_is_buffer_key(b, vp_gt_name(p->t)) &&
            !missing++)
            first = i;
    }
    if (!st && missing) {
        char more[64] = "";
        if (missing > 1)
            snprintf(more, sizeof more, " (and %u more)", missing - 1);
        st = vp_error_set(VP_ERR_CONFIG, "%s: no tensor \"%s\"%s: the model built from "
                          "%s/config.json has that parameter", src,
                          vp_gt_name(vp_build_param_at(b, first)->t), more, dir);
    }
    free(buf);
    free(from);
    free(map);
    free_files(files, nf);
    return st;
}

vp_status vp_model_load_hf(vp_model *m, const char *dir)
{
    return vp_ckpt_load(m, dir, "Hugging Face");
}
