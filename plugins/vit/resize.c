/*
 * resize.c - the 1-D weights of the position-embedding resizes of Hugging
 * Face's DINOv2 models, as PyTorch's upsample_bicubic2d (CPU: the
 * separable kernel's HelperInterpCubic) computes them, in double. A 2-D
 * resize of a row-major (G0, G0) grid to (G, G) is then kron(m, m), one
 * constant (G*G, G0*G0) matrix in the graph.
 */
#include <math.h>
#include <string.h>

#include "resize.h"

/* Keys' cubic convolution kernel with parameter A, |x| < 2. */
static double cubic(double x, double a)
{
    x = fabs(x);
    if (x < 1)
        return ((a + 2) * x - (a + 3)) * x * x + 1;
    if (x < 2)
        return ((a * x - 5 * a) * x + 8 * a) * x - 4 * a;
    return 0;
}

static int64_t clamp(int64_t i, int64_t n) { return i < 0 ? 0 : i >= n ? n - 1 : i; }

void vit_resize_1d(vit_resize kind, int64_t n0, int64_t n, double *m)
{
    memset(m, 0, (size_t)(n * n0) * sizeof *m);
    double scale = (double)n0 / (double)n;
    for (int64_t i = 0; i < n; i++) {
        double *row = m + i * n0;
        if (kind == VIT_RESIZE_BICUBIC) {
            /* area_pixel_compute_source_index(cubic): not clamped below 0;
             * taps at floor - 1 .. floor + 2, each index clamped. */
            double src = scale * ((double)i + 0.5) - 0.5, f = floor(src), t = src - f;
            for (int k = 0; k < 4; k++)
                row[clamp((int64_t)f - 1 + k, n0)] += cubic(t + 1 - k, -0.75);
            continue;
        }
        /* _compute_indices_min_size_weights_aa: support 2 (the cubic's),
         * times the scale when shrinking; (int64_t) truncates as C++'s cast. */
        double support = scale >= 1 ? 2 * scale : 2, inv = scale >= 1 ? 1 / scale : 1;
        double center = scale * ((double)i + 0.5), total = 0;
        int64_t lo = (int64_t)(center - support + 0.5), hi = (int64_t)(center + support + 0.5);
        lo = lo < 0 ? 0 : lo;
        hi = hi > n0 ? n0 : hi;
        for (int64_t j = lo; j < hi; j++)
            total += row[j] = cubic(((double)j - center + 0.5) * inv, -0.5);
        if (total != 0)
            for (int64_t j = lo; j < hi; j++)
                row[j] /= total;
    }
}
