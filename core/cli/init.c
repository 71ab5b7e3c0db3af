/*
 * `vpeft init --hf DIR --train ANN.json --val ANN.json --out RUN.json`: a
 * ready run config for fine-tuning a Hugging Face Mask2Former checkpoint
 * (docs/hf.md) on a COCO dataset: the checkpoint (model.hf), the input
 * side, the dataset's classes (read with the COCO reader, core/data), LoRA
 * on the attention projections by HF module names, the two splits, and
 * train settings to start from. Every path in it is relative to the
 * config's own directory (as vp_cfg_file resolves them), so the run works
 * from any working directory and the tree can move as a whole.
 */
#define _XOPEN_SOURCE 700 /* realpath */
#include <errno.h>
#include <getopt.h>
#include <limits.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

#include "cli/cli.h"
#include "config/config.h"
#include "data/data.h"
#include "model/model.h"
#include "util/error.h"
#include "util/file.h"
#include "util/strbuf.h"


static void usage(FILE *f)
{
    fprintf(f, "usage: vpeft init --hf DIR --train ANN.json --val ANN.json --out RUN.json\n"
               "                  [--image N] [--train-images DIR] [--val-images DIR] [--force]\n\n"
               "Write a run config that fine-tunes the Hugging Face checkpoint in DIR\n"
               "(config.json and model.safetensors, e.g. a clone of\n"
               "facebook/mask2former-swin-tiny-coco-instance) on a COCO instances dataset:\n"
               "  model     {\"hf\": DIR, \"image\": N, \"classes\": the train file's categories}\n"
               "            (a class count other than the checkpoint's starts class_predictor\n"
               "            from random values)\n"
               "  peft      LoRA r 8, lora_alpha 8 on target_modules [\"query\", \"value\",\n"
               "            \"q_proj\", \"v_proj\"]: Swin's attention and the transformer\n"
               "            decoder's self-attention, by HF module names (as HF PEFT reads them)\n"
               "  train     the two splits, class_predictor and mask_predictor trainable,\n"
               "            2000 steps of 2 images, AdamW lr 2e-4 with 100 warmup steps and\n"
               "            cosine decay, clipping at 1.0, evaluation every 500 steps, outputs\n"
               "            in runs/<RUN> next to RUN.json\n"
               "Paths are written relative to RUN.json's directory: `vpeft train RUN.json` works\n"
               "from any directory. Edit the file, or override at run time with --set (e.g.\n"
               "vpeft train RUN.json --set train.steps=500). docs/hf.md has the whole workflow.\n\n"
               "options:\n"
               "  --hf DIR            the checkpoint directory\n"
               "  --train ANN.json    the training split's COCO annotations\n"
               "  --val ANN.json      the validation split's (the same categories)\n"
               "  --out RUN.json      the config to write (its directory is created); an\n"
               "                      existing file is refused without --force\n"
               "  --image N           input side in pixels, a multiple of 32 from 32 to 4096\n"
               "                      (default 384)\n"
               "  --train-images DIR  where the training images are (default: the annotation\n"
               "                      file's directory, which file_name is relative to)\n"
               "  --val-images DIR    likewise for the validation split\n"
               "  --force             replace an existing RUN.json\n"
               "  -h, --help          this help\n\n"
               "exit status: 0 written, 1 a dataset or file that cannot be read, 2 a usage error,\n"
               "a malformed dataset or a directory that is not a checkpoint vpeft loads\n");
}

static int bad_usage(const char *what, const char *arg)
{
    fprintf(stderr, "vpeft init: %s%s%s%s (see vpeft init --help)\n", what, arg ? " '" : "",
            arg ? arg : "", arg ? "'" : "");
    return 2;
}

/* The path from directory `from` to `to`, both absolute and canonical
 * (realpath): "x/y", "../x" or "." ; false when it does not fit. */
static bool relative(const char *from, const char *to, char *out, size_t n)
{
    size_t common = 0;
    /* the longest common prefix that ends at a component boundary */
    for (size_t i = 0;; i++) {
        bool fe = from[i] == '\0' || from[i] == '/', te = to[i] == '\0' || to[i] == '/';
        if (fe && te)
            common = i;
        if (from[i] != to[i] || !from[i] || !to[i])
            break;
    }
    if (!strcmp(from, "/"))
        common = 0;
    size_t k = 0;
    out[0] = '\0';
    for (const char *p = from + common; *p; p++) /* one ".." per component left in from */
        if (*p == '/' && p[1]) {
            int w = snprintf(out + k, n - k, "%s..", k ? "/" : "");
            if (w < 0 || (size_t)w >= n - k)
                return false;
            k += (size_t)w;
        }
    const char *rest = to + common;
    while (*rest == '/')
        rest++;
    int w = snprintf(out + k, n - k, "%s%s", k && *rest ? "/" : "", rest);
    if (w < 0 || (size_t)w >= n - k)
        return false;
    if (!out[0])
        snprintf(out, n, ".");
    return true;
}


/* A path given on the command line, canonical, then relative to the
 * config's directory base. */
static vp_status rel_arg(const char *opt, const char *path, bool dir, const char *base, char *out,
                         size_t n)
{
    char *real = realpath(path, NULL);
    if (!real)
        return vp_error_set(errno == ENOENT ? VP_ERR_NOT_FOUND : VP_ERR_IO, "%s %s: %s", opt,
                            path, strerror(errno));
    struct stat sb;
    vp_status st = VP_OK;
    if (stat(real, &sb) || (dir ? !S_ISDIR(sb.st_mode) : !S_ISREG(sb.st_mode)))
        st = vp_error_set(VP_ERR_INVALID, "%s %s: not a %s", opt, path,
                          dir ? "directory" : "regular file");
    else if (!relative(base, real, out, n))
        st = vp_error_set(VP_ERR_INVALID, "%s %s: the path is too long", opt, path);
    free(real);
    return st;
}

/* The checkpoint: a directory vpeft can build and load (config.json of a
 * supported model_type, model.safetensors or its index); *labels gets the
 * checkpoint's class count (0 when config.json does not say). */
static vp_status check_checkpoint(const char *dir, int64_t *labels)
{
    *labels = 0;
    char *real = realpath(dir, NULL);
    if (!real)
        return vp_error_set(VP_ERR_CONFIG, "--hf %s: %s", dir, strerror(errno));
    char path[PATH_MAX + 64];
    struct stat sb;
    vp_status st = VP_OK;
    snprintf(path, sizeof path, "%s/config.json", real);
    if (stat(real, &sb) || !S_ISDIR(sb.st_mode))
        st = vp_error_set(VP_ERR_CONFIG, "--hf %s: not a directory (a Hugging Face checkpoint "
                          "directory holds config.json and model.safetensors)", dir);
    else if (stat(path, &sb))
        st = vp_error_set(VP_ERR_CONFIG, "--hf %s: no config.json: not a Hugging Face "
                          "checkpoint directory (config.json and model.safetensors)", dir);
    else if (!S_ISREG(sb.st_mode))
        st = vp_error_set(VP_ERR_CONFIG, "--hf %s: config.json is not a regular file", dir);
    bool weights = false;
    static const char *const names[] = {"model.safetensors", "model.safetensors.index.json"};
    for (int i = 0; !st && i < 2 && !weights; i++) {
        char w[PATH_MAX + 64];
        snprintf(w, sizeof w, "%s/%s", real, names[i]);
        weights = !stat(w, &sb) && S_ISREG(sb.st_mode);
    }
    if (!st && !weights)
        st = vp_error_set(VP_ERR_CONFIG, "--hf %s: no model.safetensors (nor a sharded "
                          "model.safetensors.index.json): not a Hugging Face checkpoint "
                          "directory", dir);
    /* model_type and backbone_config as model.hf reads them */
    vp_strbuf b = {0};
    vp_strbuf_printf(&b, "{\"model\": {\"hf\": ");
    vp_strbuf_json(&b, real);
    vp_strbuf_printf(&b, "}}");
    char *text = vp_strbuf_done(&b);
    vp_config *c = NULL;
    if (!st && !text)
        st = vp_error_set(VP_ERR_NOMEM, "out of host memory");
    if (!st)
        st = vp_cfg_parse(text, strlen(text), "init.json", &c);
    if (!st)
        st = vp_model_hf_expand(c);
    vp_cfg_free(c);
    free(text);
    vp_config *hf = NULL;
    if (!st && !vp_cfg_load(path, &hf)) {
        const vp_config *ids = vp_cfg_get(hf, "id2label");
        if (vp_cfg_type_of(hf, "num_labels") != VP_CFG_ABSENT)
            vp_cfg_int(hf, "num_labels", 0, labels);
        else if (ids && vp_cfg_len(ids) > 0)
            *labels = vp_cfg_len(ids);
    }
    vp_cfg_free(hf);
    free(real);
    return st;
}

/* Both splits list the same categories (ids, in order): the class the
 * model predicts is a position in that list. */
static vp_status same_categories(const vp_dataset *a, const vp_dataset *b)
{
    uint32_t na = vp_dataset_classes(a), nb = vp_dataset_classes(b), k = 0;
    while (k < na && k < nb && vp_dataset_category_id(a, k) == vp_dataset_category_id(b, k))
        k++;
    if (k == na && na == nb)
        return VP_OK;
    return vp_error_set(VP_ERR_INVALID, "%s: its categories are not %s's (%u against %u; the "
                        "first difference at position %u): both splits must list the same "
                        "categories", vp_dataset_path(b), vp_dataset_path(a), nb, na, k);
}

/* One split: {"format": "coco", "annotations": ..., "images": ...}. */
static void split(vp_strbuf *b, const char *key, const char *ann, const char *images)
{
    vp_strbuf_printf(b, "    \"%s\": {\"format\": \"coco\", \"annotations\": ", key);
    vp_strbuf_json(b, ann);
    if (images) {
        vp_strbuf_printf(b, ", \"images\": ");
        vp_strbuf_json(b, images);
    }
    vp_strbuf_printf(b, "},\n");
}

int vp_cli_init(int argc, char **argv)
{
    static const struct option opts[] = {{"hf", required_argument, NULL, 'H'},
                                         {"train", required_argument, NULL, 't'},
                                         {"val", required_argument, NULL, 'v'},
                                         {"out", required_argument, NULL, 'o'},
                                         {"image", required_argument, NULL, 'i'},
                                         {"train-images", required_argument, NULL, 'T'},
                                         {"val-images", required_argument, NULL, 'V'},
                                         {"force", no_argument, NULL, 'f'},
                                         {"help", no_argument, NULL, 'h'},
                                         {NULL, 0, NULL, 0}};
    const char *hf = NULL, *train = NULL, *val = NULL, *out = NULL, *train_img = NULL,
               *val_img = NULL;
    long image = 384;
    bool force = false;
    int c;
    opterr = 0;
    optind = 1;
    while ((c = getopt_long(argc, argv, ":h", opts, NULL)) != -1) {
        char *end;
        switch (c) {
        case 'h':
            usage(stdout);
            return 0;
        case 'H': hf = optarg; break;
        case 't': train = optarg; break;
        case 'v': val = optarg; break;
        case 'o': out = optarg; break;
        case 'T': train_img = optarg; break;
        case 'V': val_img = optarg; break;
        case 'f': force = true; break;
        case 'i':
            errno = 0;
            image = strtol(optarg, &end, 10);
            if (!*optarg || *end || errno || image < 32 || image > 4096 || image % 32)
                return bad_usage("--image must be a multiple of 32 from 32 to 4096, not", optarg);
            break;
        default:
            return bad_usage(c == ':' ? "missing value for" : "unknown option", argv[optind - 1]);
        }
    }
    if (optind < argc)
        return bad_usage("unexpected argument", argv[optind]);
    if (!hf || !train || !val || !out)
        return bad_usage(!hf      ? "--hf is required (the checkpoint directory)"
                         : !train ? "--train is required (the training annotations)"
                         : !val   ? "--val is required (the validation annotations)"
                                  : "--out is required (the config to write)",
                         NULL);
    size_t ol = strlen(out);
    if (!ol || out[ol - 1] == '/')
        return bad_usage("--out names a file, not", out);
    struct stat sb;
    if (!force && !lstat(out, &sb)) {
        fprintf(stderr, "vpeft init: %s exists (--force replaces it)\n", out);
        return 2;
    }

    /* The config's directory, made, as the base of every relative path. */
    char dir[PATH_MAX], stem[256];
    const char *slash = strrchr(out, '/'), *name = slash ? slash + 1 : out;
    snprintf(dir, sizeof dir, "%.*s", slash ? (int)(slash - out) + (slash == out) : 1,
             slash ? out : ".");
    size_t nl = strlen(name);
    if (nl > 5 && !strcmp(name + nl - 5, ".json"))
        nl -= 5;
    snprintf(stem, sizeof stem, "%.*s", (int)(nl < 200 ? nl : 200), name);
    vp_status st = vp_mkdir_p(dir);
    char *base = st ? NULL : realpath(dir, NULL);
    if (!st && !base)
        st = vp_error_set(VP_ERR_IO, "%s: %s", dir, strerror(errno));
    int64_t labels = 0;
    if (!st)
        st = check_checkpoint(hf, &labels);
    char r_hf[PATH_MAX], r_train[PATH_MAX], r_val[PATH_MAX], r_ti[PATH_MAX], r_vi[PATH_MAX];
    if (!st)
        st = rel_arg("--hf", hf, true, base, r_hf, sizeof r_hf);
    if (!st)
        st = rel_arg("--train", train, false, base, r_train, sizeof r_train);
    if (!st)
        st = rel_arg("--val", val, false, base, r_val, sizeof r_val);
    if (!st && train_img)
        st = rel_arg("--train-images", train_img, true, base, r_ti, sizeof r_ti);
    if (!st && val_img)
        st = rel_arg("--val-images", val_img, true, base, r_vi, sizeof r_vi);
    free(base);
    if (st) { /* the options name something unusable: a usage error */
        fprintf(stderr, "vpeft init: %s\n", vp_error_last());
        return st == VP_ERR_IO || st == VP_ERR_NOMEM ? 1 : 2;
    }

    /* The datasets as training will read them: images found, classes. */
    vp_dataset *dt = NULL, *dv = NULL;
    vp_dataset_opts dopt = {.skip_bad = true};
    st = vp_dataset_load(train, train_img, &dopt, &dt);
    if (!st)
        st = vp_dataset_load(val, val_img, &dopt, &dv);
    if (!st)
        st = same_categories(dt, dv);
    if (st) {
        fprintf(stderr, "vpeft: %s\n", vp_error_last());
        vp_dataset_destroy(dt);
        vp_dataset_destroy(dv);
        return vp_cli_exit_code(st);
    }
    uint32_t classes = vp_dataset_classes(dt), skipped = vp_dataset_skipped(dt) +
                                                         vp_dataset_skipped(dv);

    vp_strbuf b = {0};
    vp_strbuf_printf(&b, "{\n  \"model\": {\"hf\": ");
    vp_strbuf_json(&b, r_hf);
    vp_strbuf_printf(&b, ", \"image\": %ld, \"classes\": %u},\n", image, classes);
    vp_strbuf_printf(&b, "  \"peft\": [\n    {\"plugin\": \"lora\", \"r\": 8, \"lora_alpha\": 8,\n"
                       "     \"target_modules\": " VP_HF_LORA_TARGETS "}\n  ],\n");
    vp_strbuf_printf(&b, "  \"train\": {\n");
    split(&b, "data", r_train, train_img ? r_ti : NULL);
    split(&b, "val", r_val, val_img ? r_vi : NULL);
    vp_strbuf_printf(&b, "    \"trainable\": " VP_HF_EMBED_TRAINABLE ",\n"
                       "    \"steps\": 2000, \"batch\": 2, \"lr\": 2e-4, \"warmup\": 100, "
                       "\"schedule\": \"cosine\", \"min_lr\": 1e-6,\n"
                       "    \"weight_decay\": 0.05, \"clip_grad_norm\": 1.0, \"seed\": 0,\n"
                       "    \"log_every\": 10, \"eval_every\": 500, \"checkpoint_every\": 250,\n");
    if (skipped)
        vp_strbuf_printf(&b, "    \"skip_bad_annotations\": true,\n");
    vp_strbuf_printf(&b, "    \"out\": ");
    char run[300];
    snprintf(run, sizeof run, "runs/%s", stem);
    vp_strbuf_json(&b, run);
    vp_strbuf_printf(&b, "\n  }\n}\n");
    char *text = vp_strbuf_done(&b);
    st = text ? vp_file_write_atomic(out, text, strlen(text))
              : vp_error_set(VP_ERR_NOMEM, "out of host memory");
    free(text);
    if (st) {
        fprintf(stderr, "vpeft: %s\n", vp_error_last());
    } else {
        printf("init: wrote %s: %s, %ld pixels, %u classes", out, hf, image, classes);
        if (labels && labels != (int64_t)classes)
            printf(" (the checkpoint's %lld: class_predictor starts from random values)",
                   (long long)labels);
        printf("; LoRA r 8 on query, value, q_proj, v_proj; %u train and %u val images%s\n"
               "train it with: vpeft train %s\n",
               vp_dataset_size(dt), vp_dataset_size(dv),
               skipped ? " (bad annotations skipped: skip_bad_annotations)" : "", out);
    }
    vp_dataset_destroy(dt);
    vp_dataset_destroy(dv);
    return st ? 1 : 0;
}
