/*
 * Mask2Former's training loss: for each prediction (before the first
 * decoder layer and after every layer), Hungarian matching of queries to
 * the image's instances on cost = class_weight * (-p(class)) + mask_weight
 * * sigmoid BCE + dice_weight * dice, then cross-entropy over every query
 * (unmatched ones to the no-object class, weighted no_object_weight) and
 * BCE and dice over the matched masks, each mask loss normalized by the
 * batch's number of instances.
 *
 * The cost matrices come from the device as gemms over the mask
 * positions (the heavy part); a host node per prediction finishes them
 * (O(Q T) arithmetic), solves the assignment (match/hungarian.c), and hands
 * back int32 indices: the matched prediction row of each target and the
 * class target of each query, plus the normalizers.
 * Masks are compared at the mask features' resolution.
 *
 * Normalizers: the mask losses are divided by the number of instances,
 * and the class loss is a mean weighted by class (no-object queries count
 * no_object_weight). In data-parallel training each rank sees part of the
 * global batch, so the input target.instances (1) carries the global
 * batch's instances divided by the ranks (Detectron2's all-reduced
 * num_masks); both normalizers then come from it, and the mean of the
 * ranks' gradients is the global batch's. 0 (an input never written) means
 * this batch's own count. Exact when every instance can be matched
 * (max_targets <= queries).
 *
 * A target slot without an instance (label -1) is matched to a constant
 * row of logits -30 (its mask must be zeros): its BCE and dice are ~1e-13
 * and carry no gradient, so fixed-size batches need no per-row weights.
 */
#include <math.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "m2f.h"
#include "match/hungarian.h"

#define H m2f_H
#define PAD_LOGIT -30.0f

typedef struct match_ctx {
    int64_t B, Q, T, C, HW;
    double cw, mw, dw, eos;
    double *cost;   /* Q * T scratch, made with the graph: nothing allocated per step */
    int *col, *tj;  /* Q, T */
} match_ctx;

/* in: P (B,Q,T) probability of each target's class, A (B,Q,T) and negsum
 * (B,Q,1) the BCE cost's two parts, numer (B,Q,T) sigmoid . target, ssum
 * (B,Q,1), tsum (B,T,1), labels (B,T) int32, instances (1).
 * out: gidx (B*T) int32, tclass (B*Q) int32, fbce (1), fdice (1), fce (1). */
static vp_status match(void *user, const vp_host_io *io)
{
    const match_ctx *m = user;
    const float *P = io->in[0], *A = io->in[1], *negsum = io->in[2], *numer = io->in[3];
    const float *ssum = io->in[4], *tsum = io->in[5];
    const int32_t *labels = (const int32_t *)io->in[6];
    int32_t *gidx = (int32_t *)io->out[0], *tclass = (int32_t *)io->out[1];
    int64_t B = m->B, Q = m->Q, T = m->T, total = 0, matched = 0;
    double *cost = m->cost;
    int *col = m->col, *tj = m->tj;
    vp_status st = VP_OK;
    bool finite = true;
    for (int64_t b = 0; !st && b < B; b++) {
        int n = 0;
        for (int64_t t = 0; t < T; t++) {
            int32_t l = labels[b * T + t];
            if (l >= m->C) {
                st = H->error(VP_ERR_INVALID, "mask2former: image %lld, target %lld: class %d, "
                              "the head has %lld classes (0 to %lld; -1: no instance)",
                              (long long)b, (long long)t, l, (long long)m->C,
                              (long long)m->C - 1);
                break;
            }
            gidx[b * T + t] = (int32_t)(B * Q); /* the constant row, unless matched */
            if (l >= 0)
                tj[n++] = (int)t;
        }
        for (int64_t q = 0; q < Q; q++)
            tclass[b * Q + q] = (int32_t)m->C; /* no object, unless matched */
        if (st || !n)
            continue;
        bool ok = true;
        for (int64_t q = 0; q < Q; q++)
            for (int j = 0; j < n; j++) {
                int64_t k = (b * Q + q) * T + tj[j];
                double dice = 1.0 - (2.0 * numer[k] + 1.0) /
                                        ((double)ssum[b * Q + q] + tsum[b * T + tj[j]] + 1.0);
                double v = m->cw * -(double)P[k] +
                           m->mw * ((double)A[k] + negsum[b * Q + q]) / (double)m->HW +
                           m->dw * dice;
                ok &= isfinite(v) && fabs(v) <= M2F_HUNGARIAN_MAX_COST;
                cost[q * n + j] = v;
            }
        if (!ok) {
            /* Non-finite predictions: this image's targets stay unmatched
             * and the loss below is made NaN, so that the caller's check
             * of the loss sees it: training names the step and stops, or
             * skips it with train.skip_nonfinite, as for any other
             * non-finite loss. */
            if (finite)
                H->log(VP_LOG_WARN, "mask2former: image %lld of the batch: the matching cost is "
                       "not finite (NaN or Inf in the predictions): the loss is NaN",
                       (long long)b);
            finite = false;
            total += n;
            continue;
        }
        double sum;
        if (m2f_hungarian(cost, (int)Q, n, col, &sum) != 0) {
            st = H->error(VP_ERR_NOMEM, "mask2former: image %lld: out of host memory for the "
                          "matching", (long long)b);
            break;
        }
        for (int64_t q = 0; q < Q; q++)
            if (col[q] >= 0) {
                int t = tj[col[q]];
                gidx[b * T + t] = (int32_t)(b * Q + q);
                tclass[b * Q + q] = labels[b * T + t];
                matched++;
            }
        total += n;
    }
    /* instances per rank in the global batch, or this batch's */
    double given = (double)io->in[7][0], inst = given > 0 ? given : (double)total;
    double norm = inst > 1.0 ? inst : 1.0;
    io->out[2][0] = (float)((double)(B * T) / norm); /* mean over B*T masks -> per instance */
    io->out[3][0] = (float)(1.0 / norm);
    /* the class loss's weight sum: this batch's over the global batch's per rank */
    double here = m->eos * (double)(B * Q - matched) + (double)matched;
    double all = given > 0 ? m->eos * ((double)(B * Q) - given) + given : here;
    io->out[4][0] = (float)(all > 0 ? here / all : 1.0);
    if (!finite)
        io->out[2][0] = io->out[3][0] = io->out[4][0] = NAN;
    return st;
}

/* Rows of ones: (n, 1) for row sums by gemm. */
vp_gt *m2f_ones_col(vp_graph *g, int64_t n)
{
    char name[64];
    snprintf(name, sizeof name, "head.loss.ones.%lld", (long long)n);
    vp_gt *t = H->find(g, name);
    if (t)
        return t;
    float *v = malloc((size_t)n * sizeof *v);
    if (!v)
        return NULL;
    for (int64_t i = 0; i < n; i++)
        v[i] = 1.0f;
    t = H->constant(g, name, 2, (int64_t[]){n, 1}, v);
    free(v);
    return t;
}

/* HF's point_sample at every target pixel's centre: grid_sample of the
 * mask logits x (B, Q, hm * wm) with align_corners=False and zero padding,
 * at the ht x wt centres -> (B, Q, ht * wt). With a zero border around the
 * logits, F.interpolate's bilinear resize of the padded map by the integer
 * ratio r reads exactly those points at an offset of r (its source
 * coordinate (dst + 0.5) / r - 0.5 is the centre's, shifted by the
 * border), and the outer cells mix with the zeros as grid_sample's do. */
static vp_gt *at_target_pixels(vp_graph *g, vp_gt *x, int64_t hm, int64_t wm, int64_t ht,
                               int64_t wt)
{
    if (ht == hm && wt == wm) /* the centres are the cells' own */
        return x;
    const int64_t *s = H->shape(x);
    int64_t B = s[0], Q = s[1], rh = ht / hm, rw = wt / wm;
    static const int to_last[4] = {0, 2, 3, 1}, to_first[4] = {0, 3, 1, 2};
    vp_gt *m = H->permute(g, H->reshape(g, x, 4, (int64_t[]){B, Q, hm, wm}), to_last);
    vp_gt *zr = H->find(g, "head.loss.pad_rows"), *zc = H->find(g, "head.loss.pad_cols");
    if (!zr || !zc) {
        float *z = calloc((size_t)(B * (hm + 2) * (wm > 1 ? wm : 1) * Q), sizeof *z);
        if (!z) {
            H->error(VP_ERR_NOMEM, "mask2former: out of host memory");
            return NULL;
        }
        zr = H->constant(g, "head.loss.pad_rows", 4, (int64_t[]){B, 1, wm, Q}, z);
        zc = H->constant(g, "head.loss.pad_cols", 4, (int64_t[]){B, hm + 2, 1, Q}, z);
        free(z);
    }
    m = H->concat(g, (vp_gt *[]){zr, m, zr}, 3, 1);
    m = H->concat(g, (vp_gt *[]){zc, m, zc}, 3, 2);
    m = H->resize_bilinear(g, m, ht + 2 * rh, wt + 2 * rw);
    m = H->slice(g, H->slice(g, m, 1, rh, ht), 2, rw, wt);   /* (B, ht, wt, Q) */
    return H->reshape(g, H->permute(g, m, to_first), 3, (int64_t[]){B, Q, ht * wt});
}

/* grid_sample (bilinear, align_corners=False, zero padding) of each row's
 * map at its own points, as HF's point_sample: x (R, h * w) maps, coords
 * (R, n, 2) as (x, y) in [0, 1] -> (R, n). It is multi-scale deformable
 * attention's sampling with one level, one head of width 1, one point per
 * query and weight 1, whose backward the graph has. */
vp_gt *m2f_point_sample(vp_graph *g, vp_gt *x, int64_t h, int64_t w, vp_gt *coords)
{
    if (!x || !coords)
        return NULL;
    int64_t R = H->shape(x)[0], n = H->shape(coords)[1];
    char name[64];
    snprintf(name, sizeof name, "head.loss.unit.%lldx%lld", (long long)R, (long long)n);
    vp_gt *ones = H->find(g, name);
    if (!ones) {
        float *v = malloc((size_t)(R * n) * sizeof *v);
        if (!v) {
            H->error(VP_ERR_NOMEM, "mask2former: out of host memory");
            return NULL;
        }
        for (int64_t i = 0; i < R * n; i++)
            v[i] = 1.0f;
        ones = H->constant(g, name, 4, (int64_t[]){R, n, 1, 1}, v);
        free(v);
    }
    vp_msdeform_levels lv = {.n = 1};
    lv.shape[0][0] = h;
    lv.shape[0][1] = w;
    vp_gt *y = H->msdeform(g, H->reshape(g, x, 4, (int64_t[]){R, h * w, 1, 1}), &lv,
                           H->reshape(g, coords, 4, (int64_t[]){R, n, 1, 2}), ones);
    return H->reshape(g, y, 2, (int64_t[]){R, n});
}

/* The same points (B, n, 2) for each of k rows per image: (B * k, n, 2),
 * through a gemm with a column of ones (no constant of that size). */
vp_gt *m2f_repeat_points(vp_graph *g, vp_gt *pts, int64_t k)
{
    if (!pts)
        return NULL;
    int64_t B = H->shape(pts)[0], n = H->shape(pts)[1];
    static const int swap[3] = {1, 0, 2};
    /* (k, B n 2) */
    vp_gt *r = H->gemm(g, m2f_ones_col(g, k), false,
                       H->reshape(g, pts, 2, (int64_t[]){1, B * n * 2}), false, NULL);
    r = H->permute(g, H->reshape(g, r, 3, (int64_t[]){k, B, n * 2}), swap);
    return H->reshape(g, r, 3, (int64_t[]){B * k, n, 2});
}

typedef struct pick_ctx {
    int64_t R, n, k;
    int32_t *ix; /* n scratch, made with the graph */
    const float *key;
} pick_ctx;

/* Quickselect of the k most uncertain (smallest |logit|, ties by index) of
 * ix[lo..hi) into its front. */
static bool less_certain(const pick_ctx *c, int32_t a, int32_t b)
{
    float x = fabsf(c->key[a]), y = fabsf(c->key[b]);
    return x < y || (x == y && a < b);
}

static void select_k(pick_ctx *c, int64_t lo, int64_t hi, int64_t k)
{
    while (hi - lo > 1) {
        int64_t mid = lo + (hi - lo) / 2;
        int32_t pv = c->ix[mid], t;
        int64_t i = lo, j = hi - 1;
        t = c->ix[mid], c->ix[mid] = c->ix[j], c->ix[j] = t;
        for (int64_t r = lo; r < j; r++)
            if (less_certain(c, c->ix[r], pv)) {
                t = c->ix[r], c->ix[r] = c->ix[i], c->ix[i] = t;
                i++;
            }
        t = c->ix[i], c->ix[i] = c->ix[j], c->ix[j] = t; /* the pivot at its place i */
        if (i == k || i + 1 == k)
            return;
        if (i > k)
            hi = i;
        else
            lo = i + 1;
    }
}

/* in: logits at the oversampled points (R, n). out: (R * k) int32, row r's
 * k most uncertain points (uncertainty -|logit|, HF's
 * calculate_uncertainty) as indices r * n + j into the points' rows. HF
 * takes torch.topk of the uncertainties: the same set, up to ties. */
static vp_status pick_uncertain(void *user, const vp_host_io *io)
{
    pick_ctx *c = user;
    int32_t *out = (int32_t *)io->out[0];
    for (int64_t r = 0; r < c->R; r++) {
        c->key = io->in[0] + r * c->n;
        for (int64_t j = 0; j < c->n; j++)
            c->ix[j] = (int32_t)j;
        if (c->k < c->n)
            select_k(c, 0, c->n, c->k);
        for (int64_t j = 0; j < c->k; j++)
            out[r * c->k + j] = (int32_t)(r * c->n + c->ix[j]);
    }
    return VP_OK;
}

/* HF's sample_points_using_uncertainty for the matched masks xm (R, h * w):
 * oversample_ratio * P random points per mask, the importance_sample_ratio
 * * P most uncertain of them, and the rest new random points -> (R, P, 2). */
vp_gt *m2f_uncertain_points(const m2f_cfg *c, vp_graph *g, vp_gt *xm, int64_t h, int64_t w,
                            uint32_t p, m2f_owned *own)
{
    int64_t R = H->shape(xm)[0], P = c->train_num_points;
    int64_t n = (int64_t)((double)P * c->oversample_ratio);
    int64_t k = (int64_t)(c->importance_sample_ratio * (double)P);
    char name[64];
    snprintf(name, sizeof name, "head.loss.points.%u.over", p);
    vp_gt *over = H->rand(g, name, 3, (int64_t[]){R, n, 2});
    vp_gt *pts = NULL;
    if (k > 0) {
        pick_ctx *pc = m2f_own(own, sizeof *pc);
        int32_t *ix = m2f_own(own, (size_t)n * sizeof *ix);
        if (!pc || !ix) {
            H->error(VP_ERR_NOMEM, "mask2former: out of host memory");
            return NULL;
        }
        *pc = (pick_ctx){R, n, k, ix, NULL};
        vp_gt *idx;
        snprintf(name, sizeof name, "head.loss.points.%u.pick", p);
        if (H->host(g, name, pick_uncertain, pc, 1,
                    (vp_gt *[]){m2f_point_sample(g, xm, h, w, over)}, 1,
                    (int[]){1}, (const int64_t *const[]){(int64_t[]){R * k}},
                    (vp_dtype[]){VP_I32}, &idx))
            return NULL;
        pts = H->reshape(g, H->gather_rows(g, H->reshape(g, over, 2, (int64_t[]){R * n, 2}), idx),
                         3, (int64_t[]){R, k, 2});
    }
    if (k < P) {
        snprintf(name, sizeof name, "head.loss.points.%u.random", p);
        vp_gt *rnd = H->rand(g, name, 3, (int64_t[]){R, P - k, 2});
        pts = pts ? H->concat(g, (vp_gt *[]){pts, rnd}, 2, 1) : rnd;
    }
    return pts;
}

vp_gt *m2f_loss(const m2f_cfg *c, vp_build *b, const m2f_decoder_out *d, int64_t hm, int64_t wm,
                int64_t ht, int64_t wt, m2f_owned *own)
{
    vp_graph *g = H->graph(b);
    const int64_t *ls = H->shape(d->pred[0].logits);
    int64_t B = ls[0], Q = c->queries, T = c->max_targets, C = c->classes, HW = ht * wt;
    /* sampled: train_num_points random points (HF's default); else every
     * target pixel once */
    const bool sampled = c->train_num_points > 0;
    const int64_t NP = sampled ? c->train_num_points : HW, HWm = hm * wm;
    if (!sampled && (ht % hm || wt % wm)) {
        H->error(VP_ERR_INVALID, "mask2former: targets of %lldx%lld are not a whole multiple of "
                 "the %lldx%lld mask logits", (long long)ht, (long long)wt, (long long)hm,
                 (long long)wm);
        return NULL;
    }
    vp_gt *labels = H->input_i32(g, "target.labels", 2, (int64_t[]){B, T});
    /* HF's targets are maps of their own resolution; Detectron2-style ones
     * are flat at the mask features'. */
    vp_gt *tmask = c->hf ? H->input(g, "target.masks", 4, (int64_t[]){B, T, ht, wt})
                         : H->input(g, "target.masks", 3, (int64_t[]){B, T, HW});
    if (tmask && c->hf)
        tmask = H->reshape(g, tmask, 3, (int64_t[]){B, T, HW});
    vp_gt *inst = H->input(g, "target.instances", 1, (int64_t[]){1});
    if (!labels || !tmask || !inst)
        return NULL;
    vp_gt *t2 = H->reshape(g, tmask, 2, (int64_t[]){B * T, HW});

    /* Constants: the identity (class ids to one-hot rows), class weights,
     * the padding row, ones for row sums. */
    size_t ne = (size_t)((C + 1) * (C + 1)), nb = (size_t)(HW > HWm ? HW : HWm);
    float *buf = calloc(ne > nb ? ne : nb, sizeof *buf);
    if (!buf) {
        H->error(VP_ERR_NOMEM, "mask2former: out of host memory");
        return NULL;
    }
    for (int64_t i = 0; i <= C; i++)
        buf[i * (C + 1) + i] = 1.0f;
    vp_gt *eye = H->constant(g, "head.loss.eye", 2, (int64_t[]){C + 1, C + 1}, buf);
    for (int64_t i = 0; i <= C; i++)
        buf[i] = i == C ? (float)c->no_object_weight : 1.0f;
    vp_gt *cls_w = H->constant(g, "head.loss.class_weight", 1, (int64_t[]){C + 1}, buf);
    /* The padding row is sampled between its cells when points are: so
     * negative enough that even a corner point (a quarter of it, the rest
     * zero padding) is a probability of 0. */
    int64_t npad = sampled ? HWm : HW;
    for (int64_t i = 0; i < npad; i++)
        buf[i] = sampled ? -1e4f : PAD_LOGIT;
    vp_gt *pad = H->constant(g, "head.loss.pad", 2, (int64_t[]){1, npad}, buf);
    free(buf);
    vp_gt *ones_hw = m2f_ones_col(g, NP);

    /* Targets as one-hot class rows (B, T, C + 1) and their mask sums. */
    vp_gt *onehot = H->reshape(g, H->gather_rows(g, eye, H->reshape(g, labels, 1,
                                                                    (int64_t[]){B * T})),
                               3, (int64_t[]){B, T, C + 1});

    vp_gt *total = NULL;
    for (uint32_t p = 0; p < d->n; p++) {
        vp_gt *logits = d->pred[p].logits; /* (B, Q, C + 1) */
        /* The matcher compares every mask with every target at NP points:
         * every target pixel, or (HF's matcher) the same random points for
         * all of an image's queries and targets. x (B, Q, NP), tmp (B, T, NP) */
        vp_gt *x, *tmp;
        char name[64];
        if (sampled) {
            snprintf(name, sizeof name, "head.match.%u.points", p);
            vp_gt *pts = H->rand(g, name, 3, (int64_t[]){B, NP, 2});
            x = H->reshape(g, m2f_point_sample(g, H->reshape(g, d->pred[p].masks, 2,
                                                         (int64_t[]){B * Q, HWm}),
                                           hm, wm, m2f_repeat_points(g, pts, Q)),
                           3, (int64_t[]){B, Q, NP});
            tmp = H->reshape(g, m2f_point_sample(g, t2, ht, wt, m2f_repeat_points(g, pts, T)), 3,
                             (int64_t[]){B, T, NP});
        } else {
            x = at_target_pixels(g, d->pred[p].masks, hm, wm, ht, wt);
            tmp = tmask;
        }
        vp_gt *tsum = H->reshape(g, H->gemm(g, H->reshape(g, tmp, 2, (int64_t[]){B * T, NP}), false,
                                            ones_hw, false, NULL),
                                 3, (int64_t[]){B, T, 1});
        /* The cost matrices' device part. */
        vp_gt *prob = H->softmax(g, logits);
        vp_gt *P = H->gemm(g, prob, false, onehot, true, NULL);           /* (B, Q, T) */
        vp_gt *pos = H->softplus(g, H->scale(g, x, -1.0f)), *neg = H->softplus(g, x);
        vp_gt *A = H->gemm(g, H->add(g, pos, H->scale(g, neg, -1.0f)), false, tmp, true, NULL);
        vp_gt *x2 = H->reshape(g, neg, 2, (int64_t[]){B * Q, NP});
        vp_gt *negsum = H->reshape(g, H->gemm(g, x2, false, ones_hw, false, NULL), 3,
                                   (int64_t[]){B, Q, 1});
        vp_gt *s = H->sigmoid(g, x);
        vp_gt *numer = H->gemm(g, s, false, tmp, true, NULL);
        vp_gt *ssum = H->reshape(g, H->gemm(g, H->reshape(g, s, 2, (int64_t[]){B * Q, NP}), false,
                                            ones_hw, false, NULL),
                                 3, (int64_t[]){B, Q, 1});

        match_ctx *mc = m2f_own(own, sizeof *mc);
        double *cost = m2f_own(own, (size_t)(Q * T) * sizeof *cost);
        int *col = m2f_own(own, (size_t)Q * sizeof *col), *tj = m2f_own(own, (size_t)T * sizeof *tj);
        if (!mc || !cost || !col || !tj) {
            H->error(VP_ERR_NOMEM, "mask2former: out of host memory");
            return NULL;
        }
        *mc = (match_ctx){B, Q, T, C, NP, c->match_class_weight, c->mask_weight, c->dice_weight,
                          c->no_object_weight, cost, col, tj};
        vp_gt *outs[5];
        snprintf(name, sizeof name, "head.match.%u", p);
        vp_status st = H->host(g, name, match, mc, 8,
                               (vp_gt *[]){P, A, negsum, numer, ssum, tsum, labels, inst}, 5,
                               (int[]){1, 1, 1, 1, 1},
                               (const int64_t *const[]){(int64_t[]){B * T}, (int64_t[]){B * Q},
                                                        (int64_t[]){1}, (int64_t[]){1},
                                                        (int64_t[]){1}},
                               (vp_dtype[]){VP_I32, VP_I32, VP_F32, VP_F32, VP_F32}, outs);
        if (st)
            return NULL;

        /* Class loss over every query. */
        vp_gt *ce = H->mul(g, H->cross_entropy(g, H->reshape(g, logits, 2,
                                                             (int64_t[]){B * Q, C + 1}),
                                               outs[1], cls_w),
                           outs[4]);
        /* Mask losses over the matched masks (padding slots: the constant
         * row), at every target pixel or at HF's importance-sampled points
         * of each matched mask. */
        vp_gt *xs, *ts;
        if (sampled) {
            vp_gt *xe = H->concat(g, (vp_gt *[]){H->reshape(g, d->pred[p].masks, 2,
                                                            (int64_t[]){B * Q, HWm}),
                                                 pad},
                                  2, 0);
            vp_gt *xm = H->gather_rows(g, xe, outs[0]); /* (B*T, hm * wm) */
            vp_gt *pts = m2f_uncertain_points(c, g, xm, hm, wm, p, own);
            xs = m2f_point_sample(g, xm, hm, wm, pts);   /* (B*T, P) */
            ts = m2f_point_sample(g, t2, ht, wt, pts);
        } else {
            vp_gt *xe = H->concat(g, (vp_gt *[]){H->reshape(g, x, 2, (int64_t[]){B * Q, HW}), pad},
                                  2, 0);
            xs = H->gather_rows(g, xe, outs[0]); /* (B*T, HW) */
            ts = t2;
        }
        vp_gt *bce = H->mul(g, H->bce_logits(g, xs, ts), outs[2]);
        vp_gt *dice = H->mul(g, H->dice(g, xs, ts, 1.0f), outs[3]);
        vp_gt *wce = H->scale(g, ce, (float)c->class_weight);
        vp_gt *wbce = H->scale(g, bce, (float)c->mask_weight);
        vp_gt *wdice = H->scale(g, dice, (float)c->dice_weight);
        vp_gt *l = H->add(g, wce, H->add(g, wbce, wdice));
        if (c->hf) { /* HF's loss_dict (detectron2's names: loss_ce), weighted, "_<i>"
                      * for the auxiliary predictions */
            char sfx[16] = "";
            if (p + 1 < d->n)
                snprintf(sfx, sizeof sfx, "_%u", p);
            snprintf(name, sizeof name, "%s%s", c->d2 ? "loss_ce" : "loss_cross_entropy", sfx);
            H->output(b, name, wce);
            snprintf(name, sizeof name, "loss_mask%s", sfx);
            H->output(b, name, wbce);
            snprintf(name, sizeof name, "loss_dice%s", sfx);
            H->output(b, name, wdice);
        }
        total = total ? H->add(g, total, l) : l;
        if (p + 1 == d->n) { /* the last layer's terms, for progress lines */
            H->output(b, "loss.class", ce);
            H->output(b, "loss.mask", bce);
            H->output(b, "loss.dice", dice);
        }
    }
    return total;
}
