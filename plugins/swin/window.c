/*
 * window.c - the layout side of Swin, in the host's existing ops: zero
 * padding, the cyclic shift, window partition and its reverse, patch
 * merging's 2x2 gather, and the two constant tables of shifted-window
 * attention (relative position index, shift mask).
 *
 * Tensors have at most 4 dimensions, so HF's 6-dimensional window_partition
 * view (B, Hp/w, w, Wp/w, w, C) -> permute(0, 1, 3, 2, 4, 5) is done as
 * (B*Hp/w, w, Wp/w, w*C) -> permute(0, 2, 1, 3): the same element order.
 * Padding is a concat with zeros and the roll a concat of two slices; both
 * come out of one concat per axis (swin_pad_roll). swin_window_in/out are
 * the whole of it in each direction: with a shift or padding, one row map
 * (ABI 1.2) each, the slices and concats only for older hosts.
 */
#include <stdlib.h>
#include <stdio.h>
#include <string.h>

#include "swin.h"

#define H swin_H

static vp_gt *fail_nomem(swin_build *c)
{
    c->st = H->error(VP_ERR_NOMEM, "swin: out of memory");
    return NULL;
}

/* A constant of zeros, one per shape and build. */
static vp_gt *zeros(swin_build *c, int ndim, const int64_t *shape)
{
    for (int i = 0; i < c->n_zero; i++)
        if (c->zero[i].ndim == ndim && !memcmp(c->zero[i].shape, shape, (size_t)ndim * 8))
            return c->zero[i].t;
    int64_t n = 1;
    for (int d = 0; d < ndim; d++)
        n *= shape[d];
    float *z = calloc((size_t)n, sizeof *z);
    if (!z)
        return fail_nomem(c);
    char name[SWIN_NAME_LEN];
    snprintf(name, sizeof name, "%sswin.zeros.%d", c->pfx, c->n_const++);
    vp_gt *t = H->constant(c->g, name, ndim, shape, z);
    free(z);
    if (t && c->n_zero < SWIN_MAX_ZEROS) {
        c->zero[c->n_zero].ndim = ndim;
        memcpy(c->zero[c->n_zero].shape, shape, (size_t)ndim * 8);
        c->zero[c->n_zero++].t = t;
    }
    return t;
}

vp_gt *swin_pad_roll(swin_build *c, vp_gt *x, int axis, int64_t Lp, int64_t s)
{
    if (!x)
        return NULL;
    int nd = H->ndim(x);
    int64_t L = H->shape(x)[axis];
    if (Lp == L && s == 0)
        return x;
    /* padded[s .. Lp) then padded[0 .. s), each split where x ends (L). */
    vp_gt *part[4];
    uint32_t n = 0;
    const int64_t range[2][2] = {{s, Lp}, {0, s}};
    for (int k = 0; k < 2; k++) {
        int64_t a = range[k][0], e = range[k][1];
        int64_t xe = e < L ? e : L, za = a > L ? a : L;
        if (a < xe)
            part[n++] = a == 0 && xe == L ? x : H->slice(c->g, x, axis, a, xe - a);
        if (za < e) {
            int64_t shape[VP_MAX_DIMS];
            memcpy(shape, H->shape(x), (size_t)nd * 8);
            shape[axis] = e - za;
            part[n++] = zeros(c, nd, shape);
        }
    }
    return n == 1 ? part[0] : H->concat(c->g, part, n, axis);
}

/* x (.., Lp along axis, ..) rolled as swin_pad_roll left it -> the first L
 * of the unrolled sequence: y[i] = x[(i - s) mod Lp], i < L. */
static vp_gt *unroll_crop(swin_build *c, vp_gt *x, int axis, int64_t L, int64_t s)
{
    if (!x)
        return NULL;
    int64_t Lp = H->shape(x)[axis], j0 = (Lp - s) % Lp;
    if (j0 == 0 && L == Lp)
        return x;
    int64_t n1 = L < Lp - j0 ? L : Lp - j0;
    vp_gt *a = H->slice(c->g, x, axis, j0, n1);
    if (n1 == L)
        return a;
    vp_gt *parts[2] = {a, H->slice(c->g, x, axis, 0, L - n1)};
    return H->concat(c->g, parts, 2, axis);
}

static int64_t round_up(int64_t n, int64_t w) { return (n + w - 1) / w * w; }

/* The row of the rolled, padded (Hp, Wp) grid that window token n (of
 * B * (Hp / w) * (Wp / w) windows of w * w) holds: window (b, wy, wx),
 * token (ty, tx) sits at (wy w + ty, wx w + tx). */
static void window_pos(int64_t n, int64_t w, int64_t Hp, int64_t Wp, int64_t *b, int64_t *Y,
                       int64_t *X)
{
    int64_t N = w * w, nh = Hp / w, nw = Wp / w, win = n / N, t = n % N;
    *b = win / (nh * nw);
    *Y = (win / nw) % nh * w + t / w;
    *X = win % nw * w + t % w;
}

/* Window partitions with a shift or padding as one row map (ABI 1.2):
 * the padded map rolled by -s (torch.roll(x, (-s, -s))) cut into windows,
 * or back. in: x (B, Hs, Ws, C) -> (Bw, N, C); else y (Bw, N, C) -> (B, Hs,
 * Ws, C) for the given B, Hs, Ws. */
static vp_gt *window_map(swin_build *c, vp_gt *x, bool in, int64_t B, int64_t Hs, int64_t Ws,
                         int64_t w, int64_t s)
{
    int64_t Hp = round_up(Hs, w), Wp = round_up(Ws, w), C = H->shape(x)[H->ndim(x) - 1];
    int64_t nwin = B * Hp * Wp, nimg = B * Hs * Ws, n_out = in ? nwin : nimg;
    int32_t *idx = malloc((size_t)n_out * sizeof *idx);
    if (!idx)
        return fail_nomem(c);
    if (in) {
        for (int64_t n = 0; n < nwin; n++) {
            int64_t b, Y, X;
            window_pos(n, w, Hp, Wp, &b, &Y, &X);
            int64_t Yp = (Y + s) % Hp, Xp = (X + s) % Wp; /* before the roll */
            idx[n] = Yp < Hs && Xp < Ws ? (int32_t)((b * Hs + Yp) * Ws + Xp) : -1;
        }
    } else {
        for (int64_t n = 0; n < nwin; n++) {
            int64_t b, Y, X;
            window_pos(n, w, Hp, Wp, &b, &Y, &X);
            int64_t Yp = (Y + s) % Hp, Xp = (X + s) % Wp;
            if (Yp < Hs && Xp < Ws)
                idx[(b * Hs + Yp) * Ws + Xp] = (int32_t)n;
        }
    }
    vp_gt *y = in ? H->row_map(c->g, x, idx, 3, (int64_t[]){nwin / (w * w), w * w, C})
                  : H->row_map(c->g, x, idx, 4, (int64_t[]){B, Hs, Ws, C});
    free(idx);
    return y;
}

vp_gt *swin_window_in(swin_build *c, vp_gt *x, int64_t w, int64_t s)
{
    if (!x)
        return NULL;
    vp_graph *g = c->g;
    const int64_t *sh = H->shape(x);
    int64_t B = sh[0], Hp = round_up(sh[1], w), Wp = round_up(sh[2], w), C = sh[3];
    if ((s || Hp != sh[1] || Wp != sh[2]) && H->abi_minor >= 2)
        return window_map(c, x, true, B, sh[1], sh[2], w, s);
    x = swin_pad_roll(c, x, 1, Hp, s);
    x = swin_pad_roll(c, x, 2, Wp, s);                               /* (B, Hp, Wp, C) */
    x = H->reshape(g, x, 4, (int64_t[]){B * Hp / w, w, Wp / w, w * C});
    x = H->permute(g, x, (int[]){0, 2, 1, 3});                      /* (B*Hp/w, Wp/w, w, w*C) */
    return H->reshape(g, x, 3, (int64_t[]){B * (Hp / w) * (Wp / w), w * w, C});
}

vp_gt *swin_window_out(swin_build *c, vp_gt *y, int64_t Hs, int64_t Ws, int64_t w, int64_t s)
{
    if (!y)
        return NULL;
    vp_graph *g = c->g;
    int64_t Hp = round_up(Hs, w), Wp = round_up(Ws, w), C = H->shape(y)[2];
    int64_t B = H->shape(y)[0] / ((Hp / w) * (Wp / w));
    if ((s || Hp != Hs || Wp != Ws) && H->abi_minor >= 2)
        return window_map(c, y, false, B, Hs, Ws, w, s);
    y = H->reshape(g, y, 4, (int64_t[]){B * Hp / w, Wp / w, w, w * C});
    y = H->permute(g, y, (int[]){0, 2, 1, 3});                      /* (B*Hp/w, w, Wp/w, w*C) */
    y = H->reshape(g, y, 4, (int64_t[]){B, Hp, Wp, C});
    y = unroll_crop(c, y, 1, Hs, s);
    return unroll_crop(c, y, 2, Ws, s);
}

vp_gt *swin_rel_index(swin_build *c, int64_t w)
{
    int64_t N = w * w;
    int32_t *idx = malloc((size_t)(N * N) * sizeof *idx);
    if (!idx)
        return fail_nomem(c);
    /* SwinSelfAttention.__init__: token t = (t / w, t % w); index of the
     * pair (t1, t2) = (dy + w - 1) * (2w - 1) + (dx + w - 1). */
    for (int64_t t1 = 0; t1 < N; t1++)
        for (int64_t t2 = 0; t2 < N; t2++)
            idx[t1 * N + t2] = (int32_t)((t1 / w - t2 / w + w - 1) * (2 * w - 1) +
                                         (t1 % w - t2 % w + w - 1));
    char name[SWIN_NAME_LEN];
    snprintf(name, sizeof name, "%sswin.relative_position_index", c->pfx);
    vp_gt *t = H->constant_i32(c->g, name, 1, (int64_t[]){N * N}, idx);
    free(idx);
    return t;
}

/* Which of get_attn_mask's three slices (0, -w), (-w, -s), (-s, None) of a
 * side of length Lp position y falls in. */
static int region(int64_t y, int64_t Lp, int64_t w, int64_t s)
{
    return y < Lp - w ? 0 : y < Lp - s ? 1 : 2;
}

vp_gt *swin_shift_mask(swin_build *c, int stage, int64_t Hp, int64_t Wp, int64_t w, int64_t s,
                       int64_t heads)
{
    int64_t N = w * w, nh = Hp / w, nw = Wp / w, per = heads * N * N;
    float *m = malloc((size_t)(nh * nw * per) * sizeof *m);
    if (!m)
        return fail_nomem(c);
    for (int64_t wy = 0; wy < nh; wy++)
        for (int64_t wx = 0; wx < nw; wx++) {
            float *win = m + (wy * nw + wx) * per;
            for (int64_t a = 0; a < N; a++)
                for (int64_t b = 0; b < N; b++) {
                    int ra = 3 * region(wy * w + a / w, Hp, w, s) +
                             region(wx * w + a % w, Wp, w, s);
                    int rb = 3 * region(wy * w + b / w, Hp, w, s) +
                             region(wx * w + b % w, Wp, w, s);
                    win[a * N + b] = ra == rb ? 0.0f : -100.0f;
                }
            for (int64_t h = 1; h < heads; h++)
                memcpy(win + h * N * N, win, (size_t)(N * N) * sizeof *m);
        }
    char name[SWIN_NAME_LEN];
    snprintf(name, sizeof name, "%sswin.shift_mask.%d", c->pfx, stage);
    vp_gt *t = H->constant(c->g, name, 4, (int64_t[]){nh * nw, heads, N, N}, m);
    free(m);
    return t;
}

vp_gt *swin_merge_gather(swin_build *c, vp_gt *x)
{
    if (!x)
        return NULL;
    vp_graph *g = c->g;
    const int64_t *sh = H->shape(x);
    int64_t B = sh[0], He = sh[1] + sh[1] % 2, We = sh[2] + sh[2] % 2, C = sh[3];
    x = swin_pad_roll(c, x, 1, He, 0);
    x = swin_pad_roll(c, x, 2, We, 0);
    /* (B*He/2, 2, We, C) -> (B*He/2, We, 2, C): element (i, q, r) of a 2x2
     * cell, q the column and r the row parity, is channel block 2q + r. */
    x = H->reshape(g, x, 4, (int64_t[]){B * He / 2, 2, We, C});
    x = H->permute(g, x, (int[]){0, 2, 1, 3});
    return H->reshape(g, x, 4, (int64_t[]){B, He / 2, We / 2, 4 * C});
}
