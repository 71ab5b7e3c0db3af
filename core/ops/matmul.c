/*
 * Batched matmul with either operand transposed (matmul.comp), and the
 * naive one-output-per-invocation kernel (matmul_naive.comp) that the
 * benchmark measures it against. Tile sizes are specialization constants
 * chosen per device here.
 */
#include <stdio.h>

#include "ops/ops.h"
#include "ops/util.h"

/* bindings: a, b, c (written); push: M, N, K, sa, sb, sc */
static const vp_kernel k_tiled = {"matmul", 3, 0x4, 24};
static const vp_kernel k_naive = {"matmul_naive", 3, 0x4, 24};

vp_matmul_cfg vp_matmul_default_cfg(const vp_device_info *d)
{
    if (d->type == VK_PHYSICAL_DEVICE_TYPE_CPU) {
        /* SIMD across local_size_x lanes; large tiles cut loads per FMA. */
        uint32_t lanes = d->subgroup_size ? d->subgroup_size : 8;
        return (vp_matmul_cfg){VP_MATMUL_TILED, lanes, 1, 16, 16, false};
    }
    /* GPUs: many invocations with a small register tile each. */
    return (vp_matmul_cfg){VP_MATMUL_TILED, 16, 8, 4, 4, false};
}

/* Product of the leading (batch) dimensions; matrix dims in *r, *c. */
static int64_t split(const vp_tensor *t, int64_t *r, int64_t *c)
{
    *r = t->ndim >= 2 ? t->shape[t->ndim - 2] : 1;
    *c = t->shape[t->ndim - 1];
    int64_t b = 1;
    for (int i = 0; i < t->ndim - 2; i++)
        b *= t->shape[i];
    return b;
}

/* a's leading dims broadcast to c's: equal to c's (left-padded with 1s) or
 * all 1. */
static bool batch_ok(const vp_tensor *x, const vp_tensor *c)
{
    int lx = x->ndim - 2, lc = c->ndim - 2;
    if (lx <= 0)
        return true;
    bool all_one = true, equal = lx <= lc;
    for (int i = 0; i < lx; i++) {
        all_one = all_one && x->shape[i] == 1;
        if (equal)
            equal = x->shape[i] == c->shape[lc - lx + i];
    }
    if (equal)
        for (int i = 0; i < lc - lx; i++)
            equal = equal && c->shape[i] == 1;
    return all_one || equal;
}

static vp_status shape_error(const vp_tensor *a, bool ta, const vp_tensor *b, bool tb,
                             const vp_tensor *c, const char *why)
{
    char sa[64], sb[64], sc[64];
    vp_shape_str(a, sa, sizeof sa);
    vp_shape_str(b, sb, sizeof sb);
    vp_shape_str(c, sc, sizeof sc);
    return vp_error_set(VP_ERR_SHAPE, "matmul: %s %s%s x %s %s%s -> %s %s: %s", a->name, sa,
                        ta ? "^T" : "", b->name, sb, tb ? "^T" : "", c->name, sc, why);
}

vp_status vp_op_matmul_ex(vp_cmd *cmd, const vp_tensor *a, bool ta, const vp_tensor *b, bool tb,
                          vp_tensor *c, const vp_matmul_cfg *cfg)
{
    vp_status st = vp_check_f32("matmul", a);
    if (!st)
        st = vp_check_f32("matmul", b);
    if (!st)
        st = vp_check_f32("matmul", c);
    if (st)
        return st;
    if (a->ndim < 2 || b->ndim < 2 || c->ndim < 2)
        return shape_error(a, ta, b, tb, c, "every operand needs at least 2 dimensions");
    int64_t ar, ac, br, bc, M, N;
    int64_t ba = split(a, &ar, &ac), bb = split(b, &br, &bc), bcnt = split(c, &M, &N);
    int64_t am = ta ? ac : ar, ak = ta ? ar : ac, bk = tb ? bc : br, bn = tb ? br : bc;
    if (ak != bk)
        return shape_error(a, ta, b, tb, c, "inner dimensions differ");
    if (am != M || bn != N)
        return shape_error(a, ta, b, tb, c, "output shape is wrong");
    if (!batch_ok(a, c) || !batch_ok(b, c) || (ba != 1 && ba != bcnt) || (bb != 1 && bb != bcnt))
        return shape_error(a, ta, b, tb, c, "batch dimensions do not broadcast");
    vp_range r[3] = {vp_tensor_range(a), vp_tensor_range(b), vp_tensor_range(c)};
    if (vp_ranges_overlap(r[2], r[0]) || vp_ranges_overlap(r[2], r[1]))
        return vp_error_set(VP_ERR_INVALID, "matmul: output %s overlaps an input", c->name);

    vp_device *dev = vp_cmd_device(cmd);
    const vp_device_info *d = vp_device_get_info(dev);
    if (bcnt > d->max_wg_count[2])
        return vp_error_set(VP_ERR_UNSUPPORTED, "matmul: %lld batches, the device dispatches at "
                            "most %u", (long long)bcnt, d->max_wg_count[2]);
    vp_matmul_cfg cf = cfg ? *cfg : vp_matmul_default_cfg(d);
    uint32_t K = (uint32_t)ak;
    struct { uint32_t M, N, K, sa, sb, sc; } push = {
        (uint32_t)M, (uint32_t)N, K, ba == 1 ? 0 : (uint32_t)(M * K),
        bb == 1 ? 0 : (uint32_t)(K * N), (uint32_t)(M * N)};

    vp_pipeline *p;
    uint32_t gx, gy;
    if (cf.kernel == VP_MATMUL_NAIVE) {
        uint32_t spec[5] = {cf.wg_x, cf.wg_y, 1, ta, tb};
        st = vp_pipeline_get(dev, &k_naive, spec, 5, &p);
        gx = (uint32_t)((N + cf.wg_x - 1) / cf.wg_x);
        gy = (uint32_t)((M + cf.wg_y - 1) / cf.wg_y);
    } else {
        if (cf.tm == 0 || cf.tn == 0 || cf.tm % 4 || cf.tn % 4)
            return vp_error_set(VP_ERR_INVALID, "matmul: tile %ux%u, both must be multiples of 4",
                                cf.tm, cf.tn);
        bool vec4 = !cf.no_vec4 && M % 4 == 0 && N % 4 == 0 && K % 4 == 0;
        uint32_t spec[8] = {cf.wg_x, cf.wg_y, 1, cf.tm, cf.tn, ta, tb, vec4};
        st = vp_pipeline_get(dev, &k_tiled, spec, 8, &p);
        uint64_t cols = (uint64_t)cf.wg_x * cf.tn, rows = (uint64_t)cf.wg_y * cf.tm;
        gx = (uint32_t)(((uint64_t)N + cols - 1) / cols);
        gy = (uint32_t)(((uint64_t)M + rows - 1) / rows);
    }
    if (st)
        return st;
    return vp_cmd_dispatch(cmd, p, r, 3, &push, sizeof push, gx, gy, (uint32_t)bcnt);
}

vp_status vp_op_matmul(vp_cmd *cmd, const vp_tensor *a, bool ta, const vp_tensor *b, bool tb,
                       vp_tensor *c)
{
    return vp_op_matmul_ex(cmd, a, ta, b, tb, c, NULL);
}
