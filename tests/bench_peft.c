/*
 * bench_peft: what a PEFT method saves against full fine-tuning of the same
 * model, measured in the same run: the demo's vit + mask2former model
 * (core/cli/demo.c's DEMO_MODEL: a 128x128 image, patch 16, ViT width 64,
 * 2 layers; the head at width 64 with 2 encoder and 3 decoder layers, 10
 * queries, 5 classes, 8 target slots), trained on one fixed batch of two
 * images with full fine-tuning, head-only fine-tuning, and PEFT methods.
 * For each: trainable parameters, device memory by part (parameters,
 * gradients, AdamW state, activations), dispatches, barriers and submits,
 * the median step time, and the ratios to full fine-tuning
 * (tests/peftbench.c measures). Numbers only; nothing passes or fails.
 *
 *   bench_peft            5 timed steps each
 *   bench_peft --steps N
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "peftbench.h"

enum { B = 2, IMG = 128, T = 8, HM = IMG / 8 }; /* masks at the mask features stride 8 */

static const char *model =
    "\"model\": {\"backbone\": {\"plugin\": \"vit\", \"image\": 128, \"patch\": 16, \"width\": 64, "
    "\"depth\": 2, \"heads\": 4, \"out_channels\": 64}, "
    "\"head\": {\"plugin\": \"mask2former\", \"classes\": 5, \"queries\": 10, \"hidden\": 64, "
    "\"heads\": 4, \"encoder_layers\": 2, \"decoder_layers\": 3, \"levels\": 3, \"points\": 2, "
    "\"encoder_ffn\": 128, \"decoder_ffn\": 128, \"mask_dim\": 64, \"max_targets\": 8}}";

/* one batch: noise images, one square instance each */
static vp_status fill(vp_model *m, void *ctx)
{
    (void)ctx;
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
    vp_graph *g = vp_model_graph(m);
    vp_status st = vp_graph_write(g, vp_model_image(m), px, sizeof px);
    if (!st)
        st = vp_graph_write(g, vp_graph_find(g, "target.labels"), labels, sizeof labels);
    if (!st)
        st = vp_graph_write(g, vp_graph_find(g, "target.masks"), masks, sizeof masks);
    return st;
}

int main(int argc, char **argv)
{
    int steps = 5;
    for (int i = 1; i < argc; i++)
        if (!pb_opt_int(argc, argv, &i, "--steps", &steps)) {
            fprintf(stderr, "usage: bench_peft [--steps N]\n");
            return 2;
        }
    vp_instance *inst;
    vp_device *dev = pb_open("bench_peft", &inst);
    static const struct {
        const char *name, *extra;
    } rows[] = {
        {"full fine-tuning", ""},
        {"head only", "\"train\": {\"trainable\": [\"head.*\"]}"},
        {"lora_deform r 8", "\"peft\": [{\"plugin\": \"lora_deform\", \"r\": 8}]"},
        {"lora_deform + heads", "\"peft\": [{\"plugin\": \"lora_deform\", \"r\": 8}], \"train\": "
                                "{\"trainable\": [\"head.predictor.class_embed.*\", "
                                "\"head.predictor.mask_embed.*\"]}"},
        {"ia3 (template)", "\"peft\": [{\"plugin\": \"ia3\", \"target_modules\": [\"query\", "
                           "\"value\", \"q_proj\", \"v_proj\"]}]"},
    };
    printf("PEFT against full fine-tuning on %s; median of %d timed steps after 2 (batch %d, "
           "%dx%d images)\n", vp_device_get_info(dev)->name, steps, B, IMG, IMG);
    pb_header();
    pb_result full = {0};
    for (size_t i = 0; i < sizeof rows / sizeof rows[0]; i++) {
        char text[4096];
        snprintf(text, sizeof text, "{%s%s%s}", model, *rows[i].extra ? ", " : "", rows[i].extra);
        pb_result r = pb_measure(dev, text, B, 2, steps, fill, NULL);
        if (i == 0)
            full = r;
        pb_row(rows[i].name, &r, &full);
    }
    vp_device_destroy(dev);
    vp_instance_destroy(inst);
    return 0;
}
