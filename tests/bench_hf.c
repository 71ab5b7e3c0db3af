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

enum { IMG = 384, STRIDE = 4, T = 4, CLASSES = 80 }; /* T: instance slots per image */

/* A small deterministic generator, so that every method sees the same batch. */
static uint32_t next(uint64_t *s)
{
    *s = *s * 6364136223846793005u + 1442695040888963407u;
    return (uint32_t)(*s >> 33);
}

/* Noise images and 1 to T - 1 random ellipses per image, each a random
 * class; the other slots empty (label -1). Sizes from the graph's own
 * tensors: image (B, 3, IMG, IMG), target.masks (B, T, H, W). */
static vp_status fill(vp_model *m, void *ctx)
{
    (void)ctx;
    vp_graph *g = vp_model_graph(m);
    vp_gt *img = vp_model_image(m), *lab = vp_graph_find(g, "target.labels"),
          *msk = vp_graph_find(g, "target.masks");
    if (!lab || !msk || vp_gt_ndim(msk) != 4) {
        fprintf(stderr, "bench_hf: the model has no target.labels (B, T) and target.masks "
                        "(B, T, H, W)\n");
        exit(1);
    }
    const int64_t *s = vp_gt_shape(msk);
    int64_t b = s[0], t = s[1], h = s[2], w = s[3];
    size_t n_px = (size_t)vp_gt_nelem(img), n_m = (size_t)vp_gt_nelem(msk);
    float *px = malloc(n_px * sizeof *px), *masks = calloc(n_m, sizeof *masks);
    int32_t *labels = malloc((size_t)(b * t) * sizeof *labels);
    if (!px || !masks || !labels) {
        fprintf(stderr, "bench_hf: out of host memory\n");
        exit(1);
    }
    uint64_t seed = 1;
    for (size_t i = 0; i < n_px; i++)
        px[i] = (float)(next(&seed) % 2001) / 1000.0f - 1.0f;
    for (int64_t i = 0; i < b; i++) {
        int64_t n = 1 + (int64_t)(next(&seed) % (uint32_t)(t > 1 ? t - 1 : 1));
        for (int64_t k = 0; k < t; k++) {
            labels[i * t + k] = k < n ? (int32_t)(next(&seed) % CLASSES) : -1;
            if (k >= n)
                continue;
            /* centre anywhere, radii 1/16 to 1/4 of the side */
            double cy = next(&seed) % (uint32_t)h, cx = next(&seed) % (uint32_t)w;
            double ry = h / 16.0 + next(&seed) % (uint32_t)(h * 3 / 16 + 1);
            double rx = w / 16.0 + next(&seed) % (uint32_t)(w * 3 / 16 + 1);
            float *mk = masks + (i * t + k) * h * w;
            for (int64_t y = 0; y < h; y++)
                for (int64_t x = 0; x < w; x++) {
                    double dy = (y - cy) / ry, dx = (x - cx) / rx;
                    mk[y * w + x] = dy * dy + dx * dx <= 1.0 ? 1.0f : 0.0f;
                }
        }
    }
    vp_status st = vp_graph_write(g, img, px, n_px * sizeof *px);
    if (!st)
        st = vp_graph_write(g, lab, labels, (size_t)(b * t) * sizeof *labels);
    if (!st)
        st = vp_graph_write(g, msk, masks, n_m * sizeof *masks);
    free(px);
    free(masks);
    free(labels);
    return st;
}

int main(int argc, char **argv)
{
    int steps = pb_env_int("VPEFT_BENCH_STEPS", 0), batch = pb_env_int("VPEFT_BENCH_BATCH", 1);
    for (int i = 1; i < argc; i++)
        if (!pb_opt_int(argc, argv, &i, "--steps", &steps) &&
            !pb_opt_int(argc, argv, &i, "--batch", &batch)) {
            fprintf(stderr, "usage: bench_hf [--steps N] [--batch B]\n");
            return 2;
        }
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
        pb_result r = pb_measure(dev, text, batch, warmup, steps, fill, NULL);
        if (i == 0)
            full = r;
        pb_row(rows[i].name, &r, &full);
        fflush(stdout);
    }
    vp_device_destroy(dev);
    vp_instance_destroy(inst);
    return 0;
}
