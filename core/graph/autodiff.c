/*
 * Reverse-mode autodiff: vp_graph_backward walks the forward nodes from the
 * last to the first and appends, for each, the nodes its backward rule
 * emits. All the rules are in backward_node(), one case per op.
 *
 * Gradients are written with the kernels' accumulate flag instead of
 * separate add nodes: the first contribution to an activation's gradient
 * overwrites it, later ones add to it. Parameter gradients always add (they
 * live in the flat gradient buffer, accumulate across micro-batches, and
 * are cleared by vp_graph_zero_grads). A view's gradient is a view of its
 * root's gradient, so reshapes cost nothing backward. Frozen parameters
 * never get a gradient tensor, hence no memory.
 */
#include <stdio.h>
#include <string.h>

#include "graph/internal.h"
#include "util/array.h"
#include "ops/ops.h"

/* The tensor t's gradient goes into, creating it on first use; *acc says
 * whether this contribution adds to earlier ones. */
static void settle(vp_graph *g, vp_gt *root);

static vp_gt *grad_target(vp_graph *g, vp_gt *t, bool *acc)
{
    vp_gt *root = vp_gt_root(t);
    if (root->grad)
        settle(g, root);
    if (!root->grad) {
        char name[VP_NAME_MAX];
        snprintf(name, sizeof name, "grad.%.150s", root->name);
        bool param = root->kind == VP_GT_PARAM;
        vp_gt *gr = vp_gt_new(g, param ? VP_GT_PGRAD : VP_GT_ACT, name, root->ndim, root->shape);
        if (!gr)
            return NULL;
        gr->param = param ? root : NULL;
        root->grad = gr;
    }
    vp_gt *gr = root->grad;
    *acc = root->kind == VP_GT_PARAM || gr->grad_written;
    gr->grad_written = true;
    if (t == root)
        return gr;
    if (!t->grad)
        t->grad = vp_g_view_at(g, gr, t->view_off, t->ndim, t->shape);
    return t->grad;
}

/* The gradient flowing into t, as t's shape (NULL if none reached it). */
static vp_gt *grad_of(vp_graph *g, vp_gt *t)
{
    vp_gt *root = vp_gt_root(t);
    if (!root->grad || !root->grad->grad_written)
        return NULL;
    if (t == root)
        return root->grad;
    if (!t->grad)
        t->grad = vp_g_view_at(g, root->grad, t->view_off, t->ndim, t->shape);
    return t->grad;
}

static vp_gnode *emit(vp_graph *g, vp_gop op, const char *name, vp_gt *out, bool acc)
{
    vp_gnode *n = vp_node_new(g, op, name);
    if (n) {
        n->out[0] = out;
        n->n_out = 1;
        n->acc[0] = acc;
    }
    return n;
}

/* out (+)= op(a) op(b) */
static void emit_gemm(vp_graph *g, vp_gt *a, bool ta, vp_gt *b, bool tb, vp_gt *out, bool acc)
{
    vp_gnode *n = emit(g, VP_GOP_GEMM, "matmul.backward", out, acc);
    if (!n)
        return;
    n->in[0] = a;
    n->in[1] = b;
    n->n_in = 2;
    n->ip[0] = ta;
    n->ip[1] = tb;
}

/* out (+)= s * x */
static void emit_axpy(vp_graph *g, vp_gt *x, float s, vp_gt *out, bool acc)
{
    vp_gnode *n = emit(g, VP_GOP_AXPY, "axpy.backward", out, acc);
    if (n) {
        n->in[0] = x;
        n->n_in = 1;
        n->fp[0] = s;
    }
}

/* ---- borrowed gradients ------------------------------------------------------
 * y = a + b: both operands' gradients start as exactly dy. a takes dy's
 * memory as its own (alias_grad); b borrows it, read-only: its producer's
 * rule reads it where it would have read a copy. The borrow ends when
 * that rule has run (vp_autodiff). Before anything writes into the
 * memory (a's later contributions, through grad_target) or into b's
 * gradient (a second contribution to b), the borrower gets its own copy
 * then (settle), so that it still reads what dy was. */

static bool is_borrower(const vp_graph *g, const vp_gt *root)
{
    for (uint32_t i = 0; i < g->n_borrowed; i++)
        if (g->borrowed[i] == root)
            return true;
    return false;
}

/* Borrower i gets a gradient of its own holding what it borrowed. */
static void materialize(vp_graph *g, uint32_t i)
{
    vp_gt *t = g->borrowed[i], *lent = t->grad;
    g->borrowed[i] = g->borrowed[--g->n_borrowed];
    t->grad = NULL;
    for (uint32_t k = 0; k < g->n_tensors; k++) /* views cached the borrowed memory */
        if (g->tensors[k]->kind == VP_GT_VIEW && g->tensors[k]->view_of == t)
            g->tensors[k]->grad = NULL;
    char name[VP_NAME_MAX];
    snprintf(name, sizeof name, "grad.%.150s", t->name);
    vp_gt *gr = vp_gt_new(g, VP_GT_ACT, name, t->ndim, t->shape);
    if (!gr)
        return;
    t->grad = gr;
    gr->grad_written = true;
    vp_gt *src = vp_gt_same_shape(lent, gr) ? lent : vp_g_view(g, lent, t->ndim, t->shape, NULL);
    if (src)
        emit_axpy(g, src, 1.0f, gr, false);
}

/* Before a write into root's gradient: copies for the borrowers of its
 * memory, and for root itself if it borrows. */
static void settle(vp_graph *g, vp_gt *root)
{
    vp_gt *mem = vp_gt_root(root->grad);
    for (uint32_t i = g->n_borrowed; i-- > 0;)
        if (g->borrowed[i] == root || vp_gt_root(g->borrowed[i]->grad) == mem)
            materialize(g, i);
}

/* r's gradient becomes dy's memory (dy itself, or a view of it in r's
 * shape), already written. Returns whether it did. */
static bool share_grad(vp_graph *g, vp_gt *r, vp_gt *dy)
{
    vp_gt *gr = vp_gt_same_shape(r, dy) ? dy : vp_g_view(g, dy, r->ndim, r->shape, NULL);
    if (!gr)
        return false;
    gr->grad_written = true;
    r->grad = gr;
    return true;
}

/* b (an activation, or a view of one, with no gradient yet) borrows dy as
 * its gradient. Returns whether it did. */
static bool borrow_grad(vp_graph *g, vp_gt *b, const vp_gt *y, vp_gt *dy)
{
    vp_gt *r = vp_gt_root(b);
    if (r->kind != VP_GT_ACT || r->grad || r->keep || vp_gt_nelem(r) != vp_gt_nelem(y) ||
        y->view_of || dy != y->grad || dy->view_of || is_borrower(g, y))
        return false;
    if (VP_RESERVE(g->borrowed, g->cap_borrowed, g->n_borrowed + 1))
        return false;
    if (!share_grad(g, r, dy))
        return false;
    g->borrowed[g->n_borrowed++] = r;
    return true;
}

/* out (+)= a * b */
static void emit_mul(vp_graph *g, vp_gt *a, vp_gt *b, vp_gt *out, bool acc)
{
    vp_gnode *n = emit(g, VP_GOP_MUL, "mul.backward", out, acc);
    if (n) {
        n->in[0] = a;
        n->in[1] = b;
        n->n_in = 2;
    }
}

/* Add dy (rows x nb, as any shape) reduced over its rows into the gradient
 * of t (nb elements): a gemm with a row of ones. */
static void emit_colsum(vp_graph *g, vp_gt *dy, vp_gt *t)
{
    int64_t nb = vp_gt_nelem(t), rows = vp_gt_nelem(dy) / nb;
    bool acc;
    vp_gt *dt = grad_target(g, t, &acc);
    vp_gt *ones = vp_g_ones(g, rows);
    vp_gt *ones_row = vp_g_view(g, ones, 2, (int64_t[]){1, rows}, NULL);
    vp_gt *dy2 = vp_g_view(g, dy, 2, (int64_t[]){rows, nb}, NULL);
    vp_gt *dt2 = dt ? vp_g_view(g, dt, 2, (int64_t[]){1, nb}, NULL) : NULL;
    if (ones_row && dy2 && dt2)
        emit_gemm(g, ones_row, false, dy2, false, dt2, acc);
}

/* A node whose kernel has one accumulate flag for several gradient outputs:
 * where they disagree, zero the overwriting ones first and accumulate into
 * all. Returns the flag for the node. */
static bool unify_acc(vp_graph *g, vp_gt **outs, const bool *acc, uint32_t n)
{
    bool any_acc = false, any_new = false;
    for (uint32_t i = 0; i < n; i++)
        if (outs[i]) {
            any_acc = any_acc || acc[i];
            any_new = any_new || !acc[i];
        }
    if (!(any_acc && any_new))
        return any_acc;
    for (uint32_t i = 0; i < n; i++)
        if (outs[i] && !acc[i]) {
            vp_gnode *f = emit(g, VP_GOP_FILL, "backward.zero", outs[i], false);
            if (f)
                f->fp[0] = 0.0f;
        }
    return true;
}

/* A fresh activation for a gradient nobody needs but a kernel must write. */
static vp_gt *scratch_like(vp_graph *g, const vp_gt *t)
{
    char name[VP_NAME_MAX];
    snprintf(name, sizeof name, "scratch.%u", g->n_tensors);
    return vp_gt_new(g, VP_GT_ACT, name, t->ndim, t->shape);
}

/* out (+)= f(in0, in1) for the elementwise backward ops */
static void emit2(vp_graph *g, vp_gop op, const char *name, vp_gt *a, vp_gt *b, vp_gt *out,
                  bool acc)
{
    vp_gnode *n = emit(g, op, name, out, acc);
    if (n) {
        n->in[0] = a;
        n->in[1] = b;
        n->n_in = 2;
    }
}

/* y = a + b with a as many elements as y: a's gradient starts as exactly
 * dy, so where nothing has flowed into a yet, dy's memory becomes a's
 * gradient (no copy; what a gets later adds into it). Safe because dy is
 * complete by now and its only other reader, b's rule, is emitted right
 * after, before anything that adds into a. Only for activations (a view
 * of one too: its root's gradient becomes a view of dy), not parameters or
 * inputs, with dy y's whole gradient and b another tensor. Returns whether
 * it did. */
static bool alias_grad(vp_graph *g, vp_gt *a, vp_gt *b, const vp_gt *y, vp_gt *dy)
{
    vp_gt *r = vp_gt_root(a);
    if (r->kind != VP_GT_ACT || r->grad || r->keep || r == vp_gt_root(b) ||
        vp_gt_nelem(r) != vp_gt_nelem(y))
        return false;
    if (y->view_of || dy != y->grad || dy->kind != VP_GT_ACT || dy->view_of ||
        is_borrower(g, y))
        return false;
    return share_grad(g, r, dy);
}

/* A linear layer y = x W^T + bias whose weight and bias both train: dW =
 * dy^T x and dbias = the row sums of dy^T in one gemm (vp_op_gemm_rowsum),
 * where the device's matmul gives them. Returns whether it emitted it. */
static bool fused_bias_grad(vp_graph *g, const vp_gnode *n, vp_gt *dy)
{
    vp_gt *a = n->in[0], *w = n->in[1], *bias = n->n_in > 2 ? n->in[2] : NULL;
    if (n->ip[0] || !n->ip[1] || !bias || !bias->requires_grad || w->ndim != 2 ||
        !vp_gemm_rowsum_ok(vp_device_get_info(g->dev)))
        return false;
    int64_t out = w->shape[0], in = w->shape[1], rows = vp_gt_nelem(a) / in;
    bool acc_w, acc_b;
    vp_gt *dw = grad_target(g, w, &acc_w), *db = grad_target(g, bias, &acc_b);
    vp_gt *dy2 = vp_g_view(g, dy, 2, (int64_t[]){rows, out}, NULL);
    vp_gt *a2 = vp_g_view(g, a, 2, (int64_t[]){rows, in}, NULL);
    vp_gt *db1 = db ? vp_g_view(g, db, 1, (int64_t[]){out}, NULL) : NULL;
    vp_gnode *b2 = dw && dy2 && a2 && db1 ? emit(g, VP_GOP_GEMM, "matmul.backward", dw, acc_w)
                                          : NULL;
    if (b2) {
        b2->in[0] = dy2;
        b2->in[1] = a2;
        b2->n_in = 2;
        b2->ip[0] = 1; /* dy^T x */
        b2->ip[1] = 0;
        b2->out[1] = db1;
        b2->acc[1] = acc_b;
        b2->n_out = 2;
    }
    return true;
}

static void backward_node(vp_graph *g, const vp_gnode *n)
{
    vp_gt *y = n->out[0];
    vp_gt *dy = grad_of(g, y);
    if (!dy)
        return;
    vp_gt *a = n->in[0], *b = n->in[1];
    bool acc;
    switch (n->op) {
    case VP_GOP_GEMM: {
        /* y = op(a) op(b) + bias */
        bool ta = n->ip[0], tb = n->ip[1];
        if (a->requires_grad) {
            vp_gt *da = grad_target(g, a, &acc);
            if (da) {
                if (!ta)
                    emit_gemm(g, dy, false, b, !tb, da, acc);  /* dy op(b)^T */
                else
                    emit_gemm(g, b, tb, dy, true, da, acc);    /* op(b) dy^T */
            }
        }
        if (b->requires_grad && fused_bias_grad(g, n, dy))
            break;
        if (b->requires_grad) {
            vp_gt *db = grad_target(g, b, &acc);
            if (db) {
                if (!tb)
                    emit_gemm(g, a, !ta, dy, false, db, acc);  /* op(a)^T dy */
                else
                    emit_gemm(g, dy, true, a, ta, db, acc);    /* dy^T op(a) */
            }
        }
        if (n->n_in > 2 && n->in[2]->requires_grad)
            emit_colsum(g, dy, n->in[2]);
        break;
    }
    case VP_GOP_ADD: {
        bool aliased = a->requires_grad && alias_grad(g, a, b, y, dy);
        if (a->requires_grad && !aliased) {
            vp_gt *da = grad_target(g, a, &acc);
            if (da)
                emit_axpy(g, dy, 1.0f, da, acc);
        }
        if (b->requires_grad && !aliased && alias_grad(g, b, a, y, dy))
            break;
        if (b->requires_grad && aliased && borrow_grad(g, b, y, dy)) /* a, b other roots */
            break;
        if (b->requires_grad) {
            if (vp_gt_nelem(b) == vp_gt_nelem(y)) {
                vp_gt *db = grad_target(g, b, &acc);
                if (db)
                    emit_axpy(g, dy, 1.0f, vp_g_view(g, db, y->ndim, y->shape, NULL), acc);
            } else {
                emit_colsum(g, dy, b);
            }
        }
        break;
    }
    case VP_GOP_MUL:
        if (a->requires_grad) {
            vp_gt *da = grad_target(g, a, &acc);
            if (da)
                emit_mul(g, dy, b, da, acc);                   /* dy * b (b broadcast) */
        }
        if (b->requires_grad) {
            if (vp_gt_nelem(b) == vp_gt_nelem(y)) {
                vp_gt *db = grad_target(g, b, &acc);
                if (db)
                    emit_mul(g, dy, a, vp_g_view(g, db, y->ndim, y->shape, NULL), acc);
            } else {
                /* dy * a at full size, then summed over the broadcast rows. */
                char name[VP_NAME_MAX];
                snprintf(name, sizeof name, "mul.backward.%u", g->n_tensors);
                vp_gt *tmp = vp_gt_new(g, VP_GT_ACT, name, y->ndim, y->shape);
                if (tmp) {
                    emit_mul(g, dy, a, tmp, false);
                    emit_colsum(g, tmp, b);
                }
            }
        }
        break;
    case VP_GOP_AXPY:
        if (a->requires_grad) {
            vp_gt *da = grad_target(g, a, &acc);
            if (da)
                emit_axpy(g, dy, n->fp[0], da, acc);
        }
        break;
    case VP_GOP_RELU:
    case VP_GOP_GELU:
        if (a->requires_grad) {
            vp_gt *da = grad_target(g, a, &acc);
            if (da)
                emit2(g, n->op == VP_GOP_RELU ? VP_GOP_RELU_BWD : VP_GOP_GELU_BWD,
                      n->op == VP_GOP_RELU ? "relu.backward" : "gelu.backward", a, dy, da, acc);
        }
        break;
    case VP_GOP_DROPOUT:
        if (a->requires_grad) {
            vp_gt *da = grad_target(g, a, &acc);
            if (da)
                emit2(g, VP_GOP_DROPOUT_BWD, "dropout.backward", dy, n->in[1], da, acc);
            if (da && !g->err)
                g->nodes[g->n_nodes - 1].fp[0] = n->fp[0];
        }
        break;
    case VP_GOP_ACT:
        if (a->requires_grad) {
            vp_gt *da = grad_target(g, a, &acc);
            vp_gnode *b = NULL;
            if (da)
                emit2(g, VP_GOP_ACT_BWD, "act.backward", a, dy, da, acc);
            if (da && !g->err && (b = &g->nodes[g->n_nodes - 1]))
                b->ip[0] = n->ip[0];
        }
        break;
    case VP_GOP_SOFTMAX:
        if (a->requires_grad) {
            vp_gt *da = grad_target(g, a, &acc);
            if (da)
                emit2(g, VP_GOP_SOFTMAX_BWD, "softmax.backward", y, dy, da, acc);
        }
        break;
    case VP_GOP_LAYERNORM: {
        /* One kernel gives dx, dgamma, dbeta; x's gradient is computed (into
         * scratch) even when only the affine parameters train. */
        vp_gt *gamma = n->in[1], *beta = n->in[2];
        vp_gt *outs[3] = {NULL, NULL, NULL};
        bool accs[3] = {false, false, false};
        outs[0] = a->requires_grad ? grad_target(g, a, &accs[0]) : scratch_like(g, a);
        if (gamma && gamma->requires_grad)
            outs[1] = grad_target(g, gamma, &accs[1]);
        if (beta && beta->requires_grad)
            outs[2] = grad_target(g, beta, &accs[2]);
        if (!outs[0])
            break;
        /* dx has its own flag; dgamma and dbeta share one */
        bool par = unify_acc(g, outs + 1, accs + 1, 2);
        vp_gnode *b2 = emit(g, VP_GOP_LN_BWD, "layernorm.backward", outs[0], accs[0]);
        if (!b2)
            break;
        b2->in[0] = a;
        b2->in[1] = gamma;
        b2->in[2] = n->out[1];
        b2->in[3] = n->out[2];
        b2->in[4] = dy;
        b2->n_in = 5;
        b2->out[1] = outs[1];
        b2->out[2] = outs[2];
        b2->n_out = 3;
        b2->acc[1] = b2->acc[2] = par;
        break;
    }
    case VP_GOP_CE:
    case VP_GOP_BCE:
    case VP_GOP_DICE:
        if (a->requires_grad) {
            vp_gt *da = grad_target(g, a, &acc);
            vp_gop op = n->op == VP_GOP_CE ? VP_GOP_CE_BWD
                        : n->op == VP_GOP_BCE ? VP_GOP_BCE_BWD : VP_GOP_DICE_BWD;
            vp_gnode *b2 = da ? emit(g, op, "loss.backward", da, acc) : NULL;
            if (!b2)
                break;
            b2->in[0] = a;
            b2->in[1] = n->in[1];
            if (n->op == VP_GOP_CE) {
                b2->in[2] = n->in[2];
                b2->in[3] = n->out[1];
                b2->in[4] = dy;
                b2->n_in = 5;
            } else {
                b2->in[2] = dy;
                b2->n_in = 3;
                b2->fp[0] = n->fp[0];
            }
        }
        break;
    case VP_GOP_PERMUTE:
    case VP_GOP_SLICE:
    case VP_GOP_IM2COL:
    case VP_GOP_RESIZE:
        if (a->requires_grad) {
            vp_gt *da = grad_target(g, a, &acc);
            vp_gop op = n->op == VP_GOP_PERMUTE ? VP_GOP_PERMUTE_BWD
                        : n->op == VP_GOP_SLICE ? VP_GOP_SLICE_BWD
                        : n->op == VP_GOP_IM2COL ? VP_GOP_IM2COL_BWD : VP_GOP_RESIZE_BWD;
            vp_gnode *b2 = da ? emit(g, op, "layout.backward", da, acc) : NULL;
            if (b2) {
                b2->in[0] = dy;
                b2->n_in = 1;
                memcpy(b2->ip, n->ip, sizeof b2->ip);
            }
        }
        break;
    case VP_GOP_GATHER:
        if (a->requires_grad) {
            vp_gt *da = grad_target(g, a, &acc);
            if (da)
                emit2(g, VP_GOP_GATHER_BWD, "gather.backward", dy, b, da, acc);
        }
        break;
    case VP_GOP_MAXPOOL2:
        if (a->requires_grad) {
            vp_gt *da = grad_target(g, a, &acc);
            if (da)
                emit2(g, VP_GOP_MAXPOOL_BWD, "maxpool2.backward", dy, n->out[1], da, acc);
        }
        break;
    case VP_GOP_CONCAT:
    case VP_GOP_D2S: {
        /* One kernel writes every input's gradient (NULL: not needed). */
        vp_gt *outs[VP_GMAX_OUT] = {NULL};
        bool accs[VP_GMAX_OUT] = {false};
        uint32_t k = 0;
        bool any = false;
        for (; k < n->n_in; k++) {
            vp_gt *in = n->in[k];
            if (in && in->requires_grad) {
                outs[k] = grad_target(g, in, &accs[k]);
                any = true;
            }
        }
        if (!any)
            break;
        if (n->op == VP_GOP_D2S && !outs[0]) /* dbias alone still needs a dx */
            outs[0] = scratch_like(g, a);
        bool all = unify_acc(g, outs, accs, k);
        vp_gnode *b2 = emit(g, n->op == VP_GOP_CONCAT ? VP_GOP_CONCAT_BWD : VP_GOP_D2S_BWD,
                            "layout.backward", outs[0], all);
        if (!b2)
            break;
        b2->in[0] = dy;
        b2->n_in = 1;
        for (uint32_t i = 0; i < k; i++) {
            b2->out[i] = outs[i];
            b2->acc[i] = all;
        }
        b2->n_out = k;
        b2->ip[0] = n->ip[0];
        /* concat: the inputs' extents along the axis, for the kernel */
        for (uint32_t i = 0; n->op == VP_GOP_CONCAT && i < k; i++)
            b2->shape_of[i] = n->in[i];
        break;
    }
    case VP_GOP_MSDEFORM: {
        /* The kernel writes all three gradients, each with its own flag;
         * those nobody needs go to scratch. */
        vp_gnode tmp = *n;
        vp_gt *outs[3];
        bool accs[3] = {false, false, false};
        for (int k = 0; k < 3; k++)
            outs[k] = tmp.in[k]->requires_grad ? grad_target(g, tmp.in[k], &accs[k])
                                               : scratch_like(g, tmp.in[k]);
        vp_gnode *b2 = emit(g, VP_GOP_MSDEFORM_BWD, "msdeform.backward", outs[0], accs[0]);
        if (!b2)
            break;
        for (int k = 0; k < 3; k++) {
            b2->in[k] = tmp.in[k];
            b2->out[k] = outs[k];
            b2->acc[k] = accs[k];
        }
        b2->in[3] = dy;
        b2->n_in = 4;
        b2->n_out = 3;
        b2->ip[0] = tmp.ip[0];
        break;
    }
    case VP_GOP_ROWMAP:
        /* an injective map: the gradient is the inverse map of dy */
        if (n->n_in > 2 && a->requires_grad) {
            vp_gt *da = grad_target(g, a, &acc);
            vp_gnode *b2 = da ? emit(g, VP_GOP_ROWMAP, "row_map.backward", da, acc) : NULL;
            if (b2) {
                b2->in[0] = dy;
                b2->in[1] = n->in[2];
                b2->n_in = 2;
            }
        }
        break;
    case VP_GOP_ATTN: {
        /* One node writes dq, dk, dv (each with its own flag; scratch for
         * those nobody needs) and, if the bias trains, the score gradients
         * ds, which gemms with ones sum into the bias's gradient. An input
         * whose memory an earlier one shares (q and k the same tensor) gets
         * scratch, added into its gradient after the node. */
        vp_gnode tmp = *n;
        vp_gt *outs[5] = {NULL, NULL, NULL, NULL, NULL}, *later[3] = {NULL, NULL, NULL};
        bool accs[3] = {false, false, false};
        for (int k = 0; k < 3; k++) {
            vp_gt *in = tmp.in[k];
            bool shared = false;
            for (int j = 0; j < k; j++)
                if (tmp.in[j]->requires_grad && vp_gt_root(tmp.in[j]) == vp_gt_root(in))
                    shared = true;
            if (!in->requires_grad || shared) {
                outs[k] = scratch_like(g, in);
                later[k] = in->requires_grad ? in : NULL;
            } else {
                outs[k] = grad_target(g, in, &accs[k]);
            }
        }
        const int64_t *ls = tmp.out[1]->shape; /* (B, H, Nq) */
        int64_t B = ls[0], H = ls[1], Nq = ls[2];
        char name[VP_NAME_MAX];
        snprintf(name, sizeof name, "scratch.%u", g->n_tensors);
        outs[3] = vp_gt_new(g, VP_GT_ACT, name, 4, (int64_t[]){B, H, Nq, 2});
        vp_gt *bias = tmp.in[3];
        if (bias && bias->requires_grad) {
            snprintf(name, sizeof name, "scratch.%u", g->n_tensors);
            outs[4] = vp_gt_new(g, VP_GT_ACT, name, 4,
                                (int64_t[]){B, H, Nq, bias->shape[3]});
        }
        vp_gnode *b2 = emit(g, VP_GOP_ATTN_BWD, "attention.backward", outs[0], accs[0]);
        if (!b2)
            break;
        b2->in[0] = tmp.in[0];
        b2->in[1] = tmp.in[1];
        b2->in[2] = tmp.in[2];
        b2->in[3] = bias;
        b2->in[4] = tmp.out[1];
        b2->in[5] = dy;
        b2->n_in = 6;
        for (int k = 0; k < 5; k++)
            b2->out[k] = outs[k];
        for (int k = 0; k < 3; k++)
            b2->acc[k] = accs[k];
        b2->n_out = outs[4] ? 5 : 4;
        b2->ip[0] = tmp.ip[0];
        b2->fp[0] = tmp.fp[0];
        for (int k = 0; k < 3; k++)
            if (later[k]) {
                vp_gt *t = grad_target(g, later[k], &acc);
                if (t)
                    emit_axpy(g, outs[k], 1.0f, t, acc);
            }
        if (outs[4]) {
            /* bias (M, Hb, Nq, Nk): image b adds bias[b % M], so ds viewed
             * as (B / M, M * H * Nq * Nk) summed over its rows; with Hb 1
             * and several heads, then over the heads: (M, 1, H) ones times
             * (M, H, Nq * Nk). */
            int64_t M = bias->shape[0], Hb = bias->shape[1], NN = Nq * bias->shape[3];
            vp_gt *db = grad_target(g, bias, &acc);
            vp_gt *ones = vp_g_ones(g, B / M);
            vp_gt *row = vp_g_view(g, ones, 2, (int64_t[]){1, B / M}, NULL);
            vp_gt *ds2 = vp_g_view(g, outs[4], 2, (int64_t[]){B / M, M * H * NN}, NULL);
            if (!db || !row || !ds2)
                break;
            if (Hb == H) {
                emit_gemm(g, row, false, ds2,
                          false, vp_g_view(g, db, 2, (int64_t[]){1, M * H * NN}, NULL), acc);
                break;
            }
            snprintf(name, sizeof name, "scratch.%u", g->n_tensors);
            vp_gt *per = vp_gt_new(g, VP_GT_ACT, name, 2, (int64_t[]){1, M * H * NN});
            vp_gt *ones_h = vp_g_ones(g, M * H);
            if (!per || !ones_h)
                break;
            emit_gemm(g, row, false, ds2, false, per, false);
            emit_gemm(g, vp_g_view(g, ones_h, 3, (int64_t[]){M, 1, H}, NULL), false,
                      vp_g_view(g, per, 3, (int64_t[]){M, H, NN}, NULL), false,
                      vp_g_view(g, db, 3, (int64_t[]){M, 1, NN}, NULL), acc);
        }
        break;
    }
    case VP_GOP_CUSTOM:
        vp_custom_backward(g, n);
        break;
    case VP_GOP_LOGITMASK:
    case VP_GOP_RAND:
    case VP_GOP_FILL:
    case VP_GOP_HOST:
    case VP_GOP_BOOLMASK:
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
        break; /* constants to autodiff, or gradient plumbing */
    case VP_GOP_COUNT:
        vp_graph_fail(g, VP_ERR_INTERNAL, "node %s: no backward rule", n->name);
        break;
    }
}

vp_gt *vp_autodiff_grad_target(vp_graph *g, vp_gt *t, bool *acc)
{
    return grad_target(g, t, acc);
}
vp_gt *vp_autodiff_grad_of(vp_graph *g, vp_gt *t) { return grad_of(g, t); }
void vp_autodiff_axpy(vp_graph *g, vp_gt *x, float s, vp_gt *out, bool acc)
{
    emit_axpy(g, x, s, out, acc);
}

vp_status vp_autodiff(vp_graph *g, vp_gt *loss)
{
    vp_gt *root = vp_gt_root(loss);
    /* Seed: dloss = 1. */
    char name[VP_NAME_MAX];
    snprintf(name, sizeof name, "grad.%.150s", root->name);
    vp_gt *seed = vp_gt_new(g, VP_GT_ACT, name, root->ndim, root->shape);
    if (!seed)
        return g->err;
    root->grad = seed;
    seed->grad_written = true;
    vp_gnode *n = emit(g, VP_GOP_FILL, "backward.seed", seed, false);
    if (!n)
        return g->err;
    n->fp[0] = 1.0f;
    for (uint32_t i = g->n_forward; i-- > 0 && !g->err;) {
        vp_gnode node = g->nodes[i]; /* emit() may move the node array */
        if (node.op != VP_GOP_HOST && node.out[0]->requires_grad)
            backward_node(g, &node);
        /* its outputs' gradients have been read for the last time */
        for (uint32_t k = 0; k < node.n_out; k++)
            for (uint32_t j = g->n_borrowed; node.out[k] && j-- > 0;)
                if (g->borrowed[j] == vp_gt_root(node.out[k]))
                    g->borrowed[j] = g->borrowed[--g->n_borrowed];
    }
    return g->err;
}

vp_status vp_graph_backward(vp_graph *g, vp_gt *loss)
{
    if (g->err)
        return vp_error_set(g->err, "%s", g->err_msg);
    if (!loss)
        return vp_error_set(VP_ERR_INVALID, "backward: no loss tensor");
    if (g->differentiated || g->compiled)
        return vp_error_set(VP_ERR_INVALID, "backward: the graph is already %s",
                            g->compiled ? "compiled" : "differentiated");
    if (vp_gt_nelem(loss) != 1) {
        char s[64];
        vp_gt_shape_str(loss, s, sizeof s);
        return vp_error_set(VP_ERR_SHAPE, "backward: the loss %s %s is not a scalar", loss->name,
                            s);
    }
    if (!loss->requires_grad)
        return vp_error_set(VP_ERR_INVALID, "backward: the loss %s depends on no trainable "
                            "parameter", loss->name);
    g->n_forward = g->n_nodes;
    g->differentiated = true;
    vp_g_keep(loss);
    vp_status st = vp_autodiff(g, loss);
    return st ? vp_error_set(st, "%s", g->err_msg) : VP_OK;
}
