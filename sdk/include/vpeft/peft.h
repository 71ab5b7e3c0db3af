/*
 * vpeft/peft.h - the interface of a PEFT method ("vpeft.peft/1").
 *
 *     static vp_status attach(void *self, vp_build *b, const vp_site *site, vp_gt *x,
 *                             vp_gt **y, bool *attached)
 *     {
 *         ia3 *m = self;
 *         if (site->kind != VP_SITE_LINEAR || !H->selector_match(m->sel, site->path))
 *             return VP_OK;                            // not ours: y unchanged
 *         vp_gt *s = H->param(b, <site->path>.ia3_l, 1, &site->out_features, &ones, true);
 *         *y = H->mul(H->graph(b), *y, s);
 *         *attached = true;
 *         return VP_OK;
 *     }
 *
 * One instance per entry of the config's "peft" list: create() gets that
 * entry (its "plugin" key included) and must reject what it does not
 * understand with a message naming the field. While the backbone and the
 * head are built, the host calls attach() at every site, for every
 * instance in config order, each seeing the previous one's output. An
 * instance that attaches nowhere is an error ("selects no site").
 */
#ifndef VPEFT_PEFT_H
#define VPEFT_PEFT_H

#include <vpeft/config.h>
#include <vpeft/site.h>
#include <vpeft/tensor.h>

#ifdef __cplusplus
extern "C" {
#endif

#define VP_PEFT_IFACE_ID "vpeft.peft/1"

typedef struct vp_build vp_build; /* the model being built (opaque, vpeft/host.h) */

/* What merge() gets: one linear site's base weights, in host memory. */
typedef struct vp_merge_io {
    uint32_t size;            /* sizeof(vp_merge_io) as the host made it */
    const char *path;         /* the site's path */
    int64_t in_features, out_features;
    float *weight;            /* (out, in), row-major: add the update in place */
    float *bias;              /* (out), or NULL when the layer has none */
    /* The current values of a parameter of this method, by the name it was
     * registered under (for LoRA: <path>.lora_A.weight), and its shape;
     * NULL when there is none. Valid during the call. */
    const float *(*param)(const struct vp_merge_io *io, const char *name, int *ndim,
                          const int64_t **shape);
    void *host;               /* the host's, for param() */
    float sign;               /* +1: fold the update in; -1: take it out again (unmerge) */
} vp_merge_io;

typedef struct vp_peft_iface {
    uint32_t size;          /* sizeof(vp_peft_iface) as the plugin compiled it */
    /* Hugging Face PEFT's peft_type for adapter_config.json ("LORA", "IA3"),
     * or a name of the method's own for one HF PEFT lacks
     * ("BOTTLENECK_ADAPTER"); NULL: the plugin's name is written. */
    const char *peft_type;
    /* Parse and check cfg; *self is the plugin's, passed back to every call. */
    vp_status (*create)(const vp_config *cfg, void **self);
    /* Release self; NULL is a no-op. Called after the models built with it. */
    void (*destroy)(void *self);
    /* At a site: LINEAR sites give x (the layer's input) and *y (its output
     * so far); output sites give *y and, where the model built them with
     * the host's site_output_in (ABI 1.1: vpeft's own backbones and heads
     * do), x = the sub-layer's input, of y's shape; else x = NULL. Replace *y with the
     * adapted tensor (same shape) and set *attached, or leave both. New
     * parameters go through the host's param(), named under site->path. */
    vp_status (*attach)(void *self, vp_build *b, const vp_site *site, vp_gt *x, vp_gt **y,
                        bool *attached);
    /* Fold the method into the base weights at a linear site it attached
     * to (vpeft merge): add io->sign times its update to io->weight (out,
     * in) and io->bias (out, may be NULL), from the values of its own
     * parameters (io->param); sign -1 unmerges. NULL: the method cannot be
     * merged (a nonlinear adapter). */
    vp_status (*merge)(void *self, const vp_merge_io *io);
    /* ABI 1.1 and later append here. */
} vp_peft_iface;

#ifdef __cplusplus
}
#endif

#endif /* VPEFT_PEFT_H */
