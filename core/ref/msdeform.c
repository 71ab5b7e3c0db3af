/*
 * Multi-scale deformable attention in plain loops, double precision.
 */
#include "ref/msdeform.h"

#include <math.h>
#include <stdbool.h>
#include <string.h>

/* The four corners of a bilinear sample at normalized (x, y) on an h x w
 * map: position in the level (-1 when outside) and weight, in the order
 * (y0, x0), (y0, x1), (y1, x0), (y1, x1); fx, fy the fractions. */
typedef struct corners {
    int64_t pos[4];
    double w[4];
    double fx, fy;
} corners;

static corners sample(double x, double y, int64_t h, int64_t w)
{
    corners c;
    double ix = x * (double)w - 0.5, iy = y * (double)h - 0.5;
    double x0 = floor(ix), y0 = floor(iy);
    c.fx = ix - x0;
    c.fy = iy - y0;
    for (int k = 0; k < 4; k++) {
        double xx = x0 + (k & 1), yy = y0 + (k >> 1);
        bool in = xx >= 0 && xx < (double)w && yy >= 0 && yy < (double)h;
        c.pos[k] = in ? (int64_t)yy * w + (int64_t)xx : -1;
        c.w[k] = ((k & 1) ? c.fx : 1 - c.fx) * ((k >> 1) ? c.fy : 1 - c.fy);
    }
    return c;
}

void vp_ref_msdeform(const vp_ref_msdeform_dims *d, const double *value, const double *loc,
                     const double *attn, double *out)
{
    int64_t H = d->H, Dh = d->Dh, LP = d->L * d->P;
    for (int64_t b = 0; b < d->B; b++)
        for (int64_t q = 0; q < d->Q; q++)
            for (int64_t h = 0; h < H; h++) {
                int64_t bqh = (b * d->Q + q) * H + h;
                double *o = out + bqh * Dh;
                for (int64_t c = 0; c < Dh; c++)
                    o[c] = 0.0;
                for (int64_t l = 0; l < d->L; l++)
                    for (int64_t p = 0; p < d->P; p++) {
                        int64_t s = bqh * LP + l * d->P + p;
                        corners cr = sample(loc[2 * s], loc[2 * s + 1], d->shapes[2 * l],
                                            d->shapes[2 * l + 1]);
                        for (int k = 0; k < 4; k++) {
                            if (cr.pos[k] < 0)
                                continue;
                            const double *v =
                                value + ((b * d->S + d->start[l] + cr.pos[k]) * H + h) * Dh;
                            double aw = attn[s] * cr.w[k];
                            for (int64_t c = 0; c < Dh; c++)
                                o[c] += aw * v[c];
                        }
                    }
            }
}

void vp_ref_msdeform_backward(const vp_ref_msdeform_dims *d, const double *value,
                              const double *loc, const double *attn, const double *grad_out,
                              double *grad_value, double *grad_loc, double *grad_attn)
{
    int64_t H = d->H, Dh = d->Dh, LP = d->L * d->P;
    memset(grad_value, 0, (size_t)(d->B * d->S * H * Dh) * sizeof *grad_value);
    for (int64_t b = 0; b < d->B; b++)
        for (int64_t q = 0; q < d->Q; q++)
            for (int64_t h = 0; h < H; h++) {
                int64_t bqh = (b * d->Q + q) * H + h;
                const double *g = grad_out + bqh * Dh;
                for (int64_t l = 0; l < d->L; l++)
                    for (int64_t p = 0; p < d->P; p++) {
                        int64_t s = bqh * LP + l * d->P + p, hl = d->shapes[2 * l],
                                wl = d->shapes[2 * l + 1];
                        corners cr = sample(loc[2 * s], loc[2 * s + 1], hl, wl);
                        double a = attn[s], ga = 0, gx = 0, gy = 0;
                        const double *v[4];
                        double *gv[4];
                        for (int k = 0; k < 4; k++) {
                            int64_t at = ((b * d->S + d->start[l] + cr.pos[k]) * H + h) * Dh;
                            v[k] = cr.pos[k] < 0 ? NULL : value + at;
                            gv[k] = cr.pos[k] < 0 ? NULL : grad_value + at;
                        }
                        for (int64_t c = 0; c < Dh; c++) {
                            double vc[4];
                            for (int k = 0; k < 4; k++) {
                                vc[k] = v[k] ? v[k][c] : 0.0;
                                if (gv[k])
                                    gv[k][c] += a * cr.w[k] * g[c];
                            }
                            ga += g[c] * (cr.w[0] * vc[0] + cr.w[1] * vc[1] + cr.w[2] * vc[2] +
                                          cr.w[3] * vc[3]);
                            gx += g[c] * ((1 - cr.fy) * (vc[1] - vc[0]) + cr.fy * (vc[3] - vc[2]));
                            gy += g[c] * ((1 - cr.fx) * (vc[2] - vc[0]) + cr.fx * (vc[3] - vc[1]));
                        }
                        grad_attn[s] = ga;
                        /* d(pixel x)/d(loc x) = W_l, d(pixel y)/d(loc y) = H_l */
                        grad_loc[2 * s] = a * gx * (double)wl;
                        grad_loc[2 * s + 1] = a * gy * (double)hl;
                    }
            }
}
