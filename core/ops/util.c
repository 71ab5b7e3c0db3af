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

void vp_grid_1d(const vp_device_info *d, uint32_t n, uint32_t local, uint32_t *gx, uint32_t *gy)
{
    uint32_t groups = (n + local - 1) / local, maxx = d->max_wg_count[0];
    if (groups == 0)
        groups = 1;
    *gx = groups < maxx ? groups : maxx;
    *gy = (groups + *gx - 1) / *gx;
}
