/*
 * bench_maskdino: PEFT against full fine-tuning of the head at the released
 * Mask DINO's shape: the COCO Swin-L instance-segmentation model's resolved
 * config (tests/data/maskdino-swinl: the encoder on res2-res5 plus an extra
 * level, 6 encoder layers, 300 queries, 9 decoder layers, 80 classes; 223M
 * parameters) with random weights, on 384x384 images. One fixed batch of
 * noise images with a few random instances each, trained with the head
 * fine-tuned in full (sem_seg_head.*: 27.6M parameters; the Swin-L
 * backbone frozen in every row, as its 195M parameters' training on a CPU
 * device would take minutes a step), 2 bottleneck adapters after every
 * attention sub-layer of the head (the study's 24 places), LoRA r 8 on the
 * head's FFNs and deformable attention output projections (HF PEFT adapts
 * no out_proj of an nn.MultiheadAttention), and
 * lora_deform r 8 on every deformable attention (encoder and decoder).
 * tests/peftbench.c measures and prints (bench_peft's table). Denoising
 * (the config's DN "seg") is off, as in the numbers docs/testing.md has.
 *
 * Targets at stride 4 (96x96 masks, the mask logits' size); Mask DINO's
 * 112 x 112 importance-sampled points per matched mask. Numbers only;
 * nothing passes or fails.
 *
 *   bench_maskdino                       batch 1; 1 timed step after 1 on a
 *                                        CPU device (lavapipe: about 40 s a
 *                                        step), 20 after 3 on others
 *   bench_maskdino --steps N --batch B   or VPEFT_BENCH_STEPS, VPEFT_BENCH_BATCH
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
            fprintf(stderr, "usage: bench_maskdino [--steps N] [--batch B]\n");
            return 2;
        }
    int classes = 80;
    vp_instance *inst;
    vp_device *dev = pb_open("bench_maskdino", &inst);
    bool cpu = vp_device_get_info(dev)->type == VK_PHYSICAL_DEVICE_TYPE_CPU;
    int warmup = cpu ? 1 : 3;
    if (!steps)
        steps = cpu ? 1 : 20;

    const char *src = getenv("VPEFT_SRCDIR") ? getenv("VPEFT_SRCDIR") : VP_SRCDIR;
    char dir[2048], model[8192];
    if ((size_t)snprintf(dir, sizeof dir, "%s/tests/data/maskdino-swinl", src) >= sizeof dir) {
        fprintf(stderr, "bench_maskdino: VPEFT_SRCDIR is too long\n");
        return 2;
    }
    /* the plugin entries given directly: no checkpoint loads;
     * denoising off (the released config trains with it) */
    snprintf(model, sizeof model,
             "\"model\": {\"backbone\": {\"plugin\": \"swin\", \"detectron2\": \"%s\", "
             "\"image\": %d}, \"head\": {\"plugin\": \"maskdino\", \"detectron2\": \"%s\", "
             "\"max_targets\": %d, \"target_stride\": %d, \"dn\": \"no\"}}",
             dir, IMG, dir, T, STRIDE);
    static const struct {
        const char *name, *extra;
    } rows[] = {
        {"head, full", "\"train\": {\"trainable\": [\"sem_seg_head.*\"]}"},
        {"adapters x2", "\"peft\": [{\"plugin\": \"adapter\", \"sites\": [\"after_attn\"], "
                        "\"modules\": [\"sem_seg_head.*\"], \"per_site\": 2}]"},
        {"lora r 8 (head)", "\"peft\": [{\"plugin\": \"lora\", \"r\": 8, \"lora_alpha\": 8, "
                            "\"target_modules\": [\"sem_seg_head.*linear1\", "
                            "\"sem_seg_head.*linear2\", \"sem_seg_head.*output_proj\"]}]"},
        {"lora_deform r 8", "\"peft\": [{\"plugin\": \"lora_deform\", \"r\": 8, "
                            "\"modules\": [\"sem_seg_head.*\"]}]"},
    };
    printf("Mask DINO, the released Swin-L instance model's shape (%s), random weights, the "
           "backbone frozen, on %s: batch %d, %dx%d images, %d instance slots, targets at "
           "stride %d; median of %d timed steps after %d\n",
           dir, vp_device_get_info(dev)->name, batch, IMG, IMG, T, STRIDE, steps, warmup);
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
