/*
 * Trainer suite: the train section's checks and the learning-rate
 * schedule by value; gradient accumulation's scale; and, through the real
 * `vpeft` binary on a tiny vit + mask2former and a generated shapes
 * dataset, that a run stopped and resumed writes the same loss curve and
 * the same weights as an uninterrupted one, that a process killed while
 * checkpointing leaves a loadable checkpoint, that `vpeft eval --config`
 * and `--gt/--results` agree with training's own evaluation, that
 * `vpeft predict` writes its pictures, and the exit codes.
 */
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "harness.h"

#include "config/config.h"
#include "graph/graph.h"
#include "io/image.h"
#include "io/safetensors.h"
#include "train/train.h"
#include "util/file.h"

static const char *bin(void)
{
    const char *b = getenv("VPEFT_BIN");
    ck_assert_msg(b != NULL, "VPEFT_BIN is not set (run through make check)");
    return b;
}

static vp_config *parse(const char *text)
{
    vp_config *c;
    vt_ok(vp_cfg_parse(text, strlen(text), "t.json", &c));
    return c;
}

#define DATA "\"data\": {\"images\": \"d/images\", \"annotations\": \"d/a.json\"}"

START_TEST(test_cfg)
{
    vp_train_cfg tc;
    vp_config *c = parse("{\"train\": {" DATA "}}");
    vt_ok(vp_train_cfg_read(c, &tc));
    ck_assert_str_eq(tc.data_ann, "d/a.json");
    ck_assert_ptr_null(tc.val_ann);
    ck_assert_str_eq(tc.out, "runs/t");
    ck_assert(tc.steps == 1000 && tc.batch == 2 && tc.accum == 1 && tc.warmup == 0);
    ck_assert(tc.lr == 1e-4 && tc.weight_decay == 0.05 && tc.beta1 == 0.9 && tc.beta2 == 0.999);
    ck_assert(tc.schedule == VP_SCHED_COSINE && tc.deterministic && tc.eval_batch == 2);
    /* gradient buckets: by device unless set (25 MiB on GPUs, none on CPUs) */
    vp_device *dev = vt_device(0);
    bool cpu = vt_device_info(0)->type == VK_PHYSICAL_DEVICE_TYPE_CPU;
    ck_assert(tc.bucket_mb == -1 && vp_train_bucket_mb(&tc, dev) == (cpu ? 0 : 25));
    vp_cfg_free(c);
    c = parse("{\"train\": {" DATA ", \"bucket_mb\": 0.5}}");
    vt_ok(vp_train_cfg_read(c, &tc));
    ck_assert(vp_train_bucket_mb(&tc, dev) == 0.5);
    vp_cfg_free(c);

    static const struct {
        const char *train, *msg;
    } bad[] = {
        {"\"stpes\": 3, " DATA, "t.json: train.stpes: unknown field, did you mean 'steps'?"},
        {"\"steps\": 3", "t.json: train.data: missing: {\"format\": \"coco\", \"images\": DIR, "
                         "\"annotations\": FILE}"},
        {DATA ", \"steps\": 0", "t.json: train.steps: 0 is out of range [1, 2147483647]"},
        {DATA ", \"schedule\": \"linear\"",
         "t.json: train.schedule: \"linear\": expected \"cosine\", \"step\" or \"constant\""},
        {DATA ", \"schedule\": \"step\"", "t.json: train.milestones: missing: the steps where "
                                          "the step schedule multiplies lr by gamma"},
        {DATA ", \"milestones\": [5, 3]", "t.json: train.milestones: must increase"},
        {DATA ", \"lr_mult\": [0.1]", "t.json: train.lr_mult: expected an object of at most 16 "
                                      "\"parameter glob\": multiplier pairs"},
        {DATA ", \"lr_mult\": {\"head.*\": \"x\"}",
         "t.json: train.lr_mult[\"head.*\"]: expected a number, got a string"},
        {DATA ", \"betas\": [0.9]", "t.json: train.betas: expected [beta1, beta2]"},
        {"\"data\": {\"format\": \"voc\", \"annotations\": \"a\"}",
         "t.json: train.data.format: \"voc\": the only format is \"coco\""},
        {DATA ", \"warmup\": 5, \"steps\": 4", "t.json: train.warmup: 5 is out of range [0, 4]"},
        {DATA ", \"bucket_mb\": -2", "t.json: train.bucket_mb: -2 is out of range [0, 65536]"},
    };
    char text[512];
    for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++) {
        snprintf(text, sizeof text, "{\"train\": {%s}}", bad[i].train);
        c = parse(text);
        vt_expect_err(vp_train_cfg_read(c, &tc), VP_ERR_CONFIG, bad[i].msg);
        vp_cfg_free(c);
    }
}
END_TEST

START_TEST(test_lr)
{
    vp_train_cfg tc;
    vp_config *c = parse("{\"train\": {" DATA ", \"steps\": 110, \"warmup\": 10, \"lr\": 1e-3, "
                         "\"min_lr\": 1e-5}}");
    vt_ok(vp_train_cfg_read(c, &tc));
    ck_assert(fabs(vp_train_lr(&tc, 1) - 1e-4) < 1e-15);
    ck_assert(fabs(vp_train_lr(&tc, 5) - 5e-4) < 1e-15);
    ck_assert(fabs(vp_train_lr(&tc, 10) - 1e-3) < 1e-15);
    ck_assert(fabs(vp_train_lr(&tc, 60) - (1e-5 + 0.5 * (1e-3 - 1e-5))) < 1e-15); /* halfway */
    ck_assert(fabs(vp_train_lr(&tc, 110) - 1e-5) < 1e-15);
    double prev = 1;
    for (int s = 11; s <= 110; s++) { /* cosine decreases monotonically */
        ck_assert(vp_train_lr(&tc, s) < prev);
        prev = vp_train_lr(&tc, s);
    }
    vp_cfg_free(c);
    c = parse("{\"train\": {" DATA ", \"steps\": 100, \"lr\": 1e-3, \"schedule\": \"step\", "
              "\"milestones\": [30, 60], \"gamma\": 0.5}}");
    vt_ok(vp_train_cfg_read(c, &tc));
    ck_assert(vp_train_lr(&tc, 30) == 1e-3 && vp_train_lr(&tc, 31) == 5e-4);
    ck_assert(vp_train_lr(&tc, 60) == 5e-4 && vp_train_lr(&tc, 61) == 2.5e-4);
    vp_cfg_free(c);
}
END_TEST

/* k runs of the same batch then a step with runs = k moves the weights as
 * one run and a step does: the accumulated gradient is scaled by 1/k,
 * clipping included. */
START_TEST(test_accum)
{
    vp_device *dev = vt_device((uint32_t)_i);
    float x[8], w0[8], wa[8], wb[8];
    vt_rand(x, 8, 1);
    vt_rand(w0, 8, 2);
    for (int k = 1; k <= 3; k += 2) {
        vp_graph *g;
        vt_ok(vp_graph_create(dev, &g));
        vp_gt *in = vp_g_input(g, "x", 1, (int64_t[]){8});
        vp_gt *w = vp_g_param(g, "w", 1, (int64_t[]){8}, true);
        vp_gt *loss = vp_g_sum(g, vp_g_mul(g, vp_g_mul(g, w, w), in));
        vt_ok(vp_graph_backward(g, loss));
        vp_adamw_cfg cfg = vp_adamw_default_cfg();
        cfg.max_norm = 0.05f; /* active: the gradient norm is about 1 */
        vt_ok(vp_graph_set_optimizer(g, &cfg));
        vt_ok(vp_graph_compile(g));
        vt_ok(vp_graph_write(g, w, w0, sizeof w0));
        vt_ok(vp_graph_write(g, in, x, sizeof x));
        for (int step = 1; step <= 3; step++) {
            for (int r = 0; r < k; r++)
                vt_ok(vp_graph_run(g));
            vt_ok(vp_graph_step_accum(g, 1e-2f, step, k));
        }
        vt_ok(vp_graph_read(g, w, k == 1 ? wa : wb, sizeof wa));
        vp_graph_destroy(g);
    }
    for (int i = 0; i < 8; i++) {
        ck_assert_msg(fabsf(wa[i] - wb[i]) <= 1e-6f * fabsf(wa[i]) + 1e-7f,
                      "w[%d]: %.9g with one run per step, %.9g with three", i, (double)wa[i],
                      (double)wb[i]);
        ck_assert_msg(fabsf(wa[i] - w0[i]) > 1e-3f, "w[%d] did not move", i);
    }
}
END_TEST

/* ---- through the binary -------------------------------------------------- */

static char dir[512];

static const char *tiny_model =
    "\"model\": {\"backbone\": {\"plugin\": \"vit\", \"image\": 32, \"patch\": 8, \"width\": 32, "
    "\"depth\": 1, \"heads\": 2, \"out_channels\": 32}, "
    "\"head\": {\"plugin\": \"mask2former\", \"classes\": %d, \"queries\": 6, \"hidden\": 32, "
    "\"heads\": 2, \"encoder_layers\": 1, \"decoder_layers\": 2, \"points\": 2, "
    "\"encoder_ffn\": 64, \"decoder_ffn\": 64, \"mask_dim\": 32, \"max_targets\": 6, "
    "\"top_k\": 10}}";

/* A config in dir/name.json training on dir/B with out dir/<out>. */
static void write_config(const char *name, const char *out, int classes, const char *extra)
{
    char model[1024], text[4096], path[700];
    snprintf(model, sizeof model, tiny_model, classes);
    snprintf(text, sizeof text,
             "{%s, \"peft\": [{\"plugin\": \"lora\", \"r\": 2, \"lora_dropout\": 0.1, "
             "\"target_modules\": [\"query\", \"value\"]}], "
             "\"train\": {\"data\": {\"annotations\": "
             "\"B/annotations.json\"}, \"val\": {\"annotations\": "
             "\"B/annotations.json\"}, \"trainable\": [\"head.*\"], \"steps\": 6, \"batch\": 2, "
             "\"accum\": 2, \"lr\": 1e-3, \"warmup\": 2, \"clip_grad_norm\": 1.0, "
             "\"lr_mult\": {\"head.predictor.class_embed.*\": 0.1}, \"log_every\": 2, "
             "\"checkpoint_every\": 2, \"out\": \"%s\"%s}}",
             model, out, extra);
    snprintf(path, sizeof path, "%s/%s.json", dir, name);
    vt_ok(vp_file_write_atomic(path, text, strlen(text)));
}

static char *slurp(const char *fmt, const char *a)
{
    char path[700], *text;
    size_t n;
    snprintf(path, sizeof path, fmt, dir, a);
    vt_ok(vp_file_read(path, &text, &n));
    return text;
}

static void setup_data(void)
{
    const char *tmp = getenv("TMPDIR");
    snprintf(dir, sizeof dir, "%s/vpeft-train-XXXXXX", tmp ? tmp : "/tmp");
    ck_assert_ptr_nonnull(mkdtemp(dir));
    ck_assert_int_eq(vt_sh("%s make-shapes --out %s/B --domain B --n 6 --size 32 --seed 3", bin(),
                           dir), 0);
}

START_TEST(test_resume)
{
    setup_data();
    write_config("c", "U", 6, "");
    write_config("r", "R", 6, "");
    /* uninterrupted */
    ck_assert_msg(vt_sh("cd %s && %s train c.json", dir, bin()) == 0, "%s", vt_err);
    vt_assert_has(vt_out, "trained 6 steps");
    vt_assert_has(vt_err, "train step 6/6 loss ");
    /* stopped after step 3 (between checkpoints), then resumed */
    ck_assert_msg(vt_sh("cd %s && %s train r.json --stop-after 3", dir, bin()) == 0, "%s", vt_err);
    vt_assert_has(vt_err, "stopped after step 3");
    char *partial = slurp("%s/%s/log.jsonl", "R");
    ck_assert_ptr_nonnull(strstr(partial, "{\"step\": 3,"));
    ck_assert_ptr_null(strstr(partial, "{\"step\": 4,"));
    free(partial);
    ck_assert_msg(vt_sh("cd %s && %s train r.json --resume", dir, bin()) == 0, "%s", vt_err);
    vt_assert_has(vt_err, "resuming at step 3 of 6");
    char *u = slurp("%s/%s/log.jsonl", "U"), *r = slurp("%s/%s/log.jsonl", "R");
    ck_assert_msg(!strcmp(u, r), "the loss curves differ:\nuninterrupted:\n%s\nresumed:\n%s", u, r);
    ck_assert_ptr_nonnull(strstr(u, "{\"step\": 6,"));
    free(u);
    free(r);
    /* the same final weights, bit for bit */
    char pu[700], pr[700];
    snprintf(pu, sizeof pu, "%s/U/model.safetensors", dir);
    snprintf(pr, sizeof pr, "%s/R/model.safetensors", dir);
    vp_st *a, *b;
    vt_ok(vp_st_open(pu, &a));
    vt_ok(vp_st_open(pr, &b));
    ck_assert_uint_eq(vp_st_count(a), vp_st_count(b));
    for (size_t i = 0; i < vp_st_count(a); i++) {
        const vp_st_tensor *ta = vp_st_get(a, i), *tb = vp_st_get(b, i);
        ck_assert_str_eq(ta->name, tb->name);
        ck_assert_msg(ta->nbytes == tb->nbytes && !memcmp(ta->data, tb->data, ta->nbytes),
                      "%s differs after resuming", ta->name);
    }
    vp_st_close(a);
    vp_st_close(b);
    /* the adapter in HF PEFT's layout, metrics with the evaluation */
    char *meta = slurp("%s/%s/metrics.json", "U");
    vt_assert_has(meta, "\"segm\"");
    vt_assert_has(meta, "\"trainable_params\"");
    free(meta);
    char *acfg = slurp("%s/%s/adapter/adapter_config.json", "U");
    vt_assert_has(acfg, "\"peft_type\"");
    free(acfg);

    /* resuming what is finished, or a run of another model: errors */
    ck_assert_int_eq(vt_sh("cd %s && %s train c.json --resume", dir, bin()), 1);
    vt_assert_has(vt_err, "U/checkpoint.safetensors: already at step 6 of 6");
    write_config("c2", "U", 7, "");
    ck_assert_int_eq(vt_sh("cd %s && %s train c2.json --resume", dir, bin()), 2);
    vt_assert_has(vt_err, "U/checkpoint.safetensors: written by a run with another model");

    /* evaluation from the CLI agrees with training's */
    ck_assert_msg(vt_sh("cd %s && %s eval --config c.json --weights U/model.safetensors "
                        "--out E.json", dir, bin()) == 0, "%s", vt_err);
    char line[256];
    snprintf(line, sizeof line, "%s", strstr(vt_out, "Average Precision  (AP) @[ IoU=0.50:0.95 | "
                                                     "area=   all"));
    ck_assert_int_eq(vt_sh("cd %s && %s eval --gt B/annotations.json --results U/results.json",
                           dir, bin()), 0);
    ck_assert_msg(!strncmp(line, strstr(vt_out, "Average Precision  (AP) @[ IoU=0.50:0.95 | "
                                                "area=   all"), 80),
                  "eval --config and training's results differ:\n%s\n%s", line, vt_out);

    /* the same with the PEFT methods loaded from the adapter directory */
    ck_assert_msg(vt_sh("cd %s && %s eval --config c.json --weights U/model.safetensors "
                        "--adapter U/adapter --out E2.json", dir, bin()) == 0, "%s", vt_err);
    ck_assert_msg(!strncmp(line, strstr(vt_out, "Average Precision  (AP) @[ IoU=0.50:0.95 | "
                                                "area=   all"), 80),
                  "eval --adapter and training's results differ:\n%s\n%s", line, vt_out);
    ck_assert_int_eq(vt_sh("cd %s && %s eval --config c.json --adapter nowhere", dir, bin()), 1);
    vt_assert_has(vt_err, "nowhere");

    /* pictures */
    ck_assert_msg(vt_sh("cd %s && %s predict --config c.json --weights U/model.safetensors "
                        "--out P --threshold 0 B/images/000001.png B/images/000002.png", dir,
                        bin()) == 0, "%s", vt_err);
    vt_assert_has(vt_out, "B/images/000001.png: ");
    char png[700];
    snprintf(png, sizeof png, "%s/P/000001.png", dir);
    vp_image im;
    vt_ok(vp_image_load(png, &im));
    ck_assert(im.w == 256 && im.h == 256); /* 32 x 32, enlarged 8 times to be readable */
    vp_image_free(&im);
    vt_rm_rf(dir);
}
END_TEST

/* A process killed while it checkpoints every step leaves either no
 * checkpoint or a complete one, which a resumed run finishes from. */
START_TEST(test_kill)
{
    setup_data();
    write_config("k", "K", 6, "");
    /* kill -9 once the log shows a few steps */
    ck_assert_int_eq(vt_sh("cd %s && { %s train k.json --quiet --set train.checkpoint_every=1 --set train.steps=40 & p=$!; "
                           "for i in $(seq 600); do n=$(cat K/log.jsonl 2>/dev/null | wc -l); "
                           "[ \"$n\" -ge 5 ] && break; sleep 0.05; done; kill -9 $p; wait $p; "
                           "true; }", dir, bin()), 0);
    char ck[700];
    snprintf(ck, sizeof ck, "%s/K/checkpoint.safetensors", dir);
    vp_st *f;
    vt_ok(vp_st_open(ck, &f)); /* complete: every header and size checks out */
    long long step = atoll(vp_st_meta(f, "vpeft.step"));
    ck_assert(step >= 4 && step < 40);
    vp_st_close(f);
    ck_assert_msg(vt_sh("cd %s && %s train k.json --resume --set train.steps=40 --set train.checkpoint_every=1 --quiet", dir,
                        bin()) == 0, "%s", vt_err);
    char *log = slurp("%s/%s/log.jsonl", "K");
    int lines = 0;
    for (char *p = log; (p = strchr(p, '\n')); p++)
        lines++;
    ck_assert_int_eq(lines, 40); /* every step once: the killed run's extra lines dropped */
    free(log);
    /* a temporary file the kill may have left is gone */
    ck_assert_int_eq(vt_sh("ls -a %s/K | grep -c '\\.tmp\\.' || true", dir), 0);
    ck_assert_str_eq(vt_out, "0\n");
    vt_rm_rf(dir);
}
END_TEST

START_TEST(test_errors)
{
    setup_data();
    write_config("few", "F", 2, "");
    ck_assert_int_eq(vt_sh("cd %s && %s train few.json", dir, bin()), 2);
    vt_assert_has(vt_err, "few.json: model.head.classes: 2, but B/annotations.json has ");
    ck_assert_int_eq(vt_sh("cd %s && %s train nothing.json", dir, bin()), 2);
    vt_assert_has(vt_err, "nothing.json");
    ck_assert_int_eq(vt_sh("cd %s && %s train few.json --set train.stpes=3", dir, bin()), 2);
    vt_assert_has(vt_err, "did you mean 'steps'?");
    write_config("fresh", "N", 6, "");
    ck_assert_int_eq(vt_sh("cd %s && %s train fresh.json --resume", dir, bin()), 1);
    vt_assert_has(vt_err, "N/checkpoint.safetensors: no checkpoint to resume from");
    ck_assert_int_eq(vt_sh("%s train", bin()), 2);
    ck_assert_int_eq(vt_sh("%s train --help", bin()), 0);
    vt_assert_has(vt_out, "usage: vpeft train CONFIG");
    ck_assert_int_eq(vt_sh("%s eval --config x.json --gt y.json", bin()), 2);
    ck_assert_int_eq(vt_sh("%s predict --config x.json --out d", bin()), 2);
    vt_assert_has(vt_err, "which images?");
    ck_assert_int_eq(vt_sh("%s demo --methods full,nonsense", bin()), 2);
    vt_assert_has(vt_err, "unknown method 'nonsense'");
    vt_rm_rf(dir);
}
END_TEST

int main(void)
{
    Suite *s = suite_create("train");
    TCase *tc = vt_tcase("train");
    tcase_set_timeout(tc, 600);
    tcase_add_test(tc, test_cfg);
    tcase_add_test(tc, test_lr);
    vt_add_per_device(tc, test_accum, NULL);
    tcase_add_test(tc, test_resume);
    tcase_add_test(tc, test_kill);
    tcase_add_test(tc, test_errors);
    suite_add_tcase(s, tc);
    return vt_run(s);
}
