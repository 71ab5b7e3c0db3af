/*
 * Loss suite: softmax cross-entropy, BCE with logits and dice, forward and
 * backward, on every device under test against the double-precision
 * references in core/ref/loss.c, with outputs poisoned (NaN) beforehand;
 * the references' backward against central finite differences; accumulate
 * on and off; odd sizes (1, 7, 33, 257, ...); logits of magnitude 1e4;
 * ignored rows; bit-identical replays; the error messages. NMSE bound 1e-7,
 * and loss values also within 1e-5 relative error.
 */
#include "harness.h"

#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "ops/loss.h"
#include "ref/loss.h"

#define TOL 1e-7
#define LOSS_REL 1e-5 /* a scalar loss: tighter than NMSE 1e-7 (3e-4 relative) */
#define FD_TOL 1e-6

/* ---- helpers ---------------------------------------------------------------- */

static vp_tensor *scalar(vp_device *dev, const char *name, float v)
{
    return vt_tensor(dev, name, 1, (int64_t[]){1}, &v);
}

static vp_tensor *i32_tensor(vp_device *dev, const char *name, int64_t n, const int32_t *data)
{
    vp_tensor *t;
    vt_ok(vp_tensor_create(dev, VP_I32, 1, &n, name, &t));
    vt_ok(vp_tensor_upload(t, data, (size_t)n * sizeof *data));
    return t;
}

static float download1(const vp_tensor *t)
{
    float v;
    vt_ok(vp_tensor_download(t, &v, sizeof v));
    return v;
}

static void assert_loss(float got, double want, const char *what, const vp_device_info *d)
{
    double rel = fabs((double)got - want) / fmax(fabs(want), 1e-30);
    ck_assert_msg(isfinite(got) && rel < LOSS_REL, "%s: %s: loss %.9g, reference %.9g (relative "
                  "error %g)", d->name, what, (double)got, want, rel);
}

/* Random values scaled by `scale` and shifted by `offset`. */
static float *rand_logits(size_t n, uint64_t seed, float scale, float offset)
{
    float *x = malloc(n * sizeof *x);
    ck_assert_ptr_nonnull(x);
    vt_rand(x, n, seed);
    for (size_t i = 0; i < n; i++)
        x[i] = x[i] * scale + offset;
    return x;
}

/* Targets in [0, 1]: uniform, with every 5th exactly 0 and every 7th exactly 1. */
static float *rand_targets(size_t n, uint64_t seed)
{
    float *t = malloc(n * sizeof *t);
    ck_assert_ptr_nonnull(t);
    vt_rand(t, n, seed);
    for (size_t i = 0; i < n; i++)
        t[i] = i % 5 == 0 ? 0.0f : i % 7 == 0 ? 1.0f : (t[i] + 1.0f) / 2.0f;
    return t;
}

/* ---- cross-entropy ------------------------------------------------------------ */

typedef struct ce_case {
    int64_t N, C;
    bool weighted;
    int ignore_every; /* every k-th row gets target -100 (0: none) */
    float scale, offset;
    float margin; /* added to the target's logit: confident predictions, small losses */
} ce_case;

static void run_ce(uint32_t di, const ce_case *c)
{
    vp_device *dev = vt_device(di);
    const vp_device_info *d = vt_device_info(di);
    int64_t N = c->N, C = c->C;
    size_t n = (size_t)(N * C);
    float *hx = rand_logits(n, (uint64_t)(N * 31 + C), c->scale, c->offset);
    float *hw = rand_logits((size_t)C, (uint64_t)C + 5, 0.5f, 0.6f); /* in [0.1, 1.1) */
    float *hacc = rand_logits(n, 99, 1.0f, 0.0f);
    int32_t *ht = malloc((size_t)N * sizeof *ht);
    float *r = rand_logits((size_t)N, (uint64_t)N + 7, 1.0f, 0.0f);
    for (int64_t i = 0; i < N; i++) {
        ht[i] = (int32_t)((r[i] + 1.0f) / 2.0f * (float)C) % (int32_t)C;
        if (c->ignore_every && i % c->ignore_every == 1)
            ht[i] = -100;
    }
    /* In the large-logit cases make some targets the row's arg max. */
    for (int64_t i = 0; i < N; i += 3) {
        if (ht[i] < 0)
            continue;
        int32_t am = 0;
        for (int64_t k = 1; k < C; k++)
            am = hx[i * C + k] > hx[i * C + am] ? (int32_t)k : am;
        ht[i] = am;
    }
    for (int64_t i = 0; i < N; i++)
        if (ht[i] >= 0)
            hx[i * C + ht[i]] += c->margin;
    double *dx = vt_f64(hx, n), *dw = vt_f64(hw, (size_t)C);
    const double *wref = c->weighted ? dw : NULL;
    double want = vp_ref_cross_entropy(dx, ht, wref, N, C);
    double *dwant = malloc(n * sizeof *dwant);
    vp_ref_cross_entropy_backward(dx, ht, wref, N, C, 0.75, dwant);
    double wsum = 0.0, counted = 0.0;
    for (int64_t i = 0; i < N; i++)
        if (ht[i] >= 0) {
            wsum += c->weighted ? dw[ht[i]] : 1.0;
            counted += 1.0;
        }

    vp_tensor *x = vt_tensor(dev, "x", 2, (int64_t[]){N, C}, hx);
    vp_tensor *t = i32_tensor(dev, "t", N, ht);
    vp_tensor *w = c->weighted ? vt_tensor(dev, "w", 1, (int64_t[]){C}, hw) : NULL;
    vp_tensor *loss = vt_tensor(dev, "loss", 1, (int64_t[]){1}, NULL);
    vp_tensor *saved = vt_tensor(dev, "saved", 2, (int64_t[]){N + 1, 2}, NULL);
    vp_tensor *dloss = scalar(dev, "dloss", 0.75f);
    vp_tensor *g = vt_tensor(dev, "g", 2, (int64_t[]){N, C}, NULL);
    vp_tensor *gacc = vt_tensor(dev, "gacc", 2, (int64_t[]){N, C}, hacc);
    vp_cmd *cmd;
    vt_ok(vp_cmd_create(dev, &cmd));
    vt_ok(vp_cmd_begin(cmd));
    vt_ok(vp_op_cross_entropy(cmd, x, t, w, loss, saved));
    vt_ok(vp_op_cross_entropy_backward(cmd, x, t, w, saved, dloss, g, false));
    vt_ok(vp_op_cross_entropy_backward(cmd, x, t, w, saved, dloss, gacc, true));
    vt_ok(vp_cmd_submit(cmd));

    char what[160];
    snprintf(what, sizeof what, "cross_entropy (%lld, %lld)%s ignore %d, logits x %g %+g, "
             "margin %g", (long long)N, (long long)C, c->weighted ? " weighted" : "",
             c->ignore_every, (double)c->scale, (double)c->offset, (double)c->margin);
    float got = download1(loss);
    vt_assert_close(&got, &want, 1, TOL, "%s: %s", d->name, what);
    assert_loss(got, want, what, d);
    float *hs = vt_download(saved);
    ck_assert_msg(fabs(hs[2 * N] - wsum) <= 1e-5 * wsum && hs[2 * N + 1] == (float)counted,
                  "%s: %s: saved total weight %g rows %g, want %g %g", d->name, what,
                  (double)hs[2 * N], (double)hs[2 * N + 1], wsum, counted);
    float *hg = vt_download(g), *hga = vt_download(gacc);
    vt_assert_close(hg, dwant, n, TOL, "%s: %s backward", d->name, what);
    for (size_t i = 0; i < n; i++)
        dwant[i] += hacc[i];
    vt_assert_close(hga, dwant, n, TOL, "%s: %s backward, accumulate", d->name, what);

    free(hs);
    free(hg);
    free(hga);
    vp_cmd_destroy(cmd);
    vp_tensor_destroy(x);
    vp_tensor_destroy(t);
    vp_tensor_destroy(w);
    vp_tensor_destroy(loss);
    vp_tensor_destroy(saved);
    vp_tensor_destroy(dloss);
    vp_tensor_destroy(g);
    vp_tensor_destroy(gacc);
    free(hx);
    free(hw);
    free(hacc);
    free(ht);
    free(r);
    free(dx);
    free(dw);
    free(dwant);
}

START_TEST(test_cross_entropy)
{
    static const ce_case cases[] = {
        {1, 1, false, 0, 1, 0, 0},    {1, 7, true, 0, 1, 0, 0},     {7, 33, false, 3, 1, 0, 0},
        {33, 7, true, 4, 1, 0, 0},    {257, 5, true, 0, 1, 0, 0},   {5, 257, false, 2, 1, 0, 0},
        {100, 81, true, 9, 1, 0, 0},  {1030, 3, false, 11, 1, 0, 0},
        /* confident: every loss ~1e-4, where log(1 + s) in float would lose it */
        {33, 7, true, 4, 1, 0, 12},   {7, 33, false, 0, 1, 0, 14},
    };
    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++)
        run_ce((uint32_t)_i, &cases[i]);
}
END_TEST

/* Logits of magnitude 1e4: spread (one class dominates every row) and
 * offset (differences of order 1 on top of +-1e4, where logsumexp computed
 * as one float would lose the small part: at 3e4 enough to fail the bound). */
START_TEST(test_cross_entropy_large)
{
    static const ce_case cases[] = {
        {33, 7, true, 5, 1e4f, 0, 0},     {7, 33, false, 0, 1e4f, 0, 0},
        {33, 7, true, 5, 1.0f, 1e4f, 0},  {7, 33, false, 3, 2.0f, -1e4f, 0},
        {33, 7, true, 5, 1.0f, 3e4f, 0},  {33, 7, false, 0, 1.0f, 1e4f, 10},
    };
    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++)
        run_ce((uint32_t)_i, &cases[i]);
}
END_TEST

/* Every row ignored: the loss is NaN (0/0, as in PyTorch) and the gradient
 * 0. A target >= C: the loss is NaN and that row's gradient NaN, the other
 * rows' gradient as without it. */
START_TEST(test_cross_entropy_ignore)
{
    vp_device *dev = vt_device((uint32_t)_i);
    float hx[12];
    vt_rand(hx, 12, 3);
    vp_tensor *x = vt_tensor(dev, "x", 2, (int64_t[]){4, 3}, hx);
    vp_tensor *t_all = i32_tensor(dev, "t_all", 4, (int32_t[]){-100, -1, -100, -7});
    vp_tensor *t_bad = i32_tensor(dev, "t_bad", 4, (int32_t[]){0, 3, -100, 2});
    vp_tensor *loss1 = scalar(dev, "loss1", 0), *loss2 = scalar(dev, "loss2", 0);
    vp_tensor *s1 = vt_tensor(dev, "s1", 2, (int64_t[]){5, 2}, NULL);
    vp_tensor *s2 = vt_tensor(dev, "s2", 2, (int64_t[]){5, 2}, NULL);
    vp_tensor *g1 = vt_tensor(dev, "g1", 2, (int64_t[]){4, 3}, NULL);
    vp_tensor *g2 = vt_tensor(dev, "g2", 2, (int64_t[]){4, 3}, NULL);
    vp_tensor *dloss = scalar(dev, "dloss", 1.0f);
    vp_cmd *cmd;
    vt_ok(vp_cmd_create(dev, &cmd));
    vt_ok(vp_cmd_begin(cmd));
    vt_ok(vp_op_cross_entropy(cmd, x, t_all, NULL, loss1, s1));
    vt_ok(vp_op_cross_entropy_backward(cmd, x, t_all, NULL, s1, dloss, g1, false));
    vt_ok(vp_op_cross_entropy(cmd, x, t_bad, NULL, loss2, s2));
    vt_ok(vp_op_cross_entropy_backward(cmd, x, t_bad, NULL, s2, dloss, g2, false));
    vt_ok(vp_cmd_submit(cmd));
    ck_assert_msg(isnan(download1(loss1)), "every row ignored: loss %g, want NaN",
                  (double)download1(loss1));
    float *h1 = vt_download(g1), *h2 = vt_download(g2);
    for (int i = 0; i < 12; i++)
        ck_assert_msg(h1[i] == 0.0f, "every row ignored: dlogits[%d] = %g, want 0", i,
                      (double)h1[i]);
    ck_assert_msg(isnan(download1(loss2)), "target 3 >= C: loss %g, want NaN",
                  (double)download1(loss2));
    double dx[12], want[12];
    for (int i = 0; i < 12; i++)
        dx[i] = hx[i];
    int32_t tb[4] = {0, 3, -100, 2};
    ck_assert(isnan(vp_ref_cross_entropy(dx, tb, NULL, 4, 3)));
    vp_ref_cross_entropy_backward(dx, tb, NULL, 4, 3, 1.0, want);
    for (int i = 0; i < 12; i++) {
        bool row_bad = i / 3 == 1;
        ck_assert_msg(row_bad ? isnan(h2[i]) && isnan(want[i])
                              : fabs(h2[i] - want[i]) <= 1e-6 * (1 + fabs(want[i])),
                      "target 3 >= C: dlogits[%d] = %g, reference %g", i, (double)h2[i],
                      want[i]);
    }
    free(h1);
    free(h2);
    vp_cmd_destroy(cmd);
    vp_tensor *ts[] = {x, t_all, t_bad, loss1, loss2, s1, s2, g1, g2, dloss};
    for (size_t i = 0; i < sizeof ts / sizeof ts[0]; i++)
        vp_tensor_destroy(ts[i]);
}
END_TEST

/* ---- reference backward against finite differences ------------------------- */

typedef struct fd_ctx {
    const int32_t *it;
    const double *t, *w;
    int64_t N, C; /* or M, P */
    double norm, dloss;
} fd_ctx;

static double fd_ce(const double *x, void *p)
{
    fd_ctx *c = p;
    return c->dloss * vp_ref_cross_entropy(x, c->it, c->w, c->N, c->C);
}

static double fd_bce(const double *x, void *p)
{
    fd_ctx *c = p;
    return c->dloss * vp_ref_bce_logits(x, c->t, c->N);
}

static double fd_dice(const double *x, void *p)
{
    fd_ctx *c = p;
    return c->dloss * vp_ref_dice(x, c->t, c->N, c->C, c->norm);
}

START_TEST(test_reference_fd)
{
    enum { N = 7, C = 5, n = N * C };
    float hx[n], ht[n], hw[C];
    vt_rand(hx, n, 11);
    vt_rand(hw, C, 12);
    float *tf = rand_targets(n, 13);
    memcpy(ht, tf, sizeof ht);
    free(tf);
    double x[n], t[n], w[C], got[n], want[n];
    for (int i = 0; i < n; i++) {
        x[i] = 2.0 * hx[i];
        t[i] = ht[i];
    }
    for (int i = 0; i < C; i++)
        w[i] = 0.6 + 0.5 * hw[i];
    int32_t it[N] = {0, 4, -100, 2, 2, 1, 3};
    for (int weighted = 0; weighted < 2; weighted++) {
        fd_ctx c = {it, NULL, weighted ? w : NULL, N, C, 1.0, 0.75};
        vp_ref_cross_entropy_backward(x, it, c.w, N, C, 0.75, got);
        vt_fd_grad(fd_ce, &c, x, n, 1e-5, want);
        vt_assert_rel_close(got, want, n, FD_TOL, "cross_entropy reference backward%s",
                            weighted ? " weighted" : "");
    }
    fd_ctx cb = {NULL, t, NULL, n, 0, 1.0, 0.75};
    vp_ref_bce_logits_backward(x, t, n, 0.75, got);
    vt_fd_grad(fd_bce, &cb, x, n, 1e-5, want);
    vt_assert_rel_close(got, want, n, FD_TOL, "bce_logits reference backward");
    /* dice: 5 masks of 7, and 1 mask of 35 */
    for (int m = 0; m < 2; m++) {
        fd_ctx cd = {NULL, t, NULL, m ? 1 : C, m ? n : N, 2.5, 0.75};
        vp_ref_dice_backward(x, t, cd.N, cd.C, 2.5, 0.75, got);
        vt_fd_grad(fd_dice, &cd, x, n, 1e-5, want);
        vt_assert_rel_close(got, want, n, FD_TOL, "dice reference backward (%lld, %lld)",
                            (long long)cd.N, (long long)cd.C);
    }
}
END_TEST

/* ---- BCE with logits and dice --------------------------------------------------- */

typedef enum { BCE, DICE } pair_op;

/* x and target of `shape`; loss, backward (poisoned) and backward
 * accumulating onto random values. dice: masks are shape[0]. confident:
 * targets exactly 0 or 1 and logits of the matching sign, |x| in [scale,
 * scale + 1): the losses and gradients are all small terms (exp(-|x|)),
 * which float cancellation (1 + u, 1 - ratio, sigmoid - 1) would lose. */
static void run_pair(uint32_t di, pair_op op, int ndim, const int64_t *shape, float scale,
                     bool confident)
{
    vp_device *dev = vt_device(di);
    const vp_device_info *d = vt_device_info(di);
    int64_t n = 1;
    for (int i = 0; i < ndim; i++)
        n *= shape[i];
    int64_t M = shape[0], P = n / M;
    float *hx = rand_logits((size_t)n, (uint64_t)n * 3 + 1, scale, 0.0f);
    float *ht = rand_targets((size_t)n, (uint64_t)n + 17);
    float *hacc = rand_logits((size_t)n, 5, 1.0f, 0.0f);
    if (confident)
        for (int64_t i = 0; i < n; i++) {
            ht[i] = i % 3 ? 1.0f : 0.0f;
            hx[i] = (ht[i] > 0 ? 1.0f : -1.0f) * (scale + fabsf(hx[i]) / scale);
        }
    double *dx = vt_f64(hx, (size_t)n), *dt = vt_f64(ht, (size_t)n);
    double *gwant = malloc((size_t)n * sizeof *gwant);
    const double norm = 3.5, dl = -1.25;
    double want = op == BCE ? vp_ref_bce_logits(dx, dt, n) : vp_ref_dice(dx, dt, M, P, norm);
    if (op == BCE)
        vp_ref_bce_logits_backward(dx, dt, n, dl, gwant);
    else
        vp_ref_dice_backward(dx, dt, M, P, norm, dl, gwant);

    vp_tensor *x = vt_tensor(dev, "x", ndim, shape, hx);
    vp_tensor *t = vt_tensor(dev, "t", ndim, shape, ht);
    vp_tensor *g = vt_tensor(dev, "g", ndim, shape, NULL);
    vp_tensor *gacc = vt_tensor(dev, "gacc", ndim, shape, hacc);
    vp_tensor *loss = vt_tensor(dev, "loss", 1, (int64_t[]){1}, NULL);
    vp_tensor *dloss = scalar(dev, "dloss", (float)dl);
    vp_cmd *cmd;
    vt_ok(vp_cmd_create(dev, &cmd));
    vt_ok(vp_cmd_begin(cmd));
    if (op == BCE) {
        vt_ok(vp_op_bce_logits(cmd, x, t, loss));
        vt_ok(vp_op_bce_logits_backward(cmd, x, t, dloss, g, false));
        vt_ok(vp_op_bce_logits_backward(cmd, x, t, dloss, gacc, true));
    } else {
        vt_ok(vp_op_dice(cmd, x, t, loss, (float)norm));
        vt_ok(vp_op_dice_backward(cmd, x, t, dloss, g, (float)norm, false));
        vt_ok(vp_op_dice_backward(cmd, x, t, dloss, gacc, (float)norm, true));
    }
    vt_ok(vp_cmd_submit(cmd));
    char what[128], sh[64];
    vp_shape_str(x, sh, sizeof sh);
    snprintf(what, sizeof what, "%s %s, logits x %g%s", op == BCE ? "bce_logits" : "dice", sh,
             (double)scale, confident ? ", confident" : "");
    float got = download1(loss);
    vt_assert_close(&got, &want, 1, TOL, "%s: %s", d->name, what);
    assert_loss(got, want, what, d);
    float *hg = vt_download(g), *hga = vt_download(gacc);
    vt_assert_close(hg, gwant, (size_t)n, TOL, "%s: %s backward", d->name, what);
    for (int64_t i = 0; i < n; i++)
        gwant[i] += hacc[i];
    vt_assert_close(hga, gwant, (size_t)n, TOL, "%s: %s backward, accumulate", d->name, what);
    free(hg);
    free(hga);
    vp_cmd_destroy(cmd);
    vp_tensor_destroy(x);
    vp_tensor_destroy(t);
    vp_tensor_destroy(g);
    vp_tensor_destroy(gacc);
    vp_tensor_destroy(loss);
    vp_tensor_destroy(dloss);
    free(hx);
    free(ht);
    free(hacc);
    free(dx);
    free(dt);
    free(gwant);
}

START_TEST(test_bce_logits)
{
    static const int64_t sizes[] = {1, 7, 33, 257, 4099, 20000};
    for (size_t i = 0; i < sizeof sizes / sizeof sizes[0]; i++)
        run_pair((uint32_t)_i, BCE, 1, &sizes[i], 1.0f, false);
    run_pair((uint32_t)_i, BCE, 3, (int64_t[]){3, 5, 7}, 4.0f, false);
    run_pair((uint32_t)_i, BCE, 2, (int64_t[]){16, 64}, 1.0f, false);
}
END_TEST

/* |x| up to 1e4: no overflow, and the log1p term keeps its precision where
 * it is all that is left (confident: x large, t = 1 or x small, t = 0). */
START_TEST(test_bce_logits_large)
{
    run_pair((uint32_t)_i, BCE, 1, (int64_t[]){1030}, 12.0f, true);
    run_pair((uint32_t)_i, BCE, 1, (int64_t[]){257}, 1e4f, false);
    run_pair((uint32_t)_i, BCE, 1, (int64_t[]){1030}, 30.0f, false);
}
END_TEST

START_TEST(test_dice)
{
    static const int64_t shapes[][2] = {{1, 1}, {7, 33}, {33, 7}, {3, 256}, {5, 1000},
                                        {2, 4099}};
    for (size_t i = 0; i < sizeof shapes / sizeof shapes[0]; i++)
        run_pair((uint32_t)_i, DICE, 2, shapes[i], 2.0f, false);
    run_pair((uint32_t)_i, DICE, 3, (int64_t[]){3, 16, 16}, 2.0f, false);
}
END_TEST

START_TEST(test_dice_large)
{
    run_pair((uint32_t)_i, DICE, 2, (int64_t[]){5, 64}, 12.0f, true);
    run_pair((uint32_t)_i, DICE, 2, (int64_t[]){5, 64}, 1e4f, false);
    run_pair((uint32_t)_i, DICE, 2, (int64_t[]){5, 33}, 20.0f, false);
}
END_TEST

/* ---- determinism ---------------------------------------------------------------- */

/* The same recording, submitted twice, gives the same bits: the reductions
 * have a fixed order. */
START_TEST(test_replay_bits)
{
    vp_device *dev = vt_device((uint32_t)_i);
    enum { N = 300, C = 41, M = 8, P = 3000 };
    float *hx = rand_logits(N * C, 1, 3.0f, 0.0f), *hm = rand_logits(M * P, 2, 3.0f, 0.0f);
    float *ht = rand_targets(M * P, 3);
    int32_t it[N];
    for (int i = 0; i < N; i++)
        it[i] = i % 13 == 0 ? -100 : (i * 7) % C;
    vp_tensor *x = vt_tensor(dev, "x", 2, (int64_t[]){N, C}, hx);
    vp_tensor *t = i32_tensor(dev, "t", N, it);
    vp_tensor *saved = vt_tensor(dev, "saved", 2, (int64_t[]){N + 1, 2}, NULL);
    vp_tensor *mx = vt_tensor(dev, "mx", 2, (int64_t[]){M, P}, hm);
    vp_tensor *mt = vt_tensor(dev, "mt", 2, (int64_t[]){M, P}, ht);
    vp_tensor *l[3];
    for (int i = 0; i < 3; i++)
        l[i] = scalar(dev, "l", 0.0f);
    vp_cmd *cmd;
    vt_ok(vp_cmd_create(dev, &cmd));
    vt_ok(vp_cmd_begin(cmd));
    vt_ok(vp_op_cross_entropy(cmd, x, t, NULL, l[0], saved));
    vt_ok(vp_op_bce_logits(cmd, mx, mt, l[1]));
    vt_ok(vp_op_dice(cmd, mx, mt, l[2], 8.0f));
    float first[3], again[3];
    for (int rep = 0; rep < 3; rep++) {
        vt_ok(vp_cmd_submit(cmd));
        for (int i = 0; i < 3; i++)
            (rep ? again : first)[i] = download1(l[i]);
        ck_assert_msg(!memcmp(first, again, sizeof first) || rep == 0,
                      "replay %d: losses %.9g %.9g %.9g, first run %.9g %.9g %.9g", rep,
                      (double)again[0], (double)again[1], (double)again[2], (double)first[0],
                      (double)first[1], (double)first[2]);
    }
    vp_cmd_destroy(cmd);
    vp_tensor *ts[] = {x, t, saved, mx, mt, l[0], l[1], l[2]};
    for (size_t i = 0; i < sizeof ts / sizeof ts[0]; i++)
        vp_tensor_destroy(ts[i]);
    free(hx);
    free(hm);
    free(ht);
}
END_TEST

/* ---- errors ------------------------------------------------------------------- */

START_TEST(test_loss_errors)
{
    vp_device *dev = vt_device((uint32_t)_i);
    vp_tensor *x = vt_tensor(dev, "x", 2, (int64_t[]){4, 3}, NULL);
    vp_tensor *x3 = vt_tensor(dev, "x3", 3, (int64_t[]){2, 3, 4}, NULL);
    vp_tensor *x1 = vt_tensor(dev, "x1", 2, (int64_t[]){4, 1}, NULL);
    vp_tensor *ft = vt_tensor(dev, "ft", 1, (int64_t[]){4}, NULL);
    vp_tensor *t = i32_tensor(dev, "t", 4, (int32_t[]){0, 1, 2, 0});
    vp_tensor *t5 = i32_tensor(dev, "t5", 5, (int32_t[]){0, 1, 2, 0, 1});
    vp_tensor *w4 = vt_tensor(dev, "w4", 1, (int64_t[]){4}, NULL);
    vp_tensor *w1 = vt_tensor(dev, "w1", 1, (int64_t[]){1}, NULL);
    vp_tensor *l = scalar(dev, "l", 0), *l2 = vt_tensor(dev, "l2", 1, (int64_t[]){2}, NULL);
    vp_tensor *s = vt_tensor(dev, "s", 2, (int64_t[]){5, 2}, NULL);
    vp_tensor *s4 = vt_tensor(dev, "s4", 2, (int64_t[]){4, 2}, NULL);
    vp_tensor *s1 = vt_tensor(dev, "s1", 2, (int64_t[]){5, 2}, NULL);
    vp_tensor *g = vt_tensor(dev, "g", 2, (int64_t[]){3, 4}, NULL);
    vp_tensor *v7 = vt_tensor(dev, "v7", 1, (int64_t[]){7}, NULL);
    vp_tensor *v8 = vt_tensor(dev, "v8", 1, (int64_t[]){8}, NULL);
    vp_cmd *cmd;
    vt_ok(vp_cmd_create(dev, &cmd));
    vt_ok(vp_cmd_begin(cmd));
    vt_expect_err(vp_op_cross_entropy(cmd, x3, t, NULL, l, s), VP_ERR_SHAPE,
               "cross_entropy: logits x3 (2, 3, 4) must be 2-D (N, C)");
    vt_expect_err(vp_op_cross_entropy(cmd, x, ft, NULL, l, s), VP_ERR_UNSUPPORTED,
               "cross_entropy: target ft is f32; it must be i32");
    vt_expect_err(vp_op_cross_entropy(cmd, x, t5, NULL, l, s), VP_ERR_SHAPE,
               "cross_entropy: target t5 (5) does not match logits x (4, 3): it must be (4)");
    vt_expect_err(vp_op_cross_entropy(cmd, x, t, w4, l, s), VP_ERR_SHAPE,
               "cross_entropy: weight w4 (4) does not match logits x (4, 3): it must be (3)");
    vt_expect_err(vp_op_cross_entropy(cmd, x, t, NULL, l, s4), VP_ERR_SHAPE,
               "cross_entropy: saved s4 (4, 2) must be (5, 2) for logits x (4, 3)");
    vt_expect_err(vp_op_cross_entropy(cmd, x, t, NULL, l2, s), VP_ERR_SHAPE,
               "cross_entropy: loss l2 (2) must have one element");
    vt_expect_err(vp_op_cross_entropy(cmd, x1, t, w1, w1, s1), VP_ERR_INVALID,
               "cross_entropy: output w1 overlaps input w1");
    vt_expect_err(vp_op_cross_entropy(cmd, x, t, NULL, l, t), VP_ERR_UNSUPPORTED,
               "cross_entropy: tensor t is i32; this op takes f32");
    vt_expect_err(vp_op_cross_entropy_backward(cmd, x, t, NULL, s, l2, x, false), VP_ERR_SHAPE,
               "cross_entropy_backward: dloss l2 (2) must have one element");
    vt_expect_err(vp_op_cross_entropy_backward(cmd, x, t, NULL, s, l, g, false), VP_ERR_SHAPE,
               "cross_entropy_backward: x (4, 3) and g (3, 4) must have the same shape");
    vt_expect_err(vp_op_cross_entropy_backward(cmd, x, t, NULL, s, l, x, true), VP_ERR_INVALID,
               "cross_entropy_backward: output x overlaps input x");
    vt_expect_err(vp_op_bce_logits(cmd, v7, v8, l), VP_ERR_SHAPE,
               "bce_logits: v7 (7) and v8 (8) must have the same shape");
    vt_expect_err(vp_op_bce_logits(cmd, v7, v7, l2), VP_ERR_SHAPE,
               "bce_logits: loss l2 (2) must have one element");
    vt_expect_err(vp_op_bce_logits_backward(cmd, v7, v7, l, v7, false), VP_ERR_INVALID,
               "bce_logits_backward: output v7 overlaps input v7");
    vt_expect_err(vp_op_bce_logits_backward(cmd, v8, v8, l, v7, true), VP_ERR_SHAPE,
               "bce_logits_backward: v8 (8) and v7 (7) must have the same shape");
    vt_expect_err(vp_op_dice(cmd, v7, v7, l, 1.0f), VP_ERR_SHAPE,
               "dice: x v7 (7) must have at least 2 dimensions: (masks, ...)");
    vt_expect_err(vp_op_dice(cmd, x, x, l, 0.0f), VP_ERR_INVALID,
               "dice: normalizer 0 must be positive and finite");
    vt_expect_err(vp_op_dice(cmd, x, g, l, 1.0f), VP_ERR_SHAPE,
               "dice: x (4, 3) and g (3, 4) must have the same shape");
    vt_expect_err(vp_op_dice_backward(cmd, x, x, l, x, 2.0f, false), VP_ERR_INVALID,
               "dice_backward: output x overlaps input x");
    vt_expect_err(vp_op_dice_backward(cmd, x, x, l2, g, 2.0f, false), VP_ERR_SHAPE,
               "dice_backward: dloss l2 (2) must have one element");
    ck_assert_uint_eq(vp_cmd_get_stats(cmd).dispatches, 0);
    vt_ok(vp_cmd_submit(cmd));
    vp_cmd_destroy(cmd);
    vp_tensor *ts[] = {x, x3, x1, ft, t, t5, w4, w1, l, l2, s, s4, s1, g, v7, v8};
    for (size_t i = 0; i < sizeof ts / sizeof ts[0]; i++)
        vp_tensor_destroy(ts[i]);
}
END_TEST

int main(void)
{
    Suite *s = suite_create("loss");
    TCase *tc = vt_tcase("reference");
    tcase_add_test(tc, test_reference_fd);
    suite_add_tcase(s, tc);
    tc = vt_tcase("cross_entropy");
    vt_add_per_device(tc, test_cross_entropy, NULL);
    vt_add_per_device(tc, test_cross_entropy_large, NULL);
    vt_add_per_device(tc, test_cross_entropy_ignore, NULL);
    suite_add_tcase(s, tc);
    tc = vt_tcase("bce_dice");
    vt_add_per_device(tc, test_bce_logits, NULL);
    vt_add_per_device(tc, test_bce_logits_large, NULL);
    vt_add_per_device(tc, test_dice, NULL);
    vt_add_per_device(tc, test_dice_large, NULL);
    suite_add_tcase(s, tc);
    tc = vt_tcase("misc");
    vt_add_per_device(tc, test_replay_bits, NULL);
    vt_add_per_device(tc, test_loss_errors, NULL);
    suite_add_tcase(s, tc);
    return vt_run(s);
}
