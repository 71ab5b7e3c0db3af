/*
 * The maskdino head plugin: its config, the head interface, instance
 * inference and the plugin's descriptor. Mask DINO as its repository
 * (IDEA-Research/MaskDINO) computes it for instance segmentation; the
 * pixel decoder is the mask2former plugin's in detectron2 naming
 * (shared.c), the decoder decoder.c's. docs/maskdino.md describes the
 * config, the names, the sites and the outputs.
 *
 * The config is a detectron2 checkpoint's ("detectron2": DIR, the
 * resolved cfg.MODEL in DIR/config.json, as model.detectron2 and
 * tools/convert-checkpoint make it), or the head entry's own fields with
 * the repository's defaults (maskdino/config.py); the entry's fields
 * override the checkpoint's where both are given (classes, queries,
 * top_k, max_targets).
 *
 * Outputs: "pred_logits" (B, Q, K), "pred_masks" (B, Q, Hm, Wm) at the
 * mask features' resolution (stride 4), "pred_boxes" (B, Q, 4) sigmoid
 * (cx, cy, w, h), the last layer's; also under the reference's names
 * "head.pred_*", "head.aux_outputs.<i>.*" (the initial queries' and every
 * layer's but the last; masks only when training) and
 * "head.interm_outputs.*" (the selected encoder tokens'). Without
 * training, the instances as MaskDINO.instance_inference makes them:
 * "instances.scores" (B, T), "instances.labels" (B, T) int32,
 * "instances.masks" (B, T, H, W) mask logits at the image's size and
 * "instances.boxes" (B, T, 4) (x1, y1, x2, y2) in pixels, T = min(top_k,
 * Q K).
 */
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "maskdino.h"

typedef struct md {
    md_cfg cfg;
    double score_threshold; /* instances scoring below it are dropped (label -1) */
    bool pretrained;        /* a checkpoint is loaded (model.detectron2's "pretrained") */
    const char *dir; /* the detectron2 checkpoint directory, or NULL */
    m2f_owned own;
} md;

/* ---- instance inference ----------------------------------------------------------------
 * MaskDINO.instance_inference: sigmoid class scores over (query, class)
 * pairs, the top T (torch.topk, unsorted there; here sorted, ties the lower
 * index first), label = index % K, query = index / K; the query's mask
 * logits upsampled to the image, its score times the mean sigmoid inside
 * its mask (> 0), its box (cx, cy, w, h) as corners in pixels. */

typedef struct inst {
    int64_t B, Q, K, T, h, w;
    double threshold;
    float *s;      /* Q * K scores */
    int32_t *idx;  /* Q * K */
} inst;

static const float *inst_key;

static int by_score(const void *a, const void *b)
{
    int32_t i = *(const int32_t *)a, j = *(const int32_t *)b;
    if (inst_key[i] != inst_key[j])
        return inst_key[i] < inst_key[j] ? 1 : -1;
    return (i > j) - (i < j);
}

/* in: probabilities (B, Q, K). out: scores (B, T), labels (B, T) int32,
 * rows (B T) int32 = b Q + q. */
static vp_status inst_topk(void *user, const vp_host_io *io)
{
    const inst *t = user;
    const float *prob = io->in[0];
    float *scores = io->out[0];
    int32_t *labels = (int32_t *)io->out[1], *rows = (int32_t *)io->out[2];
    int64_t QK = t->Q * t->K;
    for (int64_t b = 0; b < t->B; b++) {
        for (int64_t i = 0; i < QK; i++) {
            t->s[i] = prob[b * QK + i];
            t->idx[i] = (int32_t)i;
        }
        inst_key = t->s;
        qsort(t->idx, (size_t)QK, sizeof *t->idx, by_score);
        for (int64_t k = 0; k < t->T; k++) {
            int32_t i = t->idx[k];
            scores[b * t->T + k] = t->s[i];
            labels[b * t->T + k] = i % (int32_t)t->K;
            rows[b * t->T + k] = (int32_t)(b * t->Q + i / (int32_t)t->K);
        }
    }
    return VP_OK;
}

/* in: class scores (B, T), labels (B, T) int32, mask sums (B T, 2), boxes
 * (B T, 4) (cx, cy, w, h). out: scores (B, T), labels (B, T) int32, boxes
 * (B, T, 4) corners in pixels. */
static vp_status inst_score(void *user, const vp_host_io *io)
{
    const inst *t = user;
    const float *cls = io->in[0], *sums = io->in[2], *bx = io->in[3];
    const int32_t *lab = (const int32_t *)io->in[1];
    float *scores = io->out[0], *boxes = io->out[2];
    int32_t *labels = (int32_t *)io->out[1];
    for (int64_t i = 0; i < t->B * t->T; i++) {
        float sc = cls[i] * (sums[2 * i] / (sums[2 * i + 1] + 1e-6f));
        bool keep = sc >= t->threshold;
        scores[i] = keep ? sc : 0;
        labels[i] = keep ? lab[i] : -1;
        const float *c = bx + 4 * i;
        float fw = (float)t->w, fh = (float)t->h;
        boxes[4 * i] = (c[0] - 0.5f * c[2]) * fw;
        boxes[4 * i + 1] = (c[1] - 0.5f * c[3]) * fh;
        boxes[4 * i + 2] = (c[0] + 0.5f * c[2]) * fw;
        boxes[4 * i + 3] = (c[1] + 0.5f * c[3]) * fh;
    }
    return VP_OK;
}

static vp_status instances(md *m, vp_build *b, md_pred p, int64_t hm, int64_t wm, int64_t h,
                           int64_t w, vp_head_out *out)
{
    const md_cfg *c = &m->cfg;
    vp_graph *g = H->graph(b);
    int64_t B = H->shape(p.logits)[0], Q = c->queries, K = c->classes, HW = hm * wm;
    int64_t T = c->top_k < Q * K ? c->top_k : Q * K;
    if (h * w >= (1 << 24) || B * T * h * w > (int64_t)UINT32_MAX)
        return H->error(VP_ERR_INVALID, "maskdino: %lld instances of %lldx%lld pixels are too "
                        "many to score (at most 2^24 pixels, 2^32 in all)", (long long)(B * T),
                        (long long)h, (long long)w);
    inst *t = m2f_own(&m->own, sizeof *t);
    float *s = m2f_own(&m->own, (size_t)(Q * K) * sizeof *s);
    int32_t *idx = m2f_own(&m->own, (size_t)(Q * K) * sizeof *idx);
    if (!t || !s || !idx)
        return H->error(VP_ERR_NOMEM, "maskdino: out of host memory");
    *t = (inst){B, Q, K, T, h, w, m->score_threshold, s, idx};
    vp_gt *o[3], *f[3];
    vp_status st = H->host(g, "head.instances.topk", inst_topk, t, 1,
                           (vp_gt *[]){H->sigmoid(g, p.logits)}, 3, (int[]){2, 2, 1},
                           (const int64_t *const[]){(int64_t[]){B, T}, (int64_t[]){B, T},
                                                    (int64_t[]){B * T}},
                           (vp_dtype[]){VP_F32, VP_I32, VP_I32}, o);
    if (st)
        return st;
    vp_gt *sel = H->gather_rows(g, H->reshape(g, p.masks, 2, (int64_t[]){B * Q, HW}), o[2]);
    sel = H->reshape(g, sel, 4, (int64_t[]){B * T, hm, wm, 1});
    if (h != hm || w != wm)
        sel = H->resize_bilinear(g, sel, h, w);
    vp_gt *sums = m2f_mask_sums(g, H->reshape(g, sel, 2, (int64_t[]){B * T, h * w}));
    vp_gt *bsel = H->gather_rows(g, H->reshape(g, p.boxes, 2, (int64_t[]){B * Q, 4}), o[2]);
    if ((st = H->graph_status(g)))
        return st;
    st = H->host(g, "head.instances.score", inst_score, t, 4, (vp_gt *[]){o[0], o[1], sums, bsel},
                 3, (int[]){2, 2, 3},
                 (const int64_t *const[]){(int64_t[]){B, T}, (int64_t[]){B, T},
                                          (int64_t[]){B, T, 4}},
                 (vp_dtype[]){VP_F32, VP_I32, VP_F32}, f);
    if (st)
        return st;
    uint32_t n = out->n_outputs;
    out->outputs[n] = f[0];
    out->names[n++] = "instances.scores";
    out->outputs[n] = f[1];
    out->names[n++] = "instances.labels";
    out->outputs[n] = H->reshape(g, sel, 4, (int64_t[]){B, T, h, w});
    out->names[n++] = "instances.masks";
    out->outputs[n] = f[2];
    out->names[n++] = "instances.boxes";
    out->n_outputs = n;
    return H->graph_status(g);
}

/* ---- config -------------------------------------------------------------------------- */

/* One field: the head entry's key, where cfg.MODEL holds it, the
 * repository's default, its range. */
typedef struct field {
    const char *key, *sect, *name;
    int64_t def, min, max;
    size_t off; /* in md_cfg */
} field;

#define MF(k, s, n, d, lo, hi, member) {k, s, n, d, lo, hi, offsetof(md_cfg, member)}
#define PF(k, s, n, d, lo, hi, member) {k, s, n, d, lo, hi, offsetof(md_cfg, px.member)}

static const field ints[] = {
    MF("classes", "SEM_SEG_HEAD", "NUM_CLASSES", 80, 1, 100000, classes),
    MF("queries", "MaskDINO", "NUM_OBJECT_QUERIES", 100, 1, 10000, queries),
    MF("hidden", "MaskDINO", "HIDDEN_DIM", 256, 8, 65536, hidden),
    MF("decoder_layers", "MaskDINO", "DEC_LAYERS", 6, 0, MD_MAX_LAYERS, dec_layers),
    MF("decoder_ffn", "MaskDINO", "DIM_FEEDFORWARD", 2048, 1, 1 << 20, dec_ffn),
    MF("mask_dim", "SEM_SEG_HEAD", "MASK_DIM", 256, 1, 65536, mask_dim),
    PF("conv_dim", "SEM_SEG_HEAD", "CONVS_DIM", 256, 32, 65536, hidden),
    PF("encoder_layers", "SEM_SEG_HEAD", "TRANSFORMER_ENC_LAYERS", 0, 0, 64, enc_layers),
    PF("encoder_ffn", "SEM_SEG_HEAD", "DIM_FEEDFORWARD", 1024, 1, 1 << 20, enc_ffn),
    /* MaskDINOEncoder.from_config takes the encoder's heads from
     * MaskDINO.NHEADS and leaves its points at 4 (the SEM_SEG_HEAD
     * DEFORMABLE_TRANSFORMER_ENCODER_N_HEADS / _N_POINTS keys are never
     * read): a NULL name is the entry's field only */
    PF("encoder_heads", "MaskDINO", "NHEADS", 8, 1, 1024, heads),
    PF("encoder_points", "SEM_SEG_HEAD", NULL, 4, 1, 64, points),
    PF("levels", "SEM_SEG_HEAD", "NUM_FEATURE_LEVELS", 3, 1, VP_MSDEFORM_MAX_LEVELS, levels),
};

static const struct {
    const char *name;
    double def;
    size_t off;
} weights[] = {
    {"CLASS_WEIGHT", 4.0, offsetof(md_cfg, class_weight)},
    {"MASK_WEIGHT", 5.0, offsetof(md_cfg, mask_weight)},
    {"DICE_WEIGHT", 5.0, offsetof(md_cfg, dice_weight)},
    {"BOX_WEIGHT", 5.0, offsetof(md_cfg, box_weight)},
    {"GIOU_WEIGHT", 2.0, offsetof(md_cfg, giou_weight)},
    {"COST_CLASS_WEIGHT", 4.0, offsetof(md_cfg, cost_class)},
    {"COST_MASK_WEIGHT", 5.0, offsetof(md_cfg, cost_mask)},
    {"COST_DICE_WEIGHT", 5.0, offsetof(md_cfg, cost_dice)},
    {"COST_BOX_WEIGHT", 5.0, offsetof(md_cfg, cost_box)},
    {"COST_GIOU_WEIGHT", 2.0, offsetof(md_cfg, cost_giou)},
};

/* A section of cfg.MODEL (NULL: none, the defaults hold). */
static const vp_config *sect(const vp_config *model, const char *name)
{
    return model ? H->cfg_get(model, name) : NULL;
}

static vp_status get_bool(const vp_config *s, const char *key, bool def, bool *out)
{
    *out = def;
    return s && H->cfg_type(s, key) != VP_CFG_ABSENT ? H->cfg_bool(s, key, def, out) : VP_OK;
}

static vp_status get_string(const vp_config *s, const char *key, const char *def,
                            const char **out)
{
    *out = def;
    return s && H->cfg_type(s, key) != VP_CFG_ABSENT ? H->cfg_string(s, key, def, out) : VP_OK;
}

/* A value of cfg.MODEL that this head must have: the repository's other
 * modes (or its semantic and panoptic heads) are not built here. */
static vp_status want_string(const vp_config *s, const char *key, const char *def,
                             const char *want, const char *why)
{
    const char *v;
    vp_status st = get_string(s, key, def, &v);
    if (!st && strcmp(v, want))
        st = H->cfg_fail(s, key, "\"%s\" is not supported: the maskdino head builds %s \"%s\"",
                         v, why, want);
    return st;
}

static vp_status want_bool(const vp_config *s, const char *key, bool def, bool want,
                           const char *why)
{
    bool v;
    vp_status st = get_bool(s, key, def, &v);
    if (!st && v != want)
        st = H->cfg_fail(s, key, "%s is not supported: the maskdino head builds %s",
                         v ? "true" : "false", why);
    return st;
}

/* cfg.MODEL (may be NULL) into c, then the entry's own fields over it. */
static vp_status read_cfg(const vp_config *entry, const vp_config *model, md_cfg *c)
{
    vp_status st = VP_OK;
    const vp_config *ssh = sect(model, "SEM_SEG_HEAD"), *md = sect(model, "MaskDINO");
    for (size_t i = 0; !st && i < sizeof ints / sizeof ints[0]; i++) {
        const field *f = &ints[i];
        const vp_config *s = sect(model, f->sect);
        int64_t v = f->def;
        const vp_config *from = NULL;
        const char *key = NULL;
        if (H->cfg_type(entry, f->key) != VP_CFG_ABSENT)
            from = entry, key = f->key;
        else if (s && f->name && H->cfg_type(s, f->name) != VP_CFG_ABSENT)
            from = s, key = f->name;
        if (from)
            st = H->cfg_int(from, key, f->def, &v);
        if (!st && (v < f->min || v > f->max))
            st = H->cfg_fail(from ? from : entry, from ? key : f->key,
                             "%lld is out of range (%lld to %lld)", (long long)v,
                             (long long)f->min, (long long)f->max);
        if (!st)
            *(int64_t *)((char *)c + f->off) = v;
    }
    c->num_labels = c->classes;
    if (!st && ssh && H->cfg_type(ssh, "NUM_CLASSES") != VP_CFG_ABSENT)
        st = H->cfg_int(ssh, "NUM_CLASSES", 80, &c->num_labels);
    for (size_t i = 0; !st && i < sizeof weights / sizeof weights[0]; i++) {
        double v = weights[i].def;
        if (md && H->cfg_type(md, weights[i].name) != VP_CFG_ABSENT)
            st = H->cfg_float(md, weights[i].name, weights[i].def, &v);
        if (!st && !(v >= 0 && v < 1e6))
            st = H->cfg_fail(md, weights[i].name, "%g is out of range (0 to 1e6)", v);
        *(double *)((char *)c + weights[i].off) = v;
    }
    /* The encoder's backbone levels: DEFORMABLE_TRANSFORMER_ENCODER_IN_FEATURES
     * (the backbone's coarsest ones, res<6-L> .. res5), and the extra
     * downsampled ones up to TOTAL_NUM_FEATURE_LEVELS. */
    const vp_config *inf = ssh ? H->cfg_get(ssh, "DEFORMABLE_TRANSFORMER_ENCODER_IN_FEATURES")
                               : NULL;
    if (!st && inf) {
        int n = H->cfg_len(inf);
        for (int i = 0; !st && i < n; i++) {
            const char *v;
            st = H->cfg_string(H->cfg_at(inf, i), NULL, NULL, &v);
            if (!st && (strncmp(v, "res", 3) || v[3] < '2' || v[3] > '5' || v[4] ||
                        v[3] - '0' != 6 - n + i))
                st = H->cfg_fail(ssh, "DEFORMABLE_TRANSFORMER_ENCODER_IN_FEATURES", "expected "
                                 "the backbone's coarsest levels in order, res%d to res5; "
                                 "entry %d is \"%s\"", 6 - n, i, v);
        }
        if (!st && (n < 1 || n > 4))
            st = H->cfg_fail(ssh, "DEFORMABLE_TRANSFORMER_ENCODER_IN_FEATURES", "expected 1 to 4 "
                             "of res2 .. res5");
        if (!st && H->cfg_type(entry, "levels") == VP_CFG_ABSENT)
            c->px.levels = n;
    }
    int64_t total = c->px.levels;
    if (!st && ssh && H->cfg_type(ssh, "TOTAL_NUM_FEATURE_LEVELS") != VP_CFG_ABSENT)
        st = H->cfg_int(ssh, "TOTAL_NUM_FEATURE_LEVELS", 4, &total);
    if (!st && (total < c->px.levels || total > VP_MSDEFORM_MAX_LEVELS))
        st = H->cfg_fail(ssh, "TOTAL_NUM_FEATURE_LEVELS", "%lld is out of range (the encoder's "
                         "%lld backbone levels to %d)", (long long)total, (long long)c->px.levels,
                         VP_MSDEFORM_MAX_LEVELS);
    c->px.extra_levels = total - c->px.levels;
    const char *order = "high2low";
    if (!st)
        st = get_string(ssh, "FEATURE_ORDER", "high2low", &order);
    if (!st && strcmp(order, "high2low") && strcmp(order, "low2high"))
        st = H->cfg_fail(ssh, "FEATURE_ORDER", "\"%s\" is not one of \"high2low\" and "
                         "\"low2high\"", order);
    c->px.low2high = !st && !strcmp(order, "low2high");
    if (!st)
        st = want_string(ssh, "NORM", "GN", "GN", "the pixel decoder with NORM");
    if (!st)
        st = want_string(ssh, "PIXEL_DECODER_NAME", "MaskDINOEncoder", "MaskDINOEncoder",
                         "the pixel decoder");
    if (!st)
        st = want_string(md, "TRANSFORMER_DECODER_NAME", "MaskDINODecoder", "MaskDINODecoder",
                         "the decoder");
    if (!st)
        st = want_bool(md, "TWO_STAGE", true, true, "the two-stage query selection, TWO_STAGE");
    if (!st)
        st = want_bool(md, "INITIAL_PRED", true, true, "INITIAL_PRED");
    if (!st)
        st = want_bool(md, "PRE_NORM", false, false, "post-norm layers, PRE_NORM");
    const char *dn = "seg";
    bool own_dn = H->cfg_type(entry, "dn") != VP_CFG_ABSENT;
    if (!st && own_dn)
        st = H->cfg_string(entry, "dn", "seg", &dn);
    else if (!st)
        st = get_string(md, "DN", "seg", &dn);
    if (!st && strcmp(dn, "no") && strcmp(dn, "seg") && strcmp(dn, "standard"))
        st = H->cfg_fail(own_dn ? entry : md, own_dn ? "dn" : "DN", "\"%s\" is not one of "
                         "\"no\", \"seg\" and \"standard\"", dn);
    c->dn = !st && strcmp(dn, "no");
    c->dn_seg = !st && !strcmp(dn, "seg");
    c->dn_num = 100;
    c->dn_noise = 0.4;
    if (!st && md && H->cfg_type(md, "DN_NUM") != VP_CFG_ABSENT)
        st = H->cfg_int(md, "DN_NUM", 100, &c->dn_num);
    if (!st && (c->dn_num < 0 || c->dn_num > 100000))
        st = H->cfg_fail(md, "DN_NUM", "%lld is out of range (0 to 100000)",
                         (long long)c->dn_num);
    if (!st && md && H->cfg_type(md, "DN_NOISE_SCALE") != VP_CFG_ABSENT)
        st = H->cfg_float(md, "DN_NOISE_SCALE", 0.4, &c->dn_noise);
    if (!st && !(c->dn_noise >= 0 && c->dn_noise <= 10))
        st = H->cfg_fail(md, "DN_NOISE_SCALE", "%g is out of range (0 to 10)", c->dn_noise);
    const char *box = "no";
    if (!st)
        st = get_string(md, "INITIALIZE_BOX_TYPE", "no", &box);
    if (!st) {
        if (!strcmp(box, "bitmask"))
            c->box_init = MD_BOX_BITMASK;
        else if (!strcmp(box, "mask2box"))
            c->box_init = MD_BOX_MASK2BOX;
        else if (!strcmp(box, "no"))
            c->box_init = MD_BOX_NO;
        else
            st = H->cfg_fail(md, "INITIALIZE_BOX_TYPE", "\"%s\" is not one of \"bitmask\", "
                             "\"mask2box\" and \"no\"", box);
    }
    if (!st)
        st = get_bool(md, "LEARN_TGT", false, &c->learn_tgt);
    bool enforce = false;
    if (!st)
        st = get_bool(md, "ENFORCE_INPUT_PROJ", false, &enforce);
    c->input_proj = enforce || c->px.hidden != c->hidden;
    double drop = 0;
    if (!st && md && H->cfg_type(md, "DROPOUT") != VP_CFG_ABSENT)
        st = H->cfg_float(md, "DROPOUT", 0.1, &drop);
    if (!st && drop != 0 && model)
        H->log(VP_LOG_INFO, "maskdino: DROPOUT %g is not applied (vpeft's decoder has no dropout)",
               drop);
    if (!st)
        st = H->cfg_int(entry, "top_k", 100, &c->top_k);
    if (!st && c->top_k < 1)
        st = H->cfg_fail(entry, "top_k", "must be at least 1, got %lld", (long long)c->top_k);
    if (!st)
        st = H->cfg_int(entry, "max_targets", 50, &c->max_targets);
    if (!st && (c->max_targets < 1 || c->max_targets > 10000))
        st = H->cfg_fail(entry, "max_targets", "%lld is out of range (1 to 10000)",
                         (long long)c->max_targets);
    if (!st)
        st = H->cfg_int(entry, "target_stride", 1, &c->target_stride);
    if (!st && (c->target_stride < 1 || c->target_stride > 64))
        st = H->cfg_fail(entry, "target_stride", "%lld is out of range (1 to 64)",
                         (long long)c->target_stride);
    /* the mask losses' points: MaskDINO's TRAIN_NUM_POINTS, or the entry's
     * count, or "all": every cell of the mask logits */
    int64_t pts = 112 * 112;
    if (!st && md && H->cfg_type(md, "TRAIN_NUM_POINTS") != VP_CFG_ABSENT)
        st = H->cfg_int(md, "TRAIN_NUM_POINTS", pts, &pts);
    c->px.oversample_ratio = 3.0;
    c->px.importance_sample_ratio = 0.75;
    if (!st && md && H->cfg_type(md, "OVERSAMPLE_RATIO") != VP_CFG_ABSENT)
        st = H->cfg_float(md, "OVERSAMPLE_RATIO", 3.0, &c->px.oversample_ratio);
    if (!st && md && H->cfg_type(md, "IMPORTANCE_SAMPLE_RATIO") != VP_CFG_ABSENT)
        st = H->cfg_float(md, "IMPORTANCE_SAMPLE_RATIO", 0.75, &c->px.importance_sample_ratio);
    if (!st && !(c->px.oversample_ratio >= 1 && c->px.oversample_ratio <= 64 &&
                 c->px.importance_sample_ratio >= 0 && c->px.importance_sample_ratio <= 1))
        st = H->cfg_fail(md, "OVERSAMPLE_RATIO", "%g and IMPORTANCE_SAMPLE_RATIO %g: expected 1 "
                         "to 64 and 0 to 1", c->px.oversample_ratio,
                         c->px.importance_sample_ratio);
    if (!st && H->cfg_type(entry, "train_num_points") == VP_CFG_STRING) {
        const char *v;
        st = H->cfg_string(entry, "train_num_points", NULL, &v);
        if (!st && strcmp(v, "all"))
            st = H->cfg_fail(entry, "train_num_points", "expected a number of points or \"all\", "
                             "got \"%s\"", v);
        pts = 0;
    } else if (!st && H->cfg_type(entry, "train_num_points") != VP_CFG_ABSENT) {
        st = H->cfg_int(entry, "train_num_points", pts, &pts);
        if (!st && pts < 1)
            st = H->cfg_fail(entry, "train_num_points", "%lld is out of range (1 to %d, or "
                             "\"all\")", (long long)pts, 1 << 24);
    }
    if (!st && (pts < 0 || pts > (1 << 24)))
        st = H->cfg_fail(md, "TRAIN_NUM_POINTS", "%lld is out of range (1 to %d)",
                         (long long)pts, 1 << 24);
    c->px.train_num_points = pts;
    if (!st && (c->hidden % MD_DEC_HEADS || c->px.hidden % c->px.heads || c->px.hidden % 32))
        st = H->cfg_fail(entry, NULL, "the widths do not fit the heads: hidden (%lld) must be a "
                         "multiple of %d, conv_dim (%lld) of the encoder's heads (%lld) and of "
                         "32 (GroupNorm(32))", (long long)c->hidden, MD_DEC_HEADS,
                         (long long)c->px.hidden, (long long)c->px.heads);
    c->px.d2 = true;
    c->px.mask_dim = c->mask_dim;
    c->px.classes = c->classes;
    return st;
}

/* vpeft feeds images normalized with ImageNet's mean and deviation (those
 * of the released models' PIXEL_MEAN and PIXEL_STD, on 0-255); another
 * pair is said once (vpeft forward takes pixel_values as they are). */
static vp_status check_pixels(const vp_config *model)
{
    static const double mean[3] = {123.675, 116.28, 103.53}, sd[3] = {58.395, 57.12, 57.375};
    const char *keys[2] = {"PIXEL_MEAN", "PIXEL_STD"};
    const double *want[2] = {mean, sd};
    for (int k = 0; k < 2; k++) {
        const vp_config *a = H->cfg_get(model, keys[k]);
        if (!a)
            continue;
        bool same = H->cfg_len(a) == 3;
        for (int i = 0; same && i < 3; i++) {
            double v;
            vp_status st = H->cfg_float(H->cfg_at(a, i), NULL, 0, &v);
            if (st)
                return st;
            same = fabs(v - want[k][i]) < 1e-3;
        }
        if (!same) {
            H->log(VP_LOG_WARN, "maskdino: the checkpoint's %s is not ImageNet's, which vpeft's "
                   "training and evaluation normalize images with (vpeft forward takes "
                   "pixel_values as given)", keys[k]);
            break;
        }
    }
    return VP_OK;
}

static void md_destroy(void *self)
{
    md *m = self;
    if (!m)
        return;
    m2f_owned_free(&m->own);
    free(m);
}

static vp_status md_create(const vp_config *cfg, void **self)
{
    static const char *const known[] = {"plugin", "detectron2", "classes", "queries", "hidden",
                                        "decoder_layers", "decoder_ffn", "mask_dim", "conv_dim",
                                        "encoder_layers", "encoder_ffn", "encoder_heads",
                                        "encoder_points", "levels", "top_k", "max_targets",
                                        "pretrained", "target_stride", "train_num_points",
                                        "score_threshold", "dn"};
    vp_status st = H->cfg_check_keys(cfg, known, sizeof known / sizeof known[0]);
    if (st)
        return st;
    md *m = calloc(1, sizeof *m);
    if (!m)
        return H->error(VP_ERR_NOMEM, "maskdino: out of host memory");
    vp_config *root = NULL;
    const vp_config *model = NULL;
    if (H->cfg_type(cfg, "detectron2") != VP_CFG_ABSENT) {
        const char *dir;
        st = H->cfg_file(cfg, "detectron2", &dir);
        char path[4200];
        if (!st) {
            snprintf(path, sizeof path, "%s/config.json", dir);
            st = H->cfg_load(path, &root);
        }
        if (!st) {
            model = H->cfg_get(root, "MODEL");
            if (!model)
                model = H->cfg_get(root, "cfg_MODEL");
            if (!model)
                st = H->cfg_fail(root, "MODEL", "missing: expected detectron2's resolved "
                                 "cfg.MODEL (tools/convert-checkpoint writes it)");
        }
        if (!st)
            st = want_string(model, "META_ARCHITECTURE", "MaskDINO", "MaskDINO",
                             "the meta architecture");
        if (!st)
            st = check_pixels(model);
    }
    if (!st)
        st = read_cfg(cfg, model, &m->cfg);
    if (!st)
        st = H->cfg_bool(cfg, "pretrained", model != NULL, &m->pretrained);
    if (!st)
        st = H->cfg_float(cfg, "score_threshold", 0, &m->score_threshold);
    if (!st && !(m->score_threshold >= 0 && m->score_threshold <= 1))
        st = H->cfg_fail(cfg, "score_threshold", "%g is out of range (0 to 1)",
                         m->score_threshold);
    if (root)
        H->cfg_free(root);
    if (st) {
        md_destroy(m);
        return st;
    }
    *self = m;
    return VP_OK;
}

static void name_pred(vp_build *b, const char *pfx, md_pred p, int64_t B, int64_t Q, int64_t hm,
                      int64_t wm)
{
    char n[96];
    snprintf(n, sizeof n, "%s.pred_logits", pfx);
    H->output(b, n, p.logits);
    snprintf(n, sizeof n, "%s.pred_boxes", pfx);
    H->output(b, n, p.boxes);
    if (p.masks) {
        snprintf(n, sizeof n, "%s.pred_masks", pfx);
        H->output(b, n, H->reshape(H->graph(b), p.masks, 4, (int64_t[]){B, Q, hm, wm}));
    }
}

static vp_status md_build(void *self, vp_build *b, const vp_features *f, bool train,
                          vp_head_out *out)
{
    md *m = self;
    const md_cfg *c = &m->cfg;
    vp_graph *g = H->graph(b);
    m2f_pixel_out px;
    vp_status st = m2f_pixel_decoder(&c->px, b, f, &px);
    if (st || (st = H->graph_status(g)))
        return st;
    const int64_t *ms0 = H->shape(px.mask_features);
    md_targets tg;
    if (train) {
        int64_t hm0 = ms0[1], wm0 = ms0[2], ih = hm0 * px.mask_stride, iw = wm0 * px.mask_stride;
        if (ih % c->target_stride || iw % c->target_stride)
            return H->error(VP_ERR_INVALID, "maskdino: target_stride %lld does not divide the "
                            "%lldx%lld image", (long long)c->target_stride, (long long)ih,
                            (long long)iw);
        if ((st = md_targets_make(c, b, ms0[0], hm0, wm0, ih / c->target_stride,
                                  iw / c->target_stride, &m->own, &tg)))
            return st;
    }
    md_decoder_out d;
    if ((st = md_decoder(c, b, &px, train, train && c->dn ? &tg : NULL, &m->own, &d)))
        return st;
    if ((st = H->buffer_key(b, "criterion.empty_weight")))
        return st;
    if (c->classes != c->num_labels && m->pretrained) {
        H->log(VP_LOG_INFO, "maskdino: the checkpoint has %lld classes, the run %lld: class_embed "
               "and label_enc start from their initial values", (long long)c->num_labels,
               (long long)c->classes);
        static const char *const re[] = {"sem_seg_head.predictor.class_embed.weight",
                                         "sem_seg_head.predictor.class_embed.bias",
                                         "sem_seg_head.predictor.label_enc.weight"};
        for (int i = 0; i < 3; i++)
            if ((st = H->buffer_key(b, re[i])))
                return st;
    }
    const int64_t *ms = H->shape(px.mask_features);
    int64_t B = ms[0], hm = ms[1], wm = ms[2], Q = c->queries;
    md_pred last = d.pred[d.n - 1];
    out->outputs[0] = last.logits;
    out->names[0] = "pred_logits";
    out->outputs[1] = H->reshape(g, last.masks, 4, (int64_t[]){B, Q, hm, wm});
    out->names[1] = "pred_masks";
    out->outputs[2] = last.boxes;
    out->names[2] = "pred_boxes";
    out->n_outputs = 3;
    name_pred(b, "head", last, B, Q, hm, wm);
    name_pred(b, "head.interm_outputs", d.interm, B, Q, hm, wm);
    for (uint32_t i = 0; i + 1 < d.n; i++) {
        char pfx[64];
        snprintf(pfx, sizeof pfx, "head.aux_outputs.%u", i);
        name_pred(b, pfx, d.pred[i], B, Q, hm, wm);
    }
    if ((st = H->graph_status(g)))
        return st;
    if (train) {
        out->loss = md_loss(c, b, &d, &tg, hm, wm, &m->own);
        return H->graph_status(g);
    }
    return instances(m, b, last, hm, wm, hm * px.mask_stride, wm * px.mask_stride, out);
}

static const vp_head_iface md_iface = {
    .size = sizeof md_iface,
    .create = md_create,
    .destroy = md_destroy,
    .build = md_build,
};

static vp_status md_init(const vp_host_api *host)
{
    m2f_H = host;
    return VP_OK;
}

static const void *md_get_interface(const char *id)
{
    return strcmp(id, VP_HEAD_IFACE_ID) ? NULL : &md_iface;
}

VP_PLUGIN_EXPORT const vp_plugin_desc *vp_plugin_entry(void)
{
    static const vp_plugin_desc d = {
        .size = sizeof d,
        .abi_major = VP_ABI_MAJOR,
        .abi_minor = VP_ABI_MINOR,
        .name = "maskdino",
        .kind = VP_PLUGIN_HEAD,
        .version = "0.1.0",
        .description = "Mask DINO instance segmentation (IDEA-Research/MaskDINO): MaskDINOEncoder, "
                       "two-stage query selection, deformable decoder with box refinement",
        .init = md_init,
        .fini = NULL,
        .get_interface = md_get_interface,
    };
    return &d;
}
