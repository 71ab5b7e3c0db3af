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

#include "config/config.h"
#include "harness.h"
#include "model/build.h"
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

int main(void)
{
    Suite *s = suite_create("lora_deform");
    TCase *tc = vt_tcase("lora_deform");
    tcase_add_test(tc, test_plugin_test);
    vt_add_per_device(tc, test_mask2former, NULL);
    vt_add_per_device(tc, test_errors, NULL);
    suite_add_tcase(s, tc);
    return vt_run(s);
}
