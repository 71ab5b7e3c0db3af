/*
 * Private structures of core/graph: tensors, nodes, the planned buffers and
 * the recorded segments.
 */
#ifndef VP_GRAPH_INTERNAL_H
#define VP_GRAPH_INTERNAL_H

#include "graph/graph.h"
#include "ops/msdeform.h"
#include "ops/optim.h"

#define VP_GMAX_IN 8
#define VP_GMAX_OUT 8
#define VP_NAME_MAX 160 /* tensor and node names: hierarchical parameter paths are long */

typedef enum vp_gt_kind {
    VP_GT_ACT = 0,  /* written by a node; planned in the activation arena */
    VP_GT_INPUT,    /* written by the host each run */
    VP_GT_CONST,    /* written at compile */
    VP_GT_PARAM,    /* a weight: frozen or trainable flat buffer */
    VP_GT_PGRAD,    /* a trainable parameter's gradient: the flat grad buffer */
    VP_GT_VIEW      /* another shape of view_of's memory */
} vp_gt_kind;

typedef enum vp_gbuf {
    VP_BUF_ARENA = 0,
    VP_BUF_IO,
    VP_BUF_FROZEN,
    VP_BUF_TRAIN,
    VP_BUF_GRAD,
    VP_BUF_M,          /* AdamW moments, laid out like VP_BUF_TRAIN */
    VP_BUF_V,
    VP_BUF_LRSCALE,    /* per-element learning-rate multipliers, when any differs from 1 */
    VP_BUF_OPT,        /* optimizer state (4 floats) and the squared gradient norm */
    VP_BUF_COUNT
} vp_gbuf;

/* Ops a node can run. Forward ops have a backward rule in autodiff.c;
 * the rest exist only as gradient plumbing. */
typedef enum vp_gop {
    VP_GOP_GEMM = 0,   /* out = op(in0) op(in1) (+ in2 bias); backward only: out1 = the
                        * row sums of op(in0) (a bias gradient, vp_op_gemm_rowsum) */
    VP_GOP_ADD,        /* out = in0 + in1 (broadcast) */
    VP_GOP_MUL,        /* out = in0 * in1 (broadcast) */
    VP_GOP_AXPY,       /* out = fp[0] * in0 (scale) */
    VP_GOP_FILL,       /* out = fp[0] */
    VP_GOP_HOST,       /* CPU callback */
    VP_GOP_RELU,       /* out = relu(in0) */
    VP_GOP_GELU,       /* out = gelu(in0) */
    VP_GOP_LAYERNORM,  /* out0 = layernorm(in0; in1 gamma, in2 beta, fp0 eps), out1 mean, out2 rstd */
    VP_GOP_SOFTMAX,    /* out = softmax(in0) over the last axis */
    VP_GOP_CE,         /* out0 = cross_entropy(in0 logits, in1 target, in2 weight|NULL), out1 saved */
    VP_GOP_BCE,        /* out = bce_with_logits(in0, in1 target) */
    VP_GOP_DICE,       /* out = dice(in0, in1 target) / fp0 */
    VP_GOP_PERMUTE,    /* out = permute(in0), ip[0..3] perm */
    VP_GOP_CONCAT,     /* out = concat(in0..in{n-1}) along ip[0] */
    VP_GOP_SLICE,      /* out = in0[start ip[1], length out's] along ip[0] */
    VP_GOP_GATHER,     /* out = in0 (table) rows in1 (i32 idx) */
    VP_GOP_IM2COL,     /* out = patches of in0 (B, C, H, W), ip[0] patch */
    VP_GOP_MAXPOOL2,   /* out0 = maxpool2(in0), out1 argmax (i32) */
    VP_GOP_D2S,        /* out = depth_to_space2(in0) + in1 bias|NULL */
    VP_GOP_RESIZE,     /* out = bilinear resize of in0 to out's size */
    VP_GOP_MSDEFORM,   /* out = msdeform(in0 value, in1 loc, in2 attn), ip[0] levels index */
    VP_GOP_BOOLMASK,   /* out = in0 != 0 ? -inf : 0 (no gradient) */
    VP_GOP_CUSTOM,     /* out = a plugin's kernel on in0..; custom: the call (custom.c) */
    VP_GOP_ACT,        /* out = act(in0), ip[0] the vp_act (sigmoid, softplus, silu) */
    VP_GOP_LOGITMASK,  /* out = logit_mask(in0) (no gradient) */
    VP_GOP_DROPOUT,    /* out = dropout(in0; in1 the graph's seed, fp0 p) */
    VP_GOP_RAND,       /* out = uniform [0, 1) from in0 (the graph's seed), ip[0] salt */
    VP_GOP_ROWMAP,     /* out (+)= rows of in0 by in1 (i32, -1: zeros); in2 the inverse
                        * map (the backward is the same op with the two swapped) */
    VP_GOP_ATTN,       /* out0 = attention(in0 q, in1 k, in2 v, in3 bias|NULL), out1 lse;
                        * ip[0] heads, fp[0] scale (ops/attention.h) */
    /* gradient plumbing */
    VP_GOP_RELU_BWD,   /* out (+)= relu'(in0) * in1 */
    VP_GOP_GELU_BWD,   /* out (+)= gelu'(in0) * in1 */
    VP_GOP_ACT_BWD,    /* out (+)= act'(in0) * in1, ip[0] the vp_act */
    VP_GOP_DROPOUT_BWD,/* out (+)= dropout mask of in1 (seed), fp0 p, on in0 = dy */
    VP_GOP_LN_BWD,     /* in: x, gamma|NULL, mean, rstd, dy; out: dx, dgamma|NULL, dbeta|NULL;
                        * acc[0] for dx, acc[1] (= acc[2]) for dgamma and dbeta */
    VP_GOP_SOFTMAX_BWD,/* out (+)= softmax backward(in0 = y, in1 = dy) */
    VP_GOP_CE_BWD,     /* in: logits, target, weight|NULL, saved, dloss; out: dlogits */
    VP_GOP_BCE_BWD,    /* in: x, target, dloss; out: dx */
    VP_GOP_DICE_BWD,   /* in: x, target, dloss; out: dx; fp0 normalizer */
    VP_GOP_PERMUTE_BWD,/* out (+)= inverse permute(in0 = dy), ip[0..3] the forward's perm */
    VP_GOP_CONCAT_BWD, /* in0 dy; out k (+)= its slice (NULL: skipped); ip[0] axis */
    VP_GOP_SLICE_BWD,  /* out (+)= in0 = dy placed at ip[1] along ip[0] */
    VP_GOP_GATHER_BWD, /* out (table grad) (+)= rows of in0 = dy at in1 = idx */
    VP_GOP_IM2COL_BWD, /* out (+)= in0 = dcols put back; ip[0] patch */
    VP_GOP_MAXPOOL_BWD,/* out (+)= in0 = dy routed by in1 = argmax */
    VP_GOP_D2S_BWD,    /* in0 dy; out0 dx, out1 dbias|NULL */
    VP_GOP_RESIZE_BWD, /* out (+)= resize backward of in0 = dy */
    VP_GOP_MSDEFORM_BWD,/* in: value, loc, attn, dy; out: dvalue, dloc, dattn (own acc each) */
    VP_GOP_ATTN_BWD,   /* in: q, k, v, bias|NULL, lse, dy; out: dq, dk, dv (own acc
                        * each), stats (scratch), ds (only when n_out is 5) */
    VP_GOP_COUNT
} vp_gop;

struct vp_gt {
    uint32_t id;
    char name[VP_NAME_MAX];
    vp_dtype dtype;
    int ndim;
    int64_t shape[VP_MAX_DIMS];
    vp_gt_kind kind;
    bool trainable;      /* VP_GT_PARAM */
    float lr_scale;      /* VP_GT_PARAM: learning-rate multiplier (1 unless set) */
    bool requires_grad;  /* depends on a trainable parameter */
    bool keep;           /* readable after a run */
    vp_gt *view_of;      /* VP_GT_VIEW: the tensor whose memory this is */
    int64_t view_off;    /* VP_GT_VIEW: where in view_of it starts, in elements
                          * (nonzero only for slices of parameters, inputs and
                          * constants: vp_g_slice) */
    vp_gt *grad;
    bool grad_written;   /* on a gradient's root: a first write happened */
    vp_gt *param;        /* VP_GT_PGRAD: whose gradient */
    float *const_data;   /* VP_GT_CONST until compile */
    /* planning */
    int first, last;     /* node indices of first write and last use */
    vp_gbuf buf;
    uint64_t offset;
    vp_tensor rt;        /* the runtime view, after compile */
};

typedef struct vp_gnode {
    vp_gop op;
    vp_gt *in[VP_GMAX_IN];
    uint32_t n_in;
    vp_gt *out[VP_GMAX_OUT];
    uint32_t n_out;
    bool acc[VP_GMAX_OUT];   /* accumulate into out[i] instead of overwriting */
    bool backward;           /* emitted by autodiff */
    vp_gt *shape_of[VP_GMAX_IN]; /* tensors whose shapes (not data) the node needs */
    int32_t ip[8];           /* integer parameters (op-specific) */
    float fp[4];             /* float parameters (op-specific) */
    vp_host_fn host_fn;
    void *host_user;
    struct vp_custom_rec *custom; /* VP_GOP_CUSTOM */
    char name[VP_NAME_MAX];
} vp_gnode;

typedef struct vp_segment {
    uint32_t first, end;     /* nodes [first, end) */
    vp_cmd *cmd;
    vp_gnode *host;          /* the host node that follows, or NULL */
    uint32_t b_first, b_end; /* gradient buckets final after it (ready order) */
} vp_segment;

struct vp_graph {
    vp_device *dev;
    vp_gt **tensors;
    uint32_t n_tensors, cap_tensors;
    uint32_t *names;         /* open-addressing hash of tensor names: index + 1, 0 empty;
                              * the first tensor of a name (graph.c) */
    uint32_t cap_names;      /* a power of two, at least twice n_tensors; 0 before any */
    vp_gnode *nodes;
    uint32_t n_nodes, cap_nodes;
    uint32_t n_forward;      /* nodes before vp_graph_backward */
    vp_status err;           /* first build error, sticky */
    char err_msg[1024];
    bool differentiated, compiled;
    vp_msdeform_levels *levels; /* level layouts of msdeform nodes (ip[0] indexes) */
    vp_gt **borrowed;        /* autodiff: activations whose gradient is, for now, another
                              * tensor's gradient memory, read-only (autodiff.c) */
    uint32_t n_borrowed, cap_borrowed;
    uint32_t n_levels, cap_levels;
    uint32_t n_rand;         /* rand nodes so far (their salts) */
    vp_gt *ones;             /* constant 1s for reductions by gemm */
    struct vp_custom_kernel *kernels; /* plugins' kernels, a list (custom.c) */
    struct vp_custom_rec *customs;    /* custom op calls, a list */
    bool training;           /* dropout drops (vp_graph_set_training) */
    bool deterministic;      /* no float atomics (vp_graph_set_deterministic) */
    vp_gt *seed;             /* dropout's seed (int32), advanced on the device every run */
    int64_t ones_len;
    /* compiled state */
    vp_alloc bufs[VP_BUF_COUNT];
    uint64_t buf_size[VP_BUF_COUNT];
    uint64_t unplanned;
    vp_segment *segs;
    uint32_t n_segs;
    vp_cmd *zero_cmd;
    vp_tensor grad_all;      /* the flat grad buffer as one tensor */
    /* gradient buckets (vp_graph_set_buckets), in the order runs finish them */
    bool bucketed;
    uint64_t bucket_bytes;
    vp_grad_bucket *buckets;
    int64_t *bucket_ready;   /* each one's last writing node, -1: none */
    uint32_t n_buckets, next_bucket;
    vp_readback *readback;   /* where segments copy them, unless memory is mapped */
    double handover_ms, handover_exposed_ms; /* vp_graph_stats */
    /* optimizer */
    bool has_optim;
    vp_adamw_cfg adamw;
    vp_cmd *opt_cmd;
    vp_cmd *norm_cmd;        /* the gradients' sum of squares alone */
    vp_tensor train_all, m_all, v_all, lrs_all, opt_state, opt_sqnorm;
};

/* graph.c */
vp_gt *vp_gt_new(vp_graph *g, vp_gt_kind kind, const char *name, int ndim, const int64_t *shape);
vp_gnode *vp_node_new(vp_graph *g, vp_gop op, const char *name);
vp_status vp_graph_fail(vp_graph *g, vp_status st, const char *fmt, ...) VP_PRINTF(3, 4);
vp_gt *vp_gt_root(vp_gt *t);
bool vp_gt_same_shape(const vp_gt *a, const vp_gt *b);
void vp_gt_shape_str(const vp_gt *t, char *buf, size_t n);
vp_gt *vp_g_view(vp_graph *g, vp_gt *a, int ndim, const int64_t *shape, const char *name);
/* A view of a's elements from off on (off counted from a's own start). */
vp_gt *vp_g_view_at(vp_graph *g, vp_gt *a, int64_t off, int ndim, const int64_t *shape);
vp_gt *vp_g_ones(vp_graph *g, int64_t n);

/* custom.c */
void vp_custom_release(vp_graph *g);
vp_status vp_custom_record(vp_graph *g, const vp_gnode *n, vp_cmd *cmd);
void vp_custom_backward(vp_graph *g, const vp_gnode *n);
vp_status vp_custom_reference(const vp_gnode *n, double *const *in, double *out);

/* autodiff.c */
vp_status vp_autodiff(vp_graph *g, vp_gt *loss);
/* For rules outside autodiff.c (custom.c): where t's gradient goes (*acc:
 * whether to add), the gradient reaching t (NULL: none), out (+)= s * x. */
vp_gt *vp_autodiff_grad_target(vp_graph *g, vp_gt *t, bool *acc);
vp_gt *vp_autodiff_grad_of(vp_graph *g, vp_gt *t);
void vp_autodiff_axpy(vp_graph *g, vp_gt *x, float s, vp_gt *out, bool acc);

/* plan.c */
vp_status vp_graph_plan(vp_graph *g);
void vp_graph_release_buffers(vp_graph *g);

/* exec.c */
vp_status vp_graph_record(vp_graph *g);
void vp_graph_release_segments(vp_graph *g);

#endif
