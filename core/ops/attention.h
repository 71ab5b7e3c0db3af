/*
 * Fused multi-head attention, forward and backward, without permutes and
 * without storing the Nq x Nk scores (FlashAttention's recomputation, one
 * invocation per row; shaders/attn.glsl):
 *
 *   q (B, Nq, H*Dh), k and v (B, Nk, H*Dh); head h is channels h*Dh ..
 *   s[b, h, i, j] = scale * q[b, i, h] . k[b, j, h] + bias[b % M, Hb == 1 ? 0 : h, i, j]
 *   out[b, i, h] = sum_j softmax_j(s[b, h, i, :]) v[b, j, h]       out (B, Nq, H*Dh)
 *   lse (B, H, Nq) = log sum_j exp(s[b, h, i, j]), which the backward reads
 *
 * bias (M, Hb, Nq, Nk) or NULL: M divides B (1: every image; B: one per
 * image; Swin's windows: one per window position), Hb is 1 or H; -inf
 * masks a key. A row whose keys are all masked gives out 0 (and lse +inf,
 * gradients 0) where softmax would give NaN. CPU reference:
 * vp_ref_attention (core/ref/nn.h). Dh at most VP_ATTN_MAX_DH.
 *
 *     vp_op_attention(cmd, q, k, v, NULL, 8, 0.125f, out, lse);
 *     vp_op_attention_backward(cmd, q, k, v, NULL, 8, 0.125f, lse, dout, stats,
 *                              dq, false, dk, false, dv, false, NULL);
 */
#ifndef VP_OPS_ATTENTION_H
#define VP_OPS_ATTENTION_H

#include "runtime/runtime.h"

#define VP_ATTN_MAX_DH 128
/* On CPU devices (lavapipe, whose loops stop after 65535 iterations per
 * invocation) at most this many keys and queries (and images x heads per
 * bias element). */
#define VP_ATTN_MAX_ROWS 65000

/* Which kernels run: on CPU devices with a fixed subgroup size and
 * shuffles (lavapipe) the subgroup forms (shaders/attn_*_sg.comp), else the
 * plain ones; a test or benchmark can force either (the subgroup forms only
 * where the device allows them: elsewhere VP_ATTN_SUBGROUP means AUTO).
 * Process-wide; returns the previous setting. */
typedef enum vp_attn_form { VP_ATTN_AUTO = 0, VP_ATTN_PLAIN = 1, VP_ATTN_SUBGROUP = 2 } vp_attn_form;
vp_attn_form vp_attention_force_form(vp_attn_form form);

/* out and lse must not overlap the inputs or each other. */
vp_status vp_op_attention(vp_cmd *cmd, const vp_tensor *q, const vp_tensor *k,
                          const vp_tensor *v, const vp_tensor *bias, int heads, float scale,
                          vp_tensor *out, vp_tensor *lse);

/* Gradients of sum(out * dout) given the forward's lse: dq, dk, dv (each
 * of its input's shape; acc_* false overwrites, true adds), and when ds is
 * not NULL (only with a bias) the score gradients ds (B, H, Nq, Nk), which
 * summed over the images and heads that share a bias element give the
 * bias's gradient (the graph does it with gemms). stats (B, H, Nq, 2) is
 * scratch the kernels pass between them (per row, lse and delta = dout .
 * out). Two dispatches, three with ds. No output may overlap an input or
 * another output. */
vp_status vp_op_attention_backward(vp_cmd *cmd, const vp_tensor *q, const vp_tensor *k,
                                   const vp_tensor *v, const vp_tensor *bias, int heads,
                                   float scale, const vp_tensor *lse, const vp_tensor *dout,
                                   vp_tensor *stats, vp_tensor *dq, bool acc_q, vp_tensor *dk,
                                   bool acc_k, vp_tensor *dv, bool acc_v, vp_tensor *ds);

#endif
