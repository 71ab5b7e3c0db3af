/*
 * Checks and launch geometry shared by the op files.
 */
#include "ops/util.h"

vp_status vp_check_f32(const char *op, const vp_tensor *t)
{
    if (t->dtype != VP_F32)
        return vp_error_set(VP_ERR_UNSUPPORTED, "%s: tensor %s is %s; this op takes f32", op,
                            t->name, vp_dtype_str(t->dtype));
    if (vp_tensor_nelem(t) > UINT32_MAX / 4)
        return vp_error_set(VP_ERR_SHAPE, "%s: tensor %s has %lld elements, more than one "
                            "dispatch can index", op, t->name, (long long)vp_tensor_nelem(t));
    return VP_OK;
}

vp_status vp_check_i32(const char *op, const vp_tensor *t)
{
    if (t->dtype != VP_I32)
        return vp_error_set(VP_ERR_UNSUPPORTED, "%s: tensor %s is %s; this op takes i32", op,
                            t->name, vp_dtype_str(t->dtype));
    if (vp_tensor_nelem(t) > UINT32_MAX / 4)
        return vp_error_set(VP_ERR_SHAPE, "%s: tensor %s has %lld elements, more than one "
                            "dispatch can index", op, t->name, (long long)vp_tensor_nelem(t));
    return VP_OK;
}

bool vp_shape_is(const vp_tensor *t, int ndim, const int64_t *s)
{
    if (t->ndim != ndim)
        return false;
    for (int i = 0; i < ndim; i++)
        if (t->shape[i] != s[i])
            return false;
    return true;
}

vp_status vp_check_same_shape(const char *op, const vp_tensor *a, const vp_tensor *b)
{
    bool same = a->ndim == b->ndim;
    for (int i = 0; same && i < a->ndim; i++)
        same = a->shape[i] == b->shape[i];
    if (same)
        return VP_OK;
    char sa[64], sb[64];
    vp_shape_str(a, sa, sizeof sa);
    vp_shape_str(b, sb, sizeof sb);
    return vp_error_set(VP_ERR_SHAPE, "%s: %s %s and %s %s must have the same shape", op, a->name,
                        sa, b->name, sb);
}

bool vp_ranges_overlap(vp_range a, vp_range b)
{
    return a.buffer == b.buffer && a.offset < b.offset + b.size && b.offset < a.offset + a.size;
}

vp_status vp_check_one(const char *op, const char *role, const vp_tensor *t)
{
    if (vp_tensor_nelem(t) == 1)
        return VP_OK;
    char s[64];
    vp_shape_str(t, s, sizeof s);
    return vp_error_set(VP_ERR_SHAPE, "%s: %s%s%s %s must have one element", op, role ? role : "",
                        role ? " " : "", t->name, s);
}

vp_status vp_check_no_overlap(const char *op, vp_tensor *const *outs, int n_out,
                              const vp_tensor *const *ins, int n_in)
{
    for (int i = 0; i < n_out; i++) {
        if (!outs[i])
            continue;
        vp_range r = vp_tensor_range(outs[i]);
        for (int j = 0; j < n_in; j++)
            if (ins[j] && vp_ranges_overlap(r, vp_tensor_range(ins[j])))
                return vp_error_set(VP_ERR_INVALID, "%s: output %s overlaps input %s", op,
                                    outs[i]->name, ins[j]->name);
        for (int j = 0; j < i; j++)
            if (outs[j] && vp_ranges_overlap(r, vp_tensor_range(outs[j])))
                return vp_error_set(VP_ERR_INVALID, "%s: outputs %s and %s overlap", op,
                                    outs[j]->name, outs[i]->name);
    }
    return VP_OK;
}

void vp_grid_1d(const vp_device_info *d, uint32_t n, uint32_t local, uint32_t *gx, uint32_t *gy)
{
    uint32_t groups = (n + local - 1) / local, maxx = d->max_wg_count[0];
    if (groups == 0)
        groups = 1;
    *gx = groups < maxx ? groups : maxx;
    *gy = (groups + *gx - 1) / *gx;
}

vp_status vp_dispatch_flat(vp_cmd *cmd, const vp_kernel *k, const uint32_t *extra,
                           uint32_t n_extra, const vp_range *bind, const void *push, uint32_t n)
{
    vp_device *dev = vp_cmd_device(cmd);
    const vp_device_info *d = vp_device_get_info(dev);
    uint32_t local = d->max_wg_invocations < VP_EW_LOCAL ? d->max_wg_invocations : VP_EW_LOCAL;
    if (d->max_wg_size[0] < local)
        local = d->max_wg_size[0];
    uint32_t spec[VP_MAX_SPEC] = {local, 1, 1}, gx, gy;
    VP_ASSERT(n_extra <= VP_MAX_SPEC - 3);
    for (uint32_t i = 0; i < n_extra; i++)
        spec[3 + i] = extra[i];
    vp_pipeline *p;
    vp_status st = vp_pipeline_get(dev, k, spec, 3 + n_extra, &p);
    if (st)
        return st;
    vp_grid_1d(d, n, local, &gx, &gy);
    return vp_cmd_dispatch(cmd, p, bind, k->n_bindings, push, k->push_size, gx, gy, 1);
}
