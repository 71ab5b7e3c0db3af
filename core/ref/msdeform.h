/*
 * CPU reference of multi-scale deformable attention (Deformable DETR's
 * ms_deform_attn_core_pytorch: bilinear grid_sample, align_corners=False,
 * zero padding), forward and backward, in double precision. The ground
 * truth of tests/check_msdeform.c; see core/ops/msdeform.h for the op.
 *
 *   value (B, S, H, Dh), S = sum over levels of H_l * W_l, level l at
 *         positions start[l] .. start[l] + H_l * W_l - 1 (row-major y, x)
 *   loc   (B, Q, H, L, P, 2) as (x, y), normalized: pixel (x * W_l - 0.5,
 *         y * H_l - 0.5); corners outside the map contribute 0
 *   attn  (B, Q, H, L, P)
 *   out   (B, Q, H * Dh): out[b, q, h * Dh + d] = sum over l, p of
 *         attn * bilinear(value[b, level l, h, d], loc)
 *
 * Gradients follow PyTorch's grid_sample: at integer pixel coordinates
 * (where bilinear sampling is not differentiable) floor() picks the cell,
 * i.e. the derivative from the right.
 */
#ifndef VP_REF_MSDEFORM_H
#define VP_REF_MSDEFORM_H

#include <stdint.h>

typedef struct vp_ref_msdeform_dims {
    int64_t B, S, H, Dh, Q, L, P;
    const int64_t *shapes; /* (L, 2): H_l, W_l */
    const int64_t *start;  /* (L) */
} vp_ref_msdeform_dims;

void vp_ref_msdeform(const vp_ref_msdeform_dims *d, const double *value, const double *loc,
                     const double *attn, double *out);
/* Overwrites grad_value (B, S, H, Dh), grad_loc (B, Q, H, L, P, 2) and
 * grad_attn (B, Q, H, L, P) with the gradients of sum(out * grad_out). */
void vp_ref_msdeform_backward(const vp_ref_msdeform_dims *d, const double *value,
                              const double *loc, const double *attn, const double *grad_out,
                              double *grad_value, double *grad_loc, double *grad_attn);

#endif
