/*
 * Loss ops: softmax cross-entropy (loss_ce_rows, loss_ce_reduce,
 * loss_ce_backward), sigmoid BCE with logits (loss_bce, loss_bce_backward)
 * and the dice loss (loss_dice, loss_dice_backward). Shapes and semantics
 * are in loss.h; the kernels say how they compute.
 *
 * Every loss value comes out of one workgroup that sums in a fixed order
 * (shaders/loss.glsl), never from float atomics, so a replayed step gives
 * the same bits. The price is that a loss's final reduction runs on one
 * compute unit; the inputs of a segmentation head's losses (a few hundred
 * rows of class logits, masks point-sampled to ~12k points) are small
 * enough for that. Elementwise backward kernels run one invocation per
 * element (cross-entropy) or per four (BCE), the dice backward one
 * workgroup per mask.
 */
#include "ops/loss.h"

#include "ops/util.h"

/* bindings in order, inputs first; write masks; push constant bytes */
static const vp_kernel k_ce_rows = {"loss_ce_rows", 2, 0x2, 8, NULL, 0};
static const vp_kernel k_ce_reduce = {"loss_ce_reduce", 5, 0x18, 12, NULL, 0};
static const vp_kernel k_ce_backward = {"loss_ce_backward", 6, 0x20, 16, NULL, 0};
static const vp_kernel k_bce = {"loss_bce", 3, 0x4, 4, NULL, 0};
static const vp_kernel k_bce_backward = {"loss_bce_backward", 4, 0x8, 8, NULL, 0};
static const vp_kernel k_dice = {"loss_dice", 3, 0x4, 16, NULL, 0};
static const vp_kernel k_dice_backward = {"loss_dice_backward", 4, 0x8, 16, NULL, 0};

uint32_t vp_loss_reduce_local(const vp_device_info *d)
{
    uint32_t lim = d->type == VK_PHYSICAL_DEVICE_TYPE_CPU ? 256 : 1024;
    if (d->max_wg_invocations < lim)
        lim = d->max_wg_invocations;
    if (d->max_wg_size[0] < lim)
        lim = d->max_wg_size[0];
    if (d->max_shared / 16 < lim)
        lim = d->max_shared / 16;
    uint32_t l = 1;
    while (l * 2 <= lim)
        l *= 2;
    return l;
}

static vp_status launch(vp_cmd *cmd, const vp_kernel *k, const vp_range *bind, const void *push,
                        uint32_t local, uint32_t groups)
{
    vp_device *dev = vp_cmd_device(cmd);
    uint32_t spec[3] = {local, 1, 1}, gx, gy;
    vp_pipeline *p;
    vp_status st = vp_pipeline_get(dev, k, spec, 3, &p);
    if (st)
        return st;
    vp_grid_1d(vp_device_get_info(dev), groups, 1, &gx, &gy);
    return vp_cmd_dispatch(cmd, p, bind, k->n_bindings, push, k->push_size, gx, gy, 1);
}

/* Elementwise kernels: one invocation per item, VP_EW_LOCAL per workgroup. */
static vp_status launch_items(vp_cmd *cmd, const vp_kernel *k, const vp_range *bind,
                              const void *push, uint32_t items)
{
    return launch(cmd, k, bind, push, VP_EW_LOCAL, (items + VP_EW_LOCAL - 1) / VP_EW_LOCAL);
}

/* Reduction kernels: `groups` workgroups (1, or one per mask) of the
 * reduction local size. */
static vp_status launch_groups(vp_cmd *cmd, const vp_kernel *k, const vp_range *bind,
                               const void *push, uint32_t groups)
{
    const vp_device_info *d = vp_device_get_info(vp_cmd_device(cmd));
    return launch(cmd, k, bind, push, vp_loss_reduce_local(d), groups);
}

/* ---- checks shared by the ops ---------------------------------------------- */

static vp_status check_scalar(const char *op, const char *role, const vp_tensor *t)
{
    vp_status st = vp_check_f32(op, t);
    return st ? st : vp_check_one(op, role, t);
}

/* ---- cross-entropy ------------------------------------------------------------ */

static vp_status ce_check(const char *op, const vp_tensor *x, const vp_tensor *target,
                          const vp_tensor *weight, const vp_tensor *saved)
{
    char sx[64], s[64];
    vp_status st = vp_check_f32(op, x);
    if (st)
        return st;
    vp_shape_str(x, sx, sizeof sx);
    if (x->ndim != 2)
        return vp_error_set(VP_ERR_SHAPE, "%s: logits %s %s must be 2-D (N, C)", op, x->name,
                            sx);
    int64_t N = x->shape[0], C = x->shape[1];
    if (target->dtype != VP_I32)
        return vp_error_set(VP_ERR_UNSUPPORTED, "%s: target %s is %s; it must be i32", op,
                            target->name, vp_dtype_str(target->dtype));
    if (target->ndim != 1 || target->shape[0] != N) {
        vp_shape_str(target, s, sizeof s);
        return vp_error_set(VP_ERR_SHAPE, "%s: target %s %s does not match logits %s %s: it "
                            "must be (%lld)", op, target->name, s, x->name, sx, (long long)N);
    }
    if (weight) {
        if ((st = vp_check_f32(op, weight)))
            return st;
        if (weight->ndim != 1 || weight->shape[0] != C) {
            vp_shape_str(weight, s, sizeof s);
            return vp_error_set(VP_ERR_SHAPE, "%s: weight %s %s does not match logits %s %s: "
                                "it must be (%lld)", op, weight->name, s, x->name, sx,
                                (long long)C);
        }
    }
    if ((st = vp_check_f32(op, saved)))
        return st;
    if (saved->ndim != 2 || saved->shape[0] != N + 1 || saved->shape[1] != 2) {
        vp_shape_str(saved, s, sizeof s);
        return vp_error_set(VP_ERR_SHAPE, "%s: saved %s %s must be (%lld, 2) for logits %s %s",
                            op, saved->name, s, (long long)(N + 1), x->name, sx);
    }
    return VP_OK;
}

vp_status vp_op_cross_entropy(vp_cmd *cmd, const vp_tensor *logits, const vp_tensor *target,
                              const vp_tensor *weight, vp_tensor *loss, vp_tensor *saved)
{
    const char *op = "cross_entropy";
    vp_status st = ce_check(op, logits, target, weight, saved);
    if (!st)
        st = check_scalar(op, "loss", loss);
    if (!st)
        st = vp_check_no_overlap(op, (vp_tensor *[]){saved, loss}, 2,
                           (const vp_tensor *[]){logits, target, weight}, 3);
    if (st)
        return st;
    struct { uint32_t N, C, has_weight; } push = {(uint32_t)logits->shape[0],
                                                  (uint32_t)logits->shape[1], weight != NULL};
    vp_range rx = vp_tensor_range(logits), rs = vp_tensor_range(saved);
    if ((st = launch_items(cmd, &k_ce_rows, (vp_range[]){rx, rs}, &push, push.N)))
        return st;
    vp_range r[5] = {rx, vp_tensor_range(target), weight ? vp_tensor_range(weight) : rx, rs,
                     vp_tensor_range(loss)};
    return launch_groups(cmd, &k_ce_reduce, r, &push, 1);
}

vp_status vp_op_cross_entropy_backward(vp_cmd *cmd, const vp_tensor *logits,
                                       const vp_tensor *target, const vp_tensor *weight,
                                       const vp_tensor *saved, const vp_tensor *dloss,
                                       vp_tensor *dlogits, bool accumulate)
{
    const char *op = "cross_entropy_backward";
    vp_status st = ce_check(op, logits, target, weight, saved);
    if (!st)
        st = check_scalar(op, "dloss", dloss);
    if (!st)
        st = vp_check_f32(op, dlogits);
    if (!st)
        st = vp_check_same_shape(op, logits, dlogits);
    if (!st)
        st = vp_check_no_overlap(op, (vp_tensor *[]){dlogits}, 1,
                           (const vp_tensor *[]){logits, target, weight, saved, dloss}, 5);
    if (st)
        return st;
    struct { uint32_t N, C, has_weight, accumulate; } push = {
        (uint32_t)logits->shape[0], (uint32_t)logits->shape[1], weight != NULL, accumulate};
    vp_range rx = vp_tensor_range(logits);
    vp_range r[6] = {rx, vp_tensor_range(target), weight ? vp_tensor_range(weight) : rx,
                     vp_tensor_range(saved), vp_tensor_range(dloss), vp_tensor_range(dlogits)};
    return launch_items(cmd, &k_ce_backward, r, &push, push.N * push.C);
}

/* ---- binary cross-entropy with logits ------------------------------------------ */

static vp_status pair_check(const char *op, const vp_tensor *x, const vp_tensor *target)
{
    vp_status st = vp_check_f32(op, x);
    if (!st)
        st = vp_check_f32(op, target);
    if (!st)
        st = vp_check_same_shape(op, x, target);
    return st;
}

vp_status vp_op_bce_logits(vp_cmd *cmd, const vp_tensor *x, const vp_tensor *target,
                           vp_tensor *loss)
{
    const char *op = "bce_logits";
    vp_status st = pair_check(op, x, target);
    if (!st)
        st = check_scalar(op, "loss", loss);
    if (!st)
        st = vp_check_no_overlap(op, (vp_tensor *[]){loss}, 1, (const vp_tensor *[]){x, target}, 2);
    if (st)
        return st;
    uint32_t n = (uint32_t)vp_tensor_nelem(x);
    vp_range r[3] = {vp_tensor_range(x), vp_tensor_range(target), vp_tensor_range(loss)};
    return launch_groups(cmd, &k_bce, r, &n, 1);
}

vp_status vp_op_bce_logits_backward(vp_cmd *cmd, const vp_tensor *x, const vp_tensor *target,
                                    const vp_tensor *dloss, vp_tensor *dx, bool accumulate)
{
    const char *op = "bce_logits_backward";
    vp_status st = pair_check(op, x, target);
    if (!st)
        st = check_scalar(op, "dloss", dloss);
    if (!st)
        st = vp_check_f32(op, dx);
    if (!st)
        st = vp_check_same_shape(op, x, dx);
    if (!st)
        st = vp_check_no_overlap(op, (vp_tensor *[]){dx}, 1,
                           (const vp_tensor *[]){x, target, dloss}, 3);
    if (st)
        return st;
    struct { uint32_t n, accumulate; } push = {(uint32_t)vp_tensor_nelem(x), accumulate};
    vp_range r[4] = {vp_tensor_range(x), vp_tensor_range(target), vp_tensor_range(dloss),
                     vp_tensor_range(dx)};
    return launch_items(cmd, &k_bce_backward, r, &push, (push.n + 3) / 4);
}

/* ---- dice ---------------------------------------------------------------------- */

typedef struct dice_push {
    uint32_t M, P;
    float normalizer;
    uint32_t accumulate;
} dice_push;

static vp_status dice_check(const char *op, const vp_tensor *x, const vp_tensor *target,
                            float normalizer, dice_push *push)
{
    vp_status st = pair_check(op, x, target);
    if (st)
        return st;
    if (x->ndim < 2) {
        char s[64];
        vp_shape_str(x, s, sizeof s);
        return vp_error_set(VP_ERR_SHAPE, "%s: x %s %s must have at least 2 dimensions: "
                            "(masks, ...)", op, x->name, s);
    }
    if (!(normalizer > 0.0f) || normalizer > 3.4e38f)
        return vp_error_set(VP_ERR_INVALID, "%s: normalizer %g must be positive and finite", op,
                            (double)normalizer);
    push->M = (uint32_t)x->shape[0];
    push->P = (uint32_t)(vp_tensor_nelem(x) / x->shape[0]);
    push->normalizer = normalizer;
    return VP_OK;
}

vp_status vp_op_dice(vp_cmd *cmd, const vp_tensor *x, const vp_tensor *target, vp_tensor *loss,
                     float normalizer)
{
    const char *op = "dice";
    dice_push push = {0};
    vp_status st = dice_check(op, x, target, normalizer, &push);
    if (!st)
        st = check_scalar(op, "loss", loss);
    if (!st)
        st = vp_check_no_overlap(op, (vp_tensor *[]){loss}, 1, (const vp_tensor *[]){x, target}, 2);
    if (st)
        return st;
    vp_range r[3] = {vp_tensor_range(x), vp_tensor_range(target), vp_tensor_range(loss)};
    return launch_groups(cmd, &k_dice, r, &push, 1);
}

vp_status vp_op_dice_backward(vp_cmd *cmd, const vp_tensor *x, const vp_tensor *target,
                              const vp_tensor *dloss, vp_tensor *dx, float normalizer,
                              bool accumulate)
{
    const char *op = "dice_backward";
    dice_push push = {0};
    vp_status st = dice_check(op, x, target, normalizer, &push);
    if (!st)
        st = check_scalar(op, "dloss", dloss);
    if (!st)
        st = vp_check_f32(op, dx);
    if (!st)
        st = vp_check_same_shape(op, x, dx);
    if (!st)
        st = vp_check_no_overlap(op, (vp_tensor *[]){dx}, 1,
                           (const vp_tensor *[]){x, target, dloss}, 3);
    if (st)
        return st;
    push.accumulate = accumulate;
    vp_range r[4] = {vp_tensor_range(x), vp_tensor_range(target), vp_tensor_range(dloss),
                     vp_tensor_range(dx)};
    return launch_groups(cmd, &k_dice_backward, r, &push, push.M);
}
