/*
 * Fused attention: shape checks and dispatches of shaders/attn_fwd.comp,
 * attn_bwd_q.comp, attn_bwd_kv.comp and attn_bwd_ds.comp, or on CPU
 * devices their subgroup forms (*_sg.comp); attn.glsl has the layouts.
 */
#include <stdio.h>

#include "ops/attention.h"
#include "ops/ops.h"
#include "ops/util.h"

/* Must match Push in shaders/attn.glsl. */
typedef struct attn_push {
    uint32_t B, Nq, Nk, H, M, Hb, flags;
    float scale;
} attn_push;

#define HAS_BIAS 1u
#define ACC_Q 2u
#define ACC_K 4u
#define ACC_V 8u

static const vp_kernel k_fwd = {"attn_fwd", 6, 1u << 4 | 1u << 5, sizeof(attn_push), NULL, 0};
static const vp_kernel k_fwd_sg = {"attn_fwd_sg", 6, 1u << 4 | 1u << 5, sizeof(attn_push), NULL,
                                   0};
static const vp_kernel k_bwd_q = {"attn_bwd_q", 8, 1u << 6 | 1u << 7, sizeof(attn_push), NULL, 0};
static const vp_kernel k_bwd_kv = {"attn_bwd_kv", 8, 1u << 6 | 1u << 7, sizeof(attn_push), NULL,
                                   0};
static const vp_kernel k_bwd_q_sg = {"attn_bwd_q_sg", 8, 1u << 6 | 1u << 7, sizeof(attn_push),
                                     NULL, 0};
static const vp_kernel k_bwd_kv_sg = {"attn_bwd_kv_sg", 8, 1u << 6 | 1u << 7, sizeof(attn_push),
                                      NULL, 0};
static const vp_kernel k_bwd_ds = {"attn_bwd_ds", 7, 1u << 6, sizeof(attn_push), NULL, 0};
static const vp_kernel k_bwd_ds_sg = {"attn_bwd_ds_sg", 7, 1u << 6, sizeof(attn_push), NULL, 0};

/* Rows per workgroup: each invocation does a whole row's work; at most
 * 64, at least 8 (lavapipe's SIMD width), else the rows of a group rounded
 * up to a power of two, so that short groups (Swin's 7 x 7 windows) do
 * not leave most of a workgroup idle. */
#define ATTN_LOCAL_MAX 64u
#define ATTN_LOCAL_MIN 8u

static vp_status bad_shape(const char *op, const vp_tensor *t, const char *want)
{
    char s[64];
    vp_shape_str(t, s, sizeof s);
    return vp_error_set(VP_ERR_SHAPE, "%s: %s %s must be %s", op, t->name, s, want);
}

/* Checks q, k, v, bias and heads; fills the push constants and Dh. */
static vp_status check_inputs(vp_cmd *cmd, const char *op, const vp_tensor *q, const vp_tensor *k,
                              const vp_tensor *v, const vp_tensor *bias, int heads, float scale,
                              attn_push *pc, uint32_t *dh)
{
    vp_status st = vp_check_f32(op, q);
    if (!st)
        st = vp_check_f32(op, k);
    if (!st)
        st = vp_check_f32(op, v);
    if (!st && bias)
        st = vp_check_f32(op, bias);
    if (st)
        return st;
    if (q->ndim != 3)
        return bad_shape(op, q, "(B, Nq, H*Dh)");
    int64_t B = q->shape[0], Nq = q->shape[1], D = q->shape[2];
    if (heads < 1 || D % heads)
        return vp_error_set(VP_ERR_SHAPE, "%s: %d heads do not divide the %lld channels of %s",
                            op, heads, (long long)D, q->name);
    int64_t Dh = D / heads;
    if (Dh > VP_ATTN_MAX_DH)
        return vp_error_set(VP_ERR_UNSUPPORTED, "%s: %lld channels per head; at most %d are "
                            "supported", op, (long long)Dh, VP_ATTN_MAX_DH);
    if (k->ndim != 3 || k->shape[0] != B || k->shape[2] != D)
        return bad_shape(op, k, "(B, Nk, H*Dh) with q's B and H*Dh");
    int64_t Nk = k->shape[1];
    if (!vp_shape_is(v, 3, k->shape))
        return bad_shape(op, v, "k's shape");
    int64_t M = 1, Hb = 1;
    if (bias) {
        M = bias->ndim == 4 ? bias->shape[0] : 0;
        Hb = bias->ndim == 4 ? bias->shape[1] : 0;
        if (M < 1 || B % M || (Hb != 1 && Hb != heads) || bias->shape[2] != Nq ||
            bias->shape[3] != Nk) {
            char want[128];
            snprintf(want, sizeof want, "(M, 1 or %d, %lld, %lld) with M dividing %lld", heads,
                     (long long)Nq, (long long)Nk, (long long)B);
            return bad_shape(op, bias, want);
        }
    }
    /* lavapipe ends an invocation's loops after 65535 iterations in all
     * (attn.glsl): the loops over keys, queries and the bias's images and
     * heads must stay under that on CPU devices. */
    int64_t walk = Nk > Nq ? Nk : Nq, per_bias = (B / M) * (Hb == 1 ? heads : 1);
    walk = walk > per_bias ? walk : per_bias;
    if (walk > VP_ATTN_MAX_ROWS && vp_device_get_info(vp_cmd_device(cmd))->type ==
                                       VK_PHYSICAL_DEVICE_TYPE_CPU)
        return vp_error_set(VP_ERR_UNSUPPORTED, "%s: %lld keys, %lld queries: a kernel would "
                            "loop %lld times per invocation, more than the %d a CPU Vulkan "
                            "device (lavapipe) runs", op, (long long)Nk, (long long)Nq,
                            (long long)walk, VP_ATTN_MAX_ROWS);
    *pc = (attn_push){(uint32_t)B, (uint32_t)Nq, (uint32_t)Nk, (uint32_t)heads, (uint32_t)M,
                      (uint32_t)Hb, bias ? HAS_BIAS : 0u, scale};
    *dh = (uint32_t)Dh;
    return VP_OK;
}

static vp_status check_like(const char *op, const vp_tensor *t, const vp_tensor *like)
{
    vp_status st = vp_check_f32(op, t);
    if (!st && !vp_shape_is(t, like->ndim, like->shape)) {
        char s[64];
        vp_shape_str(like, s, sizeof s);
        char want[160];
        snprintf(want, sizeof want, "%s's shape %s", like->name, s);
        return bad_shape(op, t, want);
    }
    return st;
}

/* t is (B, H, Nq), or with pairs (B, H, Nq, 2). */
static vp_status check_rows(const char *op, const vp_tensor *t, const attn_push *pc, bool pairs)
{
    vp_status st = vp_check_f32(op, t);
    int64_t want[4] = {pc->B, pc->H, pc->Nq, 2};
    if (!st && !vp_shape_is(t, pairs ? 4 : 3, want)) {
        char w[96];
        snprintf(w, sizeof w, "(B, H, Nq%s) = (%lld, %lld, %lld%s)", pairs ? ", 2" : "",
                 (long long)want[0], (long long)want[1], (long long)want[2], pairs ? ", 2" : "");
        return bad_shape(op, t, w);
    }
    return st;
}

/* CPU devices with a fixed subgroup size and shuffles (lavapipe) take the
 * subgroup forms of the kernels, which load each k / v / q value once per
 * subgroup and shuffle it to the lanes (attn_fwd_sg.comp says why). */
static vp_attn_form forced_form;

vp_attn_form vp_attention_force_form(vp_attn_form form)
{
    vp_attn_form old = forced_form;
    forced_form = form;
    return old;
}

static bool subgroup_form(const vp_device_info *d)
{
    bool ok = vp_matmul_subgroup_ok(d) && d->subgroup_size >= 4 && d->subgroup_size <= 64;
    if (forced_form == VP_ATTN_PLAIN)
        return false;
    return ok && (forced_form == VP_ATTN_SUBGROUP || d->type == VK_PHYSICAL_DEVICE_TYPE_CPU);
}

/* Workgroups of `rows` rows (x) for each of `groups` groups (y, z): every
 * invocation of a workgroup shares its group (attn.glsl). */
static vp_status dispatch(vp_cmd *cmd, const vp_kernel *k, uint32_t dh, const vp_range *bind,
                          const attn_push *pc, uint64_t rows, uint64_t groups)
{
    if (rows == 0 || groups == 0)
        return VP_OK;
    vp_device *dev = vp_cmd_device(cmd);
    const vp_device_info *d = vp_device_get_info(dev);
    /* The subgroup forms: one subgroup per workgroup (attn_fwd_sg.comp). */
    uint32_t lanes = subgroup_form(d) ? d->subgroup_size : 0;
    if (lanes)
        k = k == &k_fwd ? &k_fwd_sg : k == &k_bwd_q ? &k_bwd_q_sg
            : k == &k_bwd_kv ? &k_bwd_kv_sg : &k_bwd_ds_sg;
    uint32_t local = ATTN_LOCAL_MIN;
    while (local < rows && local < ATTN_LOCAL_MAX)
        local *= 2;
    if (lanes)
        local = lanes;
    if (d->max_wg_invocations < local)
        local = d->max_wg_invocations;
    if (d->max_wg_size[0] < local)
        local = d->max_wg_size[0];
    uint64_t gx = (rows + local - 1) / local;
    uint64_t gy = groups < d->max_wg_count[1] ? groups : d->max_wg_count[1];
    uint64_t gz = (groups + gy - 1) / gy;
    if (gx > d->max_wg_count[0] || gz > d->max_wg_count[2])
        return vp_error_set(VP_ERR_UNSUPPORTED, "%s: %llu rows in %llu groups are more than one "
                            "dispatch takes on this device", k->shader, (unsigned long long)rows,
                            (unsigned long long)groups);
    uint32_t spec[6] = {local, 1, 1, dh, dh % 4 ? 1u : 4u, lanes};
    vp_pipeline *p;
    vp_status st = vp_pipeline_get(dev, k, spec, lanes ? 6 : 5, &p);
    if (st)
        return st;
    return vp_cmd_dispatch(cmd, p, bind, k->n_bindings, pc, sizeof *pc, (uint32_t)gx,
                           (uint32_t)gy, (uint32_t)gz);
}

vp_status vp_op_attention(vp_cmd *cmd, const vp_tensor *q, const vp_tensor *k,
                          const vp_tensor *v, const vp_tensor *bias, int heads, float scale,
                          vp_tensor *out, vp_tensor *lse)
{
    const char *op = "attention";
    attn_push pc;
    uint32_t dh;
    vp_status st = check_inputs(cmd, op, q, k, v, bias, heads, scale, &pc, &dh);
    if (!st)
        st = check_like(op, out, q);
    if (!st)
        st = check_rows(op, lse, &pc, false);
    if (!st)
        st = vp_check_no_overlap(op, (vp_tensor *[]){out, lse}, 2,
                                 (const vp_tensor *[]){q, k, v, bias}, 4);
    if (st)
        return st;
    vp_range bind[6] = {vp_tensor_range(q), vp_tensor_range(k), vp_tensor_range(v),
                        vp_tensor_range(bias ? bias : q), vp_tensor_range(out),
                        vp_tensor_range(lse)};
    return dispatch(cmd, &k_fwd, dh, bind, &pc, pc.Nq, (uint64_t)pc.B * pc.H);
}

vp_status vp_op_attention_backward(vp_cmd *cmd, const vp_tensor *q, const vp_tensor *k,
                                   const vp_tensor *v, const vp_tensor *bias, int heads,
                                   float scale, const vp_tensor *lse, const vp_tensor *dout,
                                   vp_tensor *stats, vp_tensor *dq, bool acc_q, vp_tensor *dk,
                                   bool acc_k, vp_tensor *dv, bool acc_v, vp_tensor *ds)
{
    const char *op = "attention_backward";
    attn_push pc;
    uint32_t dh;
    vp_status st = check_inputs(cmd, op, q, k, v, bias, heads, scale, &pc, &dh);
    if (!st)
        st = check_like(op, dout, q);
    if (!st)
        st = check_rows(op, lse, &pc, false);
    if (!st)
        st = check_rows(op, stats, &pc, true);
    if (!st)
        st = check_like(op, dq, q);
    if (!st)
        st = check_like(op, dk, k);
    if (!st)
        st = check_like(op, dv, v);
    if (!st && ds && !bias)
        st = vp_error_set(VP_ERR_INVALID, "%s: score gradients %s without a bias", op, ds->name);
    if (!st && ds) {
        st = vp_check_f32(op, ds);
        int64_t want[4] = {pc.B, pc.H, pc.Nq, pc.Nk};
        if (!st && !vp_shape_is(ds, 4, want)) {
            char w[96];
            snprintf(w, sizeof w, "(B, H, Nq, Nk) = (%lld, %lld, %lld, %lld)", (long long)pc.B,
                     (long long)pc.H, (long long)pc.Nq, (long long)pc.Nk);
            st = bad_shape(op, ds, w);
        }
    }
    if (!st)
        st = vp_check_no_overlap(op, (vp_tensor *[]){stats, dq, dk, dv, ds}, 5,
                                 (const vp_tensor *[]){q, k, v, bias, lse, dout}, 6);
    if (st)
        return st;
    vp_range rq = vp_tensor_range(q), rk = vp_tensor_range(k), rv = vp_tensor_range(v);
    vp_range rb = vp_tensor_range(bias ? bias : q), rl = vp_tensor_range(lse);
    vp_range rdo = vp_tensor_range(dout), rs = vp_tensor_range(stats);
    uint64_t groups = (uint64_t)pc.B * pc.H;
    attn_push p1 = pc;
    p1.flags |= acc_q ? ACC_Q : 0u;
    vp_range b1[8] = {rq, rk, rv, rb, rl, rdo, rs, vp_tensor_range(dq)};
    st = dispatch(cmd, &k_bwd_q, dh, b1, &p1, pc.Nq, groups);
    if (st)
        return st;
    attn_push p2 = pc;
    p2.flags |= (acc_k ? ACC_K : 0u) | (acc_v ? ACC_V : 0u);
    vp_range b2[8] = {rq, rk, rv, rb, rdo, rs, vp_tensor_range(dk), vp_tensor_range(dv)};
    st = dispatch(cmd, &k_bwd_kv, dh, b2, &p2, pc.Nk, groups);
    if (st || !ds)
        return st;
    vp_range b3[7] = {rq, rk, rv, rb, rdo, rs, vp_tensor_range(ds)};
    return dispatch(cmd, &k_bwd_ds, dh, b3, &pc, pc.Nq, groups);
}
