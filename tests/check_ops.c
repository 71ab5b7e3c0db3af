/*
 * Op suite: every op on every device under test against its CPU reference,
 * on random inputs in [-1, 1] with outputs poisoned (NaN) beforehand so an
 * unwritten element fails. Shapes include 1, 7, 33, 257 and sizes that are
 * not multiples of any tile. NMSE bound 1e-7 unless an op says otherwise.
 */
#include "harness.h"

#include <math.h>
#include <stdlib.h>
#include <string.h>

#define TOL 1e-7

/* ---- matmul ------------------------------------------------------------ */

typedef struct mm_case {
    int64_t batch_a, batch_b, batch; /* batch_a/b: 1 broadcasts */
    int64_t M, N, K;
} mm_case;

static const mm_case mm_cases[] = {
    {1, 1, 1, 1, 1, 1},      {1, 1, 1, 7, 33, 257},   {1, 1, 1, 257, 7, 33},
    {1, 1, 1, 33, 257, 7},   {1, 1, 1, 64, 64, 64},   {1, 1, 1, 36, 20, 12},
    {1, 1, 1, 1, 257, 33},   {1, 1, 1, 100, 1, 16},   {3, 3, 3, 17, 9, 5},
    {4, 1, 4, 16, 24, 8},    {1, 5, 5, 7, 12, 32},    {2, 2, 2, 40, 44, 36},
};

/* Kernel configurations every device runs: its own default, each tiling
 * (registers, subgroup, shared memory) with vec4 and with scalar loads, so
 * the CPU tilings are tested on GPUs and the other way round, and the naive
 * baseline. At most 8 (test_matmul's array). The subgroup tiling needs
 * shuffles and a fixed subgroup size; devices without them run a registers
 * config instead. */
static int mm_cfgs(const vp_device_info *d, vp_matmul_cfg *out)
{
    int n = 0;
    bool sg = vp_matmul_subgroup_ok(d);
    out[n++] = vp_matmul_default_cfg(d);
    out[n++] = (vp_matmul_cfg){VP_MATMUL_TILED, 16, 8, 4, 4, false, VP_MATMUL_REGISTERS, 0};
    out[n++] = (vp_matmul_cfg){VP_MATMUL_TILED, 8, 2, 8, 12, true, VP_MATMUL_REGISTERS, 0};
    /* the GPU default, and a non-square one with scalar loads and K step 8 */
    out[n++] = (vp_matmul_cfg){VP_MATMUL_TILED, 16, 16, 4, 4, false, VP_MATMUL_SHARED, 16};
    out[n++] = (vp_matmul_cfg){VP_MATMUL_TILED, 8, 4, 4, 8, true, VP_MATMUL_SHARED, 8};
    if (sg) {
        /* two subgroups per workgroup, 4 rows (fewer than the lanes) */
        out[n++] = (vp_matmul_cfg){VP_MATMUL_TILED, 2 * d->subgroup_size, 1, 4, 8, false,
                                   VP_MATMUL_SUBGROUP, 0};
        out[n++] = (vp_matmul_cfg){VP_MATMUL_TILED, d->subgroup_size, 2, 16, 4, true,
                                   VP_MATMUL_SUBGROUP, 0};
    } else {
        out[n++] = (vp_matmul_cfg){VP_MATMUL_TILED, 8, 1, 16, 16, false, VP_MATMUL_REGISTERS, 0};
    }
    out[n++] = (vp_matmul_cfg){VP_MATMUL_NAIVE, 8, 8, 0, 0, false, VP_MATMUL_REGISTERS, 0};
    /* The default is one of the others on some devices: run it once. */
    for (int i = 1; i < n; i++) {
        const vp_matmul_cfg *a = &out[0], *b = &out[i];
        if (a->kernel == b->kernel && a->wg_x == b->wg_x && a->wg_y == b->wg_y && a->tm == b->tm &&
            a->tn == b->tn && a->no_vec4 == b->no_vec4 && a->tiling == b->tiling &&
            (a->bk ? a->bk : 16) == (b->bk ? b->bk : 16)) {
            out[i] = out[--n];
            break;
        }
    }
    return n;
}

static void run_mm(uint32_t d, const mm_case *c, bool ta, bool tb, const vp_matmul_cfg *cfg)
{
    vp_device *dev = vt_device(d);
    int64_t M = c->M, N = c->N, K = c->K;
    int64_t sa[3] = {c->batch_a, ta ? K : M, ta ? M : K};
    int64_t sb[3] = {c->batch_b, tb ? N : K, tb ? K : N};
    int64_t sc[3] = {c->batch, M, N};
    size_t na = (size_t)(c->batch_a * M * K), nb = (size_t)(c->batch_b * K * N);
    size_t nc = (size_t)(c->batch * M * N);
    float *ha = malloc(na * 4), *hb = malloc(nb * 4);
    double *want = malloc(nc * sizeof *want);
    vt_rand(ha, na, (uint64_t)(M * 131 + N * 7 + K));
    vt_rand(hb, nb, (uint64_t)(M + N * 17 + K * 3 + 1));
    double *da = vt_f64(ha, na), *db = vt_f64(hb, nb);
    vp_ref_matmul(da, ta, db, tb, want, c->batch, M, N, K, c->batch_a == 1 ? 0 : M * K,
                  c->batch_b == 1 ? 0 : K * N, M * N);
    free(da);
    free(db);
    vp_tensor *a = vt_tensor(dev, "a", 3, sa, ha), *b = vt_tensor(dev, "b", 3, sb, hb);
    vp_tensor *out = vt_tensor(dev, "c", 3, sc, NULL);
    vp_cmd *cmd;
    vt_ok(vp_cmd_create(dev, &cmd));
    vt_ok(vp_cmd_begin(cmd));
    vt_ok(vp_op_matmul_ex(cmd, a, ta, b, tb, out, cfg));
    vt_ok(vp_cmd_submit(cmd));
    float *got = vt_download(out);
    vt_assert_close(got, want, nc, TOL,
                    "%s: matmul batch %lld/%lld/%lld M %lld N %lld K %lld ta %d tb %d, kernel %s "
                    "tiling %d (bk %u) wg %ux%u tile %ux%u%s", vt_device_info(d)->name,
                    (long long)c->batch_a, (long long)c->batch_b, (long long)c->batch,
                    (long long)M, (long long)N, (long long)K, ta, tb,
                    cfg->kernel == VP_MATMUL_NAIVE ? "naive" : "tiled", (int)cfg->tiling, cfg->bk,
                    cfg->wg_x, cfg->wg_y, cfg->tm, cfg->tn, cfg->no_vec4 ? " scalar" : "");
    free(got);
    vp_cmd_destroy(cmd);
    vp_tensor_destroy(a);
    vp_tensor_destroy(b);
    vp_tensor_destroy(out);
    free(ha);
    free(hb);
    free(want);
}

START_TEST(test_matmul)
{
    vp_matmul_cfg cfgs[8];
    int nc = mm_cfgs(vt_device_info((uint32_t)_i), cfgs);
    for (size_t c = 0; c < sizeof mm_cases / sizeof mm_cases[0]; c++)
        for (int t = 0; t < 4; t++)
            for (int k = 0; k < nc; k++)
                run_mm((uint32_t)_i, &mm_cases[c], t & 1, t & 2, &cfgs[k]);
}
END_TEST

/* Bias and accumulation, c (+)= op(a) op(b) + bias: both at once on every
 * tiled configuration (the stores of all three tilings, vec4 and scalar),
 * and each alone on the device's default (each is another pipeline, and
 * pipelines are what this suite's time goes to on lavapipe). */
START_TEST(test_gemm_bias_acc)
{
    uint32_t d = (uint32_t)_i;
    vp_device *dev = vt_device(d);
    vp_matmul_cfg cfgs[8];
    int ncfg = mm_cfgs(vt_device_info(d), cfgs);
    static const int64_t shapes[][4] = {{2, 12, 16, 8}, {1, 7, 33, 5}, {3, 5, 9, 4}};
    for (size_t s = 0; s < 3; s++) {
        int64_t B = shapes[s][0], M = shapes[s][1], N = shapes[s][2], K = shapes[s][3];
        size_t na = (size_t)(B * M * K), nb = (size_t)(B * K * N), nc = (size_t)(B * M * N);
        float *ha = malloc(na * 4), *hb = malloc(nb * 4), *hc = malloc(nc * 4), hbias[64];
        vt_rand(ha, na, 11 + s);
        vt_rand(hb, nb, 12 + s);
        vt_rand(hc, nc, 13 + s);
        vt_rand(hbias, (size_t)N, 14 + s);
        double *da = vt_f64(ha, na), *db = vt_f64(hb, nb), *prod = malloc(nc * sizeof *prod);
        double *want = malloc(nc * sizeof *want);
        vp_ref_matmul(da, false, db, true, prod, B, M, N, K, M * K, K * N, M * N);
        vp_tensor *a = vt_tensor(dev, "a", 3, (int64_t[]){B, M, K}, ha);
        vp_tensor *b = vt_tensor(dev, "b", 3, (int64_t[]){B, N, K}, hb);
        vp_tensor *bias = vt_tensor(dev, "bias", 1, (int64_t[]){N}, hbias);
        vp_tensor *c = vt_tensor(dev, "c", 3, (int64_t[]){B, M, N}, NULL);
        for (int k = 0; k < ncfg; k++) {
            if (cfgs[k].kernel == VP_MATMUL_NAIVE)
                continue;
            for (int mode = k == 0 ? 0 : 2; mode < 3; mode++) { /* bias; accumulate; both */
                bool with_bias = mode != 1, acc = mode != 0;
                vt_ok(vp_tensor_upload(c, hc, nc * 4));
                if (!acc)
                    vt_poison(c);
                for (size_t i = 0; i < nc; i++)
                    want[i] = prod[i] + (with_bias ? hbias[i % (size_t)N] : 0) +
                              (acc ? hc[i] : 0);
                vp_cmd *cmd;
                vt_ok(vp_cmd_create(dev, &cmd));
                vt_ok(vp_cmd_begin(cmd));
                vt_ok(vp_op_gemm(cmd, a, false, b, true, with_bias ? bias : NULL, c, acc,
                                 &cfgs[k]));
                vt_ok(vp_cmd_submit(cmd));
                vp_cmd_destroy(cmd);
                float *got = vt_download(c);
                vt_assert_close(got, want, nc, TOL, "%s: gemm (%lld,%lld,%lld,%lld) bias %d acc %d "
                                "tiling %d wg %ux%u tile %ux%u%s", vt_device_info(d)->name,
                                (long long)B, (long long)M, (long long)N, (long long)K,
                                with_bias, acc, (int)cfgs[k].tiling, cfgs[k].wg_x, cfgs[k].wg_y,
                                cfgs[k].tm, cfgs[k].tn, cfgs[k].no_vec4 ? " scalar" : "");
                free(got);
            }
        }
        vp_tensor_destroy(a), vp_tensor_destroy(b), vp_tensor_destroy(bias), vp_tensor_destroy(c);
        free(ha), free(hb), free(hc), free(da), free(db), free(prod), free(want);
    }
}
END_TEST

/* A linear layer's weight and bias gradients in one pass: c (+)= a^T b and
 * rowsum (+)= the row sums of a^T (vp_op_gemm_rowsum), each accumulate flag
 * on its own, scalar and vec4 shapes (M and K multiples of 4 or not, rows
 * past one subgroup block), against the reference; refused without a
 * transposed A, with batches, or on a device without the subgroup tiling. */
START_TEST(test_gemm_rowsum)
{
    uint32_t d = (uint32_t)_i;
    vp_device *dev = vt_device(d);
    const vp_device_info *info = vt_device_info(d);
    static const int64_t shapes[][3] = {{37, 70, 9}, {64, 128, 64}, {5, 3, 7}, {40, 33, 12}};
    for (size_t s = 0; s < sizeof shapes / sizeof shapes[0]; s++) {
        int64_t M = shapes[s][0], K = shapes[s][1], N = shapes[s][2]; /* a (K, M), b (K, N) */
        size_t na = (size_t)(K * M), nb = (size_t)(K * N), nc = (size_t)(M * N);
        float *ha = malloc(na * 4), *hb = malloc(nb * 4), *hc = malloc(nc * 4), *hr = malloc(M * 4);
        vt_rand(ha, na, 21 + s);
        vt_rand(hb, nb, 22 + s);
        vt_rand(hc, nc, 23 + s);
        vt_rand(hr, (size_t)M, 24 + s);
        double *da = vt_f64(ha, na), *db = vt_f64(hb, nb), *prod = malloc(nc * sizeof *prod);
        double *want = malloc(nc * sizeof *want), *wr = malloc((size_t)M * sizeof *wr);
        vp_ref_matmul(da, true, db, false, prod, 1, M, N, K, 0, 0, 0);
        vp_tensor *a = vt_tensor(dev, "a", 2, (int64_t[]){K, M}, ha);
        vp_tensor *b = vt_tensor(dev, "b", 2, (int64_t[]){K, N}, hb);
        vp_tensor *c = vt_tensor(dev, "c", 2, (int64_t[]){M, N}, NULL);
        vp_tensor *r = vt_tensor(dev, "rowsum", 1, (int64_t[]){M}, NULL);
        for (int mode = 0; mode < 3; mode++) {
            bool acc_c = mode == 1, acc_r = mode >= 1;
            vt_ok(vp_tensor_upload(c, hc, nc * 4));
            vt_ok(vp_tensor_upload(r, hr, (size_t)M * 4));
            if (!acc_c)
                vt_poison(c);
            if (!acc_r)
                vt_poison(r);
            for (size_t i = 0; i < nc; i++)
                want[i] = prod[i] + (acc_c ? hc[i] : 0);
            for (int64_t m = 0; m < M; m++) {
                wr[m] = acc_r ? hr[m] : 0;
                for (int64_t k = 0; k < K; k++)
                    wr[m] += da[k * M + m];
            }
            vp_cmd *cmd;
            vt_ok(vp_cmd_create(dev, &cmd));
            vt_ok(vp_cmd_begin(cmd));
            vp_status st = vp_op_gemm_rowsum(cmd, a, true, b, false, c, acc_c, r, acc_r, NULL);
            if (!vp_gemm_rowsum_ok(info)) {
                ck_assert_int_eq(st, VP_ERR_UNSUPPORTED);
                vp_cmd_destroy(cmd);
                break;
            }
            vt_ok(st);
            vt_ok(vp_cmd_submit(cmd));
            vp_cmd_destroy(cmd);
            float *got = vt_download(c), *gr = vt_download(r);
            vt_assert_close(got, want, nc, TOL, "%s: gemm_rowsum (%lld, %lld, %lld) mode %d: c",
                            info->name, (long long)M, (long long)K, (long long)N, mode);
            vt_assert_close(gr, wr, (size_t)M, TOL, "%s: gemm_rowsum (%lld, %lld, %lld) mode %d: "
                            "row sums", info->name, (long long)M, (long long)K, (long long)N, mode);
            free(got);
            free(gr);
        }
        if (s == 0) { /* A not transposed: refused */
            vp_cmd *cmd;
            vt_ok(vp_cmd_create(dev, &cmd));
            vt_ok(vp_cmd_begin(cmd));
            vp_tensor *a2 = vt_tensor(dev, "a", 2, (int64_t[]){M, K}, NULL);
            vp_tensor *c2 = vt_tensor(dev, "c", 2, (int64_t[]){M, N}, NULL);
            ck_assert_int_eq(vp_op_gemm_rowsum(cmd, a2, false, b, false, c2, false, r, false, NULL),
                             VP_ERR_UNSUPPORTED);
            vp_tensor *r2 = vt_tensor(dev, "rowsum", 1, (int64_t[]){M + 1}, NULL);
            ck_assert_int_eq(vp_op_gemm_rowsum(cmd, a, true, b, false, c, false, r2, false, NULL),
                             VP_ERR_SHAPE);
            vt_assert_has(vp_error_last(), "matmul: row sums rowsum (38) must have the 37 rows of c");
            vp_tensor_destroy(a2), vp_tensor_destroy(c2), vp_tensor_destroy(r2);
            vp_cmd_destroy(cmd);
        }
        vp_tensor_destroy(a), vp_tensor_destroy(b), vp_tensor_destroy(c), vp_tensor_destroy(r);
        free(ha), free(hb), free(hc), free(hr), free(da), free(db), free(prod), free(want), free(wr);
    }
}
END_TEST

/* Accumulating elementwise ops: out += a op b, y += alpha x; with C = 36
 * four elements per invocation (VEC4), with 33 one. */
static void run_elementwise_acc(uint32_t d, int C)
{
    vp_device *dev = vt_device(d);
    enum { R = 5, CMAX = 36 };
    float ha[R * CMAX], hb[CMAX], ho[R * CMAX];
    vt_rand(ha, R * C, 21);
    vt_rand(hb, C, 22);
    vt_rand(ho, R * C, 23);
    vp_tensor *a = vt_tensor(dev, "a", 2, (int64_t[]){R, C}, ha);
    vp_tensor *b = vt_tensor(dev, "b", 1, (int64_t[]){C}, hb);
    vp_tensor *o = vt_tensor(dev, "o", 2, (int64_t[]){R, C}, ho);
    vp_cmd *cmd;
    vt_ok(vp_cmd_create(dev, &cmd));
    vt_ok(vp_cmd_begin(cmd));
    vt_ok(vp_op_binary(cmd, VP_BIN_MUL, a, b, o, true)); /* o = ho + a*b */
    vt_ok(vp_op_binary(cmd, VP_BIN_ADD, a, b, o, true)); /* o += a + b */
    vt_ok(vp_op_axpy(cmd, a, -0.5f, o, true));          /* o += -a/2 */
    vt_ok(vp_cmd_submit(cmd));
    double want[R * CMAX];
    for (int i = 0; i < R * C; i++) {
        float w = ho[i] + ha[i] * hb[i % C];
        w = w + (ha[i] + hb[i % C]);
        w = w + -0.5f * ha[i];
        want[i] = w;
    }
    float *got = vt_download(o);
    vt_assert_close(got, want, R * C, TOL, "%s: accumulating mul, add, axpy (5, %d)",
                    vt_device_info(d)->name, C);
    free(got);
    vp_cmd_destroy(cmd);
    vp_tensor_destroy(a), vp_tensor_destroy(b), vp_tensor_destroy(o);
}

START_TEST(test_elementwise_acc)
{
    run_elementwise_acc((uint32_t)_i, 33);
    run_elementwise_acc((uint32_t)_i, 36);
}
END_TEST

/* Boolean masks to additive ones: nonzero -> -inf, zero -> 0, exactly;
 * 7 elements (one per invocation) and 8 (four per invocation). */
static void run_bool_mask(uint32_t d, int n)
{
    vp_device *dev = vt_device(d);
    float hm[8] = {0.0f, 1.0f, -2.0f, 0.5f, -0.0f, 1e-30f, NAN, INFINITY};
    vp_tensor *m = vt_tensor(dev, "m", 1, (int64_t[]){n}, hm);
    vp_tensor *o = vt_tensor(dev, "o", 1, (int64_t[]){n}, NULL);
    vp_cmd *cmd;
    vt_ok(vp_cmd_create(dev, &cmd));
    vt_ok(vp_cmd_begin(cmd));
    vt_ok(vp_op_bool_to_additive(cmd, m, o));
    vt_ok(vp_op_bool_to_additive(cmd, m, m)); /* in place */
    vt_ok(vp_cmd_submit(cmd));
    float *got = vt_download(o), *inplace = vt_download(m);
    for (int i = 0; i < n; i++) {
        float want = hm[i] != 0.0f ? -INFINITY : 0.0f; /* NaN != 0: masked */
        ck_assert_msg(got[i] == want && inplace[i] == want, "mask %g -> %g (in place %g), want %g",
                      hm[i], got[i], inplace[i], want);
    }
    free(got), free(inplace);
    vp_cmd_destroy(cmd);
    vp_tensor_destroy(m), vp_tensor_destroy(o);
}

START_TEST(test_bool_mask)
{
    run_bool_mask((uint32_t)_i, 7);
    run_bool_mask((uint32_t)_i, 8);
}
END_TEST

/* 2-D inputs broadcast against a batched output, and a 4-D batch. */
START_TEST(test_matmul_shapes)
{
    vp_device *dev = vt_device((uint32_t)_i);
    float ha[5 * 3], hb[2 * 3 * 3 * 4];
    double da[5 * 3], db[2 * 3 * 3 * 4], want[2 * 3 * 5 * 4];
    vt_rand(ha, 15, 1);
    vt_rand(hb, 72, 2);
    for (int i = 0; i < 15; i++)
        da[i] = ha[i];
    for (int i = 0; i < 72; i++)
        db[i] = hb[i];
    vp_tensor *a = vt_tensor(dev, "a", 2, (int64_t[]){5, 3}, ha);
    vp_tensor *b = vt_tensor(dev, "b", 4, (int64_t[]){2, 3, 3, 4}, hb);
    vp_tensor *c = vt_tensor(dev, "c", 4, (int64_t[]){2, 3, 5, 4}, NULL);
    vp_ref_matmul(da, false, db, false, want, 6, 5, 4, 3, 0, 12, 20);
    vp_cmd *cmd;
    vt_ok(vp_cmd_create(dev, &cmd));
    vt_ok(vp_cmd_begin(cmd));
    vt_ok(vp_op_matmul(cmd, a, false, b, false, c));
    vt_ok(vp_cmd_submit(cmd));
    float *got = vt_download(c);
    vt_assert_close(got, want, 120, TOL, "matmul (5,3) x (2,3,3,4)");
    free(got);
    vp_cmd_destroy(cmd);
    vp_tensor_destroy(a);
    vp_tensor_destroy(b);
    vp_tensor_destroy(c);
}
END_TEST

START_TEST(test_matmul_errors)
{
    vp_device *dev = vt_device((uint32_t)_i);
    vp_tensor *a = vt_tensor(dev, "x", 2, (int64_t[]){4, 3}, NULL);
    vp_tensor *b = vt_tensor(dev, "w", 2, (int64_t[]){5, 4}, NULL);
    vp_tensor *c = vt_tensor(dev, "y", 2, (int64_t[]){4, 5}, NULL);
    vp_tensor *c3 = vt_tensor(dev, "y3", 3, (int64_t[]){2, 4, 5}, NULL);
    vp_tensor *b3 = vt_tensor(dev, "w3", 3, (int64_t[]){3, 3, 5}, NULL);
    vp_tensor *sq = vt_tensor(dev, "s", 2, (int64_t[]){4, 4}, NULL);
    vp_tensor *sq2 = vt_tensor(dev, "s2", 2, (int64_t[]){4, 4}, NULL);
    vp_cmd *cmd;
    vt_ok(vp_cmd_create(dev, &cmd));
    vt_ok(vp_cmd_begin(cmd));
    ck_assert_int_eq(vp_op_matmul(cmd, a, false, b, false, c), VP_ERR_SHAPE);
    ck_assert_str_eq(vp_error_last(),
                     "matmul: x (4, 3) x w (5, 4) -> y (4, 5): inner dimensions differ");
    ck_assert_int_eq(vp_op_matmul(cmd, a, false, b, true, c), VP_ERR_SHAPE); /* K 3 vs 4 */
    ck_assert_int_eq(vp_op_matmul(cmd, a, true, b, false, c), VP_ERR_SHAPE); /* out (3,4)? */
    ck_assert_str_eq(vp_error_last(),
                     "matmul: x (4, 3)^T x w (5, 4) -> y (4, 5): inner dimensions differ");
    ck_assert_int_eq(vp_op_matmul(cmd, a, false, b3, false, c3), VP_ERR_SHAPE);
    ck_assert_str_eq(vp_error_last(), "matmul: x (4, 3) x w3 (3, 3, 5) -> y3 (2, 4, 5): batch "
                                      "dimensions do not broadcast");
    ck_assert_int_eq(vp_op_matmul(cmd, sq, false, sq2, false, sq), VP_ERR_INVALID);
    ck_assert_str_eq(vp_error_last(), "matmul: output s overlaps an input");
    vp_cmd_stats s = vp_cmd_get_stats(cmd);
    ck_assert_uint_eq(s.dispatches, 0);
    vt_ok(vp_cmd_submit(cmd));
    vp_cmd_destroy(cmd);
    vp_tensor_destroy(a);
    vp_tensor_destroy(b);
    vp_tensor_destroy(c);
    vp_tensor_destroy(c3);
    vp_tensor_destroy(b3);
    vp_tensor_destroy(sq);
    vp_tensor_destroy(sq2);
}
END_TEST

/* ---- elementwise ------------------------------------------------------- */

static const int64_t ew_sizes[] = {1, 7, 33, 257, 1000, 4099};

typedef enum { EW_ADD, EW_MUL, EW_SCALE, EW_FILL } ew_op;

static void run_ew(uint32_t d, ew_op op, int64_t rows, int64_t cols, bool bcast, bool inplace)
{
    vp_device *dev = vt_device(d);
    size_t n = (size_t)(rows * cols), nb = bcast ? (size_t)cols : n;
    float *ha = malloc(n * 4), *hb = malloc(nb * 4);
    double *want = malloc(n * sizeof *want);
    vt_rand(ha, n, (uint64_t)(rows * 3 + cols));
    vt_rand(hb, nb, (uint64_t)(rows + cols * 5));
    double *da = vt_f64(ha, n), *db = vt_f64(hb, nb);
    int64_t sa[2] = {rows, cols}, sb1[1] = {cols};
    vp_tensor *a = vt_tensor(dev, "a", 2, sa, ha);
    vp_tensor *b = bcast ? vt_tensor(dev, "b", 1, sb1, hb) : vt_tensor(dev, "b", 2, sa, hb);
    vp_tensor *out = inplace ? a : vt_tensor(dev, "out", 2, sa, NULL);
    vp_cmd *cmd;
    vt_ok(vp_cmd_create(dev, &cmd));
    vt_ok(vp_cmd_begin(cmd));
    const char *name = "";
    switch (op) {
    case EW_ADD:
        name = "add";
        vp_ref_add(da, db, want, (int64_t)n, (int64_t)nb);
        vt_ok(vp_op_add(cmd, a, b, out));
        break;
    case EW_MUL:
        name = "mul";
        vp_ref_mul(da, db, want, (int64_t)n, (int64_t)nb);
        vt_ok(vp_op_mul(cmd, a, b, out));
        break;
    case EW_SCALE:
        name = "scale";
        vp_ref_scale(da, -1.75, want, (int64_t)n);
        vt_ok(vp_op_scale(cmd, a, -1.75f, out));
        break;
    case EW_FILL:
        name = "fill";
        vp_ref_fill(want, 0.625, (int64_t)n);
        vt_ok(vp_op_fill(cmd, out, 0.625f));
        break;
    }
    vt_ok(vp_cmd_submit(cmd));
    float *got = vt_download(out);
    vt_assert_close(got, want, n, TOL, "%s: %s (%lld, %lld)%s%s", vt_device_info(d)->name, name,
                    (long long)rows, (long long)cols, bcast ? " broadcast" : "",
                    inplace ? " in place" : "");
    free(got);
    vp_cmd_destroy(cmd);
    if (!inplace)
        vp_tensor_destroy(out);
    vp_tensor_destroy(a);
    vp_tensor_destroy(b);
    free(ha);
    free(hb);
    free(da);
    free(db);
    free(want);
}

START_TEST(test_elementwise)
{
    size_t ns = sizeof ew_sizes / sizeof ew_sizes[0];
    for (ew_op op = EW_ADD; op <= EW_FILL; op++)
        for (size_t r = 0; r < ns; r += 2)
            for (size_t c = 0; c < ns; c++) {
                int64_t rows = ew_sizes[r] > 300 ? 3 : ew_sizes[r];
                run_ew((uint32_t)_i, op, rows, ew_sizes[c], false, false);
                run_ew((uint32_t)_i, op, rows, ew_sizes[c], false, true);
                if (op <= EW_MUL)
                    run_ew((uint32_t)_i, op, rows, ew_sizes[c], true, false);
            }
}
END_TEST

/* More workgroups than one grid dimension allows: the 2-D grid path. */
START_TEST(test_fill_large)
{
    vp_device *dev = vt_device((uint32_t)_i);
    const vp_device_info *d = vt_device_info((uint32_t)_i);
    uint64_t n = (uint64_t)d->max_wg_count[0] * 256 + 1000;
    if (n * 4 > d->max_storage_range) {
        vt_skip("test_fill_large", d->name, "the 2-D grid needs a buffer above maxStorageBufferRange");
        return;
    }
    vp_tensor *t = vt_tensor(dev, "big", 1, (int64_t[]){(int64_t)n}, NULL);
    vp_cmd *cmd;
    vt_ok(vp_cmd_create(dev, &cmd));
    vt_ok(vp_cmd_begin(cmd));
    vt_ok(vp_op_fill(cmd, t, 3.0f));
    vt_ok(vp_cmd_submit(cmd));
    float *got = vt_download(t);
    uint64_t bad = 0;
    for (uint64_t i = 0; i < n; i++)
        bad += got[i] != 3.0f;
    ck_assert_msg(bad == 0, "%llu of %llu elements not filled", (unsigned long long)bad,
                  (unsigned long long)n);
    free(got);
    vp_cmd_destroy(cmd);
    vp_tensor_destroy(t);
}
END_TEST

START_TEST(test_elementwise_errors)
{
    vp_device *dev = vt_device((uint32_t)_i);
    vp_tensor *a = vt_tensor(dev, "a", 2, (int64_t[]){3, 4}, NULL);
    vp_tensor *b = vt_tensor(dev, "bias", 1, (int64_t[]){3}, NULL);
    vp_tensor *o = vt_tensor(dev, "o", 2, (int64_t[]){4, 3}, NULL);
    vp_tensor *i;
    vt_ok(vp_tensor_create(dev, VP_I32, 2, (int64_t[]){3, 4}, "idx", &i));
    vp_cmd *cmd;
    vt_ok(vp_cmd_create(dev, &cmd));
    vt_ok(vp_cmd_begin(cmd));
    ck_assert_int_eq(vp_op_add(cmd, a, b, a), VP_ERR_SHAPE);
    ck_assert_str_eq(vp_error_last(), "add: bias (3) does not broadcast to a (3, 4): it must "
                                      "have the shape of a's trailing dimensions");
    ck_assert_int_eq(vp_op_scale(cmd, a, 2.0f, o), VP_ERR_SHAPE);
    ck_assert_str_eq(vp_error_last(), "scale: a (3, 4) and o (4, 3) must have the same shape");
    ck_assert_int_eq(vp_op_mul(cmd, a, i, a), VP_ERR_UNSUPPORTED);
    ck_assert_str_eq(vp_error_last(), "mul: tensor idx is i32; this op takes f32");
    vt_ok(vp_cmd_submit(cmd));
    vp_cmd_destroy(cmd);
    vp_tensor_destroy(a);
    vp_tensor_destroy(b);
    vp_tensor_destroy(o);
    vp_tensor_destroy(i);
}
END_TEST

int main(void)
{
    Suite *s = suite_create("ops");
    TCase *tc = vt_tcase("matmul");
    vt_add_per_device(tc, test_matmul, NULL);
    vt_add_per_device(tc, test_matmul_shapes, NULL);
    vt_add_per_device(tc, test_matmul_errors, NULL);
    vt_add_per_device(tc, test_gemm_bias_acc, NULL);
    vt_add_per_device(tc, test_gemm_rowsum, NULL);
    suite_add_tcase(s, tc);
    tc = vt_tcase("elementwise");
    vt_add_per_device(tc, test_elementwise, NULL);
    vt_add_per_device(tc, test_fill_large, NULL);
    vt_add_per_device(tc, test_elementwise_errors, NULL);
    vt_add_per_device(tc, test_elementwise_acc, NULL);
    vt_add_per_device(tc, test_bool_mask, NULL);
    suite_add_tcase(s, tc);
    return vt_run(s);
}
