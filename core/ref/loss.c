/*
 * CPU references for the losses (cross-entropy, BCE with logits, dice) and
 * the optimizer (sum of squares, clip factor, AdamW): the ground truth the
 * kernels in shaders/loss_*.comp and shaders/optim_*.comp are tested
 * against. Double precision, no shortcuts beyond the standard stable forms
 * (log-sum-exp with the max subtracted, softplus via log1p).
 */
#include "ref/loss.h"

#include <math.h>

double vp_ref_cross_entropy(const double *x, const int32_t *target, const double *weight,
                            int64_t N, int64_t C)
{
    double num = 0.0, den = 0.0;
    for (int64_t i = 0; i < N; i++) {
        int32_t t = target[i];
        if (t < 0)
            continue;
        if (t >= C)
            return NAN;
        const double *r = x + i * C;
        double m = r[0], s = 0.0;
        for (int64_t c = 1; c < C; c++)
            m = r[c] > m ? r[c] : m;
        for (int64_t c = 0; c < C; c++)
            s += exp(r[c] - m);
        double w = weight ? weight[t] : 1.0;
        num += w * (m + log(s) - r[t]);
        den += w;
    }
    return den != 0.0 ? num / den : NAN;
}

void vp_ref_cross_entropy_backward(const double *x, const int32_t *target, const double *weight,
                                   int64_t N, int64_t C, double dloss, double *dx)
{
    double den = 0.0;
    for (int64_t i = 0; i < N; i++)
        if (target[i] >= 0 && target[i] < C)
            den += weight ? weight[target[i]] : 1.0;
    for (int64_t i = 0; i < N; i++) {
        int32_t t = target[i];
        const double *r = x + i * C;
        double *d = dx + i * C;
        if (t < 0 || t >= C) {
            for (int64_t c = 0; c < C; c++)
                d[c] = t < 0 ? 0.0 : NAN;
            continue;
        }
        double m = r[0], s = 0.0;
        for (int64_t c = 1; c < C; c++)
            m = r[c] > m ? r[c] : m;
        for (int64_t c = 0; c < C; c++)
            s += exp(r[c] - m);
        double scale = den != 0.0 ? dloss * (weight ? weight[t] : 1.0) / den : 0.0;
        for (int64_t c = 0; c < C; c++)
            d[c] = scale * (exp(r[c] - m) / s - (c == t ? 1.0 : 0.0));
    }
}

double vp_ref_bce_logits(const double *x, const double *target, int64_t n)
{
    double s = 0.0;
    for (int64_t k = 0; k < n; k++)
        s += fmax(x[k], 0.0) - x[k] * target[k] + log1p(exp(-fabs(x[k])));
    return s / (double)n;
}

static double sigmoid(double x)
{
    return x >= 0.0 ? 1.0 / (1.0 + exp(-x)) : exp(x) / (1.0 + exp(x));
}

void vp_ref_bce_logits_backward(const double *x, const double *target, int64_t n, double dloss,
                                double *dx)
{
    for (int64_t k = 0; k < n; k++)
        dx[k] = dloss / (double)n * (sigmoid(x[k]) - target[k]);
}

double vp_ref_dice(const double *x, const double *target, int64_t M, int64_t P,
                   double normalizer)
{
    double total = 0.0;
    for (int64_t m = 0; m < M; m++) {
        double a = 0.0, sp = 0.0, st = 0.0;
        for (int64_t j = 0; j < P; j++) {
            double p = sigmoid(x[m * P + j]), t = target[m * P + j];
            a += p * t;
            sp += p;
            st += t;
        }
        total += 1.0 - (2.0 * a + 1.0) / (sp + st + 1.0);
    }
    return total / normalizer;
}

void vp_ref_dice_backward(const double *x, const double *target, int64_t M, int64_t P,
                          double normalizer, double dloss, double *dx)
{
    for (int64_t m = 0; m < M; m++) {
        double a = 0.0, b = 1.0;
        for (int64_t j = 0; j < P; j++) {
            double p = sigmoid(x[m * P + j]), t = target[m * P + j];
            a += p * t;
            b += p + t;
        }
        /* loss_m = 1 - (2a + 1) / b; d/dp_j = -(2 t_j b - (2a + 1)) / b^2 */
        for (int64_t j = 0; j < P; j++) {
            double p = sigmoid(x[m * P + j]), t = target[m * P + j];
            double dp = ((2.0 * a + 1.0) - 2.0 * t * b) / (b * b);
            dx[m * P + j] = dloss / normalizer * dp * p * (1.0 - p);
        }
    }
}

double vp_ref_sqnorm(const double *const *xs, const int64_t *ns, int n_tensors)
{
    double s = 0.0;
    for (int i = 0; i < n_tensors; i++)
        for (int64_t k = 0; k < ns[i]; k++)
            s += xs[i][k] * xs[i][k];
    return s;
}

double vp_ref_clip_coef(double sqnorm, double max_norm)
{
    if (max_norm <= 0.0)
        return 1.0;
    double c = max_norm / (sqrt(sqnorm) + 1e-6);
    return c < 1.0 ? c : 1.0;
}

void vp_ref_adamw(double *w, const double *grad, double *m, double *v, const double *lr_scale,
                  int64_t n, double lr, int step, const vp_ref_adamw_hp *hp, double clip)
{
    double bc1 = 1.0 - pow(hp->beta1, step), bc2 = 1.0 - pow(hp->beta2, step);
    for (int64_t k = 0; k < n; k++) {
        double g = clip * grad[k], lrk = lr * (lr_scale ? lr_scale[k] : 1.0);
        w[k] *= 1.0 - lrk * hp->weight_decay;
        m[k] += (1.0 - hp->beta1) * (g - m[k]);
        v[k] = hp->beta2 * v[k] + (1.0 - hp->beta2) * g * g;
        w[k] -= lrk / bc1 * m[k] / (sqrt(v[k]) / sqrt(bc2) + hp->eps);
    }
}
