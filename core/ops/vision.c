/*
 * Spatial ops (see ops/vision.h): patch im2col (vision_im2col.comp), 2x2
 * max-pool (vision_maxpool*.comp), depth-to-space for 2x2 stride-2
 * transposed convolutions (vision_d2s.comp, bias gradient in
 * vision_colsum.comp) and bilinear resize (vision_resize.comp). All
 * backward kernels gather, so gradients come out the same on every run.
 */
#include <stdio.h>

#include "ops/ops.h"
#include "ops/util.h"

/* bindings: src, dst (written; read when accumulating) */
static const vp_kernel k_im2col = {"vision_im2col", 2, 0x2, 24, NULL, 0};
/* bindings: x, y, argmax (written) */
static const vp_kernel k_maxpool = {"vision_maxpool", 3, 0x6, 16, NULL, 0};
/* bindings: dy, argmax, dx (written) */
static const vp_kernel k_maxpool_bw = {"vision_maxpool_backward", 3, 0x4, 20, NULL, 0};
/* bindings: src, bias (placeholder when none), dst (written) */
static const vp_kernel k_d2s = {"vision_d2s", 3, 0x4, 24, NULL, 0};
/* bindings: x (M, C), out (C) (written) */
static const vp_kernel k_colsum = {"vision_colsum", 2, 0x2, 12, NULL, 0};
/* bindings: src, dst (written) */
static const vp_kernel k_resize = {"vision_resize", 2, 0x2, 36, NULL, 0};

static vp_status check_f32_all(const char *op, const vp_tensor *a, const vp_tensor *b)
{
    vp_status st = vp_check_f32(op, a);
    return st ? st : vp_check_f32(op, b);
}

/* No output may share memory with another operand (a or b may be NULL). */
static vp_status check_apart(const char *op, const vp_tensor *a, const vp_tensor *b)
{
    if (a && b && vp_ranges_overlap(vp_tensor_range(a), vp_tensor_range(b)))
        return vp_error_set(VP_ERR_INVALID, "%s: %s and %s overlap", op, a->name, b->name);
    return VP_OK;
}

static vp_status need_4d(const char *op, const vp_tensor *t, const char *layout)
{
    if (t->ndim == 4)
        return VP_OK;
    char s[64];
    vp_shape_str(t, s, sizeof s);
    return vp_error_set(VP_ERR_SHAPE, "%s: %s %s must have 4 dimensions %s", op, t->name, s,
                        layout);
}

/* t must have shape want[0..3]; else "<op>: <from> <shape> <verb> <want>, not <t> <shape>" */
static vp_status need_shape(const char *op, const vp_tensor *from, const char *verb,
                            const int64_t *want, const vp_tensor *t)
{
    bool ok = t->ndim == 4;
    for (int i = 0; ok && i < 4; i++)
        ok = t->shape[i] == want[i];
    if (ok)
        return VP_OK;
    char sf[64], st[64];
    vp_shape_str(from, sf, sizeof sf);
    vp_shape_str(t, st, sizeof st);
    return vp_error_set(VP_ERR_SHAPE, "%s: %s %s %s (%lld, %lld, %lld, %lld), not %s %s", op,
                        from->name, sf, verb, (long long)want[0], (long long)want[1],
                        (long long)want[2], (long long)want[3], t->name, st);
}

/* ---- patch im2col ------------------------------------------------------ */

static vp_status check_im2col(const char *op, const vp_tensor *img, int patch,
                              const vp_tensor *cols)
{
    vp_status st = check_f32_all(op, img, cols);
    if (!st)
        st = need_4d(op, img, "(B, Cin, H, W)");
    if (!st)
        st = check_apart(op, cols, img);
    if (st)
        return st;
    char si[64], sc[64];
    vp_shape_str(img, si, sizeof si);
    vp_shape_str(cols, sc, sizeof sc);
    if (patch < 1)
        return vp_error_set(VP_ERR_SHAPE, "%s: patch %d must be at least 1", op, patch);
    int64_t B = img->shape[0], C = img->shape[1], H = img->shape[2], W = img->shape[3];
    if (H % patch || W % patch)
        return vp_error_set(VP_ERR_SHAPE, "%s: %s %s: H and W must be multiples of the patch %d",
                            op, img->name, si, patch);
    int64_t np = (H / patch) * (W / patch), k = C * patch * patch;
    if (cols->ndim != 3 || cols->shape[0] != B || cols->shape[1] != np || cols->shape[2] != k)
        return vp_error_set(VP_ERR_SHAPE, "%s: %s %s with patch %d gives (%lld, %lld, %lld), "
                            "not %s %s", op, img->name, si, patch, (long long)B, (long long)np,
                            (long long)k, cols->name, sc);
    return VP_OK;
}

static vp_status im2col_run(vp_cmd *cmd, const vp_tensor *img, int patch, const vp_tensor *src,
                            vp_tensor *dst, uint32_t mode, bool acc)
{
    uint32_t vec = patch % 4 == 0 ? 4 : 1; /* rows of kx contiguous on both sides */
    struct { uint32_t total, cin, h, w, psize, acc; } push = {
        (uint32_t)vp_tensor_nelem(dst) / vec, (uint32_t)img->shape[1], (uint32_t)img->shape[2],
        (uint32_t)img->shape[3], (uint32_t)patch, acc};
    vp_range r[2] = {vp_tensor_range(src), vp_tensor_range(dst)};
    uint32_t spec[2] = {mode, vec};
    return vp_dispatch_flat(cmd, &k_im2col, spec, 2, r, &push, push.total);
}

vp_status vp_op_im2col_patches(vp_cmd *cmd, const vp_tensor *img, int patch, vp_tensor *cols)
{
    vp_status st = check_im2col("im2col_patches", img, patch, cols);
    return st ? st : im2col_run(cmd, img, patch, img, cols, 0, false);
}

vp_status vp_op_im2col_patches_backward(vp_cmd *cmd, const vp_tensor *dcols, int patch,
                                        vp_tensor *dimg, bool accumulate)
{
    vp_status st = check_im2col("im2col_patches_backward", dimg, patch, dcols);
    return st ? st : im2col_run(cmd, dimg, patch, dcols, dimg, 1, accumulate);
}

/* ---- 2x2 max-pool ------------------------------------------------------ */

/* x (B, H, W, C) pools to y (B, H/2, W/2, C); argmax i32 of y's shape. */
static vp_status check_pool(const char *op, const vp_tensor *x, const vp_tensor *y,
                            const vp_tensor *argmax)
{
    vp_status st = check_f32_all(op, x, y);
    if (!st)
        st = vp_check_i32(op, argmax);
    if (!st)
        st = need_4d(op, x, "(B, H, W, C)");
    if (st)
        return st;
    int64_t want[4] = {x->shape[0], x->shape[1] / 2, x->shape[2] / 2, x->shape[3]};
    if ((st = need_shape(op, x, "pools to", want, y)) ||
        (st = need_shape(op, x, "pools to", want, argmax)))
        return st;
    return VP_OK;
}

vp_status vp_op_maxpool2(vp_cmd *cmd, const vp_tensor *x, vp_tensor *y, vp_tensor *argmax)
{
    const char *op = "maxpool2";
    vp_status st = check_pool(op, x, y, argmax);
    if (!st)
        st = check_apart(op, y, x);
    if (!st)
        st = check_apart(op, argmax, x);
    if (!st)
        st = check_apart(op, argmax, y);
    if (st)
        return st;
    uint32_t vec = x->shape[3] % 4 == 0 ? 4 : 1; /* 4 channels per invocation */
    struct { uint32_t total, h, w, c; } push = {(uint32_t)vp_tensor_nelem(y) / vec,
                                                (uint32_t)x->shape[1], (uint32_t)x->shape[2],
                                                (uint32_t)x->shape[3] / vec};
    vp_range r[3] = {vp_tensor_range(x), vp_tensor_range(y), vp_tensor_range(argmax)};
    return vp_dispatch_flat(cmd, &k_maxpool, &vec, 1, r, &push, push.total);
}

vp_status vp_op_maxpool2_backward(vp_cmd *cmd, const vp_tensor *dy, const vp_tensor *argmax,
                                  vp_tensor *dx, bool accumulate)
{
    const char *op = "maxpool2_backward";
    vp_status st = check_pool(op, dx, dy, argmax);
    if (!st)
        st = check_apart(op, dx, dy);
    if (!st)
        st = check_apart(op, dx, argmax);
    if (st)
        return st;
    uint32_t vec = dx->shape[3] % 4 == 0 ? 4 : 1;
    struct { uint32_t total, h, w, c, acc; } push = {(uint32_t)vp_tensor_nelem(dx) / vec,
                                                     (uint32_t)dx->shape[1],
                                                     (uint32_t)dx->shape[2],
                                                     (uint32_t)dx->shape[3] / vec, accumulate};
    vp_range r[3] = {vp_tensor_range(dy), vp_tensor_range(argmax), vp_tensor_range(dx)};
    return vp_dispatch_flat(cmd, &k_maxpool_bw, &vec, 1, r, &push, push.total);
}

/* ---- depth to space (2x2 transposed convolution) ----------------------- */

/* small (B, H, W, 4C) <-> big (B, 2H, 2W, C); bias (C) or NULL. */
static vp_status check_d2s(const char *op, const vp_tensor *small, const vp_tensor *big,
                           const vp_tensor *bias)
{
    vp_status st = check_f32_all(op, small, big);
    if (!st)
        st = need_4d(op, small, "(B, H, W, 4*C)");
    if (!st)
        st = check_apart(op, big, small);
    if (st)
        return st;
    if (small->shape[3] % 4) {
        char s[64];
        vp_shape_str(small, s, sizeof s);
        return vp_error_set(VP_ERR_SHAPE, "%s: %s %s: the channels must be a multiple of 4 "
                            "(C*4, in (c, ky, kx) order)", op, small->name, s);
    }
    int64_t C = small->shape[3] / 4;
    int64_t want[4] = {small->shape[0], 2 * small->shape[1], 2 * small->shape[2], C};
    if ((st = need_shape(op, small, "rearranges to", want, big)))
        return st;
    if (bias) {
        if ((st = vp_check_f32(op, bias)) || (st = check_apart(op, bias, small)) ||
            (st = check_apart(op, bias, big)))
            return st;
        if (bias->ndim != 1 || bias->shape[0] != C) {
            char s[64];
            vp_shape_str(bias, s, sizeof s);
            return vp_error_set(VP_ERR_SHAPE, "%s: %s %s must be (%lld), one value per output "
                                "channel", op, bias->name, s, (long long)C);
        }
    }
    return VP_OK;
}

/* small (B, H, W, 4C), big (B, 2H, 2W, C); MODE 0 forward, 1 backward. */
static vp_status d2s_run(vp_cmd *cmd, const vp_tensor *small, const vp_tensor *big,
                         const vp_range *r, uint32_t mode, bool has_bias, bool acc)
{
    uint32_t C = (uint32_t)big->shape[3], vec = C % 4 == 0 ? 4 : 1; /* 4x4 blocks */
    uint32_t total = (uint32_t)vp_tensor_nelem(big) / (vec == 4 ? 16 : 1);
    struct { uint32_t total, h, w, c, has_bias, acc; } push = {
        total, (uint32_t)small->shape[1], (uint32_t)small->shape[2], C, has_bias, acc};
    uint32_t spec[2] = {mode, vec};
    return vp_dispatch_flat(cmd, &k_d2s, spec, 2, r, &push, total);
}

vp_status vp_op_depth_to_space2(vp_cmd *cmd, const vp_tensor *x, const vp_tensor *bias,
                                vp_tensor *y)
{
    vp_status st = check_d2s("depth_to_space2", x, y, bias);
    if (st)
        return st;
    vp_range r[3] = {vp_tensor_range(x), vp_tensor_range(bias ? bias : x), vp_tensor_range(y)};
    return d2s_run(cmd, x, y, r, 0, bias != NULL, false);
}

/* out (C) (+)= column sums of x seen as (M, C), in a fixed order. A
 * workgroup reads 32 consecutive floats of each row it sums (8 lanes of
 * vec4s where C is a multiple of 4, else 32 lanes) with 8 row lanes on CPU
 * devices and up to 32 on GPUs. (lavapipe, M 6272, C 256: 11 ms with 32
 * scalar lanes, 4.5 with 8 vec4 lanes.) */
static vp_status colsum(vp_cmd *cmd, const vp_tensor *x, vp_tensor *out, bool acc)
{
    vp_device *dev = vp_cmd_device(cmd);
    const vp_device_info *d = vp_device_get_info(dev);
    uint32_t C = (uint32_t)out->shape[0], M = (uint32_t)(vp_tensor_nelem(x) / C);
    uint32_t vec = C % 4 == 0 ? 4 : 1, cw = vec == 4 ? 8 : 32, rl = 1;
    uint32_t lim = vec == 4 ? 256 : 1024, cap = d->type == VK_PHYSICAL_DEVICE_TYPE_CPU ? 8 : 32;
    if (d->max_wg_invocations < lim)
        lim = d->max_wg_invocations;
    while (rl * 2 <= cap && cw * rl * 2 <= lim)
        rl *= 2;
    uint32_t spec[4] = {cw, rl, 1, vec}, units = C / vec;
    vp_pipeline *p;
    vp_status st = vp_pipeline_get(dev, &k_colsum, spec, 4, &p);
    if (st)
        return st;
    struct { uint32_t m, c, acc; } push = {M, units, acc};
    vp_range r[2] = {vp_tensor_range(x), vp_tensor_range(out)};
    return vp_cmd_dispatch(cmd, p, r, 2, &push, sizeof push, (units + cw - 1) / cw, 1, 1);
}

vp_status vp_op_depth_to_space2_backward(vp_cmd *cmd, const vp_tensor *dy, vp_tensor *dx,
                                         vp_tensor *dbias, bool accumulate)
{
    const char *op = "depth_to_space2_backward";
    vp_status st = check_d2s(op, dx, dy, dbias);
    if (!st && dbias)
        st = check_apart(op, dbias, dx);
    if (st)
        return st;
    vp_range r[3] = {vp_tensor_range(dy), vp_tensor_range(dy), vp_tensor_range(dx)};
    if ((st = d2s_run(cmd, dx, dy, r, 1, false, accumulate)))
        return st;
    return dbias ? colsum(cmd, dy, dbias, accumulate) : VP_OK;
}

/* ---- bilinear resize --------------------------------------------------- */

/* x (B, H, W, C) and y (B, Ho, Wo, C) agree in B and C. */
static vp_status check_resize(const char *op, const vp_tensor *x, const vp_tensor *y)
{
    vp_status st = check_f32_all(op, x, y);
    if (!st)
        st = need_4d(op, x, "(B, H, W, C)");
    if (!st)
        st = need_4d(op, y, "(B, H, W, C)");
    if (!st)
        st = check_apart(op, y, x);
    if (st)
        return st;
    if (x->shape[0] != y->shape[0] || x->shape[3] != y->shape[3]) {
        char sx[64], sy[64];
        vp_shape_str(x, sx, sizeof sx);
        vp_shape_str(y, sy, sizeof sy);
        return vp_error_set(VP_ERR_SHAPE, "%s: %s %s and %s %s must agree in batch and "
                            "channels", op, x->name, sx, y->name, sy);
    }
    return VP_OK;
}

/* MODE 0: dst = resize(src); MODE 1: dst (+)= resize^T(src). in and out
 * are the forward's input and output (they give the shapes). */
static vp_status resize_run(vp_cmd *cmd, const vp_tensor *in, const vp_tensor *out,
                            const vp_tensor *src, vp_tensor *dst, uint32_t mode, bool acc)
{
    uint32_t vec = in->shape[3] % 4 == 0 ? 4 : 1; /* 4 channels per invocation */
    struct { uint32_t total, h, w, c, ho, wo; float sh, sw; uint32_t acc; } push = {
        (uint32_t)vp_tensor_nelem(dst) / vec, (uint32_t)in->shape[1], (uint32_t)in->shape[2],
        (uint32_t)in->shape[3] / vec, (uint32_t)out->shape[1], (uint32_t)out->shape[2],
        (float)in->shape[1] / (float)out->shape[1], (float)in->shape[2] / (float)out->shape[2],
        acc};
    vp_range r[2] = {vp_tensor_range(src), vp_tensor_range(dst)};
    uint32_t spec[2] = {mode, vec};
    return vp_dispatch_flat(cmd, &k_resize, spec, 2, r, &push, push.total);
}

vp_status vp_op_resize_bilinear(vp_cmd *cmd, const vp_tensor *x, vp_tensor *y)
{
    vp_status st = check_resize("resize_bilinear", x, y);
    return st ? st : resize_run(cmd, x, y, x, y, 0, false);
}

vp_status vp_op_resize_bilinear_backward(vp_cmd *cmd, const vp_tensor *dy, vp_tensor *dx,
                                         bool accumulate)
{
    vp_status st = check_resize("resize_bilinear_backward", dx, dy);
    return st ? st : resize_run(cmd, dx, dy, dy, dx, 1, accumulate);
}

static vp_status check_up2(const char *op, const vp_tensor *x, const vp_tensor *y)
{
    vp_status st = check_resize(op, x, y);
    if (st)
        return st;
    int64_t want[4] = {x->shape[0], 2 * x->shape[1], 2 * x->shape[2], x->shape[3]};
    return need_shape(op, x, "upsamples to", want, y);
}

vp_status vp_op_upsample_bilinear2(vp_cmd *cmd, const vp_tensor *x, vp_tensor *y)
{
    vp_status st = check_up2("upsample_bilinear2", x, y);
    return st ? st : resize_run(cmd, x, y, x, y, 0, false);
}

vp_status vp_op_upsample_bilinear2_backward(vp_cmd *cmd, const vp_tensor *dy, vp_tensor *dx,
                                            bool accumulate)
{
    vp_status st = check_up2("upsample_bilinear2_backward", dx, dy);
    return st ? st : resize_run(cmd, dx, dy, dy, dx, 1, accumulate);
}
