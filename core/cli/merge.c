/*
 * `vpeft merge --config C --adapter DIR --out merged.safetensors`: load
 * the PEFT methods saved in DIR (Hugging Face PEFT's layout, as training
 * writes it) into the config's model, fold them into the base weights, and
 * write every base parameter, by its model name, to OUT: a model without
 * the methods that computes what the adapted one does.
 */
#include <getopt.h>
#include <stdio.h>
#include <stdlib.h>

#include "cli/cli.h"
#include "config/config.h"
#include "model/model.h"
#include "util/error.h"

static void usage(FILE *f)
{
    fprintf(f, "usage: vpeft merge --config FILE --adapter DIR --out OUT.safetensors\n"
               "       vpeft merge --config FILE --adapter DIR --unmerge MERGED --out OUT\n\n"
               "Build FILE's model with its PEFT methods, load their parameters from DIR\n"
               "(adapter_config.json and adapter_model.safetensors, one directory per\n"
               "method when there are several: DIR/<plugin>), fold each linear update into\n"
               "its base weight (LoRA: W + (alpha / r) B A), and write every base parameter\n"
               "by its model name (backbone.*, head.*) to OUT, replaced atomically. Methods\n"
               "that are not linear (bottleneck adapters) cannot be merged: an error.\n"
               "vp_model_load_params (and the trainer's checkpoints) read OUT back.\n\n"
               "options:\n"
               "  --config FILE    the run config (model and peft)\n"
               "  --adapter DIR    the saved methods\n"
               "  --out OUT        the merged weights (with --unmerge: the base weights)\n"
               "  --unmerge MERGED start from MERGED, weights with the methods folded in,\n"
               "                   and take them out again: OUT is the base model's\n"
               "  -h, --help       this help\n");
}

int vp_cli_merge(int argc, char **argv)
{
    static const struct option opts[] = {{"config", required_argument, NULL, 'c'},
                                         {"adapter", required_argument, NULL, 'a'},
                                         {"out", required_argument, NULL, 'o'},
                                         {"unmerge", required_argument, NULL, 'u'},
                                         {"help", no_argument, NULL, 'h'},
                                         {NULL, 0, NULL, 0}};
    const char *cfg_path = NULL, *dir = NULL, *out = NULL, *merged = NULL;
    int c;
    opterr = 0;
    optind = 1;
    while ((c = getopt_long(argc, argv, ":h", opts, NULL)) != -1) {
        if (c == 'h') {
            usage(stdout);
            return 0;
        } else if (c == 'c') {
            cfg_path = optarg;
        } else if (c == 'a') {
            dir = optarg;
        } else if (c == 'o') {
            out = optarg;
        } else if (c == 'u') {
            merged = optarg;
        } else {
            fprintf(stderr, "vpeft merge: %s '%s' (see vpeft merge --help)\n",
                    c == ':' ? "missing value for" : "unknown option", argv[optind - 1]);
            return 2;
        }
    }
    if (optind < argc || !cfg_path || !dir || !out) {
        fprintf(stderr, "vpeft merge: %s (see vpeft merge --help)\n",
                optind < argc ? "unexpected argument" : "--config, --adapter and --out are required");
        return 2;
    }
    vp_config *cfg = NULL;
    vp_instance *inst = NULL;
    vp_device *dev = NULL;
    vp_model *m = NULL;
    int rc = 1;
    vp_status st = vp_cfg_load(cfg_path, &cfg);
    if (!st && vp_cli_instance(&inst))
        goto out; /* it printed why */
    if (!st)
        st = vp_cli_device(inst, &dev);
    if (!st)
        st = vp_model_create(dev, cfg, &(vp_model_opts){.batch = 1}, &m);
    if (!st && !vp_model_pefts(m)->n)
        st = vp_error_set(VP_ERR_INVALID, "%s: the config has no PEFT method to merge",
                          cfg_path);
    uint32_t n_loaded = 0;
    if (!st && merged)
        st = vp_model_load_params(m, merged, &n_loaded);
    if (!st && merged && !n_loaded)
        st = vp_error_set(VP_ERR_INVALID, "%s: none of its tensors is a parameter of this model",
                          merged);
    if (!st)
        st = vp_model_load_peft(m, dir);
    if (!st)
        st = vp_model_merge(m, out, merged != NULL);
    if (st) {
        fprintf(stderr, "vpeft: %s\n", vp_error_last());
        rc = vp_cli_exit_code(st);
        goto out;
    }
    const vp_peft_set *s = vp_model_pefts(m);
    printf("merge: ");
    for (uint32_t k = 0; k < s->n; k++)
        printf("%s%s", k ? " + " : "", s->items[k].name);
    if (merged)
        printf(" from %s taken out of %s -> %s\n", dir, merged, out);
    else
        printf(" from %s folded into the base weights -> %s\n", dir, out);
    rc = 0;
out:
    vp_model_destroy(m);
    vp_device_destroy(dev);
    vp_instance_destroy(inst);
    vp_cfg_free(cfg);
    return rc;
}
