/*
 * Batched matmul with either operand transposed (matmul.comp), and the
 * naive one-output-per-invocation kernel (matmul_naive.comp) that the
 * benchmark measures it against. Tile sizes and the tiling (registers,
 * subgroup, shared memory: matmul.comp says why each) are specialization
 * constants chosen per device here.
 */
#include <stdio.h>

#include "ops/ops.h"
#include "ops/util.h"

/* bindings: a, b, c (written, also read when accumulating), bias (or a
 * stand-in never read); push: M, N, K, sa, sb, sc */
static const vp_kernel k_tiled = {"matmul", 4, 0x4, 24, NULL, 0};
static const vp_kernel k_subgroup = {"matmul_subgroup", 5, 0x4 | 0x10, 24, NULL, 0};

bool vp_matmul_subgroup_ok(const vp_device_info *d)
{
    return d->feat.subgroup_shuffle && d->feat.subgroup_size_control && d->subgroup_size &&
           d->subgroup_min == d->subgroup_max && d->subgroup_size == d->subgroup_min;
}
static const vp_kernel k_naive = {"matmul_naive", 3, 0x4, 24, NULL, 0};

vp_matmul_cfg vp_matmul_default_cfg(const vp_device_info *d)
{
    if (d->type == VK_PHYSICAL_DEVICE_TYPE_CPU) {
        uint32_t lanes = d->subgroup_size ? d->subgroup_size : 8;
        /* lavapipe: one subgroup (one SIMD vector) per workgroup computes a
         * 32 x (lanes*4) block and shuffles A rows between lanes. 64x4
         * measured ~7% faster at 512^3 but takes twice as long (~0.5 s) to
         * compile per pipeline variant; 32x4 compiles in ~0.2-0.3 s. */
        if (vp_matmul_subgroup_ok(d))
            return (vp_matmul_cfg){VP_MATMUL_TILED, lanes, 1, 32, 4, false, VP_MATMUL_SUBGROUP, 0};
        /* Subgroup size not fixed, or no shuffles: every lane loads its own
         * A rows. */
        return (vp_matmul_cfg){VP_MATMUL_TILED, lanes, 1, 16, 16, false, VP_MATMUL_REGISTERS, 0};
    }
    /* GPUs: 64x64 blocks, K steps of 16 staged in shared memory (8 KiB),
     * 256 invocations with 4x4 outputs each (128 with 8x4 where 256 is over
     * the limit; Vulkan guarantees 128). */
    if (d->max_wg_invocations < 256)
        return (vp_matmul_cfg){VP_MATMUL_TILED, 16, 8, 8, 4, false, VP_MATMUL_SHARED, 16};
    return (vp_matmul_cfg){VP_MATMUL_TILED, 16, 16, 4, 4, false, VP_MATMUL_SHARED, 16};
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

static vp_status gemm(vp_cmd *cmd, const vp_tensor *a, bool ta, const vp_tensor *b, bool tb,
                      const vp_tensor *bias, vp_tensor *c, bool accumulate, vp_tensor *rowsum,
                      bool rs_acc, const vp_matmul_cfg *cfg);

vp_status vp_op_gemm(vp_cmd *cmd, const vp_tensor *a, bool ta, const vp_tensor *b, bool tb,
                     const vp_tensor *bias, vp_tensor *c, bool accumulate, const vp_matmul_cfg *cfg)
{
    return gemm(cmd, a, ta, b, tb, bias, c, accumulate, NULL, false, cfg);
}

bool vp_gemm_rowsum_ok(const vp_device_info *d)
{
    return vp_matmul_default_cfg(d).tiling == VP_MATMUL_SUBGROUP && vp_matmul_subgroup_ok(d) &&
           d->subgroup_size % 4 == 0;
}

vp_status vp_op_gemm_rowsum(vp_cmd *cmd, const vp_tensor *a, bool ta, const vp_tensor *b,
                            bool tb, vp_tensor *c, bool accumulate, vp_tensor *rowsum,
                            bool rs_acc, const vp_matmul_cfg *cfg)
{
    return gemm(cmd, a, ta, b, tb, NULL, c, accumulate, rowsum, rs_acc, cfg);
}

static vp_status gemm(vp_cmd *cmd, const vp_tensor *a, bool ta, const vp_tensor *b, bool tb,
                      const vp_tensor *bias, vp_tensor *c, bool accumulate, vp_tensor *rowsum,
                      bool rs_acc, const vp_matmul_cfg *cfg)
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
    vp_range r[5] = {vp_tensor_range(a), vp_tensor_range(b), vp_tensor_range(c),
                     vp_tensor_range(bias ? bias : a), vp_tensor_range(rowsum ? rowsum : c)};
    if (rowsum) {
        if ((st = vp_check_f32("matmul", rowsum)))
            return st;
        if (vp_tensor_nelem(rowsum) != M) {
            char s1[64];
            vp_shape_str(rowsum, s1, sizeof s1);
            return vp_error_set(VP_ERR_SHAPE, "matmul: row sums %s %s must have the %lld rows of "
                                "%s", rowsum->name, s1, (long long)M, c->name);
        }
        if (vp_ranges_overlap(r[4], r[0]) || vp_ranges_overlap(r[4], r[1]) ||
            vp_ranges_overlap(r[4], r[2]))
            return vp_error_set(VP_ERR_INVALID, "matmul: row sums %s overlap an operand",
                                rowsum->name);
    }
    if (vp_ranges_overlap(r[2], r[0]) || vp_ranges_overlap(r[2], r[1]) ||
        (bias && vp_ranges_overlap(r[2], r[3])))
        return vp_error_set(VP_ERR_INVALID, "matmul: output %s overlaps an input", c->name);
    if (bias) {
        if ((st = vp_check_f32("matmul", bias)))
            return st;
        if (vp_tensor_nelem(bias) != N || bias->shape[bias->ndim - 1] != N) {
            char sb[64];
            vp_shape_str(bias, sb, sizeof sb);
            return vp_error_set(VP_ERR_SHAPE, "matmul: bias %s %s does not match the %lld "
                                "output columns of %s", bias->name, sb, (long long)N, c->name);
        }
    }

    vp_device *dev = vp_cmd_device(cmd);
    const vp_device_info *d = vp_device_get_info(dev);
    if (bcnt > d->max_wg_count[2])
        return vp_error_set(VP_ERR_UNSUPPORTED, "matmul: %lld batches, the device dispatches at "
                            "most %u", (long long)bcnt, d->max_wg_count[2]);
    vp_matmul_cfg cf = cfg ? *cfg : vp_matmul_default_cfg(d);
    if (rowsum && (cf.kernel != VP_MATMUL_TILED || cf.tiling != VP_MATMUL_SUBGROUP || !ta ||
                   bcnt != 1 || d->subgroup_size % 4))
        return vp_error_set(VP_ERR_UNSUPPORTED, "matmul: row sums come only with the subgroup "
                            "tiling, a transposed A and one batch");
    uint32_t K = (uint32_t)ak;
    struct { uint32_t M, N, K, sa, sb, sc; } push = {
        (uint32_t)M, (uint32_t)N, K, ba == 1 ? 0 : (uint32_t)(M * K),
        bb == 1 ? 0 : (uint32_t)(K * N), (uint32_t)(M * N)};

    vp_pipeline *p;
    uint32_t gx, gy;
    if (cf.kernel == VP_MATMUL_NAIVE) {
        if (bias || accumulate)
            return vp_error_set(VP_ERR_INVALID, "matmul: the naive kernel has no bias or "
                                "accumulation (it is a benchmark baseline)");
        uint32_t spec[5] = {cf.wg_x, cf.wg_y, 1, ta, tb};
        st = vp_pipeline_get(dev, &k_naive, spec, 5, &p);
        gx = (uint32_t)((N + cf.wg_x - 1) / cf.wg_x);
        gy = (uint32_t)((M + cf.wg_y - 1) / cf.wg_y);
    } else {
        if (cf.tm == 0 || cf.tn == 0 || cf.tm % 4 || cf.tn % 4)
            return vp_error_set(VP_ERR_INVALID, "matmul: tile %ux%u, both must be multiples of 4",
                                cf.tm, cf.tn);
        uint32_t bk = cf.bk ? cf.bk : 16, lanes = d->subgroup_size;
        if (cf.tiling == VP_MATMUL_SUBGROUP && (!vp_matmul_subgroup_ok(d) || cf.wg_x % lanes))
            return vp_error_set(VP_ERR_UNSUPPORTED, "matmul: subgroup tiling needs subgroup "
                                "shuffles and a fixed subgroup size dividing local size x %u; "
                                "%s has size %u (%u..%u), shuffles %s", cf.wg_x, d->name, lanes,
                                d->subgroup_min, d->subgroup_max,
                                d->feat.subgroup_shuffle ? "yes" : "no");
        if (cf.tiling == VP_MATMUL_SHARED) {
            uint64_t bytes = ((uint64_t)cf.wg_y * cf.tm + (uint64_t)cf.wg_x * cf.tn) * bk * 4;
            if (bk % 4 || bytes > d->max_shared)
                return vp_error_set(VP_ERR_UNSUPPORTED, "matmul: shared tiles %ux%u, K step %u "
                                    "(must be a multiple of 4): %llu bytes of shared memory, %s "
                                    "has %u", cf.wg_y * cf.tm, cf.wg_x * cf.tn, bk,
                                    (unsigned long long)bytes, d->name, d->max_shared);
        }
        if (cf.tiling > VP_MATMUL_SHARED)
            return vp_error_set(VP_ERR_INVALID, "matmul: unknown tiling %d", (int)cf.tiling);
        /* Spec constant 7, bits: A, B, C move as vec4 along their contiguous
         * axis (K for A and B^T, M for A^T, N for B and C), and K % 4 == 0.
         * Only the subgroup tiling mixes vec4 and scalar operands; the
         * others take the vec4 path with all four bits or none. */
        bool v = !cf.no_vec4;
        uint32_t vec4 = (v && (ta ? M : K) % 4 == 0 ? 1u : 0) |
                        (v && (tb ? K : N) % 4 == 0 ? 2u : 0) | (v && N % 4 == 0 ? 4u : 0) |
                        (K % 4 == 0 ? 8u : 0);
        if (cf.tiling != VP_MATMUL_SUBGROUP && vec4 != 15)
            vec4 = 0;
        uint32_t spec[15] = {cf.wg_x, cf.wg_y, 1, cf.tm, cf.tn, ta, tb, vec4, (uint32_t)cf.tiling,
                             cf.tiling == VP_MATMUL_SUBGROUP ? lanes : 8,
                             cf.tiling == VP_MATMUL_SHARED ? bk : 16, accumulate, bias != NULL,
                             rowsum != NULL, rs_acc};
        bool sg = cf.tiling == VP_MATMUL_SUBGROUP;
        st = vp_pipeline_get(dev, sg ? &k_subgroup : &k_tiled, spec, sg ? 15 : 13, &p);
        uint64_t cols = (uint64_t)cf.wg_x * cf.tn, rows = (uint64_t)cf.wg_y * cf.tm;
        gx = (uint32_t)(((uint64_t)N + cols - 1) / cols);
        gy = (uint32_t)(((uint64_t)M + rows - 1) / rows);
    }
    if (st)
        return st;
    return vp_cmd_dispatch(cmd, p, r, p->kernel->n_bindings, &push, sizeof push, gx, gy,
                           (uint32_t)bcnt);
}

vp_status vp_op_matmul_ex(vp_cmd *cmd, const vp_tensor *a, bool ta, const vp_tensor *b, bool tb,
                          vp_tensor *c, const vp_matmul_cfg *cfg)
{
    return vp_op_gemm(cmd, a, ta, b, tb, NULL, c, false, cfg);
}

vp_status vp_op_matmul(vp_cmd *cmd, const vp_tensor *a, bool ta, const vp_tensor *b, bool tb,
                       vp_tensor *c)
{
    return vp_op_gemm(cmd, a, ta, b, tb, NULL, c, false, NULL);
}
