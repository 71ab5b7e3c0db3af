/*
 * vpeft/host.h - the function table the host hands every plugin at init.
 *
 *     static const vp_host_api *H;
 *     static vp_status init(const vp_host_api *host)
 *     {
 *         if (!VP_HOST_HAS(host, rand))              // a member added after 1.0
 *             return host->error(VP_ERR_ABI, "needs vpeft ABI 1.1 (rand)");
 *         H = host;
 *         return VP_OK;
 *     }
 *     ...
 *     vp_graph *g = H->graph(b);
 *     vp_gt *h = H->site_linear(b, "backbone.blocks.0.mlp.fc1", x, 4 * d, true, NULL, NULL);
 *     h = H->gelu(g, h);
 *
 * The table is owned by the host and valid until the plugin's fini. It only
 * grows: members are appended in groups, each marked with the ABI minor
 * that added it, and a plugin that uses a member added after 1.0 checks
 * VP_HOST_HAS first. Every call is made on the thread that builds or runs
 * the model.
 *
 * Graph ops never fail loudly: given bad shapes they record the first error
 * in the graph and return NULL, and given NULL they return NULL, so a build
 * function may chain them and check graph_status() (or just return: the
 * host checks it after every plugin call). Their shapes are documented in
 * docs/plugin-guide.md and match PyTorch's operators of the same name.
 */
#ifndef VPEFT_HOST_H
#define VPEFT_HOST_H

#include <stdarg.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include <vpeft/config.h>
#include <vpeft/kernel.h>
#include <vpeft/log.h>
#include <vpeft/peft.h>
#include <vpeft/site.h>
#include <vpeft/status.h>
#include <vpeft/tensor.h>
#include <vpeft/version.h>

#ifdef __cplusplus
extern "C" {
#endif

typedef struct vp_host_api vp_host_api;
typedef struct vp_build vp_build;     /* the model being built (opaque) */
typedef struct vp_weights vp_weights; /* an open safetensors file (opaque) */

/* Whether host provides member m (false for a host older than m). */
#define VP_HOST_HAS(host, m) \
    ((host)->size >= offsetof(vp_host_api, m) + sizeof((host)->m) && (host)->m != NULL)

struct vp_host_api {
    uint32_t size;           /* sizeof(vp_host_api) in the host */
    uint16_t abi_major;      /* the host's VP_ABI_MAJOR */
    uint16_t abi_minor;      /* the host's VP_ABI_MINOR */
    const char *version;     /* the host's release, "0.1.0" */

    /* ---- ABI 1.0: diagnostics ------------------------------------------------
     * error() sets the calling thread's message and returns st, so that
     * `return H->error(VP_ERR_INVALID, "ia3: %s: ...", path);` reports a
     * failure; the host prefixes the plugin's name when it passes the
     * message on. last_error() is that message ("" when none). */
    void (*log)(vp_log_level level, const char *fmt, ...);
    vp_status (*error)(vp_status st, const char *fmt, ...);
    const char *(*last_error)(void);
    const char *(*status_str)(vp_status st);

    /* ---- ABI 1.0: config (vpeft/config.h) ------------------------------------
     * key names a member of object c; key NULL means c itself (an array
     * element). Absent keys give def and VP_OK; a present key of the wrong
     * type (or an int that is not integral, or out of range) gives
     * VP_ERR_CONFIG naming the file and path. Returned strings and configs
     * belong to the host (see vpeft/config.h). */
    vp_cfg_type (*cfg_type)(const vp_config *c, const char *key);
    vp_status (*cfg_int)(const vp_config *c, const char *key, int64_t def, int64_t *out);
    vp_status (*cfg_float)(const vp_config *c, const char *key, double def, double *out);
    vp_status (*cfg_bool)(const vp_config *c, const char *key, bool def, bool *out);
    vp_status (*cfg_string)(const vp_config *c, const char *key, const char *def,
                            const char **out);
    /* A string naming a file, resolved against the config file's directory;
     * absent: *out = NULL. Whether the file exists is not checked. */
    vp_status (*cfg_file)(const vp_config *c, const char *key, const char **out);
    const vp_config *(*cfg_get)(const vp_config *c, const char *key); /* NULL: absent */
    int (*cfg_len)(const vp_config *c);                 /* array or object size; else -1 */
    const vp_config *(*cfg_at)(const vp_config *c, int i); /* element or member i */
    const char *(*cfg_key)(const vp_config *c);         /* a member's key, else NULL */
    const char *(*cfg_path)(const vp_config *c);        /* "peft[0].r" ("" for the root) */
    /* VP_ERR_CONFIG naming the first member of object c not in known[]. */
    vp_status (*cfg_check_keys)(const vp_config *c, const char *const *known, uint32_t n);
    /* VP_ERR_CONFIG with "<file>: <path>.<key>: <message>"; key may be NULL. */
    vp_status (*cfg_fail)(const vp_config *c, const char *key, const char *fmt, ...);

    /* ---- ABI 1.0: the graph and its tensors ----------------------------------- */
    vp_graph *(*graph)(vp_build *b);
    vp_status (*graph_status)(const vp_graph *g); /* the first build error, or VP_OK */
    /* The accessors below take NULL (a failed op's result) as an empty
     * tensor: name "(none)", ndim 0, a shape of zeros, nelem 0. */
    const char *(*name)(const vp_gt *t);
    int (*ndim)(const vp_gt *t);
    const int64_t *(*shape)(const vp_gt *t);
    int64_t (*nelem)(const vp_gt *t);
    vp_dtype (*dtype)(const vp_gt *t);
    void (*keep)(vp_gt *t);                     /* readable after a run */
    vp_gt *(*find)(const vp_graph *g, const char *name);

    /* ---- ABI 1.0: leaves ---------------------------------------------------------
     * param: a weight named hierarchically ("head.decoder.0.ffn.fc1.weight";
     * unique in the model). trainable: for a PEFT plugin, whether it is
     * trained (almost always true); for a backbone or head, the default the
     * run's config (train.trainable) overrides. init NULL means zeros.
     * The name and init data are copied. On error (a duplicate name, a bad
     * shape) NULL, and the error is the graph's, like an op's. constant
     * copies its data. */
    vp_gt *(*param)(vp_build *b, const char *name, int ndim, const int64_t *shape,
                    const vp_init *init, bool trainable);
    vp_status (*param_lr_scale)(vp_gt *param, float scale);
    vp_gt *(*constant)(vp_graph *g, const char *name, int ndim, const int64_t *shape,
                       const float *data);
    vp_gt *(*input)(vp_graph *g, const char *name, int ndim, const int64_t *shape);
    vp_gt *(*input_i32)(vp_graph *g, const char *name, int ndim, const int64_t *shape);

    /* ---- ABI 1.0: ops --------------------------------------------------------- */
    vp_gt *(*gemm)(vp_graph *g, vp_gt *a, bool trans_a, vp_gt *b, bool trans_b, vp_gt *bias);
    vp_gt *(*linear)(vp_graph *g, vp_gt *x, vp_gt *w, vp_gt *b); /* no site: see site_linear */
    vp_gt *(*add)(vp_graph *g, vp_gt *a, vp_gt *b);
    vp_gt *(*mul)(vp_graph *g, vp_gt *a, vp_gt *b);
    vp_gt *(*scale)(vp_graph *g, vp_gt *a, float s);
    vp_gt *(*reshape)(vp_graph *g, vp_gt *a, int ndim, const int64_t *shape);
    vp_gt *(*relu)(vp_graph *g, vp_gt *x);
    vp_gt *(*gelu)(vp_graph *g, vp_gt *x);
    vp_gt *(*layernorm)(vp_graph *g, vp_gt *x, vp_gt *gamma, vp_gt *beta, float eps);
    vp_gt *(*softmax)(vp_graph *g, vp_gt *x);
    vp_gt *(*cross_entropy)(vp_graph *g, vp_gt *logits, vp_gt *target, vp_gt *weight);
    vp_gt *(*bce_logits)(vp_graph *g, vp_gt *x, vp_gt *target);
    vp_gt *(*dice)(vp_graph *g, vp_gt *x, vp_gt *target, float normalizer);
    vp_gt *(*permute)(vp_graph *g, vp_gt *x, const int *perm);
    vp_gt *(*transpose)(vp_graph *g, vp_gt *x, int d0, int d1);
    vp_gt *(*concat)(vp_graph *g, vp_gt *const *xs, uint32_t n, int axis);
    vp_gt *(*slice)(vp_graph *g, vp_gt *x, int axis, int64_t start, int64_t len);
    vp_gt *(*gather_rows)(vp_graph *g, vp_gt *table, vp_gt *idx);
    vp_gt *(*patch_embed)(vp_graph *g, vp_gt *img, vp_gt *w, vp_gt *b, int patch);
    vp_gt *(*maxpool2)(vp_graph *g, vp_gt *x);
    vp_gt *(*conv_transpose2)(vp_graph *g, vp_gt *x, vp_gt *w, vp_gt *b);
    vp_gt *(*resize_bilinear)(vp_graph *g, vp_gt *x, int64_t out_h, int64_t out_w);
    vp_gt *(*msdeform)(vp_graph *g, vp_gt *value, const vp_msdeform_levels *levels, vp_gt *loc,
                       vp_gt *attn);
    vp_gt *(*bool_mask)(vp_graph *g, vp_gt *m);
    vp_gt *(*attention)(vp_graph *g, vp_gt *q, vp_gt *k, vp_gt *v, vp_gt *mask, int heads);
    vp_gt *(*sum)(vp_graph *g, vp_gt *a);
    vp_gt *(*mean)(vp_graph *g, vp_gt *a);
    /* A CPU callback between two submits (e.g. Hungarian matching); its
     * outputs carry no gradient. outs[i] receives output i, of type
     * out_dtypes[i] (VP_F32 or VP_I32; out_dtypes NULL: all float32). An
     * int32 input or output is an int32 array behind its float pointer in
     * vp_host_io: cast it. */
    vp_status (*host)(vp_graph *g, const char *name, vp_host_fn fn, void *user, uint32_t n_in,
                      vp_gt *const *ins, uint32_t n_out, const int *out_ndim,
                      const int64_t *const *out_shapes, const vp_dtype *out_dtypes,
                      vp_gt **outs);

    /* ---- ABI 1.0: sites (vpeft/site.h) ---------------------------------------
     * site_linear: y = x w^T + b with w <path>.weight (out, in) and b
     * <path>.bias (out) when bias, initialized as nn.Linear unless w_init /
     * b_init say otherwise, then every PEFT method's attach(). site_output:
     * y after every PEFT method's attach(). site_module: declares a module
     * whose linear sites (<path>.<role>) carry its path and kind. */
    vp_gt *(*site_linear)(vp_build *b, const char *path, vp_gt *x, int64_t out_features,
                          bool bias, const vp_init *w_init, const vp_init *b_init);
    vp_gt *(*site_output)(vp_build *b, const char *path, vp_site_kind kind, vp_gt *y);
    vp_status (*site_module)(vp_build *b, const char *path, vp_site_kind kind);
    /* Site patterns from c's member key: a string is one POSIX extended
     * regex that must match a whole path; an array of strings are globs
     * (fnmatch) that match a whole path or its last components ("qkv"
     * matches "backbone.blocks.0.attn.qkv"). Absent: defaults[0 .. n-1] as
     * globs, or, with none, every path. Destroy with selector_destroy. */
    vp_status (*selector_create)(const vp_config *c, const char *key,
                                 const char *const *defaults, uint32_t n, vp_selector **out);
    bool (*selector_match)(const vp_selector *s, const char *path);
    void (*selector_destroy)(vp_selector *s);

    /* ---- ABI 1.0: weights (safetensors) ----------------------------------------
     * weights_open: a file checked whole (header, offsets, sizes); it stays
     * open until the model is built. param_load: the parameter's first
     * values come from tensor key (F32, F16 or BF16, converted), whose shape
     * must equal the parameter's (else VP_ERR_SHAPE naming the file, the key
     * and both shapes). */
    vp_status (*weights_open)(vp_build *b, const char *path, vp_weights **out);
    uint32_t (*weights_count)(const vp_weights *w);
    const char *(*weights_key)(const vp_weights *w, uint32_t i);
    /* VP_ERR_NOT_FOUND (with a message) when there is no such tensor. */
    vp_status (*weights_shape)(const vp_weights *w, const char *key, int *ndim,
                               int64_t shape[VP_MAX_DIMS]);
    vp_status (*param_load)(vp_build *b, vp_gt *param, const vp_weights *w, const char *key);

    /* ---- ABI 1.0: custom kernels (vpeft/kernel.h) ------------------------------
     * kernel: the code is copied, its SPIR-V checked against d (bindings,
     * descriptor set, push-constant block size, local size: see
     * <vpeft/kernel.h>) and its pipeline built now; a shader that does not
     * fit is an error here, naming the kernel. The kernel belongs to g. Registering
     * a descriptor with the same name in the same g again returns the same
     * kernel, so a plugin keeps no per-graph cache; a different descriptor
     * under that name is an error. */
    vp_status (*kernel)(vp_graph *g, const vp_kernel_desc *d, vp_custom_kernel **out);
    vp_gt *(*custom)(vp_graph *g, const vp_custom_call *call);

    /* ---- ABI 1.0: named outputs --------------------------------------------------
     * Name t as an output of the model ("backbone.last_hidden_state",
     * "backbone.features.0"): kept readable after a run, and found by that
     * name by `vpeft embed`, evaluation and tests. Names are unique in a
     * model; the name is copied. Returns t, or NULL on error (the graph's). */
    vp_gt *(*output)(vp_build *b, const char *name, vp_gt *t);

    /* ---- ABI 1.0: more activations: sigmoid 1 / (1 + e^-x), softplus
     * log(1 + e^x), silu (swish) x sigmoid(x) ------------------------------------ */
    vp_gt *(*sigmoid)(vp_graph *g, vp_gt *x);
    vp_gt *(*softplus)(vp_graph *g, vp_gt *x);
    vp_gt *(*silu)(vp_graph *g, vp_gt *x);
    /* Mask2Former's masked attention from mask logits (..., K): -inf where
     * a logit is < 0, else 0; a row that would mask every key is all 0.
     * attention() takes it as (B, 1, Nq, Nk), one mask per image for every
     * head. No gradient flows through it. */
    vp_gt *(*logit_mask)(vp_graph *g, vp_gt *logits);
    /* Dropout with probability p in [0, 1): in a graph built for training,
     * each element kept with probability 1 - p and scaled by 1 / (1 - p),
     * the mask new at every run; otherwise (evaluation) x itself. */
    vp_gt *(*dropout)(vp_graph *g, vp_gt *x, float p);

    /* ---- ABI 1.1: int32 constants, JSON files, checkpoint buffers -------------
     * constant_i32: an int32 constant (gather indices known at build time,
     * e.g. Swin's relative position index); data is copied.
     * cfg_load: a JSON file read and parsed into a new config tree (e.g. a
     * Hugging Face config.json), which the accessors above read and whose
     * messages name the file and path ("swin/config.json: window_size:
     * ..."); free it with cfg_free once its strings are no longer used.
     * buffer_key: a tensor key that the model's own checkpoints hold but
     * that is no parameter (a buffer the plugin recomputes, such as Swin's
     * relative_position_index): loading a whole checkpoint strictly
     * accepts it instead of reporting an unexpected tensor.
     * rand: uniform random numbers in [0, 1) of the given shape, drawn anew
     * at every run (from the graph's seed, which checkpoints keep, so a
     * resumed run draws what an uninterrupted one would), each rand tensor
     * its own stream; no gradient. name may be NULL. */
    vp_gt *(*constant_i32)(vp_graph *g, const char *name, int ndim, const int64_t *shape,
                           const int32_t *data);
    vp_status (*cfg_load)(const char *path, vp_config **root);
    void (*cfg_free)(vp_config *root);
    vp_status (*buffer_key)(vp_build *b, const char *key);
    vp_gt *(*rand)(vp_graph *g, const char *name, int ndim, const int64_t *shape);
    /* site_output with the sub-layer's input x (the tensor the attention or
     * FFN sub-layer was computed from, of y's shape): PEFT methods that
     * run beside a whole sub-layer (parallel adapters) read it as attach()'s
     * x. site_output gives x = NULL. */
    vp_gt *(*site_output_in)(vp_build *b, const char *path, vp_site_kind kind, vp_gt *x,
                             vp_gt *y);

    /* ---- ABI 1.2: attention with its scale given and a bias that may train
     * (Swin's relative position bias and shift mask): scores
     * scale * q . k + bias over keys, softmax, times v. q (B, Nq, D), k and
     * v (B, Nk, D), heads dividing D (at most 128 channels per head); bias
     * NULL or (M, Hb, Nq, Nk) with M dividing B (image b adds bias[b % M])
     * and Hb 1 or heads, or (Hb, Nq, Nk), or (Nq, Nk); -inf masks a key.
     * Like attention(), one fused node with no Nq x Nk scores kept.
     * -> (B, Nq, D) --------------------------------------------------------- */
    vp_gt *(*attention_ex)(vp_graph *g, vp_gt *q, vp_gt *k, vp_gt *v, vp_gt *bias, int heads,
                           float scale);
    /* Rows of x (last dimension C) rearranged by a map known when building:
     * the output (ndim, shape; last dimension C) has row n = x's row
     * idx[n], or zeros where idx[n] is -1; no row of x twice (checked), so
     * the gradient is the inverse map. One dispatch each way: a window
     * partition with its padding and cyclic shift in one node. idx is
     * copied. */
    vp_gt *(*row_map)(vp_graph *g, vp_gt *x, const int32_t *idx, int ndim, const int64_t *shape);

    /* ABI 1.3 and later append here. */
};

#ifdef __cplusplus
}
#endif

#endif /* VPEFT_HOST_H */
