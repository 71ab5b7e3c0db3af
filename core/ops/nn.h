/*
 * Neural-network ops: activations, layer normalization, softmax, row and
 * whole-tensor reductions, each with its backward (see docs/ops.md).
 *
 * All tensors are f32, dense and row-major. For a row op, x of shape
 * (d0, ..., dk, C) is (rows, C) with rows = d0 * ... * dk and C its last
 * dimension; a per-row tensor (mean, rstd, sums) has shape (d0, ..., dk),
 * or (d0, ..., dk, 1) (kept dimension); when x is 1-D it is (1).
 *
 * Every gradient output comes with `accumulate`: false overwrites it (its
 * old contents are never read, NaN included), true adds into it.
 *
 * Reductions are deterministic: fixed order, no atomics, the same bits on
 * every run on a given device. Each lane of a workgroup adds its elements
 * with Kahan compensation and the lanes' sums are added with a fixed tree,
 * so sums of ~1e6 elements stay within a few ulp of the exact value.
 *
 *     vp_op_layernorm(cmd, x, g, b, 1e-6f, y, mean, rstd);
 *     ... (later, in the backward pass)
 *     vp_op_layernorm_backward(cmd, x, g, mean, rstd, dy, dx, dg, db, false);
 */
#ifndef VP_OPS_NN_H
#define VP_OPS_NN_H

#include "runtime/runtime.h"

/* ---- activations (elementwise; y may be x, dx may be dy) ---------------- */

/* Every activation by code: relu and gelu as below; sigmoid 1 / (1 + e^-x);
 * softplus log(1 + e^x) (PyTorch's with beta 1, without its threshold);
 * silu (swish) x sigmoid(x). Backward: dx (+)= f'(x) dy. */
typedef enum vp_act {
    VP_ACT_RELU = 0,
    VP_ACT_GELU = 1,
    VP_ACT_SIGMOID = 2,
    VP_ACT_SOFTPLUS = 3,
    VP_ACT_SILU = 4,
    VP_ACT_COUNT
} vp_act;
vp_status vp_op_act(vp_cmd *cmd, vp_act act, const vp_tensor *x, vp_tensor *y);
vp_status vp_op_act_backward(vp_cmd *cmd, vp_act act, const vp_tensor *x, const vp_tensor *dy,
                             vp_tensor *dx, bool accumulate);

/* y = max(x, 0).   x, y: same shape */
vp_status vp_op_relu(vp_cmd *cmd, const vp_tensor *x, vp_tensor *y);
/* dx (+)= dy where x > 0, else 0 (the gradient at x = 0 is 0, like
 * PyTorch).   x, dy, dx: same shape */
vp_status vp_op_relu_backward(vp_cmd *cmd, const vp_tensor *x, const vp_tensor *dy,
                              vp_tensor *dx, bool accumulate);

/* y = x Phi(x) = 0.5 x (1 + erf(x / sqrt 2)), the exact form (PyTorch's
 * default approximate='none'); erf to about 1 ulp of float (shaders/nn.glsl).
 *   x, y: same shape */
vp_status vp_op_gelu(vp_cmd *cmd, const vp_tensor *x, vp_tensor *y);
/* dx (+)= dy (Phi(x) + x phi(x)).   x, dy, dx: same shape */
vp_status vp_op_gelu_backward(vp_cmd *cmd, const vp_tensor *x, const vp_tensor *dy,
                              vp_tensor *dx, bool accumulate);

/* ---- layer normalization ------------------------------------------------ */

/* Over the last axis, PyTorch semantics (biased variance):
 *   mean = sum_c x / C,  rstd = 1 / sqrt(sum_c (x - mean)^2 / C + eps)
 *   y = (x - mean) rstd gamma + beta
 * x, y: (..., C)   gamma, beta: (C), either may be NULL (1 and 0)
 * mean, rstd: per row (see above), saved for the backward; both NULL when
 * no backward follows. eps finite and >= 0. Outputs must not overlap
 * inputs. The variance is a second pass over (x - mean)^2 and y is computed
 * from values centred in two steps, so rows with a large common offset keep
 * their precision; the saved mean is still one float, so where |mean| >>
 * the row's spread the backward sees its rounding (as in PyTorch). */
vp_status vp_op_layernorm(vp_cmd *cmd, const vp_tensor *x, const vp_tensor *gamma,
                          const vp_tensor *beta, float eps, vp_tensor *y, vp_tensor *mean,
                          vp_tensor *rstd);
/* With xh = (x - mean) rstd and g = dy gamma:
 *   dx     (+)= rstd (g - mean_c(g) - xh mean_c(g xh))
 *   dgamma (+)= sum over rows of dy xh,  dbeta (+)= sum over rows of dy
 * gamma as given to the forward (NULL: 1); mean, rstd from the forward.
 * dgamma and/or dbeta may be NULL (frozen affine: that work is skipped).
 * The column sums over rows use no atomics (deterministic); one workgroup
 * owns a few columns and walks all rows. Outputs must not overlap inputs
 * or each other. */
vp_status vp_op_layernorm_backward(vp_cmd *cmd, const vp_tensor *x, const vp_tensor *gamma,
                                   const vp_tensor *mean, const vp_tensor *rstd,
                                   const vp_tensor *dy, vp_tensor *dx, vp_tensor *dgamma,
                                   vp_tensor *dbeta, bool accumulate);
/* The same with one flag for dx and one for dgamma and dbeta (a graph's
 * first write of an activation's gradient beside parameter gradients that
 * always add). */
vp_status vp_op_layernorm_backward_ex(vp_cmd *cmd, const vp_tensor *x, const vp_tensor *gamma,
                                      const vp_tensor *mean, const vp_tensor *rstd,
                                      const vp_tensor *dy, vp_tensor *dx, bool acc_dx,
                                      vp_tensor *dgamma, vp_tensor *dbeta, bool acc_params);

/* ---- softmax ------------------------------------------------------------ */

/* y = exp(x - max) / sum exp(x - max) over the last axis. A row that is
 * entirely -inf (fully masked) gives all 0 (PyTorch gives NaN; masked
 * attention wants 0). +inf or NaN in a row gives NaN.
 *   x, y: (..., C), y must not overlap x */
/* Dropout with the mask from a hash of seed (an int32 (1) tensor) and
 * each element's index: y = keep ? x / (1 - p) : 0 with keep = u >= p, u
 * uniform in [0, 1). The backward recomputes the mask: dx (+)= keep ? dy /
 * (1 - p) : 0. p in [0, 1); y may be x (dx may be dy) only without accumulate. */
/* y = uniform [0, 1) numbers, y[i] from a hash of seed ^ salt and i (the
 * dropout hash; 24 random bits each): seed one int32, y float. */
vp_status vp_op_rand(vp_cmd *cmd, const vp_tensor *seed, uint32_t salt, vp_tensor *y);
vp_status vp_op_dropout(vp_cmd *cmd, const vp_tensor *x, const vp_tensor *seed, float p,
                        vp_tensor *y);
/* seed = lowbias32(seed + 0x9e3779b9) on the device: a new mask per run
 * without a host upload (vp_ref_seed_next is the same on the CPU). */
vp_status vp_op_seed_next(vp_cmd *cmd, vp_tensor *seed);
vp_status vp_op_dropout_backward(vp_cmd *cmd, const vp_tensor *dy, const vp_tensor *seed, float p,
                                 vp_tensor *dx, bool accumulate);

/* Mask2Former's attention mask from mask logits, over the last axis:
 * y = -inf where x < 0 (sigmoid < 0.5), 0 elsewhere; a row with no x >= 0
 * is all 0 (unmasked) instead. y must not overlap x. No backward. */
vp_status vp_op_logit_mask(vp_cmd *cmd, const vp_tensor *x, vp_tensor *y);
vp_status vp_op_softmax(vp_cmd *cmd, const vp_tensor *x, vp_tensor *y);
/* dx (+)= y (dy - sum_c dy y) per row, from the forward's output y (a
 * fully masked row, y = 0, gets 0).   y, dy, dx: (..., C), dx must not
 * overlap y or dy */
vp_status vp_op_softmax_backward(vp_cmd *cmd, const vp_tensor *y, const vp_tensor *dy,
                                 vp_tensor *dx, bool accumulate);

/* ---- reductions and their backward ---------------------------------------- */

/* y[r] = sum_c x[r, c], and the mean (sum / C).   x: (..., C)   y: per
 * row (see above), must not overlap x */
vp_status vp_op_sum_rows(vp_cmd *cmd, const vp_tensor *x, vp_tensor *y);
vp_status vp_op_mean_rows(vp_cmd *cmd, const vp_tensor *x, vp_tensor *y);
/* y[0] = sum of every element of x, and the mean.   y: one element, must
 * not overlap x. One workgroup reads all of x. */
vp_status vp_op_sum_all(vp_cmd *cmd, const vp_tensor *x, vp_tensor *y);
vp_status vp_op_mean_all(vp_cmd *cmd, const vp_tensor *x, vp_tensor *y);

/* dx[r, c] (+)= scale dy[r]: the backward of sum_rows (scale 1) and
 * mean_rows (scale 1/C).   dy: per row of dx (see above)   dx: (..., C),
 * must not overlap dy */
vp_status vp_op_broadcast_rows(vp_cmd *cmd, const vp_tensor *dy, vp_tensor *dx, float scale,
                               bool accumulate);
/* dx[i] (+)= scale dy[0]: the backward of sum_all (scale 1) and mean_all
 * (scale 1/n).   dy: one element   dx: any shape, must not overlap dy */
vp_status vp_op_broadcast_all(vp_cmd *cmd, const vp_tensor *dy, vp_tensor *dx, float scale,
                              bool accumulate);

/* ---- how row ops lay rows on invocations (for tests and benchmarks) ------ */

/* SEGMENTS: T lanes per row, sums by a tree in shared memory (GPUs). ONE:
 * one invocation per row, no shared memory and no barrier (CPU devices,
 * where rows are short enough: ops/nn.c). AUTO: the device's choice.
 * Returns the previous setting; results agree within rounding either way. */
typedef enum vp_nn_rows { VP_NN_ROWS_AUTO = 0, VP_NN_ROWS_SEGMENTS, VP_NN_ROWS_ONE } vp_nn_rows;
vp_nn_rows vp_nn_force_rows(vp_nn_rows form);
/* Whether rows of C columns take one invocation each on device d now. */
bool vp_nn_rows_one(const vp_device_info *d, int64_t C);

#endif
