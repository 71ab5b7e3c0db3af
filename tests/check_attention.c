/*
 * attention suite: the fused attention op (core/ops/attention.h) on every
 * device under test against the double-precision CPU reference
 * (vp_ref_attention, core/ref/nn.c): out and the log-sum-exp forward; dq,
 * dk, dv and the bias gradient backward, each with accumulate on and off;
 * heads of 1 to 128 channels (odd ones too), keys from 1 to 257, biases per
 * image, per window position (M dividing B) and shared, per head or for
 * every head, -inf entries and rows with every key masked. The reference's
 * backward against central finite differences of its forward; two runs bit
 * for bit the same; the error messages.
 *
 * Bounds: NMSE < 1e-7, as for every op (1e-6 for the wide heads over
 * hundreds of keys, whose sums run in float).
 */
#include "harness.h"

#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "graph/graph.h"
#include "ops/attention.h"
#include "ref/nn.h"

#define TOL 1e-7

typedef struct attn_case {
    int64_t B, Nq, Nk, H, Dh;
    int bias;       /* 0 none, 1 (M, Hb, Nq, Nk) */
    int64_t M, Hb;
    int mask;       /* -inf entries: 1 some, 2 also every key of (m 0, row 1) */
    double tol;
} attn_case;

static const attn_case cases[] = {
    {1, 1, 1, 1, 1, 0, 1, 1, 0, TOL},
    {2, 7, 33, 3, 5, 0, 1, 1, 0, TOL},
    {4, 9, 16, 2, 32, 1, 2, 2, 0, TOL},   /* Swin: a bias per window position, per head */
    {2, 10, 257, 4, 8, 1, 2, 1, 2, TOL},  /* Mask2Former: one mask per image, every head */
    {3, 5, 6, 2, 4, 1, 1, 2, 1, TOL},     /* one bias for every image, per head */
    {1, 33, 7, 1, 64, 1, 1, 1, 0, TOL},
    {2, 3, 257, 1, 128, 0, 1, 1, 0, 1e-6},
    {2, 3, 600, 2, 64, 0, 1, 1, 0, 1e-6}, /* 600 x 64 channel steps: unrolled (attn.glsl) */
    {2, 70, 40, 2, 6, 1, 1, 1, 1, TOL},
};

static float *rand_f(size_t n, uint64_t seed, double scale)
{
    float *x = malloc((n ? n : 1) * sizeof *x);
    ck_assert_ptr_nonnull(x);
    vt_rand(x, n, seed);
    for (size_t i = 0; i < n; i++)
        x[i] = (float)(x[i] * scale);
    return x;
}

static void fill_bias(const attn_case *c, float *b)
{
    int64_t n = c->M * c->Hb * c->Nq * c->Nk;
    vt_rand(b, (size_t)n, 77);
    for (int64_t e = 0; c->mask && e < n; e++) {
        int64_t j = e % c->Nk, i = (e / c->Nk) % c->Nq, m = e / (c->Nk * c->Nq * c->Hb);
        if ((j + 2 * i) % 5 == 3 || (c->mask == 2 && m == 0 && i == 1))
            b[e] = -INFINITY;
    }
}

/* +inf entries (fully masked rows) must agree; they are then zeroed so
 * that the NMSE covers the rest. */
static void check_inf_rows(float *got, double *want, size_t n, const char *what)
{
    for (size_t i = 0; i < n; i++)
        if (isinf(want[i]) || isinf(got[i])) {
            ck_assert_msg(isinf(want[i]) && got[i] == (float)want[i], "%s[%zu] = %g, want %g",
                          what, i, got[i], want[i]);
            got[i] = 0.0f;
            want[i] = 0.0;
        }
}

static void check(const vp_tensor *t, double *want, const char *what, const char *dn,
                  const attn_case *c, bool acc)
{
    size_t n = (size_t)vp_tensor_nelem(t);
    float *got = vt_download(t);
    check_inf_rows(got, want, n, what);
    vt_assert_close(got, want, n, c->tol,
                    "%s: %s B %lld Nq %lld Nk %lld H %lld Dh %lld bias %d (M %lld Hb %lld) "
                    "mask %d%s",
                    dn, what, (long long)c->B, (long long)c->Nq, (long long)c->Nk,
                    (long long)c->H, (long long)c->Dh, c->bias, (long long)c->M,
                    (long long)c->Hb, c->mask, acc ? " accumulate" : "");
    free(got);
}

/* A gradient output: random contents and their copy in *want when acc,
 * else poisoned and *want zeros. */
static vp_tensor *grad_out(vp_device *dev, const char *name, int ndim, const int64_t *shape,
                           bool acc, uint64_t seed, double **want)
{
    size_t n = 1;
    for (int i = 0; i < ndim; i++)
        n *= (size_t)shape[i];
    float *h = rand_f(n, seed, 1.0);
    *want = acc ? vt_f64(h, n) : calloc(n, sizeof **want);
    ck_assert_ptr_nonnull(*want);
    vp_tensor *t = vt_tensor(dev, name, ndim, shape, acc ? h : NULL);
    free(h);
    return t;
}

static void run_case(uint32_t d, const attn_case *c, bool acc)
{
    vp_device *dev = vt_device(d);
    const char *dn = vt_device_info(d)->name;
    int64_t D = c->H * c->Dh;
    int64_t sq[3] = {c->B, c->Nq, D}, sk[3] = {c->B, c->Nk, D}, sl[3] = {c->B, c->H, c->Nq};
    int64_t ss[4] = {c->B, c->H, c->Nq, 2}, sb[4] = {c->M, c->Hb, c->Nq, c->Nk};
    size_t nq = (size_t)(c->B * c->Nq * D), nk = (size_t)(c->B * c->Nk * D);
    size_t nl = (size_t)(c->B * c->H * c->Nq), nb = (size_t)(c->M * c->Hb * c->Nq * c->Nk);
    double scale = 1.0 / sqrt((double)c->Dh);
    float *hq = rand_f(nq, 1 + (uint64_t)D, 1.5), *hk = rand_f(nk, 2 + (uint64_t)D, 1.5);
    float *hv = rand_f(nk, 3, 1.0), *hdo = rand_f(nq, 4, 1.0);
    float *hb = NULL;
    if (c->bias) {
        hb = malloc(nb * sizeof *hb);
        ck_assert_ptr_nonnull(hb);
        fill_bias(c, hb);
    }
    double *q = vt_f64(hq, nq), *k = vt_f64(hk, nk), *v = vt_f64(hv, nk), *dout = vt_f64(hdo, nq);
    double *bias = hb ? vt_f64(hb, nb) : NULL;
    double *wo = calloc(nq, sizeof *wo), *wl = calloc(nl, sizeof *wl);
    ck_assert(wo && wl);
    vp_ref_attn_dims dims = {c->B, c->Nq, c->Nk, c->H, c->Dh, c->M, c->Hb, (float)scale};
    vp_ref_attention(&dims, q, k, v, bias, wo, wl);

    vp_tensor *tq = vt_tensor(dev, "q", 3, sq, hq), *tk = vt_tensor(dev, "k", 3, sk, hk);
    vp_tensor *tv = vt_tensor(dev, "v", 3, sk, hv), *tdo = vt_tensor(dev, "dout", 3, sq, hdo);
    vp_tensor *tb = hb ? vt_tensor(dev, "bias", 4, sb, hb) : NULL;
    vp_tensor *to = vt_tensor(dev, "out", 3, sq, NULL), *tl = vt_tensor(dev, "lse", 3, sl, NULL);
    vp_tensor *ts = vt_tensor(dev, "stats", 4, ss, NULL);
    double *wdq, *wdk, *wdv, *wdb = hb ? calloc(nb, sizeof *wdb) : NULL;
    vp_tensor *tdq = grad_out(dev, "dq", 3, sq, acc, 11, &wdq);
    vp_tensor *tdk = grad_out(dev, "dk", 3, sk, acc, 12, &wdk);
    vp_tensor *tdv = grad_out(dev, "dv", 3, sk, acc, 13, &wdv);
    int64_t sds[4] = {c->B, c->H, c->Nq, c->Nk};
    vp_tensor *tds = hb ? vt_tensor(dev, "ds", 4, sds, NULL) : NULL;
    vp_ref_attention_backward(&dims, q, k, v, bias, dout, wdq, wdk, wdv, wdb, acc);

    vp_cmd *cmd;
    vt_ok(vp_cmd_create(dev, &cmd));
    vt_ok(vp_cmd_begin(cmd));
    vt_ok(vp_op_attention(cmd, tq, tk, tv, tb, (int)c->H, (float)scale, to, tl));
    vt_ok(vp_op_attention_backward(cmd, tq, tk, tv, tb, (int)c->H, (float)scale, tl, tdo, ts,
                                   tdq, acc, tdk, acc, tdv, acc, tds));
    vt_ok(vp_cmd_submit(cmd));
    vp_cmd_destroy(cmd);
    check(to, wo, "out", dn, c, false);
    check(tl, wl, "lse", dn, c, false);
    check(tdq, wdq, "dq", dn, c, acc);
    check(tdk, wdk, "dk", dn, c, acc);
    check(tdv, wdv, "dv", dn, c, acc);
    if (tds) { /* the bias's gradient: ds summed over the images and heads sharing it */
        float *gds = vt_download(tds);
        double *gb = calloc(nb, sizeof *gb);
        for (int64_t b = 0; b < c->B; b++)
            for (int64_t h = 0; h < c->H; h++)
                for (int64_t e = 0; e < c->Nq * c->Nk; e++)
                    gb[((b % c->M) * c->Hb + (c->Hb == 1 ? 0 : h)) * c->Nq * c->Nk + e] +=
                        gds[(b * c->H + h) * c->Nq * c->Nk + e];
        float *gbf = malloc(nb * sizeof *gbf);
        for (size_t e = 0; e < nb; e++)
            gbf[e] = (float)gb[e];
        vt_assert_close(gbf, wdb, nb, c->tol, "%s: dbias from ds, case B %lld Nq %lld Nk %lld",
                        dn, (long long)c->B, (long long)c->Nq, (long long)c->Nk);
        free(gds);
        free(gb);
        free(gbf);
    }

    vp_tensor *all[] = {tq, tk, tv, tdo, tb, to, tl, ts, tdq, tdk, tdv, tds};
    for (size_t i = 0; i < sizeof all / sizeof all[0]; i++)
        if (all[i])
            vp_tensor_destroy(all[i]);
    double *dd[] = {q, k, v, dout, bias, wo, wl, wdq, wdk, wdv, wdb};
    for (size_t i = 0; i < sizeof dd / sizeof dd[0]; i++)
        free(dd[i]);
    free(hq);
    free(hk);
    free(hv);
    free(hdo);
    free(hb);
}

/* Both kernel forms where the device has the subgroup ones (plain only
 * elsewhere: forcing the subgroup forms there falls back to AUTO). */
START_TEST(test_cases)
{
    for (int form = VP_ATTN_PLAIN; form <= VP_ATTN_SUBGROUP; form++) {
        vp_attention_force_form((vp_attn_form)form);
        for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
            run_case((uint32_t)_i, &cases[i], false);
            run_case((uint32_t)_i, &cases[i], true);
        }
    }
    vp_attention_force_form(VP_ATTN_AUTO);
}
END_TEST

/* ---- the reference's backward against finite differences ------------------------- */

typedef struct fd_ctx {
    vp_ref_attn_dims d;
    double *q, *k, *v, *bias, *w, *out;
} fd_ctx;

static double fd_eval(const double *x, void *vctx)
{
    (void)x; /* x is one of q, k, v, bias, perturbed in place */
    fd_ctx *c = vctx;
    vp_ref_attention(&c->d, c->q, c->k, c->v, c->bias, c->out, NULL);
    double s = 0;
    for (int64_t i = 0; i < c->d.B * c->d.Nq * c->d.H * c->d.Dh; i++)
        s += c->out[i] * c->w[i];
    return s;
}

START_TEST(test_ref_grads)
{
    enum { B = 4, NQ = 3, NK = 5, H = 2, DH = 3, M = 2 };
    size_t nq = B * NQ * H * DH, nk = B * NK * H * DH, nb = M * H * NQ * NK;
    float *h = rand_f(nq + 2 * nk + nb + nq, 5, 1.0);
    double *all = vt_f64(h, nq + 2 * nk + nb + nq);
    fd_ctx c = {{B, NQ, NK, H, DH, M, H, 0.7}, all, all + nq, all + nq + nk, all + nq + 2 * nk,
                all + nq + 2 * nk + nb, calloc(nq, sizeof(double))};
    c.bias[3] = -INFINITY; /* a masked key: no gradient reaches it */
    double *g[4], *fd = calloc(nk > nb ? nk : nb, sizeof *fd);
    size_t n[4] = {nq, nk, nk, nb};
    for (int i = 0; i < 4; i++)
        g[i] = calloc(n[i], sizeof *g[i]);
    vp_ref_attention_backward(&c.d, c.q, c.k, c.v, c.bias, c.w, g[0], g[1], g[2], g[3], false);
    double *x[4] = {c.q, c.k, c.v, c.bias};
    static const char *const name[4] = {"q", "k", "v", "bias"};
    for (int i = 0; i < 4; i++) {
        if (i == 3) {
            /* the masked entry gets no gradient; finite differences are not
             * defined at -inf, so the bias is checked with that entry at 0 */
            ck_assert(g[3][3] == 0.0);
            c.bias[3] = 0.0;
            double *t0 = calloc(nq, sizeof *t0), *t1 = calloc(nk, sizeof *t1),
                   *t2 = calloc(nk, sizeof *t2);
            vp_ref_attention_backward(&c.d, c.q, c.k, c.v, c.bias, c.w, t0, t1, t2, g[3], false);
            free(t0);
            free(t1);
            free(t2);
        }
        vt_fd_grad(fd_eval, &c, x[i], n[i], 1e-5, fd);
        vt_assert_rel_close(g[i], fd, n[i], 1e-6, "reference attention: %s vs finite differences",
                            name[i]);
    }
    /* accumulate adds */
    double *acc = malloc(nq * sizeof *acc), *t[3];
    for (int i = 0; i < 3; i++)
        t[i] = calloc(n[i + 1], sizeof *t[i]);
    vp_ref_attention_backward(&c.d, c.q, c.k, c.v, c.bias, c.w, g[0], t[0], t[1], t[2], false);
    for (size_t i = 0; i < nq; i++)
        acc[i] = 0.5 * (double)i;
    vp_ref_attention_backward(&c.d, c.q, c.k, c.v, c.bias, c.w, acc, t[0], t[1], t[2], true);
    for (size_t i = 0; i < nq; i++)
        ck_assert(fabs(acc[i] - (0.5 * (double)i + g[0][i])) < 1e-12);
    for (int i = 0; i < 3; i++)
        free(t[i]);
    for (int i = 0; i < 4; i++)
        free(g[i]);
    free(acc);
    free(fd);
    free(c.out);
    free(all);
    free(h);
}
END_TEST

/* Two runs of the same dispatches give the same bits (no atomics). */
START_TEST(test_deterministic)
{
    vp_device *dev = vt_device((uint32_t)_i);
    enum { B = 2, NQ = 9, NK = 40, H = 2, DH = 16 };
    int64_t sq[3] = {B, NQ, H * DH}, sk[3] = {B, NK, H * DH}, sl[3] = {B, H, NQ};
    int64_t ss[4] = {B, H, NQ, 2}, sb[4] = {1, H, NQ, NK};
    float *hq = rand_f(B * NQ * H * DH, 1, 2.0), *hk = rand_f(B * NK * H * DH, 2, 2.0);
    float *hb = rand_f(H * NQ * NK, 3, 1.0);
    vp_tensor *q = vt_tensor(dev, "q", 3, sq, hq), *k = vt_tensor(dev, "k", 3, sk, hk);
    vp_tensor *b = vt_tensor(dev, "bias", 4, sb, hb), *o = vt_tensor(dev, "out", 3, sq, NULL);
    vp_tensor *l = vt_tensor(dev, "lse", 3, sl, NULL), *s = vt_tensor(dev, "stats", 4, ss, NULL);
    vp_tensor *dq = vt_tensor(dev, "dq", 3, sq, NULL), *dk = vt_tensor(dev, "dk", 3, sk, NULL);
    vp_tensor *dv = vt_tensor(dev, "dv", 3, sk, NULL);
    vp_tensor *db = vt_tensor(dev, "ds", 4, (int64_t[]){B, H, NQ, NK}, NULL);
    float *first[5] = {NULL};
    for (int run = 0; run < 2; run++) {
        vp_cmd *cmd;
        vt_ok(vp_cmd_create(dev, &cmd));
        vt_ok(vp_cmd_begin(cmd));
        vt_ok(vp_op_attention(cmd, q, k, k, b, H, 0.25f, o, l));
        vt_ok(vp_op_attention_backward(cmd, q, k, k, b, H, 0.25f, l, q, s, dq, false, dk, false,
                                       dv, false, db));
        vt_ok(vp_cmd_submit(cmd));
        vp_cmd_destroy(cmd);
        const vp_tensor *ts[5] = {o, dq, dk, dv, db};
        for (int i = 0; i < 5; i++) {
            float *got = vt_download(ts[i]);
            if (!run)
                first[i] = got;
            else {
                ck_assert_msg(!memcmp(got, first[i], (size_t)vp_tensor_nelem(ts[i]) * 4),
                              "run 2 of %s differs", ts[i]->name);
                free(got);
                free(first[i]);
            }
        }
    }
    vp_tensor *all[] = {q, k, b, o, l, s, dq, dk, dv, db};
    for (size_t i = 0; i < sizeof all / sizeof all[0]; i++)
        vp_tensor_destroy(all[i]);
    free(hq);
    free(hk);
    free(hb);
}
END_TEST

START_TEST(test_errors)
{
    vp_device *dev = vt_device((uint32_t)_i);
    int64_t sq[3] = {2, 3, 8}, sk[3] = {2, 5, 8}, sl[3] = {2, 2, 3};
    vp_tensor *q = vt_tensor(dev, "q", 3, sq, NULL), *k = vt_tensor(dev, "k", 3, sk, NULL);
    vp_tensor *o = vt_tensor(dev, "out", 3, sq, NULL), *l = vt_tensor(dev, "lse", 3, sl, NULL);
    vp_tensor *b3 = vt_tensor(dev, "bias", 4, (int64_t[]){3, 2, 3, 5}, NULL);
    vp_tensor *bh = vt_tensor(dev, "bias", 4, (int64_t[]){2, 3, 3, 5}, NULL);
    vp_tensor *kw = vt_tensor(dev, "k", 3, (int64_t[]){2, 5, 6}, NULL);
    vp_tensor *big = vt_tensor(dev, "q", 3, (int64_t[]){1, 1, 129}, NULL);
    vp_tensor *l1 = vt_tensor(dev, "lse", 3, (int64_t[]){1, 1, 1}, NULL);
    vp_cmd *cmd;
    vt_ok(vp_cmd_create(dev, &cmd));
    vt_ok(vp_cmd_begin(cmd));
    ck_assert_int_eq(vp_op_attention(cmd, q, k, k, NULL, 3, 1.0f, o, l), VP_ERR_SHAPE);
    vt_assert_has(vp_error_last(), "3 heads do not divide the 8 channels of q");
    ck_assert_int_eq(vp_op_attention(cmd, q, k, k, b3, 2, 1.0f, o, l), VP_ERR_SHAPE);
    vt_assert_has(vp_error_last(), "attention: bias (3, 2, 3, 5) must be (M, 1 or 2, 3, 5) with "
                                   "M dividing 2");
    ck_assert_int_eq(vp_op_attention(cmd, q, k, k, bh, 2, 1.0f, o, l), VP_ERR_SHAPE);
    ck_assert_int_eq(vp_op_attention(cmd, q, kw, kw, NULL, 2, 1.0f, o, l), VP_ERR_SHAPE);
    vt_assert_has(vp_error_last(), "attention: k (2, 5, 6) must be (B, Nk, H*Dh)");
    ck_assert_int_eq(vp_op_attention(cmd, q, k, k, NULL, 2, 1.0f, o, o), VP_ERR_SHAPE);
    vt_assert_has(vp_error_last(), "attention: out (2, 3, 8) must be (B, H, Nq) = (2, 2, 3)");
    ck_assert_int_eq(vp_op_attention(cmd, q, k, k, NULL, 2, 1.0f, q, l), VP_ERR_INVALID);
    vt_assert_has(vp_error_last(), "attention: output q overlaps input q");
    ck_assert_int_eq(vp_op_attention(cmd, big, big, big, NULL, 1, 1.0f, big, l1),
                     VP_ERR_UNSUPPORTED);
    vt_assert_has(vp_error_last(), "129 channels per head; at most 128");
    if (vt_device_info((uint32_t)_i)->type == VK_PHYSICAL_DEVICE_TYPE_CPU) {
        vp_tensor *kl = vt_tensor(dev, "k", 3, (int64_t[]){1, VP_ATTN_MAX_ROWS + 1, 4}, NULL);
        vp_tensor *q1 = vt_tensor(dev, "q", 3, (int64_t[]){1, 1, 4}, NULL);
        vp_tensor *o1 = vt_tensor(dev, "out", 3, (int64_t[]){1, 1, 4}, NULL);
        ck_assert_int_eq(vp_op_attention(cmd, q1, kl, kl, NULL, 1, 1.0f, o1, l1),
                         VP_ERR_UNSUPPORTED);
        vt_assert_has(vp_error_last(), "65001 keys, 1 queries: a kernel would loop 65001 times "
                                       "per invocation, more than the 65000 a CPU Vulkan device");
        vp_tensor_destroy(kl);
        vp_tensor_destroy(q1);
        vp_tensor_destroy(o1);
    }
    vp_cmd_destroy(cmd);
    vp_tensor *all[] = {q, k, o, l, b3, bh, kw, big, l1};
    for (size_t i = 0; i < sizeof all / sizeof all[0]; i++)
        vp_tensor_destroy(all[i]);
}
END_TEST

/* The fused node in a graph: every gradient (q, k, v and a bias that
 * trains, per window position and head, or one for every head) against
 * finite differences of the reference executor; q and k the same tensor
 * once (the shared-input path); the bias reductions over images and heads
 * done by the graph's gemms. */
static double *rand_vals(size_t n, uint64_t seed)
{
    float *f = rand_f(n, seed, 1.0);
    double *d = vt_f64(f, n);
    free(f);
    return d;
}

static void graph_case(uint32_t d, int64_t M, int64_t Hb, bool shared_qk)
{
    enum { B = 4, NQ = 3, NK = 5, H = 2, DH = 3 };
    vp_graph *g;
    vt_ok(vp_graph_create(vt_device(d), &g));
    vp_gt *leaf[4];
    int n = 0;
    vp_gt *q = leaf[n++] = vp_g_param(g, "q", 3, (int64_t[]){B, NQ, H * DH}, true);
    vp_gt *k = shared_qk ? q : (leaf[n++] = vp_g_param(g, "k", 3, (int64_t[]){B, NK, H * DH}, true));
    vp_gt *v = leaf[n++] = vp_g_param(g, "v", 3, (int64_t[]){B, shared_qk ? NQ : NK, H * DH}, true);
    int64_t nk = shared_qk ? NQ : NK;
    vp_gt *bias = leaf[n++] = vp_g_param(g, "bias", 4, (int64_t[]){M, Hb, NQ, nk}, true);
    vp_gt *o = vp_g_attention_ex(g, q, k, v, bias, H, 0.6f);
    vp_gt *loss = vp_g_sum(g, vp_g_mul(g, o, o));
    vt_ok(vp_graph_backward(g, loss));
    vt_ok(vp_graph_compile(g));
    double *vals[4];
    for (int i = 0; i < n; i++)
        vals[i] = rand_vals((size_t)vp_gt_nelem(leaf[i]), 40 + (uint64_t)i);
    char what[320];
    snprintf(what, sizeof what, "%s: bias (%lld, %lld)%s", vt_device_info(d)->name, (long long)M,
             (long long)Hb, shared_qk ? ", q = k" : "");
    vt_check_graph_grads(g, loss, leaf, vals, n, 1e-6, 1e-4, what);
    for (int i = 0; i < n; i++)
        free(vals[i]);
    vp_graph_destroy(g);
}

START_TEST(test_graph)
{
    for (int form = VP_ATTN_PLAIN; form <= VP_ATTN_SUBGROUP; form++) {
        vp_attention_force_form((vp_attn_form)form);
        graph_case((uint32_t)_i, 2, 2, false);
        graph_case((uint32_t)_i, 2, 1, false);
        graph_case((uint32_t)_i, 1, 1, false);
        graph_case((uint32_t)_i, 4, 2, true);
    }
    vp_attention_force_form(VP_ATTN_AUTO);
}
END_TEST

int main(void)
{
    Suite *s = suite_create("attention");
    TCase *tc = vt_tcase("reference");
    tcase_add_test(tc, test_ref_grads);
    suite_add_tcase(s, tc);
    tc = vt_tcase("device");
    vt_add_per_device(tc, test_cases, NULL);
    vt_add_per_device(tc, test_deterministic, NULL);
    vt_add_per_device(tc, test_graph, NULL);
    vt_add_per_device(tc, test_errors, NULL);
    suite_add_tcase(s, tc);
    return vt_run(s);
}
