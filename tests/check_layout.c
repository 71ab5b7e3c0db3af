/*
 * Layout suite: permute, slice, concat, the row gather and the row map, forward and
 * backward, on every device against the double references in ref/layout.h.
 * Ops that only move values must match exactly (accumulate: the f32 sum of
 * the old value and the gradient); the gather's backward sums, so NMSE
 * < 1e-7 there. The references' backward functions are checked against
 * finite differences of their forward functions.
 */
#include "layout_util.h"

#include "graph/graph.h"
#include "ref/layout.h"

#define TOL 1e-7

static int64_t nelem(int nd, const int64_t *s)
{
    int64_t n = 1;
    for (int i = 0; i < nd; i++)
        n *= s[i];
    return n;
}

/* ---- permute ----------------------------------------------------------- */

typedef struct perm_case {
    int nd;
    int64_t shape[4];
    int perm[4];
} perm_case;

/* The comments say what the canonical form (size-1 dimensions dropped,
 * adjacent ones merged) is: rows (the innermost dimension stays: COPY
 * only), or a transpose, which the TILES kernel takes in any size and the
 * BLOCKS kernel where the transposed extents and strides are multiples of
 * 4 ("blocks"). Every case runs with every kernel that takes it. */
static const perm_case perm_cases[] = {
    {1, {7}, {0}},                      /* identity: rows */
    {2, {1, 1}, {1, 0}},                /* all ones: rows */
    {2, {33, 257}, {1, 0}},             /* transpose */
    {2, {7, 33}, {1, 0}},               /* transpose, shorter than a tile */
    {2, {16, 12}, {1, 0}},              /* transpose, blocks */
    {3, {3, 33, 40}, {0, 2, 1}},        /* one batch dimension */
    {3, {2, 5, 7}, {2, 0, 1}},
    {3, {3, 8, 12}, {0, 2, 1}},         /* blocks */
    {4, {2, 3, 17, 19}, {0, 2, 3, 1}},  /* NCHW -> NHWC, 3 channels */
    {4, {2, 20, 17, 19}, {0, 2, 3, 1}}, /* NCHW -> NHWC: (2, 20, 323) -> (2, 323, 20) */
    {4, {2, 12, 16, 20}, {0, 2, 3, 1}}, /* NCHW -> NHWC, blocks */
    {4, {2, 17, 19, 20}, {0, 3, 1, 2}}, /* NHWC -> NCHW */
    {4, {34, 3, 2, 8}, {1, 2, 0, 3}},   /* qkv split into heads: rows of vec4s */
    {4, {34, 3, 2, 6}, {1, 2, 0, 3}},   /* rows of 6: scalars */
    {4, {3, 1, 33, 17}, {3, 2, 1, 0}},  /* a size-1 dimension */
    {4, {2, 3, 17, 33}, {1, 0, 3, 2}},  /* x contiguous along y's dim 2, two batch dims */
    {4, {2, 4, 8, 12}, {1, 0, 3, 2}},   /* the same, blocks */
    {4, {2, 3, 17, 33}, {3, 1, 0, 2}},  /* x contiguous along y's dim 0 */
    {4, {4, 3, 8, 12}, {3, 1, 0, 2}},   /* the same, blocks */
    {4, {2, 3, 4, 5}, {1, 0, 3, 2}},    /* four dimensions, no merges */
};

static void case_str(const perm_case *c, char *buf, size_t n)
{
    int o = snprintf(buf, n, "x (");
    for (int i = 0; i < c->nd; i++)
        o += snprintf(buf + o, n - (size_t)o, "%s%lld", i ? ", " : "", (long long)c->shape[i]);
    o += snprintf(buf + o, n - (size_t)o, ") perm (");
    for (int i = 0; i < c->nd; i++)
        o += snprintf(buf + o, n - (size_t)o, "%s%d", i ? ", " : "", c->perm[i]);
    snprintf(buf + o, n - (size_t)o, ")");
}

static void fwd_permute(const double *x, double *y, void *ctx)
{
    const perm_case *c = ctx;
    vp_ref_permute(x, c->nd, c->shape, c->perm, y);
}

/* One case with one kernel; false when the kernel does not take it. */
static bool run_permute(uint32_t d, const perm_case *c, size_t ci, vp_permute_kernel kernel)
{
    static const char *const kn[] = {"auto", "copy", "tiles", "blocks"};
    vp_device *dev = vt_device(d);
    const char *dn = vt_device_info(d)->name;
    char what[160];
    case_str(c, what, sizeof what);
    strcat(what, ", kernel ");
    strcat(what, kn[kernel]);
    int64_t ys[4];
    for (int i = 0; i < c->nd; i++)
        ys[i] = c->shape[c->perm[i]];
    size_t n = (size_t)nelem(c->nd, c->shape);
    float *hx, *hdy, *hinit;
    vp_tensor *x = lt_rand(dev, "x", c->nd, c->shape, ci + 1, &hx);
    vp_tensor *dy = lt_rand(dev, "dy", c->nd, ys, ci + 100, &hdy);
    vp_tensor *y = vt_tensor(dev, "y", c->nd, ys, NULL);
    vp_tensor *dx = vt_tensor(dev, "dx", c->nd, c->shape, NULL);
    vp_tensor *dxa = lt_rand(dev, "dxa", c->nd, c->shape, ci + 200, &hinit);
    vp_cmd *cmd = lt_begin(dev);
    vp_status st = vp_op_permute_ex(cmd, x, c->perm, y, kernel);
    bool ran = st == VP_OK;
    if (ran) {
        vt_ok(vp_op_permute_backward_ex(cmd, dy, c->perm, dx, false, kernel));
        vt_ok(vp_op_permute_backward_ex(cmd, dy, c->perm, dxa, true, kernel));
    } else {
        /* only a forced kernel may decline, and only with this error */
        ck_assert_msg(kernel != VP_PERMUTE_AUTO && kernel != VP_PERMUTE_COPY &&
                      st == VP_ERR_UNSUPPORTED, "%s: %s -> %d: %s", dn, what, (int)st,
                      vp_error_last());
        ck_assert_uint_eq(vp_cmd_get_stats(cmd).dispatches, 0);
    }
    lt_submit(cmd);

    double *dxd = vt_f64(hx, n), *dyd = vt_f64(hdy, n);
    double *want = malloc(n * sizeof *want), *wdx = malloc(n * sizeof *wdx);
    vp_ref_permute(dxd, c->nd, c->shape, c->perm, want);
    vp_ref_permute_backward(dyd, c->nd, c->shape, c->perm, wdx);
    if (ran) {
        float *got = vt_download(y), *gdx = vt_download(dx), *gdxa = vt_download(dxa);
        lt_assert_exact(got, want, n, "%s: permute %s", dn, what);
        lt_assert_exact(gdx, wdx, n, "%s: permute_backward %s", dn, what);
        lt_acc_expect(wdx, hinit, n);
        lt_assert_exact(gdxa, wdx, n, "%s: permute_backward %s accumulate", dn, what);
        free(got);
        free(gdx);
        free(gdxa);
    }
    if (kernel == VP_PERMUTE_AUTO && n <= 2000) {
        vp_ref_permute_backward(dyd, c->nd, c->shape, c->perm, wdx);
        lt_check_fd(fwd_permute, (void *)c, dxd, n, n, dyd, wdx, what);
    }
    free(dxd);
    free(dyd);
    free(want);
    free(wdx);
    free(hx);
    free(hdy);
    free(hinit);
    vp_tensor_destroy(x);
    vp_tensor_destroy(y);
    vp_tensor_destroy(dy);
    vp_tensor_destroy(dx);
    vp_tensor_destroy(dxa);
    return ran;
}

START_TEST(test_permute)
{
    size_t nc = sizeof perm_cases / sizeof perm_cases[0];
    int ran[4] = {0};
    for (size_t ci = 0; ci < nc; ci++)
        for (int k = VP_PERMUTE_AUTO; k <= VP_PERMUTE_BLOCKS; k++)
            ran[k] += run_permute((uint32_t)_i, &perm_cases[ci], ci, (vp_permute_kernel)k);
    /* every kernel ran on this device: all but the 4 rows cases take tiles,
     * the 5 marked cases blocks */
    ck_assert_int_eq(ran[VP_PERMUTE_AUTO], (int)nc);
    ck_assert_int_eq(ran[VP_PERMUTE_COPY], (int)nc);
    ck_assert_int_eq(ran[VP_PERMUTE_TILES], (int)nc - 4);
    ck_assert_int_eq(ran[VP_PERMUTE_BLOCKS], 5);
}
END_TEST

/* ---- slice ------------------------------------------------------------- */

typedef struct slice_case {
    int nd;
    int64_t shape[4];
    int axis;
    int64_t start, len;
} slice_case;

static const slice_case slice_cases[] = {
    {3, {2, 7, 5}, 1, 2, 3},   {3, {2, 7, 5}, 0, 1, 1},         {3, {2, 7, 5}, -1, 0, 1},
    {3, {2, 7, 5}, 2, 4, 1},   {4, {2, 3, 33, 4}, 2, 17, 16},   {1, {257}, 0, 100, 157},
    {2, {33, 7}, 0, 0, 33},    {4, {3, 1, 257, 2}, -2, 1, 255},
};

/* (outer, xlen, inner) of a slice case, with the axis normalised. */
static void slice_dims(const slice_case *c, int64_t *outer, int64_t *xlen, int64_t *inner)
{
    int ax = c->axis < 0 ? c->axis + c->nd : c->axis;
    *outer = *inner = 1;
    for (int i = 0; i < ax; i++)
        *outer *= c->shape[i];
    for (int i = ax + 1; i < c->nd; i++)
        *inner *= c->shape[i];
    *xlen = c->shape[ax];
}

static void fwd_slice(const double *x, double *y, void *ctx)
{
    const slice_case *c = ctx;
    int64_t o, l, in;
    slice_dims(c, &o, &l, &in);
    vp_ref_slice(x, o, l, in, c->start, c->len, y);
}

START_TEST(test_slice)
{
    vp_device *dev = vt_device((uint32_t)_i);
    const char *dn = vt_device_info((uint32_t)_i)->name;
    for (size_t ci = 0; ci < sizeof slice_cases / sizeof slice_cases[0]; ci++) {
        const slice_case *c = &slice_cases[ci];
        int64_t outer, xlen, inner, ys[4];
        slice_dims(c, &outer, &xlen, &inner);
        int ax = c->axis < 0 ? c->axis + c->nd : c->axis;
        memcpy(ys, c->shape, sizeof ys);
        ys[ax] = c->len;
        size_t nx = (size_t)nelem(c->nd, c->shape), ny = (size_t)nelem(c->nd, ys);
        char what[96];
        snprintf(what, sizeof what, "case %zu (axis %d, start %lld, len %lld)", ci, c->axis,
                 (long long)c->start, (long long)c->len);
        float *hx, *hdy, *hinit;
        vp_tensor *x = lt_rand(dev, "x", c->nd, c->shape, ci + 1, &hx);
        vp_tensor *dy = lt_rand(dev, "dy", c->nd, ys, ci + 50, &hdy);
        vp_tensor *y = vt_tensor(dev, "y", c->nd, ys, NULL);
        vp_tensor *dx = vt_tensor(dev, "dx", c->nd, c->shape, NULL);
        vp_tensor *dxa = lt_rand(dev, "dxa", c->nd, c->shape, ci + 70, &hinit);
        vp_cmd *cmd = lt_begin(dev);
        vt_ok(vp_op_slice(cmd, x, c->axis, c->start, y));
        vt_ok(vp_op_slice_backward(cmd, dy, c->axis, c->start, dx, false));
        vt_ok(vp_op_slice_backward(cmd, dy, c->axis, c->start, dxa, true));
        lt_submit(cmd);

        double *xd = vt_f64(hx, nx), *dyd = vt_f64(hdy, ny);
        double *want = malloc(ny * sizeof *want), *wdx = malloc(nx * sizeof *wdx);
        vp_ref_slice(xd, outer, xlen, inner, c->start, c->len, want);
        vp_ref_slice_backward(dyd, outer, xlen, inner, c->start, c->len, wdx);
        float *got = vt_download(y), *gdx = vt_download(dx), *gdxa = vt_download(dxa);
        lt_assert_exact(got, want, ny, "%s: slice %s", dn, what);
        lt_assert_exact(gdx, wdx, nx, "%s: slice_backward %s", dn, what);
        /* accumulate adds into the region and leaves the rest alone: the
         * reference's zeros outside add nothing */
        lt_acc_expect(wdx, hinit, nx);
        lt_assert_exact(gdxa, wdx, nx, "%s: slice_backward %s accumulate", dn, what);
        vp_ref_slice_backward(dyd, outer, xlen, inner, c->start, c->len, wdx);
        lt_check_fd(fwd_slice, (void *)c, xd, nx, ny, dyd, wdx, what);
        free(got);
        free(gdx);
        free(gdxa);
        free(xd);
        free(dyd);
        free(want);
        free(wdx);
        free(hx);
        free(hdy);
        free(hinit);
        vp_tensor_destroy(x);
        vp_tensor_destroy(y);
        vp_tensor_destroy(dy);
        vp_tensor_destroy(dx);
        vp_tensor_destroy(dxa);
    }
}
END_TEST

/* ---- concat ------------------------------------------------------------ */

typedef struct concat_case {
    int nd;
    int64_t shape[4]; /* the extent along axis is ignored */
    int axis;
    uint32_t n;
    int64_t lens[9];
} concat_case;

static const concat_case concat_cases[] = {
    {3, {2, 0, 8}, 1, 2, {1, 16}},                           /* class token + patches */
    {2, {0, 5}, 0, 3, {3, 1, 7}},
    {3, {3, 4, 0}, -1, 9, {1, 2, 3, 4, 5, 6, 7, 8, 9}},      /* two dispatches: 7 + 2 */
    {4, {2, 3, 5, 0}, 3, 2, {33, 1}},
    {1, {0}, 0, 8, {1, 1, 1, 1, 1, 1, 1, 257}},               /* 7 + 1 */
    {4, {1, 0, 7, 3}, 1, 1, {5}},                            /* one input: a copy */
    {3, {2, 0, 4}, 1, 8, {1, 2, 1, 3, 1, 1, 2, 5}},          /* vec4s, 7 + 1 */
};

typedef struct concat_fd {
    const concat_case *c;
    int64_t outer, inner;
} concat_fd;

static void fwd_concat(const double *x, double *y, void *ctx)
{
    const concat_fd *k = ctx;
    const double *xs[9];
    for (uint32_t j = 0, off = 0; j < k->c->n; j++) {
        xs[j] = x + off;
        off += (uint32_t)(k->outer * k->c->lens[j] * k->inner);
    }
    vp_ref_concat(xs, k->c->lens, k->c->n, k->outer, k->inner, y);
}

static void run_concat(uint32_t d, const concat_case *c, size_t ci, bool skip_odd)
{
    vp_device *dev = vt_device(d);
    const char *dn = vt_device_info(d)->name;
    int ax = c->axis < 0 ? c->axis + c->nd : c->axis;
    int64_t outer = 1, inner = 1, total = 0, ys[4];
    for (int i = 0; i < ax; i++)
        outer *= c->shape[i];
    for (int i = ax + 1; i < c->nd; i++)
        inner *= c->shape[i];
    for (uint32_t k = 0; k < c->n; k++)
        total += c->lens[k];
    memcpy(ys, c->shape, sizeof ys);
    ys[ax] = total;
    size_t ny = (size_t)nelem(c->nd, ys), off[10] = {0};
    vp_tensor *xs[9], *dxs[9], *dxa[9];
    float *hx = malloc(ny * sizeof *hx), *hinit = malloc(ny * sizeof *hinit), *hdy;
    vt_rand(hx, ny, ci + 5);
    vt_rand(hinit, ny, ci + 6);
    for (uint32_t k = 0; k < c->n; k++) {
        int64_t s[4];
        char nm[16];
        memcpy(s, c->shape, sizeof s);
        s[ax] = c->lens[k];
        off[k + 1] = off[k] + (size_t)nelem(c->nd, s);
        snprintf(nm, sizeof nm, "x%u", k);
        xs[k] = vt_tensor(dev, nm, c->nd, s, hx + off[k]);
        bool skip = skip_odd && k % 2;
        dxs[k] = skip ? NULL : vt_tensor(dev, "dx", c->nd, s, NULL);
        dxa[k] = skip ? NULL : vt_tensor(dev, "dxa", c->nd, s, hinit + off[k]);
    }
    vp_tensor *y = vt_tensor(dev, "y", c->nd, ys, NULL);
    vp_tensor *dy = lt_rand(dev, "dy", c->nd, ys, ci + 7, &hdy);
    vp_cmd *cmd = lt_begin(dev);
    vt_ok(vp_op_concat(cmd, (const vp_tensor *const *)xs, c->n, c->axis, y));
    vt_ok(vp_op_concat_backward(cmd, dy, c->axis, c->lens, dxs, c->n, false));
    vt_ok(vp_op_concat_backward(cmd, dy, c->axis, c->lens, dxa, c->n, true));
    lt_submit(cmd);

    const double *xsd[9];
    double *wxs[9];
    double *xd = vt_f64(hx, ny), *dyd = vt_f64(hdy, ny), *want = malloc(ny * sizeof *want);
    double *wdx = malloc(ny * sizeof *wdx);
    for (uint32_t k = 0; k < c->n; k++) {
        xsd[k] = xd + off[k];
        wxs[k] = wdx + off[k];
    }
    vp_ref_concat(xsd, c->lens, c->n, outer, inner, want);
    vp_ref_concat_backward(dyd, c->lens, c->n, outer, inner, wxs);
    float *got = vt_download(y);
    lt_assert_exact(got, want, ny, "%s: concat case %zu", dn, ci);
    free(got);
    for (uint32_t k = 0; k < c->n; k++) {
        size_t m = off[k + 1] - off[k];
        if (dxs[k]) {
            float *g = vt_download(dxs[k]), *ga = vt_download(dxa[k]);
            lt_assert_exact(g, wdx + off[k], m, "%s: concat_backward case %zu input %u", dn, ci,
                            k);
            lt_acc_expect(wdx + off[k], hinit + off[k], m);
            lt_assert_exact(ga, wdx + off[k], m, "%s: concat_backward case %zu input %u "
                            "accumulate", dn, ci, k);
            free(g);
            free(ga);
        }
        vp_tensor_destroy(xs[k]);
        vp_tensor_destroy(dxs[k]);
        vp_tensor_destroy(dxa[k]);
    }
    if (!skip_odd && ny <= 2000) {
        vp_ref_concat_backward(dyd, c->lens, c->n, outer, inner, wxs);
        concat_fd k = {c, outer, inner};
        lt_check_fd(fwd_concat, &k, xd, ny, ny, dyd, wdx, "concat");
    }
    vp_tensor_destroy(y);
    vp_tensor_destroy(dy);
    free(hx);
    free(hinit);
    free(hdy);
    free(xd);
    free(dyd);
    free(want);
    free(wdx);
}

START_TEST(test_concat)
{
    for (size_t ci = 0; ci < sizeof concat_cases / sizeof concat_cases[0]; ci++) {
        run_concat((uint32_t)_i, &concat_cases[ci], ci, false);
        run_concat((uint32_t)_i, &concat_cases[ci], ci, true); /* NULL gradients skipped */
    }
}
END_TEST

/* ---- gather rows ------------------------------------------------------- */

typedef struct gather_case {
    int64_t R, C, N;
} gather_case;

/* N over 256 takes several chunks of the deterministic kernel; C over 64
 * several column groups. */
static const gather_case gather_cases[] = {
    {1, 1, 1}, {10, 33, 25}, {197, 7, 197}, {5, 65, 300}, {257, 64, 33}, {3, 130, 1000},
};

/* Indices in [0, R), plus out-of-range ones every 7th. */
static void make_idx(int32_t *idx, int64_t N, int64_t R, uint64_t seed)
{
    float *r = malloc((size_t)N * sizeof *r);
    vt_rand(r, (size_t)N, seed);
    static const int32_t bad[] = {-1, -1000, INT32_MIN, 0, INT32_MAX};
    for (int64_t n = 0; n < N; n++) {
        idx[n] = (int32_t)((r[n] + 1.0f) * 0.5f * (float)R);
        if (idx[n] >= R)
            idx[n] = (int32_t)R - 1;
        if (n % 7 == 3)
            idx[n] = bad[(n / 7) % 5] == 0 ? (int32_t)R : bad[(n / 7) % 5];
    }
    free(r);
}

typedef struct gather_fd {
    const int32_t *idx;
    int64_t R, C, N;
} gather_fd;

static void fwd_gather(const double *x, double *y, void *ctx)
{
    const gather_fd *k = ctx;
    vp_ref_gather_rows(x, k->R, k->C, k->idx, k->N, y);
}

static void run_gather(uint32_t d, const gather_case *c, size_t ci, vp_scatter_mode mode)
{
    vp_device *dev = vt_device(d);
    const char *dn = vt_device_info(d)->name;
    static const char *const mode_name[] = {"auto", "deterministic", "atomic"};
    size_t nt = (size_t)(c->R * c->C), ny = (size_t)(c->N * c->C);
    int32_t *idx = malloc((size_t)c->N * sizeof *idx);
    make_idx(idx, c->N, c->R, ci + 11);
    float *ht, *hdy, *hinit;
    vp_tensor *table = lt_rand(dev, "table", 2, (int64_t[]){c->R, c->C}, ci + 1, &ht);
    vp_tensor *ti = lt_i32(dev, "idx", 1, (int64_t[]){c->N}, idx);
    vp_tensor *y = vt_tensor(dev, "y", 2, (int64_t[]){c->N, c->C}, NULL);
    vp_tensor *dy = lt_rand(dev, "dy", 2, (int64_t[]){c->N, c->C}, ci + 2, &hdy);
    vp_tensor *dt = vt_tensor(dev, "dtable", 2, (int64_t[]){c->R, c->C}, NULL);
    vp_tensor *dta = lt_rand(dev, "dtable_acc", 2, (int64_t[]){c->R, c->C}, ci + 3, &hinit);
    vp_cmd *cmd = lt_begin(dev);
    vt_ok(vp_op_gather_rows(cmd, table, ti, y));
    vt_ok(vp_op_gather_rows_backward_ex(cmd, dy, ti, dt, false, mode));
    vt_ok(vp_op_gather_rows_backward_ex(cmd, dy, ti, dta, true, mode));
    lt_submit(cmd);

    double *td = vt_f64(ht, nt), *dyd = vt_f64(hdy, ny);
    double *want = malloc(ny * sizeof *want), *wdt = malloc(nt * sizeof *wdt);
    vp_ref_gather_rows(td, c->R, c->C, idx, c->N, want);
    vp_ref_gather_rows_backward(dyd, idx, c->N, c->R, c->C, wdt);
    float *got = vt_download(y), *gdt = vt_download(dt), *gdta = vt_download(dta);
    lt_assert_exact(got, want, ny, "%s: gather_rows R %lld C %lld N %lld", dn, (long long)c->R,
                    (long long)c->C, (long long)c->N);
    vt_assert_close(gdt, wdt, nt, TOL, "%s: gather_rows_backward (%s) R %lld C %lld N %lld", dn,
                    mode_name[mode], (long long)c->R, (long long)c->C, (long long)c->N);
    for (size_t i = 0; i < nt; i++)
        wdt[i] += hinit[i];
    vt_assert_close(gdta, wdt, nt, TOL, "%s: gather_rows_backward (%s) accumulate R %lld C %lld "
                    "N %lld", dn, mode_name[mode], (long long)c->R, (long long)c->C,
                    (long long)c->N);
    if (nt <= 2000 && mode == VP_SCATTER_DETERMINISTIC) {
        vp_ref_gather_rows_backward(dyd, idx, c->N, c->R, c->C, wdt);
        gather_fd k = {idx, c->R, c->C, c->N};
        lt_check_fd(fwd_gather, &k, td, nt, ny, dyd, wdt, "gather_rows");
    }
    free(got);
    free(gdt);
    free(gdta);
    free(td);
    free(dyd);
    free(want);
    free(wdt);
    free(ht);
    free(hdy);
    free(hinit);
    free(idx);
    vp_tensor_destroy(table);
    vp_tensor_destroy(ti);
    vp_tensor_destroy(y);
    vp_tensor_destroy(dy);
    vp_tensor_destroy(dt);
    vp_tensor_destroy(dta);
}

START_TEST(test_gather_rows)
{
    for (size_t ci = 0; ci < sizeof gather_cases / sizeof gather_cases[0]; ci++) {
        run_gather((uint32_t)_i, &gather_cases[ci], ci, VP_SCATTER_DETERMINISTIC);
        run_gather((uint32_t)_i, &gather_cases[ci], ci, VP_SCATTER_AUTO);
    }
}
END_TEST

static const char *needs_atomics(const vp_device_info *d)
{
    return d->feat.float_atomic_add ? NULL : "no shaderBufferFloat32AtomicAdd";
}

START_TEST(test_gather_rows_atomic)
{
    for (size_t ci = 0; ci < sizeof gather_cases / sizeof gather_cases[0]; ci++)
        run_gather((uint32_t)_i, &gather_cases[ci], ci, VP_SCATTER_ATOMIC);
}
END_TEST

/* Out-of-range indices read the nearest row, and their gradient goes
 * there: written out by hand on a 3-row table. */
START_TEST(test_gather_rows_clamp)
{
    vp_device *dev = vt_device((uint32_t)_i);
    const float table[3 * 2] = {10, 11, 20, 21, 30, 31};
    const int32_t idx[6] = {-1, 0, 3, INT32_MIN, INT32_MAX, 2};
    const float dy[6 * 2] = {1, 2, 4, 8, 16, 32, 64, 128, 256, 512, 1024, 2048};
    /* rows 0, 0, 2, 0, 2, 2 */
    const double want_y[12] = {10, 11, 10, 11, 30, 31, 10, 11, 30, 31, 30, 31};
    const double want_dt[6] = {1 + 4 + 64, 2 + 8 + 128, 0, 0, 16 + 256 + 1024, 32 + 512 + 2048};
    vp_tensor *t = vt_tensor(dev, "table", 2, (int64_t[]){3, 2}, table);
    vp_tensor *ti = lt_i32(dev, "idx", 1, (int64_t[]){6}, idx);
    vp_tensor *y = vt_tensor(dev, "y", 2, (int64_t[]){6, 2}, NULL);
    vp_tensor *tdy = vt_tensor(dev, "dy", 2, (int64_t[]){6, 2}, dy);
    vp_tensor *dt[2] = {vt_tensor(dev, "dt", 2, (int64_t[]){3, 2}, NULL),
                        vt_tensor(dev, "dt", 2, (int64_t[]){3, 2}, NULL)};
    bool atomic = vt_device_info((uint32_t)_i)->feat.float_atomic_add;
    vp_cmd *cmd = lt_begin(dev);
    vt_ok(vp_op_gather_rows(cmd, t, ti, y));
    vt_ok(vp_op_gather_rows_backward_ex(cmd, tdy, ti, dt[0], false, VP_SCATTER_DETERMINISTIC));
    if (atomic)
        vt_ok(vp_op_gather_rows_backward_ex(cmd, tdy, ti, dt[1], false, VP_SCATTER_ATOMIC));
    lt_submit(cmd);
    float *got = vt_download(y);
    lt_assert_exact(got, want_y, 12, "gather_rows with out-of-range indices");
    free(got);
    for (int k = 0; k < (atomic ? 2 : 1); k++) {
        got = vt_download(dt[k]);
        lt_assert_exact(got, want_dt, 6, "gather_rows_backward (%s) with out-of-range indices",
                        k ? "atomic" : "deterministic");
        free(got);
    }
    vp_tensor_destroy(t);
    vp_tensor_destroy(ti);
    vp_tensor_destroy(y);
    vp_tensor_destroy(tdy);
    vp_tensor_destroy(dt[0]);
    vp_tensor_destroy(dt[1]);
}
END_TEST

/* The row map: rows by index with -1 for zero rows, x and y of other
 * shapes than 2-D, overwrite and accumulate, exactly against the
 * reference; in a graph, its gradient (the inverse map) against finite
 * differences; a row used twice refused when building. */
START_TEST(test_row_map)
{
    vp_device *dev = vt_device((uint32_t)_i);
    enum { R = 30, C = 5, N = 24 };
    int32_t idx[N];
    for (int n = 0; n < N; n++) /* every third a hole, the rest distinct rows in shuffled order */
        idx[n] = n % 3 == 1 ? -1 : (int32_t)((n * 7 + 3) % R);
    float hx[R * C], hy0[N * C];
    vt_rand(hx, R * C, 3);
    vt_rand(hy0, N * C, 4);
    vp_tensor *x = vt_tensor(dev, "x", 3, (int64_t[]){2, 15, C}, hx);
    vp_tensor *ti = lt_i32(dev, "idx", 1, (int64_t[]){N}, idx);
    for (int acc = 0; acc < 2; acc++) {
        vp_tensor *y = vt_tensor(dev, "y", 4, (int64_t[]){2, 3, 4, C}, acc ? hy0 : NULL);
        double want[N * C], *dx = vt_f64(hx, R * C);
        for (int i = 0; i < N * C; i++)
            want[i] = acc ? (double)hy0[i] : 0.0;
        vp_ref_row_map(dx, R, C, idx, N, want, acc);
        for (int i = 0; acc && i < N * C; i++) /* the device adds in float */
            want[i] = (double)(float)want[i];
        vp_cmd *cmd = lt_begin(dev);
        vt_ok(vp_op_row_map(cmd, x, ti, y, acc));
        lt_submit(cmd);
        float *got = vt_download(y);
        lt_assert_exact(got, want, N * C, "row_map%s", acc ? " accumulate" : "");
        for (int n = 0; n < N; n++)
            if (idx[n] < 0)
                for (int c = 0; c < C; c++)
                    ck_assert(acc || got[n * C + c] == 0.0f);
        free(got);
        free(dx);
        vp_tensor_destroy(y);
    }
    vp_cmd *cmd = lt_begin(dev);
    vp_tensor *bad = vt_tensor(dev, "y", 2, (int64_t[]){N, C + 1}, NULL);
    ck_assert_int_eq(vp_op_row_map(cmd, x, ti, bad, false), VP_ERR_SHAPE);
    vt_assert_has(vp_error_last(), "row_map: y (24, 6) must hold 24 rows of 5");
    vp_cmd_destroy(cmd);
    vp_tensor_destroy(bad);
    vp_tensor_destroy(x);
    vp_tensor_destroy(ti);

    vp_graph *g;
    vt_ok(vp_graph_create(dev, &g));
    vp_gt *leaf[1];
    vp_gt *gx = leaf[0] = vp_g_param(g, "x", 2, (int64_t[]){R, C}, true);
    vp_gt *gy = vp_g_row_map(g, vp_g_scale(g, gx, 2.0f), idx, 2, (int64_t[]){N, C});
    vp_gt *loss = vp_g_sum(g, vp_g_mul(g, gy, gy));
    vt_ok(vp_graph_backward(g, loss));
    vt_ok(vp_graph_compile(g));
    double *vals[1] = {vt_f64(hx, R * C)};
    vt_check_graph_grads(g, loss, leaf, vals, 1, 1e-6, 1e-6, "row_map graph");
    free(vals[0]);
    vp_graph_destroy(g);
    vt_ok(vp_graph_create(dev, &g));
    int32_t twice[3] = {1, -1, 1};
    gx = vp_g_param(g, "x", 2, (int64_t[]){4, C}, true);
    ck_assert_ptr_null(vp_g_row_map(g, gx, twice, 2, (int64_t[]){3, C}));
    ck_assert_int_eq(vp_graph_compile(g), VP_ERR_INVALID);
    vt_assert_has(vp_error_last(), "row_map of x: index 2 is 1: each must be -1 or a row in [0, 4), "
                                   "no row twice");
    vp_graph_destroy(g);
}
END_TEST

/* The deterministic backward gives the same bits on every run, with many
 * indices sharing a row (sums whose rounding depends on the order). */
START_TEST(test_gather_rows_deterministic)
{
    vp_device *dev = vt_device((uint32_t)_i);
    int64_t R = 4, C = 96, N = 2000;
    int32_t *idx = malloc((size_t)N * sizeof *idx);
    make_idx(idx, N, R, 99);
    vp_tensor *ti = lt_i32(dev, "idx", 1, (int64_t[]){N}, idx);
    vp_tensor *dy = lt_rand(dev, "dy", 2, (int64_t[]){N, C}, 5, NULL);
    vp_tensor *dt[3];
    vp_cmd *cmd = lt_begin(dev);
    for (int k = 0; k < 3; k++) {
        dt[k] = vt_tensor(dev, "dtable", 2, (int64_t[]){R, C}, NULL);
        vt_ok(vp_op_gather_rows_backward_ex(cmd, dy, ti, dt[k], false, VP_SCATTER_DETERMINISTIC));
    }
    lt_submit(cmd);
    float *a = vt_download(dt[0]);
    for (int k = 1; k < 3; k++) {
        float *b = vt_download(dt[k]);
        ck_assert_msg(!memcmp(a, b, (size_t)(R * C) * sizeof *a),
                      "deterministic gather_rows_backward differs between runs");
        free(b);
    }
    free(a);
    free(idx);
    for (int k = 0; k < 3; k++)
        vp_tensor_destroy(dt[k]);
    vp_tensor_destroy(ti);
    vp_tensor_destroy(dy);
}
END_TEST

/* ---- errors ------------------------------------------------------------ */

START_TEST(test_layout_errors)
{
    vp_device *dev = vt_device((uint32_t)_i);
    vp_tensor *x = vt_tensor(dev, "x", 3, (int64_t[]){2, 3, 4}, NULL);
    vp_tensor *y = vt_tensor(dev, "y", 3, (int64_t[]){2, 3, 4}, NULL);
    vp_tensor *y2 = vt_tensor(dev, "y", 2, (int64_t[]){6, 4}, NULL);
    vp_tensor *t243 = vt_tensor(dev, "t", 3, (int64_t[]){2, 4, 3}, NULL);
    vp_tensor *s = vt_tensor(dev, "s", 3, (int64_t[]){2, 2, 4}, NULL);
    vp_tensor *s5 = vt_tensor(dev, "s", 3, (int64_t[]){2, 2, 5}, NULL);
    vp_tensor *c = vt_tensor(dev, "c", 3, (int64_t[]){2, 5, 4}, NULL);
    vp_tensor *table = vt_tensor(dev, "table", 2, (int64_t[]){10, 4}, NULL);
    vp_tensor *rows = vt_tensor(dev, "rows", 2, (int64_t[]){5, 3}, NULL);
    vp_tensor *fidx = vt_tensor(dev, "idx", 1, (int64_t[]){5}, NULL);
    vp_tensor *idx = lt_i32(dev, "idx", 1, (int64_t[]){5}, NULL);
    vp_tensor *idx2 = lt_i32(dev, "idx", 2, (int64_t[]){5, 1}, NULL);
    vp_cmd *cmd = lt_begin(dev);

    vt_expect_err(vp_op_permute(cmd, x, (int[]){0, 2, 1}, y), VP_ERR_SHAPE,
               "permute: x (2, 3, 4) permuted by (0, 2, 1) is (2, 4, 3), not y (2, 3, 4)");
    vt_expect_err(vp_op_permute(cmd, x, (int[]){0, 2, 2}, y), VP_ERR_SHAPE,
               "permute: perm (0, 2, 2) is not a permutation of 0..2");
    vt_expect_err(vp_op_permute(cmd, x, (int[]){0, 1, 3}, y), VP_ERR_SHAPE,
               "permute: perm (0, 1, 3) is not a permutation of 0..2");
    vt_expect_err(vp_op_permute(cmd, x, (int[]){0, 1}, y2), VP_ERR_SHAPE,
               "permute: x (2, 3, 4) and y (6, 4) differ in the number of dimensions");
    vt_expect_err(vp_op_permute(cmd, x, (int[]){0, 1, 2}, x), VP_ERR_INVALID,
               "permute: output x overlaps the input x");
    vt_expect_err(vp_op_permute(cmd, idx, (int[]){0}, fidx), VP_ERR_UNSUPPORTED,
               "permute: tensor idx is i32; this op takes f32");
    vt_expect_err(vp_op_permute_ex(cmd, x, (int[]){0, 1, 2}, y, VP_PERMUTE_TILES),
               VP_ERR_UNSUPPORTED, "permute: the tiles kernel cannot permute x (2, 3, 4): the "
               "innermost dimension stays");
    vt_expect_err(vp_op_permute_ex(cmd, x, (int[]){0, 2, 1}, t243, VP_PERMUTE_BLOCKS),
               VP_ERR_UNSUPPORTED, "permute: the blocks kernel cannot permute x (2, 3, 4): the "
               "transposed extents and the strides must be multiples of 4");
    vt_expect_err(vp_op_permute_ex(cmd, x, (int[]){0, 2, 1}, t243, (vp_permute_kernel)9),
               VP_ERR_INVALID, "permute: unknown kernel 9");
    vt_expect_err(vp_op_permute_backward(cmd, y, (int[]){1, 0, 2}, x, false), VP_ERR_SHAPE,
               "permute_backward: x (2, 3, 4) permuted by (1, 0, 2) is (3, 2, 4), not y "
               "(2, 3, 4)");

    vt_expect_err(vp_op_slice(cmd, x, 1, 2, s), VP_ERR_SHAPE,
               "slice: s (2, 2, 4) does not fit in x (2, 3, 4) at start 2 along axis 1");
    vt_expect_err(vp_op_slice(cmd, x, 1, -1, s), VP_ERR_SHAPE,
               "slice: s (2, 2, 4) does not fit in x (2, 3, 4) at start -1 along axis 1");
    vt_expect_err(vp_op_slice(cmd, x, 1, 0, s5), VP_ERR_SHAPE,
               "slice: x (2, 3, 4) and s (2, 2, 5) differ outside axis 1");
    vt_expect_err(vp_op_slice(cmd, x, 3, 0, s), VP_ERR_SHAPE,
               "slice: axis 3 is out of range for x (2, 3, 4)");
    vt_expect_err(vp_op_slice(cmd, x, -4, 0, s), VP_ERR_SHAPE,
               "slice: axis -4 is out of range for x (2, 3, 4)");
    vt_expect_err(vp_op_slice_backward(cmd, s, -2, 2, x, true), VP_ERR_SHAPE,
               "slice_backward: s (2, 2, 4) does not fit in x (2, 3, 4) at start 2 along "
               "axis 1");

    const vp_tensor *parts[2] = {x, s};
    vt_expect_err(vp_op_concat(cmd, parts, 2, 1, y), VP_ERR_SHAPE,
               "concat: the extents along axis 1 add up to 5, y (2, 3, 4) has 3");
    vt_expect_err(vp_op_concat(cmd, parts, 2, 1, x), VP_ERR_INVALID, "concat: x and x overlap");
    vt_expect_err(vp_op_concat(cmd, parts, 2, 2, c), VP_ERR_SHAPE,
               "concat: x (2, 3, 4) and c (2, 5, 4) differ outside axis 2");
    vt_expect_err(vp_op_concat(cmd, parts, 0, 1, c), VP_ERR_SHAPE, "concat: no inputs");
    vp_tensor *dparts[2] = {y, s5};
    vt_expect_err(vp_op_concat_backward(cmd, c, 1, (int64_t[]){3, 2}, dparts, 2, false),
               VP_ERR_SHAPE, "concat_backward: c (2, 5, 4) and s (2, 2, 5) differ outside "
               "axis 1");
    vp_tensor *dfirst[2] = {y, NULL};
    vt_expect_err(vp_op_concat_backward(cmd, c, 1, (int64_t[]){3, 3}, dfirst, 2, false),
               VP_ERR_SHAPE, "concat_backward: the extents along axis 1 add up to 6, c "
               "(2, 5, 4) has 5");
    vt_expect_err(vp_op_concat_backward(cmd, c, 1, (int64_t[]){2, 3}, dparts, 2, false),
               VP_ERR_SHAPE, "concat_backward: y (2, 3, 4) has extent 3 along axis 1, the "
               "input had 2");

    vt_expect_err(vp_op_gather_rows(cmd, table, idx, rows), VP_ERR_SHAPE,
               "gather_rows: rows (5, 3) must be (5, 4) for table (10, 4) and idx (5)");
    vt_expect_err(vp_op_gather_rows(cmd, table, fidx, rows), VP_ERR_UNSUPPORTED,
               "gather_rows: tensor idx is f32; this op takes i32");
    vt_expect_err(vp_op_gather_rows(cmd, table, idx2, rows), VP_ERR_SHAPE,
               "gather_rows: idx (5, 1) must be 1-D (N)");
    vt_expect_err(vp_op_gather_rows(cmd, x, idx, rows), VP_ERR_SHAPE,
               "gather_rows: x (2, 3, 4) must be 2-D (R, C)");
    vt_expect_err(vp_op_gather_rows_backward(cmd, rows, idx, table, false), VP_ERR_SHAPE,
               "gather_rows_backward: rows (5, 3) must be (5, 4) for dtable (10, 4) and "
               "idx (5)");
    vt_expect_err(vp_op_gather_rows_backward_ex(cmd, rows, idx, table, false, 7), VP_ERR_SHAPE,
               "gather_rows_backward: rows (5, 3) must be (5, 4) for dtable (10, 4) and "
               "idx (5)");
    vp_tensor *rows4 = vt_tensor(dev, "rows", 2, (int64_t[]){5, 4}, NULL);
    vt_expect_err(vp_op_gather_rows_backward_ex(cmd, rows4, idx, table, false, 7), VP_ERR_INVALID,
               "gather_rows_backward: unknown mode 7");
    if (!vt_device_info((uint32_t)_i)->feat.float_atomic_add) {
        char want[512];
        snprintf(want, sizeof want, "gather_rows_backward: the atomic mode needs float atomic "
                 "add, which %s lacks", vt_device_info((uint32_t)_i)->name);
        vt_expect_err(vp_op_gather_rows_backward_ex(cmd, rows4, idx, table, false,
                                                 VP_SCATTER_ATOMIC), VP_ERR_UNSUPPORTED, want);
    }
    ck_assert_uint_eq(vp_cmd_get_stats(cmd).dispatches, 0);
    lt_submit(cmd);
    vp_tensor *all[] = {x, y, y2, t243, s, s5, c, table, rows, rows4, fidx, idx, idx2};
    for (size_t i = 0; i < sizeof all / sizeof all[0]; i++)
        vp_tensor_destroy(all[i]);
}
END_TEST

int main(void)
{
    Suite *s = suite_create("layout");
    TCase *tc = vt_tcase("permute");
    vt_add_per_device(tc, test_permute, NULL);
    suite_add_tcase(s, tc);
    tc = vt_tcase("slice_concat");
    vt_add_per_device(tc, test_slice, NULL);
    vt_add_per_device(tc, test_concat, NULL);
    suite_add_tcase(s, tc);
    tc = vt_tcase("gather_rows");
    vt_add_per_device(tc, test_gather_rows, NULL);
    vt_add_per_device(tc, test_gather_rows_atomic, needs_atomics);
    vt_add_per_device(tc, test_gather_rows_clamp, NULL);
    vt_add_per_device(tc, test_gather_rows_deterministic, NULL);
    vt_add_per_device(tc, test_row_map, NULL);
    suite_add_tcase(s, tc);
    tc = vt_tcase("errors");
    vt_add_per_device(tc, test_layout_errors, NULL);
    suite_add_tcase(s, tc);
    return vt_run(s);
}
