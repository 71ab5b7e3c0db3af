/*
 * The small transformer of tinymodel.h.
 */
#include "tinymodel.h"

#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

static vp_gt *param(vp_graph *g, vt_tiny *m, const char *name, int ndim, const int64_t *shape)
{
    vp_gt *p = vp_g_param(g, name, ndim, shape, true);
    if (p && m->n_params < VT_TINY_MAX_PARAMS)
        m->params[m->n_params++] = p;
    return p;
}

static vp_gt *linear(vp_graph *g, vt_tiny *m, const char *name, vp_gt *x, int64_t in,
                     int64_t out)
{
    char wn[64], bn[64];
    snprintf(wn, sizeof wn, "%s.weight", name);
    snprintf(bn, sizeof bn, "%s.bias", name);
    vp_gt *w = param(g, m, wn, 2, (int64_t[]){out, in});
    vp_gt *b = param(g, m, bn, 1, (int64_t[]){out});
    return vp_g_linear(g, x, w, b);
}

static vp_gt *layernorm(vp_graph *g, vt_tiny *m, const char *name, vp_gt *x, int64_t C)
{
    char wn[64], bn[64];
    snprintf(wn, sizeof wn, "%s.weight", name);
    snprintf(bn, sizeof bn, "%s.bias", name);
    vp_gt *w = param(g, m, wn, 1, (int64_t[]){C});
    vp_gt *b = param(g, m, bn, 1, (int64_t[]){C});
    return vp_g_layernorm(g, x, w, b, 1e-6f);
}

vp_status vt_tiny_build(vp_graph *g, const vt_tiny_cfg *c, vt_tiny *m)
{
    memset(m, 0, sizeof *m);
    int64_t B = c->batch, N = (int64_t)c->side * c->side, D = c->width, H = c->heads;
    int64_t L = 2, P = c->points, Dh = D / H;
    m->x = vp_g_input(g, "tokens", 3, (int64_t[]){B, N, D});
    m->target = vp_g_input(g, "target", 3, (int64_t[]){B, N, c->out});
    vp_gt *x = m->x;
    char name[64];
    for (int i = 0; i < c->blocks; i++) {
        snprintf(name, sizeof name, "blocks.%d.norm1", i);
        vp_gt *h = layernorm(g, m, name, x, D);
        vp_gt *q, *k, *v;
        snprintf(name, sizeof name, "blocks.%d.attn.q", i);
        q = linear(g, m, name, h, D, D);
        snprintf(name, sizeof name, "blocks.%d.attn.k", i);
        k = linear(g, m, name, h, D, D);
        snprintf(name, sizeof name, "blocks.%d.attn.v", i);
        v = linear(g, m, name, h, D, D);
        snprintf(name, sizeof name, "blocks.%d.attn.proj", i);
        x = vp_g_add(g, x, linear(g, m, name, vp_g_attention(g, q, k, v, NULL, (int)H), D, D));
        snprintf(name, sizeof name, "blocks.%d.norm2", i);
        h = layernorm(g, m, name, x, D);
        snprintf(name, sizeof name, "blocks.%d.mlp.fc1", i);
        h = vp_g_gelu(g, linear(g, m, name, h, D, c->mlp));
        snprintf(name, sizeof name, "blocks.%d.mlp.fc2", i);
        x = vp_g_add(g, x, linear(g, m, name, h, c->mlp, D));
    }

    /* Deformable attention over the map and its 2x2 max-pool. */
    int64_t s = c->side, s2 = s / 2, S = s * s + s2 * s2;
    vp_gt *map = vp_g_reshape(g, x, 4, (int64_t[]){B, s, s, D});
    vp_gt *pooled = vp_g_reshape(g, vp_g_maxpool2(g, map), 3, (int64_t[]){B, s2 * s2, D});
    vp_gt *levels_in = vp_g_concat(g, (vp_gt *[]){x, pooled}, 2, 1); /* (B, S, D) */
    vp_gt *value = vp_g_reshape(g, linear(g, m, "deform.value_proj", levels_in, D, D), 4,
                                (int64_t[]){B, S, H, Dh});
    vp_gt *query = layernorm(g, m, "deform.norm", x, D);
    vp_gt *off = vp_g_reshape(g, linear(g, m, "deform.sampling_offsets", query, D, H * L * P * 2),
                              4, (int64_t[]){B, N, H, L * P * 2});
    /* Reference points: each token's centre, for every head, level and point. */
    float *ref = malloc((size_t)(N * H * L * P * 2) * sizeof *ref);
    if (!ref)
        return vp_error_set(VP_ERR_NOMEM, "out of host memory");
    for (int64_t t = 0; t < N; t++)
        for (int64_t j = 0; j < H * L * P; j++) {
            ref[(t * H * L * P + j) * 2] = (float)((t % s) + 0.5) / (float)s;
            ref[(t * H * L * P + j) * 2 + 1] = (float)((t / s) + 0.5) / (float)s;
        }
    vp_gt *refc = vp_g_const(g, "deform.reference_points", 3, (int64_t[]){N, H, L * P * 2}, ref);
    free(ref);
    vp_gt *loc = vp_g_add(g, vp_g_scale(g, off, 1.0f / (float)s), refc);
    vp_gt *attn = vp_g_softmax(g, vp_g_reshape(g, linear(g, m, "deform.attention_weights", query,
                                                          D, H * L * P),
                                               4, (int64_t[]){B, N, H, L * P}));
    vp_msdeform_levels lv = {2, {{s, s}, {s2, s2}}, {0, s * s}};
    vp_gt *d = vp_g_msdeform(g, value, &lv, loc, attn); /* (B, N, D) */
    x = vp_g_add(g, x, linear(g, m, "deform.output_proj", d, D, D));

    vp_gt *y = linear(g, m, "head", layernorm(g, m, "norm", x, D), D, c->out);
    vp_gt *diff = vp_g_add(g, y, vp_g_scale(g, m->target, -1.0f));
    m->loss = vp_g_mean(g, vp_g_mul(g, diff, diff));
    return vp_graph_status(g);
}

void vt_tiny_init(const vp_gt *p, float *out, uint64_t seed)
{
    const char *name = vp_gt_name(p);
    int64_t n = vp_gt_nelem(p);
    bool bias = strstr(name, ".bias") != NULL;
    bool norm = strstr(name, "norm") != NULL;
    double a = vp_gt_ndim(p) == 2 ? 1.0 / sqrt((double)vp_gt_shape(p)[1]) : 0.1;
    uint64_t st = seed * 0x9e3779b97f4a7c15ull + 7;
    for (int64_t i = 0; i < n; i++) {
        st ^= st << 13, st ^= st >> 7, st ^= st << 17;
        double u = (double)(st >> 11) / (double)(1ull << 53) * 2.0 - 1.0;
        out[i] = (float)(norm && !bias ? 1.0 + 0.1 * u : bias ? 0.1 * u : a * u);
    }
}
