/*
 * Compiling and running: the nodes between host nodes form segments, each
 * recorded once into its own command buffer (barriers only where nodes
 * depend on each other, by vp_cmd's hazard tracking) and submitted once per
 * run. A host node reads its inputs back, runs on the CPU, uploads its
 * outputs, and the next segment goes on. With gradient buckets, a segment
 * also ends where a bucket's gradients are final, and vp_graph_run_buckets
 * hands the bucket to the host while the next segment runs.
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "graph/internal.h"
#include "ops/ops.h"
#include "util/clock.h"


/* The runtime tensor of an optional operand. */
#define RT(t) ((t) ? &(t)->rt : NULL)

static vp_status record_node(vp_graph *g, vp_gnode *n, vp_cmd *cmd)
{
    vp_tensor *o = RT(n->out[0]);
    vp_status st = VP_ERR_INTERNAL;
    switch (n->op) {
    case VP_GOP_GEMM:
        if (n->n_out > 1) /* a linear layer's weight and bias gradients in one pass */
            st = vp_op_gemm_rowsum(cmd, &n->in[0]->rt, n->ip[0], &n->in[1]->rt, n->ip[1], o,
                                   n->acc[0], &n->out[1]->rt, n->acc[1], NULL);
        else
            st = vp_op_gemm(cmd, &n->in[0]->rt, n->ip[0], &n->in[1]->rt, n->ip[1],
                            n->n_in > 2 ? &n->in[2]->rt : NULL, o, n->acc[0], NULL);
        break;
    case VP_GOP_ADD:
    case VP_GOP_MUL:
        st = vp_op_binary(cmd, n->op == VP_GOP_ADD ? VP_BIN_ADD : VP_BIN_MUL, &n->in[0]->rt,
                          &n->in[1]->rt, o, n->acc[0]);
        break;
    case VP_GOP_AXPY:
        st = vp_op_axpy(cmd, &n->in[0]->rt, n->fp[0], o, n->acc[0]);
        break;
    case VP_GOP_FILL:
        st = vp_op_fill(cmd, o, n->fp[0]);
        break;
    case VP_GOP_CUSTOM:
        st = vp_custom_record(g, n, cmd);
        break;
    case VP_GOP_RELU:
        st = vp_op_relu(cmd, &n->in[0]->rt, o);
        break;
    case VP_GOP_GELU:
        st = vp_op_gelu(cmd, &n->in[0]->rt, o);
        break;
    case VP_GOP_SOFTMAX:
        st = vp_op_softmax(cmd, &n->in[0]->rt, o);
        break;
    case VP_GOP_LAYERNORM:
        st = vp_op_layernorm(cmd, &n->in[0]->rt, RT(n->in[1]), RT(n->in[2]), n->fp[0], o,
                             &n->out[1]->rt, &n->out[2]->rt);
        break;
    case VP_GOP_DROPOUT:
        st = vp_op_dropout(cmd, &n->in[0]->rt, &n->in[1]->rt, n->fp[0], o);
        break;
    case VP_GOP_DROPOUT_BWD:
        st = vp_op_dropout_backward(cmd, &n->in[0]->rt, &n->in[1]->rt, n->fp[0], o, n->acc[0]);
        break;
    case VP_GOP_RAND:
        st = vp_op_rand(cmd, &n->in[0]->rt, (uint32_t)n->ip[0], o);
        break;
    case VP_GOP_LOGITMASK:
        st = vp_op_logit_mask(cmd, &n->in[0]->rt, o);
        break;
    case VP_GOP_ACT:
        st = vp_op_act(cmd, (vp_act)n->ip[0], &n->in[0]->rt, o);
        break;
    case VP_GOP_ACT_BWD:
        st = vp_op_act_backward(cmd, (vp_act)n->ip[0], &n->in[0]->rt, &n->in[1]->rt, o, n->acc[0]);
        break;
    case VP_GOP_RELU_BWD:
        st = vp_op_relu_backward(cmd, &n->in[0]->rt, &n->in[1]->rt, o, n->acc[0]);
        break;
    case VP_GOP_GELU_BWD:
        st = vp_op_gelu_backward(cmd, &n->in[0]->rt, &n->in[1]->rt, o, n->acc[0]);
        break;
    case VP_GOP_SOFTMAX_BWD:
        st = vp_op_softmax_backward(cmd, &n->in[0]->rt, &n->in[1]->rt, o, n->acc[0]);
        break;
    case VP_GOP_LN_BWD:
        st = vp_op_layernorm_backward_ex(cmd, &n->in[0]->rt, RT(n->in[1]), &n->in[2]->rt,
                                         &n->in[3]->rt, &n->in[4]->rt, o, n->acc[0],
                                         RT(n->out[1]), RT(n->out[2]), n->acc[1]);
        break;
    case VP_GOP_CE:
        st = vp_op_cross_entropy(cmd, &n->in[0]->rt, &n->in[1]->rt, RT(n->in[2]), o,
                                 &n->out[1]->rt);
        break;
    case VP_GOP_BCE:
        st = vp_op_bce_logits(cmd, &n->in[0]->rt, &n->in[1]->rt, o);
        break;
    case VP_GOP_DICE:
        st = vp_op_dice(cmd, &n->in[0]->rt, &n->in[1]->rt, o, n->fp[0]);
        break;
    case VP_GOP_CE_BWD:
        st = vp_op_cross_entropy_backward(cmd, &n->in[0]->rt, &n->in[1]->rt, RT(n->in[2]),
                                          &n->in[3]->rt, &n->in[4]->rt, o, n->acc[0]);
        break;
    case VP_GOP_BCE_BWD:
        st = vp_op_bce_logits_backward(cmd, &n->in[0]->rt, &n->in[1]->rt, &n->in[2]->rt, o,
                                       n->acc[0]);
        break;
    case VP_GOP_DICE_BWD:
        st = vp_op_dice_backward(cmd, &n->in[0]->rt, &n->in[1]->rt, &n->in[2]->rt, o, n->fp[0],
                                 n->acc[0]);
        break;
    case VP_GOP_PERMUTE:
        st = vp_op_permute(cmd, &n->in[0]->rt, n->ip, o);
        break;
    case VP_GOP_PERMUTE_BWD:
        st = vp_op_permute_backward(cmd, &n->in[0]->rt, n->ip, o, n->acc[0]);
        break;
    case VP_GOP_CONCAT: {
        const vp_tensor *xs[VP_GMAX_IN];
        for (uint32_t i = 0; i < n->n_in; i++)
            xs[i] = &n->in[i]->rt;
        st = vp_op_concat(cmd, xs, n->n_in, n->ip[0], o);
        break;
    }
    case VP_GOP_CONCAT_BWD: {
        int64_t lens[VP_GMAX_OUT];
        vp_tensor *dxs[VP_GMAX_OUT];
        for (uint32_t i = 0; i < n->n_out; i++) {
            lens[i] = n->shape_of[i]->shape[n->ip[0]];
            dxs[i] = RT(n->out[i]);
        }
        st = vp_op_concat_backward(cmd, &n->in[0]->rt, n->ip[0], lens, dxs, n->n_out, n->acc[0]);
        break;
    }
    case VP_GOP_SLICE:
        st = vp_op_slice(cmd, &n->in[0]->rt, n->ip[0], n->ip[1], o);
        break;
    case VP_GOP_SLICE_BWD:
        st = vp_op_slice_backward(cmd, &n->in[0]->rt, n->ip[0], n->ip[1], o, n->acc[0]);
        break;
    case VP_GOP_GATHER:
        st = vp_op_gather_rows(cmd, &n->in[0]->rt, &n->in[1]->rt, o);
        break;
    case VP_GOP_GATHER_BWD:
        st = vp_op_gather_rows_backward(cmd, &n->in[0]->rt, &n->in[1]->rt, o, n->acc[0]);
        break;
    case VP_GOP_IM2COL:
        st = vp_op_im2col_patches(cmd, &n->in[0]->rt, n->ip[0], o);
        break;
    case VP_GOP_IM2COL_BWD:
        st = vp_op_im2col_patches_backward(cmd, &n->in[0]->rt, n->ip[0], o, n->acc[0]);
        break;
    case VP_GOP_MAXPOOL2:
        st = vp_op_maxpool2(cmd, &n->in[0]->rt, o, &n->out[1]->rt);
        break;
    case VP_GOP_MAXPOOL_BWD:
        st = vp_op_maxpool2_backward(cmd, &n->in[0]->rt, &n->in[1]->rt, o, n->acc[0]);
        break;
    case VP_GOP_D2S:
        st = vp_op_depth_to_space2(cmd, &n->in[0]->rt, RT(n->in[1]), o);
        break;
    case VP_GOP_D2S_BWD:
        st = vp_op_depth_to_space2_backward(cmd, &n->in[0]->rt, o,
                                            n->n_out > 1 ? RT(n->out[1]) : NULL, n->acc[0]);
        break;
    case VP_GOP_RESIZE:
        st = vp_op_resize_bilinear(cmd, &n->in[0]->rt, o);
        break;
    case VP_GOP_RESIZE_BWD:
        st = vp_op_resize_bilinear_backward(cmd, &n->in[0]->rt, o, n->acc[0]);
        break;
    case VP_GOP_BOOLMASK:
        st = vp_op_bool_to_additive(cmd, &n->in[0]->rt, o);
        break;
    case VP_GOP_MSDEFORM:
        st = vp_op_msdeform(cmd, &n->in[0]->rt, &g->levels[n->ip[0]], &n->in[1]->rt,
                            &n->in[2]->rt, o);
        break;
    case VP_GOP_MSDEFORM_BWD:
        st = vp_op_msdeform_backward_ex(
            cmd, &n->in[0]->rt, &g->levels[n->ip[0]], &n->in[1]->rt, &n->in[2]->rt,
            &n->in[3]->rt, o, n->acc[0], &n->out[1]->rt, n->acc[1], &n->out[2]->rt, n->acc[2],
            &(vp_msdeform_cfg){g->deterministic ? VP_MSDEFORM_GATHER : VP_MSDEFORM_AUTO, 0});
        break;
    case VP_GOP_ROWMAP:
        st = vp_op_row_map(cmd, &n->in[0]->rt, &n->in[1]->rt, o, n->acc[0]);
        break;
    case VP_GOP_ATTN:
        st = vp_op_attention(cmd, &n->in[0]->rt, &n->in[1]->rt, &n->in[2]->rt, RT(n->in[3]),
                             n->ip[0], n->fp[0], o, &n->out[1]->rt);
        break;
    case VP_GOP_ATTN_BWD:
        st = vp_op_attention_backward(
            cmd, &n->in[0]->rt, &n->in[1]->rt, &n->in[2]->rt, RT(n->in[3]), n->ip[0], n->fp[0],
            &n->in[4]->rt, &n->in[5]->rt, &n->out[3]->rt, o, n->acc[0],
            &n->out[1]->rt, n->acc[1], &n->out[2]->rt, n->acc[2],
            n->n_out > 4 ? RT(n->out[4]) : NULL);
        break;
    case VP_GOP_HOST:
    case VP_GOP_COUNT:
        return vp_error_set(VP_ERR_INTERNAL, "graph node %s cannot be recorded", n->name);
    }
    return st ? vp_error_wrap(st, "graph node %u (%s)", (uint32_t)(n - g->nodes), n->name) : VP_OK;
}

static vp_status add_segment(vp_graph *g, uint32_t first, uint32_t end, vp_gnode *host)
{
    vp_segment *s = realloc(g->segs, (g->n_segs + 1) * sizeof *s);
    if (!s)
        return vp_error_set(VP_ERR_NOMEM, "out of host memory recording the graph");
    g->segs = s;
    s = &g->segs[g->n_segs++];
    memset(s, 0, sizeof *s);
    s->first = first;
    s->end = end;
    s->host = host;
    if (first == end)
        return VP_OK;
    vp_status st = vp_cmd_create(g->dev, &s->cmd);
    if (!st)
        st = vp_cmd_begin(s->cmd);
    /* Dropout's seed moves on at the start of the segment that first reads
     * it: a new mask every run, no upload. */
    bool first_dropout = false;
    for (uint32_t i = 0; g->seed && i < end; i++)
        if (g->nodes[i].op == VP_GOP_DROPOUT || g->nodes[i].op == VP_GOP_RAND) {
            first_dropout = i >= first;
            break;
        }
    if (!st && first_dropout)
        st = vp_op_seed_next(s->cmd, &g->seed->rt);
    for (uint32_t i = first; i < end && !st; i++)
        st = record_node(g, &g->nodes[i], s->cmd);
    /* the buckets final after this segment; where the host cannot read
     * device memory while the next segment runs, a copy it can */
    s->b_first = g->next_bucket;
    while (g->next_bucket < g->n_buckets && g->bucket_ready[g->next_bucket] < (int64_t)end) {
        const vp_grad_bucket *b = &g->buckets[g->next_bucket++];
        if (!st && g->readback)
            st = vp_cmd_copy_out(s->cmd, &g->bufs[VP_BUF_GRAD], b->offset * 4, b->count * 4,
                                 g->readback, b->offset * 4);
    }
    s->b_end = g->next_bucket;
    if (!st)
        st = vp_cmd_end(s->cmd);
    return st;
}

/* Cut the flat gradient buffer into buckets (vp_graph_set_buckets) and sort
 * them by the node that finishes each. */
static vp_status make_buckets(vp_graph *g)
{
    uint32_t n = 0;
    vp_gt **ps = malloc((g->n_tensors + 1) * sizeof *ps);
    int64_t *last = malloc((g->n_tensors + 1) * sizeof *last);
    vp_status st = ps && last ? VP_OK : vp_error_set(VP_ERR_NOMEM, "out of host memory");
    for (uint32_t i = 0; !st && i < g->n_tensors; i++) {
        last[i] = -1;
        if (g->tensors[i]->kind == VP_GT_PARAM && g->tensors[i]->trainable)
            ps[n++] = g->tensors[i];
    }
    for (uint32_t i = 0; !st && i < g->n_nodes; i++)
        for (uint32_t j = 0; j < g->nodes[i].n_out; j++) {
            vp_gt *r = g->nodes[i].out[j] ? vp_gt_root(g->nodes[i].out[j]) : NULL;
            if (r && r->kind == VP_GT_PGRAD)
                last[r->param->id] = i;
        }
    /* parameters from the highest offset down: the backward pass's order */
    for (uint32_t i = 1; !st && i < n; i++)
        for (uint32_t k = i; k > 0 && ps[k - 1]->offset < ps[k]->offset; k--) {
            vp_gt *t = ps[k];
            ps[k] = ps[k - 1];
            ps[k - 1] = t;
        }
    if (!st && (!(g->buckets = calloc(n ? n : 1, sizeof *g->buckets)) ||
                !(g->bucket_ready = calloc(n ? n : 1, sizeof *g->bucket_ready))))
        st = vp_error_set(VP_ERR_NOMEM, "out of host memory");
    uint64_t hi = g->buf_size[VP_BUF_GRAD] / 4, bytes = 0;
    int64_t ready = -1;
    for (uint32_t i = 0; !st && i < n; i++) {
        bytes += (uint64_t)vp_gt_nelem(ps[i]) * 4;
        ready = last[ps[i]->id] > ready ? last[ps[i]->id] : ready;
        if (i + 1 < n && (g->bucket_bytes == 0 || bytes < g->bucket_bytes))
            continue;
        uint64_t lo = i + 1 == n ? 0 : ps[i]->offset / 4;
        g->buckets[g->n_buckets] = (vp_grad_bucket){lo, hi - lo};
        g->bucket_ready[g->n_buckets++] = ready;
        hi = lo;
        bytes = 0;
        ready = -1;
    }
    /* by finishing node, stable (ties keep the buffer's order from the top) */
    for (uint32_t i = 1; !st && i < g->n_buckets; i++)
        for (uint32_t k = i; k > 0 && g->bucket_ready[k - 1] > g->bucket_ready[k]; k--) {
            vp_grad_bucket b = g->buckets[k];
            int64_t r = g->bucket_ready[k];
            g->buckets[k] = g->buckets[k - 1];
            g->bucket_ready[k] = g->bucket_ready[k - 1];
            g->buckets[k - 1] = b;
            g->bucket_ready[k - 1] = r;
        }
    /* Read where the host reads fast: mapped memory on integrated and CPU
     * devices; on a discrete GPU, mapped device memory is read uncached
     * across the bus, so a copy to cached host memory is faster there. */
    if (!st && (!vp_mem_host_ptr(&g->bufs[VP_BUF_GRAD]) ||
                vp_device_get_info(g->dev)->type == VK_PHYSICAL_DEVICE_TYPE_DISCRETE_GPU))
        st = vp_readback_create(g->dev, g->buf_size[VP_BUF_GRAD], &g->readback);
    free(ps);
    free(last);
    return st;
}

vp_status vp_graph_set_buckets(vp_graph *g, uint64_t bytes)
{
    if (g->compiled)
        return vp_error_set(VP_ERR_INVALID, "buckets: set them before compiling the graph");
    g->bucketed = true;
    g->bucket_bytes = bytes;
    return VP_OK;
}

const vp_grad_bucket *vp_graph_buckets(const vp_graph *g, uint32_t *n)
{
    *n = g->compiled ? g->n_buckets : 0;
    return *n ? g->buckets : NULL;
}

/* The flat buffer b as one 1-D tensor. */
static void flat_view(vp_graph *g, vp_tensor *t, vp_gbuf b, const char *name)
{
    int64_t n = (int64_t)(g->buf_size[b] / 4);
    vp_tensor_view_init(t, g->dev, &g->bufs[b], 0, VP_F32, 1, &n, name);
}

/* One storage binding spans at most maxStorageBufferRange bytes (128 MiB
 * on lavapipe), and a flat buffer of a 47M-parameter model is larger: the
 * passes over whole flat buffers (zeroing, the norm, AdamW) go chunk by
 * chunk, each chunk a view starting at an aligned offset. */
static uint64_t chunk_floats(const vp_graph *g)
{
    const vp_device_info *d = vp_device_get_info(g->dev);
    uint64_t align = d->storage_align > 16 ? d->storage_align : 16;
    uint64_t range = d->max_storage_range ? d->max_storage_range : UINT32_MAX;
    uint64_t bytes = range / align * align;
    return bytes / 4 ? bytes / 4 : 1;
}

static uint32_t n_chunks(const vp_graph *g, vp_gbuf b)
{
    uint64_t n = g->buf_size[b] / 4, c = chunk_floats(g);
    return (uint32_t)((n + c - 1) / c);
}

static void chunk_view(vp_graph *g, vp_tensor *t, vp_gbuf b, uint32_t k, const char *name)
{
    uint64_t c = chunk_floats(g), n = g->buf_size[b] / 4, off = (uint64_t)k * c;
    int64_t len = (int64_t)(n - off < c ? n - off : c);
    vp_tensor_view_init(t, g->dev, &g->bufs[b], off * 4, VP_F32, 1, &len, name);
}

static vp_status fill_flat(vp_graph *g, vp_cmd *cmd, vp_gbuf b, float value, const char *name)
{
    vp_status st = VP_OK;
    for (uint32_t k = 0; !st && k < n_chunks(g, b); k++) {
        vp_tensor t;
        chunk_view(g, &t, b, k, name);
        st = vp_op_fill(cmd, &t, value);
    }
    return st;
}

/* One step of the optimizer: clip, AdamW over the flat buffers, zero the
 * gradients. */
static vp_status record_optimizer(vp_graph *g)
{
    const vp_device_info *d = vp_device_get_info(g->dev);
    uint64_t align = d->storage_align > 16 ? d->storage_align : 16;
    flat_view(g, &g->train_all, VP_BUF_TRAIN, "params");
    flat_view(g, &g->m_all, VP_BUF_M, "adamw.m");
    flat_view(g, &g->v_all, VP_BUF_V, "adamw.v");
    if (g->buf_size[VP_BUF_LRSCALE])
        flat_view(g, &g->lrs_all, VP_BUF_LRSCALE, "lr_scale");
    vp_tensor_view_init(&g->opt_state, g->dev, &g->bufs[VP_BUF_OPT], 0, VP_F32, 1,
                        (int64_t[]){4}, "adamw.state");
    vp_tensor_view_init(&g->opt_sqnorm, g->dev, &g->bufs[VP_BUF_OPT], align, VP_F32, 1,
                        (int64_t[]){1}, "grad.sqnorm");
    bool clip = g->adamw.max_norm > 0.0f;
    uint32_t nc = n_chunks(g, VP_BUF_GRAD);
    vp_tensor *ch = calloc((size_t)nc * 5, sizeof *ch);
    const vp_tensor **grads = calloc(nc, sizeof *grads);
    vp_status st = ch && grads ? vp_cmd_create(g->dev, &g->opt_cmd)
                               : vp_error_set(VP_ERR_NOMEM, "out of host memory");
    if (!st)
        st = vp_cmd_begin(g->opt_cmd);
    /* the trainable, gradient, moment and multiplier buffers are laid out
     * alike: chunk k of each covers the same parameters */
    for (uint32_t k = 0; !st && k < nc; k++) {
        vp_tensor *c = ch + 5 * k;
        chunk_view(g, &c[0], VP_BUF_TRAIN, k, "params");
        chunk_view(g, &c[1], VP_BUF_GRAD, k, "grads");
        chunk_view(g, &c[2], VP_BUF_M, k, "adamw.m");
        chunk_view(g, &c[3], VP_BUF_V, k, "adamw.v");
        if (g->buf_size[VP_BUF_LRSCALE])
            chunk_view(g, &c[4], VP_BUF_LRSCALE, k, "lr_scale");
        grads[k] = &c[1];
    }
    if (!st && clip)
        st = vp_op_sqnorm(g->opt_cmd, grads, nc, &g->opt_sqnorm);
    /* the norm alone, for a check before the update (vp_graph_grad_sqnorm) */
    if (!st)
        st = vp_cmd_create(g->dev, &g->norm_cmd);
    if (!st)
        st = vp_cmd_begin(g->norm_cmd);
    if (!st)
        st = vp_op_sqnorm(g->norm_cmd, grads, nc, &g->opt_sqnorm);
    if (!st)
        st = vp_cmd_end(g->norm_cmd);
    for (uint32_t k = 0; !st && k < nc; k++) {
        vp_tensor *c = ch + 5 * k;
        st = vp_op_adamw(g->opt_cmd, &c[0], &c[1], &c[2], &c[3], &g->opt_state,
                         clip ? &g->opt_sqnorm : NULL,
                         g->buf_size[VP_BUF_LRSCALE] ? &c[4] : NULL, &g->adamw);
    }
    free(ch);
    free(grads);
    if (!st)
        st = fill_flat(g, g->opt_cmd, VP_BUF_GRAD, 0.0f, "grads");
    if (!st)
        st = vp_cmd_end(g->opt_cmd);
    return st ? vp_error_wrap(st, "recording the optimizer") : VP_OK;
}

/* Zero every persistent buffer once (fresh device memory holds garbage, the
 * optimizer also touches the padding between parameters, and an input never
 * written reads zeros), and write the learning-rate multipliers. */
static vp_status init_buffers(vp_graph *g)
{
    static const vp_gbuf zeroed[] = {VP_BUF_FROZEN, VP_BUF_TRAIN, VP_BUF_GRAD, VP_BUF_M, VP_BUF_V,
                                     VP_BUF_IO};
    vp_cmd *cmd;
    vp_status st = vp_cmd_create(g->dev, &cmd);
    if (!st)
        st = vp_cmd_begin(cmd);
    for (size_t i = 0; i < sizeof zeroed / sizeof zeroed[0] && !st; i++) {
        if (!g->buf_size[zeroed[i]])
            continue;
        st = fill_flat(g, cmd, zeroed[i], 0.0f, "init");
    }
    if (!st && g->buf_size[VP_BUF_LRSCALE])
        st = fill_flat(g, cmd, VP_BUF_LRSCALE, 1.0f, "lr_scale");
    if (!st)
        st = vp_cmd_submit(cmd);
    vp_cmd_destroy(cmd);
    for (uint32_t i = 0; i < g->n_tensors && !st && g->buf_size[VP_BUF_LRSCALE]; i++) {
        vp_gt *t = g->tensors[i];
        if (t->kind != VP_GT_PARAM || !t->trainable || t->lr_scale == 1.0f)
            continue;
        size_t n = (size_t)vp_gt_nelem(t);
        float *s = malloc(n * sizeof *s);
        if (!s)
            return vp_error_set(VP_ERR_NOMEM, "out of host memory");
        for (size_t k = 0; k < n; k++)
            s[k] = t->lr_scale;
        st = vp_mem_upload(g->dev, &g->bufs[VP_BUF_LRSCALE], t->offset, s, n * sizeof *s);
        free(s);
    }
    return st;
}

vp_status vp_graph_record(vp_graph *g)
{
    uint32_t start = 0, b = 0;
    vp_status st = VP_OK;
    g->next_bucket = 0;
    if (g->bucketed && g->buf_size[VP_BUF_GRAD] && !g->buckets)
        st = make_buckets(g);
    for (uint32_t i = 0; i < g->n_nodes && !st; i++) {
        while (b < g->n_buckets && g->bucket_ready[b] < (int64_t)i)
            b++;
        if (g->nodes[i].op == VP_GOP_HOST) {
            st = add_segment(g, start, i, &g->nodes[i]);
            start = i + 1;
        } else if (b < g->n_buckets && g->bucket_ready[b] == (int64_t)i) {
            st = add_segment(g, start, i + 1, NULL); /* a bucket is final */
            start = i + 1;
        }
    }
    if (!st && (start < g->n_nodes || g->n_segs == 0))
        st = add_segment(g, start, g->n_nodes, NULL);
    if (st || !g->buf_size[VP_BUF_GRAD])
        return st;
    /* Zeroing the gradients: one fill over the whole flat buffer. */
    flat_view(g, &g->grad_all, VP_BUF_GRAD, "grads");
    if (g->has_optim && (st = record_optimizer(g)))
        return st;
    st = vp_cmd_create(g->dev, &g->zero_cmd);
    if (!st)
        st = vp_cmd_begin(g->zero_cmd);
    if (!st)
        st = fill_flat(g, g->zero_cmd, VP_BUF_GRAD, 0.0f, "grads");
    if (!st)
        st = vp_cmd_end(g->zero_cmd);
    return st;
}

void vp_graph_release_segments(vp_graph *g)
{
    for (uint32_t i = 0; i < g->n_segs; i++)
        vp_cmd_destroy(g->segs[i].cmd);
    free(g->segs);
    g->segs = NULL;
    g->n_segs = 0;
    vp_cmd_destroy(g->zero_cmd);
    g->zero_cmd = NULL;
    vp_cmd_destroy(g->opt_cmd);
    g->opt_cmd = NULL;
    vp_cmd_destroy(g->norm_cmd);
    g->norm_cmd = NULL;
    free(g->buckets);
    free(g->bucket_ready);
    g->buckets = NULL;
    g->bucket_ready = NULL;
    g->n_buckets = g->next_bucket = 0;
    vp_readback_destroy(g->readback);
    g->readback = NULL;
}

vp_status vp_graph_compile(vp_graph *g)
{
    if (g->err)
        return vp_error_set(g->err, "%s", g->err_msg);
    if (g->compiled)
        return vp_error_set(VP_ERR_INVALID, "compile: the graph is already compiled");
    if (!g->differentiated)
        g->n_forward = g->n_nodes;
    vp_status st = vp_graph_plan(g);
    if (!st)
        st = init_buffers(g);
    for (uint32_t i = 0; i < g->n_tensors && !st; i++) {
        vp_gt *t = g->tensors[i];
        if (t->kind == VP_GT_CONST)
            st = vp_tensor_upload(&t->rt, t->const_data, vp_tensor_nbytes(&t->rt));
    }
    if (!st)
        st = vp_graph_record(g);
    if (st) {
        vp_graph_release_segments(g);
        vp_graph_release_buffers(g);
        return vp_error_wrap(st, "compiling the graph");
    }
    g->compiled = true;
    return VP_OK;
}

static vp_status check_io(vp_graph *g, vp_gt *t, size_t bytes, bool write)
{
    if (!g->compiled)
        return vp_error_set(VP_ERR_INVALID, "tensor %s: compile the graph first", t->name);
    vp_gt *r = vp_gt_root(t);
    if (write && r->kind != VP_GT_INPUT && r->kind != VP_GT_PARAM && r->kind != VP_GT_CONST)
        return vp_error_set(VP_ERR_INVALID, "tensor %s: only inputs, parameters and constants "
                            "are written by the host", t->name);
    if (!write && r->kind == VP_GT_ACT && !r->keep)
        return vp_error_set(VP_ERR_INVALID, "tensor %s: its memory is reused during a run; "
                            "mark it with vp_g_keep before compiling to read it", t->name);
    if (r->kind == VP_GT_ACT && r->first < 0)
        return vp_error_set(VP_ERR_INVALID, "tensor %s is not used by the graph", t->name);
    if (bytes != vp_tensor_nbytes(&t->rt))
        return vp_error_set(VP_ERR_SHAPE, "tensor %s: %zu bytes given, it holds %zu", t->name,
                            bytes, vp_tensor_nbytes(&t->rt));
    return VP_OK;
}

vp_status vp_graph_write(vp_graph *g, vp_gt *t, const void *data, size_t bytes)
{
    vp_status st = check_io(g, t, bytes, true);
    return st ? st : vp_tensor_upload(&t->rt, data, bytes);
}

vp_status vp_graph_read(vp_graph *g, vp_gt *t, void *data, size_t bytes)
{
    vp_status st = check_io(g, t, bytes, false);
    return st ? st : vp_tensor_download(&t->rt, data, bytes);
}

static vp_status run_host(vp_gnode *n)
{
    float *in[VP_GMAX_IN] = {0}, *out[VP_GMAX_OUT] = {0};
    const int64_t *in_shape[VP_GMAX_IN];
    int in_ndim[VP_GMAX_IN];
    vp_status st = VP_OK;
    for (uint32_t i = 0; i < n->n_in && !st; i++) {
        vp_tensor *t = &n->in[i]->rt;
        in[i] = malloc(vp_tensor_nbytes(t));
        in_shape[i] = t->shape;
        in_ndim[i] = t->ndim;
        st = in[i] ? vp_tensor_download(t, in[i], vp_tensor_nbytes(t))
                   : vp_error_set(VP_ERR_NOMEM, "out of host memory");
    }
    for (uint32_t i = 0; i < n->n_out && !st; i++)
        if (!(out[i] = calloc(1, vp_tensor_nbytes(&n->out[i]->rt))))
            st = vp_error_set(VP_ERR_NOMEM, "out of host memory");
    if (!st) {
        vp_host_io io = {n->n_in, n->n_out, (const float *const *)in, in_shape, in_ndim,
                         (float *const *)out};
        st = n->host_fn(n->host_user, &io);
        if (st)
            vp_error_wrap(st, "host node %s", n->name);
    }
    for (uint32_t i = 0; i < n->n_out && !st; i++)
        st = vp_tensor_upload(&n->out[i]->rt, out[i], vp_tensor_nbytes(&n->out[i]->rt));
    for (uint32_t i = 0; i < VP_GMAX_IN; i++)
        free(in[i]);
    for (uint32_t i = 0; i < VP_GMAX_OUT; i++)
        free(out[i]);
    return st;
}

vp_status vp_graph_run(vp_graph *g)
{
    if (!g->compiled)
        return vp_error_set(VP_ERR_INVALID, "run: compile the graph first");
    for (uint32_t i = 0; i < g->n_segs; i++) {
        vp_segment *s = &g->segs[i];
        vp_status st = s->cmd ? vp_cmd_submit(s->cmd) : VP_OK;
        if (!st && s->host)
            st = run_host(s->host);
        if (st)
            return st;
    }
    return VP_OK;
}

/* Buckets [b, e) to the host: copied from the device's memory or the
 * readback buffer, then to ready. */
static vp_status hand_over(vp_graph *g, uint32_t b, uint32_t e, float *grads, vp_bucket_fn ready,
                           void *user)
{
    const char *src = g->readback ? vp_readback_data(g->readback)
                                  : vp_mem_host_ptr(&g->bufs[VP_BUF_GRAD]);
    vp_status st = VP_OK;
    for (uint32_t k = b; k < e && !st; k++) {
        const vp_grad_bucket *bk = &g->buckets[k];
        memcpy(grads + bk->offset, src + bk->offset * 4, bk->count * 4);
        st = ready(user, k, grads + bk->offset, bk->count);
    }
    return st;
}

vp_status vp_graph_run_buckets(vp_graph *g, float *grads, vp_bucket_fn ready, void *user)
{
    if (!g->compiled)
        return vp_error_set(VP_ERR_INVALID, "run: compile the graph first");
    if (!g->n_buckets)
        return vp_error_set(VP_ERR_INVALID, "run_buckets: %s",
                            g->bucketed ? "the graph has no gradients"
                                        : "set buckets before compiling");
    uint32_t b = 0, e = 0; /* buckets final, not handed over yet */
    for (uint32_t i = 0; i < g->n_segs; i++) {
        vp_segment *s = &g->segs[i];
        vp_status st = s->cmd ? vp_cmd_submit_async(s->cmd) : VP_OK;
        if (!st && b < e) { /* the last segment's buckets while this one runs */
            double t0 = 1e3 * vp_now_s();
            st = hand_over(g, b, e, grads, ready, user);
            double dt = 1e3 * vp_now_s() - t0;
            g->handover_ms += dt;
            if (!s->cmd || vp_cmd_finished(s->cmd))
                g->handover_exposed_ms += dt;
        }
        vp_status ws = s->cmd ? vp_cmd_wait(s->cmd) : VP_OK;
        if (!st)
            st = ws;
        if (!st && s->host)
            st = run_host(s->host);
        if (st)
            return st;
        b = s->b_first;
        e = s->b_end;
    }
    double t0 = 1e3 * vp_now_s(); /* after the last segment: nothing hides it */
    vp_status st = hand_over(g, b, e, grads, ready, user);
    double dt = 1e3 * vp_now_s() - t0;
    g->handover_ms += dt;
    g->handover_exposed_ms += dt;
    return st;
}

vp_status vp_graph_grad_sqnorm(vp_graph *g, double *out)
{
    *out = 0;
    if (!g->compiled || !g->norm_cmd)
        return vp_error_set(VP_ERR_INVALID, "grad_sqnorm: compile a graph with an optimizer "
                            "first");
    float v = 0;
    vp_status st = vp_cmd_submit(g->norm_cmd);
    if (!st)
        st = vp_tensor_download(&g->opt_sqnorm, &v, sizeof v);
    *out = v;
    return st;
}

vp_status vp_graph_zero_grads(vp_graph *g)
{
    if (!g->compiled)
        return vp_error_set(VP_ERR_INVALID, "zero_grads: compile the graph first");
    return g->zero_cmd ? vp_cmd_submit(g->zero_cmd) : VP_OK;
}

vp_status vp_graph_set_optimizer(vp_graph *g, const vp_adamw_cfg *cfg)
{
    if (g->compiled)
        return vp_error_set(VP_ERR_INVALID, "optimizer: set it before compiling the graph");
    if (!(cfg->beta1 >= 0 && cfg->beta1 < 1 && cfg->beta2 >= 0 && cfg->beta2 < 1 &&
          cfg->eps >= 0 && cfg->weight_decay >= 0 && cfg->max_norm >= 0))
        return vp_error_set(VP_ERR_INVALID, "optimizer: betas must be in [0, 1), eps, weight "
                            "decay and max_norm >= 0 (got %g, %g, %g, %g, %g)", cfg->beta1,
                            cfg->beta2, cfg->eps, cfg->weight_decay, cfg->max_norm);
    g->adamw = *cfg;
    g->has_optim = true;
    return VP_OK;
}

vp_status vp_graph_step_accum(vp_graph *g, float lr, int step, int runs)
{
    if (!g->compiled || !g->opt_cmd)
        return vp_error_set(VP_ERR_INVALID, "step: %s", !g->compiled
                                                            ? "compile the graph first"
                                                            : "no optimizer was set");
    if (runs < 1)
        return vp_error_set(VP_ERR_INVALID, "step: %d accumulated runs", runs);
    float state[4];
    vp_status st = vp_adamw_state(lr, step, &g->adamw, state);
    state[3] = 1.0f / (float)runs;
    if (!st)
        st = vp_tensor_upload(&g->opt_state, state, sizeof state);
    return st ? st : vp_cmd_submit(g->opt_cmd);
}

vp_status vp_graph_step(vp_graph *g, float lr, int step)
{
    return vp_graph_step_accum(g, lr, step, 1);
}

uint64_t vp_graph_optim_len(const vp_graph *g)
{
    return g->compiled && g->has_optim ? (uint64_t)vp_tensor_nelem(&g->m_all) : 0;
}

static vp_status optim_io(vp_graph *g, float *m, float *v, uint64_t n, bool up)
{
    uint64_t len = vp_graph_optim_len(g);
    if (!len || n != len)
        return vp_error_set(VP_ERR_INVALID, "optimizer state: %llu values given, the graph "
                            "has %llu", (unsigned long long)n, (unsigned long long)len);
    size_t bytes = (size_t)len * sizeof(float);
    vp_status st = up ? vp_tensor_upload(&g->m_all, m, bytes) : vp_tensor_download(&g->m_all, m, bytes);
    if (!st)
        st = up ? vp_tensor_upload(&g->v_all, v, bytes) : vp_tensor_download(&g->v_all, v, bytes);
    return st;
}

vp_status vp_graph_optim_read(vp_graph *g, float *m, float *v, uint64_t n)
{
    return optim_io(g, m, v, n, false);
}

vp_status vp_graph_optim_write(vp_graph *g, const float *m, const float *v, uint64_t n)
{
    return optim_io(g, (float *)m, (float *)v, n, true);
}

uint64_t vp_graph_grads_len(const vp_graph *g)
{
    return g->compiled && g->buf_size[VP_BUF_GRAD] ? (uint64_t)vp_tensor_nelem(&g->grad_all) : 0;
}

static vp_status grads_io(vp_graph *g, float *x, uint64_t n, bool up)
{
    uint64_t len = vp_graph_grads_len(g);
    if (!len || n != len)
        return vp_error_set(VP_ERR_INVALID, "gradients: %llu values given, the graph has %llu",
                            (unsigned long long)n, (unsigned long long)len);
    size_t bytes = (size_t)len * sizeof(float);
    return up ? vp_tensor_upload(&g->grad_all, x, bytes)
              : vp_tensor_download(&g->grad_all, x, bytes);
}

vp_status vp_graph_grads_read(vp_graph *g, float *x, uint64_t n)
{
    return grads_io(g, x, n, false);
}

vp_status vp_graph_grads_write(vp_graph *g, const float *x, uint64_t n)
{
    return grads_io(g, (float *)x, n, true);
}

vp_status vp_graph_seed_read(vp_graph *g, uint32_t *seed)
{
    *seed = 0;
    if (!g->compiled || !g->seed)
        return VP_OK;
    return vp_tensor_download(&g->seed->rt, seed, sizeof *seed);
}

vp_status vp_graph_seed_write(vp_graph *g, uint32_t seed)
{
    if (!g->compiled || !g->seed)
        return VP_OK;
    return vp_tensor_upload(&g->seed->rt, &seed, sizeof seed);
}

vp_graph_stats vp_graph_get_stats(const vp_graph *g)
{
    vp_graph_stats s = {.nodes = g->n_nodes, .segments = g->n_segs,
                        .handover_ms = g->handover_ms,
                        .handover_exposed_ms = g->handover_exposed_ms};
    for (uint32_t i = 0; i < g->n_nodes; i++)
        s.backward_nodes += g->nodes[i].backward;
    for (uint32_t i = 0; i < g->n_segs; i++) {
        if (!g->segs[i].cmd)
            continue;
        vp_cmd_stats c = vp_cmd_get_stats(g->segs[i].cmd);
        s.dispatches += c.dispatches;
        s.barriers += c.barriers;
        s.submits += c.submits;
        s.submit_ms += c.submit_ms;
    }
    vp_cmd *extra[3] = {g->opt_cmd, g->zero_cmd, g->norm_cmd};
    for (int i = 0; i < 3; i++) {
        if (!extra[i])
            continue;
        vp_cmd_stats c = vp_cmd_get_stats(extra[i]);
        s.submits += c.submits;
        s.submit_ms += c.submit_ms;
    }
    return s;
}
