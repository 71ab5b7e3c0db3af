/*
 * CPU references of the nn ops, in double precision (see nn.h).
 */
#include "ref/nn.h"

#include <math.h>
#include <stdlib.h>

static void put(double *dst, double v, bool accumulate)
{
    *dst = accumulate ? *dst + v : v;
}

void vp_ref_relu(const double *x, double *y, int64_t n)
{
    for (int64_t i = 0; i < n; i++)
        y[i] = x[i] > 0 ? x[i] : 0.0;
}

void vp_ref_relu_backward(const double *x, const double *dy, double *dx, int64_t n,
                          bool accumulate)
{
    for (int64_t i = 0; i < n; i++)
        put(&dx[i], x[i] > 0 ? dy[i] : 0.0, accumulate);
}

/* Phi(x) = 0.5 erfc(-x / sqrt 2): accurate in both tails. */
static double phi_cdf(double x)
{
    return 0.5 * erfc(-x * 0.70710678118654752440);
}

void vp_ref_gelu(const double *x, double *y, int64_t n)
{
    for (int64_t i = 0; i < n; i++)
        y[i] = x[i] * phi_cdf(x[i]);
}

void vp_ref_gelu_backward(const double *x, const double *dy, double *dx, int64_t n,
                          bool accumulate)
{
    const double inv_sqrt_2pi = 0.39894228040143267794;
    for (int64_t i = 0; i < n; i++) {
        double d = phi_cdf(x[i]) + x[i] * inv_sqrt_2pi * exp(-0.5 * x[i] * x[i]);
        put(&dx[i], d * dy[i], accumulate);
    }
}

static uint32_t lowbias32(uint32_t x)
{
    x ^= x >> 16;
    x *= 0x7feb352du;
    x ^= x >> 15;
    x *= 0x846ca68bu;
    x ^= x >> 16;
    return x;
}

uint32_t vp_ref_seed_next(uint32_t seed) { return lowbias32(seed + 0x9e3779b9u); }

bool vp_ref_dropout_keep(uint32_t seed, uint64_t i, double p)
{
    uint32_t h = lowbias32(seed ^ lowbias32((uint32_t)i + 0x9e3779b9u));
    return (double)(h >> 8) * (1.0 / 16777216.0) >= (double)(float)p;
}

void vp_ref_dropout(const double *x, uint32_t seed, double p, double *y, int64_t n)
{
    double s = 1.0 / (1.0 - (double)(float)p);
    for (int64_t i = 0; i < n; i++)
        y[i] = vp_ref_dropout_keep(seed, (uint64_t)i, p) ? x[i] * s : 0.0;
}

void vp_ref_rand(uint32_t seed, uint32_t salt, double *y, int64_t n)
{
    for (int64_t i = 0; i < n; i++) {
        uint32_t h = lowbias32((seed ^ salt) ^ lowbias32((uint32_t)i + 0x9e3779b9u));
        y[i] = (double)(h >> 8) * (1.0 / 16777216.0);
    }
}

void vp_ref_logit_mask(const double *x, double *y, int64_t rows, int64_t C)
{
    for (int64_t r = 0; r < rows; r++) {
        bool any = false;
        for (int64_t c = 0; c < C; c++)
            any |= x[r * C + c] >= 0;
        for (int64_t c = 0; c < C; c++)
            y[r * C + c] = any && x[r * C + c] < 0 ? -INFINITY : 0.0;
    }
}

static double sigmoid(double x)
{
    double e = exp(-fabs(x));
    return x >= 0 ? 1.0 / (1.0 + e) : e / (1.0 + e);
}

void vp_ref_act(int act, const double *x, double *y, int64_t n)
{
    if (act == 0)
        vp_ref_relu(x, y, n);
    else if (act == 1)
        vp_ref_gelu(x, y, n);
    else
        for (int64_t i = 0; i < n; i++)
            y[i] = act == 2   ? sigmoid(x[i])
                   : act == 3 ? fmax(x[i], 0.0) + log1p(exp(-fabs(x[i])))
                              : x[i] * sigmoid(x[i]);
}

void vp_ref_act_backward(int act, const double *x, const double *dy, double *dx, int64_t n,
                         bool accumulate)
{
    if (act == 0) {
        vp_ref_relu_backward(x, dy, dx, n, accumulate);
    } else if (act == 1) {
        vp_ref_gelu_backward(x, dy, dx, n, accumulate);
    } else {
        for (int64_t i = 0; i < n; i++) {
            double s = sigmoid(x[i]);
            double d = act == 2 ? s * (1 - s) : act == 3 ? s : s + x[i] * s * (1 - s);
            put(&dx[i], d * dy[i], accumulate);
        }
    }
}

void vp_ref_layernorm(const double *x, const double *gamma, const double *beta, double eps,
                      double *y, double *mean, double *rstd, int64_t rows, int64_t C)
{
    for (int64_t r = 0; r < rows; r++) {
        const double *xr = x + r * C;
        double mu = 0, var = 0;
        for (int64_t c = 0; c < C; c++)
            mu += xr[c];
        mu /= (double)C;
        for (int64_t c = 0; c < C; c++)
            var += (xr[c] - mu) * (xr[c] - mu);
        var /= (double)C;
        double rs = 1.0 / sqrt(var + eps);
        for (int64_t c = 0; c < C; c++)
            y[r * C + c] = (xr[c] - mu) * rs * (gamma ? gamma[c] : 1.0) + (beta ? beta[c] : 0.0);
        if (mean)
            mean[r] = mu;
        if (rstd)
            rstd[r] = rs;
    }
}

void vp_ref_layernorm_backward(const double *x, const double *gamma, const double *mean,
                               const double *rstd, const double *dy, double *dx, double *dgamma,
                               double *dbeta, int64_t rows, int64_t C, bool accumulate)
{
    if (!accumulate) {
        for (int64_t c = 0; c < C; c++) {
            if (dgamma)
                dgamma[c] = 0;
            if (dbeta)
                dbeta[c] = 0;
        }
    }
    for (int64_t r = 0; r < rows; r++) {
        const double *xr = x + r * C, *dyr = dy + r * C;
        double sg = 0, sgx = 0;
        for (int64_t c = 0; c < C; c++) {
            double xh = (xr[c] - mean[r]) * rstd[r], g = dyr[c] * (gamma ? gamma[c] : 1.0);
            sg += g;
            sgx += g * xh;
            if (dgamma)
                dgamma[c] += dyr[c] * xh;
            if (dbeta)
                dbeta[c] += dyr[c];
        }
        sg /= (double)C;
        sgx /= (double)C;
        for (int64_t c = 0; c < C; c++) {
            double xh = (xr[c] - mean[r]) * rstd[r], g = dyr[c] * (gamma ? gamma[c] : 1.0);
            put(&dx[r * C + c], rstd[r] * (g - sg - xh * sgx), accumulate);
        }
    }
}

void vp_ref_softmax(const double *x, double *y, int64_t rows, int64_t C)
{
    for (int64_t r = 0; r < rows; r++) {
        const double *xr = x + r * C;
        double *yr = y + r * C;
        double m = -INFINITY, s = 0;
        for (int64_t c = 0; c < C; c++)
            m = xr[c] > m ? xr[c] : m;
        if (m == -INFINITY) { /* fully masked row */
            for (int64_t c = 0; c < C; c++)
                yr[c] = 0;
            continue;
        }
        for (int64_t c = 0; c < C; c++)
            s += exp(xr[c] - m);
        for (int64_t c = 0; c < C; c++)
            yr[c] = exp(xr[c] - m) / s;
    }
}

void vp_ref_softmax_backward(const double *y, const double *dy, double *dx, int64_t rows,
                             int64_t C, bool accumulate)
{
    for (int64_t r = 0; r < rows; r++) {
        const double *yr = y + r * C, *dyr = dy + r * C;
        double s = 0;
        for (int64_t c = 0; c < C; c++)
            s += dyr[c] * yr[c];
        for (int64_t c = 0; c < C; c++)
            put(&dx[r * C + c], yr[c] * (dyr[c] - s), accumulate);
    }
}

void vp_ref_sum_rows(const double *x, double *y, int64_t rows, int64_t C)
{
    for (int64_t r = 0; r < rows; r++) {
        double s = 0;
        for (int64_t c = 0; c < C; c++)
            s += x[r * C + c];
        y[r] = s;
    }
}

void vp_ref_mean_rows(const double *x, double *y, int64_t rows, int64_t C)
{
    vp_ref_sum_rows(x, y, rows, C);
    for (int64_t r = 0; r < rows; r++)
        y[r] /= (double)C;
}

void vp_ref_sum_all(const double *x, double *y, int64_t n)
{
    vp_ref_sum_rows(x, y, 1, n);
}

void vp_ref_mean_all(const double *x, double *y, int64_t n)
{
    vp_ref_mean_rows(x, y, 1, n);
}

void vp_ref_broadcast_rows(const double *dy, double *dx, int64_t rows, int64_t C, double scale,
                           bool accumulate)
{
    for (int64_t r = 0; r < rows; r++)
        for (int64_t c = 0; c < C; c++)
            put(&dx[r * C + c], scale * dy[r], accumulate);
}

void vp_ref_broadcast_all(const double *dy, double *dx, int64_t n, double scale, bool accumulate)
{
    vp_ref_broadcast_rows(dy, dx, 1, n, scale, accumulate);
}

/* The scores of row (b, h, i): s[j] = scale q . k + bias; returns the
 * softmax of them into pr (Nk), all 0 for a fully masked row. */
static void attn_row(const vp_ref_attn_dims *d, const double *q, const double *k,
                     const double *bias, int64_t b, int64_t h, int64_t i, double *pr)
{
    int64_t D = d->H * d->Dh;
    const double *qr = q + (b * d->Nq + i) * D + h * d->Dh;
    const double *br = bias ? bias + (((b % d->M) * d->Hb + (d->Hb == 1 ? 0 : h)) * d->Nq + i) *
                                         d->Nk
                            : NULL;
    for (int64_t j = 0; j < d->Nk; j++) {
        const double *kr = k + (b * d->Nk + j) * D + h * d->Dh;
        double s = 0;
        for (int64_t c = 0; c < d->Dh; c++)
            s += qr[c] * kr[c];
        pr[j] = d->scale * s + (br ? br[j] : 0.0);
    }
}

void vp_ref_attention(const vp_ref_attn_dims *d, const double *q, const double *k,
                      const double *v, const double *bias, double *out, double *lse)
{
    int64_t D = d->H * d->Dh;
    double *s = malloc((size_t)d->Nk * sizeof *s), *pr = malloc((size_t)d->Nk * sizeof *pr);
    if (!s || !pr) {
        free(s);
        free(pr);
        return;
    }
    for (int64_t b = 0; b < d->B; b++)
        for (int64_t h = 0; h < d->H; h++)
            for (int64_t i = 0; i < d->Nq; i++) {
                attn_row(d, q, k, bias, b, h, i, s);
                vp_ref_softmax(s, pr, 1, d->Nk);
                double m = -INFINITY, sum = 0;
                for (int64_t j = 0; j < d->Nk; j++)
                    m = s[j] > m ? s[j] : m;
                for (int64_t j = 0; m != -INFINITY && j < d->Nk; j++)
                    sum += exp(s[j] - m);
                if (lse)
                    lse[(b * d->H + h) * d->Nq + i] = m == -INFINITY ? INFINITY : m + log(sum);
                double *orow = out + (b * d->Nq + i) * D + h * d->Dh;
                for (int64_t c = 0; c < d->Dh; c++) {
                    double a = 0;
                    for (int64_t j = 0; j < d->Nk; j++)
                        a += pr[j] * v[(b * d->Nk + j) * D + h * d->Dh + c];
                    orow[c] = a;
                }
            }
    free(s);
    free(pr);
}

void vp_ref_attention_backward(const vp_ref_attn_dims *d, const double *q, const double *k,
                               const double *v, const double *bias, const double *dout,
                               double *dq, double *dk, double *dv, double *dbias,
                               bool accumulate)
{
    int64_t D = d->H * d->Dh, nq = d->B * d->Nq * D, nk = d->B * d->Nk * D;
    int64_t nb = d->M * d->Hb * d->Nq * d->Nk;
    double *s = malloc((size_t)d->Nk * sizeof *s), *pr = malloc((size_t)d->Nk * sizeof *pr);
    double *ds = malloc((size_t)d->Nk * sizeof *ds);
    double *gq = calloc((size_t)nq, sizeof *gq), *gk = calloc((size_t)nk, sizeof *gk);
    double *gv = calloc((size_t)nk, sizeof *gv);
    double *gb = calloc((size_t)(nb ? nb : 1), sizeof *gb);
    if (!s || !pr || !ds || !gq || !gk || !gv || !gb)
        goto out;
    for (int64_t b = 0; b < d->B; b++)
        for (int64_t h = 0; h < d->H; h++)
            for (int64_t i = 0; i < d->Nq; i++) {
                attn_row(d, q, k, bias, b, h, i, s);
                vp_ref_softmax(s, pr, 1, d->Nk);
                const double *g = dout + (b * d->Nq + i) * D + h * d->Dh;
                /* dp_j = g . v_j; ds_j = p_j (dp_j - sum_l p_l dp_l) */
                double dot = 0;
                for (int64_t j = 0; j < d->Nk; j++) {
                    const double *vr = v + (b * d->Nk + j) * D + h * d->Dh;
                    double dp = 0;
                    for (int64_t c = 0; c < d->Dh; c++) {
                        dp += g[c] * vr[c];
                        gv[(b * d->Nk + j) * D + h * d->Dh + c] += pr[j] * g[c];
                    }
                    ds[j] = dp;
                    dot += pr[j] * dp;
                }
                for (int64_t j = 0; j < d->Nk; j++) {
                    double sj = pr[j] * (ds[j] - dot);
                    int64_t qo = (b * d->Nq + i) * D + h * d->Dh, ko = (b * d->Nk + j) * D + h * d->Dh;
                    for (int64_t c = 0; c < d->Dh; c++) {
                        gq[qo + c] += d->scale * sj * k[ko + c];
                        gk[ko + c] += d->scale * sj * q[qo + c];
                    }
                    if (bias)
                        gb[(((b % d->M) * d->Hb + (d->Hb == 1 ? 0 : h)) * d->Nq + i) * d->Nk + j] += sj;
                }
            }
    for (int64_t x = 0; x < nq; x++)
        put(&dq[x], gq[x], accumulate);
    for (int64_t x = 0; x < nk; x++) {
        put(&dk[x], gk[x], accumulate);
        put(&dv[x], gv[x], accumulate);
    }
    for (int64_t x = 0; dbias && x < nb; x++)
        put(&dbias[x], gb[x], accumulate);
out:
    free(s);
    free(pr);
    free(ds);
    free(gq);
    free(gk);
    free(gv);
    free(gb);
}
