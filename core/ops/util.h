/*
 * Checks and launch geometry shared by the op files.
 */
#ifndef VP_OPS_UTIL_H
#define VP_OPS_UTIL_H

#include "runtime/runtime.h"

#define VP_EW_LOCAL 256u  /* invocations per workgroup of elementwise kernels */

vp_status vp_check_f32(const char *op, const vp_tensor *t);
vp_status vp_check_same_shape(const char *op, const vp_tensor *a, const vp_tensor *b);
bool vp_ranges_overlap(vp_range a, vp_range b);
/* Workgroups (gx, gy) covering n invocations of `local` each, gx within the
 * device's limit; kernels index with flat_index() from common.glsl. */
void vp_grid_1d(const vp_device_info *d, uint32_t n, uint32_t local, uint32_t *gx, uint32_t *gy);

#endif
