/*
 * Custom ops: a plugin's own SPIR-V kernel as a graph node (the ABI's
 * vp_kernel_desc and vp_custom_call, <vpeft/kernel.h>).
 *
 * The graph copies everything a plugin hands it (code, push constants), so
 * nothing depends on the plugin's memory but the callbacks and their user
 * pointer. The kernel's pipeline is built when it is registered, which
 * turns a shader that does not fit the host's layout into an error at that
 * call, naming the kernel; before that the SPIR-V itself is reflected
 * against the descriptor (spirv.c). Backward is not a kernel: the plugin's callback
 * builds it from graph ops while vp_graph_backward runs, and each
 * gradient it returns is added into the input's gradient like any other
 * contribution (overwrite first, accumulate after).
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "graph/internal.h"
#include "graph/spirv.h"

#define SPIRV_MAGIC 0x07230203u

struct vp_custom_kernel {
    vp_kernel k;             /* the runtime's view; k.shader points at name */
    char name[64];
    uint32_t local[3];
    struct vp_custom_kernel *next;
};

typedef struct vp_custom_rec {
    vp_custom_kernel *kernel;
    uint8_t push[VP_MAX_PUSH];
    uint32_t push_size;
    uint32_t groups[3];
    vp_custom_backward_fn backward;
    vp_custom_reference_fn reference;
    void *user;
    struct vp_custom_rec *next;
} vp_custom_rec;

void vp_custom_release(vp_graph *g)
{
    for (vp_custom_kernel *k = g->kernels, *next; k; k = next) {
        next = k->next;
        vp_pipeline_forget(g->dev, &k->k);
        free((void *)k->k.code);
        free(k);
    }
    for (vp_custom_rec *r = g->customs, *next; r; r = next) {
        next = r->next;
        free(r);
    }
    g->kernels = NULL;
    g->customs = NULL;
}

vp_status vp_graph_kernel(vp_graph *g, const vp_kernel_desc *d, vp_custom_kernel **out)
{
    *out = NULL;
    if (g->err)
        return vp_graph_status(g);
    if (!d || d->size < offsetof(vp_kernel_desc, local_size) + sizeof d->local_size)
        return vp_graph_fail(g, VP_ERR_ABI, "custom kernel: the descriptor is %u bytes, ABI 1.0 "
                             "needs %zu", d ? d->size : 0,
                             offsetof(vp_kernel_desc, local_size) + sizeof d->local_size);
    const char *name = d->name && d->name[0] ? d->name : "(unnamed)";
    if (!d->spirv || d->spirv_bytes < 20 || d->spirv_bytes % 4 || d->spirv[0] != SPIRV_MAGIC)
        return vp_graph_fail(g, VP_ERR_INVALID, "custom kernel %s: the code is not SPIR-V (%zu "
                             "bytes%s)", name, d->spirv_bytes,
                             d->spirv && d->spirv_bytes >= 4 ? ", wrong magic number" : "");
    if (d->n_bindings < 1 || d->n_bindings > VP_MAX_BINDINGS)
        return vp_graph_fail(g, VP_ERR_INVALID, "custom kernel %s: %u bindings, vpeft allows 1 "
                             "to %d", name, d->n_bindings, VP_MAX_BINDINGS);
    if (d->push_size > VP_MAX_PUSH || d->push_size % 4)
        return vp_graph_fail(g, VP_ERR_INVALID, "custom kernel %s: %u bytes of push constants; "
                             "vpeft allows a multiple of 4 up to %d", name, d->push_size,
                             VP_MAX_PUSH);
    /* The shader against its description, before any pipeline exists: the
     * driver would accept most mismatches and compute garbage. */
    vp_status chk = vp_spirv_check(d->spirv, d->spirv_bytes / 4, d, name);
    if (chk)
        return vp_graph_fail(g, chk, "%s", vp_error_last());
    /* Registering again returns the kernel the graph has: plugins need no
     * cache of their own, and no bookkeeping of which graph is which. */
    for (vp_custom_kernel *k = g->kernels; k; k = k->next)
        if (!strncmp(k->name, name, sizeof k->name - 1)) {
            if (k->k.code_bytes != d->spirv_bytes || memcmp(k->k.code, d->spirv, d->spirv_bytes) ||
                k->k.n_bindings != d->n_bindings || k->k.push_size != d->push_size ||
                memcmp(k->local, d->local_size, sizeof k->local))
                return vp_graph_fail(g, VP_ERR_INVALID, "custom kernel %s: another kernel of "
                                     "that name is registered in this graph", name);
            *out = k;
            return VP_OK;
        }
    vp_custom_kernel *k = calloc(1, sizeof *k);
    uint32_t *code = malloc(d->spirv_bytes);
    if (!k || !code) {
        free(k);
        free(code);
        return vp_graph_fail(g, VP_ERR_NOMEM, "custom kernel %s: out of host memory", name);
    }
    memcpy(code, d->spirv, d->spirv_bytes);
    snprintf(k->name, sizeof k->name, "%s", name);
    k->k = (vp_kernel){k->name, d->n_bindings, 1u << (d->n_bindings - 1), d->push_size, code,
                       d->spirv_bytes};
    memcpy(k->local, d->local_size, sizeof k->local);
    k->next = g->kernels;
    g->kernels = k;
    vp_pipeline *p;
    vp_status st = vp_pipeline_get(g->dev, &k->k, k->local, 3, &p);
    if (st)
        return vp_graph_fail(g, st, "custom kernel %s: %s", name, vp_error_last());
    *out = k;
    return VP_OK;
}

vp_gt *vp_g_custom(vp_graph *g, const vp_custom_call *c)
{
    if (g->err)
        return NULL;
    if (!c || c->size < offsetof(vp_custom_call, user) + sizeof c->user) {
        vp_graph_fail(g, VP_ERR_ABI, "custom op: the call is %u bytes, ABI 1.0 needs %zu",
                      c ? c->size : 0, offsetof(vp_custom_call, user) + sizeof c->user);
        return NULL;
    }
    vp_custom_kernel *k = c->kernel;
    if (!k) {
        vp_graph_fail(g, VP_ERR_INVALID, "custom op: no kernel (register it with kernel())");
        return NULL;
    }
    if (c->n_in + 1 != k->k.n_bindings || c->n_in > VP_GMAX_IN) {
        vp_graph_fail(g, VP_ERR_INVALID, "custom op %s: %u inputs, the kernel binds %u buffers "
                      "(the inputs, then the output)", k->name, c->n_in, k->k.n_bindings);
        return NULL;
    }
    for (uint32_t i = 0; i < c->n_in; i++)
        if (!c->in[i]) {
            vp_graph_fail(g, VP_ERR_INVALID, "custom op %s: input %u is missing", k->name, i);
            return NULL;
        }
    if (c->push_size != k->k.push_size || (c->push_size && !c->push)) {
        vp_graph_fail(g, VP_ERR_INVALID, "custom op %s: %u bytes of push constants, the kernel "
                      "takes %u", k->name, c->push_size, k->k.push_size);
        return NULL;
    }
    if (!c->groups[0] || !c->groups[1] || !c->groups[2]) {
        vp_graph_fail(g, VP_ERR_INVALID, "custom op %s: %ux%ux%u workgroups", k->name,
                      c->groups[0], c->groups[1], c->groups[2]);
        return NULL;
    }
    vp_custom_rec *r = calloc(1, sizeof *r);
    if (!r) {
        vp_graph_fail(g, VP_ERR_NOMEM, "custom op %s: out of host memory", k->name);
        return NULL;
    }
    r->next = g->customs;
    g->customs = r;
    r->kernel = k;
    memcpy(r->push, c->push, c->push_size);
    r->push_size = c->push_size;
    memcpy(r->groups, c->groups, sizeof r->groups);
    r->backward = c->backward;
    r->reference = c->reference;
    r->user = c->user;

    char name[VP_NAME_MAX];
    snprintf(name, sizeof name, "%s.%u", k->name, g->n_tensors);
    vp_gt *y = vp_gt_new(g, VP_GT_ACT, name, c->out_ndim, c->out_shape);
    vp_gnode *n = y ? vp_node_new(g, VP_GOP_CUSTOM, k->name) : NULL;
    if (!n)
        return NULL;
    n->out[0] = y;
    n->n_out = 1;
    n->n_in = c->n_in;
    n->custom = r;
    for (uint32_t i = 0; i < c->n_in; i++) {
        n->in[i] = c->in[i];
        y->requires_grad |= c->backward && c->in[i]->requires_grad;
    }
    return y;
}

vp_status vp_custom_record(vp_graph *g, const vp_gnode *n, vp_cmd *cmd)
{
    vp_custom_rec *r = n->custom;
    vp_pipeline *p;
    vp_status st = vp_pipeline_get(g->dev, &r->kernel->k, r->kernel->local, 3, &p);
    if (st)
        return st;
    vp_range bind[VP_MAX_BINDINGS];
    for (uint32_t i = 0; i < n->n_in; i++)
        bind[i] = vp_tensor_range(&n->in[i]->rt);
    bind[n->n_in] = vp_tensor_range(&n->out[0]->rt);
    return vp_cmd_dispatch(cmd, p, bind, n->n_in + 1, r->push, r->push_size, r->groups[0],
                           r->groups[1], r->groups[2]);
}

/* The plugin's backward rule: it builds din[i] from graph ops; each is then
 * added into in[i]'s gradient by a scale-by-1 node with the accumulate
 * flag (vp_g_add would make a new tensor rather than write the gradient). */
void vp_custom_backward(vp_graph *g, const vp_gnode *node)
{
    vp_gnode n = *node; /* new nodes may move the node array */
    vp_custom_rec *r = n.custom;
    vp_gt *dy = vp_autodiff_grad_of(g, n.out[0]);
    if (!r->backward || !dy)
        return;
    bool needs[VP_GMAX_IN] = {false};
    vp_gt *din[VP_GMAX_IN] = {NULL};
    for (uint32_t i = 0; i < n.n_in; i++)
        needs[i] = n.in[i]->requires_grad;
    vp_custom_grad gr = {sizeof gr, n.n_in, n.in, needs, n.out[0], dy, din};
    vp_error_clear();
    vp_status st = r->backward(r->user, g, &gr);
    if (st || g->err) {
        if (!g->err)
            vp_graph_fail(g, st, "custom op %s: backward: %s", r->kernel->name,
                          vp_error_last()[0] ? vp_error_last() : vp_status_str(st));
        return;
    }
    for (uint32_t i = 0; i < n.n_in; i++) {
        if (!din[i] || !needs[i])
            continue;
        if (!vp_gt_same_shape(din[i], n.in[i])) {
            char sa[64], sb[64];
            vp_gt_shape_str(din[i], sa, sizeof sa);
            vp_gt_shape_str(n.in[i], sb, sizeof sb);
            vp_graph_fail(g, VP_ERR_SHAPE, "custom op %s: backward gave a gradient %s for input "
                          "%u, which is %s", r->kernel->name, sa, i, sb);
            return;
        }
        bool acc;
        vp_gt *target = vp_autodiff_grad_target(g, n.in[i], &acc);
        if (!target)
            return;
        vp_autodiff_axpy(g, din[i], 1.0f, target, acc);
    }
}

vp_status vp_custom_reference(const vp_gnode *n, double *const *in, double *out)
{
    vp_custom_rec *r = n->custom;
    if (!r->reference)
        return vp_error_set(VP_ERR_UNSUPPORTED, "custom op %s has no CPU reference",
                            r->kernel->name);
    const int64_t *shapes[VP_GMAX_IN];
    int ndims[VP_GMAX_IN];
    for (uint32_t i = 0; i < n->n_in; i++) {
        shapes[i] = n->in[i]->shape;
        ndims[i] = n->in[i]->ndim;
    }
    vp_custom_ref_io io = {sizeof io, n->n_in, (const double *const *)in, shapes, ndims, out};
    vp_error_clear();
    vp_status st = r->reference(r->user, &io);
    if (st)
        return vp_error_wrap(st, "custom op %s: reference", r->kernel->name);
    return VP_OK;
}
