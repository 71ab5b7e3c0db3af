/*
 * Neural-network ops (nn.h): activations (nn_act.comp, nn_act_bwd.comp),
 * layer normalization (nn_layernorm*.comp), softmax (nn_softmax*.comp),
 * reductions (nn_reduce.comp) and their backward (nn_bcast.comp).
 *
 * Row ops split a workgroup of `local` invocations into segments of T lanes
 * per row (shaders/nn.glsl); T grows with the row length so that short rows
 * share a workgroup and long rows get the whole of one. On CPU devices rows
 * of up to ROW1_MAX_C columns take one invocation each instead (T = 1 and
 * the kernels' NN_ROW1: no barriers, which cost lavapipe dearly).
 */
#include <math.h>
#include <stdio.h>

#include "ops/nn.h"
#include "ops/util.h"

/* bindings (inputs first), written-binding mask, push-constant bytes */
static const vp_kernel k_act = {"nn_act", 2, 0x2, 4, NULL, 0};
static const vp_kernel k_act_bwd = {"nn_act_bwd", 3, 0x4, 8, NULL, 0};
static const vp_kernel k_bcast = {"nn_bcast", 2, 0x2, 16, NULL, 0};
static const vp_kernel k_reduce = {"nn_reduce", 2, 0x2, 16, NULL, 0};
static const vp_kernel k_softmax = {"nn_softmax", 2, 0x2, 12, NULL, 0};
static const vp_kernel k_softmax_bwd = {"nn_softmax_bwd", 3, 0x4, 16, NULL, 0};
static const vp_kernel k_ln = {"nn_layernorm", 6, 0x38, 24, NULL, 0};
static const vp_kernel k_ln_bwd = {"nn_layernorm_bwd", 8, 0xe0, 24, NULL, 0};
static const vp_kernel k_dropout = {"nn_dropout", 3, 0x4, 12, NULL, 0};
static const vp_kernel k_seed = {"nn_seed", 1, 0x1, 4, NULL, 0};
static const vp_kernel k_logit_mask = {"nn_logit_mask", 2, 0x2, 12, NULL, 0};

enum { ACT_RELU = VP_ACT_RELU, ACT_GELU = VP_ACT_GELU };

/* ---- launch geometry ------------------------------------------------------ */

/* One invocation per row on CPU devices for rows of at most this many
 * columns (a lane walks its row three times; lavapipe ends an invocation's
 * loops after 65535 iterations in all), and for the layernorm backward's
 * parameter gradients, which walk a column's rows, at most ROW1_MAX_ROWS.
 * On lavapipe it was 1.7-5x faster than segments from (8, 1024) to (9216,
 * 96) (bench_rows), but 0.6x on a single row of 4096. */
#define ROW1_MAX_C 1024
#define ROW1_MAX_ROWS 60000
/* Workgroup size of the one-row-per-invocation form: small, so that a few
 * hundred rows still make several workgroups for the CPU's threads. */
#define ROW1_LOCAL 64

static vp_nn_rows forced_rows;

vp_nn_rows vp_nn_force_rows(vp_nn_rows form)
{
    vp_nn_rows old = forced_rows;
    forced_rows = form;
    return old;
}

bool vp_nn_rows_one(const vp_device_info *d, int64_t C)
{
    if (forced_rows != VP_NN_ROWS_AUTO)
        return forced_rows == VP_NN_ROWS_ONE;
    return d->type == VK_PHYSICAL_DEVICE_TYPE_CPU && C <= ROW1_MAX_C;
}

/* Invocations per workgroup: 256 where the device allows it, else the 128
 * every Vulkan device guarantees. */
static uint32_t nn_local(const vp_device_info *d)
{
    return d->max_wg_invocations >= 256 && d->max_wg_size[0] >= 256 ? 256 : 128;
}

/* Lanes per row: the smallest power of two that leaves each lane at most 4
 * elements, capped at the workgroup. */
static uint32_t seg_lanes(int64_t C, uint32_t local)
{
    uint32_t T = 1;
    while (T < local && (int64_t)T * 4 < C)
        T <<= 1;
    return T;
}

/* `groups` workgroups as an x by y grid within the device's x limit. */
static void grid_groups(const vp_device_info *d, uint64_t groups, uint32_t *gx, uint32_t *gy)
{
    uint64_t maxx = d->max_wg_count[0];
    if (groups == 0)
        groups = 1;
    *gx = (uint32_t)(groups < maxx ? groups : maxx);
    uint64_t y = (groups + *gx - 1) / *gx;
    *gy = y > UINT32_MAX ? UINT32_MAX : (uint32_t)y; /* the dispatch rejects it */
}

static vp_status get_pipeline(vp_cmd *cmd, const vp_kernel *k, uint32_t lx, uint32_t ly,
                              uint32_t op, vp_pipeline **p)
{
    uint32_t spec[4] = {lx, ly, 1, op};
    return vp_pipeline_get(vp_cmd_device(cmd), k, spec, 4, p);
}

/* A row kernel's pipeline, with NN_ROW1 (constant 4) set or not. */
static vp_status row_pipeline(vp_cmd *cmd, const vp_kernel *k, uint32_t lx, bool one,
                              vp_pipeline **p)
{
    uint32_t spec[5] = {lx, 1, 1, 0, one};
    return vp_pipeline_get(vp_cmd_device(cmd), k, spec, 5, p);
}

/* One invocation per element, n elements; with vec4 (the activations, n %
 * 4 == 0: constant 5, VEC4), one per four. */
static vp_status ew_dispatch4(vp_cmd *cmd, const vp_kernel *k, uint32_t op, bool vec4,
                              const vp_range *bind, const void *push, uint32_t n)
{
    const vp_device_info *d = vp_device_get_info(vp_cmd_device(cmd));
    uint32_t local = nn_local(d), gx, gy, spec[6] = {local, 1, 1, op, 0, vec4};
    vp_pipeline *p;
    vp_status st = vp_pipeline_get(vp_cmd_device(cmd), k, spec, 6, &p);
    if (st)
        return st;
    vp_grid_1d(d, vec4 ? n / 4 : n, local, &gx, &gy);
    return vp_cmd_dispatch(cmd, p, bind, k->n_bindings, push, k->push_size, gx, gy, 1);
}

static vp_status ew_dispatch(vp_cmd *cmd, const vp_kernel *k, uint32_t op, const vp_range *bind,
                             const void *push, uint32_t n)
{
    return ew_dispatch4(cmd, k, op, false, bind, push, n);
}

/* A row kernel over rows x C; push must start with {rows, C, T}, which this
 * fills in. */
static vp_status row_dispatch(vp_cmd *cmd, const vp_kernel *k, const vp_range *bind, void *push,
                              int64_t rows, int64_t C)
{
    const vp_device_info *d = vp_device_get_info(vp_cmd_device(cmd));
    bool one = vp_nn_rows_one(d, C);
    uint32_t local = one ? ROW1_LOCAL : nn_local(d), T = one ? 1 : seg_lanes(C, local);
    uint32_t per = local / T, gx, gy;
    uint32_t *head = push;
    head[0] = (uint32_t)rows;
    head[1] = (uint32_t)C;
    head[2] = T;
    vp_pipeline *p;
    vp_status st = row_pipeline(cmd, k, local, one, &p);
    if (st)
        return st;
    grid_groups(d, ((uint64_t)rows + per - 1) / per, &gx, &gy);
    return vp_cmd_dispatch(cmd, p, bind, k->n_bindings, push, k->push_size, gx, gy, 1);
}

/* ---- checks ----------------------------------------------------------------- */

static int64_t last_dim(const vp_tensor *x)
{
    return x->shape[x->ndim - 1];
}

static int64_t n_rows(const vp_tensor *x)
{
    return vp_tensor_nelem(x) / last_dim(x);
}

/* vp_check_f32 on each non-NULL tensor, in order. */
static vp_status check_f32s(const char *op, const vp_tensor *const *t, int n)
{
    for (int i = 0; i < n; i++)
        if (t[i]) {
            vp_status st = vp_check_f32(op, t[i]);
            if (st)
                return st;
        }
    return VP_OK;
}

/* "(d0, ..., dk)" or "(d0, ..., dk, 1)" for x (d0, ..., dk, C); "(1)" for a
 * 1-D x. */
static void rows_shape_str(const vp_tensor *x, bool keep, char *buf, size_t n)
{
    vp_tensor t = *x;
    if (x->ndim == 1) {
        t.shape[0] = 1;
    } else if (keep) {
        t.shape[t.ndim - 1] = 1;
    } else {
        t.ndim--;
    }
    vp_shape_str(&t, buf, n);
}

/* t holds one element per row of x: x's shape without its last dimension,
 * or with it set to 1; (1) when x is 1-D. */
static vp_status check_per_row(const char *op, const vp_tensor *x, const vp_tensor *t)
{
    int L = x->ndim - 1;
    bool ok;
    if (L == 0) {
        ok = t->ndim == 1 && t->shape[0] == 1;
    } else {
        ok = t->ndim == L || (t->ndim == L + 1 && t->shape[L] == 1);
        for (int i = 0; ok && i < L; i++)
            ok = t->shape[i] == x->shape[i];
    }
    if (ok)
        return VP_OK;
    char sx[64], st[64], w1[64], w2[64];
    vp_shape_str(x, sx, sizeof sx);
    vp_shape_str(t, st, sizeof st);
    rows_shape_str(x, false, w1, sizeof w1);
    if (L == 0)
        return vp_error_set(VP_ERR_SHAPE, "%s: %s %s must be %s, one element per row of %s %s",
                            op, t->name, st, w1, x->name, sx);
    rows_shape_str(x, true, w2, sizeof w2);
    return vp_error_set(VP_ERR_SHAPE, "%s: %s %s must be %s or %s, one element per row of %s %s",
                        op, t->name, st, w1, w2, x->name, sx);
}

/* p is (C), C the last dimension of x. */
static vp_status check_per_col(const char *op, const vp_tensor *x, const vp_tensor *p)
{
    if (p->ndim == 1 && p->shape[0] == last_dim(x))
        return VP_OK;
    char sx[64], sp[64];
    vp_shape_str(x, sx, sizeof sx);
    vp_shape_str(p, sp, sizeof sp);
    return vp_error_set(VP_ERR_SHAPE, "%s: %s %s must be (%lld), the last dimension of %s %s", op,
                        p->name, sp, (long long)last_dim(x), x->name, sx);
}

/* ---- activations ------------------------------------------------------------ */

static vp_status act_forward(vp_cmd *cmd, const char *op, uint32_t code, const vp_tensor *x,
                             vp_tensor *y)
{
    vp_status st = check_f32s(op, (const vp_tensor *[]){x, y}, 2);
    if (!st)
        st = vp_check_same_shape(op, x, y);
    if (st)
        return st;
    struct { uint32_t n; } push = {(uint32_t)vp_tensor_nelem(x)};
    vp_range r[2] = {vp_tensor_range(x), vp_tensor_range(y)};
    return ew_dispatch4(cmd, &k_act, code, push.n % 4 == 0, r, &push, push.n);
}

static vp_status act_backward(vp_cmd *cmd, const char *op, uint32_t code, const vp_tensor *x,
                              const vp_tensor *dy, vp_tensor *dx, bool accumulate)
{
    vp_status st = check_f32s(op, (const vp_tensor *[]){x, dy, dx}, 3);
    if (!st)
        st = vp_check_same_shape(op, x, dy);
    if (!st)
        st = vp_check_same_shape(op, x, dx);
    if (st)
        return st;
    struct { uint32_t n, acc; } push = {(uint32_t)vp_tensor_nelem(x), accumulate};
    vp_range r[3] = {vp_tensor_range(x), vp_tensor_range(dy), vp_tensor_range(dx)};
    return ew_dispatch4(cmd, &k_act_bwd, code, push.n % 4 == 0, r, &push, push.n);
}

vp_status vp_op_relu(vp_cmd *cmd, const vp_tensor *x, vp_tensor *y)
{
    return act_forward(cmd, "relu", ACT_RELU, x, y);
}

vp_status vp_op_relu_backward(vp_cmd *cmd, const vp_tensor *x, const vp_tensor *dy,
                              vp_tensor *dx, bool accumulate)
{
    return act_backward(cmd, "relu_backward", ACT_RELU, x, dy, dx, accumulate);
}

vp_status vp_op_gelu(vp_cmd *cmd, const vp_tensor *x, vp_tensor *y)
{
    return act_forward(cmd, "gelu", ACT_GELU, x, y);
}

vp_status vp_op_gelu_backward(vp_cmd *cmd, const vp_tensor *x, const vp_tensor *dy,
                              vp_tensor *dx, bool accumulate)
{
    return act_backward(cmd, "gelu_backward", ACT_GELU, x, dy, dx, accumulate);
}

static const char *const act_names[VP_ACT_COUNT][2] = {
    {"relu", "relu_backward"},         {"gelu", "gelu_backward"},
    {"sigmoid", "sigmoid_backward"},   {"softplus", "softplus_backward"},
    {"silu", "silu_backward"}};

vp_status vp_op_act(vp_cmd *cmd, vp_act act, const vp_tensor *x, vp_tensor *y)
{
    VP_ASSERT((unsigned)act < VP_ACT_COUNT);
    return act_forward(cmd, act_names[act][0], act, x, y);
}

vp_status vp_op_act_backward(vp_cmd *cmd, vp_act act, const vp_tensor *x, const vp_tensor *dy,
                             vp_tensor *dx, bool accumulate)
{
    VP_ASSERT((unsigned)act < VP_ACT_COUNT);
    return act_backward(cmd, act_names[act][1], act, x, dy, dx, accumulate);
}

/* ---- layer normalization ---------------------------------------------------- */

vp_status vp_op_layernorm(vp_cmd *cmd, const vp_tensor *x, const vp_tensor *gamma,
                          const vp_tensor *beta, float eps, vp_tensor *y, vp_tensor *mean,
                          vp_tensor *rstd)
{
    const char *op = "layernorm";
    vp_status st = check_f32s(op, (const vp_tensor *[]){x, gamma, beta, y, mean, rstd}, 6);
    if (st)
        return st;
    if (!isfinite(eps) || eps < 0)
        return vp_error_set(VP_ERR_INVALID, "%s: eps %g must be finite and >= 0", op, eps);
    if (!mean != !rstd)
        return vp_error_set(VP_ERR_INVALID, "%s: mean and rstd must both be given or both be "
                            "NULL", op);
    st = vp_check_same_shape(op, x, y);
    if (!st && gamma)
        st = check_per_col(op, x, gamma);
    if (!st && beta)
        st = check_per_col(op, x, beta);
    if (!st && mean)
        st = check_per_row(op, x, mean);
    if (!st && rstd)
        st = check_per_row(op, x, rstd);
    if (!st)
        st = vp_check_no_overlap(op, (vp_tensor *[]){y, mean, rstd}, 3,
                                 (const vp_tensor *[]){x, gamma, beta}, 3);
    if (st)
        return st;
    int64_t C = last_dim(x);
    struct { uint32_t rows, C, T; float inv_c, eps; uint32_t flags; } push = {
        0, 0, 0, (float)(1.0 / (double)C), eps,
        (gamma ? 1u : 0u) | (beta ? 2u : 0u) | (mean ? 4u : 0u)};
    /* Absent tensors: bind something valid the kernel never touches. */
    vp_range rx = vp_tensor_range(x), ry = vp_tensor_range(y);
    vp_range r[6] = {rx, gamma ? vp_tensor_range(gamma) : rx, beta ? vp_tensor_range(beta) : rx,
                     ry, mean ? vp_tensor_range(mean) : ry, rstd ? vp_tensor_range(rstd) : ry};
    return row_dispatch(cmd, &k_ln, r, &push, n_rows(x), C);
}

vp_status vp_op_layernorm_backward(vp_cmd *cmd, const vp_tensor *x, const vp_tensor *gamma,
                                   const vp_tensor *mean, const vp_tensor *rstd,
                                   const vp_tensor *dy, vp_tensor *dx, vp_tensor *dgamma,
                                   vp_tensor *dbeta, bool accumulate)
{
    return vp_op_layernorm_backward_ex(cmd, x, gamma, mean, rstd, dy, dx, accumulate, dgamma,
                                       dbeta, accumulate);
}

vp_status vp_op_layernorm_backward_ex(vp_cmd *cmd, const vp_tensor *x, const vp_tensor *gamma,
                                      const vp_tensor *mean, const vp_tensor *rstd,
                                      const vp_tensor *dy, vp_tensor *dx, bool acc_dx,
                                      vp_tensor *dgamma, vp_tensor *dbeta, bool acc_params)
{
    const char *op = "layernorm_backward";
    vp_status st =
        check_f32s(op, (const vp_tensor *[]){x, gamma, mean, rstd, dy, dx, dgamma, dbeta}, 8);
    if (!st)
        st = vp_check_same_shape(op, x, dy);
    if (!st)
        st = vp_check_same_shape(op, x, dx);
    if (!st && gamma)
        st = check_per_col(op, x, gamma);
    if (!st)
        st = check_per_row(op, x, mean);
    if (!st)
        st = check_per_row(op, x, rstd);
    if (!st && dgamma)
        st = check_per_col(op, x, dgamma);
    if (!st && dbeta)
        st = check_per_col(op, x, dbeta);
    const vp_tensor *in[5] = {x, gamma, mean, rstd, dy};
    if (!st)
        st = vp_check_no_overlap(op, (vp_tensor *[]){dx, dgamma, dbeta}, 3, in, 5);
    if (st)
        return st;
    int64_t rows = n_rows(x), C = last_dim(x);
    vp_range rx = vp_tensor_range(x), rm = vp_tensor_range(mean), rr = vp_tensor_range(rstd);
    vp_range rdy = vp_tensor_range(dy);

    /* One dispatch: ga workgroups of rows for dx, then (C + 7) / 8 of
     * columns for dgamma and dbeta (nn_layernorm_bwd.comp); in the
     * one-row-per-invocation form, (C + local - 1) / local of them. */
    const vp_device_info *d = vp_device_get_info(vp_cmd_device(cmd));
    bool one = vp_nn_rows_one(d, C) && rows <= ROW1_MAX_ROWS;
    uint32_t local = one ? ROW1_LOCAL : nn_local(d), T = one ? 1 : seg_lanes(C, local);
    uint32_t per = local / T, gx, gy;
    uint64_t ga = ((uint64_t)rows + per - 1) / per;
    uint64_t gb = dgamma || dbeta ? ((uint64_t)C + (one ? local : 8) - 1) / (one ? local : 8) : 0;
    struct { uint32_t rows, C, T; float inv_c; uint32_t flags, ga; } push = {
        (uint32_t)rows, (uint32_t)C, T, (float)(1.0 / (double)C),
        (gamma ? 1u : 0u) | (acc_dx ? 2u : 0u) | (dgamma ? 4u : 0u) | (dbeta ? 8u : 0u) |
            (acc_params ? 16u : 0u),
        (uint32_t)ga};
    vp_range rd = vp_tensor_range(dx);
    vp_range r[8] = {rx, gamma ? vp_tensor_range(gamma) : rx, rm, rr, rdy, rd,
                     dgamma ? vp_tensor_range(dgamma) : rd, dbeta ? vp_tensor_range(dbeta) : rd};
    vp_pipeline *p;
    if ((st = row_pipeline(cmd, &k_ln_bwd, local, one, &p)))
        return st;
    grid_groups(d, ga + gb, &gx, &gy);
    return vp_cmd_dispatch(cmd, p, r, k_ln_bwd.n_bindings, &push, k_ln_bwd.push_size, gx, gy, 1);
}

/* ---- softmax ------------------------------------------------------------------ */

vp_status vp_op_softmax(vp_cmd *cmd, const vp_tensor *x, vp_tensor *y)
{
    const char *op = "softmax";
    vp_status st = check_f32s(op, (const vp_tensor *[]){x, y}, 2);
    if (!st)
        st = vp_check_same_shape(op, x, y);
    if (!st)
        st = vp_check_no_overlap(op, (vp_tensor *[]){y}, 1, (const vp_tensor *[]){x}, 1);
    if (st)
        return st;
    struct { uint32_t rows, C, T; } push;
    vp_range r[2] = {vp_tensor_range(x), vp_tensor_range(y)};
    return row_dispatch(cmd, &k_softmax, r, &push, n_rows(x), last_dim(x));
}

static vp_status dropout(vp_cmd *cmd, const char *op, uint32_t code, const vp_tensor *x,
                         const vp_tensor *seed, float p, vp_tensor *y, bool accumulate)
{
    vp_status st = check_f32s(op, (const vp_tensor *[]){x, y}, 2);
    if (!st)
        st = vp_check_same_shape(op, x, y);
    if (!st && (seed->dtype != VP_I32 || vp_tensor_nelem(seed) != 1))
        st = vp_error_set(VP_ERR_INVALID, "%s: the seed %s must be one int32", op, seed->name);
    if (!st && !(p >= 0.0f && p < 1.0f))
        st = vp_error_set(VP_ERR_INVALID, "%s: p %g must be in [0, 1)", op, p);
    if (st)
        return st;
    struct { uint32_t n; float p; uint32_t acc; } push = {(uint32_t)vp_tensor_nelem(x), p,
                                                          accumulate};
    vp_range r[3] = {vp_tensor_range(x), vp_tensor_range(seed), vp_tensor_range(y)};
    return ew_dispatch(cmd, &k_dropout, code, r, &push, push.n);
}

vp_status vp_op_seed_next(vp_cmd *cmd, vp_tensor *seed)
{
    if (seed->dtype != VP_I32 || vp_tensor_nelem(seed) != 1)
        return vp_error_set(VP_ERR_INVALID, "seed_next: %s must be one int32", seed->name);
    vp_pipeline *p;
    vp_status st = get_pipeline(cmd, &k_seed, 1, 1, 0, &p);
    if (st)
        return st;
    uint32_t push = 0;
    vp_range r = vp_tensor_range(seed);
    return vp_cmd_dispatch(cmd, p, &r, 1, &push, sizeof push, 1, 1, 1);
}

vp_status vp_op_dropout(vp_cmd *cmd, const vp_tensor *x, const vp_tensor *seed, float p,
                        vp_tensor *y)
{
    return dropout(cmd, "dropout", 0, x, seed, p, y, false);
}

vp_status vp_op_rand(vp_cmd *cmd, const vp_tensor *seed, uint32_t salt, vp_tensor *y)
{
    const char *op = "rand";
    if (seed->dtype != VP_I32 || vp_tensor_nelem(seed) != 1)
        return vp_error_set(VP_ERR_INVALID, "%s: %s must be one int32", op, seed->name);
    vp_status st = check_f32s(op, (const vp_tensor *[]){y}, 1);
    if (st)
        return st;
    /* nn_dropout.comp's OP 2, the salt in acc's place; a (binding 0) is
     * not read: the seed stands in */
    struct { uint32_t n; float p; uint32_t salt; } push = {(uint32_t)vp_tensor_nelem(y), 0.0f,
                                                           salt};
    vp_range r[3] = {vp_tensor_range(seed), vp_tensor_range(seed), vp_tensor_range(y)};
    return ew_dispatch(cmd, &k_dropout, 2, r, &push, push.n);
}

vp_status vp_op_dropout_backward(vp_cmd *cmd, const vp_tensor *dy, const vp_tensor *seed, float p,
                                 vp_tensor *dx, bool accumulate)
{
    return dropout(cmd, "dropout_backward", 1, dy, seed, p, dx, accumulate);
}

vp_status vp_op_logit_mask(vp_cmd *cmd, const vp_tensor *x, vp_tensor *y)
{
    const char *op = "logit_mask";
    vp_status st = check_f32s(op, (const vp_tensor *[]){x, y}, 2);
    if (!st)
        st = vp_check_same_shape(op, x, y);
    if (!st)
        st = vp_check_no_overlap(op, (vp_tensor *[]){y}, 1, (const vp_tensor *[]){x}, 1);
    if (st)
        return st;
    struct { uint32_t rows, C, T; } push;
    vp_range r[2] = {vp_tensor_range(x), vp_tensor_range(y)};
    return row_dispatch(cmd, &k_logit_mask, r, &push, n_rows(x), last_dim(x));
}

vp_status vp_op_softmax_backward(vp_cmd *cmd, const vp_tensor *y, const vp_tensor *dy,
                                 vp_tensor *dx, bool accumulate)
{
    const char *op = "softmax_backward";
    vp_status st = check_f32s(op, (const vp_tensor *[]){y, dy, dx}, 3);
    if (!st)
        st = vp_check_same_shape(op, y, dy);
    if (!st)
        st = vp_check_same_shape(op, y, dx);
    if (!st)
        st = vp_check_no_overlap(op, (vp_tensor *[]){dx}, 1, (const vp_tensor *[]){y, dy}, 2);
    if (st)
        return st;
    struct { uint32_t rows, C, T, acc; } push = {0, 0, 0, accumulate};
    vp_range r[3] = {vp_tensor_range(y), vp_tensor_range(dy), vp_tensor_range(dx)};
    return row_dispatch(cmd, &k_softmax_bwd, r, &push, n_rows(y), last_dim(y));
}

/* ---- reductions ------------------------------------------------------------ */

static vp_status reduce(vp_cmd *cmd, const char *op, const vp_tensor *x, vp_tensor *y, bool all,
                        bool mean)
{
    vp_status st = check_f32s(op, (const vp_tensor *[]){x, y}, 2);
    if (!st)
        st = all ? vp_check_one(op, NULL, y) : check_per_row(op, x, y);
    if (!st)
        st = vp_check_no_overlap(op, (vp_tensor *[]){y}, 1, (const vp_tensor *[]){x}, 1);
    if (st)
        return st;
    int64_t rows = all ? 1 : n_rows(x), C = all ? vp_tensor_nelem(x) : last_dim(x);
    struct { uint32_t rows, C, T; float scale; } push = {
        0, 0, 0, mean ? (float)(1.0 / (double)C) : 1.0f};
    vp_range r[2] = {vp_tensor_range(x), vp_tensor_range(y)};
    return row_dispatch(cmd, &k_reduce, r, &push, rows, C);
}

vp_status vp_op_sum_rows(vp_cmd *cmd, const vp_tensor *x, vp_tensor *y)
{
    return reduce(cmd, "sum_rows", x, y, false, false);
}

vp_status vp_op_mean_rows(vp_cmd *cmd, const vp_tensor *x, vp_tensor *y)
{
    return reduce(cmd, "mean_rows", x, y, false, true);
}

vp_status vp_op_sum_all(vp_cmd *cmd, const vp_tensor *x, vp_tensor *y)
{
    return reduce(cmd, "sum_all", x, y, true, false);
}

vp_status vp_op_mean_all(vp_cmd *cmd, const vp_tensor *x, vp_tensor *y)
{
    return reduce(cmd, "mean_all", x, y, true, true);
}

static vp_status broadcast(vp_cmd *cmd, const char *op, const vp_tensor *dy, vp_tensor *dx,
                           float scale, bool accumulate, bool all)
{
    vp_status st = check_f32s(op, (const vp_tensor *[]){dy, dx}, 2);
    if (!st)
        st = all ? vp_check_one(op, NULL, dy) : check_per_row(op, dx, dy);
    if (!st)
        st = vp_check_no_overlap(op, (vp_tensor *[]){dx}, 1, (const vp_tensor *[]){dy}, 1);
    if (st)
        return st;
    uint32_t n = (uint32_t)vp_tensor_nelem(dx);
    struct { uint32_t n, C; float scale; uint32_t acc; } push = {
        n, all ? n : (uint32_t)last_dim(dx), scale, accumulate};
    vp_range r[2] = {vp_tensor_range(dy), vp_tensor_range(dx)};
    return ew_dispatch(cmd, &k_bcast, 0, r, &push, n);
}

vp_status vp_op_broadcast_rows(vp_cmd *cmd, const vp_tensor *dy, vp_tensor *dx, float scale,
                               bool accumulate)
{
    return broadcast(cmd, "broadcast_rows", dy, dx, scale, accumulate, false);
}

vp_status vp_op_broadcast_all(vp_cmd *cmd, const vp_tensor *dy, vp_tensor *dx, float scale,
                              bool accumulate)
{
    return broadcast(cmd, "broadcast_all", dy, dx, scale, accumulate, true);
}
