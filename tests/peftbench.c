/*
 * The PEFT benchmarks' shared measurement and table (peftbench.h): one
 * model per method, built, trained on one fixed batch, measured, destroyed,
 * so that each method's device memory is its own.
 */
#include "peftbench.h"

#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "config/config.h"

static const char *prog = "bench";

_Noreturn void pb_die(const char *what)
{
    fprintf(stderr, "%s: %s: %s\n", prog, what, vp_error_last());
    exit(1);
}

vp_device *pb_open(const char *name, vp_instance **inst)
{
    prog = name;
    vp_device *dev;
    uint32_t idx;
    if (vp_instance_create(NULL, inst) || vp_instance_pick(*inst, getenv("VPEFT_DEVICE"), &idx) ||
        vp_device_create(*inst, idx, NULL, &dev))
        pb_die("device");
    return dev;
}

static bool positive(const char *s, int *value)
{
    char *end;
    long v = strtol(s, &end, 10);
    if (end == s || *end || v < 1 || v > 1000000)
        return false;
    *value = (int)v;
    return true;
}

int pb_env_int(const char *env, int dflt)
{
    const char *s = getenv(env);
    int v = dflt;
    if (s && !positive(s, &v)) {
        fprintf(stderr, "%s: %s=%s: expected a positive integer\n", prog, env, s);
        exit(2);
    }
    return v;
}

bool pb_opt_int(int argc, char **argv, int *i, const char *name, int *value)
{
    if (strcmp(argv[*i], name) || *i + 1 >= argc || !positive(argv[*i + 1], value))
        return false;
    ++*i;
    return true;
}

static double now(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + 1e-9 * (double)ts.tv_nsec;
}

static int cmp_double(const void *a, const void *b)
{
    double x = *(const double *)a, y = *(const double *)b;
    return (x > y) - (x < y);
}

static double mib(uint64_t b) { return (double)b / (1 << 20); }

pb_result pb_measure(vp_device *dev, const char *json, int64_t batch, int warmup, int steps,
                     pb_batch_fn fill, void *ctx)
{
    vp_config *c;
    vp_model *m;
    if (vp_cfg_parse(json, strlen(json), "bench", &c))
        pb_die("config");
    pb_result r = {0};
    if (vp_model_create(dev, c, &(vp_model_opts){.batch = batch, .train = true}, &m)) {
        snprintf(r.failed, sizeof r.failed, "%s", vp_error_last());
        vp_cfg_free(c);
        return r;
    }
    vp_cfg_free(c);
    vp_graph *g = vp_model_graph(m);
    const vp_build *b = vp_model_build(m);
    for (uint32_t i = 0; i < vp_build_param_count(b); i++) {
        vp_gt *t = vp_build_param_at(b, i)->t;
        r.all += (uint64_t)vp_gt_nelem(t);
        r.trainable += vp_gt_trainable(t) ? (uint64_t)vp_gt_nelem(t) : 0;
    }
    if (fill(m, ctx))
        pb_die("batch");
    double *ms = malloc((size_t)steps * sizeof *ms);
    if (!ms)
        pb_die("out of host memory");
    uint64_t submits = 0;
    for (int s = 1; s <= warmup + steps; s++) {
        if (s == warmup + 1)
            submits = vp_graph_get_stats(g).submits;
        double t0 = now();
        float loss;
        if (vp_graph_run(g) || vp_graph_read(g, vp_model_loss(m), &loss, sizeof loss) ||
            vp_graph_step(g, 1e-4f, s))
            pb_die("step");
        if (s > warmup)
            ms[s - warmup - 1] = (now() - t0) * 1e3;
    }
    vp_graph_stats st = vp_graph_get_stats(g);
    r.dispatches = st.dispatches;
    r.barriers = st.barriers;
    r.submits = (double)(st.submits - submits) / steps;
    qsort(ms, (size_t)steps, sizeof *ms, cmp_double);
    r.ms = steps % 2 ? ms[steps / 2] : 0.5 * (ms[steps / 2 - 1] + ms[steps / 2]);
    free(ms);
    r.mem = vp_graph_memory(g);
    vp_model_destroy(m);
    return r;
}

void pb_header(void)
{
    printf("%-22s %11s %7s %8s %8s %8s %8s %8s %6s %6s %5s %9s %7s %7s\n", "method", "trainable",
           "train%", "params", "grads", "adamw", "activ.", "total", "disp.", "barr.", "subm.",
           "step ms", "memory", "time");
    printf("%-22s %11s %7s %8s %8s %8s %8s %8s %6s %6s %5s %9s %7s %7s\n", "", "", "", "MiB",
           "MiB", "MiB", "MiB", "MiB", "/run", "/run", "/step", "median", "x full", "x full");
}

void pb_row(const char *name, const pb_result *r, const pb_result *full)
{
    if (r->failed[0]) {
        printf("%-22s not measured: %s\n", name, r->failed);
        return;
    }
    char ratios[64] = "      -       -"; /* none without full fine-tuning's numbers */
    if (!full->failed[0])
        snprintf(ratios, sizeof ratios, "%7.3f %7.3f",
                 (double)r->mem.total / (double)full->mem.total, r->ms / full->ms);
    printf("%-22s %11llu %6.2f%% %8.2f %8.2f %8.2f %8.2f %8.2f %6u %6u %5.1f %9.1f %s\n",
           name, (unsigned long long)r->trainable, 100.0 * (double)r->trainable / (double)r->all,
           mib(r->mem.frozen + r->mem.trainable), mib(r->mem.grads), mib(r->mem.optimizer),
           mib(r->mem.activations), mib(r->mem.total), r->dispatches, r->barriers, r->submits,
           r->ms, ratios);
}

/* ---- a fixed batch of noise images and random ellipses --------------------------- */

/* A small deterministic generator, so that every method sees the same batch. */
static uint32_t next(uint64_t *s)
{
    *s = *s * 6364136223846793005u + 1442695040888963407u;
    return (uint32_t)(*s >> 33);
}

vp_status pb_fill_ellipses(vp_model *m, void *ctx)
{
    const int classes = *(const int *)ctx;
    vp_graph *g = vp_model_graph(m);
    vp_gt *img = vp_model_image(m), *lab = vp_graph_find(g, "target.labels"),
          *msk = vp_graph_find(g, "target.masks");
    if (!lab || !msk || vp_gt_ndim(msk) != 4) {
        fprintf(stderr, "%s: the model has no target.labels (B, T) and target.masks "
                        "(B, T, H, W)\n", prog);
        exit(1);
    }
    const int64_t *s = vp_gt_shape(msk);
    int64_t b = s[0], t = s[1], h = s[2], w = s[3];
    size_t n_px = (size_t)vp_gt_nelem(img), n_m = (size_t)vp_gt_nelem(msk);
    float *px = malloc(n_px * sizeof *px), *masks = calloc(n_m, sizeof *masks);
    int32_t *labels = malloc((size_t)(b * t) * sizeof *labels);
    if (!px || !masks || !labels) {
        fprintf(stderr, "%s: out of host memory\n", prog);
        exit(1);
    }
    uint64_t seed = 1;
    for (size_t i = 0; i < n_px; i++)
        px[i] = (float)(next(&seed) % 2001) / 1000.0f - 1.0f;
    for (int64_t i = 0; i < b; i++) {
        int64_t n = 1 + (int64_t)(next(&seed) % (uint32_t)(t > 1 ? t - 1 : 1));
        for (int64_t k = 0; k < t; k++) {
            labels[i * t + k] = k < n ? (int32_t)(next(&seed) % (uint32_t)classes) : -1;
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
