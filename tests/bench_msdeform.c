/*
 * bench_msdeform: multi-scale deformable attention throughput, in bilinear
 * samples per second (B * Q * H * L * P per pass), of the Vulkan forward and
 * backward (with the atomic scatter where the device has float atomics, and
 * with the gather fallback) next to the double-precision CPU reference
 * measured in the same run, on the selected device (VPEFT_DEVICE, or the
 * default). Numbers only; nothing here passes or fails.
 *
 *   bench_msdeform           Mask2Former's pixel decoder scaled down: B 1,
 *                            levels 32x32, 16x16, 8x8, H 8, Dh 32, P 4, Q = S
 *   bench_msdeform --large   also levels 64x64, 32x32, 16x16 (a 512-pixel
 *                            image at strides 8, 16, 32), Q = S = 5376
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "ops/ops.h"
#include "ref/msdeform.h"
#include "runtime/runtime.h"

typedef struct shape {
    const char *what;
    int64_t B, H, Dh, P;
    int L;
    int64_t hw[3][2];
} shape;

static double now(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + 1e-9 * (double)ts.tv_nsec;
}

static void die(const char *what)
{
    fprintf(stderr, "bench_msdeform: %s: %s\n", what, vp_error_last());
    exit(1);
}

static float frand(uint64_t *s)
{
    *s ^= *s << 13;
    *s ^= *s >> 7;
    *s ^= *s << 17;
    return (float)((double)(*s >> 11) / (double)(1ull << 53));
}

typedef enum { FWD, BWD_ATOMIC, BWD_GATHER } pass;

typedef struct problem {
    vp_msdeform_levels lv;
    int64_t S, Q;
    size_t nv, nl, na, no;
    float *value, *loc, *attn, *gout;
    vp_tensor *t_value, *t_loc, *t_attn, *t_gout, *t_out, *t_gv, *t_gl, *t_ga;
} problem;

static vp_status record(vp_cmd *cmd, problem *p, pass k)
{
    if (k == FWD)
        return vp_op_msdeform(cmd, p->t_value, &p->lv, p->t_loc, p->t_attn, p->t_out);
    vp_msdeform_cfg cfg = {k == BWD_ATOMIC ? VP_MSDEFORM_ATOMIC : VP_MSDEFORM_GATHER, 0};
    return vp_op_msdeform_backward_ex(cmd, p->t_value, &p->lv, p->t_loc, p->t_attn, p->t_gout,
                                      p->t_gv, false, p->t_gl, false, p->t_ga, false, &cfg);
}

/* Seconds per pass: one submit to size the repetitions (and build the
 * pipelines), then `reps` passes in one command buffer, best of 3 submits. */
static double time_pass(vp_device *dev, problem *p, pass k, double budget)
{
    vp_cmd *cmd;
    if (vp_cmd_create(dev, &cmd))
        die("command buffer");
    if (vp_cmd_begin(cmd) || record(cmd, p, k) || vp_cmd_submit(cmd))
        die("first pass");
    double t0 = now();
    if (vp_cmd_submit(cmd))
        die("submit");
    double one = now() - t0;
    int reps = one > 0 ? (int)(budget / 3 / one) : 100;
    reps = reps < 1 ? 1 : reps > 100 ? 100 : reps;
    if (vp_cmd_begin(cmd))
        die("begin");
    for (int r = 0; r < reps; r++)
        if (record(cmd, p, k))
            die("record");
    double best = 1e30;
    for (int i = 0; i < 3; i++) {
        t0 = now();
        if (vp_cmd_submit(cmd))
            die("submit");
        double t = (now() - t0) / reps;
        best = t < best ? t : best;
    }
    vp_cmd_destroy(cmd);
    return best;
}

static vp_tensor *tensor(vp_device *dev, const char *name, int nd, const int64_t *s,
                         const float *data)
{
    vp_tensor *t;
    if (vp_tensor_create(dev, VP_F32, nd, s, name, &t))
        die("tensor");
    if (data && vp_tensor_upload(t, data, vp_tensor_nbytes(t)))
        die("upload");
    return t;
}

static void bench(vp_device *dev, const shape *sh)
{
    const vp_device_info *d = vp_device_get_info(dev);
    problem p = {.lv = {.n = sh->L}};
    for (int l = 0; l < sh->L; l++) {
        p.lv.shape[l][0] = sh->hw[l][0];
        p.lv.shape[l][1] = sh->hw[l][1];
        p.lv.start[l] = p.S;
        p.S += sh->hw[l][0] * sh->hw[l][1];
    }
    p.Q = p.S;
    int64_t B = sh->B, H = sh->H, Dh = sh->Dh, P = sh->P, L = sh->L, Q = p.Q;
    p.nv = (size_t)(B * p.S * H * Dh);
    p.na = (size_t)(B * Q * H * L * P);
    p.nl = 2 * p.na;
    p.no = (size_t)(B * Q * H * Dh);
    p.value = malloc(p.nv * 4);
    p.loc = malloc(p.nl * 4);
    p.attn = malloc(p.na * 4);
    p.gout = malloc(p.no * 4);
    uint64_t seed = 12345;
    for (size_t i = 0; i < p.nv; i++)
        p.value[i] = frand(&seed) * 2 - 1;
    for (size_t i = 0; i < p.no; i++)
        p.gout[i] = frand(&seed) * 2 - 1;
    for (size_t i = 0; i < p.na; i++)
        p.attn[i] = frand(&seed) / (float)(L * P);
    /* Reference points on the query's own position, offsets of a few
     * pixels, as the trained module produces: nearby samples share cells. */
    for (int64_t b = 0; b < B; b++)
        for (int64_t q = 0; q < Q; q++) {
            int ql = 0;
            while (ql + 1 < sh->L && q >= p.lv.start[ql + 1])
                ql++;
            int64_t r = q - p.lv.start[ql];
            double rx = ((double)(r % sh->hw[ql][1]) + 0.5) / (double)sh->hw[ql][1];
            double ry = ((double)(r / sh->hw[ql][1]) + 0.5) / (double)sh->hw[ql][0];
            for (int64_t h = 0; h < H; h++)
                for (int64_t l = 0; l < L; l++)
                    for (int64_t k = 0; k < P; k++) {
                        size_t s = (size_t)((((b * Q + q) * H + h) * L + l) * P + k);
                        p.loc[2 * s] = (float)(rx + (frand(&seed) * 8 - 4) / (double)sh->hw[l][1]);
                        p.loc[2 * s + 1] =
                            (float)(ry + (frand(&seed) * 8 - 4) / (double)sh->hw[l][0]);
                    }
        }
    int64_t sv[4] = {B, p.S, H, Dh}, sl[4] = {B, Q, H, L * P * 2}, sa[4] = {B, Q, H, L * P};
    int64_t so[3] = {B, Q, H * Dh};
    p.t_value = tensor(dev, "value", 4, sv, p.value);
    p.t_loc = tensor(dev, "loc", 4, sl, p.loc);
    p.t_attn = tensor(dev, "attn", 4, sa, p.attn);
    p.t_gout = tensor(dev, "grad_out", 3, so, p.gout);
    p.t_out = tensor(dev, "out", 3, so, NULL);
    p.t_gv = tensor(dev, "grad_value", 4, sv, NULL);
    p.t_gl = tensor(dev, "grad_loc", 4, sl, NULL);
    p.t_ga = tensor(dev, "grad_attn", 4, sa, NULL);

    /* CPU reference, double precision, one pass each. */
    double *dv = malloc(p.nv * 8), *dl = malloc(p.nl * 8), *da = malloc(p.na * 8);
    double *dg = malloc(p.no * 8), *dout = malloc(p.no * 8);
    double *gv = malloc(p.nv * 8), *gl = malloc(p.nl * 8), *ga = malloc(p.na * 8);
    for (size_t i = 0; i < p.nv; i++)
        dv[i] = p.value[i];
    for (size_t i = 0; i < p.nl; i++)
        dl[i] = p.loc[i];
    for (size_t i = 0; i < p.na; i++)
        da[i] = p.attn[i];
    for (size_t i = 0; i < p.no; i++)
        dg[i] = p.gout[i];
    int64_t shapes[6], starts[3];
    for (int l = 0; l < sh->L; l++) {
        shapes[2 * l] = sh->hw[l][0];
        shapes[2 * l + 1] = sh->hw[l][1];
        starts[l] = p.lv.start[l];
    }
    vp_ref_msdeform_dims rd = {B, p.S, H, Dh, Q, L, P, shapes, starts};
    double t0 = now();
    vp_ref_msdeform(&rd, dv, dl, da, dout);
    double ref_fwd = now() - t0;
    t0 = now();
    vp_ref_msdeform_backward(&rd, dv, dl, da, dg, gv, gl, ga);
    double ref_bwd = now() - t0;

    double samples = (double)p.na;
    printf("%s: B %lld, levels", sh->what, (long long)B);
    for (int l = 0; l < sh->L; l++)
        printf(" %lldx%lld", (long long)sh->hw[l][0], (long long)sh->hw[l][1]);
    printf(" (S %lld), Q %lld, H %lld, Dh %lld, P %lld: %.0f samples per pass\n",
           (long long)p.S, (long long)Q, (long long)H, (long long)Dh, (long long)P, samples);
    printf("%-22s %14s %14s %8s %10s\n", "pass", "Vulkan Ms/s", "CPU ref Ms/s", "ratio",
           "Vulkan ms");
    static const char *names[3] = {"forward", "backward (atomic)", "backward (gather)"};
    for (int k = FWD; k <= BWD_GATHER; k++) {
        double ref = k == FWD ? ref_fwd : ref_bwd;
        if (k == BWD_ATOMIC && !d->feat.float_atomic_add) {
            printf("%-22s %14s %14.2f\n", names[k], "(no atomics)", samples / ref * 1e-6);
            continue;
        }
        double t = time_pass(dev, &p, (pass)k, k == BWD_GATHER ? 3.0 : 1.5);
        printf("%-22s %14.2f %14.2f %7.1fx %10.3f\n", names[k], samples / t * 1e-6,
               samples / ref * 1e-6, ref / t, t * 1e3);
    }
    vp_tensor *all[] = {p.t_value, p.t_loc, p.t_attn, p.t_gout, p.t_out, p.t_gv, p.t_gl, p.t_ga};
    for (int i = 0; i < 8; i++)
        vp_tensor_destroy(all[i]);
    free(p.value);
    free(p.loc);
    free(p.attn);
    free(p.gout);
    free(dv);
    free(dl);
    free(da);
    free(dg);
    free(dout);
    free(gv);
    free(gl);
    free(ga);
}

int main(int argc, char **argv)
{
    bool large = false;
    for (int i = 1; i < argc; i++) {
        if (!strcmp(argv[i], "--large")) {
            large = true;
        } else {
            fprintf(stderr, "usage: bench_msdeform [--large]\n");
            return 2;
        }
    }
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
    printf("msdeform on %s (%s)\n", d->name, vp_device_type_str(d->type));
    static const shape small = {"Mask2Former-like, scaled down", 1, 8, 32, 4, 3,
                                {{32, 32}, {16, 16}, {8, 8}}};
    static const shape big = {"512-pixel image", 1, 8, 32, 4, 3, {{64, 64}, {32, 32}, {16, 16}}};
    bench(dev, &small);
    if (large)
        bench(dev, &big);
    vp_device_destroy(dev);
    vp_instance_destroy(inst);
    return 0;
}
