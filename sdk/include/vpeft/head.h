/*
 * vpeft/head.h - the interface of a task head ("vpeft.head/1"): features
 * in, predictions and (when training) a scalar loss out.
 *
 *     static vp_status build(void *self, vp_build *b, const vp_features *f, bool train,
 *                            vp_head_out *out)
 *     {
 *         vp_graph *g = H->graph(b);
 *         vp_gt *logits = H->site_linear(b, "head.classifier", pooled, n_classes, true, NULL, NULL);
 *         out->outputs[0] = logits; out->names[0] = "logits"; out->n_outputs = 1;
 *         if (train) {
 *             vp_gt *t = H->input_i32(g, "target.labels", 1, (int64_t[]){batch});
 *             out->loss = H->cross_entropy(g, logits, t, NULL);
 *         }
 *         return VP_OK;
 *     }
 *
 * Parameters are named under "head.". Targets are graph inputs the head
 * creates, named "target.*"; the host fills them from the batch by name.
 * vpeft's trainer fills "target.labels" (B, T) int32 (class ids, -1 for an
 * empty slot), "target.masks" (B, T, Hm * Wm) at the finest feature map,
 * and, when the head has it, "target.instances" (1): the instances to
 * normalize the loss by, in data-parallel training the global batch's
 * divided by the ranks, so that the ranks' mean gradient is the global
 * batch's (an input never written reads 0).
 */
#ifndef VPEFT_HEAD_H
#define VPEFT_HEAD_H

#include <vpeft/backbone.h>
#include <vpeft/config.h>
#include <vpeft/tensor.h>

#ifdef __cplusplus
extern "C" {
#endif

#define VP_HEAD_IFACE_ID "vpeft.head/1"
#define VP_HEAD_MAX_OUTPUTS 8

typedef struct vp_head_out {
    uint32_t size;                          /* sizeof(vp_head_out) as the host made it */
    vp_gt *loss;                            /* (1), when training; else NULL */
    uint32_t n_outputs;
    vp_gt *outputs[VP_HEAD_MAX_OUTPUTS];    /* kept readable after a run */
    const char *names[VP_HEAD_MAX_OUTPUTS]; /* static strings */
} vp_head_out;

typedef struct vp_head_iface {
    uint32_t size;
    /* Parse and check the config's "head" object. */
    vp_status (*create)(const vp_config *cfg, void **self);
    void (*destroy)(void *self);
    vp_status (*build)(void *self, vp_build *b, const vp_features *f, bool train,
                       vp_head_out *out);
    /* ABI 1.1 and later append here. */
} vp_head_iface;

#ifdef __cplusplus
}
#endif

#endif /* VPEFT_HEAD_H */
