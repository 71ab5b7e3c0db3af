/*
 * CPU references for every op, written for clarity, accumulating in double.
 * Used by the tests and by --verify; never on a training path. Shapes and
 * semantics match core/ops exactly (see ops.h).
 */
#ifndef VP_REF_H
#define VP_REF_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

/* c[z] (M, N) = op(a[z]) op(b[z]); a (M, K) or (K, M) when ta; b (K, N) or
 * (N, K) when tb; batch strides in elements, 0 to broadcast. */
void vp_ref_matmul(const float *a, bool ta, const float *b, bool tb, float *c, int64_t batch,
                   int64_t M, int64_t N, int64_t K, int64_t sa, int64_t sb, int64_t sc);
/* out[i] = a[i] + b[i % nb] */
void vp_ref_add(const float *a, const float *b, float *out, int64_t n, int64_t nb);
/* out[i] = a[i] * b[i % nb] */
void vp_ref_mul(const float *a, const float *b, float *out, int64_t n, int64_t nb);
void vp_ref_scale(const float *a, float alpha, float *out, int64_t n);
void vp_ref_fill(float *out, float value, int64_t n);

/* Normalized mean squared error sum((g-w)^2) / sum(w^2) (plain MSE when w
 * is all zero); +inf when any g is NaN or infinite. */
double vp_ref_nmse(const float *got, const float *want, size_t n);

#endif
