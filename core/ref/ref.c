/*
 * CPU reference implementations: the ground truth the Vulkan kernels are
 * tested against.
 */
#include "ref/ref.h"

#include <math.h>

void vp_ref_matmul(const double *a, bool ta, const double *b, bool tb, double *c, int64_t batch,
                   int64_t M, int64_t N, int64_t K, int64_t sa, int64_t sb, int64_t sc)
{
    for (int64_t z = 0; z < batch; z++) {
        const double *az = a + z * sa, *bz = b + z * sb;
        double *cz = c + z * sc;
        for (int64_t m = 0; m < M; m++)
            for (int64_t n = 0; n < N; n++) {
                double acc = 0.0;
                for (int64_t k = 0; k < K; k++)
                    acc += (ta ? az[k * M + m] : az[m * K + k]) *
                           (tb ? bz[n * K + k] : bz[k * N + n]);
                cz[m * N + n] = acc;
            }
    }
}

void vp_ref_add(const double *a, const double *b, double *out, int64_t n, int64_t nb)
{
    for (int64_t i = 0; i < n; i++)
        out[i] = a[i] + b[i % nb];
}

void vp_ref_mul(const double *a, const double *b, double *out, int64_t n, int64_t nb)
{
    for (int64_t i = 0; i < n; i++)
        out[i] = a[i] * b[i % nb];
}

void vp_ref_scale(const double *a, double alpha, double *out, int64_t n)
{
    for (int64_t i = 0; i < n; i++)
        out[i] = alpha * a[i];
}

void vp_ref_fill(double *out, double value, int64_t n)
{
    for (int64_t i = 0; i < n; i++)
        out[i] = value;
}

double vp_ref_nmse(const float *got, const double *want, size_t n)
{
    double num = 0.0, den = 0.0;
    for (size_t i = 0; i < n; i++) {
        if (!isfinite(got[i]))
            return INFINITY;
        double d = (double)got[i] - want[i];
        num += d * d;
        den += want[i] * want[i];
    }
    return den > 0.0 ? num / den : num / (n ? (double)n : 1.0);
}
