/*
 * The reference executor: runs a graph's forward nodes on the CPU in double
 * precision with the references of core/ref. Tests use it for whole-graph
 * finite differences (perturb a parameter, evaluate the loss, in double),
 * and it is what a --verify mode checks the device against. Each forward op
 * has one case in ref_node(), next to its kernel's case in exec.c.
 */
#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "graph/internal.h"
#include "ref/layout.h"
#include "ref/loss.h"
#include "ref/msdeform.h"
#include "ref/nn.h"
#include "ref/ref.h"

struct vp_graph_ref {
    const vp_graph *g;
    double **data;   /* per tensor id; views point into their root's */
};

static int64_t batch_of(const vp_gt *t)
{
    int64_t b = 1;
    for (int i = 0; i < t->ndim - 2; i++)
        b *= t->shape[i];
    return b;
}

vp_status vp_graph_ref_create(const vp_graph *g, vp_graph_ref **out)
{
    *out = NULL;
    vp_graph_ref *r = calloc(1, sizeof *r);
    if (!r || !(r->data = calloc(g->n_tensors ? g->n_tensors : 1, sizeof *r->data))) {
        free(r);
        return vp_error_set(VP_ERR_NOMEM, "out of host memory");
    }
    r->g = g;
    for (uint32_t i = 0; i < g->n_tensors; i++) {
        vp_gt *t = g->tensors[i];
        if (t->kind == VP_GT_VIEW)
            continue;
        size_t n = (size_t)vp_gt_nelem(t);
        if (!(r->data[i] = calloc(n, sizeof(double)))) {
            vp_graph_ref_destroy(r);
            return vp_error_set(VP_ERR_NOMEM, "out of host memory");
        }
        if (t->kind == VP_GT_CONST && t->const_data && t->dtype == VP_I32)
            for (size_t k = 0; k < n; k++) /* int values kept as doubles, as inputs' */
                r->data[i][k] = ((const int32_t *)(const void *)t->const_data)[k];
        else if (t->kind == VP_GT_CONST && t->const_data)
            for (size_t k = 0; k < n; k++)
                r->data[i][k] = t->const_data[k];
    }
    for (uint32_t i = 0; i < g->n_tensors; i++)
        if (g->tensors[i]->kind == VP_GT_VIEW)
            r->data[i] = r->data[g->tensors[i]->view_of->id] + g->tensors[i]->view_off;
    *out = r;
    return VP_OK;
}

void vp_graph_ref_destroy(vp_graph_ref *r)
{
    if (!r)
        return;
    for (uint32_t i = 0; i < r->g->n_tensors; i++)
        if (r->g->tensors[i]->kind != VP_GT_VIEW)
            free(r->data[i]);
    free(r->data);
    free(r);
}

double *vp_graph_ref_data(vp_graph_ref *r, const vp_gt *t) { return r->data[t->id]; }

static vp_status ref_host(vp_graph_ref *r, const vp_gnode *n)
{
    float *in[VP_GMAX_IN] = {0}, *out[VP_GMAX_OUT] = {0};
    const int64_t *in_shape[VP_GMAX_IN];
    int in_ndim[VP_GMAX_IN];
    vp_status st = VP_OK;
    for (uint32_t i = 0; i < n->n_in && !st; i++) {
        size_t k = (size_t)vp_gt_nelem(n->in[i]);
        in_shape[i] = n->in[i]->shape;
        in_ndim[i] = n->in[i]->ndim;
        if (!(in[i] = malloc(k * sizeof(float))))
            st = vp_error_set(VP_ERR_NOMEM, "out of host memory");
        for (size_t e = 0; !st && e < k; e++) {
            if (n->in[i]->dtype == VP_I32) { /* the device hands over int32 bits */
                int32_t v = (int32_t)r->data[n->in[i]->id][e];
                memcpy(&in[i][e], &v, sizeof v);
            } else {
                in[i][e] = (float)r->data[n->in[i]->id][e];
            }
        }
    }
    for (uint32_t i = 0; i < n->n_out && !st; i++)
        if (!(out[i] = calloc((size_t)vp_gt_nelem(n->out[i]), sizeof(float))))
            st = vp_error_set(VP_ERR_NOMEM, "out of host memory");
    if (!st) {
        vp_host_io io = {n->n_in, n->n_out, (const float *const *)in, in_shape, in_ndim,
                         (float *const *)out};
        st = n->host_fn(n->host_user, &io);
    }
    for (uint32_t i = 0; i < n->n_out && !st; i++)
        for (int64_t e = 0; e < vp_gt_nelem(n->out[i]); e++) {
            int32_t v;
            memcpy(&v, &out[i][e], sizeof v);
            r->data[n->out[i]->id][e] = n->out[i]->dtype == VP_I32 ? (double)v : out[i][e];
        }
    for (uint32_t i = 0; i < VP_GMAX_IN; i++)
        free(in[i]);
    for (uint32_t i = 0; i < VP_GMAX_OUT; i++)
        free(out[i]);
    return st;
}

static vp_status ref_node(vp_graph_ref *r, const vp_gnode *n)
{
#define DATA(t) ((t) ? r->data[(t)->id] : NULL)
    double *o = n->n_out ? r->data[n->out[0]->id] : NULL;
    const vp_gt *y = n->n_out ? n->out[0] : NULL;
    const vp_gt *a = n->in[0], *b = n->in[1];
    double *da = a ? r->data[a->id] : NULL, *db = b ? r->data[b->id] : NULL;
    switch (n->op) {
    case VP_GOP_GEMM: {
        bool ta = n->ip[0], tb = n->ip[1];
        int64_t M = y->shape[y->ndim - 2], N = y->shape[y->ndim - 1];
        int64_t K = ta ? a->shape[a->ndim - 2] : a->shape[a->ndim - 1];
        int64_t batch = batch_of(y);
        vp_ref_matmul(da, ta, db, tb, o, batch, M, N, K, batch_of(a) > 1 ? M * K : 0,
                      batch_of(b) > 1 ? K * N : 0, M * N);
        if (n->n_in > 2)
            vp_ref_add(o, r->data[n->in[2]->id], o, batch * M * N, N);
        return VP_OK;
    }
    case VP_GOP_ADD:
        vp_ref_add(da, db, o, vp_gt_nelem(y), vp_gt_nelem(b));
        return VP_OK;
    case VP_GOP_MUL:
        vp_ref_mul(da, db, o, vp_gt_nelem(y), vp_gt_nelem(b));
        return VP_OK;
    case VP_GOP_AXPY:
        vp_ref_scale(da, n->fp[0], o, vp_gt_nelem(y));
        return VP_OK;
    case VP_GOP_FILL:
        vp_ref_fill(o, n->fp[0], vp_gt_nelem(y));
        return VP_OK;
    case VP_GOP_HOST:
        return ref_host(r, n);
    case VP_GOP_CUSTOM: {
        double *in[VP_GMAX_IN];
        for (uint32_t i = 0; i < n->n_in; i++)
            in[i] = r->data[n->in[i]->id];
        return vp_custom_reference(n, in, o);
    }
    case VP_GOP_DROPOUT:
        vp_ref_dropout(da, (uint32_t)db[0], n->fp[0], o, vp_gt_nelem(y));
        return VP_OK;
    case VP_GOP_RAND:
        vp_ref_rand((uint32_t)da[0], (uint32_t)n->ip[0], o, vp_gt_nelem(y));
        return VP_OK;
    case VP_GOP_LOGITMASK: {
        int64_t C = y->shape[y->ndim - 1];
        vp_ref_logit_mask(da, o, vp_gt_nelem(y) / C, C);
        return VP_OK;
    }
    case VP_GOP_ACT:
        vp_ref_act(n->ip[0], da, o, vp_gt_nelem(y));
        return VP_OK;
    case VP_GOP_RELU:
        vp_ref_relu(da, o, vp_gt_nelem(y));
        return VP_OK;
    case VP_GOP_GELU:
        vp_ref_gelu(da, o, vp_gt_nelem(y));
        return VP_OK;
    case VP_GOP_SOFTMAX: {
        int64_t C = y->shape[y->ndim - 1];
        vp_ref_softmax(da, o, vp_gt_nelem(y) / C, C);
        return VP_OK;
    }
    case VP_GOP_LAYERNORM: {
        int64_t C = y->shape[y->ndim - 1];
        vp_ref_layernorm(da, DATA(n->in[1]), DATA(n->in[2]), n->fp[0], o,
                         r->data[n->out[1]->id], r->data[n->out[2]->id], vp_gt_nelem(y) / C, C);
        return VP_OK;
    }
    case VP_GOP_CE: {
        int64_t N = a->shape[0], C = a->shape[1];
        int32_t *t = malloc((size_t)N * sizeof *t);
        if (!t)
            return vp_error_set(VP_ERR_NOMEM, "out of host memory");
        for (int64_t i = 0; i < N; i++)
            t[i] = (int32_t)db[i];
        o[0] = vp_ref_cross_entropy(da, t, DATA(n->in[2]), N, C);
        free(t);
        return VP_OK;
    }
    case VP_GOP_BCE:
        o[0] = vp_ref_bce_logits(da, db, vp_gt_nelem(a));
        return VP_OK;
    case VP_GOP_DICE: {
        int64_t M = a->shape[0];
        o[0] = vp_ref_dice(da, db, M, vp_gt_nelem(a) / M, n->fp[0]);
        return VP_OK;
    }
    case VP_GOP_PERMUTE:
        vp_ref_permute(da, a->ndim, a->shape, n->ip, o);
        return VP_OK;
    case VP_GOP_CONCAT: {
        int ax = n->ip[0];
        int64_t outer = 1, inner = 1, lens[VP_GMAX_IN];
        const double *xs[VP_GMAX_IN];
        for (int d = 0; d < ax; d++)
            outer *= y->shape[d];
        for (int d = ax + 1; d < y->ndim; d++)
            inner *= y->shape[d];
        for (uint32_t i = 0; i < n->n_in; i++) {
            xs[i] = r->data[n->in[i]->id];
            lens[i] = n->in[i]->shape[ax];
        }
        vp_ref_concat(xs, lens, n->n_in, outer, inner, o);
        return VP_OK;
    }
    case VP_GOP_SLICE: {
        int ax = n->ip[0];
        int64_t outer = 1, inner = 1;
        for (int d = 0; d < ax; d++)
            outer *= a->shape[d];
        for (int d = ax + 1; d < a->ndim; d++)
            inner *= a->shape[d];
        vp_ref_slice(da, outer, a->shape[ax], inner, n->ip[1], y->shape[ax], o);
        return VP_OK;
    }
    case VP_GOP_GATHER: {
        int64_t N = vp_gt_nelem(b);
        int32_t *idx = malloc((size_t)N * sizeof *idx);
        if (!idx)
            return vp_error_set(VP_ERR_NOMEM, "out of host memory");
        for (int64_t i = 0; i < N; i++)
            idx[i] = (int32_t)db[i];
        vp_ref_gather_rows(da, a->shape[0], a->shape[1], idx, N, o);
        free(idx);
        return VP_OK;
    }
    case VP_GOP_IM2COL:
        vp_ref_im2col_patches(da, a->shape[0], a->shape[1], a->shape[2], a->shape[3], n->ip[0], o);
        return VP_OK;
    case VP_GOP_MAXPOOL2: {
        int64_t ny = vp_gt_nelem(y);
        int32_t *am = malloc((size_t)ny * sizeof *am);
        if (!am)
            return vp_error_set(VP_ERR_NOMEM, "out of host memory");
        vp_ref_maxpool2(da, a->shape[0], a->shape[1], a->shape[2], a->shape[3], o, am);
        for (int64_t i = 0; i < ny; i++)
            r->data[n->out[1]->id][i] = am[i];
        free(am);
        return VP_OK;
    }
    case VP_GOP_D2S:
        vp_ref_depth_to_space2(da, DATA(n->in[1]), a->shape[0], a->shape[1], a->shape[2],
                               y->shape[3], o);
        return VP_OK;
    case VP_GOP_RESIZE:
        vp_ref_resize_bilinear(da, a->shape[0], a->shape[1], a->shape[2], a->shape[3], y->shape[1],
                               y->shape[2], o);
        return VP_OK;
    case VP_GOP_MSDEFORM: {
        const vp_msdeform_levels *lv = &r->g->levels[n->ip[0]];
        int64_t shapes[2 * VP_MSDEFORM_MAX_LEVELS];
        for (int l = 0; l < lv->n; l++)
            shapes[2 * l] = lv->shape[l][0], shapes[2 * l + 1] = lv->shape[l][1];
        const vp_gt *at = n->in[2];
        vp_ref_msdeform_dims dims = {a->shape[0], a->shape[1], a->shape[2], a->shape[3],
                                     at->shape[1], lv->n, at->shape[3] / lv->n, shapes,
                                     lv->start};
        vp_ref_msdeform(&dims, da, db, DATA(at), o);
        return VP_OK;
    }
    case VP_GOP_ROWMAP: {
        int64_t N = vp_gt_nelem(b), C = a->shape[a->ndim - 1];
        int32_t *idx = malloc((size_t)N * sizeof *idx);
        if (!idx)
            return vp_error_set(VP_ERR_NOMEM, "out of host memory");
        for (int64_t i = 0; i < N; i++)
            idx[i] = (int32_t)db[i];
        vp_ref_row_map(da, vp_gt_nelem(a) / C, C, idx, N, o, false);
        free(idx);
        return VP_OK;
    }
    case VP_GOP_ATTN: {
        const vp_gt *bias = n->in[3];
        int64_t heads = n->ip[0];
        vp_ref_attn_dims d = {a->shape[0], a->shape[1], b->shape[1], heads, a->shape[2] / heads,
                              bias ? bias->shape[0] : 1, bias ? bias->shape[1] : 1, n->fp[0]};
        vp_ref_attention(&d, da, db, DATA(n->in[2]), DATA(bias), o, r->data[n->out[1]->id]);
        return VP_OK;
    }
    case VP_GOP_BOOLMASK:
        for (int64_t i = 0; i < vp_gt_nelem(y); i++)
            o[i] = da[i] != 0.0 ? -INFINITY : 0.0;
        return VP_OK;
    case VP_GOP_MSDEFORM_BWD:
    case VP_GOP_ATTN_BWD:
    case VP_GOP_PERMUTE_BWD:
    case VP_GOP_CONCAT_BWD:
    case VP_GOP_SLICE_BWD:
    case VP_GOP_GATHER_BWD:
    case VP_GOP_IM2COL_BWD:
    case VP_GOP_MAXPOOL_BWD:
    case VP_GOP_D2S_BWD:
    case VP_GOP_RESIZE_BWD:
    case VP_GOP_CE_BWD:
    case VP_GOP_BCE_BWD:
    case VP_GOP_DICE_BWD:
    case VP_GOP_RELU_BWD:
    case VP_GOP_GELU_BWD:
    case VP_GOP_ACT_BWD:
    case VP_GOP_DROPOUT_BWD:
    case VP_GOP_LN_BWD:
    case VP_GOP_SOFTMAX_BWD:
    case VP_GOP_COUNT:
        break; /* backward nodes are not run by the reference executor */
    }
    return vp_error_set(VP_ERR_INTERNAL, "reference executor: node %s has no reference", n->name);
}

vp_status vp_graph_ref_forward(vp_graph_ref *r)
{
    const vp_graph *g = r->g;
    uint32_t n = g->differentiated ? g->n_forward : g->n_nodes;
    if (g->seed && g->compiled) { /* the masks of the device's latest run */
        uint32_t seed;
        vp_status st = vp_tensor_download(&g->seed->rt, &seed, sizeof seed);
        if (st)
            return st;
        r->data[g->seed->id][0] = (double)seed;
    }
    for (uint32_t i = 0; i < n; i++) {
        vp_status st = ref_node(r, &g->nodes[i]);
        if (st)
            return vp_error_wrap(st, "reference node %u (%s)", i, g->nodes[i].name);
    }
    return VP_OK;
}
