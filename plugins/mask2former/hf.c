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
