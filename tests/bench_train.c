/*
 * bench_train: one training step (forward, backward, AdamW) of the small
 * transformer of tests/tinymodel.c (two pre-norm blocks and a multi-scale
 * deformable-attention layer) on the selected device (VPEFT_DEVICE, or the
 * default): dispatches, submits and barriers per step, GPU time from
 * timestamps, wall time, and the host's share of the step, plus the memory
 * plan and the kernels that take the time. Numbers only; nothing here
 * passes or fails.
 *
 *   bench_train            width 64, 4 heads, 8x8 tokens, batch 2
 *   bench_train --steps N  time N steps (default 20)
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "graph/graph.h"
#include "runtime/runtime.h"
#include "tinymodel.h"

static double now(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + 1e-9 * (double)ts.tv_nsec;
}

static void die(const char *what)
{
    fprintf(stderr, "bench_train: %s: %s\n", what, vp_error_last());
    exit(1);
}

static double gpu_ms(const vp_device *dev)
{
    uint32_t n;
    const vp_profile_row *rows = vp_profile_rows(dev, &n);
    double t = 0;
    for (uint32_t i = 0; i < n; i++)
        t += rows[i].total_ms;
    return t;
}

static double mib(uint64_t b) { return (double)b / (1 << 20); }

typedef struct result {
    double wall_ms, wait_ms, gpu_ms; /* per step */
    vp_graph_stats stats;
    vp_graph_mem mem;
    int64_t n_params;
    float loss;
} result;

static const vt_tiny_cfg cfg = {.batch = 2, .side = 8, .width = 64, .heads = 4, .mlp = 128,
                                .blocks = 2, .out = 8, .points = 4};

/* Build, compile, initialise, warm up, and time `steps` training steps. */
static result train(vp_device *dev, int steps)
{
    result r = {0};
    vp_graph *g;
    vt_tiny m;
    vp_adamw_cfg acfg = vp_adamw_default_cfg();
    acfg.max_norm = 1.0f;
    if (vp_graph_create(dev, &g) || vt_tiny_build(g, &cfg, &m) || vp_graph_backward(g, m.loss) ||
        vp_graph_set_optimizer(g, &acfg) || vp_graph_compile(g))
        die("building the model");
    for (int i = 0; i < m.n_params; i++) {
        int64_t n = vp_gt_nelem(m.params[i]);
        float *f = malloc((size_t)n * sizeof *f);
        vt_tiny_init(m.params[i], f, (uint64_t)i + 1);
        if (vp_graph_write(g, m.params[i], f, (size_t)n * sizeof *f))
            die("parameters");
        free(f);
        r.n_params += n;
    }
    size_t nx = (size_t)vp_gt_nelem(m.x), nt = (size_t)vp_gt_nelem(m.target);
    float *hx = malloc(nx * sizeof *hx), *ht = malloc(nt * sizeof *ht);
    for (size_t i = 0; i < nx; i++)
        hx[i] = (float)((i * 7919) % 2001) / 1000.0f - 1.0f;
    for (size_t i = 0; i < nt; i++)
        ht[i] = (float)((i * 104729) % 2001) / 1000.0f - 1.0f;
    /* A step as a trainer does it: write the batch, run, read the loss,
     * update. */
    int step = 0;
    double t0 = 0, w0 = 0, g0 = 0;
    for (int i = 0; i < 3 + steps; i++) {
        if (i == 3) { /* after the warm-up (pipelines compile at first use) */
            t0 = now();
            w0 = vp_graph_get_stats(g).submit_ms;
            g0 = gpu_ms(dev);
        }
        if (vp_graph_write(g, m.x, hx, nx * sizeof *hx) ||
            vp_graph_write(g, m.target, ht, nt * sizeof *ht) || vp_graph_run(g) ||
            vp_graph_read(g, m.loss, &r.loss, sizeof r.loss) || vp_graph_step(g, 1e-3f, ++step))
            die("step");
    }
    r.wall_ms = (now() - t0) * 1e3 / steps;
    r.stats = vp_graph_get_stats(g);
    r.wait_ms = (r.stats.submit_ms - w0) / steps;
    r.gpu_ms = (gpu_ms(dev) - g0) / steps;
    r.mem = vp_graph_memory(g);
    vp_graph_destroy(g);
    free(hx);
    free(ht);
    return r;
}

int main(int argc, char **argv)
{
    int steps = 20;
    for (int i = 1; i < argc; i++) {
        if (!strcmp(argv[i], "--steps") && i + 1 < argc && atoi(argv[i + 1]) > 0) {
            steps = atoi(argv[++i]);
        } else {
            fprintf(stderr, "usage: bench_train [--steps N]\n");
            return 2;
        }
    }
    vp_instance *inst;
    vp_device *dev;
    uint32_t idx;
    if (vp_instance_create(NULL, &inst) || vp_instance_pick(inst, getenv("VPEFT_DEVICE"), &idx))
        die("device");

    /* 1: as training runs, dispatches overlapping where the barriers allow. */
    if (vp_device_create(inst, idx, &(vp_device_opts){.profile = 0}, &dev))
        die("device");
    const vp_device_info *d = vp_device_get_info(dev);
    result r = train(dev, steps);
    vp_device_destroy(dev);

    printf("training step on %s (%s)\n", d->name, vp_device_type_str(d->type));
    printf("model: %d pre-norm blocks, width %d, %d heads, %dx%d tokens, batch %d, deformable "
           "attention over 2 levels x %d points; %lld trainable parameters\n",
           cfg.blocks, cfg.width, cfg.heads, cfg.side, cfg.side, cfg.batch, cfg.points,
           (long long)r.n_params);
    printf("graph: %u nodes (%u backward)\n", r.stats.nodes, r.stats.backward_nodes);
    printf("per step: %u dispatches + 3 optimizer, %u submits (%u graph segment%s + 1 "
           "optimizer), %u barriers\n", r.stats.dispatches, r.stats.segments + 1,
           r.stats.segments, r.stats.segments == 1 ? "" : "s", r.stats.barriers);
    printf("memory: activations %.2f MiB (%.2f without reuse), parameters %.2f MiB, gradients "
           "%.2f MiB, optimizer %.2f MiB, total %.2f MiB\n", mib(r.mem.activations),
           mib(r.mem.unplanned), mib(r.mem.frozen + r.mem.trainable), mib(r.mem.grads),
           mib(r.mem.optimizer), mib(r.mem.total));
    printf("time per step (%d steps): wall %.2f ms, of which waiting on the device %.2f ms; "
           "host overhead %.2f ms = %.1f%% of the step\n", steps, r.wall_ms, r.wait_ms,
           r.wall_ms - r.wait_ms, 100.0 * (r.wall_ms - r.wait_ms) / r.wall_ms);

    /* 2: every dispatch timed (serialised, so a little slower). */
    if (vp_device_create(inst, idx, &(vp_device_opts){.profile = 1}, &dev))
        die("device");
    if (vp_device_profiling(dev)) {
        result p = train(dev, steps);
        printf("GPU time per step from timestamps (dispatches serialised to time each): %.2f ms "
               "in kernels, of %.2f ms wall\n\n", p.gpu_ms, p.wall_ms);
    } else {
        printf("no timestamps on this device: no per-kernel times\n");
    }
    vp_device_destroy(dev); /* prints the per-kernel table */
    vp_instance_destroy(inst);
    return 0;
}
