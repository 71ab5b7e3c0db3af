/*
 * The probe model: a small transformer with every kind of site, built
 * through the host table exactly as a backbone plugin builds itself, so
 * that `vpeft plugin-test` can attach a PEFT plugin, check it and train it
 * without a real backbone, head or dataset.
 *
 *   tokens (B, N, D) -> blocks: layernorm, qkv, attention, proj [attn site],
 *   residual, layernorm, fc1, GELU, fc2 [ffn site], residual -> deformable
 *   attention module over the map and its 2x2 max-pool (value_proj,
 *   sampling_offsets, attention_weights, output_proj) -> layernorm, head
 *   linear -> output (B, N, out); loss = mean squared error to target.
 *
 * Site paths: probe.blocks.<i>.attn.qkv, .attn.proj, .mlp.fc1, .mlp.fc2,
 * probe.blocks.<i>.attn (after attention), probe.blocks.<i>.mlp (after the
 * FFN), probe.deform (a deformable module) and its four projections,
 * probe.head.
 */
#include <stdio.h>
#include <stdlib.h>

#include "model/probe.h"
#include "plugin/host.h"

static vp_gt *norm(const vp_host_api *H, vp_build *b, const char *name, vp_gt *x, int64_t C)
{
    char wn[VP_PROBE_NAME], bn[VP_PROBE_NAME];
    snprintf(wn, sizeof wn, "%s.weight", name);
    snprintf(bn, sizeof bn, "%s.bias", name);
    vp_init one = vp_init_ones(), zero = vp_init_zeros();
    vp_gt *w = H->param(b, wn, 1, &C, &one, true);
    vp_gt *bias = H->param(b, bn, 1, &C, &zero, true);
    return H->layernorm(H->graph(b), x, w, bias, 1e-6f);
}

vp_status vp_probe_build(vp_build *b, const vp_probe_cfg *c, vp_probe *p)
{
    const vp_host_api *H = vp_host_api_get();
    vp_graph *g = H->graph(b);
    int64_t B = c->batch, s = c->side, N = s * s, D = c->width, NH = c->heads;
    int64_t L = 2, P = c->points, Dh = D / NH;
    p->tokens = H->input(g, "probe.tokens", 3, (int64_t[]){B, N, D});
    p->target = H->input(g, "probe.target", 3, (int64_t[]){B, N, c->out});
    vp_gt *x = p->tokens;
    char name[VP_PROBE_NAME];
    for (int i = 0; i < c->blocks; i++) {
        snprintf(name, sizeof name, "probe.blocks.%d.norm1", i);
        vp_gt *h = norm(H, b, name, x, D);
        vp_gt *a_in = h; /* the attention sub-layer's input */
        snprintf(name, sizeof name, "probe.blocks.%d.attn.qkv", i);
        vp_gt *qkv = H->site_linear(b, name, h, 3 * D, true, NULL, NULL);
        vp_gt *q = H->slice(g, qkv, 2, 0, D), *k = H->slice(g, qkv, 2, D, D);
        vp_gt *v = H->slice(g, qkv, 2, 2 * D, D);
        snprintf(name, sizeof name, "probe.blocks.%d.attn.proj", i);
        h = H->site_linear(b, name, H->attention(g, q, k, v, NULL, (int)NH), D, true, NULL, NULL);
        snprintf(name, sizeof name, "probe.blocks.%d.attn", i);
        x = H->add(g, x, H->site_output_in(b, name, VP_SITE_ATTN_OUT, a_in, h));
        snprintf(name, sizeof name, "probe.blocks.%d.norm2", i);
        h = norm(H, b, name, x, D);
        vp_gt *f_in = h;
        snprintf(name, sizeof name, "probe.blocks.%d.mlp.fc1", i);
        h = H->gelu(g, H->site_linear(b, name, h, c->mlp, true, NULL, NULL));
        snprintf(name, sizeof name, "probe.blocks.%d.mlp.fc2", i);
        h = H->site_linear(b, name, h, D, true, NULL, NULL);
        snprintf(name, sizeof name, "probe.blocks.%d.mlp", i);
        x = H->add(g, x, H->site_output_in(b, name, VP_SITE_FFN_OUT, f_in, h));
    }

    /* Deformable attention over the map and its 2x2 max-pool, queries at
     * each token's centre. */
    int64_t s2 = s / 2, S = N + s2 * s2;
    H->site_module(b, "probe.deform", VP_SITE_DEFORM);
    vp_gt *map = H->reshape(g, x, 4, (int64_t[]){B, s, s, D});
    vp_gt *pooled = H->reshape(g, H->maxpool2(g, map), 3, (int64_t[]){B, s2 * s2, D});
    vp_gt *levels_in = H->concat(g, (vp_gt *[]){x, pooled}, 2, 1); /* (B, S, D) */
    vp_gt *value = H->reshape(g, H->site_linear(b, "probe.deform.value_proj", levels_in, D, true,
                                                NULL, NULL),
                              4, (int64_t[]){B, S, NH, Dh});
    vp_gt *query = norm(H, b, "probe.deform.norm", x, D);
    vp_gt *off = H->reshape(g, H->site_linear(b, "probe.deform.sampling_offsets", query,
                                              NH * L * P * 2, true, NULL, NULL),
                            4, (int64_t[]){B, N, NH, L * P * 2});
    float *ref = malloc((size_t)(N * NH * L * P * 2) * sizeof *ref);
    if (!ref)
        return H->error(VP_ERR_NOMEM, "out of host memory");
    for (int64_t t = 0; t < N; t++)
        for (int64_t j = 0; j < NH * L * P; j++) {
            ref[(t * NH * L * P + j) * 2] = (float)((t % s) + 0.5) / (float)s;
            ref[(t * NH * L * P + j) * 2 + 1] = (float)((t / s) + 0.5) / (float)s;
        }
    vp_gt *refc = H->constant(g, "probe.deform.reference_points", 3,
                              (int64_t[]){N, NH, L * P * 2}, ref);
    free(ref);
    vp_gt *loc = H->add(g, H->scale(g, off, 1.0f / (float)s), refc);
    vp_gt *aw = H->site_linear(b, "probe.deform.attention_weights", query, NH * L * P, true,
                               NULL, NULL);
    vp_gt *attn = H->softmax(g, H->reshape(g, aw, 4, (int64_t[]){B, N, NH, L * P}));
    vp_msdeform_levels lv = {2, {{s, s}, {s2, s2}}, {0, N}};
    vp_gt *d = H->msdeform(g, value, &lv, loc, attn); /* (B, N, D) */
    x = H->add(g, x, H->site_linear(b, "probe.deform.output_proj", d, D, true, NULL, NULL));

    p->output = H->site_linear(b, "probe.head", norm(H, b, "probe.norm", x, D), c->out, true,
                               NULL, NULL);
    H->keep(p->output);
    vp_gt *diff = H->add(g, p->output, H->scale(g, p->target, -1.0f));
    p->loss = H->mean(g, H->mul(g, diff, diff));
    return H->graph_status(g);
}

void vp_probe_data(const vp_probe_cfg *c, uint64_t seed, float *tokens, float *target)
{
    uint64_t s = seed * 0x9e3779b97f4a7c15ull + 0x632be59bd9b4e019ull;
    size_t nt = (size_t)c->batch * c->side * c->side * c->width;
    size_t ny = (size_t)c->batch * c->side * c->side * c->out;
    for (size_t i = 0; i < nt + ny; i++) {
        s ^= s << 13, s ^= s >> 7, s ^= s << 17;
        float u = (float)((double)(s >> 11) / (double)(1ull << 53) * 2.0 - 1.0);
        if (i < nt)
            tokens[i] = u;
        else
            target[i - nt] = 0.5f * u;
    }
}
