/*
 * resize.h - the vit plugin's position-embedding resize as a matrix, so
 * that the graph resizes with a gemm and its backward comes for free.
 *
 *     double a[6 * 4];
 *     vit_resize_1d(VIT_RESIZE_BICUBIC, 4, 6, a);   // a: (6, 4)
 *     // (G x G) <- (G0 x G0), row-major grids: kron(a, a), (G*G, G0*G0)
 */
#ifndef VIT_RESIZE_H
#define VIT_RESIZE_H

#include <stdint.h>

typedef enum vit_resize {
    /* F.interpolate(mode='bicubic', align_corners=False): Keys' cubic
     * convolution with A = -0.75 on 4 taps, border indices clamped (the
     * DINOv2 of HF transformers' modeling_dinov2). */
    VIT_RESIZE_BICUBIC,
    /* The same with antialias=True: PIL's cubic filter (a = -0.5), its
     * support widened by the scale when shrinking, taps outside the input
     * dropped and the weights renormalized (modeling_dinov2_with_registers). */
    VIT_RESIZE_BICUBIC_AA,
} vit_resize;

/* m (n, n0), row-major: output point i of a size-n resize of n0 points is
 * sum_j m[i n0 + j] in[j], as PyTorch computes it for an output `size`
 * (scale n0 / n, half-pixel centers). n0, n >= 1. */
void vit_resize_1d(vit_resize kind, int64_t n0, int64_t n, double *m);

#endif
