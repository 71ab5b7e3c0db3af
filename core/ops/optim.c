/*
 * Optimizer ops: the sum of squares over the trainable gradients
 * (optim_sqnorm.comp) and AdamW (optim_adamw.comp), with the host helpers
 * that fill AdamW's per-step state tensor. Semantics in optim.h.
 *
 * Why the state tensor: a training step is recorded once and replayed, so
 * the learning rate and the bias corrections, which change every step,
 * cannot be push constants; the host writes four floats before each submit
 * and the kernel reads them. Clipping needs the global norm, which depends
 * on every gradient: vp_op_sqnorm writes it to a one-element tensor that
 * every vp_op_adamw of the step reads, with a barrier between them that the
 * command recorder inserts (read after write), and no host round trip.
 */
#include "ops/optim.h"

#include <math.h>
#include <stdio.h>

#include "ops/loss.h"
#include "ops/util.h"

#define SQNORM_SLOTS 7 /* inputs per dispatch: 8 bindings, one for the output */

/* bindings: x0..x6, out (read and written); push: n[7], accumulate */
static const vp_kernel k_sqnorm = {"optim_sqnorm", 8, 0x80, 32, NULL, 0};
/* bindings: grad, state, sqnorm, lr_scale, then param, m, v (updated);
 * push: n, beta1, beta2, eps, weight decay, max_norm, has_scale */
static const vp_kernel k_adamw = {"optim_adamw", 7, 0x70, 28, NULL, 0};

vp_status vp_op_sqnorm(vp_cmd *cmd, const vp_tensor *const *xs, uint32_t n, vp_tensor *out)
{
    const char *op = "sqnorm";
    if (n == 0)
        return vp_error_set(VP_ERR_INVALID, "%s: no tensors given", op);
    vp_status st = vp_check_f32(op, out);
    if (st)
        return st;
    if ((st = vp_check_one(op, "out", out)))
        return st;
    for (uint32_t i = 0; i < n; i++) {
        if ((st = vp_check_f32(op, xs[i])) ||
            (st = vp_check_no_overlap(op, &out, 1, &xs[i], 1)))
            return st;
    }
    vp_device *dev = vp_cmd_device(cmd);
    uint32_t spec[3] = {vp_loss_reduce_local(vp_device_get_info(dev)), 1, 1};
    vp_pipeline *p;
    if ((st = vp_pipeline_get(dev, &k_sqnorm, spec, 3, &p)))
        return st;
    /* Seven tensors per dispatch; each later dispatch adds to out, in order. */
    for (uint32_t first = 0; first < n; first += SQNORM_SLOTS) {
        struct { uint32_t n[SQNORM_SLOTS], accumulate; } push = {{0}, first > 0};
        vp_range r[SQNORM_SLOTS + 1];
        for (uint32_t j = 0; j < SQNORM_SLOTS; j++) {
            /* an unused slot binds the first input again and reads none of it */
            const vp_tensor *x = first + j < n ? xs[first + j] : xs[first];
            r[j] = vp_tensor_range(x);
            push.n[j] = first + j < n ? (uint32_t)vp_tensor_nelem(x) : 0;
        }
        r[SQNORM_SLOTS] = vp_tensor_range(out);
        if ((st = vp_cmd_dispatch(cmd, p, r, k_sqnorm.n_bindings, &push, sizeof push, 1, 1, 1)))
            return st;
    }
    return VP_OK;
}

vp_adamw_cfg vp_adamw_default_cfg(void)
{
    return (vp_adamw_cfg){.beta1 = 0.9f, .beta2 = 0.999f, .eps = 1e-8f, .weight_decay = 0.01f,
                          .max_norm = 0.0f};
}

static vp_status cfg_check(const char *op, const vp_adamw_cfg *cfg)
{
    if (!cfg)
        return vp_error_set(VP_ERR_INVALID, "%s: no configuration given", op);
    if (!(cfg->beta1 >= 0.0f && cfg->beta1 < 1.0f) || !(cfg->beta2 >= 0.0f && cfg->beta2 < 1.0f))
        return vp_error_set(VP_ERR_INVALID, "%s: betas (%g, %g) must be in [0, 1)", op,
                            (double)cfg->beta1, (double)cfg->beta2);
    if (!(cfg->eps >= 0.0f && isfinite(cfg->eps)))
        return vp_error_set(VP_ERR_INVALID, "%s: eps %g must be >= 0 and finite", op,
                            (double)cfg->eps);
    if (!(cfg->weight_decay >= 0.0f && isfinite(cfg->weight_decay)))
        return vp_error_set(VP_ERR_INVALID, "%s: weight decay %g must be >= 0 and finite", op,
                            (double)cfg->weight_decay);
    if (!(cfg->max_norm >= 0.0f && isfinite(cfg->max_norm)))
        return vp_error_set(VP_ERR_INVALID, "%s: max_norm %g must be >= 0 and finite (0: no "
                            "clipping)", op, (double)cfg->max_norm);
    return VP_OK;
}

vp_status vp_adamw_state(float lr, int step, const vp_adamw_cfg *cfg, float out[4])
{
    vp_status st = cfg_check("adamw_state", cfg);
    if (st)
        return st;
    if (step < 1)
        return vp_error_set(VP_ERR_INVALID, "adamw_state: step %d: steps count from 1", step);
    if (!(lr >= 0.0f && isfinite(lr)))
        return vp_error_set(VP_ERR_INVALID, "adamw_state: learning rate %g must be >= 0 and "
                            "finite", (double)lr);
    out[0] = lr;
    out[1] = (float)(1.0 - pow((double)cfg->beta1, step));
    out[2] = (float)(1.0 - pow((double)cfg->beta2, step));
    out[3] = 1.0f;
    return VP_OK;
}

/* t is f32 with n elements; role names it in the message. */
static vp_status check_len(const char *op, const char *role, const vp_tensor *t, int64_t n)
{
    vp_status st = vp_check_f32(op, t);
    if (st || vp_tensor_nelem(t) == n)
        return st;
    char s[64], want[32] = "one element";
    vp_shape_str(t, s, sizeof s);
    if (n != 1)
        snprintf(want, sizeof want, "%lld elements", (long long)n);
    return vp_error_set(VP_ERR_SHAPE, "%s: %s %s %s must have %s", op, role, t->name, s, want);
}

vp_status vp_op_adamw(vp_cmd *cmd, vp_tensor *param, const vp_tensor *grad, vp_tensor *m,
                      vp_tensor *v, const vp_tensor *state, const vp_tensor *sqnorm,
                      const vp_tensor *lr_scale, const vp_adamw_cfg *cfg)
{
    const char *op = "adamw";
    vp_status st = cfg_check(op, cfg);
    if (st)
        return st;
    const vp_tensor *same[5] = {param, grad, m, v, lr_scale};
    for (int i = 0; i < 5; i++) {
        if (!same[i])
            continue;
        if ((st = vp_check_f32(op, same[i])) || (st = vp_check_same_shape(op, param, same[i])))
            return st;
        for (int j = 0; j < i; j++)
            if (same[j] && vp_ranges_overlap(vp_tensor_range(same[j]), vp_tensor_range(same[i])))
                return vp_error_set(VP_ERR_INVALID, "%s: %s and %s overlap", op, same[j]->name,
                                    same[i]->name);
    }
    if ((st = check_len(op, "state", state, 4)))
        return st;
    if (cfg->max_norm > 0.0f && !sqnorm)
        return vp_error_set(VP_ERR_INVALID, "%s: max_norm %g needs the squared gradient norm, "
                            "and sqnorm is NULL", op, (double)cfg->max_norm);
    if (sqnorm && (st = check_len(op, "sqnorm", sqnorm, 1)))
        return st;
    /* state and sqnorm are read while param, m, v are written */
    const vp_tensor *ro[2] = {state, sqnorm}, *upd[3] = {param, m, v};
    for (int i = 0; i < 2; i++)
        for (int j = 0; j < 3; j++)
            if (ro[i] && vp_ranges_overlap(vp_tensor_range(ro[i]), vp_tensor_range(upd[j])))
                return vp_error_set(VP_ERR_INVALID, "%s: %s overlaps %s, which it updates", op,
                                    ro[i]->name, upd[j]->name);
    struct {
        uint32_t n;
        float beta1, beta2, eps, wd, max_norm;
        uint32_t has_scale;
    } push = {(uint32_t)vp_tensor_nelem(param), cfg->beta1, cfg->beta2, cfg->eps,
              cfg->weight_decay, sqnorm ? cfg->max_norm : 0.0f, lr_scale != NULL};
    vp_range rs = vp_tensor_range(state);
    vp_range r[7] = {vp_tensor_range(grad), rs, sqnorm ? vp_tensor_range(sqnorm) : rs,
                     lr_scale ? vp_tensor_range(lr_scale) : rs, vp_tensor_range(param),
                     vp_tensor_range(m), vp_tensor_range(v)};
    vp_device *dev = vp_cmd_device(cmd);
    const vp_device_info *d = vp_device_get_info(dev);
    uint32_t spec[3] = {VP_EW_LOCAL, 1, 1}, gx, gy;
    vp_pipeline *p;
    if ((st = vp_pipeline_get(dev, &k_adamw, spec, 3, &p)))
        return st;
    vp_grid_1d(d, (push.n + 3) / 4, VP_EW_LOCAL, &gx, &gy);
    return vp_cmd_dispatch(cmd, p, r, k_adamw.n_bindings, &push, sizeof push, gx, gy, 1);
}
