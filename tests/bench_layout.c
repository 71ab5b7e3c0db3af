/*
 * Layout and vision ops at the sizes of a ViT-S/16 on 224x224 images with a
 * simple feature pyramid and a 100-query mask head (batch 2): GPU time per
 * call and effective bandwidth (bytes read and written once). Numbers,
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

static vp_tensor *tensor(vp_dtype dt, int nd, const int64_t *shape)
{
    vp_tensor *t;
    if (vp_tensor_create(dev, dt, nd, shape, "t", &t)) {
        fprintf(stderr, "bench_layout: %s\n", vp_error_last());
        exit(1);
    }
    return t;
}

/* Replays what was recorded since vp_cmd_begin; prints ms per replay. */
static void report(const char *name, vp_status st, double bytes)
{
    if (st || vp_cmd_submit(cmd)) {
        fprintf(stderr, "bench_layout: %s: %s\n", name, vp_error_last());
        exit(1);
    }
    int reps = 0;
    double t0 = now(), t;
    do {
        vp_cmd_submit(cmd);
        reps++;
    } while ((t = now() - t0) < 0.3 && reps < 1000);
    t /= reps;
    printf("%-52s %9.3f ms %8.2f GB/s\n", name, t * 1e3, bytes / t / 1e9);
}

#define RUN(name, bytes, call)                                                                  \
    do {                                                                                        \
        vp_cmd_begin(cmd);                                                                      \
        report(name, (call), (bytes));                                                          \
    } while (0)

int main(void)
{
    vp_instance *inst;
    uint32_t idx;
    if (vp_instance_create(NULL, &inst) || vp_instance_pick(inst, getenv("VPEFT_DEVICE"), &idx) ||
        vp_device_create(inst, idx, &(vp_device_opts){.profile = 0}, &dev) ||
        vp_cmd_create(dev, &cmd)) {
        fprintf(stderr, "bench_layout: %s\n", vp_error_last());
        return 1;
    }
    printf("layout and vision ops on %s\n", vp_device_get_info(dev)->name);
    const double f = 4.0; /* bytes per element */

    vp_tensor *img = tensor(VP_F32, 4, (int64_t[]){2, 3, 224, 224});
    vp_tensor *cols = tensor(VP_F32, 3, (int64_t[]){2, 196, 768});
    RUN("im2col_patches (2,3,224,224) p16", 2 * f * 2 * 3 * 224 * 224,
        vp_op_im2col_patches(cmd, img, 16, cols));
    RUN("im2col_patches_backward", 2 * f * 2 * 3 * 224 * 224,
        vp_op_im2col_patches_backward(cmd, cols, 16, img, false));

    vp_tensor *a = tensor(VP_F32, 3, (int64_t[]){2, 1024, 768});
    vp_tensor *at = tensor(VP_F32, 3, (int64_t[]){2, 768, 1024});
    vp_tensor *ar = tensor(VP_F32, 3, (int64_t[]){1024, 2, 768});
    double ab = 2 * f * 2 * 1024 * 768;
    RUN("permute (2,1024,768) (0,2,1) auto", ab, vp_op_permute(cmd, a, (int[]){0, 2, 1}, at));
    RUN("permute (2,1024,768) (0,2,1) copy", ab,
        vp_op_permute_ex(cmd, a, (int[]){0, 2, 1}, at, VP_PERMUTE_COPY));
    RUN("permute (2,1024,768) (0,2,1) tiles", ab,
        vp_op_permute_ex(cmd, a, (int[]){0, 2, 1}, at, VP_PERMUTE_TILES));
    RUN("permute (2,1024,768) (0,2,1) blocks", ab,
        vp_op_permute_ex(cmd, a, (int[]){0, 2, 1}, at, VP_PERMUTE_BLOCKS));
    RUN("permute (2,1024,768) (1,0,2) rows", ab, vp_op_permute(cmd, a, (int[]){1, 0, 2}, ar));

    vp_tensor *tok = tensor(VP_F32, 3, (int64_t[]){2, 197, 384});
    vp_tensor *pat = tensor(VP_F32, 3, (int64_t[]){2, 196, 384});
    vp_tensor *cls = tensor(VP_F32, 3, (int64_t[]){2, 1, 384});
    RUN("concat cls (2,1,384) + patches (2,196,384)", 2 * f * 2 * 197 * 384,
        vp_op_concat(cmd, (const vp_tensor *[]){cls, pat}, 2, 1, tok));
    RUN("slice patches from (2,197,384)", 2 * f * 2 * 196 * 384,
        vp_op_slice(cmd, tok, 1, 1, pat));

    vp_tensor *table = tensor(VP_F32, 2, (int64_t[]){197, 384});
    vp_tensor *ids = tensor(VP_I32, 1, (int64_t[]){394});
    vp_tensor *rows = tensor(VP_F32, 2, (int64_t[]){394, 384});
    int32_t hid[394];
    for (int i = 0; i < 394; i++)
        hid[i] = i % 197;
    vp_tensor_upload(ids, hid, sizeof hid);
    double gb = 2 * f * 394 * 384;
    RUN("gather_rows (197,384)[394]", gb, vp_op_gather_rows(cmd, table, ids, rows));
    RUN("gather_rows_backward deterministic", gb,
        vp_op_gather_rows_backward_ex(cmd, rows, ids, table, false, VP_SCATTER_DETERMINISTIC));
    if (vp_device_get_info(dev)->feat.float_atomic_add)
        RUN("gather_rows_backward atomic", gb,
            vp_op_gather_rows_backward_ex(cmd, rows, ids, table, false, VP_SCATTER_ATOMIC));

    vp_tensor *p14 = tensor(VP_F32, 4, (int64_t[]){2, 14, 14, 384});
    vp_tensor *p7 = tensor(VP_F32, 4, (int64_t[]){2, 7, 7, 384});
    vp_tensor *am = tensor(VP_I32, 4, (int64_t[]){2, 7, 7, 384});
    RUN("maxpool2 (2,14,14,384)", f * 2 * 14 * 14 * 384 * 1.5,
        vp_op_maxpool2(cmd, p14, p7, am));
    RUN("maxpool2_backward", f * 2 * 14 * 14 * 384 * 1.5,
        vp_op_maxpool2_backward(cmd, p7, am, p14, false));

    vp_tensor *t28 = tensor(VP_F32, 4, (int64_t[]){2, 28, 28, 4 * 256});
    vp_tensor *u56 = tensor(VP_F32, 4, (int64_t[]){2, 56, 56, 256});
    vp_tensor *bias = tensor(VP_F32, 1, (int64_t[]){256});
    double db = 2 * f * 2 * 56 * 56 * 256;
    RUN("depth_to_space2 (2,28,28,1024) + bias", db, vp_op_depth_to_space2(cmd, t28, bias, u56));
    RUN("depth_to_space2_backward (dx)", db,
        vp_op_depth_to_space2_backward(cmd, u56, t28, NULL, false));
    RUN("depth_to_space2_backward (dx and dbias)", db * 1.5,
        vp_op_depth_to_space2_backward(cmd, u56, t28, bias, false));

    vp_tensor *u112 = tensor(VP_F32, 4, (int64_t[]){2, 112, 112, 256});
    double ub = f * 2 * 56 * 56 * 256 * 5;
    RUN("upsample_bilinear2 (2,56,56,256)", ub, vp_op_upsample_bilinear2(cmd, u56, u112));
    RUN("upsample_bilinear2_backward", ub, vp_op_upsample_bilinear2_backward(cmd, u112, u56,
                                                                               false));

    vp_tensor *m56 = tensor(VP_F32, 4, (int64_t[]){2, 56, 56, 100});
    vp_tensor *m224 = tensor(VP_F32, 4, (int64_t[]){2, 224, 224, 100});
    double mb = f * 2 * (56 * 56 + 224 * 224) * 100;
    RUN("resize_bilinear masks (2,56,56,100) -> 224x224", mb,
        vp_op_resize_bilinear(cmd, m56, m224));
    RUN("resize_bilinear_backward", mb, vp_op_resize_bilinear_backward(cmd, m224, m56, false));

    vp_tensor *all[] = {img, cols, a, at, ar, tok, pat, cls, table, ids, rows, p14, p7, am,
                        t28, u56, bias, u112, m56, m224};
    for (size_t i = 0; i < sizeof all / sizeof all[0]; i++)
        vp_tensor_destroy(all[i]);
    vp_cmd_destroy(cmd);
    vp_device_destroy(dev);
    vp_instance_destroy(inst);
    return 0;
}
