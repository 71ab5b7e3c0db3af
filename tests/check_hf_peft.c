/*
 * PEFT methods on Hugging Face Mask2Former checkpoints ("model": {"hf":
 * DIR}, the tiny Swin + Mask2Former of tests/data/hf-mask2former), held
 * to Hugging Face PEFT's rules: the modules a target_modules list or
 * regex selects are those HF PEFT would select, computed here from HF's
 * own state_dict keys (shared_state_dict_keys.txt) by PEFT's rule
 * (check_target_module_exists: name == target or name ends with "." +
 * target; a regex is a full match) over its Linear modules (a 2-D
 * "<module>.weight"); the saved adapter's keys and shapes
 * (base_model.model.<module>.lora_A.weight (r, in), lora_B.weight (out,
 * r)) against HF's in/out features, and its adapter_config.json against
 * LoraConfig's fields; targets HF would apply to layers vpeft has no site
 * for are errors; lora_deform and bottleneck adapters at HF's module
 * paths; every method the identity at init, a few steps lowering the
 * loss; train.trainable with HF names; `vpeft info --sites`.
 */
#include <math.h>
#include <regex.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "config/config.h"
#include "graph/graph.h"
#include "harness.h"
#include "io/safetensors.h"
#include "model/build.h"
#include "model/model.h"
#include "util/error.h"

static char data[4096];

static void set_data(void)
{
    const char *src = getenv("VPEFT_SRCDIR");
    snprintf(data, sizeof data, "%s/tests/data/hf-mask2former", src ? src : "..");
}

static const char *bin(void)
{
    const char *b = getenv("VPEFT_BIN");
    ck_assert_msg(b != NULL, "VPEFT_BIN is not set (run through make check)");
    return b;
}

/* A checkpoint directory: config.json and model.safetensors linked to the
 * shared files. */
static void make_ckpt(char *dir, size_t n)
{
    const char *tmp = getenv("TMPDIR");
    snprintf(dir, n, "%s/hfpeft.XXXXXX", tmp ? tmp : "/tmp");
    ck_assert_ptr_nonnull(mkdtemp(dir));
    ck_assert_int_eq(vt_sh("ln -s '%s/shared_config.json' '%s/config.json' && ln -s "
                           "'%s/shared_weights.safetensors' '%s/model.safetensors'",
                           data, dir, data, dir), 0);
}

/* ---- HF's modules, from its state_dict keys ------------------------------------- */

typedef struct hf_linear {
    char path[200];
    int64_t out, in;
} hf_linear;

static hf_linear linears[128];
static int n_linears;

/* Every Linear-like module of HF's model: a "<m>.weight" of shape [out, in]. */
static void read_linears(void)
{
    char path[4200], line[512];
    snprintf(path, sizeof path, "%s/shared_state_dict_keys.txt", data);
    FILE *f = fopen(path, "r");
    ck_assert_msg(f != NULL, "cannot open %s", path);
    n_linears = 0;
    while (fgets(line, sizeof line, f)) {
        char name[300], dtype[32];
        long long a, b, c;
        int k = sscanf(line, "%299s %31s [%lld, %lld, %lld", name, dtype, &a, &b, &c);
        size_t len = strlen(name);
        if (k != 4 || len < 8 || strcmp(name + len - 7, ".weight"))
            continue; /* not 2-D, or not a module's weight */
        ck_assert_int_lt(n_linears, 128);
        hf_linear *l = &linears[n_linears++];
        snprintf(l->path, sizeof l->path, "%.*s", (int)(len - 7), name);
        l->out = a;
        l->in = b;
    }
    fclose(f);
    /* Swin 8 x 6 + 3 reductions, the pixel decoder's 2 x (4 deformable +
     * 2 FFN), the decoder's 2 x 7, 3 embeddings, 3 mask MLP, class_predictor */
    ck_assert_int_eq(n_linears, 84);
}

/* PEFT's check_target_module_exists for a list of names. */
static bool peft_suffix(const char *const *targets, int n, const char *key)
{
    size_t kl = strlen(key);
    for (int i = 0; i < n; i++) {
        size_t tl = strlen(targets[i]);
        if (!strcmp(key, targets[i]) ||
            (kl > tl && key[kl - tl - 1] == '.' && !strcmp(key + kl - tl, targets[i])))
            return true;
    }
    return false;
}

static int cmp_str(const void *a, const void *b)
{
    return strcmp(*(const char *const *)a, *(const char *const *)b);
}

/* The sorted module paths HF PEFT selects: by names (targets, n) or by a
 * regex (re, full match); only those that are Linear in the vpeft sense
 * below are expected (the test's targets avoid embeddings). */
static int hf_select(const char *const *targets, int n, const char *re, const char **out)
{
    regex_t rx;
    if (re) {
        char full[1024];
        snprintf(full, sizeof full, "^(%s)$", re);
        ck_assert_int_eq(regcomp(&rx, full, REG_EXTENDED | REG_NOSUB), 0);
    }
    int k = 0;
    for (int i = 0; i < n_linears; i++)
        if (re ? !regexec(&rx, linears[i].path, 0, NULL, 0)
               : peft_suffix(targets, n, linears[i].path))
            out[k++] = linears[i].path;
    if (re)
        regfree(&rx);
    qsort(out, (size_t)k, sizeof *out, cmp_str);
    return k;
}

static const hf_linear *hf_find(const char *path)
{
    for (int i = 0; i < n_linears; i++)
        if (!strcmp(linears[i].path, path))
            return &linears[i];
    return NULL;
}

/* ---- models ------------------------------------------------------------------------ */

static vp_config *parse(const char *json)
{
    vp_config *c;
    vt_ok(vp_cfg_parse(json, strlen(json), "run.json", &c));
    return c;
}

static vp_model *model_of(int dev, const char *ckpt, const char *peft, const char *train_extra,
                          bool train, vp_config **cfg_out)
{
    char json[8192];
    snprintf(json, sizeof json, "{\"model\": {\"hf\": \"%s\", \"max_targets\": 3}%s%s%s%s%s}",
             ckpt, peft ? ", \"peft\": [" : "", peft ? peft : "", peft ? "]" : "",
             train_extra ? ", " : "", train_extra ? train_extra : "");
    vp_config *c = parse(json);
    vp_model *m;
    vt_ok(vp_model_create(vt_device((uint32_t)dev), c,
                          &(vp_model_opts){.batch = 2, .train = train}, &m));
    if (cfg_out)
        *cfg_out = c;
    else
        vp_cfg_free(c);
    return m;
}

static vp_status model_err(const char *ckpt, const char *peft)
{
    char json[8192];
    snprintf(json, sizeof json, "{\"model\": {\"hf\": \"%s\"}, \"peft\": [%s]}", ckpt, peft);
    vp_config *c = parse(json);
    vp_model *m = NULL;
    vp_status st = vp_model_create(vt_device(0), c,
                                   &(vp_model_opts){.batch = 1, .no_compile = true}, &m);
    vp_model_destroy(m);
    vp_cfg_free(c);
    return st;
}

static float *read_st(const vp_st *f, const char *key, size_t *n)
{
    const vp_st_tensor *t = vp_st_find(f, key);
    ck_assert_msg(t != NULL, "no %s", key);
    size_t k = 1;
    for (int i = 0; i < t->ndim; i++)
        k *= (size_t)t->shape[i];
    float *x = malloc(k * sizeof *x);
    vt_ok(vp_st_read_f32(f, key, x, k));
    *n = k;
    return x;
}

/* pixel_values of shared_io, and (training) the targets of shared_loss
 * as check_hf_m2f writes them. */
static void write_batch(vp_model *m, bool targets)
{
    vp_graph *g = vp_model_graph(m);
    char path[4300];
    vp_st *f;
    size_t n;
    snprintf(path, sizeof path, "%s/shared_io.safetensors", data);
    vt_ok(vp_st_open(path, &f));
    float *px = read_st(f, "pixel_values", &n);
    vt_ok(vp_graph_write(g, vp_model_image(m), px, n * sizeof *px));
    free(px);
    vp_st_close(f);
    if (!targets)
        return;
    enum { B = 2, T = 3, HW = 64 * 64 };
    snprintf(path, sizeof path, "%s/shared_loss.safetensors", data);
    vt_ok(vp_st_open(path, &f));
    vp_gt *labels = vp_graph_find(g, "target.labels"), *masks = vp_graph_find(g, "target.masks");
    ck_assert_ptr_nonnull(labels);
    ck_assert_ptr_nonnull(masks);
    int32_t lab[B * T];
    float *tm = calloc(B * T * HW, sizeof *tm);
    for (int b = 0; b < B; b++) {
        char key[64];
        snprintf(key, sizeof key, "class_labels.%d", b);
        const vp_st_tensor *t = vp_st_find(f, key);
        ck_assert_ptr_nonnull(t);
        int64_t cls[T], k = t->shape[0];
        ck_assert_int_le(k, T);
        vt_ok(vp_st_read_i64(f, key, cls, (size_t)k));
        snprintf(key, sizeof key, "mask_labels.%d", b);
        float *ml = read_st(f, key, &n);
        ck_assert_int_eq(n, (size_t)k * HW);
        for (int j = 0; j < T; j++)
            lab[b * T + j] = j < k ? (int32_t)cls[j] : -1;
        memcpy(tm + (size_t)b * T * HW, ml, n * sizeof *ml);
        free(ml);
    }
    vp_st_close(f);
    vt_ok(vp_graph_write(g, labels, lab, sizeof lab));
    vt_ok(vp_graph_write(g, masks, tm, (size_t)B * T * HW * sizeof *tm));
    free(tm);
}

/* The two predictions of an evaluation run, concatenated. */
static float *predict(vp_model *m, size_t *n)
{
    static const char *const names[2] = {"class_queries_logits", "masks_queries_logits"};
    vp_graph *g = vp_model_graph(m);
    write_batch(m, false);
    vt_ok(vp_graph_run(g));
    size_t n0 = (size_t)vp_gt_nelem(vp_model_output(m, names[0]));
    size_t n1 = (size_t)vp_gt_nelem(vp_model_output(m, names[1]));
    float *y = malloc((n0 + n1) * sizeof *y);
    vt_ok(vp_graph_read(g, vp_model_output(m, names[0]), y, n0 * sizeof *y));
    vt_ok(vp_graph_read(g, vp_model_output(m, names[1]), y + n0, n1 * sizeof *y));
    *n = n0 + n1;
    return y;
}

/* The sorted paths of the sites of kind where method 0 attached. */
static int attached(const vp_model *m, vp_site_kind kind, const char **out)
{
    const vp_build *b = vp_model_build(m);
    int k = 0;
    for (uint32_t i = 0; i < vp_build_site_count(b); i++) {
        const vp_build_site *s = vp_build_site_at(b, i);
        if (s->kind == kind && (s->attached & 1u))
            out[k++] = s->path;
    }
    qsort(out, (size_t)k, sizeof *out, cmp_str);
    return k;
}

static void assert_same_list(const char **got, int ng, const char **want, int nw, const char *what)
{
    for (int i = 0; i < ng && i < nw; i++)
        ck_assert_msg(!strcmp(got[i], want[i]), "%s: item %d is %s, HF PEFT's %s", what, i,
                      got[i], want[i]);
    ck_assert_msg(ng == nw, "%s: %d modules, HF PEFT selects %d", what, ng, nw);
}

/* The base model's predictions, for identity at init. */
static float *base_pred;
static size_t base_n;

static void identity_at_init(vp_model *m, const char *what)
{
    size_t n;
    float *y = predict(m, &n);
    ck_assert_uint_eq(n, base_n);
    ck_assert_msg(!memcmp(y, base_pred, n * sizeof *y), "%s: not the base model at init", what);
    free(y);
}

/* ---- LoRA: selection, files, identity ---------------------------------------------- */

/* Every field of LoraConfig and PeftConfig (peft 0.18 and main): an
 * adapter_config.json with any other is a warning in HF PEFT, and an
 * error before 0.11. */
static const char *const lora_config_fields[] = {
    "peft_type", "task_type", "inference_mode", "base_model_name_or_path", "revision",
    "auto_mapping", "peft_version", "r", "target_modules", "exclude_modules", "lora_alpha",
    "lora_dropout", "fan_in_fan_out", "bias", "use_rslora", "modules_to_save",
    "init_lora_weights", "layers_to_transform", "layers_pattern", "rank_pattern",
    "alpha_pattern", "use_dora", "lora_bias", "target_parameters", "layer_replication"};

static void check_adapter_files(const char *dir, const char *ckpt, const char **sites, int n,
                                int64_t r, double alpha, const char *plugin)
{
    char path[4400];
    /* adapter_model.safetensors: exactly HF's keys and shapes */
    snprintf(path, sizeof path, "%s/adapter_model.safetensors", dir);
    vp_st *f;
    vt_ok(vp_st_open(path, &f));
    ck_assert_uint_eq(vp_st_count(f), (size_t)(2 * n));
    for (int i = 0; i < n; i++) {
        const hf_linear *l = hf_find(sites[i]);
        ck_assert_msg(l != NULL, "%s is no Linear module of HF's model", sites[i]);
        char key[400];
        snprintf(key, sizeof key, "base_model.model.%s.lora_A.weight", sites[i]);
        vt_ok(vp_st_check_shape(f, key, 2, (int64_t[]){r, l->in}));
        snprintf(key, sizeof key, "base_model.model.%s.lora_B.weight", sites[i]);
        vt_ok(vp_st_check_shape(f, key, 2, (int64_t[]){l->out, r}));
    }
    vp_st_close(f);

    /* adapter_config.json: LoraConfig's fields only, the selection spelled out */
    snprintf(path, sizeof path, "%s/adapter_config.json", dir);
    vp_config *j;
    vt_ok(vp_cfg_load(path, &j));
    for (int i = 0; i < vp_cfg_len(j); i++) {
        const char *key = vp_cfg_key(vp_cfg_at(j, i));
        bool known = false;
        for (size_t k = 0; k < sizeof lora_config_fields / sizeof *lora_config_fields; k++)
            known |= !strcmp(key, lora_config_fields[k]);
        ck_assert_msg(known, "adapter_config.json: %s is no LoraConfig field", key);
    }
    const char *s;
    int64_t ri;
    double a;
    vt_ok(vp_cfg_string(j, "peft_type", NULL, &s));
    ck_assert_str_eq(s, "LORA");
    vt_ok(vp_cfg_string(j, "base_model_name_or_path", NULL, &s));
    ck_assert_str_eq(s, ckpt);
    vt_ok(vp_cfg_int(j, "r", 0, &ri));
    ck_assert_int_eq(ri, r);
    vt_ok(vp_cfg_float(j, "lora_alpha", 0, &a));
    ck_assert(a == alpha);
    vt_ok(vp_cfg_string(j, "bias", NULL, &s));
    ck_assert_str_eq(s, "none");
    ck_assert_int_eq(vp_cfg_type_of(j, "task_type"), VP_CFG_NULL);
    const vp_config *tm = vp_cfg_get(j, "target_modules");
    ck_assert_int_eq(vp_cfg_type_of(j, "target_modules"), VP_CFG_ARRAY);
    ck_assert_int_eq(vp_cfg_len(tm), n);
    for (int i = 0; i < n; i++) {
        vt_ok(vp_cfg_string(vp_cfg_at(tm, i), NULL, NULL, &s));
        ck_assert_str_eq(s, sites[i]);
    }
    ck_assert_int_eq(vp_cfg_len(vp_cfg_get(j, "rank_pattern")), 0);
    ck_assert_int_eq(vp_cfg_len(vp_cfg_get(j, "alpha_pattern")), 0);
    vp_cfg_free(j);
    /* vpeft's own beside it */
    snprintf(path, sizeof path, "%s/vpeft_config.json", dir);
    vt_ok(vp_cfg_load(path, &j));
    vt_ok(vp_cfg_string(j, "vpeft_plugin", NULL, &s));
    ck_assert_str_eq(s, plugin);
    vt_ok(vp_cfg_string(vp_cfg_get(j, "peft"), "plugin", NULL, &s));
    ck_assert_str_eq(s, plugin);
    vp_cfg_free(j);
}

/* LoRA with a target list or regex on model a (B random: not the
 * identity), saved, loaded into a fresh model bit for bit. */
static void lora_case(int dev, const char *ckpt, const char *targets_json,
                      const char *const *names, int n_names, const char *re, int want_n)
{
    const char *want[128], *got[128];
    int nw = hf_select(names, n_names, re, want);
    ck_assert_int_eq(nw, want_n);
    char peft[1024];
    snprintf(peft, sizeof peft, "{\"plugin\": \"lora\", \"r\": 4, \"lora_alpha\": 8, "
             "\"target_modules\": %s}", targets_json);
    vp_model *base = model_of(dev, ckpt, peft, NULL, false, NULL);
    identity_at_init(base, targets_json);
    int ng = attached(base, VP_SITE_LINEAR, got);
    assert_same_list(got, ng, want, nw, targets_json);
    printf("note: %s: %d modules, as HF PEFT\n", targets_json, ng);

    snprintf(peft, sizeof peft, "{\"plugin\": \"lora\", \"r\": 4, \"lora_alpha\": 8, "
             "\"init_lora_weights\": false, \"target_modules\": %s}", targets_json);
    vp_config *ca;
    vp_model *a = model_of(dev, ckpt, peft, NULL, false, &ca);
    size_t n;
    float *ya = predict(a, &n);
    ck_assert_msg(memcmp(ya, base_pred, n * sizeof *ya), "random B changes nothing");
    const char *tmp = getenv("TMPDIR");
    char dir[4200];
    snprintf(dir, sizeof dir, "%s/hfpeft-out.XXXXXX", tmp ? tmp : "/tmp");
    ck_assert_ptr_nonnull(mkdtemp(dir));
    vt_ok(vp_model_save_peft(a, ca, dir));
    check_adapter_files(dir, ckpt, want, nw, 4, 8.0, "lora");
    vt_ok(vp_model_load_peft(base, dir));
    float *yb = predict(base, &n);
    ck_assert_msg(!memcmp(ya, yb, n * sizeof *ya), "%s: loaded adapter differs", targets_json);
    /* As HF PEFT saves it (no vpeft_config.json): loads by peft_type. */
    char path[4400];
    snprintf(path, sizeof path, "%s/vpeft_config.json", dir);
    ck_assert_int_eq(unlink(path), 0);
    vp_model *c = model_of(dev, ckpt, peft, NULL, false, NULL);
    vt_ok(vp_model_load_peft(c, dir));
    free(yb);
    yb = predict(c, &n);
    ck_assert_msg(!memcmp(ya, yb, n * sizeof *ya), "loaded without vpeft_config.json differs");
    free(ya);
    free(yb);
    vp_model_destroy(a);
    vp_model_destroy(base);
    vp_model_destroy(c);
    vp_cfg_free(ca);
    vt_rm_rf(dir);
}

START_TEST(test_lora_targets)
{
    set_data();
    read_linears();
    char ckpt[4200];
    make_ckpt(ckpt, sizeof ckpt);
    vp_model *m = model_of(_i, ckpt, NULL, NULL, false, NULL);
    base_pred = predict(m, &base_n);
    vp_model_destroy(m);

    static const char *const qv[] = {"query", "value"}, *const qpvp[] = {"q_proj", "v_proj"};
    /* Swin: 8 blocks x (query, value) */
    lora_case(_i, ckpt, "[\"query\", \"value\"]", qv, 2, NULL, 16);
    /* the decoder's self-attention: 2 layers x (q_proj, v_proj) */
    lora_case(_i, ckpt, "[\"q_proj\", \"v_proj\"]", qpvp, 2, NULL, 4);
    /* a regex over the last two Swin stages' MLPs, the decoder's
     * self-attention projections and one deformable value projection */
    const char *re = "model\\.(pixel_level_module\\.encoder\\.encoder\\.layers\\.[23]\\.blocks\\."
                     "[0-9]+\\.intermediate\\.dense|transformer_module\\.decoder\\.layers\\.[0-9]+"
                     "\\.self_attn\\.(q|k|v)_proj|pixel_level_module\\.decoder\\.encoder\\.layers"
                     "\\.1\\.self_attn\\.value_proj)";
    char json[1024];
    size_t k = 0;
    json[k++] = '"';
    for (const char *p = re; *p; p++) {
        if (*p == '\\')
            json[k++] = '\\';
        json[k++] = *p;
    }
    json[k++] = '"';
    json[k] = 0;
    lora_case(_i, ckpt, json, NULL, 0, re, 11);
    free(base_pred);
    base_pred = NULL;
    vt_rm_rf(ckpt);
}
END_TEST

/* rank_pattern and alpha_pattern (vpeft's globs) saved per module, as HF
 * PEFT's get_pattern_key reads them: a key matching the module name's end. */
START_TEST(test_patterns)
{
    set_data();
    char ckpt[4200], dir[4200], path[4400];
    make_ckpt(ckpt, sizeof ckpt);
    vp_config *c;
    vp_model *m = model_of(_i, ckpt, "{\"plugin\": \"lora\", \"r\": 4, \"lora_alpha\": 4, "
                           "\"target_modules\": [\"q_proj\", \"v_proj\"], \"rank_pattern\": "
                           "{\"layers.1.*\": 2}, \"alpha_pattern\": {\"v_proj\": 16}}",
                           NULL, false, &c);
    const char *tmp = getenv("TMPDIR");
    snprintf(dir, sizeof dir, "%s/hfpeft-pat.XXXXXX", tmp ? tmp : "/tmp");
    ck_assert_ptr_nonnull(mkdtemp(dir));
    vt_ok(vp_model_save_peft(m, c, dir));
    snprintf(path, sizeof path, "%s/adapter_config.json", dir);
    vp_config *j;
    vt_ok(vp_cfg_load(path, &j));
    const vp_config *rp = vp_cfg_get(j, "rank_pattern"), *ap = vp_cfg_get(j, "alpha_pattern");
    ck_assert_int_eq(vp_cfg_len(rp), 2);
    ck_assert_int_eq(vp_cfg_len(ap), 2);
    for (int l = 0; l < 2; l++)
        for (int v = 0; v < 2; v++) {
            char key[200];
            int64_t r;
            double a;
            snprintf(key, sizeof key, "model.transformer_module.decoder.layers.%d.self_attn.%s",
                     l, v ? "v_proj" : "q_proj");
            ck_assert_int_eq(vp_cfg_type_of(rp, key), l ? VP_CFG_NUMBER : VP_CFG_ABSENT);
            vt_ok(vp_cfg_int(rp, key, 4, &r));
            ck_assert_int_eq(r, l ? 2 : 4);
            ck_assert_int_eq(vp_cfg_type_of(ap, key), v ? VP_CFG_NUMBER : VP_CFG_ABSENT);
            vt_ok(vp_cfg_float(ap, key, 4, &a));
            ck_assert(a == (v ? 16.0 : 4.0));
        }
    vp_cfg_free(j);
    vp_model_destroy(m);
    vp_cfg_free(c);
    vt_rm_rf(dir);
    vt_rm_rf(ckpt);
}
END_TEST

/* Targets that HF PEFT would apply to layers vpeft has no linear site
 * for: errors, naming the module. */
START_TEST(test_lora_unadaptable)
{
    set_data();
    char ckpt[4200];
    make_ckpt(ckpt, sizeof ckpt);
    static const struct {
        const char *targets, *msg;
    } cases[] = {
        {"[\"query\", \"projection\"]",
         "selects model.pixel_level_module.encoder.embeddings.patch_embeddings.projection, a "
         "Conv2d: Hugging Face PEFT would adapt it"},
        {"[\"mask_projection\"]", "selects model.pixel_level_module.decoder.mask_projection, a "
                                  "Conv2d"},
        {"[\"cross_attn\"]", "selects model.transformer_module.decoder.layers.0.cross_attn, an "
                             "nn.MultiheadAttention (its q, k, v packed in in_proj_weight)"},
        {"[\"class_predictor\"]", "selects class_predictor, a Linear or Embedding layer"},
        {"[\"queries_embedder\"]", "selects model.transformer_module.queries_embedder, a Linear "
                                   "or Embedding layer"},
        {"[\"out_proj\"]", "selects model.transformer_module.decoder.layers.0.cross_attn."
                           "out_proj, the out_proj of an nn.MultiheadAttention: PyTorch never "
                           "calls its forward"},
        {"\"model\\\\.transformer_module\\\\.decoder\\\\.layers\\\\.1\\\\..*_proj\"",
         "selects model.transformer_module.decoder.layers.1.cross_attn.out_proj"},
    };
    for (size_t i = 0; i < sizeof cases / sizeof *cases; i++) {
        char peft[512];
        snprintf(peft, sizeof peft, "{\"plugin\": \"lora\", \"target_modules\": %s}",
                 cases[i].targets);
        ck_assert_int_eq(model_err(ckpt, peft), VP_ERR_CONFIG);
        ck_assert_msg(!strncmp(vp_error_last(), "run.json: peft[0].target_modules: ", 34) &&
                          strstr(vp_error_last(), cases[i].msg),
                      "%s: %s", cases[i].targets, vp_error_last());
    }
    /* excluded, the same selections are fine; globs are vpeft's own form */
    vt_ok(model_err(ckpt, "{\"plugin\": \"lora\", \"target_modules\": [\"out_proj\"], "
                          "\"exclude_modules\": [\"cross_attn.out_proj\"]}"));
    vt_ok(model_err(ckpt, "{\"plugin\": \"lora\", \"target_modules\": [\"query\", "
                          "\"projection\"], \"exclude_modules\": [\"patch_embeddings.*\"]}"));
    vt_ok(model_err(ckpt, "{\"plugin\": \"lora\", \"target_modules\": [\"*projection*\", "
                          "\"query\"]}"));
    vt_rm_rf(ckpt);
}
END_TEST

/* ---- lora_deform and adapters at HF's paths --------------------------------------- */

static const char *const deform[2] = {"model.pixel_level_module.decoder.encoder.layers.0.self_attn",
                                      "model.pixel_level_module.decoder.encoder.layers.1.self_attn"};

START_TEST(test_deform_and_adapter)
{
    set_data();
    read_linears();
    char ckpt[4200];
    make_ckpt(ckpt, sizeof ckpt);
    vp_model *m = model_of(_i, ckpt, NULL, NULL, false, NULL);
    base_pred = predict(m, &base_n);
    vp_model_destroy(m);

    /* lora_deform, default targets: sampling_offsets and value_proj of the
     * pixel decoder's 2 deformable modules */
    vp_config *cd;
    m = model_of(_i, ckpt, "{\"plugin\": \"lora_deform\"}", NULL, false, &cd);
    identity_at_init(m, "lora_deform");
    const vp_build *b = vp_model_build(m);
    uint64_t count = 0, want_count = 0;
    int np = 0;
    for (uint32_t i = 0; i < vp_build_param_count(b); i++) {
        const vp_build_param *p = vp_build_param_at(b, i);
        if (!p->owner)
            continue;
        np++;
        count += (uint64_t)vp_gt_nelem(p->t);
        ck_assert(vp_gt_trainable(p->t));
    }
    const char *want[8], *got[8];
    for (int l = 0; l < 2; l++)
        for (int t = 0; t < 2; t++) {
            const char *role = t ? "value_proj" : "sampling_offsets";
            char path[300], name[400];
            snprintf(path, sizeof path, "%s.%s", deform[l], role);
            const hf_linear *hl = hf_find(path);
            ck_assert_ptr_nonnull(hl);
            want[2 * l + t] = hl->path;
            snprintf(name, sizeof name, "%s.lora_A.weight", path);
            vp_gt *A = vp_graph_find(vp_model_graph(m), name);
            ck_assert_msg(A != NULL, "no %s", name);
            ck_assert_int_eq(vp_gt_shape(A)[0], 8);
            ck_assert_int_eq(vp_gt_shape(A)[1], hl->in);
            snprintf(name, sizeof name, "%s.lora_B.weight", path);
            vp_gt *B = vp_graph_find(vp_model_graph(m), name);
            ck_assert_msg(B != NULL, "no %s", name);
            ck_assert_int_eq(vp_gt_shape(B)[0], hl->out);
            want_count += (uint64_t)(8 * (hl->in + hl->out));
        }
    qsort(want, 4, sizeof *want, cmp_str);
    ck_assert_int_eq(np, 8);
    ck_assert_uint_eq(count, want_count);
    ck_assert_uint_eq(count, 3072); /* 2 x 8 x ((32 + 96) + (32 + 32)) */
    assert_same_list(got, attached(m, VP_SITE_LINEAR, got), want, 4, "lora_deform");
    const char *tmp = getenv("TMPDIR");
    char dir[4200];
    snprintf(dir, sizeof dir, "%s/hfpeft-ld.XXXXXX", tmp ? tmp : "/tmp");
    ck_assert_ptr_nonnull(mkdtemp(dir));
    vt_ok(vp_model_save_peft(m, cd, dir));
    check_adapter_files(dir, ckpt, want, 4, 8, 8.0, "lora_deform");
    vt_rm_rf(dir);
    vp_model_destroy(m);
    vp_cfg_free(cd);

    /* bottleneck adapters after the attention sub-layers of the pixel
     * decoder and the transformer decoder: 2 + 2 + 2 sites */
    m = model_of(_i, ckpt, "{\"plugin\": \"adapter\", \"modules\": [\"model.pixel_level_module."
                           "decoder.*\", \"model.transformer_module.*\"]}", NULL, false, NULL);
    identity_at_init(m, "adapter");
    const char *sites[6] = {deform[0], deform[1],
                            "model.transformer_module.decoder.layers.0.cross_attn",
                            "model.transformer_module.decoder.layers.0.self_attn",
                            "model.transformer_module.decoder.layers.1.cross_attn",
                            "model.transformer_module.decoder.layers.1.self_attn"};
    const char *ga[16];
    assert_same_list(ga, attached(m, VP_SITE_ATTN_OUT, ga), sites, 6, "adapter");
    b = vp_model_build(m);
    np = 0;
    count = 0;
    for (uint32_t i = 0; i < vp_build_param_count(b); i++)
        if (vp_build_param_at(b, i)->owner) {
            np++;
            count += (uint64_t)vp_gt_nelem(vp_build_param_at(b, i)->t);
        }
    ck_assert_int_eq(np, 24);
    ck_assert_uint_eq(count, 6 * (2 * 32 * 2 + 2 + 32)); /* d 32, m = 32 // 16 */
    for (int s = 0; s < 6; s++) {
        static const char *const parts[4] = {"down.weight", "down.bias", "up.weight", "up.bias"};
        for (int p = 0; p < 4; p++) {
            char name[400];
            snprintf(name, sizeof name, "%s.adapters.0.%s", sites[s], parts[p]);
            ck_assert_msg(vp_graph_find(vp_model_graph(m), name) != NULL, "no %s", name);
        }
    }
    vp_model_destroy(m);
    free(base_pred);
    base_pred = NULL;
    vt_rm_rf(ckpt);
}
END_TEST

/* ---- training ------------------------------------------------------------------------ */

/* The base parameters trained beside a method go into its adapter as HF
 * PEFT's modules_to_save does: under their own names, their modules in
 * adapter_config.json's modules_to_save; loading the adapter into a new
 * model restores them. */
static void check_modules_to_save(int dev, const char *ckpt, const char *peft, vp_model *m,
                                  const vp_config *root)
{
    const char *tmp = getenv("TMPDIR");
    char dir[4200], path[4400];
    snprintf(dir, sizeof dir, "%s/mts.XXXXXX", tmp ? tmp : "/tmp");
    ck_assert_ptr_nonnull(mkdtemp(dir));
    vt_ok(vp_model_save_peft(m, root, dir));
    snprintf(path, sizeof path, "%s/adapter_config.json", dir);
    vp_config *cfg;
    vt_ok(vp_cfg_load(path, &cfg));
    const vp_config *mts = vp_cfg_get(cfg, "modules_to_save");
    static const char *const want[] = {
        "class_predictor", "model.transformer_module.decoder.mask_predictor.mask_embedder.0.0",
        "model.transformer_module.decoder.mask_predictor.mask_embedder.1.0",
        "model.transformer_module.decoder.mask_predictor.mask_embedder.2.0"};
    ck_assert_int_eq(vp_cfg_len(mts), 4);
    for (int i = 0; i < 4; i++) {
        const char *v;
        vt_ok(vp_cfg_string(vp_cfg_at(mts, i), NULL, NULL, &v));
        ck_assert_str_eq(v, want[i]);
    }
    vp_cfg_free(cfg);
    snprintf(path, sizeof path, "%s/adapter_model.safetensors", dir);
    vp_st *f;
    vt_ok(vp_st_open(path, &f));
    size_t n;
    float *saved = read_st(f, "base_model.model.class_predictor.weight", &n);
    ck_assert_uint_eq(n, 6 * 32);
    vp_st_close(f);
    float trained[6 * 32], back[6 * 32];
    vt_ok(vp_graph_read(vp_model_graph(m), vp_graph_find(vp_model_graph(m),
                                                         "class_predictor.weight"),
                        trained, sizeof trained));
    ck_assert(!memcmp(saved, trained, sizeof trained));
    free(saved);
    vp_model *m2 = model_of(dev, ckpt, peft, NULL, false, NULL);
    vt_ok(vp_model_load_peft(m2, dir));
    vt_ok(vp_graph_read(vp_model_graph(m2), vp_graph_find(vp_model_graph(m2),
                                                          "class_predictor.weight"),
                        back, sizeof back));
    ck_assert(!memcmp(back, trained, sizeof back));
    vp_model_destroy(m2);
    vt_rm_rf(dir);
}

static void train_steps(int dev, const char *ckpt, const char *peft, const char *what)
{
    vp_config *root;
    vp_model *m = model_of(dev, ckpt, peft,
                           "\"train\": {\"trainable\": [\"class_predictor.*\", "
                           "\"model.transformer_module.decoder.mask_predictor.*\"]}",
                           true, &root);
    /* train.trainable with HF names: exactly those base parameters */
    const vp_build *b = vp_model_build(m);
    uint64_t base_trainable = 0;
    for (uint32_t i = 0; i < vp_build_param_count(b); i++) {
        const vp_build_param *p = vp_build_param_at(b, i);
        const char *name = vp_gt_name(p->t);
        bool want = p->owner || !strncmp(name, "class_predictor.", 16) ||
                    !strncmp(name, "model.transformer_module.decoder.mask_predictor.", 48);
        ck_assert_msg(vp_gt_trainable(p->t) == want, "%s: trainable %d", name,
                      vp_gt_trainable(p->t));
        if (!p->owner && want)
            base_trainable += (uint64_t)vp_gt_nelem(p->t);
    }
    ck_assert_uint_eq(base_trainable, 6 * 32 + 6 + 3 * (32 * 32 + 32));
    vp_graph *g = vp_model_graph(m);
    write_batch(m, true);
    float first = 0, last = 0;
    for (int step = 1; step <= 6; step++) {
        vt_ok(vp_graph_run(g));
        vt_ok(vp_graph_read(g, vp_model_loss(m), step == 1 ? &first : &last, sizeof first));
        vt_ok(vp_graph_step(g, 1e-2f, step));
    }
    printf("note: %s: loss %.5f -> %.5f after 5 steps\n", what, first, last);
    ck_assert_msg(isfinite(last) && last < 0.95f * first, "%s: loss %g -> %g", what, first, last);
    if (!strcmp(what, "lora"))
        check_modules_to_save(dev, ckpt, peft, m, root);
    vp_cfg_free(root);
    vp_model_destroy(m);
}

START_TEST(test_training)
{
    set_data();
    char ckpt[4200];
    make_ckpt(ckpt, sizeof ckpt);
    train_steps(_i, ckpt, "{\"plugin\": \"lora\", \"target_modules\": [\"query\", \"value\", "
                          "\"q_proj\", \"v_proj\"]}", "lora");
    train_steps(_i, ckpt, "{\"plugin\": \"lora_deform\"}", "lora_deform");
    train_steps(_i, ckpt, "{\"plugin\": \"adapter\", \"modules\": [\"model.transformer_module.*\"]}",
                "adapter");
    vt_rm_rf(ckpt);
}
END_TEST

/* ---- vpeft info --sites ---------------------------------------------------------------- */

START_TEST(test_info_sites)
{
    set_data();
    char ckpt[4200], path[4400];
    make_ckpt(ckpt, sizeof ckpt);
    snprintf(path, sizeof path, "%s/run.json", ckpt);
    FILE *f = fopen(path, "w");
    ck_assert_ptr_nonnull(f);
    fprintf(f, "{\"model\": {\"hf\": \"%s\"}, \"peft\": [{\"plugin\": \"lora\", "
               "\"target_modules\": [\"query\", \"value\", \"q_proj\", \"v_proj\"]}, "
               "{\"plugin\": \"lora_deform\"}]}\n", ckpt);
    fclose(f);
    int rc = vt_sh("%s info %s --sites", bin(), path);
    ck_assert_msg(rc == 0, "vpeft info: %d\n%s%s", rc, vt_out, vt_err);
    static const struct {
        const char *path, *rest;
    } lines[] = {
        {"model.pixel_level_module.encoder.encoder.layers.0.blocks.0.attention.self.query",
         "linear 24->24"},
        {"model.pixel_level_module.encoder.encoder.layers.3.blocks.1.attention.self.value",
         "linear 192->192"},
        {"model.pixel_level_module.encoder.encoder.layers.0.blocks.0.attention.self.key",
         "linear 24->24"},
        {"model.transformer_module.decoder.layers.1.self_attn.v_proj", "linear 32->32"},
        {"model.pixel_level_module.decoder.encoder.layers.1.self_attn.sampling_offsets",
         "linear 32->96"},
        {"model.pixel_level_module.decoder.encoder.layers.1.self_attn", "deformable module"},
    };
    int with_lora = 0;
    for (size_t i = 0; i < sizeof lines / sizeof *lines; i++) {
        const char *p = strstr(vt_out, lines[i].path);
        ck_assert_msg(p != NULL, "no site %s in:\n%s", lines[i].path, vt_out);
        const char *end = strchr(p, '\n');
        char line[512];
        snprintf(line, sizeof line, "%.*s", (int)(end ? end - p : (long)strlen(p)), p);
        ck_assert_msg(strstr(line, lines[i].rest) != NULL, "%s", line);
        with_lora += strstr(line, " lora") != NULL && !strstr(line, "lora_deform");
        if (i == 4)
            ck_assert_msg(strstr(line, "lora_deform") != NULL, "%s", line);
    }
    ck_assert_int_eq(with_lora, 3); /* query, value and v_proj; not key */
    vt_assert_has(vt_out, "trainable params: ");
    vt_rm_rf(ckpt);
}
END_TEST

int main(void)
{
    Suite *s = suite_create("hf_peft");
    TCase *tc = vt_tcase("hf_peft");
    tcase_set_timeout(tc, 600);
    vt_add_per_device(tc, test_lora_targets, NULL);
    tcase_add_test(tc, test_lora_unadaptable);
    vt_add_per_device(tc, test_patterns, NULL);
    vt_add_per_device(tc, test_deform_and_adapter, NULL);
    vt_add_per_device(tc, test_training, NULL);
    tcase_add_test(tc, test_info_sites);
    suite_add_tcase(s, tc);
    return vt_run(s);
}
