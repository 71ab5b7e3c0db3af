/*
 * A small transformer for tests and benchmarks: tokens on a side x side map,
 * pre-norm blocks (layernorm, multi-head self-attention, layernorm, GELU
 * MLP, residuals), then one multi-scale deformable-attention layer over two
 * levels (the map and its 2x2 max-pool), and a linear head regressed onto a
 * target with a mean squared error. Everything through graph calls.
 */
#ifndef VP_TESTS_TINYMODEL_H
#define VP_TESTS_TINYMODEL_H

#include "graph/graph.h"

typedef struct vt_tiny_cfg {
    int batch, side, width, heads, mlp, blocks, out, points;
} vt_tiny_cfg;

#define VT_TINY_MAX_PARAMS 64

typedef struct vt_tiny {
    vp_gt *x;          /* input tokens (batch, side*side, width) */
    vp_gt *target;     /* (batch, side*side, out) */
    vp_gt *loss;
    vp_gt *params[VT_TINY_MAX_PARAMS];
    int n_params;
} vt_tiny;

/* Builds the forward pass and the loss into g (errors are the graph's). */
vp_status vt_tiny_build(vp_graph *g, const vt_tiny_cfg *c, vt_tiny *m);
/* Deterministic initial values for parameter i (n elements): layernorm
 * weights near 1, biases near 0, matrices uniform in +-1/sqrt(fan in). */
void vt_tiny_init(const vp_gt *param, float *out, uint64_t seed);

#endif
