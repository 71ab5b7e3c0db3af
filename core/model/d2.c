/*
 * detectron2 checkpoints (model.h): "model": {"detectron2": DIR} names a
 * directory holding config.json, whose "MODEL" object (or "cfg_MODEL", as
 * a dump of a run's cfg names it) is detectron2's resolved cfg.MODEL, and
 * model.safetensors, the model's state_dict under detectron2's names
 * (backbone.*, sem_seg_head.*, ...): what Mask DINO's and Mask2Former's
 * repositories train, with the checkpoint converted from its .pth.
 *
 * As model.hf (hf.c, which holds what both share): the run config is
 * expanded in the model's own copy into the backbone and head entries
 * cfg.MODEL calls for, {"plugin": ..., "detectron2": DIR}; the plugins read
 * config.json themselves, and the weights load strictly. Here only the
 * choice of plugins: META_ARCHITECTURE picks the head, BACKBONE.NAME the
 * backbone. Every failure is one line naming the file and the key,
 * VP_ERR_CONFIG as model.hf's.
 */
#include <stdio.h>
#include <string.h>

#include "model/model.h"
#include "util/error.h"

/* The meta-architectures and backbones "detectron2" builds, and their
 * plugins. */
static const struct {
    const char *arch, *head, *what;
} d2_heads[] = {
    {"MaskDINO", "maskdino", "Mask DINO"},
    {"MaskFormer", "mask2former", "Mask2Former"},
};
static const struct {
    const char *name, *plugin;
} d2_backbones[] = {
    {"D2SwinTransformer", "swin"},
};
#define N_HEADS (sizeof d2_heads / sizeof d2_heads[0])
#define N_BACKBONES (sizeof d2_backbones / sizeof d2_backbones[0])

/* cfg.MODEL of a detectron2 config.json: "MODEL", or "cfg_MODEL". */
static vp_status d2_model(const vp_config *root, const vp_config **model)
{
    bool a = vp_cfg_type_of(root, "MODEL") != VP_CFG_ABSENT,
         b = vp_cfg_type_of(root, "cfg_MODEL") != VP_CFG_ABSENT;
    const char *key = a ? "MODEL" : "cfg_MODEL";
    if (a && b)
        return vp_cfg_fail(root, "cfg_MODEL", "not with \"MODEL\": the file must hold "
                           "detectron2's cfg.MODEL once");
    if (!a && !b)
        return vp_cfg_fail(root, "MODEL", "missing: a detectron2 config.json holds the resolved "
                           "cfg.MODEL as \"MODEL\" (or \"cfg_MODEL\")");
    if (vp_cfg_type_of(root, key) != VP_CFG_OBJECT)
        return vp_cfg_fail(root, key, "expected an object (detectron2's cfg.MODEL)");
    *model = vp_cfg_get(root, key);
    return VP_OK;
}

/* name: a string member of c, present (else an error naming it). */
static vp_status d2_name(const vp_config *c, const char *key, const char *missing,
                         const char **name)
{
    vp_status st = vp_cfg_string(c, key, NULL, name);
    if (!st && !*name)
        st = vp_cfg_fail(c, key, "missing: %s", missing);
    return st;
}

/* META_ARCHITECTURE and BACKBONE.NAME of DIR/config.json: the plugins. */
static vp_status d2_read(const vp_config *model, const char *dir, vp_ckpt_plugins *out)
{
    char file[4200];
    vp_status st = vp_ckpt_config_file(model, "detectron2", dir, "detectron2", file, sizeof file);
    if (st)
        return st;
    vp_config *root;
    if ((st = vp_cfg_load(file, &root)))
        return vp_error_wrap(st, "%s: model.detectron2", vp_cfg_file_name(model));
    char heads[256] = "", backbones[128] = "";
    size_t k = 0;
    for (size_t i = 0; i < N_HEADS && k < sizeof heads; i++)
        k += (size_t)snprintf(heads + k, sizeof heads - k, "%s\"%s\" (%s)",
                              i ? (i + 1 < N_HEADS ? ", " : " and ") : "", d2_heads[i].arch,
                              d2_heads[i].what);
    k = 0;
    for (size_t i = 0; i < N_BACKBONES && k < sizeof backbones; i++)
        k += (size_t)snprintf(backbones + k, sizeof backbones - k, "%s\"%s\"",
                              i ? (i + 1 < N_BACKBONES ? ", " : " and ") : "",
                              d2_backbones[i].name);
    const vp_config *m = NULL, *bb = NULL;
    const char *arch = NULL, *name = NULL;
    size_t h = N_HEADS, b = N_BACKBONES;
    char what[300];
    snprintf(what, sizeof what, "vpeft builds %s models", heads);
    st = d2_model(root, &m);
    if (!st)
        st = d2_name(m, "META_ARCHITECTURE", what, &arch);
    for (size_t i = 0; !st && i < N_HEADS; i++)
        if (!strcmp(arch, d2_heads[i].arch))
            h = i;
    if (!st && h == N_HEADS)
        st = vp_cfg_fail(m, "META_ARCHITECTURE", "\"%s\" is not supported: %s", arch, what);
    snprintf(what, sizeof what, "vpeft builds the %s backbone", backbones);
    if (!st && vp_cfg_type_of(m, "BACKBONE") != VP_CFG_OBJECT)
        st = vp_cfg_fail(m, "BACKBONE", "missing: %s", what);
    if (!st) {
        bb = vp_cfg_get(m, "BACKBONE");
        st = d2_name(bb, "NAME", what, &name);
    }
    for (size_t i = 0; !st && i < N_BACKBONES; i++)
        if (!strcmp(name, d2_backbones[i].name))
            b = i;
    if (!st && b == N_BACKBONES)
        st = vp_cfg_fail(bb, "NAME", "\"%s\" is not supported: %s", name, what);
    if (!st)
        *out = (vp_ckpt_plugins){d2_backbones[b].plugin, d2_heads[h].head, NULL};
    vp_cfg_free(root);
    return st;
}

vp_status vp_model_d2_expand(vp_config *root)
{
    return vp_ckpt_expand(root, "detectron2", d2_read);
}

vp_status vp_model_load_d2(vp_model *m, const char *dir)
{
    return vp_ckpt_load(m, dir, "detectron2");
}
