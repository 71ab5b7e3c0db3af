/*
 * Vision suite: patch im2col, 2x2 max-pool, depth-to-space (and the 2x2
 * stride-2 transposed convolution it completes), bilinear resize, forward
 * and backward on every device against the double references in
 * ref/layout.h, plus cases of PyTorch's semantics worked out by hand. Ops
 * that only move values must match exactly; sums (bias gradient,
 * interpolation) NMSE < 1e-7. The references' backward functions are
 * checked against finite differences of their forward functions.
 */
#include "layout_util.h"

#include "ref/layout.h"

#define TOL 1e-7

/* ---- patch im2col ------------------------------------------------------ */

typedef struct im2col_case {
    int64_t B, C, H, W, p;
} im2col_case;

static const im2col_case im2col_cases[] = {
    {2, 3, 8, 12, 4}, {1, 1, 7, 7, 7}, {1, 3, 16, 16, 4}, {3, 2, 5, 10, 5},
    {1, 3, 33, 66, 3}, {1, 1, 1, 1, 1}, {1, 3, 32, 32, 16},
};

static void fwd_im2col(const double *x, double *y, void *ctx)
{
    const im2col_case *c = ctx;
    vp_ref_im2col_patches(x, c->B, c->C, c->H, c->W, c->p, y);
}

START_TEST(test_im2col)
{
    vp_device *dev = vt_device((uint32_t)_i);
    const char *dn = vt_device_info((uint32_t)_i)->name;
    for (size_t ci = 0; ci < sizeof im2col_cases / sizeof im2col_cases[0]; ci++) {
        const im2col_case *c = &im2col_cases[ci];
        int64_t is[4] = {c->B, c->C, c->H, c->W};
        int64_t cs[3] = {c->B, (c->H / c->p) * (c->W / c->p), c->C * c->p * c->p};
        size_t n = (size_t)(c->B * c->C * c->H * c->W);
        float *hx, *hdc, *hinit;
        vp_tensor *img = lt_rand(dev, "img", 4, is, ci + 1, &hx);
        vp_tensor *cols = vt_tensor(dev, "cols", 3, cs, NULL);
        vp_tensor *dcols = lt_rand(dev, "dcols", 3, cs, ci + 2, &hdc);
        vp_tensor *dimg = vt_tensor(dev, "dimg", 4, is, NULL);
        vp_tensor *dimga = lt_rand(dev, "dimga", 4, is, ci + 3, &hinit);
        vp_cmd *cmd = lt_begin(dev);
        vt_ok(vp_op_im2col_patches(cmd, img, (int)c->p, cols));
        vt_ok(vp_op_im2col_patches_backward(cmd, dcols, (int)c->p, dimg, false));
        vt_ok(vp_op_im2col_patches_backward(cmd, dcols, (int)c->p, dimga, true));
        lt_submit(cmd);
        double *xd = vt_f64(hx, n), *dcd = vt_f64(hdc, n);
        double *want = malloc(n * sizeof *want), *wdx = malloc(n * sizeof *wdx);
        vp_ref_im2col_patches(xd, c->B, c->C, c->H, c->W, c->p, want);
        vp_ref_im2col_patches_backward(dcd, c->B, c->C, c->H, c->W, c->p, wdx);
        float *got = vt_download(cols), *gdx = vt_download(dimg), *gdxa = vt_download(dimga);
        lt_assert_exact(got, want, n, "%s: im2col_patches case %zu", dn, ci);
        lt_assert_exact(gdx, wdx, n, "%s: im2col_patches_backward case %zu", dn, ci);
        lt_acc_expect(wdx, hinit, n);
        lt_assert_exact(gdxa, wdx, n, "%s: im2col_patches_backward case %zu accumulate", dn, ci);
        if (n <= 2000) {
            vp_ref_im2col_patches_backward(dcd, c->B, c->C, c->H, c->W, c->p, wdx);
            lt_check_fd(fwd_im2col, (void *)c, xd, n, n, dcd, wdx, "im2col_patches");
        }
        free(got);
        free(gdx);
        free(gdxa);
        free(xd);
        free(dcd);
        free(want);
        free(wdx);
        free(hx);
        free(hdc);
        free(hinit);
        vp_tensor_destroy(img);
        vp_tensor_destroy(cols);
        vp_tensor_destroy(dcols);
        vp_tensor_destroy(dimg);
        vp_tensor_destroy(dimga);
    }
}
END_TEST

/* im2col then cols x W^T equals PyTorch's Conv2d(Cin, D, p, stride p)
 * followed by flatten(2).transpose(1, 2), computed directly here. */
START_TEST(test_patch_embedding)
{
    vp_device *dev = vt_device((uint32_t)_i);
    static const int64_t cases[][5] = {{2, 3, 16, 16, 4}, {1, 3, 32, 48, 16}, {1, 2, 6, 9, 3}};
    const int64_t D = 24;
    for (size_t ci = 0; ci < sizeof cases / sizeof cases[0]; ci++) {
        int64_t B = cases[ci][0], C = cases[ci][1], H = cases[ci][2], W = cases[ci][3];
        int64_t p = cases[ci][4], hp = H / p, wp = W / p, K = C * p * p;
        float *hx, *hw;
        vp_tensor *img = lt_rand(dev, "img", 4, (int64_t[]){B, C, H, W}, ci + 1, &hx);
        vp_tensor *w = lt_rand(dev, "w", 2, (int64_t[]){D, K}, ci + 2, &hw); /* (D, C, p, p) */
        vp_tensor *cols = vt_tensor(dev, "cols", 3, (int64_t[]){B, hp * wp, K}, NULL);
        vp_tensor *tok = vt_tensor(dev, "tok", 3, (int64_t[]){B, hp * wp, D}, NULL);
        vp_cmd *cmd = lt_begin(dev);
        vt_ok(vp_op_im2col_patches(cmd, img, (int)p, cols));
        vt_ok(vp_op_matmul(cmd, cols, false, w, true, tok));
        lt_submit(cmd);
        size_t n = (size_t)(B * hp * wp * D);
        double *want = malloc(n * sizeof *want);
        for (int64_t b = 0; b < B; b++)
            for (int64_t py = 0; py < hp; py++)
                for (int64_t px = 0; px < wp; px++)
                    for (int64_t d = 0; d < D; d++) {
                        double acc = 0;
                        for (int64_t ci2 = 0; ci2 < C; ci2++)
                            for (int64_t ky = 0; ky < p; ky++)
                                for (int64_t kx = 0; kx < p; kx++)
                                    acc += (double)hx[((b * C + ci2) * H + py * p + ky) * W +
                                                      px * p + kx] *
                                           hw[((d * C + ci2) * p + ky) * p + kx];
                        want[((b * hp + py) * wp + px) * D + d] = acc;
                    }
        float *got = vt_download(tok);
        vt_assert_close(got, want, n, TOL, "%s: patch embedding case %zu",
                        vt_device_info((uint32_t)_i)->name, ci);
        free(got);
        free(want);
        free(hx);
        free(hw);
        vp_tensor_destroy(img);
        vp_tensor_destroy(w);
        vp_tensor_destroy(cols);
        vp_tensor_destroy(tok);
    }
}
END_TEST

/* ---- max-pool ---------------------------------------------------------- */

typedef struct pool_case {
    int64_t B, H, W, C;
} pool_case;

static const pool_case pool_cases[] = {
    {2, 5, 7, 3}, {1, 8, 8, 33}, {1, 2, 2, 1}, {3, 3, 2, 257}, {1, 17, 16, 5},
    {2, 5, 7, 4}, {1, 9, 6, 32}, /* channels a multiple of 4: vec4s */
};

static void fwd_pool(const double *x, double *y, void *ctx)
{
    const pool_case *c = ctx;
    int32_t *am = malloc((size_t)(c->B * c->H * c->W * c->C) * sizeof *am);
    vp_ref_maxpool2(x, c->B, c->H, c->W, c->C, y, am);
    free(am);
}

START_TEST(test_maxpool)
{
    vp_device *dev = vt_device((uint32_t)_i);
    const char *dn = vt_device_info((uint32_t)_i)->name;
    for (size_t ci = 0; ci < sizeof pool_cases / sizeof pool_cases[0]; ci++) {
        const pool_case *c = &pool_cases[ci];
        int64_t xs[4] = {c->B, c->H, c->W, c->C}, ys[4] = {c->B, c->H / 2, c->W / 2, c->C};
        size_t nx = (size_t)(c->B * c->H * c->W * c->C);
        size_t ny = (size_t)(ys[0] * ys[1] * ys[2] * ys[3]);
        float *hx, *hdy, *hinit;
        vp_tensor *x = lt_rand(dev, "x", 4, xs, ci + 1, &hx);
        vp_tensor *y = vt_tensor(dev, "y", 4, ys, NULL);
        vp_tensor *am = lt_i32(dev, "argmax", 4, ys, NULL);
        vp_tensor *dy = lt_rand(dev, "dy", 4, ys, ci + 2, &hdy);
        vp_tensor *dx = vt_tensor(dev, "dx", 4, xs, NULL);
        vp_tensor *dxa = lt_rand(dev, "dxa", 4, xs, ci + 3, &hinit);
        vp_cmd *cmd = lt_begin(dev);
        vt_ok(vp_op_maxpool2(cmd, x, y, am));
        vt_ok(vp_op_maxpool2_backward(cmd, dy, am, dx, false));
        vt_ok(vp_op_maxpool2_backward(cmd, dy, am, dxa, true));
        lt_submit(cmd);
        double *xd = vt_f64(hx, nx), *dyd = vt_f64(hdy, ny);
        double *want = malloc(ny * sizeof *want), *wdx = malloc(nx * sizeof *wdx);
        int32_t *wam = malloc(ny * sizeof *wam);
        vp_ref_maxpool2(xd, c->B, c->H, c->W, c->C, want, wam);
        vp_ref_maxpool2_backward(dyd, wam, c->B, c->H, c->W, c->C, wdx);
        float *got = vt_download(y), *gdx = vt_download(dx), *gdxa = vt_download(dxa);
        int32_t *gam = lt_download_i32(am);
        lt_assert_exact(got, want, ny, "%s: maxpool2 case %zu", dn, ci);
        for (size_t i = 0; i < ny; i++)
            ck_assert_msg(gam[i] == wam[i], "%s: maxpool2 case %zu: argmax %zu is %d, want %d",
                          dn, ci, i, gam[i], wam[i]);
        lt_assert_exact(gdx, wdx, nx, "%s: maxpool2_backward case %zu", dn, ci);
        lt_acc_expect(wdx, hinit, nx);
        lt_assert_exact(gdxa, wdx, nx, "%s: maxpool2_backward case %zu accumulate", dn, ci);
        if (nx <= 2000) { /* random inputs: no ties, so differentiable */
            vp_ref_maxpool2_backward(dyd, wam, c->B, c->H, c->W, c->C, wdx);
            lt_check_fd(fwd_pool, (void *)c, xd, nx, ny, dyd, wdx, "maxpool2");
        }
        free(got);
        free(gdx);
        free(gdxa);
        free(gam);
        free(wam);
        free(xd);
        free(dyd);
        free(want);
        free(wdx);
        free(hx);
        free(hdy);
        free(hinit);
        vp_tensor_destroy(x);
        vp_tensor_destroy(y);
        vp_tensor_destroy(am);
        vp_tensor_destroy(dy);
        vp_tensor_destroy(dx);
        vp_tensor_destroy(dxa);
    }
}
END_TEST

/* Ties, NaN and -inf, PyTorch's way, written out by hand: x (1, 2, 10, C),
 * five windows of columns (0,1), (2,3), ..., argmax = h*10 + w; every
 * channel the same (C 1: scalar kernels, C 4: vec4s). */
static void run_maxpool_ties(uint32_t d, int64_t C)
{
    vp_device *dev = vt_device(d);
    const float inf = INFINITY, nan = NAN;
    const float hx[20] = {
        1, 1, 0, 2, 1, nan, -inf, -inf, 0, 0, /* row 0 */
        1, 1, 2, 1, 3, nan, -inf, -inf, 5, 5, /* row 1 */
    };
    /* all equal: the first; 2 at (0,3) and (1,2): the first in row-major
     * order; NaN at (0,5) and (1,5): a NaN beats 3, the last NaN wins; all
     * -inf: the first; 5 at (1,8) and (1,9): the first */
    const int32_t want_am[5] = {0, 3, 15, 6, 18};
    const float want_y[5] = {1, 2, nan, -inf, 5};
    float x[20 * 4], dy[5 * 4];
    double want_dx[20 * 4] = {0};
    for (int64_t c = 0; c < C; c++) {
        for (int i = 0; i < 20; i++)
            x[i * C + c] = hx[i];
        for (int i = 0; i < 5; i++) {
            dy[i * C + c] = (float)(i + 1);
            want_dx[want_am[i] * C + c] = i + 1;
        }
    }
    vp_tensor *tx = vt_tensor(dev, "x", 4, (int64_t[]){1, 2, 10, C}, x);
    vp_tensor *y = vt_tensor(dev, "y", 4, (int64_t[]){1, 1, 5, C}, NULL);
    vp_tensor *am = lt_i32(dev, "argmax", 4, (int64_t[]){1, 1, 5, C}, NULL);
    vp_tensor *tdy = vt_tensor(dev, "dy", 4, (int64_t[]){1, 1, 5, C}, dy);
    vp_tensor *dx = vt_tensor(dev, "dx", 4, (int64_t[]){1, 2, 10, C}, NULL);
    vp_cmd *cmd = lt_begin(dev);
    vt_ok(vp_op_maxpool2(cmd, tx, y, am));
    vt_ok(vp_op_maxpool2_backward(cmd, tdy, am, dx, false));
    lt_submit(cmd);
    float *gy = vt_download(y), *gdx = vt_download(dx);
    int32_t *gam = lt_download_i32(am);
    for (int i = 0; i < 5; i++)
        for (int64_t c = 0; c < C; c++) {
            int64_t j = i * C + c;
            ck_assert_msg(gam[j] == want_am[i], "C %lld window %d channel %lld: argmax %d, "
                          "want %d", (long long)C, i, (long long)c, gam[j], want_am[i]);
            ck_assert_msg(isnan(want_y[i]) ? isnan(gy[j]) : gy[j] == want_y[i],
                          "C %lld window %d channel %lld: max %g, want %g", (long long)C, i,
                          (long long)c, gy[j], want_y[i]);
        }
    lt_assert_exact(gdx, want_dx, (size_t)(20 * C), "maxpool2_backward with ties, C %lld",
                    (long long)C);
    free(gy);
    free(gdx);
    free(gam);
    vp_tensor_destroy(tx);
    vp_tensor_destroy(y);
    vp_tensor_destroy(am);
    vp_tensor_destroy(tdy);
    vp_tensor_destroy(dx);
}

START_TEST(test_maxpool_ties)
{
    run_maxpool_ties((uint32_t)_i, 1);
    run_maxpool_ties((uint32_t)_i, 4);
}
END_TEST

/* ---- depth to space / transposed convolution --------------------------- */

typedef struct d2s_case {
    int64_t B, H, W, C;
} d2s_case;

/* M = B*2H*2W rows for the bias sum: 1 up to 2048; C over and under the
 * 32 columns of a colsum workgroup. */
static const d2s_case d2s_cases[] = {
    {2, 3, 5, 4}, {1, 1, 1, 1}, {1, 7, 7, 33}, {2, 16, 16, 64}, {1, 2, 9, 3},
};

typedef struct d2s_fd {
    const d2s_case *c;
} d2s_fd;

/* params = x then bias */
static void fwd_d2s(const double *params, double *y, void *ctx)
{
    const d2s_case *c = ((const d2s_fd *)ctx)->c;
    size_t nx = (size_t)(c->B * c->H * c->W * c->C * 4);
    vp_ref_depth_to_space2(params, params + nx, c->B, c->H, c->W, c->C, y);
}

static void run_d2s(uint32_t d, const d2s_case *c, size_t ci, bool with_bias)
{
    vp_device *dev = vt_device(d);
    const char *dn = vt_device_info(d)->name;
    int64_t xs[4] = {c->B, c->H, c->W, 4 * c->C}, ys[4] = {c->B, 2 * c->H, 2 * c->W, c->C};
    size_t n = (size_t)(c->B * c->H * c->W * c->C * 4), nb = (size_t)c->C;
    float *hx, *hb, *hdy, *hinit, *hbinit;
    vp_tensor *x = lt_rand(dev, "x", 4, xs, ci + 1, &hx);
    vp_tensor *bias = lt_rand(dev, "bias", 1, &c->C, ci + 2, &hb);
    vp_tensor *y = vt_tensor(dev, "y", 4, ys, NULL);
    vp_tensor *dy = lt_rand(dev, "dy", 4, ys, ci + 3, &hdy);
    vp_tensor *dx = vt_tensor(dev, "dx", 4, xs, NULL);
    vp_tensor *db = vt_tensor(dev, "dbias", 1, &c->C, NULL);
    vp_tensor *dxa = lt_rand(dev, "dxa", 4, xs, ci + 4, &hinit);
    vp_tensor *dba = lt_rand(dev, "dbias_acc", 1, &c->C, ci + 5, &hbinit);
    vp_cmd *cmd = lt_begin(dev);
    vt_ok(vp_op_depth_to_space2(cmd, x, with_bias ? bias : NULL, y));
    vt_ok(vp_op_depth_to_space2_backward(cmd, dy, dx, with_bias ? db : NULL, false));
    vt_ok(vp_op_depth_to_space2_backward(cmd, dy, dxa, with_bias ? dba : NULL, true));
    lt_submit(cmd);
    double *params = malloc((n + nb) * sizeof *params), *dyd = vt_f64(hdy, n);
    for (size_t i = 0; i < n; i++)
        params[i] = hx[i];
    for (size_t i = 0; i < nb; i++)
        params[n + i] = with_bias ? hb[i] : 0.0;
    double *want = malloc(n * sizeof *want), *grad = malloc((n + nb) * sizeof *grad);
    vp_ref_depth_to_space2(params, with_bias ? params + n : NULL, c->B, c->H, c->W, c->C, want);
    vp_ref_depth_to_space2_backward(dyd, c->B, c->H, c->W, c->C, grad, grad + n);
    float *got = vt_download(y), *gdx = vt_download(dx), *gdxa = vt_download(dxa);
    /* x + bias is one rounding of the exact sum either way */
    lt_assert_exact(got, want, n, "%s: depth_to_space2 case %zu%s", dn, ci,
                    with_bias ? " with bias" : "");
    lt_assert_exact(gdx, grad, n, "%s: depth_to_space2_backward case %zu", dn, ci);
    if (with_bias) {
        float *gdb = vt_download(db), *gdba = vt_download(dba);
        vt_assert_close(gdb, grad + n, nb, TOL, "%s: depth_to_space2_backward dbias case %zu",
                        dn, ci);
        for (size_t i = 0; i < nb; i++)
            grad[n + i] += hbinit[i];
        vt_assert_close(gdba, grad + n, nb, TOL, "%s: depth_to_space2_backward dbias case %zu "
                        "accumulate", dn, ci);
        free(gdb);
        free(gdba);
    }
    lt_acc_expect(grad, hinit, n);
    lt_assert_exact(gdxa, grad, n, "%s: depth_to_space2_backward case %zu accumulate", dn, ci);
    if (n <= 2000 && with_bias) {
        vp_ref_depth_to_space2_backward(dyd, c->B, c->H, c->W, c->C, grad, grad + n);
        d2s_fd k = {c};
        lt_check_fd(fwd_d2s, &k, params, n + nb, n, dyd, grad, "depth_to_space2");
    }
    free(got);
    free(gdx);
    free(gdxa);
    free(params);
    free(dyd);
    free(want);
    free(grad);
    free(hx);
    free(hb);
    free(hdy);
    free(hinit);
    free(hbinit);
    vp_tensor *all[] = {x, bias, y, dy, dx, db, dxa, dba};
    for (size_t i = 0; i < sizeof all / sizeof all[0]; i++)
        vp_tensor_destroy(all[i]);
}

START_TEST(test_depth_to_space2)
{
    for (size_t ci = 0; ci < sizeof d2s_cases / sizeof d2s_cases[0]; ci++) {
        run_d2s((uint32_t)_i, &d2s_cases[ci], ci, true);
        run_d2s((uint32_t)_i, &d2s_cases[ci], ci, false);
    }
}
END_TEST

/* ConvTranspose2d(Cin, Cout, 2, stride 2) as matmul with the PyTorch weight
 * (Cin, Cout, 2, 2) seen as (Cin, Cout*4), then depth_to_space2, against
 * the direct definition. */
START_TEST(test_conv_transpose2x2)
{
    vp_device *dev = vt_device((uint32_t)_i);
    static const int64_t cases[][5] = {{2, 3, 5, 7, 6}, {1, 8, 8, 32, 16}, {1, 1, 1, 1, 1},
                                       {2, 4, 3, 33, 5}};
    for (size_t ci = 0; ci < sizeof cases / sizeof cases[0]; ci++) {
        int64_t B = cases[ci][0], H = cases[ci][1], W = cases[ci][2], Cin = cases[ci][3];
        int64_t Cout = cases[ci][4];
        float *hx, *hw, *hb;
        vp_tensor *x = lt_rand(dev, "x", 4, (int64_t[]){B, H, W, Cin}, ci + 1, &hx);
        vp_tensor *w = lt_rand(dev, "w", 2, (int64_t[]){Cin, Cout * 4}, ci + 2, &hw);
        vp_tensor *bias = lt_rand(dev, "bias", 1, &Cout, ci + 3, &hb);
        vp_tensor *t = vt_tensor(dev, "t", 4, (int64_t[]){B, H, W, Cout * 4}, NULL);
        vp_tensor *y = vt_tensor(dev, "y", 4, (int64_t[]){B, 2 * H, 2 * W, Cout}, NULL);
        vp_cmd *cmd = lt_begin(dev);
        vt_ok(vp_op_matmul(cmd, x, false, w, false, t));
        vt_ok(vp_op_depth_to_space2(cmd, t, bias, y));
        lt_submit(cmd);
        size_t nx = (size_t)(B * H * W * Cin), nw = (size_t)(Cin * Cout * 4);
        size_t ny = (size_t)(B * 4 * H * W * Cout);
        double *xd = vt_f64(hx, nx), *wd = vt_f64(hw, nw), *bd = vt_f64(hb, (size_t)Cout);
        double *want = malloc(ny * sizeof *want);
        vp_ref_conv_transpose2x2(xd, wd, bd, B, H, W, Cin, Cout, want);
        float *got = vt_download(y);
        vt_assert_close(got, want, ny, TOL, "%s: conv_transpose2x2 B %lld H %lld W %lld Cin %lld "
                        "Cout %lld", vt_device_info((uint32_t)_i)->name, (long long)B,
                        (long long)H, (long long)W, (long long)Cin, (long long)Cout);
        free(got);
        free(want);
        free(xd);
        free(wd);
        free(bd);
        free(hx);
        free(hw);
        free(hb);
        vp_tensor *all[] = {x, w, bias, t, y};
        for (size_t i = 0; i < sizeof all / sizeof all[0]; i++)
            vp_tensor_destroy(all[i]);
    }
}
END_TEST

/* ---- bilinear resize --------------------------------------------------- */

/* Runs forward and backward on one channels-last map; returns the outputs
 * (caller frees). up2: through vp_op_upsample_bilinear2. */
static void resize_gpu(uint32_t d, int64_t B, int64_t H, int64_t W, int64_t C, int64_t Ho,
                       int64_t Wo, const float *hx, const float *hdy, const float *hinit,
                       bool up2, float **y, float **dx, float **dxa)
{
    vp_device *dev = vt_device(d);
    int64_t xs[4] = {B, H, W, C}, ys[4] = {B, Ho, Wo, C};
    vp_tensor *x = vt_tensor(dev, "x", 4, xs, hx), *ty = vt_tensor(dev, "y", 4, ys, NULL);
    vp_tensor *dy = vt_tensor(dev, "dy", 4, ys, hdy), *tdx = vt_tensor(dev, "dx", 4, xs, NULL);
    vp_tensor *tdxa = hinit ? vt_tensor(dev, "dxa", 4, xs, hinit) : NULL;
    vp_cmd *cmd = lt_begin(dev);
    if (up2) {
        vt_ok(vp_op_upsample_bilinear2(cmd, x, ty));
        vt_ok(vp_op_upsample_bilinear2_backward(cmd, dy, tdx, false));
        if (tdxa)
            vt_ok(vp_op_upsample_bilinear2_backward(cmd, dy, tdxa, true));
    } else {
        vt_ok(vp_op_resize_bilinear(cmd, x, ty));
        vt_ok(vp_op_resize_bilinear_backward(cmd, dy, tdx, false));
        if (tdxa)
            vt_ok(vp_op_resize_bilinear_backward(cmd, dy, tdxa, true));
    }
    lt_submit(cmd);
    *y = vt_download(ty);
    *dx = vt_download(tdx);
    *dxa = tdxa ? vt_download(tdxa) : NULL;
    vp_tensor_destroy(x);
    vp_tensor_destroy(ty);
    vp_tensor_destroy(dy);
    vp_tensor_destroy(tdx);
    vp_tensor_destroy(tdxa);
}

/* PyTorch's F.interpolate(mode='bilinear', align_corners=False) on small
 * maps, expected values worked out by hand from
 *   src = max((dst + 0.5) * in/out - 0.5, 0), i0 = floor(src),
 *   i1 = min(i0 + 1, in - 1), l = src - i0, out = (1 - l) x[i0] + l x[i1]
 * per axis. */
START_TEST(test_bilinear_by_hand)
{
    uint32_t d = (uint32_t)_i;
    float *y, *dx, *dxa;

    /* 2x2 -> 4x4 (scale_factor=2, in/out = 1/2). Per axis:
     *   dst 0: src = max(0.25 - 0.5, 0) = 0     -> x0
     *   dst 1: src = 0.75 - 0.5 = 0.25          -> 0.75 x0 + 0.25 x1
     *   dst 2: src = 1.25 - 0.5 = 0.75          -> 0.25 x0 + 0.75 x1
     *   dst 3: src = 1.75 - 0.5 = 1.25, i0 = 1, i1 = min(2, 1) = 1 -> x1
     * x = [[1, 2], [3, 4]]: rows interpolate to [1, 1.25, 1.75, 2] and
     * [3, 3.25, 3.75, 4], then mix by the same weights. This is what
     * PyTorch prints for F.interpolate(x, scale_factor=2, mode='bilinear'). */
    {
        const float x[4] = {1, 2, 3, 4};
        const double want[16] = {1.0, 1.25, 1.75, 2.0, 1.5, 1.75, 2.25, 2.5,
                                 2.5, 2.75, 3.25, 3.5, 3.0, 3.25, 3.75, 4.0};
        /* backward, dy = 1 at output (1, 2) only: weights of output row 1
         * are 0.75 (row 0), 0.25 (row 1); of output column 2, 0.25
         * (column 0), 0.75 (column 1) */
        float dy[16] = {0};
        dy[1 * 4 + 2] = 1;
        const double want_dx[4] = {0.75 * 0.25, 0.75 * 0.75, 0.25 * 0.25, 0.25 * 0.75};
        for (int up2 = 0; up2 < 2; up2++) {
            resize_gpu(d, 1, 2, 2, 1, 4, 4, x, dy, NULL, up2, &y, &dx, &dxa);
            lt_assert_exact(y, want, 16, "2x2 -> 4x4%s", up2 ? " (upsample2)" : "");
            lt_assert_exact(dx, want_dx, 4, "backward of 2x2 -> 4x4%s", up2 ? " (upsample2)" : "");
            free(y);
            free(dx);
        }
        /* dy all ones: each input gets (1 + 0.75 + 0.25 + 0) per axis = 2,
         * 4 in all */
        for (int i = 0; i < 16; i++)
            dy[i] = 1;
        const double four[4] = {4, 4, 4, 4};
        resize_gpu(d, 1, 2, 2, 1, 4, 4, x, dy, NULL, true, &y, &dx, &dxa);
        lt_assert_exact(dx, four, 4, "backward of 2x2 -> 4x4, dy = 1");
        free(y);
        free(dx);
    }
    /* 1x3 -> 1x2 (in/out = 1.5), x = [0, 4, 8]:
     *   dst 0: src = 0.5 * 1.5 - 0.5 = 0.25 -> 0.75*0 + 0.25*4 = 1
     *   dst 1: src = 1.5 * 1.5 - 0.5 = 1.75 -> 0.25*4 + 0.75*8 = 7
     * (height 1 -> 1: src = 0.5 - 0.5 = 0). Backward of dy = [1, 1]:
     *   dx = [0.75, 0.25 + 0.25, 0.75] */
    {
        const float x[3] = {0, 4, 8}, dy[2] = {1, 1};
        const double want[2] = {1, 7}, want_dx[3] = {0.75, 0.5, 0.75};
        resize_gpu(d, 1, 1, 3, 1, 1, 2, x, dy, NULL, false, &y, &dx, &dxa);
        lt_assert_exact(y, want, 2, "1x3 -> 1x2");
        lt_assert_exact(dx, want_dx, 3, "backward of 1x3 -> 1x2");
        free(y);
        free(dx);
    }
    /* 3 -> 5 along H (in/out = 0.6, not exact in f32, so compared to
     * 1e-6), x = [0, 10, 20]:
     *   dst 0: src = max(0.3 - 0.5, 0) = 0      -> 0
     *   dst 1: src = 0.9 - 0.5 = 0.4            -> 0.6*0 + 0.4*10 = 4
     *   dst 2: src = 1.5 - 0.5 = 1.0            -> 10
     *   dst 3: src = 2.1 - 0.5 = 1.6            -> 0.4*10 + 0.6*20 = 16
     *   dst 4: src = 2.7 - 0.5 = 2.2, i1 = 2    -> 20
     * Backward of dy = [1, 1, 1, 1, 1]: x0 gets 1 + 0.6, x1 gets 0.4 + 1
     * + 0.4, x2 gets 0.6 + 1 -> [1.6, 1.8, 1.6]. */
    {
        const float x[3] = {0, 10, 20}, dy[5] = {1, 1, 1, 1, 1};
        const double want[5] = {0, 4, 10, 16, 20}, want_dx[3] = {1.6, 1.8, 1.6};
        resize_gpu(d, 1, 3, 1, 1, 5, 1, x, dy, NULL, false, &y, &dx, &dxa);
        double gy[5], gdx[3];
        for (int i = 0; i < 5; i++)
            gy[i] = y[i];
        for (int i = 0; i < 3; i++)
            gdx[i] = dx[i];
        vt_assert_rel_close(gy, want, 5, 1e-6, "3 -> 5");
        vt_assert_rel_close(gdx, want_dx, 3, 1e-6, "backward of 3 -> 5");
        free(y);
        free(dx);
    }
}
END_TEST

typedef struct resize_case {
    int64_t B, H, W, C, Ho, Wo;
} resize_case;

static const resize_case resize_cases[] = {
    {2, 5, 7, 3, 10, 14},    /* by 2, odd sizes */
    {1, 1, 1, 4, 2, 2},      /* by 2 from one pixel */
    {1, 33, 17, 2, 66, 34},  /* by 2 */
    {1, 5, 7, 3, 13, 4},     /* up along H, down along W */
    {2, 16, 16, 5, 64, 64},  /* by 4: masks to the image */
    {1, 9, 9, 2, 3, 3},      /* down by 3 */
    {1, 7, 5, 1, 1, 1},      /* to one pixel */
    {1, 1, 1, 3, 5, 6},      /* from one pixel */
    {1, 10, 3, 257, 7, 11},  /* non-integer ratios, many channels */
    {1, 4, 4, 2, 4, 4},      /* same size: identity */
    /* channels a multiple of 4: vec4s */
    {1, 6, 5, 8, 12, 10},    /* by 2 */
    {1, 5, 7, 12, 13, 4},    /* up along H, down along W */
    {2, 9, 9, 4, 3, 3},      /* down by 3 */
    {1, 8, 8, 4, 32, 32},    /* by 4 */
};

typedef struct resize_fd {
    const resize_case *c;
} resize_fd;

static void fwd_resize(const double *x, double *y, void *ctx)
{
    const resize_case *c = ((const resize_fd *)ctx)->c;
    vp_ref_resize_bilinear(x, c->B, c->H, c->W, c->C, c->Ho, c->Wo, y);
}

START_TEST(test_resize_bilinear)
{
    uint32_t d = (uint32_t)_i;
    const char *dn = vt_device_info(d)->name;
    for (size_t ci = 0; ci < sizeof resize_cases / sizeof resize_cases[0]; ci++) {
        const resize_case *c = &resize_cases[ci];
        size_t nx = (size_t)(c->B * c->H * c->W * c->C), ny = (size_t)(c->B * c->Ho * c->Wo * c->C);
        float *hx = malloc(nx * sizeof *hx), *hdy = malloc(ny * sizeof *hdy);
        float *hinit = malloc(nx * sizeof *hinit);
        vt_rand(hx, nx, ci + 1);
        vt_rand(hdy, ny, ci + 2);
        vt_rand(hinit, nx, ci + 3);
        double *xd = vt_f64(hx, nx), *dyd = vt_f64(hdy, ny);
        double *want = malloc(ny * sizeof *want), *wdx = malloc(nx * sizeof *wdx);
        vp_ref_resize_bilinear(xd, c->B, c->H, c->W, c->C, c->Ho, c->Wo, want);
        vp_ref_resize_bilinear_backward(dyd, c->B, c->H, c->W, c->C, c->Ho, c->Wo, wdx);
        bool by2 = c->Ho == 2 * c->H && c->Wo == 2 * c->W;
        for (int up2 = 0; up2 <= (int)by2; up2++) {
            float *y, *dx, *dxa;
            resize_gpu(d, c->B, c->H, c->W, c->C, c->Ho, c->Wo, hx, hdy, hinit, up2, &y, &dx,
                       &dxa);
            const char *op = up2 ? "upsample_bilinear2" : "resize_bilinear";
            vt_assert_close(y, want, ny, TOL, "%s: %s (%lld, %lld) -> (%lld, %lld)", dn, op,
                            (long long)c->H, (long long)c->W, (long long)c->Ho, (long long)c->Wo);
            vt_assert_close(dx, wdx, nx, TOL, "%s: %s_backward (%lld, %lld) -> (%lld, %lld)", dn,
                            op, (long long)c->H, (long long)c->W, (long long)c->Ho,
                            (long long)c->Wo);
            double *wacc = malloc(nx * sizeof *wacc);
            for (size_t i = 0; i < nx; i++)
                wacc[i] = wdx[i] + hinit[i];
            vt_assert_close(dxa, wacc, nx, TOL, "%s: %s_backward accumulate (%lld, %lld) -> "
                            "(%lld, %lld)", dn, op, (long long)c->H, (long long)c->W,
                            (long long)c->Ho, (long long)c->Wo);
            free(wacc);
            free(y);
            free(dx);
            free(dxa);
        }
        if (nx <= 2000) {
            resize_fd k = {c};
            lt_check_fd(fwd_resize, &k, xd, nx, ny, dyd, wdx, "resize_bilinear");
        }
        free(hx);
        free(hdy);
        free(hinit);
        free(xd);
        free(dyd);
        free(want);
        free(wdx);
    }
}
END_TEST

/* ---- errors ------------------------------------------------------------ */

START_TEST(test_vision_errors)
{
    vp_device *dev = vt_device((uint32_t)_i);
    vp_tensor *img = vt_tensor(dev, "img", 4, (int64_t[]){1, 3, 15, 16}, NULL);
    vp_tensor *img16 = vt_tensor(dev, "img", 4, (int64_t[]){1, 3, 16, 16}, NULL);
    vp_tensor *img3 = vt_tensor(dev, "img", 3, (int64_t[]){3, 16, 16}, NULL);
    vp_tensor *cols = vt_tensor(dev, "cols", 3, (int64_t[]){1, 16, 47}, NULL);
    vp_tensor *x = vt_tensor(dev, "x", 4, (int64_t[]){1, 5, 5, 3}, NULL);
    vp_tensor *y = vt_tensor(dev, "y", 4, (int64_t[]){1, 3, 3, 3}, NULL);
    vp_tensor *y2 = vt_tensor(dev, "y", 4, (int64_t[]){1, 2, 2, 3}, NULL);
    vp_tensor *am = lt_i32(dev, "argmax", 4, (int64_t[]){1, 2, 2, 3}, NULL);
    vp_tensor *amf = vt_tensor(dev, "argmax", 4, (int64_t[]){1, 2, 2, 3}, NULL);
    vp_tensor *t7 = vt_tensor(dev, "t", 4, (int64_t[]){1, 2, 2, 7}, NULL);
    vp_tensor *t8 = vt_tensor(dev, "t", 4, (int64_t[]){1, 2, 2, 8}, NULL);
    vp_tensor *up = vt_tensor(dev, "up", 4, (int64_t[]){1, 4, 4, 2}, NULL);
    vp_tensor *up3 = vt_tensor(dev, "up", 4, (int64_t[]){1, 4, 3, 2}, NULL);
    vp_tensor *b3 = vt_tensor(dev, "bias", 1, (int64_t[]){3}, NULL);
    vp_tensor *r = vt_tensor(dev, "r", 4, (int64_t[]){1, 8, 8, 2}, NULL);
    vp_tensor *z = vt_tensor(dev, "z", 4, (int64_t[]){1, 8, 7, 2}, NULL);
    vp_cmd *cmd = lt_begin(dev);

    vt_expect_err(vp_op_im2col_patches(cmd, img, 4, cols), VP_ERR_SHAPE,
               "im2col_patches: img (1, 3, 15, 16): H and W must be multiples of the patch 4");
    vt_expect_err(vp_op_im2col_patches(cmd, img16, 4, cols), VP_ERR_SHAPE,
               "im2col_patches: img (1, 3, 16, 16) with patch 4 gives (1, 16, 48), not cols "
               "(1, 16, 47)");
    vt_expect_err(vp_op_im2col_patches(cmd, img16, 0, cols), VP_ERR_SHAPE,
               "im2col_patches: patch 0 must be at least 1");
    vt_expect_err(vp_op_im2col_patches(cmd, img3, 4, cols), VP_ERR_SHAPE,
               "im2col_patches: img (3, 16, 16) must have 4 dimensions (B, Cin, H, W)");
    vt_expect_err(vp_op_im2col_patches_backward(cmd, cols, 4, img16, true), VP_ERR_SHAPE,
               "im2col_patches_backward: img (1, 3, 16, 16) with patch 4 gives (1, 16, 48), "
               "not cols (1, 16, 47)");

    vt_expect_err(vp_op_maxpool2(cmd, x, y, am), VP_ERR_SHAPE,
               "maxpool2: x (1, 5, 5, 3) pools to (1, 2, 2, 3), not y (1, 3, 3, 3)");
    vt_expect_err(vp_op_maxpool2(cmd, x, y2, amf), VP_ERR_UNSUPPORTED,
               "maxpool2: tensor argmax is f32; this op takes i32");
    vt_expect_err(vp_op_maxpool2(cmd, x, x, am), VP_ERR_SHAPE,
               "maxpool2: x (1, 5, 5, 3) pools to (1, 2, 2, 3), not x (1, 5, 5, 3)");
    vt_expect_err(vp_op_maxpool2_backward(cmd, y, am, x, false), VP_ERR_SHAPE,
               "maxpool2_backward: x (1, 5, 5, 3) pools to (1, 2, 2, 3), not y (1, 3, 3, 3)");

    vt_expect_err(vp_op_depth_to_space2(cmd, t7, NULL, up), VP_ERR_SHAPE,
               "depth_to_space2: t (1, 2, 2, 7): the channels must be a multiple of 4 "
               "(C*4, in (c, ky, kx) order)");
    vt_expect_err(vp_op_depth_to_space2(cmd, t8, NULL, up3), VP_ERR_SHAPE,
               "depth_to_space2: t (1, 2, 2, 8) rearranges to (1, 4, 4, 2), not up (1, 4, 3, 2)");
    vt_expect_err(vp_op_depth_to_space2(cmd, t8, b3, up), VP_ERR_SHAPE,
               "depth_to_space2: bias (3) must be (2), one value per output channel");
    vt_expect_err(vp_op_depth_to_space2_backward(cmd, up3, t8, NULL, false), VP_ERR_SHAPE,
               "depth_to_space2_backward: t (1, 2, 2, 8) rearranges to (1, 4, 4, 2), not up "
               "(1, 4, 3, 2)");
    vt_expect_err(vp_op_depth_to_space2_backward(cmd, up, t8, b3, false), VP_ERR_SHAPE,
               "depth_to_space2_backward: bias (3) must be (2), one value per output channel");

    vt_expect_err(vp_op_resize_bilinear(cmd, x, r), VP_ERR_SHAPE,
               "resize_bilinear: x (1, 5, 5, 3) and r (1, 8, 8, 2) must agree in batch and "
               "channels");
    vt_expect_err(vp_op_resize_bilinear(cmd, img3, r), VP_ERR_SHAPE,
               "resize_bilinear: img (3, 16, 16) must have 4 dimensions (B, H, W, C)");
    vt_expect_err(vp_op_resize_bilinear_backward(cmd, r, x, false), VP_ERR_SHAPE,
               "resize_bilinear_backward: x (1, 5, 5, 3) and r (1, 8, 8, 2) must agree in "
               "batch and channels");
    vt_expect_err(vp_op_resize_bilinear(cmd, r, r), VP_ERR_INVALID,
               "resize_bilinear: r and r overlap");
    vt_expect_err(vp_op_upsample_bilinear2(cmd, up, z), VP_ERR_SHAPE,
               "upsample_bilinear2: up (1, 4, 4, 2) upsamples to (1, 8, 8, 2), not z "
               "(1, 8, 7, 2)");
    vt_expect_err(vp_op_upsample_bilinear2_backward(cmd, z, up, true), VP_ERR_SHAPE,
               "upsample_bilinear2_backward: up (1, 4, 4, 2) upsamples to (1, 8, 8, 2), not z "
               "(1, 8, 7, 2)");
    ck_assert_uint_eq(vp_cmd_get_stats(cmd).dispatches, 0);
    lt_submit(cmd);
    vp_tensor *all[] = {img, img16, img3, cols, x, y, y2, am, amf, t7, t8, up, up3, b3, r, z};
    for (size_t i = 0; i < sizeof all / sizeof all[0]; i++)
        vp_tensor_destroy(all[i]);
}
END_TEST

int main(void)
{
    Suite *s = suite_create("vision");
    TCase *tc = vt_tcase("im2col");
    vt_add_per_device(tc, test_im2col, NULL);
    vt_add_per_device(tc, test_patch_embedding, NULL);
    suite_add_tcase(s, tc);
    tc = vt_tcase("maxpool");
    vt_add_per_device(tc, test_maxpool, NULL);
    vt_add_per_device(tc, test_maxpool_ties, NULL);
    suite_add_tcase(s, tc);
    tc = vt_tcase("depth_to_space");
    vt_add_per_device(tc, test_depth_to_space2, NULL);
    vt_add_per_device(tc, test_conv_transpose2x2, NULL);
    suite_add_tcase(s, tc);
    tc = vt_tcase("bilinear");
    vt_add_per_device(tc, test_bilinear_by_hand, NULL);
    vt_add_per_device(tc, test_resize_bilinear, NULL);
    suite_add_tcase(s, tc);
    tc = vt_tcase("errors");
    vt_add_per_device(tc, test_vision_errors, NULL);
    suite_add_tcase(s, tc);
    return vt_run(s);
}
