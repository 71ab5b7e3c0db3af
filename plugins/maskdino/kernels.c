/*
 * The maskdino head's own kernels as graph ops, each with its CPU
 * reference for the host's reference executor. None passes a gradient:
 * Mask DINO detaches what goes into them.
 */
#include <math.h>
#include <stdio.h>

#include "maskdino.h"
#include "detach.spv.h"     /* made by vpeft-plugin.mk */
#include "mask_box.spv.h"
#include "recip.spv.h"
#include "sine_embed.spv.h"

enum { MD_WG = 64, MD_MAX_GROUPS = 65535 };

static uint32_t groups_for(int64_t n, int64_t per_group)
{
    int64_t g = (n + per_group - 1) / per_group;
    return (uint32_t)(g < 1 ? 1 : g > MD_MAX_GROUPS ? MD_MAX_GROUPS : g);
}

static vp_custom_kernel *kernel(vp_graph *g, const char *name, const uint32_t *spv, size_t bytes,
                                uint32_t bindings, uint32_t push)
{
    vp_kernel_desc d = {.size = sizeof d, .name = name, .spirv = spv, .spirv_bytes = bytes,
                        .n_bindings = bindings, .push_size = push,
                        .local_size = {MD_WG, 1, 1}};
    vp_custom_kernel *k = NULL;
    if (H->kernel(g, &d, &k))
        return NULL; /* the graph holds the error */
    return k;
}

/* ---- sine embedding ---------------------------------------------------------------- */

static vp_status sine_reference(void *user, const vp_custom_ref_io *io)
{
    (void)user;
    int64_t n = io->in_shape[0][0], f = io->in_shape[1][0];
    static const int coord[4] = {1, 0, 2, 3}; /* blocks y, x, w, h */
    for (int64_t r = 0; r < n; r++)
        for (int blk = 0; blk < 4; blk++)
            for (int64_t j = 0; j < f; j++) {
                double t = io->in[0][r * 4 + coord[blk]] * 2.0 * 3.14159265358979323846 *
                           io->in[1][j];
                io->out[(r * 4 + blk) * f + j] = (j & 1) ? cos(t) : sin(t);
            }
    return VP_OK;
}

vp_gt *md_sine_embed(vp_graph *g, vp_gt *r)
{
    if (!r)
        return NULL;
    const int64_t *s = H->shape(r);
    int64_t n = s[0], f = MD_SINE_FREQS;
    if (H->ndim(r) != 2 || s[1] != 4 || n * 4 * f > (int64_t)UINT32_MAX) {
        H->error(VP_ERR_SHAPE, "maskdino: the sine embedding takes (n, 4) boxes, n < 2^23");
        return NULL;
    }
    vp_gt *inv = H->find(g, "maskdino.sine_inv_dim");
    if (!inv) {
        /* torch: dim_t = 10000 ** (2 * (j // 2) / 128) in float32 */
        float d[MD_SINE_FREQS];
        for (int64_t j = 0; j < f; j++)
            d[j] = (float)(1.0 / (double)powf(10000.0f, (float)(2 * (j / 2)) / (float)f));
        inv = H->constant(g, "maskdino.sine_inv_dim", 1, &f, d);
    }
    vp_custom_kernel *k = kernel(g, "maskdino.sine_embed", vp_spv_sine_embed,
                                 sizeof vp_spv_sine_embed, 3, 2 * sizeof(uint32_t));
    if (!k || !inv)
        return NULL;
    uint32_t push[2] = {(uint32_t)n, (uint32_t)f};
    vp_custom_call c = {.size = sizeof c, .kernel = k, .n_in = 2, .in = (vp_gt *[]){r, inv},
                        .out_ndim = 2, .out_shape = (int64_t[]){n, 4 * f}, .push = push,
                        .push_size = sizeof push,
                        .groups = {groups_for(n * 4 * f, MD_WG), 1, 1},
                        .reference = sine_reference};
    return H->custom(g, &c);
}

/* ---- boxes from masks ---------------------------------------------------------------- */

typedef struct box_user {
    int64_t h, w;
    md_box_init mode;
} box_user;

static double inv_sigmoid(double b)
{
    b = b < 0 ? 0 : b > 1 ? 1 : b;
    double x1 = b < 1e-5 ? 1e-5 : b, x2 = 1 - b < 1e-5 ? 1e-5 : 1 - b;
    return log(x1 / x2);
}

static vp_status box_reference(void *user, const vp_custom_ref_io *io)
{
    const box_user *u = user;
    int64_t rows = io->in_shape[0][0];
    for (int64_t r = 0; r < rows; r++) {
        int64_t lx = u->w, ly = u->h, hx = -1, hy = -1;
        for (int64_t i = 0; i < u->h * u->w; i++)
            if (io->in[0][r * u->h * u->w + i] > (u->mode == MD_BOX_TARGET ? 0.5 : 0.0)) {
                int64_t cx = i % u->w, cy = i / u->w;
                lx = cx < lx ? cx : lx;
                hx = cx > hx ? cx : hx;
                ly = cy < ly ? cy : ly;
                hy = cy > hy ? cy : hy;
            }
        bool empty = hx < 0;
        double x1, y1, x2, y2;
        if (u->mode != MD_BOX_MASK2BOX) {
            x1 = empty ? 0 : (double)lx, y1 = empty ? 0 : (double)ly;
            x2 = empty ? 0 : (double)(hx + 1), y2 = empty ? 0 : (double)(hy + 1);
        } else {
            x1 = empty ? 1e8 : (double)lx, y1 = empty ? 1e8 : (double)ly;
            x2 = empty ? 0 : (double)hx, y2 = empty ? 0 : (double)hy;
        }
        double fw = (double)u->w, fh = (double)u->h;
        double b[4] = {(x1 + x2) / 2 / fw, (y1 + y2) / 2 / fh, (x2 - x1) / fw, (y2 - y1) / fh};
        for (int i = 0; i < 4; i++)
            io->out[4 * r + i] = u->mode == MD_BOX_TARGET ? b[i] : inv_sigmoid(b[i]);
    }
    return VP_OK;
}

vp_gt *md_mask_box(vp_graph *g, vp_gt *x, int64_t h, int64_t w, md_box_init mode,
                   m2f_owned *own)
{
    if (!x)
        return NULL;
    const int64_t *s = H->shape(x);
    if (H->ndim(x) != 2 || s[1] != h * w || s[0] * h * w > (int64_t)UINT32_MAX) {
        H->error(VP_ERR_SHAPE, "maskdino: boxes from masks take (rows, %lld) mask logits, fewer "
                 "than 2^32 in all", (long long)(h * w));
        return NULL;
    }
    box_user *u = m2f_own(own, sizeof *u); /* lives as long as the head instance */
    if (!u) {
        H->error(VP_ERR_NOMEM, "maskdino: out of host memory");
        return NULL;
    }
    *u = (box_user){h, w, mode};
    vp_custom_kernel *k = kernel(g, "maskdino.mask_box", vp_spv_mask_box, sizeof vp_spv_mask_box,
                                 2, 4 * sizeof(uint32_t));
    if (!k)
        return NULL;
    uint32_t push[4] = {(uint32_t)s[0], (uint32_t)h, (uint32_t)w,
                        mode == MD_BOX_BITMASK ? 0u : mode == MD_BOX_MASK2BOX ? 1u : 2u};
    vp_custom_call c = {.size = sizeof c, .kernel = k, .n_in = 1, .in = (vp_gt *[]){x},
                        .out_ndim = 2, .out_shape = (int64_t[]){s[0], 4}, .push = push,
                        .push_size = sizeof push, .groups = {groups_for(s[0], 1), 1, 1},
                        .reference = box_reference, .user = u};
    return H->custom(g, &c);
}

/* ---- detach ------------------------------------------------------------------------ */

static vp_status detach_reference(void *user, const vp_custom_ref_io *io)
{
    (void)user;
    int64_t n = 1;
    for (int i = 0; i < io->in_ndim[0]; i++)
        n *= io->in_shape[0][i];
    for (int64_t i = 0; i < n; i++)
        io->out[i] = io->in[0][i];
    return VP_OK;
}

vp_gt *md_detach(vp_graph *g, vp_gt *x)
{
    if (!x)
        return NULL;
    int64_t n = H->nelem(x);
    if (n > (int64_t)UINT32_MAX) {
        H->error(VP_ERR_SHAPE, "maskdino: %s is too large to detach", H->name(x));
        return NULL;
    }
    vp_custom_kernel *k = kernel(g, "maskdino.detach", vp_spv_detach, sizeof vp_spv_detach, 2,
                                 sizeof(uint32_t));
    if (!k)
        return NULL;
    uint32_t push[1] = {(uint32_t)n};
    vp_custom_call c = {.size = sizeof c, .kernel = k, .n_in = 1, .in = (vp_gt *[]){x},
                        .out_ndim = H->ndim(x), .out_shape = H->shape(x), .push = push,
                        .push_size = sizeof push, .groups = {groups_for(n, MD_WG), 1, 1},
                        .reference = detach_reference};
    return H->custom(g, &c);
}

/* ---- reciprocal ------------------------------------------------------------------- */

static vp_status recip_reference(void *user, const vp_custom_ref_io *io)
{
    (void)user;
    int64_t n = 1;
    for (int i = 0; i < io->in_ndim[0]; i++)
        n *= io->in_shape[0][i];
    for (int64_t i = 0; i < n; i++)
        io->out[i] = 1.0 / io->in[0][i];
    return VP_OK;
}

/* d(1/x) = -dy / x^2 = -dy y^2 */
static vp_status recip_backward(void *user, vp_graph *g, const vp_custom_grad *gr)
{
    (void)user;
    if (gr->needs[0])
        gr->din[0] = H->scale(g, H->mul(g, gr->dout, H->mul(g, gr->out, gr->out)), -1.0f);
    return H->graph_status(g);
}

vp_gt *md_recip(vp_graph *g, vp_gt *x)
{
    if (!x)
        return NULL;
    int64_t n = H->nelem(x);
    if (n > (int64_t)UINT32_MAX) {
        H->error(VP_ERR_SHAPE, "maskdino: %s is too large for the reciprocal", H->name(x));
        return NULL;
    }
    vp_custom_kernel *k = kernel(g, "maskdino.recip", vp_spv_recip, sizeof vp_spv_recip, 2,
                                 sizeof(uint32_t));
    if (!k)
        return NULL;
    uint32_t push[1] = {(uint32_t)n};
    vp_custom_call c = {.size = sizeof c, .kernel = k, .n_in = 1, .in = (vp_gt *[]){x},
                        .out_ndim = H->ndim(x), .out_shape = H->shape(x), .push = push,
                        .push_size = sizeof push, .groups = {groups_for(n, MD_WG), 1, 1},
                        .backward = recip_backward, .reference = recip_reference};
    return H->custom(g, &c);
}
