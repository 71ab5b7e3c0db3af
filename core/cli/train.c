/*
 * `vpeft train CONFIG [--resume] [--set KEY=VALUE]...`: fine-tune the
 * config's model on its train.data split (core/train/train.c), with
 * progress on stderr, checkpoints, and the final COCO mask AP when the
 * config has a train.val split.
 */
#include <getopt.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

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
               "Several GPUs or machines: mpirun -np N vpeft train CONFIG (or srun); each\n"
               "rank takes its part of every global batch of N x train.batch images and\n"
               "the device of its local rank (VPEFT_DEVICE overrides); gradients are\n"
               "averaged in buckets of train.bucket_mb MiB while the backward pass runs\n"
               "(25 on GPUs; 0, one all-reduce after it, on CPU devices);\n"
               "docs/distributed.md.\n"
               "%s\n\n"
               "exit status: 0 done, 1 runtime failure, 2 usage or config error\n",
            vp_dist_built() ? "This vpeft is built with MPI."
                            : "This vpeft is built without MPI: install openmpi-bin and "
                              "libopenmpi-dev (or MPICH),\nthen ./configure --with-mpi && make.");
}

int vp_cli_exit_code(vp_status st)
{
    return st == VP_OK ? 0 : st == VP_ERR_CONFIG ? 2 : 1;
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
    if (st || dist.rank != 0)
        ;
    else if (r.evaluated)
        printf("trained %lld steps in %.1f s; mask AP %.3f AP50 %.3f AP75 %.3f; wrote %s\n",
               (long long)r.steps, r.seconds, r.stats.ap, r.stats.ap50, r.stats.ap75, tc.out);
    else
        printf("trained %lld steps in %.1f s; wrote %s\n", (long long)r.steps, r.seconds,
               tc.out);
    vp_device_destroy(dev);
    vp_instance_destroy(inst);
    vp_cfg_free(cfg);
    vp_dist_finalize(&dist);
    return vp_cli_exit_code(st);
}
