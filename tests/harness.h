/*
 * Shared test harness for the Check suites: one Vulkan instance with the
 * validation layer when installed, the devices under test (every usable
 * device, or the one VPEFT_DEVICE names), random inputs, poisoned outputs,
 * NMSE checks, and skips that are reported as skips, not passes.
 *
 *     static void t_fill(int d) { vp_device *dev = vt_device(d); ... }
 *     START_TEST(test_fill) { t_fill(_i); } END_TEST
 *     vt_add_per_device(tc, test_fill, NULL);    // on every device
 *     return vt_run(suite);                              // from main()
 */
#ifndef VP_TEST_HARNESS_H
#define VP_TEST_HARNESS_H

#include <check.h>
#include <stdint.h>
#include <stdio.h>

#include "ops/ops.h"
#include "ref/ref.h"
#include "runtime/runtime.h"

/* The shared instance (created on first use, validation on when present). */
vp_instance *vt_instance(void);
/* Devices under test; vt_device(i) is created on first use and cached. */
uint32_t vt_device_count(void);
vp_device *vt_device(uint32_t i);
const vp_device_info *vt_device_info(uint32_t i);

/* Predicate for vt_add_per_device: NULL when device i can run the test,
 * else the reason it cannot (a static string). */
typedef const char *(*vt_needs)(const vp_device_info *d);

/* Register a loop test once per device under test (_i = device number).
 * Where needs() gives a reason the test is not registered for that device
 * and a skip is recorded and printed instead. */
#define vt_add_per_device(tc, fn, needs) vt_add_per_device_(tc, fn, #fn, needs)
void vt_add_per_device_(TCase *tc, const TTest *test, const char *name, vt_needs needs);
/* Record a skip decided inside a test (reported, not counted as a pass by
 * tests/run.sh). */
void vt_skip(const char *test, const char *device, const char *reason);

/* Checked fixture: fails the test if the validation layer reported an
 * error while it ran. Added by vt_tcase(). */
TCase *vt_tcase(const char *name);
/* A test that provokes validation errors on purpose declares how many. */
void vt_expect_validation_errors(uint64_t n);

/* Deterministic uniform values in [-1, 1). */
void vt_rand(float *x, size_t n, uint64_t seed);
/* A new malloc'd double copy of x, for the CPU references. */
double *vt_f64(const float *x, size_t n);

/* Finite differences, for checking the references' backward functions:
 * grad[i] = (f(x + h e_i) - f(x - h e_i)) / 2h, with x perturbed in place and
 * restored. f is usually sum(forward(x) * g) for a fixed random g. */
typedef double (*vt_scalar_fn)(const double *x, void *ctx);
void vt_fd_grad(vt_scalar_fn f, void *ctx, double *x, size_t n, double h, double *grad);
/* max |got - want| / max(max |want|, 1e-12): the error relative to the
 * largest expected magnitude. */
double vt_rel_err(const double *got, const double *want, size_t n);
#define vt_assert_rel_close(got, want, n, tol, ...)                                            \
    do {                                                                                        \
        double err_ = vt_rel_err((got), (want), (n));                                           \
        if (!(err_ < (tol))) {                                                                  \
            char ctx_[512];                                                                     \
            snprintf(ctx_, sizeof ctx_, __VA_ARGS__);                                           \
            ck_abort_msg("%s: relative error %g >= %g", ctx_, err_, (double)(tol));             \
        }                                                                                       \
    } while (0)
/* A tensor holding host data (NULL: poisoned with NaN). */
vp_tensor *vt_tensor(vp_device *dev, const char *name, int ndim, const int64_t *shape,
                     const float *data);
void vt_poison(vp_tensor *t);
/* Download into a new malloc'd buffer. */
float *vt_download(const vp_tensor *t);

/* Assert (with context) that got matches want: NMSE < tol, no NaN. */
#define vt_assert_close(got, want, n, tol, ...)                                                \
    do {                                                                                        \
        double nmse_ = vp_ref_nmse((got), (want), (n));                                         \
        if (!(nmse_ < (tol))) {                                                                 \
            char ctx_[512];                                                                     \
            snprintf(ctx_, sizeof ctx_, __VA_ARGS__);                                           \
            ck_abort_msg("%s: NMSE %g >= %g", ctx_, nmse_, (double)(tol));                      \
        }                                                                                       \
    } while (0)

/* Subprocesses: `sh -c` the formatted command with its stdout and stderr
 * captured into vt_out and vt_err (NUL-terminated, cut at 64 KiB); returns
 * the exit status (128 when a signal ended it). Capture files go to
 * $TMPDIR (run.sh gives each run its own). */
extern char vt_out[1 << 16], vt_err[1 << 16];
int vt_sh(const char *fmt, ...) __attribute__((format(printf, 1, 2)));
#define vt_assert_has(buf, s)                                                                   \
    ck_assert_msg(strstr((buf), (s)) != NULL, "expected '%s' in:\n%s", (s), (buf))

/* Entries of directory d other than . and .. (fails the test when d
 * cannot be read). */
int vt_dir_entries(const char *d);
/* Remove a directory tree (made writable first); missing is fine. */
void vt_rm_rf(const char *dir);

/* Assert that a call fails with status and exactly the message msg. */
#define vt_expect_err(call, status, msg)                                                        \
    do {                                                                                        \
        ck_assert_int_eq((call), (status));                                                     \
        ck_assert_str_eq(vp_error_last(), (msg));                                               \
    } while (0)

/* Assert a vp_status is VP_OK, printing vp_error_last() otherwise. */
#define vt_ok(expr)                                                                             \
    do {                                                                                        \
        vp_status st_ = (expr);                                                                 \
        ck_assert_msg(st_ == VP_OK, "%s -> %d: %s", #expr, (int)st_, vp_error_last());           \
    } while (0)

/* Whole-graph gradient check. g is compiled with loss differentiated;
 * leaves[i] (inputs and parameters) get vals[i] (doubles, exactly
 * representable as floats), written to the device and to the graph's
 * reference executor. Runs the graph once, checks the loss against the
 * reference (relative 1e-5), and every trainable parameter's gradient
 * against central differences (step h) of the reference loss: the largest
 * error below tol times the tensor's largest gradient (at least 1% of the
 * largest gradient of all: a gradient that is ~0 by symmetry is not judged
 * against its rounding noise). At most 64 leaves. Returns the device loss. */
struct vp_graph;
struct vp_gt;
float vt_check_graph_grads(struct vp_graph *g, struct vp_gt *loss, struct vp_gt *const *leaves,
                           double *const *vals, int n_leaves, double h, double tol,
                           const char *what);

/* Run the suite without forking (Vulkan state does not survive fork),
 * release devices, print the skip count for tests/run.sh, return the exit
 * status. */
int vt_run(Suite *s);

#endif
