/*
 * `vpeft train CONFIG [--resume] [--set KEY=VALUE]...`: fine-tune the
 * config's model on its train.data split (core/train/train.c), with
 * progress on stderr, checkpoints, and the final COCO mask AP when the
 * config has a train.val split.
 */
#include <getopt.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "cli/cli.h"
#include "config/config.h"
#include "dist/dist.h"
#include "train/train.h"
#include "util/error.h"

static void usage(FILE *f)
{
    fprintf(f, "usage: vpeft train CONFIG [--resume] [--set KEY=VALUE]... [--quiet]\n\n"
               "Fine-tune CONFIG's model (backbone, head, peft methods) on train.data, a COCO\n"
               "instances file and its images, with AdamW: warmup then cosine or step decay,\n"
               "clipping by the global gradient norm, gradient accumulation, per-parameter\n"
               "learning-rate multipliers (train.lr_mult). On a terminal one line updates\n"
               "with step, loss terms, lr, steps/s and ETA; otherwise a line every\n"
               "train.log_every steps. Writes under train.out (default runs/<config name>):\n"
               "  checkpoint.safetensors  every train.checkpoint_every steps and at the end,\n"
               "                          replaced atomically (parameters, AdamW state, RNG)\n"
               "  log.jsonl               step, lr and loss terms of every step\n"
               "  model.safetensors       every parameter at the end (model.weights reads it)\n"
               "  adapter/                the PEFT methods in Hugging Face PEFT's layout\n"
               "  results.json, metrics.json  the final evaluation on train.val, if any\n"
               "docs/training.md lists every train.* key.\n\n"
               "options:\n"
               "  --resume          continue from train.out/checkpoint.safetensors: the loss\n"
               "                    curve is the one an uninterrupted run gives\n"
               "  --set KEY=VALUE   override a config value (JSON value; e.g.\n"
               "                    --set train.steps=200 --set train.lr=3e-4)\n"
               "  --quiet           no progress output\n"
               "  --stop-after N    stop after step N as if interrupted there (its\n"
               "                    checkpoint written); --resume goes on\n"
               "  -h, --help        this help\n\n"
               "Interrupting: a first SIGINT (Ctrl-C) or SIGTERM finishes the running step,\n"
               "writes its checkpoint, prints the command that resumes, and exits 130\n"
               "(SIGINT) or 143 (SIGTERM); a second one exits at once. A run stopped after\n"
               "its last checkpoint but before its outputs (model.safetensors, adapter/,\n"
               "results.json, metrics.json) is completed by --resume. A non-finite loss or\n"
               "gradient norm stops the run before that step's update, naming the step;\n"
               "with train.skip_nonfinite=true the step is skipped (no update) with a\n"
               "warning instead. Weights files with NaN or Inf values are refused.\n\n"
               "Several GPUs or machines: mpirun -np N vpeft train CONFIG (or srun); each\n"
               "rank takes its part of every global batch of N x train.batch images and\n"
               "the device of its local rank (VPEFT_DEVICE overrides); gradients are\n"
               "averaged in buckets of train.bucket_mb MiB while the backward pass runs\n"
               "(25 on GPUs; 0, one all-reduce after it, on CPU devices);\n"
               "docs/distributed.md.\n"
               "%s\n\n"
               "exit status: 0 done, 1 runtime failure (a file that cannot be read or written,\n"
               "memory, the device, a non-finite loss), 2 bad usage, config or input (a\n"
               "malformed file), 130 or 143 stopped by SIGINT or SIGTERM (resumable)\n",
            vp_dist_built() ? "This vpeft is built with MPI."
                            : "This vpeft is built without MPI: install openmpi-bin and "
                              "libopenmpi-dev (or MPICH),\nthen ./configure --with-mpi && make.");
}

/* ---- signals ---------------------------------------------------------------- */

/* The first SIGINT or SIGTERM, for the trainer to stop after the running
 * step (vp_train_opts.interrupt); a second one ends the process at once.
 * The handler only stores the signal, writes a fixed line and, the second
 * time, calls _exit: all async-signal-safe. */
static volatile sig_atomic_t interrupted;
static volatile sig_atomic_t speaks; /* this process prints (rank 0) */

static void on_signal(int sig)
{
    static const char first[] = "\nvpeft: interrupted: finishing the step, then writing a "
                                "checkpoint (interrupt again to exit at once)\n";
    static const char second[] = "\nvpeft: interrupted again: exiting now, without a "
                                 "new checkpoint\n";
    if (interrupted) {
        if (speaks) {
            ssize_t r = write(STDERR_FILENO, second, sizeof second - 1);
            (void)r;
        }
        _exit(128 + sig);
    }
    interrupted = sig;
    if (speaks) {
        ssize_t r = write(STDERR_FILENO, first, sizeof first - 1);
        (void)r;
    }
}

/* SIGINT and SIGTERM to on_signal, except one ignored when vpeft started
 * (a background job of a non-interactive shell ignores SIGINT): that stays
 * ignored. */
static void catch_signals(void)
{
    static const int sigs[2] = {SIGINT, SIGTERM};
    for (int i = 0; i < 2; i++) {
        struct sigaction old, sa;
        if (sigaction(sigs[i], NULL, &old) || old.sa_handler == SIG_IGN)
            continue;
        memset(&sa, 0, sizeof sa);
        sa.sa_handler = on_signal;
        sigemptyset(&sa.sa_mask);
        sigaddset(&sa.sa_mask, SIGINT); /* one handler at a time */
        sigaddset(&sa.sa_mask, SIGTERM);
        sa.sa_flags = SA_RESTART;
        sigaction(sigs[i], &sa, NULL);
    }
}

/* An argument as the shell reads it back. */
static void append_quoted(char *buf, size_t n, const char *arg)
{
    size_t len = strlen(buf);
    bool plain = *arg && strspn(arg, "abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ"
                                     "0123456789_-+=./:,@%") == strlen(arg);
    if (plain) {
        snprintf(buf + len, n - len, " %s", arg);
        return;
    }
    len += (size_t)snprintf(buf + len, n - len, " '");
    for (const char *p = arg; *p && len + 5 < n; p++) {
        if (*p == '\'')
            len += (size_t)snprintf(buf + len, n - len, "'\\''");
        else
            buf[len++] = *p, buf[len] = '\0';
    }
    if (len + 2 < n)
        snprintf(buf + len, n - len, "'");
}

/* Whether arg is --name or an abbreviation getopt_long takes for it, with
 * or without "=VALUE"; *inline_value: it has one. */
static bool is_option(const char *arg, const char *name, bool *inline_value)
{
    if (strncmp(arg, "--", 2) || !arg[2])
        return false;
    size_t k = strcspn(arg + 2, "=");
    *inline_value = arg[2 + k] == '=';
    return k >= 3 && !strncmp(arg + 2, name, k);
}

/* The command that resumes this run: this process's program (as it was
 * started, from /proc/self/cmdline, else "vpeft"), "train", the arguments
 * in their order without --resume and --stop-after, then --resume. */
static void resume_command(char *buf, size_t n, int argc, char *const *argv)
{
    char prog[1024] = "vpeft";
    FILE *f = fopen("/proc/self/cmdline", "rb");
    if (f) {
        size_t k = fread(prog, 1, sizeof prog - 1, f);
        prog[k] = '\0'; /* the first NUL ends argv[0] */
        fclose(f);
        if (!prog[0])
            snprintf(prog, sizeof prog, "vpeft");
    }
    buf[0] = '\0';
    append_quoted(buf, n, prog);
    memmove(buf, buf + 1, strlen(buf)); /* no leading space */
    snprintf(buf + strlen(buf), n - strlen(buf), " train");
    for (int i = 1; i < argc; i++) {
        bool inl = false;
        if (is_option(argv[i], "resume", &inl))
            continue;
        if (is_option(argv[i], "stop-after", &inl)) {
            i += !inl; /* and its value */
            continue;
        }
        append_quoted(buf, n, argv[i]);
    }
    snprintf(buf + strlen(buf), n - strlen(buf), " --resume");
}

int vp_cli_exit_code(vp_status st)
{
    /* 2: what the user gave is wrong (a config value, a file's contents, a
     * weights file whose shapes do not fit); 1: everything else */
    return st == VP_OK ? 0
           : st == VP_ERR_CONFIG || st == VP_ERR_FORMAT || st == VP_ERR_SHAPE ? 2
                                                                              : 1;
}

int vp_cli_train(int argc, char **argv)
{
    static const struct option opts[] = {{"resume", no_argument, NULL, 'r'},
                                         {"set", required_argument, NULL, 's'},
                                         {"quiet", no_argument, NULL, 'q'},
                                         {"stop-after", required_argument, NULL, 'S'},
                                         {"help", no_argument, NULL, 'h'},
                                         {NULL, 0, NULL, 0}};
    const char *sets[64];
    int n_sets = 0, c;
    vp_train_opts to = {0};
    /* the arguments in the user's order (getopt_long permutes argv) */
    char *args[256];
    int n_args = argc < 256 ? argc : 256;
    memcpy(args, argv, (size_t)n_args * sizeof *argv);
    opterr = 0;
    optind = 1;
    while ((c = getopt_long(argc, argv, ":h", opts, NULL)) != -1) {
        char *end;
        if (c == 'h') {
            usage(stdout);
            return 0;
        } else if (c == 'r') {
            to.resume = true;
        } else if (c == 'q') {
            to.progress = VP_PROGRESS_NONE;
        } else if (c == 'S' && (to.stop_after = strtoll(optarg, &end, 10)) > 0 && !*end) {
        } else if (c == 's' && n_sets < 64) {
            sets[n_sets++] = optarg;
        } else {
            fprintf(stderr, "vpeft train: %s '%s' (see vpeft train --help)\n",
                    c == ':'   ? "missing value for"
                    : c == 's' ? "too many --set, at"
                    : c == 'S' ? "--stop-after takes a step number, not"
                               : "unknown option",
                    argv[optind - 1]);
            return 2;
        }
    }
    if (optind != argc - 1) {
        fprintf(stderr, "vpeft train: %s (see vpeft train --help)\n",
                optind < argc ? "one config file, please" : "which config? (vpeft train CONFIG)");
        return 2;
    }
    vp_config *cfg;
    vp_status st = vp_cli_config(argv[optind], sets, n_sets, &cfg);
    if (st)
        return 2;
    vp_train_cfg tc; /* config errors before the device starts */
    if ((st = vp_train_cfg_read(cfg, &tc))) {
        fprintf(stderr, "vpeft: %s\n", vp_error_last());
        vp_cfg_free(cfg);
        return vp_cli_exit_code(st);
    }
    vp_dist dist;
    if ((st = vp_dist_init(&dist))) {
        fprintf(stderr, "vpeft: %s\n", vp_error_last());
        vp_cfg_free(cfg);
        return 1;
    }
    /* after MPI_Init, whose library may set handlers of its own */
    speaks = dist.rank == 0;
    catch_signals();
    to.interrupt = &interrupted;
    vp_instance *inst = NULL;
    vp_device *dev = NULL;
    st = vp_cli_instance(&inst);
    if (!st)
        st = vp_cli_rank_device(&dist, inst, &dev);
    /* a rank without a device stops every rank, naming itself */
    st = vp_dist_agree(&dist, st);
    to.dist = &dist;
    vp_train_result r;
    if (!st)
        st = vp_train_run(dev, cfg, &to, &r);
    if (st)
        fprintf(stderr, "vpeft: %s\n", vp_error_last());
    else if (dist.rank != 0)
        ; /* rank 0 reports */
    else if (r.ranks > 1 && r.steps)
        printf("data parallel: %d ranks, %.3f MiB of gradients all-reduced per step in %u "
               "bucket%s, all-reduce %.1f%% of the step time (%.2f of %.2f ms per step), "
               "%.1f%% not hidden by the backward pass\n", r.ranks,
               (double)r.allreduce_bytes / (1 << 20), r.buckets ? r.buckets : 1,
               r.buckets > 1 ? "s" : "", 100.0 * r.allreduce_seconds / r.seconds,
               1e3 * r.allreduce_seconds / (double)r.steps, 1e3 * r.seconds / (double)r.steps,
               100.0 * r.allreduce_exposed_seconds / r.seconds);
    if (!st && r.interrupted) {
        if (dist.rank == 0) {
            char cmd[4096];
            resume_command(cmd, sizeof cmd, n_args, args);
            fprintf(stderr, "vpeft: stopped by %s after step %lld of %lld; its checkpoint is "
                    "%s/checkpoint.safetensors.%s\nResume with%s:\n    %s\n",
                    r.interrupted == SIGINT ? "SIGINT" : r.interrupted == SIGTERM ? "SIGTERM"
                                                                              : "a signal",
                    (long long)r.stopped_at, (long long)tc.steps, tc.out,
                    r.stopped_at == tc.steps ? " The final evaluation and outputs are not "
                                               "written yet: resuming writes them." : "",
                    dist.size > 1 ? " (under the same launcher, e.g. mpirun -np N)" : "", cmd);
        }
        vp_device_destroy(dev);
        vp_instance_destroy(inst);
        vp_cfg_free(cfg);
        vp_dist_finalize(&dist);
        return 128 + r.interrupted;
    }
    if (!st && interrupted && dist.rank == 0) /* after the last step's agreement */
        fprintf(stderr, "vpeft: the interruption came during the final evaluation or outputs, "
                "which are written: the run is complete\n");
    if (st || dist.rank != 0)
        ;
    else if (r.completed && r.evaluated)
        printf("completed the outputs of step %lld from its checkpoint; mask AP %.3f AP50 %.3f "
               "AP75 %.3f; wrote %s\n", (long long)tc.steps, r.stats.ap, r.stats.ap50,
               r.stats.ap75, tc.out);
    else if (r.completed)
        printf("completed the outputs of step %lld from its checkpoint; wrote %s\n",
               (long long)tc.steps, tc.out);
    else {
        char skipped[96] = "";
        if (r.skipped)
            snprintf(skipped, sizeof skipped, " (%lld skipped: a non-finite loss or gradient)",
                     (long long)r.skipped);
        if (r.evaluated)
            printf("trained %lld steps%s in %.1f s; mask AP %.3f AP50 %.3f AP75 %.3f; wrote %s\n",
                   (long long)r.steps, skipped, r.seconds, r.stats.ap, r.stats.ap50,
                   r.stats.ap75, tc.out);
        else
            printf("trained %lld steps%s in %.1f s; wrote %s\n", (long long)r.steps, skipped,
                   r.seconds, tc.out);
    }
    vp_device_destroy(dev);
    vp_instance_destroy(inst);
    vp_cfg_free(cfg);
    vp_dist_finalize(&dist);
    return vp_cli_exit_code(st);
}
