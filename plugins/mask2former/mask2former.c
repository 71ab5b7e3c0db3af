/*
 * The mask2former head plugin: its config, the head interface, and the
 * plugin's descriptor. The head is the small-scale counterpart of
 * Mask2Former (Cheng et al. 2022): a deformable pixel decoder (pixel.c), a
 * masked-attention transformer decoder (decoder.c) and Hungarian-matched
 * losses (loss.c); docs/mask2former.md describes the config, the names and
 * the outputs.
 *
 * Outputs: "pred_logits" (B, Q, C + 1) and "pred_masks" (B, Q, Hm, Wm)
 * mask logits at the mask features' resolution (stride 8), the last
 * decoder layer's; with training, the loss summed over every layer's
 * prediction; without, the instances as Mask2Former's instance inference
 * makes them: "instances.scores" (B, K), "instances.labels" (B, K) int32
 * and "instances.masks" (B, K, H, W) mask logits at the image's size
 * (> 0: inside), K = min(top_k, Q * C). The HF variant makes them as
 * Hugging Face's post_process_instance_segmentation does (instances_hf).
 */
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "m2f.h"

#define H m2f_H

const vp_host_api *m2f_H;

typedef struct m2f {
    m2f_cfg cfg;
    int64_t top_k;
    double score_threshold; /* hf: HF's threshold (instances below it dropped) */
    bool pretrained;        /* hf: a checkpoint is loaded (model.hf's "pretrained") */
    m2f_owned own;
} m2f;

/* ---- instance inference ------------------------------------------------------------
 * As Mask2Former's instance_inference (Detectron2) and HF's
 * post_process_instance_segmentation: the top K (query, class) pairs by
 * class probability, each scored by its probability times its mask's mean
 * probability inside the mask, the mask upsampled to the input first (both
 * score at that resolution). HF leaves out an instance whose mask is
 * empty, or whose score is below its threshold (score_threshold, 0 by
 * default); Detectron2 keeps every one. */

typedef struct scored {
    float score;
    int32_t idx; /* q * C + c */
} scored;

static int by_score(const void *a, const void *b)
{
    const scored *x = a, *y = b;
    if (x->score != y->score)
        return x->score < y->score ? 1 : -1;
    return x->idx - y->idx; /* ties: the lower index first, as torch.topk's order */
}


typedef struct hf_inst {
    int64_t B, Q, C, K;
    double threshold;
    bool drop_empty;    /* HF's: an empty mask's instance is not returned */
    scored *s;          /* Q * C, made with the graph: nothing allocated per run */
} hf_inst;

/* in: prob (B, Q, C + 1). out: class scores (B, K), labels (B, K) int32,
 * rows (B * K) int32 (b * Q + q). HF: torch.topk over the flattened (Q, C)
 * probabilities without the no-object class; label = index % C, query =
 * index / C. Sorted by probability, ties the lower index first. */
static vp_status hf_topk(void *user, const vp_host_io *io)
{
    const hf_inst *t = user;
    const float *prob = io->in[0];
    float *scores = io->out[0];
    int32_t *labels = (int32_t *)io->out[1], *rows = (int32_t *)io->out[2];
    int64_t QC = t->Q * t->C;
    for (int64_t b = 0; b < t->B; b++) {
        for (int64_t q = 0; q < t->Q; q++)
            for (int64_t c = 0; c < t->C; c++)
                t->s[q * t->C + c] = (scored){prob[(b * t->Q + q) * (t->C + 1) + c],
                                              (int32_t)(q * t->C + c)};
        qsort(t->s, (size_t)QC, sizeof *t->s, by_score);
        for (int64_t k = 0; k < t->K; k++) {
            int32_t q = t->s[k].idx / (int32_t)t->C;
            scores[b * t->K + k] = t->s[k].score;
            labels[b * t->K + k] = t->s[k].idx % (int32_t)t->C;
            rows[b * t->K + k] = (int32_t)(b * t->Q + q);
        }
    }
    return VP_OK;
}

/* in: class scores (B, K), labels (B, K) int32, mask sums (B * K, 2).
 * out: scores (B, K), labels (B, K) int32. HF: score = class probability x
 * sum(sigmoid(m) [m > 0]) / (sum([m > 0]) + 1e-6); an instance whose mask
 * is empty, or whose score is below the threshold, is not returned: here
 * label -1 and score 0, in its place. */
static vp_status hf_score(void *user, const vp_host_io *io)
{
    const hf_inst *t = user;
    const float *cls = io->in[0], *sums = io->in[2];
    const int32_t *lab = (const int32_t *)io->in[1];
    float *scores = io->out[0];
    int32_t *labels = (int32_t *)io->out[1];
    for (int64_t i = 0; i < t->B * t->K; i++) {
        float ms = (float)sums[2 * i] / ((float)sums[2 * i + 1] + 1e-6f);
        float s = cls[i] * ms;
        bool keep = (sums[2 * i + 1] > 0 || !t->drop_empty) && s >= t->threshold;
        scores[i] = keep ? s : 0;
        labels[i] = keep ? lab[i] : -1;
    }
    return VP_OK;
}

/* The instances of the last prediction, its masks upsampled to h x w (the
 * model's input; HF assumes 384 x 384): the top K (query, class) pairs by
 * class probability first, then only their K masks gathered, upsampled
 * and scored on the device. */
static vp_status instances(m2f *m, vp_build *b, m2f_pred p, int64_t hm, int64_t wm, int64_t h,
                           int64_t w, vp_head_out *out)
{
    const m2f_cfg *c = &m->cfg;
    vp_graph *g = H->graph(b);
    int64_t B = H->shape(p.logits)[0], Q = c->queries, C = c->classes, HW = hm * wm;
    int64_t K = m->top_k < Q * C ? m->top_k : Q * C;
    if (h * w >= (1 << 24) || B * K * h * w > (int64_t)UINT32_MAX)
        return H->error(VP_ERR_INVALID, "mask2former: %lld instances of %lldx%lld pixels are "
                        "too many to score (at most 2^24 pixels, 2^32 in all)", (long long)(B * K),
                        (long long)h, (long long)w);
    hf_inst *t = m2f_own(&m->own, sizeof *t);
    scored *s = m2f_own(&m->own, (size_t)(Q * C) * sizeof *s);
    if (!t || !s)
        return H->error(VP_ERR_NOMEM, "mask2former: out of host memory");
    /* HF leaves out empty masks; detectron2's instance_inference keeps them */
    *t = (hf_inst){B, Q, C, K, m->score_threshold, c->hf && !c->d2, s};
    vp_gt *o[3], *f[2];
    vp_status st = H->host(g, "head.instances.topk", hf_topk, t, 1,
                           (vp_gt *[]){H->softmax(g, p.logits)}, 3, (int[]){2, 2, 1},
                           (const int64_t *const[]){(int64_t[]){B, K}, (int64_t[]){B, K},
                                                    (int64_t[]){B * K}},
                           (vp_dtype[]){VP_F32, VP_I32, VP_I32}, o);
    if (st)
        return st;
    vp_gt *sel = H->gather_rows(g, H->reshape(g, p.masks, 2, (int64_t[]){B * Q, HW}), o[2]);
    sel = H->reshape(g, sel, 4, (int64_t[]){B * K, hm, wm, 1});
    if (h != hm || w != wm)
        sel = H->resize_bilinear(g, sel, h, w);
    vp_gt *sums = m2f_mask_sums(g, H->reshape(g, sel, 2, (int64_t[]){B * K, h * w}));
    if ((st = H->graph_status(g)))
        return st;
    st = H->host(g, "head.instances.score", hf_score, t, 3, (vp_gt *[]){o[0], o[1], sums}, 2,
                 (int[]){2, 2}, (const int64_t *const[]){(int64_t[]){B, K}, (int64_t[]){B, K}},
                 (vp_dtype[]){VP_F32, VP_I32}, f);
    if (st)
        return st;
    uint32_t n = out->n_outputs;
    out->outputs[n] = f[0];
    out->names[n++] = "instances.scores";
    out->outputs[n] = f[1];
    out->names[n++] = "instances.labels";
    out->outputs[n] = H->reshape(g, sel, 4, (int64_t[]){B, K, h, w});
    out->names[n++] = "instances.masks";
    out->n_outputs = n;
    return H->graph_status(g);
}

static void m2f_destroy(void *self)
{
    m2f *m = self;
    if (!m)
        return;
    m2f_owned_free(&m->own);
    free(m);
}

typedef struct field {
    const char *key;
    int64_t def, min, max;
    size_t off; /* in m2f_cfg */
} field;

#define F(k, d, lo, hi, member) {k, d, lo, hi, offsetof(m2f_cfg, member)}

/* The head's own fields beside "hf", whose architecture the checkpoint
 * gives. */
static vp_status m2f_create_hf(const vp_config *cfg, m2f *m)
{
    /* "hf" or (the same with its names) "detectron2" */
    bool d2 = H->cfg_type(cfg, "detectron2") != VP_CFG_ABSENT;
    static const char *const known[] = {"plugin", "hf", "classes", "max_targets", "top_k",
                                        "target_stride", "score_threshold", "train_num_points",
                                        "pretrained"};
    const char *keys[sizeof known / sizeof known[0]];
    memcpy(keys, known, sizeof known);
    if (d2)
        keys[1] = "detectron2";
    vp_status st = H->cfg_check_keys(cfg, keys, sizeof known / sizeof known[0]);
    const char *path = NULL;
    if (!st)
        st = H->cfg_file(cfg, d2 ? "detectron2" : "hf", &path);
    if (!st)
        st = d2 ? m2f_d2_config(cfg, path, &m->cfg) : m2f_hf_config(cfg, path, &m->cfg);
    if (!st)
        st = H->cfg_int(cfg, "max_targets", 50, &m->cfg.max_targets);
    if (!st && (m->cfg.max_targets < 1 || m->cfg.max_targets > 10000))
        st = H->cfg_fail(cfg, "max_targets", "%lld is out of range (1 to 10000)",
                         (long long)m->cfg.max_targets);
    /* train_num_points: the checkpoint's (HF samples points), a count, or
     * "all": every target pixel once (HF's loss with all points; exact) */
    if (!st && H->cfg_type(cfg, "train_num_points") == VP_CFG_STRING) {
        const char *v;
        st = H->cfg_string(cfg, "train_num_points", NULL, &v);
        if (!st && strcmp(v, "all"))
            st = H->cfg_fail(cfg, "train_num_points", "expected a number of points or \"all\", "
                             "got \"%s\"", v);
        if (!st)
            m->cfg.train_num_points = 0;
    } else if (!st && H->cfg_type(cfg, "train_num_points") != VP_CFG_ABSENT) {
        st = H->cfg_int(cfg, "train_num_points", 0, &m->cfg.train_num_points);
        if (!st && (m->cfg.train_num_points < 1 || m->cfg.train_num_points > (1 << 24)))
            st = H->cfg_fail(cfg, "train_num_points", "%lld is out of range (1 to %d, or \"all\")",
                             (long long)m->cfg.train_num_points, 1 << 24);
    }
    if (!st)
        st = H->cfg_int(cfg, "target_stride", 1, &m->cfg.target_stride);
    if (!st && (m->cfg.target_stride < 1 || m->cfg.target_stride > 64))
        st = H->cfg_fail(cfg, "target_stride", "%lld is out of range (1 to 64)",
                         (long long)m->cfg.target_stride);
    /* HF's post-processing: torch.topk with k = num_queries; its threshold
     * 0.5 drops instances that COCO AP counts, so 0 keeps them all. */
    if (!st)
        st = H->cfg_int(cfg, "top_k", m->cfg.queries, &m->top_k);
    if (!st && m->top_k < 1)
        st = H->cfg_fail(cfg, "top_k", "must be at least 1, got %lld", (long long)m->top_k);
    /* false: the run loads no checkpoint (model.hf's "pretrained") */
    if (!st)
        st = H->cfg_bool(cfg, "pretrained", true, &m->pretrained);
    if (!st)
        st = H->cfg_float(cfg, "score_threshold", 0, &m->score_threshold);
    if (!st && !(m->score_threshold >= 0 && m->score_threshold <= 1))
        st = H->cfg_fail(cfg, "score_threshold", "%g is out of range (0 to 1)",
                         m->score_threshold);
    return st;
}

static vp_status m2f_create(const vp_config *cfg, void **self)
{
    static const field ints[] = {
        F("classes", -1, 1, 100000, classes),
        F("queries", 100, 1, 10000, queries),
        F("hidden", 256, 1, 65536, hidden),
        F("heads", 8, 1, 1024, heads),
        F("encoder_layers", 6, 0, 64, enc_layers),
        F("decoder_layers", 9, 0, M2F_MAX_PREDS - 1, dec_layers),
        F("levels", 3, 1, VP_MSDEFORM_MAX_LEVELS, levels),
        F("points", 4, 1, 64, points),
        F("encoder_ffn", 1024, 1, 1 << 20, enc_ffn),
        F("decoder_ffn", 2048, 1, 1 << 20, dec_ffn),
        F("mask_dim", 256, 1, 65536, mask_dim),
        F("max_targets", 50, 1, 10000, max_targets),
    };
    static const char *const known[] = {"plugin", "classes", "queries", "hidden", "heads",
                                        "encoder_layers", "decoder_layers", "levels", "points",
                                        "encoder_ffn", "decoder_ffn", "mask_dim", "max_targets",
                                        "no_object_weight", "class_weight", "mask_weight",
                                        "dice_weight", "top_k", "hf"};
    /* The HF and detectron2 variants check their own fields (m2f_create_hf). */
    bool hf = H->cfg_type(cfg, "hf") != VP_CFG_ABSENT ||
              H->cfg_type(cfg, "detectron2") != VP_CFG_ABSENT;
    vp_status st = hf ? VP_OK : H->cfg_check_keys(cfg, known, sizeof known / sizeof known[0]);
    if (st)
        return st;
    m2f *m = calloc(1, sizeof *m);
    if (!m)
        return H->error(VP_ERR_NOMEM, "mask2former: out of host memory");
    m2f_cfg *c = &m->cfg;
    if (hf) {
        if ((st = m2f_create_hf(cfg, m))) {
            m2f_destroy(m);
            return st;
        }
        *self = m;
        return VP_OK;
    }
    for (size_t i = 0; !st && i < sizeof ints / sizeof ints[0]; i++) {
        int64_t v;
        st = H->cfg_int(cfg, ints[i].key, ints[i].def, &v);
        if (!st && ints[i].def < 0 && H->cfg_type(cfg, ints[i].key) == VP_CFG_ABSENT)
            st = H->cfg_fail(cfg, ints[i].key, "missing: the number of classes (without "
                             "the no-object class)");
        else if (!st && (v < ints[i].min || v > ints[i].max))
            st = H->cfg_fail(cfg, ints[i].key, "%lld is out of range (%lld to %lld)",
                             (long long)v, (long long)ints[i].min, (long long)ints[i].max);
        if (!st)
            *(int64_t *)((char *)c + ints[i].off) = v;
    }
    if (!st)
        st = m2f_loss_weights(cfg, c);
    c->match_class_weight = c->class_weight;
    if (!st)
        st = H->cfg_int(cfg, "top_k", 100, &m->top_k);
    if (!st && m->top_k < 1)
        st = H->cfg_fail(cfg, "top_k", "must be at least 1, got %lld", (long long)m->top_k);
    if (!st && c->hidden % c->heads)
        st = H->cfg_fail(cfg, "heads", "%lld heads do not divide hidden %lld",
                         (long long)c->heads, (long long)c->hidden);
    if (st) {
        m2f_destroy(m);
        return st;
    }
    *self = m;
    return VP_OK;
}

static vp_status m2f_build(void *self, vp_build *b, const vp_features *f, bool train,
                           vp_head_out *out)
{
    m2f *m = self;
    const m2f_cfg *c = &m->cfg;
    vp_graph *g = H->graph(b);
    if ((int64_t)f->n < c->levels)
        return H->error(VP_ERR_INVALID, "mask2former: levels is %lld, the backbone gives %u "
                        "feature maps", (long long)c->levels, f->n);
    m2f_pixel_out px;
    vp_status st = m2f_pixel_decoder(c, b, f, &px);
    if (st || (st = H->graph_status(g)))
        return st;
    m2f_decoder_out d;
    if ((st = m2f_decoder(c, b, &px, &d)))
        return st;
    const int64_t *ms = H->shape(px.mask_features);
    int64_t B = ms[0], hm = ms[1], wm = ms[2];
    m2f_pred last = d.pred[d.n - 1];
    out->outputs[0] = last.logits;
    out->names[0] = "pred_logits";
    out->outputs[1] = H->reshape(g, last.masks, 4, (int64_t[]){B, c->queries, hm, wm});
    out->names[1] = "pred_masks";
    out->n_outputs = 2;
    if (c->hf) {
        /* HF's output names (Mask2FormerForUniversalSegmentationOutput), or
         * the detectron2 repository's (its SetCriterion's input dict), and
         * the checkpoint keys that are no parameter here. */
        H->output(b, c->d2 ? "head.pred_logits" : "class_queries_logits", out->outputs[0]);
        H->output(b, c->d2 ? "head.pred_masks" : "masks_queries_logits", out->outputs[1]);
        char name[96];
        for (uint32_t p = 0; p + 1 < d.n; p++) {
            snprintf(name, sizeof name, c->d2 ? "head.aux_outputs.%u.pred_logits"
                                              : "auxiliary_logits.%u.class_queries_logits", p);
            H->output(b, name, d.pred[p].logits);
            snprintf(name, sizeof name, c->d2 ? "head.aux_outputs.%u.pred_masks"
                                              : "auxiliary_logits.%u.masks_queries_logits", p);
            H->output(b, name, H->reshape(g, d.pred[p].masks, 4,
                                          (int64_t[]){B, c->queries, hm, wm}));
        }
        if ((st = H->buffer_key(b, "criterion.empty_weight")))
            return st;
        if (c->classes != c->num_labels && m->pretrained) {
            const char *cp = c->d2 ? "sem_seg_head.predictor.class_embed" : "class_predictor";
            H->log(VP_LOG_INFO, "mask2former: the checkpoint has %lld classes, the run %lld: "
                   "%s starts from random values (as HF's ignore_mismatched_sizes)",
                   (long long)c->num_labels, (long long)c->classes, cp);
            char wn[96], bn[96];
            snprintf(wn, sizeof wn, "%s.weight", cp);
            snprintf(bn, sizeof bn, "%s.bias", cp);
            if ((st = H->buffer_key(b, wn)) || (st = H->buffer_key(b, bn)))
                return st;
        }
    }
    if (train) {
        int64_t ht = hm, wt = wm;
        if (c->hf) {
            int64_t ih = hm * px.mask_stride, iw = wm * px.mask_stride;
            if (ih % c->target_stride || iw % c->target_stride)
                return H->error(VP_ERR_INVALID, "mask2former: target_stride %lld does not "
                                "divide the %lldx%lld image", (long long)c->target_stride,
                                (long long)ih, (long long)iw);
            ht = ih / c->target_stride;
            wt = iw / c->target_stride;
        }
        out->loss = m2f_loss(c, b, &d, hm, wm, ht, wt, &m->own);
        return H->graph_status(g);
    }
    /* The mask features' stride scales them to the image. */
    int32_t stride = px.mask_stride;
    return instances(m, b, last, hm, wm, hm * stride, wm * stride, out);
}

static const vp_head_iface m2f_iface = {
    .size = sizeof m2f_iface,
    .create = m2f_create,
    .destroy = m2f_destroy,
    .build = m2f_build,
};

static vp_status m2f_init(const vp_host_api *host)
{
    H = host;
    return VP_OK;
}

static const void *m2f_get_interface(const char *id)
{
    return strcmp(id, VP_HEAD_IFACE_ID) ? NULL : &m2f_iface;
}

VP_PLUGIN_EXPORT const vp_plugin_desc *vp_plugin_entry(void)
{
    static const vp_plugin_desc d = {
        .size = sizeof d,
        .abi_major = VP_ABI_MAJOR,
        .abi_minor = VP_ABI_MINOR,
        .name = "mask2former",
        .kind = VP_PLUGIN_HEAD,
        .version = "0.1.0",
        .description = "Mask2Former-style instance segmentation: deformable pixel decoder, "
                       "masked-attention decoder, Hungarian-matched losses",
        .init = m2f_init,
        .fini = NULL,
        .get_interface = m2f_get_interface,
    };
    return &d;
}
