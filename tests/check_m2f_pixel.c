/*
 * m2f_pixel suite: the mask2former head's pixel decoder
 * (plugins/mask2former/pixel.c, linked into this binary by a rule in
 * Makefile.in) built through the host table on a fake backbone pyramid of
 * graph inputs: its sine position encodings against numbers computed
 * independently (Python, pasted), its parameter count against a hand
 * count, Deformable DETR's initialization read back from the device, the
 * sites it declares, its shape errors, the whole decoder's forward pass
 * (projections, deformable encoder layers, mask features) against a naive
 * double-precision implementation written here, and against the graph's
 * reference executor with every gradient against finite differences.
 */
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "harness.h"
#include "model/build.h"
#include "model/verify.h"
#include "plugin/host.h"
#include "../plugins/mask2former/m2f.h"

/* Defined by the plugin's glue in the plugin; the tests set it. */
const vp_host_api *m2f_H;

/* ---- sine positions -------------------------------------------------------- */

START_TEST(test_sine_pos)
{
    /* DETR's PositionEmbeddingSine(4, normalize=True) on a 2 x 3 map,
     * computed with Python's math module in double:
     *   e = (r + 1) / (h + 1e-6) * 2 pi;  dim_t[i] = 10000 ** (2 * (i // 2) / 4)
     *   ch i < 4: y, sin(e_y / dim_t) for even i, cos for odd; ch 4 + i: x. */
    static const float want[2 * 3][8] = {
        {0.000001571f, -1.000000000f, 0.031410743f, 0.999506561f, 0.866025753f, -0.499999395f,
         0.020942413f, 0.999780684f},
        {0.000001571f, -1.000000000f, 0.031410743f, 0.999506561f, -0.866024706f, -0.500001209f,
         0.041875640f, 0.999122831f},
        {0.000001571f, -1.000000000f, 0.031410743f, 0.999506561f, -0.000002094f, 1.000000000f,
         0.062790499f, 0.998026730f},
        {-0.000003142f, 1.000000000f, 0.062790488f, 0.998026730f, 0.866025753f, -0.499999395f,
         0.020942413f, 0.999780684f},
        {-0.000003142f, 1.000000000f, 0.062790488f, 0.998026730f, -0.866024706f, -0.500001209f,
         0.041875640f, 0.999122831f},
        {-0.000003142f, 1.000000000f, 0.062790488f, 0.998026730f, -0.000002094f, 1.000000000f,
         0.062790499f, 0.998026730f},
    };
    float got[2 * 3 * 8];
    m2f_sine_pos(2, 3, 8, got);
    for (int i = 0; i < 2 * 3 * 8; i++)
        ck_assert_msg(fabsf(got[i] - want[i / 8][i % 8]) < 1e-6f, "pos %d ch %d: %.9f vs %.9f",
                      i / 8, i % 8, (double)got[i], (double)want[i / 8][i % 8]);

    /* One position: the last channel pair of each half has the largest
     * wavelength, the first the smallest (sin(2 pi / (1 + 1e-6)) ~ 0). */
    float one[16];
    m2f_sine_pos(1, 1, 16, one);
    ck_assert(fabsf(one[0]) < 1e-5f && fabsf(one[1] - 1.0f) < 1e-6f);
    ck_assert(!memcmp(one, one + 8, 8 * sizeof *one)); /* y and x agree on a 1 x 1 map */
}
END_TEST

/* ---- building on a fake pyramid -------------------------------------------------- */

/* A backbone's three levels, finest first: (H, W) 8x12, 4x6, 2x3 (strides
 * 8, 16, 32), not square so that x and y cannot be swapped unseen, with
 * different channel counts so that a level mix-up changes shapes. */
static const int64_t px_hw[3][2] = {{8, 12}, {4, 6}, {2, 3}};
static const int64_t px_cin[3] = {6, 8, 12};

/* Records every site it is shown; attaches nowhere. */
typedef struct recorder {
    char path[32][96];
    char module[32][96];
    vp_site site[32];
    int n;
} recorder;

static vp_status rec_attach(void *self, vp_build *b, const vp_site *site, vp_gt *x, vp_gt **y,
                            bool *attached)
{
    (void)b, (void)x, (void)y, (void)attached;
    recorder *r = self;
    if (r->n < 32) {
        snprintf(r->path[r->n], sizeof r->path[0], "%s", site->path);
        snprintf(r->module[r->n], sizeof r->module[0], "%s", site->module ? site->module : "");
        r->site[r->n++] = *site;
    }
    return VP_OK;
}
static const vp_peft_iface rec_iface = {.size = sizeof(vp_peft_iface), .attach = rec_attach};

typedef struct px_model {
    vp_build *b;
    vp_gt *feat[3];
    vp_features f;
    m2f_pixel_out out;
} px_model;

static m2f_cfg px_cfg(int64_t d, int64_t heads, int64_t levels, int64_t points, int64_t layers,
                      int64_t ffn, int64_t mask_dim)
{
    m2f_cfg c = {0};
    c.hidden = d, c.heads = heads, c.levels = levels, c.points = points;
    c.enc_layers = layers, c.enc_ffn = ffn, c.mask_dim = mask_dim;
    return c;
}

/* Create the build and the pyramid; the decoder is built by the caller. */
static void px_begin(vp_device *dev, int64_t B, recorder *r, px_model *m)
{
    m2f_H = vp_host_api_get();
    memset(m, 0, sizeof *m);
    vt_ok(vp_build_create(dev, &(vp_build_opts){.seed = 7}, &m->b));
    if (r)
        vt_ok(vp_build_add_peft(m->b, "rec", &rec_iface, r));
    vp_build_enter(m->b, "mask2former", false);
    vp_graph *g = vp_build_graph(m->b);
    m->f.size = sizeof m->f;
    m->f.n = 3;
    for (int k = 0; k < 3; k++) {
        char name[32];
        snprintf(name, sizeof name, "feat.%d", k);
        m->feat[k] = m2f_H->input(g, name, 4,
                                  (int64_t[]){B, px_hw[k][0], px_hw[k][1], px_cin[k]});
        m->f.map[k] = m->feat[k];
        m->f.stride[k] = 8 << k;
    }
}

static void px_build(vp_device *dev, const m2f_cfg *c, int64_t B, recorder *r, px_model *m)
{
    px_begin(dev, B, r, m);
    vt_ok(m2f_pixel_decoder(c, m->b, &m->f, &m->out));
}

/* Elements of every parameter named head.pixel_decoder.*. */
static int64_t px_param_count(vp_build *b)
{
    int64_t n = 0;
    for (uint32_t i = 0; i < vp_build_param_count(b); i++) {
        const vp_build_param *p = vp_build_param_at(b, i);
        if (!strncmp(vp_gt_name(p->t), "head.pixel_decoder.", 19))
            n += vp_gt_nelem(p->t);
    }
    return n;
}

START_TEST(test_param_count)
{
    vp_device *dev = vt_device((uint32_t)_i);
    px_model m;

    /* d 16, 2 heads, the 2 coarsest levels (2x2 with 12 channels, 4x4 with
     * 8), 2 points, 1 layer, FFN 32, mask_dim 8:
     *   input_proj.0  12*16 + 16 + norm 2*16              = 240
     *   input_proj.1   8*16 + 16 + 32                     = 176
     *   level_embed    2*16                               =  32
     *   layer 0: value_proj 16*16+16 = 272, sampling_offsets (2*2*2*2 = 16
     *     outputs) 16*16+16 = 272, attention_weights (8) 16*8+8 = 136,
     *     output_proj 272, norm1 32, linear1 16*32+32 = 544, linear2
     *     32*16+16 = 528, norm2 32                         = 2088
     *   mask_features  16*8 + 8                           = 136
     *   total                                             = 2672 */
    m2f_cfg a = px_cfg(16, 2, 2, 2, 1, 32, 8);
    px_build(dev, &a, 1, NULL, &m);
    ck_assert_int_eq(px_param_count(m.b), 2672);
    vp_build_destroy(m.b);

    /* d 8, 4 heads, all 3 levels, 1 point, 2 layers, FFN 12, mask_dim 4:
     *   input_proj.0 12*8+8+16 = 120, .1 8*8+8+16 = 88, .2 6*8+8+16 = 72
     *   level_embed 3*8 = 24
     *   per layer: value_proj 72, sampling_offsets (4*3*1*2 = 24) 8*24+24 =
     *     216, attention_weights (12) 8*12+12 = 108, output_proj 72, norm1
     *     16, linear1 8*12+12 = 108, linear2 12*8+8 = 104, norm2 16 = 712;
     *     two: 1424
     *   mask_features 8*4+4 = 36
     *   total 120 + 88 + 72 + 24 + 1424 + 36 = 1764 */
    m2f_cfg bc = px_cfg(8, 4, 3, 1, 2, 12, 4);
    px_build(dev, &bc, 2, NULL, &m);
    ck_assert_int_eq(px_param_count(m.b), 1764);
    ck_assert_uint_eq(m.out.n, 3);
    /* Coarsest first: the 2x3 level, then 4x6, then 8x12. */
    for (int l = 0; l < 3; l++) {
        int64_t h = px_hw[2 - l][0], w = px_hw[2 - l][1];
        ck_assert(m.out.hw[l][0] == h && m.out.hw[l][1] == w);
        const int64_t *ms = m2f_H->shape(m.out.memory[l]);
        ck_assert(m2f_H->ndim(m.out.memory[l]) == 3 && ms[0] == 2 && ms[1] == h * w && ms[2] == 8);
        const int64_t *ps = m2f_H->shape(m.out.pos[l]);
        ck_assert(m2f_H->ndim(m.out.pos[l]) == 2 && ps[0] == h * w && ps[1] == 8);
    }
    const int64_t *mf = m2f_H->shape(m.out.mask_features);
    ck_assert(m2f_H->ndim(m.out.mask_features) == 4 && mf[0] == 2 && mf[1] == 8 && mf[2] == 12 &&
              mf[3] == 4);
    vp_build_destroy(m.b);
}
END_TEST

static float *px_read_param(vp_graph *g, const char *name, int64_t want_n)
{
    vp_gt *t = vp_graph_find(g, name);
    ck_assert_msg(t != NULL, "no parameter %s", name);
    ck_assert_int_eq(vp_gt_nelem(t), want_n);
    float *v = malloc((size_t)want_n * sizeof *v);
    ck_assert_ptr_nonnull(v);
    vt_ok(vp_graph_read(g, t, v, (size_t)want_n * sizeof *v));
    return v;
}

static float px_absmax(const float *v, int64_t n)
{
    float m = 0;
    for (int64_t i = 0; i < n; i++)
        m = fabsf(v[i]) > m ? fabsf(v[i]) : m;
    return m;
}

START_TEST(test_init)
{
    vp_device *dev = vt_device((uint32_t)_i);
    /* 8 heads: the eight compass directions; 3 points scale them 1, 2, 3. */
    enum { D = 16, NH = 8, L = 2, P = 3, M = 4 };
    m2f_cfg c = px_cfg(D, NH, L, P, 1, 16, M);
    px_model m;
    px_build(dev, &c, 1, NULL, &m);
    vp_graph *g = vp_build_graph(m.b);
    vt_ok(vp_graph_compile(g));
    vt_ok(vp_build_init_params(m.b));

#define SA "head.pixel_decoder.encoder.layers.0.self_attn"
    static const float dir[NH][2] = {{1, 0}, {1, 1}, {0, 1}, {-1, 1},
                                     {-1, 0}, {-1, -1}, {0, -1}, {1, -1}};
    float *ob = px_read_param(g, SA ".sampling_offsets.bias", NH * L * P * 2);
    for (int h = 0; h < NH; h++)
        for (int l = 0; l < L; l++)
            for (int p = 0; p < P; p++)
                for (int k = 0; k < 2; k++) {
                    float got = ob[((h * L + l) * P + p) * 2 + k], want = dir[h][k] * (p + 1);
                    ck_assert_msg(fabsf(got - want) < 1e-6f, "head %d level %d point %d: %g vs %g",
                                  h, l, p, (double)got, (double)want);
                }
    free(ob);
    float *ow = px_read_param(g, SA ".sampling_offsets.weight", NH * L * P * 2 * D);
    ck_assert(px_absmax(ow, NH * L * P * 2 * D) == 0.0f);
    free(ow);
    float *aw = px_read_param(g, SA ".attention_weights.weight", NH * L * P * D);
    float *ab = px_read_param(g, SA ".attention_weights.bias", NH * L * P);
    ck_assert(px_absmax(aw, NH * L * P * D) == 0.0f && px_absmax(ab, NH * L * P) == 0.0f);
    free(aw);
    free(ab);

    /* Xavier-uniform matrices fill +-sqrt(6 / (in + out)); their biases 0. */
    static const char *const xav[] = {SA ".value_proj", SA ".output_proj",
                                      "head.pixel_decoder.input_proj.0"};
    static const int64_t xin[] = {D, D, 12};
    for (int i = 0; i < 3; i++) {
        char name[128];
        snprintf(name, sizeof name, "%s.weight", xav[i]);
        float *w = px_read_param(g, name, D * xin[i]);
        float mx = px_absmax(w, D * xin[i]), bound = sqrtf(6.0f / (float)(D + xin[i]));
        ck_assert_msg(mx <= bound && mx > 0.8f * bound, "%s: max %g, bound %g", name,
                      (double)mx, (double)bound);
        free(w);
        snprintf(name, sizeof name, "%s.bias", xav[i]);
        float *bz = px_read_param(g, name, D);
        ck_assert(px_absmax(bz, D) == 0.0f);
        free(bz);
    }
    /* mask_features: c2_xavier_fill, U(+-sqrt(3 / fan_in)), zero bias. */
    float *mw = px_read_param(g, "head.pixel_decoder.mask_features.weight", M * D);
    float mx = px_absmax(mw, M * D);
    ck_assert(mx <= sqrtf(3.0f / D) && mx > 0.7f * sqrtf(3.0f / D));
    free(mw);
    /* level_embed ~ N(0, 1): 32 draws, not all small. */
    float *le = px_read_param(g, "head.pixel_decoder.level_embed", L * D);
    ck_assert(px_absmax(le, L * D) > 1.0f);
    free(le);
    float *n1 = px_read_param(g, "head.pixel_decoder.encoder.layers.0.norm1.weight", D);
    ck_assert(n1[0] == 1.0f && n1[D - 1] == 1.0f);
    free(n1);
#undef SA
    vp_build_destroy(m.b);
}
END_TEST

START_TEST(test_sites)
{
    vp_device *dev = vt_device((uint32_t)_i);
    recorder r = {0};
    m2f_cfg c = px_cfg(16, 2, 2, 2, 1, 32, 8);
    px_model m;
    px_build(dev, &c, 1, &r, &m);
    /* 2 input projections, the module, its 4 projections, the after-
     * attention site, linear1, linear2, the after-FFN site, mask_features;
     * the recorder sees all but the module. */
    ck_assert_uint_eq(vp_build_site_count(m.b), 12);
    ck_assert_int_eq(r.n, 11);
    static const struct {
        const char *path;
        vp_site_kind kind;
        int64_t in, out;
        bool in_module;
    } want[11] = {
        {"head.pixel_decoder.input_proj.0", VP_SITE_LINEAR, 12, 16, false},
        {"head.pixel_decoder.input_proj.1", VP_SITE_LINEAR, 8, 16, false},
        {"head.pixel_decoder.encoder.layers.0.self_attn.value_proj", VP_SITE_LINEAR, 16, 16, true},
        {"head.pixel_decoder.encoder.layers.0.self_attn.sampling_offsets", VP_SITE_LINEAR, 16, 16,
         true},
        {"head.pixel_decoder.encoder.layers.0.self_attn.attention_weights", VP_SITE_LINEAR, 16, 8,
         true},
        {"head.pixel_decoder.encoder.layers.0.self_attn.output_proj", VP_SITE_LINEAR, 16, 16, true},
        {"head.pixel_decoder.encoder.layers.0.self_attn", VP_SITE_ATTN_OUT, 16, 16, false},
        {"head.pixel_decoder.encoder.layers.0.linear1", VP_SITE_LINEAR, 16, 32, false},
        {"head.pixel_decoder.encoder.layers.0.linear2", VP_SITE_LINEAR, 32, 16, false},
        {"head.pixel_decoder.encoder.layers.0.ffn", VP_SITE_FFN_OUT, 16, 16, false},
        {"head.pixel_decoder.mask_features", VP_SITE_LINEAR, 16, 8, false},
    };
    for (int i = 0; i < 11; i++) {
        ck_assert_str_eq(r.path[i], want[i].path);
        ck_assert_uint_eq(r.site[i].kind, want[i].kind);
        ck_assert_int_eq(r.site[i].in_features, want[i].in);
        ck_assert_int_eq(r.site[i].out_features, want[i].out);
        ck_assert_str_eq(r.module[i],
                         want[i].in_module ? "head.pixel_decoder.encoder.layers.0.self_attn" : "");
        ck_assert_uint_eq(r.site[i].module_kind, want[i].in_module ? VP_SITE_DEFORM : 0);
    }
    const vp_build_site *mod = vp_build_site_at(m.b, 2);
    ck_assert_str_eq(mod->path, "head.pixel_decoder.encoder.layers.0.self_attn");
    ck_assert_uint_eq(mod->kind, VP_SITE_DEFORM);
    vp_build_destroy(m.b);
}
END_TEST

START_TEST(test_errors)
{
    vp_device *dev = vt_device((uint32_t)_i);
    px_model m;
    m2f_cfg c = px_cfg(16, 2, 4, 2, 1, 32, 8);
    px_begin(dev, 1, NULL, &m);
    vt_expect_err(m2f_pixel_decoder(&c, m.b, &m.f, &m.out), VP_ERR_INVALID,
                  "mask2former: levels is 4, but the backbone gives 3 levels (and deformable "
                  "attention takes at most 6)");
    c = px_cfg(18, 4, 2, 2, 1, 32, 8);
    vt_expect_err(m2f_pixel_decoder(&c, m.b, &m.f, &m.out), VP_ERR_INVALID,
                  "mask2former: hidden (18) must be even and a multiple of heads (4)");
    /* A level that is not a map. */
    m.f.map[2] = m2f_H->input(vp_build_graph(m.b), "flat", 2, (int64_t[]){4, 12});
    c = px_cfg(16, 2, 2, 2, 1, 32, 8);
    ck_assert_int_eq(m2f_pixel_decoder(&c, m.b, &m.f, &m.out), VP_ERR_SHAPE);
    vp_build_destroy(m.b);
}
END_TEST

/* ---- the decoder against the reference executor ------------------------------------ */

static vp_gt *px_const(vp_graph *g, const char *name, vp_gt *like, uint64_t seed)
{
    size_t n = (size_t)vp_gt_nelem(like);
    float *v = malloc(n * sizeof *v);
    ck_assert_ptr_nonnull(v);
    vt_rand(v, n, seed);
    vp_gt *t = m2f_H->constant(g, name, vp_gt_ndim(like), vp_gt_shape(like), v);
    free(v);
    return t;
}

/* Overwrite a parameter with uniform values in [-s, s). */
static void px_perturb(vp_graph *g, const char *name, float s, uint64_t seed)
{
    vp_gt *t = vp_graph_find(g, name);
    ck_assert_msg(t != NULL, "no parameter %s", name);
    size_t n = (size_t)vp_gt_nelem(t);
    float *v = malloc(n * sizeof *v);
    ck_assert_ptr_nonnull(v);
    vt_rand(v, n, seed);
    for (size_t i = 0; i < n; i++)
        v[i] *= s;
    vt_ok(vp_graph_write(g, t, v, n * sizeof *v));
    free(v);
}

START_TEST(test_gradients)
{
    vp_device *dev = vt_device((uint32_t)_i);
    enum { B = 2 };
    m2f_cfg c = px_cfg(16, 2, 2, 2, 1, 32, 8);
    px_model m;
    px_build(dev, &c, B, NULL, &m);
    vp_graph *g = vp_build_graph(m.b);
    const vp_host_api *H = m2f_H;

    /* mean(mask_features^2) + sum over levels of mean(memory_l * R_l), R_l
     * fixed random: memory is layernormed, so its own mean square is ~1
     * whatever the weights and would carry almost no gradient. */
    vp_gt *mf = m.out.mask_features;
    vp_gt *loss = H->mean(g, H->mul(g, mf, mf));
    for (uint32_t l = 0; l < m.out.n; l++) {
        char name[32];
        snprintf(name, sizeof name, "test.r.%u", l);
        vp_gt *r = px_const(g, name, m.out.memory[l], 100 + l);
        loss = H->add(g, loss, H->mean(g, H->mul(g, m.out.memory[l], r)));
    }
    H->keep(mf);
    vt_ok(vp_graph_backward(g, loss));
    vt_ok(vp_graph_compile(g));
    vt_ok(vp_build_init_params(m.b));

    /* At initialization the sampling points of a position's own level sit
     * on pixel centres and those of the others on fixed fractions: where
     * bilinear sampling has kinks, finite differences are ill-defined. Small
     * random offset weights (a fraction of a pixel) move them off, and
     * random attention weights make the softmax non-uniform. */
#define SA "head.pixel_decoder.encoder.layers.0.self_attn"
    px_perturb(g, SA ".sampling_offsets.weight", 0.05f, 11);
    px_perturb(g, SA ".attention_weights.weight", 0.2f, 12);
    px_perturb(g, SA ".attention_weights.bias", 0.2f, 13);
#undef SA

    /* feat.0, the 8x8 level, is not used with 2 levels. */
    float *x1 = malloc((size_t)vp_gt_nelem(m.feat[1]) * sizeof *x1);
    float *x2 = malloc((size_t)vp_gt_nelem(m.feat[2]) * sizeof *x2);
    ck_assert(x1 && x2);
    vt_rand(x1, (size_t)vp_gt_nelem(m.feat[1]), 21);
    vt_rand(x2, (size_t)vp_gt_nelem(m.feat[2]), 22);
    vp_verify r;
    vt_ok(vp_verify_graph(g, loss, mf, 2, (vp_gt *[]){m.feat[1], m.feat[2]},
                          (const void *[]){x1, x2}, 0, &r));
    printf("m2f_pixel: loss %.8g (reference %.8g), mask features error %.3g, gradient error "
           "%.3g at %s (%llu elements of %u parameters)\n",
           r.loss_dev, r.loss_ref, r.out_err, r.grad_err, r.grad_worst,
           (unsigned long long)r.grad_checked, r.params_checked);
    ck_assert_msg(fabs(r.loss_dev - r.loss_ref) <= 1e-4 * fabs(r.loss_ref), "loss %g vs %g",
                  r.loss_dev, r.loss_ref);
    ck_assert_msg(r.out_err < 1e-4, "mask features error %g", r.out_err);
    /* 2 input projections with norms (8), level_embed, the layer's 4
     * projections, 2 FFN linears and 2 norms (16), mask_features (2). */
    ck_assert_uint_eq(r.params_checked, 27);
    ck_assert_uint_eq(r.grad_checked, 2672);
    ck_assert_msg(r.grad_err < 2e-3, "gradient error %g at %s", r.grad_err, r.grad_worst);
    free(x1);
    free(x2);
    vp_build_destroy(m.b);
}
END_TEST

/* ---- the decoder against a naive implementation ------------------------------------- */

/* The verifier above compares the graph with itself (device against the
 * reference executor): it cannot see a reference point, offset layout or
 * level order composed wrongly. So the forward pass is also written out
 * here with loops in double, from Deformable DETR's and Mask2Former's
 * PyTorch code rather than from graph ops, on the parameters read back
 * from the device. */

static double *nv_get(vp_graph *g, const char *name)
{
    vp_gt *t = vp_graph_find(g, name);
    ck_assert_msg(t != NULL, "no parameter %s", name);
    size_t n = (size_t)vp_gt_nelem(t);
    float *f = malloc(n * sizeof *f);
    double *d = malloc(n * sizeof *d);
    ck_assert(f && d);
    vt_ok(vp_graph_read(g, t, f, n * sizeof *f));
    for (size_t i = 0; i < n; i++)
        d[i] = f[i];
    free(f);
    return d;
}

/* y (rows, out) = x (rows, in) w^T + b, with <path>.weight and <path>.bias. */
static void nv_linear(vp_graph *g, const char *path, const double *x, int64_t rows, int64_t in,
                      int64_t out, double *y)
{
    char name[128];
    snprintf(name, sizeof name, "%s.weight", path);
    double *w = nv_get(g, name);
    snprintf(name, sizeof name, "%s.bias", path);
    double *b = nv_get(g, name);
    for (int64_t r = 0; r < rows; r++)
        for (int64_t o = 0; o < out; o++) {
            double acc = b[o];
            for (int64_t i = 0; i < in; i++)
                acc += x[r * in + i] * w[o * in + i];
            y[r * out + o] = acc;
        }
    free(w);
    free(b);
}

/* nn.LayerNorm(C, eps 1e-5) in place over rows of x, with <path>.weight, .bias. */
static void nv_layernorm(vp_graph *g, const char *path, double *x, int64_t rows, int64_t C)
{
    char name[128];
    snprintf(name, sizeof name, "%s.weight", path);
    double *w = nv_get(g, name);
    snprintf(name, sizeof name, "%s.bias", path);
    double *b = nv_get(g, name);
    for (int64_t r = 0; r < rows; r++) {
        double *v = x + r * C, mean = 0, var = 0;
        for (int64_t i = 0; i < C; i++)
            mean += v[i] / (double)C;
        for (int64_t i = 0; i < C; i++)
            var += (v[i] - mean) * (v[i] - mean) / (double)C;
        for (int64_t i = 0; i < C; i++)
            v[i] = (v[i] - mean) / sqrt(var + 1e-5) * w[i] + b[i];
    }
    free(w);
    free(b);
}

/* F.grid_sample(bilinear, align_corners=False, zeros) of one head's map
 * vmap (H, W) at (x, y) in [0, 1], times wgt, added to o (Dh). vmap's
 * pixel (i, j) is at vmap + (i * W + j) * stride. */
static void nv_sample(const double *vmap, int64_t stride, int64_t H, int64_t W, int64_t Dh,
                      double x, double y, double wgt, double *o)
{
    double px = x * (double)W - 0.5, py = y * (double)H - 0.5;
    double x0 = floor(px), y0 = floor(py), fx = px - x0, fy = py - y0;
    for (int dy = 0; dy < 2; dy++)
        for (int dx = 0; dx < 2; dx++) {
            int64_t xi = (int64_t)x0 + dx, yi = (int64_t)y0 + dy;
            if (xi < 0 || yi < 0 || xi >= W || yi >= H)
                continue;
            double bw = (dx ? fx : 1 - fx) * (dy ? fy : 1 - fy);
            const double *v = vmap + (yi * W + xi) * stride;
            for (int64_t ch = 0; ch < Dh; ch++)
                o[ch] += wgt * bw * v[ch];
        }
}

/* The decoder on the 3-level pyramid feat (finest first): memory (B, S, d)
 * with the levels coarsest first, and mask features (B, Hf * Wf, mask_dim). */
static void nv_forward(vp_graph *g, const m2f_cfg *c, int64_t B, const float *const feat[3],
                       double *memory, double *mf)
{
    const int64_t L = c->levels, d = c->hidden, NH = c->heads, P = c->points, Dh = d / NH;
    const int64_t LP = L * P;
    int64_t hw[3][2], start[3], S = 0;
    for (int64_t l = 0; l < L; l++) {
        hw[l][0] = px_hw[2 - l][0], hw[l][1] = px_hw[2 - l][1];
        start[l] = S;
        S += hw[l][0] * hw[l][1];
    }
    double *src = memory, *pos = calloc((size_t)(S * d), sizeof *pos);
    double *le = nv_get(g, "head.pixel_decoder.level_embed");
    ck_assert_ptr_nonnull(pos);
    char path[128];
    for (int64_t l = 0; l < L; l++) {
        int64_t k = 2 - l, n = hw[l][0] * hw[l][1], cin = px_cin[k];
        double *x = malloc((size_t)(B * n * cin) * sizeof *x);
        double *y = malloc((size_t)(B * n * d) * sizeof *y);
        float *sine = malloc((size_t)(n * d) * sizeof *sine);
        ck_assert(x && y && sine);
        for (int64_t i = 0; i < B * n * cin; i++)
            x[i] = feat[k][i];
        snprintf(path, sizeof path, "head.pixel_decoder.input_proj.%d", (int)l);
        nv_linear(g, path, x, B * n, cin, d, y);
        snprintf(path, sizeof path, "head.pixel_decoder.input_proj.%d.norm", (int)l);
        nv_layernorm(g, path, y, B * n, d);
        for (int64_t b = 0; b < B; b++)
            memcpy(src + (b * S + start[l]) * d, y + b * n * d, (size_t)(n * d) * sizeof *y);
        m2f_sine_pos(hw[l][0], hw[l][1], d, sine);
        for (int64_t i = 0; i < n * d; i++)
            pos[start[l] * d + i] = sine[i] + le[l * d + i % d];
        free(x);
        free(y);
        free(sine);
    }
    free(le);

    size_t nbs = (size_t)(B * S);
    double *q = malloc(nbs * (size_t)d * sizeof *q), *value = malloc(nbs * (size_t)d * sizeof *q);
    double *off = malloc(nbs * (size_t)(NH * LP * 2) * sizeof *off);
    double *aw = malloc(nbs * (size_t)(NH * LP) * sizeof *aw);
    double *att = malloc(nbs * (size_t)d * sizeof *att), *a = malloc(nbs * (size_t)d * sizeof *a);
    double *h1 = malloc(nbs * (size_t)c->enc_ffn * sizeof *h1);
    ck_assert(q && value && off && aw && att && a && h1);
    for (int i = 0; i < c->enc_layers; i++) {
        char mod[96];
        snprintf(mod, sizeof mod, "head.pixel_decoder.encoder.layers.%d.self_attn", i);
        for (size_t j = 0; j < nbs * (size_t)d; j++)
            q[j] = src[j] + pos[j % (size_t)(S * d)];
        snprintf(path, sizeof path, "%s.value_proj", mod);
        nv_linear(g, path, src, B * S, d, d, value); /* (B, S, NH, Dh) */
        snprintf(path, sizeof path, "%s.sampling_offsets", mod);
        nv_linear(g, path, q, B * S, d, NH * LP * 2, off); /* (B, S, NH, L, P, 2) */
        snprintf(path, sizeof path, "%s.attention_weights", mod);
        nv_linear(g, path, q, B * S, d, NH * LP, aw); /* (B, S, NH, L * P) */
        for (size_t r = 0; r < nbs * (size_t)NH; r++) {
            double *v = aw + r * (size_t)LP, mx = -INFINITY, sum = 0;
            for (int64_t j = 0; j < LP; j++)
                mx = v[j] > mx ? v[j] : mx;
            for (int64_t j = 0; j < LP; j++)
                sum += (v[j] = exp(v[j] - mx));
            for (int64_t j = 0; j < LP; j++)
                v[j] /= sum;
        }
        memset(att, 0, nbs * (size_t)d * sizeof *att);
        for (int64_t b = 0; b < B; b++)
            for (int64_t lq = 0; lq < L; lq++)
                for (int64_t t = 0; t < hw[lq][0] * hw[lq][1]; t++) {
                    /* The query's reference point: its own pixel centre. */
                    int64_t s = start[lq] + t;
                    double rx = ((double)(t % hw[lq][1]) + 0.5) / (double)hw[lq][1];
                    double ry = ((double)(t / hw[lq][1]) + 0.5) / (double)hw[lq][0];
                    for (int64_t h = 0; h < NH; h++)
                        for (int64_t l = 0; l < L; l++)
                            for (int64_t p = 0; p < P; p++) {
                                int64_t j = ((b * S + s) * NH + h) * LP + l * P + p;
                                const double *o = off + j * 2;
                                double x = rx + o[0] / (double)hw[l][1];
                                double y = ry + o[1] / (double)hw[l][0];
                                nv_sample(value + ((b * S + start[l]) * NH + h) * Dh, NH * Dh,
                                          hw[l][0], hw[l][1], Dh, x, y, aw[j],
                                          att + (b * S + s) * d + h * Dh);
                            }
                }
        snprintf(path, sizeof path, "%s.output_proj", mod);
        nv_linear(g, path, att, B * S, d, d, a);
        for (size_t j = 0; j < nbs * (size_t)d; j++)
            src[j] += a[j];
        snprintf(path, sizeof path, "head.pixel_decoder.encoder.layers.%d.norm1", i);
        nv_layernorm(g, path, src, B * S, d);
        snprintf(path, sizeof path, "head.pixel_decoder.encoder.layers.%d.linear1", i);
        nv_linear(g, path, src, B * S, d, c->enc_ffn, h1);
        for (size_t j = 0; j < nbs * (size_t)c->enc_ffn; j++)
            h1[j] = h1[j] > 0 ? h1[j] : 0;
        snprintf(path, sizeof path, "head.pixel_decoder.encoder.layers.%d.linear2", i);
        nv_linear(g, path, h1, B * S, c->enc_ffn, d, a);
        for (size_t j = 0; j < nbs * (size_t)d; j++)
            src[j] += a[j];
        snprintf(path, sizeof path, "head.pixel_decoder.encoder.layers.%d.norm2", i);
        nv_layernorm(g, path, src, B * S, d);
    }
    /* Mask features from the finest level, the last. */
    int64_t nf = hw[L - 1][0] * hw[L - 1][1];
    for (int64_t b = 0; b < B; b++)
        nv_linear(g, "head.pixel_decoder.mask_features", src + (b * S + start[L - 1]) * d, nf, d,
                  c->mask_dim, mf + b * nf * c->mask_dim);
    free(pos);
    free(q);
    free(value);
    free(off);
    free(aw);
    free(att);
    free(a);
    free(h1);
}

static double *px_read_f64(vp_graph *g, vp_gt *t)
{
    size_t n = (size_t)vp_gt_nelem(t);
    float *f = malloc(n * sizeof *f);
    double *d = malloc(n * sizeof *d);
    ck_assert(f && d);
    vt_ok(vp_graph_read(g, t, f, n * sizeof *f));
    for (size_t i = 0; i < n; i++)
        d[i] = f[i];
    free(f);
    return d;
}

START_TEST(test_forward_naive)
{
    vp_device *dev = vt_device((uint32_t)_i);
    /* All three levels, two layers, three points: every sampled level
     * differs from the query's in size and aspect. */
    enum { B = 2, D = 16 };
    m2f_cfg c = px_cfg(D, 2, 3, 3, 2, 24, 8);
    px_model m;
    px_build(dev, &c, B, NULL, &m);
    vp_graph *g = vp_build_graph(m.b);
    for (uint32_t l = 0; l < 3; l++)
        m2f_H->keep(m.out.memory[l]);
    m2f_H->keep(m.out.mask_features);
    vt_ok(vp_graph_compile(g));
    vt_ok(vp_build_init_params(m.b));
    /* Offsets of about a pixel besides the initial grid, some points
     * outside the maps; non-uniform attention. */
    for (int i = 0; i < 2; i++) {
        char name[128];
        snprintf(name, sizeof name,
                 "head.pixel_decoder.encoder.layers.%d.self_attn.sampling_offsets.weight", i);
        px_perturb(g, name, 0.3f, 31 + (uint64_t)i);
        snprintf(name, sizeof name,
                 "head.pixel_decoder.encoder.layers.%d.self_attn.attention_weights.weight", i);
        px_perturb(g, name, 0.3f, 41 + (uint64_t)i);
    }
    float *feat[3];
    for (int k = 0; k < 3; k++) {
        size_t n = (size_t)vp_gt_nelem(m.feat[k]);
        feat[k] = malloc(n * sizeof *feat[k]);
        ck_assert_ptr_nonnull(feat[k]);
        vt_rand(feat[k], n, 50 + (uint64_t)k);
        vt_ok(vp_graph_write(g, m.feat[k], feat[k], n * sizeof *feat[k]));
    }
    vt_ok(vp_graph_run(g));

    const int64_t S = 6 + 24 + 96, nf = 96;
    double *mem = malloc((size_t)(B * S * D) * sizeof *mem);
    double *mf = malloc((size_t)(B * nf * 8) * sizeof *mf);
    ck_assert(mem && mf);
    nv_forward(g, &c, B, (const float *const *)feat, mem, mf);
    int64_t start = 0;
    double worst = 0;
    for (uint32_t l = 0; l < 3; l++) {
        int64_t n = m.out.hw[l][0] * m.out.hw[l][1];
        double *got = px_read_f64(g, m.out.memory[l]), *want = malloc((size_t)(B * n * D) * 8);
        ck_assert_ptr_nonnull(want);
        for (int64_t b = 0; b < B; b++)
            memcpy(want + b * n * D, mem + (b * S + start) * D, (size_t)(n * D) * sizeof *want);
        double e = vt_rel_err(got, want, (size_t)(B * n * D));
        worst = e > worst ? e : worst;
        ck_assert_msg(e < 1e-4, "memory[%u]: relative error %g", l, e);
        free(got);
        free(want);
        start += n;
    }
    double *got = px_read_f64(g, m.out.mask_features);
    double e = vt_rel_err(got, mf, (size_t)(B * nf * 8));
    printf("m2f_pixel: against the naive forward: memory error %.3g, mask features %.3g\n", worst,
           e);
    ck_assert_msg(e < 1e-4, "mask features: relative error %g", e);
    free(got);
    free(mem);
    free(mf);
    for (int k = 0; k < 3; k++)
        free(feat[k]);
    vp_build_destroy(m.b);
}
END_TEST

int main(void)
{
    Suite *s = suite_create("m2f_pixel");
    TCase *tc = vt_tcase("m2f_pixel");
    tcase_add_test(tc, test_sine_pos);
    vt_add_per_device(tc, test_param_count, NULL);
    vt_add_per_device(tc, test_init, NULL);
    vt_add_per_device(tc, test_sites, NULL);
    vt_add_per_device(tc, test_errors, NULL);
    vt_add_per_device(tc, test_forward_naive, NULL);
    vt_add_per_device(tc, test_gradients, NULL);
    suite_add_tcase(s, tc);
    return vt_run(s);
}
