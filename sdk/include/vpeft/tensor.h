/*
 * vpeft/tensor.h - the tensors of the graph a plugin builds, and the plain
 * values that describe them: element types, initializers, host callbacks.
 *
 *     vp_graph *g = H->graph(b);                         // H: the host table
 *     vp_gt *h = H->gelu(g, x);                          // x: (B, N, C)
 *     const int64_t *s = H->shape(h);                    // {B, N, C}
 *     vp_init w0 = vp_init_normal(0.0f, 0.02f);
 *     vp_gt *w = H->param(b, "head.proj.weight", 2, (int64_t[]){10, s[2]}, &w0, true);
 *
 * A vp_gt is a node's output in a static graph: it has a shape and a type
 * but no data while the graph is being built. Tensors are owned by their
 * graph and valid until the model that built it is destroyed; plugins never
 * free them. Shapes are row-major, outermost first, at most VP_MAX_DIMS.
 */
#ifndef VPEFT_TENSOR_H
#define VPEFT_TENSOR_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include <vpeft/status.h>

#ifdef __cplusplus
extern "C" {
#endif

#define VP_MAX_DIMS 4

typedef struct vp_graph vp_graph; /* a graph under construction (opaque) */
typedef struct vp_gt vp_gt;       /* one of its tensors (opaque) */

typedef enum vp_dtype {
    VP_F32 = 0,
    VP_F16 = 1,
    VP_I32 = 2
} vp_dtype;

/* How a parameter gets its first values (before any weights file). A plain
 * value type, frozen for ABI major 1: new initializers are new kinds that
 * reuse a and b. fan_in = shape[1] * shape[2] * ..., fan_out = shape[0] *
 * shape[2] * ... (PyTorch's convention for Linear and Conv weights). */
typedef enum vp_init_kind {
    VP_INIT_ZEROS = 0,
    VP_INIT_ONES = 1,
    VP_INIT_CONSTANT = 2,        /* a */
    VP_INIT_NORMAL = 3,          /* mean a, standard deviation b */
    VP_INIT_UNIFORM = 4,         /* [a, b) */
    VP_INIT_XAVIER_UNIFORM = 5,  /* gain a (0 means 1): bound a * sqrt(6 / (fan_in + fan_out)) */
    VP_INIT_KAIMING_UNIFORM = 6, /* torch.nn.init.kaiming_uniform_ with negative slope a
                                  * (nn.Linear's default weight: a = sqrt(5)) */
    VP_INIT_DATA = 7,            /* data: every element, copied when the parameter is made */
    VP_INIT_LINEAR_BIAS = 8      /* nn.Linear's default bias: U(-1/sqrt(a), 1/sqrt(a)), a = fan_in
                                  * of the weight */
} vp_init_kind;

typedef struct vp_init {
    vp_init_kind kind;
    float a, b;
    const float *data; /* VP_INIT_DATA only; read during the call, not kept */
} vp_init;

static inline vp_init vp_init_const(float v) { vp_init i = {VP_INIT_CONSTANT, v, 0.0f, NULL}; return i; }
static inline vp_init vp_init_zeros(void) { vp_init i = {VP_INIT_ZEROS, 0.0f, 0.0f, NULL}; return i; }
static inline vp_init vp_init_ones(void) { vp_init i = {VP_INIT_ONES, 0.0f, 0.0f, NULL}; return i; }
static inline vp_init vp_init_normal(float mean, float std) { vp_init i = {VP_INIT_NORMAL, mean, std, NULL}; return i; }
static inline vp_init vp_init_uniform(float lo, float hi) { vp_init i = {VP_INIT_UNIFORM, lo, hi, NULL}; return i; }
static inline vp_init vp_init_xavier_uniform(float gain) { vp_init i = {VP_INIT_XAVIER_UNIFORM, gain, 0.0f, NULL}; return i; }
static inline vp_init vp_init_kaiming_uniform(float a) { vp_init i = {VP_INIT_KAIMING_UNIFORM, a, 0.0f, NULL}; return i; }
static inline vp_init vp_init_data(const float *d) { vp_init i = {VP_INIT_DATA, 0.0f, 0.0f, d}; return i; }

/* Level layout of a multi-scale deformable attention (Deformable DETR):
 * level l is an H_l x W_l map whose positions start at start[l] in the
 * flattened value sequence. */
#define VP_MSDEFORM_MAX_LEVELS 6
typedef struct vp_msdeform_levels {
    int n;                                    /* L */
    int64_t shape[VP_MSDEFORM_MAX_LEVELS][2]; /* (H_l, W_l) */
    int64_t start[VP_MSDEFORM_MAX_LEVELS];
} vp_msdeform_levels;

/* A host node's view of its data: small tensors read back from the device
 * (in), and outputs the callback fills (out), all float32. The pointers are
 * valid during the call only. */
typedef struct vp_host_io {
    uint32_t n_in, n_out;
    const float *const *in;      /* in[i]: all elements of input i */
    const int64_t *const *in_shape;
    const int *in_ndim;
    float *const *out;           /* out[i]: fill every element */
} vp_host_io;
/* Runs on the calling thread of the model's run, between two submits.
 * Return VP_OK, or an error set through the host's error(). */
typedef vp_status (*vp_host_fn)(void *user, const vp_host_io *io);

#ifdef __cplusplus
}
#endif

#endif /* VPEFT_TENSOR_H */
