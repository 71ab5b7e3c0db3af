/*
 * Model assembly (model.h): plugins by config name, their instances, one
 * build through the host table, backward, compile, parameter fill.
 *
 * Every failure is one line that says where in the config it comes from
 * ("run.json: peft[1]: lorax: cannot find vpeft-lorax.so in ..."), and
 * undoes everything: instances destroyed, plugins unloaded, no graph left.
 */
#include <fnmatch.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "model/model.h"
#include "io/safetensors.h"
#include "model/select.h"
#include "util/error.h"

struct vp_model {
    vp_config *cfg;                 /* a copy of the config: plugins keep pointers into it */
    vp_plugin *bb_plugin, *head_plugin;
    const vp_backbone_iface *bb;
    const vp_head_iface *head;
    void *bb_self, *head_self;
    vp_peft_set pefts;
    vp_build *build;
    vp_graph *g;
    vp_gt *image, *loss;
    vp_head_out out;
    vp_gt *features[VP_MAX_LEVELS];
    uint32_t n_features;
};

/* The message of a failing plugin call, prefixed with the plugin's name
 * (and what it was doing) once: plugins are asked to start their messages
 * with their name, so a message that already does is not prefixed twice. */
static vp_status plugin_error(vp_status st, const char *name, const char *what)
{
    char old[1024];
    const char *m = vp_error_last();
    size_t n = strlen(name);
    if (!strncmp(m, name, n) && m[n] == ':' && m[n + 1] == ' ')
        m += n + 2;
    snprintf(old, sizeof old, "%s", m[0] ? m : vp_status_str(st));
    return what ? vp_error_set(st, "%s: %s: %s", name, what, old)
                : vp_error_set(st, "%s: %s", name, old);
}

/* ---- PEFT sets ------------------------------------------------------------- */

void vp_peft_set_release(vp_peft_set *s)
{
    if (!s)
        return;
    for (uint32_t i = s->n; i-- > 0;) {
        if (s->items[i].self && s->items[i].iface->destroy)
            s->items[i].iface->destroy(s->items[i].self);
        vp_plugin_unload(s->items[i].plugin);
    }
    free(s->items);
    s->items = NULL;
    s->n = 0;
}

/* Load the plugin named by entry's "plugin" and create its instance. */
static vp_status load_entry(const vp_config *entry, vp_plugin_kind kind, vp_plugin **plugin,
                            const void **iface, void **self)
{
    *plugin = NULL;
    *self = NULL;
    const char *name;
    if (vp_cfg_type_of(entry, NULL) != VP_CFG_OBJECT)
        return vp_cfg_fail(entry, NULL, "expected an object with a \"plugin\" name");
    vp_status st = vp_cfg_string(entry, "plugin", NULL, &name);
    if (!st && !name)
        st = vp_cfg_fail(entry, "plugin", "missing: which %s plugin to use",
                         vp_plugin_kind_str(kind));
    if (st)
        return st;
    st = vp_plugin_load(name, kind, plugin);
    if (st)
        return vp_error_wrap(st, "%s: %s", vp_cfg_file_name(entry), vp_cfg_path(entry));
    *iface = vp_plugin_interface(*plugin);
    /* create() is the first member of every kind's interface after size. */
    vp_status (*create)(const vp_config *, void **) =
        kind == VP_PLUGIN_PEFT ? ((const vp_peft_iface *)*iface)->create
        : kind == VP_PLUGIN_BACKBONE ? ((const vp_backbone_iface *)*iface)->create
                                     : ((const vp_head_iface *)*iface)->create;
    vp_error_clear();
    st = create ? create(entry, self) : VP_OK;
    if (st) {
        st = plugin_error(st, name, NULL);
        vp_plugin_unload(*plugin);
        *plugin = NULL;
        *self = NULL;
    }
    return st;
}

/* Entry i's "name" (its adapter name: parameter names and the adapter
 * directory dir/<name>): letters, digits, '_' and '-', and no other entry's
 * name (an entry without one is named after its plugin). Entries of one
 * plugin without names stay allowed, as before names existed. */
static vp_status peft_name_check(const vp_peft_set *s, uint32_t i)
{
    const vp_config *e = s->items[i].cfg;
    const char *given;
    vp_status st = vp_cfg_string(e, "name", NULL, &given);
    if (st)
        return st;
    size_t n = given ? strlen(given) : 0;
    static const char ok[] = "abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789_-";
    if (given && (!n || n >= sizeof s->items[i].name || strspn(given, ok) != n))
        return vp_cfg_fail(e, "name", "\"%.80s\": use 1 to %zu letters, digits, '_' or '-'",
                           given, sizeof s->items[i].name - 1);
    const char *name = given ? given : s->items[i].name;
    for (uint32_t j = 0; j < i; j++) {
        const char *other = NULL;
        vp_cfg_string(s->items[j].cfg, "name", NULL, &other); /* checked at j */
        if ((given || other) && !strcmp(name, other ? other : s->items[j].name))
            return vp_cfg_fail(e, "name", "\"%s\" is already the name of peft[%u]%s; each entry "
                               "needs its own", name, j, other ? "" : " (its plugin's name)");
    }
    return VP_OK;
}

vp_status vp_peft_set_load(const vp_config *list, vp_peft_set *out)
{
    memset(out, 0, sizeof *out);
    vp_cfg_type t = vp_cfg_type_of(list, NULL);
    if (t == VP_CFG_ABSENT || t == VP_CFG_NULL)
        return VP_OK;
    if (t != VP_CFG_ARRAY)
        return vp_cfg_fail(list, NULL, "expected a list of PEFT methods");
    int n = vp_cfg_len(list);
    out->items = n > 0 ? calloc((size_t)n, sizeof *out->items) : NULL;
    if (n > 0 && !out->items)
        return vp_error_set(VP_ERR_NOMEM, "out of host memory");
    for (int i = 0; i < n; i++) {
        vp_peft_item *it = &out->items[i];
        const void *iface = NULL;
        vp_status st = load_entry(vp_cfg_at(list, i), VP_PLUGIN_PEFT, &it->plugin, &iface,
                                  &it->self);
        if (st) {
            vp_peft_set_release(out);
            return st;
        }
        it->iface = iface;
        it->cfg = vp_cfg_at(list, i);
        snprintf(it->name, sizeof it->name, "%s", vp_plugin_descriptor(it->plugin)->name);
        out->n++;
        if ((st = peft_name_check(out, (uint32_t)i))) {
            vp_peft_set_release(out);
            return st;
        }
    }
    return VP_OK;
}

vp_status vp_peft_set_attach(const vp_peft_set *s, vp_build *b)
{
    for (uint32_t i = 0; i < s->n; i++) {
        vp_status st = vp_build_add_peft(b, s->items[i].name, s->items[i].iface, s->items[i].self);
        if (st)
            return st;
    }
    return VP_OK;
}

/* ---- models ------------------------------------------------------------------- */

void vp_model_destroy(vp_model *m)
{
    if (!m)
        return;
    if (m->g)
        vp_graph_destroy(m->g);
    vp_build_destroy(m->build);
    vp_peft_set_release(&m->pefts);
    if (m->head_self && m->head->destroy)
        m->head->destroy(m->head_self);
    if (m->bb_self && m->bb->destroy)
        m->bb->destroy(m->bb_self);
    vp_plugin_unload(m->head_plugin);
    vp_plugin_unload(m->bb_plugin);
    vp_cfg_free(m->cfg);
    free(m);
}

/* The base parameters that stay trainable: train.trainable, a list of globs. */
static vp_status trainable_globs(const vp_config *root, const char ***globs, uint32_t *n)
{
    *globs = NULL;
    *n = 0;
    const vp_config *train = vp_cfg_get(root, "train");
    vp_cfg_type t = vp_cfg_type_of(train, "trainable");
    if (t == VP_CFG_ABSENT)
        return VP_OK;
    if (t != VP_CFG_ARRAY)
        return vp_cfg_fail(train, "trainable", "expected a list of parameter-name globs");
    const vp_config *list = vp_cfg_get(train, "trainable");
    int len = vp_cfg_len(list);
    *globs = calloc(len > 0 ? (size_t)len : 1, sizeof **globs);
    if (!*globs)
        return vp_error_set(VP_ERR_NOMEM, "out of host memory");
    for (int i = 0; i < len; i++) {
        vp_status st = vp_cfg_string(vp_cfg_at(list, i), NULL, NULL, &(*globs)[i]);
        if (st) {
            free(*globs);
            *globs = NULL;
            return st;
        }
    }
    *n = (uint32_t)len;
    return VP_OK;
}

/* The message of a failing plugin call, prefixed with the plugin's name. */
static vp_status plugin_failed(vp_graph *g, vp_status st, const char *who, const char *what)
{
    vp_status gs = vp_graph_status(g);
    return plugin_error(gs ? gs : st, who, what);
}

static vp_status build(vp_model *m, const vp_config *root, const vp_model_opts *o)
{
    vp_graph *g = vp_build_graph(m->build);
    const char *bb_name = vp_plugin_descriptor(m->bb_plugin)->name;
    const char *head_name = m->head_plugin ? vp_plugin_descriptor(m->head_plugin)->name : "";
    (void)root;
    int64_t chw[3] = {0, 0, 0};
    vp_error_clear();
    vp_status st = m->bb->input_size(m->bb_self, chw);
    if (st)
        return plugin_failed(g, st, bb_name, "input_size");
    if (chw[0] < 1 || chw[1] < 1 || chw[2] < 1)
        return vp_error_set(VP_ERR_INVALID, "%s: input_size gave %lldx%lldx%lld", bb_name,
                            (long long)chw[0], (long long)chw[1], (long long)chw[2]);
    m->image = vp_g_input(g, "image", 4, (int64_t[]){o->batch, chw[0], chw[1], chw[2]});

    vp_features f = {.size = sizeof f};
    vp_build_enter(m->build, bb_name, false);
    vp_error_clear();
    st = m->bb->build(m->bb_self, m->build, m->image, &f);
    if (st || vp_graph_status(g))
        return plugin_failed(g, st, bb_name, "build");
    if (f.n < 1 || f.n > VP_MAX_LEVELS)
        return vp_error_set(VP_ERR_INVALID, "%s: build gave %u feature levels (1 to %d)",
                            bb_name, f.n, VP_MAX_LEVELS);
    for (uint32_t i = 0; i < f.n; i++)
        if (!f.map[i] || vp_gt_ndim(f.map[i]) != 4 || f.stride[i] < 1)
            return vp_error_set(VP_ERR_INVALID, "%s: feature level %u is not a (B, H, W, C) map "
                                "with a stride", bb_name, i);

    for (uint32_t i = 0; i < f.n; i++)
        m->features[i] = f.map[i];
    m->n_features = f.n;
    if (o->backbone_only) {
        for (uint32_t i = 0; i < f.n; i++)
            vp_g_keep(f.map[i]); /* the backbone's result: readable */
        goto built;
    }
    m->out.size = sizeof m->out;
    vp_build_enter(m->build, head_name, false);
    vp_error_clear();
    st = m->head->build(m->head_self, m->build, &f, o->train, &m->out);
    if (st || vp_graph_status(g))
        return plugin_failed(g, st, head_name, "build");
    if (m->out.n_outputs > VP_HEAD_MAX_OUTPUTS)
        return vp_error_set(VP_ERR_INVALID, "%s: %u outputs (at most %d)", head_name,
                            m->out.n_outputs, VP_HEAD_MAX_OUTPUTS);
    for (uint32_t i = 0; i < m->out.n_outputs; i++) {
        if (!m->out.outputs[i] || !m->out.names[i])
            return vp_error_set(VP_ERR_INVALID, "%s: output %u has no tensor or name", head_name,
                                i);
        vp_g_keep(m->out.outputs[i]);
    }
    if (o->train && !m->out.loss)
        return vp_error_set(VP_ERR_INVALID, "%s: build for training gave no loss", head_name);
    vp_build_enter(m->build, "vpeft", false);
    for (uint32_t k = 0; k < m->pefts.n; k++) /* no silently smaller HF selection */
        if ((st = vp_selector_check_modules(m->pefts.items[k].cfg, m->build)))
            return st;
    if ((st = vp_build_check_pefts(m->build)))
        return st;
built:
    if (o->no_compile)
        return VP_OK;
    if (o->train) {
        m->loss = m->out.loss;
        if ((st = vp_graph_backward(g, m->loss)))
            return st;
        vp_adamw_cfg cfg = o->adamw ? *o->adamw : vp_adamw_default_cfg();
        if ((st = vp_graph_set_optimizer(g, &cfg)))
            return st;
        for (uint32_t i = 0; i < vp_build_param_count(m->build); i++) {
            vp_gt *t = vp_build_param_at(m->build, i)->t;
            float mult = 1.0f;
            for (uint32_t k = 0; k < o->n_lr_groups; k++)
                if (!fnmatch(o->lr_groups[k].glob, vp_gt_name(t), 0))
                    mult = o->lr_groups[k].mult;
            if (mult != 1.0f && vp_gt_trainable(t) && (st = vp_g_param_lr_scale(t, mult)))
                return st;
        }
        if (o->bucket_bytes && (st = vp_graph_set_buckets(g, o->bucket_bytes)))
            return st;
    }
    if ((st = vp_graph_compile(g)))
        return st;
    return vp_build_init_params(m->build);
}

/* What vp_model_load_params checks, without a compiled graph to load into
 * (vpeft info): the file's header, and the shape of every parameter it
 * holds. n: how many it holds. */
static vp_status check_params(const vp_model *m, const char *path, uint32_t *n)
{
    vp_st *f = NULL;
    vp_status st = vp_st_open(path, &f);
    *n = 0;
    for (uint32_t i = 0; !st && i < vp_build_param_count(m->build); i++) {
        vp_gt *t = vp_build_param_at(m->build, i)->t;
        if (!vp_st_find(f, vp_gt_name(t)))
            continue;
        st = vp_st_check_shape(f, vp_gt_name(t), vp_gt_ndim(t), vp_gt_shape(t));
        ++*n;
    }
    vp_st_close(f);
    return st;
}

/* The keys a run config's top level and its "model" object may hold: a
 * typo ("pfet", "wieghts", --set nosuch.key=1) must fail, not train
 * without it. The options of model.hf and model.detectron2 are checked by
 * vp_model_hf_expand and vp_model_d2_expand. */
static const char *const root_keys[] = {"model", "peft", "train"};
static const char *const model_keys[] = {"backbone", "head", "weights", "hf", "detectron2"};
static const char *const hf_only_keys[] = {"image", "classes", "max_targets", "top_k",
                                           "target_stride", "train_num_points",
                                           "score_threshold", "pretrained"};

vp_status vp_model_check_keys(const vp_config *root)
{
    vp_status st = vp_cfg_check_keys(root, root_keys, sizeof root_keys / sizeof *root_keys);
    const vp_config *model = vp_cfg_get(root, "model");
    bool hf = vp_cfg_type_of(model, "hf") != VP_CFG_ABSENT,
         d2 = vp_cfg_type_of(model, "detectron2") != VP_CFG_ABSENT;
    if (!st && hf && d2)
        return vp_cfg_fail(model, "detectron2", "not with model.hf: give one checkpoint "
                           "directory (\"hf\": Hugging Face's, \"detectron2\": detectron2's)");
    if (st || !model || hf || d2)
        return st;
    for (uint32_t i = 0; i < sizeof hf_only_keys / sizeof *hf_only_keys; i++)
        if (vp_cfg_type_of(model, hf_only_keys[i]) != VP_CFG_ABSENT)
            return vp_cfg_fail(model, hf_only_keys[i], "an option of model.hf, which is not "
                               "set (without it, the backbone's or head's own fields say this)");
    return vp_cfg_check_keys(model, model_keys, sizeof model_keys / sizeof *model_keys);
}

vp_status vp_model_create(vp_device *dev, const vp_config *root, const vp_model_opts *o,
                          vp_model **out)
{
    *out = NULL;
    if (o->batch < 1)
        return vp_error_set(VP_ERR_INVALID, "model: batch %lld must be at least 1",
                            (long long)o->batch);
    VP_ASSERT(!(o->backbone_only && o->train));
    vp_model *m = calloc(1, sizeof *m);
    if (!m)
        return vp_error_set(VP_ERR_NOMEM, "out of host memory");
    /* The model's own copy: plugin instances may keep the strings of their
     * config entries (the ABI lets them) for as long as the model lives,
     * whatever the caller does with root. Same file name: same messages and
     * relative paths. */
    char *text = vp_cfg_to_json(root);
    vp_status cst = text ? vp_cfg_parse(text, strlen(text), vp_cfg_file_name(root), &m->cfg)
                         : vp_error_set(VP_ERR_NOMEM, "out of host memory");
    free(text);
    if (cst) {
        free(m);
        return cst;
    }
    root = m->cfg;
    if ((cst = vp_model_check_keys(root)) || (cst = vp_model_hf_expand(m->cfg)) ||
        (cst = vp_model_d2_expand(m->cfg))) {
        vp_cfg_free(m->cfg);
        free(m);
        return cst;
    }
    const vp_config *model = vp_cfg_get(root, "model");
    const void *iface = NULL;
    vp_status st = model ? VP_OK : vp_cfg_fail(root, "model", "missing: the backbone and head");
    if (!st) {
        const vp_config *bb = vp_cfg_get(model, "backbone");
        st = bb ? load_entry(bb, VP_PLUGIN_BACKBONE, &m->bb_plugin, &iface, &m->bb_self)
                : vp_cfg_fail(model, "backbone", "missing");
        m->bb = iface;
    }
    if (!st && !o->backbone_only) {
        const vp_config *hd = vp_cfg_get(model, "head");
        st = hd ? load_entry(hd, VP_PLUGIN_HEAD, &m->head_plugin, &iface, &m->head_self)
                : vp_cfg_fail(model, "head", "missing");
        m->head = iface;
    }
    if (!st)
        st = vp_peft_set_load(vp_cfg_get(root, "peft"), &m->pefts);
    const char **globs = NULL;
    uint32_t n_globs = 0;
    int64_t seed = 0;
    if (!st)
        st = trainable_globs(root, &globs, &n_globs);
    if (!st)
        st = vp_cfg_int(vp_cfg_get(root, "train"), "seed", 0, &seed);
    if (!st) {
        vp_build_opts bo = {(uint64_t)seed, globs, n_globs, m->pefts.n > 0};
        st = vp_build_create(dev, &bo, &m->build);
    }
    free(globs);
    if (!st) {
        vp_graph_set_training(vp_build_graph(m->build), o->train);
        vp_graph_set_deterministic(vp_build_graph(m->build), o->deterministic);
    }
    if (!st)
        st = vp_peft_set_attach(&m->pefts, m->build);
    if (!st)
        st = build(m, root, o);
    if (st) {
        vp_model_destroy(m);
        return st;
    }
    m->g = vp_build_take_graph(m->build);
    const char *weights = NULL, *hf = NULL, *d2 = NULL;
    bool pretrained = true; /* model.hf's "pretrained": false: config.json only */
    if (!o->no_compile)
        st = vp_cfg_file(model, "hf", &hf);
    if (!st && !o->no_compile)
        st = vp_cfg_file(model, "detectron2", &d2);
    if (!st && (hf || d2))
        st = vp_cfg_bool(model, "pretrained", true, &pretrained);
    if (!st && (hf || d2) && pretrained)
        st = hf ? vp_model_load_hf(m, hf) : vp_model_load_d2(m, d2);
    if (!st)
        st = vp_cfg_file(model, "weights", &weights);
    if (!st && weights) {
        uint32_t n = 0;
        st = o->no_compile ? check_params(m, weights, &n) : vp_model_load_params(m, weights, &n);
        if (!st && !n)
            st = vp_cfg_fail(model, "weights", "%s holds none of the model's parameters", weights);
        else if (st)
            st = vp_error_wrap(st, "%s: model.weights", vp_cfg_file_name(root));
    }
    if (st) {
        vp_model_destroy(m);
        return st;
    }
    *out = m;
    return VP_OK;
}

vp_graph *vp_model_graph(const vp_model *m) { return m->g; }
const vp_build *vp_model_build(const vp_model *m) { return m->build; }
vp_gt *vp_model_image(const vp_model *m) { return m->image; }
vp_gt *vp_model_loss(const vp_model *m) { return m->loss; }

uint32_t vp_model_features(const vp_model *m, vp_gt **maps)
{
    for (uint32_t i = 0; i < m->n_features; i++)
        maps[i] = m->features[i];
    return m->n_features;
}

const char *vp_model_plugin_name(const vp_model *m, vp_plugin_kind kind)
{
    const vp_plugin *p = kind == VP_PLUGIN_BACKBONE ? m->bb_plugin
                         : kind == VP_PLUGIN_HEAD   ? m->head_plugin
                                                    : NULL;
    return p ? vp_plugin_descriptor(p)->name : NULL;
}

const vp_peft_set *vp_model_pefts(const vp_model *m) { return &m->pefts; }

vp_gt *vp_model_output(const vp_model *m, const char *name)
{
    for (uint32_t i = 0; i < m->out.n_outputs; i++)
        if (!strcmp(m->out.names[i], name))
            return m->out.outputs[i];
    return vp_build_output_find(m->build, name);
}

const vp_head_out *vp_model_head_out(const vp_model *m) { return &m->out; }
