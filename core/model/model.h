/*
 * Model assembly from a run config: the backbone, head and PEFT plugins it
 * names, loaded, created with their parts of the config, and built into
 * one compiled graph with its parameters filled.
 *
 *     vp_model *m;
 *     vp_model_create(dev, cfg, &(vp_model_opts){.batch = 2, .train = true}, &m);
 *     vp_graph *g = vp_model_graph(m);
 *     vp_graph_write(g, vp_model_image(m), pixels, bytes);  ... targets by name ...
 *     vp_graph_run(g);  vp_graph_step(g, lr, step);
 *     vp_model_destroy(m);
 *
 * The config keys read here: model.backbone and model.head (objects, each
 * with "plugin"), model.weights (optional: a safetensors file of model
 * parameter names, e.g. a trained base model's model.safetensors, loaded
 * over the initialization; parameters it lacks keep theirs), model.hf and
 * model.detectron2 (checkpoint directories: below), peft (a list
 * of objects, each with "plugin"), train.trainable (globs over base
 * parameter names) and train.seed.
 */
#ifndef VP_MODEL_MODEL_H
#define VP_MODEL_MODEL_H

#include <vpeft/backbone.h>
#include <vpeft/head.h>

#include "config/config.h"
#include "model/build.h"
#include "plugin/loader.h"

/* The PEFT methods of a config's "peft" list, loaded and created. */
typedef struct vp_peft_item {
    char name[64];              /* the plugin's */
    vp_plugin *plugin;
    const vp_peft_iface *iface;
    void *self;
    const vp_config *cfg;       /* its entry of the config's "peft" list */
} vp_peft_item;

typedef struct vp_peft_set {
    vp_peft_item *items;
    uint32_t n;
} vp_peft_set;

/* list: the config's "peft" array (NULL or absent: none). On failure the
 * set is empty and the message names the file, entry and plugin. */
vp_status vp_peft_set_load(const vp_config *list, vp_peft_set *out);
void vp_peft_set_release(vp_peft_set *s);
/* Add every method to b, in order. */
vp_status vp_peft_set_attach(const vp_peft_set *s, vp_build *b);

/* A learning-rate multiplier for the parameters whose names match glob
 * (fnmatch); the last matching group wins. */
typedef struct vp_lr_group {
    const char *glob;
    float mult;
} vp_lr_group;

typedef struct vp_model_opts {
    int64_t batch;              /* images per run */
    bool train;                 /* build the loss, gradients and AdamW state */
    bool backbone_only;         /* no head (vpeft embed); not with train */
    bool no_compile;            /* build and check the graph only, no device memory
                                 * (vpeft info): it cannot run */
    const vp_adamw_cfg *adamw;  /* training: NULL for torch's defaults */
    const vp_lr_group *lr_groups;
    uint32_t n_lr_groups;
    bool deterministic;         /* the same bits every run (vp_graph_set_deterministic) */
    uint64_t bucket_bytes;      /* training: > 0, gradient buckets of this size
                                 * (vp_graph_set_buckets) */
} vp_model_opts;

typedef struct vp_model vp_model;

vp_status vp_model_create(vp_device *dev, const vp_config *root, const vp_model_opts *o,
                          vp_model **out);
void vp_model_destroy(vp_model *m);

vp_graph *vp_model_graph(const vp_model *m);
const vp_build *vp_model_build(const vp_model *m);
vp_gt *vp_model_image(const vp_model *m);      /* (batch, C, H, W) input */
vp_gt *vp_model_loss(const vp_model *m);       /* NULL unless training */
/* The backbone's feature maps (at most VP_MAX_LEVELS), finest first. */
uint32_t vp_model_features(const vp_model *m, vp_gt **maps);
/* The backbone's or head's plugin name (NULL: none). */
const char *vp_model_plugin_name(const vp_model *m, vp_plugin_kind kind);
const vp_peft_set *vp_model_pefts(const vp_model *m);
/* The PEFT methods' parameters in Hugging Face PEFT's layout, one
 * directory per method (dir itself when there is one method, else
 * dir/<plugin>, dir/<plugin>_<i> for repeats): adapter_config.json (HF
 * PEFT's fields only: peft_type, the base model, r, lora_alpha, the
 * adapted modules' full paths as target_modules, ...),
 * adapter_model.safetensors (its parameters as base_model.model.<name>)
 * and vpeft_config.json (the plugin and the config entry as written).
 * Files are replaced atomically. */
vp_status vp_model_save_peft(const vp_model *m, const vp_config *root, const char *dir);
/* Their values back from such a directory: every key and shape must be the
 * model's (the first mismatch is the error); bit-exact. */
vp_status vp_model_load_peft(vp_model *m, const char *dir);
/* Fold the PEFT methods into the base weights (unmerge: take them out of
 * weights that have them folded in) and write every base parameter (by its
 * model name) to out, atomically. A method without
 * merge() (adapters) is an error naming it. */
vp_status vp_model_merge(const vp_model *m, const char *out, bool unmerge);
/* Every parameter of the model from a safetensors file of model names
 * (what vp_model_merge writes); parameters absent from the file keep their
 * values, shapes must match. n_loaded: how many were found. */
vp_status vp_model_load_params(vp_model *m, const char *path, uint32_t *n_loaded);
/* The run config's top-level keys (model, peft, train) and, without
 * model.hf or model.detectron2, model's (backbone, head, weights, hf,
 * detectron2): an unknown one is VP_ERR_CONFIG naming it, with a
 * did-you-mean; hf and detectron2 together are refused. vp_model_create
 * calls it. */
vp_status vp_model_check_keys(const vp_config *root);
/* "model": {"hf": DIR}: the backbone and head entries DIR/config.json's
 * model_type calls for, written into root (a model's own copy; the run's
 * image, classes, max_targets, top_k and target_stride passed on). No-op
 * without model.hf. Errors name the file and key. */
vp_status vp_model_hf_expand(vp_config *root);
/* The base model's parameters from DIR/model.safetensors (or the shards of
 * DIR/model.safetensors.index.json), strictly: every parameter present with
 * its shape, every tensor a parameter or a key a plugin declared
 * (buffer_key). */
vp_status vp_model_load_hf(vp_model *m, const char *dir);
/* "model": {"detectron2": DIR} (d2.c): the backbone and head entries that
 * DIR/config.json's cfg.MODEL ("MODEL", or "cfg_MODEL") calls for
 * (META_ARCHITECTURE: "MaskDINO" -> maskdino, "MaskFormer" -> mask2former;
 * BACKBONE.NAME "D2SwinTransformer" -> swin), each {"plugin": ...,
 * "detectron2": DIR}, with the same run options as model.hf. No-op
 * without model.detectron2. Errors name the file and key. */
vp_status vp_model_d2_expand(vp_config *root);
/* DIR/model.safetensors (or its shards) loaded as vp_model_load_hf does. */
vp_status vp_model_load_d2(vp_model *m, const char *dir);

/* ---- what the checkpoint forms share (hf.c; used by d2.c) ------------------ */

/* s as a JSON string literal (for vp_cfg_set), into out; false when it
 * does not fit. */
bool vp_ckpt_json_string(const char *s, char *out, size_t n);
/* vp_cfg_set(root, "path=value"); value is JSON. */
vp_status vp_ckpt_set(vp_config *root, const char *path, const char *value);
/* 0 when path is a regular file (or a link to one); else errno's value,
 * or -1 for something that is not a regular file (vp_file_open_read: a
 * FIFO is refused without blocking). vp_ckpt_why_not(r) says which. */
int vp_ckpt_regular(const char *path);
const char *vp_ckpt_why_not(int r);
/* dir/config.json into file (n bytes), after checking that dir is a
 * directory holding it as a regular file; else VP_ERR_CONFIG at model.<key>
 * saying what (e.g. "Hugging Face") kind of checkpoint directory was
 * expected. */
vp_status vp_ckpt_config_file(const vp_config *model, const char *key, const char *dir,
                              const char *what, char *file, size_t n);
/* The plugins a checkpoint directory's config calls for (static strings);
 * names: the backbone's "names" field, or NULL for none. */
typedef struct vp_ckpt_plugins {
    const char *backbone, *head, *names;
} vp_ckpt_plugins;
/* Reads checkpoint directory dir (named by the run config's object model)
 * and says which plugins build it; errors name the file and key. */
typedef vp_status (*vp_ckpt_read_fn)(const vp_config *model, const char *dir,
                                     vp_ckpt_plugins *out);
/* "model": {key: DIR, options}: model's keys checked (key and the run
 * options image, classes, max_targets, top_k, target_stride,
 * train_num_points, score_threshold, weights, pretrained), read() asked
 * for the plugins, and model.backbone and model.head written into root as
 * {"plugin": ..., key: DIR} with the options they take. No-op without key. */
vp_status vp_ckpt_expand(vp_config *root, const char *key, vp_ckpt_read_fn read);
/* DIR's model.safetensors (or shards) into m strictly (vp_model_load_hf);
 * what names the kind of directory in the message when it has none. */
vp_status vp_ckpt_load(vp_model *m, const char *dir, const char *what);
/* An output by name: the head's ("logits"), or one a plugin named with the
 * host's output() ("backbone.last_hidden_state"); NULL when none. */
vp_gt *vp_model_output(const vp_model *m, const char *name);
/* The head's outputs as its build() gave them (names and tensors, kept
 * readable after a run; the loss when training), owned by the model; none
 * (n_outputs 0) for a backbone-only model. The plugins' named outputs are
 * vp_build_output_count/at of vp_model_build. */
const vp_head_out *vp_model_head_out(const vp_model *m);

#endif
