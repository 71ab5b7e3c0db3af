/*
 * Ops recorded into a command buffer. Each op checks shapes and dtypes (an
 * error names the tensors and both shapes), picks its pipeline for the
 * device, and records one dispatch; nothing runs until vp_cmd_submit().
 * Each op has a CPU reference in core/ref with the same semantics.
 *
 *     vp_op_matmul(cmd, x, false, w, true, y);   // y = x w^T
 *     vp_op_add(cmd, y, bias, y);                // bias broadcast over rows
 *     vp_cmd_submit(cmd);
 */
#ifndef VP_OPS_H
#define VP_OPS_H

#include "runtime/runtime.h"

#include "ops/attention.h"
#include "ops/loss.h"
#include "ops/msdeform.h"
#include "ops/nn.h"
#include "ops/optim.h"

/* c = op(a) op(b), batched.
 *   a: (..., M, K), or (..., K, M) when trans_a
 *   b: (..., K, N), or (..., N, K) when trans_b
 *   c: (..., M, N)
 * The leading (batch) dimensions of a and b each either equal c's or are
 * all 1 (broadcast). c must not overlap a or b. */
vp_status vp_op_matmul(vp_cmd *cmd, const vp_tensor *a, bool trans_a, const vp_tensor *b,
                       bool trans_b, vp_tensor *c);

/* The general form: c = op(a) op(b) + bias, or c += op(a) op(b) + bias when
 * accumulate. bias (N) or NULL is added to every row; cfg NULL picks the
 * device's default kernel. Shapes as vp_op_matmul. */
struct vp_matmul_cfg;
vp_status vp_op_gemm(vp_cmd *cmd, const vp_tensor *a, bool trans_a, const vp_tensor *b,
                     bool trans_b, const vp_tensor *bias, vp_tensor *c, bool accumulate,
                     const struct vp_matmul_cfg *cfg);

/* The same, also giving rowsum (M) (+)= the row sums of op(a) (sum over K)
 * in the same pass, rs_acc adding: with a = dy (rows, out) transposed and
 * b = x (rows, in), c is a linear layer's weight gradient and rowsum its
 * bias's. Only where vp_gemm_rowsum_ok: the subgroup tiling, trans_a, one
 * batch; VP_ERR_UNSUPPORTED elsewhere. rowsum NULL is vp_op_gemm. */
vp_status vp_op_gemm_rowsum(vp_cmd *cmd, const vp_tensor *a, bool trans_a, const vp_tensor *b,
                            bool trans_b, vp_tensor *c, bool accumulate, vp_tensor *rowsum,
                            bool rs_acc, const struct vp_matmul_cfg *cfg);
/* Whether the device's default matmul gives row sums (vp_op_gemm_rowsum). */
bool vp_gemm_rowsum_ok(const vp_device_info *d);

/* Kernel choice for matmul; vp_op_matmul uses vp_matmul_default_cfg(). */
typedef enum vp_matmul_kernel {
    VP_MATMUL_TILED = 0,  /* register tiles, vec4 loads where shapes allow */
    VP_MATMUL_NAIVE = 1   /* one output per invocation: a baseline for benchmarks */
} vp_matmul_kernel;

/* How the tiled kernel shares loads between invocations (shaders/matmul.comp
 * says why each exists). */
typedef enum vp_matmul_tiling {
    VP_MATMUL_REGISTERS = 0, /* each invocation loads what its own tm x tn block needs */
    VP_MATMUL_SUBGROUP = 1,  /* a subgroup computes tm x (subgroup size * tn) together and
                                shuffles A rows between lanes; wg_x must be a multiple of
                                the subgroup size, which must be fixed (CPUs) */
    VP_MATMUL_SHARED = 2     /* a workgroup stages (wg_y*tm) x bk and bk x (wg_x*tn) tiles
                                in shared memory (GPUs) */
} vp_matmul_tiling;

typedef struct vp_matmul_cfg {
    vp_matmul_kernel kernel;
    uint32_t wg_x, wg_y;  /* local size */
    uint32_t tm, tn;      /* outputs per invocation, multiples of 4 (tiled only) */
    bool no_vec4;         /* force the scalar-load path (tiled only) */
    /* Appended; zero keeps the meaning of the fields above (registers). */
    vp_matmul_tiling tiling; /* tiled only */
    uint32_t bk;          /* VP_MATMUL_SHARED: K step, a multiple of 4; 0 means 16 */
} vp_matmul_cfg;

/* The tile sizes vpeft picks for this device (by type and subgroup size). */
/* Whether the device can run VP_MATMUL_SUBGROUP: subgroup shuffles in
 * compute shaders and a fixed subgroup size. */
bool vp_matmul_subgroup_ok(const vp_device_info *d);
vp_matmul_cfg vp_matmul_default_cfg(const vp_device_info *d);
vp_status vp_op_matmul_ex(vp_cmd *cmd, const vp_tensor *a, bool trans_a, const vp_tensor *b,
                          bool trans_b, vp_tensor *c, const vp_matmul_cfg *cfg);

/* out = a + b and out = a * b. b has a's shape, or the shape of a's
 * trailing dimensions (then it repeats over the leading ones: a bias).
 * out has a's shape and may be a itself (or b when b has a's shape). */
vp_status vp_op_add(vp_cmd *cmd, const vp_tensor *a, const vp_tensor *b, vp_tensor *out);
vp_status vp_op_mul(vp_cmd *cmd, const vp_tensor *a, const vp_tensor *b, vp_tensor *out);

/* The same with accumulation: out (+)= a op b. */
typedef enum vp_binary_op { VP_BIN_ADD = 0, VP_BIN_MUL = 1 } vp_binary_op;
vp_status vp_op_binary(vp_cmd *cmd, vp_binary_op op, const vp_tensor *a, const vp_tensor *b,
                       vp_tensor *out, bool accumulate);

/* out = alpha * a; out has a's shape and may be a. */
vp_status vp_op_scale(vp_cmd *cmd, const vp_tensor *a, float alpha, vp_tensor *out);
/* y = alpha * x, or y += alpha * x when accumulate; same shapes. */
vp_status vp_op_axpy(vp_cmd *cmd, const vp_tensor *x, float alpha, vp_tensor *y,
                     bool accumulate);

/* A boolean mask (nonzero = masked) as an additive one: out = m != 0 ?
 * -inf : 0, for attention scores. m, out: same shape; out may be m. */
vp_status vp_op_bool_to_additive(vp_cmd *cmd, const vp_tensor *m, vp_tensor *out);

/* Every element of out = value. */
vp_status vp_op_fill(vp_cmd *cmd, vp_tensor *out, float value);

#include "ops/layout.h"
#include "ops/vision.h"

#endif
