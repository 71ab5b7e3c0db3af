/*
 * `vpeft forward` (core/cli/forward.c) on a tiny vit + mask2former model:
 * the file it writes against the same model run through vp_model_* in this
 * process (outputs, loss, gradients, bit for bit), labels in Hugging
 * Face's layout (masks area-averaged to the head's resolution, class
 * labels of several dtypes, an image without instances), gradients against
 * central differences of the loss through --weights, and the errors: their
 * exact one-line messages, exit statuses, and no output file left behind.
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

/* A 32x32 image, a ViT of patch 4 with the pyramid (16x16, 8x8, 4x4), the
 * head at width 16 with one decoder layer: targets are 16x16, T = 3. */
#define MODEL                                                                                   \
    "\"model\": {\"backbone\": {\"plugin\": \"vit\", \"image\": 32, \"patch\": 4, "            \
    "\"width\": 16, \"depth\": 1, \"heads\": 2, \"mlp_ratio\": 2, \"out_channels\": 16}, "      \
    "\"head\": {\"plugin\": \"mask2former\", \"classes\": 2, \"queries\": 5, \"hidden\": 16, " \
    "\"heads\": 2, \"encoder_layers\": 1, \"decoder_layers\": 1, \"points\": 2, "               \
    "\"encoder_ffn\": 32, \"decoder_ffn\": 32, \"mask_dim\": 16, \"max_targets\": 3, "         \
    "\"top_k\": 4}}"

/* Every parameter trains (no peft, no train.trainable). */
static const char *full_cfg = "{" MODEL ", \"train\": {\"seed\": 3}}";
/* LoRA on the backbone's query and value, the head's predictor trainable,
 * the rest frozen. */
static const char *peft_cfg =
    "{" MODEL ", \"peft\": [{\"plugin\": \"lora\", \"target_modules\": [\"query\", \"value\"], "
    "\"r\": 2, \"lora_alpha\": 4}], \"train\": {\"seed\": 3, \"trainable\": "
    "[\"head.predictor.*\"]}}";

enum { IMG = 32, HM = 16, T = 3, B = 3 };

static const char *bin(void)
{
    const char *b = getenv("VPEFT_BIN");
    ck_assert_msg(b != NULL, "VPEFT_BIN is not set (run through make check)");
    return b;
}

/* A scratch directory with the configs, and the CLI pointed at the device
 * under test. */
typedef struct fx {
    char dir[64], full[96], peft[96], px[96], lab[96], out[96];
    char env[64];               /* VPEFT_DEVICE=<its instance index> */
    vp_device *dev;
} fx;

static void write_text(const char *path, const char *text)
{
    FILE *f = fopen(path, "w");
    ck_assert_ptr_nonnull(f);
    fputs(text, f);
    fclose(f);
}

static void fx_init(fx *x, int d)
{
    snprintf(x->dir, sizeof x->dir, "%s/vpeft-forward-XXXXXX",
             getenv("TMPDIR") ? getenv("TMPDIR") : "/tmp");
    ck_assert_ptr_nonnull(mkdtemp(x->dir));
    snprintf(x->full, sizeof x->full, "%s/full.json", x->dir);
    snprintf(x->peft, sizeof x->peft, "%s/peft.json", x->dir);
    snprintf(x->px, sizeof x->px, "%s/px.safetensors", x->dir);
    snprintf(x->lab, sizeof x->lab, "%s/labels.safetensors", x->dir);
    snprintf(x->out, sizeof x->out, "%s/out.safetensors", x->dir);
    write_text(x->full, full_cfg);
    write_text(x->peft, peft_cfg);
    x->dev = vt_device((uint32_t)d);
    vp_instance *inst = vt_instance();
    uint32_t idx = UINT32_MAX;
    for (uint32_t j = 0; j < vp_instance_device_count(inst); j++)
        if (vp_instance_device_info(inst, j) == vt_device_info((uint32_t)d))
            idx = j;
    ck_assert_uint_ne(idx, UINT32_MAX);
    snprintf(x->env, sizeof x->env, "VPEFT_DEVICE=%u", idx);
}

/* ---- the batch ---------------------------------------------------------------------- */

/* Pixels in [-1, 1); per image b, n[b] rectangles at the image's 32x32
 * (odd edges, so that 2x2 cells average to 0.25, 0.5, 0.75), as Hugging
 * Face's mask_labels.<b> (n, 32, 32) F32 and class_labels.<b> (n): I64,
 * F32 and I32 for images 0, 1, 2. The same targets as the head takes
 * them: labels (B, T), -1 for empty slots, masks (B, T, 16 * 16). */
static const int n_inst[B] = {2, 1, 0};

typedef struct batch {
    float pixels[B * 3 * IMG * IMG];
    int32_t labels[B * T];
    float masks[B * T * HM * HM];
} batch;

static void rect(float *m, int x0, int y0, int w, int h)
{
    for (int y = y0; y < y0 + h; y++)
        for (int x = x0; x < x0 + w; x++)
            m[y * IMG + x] = 1.0f;
}

/* A labels file with n[b] instances for image b; the targets into d (NULL:
 * not wanted). */
static void write_labels(const char *path, const int *n, batch *d)
{
    enum { MAX_N = 8 };
    float *full[B];
    int64_t cls64[MAX_N];
    float clsf[MAX_N];
    int32_t cls32[MAX_N];
    int64_t shapes[B][3], cshape[B][1];
    vp_st_entry e[2 * B];
    char names[2 * B][32];
    if (d) {
        for (int i = 0; i < B * T; i++)
            d->labels[i] = -1;
        memset(d->masks, 0, sizeof d->masks);
    }
    for (int b = 0; b < B; b++) {
        ck_assert(n[b] <= MAX_N && (!d || n[b] <= T));
        full[b] = calloc((size_t)(n[b] ? n[b] : 1) * IMG * IMG, sizeof **full);
        ck_assert_ptr_nonnull(full[b]);
        for (int t = 0; t < n[b]; t++) {
            int cls = (t + b) % 2;
            if (b == 0)
                cls64[t] = cls;
            else if (b == 1)
                clsf[t] = (float)cls;
            else
                cls32[t] = cls;
            rect(full[b] + t * IMG * IMG, 2 + 9 * (t % 3) + b, 4 + 3 * t, 7 + t % 2, 7 + 2 * b);
            if (!d)
                continue;
            d->labels[b * T + t] = cls;
            for (int y = 0; y < HM; y++)
                for (int x = 0; x < HM; x++) {
                    const float *p = full[b] + t * IMG * IMG;
                    float s = p[2 * y * IMG + 2 * x] + p[2 * y * IMG + 2 * x + 1] +
                              p[(2 * y + 1) * IMG + 2 * x] + p[(2 * y + 1) * IMG + 2 * x + 1];
                    d->masks[(b * T + t) * HM * HM + y * HM + x] = s * 0.25f;
                }
        }
        shapes[b][0] = cshape[b][0] = n[b];
        shapes[b][1] = shapes[b][2] = IMG;
        snprintf(names[2 * b], sizeof names[0], "mask_labels.%d", b);
        snprintf(names[2 * b + 1], sizeof names[0], "class_labels.%d", b);
        e[2 * b] = (vp_st_entry){names[2 * b], VP_ST_F32, 3, shapes[b], full[b]};
        e[2 * b + 1] = (vp_st_entry){names[2 * b + 1],
                                     b == 0 ? VP_ST_I64 : b == 1 ? VP_ST_F32 : VP_ST_I32, 1,
                                     cshape[b], b == 0 ? (void *)cls64 : b == 1 ? (void *)clsf
                                                                                : (void *)cls32};
    }
    vt_ok(vp_st_write(path, e, 2 * B, NULL, 0));
    for (int b = 0; b < B; b++)
        free(full[b]);
}

static void write_pixels(const char *path, const float *px, int64_t n, int64_t h)
{
    vp_st_entry e = {"pixel_values", VP_ST_F32, 4, (int64_t[]){n, 3, h, h}, px};
    vt_ok(vp_st_write(path, &e, 1, NULL, 0));
}

/* ---- the same model here ---------------------------------------------------------------- */

static vp_model *direct(const fx *x, const char *cfg_text, const batch *d, bool train)
{
    vp_config *c;
    vt_ok(vp_cfg_parse(cfg_text, strlen(cfg_text), "m.json", &c));
    vp_model *m;
    vt_ok(vp_model_create(x->dev, c, &(vp_model_opts){.batch = B, .train = train,
                                                      .deterministic = true}, &m));
    vp_cfg_free(c);
    vp_graph *g = vp_model_graph(m);
    vt_ok(vp_graph_write(g, vp_model_image(m), d->pixels, sizeof d->pixels));
    if (train) {
        vt_ok(vp_graph_write(g, vp_graph_find(g, "target.labels"), d->labels, sizeof d->labels));
        vt_ok(vp_graph_write(g, vp_graph_find(g, "target.masks"), d->masks, sizeof d->masks));
    }
    vt_ok(vp_graph_run(g));
    return m;
}

/* The file's tensor name holds exactly t's bits, shape and dtype. */
static void assert_same(const vp_st *st, vp_model *m, const char *name, vp_gt *t)
{
    const vp_st_tensor *f = vp_st_find(st, name);
    ck_assert_msg(f != NULL, "no %s in the output", name);
    ck_assert_int_eq(f->ndim, vp_gt_ndim(t));
    for (int i = 0; i < f->ndim; i++)
        ck_assert_int_eq(f->shape[i], vp_gt_shape(t)[i]);
    ck_assert_int_eq(f->dtype, vp_gt_dtype(t) == VP_I32 ? VP_ST_I32 : VP_ST_F32);
    size_t bytes = (size_t)vp_gt_nelem(t) * 4;
    void *want = malloc(bytes);
    ck_assert_ptr_nonnull(want);
    vt_ok(vp_graph_read(vp_model_graph(m), t, want, bytes));
    ck_assert_msg(f->nbytes == bytes && !memcmp(f->data, want, bytes),
                  "%s differs from the model's", name);
    free(want);
}

/* Every named output of m is in the file as m computes it; returns how
 * many (the loss included). */
static size_t assert_outputs(const vp_st *st, vp_model *m)
{
    const vp_head_out *h = vp_model_head_out(m);
    const vp_build *b = vp_model_build(m);
    size_t n = 0;
    for (uint32_t i = 0; i < h->n_outputs; i++, n++)
        assert_same(st, m, h->names[i], h->outputs[i]);
    for (uint32_t i = 0; i < vp_build_output_count(b); i++, n++) {
        const char *name;
        vp_gt *t = vp_build_output_at(b, i, &name);
        assert_same(st, m, name, t);
    }
    if (vp_model_loss(m)) {
        assert_same(st, m, "loss", vp_model_loss(m));
        n++;
    }
    return n;
}

static void make_batch(batch *d)
{
    vt_rand(d->pixels, B * 3 * IMG * IMG, 11);
}

/* ---- (1) outputs ------------------------------------------------------------------------ */

START_TEST(test_outputs)
{
    fx x;
    fx_init(&x, _i);
    batch *d = calloc(1, sizeof *d);
    make_batch(d);
    write_pixels(x.px, d->pixels, B, IMG);
    ck_assert_int_eq(vt_sh("%s %s forward --config %s --input %s --out %s", x.env, bin(), x.full,
                           x.px, x.out), 0);
    ck_assert_str_eq(vt_err, "");
    vt_assert_has(vt_out, "forward: ");
    vt_assert_has(vt_out, " pred_logits (3, 5, 3), pred_masks (3, 5, 16, 16), instances.scores "
                          "(3, 4), instances.labels (3, 4), instances.masks (3, 4, 32, 32)");

    vp_model *m = direct(&x, full_cfg, d, false);
    vp_st *st;
    vt_ok(vp_st_open(x.out, &st));
    size_t n = assert_outputs(st, m);
    ck_assert_uint_ge(n, 6); /* the head's 5 and the backbone's */
    ck_assert_uint_eq(vp_st_count(st), n);
    ck_assert_ptr_null(vp_st_find(st, "loss"));
    ck_assert_int_eq(vp_st_find(st, "instances.labels")->dtype, VP_ST_I32);
    ck_assert_ptr_nonnull(vp_st_find(st, "backbone.last_hidden_state"));
    ck_assert_str_eq(vp_st_meta(st, "config"), x.full);
    ck_assert_str_eq(vp_st_meta(st, "input"), x.px);
    vp_st_close(st);
    vp_model_destroy(m);
    free(d);
    vt_rm_rf(x.dir);
}
END_TEST

/* ---- (2) the loss --------------------------------------------------------------------------- */

START_TEST(test_loss)
{
    fx x;
    fx_init(&x, _i);
    batch *d = calloc(1, sizeof *d);
    make_batch(d);
    write_pixels(x.px, d->pixels, B, IMG);
    write_labels(x.lab, n_inst, d);
    ck_assert_int_eq(vt_sh("%s %s forward --config %s --input %s --labels %s --out %s", x.env,
                           bin(), x.full, x.px, x.lab, x.out), 0);
    ck_assert_str_eq(vt_err, "");
    vt_assert_has(vt_out, "; loss ");

    vp_model *m = direct(&x, full_cfg, d, true);
    vp_st *st;
    vt_ok(vp_st_open(x.out, &st));
    size_t n = assert_outputs(st, m); /* loss, loss.class, ... bit for bit */
    ck_assert_uint_eq(vp_st_count(st), n);
    ck_assert_ptr_nonnull(vp_st_find(st, "loss.dice"));
    float loss;
    vt_ok(vp_st_read_f32(st, "loss", &loss, 1));
    ck_assert(isfinite(loss) && loss > 0);
    ck_assert_str_eq(vp_st_meta(st, "labels"), x.lab);
    vp_st_close(st);
    vp_model_destroy(m);

    /* Masks given at the targets' 16x16 (the averages themselves) go in as
     * they are: the same loss. */
    vp_st_entry e[2 * B];
    char names[2 * B][32];
    int64_t shapes[B][3], cshape[B][1];
    for (int b = 0; b < B; b++) {
        shapes[b][0] = cshape[b][0] = n_inst[b];
        shapes[b][1] = shapes[b][2] = HM;
        snprintf(names[2 * b], sizeof names[0], "mask_labels.%d", b);
        snprintf(names[2 * b + 1], sizeof names[0], "class_labels.%d", b);
        e[2 * b] = (vp_st_entry){names[2 * b], VP_ST_F32, 3, shapes[b], d->masks + b * T * HM * HM};
        e[2 * b + 1] = (vp_st_entry){names[2 * b + 1], VP_ST_I32, 1, cshape[b], d->labels + b * T};
    }
    vt_ok(vp_st_write(x.lab, e, 2 * B, NULL, 0));
    ck_assert_int_eq(vt_sh("%s %s forward --config %s --input %s --labels %s --out %s", x.env,
                           bin(), x.full, x.px, x.lab, x.out), 0);
    float loss16;
    vt_ok(vp_st_open(x.out, &st));
    vt_ok(vp_st_read_f32(st, "loss", &loss16, 1));
    vp_st_close(st);
    ck_assert_msg(loss16 == loss, "loss %.9g from 16x16 masks, %.9g from 32x32", loss16, loss);
    free(d);
    vt_rm_rf(x.dir);
}
END_TEST

/* ---- (3) gradients ------------------------------------------------------------------------ */

static float cli_loss(const fx *x, const char *weights)
{
    char w[160] = "";
    if (weights)
        snprintf(w, sizeof w, " --weights %s", weights);
    ck_assert_int_eq(vt_sh("%s %s forward --config %s --input %s --labels %s --out %s%s", x->env,
                           bin(), x->peft, x->px, x->lab, x->out, w), 0);
    vp_st *st;
    vt_ok(vp_st_open(x->out, &st));
    float l;
    vt_ok(vp_st_read_f32(st, "loss", &l, 1));
    vp_st_close(st);
    return l;
}

START_TEST(test_grads)
{
    fx x;
    fx_init(&x, _i);
    batch *d = calloc(1, sizeof *d);
    make_batch(d);
    write_pixels(x.px, d->pixels, B, IMG);
    write_labels(x.lab, n_inst, d);
    ck_assert_int_eq(vt_sh("%s %s forward --config %s --input %s --labels %s --grads --out %s",
                           x.env, bin(), x.peft, x.px, x.lab, x.out), 0);
    ck_assert_str_eq(vt_err, "");

    /* Every trainable parameter with a gradient, and only those, bit for bit. */
    vp_model *m = direct(&x, peft_cfg, d, true);
    const vp_build *b = vp_model_build(m);
    vp_st *st;
    vt_ok(vp_st_open(x.out, &st));
    size_t n = assert_outputs(st, m), n_grads = 0, n_lora = 0;
    for (uint32_t i = 0; i < vp_build_param_count(b); i++) {
        vp_gt *p = vp_build_param_at(b, i)->t;
        char name[256];
        snprintf(name, sizeof name, "grad.%s", vp_gt_name(p));
        if (!vp_gt_trainable(p) || !vp_g_grad(p)) {
            ck_assert_msg(!vp_st_find(st, name), "%s: the parameter is frozen", name);
            continue;
        }
        assert_same(st, m, name, vp_g_grad(p));
        n_grads++;
        n_lora += strstr(name, "lora_") != NULL;
        ck_assert(vp_build_param_at(b, i)->owner > 0 || !strncmp(name, "grad.head.predictor.", 20));
    }
    ck_assert_uint_gt(n_lora, 0);
    ck_assert_uint_eq(vp_st_count(st), n + n_grads);

    /* Central differences of the CLI's loss, through --weights, at the
     * largest gradient entries of the class embedding (downstream of the
     * matching's cost but smooth in it for a small step). */
    float f0 = cli_loss(&x, NULL), loss;
    vt_ok(vp_graph_read(vp_model_graph(m), vp_model_loss(m), &loss, sizeof loss));
    ck_assert_msg(f0 == loss, "loss %.9g, the model's %.9g", f0, loss);
    static const char *const names[2] = {"head.predictor.class_embed.bias",
                                         "head.predictor.class_embed.weight"};
    char wpath[128];
    snprintf(wpath, sizeof wpath, "%s/w.safetensors", x.dir);
    for (int k = 0; k < 2; k++) {
        vp_gt *p = vp_graph_find(vp_model_graph(m), names[k]);
        ck_assert_ptr_nonnull(p);
        size_t ne = (size_t)vp_gt_nelem(p);
        float *w = malloc(ne * sizeof *w), *gr = malloc(ne * sizeof *gr);
        vt_ok(vp_graph_read(vp_model_graph(m), p, w, ne * sizeof *w));
        char gname[128];
        snprintf(gname, sizeof gname, "grad.%s", names[k]);
        vt_ok(vp_st_read_f32(st, gname, gr, ne));
        size_t j = 0;
        for (size_t i = 1; i < ne; i++)
            if (fabsf(gr[i]) > fabsf(gr[j]))
                j = i;
        const float h = 1e-2f, w0 = w[j];
        float f[2];
        for (int s = 0; s < 2; s++) {
            w[j] = w0 + (s ? -h : h);
            vp_st_entry e = {names[k], VP_ST_F32, vp_gt_ndim(p), vp_gt_shape(p), w};
            vt_ok(vp_st_write(wpath, &e, 1, NULL, 0));
            f[s] = cli_loss(&x, wpath);
        }
        double fd = ((double)f[0] - f[1]) / ((double)(w0 + h) - (double)(w0 - h));
        printf("forward: d loss / d %s[%zu]: %.6g, central difference %.6g\n", names[k], j,
               (double)gr[j], fd);
        ck_assert_msg(fabs(fd - gr[j]) <= 5e-3 * fabs(gr[j]) + 1e-4,
                      "%s[%zu]: gradient %g, central difference %g", names[k], j, (double)gr[j],
                      fd);
        free(w);
        free(gr);
    }
    vp_st_close(st);
    vp_model_destroy(m);
    free(d);
    vt_rm_rf(x.dir);
}
END_TEST

/* ---- (4) errors ----------------------------------------------------------------------------- */

/* The command fails with status and exactly the line msg (its %s: the
 * directory), leaving no output file. */
static void expect_fail(const fx *x, int status, const char *args, const char *msg)
{
    char want[1024];
    snprintf(want, sizeof want, msg, x->dir, x->dir);
    ck_assert_int_eq(vt_sh("%s %s forward %s --out %s", x->env, bin(), args, x->out), status);
    ck_assert_str_eq(vt_err, want);
    ck_assert_str_eq(vt_out, "");
    ck_assert_msg(access(x->out, F_OK) != 0, "%s exists after a failure", x->out);
}

START_TEST(test_errors)
{
    fx x;
    fx_init(&x, _i);
    char args[1024], path[128];
    batch *d = calloc(1, sizeof *d);
    make_batch(d);

    /* usage */
    ck_assert_int_eq(vt_sh("%s forward --help", bin()), 0);
    vt_assert_has(vt_out, "usage: vpeft forward --config C --input IN.safetensors");
    ck_assert_int_eq(vt_sh("%s --help", bin()), 0);
    vt_assert_has(vt_out, "  forward      run a config's model");
    snprintf(args, sizeof args, "--config %s --input %s --grads", x.full, x.px);
    expect_fail(&x, 2, args, "vpeft forward: --grads needs --labels (see vpeft forward --help)\n");
    expect_fail(&x, 2, "--config x.json", "vpeft forward: --config, --input and --out are "
                "required (see vpeft forward --help)\n");

    /* unreadable input */
    snprintf(args, sizeof args, "--config %s --input %s/none.safetensors", x.full, x.dir);
    expect_fail(&x, 2, args, "vpeft: %s/none.safetensors: No such file or directory\n");
    snprintf(path, sizeof path, "%s/short.safetensors", x.dir);
    write_text(path, "abc");
    snprintf(args, sizeof args, "--config %s --input %s", x.full, path);
    expect_fail(&x, 2, args, "vpeft: %s/short.safetensors: 3 bytes, too short for the 8-byte "
                "header length\n");

    /* no pixel_values */
    vp_st_entry e = {"pixels", VP_ST_F32, 4, (int64_t[]){1, 3, IMG, IMG}, d->pixels};
    snprintf(path, sizeof path, "%s/nopx.safetensors", x.dir);
    vt_ok(vp_st_write(path, &e, 1, NULL, 0));
    snprintf(args, sizeof args, "--config %s --input %s", x.full, path);
    expect_fail(&x, 2, args, "vpeft: %s/nopx.safetensors: no tensor \"pixel_values\"\n");

    /* the wrong image size; not 4-D */
    snprintf(path, sizeof path, "%s/small.safetensors", x.dir);
    write_pixels(path, d->pixels, 2, 16);
    snprintf(args, sizeof args, "--config %s --input %s", x.full, path);
    expect_fail(&x, 2, args, "vpeft: %s/small.safetensors: pixel_values has shape (2, 3, 16, 16), "
                "the model takes (2, 3, 32, 32)\n");
    e = (vp_st_entry){"pixel_values", VP_ST_F32, 3, (int64_t[]){3, IMG, IMG}, d->pixels};
    snprintf(path, sizeof path, "%s/chw.safetensors", x.dir);
    vt_ok(vp_st_write(path, &e, 1, NULL, 0));
    snprintf(args, sizeof args, "--config %s --input %s", x.full, path);
    expect_fail(&x, 2, args, "vpeft: %s/chw.safetensors: pixel_values has shape (3, 32, 32); "
                "expected (B, C, H, W)\n");

    /* labels: more instances than T = 3 (an existing output stays as it was) */
    write_pixels(x.px, d->pixels, B, IMG);
    write_labels(x.lab, (const int[]){1, 4, 0}, NULL);
    write_text(x.out, "old");
    ck_assert_int_eq(vt_sh("%s %s forward --config %s --input %s --labels %s --out %s", x.env,
                           bin(), x.full, x.px, x.lab, x.out), 2);
    char want[512];
    snprintf(want, sizeof want, "vpeft: %s: image 1 has 4 instances, the head takes at most 3 "
             "(target.labels is (3, 3))\n", x.lab);
    ck_assert_str_eq(vt_err, want);
    ck_assert_int_eq(vt_sh("cat %s", x.out), 0);
    ck_assert_str_eq(vt_out, "old");
    unlink(x.out);

    /* labels: a missing image, masks that do not reduce to 16x16 */
    vp_st_entry le[2] = {{"mask_labels.0", VP_ST_F32, 3, (int64_t[]){1, 24, 24}, d->pixels},
                         {"class_labels.0", VP_ST_I64, 1, (int64_t[]){1}, (int64_t[]){1}}};
    vt_ok(vp_st_write(x.lab, le, 2, NULL, 0));
    snprintf(args, sizeof args, "--config %s --input %s --labels %s", x.full, x.px, x.lab);
    expect_fail(&x, 2, args, "vpeft: %s/labels.safetensors: no tensor \"class_labels.1\"\n");
    write_pixels(x.px, d->pixels, 1, IMG);
    expect_fail(&x, 2, args, "vpeft: %s/labels.safetensors: mask_labels.0 is (1, 24, 24): the "
                "head's targets are 16x16, and 24x24 does not reduce to that by integer "
                "factors\n");
    free(d);
    vt_rm_rf(x.dir);
}
END_TEST

int main(void)
{
    Suite *s = suite_create("forward");
    TCase *tc = vt_tcase("forward");
    tcase_set_timeout(tc, 600);
    vt_add_per_device(tc, test_outputs, NULL);
    vt_add_per_device(tc, test_loss, NULL);
    vt_add_per_device(tc, test_grads, NULL);
    vt_add_per_device(tc, test_errors, NULL);
    suite_add_tcase(s, tc);
    return vt_run(s);
}
