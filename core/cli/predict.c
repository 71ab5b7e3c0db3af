/*
 * `vpeft predict --config C [--adapter DIR] --images IMG... --out DIR`:
 * the config's model on each image, and a PNG per image with every
 * instance above the score threshold drawn in its own colour with its
 * class and score (core/io/draw.c).
 */
#include <getopt.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "cli/cli.h"
#include "data/data.h"
#include "io/draw.h"
#include "io/image.h"
#include "model/model.h"
#include "train/train.h"
#include "util/error.h"
#include "util/file.h"

static void usage(FILE *f)
{
    fprintf(f, "usage: vpeft predict --config C [--adapter DIR] [--weights F] --out DIR\n"
               "                     [--threshold S] [--set KEY=VALUE]... IMAGE...\n\n"
               "Run C's model on each IMAGE (PNG or JPEG) and write DIR/<image name>.png: the\n"
               "image with each instance scoring at least S drawn over it, its mask in its\n"
               "own colour with an outline and a \"class score\" label. Class names come\n"
               "from the categories of C's train.val (or train.data) annotations when C has\n"
               "them, else they are class numbers. docs/pictures.md shows what is drawn.\n\n"
               "options:\n"
               "  --config C      the run config (model, peft)\n"
               "  --adapter DIR   load C's PEFT methods from DIR (train.out/adapter)\n"
               "  --weights F     load every parameter F holds (train.out/model.safetensors)\n"
               "  --out DIR       where the pictures go (created)\n"
               "  --threshold S   the lowest score drawn (default 0.5)\n"
               "  --set KEY=VALUE override a config value\n"
               "  -h, --help      this help\n\n"
               "exit status: 0 done, 1 runtime failure (a file that cannot be read or written,\n"
               "memory, the device), 2 bad usage, config or input (a malformed file)\n");
}

/* Class names from the config's annotations (val, else data), if readable. */
static vp_dataset *names_from(const vp_config *cfg)
{
    const vp_config *t = vp_cfg_get(cfg, "train");
    static const char *const splits[2] = {"val", "data"};
    for (int i = 0; i < 2; i++) {
        const char *ann = NULL, *img = NULL;
        const vp_config *s = vp_cfg_get(t, splits[i]);
        if (!s || vp_cfg_file(s, "annotations", &ann) || !ann || vp_cfg_file(s, "images", &img))
            continue;
        vp_dataset *ds;
        if (!vp_dataset_load(ann, img, &(vp_dataset_opts){.skip_bad = true}, &ds))
            return ds;
    }
    vp_error_clear();
    return NULL;
}

int vp_cli_predict(int argc, char **argv)
{
    static const struct option opts[] = {{"config", required_argument, NULL, 'c'},
                                         {"adapter", required_argument, NULL, 'a'},
                                         {"weights", required_argument, NULL, 'w'},
                                         {"out", required_argument, NULL, 'o'},
                                         {"threshold", required_argument, NULL, 't'},
                                         {"set", required_argument, NULL, 's'},
                                         {"images", no_argument, NULL, 'i'},
                                         {"help", no_argument, NULL, 'h'},
                                         {NULL, 0, NULL, 0}};
    const char *config = NULL, *adapter = NULL, *weights = NULL, *out = NULL, *sets[64];
    double threshold = 0.5;
    int c, n_sets = 0;
    opterr = 0;
    optind = 1;
    while ((c = getopt_long(argc, argv, ":h", opts, NULL)) != -1) {
        char *end;
        if (c == 'h') {
            usage(stdout);
            return 0;
        } else if (c == 'c') {
            config = optarg;
        } else if (c == 'a') {
            adapter = optarg;
        } else if (c == 'w') {
            weights = optarg;
        } else if (c == 'o') {
            out = optarg;
        } else if (c == 'i') {
            /* --images IMG...: the images are the remaining arguments */
        } else if (c == 't' && (threshold = strtod(optarg, &end), !*end && *optarg) &&
                   threshold >= 0 && threshold <= 1) {
        } else if (c == 's' && n_sets < 64) {
            sets[n_sets++] = optarg;
        } else {
            fprintf(stderr, "vpeft predict: %s '%s' (see vpeft predict --help)\n",
                    c == ':'   ? "missing value for"
                    : c == 't' ? "--threshold takes a number in [0, 1], not"
                               : "unknown option",
                    c == 't' ? optarg : argv[optind - 1]);
            return 2;
        }
    }
    if (!config || !out || optind >= argc) {
        fprintf(stderr, "vpeft predict: %s (see vpeft predict --help)\n",
                !config ? "--config is required"
                : !out  ? "--out is required"
                        : "which images? (vpeft predict ... IMAGE...)");
        return 2;
    }
    vp_config *cfg;
    if (vp_cli_config(config, sets, n_sets, &cfg))
        return 2;
    vp_instance *inst;
    if (vp_cli_instance(&inst)) {
        vp_cfg_free(cfg);
        return 1;
    }
    vp_device *dev = NULL;
    vp_model *m = NULL;
    vp_dataset *names = names_from(cfg);
    vp_status st = vp_cli_device(inst, &dev);
    if (!st)
        st = vp_mkdir_p(out);
    if (!st)
        st = vp_cli_infer_model(dev, cfg, weights, adapter, 1, &m);
    int n_done = 0;
    for (int i = optind; !st && i < argc; i++) {
        char path[4200];
        const char *base = strrchr(argv[i], '/');
        base = base ? base + 1 : argv[i];
        const char *dot = strrchr(base, '.');
        snprintf(path, sizeof path, "%s/%.*s.png", out, dot ? (int)(dot - base) : (int)strlen(base),
                 base);
        int drawn = 0;
        st = vp_predict_picture(m, argv[i], names, (float)threshold, path, &drawn);
        if (!st) {
            printf("%s: %d instance%s -> %s\n", argv[i], drawn, drawn == 1 ? "" : "s", path);
            n_done++;
        }
    }
    if (st)
        fprintf(stderr, "vpeft: %s\n", vp_error_last());
    vp_dataset_destroy(names);
    vp_model_destroy(m);
    vp_device_destroy(dev);
    vp_instance_destroy(inst);
    vp_cfg_free(cfg);
    return vp_cli_exit_code(st);
}
