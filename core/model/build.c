/*
 * The build context behind the host table's parameter, site and weights
 * calls (see build.h).
 *
 * Parameters are recorded with how they get their first values and filled
 * only after the graph is compiled, so a model that fails to build reads
 * no weights. Initial values come from a stream seeded by the run's seed
 * and the parameter's name: adding a PEFT method does not change the base
 * model's initialization. Sites are where PEFT instances are called, in
 * config order; each sees the previous one's output.
 */
#include <fnmatch.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "graph/internal.h"
#include "io/safetensors.h"
#include "model/build.h"
#include "util/array.h"
#include "util/error.h"

struct vp_weights {
    vp_st *st;
    struct vp_weights *next;
};

typedef struct peft_inst {
    char name[64];
    const vp_peft_iface *iface;
    void *self;
    uint32_t attached;          /* sites */
} peft_inst;

typedef struct module_decl {
    char *path;
    vp_site_kind kind;
} module_decl;

struct vp_build {
    vp_graph *g;
    bool own_graph;
    vp_build_opts opts;
    char **trainable;           /* copies of opts.trainable */
    vp_build_param *params;
    uint32_t n_params, cap_params;
    vp_build_site *sites;
    uint32_t n_sites, cap_sites;
    module_decl *modules;
    uint32_t n_modules, cap_modules;
    peft_inst *pefts;
    uint32_t n_pefts, cap_pefts;
    struct vp_weights *weights;
    char **buffers;             /* checkpoint keys that are no parameter (buffer_key) */
    uint32_t n_buffers, cap_buffers;
    char **out_names;
    vp_gt **outs;
    uint32_t n_outs, cap_outs, cap_out_names;
    char caller[64];
    int caller_peft;            /* -1: the base model; else the PEFT instance index */
};

static char *dup_str(const char *s)
{
    size_t n = strlen(s) + 1;
    char *d = malloc(n);
    if (d)
        memcpy(d, s, n);
    return d;
}

vp_status vp_build_create(vp_device *dev, const vp_build_opts *opts, vp_build **out)
{
    *out = NULL;
    vp_build *b = calloc(1, sizeof *b);
    if (!b)
        return vp_error_set(VP_ERR_NOMEM, "out of host memory");
    if (opts)
        b->opts = *opts;
    b->caller_peft = -1;
    snprintf(b->caller, sizeof b->caller, "vpeft");
    vp_status st = vp_graph_create(dev, &b->g);
    b->own_graph = true;
    if (!st && b->opts.n_trainable) {
        b->trainable = calloc(b->opts.n_trainable, sizeof *b->trainable);
        st = b->trainable ? VP_OK : vp_error_set(VP_ERR_NOMEM, "out of host memory");
        for (uint32_t i = 0; !st && i < b->opts.n_trainable; i++)
            if (!(b->trainable[i] = dup_str(b->opts.trainable[i])))
                st = vp_error_set(VP_ERR_NOMEM, "out of host memory");
        b->opts.trainable = (const char *const *)b->trainable;
    }
    if (st) {
        vp_build_destroy(b);
        return st;
    }
    *out = b;
    return VP_OK;
}

void vp_build_destroy(vp_build *b)
{
    if (!b)
        return;
    for (uint32_t i = 0; i < b->n_params; i++) {
        free((void *)b->params[i].init.data);
        free(b->params[i].key);
    }
    free(b->params);
    for (uint32_t i = 0; i < b->n_sites; i++)
        free(b->sites[i].path);
    free(b->sites);
    for (uint32_t i = 0; i < b->n_modules; i++)
        free(b->modules[i].path);
    free(b->modules);
    free(b->pefts);
    for (uint32_t i = 0; i < b->n_outs; i++)
        free(b->out_names[i]);
    free(b->out_names);
    free(b->outs);
    for (uint32_t i = 0; i < b->n_buffers; i++)
        free(b->buffers[i]);
    free(b->buffers);
    for (struct vp_weights *w = b->weights, *next; w; w = next) {
        next = w->next;
        vp_st_close(w->st);
        free(w);
    }
    if (b->trainable)
        for (uint32_t i = 0; i < b->opts.n_trainable; i++)
            free(b->trainable[i]);
    free(b->trainable);
    if (b->own_graph)
        vp_graph_destroy(b->g);
    free(b);
}

vp_graph *vp_build_graph(vp_build *b) { return b ? b->g : NULL; }

vp_graph *vp_build_take_graph(vp_build *b)
{
    b->own_graph = false;
    return b->g;
}

vp_status vp_build_add_peft(vp_build *b, const char *name, const vp_peft_iface *iface,
                            void *self)
{
    if (b->n_pefts >= 32)
        return vp_error_set(VP_ERR_INVALID, "%s: at most 32 PEFT methods in one model", name);
    vp_status st = VP_RESERVE(b->pefts, b->cap_pefts, b->n_pefts + 1);
    if (st)
        return st;
    peft_inst *p = &b->pefts[b->n_pefts++];
    memset(p, 0, sizeof *p);
    snprintf(p->name, sizeof p->name, "%s", name);
    p->iface = iface;
    p->self = self;
    return VP_OK;
}

void vp_build_enter(vp_build *b, const char *plugin, bool peft)
{
    snprintf(b->caller, sizeof b->caller, "%s", plugin);
    b->caller_peft = -1;
    if (peft)
        for (uint32_t i = 0; i < b->n_pefts; i++)
            if (!strcmp(b->pefts[i].name, plugin))
                b->caller_peft = (int)i;
}

vp_status vp_build_check_pefts(vp_build *b)
{
    for (uint32_t i = 0; i < b->n_pefts; i++)
        if (!b->pefts[i].attached)
            return vp_error_set(VP_ERR_CONFIG, "peft[%u] (%s): selects no site of the model (it has %u "
                                "sites)", i, b->pefts[i].name,
                                b->n_sites);
    return VP_OK;
}

uint32_t vp_build_site_count(const vp_build *b) { return b->n_sites; }
const vp_build_site *vp_build_site_at(const vp_build *b, uint32_t i)
{
    return i < b->n_sites ? &b->sites[i] : NULL;
}
uint32_t vp_build_param_count(const vp_build *b) { return b->n_params; }
const vp_build_param *vp_build_param_at(const vp_build *b, uint32_t i)
{
    return i < b->n_params ? &b->params[i] : NULL;
}

/* ---- parameters ------------------------------------------------------------ */

static bool base_trainable(const vp_build *b, const char *name, bool plugin_says)
{
    if (b->opts.n_trainable) {
        for (uint32_t i = 0; i < b->opts.n_trainable; i++)
            if (!fnmatch(b->opts.trainable[i], name, 0))
                return true;
        return false;
    }
    return b->opts.freeze_base ? false : plugin_says;
}

vp_gt *vp_build_param_new(vp_build *b, const char *name, int ndim, const int64_t *shape,
                          const vp_init *init, bool trainable)
{
    vp_graph *g = b->g;
    if (g->err)
        return NULL;
    if (!name || !name[0]) {
        vp_graph_fail(g, VP_ERR_INVALID, "%s: a parameter needs a name", b->caller);
        return NULL;
    }
    vp_init in = init ? *init : vp_init_zeros();
    if ((unsigned)in.kind > VP_INIT_LINEAR_BIAS) {
        vp_graph_fail(g, VP_ERR_INVALID, "%s: parameter %s: unknown initializer %d", b->caller,
                      name, (int)in.kind);
        return NULL;
    }
    if (in.kind == VP_INIT_DATA && !in.data) {
        vp_graph_fail(g, VP_ERR_INVALID, "%s: parameter %s: VP_INIT_DATA without data",
                      b->caller, name);
        return NULL;
    }
    if (VP_RESERVE(b->params, b->cap_params, b->n_params + 1)) {
        vp_graph_fail(g, VP_ERR_NOMEM, "out of host memory");
        return NULL;
    }
    bool train = b->caller_peft >= 0 ? trainable : base_trainable(b, name, trainable);
    vp_gt *t = vp_g_param(g, name, ndim, shape, train);
    if (!t)
        return NULL;
    if (in.kind == VP_INIT_DATA) {
        size_t bytes = (size_t)vp_gt_nelem(t) * sizeof(float);
        float *copy = malloc(bytes);
        if (!copy) {
            vp_graph_fail(g, VP_ERR_NOMEM, "out of host memory");
            return NULL;
        }
        memcpy(copy, in.data, bytes);
        in.data = copy;
    }
    b->params[b->n_params++] = (vp_build_param){t, (uint32_t)(b->caller_peft + 1), in, NULL, NULL};
    return t;
}

/* splitmix64: seeds the per-parameter stream from the run's seed and the
 * name (FNV-1a). */
static uint64_t mix(uint64_t *s)
{
    uint64_t z = (*s += 0x9e3779b97f4a7c15ull);
    z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ull;
    z = (z ^ (z >> 27)) * 0x94d049bb133111ebull;
    return z ^ (z >> 31);
}

static double uniform01(uint64_t *s) { return (double)(mix(s) >> 11) * 0x1.0p-53; }

vp_status vp_init_fill(const vp_init *init, const char *name, uint64_t seed, int ndim,
                       const int64_t *shape, float *data)
{
    int64_t n = 1, receptive = 1;
    for (int i = 0; i < ndim; i++)
        n *= shape[i];
    for (int i = 2; i < ndim; i++)
        receptive *= shape[i];
    double fan_in = ndim > 1 ? (double)(shape[1] * receptive) : (double)shape[0];
    double fan_out = (double)(shape[0] * receptive);
    uint64_t s = seed ^ 0xcbf29ce484222325ull;
    for (const char *c = name; *c; c++)
        s = (s ^ (uint8_t)*c) * 0x100000001b3ull;
    double lo = 0, hi = 0;
    switch (init->kind) {
    case VP_INIT_ZEROS:
    case VP_INIT_ONES:
    case VP_INIT_CONSTANT: {
        float v = init->kind == VP_INIT_ZEROS ? 0.0f : init->kind == VP_INIT_ONES ? 1.0f : init->a;
        for (int64_t i = 0; i < n; i++)
            data[i] = v;
        return VP_OK;
    }
    case VP_INIT_DATA:
        memcpy(data, init->data, (size_t)n * sizeof *data);
        return VP_OK;
    case VP_INIT_NORMAL:
        for (int64_t i = 0; i < n; i++) {
            double u1 = uniform01(&s), u2 = uniform01(&s);
            double z = sqrt(-2.0 * log(1.0 - u1)) * cos(6.283185307179586 * u2);
            data[i] = (float)(init->a + init->b * z);
        }
        return VP_OK;
    case VP_INIT_UNIFORM:
        lo = init->a, hi = init->b;
        break;
    case VP_INIT_XAVIER_UNIFORM: {
        double gain = init->a != 0.0f ? init->a : 1.0;
        hi = gain * sqrt(6.0 / (fan_in + fan_out)), lo = -hi;
        break;
    }
    case VP_INIT_KAIMING_UNIFORM: {
        double gain = sqrt(2.0 / (1.0 + (double)init->a * init->a));
        hi = gain * sqrt(3.0 / fan_in), lo = -hi;
        break;
    }
    case VP_INIT_LINEAR_BIAS:
        hi = init->a > 0 ? 1.0 / sqrt(init->a) : 0.0, lo = -hi;
        break;
    default:
        return vp_error_set(VP_ERR_INVALID, "parameter %s: unknown initializer %d", name,
                            (int)init->kind);
    }
    for (int64_t i = 0; i < n; i++)
        data[i] = (float)(lo + (hi - lo) * uniform01(&s));
    return VP_OK;
}

vp_status vp_build_check_finite(const char *file, const char *tensor, const float *x, size_t n)
{
    for (size_t i = 0; i < n; i++)
        if (!isfinite(x[i]))
            return vp_error_set(VP_ERR_FORMAT, "%s: tensor \"%s\" holds %s at element %zu of "
                                "%zu: refusing non-finite weights", file, tensor,
                                isnan(x[i]) ? "NaN" : x[i] > 0 ? "+Inf" : "-Inf", i, n);
    return VP_OK;
}

vp_status vp_build_init_params(vp_build *b)
{
    size_t cap = 0;
    float *buf = NULL;
    vp_status st = VP_OK;
    for (uint32_t i = 0; !st && i < b->n_params; i++) {
        vp_build_param *p = &b->params[i];
        size_t n = (size_t)vp_gt_nelem(p->t);
        if (n > cap) {
            float *nb = realloc(buf, n * sizeof *buf);
            if (!nb) {
                st = vp_error_set(VP_ERR_NOMEM, "out of host memory reading %s", vp_gt_name(p->t));
                break;
            }
            buf = nb, cap = n;
        }
        if (p->w && !(st = vp_st_read_f32(p->w->st, p->key, buf, n)))
            st = vp_build_check_finite(vp_st_path(p->w->st), p->key, buf, n);
        else if (!p->w)
            st = vp_init_fill(&p->init, vp_gt_name(p->t), b->opts.seed, vp_gt_ndim(p->t),
                              vp_gt_shape(p->t), buf);
        if (!st)
            st = vp_graph_write(b->g, p->t, buf, n * sizeof *buf);
    }
    free(buf);
    return st;
}

/* ---- sites -------------------------------------------------------------------- */

static const char *last_component(const char *path)
{
    const char *dot = strrchr(path, '.');
    return dot ? dot + 1 : path;
}

static const module_decl *module_of(const vp_build *b, const char *path)
{
    const module_decl *best = NULL;
    for (uint32_t i = 0; i < b->n_modules; i++) {
        size_t n = strlen(b->modules[i].path);
        if (!strncmp(path, b->modules[i].path, n) && path[n] == '.' &&
            (!best || n > strlen(best->path)))
            best = &b->modules[i];
    }
    return best;
}

static vp_build_site *site_new(vp_build *b, const char *path, vp_site_kind kind, int64_t in,
                               int64_t out)
{
    vp_graph *g = b->g;
    for (uint32_t i = 0; i < b->n_sites; i++)
        if (!strcmp(b->sites[i].path, path) && b->sites[i].kind == kind) {
            vp_graph_fail(g, VP_ERR_INVALID, "%s: site %s is declared twice", b->caller, path);
            return NULL;
        }
    char *copy = dup_str(path);
    if (!copy || VP_RESERVE(b->sites, b->cap_sites, b->n_sites + 1)) {
        free(copy);
        vp_graph_fail(g, VP_ERR_NOMEM, "out of host memory");
        return NULL;
    }
    vp_build_site *s = &b->sites[b->n_sites++];
    *s = (vp_build_site){copy, kind, in, out, 0};
    return s;
}

/* Every PEFT instance's attach(), in order, on y. */
static vp_gt *apply_pefts(vp_build *b, uint32_t site_index, const vp_site *site, vp_gt *x,
                          vp_gt *y)
{
    vp_graph *g = b->g;
    char caller[64];
    int caller_peft = b->caller_peft;
    snprintf(caller, sizeof caller, "%s", b->caller);
    for (uint32_t i = 0; y && i < b->n_pefts; i++) {
        peft_inst *p = &b->pefts[i];
        vp_gt *before = y;
        bool attached = false;
        vp_build_enter(b, p->name, true);
        b->caller_peft = (int)i;
        vp_error_clear();
        vp_status st = p->iface->attach(p->self, b, site, x, &y, &attached);
        if (st || g->err) {
            /* Plugins start their messages with their name: not twice. */
            const char *msg = vp_error_last()[0] ? vp_error_last() : vp_status_str(st);
            size_t nl = strlen(p->name);
            if (!strncmp(msg, p->name, nl) && msg[nl] == ':' && msg[nl + 1] == ' ')
                msg += nl + 2;
            size_t pl = strlen(site->path); /* and the site, which "at" names */
            if (!strncmp(msg, site->path, pl) && msg[pl] == ':' && msg[pl + 1] == ' ')
                msg += pl + 2;
            if (!g->err)
                vp_graph_fail(g, st, "%s: at %s: %s", p->name, site->path, msg);
            y = NULL;
            break;
        }
        if (!y || !vp_gt_same_shape(y, before)) {
            vp_graph_fail(g, VP_ERR_SHAPE, "%s: at %s: attach() %s", p->name, site->path,
                          y ? "changed the output's shape" : "returned no output");
            y = NULL;
            break;
        }
        if (attached) {
            p->attached++;
            b->sites[site_index].attached |= 1u << i;
        }
    }
    snprintf(b->caller, sizeof b->caller, "%s", caller);
    b->caller_peft = caller_peft;
    return y;
}

vp_gt *vp_build_site_linear(vp_build *b, const char *path, vp_gt *x, int64_t out_features,
                            bool bias, const vp_init *w_init, const vp_init *b_init)
{
    vp_graph *g = b->g;
    if (!x || g->err)
        return NULL;
    if (!path || !path[0] || out_features < 1) {
        vp_graph_fail(g, VP_ERR_INVALID, "%s: site_linear needs a path and out_features >= 1",
                      b->caller);
        return NULL;
    }
    int64_t in = x->shape[x->ndim - 1];
    char name[VP_NAME_MAX];
    vp_init wi = w_init ? *w_init : vp_init_kaiming_uniform(sqrtf(5.0f));
    vp_init bi = b_init ? *b_init : (vp_init){VP_INIT_LINEAR_BIAS, (float)in, 0.0f, NULL};
    snprintf(name, sizeof name, "%s.weight", path);
    vp_gt *w = vp_build_param_new(b, name, 2, (int64_t[]){out_features, in}, &wi, true);
    snprintf(name, sizeof name, "%s.bias", path);
    vp_gt *bt = bias ? vp_build_param_new(b, name, 1, &out_features, &bi, true) : NULL;
    vp_gt *y = vp_g_linear(g, x, w, bt);
    if (!y || (bias && !bt))
        return NULL;
    vp_build_site *s = site_new(b, path, VP_SITE_LINEAR, in, out_features);
    if (!s)
        return NULL;
    const module_decl *m = module_of(b, path);
    vp_site site = {sizeof site, VP_SITE_LINEAR, s->path, last_component(s->path),
                    m ? m->path : NULL, m ? m->kind : 0, in, out_features, w, bt};
    return apply_pefts(b, (uint32_t)(s - b->sites), &site, x, y);
}

vp_gt *vp_build_site_output(vp_build *b, const char *path, vp_site_kind kind, vp_gt *y)
{
    return vp_build_site_output_in(b, path, kind, NULL, y);
}

vp_gt *vp_build_site_output_in(vp_build *b, const char *path, vp_site_kind kind, vp_gt *x,
                               vp_gt *y)
{
    vp_graph *g = b->g;
    if (!y || g->err)
        return NULL;
    if (x && (x->ndim != y->ndim || x->shape[x->ndim - 1] != y->shape[y->ndim - 1] ||
              vp_gt_nelem(x) != vp_gt_nelem(y))) {
        vp_graph_fail(g, VP_ERR_SHAPE, "%s: site_output_in at %s: the sub-layer's input %s "
                      "must have its output %s's shape", b->caller, path ? path : "",
                      x->name, y->name);
        return NULL;
    }
    if (!path || !path[0] || (kind != VP_SITE_ATTN_OUT && kind != VP_SITE_FFN_OUT)) {
        vp_graph_fail(g, VP_ERR_INVALID, "%s: site_output needs a path and the kind "
                      "VP_SITE_ATTN_OUT or VP_SITE_FFN_OUT (got %d)", b->caller, (int)kind);
        return NULL;
    }
    int64_t d = y->shape[y->ndim - 1];
    vp_build_site *s = site_new(b, path, kind, d, d);
    if (!s)
        return NULL;
    const module_decl *m = module_of(b, path);
    vp_site site = {sizeof site, kind, s->path, last_component(s->path), m ? m->path : NULL,
                    m ? m->kind : 0, d, d, NULL, NULL};
    return apply_pefts(b, (uint32_t)(s - b->sites), &site, x, y);
}

vp_status vp_build_site_module(vp_build *b, const char *path, vp_site_kind kind)
{
    vp_graph *g = b->g;
    if (g->err)
        return vp_graph_status(g);
    if (!path || !path[0] || kind != VP_SITE_DEFORM)
        return vp_graph_fail(g, VP_ERR_INVALID, "%s: site_module needs a path and the kind "
                             "VP_SITE_DEFORM (got %d)", b->caller, (int)kind);
    for (uint32_t i = 0; i < b->n_modules; i++)
        if (!strcmp(b->modules[i].path, path))
            return vp_graph_fail(g, VP_ERR_INVALID, "%s: module %s is declared twice",
                                 b->caller, path);
    char *copy = dup_str(path);
    if (!copy || VP_RESERVE(b->modules, b->cap_modules, b->n_modules + 1)) {
        free(copy);
        return vp_graph_fail(g, VP_ERR_NOMEM, "out of host memory");
    }
    b->modules[b->n_modules++] = (module_decl){copy, kind};
    vp_build_site *s = site_new(b, path, kind, 0, 0);
    return s ? VP_OK : g->err;
}

/* ---- named outputs ------------------------------------------------------------ */

vp_gt *vp_build_output(vp_build *b, const char *name, vp_gt *t)
{
    vp_graph *g = b->g;
    if (!t || g->err)
        return NULL;
    if (!name || !name[0]) {
        vp_graph_fail(g, VP_ERR_INVALID, "%s: an output needs a name", b->caller);
        return NULL;
    }
    if (vp_build_output_find(b, name)) {
        vp_graph_fail(g, VP_ERR_INVALID, "%s: output %s is declared twice", b->caller, name);
        return NULL;
    }
    char *copy = dup_str(name);
    if (!copy || VP_RESERVE(b->outs, b->cap_outs, b->n_outs + 1) ||
        VP_RESERVE(b->out_names, b->cap_out_names, b->n_outs + 1)) {
        free(copy);
        vp_graph_fail(g, VP_ERR_NOMEM, "out of host memory");
        return NULL;
    }
    b->outs[b->n_outs] = t;
    b->out_names[b->n_outs++] = copy;
    vp_g_keep(t);
    return t;
}

uint32_t vp_build_output_count(const vp_build *b) { return b->n_outs; }

vp_gt *vp_build_output_at(const vp_build *b, uint32_t i, const char **name)
{
    if (i >= b->n_outs)
        return NULL;
    if (name)
        *name = b->out_names[i];
    return b->outs[i];
}

vp_gt *vp_build_output_find(const vp_build *b, const char *name)
{
    for (uint32_t i = 0; i < b->n_outs; i++)
        if (!strcmp(b->out_names[i], name))
            return b->outs[i];
    return NULL;
}

/* ---- weights -------------------------------------------------------------------- */

vp_status vp_build_buffer_key(vp_build *b, const char *key)
{
    if (!key || !*key)
        return vp_error_set(VP_ERR_INVALID, "%s: buffer_key: no key", b->caller);
    if (vp_build_is_buffer_key(b, key))
        return VP_OK;
    char *copy = dup_str(key);
    if (!copy || VP_RESERVE(b->buffers, b->cap_buffers, b->n_buffers + 1)) {
        free(copy);
        return vp_error_set(VP_ERR_NOMEM, "out of host memory");
    }
    b->buffers[b->n_buffers++] = copy;
    return VP_OK;
}

bool vp_build_is_buffer_key(const vp_build *b, const char *key)
{
    for (uint32_t i = 0; i < b->n_buffers; i++)
        if (!strcmp(b->buffers[i], key))
            return true;
    return false;
}

vp_status vp_build_weights_open(vp_build *b, const char *path, vp_weights **out)
{
    *out = NULL;
    if (!path)
        return vp_error_set(VP_ERR_INVALID, "%s: weights_open: no path", b->caller);
    for (struct vp_weights *w = b->weights; w; w = w->next)
        if (!strcmp(vp_st_path(w->st), path)) {
            *out = w;
            return VP_OK;
        }
    struct vp_weights *w = calloc(1, sizeof *w);
    if (!w)
        return vp_error_set(VP_ERR_NOMEM, "out of host memory");
    vp_status st = vp_st_open(path, &w->st);
    if (st) {
        free(w);
        return st;
    }
    w->next = b->weights;
    b->weights = w;
    *out = w;
    return VP_OK;
}

uint32_t vp_weights_count(const vp_weights *w) { return (uint32_t)vp_st_count(w->st); }

const char *vp_weights_key(const vp_weights *w, uint32_t i)
{
    const vp_st_tensor *t = vp_st_get(w->st, i);
    return t ? t->name : NULL;
}

vp_status vp_weights_shape(const vp_weights *w, const char *key, int *ndim,
                           int64_t shape[VP_MAX_DIMS])
{
    const vp_st_tensor *t;
    vp_status st = vp_st_lookup(w->st, key, &t);
    if (st)
        return st;
    if (t->ndim > VP_MAX_DIMS)
        return vp_error_set(VP_ERR_SHAPE, "%s: tensor \"%s\" has %d dimensions, vpeft supports "
                            "up to %d", vp_st_path(w->st), key, t->ndim, VP_MAX_DIMS);
    *ndim = t->ndim;
    for (int i = 0; i < t->ndim; i++)
        shape[i] = t->shape[i];
    return VP_OK;
}

vp_status vp_build_param_load(vp_build *b, vp_gt *param, const vp_weights *w, const char *key)
{
    if (!param || !w || !key)
        return vp_error_set(VP_ERR_INVALID, "%s: param_load: missing %s", b->caller,
                            !param ? "parameter" : !w ? "weights" : "key");
    vp_build_param *p = NULL;
    for (uint32_t i = 0; i < b->n_params && !p; i++)
        if (b->params[i].t == param)
            p = &b->params[i];
    if (!p)
        return vp_error_set(VP_ERR_INVALID, "%s: param_load: %s is not a parameter", b->caller,
                            vp_gt_name(param));
    vp_status st = vp_st_check_shape(w->st, key, vp_gt_ndim(param), vp_gt_shape(param));
    if (st) {
        /* Sticky in the graph too, so that a plugin which goes on
         * building reports this, not what follows from it. */
        vp_error_wrap(st, "parameter %s", vp_gt_name(param));
        return vp_graph_fail(b->g, st, "%s", vp_error_last());
    }
    char *copy = dup_str(key);
    if (!copy)
        return vp_error_set(VP_ERR_NOMEM, "out of host memory");
    free(p->key);
    p->key = copy;
    p->w = w;
    return VP_OK;
}
