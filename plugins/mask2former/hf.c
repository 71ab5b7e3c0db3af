/*
 * The mask2former head as Hugging Face's Mask2FormerForUniversalSegmentation
 * (transformers' modeling_mask2former.py): its config.json read into the
 * head's config. The architecture comes from the checkpoint; the run's
 * entry adds only what HF leaves to the caller (the dataset's classes,
 * instance slots, the target resolution, inference's top_k).
 *
 * HF hard-codes three feature levels and four sampling points
 * (Mask2FormerPixelDecoder, Mask2FormerPixelDecoderEncoderLayer), builds
 * and decoder_layers - 1 decoder layers (Mask2FormerMaskedAttentionDecoder).
 * Its matcher weighs the class cost by class_weight, as Detectron2's does
 * (transformers v4.57.6, the version the test data comes from; some later
 * revisions of the file pass cost_class=1.0 instead).
 */
#include <stdio.h>
#include <string.h>

#include "m2f.h"

#define H m2f_H

vp_status m2f_loss_weights(const vp_config *c, m2f_cfg *out)
{
    static const struct {
        const char *key;
        double def;
        size_t off;
    } reals[] = {{"no_object_weight", 0.1, offsetof(m2f_cfg, no_object_weight)},
                 {"class_weight", 2.0, offsetof(m2f_cfg, class_weight)},
                 {"mask_weight", 5.0, offsetof(m2f_cfg, mask_weight)},
                 {"dice_weight", 5.0, offsetof(m2f_cfg, dice_weight)}};
    vp_status st = VP_OK;
    for (size_t i = 0; !st && i < sizeof reals / sizeof reals[0]; i++) {
        double v;
        st = H->cfg_float(c, reals[i].key, reals[i].def, &v);
        if (!st && !(v >= 0))
            st = H->cfg_fail(c, reals[i].key, "must be >= 0, got %g", v);
        if (!st)
            *(double *)((char *)out + reals[i].off) = v;
    }
    return st;
}

typedef struct hf_int {
    const char *key;
    int64_t min, max;
    int64_t *out;
} hf_int;

vp_status m2f_hf_config(const vp_config *entry, const char *path, m2f_cfg *c)
{
    char file[4096];
    size_t n = strlen(path);
    if (n >= 5 && !strcmp(path + n - 5, ".json"))
        snprintf(file, sizeof file, "%s", path);
    else
        snprintf(file, sizeof file, "%s%sconfig.json", path, n && path[n - 1] == '/' ? "" : "/");
    vp_config *hf = NULL;
    vp_status st = H->cfg_load(file, &hf);
    if (st)
        return st;
    const char *type = NULL, *act = NULL;
    st = H->cfg_string(hf, "model_type", NULL, &type);
    if (!st && (!type || strcmp(type, "mask2former")))
        st = H->cfg_fail(hf, "model_type", "%s%s%s: the mask2former head loads "
                         "\"mask2former\" checkpoints (Mask2FormerForUniversalSegmentation)",
                         type ? "\"" : "", type ? type : "missing", type ? "\"" : "");
    int64_t feature_size = 0, decoder_layers = 0, common_stride = 0;
    hf_int ints[] = {
        {"hidden_dim", 1, 65536, &c->hidden},
        {"feature_size", 1, 65536, &feature_size},
        {"mask_feature_size", 1, 65536, &c->mask_dim},
        {"num_queries", 1, 10000, &c->queries},
        {"num_attention_heads", 1, 1024, &c->heads},
        {"encoder_layers", 0, 64, &c->enc_layers},
        {"decoder_layers", 1, M2F_MAX_PREDS, &decoder_layers},
        {"dim_feedforward", 1, 1 << 20, &c->dec_ffn},
        {"encoder_feedforward_dim", 1, 1 << 20, &c->enc_ffn},
        {"common_stride", 1, 64, &common_stride},
    };
    for (size_t i = 0; !st && i < sizeof ints / sizeof ints[0]; i++) {
        if (H->cfg_type(hf, ints[i].key) == VP_CFG_ABSENT) {
            st = H->cfg_fail(hf, ints[i].key, "missing");
            break;
        }
        st = H->cfg_int(hf, ints[i].key, 0, ints[i].out);
        if (!st && (*ints[i].out < ints[i].min || *ints[i].out > ints[i].max))
            st = H->cfg_fail(hf, ints[i].key, "%lld is out of range (%lld to %lld)",
                             (long long)*ints[i].out, (long long)ints[i].min,
                             (long long)ints[i].max);
    }
    /* num_labels: HF writes id2label and derives num_labels from it. */
    const vp_config *id2label = H->cfg_get(hf, "id2label");
    if (!st && H->cfg_type(hf, "num_labels") != VP_CFG_ABSENT)
        st = H->cfg_int(hf, "num_labels", 0, &c->num_labels);
    else if (!st && id2label && H->cfg_len(id2label) > 0)
        c->num_labels = H->cfg_len(id2label);
    else if (!st)
        st = H->cfg_fail(hf, "id2label", "missing: the checkpoint's classes");
    if (!st)
        st = m2f_loss_weights(hf, c);
    /* the mask losses' points (Mask2FormerLoss) */
    if (!st)
        st = H->cfg_int(hf, "train_num_points", 12544, &c->train_num_points);
    if (!st && (c->train_num_points < 1 || c->train_num_points > (1 << 24)))
        st = H->cfg_fail(hf, "train_num_points", "%lld is out of range (1 to %d)",
                         (long long)c->train_num_points, 1 << 24);
    if (!st)
        st = H->cfg_float(hf, "oversample_ratio", 3.0, &c->oversample_ratio);
    if (!st)
        st = H->cfg_float(hf, "importance_sample_ratio", 0.75, &c->importance_sample_ratio);
    if (!st && !(c->importance_sample_ratio >= 0 && c->importance_sample_ratio <= 1))
        st = H->cfg_fail(hf, "importance_sample_ratio", "%g must be in [0, 1]",
                         c->importance_sample_ratio);
    if (!st && !(c->oversample_ratio >= c->importance_sample_ratio && c->oversample_ratio <= 64))
        st = H->cfg_fail(hf, "oversample_ratio", "%g must be at least importance_sample_ratio "
                         "(%g) and at most 64", c->oversample_ratio, c->importance_sample_ratio);
    bool pre_norm = false, enforce = false;
    if (!st)
        st = H->cfg_bool(hf, "pre_norm", false, &pre_norm);
    if (!st && pre_norm)
        st = H->cfg_fail(hf, "pre_norm", "true is not supported (the released checkpoints are "
                         "post-norm)");
    if (!st)
        st = H->cfg_string(hf, "activation_function", "relu", &act);
    if (!st && strcmp(act, "relu"))
        st = H->cfg_fail(hf, "activation_function", "\"%s\" is not supported (only \"relu\")",
                         act);
    if (!st)
        st = H->cfg_bool(hf, "enforce_input_projection", false, &enforce);
    /* HF keeps the transformer module's input projections in a plain list:
     * when they exist they are never saved or loaded. */
    if (!st && (feature_size != c->hidden || enforce))
        st = H->cfg_fail(hf,
                         feature_size != c->hidden ? "feature_size" : "enforce_input_projection",
                         "a pixel decoder width (%lld) other than hidden_dim (%lld), or forced "
                         "input projections, are not supported: HF does not save those "
                         "projections' weights", (long long)feature_size, (long long)c->hidden);
    if (!st && common_stride != 4)
        st = H->cfg_fail(hf, "common_stride", "%lld is not supported (only 4: one FPN level "
                         "above the stride-8 encoder level)", (long long)common_stride);
    if (!st && (c->hidden % 32 || c->hidden % c->heads || c->hidden % 2))
        st = H->cfg_fail(hf, "hidden_dim", "%lld must be a multiple of 32 (GroupNorm(32)) and "
                         "of num_attention_heads (%lld)", (long long)c->hidden,
                         (long long)c->heads);
    if (!st) {
        c->dec_layers = decoder_layers - 1;
        c->levels = 3;
        c->points = 4;
        c->match_class_weight = c->class_weight;
        c->hf = true;
        int64_t classes;
        st = H->cfg_int(entry, "classes", c->num_labels, &classes);
        if (!st && (classes < 1 || classes > 100000))
            st = H->cfg_fail(entry, "classes", "%lld is out of range (1 to 100000)",
                             (long long)classes);
        if (!st)
            c->classes = classes;
    }
    H->cfg_free(hf);
    return st;
}

/* ---- detectron2's Mask2Former (facebookresearch/Mask2Former) ----------------------
 * The same architecture as HF's port (the HF variant's behaviour, c->hf),
 * under the repository's own names (c->d2) and from its resolved
 * cfg.MODEL: MASK_FORMER (the decoder, the criterion, the points) and
 * SEM_SEG_HEAD (the pixel decoder). The repository's
 * MSDeformAttnPixelDecoder takes MASK_FORMER.NHEADS heads, 4 points and an
 * FFN of 1024 (hard-coded in from_config); a SEM_SEG_HEAD.DIM_FEEDFORWARD,
 * which its configs do not have (Mask DINO's do), replaces the 1024, for
 * directories converted from another layout. */

/* cfg.MODEL's section s, key k as an integer in [lo, hi] (def when absent). */
static vp_status d2_int(const vp_config *s, const char *k, int64_t def, int64_t lo, int64_t hi,
                        int64_t *out)
{
    *out = def;
    if (!s || H->cfg_type(s, k) == VP_CFG_ABSENT)
        return VP_OK;
    vp_status st = H->cfg_int(s, k, def, out);
    if (!st && (*out < lo || *out > hi))
        st = H->cfg_fail(s, k, "%lld is out of range (%lld to %lld)", (long long)*out,
                         (long long)lo, (long long)hi);
    return st;
}

static vp_status d2_real(const vp_config *s, const char *k, double def, double *out)
{
    *out = def;
    if (!s || H->cfg_type(s, k) == VP_CFG_ABSENT)
        return VP_OK;
    vp_status st = H->cfg_float(s, k, def, out);
    if (!st && !(*out >= 0 && *out < 1e6))
        st = H->cfg_fail(s, k, "%g is out of range (0 to 1e6)", *out);
    return st;
}

/* s.k must be want (a string) when present. */
static vp_status d2_want(const vp_config *s, const char *k, const char *want)
{
    const char *v = want;
    vp_status st = s && H->cfg_type(s, k) != VP_CFG_ABSENT ? H->cfg_string(s, k, want, &v)
                                                            : VP_OK;
    if (!st && strcmp(v, want))
        st = H->cfg_fail(s, k, "\"%s\" is not supported: the mask2former head builds \"%s\"", v,
                         want);
    return st;
}

vp_status m2f_d2_config(const vp_config *entry, const char *dir, m2f_cfg *c)
{
    char file[4200];
    snprintf(file, sizeof file, "%s/config.json", dir);
    vp_config *root = NULL;
    vp_status st = H->cfg_load(file, &root);
    if (st)
        return st;
    const vp_config *model = H->cfg_get(root, "MODEL");
    if (!model)
        model = H->cfg_get(root, "cfg_MODEL");
    if (!model)
        st = H->cfg_fail(root, "MODEL", "missing: expected detectron2's resolved cfg.MODEL "
                         "(tools/convert-checkpoint writes it)");
    const vp_config *mf = model ? H->cfg_get(model, "MASK_FORMER") : NULL;
    const vp_config *sh = model ? H->cfg_get(model, "SEM_SEG_HEAD") : NULL;
    if (!st)
        st = d2_want(model, "META_ARCHITECTURE", "MaskFormer");
    if (!st)
        st = d2_want(sh, "PIXEL_DECODER_NAME", "MSDeformAttnPixelDecoder");
    if (!st)
        st = d2_want(sh, "NORM", "GN");
    if (!st)
        st = d2_want(mf, "TRANSFORMER_DECODER_NAME", "MultiScaleMaskedTransformerDecoder");
    if (!st)
        st = d2_want(mf, "TRANSFORMER_IN_FEATURE", "multi_scale_pixel_decoder");
    int64_t conv_dim = 256, dec_layers = 10, stride = 4;
    if (!st)
        st = d2_int(sh, "NUM_CLASSES", 80, 1, 100000, &c->num_labels);
    if (!st)
        st = d2_int(sh, "CONVS_DIM", 256, 32, 65536, &conv_dim);
    if (!st)
        st = d2_int(sh, "MASK_DIM", 256, 1, 65536, &c->mask_dim);
    if (!st)
        st = d2_int(sh, "TRANSFORMER_ENC_LAYERS", 6, 0, 64, &c->enc_layers);
    if (!st)
        st = d2_int(sh, "COMMON_STRIDE", 4, 1, 64, &stride);
    if (!st)
        st = d2_int(sh, "DIM_FEEDFORWARD", 1024, 1, 1 << 20, &c->enc_ffn);
    if (!st)
        st = d2_int(mf, "HIDDEN_DIM", 256, 32, 65536, &c->hidden);
    if (!st)
        st = d2_int(mf, "NUM_OBJECT_QUERIES", 100, 1, 10000, &c->queries);
    if (!st)
        st = d2_int(mf, "NHEADS", 8, 1, 1024, &c->heads);
    if (!st)
        st = d2_int(mf, "DIM_FEEDFORWARD", 2048, 1, 1 << 20, &c->dec_ffn);
    if (!st)
        st = d2_int(mf, "DEC_LAYERS", 10, 1, M2F_MAX_PREDS, &dec_layers);
    if (!st)
        st = d2_real(mf, "NO_OBJECT_WEIGHT", 0.1, &c->no_object_weight);
    if (!st)
        st = d2_real(mf, "CLASS_WEIGHT", 2.0, &c->class_weight);
    if (!st)
        st = d2_real(mf, "MASK_WEIGHT", 5.0, &c->mask_weight);
    if (!st)
        st = d2_real(mf, "DICE_WEIGHT", 5.0, &c->dice_weight);
    if (!st)
        st = d2_int(mf, "TRAIN_NUM_POINTS", 12544, 1, 1 << 24, &c->train_num_points);
    if (!st)
        st = d2_real(mf, "OVERSAMPLE_RATIO", 3.0, &c->oversample_ratio);
    if (!st)
        st = d2_real(mf, "IMPORTANCE_SAMPLE_RATIO", 0.75, &c->importance_sample_ratio);
    if (!st && !(c->importance_sample_ratio <= 1 && c->oversample_ratio >= 1 &&
                 c->oversample_ratio <= 64))
        st = H->cfg_fail(mf, "OVERSAMPLE_RATIO", "%g and IMPORTANCE_SAMPLE_RATIO %g: expected 1 "
                         "to 64 and 0 to 1", c->oversample_ratio, c->importance_sample_ratio);
    bool pre_norm = false, enforce = false;
    if (!st && mf && H->cfg_type(mf, "PRE_NORM") != VP_CFG_ABSENT)
        st = H->cfg_bool(mf, "PRE_NORM", false, &pre_norm);
    if (!st && pre_norm)
        st = H->cfg_fail(mf, "PRE_NORM", "true is not supported (the released checkpoints are "
                         "post-norm)");
    if (!st && mf && H->cfg_type(mf, "ENFORCE_INPUT_PROJ") != VP_CFG_ABSENT)
        st = H->cfg_bool(mf, "ENFORCE_INPUT_PROJ", false, &enforce);
    if (!st && (conv_dim != c->hidden || enforce))
        st = H->cfg_fail(conv_dim != c->hidden ? sh : mf,
                         conv_dim != c->hidden ? "CONVS_DIM" : "ENFORCE_INPUT_PROJ",
                         "a pixel decoder width (%lld) other than MASK_FORMER.HIDDEN_DIM (%lld), "
                         "or forced input projections, are not supported", (long long)conv_dim,
                         (long long)c->hidden);
    if (!st && stride != 4)
        st = H->cfg_fail(sh, "COMMON_STRIDE", "%lld is not supported (only 4: one FPN level "
                         "above the stride-8 encoder level)", (long long)stride);
    /* the encoder's levels: DEFORMABLE_TRANSFORMER_ENCODER_IN_FEATURES, the
     * backbone's coarsest ones */
    c->levels = 3;
    const vp_config *inf = sh ? H->cfg_get(sh, "DEFORMABLE_TRANSFORMER_ENCODER_IN_FEATURES")
                              : NULL;
    if (!st && inf) {
        int n = H->cfg_len(inf);
        for (int i = 0; !st && i < n; i++) {
            const char *v;
            st = H->cfg_string(H->cfg_at(inf, i), NULL, NULL, &v);
            if (!st && (strncmp(v, "res", 3) || v[3] != '0' + 6 - n + i || v[4]))
                st = H->cfg_fail(sh, "DEFORMABLE_TRANSFORMER_ENCODER_IN_FEATURES", "expected the "
                                 "backbone's coarsest levels in order, res%d to res5; entry %d "
                                 "is \"%s\"", 6 - n, i, v);
        }
        if (!st && n != 3)
            st = H->cfg_fail(sh, "DEFORMABLE_TRANSFORMER_ENCODER_IN_FEATURES", "%d levels are "
                             "not supported (res3, res4, res5: one FPN level below them)", n);
    }
    if (!st && (c->hidden % c->heads || c->hidden % 2))
        st = H->cfg_fail(mf, "NHEADS", "%lld does not divide HIDDEN_DIM %lld",
                         (long long)c->heads, (long long)c->hidden);
    double drop = 0;
    if (!st)
        st = d2_real(mf, "DROPOUT", 0.0, &drop);
    if (!st && drop > 0)
        H->log(VP_LOG_INFO, "mask2former: MASK_FORMER.DROPOUT %g is not applied (vpeft's "
               "decoder has no dropout)", drop);
    if (!st) {
        c->dec_layers = dec_layers - 1;
        c->points = 4;
        c->match_class_weight = c->class_weight;
        c->hf = true;
        c->d2 = true;
        int64_t classes;
        st = H->cfg_int(entry, "classes", c->num_labels, &classes);
        if (!st && (classes < 1 || classes > 100000))
            st = H->cfg_fail(entry, "classes", "%lld is out of range (1 to 100000)",
                             (long long)classes);
        if (!st)
            c->classes = classes;
    }
    H->cfg_free(root);
    return st;
}
