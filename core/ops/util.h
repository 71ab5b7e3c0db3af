/*
 * Checks and launch geometry shared by the op files.
 */
#ifndef VP_OPS_UTIL_H
#define VP_OPS_UTIL_H

#include "runtime/runtime.h"

#define VP_EW_LOCAL 256u  /* invocations per workgroup of elementwise kernels */

vp_status vp_check_f32(const char *op, const vp_tensor *t);
/* The same for index tensors: "%s: tensor %s is f32; this op takes i32". */
vp_status vp_check_i32(const char *op, const vp_tensor *t);
vp_status vp_check_same_shape(const char *op, const vp_tensor *a, const vp_tensor *b);
/* t has exactly ndim dimensions of sizes s. */
bool vp_shape_is(const vp_tensor *t, int ndim, const int64_t *s);
bool vp_ranges_overlap(vp_range a, vp_range b);
/* t has exactly one element: "<op>: [<role> ]<name> <shape> must have one
 * element". role may be NULL. */
vp_status vp_check_one(const char *op, const char *role, const vp_tensor *t);
/* No output overlaps an input or an earlier output (NULL entries skipped):
 * "<op>: output <o> overlaps input <i>", "<op>: outputs <a> and <b> overlap". */
vp_status vp_check_no_overlap(const char *op, vp_tensor *const *outs, int n_out,
                              const vp_tensor *const *ins, int n_in);
/* Workgroups (gx, gy) covering n invocations of `local` each, gx within the
 * device's limit; kernels index with flat_index() from common.glsl. */
void vp_grid_1d(const vp_device_info *d, uint32_t n, uint32_t local, uint32_t *gx, uint32_t *gy);
/* Get k's pipeline with spec constants {local, 1, 1, extra[0..n_extra-1]}
 * (local = VP_EW_LOCAL or the device's limit if lower) and record one
 * dispatch of n invocations over vp_grid_1d's grid: kernels that index with
 * flat_index() and skip i >= n. */
vp_status vp_dispatch_flat(vp_cmd *cmd, const vp_kernel *k, const uint32_t *extra,
                           uint32_t n_extra, const vp_range *bind, const void *push, uint32_t n);

#endif
