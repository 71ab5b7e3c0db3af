/*
 * The static compute graph: built once per input shape, differentiated
 * once, planned once, recorded once, then run every step.
 *
 *     vp_graph *g;  vp_graph_create(dev, &g);
 *     vp_gt *x = vp_g_input(g, "x", 2, (int64_t[]){B, 384});
 *     vp_gt *w = vp_g_param(g, "fc.weight", 2, (int64_t[]){10, 384}, true);
 *     vp_gt *b = vp_g_param(g, "fc.bias", 1, (int64_t[]){10}, true);
 *     vp_gt *y = vp_g_linear(g, x, w, b);            // x w^T + b
 *     vp_gt *loss = vp_g_mean(g, vp_g_mul(g, y, y));
 *     vp_graph_backward(g, loss);                    // appends gradient nodes
 *     vp_graph_compile(g);                           // plan memory, record
 *     vp_graph_write(g, w, host_w, bytes); ...       // weights, then per step:
 *     vp_graph_write(g, x, batch, bytes);  vp_graph_run(g);
 *     vp_graph_read(g, loss, &l, sizeof l);
 *
 * Building never fails loudly: an op given bad shapes records the first
 * error in the graph and returns NULL, ops given NULL return NULL, and
 * vp_graph_backward / vp_graph_compile report that first error (naming the
 * op and tensors). Tensors are owned by the graph and valid until
 * vp_graph_destroy(). One thread per graph.
 */
#ifndef VP_GRAPH_H
#define VP_GRAPH_H

#include <vpeft/kernel.h>

#include "ops/msdeform.h"
#include "ops/optim.h"
#include "runtime/runtime.h"

/* vp_graph, vp_gt, vp_host_io and vp_host_fn come from <vpeft/tensor.h>. */

vp_status vp_graph_create(vp_device *dev, vp_graph **out);
void vp_graph_destroy(vp_graph *g);
vp_device *vp_graph_device(const vp_graph *g);
/* The first build error (VP_OK when none), its message in vp_error_last(). */
vp_status vp_graph_status(const vp_graph *g);

/* ---- leaves ---------------------------------------------------------------- */

/* Data the host writes before each run (a batch); zeros until written. */
vp_gt *vp_g_input(vp_graph *g, const char *name, int ndim, const int64_t *shape);
/* The same holding int32 (indices, class targets). The reference executor
 * keeps their values as doubles. */
vp_gt *vp_g_input_i32(vp_graph *g, const char *name, int ndim, const int64_t *shape);
/* A weight, persistent across runs. Trainable parameters get a gradient
 * (and, with an optimizer, moments) in flat buffers laid out alike; frozen
 * ones get neither. */
vp_gt *vp_g_param(vp_graph *g, const char *name, int ndim, const int64_t *shape,
                  bool trainable);
/* A constant; data (nelem floats) is copied now and uploaded at compile. */
vp_gt *vp_g_const(vp_graph *g, const char *name, int ndim, const int64_t *shape,
                  const float *data);

/* The same holding int32 (gather indices known at build time). */
vp_gt *vp_g_const_i32(vp_graph *g, const char *name, int ndim, const int64_t *shape,
                      const int32_t *data);

/* ---- ops ----------------------------------------------------------------------
 * Shapes as the kernels in core/ops (ops.h); all return a new tensor. */

/* op(a) op(b) + bias. b 2-D (a weight; a's batch dims fold into rows) or
 * batched like a. bias (N) or NULL. */
vp_gt *vp_g_gemm(vp_graph *g, vp_gt *a, bool trans_a, vp_gt *b, bool trans_b, vp_gt *bias);
/* x w^T + b with w (out, in) as PyTorch's nn.Linear; b may be NULL. */
vp_gt *vp_g_linear(vp_graph *g, vp_gt *x, vp_gt *w, vp_gt *b);
/* a + b, a * b: b has a's shape or a's trailing dimensions. */
vp_gt *vp_g_add(vp_graph *g, vp_gt *a, vp_gt *b);
vp_gt *vp_g_mul(vp_graph *g, vp_gt *a, vp_gt *b);
vp_gt *vp_g_scale(vp_graph *g, vp_gt *a, float s);
/* Same elements, another shape: no copy. */
vp_gt *vp_g_reshape(vp_graph *g, vp_gt *a, int ndim, const int64_t *shape);
/* Activations, elementwise. GELU is the exact (erf) form; softplus is
 * log(1 + e^x); silu (swish) is x sigmoid(x). */
vp_gt *vp_g_relu(vp_graph *g, vp_gt *x);
vp_gt *vp_g_gelu(vp_graph *g, vp_gt *x);
vp_gt *vp_g_sigmoid(vp_graph *g, vp_gt *x);
vp_gt *vp_g_softplus(vp_graph *g, vp_gt *x);
vp_gt *vp_g_silu(vp_graph *g, vp_gt *x);
/* Layer normalization over the last axis (PyTorch semantics); gamma and
 * beta (C) may be NULL. */
vp_gt *vp_g_layernorm(vp_graph *g, vp_gt *x, vp_gt *gamma, vp_gt *beta, float eps);
/* Softmax over the last axis; a row that is all -inf gives 0s. */
vp_gt *vp_g_softmax(vp_graph *g, vp_gt *x);
/* Losses, each a (1) tensor. Cross-entropy: logits (N, C), target (N) an
 * int32 input (< 0: ignored), weight (C) or NULL, mean weighted as
 * PyTorch's. BCE with logits: mean over elements. Dice on sigmoid masks as
 * Mask2Former's: x, target (M, ...), summed over masks / normalizer. */
vp_gt *vp_g_cross_entropy(vp_graph *g, vp_gt *logits, vp_gt *target, vp_gt *weight);
vp_gt *vp_g_bce_logits(vp_graph *g, vp_gt *x, vp_gt *target);
vp_gt *vp_g_dice(vp_graph *g, vp_gt *x, vp_gt *target, float normalizer);
/* Layout. permute: y.shape[i] = x.shape[perm[i]]; transpose swaps two
 * dimensions; concat along an axis (at most 8 inputs); slice takes len
 * entries from start along an axis; gather_rows: table (R, C) rows idx (N)
 * (an int32 input; out of range clamps). */
vp_gt *vp_g_permute(vp_graph *g, vp_gt *x, const int *perm);
vp_gt *vp_g_transpose(vp_graph *g, vp_gt *x, int d0, int d1);
vp_gt *vp_g_concat(vp_graph *g, vp_gt *const *xs, uint32_t n, int axis);
vp_gt *vp_g_slice(vp_graph *g, vp_gt *x, int axis, int64_t start, int64_t len);
vp_gt *vp_g_gather_rows(vp_graph *g, vp_gt *table, vp_gt *idx);
/* Rows of x (its last dimension C, any leading shape) rearranged by a map
 * known when building: the output (shape, last dimension C) has row n =
 * x's row idx[n], or zeros where idx[n] is -1 (padding); no row of x twice
 * (checked), so the gradient is the inverse map. One dispatch each way;
 * idx (nelem(shape) / C entries) is copied. Window partitions with padding
 * and cyclic shifts in one node. */
vp_gt *vp_g_row_map(vp_graph *g, vp_gt *x, const int32_t *idx, int ndim, const int64_t *shape);

/* Vision, channels-last maps (B, H, W, C). patch_embed: img (B, Cin, H, W)
 * with a PyTorch Conv2d weight (D, Cin, p, p) and bias (D) or NULL, kernel =
 * stride = p -> (B, (H/p)*(W/p), D). conv_transpose2: x (B, H, W, Cin), a
 * PyTorch ConvTranspose2d weight (Cin, Cout, 2, 2), stride 2 -> (B, 2H, 2W,
 * Cout). Bilinear resizing as F.interpolate(align_corners=False). */
vp_gt *vp_g_patch_embed(vp_graph *g, vp_gt *img, vp_gt *w, vp_gt *b, int patch);
vp_gt *vp_g_maxpool2(vp_graph *g, vp_gt *x);
vp_gt *vp_g_conv_transpose2(vp_graph *g, vp_gt *x, vp_gt *w, vp_gt *b);
vp_gt *vp_g_resize_bilinear(vp_graph *g, vp_gt *x, int64_t out_h, int64_t out_w);

/* Multi-scale deformable attention core (Deformable DETR): value (B, S, H,
 * Dh) over the levels (fixed per graph), loc (B, Q, H, L*P*2) as (x, y) in
 * [0, 1], attn (B, Q, H, L*P) -> (B, Q, H*Dh). See core/ops/msdeform.h. */
vp_gt *vp_g_msdeform(vp_graph *g, vp_gt *value, const vp_msdeform_levels *levels, vp_gt *loc,
                     vp_gt *attn);

/* A boolean mask (nonzero = masked) as an additive one (-inf where masked,
 * 0 elsewhere) for vp_g_attention; no gradient flows through it. */
vp_gt *vp_g_bool_mask(vp_graph *g, vp_gt *m);

/* Training builds (vp_graph_set_training, false by default) make dropout
 * drop; others make it the identity. */
void vp_graph_set_training(vp_graph *g, bool training);
/* Before compile: record only kernels whose results are the same bits on
 * every run (multi-scale deformable attention's backward gathers instead of
 * adding with float atomics; slower on GPUs). Off by default; the trainer
 * turns it on so that a resumed run repeats an uninterrupted one exactly. */
void vp_graph_set_deterministic(vp_graph *g, bool on);
/* Dropout: each element kept with probability 1 - p and scaled by
 * 1 / (1 - p), the mask new at every run (a seed advanced on the device at
 * the start of each run, from 0 at compile) and the same in the backward;
 * p in [0, 1). */
vp_gt *vp_g_dropout(vp_graph *g, vp_gt *x, float p);

/* Uniform random numbers in [0, 1): shape's elements drawn anew at every
 * run from the graph's seed (dropout's: advanced on the device at the start
 * of each run, saved in checkpoints), each rand tensor its own stream. No
 * gradient. For random sampling inside a step (Mask2Former's points). */
vp_gt *vp_g_rand(vp_graph *g, const char *name, int ndim, const int64_t *shape);

/* Mask2Former's masked attention, from mask logits (..., K): -inf where a
 * logit is < 0 (sigmoid < 0.5), 0 elsewhere, and a row (last axis) that
 * would mask every key is all 0 instead. No gradient flows through it. */
vp_gt *vp_g_logit_mask(vp_graph *g, vp_gt *logits);

/* Multi-head scaled dot-product attention: q (B, Nq, D), k and v (B, Nk,
 * D), heads dividing D; mask NULL or additive (-inf masks; a boolean mask
 * goes through vp_g_bool_mask first), broadcast onto
 * the scores (B, heads, Nq, Nk) from its trailing dimensions, or one mask
 * per image (B, 1, Nq, Nk) for every head; a query whose
 * keys are all masked attends to nothing (its output is 0). Scores scaled
 * by 1 / sqrt(D / heads). One fused node (core/ops/attention.h): no
 * permutes, no Nq x Nk scores stored; its backward is two dispatches (when
 * the mask trains, a third writes the score gradients, which gemms sum into
 * the mask's). -> (B, Nq, D) */
vp_gt *vp_g_attention(vp_graph *g, vp_gt *q, vp_gt *k, vp_gt *v, vp_gt *mask, int heads);

/* The same with the scale given and a bias that may train (Swin's relative
 * position bias): scores scale * q . k + bias, bias NULL or (M, Hb, Nq, Nk)
 * with M dividing B (image b adds bias[b % M]: Swin's per-window masks over
 * batch * windows) and Hb 1 or heads; (Hb, Nq, Nk) and (Nq, Nk) are taken
 * as M = 1. */
vp_gt *vp_g_attention_ex(vp_graph *g, vp_gt *q, vp_gt *k, vp_gt *v, vp_gt *bias, int heads,
                         float scale);

/* A plugin's own kernel as an op (see <vpeft/kernel.h>): vp_graph_kernel
 * copies the SPIR-V and builds its pipeline now, so a broken shader is
 * reported here; the kernel belongs to the graph. Registering the same
 * name again gives the same kernel (another descriptor under that name is
 * an error). vp_g_custom records one
 * call; its backward, if any, is built from graph ops by the plugin's
 * callback during vp_graph_backward. */
vp_status vp_graph_kernel(vp_graph *g, const vp_kernel_desc *d, vp_custom_kernel **out);
vp_gt *vp_g_custom(vp_graph *g, const vp_custom_call *call);

/* Sum and mean of all elements: shape (1). */
vp_gt *vp_g_sum(vp_graph *g, vp_gt *a);
vp_gt *vp_g_mean(vp_graph *g, vp_gt *a);

/* A host node: small inputs are read back, fn runs on the CPU, its outputs
 * are uploaded, and the graph goes on; it splits the graph into segments.
 * Outputs are constants to autodiff (no gradient flows through). Buffers
 * hold each tensor's own element type: an int32 input's in[i] and an int32
 * output's out[i] (out_dtypes[i] == VP_I32; out_dtypes NULL: all float32)
 * are int32 arrays behind the float pointers. */
/* outs[i] receives output i; out_shapes[i] has out_ndim[i] entries. */
vp_status vp_g_host(vp_graph *g, const char *name, vp_host_fn fn, void *user, uint32_t n_in,
                    vp_gt *const *ins, uint32_t n_out, const int *out_ndim,
                    const int64_t *const *out_shapes, const vp_dtype *out_dtypes,
                    vp_gt **outs);

/* ---- tensors ---------------------------------------------------------------- */

const char *vp_gt_name(const vp_gt *t);
int vp_gt_ndim(const vp_gt *t);
const int64_t *vp_gt_shape(const vp_gt *t);
int64_t vp_gt_nelem(const vp_gt *t);
vp_dtype vp_gt_dtype(const vp_gt *t);
/* A parameter that gets a gradient (and moments) when the graph trains. */
bool vp_gt_trainable(const vp_gt *t);
/* The gradient of t after vp_graph_backward (NULL when none flows to it). */
vp_gt *vp_g_grad(const vp_gt *t);
/* Keep t's values readable after a run (the planner would reuse its memory
 * otherwise). Losses passed to vp_graph_backward are kept. */
void vp_g_keep(vp_gt *t);
vp_gt *vp_graph_find(const vp_graph *g, const char *name);

/* ---- differentiate, compile, run -------------------------------------------- */

/* Append the gradient nodes of a scalar loss: every trainable parameter it
 * depends on gets vp_g_grad(). Once per graph. */
vp_status vp_graph_backward(vp_graph *g, vp_gt *loss);
/* Plan memory and record the command buffers; the graph is then fixed. */
vp_status vp_graph_compile(vp_graph *g);
/* Copy host data into an input, parameter or constant (after compile). */
vp_status vp_graph_write(vp_graph *g, vp_gt *t, const void *data, size_t bytes);
/* Copy a kept tensor, a parameter, a gradient or an input to the host. */
vp_status vp_graph_read(vp_graph *g, vp_gt *t, void *data, size_t bytes);
/* One step: every segment submitted once, host nodes in between. Parameter
 * gradients accumulate across runs until vp_graph_zero_grads(). */
vp_status vp_graph_run(vp_graph *g);
vp_status vp_graph_zero_grads(vp_graph *g);

/* Training: before compile, one AdamW (torch's, with clipping by the global
 * gradient norm when cfg->max_norm > 0) over every trainable parameter,
 * with moments laid out like the parameters. A parameter's learning rate
 * is lr times its multiplier (1 unless set, before compile). */
vp_status vp_graph_set_optimizer(vp_graph *g, const vp_adamw_cfg *cfg);
vp_status vp_g_param_lr_scale(vp_gt *param, float scale);
/* The gradients' sum of squares (as they stand: summed over the runs since
 * the last zeroing), computed on the device and read back as one float:
 * infinite or NaN when any gradient is. With an optimizer set, after
 * compile; one submit. */
vp_status vp_graph_grad_sqnorm(vp_graph *g, double *out);
/* After the runs of a step: clip, update and zero the gradients, one submit.
 * step counts from 1 (bias correction). */
vp_status vp_graph_step(vp_graph *g, float lr, int step);
/* The same after `runs` accumulated runs: the gradient sum is scaled by
 * 1 / runs first (clipping sees the scaled norm), as if each run's loss had
 * been divided by runs. */
vp_status vp_graph_step_accum(vp_graph *g, float lr, int step, int runs);

/* What a checkpoint needs besides the parameters: the AdamW moments, flat
 * in the trainable buffer's order (n = vp_graph_optim_len(), 0 without an
 * optimizer or before compile), and dropout's seed as it stands before
 * the next run (0 and ignored when the graph has no dropout). */
uint64_t vp_graph_optim_len(const vp_graph *g);
vp_status vp_graph_optim_read(vp_graph *g, float *m, float *v, uint64_t n);
vp_status vp_graph_optim_write(vp_graph *g, const float *m, const float *v, uint64_t n);
vp_status vp_graph_seed_read(vp_graph *g, uint32_t *seed);
/* The flat gradient buffer of the trainable parameters (laid out like the
 * moments, with zero padding between parameters), for averaging it across
 * processes between the runs of a step and vp_graph_step. */
uint64_t vp_graph_grads_len(const vp_graph *g);
vp_status vp_graph_grads_read(vp_graph *g, float *x, uint64_t n);
vp_status vp_graph_grads_write(vp_graph *g, const float *x, uint64_t n);
vp_status vp_graph_seed_write(vp_graph *g, uint32_t seed);

/* Gradient buckets, for averaging gradients across processes while the
 * backward pass still runs (as PyTorch's DDP does). Before compile: the
 * flat gradient buffer is cut into contiguous ranges of at least `bytes`
 * (whole parameters, from the last one back, the order the backward pass
 * finishes them in; bytes 0: one bucket), and a segment ends at the node
 * that writes a bucket's last gradient. */
vp_status vp_graph_set_buckets(vp_graph *g, uint64_t bytes);
typedef struct vp_grad_bucket {
    uint64_t offset, count; /* floats of the flat gradient buffer */
} vp_grad_bucket;
/* After compile: the buckets in the order a run finishes them, covering
 * the buffer once (NULL and 0 when not set or without gradients). */
const vp_grad_bucket *vp_graph_buckets(const vp_graph *g, uint32_t *n);
/* Bucket k (of vp_graph_buckets) is final: x, its count floats, is the
 * host copy at grads + offset, which the function may change in place. */
typedef vp_status (*vp_bucket_fn)(void *user, uint32_t k, float *x, uint64_t count);
/* vp_graph_run, handing each bucket to ready once the segment that
 * finishes it has run, while the device runs the next segment (on discrete
 * GPUs and devices without mapped memory the segment also copies the
 * bucket to a host buffer). grads: vp_graph_grads_len floats; after a successful run every
 * bucket has been handed over once, in order, and grads holds the
 * gradient (the sum since the last zeroing) as ready left it, while the
 * device's gradients are unchanged (vp_graph_grads_write puts grads back).
 * On failure, the buckets not handed over are the failed run's to account
 * for (a data-parallel caller still all-reduces them: dist.h). */
vp_status vp_graph_run_buckets(vp_graph *g, float *grads, vp_bucket_fn ready, void *user);

typedef struct vp_graph_mem {
    uint64_t activations; /* planned peak of the activation arena */
    uint64_t frozen;      /* frozen parameters */
    uint64_t trainable;   /* trainable parameters */
    uint64_t grads;       /* their gradients (trainable only) */
    uint64_t io;          /* inputs and constants */
    uint64_t optimizer;   /* AdamW moments (trainable only), multipliers, state */
    uint64_t total;
    uint64_t unplanned;   /* what the arena would be without reuse */
} vp_graph_mem;

/* ---- the CPU reference ------------------------------------------------------
 * The forward nodes evaluated in double with core/ref: for whole-graph
 * finite differences and for checking a device. Set leaves through
 * vp_graph_ref_data (inputs and parameters; constants are filled in), run,
 * read any tensor the same way. Views share their root's data. */
typedef struct vp_graph_ref vp_graph_ref;
vp_status vp_graph_ref_create(const vp_graph *g, vp_graph_ref **out);
void vp_graph_ref_destroy(vp_graph_ref *r);
double *vp_graph_ref_data(vp_graph_ref *r, const vp_gt *t);
vp_status vp_graph_ref_forward(vp_graph_ref *r);

typedef struct vp_graph_stats {
    uint32_t nodes, backward_nodes;
    uint32_t segments;          /* = submits per run */
    uint32_t dispatches;        /* per run */
    uint32_t barriers;          /* per run */
    uint64_t submits;           /* so far: runs' segments, optimizer steps, zeroing */
    double submit_ms;           /* host time spent waiting inside those submits */
    /* vp_graph_run_buckets so far: time in handing buckets over (copy and
     * ready), and the part of it the device was not busy for all along (an
     * upper bound of what the backward pass did not hide: hand-overs after
     * the last segment, or that outlasted the segment they ran beside) */
    double handover_ms, handover_exposed_ms;
} vp_graph_stats;

vp_graph_mem vp_graph_memory(const vp_graph *g);
vp_graph_stats vp_graph_get_stats(const vp_graph *g);

#endif
