/*
 * CPU references for the loss and optimizer ops (core/ops/loss.h,
 * core/ops/optim.h), in double precision with plain loops: the Vulkan
 * kernels are tested against them, and the backward functions against
 * central finite differences of the forward functions. Semantics are
 * PyTorch's, exactly as the ops document them.
 *
 *     double l = vp_ref_cross_entropy(x, target, NULL, N, C);
 *     vp_ref_cross_entropy_backward(x, target, NULL, N, C, 1.0, dx);
 *     vp_ref_adamw(w, g, m, v, NULL, n, 1e-3, 1, &cfg, 1.0);
 */
#ifndef VP_REF_LOSS_H
#define VP_REF_LOSS_H

#include <stdint.h>

/* Softmax cross-entropy, PyTorch's F.cross_entropy(x, target, weight,
 * reduction='mean'): sum_i w[t_i] nll_i / sum_i w[t_i] over the rows with
 * t_i >= 0; rows with t_i < 0 are ignored.
 *   x: (N, C)  target: (N)  weight: (C) or NULL (all 1)
 * NaN when a target is >= C or the total weight is 0. */
double vp_ref_cross_entropy(const double *x, const int32_t *target, const double *weight,
                            int64_t N, int64_t C);
/* dx (N, C) = dloss * d loss / d x, overwritten: 0 in ignored rows and
 * everywhere when the total weight is 0, NaN in rows whose target is >= C. */
void vp_ref_cross_entropy_backward(const double *x, const int32_t *target, const double *weight,
                                   int64_t N, int64_t C, double dloss, double *dx);

/* Sigmoid binary cross-entropy with logits, the mean over n elements. */
double vp_ref_bce_logits(const double *x, const double *target, int64_t n);
void vp_ref_bce_logits_backward(const double *x, const double *target, int64_t n, double dloss,
                                double *dx);

/* Mask2Former's dice loss: x, target (M, P); p = sigmoid(x); the sum over
 * masks of 1 - (2 sum p t + 1) / (sum p + sum t + 1), divided by
 * normalizer. */
double vp_ref_dice(const double *x, const double *target, int64_t M, int64_t P,
                   double normalizer);
void vp_ref_dice_backward(const double *x, const double *target, int64_t M, int64_t P,
                          double normalizer, double dloss, double *dx);

/* Sum of squares of n_tensors arrays, xs[i] of ns[i] elements. */
double vp_ref_sqnorm(const double *const *xs, const int64_t *ns, int n_tensors);
/* torch.nn.utils.clip_grad_norm_'s factor: min(1, max_norm / (sqrt(sqnorm)
 * + 1e-6)); 1 when max_norm <= 0 (no clipping). */
double vp_ref_clip_coef(double sqnorm, double max_norm);

/* One step of torch.optim.AdamW on n elements, in place on w, m, v, in the
 * order torch applies it: g = clip * grad; lr_k = lr * lr_scale[k] (1 when
 * lr_scale is NULL); w *= 1 - lr_k wd; m = lerp(m, g, 1 - b1);
 * v = b2 v + (1 - b2) g^2; w -= lr_k / (1 - b1^step) * m /
 * (sqrt(v) / sqrt(1 - b2^step) + eps). step counts from 1. */
typedef struct vp_ref_adamw_hp {
    double beta1, beta2, eps, weight_decay;
} vp_ref_adamw_hp;
void vp_ref_adamw(double *w, const double *grad, double *m, double *v, const double *lr_scale,
                  int64_t n, double lr, int step, const vp_ref_adamw_hp *hp, double clip);

#endif
