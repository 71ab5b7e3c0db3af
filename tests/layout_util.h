/*
 * Helpers shared by check_layout.c and check_vision.c: i32 tensors, one-op
 * command buffers, exact comparisons for ops that only move values, the
 * expected result of `accumulate` for them, and the finite-difference check
 * of a reference backward.
 *
 *     vp_cmd *cmd = lt_begin(dev);
 *     vt_ok(vp_op_slice(cmd, x, 1, 2, y));
 *     lt_submit(cmd);                              // submits and destroys
 *     lt_assert_exact(got, want, n, "slice %s", what);
 */
#ifndef VP_TEST_LAYOUT_UTIL_H
#define VP_TEST_LAYOUT_UTIL_H

#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "harness.h"

static inline vp_tensor *lt_i32(vp_device *dev, const char *name, int ndim, const int64_t *shape,
                                const int32_t *data)
{
    vp_tensor *t;
    vt_ok(vp_tensor_create(dev, VP_I32, ndim, shape, name, &t));
    if (data) {
        vt_ok(vp_tensor_upload(t, data, vp_tensor_nbytes(t)));
    } else {
        size_t n = (size_t)vp_tensor_nelem(t);
        int32_t *p = malloc(n * sizeof *p);
        for (size_t i = 0; i < n; i++)
            p[i] = INT32_MIN + 12345; /* poison */
        vt_ok(vp_tensor_upload(t, p, n * sizeof *p));
        free(p);
    }
    return t;
}

static inline int32_t *lt_download_i32(const vp_tensor *t)
{
    int32_t *p = malloc(vp_tensor_nbytes(t));
    vt_ok(vp_tensor_download(t, p, vp_tensor_nbytes(t)));
    return p;
}

static inline vp_cmd *lt_begin(vp_device *dev)
{
    vp_cmd *cmd;
    vt_ok(vp_cmd_create(dev, &cmd));
    vt_ok(vp_cmd_begin(cmd));
    return cmd;
}

static inline void lt_submit(vp_cmd *cmd)
{
    vt_ok(vp_cmd_submit(cmd));
    vp_cmd_destroy(cmd);
}

/* A random f32 tensor and its values (caller frees *host). */
static inline vp_tensor *lt_rand(vp_device *dev, const char *name, int ndim, const int64_t *shape,
                                 uint64_t seed, float **host)
{
    size_t n = 1;
    for (int i = 0; i < ndim; i++)
        n *= (size_t)shape[i];
    float *h = malloc(n * sizeof *h);
    vt_rand(h, n, seed);
    vp_tensor *t = vt_tensor(dev, name, ndim, shape, h);
    if (host)
        *host = h;
    else
        free(h);
    return t;
}

/* Index of the first element where got differs from want rounded to f32
 * (NaN never equals), or -1. */
static inline long lt_first_diff(const float *got, const double *want, size_t n)
{
    for (size_t i = 0; i < n; i++)
        if (!(got[i] == (float)want[i]))
            return (long)i;
    return -1;
}

#define lt_assert_exact(got, want, n, ...)                                                     \
    do {                                                                                        \
        long at_ = lt_first_diff((got), (want), (n));                                           \
        if (at_ >= 0) {                                                                         \
            char ctx_[512];                                                                     \
            snprintf(ctx_, sizeof ctx_, __VA_ARGS__);                                           \
            ck_abort_msg("%s: element %ld is %.9g, want %.9g (exact)", ctx_, at_,              \
                         (double)(got)[at_], (want)[at_]);                                      \
        }                                                                                       \
    } while (0)

/* What `accumulate` must give for an op that moves values: the f32 sum of
 * the initial value and the (exact) gradient, each rounded once. In place. */
static inline void lt_acc_expect(double *want, const float *init, size_t n)
{
    for (size_t i = 0; i < n; i++)
        want[i] = (double)(init[i] + (float)want[i]);
}

/* Finite differences of a reference: f(x) -> y, linear or piecewise
 * linear; checks that grad (the reference backward of g) equals
 * d/dx sum(f(x) * g). */
typedef void (*lt_fwd)(const double *x, double *y, void *ctx);

typedef struct lt_fd {
    lt_fwd f;
    void *ctx;
    const double *g;
    double *y;
    size_t ny;
} lt_fd;

static inline double lt_fd_scalar(const double *x, void *c)
{
    lt_fd *k = c;
    k->f(x, k->y, k->ctx);
    double s = 0.0;
    for (size_t i = 0; i < k->ny; i++)
        s += k->y[i] * k->g[i];
    return s;
}

static inline void lt_check_fd(lt_fwd f, void *ctx, double *x, size_t nx, size_t ny,
                               const double *g, const double *grad, const char *what)
{
    double *y = malloc(ny * sizeof *y), *fd = malloc(nx * sizeof *fd);
    lt_fd k = {f, ctx, g, y, ny};
    vt_fd_grad(lt_fd_scalar, &k, x, nx, 1e-6, fd);
    vt_assert_rel_close(grad, fd, nx, 1e-6, "%s: reference backward vs finite differences",
                        what);
    free(y);
    free(fd);
}

/* Random doubles in [-1, 1) (from vt_rand, so exactly f32 values). */
static inline double *lt_rand64(size_t n, uint64_t seed)
{
    float *f = malloc((n ? n : 1) * sizeof *f);
    vt_rand(f, n, seed);
    double *d = vt_f64(f, n);
    free(f);
    return d;
}

#endif
