/*
 * `vpeft demo [--quick]`: the study's comparison in one command. Two
 * synthetic shape domains are generated into a cache, a base model is
 * trained on domain A (cached), and then fine-tuned on domain B with full
 * fine-tuning, head-only training and six PEFT configurations. Each is
 * scored on B's validation split; one table, results.json, a chart of mask
 * AP against trainable % and sample predictions come out.
 */
#include <errno.h>
#include <getopt.h>
#include <limits.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cjson/cJSON.h>
#include <vpeft/version.h>

#include "cli/cli.h"
#include "data/data.h"
#include "eval/cocoeval.h"
#include "io/draw.h"
#include "train/train.h"
#include "util/error.h"
#include "util/file.h"
#include "config.h"
#include "util/sha256.h"
#include "util/strbuf.h"
#include "util/clock.h"

/* --model maskdino: a small ViT (width 64, 2 layers, 16-pixel patches; a
 * 2-core machine without a GPU trains the model at about 5 steps a second)
 * under a small Mask DINO head (docs/maskdino.md) of the same widths: 2
 * encoder layers, 10 queries, 3
 * decoder layers; its losses on every mask cell (targets at the mask
 * logits' 32x32), without denoising queries (faster; the head has them).
 * Its parameters are named under "sem_seg_head." as Mask DINO's are. */
#define DEMO_MODEL_MASKDINO                                                                        \
    "{\"backbone\": {\"plugin\": \"vit\", \"image\": 128, \"patch\": 16, \"width\": 64, "             \
    "\"depth\": 2, \"heads\": 4, \"out_channels\": 64}, "                                           \
    "\"head\": {\"plugin\": \"maskdino\", \"classes\": %d, \"queries\": 10, \"hidden\": 64, "          \
    "\"conv_dim\": 64, \"mask_dim\": 64, \"encoder_layers\": 2, \"encoder_heads\": 4, "            \
    "\"encoder_points\": 2, \"encoder_ffn\": 128, \"decoder_layers\": 3, \"decoder_ffn\": 128, "    \
    "\"levels\": 3, \"max_targets\": 8, \"target_stride\": 4, \"train_num_points\": \"all\", "     \
    "\"dn\": \"no\"}}"

/* The demo's base model of the Hugging Face family (vpeft demo
 * --pretrain): config.json of a Mask2FormerForUniversalSegmentation with
 * a Swin backbone (embed_dim 24, depths 2-2-2-2, window 4), hidden size
 * 32, 10 queries, 7 decoder layers (HF builds six masked-attention
 * layers from that, strides 32, 16, 8 twice): 1.41 M parameters, in HF's layout
 * (transformers 4.57), so HF can load what vpeft trains; its 3 labels are
 * domain A's. */
#define DEMO_BASE_CONFIG \
    "{\"activation_function\": \"relu\", " \
    "\"architectures\": [\"Mask2FormerForUniversalSegmentation\"], \"backbone\": null, " \
    "\"backbone_config\": {\"architectures\": null, \"attention_probs_dropout_prob\": 0.0, " \
    "\"chunk_size_feed_forward\": 0, \"depths\": [2, 2, 2, 2], \"drop_path_rate\": 0.0, " \
    "\"dtype\": null, \"embed_dim\": 24, \"encoder_stride\": 32, \"hidden_act\": \"gelu\", " \
    "\"hidden_dropout_prob\": 0.0, \"hidden_size\": 192, " \
    "\"id2label\": {\"0\": \"LABEL_0\", \"1\": \"LABEL_1\"}, \"image_size\": 128, " \
    "\"initializer_range\": 0.02, \"label2id\": {\"LABEL_0\": 0, \"LABEL_1\": 1}, " \
    "\"layer_norm_eps\": 1e-05, \"mlp_ratio\": 4.0, \"model_type\": \"swin\", " \
    "\"num_channels\": 3, \"num_heads\": [1, 2, 3, 6], \"num_layers\": 4, " \
    "\"out_features\": [\"stage1\", \"stage2\", \"stage3\", \"stage4\"], " \
    "\"out_indices\": [1, 2, 3, 4], \"output_attentions\": false, " \
    "\"output_hidden_states\": false, \"patch_size\": 4, \"qkv_bias\": true, " \
    "\"return_dict\": true, \"stage_names\": [\"stem\", \"stage1\", \"stage2\", " \
    "\"stage3\", \"stage4\"], \"torchscript\": false, \"use_absolute_embeddings\": false, " \
    "\"window_size\": 4}, \"backbone_kwargs\": null, \"chunk_size_feed_forward\": 0, " \
    "\"class_weight\": 2.0, \"common_stride\": 4, \"decoder_layers\": 7, " \
    "\"dice_weight\": 5.0, \"dim_feedforward\": 64, \"dropout\": 0.0, \"dtype\": null, " \
    "\"encoder_feedforward_dim\": 64, \"encoder_layers\": 2, " \
    "\"enforce_input_projection\": false, \"feature_size\": 32, \"feature_strides\": [4, " \
    "8, 16, 32], \"hidden_dim\": 32, \"id2label\": {\"0\": \"circle\", \"1\": \"square\", " \
    "\"2\": \"triangle\"}, \"ignore_value\": 255, \"importance_sample_ratio\": 0.75, " \
    "\"init_std\": 0.02, \"init_xavier_std\": 1.0, \"label2id\": {\"circle\": 0, " \
    "\"square\": 1, \"triangle\": 2}, \"mask_feature_size\": 32, \"mask_weight\": 5.0, " \
    "\"model_type\": \"mask2former\", \"no_object_weight\": 0.1, " \
    "\"num_attention_heads\": 4, \"num_hidden_layers\": 3, \"num_queries\": 10, " \
    "\"output_attentions\": false, \"output_auxiliary_logits\": null, " \
    "\"output_hidden_states\": false, \"oversample_ratio\": 3.0, \"pre_norm\": false, " \
    "\"return_dict\": true, \"torchscript\": false, \"train_num_points\": 12544, " \
    "\"transformers_version\": \"4.57.6\", \"use_auxiliary_loss\": true, " \
    "\"use_pretrained_backbone\": false, \"use_timm_backbone\": false}"

/* --pretrain's data: domain A, and its training recipe. */
#define PRETRAIN_TRAIN 1000
#define PRETRAIN_VAL 200
#define PRETRAIN_STEPS 8000
#define PRETRAIN_SPEED "\"max_targets\": 8, \"target_stride\": 4, \"train_num_points\": \"all\""
#define STR_(x) #x
#define STR(x) STR_(x)

/* The built-in demo's fine-tuning on B from the base: steps of 2 images
 * (--quick's). */
#define DEMO_STEPS 800
#define DEMO_QUICK_STEPS 60
#define DEMO_DEFAULT_TIME "10 minutes"

/* The maskdino demo's two sizes (its model is DEMO_MODEL_MASKDINO). */
typedef struct variant {
    const char *name;
    int size, n_a_train, n_a_val, n_b_train, n_b_val;
    int base_steps, steps, batch;
    double base_lr;
    int samples;       /* predicted pictures per method */
} variant;

static const variant variants[2] = {
    {"default-maskdino", 128, 400, 50, 200, 50, 1500, 400, 2, 2e-3, 4},
    {"quick-maskdino", 128, 64, 16, 48, 16, 300, 60, 2, 2e-3, 2},
};

/* The methods on the maskdino demo's model, by its head's names
 * (sem_seg_head.*): the study's embeddings, trained by every PEFT row (as
 * the study did), LoRA on the backbone, lora_deform, adapters in the head. */
#define EMBED "\"sem_seg_head.predictor.class_embed.*\", " \
              "\"sem_seg_head.predictor.mask_embed.*\""
#define LORA "{\"plugin\": \"lora\", \"r\": 8, \"lora_alpha\": 8, \"target_modules\": " \
             "[\"query\", \"value\"]}"
#define DEFORM "{\"plugin\": \"lora_deform\", \"r\": 8, \"lora_alpha\": 8}"
#define ADAPTER(k) "{\"plugin\": \"adapter\", \"per_site\": " #k ", \"reduction_factor\": 8, " \
                   "\"modules\": [\"sem_seg_head.*\"]}"

/* The same methods on a Hugging Face Mask2Former checkpoint (--hf), by
 * HF module names: LoRA on Swin's and the transformer decoder's query and
 * value projections (vpeft init's), adapters after the attention of the
 * pixel decoder's encoder and of the transformer decoder, the class
 * predictor and the mask embedding MLP trained beside every PEFT method. */
#define HF_HEAD "[\"model.pixel_level_module.decoder.*\", \"model.transformer_module.*\", " \
                "\"class_predictor.*\"]"
#define HF_LORA "{\"plugin\": \"lora\", \"r\": 8, \"lora_alpha\": 8, \"target_modules\": " \
                VP_HF_LORA_TARGETS "}"
#define HF_ADAPTER(k) "{\"plugin\": \"adapter\", \"per_site\": " #k ", \"reduction_factor\": 8, " \
                      "\"modules\": [\"model.pixel_level_module.decoder.*\", " \
                      "\"model.transformer_module.*\"]}"

typedef struct method {
    const char *name, *slug;
    const char *peft;      /* the maskdino demo's "peft" list, or NULL */
    const char *trainable; /* its train.trainable */
    double lr;             /* the built-in demos' rate (PEFT parameters start at 0
                            * or near it: a higher one) */
    /* the same for a Hugging Face checkpoint (--hf); hf_name NULL: name */
    const char *hf_name, *hf_peft, *hf_trainable;
    double hf_lr;
} method;

static const method methods[] = {
    {"full fine-tuning", "full", NULL, "[\"*\"]", 1e-3, NULL, NULL, "[\"*\"]", 1e-4},
    {"head only", "head", NULL, "[\"sem_seg_head.*\"]", 1e-3, NULL, NULL, HF_HEAD, 1e-4},
    {"adapters x1", "adapter1", "[" ADAPTER(1) "]", "[" EMBED "]", 3e-3, NULL,
     "[" HF_ADAPTER(1) "]", VP_HF_EMBED_TRAINABLE, 1e-3},
    {"adapters x2", "adapter2", "[" ADAPTER(2) "]", "[" EMBED "]", 3e-3, NULL,
     "[" HF_ADAPTER(2) "]", VP_HF_EMBED_TRAINABLE, 1e-3},
    {"adapters x3", "adapter3", "[" ADAPTER(3) "]", "[" EMBED "]", 3e-3, NULL,
     "[" HF_ADAPTER(3) "]", VP_HF_EMBED_TRAINABLE, 1e-3},
    {"lora (backbone q, v)", "lora", "[" LORA "]", "[" EMBED "]", 3e-3, "lora (q, v)",
     "[" HF_LORA "]", VP_HF_EMBED_TRAINABLE, 1e-3},
    {"lora_deform", "lora_deform", "[" DEFORM "]", "[" EMBED "]", 3e-3, NULL, "[" DEFORM "]",
     VP_HF_EMBED_TRAINABLE, 1e-3},
    {"lora + lora_deform", "lora_both", "[" LORA ", " DEFORM "]", "[" EMBED "]", 3e-3,
     "lora (q, v) + lora_deform", "[" HF_LORA ", " DEFORM "]", VP_HF_EMBED_TRAINABLE, 1e-3},
};
#define N_METHODS (sizeof methods / sizeof methods[0])

static void usage(FILE *f)
{
    fprintf(f, "usage: vpeft demo [--quick] [--from-scratch] [--out DIR] [--cache DIR]\n"
               "                  [--methods LIST] [--jobs N]\n"
               "       vpeft demo --model maskdino [--quick] [--out DIR] [--cache DIR]\n"
               "                  [--methods LIST]\n"
               "       vpeft demo --pretrain [--steps N] [--out DIR] [--cache DIR]\n"
               "       vpeft demo --hf DIR --train ANN.json --val ANN.json [--steps N]\n"
               "                  [--image N] [--train-images DIR] [--val-images DIR]\n"
               "                  [--out DIR] [--methods LIST] [--jobs N]\n\n"
               "The study's comparison on a machine without a GPU. Starts from the base\n"
               "model shipped with vpeft (a small Swin + Mask2Former of the Hugging Face\n"
               "family, pretrained on domain A of vpeft make-shapes: circles, squares,\n"
               "triangles; its provenance.json says how), generates domain B (other\n"
               "colours, textures and classes) into the cache and fine-tunes the base on\n"
               "B with each method, by Hugging Face module names as --hf does:\n");
    for (size_t i = 0; i < N_METHODS; i++)
        fprintf(f, "  %-12s %s\n", methods[i].slug,
                methods[i].hf_name ? methods[i].hf_name : methods[i].name);
    fprintf(f, "and scores each on B's validation split with COCO mask AP. Prints one\n"
               "table (trainable parameters, trainable %%, AP, AP50, AP75, training time,\n"
               "device memory) and writes DIR/results.json, DIR/chart.png (AP against\n"
               "trainable %%), DIR/curves.png (each method's training loss against steps)\n"
               "and DIR/<method>/ (the run: checkpoint, adapter, log,\n"
               "predictions/*.png on validation images). docs/demo.md explains the numbers.\n\n"
               "options:\n"
               "  --quick        less data and fewer steps (under 2 minutes on 2 CPU\n"
               "                 cores); the default takes about %s there\n"
               "  --from-scratch train the base model on A first, as --pretrain does (35\n"
               "                 minutes on 2 CPU cores; cached), instead of the shipped one\n"
               "  --model M      the head: mask2former (default) or maskdino: a small Mask\n"
               "                 DINO head on a small ViT, trained on A from scratch first\n"
               "                 (docs/maskdino.md; its parameters are sem_seg_head.*, the\n"
               "                 methods' globs follow)\n"
               "  --out DIR      outputs (default runs/demo or runs/demo-quick; with\n"
               "                 --model maskdino runs/demo-maskdino[-quick])\n"
               "  --cache DIR    datasets and the base model (default\n"
               "                 $XDG_CACHE_HOME/vpeft/demo, else ~/.cache/vpeft/demo)\n"
               "  --methods LIST comma-separated method names from the list above\n"
               "                 (default: all)\n"
               "  --jobs N       methods trained at once, each on a device of its own\n"
               "                 (default: on a CPU device one per core, lavapipe then\n"
               "                 single-threaded with LP_NUM_THREADS=0; on a GPU 1); not\n"
               "                 with --model maskdino\n\n"
               "With --pretrain, train the demo's base model of the Hugging Face family (a\n"
               "small Swin + Mask2Former, 1.41 M parameters) from scratch on domain A\n"
               "(%d training images, %d steps by default, long on a CPU), score it on A's\n"
               "%d validation images, and write DIR (default runs/demo-base): config.json\n"
               "and model.safetensors (a checkpoint --hf and vpeft init take) and\n"
               "provenance.json (the command, run config, commit, AP with its interval,\n"
               "the weights' SHA-256); the run itself in DIR/run.\n\n"
               "With --hf, the same table on your own COCO dataset, from the Hugging Face\n"
               "Mask2Former checkpoint in DIR (config.json and model.safetensors, as for\n"
               "vpeft init): each method fine-tunes the checkpoint on --train for --steps\n"
               "steps (default 500) of 2 images at --image pixels (default 384), and is\n"
               "scored on --val; LoRA adapts Swin's and the decoder's query and value, the\n"
               "adapters sit after the head's attention, and the PEFT rows also train the\n"
               "class predictor and the mask embedding (docs/demo.md).\n"
               "  --hf DIR       the checkpoint\n"
               "  --train ANN    the training split's COCO annotations (images relative to\n"
               "                 the file, or in --train-images DIR)\n"
               "  --val ANN      the validation split's (--val-images DIR)\n"
               "  --steps N      fine-tuning steps per method (default 500)\n"
               "  --image N      input side, a multiple of 32 (default 384)\n"
               "  --out DIR      outputs (default runs/demo-hf)\n"
               "  -h, --help     this help\n\n"
               "exit status: 0 done, 1 runtime failure (a file that cannot be read or written,\n"
               "memory, the device), 2 bad usage, config or input (a malformed file)\n",
            DEMO_DEFAULT_TIME, PRETRAIN_TRAIN, PRETRAIN_STEPS, PRETRAIN_VAL);
}


/* A dataset in the cache: made unless its stamp says it is there. */
static vp_status shapes(const char *dir, char domain, int n, int size, uint64_t seed)
{
    char stamp[4200], want[128], *have = NULL;
    size_t len;
    snprintf(stamp, sizeof stamp, "%s/stamp", dir);
    snprintf(want, sizeof want, "vpeft %s shapes %d %c n %d size %d seed %llu\n",
             VP_VERSION_STRING, VP_SHAPES_VERSION, domain, n, size, (unsigned long long)seed);
    if (!vp_file_read(stamp, &have, &len) && !strcmp(have, want)) {
        free(have);
        return VP_OK;
    }
    free(have);
    vp_error_clear();
    fprintf(stderr, "demo: making %s (%d images of domain %c)\n", dir, n, domain);
    vp_status st = vp_shapes_write(&(vp_shapes_opts){dir, domain, n, size, seed});
    return st ? st : vp_file_write_atomic(stamp, want, strlen(want));
}

/* A training and a validation set of one domain in the cache: root/X-train
 * and root/X-val (seeds seed and seed + 1), their directories in train and
 * val (PAIR_PATH bytes each). */
#define PAIR_PATH 4400
static vp_status shapes_pair(const char *root, char domain, int n_train, int n_val, int size,
                             uint64_t seed, char *train, char *val)
{
    snprintf(train, PAIR_PATH, "%s/%c-train", root, domain);
    snprintf(val, PAIR_PATH, "%s/%c-val", root, domain);
    vp_status st = vp_mkdir_p(root);
    if (!st)
        st = shapes(train, domain, n_train, size, seed);
    return st ? st : shapes(val, domain, n_val, size, seed + 1);
}

static uint32_t classes_of(const char *ann)
{
    vp_dataset *ds;
    if (vp_dataset_load(ann, NULL, &(vp_dataset_opts){.skip_bad = true}, &ds))
        return 0;
    uint32_t n = vp_dataset_classes(ds);
    vp_dataset_destroy(ds);
    return n;
}

typedef struct row {
    const method *m;
    const char *name; /* the method's, as this run names it */
    vp_train_result r;
    vp_coco_stats lo, hi; /* the 95% bootstrap interval of r.stats */
    bool done;
} row;

/* Bootstrap resamples of the validation images behind each interval. */
#define DEMO_RESAMPLES 200

static vp_status run_config(vp_device *dev, const char *text, const char *label,
                            vp_train_result *r)
{
    vp_config *cfg;
    vp_status st = vp_cfg_parse(text, strlen(text), "demo", &cfg);
    if (!st)
        st = vp_train_run(dev, cfg, &(vp_train_opts){.label = label}, r);
    vp_cfg_free(cfg);
    return st;
}

/* Pictures of the first n validation images (annotations ann, images
 * relative to it or in images) with run_dir's trained model's instances. */
static vp_status samples(vp_device *dev, const char *text, const char *run_dir, const char *ann,
                         const char *images, int n)
{
    vp_config *cfg;
    vp_model *m = NULL;
    vp_dataset *ds = NULL;
    char weights[4500], dir[4500], png[4600];
    snprintf(weights, sizeof weights, "%s/model.safetensors", run_dir);
    snprintf(dir, sizeof dir, "%s/predictions", run_dir);
    vp_status st = vp_cfg_parse(text, strlen(text), "demo", &cfg);
    if (!st)
        st = vp_cli_infer_model(dev, cfg, weights, NULL, 1, &m);
    if (!st)
        st = vp_dataset_load(ann, images, &(vp_dataset_opts){.skip_bad = true}, &ds);
    if (!st)
        st = vp_mkdir_p(dir);
    for (int i = 0; !st && i < n && (uint32_t)i < vp_dataset_size(ds); i++) {
        const vp_dataset_image *im = vp_dataset_image_at(ds, (uint32_t)i);
        int drawn;
        snprintf(png, sizeof png, "%s/%lld.png", dir, (long long)im->id);
        st = vp_predict_picture(m, im->path, ds, 0.3f, png, &drawn);
    }
    vp_dataset_destroy(ds);
    vp_model_destroy(m);
    vp_cfg_free(cfg);
    return st;
}

static char *config_text(const variant *v, int classes, const char *peft, const char *trainable,
                         const char *train_dir, const char *val_dir, const char *weights,
                         const char *out, int steps, double lr, uint64_t seed)
{
    char model[2048], wkey[4400] = "";
    snprintf(model, sizeof model, DEMO_MODEL_MASKDINO, classes);
    if (weights) { /* the base model's weights under model */
        model[strlen(model) - 1] = '\0';
        snprintf(wkey, sizeof wkey, ", \"weights\": \"%s\"}", weights);
    }
    size_t n = strlen(model) + strlen(wkey) + (peft ? strlen(peft) : 0) + strlen(trainable) +
               3 * 4300 + 1024;
    char *s = malloc(n);
    if (!s)
        return NULL;
    snprintf(s, n,
             "{\"model\": %s%s, %s%s%s\"train\": {"
             "\"data\": {\"annotations\": \"%s/annotations.json\"}, "
             "\"val\": {\"annotations\": \"%s/annotations.json\"}, "
             "\"trainable\": %s, \"steps\": %d, \"batch\": %d, \"lr\": %g, \"warmup\": %d, "
             "\"weight_decay\": 0.05, \"clip_grad_norm\": 1.0, \"seed\": %llu, "
             "\"log_every\": %d, \"checkpoint_every\": %d, \"out\": \"%s\"}}",
             model, wkey, peft ? "\"peft\": " : "", peft ? peft : "", peft ? ", " : "",
             train_dir, val_dir, trainable, steps, v->batch, lr,
             steps / 10, (unsigned long long)seed, steps / 10 > 0 ? steps / 10 : 1, steps, out);
    return s;
}

/* path made absolute against the working directory. */
static bool absolute(const char *path, char *buf, size_t n)
{
    char cwd[PATH_MAX];
    if (path[0] == '/')
        return (size_t)snprintf(buf, n, "%s", path) < n;
    if (!getcwd(cwd, sizeof cwd))
        return false;
    return (size_t)snprintf(buf, n, "%s/%s", cwd, path) < n;
}

static void default_cache(char *buf, size_t n)
{
    const char *x = getenv("XDG_CACHE_HOME"), *home = getenv("HOME");
    if (x && *x)
        snprintf(buf, n, "%s/vpeft/demo", x);
    else if (home && *home)
        snprintf(buf, n, "%s/.cache/vpeft/demo", home);
    else
        snprintf(buf, n, ".vpeft-cache/demo");
}

/* curves.png: each method's training loss against steps, from its
 * log.jsonl (one line per step), as the mean over a window of steps/20
 * (steps skipped for a non-finite loss left out), so methods' curves can
 * be told apart through the per-batch noise. */
/* What the table and the pictures say about a set of runs. */
typedef struct summary {
    const char *variant;  /* "default", "quick", "hf" */
    const char *scored;   /* what the APs are on, for the chart's title */
    int steps, n_val;
} summary;

static vp_status write_curves(const summary *v, const row *rows, size_t n, const char *out)
{
    vp_series sr[N_METHODS];
    double *buf[N_METHODS][2] = {{NULL}};
    size_t ns = 0;
    vp_status st = VP_OK;
    int win = v->steps / 20 > 1 ? v->steps / 20 : 1;
    for (size_t i = 0; !st && i < n; i++) {
        if (!rows[i].done)
            continue;
        char path[4300], *text = NULL;
        size_t len = 0;
        snprintf(path, sizeof path, "%s/%s/log.jsonl", out, rows[i].m->slug);
        if ((st = vp_file_read(path, &text, &len)))
            break;
        size_t lines = 1;
        for (size_t k = 0; k < len; k++)
            lines += text[k] == '\n';
        double *x = malloc(lines * sizeof *x), *y = malloc(lines * sizeof *y);
        double *raw = malloc(lines * sizeof *raw);
        if (!x || !y || !raw) {
            free(x), free(y), free(raw), free(text);
            st = vp_error_set(VP_ERR_NOMEM, "out of host memory");
            break;
        }
        size_t m = 0, got = 0;
        double sum = 0;
        for (char *line = text; line && *line;) {
            char *nl = strchr(line, '\n');
            if (nl)
                *nl = '\0';
            cJSON *o = cJSON_Parse(line);
            const cJSON *stp = cJSON_GetObjectItemCaseSensitive(o, "step");
            const cJSON *ls = cJSON_GetObjectItemCaseSensitive(o, "loss");
            if (cJSON_IsNumber(stp) && cJSON_IsNumber(ls)) {
                raw[got] = ls->valuedouble;
                sum += raw[got++];
                if (got > (size_t)win)
                    sum -= raw[got - 1 - (size_t)win];
                if (got >= (size_t)win) {
                    x[m] = stp->valuedouble;
                    y[m++] = sum / win;
                }
            }
            cJSON_Delete(o);
            line = nl ? nl + 1 : NULL;
        }
        free(raw);
        free(text);
        buf[ns][0] = x;
        buf[ns][1] = y;
        sr[ns++] = (vp_series){rows[i].name, x, y, m};
    }
    char path[4300], title[128];
    snprintf(path, sizeof path, "%s/curves.png", out);
    snprintf(title, sizeof title, "Training loss (mean of %d steps)", win);
    if (!st && ns)
        st = vp_lines_write_png(&(vp_lines){.title = title, .xlabel = "step",
                                            .ylabel = "loss", .series = sr, .n = ns},
                                path);
    for (size_t k = 0; k < ns; k++) {
        free(buf[k][0]);
        free(buf[k][1]);
    }
    return st;
}

static vp_status write_summary(const summary *v, const row *rows, size_t n, const char *out,
                               const char *device, double base_s)
{
    cJSON *j = cJSON_CreateObject(), *arr = cJSON_AddArrayToObject(j, "methods");
    cJSON_AddStringToObject(j, "variant", v->variant);
    cJSON_AddStringToObject(j, "device", device);
    cJSON_AddStringToObject(j, "vpeft", VP_VERSION_STRING);
    cJSON_AddNumberToObject(j, "base_train_seconds", base_s);
    cJSON_AddNumberToObject(j, "steps", v->steps);
    cJSON_AddNumberToObject(j, "val_images", v->n_val);
    char how[128];
    snprintf(how, sizeof how, "95%% percentile bootstrap over the validation images, %d "
             "resamples, seed 0", DEMO_RESAMPLES);
    cJSON_AddStringToObject(j, "intervals", how);
    vp_chart_point pts[N_METHODS];
    size_t np = 0;
    double ref = 0;
    bool have_ref = false;
    for (size_t i = 0; i < n; i++) {
        if (!rows[i].done)
            continue;
        const vp_train_result *r = &rows[i].r;
        double pct = 100.0 * (double)r->trainable / (double)r->total;
        cJSON *o = cJSON_CreateObject();
        cJSON_AddStringToObject(o, "method", rows[i].name);
        cJSON_AddStringToObject(o, "run", rows[i].m->slug);
        cJSON_AddNumberToObject(o, "trainable_params", (double)r->trainable);
        cJSON_AddNumberToObject(o, "all_params", (double)r->total);
        cJSON_AddNumberToObject(o, "trainable_percent", pct);
        cJSON_AddNumberToObject(o, "AP", r->stats.ap);
        cJSON_AddNumberToObject(o, "AP50", r->stats.ap50);
        cJSON_AddNumberToObject(o, "AP75", r->stats.ap75);
        const double ci[3][2] = {{rows[i].lo.ap, rows[i].hi.ap},
                                 {rows[i].lo.ap50, rows[i].hi.ap50},
                                 {rows[i].lo.ap75, rows[i].hi.ap75}};
        static const char *const ci_key[3] = {"AP_ci95", "AP50_ci95", "AP75_ci95"};
        for (int k = 0; k < 3; k++)
            cJSON_AddItemToObject(o, ci_key[k], cJSON_CreateDoubleArray(ci[k], 2));
        cJSON_AddNumberToObject(o, "train_seconds", r->seconds);
        cJSON_AddNumberToObject(o, "device_bytes", (double)r->device_bytes);
        cJSON_AddNumberToObject(o, "final_loss", r->final_loss);
        cJSON_AddItemToArray(arr, o);
        pts[np++] = (vp_chart_point){rows[i].name, pct, 100.0 * r->stats.ap};
        if (!strcmp(rows[i].m->slug, "full")) {
            ref = 100.0 * r->stats.ap;
            have_ref = true;
        }
    }
    char *text = cJSON_Print(j);
    cJSON_Delete(j);
    char path[4300];
    snprintf(path, sizeof path, "%s/results.json", out);
    vp_status st = text ? vp_file_write_atomic(path, text, strlen(text))
                        : vp_error_set(VP_ERR_NOMEM, "out of host memory");
    free(text);
    if (st || !np)
        return st;
    snprintf(path, sizeof path, "%s/chart.png", out);
    char title[256];
    snprintf(title, sizeof title, "Mask AP on %s against trainable parameters", v->scored);
    vp_chart ch = {.title = title,
                   .xlabel = "trainable parameters (%, log scale)",
                   .ylabel = "mask AP (%)",
                   .points = pts,
                   .n = np,
                   .log_x = true,
                   .ref_label = have_ref ? "full fine-tuning" : NULL,
                   .ref_y = ref};
    st = vp_chart_write_png(&ch, path);
    return st ? st : write_curves(v, rows, n, out);
}

/* One method's run: its config kept as <run>/config.json (so that the run
 * can be repeated or extended with vpeft train), trained, its AP's
 * interval from the results file it wrote, pictures of its predictions. */
static vp_status run_method(vp_device *dev, const char *text, const char *run_dir,
                            const method *m, const char *name, const char *val_ann,
                            const char *val_images, int n_samples, row *r)
{
    char path[4500];
    snprintf(path, sizeof path, "%s/config.json", run_dir);
    vp_status st = vp_mkdir_p(run_dir);
    if (!st)
        st = vp_file_write_atomic(path, text, strlen(text));
    if (!st)
        st = run_config(dev, text, m->slug, &r->r);
    if (!st) {
        snprintf(path, sizeof path, "%s/results.json", run_dir);
        vp_coco_stats same;
        st = vp_coco_eval_files_ci(val_ann, path, &(vp_coco_boot){DEMO_RESAMPLES, 0, 0.95},
                                   &same, &r->lo, &r->hi);
    }
    if (!st)
        st = samples(dev, text, run_dir, val_ann, val_images, n_samples);
    r->m = m;
    r->name = name;
    r->done = !st;
    return st;
}

static void print_table(const summary *sm, const row *rows, const char *out, double t_start)
{
    printf("%-26s %11s %8s %17s %17s %6s %8s %10s\n", "method", "trainable", "train%",
           "AP [95% CI]", "AP50 [95% CI]", "AP75", "time s", "memory MiB");
    for (size_t i = 0; i < N_METHODS; i++) {
        if (!rows[i].done)
            continue;
        const vp_train_result *r = &rows[i].r;
        printf("%-26s %11llu %7.2f%% %5.1f [%4.1f,%5.1f] %5.1f [%4.1f,%5.1f] %6.1f %8.1f "
               "%10.1f\n", rows[i].name, (unsigned long long)r->trainable,
               100.0 * (double)r->trainable / (double)r->total, 100.0 * r->stats.ap,
               100.0 * rows[i].lo.ap, 100.0 * rows[i].hi.ap, 100.0 * r->stats.ap50,
               100.0 * rows[i].lo.ap50, 100.0 * rows[i].hi.ap50, 100.0 * r->stats.ap75,
               r->seconds, (double)r->device_bytes / (1 << 20));
    }
    /* the adapters-per-site curve, beside the study's finding */
    int na = 0;
    char curve[256] = "";
    for (size_t i = 0; i < N_METHODS; i++)
        if (rows[i].done && !strncmp(rows[i].m->slug, "adapter", 7)) {
            size_t len = strlen(curve);
            snprintf(curve + len, sizeof curve - len, "%s%s %.1f [%.1f, %.1f]", na++ ? ", " : "",
                     rows[i].m->slug + 7, 100.0 * rows[i].r.stats.ap, 100.0 * rows[i].lo.ap,
                     100.0 * rows[i].hi.ap);
        }
    if (na > 1)
        printf("\nadapters per site -> AP: %s (the study found 2-3 per site best)\n", curve);
    printf("\nAP in %% (COCO mask AP, IoU .50:.95), with its 95%% interval by the percentile "
           "bootstrap over the\n%d validation images (%d resamples): rows whose intervals do "
           "not overlap differ beyond the\nchoice of images. time: the fine-tuning steps; "
           "memory: the training graph's device memory.\n", sm->n_val, DEMO_RESAMPLES);
    printf("wrote %s/results.json, %s/chart.png, %s/curves.png and %s/<method>/predictions/ in "
           "%.0f s\n", out, out, out, out, vp_now_s() - t_start);
}

/* --hf: the same table on a user's COCO dataset from a Hugging Face
 * Mask2Former checkpoint. Paths are absolute. */
typedef struct hf_demo {
    const char *dir, *train, *val, *train_images, *val_images, *out;
    long steps, image;
    const bool *use;
    /* the built-in demo's (NULL, 0 for --hf): the variant's name, the
     * base model's line for the table's title, "model" keys beside
     * "hf", whether its methods take method.lr (else method.hf_lr),
     * pictures */
    const char *variant, *base_line, *model_extra;
    bool method_lr;
    int samples;
    long jobs; /* --jobs: rows side by side (0: the device's choice) */
} hf_demo;

static char *config_text_hf(const hf_demo *h, uint32_t classes, const method *m,
                            const char *run_dir)
{
    vp_strbuf b = {0};
    vp_strbuf_str(&b, "{\"model\": {\"hf\": ");
    vp_strbuf_json(&b, h->dir);
    vp_strbuf_printf(&b, ", \"image\": %ld, \"classes\": %u", h->image, classes);
    if (h->model_extra)
        vp_strbuf_printf(&b, ", %s", h->model_extra);
    vp_strbuf_str(&b, "}, ");
    if (m->hf_peft)
        vp_strbuf_printf(&b, "\"peft\": %s, ", m->hf_peft);
    vp_strbuf_str(&b, "\"train\": {\"data\": {\"annotations\": ");
    vp_strbuf_json(&b, h->train);
    if (h->train_images) {
        vp_strbuf_str(&b, ", \"images\": ");
        vp_strbuf_json(&b, h->train_images);
    }
    vp_strbuf_str(&b, "}, \"val\": {\"annotations\": ");
    vp_strbuf_json(&b, h->val);
    if (h->val_images) {
        vp_strbuf_str(&b, ", \"images\": ");
        vp_strbuf_json(&b, h->val_images);
    }
    long tenth = h->steps / 10 > 0 ? h->steps / 10 : 1;
    vp_strbuf_printf(&b, "}, \"trainable\": %s, \"steps\": %ld, \"batch\": 2, \"lr\": %g, "
                     "\"warmup\": %ld, \"schedule\": \"cosine\", \"weight_decay\": 0.05, "
                     "\"clip_grad_norm\": 1.0, \"seed\": 5, \"log_every\": %ld, "
                     "\"checkpoint_every\": %ld, \"out\": ",
                     m->hf_trainable, h->steps, h->method_lr ? m->lr : m->hf_lr,
                     h->steps / 10, tenth, h->steps);
    vp_strbuf_json(&b, run_dir);
    vp_strbuf_str(&b, "}}");
    return vp_strbuf_done(&b);
}

/* ---- rows side by side ---------------------------------------------------- */

/* On a CPU device a row's small training step gains nothing from a second
 * core: lavapipe's hand-over of each dispatch to its worker threads costs
 * more than they save (docs/ops.md). So there the rows run side by side,
 * one per core, each on a device of its own, with lavapipe running each
 * dispatch on the calling thread (LP_NUM_THREADS=0). Rows are independent
 * and each is deterministic, so the table is the same either way. */

typedef struct jobs {
    const hf_demo *h;
    uint32_t classes;
    row *rows;
    pthread_mutex_t mu;
    size_t next;          /* the next method to look at */
    vp_status st;         /* the first failure; then no new row starts */
    char err[1024];
} jobs;

typedef struct job_worker {
    jobs *j;
    vp_instance *inst; /* the job's own (lavapipe serializes the devices of one) */
    vp_device *dev;
    pthread_t th;
} job_worker;

static vp_status demo_row(const hf_demo *h, uint32_t classes, vp_device *dev, size_t i, row *r)
{
    char run_dir[4400];
    snprintf(run_dir, sizeof run_dir, "%s/%s", h->out, methods[i].slug);
    char *text = config_text_hf(h, classes, &methods[i], run_dir);
    vp_status st = text ? VP_OK : vp_error_set(VP_ERR_NOMEM, "out of host memory");
    if (!st)
        st = run_method(dev, text, run_dir, &methods[i],
                        methods[i].hf_name ? methods[i].hf_name : methods[i].name, h->val,
                        h->val_images, h->samples ? h->samples : 4, r);
    free(text);
    return st;
}

static void *job_main(void *arg)
{
    job_worker *w = arg;
    jobs *j = w->j;
    for (;;) {
        pthread_mutex_lock(&j->mu);
        size_t i = j->next;
        while (i < N_METHODS && !j->h->use[i])
            i++;
        j->next = i + 1;
        bool stop = j->st || i >= N_METHODS;
        pthread_mutex_unlock(&j->mu);
        if (stop)
            return NULL;
        vp_status st = demo_row(j->h, j->classes, w->dev, i, &j->rows[i]);
        if (st) {
            pthread_mutex_lock(&j->mu);
            if (!j->st) {
                j->st = st;
                snprintf(j->err, sizeof j->err, "%s", vp_error_last());
            }
            pthread_mutex_unlock(&j->mu);
        }
    }
}

/* How many rows run at once on dev: --jobs, else on a CPU device where
 * lavapipe runs single-threaded the online cores, else 1; at most n. */
static size_t n_jobs(const hf_demo *h, const vp_device *dev, size_t n)
{
    const char *lp = getenv("LP_NUM_THREADS");
    long k = 1;
    if (h->jobs > 0)
        k = h->jobs;
    else if (vp_device_get_info(dev)->type == VK_PHYSICAL_DEVICE_TYPE_CPU && lp && !strcmp(lp, "0"))
        k = sysconf(_SC_NPROCESSORS_ONLN);
    if (k > (long)n)
        k = (long)n;
    return k > 1 ? (size_t)k : 1;
}

/* Every row of h->use into rows: on dev and, with more than one job, on
 * devices of the same kind made for the other jobs, each in a thread and
 * each from an instance of its own: lavapipe runs the compute of all the
 * devices of one instance under one lock (measured: two jobs on devices of
 * one instance used one core between them). */
static vp_status run_rows(const hf_demo *h, uint32_t classes, vp_device *dev, row *rows)
{
    size_t n = 0;
    for (size_t i = 0; i < N_METHODS; i++)
        n += h->use[i];
    size_t k = n_jobs(h, dev, n);
    jobs j = {.h = h, .classes = classes, .rows = rows};
    job_worker w[N_METHODS] = {{0}};
    vp_status st = VP_OK;
    for (size_t t = 1; t < k && !st; t++) {
        st = vp_cli_instance(&w[t].inst);
        if (!st)
            st = vp_device_create(w[t].inst, vp_device_get_info(dev)->index, NULL, &w[t].dev);
    }
    if (st) {
        for (size_t t = 1; t < k; t++) {
            vp_device_destroy(w[t].dev);
            vp_instance_destroy(w[t].inst);
        }
        return st;
    }
    if (k > 1)
        fprintf(stderr, "demo: %zu rows at a time, each on a device of its own\n", k);
    pthread_mutex_init(&j.mu, NULL);
    size_t started = 1;
    for (size_t t = 1; t < k; t++) {
        w[t].j = &j;
        if (pthread_create(&w[t].th, NULL, job_main, &w[t]))
            break; /* the threads started (and this one) do the rows */
        started++;
    }
    w[0].j = &j;
    w[0].dev = dev;
    job_main(&w[0]);
    for (size_t t = 1; t < started; t++)
        pthread_join(w[t].th, NULL);
    for (size_t t = 1; t < k; t++) { /* one at a time: each saves its pipeline cache */
        vp_device_destroy(w[t].dev);
        vp_instance_destroy(w[t].inst);
    }
    pthread_mutex_destroy(&j.mu);
    return j.st ? vp_error_set(j.st, "%s", j.err) : VP_OK;
}

static int demo_hf(const hf_demo *h)
{
    double t_start = vp_now_s();
    vp_dataset *dt = NULL, *dv = NULL;
    vp_dataset_opts dopt = {.skip_bad = true};
    vp_status st = vp_dataset_load(h->train, h->train_images, &dopt, &dt);
    if (!st)
        st = vp_dataset_load(h->val, h->val_images, &dopt, &dv);
    uint32_t classes = dt ? vp_dataset_classes(dt) : 0, n_val = dv ? vp_dataset_size(dv) : 0;
    vp_dataset_destroy(dt);
    vp_dataset_destroy(dv);
    if (!st)
        st = vp_mkdir_p(h->out);
    if (st) {
        fprintf(stderr, "vpeft: %s\n", vp_error_last());
        return vp_cli_exit_code(st);
    }
    /* lavapipe single-threaded, for rows side by side (before it starts) */
    size_t n_rows = 0;
    for (size_t i = 0; i < N_METHODS; i++)
        n_rows += h->use[i];
    if (h->jobs != 1 && n_rows > 1 && !getenv("LP_NUM_THREADS"))
        setenv("LP_NUM_THREADS", "0", 1);
    vp_instance *inst;
    if (vp_cli_instance(&inst))
        return 1;
    vp_device *dev = NULL;
    st = vp_cli_device(inst, &dev);
    row rows[N_METHODS] = {{0}};
    if (!st)
        st = run_rows(h, classes, dev, rows);
    summary sm = {h->variant ? h->variant : "hf", h->variant ? "domain B" : "the validation split",
                  (int)h->steps, (int)n_val};
    if (!st)
        st = write_summary(&sm, rows, N_METHODS, h->out,
                           dev ? vp_device_get_info(dev)->name : "?", 0);
    if (st) {
        fprintf(stderr, "vpeft: %s\n", vp_error_last());
    } else if (h->variant) {
        printf("\nvpeft demo (%s, mask2former head): fine-tuning %s on domain B for %ld "
               "steps, scored on its %u validation images\n", h->variant, h->base_line, h->steps,
               n_val);
        print_table(&sm, rows, h->out, t_start);
    } else {
        printf("\nvpeft demo --hf %s: %ld steps on %s, scored on %u validation images\n",
               h->dir, h->steps, h->train, n_val);
        print_table(&sm, rows, h->out, t_start);
    }
    vp_device_destroy(dev);
    vp_instance_destroy(inst);
    return st ? vp_cli_exit_code(st) : 0;
}

/* The source tree's commit, with "-dirty" when it has changes, for the
 * provenance; "unknown" outside a git checkout. */
static void source_commit(char *out, size_t n)
{
    snprintf(out, n, "unknown");
    char cmd[4300];
    snprintf(cmd, sizeof cmd, "git -C '%s' describe --always --dirty --abbrev=40 2>/dev/null",
             VP_CONFIG_SRCDIR);
    if (strchr(VP_CONFIG_SRCDIR, '\''))
        return;
    FILE *p = popen(cmd, "r");
    if (!p)
        return;
    char line[256];
    if (fgets(line, sizeof line, p) && line[0] && line[0] != '\n') {
        line[strcspn(line, "\n")] = '\0';
        snprintf(out, n, "%s", line);
    }
    pclose(p);
}

/* --pretrain: the base model trained from scratch on domain A into dir
 * (config.json, model.safetensors, provenance.json; the run in dir/run),
 * scored on A's validation split with its interval. */
static int demo_pretrain(const char *cache, const char *dir, long steps, int argc, char **argv)
{
    double t_start = vp_now_s();
    char root[4300], a_train[PAIR_PATH], a_val[PAIR_PATH], run[4400], path[4500];
    snprintf(root, sizeof root, "%s/pretrain", cache);
    snprintf(run, sizeof run, "%s/run", dir);
    vp_status st = shapes_pair(root, 'A', PRETRAIN_TRAIN, PRETRAIN_VAL, 128, 1, a_train, a_val);
    if (!st)
        st = vp_mkdir_p(dir);
    snprintf(path, sizeof path, "%s/config.json", dir);
    if (!st)
        st = vp_file_write_atomic(path, DEMO_BASE_CONFIG, strlen(DEMO_BASE_CONFIG));
    vp_strbuf b = {0};
    vp_strbuf_str(&b, "{\"model\": {\"hf\": ");
    vp_strbuf_json(&b, dir);
    vp_strbuf_str(&b, ", \"pretrained\": false, \"image\": 128, " PRETRAIN_SPEED "}, "
                      "\"train\": {\"data\": {\"annotations\": ");
    snprintf(path, sizeof path, "%s/annotations.json", a_train);
    vp_strbuf_json(&b, path);
    vp_strbuf_str(&b, "}, \"val\": {\"annotations\": ");
    char val_ann[4500];
    snprintf(val_ann, sizeof val_ann, "%s/annotations.json", a_val);
    vp_strbuf_json(&b, val_ann);
    long every = steps / 4 > 0 ? steps / 4 : 1;
    vp_strbuf_printf(&b, "}, \"trainable\": [\"*\"], \"steps\": %ld, \"batch\": 2, "
                         "\"lr\": 1e-3, \"warmup\": %ld, \"schedule\": \"cosine\", "
                         "\"weight_decay\": 0.05, \"clip_grad_norm\": 1.0, \"seed\": 1, "
                         "\"log_every\": %ld, \"eval_every\": %ld, \"checkpoint_every\": %ld, "
                         "\"out\": ", steps, steps / 30, steps / 100 > 0 ? steps / 100 : 1,
                     every, every);
    vp_strbuf_json(&b, run);
    vp_strbuf_str(&b, "}}");
    char *text = vp_strbuf_done(&b);
    if (!st && !text)
        st = vp_error_set(VP_ERR_NOMEM, "out of host memory");
    if (st) {
        fprintf(stderr, "vpeft: %s\n", vp_error_last());
        free(text);
        return vp_cli_exit_code(st);
    }
    vp_instance *inst;
    if (vp_cli_instance(&inst)) {
        free(text);
        return 1;
    }
    vp_device *dev = NULL;
    st = vp_cli_device(inst, &dev);
    fprintf(stderr, "demo: training the base model from scratch on domain A (%ld steps; %d "
            "images, scored on %d)\n", steps, PRETRAIN_TRAIN, PRETRAIN_VAL);
    vp_train_result r;
    if (!st)
        st = run_config(dev, text, "base (A)", &r);
    vp_coco_stats same, lo, hi;
    char res[4500], hex[65] = "", src[4500], commit[256];
    snprintf(res, sizeof res, "%s/results.json", run);
    if (!st)
        st = vp_coco_eval_files_ci(val_ann, res, &(vp_coco_boot){DEMO_RESAMPLES, 0, 0.95}, &same,
                                   &lo, &hi);
    /* the weights beside config.json, as a checkpoint directory */
    char *w = NULL;
    size_t wn = 0;
    snprintf(src, sizeof src, "%s/model.safetensors", run);
    snprintf(path, sizeof path, "%s/model.safetensors", dir);
    if (!st)
        st = vp_file_read(src, &w, &wn);
    if (!st)
        st = vp_file_write_atomic(path, w, wn);
    free(w);
    if (!st)
        st = vp_sha256_file(path, hex);
    if (!st) {
        source_commit(commit, sizeof commit);
        cJSON *j = cJSON_CreateObject();
        vp_strbuf cmd = {0};
        vp_strbuf_str(&cmd, "vpeft");
        for (int i = 0; i < argc; i++) { /* argv[0] is "demo" */
            vp_strbuf_str(&cmd, " ");
            vp_strbuf_str(&cmd, argv[i]);
        }
        char *cmd_s = vp_strbuf_done(&cmd);
        cJSON_AddStringToObject(j, "command", cmd_s ? cmd_s : "");
        free(cmd_s);
        cJSON_AddStringToObject(j, "vpeft", VP_VERSION_STRING);
        cJSON_AddStringToObject(j, "commit", commit);
        cJSON_AddStringToObject(j, "device", dev ? vp_device_get_info(dev)->name : "?");
        cJSON_AddItemToObject(j, "run_config", cJSON_Parse(text));
        char data[256];
        snprintf(data, sizeof data, "vpeft make-shapes --domain A --n %d --size 128 --seed 1",
                 PRETRAIN_TRAIN);
        cJSON_AddStringToObject(j, "train_data", data);
        snprintf(data, sizeof data, "vpeft make-shapes --domain A --n %d --size 128 --seed 2",
                 PRETRAIN_VAL);
        cJSON_AddStringToObject(j, "val_data", data);
        cJSON_AddNumberToObject(j, "train_seconds", r.seconds);
        cJSON_AddNumberToObject(j, "final_loss", r.final_loss);
        cJSON *ev = cJSON_AddObjectToObject(j, "A_val");
        const double ci[3][2] = {{lo.ap, hi.ap}, {lo.ap50, hi.ap50}, {lo.ap75, hi.ap75}};
        cJSON_AddNumberToObject(ev, "AP", r.stats.ap);
        cJSON_AddItemToObject(ev, "AP_ci95", cJSON_CreateDoubleArray(ci[0], 2));
        cJSON_AddNumberToObject(ev, "AP50", r.stats.ap50);
        cJSON_AddItemToObject(ev, "AP50_ci95", cJSON_CreateDoubleArray(ci[1], 2));
        cJSON_AddNumberToObject(ev, "AP75", r.stats.ap75);
        cJSON_AddItemToObject(ev, "AP75_ci95", cJSON_CreateDoubleArray(ci[2], 2));
        cJSON *wf = cJSON_AddObjectToObject(j, "weights");
        cJSON_AddStringToObject(wf, "file", "model.safetensors");
        cJSON_AddNumberToObject(wf, "bytes", (double)wn);
        cJSON_AddStringToObject(wf, "sha256", hex);
        cJSON_AddStringToObject(j, "log", "run/log.jsonl");
        char *out = cJSON_Print(j);
        cJSON_Delete(j);
        snprintf(path, sizeof path, "%s/provenance.json", dir);
        st = out ? vp_file_write_atomic(path, out, strlen(out))
                 : vp_error_set(VP_ERR_NOMEM, "out of host memory");
        free(out);
    }
    free(text);
    if (st) {
        fprintf(stderr, "vpeft: %s\n", vp_error_last());
    } else {
        printf("vpeft demo --pretrain: mask AP %.1f [%.1f, %.1f], AP50 %.1f [%.1f, %.1f] on "
               "domain A's %d validation images after %ld steps (%.0f s)\n",
               100 * r.stats.ap, 100 * lo.ap, 100 * hi.ap, 100 * r.stats.ap50, 100 * lo.ap50,
               100 * hi.ap50, PRETRAIN_VAL, steps, vp_now_s() - t_start);
        printf("wrote %s/config.json, model.safetensors (sha256 %s) and provenance.json; the "
               "run in %s\n", dir, hex, run);
    }
    vp_device_destroy(dev);
    vp_instance_destroy(inst);
    return st ? vp_cli_exit_code(st) : 0;
}

/* The base model shipped with vpeft (core/cli/demo-base/, installed to
 * <prefix>/share/vpeft/demo-base/): the source tree's when this build's
 * has one, else the installed one. */
static bool shipped_base(char *dir, size_t n)
{
    static const char *const where[2][2] = {{VP_CONFIG_SRCDIR, "/core/cli/demo-base"},
                                            {VP_CONFIG_PREFIX, "/share/vpeft/demo-base"}};
    for (int k = 0; k < 2; k++) {
        char path[4500];
        snprintf(dir, n, "%s%s", where[k][0], where[k][1]);
        snprintf(path, sizeof path, "%s/provenance.json", dir);
        if (!access(path, R_OK))
            return true;
    }
    return false;
}

/* dir's provenance.json (as --pretrain writes it): the weights' SHA-256
 * checked against it, and a line for the table's title. */
static vp_status base_provenance(const char *dir, char *line, size_t n)
{
    char path[4500], *text = NULL, hex[65];
    size_t len;
    snprintf(path, sizeof path, "%s/provenance.json", dir);
    vp_status st = vp_file_read(path, &text, &len);
    if (st)
        return st;
    cJSON *j = cJSON_ParseWithLength(text, len);
    free(text);
    const cJSON *w = cJSON_GetObjectItemCaseSensitive(j, "weights");
    const cJSON *sha = cJSON_GetObjectItemCaseSensitive(w, "sha256");
    const cJSON *ev = cJSON_GetObjectItemCaseSensitive(j, "A_val");
    const cJSON *ap = cJSON_GetObjectItemCaseSensitive(ev, "AP");
    const cJSON *ci = cJSON_GetObjectItemCaseSensitive(ev, "AP_ci95");
    const cJSON *rc = cJSON_GetObjectItemCaseSensitive(j, "run_config");
    const cJSON *steps = cJSON_GetObjectItemCaseSensitive(
        cJSON_GetObjectItemCaseSensitive(rc, "train"), "steps");
    if (!cJSON_IsString(sha) || !cJSON_IsNumber(ap) || cJSON_GetArraySize(ci) != 2 ||
        !cJSON_IsNumber(steps)) {
        cJSON_Delete(j);
        return vp_error_set(VP_ERR_FORMAT, "%s: not a provenance file of vpeft demo --pretrain "
                            "(weights.sha256, A_val.AP, A_val.AP_ci95, run_config.train.steps)",
                            path);
    }
    snprintf(path, sizeof path, "%s/model.safetensors", dir);
    st = vp_sha256_file(path, hex);
    if (!st && strcmp(hex, sha->valuestring))
        st = vp_error_set(VP_ERR_FORMAT, "%s: its SHA-256 is %s, %s/provenance.json says %s "
                          "(a damaged or replaced file)", path, hex, dir, sha->valuestring);
    if (!st)
        snprintf(line, n, "the base model %s (%.0f steps on domain A from scratch; mask AP %.1f "
                 "[%.1f, %.1f] on A's validation split)", dir, steps->valuedouble,
                 100 * ap->valuedouble, 100 * cJSON_GetArrayItem(ci, 0)->valuedouble,
                 100 * cJSON_GetArrayItem(ci, 1)->valuedouble);
    cJSON_Delete(j);
    return st;
}

/* The built-in demo with the mask2former head: the base model (shipped,
 * or with --from-scratch trained into the cache as --pretrain does)
 * fine-tuned on domain B by every method, by HF module names as --hf.
 * cache and out are absolute. */
static int demo_builtin(const char *cache, const char *out, bool quick, bool scratch,
                        const bool *use, long jobs, int argc, char **argv)
{
    int n_train = quick ? 200 : 1000, n_val = quick ? 50 : 200;
    char root[4300], b_train[PAIR_PATH], b_val[PAIR_PATH], base[4400], line[4800];
    char train_ann[4500], val_ann[4500], path[4500];
    snprintf(root, sizeof root, "%s/%s-shapes%d", cache, quick ? "quick" : "default",
             VP_SHAPES_VERSION);
    vp_status st = shapes_pair(root, 'B', n_train, n_val, 128, 3, b_train, b_val);
    if (st) {
        fprintf(stderr, "vpeft: %s\n", vp_error_last());
        return 1;
    }
    if (scratch) {
        /* reused only when its stamp says it was trained with this recipe */
        static const char recipe[] = "vpeft " VP_VERSION_STRING " steps " STR(PRETRAIN_STEPS)
                                     " config " DEMO_BASE_CONFIG "\n";
        char *have = NULL;
        size_t len;
        snprintf(base, sizeof base, "%s/base-scratch-shapes%d", cache, VP_SHAPES_VERSION);
        snprintf(path, sizeof path, "%s/stamp", base);
        bool cached = !vp_file_read(path, &have, &len) && !strcmp(have, recipe);
        free(have);
        vp_error_clear();
        if (cached) {
            fprintf(stderr, "demo: using the base model trained from scratch before, %s\n", base);
        } else {
            int rc = demo_pretrain(cache, base, PRETRAIN_STEPS, argc, argv);
            if (rc)
                return rc;
            if ((st = vp_file_write_atomic(path, recipe, strlen(recipe)))) {
                fprintf(stderr, "vpeft: %s\n", vp_error_last());
                return 1;
            }
        }
    } else if (!shipped_base(base, sizeof base)) {
        fprintf(stderr, "vpeft demo: the shipped base model is in neither %s/core/cli/demo-base "
                "nor %s/share/vpeft/demo-base; train one with --from-scratch (35 minutes on 2 "
                "CPU cores)\n", VP_CONFIG_SRCDIR, VP_CONFIG_PREFIX);
        return 1;
    }
    if ((st = base_provenance(base, line, sizeof line))) {
        fprintf(stderr, "vpeft: %s\n", vp_error_last());
        return 1;
    }
    fprintf(stderr, "demo: starting from %s\n", line);
    snprintf(train_ann, sizeof train_ann, "%s/annotations.json", b_train);
    snprintf(val_ann, sizeof val_ann, "%s/annotations.json", b_val);
    hf_demo h = {.dir = base, .train = train_ann, .val = val_ann, .out = out,
                 .steps = quick ? DEMO_QUICK_STEPS : DEMO_STEPS, .image = 128, .use = use,
                 .variant = quick ? "quick" : "default", .base_line = line,
                 .model_extra = PRETRAIN_SPEED, .method_lr = true,
                 .samples = quick ? 2 : 4, .jobs = jobs};
    return demo_hf(&h);
}

int vp_cli_demo(int argc, char **argv)
{
    static const struct option opts[] = {{"quick", no_argument, NULL, 'q'},
                                         {"out", required_argument, NULL, 'o'},
                                         {"cache", required_argument, NULL, 'c'},
                                         {"methods", required_argument, NULL, 'm'},
                                         {"hf", required_argument, NULL, 'H'},
                                         {"train", required_argument, NULL, 't'},
                                         {"val", required_argument, NULL, 'v'},
                                         {"train-images", required_argument, NULL, 'T'},
                                         {"val-images", required_argument, NULL, 'V'},
                                         {"steps", required_argument, NULL, 's'},
                                         {"image", required_argument, NULL, 'i'},
                                         {"pretrain", no_argument, NULL, 'P'},
                                         {"from-scratch", no_argument, NULL, 'S'},
                                         {"model", required_argument, NULL, 'M'},
                                         {"jobs", required_argument, NULL, 'j'},
                                         {"help", no_argument, NULL, 'h'},
                                         {NULL, 0, NULL, 0}};
    const variant *v = &variants[0];
    const char *out = NULL, *cache = NULL, *only = NULL;
    const char *hf = NULL, *hf_paths[4] = {NULL}; /* train, val, train-images, val-images */
    const char *head = NULL; /* --model */
    long steps = 0, image = 0, n_jobs_opt = 0;
    bool quick = false, pretrain = false, scratch = false;
    int c;
    opterr = 0;
    optind = 1;
    while ((c = getopt_long(argc, argv, ":h", opts, NULL)) != -1) {
        if (c == 'h') {
            usage(stdout);
            return 0;
        } else if (c == 'q') {
            v = &variants[1];
            quick = true;
        } else if (c == 'H') {
            hf = optarg;
        } else if (c == 'P') {
            pretrain = true;
        } else if (c == 'S') {
            scratch = true;
        } else if (c == 'M') {
            if (strcmp(optarg, "mask2former") && strcmp(optarg, "maskdino")) {
                fprintf(stderr, "vpeft demo: --model '%s': expected mask2former or maskdino (see "
                        "vpeft demo --help)\n", optarg);
                return 2;
            }
            head = optarg;
        } else if (c == 't' || c == 'v' || c == 'T' || c == 'V') {
            hf_paths[c == 't' ? 0 : c == 'v' ? 1 : c == 'T' ? 2 : 3] = optarg;
        } else if (c == 's' || c == 'i' || c == 'j') {
            char *end;
            errno = 0;
            long x = strtol(optarg, &end, 10);
            bool ok = !errno && end != optarg && !*end &&
                      (c == 's'   ? x >= 1 && x <= 10000000
                       : c == 'j' ? x >= 1 && x <= (long)N_METHODS
                                  : x >= 32 && x <= 4096 && x % 32 == 0);
            if (!ok) {
                char jobs_range[64];
                snprintf(jobs_range, sizeof jobs_range, "a number from 1 to %d", (int)N_METHODS);
                fprintf(stderr, "vpeft demo: %s '%s': expected %s (see vpeft demo --help)\n",
                        c == 's' ? "--steps" : c == 'j' ? "--jobs" : "--image", optarg,
                        c == 's'   ? "a number of steps from 1 to 10000000"
                        : c == 'j' ? jobs_range
                                   : "a multiple of 32 from 32 to 4096");
                return 2;
            }
            if (c == 's')
                steps = x;
            else if (c == 'j')
                n_jobs_opt = x;
            else
                image = x;
        } else if (c == 'o') {
            out = optarg;
        } else if (c == 'c') {
            cache = optarg;
        } else if (c == 'm') {
            only = optarg;
        } else {
            fprintf(stderr, "vpeft demo: %s '%s' (see vpeft demo --help)\n",
                    c == ':' ? "missing value for" : "unknown option", argv[optind - 1]);
            return 2;
        }
    }
    if (optind < argc) {
        fprintf(stderr, "vpeft demo: unexpected argument '%s' (see vpeft demo --help)\n",
                argv[optind]);
        return 2;
    }
    bool any_hf = hf_paths[0] || hf_paths[1] || hf_paths[2] || hf_paths[3] || image;
    const char *bad = hf && pretrain ? "--pretrain and --hf do not go together"
                      : pretrain && (any_hf || quick || only)
                          ? "--pretrain takes --steps, --out and --cache only"
                      : hf && (!hf_paths[0] || !hf_paths[1]) ? "--hf needs --train and --val"
                      : !hf && !pretrain && (any_hf || steps)
                          ? "--train, --val, --train-images, --val-images, --steps and --image "
                            "go with --hf (--steps also with --pretrain)"
                      : hf && (quick || cache) ? "--quick and --cache are the built-in demo's, "
                                                 "not --hf's"
                      : head && (hf || pretrain) ? "--model is the built-in demo's, not --hf's "
                                                   "or --pretrain's"
                      : n_jobs_opt && (pretrain || (head && !strcmp(head, "maskdino")))
                          ? "--jobs is the mask2former demo's and --hf's (--pretrain and "
                            "--model maskdino train one model at a time)"
                      : scratch && (hf || pretrain || (head && !strcmp(head, "maskdino")))
                          ? "--from-scratch is the built-in mask2former demo's (--model "
                            "maskdino always trains its base from scratch)"
                          : NULL;
    if (bad) {
        fprintf(stderr, "vpeft demo: %s (see vpeft demo --help)\n", bad);
        return 2;
    }
    bool maskdino = head && !strcmp(head, "maskdino");
    bool use[N_METHODS];
    for (size_t i = 0; i < N_METHODS; i++) {
        use[i] = !only;
        if (only) {
            size_t len = strlen(methods[i].slug);
            for (const char *p = only; *p;) {
                size_t k = strcspn(p, ",");
                use[i] = use[i] || (k == len && !strncmp(p, methods[i].slug, k));
                p += k + (p[k] == ',');
            }
        }
    }
    if (only) { /* every name must be known */
        for (const char *p = only; *p;) {
            size_t k = strcspn(p, ","), i;
            for (i = 0; i < N_METHODS; i++)
                if (strlen(methods[i].slug) == k && !strncmp(p, methods[i].slug, k))
                    break;
            if (i == N_METHODS) {
                fprintf(stderr, "vpeft demo: --methods: unknown method '%.*s' (see vpeft demo "
                        "--help)\n", (int)k, p);
                return 2;
            }
            p += k + (p[k] == ',');
        }
    }
    if (hf) {
        /* absolute paths, as the runs' configs name them (JSON-escaped) */
        const char *given[6] = {hf, hf_paths[0], hf_paths[1], hf_paths[2], hf_paths[3],
                                out ? out : "runs/demo-hf"};
        static char abs_paths[6][PATH_MAX];
        for (int k = 0; k < 6; k++) {
            if (!given[k])
                continue;
            if (!absolute(given[k], abs_paths[k], sizeof abs_paths[k])) {
                fprintf(stderr, "vpeft: %s: cannot make the path absolute: %s\n", given[k],
                        strerror(errno));
                return 1;
            }
        }
        hf_demo h = {abs_paths[0], abs_paths[1], abs_paths[2],
                     hf_paths[2] ? abs_paths[3] : NULL, hf_paths[3] ? abs_paths[4] : NULL,
                     abs_paths[5], steps ? steps : 500, image ? image : 384, use,
                     NULL, NULL, NULL, 0, 0, n_jobs_opt};
        return demo_hf(&h);
    }
    char cache_buf[4096], out_buf[4096], root[4200];
    if (pretrain) {
        if (!cache) {
            default_cache(cache_buf, sizeof cache_buf);
            cache = cache_buf;
        }
        char cache_abs[PATH_MAX], dir_abs[PATH_MAX];
        if (!absolute(cache, cache_abs, sizeof cache_abs) ||
            !absolute(out ? out : "runs/demo-base", dir_abs, sizeof dir_abs)) {
            fprintf(stderr, "vpeft: %s: cannot make the path absolute: %s\n", cache,
                    strerror(errno));
            return 1;
        }
        return demo_pretrain(cache_abs, dir_abs, steps ? steps : PRETRAIN_STEPS, argc, argv);
    }
    if (!cache) {
        default_cache(cache_buf, sizeof cache_buf);
        cache = cache_buf;
    }
    if (!out) {
        snprintf(out_buf, sizeof out_buf, "runs/demo%s%s", maskdino ? "-maskdino" : "",
                 quick ? "-quick" : "");
        out = out_buf;
    }
    if (strpbrk(cache, "\"\\") || strpbrk(out, "\"\\")) {
        /* they go into the runs' JSON configs as they are */
        fprintf(stderr, "vpeft demo: --cache and --out cannot hold '\"' or '\\'\n");
        return 2;
    }
    /* Absolute paths: the runs' configs (<run>/config.json) name them and
     * must work from wherever they are read. */
    char cache_abs[PATH_MAX], out_abs[PATH_MAX];
    vp_status st = vp_mkdir_p(cache);
    if (!st)
        st = vp_mkdir_p(out);
    if (!st && (!absolute(cache, cache_abs, sizeof cache_abs) ||
                !absolute(out, out_abs, sizeof out_abs)))
        st = vp_error_set(VP_ERR_IO, "%s: cannot make the path absolute: %s", cache,
                          strerror(errno));
    if (st) {
        fprintf(stderr, "vpeft: %s\n", vp_error_last());
        return 1;
    }
    cache = cache_abs;
    out = out_abs;
    if (!maskdino)
        return demo_builtin(cache, out, quick, scratch, use, n_jobs_opt, argc, argv);
    /* by generator version: a base model trained on other data is not reused */
    snprintf(root, sizeof root, "%s/%s-shapes%d", cache, v->name, VP_SHAPES_VERSION);
    double t_start = vp_now_s();
    char a_train[PAIR_PATH], a_val[PAIR_PATH], b_train[PAIR_PATH], b_val[PAIR_PATH],
        base[4300], base_w[4400], ann[4500];
    snprintf(base, sizeof base, "%s/base", root);
    snprintf(base_w, sizeof base_w, "%s/model.safetensors", base);
    st = shapes_pair(root, 'A', v->n_a_train, v->n_a_val, v->size, 1, a_train, a_val);
    if (!st)
        st = shapes_pair(root, 'B', v->n_b_train, v->n_b_val, v->size, 3, b_train, b_val);
    uint32_t ca = 0, cb = 0;
    if (!st) {
        snprintf(ann, sizeof ann, "%s/annotations.json", a_train);
        ca = classes_of(ann);
        snprintf(ann, sizeof ann, "%s/annotations.json", b_train);
        cb = classes_of(ann);
        if (!ca || !cb)
            st = vp_error_set(VP_ERR_FORMAT, "%s: the cached datasets have no classes", root);
    }
    if (st) {
        fprintf(stderr, "vpeft: %s\n", vp_error_last());
        return 1;
    }
    int classes = (int)(ca > cb ? ca : cb);
    vp_instance *inst;
    if (vp_cli_instance(&inst))
        return 1;
    vp_device *dev = NULL;
    st = vp_cli_device(inst, &dev);
    row rows[N_METHODS] = {{0}};
    double base_s = 0;
    /* The base model on A, unless the cache has it (its stamp: the config). */
    char *text = NULL;
    if (!st && !(text = config_text(v, classes, NULL, "[\"*\"]", a_train, a_val, NULL, base,
                                    v->base_steps, v->base_lr, 1)))
        st = vp_error_set(VP_ERR_NOMEM, "out of host memory");
    if (!st) {
        char stamp[4400], *have = NULL;
        size_t len;
        snprintf(stamp, sizeof stamp, "%s/stamp", base);
        if (vp_file_read(stamp, &have, &len) || strcmp(have, text) || access(base_w, R_OK)) {
            vp_error_clear();
            fprintf(stderr, "demo: training the base model on domain A (%d steps; cached in "
                    "%s)\n", v->base_steps, base);
            vp_train_result r;
            double t0 = vp_now_s();
            st = run_config(dev, text, "base (A)", &r);
            base_s = vp_now_s() - t0;
            if (!st)
                st = vp_file_write_atomic(stamp, text, strlen(text));
        } else {
            fprintf(stderr, "demo: using the cached base model %s\n", base_w);
        }
        free(have);
    }
    free(text);
    text = NULL;
    for (size_t i = 0; !st && i < N_METHODS; i++) {
        if (!use[i])
            continue;
        char run_dir[4400], val_ann[4500];
        snprintf(run_dir, sizeof run_dir, "%s/%s", out, methods[i].slug);
        snprintf(val_ann, sizeof val_ann, "%s/annotations.json", b_val);
        if (!(text = config_text(v, classes, methods[i].peft, methods[i].trainable, b_train,
                                 b_val, base_w, run_dir, v->steps, methods[i].lr, 5)))
            st = vp_error_set(VP_ERR_NOMEM, "out of host memory");
        if (!st)
            st = run_method(dev, text, run_dir, &methods[i], methods[i].name, val_ann, NULL,
                            v->samples, &rows[i]);
        free(text);
        text = NULL;
    }
    char scored[64];
    snprintf(scored, sizeof scored, "domain B");
    summary sm = {v->name, scored, v->steps, v->n_b_val};
    if (!st)
        st = write_summary(&sm, rows, N_METHODS, out,
                           dev ? vp_device_get_info(dev)->name : "?", base_s);
    if (st) {
        fprintf(stderr, "vpeft: %s\n", vp_error_last());
    } else {
        printf("\nvpeft demo (%s, maskdino head): fine-tuning on domain B, scored on its %d "
               "validation images\n", v->name, v->n_b_val);
        print_table(&sm, rows, out, t_start);
    }
    vp_device_destroy(dev);
    vp_instance_destroy(inst);
    return st ? 1 : 0;
}
