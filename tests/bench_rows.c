/*
 * Small kernels that a training step runs hundreds of times: the row ops
 * (layernorm forward and backward, softmax) in both forms
 * (vp_nn_force_rows: segments of lanes with shared-memory trees, and one
 * invocation per row without barriers), and elementwise add and gelu with
 * four elements per invocation (a multiple of 4 elements) against one (the
 * same count plus one). Shapes: the demo's tiny Swin + Mask2Former (batch
 * 2, 128 px) and Swin-T's stages at 384 px (batch 1). Prints time per call
 * and the ratios, and which form the device takes by default. Numbers,
 * never pass/fail; `make bench` runs it on the default device
 * (VPEFT_DEVICE picks another).
 */
#include <stdio.h>
#include <stdlib.h>
#include <time.h>

#include "ops/ops.h"

static vp_device *dev;
static vp_cmd *cmd;

static double now(void)
{
    struct timespec t;
    clock_gettime(CLOCK_MONOTONIC, &t);
    return (double)t.tv_sec + (double)t.tv_nsec * 1e-9;
}

static void die(const char *what)
{
    fprintf(stderr, "bench_rows: %s: %s\n", what, vp_error_last());
    exit(1);
}

static vp_tensor *tensor(int nd, const int64_t *shape)
{
    vp_tensor *t;
    if (vp_tensor_create(dev, VP_F32, nd, shape, "t", &t))
        die("tensor");
    return t;
}

typedef enum { LN_FWD, LN_BWD, SOFTMAX, ADD, GELU } kind;

/* Microseconds per call of k on (rows, C): 20 calls recorded, replayed
 * for at least 0.2 s; the best of three such rounds. */
static double time_us(kind k, int64_t rows, int64_t C)
{
    int64_t sh[2] = {rows, C};
    vp_tensor *x = tensor(2, sh), *y = tensor(2, sh), *dy = tensor(2, sh);
    vp_tensor *g = tensor(1, &C), *b = tensor(1, &C), *dg = tensor(1, &C), *db = tensor(1, &C);
    vp_tensor *m = tensor(1, &rows), *r = tensor(1, &rows);
    if (vp_cmd_begin(cmd))
        die("begin");
    vp_status st = vp_op_fill(cmd, x, 0.5f);
    if (!st)
        st = vp_op_fill(cmd, dy, 0.25f);
    if (!st)
        st = vp_op_fill(cmd, g, 1.0f);
    if (!st && k == LN_BWD)
        st = vp_op_layernorm(cmd, x, g, b, 1e-5f, y, m, r);
    if (st || vp_cmd_submit(cmd))
        die("setup");
    if (vp_cmd_begin(cmd))
        die("begin");
    enum { CALLS = 20 };
    for (int i = 0; i < CALLS && !st; i++) {
        switch (k) {
        case LN_FWD: st = vp_op_layernorm(cmd, x, g, b, 1e-5f, y, m, r); break;
        case LN_BWD: st = vp_op_layernorm_backward(cmd, x, g, m, r, dy, y, dg, db, false); break;
        case SOFTMAX: st = vp_op_softmax(cmd, x, y); break;
        case ADD: st = vp_op_add(cmd, x, dy, y); break;
        case GELU: st = vp_op_gelu(cmd, x, y); break;
        }
    }
    if (st || vp_cmd_submit(cmd))
        die("record");
    double best = 1e30;
    for (int round = 0; round < 3; round++) {
        int reps = 0;
        double t0 = now(), t;
        do {
            if (vp_cmd_submit(cmd))
                die("submit");
            reps++;
        } while ((t = now() - t0) < 0.2);
        t = t / reps / CALLS;
        best = t < best ? t : best;
    }
    vp_tensor *all[] = {x, y, dy, g, b, dg, db, m, r};
    for (size_t i = 0; i < sizeof all / sizeof all[0]; i++)
        vp_tensor_destroy(all[i]);
    return best * 1e6;
}

static const struct {
    const char *what;
    int64_t rows, C;
} shapes[] = {
    {"demo swin stage 1 (2 x 32x32 tokens)", 2048, 24},
    {"demo swin stage 2", 512, 48},
    {"demo swin stage 3", 128, 96},
    {"demo swin stage 4", 32, 192},
    {"demo decoder (2 x 10 queries)", 20, 32},
    {"swin-t stage 1, 384 px", 9216, 96},
    {"swin-t stage 2", 2304, 192},
    {"swin-t stage 3", 576, 384},
    {"swin-t stage 4", 144, 768},
    {"a few long rows", 8, 1024},
    {"one row", 1, 4096},
};
#define N_SHAPES (sizeof shapes / sizeof shapes[0])

int main(void)
{
    vp_instance *inst;
    uint32_t idx;
    if (vp_instance_create(&(vp_instance_opts){0}, &inst) ||
        vp_instance_pick(inst, getenv("VPEFT_DEVICE"), &idx) ||
        vp_device_create(inst, idx, NULL, &dev) || vp_cmd_create(dev, &cmd))
        die("device");
    const vp_device_info *d = vp_device_get_info(dev);
    printf("bench_rows on %s (%s)\n\n", d->name, vp_device_type_str(d->type));
    printf("row ops, us per call: segments of lanes (S) against one row per invocation (1)\n");
    printf("%-38s %11s %-10s %9s %9s %7s %s\n", "shape", "(rows, C)", "op", "S", "1", "S / 1",
           "default");
    static const char *names[] = {"layernorm", "ln bwd", "softmax"};
    for (size_t s = 0; s < N_SHAPES; s++)
        for (int k = LN_FWD; k <= SOFTMAX; k++) {
            double t[2];
            for (int one = 0; one < 2; one++) {
                vp_nn_force_rows(one ? VP_NN_ROWS_ONE : VP_NN_ROWS_SEGMENTS);
                t[one] = time_us((kind)k, shapes[s].rows, shapes[s].C);
            }
            vp_nn_force_rows(VP_NN_ROWS_AUTO);
            bool auto_one = vp_nn_rows_one(d, shapes[s].C);
            char sh[32];
            snprintf(sh, sizeof sh, "(%lld, %lld)", (long long)shapes[s].rows,
                     (long long)shapes[s].C);
            printf("%-38s %11s %-10s %9.1f %9.1f %7.2f %s\n", k == LN_FWD ? shapes[s].what : "",
                   sh, names[k], t[0], t[1], t[0] / t[1], auto_one ? "1" : "S");
        }
    printf("\nelementwise, us per call: n + 1 elements (one per invocation) against n (four)\n");
    printf("%-38s %11s %-10s %9s %9s %7s\n", "shape", "n", "op", "n + 1", "n", "ratio");
    for (size_t s = 0; s < N_SHAPES; s++)
        for (int k = ADD; k <= GELU; k++) {
            int64_t n = shapes[s].rows * shapes[s].C;
            double t1 = time_us((kind)k, 1, n + 1), t4 = time_us((kind)k, 1, n);
            printf("%-38s %11lld %-10s %9.1f %9.1f %7.2f\n", k == ADD ? shapes[s].what : "",
                   (long long)n, k == ADD ? "add" : "gelu", t1, t4, t1 / t4);
        }
    vp_cmd_destroy(cmd);
    vp_device_destroy(dev);
    vp_instance_destroy(inst);
    return 0;
}
