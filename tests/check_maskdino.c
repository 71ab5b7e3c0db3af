/*
 * The maskdino head (plugins/maskdino/) on a detectron2 checkpoint loaded as
 * it is ("model": {"detectron2": DIR}): against tests/data/maskdino, a tiny
 * Swin + Mask DINO that the repository's own code ran (its NOTES.md): every
 * output of the eval-mode forward pass (backbone, pixel decoder, the
 * interm, auxiliary and final predictions with their boxes) and the
 * instances of MaskDINO.instance_inference; the device against the CPU
 * reference executor on the whole graph (the plugin's kernels: sine
 * embedding, boxes from masks, detach); the criterion (every loss term and
 * the reference's gradients with every mask cell a point; the default
 * sampled points); the parameter count; the PEFT
 * sites (adapters after the encoder's and decoder's attention, lora_deform
 * in the encoder and in the decoder's cross-attention); the config errors.
 */
#include <math.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "config/config.h"
#include "graph/graph.h"
#include "harness.h"
#include "io/safetensors.h"
#include "model/build.h"
#include "model/model.h"
#include "model/verify.h"
#include "util/error.h"

static char data[4096];

/* The references: the tiny model of tests/data/maskdino (high2low, the
 * encoder on res3-res5, 'bitmask' boxes) and of tests/data/maskdino-low2high
 * (the released models' encoder: res2-res5 plus an extra level, low2high,
 * 'mask2box' boxes, hidden 256 without the decoder's input projections). */
static const char *const cases[] = {"maskdino", "maskdino-low2high"};

static void set_case(const char *name)
{
    const char *src = getenv("VPEFT_SRCDIR");
    snprintf(data, sizeof data, "%s/tests/data/%s", src ? src : "..", name);
}

static void set_data(void)
{
    set_case(cases[0]);
}

/* A checkpoint directory: config.json (cfg_or: its text instead of the
 * shared one's) and model.safetensors linked to the shared weights. */
static void make_ckpt(char *dir, size_t n, const char *cfg_text)
{
    const char *tmp = getenv("TMPDIR");
    snprintf(dir, n, "%s/mdckpt.XXXXXX", tmp ? tmp : "/tmp");
    ck_assert_ptr_nonnull(mkdtemp(dir));
    if (cfg_text) {
        char p[4300];
        snprintf(p, sizeof p, "%s/config.json", dir);
        FILE *f = fopen(p, "w");
        ck_assert_ptr_nonnull(f);
        fputs(cfg_text, f);
        fclose(f);
    } else {
        ck_assert_int_eq(vt_sh("ln -s '%s/config.json' '%s/config.json'", data, dir), 0);
    }
    ck_assert_int_eq(vt_sh("ln -s '%s/weights.safetensors' '%s/model.safetensors'", data, dir),
                     0);
}

static vp_status model_from(int dev, const char *json, bool train, vp_model **m)
{
    vp_config *c;
    vt_ok(vp_cfg_parse(json, strlen(json), "run.json", &c));
    vp_status st = vp_model_create(vt_device((uint32_t)dev), c,
                                   &(vp_model_opts){.batch = 2, .train = train}, m);
    vp_cfg_free(c);
    return st;
}

static float *read_st(const vp_st *f, const char *key, size_t *n)
{
    const vp_st_tensor *t = vp_st_find(f, key);
    ck_assert_msg(t != NULL, "reference has no %s", key);
    size_t k = 1;
    for (int i = 0; i < t->ndim; i++)
        k *= (size_t)t->shape[i];
    float *x = malloc(k * sizeof *x);
    vt_ok(vp_st_read_f32(f, key, x, k));
    *n = k;
    return x;
}

/* An integer tensor of the reference (I64 classes, U8 masks) as floats. */
static float *read_st_int(const vp_st *f, const char *key, size_t *n)
{
    const vp_st_tensor *t = vp_st_find(f, key);
    ck_assert_msg(t != NULL, "reference has no %s", key);
    size_t k = 1;
    for (int i = 0; i < t->ndim; i++)
        k *= (size_t)t->shape[i];
    int64_t *v = malloc(k * sizeof *v);
    float *x = malloc(k * sizeof *x);
    vt_ok(vp_st_read_i64(f, key, v, k));
    for (size_t i = 0; i < k; i++)
        x[i] = (float)v[i];
    free(v);
    *n = k;
    return x;
}

static float *read_out(vp_model *m, const char *name, size_t *n)
{
    vp_gt *t = vp_model_output(m, name);
    ck_assert_msg(t != NULL, "the model has no output %s", name);
    *n = (size_t)vp_gt_nelem(t);
    float *x = malloc(*n * sizeof *x);
    vt_ok(vp_graph_read(vp_model_graph(m), t, x, *n * sizeof *x));
    return x;
}

/* max |got - want| / max |want| */
static double rel_err(const float *got, const float *want, size_t n)
{
    double e = 0, mx = 0;
    for (size_t i = 0; i < n; i++) {
        if (!isfinite(got[i]))
            return INFINITY;
        e = fmax(e, fabs((double)got[i] - want[i]));
        mx = fmax(mx, fabs((double)want[i]));
    }
    return e / (mx > 0 ? mx : 1);
}

static void check_output(vp_model *m, const vp_st *ref, const char *name, double tol)
{
    size_t n, k;
    float *got = read_out(m, name, &n), *want = read_st(ref, name, &k);
    ck_assert_uint_eq(n, k);
    double e = rel_err(got, want, n);
    printf("note: %-44s %.2e\n", name, e);
    ck_assert_msg(e <= tol, "%s: relative error %.3g > %.3g", name, e, tol);
    free(got);
    free(want);
}

static void run_eval(int dev, const char *dir, vp_model **m, vp_st **io)
{
    char json[8600], path[4300];
    snprintf(json, sizeof json, "{\"model\": {\"detectron2\": \"%s\", \"image\": 64, "
             "\"top_k\": 20}}", dir);
    vt_ok(model_from(dev, json, false, m));
    snprintf(path, sizeof path, "%s/io.safetensors", data);
    vt_ok(vp_st_open(path, io));
    size_t n;
    float *px = read_st(*io, "images", &n);
    vt_ok(vp_graph_write(vp_model_graph(*m), vp_model_image(*m), px, n * sizeof *px));
    free(px);
    vt_ok(vp_graph_run(vp_model_graph(*m)));
}

/* Every output of the repository's eval-mode forward pass (backbone, pixel
 * decoder, interm, auxiliary and final predictions) within 1e-4 of the
 * largest magnitude, in both references. */
START_TEST(test_forward)
{
    for (size_t c = 0; c < sizeof cases / sizeof cases[0]; c++) {
        set_case(cases[c]);
        char dir[4200];
        make_ckpt(dir, sizeof dir, NULL);
        vp_model *m;
        vp_st *io;
        run_eval(_i, dir, &m, &io);
        int checked = 0;
        for (size_t k = 0; k < vp_st_count(io); k++) {
            const char *name = vp_st_get(io, k)->name;
            if (strncmp(name, "backbone.", 9) && strncmp(name, "pixel_decoder.", 14) &&
                strncmp(name, "head.", 5))
                continue;
            check_output(m, io, name, 1e-4);
            checked++;
        }
        printf("note: %s: %d outputs\n", cases[c], checked);
        ck_assert_int_ge(checked, c ? 23 : 21);
        /* the head's own outputs are the last prediction's */
        size_t n, k;
        float *a = read_out(m, "pred_boxes", &n), *b = read_out(m, "head.pred_boxes", &k);
        ck_assert_uint_eq(n, k);
        ck_assert_int_eq(memcmp(a, b, n * sizeof *a), 0);
        free(a);
        free(b);
        vp_st_close(io);
        vp_model_destroy(m);
        vt_rm_rf(dir);
    }
}
END_TEST

/* MaskDINO.instance_inference's 20 instances per image (unsorted there), in
 * both references:
 * each matched by class and score, its box within 1e-4 of the image size
 * and its mask (logit > 0 at 64x64) pixel for pixel. */
START_TEST(test_instances)
{
    for (size_t c = 0; c < sizeof cases / sizeof cases[0]; c++) {
        set_case(cases[c]);
        char dir[4200];
        make_ckpt(dir, sizeof dir, NULL);
        vp_model *m;
        vp_st *io;
        run_eval(_i, dir, &m, &io);
        size_t n;
        float *scores = read_out(m, "instances.scores", &n);
        float *boxes = read_out(m, "instances.boxes", &n);
        float *masks = read_out(m, "instances.masks", &n);
        vp_gt *lt = vp_model_output(m, "instances.labels");
        int32_t labels[40];
        ck_assert_int_eq(vp_gt_nelem(lt), 40);
        vt_ok(vp_graph_read(vp_model_graph(m), lt, labels, sizeof labels));
        for (int b = 0; b < 2; b++) {
            char key[64];
            size_t k;
            snprintf(key, sizeof key, "instances.%d.scores", b);
            float *rs = read_st(io, key, &k);
            ck_assert_uint_eq(k, 20);
            snprintf(key, sizeof key, "instances.%d.pred_boxes", b);
            float *rb = read_st(io, key, &k);
            snprintf(key, sizeof key, "instances.%d.pred_classes", b);
            float *rc = read_st_int(io, key, &k);
            snprintf(key, sizeof key, "instances.%d.pred_masks", b);
            float *rm = read_st_int(io, key, &k);
            bool used[20] = {false};
            double worst_s = 0, worst_b = 0;
            long mismatched = 0;
            for (int i = 0; i < 20; i++) {
                int hit = -1;
                for (int j = 0; j < 20 && hit < 0; j++)
                    if (!used[j] && labels[b * 20 + j] == (int32_t)rc[i] &&
                        fabs(scores[b * 20 + j] - rs[i]) < 1e-4)
                        hit = j;
                ck_assert_msg(hit >= 0, "image %d: no instance of class %d with score %g", b,
                              (int)rc[i], rs[i]);
                used[hit] = true;
                worst_s = fmax(worst_s, fabs(scores[b * 20 + hit] - rs[i]));
                for (int c = 0; c < 4; c++)
                    worst_b = fmax(worst_b, fabs(boxes[(b * 20 + hit) * 4 + c] - rb[i * 4 + c]));
                const float *mm = masks + (size_t)(b * 20 + hit) * 4096;
                for (int p = 0; p < 4096; p++)
                    mismatched += (mm[p] > 0) != (rm[(size_t)i * 4096 + p] > 0.5f);
            }
            printf("note: %s image %d: score error %.2e, box error %.2e px, %ld mask pixels "
                   "differ\n",
                   cases[c], b, worst_s, worst_b, mismatched);
            ck_assert(worst_b < 64 * 1e-4);
            ck_assert_int_eq(mismatched, 0);
            free(rs);
            free(rb);
            free(rc);
            free(rm);
        }
        free(scores);
        free(boxes);
        free(masks);
        vp_st_close(io);
        vp_model_destroy(m);
        vt_rm_rf(dir);
    }
}
END_TEST

/* The device's predictions against the CPU reference executor running the
 * same graph in double (the plugin's kernels through their references). */
START_TEST(test_reference)
{
    set_data();
    char dir[4200];
    make_ckpt(dir, sizeof dir, NULL);
    vp_model *m;
    vp_st *io;
    run_eval(_i, dir, &m, &io);
    vp_graph *g = vp_model_graph(m);
    const vp_build *b = vp_model_build(m);
    vp_graph_ref *ref;
    vt_ok(vp_graph_ref_create(g, &ref));
    for (uint32_t i = 0; i < vp_build_param_count(b); i++) {
        vp_gt *p = vp_build_param_at(b, i)->t;
        size_t n = (size_t)vp_gt_nelem(p);
        float *x = malloc(n * sizeof *x);
        vt_ok(vp_graph_read(g, p, x, n * sizeof *x));
        double *d = vp_graph_ref_data(ref, p);
        for (size_t k = 0; k < n; k++)
            d[k] = x[k];
        free(x);
    }
    size_t n;
    float *px = read_st(io, "images", &n);
    double *d = vp_graph_ref_data(ref, vp_model_image(m));
    for (size_t k = 0; k < n; k++)
        d[k] = px[k];
    free(px);
    vt_ok(vp_graph_ref_forward(ref));
    static const char *const names[] = {"head.interm_outputs.pred_boxes", "head.pred_logits",
                                        "head.pred_boxes", "head.pred_masks",
                                        "head.aux_outputs.1.pred_boxes"};
    for (size_t i = 0; i < sizeof names / sizeof names[0]; i++) {
        float *got = read_out(m, names[i], &n);
        const double *want = vp_graph_ref_data(ref, vp_model_output(m, names[i]));
        double e = 0, mx = 0;
        for (size_t k = 0; k < n; k++) {
            e = fmax(e, fabs(got[k] - want[k]));
            mx = fmax(mx, fabs(want[k]));
        }
        printf("note: reference %-32s %.2e\n", names[i], e / mx);
        ck_assert_msg(e / mx < 1e-4, "%s: %g", names[i], e / mx);
        free(got);
    }
    vp_graph_ref_destroy(ref);
    vp_st_close(io);
    vp_model_destroy(m);
    vt_rm_rf(dir);
}
END_TEST

/* torch's count of the model's parameters (shared modules once): the box
 * MLP is one parameter set under three names, decoder_norm two. */
START_TEST(test_param_count)
{
    set_data();
    char dir[4200], json[8600];
    make_ckpt(dir, sizeof dir, NULL);
    snprintf(json, sizeof json, "{\"model\": {\"detectron2\": \"%s\", \"image\": 64}}", dir);
    vp_config *c;
    vt_ok(vp_cfg_parse(json, strlen(json), "run.json", &c));
    vp_model *m;
    vt_ok(vp_model_create(vt_device(0), c, &(vp_model_opts){.batch = 1, .no_compile = true}, &m));
    vp_cfg_free(c);
    const vp_build *b = vp_model_build(m);
    uint64_t total = 0;
    for (uint32_t i = 0; i < vp_build_param_count(b); i++)
        total += (uint64_t)vp_gt_nelem(vp_build_param_at(b, i)->t);
    printf("note: %llu parameters\n", (unsigned long long)total);
    ck_assert_uint_eq(total, 3515979);
    vp_model_destroy(m);
    vt_rm_rf(dir);
}
END_TEST

/* The released Swin-L instance model's architecture (its resolved config,
 * tests/data/maskdino-swinl; random weights): the encoder on res2-res5 plus
 * an extra level in "low2high" order, 300 queries, 9 layers. Its parameter
 * count is the paper's 223M (222,799,144: backbone 195,201,204, head
 * 27,597,940), and its names and shapes are those of the repository's own
 * model of that config. */
START_TEST(test_released_shape)
{
    set_data();
    char json[8600];
    snprintf(json, sizeof json, "{\"model\": {\"detectron2\": \"%s/../maskdino-swinl\", "
             "\"image\": 384, \"pretrained\": false}}", data);
    vp_config *c;
    vt_ok(vp_cfg_parse(json, strlen(json), "run.json", &c));
    vp_model *m;
    vt_ok(vp_model_create(vt_device(0), c, &(vp_model_opts){.batch = 1, .no_compile = true}, &m));
    vp_cfg_free(c);
    const vp_build *b = vp_model_build(m);
    uint64_t total = 0, head = 0;
    for (uint32_t i = 0; i < vp_build_param_count(b); i++) {
        vp_gt *p = vp_build_param_at(b, i)->t;
        total += (uint64_t)vp_gt_nelem(p);
        if (!strncmp(vp_gt_name(p), "sem_seg_head.", 13))
            head += (uint64_t)vp_gt_nelem(p);
    }
    printf("note: released Swin-L Mask DINO: %llu parameters, head %llu\n",
           (unsigned long long)total, (unsigned long long)head);
    ck_assert_uint_eq(total, 222799144);
    ck_assert_uint_eq(head, 27597940);
    /* Every entry of the repository's own state_dict of that model
     * (state_dict.tsv: its code, built from the same config by
     * dump_keys.py) is a parameter of this one with its shape, or a key the
     * plugins declared (the box MLP's and decoder_norm's aliases, the
     * relative position indices, criterion.empty_weight); and every
     * parameter is in it: a released checkpoint loads strictly. */
    char path[4300];
    snprintf(path, sizeof path, "%s/../maskdino-swinl/state_dict.tsv", data);
    FILE *f = fopen(path, "r");
    ck_assert_ptr_nonnull(f);
    vp_graph *g = vp_model_graph(m);
    uint32_t np = vp_build_param_count(b);
    bool *seen = calloc(np, sizeof *seen);
    char line[1024];
    int entries = 0, params = 0, declared = 0;
    while (fgets(line, sizeof line, f)) {
        char *name = strtok(line, "\t"), *dtype = strtok(NULL, "\t");
        char *sh = strtok(NULL, "\t\n");
        ck_assert_ptr_nonnull(dtype);
        entries++;
        if (vp_build_is_buffer_key(b, name)) {
            declared++;
            continue;
        }
        vp_gt *t = vp_graph_find(g, name);
        uint32_t hit = np;
        for (uint32_t i = 0; t && i < np; i++)
            if (vp_build_param_at(b, i)->t == t)
                hit = i;
        ck_assert_msg(hit < np, "%s: no such parameter", name);
        int nd = 0;
        for (char *q = sh ? strtok(sh, ",") : NULL; q; q = strtok(NULL, ","), nd++) {
            ck_assert_int_lt(nd, vp_gt_ndim(t));
            ck_assert_msg(vp_gt_shape(t)[nd] == atoll(q), "%s: dimension %d", name, nd);
        }
        ck_assert_int_eq(nd, vp_gt_ndim(t));
        seen[hit] = true;
        params++;
    }
    fclose(f);
    for (uint32_t i = 0; i < np; i++)
        ck_assert_msg(seen[i], "%s is not in the repository's state_dict",
                      vp_gt_name(vp_build_param_at(b, i)->t));
    free(seen);
    printf("note: the repository's state_dict: %d entries, %d parameters with their shapes, %d "
           "declared\n", entries, params, declared);
    ck_assert_int_eq(entries, 816);
    ck_assert_int_eq(params, 681);
    /* the extra level's 3x3 stride-2 projection of res5 (1536 channels) */
    vp_gt *x = vp_graph_find(vp_model_graph(m), "sem_seg_head.pixel_decoder.input_proj.4.0.weight");
    ck_assert_ptr_nonnull(x);
    ck_assert_int_eq(vp_gt_shape(x)[1], 1536);
    ck_assert_int_eq(vp_gt_shape(x)[2], 3);
    vp_model_destroy(m);
}
END_TEST

/* `vpeft info --sites`: the study's adapter places (the encoder's
 * self-attention, the decoder's self- and cross-attention) and the
 * deformable attention modules lora_deform reaches; then a model with both
 * methods on them builds and runs. */
START_TEST(test_sites)
{
    set_data();
    char dir[4200], cfg[4300];
    make_ckpt(dir, sizeof dir, NULL);
    snprintf(cfg, sizeof cfg, "%s/run.json", dir);
    FILE *f = fopen(cfg, "w");
    ck_assert_ptr_nonnull(f);
    fprintf(f, "{\"model\": {\"detectron2\": \"%s\", \"image\": 64}}\n", dir);
    fclose(f);
    char out[4400];
    snprintf(out, sizeof out, "%s/sites.txt", dir);
    ck_assert_int_eq(vt_sh("./vpeft info '%s' --sites > '%s'", cfg, out), 0);
    static const char *const want[] = {
        "sem_seg_head.pixel_decoder.transformer.encoder.layers.1.self_attn ",
        "sem_seg_head.predictor.decoder.layers.0.self_attn ",
        "sem_seg_head.predictor.decoder.layers.2.cross_attn ",
        "sem_seg_head.predictor.decoder.layers.2.cross_attn.sampling_offsets ",
        "sem_seg_head.predictor.decoder.layers.1.self_attn.out_proj ",
        "backbone.layers.3.blocks.1.attn.qkv "};
    for (size_t i = 0; i < sizeof want / sizeof want[0]; i++)
        ck_assert_msg(vt_sh("grep -q -F '%s' '%s'", want[i], out) == 0, "no site %s", want[i]);
    /* The study's setting on Mask DINO: adapters after every attention
     * sub-layer of the head (2 encoder + 3 x 2 decoder places here; 6 + 9 x
     * 2 = 24 on the released models), lora_deform's default projections in
     * every deformable attention (2 encoder + 3 decoder modules). */
    char json[9000];
    snprintf(json, sizeof json,
             "{\"model\": {\"detectron2\": \"%s\", \"image\": 64, \"top_k\": 20}, \"peft\": ["
             "{\"plugin\": \"adapter\", \"sites\": [\"after_attn\"], \"modules\": "
             "[\"sem_seg_head.*\"]}, {\"plugin\": \"lora_deform\", \"modules\": "
             "[\"sem_seg_head.*\"]}]}", dir);
    f = fopen(cfg, "w");
    ck_assert_ptr_nonnull(f);
    fputs(json, f);
    fclose(f);
    ck_assert_int_eq(vt_sh("./vpeft info '%s' --sites --depth 0 > '%s'", cfg, out), 0);
    ck_assert_int_eq(vt_sh("test $(grep -c 'attention output .* adapter$' '%s') = 8", out), 0);
    ck_assert_int_eq(vt_sh("test $(grep -c 'cross_attn\\.[a-z_]* .* lora_deform$' '%s') = 6",
                           out), 0);
    ck_assert_int_eq(vt_sh("test $(grep -c 'encoder.*self_attn\\.[a-z_]* .* lora_deform$' "
                           "'%s') = 4", out), 0);
    vp_model *m;
    vt_ok(model_from(0, json, false, &m));
    vt_ok(vp_graph_run(vp_model_graph(m)));
    vp_model_destroy(m);
    vt_rm_rf(dir);
}
END_TEST

/* The reference's targets (2 images, 2 and 3 instances) into target.labels
 * (2, 3), -1 for the empty slot, and target.masks (2, 3, 64, 64). */
static void fill_targets(vp_graph *g, const vp_st *ref)
{
    enum { B = 2, T = 3, HW = 64 * 64 };
    vp_gt *labels = vp_graph_find(g, "target.labels"), *masks = vp_graph_find(g, "target.masks");
    ck_assert_ptr_nonnull(labels);
    ck_assert_ptr_nonnull(masks);
    int32_t lab[B * T];
    float *tm = calloc(B * T * HW, sizeof *tm);
    for (int b = 0; b < B; b++) {
        char key[64];
        snprintf(key, sizeof key, "targets.%d.labels", b);
        size_t n;
        float *cls = read_st_int(ref, key, &n);
        snprintf(key, sizeof key, "targets.%d.masks", b);
        size_t nm;
        float *ml = read_st_int(ref, key, &nm);
        ck_assert_uint_eq(nm, n * HW);
        for (int k = 0; k < T; k++)
            lab[b * T + k] = k < (int)n ? (int32_t)cls[k] : -1;
        memcpy(tm + (size_t)b * T * HW, ml, nm * sizeof *ml);
        free(ml);
        free(cls);
    }
    vt_ok(vp_graph_write(g, labels, lab, sizeof lab));
    vt_ok(vp_graph_write(g, masks, tm, (size_t)B * T * HW * sizeof *tm));
    free(tm);
}

static vp_model *train_model(int dev, const char *dir, const char *extra)
{
    char json[9000], path[4300];
    snprintf(json, sizeof json, "{\"model\": {\"detectron2\": \"%s\", \"image\": 64, "
             "\"max_targets\": 3%s}, \"train\": {\"trainable\": [\"*\"]}}", dir, extra);
    vp_model *m;
    vt_ok(model_from(dev, json, true, &m));
    snprintf(path, sizeof path, "%s/io.safetensors", data);
    vp_st *io;
    vt_ok(vp_st_open(path, &io));
    size_t n;
    float *px = read_st(io, "images", &n);
    vt_ok(vp_graph_write(vp_model_graph(m), vp_model_image(m), px, n * sizeof *px));
    free(px);
    vp_st_close(io);
    return m;
}

/* The criterion with every mask cell a point (the reference's "grid"
 * case): each of the 25 weighted terms and the total within 1e-4, the
 * training graph's predictions (every layer's masks) within 1e-4, and the
 * reference's gradients within 1e-3 of their largest magnitude (the box
 * MLP's under the checkpoint's decoder.bbox_embed.0 alias). */
START_TEST(test_loss_and_grads)
{
    set_data();
    char dir[4200], path[4300];
    make_ckpt(dir, sizeof dir, NULL);
    vp_model *m = train_model(_i, dir, ", \"train_num_points\": \"all\"");
    vp_graph *g = vp_model_graph(m);
    snprintf(path, sizeof path, "%s/loss.safetensors", data);
    vp_st *ref;
    vt_ok(vp_st_open(path, &ref));
    fill_targets(g, ref);
    vt_ok(vp_graph_zero_grads(g));
    vt_ok(vp_graph_run(g));

    static const char *const preds[] = {
        "pred_logits", "pred_masks", "pred_boxes", "aux_outputs.0.pred_masks",
        "aux_outputs.1.pred_masks", "aux_outputs.2.pred_masks", "aux_outputs.2.pred_boxes",
        "interm_outputs.pred_masks", "interm_outputs.pred_boxes"};
    for (size_t i = 0; i < sizeof preds / sizeof preds[0]; i++) {
        char out[96], key[96];
        snprintf(out, sizeof out, "head.%s", preds[i]);
        snprintf(key, sizeof key, "train_head.%s", preds[i]);
        size_t n, k;
        float *got = read_out(m, out, &n), *want = read_st(ref, key, &k);
        ck_assert_uint_eq(n, k);
        double e = rel_err(got, want, n);
        ck_assert_msg(e <= 1e-4, "%s: relative error %.3g", out, e);
        free(got);
        free(want);
    }
    static const char *const terms[] = {"loss_ce", "loss_mask", "loss_dice", "loss_bbox",
                                        "loss_giou"};
    static const char *const sfx[] = {"", "_0", "_1", "_2", "_interm"};
    double total = 0;
    int bad = 0;
    for (int t = 0; t < 5; t++)
        for (int p = 0; p < 5; p++) {
            char name[64], key[96];
            snprintf(name, sizeof name, "%s%s", terms[t], sfx[p]);
            snprintf(key, sizeof key, "grid.loss.%s", name);
            size_t n;
            float *got = read_out(m, name, &n), *want = read_st(ref, key, &n);
            printf("note: %-18s %.7g, reference %.7g\n", name, got[0], want[0]);
            bad += !(fabs(got[0] - want[0]) <= 1e-4 * fabs(want[0]));
            total += want[0];
            free(got);
            free(want);
        }
    ck_assert_msg(bad == 0, "%d of the 25 loss terms differ from the reference's", bad);
    float loss;
    vt_ok(vp_graph_read(g, vp_model_loss(m), &loss, sizeof loss));
    size_t n1;
    float *want_total = read_st(ref, "grid.total", &n1);
    printf("note: loss %.7g, reference %.7g\n", loss, want_total[0]);
    ck_assert(fabs(loss - want_total[0]) <= 1e-4 * fabs(want_total[0]));
    free(want_total);

    uint32_t checked = 0;
    double worst = 0;
    for (size_t k = 0; k < vp_st_count(ref); k++) {
        const char *key = vp_st_get(ref, k)->name;
        if (strncmp(key, "grid.grad.", 10))
            continue;
        const char *pn = key + 10;
        char alias[256];
        if (strstr(pn, "decoder.bbox_embed.0.layers.")) { /* the one box MLP */
            snprintf(alias, sizeof alias, "sem_seg_head.predictor._bbox_embed.layers.%s",
                     strstr(pn, "layers.") + 7);
            pn = alias;
        }
        vp_gt *p = vp_graph_find(g, pn);
        ck_assert_msg(p != NULL && vp_g_grad(p) != NULL, "no gradient of %s", pn);
        size_t n;
        float *want = read_st(ref, key, &n), *got = malloc(n * sizeof *got);
        ck_assert_uint_eq(n, (size_t)vp_gt_nelem(p));
        vt_ok(vp_graph_read(g, vp_g_grad(p), got, n * sizeof *got));
        double e = rel_err(got, want, n);
        worst = fmax(worst, e);
        ck_assert_msg(e <= 1e-3, "gradient of %s: relative error %.3g", pn, e);
        checked++;
        free(got);
        free(want);
    }
    printf("note: %u gradients, worst %.2e\n", checked, worst);
    ck_assert_uint_eq(checked, 18);
    vp_st_close(ref);
    vp_model_destroy(m);
    vt_rm_rf(dir);
}
END_TEST

/* Mask DINO's default points (TRAIN_NUM_POINTS 112 * 112 importance-
 * sampled, the matcher's random): random, so not the reference's numbers:
 * the total within 10% of the every-cell loss, every term finite. */
START_TEST(test_sampled_loss)
{
    set_data();
    char dir[4200], path[4300];
    make_ckpt(dir, sizeof dir, NULL);
    vp_model *m = train_model(_i, dir, "");
    vp_graph *g = vp_model_graph(m);
    snprintf(path, sizeof path, "%s/loss.safetensors", data);
    vp_st *ref;
    vt_ok(vp_st_open(path, &ref));
    fill_targets(g, ref);
    vt_ok(vp_graph_zero_grads(g));
    vt_ok(vp_graph_run(g));
    float loss;
    vt_ok(vp_graph_read(g, vp_model_loss(m), &loss, sizeof loss));
    size_t n;
    float *grid = read_st(ref, "grid.total", &n);
    printf("note: sampled loss %.7g, every cell %.7g\n", loss, grid[0]);
    ck_assert(isfinite(loss) && fabs(loss - grid[0]) <= 0.1 * grid[0]);
    free(grid);
    vp_st_close(ref);
    vp_model_destroy(m);
    vt_rm_rf(dir);
}
END_TEST

/* The whole training graph's gradients against central finite differences
 * of the CPU reference executor (model/verify.h), for parameters whose
 * effect on the loss passes through no detached path (finite differences
 * see those; the gradient, as PyTorch's, does not): the class embedding
 * (the focal loss of every prediction) and the last decoder layer's
 * cross-attention output and FFN (the final boxes' L1 and GIoU through the
 * reciprocal, the final masks' BCE and dice). */
START_TEST(test_gradients)
{
    set_data();
    char dir[4200], json[9000], path[4300];
    make_ckpt(dir, sizeof dir, NULL);
    snprintf(json, sizeof json, "{\"model\": {\"detectron2\": \"%s\", \"image\": 64, "
             "\"max_targets\": 3, \"train_num_points\": \"all\"}, \"train\": {\"trainable\": "
             "[\"sem_seg_head.predictor.class_embed.*\", "
             "\"sem_seg_head.predictor.decoder.layers.2.cross_attn.output_proj.*\", "
             "\"sem_seg_head.predictor.decoder.layers.2.linear2.bias\"]}}", dir);
    vp_model *m;
    vt_ok(model_from(_i, json, true, &m));
    vp_graph *g = vp_model_graph(m);
    snprintf(path, sizeof path, "%s/io.safetensors", data);
    vp_st *io, *ref;
    vt_ok(vp_st_open(path, &io));
    size_t n;
    float *px = read_st(io, "images", &n);
    vp_st_close(io);
    snprintf(path, sizeof path, "%s/loss.safetensors", data);
    vt_ok(vp_st_open(path, &ref));
    fill_targets(g, ref);
    vp_st_close(ref);
    vp_gt *in[3] = {vp_model_image(m), vp_graph_find(g, "target.labels"),
                    vp_graph_find(g, "target.masks")};
    int32_t lab[6];
    float *tm = malloc(6 * 4096 * sizeof *tm);
    vt_ok(vp_graph_read(g, in[1], lab, sizeof lab));
    vt_ok(vp_graph_read(g, in[2], tm, 6 * 4096 * sizeof *tm));
    vp_verify r;
    vt_ok(vp_verify_graph(g, vp_model_loss(m), NULL, 3, in, (const void *[]){px, lab, tm}, 4,
                          &r));
    printf("note: loss %.7g (reference %.7g), gradients of %u parameters (%llu elements) "
           "within %.2g (%s)\n", r.loss_dev, r.loss_ref, r.params_checked,
           (unsigned long long)r.grad_checked, r.grad_err, r.grad_worst);
    ck_assert_msg(fabs(r.loss_dev - r.loss_ref) <= 1e-4 * fabs(r.loss_ref), "loss %g vs %g",
                  r.loss_dev, r.loss_ref);
    ck_assert_uint_eq(r.params_checked, 5);
    ck_assert_msg(r.grad_err < 2e-3, "gradient error %g at %s", r.grad_err, r.grad_worst);
    free(px);
    free(tm);
    vp_model_destroy(m);
    vt_rm_rf(dir);
}
END_TEST

/* A checkpoint directory whose config.json is the shared one with each
 * "from|to" replacement of edits made (NULL-terminated). */
static void make_edited_ckpt(char *dir, size_t n, const char *const *edits)
{
    char path[4300];
    snprintf(path, sizeof path, "%s/config.json", data);
    FILE *f = fopen(path, "r");
    ck_assert_ptr_nonnull(f);
    static char text[16384], edited[16384];
    size_t k = fread(text, 1, sizeof text - 1, f);
    fclose(f);
    text[k] = 0;
    for (const char *const *e = edits; *e; e++) {
        const char *sep = strchr(*e, '|');
        char from[256];
        snprintf(from, sizeof from, "%.*s", (int)(sep - *e), *e);
        char *at = strstr(text, from);
        ck_assert_msg(at != NULL, "config.json has no %s", from);
        snprintf(edited, sizeof edited, "%.*s%s%s", (int)(at - text), text, sep + 1,
                 at + strlen(from));
        memcpy(text, edited, strlen(edited) + 1);
    }
    make_ckpt(dir, n, text);
}

static float read_scalar(vp_model *m, const char *name)
{
    vp_gt *t = vp_model_output(m, name);
    ck_assert_msg(t != NULL, "no output %s", name);
    float v;
    vt_ok(vp_graph_read(vp_model_graph(m), t, &v, sizeof v));
    return v;
}

/* Denoising ("DN": "seg", DN_NUM 12: 4 groups of the 3 target slots):
 * the matching queries cannot see the noised ones, so the 25 terms of the
 * reference stay as they are (1e-5); the 20 denoising terms (final and 3
 * auxiliary, "_dn", "_dn_<i>") are there, finite, and the noised boxes,
 * which start near their targets, lose less than the matched ones;
 * "standard" has no mask terms. */
START_TEST(test_dn_terms)
{
    set_data();
    static const char *const dns[2] = {"\"DN\": \"no\"|\"DN\": \"seg\"",
                                       "\"DN\": \"no\"|\"DN\": \"standard\""};
    for (int v = 0; v < 2; v++) {
        char dir[4200], path[4300];
        make_edited_ckpt(dir, sizeof dir, (const char *const[]){dns[v], NULL});
        vp_model *m = train_model(_i, dir, ", \"train_num_points\": \"all\"");
        vp_graph *g = vp_model_graph(m);
        snprintf(path, sizeof path, "%s/loss.safetensors", data);
        vp_st *ref;
        vt_ok(vp_st_open(path, &ref));
        fill_targets(g, ref);
        vt_ok(vp_graph_run(g));
        static const char *const terms[] = {"loss_ce", "loss_mask", "loss_dice", "loss_bbox",
                                            "loss_giou"};
        static const char *const sfx[] = {"", "_0", "_1", "_2", "_interm"};
        static const char *const dsfx[] = {"_dn", "_dn_0", "_dn_1", "_dn_2"};
        double dn_total = 0;
        int n_dn = 0;
        for (int t = 0; t < 5; t++) {
            for (int p = 0; p < 5; p++) {
                char name[64], key[96];
                snprintf(name, sizeof name, "%s%s", terms[t], sfx[p]);
                snprintf(key, sizeof key, "grid.loss.%s", name);
                size_t n;
                float *want = read_st(ref, key, &n), got = read_scalar(m, name);
                ck_assert_msg(fabs(got - want[0]) <= 1e-5 * fabs(want[0]), "%s: %g, %g", name,
                              got, want[0]);
                free(want);
            }
            for (int p = 0; p < 4; p++) {
                char name[64];
                snprintf(name, sizeof name, "%s%s", terms[t], dsfx[p]);
                vp_gt *o = vp_model_output(m, name);
                bool mask_term = t == 1 || t == 2;
                ck_assert_msg((o != NULL) == (v == 0 || !mask_term), "%s %s", name,
                              o ? "present" : "missing");
                if (!o)
                    continue;
                float x = read_scalar(m, name);
                ck_assert(isfinite(x) && x > 0);
                dn_total += x;
                n_dn++;
            }
        }
        ck_assert_int_eq(n_dn, v == 0 ? 20 : 12);
        float bb = read_scalar(m, "loss_bbox"), bdn = read_scalar(m, "loss_bbox_dn");
        printf("note: %s: %d denoising terms, %.5g in all; loss_bbox %.5g, loss_bbox_dn %.5g\n",
               v ? "standard" : "seg", n_dn, dn_total, bb, bdn);
        ck_assert(bdn < bb);
        float loss;
        vt_ok(vp_graph_read(g, vp_model_loss(m), &loss, sizeof loss));
        size_t n1;
        float *grid = read_st(ref, "grid.total", &n1);
        ck_assert(fabs(loss - (grid[0] + dn_total)) <= 1e-4 * loss);
        free(grid);
        vp_st_close(ref);
        vp_model_destroy(m);
        vt_rm_rf(dir);
    }
}
END_TEST

/* Denoising's gradients against finite differences (no noise, one decoder
 * layer, random weights, so that no detached path carries the parameters'
 * effect): label_enc reaches the loss through the noised queries only. */
START_TEST(test_dn_gradients)
{
    set_data();
    char dir[4200], json[9000], path[4300];
    make_edited_ckpt(dir, sizeof dir,
                     (const char *const[]){"\"DN\": \"no\"|\"DN\": \"seg\"",
                                           "\"DN_NOISE_SCALE\": 0.4|\"DN_NOISE_SCALE\": 0.0",
                                           NULL});
    snprintf(json, sizeof json,
             "{\"model\": {\"backbone\": {\"plugin\": \"swin\", \"detectron2\": \"%s\", "
             "\"image\": 64}, \"head\": {\"plugin\": \"maskdino\", \"detectron2\": \"%s\", "
             "\"decoder_layers\": 1, \"max_targets\": 3, \"train_num_points\": \"all\"}}, "
             "\"train\": {\"seed\": 3, \"trainable\": [\"sem_seg_head.predictor.label_enc.*\", "
             "\"sem_seg_head.predictor.class_embed.*\"]}}", dir, dir);
    vp_model *m;
    vt_ok(model_from(_i, json, true, &m));
    vp_graph *g = vp_model_graph(m);
    ck_assert_ptr_nonnull(vp_model_output(m, "loss_ce_dn"));
    ck_assert_ptr_nonnull(vp_model_output(m, "loss_mask_dn_0"));
    snprintf(path, sizeof path, "%s/io.safetensors", data);
    vp_st *io, *ref;
    vt_ok(vp_st_open(path, &io));
    size_t n;
    float *px = read_st(io, "images", &n);
    vp_st_close(io);
    snprintf(path, sizeof path, "%s/loss.safetensors", data);
    vt_ok(vp_st_open(path, &ref));
    fill_targets(g, ref);
    vp_st_close(ref);
    vp_gt *in[3] = {vp_model_image(m), vp_graph_find(g, "target.labels"),
                    vp_graph_find(g, "target.masks")};
    int32_t lab[6];
    float *tm = malloc(6 * 4096 * sizeof *tm);
    vt_ok(vp_graph_read(g, in[1], lab, sizeof lab));
    vt_ok(vp_graph_read(g, in[2], tm, 6 * 4096 * sizeof *tm));
    vp_verify r;
    vt_ok(vp_verify_graph(g, vp_model_loss(m), NULL, 3, in, (const void *[]){px, lab, tm}, 6,
                          &r));
    printf("note: denoising: loss %.7g (reference %.7g), gradients of %u parameters (%llu "
           "elements) within %.2g (%s)\n", r.loss_dev, r.loss_ref, r.params_checked,
           (unsigned long long)r.grad_checked, r.grad_err, r.grad_worst);
    ck_assert_msg(fabs(r.loss_dev - r.loss_ref) <= 1e-4 * fabs(r.loss_ref), "loss %g vs %g",
                  r.loss_dev, r.loss_ref);
    ck_assert_uint_eq(r.params_checked, 3);
    ck_assert_msg(r.grad_err < 2e-3, "gradient error %g at %s", r.grad_err, r.grad_worst);
    free(px);
    free(tm);
    vp_model_destroy(m);
    vt_rm_rf(dir);
}
END_TEST

static void expect_cfg_err(const char *model_json, const char *want_tail)
{
    set_data();
    char dir[4200], json[9000];
    /* the shared config with one value replaced */
    char path[4300];
    snprintf(path, sizeof path, "%s/config.json", data);
    FILE *f = fopen(path, "r");
    ck_assert_ptr_nonnull(f);
    static char text[16384];
    size_t n = fread(text, 1, sizeof text - 1, f);
    fclose(f);
    text[n] = 0;
    const char *sep = strchr(model_json, '|');
    char from[256], to[256];
    snprintf(from, sizeof from, "%.*s", (int)(sep - model_json), model_json);
    snprintf(to, sizeof to, "%s", sep + 1);
    char *at = strstr(text, from);
    ck_assert_msg(at != NULL, "config.json has no %s", from);
    static char edited[16384];
    snprintf(edited, sizeof edited, "%.*s%s%s", (int)(at - text), text, to, at + strlen(from));
    make_ckpt(dir, sizeof dir, edited);
    snprintf(json, sizeof json, "{\"model\": {\"detectron2\": \"%s\", \"image\": 64}}", dir);
    vp_model *m = (vp_model *)&m;
    ck_assert_int_ne(model_from(0, json, false, &m), VP_OK);
    ck_assert_ptr_null(m);
    const char *e = vp_error_last();
    ck_assert_msg(strstr(e, want_tail) != NULL, "error \"%s\" lacks \"%s\"", e, want_tail);
    ck_assert_msg(strstr(e, "config.json") != NULL, "error \"%s\" names no file", e);
    vt_rm_rf(dir);
}

START_TEST(test_config_errors)
{
    expect_cfg_err("\"TWO_STAGE\": true|\"TWO_STAGE\": false",
                   "MaskDINO.TWO_STAGE: false is not supported: the maskdino head builds the "
                   "two-stage query selection, TWO_STAGE");
    expect_cfg_err("\"TOTAL_NUM_FEATURE_LEVELS\": 3|\"TOTAL_NUM_FEATURE_LEVELS\": 2",
                   "SEM_SEG_HEAD.TOTAL_NUM_FEATURE_LEVELS: 2 is out of range (the encoder's 3 "
                   "backbone levels to 6)");
    expect_cfg_err("\"FEATURE_ORDER\": \"high2low\"|\"FEATURE_ORDER\": \"mid\"",
                   "SEM_SEG_HEAD.FEATURE_ORDER: \"mid\" is not one of \"high2low\" and "
                   "\"low2high\"");
    expect_cfg_err("ENCODER_IN_FEATURES\": [\n    \"res3\"|ENCODER_IN_FEATURES\": [\n    \"res4\"",
                   "SEM_SEG_HEAD.DEFORMABLE_TRANSFORMER_ENCODER_IN_FEATURES: expected the "
                   "backbone's coarsest levels in order, res3 to res5; entry 0 is \"res4\"");
    expect_cfg_err("\"INITIALIZE_BOX_TYPE\": \"bitmask\"|\"INITIALIZE_BOX_TYPE\": \"box\"",
                   "MaskDINO.INITIALIZE_BOX_TYPE: \"box\" is not one of \"bitmask\", "
                   "\"mask2box\" and \"no\"");
    expect_cfg_err("\"NORM\": \"GN\"|\"NORM\": \"BN\"",
                   "SEM_SEG_HEAD.NORM: \"BN\" is not supported");
    expect_cfg_err("\"NUM_OBJECT_QUERIES\": 10|\"NUM_OBJECT_QUERIES\": 0",
                   "MaskDINO.NUM_OBJECT_QUERIES: 0 is out of range (1 to 10000)");
}
END_TEST

int main(void)
{
    Suite *s = suite_create("maskdino");
    TCase *tc = vt_tcase("maskdino");
    tcase_set_timeout(tc, 600);
    tcase_add_test(tc, test_param_count);
    tcase_add_test(tc, test_released_shape);
    vt_add_per_device(tc, test_forward, NULL);
    vt_add_per_device(tc, test_instances, NULL);
    vt_add_per_device(tc, test_reference, NULL);
    vt_add_per_device(tc, test_loss_and_grads, NULL);
    vt_add_per_device(tc, test_sampled_loss, NULL);
    vt_add_per_device(tc, test_gradients, NULL);
    vt_add_per_device(tc, test_dn_terms, NULL);
    vt_add_per_device(tc, test_dn_gradients, NULL);
    tcase_add_test(tc, test_sites);
    tcase_add_test(tc, test_config_errors);
    suite_add_tcase(s, tc);
    return vt_run(s);
}
