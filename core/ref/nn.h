/*
 * CPU references of the nn ops (core/ops/nn.h), in double precision, plain
 * loops: the ground truth the Vulkan kernels are tested against, and whose
 * backward functions are checked against finite differences of their
 * forward functions. Same semantics as the ops; rows x C is the op's
 * (rows, C) view. Every backward takes `accumulate`: false overwrites the
 * gradient, true adds into it.
 */
#ifndef VP_REF_NN_H
#define VP_REF_NN_H

#include <stdbool.h>
#include <stdint.h>

/* y = max(x, 0); dx (+)= dy where x > 0 (0 at x = 0) */
void vp_ref_relu(const double *x, double *y, int64_t n);
void vp_ref_relu_backward(const double *x, const double *dy, double *dx, int64_t n,
                          bool accumulate);

/* y = 0.5 x (1 + erf(x / sqrt 2)) (libm erf/erfc in double);
 * dx (+)= dy (Phi(x) + x phi(x)) */
void vp_ref_gelu(const double *x, double *y, int64_t n);
/* Dropout as vp_op_dropout, the same hash: keep(i) = u(seed, i) >= p. */
bool vp_ref_dropout_keep(uint32_t seed, uint64_t i, double p);
uint32_t vp_ref_seed_next(uint32_t seed);
void vp_ref_dropout(const double *x, uint32_t seed, double p, double *y, int64_t n);
/* Uniform [0, 1) numbers as the rand op draws them: y[i] from a hash of
 * seed ^ salt and i (24 bits). */
void vp_ref_rand(uint32_t seed, uint32_t salt, double *y, int64_t n);
/* Mask2Former's attention mask from logits (ops/nn.h vp_op_logit_mask). */
void vp_ref_logit_mask(const double *x, double *y, int64_t rows, int64_t C);
/* Any activation by its vp_act code (ops/nn.h): 0 relu ... 4 silu. */
void vp_ref_act(int act, const double *x, double *y, int64_t n);
void vp_ref_act_backward(int act, const double *x, const double *dy, double *dx, int64_t n,
                         bool accumulate);
void vp_ref_gelu_backward(const double *x, const double *dy, double *dx, int64_t n,
                          bool accumulate);

/* Layer normalization over C (biased variance). gamma, beta may be NULL (1,
 * 0); mean, rstd (rows) may be NULL. */
void vp_ref_layernorm(const double *x, const double *gamma, const double *beta, double eps,
                      double *y, double *mean, double *rstd, int64_t rows, int64_t C);
/* From the forward's mean and rstd; gamma may be NULL (1); dgamma, dbeta
 * may be NULL (not computed). */
void vp_ref_layernorm_backward(const double *x, const double *gamma, const double *mean,
                               const double *rstd, const double *dy, double *dx, double *dgamma,
                               double *dbeta, int64_t rows, int64_t C, bool accumulate);

/* Softmax over C, max-subtracted; a row that is entirely -inf gives 0s. */
void vp_ref_softmax(const double *x, double *y, int64_t rows, int64_t C);
/* dx (+)= y (dy - sum_c dy y) per row */
void vp_ref_softmax_backward(const double *y, const double *dy, double *dx, int64_t rows,
                             int64_t C, bool accumulate);

/* y[r] = sum_c x[r, c] (times 1/C for the mean) */
void vp_ref_sum_rows(const double *x, double *y, int64_t rows, int64_t C);
void vp_ref_mean_rows(const double *x, double *y, int64_t rows, int64_t C);
/* y[0] = sum of x[0..n) (times 1/n for the mean) */
void vp_ref_sum_all(const double *x, double *y, int64_t n);
void vp_ref_mean_all(const double *x, double *y, int64_t n);
/* dx[r, c] (+)= scale dy[r] */
void vp_ref_broadcast_rows(const double *dy, double *dx, int64_t rows, int64_t C, double scale,
                           bool accumulate);
/* dx[i] (+)= scale dy[0] */
void vp_ref_broadcast_all(const double *dy, double *dx, int64_t n, double scale,
                          bool accumulate);

/* Fused attention (ops/attention.h): q (B, Nq, H*Dh), k and v (B, Nk, H*Dh),
 * bias (M, Hb, Nq, Nk) or NULL (image b adds bias[b % M], head h
 * bias[.., Hb == 1 ? 0 : h, ..]); out (B, Nq, H*Dh) and lse (B, H, Nq, may
 * be NULL). A row with every key at -inf gives out 0 and lse +inf. */
typedef struct vp_ref_attn_dims {
    int64_t B, Nq, Nk, H, Dh, M, Hb;
    double scale;
} vp_ref_attn_dims;
void vp_ref_attention(const vp_ref_attn_dims *d, const double *q, const double *k,
                      const double *v, const double *bias, double *out, double *lse);
/* Gradients of sum(out * dout), each (+)= by accumulate; dbias may be NULL. */
void vp_ref_attention_backward(const vp_ref_attn_dims *d, const double *q, const double *k,
                               const double *v, const double *bias, const double *dout,
                               double *dq, double *dk, double *dv, double *dbias,
                               bool accumulate);

#endif
