/*
 * Loss ops: softmax cross-entropy with class weights and an ignore index,
 * sigmoid binary cross-entropy with logits, and Mask2Former's dice loss,
 * each with its backward. PyTorch semantics; every loss is a mean (or a sum
 * over a normalizer) written to a one-element tensor that the host reads
 * back, and each backward takes the upstream gradient dloss as a
 * one-element device tensor, so a recording replays every step unchanged.
 * Reductions are deterministic: a fixed summation order, no float atomics.
 *
 *     // logits (N, C), target (N) i32, saved (N + 1, 2), loss and dloss (1)
 *     vp_op_cross_entropy(cmd, logits, target, NULL, loss, saved);
 *     vp_op_cross_entropy_backward(cmd, logits, target, NULL, saved, dloss, dlogits, false);
 *     vp_cmd_submit(cmd);
 *     vp_tensor_download(loss, &value, sizeof value);
 */
#ifndef VP_OPS_LOSS_H
#define VP_OPS_LOSS_H

#include "runtime/runtime.h"

/* Softmax cross-entropy, F.cross_entropy(logits, target, weight=weight,
 * reduction='mean'):
 *   loss = sum_i w[t_i] nll_i / sum_i w[t_i],  nll_i = logsumexp(x_i) - x_i[t_i]
 * over the rows with t_i >= 0; a negative target (PyTorch's ignore_index,
 * -100 by default) ignores the row. A target >= C cannot be reported from
 * the device, so it makes the loss NaN instead of being dropped silently; a
 * total weight of 0 (every row ignored) gives NaN, as in PyTorch.
 *   logits: (N, C) f32   target: (N) i32   weight: (C) f32, or NULL for 1
 *   loss: (1)
 *   saved: (N + 1, 2) f32, for the backward: row i is (m_i, s_i), the row's
 *     max and the sum of exp(x_i[c] - m_i) over every class but its first
 *     arg max (logsumexp = m_i + log1p(s_i)); row N is (total weight, rows
 *     counted).
 * Stable for logits of magnitude 1e4, and accurate for confident
 * predictions (losses ~1e-4) in the loss and its gradient. Two dispatches:
 * one invocation per row, then one workgroup for the weighted mean. */
vp_status vp_op_cross_entropy(vp_cmd *cmd, const vp_tensor *logits, const vp_tensor *target,
                              const vp_tensor *weight, vp_tensor *loss, vp_tensor *saved);
/* dlogits (N, C) = dloss * w[t_i] / W * (softmax(x_i) - onehot(t_i)), with
 * W the total weight from saved; 0 in ignored rows, and everywhere when W is
 * 0 (where PyTorch's forward is NaN); NaN in rows whose target is >= C.
 * dloss: (1). Overwrites dlogits, or adds to it when accumulate. */
vp_status vp_op_cross_entropy_backward(vp_cmd *cmd, const vp_tensor *logits,
                                       const vp_tensor *target, const vp_tensor *weight,
                                       const vp_tensor *saved, const vp_tensor *dloss,
                                       vp_tensor *dlogits, bool accumulate);

/* Sigmoid binary cross-entropy with logits, F.binary_cross_entropy_with_logits
 * (reduction='mean'):
 *   loss = mean_k max(x_k, 0) - x_k t_k + log1p(exp(-|x_k|))
 *   x, target: the same shape, any, f32; targets in [0, 1]   loss: (1)
 * Stable for |x| up to 1e4. One dispatch of one workgroup. */
vp_status vp_op_bce_logits(vp_cmd *cmd, const vp_tensor *x, const vp_tensor *target,
                           vp_tensor *loss);
/* dx = dloss / n * (sigmoid(x) - target); dloss: (1); dx: x's shape.
 * Overwrites dx, or adds to it when accumulate. */
vp_status vp_op_bce_logits_backward(vp_cmd *cmd, const vp_tensor *x, const vp_tensor *target,
                                    const vp_tensor *dloss, vp_tensor *dx, bool accumulate);

/* Dice loss on sigmoid masks, as Mask2Former's dice_loss:
 *   p = sigmoid(x);  per mask m: 1 - (2 sum_j p_mj t_mj + 1) / (sum_j p_mj + sum_j t_mj + 1)
 *   loss = sum over masks / normalizer
 *   x, target: (M, ...) f32, mask m is x[m] flattened (P elements)   loss: (1)
 * normalizer is Mask2Former's num_masks (the matched masks across the
 * batch), fixed at record time and > 0. Where the count changes from step
 * to step, record with normalizer 1 and fold 1 / count into dloss and into
 * the value read back. Stable for large logits. One workgroup. */
vp_status vp_op_dice(vp_cmd *cmd, const vp_tensor *x, const vp_tensor *target, vp_tensor *loss,
                     float normalizer);
/* dx (M, ...) = dloss * d loss / d x; dloss: (1). One workgroup per mask.
 * Overwrites dx, or adds to it when accumulate. */
vp_status vp_op_dice_backward(vp_cmd *cmd, const vp_tensor *x, const vp_tensor *target,
                              const vp_tensor *dloss, vp_tensor *dx, float normalizer,
                              bool accumulate);

/* Local size of the one-workgroup reductions (loss_*.comp, optim_sqnorm):
 * a power of two up to 1024 on GPUs (more loads in flight on the one
 * compute unit that runs them), 256 on CPU devices, within the device's
 * limits and with 16 bytes of shared memory per invocation. */
uint32_t vp_loss_reduce_local(const vp_device_info *d);

#endif
