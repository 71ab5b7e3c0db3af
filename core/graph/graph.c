/*
 * Building a graph: leaves (inputs, parameters, constants), the ops that
 * return new tensors, views, and the sticky first error. Autodiff is in
 * autodiff.c, memory planning in plan.c, recording and running in exec.c.
 */
#include <math.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "graph/internal.h"
#include "ops/attention.h"
#include "ops/nn.h"
#include "util/array.h"

vp_status vp_graph_create(vp_device *dev, vp_graph **out)
{
    *out = NULL;
    vp_graph *g = calloc(1, sizeof *g);
    if (!g)
        return vp_error_set(VP_ERR_NOMEM, "out of host memory creating a graph");
    g->dev = dev;
    *out = g;
    return VP_OK;
}

void vp_graph_destroy(vp_graph *g)
{
    if (!g)
        return;
    vp_graph_release_segments(g);
    vp_graph_release_buffers(g);
    for (uint32_t i = 0; i < g->n_tensors; i++) {
        free(g->tensors[i]->const_data);
        free(g->tensors[i]);
    }
    free(g->tensors);
    free(g->names);
    free(g->nodes);
    free(g->levels);
    free(g->borrowed);
    vp_custom_release(g);
    free(g);
}

vp_device *vp_graph_device(const vp_graph *g) { return g->dev; }

vp_status vp_graph_status(const vp_graph *g)
{
    return g->err ? vp_error_set(g->err, "%s", g->err_msg) : VP_OK;
}

vp_status vp_graph_fail(vp_graph *g, vp_status st, const char *fmt, ...)
{
    if (g->err)
        return g->err;
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(g->err_msg, sizeof g->err_msg, fmt, ap);
    va_end(ap);
    g->err = st;
    return vp_error_set(st, "%s", g->err_msg);
}

void vp_gt_shape_str(const vp_gt *t, char *buf, size_t n)
{
    size_t off = (size_t)snprintf(buf, n, "(");
    for (int i = 0; i < t->ndim && off < n; i++)
        off += (size_t)snprintf(buf + off, n - off, "%s%lld", i ? ", " : "",
                                (long long)t->shape[i]);
    if (off < n)
        snprintf(buf + off, n - off, ")");
}

static bool check_shape(vp_graph *g, const char *what, const char *name, int ndim,
                        const int64_t *shape)
{
    if (ndim < 1 || ndim > VP_MAX_DIMS) {
        vp_graph_fail(g, VP_ERR_SHAPE, "%s %s: %d dimensions, vpeft supports 1 to %d", what,
                      name, ndim, VP_MAX_DIMS);
        return false;
    }
    for (int i = 0; i < ndim; i++)
        if (shape[i] < 1 || shape[i] > (INT64_C(1) << 32)) {
            vp_graph_fail(g, VP_ERR_SHAPE, "%s %s: bad size %lld in dimension %d", what, name,
                          (long long)shape[i], i);
            return false;
        }
    return true;
}

/* ---- names ---------------------------------------------------------------
 * A hash of tensor names, so that finding a name (and refusing a repeated
 * parameter name) costs the same in a graph of 4000 blocks as of 4; a
 * linear scan made building a deep model quadratic. A name maps to its
 * first tensor: views may repeat a name. */

static uint32_t name_hash(const char *s)
{
    uint32_t h = 2166136261u; /* FNV-1a */
    for (; *s; s++)
        h = (h ^ (unsigned char)*s) * 16777619u;
    return h;
}

/* The slot of name: its entry, or the empty slot where it would go. */
static uint32_t name_slot(const vp_graph *g, const char *name)
{
    uint32_t mask = g->cap_names - 1, i = name_hash(name) & mask;
    while (g->names[i] && strcmp(g->tensors[g->names[i] - 1]->name, name))
        i = (i + 1) & mask;
    return i;
}

static void name_put(vp_graph *g, uint32_t ix)
{
    uint32_t i = name_slot(g, g->tensors[ix]->name);
    if (!g->names[i])
        g->names[i] = ix + 1;
}

/* Room for one more name, rehashing in tensor order (first one wins). */
static bool names_reserve(vp_graph *g)
{
    if (2 * ((uint64_t)g->n_tensors + 1) <= g->cap_names)
        return true;
    uint32_t cap = g->cap_names ? 2 * g->cap_names : 64;
    uint32_t *n = calloc(cap, sizeof *n);
    if (!n)
        return false;
    free(g->names);
    g->names = n;
    g->cap_names = cap;
    for (uint32_t k = 0; k < g->n_tensors; k++)
        name_put(g, k);
    return true;
}

vp_gt *vp_gt_new(vp_graph *g, vp_gt_kind kind, const char *name, int ndim, const int64_t *shape)
{
    if (g->compiled) {
        vp_graph_fail(g, VP_ERR_INVALID, "tensor %s: the graph is compiled; it cannot grow",
                      name);
        return NULL;
    }
    if (!check_shape(g, "tensor", name, ndim, shape))
        return NULL;
    vp_gt *t = calloc(1, sizeof *t);
    if (!t || VP_RESERVE(g->tensors, g->cap_tensors, g->n_tensors + 1) || !names_reserve(g)) {
        free(t);
        vp_graph_fail(g, VP_ERR_NOMEM, "out of host memory adding tensor %s", name);
        return NULL;
    }
    t->id = g->n_tensors;
    snprintf(t->name, sizeof t->name, "%s", name);
    t->dtype = VP_F32;
    t->ndim = ndim;
    for (int i = 0; i < VP_MAX_DIMS; i++)
        t->shape[i] = i < ndim ? shape[i] : 1;
    t->kind = kind;
    t->first = t->last = -1;
    g->tensors[g->n_tensors] = t;
    name_put(g, g->n_tensors++);
    return t;
}

vp_gnode *vp_node_new(vp_graph *g, vp_gop op, const char *name)
{
    if (VP_RESERVE(g->nodes, g->cap_nodes, g->n_nodes + 1)) {
        vp_graph_fail(g, VP_ERR_NOMEM, "out of host memory adding node %s", name);
        return NULL;
    }
    vp_gnode *n = &g->nodes[g->n_nodes++];
    memset(n, 0, sizeof *n);
    n->op = op;
    n->backward = g->differentiated;
    snprintf(n->name, sizeof n->name, "%s", name);
    return n;
}

vp_gt *vp_gt_root(vp_gt *t) { return t->kind == VP_GT_VIEW ? t->view_of : t; }

bool vp_gt_same_shape(const vp_gt *a, const vp_gt *b)
{
    if (a->ndim != b->ndim)
        return false;
    for (int i = 0; i < a->ndim; i++)
        if (a->shape[i] != b->shape[i])
            return false;
    return true;
}

/* The accessors take NULL (a failed op's result) and answer as for an
 * empty tensor, so that a plugin chaining ops reads no invalid memory
 * before it checks the graph's status. */
static const int64_t no_shape[VP_MAX_DIMS];

int64_t vp_gt_nelem(const vp_gt *t)
{
    if (!t)
        return 0;
    int64_t n = 1;
    for (int i = 0; i < t->ndim; i++)
        n *= t->shape[i];
    return n;
}

const char *vp_gt_name(const vp_gt *t) { return t ? t->name : "(none)"; }
int vp_gt_ndim(const vp_gt *t) { return t ? t->ndim : 0; }
vp_dtype vp_gt_dtype(const vp_gt *t) { return t ? t->dtype : VP_F32; }
bool vp_gt_trainable(const vp_gt *t) { return t && t->kind == VP_GT_PARAM && t->trainable; }
const int64_t *vp_gt_shape(const vp_gt *t) { return t ? t->shape : no_shape; }
vp_gt *vp_g_grad(const vp_gt *t) { return t ? t->grad : NULL; }
void vp_g_keep(vp_gt *t)
{
    if (t)
        vp_gt_root(t)->keep = true;
}

vp_gt *vp_graph_find(const vp_graph *g, const char *name)
{
    if (!g->cap_names)
        return NULL;
    uint32_t i = g->names[name_slot(g, name)];
    return i ? g->tensors[i - 1] : NULL;
}

/* ---- leaves -------------------------------------------------------------- */

static bool unique_name(vp_graph *g, const char *what, const char *name)
{
    if (vp_graph_find(g, name)) {
        vp_graph_fail(g, VP_ERR_INVALID, "%s %s: a tensor of that name exists", what, name);
        return false;
    }
    return true;
}

vp_gt *vp_g_input(vp_graph *g, const char *name, int ndim, const int64_t *shape)
{
    return unique_name(g, "input", name) ? vp_gt_new(g, VP_GT_INPUT, name, ndim, shape) : NULL;
}

vp_gt *vp_g_input_i32(vp_graph *g, const char *name, int ndim, const int64_t *shape)
{
    vp_gt *t = vp_g_input(g, name, ndim, shape);
    if (t)
        t->dtype = VP_I32;
    return t;
}

vp_gt *vp_g_param(vp_graph *g, const char *name, int ndim, const int64_t *shape, bool trainable)
{
    if (!unique_name(g, "parameter", name))
        return NULL;
    vp_gt *t = vp_gt_new(g, VP_GT_PARAM, name, ndim, shape);
    if (t) {
        t->trainable = t->requires_grad = trainable;
        t->lr_scale = 1.0f;
    }
    return t;
}

vp_status vp_g_param_lr_scale(vp_gt *p, float scale)
{
    if (!p || p->kind != VP_GT_PARAM || !p->trainable)
        return vp_error_set(VP_ERR_INVALID, "lr scale: %s is not a trainable parameter",
                            p ? p->name : "(null)");
    if (!(scale >= 0.0f) || scale > 1e6f)
        return vp_error_set(VP_ERR_INVALID, "lr scale of %s: %g must be in [0, 1e6]", p->name,
                            scale);
    p->lr_scale = scale;
    return VP_OK;
}

vp_gt *vp_g_const(vp_graph *g, const char *name, int ndim, const int64_t *shape,
                  const float *data)
{
    if (!unique_name(g, "constant", name))
        return NULL;
    vp_gt *t = vp_gt_new(g, VP_GT_CONST, name, ndim, shape);
    if (!t)
        return NULL;
    size_t n = (size_t)vp_gt_nelem(t);
    t->const_data = malloc(n * sizeof(float));
    if (!t->const_data) {
        vp_graph_fail(g, VP_ERR_NOMEM, "out of host memory for constant %s", name);
        return NULL;
    }
    memcpy(t->const_data, data, n * sizeof(float));
    return t;
}

vp_gt *vp_g_const_i32(vp_graph *g, const char *name, int ndim, const int64_t *shape,
                      const int32_t *data)
{
    /* The int32 bits travel in the float buffer: uploads copy bytes. */
    vp_gt *t = vp_g_const(g, name, ndim, shape, (const float *)(const void *)data);
    if (t)
        t->dtype = VP_I32;
    return t;
}

static vp_gt *view_prefix(vp_graph *g, vp_gt *a, int ndim, const int64_t *shape,
                          const char *name, bool prefix);

/* A column of n ones (n, 1): reductions are gemms against it. One constant
 * serves every length up to its own; a longer request makes a longer one. */
vp_gt *vp_g_ones(vp_graph *g, int64_t n)
{
    if (!g->ones || g->ones_len < n) {
        char name[VP_NAME_MAX];
        snprintf(name, sizeof name, "ones.%lld", (long long)n);
        float *d = malloc((size_t)n * sizeof *d);
        if (!d) {
            vp_graph_fail(g, VP_ERR_NOMEM, "out of host memory");
            return NULL;
        }
        for (int64_t i = 0; i < n; i++)
            d[i] = 1.0f;
        vp_gt *t = vp_g_const(g, name, 1, &n, d);
        free(d);
        if (!t)
            return NULL;
        g->ones = t;
        g->ones_len = n;
    }
    return view_prefix(g, g->ones, 2, (int64_t[]){n, 1}, "ones", true);
}

/* A view of the first n elements of a (n <= a's count); vp_g_view is the
 * n == count case. */
static vp_gt *view_prefix(vp_graph *g, vp_gt *a, int ndim, const int64_t *shape,
                          const char *name, bool prefix)
{
    if (!a)
        return NULL;
    char nm[VP_NAME_MAX];
    snprintf(nm, sizeof nm, "%s", name ? name : a->name);
    if (!check_shape(g, "reshape of", a->name, ndim, shape))
        return NULL;
    int64_t n = 1;
    for (int i = 0; i < ndim; i++)
        n *= shape[i];
    if (prefix ? n > vp_gt_nelem(a) : n != vp_gt_nelem(a)) {
        char sa[64];
        vp_gt_shape_str(a, sa, sizeof sa);
        vp_graph_fail(g, VP_ERR_SHAPE, "reshape: %s %s has %lld elements, the new shape %lld",
                      a->name, sa, (long long)vp_gt_nelem(a), (long long)n);
        return NULL;
    }
    vp_gt *t = vp_gt_new(g, VP_GT_VIEW, nm, ndim, shape);
    if (!t)
        return NULL;
    t->view_of = vp_gt_root(a);
    t->view_off = a->kind == VP_GT_VIEW ? a->view_off : 0;
    t->dtype = a->dtype;
    t->requires_grad = a->requires_grad;
    return t;
}

vp_gt *vp_g_view_at(vp_graph *g, vp_gt *a, int64_t off, int ndim, const int64_t *shape)
{
    if (!a)
        return NULL;
    vp_gt *r = vp_gt_root(a);
    int64_t base = a->kind == VP_GT_VIEW ? a->view_off : 0, n = 1;
    for (int i = 0; i < ndim; i++)
        n *= shape[i];
    if (off < 0 || base + off + n > vp_gt_nelem(r)) {
        vp_graph_fail(g, VP_ERR_INTERNAL, "view of %s: elements [%lld, %lld) of %lld", a->name,
                      (long long)(base + off), (long long)(base + off + n),
                      (long long)vp_gt_nelem(r));
        return NULL;
    }
    vp_gt *t = view_prefix(g, r, ndim, shape, NULL, true);
    if (t)
        t->view_off = base + off;
    return t;
}

vp_gt *vp_g_view(vp_graph *g, vp_gt *a, int ndim, const int64_t *shape, const char *name)
{
    return view_prefix(g, a, ndim, shape, name, false);
}

vp_gt *vp_g_reshape(vp_graph *g, vp_gt *a, int ndim, const int64_t *shape)
{
    return vp_g_view(g, a, ndim, shape, NULL);
}

/* ---- ops ------------------------------------------------------------------- */

/* A new activation written by a new node; NULL (with the error recorded)
 * when out of memory. */
static vp_gt *op_out(vp_graph *g, vp_gnode **node, vp_gop op, const char *opname,
                     int ndim, const int64_t *shape)
{
    char name[VP_NAME_MAX];
    snprintf(name, sizeof name, "%s.%u", opname, g->n_tensors);
    vp_gt *t = vp_gt_new(g, VP_GT_ACT, name, ndim, shape);
    *node = t ? vp_node_new(g, op, opname) : NULL;
    if (!*node)
        return NULL;
    (*node)->out[0] = t;
    (*node)->n_out = 1;
    return t;
}

static vp_status gemm_error(vp_graph *g, vp_gt *a, bool ta, vp_gt *b, bool tb, const char *why)
{
    char sa[64], sb[64];
    vp_gt_shape_str(a, sa, sizeof sa);
    vp_gt_shape_str(b, sb, sizeof sb);
    return vp_graph_fail(g, VP_ERR_SHAPE, "matmul: %s %s%s x %s %s%s: %s", a->name, sa,
                         ta ? "^T" : "", b->name, sb, tb ? "^T" : "", why);
}

vp_gt *vp_g_gemm(vp_graph *g, vp_gt *a, bool ta, vp_gt *b, bool tb, vp_gt *bias)
{
    if (!a || !b)
        return NULL;
    if (a->ndim < 2 || b->ndim < 2) {
        gemm_error(g, a, ta, b, tb, "both operands need at least 2 dimensions");
        return NULL;
    }
    int64_t K = ta ? a->shape[a->ndim - 2] : a->shape[a->ndim - 1];
    int64_t M = ta ? a->shape[a->ndim - 1] : a->shape[a->ndim - 2];
    int64_t Kb = tb ? b->shape[b->ndim - 1] : b->shape[b->ndim - 2];
    int64_t N = tb ? b->shape[b->ndim - 2] : b->shape[b->ndim - 1];
    if (K != Kb) {
        gemm_error(g, a, ta, b, tb, "inner dimensions differ");
        return NULL;
    }
    if (bias && vp_gt_nelem(bias) != N) {
        char sb[64];
        vp_gt_shape_str(bias, sb, sizeof sb);
        vp_graph_fail(g, VP_ERR_SHAPE, "matmul: bias %s %s does not match the %lld output "
                      "columns", bias->name, sb, (long long)N);
        return NULL;
    }
    int64_t shape[VP_MAX_DIMS];
    vp_gt *x = a;
    if (b->ndim == 2 && a->ndim > 2) {
        /* A weight applied to a batch: fold the batch into rows. */
        if (ta) {
            gemm_error(g, a, ta, b, tb, "a batched operand cannot be transposed against a "
                       "2-D one");
            return NULL;
        }
        x = vp_g_view(g, a, 2, (int64_t[]){vp_gt_nelem(a) / K, K}, NULL);
    } else if (a->ndim != b->ndim) {
        gemm_error(g, a, ta, b, tb, "batch dimensions differ");
        return NULL;
    } else {
        for (int i = 0; i < a->ndim - 2; i++)
            if (a->shape[i] != b->shape[i]) {
                gemm_error(g, a, ta, b, tb, "batch dimensions differ");
                return NULL;
            }
    }
    if (!x)
        return NULL;
    int nd = x->ndim;
    for (int i = 0; i < nd - 2; i++)
        shape[i] = x->shape[i];
    shape[nd - 2] = x == a ? M : x->shape[0];
    shape[nd - 1] = N;
    vp_gnode *n;
    vp_gt *y = op_out(g, &n, VP_GOP_GEMM, "matmul", nd, shape);
    if (!y)
        return NULL;
    n->in[0] = x;
    n->in[1] = b;
    n->in[2] = bias;
    n->n_in = bias ? 3 : 2;
    n->ip[0] = ta;
    n->ip[1] = tb;
    y->requires_grad = a->requires_grad || b->requires_grad || (bias && bias->requires_grad);
    if (x == a)
        return y;
    for (int i = 0; i < a->ndim - 1; i++)
        shape[i] = a->shape[i];
    shape[a->ndim - 1] = N;
    return vp_g_view(g, y, a->ndim, shape, NULL);
}

vp_gt *vp_g_linear(vp_graph *g, vp_gt *x, vp_gt *w, vp_gt *b)
{
    return vp_g_gemm(g, x, false, w, true, b);
}

static vp_gt *binary(vp_graph *g, vp_gop op, const char *opname, vp_gt *a, vp_gt *b)
{
    if (!a || !b)
        return NULL;
    bool ok = b->ndim <= a->ndim;
    for (int i = 0; ok && i < b->ndim; i++)
        ok = b->shape[b->ndim - 1 - i] == a->shape[a->ndim - 1 - i];
    if (!ok) {
        char sa[64], sb[64];
        vp_gt_shape_str(a, sa, sizeof sa);
        vp_gt_shape_str(b, sb, sizeof sb);
        vp_graph_fail(g, VP_ERR_SHAPE, "%s: %s %s does not broadcast to %s %s: it must have the "
                      "shape of %s's trailing dimensions", opname, b->name, sb, a->name, sa,
                      a->name);
        return NULL;
    }
    vp_gnode *n;
    vp_gt *y = op_out(g, &n, op, opname, a->ndim, a->shape);
    if (!y)
        return NULL;
    n->in[0] = a;
    n->in[1] = b;
    n->n_in = 2;
    y->requires_grad = a->requires_grad || b->requires_grad;
    return y;
}

vp_gt *vp_g_add(vp_graph *g, vp_gt *a, vp_gt *b) { return binary(g, VP_GOP_ADD, "add", a, b); }
vp_gt *vp_g_mul(vp_graph *g, vp_gt *a, vp_gt *b) { return binary(g, VP_GOP_MUL, "mul", a, b); }

vp_gt *vp_g_scale(vp_graph *g, vp_gt *a, float s)
{
    if (!a)
        return NULL;
    vp_gnode *n;
    vp_gt *y = op_out(g, &n, VP_GOP_AXPY, "scale", a->ndim, a->shape);
    if (!y)
        return NULL;
    n->in[0] = a;
    n->n_in = 1;
    n->fp[0] = s;
    y->requires_grad = a->requires_grad;
    return y;
}

static vp_gt *unary(vp_graph *g, vp_gop op, const char *opname, vp_gt *x)
{
    if (!x)
        return NULL;
    vp_gnode *n;
    vp_gt *y = op_out(g, &n, op, opname, x->ndim, x->shape);
    if (!y)
        return NULL;
    n->in[0] = x;
    n->n_in = 1;
    y->requires_grad = x->requires_grad;
    return y;
}

vp_gt *vp_g_relu(vp_graph *g, vp_gt *x) { return unary(g, VP_GOP_RELU, "relu", x); }
vp_gt *vp_g_gelu(vp_graph *g, vp_gt *x) { return unary(g, VP_GOP_GELU, "gelu", x); }

static vp_gt *act(vp_graph *g, vp_act a, const char *name, vp_gt *x)
{
    vp_gt *y = unary(g, VP_GOP_ACT, name, x);
    if (y)
        g->nodes[g->n_nodes - 1].ip[0] = a;
    return y;
}

void vp_graph_set_deterministic(vp_graph *g, bool on)
{
    VP_ASSERT(!g->compiled);
    g->deterministic = on;
}

void vp_graph_set_training(vp_graph *g, bool training) { g->training = training; }

vp_gt *vp_g_dropout(vp_graph *g, vp_gt *x, float p)
{
    if (!x || g->err)
        return NULL;
    if (!(p >= 0.0f && p < 1.0f)) {
        vp_graph_fail(g, VP_ERR_INVALID, "dropout of %s: p %g must be in [0, 1)", x->name, p);
        return NULL;
    }
    if (!g->training || p == 0.0f)
        return x; /* evaluation: the identity, no node */
    if (!g->seed) {
        g->seed = vp_gt_new(g, VP_GT_INPUT, "vpeft.dropout_seed", 1, (int64_t[]){1});
        if (!g->seed)
            return NULL;
        g->seed->dtype = VP_I32;
    }
    vp_gt *y = unary(g, VP_GOP_DROPOUT, "dropout", x);
    if (y) {
        vp_gnode *n = &g->nodes[g->n_nodes - 1];
        n->in[1] = g->seed;
        n->n_in = 2;
        n->fp[0] = p;
    }
    return y;
}

vp_gt *vp_g_rand(vp_graph *g, const char *name, int ndim, const int64_t *shape)
{
    if (g->err)
        return NULL;
    if (!g->seed) {
        g->seed = vp_gt_new(g, VP_GT_INPUT, "vpeft.dropout_seed", 1, (int64_t[]){1});
        if (!g->seed)
            return NULL;
        g->seed->dtype = VP_I32;
    }
    vp_gnode *n;
    vp_gt *y = op_out(g, &n, VP_GOP_RAND, name ? name : "rand", ndim, shape);
    if (!y)
        return NULL;
    n->in[0] = g->seed;
    n->n_in = 1;
    /* each rand node its own stream: a salt from its position among them */
    n->ip[0] = (int32_t)(0x9e3779b9u * (uint32_t)++g->n_rand);
    y->requires_grad = false;
    return y;
}

vp_gt *vp_g_logit_mask(vp_graph *g, vp_gt *x)
{
    vp_gt *y = unary(g, VP_GOP_LOGITMASK, "logit_mask", x);
    if (y)
        y->requires_grad = false;
    return y;
}

vp_gt *vp_g_sigmoid(vp_graph *g, vp_gt *x) { return act(g, VP_ACT_SIGMOID, "sigmoid", x); }
vp_gt *vp_g_softplus(vp_graph *g, vp_gt *x) { return act(g, VP_ACT_SOFTPLUS, "softplus", x); }
vp_gt *vp_g_silu(vp_graph *g, vp_gt *x) { return act(g, VP_ACT_SILU, "silu", x); }
vp_gt *vp_g_softmax(vp_graph *g, vp_gt *x) { return unary(g, VP_GOP_SOFTMAX, "softmax", x); }

vp_gt *vp_g_layernorm(vp_graph *g, vp_gt *x, vp_gt *gamma, vp_gt *beta, float eps)
{
    if (!x)
        return NULL;
    int64_t C = x->shape[x->ndim - 1];
    vp_gt *aff[2] = {gamma, beta};
    for (int i = 0; i < 2; i++)
        if (aff[i] && vp_gt_nelem(aff[i]) != C) {
            char sa[64], sx[64];
            vp_gt_shape_str(aff[i], sa, sizeof sa);
            vp_gt_shape_str(x, sx, sizeof sx);
            vp_graph_fail(g, VP_ERR_SHAPE, "layernorm: %s %s does not match the %lld features "
                          "of %s %s", aff[i]->name, sa, (long long)C, x->name, sx);
            return NULL;
        }
    if (!(eps >= 0.0f)) {
        vp_graph_fail(g, VP_ERR_INVALID, "layernorm of %s: eps %g must be >= 0", x->name, eps);
        return NULL;
    }
    vp_gnode *n;
    vp_gt *y = op_out(g, &n, VP_GOP_LAYERNORM, "layernorm", x->ndim, x->shape);
    if (!y)
        return NULL;
    /* Per-row statistics: x's shape without its last dimension. */
    int rnd = x->ndim > 1 ? x->ndim - 1 : 1;
    int64_t rshape[VP_MAX_DIMS] = {1, 1, 1, 1};
    for (int i = 0; i < x->ndim - 1; i++)
        rshape[i] = x->shape[i];
    char name[VP_NAME_MAX];
    snprintf(name, sizeof name, "%.148s.mean", y->name);
    vp_gt *mean = vp_gt_new(g, VP_GT_ACT, name, rnd, rshape);
    snprintf(name, sizeof name, "%.148s.rstd", y->name);
    vp_gt *rstd = vp_gt_new(g, VP_GT_ACT, name, rnd, rshape);
    if (!mean || !rstd)
        return NULL;
    n = &g->nodes[g->n_nodes - 1];
    n->in[0] = x;
    n->in[1] = gamma;
    n->in[2] = beta;
    n->n_in = 3;
    n->out[1] = mean;
    n->out[2] = rstd;
    n->n_out = 3;
    n->fp[0] = eps;
    y->requires_grad = x->requires_grad || (gamma && gamma->requires_grad) ||
                       (beta && beta->requires_grad);
    return y;
}

/* A (1) loss written by a new node. */
static vp_gt *loss_out(vp_graph *g, vp_gnode **n, vp_gop op, const char *opname)
{
    return op_out(g, n, op, opname, 1, (int64_t[]){1});
}

static bool same_shape_or_fail(vp_graph *g, const char *op, vp_gt *a, vp_gt *b)
{
    if (vp_gt_same_shape(a, b))
        return true;
    char sa[64], sb[64];
    vp_gt_shape_str(a, sa, sizeof sa);
    vp_gt_shape_str(b, sb, sizeof sb);
    vp_graph_fail(g, VP_ERR_SHAPE, "%s: %s %s and %s %s must have the same shape", op, a->name,
                  sa, b->name, sb);
    return false;
}

vp_gt *vp_g_cross_entropy(vp_graph *g, vp_gt *logits, vp_gt *target, vp_gt *weight)
{
    if (!logits || !target)
        return NULL;
    int64_t N = logits->ndim == 2 ? logits->shape[0] : 0, C = logits->shape[logits->ndim - 1];
    char sl[64], st[64];
    vp_gt_shape_str(logits, sl, sizeof sl);
    vp_gt_shape_str(target, st, sizeof st);
    if (logits->ndim != 2 || target->dtype != VP_I32 || vp_gt_nelem(target) != N ||
        (weight && vp_gt_nelem(weight) != C)) {
        vp_graph_fail(g, VP_ERR_SHAPE, "cross_entropy: logits %s %s, target %s %s%s: logits must "
                      "be (N, C), target N int32 class indices, weight (C)", logits->name, sl,
                      target->name, st, target->dtype != VP_I32 ? " (not int32)" : "");
        return NULL;
    }
    vp_gnode *n;
    vp_gt *loss = loss_out(g, &n, VP_GOP_CE, "cross_entropy");
    if (!loss)
        return NULL;
    char name[VP_NAME_MAX];
    snprintf(name, sizeof name, "%.148s.saved", loss->name);
    vp_gt *saved = vp_gt_new(g, VP_GT_ACT, name, 2, (int64_t[]){N + 1, 2});
    if (!saved)
        return NULL;
    n = &g->nodes[g->n_nodes - 1];
    n->in[0] = logits;
    n->in[1] = target;
    n->in[2] = weight;
    n->n_in = 3;
    n->out[1] = saved;
    n->n_out = 2;
    loss->requires_grad = logits->requires_grad;
    return loss;
}

static vp_gt *pair_loss(vp_graph *g, vp_gop op, const char *opname, vp_gt *x, vp_gt *t,
                        float normalizer)
{
    if (!x || !t || !same_shape_or_fail(g, opname, x, t))
        return NULL;
    if (op == VP_GOP_DICE && !(normalizer > 0.0f)) {
        vp_graph_fail(g, VP_ERR_INVALID, "dice of %s: normalizer %g must be > 0", x->name,
                      normalizer);
        return NULL;
    }
    vp_gnode *n;
    vp_gt *loss = loss_out(g, &n, op, opname);
    if (!loss)
        return NULL;
    n->in[0] = x;
    n->in[1] = t;
    n->n_in = 2;
    n->fp[0] = normalizer;
    loss->requires_grad = x->requires_grad;
    return loss;
}

vp_gt *vp_g_bce_logits(vp_graph *g, vp_gt *x, vp_gt *target)
{
    return pair_loss(g, VP_GOP_BCE, "bce_logits", x, target, 1.0f);
}

vp_gt *vp_g_dice(vp_graph *g, vp_gt *x, vp_gt *target, float normalizer)
{
    return pair_loss(g, VP_GOP_DICE, "dice", x, target, normalizer);
}

vp_gt *vp_g_sum(vp_graph *g, vp_gt *a)
{
    if (!a)
        return NULL;
    int64_t n = vp_gt_nelem(a);
    vp_gt *row = vp_g_view(g, a, 2, (int64_t[]){1, n}, NULL);
    vp_gt *s = vp_g_gemm(g, row, false, vp_g_ones(g, n), false, NULL); /* (1, 1) */
    return vp_g_view(g, s, 1, (int64_t[]){1}, NULL);
}

vp_gt *vp_g_mean(vp_graph *g, vp_gt *a)
{
    return a ? vp_g_scale(g, vp_g_sum(g, a), 1.0f / (float)vp_gt_nelem(a)) : NULL;
}

vp_status vp_g_host(vp_graph *g, const char *name, vp_host_fn fn, void *user, uint32_t n_in,
                    vp_gt *const *ins, uint32_t n_out, const int *out_ndim,
                    const int64_t *const *out_shapes, const vp_dtype *out_dtypes, vp_gt **outs)
{
    if (g->err)
        return g->err;
    if (n_in > VP_GMAX_IN || n_out > VP_GMAX_OUT || !fn)
        return vp_graph_fail(g, VP_ERR_INVALID, "host node %s: %u inputs and %u outputs (at "
                             "most %d and %d) and a callback are needed", name, n_in, n_out,
                             VP_GMAX_IN, VP_GMAX_OUT);
    for (uint32_t i = 0; i < n_in; i++)
        if (!ins[i])
            return vp_graph_fail(g, VP_ERR_INVALID, "host node %s: input %u is missing", name, i);
    vp_gt *o[VP_GMAX_OUT];
    for (uint32_t i = 0; i < n_out; i++) {
        char nm[VP_NAME_MAX];
        snprintf(nm, sizeof nm, "%s.out%u", name, i);
        if (!(o[i] = vp_gt_new(g, VP_GT_ACT, nm, out_ndim[i], out_shapes[i])))
            return g->err;
        if (out_dtypes && out_dtypes[i] != VP_F32 && out_dtypes[i] != VP_I32)
            return vp_graph_fail(g, VP_ERR_INVALID, "host node %s: output %u must be float32 or "
                                 "int32", name, i);
        o[i]->dtype = out_dtypes ? out_dtypes[i] : VP_F32;
    }
    vp_gnode *n = vp_node_new(g, VP_GOP_HOST, name);
    if (!n)
        return g->err;
    n->host_fn = fn;
    n->host_user = user;
    n->n_in = n_in;
    for (uint32_t i = 0; i < n_in; i++)
        n->in[i] = ins[i];
    n->n_out = n_out;
    for (uint32_t i = 0; i < n_out; i++)
        n->out[i] = outs[i] = o[i];
    return VP_OK;
}

/* ---- layout and vision -------------------------------------------------------- */

vp_gt *vp_g_permute(vp_graph *g, vp_gt *x, const int *perm)
{
    if (!x)
        return NULL;
    int seen = 0;
    int64_t shape[VP_MAX_DIMS];
    for (int i = 0; i < x->ndim; i++) {
        if (perm[i] < 0 || perm[i] >= x->ndim || (seen & (1 << perm[i]))) {
            vp_graph_fail(g, VP_ERR_INVALID, "permute of %s: the permutation must list each of "
                          "0..%d once", x->name, x->ndim - 1);
            return NULL;
        }
        seen |= 1 << perm[i];
        shape[i] = x->shape[perm[i]];
    }
    vp_gnode *n;
    vp_gt *y = op_out(g, &n, VP_GOP_PERMUTE, "permute", x->ndim, shape);
    if (!y)
        return NULL;
    n->in[0] = x;
    n->n_in = 1;
    for (int i = 0; i < VP_MAX_DIMS; i++)
        n->ip[i] = i < x->ndim ? perm[i] : i;
    y->requires_grad = x->requires_grad;
    return y;
}

vp_gt *vp_g_transpose(vp_graph *g, vp_gt *x, int d0, int d1)
{
    if (!x)
        return NULL;
    int perm[VP_MAX_DIMS] = {0, 1, 2, 3};
    if (d0 < 0 || d1 < 0 || d0 >= x->ndim || d1 >= x->ndim) {
        vp_graph_fail(g, VP_ERR_INVALID, "transpose of %s: dimensions %d and %d, it has %d",
                      x->name, d0, d1, x->ndim);
        return NULL;
    }
    perm[d0] = d1;
    perm[d1] = d0;
    return vp_g_permute(g, x, perm);
}

static bool axis_ok(vp_graph *g, const char *op, const vp_gt *x, int axis)
{
    if (axis >= 0 && axis < x->ndim)
        return true;
    vp_graph_fail(g, VP_ERR_INVALID, "%s of %s: axis %d, it has %d dimensions", op, x->name, axis,
                  x->ndim);
    return false;
}

vp_gt *vp_g_concat(vp_graph *g, vp_gt *const *xs, uint32_t n_in, int axis)
{
    if (n_in == 0 || n_in > VP_GMAX_IN) {
        vp_graph_fail(g, VP_ERR_INVALID, "concat: %u inputs, 1 to %d are supported", n_in,
                      VP_GMAX_IN);
        return NULL;
    }
    for (uint32_t i = 0; i < n_in; i++)
        if (!xs[i])
            return NULL;
    if (!axis_ok(g, "concat", xs[0], axis))
        return NULL;
    int64_t shape[VP_MAX_DIMS];
    memcpy(shape, xs[0]->shape, sizeof shape);
    shape[axis] = 0;
    bool rg = false;
    for (uint32_t i = 0; i < n_in; i++) {
        bool ok = xs[i]->ndim == xs[0]->ndim;
        for (int d = 0; ok && d < xs[0]->ndim; d++)
            ok = d == axis || xs[i]->shape[d] == xs[0]->shape[d];
        if (!ok) {
            char s0[64], si[64];
            vp_gt_shape_str(xs[0], s0, sizeof s0);
            vp_gt_shape_str(xs[i], si, sizeof si);
            vp_graph_fail(g, VP_ERR_SHAPE, "concat along %d: %s %s and %s %s differ elsewhere",
                          axis, xs[0]->name, s0, xs[i]->name, si);
            return NULL;
        }
        shape[axis] += xs[i]->shape[axis];
        rg = rg || xs[i]->requires_grad;
    }
    vp_gnode *n;
    vp_gt *y = op_out(g, &n, VP_GOP_CONCAT, "concat", xs[0]->ndim, shape);
    if (!y)
        return NULL;
    for (uint32_t i = 0; i < n_in; i++)
        n->in[i] = xs[i];
    n->n_in = n_in;
    n->ip[0] = axis;
    y->requires_grad = rg;
    return y;
}

vp_gt *vp_g_slice(vp_graph *g, vp_gt *x, int axis, int64_t start, int64_t len)
{
    if (!x || !axis_ok(g, "slice", x, axis))
        return NULL;
    if (start < 0 || len < 1 || start + len > x->shape[axis]) {
        vp_graph_fail(g, VP_ERR_SHAPE, "slice of %s: [%lld, %lld) along %d, which has %lld",
                      x->name, (long long)start, (long long)(start + len), axis,
                      (long long)x->shape[axis]);
        return NULL;
    }
    int64_t shape[VP_MAX_DIMS];
    memcpy(shape, x->shape, sizeof shape);
    shape[axis] = len;
    /* A contiguous slice (every dimension before the axis 1) of a
     * parameter, input or constant is a view where the device's storage
     * alignment allows: no copy, and the gradient adds straight into the
     * parameter's. (Not of activations: their gradients' first write
     * overwrites, which a part cannot.) */
    int64_t outer = 1, inner = 1;
    for (int i = 0; i < axis; i++)
        outer *= x->shape[i];
    for (int i = axis + 1; i < x->ndim; i++)
        inner *= x->shape[i];
    vp_gt *r = vp_gt_root(x);
    int64_t off = (x->kind == VP_GT_VIEW ? x->view_off : 0) + start * inner;
    uint64_t align = vp_device_get_info(g->dev)->storage_align;
    if (outer == 1 && r->kind != VP_GT_ACT && align &&
        (uint64_t)off * vp_dtype_size(x->dtype) % align == 0)
        return vp_g_view_at(g, x, start * inner, x->ndim, shape);
    vp_gnode *n;
    vp_gt *y = op_out(g, &n, VP_GOP_SLICE, "slice", x->ndim, shape);
    if (!y)
        return NULL;
    n->in[0] = x;
    n->n_in = 1;
    n->ip[0] = axis;
    n->ip[1] = (int32_t)start;
    y->requires_grad = x->requires_grad;
    return y;
}

vp_gt *vp_g_gather_rows(vp_graph *g, vp_gt *table, vp_gt *idx)
{
    if (!table || !idx)
        return NULL;
    if (table->ndim != 2 || idx->dtype != VP_I32) {
        char st[64], si[64];
        vp_gt_shape_str(table, st, sizeof st);
        vp_gt_shape_str(idx, si, sizeof si);
        vp_graph_fail(g, VP_ERR_SHAPE, "gather_rows: table %s %s must be (R, C) and %s %s int32",
                      table->name, st, idx->name, si);
        return NULL;
    }
    vp_gnode *n;
    vp_gt *y = op_out(g, &n, VP_GOP_GATHER, "gather",
                      2, (int64_t[]){vp_gt_nelem(idx), table->shape[1]});
    if (!y)
        return NULL;
    n->in[0] = table;
    n->in[1] = idx;
    n->n_in = 2;
    y->requires_grad = table->requires_grad;
    return y;
}

vp_gt *vp_g_row_map(vp_graph *g, vp_gt *x, const int32_t *idx, int ndim, const int64_t *shape)
{
    if (!x)
        return NULL;
    int64_t C = x->shape[x->ndim - 1], R = vp_gt_nelem(x) / C, N = 1;
    for (int i = 0; i < ndim; i++)
        N *= shape[i];
    if (ndim < 1 || ndim > VP_MAX_DIMS || shape[ndim - 1] != C || !idx) {
        char sx[64];
        vp_gt_shape_str(x, sx, sizeof sx);
        vp_graph_fail(g, VP_ERR_SHAPE, "row_map of %s %s: the output's last dimension must be "
                      "%lld, as x's", x->name, sx, (long long)C);
        return NULL;
    }
    N /= C;
    int32_t *inv = malloc((size_t)(R ? R : 1) * sizeof *inv);
    if (!inv) {
        vp_graph_fail(g, VP_ERR_NOMEM, "out of host memory");
        return NULL;
    }
    for (int64_t r = 0; r < R; r++)
        inv[r] = -1;
    for (int64_t i = 0; i < N; i++) {
        if (idx[i] < -1 || idx[i] >= R || (idx[i] >= 0 && inv[idx[i]] >= 0)) {
            vp_graph_fail(g, VP_ERR_INVALID, "row_map of %s: index %lld is %d: each must be -1 "
                          "or a row in [0, %lld), no row twice", x->name, (long long)i,
                          (int)idx[i], (long long)R);
            free(inv);
            return NULL;
        }
        if (idx[i] >= 0)
            inv[idx[i]] = (int32_t)i;
    }
    char name[VP_NAME_MAX];
    snprintf(name, sizeof name, "row_map.%u.idx", g->n_tensors);
    vp_gt *ti = vp_g_const_i32(g, name, 1, (int64_t[]){N}, idx);
    snprintf(name, sizeof name, "row_map.%u.inv", g->n_tensors);
    vp_gt *tv = vp_g_const_i32(g, name, 1, (int64_t[]){R}, inv);
    free(inv);
    if (!ti || !tv)
        return NULL;
    vp_gnode *n;
    vp_gt *y = op_out(g, &n, VP_GOP_ROWMAP, "row_map", ndim, shape);
    if (!y)
        return NULL;
    n->in[0] = x;
    n->in[1] = ti;
    n->in[2] = tv;
    n->n_in = 3;
    y->requires_grad = x->requires_grad;
    return y;
}

vp_gt *vp_g_patch_embed(vp_graph *g, vp_gt *img, vp_gt *w, vp_gt *b, int p)
{
    if (!img || !w)
        return NULL;
    char si[64], sw[64];
    vp_gt_shape_str(img, si, sizeof si);
    vp_gt_shape_str(w, sw, sizeof sw);
    if (img->ndim != 4 || w->ndim != 4 || p < 1 || w->shape[1] != img->shape[1] ||
        w->shape[2] != p || w->shape[3] != p || img->shape[2] % p || img->shape[3] % p) {
        vp_graph_fail(g, VP_ERR_SHAPE, "patch_embed: image %s %s, weight %s %s, patch %d: the "
                      "image must be (B, C, H, W) with H and W multiples of the patch, the "
                      "weight (D, C, patch, patch)", img->name, si, w->name, sw, p);
        return NULL;
    }
    int64_t B = img->shape[0], C = img->shape[1], np = (img->shape[2] / p) * (img->shape[3] / p);
    vp_gnode *n;
    vp_gt *cols = op_out(g, &n, VP_GOP_IM2COL, "patches", 3, (int64_t[]){B, np, C * p * p});
    if (!cols)
        return NULL;
    n->in[0] = img;
    n->n_in = 1;
    n->ip[0] = p;
    cols->requires_grad = img->requires_grad;
    vp_gt *w2 = vp_g_view(g, w, 2, (int64_t[]){w->shape[0], C * p * p}, NULL);
    return vp_g_linear(g, cols, w2, b);
}

vp_gt *vp_g_maxpool2(vp_graph *g, vp_gt *x)
{
    if (!x)
        return NULL;
    if (x->ndim != 4 || x->shape[1] < 2 || x->shape[2] < 2) {
        char s[64];
        vp_gt_shape_str(x, s, sizeof s);
        vp_graph_fail(g, VP_ERR_SHAPE, "maxpool2: %s %s must be (B, H, W, C) with H, W >= 2",
                      x->name, s);
        return NULL;
    }
    int64_t shape[4] = {x->shape[0], x->shape[1] / 2, x->shape[2] / 2, x->shape[3]};
    vp_gnode *n;
    vp_gt *y = op_out(g, &n, VP_GOP_MAXPOOL2, "maxpool2", 4, shape);
    if (!y)
        return NULL;
    char name[VP_NAME_MAX];
    snprintf(name, sizeof name, "%.148s.argmax", y->name);
    vp_gt *am = vp_gt_new(g, VP_GT_ACT, name, 4, shape);
    if (!am)
        return NULL;
    am->dtype = VP_I32;
    n = &g->nodes[g->n_nodes - 1];
    n->in[0] = x;
    n->n_in = 1;
    n->out[1] = am;
    n->n_out = 2;
    y->requires_grad = x->requires_grad;
    return y;
}

vp_gt *vp_g_conv_transpose2(vp_graph *g, vp_gt *x, vp_gt *w, vp_gt *b)
{
    if (!x || !w)
        return NULL;
    char sx[64], sw[64];
    vp_gt_shape_str(x, sx, sizeof sx);
    vp_gt_shape_str(w, sw, sizeof sw);
    if (x->ndim != 4 || w->ndim != 4 || w->shape[0] != x->shape[3] || w->shape[2] != 2 ||
        w->shape[3] != 2 || (b && vp_gt_nelem(b) != w->shape[1])) {
        vp_graph_fail(g, VP_ERR_SHAPE, "conv_transpose2: input %s %s, weight %s %s: the input "
                      "must be (B, H, W, Cin), the weight (Cin, Cout, 2, 2), the bias (Cout)",
                      x->name, sx, w->name, sw);
        return NULL;
    }
    int64_t B = x->shape[0], H = x->shape[1], W = x->shape[2], Cout = w->shape[1];
    vp_gt *w2 = vp_g_view(g, w, 2, (int64_t[]){w->shape[0], Cout * 4}, NULL);
    vp_gt *z = vp_g_gemm(g, x, false, w2, false, NULL); /* (B, H, W, Cout*4) */
    if (!z)
        return NULL;
    vp_gnode *n;
    vp_gt *y = op_out(g, &n, VP_GOP_D2S, "conv_transpose2", 4, (int64_t[]){B, 2 * H, 2 * W, Cout});
    if (!y)
        return NULL;
    n->in[0] = z;
    n->in[1] = b;
    n->n_in = 2;
    y->requires_grad = z->requires_grad || (b && b->requires_grad);
    return y;
}

vp_gt *vp_g_resize_bilinear(vp_graph *g, vp_gt *x, int64_t oh, int64_t ow)
{
    if (!x)
        return NULL;
    if (x->ndim != 4 || oh < 1 || ow < 1) {
        char s[64];
        vp_gt_shape_str(x, s, sizeof s);
        vp_graph_fail(g, VP_ERR_SHAPE, "resize_bilinear: %s %s must be (B, H, W, C), the size "
                      "%lldx%lld positive", x->name, s, (long long)oh, (long long)ow);
        return NULL;
    }
    vp_gnode *n;
    vp_gt *y = op_out(g, &n, VP_GOP_RESIZE, "resize", 4,
                      (int64_t[]){x->shape[0], oh, ow, x->shape[3]});
    if (!y)
        return NULL;
    n->in[0] = x;
    n->n_in = 1;
    y->requires_grad = x->requires_grad;
    return y;
}

/* A per-batch mask (B, 1, Nq, Nk) repeated for every head: (B, heads, Nq,
 * Nk), by concatenating views along the head axis (8 at a time). */
/* Shapes of q, k, v for attention; on a mismatch the graph's error. */
static bool attention_shapes(vp_graph *g, vp_gt *q, vp_gt *k, vp_gt *v, int heads)
{
    if (q->ndim == 3 && k->ndim == 3 && vp_gt_same_shape(k, v) && k->shape[0] == q->shape[0] &&
        k->shape[2] == q->shape[2] && heads >= 1 && q->shape[2] % heads == 0)
        return true;
    char sq[64], sk[64], sv[64];
    vp_gt_shape_str(q, sq, sizeof sq);
    vp_gt_shape_str(k, sk, sizeof sk);
    vp_gt_shape_str(v, sv, sizeof sv);
    vp_graph_fail(g, VP_ERR_SHAPE, "attention: q %s %s, k %s %s, v %s %s, %d heads: q must "
                  "be (B, Nq, D), k and v (B, Nk, D), heads dividing D", q->name, sq, k->name,
                  sk, v->name, sv, heads);
    return false;
}

vp_gt *vp_g_attention_ex(vp_graph *g, vp_gt *q, vp_gt *k, vp_gt *v, vp_gt *bias, int heads,
                         float scale)
{
    if (!q || !k || !v || !attention_shapes(g, q, k, v, heads))
        return NULL;
    int64_t B = q->shape[0], Nq = q->shape[1], D = q->shape[2], Nk = k->shape[1];
    if (D / heads > VP_ATTN_MAX_DH) {
        vp_graph_fail(g, VP_ERR_UNSUPPORTED, "attention: %lld channels per head (%s, %d heads); "
                      "at most %d are supported", (long long)(D / heads), q->name, heads,
                      VP_ATTN_MAX_DH);
        return NULL;
    }
    if (bias) {
        int64_t M = 1, Hb = 1;
        bool ok = bias->ndim >= 2 && bias->shape[bias->ndim - 2] == Nq &&
                  bias->shape[bias->ndim - 1] == Nk;
        if (ok && bias->ndim == 3)
            Hb = bias->shape[0];
        else if (ok && bias->ndim == 4) {
            M = bias->shape[0];
            Hb = bias->shape[1];
        }
        ok = ok && bias->ndim <= 4 && M >= 1 && B % M == 0 && (Hb == 1 || Hb == heads);
        if (!ok) {
            char sb[64], sq[64];
            vp_gt_shape_str(bias, sb, sizeof sb);
            vp_gt_shape_str(q, sq, sizeof sq);
            vp_graph_fail(g, VP_ERR_SHAPE, "attention: mask %s %s does not fit scores (%lld, %d, "
                          "%lld, %lld) of q %s %s: it must be (M, 1 or %d, %lld, %lld) with M "
                          "dividing %lld, or (1 or %d, %lld, %lld), or (%lld, %lld)", bias->name,
                          sb, (long long)B, heads, (long long)Nq, (long long)Nk, q->name, sq,
                          heads, (long long)Nq, (long long)Nk, (long long)B, heads,
                          (long long)Nq, (long long)Nk, (long long)Nq, (long long)Nk);
            return NULL;
        }
        if (bias->ndim != 4)
            bias = vp_g_view(g, bias, 4, (int64_t[]){M, Hb, Nq, Nk}, NULL);
        if (!bias)
            return NULL;
    }
    vp_gnode *n;
    vp_gt *o = op_out(g, &n, VP_GOP_ATTN, "attention", 3, q->shape);
    if (!o)
        return NULL;
    char name[VP_NAME_MAX];
    snprintf(name, sizeof name, "%.148s.lse", o->name);
    vp_gt *lse = vp_gt_new(g, VP_GT_ACT, name, 3, (int64_t[]){B, heads, Nq});
    if (!lse)
        return NULL;
    n = &g->nodes[g->n_nodes - 1];
    n->in[0] = q;
    n->in[1] = k;
    n->in[2] = v;
    n->in[3] = bias;
    n->n_in = 4;
    n->out[1] = lse;
    n->n_out = 2;
    n->ip[0] = heads;
    n->fp[0] = scale;
    o->requires_grad = q->requires_grad || k->requires_grad || v->requires_grad ||
                       (bias && bias->requires_grad);
    return o;
}

vp_gt *vp_g_attention(vp_graph *g, vp_gt *q, vp_gt *k, vp_gt *v, vp_gt *mask, int heads)
{
    if (!q || !k || !v || !attention_shapes(g, q, k, v, heads))
        return NULL;
    double dh = (double)(q->shape[2] / heads);
    return vp_g_attention_ex(g, q, k, v, mask, heads, (float)(1.0 / sqrt(dh)));
}

vp_gt *vp_g_msdeform(vp_graph *g, vp_gt *value, const vp_msdeform_levels *lv, vp_gt *loc,
                     vp_gt *attn)
{
    if (!value || !loc || !attn)
        return NULL;
    char sv[64], sl[64], sa[64];
    vp_gt_shape_str(value, sv, sizeof sv);
    vp_gt_shape_str(loc, sl, sizeof sl);
    vp_gt_shape_str(attn, sa, sizeof sa);
    int64_t S = 0;
    bool ok = lv && lv->n >= 1 && lv->n <= VP_MSDEFORM_MAX_LEVELS && value->ndim == 4 &&
              loc->ndim == 4 && attn->ndim == 4;
    for (int l = 0; ok && l < lv->n; l++) {
        ok = lv->shape[l][0] >= 1 && lv->shape[l][1] >= 1 && lv->start[l] == S;
        S += lv->shape[l][0] * lv->shape[l][1];
    }
    int64_t B = value->shape[0], H = value->shape[2], Dh = value->shape[3];
    int64_t Q = ok ? loc->shape[1] : 0, LP = ok ? attn->shape[3] : 0;
    ok = ok && value->shape[1] == S && LP % lv->n == 0 && loc->shape[0] == B &&
         loc->shape[2] == H && loc->shape[3] == 2 * LP && attn->shape[0] == B &&
         attn->shape[1] == Q && attn->shape[2] == H;
    if (!ok) {
        vp_graph_fail(g, VP_ERR_SHAPE, "msdeform: value %s %s, loc %s %s, attn %s %s do not fit "
                      "(B, S, H, Dh), (B, Q, H, L*P*2), (B, Q, H, L*P) for %d contiguous levels "
                      "of %lld positions", value->name, sv, loc->name, sl, attn->name, sa,
                      lv ? lv->n : 0, (long long)S);
        return NULL;
    }
    if (VP_RESERVE(g->levels, g->cap_levels, g->n_levels + 1)) {
        vp_graph_fail(g, VP_ERR_NOMEM, "out of host memory");
        return NULL;
    }
    g->levels[g->n_levels] = *lv;
    vp_gnode *n;
    vp_gt *y = op_out(g, &n, VP_GOP_MSDEFORM, "msdeform", 3, (int64_t[]){B, Q, H * Dh});
    if (!y)
        return NULL;
    n->in[0] = value;
    n->in[1] = loc;
    n->in[2] = attn;
    n->n_in = 3;
    n->ip[0] = (int32_t)g->n_levels++;
    y->requires_grad = value->requires_grad || loc->requires_grad || attn->requires_grad;
    return y;
}

vp_gt *vp_g_bool_mask(vp_graph *g, vp_gt *m)
{
    vp_gt *y = unary(g, VP_GOP_BOOLMASK, "mask", m);
    if (y)
        y->requires_grad = false;
    return y;
}
