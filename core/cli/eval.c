/*
 * `vpeft eval --gt ANN.json --results RES.json`: COCO mask AP of a results
 * file against COCO instance ground truth, computed as pycocotools'
 * COCOeval(iouType="segm") computes it (core/eval/cocoeval.c), printed in
 * its summarize() layout. `vpeft eval --config C [--adapter DIR]`: the
 * config's model run over its validation split first (core/train/evaluate.c),
 * its results file written, then scored the same way.
 */
#include <errno.h>
#include <getopt.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "cli/cli.h"
#include "dist/dist.h"
#include "eval/cocoeval.h"
#include "model/model.h"
#include "train/train.h"
#include "util/error.h"
#include "util/file.h"

static void usage(FILE *f)
{
    fprintf(f, "usage: vpeft eval --gt ANN.json --results RES.json [--bootstrap N [--seed S]]\n"
               "       vpeft eval --config C [--adapter DIR] [--weights F] [--out RES.json]\n"
               "                  [--bootstrap N [--seed S]] [--set KEY=VALUE]...\n\n"
               "Score a COCO results file (a list of {image_id, category_id, segmentation:\n"
               "{size, counts}, score}) against COCO instance annotations with mask IoU,\n"
               "as pycocotools' COCOeval(iouType=\"segm\") does: IoU thresholds .50:.05:.95,\n"
               "101-point interpolated precision, maxDets 1/10/100, small/medium/large\n"
               "areas, crowd regions. Prints the 12 numbers of COCOeval.summarize() in its\n"
               "layout (-1: no ground truth for that row). docs/eval.md has the details.\n\n"
               "With --config, first run C's model over C's train.val split (its images and\n"
               "annotations), write the detections as a COCO results file, and score it.\n\n"
               "With --bootstrap N, each number also gets its 95%% confidence interval,\n"
               "[low, high], by the percentile bootstrap over images: N draws of the\n"
               "split's images with replacement, each scored (200 is usual; the draws\n"
               "depend on --seed only, default 0).\n\n"
               "options:\n"
               "  --gt ANN.json       the ground truth (images, categories, annotations)\n"
               "  --results RES.json  the detections\n"
               "  --config C          a run config with model, peft and train.val\n"
               "  --adapter DIR       load C's PEFT methods from DIR (what training wrote\n"
               "                      to train.out/adapter)\n"
               "  --weights F         load every parameter F holds (a training run's\n"
               "                      train.out/model.safetensors)\n"
               "  --out RES.json      where the results go (default:\n"
               "                      train.out/eval-results.json)\n"
               "  --set KEY=VALUE     override a config value\n"
               "  --bootstrap N       95%% intervals from N resamples (1 to %d)\n"
               "  --seed S            the resamples' seed (default 0)\n"
               "  -h, --help          this help\n\n"
               "exit status: 0 done, 1 runtime failure (a file that cannot be read or written,\n"
               "memory, the device), 2 bad usage, config or input (a malformed file)\n",
            VP_COCO_MAX_RESAMPLES);
}

vp_status vp_cli_config(const char *path, const char *const *sets, int n_sets, vp_config **out)
{
    vp_status st = vp_cfg_load(path, out);
    for (int i = 0; !st && i < n_sets; i++)
        st = vp_cfg_set(*out, sets[i]);
    if (st) {
        fprintf(stderr, "vpeft: %s\n", vp_error_last());
        vp_cfg_free(*out);
        *out = NULL;
    }
    return st;
}

vp_status vp_cli_infer_model(vp_device *dev, const vp_config *cfg, const char *weights,
                             const char *adapter_dir, int64_t batch, vp_model **out)
{
    vp_status st = vp_model_create(dev, cfg, &(vp_model_opts){.batch = batch}, out);
    uint32_t n = 0;
    if (!st && weights && !(st = vp_model_load_params(*out, weights, &n)) && !n)
        st = vp_error_set(VP_ERR_FORMAT, "%s holds none of the model's parameters", weights);
    if (!st && adapter_dir)
        st = vp_model_load_peft(*out, adapter_dir);
    if (st) {
        vp_model_destroy(*out);
        *out = NULL;
    }
    return st;
}

static int eval_config(const char *path, const char *adapter, const char *weights,
                       const char *out, const char *const *sets, int n_sets,
                       const vp_coco_boot *boot)
{
    vp_config *cfg;
    if (vp_cli_config(path, sets, n_sets, &cfg))
        return 2;
    vp_train_cfg tc;
    vp_status st = vp_train_cfg_read(cfg, &tc);
    if (!st && !tc.val_ann)
        st = vp_cfg_fail(vp_cfg_get(cfg, "train"), "val", "missing: the split to evaluate on");
    if (st) {
        fprintf(stderr, "vpeft: %s\n", vp_error_last());
        vp_cfg_free(cfg);
        return vp_cli_exit_code(st);
    }
    char res[4200];
    bool default_out = !out;
    if (default_out) {
        snprintf(res, sizeof res, "%s/eval-results.json", tc.out);
        out = res;
    }
    /* under mpirun: every rank its share of the images, rank 0 scores */
    vp_dist dist;
    if ((st = vp_dist_init(&dist))) {
        fprintf(stderr, "vpeft: %s\n", vp_error_last());
        vp_cfg_free(cfg);
        return 1;
    }
    vp_instance *inst = NULL;
    vp_device *dev = NULL;
    vp_model *m = NULL;
    vp_coco_stats s;
    st = vp_cli_instance(&inst);
    if (!st)
        st = vp_cli_rank_device(&dist, inst, &dev);
    if (!st && default_out && dist.rank == 0)
        st = vp_mkdir_p(tc.out);
    if (!st)
        st = vp_cli_infer_model(dev, cfg, weights, adapter, tc.eval_batch, &m);
    if ((st = vp_dist_agree(&dist, st)) == VP_OK)
        st = vp_evaluate(m, tc.eval_batch, tc.val_ann, tc.val_images, out,
                         dist.rank == 0 ? "eval" : NULL, &dist, &s);
    vp_coco_stats lo, hi;
    if (!st && dist.rank == 0 && boot) /* from the results file just written */
        st = vp_coco_eval_files_ci(tc.val_ann, out, boot, &s, &lo, &hi);
    if (st) {
        fprintf(stderr, "vpeft: %s\n", vp_error_last());
    } else if (dist.rank == 0) {
        vp_cli_print_stats_ci(&s, boot ? &lo : NULL, boot ? &hi : NULL);
        printf("results: %s\n", out);
    }
    vp_model_destroy(m);
    vp_device_destroy(dev);
    vp_instance_destroy(inst);
    vp_cfg_free(cfg);
    vp_dist_finalize(&dist);
    return vp_cli_exit_code(st);
}

int vp_cli_eval(int argc, char **argv)
{
    static const struct option opts[] = {{"gt", required_argument, NULL, 'g'},
                                         {"results", required_argument, NULL, 'r'},
                                         {"config", required_argument, NULL, 'c'},
                                         {"adapter", required_argument, NULL, 'a'},
                                         {"weights", required_argument, NULL, 'w'},
                                         {"out", required_argument, NULL, 'o'},
                                         {"set", required_argument, NULL, 's'},
                                         {"bootstrap", required_argument, NULL, 'b'},
                                         {"seed", required_argument, NULL, 'S'},
                                         {"help", no_argument, NULL, 'h'},
                                         {NULL, 0, NULL, 0}};
    const char *gt = NULL, *res = NULL, *config = NULL, *adapter = NULL, *weights = NULL,
               *out = NULL, *sets[64];
    int c, n_sets = 0;
    vp_coco_boot boot = {0, 0, 0.95};
    bool seeded = false;
    opterr = 0;
    optind = 1;
    while ((c = getopt_long(argc, argv, ":h", opts, NULL)) != -1) {
        if (c == 'h') {
            usage(stdout);
            return 0;
        } else if (c == 'g') {
            gt = optarg;
        } else if (c == 'r') {
            res = optarg;
        } else if (c == 'c') {
            config = optarg;
        } else if (c == 'a') {
            adapter = optarg;
        } else if (c == 'w') {
            weights = optarg;
        } else if (c == 'o') {
            out = optarg;
        } else if (c == 's' && n_sets < 64) {
            sets[n_sets++] = optarg;
        } else if (c == 'b' || c == 'S') {
            char *end;
            errno = 0;
            long long v = strtoll(optarg, &end, 10);
            if (errno || end == optarg || *end || v < (c == 'b' ? 1 : 0) ||
                v > (c == 'b' ? VP_COCO_MAX_RESAMPLES : INT64_MAX)) {
                fprintf(stderr, "vpeft eval: %s '%s': %s (see vpeft eval --help)\n",
                        c == 'b' ? "--bootstrap" : "--seed", optarg,
                        c == 'b' ? "expected a number of resamples from 1 to 100000"
                                 : "expected a non-negative integer");
                return 2;
            }
            if (c == 'b')
                boot.resamples = (int)v;
            else
                boot.seed = (uint64_t)v, seeded = true;
        } else {
            fprintf(stderr, "vpeft eval: %s '%s' (see vpeft eval --help)\n",
                    c == ':' ? "missing value for" : "unknown option", argv[optind - 1]);
            return 2;
        }
    }
    if (optind < argc || (config ? gt || res : !gt || !res || adapter || weights || out) ||
        (seeded && !boot.resamples)) {
        fprintf(stderr, "vpeft eval: %s (see vpeft eval --help)\n",
                optind < argc        ? "unexpected argument"
                : seeded && !boot.resamples ? "--seed goes with --bootstrap"
                : config             ? "--config takes no --gt or --results"
                : gt && res          ? "--adapter, --weights and --out go with --config"
                                     : "--gt and --results, or --config, are required");
        return 2;
    }
    const vp_coco_boot *bp = boot.resamples ? &boot : NULL;
    if (config)
        return eval_config(config, adapter, weights, out, sets, n_sets, bp);
    vp_coco_stats s, lo, hi;
    vp_status st = bp ? vp_coco_eval_files_ci(gt, res, bp, &s, &lo, &hi)
                      : vp_coco_eval_files(gt, res, &s);
    if (st) {
        fprintf(stderr, "vpeft: %s\n", vp_error_last());
        return vp_cli_exit_code(st);
    }
    vp_cli_print_stats_ci(&s, bp ? &lo : NULL, bp ? &hi : NULL);
    return 0;
}

void vp_cli_print_stats(const vp_coco_stats *sp)
{
    vp_cli_print_stats_ci(sp, NULL, NULL);
}

void vp_cli_print_stats_ci(const vp_coco_stats *sp, const vp_coco_stats *lo,
                           const vp_coco_stats *hi)
{
    vp_coco_stats s = *sp;
    static const struct {
        const char *what, *iou, *area, *dets;
    } rows[12] = {
        {"Average Precision  (AP)", "0.50:0.95", "   all", "100"},
        {"Average Precision  (AP)", "0.50     ", "   all", "100"},
        {"Average Precision  (AP)", "0.75     ", "   all", "100"},
        {"Average Precision  (AP)", "0.50:0.95", " small", "100"},
        {"Average Precision  (AP)", "0.50:0.95", "medium", "100"},
        {"Average Precision  (AP)", "0.50:0.95", " large", "100"},
        {"Average Recall     (AR)", "0.50:0.95", "   all", "  1"},
        {"Average Recall     (AR)", "0.50:0.95", "   all", " 10"},
        {"Average Recall     (AR)", "0.50:0.95", "   all", "100"},
        {"Average Recall     (AR)", "0.50:0.95", " small", "100"},
        {"Average Recall     (AR)", "0.50:0.95", "medium", "100"},
        {"Average Recall     (AR)", "0.50:0.95", " large", "100"},
    };
    const double v[12] = {s.ap, s.ap50, s.ap75, s.aps, s.apm, s.apl,
                          s.ar1, s.ar10, s.ar100, s.ars, s.arm, s.arl};
    for (int i = 0; i < 12; i++) {
        printf(" %s @[ IoU=%s | area=%s | maxDets=%s ] = %.3f", rows[i].what, rows[i].iou,
               rows[i].area, rows[i].dets, v[i]);
        if (lo && hi)
            printf("  [%.3f, %.3f]", (&lo->ap)[i], (&hi->ap)[i]);
        printf("\n");
    }
    if (lo && hi)
        printf("95%% intervals: percentile bootstrap over images\n");
}
