/*
 * The maskdino head plugin's parts, shared by its files: the config and
 * the stages of the head. Mask DINO (Li et al. 2023, IDEA-Research/MaskDINO)
 * as its repository computes it for instance segmentation:
 *
 *   maskdino.c  the config (a detectron2 checkpoint's resolved cfg.MODEL),
 *               the head interface, instance inference, the descriptor
 *   decoder.c   two-stage query selection from the encoder's tokens, box
 *               initialization from the selected queries' masks, the
 *               deformable decoder with 4-d reference boxes and box
 *               refinement, the prediction heads after every layer
 *   kernels.c   the plugin's own kernels (sine embedding of boxes, boxes
 *               from masks, detach) with their CPU references
 *   shared.c    the pieces it shares with the mask2former head, compiled
 *               from their one source: the pixel decoder (Mask DINO's
 *               MaskDINOEncoder is Mask2Former's MSDeformAttnPixelDecoder
 *               under the same names)
 *
 * Parameters carry the checkpoint's names ("sem_seg_head.pixel_decoder.*",
 * "sem_seg_head.predictor.*"); docs/maskdino.md lists them with the sites.
 * Shapes: B images, Q queries, K classes, d the decoder's width, maps
 * channels-last (B, H, W, C) as the backbone gives them.
 */
#ifndef MASKDINO_H
#define MASKDINO_H

#include <vpeft/vpeft.h>

#include "../mask2former/m2f.h"

#define H m2f_H

/* The decoder's attention heads and sampling points: MaskDINODecoder
 * builds its DeformableTransformerDecoderLayer with the defaults nhead=8,
 * dec_n_points=4 (cfg NHEADS is not passed to it). */
enum { MD_DEC_HEADS = 8, MD_DEC_POINTS = 4, MD_SINE_FREQS = 128, MD_MAX_LAYERS = 16 };

/* INITIALIZE_BOX_TYPE; MD_BOX_TARGET: the targets' boxes (md_mask_box) */
typedef enum md_box_init { MD_BOX_NO, MD_BOX_BITMASK, MD_BOX_MASK2BOX, MD_BOX_TARGET } md_box_init;

typedef struct md_cfg {
    m2f_cfg px;              /* the pixel decoder's (hidden = CONVS_DIM, d2 names) */
    int64_t classes;         /* K: SEM_SEG_HEAD.NUM_CLASSES (or the run's "classes") */
    int64_t num_labels;      /* the checkpoint's classes */
    int64_t queries;         /* Q: NUM_OBJECT_QUERIES */
    int64_t hidden;          /* d: HIDDEN_DIM */
    int64_t dec_layers;      /* DEC_LAYERS */
    int64_t dec_ffn;         /* MaskDINO.DIM_FEEDFORWARD */
    int64_t mask_dim;        /* SEM_SEG_HEAD.MASK_DIM */
    bool input_proj;         /* the decoder's 1x1 input projections (CONVS_DIM != d or ENFORCE) */
    bool learn_tgt;          /* LEARN_TGT: learned query content instead of the selected tokens */
    md_box_init box_init;    /* INITIALIZE_BOX_TYPE */
    bool dn;                 /* DN "seg" or "standard": denoising queries when training */
    bool dn_seg;             /* DN "seg": the noised queries' masks are trained too */
    int64_t dn_num;          /* DN_NUM: noised queries in all (groups = DN_NUM / max_targets) */
    double dn_noise;         /* DN_NOISE_SCALE */
    int64_t top_k;           /* detections per image (TEST.DETECTIONS_PER_IMAGE) */
    int64_t max_targets;
    int64_t target_stride;   /* image pixels per target mask cell (1: MaskDINO's full size) */
    /* the criterion's weights */
    double class_weight, mask_weight, dice_weight, box_weight, giou_weight;
    double cost_class, cost_mask, cost_dice, cost_box, cost_giou;
} md_cfg;

/* One prediction: class logits (B, Q, K), mask logits (B, Q, Hm * Wm) or
 * NULL, boxes (B, Q, 4) as sigmoid (cx, cy, w, h). */
typedef struct md_pred {
    vp_gt *logits, *masks, *boxes;
} md_pred;

/* The training targets (md_targets_make): labels (B, T) int32, tmask (B,
 * T, ht, wt), inst (1), t2 (B T, ht wt), tbox (B T, 4) their boxes (cx, cy,
 * w, h) in [0, 1], tcell (B T, hm wm) the targets at the mask cells' centres
 * (every-cell points only, else NULL). */
typedef struct md_targets {
    vp_gt *labels, *tmask, *inst, *t2, *tbox, *tcell;
    int64_t ht, wt;
} md_targets;

/* Denoising (DN): pad = groups x T noised queries before the matching
 * ones, and their fixed assignment to the targets: gidx (B G T) int32 the
 * prediction row of each (image, group, slot), B pad for an empty slot;
 * tclass (B pad) int32 each noised query's class (K: none); norm (1) = 1 /
 * (num_masks groups); wslot (B G T, 1) 1 for a target; trow (B G T) int32
 * the target row b T + t. */
typedef struct md_dn {
    int64_t pad, groups;
    bool seg;
    vp_gt *gidx, *tclass, *norm, *wslot, *trow;
} md_dn;

typedef struct md_decoder_out {
    md_pred interm;                    /* the selected encoder tokens' */
    uint32_t n;                        /* dec_layers + 1 */
    md_pred pred[MD_MAX_LAYERS + 1];   /* the initial queries', then each layer's */
    md_dn dn;                          /* pad 0: no denoising */
    md_pred dn_pred[MD_MAX_LAYERS + 1]; /* the noised queries' part of each pred */
} md_decoder_out;

/* ---- decoder.c ---------------------------------------------------------------- */

/* The decoder from the pixel decoder's outputs; with_masks: every
 * prediction's masks (training), else only the interm and last ones; tg:
 * the training targets when denoising (c->dn), else NULL. */
vp_status md_decoder(const md_cfg *c, vp_build *b, const m2f_pixel_out *px, bool with_masks,
                     const md_targets *tg, m2f_owned *own, md_decoder_out *out);

/* ---- loss.c ------------------------------------------------------------------- */

/* The training inputs "target.labels" (B, T) int32, "target.masks" (B, T,
 * ht, wt) (a whole multiple of the hm x wm mask logits), "target.instances"
 * (1), and what the loss derives from them. */
vp_status md_targets_make(const md_cfg *c, vp_build *b, int64_t B, int64_t hm, int64_t wm,
                          int64_t ht, int64_t wt, m2f_owned *own, md_targets *tg);
/* The criterion over every prediction (docs in loss.c), and the denoising
 * terms when d has them. Returns the (1) loss. */
vp_gt *md_loss(const md_cfg *c, vp_build *b, const md_decoder_out *d, const md_targets *tg,
               int64_t hm, int64_t wm, m2f_owned *own);

/* ---- kernels.c ----------------------------------------------------------------- */

/* r (n, 4) boxes -> (n, 4 * MD_SINE_FREQS): gen_sineembed_for_position. */
vp_gt *md_sine_embed(vp_graph *g, vp_gt *r);
/* x (rows, h * w) mask logits -> (rows, 4) unsigmoided boxes (mask_box.comp);
 * mode MD_BOX_TARGET: target masks (1 inside) -> their boxes (cx, cy, w, h)
 * in [0, 1], the pixels > 0.5 ('bitmask', x2 the last column + 1). */
vp_gt *md_mask_box(vp_graph *g, vp_gt *x, int64_t h, int64_t w, md_box_init mode,
                   m2f_owned *own);
/* x itself without a gradient. */
vp_gt *md_detach(vp_graph *g, vp_gt *x);
/* 1 / x elementwise, with its gradient. */
vp_gt *md_recip(vp_graph *g, vp_gt *x);

#endif
