/*
 * The mask2former head plugin's parts, shared by its files: the config,
 * the host table, and the three stages of the head.
 *
 *   pixel.c    the pixel decoder: input projections, level embeddings, sine
 *              position encodings, multi-scale deformable attention encoder
 *              layers (Deformable DETR), mask features at stride 8
 *   decoder.c  the transformer decoder: learned queries, masked cross-
 *              attention, self-attention, FFN; class and mask predictions
 *              after every layer (deep supervision)
 *   loss.c     Hungarian matching (a host node; match/hungarian.c) and the
 *              class, BCE and dice losses, summed over the predictions
 *
 * Parameter and site names follow Mask2Former's (Detectron2) modules under
 * "head.": head.pixel_decoder.input_proj.<l>, head.pixel_decoder.encoder.
 * layers.<i>.self_attn.{value_proj,sampling_offsets,attention_weights,
 * output_proj}, head.predictor.transformer_cross_attention_layers.<i>, ...
 * (docs/mask2former.md lists them all).
 *
 * Shapes: B images, Q queries, d the hidden width, L feature levels, maps
 * channels-last (B, H, W, C) as the backbone gives them.
 */
#ifndef M2F_H
#define M2F_H

#include <vpeft/vpeft.h>

/* The host table, from the plugin's init (tests set it themselves). */
extern const vp_host_api *m2f_H;

/* Memory that must live as long as the models built with an instance (host
 * nodes' user data): freed when the instance is destroyed. */
typedef struct m2f_owned {
    void **p;
    size_t n, cap;
} m2f_owned;
void *m2f_own(m2f_owned *o, size_t bytes); /* zeroed; NULL when out of memory */
void m2f_owned_free(m2f_owned *o);

typedef struct m2f_cfg {
    int64_t classes;          /* C, without the no-object class */
    int64_t queries;          /* Q */
    int64_t hidden;           /* d */
    int64_t heads;            /* attention heads everywhere */
    int64_t enc_layers;       /* deformable encoder layers of the pixel decoder */
    int64_t dec_layers;       /* transformer decoder layers */
    int64_t levels;           /* feature levels used (the backbone's coarsest ones) */
    int64_t points;           /* sampling points per head and level */
    int64_t enc_ffn;          /* encoder FFN width */
    int64_t dec_ffn;          /* decoder FFN width */
    int64_t mask_dim;         /* mask embedding width */
    int64_t max_targets;      /* T: instances per image a batch may hold */
    double no_object_weight;  /* cross-entropy weight of the no-object class */
    double class_weight, mask_weight, dice_weight; /* loss and matching-cost weights */
    double match_class_weight; /* the matcher's class cost weight (class_weight) */
    /* Hugging Face's Mask2FormerForUniversalSegmentation ("hf" in the config):
     * its parameter names and module paths, GroupNorm(32) projections, the
     * stride-4 FPN level (adapter_1, layer_1) making the mask features,
     * packed cross-attention input projections, masks compared with the
     * targets at the targets' resolution (pixel centres, zero padding). */
    bool hf;
    /* The detectron2 repositories' pixel decoder (Mask2Former's
     * MSDeformAttnPixelDecoder, Mask DINO's MaskDINOEncoder): HF's
     * architecture under their names, "sem_seg_head.pixel_decoder.*", and
     * outputs "pixel_decoder.*" (the maskdino head sets it). */
    bool d2;
    /* d2: MaskDINOEncoder's extra levels (TOTAL_NUM_FEATURE_LEVELS -
     * NUM_FEATURE_LEVELS) and its "low2high" FEATURE_ORDER (the encoder's
     * levels finest first, then the extra ones) */
    int64_t extra_levels;
    bool low2high;
    int64_t target_stride;    /* hf: image pixels per target mask cell */
    int64_t num_labels;       /* hf: the checkpoint's classes (classes may differ) */
    /* hf: the mask losses' points (HF's sample_points_using_uncertainty):
     * train_num_points random points per mask, chosen as the
     * importance_sample_ratio most uncertain of oversample_ratio times as
     * many plus random ones; 0: every target pixel once */
    int64_t train_num_points;
    double oversample_ratio, importance_sample_ratio;
} m2f_cfg;

/* ---- pixel.c ---------------------------------------------------------------- */

typedef struct m2f_pixel_out {
    uint32_t n;                          /* levels, = cfg->levels (+ extra_levels) */
    /* Encoder output per level in the encoder's order, coarsest first (the
     * order the decoder visits them in; d2 low2high: finest first):
     * (B, H_l * W_l, d), and its sine position encoding (H_l * W_l, d), a
     * constant. */
    vp_gt *memory[VP_MAX_LEVELS];
    vp_gt *pos[VP_MAX_LEVELS];
    int64_t hw[VP_MAX_LEVELS][2];        /* (H_l, W_l) */
    vp_gt *mask_features;                /* (B, Hm, Wm, mask_dim): the finest level's size,
                                          * or (hf) the stride-4 FPN level's */
    int32_t mask_stride;                 /* image pixels per mask-feature cell */
} m2f_pixel_out;

/* DETR's PositionEmbeddingSine(d / 2, temperature 10000, normalize=True,
 * scale 2 pi) for an h x w map: (h * w, d) as floats, row-major positions;
 * the first d/2 channels encode y, the rest x. data holds h * w * d. */
void m2f_sine_pos(int64_t h, int64_t w, int64_t d, float *data);

/* MSDeformAttn._reset_parameters' sampling-offset bias: head h points along
 * the angle 2 pi h / NH, scaled so its larger coordinate is 1, point p of
 * every level p + 1 steps that way. (NH * L * P * 2) floats as (NH, L, P,
 * 2), malloc'd (the caller frees); NULL when out of memory. */
float *m2f_offset_grid(int64_t NH, int64_t L, int64_t P);

/* The loss weights (no_object_weight, class_weight, mask_weight,
 * dice_weight; Mask2Former's and HF's names and defaults) from object c:
 * the head's entry, or HF's config. */
vp_status m2f_loss_weights(const vp_config *c, m2f_cfg *out);

/* Reads a Hugging Face Mask2Former config.json (path: the file or its
 * directory) into c; "classes" of the head's entry, when given, overrides
 * num_labels. Errors name the file and key. */
vp_status m2f_hf_config(const vp_config *entry, const char *path, m2f_cfg *c);

/* Reads a detectron2 Mask2Former checkpoint's config (DIR/config.json,
 * its "MODEL" or "cfg_MODEL" object: detectron2's resolved cfg.MODEL) into
 * c: the HF variant's architecture (c->hf) under the repository's names
 * (c->d2). "classes" of the head's entry overrides NUM_CLASSES. */
vp_status m2f_d2_config(const vp_config *entry, const char *dir, m2f_cfg *c);

/* The pixel decoder over the backbone's levels f (finest first, as
 * vp_features gives them); uses the cfg->levels coarsest of them. Errors
 * are the graph's (or a returned status with its message). */
vp_status m2f_pixel_decoder(const m2f_cfg *c, vp_build *b, const vp_features *f,
                            m2f_pixel_out *out);

/* ---- score.c -------------------------------------------------------------------- */

/* x (rows, cols) mask logits -> (rows, 2): the sum of sigmoid(x) where x >
 * 0, and how many x > 0 (mask_score.comp; Mask2Former's and Mask DINO's
 * instance mask score). */
vp_gt *m2f_mask_sums(vp_graph *g, vp_gt *x);

/* ---- decoder.c ----------------------------------------------------------------- */

typedef struct m2f_pred {
    vp_gt *logits;   /* (B, Q, C + 1) */
    vp_gt *masks;    /* (B, Q, Hm * Wm) mask logits at the mask features' size */
} m2f_pred;

#define M2F_MAX_PREDS 33

typedef struct m2f_decoder_out {
    uint32_t n;                   /* dec_layers + 1: before the first layer, after each */
    m2f_pred pred[M2F_MAX_PREDS]; /* the last is the model's prediction */
} m2f_decoder_out;

vp_status m2f_decoder(const m2f_cfg *c, vp_build *b, const m2f_pixel_out *px,
                      m2f_decoder_out *out);

/* ---- loss.c ----------------------------------------------------------------------- */

/* The training loss over every prediction (deep supervision), against the
 * graph inputs "target.labels" (B, T) int32 (class ids, -1 for no
 * instance) and "target.masks" (1 inside), which it creates: (B, T, hm *
 * wm) at the mask logits' resolution, or (hf) (B, T, ht, wt), a whole
 * multiple of it, where the logits are read at the target pixels' centres
 * as HF's point_sample does. Returns the (1) loss. */
/* Pieces of the loss the maskdino head shares: a (n, 1) column of ones for
 * row sums by gemm; grid_sample of each row's map x (R, h * w) at its own
 * points coords (R, n, 2) in [0, 1] (HF's and Detectron2's point_sample)
 * -> (R, n); the same points (B, n, 2) for k rows per image -> (B k, n,
 * 2); the importance-sampled points of the matched masks xm (R, h * w)
 * (get_uncertain_point_coords_with_randomness, with c's
 * train_num_points, oversample_ratio, importance_sample_ratio; p names the
 * prediction) -> (R, train_num_points, 2). */
vp_gt *m2f_ones_col(vp_graph *g, int64_t n);
vp_gt *m2f_point_sample(vp_graph *g, vp_gt *x, int64_t h, int64_t w, vp_gt *coords);
vp_gt *m2f_repeat_points(vp_graph *g, vp_gt *pts, int64_t k);
vp_gt *m2f_uncertain_points(const m2f_cfg *c, vp_graph *g, vp_gt *xm, int64_t h, int64_t w,
                            uint32_t p, m2f_owned *own);

vp_gt *m2f_loss(const m2f_cfg *c, vp_build *b, const m2f_decoder_out *d, int64_t hm, int64_t wm,
                int64_t ht, int64_t wt, m2f_owned *own);

#endif
