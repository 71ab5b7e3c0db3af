/*
 * The adapter PEFT plugin (plugins/adapter/): sequential bottleneck
 * adapters after attention and FFN sub-layers. `vpeft plugin-test` on the
 * probe model for stacks of 1 to 3 adapters, after attention and after both
 * sub-layers (forward against the reference, gradients against finite
 * differences, identity at init with the default and AdapterHub's
 * "mam_adapter" init and not with "bert"); the adapted output against the
 * formula in double, computed here from the parameters' values, for each
 * activation with a stack of 3 and a scaling; on a tiny vit + mask2former,
 * the head's 6 attention sites selected by "head.*", the adapters'
 * parameter names and count against hand computation, only they trainable
 * (by the compiled graph's memory), and the adapted model's predictions
 * bit-equal to the base model's at init; and every config error as its
 * exact one-line message.
 */
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "config/config.h"
#include "harness.h"
#include "model/build.h"
#include "model/model.h"
#include "plugin/host.h"

static const char *bin(void)
{
    const char *b = getenv("VPEFT_BIN");
    ck_assert_msg(b != NULL, "VPEFT_BIN is not set (run through make check)");
    return b;
}

static const char *tmp(void) { return getenv("TMPDIR") ? getenv("TMPDIR") : "/tmp"; }

/* ---- vpeft plugin-test on the probe ---------------------------------------------- */

/* The probe has 2 blocks, width 16: 2 after-attention and 2 after-FFN sites.
 * One adapter with bottleneck m has 16m + m + 16m + 16 parameters. */
static const struct pt_case {
    const char *peft;   /* the "peft" entry's fields after "plugin" */
    int sites;
    long params;
    bool identity;
} pt_cases[] = {
    /* m = 16 / 4 = 4: 148 per adapter, 2 sites */
    {"\"reduction_factor\": 4", 2, 2 * 148, true},
    {"\"reduction_factor\": 4, \"per_site\": 2, \"init_weights\": \"bert\"", 2, 2 * 2 * 148,
     false},
    /* m = 3: 115 per adapter, 3 per site, 4 sites */
    {"\"bottleneck\": 3, \"per_site\": 3, \"init_weights\": \"bert\", \"non_linearity\": "
     "\"gelu\", \"sites\": [\"after_attn\", \"after_ffn\"]", 4, 4 * 3 * 115, false},
    {"\"reduction_factor\": 4, \"per_site\": 2, \"non_linearity\": \"swish\", \"scaling\": 0.5, "
     "\"sites\": [\"after_ffn\", \"after_attn\"]", 4, 4 * 2 * 148, true},
    /* m = 16 // 5.5 = 2: 82 per adapter; one site by its path */
    {"\"reduction_factor\": 5.5, \"init_weights\": \"mam_adapter\", \"modules\": "
     "[\"blocks.1.attn\"]", 1, 82, true},
};

static void write_file(const char *path, const char *text)
{
    FILE *f = fopen(path, "w");
    ck_assert_msg(f != NULL, "cannot write %s", path);
    fputs(text, f);
    ck_assert_int_eq(fclose(f), 0);
}

START_TEST(test_plugin_test)
{
    for (size_t i = 0; i < sizeof pt_cases / sizeof pt_cases[0]; i++) {
        const struct pt_case *c = &pt_cases[i];
        char path[512], text[1024];
        snprintf(path, sizeof path, "%s/adapter-pt%zu.json", tmp(), i);
        snprintf(text, sizeof text, "{\"peft\": [{\"plugin\": \"adapter\", %s}], \"steps\": 5}",
                 c->peft);
        write_file(path, text);
        int rc = vt_sh("%s plugin-test --config %s", bin(), path);
        ck_assert_msg(rc == 0, "%s: exit %d\n%s%s", text, rc, vt_out, vt_err);

        const char *line = strstr(vt_out, "plugin-test: adapter 0.1.0 (ABI 1.2, ");
        ck_assert_msg(line != NULL, "no method line in:\n%s", vt_out);
        const char *p = strstr(line, "): ");
        int sites = -1;
        long params = -1;
        ck_assert(p && sscanf(p, "): %d site", &sites) == 1);
        p = strstr(p, "), ");
        ck_assert(p && sscanf(p, "), %ld parameters", &params) == 1);
        ck_assert_msg(sites == c->sites && params == c->params,
                      "%s: %d sites and %ld parameters, expected %d and %ld", text, sites, params,
                      c->sites, c->params);

        double err = 1;
        p = strstr(vt_out, "worst error ");
        ck_assert(p && sscanf(p, "worst error %lf", &err) == 1);
        ck_assert_msg(err < 2e-3, "%s: gradient error %g", text, err);
        vt_assert_has(vt_out, c->identity ? "identity at init: yes" : "identity at init: no");
        vt_assert_has(vt_out, "\nplugin-test: ok\n");
    }

    /* A config error through the command: one line, exit status 2. */
    char path[512];
    snprintf(path, sizeof path, "%s/adapter-bad.json", tmp());
    write_file(path, "{\"peft\": [{\"plugin\": \"adapter\", \"per_site\": 0}]}");
    ck_assert_int_eq(vt_sh("%s plugin-test --config %s", bin(), path), 2);
    char want[1024];
    snprintf(want, sizeof want, "vpeft: adapter: %s: peft[0].per_site: must be from 1 to 4, "
             "got 0\n", path);
    ck_assert_str_eq(vt_err, want);
}
END_TEST

START_TEST(test_descriptor)
{
    ck_assert_int_eq(vt_sh("%s plugins --check plugins/vpeft-adapter.so", bin()), 0);
    ck_assert_str_eq(vt_out, "plugins/vpeft-adapter.so: ok: adapter peft 0.1.0, ABI 1.2\n");
}
END_TEST

/* ---- the formula, computed here ------------------------------------------------------ */

enum { MB = 2, MN = 3, MD = 8, MM = 3, MK = 3 }; /* y (MB, MN, MD), bottleneck MM, MK per site */

static double act_ref(const char *act, double v)
{
    if (!strcmp(act, "relu"))
        return v > 0 ? v : 0;
    if (!strcmp(act, "gelu"))
        return 0.5 * v * (1 + erf(v / sqrt(2.0)));
    return v / (1 + exp(-v)); /* swish */
}

/* A parameter's values, read back from the device into doubles. */
static double *read_param(vp_graph *g, const char *site, int k, const char *what)
{
    char name[160];
    snprintf(name, sizeof name, "%s.adapters.%d.%s", site, k, what);
    vp_gt *t = vp_graph_find(g, name);
    ck_assert_msg(t != NULL, "no parameter %s", name);
    size_t n = (size_t)vp_gt_nelem(t);
    float *f = malloc(n * sizeof *f);
    ck_assert(f != NULL);
    vt_ok(vp_graph_read(g, t, f, n * sizeof *f));
    double *d = vt_f64(f, n);
    free(f);
    return d;
}

/* y (rows, MD) <- y + s * up(act(down(y))) for each adapter k of the site, in order. */
static void adapters_ref(vp_graph *g, const char *site, const char *act, double s, double *y,
                         int rows)
{
    for (int k = 0; k < MK; k++) {
        double *dw = read_param(g, site, k, "down.weight");
        double *db = read_param(g, site, k, "down.bias");
        double *uw = read_param(g, site, k, "up.weight");
        double *ub = read_param(g, site, k, "up.bias");
        for (int r = 0; r < rows; r++) {
            double h[MM], *yr = y + r * MD, u[MD];
            for (int j = 0; j < MM; j++) {
                h[j] = db[j];
                for (int i = 0; i < MD; i++)
                    h[j] += dw[j * MD + i] * yr[i];
                h[j] = act_ref(act, h[j]);
            }
            for (int i = 0; i < MD; i++) {
                u[i] = ub[i];
                for (int j = 0; j < MM; j++)
                    u[i] += uw[i * MM + j] * h[j];
            }
            for (int i = 0; i < MD; i++)
                yr[i] += s * u[i];
        }
        free(dw), free(db), free(uw), free(ub);
    }
}

/* x -> attention site -> FFN site on a bare graph, the adapters' parameters
 * overwritten with values in [-1, 1) (their init would leave the adapters
 * near zero and a wrong formula unseen), against adapters_ref. */
START_TEST(test_formula)
{
    const char *acts[3] = {"relu", "gelu", "swish"};
    const vp_host_api *H = vp_host_api_get();
    for (int a = 0; a < 3; a++) {
        char text[512];
        snprintf(text, sizeof text, "{\"peft\": [{\"plugin\": \"adapter\", \"bottleneck\": %d, "
                 "\"per_site\": %d, \"non_linearity\": \"%s\", \"scaling\": 0.75, "
                 "\"sites\": [\"after_attn\", \"after_ffn\"]}]}", MM, MK, acts[a]);
        vp_config *c;
        vt_ok(vp_cfg_parse(text, strlen(text), "f.json", &c));
        vp_peft_set set;
        vt_ok(vp_peft_set_load(vp_cfg_get(c, "peft"), &set));
        vp_build *b;
        vt_ok(vp_build_create(vt_device((uint32_t)_i), &(vp_build_opts){.seed = 1}, &b));
        vt_ok(vp_peft_set_attach(&set, b));
        vp_build_enter(b, "test", false);
        vp_graph *g = vp_build_graph(b);
        vp_gt *x = H->input(g, "x", 3, (int64_t[]){MB, MN, MD});
        vp_gt *y = H->site_output(b, "t.attn", VP_SITE_ATTN_OUT, x);
        y = H->site_output(b, "t.mlp", VP_SITE_FFN_OUT, y);
        ck_assert_ptr_nonnull(y);
        H->keep(y);
        vt_ok(vp_build_check_pefts(b));
        vt_ok(vp_graph_compile(g));
        vt_ok(vp_build_init_params(b));

        enum { ROWS = MB * MN };
        float xf[ROWS * MD], yf[ROWS * MD];
        vt_rand(xf, ROWS * MD, 11);
        vt_ok(vp_graph_write(g, x, xf, sizeof xf));
        for (uint32_t i = 0; i < vp_build_param_count(b); i++) {
            vp_gt *p = vp_build_param_at(b, i)->t;
            size_t n = (size_t)vp_gt_nelem(p);
            float *v = malloc(n * sizeof *v);
            ck_assert(v != NULL);
            vt_rand(v, n, 100 + i);
            vt_ok(vp_graph_write(g, p, v, n * sizeof *v));
            free(v);
        }
        vt_ok(vp_graph_run(g));
        vt_ok(vp_graph_read(g, y, yf, sizeof yf));

        double *want = vt_f64(xf, ROWS * MD), *got = vt_f64(yf, ROWS * MD);
        adapters_ref(g, "t.attn", acts[a], 0.75, want, ROWS);
        adapters_ref(g, "t.mlp", acts[a], 0.75, want, ROWS);
        vt_assert_rel_close(got, want, ROWS * MD, 1e-5, "%s", acts[a]);
        free(want);
        free(got);
        vp_build_destroy(b);
        vp_peft_set_release(&set);
        vp_cfg_free(c);
    }
}
END_TEST

/* ---- on vit + mask2former ---------------------------------------------------------- */

/* The tiny model of check_m2f with a head of width 16, 2 encoder and 2
 * decoder layers. */
static const char *model_fmt =
    "{\"model\": {\"backbone\": {\"plugin\": \"vit\", \"image\": 32, \"patch\": 4, \"width\": 16, "
    "\"depth\": 1, \"heads\": 2, \"mlp_ratio\": 2, \"out_channels\": 16}, "
    "\"head\": {\"plugin\": \"mask2former\", \"classes\": 2, \"queries\": 4, \"hidden\": 16, "
    "\"heads\": 2, \"encoder_layers\": 2, \"decoder_layers\": 2, \"points\": 1, "
    "\"encoder_ffn\": 8, \"decoder_ffn\": 8, \"mask_dim\": 8}}%s}";

/* The study's setting: 2 adapters of 16 / 4 = 4 after every attention
 * sub-layer of the head. */
static const char *study = "{\"plugin\": \"adapter\", \"per_site\": 2, \"reduction_factor\": 4, "
                           "\"modules\": [\"head.*\"]}";

/* peft: the "peft" entries (NULL: none). */
static vp_status make_model(int dev, const char *peft, const vp_model_opts *o, vp_model **m)
{
    char extra[1024] = "", text[4096];
    if (peft)
        snprintf(extra, sizeof extra, ", \"peft\": [%s]", peft);
    snprintf(text, sizeof text, model_fmt, extra);
    vp_config *c;
    vt_ok(vp_cfg_parse(text, strlen(text), "m.json", &c));
    vp_status st = vp_model_create(vt_device((uint32_t)dev), c, o, m);
    vp_cfg_free(c);
    return st;
}

static const char *const head_attn[6] = {
    "head.pixel_decoder.encoder.layers.0.self_attn",
    "head.pixel_decoder.encoder.layers.1.self_attn",
    "head.predictor.transformer_cross_attention_layers.0",
    "head.predictor.transformer_self_attention_layers.0",
    "head.predictor.transformer_cross_attention_layers.1",
    "head.predictor.transformer_self_attention_layers.1",
};

static bool is_head_attn(const char *path)
{
    for (int i = 0; i < 6; i++)
        if (!strcmp(path, head_attn[i]))
            return true;
    return false;
}

/* Sites the (only) PEFT instance attached to, and the parameters it owns. */
static void peft_counts(const vp_model *m, int *sites, int64_t *params)
{
    const vp_build *b = vp_model_build(m);
    *sites = 0;
    *params = 0;
    for (uint32_t i = 0; i < vp_build_site_count(b); i++)
        *sites += (vp_build_site_at(b, i)->attached & 1u) != 0;
    for (uint32_t i = 0; i < vp_build_param_count(b); i++)
        if (vp_build_param_at(b, i)->owner == 1)
            *params += vp_gt_nelem(vp_build_param_at(b, i)->t);
}

START_TEST(test_model_sites)
{
    /* d = 16, m = 4: one adapter is 16*4 + 4 + 4*16 + 16 = 148, two per site. */
    enum { PER_SITE_PARAMS = 2 * (16 * 4 + 4 + 4 * 16 + 16) };
    vp_model *m;
    vt_ok(make_model(_i, study, &(vp_model_opts){.batch = 1, .no_compile = true}, &m));
    const vp_build *b = vp_model_build(m);
    int n = 0;
    for (uint32_t i = 0; i < vp_build_site_count(b); i++) {
        const vp_build_site *s = vp_build_site_at(b, i);
        if (s->attached & 1u) {
            n++;
            ck_assert_msg(s->kind == VP_SITE_ATTN_OUT && is_head_attn(s->path),
                          "attached at %s (kind %d)", s->path, (int)s->kind);
        }
    }
    ck_assert_int_eq(n, 6);

    /* Every parameter by name and shape: 6 sites x 2 adapters x 4. */
    int named = 0;
    int64_t total = 0;
    for (uint32_t i = 0; i < vp_build_param_count(b); i++) {
        const vp_build_param *p = vp_build_param_at(b, i);
        if (p->owner != 1)
            continue;
        const char *name = vp_gt_name(p->t);
        const int64_t *sh = vp_gt_shape(p->t);
        total += vp_gt_nelem(p->t);
        ck_assert_msg(vp_gt_trainable(p->t), "%s is frozen", name);
        const char *a = strstr(name, ".adapters.");
        ck_assert_msg(a != NULL, "%s", name);
        char site[128];
        snprintf(site, sizeof site, "%.*s", (int)(a - name), name);
        ck_assert_msg(is_head_attn(site), "%s", name);
        int k = -1, len = 0;
        char what[32] = "";
        ck_assert(sscanf(a, ".adapters.%d.%31s%n", &k, what, &len) == 2 && (k == 0 || k == 1));
        if (!strcmp(what, "down.weight"))
            ck_assert(vp_gt_ndim(p->t) == 2 && sh[0] == 4 && sh[1] == 16);
        else if (!strcmp(what, "down.bias"))
            ck_assert(vp_gt_ndim(p->t) == 1 && sh[0] == 4);
        else if (!strcmp(what, "up.weight"))
            ck_assert(vp_gt_ndim(p->t) == 2 && sh[0] == 16 && sh[1] == 4);
        else if (!strcmp(what, "up.bias"))
            ck_assert(vp_gt_ndim(p->t) == 1 && sh[0] == 16);
        else
            ck_abort_msg("unexpected parameter %s", name);
        named++;
    }
    ck_assert_int_eq(named, 6 * 2 * 4);
    ck_assert_int_eq(total, 6 * PER_SITE_PARAMS);
    vp_model_destroy(m);

    /* Both kinds: and the head's 2 + 2 FFN sites; no modules: the backbone's
     * attention site too. */
    int sites;
    int64_t params;
    vt_ok(make_model(_i, "{\"plugin\": \"adapter\", \"per_site\": 2, \"reduction_factor\": 4, "
                         "\"modules\": [\"head.*\"], \"sites\": [\"after_attn\", \"after_ffn\"]}",
                     &(vp_model_opts){.batch = 1, .no_compile = true}, &m));
    peft_counts(m, &sites, &params);
    ck_assert_int_eq(sites, 10);
    ck_assert_int_eq(params, 10 * PER_SITE_PARAMS);
    vp_model_destroy(m);
    vt_ok(make_model(_i, "{\"plugin\": \"adapter\", \"per_site\": 2, \"reduction_factor\": 4}",
                     &(vp_model_opts){.batch = 1, .no_compile = true}, &m));
    peft_counts(m, &sites, &params);
    ck_assert_int_eq(sites, 7);
    ck_assert_int_eq(params, 7 * PER_SITE_PARAMS);
    vp_model_destroy(m);

    /* A second instance at sites of the first continues its stack: its
     * adapter at the decoder's self-attention is number 2 there. */
    char two[512];
    snprintf(two, sizeof two, "%s, {\"plugin\": \"adapter\", \"bottleneck\": 2, \"modules\": "
             "[\"transformer_self_attention_layers.*\"]}", study);
    vt_ok(make_model(_i, two, &(vp_model_opts){.batch = 1, .no_compile = true}, &m));
    b = vp_model_build(m);
    int64_t second = 0;
    for (uint32_t i = 0; i < vp_build_param_count(b); i++)
        if (vp_build_param_at(b, i)->owner == 2)
            second += vp_gt_nelem(vp_build_param_at(b, i)->t);
    ck_assert_int_eq(second, 2 * (16 * 2 + 2 + 2 * 16 + 16));
    vp_gt *w = vp_graph_find(vp_model_graph(m), "head.predictor."
                             "transformer_self_attention_layers.1.adapters.2.up.weight");
    ck_assert(w && vp_gt_shape(w)[0] == 16 && vp_gt_shape(w)[1] == 2);
    vp_model_destroy(m);
}
END_TEST

/* Compiled for training, only the adapters are trainable: the graph's
 * trainable memory, gradients included, is theirs to the byte. */
START_TEST(test_model_trainable)
{
    vp_model *m;
    vt_ok(make_model(_i, study, &(vp_model_opts){.batch = 1, .train = true}, &m));
    int sites;
    int64_t params;
    peft_counts(m, &sites, &params);
    ck_assert_int_eq(params, 6 * 2 * 148);
    vp_graph_mem mem = vp_graph_memory(vp_model_graph(m));
    ck_assert_uint_eq(mem.trainable, (uint64_t)params * sizeof(float));
    ck_assert_uint_eq(mem.grads, (uint64_t)params * sizeof(float));
    ck_assert_uint_gt(mem.frozen, 0);
    vp_model_destroy(m);
}
END_TEST

/* pred_logits and pred_masks of one fixed image, eval mode. */
static void predict(vp_model *m, float **logits, size_t *nl, float **masks, size_t *nm)
{
    vp_graph *g = vp_model_graph(m);
    vp_gt *img = vp_model_image(m), *pl = vp_model_output(m, "pred_logits"),
          *pm = vp_model_output(m, "pred_masks");
    ck_assert(img && pl && pm);
    size_t n = (size_t)vp_gt_nelem(img);
    float *px = malloc(n * sizeof *px);
    ck_assert(px != NULL);
    vt_rand(px, n, 7);
    vt_ok(vp_graph_write(g, img, px, n * sizeof *px));
    free(px);
    vt_ok(vp_graph_run(g));
    *nl = (size_t)vp_gt_nelem(pl);
    *nm = (size_t)vp_gt_nelem(pm);
    *logits = malloc(*nl * sizeof **logits);
    *masks = malloc(*nm * sizeof **masks);
    ck_assert(*logits && *masks);
    vt_ok(vp_graph_read(g, pl, *logits, *nl * sizeof **logits));
    vt_ok(vp_graph_read(g, pm, *masks, *nm * sizeof **masks));
}

/* With the default init the adapted model is the base model, bit for bit;
 * with "bert" it is not (so the comparison can fail). */
START_TEST(test_model_identity)
{
    const char *pefts[3] = {NULL, study,
                            "{\"plugin\": \"adapter\", \"per_site\": 2, \"reduction_factor\": 4, "
                            "\"modules\": [\"head.*\"], \"init_weights\": \"bert\"}"};
    float *logits[3], *masks[3];
    size_t nl[3], nm[3];
    for (int i = 0; i < 3; i++) {
        vp_model *m;
        vt_ok(make_model(_i, pefts[i], &(vp_model_opts){.batch = 1}, &m));
        predict(m, &logits[i], &nl[i], &masks[i], &nm[i]);
        vp_model_destroy(m);
    }
    ck_assert(nl[1] == nl[0] && nm[1] == nm[0] && nl[0] == 4 * 3);
    ck_assert_msg(!memcmp(logits[1], logits[0], nl[0] * sizeof(float)),
                  "pred_logits differ from the base model's at init");
    ck_assert_msg(!memcmp(masks[1], masks[0], nm[0] * sizeof(float)),
                  "pred_masks differ from the base model's at init");
    ck_assert_msg(memcmp(logits[2], logits[0], nl[0] * sizeof(float)),
                  "\"bert\" adapters left pred_logits unchanged");
    for (int i = 0; i < 3; i++) {
        free(logits[i]);
        free(masks[i]);
    }
}
END_TEST

/* ---- config errors ---------------------------------------------------------------- */

static void expect_err(int dev, const char *fields, vp_status code, const char *want)
{
    char peft[512];
    snprintf(peft, sizeof peft, "{\"plugin\": \"adapter\"%s%s}", fields[0] ? ", " : "", fields);
    vp_model *m = (vp_model *)&m;
    ck_assert_int_eq(make_model(dev, peft, &(vp_model_opts){.batch = 1, .no_compile = true}, &m),
                     code);
    ck_assert_ptr_null(m);
    ck_assert_str_eq(vp_error_last(), want);
}

START_TEST(test_config_errors)
{
    expect_err(_i, "\"per_site\": 0", VP_ERR_CONFIG,
               "adapter: m.json: peft[0].per_site: must be from 1 to 4, got 0");
    expect_err(_i, "\"per_site\": 5", VP_ERR_CONFIG,
               "adapter: m.json: peft[0].per_site: must be from 1 to 4, got 5");
    expect_err(_i, "\"reduction_factor\": 0", VP_ERR_CONFIG,
               "adapter: m.json: peft[0].reduction_factor: must be a number above 0, got 0");
    expect_err(_i, "\"bottleneck\": 0", VP_ERR_CONFIG,
               "adapter: m.json: peft[0].bottleneck: must be from 1 to 1048576, got 0");
    expect_err(_i, "\"non_linearity\": \"tanh\"", VP_ERR_CONFIG,
               "adapter: m.json: peft[0].non_linearity: \"tanh\" is not supported (one of "
               "\"relu\", \"gelu\", \"swish\", \"silu\")");
    expect_err(_i, "\"sites\": [\"after_mlp\"]", VP_ERR_CONFIG,
               "adapter: m.json: peft[0].sites[0]: \"after_mlp\" is not a site kind (one of "
               "\"after_attn\", \"after_ffn\")");
    expect_err(_i, "\"sites\": \"after_attn\"", VP_ERR_CONFIG,
               "adapter: m.json: peft[0].sites: expected a list of \"after_attn\" and/or "
               "\"after_ffn\"");
    expect_err(_i, "\"reduction_factr\": 4", VP_ERR_CONFIG,
               "adapter: m.json: peft[0].reduction_factr: unknown field, did you mean "
               "'reduction_factor'?");
    expect_err(_i, "\"init_weights\": \"houlsby\"", VP_ERR_CONFIG,
               "adapter: m.json: peft[0].init_weights: \"houlsby\" is not supported (one of "
               "\"default\", \"mam_adapter\", \"bert\")");
    expect_err(_i, "\"scaling\": \"learned\"", VP_ERR_CONFIG,
               "adapter: m.json: peft[0].scaling: expected a number (AdapterHub's \"learned\" "
               "and \"channel\" are not supported)");
    expect_err(_i, "\"mh_adapter\": true", VP_ERR_CONFIG,
               "adapter: m.json: peft[0].mh_adapter: not a field here: say \"sites\": "
               "[\"after_attn\"] (mh_adapter), [\"after_ffn\"] (output_adapter) or both");

    /* Modules that match nothing: the host's check, with the model's site count. */
    vp_model *base;
    vt_ok(make_model(_i, NULL, &(vp_model_opts){.batch = 1, .no_compile = true}, &base));
    char want[256];
    snprintf(want, sizeof want, "peft[0] (adapter): selects no site of the model (it has %u "
             "sites)", vp_build_site_count(vp_model_build(base)));
    vp_model_destroy(base);
    expect_err(_i, "\"modules\": [\"nothing.here\"]", VP_ERR_CONFIG, want);
    /* FFN sites only where the modules name attention layers. */
    expect_err(_i, "\"sites\": [\"after_ffn\"], \"modules\": [\"*self_attn*\"]", VP_ERR_CONFIG,
               want);
}
END_TEST

/* The saved adapter_config.json records what the method used: the
 * defaults it read (reduction_factor, non_linearity, ...) beside what was
 * written; vpeft_config.json keeps the entry as written. */
START_TEST(test_save_resolved)
{
    char dir[] = "/tmp/vpeft-adapter-XXXXXX", path[128];
    ck_assert_ptr_nonnull(mkdtemp(dir));
    vp_config *c;
    char text[4096];
    snprintf(text, sizeof text, model_fmt, ", \"peft\": [{\"plugin\": \"adapter\", "
             "\"per_site\": 2}]");
    vt_ok(vp_cfg_parse(text, strlen(text), "m.json", &c));
    vp_model *m;
    vt_ok(vp_model_create(vt_device((uint32_t)_i), c, &(vp_model_opts){.batch = 1}, &m));
    vt_ok(vp_model_save_peft(m, c, dir));
    snprintf(path, sizeof path, "%s/adapter_config.json", dir);
    vp_config *saved;
    vt_ok(vp_cfg_load(path, &saved));
    const char *s;
    double d;
    int64_t i;
    vt_ok(vp_cfg_string(saved, "peft_type", NULL, &s));
    ck_assert_str_eq(s, "BOTTLENECK_ADAPTER");
    vt_ok(vp_cfg_int(saved, "per_site", 0, &i));
    ck_assert_int_eq(i, 2);
    vt_ok(vp_cfg_float(saved, "reduction_factor", 0, &d));
    ck_assert(d == 16.0);
    vt_ok(vp_cfg_float(saved, "scaling", 0, &d));
    ck_assert(d == 1.0);
    vt_ok(vp_cfg_string(saved, "non_linearity", NULL, &s));
    ck_assert_str_eq(s, "relu");
    vt_ok(vp_cfg_string(saved, "init_weights", NULL, &s));
    ck_assert_str_eq(s, "default");
    ck_assert_int_eq(vp_cfg_type_of(saved, "plugin"), VP_CFG_ABSENT);
    vp_cfg_free(saved);
    snprintf(path, sizeof path, "%s/vpeft_config.json", dir);
    vt_ok(vp_cfg_load(path, &saved));
    const vp_config *entry = vp_cfg_get(saved, "peft");
    ck_assert_int_eq(vp_cfg_len(entry), 2); /* plugin, per_site: as written */
    ck_assert_int_eq(vp_cfg_type_of(entry, "reduction_factor"), VP_CFG_ABSENT);
    vp_cfg_free(saved);
    /* and it loads back into the same configuration */
    vt_ok(vp_model_load_peft(m, dir));
    vp_model_destroy(m);
    vp_cfg_free(c);
    vt_rm_rf(dir);
}
END_TEST

int main(void)
{
    Suite *s = suite_create("adapter");
    TCase *tc = vt_tcase("adapter");
    tcase_set_timeout(tc, 120);
    tcase_add_test(tc, test_descriptor);
    tcase_add_test(tc, test_plugin_test);
    vt_add_per_device(tc, test_formula, NULL);
    vt_add_per_device(tc, test_config_errors, NULL);
    vt_add_per_device(tc, test_model_sites, NULL);
    vt_add_per_device(tc, test_model_trainable, NULL);
    vt_add_per_device(tc, test_model_identity, NULL);
    vt_add_per_device(tc, test_save_resolved, NULL);
    suite_add_tcase(s, tc);
    return vt_run(s);
}
