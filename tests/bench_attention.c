/*
 * bench_attention: the fused attention node (vp_g_attention_ex, core/ops/
 * attention.h) against the same attention composed of separate ops
 * (permutes, batched gemms, scale, bias add, softmax: what vp_g_attention
 * was before the fused node), forward and backward of sum(out * R) with
 * q, k, v and the bias trained, at the shapes vpeft's models run: Swin's
 * windows with their relative position bias, Mask2Former's masked
 * cross-attention and self-attention, ViT's global attention. Prints, per
 * shape, dispatches per run and milliseconds per run (forward + backward)
 * of both, and their ratio. Numbers only; nothing passes or fails.
 *
 *   bench_attention              10 timed runs after 2 (VPEFT_BENCH_STEPS);
 *                                VPEFT_PROFILE=1 adds the kernel-time table
 */
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "graph/graph.h"
#include "runtime/runtime.h"

static double now(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + 1e-9 * (double)ts.tv_nsec;
}

static void die(const char *what)
{
    fprintf(stderr, "bench_attention: %s: %s\n", what, vp_error_last());
    exit(1);
}

typedef struct shape {
    const char *name;
    int64_t B, Nq, Nk, H, Dh, M, Hb; /* bias (M, Hb, Nq, Nk); M 0: none */
} shape;

static const shape shapes[] = {
    {"swin-t window 7x7, 384 px stage 1", 2 * 144, 49, 49, 3, 32, 144, 3},
    {"swin tiny (tests) window 4x4, 128 px", 2 * 64, 16, 16, 1, 24, 64, 1},
    {"m2f masked cross-attn 100 q x 24x24", 2, 100, 576, 8, 32, 2, 1},
    {"m2f self-attn 100 q", 2, 100, 100, 8, 32, 0, 0},
    {"vit-s 14x14 tokens + cls", 2, 197, 197, 6, 64, 0, 0},
};

/* The attention as separate ops, with the bias trained. */
static vp_gt *composed(vp_graph *g, vp_gt *q, vp_gt *k, vp_gt *v, vp_gt *bias, const shape *s)
{
    static const int to_heads[4] = {0, 2, 1, 3};
    vp_gt *qh = vp_g_permute(g, vp_g_reshape(g, q, 4, (int64_t[]){s->B, s->Nq, s->H, s->Dh}),
                             to_heads);
    vp_gt *kh = vp_g_permute(g, vp_g_reshape(g, k, 4, (int64_t[]){s->B, s->Nk, s->H, s->Dh}),
                             to_heads);
    vp_gt *vh = vp_g_permute(g, vp_g_reshape(g, v, 4, (int64_t[]){s->B, s->Nk, s->H, s->Dh}),
                             to_heads);
    vp_gt *sc = vp_g_scale(g, vp_g_gemm(g, qh, false, kh, true, NULL),
                           1.0f / sqrtf((float)s->Dh));
    if (bias) {
        /* scores viewed as (B / M, M, H, Nq * Nk) + bias (M, Hb, Nq * Nk); Hb 1
         * is tiled over the heads by a broadcast add onto zeros */
        vp_gt *b = bias;
        if (s->Hb == s->H) {
            vp_gt *sv = vp_g_reshape(g, sc, 4, (int64_t[]){s->B / s->M, s->M, s->H, s->Nq * s->Nk});
            sc = vp_g_reshape(g, vp_g_add(g, sv, vp_g_reshape(g, b, 3, (int64_t[]){s->M, s->H,
                                                                                   s->Nq * s->Nk})),
                              4, (int64_t[]){s->B, s->H, s->Nq, s->Nk});
        } else { /* one bias for every head: (B, H, Nq, Nk) as (B, H, Nq * Nk) + (B, 1, ...) */
            vp_gt *parts[16];
            for (int64_t h = 0; h < s->H; h++)
                parts[h] = vp_g_reshape(g, b, 3, (int64_t[]){s->M, 1, s->Nq * s->Nk});
            vp_gt *t = vp_g_concat(g, parts, (uint32_t)s->H, 1);
            sc = vp_g_add(g, vp_g_reshape(g, sc, 3, (int64_t[]){s->B, s->H, s->Nq * s->Nk}), t);
            sc = vp_g_reshape(g, sc, 4, (int64_t[]){s->B, s->H, s->Nq, s->Nk});
        }
    }
    vp_gt *o = vp_g_gemm(g, vp_g_softmax(g, sc), false, vh, false, NULL);
    o = vp_g_permute(g, o, to_heads);
    return vp_g_reshape(g, o, 3, (int64_t[]){s->B, s->Nq, s->H * s->Dh});
}

typedef struct result {
    double ms;
    uint32_t dispatches;
} result;

static void fill(vp_graph *g, vp_gt *t, uint64_t seed, float scale)
{
    size_t n = (size_t)vp_gt_nelem(t);
    float *f = malloc(n * sizeof *f);
    for (size_t i = 0; i < n; i++) {
        seed = seed * 6364136223846793005u + 1442695040888963407u;
        f[i] = scale * ((float)(seed >> 40) / (float)(1u << 24) - 0.5f);
    }
    if (vp_graph_write(g, t, f, n * sizeof *f))
        die("writing");
    free(f);
}

static result run(vp_device *dev, const shape *s, bool fused, int steps)
{
    vp_graph *g;
    if (vp_graph_create(dev, &g))
        die("graph");
    int64_t D = s->H * s->Dh;
    vp_gt *q = vp_g_param(g, "q", 3, (int64_t[]){s->B, s->Nq, D}, true);
    vp_gt *k = vp_g_param(g, "k", 3, (int64_t[]){s->B, s->Nk, D}, true);
    vp_gt *v = vp_g_param(g, "v", 3, (int64_t[]){s->B, s->Nk, D}, true);
    vp_gt *bias = s->M ? vp_g_param(g, "bias", 4, (int64_t[]){s->M, s->Hb, s->Nq, s->Nk}, true)
                       : NULL;
    vp_gt *r = vp_g_input(g, "r", 3, (int64_t[]){s->B, s->Nq, D});
    vp_gt *o = fused ? vp_g_attention_ex(g, q, k, v, bias, (int)s->H, 1.0f / sqrtf((float)s->Dh))
                     : composed(g, q, k, v, bias, s);
    vp_gt *loss = vp_g_sum(g, vp_g_mul(g, o, r));
    if (vp_graph_backward(g, loss) || vp_graph_compile(g))
        die(s->name);
    fill(g, q, 1, 2.0f);
    fill(g, k, 2, 2.0f);
    fill(g, v, 3, 1.0f);
    fill(g, r, 4, 1.0f);
    if (bias)
        fill(g, bias, 5, 1.0f);
    double t0 = 0;
    for (int i = 0; i < 2 + steps; i++) {
        if (i == 2)
            t0 = now();
        if (vp_graph_run(g))
            die("run");
    }
    result res = {(now() - t0) * 1e3 / steps, vp_graph_get_stats(g).dispatches};
    vp_graph_destroy(g);
    return res;
}

int main(void)
{
    const char *e = getenv("VPEFT_BENCH_STEPS");
    int steps = e && atoi(e) > 0 ? atoi(e) : 10;
    vp_instance *inst;
    vp_device *dev;
    uint32_t idx;
    if (vp_instance_create(NULL, &inst) || vp_instance_pick(inst, getenv("VPEFT_DEVICE"), &idx) ||
        vp_device_create(inst, idx, &(vp_device_opts){.profile = getenv("VPEFT_PROFILE") != NULL},
                         &dev))
        die("device");
    const vp_device_info *d = vp_device_get_info(dev);
    printf("attention forward + backward (q, k, v, bias trained) on %s (%s), %d runs\n", d->name,
           vp_device_type_str(d->type), steps);
    printf("%-40s %10s %10s %10s %10s %8s\n", "shape (B, Nq, Nk, heads x Dh)", "fused disp",
           "ms", "composed", "ms", "ratio");
    for (size_t i = 0; i < sizeof shapes / sizeof shapes[0]; i++) {
        const shape *s = &shapes[i];
        result f = run(dev, s, true, steps), c = run(dev, s, false, steps);
        printf("%-40s %10u %10.2f %10u %10.2f %7.2fx\n", s->name, f.dispatches, f.ms,
               c.dispatches, c.ms, c.ms / f.ms);
        printf("  (%lld, %lld, %lld, %lld x %lld)%s%s\n", (long long)s->B, (long long)s->Nq,
               (long long)s->Nk, (long long)s->H, (long long)s->Dh,
               !s->M ? "" : s->M == s->B ? ", bias per image" : ", bias per window position",
               !s->M ? "" : s->Hb == s->H ? " and head" : " for every head");
    }
    if (getenv("VPEFT_PROFILE"))
        vp_profile_print(dev, stdout);
    vp_device_destroy(dev);
    vp_instance_destroy(inst);
    return 0;
}
