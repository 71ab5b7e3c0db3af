/*
 * Multi-scale deformable attention: shape checks and dispatches of
 * shaders/msdeform_fwd.comp, msdeform_bwd.comp, msdeform_bwd_atomic.comp and
 * msdeform_bwd_value.comp (see msdeform.glsl for the layouts).
 */
#include <string.h>

#include "ops/ops.h"
#include "ops/util.h"

/* Must match Push in shaders/msdeform.glsl. */
typedef struct md_push {
    uint32_t B, S, Q, H, Dh, L, P, flags;
    uint32_t lv[VP_MSDEFORM_MAX_LEVELS][4]; /* H_l, W_l, start_l, first gather tile */
} md_push;
_Static_assert(sizeof(md_push) <= VP_MAX_PUSH, "msdeform push constants");

#define ACC_VALUE 1u
#define ACC_LOC 2u
#define ACC_ATTN 4u

static const vp_kernel k_fwd = {"msdeform_fwd", 4, 1u << 3, sizeof(md_push), NULL, 0};
static const vp_kernel k_bwd = {"msdeform_bwd", 6, 1u << 4 | 1u << 5, sizeof(md_push), NULL, 0};
static const vp_kernel k_bwd_atomic = {"msdeform_bwd_atomic", 7, 1u << 4 | 1u << 5 | 1u << 6,
                                       sizeof(md_push), NULL, 0};
static const vp_kernel k_bwd_value = {"msdeform_bwd_value", 4, 1u << 3, sizeof(md_push), NULL, 0};

/* Invocations per workgroup of the sample-parallel kernels, within the
 * device's limits. */
static uint32_t local_size(const vp_device_info *d, uint32_t want)
{
    uint32_t lim = d->max_wg_invocations < d->max_wg_size[0] ? d->max_wg_invocations
                                                              : d->max_wg_size[0];
    return want < lim ? want : lim;
}
#define LOCAL_SAMPLES 128u

/* The gather's positions per tile (msdeform_bwd_value.comp says why): a
 * whole level on CPUs, 64 on GPUs, or what cfg asks for. 2^30 is more than
 * any level holds (S < 2^30, vp_check_f32) and keeps the shader's tile
 * arithmetic within 32 bits. */
#define WHOLE_LEVEL (1u << 30)
static uint32_t gather_tile(const vp_device_info *d, const vp_msdeform_cfg *cfg)
{
    uint32_t t = cfg && cfg->gather_tile ? cfg->gather_tile
                 : d->type == VK_PHYSICAL_DEVICE_TYPE_CPU ? WHOLE_LEVEL : 64u;
    return t < WHOLE_LEVEL ? t : WHOLE_LEVEL;
}

static void shape_of(const vp_tensor *t, char *buf, size_t n) { vp_shape_str(t, buf, n); }

/* Checks shared by forward and backward; fills the push constants. */
static vp_status check_inputs(const char *op, const vp_tensor *value,
                              const vp_msdeform_levels *lv, const vp_tensor *loc,
                              const vp_tensor *attn, md_push *pc)
{
    vp_status st = vp_check_f32(op, value);
    if (!st)
        st = vp_check_f32(op, loc);
    if (!st)
        st = vp_check_f32(op, attn);
    if (st)
        return st;
    int n = lv ? lv->n : 0;
    if (n < 1 || n > VP_MSDEFORM_MAX_LEVELS)
        return vp_error_set(n < 1 ? VP_ERR_INVALID : VP_ERR_UNSUPPORTED,
                            "%s: %d levels; 1 to %d are supported", op, n,
                            VP_MSDEFORM_MAX_LEVELS);
    char sv[64], sl[64], sa[64];
    shape_of(value, sv, sizeof sv);
    shape_of(loc, sl, sizeof sl);
    shape_of(attn, sa, sizeof sa);
    if (value->ndim != 4)
        return vp_error_set(VP_ERR_SHAPE, "%s: %s %s must be (B, S, H, Dh)", op, value->name, sv);
    int64_t B = value->shape[0], S = value->shape[1], H = value->shape[2], Dh = value->shape[3];
    memset(pc, 0, sizeof *pc);
    for (int l = 0; l < n; l++) {
        int64_t hl = lv->shape[l][0], wl = lv->shape[l][1], s0 = lv->start[l];
        if (hl < 1 || wl < 1)
            return vp_error_set(VP_ERR_SHAPE, "%s: level %d has shape (%lld, %lld); H and W must "
                                "be at least 1", op, l, (long long)hl, (long long)wl);
        /* S < 2^30 (vp_check_f32), so the product cannot overflow */
        if (s0 < 0 || s0 > S || hl > S - s0 || wl > S - s0 || hl * wl > S - s0)
            return vp_error_set(VP_ERR_SHAPE, "%s: level %d of shape (%lld, %lld) at position "
                                "%lld does not fit the %lld positions of %s %s", op, l,
                                (long long)hl, (long long)wl, (long long)s0, (long long)S,
                                value->name, sv);
        pc->lv[l][0] = (uint32_t)hl;
        pc->lv[l][1] = (uint32_t)wl;
        pc->lv[l][2] = (uint32_t)s0;
    }
    if (loc->ndim != 4 || loc->shape[0] != B || loc->shape[2] != H || loc->shape[3] < 2 * n ||
        loc->shape[3] % (2 * n))
        return vp_error_set(VP_ERR_SHAPE, "%s: %s %s must be (B, Q, H, L*P*2) with B %lld, H %lld "
                            "and L %d from %s %s and the levels", op, loc->name, sl, (long long)B,
                            (long long)H, n, value->name, sv);
    int64_t Q = loc->shape[1], P = loc->shape[3] / (2 * n);
    if (!vp_shape_is(attn, 4, (int64_t[]){B, Q, H, n * P}))
        return vp_error_set(VP_ERR_SHAPE, "%s: %s %s must be (B, Q, H, L*P) = (%lld, %lld, %lld, "
                            "%lld) to match %s %s", op, attn->name, sa, (long long)B, (long long)Q,
                            (long long)H, (long long)(n * P), loc->name, sl);
    pc->B = (uint32_t)B;
    pc->S = (uint32_t)S;
    pc->Q = (uint32_t)Q;
    pc->H = (uint32_t)H;
    pc->Dh = (uint32_t)Dh;
    pc->L = (uint32_t)n;
    pc->P = (uint32_t)P;
    return VP_OK;
}

/* t must be (B, Q, H*Dh). */
static vp_status check_out(const char *op, const vp_tensor *t, const md_push *pc)
{
    vp_status st = vp_check_f32(op, t);
    if (st)
        return st;
    int64_t want[3] = {pc->B, pc->Q, (int64_t)pc->H * pc->Dh};
    if (vp_shape_is(t, 3, want))
        return VP_OK;
    char s[64];
    shape_of(t, s, sizeof s);
    return vp_error_set(VP_ERR_SHAPE, "%s: %s %s must be (B, Q, H*Dh) = (%lld, %lld, %lld)", op,
                        t->name, s, (long long)want[0], (long long)want[1], (long long)want[2]);
}

static uint32_t vec_of(const md_push *pc) { return pc->Dh % 4 == 0 ? 4 : 1; }

/* Spec constants: local size, VEC, and (the gather only) positions per
 * tile. */
static vp_status dispatch(vp_cmd *cmd, const vp_kernel *k, uint32_t local, uint32_t tp,
                          const md_push *pc, const vp_range *bind, uint32_t gx, uint32_t gy)
{
    vp_device *dev = vp_cmd_device(cmd);
    uint32_t spec[5] = {local, 1, 1, vec_of(pc), tp};
    vp_pipeline *p;
    vp_status st = vp_pipeline_get(dev, k, spec, 5, &p);
    if (st)
        return st;
    return vp_cmd_dispatch(cmd, p, bind, k->n_bindings, pc, sizeof *pc, gx, gy, 1);
}

vp_status vp_op_msdeform(vp_cmd *cmd, const vp_tensor *value, const vp_msdeform_levels *levels,
                         const vp_tensor *loc, const vp_tensor *attn, vp_tensor *out)
{
    const char *op = "msdeform";
    md_push pc;
    vp_status st = check_inputs(op, value, levels, loc, attn, &pc);
    if (!st)
        st = check_out(op, out, &pc);
    if (!st)
        st = vp_check_no_overlap(op, &out, 1, (const vp_tensor *[]){value, loc, attn}, 3);
    if (st)
        return st;
    const vp_device_info *d = vp_device_get_info(vp_cmd_device(cmd));
    uint32_t local = local_size(d, LOCAL_SAMPLES), gx, gy;
    vp_grid_1d(d, pc.B * pc.Q * pc.H * (pc.Dh / vec_of(&pc)), local, &gx, &gy);
    vp_range bind[4] = {vp_tensor_range(value), vp_tensor_range(loc), vp_tensor_range(attn),
                        vp_tensor_range(out)};
    return dispatch(cmd, &k_fwd, local, 0, &pc, bind, gx, gy);
}

vp_status vp_op_msdeform_backward(vp_cmd *cmd, const vp_tensor *value,
                                  const vp_msdeform_levels *levels, const vp_tensor *loc,
                                  const vp_tensor *attn, const vp_tensor *grad_out,
                                  vp_tensor *grad_value, bool acc_value, vp_tensor *grad_loc,
                                  bool acc_loc, vp_tensor *grad_attn, bool acc_attn)
{
    return vp_op_msdeform_backward_ex(cmd, value, levels, loc, attn, grad_out, grad_value,
                                      acc_value, grad_loc, acc_loc, grad_attn, acc_attn, NULL);
}

vp_status vp_op_msdeform_backward_ex(vp_cmd *cmd, const vp_tensor *value,
                                     const vp_msdeform_levels *levels, const vp_tensor *loc,
                                     const vp_tensor *attn, const vp_tensor *grad_out,
                                     vp_tensor *grad_value, bool acc_value, vp_tensor *grad_loc,
                                     bool acc_loc, vp_tensor *grad_attn, bool acc_attn,
                                     const vp_msdeform_cfg *cfg)
{
    const char *op = "msdeform_backward";
    md_push pc;
    vp_status st = check_inputs(op, value, levels, loc, attn, &pc);
    if (!st)
        st = check_out(op, grad_out, &pc);
    if (!st)
        st = vp_check_f32(op, grad_value);
    if (!st)
        st = vp_check_f32(op, grad_loc);
    if (!st)
        st = vp_check_f32(op, grad_attn);
    if (!st)
        st = vp_check_same_shape(op, grad_value, value);
    if (!st)
        st = vp_check_same_shape(op, grad_loc, loc);
    if (!st)
        st = vp_check_same_shape(op, grad_attn, attn);
    if (!st)
        st = vp_check_no_overlap(op, (vp_tensor *[]){grad_value, grad_loc, grad_attn}, 3,
                                 (const vp_tensor *[]){value, loc, attn, grad_out}, 4);
    if (st)
        return st;
    vp_device *dev = vp_cmd_device(cmd);
    const vp_device_info *d = vp_device_get_info(dev);
    vp_msdeform_scatter sc = cfg ? cfg->scatter : VP_MSDEFORM_AUTO;
    if (sc == VP_MSDEFORM_AUTO)
        sc = d->feat.float_atomic_add ? VP_MSDEFORM_ATOMIC : VP_MSDEFORM_GATHER;
    if (sc == VP_MSDEFORM_ATOMIC && !d->feat.float_atomic_add)
        return vp_error_set(VP_ERR_UNSUPPORTED, "%s: %s has no float atomic add "
                            "(shaderBufferFloat32AtomicAdd); use the gather scatter", op, d->name);
    if (sc != VP_MSDEFORM_ATOMIC && sc != VP_MSDEFORM_GATHER)
        return vp_error_set(VP_ERR_INVALID, "%s: unknown scatter %d", op, (int)sc);
    pc.flags = (acc_value ? ACC_VALUE : 0) | (acc_loc ? ACC_LOC : 0) | (acc_attn ? ACC_ATTN : 0);

    uint32_t local = local_size(d, LOCAL_SAMPLES), gx, gy;
    vp_grid_1d(d, pc.B * pc.Q * pc.H * pc.L * pc.P, local, &gx, &gy);
    vp_range bind[7] = {vp_tensor_range(value), vp_tensor_range(loc), vp_tensor_range(attn),
                        vp_tensor_range(grad_out), vp_tensor_range(grad_loc),
                        vp_tensor_range(grad_attn), vp_tensor_range(grad_value)};
    if (sc == VP_MSDEFORM_ATOMIC) {
        if (!acc_value && (st = vp_op_fill(cmd, grad_value, 0.0f)))
            return st;
        return dispatch(cmd, &k_bwd_atomic, local, 0, &pc, bind, gx, gy);
    }
    /* The gather: one workgroup per (b, h, tile, chunk of channel vectors),
     * one invocation per channel vector. */
    uint32_t tp = gather_tile(d, cfg), dv = pc.Dh / vec_of(&pc);
    uint32_t lanes = local_size(d, dv < 64 ? dv : 64);
    uint64_t tiles = 0;
    for (uint32_t l = 0; l < pc.L; l++) {
        pc.lv[l][3] = (uint32_t)tiles;
        tiles += ((uint64_t)pc.lv[l][0] * pc.lv[l][1] + tp - 1) / tp;
        if (tiles > UINT32_MAX)
            break;
    }
    uint64_t groups = (uint64_t)pc.B * pc.H * tiles * ((dv + lanes - 1) / lanes);
    if (groups > UINT32_MAX)
        return vp_error_set(VP_ERR_SHAPE, "%s: %s is too large for one dispatch", op,
                            value->name);
    if ((st = dispatch(cmd, &k_bwd, local, 0, &pc, bind, gx, gy)))
        return st;
    gx = groups < d->max_wg_count[0] ? (uint32_t)groups : d->max_wg_count[0];
    gy = (uint32_t)((groups + gx - 1) / gx);
    vp_range gbind[4] = {vp_tensor_range(loc), vp_tensor_range(attn), vp_tensor_range(grad_out),
                         vp_tensor_range(grad_value)};
    return dispatch(cmd, &k_bwd_value, lanes, tp, &pc, gbind, gx, gy);
}
