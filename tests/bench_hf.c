/*
 * bench_hf: PEFT against full fine-tuning at a real model's shape: Hugging
 * Face's Mask2Former with a Swin-T backbone (tests/data/hf-m2f-swin-tiny,
 * facebook/mask2former-swin-tiny-coco-instance's architecture, 47.4 M
 * parameters, 80 classes) on 384x384 images, with random weights (the
 * plugin entries are given directly, so no checkpoint loads). One fixed
 * batch of noise images with a few random instances each, trained with full
 * fine-tuning, head only (HF's pixel decoder, transformer module and class
 * predictor; the Swin backbone frozen), LoRA r 8 on the attention
 * projections, and lora_deform r 8 on the pixel decoder's deformable
 * attention. tests/peftbench.c measures and prints (bench_peft's table).
 *
 * The targets are at the mask logits' resolution (target_stride 4: 96x96
 * masks): the head's default, 1, compares every mask prediction (10 with
 * the auxiliary ones) with 384x384 targets, which costs far more memory.
 * Numbers only; nothing passes or fails.
 *
 *   bench_hf                       batch 1; 3 timed steps after 1 on a CPU
 *                                  device (lavapipe), 20 after 3 on others
 *   bench_hf --steps N --batch B   or VPEFT_BENCH_STEPS, VPEFT_BENCH_BATCH
 *
 * The config is read from $VPEFT_SRCDIR/tests/data (the build's source
 * directory when unset).
 */
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "peftbench.h"

#ifndef VP_SRCDIR
#define VP_SRCDIR "."
#endif

enum { IMG = 384, STRIDE = 4, T = 4 }; /* T: instance slots per image */

int main(int argc, char **argv)
{
    int steps = pb_env_int("VPEFT_BENCH_STEPS", 0), batch = pb_env_int("VPEFT_BENCH_BATCH", 1);
    for (int i = 1; i < argc; i++)
        if (!pb_opt_int(argc, argv, &i, "--steps", &steps) &&
            !pb_opt_int(argc, argv, &i, "--batch", &batch)) {
            fprintf(stderr, "usage: bench_hf [--steps N] [--batch B]\n");
            return 2;
        }
    int classes = 80;
    vp_instance *inst;
    vp_device *dev = pb_open("bench_hf", &inst);
    bool cpu = vp_device_get_info(dev)->type == VK_PHYSICAL_DEVICE_TYPE_CPU;
    int warmup = cpu ? 1 : 3;
    if (!steps)
        steps = cpu ? 3 : 20;

    const char *src = getenv("VPEFT_SRCDIR") ? getenv("VPEFT_SRCDIR") : VP_SRCDIR;
    char cfg[2048], model[8192];
    if ((size_t)snprintf(cfg, sizeof cfg, "%s/tests/data/hf-m2f-swin-tiny/config.json", src) >=
        sizeof cfg) {
        fprintf(stderr, "bench_hf: VPEFT_SRCDIR is too long\n");
        return 2;
    }
    snprintf(model, sizeof model,
             "\"model\": {\"backbone\": {\"plugin\": \"swin\", \"hf\": \"%s\", \"names\": "
             "\"mask2former\", \"image\": %d}, \"head\": {\"plugin\": \"mask2former\", \"hf\": "
             "\"%s\", \"max_targets\": %d, \"target_stride\": %d}}",
             cfg, IMG, cfg, T, STRIDE);
    static const struct {
        const char *name, *extra;
    } rows[] = {
        {"full fine-tuning", ""},
        {"head only", "\"train\": {\"trainable\": [\"model.pixel_level_module.decoder.*\", "
                      "\"model.transformer_module.*\", \"class_predictor.*\"]}"},
        {"lora r 8 (q/v)", "\"peft\": [{\"plugin\": \"lora\", \"r\": 8, \"lora_alpha\": 8, "
                           "\"target_modules\": [\"query\", \"value\", \"q_proj\", \"v_proj\"]}]"},
        {"lora_deform r 8", "\"peft\": [{\"plugin\": \"lora_deform\", \"r\": 8}]"},
    };
    printf("swin-tiny Mask2Former (%s), random weights, on %s: batch %d, %dx%d images, "
           "%d instance slots, targets at stride %d (%dx%d; the head's default 1 costs far more "
           "memory); median of %d timed steps after %d\n",
           cfg, vp_device_get_info(dev)->name, batch, IMG, IMG, T, STRIDE, IMG / STRIDE,
           IMG / STRIDE, steps, warmup);
    fflush(stdout);
    pb_header();
    pb_result full = {0};
    for (size_t i = 0; i < sizeof rows / sizeof rows[0]; i++) {
        char text[12288];
        snprintf(text, sizeof text, "{%s%s%s}", model, *rows[i].extra ? ", " : "", rows[i].extra);
        pb_result r = pb_measure(dev, text, batch, warmup, steps, pb_fill_ellipses, &classes);
        if (i == 0)
            full = r;
        pb_row(rows[i].name, &r, &full);
        fflush(stdout);
    }
    vp_device_destroy(dev);
    vp_instance_destroy(inst);
    return 0;
}
