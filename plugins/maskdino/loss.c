/*
 * The maskdino head's training loss: Mask DINO's SetCriterion with its
 * HungarianMatcher (maskdino/modeling/criterion.py, matcher.py), without
 * denoising. For the final prediction, every auxiliary one (the initial
 * queries' and each layer's but the last) and the interm one (the selected
 * encoder tokens'), each matched on its own:
 *
 *   cost = COST_CLASS focal (a (1-p)^2 (-log(p + 1e-8)) - (1-a) p^2
 *          (-log(1 - p + 1e-8)), a = 0.25, at the target's class)
 *        + COST_MASK mean BCE + COST_DICE dice (+1 smoothing) on the points
 *        + COST_BOX L1 (cx, cy, w, h) + COST_GIOU -GIoU
 *   loss_ce   = sigmoid focal loss over every query and class, one-hot
 *               targets (unmatched: all zeros), summed / num_masks
 *   loss_mask = BCE mean over each matched mask's points, summed / num_masks
 *   loss_dice = dice over the same points, summed / num_masks
 *   loss_bbox = L1 of the matched boxes, summed / num_masks
 *   loss_giou = 1 - GIoU of the matched boxes, summed / num_masks
 *
 * each weighted (CLASS_WEIGHT, MASK_WEIGHT, DICE_WEIGHT, BOX_WEIGHT,
 * GIOU_WEIGHT) and registered as an output under the criterion's names
 * (loss_ce, loss_ce_0, ..., loss_ce_interm), the loss their sum.
 *
 * Targets: "target.labels" (B, T) int32 (-1: no instance), "target.masks"
 * (B, T, ht, wt) (1 inside) at a whole multiple of the mask logits'
 * resolution; their boxes are the masks' bounding boxes (the pixels > 0.5,
 * detectron2's BitMasks rule), normalized (cx, cy, w, h), as Mask DINO's
 * boxes of a mask annotation. num_masks: the batch's instances, or
 * "target.instances" when given (data-parallel training).
 *
 * Points: train_num_points of each matched mask by importance sampling
 * (Mask DINO's TRAIN_NUM_POINTS, OVERSAMPLE_RATIO, IMPORTANCE_SAMPLE_RATIO;
 * the matcher's the same random points for all of an image's masks), or
 * "all": every cell centre of the mask logits, the targets read there
 * bilinearly (grid_sample, align_corners=False), for matching and losses.
 *
 * The cost matrices' mask parts come from the device as gemms; a host node
 * per prediction adds the class and box costs (O(Q T K)), solves the
 * assignment (the mask2former head's solver) and hands back int32 indices.
 * A target slot without an instance is matched to constant rows (mask
 * logits -30 or -1e4 for sampling, a box (0.5, 0.5, 0.5, 0.5)) whose terms
 * the per-slot weight zeroes.
 */
#include <math.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "../mask2former/match/hungarian.h"
#include "maskdino.h"

#define FOCAL_ALPHA 0.25

typedef struct match_ctx {
    int64_t B, Q, T, K, NP;
    const md_cfg *c;
    double *cost;  /* Q * T scratch */
    int *col, *tj; /* Q, T */
} match_ctx;

static void xyxy(const float *b, double *o)
{
    o[0] = (double)b[0] - 0.5 * b[2];
    o[1] = (double)b[1] - 0.5 * b[3];
    o[2] = (double)b[0] + 0.5 * b[2];
    o[3] = (double)b[1] + 0.5 * b[3];
}

/* generalized_box_iou of two (x1, y1, x2, y2) boxes */
static double giou(const double *a, const double *b)
{
    double area_a = (a[2] - a[0]) * (a[3] - a[1]), area_b = (b[2] - b[0]) * (b[3] - b[1]);
    double iw = fmax(fmin(a[2], b[2]) - fmax(a[0], b[0]), 0);
    double ih = fmax(fmin(a[3], b[3]) - fmax(a[1], b[1]), 0);
    double inter = iw * ih, uni = area_a + area_b - inter;
    double cw = fmax(fmax(a[2], b[2]) - fmin(a[0], b[0]), 0);
    double ch = fmax(fmax(a[3], b[3]) - fmin(a[1], b[1]), 0);
    double hull = cw * ch;
    return inter / uni - (hull - uni) / hull;
}

/* in: pb (B, Q, K + 4) the sigmoid class probabilities and the box, A (B,
 * Q, T) the BCE cost's part, ns (B, Q, 2) its other part and the sigmoid
 * sums, numer (B, Q, T), tsum (B, T, 1), tbox (B, T, 4), labels (B, T)
 * int32, instances (1).
 * out: gidx (B T) int32 (the matched query's row, or B Q: the padding
 * row), tclass (B Q) int32 (the class, or K: none), norm (1) = 1 /
 * num_masks, weight (B T) 1 for a target, 0 for an empty slot. */
static vp_status match(void *user, const vp_host_io *io)
{
    const match_ctx *m = user;
    const md_cfg *c = m->c;
    const float *pb = io->in[0], *A = io->in[1], *ns = io->in[2], *numer = io->in[3];
    const float *tsum = io->in[4], *tbox = io->in[5];
    const int32_t *labels = (const int32_t *)io->in[6];
    int32_t *gidx = (int32_t *)io->out[0], *tclass = (int32_t *)io->out[1];
    float *wt = io->out[3];
    int64_t B = m->B, Q = m->Q, T = m->T, K = m->K, total = 0;
    double *cost = m->cost;
    int *col = m->col, *tj = m->tj;
    bool finite = true;
    for (int64_t b = 0; b < B; b++) {
        int n = 0;
        for (int64_t t = 0; t < T; t++) {
            int32_t l = labels[b * T + t];
            if (l >= K)
                return H->error(VP_ERR_INVALID, "maskdino: image %lld, target %lld: class %d, the "
                                "head has %lld classes (0 to %lld; -1: no instance)",
                                (long long)b, (long long)t, l, (long long)K, (long long)K - 1);
            gidx[b * T + t] = (int32_t)(B * Q);
            wt[b * T + t] = l >= 0 ? 1.0f : 0.0f;
            if (l >= 0)
                tj[n++] = (int)t;
        }
        for (int64_t q = 0; q < Q; q++)
            tclass[b * Q + q] = (int32_t)K;
        if (!n)
            continue;
        bool ok = true;
        for (int64_t q = 0; q < Q; q++) {
            const float *row = pb + (b * Q + q) * (K + 4), *pq = row + K;
            double pxy[4];
            xyxy(pq, pxy);
            for (int j = 0; j < n; j++) {
                int64_t t = tj[j], k = (b * Q + q) * T + t;
                double p = row[labels[b * T + t]];
                double neg = (1 - FOCAL_ALPHA) * p * p * -log(1 - p + 1e-8);
                double pos = FOCAL_ALPHA * (1 - p) * (1 - p) * -log(p + 1e-8);
                double dice = 1.0 - (2.0 * numer[k] + 1.0) /
                                        ((double)ns[(b * Q + q) * 2 + 1] + tsum[b * T + t] + 1.0);
                double bce = ((double)A[k] + ns[(b * Q + q) * 2]) / (double)m->NP;
                const float *tt = tbox + (b * T + t) * 4;
                double l1 = 0, tb[4];
                for (int i = 0; i < 4; i++)
                    l1 += fabs((double)pq[i] - tt[i]);
                xyxy(tt, tb);
                double v = c->cost_class * (pos - neg) + c->cost_mask * bce +
                           c->cost_dice * dice + c->cost_box * l1 - c->cost_giou * giou(pxy, tb);
                ok &= isfinite(v) && fabs(v) <= M2F_HUNGARIAN_MAX_COST;
                cost[q * n + j] = v;
            }
        }
        total += n;
        if (!ok) {
            /* non-finite predictions: the loss is made NaN below, which
             * training reports (or skips with train.skip_nonfinite) */
            if (finite)
                H->log(VP_LOG_WARN, "maskdino: image %lld of the batch: the matching cost is "
                       "not finite (NaN or Inf in the predictions): the loss is NaN",
                       (long long)b);
            finite = false;
            continue;
        }
        double sum;
        if (m2f_hungarian(cost, (int)Q, n, col, &sum) != 0)
            return H->error(VP_ERR_NOMEM, "maskdino: image %lld: out of host memory for the "
                            "matching", (long long)b);
        for (int64_t q = 0; q < Q; q++)
            if (col[q] >= 0) {
                int t = tj[col[q]];
                gidx[b * T + t] = (int32_t)(b * Q + q);
                tclass[b * Q + q] = labels[b * T + t];
            }
    }
    double given = (double)io->in[7][0], inst = given > 0 ? given : (double)total;
    io->out[2][0] = finite ? (float)(1.0 / (inst > 1.0 ? inst : 1.0)) : NAN;
    return VP_OK;
}

/* The targets at the mask logits' cell centres: bilinear (F.interpolate,
 * align_corners=False, which reads grid_sample's points at those centres
 * for whole ratios). tmask (B, T, ht, wt) -> (B, T, hm * wm). */
static vp_gt *targets_at_cells(vp_graph *g, vp_gt *tmask, int64_t hm, int64_t wm)
{
    const int64_t *s = H->shape(tmask);
    int64_t B = s[0], T = s[1], ht = s[2], wt = s[3];
    if (ht == hm && wt == wm)
        return H->reshape(g, tmask, 3, (int64_t[]){B, T, hm * wm});
    static const int to_last[4] = {0, 2, 3, 1}, to_first[4] = {0, 3, 1, 2};
    vp_gt *m = H->resize_bilinear(g, H->permute(g, tmask, to_last), hm, wm);
    return H->reshape(g, H->permute(g, m, to_first), 3, (int64_t[]){B, T, hm * wm});
}

/* GIoU loss terms 1 - GIoU of row pairs a, b (N, 4) (cx, cy, w, h) -> (N, 1),
 * in graph ops and the reciprocal (box_ops.generalized_box_iou's diagonal). */
static vp_gt *giou_loss(vp_graph *g, vp_gt *a, vp_gt *b, vp_gt *to_xyxy)
{
    vp_gt *pa = H->gemm(g, a, false, to_xyxy, false, NULL), *pb = H->gemm(g, b, false, to_xyxy,
                                                                            false, NULL);
    vp_gt *ca[4], *cb[4];
    for (int i = 0; i < 4; i++) {
        ca[i] = H->slice(g, pa, 1, i, 1);
        cb[i] = H->slice(g, pb, 1, i, 1);
    }
#define MAX(x, y) H->add(g, x, H->relu(g, H->add(g, y, H->scale(g, x, -1.0f))))
#define MIN(x, y) H->add(g, x, H->scale(g, H->relu(g, H->add(g, x, H->scale(g, y, -1.0f))), -1.0f))
#define SUB(x, y) H->add(g, x, H->scale(g, y, -1.0f))
    vp_gt *area_a = H->mul(g, SUB(ca[2], ca[0]), SUB(ca[3], ca[1]));
    vp_gt *area_b = H->mul(g, SUB(cb[2], cb[0]), SUB(cb[3], cb[1]));
    vp_gt *iw = H->relu(g, SUB(MIN(ca[2], cb[2]), MAX(ca[0], cb[0])));
    vp_gt *ih = H->relu(g, SUB(MIN(ca[3], cb[3]), MAX(ca[1], cb[1])));
    vp_gt *inter = H->mul(g, iw, ih);
    vp_gt *uni = SUB(H->add(g, area_a, area_b), inter);
    vp_gt *cw = H->relu(g, SUB(MAX(ca[2], cb[2]), MIN(ca[0], cb[0])));
    vp_gt *ch = H->relu(g, SUB(MAX(ca[3], cb[3]), MIN(ca[1], cb[1])));
    vp_gt *hull = H->mul(g, cw, ch);
    /* 1 - (inter / uni - (hull - uni) / hull) = 2 - inter / uni - uni / hull */
    vp_gt *r = H->add(g, H->mul(g, inter, md_recip(g, uni)), H->mul(g, uni, md_recip(g, hull)));
#undef MAX
#undef MIN
#undef SUB
    return H->scale(g, r, -1.0f); /* the constant 2 is added by the caller's weights */
}

vp_status md_targets_make(const md_cfg *c, vp_build *b, int64_t B, int64_t hm, int64_t wm,
                          int64_t ht, int64_t wt, m2f_owned *own, md_targets *tg)
{
    vp_graph *g = H->graph(b);
    const int64_t T = c->max_targets;
    memset(tg, 0, sizeof *tg);
    if (ht % hm || wt % wm)
        return H->error(VP_ERR_INVALID, "maskdino: targets of %lldx%lld are not a whole multiple "
                        "of the %lldx%lld mask logits", (long long)ht, (long long)wt,
                        (long long)hm, (long long)wm);
    tg->ht = ht, tg->wt = wt;
    tg->labels = H->input_i32(g, "target.labels", 2, (int64_t[]){B, T});
    tg->tmask = H->input(g, "target.masks", 4, (int64_t[]){B, T, ht, wt});
    tg->inst = H->input(g, "target.instances", 1, (int64_t[]){1});
    if (!tg->labels || !tg->tmask || !tg->inst)
        return H->graph_status(g);
    tg->t2 = H->reshape(g, tg->tmask, 2, (int64_t[]){B * T, ht * wt});
    tg->tbox = md_mask_box(g, tg->t2, ht, wt, MD_BOX_TARGET, own);          /* (B T, 4) */
    if (c->px.train_num_points == 0) {
        vp_gt *tc = targets_at_cells(g, tg->tmask, hm, wm);
        tg->tcell = H->reshape(g, tc, 2, (int64_t[]){B * T, hm * wm});
    }
    return H->graph_status(g);
}

/* What every prediction's terms share. */
typedef struct lctx {
    const md_cfg *c;
    vp_build *b;
    vp_graph *g;
    const md_targets *tg;
    int64_t B, T, K, hm, wm, NP;
    bool sampled;
    vp_gt *eye, *pad_mask, *pad_b, *to_xyxy, *ones_np, *ones4;
    m2f_owned *own;
} lctx;

/* The five unweighted terms of prediction pr (Qp queries) given the
 * assignment: gidx (N) int32 the prediction row of each target slot (the
 * padding row B Qp for none), tclass (B Qp) int32 each query's class (K:
 * none), norm (1) the normalizer, wslot (N, 1) 1 for a target, 0 for none;
 * trow (N) int32 the target row (of B T) of each slot, or NULL (N = B T,
 * slot i is row i); masks: whether the mask terms are wanted. */
static void pred_terms(const lctx *x, const md_pred *pr, int64_t Qp, vp_gt *gidx, vp_gt *tclass,
                       vp_gt *norm, vp_gt *wslot, vp_gt *trow, bool masks, uint32_t pid,
                       vp_gt *out[5])
{
    vp_graph *g = x->g;
    const md_targets *tg = x->tg;
    const int64_t B = x->B, K = x->K, HWm = x->hm * x->wm;
    const int64_t N = trow ? H->nelem(trow) : B * x->T;
    /* sigmoid focal loss (alpha 0.25, gamma 2) over every query and class:
     * ce (1 - p_t)^2 alpha_t, p_t = p t + (1 - p)(1 - t) */
    vp_gt *lg = H->reshape(g, pr->logits, 2, (int64_t[]){B * Qp, K});
    vp_gt *t = H->gather_rows(g, x->eye, tclass);                           /* (B Qp, K) */
    vp_gt *pp = H->sigmoid(g, lg);
    vp_gt *ce = H->add(g, H->softplus(g, lg), H->scale(g, H->mul(g, lg, t), -1.0f));
    vp_gt *q1 = H->add(g, H->add(g, pp, t), H->scale(g, H->mul(g, pp, t), -2.0f)); /* 1 - p_t */
    /* alpha_t = (1 - a) + (2a - 1) t */
    vp_gt *cq = H->mul(g, ce, H->mul(g, q1, q1));
    vp_gt *focal = H->add(g, H->scale(g, H->sum(g, cq), (float)(1 - FOCAL_ALPHA)),
                          H->scale(g, H->sum(g, H->mul(g, t, cq)), (float)(2 * FOCAL_ALPHA - 1)));
    out[0] = H->mul(g, focal, norm);

    /* mask losses on the assigned masks (empty slots: the constant row) */
    out[1] = out[2] = NULL;
    if (masks) {
        vp_gt *masks2 = H->reshape(g, pr->masks, 2, (int64_t[]){B * Qp, HWm});
        vp_gt *xe = H->concat(g, (vp_gt *[]){masks2, x->pad_mask}, 2, 0);
        vp_gt *xm = H->gather_rows(g, xe, gidx);                                /* (N, HWm) */
        vp_gt *t2 = trow ? H->gather_rows(g, tg->t2, trow) : tg->t2;
        vp_gt *xs, *ts;
        if (x->sampled) {
            vp_gt *pts = m2f_uncertain_points(&x->c->px, g, xm, x->hm, x->wm, pid, x->own);
            xs = m2f_point_sample(g, xm, x->hm, x->wm, pts);
            ts = m2f_point_sample(g, t2, tg->ht, tg->wt, pts);
        } else {
            xs = xm;
            ts = trow ? H->gather_rows(g, tg->tcell, trow) : tg->tcell;
        }
        out[1] = H->mul(g, H->scale(g, H->bce_logits(g, xs, ts), (float)N), norm);
        out[2] = H->mul(g, H->dice(g, xs, ts, 1.0f), norm);
    }

    /* box losses on the assigned boxes */
    vp_gt *be = H->concat(g, (vp_gt *[]){H->reshape(g, pr->boxes, 2, (int64_t[]){B * Qp, 4}),
                                         x->pad_b},
                          2, 0);
    vp_gt *bm = H->gather_rows(g, be, gidx);                                    /* (N, 4) */
    vp_gt *tb = trow ? H->gather_rows(g, tg->tbox, trow) : tg->tbox;
    vp_gt *diff = H->add(g, bm, H->scale(g, tb, -1.0f));
    vp_gt *absd = H->add(g, H->relu(g, diff), H->relu(g, H->scale(g, diff, -1.0f)));
    out[3] = H->mul(g, H->sum(g, H->mul(g, H->gemm(g, absd, false, x->ones4, false, NULL), wslot)),
                    norm);
    /* 1 - GIoU = 2 - inter/uni - uni/hull per slot, weighted */
    vp_gt *gl = giou_loss(g, bm, tb, x->to_xyxy);                               /* (N, 1) */
    out[4] = H->mul(g, H->add(g, H->sum(g, H->mul(g, gl, wslot)),
                              H->scale(g, H->sum(g, wslot), 2.0f)),
                    norm);
}

vp_gt *md_loss(const md_cfg *c, vp_build *b, const md_decoder_out *d, const md_targets *tg,
               int64_t hm, int64_t wm, m2f_owned *own)
{
    vp_graph *g = H->graph(b);
    const int64_t B = H->shape(d->pred[0].logits)[0], Q = c->queries, T = c->max_targets,
                  K = c->classes, HWm = hm * wm;
    const bool sampled = c->px.train_num_points > 0;
    const int64_t NP = sampled ? c->px.train_num_points : HWm;
    vp_gt *labels = tg->labels, *inst = tg->inst, *t2 = tg->t2;
    const int64_t ht = tg->ht, wt = tg->wt;

    /* Constants: one-hot rows (K + 1, K) with an all-zero "no object" row,
     * the padding rows, cxcywh -> xyxy, ones for sums. */
    size_t nb = (size_t)((K + 1) * K) > (size_t)HWm ? (size_t)((K + 1) * K) : (size_t)HWm;
    float *buf = calloc(nb > 16 ? nb : 16, sizeof *buf);
    if (!buf) {
        H->error(VP_ERR_NOMEM, "maskdino: out of host memory");
        return NULL;
    }
    for (int64_t i = 0; i < K; i++)
        buf[i * K + i] = 1.0f;
    lctx x = {c, b, g, tg, B, T, K, hm, wm, NP, sampled, NULL, NULL, NULL, NULL, NULL, NULL,
              own};
    x.eye = H->constant(g, "head.loss.onehot", 2, (int64_t[]){K + 1, K}, buf);
    for (int64_t i = 0; i < HWm; i++)
        buf[i] = sampled ? -1e4f : -30.0f;
    x.pad_mask = H->constant(g, "head.loss.pad_mask", 2, (int64_t[]){1, HWm}, buf);
    static const float pad_box[4] = {0.5f, 0.5f, 0.5f, 0.5f};
    x.pad_b = H->constant(g, "head.loss.pad_box", 2, (int64_t[]){1, 4}, pad_box);
    static const float m4[16] = {1, 0, 1, 0, 0, 1, 0, 1, -0.5f, 0, 0.5f, 0, 0, -0.5f, 0, 0.5f};
    x.to_xyxy = H->constant(g, "head.loss.to_xyxy", 2, (int64_t[]){4, 4}, m4);
    free(buf);
    x.ones_np = m2f_ones_col(g, NP);
    x.ones4 = m2f_ones_col(g, 4);
    vp_gt *ones_np = x.ones_np;
    vp_gt *tcell3 = sampled ? NULL : H->reshape(g, tg->tcell, 3, (int64_t[]){B, T, HWm});
    vp_gt *tbox3 = H->reshape(g, tg->tbox, 3, (int64_t[]){B, T, 4});

    /* the predictions in the criterion's order of names */
    const md_pred *preds[MD_MAX_LAYERS + 2];
    char sfx[MD_MAX_LAYERS + 2][16];
    uint32_t np = 0;
    preds[np] = &d->pred[d->n - 1];
    sfx[np++][0] = 0;
    for (uint32_t i = 0; i + 1 < d->n; i++) {
        preds[np] = &d->pred[i];
        snprintf(sfx[np++], sizeof sfx[0], "_%u", i);
    }
    preds[np] = &d->interm;
    snprintf(sfx[np++], sizeof sfx[0], "_interm");

    static const char *const term[5] = {"loss_ce", "loss_mask", "loss_dice", "loss_bbox",
                                        "loss_giou"};
    const double w[5] = {c->class_weight, c->mask_weight, c->dice_weight, c->box_weight,
                         c->giou_weight};
    vp_gt *total = NULL;
    for (uint32_t p = 0; p < np; p++) {
        const md_pred *pr = preds[p];
        char name[96];
        vp_gt *masks2 = H->reshape(g, pr->masks, 2, (int64_t[]){B * Q, HWm});
        /* the matcher's points: x (B, Q, NP), tmp (B, T, NP) */
        vp_gt *xp, *tmp;
        if (sampled) {
            snprintf(name, sizeof name, "head.match.%u.points", p);
            vp_gt *pts = H->rand(g, name, 3, (int64_t[]){B, NP, 2});
            xp = H->reshape(g, m2f_point_sample(g, masks2, hm, wm, m2f_repeat_points(g, pts, Q)),
                            3, (int64_t[]){B, Q, NP});
            tmp = H->reshape(g, m2f_point_sample(g, t2, ht, wt, m2f_repeat_points(g, pts, T)), 3,
                             (int64_t[]){B, T, NP});
        } else {
            xp = pr->masks;
            tmp = tcell3;
        }
        vp_gt *tsum = H->reshape(g, H->gemm(g, H->reshape(g, tmp, 2, (int64_t[]){B * T, NP}),
                                            false, ones_np, false, NULL),
                                 3, (int64_t[]){B, T, 1});
        vp_gt *prob = H->sigmoid(g, pr->logits);
        vp_gt *pos = H->softplus(g, H->scale(g, xp, -1.0f)), *neg = H->softplus(g, xp);
        vp_gt *A = H->gemm(g, H->add(g, pos, H->scale(g, neg, -1.0f)), false, tmp, true, NULL);
        vp_gt *negsum = H->reshape(g, H->gemm(g, H->reshape(g, neg, 2, (int64_t[]){B * Q, NP}),
                                              false, ones_np, false, NULL),
                                   3, (int64_t[]){B, Q, 1});
        vp_gt *s = H->sigmoid(g, xp);
        vp_gt *numer = H->gemm(g, s, false, tmp, true, NULL);
        vp_gt *ssum = H->reshape(g, H->gemm(g, H->reshape(g, s, 2, (int64_t[]){B * Q, NP}), false,
                                            ones_np, false, NULL),
                                 3, (int64_t[]){B, Q, 1});
        match_ctx *mc = m2f_own(own, sizeof *mc);
        double *cost = m2f_own(own, (size_t)(Q * T) * sizeof *cost);
        int *col = m2f_own(own, (size_t)Q * sizeof *col);
        int *tj = m2f_own(own, (size_t)T * sizeof *tj);
        if (!mc || !cost || !col || !tj) {
            H->error(VP_ERR_NOMEM, "maskdino: out of host memory");
            return NULL;
        }
        *mc = (match_ctx){B, Q, T, K, NP, c, cost, col, tj};
        vp_gt *o[4];
        snprintf(name, sizeof name, "head.match%s", sfx[p]);
        vp_gt *pbx = H->concat(g, (vp_gt *[]){prob, pr->boxes}, 2, 2);
        vp_gt *ns = H->concat(g, (vp_gt *[]){negsum, ssum}, 2, 2);
        if (H->host(g, name, match, mc, 8,
                    (vp_gt *[]){pbx, A, ns, numer, tsum, tbox3, labels, inst},
                    4, (int[]){1, 1, 1, 1},
                    (const int64_t *const[]){(int64_t[]){B * T}, (int64_t[]){B * Q},
                                             (int64_t[]){1}, (int64_t[]){B * T}},
                    (vp_dtype[]){VP_I32, VP_I32, VP_F32, VP_F32}, o))
            return NULL;
        vp_gt *terms[5];
        pred_terms(&x, pr, Q, o[0], o[1], o[2], H->reshape(g, o[3], 2, (int64_t[]){B * T, 1}),
                   NULL, true, p, terms);
        for (int i = 0; i < 5; i++) {
            vp_gt *wt_ = H->scale(g, terms[i], (float)w[i]);
            snprintf(name, sizeof name, "%s%s", term[i], sfx[p]);
            H->output(b, name, wt_);
            total = total ? H->add(g, total, wt_) : wt_;
        }
        if (p == 0) { /* the final prediction's, for progress lines */
            H->output(b, "loss.class", terms[0]);
            H->output(b, "loss.mask", terms[1]);
            H->output(b, "loss.dice", terms[2]);
        }
    }

    /* Denoising: the final and every auxiliary prediction of the noised
     * queries against their own targets (fixed assignment), normalized by
     * num_masks times the groups; masks only for DN "seg". */
    const md_dn *dn = d->dn.pad ? &d->dn : NULL;
    for (uint32_t p = 0; dn && p + 1 < np; p++) {
        uint32_t i = p == 0 ? d->n - 1 : p - 1; /* final, then aux 0 .. n-2 */
        char name[96], s2[24];
        if (p == 0)
            snprintf(s2, sizeof s2, "_dn");
        else
            snprintf(s2, sizeof s2, "_dn_%u", p - 1);
        vp_gt *terms[5];
        pred_terms(&x, &d->dn_pred[i], dn->pad, dn->gidx, dn->tclass, dn->norm, dn->wslot,
                   dn->trow, dn->seg, 100 + p, terms);
        for (int k = 0; k < 5; k++) {
            if (!terms[k])
                continue;
            vp_gt *wt_ = H->scale(g, terms[k], (float)w[k]);
            snprintf(name, sizeof name, "%s%s", term[k], s2);
            H->output(b, name, wt_);
            total = total ? H->add(g, total, wt_) : wt_;
        }
    }
    return total;
}
