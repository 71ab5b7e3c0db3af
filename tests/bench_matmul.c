/*
 * bench_matmul: matmul GFLOP/s of the tiled kernel against the naive
 * one-output-per-invocation kernel, measured in the same run on the same
 * device (VPEFT_DEVICE, or the default), and their ratio. Numbers only;
 * nothing here passes or fails.
 *
 *   bench_matmul            square 128, 256, 512 and transformer shapes
 *   bench_matmul --sweep    also GFLOP/s of a grid of tile configurations
 *                           at 512^3 (to choose per-device defaults)
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "ops/ops.h"
#include "runtime/runtime.h"

typedef struct shape {
    const char *what;
    int64_t M, N, K;
    bool tb;
} shape;

static const shape shapes[] = {
    {"square 128", 128, 128, 128, false},
    {"square 256", 256, 256, 256, false},
    {"square 512", 512, 512, 512, false},
    {"4096x64 @ 64x256", 4096, 256, 64, false},
    {"ViT-S qkv 197x384 @ W^T", 197, 1152, 384, true},
    {"ViT-S mlp 1024x384 @ W^T", 1024, 1536, 384, true},
};

static double now(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + 1e-9 * (double)ts.tv_nsec;
}

static void die(const char *what)
{
    fprintf(stderr, "bench_matmul: %s: %s\n", what, vp_error_last());
    exit(1);
}

/* Seconds per matmul: `reps` dispatches in one command buffer, best of 3
 * submits after a warm-up submit. */
static double time_mm(vp_device *dev, const shape *s, const vp_matmul_cfg *cfg, double budget)
{
    vp_tensor *a, *b, *c;
    int64_t sa[2] = {s->M, s->K}, sb[2] = {s->tb ? s->N : s->K, s->tb ? s->K : s->N};
    int64_t sc[2] = {s->M, s->N};
    if (vp_tensor_create(dev, VP_F32, 2, sa, "a", &a) ||
        vp_tensor_create(dev, VP_F32, 2, sb, "b", &b) ||
        vp_tensor_create(dev, VP_F32, 2, sc, "c", &c))
        die("tensors");
    size_t n = (size_t)(s->K * (s->M > s->N ? s->M : s->N));
    float *h = malloc(n * sizeof *h);
    for (size_t i = 0; i < n; i++)
        h[i] = (float)((i * 7919) % 2001) / 1000.0f - 1.0f;
    vp_tensor_upload(a, h, vp_tensor_nbytes(a));
    vp_tensor_upload(b, h, vp_tensor_nbytes(b));
    free(h);
    vp_cmd *cmd;
    if (vp_cmd_create(dev, &cmd))
        die("command buffer");
    /* One timed dispatch to size the repetitions. */
    if (vp_cmd_begin(cmd) || vp_op_matmul_ex(cmd, a, false, b, s->tb, c, cfg) ||
        vp_cmd_submit(cmd))
        die("matmul");
    double t0 = now();
    if (vp_cmd_submit(cmd))
        die("submit");
    double one = now() - t0;
    int reps = one > 0 ? (int)(budget / 3 / one) : 100;
    reps = reps < 1 ? 1 : reps > 200 ? 200 : reps;
    if (vp_cmd_begin(cmd))
        die("begin");
    for (int r = 0; r < reps; r++)
        if (vp_op_matmul_ex(cmd, a, false, b, s->tb, c, cfg))
            die("matmul");
    double best = 1e30;
    for (int i = 0; i < 3; i++) {
        t0 = now();
        if (vp_cmd_submit(cmd))
            die("submit");
        double t = (now() - t0) / reps;
        best = t < best ? t : best;
    }
    vp_cmd_destroy(cmd);
    vp_tensor_destroy(a);
    vp_tensor_destroy(b);
    vp_tensor_destroy(c);
    return best;
}

static double gflops(const shape *s, double sec) { return 2.0 * s->M * s->N * s->K / sec * 1e-9; }

int main(int argc, char **argv)
{
    bool sweep = argc > 1 && !strcmp(argv[1], "--sweep");
    vp_instance *inst;
    vp_device *dev;
    uint32_t idx;
    if (vp_instance_create(NULL, &inst))
        die("instance");
    if (vp_instance_pick(inst, getenv("VPEFT_DEVICE"), &idx))
        die("device");
    if (vp_device_create(inst, idx, &(vp_device_opts){.profile = 0}, &dev))
        die("device");
    const vp_device_info *d = vp_device_get_info(dev);
    vp_matmul_cfg tiled = vp_matmul_default_cfg(d);
    vp_matmul_cfg naive = {VP_MATMUL_NAIVE, 8, 8, 0, 0, false};
    printf("matmul on %s (%s)\n", d->name, vp_device_type_str(d->type));
    printf("tiled: local %ux%u, %ux%u outputs per invocation; naive: local 8x8, 1 output\n",
           tiled.wg_x, tiled.wg_y, tiled.tm, tiled.tn);
    printf("%-28s %14s %14s %8s\n", "shape (M x K @ K x N)", "tiled GFLOP/s", "naive GFLOP/s",
           "ratio");
    for (size_t i = 0; i < sizeof shapes / sizeof shapes[0]; i++) {
        const shape *s = &shapes[i];
        double tt = time_mm(dev, s, &tiled, 1.0);
        double tn = time_mm(dev, s, &naive, 1.0);
        char what[64];
        snprintf(what, sizeof what, "%s", s->what);
        printf("%-28s %14.2f %14.2f %7.1fx\n", what, gflops(s, tt), gflops(s, tn), tn / tt);
        fflush(stdout);
    }
    if (sweep) {
        static const uint32_t wg[][2] = {{8, 1}, {8, 2}, {16, 1}, {16, 8}, {16, 16}, {32, 4}};
        static const uint32_t tile[][2] = {{4, 4}, {8, 8}, {16, 16}, {8, 32}, {32, 8}, {32, 32}};
        const shape *s = &shapes[2];
        printf("\nsweep at %s: GFLOP/s by local size (rows) and tile (columns)\n", s->what);
        printf("%-10s", "local");
        for (size_t t = 0; t < sizeof tile / sizeof tile[0]; t++)
            printf(" %8ux%-3u", tile[t][0], tile[t][1]);
        printf("\n");
        for (size_t w = 0; w < sizeof wg / sizeof wg[0]; w++) {
            printf("%4ux%-5u", wg[w][0], wg[w][1]);
            for (size_t t = 0; t < sizeof tile / sizeof tile[0]; t++) {
                vp_matmul_cfg c = {VP_MATMUL_TILED, wg[w][0], wg[w][1], tile[t][0], tile[t][1],
                                   false};
                if (wg[w][0] * wg[w][1] > d->max_wg_invocations) {
                    printf(" %12s", "-");
                    continue;
                }
                printf(" %12.2f", gflops(s, time_mm(dev, s, &c, 0.5)));
                fflush(stdout);
            }
            printf("\n");
        }
    }
    vp_device_destroy(dev);
    vp_instance_destroy(inst);
    return 0;
}
