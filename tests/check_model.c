/*
 * The model build context behind the host table: initializers, the
 * trainable policy, sites and the PEFT calls at them, custom kernels with
 * a plugin-built backward, weights files, and the verifier that
 * `vpeft plugin-test` runs. The PEFT methods here are written against the
 * host table as a plugin would be, but live in the test (the loader has
 * its own suite).
 */
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "harness.h"
#include "io/safetensors.h"
#include "model/build.h"
#include "model/model.h"
#include "model/probe.h"
#include "model/select.h"
#include "config/config.h"
#include "model/verify.h"
#include "plugin/host.h"
#include "tests/shaders/test_rowdot.spv.h"

/* ---- initializers -------------------------------------------------------------- */

START_TEST(test_init_fill)
{
    enum { O = 64, I = 48 };
    static float w[O * I], w2[O * I];
    int64_t shape[2] = {O, I};
    vp_init k = vp_init_kaiming_uniform(sqrtf(5.0f));
    vt_ok(vp_init_fill(&k, "a.weight", 7, 2, shape, w));
    double bound = 1.0 / sqrt((double)I), mx = 0, mean = 0;
    for (int i = 0; i < O * I; i++) {
        ck_assert(fabs(w[i]) <= bound);
        mx = fabs(w[i]) > mx ? fabs(w[i]) : mx;
        mean += w[i] / (O * I);
    }
    ck_assert(mx > 0.98 * bound);       /* fills the range */
    ck_assert(fabs(mean) < 0.05 * bound);
    /* The same name and seed give the same values; another name or seed not. */
    vt_ok(vp_init_fill(&k, "a.weight", 7, 2, shape, w2));
    ck_assert(!memcmp(w, w2, sizeof w));
    vt_ok(vp_init_fill(&k, "b.weight", 7, 2, shape, w2));
    ck_assert(memcmp(w, w2, sizeof w));
    vt_ok(vp_init_fill(&k, "a.weight", 8, 2, shape, w2));
    ck_assert(memcmp(w, w2, sizeof w));

    vp_init x = vp_init_xavier_uniform(0.0f);
    vt_ok(vp_init_fill(&x, "x", 1, 2, shape, w));
    bound = sqrt(6.0 / (O + I));
    mx = 0;
    for (int i = 0; i < O * I; i++)
        mx = fabs(w[i]) > mx ? fabs(w[i]) : mx;
    ck_assert(mx <= bound && mx > 0.98 * bound);

    vp_init nrm = vp_init_normal(1.0f, 0.02f);
    vt_ok(vp_init_fill(&nrm, "n", 1, 2, shape, w));
    double m = 0, v = 0;
    for (int i = 0; i < O * I; i++)
        m += w[i] / (O * I);
    for (int i = 0; i < O * I; i++)
        v += (w[i] - m) * (w[i] - m) / (O * I);
    ck_assert_msg(fabs(m - 1.0) < 0.002 && fabs(sqrt(v) - 0.02) < 0.002, "mean %g std %g", m,
                  sqrt(v));

    vp_init lb = {VP_INIT_LINEAR_BIAS, 16.0f, 0.0f, NULL};
    vt_ok(vp_init_fill(&lb, "bias", 1, 1, (int64_t[]){O}, w));
    for (int i = 0; i < O; i++)
        ck_assert(fabs(w[i]) <= 0.25);
    vp_init c = vp_init_const(3.5f);
    vt_ok(vp_init_fill(&c, "c", 1, 1, (int64_t[]){3}, w));
    ck_assert(w[0] == 3.5f && w[2] == 3.5f);
}
END_TEST

/* ---- PEFT methods written against the host table ----------------------------- */

static const vp_host_api *H;

/* Records every site it is shown; attaches nowhere. */
typedef struct recorder {
    char path[32][96];
    vp_site site[32];
    int n;
} recorder;

static vp_status rec_attach(void *self, vp_build *b, const vp_site *site, vp_gt *x, vp_gt **y,
                            bool *attached)
{
    (void)b, (void)y, (void)attached;
    recorder *r = self;
    ck_assert_uint_eq(site->size, sizeof(vp_site));
    /* every site gives its input: a linear layer's, or (site_output_in)
     * the sub-layer's, of its output's shape */
    ck_assert(x != NULL);
    if (site->kind != VP_SITE_LINEAR)
        ck_assert_int_eq(H->nelem(x), H->nelem(*y));
    if (r->n < 32) {
        snprintf(r->path[r->n], sizeof r->path[0], "%s", site->path);
        r->site[r->n++] = *site;
    }
    return VP_OK;
}

/* LoRA on linear sites whose path ends with `suffix`: y + s * B (A x). */
typedef struct tlora {
    const char *suffix;
    int r;
    bool zero_b;
} tlora;

static bool ends_with(const char *s, const char *suf)
{
    size_t a = strlen(s), b = strlen(suf);
    return a >= b && !strcmp(s + a - b, suf);
}

static vp_status lora_attach(void *self, vp_build *b, const vp_site *site, vp_gt *x, vp_gt **y,
                             bool *attached)
{
    tlora *m = self;
    if (site->kind != VP_SITE_LINEAR || !ends_with(site->path, m->suffix))
        return VP_OK;
    vp_graph *g = H->graph(b);
    char name[160];
    vp_init ia = vp_init_kaiming_uniform(sqrtf(5.0f));
    vp_init ib = m->zero_b ? vp_init_zeros() : vp_init_normal(0.0f, 0.1f);
    snprintf(name, sizeof name, "%s.lora_A.weight", site->path);
    vp_gt *A = H->param(b, name, 2, (int64_t[]){m->r, site->in_features}, &ia, true);
    snprintf(name, sizeof name, "%s.lora_B.weight", site->path);
    vp_gt *B = H->param(b, name, 2, (int64_t[]){site->out_features, m->r}, &ib, true);
    vp_gt *d = H->linear(g, H->linear(g, x, A, NULL), B, NULL);
    *y = H->add(g, *y, H->scale(g, d, 2.0f));
    *attached = true;
    return H->graph_status(g);
}

/* Per-channel scaling of attention outputs through the custom kernel
 * tests/shaders/test_rowdot.comp: out = x * w + row_scale * row. */
typedef struct tscale {
    float row_scale;
    bool bad_backward; /* return a gradient of the wrong shape */
    vp_graph *g;       /* the graph k belongs to */
    vp_custom_kernel *k;
} tscale;

typedef struct rowdot_push {
    uint32_t rows, cols;
    float row_scale;
} rowdot_push;

static vp_gt *rowdot(tscale *m, vp_graph *g, vp_gt *x, vp_gt *w, float row_scale);

static vp_status rowdot_backward(void *user, vp_graph *g, const vp_custom_grad *gr)
{
    tscale *m = user;
    ck_assert_uint_eq(gr->n_in, 2);
    vp_gt *x = gr->in[0], *w = gr->in[1];
    if (m->bad_backward) {
        gr->din[1] = H->reshape(g, H->slice(g, gr->dout, 1, 0, 1), 1,
                                (int64_t[]){H->shape(x)[0]});
        return VP_OK;
    }
    if (gr->needs[0])
        gr->din[0] = rowdot(m, g, gr->dout, w, 0.0f);
    if (gr->needs[1]) {
        int64_t rows = H->shape(x)[0], cols = H->shape(x)[1];
        float *ones = malloc((size_t)rows * sizeof *ones);
        if (!ones)
            return H->error(VP_ERR_NOMEM, "out of memory");
        for (int64_t i = 0; i < rows; i++)
            ones[i] = 1.0f;
        char name[64];
        snprintf(name, sizeof name, "tscale.ones.%s", H->name(x));
        vp_gt *o = H->constant(g, name, 2, (int64_t[]){1, rows}, ones);
        free(ones);
        vp_gt *s = H->gemm(g, o, false, H->mul(g, gr->dout, x), false, NULL);
        gr->din[1] = H->reshape(g, s, 1, &cols);
    }
    return H->graph_status(g);
}

static vp_status rowdot_reference(void *user, const vp_custom_ref_io *io)
{
    const rowdot_push *p = user;
    (void)p;
    int64_t rows = io->in_shape[0][0], cols = io->in_shape[0][1];
    /* The row scale is not in io: the user pointer of each call holds it. */
    for (int64_t r = 0; r < rows; r++)
        for (int64_t c = 0; c < cols; c++)
            io->out[r * cols + c] = io->in[0][r * cols + c] * io->in[1][c];
    return VP_OK;
}

static vp_gt *rowdot(tscale *m, vp_graph *g, vp_gt *x, vp_gt *w, float row_scale)
{
    if (m->g != g) {
        vp_kernel_desc d = {sizeof d, "test.rowdot", vp_spv_test_rowdot, sizeof vp_spv_test_rowdot,
                            3, sizeof(rowdot_push), {64, 1, 1}};
        if (H->kernel(g, &d, &m->k))
            return NULL;
        m->g = g;
    }
    int64_t rows = H->shape(x)[0], cols = H->shape(x)[1];
    rowdot_push push = {(uint32_t)rows, (uint32_t)cols, row_scale};
    vp_custom_call c = {.size = sizeof c};
    c.kernel = m->k;
    c.n_in = 2;
    c.in = (vp_gt *[]){x, w};
    c.out_ndim = 2;
    c.out_shape = H->shape(x);
    c.push = &push;
    c.push_size = sizeof push;
    c.groups[0] = (uint32_t)((rows * cols + 63) / 64);
    c.groups[1] = c.groups[2] = 1;
    c.backward = rowdot_backward;
    /* The reference ignores the row term, so it is only given when the
     * row term is 0. */
    c.reference = row_scale == 0.0f ? rowdot_reference : NULL;
    c.user = m;
    return H->custom(g, &c);
}

static vp_status scale_attach(void *self, vp_build *b, const vp_site *site, vp_gt *x, vp_gt **y,
                              bool *attached)
{
    tscale *m = self;
    (void)x;
    if (site->kind != VP_SITE_ATTN_OUT)
        return VP_OK;
    vp_graph *g = H->graph(b);
    char name[160];
    snprintf(name, sizeof name, "%s.scale", site->path);
    vp_init init = vp_init_normal(1.0f, 0.1f);
    if (m->row_scale == 0.0f && !m->bad_backward)
        init = vp_init_ones();
    vp_gt *s = H->param(b, name, 1, &site->out_features, &init, true);
    const int64_t *shape = H->shape(*y);
    int64_t rows = H->nelem(*y) / site->out_features;
    vp_gt *y2 = H->reshape(g, *y, 2, (int64_t[]){rows, site->out_features});
    *y = H->reshape(g, rowdot(m, g, y2, s, m->row_scale), H->ndim(*y), shape);
    *attached = true;
    return H->graph_status(g);
}

/* A method beside a whole sub-layer, as parallel adapters are: at FFN
 * outputs y + x * w, x the sub-layer's input (site_output_in). */
static vp_status par_attach(void *self, vp_build *b, const vp_site *site, vp_gt *x, vp_gt **y,
                            bool *attached)
{
    (void)self;
    if (site->kind != VP_SITE_FFN_OUT)
        return VP_OK;
    ck_assert_ptr_nonnull(x);
    vp_graph *g = H->graph(b);
    char name[160];
    snprintf(name, sizeof name, "%s.par", site->path);
    vp_init init = vp_init_normal(0.0f, 0.5f);
    vp_gt *w = H->param(b, name, 1, &site->out_features, &init, true);
    *y = H->add(g, *y, H->mul(g, x, w));
    *attached = true;
    return H->graph_status(g);
}

static const vp_peft_iface par_iface = {.size = sizeof(vp_peft_iface), .attach = par_attach};
static const vp_peft_iface rec_iface = {.size = sizeof(vp_peft_iface), .attach = rec_attach};
static const vp_peft_iface lora_iface = {.size = sizeof(vp_peft_iface), .peft_type = "LORA",
                                         .attach = lora_attach};
static const vp_peft_iface scale_iface = {.size = sizeof(vp_peft_iface), .attach = scale_attach};

static const vp_probe_cfg probe_cfg = {2, 4, 8, 2, 16, 1, 3, 2};

/* Build the probe into a new build context, with PEFT instances. */
static vp_build *probe_build(vp_device *dev, const vp_build_opts *o, vp_probe *p, int n,
                             const char *const *names, const vp_peft_iface *const *ifaces,
                             void *const *selves)
{
    H = vp_host_api_get();
    vp_build *b;
    vt_ok(vp_build_create(dev, o, &b));
    for (int i = 0; i < n; i++)
        vt_ok(vp_build_add_peft(b, names[i], ifaces[i], selves[i]));
    vp_build_enter(b, "probe", false);
    vt_ok(vp_probe_build(b, &probe_cfg, p));
    return b;
}

static void probe_data(float **tokens, float **target)
{
    const vp_probe_cfg *c = &probe_cfg;
    *tokens = malloc((size_t)c->batch * c->side * c->side * c->width * sizeof(float));
    *target = malloc((size_t)c->batch * c->side * c->side * c->out * sizeof(float));
    ck_assert(*tokens && *target);
    vp_probe_data(c, 3, *tokens, *target);
}

/* Compile for training and fill the parameters. */
static void probe_compile(vp_build *b, vp_probe *p)
{
    vp_graph *g = vp_build_graph(b);
    vt_ok(vp_build_check_pefts(b));
    vt_ok(vp_graph_backward(g, p->loss));
    vp_adamw_cfg cfg = vp_adamw_default_cfg();
    cfg.weight_decay = 0.0f;
    vt_ok(vp_graph_set_optimizer(g, &cfg));
    vt_ok(vp_graph_compile(g));
    vt_ok(vp_build_init_params(b));
}

START_TEST(test_probe_sites)
{
    recorder r = {0};
    vp_probe p;
    vp_build *b = probe_build(vt_device((uint32_t)_i), NULL, &p, 1, (const char *[]){"rec"},
                              (const vp_peft_iface *[]){&rec_iface}, (void *[]){&r});
    /* 1 block x (4 linear + 2 outputs) + the deformable module and its 4
     * projections + the head; the recorder sees every site but the module. */
    ck_assert_uint_eq(vp_build_site_count(b), 12);
    ck_assert_int_eq(r.n, 11);
    ck_assert_str_eq(r.path[0], "probe.blocks.0.attn.qkv");
    ck_assert_int_eq(r.site[0].in_features, 8);
    ck_assert_int_eq(r.site[0].out_features, 24);
    ck_assert_str_eq(r.site[0].role, "qkv");
    ck_assert_ptr_null(r.site[0].module);
    ck_assert_str_eq(H->name(r.site[0].weight), "probe.blocks.0.attn.qkv.weight");
    ck_assert_str_eq(H->name(r.site[0].bias), "probe.blocks.0.attn.qkv.bias");
    ck_assert_str_eq(r.path[2], "probe.blocks.0.attn");
    ck_assert_uint_eq(r.site[2].kind, VP_SITE_ATTN_OUT);
    ck_assert_str_eq(r.path[5], "probe.blocks.0.mlp");
    ck_assert_uint_eq(r.site[5].kind, VP_SITE_FFN_OUT);
    ck_assert_str_eq(r.path[7], "probe.deform.sampling_offsets");
    ck_assert_str_eq(r.site[7].module, "probe.deform");
    ck_assert_uint_eq(r.site[7].module_kind, VP_SITE_DEFORM);
    ck_assert_str_eq(r.site[7].role, "sampling_offsets");
    ck_assert_int_eq(r.site[7].out_features, 2 * 2 * 2 * 2);
    ck_assert_str_eq(r.path[10], "probe.head");
    /* It attached nowhere: the build says so, naming it. */
    vt_expect_err(vp_build_check_pefts(b), VP_ERR_CONFIG,
                  "peft[0] (rec): selects no site of the model (it has 12 sites)");
    /* Without PEFT methods or globs, the base model trains as it says. */
    vp_graph *g = vp_build_graph(b);
    ck_assert(vp_graph_find(g, "probe.head.weight") != NULL);
    vp_build_destroy(b);
}
END_TEST

START_TEST(test_peft_gradients)
{
    vp_device *dev = vt_device((uint32_t)_i);
    tlora lq = {".qkv", 2, false}, lo = {".sampling_offsets", 2, false};
    tscale sc = {0.0f, false, NULL, NULL};
    vp_build_opts o = {.seed = 11, .freeze_base = true};
    vp_probe p;
    vp_build *b = probe_build(dev, &o, &p, 4,
                              (const char *[]){"lora_q", "lora_off", "scale", "par"},
                              (const vp_peft_iface *[]){&lora_iface, &lora_iface, &scale_iface,
                                                        &par_iface},
                              (void *[]){&lq, &lo, &sc, NULL});
    /* Only the methods' parameters train: 2 x (A, B), one scale and the
     * parallel method's w, whose gradient needs the sub-layer's input. */
    uint32_t trainable = 0;
    for (uint32_t i = 0; i < vp_build_param_count(b); i++) {
        const vp_build_param *bp = vp_build_param_at(b, i);
        vp_graph *g = vp_build_graph(b);
        (void)g;
        bool want = bp->owner != 0;
        ck_assert_msg(vp_graph_find(vp_build_graph(b), vp_gt_name(bp->t)) == bp->t, "lookup");
        trainable += want;
    }
    ck_assert_uint_eq(trainable, 6);
    probe_compile(b, &p);
    vp_graph *g = vp_build_graph(b);
    vp_graph_mem mem = vp_graph_memory(g);
    uint64_t peft_bytes = 4 * (2 * 8 + 24 * 2 + 2 * 8 + 16 * 2 + 8 + 8);
    ck_assert_uint_eq(mem.trainable, peft_bytes);
    ck_assert_uint_eq(mem.grads, peft_bytes);

    float *tokens, *target;
    probe_data(&tokens, &target);
    vp_verify r;
    vt_ok(vp_verify_graph(g, p.loss, p.output, 2, (vp_gt *[]){p.tokens, p.target},
                          (const void *[]){tokens, target}, 0, &r));
    ck_assert_msg(fabs(r.loss_dev - r.loss_ref) <= 1e-5 * fabs(r.loss_ref), "loss %g vs %g",
                  r.loss_dev, r.loss_ref);
    ck_assert_msg(r.out_err < 1e-5, "output error %g", r.out_err);
    ck_assert_uint_eq(r.params_checked, 6);
    ck_assert_msg(r.grad_err < 1e-3, "gradient error %g at %s", r.grad_err, r.grad_worst);

    /* A few AdamW steps on the methods' parameters lower the loss. */
    float first = 0, last = 0;
    for (int step = 1; step <= 15; step++) {
        vt_ok(vp_graph_run(g));
        vt_ok(vp_graph_read(g, p.loss, step == 1 ? &first : &last, sizeof first));
        vt_ok(vp_graph_step(g, 3e-2f, step));
    }
    ck_assert_msg(last < 0.9f * first, "loss %g -> %g", first, last);
    free(tokens);
    free(target);
    vp_build_destroy(b);
}
END_TEST

/* Read the probe's output for the fixed batch. */
static float *probe_output(vp_build *b, vp_probe *p)
{
    vp_graph *g = vp_build_graph(b);
    float *tokens, *target;
    probe_data(&tokens, &target);
    vt_ok(vp_graph_write(g, p->tokens, tokens, (size_t)vp_gt_nelem(p->tokens) * 4));
    vt_ok(vp_graph_write(g, p->target, target, (size_t)vp_gt_nelem(p->target) * 4));
    vt_ok(vp_graph_run(g));
    float *out = malloc((size_t)vp_gt_nelem(p->output) * 4);
    ck_assert_ptr_nonnull(out);
    vt_ok(vp_graph_read(g, p->output, out, (size_t)vp_gt_nelem(p->output) * 4));
    free(tokens);
    free(target);
    return out;
}

START_TEST(test_identity_at_init)
{
    vp_device *dev = vt_device((uint32_t)_i);
    vp_build_opts o = {.seed = 5, .freeze_base = true};
    vp_probe pb, pa;
    vp_build *base = probe_build(dev, &(vp_build_opts){.seed = 5}, &pb, 0, NULL, NULL, NULL);
    probe_compile(base, &pb);
    tlora l = {".fc2", 4, true};
    tscale sc = {0.0f, false, NULL, NULL};
    vp_build *ad = probe_build(dev, &o, &pa, 2, (const char *[]){"lora", "scale"},
                               (const vp_peft_iface *[]){&lora_iface, &scale_iface},
                               (void *[]){&l, &sc});
    probe_compile(ad, &pa);
    /* Base parameters are seeded by name: the adapted model starts from the
     * same weights, and B = 0, scale = 1 keep its function exactly. */
    float *y0 = probe_output(base, &pb), *y1 = probe_output(ad, &pa);
    int64_t n = vp_gt_nelem(pb.output);
    for (int64_t i = 0; i < n; i++)
        ck_assert_msg(y0[i] == y1[i], "output %lld: %.9g vs %.9g", (long long)i, y0[i], y1[i]);
    free(y0);
    free(y1);
    vp_build_destroy(base);
    vp_build_destroy(ad);
}
END_TEST

START_TEST(test_custom_row_term)
{
    /* The row term reaches the device (the push constants are copied), and
     * a graph whose custom op has no reference says so. */
    vp_device *dev = vt_device((uint32_t)_i);
    H = vp_host_api_get();
    vp_graph *g;
    vt_ok(vp_graph_create(dev, &g));
    tscale m = {0.5f, false, NULL, NULL};
    vp_gt *x = vp_g_input(g, "x", 2, (int64_t[]){3, 5});
    vp_gt *w = vp_g_param(g, "w", 1, (int64_t[]){5}, true);
    vp_gt *y = rowdot(&m, g, x, w, 0.5f);
    ck_assert_ptr_nonnull(y);
    vp_g_keep(y);
    vt_ok(vp_graph_compile(g));
    float xv[15], wv[5] = {1, 2, 3, 4, 5}, yv[15];
    vt_rand(xv, 15, 1);
    vt_ok(vp_graph_write(g, x, xv, sizeof xv));
    vt_ok(vp_graph_write(g, w, wv, sizeof wv));
    vt_ok(vp_graph_run(g));
    vt_ok(vp_graph_read(g, y, yv, sizeof yv));
    for (int i = 0; i < 15; i++)
        ck_assert_float_eq_tol(yv[i], xv[i] * wv[i % 5] + 0.5f * (float)(i / 5), 1e-6f);
    vp_graph_ref *ref;
    vt_ok(vp_graph_ref_create(g, &ref));
    vt_expect_err(vp_graph_ref_forward(ref), VP_ERR_UNSUPPORTED,
                  "reference node 0 (test.rowdot): custom op test.rowdot has no CPU reference");
    vp_graph_ref_destroy(ref);
    vp_graph_destroy(g);
}
END_TEST

START_TEST(test_custom_errors)
{
    vp_device *dev = vt_device((uint32_t)_i);
    H = vp_host_api_get();
    vp_graph *g;
    vp_custom_kernel *k;
    uint32_t junk[8] = {0x12345678};
    vp_kernel_desc d = {sizeof d, "t.bad", junk, sizeof junk, 3, 12, {64, 1, 1}};
    vt_ok(vp_graph_create(dev, &g));
    vt_expect_err(vp_graph_kernel(g, &d, &k), VP_ERR_INVALID,
                  "custom kernel t.bad: the code is not SPIR-V (32 bytes, wrong magic number)");
    vt_expect_err(vp_graph_status(g), VP_ERR_INVALID,
                  "custom kernel t.bad: the code is not SPIR-V (32 bytes, wrong magic number)");
    vp_graph_destroy(g);

    d.spirv = vp_spv_test_rowdot;
    d.spirv_bytes = sizeof vp_spv_test_rowdot;
    d.n_bindings = 9;
    vt_ok(vp_graph_create(dev, &g));
    vt_expect_err(vp_graph_kernel(g, &d, &k), VP_ERR_INVALID,
                  "custom kernel t.bad: 9 bindings, vpeft allows 1 to 8");
    vp_graph_destroy(g);

    d.n_bindings = 3;
    d.push_size = 130;
    vt_ok(vp_graph_create(dev, &g));
    vt_expect_err(vp_graph_kernel(g, &d, &k), VP_ERR_INVALID,
                  "custom kernel t.bad: 130 bytes of push constants; vpeft allows a multiple "
                  "of 4 up to 128");
    vp_graph_destroy(g);

    d.size = 8;
    vt_ok(vp_graph_create(dev, &g));
    ck_assert_int_eq(vp_graph_kernel(g, &d, &k), VP_ERR_ABI);
    vp_graph_destroy(g);

    /* A call that does not fit its kernel. */
    d.size = sizeof d;
    d.push_size = 12;
    vt_ok(vp_graph_create(dev, &g));
    vt_ok(vp_graph_kernel(g, &d, &k));
    /* The same name again: the same kernel; another kernel under it: no. */
    vp_custom_kernel *k2;
    vt_ok(vp_graph_kernel(g, &d, &k2));
    ck_assert_ptr_eq(k, k2);
    vp_gt *x = vp_g_input(g, "x", 2, (int64_t[]){3, 5});
    vp_custom_call c = {.size = sizeof c};
    c.kernel = k;
    c.n_in = 1;
    c.in = &x;
    c.out_ndim = 2;
    c.out_shape = vp_gt_shape(x);
    c.groups[0] = c.groups[1] = c.groups[2] = 1;
    ck_assert_ptr_null(vp_g_custom(g, &c));
    vt_expect_err(vp_graph_status(g), VP_ERR_INVALID,
                  "custom op t.bad: 1 inputs, the kernel binds 3 buffers (the inputs, then the "
                  "output)");
    vp_graph_destroy(g);

    vt_ok(vp_graph_create(dev, &g));
    vt_ok(vp_graph_kernel(g, &d, &k));
    d.local_size[0] = 32;
    vt_expect_err(vp_graph_kernel(g, &d, &k2), VP_ERR_INVALID,
                  "custom kernel t.bad: another kernel of that name is registered in this graph");
    vp_graph_destroy(g);
    d.local_size[0] = 64;

    vt_ok(vp_graph_create(dev, &g));
    vt_ok(vp_graph_kernel(g, &d, &k));
    x = vp_g_input(g, "x", 2, (int64_t[]){3, 5});
    c.kernel = k;
    c.n_in = 2;
    c.in = (vp_gt *[]){x, x};
    c.push_size = 4;
    c.push = junk;
    ck_assert_ptr_null(vp_g_custom(g, &c));
    vt_expect_err(vp_graph_status(g), VP_ERR_INVALID,
                  "custom op t.bad: 4 bytes of push constants, the kernel takes 12");
    vp_graph_destroy(g);

    /* A backward that returns a gradient of the wrong shape. */
    vt_ok(vp_graph_create(dev, &g));
    tscale m = {0.0f, true, NULL, NULL};
    x = vp_g_input(g, "x", 2, (int64_t[]){3, 5});
    vp_gt *w = vp_g_param(g, "w", 1, (int64_t[]){5}, true);
    vp_gt *loss = vp_g_sum(g, rowdot(&m, g, x, w, 0.0f));
    vt_expect_err(vp_graph_backward(g, loss), VP_ERR_SHAPE,
                  "custom op test.rowdot: backward gave a gradient (3) for input 1, which is (5)");
    vp_graph_destroy(g);
}
END_TEST

START_TEST(test_trainable_globs)
{
    vp_probe p;
    const char *globs[] = {"probe.head.*", "probe.blocks.*.norm1.weight"};
    vp_build_opts o = {.seed = 1, .trainable = globs, .n_trainable = 2, .freeze_base = true};
    vp_build *b = probe_build(vt_device((uint32_t)_i), &o, &p, 0, NULL, NULL, NULL);
    vp_graph *g = vp_build_graph(b);
    vt_ok(vp_graph_backward(g, p.loss));
    for (uint32_t i = 0; i < vp_build_param_count(b); i++) {
        const vp_build_param *bp = vp_build_param_at(b, i);
        const char *n = vp_gt_name(bp->t);
        bool want = !strncmp(n, "probe.head.", 11) || !strcmp(n, "probe.blocks.0.norm1.weight");
        ck_assert_msg((vp_g_grad(bp->t) != NULL) == want, "%s", n);
    }
    vp_build_destroy(b);
}
END_TEST

START_TEST(test_weights)
{
    vp_device *dev = vt_device((uint32_t)_i);
    char dir[] = "/tmp/vpeft-model-XXXXXX", path[64], path2[64];
    ck_assert_ptr_nonnull(mkdtemp(dir));
    snprintf(path, sizeof path, "%s/w.safetensors", dir);
    snprintf(path2, sizeof path2, "%s/missing.safetensors", dir);
    float hw[3 * 8];
    for (int i = 0; i < 24; i++)
        hw[i] = (float)i * 0.25f;
    vp_st_entry e[2] = {{"head.w", VP_ST_F32, 2, (int64_t[]){3, 8}, hw},
                        {"head.w.wrong", VP_ST_F32, 2, (int64_t[]){8, 3}, hw}};
    vt_ok(vp_st_write(path, e, 2, NULL, 0));

    vp_probe p;
    vp_build *b = probe_build(dev, NULL, &p, 0, NULL, NULL, NULL);
    vp_weights *w, *w2;
    vt_ok(vp_build_weights_open(b, path, &w));
    vt_ok(vp_build_weights_open(b, path, &w2));
    ck_assert_ptr_eq(w, w2); /* opened once */
    ck_assert_uint_eq(vp_weights_count(w), 2);
    ck_assert_str_eq(vp_weights_key(w, 0), "head.w");
    int nd;
    int64_t shape[VP_MAX_DIMS];
    vt_ok(vp_weights_shape(w, "head.w.wrong", &nd, shape));
    ck_assert(nd == 2 && shape[0] == 8 && shape[1] == 3);
    char msg[256];
    snprintf(msg, sizeof msg, "%s: no tensor \"nope\"", path);
    vt_expect_err(vp_weights_shape(w, "nope", &nd, shape), VP_ERR_NOT_FOUND, msg);
    vp_graph *g = vp_build_graph(b);
    vp_gt *hwt = vp_graph_find(g, "probe.head.weight");
    snprintf(msg, sizeof msg, "parameter probe.head.weight: %s: tensor \"head.w.wrong\" has shape "
             "(8, 3), expected (3, 8)", path);
    vt_ok(vp_build_param_load(b, hwt, w, "head.w"));
    ck_assert_int_ne(vp_build_weights_open(b, path2, &w2), VP_OK);
    ck_assert_ptr_nonnull(strstr(vp_error_last(), "missing.safetensors"));
    probe_compile(b, &p);
    float got[24];
    vt_ok(vp_graph_read(g, hwt, got, sizeof got));
    ck_assert(!memcmp(got, hw, sizeof hw));
    vp_build_destroy(b);

    /* A shape mismatch fails the call and the build. */
    b = probe_build(dev, NULL, &p, 0, NULL, NULL, NULL);
    vt_ok(vp_build_weights_open(b, path, &w));
    hwt = vp_graph_find(vp_build_graph(b), "probe.head.weight");
    vt_expect_err(vp_build_param_load(b, hwt, w, "head.w.wrong"), VP_ERR_SHAPE, msg);
    vt_expect_err(vp_graph_status(vp_build_graph(b)), VP_ERR_SHAPE, msg);
    vp_build_destroy(b);
    unlink(path);
    rmdir(dir);
}
END_TEST

START_TEST(test_site_errors)
{
    vp_device *dev = vt_device((uint32_t)_i);
    H = vp_host_api_get();
    vp_build *b;
    vt_ok(vp_build_create(dev, NULL, &b));
    vp_build_enter(b, "vit", false);
    vp_graph *g = vp_build_graph(b);
    vp_gt *x = H->input(g, "x", 2, (int64_t[]){2, 4});
    ck_assert_ptr_nonnull(H->site_linear(b, "backbone.fc", x, 3, true, NULL, NULL));
    ck_assert_ptr_null(H->site_linear(b, "backbone.fc", x, 3, true, NULL, NULL));
    vt_expect_err(H->graph_status(g), VP_ERR_INVALID,
                  "parameter backbone.fc.weight: a tensor of that name exists");
    vp_build_destroy(b);

    vt_ok(vp_build_create(dev, NULL, &b));
    vp_build_enter(b, "vit", false);
    g = vp_build_graph(b);
    x = H->input(g, "x", 2, (int64_t[]){2, 4});
    vt_expect_err(H->site_module(b, "m", VP_SITE_LINEAR), VP_ERR_INVALID,
                  "vit: site_module needs a path and the kind VP_SITE_DEFORM (got 1)");
    vp_build_destroy(b);

    vt_ok(vp_build_create(dev, NULL, &b));
    vp_build_enter(b, "vit", false);
    g = vp_build_graph(b);
    x = H->input(g, "x", 2, (int64_t[]){2, 4});
    ck_assert_ptr_nonnull(H->site_output(b, "backbone.attn", VP_SITE_ATTN_OUT, x));
    ck_assert_ptr_null(H->site_output(b, "backbone.attn", VP_SITE_ATTN_OUT, x));
    vt_expect_err(H->graph_status(g), VP_ERR_INVALID, "vit: site backbone.attn is declared twice");
    vp_build_destroy(b);

    /* The sub-layer's input must have its output's shape. */
    vt_ok(vp_build_create(dev, NULL, &b));
    vp_build_enter(b, "vit", false);
    g = vp_build_graph(b);
    x = H->input(g, "x", 2, (int64_t[]){2, 4});
    vp_gt *x3 = H->input(g, "x3", 2, (int64_t[]){2, 3});
    ck_assert_ptr_null(H->site_output_in(b, "backbone.mlp", VP_SITE_FFN_OUT, x3, x));
    vt_expect_err(H->graph_status(g), VP_ERR_SHAPE, "vit: site_output_in at backbone.mlp: the "
                  "sub-layer's input x3 must have its output x's shape");
    vp_build_destroy(b);

    /* Named outputs: found by name, kept, unique. */
    vt_ok(vp_build_create(dev, NULL, &b));
    vp_build_enter(b, "vit", false);
    g = vp_build_graph(b);
    x = H->input(g, "x", 2, (int64_t[]){2, 4});
    vp_gt *y = H->gelu(g, x);
    ck_assert_ptr_eq(H->output(b, "backbone.y", y), y);
    ck_assert_ptr_eq(vp_build_output_find(b, "backbone.y"), y);
    ck_assert_uint_eq(vp_build_output_count(b), 1);
    ck_assert_ptr_null(H->output(b, "backbone.y", x));
    vt_expect_err(H->graph_status(g), VP_ERR_INVALID, "vit: output backbone.y is declared twice");
    vp_build_destroy(b);
}
END_TEST

START_TEST(test_selectors)
{
    const char *text = "{\"a\": [\"qkv\", \"blocks.1.*\"], "
                       "\"b\": \"probe\\\\.blocks\\\\.[0-9]+\\\\.attn\\\\.(qkv|proj)\", "
                       "\"c\": [], \"d\": 3, \"e\": \"([\", \"f\": [\"x\", 2]}";
    vp_config *c;
    vt_ok(vp_cfg_parse(text, strlen(text), "sel.json", &c));
    vp_selector *s;
    vt_ok(vp_selector_create(c, "a", NULL, 0, &s));
    ck_assert(vp_selector_match(s, "probe.blocks.0.attn.qkv"));  /* a last component */
    ck_assert(vp_selector_match(s, "qkv"));
    ck_assert(vp_selector_match(s, "probe.blocks.1.mlp.fc1"));   /* last components, a glob */
    ck_assert(!vp_selector_match(s, "probe.blocks.0.mlp.fc1"));
    ck_assert(!vp_selector_match(s, "probe.qkvx"));
    ck_assert(!vp_selector_match(s, "probe.xqkv"));
    vp_selector_destroy(s);
    vt_ok(vp_selector_create(c, "b", NULL, 0, &s));
    ck_assert(vp_selector_match(s, "probe.blocks.12.attn.proj"));
    ck_assert(!vp_selector_match(s, "xprobe.blocks.1.attn.qkv")); /* whole path only */
    ck_assert(!vp_selector_match(s, "probe.blocks.1.attn.qkv.lora"));
    vp_selector_destroy(s);
    vt_ok(vp_selector_create(c, "absent", (const char *[]){"*.fc2"}, 1, &s));
    ck_assert(vp_selector_match(s, "probe.blocks.0.mlp.fc2"));
    ck_assert(!vp_selector_match(s, "probe.blocks.0.mlp.fc1"));
    vp_selector_destroy(s);
    vt_ok(vp_selector_create(c, "absent", NULL, 0, &s));
    ck_assert(vp_selector_match(s, "anything"));
    vp_selector_destroy(s);
    vt_expect_err(vp_selector_create(c, "c", NULL, 0, &s), VP_ERR_CONFIG,
                  "sel.json: c: is empty: it selects no site");
    vt_expect_err(vp_selector_create(c, "d", NULL, 0, &s), VP_ERR_CONFIG,
                  "sel.json: d: expected a list of names or globs, or one regular expression "
                  "string");
    ck_assert_int_eq(vp_selector_create(c, "e", NULL, 0, &s), VP_ERR_CONFIG);
    const char *re_msg = "sel.json: e: \"([\" is not a POSIX extended regular expression: ";
    ck_assert_msg(!strncmp(vp_error_last(), re_msg, strlen(re_msg)), "%s", vp_error_last());
    vt_expect_err(vp_selector_create(c, "f", NULL, 0, &s), VP_ERR_CONFIG,
                  "sel.json: f[1]: expected a string, got a number");
    ck_assert_ptr_null(s);
    vp_cfg_free(c);
}
END_TEST

/* ---- model assembly from a config, with real plugins ------------------------- */

static vp_config *parse(const char *text)
{
    vp_config *c;
    vt_ok(vp_cfg_parse(text, strlen(text), "m.json", &c));
    return c;
}

static const char *toy_model =
    "\"model\": {\"backbone\": {\"plugin\": \"toybackbone\", \"width\": 8},"
    "            \"head\": {\"plugin\": \"toyhead\", \"classes\": 3}}";

/* One step's data: random images, labels 0, 1, 2, ... */
static void toy_batch(vp_model *m, uint64_t seed)
{
    vp_graph *g = vp_model_graph(m);
    vp_gt *img = vp_model_image(m);
    size_t n = (size_t)vp_gt_nelem(img);
    float *x = malloc(n * sizeof *x);
    ck_assert_ptr_nonnull(x);
    vt_rand(x, n, seed);
    vt_ok(vp_graph_write(g, img, x, n * sizeof *x));
    free(x);
    vp_gt *t = vp_graph_find(g, "target.labels");
    if (t) {
        int32_t labels[2] = {0, 2};
        vt_ok(vp_graph_write(g, t, labels, sizeof labels));
    }
}

START_TEST(test_model_train)
{
    char text[512];
    snprintf(text, sizeof text, "{%s, \"train\": {\"seed\": 1}}", toy_model);
    vp_config *c = parse(text);
    vp_model *m;
    vt_ok(vp_model_create(vt_device((uint32_t)_i), c, &(vp_model_opts){.batch = 2, .train = true}, &m));
    vp_graph *g = vp_model_graph(m);
    vp_gt *logits = vp_model_output(m, "logits");
    ck_assert_ptr_nonnull(logits);
    ck_assert_ptr_null(vp_model_output(m, "nope"));
    ck_assert(vp_gt_shape(logits)[0] == 2 && vp_gt_shape(logits)[1] == 3);
    toy_batch(m, 4);
    float first = 0, last = 0;
    for (int step = 1; step <= 20; step++) {
        vt_ok(vp_graph_run(g));
        vt_ok(vp_graph_read(g, vp_model_loss(m), step == 1 ? &first : &last, sizeof first));
        vt_ok(vp_graph_step(g, 1e-2f, step));
    }
    ck_assert_msg(last < 0.5f * first, "loss %g -> %g", first, last);
    /* No PEFT method and no globs: every parameter trained. */
    vp_graph_mem mem = vp_graph_memory(g);
    ck_assert_uint_eq(mem.frozen, 0);
    vp_model_destroy(m);

    /* Head-only: the classifier alone has gradients and moments. */
    snprintf(text, sizeof text, "{%s, \"train\": {\"trainable\": [\"head.*\"]}}", toy_model);
    vp_cfg_free(c);
    c = parse(text);
    vt_ok(vp_model_create(vt_device((uint32_t)_i), c, &(vp_model_opts){.batch = 2, .train = true}, &m));
    mem = vp_graph_memory(vp_model_graph(m));
    ck_assert_msg(mem.trainable >= 4 * (3 * 8 + 3) && mem.trainable < 4 * (3 * 8 + 3) + 64,
                  "%llu trainable bytes", (unsigned long long)mem.trainable);
    ck_assert_uint_eq(mem.grads, mem.trainable);
    vp_model_destroy(m);
    vp_cfg_free(c);
}
END_TEST

/* Build from text and expect a failure whose message starts with want. */
static void expect_model_err(int dev, const char *text, vp_status code, const char *want)
{
    vp_config *c = parse(text);
    vp_model *m = (vp_model *)&m;
    ck_assert_int_eq(vp_model_create(vt_device((uint32_t)dev), c, &(vp_model_opts){.batch = 2, .train = true}, &m),
                     code);
    ck_assert_ptr_null(m);
    ck_assert_msg(!strncmp(vp_error_last(), want, strlen(want)), "got \"%s\", want \"%s...\"",
                  vp_error_last(), want);
    ck_assert_ptr_null(strchr(vp_error_last(), '\n'));
    vp_cfg_free(c);
}

START_TEST(test_model_errors)
{
    char text[512];
    expect_model_err(_i, "{}", VP_ERR_CONFIG, "m.json: model: missing: the backbone and head");
    expect_model_err(_i, "{\"model\": {\"backbone\": {\"plugin\": \"nosuch\"}}}", VP_ERR_NOT_FOUND,
                     "m.json: model.backbone: nosuch: cannot find vpeft-nosuch.so in ");
    expect_model_err(_i, "{\"model\": {\"backbone\": {\"width\": 8}}}", VP_ERR_CONFIG,
                     "m.json: model.backbone.plugin: missing: which backbone plugin to use");
    vp_config *c = parse("{\"model\": {\"backbone\": {\"plugin\": \"toyhead\"}}}");
    vp_model *m;
    ck_assert_int_eq(vp_model_create(vt_device((uint32_t)_i), c, &(vp_model_opts){.batch = 2, .train = true}, &m),
                     VP_ERR_INVALID);
    ck_assert_ptr_nonnull(strstr(vp_error_last(), ": is a head plugin, expected a backbone"));
    vp_cfg_free(c);
    expect_model_err(_i, "{\"model\": {\"backbone\": {\"plugin\": \"toybackbone\", \"widht\": 8},"
                         "\"head\": {\"plugin\": \"toyhead\"}}}", VP_ERR_CONFIG,
                     "toybackbone: m.json: model.backbone.widht: unknown field, did you mean "
                     "'width'?");
    expect_model_err(_i, "{\"model\": {\"backbone\": {\"plugin\": \"toybackbone\"},"
                         "\"head\": {\"plugin\": \"toyhead\", \"classes\": 1}}}", VP_ERR_CONFIG,
                     "toyhead: m.json: model.head.classes: must be at least 2, got 1");
    snprintf(text, sizeof text, "{%s, \"peft\": [{\"plugin\": \"good\"}]}", toy_model);
    expect_model_err(_i, text, VP_ERR_CONFIG,
                     "peft[0] (good): selects no site of the model (it has 7 sites)");
    snprintf(text, sizeof text, "{%s, \"peft\": [{\"r\": 8}]}", toy_model);
    expect_model_err(_i, text, VP_ERR_CONFIG,
                     "m.json: peft[0].plugin: missing: which peft plugin to use");
    snprintf(text, sizeof text, "{%s, \"peft\": {\"plugin\": \"good\"}}", toy_model);
    expect_model_err(_i, text, VP_ERR_CONFIG, "m.json: peft: expected a list of PEFT methods");
}
END_TEST

START_TEST(test_model_weights)
{
    vp_device *dev = vt_device((uint32_t)_i);
    char dir[] = "/tmp/vpeft-weights-XXXXXX", path[96], text[768], want[512];
    ck_assert_ptr_nonnull(mkdtemp(dir));
    snprintf(path, sizeof path, "%s/toy.safetensors", dir);
    /* A model's backbone, saved under the keys the plugin reads. */
    char src[512];
    snprintf(src, sizeof src, "{%s, \"train\": {\"seed\": 3}}", toy_model);
    vp_config *c = parse(src);
    vp_model *m;
    vt_ok(vp_model_create(dev, c, &(vp_model_opts){.batch = 2}, &m));
    const vp_build *b = vp_model_build(m);
    vp_st_entry e[32];
    float *vals[32];
    int64_t shapes[32][4];
    char names[32][96];
    size_t n = 0;
    for (uint32_t i = 0; i < vp_build_param_count(b); i++) {
        vp_gt *t = vp_build_param_at(b, i)->t;
        if (strncmp(vp_gt_name(t), "backbone.", 9))
            continue;
        ck_assert_uint_lt(n, 32);
        vals[n] = malloc((size_t)vp_gt_nelem(t) * 4);
        vt_ok(vp_graph_read(vp_model_graph(m), t, vals[n], (size_t)vp_gt_nelem(t) * 4));
        memcpy(shapes[n], vp_gt_shape(t), sizeof shapes[n]);
        snprintf(names[n], sizeof names[n], "%s", vp_gt_name(t) + 9);
        e[n] = (vp_st_entry){names[n], VP_ST_F32, vp_gt_ndim(t), shapes[n], vals[n]};
        n++;
    }
    vt_ok(vp_st_write(path, e, n, NULL, 0));
    vp_model_destroy(m);
    vp_cfg_free(c);

    /* Loaded with another seed, the backbone has the file's values. */
    snprintf(text, sizeof text, "{\"model\": {\"backbone\": {\"plugin\": \"toybackbone\", "
             "\"weights\": \"%s\"}, \"head\": {\"plugin\": \"toyhead\"}}, \"train\": {\"seed\": 9}}",
             path);
    c = parse(text);
    vt_ok(vp_model_create(dev, c, &(vp_model_opts){.batch = 2}, &m));
    vp_graph *g = vp_model_graph(m);
    for (size_t i = 0; i < n; i++) {
        char name[96];
        snprintf(name, sizeof name, "backbone.%s", e[i].name);
        vp_gt *t = vp_graph_find(g, name);
        size_t bytes = (size_t)vp_gt_nelem(t) * 4;
        float *got = malloc(bytes);
        vt_ok(vp_graph_read(g, t, got, bytes));
        ck_assert_msg(!memcmp(got, vals[i], bytes), "%s", name);
        free(got);
    }
    vp_model_destroy(m);
    vp_cfg_free(c);

    /* A tensor of the wrong shape, and one the model does not have. */
    int64_t wrong[4] = {8, 3, 2, 2};
    e[0].shape = wrong;
    vt_ok(vp_st_write(path, e, n, NULL, 0));
    c = parse(text);
    snprintf(want, sizeof want, "toybackbone: build: parameter backbone.patch.weight: %s: tensor "
             "\"patch.weight\" has shape (8, 3, 2, 2), expected (8, 3, 4, 4)", path);
    ck_assert_str_eq(e[0].name, "patch.weight");
    ck_assert_int_eq(vp_model_create(dev, c, &(vp_model_opts){.batch = 2}, &m), VP_ERR_SHAPE);
    ck_assert_str_eq(vp_error_last(), want);
    vp_cfg_free(c);
    e[0].shape = shapes[0];
    e[n] = (vp_st_entry){"blocks.0.extra", VP_ST_F32, 1, shapes[0], vals[0]};
    vt_ok(vp_st_write(path, e, n + 1, NULL, 0));
    c = parse(text);
    snprintf(want, sizeof want, "toybackbone: build: %s: tensor \"blocks.0.extra\" is "
             "not a parameter of this model", path);
    ck_assert_int_eq(vp_model_create(dev, c, &(vp_model_opts){.batch = 2}, &m), VP_ERR_INVALID);
    ck_assert_str_eq(vp_error_last(), want);
    vp_cfg_free(c);
    for (size_t i = 0; i < n; i++)
        free(vals[i]);
    unlink(path);
    rmdir(dir);
}
END_TEST

/* ---- vpeft info and vpeft embed ------------------------------------------------- */

static const char *bin(void)
{
    const char *b = getenv("VPEFT_BIN");
    ck_assert_msg(b != NULL, "VPEFT_BIN is not set (run through make check)");
    return b;
}

START_TEST(test_cli_info)
{
    char dir[] = "/tmp/vpeft-info-XXXXXX", path[96];
    ck_assert_ptr_nonnull(mkdtemp(dir));
    snprintf(path, sizeof path, "%s/m.json", dir);
    FILE *f = fopen(path, "w");
    ck_assert_ptr_nonnull(f);
    fprintf(f, "{%s, \"peft\": [{\"plugin\": \"ia3\", \"target_modules\": [\"qkv\"]}]}", toy_model);
    fclose(f);
    ck_assert_int_eq(vt_sh("%s info %s --sites", bin(), path), 0);
    /* qkv (8 -> 24): 24 scales; the toy model 1,019 + 24 parameters. */
    vt_assert_has(vt_out, "trainable params: 24 || all params: 1,043 || trainable%: 2.3011\n");
    vt_assert_has(vt_out, "model: toybackbone (backbone) + toyhead (head); peft: ia3\n");
    vt_assert_has(vt_out, "  blocks.0 ");
    vt_assert_has(vt_out, "backbone.blocks.0.attn.qkv ");
    ck_assert_ptr_nonnull(strstr(vt_out, "linear 8->24"));
    ck_assert_ptr_nonnull(strstr(strstr(vt_out, "backbone.blocks.0.attn.qkv "), " ia3\n"));
    ck_assert_int_eq(vt_sh("%s info %s --depth 1", bin(), path), 0);
    vt_assert_has(vt_out, "backbone ");
    ck_assert_ptr_null(strstr(vt_out, "  blocks.0"));
    ck_assert_int_eq(vt_sh("%s info %s/none.json", bin(), dir), 1);
    vt_assert_has(vt_err, "none.json: cannot read: No such file or directory\n");
    ck_assert_int_eq(vt_sh("%s info", bin()), 2);
    ck_assert_int_eq(vt_sh("%s info %s --depth x", bin(), path), 2);
    vt_assert_has(vt_err, "vpeft info: --depth x: expected 0 to 8\n");
    vt_rm_rf(dir);
}
END_TEST

START_TEST(test_cli_embed)
{
    vp_device *dev = vt_device((uint32_t)_i);
    char dir[] = "/tmp/vpeft-embed-XXXXXX", cfg[96], px[96], out[96], img[96];
    ck_assert_ptr_nonnull(mkdtemp(dir));
    snprintf(cfg, sizeof cfg, "%s/m.json", dir);
    snprintf(px, sizeof px, "%s/px.safetensors", dir);
    snprintf(out, sizeof out, "%s/out.safetensors", dir);
    snprintf(img, sizeof img, "%s/bad.png", dir);
    char text[512];
    snprintf(text, sizeof text, "{%s, \"train\": {\"seed\": 4}}", toy_model);
    FILE *f = fopen(cfg, "w");
    ck_assert_ptr_nonnull(f);
    fputs(text, f);
    fclose(f);
    float pixels[3 * 8 * 8];
    vt_rand(pixels, 3 * 8 * 8, 2);
    vp_st_entry e = {"pixel_values", VP_ST_F32, 4, (int64_t[]){1, 3, 8, 8}, pixels};
    vt_ok(vp_st_write(px, &e, 1, NULL, 0));
    ck_assert_int_eq(vt_sh("%s embed --config %s --image %s --out %s", bin(), cfg, px, out), 0);
    vt_assert_has(vt_out, "backbone.features.0 (1, 2, 2, 8)");

    /* The file holds what the backbone computes in this process. */
    vp_config *c = parse(text);
    vp_model *m;
    vt_ok(vp_model_create(dev, c, &(vp_model_opts){.batch = 1, .backbone_only = true}, &m));
    vt_ok(vp_graph_write(vp_model_graph(m), vp_model_image(m), pixels, sizeof pixels));
    vt_ok(vp_graph_run(vp_model_graph(m)));
    vp_gt *maps[VP_MAX_LEVELS];
    ck_assert_uint_eq(vp_model_features(m, maps), 1);
    float want[32], got[32];
    vt_ok(vp_graph_read(vp_model_graph(m), maps[0], want, sizeof want));
    vp_st *st;
    vt_ok(vp_st_open(out, &st));
    vt_ok(vp_st_read_f32(st, "backbone.features.0", got, 32));
    ck_assert_str_eq(vp_st_meta(st, "config"), cfg);
    vp_st_close(st);
    for (int i = 0; i < 32; i++)
        ck_assert_float_eq_tol(got[i], want[i], 1e-6f);
    vp_model_destroy(m);
    vp_cfg_free(c);

    /* A bad image: one line, exit 2 (bad input), and no output file. */
    unlink(out);
    f = fopen(img, "w");
    ck_assert_ptr_nonnull(f);
    fputs("not an image", f);
    fclose(f);
    ck_assert_int_eq(vt_sh("%s embed --config %s --image %s --out %s", bin(), cfg, img, out), 2);
    char want_err[256];
    snprintf(want_err, sizeof want_err, "vpeft: %s: not a PNG or JPEG image\n", img);
    ck_assert_str_eq(vt_err, want_err);
    ck_assert_int_ne(access(out, F_OK), 0);
    ck_assert_int_eq(vt_sh("%s embed --config %s --image %s", bin(), cfg, px), 2);
    ck_assert_int_eq(vt_sh("%s embed --config %s --image %s --out %s --std 1,0,1", bin(), cfg,
                           px, out), 2);
    vt_rm_rf(dir);
}
END_TEST

int main(void)
{
    /* The toy model's plugins and the loader's fixtures (this suite is
     * <build>/obj/tests/check_model). */
    char exe[4096], path[8300];
    ssize_t len = readlink("/proc/self/exe", exe, sizeof exe - 1);
    if (len <= 0)
        return 1;
    exe[len] = '\0';
    *strrchr(exe, '/') = '\0';
    snprintf(path, sizeof path, "%s/plugins/m:%s/plugins/a", exe, exe);
    setenv("VPEFT_PLUGIN_PATH", path, 1);
    Suite *s = suite_create("model");
    TCase *tc = vt_tcase("model");
    tcase_add_test(tc, test_init_fill);
    tcase_add_test(tc, test_selectors);
    vt_add_per_device(tc, test_probe_sites, NULL);
    vt_add_per_device(tc, test_peft_gradients, NULL);
    vt_add_per_device(tc, test_identity_at_init, NULL);
    vt_add_per_device(tc, test_custom_row_term, NULL);
    vt_add_per_device(tc, test_custom_errors, NULL);
    vt_add_per_device(tc, test_trainable_globs, NULL);
    vt_add_per_device(tc, test_weights, NULL);
    vt_add_per_device(tc, test_site_errors, NULL);
    vt_add_per_device(tc, test_model_train, NULL);
    vt_add_per_device(tc, test_model_errors, NULL);
    vt_add_per_device(tc, test_model_weights, NULL);
    tcase_add_test(tc, test_cli_info);
    vt_add_per_device(tc, test_cli_embed, NULL);
    suite_add_tcase(s, tc);
    return vt_run(s);
}
