/*
 * Memory planning. Parameters go to two flat buffers (frozen, trainable),
 * trainable parameters' gradients to a third laid out exactly like the
 * trainable one (so the optimizer is one pass over three aligned buffers),
 * inputs and constants to a fourth. Activations, forward and backward, share
 * one arena: each gets an offset by liveness, from the node that first
 * writes it to the last node that touches it, first-fit among the ranges
 * that are free at that point. What the backward pass reads is simply live
 * until then.
 */
#include <stdlib.h>
#include <string.h>

#include "graph/internal.h"
#include "util/array.h"

typedef struct span {
    uint64_t off, size;
} span;

static uint64_t align_up(uint64_t v, uint64_t a) { return (v + a - 1) / a * a; }

static uint64_t bytes_of(const vp_gt *t) { return (uint64_t)vp_gt_nelem(t) * 4; }

/* Live activations, sorted by offset; allocation is first-fit in the gaps. */
typedef struct arena {
    span *live;
    vp_gt **owner;
    uint32_t n, cap, cap_owner;
    uint64_t top;    /* high-water mark */
} arena;

static vp_status arena_take(arena *a, vp_gt *t, uint64_t size, uint64_t align)
{
    uint64_t at = 0;
    uint32_t i = 0;
    for (; i < a->n; i++) {
        if (a->live[i].off >= at + size)
            break;
        at = align_up(a->live[i].off + a->live[i].size, align);
    }
    if (VP_RESERVE(a->live, a->cap, a->n + 1) || VP_RESERVE(a->owner, a->cap_owner, a->n + 1))
        return VP_ERR_NOMEM;
    memmove(&a->live[i + 1], &a->live[i], (a->n - i) * sizeof *a->live);
    memmove(&a->owner[i + 1], &a->owner[i], (a->n - i) * sizeof *a->owner);
    a->live[i] = (span){at, size};
    a->owner[i] = t;
    a->n++;
    t->offset = at;
    if (at + size > a->top)
        a->top = at + size;
    return VP_OK;
}

static void arena_release_dead(arena *a, int before)
{
    uint32_t k = 0;
    for (uint32_t i = 0; i < a->n; i++) {
        if (a->owner[i]->last < before)
            continue;
        a->live[k] = a->live[i];
        a->owner[k++] = a->owner[i];
    }
    a->n = k;
}

static int by_first(const void *x, const void *y)
{
    const vp_gt *a = *(vp_gt *const *)x, *b = *(vp_gt *const *)y;
    return a->first != b->first ? (a->first < b->first ? -1 : 1)
                                : (a->id < b->id ? -1 : a->id > b->id);
}

static void touch(vp_gt *t, int i, bool write)
{
    vp_gt *r = vp_gt_root(t);
    if (write && r->first < 0)
        r->first = i;
    if (i > r->last)
        r->last = i;
}

static vp_status plan_activations(vp_graph *g, uint64_t align)
{
    for (uint32_t i = 0; i < g->n_nodes; i++) {
        vp_gnode *n = &g->nodes[i];
        for (uint32_t k = 0; k < n->n_in; k++)
            if (n->in[k])
                touch(n->in[k], (int)i, false);
        for (uint32_t k = 0; k < n->n_out; k++)
            if (n->out[k])
                touch(n->out[k], (int)i, true);
    }
    vp_gt **acts = malloc((g->n_tensors ? g->n_tensors : 1) * sizeof *acts);
    if (!acts)
        return vp_error_set(VP_ERR_NOMEM, "out of host memory planning the graph");
    uint32_t n = 0;
    g->unplanned = 0;
    for (uint32_t i = 0; i < g->n_tensors; i++) {
        vp_gt *t = g->tensors[i];
        if (t->kind != VP_GT_ACT || t->last < 0)
            continue;
        if (t->first < 0) {
            free(acts);
            return vp_error_set(VP_ERR_INTERNAL, "graph: tensor %s is read but never written",
                                t->name);
        }
        if (t->keep)
            t->last = (int)g->n_nodes;
        t->buf = VP_BUF_ARENA;
        g->unplanned += align_up(bytes_of(t), align);
        acts[n++] = t;
    }
    qsort(acts, n, sizeof *acts, by_first);
    arena a = {0};
    vp_status st = VP_OK;
    for (uint32_t i = 0; i < n && !st; i++) {
        arena_release_dead(&a, acts[i]->first);
        st = arena_take(&a, acts[i], align_up(bytes_of(acts[i]), align), align);
    }
    g->buf_size[VP_BUF_ARENA] = a.top;
    free(a.live);
    free(a.owner);
    free(acts);
    return st ? vp_error_set(st, "out of host memory planning the graph") : VP_OK;
}

vp_status vp_graph_plan(vp_graph *g)
{
    const vp_device_info *d = vp_device_get_info(g->dev);
    uint64_t align = d->storage_align > 16 ? d->storage_align : 16;
    memset(g->buf_size, 0, sizeof g->buf_size);
    for (uint32_t i = 0; i < g->n_tensors; i++) {
        vp_gt *t = g->tensors[i];
        vp_gbuf b;
        switch (t->kind) {
        case VP_GT_PARAM: b = t->trainable ? VP_BUF_TRAIN : VP_BUF_FROZEN; break;
        case VP_GT_INPUT:
        case VP_GT_CONST: b = VP_BUF_IO; break;
        default: continue;
        }
        t->buf = b;
        t->offset = g->buf_size[b];
        g->buf_size[b] += align_up(bytes_of(t), align);
    }
    for (uint32_t i = 0; i < g->n_tensors; i++) {
        vp_gt *t = g->tensors[i];
        if (t->kind == VP_GT_PGRAD) {
            t->buf = VP_BUF_GRAD;
            t->offset = t->param->offset;
        }
    }
    bool any_grad = false;
    for (uint32_t i = 0; i < g->n_tensors; i++)
        any_grad = any_grad || g->tensors[i]->kind == VP_GT_PGRAD;
    g->buf_size[VP_BUF_GRAD] = any_grad ? g->buf_size[VP_BUF_TRAIN] : 0;
    if (g->has_optim) {
        if (!any_grad)
            return vp_error_set(VP_ERR_INVALID, "optimizer: no trainable parameter gets a "
                                "gradient (call vp_graph_backward with a loss that depends on "
                                "one)");
        g->buf_size[VP_BUF_M] = g->buf_size[VP_BUF_V] = g->buf_size[VP_BUF_TRAIN];
        bool scaled = false;
        for (uint32_t i = 0; i < g->n_tensors; i++) {
            vp_gt *t = g->tensors[i];
            scaled = scaled || (t->kind == VP_GT_PARAM && t->trainable && t->lr_scale != 1.0f);
        }
        g->buf_size[VP_BUF_LRSCALE] = scaled ? g->buf_size[VP_BUF_TRAIN] : 0;
        g->buf_size[VP_BUF_OPT] = 2 * align; /* state (4 floats), then sqnorm */
    }

    vp_status st = plan_activations(g, align);
    if (st)
        return st;

    for (int b = 0; b < VP_BUF_COUNT; b++) {
        if (!g->buf_size[b])
            continue;
        st = vp_mem_alloc(g->dev, g->buf_size[b], &g->bufs[b]);
        if (st)
            return vp_error_wrap(st, "graph memory (%llu bytes)",
                                 (unsigned long long)g->buf_size[b]);
    }
    /* Runtime views of every tensor that has memory. */
    for (uint32_t i = 0; i < g->n_tensors; i++) {
        vp_gt *t = g->tensors[i], *r = vp_gt_root(t);
        if (r->kind == VP_GT_ACT && r->first < 0)
            continue; /* never used */
        uint64_t off = r->offset + (uint64_t)t->view_off * vp_dtype_size(t->dtype);
        vp_tensor_view_init(&t->rt, g->dev, &g->bufs[r->buf], off, t->dtype, t->ndim, t->shape,
                            t->name);
    }
    return VP_OK;
}

void vp_graph_release_buffers(vp_graph *g)
{
    for (int b = 0; b < VP_BUF_COUNT; b++)
        vp_mem_free(g->dev, &g->bufs[b]);
}

vp_graph_mem vp_graph_memory(const vp_graph *g)
{
    vp_graph_mem m = {
        .activations = g->buf_size[VP_BUF_ARENA],
        .frozen = g->buf_size[VP_BUF_FROZEN],
        .trainable = g->buf_size[VP_BUF_TRAIN],
        .grads = g->buf_size[VP_BUF_GRAD],
        .io = g->buf_size[VP_BUF_IO],
        .optimizer = g->buf_size[VP_BUF_M] + g->buf_size[VP_BUF_V] +
                     g->buf_size[VP_BUF_LRSCALE] + g->buf_size[VP_BUF_OPT],
        .unplanned = g->unplanned,
    };
    m.total = m.activations + m.frozen + m.trainable + m.grads + m.io + m.optimizer;
    return m;
}
