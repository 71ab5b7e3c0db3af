/*
 * The `swin` backbone plugin (plugins/swin/): its stage outputs against
 * Hugging Face's SwinBackbone inside Mask2FormerForUniversalSegmentation on
 * the same weights and pixels (tests/data/hf-mask2former, made by
 * transformers outside this project), in both name modes; parameter names,
 * shapes and counts against HF's state_dict and against hand computation
 * (the tiny model and Swin-T); the sites; every gradient of a small Swin
 * with padding, shifted windows and odd-sized merging against finite
 * differences; SwinModel / SwinForImageClassification checkpoints and the
 * exact errors of wrong ones; config errors; `vpeft embed`. And the
 * detectron2 mode (D2SwinTransformer) against Mask DINO's repository
 * (tests/data/maskdino): res2 .. res5, the checkpoint's parameter names and
 * shapes, the sites, what its cfg.MODEL.SWIN changes, its errors, its
 * gradients, `vpeft embed`.
 *
 * Backbone-only models (no head); vpeft-swin.so comes from the build tree's
 * plugins/ next to libvpeft.so, where the loader looks by itself.
 */
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "config/config.h"
#include "harness.h"
#include "io/safetensors.h"
#include "model/build.h"
#include "model/model.h"
#include "model/verify.h"
#include "plugin/loader.h"

static char data_dir[4096], hf_config[4200], hf_weights[4200], hf_io[4200], hf_keys[4200];
/* tests/data/maskdino: a Mask DINO checkpoint's directory (config.json with
 * detectron2's cfg.MODEL as "cfg_MODEL"), its state_dict, and its
 * backbone's outputs backbone.res2 .. res5 on images */
static char d2_dir[4096], d2_config[4200], d2_weights[4200], d2_io[4200];

static const char *const M2F = "model.pixel_level_module.encoder.";

/* A backbone-only model from `{"model": {"backbone": {"plugin": "swin",
 * <bb>}<model_extra>}}`. */
static vp_status make_model(int dev, const char *bb, const char *model_extra, int64_t batch,
                            bool no_compile, vp_model **m)
{
    size_t n = strlen(bb) + (model_extra ? strlen(model_extra) : 0) + 256;
    char *text = malloc(n);
    ck_assert_ptr_nonnull(text);
    snprintf(text, n, "{\"model\": {\"backbone\": {\"plugin\": \"swin\", %s}%s}, "
             "\"train\": {\"seed\": 1}}", bb, model_extra ? model_extra : "");
    vp_config *c;
    vt_ok(vp_cfg_parse(text, strlen(text), "m.json", &c));
    free(text);
    vp_status st = vp_model_create(vt_device((uint32_t)dev), c,
                                   &(vp_model_opts){.batch = batch, .backbone_only = true,
                                                    .no_compile = no_compile}, m);
    vp_cfg_free(c);
    return st;
}

static void expect_model_err(int dev, const char *bb, vp_status code, const char *want)
{
    vp_model *m = (vp_model *)&m;
    ck_assert_int_eq(make_model(dev, bb, NULL, 1, false, &m), code);
    ck_assert_ptr_null(m);
    ck_assert_str_eq(vp_error_last(), want);
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

static float *read_tensor(vp_graph *g, vp_gt *t)
{
    size_t bytes = (size_t)vp_gt_nelem(t) * sizeof(float);
    float *v = malloc(bytes);
    ck_assert_ptr_nonnull(v);
    vt_ok(vp_graph_read(g, t, v, bytes));
    return v;
}

static float *read_ref(const char *path, const char *key, size_t n)
{
    vp_st *f;
    vt_ok(vp_st_open(path, &f));
    float *v = malloc(n * sizeof *v);
    ck_assert_ptr_nonnull(v);
    vt_ok(vp_st_read_f32(f, key, v, n));
    vp_st_close(f);
    return v;
}

/* Run m on the reference pixel values (2, 3, 64, 64). */
static void run_hf_pixels(vp_model *m)
{
    vp_gt *img = vp_model_image(m);
    ck_assert_int_eq(vp_gt_nelem(img), 2 * 3 * 64 * 64);
    float *pix = read_ref(hf_io, "pixel_values", 2 * 3 * 64 * 64);
    vt_ok(vp_graph_write(vp_model_graph(m), img, pix, 2 * 3 * 64 * 64 * sizeof *pix));
    free(pix);
    vt_ok(vp_graph_run(vp_model_graph(m)));
}

/* max |got - want| / max |want|; NaN if any is NaN. */
static double rel_err(const float *got, const float *want, size_t n, double *wmax)
{
    double e = 0, w = 0;
    for (size_t i = 0; i < n; i++) {
        double d = fabs((double)got[i] - want[i]);
        e = isnan(d) || isnan(e) ? NAN : fmax(e, d);
        w = fmax(w, fabs(want[i]));
    }
    if (wmax)
        *wmax = w;
    return e / w;
}

/* The reference's stage sizes: (C, side) of encoder_hidden_states.{i}. */
static const int64_t stage_c[4] = {24, 48, 96, 192}, stage_s[4] = {16, 8, 4, 2};

/* backbone.hidden_states.{0..4} (B, h*w, C) against HF's. */
static void check_hidden_states(vp_model *m, const char *what, int from, double *worst)
{
    for (int i = from; i < 5; i++) {
        char name[64];
        snprintf(name, sizeof name, "backbone.hidden_states.%d", i);
        int64_t n;
        float *got = read_out(m, name, &n);
        int64_t c = stage_c[i ? i - 1 : 0], s = stage_s[i ? i - 1 : 0];
        ck_assert_int_eq(n, 2 * s * s * c);
        float *want = read_ref(hf_io, name, (size_t)n);
        double wmax, e = rel_err(got, want, (size_t)n, &wmax);
        printf("swin (%s): %s against HF: %.3g of the largest value %.3g\n", what, name, e, wmax);
        ck_assert_msg(e < 1e-4, "%s: relative error %g", name, e);
        *worst = fmax(*worst, e);
        free(got);
        free(want);
    }
}

/* ---- against Hugging Face ----------------------------------------------------- */

/* "names": "backbone", the plugin's own weights (a Mask2Former checkpoint:
 * prefix model.pixel_level_module.encoder., the rest of the model ignored):
 * the channels-last features against HF's encoder_hidden_states (NCHW). */
START_TEST(test_hf_backbone_names)
{
    char bb[9000];
    snprintf(bb, sizeof bb, "\"hf\": \"%s\", \"image\": 64, \"weights\": \"%s\", "
             "\"output_hidden_states\": true", hf_config, hf_weights);
    vp_model *m;
    vt_ok(make_model(_i, bb, NULL, 2, false, &m));
    run_hf_pixels(m);
    double worst = 0;
    for (int i = 0; i < 4; i++) {
        char name[64];
        snprintf(name, sizeof name, "backbone.features.%d", i);
        int64_t n, C = stage_c[i], S = stage_s[i];
        float *got = read_out(m, name, &n); /* (2, S, S, C) */
        ck_assert_int_eq(n, 2 * S * S * C);
        snprintf(name, sizeof name, "encoder_hidden_states.%d", i);
        float *want = read_ref(hf_io, name, (size_t)n); /* (2, C, S, S) */
        float *nhwc = malloc((size_t)n * sizeof *nhwc);
        for (int64_t b = 0; b < 2; b++)
            for (int64_t c = 0; c < C; c++)
                for (int64_t p = 0; p < S * S; p++)
                    nhwc[(b * S * S + p) * C + c] = want[(b * C + c) * S * S + p];
        double wmax, e = rel_err(got, nhwc, (size_t)n, &wmax);
        printf("swin (backbone names): backbone.features.%d against HF's %s: %.3g of the "
               "largest value %.3g\n", i, name, e, wmax);
        ck_assert_msg(e < 1e-4, "%s: relative error %g", name, e);
        worst = fmax(worst, e);
        free(got);
        free(want);
        free(nhwc);
    }
    check_hidden_states(m, "backbone names", 0, &worst);
    /* Strides 4 to 32, finest first. */
    vp_gt *maps[VP_MAX_LEVELS];
    ck_assert_uint_eq(vp_model_features(m, maps), 4);
    ck_assert_ptr_eq(maps[0], vp_model_output(m, "backbone.features.0"));
    ck_assert_ptr_null(vp_model_output(m, "encoder_hidden_states.0"));
    printf("swin: worst relative error against HF (backbone names): %.3g\n", worst);
    vp_model_destroy(m);
}
END_TEST

typedef struct hf_key {
    char name[160];
    char dtype[16];
    int ndim;
    int64_t shape[4];
} hf_key;

/* The lines of shared_state_dict_keys.txt ("name\tdtype\t[a, b]") under
 * prefix. */
static hf_key *read_keys(const char *prefix, int *n)
{
    FILE *f = fopen(hf_keys, "r");
    ck_assert_msg(f != NULL, "%s", hf_keys);
    hf_key *k = calloc(1024, sizeof *k);
    char line[512];
    *n = 0;
    while (fgets(line, sizeof line, f)) {
        if (strncmp(line, prefix, strlen(prefix)))
            continue;
        ck_assert_int_lt(*n, 1024);
        hf_key *e = &k[(*n)++];
        char *t1 = strchr(line, '\t'), *t2 = t1 ? strchr(t1 + 1, '\t') : NULL;
        ck_assert_msg(t1 && t2, "%s", line);
        snprintf(e->name, sizeof e->name, "%.*s", (int)(t1 - line), line);
        snprintf(e->dtype, sizeof e->dtype, "%.*s", (int)(t2 - t1 - 1), t1 + 1);
        for (char *p = t2 + 2; *p && *p != ']'; e->ndim++) {
            e->shape[e->ndim] = strtoll(p, &p, 10);
            while (*p == ',' || *p == ' ')
                p++;
        }
    }
    fclose(f);
    return k;
}

/* "names": "mask2former", weights through the core's model.weights: HF's
 * encoder_hidden_states as named outputs (NCHW); the parameters are
 * exactly the float tensors of HF's state_dict under
 * model.pixel_level_module.encoder., the int64 ones declared buffers. */
START_TEST(test_hf_mask2former_names)
{
    char bb[9000], extra[4400];
    snprintf(bb, sizeof bb, "\"hf\": \"%s\", \"image\": 64, \"names\": \"mask2former\", "
             "\"output_hidden_states\": true", hf_config);
    snprintf(extra, sizeof extra, ", \"weights\": \"%s\"", hf_weights);
    vp_model *m;
    vt_ok(make_model(_i, bb, extra, 2, false, &m));
    run_hf_pixels(m);
    double worst = 0;
    for (int i = 0; i < 4; i++) {
        char name[64];
        snprintf(name, sizeof name, "encoder_hidden_states.%d", i);
        vp_gt *t = vp_model_output(m, name);
        ck_assert_msg(t != NULL, "%s", name);
        const int64_t *s = vp_gt_shape(t);
        ck_assert(vp_gt_ndim(t) == 4 && s[0] == 2 && s[1] == stage_c[i] && s[2] == stage_s[i] &&
                  s[3] == stage_s[i]);
        int64_t n;
        float *got = read_out(m, name, &n);
        float *want = read_ref(hf_io, name, (size_t)n);
        double wmax, e = rel_err(got, want, (size_t)n, &wmax);
        printf("swin (mask2former names): %s against HF: %.3g of the largest value %.3g\n", name,
               e, wmax);
        ck_assert_msg(e < 1e-4, "%s: relative error %g", name, e);
        worst = fmax(worst, e);
        free(got);
        free(want);
    }
    check_hidden_states(m, "mask2former names", 1, &worst);
    printf("swin: worst relative error against HF (mask2former names): %.3g\n", worst);

    int nk;
    hf_key *keys = read_keys(M2F, &nk);
    const vp_build *b = vp_model_build(m);
    int n_float = 0, n_buf = 0;
    int64_t hf_count = 0;
    for (int i = 0; i < nk; i++) {
        if (!strcmp(keys[i].dtype, "int64")) {
            ck_assert_msg(vp_build_is_buffer_key(b, keys[i].name), "%s", keys[i].name);
            ck_assert_ptr_null(vp_graph_find(vp_model_graph(m), keys[i].name));
            n_buf++;
            continue;
        }
        ck_assert_str_eq(keys[i].dtype, "float32");
        vp_gt *t = vp_graph_find(vp_model_graph(m), keys[i].name);
        ck_assert_msg(t != NULL, "no parameter %s", keys[i].name);
        ck_assert_int_eq(vp_gt_ndim(t), keys[i].ndim);
        for (int d = 0; d < keys[i].ndim; d++)
            ck_assert_int_eq(vp_gt_shape(t)[d], keys[i].shape[d]);
        hf_count += vp_gt_nelem(t);
        n_float++;
    }
    /* ... and nothing else. */
    int64_t ours = 0;
    ck_assert_uint_eq(vp_build_param_count(b), (uint32_t)n_float);
    for (uint32_t i = 0; i < vp_build_param_count(b); i++)
        ours += vp_gt_nelem(vp_build_param_at(b, i)->t);
    ck_assert_int_eq(n_buf, 8);
    ck_assert_int_eq(ours, hf_count);
    ck_assert_int_eq(ours, 1285632); /* by hand: test_param_counts */
    free(keys);
    vp_model_destroy(m);
}
END_TEST

/* ---- parameter counts and sites -------------------------------------------------- */

static int64_t param_total(vp_model *m)
{
    const vp_build *b = vp_model_build(m);
    int64_t n = 0;
    for (uint32_t i = 0; i < vp_build_param_count(b); i++)
        n += vp_gt_nelem(vp_build_param_at(b, i)->t);
    return n;
}

START_TEST(test_param_counts)
{
    char bb[9000];
    snprintf(bb, sizeof bb, "\"hf\": \"%s\"", hf_config);
    vp_model *m;
    vt_ok(make_model(_i, bb, NULL, 1, true, &m));
    /* The tiny model: a block of width C with h heads and window w has
     * 2 norms 4C + relative_position_bias_table (2w-1)^2 h + q, k, v,
     * output 4(C^2 + C) + intermediate 4C^2 + 4C + output 4C^2 + C
     *   = 12C^2 + 13C + (2w-1)^2 h;
     * patch merging of width C: norm 8C + reduction 8C^2 (no bias).
     * embed 24, window 4 (49 table rows), heads 1, 2, 3, 6, depths 2 each:
     *   embeddings 24*3*4*4 + 24 + norm 48 = 1224
     *   blocks 2 * (6912 + 312 + 49) + 2 * (27648 + 624 + 98)
     *        + 2 * (110592 + 1248 + 147) + 2 * (442368 + 2496 + 294) = 1185576
     *   merging (192 + 4608) + (384 + 18432) + (768 + 73728) = 98112
     *   stage norms 2 * (24 + 48 + 96 + 192) = 720
     *   = 1285632, what HF's state_dict holds (test_hf_mask2former_names). */
    ck_assert_int_eq(param_total(m), 1285632);
    /* Without output_hidden_states, the features alone are named. */
    ck_assert_uint_eq(vp_build_output_count(vp_model_build(m)), 4);
    ck_assert_ptr_null(vp_model_output(m, "backbone.hidden_states.1"));
    /* Sites: 8 per block, 4 stages of 2 blocks, 3 reductions. */
    static const struct {
        const char *path;
        vp_site_kind kind;
        int64_t in, out;
    } first[] = {
        {"backbone.encoder.layers.0.blocks.0.attention.self.query", VP_SITE_LINEAR, 24, 24},
        {"backbone.encoder.layers.0.blocks.0.attention.self.key", VP_SITE_LINEAR, 24, 24},
        {"backbone.encoder.layers.0.blocks.0.attention.self.value", VP_SITE_LINEAR, 24, 24},
        {"backbone.encoder.layers.0.blocks.0.attention.output.dense", VP_SITE_LINEAR, 24, 24},
        {"backbone.encoder.layers.0.blocks.0.attention", VP_SITE_ATTN_OUT, 24, 24},
        {"backbone.encoder.layers.0.blocks.0.intermediate.dense", VP_SITE_LINEAR, 24, 96},
        {"backbone.encoder.layers.0.blocks.0.output.dense", VP_SITE_LINEAR, 96, 24},
        {"backbone.encoder.layers.0.blocks.0.output", VP_SITE_FFN_OUT, 24, 24}};
    const vp_build *b = vp_model_build(m);
    ck_assert_uint_eq(vp_build_site_count(b), 8 * 8 + 3);
    for (uint32_t i = 0; i < 8; i++) {
        const vp_build_site *s = vp_build_site_at(b, i);
        ck_assert_str_eq(s->path, first[i].path);
        ck_assert_int_eq(s->kind, first[i].kind);
        if (s->kind == VP_SITE_LINEAR) {
            ck_assert_int_eq(s->in_features, first[i].in);
            ck_assert_int_eq(s->out_features, first[i].out);
        }
    }
    const vp_build_site *red = vp_build_site_at(b, 16);
    ck_assert_str_eq(red->path, "backbone.encoder.layers.0.downsample.reduction");
    ck_assert_int_eq(red->in_features, 96);
    ck_assert_int_eq(red->out_features, 48);
    ck_assert_ptr_null(vp_graph_find(vp_model_graph(m),
                                     "backbone.encoder.layers.0.downsample.reduction.bias"));
    ck_assert_str_eq(vp_build_site_at(b, 3 * 16 + 2)->path,
                     "backbone.encoder.layers.2.downsample.reduction");
    vp_model_destroy(m);

    /* Without query, key and value biases: 3C fewer per block. */
    snprintf(bb, sizeof bb, "\"embed_dim\": 24, \"depths\": [2, 2, 2, 2], \"num_heads\": [1, 2, 3, "
             "6], \"window_size\": 4, \"image_size\": 64, \"qkv_bias\": false");
    vt_ok(make_model(_i, bb, NULL, 1, true, &m));
    ck_assert_int_eq(param_total(m), 1285632 - 3 * 2 * (24 + 48 + 96 + 192));
    ck_assert_ptr_null(vp_graph_find(vp_model_graph(m),
                                     "backbone.encoder.layers.0.blocks.0.attention.self.key.bias"));
    ck_assert_ptr_nonnull(vp_graph_find(vp_model_graph(m),
                                        "backbone.encoder.layers.0.blocks.0.attention.output."
                                        "dense.bias"));
    vp_model_destroy(m);

    /* Swin-T (microsoft/swin-tiny-patch4-window7-224, the backbone of
     * facebook/mask2former-swin-tiny-coco-instance), written out here.
     * Table rows (2*7-1)^2 = 169.
     *   embeddings 96*3*16 + 96 + 192 = 4896
     *   stage 1: 2 * (12*96^2 + 13*96 + 169*3) = 2 * 112347 = 224694
     *   stage 2: 2 * (12*192^2 + 13*192 + 169*6) = 2 * 445878 = 891756
     *   stage 3: 6 * (12*384^2 + 13*384 + 169*12) = 6 * 1776492 = 10658952
     *   stage 4: 2 * (12*768^2 + 13*768 + 169*24) = 2 * 7091928 = 14183856
     *   merging (768 + 73728) + (1536 + 294912) + (3072 + 1179648) = 1553664
     *   stage norms 2 * (96 + 192 + 384 + 768) = 2880
     *   = 27,520,698 for SwinBackbone. (SwinModel instead has one final
     *   layernorm, 1536, and no stage norms: 27,519,354; with
     *   SwinForImageClassification's 1000-class head, 28,288,354.) */
    vt_ok(make_model(_i, "\"embed_dim\": 96, \"depths\": [2, 2, 6, 2], \"num_heads\": [3, 6, 12, "
                         "24], \"window_size\": 7, \"image_size\": 224, \"drop_path_rate\": 0.3",
                     NULL, 1, true, &m));
    ck_assert_int_eq(param_total(m), 27520698);
    vp_gt *t = vp_graph_find(vp_model_graph(m), "backbone.encoder.layers.2.blocks.5.attention."
                                                "self.relative_position_bias_table");
    ck_assert(t && vp_gt_shape(t)[0] == 169 && vp_gt_shape(t)[1] == 12);
    vp_gt *maps[VP_MAX_LEVELS];
    ck_assert_uint_eq(vp_model_features(m, maps), 4);
    for (int i = 0; i < 4; i++) {
        ck_assert_int_eq(vp_gt_shape(maps[i])[1], 56 >> i);
        ck_assert_int_eq(vp_gt_shape(maps[i])[3], 96 << i);
    }
    vp_model_destroy(m);
}
END_TEST

/* ---- gradients ------------------------------------------------------------------- */

typedef struct bb_run {
    vp_plugin *plugin;
    const vp_backbone_iface *iface;
    void *self;
    vp_build *b;
    vp_gt *image;
    vp_features f;
    vp_config *cfg;
} bb_run;

/* bb_build's graphs are built for training (dropout and stochastic depth
 * active) when set. */
static bool bb_training;

static void bb_build(int dev, const char *fields, int64_t batch, bb_run *r)
{
    char text[1024];
    memset(r, 0, sizeof *r);
    snprintf(text, sizeof text, "{\"plugin\": \"swin\", %s}", fields);
    vt_ok(vp_cfg_parse(text, strlen(text), "m.json", &r->cfg));
    vt_ok(vp_plugin_load("swin", VP_PLUGIN_BACKBONE, &r->plugin));
    r->iface = vp_plugin_interface(r->plugin);
    vt_ok(r->iface->create(r->cfg, &r->self));
    int64_t chw[3];
    vt_ok(r->iface->input_size(r->self, chw));
    vt_ok(vp_build_create(vt_device((uint32_t)dev), NULL, &r->b));
    vp_graph_set_training(vp_build_graph(r->b), bb_training);
    vp_build_enter(r->b, "swin", false);
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

/* Every trainable gradient of a small Swin against finite differences of
 * the double-precision reference: loss = sum over levels of mean(level *
 * R_l), R_l fixed random. Image 17 x 13, patch 2: the pixels are padded to
 * 18 x 14 (grid 9 x 7); window 3 pads stage 1 to 9 x 9 and shifts by 1;
 * merging pads 9 x 7 to 10 x 8 (stage 2: 5 x 4, padded to 6 x 6). Every
 * parameter random (the bias tables and norms too), two images. A nonzero
 * attn_drop (in an evaluation graph, where dropout is the identity) takes
 * the attention composed of separate ops instead of the fused node. */
static void check_gradients(int dev, double drop_path, double attn_drop)
{
    bb_run r;
    char fields[512];
    snprintf(fields, sizeof fields, "\"image\": [17, 13], \"patch_size\": 2, \"embed_dim\": 8, "
             "\"depths\": [2, 2], \"num_heads\": [1, 2], \"window_size\": 3, \"mlp_ratio\": 2.0, "
             "\"layer_norm_eps\": 1e-6, \"drop_path_rate\": %g, "
             "\"attention_probs_dropout_prob\": %g", drop_path, attn_drop);
    bb_training = drop_path > 0;
    bb_build(dev, fields, 2, &r);
    bb_training = false;
    vp_graph *g = vp_build_graph(r.b);
    ck_assert_uint_eq(r.f.n, 2);
    const int64_t *s0 = vp_gt_shape(r.f.map[0]), *s1 = vp_gt_shape(r.f.map[1]);
    ck_assert(s0[0] == 2 && s0[1] == 9 && s0[2] == 7 && s0[3] == 8);
    ck_assert(s1[0] == 2 && s1[1] == 5 && s1[2] == 4 && s1[3] == 16);
    ck_assert_int_eq(r.f.stride[0], 2);
    ck_assert_int_eq(r.f.stride[1], 4);
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
    int64_t total = 0;
    for (uint32_t i = 0; i < vp_build_param_count(r.b); i++) {
        vp_gt *t = vp_build_param_at(r.b, i)->t;
        size_t n = (size_t)vp_gt_nelem(t);
        float *v = malloc(n * sizeof *v);
        vt_rand(v, n, 500 + i);
        for (size_t k = 0; k < n; k++)
            v[k] *= 0.5f;
        vt_ok(vp_graph_write(g, t, v, n * sizeof *v));
        free(v);
        total += (int64_t)n;
    }
    /* embeddings 8*3*2*2 + 8 + 16 = 120; blocks with an MLP ratio of 2
     * have 8C^2 + 11C + 25h: 512 + 88 + 25 = 625 at C = 8, 2048 + 176 +
     * 50 = 2274 at C = 16; merging 64 + 512; stage norms 2 * (8 + 16). */
    ck_assert_int_eq(total, 120 + 2 * 625 + 2 * 2274 + 576 + 48);
    float img[2 * 3 * 17 * 13];
    vt_rand(img, 2 * 3 * 17 * 13, 5);
    vp_verify v;
    vt_ok(vp_verify_graph(g, loss, r.f.map[1], 1, &r.image, (const void *[]){img}, 16, &v));
    /* 4 embedding tensors, 17 per block, 3 merging, 2 stage norms of 2. */
    ck_assert_uint_eq(v.params_checked, 4 + 4 * 17 + 3 + 4);
    ck_assert_msg(v.out_err < 1e-4, "forward error %g", v.out_err);
    ck_assert_msg(v.grad_err < 2e-3, "gradient error %g at %s", v.grad_err, v.grad_worst);
    printf("swin: small Swin: forward error %.2g, gradients of %u parameters (%llu elements) "
           "within %.2g\n", v.out_err, v.params_checked, (unsigned long long)v.grad_checked,
           v.grad_err);
    bb_release(&r);
}

START_TEST(test_gradients) { check_gradients(_i, 0.0, 0.0); }
END_TEST

/* The same through the composed attention (attention dropout configured). */
START_TEST(test_gradients_composed) { check_gradients(_i, 0.0, 0.1); }
END_TEST

/* Stochastic depth (HF's SwinDropPath on the attention branch, rates
 * rising linearly to drop_path_rate over the blocks): in a training graph
 * the gradients hold with the run's draws; in evaluation it is the
 * identity, bit for bit. */
START_TEST(test_drop_path)
{
    check_gradients(_i, 0.6, 0.0);
    float out[3][2 * 9 * 7 * 8];
    for (int k = 0; k < 3; k++) {
        bb_run r;
        char fields[400];
        snprintf(fields, sizeof fields, "\"image\": [17, 13], \"patch_size\": 2, \"embed_dim\": 8, "
                 "\"depths\": [2, 2], \"num_heads\": [1, 2], \"window_size\": 3, "
                 "\"drop_path_rate\": %s", k ? "0.6" : "0");
        bb_training = k == 2;
        bb_build(_i, fields, 2, &r);
        bb_training = false;
        vp_graph *g = vp_build_graph(r.b);
        vp_g_keep(r.f.map[0]);
        vt_ok(vp_graph_compile(g));
        vt_ok(vp_build_init_params(r.b));
        float img[2 * 3 * 17 * 13];
        vt_rand(img, 2 * 3 * 17 * 13, 5);
        vt_ok(vp_graph_write(g, r.image, img, sizeof img));
        /* training: some of the 3 runs' 2 x 4 draws drop a branch */
        bool differs = false;
        for (int run = 0; run < (k == 2 ? 3 : 1); run++) {
            vt_ok(vp_graph_run(g));
            vt_ok(vp_graph_read(g, r.f.map[0], out[k], sizeof out[k]));
            differs |= k == 2 && memcmp(out[0], out[2], sizeof out[0]) != 0;
        }
        ck_assert(k < 2 || differs);
        bb_release(&r);
    }
    ck_assert(!memcmp(out[0], out[1], sizeof out[0]));
}
END_TEST

/* ---- other checkpoints, and wrong ones --------------------------------------------- */

static void temp_dir(char *dir, size_t n)
{
    const char *tmp = getenv("TMPDIR");
    snprintf(dir, n, "%s/vpeft-swin-XXXXXX", tmp && tmp[0] ? tmp : "/tmp");
    ck_assert_ptr_nonnull(mkdtemp(dir));
}

/* The shared weights' backbone tensors renamed: the prefix replaced by
 * new_prefix, hidden_states_norms.* dropped (a SwinModel checkpoint keeps
 * its final layernorm instead), the int64 relative_position_index buffers
 * kept. */
typedef struct ckpt {
    vp_st_entry e[256];
    char names[256][160];
    void *vals[256];
    size_t n;
} ckpt;

static void ckpt_swinmodel(ckpt *k, const char *new_prefix)
{
    memset(k, 0, sizeof *k);
    vp_st *f;
    vt_ok(vp_st_open(hf_weights, &f));
    for (size_t i = 0; i < vp_st_count(f); i++) {
        const vp_st_tensor *t = vp_st_get(f, i);
        if (strncmp(t->name, M2F, strlen(M2F)) ||
            !strncmp(t->name + strlen(M2F), "hidden_states_norms.", 20))
            continue;
        ck_assert_uint_lt(k->n, 250);
        size_t j = k->n++;
        snprintf(k->names[j], sizeof k->names[j], "%s%s", new_prefix, t->name + strlen(M2F));
        k->vals[j] = malloc(t->nbytes);
        memcpy(k->vals[j], t->data, t->nbytes);
        k->e[j] = (vp_st_entry){k->names[j], t->dtype, t->ndim, t->shape, k->vals[j]};
        /* the shapes point into f: copy them */
        int64_t *sh = malloc(sizeof t->shape);
        memcpy(sh, t->shape, sizeof t->shape);
        k->e[j].shape = sh;
    }
    vp_st_close(f);
    /* SwinModel's final layernorm (192): accepted, not loaded. */
    static const int64_t d192[1] = {192};
    static float junk[192];
    for (int p = 0; p < 2; p++) {
        size_t j = k->n++;
        snprintf(k->names[j], sizeof k->names[j], "%slayernorm.%s", new_prefix,
                 p ? "bias" : "weight");
        k->e[j] = (vp_st_entry){k->names[j], VP_ST_F32, 1, d192, junk};
    }
}

static void ckpt_free(ckpt *k)
{
    for (size_t i = 0; i < k->n; i++) {
        if (k->vals[i]) {
            free(k->vals[i]);
            free((void *)k->e[i].shape);
        }
    }
}

static size_t ckpt_find(const ckpt *k, const char *name)
{
    for (size_t i = 0; i < k->n; i++)
        if (!strcmp(k->names[i], name))
            return i;
    ck_abort_msg("no tensor %s", name);
    return 0;
}

START_TEST(test_swinmodel_checkpoint)
{
    char dir[256], path[320], bb[9000], want[1024];
    temp_dir(dir, sizeof dir);
    snprintf(path, sizeof path, "%s/swin.safetensors", dir);
    ckpt k;
    ckpt_swinmodel(&k, "");
    vt_ok(vp_st_write(path, k.e, k.n, NULL, 0));
    snprintf(bb, sizeof bb, "\"hf\": \"%s\", \"image\": 64, \"weights\": \"%s\", "
             "\"output_hidden_states\": true", hf_config, path);
    vp_model *m;
    vt_ok(make_model(_i, bb, NULL, 2, false, &m));
    run_hf_pixels(m);
    /* The stages themselves are HF's; their norms start at identity. */
    double worst = 0;
    check_hidden_states(m, "SwinModel checkpoint", 0, &worst);
    for (int i = 1; i <= 4; i++) {
        char name[96];
        for (int p = 0; p < 2; p++) {
            snprintf(name, sizeof name, "backbone.hidden_states_norms.stage%d.%s", i,
                     p ? "bias" : "weight");
            vp_gt *t = vp_graph_find(vp_model_graph(m), name);
            ck_assert_msg(t != NULL, "%s", name);
            float *v = read_tensor(vp_model_graph(m), t);
            for (int64_t e = 0; e < vp_gt_nelem(t); e++)
                ck_assert_msg(v[e] == (p ? 0.0f : 1.0f), "%s[%lld] = %g", name, (long long)e,
                              v[e]);
            free(v);
        }
    }
    vp_model_destroy(m);

    /* SwinForImageClassification: "swin." and a classifier outside it. */
    ckpt kc;
    ckpt_swinmodel(&kc, "swin.");
    static const int64_t cls_shape[2] = {10, 192};
    static float cls[1920];
    kc.e[kc.n++] = (vp_st_entry){"classifier.weight", VP_ST_F32, 2, cls_shape, cls};
    vt_ok(vp_st_write(path, kc.e, kc.n, NULL, 0));
    vt_ok(make_model(_i, bb, NULL, 2, false, &m));
    run_hf_pixels(m);
    check_hidden_states(m, "SwinForImageClassification checkpoint", 4, &worst);
    vp_model_destroy(m);
    kc.n--;
    ckpt_free(&kc);

    /* A wrong shape: the host's message, with the key and both shapes. */
    size_t q = ckpt_find(&k, "encoder.layers.1.blocks.0.attention.self.query.weight");
    const int64_t *keep_shape = k.e[q].shape;
    int64_t wrong[2] = {24, 96};
    k.e[q].shape = wrong;
    vt_ok(vp_st_write(path, k.e, k.n, NULL, 0));
    snprintf(want, sizeof want, "swin: build: parameter backbone.encoder.layers.1.blocks.0."
             "attention.self.query.weight: %s: tensor \"encoder.layers.1.blocks.0.attention."
             "self.query.weight\" has shape (24, 96), expected (48, 48)", path);
    expect_model_err(_i, bb, VP_ERR_SHAPE, want);
    k.e[q].shape = keep_shape;

    /* A missing tensor: named, with the shape it should have. */
    size_t gone = ckpt_find(&k, "encoder.layers.2.downsample.norm.bias");
    vp_st_entry keep = k.e[gone];
    k.e[gone] = k.e[k.n - 1];
    vt_ok(vp_st_write(path, k.e, k.n - 1, NULL, 0));
    snprintf(want, sizeof want, "swin: build: %s: no tensor \"encoder.layers.2.downsample.norm."
             "bias\" (this Swin needs it with shape (384))", path);
    expect_model_err(_i, bb, VP_ERR_NOT_FOUND, want);
    k.e[k.n - 1] = k.e[gone];
    k.e[gone] = keep;

    /* A tensor this Swin does not have (a deeper checkpoint's). */
    static const int64_t d24[1] = {24};
    static float z24[24];
    k.e[k.n] = (vp_st_entry){"encoder.layers.0.blocks.2.output.dense.bias", VP_ST_F32, 1, d24,
                             z24};
    vt_ok(vp_st_write(path, k.e, k.n + 1, NULL, 0));
    snprintf(want, sizeof want, "swin: build: %s: tensor \"encoder.layers.0.blocks.2.output."
             "dense.bias\" is not part of this Swin (embed_dim 24, depths [2, 2, 2, 2])", path);
    expect_model_err(_i, bb, VP_ERR_INVALID, want);

    ckpt_free(&k);
    vt_rm_rf(dir);
}
END_TEST

/* ---- detectron2's D2SwinTransformer ----------------------------------------------- */

/* The reference's res2 .. res5: channels and sides. */
static const int64_t d2_c[4] = {24, 48, 96, 192}, d2_s[4] = {16, 8, 4, 2};

/* Run m on the Mask DINO reference's images (2, 3, 64, 64). */
static void run_d2_images(vp_model *m)
{
    vp_gt *img = vp_model_image(m);
    ck_assert_int_eq(vp_gt_nelem(img), 2 * 3 * 64 * 64);
    float *pix = read_ref(d2_io, "images", 2 * 3 * 64 * 64);
    vt_ok(vp_graph_write(vp_model_graph(m), img, pix, 2 * 3 * 64 * 64 * sizeof *pix));
    free(pix);
    vt_ok(vp_graph_run(vp_model_graph(m)));
}

/* backbone.res<k> (NCHW) of m against the reference's, for the stages of
 * mask (bit i: res<i+2>); the worst relative error. */
static double check_res(vp_model *m, const char *what, unsigned mask)
{
    double worst = 0;
    for (int i = 0; i < 4; i++) {
        char name[64];
        snprintf(name, sizeof name, "backbone.res%d", i + 2);
        if (!(mask >> i & 1u)) {
            ck_assert_ptr_null(vp_model_output(m, name));
            continue;
        }
        vp_gt *t = vp_model_output(m, name);
        ck_assert_msg(t != NULL, "no output %s", name);
        const int64_t *s = vp_gt_shape(t);
        ck_assert(vp_gt_ndim(t) == 4 && s[0] == 2 && s[1] == d2_c[i] && s[2] == d2_s[i] &&
                  s[3] == d2_s[i]);
        int64_t n;
        float *got = read_out(m, name, &n);
        float *want = read_ref(d2_io, name, (size_t)n);
        double wmax, e = rel_err(got, want, (size_t)n, &wmax);
        printf("swin (detectron2%s): %s against D2SwinTransformer's: %.3g of the largest value "
               "%.3g\n", what, name, e, wmax);
        ck_assert_msg(e < 1e-4, "%s: relative error %g", name, e);
        worst = fmax(worst, e);
        free(got);
        free(want);
    }
    return worst;
}

/* Parameters of the tiny Mask DINO Swin (embed 24, depths 2 each, heads
 * 3, 6, 12, 24, window 4, MLP ratio 4): blocks 12C^2 + 13C + 49h (the
 * packed qkv 3C^2 + 3C is query, key and value's), embeddings 1224,
 * merging 98112, stage norms 720:
 *   2 * (7371 + 28566 + 112428 + 446040) + 1224 + 98112 + 720 = 1288866 */
enum { D2_PARAMS = 1288866 };

/* "detectron2": the Mask DINO checkpoint's directory, its weights through
 * the core's model.weights (the file's head tensors are not parameters of
 * this backbone-only model): res2 .. res5 against the repository's own,
 * the features handed on, every parameter name and shape against the
 * file's backbone.* keys (the int64 relative_position_index declared
 * buffers), and the sites. */
START_TEST(test_d2_backbone)
{
    char bb[9000], extra[4400];
    snprintf(bb, sizeof bb, "\"detectron2\": \"%s\", \"image\": 64", d2_dir);
    snprintf(extra, sizeof extra, ", \"weights\": \"%s\"", d2_weights);
    vp_model *m;
    vt_ok(make_model(_i, bb, extra, 2, false, &m));
    run_d2_images(m);
    double worst = check_res(m, "", 0xfu);
    printf("swin: worst relative error against D2SwinTransformer: %.3g\n", worst);
    vp_graph *g = vp_model_graph(m);
    /* The levels handed on: res2 .. res5 channels-last, strides 4 to 32. */
    vp_gt *maps[VP_MAX_LEVELS];
    ck_assert_uint_eq(vp_model_features(m, maps), 4);
    for (int i = 0; i < 4; i++) {
        char name[64];
        snprintf(name, sizeof name, "backbone.features.%d", i);
        ck_assert_ptr_eq(maps[i], vp_model_output(m, name));
        int64_t n, C = d2_c[i], S = d2_s[i];
        float *nhwc = read_out(m, name, &n);
        snprintf(name, sizeof name, "backbone.res%d", i + 2);
        float *nchw = read_out(m, name, &n);
        for (int64_t b = 0; b < 2; b++)
            for (int64_t c = 0; c < C; c++)
                for (int64_t p = 0; p < S * S; p++)
                    ck_assert(nhwc[(b * S * S + p) * C + c] == nchw[(b * C + c) * S * S + p]);
        free(nhwc);
        free(nchw);
    }
    ck_assert_ptr_null(vp_model_output(m, "encoder_hidden_states.0"));
    ck_assert_ptr_null(vp_model_output(m, "backbone.hidden_states.0"));
    ck_assert_uint_eq(vp_build_output_count(vp_model_build(m)), 8);

    /* Every backbone tensor of the checkpoint, and nothing else. */
    const vp_build *b = vp_model_build(m);
    vp_st *f;
    vt_ok(vp_st_open(d2_weights, &f));
    uint32_t n_float = 0, n_buf = 0;
    int64_t elems = 0;
    for (size_t i = 0; i < vp_st_count(f); i++) {
        const vp_st_tensor *t = vp_st_get(f, i);
        if (strncmp(t->name, "backbone.", 9))
            continue;
        vp_gt *p = vp_graph_find(g, t->name);
        if (t->dtype == VP_ST_I64) {
            ck_assert_msg(strstr(t->name, ".attn.relative_position_index") != NULL, "%s",
                          t->name);
            ck_assert_msg(vp_build_is_buffer_key(b, t->name), "%s", t->name);
            ck_assert_ptr_null(p);
            n_buf++;
            continue;
        }
        ck_assert_int_eq(t->dtype, VP_ST_F32);
        ck_assert_msg(p != NULL, "no parameter %s", t->name);
        ck_assert_int_eq(vp_gt_ndim(p), t->ndim);
        for (int d = 0; d < t->ndim; d++)
            ck_assert_int_eq(vp_gt_shape(p)[d], t->shape[d]);
        /* loaded: the file's values */
        size_t k = (size_t)t->nelem;
        float *want = malloc(k * sizeof *want);
        vt_ok(vp_st_read_f32(f, t->name, want, k));
        float *got = read_tensor(g, p);
        ck_assert(!memcmp(got, want, k * sizeof *got));
        free(got);
        free(want);
        elems += vp_gt_nelem(p);
        n_float++;
    }
    vp_st_close(f);
    ck_assert_uint_eq(n_buf, 8);
    ck_assert_uint_eq(vp_build_param_count(b), n_float);
    ck_assert_int_eq(param_total(m), elems);
    ck_assert_int_eq(elems, D2_PARAMS);
    ck_assert_ptr_nonnull(vp_graph_find(g, "backbone.layers.0.blocks.1.attn.qkv.weight"));

    /* Sites: 6 per block (the packed qkv is one linear), 3 reductions. */
    static const struct {
        const char *path;
        vp_site_kind kind;
        int64_t in, out;
    } first[] = {
        {"backbone.layers.0.blocks.0.attn.qkv", VP_SITE_LINEAR, 24, 72},
        {"backbone.layers.0.blocks.0.attn.proj", VP_SITE_LINEAR, 24, 24},
        {"backbone.layers.0.blocks.0.attn", VP_SITE_ATTN_OUT, 24, 24},
        {"backbone.layers.0.blocks.0.mlp.fc1", VP_SITE_LINEAR, 24, 96},
        {"backbone.layers.0.blocks.0.mlp.fc2", VP_SITE_LINEAR, 96, 24},
        {"backbone.layers.0.blocks.0.mlp", VP_SITE_FFN_OUT, 24, 24}};
    ck_assert_uint_eq(vp_build_site_count(b), 6 * 8 + 3);
    for (uint32_t i = 0; i < 6; i++) {
        const vp_build_site *s = vp_build_site_at(b, i);
        ck_assert_str_eq(s->path, first[i].path);
        ck_assert_int_eq(s->kind, first[i].kind);
        if (s->kind == VP_SITE_LINEAR) {
            ck_assert_int_eq(s->in_features, first[i].in);
            ck_assert_int_eq(s->out_features, first[i].out);
        }
    }
    const vp_build_site *red = vp_build_site_at(b, 12);
    ck_assert_str_eq(red->path, "backbone.layers.0.downsample.reduction");
    ck_assert_int_eq(red->in_features, 96);
    ck_assert_int_eq(red->out_features, 48);
    ck_assert_str_eq(vp_build_site_at(b, 3 * 12 + 2)->path,
                     "backbone.layers.2.downsample.reduction");
    ck_assert_str_eq(vp_build_site_at(b, 6 * 7 + 3)->path, "backbone.layers.3.blocks.1.attn.qkv");
    ck_assert_int_eq(vp_build_site_at(b, 6 * 7 + 3)->out_features, 3 * 192);
    vp_model_destroy(m);
}
END_TEST

/* DIR/config.json: the Mask DINO config with `from` replaced by `to`
 * (NULL: as it is), the first `from` in cfg.MODEL.SWIN if it has one (the
 * head's settings list res2 .. res5 too), else in the whole file. */
static void write_d2_config(const char *dir, const char *from, const char *to)
{
    FILE *f = fopen(d2_config, "r");
    ck_assert_ptr_nonnull(f);
    static char text[1 << 16];
    size_t n = fread(text, 1, sizeof text - 1, f);
    fclose(f);
    text[n] = '\0';
    char *swin = strstr(text, "\"SWIN\": {"), *at = text + n;
    if (from) {
        at = swin ? strstr(swin, from) : NULL;
        at = at ? at : strstr(text, from);
    }
    ck_assert_msg(at != NULL, "%s", from);
    char path[400];
    snprintf(path, sizeof path, "%s/config.json", dir);
    f = fopen(path, "w");
    ck_assert_ptr_nonnull(f);
    fprintf(f, "%.*s%s%s", (int)(at - text), text, from ? to : "", from ? at + strlen(from) : "");
    fclose(f);
}

/* What the config changes: OUT_FEATURES honoured (the levels handed on,
 * the stage norms still parameters), QK_SCALE used as the scale (its
 * default's value exactly gives the reference; another changes it),
 * PATCH_NORM false, "MODEL" as well as "cfg_MODEL", PRETRAIN_IMG_SIZE as
 * the default input size. */
START_TEST(test_d2_config)
{
    char dir[256], bb[9000], extra[4400];
    temp_dir(dir, sizeof dir);
    snprintf(bb, sizeof bb, "\"detectron2\": \"%s\", \"image\": 64", dir);
    snprintf(extra, sizeof extra, ", \"weights\": \"%s\"", d2_weights);
    vp_model *m;

    write_d2_config(dir, "\"res2\",\n", "");
    vt_ok(make_model(_i, bb, extra, 2, false, &m));
    run_d2_images(m);
    check_res(m, ", OUT_FEATURES res3 to res5", 0xeu);
    vp_gt *maps[VP_MAX_LEVELS];
    ck_assert_uint_eq(vp_model_features(m, maps), 3);
    ck_assert_ptr_eq(maps[0], vp_model_output(m, "backbone.features.0"));
    ck_assert_int_eq(vp_gt_shape(maps[0])[3], 48);
    ck_assert_ptr_null(vp_model_output(m, "backbone.features.3"));
    ck_assert_int_eq(param_total(m), D2_PARAMS);
    vp_gt *n0 = vp_graph_find(vp_model_graph(m), "backbone.norm0.weight");
    ck_assert(n0 && !vp_gt_trainable(n0));
    ck_assert(vp_gt_trainable(vp_graph_find(vp_model_graph(m), "backbone.norm1.weight")));
    vp_model_destroy(m);

    /* head_dim 8 in every stage: 8^-0.5 is the default's value */
    write_d2_config(dir, "\"QK_SCALE\": null", "\"QK_SCALE\": 0.35355339059327373");
    vt_ok(make_model(_i, bb, extra, 2, false, &m));
    run_d2_images(m);
    check_res(m, ", QK_SCALE 8^-0.5", 0xfu);
    vp_model_destroy(m);
    write_d2_config(dir, "\"QK_SCALE\": null", "\"QK_SCALE\": 0.5");
    vt_ok(make_model(_i, bb, extra, 2, false, &m));
    run_d2_images(m);
    int64_t n;
    float *got = read_out(m, "backbone.res5", &n);
    float *want = read_ref(d2_io, "backbone.res5", (size_t)n);
    double e = rel_err(got, want, (size_t)n, NULL);
    ck_assert_msg(e > 1e-2, "QK_SCALE 0.5 changed res5 by %g only", e);
    free(got);
    free(want);
    vp_model_destroy(m);

    /* PATCH_NORM false: no patch_embed.norm */
    write_d2_config(dir, "\"PATCH_NORM\": true", "\"PATCH_NORM\": false");
    vt_ok(make_model(_i, bb, NULL, 1, true, &m));
    ck_assert_int_eq(param_total(m), D2_PARAMS - 2 * 24);
    ck_assert_ptr_null(vp_graph_find(vp_model_graph(m), "backbone.patch_embed.norm.weight"));
    vp_model_destroy(m);

    /* "MODEL", and the default input size PRETRAIN_IMG_SIZE (224) */
    write_d2_config(dir, "\"cfg_MODEL\"", "\"MODEL\"");
    snprintf(bb, sizeof bb, "\"detectron2\": \"%s\"", dir);
    vt_ok(make_model(_i, bb, NULL, 1, true, &m));
    ck_assert_int_eq(param_total(m), D2_PARAMS);
    const int64_t *is = vp_gt_shape(vp_model_image(m));
    ck_assert(is[1] == 3 && is[2] == 224 && is[3] == 224);
    ck_assert_uint_eq(vp_model_features(m, maps), 4);
    ck_assert_int_eq(vp_gt_shape(maps[3])[1], 7);
    vp_model_destroy(m);
    /* ... and the file itself instead of its directory */
    snprintf(bb, sizeof bb, "\"detectron2\": \"%s/config.json\", \"image\": [32, 48]", dir);
    vt_ok(make_model(_i, bb, NULL, 1, true, &m));
    is = vp_gt_shape(vp_model_image(m));
    ck_assert(is[2] == 32 && is[3] == 48);
    vp_model_destroy(m);
    vt_rm_rf(dir);
}
END_TEST

/* The one-line errors of the detectron2 mode: cfg.MODEL's and the entry's. */
START_TEST(test_d2_errors)
{
    char dir[256], bb[9000], want[9000];
    temp_dir(dir, sizeof dir);
    snprintf(bb, sizeof bb, "\"detectron2\": \"%s\"", dir);
    static const struct {
        const char *from, *to, *key, *msg;
    } cases[] = {
        {"\"APE\": false", "\"APE\": true", "cfg_MODEL.SWIN.APE",
         "true is not supported (absolute position embeddings are not implemented; "
         "Mask2Former's and Mask DINO's Swin configs use none)"},
        {"\"NAME\": \"D2SwinTransformer\"", "\"NAME\": \"build_resnet_backbone\"",
         "cfg_MODEL.BACKBONE.NAME", "\"build_resnet_backbone\" is not supported: the swin "
         "plugin builds detectron2's \"D2SwinTransformer\""},
        {"\"NAME\": \"D2SwinTransformer\"", "\"NAMES\": \"D2SwinTransformer\"",
         "cfg_MODEL.BACKBONE.NAME", "missing: the swin plugin builds detectron2's "
         "\"D2SwinTransformer\""},
        {"\"cfg_MODEL\"", "\"cfg_MODELS\"", "MODEL", "missing: a detectron2 config.json holds "
         "the resolved cfg.MODEL as \"MODEL\" (or \"cfg_MODEL\")"},
        {"\"SWIN\": {", "\"SWINS\": {", "cfg_MODEL.SWIN",
         "missing: D2SwinTransformer's settings (cfg.MODEL.SWIN)"},
        {"\"DEPTHS\": [\n    2,\n    2,\n    2,\n    2\n   ]", "\"DEPTHS\": [2, 2, 2]",
         "cfg_MODEL.SWIN.DEPTHS", "lists 3 stages: D2SwinTransformer has 4 (res2 to res5)"},
        {"\"NUM_HEADS\": [\n    3,", "\"NUM_HEADS\": [\n    5,", "cfg_MODEL.SWIN.NUM_HEADS",
         "stage 1: 5 heads do not divide its width 24"},
        {"\"res5\"\n", "\"res6\"\n", "cfg_MODEL.SWIN.OUT_FEATURES[3]",
         "\"res6\" is not a stage of D2SwinTransformer (\"res2\", \"res3\", \"res4\" or "
         "\"res5\")"},
        {"\"res5\"\n", "\"res4\"\n", "cfg_MODEL.SWIN.OUT_FEATURES[3]", "\"res4\" is listed twice"},
        {"\"QK_SCALE\": null", "\"QK_SCALE\": 1e9", "cfg_MODEL.SWIN.QK_SCALE",
         "must be null (head_dim^-0.5) or a scale of magnitude at most 1e6, got 1e+09"},
        {"\"DROP_PATH_RATE\": 0.0", "\"DROP_PATH_RATE\": 1.0", "cfg_MODEL.SWIN.DROP_PATH_RATE",
         "must be in [0, 1), got 1"},
    };
    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
        write_d2_config(dir, cases[i].from, cases[i].to);
        snprintf(want, sizeof want, "swin: %s/config.json: %s: %s", dir, cases[i].key,
                 cases[i].msg);
        expect_model_err(_i, bb, VP_ERR_CONFIG, want);
    }

    /* The entry: the architecture and the names are the checkpoint's. */
    write_d2_config(dir, NULL, NULL);
    snprintf(bb, sizeof bb, "\"detectron2\": \"%s\", \"hf\": \"%s\"", dir, hf_config);
    expect_model_err(_i, bb, VP_ERR_CONFIG, "swin: m.json: model.backbone.detectron2: not with "
                     "\"hf\": give one (a Hugging Face or a detectron2 checkpoint)");
    snprintf(bb, sizeof bb, "\"detectron2\": \"%s\", \"window_size\": 7", dir);
    snprintf(want, sizeof want, "swin: m.json: model.backbone.window_size: not with "
             "\"detectron2\": the architecture comes from %s (give one or the other; \"image\" "
             "sets the input size)", dir);
    expect_model_err(_i, bb, VP_ERR_CONFIG, want);
    snprintf(bb, sizeof bb, "\"detectron2\": \"%s\", \"weights\": \"%s\"", dir, d2_weights);
    snprintf(want, sizeof want, "swin: m.json: model.backbone.weights: not with \"detectron2\" "
             "(%s): the core loads the checkpoint's model.safetensors (or give model.weights)",
             dir);
    expect_model_err(_i, bb, VP_ERR_CONFIG, want);
    snprintf(bb, sizeof bb, "\"detectron2\": \"%s\", \"names\": \"backbone\"", dir);
    snprintf(want, sizeof want, "swin: m.json: model.backbone.names: not with \"detectron2\" "
             "(%s): the parameters have the checkpoint's names (backbone.patch_embed.proj."
             "weight, ...)", dir);
    expect_model_err(_i, bb, VP_ERR_CONFIG, want);
    snprintf(bb, sizeof bb, "\"detectron2\": \"%s\", \"output_hidden_states\": true", dir);
    snprintf(want, sizeof want, "swin: m.json: model.backbone.output_hidden_states: not with "
             "\"detectron2\" (%s): detectron2's outputs are backbone.res2 to backbone.res5", dir);
    expect_model_err(_i, bb, VP_ERR_CONFIG, want);
    vt_rm_rf(dir);
}
END_TEST

/* Every trainable gradient of a small D2SwinTransformer (the packed qkv
 * sliced into q, k and v, a QK_SCALE, stochastic depth on both branches
 * in a training graph, OUT_FEATURES without res4) against finite
 * differences, as check_gradients. */
START_TEST(test_d2_gradients)
{
    char dir[256], path[320], fields[512];
    temp_dir(dir, sizeof dir);
    snprintf(path, sizeof path, "%s/config.json", dir);
    FILE *f = fopen(path, "w");
    ck_assert_ptr_nonnull(f);
    fputs("{\"MODEL\": {\"META_ARCHITECTURE\": \"MaskDINO\", \"BACKBONE\": {\"NAME\": "
          "\"D2SwinTransformer\"}, \"SWIN\": {\"PATCH_SIZE\": 2, \"EMBED_DIM\": 8, \"DEPTHS\": "
          "[2, 1, 1, 1], \"NUM_HEADS\": [1, 2, 2, 4], \"WINDOW_SIZE\": 3, \"MLP_RATIO\": 2.0, "
          "\"QK_SCALE\": 0.3, \"DROP_PATH_RATE\": 0.5, \"OUT_FEATURES\": [\"res2\", \"res3\", "
          "\"res5\"]}}}", f);
    fclose(f);
    snprintf(fields, sizeof fields, "\"detectron2\": \"%s\", \"image\": [17, 13]", dir);
    bb_run r;
    bb_training = true;
    bb_build(_i, fields, 2, &r);
    bb_training = false;
    vp_graph *g = vp_build_graph(r.b);
    /* 17 x 13, patch 2: 9 x 7, then 5 x 4, 3 x 2 (res4, not handed on), 2 x 1 */
    ck_assert_uint_eq(r.f.n, 3);
    static const int64_t want[3][4] = {{2, 9, 7, 8}, {2, 5, 4, 16}, {2, 2, 1, 64}};
    static const int32_t strides[3] = {2, 4, 16};
    for (int l = 0; l < 3; l++) {
        for (int d = 0; d < 4; d++)
            ck_assert_int_eq(vp_gt_shape(r.f.map[l])[d], want[l][d]);
        ck_assert_int_eq(r.f.stride[l], strides[l]);
    }
    vp_gt *loss = NULL;
    for (uint32_t l = 0; l < r.f.n; l++) {
        size_t n = (size_t)vp_gt_nelem(r.f.map[l]);
        float *rnd = malloc(n * sizeof *rnd);
        vt_rand(rnd, n, 200 + l);
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
    int64_t total = 0;
    for (uint32_t i = 0; i < vp_build_param_count(r.b); i++) {
        vp_gt *t = vp_build_param_at(r.b, i)->t;
        size_t n = (size_t)vp_gt_nelem(t);
        float *v = malloc(n * sizeof *v);
        vt_rand(v, n, 700 + i);
        for (size_t k = 0; k < n; k++)
            v[k] *= 0.5f;
        vt_ok(vp_graph_write(g, t, v, n * sizeof *v));
        free(v);
        total += (int64_t)n;
    }
    /* embeddings 120; blocks 8C^2 + 11C + 25h: 625 (C 8), 2274 (16), 8594
     * (32), 33572 (64); merging 576, 2176, 8448; stage norms 240 */
    ck_assert_int_eq(total, 120 + 2 * 625 + 2274 + 8594 + 33572 + 576 + 2176 + 8448 + 240);
    ck_assert(!vp_gt_trainable(vp_graph_find(g, "backbone.norm2.bias")));
    float img[2 * 3 * 17 * 13];
    vt_rand(img, 2 * 3 * 17 * 13, 6);
    vp_verify v;
    vt_ok(vp_verify_graph(g, loss, r.f.map[1], 1, &r.image, (const void *[]){img}, 16, &v));
    /* 4 embedding tensors, 13 per block, 3 per merging, 3 stage norms of
     * 2 (norm2, res4's, gets no gradient: frozen) */
    ck_assert_uint_eq(v.params_checked, 4 + 5 * 13 + 3 * 3 + 3 * 2);
    ck_assert_msg(v.out_err < 1e-4, "forward error %g", v.out_err);
    ck_assert_msg(v.grad_err < 2e-3, "gradient error %g at %s", v.grad_err, v.grad_worst);
    printf("swin: small D2SwinTransformer: forward error %.2g, gradients of %u parameters "
           "(%llu elements) within %.2g\n", v.out_err, v.params_checked,
           (unsigned long long)v.grad_checked, v.grad_err);
    bb_release(&r);
    vt_rm_rf(dir);
}
END_TEST

/* ---- config errors ---------------------------------------------------------------- */

/* The shared config with `from` replaced by `to` (once), written as
 * dir/config.json. */
static void write_config(const char *dir, const char *from, const char *to)
{
    FILE *f = fopen(hf_config, "r");
    ck_assert_ptr_nonnull(f);
    static char text[1 << 15];
    size_t n = fread(text, 1, sizeof text - 1, f);
    fclose(f);
    text[n] = '\0';
    char *at = strstr(text, from);
    ck_assert_msg(at != NULL, "%s", from);
    char path[400];
    snprintf(path, sizeof path, "%s/config.json", dir);
    f = fopen(path, "w");
    ck_assert_ptr_nonnull(f);
    fprintf(f, "%.*s%s%s", (int)(at - text), text, to, at + strlen(from));
    fclose(f);
}

START_TEST(test_config_errors)
{
    char dir[256], bb[9000], want[9000];
    temp_dir(dir, sizeof dir);
    snprintf(bb, sizeof bb, "\"hf\": \"%s\"", dir);

    /* A checkpoint directory: its config.json. */
    write_config(dir, "\"window_size\": 4", "\"window_size\": 4");
    vp_model *m;
    vt_ok(make_model(_i, bb, NULL, 1, true, &m));
    ck_assert_int_eq(param_total(m), 1285632);
    ck_assert_int_eq(vp_gt_shape(vp_model_image(m))[2], 64); /* image_size */
    vp_model_destroy(m);

    write_config(dir, "\"model_type\": \"mask2former\"", "\"model_type\": \"vit\"");
    snprintf(want, sizeof want, "swin: %s/config.json: model_type: \"vit\" is not supported: the "
             "swin plugin reads \"swin\" configs and \"mask2former\" configs with a Swin "
             "backbone_config", dir);
    expect_model_err(_i, bb, VP_ERR_CONFIG, want);

    write_config(dir, "\"model_type\": \"swin\"", "\"model_type\": \"resnet\"");
    snprintf(want, sizeof want, "swin: %s/config.json: backbone_config.model_type: \"resnet\" is "
             "not supported: the swin plugin reads a Swin backbone (\"swin\")", dir);
    expect_model_err(_i, bb, VP_ERR_CONFIG, want);

    write_config(dir, "\"hidden_act\": \"gelu\"", "\"hidden_act\": \"relu\"");
    snprintf(want, sizeof want, "swin: %s/config.json: backbone_config.hidden_act: \"relu\" is "
             "not supported (only \"gelu\", the exact erf form)", dir);
    expect_model_err(_i, bb, VP_ERR_CONFIG, want);

    write_config(dir, "\"use_absolute_embeddings\": false", "\"use_absolute_embeddings\": true");
    snprintf(want, sizeof want, "swin: %s/config.json: backbone_config.use_absolute_embeddings: "
             "true is not supported (absolute position embeddings are not implemented; Swin "
             "backbones use none)", dir);
    expect_model_err(_i, bb, VP_ERR_CONFIG, want);

    write_config(dir, "\"stage1\",\n      \"stage2\"", "\"stage2\"");
    snprintf(want, sizeof want, "swin: %s/config.json: backbone_config.out_features: must be "
             "every stage in order, [\"stage1\", ..., \"stage4\"]: the swin backbone gives them "
             "all", dir);
    expect_model_err(_i, bb, VP_ERR_CONFIG, want);

    /* A SwinConfig at the top level ("swin"). */
    char swin_cfg[400];
    snprintf(swin_cfg, sizeof swin_cfg, "%s/config.json", dir);
    FILE *f = fopen(swin_cfg, "w");
    ck_assert_ptr_nonnull(f);
    fputs("{\"model_type\": \"swin\", \"embed_dim\": 32, \"depths\": [1, 1], \"num_heads\": [2, 4],"
          " \"window_size\": 2, \"image_size\": 32, \"num_channels\": 1, \"drop_path_rate\": 0.1}",
          f);
    fclose(f);
    snprintf(bb, sizeof bb, "\"hf\": \"%s\", \"image\": [16, 24]", swin_cfg);
    vt_ok(make_model(_i, bb, NULL, 1, true, &m));
    const int64_t *is = vp_gt_shape(vp_model_image(m));
    ck_assert(is[1] == 1 && is[2] == 16 && is[3] == 24);
    vp_gt *maps[VP_MAX_LEVELS];
    ck_assert_uint_eq(vp_model_features(m, maps), 2);
    ck_assert(vp_gt_shape(maps[1])[1] == 2 && vp_gt_shape(maps[1])[2] == 3 &&
              vp_gt_shape(maps[1])[3] == 64);
    vp_model_destroy(m);

    /* The plugin's own entry. */
    snprintf(bb, sizeof bb, "\"hf\": \"%s\", \"window_size\": 7", hf_config);
    snprintf(want, sizeof want, "swin: m.json: model.backbone.window_size: not with \"hf\": the "
             "architecture comes from %s (give one or the other; \"image\" sets the input size)",
             hf_config);
    expect_model_err(_i, bb, VP_ERR_CONFIG, want);
    expect_model_err(_i, "\"windw_size\": 7", VP_ERR_CONFIG,
                     "swin: m.json: model.backbone.windw_size: unknown field, did you mean "
                     "'window_size'?");
    expect_model_err(_i, "\"hidden_act\": \"gelu_new\"", VP_ERR_CONFIG,
                     "swin: m.json: model.backbone.hidden_act: \"gelu_new\" is not supported "
                     "(only \"gelu\", the exact erf form)");
    expect_model_err(_i, "\"names\": \"detectron2\"", VP_ERR_CONFIG,
                     "swin: m.json: model.backbone.names: must be \"backbone\" (parameters under "
                     "\"backbone.\") or \"mask2former\" (under \"model.pixel_level_module."
                     "encoder.\"), got \"detectron2\"");
    expect_model_err(_i, "\"embed_dim\": 24, \"num_heads\": [1, 5, 3, 6]", VP_ERR_CONFIG,
                     "swin: m.json: model.backbone.num_heads: stage 2: 5 heads do not divide "
                     "its width 48");
    expect_model_err(_i, "\"depths\": [2, 2], \"num_heads\": [3, 6, 12]", VP_ERR_CONFIG,
                     "swin: m.json: model.backbone.num_heads: lists 3 stages, depths 2");
    expect_model_err(_i, "\"depths\": [2, 0]", VP_ERR_CONFIG,
                     "swin: m.json: model.backbone.depths[1]: must be from 1 to 1024, got 0");
    /* refused before the 4 GiB input is allocated */
    expect_model_err(_i, "\"image\": 65536", VP_ERR_CONFIG,
                     "swin: m.json: model.backbone.image: must be from 1 to 16384, got 65536");
    expect_model_err(_i, "\"image\": [64]", VP_ERR_CONFIG,
                     "swin: m.json: model.backbone.image: expected an integer or [height, width], "
                     "got a list of 1");
    vt_rm_rf(dir);
}
END_TEST

/* `vpeft embed` on the first reference image: backbone.features.3 against
 * HF's encoder_hidden_states.3. */
START_TEST(test_embed_hf)
{
    const char *bin = getenv("VPEFT_BIN");
    ck_assert_msg(bin != NULL, "VPEFT_BIN is not set (run through make check)");
    char dir[256], cfg[320], pix[320], out[320];
    temp_dir(dir, sizeof dir);
    snprintf(cfg, sizeof cfg, "%s/embed.json", dir);
    snprintf(pix, sizeof pix, "%s/pixels.safetensors", dir);
    snprintf(out, sizeof out, "%s/out.safetensors", dir);
    float *p = read_ref(hf_io, "pixel_values", 2 * 3 * 64 * 64);
    int64_t shape[4] = {1, 3, 64, 64};
    vt_ok(vp_st_write(pix, &(vp_st_entry){"pixel_values", VP_ST_F32, 4, shape, p}, 1, NULL, 0));
    free(p);
    FILE *f = fopen(cfg, "w");
    ck_assert_ptr_nonnull(f);
    fprintf(f, "{\"model\": {\"backbone\": {\"plugin\": \"swin\", \"hf\": \"%s\", \"weights\": "
            "\"%s\"}}}", hf_config, hf_weights);
    fclose(f);
    ck_assert_int_eq(vt_sh("%s embed --config %s --image %s --out %s", bin, cfg, pix, out), 0);
    vt_assert_has(vt_out, "backbone.features.3 (1, 2, 2, 192)");
    float got[4 * 192];
    float *want = read_ref(hf_io, "encoder_hidden_states.3", 2 * 192 * 4);
    vp_st *o;
    vt_ok(vp_st_open(out, &o));
    vt_ok(vp_st_read_f32(o, "backbone.features.3", got, 4 * 192));
    vp_st_close(o);
    float nhwc[4 * 192];
    for (int c = 0; c < 192; c++)
        for (int q = 0; q < 4; q++)
            nhwc[q * 192 + c] = want[c * 4 + q];
    double e = rel_err(got, nhwc, 4 * 192, NULL);
    ck_assert_msg(e < 1e-4, "vpeft embed: relative error %g", e);
    free(want);
    vt_rm_rf(dir);
}
END_TEST

/* `vpeft embed` of the detectron2 mode on the first reference image:
 * backbone.res5 (NCHW) against D2SwinTransformer's. */
START_TEST(test_embed_d2)
{
    const char *bin = getenv("VPEFT_BIN");
    ck_assert_msg(bin != NULL, "VPEFT_BIN is not set (run through make check)");
    char dir[256], cfg[320], pix[320], out[320];
    temp_dir(dir, sizeof dir);
    snprintf(cfg, sizeof cfg, "%s/embed.json", dir);
    snprintf(pix, sizeof pix, "%s/pixels.safetensors", dir);
    snprintf(out, sizeof out, "%s/out.safetensors", dir);
    float *p = read_ref(d2_io, "images", 2 * 3 * 64 * 64);
    int64_t shape[4] = {1, 3, 64, 64};
    vt_ok(vp_st_write(pix, &(vp_st_entry){"pixel_values", VP_ST_F32, 4, shape, p}, 1, NULL, 0));
    free(p);
    FILE *f = fopen(cfg, "w");
    ck_assert_ptr_nonnull(f);
    fprintf(f, "{\"model\": {\"backbone\": {\"plugin\": \"swin\", \"detectron2\": \"%s\", "
            "\"image\": 64}, \"weights\": \"%s\"}}", d2_dir, d2_weights);
    fclose(f);
    ck_assert_int_eq(vt_sh("%s embed --config %s --image %s --out %s", bin, cfg, pix, out), 0);
    vt_assert_has(vt_out, "backbone.res5 (1, 192, 2, 2)");
    vt_assert_has(vt_out, "backbone.features.3 (1, 2, 2, 192)");
    float got[192 * 4];
    float *want = read_ref(d2_io, "backbone.res5", 2 * 192 * 4); /* image 0 first */
    vp_st *o;
    vt_ok(vp_st_open(out, &o));
    vt_ok(vp_st_read_f32(o, "backbone.res5", got, 192 * 4));
    vp_st_close(o);
    double e = rel_err(got, want, 192 * 4, NULL);
    ck_assert_msg(e < 1e-4, "vpeft embed: relative error %g", e);
    free(want);
    vt_rm_rf(dir);
}
END_TEST

int main(void)
{
    const char *src = getenv("VPEFT_SRCDIR");
    snprintf(data_dir, sizeof data_dir, "%s/tests/data/hf-mask2former", src ? src : ".");
    snprintf(hf_config, sizeof hf_config, "%s/shared_config.json", data_dir);
    snprintf(hf_weights, sizeof hf_weights, "%s/shared_weights.safetensors", data_dir);
    snprintf(hf_io, sizeof hf_io, "%s/shared_io.safetensors", data_dir);
    snprintf(hf_keys, sizeof hf_keys, "%s/shared_state_dict_keys.txt", data_dir);
    snprintf(d2_dir, sizeof d2_dir, "%s/tests/data/maskdino", src ? src : ".");
    snprintf(d2_config, sizeof d2_config, "%s/config.json", d2_dir);
    snprintf(d2_weights, sizeof d2_weights, "%s/weights.safetensors", d2_dir);
    snprintf(d2_io, sizeof d2_io, "%s/io.safetensors", d2_dir);
    Suite *s = suite_create("swin");
    TCase *tc = vt_tcase("swin");
    vt_add_per_device(tc, test_hf_backbone_names, NULL);
    vt_add_per_device(tc, test_hf_mask2former_names, NULL);
    vt_add_per_device(tc, test_param_counts, NULL);
    vt_add_per_device(tc, test_gradients, NULL);
    vt_add_per_device(tc, test_gradients_composed, NULL);
    vt_add_per_device(tc, test_drop_path, NULL);
    vt_add_per_device(tc, test_swinmodel_checkpoint, NULL);
    vt_add_per_device(tc, test_config_errors, NULL);
    vt_add_per_device(tc, test_embed_hf, NULL);
    vt_add_per_device(tc, test_d2_backbone, NULL);
    vt_add_per_device(tc, test_d2_config, NULL);
    vt_add_per_device(tc, test_d2_errors, NULL);
    vt_add_per_device(tc, test_d2_gradients, NULL);
    vt_add_per_device(tc, test_embed_d2, NULL);
    suite_add_tcase(s, tc);
    return vt_run(s);
}
