/*
 * ia3.c - the vpeft template plugin: IA3 ("(IA)^3", Liu et al. 2022,
 * "Few-Shot Parameter-Efficient Fine-Tuning is Better and Cheaper than
 * In-Context Learning"), a PEFT method that learns one scale per output
 * channel of selected linear layers:
 *
 *     y' = y * l        y (..., out) the layer's output, l (out) starts at 1
 *
 * It is small on purpose and complete on purpose: the descriptor and the
 * entry point, config fields checked and unknown ones rejected, site
 * selection as Hugging Face PEFT's IA3Config.target_modules, a trainable
 * parameter per site, and the scaling as a custom Vulkan kernel
 * (ia3_scale.comp) with its backward written in graph ops and a CPU
 * reference. Copy the directory and rename it to start your own method
 * (README.md); docs/plugin-guide.md explains each part.
 *
 * Config (one entry of the run config's "peft" list):
 *     {"plugin": "ia3",
 *      "target_modules": ["*.qkv", "*.fc2"],  globs, or one regex string
 *      "init_ia3_weights": true}              false: l ~ N(0, 1), as HF PEFT
 */
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <vpeft/vpeft.h>

#include "ia3_scale.spv.h" /* vp_spv_ia3_scale, made by vpeft-plugin.mk */

/* The host's function table, from init() until the library is unloaded. */
static const vp_host_api *H;

typedef struct ia3 {
    vp_selector *sel;
    bool init_ones;
} ia3;

enum { IA3_LOCAL_SIZE = 64, IA3_MAX_GROUPS = 65535 };

/* ---- the scale op: forward, backward, reference ---------------------------- */

static vp_status scale_backward(void *user, vp_graph *g, const vp_custom_grad *gr);
static vp_status scale_reference(void *user, const vp_custom_ref_io *io);

/* The kernel, registered in g: the first call builds it, later calls in
 * the same graph return it (the host keeps one per name and graph). */
static vp_custom_kernel *scale_kernel(vp_graph *g)
{
    vp_kernel_desc d = {
        .size = sizeof d,
        .name = "ia3.scale",
        .spirv = vp_spv_ia3_scale,
        .spirv_bytes = sizeof vp_spv_ia3_scale,
        .n_bindings = 3,                 /* x, l, out */
        .push_size = 2 * sizeof(uint32_t),
        .local_size = {IA3_LOCAL_SIZE, 1, 1},
    };
    vp_custom_kernel *k = NULL;
    return H->kernel(g, &d, &k) == VP_OK ? k : NULL;
}

/* out = x * l, row by row.   x: (rows, cols), l: (cols) -> out: (rows, cols).
 * The caller has checked rows * cols < 2^31 (the shader's index range). */
static vp_gt *scale(vp_graph *g, vp_gt *x, vp_gt *l)
{
    vp_custom_kernel *k = scale_kernel(g);
    if (!x || !l || !k)
        return NULL; /* as the host's ops: the graph holds the first error */
    const int64_t *s = H->shape(x);
    int64_t total = s[0] * s[1];
    uint32_t push[2] = {(uint32_t)total, (uint32_t)s[1]};
    /* The shader strides over the grid, so a capped grid still covers every
     * element. */
    int64_t groups = (total + IA3_LOCAL_SIZE - 1) / IA3_LOCAL_SIZE;
    if (groups < 1)
        groups = 1;
    if (groups > IA3_MAX_GROUPS)
        groups = IA3_MAX_GROUPS;
    vp_gt *in[2] = {x, l};
    vp_custom_call c = {
        .size = sizeof c,
        .kernel = k,
        .n_in = 2,
        .in = in,
        .out_ndim = 2,
        .out_shape = s,
        .push = push,
        .push_size = sizeof push,
        .groups = {(uint32_t)groups, 1, 1},
        .backward = scale_backward,
        .reference = scale_reference,
        .user = NULL,
    };
    return H->custom(g, &c);
}

/* A (1, n) row of ones, shared by every scale op of the graph that needs
 * that length: column sums are gemms against it. */
static vp_gt *ones_row(vp_graph *g, int64_t n)
{
    char name[64];
    snprintf(name, sizeof name, "ia3.ones.%lld", (long long)n);
    vp_gt *t = H->find(g, name);
    if (t)
        return t;
    float *one = malloc((size_t)(n > 0 ? n : 1) * sizeof *one);
    if (!one) {
        H->error(VP_ERR_NOMEM, "ia3: out of host memory for %s", name);
        return NULL;
    }
    for (int64_t i = 0; i < n; i++)
        one[i] = 1.0f;
    t = H->constant(g, name, 2, (int64_t[]){1, n}, one);
    free(one);
    return t;
}

/* x: (rows, cols), l: (cols), dout: (rows, cols).
 * dx = dout * l: the forward kernel again.
 * dl[c] = sum_r dout[r, c] x[r, c] = ones (1, rows) x (dout * x), as (cols). */
static vp_status scale_backward(void *user, vp_graph *g, const vp_custom_grad *gr)
{
    (void)user;
    vp_gt *x = gr->in[0], *l = gr->in[1];
    if (gr->needs[0])
        gr->din[0] = scale(g, gr->dout, l);
    if (gr->needs[1]) {
        int64_t rows = H->shape(x)[0], cols = H->shape(x)[1];
        vp_gt *ones = ones_row(g, rows);
        if (!ones && H->graph_status(g) == VP_OK)
            return VP_ERR_NOMEM; /* ones_row has set the message */
        vp_gt *sums = H->gemm(g, ones, false, H->mul(g, gr->dout, x), false, NULL);
        gr->din[1] = H->reshape(g, sums, 1, &cols);
    }
    return H->graph_status(g);
}

/* The op in double precision, for the host's reference executor. */
static vp_status scale_reference(void *user, const vp_custom_ref_io *io)
{
    (void)user;
    int64_t rows = io->in_shape[0][0], cols = io->in_shape[0][1];
    const double *x = io->in[0], *l = io->in[1];
    for (int64_t r = 0; r < rows; r++)
        for (int64_t c = 0; c < cols; c++)
            io->out[r * cols + c] = x[r * cols + c] * l[c];
    return VP_OK;
}

/* ---- the PEFT interface ------------------------------------------------------ */

static void ia3_destroy(void *self)
{
    ia3 *m = self;
    if (!m)
        return;
    if (m->sel)
        H->selector_destroy(m->sel);
    free(m);
}

static vp_status ia3_create(const vp_config *cfg, void **self)
{
    static const char *const known[] = {"plugin", "target_modules", "init_ia3_weights"};
    /* The default sites: in a ViT, each block's fused attention input
     * projection and its FFN output projection. */
    static const char *const targets[] = {"*.qkv", "*.fc2"};
    vp_status st = H->cfg_check_keys(cfg, known, sizeof known / sizeof known[0]);
    if (st != VP_OK)
        return st;
    ia3 *m = calloc(1, sizeof *m);
    if (!m)
        return H->error(VP_ERR_NOMEM, "ia3: out of host memory");
    st = H->cfg_bool(cfg, "init_ia3_weights", true, &m->init_ones);
    if (st == VP_OK)
        st = H->selector_create(cfg, "target_modules", targets,
                                sizeof targets / sizeof targets[0], &m->sel);
    if (st != VP_OK) {
        ia3_destroy(m);
        return st;
    }
    *self = m;
    return VP_OK;
}

/* At a linear site this instance selects: a scale vector <path>.ia3_l
 * (out_features), and y (..., out) -> y * l through the custom kernel on y
 * seen as (rows, out). Every other site: y unchanged. */
static vp_status ia3_attach(void *self, vp_build *b, const vp_site *site, vp_gt *x, vp_gt **y,
                            bool *attached)
{
    ia3 *m = self;
    (void)x; /* IA3 scales outputs; HF's feedforward_modules would scale x */
    if (site->kind != VP_SITE_LINEAR || !H->selector_match(m->sel, site->path))
        return VP_OK;

    vp_graph *g = H->graph(b);
    int ndim = H->ndim(*y);
    const int64_t *shape = H->shape(*y);
    int64_t cols = site->out_features, total = H->nelem(*y);
    if (H->dtype(*y) != VP_F32 || ndim < 1 || cols < 1 || shape[ndim - 1] != cols)
        return H->error(VP_ERR_SHAPE, "ia3: %s: expected a float32 output (..., %lld)",
                        site->path, (long long)cols);
    if (total > INT32_MAX)
        return H->error(VP_ERR_UNSUPPORTED,
                        "ia3: %s: %lld output elements, more than the scale kernel's 2^31 - 1",
                        site->path, (long long)total);

    size_t len = strlen(site->path) + sizeof ".ia3_l";
    char *name = malloc(len);
    if (!name)
        return H->error(VP_ERR_NOMEM, "ia3: out of host memory");
    snprintf(name, len, "%s.ia3_l", site->path);
    /* HF PEFT's init_ia3_weights = false leaves torch.randn's N(0, 1). */
    vp_init init = m->init_ones ? vp_init_ones() : vp_init_normal(0.0f, 1.0f);
    vp_gt *l = H->param(b, name, 1, &cols, &init, true);
    free(name);
    if (!l) {
        vp_status st = H->graph_status(g);
        return st != VP_OK ? st
                           : H->error(VP_ERR_INTERNAL, "ia3: %s: the host made no parameter",
                                      site->path);
    }

    int64_t flat[2] = {total / cols, cols};
    vp_gt *out = scale(g, H->reshape(g, *y, 2, flat), l);
    vp_gt *adapted = H->reshape(g, out, ndim, shape);
    vp_status st = H->graph_status(g);
    if (st != VP_OK)
        return st;
    if (!adapted)
        return H->error(VP_ERR_INTERNAL, "ia3: %s: the host returned no tensor", site->path);
    *y = adapted;
    *attached = true;
    return VP_OK;
}

static const vp_peft_iface ia3_iface = {
    .size = sizeof ia3_iface,
    .peft_type = "IA3",
    .create = ia3_create,
    .destroy = ia3_destroy,
    .attach = ia3_attach,
};

/* ---- the plugin ---------------------------------------------------------------- */

static vp_status ia3_init(const vp_host_api *host)
{
    /* Custom kernels are what this plugin cannot do without; a host that
     * lacks them is refused here, by name, rather than at the first site. */
    if (!VP_HOST_HAS(host, kernel) || !VP_HOST_HAS(host, custom))
        return host->error(VP_ERR_UNSUPPORTED, "ia3: vpeft %s has no custom kernels",
                           host->version);
    H = host;
    return VP_OK;
}

static const void *ia3_get_interface(const char *id)
{
    return strcmp(id, VP_PEFT_IFACE_ID) ? NULL : &ia3_iface;
}

VP_PLUGIN_EXPORT const vp_plugin_desc *vp_plugin_entry(void)
{
    static const vp_plugin_desc d = {
        .size = sizeof d,
        .abi_major = VP_ABI_MAJOR,
        .abi_minor = VP_ABI_MINOR,
        .name = "ia3",
        .kind = VP_PLUGIN_PEFT,
        .version = "0.1.0",
        .description = "IA3: learned per-channel scaling of linear layer outputs",
        .init = ia3_init,
        .fini = NULL,
        .get_interface = ia3_get_interface,
    };
    return &d;
}
