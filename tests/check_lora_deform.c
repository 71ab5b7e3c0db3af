/*
 * The lora_deform plugin (plugins/lora_deform/): through `vpeft
 * plugin-test` on the probe's deformable module (gradients against finite
 * differences, identity at init, training), on the mask2former head's
 * encoder modules (which projections, how many parameters), and each bad
 * config's message.
 */
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "config/config.h"
#include "harness.h"
#include "model/build.h"
#include "io/safetensors.h"
#include "model/model.h"

static const char *bin(void)
{
    const char *b = getenv("VPEFT_BIN");
    ck_assert_msg(b != NULL, "VPEFT_BIN is not set (run through make check)");
    return b;
}

/* Run plugin-test on one lora_deform entry; returns the exit status. */
static int plugin_test(const char *entry)
{
    char dir[] = "/tmp/vpeft-ld-XXXXXX", path[64];
    ck_assert_ptr_nonnull(mkdtemp(dir));
    snprintf(path, sizeof path, "%s/t.json", dir);
    FILE *f = fopen(path, "w");
    ck_assert_ptr_nonnull(f);
    fprintf(f, "{\"peft\": [{\"plugin\": \"lora_deform\"%s%s}], \"steps\": 5}", *entry ? ", " : "",
            entry);
    fclose(f);
    int rc = vt_sh("%s plugin-test --config %s", bin(), path);
    vt_rm_rf(dir);
    return rc;
}

START_TEST(test_plugin_test)
{
    /* Defaults: sampling_offsets and value_proj of probe.deform, B = 0. */
    ck_assert_int_eq(plugin_test(""), 0);
    vt_assert_has(vt_out, "2 sites (probe.deform.value_proj, probe.deform.sampling_offsets)");
    /* r 8: value_proj 8 * (16 + 16) + sampling_offsets 8 * (16 + 16) */
    vt_assert_has(vt_out, "512 parameters");
    vt_assert_has(vt_out, "identity at init: yes");
    double err = 1;
    const char *g = strstr(vt_out, "worst error ");
    ck_assert_ptr_nonnull(g);
    ck_assert_int_eq(sscanf(g, "worst error %lg", &err), 1);
    ck_assert_msg(err < 2e-3, "gradient error %g", err);

    ck_assert_int_eq(plugin_test("\"r\": 2, \"lora_alpha\": 4, \"init_lora_weights\": false, "
                                 "\"targets\": [\"sampling_offsets\", \"attention_weights\", "
                                 "\"value_proj\", \"output_proj\"]"), 0);
    vt_assert_has(vt_out, "4 sites");
    vt_assert_has(vt_out, "identity at init: no");
    vt_assert_has(vt_out, "plugin-test: ok");
}
END_TEST

static const char *model_fmt =
    "{\"model\": {\"backbone\": {\"plugin\": \"vit\", \"image\": 32, \"patch\": 4, \"width\": 16, "
    "\"depth\": 1, \"heads\": 2, \"mlp_ratio\": 2, \"out_channels\": 16}, "
    "\"head\": {\"plugin\": \"mask2former\", \"classes\": 2, \"queries\": 4, \"hidden\": 16, "
    "\"heads\": 2, \"encoder_layers\": 2, \"decoder_layers\": 1, \"points\": 2, "
    "\"encoder_ffn\": 8, \"decoder_ffn\": 8, \"mask_dim\": 8}}, "
    "\"peft\": [{\"plugin\": \"lora_deform\", %s}]}";

static vp_status model(int dev, const char *entry, vp_model **m)
{
    char text[2048];
    snprintf(text, sizeof text, model_fmt, entry);
    vp_config *c;
    vt_ok(vp_cfg_parse(text, strlen(text), "m.json", &c));
    vp_status st = vp_model_create(vt_device((uint32_t)dev), c,
                                   &(vp_model_opts){.batch = 1, .no_compile = true}, m);
    vp_cfg_free(c);
    return st;
}

START_TEST(test_mask2former)
{
    vp_model *m;
    vt_ok(model(_i, "\"r\": 4, \"modules\": [\"*.layers.1.self_attn\"]", &m));
    const vp_build *b = vp_model_build(m);
    int sites = 0;
    for (uint32_t i = 0; i < vp_build_site_count(b); i++) {
        const vp_build_site *s = vp_build_site_at(b, i);
        if (s->attached) {
            sites++;
            ck_assert_msg(strstr(s->path, "head.pixel_decoder.encoder.layers.1.self_attn.") ==
                              s->path, "%s", s->path);
        }
    }
    ck_assert_int_eq(sites, 2);
    /* value_proj 16 -> 16, sampling_offsets 16 -> 2 heads * 3 levels * 2 points * 2 = 24:
     * 4 * (16 + 16) + 4 * (16 + 24) = 288, all the trainable parameters */
    int64_t lora = 0, trainable = 0;
    for (uint32_t i = 0; i < vp_build_param_count(b); i++) {
        vp_gt *t = vp_build_param_at(b, i)->t;
        if (strstr(vp_gt_name(t), ".lora_"))
            lora += vp_gt_nelem(t);
        if (vp_gt_trainable(t))
            trainable += vp_gt_nelem(t);
    }
    ck_assert_int_eq(lora, 288);
    ck_assert_int_eq(trainable, 288);
    vp_model_destroy(m);
}
END_TEST

static void expect_err(int dev, const char *entry, const char *want)
{
    vp_model *m = (vp_model *)&m;
    ck_assert_int_eq(model(dev, entry, &m), VP_ERR_CONFIG);
    ck_assert_ptr_null(m);
    ck_assert_str_eq(vp_error_last(), want);
}

START_TEST(test_errors)
{
    expect_err(_i, "\"r\": 0", "lora_deform: m.json: peft[0].r: the rank must be at least 1, got 0");
    expect_err(_i, "\"lora_alpha\": -1", "lora_deform: m.json: peft[0].lora_alpha: must be >= 0, "
                                         "got -1");
    expect_err(_i, "\"targets\": [\"value_proj\", \"query\"]",
               "lora_deform: m.json: peft[0].targets[1]: \"query\" is not a projection of a "
               "deformable attention module (sampling_offsets, attention_weights, value_proj, "
               "output_proj)");
    expect_err(_i, "\"target\": [\"value_proj\"]",
               "lora_deform: m.json: peft[0].target: unknown field, did you mean 'targets'?");
    expect_err(_i, "\"init_lora_weights\": \"pissa\"",
               "lora_deform: m.json: peft[0].init_lora_weights: expected true, false or "
               "\"gaussian\", got \"pissa\"");
    vp_model *m = (vp_model *)&m;
    ck_assert_int_eq(model(_i, "\"modules\": [\"backbone.*\"]", &m), VP_ERR_CONFIG);
    ck_assert_ptr_nonnull(strstr(vp_error_last(), "peft[0] (lora_deform): selects no site of the "
                                                  "model"));
}
END_TEST

/* ---- saving, loading, merging -------------------------------------------------- */

/* An eval model: vit + mask2former, lora_deform entry, seed. */
static vp_model *eval_model(int dev, const char *entry, int seed, vp_config **cfg)
{
    char text[2048], full[2200];
    snprintf(text, sizeof text, model_fmt, entry);
    text[strlen(text) - 1] = '\0'; /* reopen the object for "train" */
    snprintf(full, sizeof full, "%s, \"train\": {\"seed\": %d}}", text, seed);
    vt_ok(vp_cfg_parse(full, strlen(full), "m.json", cfg));
    vp_model *m;
    vt_ok(vp_model_create(vt_device((uint32_t)dev), *cfg, &(vp_model_opts){.batch = 1}, &m));
    return m;
}

static float *logits_of(vp_model *m)
{
    float px[3 * 32 * 32];
    vt_rand(px, sizeof px / sizeof *px, 5);
    vp_graph *g = vp_model_graph(m);
    vt_ok(vp_graph_write(g, vp_model_image(m), px, sizeof px));
    vt_ok(vp_graph_run(g));
    vp_gt *t = vp_model_output(m, "pred_logits");
    float *v = malloc((size_t)vp_gt_nelem(t) * sizeof *v);
    vt_ok(vp_graph_read(g, t, v, (size_t)vp_gt_nelem(t) * sizeof *v));
    return v;
}

static const char *lora_all = "\"r\": 3, \"lora_alpha\": 6, \"init_lora_weights\": false, "
                              "\"targets\": [\"sampling_offsets\", \"attention_weights\", "
                              "\"value_proj\", \"output_proj\"]";

START_TEST(test_save_load_merge)
{
    char dir[] = "/tmp/vpeft-ldio-XXXXXX", path[128], merged[128];
    ck_assert_ptr_nonnull(mkdtemp(dir));
    snprintf(merged, sizeof merged, "%s/merged.safetensors", dir);
    /* A: B random (the update is not 0). */
    vp_config *ca, *cb, *cc;
    vp_model *a = eval_model(_i, lora_all, 3, &ca);
    float *ya = logits_of(a);
    vt_ok(vp_model_save_peft(a, ca, dir));
    snprintf(path, sizeof path, "%s/adapter_config.json", dir);
    vp_config *saved;
    vt_ok(vp_cfg_load(path, &saved));
    const char *s;
    vt_ok(vp_cfg_string(saved, "peft_type", NULL, &s));
    ck_assert_str_eq(s, "LORA");
    int64_t r;
    vt_ok(vp_cfg_int(saved, "r", 0, &r));
    ck_assert_int_eq(r, 3);
    ck_assert_int_eq(vp_cfg_type_of(saved, "plugin"), VP_CFG_ABSENT);
    ck_assert_int_eq(vp_cfg_type_of(saved, "targets"), VP_CFG_ABSENT); /* not LoraConfig's */
    vp_cfg_free(saved);
    /* vpeft's own fields beside it, where HF PEFT does not read */
    snprintf(path, sizeof path, "%s/vpeft_config.json", dir);
    vt_ok(vp_cfg_load(path, &saved));
    vt_ok(vp_cfg_string(saved, "vpeft_plugin", NULL, &s));
    ck_assert_str_eq(s, "lora_deform");
    vp_cfg_free(saved);
    snprintf(path, sizeof path, "%s/adapter_model.safetensors", dir);
    vp_st *f;
    vt_ok(vp_st_open(path, &f));
    /* 2 encoder layers x 4 projections x (A, B) */
    ck_assert_uint_eq(vp_st_count(f), 16);
    ck_assert_ptr_nonnull(vp_st_find(f, "base_model.model.head.pixel_decoder.encoder.layers.1."
                                        "self_attn.value_proj.lora_B.weight"));
    vp_st_close(f);

    /* B: the same base, B zero; loading A's methods makes it A, bit for bit. */
    vp_model *b = eval_model(_i, "\"r\": 3, \"lora_alpha\": 6, \"targets\": [\"sampling_offsets\", "
                                 "\"attention_weights\", \"value_proj\", \"output_proj\"]", 3, &cb);
    vt_ok(vp_model_load_peft(b, dir));
    float *yb = logits_of(b);
    int64_t n = vp_gt_nelem(vp_model_output(a, "pred_logits"));
    ck_assert(!memcmp(ya, yb, (size_t)n * sizeof *ya));

    /* Merged into the base weights: a model without the method computes
     * the same to float rounding. */
    vt_ok(vp_model_merge(a, merged, false));
    char text[2048];
    snprintf(text, sizeof text, model_fmt, "\"r\": 1");
    char *peft = strstr(text, ", \"peft\"");
    snprintf(peft, sizeof text - (size_t)(peft - text), "}");
    vt_ok(vp_cfg_parse(text, strlen(text), "m.json", &cc));
    vp_model *c;
    vt_ok(vp_model_create(vt_device((uint32_t)_i), cc, &(vp_model_opts){.batch = 1}, &c));
    uint32_t loaded;
    vt_ok(vp_model_load_params(c, merged, &loaded));
    ck_assert_uint_eq(loaded, vp_build_param_count(vp_model_build(c)));
    float *yc = logits_of(c);
    double emax = 0, wmax = 0;
    for (int64_t i = 0; i < n; i++) {
        emax = fmax(emax, fabs((double)yc[i] - ya[i]));
        wmax = fmax(wmax, fabs((double)ya[i]));
    }
    printf("lora_deform: merged against unmerged outputs: %.3g of the largest\n", emax / wmax);
    ck_assert_msg(emax / wmax < 1e-5, "merged outputs differ by %g", emax / wmax);

    /* `vpeft merge` writes the same file. */
    snprintf(path, sizeof path, "%s/m.json", dir);
    FILE *cf = fopen(path, "w");
    ck_assert_ptr_nonnull(cf);
    snprintf(text, sizeof text, model_fmt, lora_all);
    text[strlen(text) - 1] = '\0';
    fprintf(cf, "%s, \"train\": {\"seed\": 3}}", text);
    fclose(cf);
    ck_assert_int_eq(vt_sh("%s merge --config %s --adapter %s --out %s/cli.safetensors", bin(),
                           path, dir, dir), 0);
    vt_assert_has(vt_out, "merge: lora_deform from ");
    vp_st *f1, *f2;
    vt_ok(vp_st_open(merged, &f1));
    char cli_out[160];
    snprintf(cli_out, sizeof cli_out, "%s/cli.safetensors", dir);
    vt_ok(vp_st_open(cli_out, &f2));
    ck_assert_uint_eq(vp_st_count(f1), vp_st_count(f2));
    for (size_t i = 0; i < vp_st_count(f1); i++) {
        const vp_st_tensor *t1 = vp_st_get(f1, i), *t2 = vp_st_find(f2, t1->name);
        ck_assert_ptr_nonnull(t2);
        ck_assert(t1->nbytes == t2->nbytes && !memcmp(t1->data, t2->data, t1->nbytes));
    }
    vp_st_close(f1);
    vp_st_close(f2);

    /* --unmerge takes the update out again: the base weights come back to
     * float rounding. */
    ck_assert_int_eq(vt_sh("%s merge --config %s --adapter %s --unmerge %s --out %s/base.safetensors",
                           bin(), path, dir, merged, dir), 0);
    vt_assert_has(vt_out, " taken out of ");
    snprintf(cli_out, sizeof cli_out, "%s/base.safetensors", dir);
    vt_ok(vp_st_open(cli_out, &f2));
    const vp_build *ab = vp_model_build(a);
    double uerr = 0;
    for (uint32_t i = 0; i < vp_build_param_count(ab); i++) {
        const vp_build_param *p = vp_build_param_at(ab, i);
        if (p->owner)
            continue;
        size_t k = (size_t)vp_gt_nelem(p->t);
        float *want = malloc(k * sizeof *want), *got = malloc(k * sizeof *got);
        vt_ok(vp_graph_read(vp_model_graph(a), p->t, want, k * sizeof *want));
        vt_ok(vp_st_read_f32(f2, vp_gt_name(p->t), got, k));
        for (size_t e = 0; e < k; e++)
            uerr = fmax(uerr, fabs((double)got[e] - want[e]));
        free(want);
        free(got);
    }
    vp_st_close(f2);
    printf("lora_deform: unmerged weights against the base: max error %.3g\n", uerr);
    ck_assert_msg(uerr < 1e-5, "unmerged weights differ by %g", uerr);

    /* Loading into another rank: the key and both shapes. */
    vp_config *cd;
    vp_model *d = eval_model(_i, "\"r\": 2, \"targets\": [\"sampling_offsets\", "
                                 "\"attention_weights\", \"value_proj\", \"output_proj\"]", 3, &cd);
    ck_assert_int_eq(vp_model_load_peft(d, dir), VP_ERR_SHAPE);
    ck_assert_msg(strstr(vp_error_last(), "adapter_model.safetensors: tensor \"base_model.model."
                                          "head.pixel_decoder.encoder.layers.0.self_attn."
                                          "value_proj.lora_A.weight\" has shape (3, 16), "
                                          "expected (2, 16)") != NULL, "%s", vp_error_last());
    ck_assert_int_ne(vp_model_load_peft(d, "/nonexistent"), VP_OK);
    ck_assert_ptr_nonnull(strstr(vp_error_last(), "/nonexistent/adapter_config.json"));
    vp_model_destroy(d);
    vp_cfg_free(cd);

    free(ya);
    free(yb);
    free(yc);
    vp_model_destroy(a);
    vp_model_destroy(b);
    vp_model_destroy(c);
    vp_cfg_free(ca);
    vp_cfg_free(cb);
    vp_cfg_free(cc);
    vt_rm_rf(dir);
}
END_TEST

/* Two methods in one config: one subdirectory each, loaded back bit for
 * bit into a model whose methods start elsewhere. */
START_TEST(test_two_methods)
{
    char dir[] = "/tmp/vpeft-ld2-XXXXXX", path[128];
    ck_assert_ptr_nonnull(mkdtemp(dir));
    const char *both_a = "\"r\": 2, \"init_lora_weights\": false}, {\"plugin\": \"lora\", "
                         "\"r\": 2, \"target_modules\": [\"q_proj\", \"v_proj\"], "
                         "\"init_lora_weights\": false";
    const char *both_b = "\"r\": 2}, {\"plugin\": \"lora\", \"r\": 2, "
                         "\"target_modules\": [\"q_proj\", \"v_proj\"]";
    vp_config *ca, *cb;
    vp_model *a = eval_model(_i, both_a, 3, &ca), *b = eval_model(_i, both_b, 3, &cb);
    ck_assert_uint_eq(vp_model_pefts(a)->n, 2);
    float *ya = logits_of(a), *yb0 = logits_of(b);
    int64_t n = vp_gt_nelem(vp_model_output(a, "pred_logits"));
    ck_assert(memcmp(ya, yb0, (size_t)n * sizeof *ya)); /* the methods start elsewhere */
    vt_ok(vp_model_save_peft(a, ca, dir));
    snprintf(path, sizeof path, "%s/lora_deform/adapter_model.safetensors", dir);
    ck_assert_int_eq(access(path, F_OK), 0);
    snprintf(path, sizeof path, "%s/lora/adapter_config.json", dir);
    ck_assert_int_eq(access(path, F_OK), 0);
    vt_ok(vp_model_load_peft(b, dir));
    float *yb = logits_of(b);
    ck_assert(!memcmp(ya, yb, (size_t)n * sizeof *ya));
    free(ya);
    free(yb0);
    free(yb);
    vp_model_destroy(a);
    vp_model_destroy(b);
    vp_cfg_free(ca);
    vp_cfg_free(cb);
    vt_rm_rf(dir);
}
END_TEST

int main(void)
{
    Suite *s = suite_create("lora_deform");
    TCase *tc = vt_tcase("lora_deform");
    tcase_add_test(tc, test_plugin_test);
    vt_add_per_device(tc, test_mask2former, NULL);
    vt_add_per_device(tc, test_errors, NULL);
    vt_add_per_device(tc, test_save_load_merge, NULL);
    vt_add_per_device(tc, test_two_methods, NULL);
    suite_add_tcase(s, tc);
    return vt_run(s);
}
