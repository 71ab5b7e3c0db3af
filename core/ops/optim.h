/*
 * Optimizer ops: the sum of squares of the trainable gradients (for clipping
 * by the global norm without a host round trip) and AdamW as one pass over
 * a flat trainable buffer. A training step is recorded once and replayed;
 * what changes per step (learning rate, step count) lives in a small state
 * tensor the host writes before each submit, never in push constants.
 *
 *     vp_adamw_cfg cfg = vp_adamw_default_cfg();
 *     cfg.max_norm = 1.0f;
 *     vp_op_sqnorm(cmd, (const vp_tensor *[]){grad}, 1, sqnorm);
 *     vp_op_adamw(cmd, param, grad, m, v, state, sqnorm, NULL, &cfg);
 *     for (int t = 1; t <= steps; t++) {
 *         float s[4];
 *         vp_adamw_state(lr_at(t), t, &cfg, s);
 *         vp_tensor_upload(state, s, sizeof s);
 *         vp_cmd_submit(cmd);              // the same recording every step
 *     }
 */
#ifndef VP_OPS_OPTIM_H
#define VP_OPS_OPTIM_H

#include "runtime/runtime.h"

/* out (1) = sum over the n tensors xs[0..n-1] (f32, any shapes) of the
 * squares of their elements. Deterministic (a fixed summation order); one
 * single-workgroup dispatch per seven tensors. out must not overlap any x. */
vp_status vp_op_sqnorm(vp_cmd *cmd, const vp_tensor *const *xs, uint32_t n, vp_tensor *out);

/* What is fixed at record time. */
typedef struct vp_adamw_cfg {
    float beta1, beta2;  /* in [0, 1) */
    float eps;           /* >= 0 */
    float weight_decay;  /* >= 0, decoupled: w *= 1 - lr * weight_decay */
    float max_norm;      /* > 0: clip by the global norm (needs sqnorm); 0: don't */
} vp_adamw_cfg;

/* torch.optim.AdamW's defaults: betas (0.9, 0.999), eps 1e-8, weight decay
 * 0.01; no clipping. */
vp_adamw_cfg vp_adamw_default_cfg(void);

/* The state tensor's four floats for step `step` (counting from 1, as torch
 * does after its increment) at learning rate lr:
 *   out = {lr, 1 - beta1^step, 1 - beta2^step, 1}
 * The last is the gradient scale gs (1 here; 1/k after k accumulated
 * runs). The powers are taken in double.
 * VP_ERR_INVALID when step < 1 or lr is negative or not finite. */
vp_status vp_adamw_state(float lr, int step, const vp_adamw_cfg *cfg, float out[4]);

/* One AdamW step over every element, exactly torch.optim.AdamW's update
 * with torch.nn.utils.clip_grad_norm_ before it:
 *   c = min(1, max_norm / (gs sqrt(sqnorm) + 1e-6)), or 1 without clipping
 *   g = c gs grad (gs: state[3], the gradient scale)
 *   lr_k = lr * lr_scale[k], or lr when lr_scale is NULL
 *   w *= 1 - lr_k weight_decay
 *   m = beta1 m + (1 - beta1) g;  v = beta2 v + (1 - beta2) g^2
 *   w -= lr_k / (1 - beta1^t) * m / (sqrt(v) / sqrt(1 - beta2^t) + eps)
 *   param, grad, m, v, lr_scale: the same shape, f32; param, m, v updated
 *     in place and none of the five may overlap another
 *   state: (4) f32 from vp_adamw_state(), read on the device each replay
 *   sqnorm: (1), e.g. from vp_op_sqnorm over every trainable gradient (the
 *     global norm: several vp_op_adamw calls may share it); required when
 *     cfg->max_norm > 0, ignored otherwise; may be NULL then
 *   lr_scale: per-element learning-rate multiplier (parameter groups), or
 *     NULL
 * One dispatch, four elements per invocation. */
vp_status vp_op_adamw(vp_cmd *cmd, vp_tensor *param, const vp_tensor *grad, vp_tensor *m,
                      vp_tensor *v, const vp_tensor *state, const vp_tensor *sqnorm,
                      const vp_tensor *lr_scale, const vp_adamw_cfg *cfg);

#endif
