/*
 * CPU references for every op, written for clarity, in double precision:
 * the Vulkan kernels are checked against them, and their backward functions
 * against central finite differences of their forward functions, which
 * needs double. Used by the tests and by --verify; never on a training
 * path. Shapes and semantics match core/ops exactly (see ops.h).
 *
 *     double *want = malloc(M * N * sizeof *want);
 *     vp_ref_matmul(a, false, b, true, want, 1, M, N, K, 0, 0, 0);
 *     double nmse = vp_ref_nmse(got_from_device, want, M * N);
 */
#ifndef VP_REF_H
#define VP_REF_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

/* c[z] (M, N) = op(a[z]) op(b[z]); a (M, K) or (K, M) when ta; b (K, N) or
 * (N, K) when tb; batch strides in elements, 0 to broadcast. */
void vp_ref_matmul(const double *a, bool ta, const double *b, bool tb, double *c, int64_t batch,
                   int64_t M, int64_t N, int64_t K, int64_t sa, int64_t sb, int64_t sc);
/* out[i] = a[i] + b[i % nb] */
void vp_ref_add(const double *a, const double *b, double *out, int64_t n, int64_t nb);
/* out[i] = a[i] * b[i % nb] */
void vp_ref_mul(const double *a, const double *b, double *out, int64_t n, int64_t nb);
void vp_ref_scale(const double *a, double alpha, double *out, int64_t n);
void vp_ref_fill(double *out, double value, int64_t n);

/* Normalized mean squared error sum((g-w)^2) / sum(w^2) (plain MSE when w
 * is all zero); +inf when any g is NaN or infinite. */
double vp_ref_nmse(const float *got, const double *want, size_t n);

#endif
