/*
 * CPU references of the layout ops (core/ops/layout.h: permute, concat,
 * slice, gather of rows) and the spatial ops (core/ops/vision.h: patch
 * im2col, 2x2 max-pool, depth-to-space for 2x2 transposed convolutions,
 * bilinear resize), in double precision, plain loops. Backward functions
 * overwrite their outputs with the gradient (the tests add an initial value
 * themselves to check `accumulate`).
 *
 * Concat and slice see a tensor as (outer, len, inner): outer is the product
 * of the dimensions before the axis, inner of those after it.
 *
 *     double want[2 * 3 * 4];            // x (2, 4, 3) -> y (2, 3, 4)
 *     vp_ref_permute(x, 3, (int64_t[]){2, 4, 3}, (int[]){0, 2, 1}, want);
 */
#ifndef VP_REF_LAYOUT_H
#define VP_REF_LAYOUT_H

#include <stdbool.h>
#include <stdint.h>

/* y.shape[i] = xshape[perm[i]], ndim 1..4. */
void vp_ref_permute(const double *x, int ndim, const int64_t *xshape, const int *perm, double *y);
/* dx (xshape) from dy (the permuted shape): the inverse permutation. */
void vp_ref_permute_backward(const double *dy, int ndim, const int64_t *xshape, const int *perm,
                             double *dx);

/* y (outer, sum lens, inner) = xs[k] (outer, lens[k], inner) side by side. */
void vp_ref_concat(const double *const *xs, const int64_t *lens, uint32_t n, int64_t outer,
                   int64_t inner, double *y);
/* dxs[k] = the matching slice of dy; NULL entries are skipped. */
void vp_ref_concat_backward(const double *dy, const int64_t *lens, uint32_t n, int64_t outer,
                            int64_t inner, double *const *dxs);

/* y (outer, len, inner) = x (outer, xlen, inner) [:, start:start+len, :]. */
void vp_ref_slice(const double *x, int64_t outer, int64_t xlen, int64_t inner, int64_t start,
                  int64_t len, double *y);
/* dx (outer, xlen, inner): dy in the region, zero elsewhere. */
void vp_ref_slice_backward(const double *dy, int64_t outer, int64_t xlen, int64_t inner,
                           int64_t start, int64_t len, double *dx);

/* y (N, C) = table (R, C) [clamp(idx[n], 0, R-1)]: out-of-range indices
 * read (and in backward, receive the gradient of) the nearest valid row. */
/* y[n] (+)= idx[n] in [0, R) ? x[idx[n]] : 0, rows of C (vp_op_row_map). */
void vp_ref_row_map(const double *x, int64_t R, int64_t C, const int32_t *idx, int64_t N,
                    double *y, bool accumulate);
void vp_ref_gather_rows(const double *table, int64_t R, int64_t C, const int32_t *idx, int64_t N,
                        double *y);
void vp_ref_gather_rows_backward(const double *dy, const int32_t *idx, int64_t N, int64_t R,
                                 int64_t C, double *dtable);

/* cols (B, (H/p)*(W/p), Cin*p*p) from img (B, Cin, H, W): patches in
 * row-major order, columns in (cin, ky, kx) order. */
void vp_ref_im2col_patches(const double *img, int64_t B, int64_t Cin, int64_t H, int64_t W,
                           int64_t p, double *cols);
void vp_ref_im2col_patches_backward(const double *dcols, int64_t B, int64_t Cin, int64_t H,
                                    int64_t W, int64_t p, double *dimg);

/* y (B, H/2, W/2, C) = max over each 2x2 window of x (B, H, W, C) (floor
 * for odd H, W); argmax = h*W + w of the first maximum in row-major window
 * order, except that a NaN beats everything (the last NaN, as in PyTorch). */
void vp_ref_maxpool2(const double *x, int64_t B, int64_t H, int64_t W, int64_t C, double *y,
                     int32_t *argmax);
/* dx (B, H, W, C): dy routed to each window's argmax, zero elsewhere. */
void vp_ref_maxpool2_backward(const double *dy, const int32_t *argmax, int64_t B, int64_t H,
                              int64_t W, int64_t C, double *dx);

/* y[b, 2h+ky, 2w+kx, c] = x[b, h, w, c*4 + ky*2 + kx] + bias[c]; x (B, H, W,
 * Cout*4), y (B, 2H, 2W, Cout), bias (Cout) or NULL. */
void vp_ref_depth_to_space2(const double *x, const double *bias, int64_t B, int64_t H, int64_t W,
                            int64_t Cout, double *y);
/* dx (B, H, W, Cout*4); dbias (Cout) or NULL. */
void vp_ref_depth_to_space2_backward(const double *dy, int64_t B, int64_t H, int64_t W,
                                     int64_t Cout, double *dx, double *dbias);
/* PyTorch ConvTranspose2d(Cin, Cout, kernel 2, stride 2) computed directly,
 * channels-last: x (B, H, W, Cin), weight (Cin, Cout, 2, 2) as PyTorch
 * stores it, bias (Cout) or NULL, y (B, 2H, 2W, Cout). */
void vp_ref_conv_transpose2x2(const double *x, const double *weight, const double *bias,
                              int64_t B, int64_t H, int64_t W, int64_t Cin, int64_t Cout,
                              double *y);

/* y (B, Ho, Wo, C) = x (B, H, W, C) resized like PyTorch's
 * F.interpolate(size=(Ho, Wo), mode='bilinear', align_corners=False): along
 * each axis the source coordinate is max((dst + 0.5) * in/out - 0.5, 0),
 * i0 = floor(src), i1 = min(i0 + 1, in - 1), weights 1 - (src - i0) and
 * src - i0. Upsampling by 2 is Ho = 2H, Wo = 2W (scale exactly 1/2). */
void vp_ref_resize_bilinear(const double *x, int64_t B, int64_t H, int64_t W, int64_t C,
                            int64_t Ho, int64_t Wo, double *y);
void vp_ref_resize_bilinear_backward(const double *dy, int64_t B, int64_t H, int64_t W, int64_t C,
                                     int64_t Ho, int64_t Wo, double *dx);

#endif
