/*
 * The trainer when things go wrong (docs/training.md, "Interruptions,
 * signals and non-finite values"), through the real `vpeft` binary on a
 * tiny vit + mask2former and a generated shapes dataset:
 *
 * - a run whose outputs are missing after its last checkpoint (a run that
 *   died between the final checkpoint and them) is completed by --resume:
 *   the final evaluation and every missing file, the same bytes as the
 *   uninterrupted run's;
 * - SIGINT and SIGTERM: the step finishes, its checkpoint is written, the
 *   exact resume command is printed, the exit status is 130 / 143, and
 *   running that command ends with the uninterrupted run's log, weights and
 *   results to the byte; a second signal exits at once; under mpirun a
 *   SIGTERM to one rank stops both at the same step (when Open MPI is
 *   installed);
 * - weights with a NaN or an infinity are refused naming the file and the
 *   tensor: model.weights, vpeft eval --weights and --adapter, a
 *   checkpoint on --resume (a parameter, AdamW's moments), a Hugging Face
 *   checkpoint, a plugin's own weights file (vit's backbone.weights);
 * - a non-finite loss (a frozen-in no-object logit of 3e38 overflows the
 *   class loss of every image with an instance, while the matcher's
 *   probabilities stay finite) stops the run naming the step before its
 *   update, or, with train.skip_nonfinite, is skipped with a warning; a
 *   run whose every step is skipped ends with its initial weights, bit for
 *   bit; so does a NaN matching cost (infinite mask logits): the matcher
 *   warns and makes the loss NaN rather than ending the run on its own.
 */
#include <errno.h>
#include <fcntl.h>
#include <math.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include "harness.h"

#include "config/config.h"
#include "dist/dist.h"
#include "io/safetensors.h"
#include "train/train.h"
#include "util/error.h"
#include "util/file.h"

static const char *bin(void)
{
    const char *b = getenv("VPEFT_BIN");
    ck_assert_msg(b != NULL, "VPEFT_BIN is not set (run through make check)");
    return b;
}

static char dir[512];

/* s in buf, with buf's end when not */
#define has(buf, s)                                                                             \
    ck_assert_msg(strstr((buf), (s)) != NULL, "expected '%s' in:\n...%.3000s", (s),             \
                  strlen(buf) > 3000 ? (buf) + strlen(buf) - 3000 : (buf))

static const char *tiny_model =
    "\"model\": {%s\"backbone\": {\"plugin\": \"vit\", \"image\": 32, \"patch\": 8, "
    "\"width\": 32, \"depth\": 1, \"heads\": 2, \"out_channels\": 32}, "
    "\"head\": {\"plugin\": \"mask2former\", \"classes\": 6, \"queries\": 6, \"hidden\": 32, "
    "\"heads\": 2, \"encoder_layers\": 1, \"decoder_layers\": 2, \"points\": 2, "
    "\"encoder_ffn\": 64, \"decoder_ffn\": 64, \"mask_dim\": 32, \"max_targets\": 6, "
    "\"top_k\": 10}}";

/* dir/name.json: the tiny model (with model.weights when weights is not
 * NULL) and LoRA, training on B/<ann> into out; extra: more train keys
 * (starting with ", "). */
static void write_config(const char *name, const char *ann, const char *weights,
                         const char *out, const char *extra)
{
    char w[600] = "", model[1500], text[4096], path[700];
    if (weights)
        snprintf(w, sizeof w, "\"weights\": \"%s\", ", weights);
    snprintf(model, sizeof model, tiny_model, w);
    snprintf(text, sizeof text,
             "{%s, \"peft\": [{\"plugin\": \"lora\", \"r\": 2, \"lora_dropout\": 0.1, "
             "\"target_modules\": [\"query\", \"value\"]}], "
             "\"train\": {\"data\": {\"annotations\": \"B/%s\"}, \"trainable\": [\"head.*\"], "
             "%s%s\"lr\": 1e-3, \"warmup\": 1, \"clip_grad_norm\": 1.0, \"out\": \"%s\"%s}}",
             model, ann, strstr(extra, "\"batch\"") ? "" : "\"batch\": 2, ",
             strstr(extra, "\"accum\"") ? "" : "\"accum\": 2, ", out, extra);
    snprintf(path, sizeof path, "%s/%s.json", dir, name);
    vt_ok(vp_file_write_atomic(path, text, strlen(text)));
}

#define VAL ", \"val\": {\"annotations\": \"B/annotations.json\"}"

static void setup_data(void)
{
    const char *tmp = getenv("TMPDIR");
    snprintf(dir, sizeof dir, "%s/vpeft-hard-XXXXXX", tmp ? tmp : "/tmp");
    ck_assert_ptr_nonnull(mkdtemp(dir));
    ck_assert_int_eq(vt_sh("%s make-shapes --out %s/B --domain B --n 6 --size 32 --seed 3", bin(),
                           dir), 0);
}

static char *slurp(const char *rel)
{
    char path[1200], *text;
    size_t n;
    snprintf(path, sizeof path, "%s/%s", dir, rel);
    vt_ok(vp_file_read(path, &text, &n));
    return text;
}

static bool exists(const char *rel)
{
    char path[1200];
    snprintf(path, sizeof path, "%s/%s", dir, rel);
    return access(path, F_OK) == 0;
}

static void same_file(const char *a, const char *b)
{
    ck_assert_msg(vt_sh("cd %s && cmp %s %s", dir, a, b) == 0, "%s and %s differ: %s", a, b,
                  vt_out);
}

static int lines(const char *rel)
{
    char *t = slurp(rel);
    int n = 0;
    for (char *p = t; (p = strchr(p, '\n')); p++)
        n++;
    free(t);
    return n;
}

static long long ckpt_step(const char *rel)
{
    char path[1200];
    snprintf(path, sizeof path, "%s/%s", dir, rel);
    vp_st *f;
    vt_ok(vp_st_open(path, &f));
    long long s = atoll(vp_st_meta(f, "vpeft.step"));
    vp_st_close(f);
    return s;
}

/* Every tensor of a safetensors file finite. */
static void all_finite(const char *rel)
{
    char path[1200];
    snprintf(path, sizeof path, "%s/%s", dir, rel);
    vp_st *f;
    vt_ok(vp_st_open(path, &f));
    for (size_t i = 0; i < vp_st_count(f); i++) {
        const vp_st_tensor *t = vp_st_get(f, i);
        float *x = malloc(t->nelem * sizeof *x);
        vt_ok(vp_st_read_f32(f, t->name, x, t->nelem));
        for (uint64_t k = 0; k < t->nelem; k++)
            ck_assert_msg(isfinite(x[k]), "%s: %s[%llu] = %g", rel, t->name,
                          (unsigned long long)k, (double)x[k]);
        free(x);
    }
    vp_st_close(f);
}

/* src copied to dst (paths absolute or under dir), metadata included, as
 * F32, with element idx of tensor name set to value. */
static void poke(const char *src, const char *dst, const char *name, uint64_t idx, float value)
{
    char ps[1200], pd[1200];
    snprintf(ps, sizeof ps, "%s%s%s", src[0] == '/' ? "" : dir, src[0] == '/' ? "" : "/", src);
    snprintf(pd, sizeof pd, "%s%s%s", dst[0] == '/' ? "" : dir, dst[0] == '/' ? "" : "/", dst);
    vp_st *f;
    vt_ok(vp_st_open(ps, &f));
    size_t n = vp_st_count(f), nm = vp_st_meta_count(f);
    vp_st_entry *e = calloc(n, sizeof *e);
    float **bufs = calloc(n, sizeof *bufs);
    vp_st_kv *kv = calloc(nm + 1, sizeof *kv);
    bool found = false;
    for (size_t i = 0; i < n; i++) {
        const vp_st_tensor *t = vp_st_get(f, i);
        if (t->dtype != VP_ST_F32 && t->dtype != VP_ST_F16 && t->dtype != VP_ST_BF16) {
            e[i] = (vp_st_entry){t->name, t->dtype, t->ndim, t->shape, t->data}; /* as it is */
            continue;
        }
        bufs[i] = malloc((t->nelem ? t->nelem : 1) * sizeof(float));
        vt_ok(vp_st_read_f32(f, t->name, bufs[i], t->nelem));
        if (!strcmp(t->name, name)) {
            ck_assert(idx < t->nelem);
            bufs[i][idx] = value;
            found = true;
        }
        e[i] = (vp_st_entry){t->name, VP_ST_F32, t->ndim, t->shape, bufs[i]};
    }
    ck_assert_msg(found, "%s: no tensor %s", ps, name);
    for (size_t i = 0; i < nm; i++)
        kv[i] = (vp_st_kv){vp_st_meta_key(f, i), vp_st_meta(f, vp_st_meta_key(f, i))};
    vt_ok(vp_st_write(pd, e, n, kv, nm));
    for (size_t i = 0; i < n; i++)
        free(bufs[i]);
    free(bufs);
    free(e);
    free(kv);
    vp_st_close(f);
}

/* ---- a child vpeft that the test signals ---------------------------------- */

/* argv (NULL-terminated) run in dir with the default dispositions of
 * SIGINT and SIGTERM (a shell's background job would ignore SIGINT),
 * stdout and stderr into dir/<tag>.out and .err. */
static pid_t spawn(char *const *argv, const char *tag)
{
    char po[700], pe[700];
    snprintf(po, sizeof po, "%s/%s.out", dir, tag);
    snprintf(pe, sizeof pe, "%s/%s.err", dir, tag);
    fflush(NULL);
    pid_t p = fork();
    ck_assert_int_ge(p, 0);
    if (p == 0) {
        int o = open(po, O_WRONLY | O_CREAT | O_TRUNC, 0644),
            e = open(pe, O_WRONLY | O_CREAT | O_TRUNC, 0644);
        if (o < 0 || e < 0 || dup2(o, 1) < 0 || dup2(e, 2) < 0 || chdir(dir))
            _exit(126);
        signal(SIGINT, SIG_DFL);
        signal(SIGTERM, SIG_DFL);
        sigset_t none;
        sigemptyset(&none);
        sigprocmask(SIG_SETMASK, &none, NULL);
        execvp(argv[0], argv);
        _exit(127);
    }
    return p;
}

static void sleep_ms(long ms)
{
    struct timespec t = {ms / 1000, (ms % 1000) * 1000000L};
    nanosleep(&t, NULL);
}

static double now_s(void)
{
    struct timespec t;
    clock_gettime(CLOCK_MONOTONIC, &t);
    return (double)t.tv_sec + 1e-9 * (double)t.tv_nsec;
}

/* Wait (at most 300 s) until dir/<tag>.err holds s. */
static void wait_for(pid_t p, const char *tag, const char *s)
{
    char rel[64];
    snprintf(rel, sizeof rel, "%s.err", tag);
    char path[1200];
    snprintf(path, sizeof path, "%s/%s", dir, rel);
    for (double t0 = now_s(); now_s() - t0 < 300; sleep_ms(20)) {
        char *e;
        size_t n;
        if (vp_file_read(path, &e, &n))
            continue; /* not created yet */
        bool found = strstr(e, s) != NULL;
        if (!found && waitpid(p, NULL, WNOHANG) == p)
            ck_abort_msg("the run ended before '%s':\n%s", s, e);
        free(e);
        if (found)
            return;
    }
    kill(p, SIGKILL);
    ck_abort_msg("no '%s' in %s within 300 s", s, rel);
}

/* The exit status of p (128 + n: killed by signal n), waiting at most 300 s. */
static int finish(pid_t p)
{
    int ws = 0;
    for (double t0 = now_s(); now_s() - t0 < 300; sleep_ms(10)) {
        pid_t r = waitpid(p, &ws, WNOHANG);
        if (r == p)
            return WIFEXITED(ws) ? WEXITSTATUS(ws) : 128 + WTERMSIG(ws);
    }
    kill(p, SIGKILL);
    waitpid(p, &ws, 0);
    ck_abort_msg("the run did not end within 300 s");
    return -1;
}

/* ---- the train.skip_nonfinite key -------------------------------------------- */

START_TEST(test_cfg)
{
    vp_train_cfg tc;
    vp_config *c;
    static const char base[] = "{\"train\": {\"data\": {\"images\": \"d\", \"annotations\": "
                               "\"d/a.json\"}%s}}";
    char text[512];
    snprintf(text, sizeof text, base, "");
    vt_ok(vp_cfg_parse(text, strlen(text), "t.json", &c));
    vt_ok(vp_train_cfg_read(c, &tc));
    ck_assert(!tc.skip_nonfinite);
    vp_cfg_free(c);
    snprintf(text, sizeof text, base, ", \"skip_nonfinite\": true");
    vt_ok(vp_cfg_parse(text, strlen(text), "t.json", &c));
    vt_ok(vp_train_cfg_read(c, &tc));
    ck_assert(tc.skip_nonfinite);
    vp_cfg_free(c);
    snprintf(text, sizeof text, base, ", \"skip_nonfinite\": 1");
    vt_ok(vp_cfg_parse(text, strlen(text), "t.json", &c));
    ck_assert_int_eq(vp_train_cfg_read(c, &tc), VP_ERR_CONFIG);
    has(vp_error_last(), "t.json: train.skip_nonfinite: expected a boolean");
    vp_cfg_free(c);
    snprintf(text, sizeof text, base, ", \"skip_nonfinte\": true");
    vt_ok(vp_cfg_parse(text, strlen(text), "t.json", &c));
    ck_assert_int_eq(vp_train_cfg_read(c, &tc), VP_ERR_CONFIG);
    has(vp_error_last(), "did you mean 'skip_nonfinite'?");
    vp_cfg_free(c);
    ck_assert_int_eq(vt_sh("%s train --help", bin()), 0);
    has(vt_out, "train.skip_nonfinite");
    has(vt_out, "130 or 143");
}
END_TEST

/* ---- outputs missing after the last checkpoint ---------------------------- */

START_TEST(test_complete)
{
    setup_data();
    write_config("c", "annotations.json", NULL, "U", ", \"steps\": 6, \"log_every\": 2" VAL);
    ck_assert_msg(vt_sh("cd %s && %s train c.json", dir, bin()) == 0, "%s", vt_err);
    ck_assert_int_eq(vt_sh("cd %s && cp -r U O && rm -r U/model.safetensors U/results.json "
                           "U/metrics.json U/adapter", dir), 0);
    /* as a run killed after its final checkpoint leaves it */
    ck_assert_int_eq(ckpt_step("U/checkpoint.safetensors"), 6);
    ck_assert_msg(vt_sh("cd %s && %s train c.json --resume", dir, bin()) == 0, "%s", vt_err);
    has(vt_err, "U/checkpoint.safetensors holds the last step (6), but results.json, "
                "model.safetensors, adapter/, metrics.json are missing");
    has(vt_out, "completed the outputs of step 6 from its checkpoint; mask AP ");
    same_file("U/model.safetensors", "O/model.safetensors");
    same_file("U/results.json", "O/results.json");
    same_file("U/adapter/adapter_model.safetensors", "O/adapter/adapter_model.safetensors");
    same_file("U/log.jsonl", "O/log.jsonl");
    char *m = slurp("U/metrics.json"), *o = slurp("O/metrics.json");
    has(m, "\"segm\"");
    /* the final loss comes from the log: the same to its 9 digits */
    double fm = atof(strstr(m, "\"final_loss\":") + 13), fo = atof(strstr(o, "\"final_loss\":") + 13);
    ck_assert_msg(fabs(fm - fo) <= 1e-7 * fabs(fo), "final_loss %.9g, was %.9g", fm, fo);
    free(m);
    free(o);
    /* one file missing: that one */
    ck_assert_int_eq(vt_sh("rm %s/U/metrics.json", dir), 0);
    ck_assert_msg(vt_sh("cd %s && %s train c.json --resume --quiet", dir, bin()) == 0, "%s",
                  vt_err);
    has(vt_err, "but metrics.json is missing");
    ck_assert(exists("U/metrics.json"));
    same_file("U/results.json", "O/results.json");
    /* everything there: nothing to resume */
    ck_assert_int_eq(vt_sh("cd %s && %s train c.json --resume", dir, bin()), 1);
    has(vt_err, "U/checkpoint.safetensors: already at step 6 of 6, with every output written: "
                "nothing to resume");
    vt_rm_rf(dir);
}
END_TEST

/* ---- signals ------------------------------------------------------------------- */

#define SIG_RUN ", \"steps\": 30, \"log_every\": 1, \"checkpoint_every\": 0" VAL

/* A run of s.json into out, signalled with sig once its third step is
 * logged: its status, the step it stopped after, and the resume command it
 * printed, which is then run. (A device fast enough to reach the last step
 * first stops there, before the final evaluation: resuming completes it.) */
static void signalled(int sig, const char *out, const char *name)
{
    char setv[64], tag[16];
    snprintf(setv, sizeof setv, "train.out=\"%s\"", out); /* a value the hint must quote */
    snprintf(tag, sizeof tag, "sig%d", sig);
    char *argv[] = {(char *)bin(), "train", "s.json", "--set", setv, NULL};
    pid_t p = spawn(argv, tag);
    wait_for(p, tag, "train step 3/30");
    kill(p, sig);
    int rc = finish(p);
    char rel[64];
    snprintf(rel, sizeof rel, "%s.err", tag);
    char *err = slurp(rel);
    ck_assert_msg(rc == 128 + sig, "%s: exit %d, expected %d:\n%s", name, rc, 128 + sig, err);
    has(err, "vpeft: interrupted: finishing the step, then writing a checkpoint");
    char want[128];
    snprintf(want, sizeof want, "vpeft: stopped by %s after step ", name);
    has(err, want);
    long long after = atoll(strstr(err, want) + strlen(want));
    ck_assert(after >= 3 && after <= 30);
    snprintf(rel, sizeof rel, "%s/checkpoint.safetensors", out);
    ck_assert_int_eq(ckpt_step(rel), after); /* checkpoint_every 0: the signal's */
    snprintf(rel, sizeof rel, "%s/log.jsonl", out);
    ck_assert_int_eq(lines(rel), after);
    snprintf(rel, sizeof rel, "%s/model.safetensors", out);
    ck_assert(!exists(rel));
    /* the exact command, as printed */
    const char *h = strstr(err, "Resume with:\n    ");
    ck_assert_ptr_nonnull(h);
    char cmd[2048];
    snprintf(cmd, sizeof cmd, "%.*s", (int)strcspn(h + 17, "\n"), h + 17);
    char expect[2048];
    snprintf(expect, sizeof expect, "%s train s.json --set 'train.out=\"%s\"' --resume", bin(),
             out);
    ck_assert_str_eq(cmd, expect);
    free(err);
    ck_assert_msg(vt_sh("cd %s && %s", dir, cmd) == 0, "%s: %s", cmd, vt_err);
    if (after < 30)
        snprintf(want, sizeof want, "resuming at step %lld of 30", after);
    else
        snprintf(want, sizeof want, "holds the last step (30)");
    has(vt_err, want);
}

START_TEST(test_signals)
{
    setup_data();
    write_config("s", "annotations.json", NULL, "U", SIG_RUN);
    ck_assert_msg(vt_sh("cd %s && %s train s.json --quiet", dir, bin()) == 0, "%s", vt_err);
    signalled(SIGINT, "I", "SIGINT");
    signalled(SIGTERM, "T", "SIGTERM");
    static const char *const files[] = {"log.jsonl", "model.safetensors", "results.json",
                                        "adapter/adapter_model.safetensors"};
    for (int i = 0; i < 4; i++)
        for (int k = 0; k < 2; k++) {
            char a[128], b[128];
            snprintf(a, sizeof a, "U/%s", files[i]);
            snprintf(b, sizeof b, "%s/%s", k ? "T" : "I", files[i]);
            same_file(a, b);
        }
    vt_rm_rf(dir);
}
END_TEST

/* A second signal ends the process at once: mid-step, no checkpoint. The
 * two come back to back (the first step of 8 runs of 8 images is far from
 * over); the kernel may deliver either first. */
START_TEST(test_second_signal)
{
    setup_data();
    /* slow steps: 8 runs of 8 images */
    write_config("s2", "annotations.json", NULL, "S",
                 ", \"steps\": 1000, \"batch\": 8, \"accum\": 8, \"log_every\": 1, "
                 "\"checkpoint_every\": 0");
    char *argv[] = {(char *)bin(), "train", "s2.json", NULL};
    pid_t p = spawn(argv, "two");
    wait_for(p, "two", "train step 1/1000");
    double t0 = now_s();
    kill(p, SIGTERM);
    kill(p, SIGINT);
    int rc = finish(p);
    double took = now_s() - t0;
    char *err = slurp("two.err");
    ck_assert_msg(rc == 130 || rc == 143, "exit %d, expected 130 or 143:\n%s", rc, err);
    has(err, "vpeft: interrupted again: exiting now, without a new checkpoint");
    ck_assert_ptr_null(strstr(err, "stopped by"));
    ck_assert(!exists("S/checkpoint.safetensors"));
    ck_assert_msg(took < 5, "the second signal took %.1f s to end the process", took);
    printf("second signal: exit %d after %.3f s\n", rc, took);
    free(err);
    vt_rm_rf(dir);
}
END_TEST

/* Under mpirun, a SIGTERM to rank 1 alone stops both ranks after the same
 * step; resuming under mpirun ends as the uninterrupted job does. */
START_TEST(test_dist_signal)
{
    if (!vp_dist_built() || vt_sh("mpirun --version | grep -q 'Open MPI'") != 0) {
        vt_skip("test_dist_signal", "-", "needs vpeft built with MPI and Open MPI's mpirun");
        return;
    }
    setup_data();
    write_config("d", "annotations.json", NULL, "DU",
                 ", \"steps\": 40, \"log_every\": 1, \"checkpoint_every\": 0");
#define MPIRUN "LP_NUM_THREADS=1 exec mpirun --allow-run-as-root --oversubscribe " \
               "-x LP_NUM_THREADS --mca mpi_yield_when_idle 1 -np 2 "
    ck_assert_msg(vt_sh("cd %s && " MPIRUN "%s train d.json --quiet", dir, bin()) == 0, "%s",
                  vt_err);
    char cmd[1024];
    snprintf(cmd, sizeof cmd, MPIRUN "%s train d.json --set 'train.out=\"DS\"'", bin());
    char *argv[] = {"/bin/sh", "-c", cmd, NULL};
    pid_t p = spawn(argv, "dist");
    wait_for(p, "dist", "train step 3/40");
    /* rank 1: the process whose environment says so */
    ck_assert_int_eq(vt_sh("for p in $(pgrep -f 'train d.json --set'); do tr '\\0' '\\n' "
                           "< /proc/$p/environ 2>/dev/null | grep -qx OMPI_COMM_WORLD_RANK=1 "
                           "&& echo $p; done; true"), 0);
    int r1 = atoi(vt_out);
    ck_assert_msg(r1 > 0, "rank 1 not found: %s", vt_out);
    kill(r1, SIGTERM);
    int rc = finish(p);
    char *err = slurp("dist.err");
    ck_assert_msg(rc != 0, "mpirun exited 0:\n%s", err);
    has(err, "vpeft: stopped by SIGTERM after step ");
    long long after = atoll(strstr(err, "after step ") + 11);
    has(err, "Resume with (under the same launcher");
    ck_assert_int_eq(ckpt_step("DS/checkpoint.safetensors"), after);
    ck_assert_int_eq(lines("DS/log.jsonl"), after);
    free(err);
    ck_assert_msg(vt_sh("cd %s && " MPIRUN "%s train d.json --set 'train.out=\"DS\"' --resume "
                        "--quiet", dir, bin()) == 0, "%s", vt_err);
    same_file("DU/log.jsonl", "DS/log.jsonl");
    same_file("DU/model.safetensors", "DS/model.safetensors");
    printf("mpirun, SIGTERM to rank 1: both stopped after step %lld, mpirun exit %d\n", after,
           rc);
    vt_rm_rf(dir);
}
END_TEST

/* ---- non-finite weights ----------------------------------------------------- */

START_TEST(test_nonfinite_weights)
{
    setup_data();
    write_config("w", "annotations.json", NULL, "W", ", \"steps\": 2, \"checkpoint_every\": 1" VAL);
    ck_assert_msg(vt_sh("cd %s && %s train w.json --quiet", dir, bin()) == 0, "%s", vt_err);
    static const char qkv[] = "backbone.encoder.layer.0.attention.attention.query.weight";
    /* model.weights */
    poke("W/model.safetensors", "nan.safetensors", qkv, 5, NAN);
    write_config("n", "annotations.json", "nan.safetensors", "N", ", \"steps\": 2");
    ck_assert_int_eq(vt_sh("cd %s && %s train n.json", dir, bin()), 2);
    has(vt_err, "nan.safetensors: tensor \"backbone.encoder.layer.0.attention.attention.query."
                "weight\" holds NaN at element 5 of 1024: refusing non-finite weights");
    ck_assert(!exists("N/log.jsonl"));
    /* vpeft eval --weights, and an adapter with an infinity */
    ck_assert_int_eq(vt_sh("cd %s && %s eval --config w.json --weights nan.safetensors", dir,
                           bin()), 2);
    has(vt_err, "nan.safetensors: tensor \"backbone.encoder.layer.0.attention.attention.query."
                "weight\" holds NaN at element 5");
    static const char lora_b[] =
        "base_model.model.backbone.encoder.layer.0.attention.attention.value.lora_B.weight";
    ck_assert_int_eq(vt_sh("cd %s && cp -r W/adapter A", dir), 0);
    poke("W/adapter/adapter_model.safetensors", "A/adapter_model.safetensors", lora_b, 0,
         -INFINITY);
    ck_assert_int_ne(vt_sh("cd %s && %s eval --config w.json --weights W/model.safetensors "
                           "--adapter A", dir, bin()), 0);
    has(vt_err, "A/adapter_model.safetensors: tensor \"" );
    has(vt_err, "lora_B.weight\" holds -Inf at element 0 of ");
    /* a checkpoint: a parameter, or AdamW's moments */
    static const char cls[] = "head.predictor.class_embed.weight";
    poke("W/checkpoint.safetensors", "W/checkpoint.safetensors", cls, 3, INFINITY);
    ck_assert_int_eq(vt_sh("cd %s && %s train w.json --resume --set train.steps=3", dir, bin()),
                     2);
    has(vt_err, "W/checkpoint.safetensors: tensor \"head.predictor.class_embed.weight\" holds "
                "+Inf at element 3 of 224: refusing non-finite weights");
    poke("W/checkpoint.safetensors", "W/checkpoint.safetensors", cls, 3, 0.5f);
    poke("W/checkpoint.safetensors", "W/checkpoint.safetensors", "vpeft.adamw.v", 7, NAN);
    ck_assert_int_eq(vt_sh("cd %s && %s train w.json --resume --set train.steps=3", dir, bin()),
                     2);
    has(vt_err, "W/checkpoint.safetensors: tensor \"vpeft.adamw.v\" holds NaN at element 7");
    /* a Hugging Face checkpoint */
    const char *src = getenv("VPEFT_SRCDIR");
    char data[1024];
    snprintf(data, sizeof data, "%s/tests/data/hf-mask2former", src ? src : "..");
    ck_assert_int_eq(vt_sh("mkdir %s/hf && ln -s %s/shared_config.json %s/hf/config.json", dir,
                           data, dir), 0);
    char shared[1200];
    snprintf(shared, sizeof shared, "%s/shared_weights.safetensors", data);
    vp_st *f;
    vt_ok(vp_st_open(shared, &f));
    const char *first = vp_st_get(f, 0)->name;
    char key[512];
    snprintf(key, sizeof key, "%s", first);
    vp_st_close(f);
    poke(shared, "hf/model.safetensors", key, 0, NAN);
    char text[600];
    snprintf(text, sizeof text, "{\"model\": {\"hf\": \"hf\"}}");
    char path[700];
    snprintf(path, sizeof path, "%s/hfrun.json", dir);
    vt_ok(vp_file_write_atomic(path, text, strlen(text)));
    ck_assert_int_eq(vt_sh("cd %s && %s forward --config hfrun.json --input "
                           "%s/shared_io.safetensors --out o.safetensors", dir, bin(), data), 2);
    char want[700];
    snprintf(want, sizeof want, "hf/model.safetensors: tensor \"%s\" holds NaN at element 0", key);
    has(vt_err, want);
    /* a plugin's own weights file (param_load): vit's backbone.weights */
    char vit[1200];
    snprintf(vit, sizeof vit, "%s/tests/data/vit/hf-vit-tiny.safetensors", src ? src : "..");
    vt_ok(vp_st_open(vit, &f));
    snprintf(key, sizeof key, "%s", vp_st_get(f, vp_st_count(f) - 1)->name);
    vp_st_close(f);
    poke(vit, "vit.safetensors", key, 1, INFINITY);
    snprintf(text, sizeof text, "{\"model\": {\"backbone\": {\"plugin\": \"vit\", \"image\": 16, "
             "\"patch\": 4, \"width\": 32, \"depth\": 2, \"heads\": 2, \"mlp_ratio\": 4, "
             "\"class_token\": true, \"pyramid\": false, \"weights\": \"vit.safetensors\"}}}");
    snprintf(path, sizeof path, "%s/vit.json", dir);
    vt_ok(vp_file_write_atomic(path, text, strlen(text)));
    ck_assert_int_ne(vt_sh("cd %s && %s embed --config vit.json --image "
                           "%s/tests/data/vit/hf-vit-tiny.io.safetensors --out e.safetensors", dir,
                           bin(), src ? src : ".."), 0);
    snprintf(want, sizeof want, "vit.safetensors: tensor \"%s\" holds +Inf at element 1 of ", key);
    has(vt_err, want);
    vt_rm_rf(dir);
}
END_TEST

/* ---- a finite loss with a non-finite gradient norm -------------------------------- */

/* One class weight at 1e30: the loss stays finite (a logit near 1e30 is
 * a float, and so is the cross-entropy of a few of them), but the
 * gradient reaching the decoder through it is of that size, and its
 * squared norm, summed in float on the device, is infinite. The run stops
 * naming the gradient norm and the step, before the update; with
 * train.skip_nonfinite every such step is skipped. */
START_TEST(test_nonfinite_grad)
{
    setup_data();
    write_config("w", "annotations.json", NULL, "W", ", \"steps\": 1");
    ck_assert_msg(vt_sh("cd %s && %s train w.json --quiet", dir, bin()) == 0, "%s", vt_err);
    poke("W/model.safetensors", "g.safetensors", "head.predictor.class_embed.weight", 0, 1e30f);
    write_config("g", "annotations.json", "g.safetensors", "G",
                 ", \"steps\": 3, \"batch\": 1, \"accum\": 1");
    ck_assert_msg(vt_sh("cd %s && %s train g.json", dir, bin()) == 1, "%s", vt_err);
    has(vt_err, "vpeft: train: the gradient norm is ");
    has(vt_err, " at step 1; stopped before its update (no checkpoint yet)");
    ck_assert_msg(!strstr(vt_err, "the loss is"), "%s", vt_err);
    write_config("h", "annotations.json", "g.safetensors", "H",
                 ", \"steps\": 3, \"batch\": 1, \"accum\": 1, \"skip_nonfinite\": true");
    ck_assert_msg(vt_sh("cd %s && %s train h.json", dir, bin()) == 0, "%s", vt_err);
    has(vt_err, "vpeft: warning: train: step 1: the gradient norm is ");
    has(vt_out, "trained 3 steps (3 skipped");
    all_finite("H/model.safetensors");
    vt_rm_rf(dir);
}
END_TEST

/* ---- a non-finite loss ----------------------------------------------------------- */

/* B/mixed.json: B/annotations.json without the odd images' instances (a
 * batch of one of those has none: every query's class target is
 * no-object). Through the config reader, which keeps keys in order. */
static void mixed_annotations(void)
{
    char path[700];
    snprintf(path, sizeof path, "%s/B/annotations.json", dir);
    vp_config *c;
    vt_ok(vp_cfg_load(path, &c));
    size_t cap = 1 << 20, len = 0;
    char *out = malloc(cap);
    int kept = 0, dropped = 0;
    len += (size_t)snprintf(out + len, cap - len, "{");
    for (int i = 0; i < vp_cfg_len(c); i++) {
        const vp_config *x = vp_cfg_at(c, i);
        len += (size_t)snprintf(out + len, cap - len, "%s\"%s\": ", i ? ", " : "", vp_cfg_key(x));
        if (strcmp(vp_cfg_key(x), "annotations")) {
            char *j = vp_cfg_to_json(x);
            len += (size_t)snprintf(out + len, cap - len, "%s", j);
            free(j);
            continue;
        }
        len += (size_t)snprintf(out + len, cap - len, "[");
        for (int k = 0; k < vp_cfg_len(x); k++) {
            int64_t id = -1;
            vt_ok(vp_cfg_int(vp_cfg_at(x, k), "image_id", -1, &id));
            if (id % 2) {
                dropped++;
                continue;
            }
            char *j = vp_cfg_to_json(vp_cfg_at(x, k));
            len += (size_t)snprintf(out + len, cap - len, "%s%s", kept++ ? ", " : "", j);
            free(j);
        }
        len += (size_t)snprintf(out + len, cap - len, "]");
    }
    len += (size_t)snprintf(out + len, cap - len, "}");
    ck_assert(len < cap && kept > 0 && dropped > 0);
    snprintf(path, sizeof path, "%s/B/mixed.json", dir);
    vt_ok(vp_file_write_atomic(path, out, len));
    free(out);
    vp_cfg_free(c);
}

START_TEST(test_nonfinite_loss)
{
    setup_data();
    mixed_annotations();
    write_config("w", "annotations.json", NULL, "W", ", \"steps\": 2");
    ck_assert_msg(vt_sh("cd %s && %s train w.json --quiet", dir, bin()) == 0, "%s", vt_err);
    /* the no-object logit (class 6 of 7) at 3e38: the class loss of a query
     * whose target is a real class is about 3e38, and their sum overflows;
     * the matcher's softmax probabilities stay finite */
    poke("W/model.safetensors", "big.safetensors", "head.predictor.class_embed.bias", 6, 3e38f);
    static const char one[] = ", \"steps\": 8, \"batch\": 1, \"accum\": 1, \"log_every\": 1, "
                              "\"checkpoint_every\": 1";
    write_config("x", "mixed.json", "big.safetensors", "X", one);
    ck_assert_msg(vt_sh("cd %s && %s train x.json", dir, bin()) == 1, "%s", vt_err);
    const char *m = strstr(vt_err, "vpeft: train: the loss is inf at step ");
    ck_assert_msg(m != NULL, "%s", vt_err);
    long long bad = atoll(m + strlen("vpeft: train: the loss is inf at step "));
    ck_assert(bad >= 2); /* seed 0: step 1's image has no instance */
    char want[256];
    snprintf(want, sizeof want, "at step %lld; stopped before its update (the last checkpoint "
             "is step %lld's): lower train.lr", bad, bad - 1);
    has(vt_err, want);
    has(vt_err, "or set train.skip_nonfinite to skip such steps");
    ck_assert_int_eq(lines("X/log.jsonl"), bad - 1);
    ck_assert_int_eq(ckpt_step("X/checkpoint.safetensors"), bad - 1);
    all_finite("X/checkpoint.safetensors");

    /* skipped instead: warnings, null losses in the log, the run goes on */
    write_config("y", "mixed.json", "big.safetensors", "Y",
                 ", \"steps\": 8, \"batch\": 1, \"accum\": 1, \"log_every\": 1, "
                 "\"checkpoint_every\": 1, \"skip_nonfinite\": true");
    ck_assert_msg(vt_sh("cd %s && %s train y.json", dir, bin()) == 0, "%s", vt_err);
    snprintf(want, sizeof want, "vpeft: warning: train: step %lld: the loss is inf: skipped, no "
             "update (train.skip_nonfinite)", bad);
    has(vt_err, want);
    char *log = slurp("Y/log.jsonl");
    int skipped = 0, ran = 0;
    for (char *l = log; *l; l = strchr(l, '\n') + 1) {
        bool s = strstr(l, "\"skipped\": true") && strstr(l, "\"skipped\": true") < strchr(l, '\n');
        skipped += s;
        ran += !s;
    }
    free(log);
    ck_assert_msg(skipped >= 1 && ran >= 2, "%d skipped, %d not", skipped, ran);
    ck_assert_int_eq(skipped + ran, 8);
    snprintf(want, sizeof want, "trained 8 steps (%d skipped: a non-finite loss or gradient)",
             skipped);
    has(vt_out, want);
    char *met = slurp("Y/metrics.json");
    snprintf(want, sizeof want, "\"skipped_steps\":\t%d", skipped);
    has(met, want);
    free(met);
    all_finite("Y/model.safetensors");
    all_finite("Y/checkpoint.safetensors");
    /* the same log up to the first non-finite step as the stopped run's */
    ck_assert_int_eq(vt_sh("cd %s && head -n %lld Y/log.jsonl | cmp - X/log.jsonl", dir,
                           bad - 1), 0);

    /* every step skipped (every image has an instance): no update at all */
    write_config("z", "annotations.json", "big.safetensors", "Z",
                 ", \"steps\": 3, \"batch\": 1, \"accum\": 1, \"skip_nonfinite\": true");
    ck_assert_msg(vt_sh("cd %s && %s train z.json", dir, bin()) == 0, "%s", vt_err);
    has(vt_out, "trained 3 steps (3 skipped");
    vp_st *a, *b;
    char pa[700], pb[700];
    snprintf(pa, sizeof pa, "%s/big.safetensors", dir);
    snprintf(pb, sizeof pb, "%s/Z/model.safetensors", dir);
    vt_ok(vp_st_open(pa, &a));
    vt_ok(vp_st_open(pb, &b));
    ck_assert_uint_eq(vp_st_count(a), vp_st_count(b));
    for (size_t i = 0; i < vp_st_count(a); i++) {
        const vp_st_tensor *ta = vp_st_get(a, i), *tb = vp_st_get(b, i);
        ck_assert_str_eq(ta->name, tb->name);
        ck_assert_msg(ta->nbytes == tb->nbytes && !memcmp(ta->data, tb->data, ta->nbytes),
                      "%s changed, though every step was skipped", ta->name);
    }
    vp_st_close(a);
    vp_st_close(b);

    /* Non-finite predictions reaching the matcher: mask_features' channel 0
     * and the mask embedding's at 3e38, so every mask logit is +inf and the
     * matching cost NaN. The matcher leaves the image unmatched and makes
     * the loss NaN; the step is named and stops the run, or is skipped
     * (the matcher used to end the run with its own error, naming no
     * step, which train.skip_nonfinite could not skip). */
    poke("W/model.safetensors", "mf.safetensors", "head.pixel_decoder.mask_features.bias", 0,
         3e38f);
    poke("mf.safetensors", "inf.safetensors", "head.predictor.mask_embed.layers.2.bias", 0,
         3e38f);
    write_config("v", "annotations.json", "inf.safetensors", "V",
                 ", \"steps\": 2, \"batch\": 1, \"accum\": 1");
    ck_assert_msg(vt_sh("cd %s && %s train v.json", dir, bin()) == 1, "%s", vt_err);
    has(vt_err, "vpeft: warning: mask2former: image 0 of the batch: the matching cost is not "
                "finite (NaN or Inf in the predictions): the loss is NaN");
    has(vt_err, "vpeft: train: the loss is nan at step 1; stopped before its update (no "
                "checkpoint yet)");
    write_config("u", "annotations.json", "inf.safetensors", "U",
                 ", \"steps\": 2, \"batch\": 1, \"accum\": 1, \"skip_nonfinite\": true");
    ck_assert_msg(vt_sh("cd %s && %s train u.json", dir, bin()) == 0, "%s", vt_err);
    has(vt_err, "vpeft: warning: train: step 1: the loss is nan: skipped, no update");
    has(vt_out, "trained 2 steps (2 skipped");
    all_finite("U/model.safetensors");
    vt_rm_rf(dir);
}
END_TEST

int main(void)
{
    Suite *s = suite_create("train_hard");
    TCase *tc = vt_tcase("train_hard");
    tcase_set_timeout(tc, 900);
    tcase_add_test(tc, test_cfg);
    tcase_add_test(tc, test_complete);
    tcase_add_test(tc, test_signals);
    tcase_add_test(tc, test_second_signal);
    tcase_add_test(tc, test_dist_signal);
    tcase_add_test(tc, test_nonfinite_weights);
    tcase_add_test(tc, test_nonfinite_loss);
    tcase_add_test(tc, test_nonfinite_grad);
    suite_add_tcase(s, tc);
    return vt_run(s);
}
