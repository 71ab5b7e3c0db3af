/*
 * The `vit` backbone plugin (plugins/vit/) as Hugging Face's DINOv2:
 * last_hidden_state against transformers' own Dinov2Model (plain and with
 * a SwiGLU FFN) and Dinov2WithRegistersModel on the same weights and
 * pixels (tests/data/dinov2, made outside this project as its NOTES.md
 * says), at the checkpoint's image size and at a larger and a smaller one
 * (position embeddings resized bicubically, antialiased for the registers
 * model); parameter counts against HF's; the mask token; site names;
 * weights under the HF prefixes, and the exact errors of a wrong
 * checkpoint; layer scale, the resize, SwiGLU and register tokens'
 * gradients against finite differences; config errors.
 *
 * The models get the toy head of tests/plugins/toymodel.c (this suite's
 * VPEFT_PLUGIN_PATH); vpeft-vit.so comes from the build tree's plugins/.
 */
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "config/config.h"
#include "harness.h"
#include "io/safetensors.h"
#include "model/build.h"
#include "model/model.h"
#include "model/verify.h"
#include "plugin/loader.h"

static char data_dir[4096];

/* The three reference models: file stem, model_type, extra config. */
typedef struct ref_model {
    const char *stem, *type, *extra;
    int64_t registers, params; /* HF's sum(p.numel()), worked out below by hand */
} ref_model;

/* D = 32, p = 4, G0 = 4, MLP 128:
 *   cls 32 + mask 32 + pos 17*32 = 544 + patch 32*3*4*4 + 32 = 1568 -> 2176
 *   per layer: norm1, norm2 2*64 + q, k, v, dense 4*(32*32 + 32) = 4224
 *              + fc1 128*32 + 128 = 4224 + fc2 32*128 + 32 = 4128
 *              + layer scales 2*32 = 64 -> 12768; 2 layers 25536
 *   final norm 64 -> 27776.
 * SwiGLU: (int(128 * 2 / 3) + 7) // 8 * 8 = 88 units: weights_in 176*32 +
 *   176 = 5808, weights_out 32*88 + 32 = 2848, 304 more a layer -> 28384.
 * Registers: 2*32 more -> 27840. */
static const ref_model refs[3] = {
    {"dinov2-tiny", "dinov2", "", 0, 27776},
    {"dinov2-swiglu-tiny", "dinov2", ", \"use_swiglu_ffn\": true", 0, 28384},
    {"dinov2-reg-tiny", "dinov2_with_registers", ", \"num_register_tokens\": 2", 2, 27840},
};

static void data_path(char *buf, size_t n, const char *stem, const char *suffix)
{
    snprintf(buf, n, "%s/%s%s", data_dir, stem, suffix);
}

static vp_config *parse(const char *text)
{
    vp_config *c;
    vt_ok(vp_cfg_parse(text, strlen(text), "m.json", &c));
    return c;
}

/* A model from `{"model": {"backbone": {"plugin": "vit", <bb>}, "head":
 * {"plugin": "toyhead"}}, "train": {"seed": <seed>}}`. */
static vp_status make_model(int dev, const char *bb, int seed, int64_t batch, vp_model **m)
{
    char text[8192];
    snprintf(text, sizeof text, "{\"model\": {\"backbone\": {\"plugin\": \"vit\", %s}, "
             "\"head\": {\"plugin\": \"toyhead\"}}, \"train\": {\"seed\": %d}}", bb, seed);
    vp_config *c = parse(text);
    vp_model_opts opts = {.batch = batch};
    vp_status st = vp_model_create(vt_device((uint32_t)dev), c, &opts, m);
    vp_cfg_free(c);
    return st;
}

static void expect_model_err(int dev, const char *bb, vp_status code, const char *want)
{
    vp_model *m = (vp_model *)&m;
    ck_assert_int_eq(make_model(dev, bb, 0, 1, &m), code);
    ck_assert_ptr_null(m);
    ck_assert_str_eq(vp_error_last(), want);
}

/* The backbone config of reference model r at image size S with weights w
 * (NULL: the reference file). */
static void ref_config(char *buf, size_t n, const ref_model *r, int S, const char *w)
{
    char path[4200];
    data_path(path, sizeof path, r->stem, ".safetensors");
    snprintf(buf, n, "\"model_type\": \"%s\", \"image\": %d, \"patch\": 4, \"width\": 32, "
             "\"depth\": 2, \"heads\": 2, \"pyramid\": false, \"weights\": \"%s\"%s", r->type, S,
             w ? w : path, r->extra);
}

/* A kept tensor of m, read whole into a new buffer. */
static float *read_out(vp_model *m, const char *name, int64_t *n)
{
    vp_gt *t = vp_model_output(m, name);
    ck_assert_msg(t != NULL, "no output %s", name);
    *n = vp_gt_nelem(t);
    float *v = malloc((size_t)*n * sizeof *v);
    ck_assert_ptr_nonnull(v);
    vt_ok(vp_graph_read(vp_model_graph(m), t, v, (size_t)*n * sizeof *v));
    return v;
}

static float *read_param(vp_model *m, const char *name, int64_t *n)
{
    vp_gt *t = vp_graph_find(vp_model_graph(m), name);
    ck_assert_msg(t != NULL, "no parameter %s", name);
    *n = vp_gt_nelem(t);
    float *v = malloc((size_t)*n * sizeof *v);
    vt_ok(vp_graph_read(vp_model_graph(m), t, v, (size_t)*n * sizeof *v));
    return v;
}

/* Run m on the (B, C, S, S) pixels px (its whole input). */
static void run_on(vp_model *m, const float *px)
{
    vp_gt *img = vp_model_image(m);
    vt_ok(vp_graph_write(vp_model_graph(m), img, px, (size_t)vp_gt_nelem(img) * sizeof *px));
    vt_ok(vp_graph_run(vp_model_graph(m)));
}

/* Reference model r at image S on weights w (NULL: the reference file): the
 * error of its last_hidden_state against transformers', relative to the
 * largest value, for both images of the batch. */
static double against_hf(int dev, const ref_model *r, int S, const char *w)
{
    char bb[8192], io_path[4200], key[64];
    ref_config(bb, sizeof bb, r, S, w);
    vp_model *m;
    vt_ok(make_model(dev, bb, 0, 2, &m));
    data_path(io_path, sizeof io_path, r->stem, ".io.safetensors");
    vp_st *io;
    vt_ok(vp_st_open(io_path, &io));
    int64_t G = S / 4, T = 1 + r->registers + G * G, n;
    size_t np = (size_t)(2 * 3 * S * S), ny = (size_t)(2 * T * 32);
    float *px = malloc(np * sizeof *px), *want = malloc(ny * sizeof *want);
    snprintf(key, sizeof key, "pixel_values_%d", S);
    vt_ok(vp_st_read_f32(io, key, px, np));
    snprintf(key, sizeof key, "last_hidden_state_%d", S);
    vt_ok(vp_st_read_f32(io, key, want, ny));
    vp_st_close(io);
    run_on(m, px);
    float *got = read_out(m, "backbone.last_hidden_state", &n);
    ck_assert_int_eq(n, (int64_t)ny);
    double emax = 0, wmax = 0;
    for (size_t i = 0; i < ny; i++) {
        double e = fabs((double)got[i] - want[i]);
        emax = isnan(e) || isnan(emax) ? NAN : fmax(emax, e);
        wmax = fmax(wmax, fabs(want[i]));
    }
    /* The one feature level is the patch tokens (after class and register
     * tokens) as a map. */
    int64_t nf;
    float *map = read_out(m, "backbone.features.0", &nf);
    ck_assert_int_eq(nf, 2 * G * G * 32);
    for (int b = 0; b < 2; b++)
        ck_assert(!memcmp(map + b * G * G * 32, got + (b * T + 1 + r->registers) * 32,
                          (size_t)(G * G * 32) * sizeof *map));
    free(map);
    free(got);
    free(px);
    free(want);
    vp_model_destroy(m);
    return emax / wmax;
}

/* ---- against Hugging Face ---------------------------------------------------- */

static void t_hf(int dev, const ref_model *r)
{
    /* 16: the checkpoint's own grid (4x4); 24 and 12: resized to 6x6, 3x3. */
    static const int sizes[3] = {16, 24, 12};
    for (int k = 0; k < 3; k++) {
        double err = against_hf(dev, r, sizes[k], NULL);
        printf("dinov2: %s at image %d: last_hidden_state within %.3g of the largest value of "
               "transformers' %s\n", r->stem, sizes[k], err,
               r->registers ? "Dinov2WithRegistersModel" : "Dinov2Model");
        ck_assert_msg(err <= 1e-4, "%s at %d: relative error %g", r->stem, sizes[k], err);
    }
}

START_TEST(test_hf_dinov2) { t_hf(_i, &refs[0]); }
END_TEST
START_TEST(test_hf_swiglu) { t_hf(_i, &refs[1]); }
END_TEST
START_TEST(test_hf_registers) { t_hf(_i, &refs[2]); }
END_TEST

/* ---- parameters and sites -------------------------------------------------------- */

static int64_t backbone_params(vp_model *m)
{
    const vp_build *b = vp_model_build(m);
    int64_t n = 0;
    for (uint32_t i = 0; i < vp_build_param_count(b); i++)
        if (!strncmp(vp_gt_name(vp_build_param_at(b, i)->t), "backbone.", 9))
            n += vp_gt_nelem(vp_build_param_at(b, i)->t);
    return n;
}

START_TEST(test_param_counts)
{
    for (int k = 0; k < 3; k++) {
        char bb[8192], io_path[4200];
        data_path(io_path, sizeof io_path, refs[k].stem, ".io.safetensors");
        vp_st *io;
        vt_ok(vp_st_open(io_path, &io));
        const char *hf = vp_st_meta(io, "num_parameters");
        ck_assert_ptr_nonnull(hf);
        ck_assert_int_eq(strtoll(hf, NULL, 10), refs[k].params);
        vp_st_close(io);
        /* With the file, and at another size (the parameters keep the
         * checkpoint's shapes). */
        vp_model *m;
        ref_config(bb, sizeof bb, &refs[k], 24, NULL);
        vt_ok(make_model(_i, bb, 0, 1, &m));
        ck_assert_int_eq(backbone_params(m), refs[k].params);
        vp_model_destroy(m);
        /* Without: pretrained_image says the grid. */
        snprintf(bb, sizeof bb, "\"model_type\": \"%s\", \"image\": 24, \"pretrained_image\": 16, "
                 "\"patch\": 4, \"width\": 32, \"depth\": 2, \"heads\": 2, \"pyramid\": false%s",
                 refs[k].type, refs[k].extra);
        vt_ok(make_model(_i, bb, 0, 1, &m));
        ck_assert_int_eq(backbone_params(m), refs[k].params);
        vp_model_destroy(m);
    }
}
END_TEST

START_TEST(test_sites_and_init)
{
    vp_model *m;
    vt_ok(make_model(_i, "\"model_type\": \"dinov2\", \"image\": 16, \"patch\": 4, \"width\": 16, "
                         "\"depth\": 1, \"heads\": 2, \"pyramid\": false, \"use_swiglu_ffn\": "
                         "true, \"layerscale_value\": 0.25", 0, 1, &m));
    static const struct {
        const char *path;
        vp_site_kind kind;
        int64_t out;
    } want[] = {{"backbone.encoder.layer.0.attention.attention.query", VP_SITE_LINEAR, 16},
                {"backbone.encoder.layer.0.attention.attention.key", VP_SITE_LINEAR, 16},
                {"backbone.encoder.layer.0.attention.attention.value", VP_SITE_LINEAR, 16},
                {"backbone.encoder.layer.0.attention.output.dense", VP_SITE_LINEAR, 16},
                {"backbone.encoder.layer.0.attention", VP_SITE_ATTN_OUT, 16},
                /* (int(64 * 2 / 3) + 7) // 8 * 8 = 48 units, weights_in twice that */
                {"backbone.encoder.layer.0.mlp.weights_in", VP_SITE_LINEAR, 96},
                {"backbone.encoder.layer.0.mlp.weights_out", VP_SITE_LINEAR, 16},
                {"backbone.encoder.layer.0.mlp", VP_SITE_FFN_OUT, 16},
                {"head.classifier", VP_SITE_LINEAR, -1}};
    const vp_build *b = vp_model_build(m);
    ck_assert_uint_eq(vp_build_site_count(b), sizeof want / sizeof want[0]);
    for (uint32_t i = 0; i < vp_build_site_count(b); i++) {
        ck_assert_str_eq(vp_build_site_at(b, i)->path, want[i].path);
        ck_assert_int_eq(vp_build_site_at(b, i)->kind, want[i].kind);
        if (want[i].out > 0 && want[i].kind == VP_SITE_LINEAR)
            ck_assert_int_eq(vp_build_site_at(b, i)->out_features, want[i].out);
    }
    /* Layer scales start at layerscale_value and train; the mask token is
     * zeros and frozen (it is never used without bool_masked_pos). */
    int64_t n;
    float *ls = read_param(m, "backbone.encoder.layer.0.layer_scale2.lambda1", &n);
    ck_assert_int_eq(n, 16);
    for (int i = 0; i < 16; i++)
        ck_assert_float_eq(ls[i], 0.25f);
    free(ls);
    ck_assert(vp_gt_trainable(vp_graph_find(vp_model_graph(m),
                                            "backbone.encoder.layer.0.layer_scale1.lambda1")));
    vp_gt *mask = vp_graph_find(vp_model_graph(m), "backbone.embeddings.mask_token");
    ck_assert_ptr_nonnull(mask);
    ck_assert(!vp_gt_trainable(mask));
    ck_assert(vp_gt_ndim(mask) == 2 && vp_gt_shape(mask)[0] == 1 && vp_gt_shape(mask)[1] == 16);
    ck_assert_ptr_null(vp_graph_find(vp_model_graph(m), "backbone.embeddings.register_tokens"));
    vp_model_destroy(m);

    /* dinov2_with_registers: HF's default of 4 register tokens, zeros. */
    vt_ok(make_model(_i, "\"model_type\": \"dinov2_with_registers\", \"image\": 16, \"patch\": 4, "
                         "\"width\": 16, \"depth\": 1, \"heads\": 2, \"pyramid\": false",
                     0, 2, &m));
    float *reg = read_param(m, "backbone.embeddings.register_tokens", &n);
    ck_assert_int_eq(n, 4 * 16);
    for (int i = 0; i < 64; i++)
        ck_assert_float_eq(reg[i], 0.0f);
    free(reg);
    const int64_t *s = vp_gt_shape(vp_model_output(m, "backbone.last_hidden_state"));
    ck_assert(s[0] == 2 && s[1] == 1 + 4 + 16 && s[2] == 16);
    vp_model_destroy(m);
}
END_TEST

/* ---- weights files ------------------------------------------------------------------ */

/* A reference weights file's tensors, to write back changed. */
typedef struct tensors {
    vp_st_entry e[64];
    char names[64][160];
    int64_t shapes[64][4];
    float *vals[64];
    size_t n;
} tensors;

static void tensors_read(const char *path, const char *prefix, tensors *t)
{
    memset(t, 0, sizeof *t);
    vp_st *st;
    vt_ok(vp_st_open(path, &st));
    ck_assert_uint_lt(vp_st_count(st), 60);
    for (size_t k = 0; k < vp_st_count(st); k++) {
        const vp_st_tensor *x = vp_st_get(st, k);
        t->vals[k] = malloc((size_t)x->nelem * sizeof(float));
        vt_ok(vp_st_read_f32(st, x->name, t->vals[k], (size_t)x->nelem));
        snprintf(t->names[k], sizeof t->names[k], "%s%s", prefix, x->name);
        for (int d = 0; d < x->ndim; d++)
            t->shapes[k][d] = x->shape[d];
        t->e[k] = (vp_st_entry){t->names[k], VP_ST_F32, x->ndim, t->shapes[k], t->vals[k]};
    }
    t->n = vp_st_count(st);
    vp_st_close(st);
}

static void tensors_free(tensors *t)
{
    for (size_t i = 0; i < t->n; i++)
        free(t->vals[i]);
}

/* Tensor `name` moved to the end (so that writing n - 1 leaves it out). */
static void tensors_to_end(tensors *t, const char *name)
{
    for (size_t i = 0; i < t->n; i++)
        if (!strcmp(t->e[i].name, name)) {
            vp_st_entry e = t->e[i];
            t->e[i] = t->e[t->n - 1];
            t->e[t->n - 1] = e;
            return;
        }
    ck_abort_msg("no tensor %s", name);
}

static void temp_dir(char *dir, size_t n)
{
    const char *tmp = getenv("TMPDIR");
    snprintf(dir, n, "%s/vpeft-dinov2-XXXXXX", tmp && tmp[0] ? tmp : "/tmp");
    ck_assert_ptr_nonnull(mkdtemp(dir));
}

START_TEST(test_weights)
{
    char dir[256], path[320], ref[4200], bb[8192], want[8192];
    temp_dir(dir, sizeof dir);
    snprintf(path, sizeof path, "%s/w.safetensors", dir);
    tensors t;

    /* Dinov2ForImageClassification's layout: "dinov2." and a classifier
     * outside it; the same numbers as the plain file. */
    data_path(ref, sizeof ref, refs[0].stem, ".safetensors");
    tensors_read(ref, "dinov2.", &t);
    int64_t cls_shape[2] = {10, 64};
    float *junk = calloc(640, sizeof *junk);
    t.e[t.n] = (vp_st_entry){"classifier.weight", VP_ST_F32, 2, cls_shape, junk};
    vt_ok(vp_st_write(path, t.e, t.n + 1, NULL, 0));
    double err = against_hf(_i, &refs[0], 24, path);
    ck_assert_msg(err <= 1e-4, "with the dinov2. prefix: relative error %g", err);

    /* No mask token in the file (use_mask_token false): loads, and the
     * model has none. */
    tensors_to_end(&t, "dinov2.embeddings.mask_token");
    vt_ok(vp_st_write(path, t.e, t.n - 1, NULL, 0));
    ref_config(bb, sizeof bb, &refs[0], 16, path);
    vp_model *m;
    vt_ok(make_model(_i, bb, 0, 1, &m));
    ck_assert_ptr_null(vp_graph_find(vp_model_graph(m), "backbone.embeddings.mask_token"));
    ck_assert_int_eq(backbone_params(m), refs[0].params - 32);
    vp_model_destroy(m);

    /* A missing layer scale: named, with its shape. */
    vt_ok(vp_st_write(path, t.e, t.n, NULL, 0));
    tensors_to_end(&t, "dinov2.encoder.layer.1.layer_scale2.lambda1");
    vt_ok(vp_st_write(path, t.e, t.n - 1, NULL, 0));
    snprintf(want, sizeof want, "vit: build: %s: no tensor \"dinov2.encoder.layer.1.layer_scale2."
             "lambda1\" (this DINOv2 needs it with shape (32))", path);
    expect_model_err(_i, bb, VP_ERR_NOT_FOUND, want);

    /* A position-embedding grid other than pretrained_image's. */
    vt_ok(vp_st_write(path, t.e, t.n, NULL, 0));
    snprintf(bb + strlen(bb), sizeof bb - strlen(bb), ", \"pretrained_image\": 24");
    snprintf(want, sizeof want, "vit: build: parameter backbone.embeddings.position_embeddings: "
             "%s: tensor \"dinov2.embeddings.position_embeddings\" has shape (1, 17, 32), "
             "expected (1, 37, 32)", path);
    expect_model_err(_i, bb, VP_ERR_SHAPE, want);
    tensors_free(&t);

    /* A registers checkpoint read as a plain DINOv2: its register tokens
     * are refused, not dropped. */
    data_path(ref, sizeof ref, refs[2].stem, ".safetensors");
    ref_config(bb, sizeof bb, &refs[0], 16, ref);
    snprintf(want, sizeof want, "vit: build: %s: tensor \"embeddings.register_tokens\" is not part "
             "of this DINOv2 (model_type \"dinov2\", depth 2, width 32, 0 register tokens, MLP)",
             ref);
    expect_model_err(_i, bb, VP_ERR_INVALID, want);
    /* A SwiGLU checkpoint without use_swiglu_ffn. */
    data_path(ref, sizeof ref, refs[1].stem, ".safetensors");
    ref_config(bb, sizeof bb, &refs[0], 16, ref);
    snprintf(want, sizeof want, "vit: build: %s: no tensor \"encoder.layer.0.mlp.fc1.weight\" "
             "(this DINOv2 needs it with shape (128, 32))", ref);
    expect_model_err(_i, bb, VP_ERR_NOT_FOUND, want);
    /* ... and a plain one with it. */
    data_path(ref, sizeof ref, refs[0].stem, ".safetensors");
    ref_config(bb, sizeof bb, &refs[1], 16, ref);
    snprintf(want, sizeof want, "vit: build: %s: no tensor \"encoder.layer.0.mlp.weights_in."
             "weight\" (this DINOv2 needs it with shape (176, 32))", ref);
    expect_model_err(_i, bb, VP_ERR_NOT_FOUND, want);

    free(junk);
    unlink(path);
    rmdir(dir);
}
END_TEST

/* ---- gradients ---------------------------------------------------------------------- */

typedef struct bb_run {
    vp_plugin *plugin;
    const vp_backbone_iface *iface;
    void *self;
    vp_build *b;
    vp_gt *image;
    vp_features f;
    vp_config *cfg;
} bb_run;

static void bb_build(int dev, const char *fields, int64_t batch, bb_run *r)
{
    char text[1024];
    memset(r, 0, sizeof *r);
    snprintf(text, sizeof text, "{\"plugin\": \"vit\", %s}", fields);
    r->cfg = parse(text);
    vt_ok(vp_plugin_load("vit", VP_PLUGIN_BACKBONE, &r->plugin));
    r->iface = vp_plugin_interface(r->plugin);
    vt_ok(r->iface->create(r->cfg, &r->self));
    int64_t chw[3];
    vt_ok(r->iface->input_size(r->self, chw));
    vt_ok(vp_build_create(vt_device((uint32_t)dev), NULL, &r->b));
    vp_build_enter(r->b, "vit", false);
    r->image = vp_g_input(vp_build_graph(r->b), "image", 4,
                          (int64_t[]){batch, chw[0], chw[1], chw[2]});
    r->f.size = sizeof r->f;
    vt_ok(r->iface->build(r->self, r->b, r->image, &r->f));
}

static void bb_release(bb_run *r)
{
    vp_build_destroy(r->b);
    r->iface->destroy(r->self);
    vp_plugin_unload(r->plugin);
    vp_cfg_free(r->cfg);
}

/* Every trainable gradient of a small backbone against finite differences
 * of the double-precision reference: loss = sum over levels of
 * mean(level * R_l), R_l fixed random. The layer scales start away from 1
 * and the class, register and position embeddings random, so that every
 * path carries a gradient. Returns the parameters checked. */
static uint32_t check_gradients(int dev, const char *fields, int64_t S, const char *what)
{
    bb_run r;
    bb_build(dev, fields, 2, &r);
    vp_graph *g = vp_build_graph(r.b);
    vp_gt *loss = NULL;
    for (uint32_t l = 0; l < r.f.n; l++) {
        size_t n = (size_t)vp_gt_nelem(r.f.map[l]);
        float *rnd = malloc(n * sizeof *rnd);
        vt_rand(rnd, n, 100 + l);
        char name[32];
        snprintf(name, sizeof name, "test.r%u", l);
        vp_gt *c = vp_g_const(g, name, vp_gt_ndim(r.f.map[l]), vp_gt_shape(r.f.map[l]), rnd);
        free(rnd);
        vp_gt *t = vp_g_mean(g, vp_g_mul(g, r.f.map[l], c));
        loss = loss ? vp_g_add(g, loss, t) : t;
    }
    vt_ok(vp_graph_backward(g, loss));
    vt_ok(vp_graph_compile(g));
    vt_ok(vp_build_init_params(r.b));
    /* Random values where the initialization is constant or tiny. */
    static const char *const randomized[] = {"embeddings.cls_token", "embeddings.register_tokens",
                                             "embeddings.position_embeddings", "layer_scale"};
    for (uint32_t i = 0; i < vp_build_param_count(r.b); i++) {
        vp_gt *t = vp_build_param_at(r.b, i)->t;
        for (size_t k = 0; k < sizeof randomized / sizeof randomized[0]; k++)
            if (strstr(vp_gt_name(t), randomized[k])) {
                size_t n = (size_t)vp_gt_nelem(t);
                float *v = malloc(n * sizeof *v);
                vt_rand(v, n, 7 + i);
                vt_ok(vp_graph_write(g, t, v, n * sizeof *v));
                free(v);
            }
    }
    size_t npx = (size_t)(2 * 3 * S * S);
    float *img = malloc(npx * sizeof *img);
    vt_rand(img, npx, 5);
    vp_verify v;
    vt_ok(vp_verify_graph(g, loss, r.f.map[0], 1, &r.image, (const void *[]){img}, 16, &v));
    free(img);
    ck_assert_msg(v.out_err < 1e-4, "%s: forward error %g", what, v.out_err);
    ck_assert_msg(v.grad_err < 2e-3, "%s: gradient error %g at %s", what, v.grad_err,
                  v.grad_worst);
    printf("dinov2: %s: forward error %.2g, gradients of %u parameters (%llu elements) within "
           "%.2g\n", what, v.out_err, v.params_checked, (unsigned long long)v.grad_checked,
           v.grad_err);
    /* The resize constant is there: the grid really was resized. */
    ck_assert_ptr_nonnull(vp_graph_find(g, "backbone.embeddings.pos_resize"));
    bb_release(&r);
    return v.params_checked;
}

START_TEST(test_gradients)
{
    /* Bicubic 2x2 -> 4x4, SwiGLU, with the pyramid. Parameters: cls, pos,
     * patch weight and bias (4); a layer: norm1 2, q k v dense 8, layer
     * scales 2, norm2 2, weights_in and out 4 (18); final norm 2; pyramid
     * up 2 + 3 levels * 4 (14). The mask token is frozen. */
    uint32_t n = check_gradients(_i, "\"model_type\": \"dinov2\", \"image\": 8, "
                                 "\"pretrained_image\": 4, \"patch\": 2, \"width\": 8, "
                                 "\"depth\": 1, \"heads\": 2, \"mlp_ratio\": 3, "
                                 "\"out_channels\": 4, \"use_swiglu_ffn\": true", 8,
                                 "dinov2, SwiGLU, bicubic 2x2 to 4x4, pyramid");
    ck_assert_uint_eq(n, 4 + 18 + 2 + 14);
    /* Antialiased bicubic 3x3 -> 2x2 (shrinking widens the filter), three
     * register tokens, the MLP: 5 + 18 + 2. */
    n = check_gradients(_i, "\"model_type\": \"dinov2_with_registers\", \"image\": 4, "
                        "\"pretrained_image\": 6, \"patch\": 2, \"width\": 8, \"depth\": 1, "
                        "\"heads\": 2, \"mlp_ratio\": 2, \"num_register_tokens\": 3, "
                        "\"pyramid\": false", 4, "dinov2_with_registers, antialiased bicubic 3x3 "
                        "to 2x2");
    ck_assert_uint_eq(n, 5 + 18 + 2);
}
END_TEST

/* ---- config errors -------------------------------------------------------------------- */

START_TEST(test_config_errors)
{
    const char *pre = "vit: m.json: model.backbone.";
    static const struct {
        const char *fields, *msg;
    } cases[] = {
        {"\"model_type\": \"dino\"",
         "model_type: must be \"vit\", \"dinov2\" or \"dinov2_with_registers\", got \"dino\""},
        {"\"model_type\": 2", "model_type: expected a string, got a number"},
        {"\"layerscale_value\": 0.5",
         "layerscale_value: only for model_type \"dinov2\" or \"dinov2_with_registers\" (this is "
         "\"vit\")"},
        {"\"model_type\": \"vit\", \"use_swiglu_ffn\": false",
         "use_swiglu_ffn: only for model_type \"dinov2\" or \"dinov2_with_registers\" (this is "
         "\"vit\")"},
        {"\"model_type\": \"dinov2\", \"num_register_tokens\": 4",
         "num_register_tokens: register tokens need model_type \"dinov2_with_registers\" (HF "
         "Dinov2WithRegistersModel), got 4 with \"dinov2\""},
        {"\"model_type\": \"dinov2_with_registers\", \"num_register_tokens\": -1",
         "num_register_tokens: must be from 0 to 1024, got -1"},
        {"\"model_type\": \"dinov2\", \"class_token\": false",
         "class_token: a DINOv2 always has a class token (model_type \"dinov2\")"},
        {"\"model_type\": \"dinov2\", \"use_swiglu_ffn\": 1",
         "use_swiglu_ffn: expected a boolean, got a number"},
        {"\"model_type\": \"dinov2\", \"layerscale_value\": \"1\"",
         "layerscale_value: expected a number, got a string"},
        {"\"model_type\": \"dinov2\", \"width\": 1, \"heads\": 1, \"mlp_ratio\": 1, "
         "\"use_swiglu_ffn\": true",
         "mlp_ratio: gives a SwiGLU FFN of 0 units ((int(1 * 2 / 3) + 7) // 8 * 8)"},
        {"\"model_type\": \"dinov2\", \"patch\": 14, \"image\": 518, \"pretrained_image\": 500, "
         "\"pyramid\": false",
         "pretrained_image: 500 is not a multiple of the patch size 14"},
        {"\"pretrained_image\": 0", "pretrained_image: must be from 1 to 1048576, got 0"},
    };
    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
        char want[512];
        snprintf(want, sizeof want, "%s%s", pre, cases[i].msg);
        expect_model_err(_i, cases[i].fields, VP_ERR_CONFIG, want);
    }
    /* The released models' sizes build (no weights: shapes only): ViT-S/14
     * at 518 (grid 37, HF's own) and at 224 from 518's grid, with registers. */
    bb_run r;
    bb_build(_i, "\"model_type\": \"dinov2\", \"image\": 518, \"patch\": 14, \"width\": 384, "
                 "\"depth\": 1, \"heads\": 6, \"pyramid\": false", 1, &r);
    ck_assert_int_eq(vp_gt_shape(vp_build_output_find(r.b, "backbone.last_hidden_state"))[1],
                     1 + 37 * 37);
    bb_release(&r);
    bb_build(_i, "\"model_type\": \"dinov2_with_registers\", \"image\": 224, "
                 "\"pretrained_image\": 518, \"patch\": 14, \"width\": 384, \"depth\": 1, "
                 "\"heads\": 6", 1, &r);
    vp_gt *pos = vp_graph_find(vp_build_graph(r.b), "backbone.embeddings.position_embeddings");
    ck_assert_int_eq(vp_gt_shape(pos)[1], 1 + 37 * 37);
    vp_gt *k = vp_graph_find(vp_build_graph(r.b), "backbone.embeddings.pos_resize");
    ck_assert(vp_gt_shape(k)[0] == 16 * 16 && vp_gt_shape(k)[1] == 37 * 37);
    ck_assert_int_eq(vp_gt_shape(vp_build_output_find(r.b, "backbone.last_hidden_state"))[1],
                     1 + 4 + 16 * 16);
    bb_release(&r);
}
END_TEST

int main(void)
{
    /* The toy head (this suite is <build>/obj/tests/check_dinov2). */
    char exe[4096], path[4200];
    ssize_t len = readlink("/proc/self/exe", exe, sizeof exe - 1);
    if (len <= 0)
        return 1;
    exe[len] = '\0';
    *strrchr(exe, '/') = '\0';
    snprintf(path, sizeof path, "%s/plugins/m", exe);
    setenv("VPEFT_PLUGIN_PATH", path, 1);
    const char *src = getenv("VPEFT_SRCDIR");
    snprintf(data_dir, sizeof data_dir, "%s/tests/data/dinov2", src ? src : ".");
    Suite *s = suite_create("dinov2");
    TCase *tc = vt_tcase("dinov2");
    vt_add_per_device(tc, test_hf_dinov2, NULL);
    vt_add_per_device(tc, test_hf_swiglu, NULL);
    vt_add_per_device(tc, test_hf_registers, NULL);
    vt_add_per_device(tc, test_param_counts, NULL);
    vt_add_per_device(tc, test_sites_and_init, NULL);
    vt_add_per_device(tc, test_weights, NULL);
    vt_add_per_device(tc, test_gradients, NULL);
    vt_add_per_device(tc, test_config_errors, NULL);
    suite_add_tcase(s, tc);
    return vt_run(s);
}
