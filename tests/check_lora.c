/*
 * The `lora` PEFT plugin (plugins/lora/): `vpeft plugin-test` on the probe
 * transformer (sites, parameters, gradients against finite differences,
 * identity at init for each initialization), models built from configs on
 * the toy backbone and head (parameter counts and shapes by hand, only the
 * LoRA weights trainable, rank_pattern, alpha_pattern, exclude_modules and
 * use_rslora, the scale read off a linear site whose input is known, the
 * three initializations), each config error as its exact one-line message,
 * and the vit backbone with Hugging Face's ["query", "value"].
 *
 * The toy backbone and head come from this suite's VPEFT_PLUGIN_PATH
 * (<build>/obj/tests/plugins/m, as check_model); vpeft-lora.so and
 * vpeft-vit.so from the build's plugins/ next to libvpeft.so, where the
 * loader looks by itself.
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

static vp_config *parse(const char *text)
{
    vp_config *c;
    vt_ok(vp_cfg_parse(text, strlen(text), "m.json", &c));
    return c;
}

static const char *bin(void)
{
    const char *b = getenv("VPEFT_BIN");
    ck_assert_msg(b != NULL, "VPEFT_BIN is not set (run through make check)");
    return b;
}

/* ---- vpeft plugin-test ----------------------------------------------------------- */

typedef struct pt_result {
    unsigned sites;
    unsigned long long params;
    double grad_err;
    int identity; /* 1 yes, 0 no */
} pt_result;

/* Run `vpeft plugin-test` on {"peft": [{"plugin": "lora", <fields>}], "steps":
 * 3} and parse its report; it must pass. */
static pt_result plugin_test(const char *dir, const char *fields)
{
    char path[256];
    snprintf(path, sizeof path, "%s/t.json", dir);
    FILE *f = fopen(path, "w");
    ck_assert_ptr_nonnull(f);
    fprintf(f, "{\"peft\": [{\"plugin\": \"lora\", %s}], \"steps\": 3}\n", fields);
    fclose(f);
    int rc = vt_sh("%s plugin-test --config %s", bin(), path);
    ck_assert_msg(rc == 0, "plugin-test exit %d for %s:\n%s%s", rc, fields, vt_out, vt_err);
    pt_result r = {0, 0, -1, -1};
    const char *p = strstr(vt_out, "plugin-test: lora 0.1.0 (ABI ");
    ck_assert_msg(p != NULL, "no report line for lora in:\n%s", vt_out);
    p = strstr(p, "): ");
    ck_assert(p && sscanf(p + 3, "%u site", &r.sites) == 1);
    p = strstr(p, "), ");
    ck_assert(p && sscanf(p + 3, "%llu parameters", &r.params) == 1);
    p = strstr(vt_out, "plugin-test: gradients: ");
    ck_assert(p && (p = strstr(p, "worst error ")) && sscanf(p + 12, "%lg", &r.grad_err) == 1);
    if (strstr(vt_out, "plugin-test: identity at init: yes"))
        r.identity = 1;
    else if (strstr(vt_out, "plugin-test: identity at init: no"))
        r.identity = 0;
    vt_assert_has(vt_out, "\nplugin-test: ok\n");
    printf("lora: plugin-test {%s}: %u sites, %llu parameters, gradient error %.2g, identity "
           "%s\n", fields, r.sites, r.params, r.grad_err, r.identity ? "yes" : "no");
    return r;
}

START_TEST(test_plugin_test)
{
    char dir[256];
    snprintf(dir, sizeof dir, "%s/vpeft-lora-XXXXXX", getenv("TMPDIR") ? getenv("TMPDIR") : "/tmp");
    ck_assert_ptr_nonnull(mkdtemp(dir));
    /* The probe: 2 blocks of width 16, qkv 16 -> 48, fc2 32 -> 16; r 8:
     * 2 x 8 x ((16 + 48) + (32 + 16)) = 1792. */
    pt_result r = plugin_test(dir, "\"target_modules\": [\"qkv\", \"fc2\"]");
    ck_assert_uint_eq(r.sites, 4);
    ck_assert_uint_eq(r.params, 1792);
    ck_assert_msg(r.grad_err >= 0 && r.grad_err < 2e-3, "gradient error %g", r.grad_err);
    ck_assert_int_eq(r.identity, 1);

    /* B random too: the model changes at init, and B's gradient is not the
     * only one the check sees. */
    r = plugin_test(dir, "\"target_modules\": [\"qkv\", \"fc2\"], \"init_lora_weights\": false");
    ck_assert_uint_eq(r.sites, 4);
    ck_assert_msg(r.grad_err >= 0 && r.grad_err < 2e-3, "gradient error %g", r.grad_err);
    ck_assert_int_eq(r.identity, 0);

    /* Gaussian A, B zero: identity again. Every linear site (13: 4 per
     * block, the deformable module's 4, the head), with one rank and one
     * alpha changed by pattern and rsLoRA's scale. */
    r = plugin_test(dir, "\"target_modules\": \"all-linear\", \"r\": 4, \"lora_alpha\": 2, "
                         "\"init_lora_weights\": \"gaussian\", \"use_rslora\": true, "
                         "\"rank_pattern\": {\"probe.head\": 2}, \"alpha_pattern\": {\"fc1\": 6}");
    ck_assert_uint_eq(r.sites, 13);
    ck_assert_int_eq(r.identity, 1);
    ck_assert_msg(r.grad_err >= 0 && r.grad_err < 2e-3, "gradient error %g", r.grad_err);

    /* A regex, and the other initialization with patterns on both blocks. */
    r = plugin_test(dir, "\"target_modules\": \"probe\\\\.blocks\\\\.1\\\\..*\", \"r\": 2, "
                         "\"init_lora_weights\": false, \"exclude_modules\": [\"fc1\"]");
    ck_assert_uint_eq(r.sites, 3); /* qkv, proj, fc2 of block 1 */
    ck_assert_uint_eq(r.params, 2 * ((16 + 48) + (16 + 16) + (32 + 16)));
    ck_assert_msg(r.grad_err >= 0 && r.grad_err < 2e-3, "gradient error %g", r.grad_err);
    vt_rm_rf(dir);
}
END_TEST

/* ---- models on the toy backbone and head ------------------------------------------ */

/* The toy model (width 8: qkv 8 -> 24, proj 8 -> 8, fc1 8 -> 16, fc2 16 -> 8,
 * head.classifier 8 -> 3) with one lora entry. */
static vp_status toy_model(int dev, const char *fields, bool train, vp_model **m)
{
    char text[2048];
    snprintf(text, sizeof text,
             "{\"model\": {\"backbone\": {\"plugin\": \"toybackbone\", \"width\": 8},"
             " \"head\": {\"plugin\": \"toyhead\", \"classes\": 3}},"
             " \"peft\": [{\"plugin\": \"lora\", %s}], \"train\": {\"seed\": 2}}", fields);
    vp_config *c = parse(text);
    *m = (vp_model *)m;
    vp_status st = vp_model_create(vt_device((uint32_t)dev), c,
                                   &(vp_model_opts){.batch = 2, .train = train}, m);
    vp_cfg_free(c);
    return st;
}

static vp_gt *find(vp_model *m, const char *name)
{
    vp_gt *t = vp_graph_find(vp_model_graph(m), name);
    ck_assert_msg(t != NULL, "no tensor %s", name);
    return t;
}

static void assert_shape2(vp_model *m, const char *name, int64_t a, int64_t b)
{
    vp_gt *t = find(m, name);
    ck_assert_int_eq(vp_gt_ndim(t), 2);
    ck_assert_msg(vp_gt_shape(t)[0] == a && vp_gt_shape(t)[1] == b, "%s is (%lld, %lld), want "
                  "(%lld, %lld)", name, (long long)vp_gt_shape(t)[0],
                  (long long)vp_gt_shape(t)[1], (long long)a, (long long)b);
}

static uint64_t align_up(uint64_t v, uint64_t a) { return (v + a - 1) / a * a; }

START_TEST(test_toy_params)
{
    /* r 4, fc1's rank 2 by pattern: 4 (8 + 24) + 4 (8 + 8) + 2 (8 + 16) = 240. */
    vp_model *m;
    vt_ok(toy_model(_i, "\"target_modules\": [\"qkv\", \"proj\", \"fc1\"], \"r\": 4, "
                        "\"rank_pattern\": {\"fc1\": 2}, \"alpha_pattern\": {\"proj\": 16}",
                    true, &m));
    assert_shape2(m, "backbone.blocks.0.attn.qkv.lora_A.weight", 4, 8);
    assert_shape2(m, "backbone.blocks.0.attn.qkv.lora_B.weight", 24, 4);
    assert_shape2(m, "backbone.blocks.0.attn.proj.lora_A.weight", 4, 8);
    assert_shape2(m, "backbone.blocks.0.attn.proj.lora_B.weight", 8, 4);
    assert_shape2(m, "backbone.blocks.0.mlp.fc1.lora_A.weight", 2, 8);
    assert_shape2(m, "backbone.blocks.0.mlp.fc1.lora_B.weight", 16, 2);
    ck_assert_ptr_null(vp_graph_find(vp_model_graph(m), "backbone.blocks.0.mlp.fc2.lora_A.weight"));

    /* The method's parameters are the LoRA weights, and they alone train. */
    const vp_build *b = vp_model_build(m);
    uint64_t own = 0, bytes = 0, align = vt_device_info((uint32_t)_i)->storage_align;
    align = align > 16 ? align : 16; /* as the planner lays parameters out */
    uint32_t n_own = 0;
    for (uint32_t i = 0; i < vp_build_param_count(b); i++) {
        const vp_build_param *p = vp_build_param_at(b, i);
        const char *name = vp_gt_name(p->t);
        bool lora = strstr(name, ".lora_A.weight") || strstr(name, ".lora_B.weight");
        ck_assert_msg((p->owner == 1) == lora, "%s: owner %u", name, p->owner);
        ck_assert_msg(vp_gt_trainable(p->t) == lora, "%s: trainable %d", name,
                      vp_gt_trainable(p->t));
        ck_assert_msg((vp_g_grad(p->t) != NULL) == lora, "%s: gradient", name);
        if (lora) {
            own += (uint64_t)vp_gt_nelem(p->t);
            bytes += align_up((uint64_t)vp_gt_nelem(p->t) * 4, align);
            n_own++;
        }
    }
    ck_assert_uint_eq(n_own, 6);
    ck_assert_uint_eq(own, 240);
    vp_graph_mem mem = vp_graph_memory(vp_model_graph(m));
    ck_assert_uint_eq(mem.trainable, bytes);
    ck_assert_uint_eq(mem.grads, bytes);
    printf("lora: toy model: %llu LoRA parameters (%llu trainable bytes)\n",
           (unsigned long long)own, (unsigned long long)mem.trainable);
    vp_model_destroy(m);

    /* exclude_modules drops sites the targets pick. */
    vt_ok(toy_model(_i, "\"target_modules\": [\"qkv\", \"classifier\"], \"exclude_modules\": "
                        "[\"head.*\"]", false, &m));
    find(m, "backbone.blocks.0.attn.qkv.lora_A.weight");
    ck_assert_ptr_null(vp_graph_find(vp_model_graph(m), "head.classifier.lora_A.weight"));
    b = vp_model_build(m);
    uint32_t attached = 0;
    for (uint32_t i = 0; i < vp_build_site_count(b); i++)
        attached += vp_build_site_at(b, i)->attached & 1u;
    ck_assert_uint_eq(attached, 1);
    vp_model_destroy(m);
}
END_TEST

/* Random images into m's input. */
static void toy_images(vp_model *m)
{
    vp_gt *img = vp_model_image(m);
    size_t n = (size_t)vp_gt_nelem(img);
    float *x = malloc(n * sizeof *x);
    ck_assert_ptr_nonnull(x);
    vt_rand(x, n, 17);
    vt_ok(vp_graph_write(vp_model_graph(m), img, x, n * sizeof *x));
    free(x);
}

static void write_param(vp_model *m, const char *name, const float *v, size_t n)
{
    vp_gt *t = find(m, name);
    ck_assert_int_eq(vp_gt_nelem(t), (int64_t)n);
    vt_ok(vp_graph_write(vp_model_graph(m), t, v, n * sizeof *v));
}

static void run_logits(vp_model *m, float out[6])
{
    vt_ok(vp_graph_run(vp_model_graph(m)));
    vt_ok(vp_graph_read(vp_model_graph(m), vp_model_output(m, "logits"), out, 6 * sizeof *out));
}

/* The scale of the LoRA on head.classifier (pooled features p (2, 8) ->
 * logits (2, 3)), measured: with the base weight [e0; e1; e2] and bias 0
 * the logits are p's first three columns, so with A's rows e0, e1, e2
 * (then zeros) and B random, the adapted logits must be
 *     y_j = p_j + scale * sum_{k<3} B[j][k] p_k
 * where p_j are the logits with B = 0 (same images, same backbone). */
static void check_scale(int dev, const char *fields, int64_t r, double want)
{
    vp_model *m;
    vt_ok(toy_model(dev, fields, false, &m));
    assert_shape2(m, "head.classifier.lora_A.weight", r, 8);
    assert_shape2(m, "head.classifier.lora_B.weight", 3, r);
    float w[3 * 8] = {0}, bias[3] = {0}, *A = calloc((size_t)r * 8, sizeof *A);
    float *B = calloc((size_t)(3 * r), sizeof *B), *zero = calloc((size_t)(3 * r), sizeof *zero);
    ck_assert(A && B && zero && r >= 3);
    for (int j = 0; j < 3; j++)
        w[j * 8 + j] = A[j * 8 + j] = 1.0f;
    vt_rand(B, (size_t)(3 * r), 5);
    write_param(m, "head.classifier.weight", w, 24);
    write_param(m, "head.classifier.bias", bias, 3);
    write_param(m, "head.classifier.lora_A.weight", A, (size_t)r * 8);
    write_param(m, "head.classifier.lora_B.weight", zero, (size_t)(3 * r));
    toy_images(m);
    float p[6], y[6];
    run_logits(m, p);
    write_param(m, "head.classifier.lora_B.weight", B, (size_t)(3 * r));
    run_logits(m, y);
    double emax = 0, ymax = 0, dmax = 0;
    for (int i = 0; i < 2; i++)
        for (int j = 0; j < 3; j++) {
            double d = 0;
            for (int k = 0; k < 3; k++)
                d += (double)B[j * r + k] * p[i * 3 + k];
            double e = (double)p[i * 3 + j] + want * d;
            emax = fmax(emax, fabs(y[i * 3 + j] - e));
            ymax = fmax(ymax, fabs(e));
            dmax = fmax(dmax, fabs(want * d));
        }
    ck_assert_msg(dmax > 0.05 * ymax, "the LoRA term is too small to measure (%g of %g)", dmax,
                  ymax);
    ck_assert_msg(emax < 1e-5 * ymax, "{%s}: logits differ from p + %g B A p by %g (largest %g)",
                  fields, want, emax, ymax);
    free(A);
    free(B);
    free(zero);
    vp_model_destroy(m);
}

START_TEST(test_toy_scale)
{
    /* alpha / r */
    check_scale(_i, "\"target_modules\": [\"classifier\"], \"r\": 4, \"lora_alpha\": 8", 4, 2.0);
    /* rsLoRA: alpha / sqrt(r) */
    check_scale(_i, "\"target_modules\": [\"classifier\"], \"r\": 4, \"lora_alpha\": 8, "
                    "\"use_rslora\": true", 4, 4.0);
    /* The first matching pattern wins ("head.*" before "classifier"), for
     * the rank and for the alpha; qkv keeps r and lora_alpha. */
    check_scale(_i, "\"target_modules\": [\"classifier\", \"qkv\"], \"r\": 4, \"lora_alpha\": 8, "
                    "\"rank_pattern\": {\"head.*\": 3, \"classifier\": 6}, "
                    "\"alpha_pattern\": {\"qkv\": 1, \"head.classifier\": 4.5}", 3, 1.5);
    check_scale(_i, "\"target_modules\": [\"classifier\"], \"r\": 9, \"lora_alpha\": 2, "
                    "\"use_rslora\": true, \"alpha_pattern\": {\"classifier\": 6}", 9, 2.0);
    vp_model *m;
    vt_ok(toy_model(_i, "\"target_modules\": [\"classifier\", \"qkv\"], \"r\": 4, "
                        "\"rank_pattern\": {\"head.*\": 3}", false, &m));
    assert_shape2(m, "backbone.blocks.0.attn.qkv.lora_A.weight", 4, 8);
    vp_model_destroy(m);
}
END_TEST

/* Read a parameter into a new buffer. */
static float *read_param(vp_model *m, const char *name, int64_t *n)
{
    vp_gt *t = find(m, name);
    *n = vp_gt_nelem(t);
    float *v = malloc((size_t)*n * sizeof *v);
    ck_assert_ptr_nonnull(v);
    vt_ok(vp_graph_read(vp_model_graph(m), t, v, (size_t)*n * sizeof *v));
    return v;
}

/* qkv's A (16, 8) and B (24, 16) under one init: largest |value| and
 * standard deviation of each. */
static void init_stats(int dev, const char *init, double a[2], double b[2])
{
    char fields[256];
    snprintf(fields, sizeof fields, "\"target_modules\": [\"qkv\"], \"r\": 16, "
             "\"init_lora_weights\": %s", init);
    vp_model *m;
    vt_ok(toy_model(dev, fields, false, &m));
    for (int w = 0; w < 2; w++) {
        int64_t n;
        float *v = read_param(m, w ? "backbone.blocks.0.attn.qkv.lora_B.weight"
                                   : "backbone.blocks.0.attn.qkv.lora_A.weight", &n);
        double mx = 0, ss = 0;
        for (int64_t i = 0; i < n; i++) {
            mx = fmax(mx, fabs(v[i]));
            ss += (double)v[i] * v[i];
        }
        double *s = w ? b : a;
        s[0] = mx;
        s[1] = sqrt(ss / (double)n);
        free(v);
    }
    vp_model_destroy(m);
}

START_TEST(test_toy_init)
{
    double a[2], b[2];
    /* true: A as nn.Linear's weight, U(-1/sqrt(in), 1/sqrt(in)), B 0. */
    init_stats(_i, "true", a, b);
    ck_assert_msg(a[0] <= 1 / sqrt(8.0) && a[0] > 0.8 / sqrt(8.0), "A max %g", a[0]);
    ck_assert(b[0] == 0.0);
    /* "gaussian": A N(0, 1/r) (128 values: std within 25%), B 0. */
    init_stats(_i, "\"gaussian\"", a, b);
    ck_assert_msg(fabs(a[1] - 1.0 / 16) < 0.25 / 16, "A std %g", a[1]);
    ck_assert(b[0] == 0.0);
    /* false: HF leaves both as nn.Linear made them: B U(-1/sqrt(r), 1/sqrt(r)). */
    init_stats(_i, "false", a, b);
    ck_assert_msg(a[0] <= 1 / sqrt(8.0) && a[0] > 0.8 / sqrt(8.0), "A max %g", a[0]);
    ck_assert_msg(b[0] <= 0.25 && b[0] > 0.8 * 0.25, "B max %g", b[0]);
}
END_TEST

/* ---- config errors ------------------------------------------------------------------ */

static void expect_err(int dev, const char *fields, vp_status code, const char *want)
{
    vp_model *m;
    ck_assert_int_eq(toy_model(dev, fields, false, &m), code);
    ck_assert_ptr_null(m);
    ck_assert_str_eq(vp_error_last(), want);
}

START_TEST(test_config_errors)
{
    const char *q = "\"target_modules\": [\"qkv\"], ";
    char f[512];
#define ERR(fields, code, msg)                                                                  \
    do {                                                                                        \
        snprintf(f, sizeof f, "%s%s", q, fields);                                               \
        expect_err(_i, f, code, msg);                                                           \
    } while (0)
    ERR("\"r\": 0", VP_ERR_CONFIG, "lora: m.json: peft[0].r: a rank must be at least 1, got 0");
    ERR("\"r\": 2000000", VP_ERR_CONFIG,
        "lora: m.json: peft[0].r: a rank of 2000000 is more than vpeft allows (1048576)");
    ERR("\"r\": 2.5", VP_ERR_CONFIG, "lora: m.json: peft[0].r: expected an integer, got 2.5");
    ERR("\"lora_alpha\": -1", VP_ERR_CONFIG,
        "lora: m.json: peft[0].lora_alpha: must be a number >= 0, got -1");
    ERR("\"lora_dropout\": 1", VP_ERR_CONFIG,
        "lora: m.json: peft[0].lora_dropout: must be in [0, 1), got 1");
    ERR("\"lora_alhpa\": 16", VP_ERR_CONFIG,
        "lora: m.json: peft[0].lora_alhpa: unknown field, did you mean 'lora_alpha'?");
    ERR("\"use_dora\": true", VP_ERR_CONFIG,
        "lora: m.json: peft[0].use_dora: unknown field (expected one of: plugin, r, lora_alpha, "
        "lora_dropout, target_modules, exclude_modules, use_rslora, init_lora_weights, "
        "rank_pattern, alpha_pattern, bias, modules_to_save, name)");
    ERR("\"rank_pattern\": {\"qkv\": 0}", VP_ERR_CONFIG,
        "lora: m.json: peft[0].rank_pattern.qkv: a rank must be at least 1, got 0");
    ERR("\"rank_pattern\": {\"qkv\": \"8\"}", VP_ERR_CONFIG,
        "lora: m.json: peft[0].rank_pattern.qkv: expected an integer, got a string");
    ERR("\"rank_pattern\": [\"qkv\"]", VP_ERR_CONFIG,
        "lora: m.json: peft[0].rank_pattern: expected an object from module names or globs to "
        "ranks");
    ERR("\"alpha_pattern\": {\"fc1\": 4, \"qkv\": -0.5}", VP_ERR_CONFIG,
        "lora: m.json: peft[0].alpha_pattern.qkv: an alpha must be a number >= 0, got -0.5");
    ERR("\"modules_to_save\": [\"classifier\"]", VP_ERR_CONFIG,
        "lora: m.json: peft[0].modules_to_save: not supported: train whole modules with "
        "train.trainable, globs over parameter names (e.g. [\"head.classifier.*\"])");
    ERR("\"bias\": \"lora_only\"", VP_ERR_CONFIG,
        "lora: m.json: peft[0].bias: \"lora_only\" is not supported, only \"none\": train biases "
        "with train.trainable (e.g. [\"*.bias\"])");
    ERR("\"init_lora_weights\": \"pissa\"", VP_ERR_CONFIG,
        "lora: m.json: peft[0].init_lora_weights: \"pissa\" is not supported (true, false or "
        "\"gaussian\")");
    ERR("\"use_rslora\": 1", VP_ERR_CONFIG,
        "lora: m.json: peft[0].use_rslora: expected a boolean, got a number");
#undef ERR
    expect_err(_i, "\"r\": 4", VP_ERR_CONFIG,
               "lora: m.json: peft[0].target_modules: missing: which linear layers to adapt: "
               "names or globs ([\"query\", \"value\"]), one regular expression, or "
               "\"all-linear\"");
    expect_err(_i, "\"target_modules\": [\"query\", \"value\"]", VP_ERR_CONFIG,
               "peft[0] (lora): selects no site of the model (it has 7 sites)");
    expect_err(_i, "\"target_modules\": \"blocks\\\\.0\\\\.attn\\\\.qkv\"", VP_ERR_CONFIG,
               "peft[0] (lora): selects no site of the model (it has 7 sites)");
    expect_err(_i, "\"target_modules\": [\"qkv\"], \"exclude_modules\": \"backbone\\\\..*\"",
               VP_ERR_CONFIG, "peft[0] (lora): selects no site of the model (it has 7 sites)");
    expect_err(_i, "\"target_modules\": []", VP_ERR_CONFIG,
               "lora: m.json: peft[0].target_modules: is empty: it selects no site");
    expect_err(_i, "\"target_modules\": 3", VP_ERR_CONFIG,
               "lora: m.json: peft[0].target_modules: expected a list of names or globs, or one "
               "regular expression string");
    /* Neutral values of refused fields are accepted. */
    vp_model *m;
    vt_ok(toy_model(_i, "\"target_modules\": [\"qkv\"], \"bias\": \"none\", \"lora_dropout\": 0,"
                        " \"modules_to_save\": null, \"rank_pattern\": {}, \"alpha_pattern\": null,"
                        " \"exclude_modules\": null", false, &m));
    vp_model_destroy(m);
}
END_TEST

START_TEST(test_two_entries)
{
    /* Two lora entries on one site would share parameter names. */
    const char *text =
        "{\"model\": {\"backbone\": {\"plugin\": \"toybackbone\"}, \"head\": {\"plugin\": "
        "\"toyhead\"}}, \"peft\": [{\"plugin\": \"lora\", \"target_modules\": [\"qkv\", \"fc1\"]},"
        " {\"plugin\": \"lora\", \"target_modules\": [\"fc2\", \"qkv\"]}]}";
    vp_config *c = parse(text);
    vp_model *m;
    ck_assert_int_eq(vp_model_create(vt_device((uint32_t)_i), c, &(vp_model_opts){.batch = 1}, &m),
                     VP_ERR_CONFIG);
    ck_assert_msg(strstr(vp_error_last(), "lora: at backbone.blocks.0.attn.qkv: already adapted by "
                         "an earlier lora entry (parameter backbone.blocks.0.attn.qkv.lora_A."
                         "weight exists); make their target_modules disjoint"),
                  "%s", vp_error_last());
    ck_assert_ptr_null(strchr(vp_error_last(), '\n'));
    vp_cfg_free(c);
    /* Disjoint ones stack. */
    c = parse("{\"model\": {\"backbone\": {\"plugin\": \"toybackbone\"}, \"head\": {\"plugin\": "
              "\"toyhead\"}}, \"peft\": [{\"plugin\": \"lora\", \"target_modules\": [\"qkv\"]},"
              " {\"plugin\": \"lora\", \"target_modules\": [\"fc2\"], \"r\": 2}]}");
    vt_ok(vp_model_create(vt_device((uint32_t)_i), c, &(vp_model_opts){.batch = 1}, &m));
    assert_shape2(m, "backbone.blocks.0.mlp.fc2.lora_A.weight", 2, 16);
    assert_shape2(m, "backbone.blocks.0.attn.qkv.lora_A.weight", 8, 8);
    vp_model_destroy(m);
    vp_cfg_free(c);
    /* Named entries adapt one site side by side (HF PEFT's adapter names);
     * the default name keeps the unnamed parameter names, and each entry
     * saves to dir/<name>. */
    c = parse("{\"model\": {\"backbone\": {\"plugin\": \"toybackbone\"}, \"head\": {\"plugin\": "
              "\"toyhead\"}}, \"peft\": [{\"plugin\": \"lora\", \"target_modules\": [\"qkv\"]},"
              " {\"plugin\": \"lora\", \"name\": \"second\", \"target_modules\": [\"qkv\"], "
              "\"r\": 2}]}");
    vt_ok(vp_model_create(vt_device((uint32_t)_i), c, &(vp_model_opts){.batch = 1}, &m));
    assert_shape2(m, "backbone.blocks.0.attn.qkv.lora_A.weight", 8, 8);
    assert_shape2(m, "backbone.blocks.0.attn.qkv.lora_A.second.weight", 2, 8);
    assert_shape2(m, "backbone.blocks.0.attn.qkv.lora_B.second.weight", 24, 2);
    char dir[] = "/tmp/vpeft-lora-names-XXXXXX", f[200];
    ck_assert_ptr_nonnull(mkdtemp(dir));
    vt_ok(vp_model_save_peft(m, c, dir));
    snprintf(f, sizeof f, "%s/lora/adapter_model.safetensors", dir);
    ck_assert_int_eq(access(f, F_OK), 0);
    snprintf(f, sizeof f, "%s/second/adapter_model.safetensors", dir);
    ck_assert_int_eq(access(f, F_OK), 0);
    /* HF PEFT's keys drop the adapter name (get_peft_model_state_dict) */
    vp_st *st2;
    vt_ok(vp_st_open(f, &st2));
    ck_assert_ptr_nonnull(vp_st_find(st2, "base_model.model.backbone.blocks.0.attn.qkv.lora_A."
                                          "weight"));
    ck_assert_ptr_null(vp_st_find(st2, "base_model.model.backbone.blocks.0.attn.qkv.lora_A.second."
                                       "weight"));
    vp_st_close(st2);
    /* and load back into the named entry, bit for bit */
    float want[2 * 8], got[2 * 8];
    vp_gt *a2 = vp_graph_find(vp_model_graph(m), "backbone.blocks.0.attn.qkv.lora_A.second.weight");
    vt_ok(vp_graph_read(vp_model_graph(m), a2, want, sizeof want));
    vp_model *m2;
    vt_ok(vp_model_create(vt_device((uint32_t)_i), c, &(vp_model_opts){.batch = 1}, &m2));
    vt_ok(vp_model_load_peft(m2, dir));
    vt_ok(vp_graph_read(vp_model_graph(m2), vp_graph_find(vp_model_graph(m2), "backbone.blocks.0."
                                                          "attn.qkv.lora_A.second.weight"),
                        got, sizeof got));
    ck_assert(!memcmp(got, want, sizeof got));
    vp_model_destroy(m2);
    vt_rm_rf(dir);
    vp_model_destroy(m);
    vp_cfg_free(c);
    /* Names are unique per config, and plain. */
    c = parse("{\"model\": {\"backbone\": {\"plugin\": \"toybackbone\"}, \"head\": {\"plugin\": "
              "\"toyhead\"}}, \"peft\": [{\"plugin\": \"lora\", \"target_modules\": [\"qkv\"]},"
              " {\"plugin\": \"lora\", \"name\": \"lora\", \"target_modules\": [\"fc2\"]}]}");
    vt_expect_err(vp_model_create(vt_device((uint32_t)_i), c, &(vp_model_opts){.batch = 1}, &m),
                  VP_ERR_CONFIG, "m.json: peft[1].name: \"lora\" is already the name of peft[0] "
                  "(its plugin's name); each entry needs its own");
    vp_cfg_free(c);
    c = parse("{\"model\": {\"backbone\": {\"plugin\": \"toybackbone\"}, \"head\": {\"plugin\": "
              "\"toyhead\"}}, \"peft\": [{\"plugin\": \"lora\", \"name\": \"a/b\", "
              "\"target_modules\": [\"qkv\"]}]}");
    vt_expect_err(vp_model_create(vt_device((uint32_t)_i), c, &(vp_model_opts){.batch = 1}, &m),
                  VP_ERR_CONFIG, "m.json: peft[0].name: \"a/b\": use 1 to 63 letters, digits, '_' "
                  "or '-'");
    vp_cfg_free(c);
}
END_TEST

/* ---- the vit backbone -------------------------------------------------------------- */

START_TEST(test_vit_query_value)
{
    /* HF PEFT's usual ViT targets: every layer's query and value. */
    const char *text =
        "{\"model\": {\"backbone\": {\"plugin\": \"vit\", \"image\": 16, \"patch\": 4, "
        "\"width\": 32, \"depth\": 2, \"heads\": 2, \"pyramid\": false}, \"head\": {\"plugin\": "
        "\"toyhead\"}}, \"peft\": [{\"plugin\": \"lora\", \"r\": 4, \"lora_alpha\": 8, "
        "\"target_modules\": [\"query\", \"value\"]}], \"train\": {\"seed\": 1}}";
    vp_config *c = parse(text);
    vp_model *m;
    vt_ok(vp_model_create(vt_device((uint32_t)_i), c,
                          &(vp_model_opts){.batch = 1, .train = true}, &m));
    const vp_build *b = vp_model_build(m);
    unsigned per_layer[2] = {0, 0}, other = 0;
    for (uint32_t i = 0; i < vp_build_site_count(b); i++) {
        const vp_build_site *s = vp_build_site_at(b, i);
        if (!(s->attached & 1u))
            continue;
        int layer = -1;
        char role[16] = "";
        int got = sscanf(s->path, "backbone.encoder.layer.%d.attention.attention.%15s", &layer, role);
        if (got == 2 && layer >= 0 && layer < 2 && (!strcmp(role, "query") || !strcmp(role, "value")))
            per_layer[layer]++;
        else
            other++;
    }
    ck_assert_uint_eq(per_layer[0], 2);
    ck_assert_uint_eq(per_layer[1], 2);
    ck_assert_uint_eq(other, 0);
    assert_shape2(m, "backbone.encoder.layer.1.attention.attention.value.lora_A.weight", 4, 32);
    assert_shape2(m, "backbone.encoder.layer.1.attention.attention.value.lora_B.weight", 32, 4);
    /* 4 sites x 4 x (32 + 32) trainable floats, and nothing of the ViT. */
    uint64_t own = 0;
    for (uint32_t i = 0; i < vp_build_param_count(b); i++) {
        const vp_build_param *p = vp_build_param_at(b, i);
        ck_assert_msg(vp_gt_trainable(p->t) == (p->owner == 1), "%s", vp_gt_name(p->t));
        own += p->owner == 1 ? (uint64_t)vp_gt_nelem(p->t) : 0;
    }
    ck_assert_uint_eq(own, 4 * 4 * 64);
    vp_model_destroy(m);
    vp_cfg_free(c);
}
END_TEST

/* vpeft merge's fold: with rank and alpha patterns and rsLoRA, the merged
 * base model computes what the adapted one does. */
START_TEST(test_merge)
{
    vp_model *m, *base;
    vt_ok(toy_model(_i, "\"target_modules\": \"all-linear\", \"init_lora_weights\": false, "
                        "\"use_rslora\": true, \"rank_pattern\": {\"qkv\": 3}, "
                        "\"alpha_pattern\": {\"classifier\": 5}", false, &m));
    toy_images(m);
    float want[6], got[6];
    run_logits(m, want);
    char dir[] = "/tmp/vpeft-lora-merge-XXXXXX", path[96];
    ck_assert_ptr_nonnull(mkdtemp(dir));
    snprintf(path, sizeof path, "%s/merged.safetensors", dir);
    vt_ok(vp_model_merge(m, path, false));
    const char *text = "{\"model\": {\"backbone\": {\"plugin\": \"toybackbone\", \"width\": 8},"
                       " \"head\": {\"plugin\": \"toyhead\", \"classes\": 3}}}";
    vp_config *c = parse(text);
    vt_ok(vp_model_create(vt_device((uint32_t)_i), c, &(vp_model_opts){.batch = 2}, &base));
    uint32_t n;
    vt_ok(vp_model_load_params(base, path, &n));
    ck_assert_uint_eq(n, vp_build_param_count(vp_model_build(base)));
    toy_images(base);
    run_logits(base, got);
    for (int i = 0; i < 6; i++)
        ck_assert_msg(fabs(got[i] - want[i]) <= 1e-5 * (fabs(want[i]) + 1), "logit %d: merged %g, "
                      "adapted %g", i, got[i], want[i]);
    vp_model_destroy(m);
    vp_model_destroy(base);
    vp_cfg_free(c);
    vt_rm_rf(dir);
}
END_TEST

/* lora_dropout: the branch's input dropped during training (the gradient
 * check uses the run's mask), the identity in evaluation. */
START_TEST(test_dropout)
{
    char dir[] = "/tmp/vpeft-lora-drop-XXXXXX", path[96];
    ck_assert_ptr_nonnull(mkdtemp(dir));
    snprintf(path, sizeof path, "%s/t.json", dir);
    FILE *f = fopen(path, "w");
    ck_assert_ptr_nonnull(f);
    fputs("{\"peft\": [{\"plugin\": \"lora\", \"target_modules\": [\"qkv\", \"fc2\"], "
          "\"lora_dropout\": 0.3}], \"steps\": 5}", f);
    fclose(f);
    ck_assert_int_eq(vt_sh("%s plugin-test --config %s", bin(), path), 0);
    vt_assert_has(vt_out, "identity at init: yes"); /* evaluation: no dropout */
    const char *g = strstr(vt_out, "worst error ");
    double err = 1;
    ck_assert_ptr_nonnull(g);
    ck_assert_int_eq(sscanf(g, "worst error %lg", &err), 1);
    ck_assert_msg(err < 2e-3, "gradient error %g", err);
    vt_rm_rf(dir);
}
END_TEST

int main(void)
{
    /* The toy backbone and head (this suite is <build>/obj/tests/check_lora). */
    char exe[4096], path[4200];
    ssize_t len = readlink("/proc/self/exe", exe, sizeof exe - 1);
    if (len <= 0)
        return 1;
    exe[len] = '\0';
    *strrchr(exe, '/') = '\0';
    snprintf(path, sizeof path, "%s/plugins/m", exe);
    setenv("VPEFT_PLUGIN_PATH", path, 1);
    Suite *s = suite_create("lora");
    TCase *tc = vt_tcase("lora");
    tcase_add_test(tc, test_plugin_test);
    vt_add_per_device(tc, test_toy_params, NULL);
    vt_add_per_device(tc, test_toy_scale, NULL);
    vt_add_per_device(tc, test_toy_init, NULL);
    vt_add_per_device(tc, test_config_errors, NULL);
    vt_add_per_device(tc, test_two_entries, NULL);
    vt_add_per_device(tc, test_vit_query_value, NULL);
    vt_add_per_device(tc, test_merge, NULL);
    tcase_add_test(tc, test_dropout);
    suite_add_tcase(s, tc);
    return vt_run(s);
}
