/*
 * PEFT methods on disk (model.h): saving and loading each method's
 * parameters in Hugging Face PEFT's layout, folding methods into the base
 * weights (vpeft merge), and loading a whole model's parameters by name.
 *
 * The layout per method: adapter_config.json with only fields HF PEFT's
 * config classes have (for peft_type LORA a LoraConfig whose
 * target_modules names exactly the modules vpeft adapted), its
 * base_model_name_or_path the model.hf directory as given (or the
 * backbone's weights file, or its plugin); vpeft_config.json beside it
 * with vpeft's own (the plugin, its config entry as written, the version),
 * which HF ignores; and adapter_model.safetensors with the method's
 * parameters only, each as "base_model.model.<name>", the key HF PEFT's
 * get_peft_model_state_dict gives a module path's parameter.
 * Every file goes through a temporary file, fsync and rename: a reader sees
 * the old file or the new one, never half of one.
 */
#include <errno.h>
#include <fcntl.h>
#include <fnmatch.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cjson/cJSON.h>
#include <vpeft/version.h>

#include "io/safetensors.h"
#include "model/model.h"
#include "util/error.h"
#include "util/file.h"

#define KEY_PREFIX "base_model.model."
#define VPEFT_CONFIG "vpeft_config.json"

/* ---- files ---------------------------------------------------------------------- */

/* The directory of method k: dir itself for a single method, else
 * dir/<name> for an entry with a "name", else dir/<plugin>, with _<k> when
 * a plugin appears twice without names. */
static void method_dir(const vp_peft_set *s, uint32_t k, const char *dir, char *out, size_t n)
{
    const char *given = NULL;
    if (s->n == 1) {
        snprintf(out, n, "%s", dir);
        return;
    }
    if (!vp_cfg_string(s->items[k].cfg, "name", NULL, &given) && given) {
        snprintf(out, n, "%s/%s", dir, given);
        return;
    }
    uint32_t same = 0;
    for (uint32_t i = 0; i < s->n; i++) {
        const char *other = NULL;
        vp_cfg_string(s->items[i].cfg, "name", NULL, &other);
        same += !other && !strcmp(s->items[i].name, s->items[k].name);
    }
    if (same > 1)
        snprintf(out, n, "%s/%s_%u", dir, s->items[k].name, k);
    else
        snprintf(out, n, "%s/%s", dir, s->items[k].name);
}

static vp_status read_param(vp_graph *g, vp_gt *t, float **out)
{
    size_t bytes = (size_t)vp_gt_nelem(t) * sizeof(float);
    *out = malloc(bytes ? bytes : 1);
    if (!*out)
        return vp_error_set(VP_ERR_NOMEM, "out of host memory reading %s", vp_gt_name(t));
    vp_status st = vp_graph_read(g, t, *out, bytes);
    if (st) {
        free(*out);
        *out = NULL;
    }
    return st;
}

/* ---- save ------------------------------------------------------------------------ */

/* As the host's selectors match a list entry (select.c): the glob against
 * the whole path or its last dot-separated components. */
static bool tail_match(const char *glob, const char *path)
{
    if (!fnmatch(glob, path, 0))
        return true;
    for (const char *p = strchr(path, '.'); p; p = strchr(p + 1, '.'))
        if (!fnmatch(glob, p + 1, 0))
            return true;
    return false;
}

static int cmp_str(const void *a, const void *b)
{
    return strcmp(*(const char *const *)a, *(const char *const *)b);
}

/* The key parameter name goes under in method k's adapter file: HF PEFT's
 * get_peft_model_state_dict drops the adapter name from
 * "<module>.lora_A.<name>.weight", so a named entry's LoRA tensors are
 * saved as "<module>.lora_A.weight", like an unnamed one's. */
static void saved_key(const vp_model *m, uint32_t k, const char *param, char *out, size_t n)
{
    const char *name = NULL;
    if (k < vp_model_pefts(m)->n)
        vp_cfg_string(vp_model_pefts(m)->items[k].cfg, "name", NULL, &name);
    snprintf(out, n, KEY_PREFIX "%s", param);
    if (!name || !*name)
        return;
    static const char *const parts[] = {".lora_A.", ".lora_B."};
    for (int i = 0; i < 2; i++) {
        char pat[160];
        snprintf(pat, sizeof pat, "%s%s.", parts[i], name);
        char *at = strstr(out, pat);
        if (at) /* drop "<name>." after lora_A / lora_B */
            memmove(at + strlen(parts[i]), at + strlen(pat), strlen(at + strlen(pat)) + 1);
    }
}

static double num_or(const cJSON *o, const char *key, double def)
{
    const cJSON *v = cJSON_GetObjectItemCaseSensitive(o, key);
    return cJSON_IsNumber(v) ? v->valuedouble : def;
}

/* HF PEFT's LoraConfig for method k (peft_type "LORA": lora, lora_deform),
 * with what vpeft adapted spelled out so that HF selects exactly that:
 * target_modules the module names of the linear sites it attached to (HF
 * matches a name exactly; globs, POSIX regexes and lora_deform's
 * targets/modules have no HF meaning), rank_pattern and alpha_pattern
 * per module where they differ from r and lora_alpha (HF matches a key
 * at the end of a module name). The other fields keep the entry's values,
 * or the defaults that vpeft and HF share. */
static cJSON *lora_config(const vp_model *m, uint32_t k, const cJSON *entry)
{
    const vp_build *b = vp_model_build(m);
    double r = num_or(entry, "r", 8), alpha = num_or(entry, "lora_alpha", 8);
    const cJSON *alphas = cJSON_GetObjectItemCaseSensitive(entry, "alpha_pattern");
    uint32_t n = 0;
    for (uint32_t i = 0; i < vp_build_site_count(b); i++) {
        const vp_build_site *st = vp_build_site_at(b, i);
        n += st->kind == VP_SITE_LINEAR && (st->attached & (1u << k));
    }
    const char **paths = calloc(n ? n : 1, sizeof *paths);
    cJSON *o = cJSON_CreateObject(), *tm = cJSON_CreateArray();
    cJSON *rp = cJSON_CreateObject(), *ap = cJSON_CreateObject();
    if (!paths || !o || !tm || !rp || !ap) {
        free(paths);
        cJSON_Delete(o);
        cJSON_Delete(tm);
        cJSON_Delete(rp);
        cJSON_Delete(ap);
        return NULL;
    }
    n = 0;
    for (uint32_t i = 0; i < vp_build_site_count(b); i++) {
        const vp_build_site *st = vp_build_site_at(b, i);
        if (st->kind == VP_SITE_LINEAR && (st->attached & (1u << k)))
            paths[n++] = st->path;
    }
    qsort(paths, n, sizeof *paths, cmp_str);
    for (uint32_t j = 0; j < n; j++) {
        cJSON_AddItemToArray(tm, cJSON_CreateString(paths[j]));
        char a_name[600], key[700];
        snprintf(a_name, sizeof a_name, KEY_PREFIX "%s.lora_A.weight", paths[j]);
        for (uint32_t i = 0; i < vp_build_param_count(b); i++) {
            const vp_build_param *p = vp_build_param_at(b, i);
            if (p->owner != k + 1)
                continue;
            saved_key(m, k, vp_gt_name(p->t), key, sizeof key);
            if (!strcmp(key, a_name) && (double)vp_gt_shape(p->t)[0] != r)
                cJSON_AddNumberToObject(rp, paths[j], (double)vp_gt_shape(p->t)[0]);
        }
        /* the lora plugin's rule: the first alpha_pattern key that matches */
        const cJSON *e;
        cJSON_ArrayForEach(e, alphas) {
            if (cJSON_IsNumber(e) && e->string && tail_match(e->string, paths[j])) {
                if (e->valuedouble != alpha)
                    cJSON_AddNumberToObject(ap, paths[j], e->valuedouble);
                break;
            }
        }
    }
    free(paths);
    cJSON_AddStringToObject(o, "peft_type", "LORA");
    cJSON_AddNullToObject(o, "task_type");
    cJSON_AddTrueToObject(o, "inference_mode");
    cJSON_AddNumberToObject(o, "r", r);
    cJSON_AddNumberToObject(o, "lora_alpha", alpha);
    cJSON_AddNumberToObject(o, "lora_dropout", num_or(entry, "lora_dropout", 0));
    cJSON_AddItemToObject(o, "target_modules", tm);
    cJSON_AddItemToObject(o, "rank_pattern", rp);
    cJSON_AddItemToObject(o, "alpha_pattern", ap);
    const cJSON *v = cJSON_GetObjectItemCaseSensitive(entry, "use_rslora");
    cJSON_AddBoolToObject(o, "use_rslora", cJSON_IsTrue(v));
    v = cJSON_GetObjectItemCaseSensitive(entry, "init_lora_weights");
    if (cJSON_IsString(v))
        cJSON_AddStringToObject(o, "init_lora_weights", v->valuestring);
    else
        cJSON_AddBoolToObject(o, "init_lora_weights", !cJSON_IsFalse(v));
    cJSON_AddStringToObject(o, "bias", "none");
    cJSON_AddFalseToObject(o, "fan_in_fan_out");
    return o;
}

static cJSON *modules_to_save(const vp_model *m);

/* adapter_config.json, which HF PEFT's PeftConfig.from_pretrained reads
 * (so for LoRA only its fields: an unknown one is a warning there, and an
 * error in PEFT before 0.11), with the values the method used, the
 * defaults it read included; and vpeft_config.json beside it with what is
 * vpeft's own: the plugin, its entry as written, the version. */
static vp_status save_config(const vp_model *m, const vp_config *root, uint32_t k,
                             const char *mdir)
{
    const vp_peft_item *it = &vp_model_pefts(m)->items[k];
    char *text = vp_cfg_to_json(it->cfg), *rtext = vp_cfg_to_json_resolved(it->cfg);
    cJSON *entry = text ? cJSON_Parse(text) : NULL, *used = rtext ? cJSON_Parse(rtext) : NULL;
    free(text);
    free(rtext);
    char path[4200];
    snprintf(path, sizeof path, "%s/adapter_config.json", mdir);
    if (!entry || !used) {
        cJSON_Delete(entry);
        cJSON_Delete(used);
        return vp_error_set(VP_ERR_NOMEM, "out of host memory writing %s", path);
    }
    /* The base model as HF names it: model.hf's directory as the run config
     * gives it, else the backbone's weights file, else its plugin. */
    const char *base = vp_model_plugin_name(m, VP_PLUGIN_BACKBONE);
    const vp_config *model = vp_cfg_get(root, "model");
    const vp_config *bb = vp_cfg_get(model, "backbone");
    const char *given = NULL;
    if (vp_cfg_type_of(model, "hf") == VP_CFG_STRING)
        vp_cfg_string(model, "hf", NULL, &given);
    else if (vp_cfg_type_of(bb, "weights") == VP_CFG_STRING)
        vp_cfg_string(bb, "weights", NULL, &given);
    if (given)
        base = given;
    const char *type = it->iface->peft_type ? it->iface->peft_type : it->name;
    cJSON *hf;
    if (!strcmp(type, "LORA")) {
        hf = lora_config(m, k, used);
        cJSON_Delete(used);
    } else { /* the entry with the defaults the plugin read (vp_cfg_to_json_resolved) */
        hf = used;
        cJSON_DeleteItemFromObjectCaseSensitive(hf, "plugin");
        cJSON_AddStringToObject(hf, "peft_type", type);
    }
    if (hf)
        cJSON_AddStringToObject(hf, "base_model_name_or_path", base ? base : "");
    cJSON *mts = k == 0 ? modules_to_save(m) : NULL;
    if (hf && mts) {
        cJSON_DeleteItemFromObjectCaseSensitive(hf, "modules_to_save");
        cJSON_AddItemToObject(hf, "modules_to_save", mts);
    } else {
        cJSON_Delete(mts);
    }
    cJSON *own = cJSON_CreateObject();
    if (own) {
        cJSON_AddStringToObject(own, "vpeft_plugin", it->name);
        cJSON_AddStringToObject(own, "vpeft_version", VP_VERSION_STRING);
        cJSON_AddItemToObject(own, "peft", entry);
        entry = NULL;
    }
    cJSON_Delete(entry);
    char *out = hf ? cJSON_Print(hf) : NULL, *out2 = own ? cJSON_Print(own) : NULL;
    cJSON_Delete(hf);
    cJSON_Delete(own);
    vp_status st = out && out2 ? vp_file_write_atomic(path, out, strlen(out))
                               : vp_error_set(VP_ERR_NOMEM, "out of host memory writing %s", path);
    snprintf(path, sizeof path, "%s/" VPEFT_CONFIG, mdir);
    if (!st)
        st = vp_file_write_atomic(path, out2, strlen(out2));
    free(out);
    free(out2);
    return st;
}

/* Whether parameter p goes into method k's adapter: the method's own, and
 * with the first method the base parameters trained beside it
 * (train.trainable: a re-initialized class_predictor), as HF PEFT's
 * modules_to_save saves them, under their own names. */
static bool saved_with(const vp_build_param *p, uint32_t k)
{
    return p->owner == k + 1 || (k == 0 && p->owner == 0 && vp_gt_trainable(p->t));
}

/* adapter_config.json's modules_to_save: the modules of the trained base
 * parameters (names less their last component), sorted, each once; NULL
 * when none. */
static cJSON *modules_to_save(const vp_model *m)
{
    const vp_build *b = vp_model_build(m);
    uint32_t np = vp_build_param_count(b), n = 0;
    char **mods = calloc(np ? np : 1, sizeof *mods);
    if (!mods)
        return NULL;
    for (uint32_t i = 0; i < np; i++) {
        const vp_build_param *p = vp_build_param_at(b, i);
        if (p->owner != 0 || !vp_gt_trainable(p->t))
            continue;
        const char *name = vp_gt_name(p->t), *dot = strrchr(name, '.');
        size_t len = dot ? (size_t)(dot - name) : strlen(name);
        bool seen = false;
        for (uint32_t j = 0; j < n && !seen; j++)
            seen = strlen(mods[j]) == len && !strncmp(mods[j], name, len);
        if (!seen && (mods[n] = malloc(len + 1))) {
            memcpy(mods[n], name, len);
            mods[n++][len] = 0;
        }
    }
    cJSON *a = NULL;
    if (n) {
        qsort(mods, n, sizeof *mods, cmp_str);
        a = cJSON_CreateArray();
        for (uint32_t j = 0; a && j < n; j++)
            cJSON_AddItemToArray(a, cJSON_CreateString(mods[j]));
    }
    for (uint32_t j = 0; j < n; j++)
        free(mods[j]);
    free(mods);
    return a;
}

vp_status vp_model_save_peft(const vp_model *m, const vp_config *root, const char *dir)
{
    const vp_peft_set *s = vp_model_pefts(m);
    const vp_build *b = vp_model_build(m);
    vp_graph *g = vp_model_graph(m);
    if (!s->n)
        return vp_error_set(VP_ERR_INVALID, "the model has no PEFT method to save");
    vp_status st = vp_mkdir_p(dir);
    for (uint32_t k = 0; !st && k < s->n; k++) {
        char mdir[4096], path[4200];
        method_dir(s, k, dir, mdir, sizeof mdir);
        if ((st = vp_mkdir_p(mdir)))
            break;
        uint32_t n = 0;
        for (uint32_t i = 0; i < vp_build_param_count(b); i++)
            n += saved_with(vp_build_param_at(b, i), k);
        vp_st_entry *e = calloc(n ? n : 1, sizeof *e);
        float **vals = calloc(n ? n : 1, sizeof *vals);
        char **keys = calloc(n ? n : 1, sizeof *keys);
        if (!e || !vals || !keys)
            st = vp_error_set(VP_ERR_NOMEM, "out of host memory");
        uint32_t j = 0;
        for (uint32_t i = 0; !st && i < vp_build_param_count(b); i++) {
            const vp_build_param *p = vp_build_param_at(b, i);
            if (!saved_with(p, k))
                continue;
            size_t len = strlen(KEY_PREFIX) + strlen(vp_gt_name(p->t)) + 1;
            if (!(keys[j] = malloc(len))) {
                st = vp_error_set(VP_ERR_NOMEM, "out of host memory");
                break;
            }
            saved_key(m, k, vp_gt_name(p->t), keys[j], len);
            if ((st = read_param(g, p->t, &vals[j])))
                break;
            e[j] = (vp_st_entry){keys[j], VP_ST_F32, vp_gt_ndim(p->t), vp_gt_shape(p->t), vals[j]};
            j++;
        }
        vp_st_kv meta[2] = {{"format", "pt"}, {"vpeft_plugin", s->items[k].name}};
        snprintf(path, sizeof path, "%s/adapter_model.safetensors", mdir);
        if (!st)
            st = vp_st_write(path, e, j, meta, 2);
        if (!st)
            st = save_config(m, root, k, mdir);
        for (uint32_t i = 0; i < n; i++) {
            if (vals)
                free(vals[i]);
            if (keys)
                free(keys[i]);
        }
        free(vals);
        free(keys);
        free(e);
    }
    return st;
}

/* ---- load ------------------------------------------------------------------------------ */

/* Whether method it can load the adapter whose adapter_config.json is cfg
 * (and vpeft_config.json own, or NULL): one vpeft saved names its plugin
 * (in own; in cfg when an older vpeft saved it); one HF PEFT saved has
 * the method's peft_type. The tensors are checked by name and shape. */
static vp_status check_saved_by(const vp_config *cfg, const vp_config *own, const vp_peft_item *it)
{
    const vp_config *src = own ? own
                               : vp_cfg_type_of(cfg, "vpeft_plugin") != VP_CFG_ABSENT ? cfg : NULL;
    const char *v = NULL;
    if (src) {
        vp_status st = vp_cfg_string(src, "vpeft_plugin", NULL, &v);
        if (!st && (!v || strcmp(v, it->name)))
            st = vp_cfg_fail(src, "vpeft_plugin", "was saved by %s, the config's method here is "
                             "%s", v ? v : "another tool", it->name);
        return st;
    }
    const char *want = it->iface->peft_type ? it->iface->peft_type : it->name;
    vp_status st = vp_cfg_string(cfg, "peft_type", NULL, &v);
    if (!st && (!v || strcmp(v, want)))
        st = vp_cfg_fail(cfg, "peft_type", "%s%s%s is not %s's (%s)", v ? "\"" : "",
                         v ? v : "missing", v ? "\"" : "", it->name, want);
    return st;
}

/* Tensor key of f into parameter t (shapes checked), through *buf. */
static vp_status load_tensor(vp_graph *g, const vp_st *f, const char *key, vp_gt *t, float **buf)
{
    size_t n = (size_t)vp_gt_nelem(t);
    vp_status st = vp_st_check_shape(f, key, vp_gt_ndim(t), vp_gt_shape(t));
    float *nb = st ? NULL : realloc(*buf, n * sizeof **buf);
    if (!st && !nb)
        st = vp_error_set(VP_ERR_NOMEM, "out of host memory");
    if (nb)
        *buf = nb;
    if (!st)
        st = vp_st_read_f32(f, key, *buf, n);
    if (!st)
        st = vp_build_check_finite(vp_st_path(f), key, *buf, n);
    if (!st)
        st = vp_graph_write(g, t, *buf, n * sizeof **buf);
    return st;
}

vp_status vp_model_load_peft(vp_model *m, const char *dir)
{
    const vp_peft_set *s = vp_model_pefts(m);
    const vp_build *b = vp_model_build(m);
    vp_graph *g = vp_model_graph(m);
    if (!s->n)
        return vp_error_set(VP_ERR_INVALID, "%s: the model has no PEFT method to load into", dir);
    for (uint32_t k = 0; k < s->n; k++) {
        char mdir[4096], path[4200];
        method_dir(s, k, dir, mdir, sizeof mdir);
        snprintf(path, sizeof path, "%s/adapter_config.json", mdir);
        vp_config *cfg, *own = NULL;
        vp_status st = vp_cfg_load(path, &cfg);
        snprintf(path, sizeof path, "%s/" VPEFT_CONFIG, mdir);
        if (!st && access(path, F_OK) == 0 && (st = vp_cfg_load(path, &own)))
            vp_cfg_free(cfg);
        if (st)
            return st;
        st = check_saved_by(cfg, own, &s->items[k]);
        vp_cfg_free(own);
        vp_cfg_free(cfg);
        if (st)
            return st;
        snprintf(path, sizeof path, "%s/adapter_model.safetensors", mdir);
        vp_st *f;
        if ((st = vp_st_open(path, &f)))
            return st;
        size_t used = 0;
        float *buf = NULL;
        for (uint32_t i = 0; !st && i < vp_build_param_count(b); i++) {
            const vp_build_param *p = vp_build_param_at(b, i);
            if (p->owner != k + 1)
                continue;
            char key[512];
            saved_key(m, k, vp_gt_name(p->t), key, sizeof key);
            st = load_tensor(g, f, key, p->t, &buf);
            used++;
        }
        /* the base parameters trained beside the methods (modules_to_save) */
        for (size_t i = 0; !st && k == 0 && i < vp_st_count(f); i++) {
            const char *key = vp_st_get(f, i)->name;
            if (strncmp(key, KEY_PREFIX, strlen(KEY_PREFIX)))
                continue;
            const vp_build_param *p = NULL;
            for (uint32_t j = 0; j < vp_build_param_count(b) && !p; j++)
                if (vp_build_param_at(b, j)->owner == 0 &&
                    !strcmp(vp_gt_name(vp_build_param_at(b, j)->t), key + strlen(KEY_PREFIX)))
                    p = vp_build_param_at(b, j);
            if (!p)
                continue;
            st = load_tensor(g, f, key, p->t, &buf);
            used++;
        }
        free(buf);
        if (!st && vp_st_count(f) != used) {
            /* the first key this model has no parameter for */
            for (size_t i = 0; i < vp_st_count(f); i++) {
                const char *key = vp_st_get(f, i)->name;
                vp_gt *t = strncmp(key, KEY_PREFIX, strlen(KEY_PREFIX))
                               ? NULL
                               : vp_graph_find(g, key + strlen(KEY_PREFIX));
                if (!t) {
                    st = vp_error_set(VP_ERR_INVALID, "%s: tensor \"%s\" is not a parameter of "
                                      "%s in this model", path, key, s->items[k].name);
                    break;
                }
            }
        }
        vp_st_close(f);
        if (st)
            return st;
    }
    return VP_OK;
}

vp_status vp_model_load_params(vp_model *m, const char *path, uint32_t *n_loaded)
{
    const vp_build *b = vp_model_build(m);
    vp_graph *g = vp_model_graph(m);
    vp_st *f;
    vp_status st = vp_st_open(path, &f);
    if (st)
        return st;
    uint32_t n = 0;
    float *buf = NULL;
    for (uint32_t i = 0; !st && i < vp_build_param_count(b); i++) {
        vp_gt *t = vp_build_param_at(b, i)->t;
        if (!vp_st_find(f, vp_gt_name(t)))
            continue;
        size_t k = (size_t)vp_gt_nelem(t);
        st = vp_st_check_shape(f, vp_gt_name(t), vp_gt_ndim(t), vp_gt_shape(t));
        float *nb = st ? NULL : realloc(buf, k * sizeof *buf);
        if (!st && !nb)
            st = vp_error_set(VP_ERR_NOMEM, "out of host memory");
        if (nb)
            buf = nb;
        if (!st)
            st = vp_st_read_f32(f, vp_gt_name(t), buf, k);
        if (!st)
            st = vp_build_check_finite(path, vp_gt_name(t), buf, k);
        if (!st)
            st = vp_graph_write(g, t, buf, k * sizeof *buf);
        n++;
    }
    free(buf);
    vp_st_close(f);
    if (n_loaded)
        *n_loaded = n;
    return st;
}

/* ---- merge ---------------------------------------------------------------------------------- */

typedef struct merge_host {
    vp_graph *g;
    const vp_build *b;
    uint32_t owner;
    float *cache[8];
    uint32_t n_cache;
    vp_status st;
} merge_host;

static const float *merge_param(const vp_merge_io *io, const char *name, int *ndim,
                                const int64_t **shape)
{
    merge_host *h = io->host;
    for (uint32_t i = 0; i < vp_build_param_count(h->b); i++) {
        const vp_build_param *p = vp_build_param_at(h->b, i);
        if (p->owner != h->owner || strcmp(vp_gt_name(p->t), name))
            continue;
        if (h->n_cache == 8)
            return NULL;
        float *v;
        if ((h->st = read_param(h->g, p->t, &v)))
            return NULL;
        h->cache[h->n_cache++] = v;
        if (ndim)
            *ndim = vp_gt_ndim(p->t);
        if (shape)
            *shape = vp_gt_shape(p->t);
        return v;
    }
    return NULL;
}

/* A plugin built before merge() existed has a shorter table. */
static bool can_merge(const vp_peft_iface *i)
{
    return i->size >= offsetof(vp_peft_iface, merge) + sizeof i->merge && i->merge;
}

vp_status vp_model_merge(const vp_model *m, const char *out, bool unmerge)
{
    const vp_peft_set *s = vp_model_pefts(m);
    const vp_build *b = vp_model_build(m);
    vp_graph *g = vp_model_graph(m);
    for (uint32_t k = 0; k < s->n; k++)
        if (!can_merge(s->items[k].iface))
            return vp_error_set(VP_ERR_UNSUPPORTED, "%s cannot be merged into the base weights "
                                "(it is not a linear update); keep it as an adapter",
                                s->items[k].name);
    /* Every base parameter's values, then the updates folded in. */
    uint32_t np = vp_build_param_count(b), n = 0;
    vp_st_entry *e = calloc(np ? np : 1, sizeof *e);
    float **vals = calloc(np ? np : 1, sizeof *vals);
    vp_status st = e && vals ? VP_OK : vp_error_set(VP_ERR_NOMEM, "out of host memory");
    for (uint32_t i = 0; !st && i < np; i++) {
        const vp_build_param *p = vp_build_param_at(b, i);
        if (p->owner)
            continue;
        if (!(st = read_param(g, p->t, &vals[n]))) {
            e[n] = (vp_st_entry){vp_gt_name(p->t), VP_ST_F32, vp_gt_ndim(p->t), vp_gt_shape(p->t),
                                 vals[n]};
            n++;
        }
    }
    for (uint32_t i = 0; !st && i < vp_build_site_count(b); i++) {
        const vp_build_site *site = vp_build_site_at(b, i);
        if (site->kind != VP_SITE_LINEAR || !site->attached)
            continue;
        char wn[512], bn[512];
        snprintf(wn, sizeof wn, "%s.weight", site->path);
        snprintf(bn, sizeof bn, "%s.bias", site->path);
        float *w = NULL, *bias = NULL;
        for (uint32_t j = 0; j < n; j++) {
            if (!strcmp(e[j].name, wn))
                w = vals[j];
            if (!strcmp(e[j].name, bn))
                bias = vals[j];
        }
        if (!w) {
            st = vp_error_set(VP_ERR_INTERNAL, "merge: no base weight %s", wn);
            break;
        }
        for (uint32_t k = 0; !st && k < s->n; k++) {
            if (!(site->attached & (1u << k)))
                continue;
            merge_host h = {g, b, k + 1, {NULL}, 0, VP_OK};
            vp_merge_io io = {sizeof io, site->path, site->in_features, site->out_features, w,
                              bias, merge_param, &h, unmerge ? -1.0f : 1.0f};
            vp_error_clear();
            st = s->items[k].iface->merge(s->items[k].self, &io);
            if (!st && h.st)
                st = h.st;
            if (st && !vp_error_last()[0])
                vp_error_set(st, "%s: merge at %s failed", s->items[k].name, site->path);
            for (uint32_t c = 0; c < h.n_cache; c++)
                free(h.cache[c]);
        }
    }
    char names[512] = "";
    for (uint32_t k = 0; k < s->n; k++)
        snprintf(names + strlen(names), sizeof names - strlen(names), "%s%s", k ? "," : "",
                 s->items[k].name);
    vp_st_kv meta[2] = {{unmerge ? "vpeft_unmerged" : "vpeft_merged", names},
                        {"vpeft_version", VP_VERSION_STRING}};
    if (!st)
        st = vp_st_write(out, e, n, meta, 2);
    for (uint32_t i = 0; vals && i < n; i++)
        free(vals[i]);
    free(vals);
    free(e);
    return st;
}
