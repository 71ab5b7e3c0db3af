/*
 * Layout ops: permute, concat, slice and the gather of table rows
 * (embedding lookup), each with its backward. Reshapes need no op: the
 * graph aliases the memory of a dense row-major tensor.
 *
 *     // (B, N, 3, H, D) qkv as (B*N, 3, H, D) -> (3, H, B*N, D)
 *     vp_op_permute(cmd, qkv, (int[]){1, 2, 0, 3}, heads);
 *     // class token + patch tokens along the token axis
 *     vp_op_concat(cmd, (const vp_tensor *[]){cls, patches}, 2, 1, tokens);
 *     vp_op_gather_rows(cmd, pos_table, pos_idx, pos);       // (N, C)
 *
 * Axes may be negative (counted from the end, as in PyTorch). Every op
 * computes in f32 (index tensors are i32) and copies exactly: outputs are
 * bit-for-bit the inputs (or their sums, for accumulate and the backward of
 * gather_rows). No output may overlap an input.
 */
#ifndef VP_OPS_LAYOUT_H
#define VP_OPS_LAYOUT_H

#include "runtime/runtime.h"

/* y.shape[i] = x.shape[perm[i]]; x and y have the same number of
 * dimensions (1 to 4) and perm lists each of 0..ndim-1 once. */
vp_status vp_op_permute(vp_cmd *cmd, const vp_tensor *x, const int *perm, vp_tensor *y);
/* dx (x's shape) = dy permuted back (the inverse permutation); perm is the
 * forward's. accumulate: false overwrites dx, true adds into it. */
vp_status vp_op_permute_backward(vp_cmd *cmd, const vp_tensor *dy, const int *perm, vp_tensor *dx,
                                 bool accumulate);

/* The kernel a permute runs; vp_op_permute picks one per device and shape.
 * The permutation is first canonicalised (size-1 dimensions dropped,
 * dimensions that stay adjacent merged). */
typedef enum vp_permute_kernel {
    VP_PERMUTE_AUTO = 0,  /* rows: COPY; transposes: TILES on GPUs (both tiled
                             extents >= 16), BLOCKS on CPU devices, else COPY */
    VP_PERMUTE_COPY = 1,  /* one element (a vec4 where the innermost dimension
                             stays and sizes allow) per invocation; any shape */
    VP_PERMUTE_TILES = 2, /* 32x32 tiles through shared memory, reads and writes
                             contiguous; the innermost dimension must move */
    VP_PERMUTE_BLOCKS = 3 /* 4x4 blocks in registers, vec4 loads and stores; the
                             innermost dimension must move, the two transposed
                             extents and the source strides be multiples of 4 */
} vp_permute_kernel;

/* With an explicit kernel (tests and benchmarks); a kernel that cannot run
 * the shape is VP_ERR_UNSUPPORTED, recorded before anything is dispatched. */
vp_status vp_op_permute_ex(vp_cmd *cmd, const vp_tensor *x, const int *perm, vp_tensor *y,
                           vp_permute_kernel kernel);
vp_status vp_op_permute_backward_ex(vp_cmd *cmd, const vp_tensor *dy, const int *perm,
                                    vp_tensor *dx, bool accumulate, vp_permute_kernel kernel);

/* y = xs[0..n-1] side by side along axis; every x has y's shape except
 * along axis, where the extents add up to y's. One dispatch per 7 inputs. */
vp_status vp_op_concat(vp_cmd *cmd, const vp_tensor *const *xs, uint32_t n, int axis,
                       vp_tensor *y);
/* dxs[k] (+)= the slice of dy that xs[k] filled; lens[k] is xs[k]'s extent
 * along axis. NULL entries (inputs that need no gradient) are skipped. */
vp_status vp_op_concat_backward(vp_cmd *cmd, const vp_tensor *dy, int axis, const int64_t *lens,
                                vp_tensor *const *dxs, uint32_t n, bool accumulate);

/* y = x[..., start:start+len, ...] along axis, where len is y's extent
 * there; every other extent of y equals x's. */
vp_status vp_op_slice(vp_cmd *cmd, const vp_tensor *x, int axis, int64_t start, vp_tensor *y);
/* dx (x's shape): dy in the sliced region and zero elsewhere, or, when
 * accumulating, dy added into the region and the rest left as it is. */
vp_status vp_op_slice_backward(vp_cmd *cmd, const vp_tensor *dy, int axis, int64_t start,
                               vp_tensor *dx, bool accumulate);

/* y (N, C) = table (R, C) [idx (N), i32]. An index outside [0, R) cannot be
 * reported from the device: it is clamped to the nearest valid row (below 0
 * reads row 0, R or above reads row R-1), and the backward routes that
 * row's gradient the same way, so forward and backward stay consistent. */
vp_status vp_op_gather_rows(vp_cmd *cmd, const vp_tensor *table, const vp_tensor *idx,
                            vp_tensor *y);

/* Rows of x by an index map with holes: x is any shape whose last dimension
 * C makes R rows; y holds N = nelem(idx) rows of C (any shape with that
 * last dimension); y[n] = x[idx[n]] for idx[n] in [0, R), a zero row
 * otherwise (-1: padding); accumulate adds into y. Where idx is injective
 * its gradient is the same op with the inverse map (vp_g_row_map builds
 * both). One dispatch, one invocation per element. */
vp_status vp_op_row_map(vp_cmd *cmd, const vp_tensor *x, const vp_tensor *idx, vp_tensor *y,
                        bool accumulate);

/* How the backward of gather_rows sums rows that several indices share. */
typedef enum vp_scatter_mode {
    /* DETERMINISTIC, unless R*N exceeds 2^24 and the device has float
     * atomics: the deterministic kernel compares every index with every
     * row, which is cheap for position and query embeddings (hundreds of
     * rows) and not for large vocabularies. */
    VP_SCATTER_AUTO = 0,
    /* Each (row, column) of dtable sums its dy rows in ascending n: the
     * result is the same bits on every run. R*N index compares per 64
     * columns; needs no device feature. */
    VP_SCATTER_DETERMINISTIC = 1,
    /* One float atomicAdd per element of dy: N*C work, summation order up
     * to the device. Needs vp_device_info.feat.float_atomic_add;
     * VP_ERR_UNSUPPORTED without it. */
    VP_SCATTER_ATOMIC = 2
} vp_scatter_mode;

/* dtable (R, C) (+)= for each n: row clamp(idx[n]) gets dy[n]. dy (N, C). */
vp_status vp_op_gather_rows_backward(vp_cmd *cmd, const vp_tensor *dy, const vp_tensor *idx,
                                     vp_tensor *dtable, bool accumulate);
vp_status vp_op_gather_rows_backward_ex(vp_cmd *cmd, const vp_tensor *dy, const vp_tensor *idx,
                                        vp_tensor *dtable, bool accumulate, vp_scatter_mode mode);

#endif
