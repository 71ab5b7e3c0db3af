/*
 * vpeft/site.h - the places in a model where PEFT methods attach.
 *
 * Backbones and heads build their layers through the host's site calls, and
 * each call is a site with a hierarchical path:
 *
 *     // a linear layer: registers <path>.weight (out, in) and <path>.bias
 *     y = H->site_linear(b, "backbone.blocks.3.attn.qkv", x, 3 * d, true, NULL, NULL);
 *     // a sub-layer output, before its residual add
 *     y = H->site_output(b, "backbone.blocks.3.attn", VP_SITE_ATTN_OUT, y);
 *     // a deformable attention module: its projections are the linear sites
 *     // <path>.sampling_offsets, .attention_weights, .value_proj, .output_proj
 *     H->site_module(b, "head.pixel_decoder.layers.0.self_attn", VP_SITE_DEFORM);
 *
 * At each site the host calls every configured PEFT method's attach() in
 * config order (vpeft/peft.h); a method picks its sites with a selector
 * built from its config (globs or a regex, as HF PEFT's target_modules):
 *
 *     vp_selector *sel;  H->selector_create(cfg, "target_modules", NULL, 0, &sel);
 *     if (site->kind == VP_SITE_LINEAR && H->selector_match(sel, site->path)) ...
 */
#ifndef VPEFT_SITE_H
#define VPEFT_SITE_H

#include <vpeft/tensor.h>

#ifdef __cplusplus
extern "C" {
#endif

typedef enum vp_site_kind {
    VP_SITE_LINEAR = 1,   /* a linear layer: x (..., in) -> y (..., out) */
    VP_SITE_ATTN_OUT = 2, /* an attention sub-layer's output (..., d), before the residual */
    VP_SITE_FFN_OUT = 3,  /* an FFN sub-layer's output (..., d), before the residual */
    VP_SITE_DEFORM = 4    /* a multi-scale deformable attention module (a site_module) */
} vp_site_kind;

/* What a PEFT method sees at a site. Owned by the host, valid during the
 * attach() call; copy the strings to keep them. */
typedef struct vp_site {
    uint32_t size;           /* sizeof(vp_site) as the host built it */
    uint32_t kind;           /* vp_site_kind */
    const char *path;        /* "backbone.blocks.3.attn.qkv" */
    const char *role;        /* the path's last component: "qkv", "sampling_offsets" */
    const char *module;      /* a linear site inside a site_module: that module's path; else NULL */
    uint32_t module_kind;    /* its vp_site_kind, or 0 */
    int64_t in_features;     /* LINEAR: the layer's; output sites: the width d */
    int64_t out_features;
    vp_gt *weight;           /* LINEAR: the base weight (out, in), frozen or not */
    vp_gt *bias;             /* LINEAR: the base bias (out), or NULL */
} vp_site;

typedef struct vp_selector vp_selector; /* compiled site patterns (opaque) */

#ifdef __cplusplus
}
#endif

#endif /* VPEFT_SITE_H */
