/*
 * The instance mask score kernel (mask_score.comp) as a graph op, shared by
 * the mask2former and maskdino heads' instance inference.
 */
#include <math.h>

#include "m2f.h"
#include "mask_score.spv.h" /* vp_spv_mask_score, made by vpeft-plugin.mk */

#define H m2f_H

enum { MS_WG = 128, MS_MAX_GROUPS = 65535 };

/* The mask score kernel's op in double, for the reference executor. */
static vp_status mask_score_reference(void *user, const vp_custom_ref_io *io)
{
    (void)user;
    int64_t rows = io->in_shape[0][0], cols = io->in_shape[0][1];
    for (int64_t r = 0; r < rows; r++) {
        double s = 0, n = 0;
        for (int64_t i = 0; i < cols; i++) {
            double v = io->in[0][r * cols + i];
            if (v > 0) {
                s += 1 / (1 + exp(-v));
                n += 1;
            }
        }
        io->out[2 * r] = s;
        io->out[2 * r + 1] = n;
    }
    return VP_OK;
}

/* x (rows, cols) mask logits -> (rows, 2): the sum of sigmoid(x) where x >
 * 0, and how many x > 0 (mask_score.comp). */
vp_gt *m2f_mask_sums(vp_graph *g, vp_gt *x)
{
    vp_kernel_desc d = {
        .size = sizeof d,
        .name = "mask2former.mask_score",
        .spirv = vp_spv_mask_score,
        .spirv_bytes = sizeof vp_spv_mask_score,
        .n_bindings = 2,
        .push_size = 2 * sizeof(uint32_t),
        .local_size = {MS_WG, 1, 1},
    };
    vp_custom_kernel *k = NULL;
    if (!x || H->kernel(g, &d, &k) || !k)
        return NULL; /* the graph holds the error */
    const int64_t *s = H->shape(x);
    uint32_t push[2] = {(uint32_t)s[0], (uint32_t)s[1]};
    int64_t groups = s[0] < MS_MAX_GROUPS ? s[0] : MS_MAX_GROUPS;
    vp_custom_call c = {
        .size = sizeof c,
        .kernel = k,
        .n_in = 1,
        .in = (vp_gt *[]){x},
        .out_ndim = 2,
        .out_shape = (int64_t[]){s[0], 2},
        .push = push,
        .push_size = sizeof push,
        .groups = {(uint32_t)(groups > 0 ? groups : 1), 1, 1},
        .reference = mask_score_reference,
    };
    return H->custom(g, &c);
}
