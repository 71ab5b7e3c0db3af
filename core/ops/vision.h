/*
 * Spatial ops for a ViT, a simple feature pyramid and a mask head: patch
 * embedding as im2col, 2x2 max-pool, the rearrangement of a 2x2 stride-2
 * transposed convolution, and bilinear resizing with PyTorch's semantics,
 * each with its backward.
 *
 * Maps are channels-last, (B, H, W, C), the same memory as ViT tokens
 * (B, N, C) with N = H*W; only the image of the patch embedding is
 * (B, C, H, W), as PyTorch's pixel_values.
 *
 *     // patch embedding: Conv2d(Cin, D, p, stride p) as a matmul
 *     vp_op_im2col_patches(cmd, pixels, 16, cols);      // (B, N, Cin*256)
 *     vp_op_matmul(cmd, cols, false, w_flat, true, tok); // w (D, Cin*256)
 *     // ConvTranspose2d(Cin, Cout, 2, stride 2) as a matmul
 *     vp_op_matmul(cmd, x, false, wt_flat, false, t);   // (B*H*W, Cout*4)
 *     vp_op_depth_to_space2(cmd, t, bias, up);          // (B, 2H, 2W, Cout)
 *
 * Every backward gathers (each gradient element sums what it owes in a
 * fixed order), so gradients are deterministic and need no atomics.
 */
#ifndef VP_OPS_VISION_H
#define VP_OPS_VISION_H

#include "runtime/runtime.h"

/* img (B, Cin, H, W) -> cols (B, (H/p)*(W/p), Cin*p*p):
 * cols[b, py*(W/p) + px, (cin*p + ky)*p + kx] = img[b, cin, py*p + ky, px*p + kx].
 * Patches in row-major order and columns in (cin, ky, kx) order, so that
 * cols x W^T, with a PyTorch Conv2d weight (D, Cin, p, p) seen as
 * (D, Cin*p*p), is Hugging Face ViT's conv(x).flatten(2).transpose(1, 2).
 * H and W must be multiples of p. */
vp_status vp_op_im2col_patches(vp_cmd *cmd, const vp_tensor *img, int patch, vp_tensor *cols);
/* dimg (B, Cin, H, W) (+)= dcols rearranged back (a bijection). */
vp_status vp_op_im2col_patches_backward(vp_cmd *cmd, const vp_tensor *dcols, int patch,
                                        vp_tensor *dimg, bool accumulate);

/* 2x2 max-pool, stride 2: x (B, H, W, C) -> y (B, H/2, W/2, C), odd H or W
 * rounded down (the last row or column is dropped, as in PyTorch).
 * argmax (i32, y's shape) = h*W + w of the input each maximum came from,
 * PyTorch's convention: the first maximum in row-major window order, except
 * that a NaN beats every number (the last NaN in the window). */
vp_status vp_op_maxpool2(vp_cmd *cmd, const vp_tensor *x, vp_tensor *y, vp_tensor *argmax);
/* dx (B, H, W, C) (+)= dy (B, H/2, W/2, C) routed to each window's argmax;
 * H and W are dx's (odd ones included). */
vp_status vp_op_maxpool2_backward(vp_cmd *cmd, const vp_tensor *dy, const vp_tensor *argmax,
                                  vp_tensor *dx, bool accumulate);

/* y[b, 2h+ky, 2w+kx, c] = x[b, h, w, c*4 + ky*2 + kx] + bias[c].
 *   x: (B, H, W, Cout*4)   bias: (Cout) or NULL   y: (B, 2H, 2W, Cout)
 * The second half of a ConvTranspose2d(Cin, Cout, 2, stride 2): x is the
 * input (B*H*W, Cin) times the PyTorch weight (Cin, Cout, 2, 2) seen as
 * (Cin, Cout*4), whose columns are in (cout, ky, kx) order. */
vp_status vp_op_depth_to_space2(vp_cmd *cmd, const vp_tensor *x, const vp_tensor *bias,
                                vp_tensor *y);
/* dx (+)= dy rearranged back; dbias (Cout) (+)= dy summed over (B, 2H, 2W)
 * in a fixed order, or NULL. accumulate applies to both. */
vp_status vp_op_depth_to_space2_backward(vp_cmd *cmd, const vp_tensor *dy, vp_tensor *dx,
                                         vp_tensor *dbias, bool accumulate);

/* Bilinear resize, exactly PyTorch's F.interpolate(x, size=(Ho, Wo),
 * mode='bilinear', align_corners=False) on channels-last maps:
 *   x: (B, H, W, C)   y: (B, Ho, Wo, C), any Ho, Wo >= 1
 * Along each axis, src = max((dst + 0.5) * in/out - 0.5, 0) (the scale
 * in/out in f32, as PyTorch computes it for f32), i0 = floor(src),
 * i1 = min(i0 + 1, in - 1), weights 1 - (src - i0) for i0 and src - i0 for
 * i1. */
vp_status vp_op_resize_bilinear(vp_cmd *cmd, const vp_tensor *x, vp_tensor *y);
/* dx (B, H, W, C) (+)= the transpose of the resize applied to dy. Each dx
 * element finds the output pixels that read it (a contiguous range per
 * axis) and sums their weighted gradients in a fixed order: deterministic,
 * no atomics. */
vp_status vp_op_resize_bilinear_backward(vp_cmd *cmd, const vp_tensor *dy, vp_tensor *dx,
                                         bool accumulate);

/* Upsampling by 2: F.interpolate(x, scale_factor=2, mode='bilinear',
 * align_corners=False), i.e. y (B, 2H, 2W, C) with src = max((dst + 0.5)/2
 * - 0.5, 0): resize_bilinear with the shape checked. */
vp_status vp_op_upsample_bilinear2(vp_cmd *cmd, const vp_tensor *x, vp_tensor *y);
vp_status vp_op_upsample_bilinear2_backward(vp_cmd *cmd, const vp_tensor *dy, vp_tensor *dx,
                                            bool accumulate);

#endif
