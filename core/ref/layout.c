/*
 * CPU references of the layout and spatial ops (see ref/layout.h): the
 * ground truth the kernels in core/ops/layout.c and core/ops/vision.c are
 * tested against. Written as the definitions read, not as the kernels
 * compute: backward passes scatter here where the kernels gather.
 */
#include "ref/layout.h"

#include <math.h>
#include <string.h>

/* Row-major strides of a shape. */
static void strides_of(int ndim, const int64_t *shape, int64_t *st)
{
    int64_t s = 1;
    for (int i = ndim - 1; i >= 0; i--) {
        st[i] = s;
        s *= shape[i];
    }
}

/* Calls back with (y flat index, x flat index) for every element. */
static void permute_walk(int ndim, const int64_t *xshape, const int *perm, const double *src,
                         double *dst, bool forward)
{
    int64_t xs[4], ys[4], yshape[4], n = 1;
    strides_of(ndim, xshape, xs);
    for (int i = 0; i < ndim; i++) {
        yshape[i] = xshape[perm[i]];
        n *= yshape[i];
    }
    strides_of(ndim, yshape, ys);
    for (int64_t yi = 0; yi < n; yi++) {
        int64_t xi = 0, r = yi;
        for (int i = 0; i < ndim; i++) {
            int64_t c = r / ys[i];
            r %= ys[i];
            xi += c * xs[perm[i]];
        }
        if (forward)
            dst[yi] = src[xi];
        else
            dst[xi] = src[yi];
    }
}

void vp_ref_permute(const double *x, int ndim, const int64_t *xshape, const int *perm, double *y)
{
    permute_walk(ndim, xshape, perm, x, y, true);
}

void vp_ref_permute_backward(const double *dy, int ndim, const int64_t *xshape, const int *perm,
                             double *dx)
{
    permute_walk(ndim, xshape, perm, dy, dx, false);
}

void vp_ref_concat(const double *const *xs, const int64_t *lens, uint32_t n, int64_t outer,
                   int64_t inner, double *y)
{
    int64_t total = 0;
    for (uint32_t k = 0; k < n; k++)
        total += lens[k];
    for (int64_t o = 0; o < outer; o++) {
        int64_t a0 = 0;
        for (uint32_t k = 0; k < n; k++) {
            memcpy(y + (o * total + a0) * inner, xs[k] + o * lens[k] * inner,
                   (size_t)(lens[k] * inner) * sizeof *y);
            a0 += lens[k];
        }
    }
}

void vp_ref_concat_backward(const double *dy, const int64_t *lens, uint32_t n, int64_t outer,
                            int64_t inner, double *const *dxs)
{
    int64_t total = 0, a0 = 0;
    for (uint32_t k = 0; k < n; k++)
        total += lens[k];
    for (uint32_t k = 0; k < n; k++) {
        if (dxs[k])
            vp_ref_slice(dy, outer, total, inner, a0, lens[k], dxs[k]);
        a0 += lens[k];
    }
}

void vp_ref_slice(const double *x, int64_t outer, int64_t xlen, int64_t inner, int64_t start,
                  int64_t len, double *y)
{
    for (int64_t o = 0; o < outer; o++)
        for (int64_t a = 0; a < len; a++)
            for (int64_t i = 0; i < inner; i++)
                y[(o * len + a) * inner + i] = x[(o * xlen + start + a) * inner + i];
}

void vp_ref_slice_backward(const double *dy, int64_t outer, int64_t xlen, int64_t inner,
                           int64_t start, int64_t len, double *dx)
{
    for (int64_t o = 0; o < outer; o++)
        for (int64_t a = 0; a < xlen; a++)
            for (int64_t i = 0; i < inner; i++)
                dx[(o * xlen + a) * inner + i] =
                    a >= start && a < start + len ? dy[(o * len + a - start) * inner + i] : 0.0;
}

static int64_t clamp_row(int32_t i, int64_t R)
{
    return i < 0 ? 0 : i >= R ? R - 1 : i;
}

void vp_ref_gather_rows(const double *table, int64_t R, int64_t C, const int32_t *idx, int64_t N,
                        double *y)
{
    for (int64_t n = 0; n < N; n++)
        memcpy(y + n * C, table + clamp_row(idx[n], R) * C, (size_t)C * sizeof *y);
}

void vp_ref_gather_rows_backward(const double *dy, const int32_t *idx, int64_t N, int64_t R,
                                 int64_t C, double *dtable)
{
    memset(dtable, 0, (size_t)(R * C) * sizeof *dtable);
    for (int64_t n = 0; n < N; n++) {
        double *row = dtable + clamp_row(idx[n], R) * C;
        for (int64_t c = 0; c < C; c++)
            row[c] += dy[n * C + c];
    }
}

/* Walks (b, patch, column) <-> (b, cin, y, x). */
static void im2col_walk(const double *src, int64_t B, int64_t Cin, int64_t H, int64_t W,
                        int64_t p, double *dst, bool forward)
{
    int64_t hp = H / p, wp = W / p, K = Cin * p * p;
    for (int64_t b = 0; b < B; b++)
        for (int64_t py = 0; py < hp; py++)
            for (int64_t px = 0; px < wp; px++)
                for (int64_t ci = 0; ci < Cin; ci++)
                    for (int64_t ky = 0; ky < p; ky++)
                        for (int64_t kx = 0; kx < p; kx++) {
                            int64_t col = ((b * hp + py) * wp + px) * K + (ci * p + ky) * p + kx;
                            int64_t pix = ((b * Cin + ci) * H + py * p + ky) * W + px * p + kx;
                            if (forward)
                                dst[col] = src[pix];
                            else
                                dst[pix] = src[col];
                        }
}

void vp_ref_im2col_patches(const double *img, int64_t B, int64_t Cin, int64_t H, int64_t W,
                           int64_t p, double *cols)
{
    im2col_walk(img, B, Cin, H, W, p, cols, true);
}

void vp_ref_im2col_patches_backward(const double *dcols, int64_t B, int64_t Cin, int64_t H,
                                    int64_t W, int64_t p, double *dimg)
{
    im2col_walk(dcols, B, Cin, H, W, p, dimg, false);
}

void vp_ref_maxpool2(const double *x, int64_t B, int64_t H, int64_t W, int64_t C, double *y,
                     int32_t *argmax)
{
    int64_t Ho = H / 2, Wo = W / 2;
    for (int64_t b = 0; b < B; b++)
        for (int64_t ho = 0; ho < Ho; ho++)
            for (int64_t wo = 0; wo < Wo; wo++)
                for (int64_t c = 0; c < C; c++) {
                    double best = -INFINITY;
                    int64_t at = (2 * ho) * W + 2 * wo;
                    for (int k = 0; k < 4; k++) {
                        int64_t h = 2 * ho + k / 2, w = 2 * wo + k % 2;
                        double v = x[((b * H + h) * W + w) * C + c];
                        if (v > best || isnan(v)) {
                            best = v;
                            at = h * W + w;
                        }
                    }
                    int64_t o = ((b * Ho + ho) * Wo + wo) * C + c;
                    y[o] = best;
                    argmax[o] = (int32_t)at;
                }
}

void vp_ref_maxpool2_backward(const double *dy, const int32_t *argmax, int64_t B, int64_t H,
                              int64_t W, int64_t C, double *dx)
{
    int64_t Ho = H / 2, Wo = W / 2;
    memset(dx, 0, (size_t)(B * H * W * C) * sizeof *dx);
    for (int64_t b = 0; b < B; b++)
        for (int64_t o = 0; o < Ho * Wo; o++)
            for (int64_t c = 0; c < C; c++) {
                int64_t i = (b * Ho * Wo + o) * C + c;
                dx[(b * H * W + argmax[i]) * C + c] += dy[i];
            }
}

void vp_ref_depth_to_space2(const double *x, const double *bias, int64_t B, int64_t H, int64_t W,
                            int64_t Cout, double *y)
{
    for (int64_t b = 0; b < B; b++)
        for (int64_t h = 0; h < H; h++)
            for (int64_t w = 0; w < W; w++)
                for (int64_t c = 0; c < Cout; c++)
                    for (int64_t k = 0; k < 4; k++) {
                        int64_t ky = k / 2, kx = k % 2;
                        y[((b * 2 * H + 2 * h + ky) * 2 * W + 2 * w + kx) * Cout + c] =
                            x[((b * H + h) * W + w) * Cout * 4 + c * 4 + k] + (bias ? bias[c] : 0);
                    }
}

void vp_ref_depth_to_space2_backward(const double *dy, int64_t B, int64_t H, int64_t W,
                                     int64_t Cout, double *dx, double *dbias)
{
    if (dbias)
        memset(dbias, 0, (size_t)Cout * sizeof *dbias);
    for (int64_t b = 0; b < B; b++)
        for (int64_t h = 0; h < H; h++)
            for (int64_t w = 0; w < W; w++)
                for (int64_t c = 0; c < Cout; c++)
                    for (int64_t k = 0; k < 4; k++) {
                        int64_t ky = k / 2, kx = k % 2;
                        double g = dy[((b * 2 * H + 2 * h + ky) * 2 * W + 2 * w + kx) * Cout + c];
                        dx[((b * H + h) * W + w) * Cout * 4 + c * 4 + k] = g;
                        if (dbias)
                            dbias[c] += g;
                    }
}

void vp_ref_conv_transpose2x2(const double *x, const double *weight, const double *bias,
                              int64_t B, int64_t H, int64_t W, int64_t Cin, int64_t Cout,
                              double *y)
{
    int64_t Ho = 2 * H, Wo = 2 * W;
    /* out[oy, ox] = bias + sum over (iy, ix, ky, kx) with oy = 2 iy + ky,
     * ox = 2 ix + kx of x[iy, ix] w[ci, co, ky, kx]; stride 2 with kernel 2
     * means exactly one (iy, ky) per oy. */
    for (int64_t b = 0; b < B; b++)
        for (int64_t oy = 0; oy < Ho; oy++)
            for (int64_t ox = 0; ox < Wo; ox++)
                for (int64_t co = 0; co < Cout; co++) {
                    double acc = bias ? bias[co] : 0.0;
                    for (int64_t iy = 0; iy < H; iy++)
                        for (int64_t ix = 0; ix < W; ix++) {
                            int64_t ky = oy - 2 * iy, kx = ox - 2 * ix;
                            if (ky < 0 || ky > 1 || kx < 0 || kx > 1)
                                continue;
                            for (int64_t ci = 0; ci < Cin; ci++)
                                acc += x[((b * H + iy) * W + ix) * Cin + ci] *
                                       weight[((ci * Cout + co) * 2 + ky) * 2 + kx];
                        }
                    y[((b * Ho + oy) * Wo + ox) * Cout + co] = acc;
                }
}

/* PyTorch's source index for align_corners=False: i0, i1 and the weight of
 * i1 for destination d. */
static void bilinear_src(int64_t d, int64_t in, int64_t out, int64_t *i0, int64_t *i1, double *l1)
{
    double s = ((double)d + 0.5) * (double)in / (double)out - 0.5;
    if (s < 0)
        s = 0;
    *i0 = (int64_t)s;
    if (*i0 > in - 1)
        *i0 = in - 1;
    *i1 = *i0 < in - 1 ? *i0 + 1 : *i0;
    *l1 = s - (double)*i0;
}

void vp_ref_resize_bilinear(const double *x, int64_t B, int64_t H, int64_t W, int64_t C,
                            int64_t Ho, int64_t Wo, double *y)
{
    for (int64_t b = 0; b < B; b++)
        for (int64_t oy = 0; oy < Ho; oy++)
            for (int64_t ox = 0; ox < Wo; ox++) {
                int64_t y0, y1, x0, x1;
                double ly, lx;
                bilinear_src(oy, H, Ho, &y0, &y1, &ly);
                bilinear_src(ox, W, Wo, &x0, &x1, &lx);
                const double *r0 = x + (b * H + y0) * W * C, *r1 = x + (b * H + y1) * W * C;
                for (int64_t c = 0; c < C; c++)
                    y[((b * Ho + oy) * Wo + ox) * C + c] =
                        (1 - ly) * ((1 - lx) * r0[x0 * C + c] + lx * r0[x1 * C + c]) +
                        ly * ((1 - lx) * r1[x0 * C + c] + lx * r1[x1 * C + c]);
            }
}

void vp_ref_resize_bilinear_backward(const double *dy, int64_t B, int64_t H, int64_t W, int64_t C,
                                     int64_t Ho, int64_t Wo, double *dx)
{
    memset(dx, 0, (size_t)(B * H * W * C) * sizeof *dx);
    for (int64_t b = 0; b < B; b++)
        for (int64_t oy = 0; oy < Ho; oy++)
            for (int64_t ox = 0; ox < Wo; ox++) {
                int64_t y0, y1, x0, x1;
                double ly, lx;
                bilinear_src(oy, H, Ho, &y0, &y1, &ly);
                bilinear_src(ox, W, Wo, &x0, &x1, &lx);
                double *r0 = dx + (b * H + y0) * W * C, *r1 = dx + (b * H + y1) * W * C;
                for (int64_t c = 0; c < C; c++) {
                    double g = dy[((b * Ho + oy) * Wo + ox) * C + c];
                    r0[x0 * C + c] += (1 - ly) * (1 - lx) * g;
                    r0[x1 * C + c] += (1 - ly) * lx * g;
                    r1[x0 * C + c] += ly * (1 - lx) * g;
                    r1[x1 * C + c] += ly * lx * g;
                }
            }
}

void vp_ref_row_map(const double *x, int64_t R, int64_t C, const int32_t *idx, int64_t N,
                    double *y, bool accumulate)
{
    for (int64_t n = 0; n < N; n++)
        for (int64_t c = 0; c < C; c++) {
            double v = idx[n] >= 0 && idx[n] < R ? x[idx[n] * C + c] : 0.0;
            y[n * C + c] = accumulate ? y[n * C + c] + v : v;
        }
}
