/*
 * The `vit` backbone plugin (plugins/vit/) as a model's backbone: its
 * output against Hugging Face's ViTModel on the same weights and pixels
 * (tests/data/vit, made by transformers outside this project), parameter
 * counts and site names against hand computation, weights written under
 * HF names loaded back, the errors of a wrong checkpoint, position
 * embeddings resized to another grid, the feature pyramid's shapes and
 * every gradient against finite differences, and config errors.
 *
 * The models get the toy head of tests/plugins/toymodel.c (this suite's
 * VPEFT_PLUGIN_PATH); vpeft-vit.so itself comes from the build tree's
 * plugins/ next to libvpeft.so, where the loader looks by itself.
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

static char hf_weights[4096], hf_io[4096];

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
    char text[2048];
    snprintf(text, sizeof text, "{\"model\": {\"backbone\": {\"plugin\": \"vit\", %s}, "
             "\"head\": {\"plugin\": \"toyhead\"}}, \"train\": {\"seed\": %d}}", bb, seed);
    vp_config *c = parse(text);
    vp_status st = vp_model_create(vt_device((uint32_t)dev), c, &(vp_model_opts){.batch = batch}, m);
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

/* Run m on images filled from pix (n floats per image, repeated over the
 * batch); rnd: random pixels instead. */
static void run_on(vp_model *m, const float *pix, uint64_t rnd)
{
    vp_gt *img = vp_model_image(m);
    size_t n = (size_t)vp_gt_nelem(img), per = n / (size_t)vp_gt_shape(img)[0];
    float *x = malloc(n * sizeof *x);
    ck_assert_ptr_nonnull(x);
    if (pix)
        for (size_t i = 0; i < n; i++)
            x[i] = pix[i % per];
    else
        vt_rand(x, n, rnd);
    vt_ok(vp_graph_write(vp_model_graph(m), img, x, n * sizeof *x));
    free(x);
    vt_ok(vp_graph_run(vp_model_graph(m)));
}

static const char *tiny = "\"image\": 16, \"patch\": 4, \"width\": 32, \"depth\": 2, \"heads\": 2, "
                          "\"mlp_ratio\": 4, \"class_token\": true, \"pyramid\": false";

/* ---- against Hugging Face ---------------------------------------------------- */

START_TEST(test_hf_reference)
{
    char bb[4096 + 256];
    snprintf(bb, sizeof bb, "%s, \"weights\": \"%s\"", tiny, hf_weights);
    vp_model *m;
    vt_ok(make_model(_i, bb, 0, 2, &m));
    vp_st *io;
    vt_ok(vp_st_open(hf_io, &io));
    float pix[3 * 16 * 16], want[17 * 32];
    vt_ok(vp_st_read_f32(io, "pixel_values", pix, 3 * 16 * 16));
    vt_ok(vp_st_read_f32(io, "last_hidden_state", want, 17 * 32));
    vp_st_close(io);
    run_on(m, pix, 0);
    int64_t n, nf;
    float *got = read_out(m, "backbone.last_hidden_state", &n);
    float *map = read_out(m, "backbone.features.0", &nf);
    ck_assert_int_eq(n, 2 * 17 * 32);
    ck_assert_int_eq(nf, 2 * 16 * 32);
    /* Both images of the batch (the class token repeats over it). */
    double emax = 0, wmax = 0;
    for (int b = 0; b < 2; b++)
        for (int i = 0; i < 17 * 32; i++) {
            double e = fabs((double)got[b * 17 * 32 + i] - want[i]);
            emax = isnan(e) || isnan(emax) ? NAN : fmax(emax, e);
            wmax = fmax(wmax, fabs(want[i]));
        }
    printf("vit: last_hidden_state against Hugging Face ViTModel: max error %.3g, %.3g of the "
           "largest value %.3g\n", emax, emax / wmax, wmax);
    ck_assert_msg(emax / wmax < 1e-4, "relative error %g", emax / wmax);
    /* Without the pyramid the one level is the patch tokens as a map. */
    for (int b = 0; b < 2; b++)
        ck_assert(!memcmp(map + b * 16 * 32, got + b * 17 * 32 + 32, 16 * 32 * sizeof *map));
    free(got);
    free(map);
    vp_model_destroy(m);
}
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

static void expect_param(vp_model *m, const char *name, int ndim, const int64_t *shape)
{
    vp_gt *t = vp_graph_find(vp_model_graph(m), name);
    ck_assert_msg(t != NULL, "no parameter %s", name);
    ck_assert_int_eq(vp_gt_ndim(t), ndim);
    for (int i = 0; i < ndim; i++)
        ck_assert_int_eq(vp_gt_shape(t)[i], shape[i]);
}

START_TEST(test_param_counts)
{
    vp_model *m;
    vt_ok(make_model(_i, tiny, 0, 1, &m));
    /* D = 32, p = 4, G = 4, MLP 128, class token:
     *   cls 32 + pos 17*32 = 544 + patch 32*3*4*4 + 32 = 1568
     *   per layer: 2 norms 2*64 + q, k, v, out 4*(32*32 + 32) = 4224
     *              + fc1 128*32 + 128 = 4224 + fc2 32*128 + 32 = 4128 -> 12704
     *   2 layers 25408 + final norm 64
     *   = 32 + 544 + 1568 + 25408 + 64 = 27616 (as the HF file's tensors) */
    ck_assert_int_eq(backbone_params(m), 27616);
    expect_param(m, "backbone.embeddings.cls_token", 3, (int64_t[]){1, 1, 32});
    expect_param(m, "backbone.embeddings.position_embeddings", 3, (int64_t[]){1, 17, 32});
    expect_param(m, "backbone.encoder.layer.1.intermediate.dense.weight", 2,
                 (int64_t[]){128, 32});
    vp_model_destroy(m);

    vt_ok(make_model(_i, "\"image\": 32, \"patch\": 4, \"width\": 16, \"depth\": 1, "
                         "\"heads\": 2, \"mlp_ratio\": 2, \"class_token\": false, "
                         "\"out_channels\": 8", 0, 1, &m));
    /* D = 16, G = 8, MLP 32, no class token, pyramid to 8 channels:
     *   pos 64*16 = 1024 + patch 16*3*4*4 + 16 = 784
     *   layer: norms 64 + q, k, v, out 4*(16*16 + 16) = 1088 + fc1 32*16 + 32 = 544
     *          + fc2 16*32 + 16 = 528 -> 2224; final norm 32
     *   pyramid: up 16*16*2*2 + 16 = 1040; 3 levels * (proj 16*8 + 8 + norm 16) = 456
     *   = 1024 + 784 + 2224 + 32 + 1040 + 456 = 5560 */
    ck_assert_int_eq(backbone_params(m), 5560);
    ck_assert_ptr_null(vp_graph_find(vp_model_graph(m), "backbone.embeddings.cls_token"));
    expect_param(m, "backbone.embeddings.position_embeddings", 3, (int64_t[]){1, 64, 16});
    expect_param(m, "backbone.pyramid.up.weight", 4, (int64_t[]){16, 16, 2, 2});
    expect_param(m, "backbone.pyramid.2.proj.weight", 2, (int64_t[]){8, 16});
    expect_param(m, "backbone.pyramid.0.norm.bias", 1, (int64_t[]){8});
    /* Sites: HF's module names, in build order. */
    static const struct {
        const char *path;
        vp_site_kind kind;
    } want[] = {{"backbone.encoder.layer.0.attention.attention.query", VP_SITE_LINEAR},
                {"backbone.encoder.layer.0.attention.attention.key", VP_SITE_LINEAR},
                {"backbone.encoder.layer.0.attention.attention.value", VP_SITE_LINEAR},
                {"backbone.encoder.layer.0.attention.output.dense", VP_SITE_LINEAR},
                {"backbone.encoder.layer.0.attention", VP_SITE_ATTN_OUT},
                {"backbone.encoder.layer.0.intermediate.dense", VP_SITE_LINEAR},
                {"backbone.encoder.layer.0.output.dense", VP_SITE_LINEAR},
                {"backbone.encoder.layer.0.output", VP_SITE_FFN_OUT},
                {"backbone.pyramid.0.proj", VP_SITE_LINEAR},
                {"backbone.pyramid.1.proj", VP_SITE_LINEAR},
                {"backbone.pyramid.2.proj", VP_SITE_LINEAR},
                {"head.classifier", VP_SITE_LINEAR}};
    const vp_build *b = vp_model_build(m);
    ck_assert_uint_eq(vp_build_site_count(b), sizeof want / sizeof want[0]);
    for (uint32_t i = 0; i < vp_build_site_count(b); i++) {
        ck_assert_str_eq(vp_build_site_at(b, i)->path, want[i].path);
        ck_assert_int_eq(vp_build_site_at(b, i)->kind, want[i].kind);
    }
    ck_assert_int_eq(vp_build_site_at(b, 5)->out_features, 32);
    vp_model_destroy(m);
}
END_TEST

/* ---- weights files ------------------------------------------------------------------ */

typedef struct saved {
    vp_st_entry e[64];
    char names[64][128];
    int64_t shapes[64][4];
    float *vals[64];
    size_t n;
} saved;

/* The backbone parameters (not the pyramid's) of a compiled build, under
 * HF names with prefix. */
static void save_params(const vp_build *b, vp_graph *g, const char *prefix, saved *s)
{
    memset(s, 0, sizeof *s);
    for (uint32_t i = 0; i < vp_build_param_count(b); i++) {
        vp_gt *t = vp_build_param_at(b, i)->t;
        if (strncmp(vp_gt_name(t), "backbone.", 9) || !strncmp(vp_gt_name(t), "backbone.pyramid.", 17))
            continue;
        ck_assert_uint_lt(s->n, 60);
        size_t n = s->n++;
        s->vals[n] = malloc((size_t)vp_gt_nelem(t) * 4);
        vt_ok(vp_graph_read(g, t, s->vals[n], (size_t)vp_gt_nelem(t) * 4));
        memcpy(s->shapes[n], vp_gt_shape(t), sizeof s->shapes[n]);
        snprintf(s->names[n], sizeof s->names[n], "%s%s", prefix, vp_gt_name(t) + 9);
        s->e[n] = (vp_st_entry){s->names[n], VP_ST_F32, vp_gt_ndim(t), s->shapes[n], s->vals[n]};
    }
}

static void saved_free(saved *s)
{
    for (size_t i = 0; i < s->n; i++)
        free(s->vals[i]);
}

static size_t saved_find(const saved *s, const char *name)
{
    for (size_t i = 0; i < s->n; i++)
        if (!strcmp(s->names[i], name))
            return i;
    ck_abort_msg("no tensor %s", name);
    return 0;
}

static void temp_dir(char *dir, size_t n)
{
    const char *tmp = getenv("TMPDIR");
    snprintf(dir, n, "%s/vpeft-vit-XXXXXX", tmp && tmp[0] ? tmp : "/tmp");
    ck_assert_ptr_nonnull(mkdtemp(dir));
}

START_TEST(test_weights_roundtrip)
{
    char dir[256], path[320], bb[1024], want[1024];
    temp_dir(dir, sizeof dir);
    snprintf(path, sizeof path, "%s/vit.safetensors", dir);
    vp_model *m;
    vt_ok(make_model(_i, tiny, 3, 1, &m));
    saved s;
    save_params(vp_model_build(m), vp_model_graph(m), "vit.", &s);
    vp_model_destroy(m);
    ck_assert_uint_eq(s.n, 2 + 2 + 2 * 16 + 2);
    /* What ViTForImageClassification adds (a classifier outside the "vit."
     * prefix) and ViTModel's pooler are ignored. */
    size_t n = s.n;
    int64_t cls_shape[2] = {10, 32}, pool_shape[1] = {32};
    float *junk = calloc(320, sizeof *junk);
    s.e[n++] = (vp_st_entry){"classifier.weight", VP_ST_F32, 2, cls_shape, junk};
    s.e[n++] = (vp_st_entry){"vit.pooler.dense.bias", VP_ST_F32, 1, pool_shape, junk};
    vt_ok(vp_st_write(path, s.e, n, NULL, 0));

    /* Loaded with another seed, the backbone has the file's values. */
    snprintf(bb, sizeof bb, "%s, \"weights\": \"%s\"", tiny, path);
    vt_ok(make_model(_i, bb, 9, 1, &m));
    for (size_t i = 0; i < s.n; i++) {
        char name[160];
        snprintf(name, sizeof name, "backbone.%s", s.names[i] + 4);
        vp_gt *t = vp_graph_find(vp_model_graph(m), name);
        ck_assert_msg(t != NULL, "%s", name);
        size_t bytes = (size_t)vp_gt_nelem(t) * 4;
        float *got = malloc(bytes);
        vt_ok(vp_graph_read(vp_model_graph(m), t, got, bytes));
        ck_assert_msg(!memcmp(got, s.vals[i], bytes), "%s", name);
        free(got);
    }
    vp_model_destroy(m);

    /* A wrong shape: the host's message, with the key and both shapes. */
    size_t q = saved_find(&s, "vit.encoder.layer.0.attention.attention.query.weight");
    int64_t wrong[2] = {16, 64};
    s.e[q].shape = wrong;
    vt_ok(vp_st_write(path, s.e, s.n, NULL, 0));
    snprintf(want, sizeof want, "vit: build: parameter backbone.encoder.layer.0.attention."
             "attention.query.weight: %s: tensor \"vit.encoder.layer.0.attention.attention."
             "query.weight\" has shape (16, 64), expected (32, 32)", path);
    expect_model_err(_i, bb, VP_ERR_SHAPE, want);
    s.e[q].shape = s.shapes[q];

    /* A missing tensor: named, with the shape it should have. */
    size_t last = saved_find(&s, "vit.encoder.layer.1.output.dense.bias");
    vp_st_entry keep = s.e[last];
    s.e[last] = s.e[s.n - 1];
    vt_ok(vp_st_write(path, s.e, s.n - 1, NULL, 0));
    snprintf(want, sizeof want, "vit: build: %s: no tensor \"vit.encoder.layer.1.output."
             "dense.bias\" (this ViT needs it with shape (32))", path);
    expect_model_err(_i, bb, VP_ERR_NOT_FOUND, want);
    s.e[s.n - 1] = s.e[last];
    s.e[last] = keep;

    /* A tensor this ViT does not have (a deeper checkpoint's). */
    s.e[s.n] = (vp_st_entry){"vit.encoder.layer.2.output.dense.bias", VP_ST_F32, 1, pool_shape,
                             junk};
    vt_ok(vp_st_write(path, s.e, s.n + 1, NULL, 0));
    snprintf(want, sizeof want, "vit: build: %s: tensor \"vit.encoder.layer.2.output.dense."
             "bias\" is not part of this ViT (depth 2, width 32, with a class token)", path);
    expect_model_err(_i, bb, VP_ERR_INVALID, want);

    /* A distilled DeiT: refused whole, not half-loaded. */
    int64_t tok_shape[3] = {1, 1, 32};
    s.e[s.n] = (vp_st_entry){"vit.embeddings.distillation_token", VP_ST_F32, 3, tok_shape, junk};
    vt_ok(vp_st_write(path, s.e, s.n + 1, NULL, 0));
    snprintf(want, sizeof want, "vit: build: %s: tensor \"vit.embeddings.distillation_token"
             "\": a distilled DeiT checkpoint; its distillation token has no place in a ViT "
             "(use a checkpoint without one)", path);
    expect_model_err(_i, bb, VP_ERR_INVALID, want);

    /* No class token in the config, one in the file. */
    char nocls[1024];
    snprintf(nocls, sizeof nocls, "\"image\": 16, \"patch\": 4, \"width\": 32, \"depth\": 2, "
             "\"heads\": 2, \"class_token\": false, \"pyramid\": false, \"weights\": \"%s\"",
             path);
    vt_ok(vp_st_write(path, s.e, s.n, NULL, 0));
    snprintf(want, sizeof want, "vit: build: parameter backbone.embeddings.position_embeddings: "
             "%s: tensor \"vit.embeddings.position_embeddings\" has shape (1, 17, 32), expected "
             "(1, 16, 32)", path);
    expect_model_err(_i, nocls, VP_ERR_SHAPE, want);

    free(junk);
    saved_free(&s);
    unlink(path);
    rmdir(dir);
}
END_TEST

/* ---- position embeddings on another grid ---------------------------------------- */

/* F.interpolate(mode='bilinear', align_corners=False) of the coordinates
 * 0 .. n0-1 to n points: where output point d samples the input. */
static double resized_coord(int d, int n0, int n)
{
    double src = (d + 0.5) * n0 / n - 0.5;
    return src < 0 ? 0 : src > n0 - 1 ? n0 - 1 : src;
}

/* The HF tiny weights with position embeddings r*i + s*j + t on a g x g
 * grid: i, j the row and column, or, resized, the coordinates on the 4x4
 * grid that each point of the g x g grid samples. */
static void write_linear_pos(const char *path, int g, bool resized)
{
    vp_st *st;
    vt_ok(vp_st_open(hf_weights, &st));
    size_t n = vp_st_count(st);
    vp_st_entry *e = calloc(n, sizeof *e);
    float **vals = calloc(n, sizeof *vals);
    int64_t pos_shape[3] = {1, 1 + g * g, 32};
    for (size_t k = 0; k < n; k++) {
        const vp_st_tensor *t = vp_st_get(st, k);
        vals[k] = malloc((size_t)t->nelem * 4 + (size_t)(1 + g * g) * 32 * 4);
        vt_ok(vp_st_read_f32(st, t->name, vals[k], (size_t)t->nelem));
        e[k] = (vp_st_entry){t->name, VP_ST_F32, t->ndim, t->shape, vals[k]};
        if (strcmp(t->name, "embeddings.position_embeddings"))
            continue;
        /* Row 0 (the class token's) stays; the grid becomes linear. */
        e[k].shape = pos_shape;
        for (int i = 0; i < g; i++)
            for (int j = 0; j < g; j++)
                for (int c = 0; c < 32; c++) {
                    double ci = resized ? resized_coord(i, 4, g) : i;
                    double cj = resized ? resized_coord(j, 4, g) : j;
                    vals[k][(1 + i * g + j) * 32 + c] =
                        (float)(0.05 * (c % 7 - 3) * ci - 0.03 * (c % 5 - 2) * cj + 0.01 * c);
                }
    }
    vt_ok(vp_st_write(path, e, n, NULL, 0));
    for (size_t k = 0; k < n; k++)
        free(vals[k]);
    free(vals);
    free(e);
    vp_st_close(st);
}

START_TEST(test_pos_interpolation)
{
    char dir[256], a[320], b[320], bb[1024];
    temp_dir(dir, sizeof dir);
    snprintf(a, sizeof a, "%s/grid4.safetensors", dir);
    snprintf(b, sizeof b, "%s/grid6.safetensors", dir);
    /* a: pretrained on a 4x4 grid; b: its bilinear resize to 6x6, computed
     * here. At image 24 (grid 6) both must give one model. */
    write_linear_pos(a, 4, false);
    write_linear_pos(b, 6, true);
    const char *cfg = "\"image\": 24, \"patch\": 4, \"width\": 32, \"depth\": 2, \"heads\": 2, "
                      "\"pyramid\": false";
    vp_model *ma, *mb;
    snprintf(bb, sizeof bb, "%s, \"weights\": \"%s\"", cfg, a);
    vt_ok(make_model(_i, bb, 0, 2, &ma));
    snprintf(bb, sizeof bb, "%s, \"weights\": \"%s\"", cfg, b);
    vt_ok(make_model(_i, bb, 0, 2, &mb));
    expect_param(ma, "backbone.embeddings.position_embeddings", 3, (int64_t[]){1, 17, 32});
    expect_param(mb, "backbone.embeddings.position_embeddings", 3, (int64_t[]){1, 37, 32});
    run_on(ma, NULL, 11);
    run_on(mb, NULL, 11);
    int64_t n;
    float *ya = read_out(ma, "backbone.last_hidden_state", &n);
    float *yb = read_out(mb, "backbone.last_hidden_state", &n);
    ck_assert_int_eq(n, 2 * 37 * 32);
    double *da = vt_f64(ya, (size_t)n), *db = vt_f64(yb, (size_t)n);
    for (int64_t i = 0; i < n; i++)
        ck_assert_msg(isfinite(da[i]), "element %lld is %g", (long long)i, da[i]);
    vt_assert_rel_close(da, db, (size_t)n, 1e-5, "grid 4 resized vs grid 6");
    free(da);
    free(db);
    free(ya);
    free(yb);
    vp_model_destroy(ma);
    vp_model_destroy(mb);
    unlink(a);
    unlink(b);
    rmdir(dir);
}
END_TEST

/* ---- the pyramid, built through the backbone interface -------------------------- */

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

static void expect_level(const bb_run *r, int l, int64_t h, int64_t c, int32_t stride)
{
    const int64_t *s = vp_gt_shape(r->f.map[l]);
    ck_assert_int_eq(vp_gt_ndim(r->f.map[l]), 4);
    ck_assert_msg(s[1] == h && s[2] == h && s[3] == c, "level %d: (%lld, %lld, %lld, %lld)", l,
                  (long long)s[0], (long long)s[1], (long long)s[2], (long long)s[3]);
    ck_assert_int_eq(r->f.stride[l], stride);
    char name[32];
    snprintf(name, sizeof name, "backbone.features.%d", l);
    ck_assert_ptr_eq(vp_build_output_find(r->b, name), r->f.map[l]);
}

START_TEST(test_pyramid)
{
    bb_run r;
    bb_build(_i, "\"image\": 32, \"patch\": 4, \"width\": 16, \"depth\": 1, \"heads\": 2, "
                 "\"out_channels\": 8", 2, &r);
    ck_assert_uint_eq(r.f.n, 3);
    expect_level(&r, 0, 16, 8, 2);
    expect_level(&r, 1, 8, 8, 4);
    expect_level(&r, 2, 4, 8, 8);
    const int64_t *s = vp_gt_shape(vp_build_output_find(r.b, "backbone.last_hidden_state"));
    ck_assert(s[0] == 2 && s[1] == 65 && s[2] == 16);
    bb_release(&r);
}
END_TEST

/* Every trainable gradient of a small pyramid model against finite
 * differences of the double-precision reference: loss = sum over levels
 * of mean(level * R_l), R_l fixed random. Its weights come from a model
 * of image 4 (grid 2), so the position embeddings are resized to grid 4
 * in the graph, and must still train. */
START_TEST(test_pyramid_gradients)
{
    char dir[256], path[320], fields[512];
    temp_dir(dir, sizeof dir);
    snprintf(path, sizeof path, "%s/grid2.safetensors", dir);
    const char *common = "\"patch\": 2, \"width\": 8, \"depth\": 1, \"heads\": 2, "
                         "\"mlp_ratio\": 2, \"out_channels\": 4, \"layer_norm_eps\": 1e-6";
    bb_run r;
    snprintf(fields, sizeof fields, "\"image\": 4, %s", common);
    bb_build(_i, fields, 1, &r);
    vt_ok(vp_graph_compile(vp_build_graph(r.b)));
    vt_ok(vp_build_init_params(r.b));
    saved s;
    save_params(r.b, vp_build_graph(r.b), "", &s);
    vt_ok(vp_st_write(path, s.e, s.n, NULL, 0));
    saved_free(&s);
    bb_release(&r);

    snprintf(fields, sizeof fields, "\"image\": 8, %s, \"weights\": \"%s\"", common, path);
    bb_build(_i, fields, 1, &r);
    vp_graph *g = vp_build_graph(r.b);
    ck_assert_int_eq(vp_gt_shape(vp_graph_find(g, "backbone.embeddings.position_embeddings"))[1],
                     1 + 2 * 2);
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
    float img[3 * 8 * 8];
    vt_rand(img, 3 * 8 * 8, 5);
    vp_verify v;
    vt_ok(vp_verify_graph(g, loss, r.f.map[0], 1, &r.image, (const void *[]){img}, 16, &v));
    /* Every parameter has a gradient: 4 embedding tensors (cls, pos, patch
     * weight and bias), 16 per layer, 2 final norm, 2 + 3 * 4 pyramid. */
    ck_assert_uint_eq(v.params_checked, 4 + 16 + 2 + 2 + 12);
    ck_assert_msg(v.out_err < 1e-4, "forward error %g", v.out_err);
    ck_assert_msg(v.grad_err < 2e-3, "gradient error %g at %s", v.grad_err, v.grad_worst);
    printf("vit: pyramid model: forward error %.2g, gradients of %u parameters (%llu elements) "
           "within %.2g\n", v.out_err, v.params_checked, (unsigned long long)v.grad_checked,
           v.grad_err);
    bb_release(&r);
    unlink(path);
    rmdir(dir);
}
END_TEST

/* ---- config errors -------------------------------------------------------------------- */

START_TEST(test_config_errors)
{
    expect_model_err(_i, "\"widht\": 32", VP_ERR_CONFIG,
                     "vit: m.json: model.backbone.widht: unknown field, did you mean 'width'?");
    expect_model_err(_i, "\"image\": 30, \"patch\": 16", VP_ERR_CONFIG,
                     "vit: m.json: model.backbone.image: 30 is not a multiple of the patch size 16");
    expect_model_err(_i, "\"width\": 32, \"heads\": 3", VP_ERR_CONFIG,
                     "vit: m.json: model.backbone.heads: 3 does not divide the width 32");
    expect_model_err(_i, "\"image\": 12, \"patch\": 4", VP_ERR_CONFIG,
                     "vit: m.json: model.backbone.pyramid: needs an even number of patches per "
                     "side for its 2x2 max-pool, got 12 / 4 = 3");
    expect_model_err(_i, "\"image\": 30, \"patch\": 3, \"pyramid\": true", VP_ERR_CONFIG,
                     "vit: m.json: model.backbone.pyramid: needs an even patch size (its finest "
                     "level has stride patch / 2), got 3");
    expect_model_err(_i, "\"depth\": 0", VP_ERR_CONFIG,
                     "vit: m.json: model.backbone.depth: must be from 1 to 1048576, got 0");
    /* refused before the 4 GiB input is allocated */
    expect_model_err(_i, "\"image\": 65536", VP_ERR_CONFIG,
                     "vit: m.json: model.backbone.image: must be at most 16384 pixels on a side, "
                     "got 65536");
    expect_model_err(_i, "\"mlp_ratio\": 0", VP_ERR_CONFIG,
                     "vit: m.json: model.backbone.mlp_ratio: must make an MLP of 1 to 4194304 "
                     "units from the width 768, got 0");
    expect_model_err(_i, "\"layer_norm_eps\": -1", VP_ERR_CONFIG,
                     "vit: m.json: model.backbone.layer_norm_eps: must be in (0, 1), got -1");
    expect_model_err(_i, "\"class_token\": 1", VP_ERR_CONFIG,
                     "vit: m.json: model.backbone.class_token: expected a boolean, got a number");
    /* A weights file that is not there: the safetensors reader's message. */
    vp_model *m = (vp_model *)&m;
    ck_assert_int_eq(make_model(_i, "\"image\": 16, \"patch\": 4, \"width\": 8, \"depth\": 1, "
                                    "\"heads\": 2, \"weights\": \"/nonexistent/v.safetensors\"",
                                0, 1, &m), VP_ERR_NOT_FOUND);
    ck_assert_ptr_null(m);
    const char *want = "vit: build: /nonexistent/v.safetensors: ";
    ck_assert_msg(!strncmp(vp_error_last(), want, strlen(want)), "%s", vp_error_last());
}
END_TEST

/* `vpeft embed` on the HF reference: the pixel values file in, the
 * backbone's last_hidden_state out, equal to transformers' within 1e-4. */
START_TEST(test_embed_hf)
{
    const char *bin = getenv("VPEFT_BIN");
    ck_assert_msg(bin != NULL, "VPEFT_BIN is not set (run through make check)");
    char dir[512], cfg[600], out[600];
    temp_dir(dir, sizeof dir);
    snprintf(cfg, sizeof cfg, "%s/embed.json", dir);
    snprintf(out, sizeof out, "%s/out.safetensors", dir);
    FILE *f = fopen(cfg, "w");
    ck_assert_ptr_nonnull(f);
    fprintf(f, "{\"model\": {\"backbone\": {\"plugin\": \"vit\", %s, \"weights\": \"%s\"}}}",
            tiny, hf_weights);
    fclose(f);
    ck_assert_int_eq(vt_sh("%s embed --config %s --image %s --out %s", bin, cfg, hf_io, out), 0);
    vt_assert_has(vt_out, "backbone.last_hidden_state (1, 17, 32)");
    vp_st *got, *ref;
    vt_ok(vp_st_open(out, &got));
    vt_ok(vp_st_open(hf_io, &ref));
    float g[17 * 32], w[17 * 32];
    vt_ok(vp_st_read_f32(got, "backbone.last_hidden_state", g, 17 * 32));
    vt_ok(vp_st_read_f32(ref, "last_hidden_state", w, 17 * 32));
    double emax = 0, wmax = 0;
    for (int i = 0; i < 17 * 32; i++) {
        emax = fmax(emax, fabs((double)g[i] - w[i]));
        wmax = fmax(wmax, fabs(w[i]));
    }
    ck_assert_msg(emax / wmax < 1e-4, "vpeft embed: relative error %g", emax / wmax);
    vp_st_close(got);
    vp_st_close(ref);
    vt_rm_rf(dir);
}
END_TEST

int main(void)
{
    /* The toy head (this suite is <build>/obj/tests/check_vit). */
    char exe[4096], path[4200];
    ssize_t len = readlink("/proc/self/exe", exe, sizeof exe - 1);
    if (len <= 0)
        return 1;
    exe[len] = '\0';
    *strrchr(exe, '/') = '\0';
    snprintf(path, sizeof path, "%s/plugins/m", exe);
    setenv("VPEFT_PLUGIN_PATH", path, 1);
    const char *src = getenv("VPEFT_SRCDIR");
    snprintf(hf_weights, sizeof hf_weights, "%s/tests/data/vit/hf-vit-tiny.safetensors",
             src ? src : ".");
    snprintf(hf_io, sizeof hf_io, "%s/tests/data/vit/hf-vit-tiny.io.safetensors", src ? src : ".");
    Suite *s = suite_create("vit");
    TCase *tc = vt_tcase("vit");
    vt_add_per_device(tc, test_hf_reference, NULL);
    vt_add_per_device(tc, test_param_counts, NULL);
    vt_add_per_device(tc, test_weights_roundtrip, NULL);
    vt_add_per_device(tc, test_pos_interpolation, NULL);
    vt_add_per_device(tc, test_pyramid, NULL);
    vt_add_per_device(tc, test_pyramid_gradients, NULL);
    vt_add_per_device(tc, test_config_errors, NULL);
    vt_add_per_device(tc, test_embed_hf, NULL);
    suite_add_tcase(s, tc);
    return vt_run(s);
}
