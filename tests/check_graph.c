/*
 * Graph suite: whole-graph gradients against finite differences of a
 * double-precision CPU model, memory planning (reuse, frozen parameters),
 * replay without re-recording or allocating, gradient accumulation and
 * zeroing, host nodes, build errors, and gradient buckets handed over
 * while the backward pass runs.
 */
#include "harness.h"

#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "graph/graph.h"
#include "tinymodel.h"
#include "ref/loss.h"
#include "util/clock.h"

/* ---- a small model: linear, frozen linear, products, broadcasts, a
 * batched q q^T, a mean square --------------------------------------------- */

enum { B = 3, T = 4, D = 5, H = 6 };

typedef struct model_vals {
    double x[B * T * D], w1[H * D], b1[H], w2[H * D], s[H], c[H];
} model_vals;

/* loss = mean((0.5 q q^T)^2), q = ((x w1^T + b1) * (x w2^T)) * s + c */
static double model_loss(const model_vals *v)
{
    double q[B * T * H], loss = 0;
    for (int r = 0; r < B * T; r++)
        for (int o = 0; o < H; o++) {
            double h = v->b1[o], u = 0;
            for (int i = 0; i < D; i++) {
                h += v->x[r * D + i] * v->w1[o * D + i];
                u += v->x[r * D + i] * v->w2[o * D + i];
            }
            q[r * H + o] = h * u * v->s[o] + v->c[o];
        }
    for (int b = 0; b < B; b++)
        for (int i = 0; i < T; i++)
            for (int j = 0; j < T; j++) {
                double a = 0;
                for (int k = 0; k < H; k++)
                    a += q[(b * T + i) * H + k] * q[(b * T + j) * H + k];
                a *= 0.5;
                loss += a * a;
            }
    return loss / (B * T * T);
}

typedef struct model {
    vp_graph *g;
    vp_gt *x, *w1, *b1, *w2, *s, *c, *loss;
} model;

static void model_build(vp_device *dev, model *m)
{
    vt_ok(vp_graph_create(dev, &m->g));
    vp_graph *g = m->g;
    m->x = vp_g_input(g, "x", 3, (int64_t[]){B, T, D});
    m->w1 = vp_g_param(g, "w1", 2, (int64_t[]){H, D}, true);
    m->b1 = vp_g_param(g, "b1", 1, (int64_t[]){H}, true);
    m->w2 = vp_g_param(g, "w2", 2, (int64_t[]){H, D}, false);
    m->s = vp_g_param(g, "s", 1, (int64_t[]){H}, true);
    m->c = vp_g_param(g, "c", 1, (int64_t[]){H}, true);
    vp_gt *h = vp_g_linear(g, m->x, m->w1, m->b1);
    vp_gt *u = vp_g_linear(g, m->x, m->w2, NULL);
    vp_gt *q = vp_g_add(g, vp_g_mul(g, vp_g_mul(g, h, u), m->s), m->c);
    vp_gt *a = vp_g_scale(g, vp_g_gemm(g, q, false, q, true, NULL), 0.5f);
    m->loss = vp_g_mean(g, vp_g_mul(g, a, a));
    vt_ok(vp_graph_backward(g, m->loss));
    vt_ok(vp_graph_compile(g));
}

static void model_write(model *m, const model_vals *v)
{
    struct { vp_gt *t; const double *d; size_t n; } p[] = {
        {m->x, v->x, B * T * D}, {m->w1, v->w1, H * D}, {m->b1, v->b1, H},
        {m->w2, v->w2, H * D},   {m->s, v->s, H},       {m->c, v->c, H}};
    for (size_t i = 0; i < sizeof p / sizeof p[0]; i++) {
        float f[B * T * D];
        for (size_t k = 0; k < p[i].n; k++)
            f[k] = (float)p[i].d[k];
        vt_ok(vp_graph_write(m->g, p[i].t, f, p[i].n * 4));
    }
}

static void model_vals_rand(model_vals *v, uint64_t seed)
{
    double *all = (double *)v;
    size_t n = sizeof *v / sizeof(double);
    float *f = malloc(n * sizeof *f);
    vt_rand(f, n, seed);
    for (size_t i = 0; i < n; i++)
        all[i] = (float)f[i]; /* exactly what the device gets */
    free(f);
}

typedef struct fd_ctx {
    model_vals *v;
    double *slot;
} fd_ctx;

static double fd_loss(const double *x, void *ctx)
{
    (void)x; /* x is the slot inside *v, perturbed in place */
    return model_loss(((fd_ctx *)ctx)->v);
}

START_TEST(test_model_gradients)
{
    vp_device *dev = vt_device((uint32_t)_i);
    model m;
    model_build(dev, &m);
    model_vals v;
    model_vals_rand(&v, 42);
    model_write(&m, &v);
    vt_ok(vp_graph_run(m.g));
    float loss;
    vt_ok(vp_graph_read(m.g, m.loss, &loss, sizeof loss));
    double want = model_loss(&v);
    ck_assert_msg(fabs(loss - want) <= 1e-5 * fabs(want), "loss %g, reference %g", loss, want);

    /* The reference executor evaluates the same graph in double. */
    vp_graph_ref *ref;
    vt_ok(vp_graph_ref_create(m.g, &ref));
    memcpy(vp_graph_ref_data(ref, m.x), v.x, sizeof v.x);
    memcpy(vp_graph_ref_data(ref, m.w1), v.w1, sizeof v.w1);
    memcpy(vp_graph_ref_data(ref, m.b1), v.b1, sizeof v.b1);
    memcpy(vp_graph_ref_data(ref, m.w2), v.w2, sizeof v.w2);
    memcpy(vp_graph_ref_data(ref, m.s), v.s, sizeof v.s);
    memcpy(vp_graph_ref_data(ref, m.c), v.c, sizeof v.c);
    vt_ok(vp_graph_ref_forward(ref));
    /* (the graph scales by 1/n rounded to float, the model divides by n) */
    ck_assert_double_eq_tol(vp_graph_ref_data(ref, m.loss)[0], want, 1e-7 * fabs(want));
    vp_graph_ref_destroy(ref);

    ck_assert_ptr_null(vp_g_grad(m.w2)); /* frozen: no gradient at all */
    ck_assert_ptr_null(vp_g_grad(m.x));
    struct { vp_gt *t; double *d; size_t n; } p[] = {
        {m.w1, v.w1, H * D}, {m.b1, v.b1, H}, {m.s, v.s, H}, {m.c, v.c, H}};
    for (size_t i = 0; i < 4; i++) {
        float got[H * D];
        vt_ok(vp_graph_read(m.g, vp_g_grad(p[i].t), got, p[i].n * 4));
        double fd[H * D], g64[H * D];
        fd_ctx ctx = {&v, p[i].d};
        vt_fd_grad(fd_loss, &ctx, p[i].d, p[i].n, 1e-5, fd);
        for (size_t k = 0; k < p[i].n; k++)
            g64[k] = got[k];
        vt_assert_rel_close(g64, fd, p[i].n, 1e-4, "%s: gradient of %s vs finite differences",
                            vt_device_info((uint32_t)_i)->name, vp_gt_name(p[i].t));
    }
    vp_graph_stats s = vp_graph_get_stats(m.g);
    ck_assert_uint_eq(s.segments, 1);
    ck_assert_uint_gt(s.backward_nodes, 0);
    ck_assert_uint_eq(s.dispatches, s.nodes); /* one dispatch per node, one submit per run */
    vp_graph_destroy(m.g);
}
END_TEST

/* Random leaf values exactly representable as float. */
static double *rand_vals(size_t n, uint64_t seed, double scale)
{
    float *f = malloc(n * sizeof *f);
    double *d = malloc(n * sizeof *d);
    vt_rand(f, n, seed);
    for (size_t i = 0; i < n; i++)
        d[i] = (float)(f[i] * scale);
    free(f);
    return d;
}

/* The nn ops inside a graph: layernorm (affine trained, and plain), linear,
 * GELU, ReLU, softmax; gradients against finite differences. */
START_TEST(test_nn_layers)
{
    vp_device *dev = vt_device((uint32_t)_i);
    vp_graph *g;
    vt_ok(vp_graph_create(dev, &g));
    enum { R = 6, C = 8, HID = 12, O = 5 };
    vp_gt *leaf[9];
    vp_gt *x = leaf[0] = vp_g_input(g, "x", 2, (int64_t[]){R, C});
    vp_gt *t = leaf[1] = vp_g_input(g, "t", 2, (int64_t[]){R, O});
    vp_gt *gam = leaf[2] = vp_g_param(g, "ln.weight", 1, (int64_t[]){C}, true);
    vp_gt *bet = leaf[3] = vp_g_param(g, "ln.bias", 1, (int64_t[]){C}, true);
    vp_gt *w1 = leaf[4] = vp_g_param(g, "fc1.weight", 2, (int64_t[]){HID, C}, true);
    vp_gt *b1 = leaf[5] = vp_g_param(g, "fc1.bias", 1, (int64_t[]){HID}, true);
    vp_gt *w2 = leaf[6] = vp_g_param(g, "fc2.weight", 2, (int64_t[]){C, HID}, false);
    vp_gt *w3 = leaf[7] = vp_g_param(g, "fc3.weight", 2, (int64_t[]){O, C}, true);
    vp_gt *b3 = leaf[8] = vp_g_param(g, "fc3.bias", 1, (int64_t[]){O}, false);
    vp_gt *h = vp_g_layernorm(g, x, gam, bet, 1e-5f);
    h = vp_g_gelu(g, vp_g_linear(g, h, w1, b1));
    h = vp_g_relu(g, vp_g_linear(g, h, w2, NULL));
    h = vp_g_layernorm(g, h, NULL, NULL, 1e-5f);
    /* sigmoid, softplus, silu in between: each one's rule and kernel */
    h = vp_g_add(g, vp_g_silu(g, h), vp_g_mul(g, vp_g_sigmoid(g, h), vp_g_softplus(g, h)));
    vp_gt *p = vp_g_softmax(g, vp_g_linear(g, h, w3, b3));
    vp_gt *loss = vp_g_sum(g, vp_g_mul(g, p, t));
    vt_ok(vp_graph_backward(g, loss));
    vt_ok(vp_graph_compile(g));
    double *vals[9];
    for (int i = 0; i < 9; i++)
        vals[i] = rand_vals((size_t)vp_gt_nelem(leaf[i]), 100 + (uint64_t)i, 1.0);
    vt_check_graph_grads(g, loss, leaf, vals, 9, 1e-6, 1e-4, vt_device_info((uint32_t)_i)->name);
    for (int i = 0; i < 9; i++)
        free(vals[i]);
    vp_graph_destroy(g);
}
END_TEST

/* Masked attention as Mask2Former's decoder uses it: a mask per image
 * (B, 1, Nq, Nk) from mask logits, repeated for every head (here 9, more
 * than one concat takes), fully masked rows unmasked; gradients of q, k and
 * v against finite differences. */
START_TEST(test_masked_attention)
{
    vp_device *dev = vt_device((uint32_t)_i);
    vp_graph *g;
    vt_ok(vp_graph_create(dev, &g));
    enum { B = 2, NQ = 3, NK = 5, D = 18, HEADS = 9 };
    vp_gt *leaf[4];
    vp_gt *logits = leaf[0] = vp_g_input(g, "mask_logits", 4, (int64_t[]){B, 1, NQ, NK});
    vp_gt *q = leaf[1] = vp_g_param(g, "q", 3, (int64_t[]){B, NQ, D}, true);
    vp_gt *k = leaf[2] = vp_g_param(g, "k", 3, (int64_t[]){B, NK, D}, true);
    vp_gt *v = leaf[3] = vp_g_param(g, "v", 3, (int64_t[]){B, NK, D}, true);
    vp_gt *o = vp_g_attention(g, q, k, v, vp_g_logit_mask(g, logits), HEADS);
    vp_gt *loss = vp_g_sum(g, vp_g_mul(g, o, o));
    vt_ok(vp_graph_backward(g, loss));
    vt_ok(vp_graph_compile(g));
    double *vals[4];
    for (int i = 0; i < 4; i++)
        vals[i] = rand_vals((size_t)vp_gt_nelem(leaf[i]), 300 + (uint64_t)i, 1.0);
    for (int c = 0; c < NK; c++)
        vals[0][c] = -0.5; /* image 0, query 0: every key masked -> unmasked */
    vt_check_graph_grads(g, loss, leaf, vals, 4, 1e-6, 1e-4, vt_device_info((uint32_t)_i)->name);
    for (int i = 0; i < 4; i++)
        free(vals[i]);
    vp_graph_destroy(g);
}
END_TEST

/* Adds whose gradient is the output's own (autodiff gives one operand dy's
 * memory instead of a copy, and lends it to the other, read-only): through
 * a view, a tensor added to itself (no alias), a parameter operand (no
 * alias), an operand used again later (no alias: its gradient already
 * exists), chained adds; a borrower whose lender is written before the
 * borrower's producer reads it, and a borrower that gets a second
 * contribution (both take a copy then); every gradient against finite
 * differences. */
START_TEST(test_add_alias)
{
    vp_device *dev = vt_device((uint32_t)_i);
    vp_graph *g;
    vt_ok(vp_graph_create(dev, &g));
    vp_gt *leaf[3];
    vp_gt *x = leaf[0] = vp_g_param(g, "x", 2, (int64_t[]){2, 6}, true);
    vp_gt *w = leaf[1] = vp_g_param(g, "w", 2, (int64_t[]){6, 6}, true);
    vp_gt *c = leaf[2] = vp_g_param(g, "c", 2, (int64_t[]){3, 4}, true);
    vp_gt *h = vp_g_linear(g, x, w, NULL);                          /* (2, 6) */
    vp_gt *y = vp_g_add(g, vp_g_reshape(g, h, 2, (int64_t[]){3, 4}), c);
    vp_gt *s = vp_g_add(g, y, y);
    vp_gt *t = vp_g_add(g, s, vp_g_reshape(g, x, 2, (int64_t[]){3, 4}));
    vp_gt *u = vp_g_add(g, t, vp_g_mul(g, y, y)); /* y used again */
    /* p's producer comes before q's other consumer (zq): zq's rule writes
     * into q's gradient, which p still borrows. r is read (zr) between its
     * producer and the add that lends it dy. */
    vp_gt *p = vp_g_linear(g, x, w, NULL), *q = vp_g_linear(g, x, w, NULL);
    vp_gt *zq = vp_g_mul(g, q, q);
    vp_gt *v = vp_g_add(g, q, p);
    vp_gt *r = vp_g_linear(g, h, w, NULL);
    vp_gt *zr = vp_g_mul(g, r, r);
    vp_gt *v2 = vp_g_add(g, vp_g_mul(g, v, v), r);
    vp_gt *loss = vp_g_add(g, vp_g_add(g, vp_g_sum(g, vp_g_mul(g, u, u)), vp_g_sum(g, zq)),
                           vp_g_add(g, vp_g_sum(g, vp_g_mul(g, v2, v2)), vp_g_sum(g, zr)));
    vt_ok(vp_graph_backward(g, loss));
    vt_ok(vp_graph_compile(g));
    double *vals[3];
    for (int i = 0; i < 3; i++)
        vals[i] = rand_vals((size_t)vp_gt_nelem(leaf[i]), 700 + (uint64_t)i, 1.0);
    vt_check_graph_grads(g, loss, leaf, vals, 3, 1e-6, 1e-4, vt_device_info((uint32_t)_i)->name);
    for (int i = 0; i < 3; i++)
        free(vals[i]);
    vp_graph_destroy(g);
}
END_TEST

/* Slices of a parameter along its first axis (contiguous) are views at an
 * offset: no copy, the gradient added straight into the parameter's; a
 * slice of such a view (offsets add up), a slice along another axis (a
 * copy), a slice of an activation (a copy); every gradient against finite
 * differences, and the views cost no dispatch. */
START_TEST(test_slice_views)
{
    vp_device *dev = vt_device((uint32_t)_i);
    vp_graph *g;
    vt_ok(vp_graph_create(dev, &g));
    vp_gt *leaf[2];
    vp_gt *x = leaf[0] = vp_g_input(g, "x", 2, (int64_t[]){3, 4});
    vp_gt *w = leaf[1] = vp_g_param(g, "w", 2, (int64_t[]){12, 4}, true);
    vp_gt *wq = vp_g_slice(g, w, 0, 0, 4), *wkv = vp_g_slice(g, w, 0, 4, 8);
    vp_gt *wk = vp_g_slice(g, wkv, 0, 0, 4), *wv = vp_g_slice(g, wkv, 0, 4, 4);
    vp_gt *wc = vp_g_slice(g, w, 1, 1, 3);                        /* (12, 3): a copy */
    vp_gt *q = vp_g_linear(g, x, wq, NULL), *k = vp_g_linear(g, x, wk, NULL);
    vp_gt *v = vp_g_linear(g, x, wv, NULL);
    vp_gt *h = vp_g_add(g, vp_g_mul(g, q, k), v);                 /* (3, 4) */
    vp_gt *hs = vp_g_slice(g, h, 0, 1, 2);                        /* an activation: a copy */
    vp_gt *loss = vp_g_add(g, vp_g_sum(g, vp_g_mul(g, hs, hs)), vp_g_sum(g, vp_g_mul(g, wc, wc)));
    vt_ok(vp_graph_backward(g, loss));
    vt_ok(vp_graph_compile(g));
    /* forward: 3 linears, mul, add, 2 slices (w along axis 1, h), 2 muls, 2 sums, add: the
     * views of w add no node */
    ck_assert_uint_eq(vp_graph_get_stats(g).nodes - vp_graph_get_stats(g).backward_nodes, 12);
    double *vals[2];
    for (int i = 0; i < 2; i++)
        vals[i] = rand_vals((size_t)vp_gt_nelem(leaf[i]), 800 + (uint64_t)i, 1.0);
    vt_check_graph_grads(g, loss, leaf, vals, 2, 1e-6, 1e-4, vt_device_info((uint32_t)_i)->name);
    float got[16];
    vt_ok(vp_graph_read(g, wk, got, sizeof got)); /* a view reads its own elements */
    for (int i = 0; i < 16; i++)
        ck_assert(got[i] == (float)vals[1][16 + i]);
    for (int i = 0; i < 2; i++)
        free(vals[i]);
    vp_graph_destroy(g);
}
END_TEST

/* Dropout in a training graph: the gradient through the same mask as the
 * forward (device against finite differences of the reference, which
 * uses the run's seed); two runs draw two masks; in an evaluation graph it
 * is no node at all. */
START_TEST(test_dropout_graph)
{
    vp_device *dev = vt_device((uint32_t)_i);
    vp_graph *g;
    vt_ok(vp_graph_create(dev, &g));
    vp_graph_set_training(g, true);
    enum { R = 4, C = 6 };
    vp_gt *leaf[2];
    vp_gt *x = leaf[0] = vp_g_input(g, "x", 2, (int64_t[]){R, C});
    vp_gt *w = leaf[1] = vp_g_param(g, "w", 2, (int64_t[]){C, C}, true);
    vp_gt *h = vp_g_dropout(g, vp_g_linear(g, x, w, NULL), 0.4f);
    vp_g_keep(h);
    vp_gt *loss = vp_g_sum(g, vp_g_mul(g, h, h));
    vt_ok(vp_graph_backward(g, loss));
    vt_ok(vp_graph_compile(g));
    double *vals[2];
    for (int i = 0; i < 2; i++)
        vals[i] = rand_vals((size_t)vp_gt_nelem(leaf[i]), 500 + (uint64_t)i, 1.0);
    vt_check_graph_grads(g, loss, leaf, vals, 2, 1e-6, 1e-4, vt_device_info((uint32_t)_i)->name);
    float a[R * C], b[R * C];
    vt_ok(vp_graph_read(g, h, a, sizeof a));
    vt_ok(vp_graph_run(g));
    vt_ok(vp_graph_read(g, h, b, sizeof b));
    int differ = 0;
    for (int i = 0; i < R * C; i++)
        differ += (a[i] == 0.0f) != (b[i] == 0.0f);
    ck_assert_msg(differ > 0, "two runs drew the same dropout mask");
    for (int i = 0; i < 2; i++)
        free(vals[i]);
    vp_graph_destroy(g);

    vt_ok(vp_graph_create(dev, &g));
    x = vp_g_input(g, "x", 2, (int64_t[]){R, C});
    ck_assert_ptr_eq(vp_g_dropout(g, x, 0.4f), x); /* evaluation: the identity */
    ck_assert_ptr_null(vp_g_dropout(g, x, 1.0f));
    vt_expect_err(vp_graph_status(g), VP_ERR_INVALID, "dropout of x: p 1 must be in [0, 1)");
    vp_graph_destroy(g);
}
END_TEST

/* The losses inside a graph, summed: cross-entropy with class weights and
 * an ignored row, BCE with logits, dice; gradients against finite
 * differences. */
START_TEST(test_losses)
{
    vp_device *dev = vt_device((uint32_t)_i);
    vp_graph *g;
    vt_ok(vp_graph_create(dev, &g));
    enum { N = 7, F = 6, C = 4, P = 10 };
    vp_gt *leaf[7];
    vp_gt *x = leaf[0] = vp_g_input(g, "x", 2, (int64_t[]){N, F});
    vp_gt *cls = leaf[1] = vp_g_input_i32(g, "classes", 1, (int64_t[]){N});
    vp_gt *cw = leaf[2] = vp_g_const(g, "class_weight", 1, (int64_t[]){C},
                                     (float[]){1.0f, 0.5f, 2.0f, 0.1f});
    vp_gt *mt = leaf[3] = vp_g_input(g, "mask_target", 2, (int64_t[]){N, P});
    vp_gt *wc = leaf[4] = vp_g_param(g, "class_embed", 2, (int64_t[]){C, F}, true);
    vp_gt *wm = leaf[5] = vp_g_param(g, "mask_embed", 2, (int64_t[]){P, F}, true);
    vp_gt *bm = leaf[6] = vp_g_param(g, "mask_bias", 1, (int64_t[]){P}, true);
    vp_gt *logits = vp_g_linear(g, x, wc, NULL);
    vp_gt *masks = vp_g_linear(g, x, wm, bm);
    vp_gt *loss = vp_g_add(g, vp_g_cross_entropy(g, logits, cls, cw),
                           vp_g_add(g, vp_g_scale(g, vp_g_bce_logits(g, masks, mt), 2.0f),
                                    vp_g_dice(g, masks, mt, 3.0f)));
    vt_ok(vp_graph_backward(g, loss));
    vt_ok(vp_graph_compile(g));
    double *vals[7];
    for (int i = 0; i < 7; i++)
        vals[i] = rand_vals((size_t)vp_gt_nelem(leaf[i]), 200 + (uint64_t)i, 1.0);
    double classes[N] = {0, 3, 1, -1, 2, 2, 0};  /* -1: ignored */
    memcpy(vals[1], classes, sizeof classes);
    double wts[C] = {1.0, 0.5, 2.0, 0.1};
    memcpy(vals[2], wts, sizeof wts);
    for (int i = 0; i < N * P; i++)
        vals[3][i] = vals[3][i] > 0 ? 1.0 : 0.0;  /* binary mask targets */
    vt_check_graph_grads(g, loss, leaf, vals, 7, 1e-6, 1e-4, vt_device_info((uint32_t)_i)->name);
    for (int i = 0; i < 7; i++)
        free(vals[i]);
    vp_graph_destroy(g);
}
END_TEST

/* Layout, vision and attention ops inside a graph: a ViT-like front
 * (patch embedding, gathered position embeddings, masked multi-head
 * attention, concat, slice) into a simple-feature-pyramid-like tail
 * (transposed convolution, max-pool, bilinear resize); gradients against
 * finite differences. */
START_TEST(test_vision_layers)
{
    vp_device *dev = vt_device((uint32_t)_i);
    vp_graph *g;
    vt_ok(vp_graph_create(dev, &g));
    enum { B = 2, CI = 3, HW = 8, P = 4, D = 8, NT = 4, HEADS = 2, CO = 4 };
    vp_gt *leaf[13];
    int nl = 0;
    vp_gt *img = leaf[nl++] = vp_g_input(g, "img", 4, (int64_t[]){B, CI, HW, HW});
    vp_gt *pidx = leaf[nl++] = vp_g_input_i32(g, "pos_idx", 1, (int64_t[]){NT});
    vp_gt *mask = leaf[nl++] = vp_g_input(g, "mask", 4, (int64_t[]){B, HEADS, NT, NT});
    vp_gt *tgt = leaf[nl++] = vp_g_input(g, "target", 4, (int64_t[]){B, 3, 3, CO});
    vp_gt *pw = leaf[nl++] = vp_g_param(g, "patch.weight", 4, (int64_t[]){D, CI, P, P}, true);
    vp_gt *pb = leaf[nl++] = vp_g_param(g, "patch.bias", 1, (int64_t[]){D}, true);
    vp_gt *pos = leaf[nl++] = vp_g_param(g, "pos", 2, (int64_t[]){NT, D}, true);
    vp_gt *wq = leaf[nl++] = vp_g_param(g, "q.weight", 2, (int64_t[]){D, D}, true);
    vp_gt *wk = leaf[nl++] = vp_g_param(g, "k.weight", 2, (int64_t[]){D, D}, true);
    vp_gt *wv = leaf[nl++] = vp_g_param(g, "v.weight", 2, (int64_t[]){D, D}, false);
    vp_gt *ctw = leaf[nl++] = vp_g_param(g, "up.weight", 4, (int64_t[]){D, CO, 2, 2}, true);
    vp_gt *ctb = leaf[nl++] = vp_g_param(g, "up.bias", 1, (int64_t[]){CO}, true);
    vp_gt *scale = leaf[nl++] = vp_g_param(g, "scale", 1, (int64_t[]){D}, true);
    vp_gt *x = vp_g_patch_embed(g, img, pw, pb, P);                    /* (B, 4, D) */
    x = vp_g_add(g, x, vp_g_gather_rows(g, pos, pidx));
    vp_gt *a = vp_g_attention(g, vp_g_linear(g, x, wq, NULL), vp_g_linear(g, x, wk, NULL),
                              vp_g_linear(g, x, wv, NULL), vp_g_bool_mask(g, mask), HEADS);
    vp_gt *both = vp_g_concat(g, (vp_gt *[]){a, vp_g_mul(g, x, scale)}, 2, 1); /* (B, 8, D) */
    vp_gt *tok = vp_g_add(g, vp_g_slice(g, both, 1, 0, NT), vp_g_slice(g, both, 1, NT, NT));
    vp_gt *map = vp_g_reshape(g, tok, 4, (int64_t[]){B, 2, 2, D});
    vp_gt *up = vp_g_conv_transpose2(g, map, ctw, ctb);                /* (B, 4, 4, CO) */
    vp_gt *pooled = vp_g_maxpool2(g, vp_g_transpose(g, up, 1, 2));     /* (B, 2, 2, CO) */
    vp_gt *r = vp_g_gelu(g, vp_g_resize_bilinear(g, pooled, 3, 3));    /* (B, 3, 3, CO) */
    vp_gt *loss = vp_g_sum(g, vp_g_mul(g, r, tgt));
    vt_ok(vp_graph_backward(g, loss));
    vt_ok(vp_graph_compile(g));
    double *vals[13];
    for (int i = 0; i < nl; i++)
        vals[i] = rand_vals((size_t)vp_gt_nelem(leaf[i]), 300 + (uint64_t)i, 1.0);
    double idx[NT] = {3, 0, 2, 1};
    memcpy(vals[1], idx, sizeof idx);
    for (int i = 0; i < B * HEADS * NT * NT; i++)     /* some keys masked, none fully */
        vals[2][i] = (i % NT) != (i / NT) % NT && vals[2][i] > 0.3 ? 1.0 : 0.0;
    vt_check_graph_grads(g, loss, leaf, vals, nl, 1e-6, 1e-4, vt_device_info((uint32_t)_i)->name);
    for (int i = 0; i < nl; i++)
        free(vals[i]);
    vp_graph_destroy(g);
}
END_TEST

/* The two-block pre-norm transformer with a deformable-attention layer:
 * every parameter's gradient against finite differences of the whole
 * graph in double, then 100 AdamW steps on the fixed random regression
 * target must cut the loss at least tenfold. */
static const vt_tiny_cfg tiny_cfg = {.batch = 2, .side = 4, .width = 8, .heads = 2, .mlp = 16,
                                     .blocks = 2, .out = 3, .points = 2};

/* The tiny transformer's parameters (vt_tiny_init, seeds param_seed + i)
 * and a random batch (seeds data_seed, data_seed + 1). */
static void tiny_fill(vp_graph *g, const vt_tiny *m, uint64_t param_seed, uint64_t data_seed)
{
    for (int i = 0; i < m->n_params; i++) {
        size_t n = (size_t)vp_gt_nelem(m->params[i]);
        float *f = malloc(n * sizeof *f);
        vt_tiny_init(m->params[i], f, param_seed + (uint64_t)i);
        vt_ok(vp_graph_write(g, m->params[i], f, n * sizeof *f));
        free(f);
    }
    size_t nx = (size_t)vp_gt_nelem(m->x), nt = (size_t)vp_gt_nelem(m->target);
    float *hx = malloc(nx * sizeof *hx), *ht = malloc(nt * sizeof *ht);
    vt_rand(hx, nx, data_seed);
    vt_rand(ht, nt, data_seed + 1);
    vt_ok(vp_graph_write(g, m->x, hx, nx * sizeof *hx));
    vt_ok(vp_graph_write(g, m->target, ht, nt * sizeof *ht));
    free(hx);
    free(ht);
}

START_TEST(test_transformer_gradients)
{
    vp_device *dev = vt_device((uint32_t)_i);
    vp_graph *g;
    vt_ok(vp_graph_create(dev, &g));
    vt_tiny m;
    vt_ok(vt_tiny_build(g, &tiny_cfg, &m));
    vt_ok(vp_graph_backward(g, m.loss));
    vt_ok(vp_graph_compile(g));
    vp_gt *leaf[VT_TINY_MAX_PARAMS + 2];
    double *vals[VT_TINY_MAX_PARAMS + 2];
    int nl = 0;
    leaf[nl++] = m.x;
    leaf[nl++] = m.target;
    for (int i = 0; i < m.n_params; i++)
        leaf[nl++] = m.params[i];
    for (int i = 0; i < nl; i++) {
        size_t n = (size_t)vp_gt_nelem(leaf[i]);
        float *f = malloc(n * sizeof *f);
        if (i < 2)
            vt_rand(f, n, 500 + (uint64_t)i);
        else
            vt_tiny_init(leaf[i], f, 600 + (uint64_t)i);
        vals[i] = vt_f64(f, n);
        free(f);
    }
    vt_check_graph_grads(g, m.loss, leaf, vals, nl, 1e-6, 2e-4,
                         vt_device_info((uint32_t)_i)->name);
    for (int i = 0; i < nl; i++)
        free(vals[i]);
    vp_graph_destroy(g);
}
END_TEST

START_TEST(test_transformer_training)
{
    vp_device *dev = vt_device((uint32_t)_i);
    vp_graph *g;
    vt_ok(vp_graph_create(dev, &g));
    vt_tiny m;
    vt_ok(vt_tiny_build(g, &tiny_cfg, &m));
    vt_ok(vp_graph_backward(g, m.loss));
    vp_adamw_cfg cfg = vp_adamw_default_cfg();
    cfg.max_norm = 1.0f;
    vt_ok(vp_graph_set_optimizer(g, &cfg));
    vt_ok(vp_graph_compile(g));
    tiny_fill(g, &m, 700, 800);
    float first = 0, last = 0;
    for (int step = 1; step <= 100; step++) {
        vt_ok(vp_graph_run(g));
        if (step == 1)
            vt_ok(vp_graph_read(g, m.loss, &first, sizeof first));
        vt_ok(vp_graph_step(g, 1e-2f, step));
    }
    vt_ok(vp_graph_run(g));
    vt_ok(vp_graph_read(g, m.loss, &last, sizeof last));
    ck_assert_msg(isfinite(last) && last <= first / 10, "100 AdamW steps: loss %g -> %g", first,
                  last);
    vp_graph_stats s = vp_graph_get_stats(g);
    ck_assert_uint_eq(s.segments, 1); /* one submit per step, plus the optimizer's */
    vp_graph_destroy(g);
}
END_TEST

/* AdamW through the graph: one step against the double reference of
 * torch's update (clipping and a learning-rate multiplier on), and a small
 * regression trained for 100 steps. */
START_TEST(test_optimizer)
{
    vp_device *dev = vt_device((uint32_t)_i);
    vp_graph *g;
    vt_ok(vp_graph_create(dev, &g));
    enum { N = 16, F = 8, O = 4 };
    vp_gt *x = vp_g_input(g, "x", 2, (int64_t[]){N, F});
    vp_gt *t = vp_g_input(g, "t", 2, (int64_t[]){N, O});
    vp_gt *big = vp_g_param(g, "frozen", 2, (int64_t[]){F, F}, false);
    vp_gt *w = vp_g_param(g, "w", 2, (int64_t[]){O, F}, true);
    vp_gt *b = vp_g_param(g, "b", 1, (int64_t[]){O}, true);
    vt_ok(vp_g_param_lr_scale(b, 0.5f));
    vp_gt *d = vp_g_add(g, vp_g_linear(g, vp_g_linear(g, x, big, NULL), w, b),
                        vp_g_scale(g, t, -1.0f));
    vp_gt *loss = vp_g_mean(g, vp_g_mul(g, d, d));
    vt_ok(vp_graph_backward(g, loss));
    vp_adamw_cfg cfg = vp_adamw_default_cfg();
    cfg.max_norm = 0.5f;
    vt_ok(vp_graph_set_optimizer(g, &cfg));
    vt_ok(vp_graph_compile(g));
    vp_graph_mem mem = vp_graph_memory(g);
    ck_assert_uint_eq(mem.grads, mem.trainable);
    ck_assert_uint_ge(mem.optimizer, 2 * mem.trainable); /* m and v of trainables only */
    ck_assert_uint_le(mem.optimizer, 3 * mem.trainable + 1024);

    float hx[N * F], ht[N * O], hbig[F * F], hw[O * F], hb[O] = {0};
    vt_rand(hx, N * F, 1);
    vt_rand(ht, N * O, 2);
    vt_rand(hbig, F * F, 3);
    vt_rand(hw, O * F, 4);
    vt_ok(vp_graph_write(g, x, hx, sizeof hx));
    vt_ok(vp_graph_write(g, t, ht, sizeof ht));
    vt_ok(vp_graph_write(g, big, hbig, sizeof hbig));
    vt_ok(vp_graph_write(g, w, hw, sizeof hw));
    vt_ok(vp_graph_write(g, b, hb, sizeof hb));

    /* Step 1 against the reference. */
    vt_ok(vp_graph_run(g));
    float gw[O * F], gb[O], w1[O * F], b1[O];
    vt_ok(vp_graph_read(g, vp_g_grad(w), gw, sizeof gw));
    vt_ok(vp_graph_read(g, vp_g_grad(b), gb, sizeof gb));
    vt_ok(vp_graph_step(g, 0.01f, 1));
    vt_ok(vp_graph_read(g, w, w1, sizeof w1));
    vt_ok(vp_graph_read(g, b, b1, sizeof b1));
    double sq = 0;
    for (int i = 0; i < O * F; i++)
        sq += (double)gw[i] * gw[i];
    for (int i = 0; i < O; i++)
        sq += (double)gb[i] * gb[i];
    double rw[O * F], rgw[O * F], rm[O * F] = {0}, rv[O * F] = {0};
    double rb[O], rgb[O], rmb[O] = {0}, rvb[O] = {0};
    for (int i = 0; i < O * F; i++)
        rw[i] = hw[i], rgw[i] = gw[i];
    for (int i = 0; i < O; i++)
        rb[i] = hb[i], rgb[i] = gb[i];
    double scale_b[O] = {0.5, 0.5, 0.5, 0.5};
    vp_ref_adamw_hp hp = {cfg.beta1, cfg.beta2, cfg.eps, cfg.weight_decay};
    double clip = vp_ref_clip_coef(sq, cfg.max_norm);
    ck_assert(clip < 1.0); /* the test wants clipping active */
    vp_ref_adamw(rw, rgw, rm, rv, NULL, O * F, (double)0.01f, 1, &hp, clip);
    vp_ref_adamw(rb, rgb, rmb, rvb, scale_b, O, (double)0.01f, 1, &hp, clip);
    vt_assert_close(w1, rw, O * F, 1e-10, "AdamW step 1 on w");
    vt_assert_close(b1, rb, O, 1e-10, "AdamW step 1 on b (lr scale 0.5)");
    float gz[O];
    vt_ok(vp_graph_read(g, vp_g_grad(b), gz, sizeof gz));
    for (int i = 0; i < O; i++)
        ck_assert_float_eq(gz[i], 0.0f); /* the step zeroes the gradients */

    float first, last = 0;
    vt_ok(vp_graph_read(g, loss, &first, sizeof first));
    for (int s = 2; s <= 100; s++) {
        vt_ok(vp_graph_run(g));
        vt_ok(vp_graph_step(g, 0.05f, s));
    }
    vt_ok(vp_graph_run(g));
    vt_ok(vp_graph_read(g, loss, &last, sizeof last));
    ck_assert_msg(last < first / 10, "100 AdamW steps: loss %g -> %g", first, last);
    vp_graph_destroy(g);
}
END_TEST

/* Same graph replayed with new inputs: correct each time, no allocation and
 * no new pipeline after the first run. Gradients accumulate until zeroed. */
START_TEST(test_replay_accumulate)
{
    vp_device *dev = vt_device((uint32_t)_i);
    model m;
    model_build(dev, &m);
    model_vals v1, v2;
    model_vals_rand(&v1, 1);
    model_vals_rand(&v2, 2);
    memcpy(v2.w1, v1.w1, sizeof v1.w1); /* same weights, another batch */
    memcpy(v2.b1, v1.b1, sizeof v1.b1);
    memcpy(v2.w2, v1.w2, sizeof v1.w2);
    memcpy(v2.s, v1.s, sizeof v1.s);
    memcpy(v2.c, v1.c, sizeof v1.c);
    model_write(&m, &v1);
    vt_ok(vp_graph_run(m.g));
    float g1[H], g2[H], g12[H], l;
    vt_ok(vp_graph_read(m.g, vp_g_grad(m.c), g1, sizeof g1));
    vp_mem_stats m0 = vp_mem_get_stats(dev);
    uint32_t pipes = vp_pipeline_count(dev);

    vt_ok(vp_graph_zero_grads(m.g));
    model_write(&m, &v2);
    vt_ok(vp_graph_run(m.g));
    vt_ok(vp_graph_read(m.g, m.loss, &l, sizeof l));
    ck_assert(fabs(l - model_loss(&v2)) <= 1e-5 * fabs(model_loss(&v2)));
    vt_ok(vp_graph_read(m.g, vp_g_grad(m.c), g2, sizeof g2));

    /* Micro-batches: v1 then v2 without zeroing sums the gradients. */
    vt_ok(vp_graph_zero_grads(m.g));
    model_write(&m, &v1);
    vt_ok(vp_graph_run(m.g));
    model_write(&m, &v2);
    vt_ok(vp_graph_run(m.g));
    vt_ok(vp_graph_read(m.g, vp_g_grad(m.c), g12, sizeof g12));
    for (int i = 0; i < H; i++)
        ck_assert_msg(fabsf(g12[i] - (g1[i] + g2[i])) <= 1e-5f * (fabsf(g1[i]) + fabsf(g2[i])),
                      "accumulated %g, separately %g + %g", g12[i], g1[i], g2[i]);
    vt_ok(vp_graph_zero_grads(m.g));
    vt_ok(vp_graph_read(m.g, vp_g_grad(m.c), g12, sizeof g12));
    for (int i = 0; i < H; i++)
        ck_assert_float_eq(g12[i], 0.0f);

    ck_assert_uint_eq(vp_mem_get_stats(dev).n_device_allocs, m0.n_device_allocs);
    ck_assert_uint_eq(vp_pipeline_count(dev), pipes);
    vp_graph_destroy(m.g);
}
END_TEST

/* Frozen weights get no gradient and no memory for one. */
START_TEST(test_frozen_memory)
{
    vp_device *dev = vt_device((uint32_t)_i);
    vp_graph *g;
    vt_ok(vp_graph_create(dev, &g));
    vp_gt *x = vp_g_input(g, "x", 2, (int64_t[]){8, 64});
    vp_gt *big = vp_g_param(g, "big", 2, (int64_t[]){64, 64}, false);
    vp_gt *big2 = vp_g_param(g, "big2", 2, (int64_t[]){64, 64}, false);
    vp_gt *small = vp_g_param(g, "small", 2, (int64_t[]){4, 64}, true);
    vp_gt *h = vp_g_linear(g, vp_g_linear(g, x, big, NULL), big2, NULL);
    vp_gt *loss = vp_g_mean(g, vp_g_linear(g, h, small, NULL));
    vt_ok(vp_graph_backward(g, loss));
    vt_ok(vp_graph_compile(g));
    vp_graph_mem mem = vp_graph_memory(g);
    ck_assert_ptr_null(vp_g_grad(big));
    ck_assert_ptr_null(vp_g_grad(big2));
    ck_assert_ptr_nonnull(vp_g_grad(small));
    ck_assert_uint_eq(mem.frozen, 2 * 64 * 64 * 4);
    ck_assert_uint_eq(mem.trainable, 4 * 64 * 4);
    ck_assert_uint_eq(mem.grads, mem.trainable); /* the small matrix's only */
    ck_assert_uint_lt(mem.grads, mem.frozen / 10);
    vp_graph_destroy(g);
}
END_TEST

/* A chain of ten ops whose intermediates die at once: the arena reuses. */
START_TEST(test_planner_reuse)
{
    vp_device *dev = vt_device((uint32_t)_i);
    vp_graph *g;
    vt_ok(vp_graph_create(dev, &g));
    vp_gt *x = vp_g_input(g, "x", 1, (int64_t[]){1000});
    vp_gt *y = x;
    for (int i = 0; i < 10; i++)
        y = vp_g_scale(g, y, 1.5f);
    vp_g_keep(y);
    vt_ok(vp_graph_compile(g));
    vp_graph_mem mem = vp_graph_memory(g);
    ck_assert_uint_ge(mem.unplanned, 10 * 4000);
    ck_assert_uint_le(mem.activations, 2 * 4096); /* ping-pong between two */
    float hx[1000], hy[1000];
    for (int i = 0; i < 1000; i++)
        hx[i] = (float)i / 1000.0f;
    vt_ok(vp_graph_write(g, x, hx, sizeof hx));
    vt_ok(vp_graph_run(g));
    vt_ok(vp_graph_read(g, y, hy, sizeof hy));
    for (int i = 0; i < 1000; i++) {
        float w = hx[i];
        for (int k = 0; k < 10; k++)
            w *= 1.5f;
        ck_assert_float_eq_tol(hy[i], w, 1e-6f * fabsf(w) + 1e-12f);
    }
    vp_graph_destroy(g);
}
END_TEST

/* A host node between two segments: one-hot of each row's argmax. */
static vp_status onehot_argmax(void *user, const vp_host_io *io)
{
    int *calls = user;
    (*calls)++;
    int64_t rows = io->in_shape[0][0], cols = io->in_shape[0][1];
    for (int64_t r = 0; r < rows; r++) {
        int64_t best = 0;
        for (int64_t c = 1; c < cols; c++)
            if (io->in[0][r * cols + c] > io->in[0][r * cols + best])
                best = c;
        for (int64_t c = 0; c < cols; c++)
            io->out[0][r * cols + c] = c == best ? 1.0f : 0.0f;
    }
    return VP_OK;
}

/* A host node that reads int32 indices and writes int32 ones (as
 * Hungarian matching does), feeding a gather: the device and the
 * reference executor agree, and the int32 values pass as int32 bits. */
static vp_status shift_indices(void *user, const vp_host_io *io)
{
    (void)user;
    const int32_t *in = (const int32_t *)io->in[0];
    int32_t *out = (int32_t *)io->out[0];
    for (int64_t i = 0; i < io->in_shape[0][0]; i++)
        out[i] = (in[i] + 1) % 4;
    return VP_OK;
}

START_TEST(test_host_node_int)
{
    vp_device *dev = vt_device((uint32_t)_i);
    vp_graph *g;
    vt_ok(vp_graph_create(dev, &g));
    vp_gt *idx = vp_g_input_i32(g, "idx", 1, (int64_t[]){3});
    vp_gt *table = vp_g_param(g, "table", 2, (int64_t[]){4, 2}, true);
    vp_gt *shifted;
    vt_ok(vp_g_host(g, "shift", shift_indices, NULL, 1, &idx, 1, (int[]){1},
                    (const int64_t *const[]){(int64_t[]){3}}, (vp_dtype[]){VP_I32}, &shifted));
    ck_assert_int_eq(vp_gt_dtype(shifted), VP_I32);
    vp_gt *rows = vp_g_gather_rows(g, table, shifted);
    vp_g_keep(rows);
    vt_ok(vp_graph_compile(g));
    int32_t hi[3] = {3, 0, 2};
    float ht[8] = {0, 1, 10, 11, 20, 21, 30, 31}, got[6];
    vt_ok(vp_graph_write(g, idx, hi, sizeof hi));
    vt_ok(vp_graph_write(g, table, ht, sizeof ht));
    vt_ok(vp_graph_run(g));
    vt_ok(vp_graph_read(g, rows, got, sizeof got));
    const float want[6] = {0, 1, 10, 11, 30, 31}; /* rows 0, 1, 3 */
    for (int k = 0; k < 6; k++)
        ck_assert_float_eq(got[k], want[k]);
    vp_graph_ref *ref;
    vt_ok(vp_graph_ref_create(g, &ref));
    for (int k = 0; k < 3; k++)
        vp_graph_ref_data(ref, idx)[k] = hi[k];
    for (int k = 0; k < 8; k++)
        vp_graph_ref_data(ref, table)[k] = ht[k];
    vt_ok(vp_graph_ref_forward(ref));
    for (int k = 0; k < 6; k++)
        ck_assert(vp_graph_ref_data(ref, rows)[k] == want[k]);
    ck_assert(vp_graph_ref_data(ref, shifted)[2] == 3.0);
    vp_graph_ref_destroy(ref);
    vp_graph_destroy(g);
}
END_TEST

/* An int32 constant (indices known at build time, as Swin's relative
 * position index) feeding a gather: its bits reach the device unchanged,
 * the reference executor reads them as integers, and the gradient
 * scatters back through it. */
START_TEST(test_const_i32)
{
    vp_device *dev = vt_device((uint32_t)_i);
    vp_graph *g;
    vt_ok(vp_graph_create(dev, &g));
    const int32_t hi[4] = {3, 0, 3, 1};
    vp_gt *idx = vp_g_const_i32(g, "idx", 1, (int64_t[]){4}, hi);
    ck_assert_int_eq(vp_gt_dtype(idx), VP_I32);
    vp_gt *table = vp_g_param(g, "table", 2, (int64_t[]){4, 2}, true);
    vp_gt *rows = vp_g_gather_rows(g, table, idx);
    vp_gt *loss = vp_g_sum(g, vp_g_mul(g, rows, rows));
    vp_g_keep(rows);
    vt_ok(vp_graph_backward(g, loss));
    vt_ok(vp_graph_compile(g));
    float ht[8] = {0, 1, 10, 11, 20, 21, 30, 31}, got[8];
    vt_ok(vp_graph_write(g, table, ht, sizeof ht));
    vt_ok(vp_graph_run(g));
    vt_ok(vp_graph_read(g, rows, got, sizeof got));
    const float want[8] = {30, 31, 0, 1, 30, 31, 10, 11};
    for (int k = 0; k < 8; k++)
        ck_assert_float_eq(got[k], want[k]);
    vt_ok(vp_graph_read(g, vp_g_grad(table), got, sizeof got));
    const float dwant[8] = {0, 2, 20, 22, 0, 0, 120, 124}; /* 2 x, row 3 twice */
    for (int k = 0; k < 8; k++)
        ck_assert_float_eq(got[k], dwant[k]);
    vp_graph_ref *ref;
    vt_ok(vp_graph_ref_create(g, &ref));
    for (int k = 0; k < 8; k++)
        vp_graph_ref_data(ref, table)[k] = ht[k];
    vt_ok(vp_graph_ref_forward(ref));
    for (int k = 0; k < 4; k++)
        ck_assert(vp_graph_ref_data(ref, idx)[k] == hi[k]);
    for (int k = 0; k < 8; k++)
        ck_assert(vp_graph_ref_data(ref, rows)[k] == want[k]);
    vp_graph_ref_destroy(ref);
    vp_graph_destroy(g);
}
END_TEST

/* Uniform random numbers drawn on the device at every run: in [0, 1),
 * the reference executor's to the bit from the same seed, a new draw each
 * run, two rand tensors two streams, and a mean near 1/2. */
START_TEST(test_rand)
{
    vp_device *dev = vt_device((uint32_t)_i);
    vp_graph *g;
    vt_ok(vp_graph_create(dev, &g));
    enum { N = 4096 };
    vp_gt *a = vp_g_rand(g, "a", 2, (int64_t[]){64, 64});
    vp_gt *b = vp_g_rand(g, "b", 1, (int64_t[]){N});
    vp_g_keep(a);
    vp_g_keep(b);
    vt_ok(vp_graph_compile(g));
    float *x = malloc(N * sizeof *x), *y = malloc(N * sizeof *y), *z = malloc(N * sizeof *z);
    uint32_t seed;
    vt_ok(vp_graph_run(g));
    vt_ok(vp_graph_seed_read(g, &seed));
    vt_ok(vp_graph_read(g, a, x, N * sizeof *x));
    vt_ok(vp_graph_read(g, b, y, N * sizeof *y));
    double mean = 0;
    int same = 0;
    for (int i = 0; i < N; i++) {
        ck_assert(x[i] >= 0.0f && x[i] < 1.0f);
        mean += x[i];
        same += x[i] == y[i];
    }
    mean /= N;
    ck_assert_msg(fabs(mean - 0.5) < 0.02, "mean %g", mean);
    ck_assert_int_lt(same, 8);
    vp_graph_ref *ref;
    vt_ok(vp_graph_ref_create(g, &ref));
    vp_graph_ref_data(ref, vp_graph_find(g, "vpeft.dropout_seed"))[0] = seed;
    vt_ok(vp_graph_ref_forward(ref));
    for (int i = 0; i < N; i++) {
        ck_assert(vp_graph_ref_data(ref, a)[i] == x[i]);
        ck_assert(vp_graph_ref_data(ref, b)[i] == y[i]);
    }
    vp_graph_ref_destroy(ref);
    vt_ok(vp_graph_run(g));
    vt_ok(vp_graph_read(g, a, z, N * sizeof *z));
    same = 0;
    for (int i = 0; i < N; i++)
        same += x[i] == z[i];
    ck_assert_int_lt(same, 8);
    free(x);
    free(y);
    free(z);
    vp_graph_destroy(g);
}
END_TEST

START_TEST(test_host_node)
{
    vp_device *dev = vt_device((uint32_t)_i);
    vp_graph *g;
    vt_ok(vp_graph_create(dev, &g));
    enum { R = 5, C = 3 };
    vp_gt *x = vp_g_input(g, "x", 2, (int64_t[]){R, C});
    vp_gt *w = vp_g_param(g, "w", 1, (int64_t[]){C}, true);
    vp_gt *z = vp_g_mul(g, vp_g_scale(g, x, 2.0f), w);
    vp_gt *onehot;
    int calls = 0;
    vt_ok(vp_g_host(g, "argmax", onehot_argmax, &calls, 1, &z, 1, (int[]){2},
                    (const int64_t *const[]){(int64_t[]){R, C}}, NULL, &onehot));
    vp_gt *loss = vp_g_sum(g, vp_g_mul(g, z, onehot));
    vt_ok(vp_graph_backward(g, loss));
    vt_ok(vp_graph_compile(g));
    ck_assert_uint_eq(vp_graph_get_stats(g).segments, 2);
    float hx[R * C], hw[C] = {0.5f, -1.0f, 2.0f};
    vt_rand(hx, R * C, 9);
    vt_ok(vp_graph_write(g, x, hx, sizeof hx));
    vt_ok(vp_graph_write(g, w, hw, sizeof hw));
    vt_ok(vp_graph_run(g));
    ck_assert_int_eq(calls, 1);
    /* loss = sum_r max_c 2 x w; d/dw_c = sum over rows whose max is c of 2x */
    double want_loss = 0, want_grad[C] = {0};
    for (int r = 0; r < R; r++) {
        int best = 0;
        for (int c = 1; c < C; c++)
            if (2.0f * hx[r * C + c] * hw[c] > 2.0f * hx[r * C + best] * hw[best])
                best = c;
        want_loss += 2.0 * hx[r * C + best] * hw[best];
        want_grad[best] += 2.0 * hx[r * C + best];
    }
    float l, gw[C];
    vt_ok(vp_graph_read(g, loss, &l, sizeof l));
    vt_ok(vp_graph_read(g, vp_g_grad(w), gw, sizeof gw));
    ck_assert_double_eq_tol(l, want_loss, 1e-5);
    for (int c = 0; c < C; c++)
        ck_assert_double_eq_tol(gw[c], want_grad[c], 1e-5);
    vp_graph_destroy(g);
}
END_TEST

/* Names are found through a hash: 100k parameters (a 4000-block model
 * has ~50k) build in well under the bound, where a scan per new name took
 * minutes; the first tensor of a name is the one found, and a repeated
 * parameter name is still refused. */
START_TEST(test_many_names)
{
    enum { N = 100000 };
    vp_graph *g;
    vt_ok(vp_graph_create(vt_device((uint32_t)_i), &g));
    double t0 = vp_now_s();
    char name[64];
    for (int i = 0; i < N; i++) {
        snprintf(name, sizeof name, "blocks.%d.attn.qkv.weight", i);
        ck_assert_ptr_nonnull(vp_g_param(g, name, 1, (int64_t[]){2}, i % 2));
    }
    for (int i = 0; i < N; i++) {
        snprintf(name, sizeof name, "blocks.%d.attn.qkv.weight", i);
        vp_gt *t = vp_graph_find(g, name);
        ck_assert_ptr_nonnull(t);
        ck_assert_str_eq(vp_gt_name(t), name);
    }
    double dt = vp_now_s() - t0;
    ck_assert_msg(dt < 5.0, "%d names took %.2f s", N, dt);
    ck_assert_ptr_null(vp_graph_find(g, "blocks.100000.attn.qkv.weight"));
    vp_gt *first = vp_graph_find(g, "blocks.7.attn.qkv.weight");
    vp_gt *v = vp_g_reshape(g, first, 2, (int64_t[]){1, 2}); /* the same name again */
    ck_assert_ptr_nonnull(v);
    ck_assert_ptr_eq(vp_graph_find(g, "blocks.7.attn.qkv.weight"), first);
    ck_assert_ptr_null(vp_g_param(g, "blocks.42.attn.qkv.weight", 1, (int64_t[]){2}, true));
    ck_assert_int_eq(vp_graph_compile(g), VP_ERR_INVALID);
    ck_assert_str_eq(vp_error_last(), "parameter blocks.42.attn.qkv.weight: a tensor of that "
                     "name exists");
    vp_graph_destroy(g);
}
END_TEST

START_TEST(test_build_errors)
{
    /* the accessors take a failed op's NULL as an empty tensor */
    ck_assert_int_eq(vp_gt_ndim(NULL), 0);
    ck_assert_int_eq(vp_gt_nelem(NULL), 0);
    ck_assert_int_eq(vp_gt_shape(NULL)[0], 0);
    ck_assert_str_eq(vp_gt_name(NULL), "(none)");

    vp_device *dev = vt_device((uint32_t)_i);
    vp_graph *g;
    vt_ok(vp_graph_create(dev, &g));
    vp_gt *x = vp_g_input(g, "x", 2, (int64_t[]){3, 4});
    vp_gt *w = vp_g_param(g, "w", 2, (int64_t[]){5, 6}, true);
    ck_assert_ptr_null(vp_g_linear(g, x, w, NULL));
    ck_assert_ptr_null(vp_g_scale(g, NULL, 2.0f)); /* NULL flows through */
    ck_assert_ptr_null(vp_g_input(g, "x", 1, (int64_t[]){2}));
    ck_assert_int_eq(vp_graph_compile(g), VP_ERR_SHAPE);
    ck_assert_str_eq(vp_error_last(), "matmul: x (3, 4) x w (5, 6)^T: inner dimensions differ");
    vp_graph_destroy(g);

    vt_ok(vp_graph_create(dev, &g));
    x = vp_g_input(g, "x", 2, (int64_t[]){3, 4});
    w = vp_g_param(g, "w", 2, (int64_t[]){2, 4}, true);
    vp_gt *y = vp_g_linear(g, x, w, NULL);
    ck_assert_int_eq(vp_graph_backward(g, y), VP_ERR_SHAPE);
    ck_assert_str_eq(vp_error_last(), "backward: the loss matmul.2 (3, 2) is not a scalar");
    ck_assert_ptr_null(vp_g_reshape(g, y, 1, (int64_t[]){5}));
    ck_assert_int_eq(vp_graph_compile(g), VP_ERR_SHAPE);
    ck_assert_str_eq(vp_error_last(), "reshape: matmul.2 (3, 2) has 6 elements, the new shape 5");
    vp_graph_destroy(g);

    vt_ok(vp_graph_create(dev, &g));
    x = vp_g_input(g, "x", 1, (int64_t[]){4});
    y = vp_g_scale(g, x, 3.0f);
    vp_gt *z = vp_g_scale(g, y, 3.0f);
    vp_g_keep(z);
    vp_gt *p = vp_g_param(g, "p", 1, (int64_t[]){4}, false);
    ck_assert_int_eq(vp_graph_backward(g, vp_g_sum(g, z)), VP_ERR_INVALID);
    ck_assert_str_eq(vp_error_last(), "backward: the loss matmul.7 depends on no trainable "
                                      "parameter");
    vt_ok(vp_graph_compile(g));
    float h[4] = {1, 2, 3, 4};
    ck_assert_int_eq(vp_graph_write(g, y, h, sizeof h), VP_ERR_INVALID);
    ck_assert_str_eq(vp_error_last(), "tensor scale.1: only inputs, parameters and constants are "
                                      "written by the host");
    ck_assert_int_eq(vp_graph_read(g, y, h, sizeof h), VP_ERR_INVALID);
    ck_assert_str_eq(vp_error_last(), "tensor scale.1: its memory is reused during a run; mark it "
                                      "with vp_g_keep before compiling to read it");
    ck_assert_int_eq(vp_graph_write(g, x, h, 12), VP_ERR_SHAPE);
    vt_ok(vp_graph_write(g, p, h, sizeof h));
    vt_ok(vp_graph_write(g, x, h, sizeof h));
    vt_ok(vp_graph_run(g));
    vt_ok(vp_graph_read(g, z, h, sizeof h));
    ck_assert_float_eq(h[3], 36.0f);
    ck_assert_ptr_null(vp_g_scale(g, x, 1.0f)); /* compiled: fixed */
    vp_graph_destroy(g);
}
END_TEST

/* ---- gradient buckets ---- */

typedef struct bucket_log {
    const vp_grad_bucket *b;
    float *host;
    uint32_t n, seen, fail_at;
    bool in_order;
} bucket_log;

/* records the hand-overs and doubles each bucket in place */
static vp_status on_bucket(void *user, uint32_t k, float *x, uint64_t count)
{
    bucket_log *l = user;
    if (k == l->fail_at)
        return vp_error_set(VP_ERR_IO, "all-reduce of bucket %u failed", k);
    l->in_order = l->in_order && k == l->seen && k < l->n && x == l->host + l->b[k].offset &&
                  count == l->b[k].count;
    l->seen++;
    for (uint64_t i = 0; i < count; i++)
        x[i] *= 2.0f;
    return VP_OK;
}

/* vp_graph_run_buckets on the tiny transformer: buckets cover the flat
 * gradient once and come in order, each segment's end, the same numbers as
 * a plain run, the device's gradients untouched; on the device as it is and
 * with its memory unmapped (the readback copies). */
static void buckets_on(vp_device *dev, const char *what)
{
    vp_graph *g;
    vt_ok(vp_graph_create(dev, &g));
    vp_graph_set_deterministic(g, true);
    vt_tiny m;
    vt_ok(vt_tiny_build(g, &tiny_cfg, &m));
    vt_ok(vp_graph_backward(g, m.loss));
    vt_ok(vp_graph_set_buckets(g, 1024));
    vt_ok(vp_graph_compile(g));
    vt_expect_err(vp_graph_set_buckets(g, 1024), VP_ERR_INVALID,
                  "buckets: set them before compiling the graph");
    tiny_fill(g, &m, 900, 910);

    uint64_t len = vp_graph_grads_len(g);
    uint32_t nb = 0;
    const vp_grad_bucket *b = vp_graph_buckets(g, &nb);
    ck_assert_msg(nb >= 4, "%s: %u buckets of 1 KiB", what, nb);
    /* the buckets tile the buffer */
    uint8_t *cover = calloc(len, 1);
    for (uint32_t k = 0; k < nb; k++) {
        ck_assert(b[k].count > 0 && b[k].offset + b[k].count <= len);
        for (uint64_t i = 0; i < b[k].count; i++)
            cover[b[k].offset + i]++;
    }
    for (uint64_t i = 0; i < len; i++)
        ck_assert_msg(cover[i] == 1, "%s: float %llu in %u buckets", what,
                      (unsigned long long)i, cover[i]);
    free(cover);
    /* each bucket's end closes a segment: more segments than one */
    ck_assert_uint_ge(vp_graph_get_stats(g).segments, 2);

    float *ref = malloc(len * 4), *host = malloc(len * 4), *dev_g = malloc(len * 4);
    vt_ok(vp_graph_run(g));
    vt_ok(vp_graph_grads_read(g, ref, len));
    vt_ok(vp_graph_zero_grads(g));
    bucket_log l = {b, host, nb, 0, UINT32_MAX, true};
    memset(host, 0xff, len * 4);
    vt_ok(vp_graph_run_buckets(g, host, on_bucket, &l));
    ck_assert_msg(l.in_order && l.seen == nb, "%s: %u of %u buckets, in order %d", what, l.seen,
                  nb, l.in_order);
    vt_ok(vp_graph_grads_read(g, dev_g, len));
    for (uint64_t i = 0; i < len; i++) {
        ck_assert_msg(dev_g[i] == ref[i], "%s: gradient %llu is %g on the device, %g by a plain "
                      "run", what, (unsigned long long)i, dev_g[i], ref[i]);
        ck_assert_msg(host[i] == 2.0f * ref[i], "%s: handed over %g, want 2 x %g", what,
                      host[i], ref[i]);
    }
    /* a second run without zeroing: the sum so far */
    l.seen = 0;
    vt_ok(vp_graph_run_buckets(g, host, on_bucket, &l));
    for (uint64_t i = 0; i < len; i++)
        ck_assert_float_eq(host[i], 2.0f * (ref[i] + ref[i]));
    vp_graph_stats s = vp_graph_get_stats(g);
    ck_assert(s.handover_ms > 0 && s.handover_exposed_ms <= s.handover_ms);
    /* a hand-over that fails ends the run with its error */
    l.seen = 0;
    l.fail_at = 1;
    vt_expect_err(vp_graph_run_buckets(g, host, on_bucket, &l), VP_ERR_IO,
                  "all-reduce of bucket 1 failed");
    ck_assert_uint_eq(l.seen, 1);
    free(ref);
    free(host);
    free(dev_g);
    vp_graph_destroy(g);
}

/* Flat buffers larger than one storage binding may span (maxStorageBufferRange:
 * 128 MiB on lavapipe, a 47M-parameter model's buffers exceed it) are
 * zeroed, normed and updated chunk by chunk: on a device told its limit is
 * 2 KiB, three AdamW steps over 6 x 200 parameters give the same bits as
 * on the device as it is without clipping (each element's update is its
 * own), and the same to 1e-6 with clipping (the norm sums in another
 * order). */
static void chunked_steps(vp_device *dev, bool clip, float *out)
{
    vp_graph *g;
    vt_ok(vp_graph_create(dev, &g));
    enum { NP = 6, N = 200 };
    vp_gt *x = vp_g_input(g, "x", 1, (int64_t[]){N}), *w[NP], *loss = NULL;
    for (int i = 0; i < NP; i++) {
        char name[16];
        snprintf(name, sizeof name, "w%d", i);
        w[i] = vp_g_param(g, name, 1, (int64_t[]){N}, true);
        vp_gt *y = vp_g_mul(g, x, w[i]);
        vp_gt *t = vp_g_sum(g, vp_g_mul(g, y, y));
        loss = loss ? vp_g_add(g, loss, t) : t;
    }
    vt_ok(vp_graph_backward(g, loss));
    vp_adamw_cfg cfg = vp_adamw_default_cfg();
    cfg.max_norm = clip ? 0.5f : 0.0f;
    vt_ok(vp_graph_set_optimizer(g, &cfg));
    vt_ok(vp_graph_compile(g));
    float v[N];
    vt_rand(v, N, 7);
    vt_ok(vp_graph_write(g, x, v, sizeof v));
    for (int i = 0; i < NP; i++) {
        vt_rand(v, N, 100 + (uint64_t)i);
        vt_ok(vp_graph_write(g, w[i], v, sizeof v));
    }
    for (int step = 1; step <= 3; step++) {
        vt_ok(vp_graph_run(g));
        /* the device's sum of squares of the gradient, chunked or not,
         * is the host's */
        float gr[NP * N + 64 * NP];
        uint64_t glen = vp_graph_grads_len(g);
        ck_assert_uint_le(glen, sizeof gr / sizeof gr[0]);
        vt_ok(vp_graph_grads_read(g, gr, glen));
        double want = 0, got;
        for (uint64_t i = 0; i < glen; i++)
            want += (double)gr[i] * gr[i];
        vt_ok(vp_graph_grad_sqnorm(g, &got));
        ck_assert_msg(fabs(got - want) <= 1e-5 * want, "sqnorm %g, host %g", got, want);
        vt_ok(vp_graph_step(g, 1e-2f, step));
    }
    for (int i = 0; i < NP; i++)
        vt_ok(vp_graph_read(g, w[i], out + i * N, N * sizeof *out));
    vp_graph_destroy(g);
}

START_TEST(test_flat_chunks)
{
    vp_device *small;
    vp_device_opts o = {.max_storage_range = 2048, .profile = 0};
    vt_ok(vp_device_create(vt_instance(), vt_device_info((uint32_t)_i)->index, &o, &small));
    ck_assert_uint_eq(vp_device_get_info(small)->max_storage_range, 2048);
    static float a[6 * 200], b[6 * 200];
    for (int clip = 0; clip < 2; clip++) {
        chunked_steps(vt_device((uint32_t)_i), clip, a);
        chunked_steps(small, clip, b);
        double e = 0;
        for (int i = 0; i < 6 * 200; i++)
            e = fmax(e, fabs((double)a[i] - b[i]));
        if (clip)
            ck_assert_msg(e < 1e-6, "clipped: %g", e);
        else
            ck_assert(!memcmp(a, b, sizeof a));
    }
    vp_device_destroy(small);
}
END_TEST

START_TEST(test_buckets)
{
    buckets_on(vt_device((uint32_t)_i), vt_device_info((uint32_t)_i)->name);
    vp_device *dev;
    vp_device_opts o = {.force_staging = true};
    vt_ok(vp_device_create(vt_instance(), vt_device_info((uint32_t)_i)->index, &o, &dev));
    buckets_on(dev, "unmapped");
    vp_device_destroy(dev);

    /* without buckets set */
    vp_graph *g;
    vt_ok(vp_graph_create(vt_device((uint32_t)_i), &g));
    vt_tiny m;
    vt_ok(vt_tiny_build(g, &tiny_cfg, &m));
    vt_ok(vp_graph_backward(g, m.loss));
    vt_ok(vp_graph_compile(g));
    uint32_t nb = 1;
    ck_assert_ptr_null(vp_graph_buckets(g, &nb));
    ck_assert_uint_eq(nb, 0);
    float x;
    vt_expect_err(vp_graph_run_buckets(g, &x, on_bucket, NULL), VP_ERR_INVALID,
                  "run_buckets: set buckets before compiling");
    vp_graph_destroy(g);
}
END_TEST

int main(void)
{
    Suite *s = suite_create("graph");
    TCase *tc = vt_tcase("graph");
    vt_add_per_device(tc, test_model_gradients, NULL);
    vt_add_per_device(tc, test_replay_accumulate, NULL);
    vt_add_per_device(tc, test_nn_layers, NULL);
    vt_add_per_device(tc, test_losses, NULL);
    vt_add_per_device(tc, test_masked_attention, NULL);
    vt_add_per_device(tc, test_add_alias, NULL);
    vt_add_per_device(tc, test_slice_views, NULL);
    vt_add_per_device(tc, test_dropout_graph, NULL);
    vt_add_per_device(tc, test_vision_layers, NULL);
    vt_add_per_device(tc, test_transformer_gradients, NULL);
    vt_add_per_device(tc, test_transformer_training, NULL);
    vt_add_per_device(tc, test_optimizer, NULL);
    vt_add_per_device(tc, test_frozen_memory, NULL);
    vt_add_per_device(tc, test_planner_reuse, NULL);
    vt_add_per_device(tc, test_host_node, NULL);
    vt_add_per_device(tc, test_host_node_int, NULL);
    vt_add_per_device(tc, test_const_i32, NULL);
    vt_add_per_device(tc, test_rand, NULL);
    vt_add_per_device(tc, test_build_errors, NULL);
    vt_add_per_device(tc, test_many_names, NULL);
    vt_add_per_device(tc, test_buckets, NULL);
    vt_add_per_device(tc, test_flat_chunks, NULL);
    suite_add_tcase(s, tc);
    return vt_run(s);
}
