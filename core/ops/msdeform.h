/*
 * Multi-scale deformable attention core (Deformable DETR, Mask2Former's
 * pixel decoder), forward and backward: for each query and head, a weighted
 * sum of bilinear samples of the value maps of every level. The same
 * semantics as ms_deform_attn_core_pytorch (grid_sample, bilinear,
 * align_corners=False, zero padding); CPU reference in core/ref/msdeform.h.
 *
 *   value (B, S, H, Dh)       S = sum over levels of H_l * W_l
 *   loc   (B, Q, H, L*P*2)    (x, y) pairs, normalized to [0, 1]: pixel
 *                             (x * W_l - 0.5, y * H_l - 0.5); corners outside
 *                             the map contribute 0. PyTorch's
 *                             (B, Q, H, L, P, 2), flattened: vpeft tensors
 *                             have at most 4 dimensions.
 *   attn  (B, Q, H, L*P)      PyTorch's (B, Q, H, L, P)
 *   out   (B, Q, H*Dh)
 *
 * The levels are fixed per graph and passed as host data at record time
 * (they travel in push constants): 1 to VP_MSDEFORM_MAX_LEVELS levels, each
 * H_l, W_l >= 1 and positions start[l] .. start[l] + H_l*W_l - 1 of S.
 *
 *     vp_msdeform_levels lv = {3, {{32, 32}, {16, 16}, {8, 8}}, {0, 1024, 1280}};
 *     vp_op_msdeform(cmd, value, &lv, loc, attn, out);
 *     vp_op_msdeform_backward(cmd, value, &lv, loc, attn, grad_out,
 *                             grad_value, false, grad_loc, false, grad_attn, false);
 */
#ifndef VP_OPS_MSDEFORM_H
#define VP_OPS_MSDEFORM_H

#include "runtime/runtime.h"

/* vp_msdeform_levels and VP_MSDEFORM_MAX_LEVELS come from <vpeft/tensor.h>. */

/* out = msdeform(value, loc, attn); out must not overlap the inputs. */
vp_status vp_op_msdeform(vp_cmd *cmd, const vp_tensor *value, const vp_msdeform_levels *levels,
                         const vp_tensor *loc, const vp_tensor *attn, vp_tensor *out);

/* How the value gradient, a scatter, is summed. */
typedef enum vp_msdeform_scatter {
    VP_MSDEFORM_AUTO = 0,   /* ATOMIC where the device has float atomic add, else GATHER */
    VP_MSDEFORM_ATOMIC = 1, /* float atomic adds from each sample (fast; order, and so the
                               last bits, vary between runs) */
    VP_MSDEFORM_GATHER = 2  /* no atomics: each workgroup owns a tile of value positions
                               and adds the samples of its level in a fixed order
                               (deterministic, the same bits every run) */
} vp_msdeform_scatter;

typedef struct vp_msdeform_cfg {
    vp_msdeform_scatter scatter;
    /* GATHER: value positions per workgroup; 0 picks the device's default
     * (a whole level on CPUs, 64 on GPUs; shaders/msdeform_bwd_value.comp
     * says why). Any value gives the same result. */
    uint32_t gather_tile;
} vp_msdeform_cfg;

/* Gradients of sum(out * grad_out): grad_value has value's shape, grad_loc
 * loc's, grad_attn attn's, grad_out out's. Each acc_* false overwrites that
 * gradient, true adds to what it holds. No output may overlap an input or
 * another output. */
vp_status vp_op_msdeform_backward(vp_cmd *cmd, const vp_tensor *value,
                                  const vp_msdeform_levels *levels, const vp_tensor *loc,
                                  const vp_tensor *attn, const vp_tensor *grad_out,
                                  vp_tensor *grad_value, bool acc_value, vp_tensor *grad_loc,
                                  bool acc_loc, vp_tensor *grad_attn, bool acc_attn);
/* The same with an explicit scatter (cfg NULL: AUTO); ATOMIC on a device
 * without float atomic add is VP_ERR_UNSUPPORTED. */
vp_status vp_op_msdeform_backward_ex(vp_cmd *cmd, const vp_tensor *value,
                                     const vp_msdeform_levels *levels, const vp_tensor *loc,
                                     const vp_tensor *attn, const vp_tensor *grad_out,
                                     vp_tensor *grad_value, bool acc_value, vp_tensor *grad_loc,
                                     bool acc_loc, vp_tensor *grad_attn, bool acc_attn,
                                     const vp_msdeform_cfg *cfg);

#endif
