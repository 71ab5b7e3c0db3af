/*
 * vpeft/kernel.h - a plugin's own compute shaders as graph ops, with their
 * backward written in graph ops.
 *
 *     // shaders/scale.comp compiled and embedded by sdk/vpeft-plugin.mk
 *     vp_kernel_desc d = {sizeof d, "ia3.scale", vp_spv_scale, sizeof vp_spv_scale,
 *                         3, sizeof(uint32_t) * 2, {64, 1, 1}};
 *     vp_custom_kernel *k;  H->kernel(g, &d, &k);      // again in this graph: the same k
 *     vp_custom_call c = {.size = sizeof c};
 *     c.kernel = k; c.n_in = 2; c.in = (vp_gt *[]){x, s};
 *     c.out_ndim = H->ndim(x); c.out_shape = H->shape(x);
 *     c.push = push; c.push_size = sizeof push; c.groups[0] = ...; c.groups[1] = c.groups[2] = 1;
 *     c.backward = scale_backward; c.reference = scale_reference;
 *     vp_gt *y = H->custom(g, &c);
 *
 * The shader's contract: GLSL compute, descriptor set 0 with storage
 * buffers at bindings 0 .. n_in (the inputs in order, then the output),
 * one push-constant block of push_size bytes (at most 128), and the local
 * size as specialization constants 0, 1, 2 (layout(local_size_x_id = 0,
 * local_size_y_id = 1, local_size_z_id = 2) in;). Every buffer is float32
 * unless the input is an int32 tensor. The kernel must write every output
 * element: the output is not cleared first. The host reads the SPIR-V at
 * registration and refuses a shader that does not fit d (a storage buffer
 * outside set 0 or at a binding >= n_bindings, a binding of d it does not
 * declare, a push-constant block larger than push_size, a local size that
 * is neither specialization constants 0, 1, 2 nor fixed at local_size).
 */
#ifndef VPEFT_KERNEL_H
#define VPEFT_KERNEL_H

#include <vpeft/tensor.h>

#ifdef __cplusplus
extern "C" {
#endif

typedef struct vp_kernel_desc {
    uint32_t size;           /* sizeof(vp_kernel_desc) */
    const char *name;        /* "<plugin>.<kernel>", in profiles and errors */
    const uint32_t *spirv;   /* copied by the host during the call */
    size_t spirv_bytes;
    uint32_t n_bindings;     /* inputs + 1 (the output), at most 8 */
    uint32_t push_size;      /* bytes, a multiple of 4, at most 128 */
    uint32_t local_size[3];
} vp_kernel_desc;

typedef struct vp_custom_kernel vp_custom_kernel; /* owned by the graph */

/* What a custom op's backward gets: the forward's tensors and the gradient
 * of its output. Set din[i] to the gradient of in[i] (a tensor of in[i]'s
 * shape built with the host's ops on g), or leave it NULL when needs[i] is
 * false or no gradient flows to it. The host adds each din[i] into in[i]'s
 * gradient. Valid during the call only. */
typedef struct vp_custom_grad {
    uint32_t size;
    uint32_t n_in;
    vp_gt *const *in;
    const bool *needs;
    vp_gt *out;
    vp_gt *dout;
    vp_gt **din;
} vp_custom_grad;
typedef vp_status (*vp_custom_backward_fn)(void *user, vp_graph *g, const vp_custom_grad *gr);

/* The op on the CPU in double precision, for the host's reference executor
 * (the whole-graph finite-difference checks `vpeft plugin-test` runs).
 * Shapes as in the call. */
typedef struct vp_custom_ref_io {
    uint32_t size;
    uint32_t n_in;
    const double *const *in;
    const int64_t *const *in_shape;
    const int *in_ndim;
    double *out;             /* every element of the output */
} vp_custom_ref_io;
typedef vp_status (*vp_custom_reference_fn)(void *user, const vp_custom_ref_io *io);

typedef struct vp_custom_call {
    uint32_t size;           /* sizeof(vp_custom_call) */
    vp_custom_kernel *kernel;
    uint32_t n_in;           /* = kernel's n_bindings - 1 */
    vp_gt *const *in;
    int out_ndim;
    const int64_t *out_shape;
    const void *push;        /* copied */
    uint32_t push_size;      /* = the kernel's */
    uint32_t groups[3];      /* workgroups to dispatch */
    vp_custom_backward_fn backward;   /* NULL: no gradient flows through the op */
    vp_custom_reference_fn reference; /* NULL: the graph has no CPU reference */
    void *user;              /* passed to both; must outlive the model */
} vp_custom_call;

#ifdef __cplusplus
}
#endif

#endif /* VPEFT_KERNEL_H */
