/*
 * Elementwise ops: fill, scale (unary.comp), add and mul with trailing
 * broadcast (binary.comp). One invocation per element, or per four where
 * the counts allow (VEC4: one vec4 load is much cheaper than four scalar
 * ones on lavapipe, and no worse on GPUs), over a 2D grid of workgroups so
 * that any element count fits the device's limits.
 */
#include <string.h>

#include "ops/ops.h"
#include "ops/util.h"

static const vp_kernel k_fill = {"fill", 1, 0x1, 8, NULL, 0};
static const vp_kernel k_unary = {"unary", 2, 0x2, 8, NULL, 0};
static const vp_kernel k_binary = {"binary", 3, 0x4, 8, NULL, 0};

/* Spec constants after the local size: the op code and accumulate (fill
 * reads neither), VEC4. n elements; vec4: four per invocation (n % 4 == 0). */
static vp_status elementwise(vp_cmd *cmd, const vp_kernel *k, uint32_t op, bool acc, bool vec4,
                             const vp_range *bind, const void *push, uint32_t n)
{
    uint32_t extra[3] = {op, acc, vec4};
    return vp_dispatch_flat(cmd, k, extra, 3, bind, push, vec4 ? n / 4 : n);
}

vp_status vp_op_fill(vp_cmd *cmd, vp_tensor *out, float value)
{
    vp_status st = vp_check_f32("fill", out);
    if (st)
        return st;
    struct { uint32_t n; float value; } push = {(uint32_t)vp_tensor_nelem(out), value};
    vp_range r = vp_tensor_range(out);
    return elementwise(cmd, &k_fill, 0, false, push.n % 4 == 0, &r, &push, push.n);
}

vp_status vp_op_axpy(vp_cmd *cmd, const vp_tensor *x, float alpha, vp_tensor *y, bool accumulate)
{
    const char *name = accumulate ? "axpy" : "scale";
    vp_status st = vp_check_f32(name, x);
    if (!st)
        st = vp_check_f32(name, y);
    if (!st)
        st = vp_check_same_shape(name, x, y);
    if (st)
        return st;
    struct { uint32_t n; float alpha; } push = {(uint32_t)vp_tensor_nelem(x), alpha};
    vp_range r[2] = {vp_tensor_range(x), vp_tensor_range(y)};
    return elementwise(cmd, &k_unary, 0, accumulate, push.n % 4 == 0, r, &push, push.n);
}

vp_status vp_op_bool_to_additive(vp_cmd *cmd, const vp_tensor *m, vp_tensor *out)
{
    vp_status st = vp_check_f32("bool_to_additive", m);
    if (!st)
        st = vp_check_f32("bool_to_additive", out);
    if (!st)
        st = vp_check_same_shape("bool_to_additive", m, out);
    if (st)
        return st;
    struct { uint32_t n; float alpha; } push = {(uint32_t)vp_tensor_nelem(m), 0.0f};
    vp_range r[2] = {vp_tensor_range(m), vp_tensor_range(out)};
    return elementwise(cmd, &k_unary, 1, false, push.n % 4 == 0, r, &push, push.n);
}

vp_status vp_op_scale(vp_cmd *cmd, const vp_tensor *a, float alpha, vp_tensor *out)
{
    return vp_op_axpy(cmd, a, alpha, out, false);
}

vp_status vp_op_binary(vp_cmd *cmd, vp_binary_op op, const vp_tensor *a, const vp_tensor *b,
                       vp_tensor *out, bool accumulate)
{
    const char *name = op == VP_BIN_ADD ? "add" : op == VP_BIN_MUL ? "mul" : NULL;
    if (!name)
        return vp_error_set(VP_ERR_INVALID, "binary op %d does not exist", (int)op);
    vp_status st = vp_check_f32(name, a);
    if (!st)
        st = vp_check_f32(name, b);
    if (!st)
        st = vp_check_f32(name, out);
    if (!st)
        st = vp_check_same_shape(name, a, out);
    if (st)
        return st;
    /* b: a's shape, or a's trailing b->ndim dimensions. */
    bool ok = b->ndim <= a->ndim;
    for (int i = 0; ok && i < b->ndim; i++)
        ok = b->shape[b->ndim - 1 - i] == a->shape[a->ndim - 1 - i];
    if (!ok) {
        char sa[64], sb[64];
        vp_shape_str(a, sa, sizeof sa);
        vp_shape_str(b, sb, sizeof sb);
        return vp_error_set(VP_ERR_SHAPE, "%s: %s %s does not broadcast to %s %s: it must have "
                            "the shape of %s's trailing dimensions", name, b->name, sb, a->name,
                            sa, a->name);
    }
    vp_range ro = vp_tensor_range(out), rb = vp_tensor_range(b);
    if (vp_tensor_nelem(b) != vp_tensor_nelem(a) && vp_ranges_overlap(ro, rb))
        return vp_error_set(VP_ERR_INVALID, "%s: output %s overlaps the broadcast operand %s",
                            name, out->name, b->name);
    struct { uint32_t n, nb; } push = {(uint32_t)vp_tensor_nelem(a), (uint32_t)vp_tensor_nelem(b)};
    vp_range r[3] = {vp_tensor_range(a), rb, ro};
    bool vec4 = push.n % 4 == 0 && push.nb % 4 == 0;
    return elementwise(cmd, &k_binary, (uint32_t)op, accumulate, vec4, r, &push, push.n);
}

vp_status vp_op_add(vp_cmd *cmd, const vp_tensor *a, const vp_tensor *b, vp_tensor *out)
{
    return vp_op_binary(cmd, VP_BIN_ADD, a, b, out, false);
}

vp_status vp_op_mul(vp_cmd *cmd, const vp_tensor *a, const vp_tensor *b, vp_tensor *out)
{
    return vp_op_binary(cmd, VP_BIN_MUL, a, b, out, false);
}
