/*
 * nn suite: activations, layer normalization, softmax, reductions and their
 * backward, on every device under test, against the double-precision CPU
 * references (core/ref/nn.c) on random inputs with outputs poisoned (NaN)
 * beforehand; the references' backward against central finite differences
 * of their forward; accumulate on and off; shapes with rows and C of 1, 7,
 * 33, 257 and 1031; fully masked softmax rows; sums of ~1e6 elements;
 * the error messages. The row ops (layernorm, softmax, row sums) in both
 * of their forms: segments of lanes per row, and one row per invocation.
 *
 * Bounds: NMSE < 1e-7 everywhere, as for every op. GELU is additionally
 * held to a max-abs-error bound over a dense grid of [-10, 10]
 * (test_gelu_dense), and the large sums to a relative error bound.
 * NN_PROBE=1 in the environment prints the measured errors of the large
 * sums and of the finite-difference checks.
 */
#include "harness.h"

#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "ops/nn.h"
#include "ref/nn.h"

#define TOL 1e-7

static const int64_t sizes[] = {1, 7, 33, 257, 1031};
#define N_SIZES (sizeof sizes / sizeof sizes[0])

/* ---- helpers ------------------------------------------------------------------ */

static vp_cmd *cmd_begin(vp_device *dev)
{
    vp_cmd *cmd;
    vt_ok(vp_cmd_create(dev, &cmd));
    vt_ok(vp_cmd_begin(cmd));
    return cmd;
}

static void cmd_run(vp_cmd *cmd)
{
    vt_ok(vp_cmd_submit(cmd));
    vp_cmd_destroy(cmd);
}

static float *rand_f(size_t n, uint64_t seed, double scale, double offset)
{
    float *x = malloc((n ? n : 1) * sizeof *x);
    ck_assert_ptr_nonnull(x);
    vt_rand(x, n, seed);
    for (size_t i = 0; i < n; i++)
        x[i] = (float)(x[i] * scale + offset);
    return x;
}

static double *zeros(size_t n)
{
    double *d = calloc(n ? n : 1, sizeof *d);
    ck_assert_ptr_nonnull(d);
    return d;
}

/* A gradient output for an `accumulate` run: with accumulate it holds random
 * data and *want starts as its double copy; without, it is poisoned and
 * *want is zero-filled (the reference overwrites it). */
static vp_tensor *grad_out(vp_device *dev, const char *name, int ndim, const int64_t *shape,
                           bool accumulate, uint64_t seed, double **want)
{
    size_t n = 1;
    for (int i = 0; i < ndim; i++)
        n *= (size_t)shape[i];
    if (!accumulate) {
        *want = zeros(n);
        return vt_tensor(dev, name, ndim, shape, NULL);
    }
    float *h = rand_f(n, seed, 1.0, 0.0);
    *want = vt_f64(h, n);
    vp_tensor *t = vt_tensor(dev, name, ndim, shape, h);
    free(h);
    return t;
}

static void check_tensor(const vp_tensor *t, const double *want, const char *what,
                         const char *dev, int64_t rows, int64_t C, bool acc)
{
    float *got = vt_download(t);
    vt_assert_close(got, want, (size_t)vp_tensor_nelem(t), TOL, "%s: %s rows %lld C %lld%s", dev,
                    what, (long long)rows, (long long)C, acc ? " accumulate" : "");
    free(got);
}

/* ---- activations ------------------------------------------------------------- */

static const char *const act_name[VP_ACT_COUNT] = {"relu", "gelu", "sigmoid", "softplus",
                                                  "silu"};

static void run_act(uint32_t d, vp_act k, int64_t rows, int64_t C, bool acc, bool inplace)
{
    vp_device *dev = vt_device(d);
    const char *dn = vt_device_info(d)->name, *name = act_name[k];
    size_t n = (size_t)(rows * C);
    int64_t shape[2] = {rows, C};
    /* [-4, 4): gelu's tails and both erf branches */
    float *hx = rand_f(n, (uint64_t)(rows * 31 + C), 4.0, 0.0);
    float *hdy = rand_f(n, (uint64_t)(rows + C * 7 + 1), 1.0, 0.0);
    hx[0] = 0.0f; /* relu's gradient at 0 is 0 */
    double *dx = vt_f64(hx, n), *ddy = vt_f64(hdy, n), *want = zeros(n);
    vp_tensor *x = vt_tensor(dev, "x", 2, shape, hx), *dy = vt_tensor(dev, "dy", 2, shape, hdy);

    /* forward, y = x when in place */
    vp_tensor *y = inplace ? x : vt_tensor(dev, "y", 2, shape, NULL);
    vp_cmd *cmd = cmd_begin(dev);
    vp_ref_act(k, dx, want, (int64_t)n);
    if (k == VP_ACT_RELU)
        vt_ok(vp_op_relu(cmd, x, y));
    else if (k == VP_ACT_GELU)
        vt_ok(vp_op_gelu(cmd, x, y));
    else
        vt_ok(vp_op_act(cmd, k, x, y));
    cmd_run(cmd);
    char what[64];
    snprintf(what, sizeof what, "%s%s", name, inplace ? " in place" : "");
    check_tensor(y, want, what, dn, rows, C, false);
    if (inplace)
        vt_ok(vp_tensor_upload(x, hx, n * sizeof *hx));
    else
        vp_tensor_destroy(y);

    /* backward, dx = dy when in place (then its old value is dy) */
    double *wdx;
    vp_tensor *gx;
    if (inplace) {
        gx = dy;
        wdx = vt_f64(hdy, n);
    } else {
        gx = grad_out(dev, "dx", 2, shape, acc, (uint64_t)(rows * 5 + C), &wdx);
    }
    cmd = cmd_begin(dev);
    vp_ref_act_backward(k, dx, ddy, wdx, (int64_t)n, acc);
    if (k == VP_ACT_RELU)
        vt_ok(vp_op_relu_backward(cmd, x, dy, gx, acc));
    else if (k == VP_ACT_GELU)
        vt_ok(vp_op_gelu_backward(cmd, x, dy, gx, acc));
    else
        vt_ok(vp_op_act_backward(cmd, k, x, dy, gx, acc));
    cmd_run(cmd);
    snprintf(what, sizeof what, "%s_backward", name);
    check_tensor(gx, wdx, what, dn, rows, C, acc);
    if (!inplace)
        vp_tensor_destroy(gx);
    vp_tensor_destroy(x);
    vp_tensor_destroy(dy);
    free(hx);
    free(hdy);
    free(dx);
    free(ddy);
    free(want);
    free(wdx);
}

START_TEST(test_act)
{
    for (int k = 0; k < VP_ACT_COUNT; k++)
        for (size_t r = 0; r < N_SIZES; r++)
            for (size_t c = 0; c < N_SIZES; c += 2)
                for (int acc = 0; acc < 2; acc++)
                    run_act((uint32_t)_i, (vp_act)k, sizes[r] > 300 ? 3 : sizes[r], sizes[c],
                            acc, false);
    for (int k = 0; k < VP_ACT_COUNT; k++) {
        run_act((uint32_t)_i, (vp_act)k, 33, 7, false, true);
        /* a multiple of 4 elements: four per invocation (VEC4) */
        for (int acc = 0; acc < 2; acc++)
            run_act((uint32_t)_i, (vp_act)k, 4, 33, acc, false);
        run_act((uint32_t)_i, (vp_act)k, 36, 7, false, true);
    }
}
END_TEST

/* GELU and its derivative on a dense grid of [-10, 10] (step 1e-4) against
 * the double reference, element by element, not just the NMSE:
 *     |got - want| <= 1.5e-6 * max(|want|, 1/16)
 * i.e. relative for |want| >= 1/16 and absolute (9.4e-8) below, and 2e-6
 * for the derivative, which crosses 0 at x = -0.75 as the difference of
 * Phi(x) and -x phi(x), both ~0.2 there. The erf and exp of shaders/nn.glsl
 * (about 1 ulp each) give 6.4e-7 and 1.15e-6 on lavapipe (6.6e-7 and 8.7e-7
 * simulated in C with fused fma); the Abramowitz-Stegun 7.1.26 erf
 * (|error| <= 1.5e-7) gives 3.4e-6 and 2.4e-6 and fails. The max absolute
 * errors are printed. */
static const double gelu_tol[2] = {1.5e-6, 2e-6};
START_TEST(test_gelu_dense)
{
    vp_device *dev = vt_device((uint32_t)_i);
    const char *dn = vt_device_info((uint32_t)_i)->name;
    const int64_t n = 200001;
    float *hx = malloc((size_t)n * sizeof *hx), *ones = malloc((size_t)n * sizeof *ones);
    for (int64_t i = 0; i < n; i++) {
        hx[i] = (float)(-10.0 + 20.0 * (double)i / (double)(n - 1));
        ones[i] = 1.0f;
    }
    double *dx = vt_f64(hx, (size_t)n), *d1 = vt_f64(ones, (size_t)n);
    double *wy = zeros((size_t)n), *wd = zeros((size_t)n);
    vp_ref_gelu(dx, wy, n);
    vp_ref_gelu_backward(dx, d1, wd, n, false);
    int64_t shape[1] = {n};
    vp_tensor *x = vt_tensor(dev, "x", 1, shape, hx), *g = vt_tensor(dev, "dy", 1, shape, ones);
    vp_tensor *y = vt_tensor(dev, "y", 1, shape, NULL), *gx = vt_tensor(dev, "dx", 1, shape, NULL);
    vp_cmd *cmd = cmd_begin(dev);
    vt_ok(vp_op_gelu(cmd, x, y));
    vt_ok(vp_op_gelu_backward(cmd, x, g, gx, false));
    cmd_run(cmd);
    float *got[2] = {vt_download(y), vt_download(gx)};
    const double *want[2] = {wy, wd};
    const char *what[2] = {"gelu", "gelu'"};
    double worst[2] = {0, 0}, abs_max[2] = {0, 0};
    int64_t at[2] = {0, 0};
    for (int k = 0; k < 2; k++)
        for (int64_t i = 0; i < n; i++) {
            double e = fabs(got[k][i] - want[k][i]), r = e / fmax(fabs(want[k][i]), 1.0 / 16);
            if (!(r <= worst[k])) { /* NaN counts */
                worst[k] = r;
                at[k] = i;
            }
            abs_max[k] = fmax(abs_max[k], e);
        }
    printf("%s: gelu on [-10, 10]: max abs error %.3g, derivative %.3g; max error / max(|want|, "
           "1/16) %.3g, %.3g\n", dn, abs_max[0], abs_max[1], worst[0], worst[1]);
    for (int k = 0; k < 2; k++)
        ck_assert_msg(worst[k] < gelu_tol[k], "%s: %s(%.9g) = %.9g, want %.9g: error %.3g * "
                      "max(|want|, 1/16)", dn, what[k], hx[at[k]], got[k][at[k]],
                      want[k][at[k]], worst[k]);
    free(got[0]);
    free(got[1]);
    vp_tensor_destroy(x);
    vp_tensor_destroy(g);
    vp_tensor_destroy(y);
    vp_tensor_destroy(gx);
    free(hx);
    free(ones);
    free(dx);
    free(d1);
    free(wy);
    free(wd);
}
END_TEST

/* ---- layer normalization ---------------------------------------------------- */

typedef struct ln_case {
    int64_t rows, C;
    double offset;     /* added to every x: a large common mean */
    bool gamma, beta;  /* affine parameters given */
    bool stats;        /* forward saves mean and rstd */
    bool dgamma, dbeta;
    bool acc;
} ln_case;

static void run_ln(uint32_t d, const ln_case *k)
{
    vp_device *dev = vt_device(d);
    const char *dn = vt_device_info(d)->name;
    int64_t rows = k->rows, C = k->C;
    size_t n = (size_t)(rows * C);
    int64_t shape[2] = {rows, C}, cs[1] = {C}, rs[1] = {rows};
    float eps = 1e-5f;
    float *hx = rand_f(n, (uint64_t)(rows * 13 + C), 1.0, k->offset);
    float *hg = rand_f((size_t)C, (uint64_t)C + 3, 0.5, 1.0);
    float *hb = rand_f((size_t)C, (uint64_t)C + 4, 1.0, 0.0);
    float *hdy = rand_f(n, (uint64_t)(rows + C * 3 + 2), 1.0, 0.0);
    double *dx = vt_f64(hx, n), *dg = vt_f64(hg, (size_t)C), *db = vt_f64(hb, (size_t)C);
    double *ddy = vt_f64(hdy, n);
    double *wy = zeros(n), *wm = zeros((size_t)rows), *wr = zeros((size_t)rows);
    vp_ref_layernorm(dx, k->gamma ? dg : NULL, k->beta ? db : NULL, eps, wy, wm, wr, rows, C);

    vp_tensor *x = vt_tensor(dev, "x", 2, shape, hx);
    vp_tensor *g = k->gamma ? vt_tensor(dev, "gamma", 1, cs, hg) : NULL;
    vp_tensor *b = k->beta ? vt_tensor(dev, "beta", 1, cs, hb) : NULL;
    vp_tensor *y = vt_tensor(dev, "y", 2, shape, NULL);
    vp_tensor *m = vt_tensor(dev, "mean", 1, rs, NULL), *r = vt_tensor(dev, "rstd", 1, rs, NULL);
    vp_cmd *cmd = cmd_begin(dev);
    vt_ok(vp_op_layernorm(cmd, x, g, b, eps, y, k->stats ? m : NULL, k->stats ? r : NULL));
    cmd_run(cmd);
    char what[96];
    snprintf(what, sizeof what, "layernorm%s%s%s offset %g", k->gamma ? " gamma" : "",
             k->beta ? " beta" : "", k->stats ? " stats" : "", k->offset);
    check_tensor(y, wy, what, dn, rows, C, false);
    if (!k->stats) {
        /* not written: still NaN */
        float *gm = vt_download(m);
        ck_assert_msg(isnan(gm[0]), "%s: %s wrote mean", dn, what);
        free(gm);
        goto out;
    }
    check_tensor(m, wm, "layernorm mean", dn, rows, C, false);
    check_tensor(r, wr, "layernorm rstd", dn, rows, C, false);

    /* Backward from the device's saved statistics (the op's inputs): the
     * forward's precision is checked above, this checks the backward's. */
    float *fm = vt_download(m), *fr = vt_download(r);
    double *sm = vt_f64(fm, (size_t)rows), *sr = vt_f64(fr, (size_t)rows);
    double *wdx, *wdg = NULL, *wdb = NULL;
    vp_tensor *dy = vt_tensor(dev, "dy", 2, shape, hdy);
    vp_tensor *gx = grad_out(dev, "dx", 2, shape, k->acc, 5, &wdx);
    vp_tensor *gg = k->dgamma ? grad_out(dev, "dgamma", 1, cs, k->acc, 6, &wdg) : NULL;
    vp_tensor *gb = k->dbeta ? grad_out(dev, "dbeta", 1, cs, k->acc, 7, &wdb) : NULL;
    vp_ref_layernorm_backward(dx, k->gamma ? dg : NULL, sm, sr, ddy, wdx, wdg, wdb, rows, C,
                              k->acc);
    cmd = cmd_begin(dev);
    vt_ok(vp_op_layernorm_backward(cmd, x, g, m, r, dy, gx, gg, gb, k->acc));
    cmd_run(cmd);
    snprintf(what, sizeof what, "layernorm_backward%s offset %g: dx", k->gamma ? " gamma" : "",
             k->offset);
    check_tensor(gx, wdx, what, dn, rows, C, k->acc);
    if (gg)
        check_tensor(gg, wdg, "layernorm_backward dgamma", dn, rows, C, k->acc);
    if (gb)
        check_tensor(gb, wdb, "layernorm_backward dbeta", dn, rows, C, k->acc);
    vp_tensor_destroy(dy);
    vp_tensor_destroy(gx);
    vp_tensor_destroy(gg);
    vp_tensor_destroy(gb);
    free(fm);
    free(fr);
    free(sm);
    free(sr);
    free(wdx);
    free(wdg);
    free(wdb);
out:
    vp_tensor_destroy(x);
    vp_tensor_destroy(g);
    vp_tensor_destroy(b);
    vp_tensor_destroy(y);
    vp_tensor_destroy(m);
    vp_tensor_destroy(r);
    free(hx);
    free(hg);
    free(hb);
    free(hdy);
    free(dx);
    free(dg);
    free(db);
    free(ddy);
    free(wy);
    free(wm);
    free(wr);
}

START_TEST(test_layernorm)
{
    for (size_t i = 0; i < N_SIZES; i++)
        for (size_t j = 0; j < N_SIZES; j++)
            for (int acc = 0; acc < 2; acc++) {
                ln_case k = {sizes[i], sizes[j], 0.0, true, true, true, true, true, acc};
                run_ln((uint32_t)_i, &k);
            }
}
END_TEST

/* Without affine parameters, without saved statistics, frozen affine
 * (dgamma and/or dbeta NULL), large common offsets, long rows. */
START_TEST(test_layernorm_variants)
{
    const ln_case cases[] = {
        {7, 33, 0.0, false, false, true, false, false, false},
        {7, 33, 0.0, true, false, true, true, false, true},
        {7, 33, 0.0, false, true, true, false, true, false},
        {33, 257, 0.0, true, true, false, false, false, false},
        {33, 257, 0.0, true, true, true, false, false, true},
        {7, 1031, 100.0, true, true, true, true, true, false},
        {7, 1031, 1000.0, true, true, true, true, true, true},
        {3, 4096, 1000.0, true, true, true, true, true, false},
        {2000, 40, 10.0, true, true, true, true, true, true},
        {1, 4099, 0.0, true, true, true, true, true, false},
    };
    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++)
        run_ln((uint32_t)_i, &cases[i]);
}
END_TEST

/* 3-D input; per-row tensors as (B, N) and as (B, N, 1). */
/* The backward with separate flags for dx and the affine gradients (what
 * a graph does: dx written first, dgamma and dbeta always added): each
 * output overwritten or added as its own flag says. */
START_TEST(test_layernorm_split_acc)
{
    vp_device *dev = vt_device((uint32_t)_i);
    const char *dn = vt_device_info((uint32_t)_i)->name;
    enum { R = 7, C = 33 };
    float *hx = rand_f(R * C, 1, 2.0, 0.5), *hg = rand_f(C, 2, 1.0, 1.0);
    float *hdy = rand_f(R * C, 3, 1.0, 0.0), *hold = rand_f(R * C, 4, 1.0, 0.0);
    double *x = vt_f64(hx, R * C), *g = vt_f64(hg, C), *dy = vt_f64(hdy, R * C);
    double mean[R], rstd[R], *y = zeros(R * C);
    vp_ref_layernorm(x, g, NULL, 1e-5, y, mean, rstd, R, C);
    int64_t s2[2] = {R, C};
    vp_tensor *tx = vt_tensor(dev, "x", 2, s2, hx), *tg = vt_tensor(dev, "gamma", 1, (int64_t[]){C}, hg);
    vp_tensor *tdy = vt_tensor(dev, "dy", 2, s2, hdy);
    vp_tensor *ty = vt_tensor(dev, "y", 2, s2, NULL), *tm = vt_tensor(dev, "mean", 1, (int64_t[]){R}, NULL);
    vp_tensor *tr = vt_tensor(dev, "rstd", 1, (int64_t[]){R}, NULL);
    vp_cmd *cmd = cmd_begin(dev);
    vt_ok(vp_op_layernorm(cmd, tx, tg, NULL, 1e-5f, ty, tm, tr));
    cmd_run(cmd);
    for (int k = 0; k < 2; k++) {
        bool acc_dx = k == 1, acc_p = k == 0;
        vp_tensor *tdx = vt_tensor(dev, "dx", 2, s2, acc_dx ? hold : NULL);
        vp_tensor *tdg = vt_tensor(dev, "dgamma", 1, (int64_t[]){C}, acc_p ? hold : NULL);
        vp_tensor *tdb = vt_tensor(dev, "dbeta", 1, (int64_t[]){C}, acc_p ? hold + C : NULL);
        double *wdx = acc_dx ? vt_f64(hold, R * C) : zeros(R * C);
        double *wdg = acc_p ? vt_f64(hold, C) : zeros(C), *wdb = acc_p ? vt_f64(hold + C, C) : zeros(C);
        double *t = zeros(R * C), *tg2 = zeros(C), *tb2 = zeros(C);
        float *gm = vt_download(tm), *gr = vt_download(tr);
        double dm[R], drs[R];
        for (int i = 0; i < R; i++) {
            dm[i] = gm[i];
            drs[i] = gr[i];
        }
        vp_ref_layernorm_backward(x, g, dm, drs, dy, t, tg2, tb2, R, C, false);
        for (int i = 0; i < R * C; i++)
            wdx[i] += t[i];
        for (int i = 0; i < C; i++) {
            wdg[i] += tg2[i];
            wdb[i] += tb2[i];
        }
        cmd = cmd_begin(dev);
        vt_ok(vp_op_layernorm_backward_ex(cmd, tx, tg, tm, tr, tdy, tdx, acc_dx, tdg, tdb, acc_p));
        cmd_run(cmd);
        check_tensor(tdx, wdx, acc_dx ? "layernorm dx added" : "layernorm dx written", dn, R, C, acc_dx);
        check_tensor(tdg, wdg, acc_p ? "dgamma added" : "dgamma written", dn, 1, C, acc_p);
        check_tensor(tdb, wdb, acc_p ? "dbeta added" : "dbeta written", dn, 1, C, acc_p);
        vp_tensor_destroy(tdx);
        vp_tensor_destroy(tdg);
        vp_tensor_destroy(tdb);
        free(wdx);
        free(wdg);
        free(wdb);
        free(t);
        free(tg2);
        free(tb2);
        free(gm);
        free(gr);
    }
    vp_tensor *all[] = {tx, tg, tdy, ty, tm, tr};
    for (size_t i = 0; i < sizeof all / sizeof all[0]; i++)
        vp_tensor_destroy(all[i]);
    free(hx);
    free(hg);
    free(hdy);
    free(hold);
    free(x);
    free(g);
    free(dy);
    free(y);
}
END_TEST

START_TEST(test_layernorm_3d)
{
    vp_device *dev = vt_device((uint32_t)_i);
    const int64_t B = 3, N = 5, C = 33, rows = B * N;
    size_t n = (size_t)(rows * C);
    float *hx = rand_f(n, 77, 1.0, 0.5);
    double *dx = vt_f64(hx, n), *wy = zeros(n), *wm = zeros(rows), *wr = zeros(rows);
    vp_ref_layernorm(dx, NULL, NULL, 1e-6, wy, wm, wr, rows, C);
    vp_tensor *x = vt_tensor(dev, "x", 3, (int64_t[]){B, N, C}, hx);
    vp_tensor *y = vt_tensor(dev, "y", 3, (int64_t[]){B, N, C}, NULL);
    vp_tensor *m = vt_tensor(dev, "mean", 2, (int64_t[]){B, N}, NULL);
    vp_tensor *r = vt_tensor(dev, "rstd", 3, (int64_t[]){B, N, 1}, NULL);
    vp_cmd *cmd = cmd_begin(dev);
    vt_ok(vp_op_layernorm(cmd, x, NULL, NULL, 1e-6f, y, m, r));
    cmd_run(cmd);
    const char *dn = vt_device_info((uint32_t)_i)->name;
    check_tensor(y, wy, "layernorm 3-D", dn, rows, C, false);
    check_tensor(m, wm, "layernorm 3-D mean", dn, rows, C, false);
    check_tensor(r, wr, "layernorm 3-D rstd", dn, rows, C, false);
    vp_tensor_destroy(x);
    vp_tensor_destroy(y);
    vp_tensor_destroy(m);
    vp_tensor_destroy(r);
    free(hx);
    free(dx);
    free(wy);
    free(wm);
    free(wr);
}
END_TEST

/* ---- softmax --------------------------------------------------------------------- */

/* mask: 0 none, 1 every third row fully -inf and some -inf elsewhere */
static void run_softmax(uint32_t d, int64_t rows, int64_t C, double scale, int mask, bool acc)
{
    vp_device *dev = vt_device(d);
    const char *dn = vt_device_info(d)->name;
    size_t n = (size_t)(rows * C);
    int64_t shape[2] = {rows, C};
    float *hx = rand_f(n, (uint64_t)(rows * 17 + C), scale, 0.0);
    float *hdy = rand_f(n, (uint64_t)(rows + C * 11), 1.0, 0.0);
    if (mask)
        for (int64_t r = 0; r < rows; r++)
            for (int64_t c = 0; c < C; c++)
                if (r % 3 == 1 || (c % 4 == 3 && c != r % C))
                    hx[r * C + c] = -INFINITY;
    double *dx = vt_f64(hx, n), *ddy = vt_f64(hdy, n), *wy = zeros(n);
    vp_ref_softmax(dx, wy, rows, C);
    vp_tensor *x = vt_tensor(dev, "x", 2, shape, hx), *y = vt_tensor(dev, "y", 2, shape, NULL);
    vp_cmd *cmd = cmd_begin(dev);
    vt_ok(vp_op_softmax(cmd, x, y));
    cmd_run(cmd);
    char what[64];
    snprintf(what, sizeof what, "softmax scale %g%s", scale, mask ? " masked" : "");
    check_tensor(y, wy, what, dn, rows, C, false);
    float *gy = vt_download(y);
    if (mask) /* fully masked rows are exactly 0 */
        for (int64_t r = 1; r < rows; r += 3)
            for (int64_t c = 0; c < C; c++)
                ck_assert_msg(gy[r * C + c] == 0.0f, "%s: %s row %lld col %lld = %g, want 0", dn,
                              what, (long long)r, (long long)c, gy[r * C + c]);

    /* backward from the device's y (the op's input) */
    double *sy = vt_f64(gy, n), *wdx;
    vp_tensor *dy = vt_tensor(dev, "dy", 2, shape, hdy);
    vp_tensor *gx = grad_out(dev, "dx", 2, shape, acc, 9, &wdx);
    vp_ref_softmax_backward(sy, ddy, wdx, rows, C, acc);
    cmd = cmd_begin(dev);
    vt_ok(vp_op_softmax_backward(cmd, y, dy, gx, acc));
    cmd_run(cmd);
    snprintf(what, sizeof what, "softmax_backward scale %g%s", scale, mask ? " masked" : "");
    check_tensor(gx, wdx, what, dn, rows, C, acc);
    vp_tensor_destroy(x);
    vp_tensor_destroy(y);
    vp_tensor_destroy(dy);
    vp_tensor_destroy(gx);
    free(gy);
    free(hx);
    free(hdy);
    free(dx);
    free(ddy);
    free(wy);
    free(sy);
    free(wdx);
}

/* Mask2Former's attention mask: exact against the reference, with rows
 * that are fully masked (unmasked instead), rows with a single position
 * kept, zeros (kept: sigmoid(0) = 0.5 is not < 0.5), and wide rows that
 * take several segments. */
START_TEST(test_logit_mask)
{
    vp_device *dev = vt_device((uint32_t)_i);
    static const int64_t shapes[][2] = {{7, 33}, {3, 1}, {5, 257}, {1, 4099}, {9, 16}};
    for (size_t t = 0; t < sizeof shapes / sizeof shapes[0]; t++) {
        int64_t rows = shapes[t][0], C = shapes[t][1];
        size_t n = (size_t)(rows * C);
        float *hx = rand_f(n, 40 + t, 1.0, -0.3);
        for (int64_t c = 0; c < C; c++) {
            hx[c] = -fabsf(hx[c]) - 1e-3f;                /* row 0: every position masked */
            if (rows > 2)
                hx[2 * C + c] = c == C / 2 ? 0.0f : -1.0f; /* row 2: one kept, at 0 */
        }
        double *dx = vt_f64(hx, n), *want = zeros(n);
        vp_ref_logit_mask(dx, want, rows, C);
        vp_tensor *x = vt_tensor(dev, "x", 2, (int64_t[]){rows, C}, hx);
        vp_tensor *y = vt_tensor(dev, "y", 2, (int64_t[]){rows, C}, NULL);
        vp_cmd *cmd = cmd_begin(dev);
        vt_ok(vp_op_logit_mask(cmd, x, y));
        cmd_run(cmd);
        float *got = vt_download(y);
        for (size_t i = 0; i < n; i++)
            ck_assert_msg(got[i] == (float)want[i], "logit_mask %lldx%lld [%zu]: %g, want %g",
                          (long long)rows, (long long)C, i, got[i], want[i]);
        for (int64_t c = 0; c < C; c++)
            ck_assert(got[c] == 0.0f); /* the fully masked row attends everywhere */
        if (rows > 2)
            for (int64_t c = 0; c < C; c++)
                ck_assert(got[2 * C + c] == (c == C / 2 || C == 1 ? 0.0f : -INFINITY));
        free(got);
        free(hx);
        free(dx);
        free(want);
        vp_tensor_destroy(x);
        vp_tensor_destroy(y);
    }
}
END_TEST

/* Dropout: the kept elements scaled by 1 / (1 - p) and the rest 0, the
 * mask exactly the reference's (the same hash), about 1 - p of the elements
 * kept, a new mask for a new seed; the backward with the same mask, with
 * and without accumulate. */
START_TEST(test_dropout)
{
    vp_device *dev = vt_device((uint32_t)_i);
    const int64_t n = 100003;
    const float p = 0.3f;
    float *hx = rand_f((size_t)n, 61, 1.0, 0.0);
    double *dx = vt_f64(hx, (size_t)n), *want = zeros((size_t)n);
    vp_tensor *x = vt_tensor(dev, "x", 1, &n, hx), *y = vt_tensor(dev, "y", 1, &n, NULL);
    vp_tensor *seed;
    vt_ok(vp_tensor_create(dev, VP_I32, 1, (int64_t[]){1}, "seed", &seed));
    for (uint32_t sv = 7; sv < 9; sv++) {
        vt_ok(vp_tensor_upload(seed, &sv, sizeof sv));
        vp_cmd *cmd = cmd_begin(dev);
        vt_ok(vp_op_dropout(cmd, x, seed, p, y));
        cmd_run(cmd);
        float *got = vt_download(y);
        vp_ref_dropout(dx, sv, p, want, n);
        int64_t kept = 0;
        for (int64_t i = 0; i < n; i++) {
            ck_assert_msg((got[i] == 0.0f) == (want[i] == 0.0) || hx[i] == 0.0f, "mask at %lld",
                          (long long)i);
            ck_assert(fabs(got[i] - want[i]) <= 1e-6 * fabs(want[i]) + 1e-12);
            kept += want[i] != 0.0;
        }
        ck_assert_msg(fabs((double)kept / (double)n - (1 - p)) < 0.01, "kept %g", (double)kept / n);
        /* backward: the same mask on dy, overwrite then accumulate */
        vp_tensor *g = vt_tensor(dev, "g", 1, &n, hx);
        cmd = cmd_begin(dev);
        vt_ok(vp_op_dropout_backward(cmd, x, seed, p, g, true)); /* g = x + mask(x) */
        cmd_run(cmd);
        float *gb = vt_download(g);
        for (int64_t i = 0; i < n; i += 97)
            ck_assert(fabs(gb[i] - (hx[i] + want[i])) <= 1e-5);
        free(gb);
        free(got);
        vp_tensor_destroy(g);
    }
    /* the device's seed sequence is the reference's */
    uint32_t sv = 7, got_seed;
    vt_ok(vp_tensor_upload(seed, &sv, sizeof sv));
    vp_cmd *cmd = cmd_begin(dev);
    vt_ok(vp_op_seed_next(cmd, seed));
    vt_ok(vp_op_seed_next(cmd, seed));
    cmd_run(cmd);
    vt_ok(vp_tensor_download(seed, &got_seed, sizeof got_seed));
    ck_assert_uint_eq(got_seed, vp_ref_seed_next(vp_ref_seed_next(7)));
    ck_assert_uint_ne(got_seed, 7);
    /* two seeds give two masks */
    ck_assert(vp_ref_dropout_keep(7, 5, 0.5) != vp_ref_dropout_keep(8, 5, 0.5) ||
              vp_ref_dropout_keep(7, 6, 0.5) != vp_ref_dropout_keep(8, 6, 0.5) ||
              vp_ref_dropout_keep(7, 9, 0.5) != vp_ref_dropout_keep(8, 9, 0.5));
    free(hx);
    free(dx);
    free(want);
    vp_tensor_destroy(x);
    vp_tensor_destroy(y);
    vp_tensor_destroy(seed);
}
END_TEST

START_TEST(test_softmax)
{
    for (size_t i = 0; i < N_SIZES; i++)
        for (size_t j = 0; j < N_SIZES; j++)
            for (int acc = 0; acc < 2; acc++)
                run_softmax((uint32_t)_i, sizes[i], sizes[j], 4.0, 0, acc);
}
END_TEST

/* Fully and partly masked rows (-inf); wide and shifted logits. */
START_TEST(test_softmax_masked)
{
    for (size_t j = 0; j < N_SIZES; j++)
        for (int acc = 0; acc < 2; acc++)
            run_softmax((uint32_t)_i, 33, sizes[j], 4.0, 1, acc);
    run_softmax((uint32_t)_i, 7, 257, 30.0, 0, false);
    run_softmax((uint32_t)_i, 1, 4099, 8.0, 1, true);

    /* one row, all -inf: 0s (not NaN); its backward: 0s */
    vp_device *dev = vt_device((uint32_t)_i);
    float hx[5] = {-INFINITY, -INFINITY, -INFINITY, -INFINITY, -INFINITY}, hdy[5] = {1, 2, 3, 4, 5};
    vp_tensor *x = vt_tensor(dev, "x", 1, (int64_t[]){5}, hx);
    vp_tensor *y = vt_tensor(dev, "y", 1, (int64_t[]){5}, NULL);
    vp_tensor *dy = vt_tensor(dev, "dy", 1, (int64_t[]){5}, hdy);
    vp_tensor *dx = vt_tensor(dev, "dx", 1, (int64_t[]){5}, NULL);
    vp_cmd *cmd = cmd_begin(dev);
    vt_ok(vp_op_softmax(cmd, x, y));
    vt_ok(vp_op_softmax_backward(cmd, y, dy, dx, false));
    cmd_run(cmd);
    float *gy = vt_download(y), *gx = vt_download(dx);
    for (int i = 0; i < 5; i++) {
        ck_assert_msg(gy[i] == 0.0f, "softmax of an all -inf row: y[%d] = %g", i, gy[i]);
        ck_assert_msg(gx[i] == 0.0f, "softmax_backward of an all -inf row: dx[%d] = %g", i, gx[i]);
    }
    free(gy);
    free(gx);
    vp_tensor_destroy(x);
    vp_tensor_destroy(y);
    vp_tensor_destroy(dy);
    vp_tensor_destroy(dx);
}
END_TEST

/* ---- reductions ----------------------------------------------------------------- */

static void run_reduce_rows(uint32_t d, int64_t rows, int64_t C, bool mean, bool keep, bool acc)
{
    vp_device *dev = vt_device(d);
    const char *dn = vt_device_info(d)->name;
    size_t n = (size_t)(rows * C);
    int64_t shape[2] = {rows, C}, rshape[2] = {rows, 1};
    float *hx = rand_f(n, (uint64_t)(rows * 19 + C), 1.0, 0.25);
    float *hdy = rand_f((size_t)rows, (uint64_t)rows + 5, 1.0, 0.0);
    double *dx = vt_f64(hx, n), *ddy = vt_f64(hdy, (size_t)rows), *wy = zeros((size_t)rows);
    (mean ? vp_ref_mean_rows : vp_ref_sum_rows)(dx, wy, rows, C);
    vp_tensor *x = vt_tensor(dev, "x", 2, shape, hx);
    vp_tensor *y = vt_tensor(dev, "y", keep ? 2 : 1, rshape, NULL);
    vp_cmd *cmd = cmd_begin(dev);
    vt_ok((mean ? vp_op_mean_rows : vp_op_sum_rows)(cmd, x, y));
    cmd_run(cmd);
    check_tensor(y, wy, mean ? "mean_rows" : "sum_rows", dn, rows, C, false);

    /* the backward: broadcast_rows with scale 1 or 1/C */
    double scale = mean ? 1.0 / (double)C : 1.0, *wdx;
    vp_tensor *dy = vt_tensor(dev, "dy", keep ? 2 : 1, rshape, hdy);
    vp_tensor *gx = grad_out(dev, "dx", 2, shape, acc, 3, &wdx);
    vp_ref_broadcast_rows(ddy, wdx, rows, C, (float)scale, acc);
    cmd = cmd_begin(dev);
    vt_ok(vp_op_broadcast_rows(cmd, dy, gx, (float)scale, acc));
    cmd_run(cmd);
    check_tensor(gx, wdx, "broadcast_rows", dn, rows, C, acc);
    vp_tensor_destroy(x);
    vp_tensor_destroy(y);
    vp_tensor_destroy(dy);
    vp_tensor_destroy(gx);
    free(hx);
    free(hdy);
    free(dx);
    free(ddy);
    free(wy);
    free(wdx);
}

START_TEST(test_reduce_rows)
{
    for (size_t i = 0; i < N_SIZES; i++)
        for (size_t j = 0; j < N_SIZES; j++)
            for (int v = 0; v < 4; v++)
                run_reduce_rows((uint32_t)_i, sizes[i], sizes[j], v & 1, v & 2, v & 1);
}
END_TEST

/* sum_all / mean_all of n elements of offset + noise * U[-1, 1); their
 * backward, broadcast_all. The result must be within 2e-7 (relative) of
 * the double sum, and the same bits on a second run. With noise 1e-3 the
 * elements are nearly equal and an uncompensated fp32 running sum makes
 * the same rounding error at every step: 1e6 elements of ~1.1 summed that
 * way by 256 lanes are off by ~1e-4. */
static void run_reduce_all(uint32_t d, int64_t n, bool mean, bool acc, double offset,
                           double noise)
{
    vp_device *dev = vt_device(d);
    const char *dn = vt_device_info(d)->name;
    float *hx = rand_f((size_t)n, (uint64_t)n, noise, offset), hdy = 0.75f;
    double *dx = vt_f64(hx, (size_t)n), want, ddy = hdy;
    (mean ? vp_ref_mean_all : vp_ref_sum_all)(dx, &want, n);
    vp_tensor *x = vt_tensor(dev, "x", 1, (int64_t[]){n}, hx);
    vp_tensor *y = vt_tensor(dev, "y", 1, (int64_t[]){1}, NULL);
    vp_cmd *cmd = cmd_begin(dev);
    vt_ok((mean ? vp_op_mean_all : vp_op_sum_all)(cmd, x, y));
    vt_ok(vp_cmd_submit(cmd));
    float got, again;
    vt_ok(vp_tensor_download(y, &got, 4));
    vt_poison(y);
    vt_ok(vp_cmd_submit(cmd));
    vt_ok(vp_tensor_download(y, &again, 4));
    vp_cmd_destroy(cmd);
    double rel = fabs(got - want) / fabs(want);
    if (getenv("NN_PROBE"))
        printf("%s %lld offset %g noise %g: rel %.3g\n", mean ? "mean_all" : "sum_all",
               (long long)n, offset, noise, rel);
    ck_assert_msg(rel < 2e-7, "%s: %s of %lld elements (%g + %g U) = %.9g, want %.9g (relative "
                  "error %g)", dn, mean ? "mean_all" : "sum_all", (long long)n, offset, noise, got,
                  want, rel);
    ck_assert_msg(memcmp(&got, &again, 4) == 0, "%s: %s of %lld elements: %.9g, then %.9g", dn,
                  mean ? "mean_all" : "sum_all", (long long)n, got, again);

    double scale = mean ? 1.0 / (double)n : 1.0, *wdx;
    vp_tensor *dy = vt_tensor(dev, "dy", 1, (int64_t[]){1}, &hdy);
    vp_tensor *gx = grad_out(dev, "dx", 1, (int64_t[]){n}, acc, 4, &wdx);
    vp_ref_broadcast_all(&ddy, wdx, n, (float)scale, acc);
    cmd = cmd_begin(dev);
    vt_ok(vp_op_broadcast_all(cmd, dy, gx, (float)scale, acc));
    cmd_run(cmd);
    check_tensor(gx, wdx, "broadcast_all", dn, 1, n, acc);
    vp_tensor_destroy(x);
    vp_tensor_destroy(y);
    vp_tensor_destroy(dy);
    vp_tensor_destroy(gx);
    free(hx);
    free(dx);
    free(wdx);
}

START_TEST(test_reduce_all)
{
    const int64_t ns[] = {1, 7, 33, 257, 1031, 65537, 1000003};
    for (size_t i = 0; i < sizeof ns / sizeof ns[0]; i++)
        for (int v = 0; v < 2; v++)
            run_reduce_all((uint32_t)_i, ns[i], v, v, 1.0, 1.0);
    run_reduce_all((uint32_t)_i, 1000003, false, false, 1.1, 1e-3);
    run_reduce_all((uint32_t)_i, 1000003, true, true, -3.3, 1e-3);
}
END_TEST

/* More rows than one grid dimension holds workgroups for: the row kernels'
 * 2-D grid. C = 1 puts 256 (or 128) rows in a workgroup, so the rows
 * exceed max_wg_count[0] * 256; y must equal x. */
START_TEST(test_rows_large)
{
    vp_device *dev = vt_device((uint32_t)_i);
    const vp_device_info *d = vt_device_info((uint32_t)_i);
    uint64_t rows = (uint64_t)d->max_wg_count[0] * 256 + 1000;
    if (rows * 4 > d->max_storage_range) {
        vt_skip("test_rows_large", d->name,
                "the 2-D grid needs a buffer above maxStorageBufferRange");
        return;
    }
    float *hx = rand_f(rows, 3, 1.0, 0.0);
    vp_tensor *x = vt_tensor(dev, "x", 2, (int64_t[]){(int64_t)rows, 1}, hx);
    vp_tensor *y = vt_tensor(dev, "y", 1, (int64_t[]){(int64_t)rows}, NULL);
    vp_cmd *cmd = cmd_begin(dev);
    vt_ok(vp_op_sum_rows(cmd, x, y));
    cmd_run(cmd);
    float *got = vt_download(y);
    uint64_t bad = 0;
    for (uint64_t i = 0; i < rows; i++)
        bad += got[i] != hx[i];
    ck_assert_msg(bad == 0, "%llu of %llu rows wrong", (unsigned long long)bad,
                  (unsigned long long)rows);
    free(got);
    free(hx);
    vp_tensor_destroy(x);
    vp_tensor_destroy(y);
}
END_TEST

/* The same layernorm backward twice: the same bits (no atomics). */
START_TEST(test_deterministic)
{
    vp_device *dev = vt_device((uint32_t)_i);
    const int64_t rows = 1000, C = 77;
    size_t n = (size_t)(rows * C);
    int64_t shape[2] = {rows, C};
    float *hx = rand_f(n, 1, 1.0, 0.0), *hdy = rand_f(n, 2, 1.0, 0.0);
    float *hg = rand_f((size_t)C, 3, 1.0, 0.0);
    vp_tensor *x = vt_tensor(dev, "x", 2, shape, hx), *dy = vt_tensor(dev, "dy", 2, shape, hdy);
    vp_tensor *g = vt_tensor(dev, "gamma", 1, (int64_t[]){C}, hg);
    vp_tensor *y = vt_tensor(dev, "y", 2, shape, NULL), *dx = vt_tensor(dev, "dx", 2, shape, NULL);
    vp_tensor *m = vt_tensor(dev, "mean", 1, (int64_t[]){rows}, NULL);
    vp_tensor *r = vt_tensor(dev, "rstd", 1, (int64_t[]){rows}, NULL);
    vp_tensor *dg = vt_tensor(dev, "dgamma", 1, (int64_t[]){C}, NULL);
    vp_tensor *db = vt_tensor(dev, "dbeta", 1, (int64_t[]){C}, NULL);
    vp_cmd *cmd = cmd_begin(dev);
    vt_ok(vp_op_layernorm(cmd, x, g, NULL, 1e-5f, y, m, r));
    vt_ok(vp_op_layernorm_backward(cmd, x, g, m, r, dy, dx, dg, db, false));
    vt_ok(vp_cmd_submit(cmd));
    float *a[3] = {vt_download(dx), vt_download(dg), vt_download(db)};
    vt_poison(dg);
    vt_poison(db);
    vt_ok(vp_cmd_submit(cmd));
    float *b[3] = {vt_download(dx), vt_download(dg), vt_download(db)};
    size_t sz[3] = {n, (size_t)C, (size_t)C};
    for (int i = 0; i < 3; i++) {
        ck_assert_msg(memcmp(a[i], b[i], sz[i] * 4) == 0, "layernorm_backward output %d differs "
                      "between two runs", i);
        free(a[i]);
        free(b[i]);
    }
    vp_cmd_destroy(cmd);
    vp_tensor *ts[] = {x, dy, g, y, dx, m, r, dg, db};
    for (size_t i = 0; i < sizeof ts / sizeof ts[0]; i++)
        vp_tensor_destroy(ts[i]);
    free(hx);
    free(hdy);
    free(hg);
}
END_TEST

/* ---- the references' backward against finite differences ------------------- */

#define FD_H 1e-5
#define FD_TOL 1e-6

/* f(x) = sum(forward(x) * w) for a fixed random w */
typedef struct fd_ctx {
    int op, act;
    int64_t rows, C;
    const double *w;       /* weights of the outputs */
    double *x, *g, *b;     /* layernorm: input and affine parameters */
    double *scratch;
} fd_ctx;

enum { FD_RELU, FD_GELU, FD_SOFTMAX, FD_SUM_ROWS, FD_MEAN_ROWS, FD_SUM_ALL, FD_MEAN_ALL, FD_LN,
       FD_ACT };

static double fd_eval(const double *in, void *vctx)
{
    fd_ctx *c = vctx;
    int64_t rows = c->rows, C = c->C, n = rows * C, nout = n;
    double *y = c->scratch;
    switch (c->op) {
    case FD_RELU: vp_ref_relu(in, y, n); break;
    case FD_GELU: vp_ref_gelu(in, y, n); break;
    case FD_SOFTMAX: vp_ref_softmax(in, y, rows, C); break;
    case FD_SUM_ROWS: vp_ref_sum_rows(in, y, rows, C); nout = rows; break;
    case FD_MEAN_ROWS: vp_ref_mean_rows(in, y, rows, C); nout = rows; break;
    case FD_SUM_ALL: vp_ref_sum_all(in, y, n); nout = 1; break;
    case FD_MEAN_ALL: vp_ref_mean_all(in, y, n); nout = 1; break;
    case FD_LN: vp_ref_layernorm(c->x, c->g, c->b, 1e-5, y, NULL, NULL, rows, C); break;
    case FD_ACT: vp_ref_act(c->act, in, y, n); break;
    }
    double s = 0;
    for (int64_t i = 0; i < nout; i++)
        s += y[i] * c->w[i];
    return s;
}

/* Check grad (the reference backward, accumulate false) against finite
 * differences over x, and the accumulate path: backward into a copy of
 * `base` must give base + grad. */
static void fd_check(const char *what, fd_ctx *c, double *x, size_t n, const double *grad)
{
    double *fd = zeros(n);
    vt_fd_grad(fd_eval, c, x, n, FD_H, fd);
    if (getenv("NN_PROBE"))
        printf("fd %s: %.3g\n", what, vt_rel_err(grad, fd, n));
    vt_assert_rel_close(grad, fd, n, FD_TOL, "reference %s vs finite differences", what);
    free(fd);
}

START_TEST(test_ref_grads)
{
    const int64_t rows = 3, C = 7, n = rows * C;
    float *h = rand_f((size_t)n, 11, 2.0, 0.0), *hw = rand_f((size_t)n, 12, 1.0, 0.0);
    for (int64_t i = 0; i < n; i++) /* keep relu's kink away from x +- h */
        if (fabs(h[i]) < 1e-3)
            h[i] = 0.5f;
    double *x = vt_f64(h, (size_t)n), *w = vt_f64(hw, (size_t)n), *y = zeros((size_t)n);
    double *grad = zeros((size_t)n), *base = zeros((size_t)n), *acc = zeros((size_t)n);
    double *scratch = zeros((size_t)n);
    for (int64_t i = 0; i < n; i++)
        base[i] = 0.1 * (double)i - 1.0;
    fd_ctx c = {.rows = rows, .C = C, .w = w, .scratch = scratch};
#define ACC_CHECK(what, call_acc)                                                            \
    do {                                                                                      \
        memcpy(acc, base, (size_t)n * sizeof *acc);                                           \
        call_acc;                                                                             \
        for (int64_t i_ = 0; i_ < n; i_++)                                                    \
            ck_assert_msg(fabs(acc[i_] - (base[i_] + grad[i_])) < 1e-12,                      \
                          "reference %s: accumulate adds %g, want %g", what, acc[i_] - base[i_], \
                          grad[i_]);                                                          \
    } while (0)

    c.op = FD_RELU;
    vp_ref_relu_backward(x, w, grad, n, false);
    fd_check("relu_backward", &c, x, (size_t)n, grad);
    ACC_CHECK("relu_backward", vp_ref_relu_backward(x, w, acc, n, true));

    c.op = FD_GELU;
    vp_ref_gelu_backward(x, w, grad, n, false);
    fd_check("gelu_backward", &c, x, (size_t)n, grad);
    ACC_CHECK("gelu_backward", vp_ref_gelu_backward(x, w, acc, n, true));

    for (int k = VP_ACT_SIGMOID; k < VP_ACT_COUNT; k++) {
        c.op = FD_ACT;
        c.act = k;
        vp_ref_act_backward(k, x, w, grad, n, false);
        fd_check(act_name[k], &c, x, (size_t)n, grad);
        ACC_CHECK(act_name[k], vp_ref_act_backward(k, x, w, acc, n, true));
    }

    c.op = FD_SOFTMAX;
    vp_ref_softmax(x, y, rows, C);
    vp_ref_softmax_backward(y, w, grad, rows, C, false);
    fd_check("softmax_backward", &c, x, (size_t)n, grad);
    ACC_CHECK("softmax_backward", vp_ref_softmax_backward(y, w, acc, rows, C, true));

    c.op = FD_SUM_ROWS;
    vp_ref_broadcast_rows(w, grad, rows, C, 1.0, false);
    fd_check("broadcast_rows (sum_rows)", &c, x, (size_t)n, grad);
    ACC_CHECK("broadcast_rows", vp_ref_broadcast_rows(w, acc, rows, C, 1.0, true));
    c.op = FD_MEAN_ROWS;
    vp_ref_broadcast_rows(w, grad, rows, C, 1.0 / (double)C, false);
    fd_check("broadcast_rows (mean_rows)", &c, x, (size_t)n, grad);
    c.op = FD_SUM_ALL;
    vp_ref_broadcast_all(w, grad, n, 1.0, false);
    fd_check("broadcast_all (sum_all)", &c, x, (size_t)n, grad);
    ACC_CHECK("broadcast_all", vp_ref_broadcast_all(w, acc, n, 1.0, true));
    c.op = FD_MEAN_ALL;
    vp_ref_broadcast_all(w, grad, n, 1.0 / (double)n, false);
    fd_check("broadcast_all (mean_all)", &c, x, (size_t)n, grad);

    /* layernorm: gradients of x, gamma and beta, with and without gamma */
    float *hg = rand_f((size_t)C, 13, 0.5, 1.0), *hb = rand_f((size_t)C, 14, 1.0, 0.0);
    double *g = vt_f64(hg, (size_t)C), *b = vt_f64(hb, (size_t)C);
    double *mean = zeros((size_t)rows), *rstd = zeros((size_t)rows);
    double *dg = zeros((size_t)C), *db = zeros((size_t)C);
    double *accg = zeros((size_t)C), *accb = zeros((size_t)C);
    for (int with_gamma = 0; with_gamma < 2; with_gamma++) {
        c = (fd_ctx){.op = FD_LN, .rows = rows, .C = C, .w = w, .x = x,
                     .g = with_gamma ? g : NULL, .b = b, .scratch = scratch};
        vp_ref_layernorm(x, c.g, b, 1e-5, y, mean, rstd, rows, C);
        vp_ref_layernorm_backward(x, c.g, mean, rstd, w, grad, dg, db, rows, C, false);
        fd_check(with_gamma ? "layernorm_backward dx" : "layernorm_backward dx (no gamma)", &c, x,
                 (size_t)n, grad);
        if (with_gamma)
            fd_check("layernorm_backward dgamma", &c, g, (size_t)C, dg);
        fd_check("layernorm_backward dbeta", &c, b, (size_t)C, db);
        for (int64_t i = 0; i < C; i++) {
            accg[i] = base[i];
            accb[i] = -base[i];
        }
        ACC_CHECK("layernorm_backward dx",
                  vp_ref_layernorm_backward(x, c.g, mean, rstd, w, acc, accg, accb, rows, C, true));
        for (int64_t i = 0; i < C; i++) {
            ck_assert(fabs(accg[i] - (base[i] + dg[i])) < 1e-12);
            ck_assert(fabs(accb[i] - (-base[i] + db[i])) < 1e-12);
        }
    }
#undef ACC_CHECK

    /* softmax of a fully masked row: 0s, and 0 gradient */
    double xm[3] = {-INFINITY, -INFINITY, -INFINITY}, ym[3], dym[3] = {1, 2, 3}, dxm[3];
    vp_ref_softmax(xm, ym, 1, 3);
    vp_ref_softmax_backward(ym, dym, dxm, 1, 3, false);
    for (int i = 0; i < 3; i++)
        ck_assert(ym[i] == 0.0 && dxm[i] == 0.0);

    free(h);
    free(hw);
    free(hg);
    free(hb);
    double *fr[] = {x, w, y, grad, base, acc, scratch, g, b, mean, rstd, dg, db, accg, accb};
    for (size_t i = 0; i < sizeof fr / sizeof fr[0]; i++)
        free(fr[i]);
}
END_TEST

/* ---- errors ------------------------------------------------------------------ */

#define ERR(expr, status, msg)                                                                 \
    do {                                                                                        \
        ck_assert_int_eq((expr), (status));                                                     \
        ck_assert_str_eq(vp_error_last(), (msg));                                               \
    } while (0)

START_TEST(test_errors)
{
    vp_device *dev = vt_device((uint32_t)_i);
    vp_tensor *x = vt_tensor(dev, "x", 2, (int64_t[]){3, 4}, NULL);
    vp_tensor *y = vt_tensor(dev, "y", 2, (int64_t[]){3, 4}, NULL);
    vp_tensor *yt = vt_tensor(dev, "yt", 2, (int64_t[]){4, 3}, NULL);
    vp_tensor *v3 = vt_tensor(dev, "v3", 1, (int64_t[]){3}, NULL);
    vp_tensor *v4 = vt_tensor(dev, "v4", 1, (int64_t[]){4}, NULL);
    vp_tensor *v5 = vt_tensor(dev, "v5", 1, (int64_t[]){5}, NULL);
    vp_tensor *v2 = vt_tensor(dev, "v2", 1, (int64_t[]){2}, NULL);
    vp_tensor *r31 = vt_tensor(dev, "r31", 2, (int64_t[]){3, 1}, NULL);
    vp_tensor *r32 = vt_tensor(dev, "r32", 2, (int64_t[]){3, 2}, NULL);
    vp_tensor *m3 = vt_tensor(dev, "m3", 1, (int64_t[]){3}, NULL);
    vp_tensor *idx;
    vt_ok(vp_tensor_create(dev, VP_I32, 2, (int64_t[]){3, 4}, "idx", &idx));
    vp_cmd *cmd = cmd_begin(dev);

    ERR(vp_op_relu(cmd, idx, y), VP_ERR_UNSUPPORTED, "relu: tensor idx is i32; this op takes f32");
    ERR(vp_op_gelu(cmd, x, yt), VP_ERR_SHAPE, "gelu: x (3, 4) and yt (4, 3) must have the same shape");
    ERR(vp_op_relu_backward(cmd, x, yt, y, false), VP_ERR_SHAPE,
        "relu_backward: x (3, 4) and yt (4, 3) must have the same shape");
    ERR(vp_op_gelu_backward(cmd, x, y, idx, true), VP_ERR_UNSUPPORTED,
        "gelu_backward: tensor idx is i32; this op takes f32");

    ERR(vp_op_layernorm(cmd, x, v5, NULL, 1e-5f, y, v3, m3), VP_ERR_SHAPE,
        "layernorm: v5 (5) must be (4), the last dimension of x (3, 4)");
    ERR(vp_op_layernorm(cmd, x, NULL, v4, 1e-5f, y, v4, m3), VP_ERR_SHAPE,
        "layernorm: v4 (4) must be (3) or (3, 1), one element per row of x (3, 4)");
    ERR(vp_op_layernorm(cmd, x, NULL, NULL, 1e-5f, y, r32, m3), VP_ERR_SHAPE,
        "layernorm: r32 (3, 2) must be (3) or (3, 1), one element per row of x (3, 4)");
    ERR(vp_op_layernorm(cmd, x, NULL, NULL, -1.0f, y, v3, m3), VP_ERR_INVALID,
        "layernorm: eps -1 must be finite and >= 0");
    ERR(vp_op_layernorm(cmd, x, NULL, NULL, 1e-5f, y, v3, NULL), VP_ERR_INVALID,
        "layernorm: mean and rstd must both be given or both be NULL");
    ERR(vp_op_layernorm(cmd, x, NULL, NULL, 1e-5f, y, v3, v3), VP_ERR_INVALID,
        "layernorm: outputs v3 and v3 overlap");
    ERR(vp_op_layernorm(cmd, x, NULL, NULL, 1e-5f, x, v3, r31), VP_ERR_INVALID,
        "layernorm: output x overlaps input x");
    ERR(vp_op_layernorm(cmd, x, v4, v4, 1e-5f, y, idx, r31), VP_ERR_UNSUPPORTED,
        "layernorm: tensor idx is i32; this op takes f32");
    ERR(vp_op_layernorm_backward(cmd, x, NULL, v3, m3, y, yt, NULL, NULL, false), VP_ERR_SHAPE,
        "layernorm_backward: x (3, 4) and yt (4, 3) must have the same shape");
    ERR(vp_op_layernorm_backward(cmd, x, v4, v3, m3, y, y, NULL, NULL, false), VP_ERR_INVALID,
        "layernorm_backward: output y overlaps input y");
    vp_tensor *dx = vt_tensor(dev, "dx", 2, (int64_t[]){3, 4}, NULL);
    ERR(vp_op_layernorm_backward(cmd, x, v4, v3, m3, y, dx, v3, NULL, false), VP_ERR_SHAPE,
        "layernorm_backward: v3 (3) must be (4), the last dimension of x (3, 4)");
    ERR(vp_op_layernorm_backward(cmd, x, v4, v3, v2, y, dx, NULL, NULL, false), VP_ERR_SHAPE,
        "layernorm_backward: v2 (2) must be (3) or (3, 1), one element per row of x (3, 4)");
    ERR(vp_op_layernorm_backward(cmd, x, NULL, v3, m3, y, dx, v4, v4, true), VP_ERR_INVALID,
        "layernorm_backward: outputs v4 and v4 overlap");

    ERR(vp_op_softmax(cmd, x, x), VP_ERR_INVALID, "softmax: output x overlaps input x");
    ERR(vp_op_softmax(cmd, x, yt), VP_ERR_SHAPE,
        "softmax: x (3, 4) and yt (4, 3) must have the same shape");
    ERR(vp_op_softmax_backward(cmd, y, x, x, false), VP_ERR_INVALID,
        "softmax_backward: output x overlaps input x");
    ERR(vp_op_softmax_backward(cmd, y, x, idx, false), VP_ERR_UNSUPPORTED,
        "softmax_backward: tensor idx is i32; this op takes f32");

    ERR(vp_op_sum_rows(cmd, x, v4), VP_ERR_SHAPE,
        "sum_rows: v4 (4) must be (3) or (3, 1), one element per row of x (3, 4)");
    ERR(vp_op_mean_rows(cmd, v5, v2), VP_ERR_SHAPE,
        "mean_rows: v2 (2) must be (1), one element per row of v5 (5)");
    ERR(vp_op_sum_all(cmd, x, v2), VP_ERR_SHAPE, "sum_all: v2 (2) must have one element");
    ERR(vp_op_mean_all(cmd, idx, v2), VP_ERR_UNSUPPORTED,
        "mean_all: tensor idx is i32; this op takes f32");
    ERR(vp_op_broadcast_rows(cmd, v4, x, 1.0f, false), VP_ERR_SHAPE,
        "broadcast_rows: v4 (4) must be (3) or (3, 1), one element per row of x (3, 4)");
    ERR(vp_op_broadcast_all(cmd, v3, x, 1.0f, true), VP_ERR_SHAPE,
        "broadcast_all: v3 (3) must have one element");
    vp_tensor *one = vt_tensor(dev, "one", 1, (int64_t[]){1}, NULL);
    ERR(vp_op_broadcast_all(cmd, one, one, 1.0f, true), VP_ERR_INVALID,
        "broadcast_all: output one overlaps input one");

    ck_assert_uint_eq(vp_cmd_get_stats(cmd).dispatches, 0);
    cmd_run(cmd);
    vp_tensor *ts[] = {x, y, yt, v3, v4, v5, v2, r31, r32, m3, idx, dx, one};
    for (size_t i = 0; i < sizeof ts / sizeof ts[0]; i++)
        vp_tensor_destroy(ts[i]);
}
END_TEST

/* The row ops' two forms (vp_nn_force_rows), each on every device: the
 * tcases below run in a child process each, so the setting stays there. */
static void rows_segments(void)
{
    vp_nn_force_rows(VP_NN_ROWS_SEGMENTS);
}

static void rows_one(void)
{
    vp_nn_force_rows(VP_NN_ROWS_ONE);
}

static TCase *rows_tcase(const char *name, bool one)
{
    TCase *tc = vt_tcase(name);
    tcase_add_checked_fixture(tc, one ? rows_one : rows_segments, NULL);
    return tc;
}

int main(void)
{
    Suite *s = suite_create("nn");
    TCase *tc = vt_tcase("reference");
    tcase_add_test(tc, test_ref_grads);
    suite_add_tcase(s, tc);
    tc = vt_tcase("activations");
    vt_add_per_device(tc, test_act, NULL);
    vt_add_per_device(tc, test_gelu_dense, NULL);
    suite_add_tcase(s, tc);
    for (int one = 0; one < 2; one++) {
        tc = rows_tcase(one ? "layernorm, one row per invocation" : "layernorm", one);
        vt_add_per_device(tc, test_layernorm, NULL);
        vt_add_per_device(tc, test_layernorm_variants, NULL);
        vt_add_per_device(tc, test_layernorm_3d, NULL);
        vt_add_per_device(tc, test_layernorm_split_acc, NULL);
        suite_add_tcase(s, tc);
        tc = rows_tcase(one ? "softmax, one row per invocation" : "softmax", one);
        vt_add_per_device(tc, test_softmax, NULL);
        vt_add_per_device(tc, test_softmax_masked, NULL);
        vt_add_per_device(tc, test_logit_mask, NULL);
        if (!one)
            vt_add_per_device(tc, test_dropout, NULL);
        suite_add_tcase(s, tc);
        tc = rows_tcase(one ? "reductions, one row per invocation" : "reductions", one);
        vt_add_per_device(tc, test_reduce_rows, NULL);
        /* one row of 1e6: more loop iterations than lavapipe runs in one
         * invocation (ops/nn.c keeps such rows in segments) */
        if (!one)
            vt_add_per_device(tc, test_reduce_all, NULL);
        vt_add_per_device(tc, test_rows_large, NULL);
        vt_add_per_device(tc, test_deterministic, NULL);
        suite_add_tcase(s, tc);
    }
    tc = vt_tcase("errors");
    vt_add_per_device(tc, test_errors, NULL);
    suite_add_tcase(s, tc);
    return vt_run(s);
}
