/*
 * Layout ops: permute (layout_copy.comp, or layout_transpose.comp's tiles
 * when the innermost dimension moves), concat (layout_concat.comp), slice
 * and the backward of both (layout_copy.comp), and the gather of table rows
 * with its backward (layout_gather.comp, layout_gather_atomic.comp).
 *
 * Permutations are canonicalised before dispatch: size-1 dimensions are
 * dropped and dimensions that stay adjacent are merged, so (B, C, H, W) ->
 * (B, H, W, C) runs as the batched 2-D transpose (B, C, H*W) -> (B, H*W, C),
 * and a permutation that keeps the innermost dimension copies whole rows
 * (vec4s where it can). A transpose runs through 32x32 shared-memory tiles
 * on GPUs and 4x4 register blocks on CPU devices (measured on lavapipe,
 * (4, 1024, 768) -> (4, 768, 1024): blocks 1.75 GB/s, shared tiles 0.25,
 * the elementwise copy 0.33; see docs/ops.md).
 */
#include <stdio.h>
#include <string.h>

#include "ops/ops.h"
#include "ops/util.h"

/* bindings: src, dst (written, read when accumulating) */
static const vp_kernel k_copy = {"layout_copy", 2, 0x2, 76, NULL, 0};
static const vp_kernel k_transpose = {"layout_transpose", 2, 0x2, 60, NULL, 0};
/* bindings: x0..x6, y (written) */
static const vp_kernel k_concat = {"layout_concat", 8, 0x80, 60, NULL, 0};
/* bindings: table or dy, idx, y or dtable (written) */
static const vp_kernel k_gather = {"layout_gather", 3, 0x4, 16, NULL, 0};
static const vp_kernel k_gather_atomic = {"layout_gather_atomic", 3, 0x4, 16, NULL, 0};

#define TILE 32          /* layout_transpose.comp's tile edge */
#define TILED_MIN 16     /* GPUs: tiles when both tiled extents are this long */
#define CONCAT_MAX 7     /* inputs per layout_concat dispatch */
/* Deterministic gather backward: indices per chunk, one workgroup per row
 * (lavapipe, R 197, N 394, C 384: 13 ms with 32, 7.2 with 64, 9.6 with 128,
 * 9.2 with 256). */
#define GATHER_LOCAL 64
#define NO_WINDOW 4u

typedef struct copy_push {
    uint32_t n[4], ss[4], ds[4];
    uint32_t sbase, dbase, total, acc, wax, wstart, wlen;
} copy_push;

static void contiguous(const int64_t *n, uint32_t *st)
{
    int64_t s = 1;
    for (int i = 3; i >= 0; i--) {
        st[i] = (uint32_t)s;
        s *= n[i];
    }
}

/* dst[dbase + c.ds] (+)= src[sbase + c.ss] over c in [0, n); see
 * layout_copy.comp for the window. Moves vec4s where the innermost
 * dimension is contiguous on both sides and everything else is a multiple
 * of 4 (on lavapipe every load is a per-lane loop, so that is 4x fewer). */
static vp_status copy4(vp_cmd *cmd, const vp_tensor *src, vp_tensor *dst, const int64_t *n,
                       const uint32_t *ss, const uint32_t *ds, uint32_t sbase, uint32_t dbase,
                       bool acc, uint32_t wax, uint32_t wstart, uint32_t wlen)
{
    bool vec = n[3] % 4 == 0 && ss[3] == 1 && ds[3] == 1 && sbase % 4 == 0 && dbase % 4 == 0 &&
               (wax != 3 || (wstart % 4 == 0 && wlen % 4 == 0));
    for (int i = 0; i < 3; i++)
        vec = vec && ss[i] % 4 == 0 && ds[i] % 4 == 0;
    uint32_t v = vec ? 4 : 1;
    copy_push push = {.sbase = sbase / v, .dbase = dbase / v, .total = 1, .acc = acc,
                      .wax = wax, .wstart = wax == 3 ? wstart / v : wstart,
                      .wlen = wax == 3 ? wlen / v : wlen};
    for (int i = 0; i < 4; i++) {
        push.n[i] = (uint32_t)n[i] / (i == 3 ? v : 1);
        push.ss[i] = i == 3 ? ss[i] : ss[i] / v;
        push.ds[i] = i == 3 ? ds[i] : ds[i] / v;
        push.total *= push.n[i];
    }
    vp_range r[2] = {vp_tensor_range(src), vp_tensor_range(dst)};
    return vp_dispatch_flat(cmd, &k_copy, &v, 1, r, &push, push.total);
}

static vp_status overlap_error(const char *op, const vp_tensor *out, const vp_tensor *in)
{
    return vp_error_set(VP_ERR_INVALID, "%s: output %s overlaps the input %s", op, out->name,
                        in->name);
}

/* Normalises a possibly negative axis of t. */
static vp_status axis_of(const char *op, const vp_tensor *t, int axis, int *out)
{
    if (axis < -t->ndim || axis >= t->ndim) {
        char s[64];
        vp_shape_str(t, s, sizeof s);
        return vp_error_set(VP_ERR_SHAPE, "%s: axis %d is out of range for %s %s", op, axis,
                            t->name, s);
    }
    *out = axis < 0 ? axis + t->ndim : axis;
    return VP_OK;
}

/* Products of the dimensions before and after axis. */
static void split_axis(const vp_tensor *t, int axis, int64_t *outer, int64_t *inner)
{
    *outer = *inner = 1;
    for (int i = 0; i < axis; i++)
        *outer *= t->shape[i];
    for (int i = axis + 1; i < t->ndim; i++)
        *inner *= t->shape[i];
}

/* a and b have the same rank and agree on every dimension but axis. */
static vp_status same_but_axis(const char *op, const vp_tensor *a, const vp_tensor *b, int axis)
{
    bool ok = a->ndim == b->ndim;
    for (int i = 0; ok && i < a->ndim; i++)
        ok = i == axis || a->shape[i] == b->shape[i];
    if (ok)
        return VP_OK;
    char sa[64], sb[64];
    vp_shape_str(a, sa, sizeof sa);
    vp_shape_str(b, sb, sizeof sb);
    return vp_error_set(VP_ERR_SHAPE, "%s: %s %s and %s %s differ outside axis %d", op, a->name,
                        sa, b->name, sb, axis);
}

/* ---- permute ----------------------------------------------------------- */

/* to.shape[i] must be from.shape[perm[i]]. */
static vp_status check_perm(const char *op, const vp_tensor *from, const int *perm,
                            const vp_tensor *to)
{
    vp_status st = vp_check_f32(op, from);
    if (!st)
        st = vp_check_f32(op, to);
    if (st)
        return st;
    char sf[64], stt[64], sp[64] = "(", sw[64] = "(";
    vp_shape_str(from, sf, sizeof sf);
    vp_shape_str(to, stt, sizeof stt);
    if (from->ndim != to->ndim)
        return vp_error_set(VP_ERR_SHAPE, "%s: %s %s and %s %s differ in the number of "
                            "dimensions", op, from->name, sf, to->name, stt);
    int nd = from->ndim;
    bool seen[VP_MAX_DIMS] = {false}, ok = true;
    for (int i = 0; i < nd; i++) {
        size_t l = strlen(sp);
        snprintf(sp + l, sizeof sp - l, "%s%d", i ? ", " : "", perm[i]);
        if (perm[i] < 0 || perm[i] >= nd || seen[perm[i]])
            ok = false;
        else
            seen[perm[i]] = true;
    }
    strcat(sp, ")");
    if (!ok)
        return vp_error_set(VP_ERR_SHAPE, "%s: perm %s is not a permutation of 0..%d", op, sp,
                            nd - 1);
    ok = true;
    for (int i = 0; i < nd; i++) {
        size_t l = strlen(sw);
        snprintf(sw + l, sizeof sw - l, "%s%lld", i ? ", " : "",
                 (long long)from->shape[perm[i]]);
        ok = ok && to->shape[i] == from->shape[perm[i]];
    }
    strcat(sw, ")");
    if (!ok)
        return vp_error_set(VP_ERR_SHAPE, "%s: %s %s permuted by %s is %s, not %s %s", op,
                            from->name, sf, sp, sw, to->name, stt);
    return VP_OK;
}

static const char *const permute_kernel_name[] = {"auto", "copy", "tiles", "blocks"};

/* dst (+)= src permuted (dst.shape[i] = src.shape[perm[i]]), shapes
 * checked; op names the caller in errors. */
static vp_status permute_run(vp_cmd *cmd, const char *op, const vp_tensor *src, const int *perm,
                             vp_tensor *dst, bool acc, vp_permute_kernel kernel)
{
    if ((unsigned)kernel > VP_PERMUTE_BLOCKS)
        return vp_error_set(VP_ERR_INVALID, "%s: unknown kernel %d", op, (int)kernel);
    /* Canonical form: dst's dimensions in order, each with its source
     * stride; size-1 dimensions dropped, runs contiguous in src merged;
     * right-aligned in 4 dimensions. */
    int64_t xs[VP_MAX_DIMS], n[4], s = 1, cn[4], cs[4];
    for (int i = src->ndim - 1; i >= 0; i--) {
        xs[i] = s;
        s *= src->shape[i];
    }
    int nd = 0;
    for (int i = 0; i < src->ndim; i++) {
        int64_t size = src->shape[perm[i]], st = xs[perm[i]];
        if (size == 1)
            continue;
        if (nd && cs[nd - 1] == st * size) {
            cn[nd - 1] *= size;
            cs[nd - 1] = st;
        } else {
            cn[nd] = size;
            cs[nd++] = st;
        }
    }
    uint32_t ss[4], ds[4];
    for (int i = 0; i < 4; i++) {
        int j = i - (4 - nd);
        n[i] = j >= 0 ? cn[j] : 1;
        ss[i] = j >= 0 ? (uint32_t)cs[j] : 0;
    }
    contiguous(n, ds);

    /* Where the innermost dimension moves, x is contiguous along y's
     * dimension q (the innermost of x's dimensions longer than 1). */
    int q = 0;
    while (q < 3 && ss[q] != 1)
        q++;
    bool moves = ss[3] != 1 && q < 3;
    int o1 = q == 0 ? 1 : 0, o2 = q == 2 ? 1 : 2;
    const vp_device_info *d = vp_device_get_info(vp_cmd_device(cmd));
    bool blocks_ok = moves && n[q] % 4 == 0 && n[3] % 4 == 0 && ss[3] % 4 == 0 &&
                     ss[o1] % 4 == 0 && ss[o2] % 4 == 0;
    uint64_t gx = (uint64_t)(n[3] + TILE - 1) / TILE, gy = (uint64_t)(n[q] + TILE - 1) / TILE;
    uint64_t gz = (uint64_t)(n[o1] * n[o2]);
    uint32_t rows = d->max_wg_invocations >= TILE * 8 ? 8 : d->max_wg_invocations / TILE;
    bool tiles_ok = moves && gx <= d->max_wg_count[0] && gy <= d->max_wg_count[1] &&
                    gz <= d->max_wg_count[2] && rows >= 1;
    if (kernel == VP_PERMUTE_AUTO) {
        if (d->type == VK_PHYSICAL_DEVICE_TYPE_CPU)
            kernel = blocks_ok ? VP_PERMUTE_BLOCKS : VP_PERMUTE_COPY;
        else
            kernel = tiles_ok && n[3] >= TILED_MIN && n[q] >= TILED_MIN ? VP_PERMUTE_TILES
                                                                      : VP_PERMUTE_COPY;
    }
    if ((kernel == VP_PERMUTE_TILES && !tiles_ok) || (kernel == VP_PERMUTE_BLOCKS && !blocks_ok)) {
        char sx[64];
        vp_shape_str(src, sx, sizeof sx);
        return vp_error_set(VP_ERR_UNSUPPORTED, "%s: the %s kernel cannot permute %s %s: %s", op,
                            permute_kernel_name[kernel], src->name, sx,
                            !moves ? "the innermost dimension stays"
                            : kernel == VP_PERMUTE_TILES ? "too many tiles for one dispatch"
                            : "the transposed extents and the strides must be multiples of 4");
    }
    if (kernel == VP_PERMUTE_COPY)
        return copy4(cmd, src, dst, n, ss, ds, 0, 0, acc, NO_WINDOW, 0, 0);

    struct { uint32_t n[4], ss[4], ds[4], q, acc, total; } push;
    for (int i = 0; i < 4; i++) {
        push.n[i] = (uint32_t)n[i];
        push.ss[i] = ss[i];
        push.ds[i] = ds[i];
    }
    push.q = (uint32_t)q;
    push.acc = acc;
    push.total = (uint32_t)(n[0] * n[1] * n[2] * n[3] / 16);
    vp_range r[2] = {vp_tensor_range(src), vp_tensor_range(dst)};
    if (kernel == VP_PERMUTE_BLOCKS) {
        uint32_t mode = 1;
        return vp_dispatch_flat(cmd, &k_transpose, &mode, 1, r, &push, push.total);
    }
    uint32_t spec[4] = {TILE, rows, 1, 0};
    vp_pipeline *p;
    vp_status st = vp_pipeline_get(vp_cmd_device(cmd), &k_transpose, spec, 4, &p);
    if (st)
        return st;
    return vp_cmd_dispatch(cmd, p, r, 2, &push, sizeof push, (uint32_t)gx, (uint32_t)gy,
                           (uint32_t)gz);
}

vp_status vp_op_permute_ex(vp_cmd *cmd, const vp_tensor *x, const int *perm, vp_tensor *y,
                           vp_permute_kernel kernel)
{
    vp_status st = check_perm("permute", x, perm, y);
    if (st)
        return st;
    if (vp_ranges_overlap(vp_tensor_range(y), vp_tensor_range(x)))
        return overlap_error("permute", y, x);
    return permute_run(cmd, "permute", x, perm, y, false, kernel);
}

vp_status vp_op_permute(vp_cmd *cmd, const vp_tensor *x, const int *perm, vp_tensor *y)
{
    return vp_op_permute_ex(cmd, x, perm, y, VP_PERMUTE_AUTO);
}

vp_status vp_op_permute_backward_ex(vp_cmd *cmd, const vp_tensor *dy, const int *perm,
                                    vp_tensor *dx, bool accumulate, vp_permute_kernel kernel)
{
    vp_status st = check_perm("permute_backward", dx, perm, dy);
    if (st)
        return st;
    if (vp_ranges_overlap(vp_tensor_range(dx), vp_tensor_range(dy)))
        return overlap_error("permute_backward", dx, dy);
    int inv[VP_MAX_DIMS];
    for (int i = 0; i < dx->ndim; i++)
        inv[perm[i]] = i;
    return permute_run(cmd, "permute_backward", dy, inv, dx, accumulate, kernel);
}

vp_status vp_op_permute_backward(vp_cmd *cmd, const vp_tensor *dy, const int *perm, vp_tensor *dx,
                                 bool accumulate)
{
    return vp_op_permute_backward_ex(cmd, dy, perm, dx, accumulate, VP_PERMUTE_AUTO);
}

/* ---- slice ------------------------------------------------------------- */

/* part is whole[..., start:start+len, ...] along axis (len = part's extent). */
static vp_status check_slice(const char *op, const vp_tensor *whole, const vp_tensor *part,
                             int *axis, int64_t start)
{
    vp_status st = vp_check_f32(op, whole);
    if (!st)
        st = vp_check_f32(op, part);
    if (!st)
        st = axis_of(op, whole, *axis, axis);
    if (!st)
        st = same_but_axis(op, whole, part, *axis);
    if (st)
        return st;
    if (start < 0 || start + part->shape[*axis] > whole->shape[*axis]) {
        char sw[64], sp[64];
        vp_shape_str(whole, sw, sizeof sw);
        vp_shape_str(part, sp, sizeof sp);
        return vp_error_set(VP_ERR_SHAPE, "%s: %s %s does not fit in %s %s at start %lld along "
                            "axis %d", op, part->name, sp, whole->name, sw, (long long)start,
                            *axis);
    }
    if (vp_ranges_overlap(vp_tensor_range(whole), vp_tensor_range(part)))
        return vp_error_set(VP_ERR_INVALID, "%s: %s and %s overlap", op, whole->name, part->name);
    return VP_OK;
}

/* part (+)= whole[..., start:start+len, ...]: slice and concat's backward. */
static vp_status slice_run(vp_cmd *cmd, const vp_tensor *whole, int axis, int64_t start,
                           vp_tensor *part, bool acc)
{
    int64_t outer, inner, len = part->shape[axis], wlen = whole->shape[axis];
    split_axis(whole, axis, &outer, &inner);
    int64_t n[4] = {1, outer, len, inner};
    uint32_t ss[4] = {0, (uint32_t)(wlen * inner), (uint32_t)inner, 1}, ds[4];
    contiguous(n, ds);
    return copy4(cmd, whole, part, n, ss, ds, (uint32_t)(start * inner), 0, acc, NO_WINDOW, 0, 0);
}

vp_status vp_op_slice(vp_cmd *cmd, const vp_tensor *x, int axis, int64_t start, vp_tensor *y)
{
    vp_status st = check_slice("slice", x, y, &axis, start);
    return st ? st : slice_run(cmd, x, axis, start, y, false);
}

vp_status vp_op_slice_backward(vp_cmd *cmd, const vp_tensor *dy, int axis, int64_t start,
                               vp_tensor *dx, bool accumulate)
{
    vp_status st = check_slice("slice_backward", dx, dy, &axis, start);
    if (st)
        return st;
    int64_t outer, inner, len = dy->shape[axis], xlen = dx->shape[axis];
    split_axis(dx, axis, &outer, &inner);
    uint32_t ss[4], ds[4];
    if (accumulate) { /* add into the region only */
        int64_t n[4] = {1, outer, len, inner};
        uint32_t dst[4] = {0, (uint32_t)(xlen * inner), (uint32_t)inner, 1};
        contiguous(n, ss);
        return copy4(cmd, dy, dx, n, ss, dst, 0, (uint32_t)(start * inner), true, NO_WINDOW, 0,
                     0);
    }
    /* every element of dx: dy inside the window along the axis, else 0 */
    int64_t n[4] = {1, outer, xlen, inner};
    int64_t ndy[4] = {1, outer, len, inner};
    contiguous(n, ds);
    contiguous(ndy, ss);
    return copy4(cmd, dy, dx, n, ss, ds, 0, 0, false, 2, (uint32_t)start, (uint32_t)len);
}

/* ---- concat ------------------------------------------------------------ */

/* The parts (some may be NULL when backward) tile whole along axis. */
static vp_status check_concat(const char *op, const vp_tensor *const *parts, uint32_t n,
                              const vp_tensor *whole, int *axis)
{
    if (n == 0)
        return vp_error_set(VP_ERR_SHAPE, "%s: no inputs", op);
    vp_status st = vp_check_f32(op, whole);
    if (!st)
        st = axis_of(op, whole, *axis, axis);
    if (st)
        return st;
    int64_t total = 0;
    for (uint32_t k = 0; k < n; k++) {
        if (!parts[k])
            return vp_error_set(VP_ERR_INVALID, "%s: tensor %u is NULL", op, k);
        st = vp_check_f32(op, parts[k]);
        if (!st)
            st = same_but_axis(op, parts[k], whole, *axis);
        if (st)
            return st;
        if (vp_ranges_overlap(vp_tensor_range(parts[k]), vp_tensor_range(whole)))
            return vp_error_set(VP_ERR_INVALID, "%s: %s and %s overlap", op, parts[k]->name,
                                whole->name);
        total += parts[k]->shape[*axis];
    }
    if (total != whole->shape[*axis]) {
        char s[64];
        vp_shape_str(whole, s, sizeof s);
        return vp_error_set(VP_ERR_SHAPE, "%s: the extents along axis %d add up to %lld, %s %s "
                            "has %lld", op, *axis, (long long)total, whole->name, s,
                            (long long)whole->shape[*axis]);
    }
    return VP_OK;
}

vp_status vp_op_concat(vp_cmd *cmd, const vp_tensor *const *xs, uint32_t n, int axis,
                       vp_tensor *y)
{
    vp_status st = check_concat("concat", xs, n, y, &axis);
    if (st)
        return st;
    int64_t outer, inner, a0 = 0;
    split_axis(y, axis, &outer, &inner);
    for (uint32_t k0 = 0; k0 < n; k0 += CONCAT_MAX) {
        uint32_t m = n - k0 < CONCAT_MAX ? n - k0 : CONCAT_MAX;
        struct { uint32_t outer, inner, ylen, a0, alen, nin, total, off[8]; } push = {
            (uint32_t)outer, (uint32_t)inner, (uint32_t)y->shape[axis], (uint32_t)a0, 0, m, 0,
            {0}};
        uint32_t vec = inner % 4 == 0 ? 4 : 1; /* move vec4s along inner */
        push.inner /= vec;
        vp_range r[8];
        for (uint32_t j = 0; j < CONCAT_MAX; j++) /* unused slots repeat the first input */
            r[j] = vp_tensor_range(xs[k0 + (j < m ? j : 0)]);
        r[7] = vp_tensor_range(y);
        for (uint32_t j = 0; j < m; j++)
            push.off[j + 1] = push.off[j] + (uint32_t)xs[k0 + j]->shape[axis];
        push.alen = push.off[m];
        push.total = (uint32_t)outer * push.alen * push.inner;
        st = vp_dispatch_flat(cmd, &k_concat, &vec, 1, r, &push, push.total);
        if (st)
            return st;
        a0 += push.alen;
    }
    return VP_OK;
}

vp_status vp_op_concat_backward(vp_cmd *cmd, const vp_tensor *dy, int axis, const int64_t *lens,
                                vp_tensor *const *dxs, uint32_t n, bool accumulate)
{
    const char *op = "concat_backward";
    if (n == 0)
        return vp_error_set(VP_ERR_SHAPE, "%s: no inputs", op);
    vp_status st = vp_check_f32(op, dy);
    if (!st)
        st = axis_of(op, dy, axis, &axis);
    if (st)
        return st;
    int64_t total = 0;
    for (uint32_t k = 0; k < n; k++) {
        if (lens[k] < 1)
            return vp_error_set(VP_ERR_SHAPE, "%s: extent %lld of input %u along axis %d", op,
                                (long long)lens[k], k, axis);
        if (dxs[k] && dxs[k]->ndim == dy->ndim && dxs[k]->shape[axis] != lens[k]) {
            char s[64];
            vp_shape_str(dxs[k], s, sizeof s);
            return vp_error_set(VP_ERR_SHAPE, "%s: %s %s has extent %lld along axis %d, the "
                                "input had %lld", op, dxs[k]->name, s,
                                (long long)dxs[k]->shape[axis], axis, (long long)lens[k]);
        }
        total += lens[k];
    }
    if (total != dy->shape[axis]) {
        char s[64];
        vp_shape_str(dy, s, sizeof s);
        return vp_error_set(VP_ERR_SHAPE, "%s: the extents along axis %d add up to %lld, %s %s "
                            "has %lld", op, axis, (long long)total, dy->name, s,
                            (long long)dy->shape[axis]);
    }
    int64_t a0 = 0;
    for (uint32_t k = 0; k < n; a0 += lens[k], k++) {
        if (!dxs[k])
            continue;
        if ((st = check_slice(op, dy, dxs[k], &axis, a0)))
            return st;
    }
    a0 = 0;
    for (uint32_t k = 0; k < n; a0 += lens[k], k++)
        if (dxs[k] && (st = slice_run(cmd, dy, axis, a0, dxs[k], accumulate)))
            return st;
    return VP_OK;
}

/* ---- gather rows ------------------------------------------------------- */

static vp_status check_gather(const char *op, const vp_tensor *table, const vp_tensor *idx,
                              const vp_tensor *rows, const char *tname, const char *rname)
{
    vp_status st = vp_check_f32(op, table);
    if (!st)
        st = vp_check_i32(op, idx);
    if (!st)
        st = vp_check_f32(op, rows);
    if (st)
        return st;
    char s1[64], s2[64], s3[64];
    vp_shape_str(table, s1, sizeof s1);
    vp_shape_str(idx, s2, sizeof s2);
    vp_shape_str(rows, s3, sizeof s3);
    if (table->ndim != 2)
        return vp_error_set(VP_ERR_SHAPE, "%s: %s %s must be 2-D (R, C)", op, table->name, s1);
    if (idx->ndim != 1)
        return vp_error_set(VP_ERR_SHAPE, "%s: %s %s must be 1-D (N)", op, idx->name, s2);
    if (rows->ndim != 2 || rows->shape[0] != idx->shape[0] || rows->shape[1] != table->shape[1])
        return vp_error_set(VP_ERR_SHAPE, "%s: %s %s must be (%lld, %lld) for %s %s and %s %s",
                            op, rows->name, s3, (long long)idx->shape[0],
                            (long long)table->shape[1], tname, s1, rname, s2);
    if (vp_ranges_overlap(vp_tensor_range(table), vp_tensor_range(rows)) ||
        vp_ranges_overlap(vp_tensor_range(idx), vp_tensor_range(rows)) ||
        vp_ranges_overlap(vp_tensor_range(idx), vp_tensor_range(table)))
        return vp_error_set(VP_ERR_INVALID, "%s: %s, %s and %s must not overlap", op,
                            table->name, idx->name, rows->name);
    return VP_OK;
}

vp_status vp_op_gather_rows(vp_cmd *cmd, const vp_tensor *table, const vp_tensor *idx,
                            vp_tensor *y)
{
    vp_status st = check_gather("gather_rows", table, idx, y, "table", "idx");
    if (st)
        return st;
    struct { uint32_t R, C, N, acc; } push = {(uint32_t)table->shape[0],
                                              (uint32_t)table->shape[1],
                                              (uint32_t)idx->shape[0], 0};
    vp_range r[3] = {vp_tensor_range(table), vp_tensor_range(idx), vp_tensor_range(y)};
    uint32_t mode = 0;
    return vp_dispatch_flat(cmd, &k_gather, &mode, 1, r, &push, push.N * push.C);
}

vp_status vp_op_row_map(vp_cmd *cmd, const vp_tensor *x, const vp_tensor *idx, vp_tensor *y,
                        bool accumulate)
{
    const char *op = "row_map";
    vp_status st = vp_check_f32(op, x);
    if (!st)
        st = vp_check_i32(op, idx);
    if (!st)
        st = vp_check_f32(op, y);
    if (st)
        return st;
    int64_t C = x->shape[x->ndim - 1], N = vp_tensor_nelem(idx);
    if (y->shape[y->ndim - 1] != C || vp_tensor_nelem(y) != N * C) {
        char sx[64], si[64], sy[64];
        vp_shape_str(x, sx, sizeof sx);
        vp_shape_str(idx, si, sizeof si);
        vp_shape_str(y, sy, sizeof sy);
        return vp_error_set(VP_ERR_SHAPE, "row_map: %s %s must hold %lld rows of %lld (the last "
                            "dimension of %s %s, one row per entry of %s %s)", y->name, sy,
                            (long long)N, (long long)C, x->name, sx, idx->name, si);
    }
    st = vp_check_no_overlap(op, &y, 1, (const vp_tensor *[]){x, idx}, 2);
    if (st)
        return st;
    struct { uint32_t R, C, N, acc; } push = {(uint32_t)(vp_tensor_nelem(x) / C), (uint32_t)C,
                                              (uint32_t)N, accumulate};
    vp_range r[3] = {vp_tensor_range(x), vp_tensor_range(idx), vp_tensor_range(y)};
    uint32_t mode = 2;
    return vp_dispatch_flat(cmd, &k_gather, &mode, 1, r, &push, push.N * push.C);
}

vp_status vp_op_gather_rows_backward_ex(vp_cmd *cmd, const vp_tensor *dy, const vp_tensor *idx,
                                        vp_tensor *dtable, bool accumulate, vp_scatter_mode mode)
{
    vp_status st = check_gather("gather_rows_backward", dtable, idx, dy, "dtable", "idx");
    if (st)
        return st;
    vp_device *dev = vp_cmd_device(cmd);
    const vp_device_info *d = vp_device_get_info(dev);
    struct { uint32_t R, C, N, acc; } push = {(uint32_t)dtable->shape[0],
                                              (uint32_t)dtable->shape[1],
                                              (uint32_t)idx->shape[0], accumulate};
    vp_range r[3] = {vp_tensor_range(dy), vp_tensor_range(idx), vp_tensor_range(dtable)};
    if (mode == VP_SCATTER_AUTO)
        mode = d->feat.float_atomic_add && (uint64_t)push.R * push.N > (1u << 24)
                   ? VP_SCATTER_ATOMIC : VP_SCATTER_DETERMINISTIC;
    if (mode == VP_SCATTER_ATOMIC) {
        if (!d->feat.float_atomic_add)
            return vp_error_set(VP_ERR_UNSUPPORTED, "gather_rows_backward: the atomic mode needs "
                                "float atomic add, which %s lacks", d->name);
        if (!accumulate && (st = vp_op_fill(cmd, dtable, 0.0f)))
            return st;
        return vp_dispatch_flat(cmd, &k_gather_atomic, NULL, 0, r, &push, push.N * push.C);
    }
    if (mode != VP_SCATTER_DETERMINISTIC)
        return vp_error_set(VP_ERR_INVALID, "gather_rows_backward: unknown mode %d", (int)mode);
    /* one workgroup of 64 per table row, the rows over x and y */
    uint32_t gx = push.R < d->max_wg_count[0] ? push.R : d->max_wg_count[0];
    uint32_t spec[4] = {GATHER_LOCAL, 1, 1, 1};
    vp_pipeline *p;
    if ((st = vp_pipeline_get(dev, &k_gather, spec, 4, &p)))
        return st;
    return vp_cmd_dispatch(cmd, p, r, 3, &push, sizeof push, gx, (push.R + gx - 1) / gx, 1);
}

vp_status vp_op_gather_rows_backward(vp_cmd *cmd, const vp_tensor *dy, const vp_tensor *idx,
                                     vp_tensor *dtable, bool accumulate)
{
    return vp_op_gather_rows_backward_ex(cmd, dy, idx, dtable, accumulate, VP_SCATTER_AUTO);
}
