/*
 * Optimizer suite: the sum of squares over several tensors and AdamW, on
 * every device under test against the double-precision references in
 * core/ref/loss.c. AdamW runs as training does: one recording (sqnorm, then
 * AdamW on two parameter groups sharing the global norm) submitted for
 * several steps, with new gradients and a new learning rate written to
 * device tensors between submits, compared with torch.optim.AdamW's update
 * (and clip_grad_norm_) in double after every step; clipping off, active
 * and inactive; with and without per-element learning-rate multipliers.
 * Also the state helper and the error messages.
 */
#include "harness.h"

#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "ops/optim.h"
#include "ref/loss.h"

#define TOL 1e-7

static float download1(const vp_tensor *t)
{
    float v;
    vt_ok(vp_tensor_download(t, &v, sizeof v));
    return v;
}

/* ---- sqnorm -------------------------------------------------------------------- */

static void run_sqnorm(uint32_t di, uint32_t n_tensors)
{
    static const int64_t sizes[] = {1, 7, 33, 257, 1030, 4099, 4, 12};
    vp_device *dev = vt_device(di);
    const vp_device_info *d = vt_device_info(di);
    vp_tensor *xs[16];
    float *h[16];
    double *dh[16];
    int64_t ns[16];
    ck_assert_uint_le(n_tensors, 16);
    for (uint32_t i = 0; i < n_tensors; i++) {
        ns[i] = sizes[(i * 3 + n_tensors) % 8];
        h[i] = malloc((size_t)ns[i] * sizeof *h[i]);
        vt_rand(h[i], (size_t)ns[i], i * 7 + n_tensors);
        dh[i] = vt_f64(h[i], (size_t)ns[i]);
        xs[i] = vt_tensor(dev, "x", 1, &ns[i], h[i]);
    }
    double want = vp_ref_sqnorm((const double *const *)dh, ns, (int)n_tensors);
    vp_tensor *out = vt_tensor(dev, "out", 1, (int64_t[]){1}, NULL);
    vp_cmd *cmd;
    vt_ok(vp_cmd_create(dev, &cmd));
    vt_ok(vp_cmd_begin(cmd));
    vt_ok(vp_op_sqnorm(cmd, (const vp_tensor *const *)xs, n_tensors, out));
    ck_assert_uint_eq(vp_cmd_get_stats(cmd).dispatches, (n_tensors + 6) / 7);
    vt_ok(vp_cmd_submit(cmd));
    float got = download1(out);
    vt_assert_close(&got, &want, 1, TOL, "%s: sqnorm of %u tensors", d->name, n_tensors);
    ck_assert_msg(fabs(got - want) <= 1e-6 * want, "%s: sqnorm of %u tensors: %.9g, want %.9g",
                  d->name, n_tensors, (double)got, want);
    /* a replay gives the same bits */
    vt_ok(vp_cmd_submit(cmd));
    float again = download1(out);
    ck_assert_msg(!memcmp(&got, &again, sizeof got), "%s: sqnorm replay %.9g, first %.9g",
                  d->name, (double)again, (double)got);
    vp_cmd_destroy(cmd);
    vp_tensor_destroy(out);
    for (uint32_t i = 0; i < n_tensors; i++) {
        vp_tensor_destroy(xs[i]);
        free(h[i]);
        free(dh[i]);
    }
}

/* 1 tensor, up to 7 (one dispatch), 8, 9 and 15 (several, accumulating). */
START_TEST(test_sqnorm)
{
    static const uint32_t counts[] = {1, 3, 7, 8, 9, 15};
    for (size_t i = 0; i < sizeof counts / sizeof counts[0]; i++)
        run_sqnorm((uint32_t)_i, counts[i]);
}
END_TEST

/* ---- AdamW ---------------------------------------------------------------------- */

typedef struct adamw_case {
    int64_t na, nb;     /* two parameter groups: a and b */
    float max_norm;     /* 0: no clipping */
    bool lr_scale;      /* group a gets per-element multipliers (0.1 or 1) */
    bool no_sqnorm;     /* record without vp_op_sqnorm (max_norm must be 0) */
} adamw_case;

typedef struct group {
    int64_t n;
    vp_tensor *w, *g, *m, *v, *scale;
    float *hw, *hg, *hscale;
    double *rw, *rm, *rv, *rscale, *rw0;
} group;

static void group_init(vp_device *dev, group *G, int64_t n, bool scale, uint64_t seed)
{
    memset(G, 0, sizeof *G);
    G->n = n;
    size_t sz = (size_t)n;
    G->hw = malloc(sz * sizeof *G->hw);
    G->hg = malloc(sz * sizeof *G->hg);
    vt_rand(G->hw, sz, seed);
    float *zero = calloc(sz, sizeof *zero);
    G->w = vt_tensor(dev, "w", 1, &n, G->hw);
    G->g = vt_tensor(dev, "g", 1, &n, NULL);
    G->m = vt_tensor(dev, "m", 1, &n, zero);
    G->v = vt_tensor(dev, "v", 1, &n, zero);
    free(zero);
    G->rw = vt_f64(G->hw, sz);
    G->rw0 = vt_f64(G->hw, sz);
    G->rm = calloc(sz, sizeof *G->rm);
    G->rv = calloc(sz, sizeof *G->rv);
    if (scale) {
        /* parameter groups inside one flat buffer: runs of lr 1x and 0.1x */
        G->hscale = malloc(sz * sizeof *G->hscale);
        for (size_t i = 0; i < sz; i++)
            G->hscale[i] = (i / 5) % 2 ? 0.1f : 1.0f;
        G->scale = vt_tensor(dev, "lr_scale", 1, &n, G->hscale);
        G->rscale = vt_f64(G->hscale, sz);
    }
}

static void group_free(group *G)
{
    vp_tensor_destroy(G->w);
    vp_tensor_destroy(G->g);
    vp_tensor_destroy(G->m);
    vp_tensor_destroy(G->v);
    vp_tensor_destroy(G->scale);
    free(G->hw);
    free(G->hg);
    free(G->hscale);
    free(G->rw);
    free(G->rm);
    free(G->rv);
    free(G->rscale);
    free(G->rw0);
}

/* Parameters, moments and the accumulated update w - w0 against the
 * reference after a step. */
static void group_check(const group *G, const char *what, int step)
{
    size_t n = (size_t)G->n;
    float *w = vt_download(G->w), *m = vt_download(G->m), *v = vt_download(G->v);
    double *dw = malloc(n * sizeof *dw);
    float *fdw = malloc(n * sizeof *fdw);
    for (size_t i = 0; i < n; i++) {
        dw[i] = G->rw[i] - G->rw0[i];
        fdw[i] = (float)((double)w[i] - G->rw0[i]);
    }
    vt_assert_close(w, G->rw, n, TOL, "%s, step %d: param", what, step);
    vt_assert_close(m, G->rm, n, TOL, "%s, step %d: m", what, step);
    vt_assert_close(v, G->rv, n, TOL, "%s, step %d: v", what, step);
    vt_assert_close(fdw, dw, n, TOL, "%s, step %d: param - initial param", what, step);
    free(w);
    free(m);
    free(v);
    free(dw);
    free(fdw);
}

/* A learning-rate schedule that changes every step (warmup, then decay). */
static float lr_at(int step)
{
    return step <= 2 ? 0.02f * (float)step : 0.04f / (float)(step - 1);
}

static void run_adamw(uint32_t di, const adamw_case *c)
{
    enum { STEPS = 5 };
    vp_device *dev = vt_device(di);
    const vp_device_info *d = vt_device_info(di);
    vp_adamw_cfg cfg = {.beta1 = 0.9f, .beta2 = 0.99f, .eps = 1e-6f, .weight_decay = 0.05f,
                        .max_norm = c->max_norm};
    vp_ref_adamw_hp hp = {cfg.beta1, cfg.beta2, cfg.eps, cfg.weight_decay};
    group A, B;
    group_init(dev, &A, c->na, c->lr_scale, 1);
    group_init(dev, &B, c->nb, false, 2);
    vp_tensor *state = vt_tensor(dev, "state", 1, (int64_t[]){4}, NULL);
    vp_tensor *sq = vt_tensor(dev, "sqnorm", 1, (int64_t[]){1}, NULL);
    char what[400];
    snprintf(what, sizeof what, "%s: adamw groups %lld + %lld, max_norm %g%s%s", d->name,
             (long long)c->na, (long long)c->nb, (double)c->max_norm,
             c->lr_scale ? ", lr_scale" : "", c->no_sqnorm ? ", no sqnorm" : "");

    /* Record once. */
    vp_cmd *cmd;
    vt_ok(vp_cmd_create(dev, &cmd));
    vt_ok(vp_cmd_begin(cmd));
    if (!c->no_sqnorm)
        vt_ok(vp_op_sqnorm(cmd, (const vp_tensor *[]){A.g, B.g}, 2, sq));
    const vp_tensor *sqn = c->no_sqnorm ? NULL : sq;
    vt_ok(vp_op_adamw(cmd, A.w, A.g, A.m, A.v, state, sqn, A.scale, &cfg));
    vt_ok(vp_op_adamw(cmd, B.w, B.g, B.m, B.v, state, sqn, NULL, &cfg));
    vt_ok(vp_cmd_end(cmd));

    bool clipped = false;
    for (int step = 1; step <= STEPS; step++) {
        /* New gradients (what the backward pass would leave) and state. */
        group *gs[2] = {&A, &B};
        for (int k = 0; k < 2; k++) {
            vt_rand(gs[k]->hg, (size_t)gs[k]->n, (uint64_t)(step * 10 + k));
            if (step == 3) /* a step with an exactly zero gradient */
                memset(gs[k]->hg, 0, (size_t)gs[k]->n * sizeof *gs[k]->hg);
            vt_ok(vp_tensor_upload(gs[k]->g, gs[k]->hg, vp_tensor_nbytes(gs[k]->g)));
        }
        float hs[4];
        vt_ok(vp_adamw_state(lr_at(step), step, &cfg, hs));
        ck_assert(hs[3] == 1.0f);
        /* every other step as after 4 accumulated runs: gradients scaled by 1/4 */
        double gsc = step % 2 ? 1.0 : 0.25;
        hs[3] = (float)gsc;
        vt_ok(vp_tensor_upload(state, hs, sizeof hs));
        vt_ok(vp_cmd_submit(cmd));

        double *ga = vt_f64(A.hg, (size_t)A.n), *gb = vt_f64(B.hg, (size_t)B.n);
        double sqn_ref = vp_ref_sqnorm((const double *[]){ga, gb}, (int64_t[]){A.n, B.n}, 2);
        for (int64_t i = 0; i < A.n; i++)
            ga[i] *= gsc;
        for (int64_t i = 0; i < B.n; i++)
            gb[i] *= gsc;
        double clip = vp_ref_clip_coef(sqn_ref * gsc * gsc, c->no_sqnorm ? 0.0 : c->max_norm);
        clipped = clipped || clip < 1.0;
        vp_ref_adamw(A.rw, ga, A.rm, A.rv, A.rscale, A.n, lr_at(step), step, &hp, clip);
        vp_ref_adamw(B.rw, gb, B.rm, B.rv, NULL, B.n, lr_at(step), step, &hp, clip);
        if (!c->no_sqnorm) {
            float got = download1(sq);
            ck_assert_msg(fabs(got - sqn_ref) <= 1e-6 * sqn_ref + 1e-30,
                          "%s, step %d: sqnorm %.9g, want %.9g", what, step, (double)got,
                          sqn_ref);
        }
        char wa[450];
        snprintf(wa, sizeof wa, "%s: group a", what);
        group_check(&A, wa, step);
        snprintf(wa, sizeof wa, "%s: group b", what);
        group_check(&B, wa, step);
        free(ga);
        free(gb);
    }
    /* The cases mean what they say: max_norm 0.5 clips, 1e3 does not. */
    ck_assert_msg(clipped == (c->max_norm > 0 && c->max_norm < 10 && !c->no_sqnorm),
                  "%s: clipping %s", what, clipped ? "happened" : "never happened");
    ck_assert_uint_eq(vp_cmd_get_stats(cmd).dispatches, c->no_sqnorm ? 2 : 3);
    vp_cmd_destroy(cmd);
    vp_tensor_destroy(state);
    vp_tensor_destroy(sq);
    group_free(&A);
    group_free(&B);
}

START_TEST(test_adamw)
{
    static const adamw_case cases[] = {
        {1030, 7, 0.0f, false, true},   /* no clipping, no sqnorm recorded */
        {1030, 7, 0.0f, false, false},  /* sqnorm given, max_norm 0: ignored */
        {257, 33, 0.5f, false, false},  /* global-norm clipping active */
        {257, 33, 1e3f, false, false},  /* max_norm above the norm: factor 1 */
        {1030, 1, 0.5f, true, false},   /* clipping and lr multipliers */
        {33, 4099, 0.0f, true, true},   /* lr multipliers alone */
    };
    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++)
        run_adamw((uint32_t)_i, &cases[i]);
}
END_TEST

START_TEST(test_adamw_state)
{
    vp_adamw_cfg cfg = vp_adamw_default_cfg();
    ck_assert(cfg.beta1 == 0.9f && cfg.beta2 == 0.999f && cfg.eps == 1e-8f &&
              cfg.weight_decay == 0.01f && cfg.max_norm == 0.0f);
    float s[4];
    vt_ok(vp_adamw_state(1e-3f, 1, &cfg, s));
    ck_assert(s[0] == 1e-3f && s[1] == (float)(1.0 - (double)0.9f) &&
              s[2] == (float)(1.0 - (double)0.999f) && s[3] == 1.0f);
    vt_ok(vp_adamw_state(2e-4f, 1000, &cfg, s));
    ck_assert(s[0] == 2e-4f && s[3] == 1.0f);
    ck_assert_msg(fabs(s[1] - (1.0 - pow(0.9f, 1000))) < 1e-7 &&
                  fabs(s[2] - (1.0 - pow(0.999f, 1000))) < 1e-7, "state at step 1000: %g %g",
                  (double)s[1], (double)s[2]);
    ck_assert_int_eq(vp_adamw_state(1e-3f, 0, &cfg, s), VP_ERR_INVALID);
    ck_assert_str_eq(vp_error_last(), "adamw_state: step 0: steps count from 1");
    ck_assert_int_eq(vp_adamw_state(-1e-3f, 1, &cfg, s), VP_ERR_INVALID);
    ck_assert_str_eq(vp_error_last(), "adamw_state: learning rate -0.001 must be >= 0 and finite");
    cfg.beta2 = 1.0f;
    ck_assert_int_eq(vp_adamw_state(1e-3f, 1, &cfg, s), VP_ERR_INVALID);
    ck_assert_str_eq(vp_error_last(), "adamw_state: betas (0.9, 1) must be in [0, 1)");
}
END_TEST

/* ---- errors ------------------------------------------------------------------- */

START_TEST(test_optim_errors)
{
    vp_device *dev = vt_device((uint32_t)_i);
    vp_tensor *w = vt_tensor(dev, "w", 1, (int64_t[]){8}, NULL);
    vp_tensor *g = vt_tensor(dev, "g", 1, (int64_t[]){8}, NULL);
    vp_tensor *g7 = vt_tensor(dev, "g7", 1, (int64_t[]){7}, NULL);
    vp_tensor *m = vt_tensor(dev, "m", 1, (int64_t[]){8}, NULL);
    vp_tensor *v = vt_tensor(dev, "v", 1, (int64_t[]){8}, NULL);
    vp_tensor *st = vt_tensor(dev, "st", 1, (int64_t[]){4}, NULL);
    vp_tensor *st3 = vt_tensor(dev, "st3", 1, (int64_t[]){3}, NULL);
    vp_tensor *sq = vt_tensor(dev, "sq", 1, (int64_t[]){1}, NULL);
    vp_tensor *sq2 = vt_tensor(dev, "sq2", 1, (int64_t[]){2}, NULL);
    vp_tensor *idx;
    vt_ok(vp_tensor_create(dev, VP_I32, 1, (int64_t[]){8}, "idx", &idx));
    /* a state that aliases the first four elements of w */
    vp_tensor w_head = *w;
    w_head.shape[0] = 4;
    snprintf(w_head.name, sizeof w_head.name, "w_head");
    vp_adamw_cfg cfg = vp_adamw_default_cfg(), bad = cfg;
    vp_cmd *cmd;
    vt_ok(vp_cmd_create(dev, &cmd));
    vt_ok(vp_cmd_begin(cmd));
    vt_expect_err(vp_op_sqnorm(cmd, (const vp_tensor *[]){g}, 0, sq), VP_ERR_INVALID,
               "sqnorm: no tensors given");
    vt_expect_err(vp_op_sqnorm(cmd, (const vp_tensor *[]){g}, 1, sq2), VP_ERR_SHAPE,
               "sqnorm: out sq2 (2) must have one element");
    vt_expect_err(vp_op_sqnorm(cmd, (const vp_tensor *[]){g, sq}, 2, sq), VP_ERR_INVALID,
               "sqnorm: output sq overlaps input sq");
    vt_expect_err(vp_op_sqnorm(cmd, (const vp_tensor *[]){g, idx}, 2, sq), VP_ERR_UNSUPPORTED,
               "sqnorm: tensor idx is i32; this op takes f32");
    vt_expect_err(vp_op_adamw(cmd, w, g7, m, v, st, NULL, NULL, &cfg), VP_ERR_SHAPE,
               "adamw: w (8) and g7 (7) must have the same shape");
    vt_expect_err(vp_op_adamw(cmd, w, g, m, v, st, NULL, g7, &cfg), VP_ERR_SHAPE,
               "adamw: w (8) and g7 (7) must have the same shape");
    vt_expect_err(vp_op_adamw(cmd, w, g, m, idx, st, NULL, NULL, &cfg), VP_ERR_UNSUPPORTED,
               "adamw: tensor idx is i32; this op takes f32");
    vt_expect_err(vp_op_adamw(cmd, w, g, w, v, st, NULL, NULL, &cfg), VP_ERR_INVALID,
               "adamw: w and w overlap");
    vt_expect_err(vp_op_adamw(cmd, w, g, m, v, st3, NULL, NULL, &cfg), VP_ERR_SHAPE,
               "adamw: state st3 (3) must have 4 elements");
    vt_expect_err(vp_op_adamw(cmd, w, g, m, v, &w_head, NULL, NULL, &cfg), VP_ERR_INVALID,
               "adamw: w_head overlaps w, which it updates");
    vt_expect_err(vp_op_adamw(cmd, w, g, m, v, st, sq2, NULL, &cfg), VP_ERR_SHAPE,
               "adamw: sqnorm sq2 (2) must have one element");
    bad.max_norm = 1.0f;
    vt_expect_err(vp_op_adamw(cmd, w, g, m, v, st, NULL, NULL, &bad), VP_ERR_INVALID,
               "adamw: max_norm 1 needs the squared gradient norm, and sqnorm is NULL");
    bad = cfg;
    bad.beta1 = 1.0f;
    vt_expect_err(vp_op_adamw(cmd, w, g, m, v, st, NULL, NULL, &bad), VP_ERR_INVALID,
               "adamw: betas (1, 0.999) must be in [0, 1)");
    bad = cfg;
    bad.eps = -1.0f;
    vt_expect_err(vp_op_adamw(cmd, w, g, m, v, st, NULL, NULL, &bad), VP_ERR_INVALID,
               "adamw: eps -1 must be >= 0 and finite");
    bad = cfg;
    bad.weight_decay = -0.5f;
    vt_expect_err(vp_op_adamw(cmd, w, g, m, v, st, NULL, NULL, &bad), VP_ERR_INVALID,
               "adamw: weight decay -0.5 must be >= 0 and finite");
    bad = cfg;
    bad.max_norm = -1.0f;
    vt_expect_err(vp_op_adamw(cmd, w, g, m, v, st, sq, NULL, &bad), VP_ERR_INVALID,
               "adamw: max_norm -1 must be >= 0 and finite (0: no clipping)");
    vt_expect_err(vp_op_adamw(cmd, w, g, m, v, st, sq, NULL, NULL), VP_ERR_INVALID,
               "adamw: no configuration given");
    ck_assert_uint_eq(vp_cmd_get_stats(cmd).dispatches, 0);
    vt_ok(vp_cmd_submit(cmd));
    vp_cmd_destroy(cmd);
    vp_tensor *ts[] = {w, g, g7, m, v, st, st3, sq, sq2, idx};
    for (size_t i = 0; i < sizeof ts / sizeof ts[0]; i++)
        vp_tensor_destroy(ts[i]);
}
END_TEST

int main(void)
{
    Suite *s = suite_create("optim");
    TCase *tc = vt_tcase("optim");
    tcase_add_test(tc, test_adamw_state);
    vt_add_per_device(tc, test_sqnorm, NULL);
    vt_add_per_device(tc, test_adamw, NULL);
    vt_add_per_device(tc, test_optim_errors, NULL);
    suite_add_tcase(s, tc);
    return vt_run(s);
}
