/*
 * Loading Hugging Face Mask2Former checkpoints ("model": {"hf": DIR}) as
 * users bring them, and `vpeft init`: every way a directory can fail to be
 * a checkpoint vpeft loads (no directory, no config.json, a FIFO for it,
 * no weights, an unsupported model_type or backbone_config.model_type, a
 * shard the index names but the directory lacks, a tensor missing, extra,
 * of another shape, or in two shards), each with its exact one-line
 * message through the library and through `vpeft forward` / `vpeft info`
 * with exit status 2; a sharded checkpoint (written here from
 * tests/data/hf-mask2former with the project's safetensors writer) giving
 * the single file's outputs bit for bit; "classes" other than the
 * checkpoint's (one log line, class_predictor new, everything else the
 * checkpoint's); model.weights over the checkpoint; `vpeft info` on an hf
 * config; and `vpeft init` on a generated shapes dataset followed by
 * `vpeft train` of its config from another directory, `vpeft eval` at an
 * input side whose mask resolution does not divide it, and init's errors.
 * Its "detectron2" case: detectron2 checkpoints ("model": {"detectron2":
 * DIR}, tests/data/maskdino) expanded into their entries with the run's
 * options, every error of the expansion, and strict loading of the
 * backbone's weights (backbone-only models: the head plugin is not needed).
 */
#include <math.h>
#include <stdarg.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "config/config.h"
#include "data/data.h"
#include "graph/graph.h"
#include "harness.h"
#include "io/safetensors.h"
#include "model/model.h"
#include "util/error.h"
#include "util/file.h"
#include "util/sha256.h"

static char data[1024];

/* got == want, with both (cut to fit Check's message) when not */
#define eq(got, want)                                                                           \
    ck_assert_msg(!strcmp((got), (want)), "got:\n%.1500s\nwant:\n%.1500s", (got), (want))

/* s in buf, with buf's end when not */
#define has(buf, s)                                                                             \
    ck_assert_msg(strstr((buf), (s)) != NULL, "expected '%s' in:\n...%.3000s", (s),             \
                  strlen(buf) > 3000 ? (buf) + strlen(buf) - 3000 : (buf))

static const char *bin(void)
{
    const char *b = getenv("VPEFT_BIN");
    ck_assert_msg(b != NULL, "VPEFT_BIN is not set (run through make check)");
    return b;
}

static void set_data(void)
{
    const char *src = getenv("VPEFT_SRCDIR");
    snprintf(data, sizeof data, "%s/tests/data/hf-mask2former", src ? src : "..");
}

/* A fresh directory under $TMPDIR. */
static void tmpdir(char *dir, size_t n, const char *what)
{
    const char *tmp = getenv("TMPDIR");
    snprintf(dir, n, "%s/%s.XXXXXX", tmp && *tmp ? tmp : "/tmp", what);
    ck_assert_ptr_nonnull(mkdtemp(dir));
}

static void write_text(const char *path, const char *text)
{
    vt_ok(vp_file_write_atomic(path, text, strlen(text)));
}

/* DIR/config.json: the shared config, with `from` replaced by `to` (NULL:
 * as it is). */
static void write_config(const char *dir, const char *from, const char *to)
{
    char path[4300], *text;
    size_t n;
    snprintf(path, sizeof path, "%s/shared_config.json", data);
    vt_ok(vp_file_read(path, &text, &n));
    char *out = malloc(n + (to ? strlen(to) : 0) + 1);
    ck_assert_ptr_nonnull(out);
    char *at = from ? strstr(text, from) : NULL;
    ck_assert_msg(!from || at, "no '%s' in the shared config", from);
    if (at) {
        size_t k = (size_t)(at - text);
        memcpy(out, text, k);
        strcpy(out + k, to);
        strcat(out, at + strlen(from));
    } else {
        memcpy(out, text, n + 1);
    }
    snprintf(path, sizeof path, "%s/config.json", dir);
    write_text(path, out);
    free(out);
    free(text);
}

/* Which tensors of the shared weights a written file holds, and how. */
typedef enum { ALL, DROP, EXTRA, RESHAPE, SHARD0, SHARD1, SHARD1_DUP } pick;

/* Write the shared weights' tensors to path: all of them; without key;
 * with an extra tensor named key; key with its 2-d shape transposed (the
 * same bytes); or one of two shards (alternate tensors in name order;
 * SHARD1_DUP: the second also holds the first tensor of the first). */
static void write_weights(const char *path, pick how, const char *key)
{
    char src[4300];
    snprintf(src, sizeof src, "%s/shared_weights.safetensors", data);
    vp_st *f;
    vt_ok(vp_st_open(src, &f));
    size_t n = vp_st_count(f);
    vp_st_entry *e = calloc(n + 1, sizeof *e);
    int64_t (*shapes)[VP_ST_MAX_DIMS] = calloc(n + 1, sizeof *shapes);
    ck_assert(e && shapes);
    size_t k = 0;
    bool found = key == NULL || how == EXTRA;
    for (size_t i = 0; i < n; i++) {
        const vp_st_tensor *t = vp_st_get(f, i);
        bool is_key = key && !strcmp(t->name, key);
        found |= is_key;
        if ((how == DROP && is_key) || (how == SHARD0 && i % 2) ||
            ((how == SHARD1 || how == SHARD1_DUP) && i % 2 == 0 && !(how == SHARD1_DUP && i == 0)))
            continue;
        memcpy(shapes[k], t->shape, sizeof shapes[k]);
        if (how == RESHAPE && is_key) {
            ck_assert_int_eq(t->ndim, 2);
            shapes[k][0] = t->shape[1];
            shapes[k][1] = t->shape[0];
        }
        e[k] = (vp_st_entry){t->name, t->dtype, t->ndim, shapes[k], t->data};
        k++;
    }
    ck_assert_msg(found, "no %s in the shared weights", key);
    static const float extra[4] = {1, 2, 3, 4};
    static const int64_t extra_shape[1] = {4};
    if (how == EXTRA)
        e[k++] = (vp_st_entry){key, VP_ST_F32, 1, extra_shape, extra};
    vt_ok(vp_st_write(path, e, k, NULL, 0));
    free(shapes);
    free(e);
    vp_st_close(f);
}

/* A checkpoint directory: config.json (the shared one) and, unless
 * how < 0, model.safetensors written as write_weights(how, key). */
static void make_ckpt(char *dir, size_t n, int how, const char *key)
{
    tmpdir(dir, n, "hfload");
    write_config(dir, NULL, NULL);
    if (how >= 0) {
        char path[4300];
        snprintf(path, sizeof path, "%s/model.safetensors", dir);
        write_weights(path, (pick)how, key);
    }
}

/* run.json in dir (written there, for the CLI) naming checkpoint ckpt,
 * extra: more fields of "model" (may be ""); parsed into *c. */
static void run_config(const char *dir, const char *ckpt, const char *extra, vp_config **c)
{
    char path[4300], json[9000];
    snprintf(json, sizeof json, "{\"model\": {\"hf\": \"%s\"%s}}", ckpt, extra);
    snprintf(path, sizeof path, "%s/run.json", dir);
    write_text(path, json);
    vt_ok(vp_cfg_load(path, c));
}

static vp_status create(const vp_config *c, bool no_compile, vp_model **m)
{
    return vp_model_create(vt_device(0), c,
                           &(vp_model_opts){.batch = 2, .no_compile = no_compile}, m);
}

/* The library's error for ckpt (VP_ERR_CONFIG, exactly msg), then the
 * command's: `vpeft forward` (and `vpeft info` when info) exits 2 with
 * "vpeft: msg" alone on stderr and leaves no output file. */
static void expect_error(const char *dir, const char *ckpt, const char *extra, bool info,
                         const char *msg)
{
    vp_config *c;
    run_config(dir, ckpt, extra, &c);
    vp_model *m = NULL;
    vp_status st = create(c, false, &m);
    ck_assert_msg(st == VP_ERR_CONFIG, "status %d (%s), expected a config error", (int)st,
                  vp_error_last());
    eq(vp_error_last(), msg);
    ck_assert_ptr_null(m);
    vp_cfg_free(c);
    char want[4400];
    snprintf(want, sizeof want, "vpeft: %s\n", msg);
    ck_assert_int_eq(vt_sh("%s forward --config %s/run.json --input %s/shared_io.safetensors "
                           "--out %s/out.safetensors", bin(), dir, data, dir), 2);
    eq(vt_err, want);
    char out[4300];
    snprintf(out, sizeof out, "%s/out.safetensors", dir);
    ck_assert_int_ne(access(out, F_OK), 0);
    if (info) {
        ck_assert_int_eq(vt_sh("%s info %s/run.json", bin(), dir), 2);
        eq(vt_err, want);
    }
}

/* A directory that is not a checkpoint, or one of a model vpeft does not
 * build. */
START_TEST(test_not_a_checkpoint)
{
    set_data();
    char dir[1024], ck[1200], msg[8192];
    tmpdir(dir, sizeof dir, "hfrun");

    snprintf(ck, sizeof ck, "%s/nowhere", dir);
    snprintf(msg, sizeof msg, "%s/run.json: model.hf: %s: No such file or directory (expected a "
             "Hugging Face checkpoint directory: config.json and model.safetensors)", dir, ck);
    expect_error(dir, ck, "", true, msg);

    snprintf(ck, sizeof ck, "%s/run.json", dir); /* a file */
    snprintf(msg, sizeof msg, "%s/run.json: model.hf: %s is not a directory (expected a Hugging "
             "Face checkpoint directory: config.json and model.safetensors)", dir, ck);
    expect_error(dir, ck, "", true, msg);

    /* no config.json */
    snprintf(ck, sizeof ck, "%s/ck", dir);
    ck_assert_int_eq(mkdir(ck, 0755), 0);
    char path[1400];
    snprintf(path, sizeof path, "%s/model.safetensors", ck);
    write_weights(path, ALL, NULL);
    snprintf(msg, sizeof msg, "%s/run.json: model.hf: %s has no config.json: not a Hugging Face "
             "checkpoint directory (config.json and model.safetensors)", dir, ck);
    expect_error(dir, ck, "", true, msg);

    /* config.json a FIFO: refused before it is opened (opening would block) */
    snprintf(path, sizeof path, "%s/config.json", ck);
    ck_assert_int_eq(mkfifo(path, 0644), 0);
    snprintf(msg, sizeof msg, "%s/run.json: model.hf: %s: not a regular file", dir, path);
    expect_error(dir, ck, "", true, msg);
    unlink(path);

    /* an unsupported model_type, and backbone_config.model_type */
    write_config(ck, "\"model_type\": \"mask2former\"", "\"model_type\": \"maskformer\"");
    snprintf(msg, sizeof msg, "%s/config.json: model_type: \"maskformer\" is not supported: "
             "vpeft loads \"mask2former\" (Mask2FormerForUniversalSegmentation) checkpoints", ck);
    expect_error(dir, ck, "", true, msg);
    write_config(ck, "\"model_type\": \"swin\"", "\"model_type\": \"resnet\"");
    snprintf(msg, sizeof msg, "%s/config.json: backbone_config.model_type: \"resnet\" is not "
             "supported: vpeft loads mask2former checkpoints with a \"swin\" backbone", ck);
    expect_error(dir, ck, "", true, msg);
    write_config(ck, "\"model_type\": \"swin\"", "\"model_typo\": \"swin\"");
    snprintf(msg, sizeof msg, "%s/config.json: backbone_config.model_type: missing: vpeft loads "
             "mask2former checkpoints with a \"swin\" backbone", ck);
    expect_error(dir, ck, "", true, msg);

    /* config.json but no weights: info builds the model without them (the
     * parameter count of a config alone), forward cannot */
    write_config(ck, NULL, NULL);
    snprintf(path, sizeof path, "%s/model.safetensors", ck);
    unlink(path);
    snprintf(msg, sizeof msg, "%s: no model.safetensors (nor a sharded "
             "model.safetensors.index.json): not a Hugging Face checkpoint directory", ck);
    expect_error(dir, ck, "", false, msg);
    ck_assert_int_eq(vt_sh("%s info %s/run.json", bin(), dir), 0);
    has(vt_out, "trainable params: 1,360,134 || all params: 1,360,134");

    /* model.safetensors a FIFO */
    ck_assert_int_eq(mkfifo(path, 0644), 0);
    snprintf(msg, sizeof msg, "%s: not a regular file", path);
    expect_error(dir, ck, "", false, msg);
    vt_rm_rf(dir);
}
END_TEST

/* Tensors that do not fit the model built from config.json. */
START_TEST(test_tensor_errors)
{
    set_data();
    char dir[1024], ck[1200], msg[8192];
    tmpdir(dir, sizeof dir, "hfrun");
    static const char *const key = "model.transformer_module.decoder.layers.0.fc1.weight";

    make_ckpt(ck, sizeof ck, DROP, key);
    snprintf(msg, sizeof msg, "%s/model.safetensors: no tensor \"%s\": the model built from "
             "%s/config.json has that parameter", ck, key, ck);
    expect_error(dir, ck, "", false, msg);
    vt_rm_rf(ck);

    make_ckpt(ck, sizeof ck, EXTRA, "model.transformer_module.decoder.extra.weight");
    snprintf(msg, sizeof msg, "%s/model.safetensors: unexpected tensor "
             "\"model.transformer_module.decoder.extra.weight\": the model built from "
             "%s/config.json has no such parameter", ck, ck);
    expect_error(dir, ck, "", false, msg);
    vt_rm_rf(ck);

    make_ckpt(ck, sizeof ck, RESHAPE, key);
    snprintf(msg, sizeof msg, "%s/model.safetensors: tensor \"%s\" has shape (32, 64), "
             "expected (64, 32)", ck, key);
    expect_error(dir, ck, "", false, msg);
    vt_rm_rf(ck);
    vt_rm_rf(dir);
}
END_TEST

static float *read_param(vp_model *m, const char *name, size_t *n)
{
    vp_gt *t = vp_graph_find(vp_model_graph(m), name);
    ck_assert_msg(t != NULL, "no parameter %s", name);
    *n = (size_t)vp_gt_nelem(t);
    float *x = malloc(*n * sizeof *x);
    vt_ok(vp_graph_read(vp_model_graph(m), t, x, *n * sizeof *x));
    return x;
}

/* The model's head outputs on the shared pixels, concatenated. */
static float *outputs(vp_model *m, size_t *n)
{
    char path[4300];
    snprintf(path, sizeof path, "%s/shared_io.safetensors", data);
    vp_st *io;
    vt_ok(vp_st_open(path, &io));
    const vp_st_tensor *px = vp_st_find(io, "pixel_values");
    ck_assert_ptr_nonnull(px);
    float *x = malloc(px->nelem * sizeof *x);
    vt_ok(vp_st_read_f32(io, "pixel_values", x, px->nelem));
    vt_ok(vp_graph_write(vp_model_graph(m), vp_model_image(m), x, px->nelem * sizeof *x));
    free(x);
    vp_st_close(io);
    vt_ok(vp_graph_run(vp_model_graph(m)));
    static const char *const names[] = {"class_queries_logits", "masks_queries_logits"};
    float *all = NULL;
    *n = 0;
    for (int i = 0; i < 2; i++) {
        vp_gt *t = vp_model_output(m, names[i]);
        ck_assert_ptr_nonnull(t);
        size_t k = (size_t)vp_gt_nelem(t);
        all = realloc(all, (*n + k) * sizeof *all);
        vt_ok(vp_graph_read(vp_model_graph(m), t, all + *n, k * sizeof *all));
        *n += k;
    }
    return all;
}

/* A sharded checkpoint: the single file's outputs bit for bit, through
 * the library and `vpeft forward`; an index naming a missing shard, and a
 * tensor in two shards. */
START_TEST(test_sharded)
{
    set_data();
    char dir[1024], single[1024], sharded[1024], path[1400];
    tmpdir(dir, sizeof dir, "hfrun");
    make_ckpt(single, sizeof single, ALL, NULL);
    make_ckpt(sharded, sizeof sharded, -1, NULL);
    static const char *const shard[2] = {"model-00001-of-00002.safetensors",
                                         "model-00002-of-00002.safetensors"};
    for (int s = 0; s < 2; s++) {
        snprintf(path, sizeof path, "%s/%s", sharded, shard[s]);
        write_weights(path, s ? SHARD1 : SHARD0, NULL);
    }
    /* the index: every tensor of the shared file to its shard */
    snprintf(path, sizeof path, "%s/shared_weights.safetensors", data);
    vp_st *f;
    vt_ok(vp_st_open(path, &f));
    size_t cap = 1 << 16, len = 0;
    char *ix = malloc(cap);
    len += (size_t)snprintf(ix, cap, "{\"metadata\": {\"total_size\": 0}, \"weight_map\": {");
    for (size_t i = 0; i < vp_st_count(f); i++) {
        if (len + 512 > cap)
            ix = realloc(ix, cap *= 2);
        len += (size_t)snprintf(ix + len, cap - len, "%s\"%s\": \"%s\"", i ? ", " : "",
                                vp_st_get(f, i)->name, shard[i % 2]);
    }
    snprintf(ix + len, cap - len, "}}");
    const char *second_key = vp_st_get(f, 1)->name; /* the first in shard 2 */
    char second[512];
    snprintf(second, sizeof second, "%s", second_key);
    vp_st_close(f);
    snprintf(path, sizeof path, "%s/model.safetensors.index.json", sharded);
    write_text(path, ix);
    free(ix);

    vp_config *c1, *c2;
    vp_model *m1, *m2;
    run_config(dir, single, "", &c1);
    vt_ok(create(c1, false, &m1));
    run_config(dir, sharded, "", &c2);
    vt_ok(create(c2, false, &m2));
    size_t n1, n2;
    float *o1 = outputs(m1, &n1), *o2 = outputs(m2, &n2);
    ck_assert_uint_eq(n1, n2);
    ck_assert_msg(!memcmp(o1, o2, n1 * sizeof *o1), "the sharded checkpoint's outputs differ");
    free(o1);
    free(o2);
    vp_model_destroy(m1);
    vp_model_destroy(m2);
    vp_cfg_free(c1);
    vp_cfg_free(c2);

    /* the command: the same output file, byte for byte */
    run_config(dir, single, "", &c1);
    vp_cfg_free(c1);
    ck_assert_msg(vt_sh("%s forward --config %s/run.json --input %s/shared_io.safetensors "
                        "--out %s/single.safetensors", bin(), dir, data, dir) == 0, "%s", vt_err);
    run_config(dir, sharded, "", &c2);
    vp_cfg_free(c2);
    ck_assert_msg(vt_sh("%s forward --config %s/run.json --input %s/shared_io.safetensors "
                        "--out %s/sharded.safetensors", bin(), dir, data, dir) == 0, "%s", vt_err);
    ck_assert_int_eq(vt_sh("cmp %s/single.safetensors %s/sharded.safetensors", dir, dir), 0);

    /* a tensor in both shards */
    snprintf(path, sizeof path, "%s/%s", sharded, shard[1]);
    write_weights(path, SHARD1_DUP, NULL);
    char msg[8192], first[512];
    vt_ok(vp_st_open(path, &f));
    snprintf(first, sizeof first, "%s", vp_st_get(f, 0)->name);
    vp_st_close(f);
    snprintf(msg, sizeof msg, "%s/%s: tensor \"%s\" is in %s/%s as well: each tensor belongs "
             "to one shard", sharded, shard[1], first, sharded, shard[0]);
    expect_error(dir, sharded, "", false, msg);

    /* the index names a shard the directory lacks */
    unlink(path);
    snprintf(msg, sizeof msg, "%s/model.safetensors.index.json: weight_map[\"%s\"]: %s: no "
             "such shard in %s", sharded, second, shard[1], sharded);
    expect_error(dir, sharded, "", false, msg);
    vt_rm_rf(single);
    vt_rm_rf(sharded);
    vt_rm_rf(dir);
}
END_TEST

/* "classes" other than the checkpoint's: one log line, class_predictor
 * from its initializer, every other parameter the checkpoint's; and
 * model.weights beside hf loads over the checkpoint. */
START_TEST(test_classes_and_weights)
{
    set_data();
    char dir[1024], ck[1024], path[1400];
    tmpdir(dir, sizeof dir, "hfrun");
    make_ckpt(ck, sizeof ck, ALL, NULL);
    snprintf(path, sizeof path, "%s/model.safetensors", ck);
    vp_st *w;
    vt_ok(vp_st_open(path, &w));

    vp_config *c;
    run_config(dir, ck, ", \"classes\": 3", &c);
    ck_assert_int_eq(vt_sh("%s forward --config %s/run.json --input %s/shared_io.safetensors "
                           "--out %s/out.safetensors", bin(), dir, data, dir), 0);
    int lines = 0;
    for (const char *p = vt_err; *p; p++)
        lines += *p == '\n';
    ck_assert_msg(lines == 1 && strstr(vt_err, "class_predictor") &&
                  strstr(vt_err, "the checkpoint has 5 classes, the run 3"),
                  "expected one log line about class_predictor, got:\n%s", vt_err);
    vp_model *m;
    vt_ok(create(c, false, &m));
    const vp_build *b = vp_model_build(m);
    uint32_t same = 0;
    for (uint32_t i = 0; i < vp_build_param_count(b); i++) {
        const char *name = vp_gt_name(vp_build_param_at(b, i)->t);
        size_t n;
        float *got = read_param(m, name, &n);
        const vp_st_tensor *t = vp_st_find(w, name);
        ck_assert_msg(t != NULL, "%s is not in the checkpoint", name);
        float *want = malloc(t->nelem * sizeof *want);
        vt_ok(vp_st_read_f32(w, name, want, t->nelem));
        if (!strncmp(name, "class_predictor.", 16)) {
            /* (3 + 1, 32) fresh, not the checkpoint's (5 + 1, 32) rows */
            ck_assert_uint_eq(n, !strcmp(name, "class_predictor.weight") ? 4 * 32 : 4);
            ck_assert_uint_eq(t->nelem, !strcmp(name, "class_predictor.weight") ? 6 * 32 : 6);
            ck_assert_msg(memcmp(got, want, n * sizeof *got), "%s holds the checkpoint's values",
                          name);
            if (!strcmp(name, "class_predictor.weight")) {
                double mx = 0;
                for (size_t k = 0; k < n; k++)
                    mx = fmax(mx, fabs(got[k]));
                ck_assert_msg(mx > 0, "class_predictor.weight is all zeros");
            }
        } else {
            ck_assert_uint_eq(n, t->nelem);
            ck_assert_msg(!memcmp(got, want, n * sizeof *got), "%s is not the checkpoint's", name);
            same++;
        }
        free(got);
        free(want);
    }
    ck_assert_uint_eq(same, vp_build_param_count(b) - 2);
    vp_model_destroy(m);
    vp_cfg_free(c);

    /* model.weights (relative to run.json) over the checkpoint */
    static const char *const key = "model.transformer_module.queries_features.weight";
    const vp_st_tensor *qf = vp_st_find(w, key);
    ck_assert_ptr_nonnull(qf);
    float *v = malloc(qf->nelem * sizeof *v);
    for (size_t k = 0; k < qf->nelem; k++)
        v[k] = 0.25f * (float)k;
    vp_st_entry e = {key, VP_ST_F32, qf->ndim, qf->shape, v};
    snprintf(path, sizeof path, "%s/tuned.safetensors", dir);
    vt_ok(vp_st_write(path, &e, 1, NULL, 0));
    run_config(dir, ck, ", \"weights\": \"tuned.safetensors\"", &c);
    vt_ok(create(c, false, &m));
    size_t n;
    float *got = read_param(m, key, &n);
    ck_assert_msg(n == qf->nelem && !memcmp(got, v, n * sizeof *v), "model.weights not loaded");
    free(got);
    static const char *const other = "model.transformer_module.queries_embedder.weight";
    got = read_param(m, other, &n);
    float *want = malloc(n * sizeof *want);
    vt_ok(vp_st_read_f32(w, other, want, n));
    ck_assert_msg(!memcmp(got, want, n * sizeof *got), "%s is not the checkpoint's", other);
    free(got);
    free(want);
    free(v);
    vp_model_destroy(m);
    vp_cfg_free(c);
    vp_st_close(w);
    vt_rm_rf(ck);
    vt_rm_rf(dir);
}
END_TEST

/* "pretrained": false: config.json alone builds the model with the
 * plugins' initial values (training from scratch); no weights file is
 * needed or read, classes other than config.json's are no message, and
 * the option is refused without model.hf or when not a boolean. */
START_TEST(test_not_pretrained)
{
    set_data();
    char dir[1024], ck[1024];
    tmpdir(dir, sizeof dir, "hfscratch");
    make_ckpt(ck, sizeof ck, -1, NULL); /* config.json only */
    vp_config *c;
    run_config(dir, ck, ", \"pretrained\": false, \"classes\": 3", &c);
    vp_model *m;
    vt_ok(create(c, false, &m));
    size_t n;
    float *w = read_param(m, "model.pixel_level_module.encoder.embeddings.patch_embeddings."
                             "projection.weight", &n);
    double mx = 0;
    for (size_t k = 0; k < n; k++)
        mx = fmax(mx, fabs(w[k]));
    ck_assert_msg(mx > 0 && mx < 1, "patch projection initialized to max |w| %g", mx);
    free(w);
    vp_model_destroy(m);
    vp_cfg_free(c);
    ck_assert_int_eq(vt_sh("%s forward --config %s/run.json --input %s/shared_io.safetensors "
                           "--out %s/out.safetensors", bin(), dir, data, dir), 0);
    ck_assert_msg(!strstr(vt_err, "the checkpoint has"), "%s", vt_err);
    /* pretrained (the default) needs the weights */
    run_config(dir, ck, ", \"pretrained\": true", &c);
    ck_assert_int_eq(create(c, false, &m), VP_ERR_CONFIG);
    vt_assert_has(vp_error_last(), "no model.safetensors");
    vp_cfg_free(c);
    run_config(dir, ck, ", \"pretrained\": 0", &c);
    ck_assert_int_eq(create(c, false, &m), VP_ERR_CONFIG);
    vt_assert_has(vp_error_last(), "model.pretrained: expected a boolean");
    vp_cfg_free(c);
    char path[1100];
    snprintf(path, sizeof path, "%s/bad.json", dir);
    write_text(path, "{\"model\": {\"backbone\": {\"plugin\": \"vit\"}, \"pretrained\": false}}");
    vt_ok(vp_cfg_load(path, &c));
    ck_assert_int_eq(create(c, true, &m), VP_ERR_CONFIG);
    vt_assert_has(vp_error_last(), "model.pretrained: an option of model.hf");
    vp_cfg_free(c);
    vt_rm_rf(ck);
    vt_rm_rf(dir);
}
END_TEST

/* `vpeft demo --hf`: the methods' table on a make-shapes dataset from the
 * tiny checkpoint (four methods, two steps each): every row with its
 * interval, the adapters-per-site line, results.json, the pictures, each
 * run's config naming the checkpoint; its usage errors exit 2. */
START_TEST(test_demo_hf)
{
    set_data();
    char dir[1024], ck[1024];
    tmpdir(dir, sizeof dir, "demohf");
    make_ckpt(ck, sizeof ck, ALL, NULL);
    ck_assert_int_eq(vt_sh("%s make-shapes --out %s/tr --domain B --n 4 --size 64 --seed 1 && "
                           "%s make-shapes --out %s/va --domain B --n 3 --size 64 --seed 2",
                           bin(), dir, bin(), dir), 0);
    ck_assert_msg(vt_sh("cd %s && %s demo --hf %s --train tr/annotations.json --val "
                        "va/annotations.json --steps 2 --image 64 --methods full,lora,adapter1,adapter2 "
                        "--out out --jobs 2", dir, bin(), ck) == 0, "%s", vt_err);
    vt_assert_has(vt_err, "demo: 2 rows at a time, each on a device of its own");
    vt_assert_has(vt_out, "scored on 3 validation images");
    static const char *const rows[] = {"full fine-tuning ", "lora (q, v) ", "adapters x1 ",
                                       "adapters x2 "};
    for (int i = 0; i < 4; i++) {
        const char *r = strstr(vt_out, rows[i]);
        ck_assert_msg(r && strchr(r, '[') && strchr(r, '[') < strchr(r, '\n'),
                      "no row with an interval for %s in:\n%s", rows[i], vt_out);
    }
    ck_assert_ptr_null(strstr(vt_out, "head only"));
    vt_assert_has(vt_out, "adapters per site -> AP: 1 ");
    vt_assert_has(vt_out, "(the study found 2-3 per site best)");
    char path[1300];
    snprintf(path, sizeof path, "%s/out/results.json", dir);
    vp_config *res;
    vt_ok(vp_cfg_load(path, &res));
    const vp_config *ms = vp_cfg_get(res, "methods");
    ck_assert_int_eq(vp_cfg_len(ms), 4);
    for (int i = 0; i < 4; i++) {
        const vp_config *ci = vp_cfg_get(vp_cfg_at(ms, i), "AP_ci95");
        ck_assert_int_eq(vp_cfg_len(ci), 2);
        double lo, hi, ap;
        vt_ok(vp_cfg_float(vp_cfg_at(ci, 0), NULL, 0, &lo));
        vt_ok(vp_cfg_float(vp_cfg_at(ci, 1), NULL, 0, &hi));
        vt_ok(vp_cfg_float(vp_cfg_at(ms, i), "AP", 0, &ap));
        ck_assert(lo <= hi && lo >= 0 && hi <= 1);
    }
    /* one row at a time (lavapipe with its threads): the same results */
    ck_assert_msg(vt_sh("cd %s && %s demo --hf %s --train tr/annotations.json --val "
                        "va/annotations.json --steps 2 --image 64 --methods full,lora,adapter1,adapter2 "
                        "--out out1 --jobs 1", dir, bin(), ck) == 0, "%s", vt_err);
    ck_assert_ptr_null(strstr(vt_err, "rows at a time"));
    snprintf(path, sizeof path, "%s/out1/results.json", dir);
    vp_config *res1;
    vt_ok(vp_cfg_load(path, &res1));
    const vp_config *ms1 = vp_cfg_get(res1, "methods");
    ck_assert_int_eq(vp_cfg_len(ms1), 4);
    for (int i = 0; i < 4; i++) {
        static const char *const keys[] = {"AP", "AP50", "final_loss"};
        for (int k = 0; k < 3; k++) {
            double a, b;
            vt_ok(vp_cfg_float(vp_cfg_at(ms, i), keys[k], 0, &a));
            vt_ok(vp_cfg_float(vp_cfg_at(ms1, i), keys[k], 0, &b));
            ck_assert_msg(a == b, "method %d %s: %.17g with --jobs 2, %.17g with --jobs 1", i,
                          keys[k], a, b);
        }
    }
    vp_cfg_free(res1);
    vp_cfg_free(res);
    ck_assert_int_eq(vt_sh("cd %s/out && test -s chart.png && test -s curves.png && "
                           "test -s lora/config.json && ls lora/predictions/*.png && "
                           "grep -q '\"hf\"' lora/config.json && test -d lora/adapter", dir), 0);
    /* usage errors */
    ck_assert_int_eq(vt_sh("%s demo --hf %s --train x.json", bin(), ck), 2);
    vt_assert_has(vt_err, "--hf needs --train and --val");
    ck_assert_int_eq(vt_sh("%s demo --steps 3", bin()), 2);
    vt_assert_has(vt_err, "go with --hf");
    ck_assert_int_eq(vt_sh("%s demo --hf %s --train a --val b --quick", bin(), ck), 2);
    vt_assert_has(vt_err, "--quick and --cache are the built-in demo's");
    ck_assert_int_eq(vt_sh("%s demo --hf %s --train a --val b --image 50", bin(), ck), 2);
    vt_assert_has(vt_err, "--image '50': expected a multiple of 32 from 32 to 4096");
    ck_assert_int_eq(vt_sh("%s demo --model maskformer", bin()), 2);
    vt_assert_has(vt_err, "--model 'maskformer': expected mask2former or maskdino");
    ck_assert_int_eq(vt_sh("%s demo --hf %s --train a --val b --model maskdino", bin(), ck), 2);
    vt_assert_has(vt_err, "--model is the built-in demo's, not --hf's or --pretrain's");
    ck_assert_int_eq(vt_sh("%s demo --jobs 0", bin()), 2);
    vt_assert_has(vt_err, "--jobs '0': expected a number from 1 to 8");
    ck_assert_int_eq(vt_sh("%s demo --model maskdino --jobs 2", bin()), 2);
    vt_assert_has(vt_err, "--jobs is the mask2former demo's and --hf's");
    /* the built-in demo's default output directories, per head: made
     * before its datasets, which a file in their place stops */
    ck_assert_int_eq(vt_sh("cd %s && mkdir c && touch c/quick-shapes%d c/quick-maskdino-shapes%d",
                           dir, VP_SHAPES_VERSION, VP_SHAPES_VERSION), 0);
    ck_assert_int_eq(vt_sh("cd %s && %s demo --quick --cache c", dir, bin()), 1);
    ck_assert_int_eq(vt_sh("cd %s && %s demo --quick --model maskdino --cache c", dir, bin()), 1);
    ck_assert_int_eq(vt_sh("cd %s/runs && ls", dir), 0);
    ck_assert_str_eq(vt_out, "demo-maskdino-quick\ndemo-quick\n");
    vt_rm_rf(ck);
    vt_rm_rf(dir);
}
END_TEST

/* dir/provenance.json (as vpeft demo --pretrain writes it), after
 * checking that its weights' SHA-256 and size are dir/model.safetensors'. */
static vp_config *provenance_of(const char *dir)
{
    char path[1300], hex[65];
    snprintf(path, sizeof path, "%s/model.safetensors", dir);
    vt_ok(vp_sha256_file(path, hex));
    struct stat sb;
    ck_assert_int_eq(stat(path, &sb), 0);
    snprintf(path, sizeof path, "%s/provenance.json", dir);
    vp_config *p;
    vt_ok(vp_cfg_load(path, &p));
    const char *sv;
    vt_ok(vp_cfg_string(vp_cfg_get(p, "weights"), "sha256", NULL, &sv));
    ck_assert_str_eq(sv, hex);
    int64_t bytes;
    vt_ok(vp_cfg_int(vp_cfg_get(p, "weights"), "bytes", 0, &bytes));
    ck_assert_int_eq(bytes, (int64_t)sb.st_size);
    return p;
}

/* `vpeft demo --pretrain --steps 2`: the base model's directory is a
 * checkpoint vpeft loads strictly (config.json with domain A's 3 labels,
 * model.safetensors), and provenance.json names the command, the run
 * config (from scratch), the AP with its interval, and the weights' size
 * and SHA-256 as the file has them. */
START_TEST(test_demo_pretrain)
{
    set_data();
    char dir[1024];
    tmpdir(dir, sizeof dir, "pretrain");
    ck_assert_msg(vt_sh("cd %s && %s demo --pretrain --steps 2 --out base --cache cache", dir,
                        bin()) == 0, "%s", vt_err);
    vt_assert_has(vt_out, "vpeft demo --pretrain: mask AP ");
    vt_assert_has(vt_out, "on domain A's 200 validation images after 2 steps");
    char path[1300];
    snprintf(path, sizeof path, "%s/base", dir);
    vp_config *p = provenance_of(path);
    const char *sv;
    vt_ok(vp_cfg_string(p, "command", NULL, &sv));
    ck_assert_str_eq(sv, "vpeft demo --pretrain --steps 2 --out base --cache cache");
    bool pre = true;
    vt_ok(vp_cfg_bool(vp_cfg_get(vp_cfg_get(p, "run_config"), "model"), "pretrained", true, &pre));
    ck_assert(!pre);
    double ap, lo, hi;
    const vp_config *ev = vp_cfg_get(p, "A_val");
    vt_ok(vp_cfg_float(ev, "AP", -1, &ap));
    vt_ok(vp_cfg_float(vp_cfg_at(vp_cfg_get(ev, "AP_ci95"), 0), NULL, -1, &lo));
    vt_ok(vp_cfg_float(vp_cfg_at(vp_cfg_get(ev, "AP_ci95"), 1), NULL, -1, &hi));
    ck_assert(ap >= 0 && lo >= 0 && lo <= hi && hi <= 1);
    vp_cfg_free(p);
    /* the directory as a Hugging Face checkpoint, loaded strictly */
    vp_config *c;
    snprintf(path, sizeof path, "%s/base", dir);
    run_config(dir, path, ", \"image\": 64", &c);
    vp_model *m;
    vt_ok(create(c, false, &m));
    vp_model_destroy(m);
    vp_cfg_free(c);
    ck_assert_int_eq(vt_sh("%s demo --pretrain --quick", bin()), 2);
    vt_assert_has(vt_err, "--pretrain takes --steps, --out and --cache only");
    vt_rm_rf(dir);
}
END_TEST

/* The base model shipped for the built-in demo (core/cli/demo-base/): the
 * weights are the bytes its provenance.json names (size and SHA-256),
 * made by `vpeft demo --pretrain` from a committed, clean tree, with its
 * AP on domain A; the directory loads strictly as a checkpoint. */
START_TEST(test_demo_base)
{
    const char *src = getenv("VPEFT_SRCDIR");
    char base[1024];
    snprintf(base, sizeof base, "%s/core/cli/demo-base", src ? src : "..");
    vp_config *p = provenance_of(base);
    const char *sv;
    vt_ok(vp_cfg_string(p, "command", NULL, &sv));
    ck_assert_msg(!strncmp(sv, "vpeft demo --pretrain", 21), "%s", sv);
    vt_ok(vp_cfg_string(p, "commit", NULL, &sv));
    ck_assert_int_eq((int)strlen(sv), 40); /* a commit, not "unknown" or "-dirty" */
    vt_ok(vp_cfg_string(p, "train_data", NULL, &sv));
    ck_assert_str_eq(sv, "vpeft make-shapes --domain A --n 1000 --size 128 --seed 1");
    double ap;
    vt_ok(vp_cfg_float(vp_cfg_get(p, "A_val"), "AP", -1, &ap));
    ck_assert(ap > 0 && ap <= 1);
    vp_cfg_free(p);
    vp_config *c;
    char dir[1024];
    tmpdir(dir, sizeof dir, "demobase");
    run_config(dir, base, ", \"image\": 128", &c);
    vp_model *m;
    vt_ok(create(c, false, &m));
    vp_model_destroy(m);
    vp_cfg_free(c);
    vt_rm_rf(dir);
}
END_TEST

/* The site lines of `vpeft info --sites` that a method named m attached
 * to: a linear site's line ending in " m". */
static int attached_lines(const char *s, const char *m)
{
    int n = 0;
    size_t ml = strlen(m);
    for (const char *line = s; *line;) {
        const char *end = strchr(line, '\n');
        size_t len = end ? (size_t)(end - line) : strlen(line);
        char buf[1024];
        snprintf(buf, sizeof buf, "%.*s", (int)(len < 1023 ? len : 1023), line);
        len = strlen(buf);
        n += strstr(buf, " linear ") && len > ml && buf[len - ml - 1] == ' ' &&
             !strcmp(buf + len - ml, m);
        line += (end ? (size_t)(end - line) : strlen(line)) + (end != NULL);
    }
    return n;
}

/* `vpeft info` on the mask2former-swin-tiny-coco-instance shape (a
 * config.json alone): HF module paths, HF's parameter count, the sites. */
START_TEST(test_info_swin_tiny)
{
    set_data();
    char dir[1024], path[1400];
    tmpdir(dir, sizeof dir, "hfinfo");
    snprintf(path, sizeof path, "%s/run.json", dir);
    char json[2200];
    snprintf(json, sizeof json, "{\"model\": {\"hf\": \"%s/../hf-m2f-swin-tiny\", \"image\": 384, "
             "\"classes\": 3}, \"peft\": [{\"plugin\": \"lora\", \"target_modules\": [\"q_proj\"]}]}",
             data);
    write_text(path, json);
    ck_assert_msg(vt_sh("%s info %s --sites --depth 4", bin(), path) == 0, "%s", vt_err);
    /* 47,421,643 less class_predictor's 81 x 256 + 81, plus 4 x 256 + 4,
     * plus LoRA's 9 layers x 8 x (256 + 256) */
    has(vt_out, "trainable params: 36,864 || all params: 47,438,718 || trainable%: ");
    has(vt_out, "\n      encoder ");
    has(vt_out, "\n      hidden_states_norms ");
    has(vt_out, "\nmodel.pixel_level_module.encoder.encoder.layers.2.blocks.5.attention.self.key ");
    has(vt_out, "linear 384->384");
    has(vt_out, "\nmodel.pixel_level_module.decoder.encoder.layers.5.self_attn ");
    has(vt_out, "deformable module");
    ck_assert_int_eq(attached_lines(vt_out, "lora"), 9);
    vt_rm_rf(dir);
}
END_TEST

/* `vpeft init` then `vpeft train` of its config from another directory,
 * `vpeft info` on it, `vpeft eval` at a side the mask resolution does not
 * divide, and init's errors. */
START_TEST(test_init_and_train)
{
    set_data();
    char dir[1024];
    tmpdir(dir, sizeof dir, "hfinit");
    /* data/train, data/val (images next to the annotations), ckpt/ */
    ck_assert_int_eq(vt_sh("%s make-shapes --out %s/data/train --domain B --n 4 --size 64",
                           bin(), dir), 0);
    ck_assert_int_eq(vt_sh("%s make-shapes --out %s/data/val --domain B --n 2 --size 64 "
                           "--seed 1", bin(), dir), 0);
    ck_assert_int_eq(vt_sh("%s make-shapes --out %s/data/other --domain A --n 2 --size 64",
                           bin(), dir), 0);
    ck_assert_int_eq(vt_sh("mkdir %s/ckpt && ln -s %s/shared_config.json %s/ckpt/config.json "
                           "&& ln -s %s/shared_weights.safetensors %s/ckpt/model.safetensors",
                           dir, data, dir, data, dir), 0);

    ck_assert_int_eq(vt_sh("%s init --help", bin()), 0);
    has(vt_out, "usage: vpeft init --hf DIR --train ANN.json --val ANN.json --out");
    /* from dir, with relative paths: the config lands in cfg/ */
    ck_assert_msg(vt_sh("cd %s && %s init --hf ckpt --train data/train/annotations.json --val "
                        "data/val/annotations.json --out cfg/run.json", dir, bin()) == 0,
                  "%s", vt_err);
    has(vt_out, "init: wrote cfg/run.json: ckpt, 384 pixels, 5 classes;");
    char path[1400];
    snprintf(path, sizeof path, "%s/cfg/run.json", dir);
    vp_config *c;
    vt_ok(vp_cfg_load(path, &c));
    const char *s;
    int64_t v;
    const vp_config *model = vp_cfg_get(c, "model"), *train = vp_cfg_get(c, "train");
    vt_ok(vp_cfg_string(model, "hf", NULL, &s));
    eq(s, "../ckpt");
    vt_ok(vp_cfg_int(model, "image", 0, &v));
    ck_assert_int_eq(v, 384);
    vt_ok(vp_cfg_int(model, "classes", 0, &v));
    ck_assert_int_eq(v, 5);
    vt_ok(vp_cfg_string(vp_cfg_get(train, "data"), "annotations", NULL, &s));
    eq(s, "../data/train/annotations.json");
    vt_ok(vp_cfg_string(vp_cfg_get(train, "val"), "annotations", NULL, &s));
    eq(s, "../data/val/annotations.json");
    ck_assert_int_eq(vp_cfg_type_of(vp_cfg_get(train, "data"), "images"), VP_CFG_ABSENT);
    vt_ok(vp_cfg_string(train, "out", NULL, &s));
    eq(s, "runs/run");
    const vp_config *lora = vp_cfg_at(vp_cfg_get(c, "peft"), 0);
    vt_ok(vp_cfg_string(lora, "plugin", NULL, &s));
    eq(s, "lora");
    ck_assert_int_eq(vp_cfg_len(vp_cfg_get(lora, "target_modules")), 4);
    vp_cfg_free(c);

    /* info: HF module paths, the sites LoRA took (Swin's 8 blocks x query,
     * value; the 2 decoder layers x q_proj, v_proj), the trainable count:
     * LoRA 25,088 + class_predictor 198 + mask_predictor 3,168 */
    ck_assert_msg(vt_sh("cd / && %s info %s --sites --depth 4", bin(), path) == 0, "%s", vt_err);
    has(vt_out, "model: swin (backbone) + mask2former (head); peft: lora\n");
    has(vt_out, "\n  pixel_level_module ");
    has(vt_out, "\n  transformer_module ");
    has(vt_out, "\nclass_predictor ");
    has(vt_out, "\nmodel.pixel_level_module.encoder.encoder.layers.3.blocks.1.attention."
                          "self.query ");
    has(vt_out, "\nmodel.transformer_module.decoder.layers.1.self_attn.v_proj ");
    has(vt_out, "\nmodel.pixel_level_module.decoder.encoder.layers.0.self_attn ");
    ck_assert_int_eq(attached_lines(vt_out, "lora"), 20);
    has(vt_out, "trainable params: 28,454 || all params: 1,385,222 || trainable%: ");

    /* train from another directory, a few steps at 64 pixels */
    ck_assert_msg(vt_sh("cd / && %s train %s --set model.image=64 --set train.steps=2 --set "
                        "train.warmup=0 --set train.batch=1 --quiet", bin(), path) == 0,
                  "%s%s", vt_out, vt_err);
    has(vt_out, "trained 2 steps in ");
    static const char *const files[] = {"model.safetensors", "adapter/adapter_config.json",
                                        "adapter/adapter_model.safetensors", "results.json",
                                        "metrics.json", "log.jsonl"};
    for (size_t i = 0; i < sizeof files / sizeof files[0]; i++) {
        char f[1400];
        snprintf(f, sizeof f, "%s/cfg/runs/run/%s", dir, files[i]);
        ck_assert_msg(access(f, R_OK) == 0, "no %s", f);
    }
    /* the adapter's keys are HF PEFT's for this model's module paths */
    snprintf(path, sizeof path, "%s/cfg/runs/run/adapter/adapter_model.safetensors", dir);
    vp_st *a;
    vt_ok(vp_st_open(path, &a));
    /* lora_A and lora_B of 20 modules, and the trained predictors as
     * modules_to_save: class_predictor and the mask MLP's 3 layers */
    ck_assert_uint_eq(vp_st_count(a), 20 * 2 + 4 * 2);
    ck_assert_ptr_nonnull(vp_st_find(a, "base_model.model.model.transformer_module.decoder."
                                        "layers.0.self_attn.q_proj.lora_A.weight"));
    ck_assert_ptr_nonnull(vp_st_find(a, "base_model.model.class_predictor.weight"));
    vp_st_close(a);

    /* evaluation at 66 pixels: Swin pads the input to its windows and the
     * head's masks are 17 x 17 (stride 4), which does not divide 66: the
     * loader's geometry must not hang on them nor on the finest map */
    ck_assert_msg(vt_sh("cd %s/cfg && %s eval --config run.json --weights "
                        "runs/run/model.safetensors --adapter runs/run/adapter --set "
                        "model.image=66 --out e66.json", dir, bin()) == 0, "%s", vt_err);
    has(vt_out, "Average Precision  (AP) @[ IoU=0.50:0.95 | area=   all");

    /* init's errors */
    ck_assert_int_eq(vt_sh("cd %s && %s init --hf ckpt --train data/train/annotations.json "
                           "--val data/val/annotations.json --out cfg/run.json", dir, bin()), 2);
    eq(vt_err, "vpeft init: cfg/run.json exists (--force replaces it)\n");
    ck_assert_int_eq(vt_sh("cd %s && %s init --hf ckpt --train data/train/annotations.json "
                           "--val data/val/annotations.json --out cfg/run.json --force --image "
                           "64", dir, bin()), 0);
    ck_assert_int_eq(vt_sh("grep -c '\"image\": 64' %s/cfg/run.json", dir), 0);
    /* the image directories given (absolute here): written relative */
    ck_assert_msg(vt_sh("cd %s && %s init --hf %s/ckpt --train data/train/annotations.json --val "
                        "data/val/annotations.json --out img.json --train-images %s/data/train "
                        "--val-images data/val", dir, bin(), dir, dir) == 0, "%s", vt_err);
    snprintf(path, sizeof path, "%s/img.json", dir);
    vt_ok(vp_cfg_load(path, &c));
    train = vp_cfg_get(c, "train");
    vt_ok(vp_cfg_string(vp_cfg_get(c, "model"), "hf", NULL, &s));
    eq(s, "ckpt");
    vt_ok(vp_cfg_string(vp_cfg_get(train, "data"), "images", NULL, &s));
    eq(s, "data/train");
    vt_ok(vp_cfg_string(vp_cfg_get(train, "val"), "images", NULL, &s));
    eq(s, "data/val");
    vt_ok(vp_cfg_string(train, "out", NULL, &s));
    eq(s, "runs/img");
    vp_cfg_free(c);
    ck_assert_int_eq(vt_sh("cd %s && %s init --hf ckpt --train data/train/annotations.json "
                           "--val data/val/annotations.json --out y.json --train-images data",
                           dir, bin()), 1);
    has(vt_err, "data/images/000001.png");
    ck_assert_int_eq(vt_sh("cd %s && %s init --hf ckpt --train data/train/annotations.json "
                           "--out x.json", dir, bin()), 2);
    eq(vt_err, "vpeft init: --val is required (the validation annotations) (see "
                             "vpeft init --help)\n");
    ck_assert_int_eq(vt_sh("cd %s && %s init --hf ckpt --train data/train/annotations.json "
                           "--val data/val/annotations.json --out x.json --image 100", dir,
                           bin()), 2);
    eq(vt_err, "vpeft init: --image must be a multiple of 32 from 32 to 4096, not "
                             "'100' (see vpeft init --help)\n");
    ck_assert_int_eq(vt_sh("cd %s && %s init --hf data --train data/train/annotations.json "
                           "--val data/val/annotations.json --out x.json", dir, bin()), 2);
    eq(vt_err, "vpeft init: --hf data: no config.json: not a Hugging Face "
                             "checkpoint directory (config.json and model.safetensors)\n");
    ck_assert_int_eq(vt_sh("cd %s && %s init --hf ckpt --train data/train/annotations.json "
                           "--val data/other/annotations.json --out x.json", dir, bin()), 1);
    eq(vt_err, "vpeft: data/other/annotations.json: its categories are not "
                             "data/train/annotations.json's (3 against 5; the first difference "
                             "at position 0): both splits must list the same categories\n");
    ck_assert_int_eq(vt_sh("cd %s && %s init --hf ckpt --train nothere.json --val "
                           "data/val/annotations.json --out x.json", dir, bin()), 2);
    eq(vt_err, "vpeft init: --train nothere.json: No such file or directory\n");
    snprintf(path, sizeof path, "%s/x.json", dir);
    ck_assert_int_ne(access(path, F_OK), 0);
    vt_rm_rf(dir);
}
END_TEST

/* ---- detectron2 checkpoints: "model": {"detectron2": DIR} ------------------------- */

static char d2data[1024];

static void set_d2data(void)
{
    const char *src = getenv("VPEFT_SRCDIR");
    snprintf(d2data, sizeof d2data, "%s/tests/data/maskdino", src ? src : "..");
}

/* DIR/config.json: the Mask DINO checkpoint's, with `from` replaced by
 * `to` (NULL: as it is). */
static void write_d2_config(const char *dir, const char *from, const char *to)
{
    char path[4300], *text;
    size_t n;
    snprintf(path, sizeof path, "%s/config.json", d2data);
    vt_ok(vp_file_read(path, &text, &n));
    char *at = from ? strstr(text, from) : NULL;
    ck_assert_msg(!from || at, "no '%s' in the Mask DINO config", from);
    char *out = malloc(n + (to ? strlen(to) : 0) + 1);
    ck_assert_ptr_nonnull(out);
    if (at)
        sprintf(out, "%.*s%s%s", (int)(at - text), text, to, at + strlen(from));
    else
        memcpy(out, text, n + 1);
    snprintf(path, sizeof path, "%s/config.json", dir);
    write_text(path, out);
    free(out);
    free(text);
}

/* DIR/model.safetensors: the Mask DINO weights' tensors under prefix
 * ("" for all), as write_weights picks them (ALL, DROP, EXTRA, RESHAPE). */
static void write_d2_weights(const char *dir, const char *prefix, pick how, const char *key)
{
    char src[4300], path[4300];
    snprintf(src, sizeof src, "%s/weights.safetensors", d2data);
    snprintf(path, sizeof path, "%s/model.safetensors", dir);
    vp_st *f;
    vt_ok(vp_st_open(src, &f));
    size_t n = vp_st_count(f), k = 0;
    vp_st_entry *e = calloc(n + 1, sizeof *e);
    int64_t (*shapes)[VP_ST_MAX_DIMS] = calloc(n + 1, sizeof *shapes);
    ck_assert(e && shapes);
    bool found = key == NULL || how == EXTRA;
    for (size_t i = 0; i < n; i++) {
        const vp_st_tensor *t = vp_st_get(f, i);
        bool is_key = key && !strcmp(t->name, key);
        found |= is_key;
        if (strncmp(t->name, prefix, strlen(prefix)) || (how == DROP && is_key))
            continue;
        memcpy(shapes[k], t->shape, sizeof shapes[k]);
        if (how == RESHAPE && is_key) {
            shapes[k][0] = t->shape[1];
            shapes[k][1] = t->shape[0];
        }
        e[k] = (vp_st_entry){t->name, t->dtype, t->ndim, shapes[k], t->data};
        k++;
    }
    ck_assert_msg(found, "no %s in the Mask DINO weights", key);
    static const float extra[4] = {1, 2, 3, 4};
    static const int64_t extra_shape[1] = {4};
    if (how == EXTRA)
        e[k++] = (vp_st_entry){key, VP_ST_F32, 1, extra_shape, extra};
    vt_ok(vp_st_write(path, e, k, NULL, 0));
    free(shapes);
    free(e);
    vp_st_close(f);
}

/* dir/run.json: {"model": {"detectron2": ckpt<extra>}}, parsed. */
static void d2_run_config(const char *dir, const char *ckpt, const char *extra, vp_config **c)
{
    char path[4300], json[9000];
    snprintf(json, sizeof json, "{\"model\": {\"detectron2\": \"%s\"%s}}", ckpt, extra);
    snprintf(path, sizeof path, "%s/run.json", dir);
    write_text(path, json);
    vt_ok(vp_cfg_load(path, c));
}

/* A backbone-only model of the run config (the head plugin is not needed
 * to check the expansion and the backbone's weights). */
static vp_status d2_create(const vp_config *c, vp_model **m)
{
    return vp_model_create(vt_device(0), c, &(vp_model_opts){.batch = 2, .backbone_only = true},
                           m);
}

static void d2_expect_error(const char *dir, const char *ckpt, const char *extra,
                            const char *msg)
{
    vp_config *c;
    d2_run_config(dir, ckpt, extra, &c);
    vp_model *m = (vp_model *)&m;
    vp_status st = d2_create(c, &m);
    ck_assert_msg(st == VP_ERR_CONFIG, "status %d (%s), expected a config error", (int)st,
                  vp_error_last());
    eq(vp_error_last(), msg);
    ck_assert_ptr_null(m);
    vp_cfg_free(c);
}

static const char *cfg_str(const vp_config *c, const char *key)
{
    const char *v = NULL;
    vt_ok(vp_cfg_string(c, key, NULL, &v));
    ck_assert_msg(v != NULL, "no %s", key);
    return v;
}

static int64_t cfg_i(const vp_config *c, const char *key)
{
    int64_t v = -1;
    ck_assert_msg(vp_cfg_type_of(c, key) == VP_CFG_NUMBER, "no %s", key);
    vt_ok(vp_cfg_int(c, key, 0, &v));
    return v;
}

/* The expansion: the entries cfg.MODEL calls for, with the run's options
 * where model.hf puts them; MaskFormer's head; the errors of a directory
 * or config that is not a checkpoint vpeft builds, through the library and
 * `vpeft info`. */
START_TEST(test_d2_expand)
{
    set_d2data();
    char dir[1024], ck[1200], msg[8192], path[1400];
    tmpdir(dir, sizeof dir, "d2run");
    snprintf(ck, sizeof ck, "%s/ck", dir);
    ck_assert_int_eq(mkdir(ck, 0755), 0);
    write_d2_config(ck, NULL, NULL);

    vp_config *c;
    d2_run_config(dir, "ck", ", \"image\": [64, 96], \"classes\": 3, \"max_targets\": 7, "
                  "\"top_k\": 5, \"target_stride\": 4, \"train_num_points\": \"all\", "
                  "\"score_threshold\": 0.25, \"pretrained\": false", &c);
    vt_ok(vp_model_check_keys(c));
    vt_ok(vp_model_hf_expand(c)); /* no model.hf: nothing */
    vt_ok(vp_model_d2_expand(c));
    const vp_config *bb = vp_cfg_get(vp_cfg_get(c, "model"), "backbone");
    const vp_config *hd = vp_cfg_get(vp_cfg_get(c, "model"), "head");
    ck_assert_int_eq(vp_cfg_len(bb), 3);
    eq(cfg_str(bb, "plugin"), "swin");
    eq(cfg_str(bb, "detectron2"), "ck"); /* as written: relative to run.json, as before */
    const char *resolved = NULL;
    vt_ok(vp_cfg_file(bb, "detectron2", &resolved));
    eq(resolved, ck);
    const vp_config *img = vp_cfg_get(bb, "image");
    ck_assert_int_eq(vp_cfg_len(img), 2);
    ck_assert_int_eq(cfg_i(vp_cfg_at(img, 0), NULL), 64);
    ck_assert_int_eq(cfg_i(vp_cfg_at(img, 1), NULL), 96);
    ck_assert_int_eq(vp_cfg_len(hd), 9);
    eq(cfg_str(hd, "plugin"), "maskdino");
    eq(cfg_str(hd, "detectron2"), "ck");
    ck_assert_int_eq(cfg_i(hd, "classes"), 3);
    ck_assert_int_eq(cfg_i(hd, "max_targets"), 7);
    ck_assert_int_eq(cfg_i(hd, "top_k"), 5);
    ck_assert_int_eq(cfg_i(hd, "target_stride"), 4);
    eq(cfg_str(hd, "train_num_points"), "all");
    double thr = 0;
    vt_ok(vp_cfg_float(hd, "score_threshold", 0, &thr));
    ck_assert(thr == 0.25);
    bool pre = true;
    vt_ok(vp_cfg_bool(hd, "pretrained", true, &pre));
    ck_assert(!pre);
    vp_cfg_free(c);

    /* Mask2Former's meta-architecture; no options: the entries alone */
    write_d2_config(ck, "\"META_ARCHITECTURE\": \"MaskDINO\"",
                    "\"META_ARCHITECTURE\": \"MaskFormer\"");
    d2_run_config(dir, ck, "", &c);
    vt_ok(vp_model_d2_expand(c));
    bb = vp_cfg_get(vp_cfg_get(c, "model"), "backbone");
    hd = vp_cfg_get(vp_cfg_get(c, "model"), "head");
    ck_assert_int_eq(vp_cfg_len(bb), 2);
    ck_assert_int_eq(vp_cfg_len(hd), 2);
    eq(cfg_str(hd, "plugin"), "mask2former");
    eq(cfg_str(hd, "detectron2"), ck);
    vp_cfg_free(c);

    /* cfg.MODEL under "MODEL" */
    write_d2_config(ck, "\"cfg_MODEL\"", "\"MODEL\"");
    d2_run_config(dir, ck, "", &c);
    vt_ok(vp_model_d2_expand(c));
    eq(cfg_str(vp_cfg_get(vp_cfg_get(c, "model"), "head"), "plugin"), "maskdino");
    vp_cfg_free(c);

    /* not a checkpoint directory */
    snprintf(path, sizeof path, "%s/nowhere", dir);
    snprintf(msg, sizeof msg, "%s/run.json: model.detectron2: %s: No such file or directory "
             "(expected a detectron2 checkpoint directory: config.json and model.safetensors)",
             dir, path);
    d2_expect_error(dir, path, "", msg);
    snprintf(path, sizeof path, "%s/run.json", dir);
    snprintf(msg, sizeof msg, "%s/run.json: model.detectron2: %s is not a directory (expected a "
             "detectron2 checkpoint directory: config.json and model.safetensors)", dir, path);
    d2_expect_error(dir, path, "", msg);
    snprintf(path, sizeof path, "%s/config.json", ck);
    unlink(path);
    snprintf(msg, sizeof msg, "%s/run.json: model.detectron2: %s has no config.json: not a "
             "detectron2 checkpoint directory (config.json and model.safetensors)", dir, ck);
    d2_expect_error(dir, ck, "", msg);
    ck_assert_int_eq(mkfifo(path, 0644), 0);
    snprintf(msg, sizeof msg, "%s/run.json: model.detectron2: %s: not a regular file", dir,
             path);
    d2_expect_error(dir, ck, "", msg);
    unlink(path);

    /* not a config vpeft builds */
    static const struct {
        const char *from, *to, *key, *msg;
    } cases[] = {
        {"\"cfg_MODEL\"", "\"cfg_MODELS\"", "MODEL", "missing: a detectron2 config.json holds "
         "the resolved cfg.MODEL as \"MODEL\" (or \"cfg_MODEL\")"},
        {"\"case\": {", "\"MODEL\": {}, \"case\": {", "cfg_MODEL", "not with \"MODEL\": the "
         "file must hold detectron2's cfg.MODEL once"},
        {"\"META_ARCHITECTURE\": \"MaskDINO\"", "\"META_ARCHITECTURE\": \"GeneralizedRCNN\"",
         "cfg_MODEL.META_ARCHITECTURE", "\"GeneralizedRCNN\" is not supported: vpeft builds "
         "\"MaskDINO\" (Mask DINO) and \"MaskFormer\" (Mask2Former) models"},
        {"\"META_ARCHITECTURE\": \"MaskDINO\"", "\"META_ARCHITECTURES\": \"MaskDINO\"",
         "cfg_MODEL.META_ARCHITECTURE", "missing: vpeft builds \"MaskDINO\" (Mask DINO) and "
         "\"MaskFormer\" (Mask2Former) models"},
        {"\"NAME\": \"D2SwinTransformer\"", "\"NAME\": \"build_resnet_backbone\"",
         "cfg_MODEL.BACKBONE.NAME", "\"build_resnet_backbone\" is not supported: vpeft builds "
         "the \"D2SwinTransformer\" backbone"},
        {"\"BACKBONE\": {", "\"BACKBONES\": {", "cfg_MODEL.BACKBONE",
         "missing: vpeft builds the \"D2SwinTransformer\" backbone"},
    };
    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
        write_d2_config(ck, cases[i].from, cases[i].to);
        snprintf(msg, sizeof msg, "%s/config.json: %s: %s", ck, cases[i].key, cases[i].msg);
        d2_expect_error(dir, ck, "", msg);
    }
    write_d2_config(ck, NULL, NULL);

    /* the run config */
    snprintf(msg, sizeof msg, "%s/run.json: model.detectron2: not with model.hf: give one "
             "checkpoint directory (\"hf\": Hugging Face's, \"detectron2\": detectron2's)", dir);
    d2_expect_error(dir, ck, ", \"hf\": \"ck\"", msg);
    snprintf(msg, sizeof msg, "%s/run.json: model.imagee: unknown field, did you mean 'image'?",
             dir);
    d2_expect_error(dir, ck, ", \"imagee\": 64", msg);
    snprintf(msg, sizeof msg, "%s/run.json: model.backbone: unknown field (expected one of: "
             "detectron2, image, classes, max_targets, top_k, target_stride, train_num_points, "
             "score_threshold, weights, pretrained)", dir);
    d2_expect_error(dir, ck, ", \"backbone\": {}", msg);
    /* a detectron2 directory given as "hf" */
    char hfrun[4300];
    snprintf(hfrun, sizeof hfrun, "%s/run.json", dir);
    snprintf(msg, sizeof msg, "{\"model\": {\"hf\": \"%s\"}}", ck);
    write_text(hfrun, msg);
    vt_ok(vp_cfg_load(hfrun, &c));
    vp_model *m = NULL;
    ck_assert_int_eq(d2_create(c, &m), VP_ERR_CONFIG);
    snprintf(msg, sizeof msg, "%s/config.json: model_type: missing: vpeft loads \"mask2former\" "
             "(Mask2FormerForUniversalSegmentation) checkpoints (this is a detectron2 config: "
             "name its directory with \"detectron2\" instead of \"hf\")", ck);
    eq(vp_error_last(), msg);
    vp_cfg_free(c);

    /* through the command: exit status 2, the message alone */
    write_d2_config(ck, "\"META_ARCHITECTURE\": \"MaskDINO\"",
                    "\"META_ARCHITECTURE\": \"GeneralizedRCNN\"");
    d2_run_config(dir, "ck", "", &c);
    vp_cfg_free(c);
    ck_assert_int_eq(vt_sh("%s info %s/run.json", bin(), dir), 2);
    snprintf(msg, sizeof msg, "vpeft: %s/config.json: cfg_MODEL.META_ARCHITECTURE: "
             "\"GeneralizedRCNN\" is not supported: vpeft builds \"MaskDINO\" (Mask DINO) and "
             "\"MaskFormer\" (Mask2Former) models\n", ck);
    eq(vt_err, msg);
    vt_rm_rf(dir);
}
END_TEST

/* The weights: DIR/model.safetensors loaded strictly (a backbone-only
 * model, so the file holds the checkpoint's backbone.* tensors): the
 * file's values, the backbone's outputs the repository's; a tensor
 * missing, extra or of another shape, the head's tensors beside a model
 * without a head, no weights file; "pretrained": false without one. */
START_TEST(test_d2_weights)
{
    set_d2data();
    char dir[1024], ck[1200], msg[8192];
    tmpdir(dir, sizeof dir, "d2run");
    snprintf(ck, sizeof ck, "%s/ck", dir);
    ck_assert_int_eq(mkdir(ck, 0755), 0);
    write_d2_config(ck, NULL, NULL);
    write_d2_weights(ck, "backbone.", ALL, NULL);
    vp_config *c;
    d2_run_config(dir, "ck", ", \"image\": 64", &c);
    vp_model *m;
    vt_ok(d2_create(c, &m));
    vp_cfg_free(c);
    vp_graph *g = vp_model_graph(m);
    char src[4300];
    snprintf(src, sizeof src, "%s/weights.safetensors", d2data);
    vp_st *f;
    vt_ok(vp_st_open(src, &f));
    static const char *const key = "backbone.layers.1.blocks.1.attn.qkv.weight";
    float want[144 * 48], got[144 * 48];
    vt_ok(vp_st_read_f32(f, key, want, 144 * 48));
    vp_st_close(f);
    vp_gt *t = vp_graph_find(g, key);
    ck_assert(t && vp_gt_nelem(t) == 144 * 48);
    vt_ok(vp_graph_read(g, t, got, sizeof got));
    ck_assert(!memcmp(got, want, sizeof got));
    /* res5 on the reference images */
    snprintf(src, sizeof src, "%s/io.safetensors", d2data);
    vt_ok(vp_st_open(src, &f));
    float *x = malloc(2 * 3 * 64 * 64 * sizeof *x), *r5 = malloc(2 * 192 * 4 * sizeof *r5),
          *o5 = malloc(2 * 192 * 4 * sizeof *o5);
    ck_assert(x && r5 && o5);
    vt_ok(vp_st_read_f32(f, "images", x, 2 * 3 * 64 * 64));
    vt_ok(vp_st_read_f32(f, "backbone.res5", r5, 2 * 192 * 4));
    vp_st_close(f);
    vt_ok(vp_graph_write(g, vp_model_image(m), x, 2 * 3 * 64 * 64 * sizeof *x));
    vt_ok(vp_graph_run(g));
    vt_ok(vp_graph_read(g, vp_model_output(m, "backbone.res5"), o5, 2 * 192 * 4 * sizeof *o5));
    double e = 0, w = 0;
    for (int i = 0; i < 2 * 192 * 4; i++) {
        e = fmax(e, fabs((double)o5[i] - r5[i]));
        w = fmax(w, fabs(r5[i]));
    }
    ck_assert_msg(e <= 1e-4 * w, "backbone.res5: %g of %g", e, w);
    free(x);
    free(r5);
    free(o5);
    vp_model_destroy(m);

    write_d2_weights(ck, "backbone.", DROP, "backbone.layers.1.blocks.0.attn.qkv.bias");
    snprintf(msg, sizeof msg, "%s/model.safetensors: no tensor \"backbone.layers.1.blocks.0.attn."
             "qkv.bias\": the model built from %s/config.json has that parameter", ck, ck);
    d2_expect_error(dir, "ck", ", \"image\": 64", msg);
    write_d2_weights(ck, "backbone.", EXTRA, "backbone.layers.0.blocks.0.attn.extra");
    snprintf(msg, sizeof msg, "%s/model.safetensors: unexpected tensor \"backbone.layers.0.blocks."
             "0.attn.extra\": the model built from %s/config.json has no such parameter", ck, ck);
    d2_expect_error(dir, "ck", ", \"image\": 64", msg);
    write_d2_weights(ck, "backbone.", RESHAPE, key);
    snprintf(msg, sizeof msg, "%s/model.safetensors: tensor \"%s\" has shape (48, 144), "
             "expected (144, 48)", ck, key);
    d2_expect_error(dir, "ck", ", \"image\": 64", msg);
    /* the whole checkpoint: the head's tensors are no parameters here */
    write_d2_weights(ck, "", ALL, NULL);
    snprintf(msg, sizeof msg, "%s/model.safetensors: unexpected tensor \"criterion.empty_weight\": "
             "the model built from %s/config.json has no such parameter", ck, ck);
    d2_expect_error(dir, "ck", ", \"image\": 64", msg);
    char path[1400];
    snprintf(path, sizeof path, "%s/model.safetensors", ck);
    unlink(path);
    snprintf(msg, sizeof msg, "%s: no model.safetensors (nor a sharded model.safetensors.index."
             "json): not a detectron2 checkpoint directory", ck);
    d2_expect_error(dir, "ck", ", \"image\": 64", msg);
    d2_run_config(dir, "ck", ", \"image\": 64, \"pretrained\": false", &c);
    vt_ok(d2_create(c, &m));
    vp_model_destroy(m);
    vp_cfg_free(c);
    vt_rm_rf(dir);
}
END_TEST

int main(void)
{
    Suite *s = suite_create("hf_load");
    TCase *tc = vt_tcase("hf_load");
    tcase_set_timeout(tc, 600);
    tcase_add_test(tc, test_not_a_checkpoint);
    tcase_add_test(tc, test_tensor_errors);
    tcase_add_test(tc, test_sharded);
    tcase_add_test(tc, test_classes_and_weights);
    tcase_add_test(tc, test_not_pretrained);
    tcase_add_test(tc, test_demo_hf);
    tcase_add_test(tc, test_demo_pretrain);
    tcase_add_test(tc, test_demo_base);
    tcase_add_test(tc, test_info_swin_tiny);
    tcase_add_test(tc, test_init_and_train);
    suite_add_tcase(s, tc);
    /* its own case: CK_RUN_CASE=detectron2 runs it alone */
    TCase *d2 = vt_tcase("detectron2");
    tcase_add_test(d2, test_d2_expand);
    tcase_add_test(d2, test_d2_weights);
    suite_add_tcase(s, d2);
    return vt_run(s);
}
