/*
 * bench_peft: what a PEFT method saves against full fine-tuning of the same
 * model, measured in the same run: a small vit + mask2former model (a
 * 64x64 image, ViT width 64, 2 layers; the head at width 64 with 2
 * encoder and 3 decoder layers), trained on one fixed batch of two images
 * with full fine-tuning, head-only fine-tuning, and PEFT methods. For each:
 * trainable parameters, device memory by part (parameters, gradients, AdamW
 * state, activations) and step time, and the ratios to full fine-tuning.
 * Numbers only; nothing passes or fails.
 *
 *   bench_peft            5 timed steps each
 *   bench_peft --steps N
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "config/config.h"
#include "model/model.h"
#include "runtime/runtime.h"

static double now(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + 1e-9 * (double)ts.tv_nsec;
}

static void die(const char *what)
{
    fprintf(stderr, "bench_peft: %s: %s\n", what, vp_error_last());
    exit(1);
}

static double mib(uint64_t b) { return (double)b / (1 << 20); }

enum { B = 2, IMG = 64, T = 3, HM = IMG / 4 }; /* masks at the pyramid's stride 4 */

static const char *model =
    "\"model\": {\"backbone\": {\"plugin\": \"vit\", \"image\": 64, \"patch\": 8, \"width\": 64, "
    "\"depth\": 2, \"heads\": 4, \"out_channels\": 64}, "
    "\"head\": {\"plugin\": \"mask2former\", \"classes\": 4, \"queries\": 20, \"hidden\": 64, "
    "\"heads\": 4, \"encoder_layers\": 2, \"decoder_layers\": 3, \"points\": 2, "
    "\"encoder_ffn\": 128, \"decoder_ffn\": 128, \"mask_dim\": 64, \"max_targets\": 3}}";

typedef struct row {
    const char *name, *extra;
} row;

typedef struct result {
    uint64_t trainable, all;
    vp_graph_mem mem;
    double ms;
} result;

static result run(vp_device *dev, const char *extra, int steps)
{
    char text[4096];
    snprintf(text, sizeof text, "{%s%s%s}", model, *extra ? ", " : "", extra);
    vp_config *c;
    vp_model *m;
    if (vp_cfg_parse(text, strlen(text), "bench", &c))
        die("config");
    if (vp_model_create(dev, c, &(vp_model_opts){.batch = B, .train = true}, &m))
        die("model");
    vp_graph *g = vp_model_graph(m);
    result r = {0};
    const vp_build *b = vp_model_build(m);
    for (uint32_t i = 0; i < vp_build_param_count(b); i++) {
        vp_gt *t = vp_build_param_at(b, i)->t;
        r.all += (uint64_t)vp_gt_nelem(t);
        r.trainable += vp_gt_trainable(t) ? (uint64_t)vp_gt_nelem(t) : 0;
    }
    /* one batch: noise images, one square instance each */
    static float px[B * 3 * IMG * IMG], masks[B * T * HM * HM];
    static int32_t labels[B * T];
    for (size_t i = 0; i < sizeof px / sizeof *px; i++)
        px[i] = (float)((i * 7919) % 2001) / 1000.0f - 1.0f;
    for (int b2 = 0; b2 < B; b2++)
        for (int t = 0; t < T; t++) {
            labels[b2 * T + t] = t == 0 ? b2 : -1;
            for (int y = 4; y < 10 && t == 0; y++)
                for (int x = 4 + b2; x < 10 + b2; x++)
                    masks[(b2 * T + t) * HM * HM + y * HM + x] = 1.0f;
        }
    if (vp_graph_write(g, vp_model_image(m), px, sizeof px) ||
        vp_graph_write(g, vp_graph_find(g, "target.labels"), labels, sizeof labels) ||
        vp_graph_write(g, vp_graph_find(g, "target.masks"), masks, sizeof masks))
        die("batch");
    double t0 = 0;
    for (int s = 1; s <= 2 + steps; s++) {
        if (s == 3)
            t0 = now();
        float loss;
        if (vp_graph_run(g) || vp_graph_read(g, vp_model_loss(m), &loss, sizeof loss) ||
            vp_graph_step(g, 1e-4f, s))
            die("step");
    }
    r.ms = (now() - t0) * 1e3 / steps;
    r.mem = vp_graph_memory(g);
    vp_model_destroy(m);
    vp_cfg_free(c);
    return r;
}

int main(int argc, char **argv)
{
    int steps = 5;
    for (int i = 1; i < argc; i++) {
        if (!strcmp(argv[i], "--steps") && i + 1 < argc && atoi(argv[i + 1]) > 0) {
            steps = atoi(argv[++i]);
        } else {
            fprintf(stderr, "usage: bench_peft [--steps N]\n");
            return 2;
        }
    }
    vp_instance *inst;
    vp_device *dev;
    uint32_t idx;
    if (vp_instance_create(NULL, &inst) || vp_instance_pick(inst, getenv("VPEFT_DEVICE"), &idx) ||
        vp_device_create(inst, idx, NULL, &dev))
        die("device");
    static const row rows[] = {
        {"full fine-tuning", ""},
        {"head only", "\"train\": {\"trainable\": [\"head.*\"]}"},
        {"lora_deform r 8", "\"peft\": [{\"plugin\": \"lora_deform\", \"r\": 8}]"},
        {"lora_deform + heads", "\"peft\": [{\"plugin\": \"lora_deform\", \"r\": 8}], \"train\": "
                                "{\"trainable\": [\"head.predictor.class_embed.*\", "
                                "\"head.predictor.mask_embed.*\"]}"},
        {"ia3 (template)", "\"peft\": [{\"plugin\": \"ia3\", \"target_modules\": [\"query\", "
                           "\"value\", \"q_proj\", \"v_proj\"]}]"},
    };
    printf("PEFT against full fine-tuning on %s; %d timed steps each (batch %d, %dx%d images)\n",
           vp_device_get_info(dev)->name, steps, B, IMG, IMG);
    printf("%-22s %12s %9s %9s %9s %9s %9s %10s %8s %8s\n", "method", "trainable", "train%",
           "params", "grads", "adamw", "activ.", "step ms", "memory", "time");
    printf("%-22s %12s %9s %9s %9s %9s %9s %10s %8s %8s\n", "", "", "", "MiB", "MiB", "MiB",
           "MiB", "", "x full", "x full");
    result full = {0};
    for (size_t i = 0; i < sizeof rows / sizeof rows[0]; i++) {
        result r = run(dev, rows[i].extra, steps);
        if (i == 0)
            full = r;
        printf("%-22s %12llu %8.2f%% %9.3f %9.3f %9.3f %9.3f %10.1f %8.3f %8.3f\n", rows[i].name,
               (unsigned long long)r.trainable, 100.0 * (double)r.trainable / (double)r.all,
               mib(r.mem.frozen + r.mem.trainable), mib(r.mem.grads), mib(r.mem.optimizer),
               mib(r.mem.activations), r.ms, (double)r.mem.total / (double)full.mem.total,
               r.ms / full.ms);
    }
    vp_device_destroy(dev);
    vp_instance_destroy(inst);
    return 0;
}
