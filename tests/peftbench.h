/*
 * What the PEFT benchmarks share (bench_peft: a small vit + mask2former;
 * bench_hf: Hugging Face's swin-tiny Mask2Former): build a model from a
 * config text for training, write one fixed batch, time training steps
 * (forward, backward, AdamW step) after a warm-up, and print one table row
 * per method with its ratios to full fine-tuning measured in the same run.
 * Any failure prints "<bench>: <what>: <vpeft's last error>" and exits 1:
 * these are programs, not library code. Numbers only; nothing passes or
 * fails on them.
 *
 *     vp_device *dev = pb_open("bench_x", &inst);
 *     pb_result full = pb_measure(dev, "{\"model\": ...}", 2, 1, 5, fill, ctx);
 *     pb_header(2);
 *     pb_row("full fine-tuning", &full, &full);
 */
#ifndef VP_TESTS_PEFTBENCH_H
#define VP_TESTS_PEFTBENCH_H

#include <stdbool.h>

#include "model/model.h"
#include "runtime/runtime.h"

typedef struct pb_result {
    uint64_t trainable, all; /* parameter elements: trainable ones, all (adapters too) */
    vp_graph_mem mem;        /* device memory by part (vp_graph_memory) */
    uint32_t dispatches;     /* per run: forward and backward */
    uint32_t barriers;       /* per run */
    double submits;          /* per step: the run's segments and the optimizer's */
    double ms;               /* median step time */
    char failed[512];        /* why the model could not be built; "" when measured */
} pb_result;

/* Writes one batch's inputs into m's graph (the image, the targets);
 * returns nonzero on failure, with vpeft's last error set. */
typedef vp_status (*pb_batch_fn)(vp_model *m, void *ctx);

/* The first device, or $VPEFT_DEVICE's; prog names the bench in errors.
 * *inst and the device are the caller's to destroy. */
vp_device *pb_open(const char *prog, vp_instance **inst);
_Noreturn void pb_die(const char *what);

/* A positive integer from the environment variable env, or dflt when it is
 * unset; anything else is an error. */
int pb_env_int(const char *env, int dflt);
/* The option --name N at argv[*i] (advancing *i): true when it matched. */
bool pb_opt_int(int argc, char **argv, int *i, const char *name, int *value);

/* Builds json's model for training at this batch, fills the batch once,
 * runs warmup steps, then steps timed one by one; destroys the model. A
 * model that cannot be built (e.g. a buffer past the device's limits) is
 * a row saying why (failed); any later failure ends the program. */
pb_result pb_measure(vp_device *dev, const char *json, int64_t batch, int warmup, int steps,
                     pb_batch_fn fill, void *ctx);

/* A pb_batch_fn: one fixed batch (the same for every method) of noise
 * images and 1 to T - 1 random ellipses per image, each of a random class
 * below *(int *)ctx, the other slots empty; sizes from the graph's image
 * (B, 3, H, W) and target.masks (B, T, h, w). */
vp_status pb_fill_ellipses(vp_model *m, void *ctx);

/* The table: its two header lines, and a row with ratios to full. */
void pb_header(void);
void pb_row(const char *name, const pb_result *r, const pb_result *full);

#endif
