/*
 * Multi-scale deformable attention suite:
 * - the reference backward against central finite differences of the
 *   reference forward, at locations away from the pixel grid (where bilinear
 *   sampling is not differentiable), inside, across and beyond the edges;
 * - the reference at points exactly on the grid and the map's edges against
 *   values worked out by hand (PyTorch's conventions);
 * - the reference against PyTorch's own results (tests/data/msdeform);
 * - on every device, the Vulkan forward and backward against the reference
 *   (NMSE < 1e-7) over several level layouts, H*Dh not a power of two,
 *   vec4 and scalar channel paths, points outside the map and exactly on
 *   its grid and edges, accumulate on and off, with the atomic scatter
 *   (where the device has float atomics) and the gather fallback (on every
 *   device), and against PyTorch's results;
 * - the gather is bitwise deterministic; the error messages.
 */
#include "harness.h"

#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "io/safetensors.h"
#include "ref/msdeform.h"

#define TOL 1e-9

typedef struct md_case {
    const char *what;
    int64_t B, H, Dh, Q, P;
    int L;
    int64_t shapes[VP_MSDEFORM_MAX_LEVELS][2];
} md_case;

static const md_case cases[] = {
    {"single pixel", 1, 1, 1, 1, 1, 1, {{1, 1}}},
    {"H*Dh 15 (scalar loads)", 2, 3, 5, 11, 4, 3, {{7, 9}, {4, 5}, {2, 3}}},
    {"Dh 8 (vec4)", 1, 2, 8, 7, 2, 2, {{6, 6}, {3, 3}}},
    {"four levels, Dh 32", 2, 8, 32, 33, 4, 4, {{16, 12}, {8, 6}, {4, 3}, {1, 1}}},
    {"Dh 68: three gather chunks", 1, 1, 68, 5, 3, 2, {{5, 7}, {1, 9}}},
    {"Dh 33 scalar: three gather chunks", 1, 3, 33, 9, 2, 1, {{13, 1}}},
    {"many gather tiles", 1, 1, 4, 20, 4, 2, {{70, 70}, {3, 200}}},
    {"six levels", 1, 2, 4, 3, 1, 6, {{2, 2}, {3, 1}, {1, 3}, {5, 4}, {2, 7}, {1, 1}}},
};
#define N_CASES (sizeof cases / sizeof cases[0])

/* Host data of one problem. */
typedef struct md_data {
    md_case c;
    int64_t S, start[VP_MSDEFORM_MAX_LEVELS];
    size_t nv, nl, na, no;       /* element counts: value, loc, attn, out */
    float *value, *loc, *attn, *gout;
    vp_ref_msdeform_dims dims;
} md_data;

typedef enum { LOC_RANDOM, LOC_SMOOTH, LOC_GRID } loc_mode;

static uint64_t rng = 88172645463325252ull;
static double urand(void) /* [0, 1) */
{
    rng ^= rng << 13;
    rng ^= rng >> 7;
    rng ^= rng << 17;
    return (double)(rng >> 11) / (double)(1ull << 53);
}

/* LOC_RANDOM: uniform in [-0.2, 1.2) (about a quarter outside the map).
 * LOC_SMOOTH: cells from one outside the map to one past it, fractions in
 * [0.1, 0.9]: never within 0.1 pixel of a grid line, so finite differences
 * see a smooth function. LOC_GRID: multiples of 1/16 in [-0.25, 1.25]:
 * exact in float, and with these map sizes often exactly on grid lines,
 * pixel centres and the map's edges. */
static float loc_value(loc_mode m, int64_t size)
{
    switch (m) {
    case LOC_RANDOM:
        return (float)(urand() * 1.4 - 0.2);
    case LOC_SMOOTH: {
        double cellx = floor(urand() * (double)(size + 3)) - 2; /* -2 .. size */
        double pix = cellx + 0.1 + 0.8 * urand();
        return (float)((pix + 0.5) / (double)size);
    }
    case LOC_GRID:
        return (float)(floor(urand() * 25) - 4) / 16.0f;
    }
    return 0;
}

static void md_make(md_data *m, const md_case *c, loc_mode mode, uint64_t seed)
{
    memset(m, 0, sizeof *m);
    m->c = *c;
    rng = seed * 0x9e3779b97f4a7c15ull + 7;
    for (int l = 0; l < c->L; l++) {
        m->start[l] = m->S;
        m->S += c->shapes[l][0] * c->shapes[l][1];
    }
    m->nv = (size_t)(c->B * m->S * c->H * c->Dh);
    m->na = (size_t)(c->B * c->Q * c->H * c->L * c->P);
    m->nl = 2 * m->na;
    m->no = (size_t)(c->B * c->Q * c->H * c->Dh);
    m->value = malloc(m->nv * 4);
    m->loc = malloc(m->nl * 4);
    m->attn = malloc(m->na * 4);
    m->gout = malloc(m->no * 4);
    vt_rand(m->value, m->nv, seed * 3 + 1);
    vt_rand(m->attn, m->na, seed * 3 + 2);
    vt_rand(m->gout, m->no, seed * 3 + 3);
    for (size_t s = 0; s < m->na; s++) {
        int l = (int)(s / (size_t)c->P % (size_t)c->L);
        m->loc[2 * s] = loc_value(mode, c->shapes[l][1]);
        m->loc[2 * s + 1] = loc_value(mode, c->shapes[l][0]);
    }
    m->dims = (vp_ref_msdeform_dims){c->B, m->S, c->H, c->Dh, c->Q, c->L, c->P,
                                     &m->c.shapes[0][0], m->start};
}

static void md_free(md_data *m)
{
    free(m->value);
    free(m->loc);
    free(m->attn);
    free(m->gout);
}

static vp_msdeform_levels md_levels(const md_data *m)
{
    vp_msdeform_levels lv = {.n = m->c.L};
    for (int l = 0; l < m->c.L; l++) {
        lv.shape[l][0] = m->c.shapes[l][0];
        lv.shape[l][1] = m->c.shapes[l][1];
        lv.start[l] = m->start[l];
    }
    return lv;
}

/* Reference forward and backward of m, in new arrays. */
typedef struct md_ref {
    double *out, *gv, *gl, *ga;
} md_ref;

static md_ref md_reference(const md_data *m)
{
    md_ref r = {malloc(m->no * 8), malloc(m->nv * 8), malloc(m->nl * 8), malloc(m->na * 8)};
    double *v = vt_f64(m->value, m->nv), *l = vt_f64(m->loc, m->nl), *a = vt_f64(m->attn, m->na),
           *g = vt_f64(m->gout, m->no);
    vp_ref_msdeform(&m->dims, v, l, a, r.out);
    vp_ref_msdeform_backward(&m->dims, v, l, a, g, r.gv, r.gl, r.ga);
    free(v);
    free(l);
    free(a);
    free(g);
    return r;
}

static void md_ref_free(md_ref *r)
{
    free(r->out);
    free(r->gv);
    free(r->gl);
    free(r->ga);
}

/* ---- the reference against finite differences ------------------------- */

typedef struct fd_ctx {
    const md_data *m;
    double *v, *l, *a, *g, *out;
} fd_ctx;

static double fd_sum(fd_ctx *c)
{
    vp_ref_msdeform(&c->m->dims, c->v, c->l, c->a, c->out);
    double s = 0;
    for (size_t i = 0; i < c->m->no; i++)
        s += c->out[i] * c->g[i];
    return s;
}

static double f_value(const double *x, void *ctx) { return ((void)x, fd_sum(ctx)); }

START_TEST(test_ref_fd)
{
    static const int which[] = {1, 2, 7};
    for (size_t k = 0; k < sizeof which / sizeof which[0]; k++) {
        md_data m;
        md_make(&m, &cases[which[k]], LOC_SMOOTH, 100 + k);
        md_ref r = md_reference(&m);
        fd_ctx c = {&m, vt_f64(m.value, m.nv), vt_f64(m.loc, m.nl), vt_f64(m.attn, m.na),
                    vt_f64(m.gout, m.no), malloc(m.no * 8)};
        double *fd = malloc((m.nv > m.nl ? m.nv : m.nl) * 8);
        /* x aliases the array fd_sum reads, so perturbing x perturbs the input */
        vt_fd_grad(f_value, &c, c.v, m.nv, 1e-6, fd);
        vt_assert_rel_close(r.gv, fd, m.nv, 1e-6, "%s: grad_value vs finite differences",
                            m.c.what);
        vt_fd_grad(f_value, &c, c.l, m.nl, 1e-6, fd);
        vt_assert_rel_close(r.gl, fd, m.nl, 1e-6, "%s: grad_loc vs finite differences", m.c.what);
        vt_fd_grad(f_value, &c, c.a, m.na, 1e-6, fd);
        vt_assert_rel_close(r.ga, fd, m.na, 1e-6, "%s: grad_attn vs finite differences",
                            m.c.what);
        /* the samples did land outside the map and across its edges */
        size_t outside = 0;
        for (size_t i = 0; i < m.nl; i++)
            outside += m.loc[i] < 0 || m.loc[i] > 1;
        ck_assert_uint_gt(outside, 0);
        free(fd);
        free(c.v);
        free(c.l);
        free(c.a);
        free(c.g);
        free(c.out);
        md_ref_free(&r);
        md_free(&m);
    }
}
END_TEST

/* Exactly on the grid and the edges, worked out by hand: a 1 x 2 map
 * (H 1, W 2) holding v0, v1; one head, one channel, attention a. */
START_TEST(test_ref_edges)
{
    const int64_t shapes[2] = {1, 2}, start[1] = {0};
    vp_ref_msdeform_dims d = {1, 2, 1, 1, 1, 1, 1, shapes, start};
    const double v[2] = {3.0, 5.0}, a = 0.5, g = 1.0;
    struct {
        double x, y;          /* loc */
        double out, gx, gy;   /* expected out, grad_loc */
        double gv0, gv1;      /* expected grad_value */
    } pts[] = {
        /* (0, 0): pixel (-0.5, -0.5), only corner (0, 0) inside, weight 1/4;
         * d/dx: W a ((1-fy)(v0 - 0) + fy (0 - 0)) = 2 a v0 / 2 */
        {0.0, 0.0, a * 0.25 * 3.0, 2 * a * 0.5 * 3.0, 1 * a * 0.5 * 3.0, a * 0.25, 0},
        /* (1, 1): pixel (1.5, 0.5), corner (1, 0), weight 1/4 */
        {1.0, 1.0, a * 0.25 * 5.0, 2 * a * 0.5 * -5.0, 1 * a * 0.5 * -5.0, 0, a * 0.25},
        /* pixel (0, 0) exactly, a kink in x and y: floor picks the cell to
         * the right and below (PyTorch's convention): out = v0;
         * d/dx = W a (v1 - v0), d/dy = H a (0 - v0) (row 1 is outside) */
        {0.25, 0.5, a * 3.0, 2 * a * 2.0, 1 * a * -3.0, a, 0},
        /* pixel (1, 0) exactly: d/dx = W a (0 - v1): the right neighbour is
         * outside */
        {0.75, 0.5, a * 5.0, 2 * a * -5.0, 1 * a * -5.0, 0, a},
        /* pixel (-1, 0): on the left edge line, corner (0, 0) has weight 0,
         * but the cell (-1 .. 0) still gives d/dx = W a v0 */
        {-0.25, 0.5, 0.0, 2 * a * 3.0, 0.0, 0, 0},
        /* pixel (2, 0), beyond the right edge: nothing */
        {1.25, 0.5, 0.0, 0.0, 0.0, 0, 0},
        /* pixel (0.5, -1): on the line above the map: weight 0 but d/dy =
         * H a (v(0.5) - 0) */
        {0.5, -0.5, 0.0, 0.0, 1 * a * 4.0, 0, 0},
    };
    for (size_t i = 0; i < sizeof pts / sizeof pts[0]; i++) {
        double loc[2] = {pts[i].x, pts[i].y}, out, gv[2], gl[2], ga;
        vp_ref_msdeform(&d, v, loc, &a, &out);
        vp_ref_msdeform_backward(&d, v, loc, &a, &g, gv, gl, &ga);
        ck_assert_msg(fabs(out - pts[i].out) < 1e-12 && fabs(gl[0] - pts[i].gx) < 1e-12 &&
                      fabs(gl[1] - pts[i].gy) < 1e-12 && fabs(gv[0] - pts[i].gv0) < 1e-12 &&
                      fabs(gv[1] - pts[i].gv1) < 1e-12 && fabs(ga * a - out) < 1e-12,
                      "loc (%g, %g): out %g grad_loc (%g, %g) grad_value (%g, %g) grad_attn %g; "
                      "want %g (%g, %g) (%g, %g)", pts[i].x, pts[i].y, out, gl[0], gl[1], gv[0],
                      gv[1], ga, pts[i].out, pts[i].gx, pts[i].gy, pts[i].gv0, pts[i].gv1);
    }
}
END_TEST

/* ---- PyTorch's results -------------------------------------------------- */

typedef struct ext_case {
    md_data m;
    float *out, *gv, *gl, *ga; /* PyTorch's */
} ext_case;

static float *ext_read(vp_st *st, const char *name, size_t n)
{
    float *x = malloc(n * 4);
    vt_ok(vp_st_read_f32(st, name, x, n));
    return x;
}

static void ext_load(ext_case *e, const char *name)
{
    const char *src = getenv("VPEFT_SRCDIR");
    char path[1024];
    snprintf(path, sizeof path, "%s/tests/data/msdeform/%s.safetensors", src ? src : ".", name);
    vp_st *st;
    vt_ok(vp_st_open(path, &st));
    const vp_st_tensor *v, *sh, *loc;
    vt_ok(vp_st_lookup(st, "value", &v));
    vt_ok(vp_st_lookup(st, "shapes", &sh));
    vt_ok(vp_st_lookup(st, "loc", &loc));
    ck_assert_int_eq(v->ndim, 4);
    ck_assert_int_eq(sh->ndim, 2);
    ck_assert_int_eq(loc->ndim, 6);
    md_data *m = &e->m;
    memset(m, 0, sizeof *m);
    md_case *c = &m->c;
    c->what = name;
    c->B = v->shape[0];
    m->S = v->shape[1];
    c->H = v->shape[2];
    c->Dh = v->shape[3];
    c->Q = loc->shape[1];
    c->L = (int)loc->shape[3];
    c->P = loc->shape[4];
    ck_assert_int_le(c->L, VP_MSDEFORM_MAX_LEVELS);
    vt_ok(vp_st_check_shape(st, "shapes", 2, (int64_t[]){c->L, 2}));
    vt_ok(vp_st_read_i64(st, "shapes", &c->shapes[0][0], (size_t)(2 * c->L)));
    vt_ok(vp_st_read_i64(st, "level_start", m->start, (size_t)c->L));
    m->nv = (size_t)(c->B * m->S * c->H * c->Dh);
    m->na = (size_t)(c->B * c->Q * c->H * c->L * c->P);
    m->nl = 2 * m->na;
    m->no = (size_t)(c->B * c->Q * c->H * c->Dh);
    m->value = ext_read(st, "value", m->nv);
    m->loc = ext_read(st, "loc", m->nl);
    m->attn = ext_read(st, "attn", m->na);
    m->gout = ext_read(st, "grad_out", m->no);
    e->out = ext_read(st, "out", m->no);
    e->gv = ext_read(st, "grad_value", m->nv);
    e->gl = ext_read(st, "grad_loc", m->nl);
    e->ga = ext_read(st, "grad_attn", m->na);
    m->dims = (vp_ref_msdeform_dims){c->B, m->S, c->H, c->Dh, c->Q, c->L, c->P,
                                     &c->shapes[0][0], m->start};
    vp_st_close(st);
}

static void ext_free(ext_case *e)
{
    md_free(&e->m);
    free(e->out);
    free(e->gv);
    free(e->gl);
    free(e->ga);
}

/* PyTorch computed in float64 from float64 inputs; inputs and results were
 * then rounded to float32. Our reference starts from the rounded inputs, so
 * it differs from the rounded results by the rounding of both: about 2^-24
 * relative to each quantity's own magnitude, times the condition of the
 * function (grad_loc multiplies value differences by W_l). 1e-6 relative to
 * the largest element is about 16 float32 ulps of headroom over that. */
#define EXT_REF_TOL 1e-6
/* NMSE of float32 results against PyTorch's, on the device. */
#define EXT_DEV_TOL 1e-10

START_TEST(test_ref_pytorch)
{
    static const char *names[] = {"case-a", "case-b"};
    for (int k = 0; k < 2; k++) {
        ext_case e;
        ext_load(&e, names[k]);
        md_ref r = md_reference(&e.m);
        double *w = malloc(e.m.nv * 8);
#define CMP(got, want, n, what)                                                                 \
    do {                                                                                        \
        for (size_t i = 0; i < (n); i++)                                                        \
            w[i] = (want)[i];                                                                   \
        vt_assert_rel_close(got, w, n, EXT_REF_TOL, "%s: reference %s vs PyTorch", names[k],    \
                            what);                                                              \
    } while (0)
        CMP(r.out, e.out, e.m.no, "out");
        CMP(r.gv, e.gv, e.m.nv, "grad_value");
        CMP(r.gl, e.gl, e.m.nl, "grad_loc");
        CMP(r.ga, e.ga, e.m.na, "grad_attn");
#undef CMP
        free(w);
        md_ref_free(&r);
        ext_free(&e);
    }
}
END_TEST

/* ---- Vulkan against the reference ------------------------------------- */

typedef struct md_dev {
    vp_tensor *value, *loc, *attn, *gout, *out, *gv, *gl, *ga;
} md_dev;

static md_dev md_upload(vp_device *dev, const md_data *m)
{
    const md_case *c = &m->c;
    int64_t sv[4] = {c->B, m->S, c->H, c->Dh}, sl[4] = {c->B, c->Q, c->H, c->L * c->P * 2};
    int64_t sa[4] = {c->B, c->Q, c->H, c->L * c->P}, so[3] = {c->B, c->Q, c->H * c->Dh};
    md_dev t;
    t.value = vt_tensor(dev, "value", 4, sv, m->value);
    t.loc = vt_tensor(dev, "loc", 4, sl, m->loc);
    t.attn = vt_tensor(dev, "attn", 4, sa, m->attn);
    t.gout = vt_tensor(dev, "grad_out", 3, so, m->gout);
    t.out = vt_tensor(dev, "out", 3, so, NULL);
    t.gv = vt_tensor(dev, "grad_value", 4, sv, NULL);
    t.gl = vt_tensor(dev, "grad_loc", 4, sl, NULL);
    t.ga = vt_tensor(dev, "grad_attn", 4, sa, NULL);
    return t;
}

static void md_dev_free(md_dev *t)
{
    vp_tensor *all[] = {t->value, t->loc, t->attn, t->gout, t->out, t->gv, t->gl, t->ga};
    for (int i = 0; i < 8; i++)
        vp_tensor_destroy(all[i]);
}

static const char *scatter_str(vp_msdeform_scatter s)
{
    return s == VP_MSDEFORM_ATOMIC ? "atomic" : s == VP_MSDEFORM_GATHER ? "gather" : "auto";
}

/* acc bits: 1 value, 2 loc, 4 attn. Accumulated gradients start from
 * random values and must end at those plus the gradient. */
static void run_md(uint32_t d, const md_data *m, const md_ref *r, vp_msdeform_cfg cfg,
                   unsigned acc, double tol)
{
    vp_device *dev = vt_device(d);
    md_dev t = md_upload(dev, m);
    float *init[3] = {NULL, NULL, NULL};
    vp_tensor *gts[3] = {t.gv, t.gl, t.ga};
    size_t ns[3] = {m->nv, m->nl, m->na};
    for (int k = 0; k < 3; k++)
        if (acc & (1u << k)) {
            init[k] = malloc(ns[k] * 4);
            vt_rand(init[k], ns[k], 77 + (uint64_t)k);
            vt_ok(vp_tensor_upload(gts[k], init[k], ns[k] * 4));
        }
    vp_msdeform_levels lv = md_levels(m);
    vp_cmd *cmd;
    vt_ok(vp_cmd_create(dev, &cmd));
    vt_ok(vp_cmd_begin(cmd));
    vt_ok(vp_op_msdeform(cmd, t.value, &lv, t.loc, t.attn, t.out));
    vt_ok(vp_op_msdeform_backward_ex(cmd, t.value, &lv, t.loc, t.attn, t.gout, t.gv, acc & 1,
                                     t.gl, acc & 2, t.ga, acc & 4, &cfg));
    vt_ok(vp_cmd_submit(cmd));
    const char *dn = vt_device_info(d)->name;
    float *got = vt_download(t.out);
    vt_assert_close(got, r->out, m->no, tol, "%s: %s: forward", dn, m->c.what);
    free(got);
    const double *want[3] = {r->gv, r->gl, r->ga};
    static const char *names[3] = {"grad_value", "grad_loc", "grad_attn"};
    for (int k = 0; k < 3; k++) {
        got = vt_download(gts[k]);
        double *w = malloc(ns[k] * 8);
        for (size_t i = 0; i < ns[k]; i++)
            w[i] = want[k][i] + (init[k] ? init[k][i] : 0.0);
        vt_assert_close(got, w, ns[k], tol, "%s: %s: %s, %s scatter (tile %u), accumulate %s",
                        dn, m->c.what, names[k], scatter_str(cfg.scatter), cfg.gather_tile,
                        init[k] ? "true" : "false");
        free(w);
        free(got);
        free(init[k]);
    }
    vp_cmd_destroy(cmd);
    md_dev_free(&t);
}

static void run_cases(uint32_t d, vp_msdeform_cfg cfg)
{
    for (size_t i = 0; i < N_CASES; i++)
        for (int mode = LOC_RANDOM; mode <= LOC_GRID; mode++) {
            md_data m;
            md_make(&m, &cases[i], (loc_mode)mode, 1000 + 10 * i + (size_t)mode);
            md_ref r = md_reference(&m);
            run_md(d, &m, &r, cfg, 0, TOL);
            /* accumulate on: all three, and mixed */
            run_md(d, &m, &r, cfg, mode == LOC_GRID ? 5 : 7, TOL);
            md_ref_free(&r);
            md_free(&m);
        }
}

static const char *needs_atomics(const vp_device_info *d)
{
    return d->feat.float_atomic_add ? NULL : "no float atomic add (shaderBufferFloat32AtomicAdd)";
}

START_TEST(test_atomic) { run_cases((uint32_t)_i, (vp_msdeform_cfg){VP_MSDEFORM_ATOMIC, 0}); }
END_TEST

/* The gather with the device's tiles, and with the others: 64 positions
 * (GPUs), whole levels (CPUs; any tile beyond 2^30 is one), and 7 (tiles
 * that split rows unevenly). */
START_TEST(test_gather)
{
    static const uint32_t tiles[] = {0, 64, UINT32_MAX, 7};
    for (int k = 0; k < 4; k++)
        run_cases((uint32_t)_i, (vp_msdeform_cfg){VP_MSDEFORM_GATHER, tiles[k]});
}
END_TEST

/* The default choice, and PyTorch's cases on the device with every scatter
 * the device has. */
START_TEST(test_pytorch)
{
    uint32_t d = (uint32_t)_i;
    static const char *names[] = {"case-a", "case-b"};
    vp_msdeform_scatter scs[3] = {VP_MSDEFORM_AUTO, VP_MSDEFORM_GATHER, VP_MSDEFORM_ATOMIC};
    int nsc = vt_device_info(d)->feat.float_atomic_add ? 3 : 2;
    for (int k = 0; k < 2; k++) {
        ext_case e;
        ext_load(&e, names[k]);
        md_ref r;
        r.out = vt_f64(e.out, e.m.no);
        r.gv = vt_f64(e.gv, e.m.nv);
        r.gl = vt_f64(e.gl, e.m.nl);
        r.ga = vt_f64(e.ga, e.m.na);
        for (int s = 0; s < nsc; s++) {
            run_md(d, &e.m, &r, (vp_msdeform_cfg){scs[s], 0}, 0, EXT_DEV_TOL);
            run_md(d, &e.m, &r, (vp_msdeform_cfg){scs[s], 0}, 7, EXT_DEV_TOL);
        }
        md_ref_free(&r);
        ext_free(&e);
    }
}
END_TEST

/* The gather gives the same bits every time. */
START_TEST(test_gather_deterministic)
{
    vp_device *dev = vt_device((uint32_t)_i);
    md_data m;
    md_make(&m, &cases[3], LOC_RANDOM, 5);
    md_dev t = md_upload(dev, &m);
    vp_msdeform_levels lv = md_levels(&m);
    vp_msdeform_cfg cfg = {VP_MSDEFORM_GATHER, 5};
    vp_cmd *cmd;
    vt_ok(vp_cmd_create(dev, &cmd));
    vt_ok(vp_cmd_begin(cmd));
    vt_ok(vp_op_msdeform_backward_ex(cmd, t.value, &lv, t.loc, t.attn, t.gout, t.gv, false, t.gl,
                                     false, t.ga, false, &cfg));
    vt_ok(vp_cmd_submit(cmd));
    float *first = vt_download(t.gv);
    for (int k = 0; k < 3; k++) {
        vt_poison(t.gv);
        vt_ok(vp_cmd_submit(cmd));
        float *again = vt_download(t.gv);
        ck_assert_int_eq(memcmp(first, again, m.nv * 4), 0);
        free(again);
    }
    free(first);
    vp_cmd_destroy(cmd);
    md_dev_free(&t);
    md_free(&m);
}
END_TEST

/* ---- errors ------------------------------------------------------------- */

START_TEST(test_errors)
{
    vp_device *dev = vt_device((uint32_t)_i);
    md_data m;
    md_make(&m, &cases[1], LOC_RANDOM, 9); /* B 2, H 3, Dh 5, Q 11, P 4, levels 7x9 4x5 2x3 */
    md_dev t = md_upload(dev, &m);
    vp_tensor *v3 = vt_tensor(dev, "v3", 3, (int64_t[]){2, 89, 15}, NULL);
    vp_tensor *loc25 = vt_tensor(dev, "loc25", 4, (int64_t[]){2, 11, 3, 25}, NULL);
    vp_tensor *attn11 = vt_tensor(dev, "attn11", 4, (int64_t[]){2, 11, 3, 11}, NULL);
    vp_tensor *out14 = vt_tensor(dev, "out14", 3, (int64_t[]){2, 11, 14}, NULL);
    vp_tensor *gv_bad = vt_tensor(dev, "gv_bad", 4, (int64_t[]){2, 89, 3, 4}, NULL);
    vp_tensor *i32;
    vt_ok(vp_tensor_create(dev, VP_I32, 4, (int64_t[]){2, 89, 3, 5}, "i32", &i32));
    vp_msdeform_levels lv = md_levels(&m);
    vp_cmd *cmd;
    vt_ok(vp_cmd_create(dev, &cmd));
    vt_ok(vp_cmd_begin(cmd));

#define FWD_ERR(st, msg, value, levels, loc, attn, out)                                         \
    do {                                                                                        \
        ck_assert_int_eq(vp_op_msdeform(cmd, value, levels, loc, attn, out), st);               \
        ck_assert_str_eq(vp_error_last(), msg);                                                 \
    } while (0)
    vp_msdeform_levels bad = lv;
    bad.n = 0;
    FWD_ERR(VP_ERR_INVALID, "msdeform: 0 levels; 1 to 6 are supported", t.value, &bad, t.loc,
            t.attn, t.out);
    FWD_ERR(VP_ERR_INVALID, "msdeform: 0 levels; 1 to 6 are supported", t.value, NULL, t.loc,
            t.attn, t.out);
    bad.n = 7;
    FWD_ERR(VP_ERR_UNSUPPORTED, "msdeform: 7 levels; 1 to 6 are supported", t.value, &bad, t.loc,
            t.attn, t.out);
    FWD_ERR(VP_ERR_SHAPE, "msdeform: v3 (2, 89, 15) must be (B, S, H, Dh)", v3, &lv, t.loc,
            t.attn, t.out);
    FWD_ERR(VP_ERR_UNSUPPORTED, "msdeform: tensor i32 is i32; this op takes f32", i32, &lv,
            t.loc, t.attn, t.out);
    bad = lv;
    bad.shape[1][1] = 0;
    FWD_ERR(VP_ERR_SHAPE, "msdeform: level 1 has shape (4, 0); H and W must be at least 1",
            t.value, &bad, t.loc, t.attn, t.out);
    bad = lv;
    bad.start[2] = 84;
    FWD_ERR(VP_ERR_SHAPE, "msdeform: level 2 of shape (2, 3) at position 84 does not fit the 89 "
            "positions of value (2, 89, 3, 5)", t.value, &bad, t.loc, t.attn, t.out);
    bad = lv;
    bad.shape[2][0] = 3;
    FWD_ERR(VP_ERR_SHAPE, "msdeform: level 2 of shape (3, 3) at position 83 does not fit the 89 "
            "positions of value (2, 89, 3, 5)", t.value, &bad, t.loc, t.attn, t.out);
    FWD_ERR(VP_ERR_SHAPE, "msdeform: loc25 (2, 11, 3, 25) must be (B, Q, H, L*P*2) with B 2, H 3 "
            "and L 3 from value (2, 89, 3, 5) and the levels", t.value, &lv, loc25, t.attn,
            t.out);
    FWD_ERR(VP_ERR_SHAPE, "msdeform: attn11 (2, 11, 3, 11) must be (B, Q, H, L*P) = (2, 11, 3, "
            "12) to match loc (2, 11, 3, 24)", t.value, &lv, t.loc, attn11, t.out);
    FWD_ERR(VP_ERR_SHAPE, "msdeform: out14 (2, 11, 14) must be (B, Q, H*Dh) = (2, 11, 15)",
            t.value, &lv, t.loc, t.attn, out14);
#undef FWD_ERR

#define BWD_ERR(st, msg, gout, gv, gl, ga)                                                      \
    do {                                                                                        \
        ck_assert_int_eq(vp_op_msdeform_backward(cmd, t.value, &lv, t.loc, t.attn, gout, gv,    \
                                                 false, gl, false, ga, false), st);             \
        ck_assert_str_eq(vp_error_last(), msg);                                                 \
    } while (0)
    BWD_ERR(VP_ERR_SHAPE, "msdeform_backward: out14 (2, 11, 14) must be (B, Q, H*Dh) = (2, 11, "
            "15)", out14, t.gv, t.gl, t.ga);
    BWD_ERR(VP_ERR_SHAPE, "msdeform_backward: gv_bad (2, 89, 3, 4) and value (2, 89, 3, 5) must "
            "have the same shape", t.gout, gv_bad, t.gl, t.ga);
    BWD_ERR(VP_ERR_SHAPE, "msdeform_backward: attn11 (2, 11, 3, 11) and attn (2, 11, 3, 12) must "
            "have the same shape", t.gout, t.gv, t.gl, attn11);
    BWD_ERR(VP_ERR_INVALID, "msdeform_backward: output loc overlaps input loc", t.gout, t.gv, t.loc,
            t.ga);
    BWD_ERR(VP_ERR_INVALID, "msdeform_backward: output value overlaps input value", t.gout, t.value,
            t.gl, t.ga);
    BWD_ERR(VP_ERR_INVALID, "msdeform_backward: output attn overlaps input attn", t.gout, t.gv, t.gl,
            t.attn);
#undef BWD_ERR
    vp_msdeform_cfg cfg = {(vp_msdeform_scatter)9, 0};
    ck_assert_int_eq(vp_op_msdeform_backward_ex(cmd, t.value, &lv, t.loc, t.attn, t.gout, t.gv,
                                                false, t.gl, false, t.ga, false, &cfg),
                     VP_ERR_INVALID);
    ck_assert_str_eq(vp_error_last(), "msdeform_backward: unknown scatter 9");
    if (!vt_device_info((uint32_t)_i)->feat.float_atomic_add) {
        cfg.scatter = VP_MSDEFORM_ATOMIC;
        ck_assert_int_eq(vp_op_msdeform_backward_ex(cmd, t.value, &lv, t.loc, t.attn, t.gout,
                                                    t.gv, false, t.gl, false, t.ga, false, &cfg),
                         VP_ERR_UNSUPPORTED);
        char want[512];
        snprintf(want, sizeof want, "msdeform_backward: %s has no float atomic add "
                 "(shaderBufferFloat32AtomicAdd); use the gather scatter",
                 vt_device_info((uint32_t)_i)->name);
        ck_assert_str_eq(vp_error_last(), want);
    }
    ck_assert_uint_eq(vp_cmd_get_stats(cmd).dispatches, 0);
    vt_ok(vp_cmd_submit(cmd));
    vp_cmd_destroy(cmd);
    vp_tensor *extra[] = {v3, loc25, attn11, out14, gv_bad, i32};
    for (int i = 0; i < 6; i++)
        vp_tensor_destroy(extra[i]);
    md_dev_free(&t);
    md_free(&m);
}
END_TEST

int main(void)
{
    Suite *s = suite_create("msdeform");
    TCase *ref = vt_tcase("reference");
    tcase_add_test(ref, test_ref_fd);
    tcase_add_test(ref, test_ref_edges);
    tcase_add_test(ref, test_ref_pytorch);
    suite_add_tcase(s, ref);
    TCase *tc = vt_tcase("device");
    vt_add_per_device(tc, test_atomic, needs_atomics);
    vt_add_per_device(tc, test_gather, NULL);
    vt_add_per_device(tc, test_pytorch, NULL);
    vt_add_per_device(tc, test_gather_deterministic, NULL);
    vt_add_per_device(tc, test_errors, NULL);
    suite_add_tcase(s, tc);
    return vt_run(s);
}
