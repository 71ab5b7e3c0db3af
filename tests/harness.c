/*
 * Test harness shared by the Check suites (see harness.h).
 */
#include "harness.h"

#include "graph/graph.h"

#include <dirent.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <stdarg.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

#define MAX_DEV 16

static vp_instance *inst;
static uint32_t n_dev, dev_index[MAX_DEV];
static vp_device *devs[MAX_DEV];
static uint64_t val_before, val_expected, val_total_expected;
static unsigned n_skips;

vp_instance *vt_instance(void)
{
    if (inst)
        return inst;
    vp_instance_opts o = {.validation = true};
    vp_status st = vp_instance_create(&o, &inst);
    if (st) {
        fprintf(stderr, "test harness: %s\n", vp_error_last());
        exit(1);
    }
    const char *spec = getenv("VPEFT_DEVICE");
    if (spec && *spec) {
        uint32_t i;
        if (vp_instance_pick(inst, spec, &i)) {
            fprintf(stderr, "test harness: %s\n", vp_error_last());
            exit(1);
        }
        dev_index[n_dev++] = i;
    } else {
        for (uint32_t i = 0; i < vp_instance_device_count(inst) && n_dev < MAX_DEV; i++)
            if (vp_instance_device_info(inst, i)->usable)
                dev_index[n_dev++] = i;
    }
    if (!vp_instance_validation_enabled(inst))
        printf("note: VK_LAYER_KHRONOS_validation is not installed; tests run without it\n");
    return inst;
}

uint32_t vt_device_count(void)
{
    vt_instance();
    return n_dev;
}

const vp_device_info *vt_device_info(uint32_t i)
{
    return vp_instance_device_info(vt_instance(), dev_index[i]);
}

vp_device *vt_device(uint32_t i)
{
    ck_assert_uint_lt(i, vt_device_count());
    if (!devs[i]) {
        char dir[512];
        snprintf(dir, sizeof dir, "%s/vpeft-test-cache", getenv("TMPDIR") ? getenv("TMPDIR") : "/tmp");
        vp_device_opts o = {.profile = 0, .cache_dir = dir};
        vt_ok(vp_device_create(vt_instance(), dev_index[i], &o, &devs[i]));
    }
    return devs[i];
}

void vt_skip(const char *test, const char *device, const char *reason)
{
    n_skips++;
    printf("SKIP: %s on %s: %s\n", test, device, reason);
}

void vt_add_per_device_(TCase *tc, const TTest *test, const char *name, vt_needs needs)
{
    for (uint32_t d = 0; d < vt_device_count(); d++) {
        const char *why = needs ? needs(vt_device_info(d)) : NULL;
        if (why)
            vt_skip(name, vt_device_info(d)->name, why);
        else
            tcase_add_loop_test(tc, test, (int)d, (int)d + 1);
    }
}

static void val_setup(void)
{
    val_before = vp_instance_validation_errors(vt_instance());
    val_expected = 0;
}

void vt_expect_validation_errors(uint64_t n)
{
    val_expected += n;
    val_total_expected += n;
}

static void val_teardown(void)
{
    uint64_t now = vp_instance_validation_errors(vt_instance()) - val_expected;
    ck_assert_msg(now == val_before, "the validation layer reported %llu error(s) (printed above)",
                  (unsigned long long)(now - val_before));
}

TCase *vt_tcase(const char *name)
{
    TCase *tc = tcase_create(name);
    tcase_add_checked_fixture(tc, val_setup, val_teardown);
    tcase_set_timeout(tc, 300);
    return tc;
}

void vt_rand(float *x, size_t n, uint64_t seed)
{
    uint64_t s = seed * 0x9e3779b97f4a7c15ull + 1;
    for (size_t i = 0; i < n; i++) {
        s ^= s << 13;
        s ^= s >> 7;
        s ^= s << 17;
        x[i] = (float)((double)(s >> 11) / (double)(1ull << 53) * 2.0 - 1.0);
    }
}

double *vt_f64(const float *x, size_t n)
{
    double *d = malloc((n ? n : 1) * sizeof *d);
    ck_assert_ptr_nonnull(d);
    for (size_t i = 0; i < n; i++)
        d[i] = x[i];
    return d;
}

void vt_fd_grad(vt_scalar_fn f, void *ctx, double *x, size_t n, double h, double *grad)
{
    for (size_t i = 0; i < n; i++) {
        double x0 = x[i];
        x[i] = x0 + h;
        double fp = f(x, ctx);
        x[i] = x0 - h;
        double fm = f(x, ctx);
        x[i] = x0;
        grad[i] = (fp - fm) / (2 * h);
    }
}

double vt_rel_err(const double *got, const double *want, size_t n)
{
    double emax = 0, wmax = 1e-12;
    for (size_t i = 0; i < n; i++) {
        if (!isfinite(got[i]))
            return INFINITY;
        double e = fabs(got[i] - want[i]);
        emax = e > emax ? e : emax;
        wmax = fabs(want[i]) > wmax ? fabs(want[i]) : wmax;
    }
    return emax / wmax;
}

void vt_poison(vp_tensor *t)
{
    size_t n = (size_t)vp_tensor_nelem(t);
    float *p = malloc(n * sizeof *p);
    ck_assert_ptr_nonnull(p);
    for (size_t i = 0; i < n; i++)
        p[i] = NAN;
    vt_ok(vp_tensor_upload(t, p, n * sizeof *p));
    free(p);
}

vp_tensor *vt_tensor(vp_device *dev, const char *name, int ndim, const int64_t *shape,
                     const float *data)
{
    vp_tensor *t;
    vt_ok(vp_tensor_create(dev, VP_F32, ndim, shape, name, &t));
    if (data)
        vt_ok(vp_tensor_upload(t, data, vp_tensor_nbytes(t)));
    else
        vt_poison(t);
    return t;
}

float *vt_download(const vp_tensor *t)
{
    float *p = malloc(vp_tensor_nbytes(t));
    ck_assert_ptr_nonnull(p);
    vt_ok(vp_tensor_download(t, p, vp_tensor_nbytes(t)));
    return p;
}

int vt_run(Suite *s)
{
    vt_instance();
    SRunner *sr = srunner_create(s);
    srunner_set_fork_status(sr, CK_NOFORK);
    srunner_run_all(sr, CK_NORMAL);
    int failed = srunner_ntests_failed(sr);
    srunner_free(sr);
    for (uint32_t i = 0; i < MAX_DEV; i++)
        vp_device_destroy(devs[i]);
    uint64_t val = vp_instance_validation_errors(inst) - val_total_expected;
    vp_instance_destroy(inst);
    printf("skipped: %u\n", n_skips);
    if (val) {
        printf("validation errors: %llu\n", (unsigned long long)val);
        failed++;
    }
    return failed ? 1 : 0;
}

typedef struct graph_fd {
    vp_graph_ref *ref;
    vp_gt *loss;
} graph_fd;

static double graph_fd_loss(const double *x, void *ctx)
{
    (void)x; /* perturbed in place inside the reference's data */
    graph_fd *f = ctx;
    vt_ok(vp_graph_ref_forward(f->ref));
    return vp_graph_ref_data(f->ref, f->loss)[0];
}

float vt_check_graph_grads(vp_graph *g, vp_gt *loss, vp_gt *const *leaves, double *const *vals,
                           int n_leaves, double h, double tol, const char *what)
{
    vp_graph_ref *ref;
    vt_ok(vp_graph_ref_create(g, &ref));
    for (int i = 0; i < n_leaves; i++) {
        size_t n = (size_t)vp_gt_nelem(leaves[i]);
        float *f = malloc(n * sizeof *f);
        ck_assert_ptr_nonnull(f);
        for (size_t k = 0; k < n; k++) {
            if (vp_gt_dtype(leaves[i]) == VP_I32) { /* class indices and the like */
                int32_t v = (int32_t)vals[i][k];
                memcpy(&f[k], &v, sizeof v);
            } else {
                f[k] = (float)vals[i][k];
            }
        }
        vt_ok(vp_graph_write(g, leaves[i], f, n * sizeof *f));
        free(f);
        memcpy(vp_graph_ref_data(ref, leaves[i]), vals[i], n * sizeof(double));
    }
    vt_ok(vp_graph_run(g));
    float loss_dev;
    vt_ok(vp_graph_read(g, loss, &loss_dev, sizeof loss_dev));
    vt_ok(vp_graph_ref_forward(ref));
    double loss_ref = vp_graph_ref_data(ref, loss)[0];
    ck_assert_msg(fabs(loss_dev - loss_ref) <= 1e-5 * fabs(loss_ref) + 1e-12,
                  "%s: device loss %.9g, reference %.9g", what, loss_dev, loss_ref);
    /* All gradients first: a tensor whose true gradient is ~0 (a key bias,
     * which softmax ignores) is judged against 1% of the largest gradient
     * of any tensor rather than against its own rounding noise. */
    graph_fd ctx = {ref, loss};
    double *got64[64] = {0}, *fd[64] = {0}, scale = 0;
    ck_assert_int_le(n_leaves, 64);
    for (int i = 0; i < n_leaves; i++) {
        vp_gt *gr = vp_g_grad(leaves[i]);
        if (!gr)
            continue;
        size_t n = (size_t)vp_gt_nelem(leaves[i]);
        float *got = malloc(n * sizeof *got);
        got64[i] = malloc(n * sizeof(double));
        fd[i] = malloc(n * sizeof(double));
        ck_assert(got && got64[i] && fd[i]);
        vt_ok(vp_graph_read(g, gr, got, n * sizeof *got));
        for (size_t k = 0; k < n; k++)
            got64[i][k] = got[k];
        free(got);
        vt_fd_grad(graph_fd_loss, &ctx, vp_graph_ref_data(ref, leaves[i]), n, h, fd[i]);
        for (size_t k = 0; k < n; k++)
            scale = fabs(fd[i][k]) > scale ? fabs(fd[i][k]) : scale;
    }
    for (int i = 0; i < n_leaves; i++) {
        if (!fd[i])
            continue;
        size_t n = (size_t)vp_gt_nelem(leaves[i]);
        double emax = 0, wmax = 1e-2 * scale;
        for (size_t k = 0; k < n; k++) {
            double e = fabs(got64[i][k] - fd[i][k]);
            emax = isfinite(e) && e > emax ? e : isfinite(e) ? emax : INFINITY;
            wmax = fabs(fd[i][k]) > wmax ? fabs(fd[i][k]) : wmax;
        }
        ck_assert_msg(emax <= tol * wmax, "%s: gradient of %s vs finite differences: error %g, "
                      "largest %g (relative %g >= %g)", what, vp_gt_name(leaves[i]), emax, wmax,
                      emax / wmax, tol);
        free(got64[i]), free(fd[i]);
    }
    vp_graph_ref_destroy(ref);
    return loss_dev;
}

/* ---- subprocesses ----------------------------------------------------------------- */

char vt_out[1 << 16], vt_err[1 << 16];

static void slurp(const char *path, char *buf, size_t n)
{
    FILE *f = fopen(path, "rb");
    size_t got = f ? fread(buf, 1, n - 1, f) : 0;
    buf[got] = '\0';
    if (f)
        fclose(f);
}

int vt_sh(const char *fmt, ...)
{
    char cmd[8192], full[9000], o[600], e[600];
    const char *tmp = getenv("TMPDIR") && *getenv("TMPDIR") ? getenv("TMPDIR") : "/tmp";
    va_list ap;
    va_start(ap, fmt);
    int n = vsnprintf(cmd, sizeof cmd, fmt, ap);
    va_end(ap);
    ck_assert_msg(n >= 0 && n < (int)sizeof cmd, "command too long");
    snprintf(o, sizeof o, "%s/vt-sh-%d.out", tmp, (int)getpid());
    snprintf(e, sizeof e, "%s/vt-sh-%d.err", tmp, (int)getpid());
    n = snprintf(full, sizeof full, "(%s) >%s 2>%s", cmd, o, e);
    ck_assert_msg(n >= 0 && n < (int)sizeof full, "command too long");
    int st = system(full);
    slurp(o, vt_out, sizeof vt_out);
    slurp(e, vt_err, sizeof vt_err);
    unlink(o);
    unlink(e);
    return WIFEXITED(st) ? WEXITSTATUS(st) : 128;
}

void vt_rm_rf(const char *d)
{
    DIR *dp = opendir(d);
    if (!dp)
        return;
    struct dirent *e;
    char p[4096];
    while ((e = readdir(dp))) {
        if (!strcmp(e->d_name, ".") || !strcmp(e->d_name, ".."))
            continue;
        snprintf(p, sizeof p, "%s/%s", d, e->d_name);
        struct stat sb;
        if (!lstat(p, &sb) && S_ISDIR(sb.st_mode)) {
            chmod(p, 0700);
            vt_rm_rf(p);
        } else {
            unlink(p);
        }
    }
    closedir(dp);
    rmdir(d);
}

int vt_dir_entries(const char *d)
{
    DIR *dp = opendir(d);
    ck_assert_msg(dp != NULL, "%s: cannot read the directory", d);
    int n = 0;
    struct dirent *e;
    while ((e = readdir(dp)))
        if (strcmp(e->d_name, ".") && strcmp(e->d_name, ".."))
            n++;
    closedir(dp);
    return n;
}
