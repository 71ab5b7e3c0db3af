/*
 * vpeft/backbone.h - the interface of a backbone ("vpeft.backbone/1"):
 * images in, a feature pyramid out.
 *
 *     static vp_status build(void *self, vp_build *b, vp_gt *image, vp_features *out)
 *     {
 *         vp_graph *g = H->graph(b);                 // image: (B, 3, H, W)
 *         vp_gt *x = ...patch embedding, blocks through H->site_linear...;
 *         out->n = 1; out->map[0] = x; out->stride[0] = 16;   // (B, H/16, W/16, C)
 *         return VP_OK;
 *     }
 *
 * Parameters are named under "backbone."; linear layers and sub-layer
 * outputs go through the host's site calls so that PEFT methods can attach.
 */
#ifndef VPEFT_BACKBONE_H
#define VPEFT_BACKBONE_H

#include <vpeft/config.h>
#include <vpeft/tensor.h>

#ifdef __cplusplus
extern "C" {
#endif

#define VP_BACKBONE_IFACE_ID "vpeft.backbone/1"
#define VP_MAX_LEVELS 6

typedef struct vp_build vp_build;

/* Multi-scale features, finest first, channels-last. */
typedef struct vp_features {
    uint32_t size;            /* sizeof(vp_features) as the host made it */
    uint32_t n;               /* levels, 1 .. VP_MAX_LEVELS */
    vp_gt *map[VP_MAX_LEVELS];/* (B, H_l, W_l, C) */
    int32_t stride[VP_MAX_LEVELS]; /* image pixels per map pixel */
} vp_features;

typedef struct vp_backbone_iface {
    uint32_t size;
    /* Parse and check the config's "backbone" object. */
    vp_status (*create)(const vp_config *cfg, void **self);
    void (*destroy)(void *self);
    /* The image size the model is built for: channels, height, width. */
    vp_status (*input_size)(void *self, int64_t chw[3]);
    /* Build the forward pass on image (B, C, H, W) into out (out->size is
     * set by the host; fill n, map, stride). */
    vp_status (*build)(void *self, vp_build *b, vp_gt *image, vp_features *out);
    /* ABI 1.1 and later append here. */
} vp_backbone_iface;

#ifdef __cplusplus
}
#endif

#endif /* VPEFT_BACKBONE_H */
