/*
 * bench_matmul: matmul GFLOP/s of the tiled kernel against the naive
 * one-output-per-invocation kernel, measured in the same run on the same
 * device (VPEFT_DEVICE, or the default), and their ratio. Numbers only;
 * nothing here passes or fails.
 *
 *   bench_matmul            square 128, 256, 512 and transformer shapes
 *   bench_matmul --sweep    also GFLOP/s of a grid of tile configurations
 *                           at 512^3 (to choose per-device defaults), in
 *                           the default configuration's tiling (subgroup
 *                           on CPUs, shared memory on GPUs)
 *   bench_matmul --cfg WXxWY:TMxTN[:reg|:sg|:shared[BK]][:scalar]
 *                           also one explicit configuration on every shape,
 *                           timed next to the default: local size WX x WY,
 *                           TM x TN outputs per invocation, tiling registers
 *                           (the default), subgroup or shared memory (K step
 *                           BK, default 16), scalar loads; with the time
 *                           the first use took to build its pipeline
 *
 * vpeft's pipeline cache file is not used, so build times are real builds
 * unless the driver keeps its own cache (Mesa does: set
 * MESA_SHADER_CACHE_DISABLE=true to measure compiles on lavapipe).
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
 * submits after a warm-up submit. *build gets how much longer the first
 * record-and-submit took than a later submit: building the pipeline (and,
 * on lavapipe, compiling it at its first dispatch) unless an earlier call
 * built it. Negative when the configuration is refused. */
static double time_mm(vp_device *dev, const shape *s, const vp_matmul_cfg *cfg, double budget,
                      double *build)
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
    double best = -1;
    /* One timed dispatch to size the repetitions. */
    if (vp_cmd_begin(cmd))
        die("begin");
    double t0 = now();
    vp_status st = vp_op_matmul_ex(cmd, a, false, b, s->tb, c, cfg);
    if (vp_cmd_submit(cmd))
        die("submit");
    double first = now() - t0;
    if (st)
        goto out;
    t0 = now();
    if (vp_cmd_submit(cmd))
        die("submit");
    double one = now() - t0;
    if (build)
        *build = first > one ? first - one : 0;
    int reps = one > 0 ? (int)(budget / 3 / one) : 100;
    reps = reps < 1 ? 1 : reps > 200 ? 200 : reps;
    if (vp_cmd_begin(cmd))
        die("begin");
    for (int r = 0; r < reps; r++)
        if (vp_op_matmul_ex(cmd, a, false, b, s->tb, c, cfg))
            die("matmul");
    best = 1e30;
    for (int i = 0; i < 3; i++) {
        t0 = now();
        if (vp_cmd_submit(cmd))
            die("submit");
        double t = (now() - t0) / reps;
        best = t < best ? t : best;
    }
out:
    vp_cmd_destroy(cmd);
    vp_tensor_destroy(a);
    vp_tensor_destroy(b);
    vp_tensor_destroy(c);
    return best;
}

static const char *tiling_str(vp_matmul_tiling t)
{
    return t == VP_MATMUL_SUBGROUP ? "subgroup" : t == VP_MATMUL_SHARED ? "shared memory"
                                                                        : "registers";
}

/* "WXxWY:TMxTN[:reg|:sg|:shared[BK]][:scalar]" into *c; false if malformed. */
static bool parse_cfg(const char *arg, vp_matmul_cfg *c)
{
    *c = (vp_matmul_cfg){VP_MATMUL_TILED, 0, 0, 0, 0, false, VP_MATMUL_REGISTERS, 0};
    int used = 0;
    if (sscanf(arg, "%ux%u:%ux%u%n", &c->wg_x, &c->wg_y, &c->tm, &c->tn, &used) != 4)
        return false;
    for (const char *o = arg + used; *o;) {
        if (*o++ != ':')
            return false;
        size_t len = strcspn(o, ":");
        if (len == 3 && !strncmp(o, "reg", 3))
            c->tiling = VP_MATMUL_REGISTERS;
        else if (len == 2 && !strncmp(o, "sg", 2))
            c->tiling = VP_MATMUL_SUBGROUP;
        else if (len == 6 && !strncmp(o, "scalar", 6))
            c->no_vec4 = true;
        else if (len >= 6 && !strncmp(o, "shared", 6)) {
            c->tiling = VP_MATMUL_SHARED;
            for (size_t i = 6; i < len; i++) {
                if (o[i] < '0' || o[i] > '9')
                    return false;
                c->bk = c->bk * 10 + (uint32_t)(o[i] - '0');
            }
        } else
            return false;
        o += len;
    }
    return c->wg_x && c->wg_y;
}

static void cfg_str(const vp_matmul_cfg *c, char *buf, size_t n)
{
    int k = snprintf(buf, n, "local %ux%u, %ux%u outputs per invocation, %s", c->wg_x, c->wg_y,
                     c->tm, c->tn, tiling_str(c->tiling));
    if (c->tiling == VP_MATMUL_SHARED && k > 0 && (size_t)k < n)
        k += snprintf(buf + k, n - (size_t)k, " (K step %u)", c->bk ? c->bk : 16);
    if (c->no_vec4 && k > 0 && (size_t)k < n)
        snprintf(buf + k, n - (size_t)k, ", scalar loads");
}

static double gflops(const shape *s, double sec) { return 2.0 * s->M * s->N * s->K / sec * 1e-9; }

static void usage(void)
{
    fprintf(stderr, "usage: bench_matmul [--sweep] [--cfg WXxWY:TMxTN[:reg|:sg|:shared[BK]]"
                    "[:scalar]]\n");
    exit(2);
}

int main(int argc, char **argv)
{
    bool sweep = false, have_cfg = false;
    vp_matmul_cfg explicit_cfg;
    for (int i = 1; i < argc; i++) {
        if (!strcmp(argv[i], "--sweep"))
            sweep = true;
        else if (!strcmp(argv[i], "--cfg") && i + 1 < argc && parse_cfg(argv[i + 1], &explicit_cfg))
            have_cfg = true, i++;
        else
            usage();
    }
    vp_instance *inst;
    vp_device *dev;
    uint32_t idx;
    if (vp_instance_create(NULL, &inst))
        die("instance");
    if (vp_instance_pick(inst, getenv("VPEFT_DEVICE"), &idx))
        die("device");
    if (vp_device_create(inst, idx, &(vp_device_opts){.profile = 0, .no_pipeline_cache = true},
                         &dev))
        die("device");
    const vp_device_info *d = vp_device_get_info(dev);
    vp_matmul_cfg tiled = vp_matmul_default_cfg(d);
    vp_matmul_cfg naive = {VP_MATMUL_NAIVE, 8, 8, 0, 0, false, VP_MATMUL_REGISTERS, 0};
    char desc[160];
    printf("matmul on %s (%s)\n", d->name, vp_device_type_str(d->type));
    cfg_str(&tiled, desc, sizeof desc);
    printf("tiled: %s; naive: local 8x8, 1 output\n", desc);
    printf("%-28s %14s %14s %8s\n", "shape (M x K @ K x N)", "tiled GFLOP/s", "naive GFLOP/s",
           "ratio");
    for (size_t i = 0; i < sizeof shapes / sizeof shapes[0]; i++) {
        const shape *s = &shapes[i];
        double tt = time_mm(dev, s, &tiled, 1.0, NULL);
        double tn = time_mm(dev, s, &naive, 1.0, NULL);
        if (tt < 0 || tn < 0)
            die("matmul");
        char what[64];
        snprintf(what, sizeof what, "%s", s->what);
        printf("%-28s %14.2f %14.2f %7.1fx\n", what, gflops(s, tt), gflops(s, tn), tn / tt);
        fflush(stdout);
    }
    if (have_cfg) {
        cfg_str(&explicit_cfg, desc, sizeof desc);
        printf("\nexplicit: %s\n", desc);
        printf("%-28s %14s %14s %8s %10s\n", "shape (M x K @ K x N)", "cfg GFLOP/s",
               "default GFLOP/s", "cfg/def", "build ms");
        for (size_t i = 0; i < sizeof shapes / sizeof shapes[0]; i++) {
            const shape *s = &shapes[i];
            double build, tc = time_mm(dev, s, &explicit_cfg, 1.0, &build);
            if (tc < 0) {
                printf("%-28s refused: %s\n", s->what, vp_error_last());
                continue;
            }
            double tt = time_mm(dev, s, &tiled, 1.0, NULL);
            printf("%-28s %14.2f %14.2f %7.2fx %10.1f\n", s->what, gflops(s, tc), gflops(s, tt),
                   tt / tc, build * 1e3);
            fflush(stdout);
        }
    }
    if (sweep) {
        /* Local sizes (rows) by tiles (columns) around the default: [0] for
         * the subgroup tiling, [1] for the others; "-" where refused. */
        static const uint32_t wgs[2][4][2] = {{{8, 1}, {8, 2}, {16, 1}, {8, 4}},
                                              {{16, 16}, {16, 8}, {8, 8}, {32, 8}}};
        static const uint32_t tiles[2][6][2] = {
            {{16, 4}, {32, 4}, {64, 4}, {16, 8}, {32, 8}, {16, 16}},
            {{4, 4}, {8, 4}, {4, 8}, {8, 8}, {8, 16}, {16, 8}}};
        int g = tiled.tiling == VP_MATMUL_SUBGROUP ? 0 : 1;
        const uint32_t(*wg)[2] = wgs[g], (*tile)[2] = tiles[g];
        size_t n_wg = 4, n_tile = 6;
        const shape *s = &shapes[2];
        printf("\nsweep at %s, %s tiling: GFLOP/s by local size (rows) and tile (columns)\n",
               s->what, tiling_str(tiled.tiling));
        printf("%-10s", "local");
        for (size_t t = 0; t < n_tile; t++)
            printf(" %8ux%-3u", tile[t][0], tile[t][1]);
        printf("\n");
        for (size_t w = 0; w < n_wg; w++) {
            printf("%4ux%-5u", wg[w][0], wg[w][1]);
            for (size_t t = 0; t < n_tile; t++) {
                vp_matmul_cfg c = tiled;
                c.wg_x = wg[w][0], c.wg_y = wg[w][1], c.tm = tile[t][0], c.tn = tile[t][1];
                double sec = wg[w][0] * wg[w][1] > d->max_wg_invocations
                                 ? -1 : time_mm(dev, s, &c, 0.5, NULL);
                if (sec < 0)
                    printf(" %12s", "-");
                else
                    printf(" %12.2f", gflops(s, sec));
                fflush(stdout);
            }
            printf("\n");
        }
    }
    vp_device_destroy(dev);
    vp_instance_destroy(inst);
    return 0;
}
