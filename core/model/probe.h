/*
 * The probe model of `vpeft plugin-test` (see probe.c for its layers and
 * site paths).
 */
#ifndef VP_MODEL_PROBE_H
#define VP_MODEL_PROBE_H

#include "model/build.h"

#define VP_PROBE_NAME 96

typedef struct vp_probe_cfg {
    int batch, side, width, heads, mlp, blocks, out, points;
} vp_probe_cfg;

/* The default: 2 blocks, width 16, 2 heads, a 4x4 map, batch 2. */
#define VP_PROBE_DEFAULT ((vp_probe_cfg){2, 4, 16, 2, 32, 2, 4, 2})

typedef struct vp_probe {
    vp_gt *tokens;   /* input (batch, side*side, width) */
    vp_gt *target;   /* input (batch, side*side, out) */
    vp_gt *output;   /* (batch, side*side, out), kept */
    vp_gt *loss;     /* (1) */
} vp_probe;

/* Build into b (PEFT instances added to b attach as it goes); the first
 * error is returned, with its message. */
vp_status vp_probe_build(vp_build *b, const vp_probe_cfg *c, vp_probe *p);
/* A fixed batch: tokens uniform in [-1, 1), targets in [-0.5, 0.5). */
void vp_probe_data(const vp_probe_cfg *c, uint64_t seed, float *tokens, float *target);

#endif
