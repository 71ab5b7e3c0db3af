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
 * over the initialization; parameters it lacks keep theirs), peft (a list
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
 * model.hf, model's (backbone, head, weights, hf): an unknown one is
 * VP_ERR_CONFIG naming it, with a did-you-mean. vp_model_create calls it. */
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
/* An output by name: the head's ("logits"), or one a plugin named with the
 * host's output() ("backbone.last_hidden_state"); NULL when none. */
vp_gt *vp_model_output(const vp_model *m, const char *name);
/* The head's outputs as its build() gave them (names and tensors, kept
 * readable after a run; the loss when training), owned by the model; none
 * (n_outputs 0) for a backbone-only model. The plugins' named outputs are
 * vp_build_output_count/at of vp_model_build. */
const vp_head_out *vp_model_head_out(const vp_model *m);

#endif
