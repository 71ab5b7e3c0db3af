/*
 * build.c - the `swin` backbone's graph: Hugging Face's SwinBackbone as
 * Mask2FormerForUniversalSegmentation runs it (modeling_swin.py, with
 * always_partition=True and output_hidden_states_before_downsampling=True),
 * with parameters, sites and weights under HF's names; or detectron2's
 * D2SwinTransformer (Mask2Former's mask2former/modeling/backbone/swin.py,
 * which Mask DINO copies), the same computation under its names with a
 * packed qkv projection, its dropouts and stochastic depth on both branches.
 *
 *   image (B, C, Hi, Wi) -> zero-padded right/bottom to multiples of the
 *   patch -> patch embedding (p x p conv, stride p) -> embeddings.norm
 *   -> per stage i (width D_i = embed_dim * 2^i, map Hs x Ws):
 *        depths[i] blocks: x += attention(windows(layernorm_before(x)))
 *                          x += output.dense(GELU(intermediate.dense(layernorm_after(x))))
 *        where windows() pads the map with zeros to multiples of the window
 *        w, rolls it by -w/2 on odd blocks, and cuts w x w windows; the
 *        attention adds the relative position bias and, on shifted blocks,
 *        the -100 shift mask; its reverse rolls back and crops
 *     -> hidden_states_norms.stage{i+1}: feature i (B, Hs, Ws, D_i), stride p * 2^i
 *     -> patch merging (not after the last stage): 2x2 cells (odd sides
 *        zero-padded) concatenated, layernorm, reduction 4D -> 2D
 *
 * The windows keep their size and shift even when the map is smaller than
 * a window (always_partition), padded tokens take part in attention, and
 * only the shift mask is applied, as HF does.
 */
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "swin.h"

#define H swin_H

static const char *const M2F_PREFIX = "model.pixel_level_module.encoder.";

/* HF's SwinBackbone keys (modeling_swin.py). */
static const swin_names hf_names = {
    .proj = "embeddings.patch_embeddings.projection", .embed_norm = "embeddings.norm",
    .block = "encoder.layers.%d.blocks.%d", .norm1 = "layernorm_before",
    .norm2 = "layernorm_after", .table = "attention.self.relative_position_bias_table",
    .index = "attention.self.relative_position_index", .attn_proj = "attention.output.dense",
    .attn = "attention", .fc1 = "intermediate.dense", .fc2 = "output.dense", .ffn = "output",
    .merge_norm = "encoder.layers.%d.downsample.norm",
    .merge_red = "encoder.layers.%d.downsample.reduction",
    .stage_norm = "hidden_states_norms.stage%d", .stage_norm_base = 1};

/* D2SwinTransformer's state_dict keys (under the model's "backbone."). */
static const swin_names d2_names = {
    .proj = "patch_embed.proj", .embed_norm = "patch_embed.norm", .block = "layers.%d.blocks.%d",
    .norm1 = "norm1", .norm2 = "norm2", .table = "attn.relative_position_bias_table",
    .index = "attn.relative_position_index", .attn_proj = "attn.proj", .attn = "attn",
    .fc1 = "mlp.fc1", .fc2 = "mlp.fc2", .ffn = "mlp", .merge_norm = "layers.%d.downsample.norm",
    .merge_red = "layers.%d.downsample.reduction", .stage_norm = "norm%d", .stage_norm_base = 0};

/* ---- weights ---------------------------------------------------------------------- */

static bool starts_with(const char *s, const char *pre) { return !strncmp(s, pre, strlen(pre)); }

static bool ends_with(const char *s, const char *suf)
{
    size_t n = strlen(s), k = strlen(suf);
    return n >= k && !strcmp(s + n - k, suf);
}

static void shape_str(char *buf, size_t n, int ndim, const int64_t *shape)
{
    size_t k = (size_t)snprintf(buf, n, "(");
    for (int i = 0; i < ndim && k < n; i++)
        k += (size_t)snprintf(buf + k, n - k, "%s%lld", i ? ", " : "", (long long)shape[i]);
    if (k < n)
        snprintf(buf + k, n - k, ")");
}

static bool has_key(const swin_build *c, const char *key)
{
    for (uint32_t i = 0; i < c->n_keys; i++)
        if (!strcmp(H->weights_key(c->w, i), key))
            return true;
    return false;
}

/* Open the file and find how it names SwinBackbone's tensors: under
 * "model.pixel_level_module.encoder." (a Mask2Former checkpoint), "swin."
 * (SwinForImageClassification) or nothing (SwinModel, SwinBackbone),
 * whichever holds the patch projection. */
static vp_status open_weights(swin_build *c)
{
    static const char *const prefixes[] = {"model.pixel_level_module.encoder.", "swin.", ""};
    vp_status st = H->weights_open(c->b, c->m->weights, &c->w);
    if (st)
        return st;
    c->n_keys = H->weights_count(c->w);
    c->used = calloc(c->n_keys ? c->n_keys : 1, sizeof *c->used);
    if (!c->used)
        return H->error(VP_ERR_NOMEM, "swin: out of memory");
    c->fpfx = "";
    for (size_t p = 0; p < sizeof prefixes / sizeof prefixes[0]; p++) {
        char key[SWIN_NAME_LEN];
        snprintf(key, sizeof key, "%sembeddings.patch_embeddings.projection.weight", prefixes[p]);
        if (has_key(c, key)) {
            c->fpfx = prefixes[p];
            break;
        }
    }
    char norms[SWIN_NAME_LEN];
    snprintf(norms, sizeof norms, "%shidden_states_norms.", c->fpfx);
    for (uint32_t i = 0; i < c->n_keys && !c->file_norms; i++)
        c->file_norms = starts_with(H->weights_key(c->w, i), norms);
    if (!c->file_norms)
        H->log(VP_LOG_INFO, "swin: %s has no hidden_states_norms (a SwinModel checkpoint): the "
               "%d stage norms keep LayerNorm's initialization, ones and zeros", c->m->weights,
               c->m->n_stages);
    return VP_OK;
}

/* p's first values from the file's tensor <fpfx><hf>, when there is a
 * file. NULL on failure (ours in c->st, or the host's in the graph). */
static vp_gt *load(swin_build *c, vp_gt *p, const char *hf)
{
    if (swin_failed(c))
        return NULL;
    if (!p || !c->w || (!c->file_norms && starts_with(hf, "hidden_states_norms.")))
        return p;
    char key[SWIN_NAME_LEN];
    snprintf(key, sizeof key, "%s%s", c->fpfx, hf);
    uint32_t i = 0;
    while (i < c->n_keys && strcmp(H->weights_key(c->w, i), key))
        i++;
    if (i == c->n_keys) {
        char s[96];
        shape_str(s, sizeof s, H->ndim(p), H->shape(p));
        c->st = H->error(VP_ERR_NOT_FOUND, "swin: %s: no tensor \"%s\" (this Swin needs it with "
                         "shape %s)", c->m->weights, key, s);
        return NULL;
    }
    if (H->param_load(c->b, p, c->w, key))
        return NULL; /* the host's message, with the key and both shapes, sticky in the graph */
    c->used[i] = true;
    return p;
}

/* The parameter <pfx><hf>, from the file when there is one; trainable
 * unless train.trainable says otherwise. */
static vp_gt *param_ex(swin_build *c, const char *hf, int ndim, const int64_t *shape,
                       vp_init init, bool trainable)
{
    if (swin_failed(c))
        return NULL;
    char name[SWIN_NAME_LEN];
    snprintf(name, sizeof name, "%s%s", c->pfx, hf);
    return load(c, H->param(c->b, name, ndim, shape, &init, trainable), hf);
}

static vp_gt *param(swin_build *c, const char *hf, int ndim, const int64_t *shape, vp_init init)
{
    return param_ex(c, hf, ndim, shape, init, true);
}

/* x (..., d) layer-normalized with <hf>.weight and .bias. */
static vp_gt *norm(swin_build *c, const char *hf, vp_gt *x, int64_t d, float eps)
{
    char wn[SWIN_NAME_LEN], bn[SWIN_NAME_LEN];
    snprintf(wn, sizeof wn, "%s.weight", hf);
    snprintf(bn, sizeof bn, "%s.bias", hf);
    vp_gt *w = param(c, wn, 1, &d, vp_init_ones());
    vp_gt *b = param(c, bn, 1, &d, vp_init_zeros());
    return H->layernorm(c->g, x, w, b, eps);
}

/* The linear site <pfx><hf>: x (..., in) -> (..., out), initialized as HF's
 * SwinPreTrainedModel._init_weights (weight N(0, initializer_range), bias
 * 0), or from the file. */
static vp_gt *linear(swin_build *c, const char *hf, vp_gt *x, int64_t out, bool bias)
{
    if (swin_failed(c))
        return NULL;
    char path[SWIN_NAME_LEN], name[SWIN_NAME_LEN + 8], key[SWIN_NAME_LEN + 8];
    snprintf(path, sizeof path, "%s%s", c->pfx, hf);
    vp_init wi = vp_init_normal(0.0f, c->m->init_std), bi = vp_init_zeros();
    vp_gt *y = H->site_linear(c->b, path, x, out, bias, &wi, &bi);
    if (!y || !c->w)
        return y;
    static const char *const part[2] = {"weight", "bias"};
    for (int i = 0; i < (bias ? 2 : 1); i++) {
        snprintf(name, sizeof name, "%s.%s", path, part[i]);
        snprintf(key, sizeof key, "%s.%s", hf, part[i]);
        if (!load(c, H->find(c->g, name), key))
            return NULL;
    }
    return y;
}

/* Every tensor of the file must have been used, belong to the rest of the
 * model (outside a non-empty prefix: a Mask2Former's pixel decoder, a
 * classifier), or be one SwinBackbone does not load: SwinModel's final
 * layernorm, and relative_position_index buffers (recomputed). */
static vp_status check_unused(swin_build *c)
{
    size_t np = strlen(c->fpfx);
    for (uint32_t i = 0; i < c->n_keys; i++) {
        const char *k = H->weights_key(c->w, i);
        if (c->used[i])
            continue;
        if (np && strncmp(k, c->fpfx, np)) {
            H->log(VP_LOG_DEBUG, "swin: %s: tensor \"%s\" ignored (not the backbone)",
                   c->m->weights, k);
            continue;
        }
        const char *rest = k + np;
        if (starts_with(rest, "layernorm.") || ends_with(rest, ".relative_position_index")) {
            H->log(VP_LOG_DEBUG, "swin: %s: tensor \"%s\" not loaded (%s)", c->m->weights, k,
                   starts_with(rest, "layernorm.") ? "SwinModel's final layernorm"
                                                   : "a buffer, computed here");
            continue;
        }
        char depths[64];
        size_t n = 0;
        for (int s = 0; s < c->m->n_stages && n < sizeof depths; s++)
            n += (size_t)snprintf(depths + n, sizeof depths - n, "%s%lld", s ? ", " : "",
                                  (long long)c->m->depths[s]);
        return H->error(VP_ERR_INVALID, "swin: %s: tensor \"%s\" is not part of this Swin "
                        "(embed_dim %lld, depths [%s])", c->m->weights, k,
                        (long long)c->m->embed_dim, depths);
    }
    return VP_OK;
}

/* ---- the network ------------------------------------------------------------------- */

/* SwinEmbeddings (detectron2's PatchEmbed and pos_drop). image (B, C, Hi,
 * Wi) -> (B, Hg*Wg, D), Hg = ceil(Hi/p). */
static vp_gt *embeddings(swin_build *c, vp_gt *image, int64_t Hg, int64_t Wg)
{
    const swin *m = c->m;
    int64_t D = m->embed_dim, p = m->patch;
    char wn[SWIN_NAME_LEN], bn[SWIN_NAME_LEN];
    snprintf(wn, sizeof wn, "%s.weight", c->nm->proj);
    snprintf(bn, sizeof bn, "%s.bias", c->nm->proj);
    vp_gt *w = param(c, wn, 4, (int64_t[]){D, m->channels, p, p},
                     vp_init_normal(0.0f, m->init_std));
    vp_gt *b = param(c, bn, 1, &D, vp_init_zeros());
    /* SwinPatchEmbeddings.maybe_pad: zeros right and bottom. */
    vp_gt *img = swin_pad_roll(c, swin_pad_roll(c, image, 3, Wg * p, 0), 2, Hg * p, 0);
    vp_gt *x = H->patch_embed(c->g, img, w, b, (int)p);
    if (m->patch_norm)
        x = norm(c, c->nm->embed_norm, x, D, SWIN_TORCH_LN_EPS);
    return H->dropout(c->g, x, m->hidden_drop);
}

static vp_gt *composed_attention(swin_build *c, vp_gt *const qkv_in[3], vp_gt *bias,
                                 vp_gt *mask, int64_t heads, float scale);

/* SwinAttention (detectron2's WindowAttention) on windows x (Bw, N, D),
 * N = w*w, at block path p ("encoder.layers.<i>.blocks.<j>"); mask (nW,
 * heads, N, N) on shifted blocks, else NULL. -> (Bw, N, D), through the
 * attention site. */
static vp_gt *attention(swin_build *c, const char *p, vp_gt *x, int64_t D, int64_t heads,
                        vp_gt *mask)
{
    const swin *m = c->m;
    vp_graph *g = c->g;
    int64_t N = H->shape(x)[1], d = D / heads, w = m->window;
    char n[SWIN_NAME_LEN];
    snprintf(n, sizeof n, "%s.%s", p, c->nm->table);
    vp_gt *table = param(c, n, 2, (int64_t[]){(2 * w - 1) * (2 * w - 1), heads}, vp_init_zeros());
    snprintf(n, sizeof n, "%s%s.%s", c->pfx, p, c->nm->index);
    if (!swin_failed(c) && (c->st = H->buffer_key(c->b, n)))
        return NULL;
    vp_gt *qkv[3];
    if (m->d2) {
        /* one qkv linear (3D outputs: q, then k, then v, each heads x d) */
        snprintf(n, sizeof n, "%s.attn.qkv", p);
        vp_gt *packed = linear(c, n, x, 3 * D, m->qkv_bias); /* (Bw, N, 3D) */
        for (int i = 0; i < 3; i++)
            qkv[i] = H->slice(g, packed, 2, i * D, D);       /* (Bw, N, D) */
    } else {
        static const char *const role[3] = {"query", "key", "value"};
        for (int i = 0; i < 3; i++) {
            snprintf(n, sizeof n, "%s.attention.self.%s", p, role[i]);
            qkv[i] = linear(c, n, x, D, m->qkv_bias); /* (Bw, N, D) */
        }
    }
    /* table[relative_position_index] -> (N, N, heads) -> (heads, N, N) */
    vp_gt *bias = H->reshape(g, H->gather_rows(g, table, c->rel_index), 3,
                             (int64_t[]){N, N, heads});
    bias = H->permute(g, bias, (int[]){2, 0, 1});
    vp_gt *o;
    /* HF divides the scores by sqrt(d); detectron2 scales q by qk_scale or d^-0.5 */
    float scale = m->qk_scale != 0.0f ? m->qk_scale : (float)(1.0 / sqrt((double)d));
    if (H->abi_minor >= 2 && !(m->attn_drop > 0.0f)) {
        /* One fused node: the bias (heads, N, N), on shifted blocks plus
         * the mask (nW, heads, N, N) that window bw % nW of the batch adds. */
        if (mask)
            bias = H->add(g, mask, bias);
        o = H->attention_ex(g, qkv[0], qkv[1], qkv[2], bias, (int)heads, scale);
    } else {
        o = composed_attention(c, qkv, bias, mask, heads, scale);
    }
    snprintf(n, sizeof n, "%s.%s", p, c->nm->attn_proj);
    /* SwinSelfOutput's dropout is attention_probs_dropout_prob, as in HF;
     * detectron2's proj_drop is DROP_RATE. */
    o = H->dropout(g, linear(c, n, o, D, true), m->proj_drop);
    snprintf(n, sizeof n, "%s%s.%s", c->pfx, p, c->nm->attn);
    return H->site_output_in(c->b, n, VP_SITE_ATTN_OUT, x, o);
}

/* The attention as separate ops, for attention dropout (which the fused
 * node has not) and hosts before ABI 1.2: q, k, v (Bw, N, D), bias
 * (heads, N, N), mask (nW, heads, N, N) or NULL. -> (Bw, N, D) */
static vp_gt *composed_attention(swin_build *c, vp_gt *const qkv_in[3], vp_gt *bias,
                                 vp_gt *mask, int64_t heads, float scale)
{
    const swin *m = c->m;
    vp_graph *g = c->g;
    int64_t Bw = H->shape(qkv_in[0])[0], N = H->shape(qkv_in[0])[1],
            D = H->shape(qkv_in[0])[2], d = D / heads;
    vp_gt *qkv[3];
    for (int i = 0; i < 3; i++) {
        /* scaling q instead of the scores: the same product on fewer elements */
        vp_gt *t = i == 0 ? H->scale(g, qkv_in[0], scale) : qkv_in[i];
        t = H->reshape(g, t, 4, (int64_t[]){Bw, N, heads, d});
        qkv[i] = H->permute(g, t, (int[]){0, 2, 1, 3}); /* (Bw, heads, N, d) */
    }
    vp_gt *s = H->gemm(g, qkv[0], false, qkv[1], true, NULL); /* (Bw, heads, N, N) */
    if (mask) {
        /* scores.view(B, nW, heads, N, N) + mask, with the bias added to
         * the (smaller, batch-free) mask first. */
        int64_t nW = H->shape(mask)[0];
        bias = H->reshape(g, H->add(g, mask, bias), 3, (int64_t[]){nW, heads, N * N});
        s = H->reshape(g, s, 4, (int64_t[]){Bw / nW, nW, heads, N * N});
        s = H->reshape(g, H->add(g, s, bias), 4, (int64_t[]){Bw, heads, N, N});
    } else {
        s = H->add(g, s, bias);
    }
    s = H->dropout(g, H->softmax(g, s), m->attn_drop);
    vp_gt *o = H->gemm(g, s, false, qkv[2], false, NULL); /* (Bw, heads, N, d) */
    return H->reshape(g, H->permute(g, o, (int[]){0, 2, 1, 3}), 3, (int64_t[]){Bw, N, D});
}

/* HF's stochastic depth rates: linspace(0, drop_path_rate, blocks), block
 * by block through the stages (SwinEncoder.__init__). */
static float block_drop_rate(const swin *m, int i, int j)
{
    int64_t k = j, total = 0;
    for (int s = 0; s < m->n_stages; s++) {
        if (s < i)
            k += m->depths[s];
        total += m->depths[s];
    }
    return total > 1 ? (float)((double)m->drop_path * (double)k / (double)(total - 1)) : 0.0f;
}

/* SwinDropPath: in a training graph each image's branch y (B, N, D) is
 * dropped with probability p and kept ones scaled by 1 / (1 - p) (timm's
 * drop_path); elsewhere y itself. The per-image factors are dropout of a
 * column of ones, applied as diag(factors) y: one small gemm. */
static vp_gt *drop_path(swin_build *c, vp_gt *y, float p)
{
    if (!y || !(p > 0.0f))
        return y;
    vp_graph *g = c->g;
    int64_t B = c->batch, ND = H->nelem(y) / B;
    char name[64];
    snprintf(name, sizeof name, "swin.drop_path.eye.%lld", (long long)B);
    vp_gt *eye = H->find(g, name);
    if (!eye) {
        float e[64 * 64] = {0};
        if (B > 64) {
            H->error(VP_ERR_INVALID, "swin: stochastic depth takes at most 64 images per batch");
            return NULL;
        }
        for (int64_t i = 0; i < B; i++)
            e[i * B + i] = 1.0f;
        eye = H->constant(g, name, 2, (int64_t[]){B, B}, e);
    }
    vp_gt *flat = H->reshape(g, eye, 1, (int64_t[]){B * B});
    vp_gt *keep = H->dropout(g, flat, p);
    if (!keep || keep == flat) /* evaluation: dropout is the identity */
        return keep ? y : NULL;
    /* dropout of eye's entries: off-diagonal zeros stay zero, so it is
     * diag(factors) with each factor drawn once */
    vp_gt *d = H->reshape(g, keep, 2, (int64_t[]){B, B});
    vp_gt *r = H->gemm(g, d, false, H->reshape(g, y, 2, (int64_t[]){B, ND}), false, NULL);
    return H->reshape(g, r, H->ndim(y), H->shape(y));
}

/* SwinLayer (detectron2's SwinTransformerBlock) j of stage i. x: (B,
 * Hs*Ws, D) -> (B, Hs*Ws, D). */
static vp_gt *block(swin_build *c, int i, int j, vp_gt *x, int64_t Hs, int64_t Ws, vp_gt *mask)
{
    const swin *m = c->m;
    const swin_names *nm = c->nm;
    vp_graph *g = c->g;
    int64_t B = c->batch, D = swin_dim(m, i), w = m->window, s = j % 2 ? w / 2 : 0;
    float rate = block_drop_rate(m, i, j);
    char p[64], n[SWIN_NAME_LEN];
    snprintf(p, sizeof p, nm->block, i, j);
    snprintf(n, sizeof n, "%s.%s", p, nm->norm1);
    vp_gt *t = H->reshape(g, norm(c, n, x, D, m->eps), 4, (int64_t[]){B, Hs, Ws, D});
    t = swin_window_in(c, t, w, s);                                  /* (Bw, N, D) */
    t = attention(c, p, t, D, m->heads[i], s ? mask : NULL);
    t = swin_window_out(c, t, Hs, Ws, w, s);                         /* (B, Hs, Ws, D) */
    x = H->add(g, x, drop_path(c, H->reshape(g, t, 3, (int64_t[]){B, Hs * Ws, D}), rate));
    snprintf(n, sizeof n, "%s.%s", p, nm->norm2);
    t = norm(c, n, x, D, m->eps);
    vp_gt *in = t;
    snprintf(n, sizeof n, "%s.%s", p, nm->fc1);
    /* detectron2's Mlp drops after the activation too (HF's does not: 0) */
    t = H->dropout(g, H->gelu(g, linear(c, n, t, m->mlp[i], true)), m->mlp_drop);
    snprintf(n, sizeof n, "%s.%s", p, nm->fc2);
    t = H->dropout(g, linear(c, n, t, D, true), m->hidden_drop);
    snprintf(n, sizeof n, "%s%s.%s", c->pfx, p, nm->ffn);
    t = H->site_output_in(c->b, n, VP_SITE_FFN_OUT, in, t);
    /* HF's SwinLayer has no stochastic depth on the MLP branch; detectron2's does */
    return H->add(g, x, m->drop_path_mlp ? drop_path(c, t, rate) : t);
}

/* SwinPatchMerging after stage i. x: (B, Hs*Ws, D) -> (B, ceil(Hs/2)*ceil(Ws/2), 2D). */
static vp_gt *merge(swin_build *c, int i, vp_gt *x, int64_t Hs, int64_t Ws)
{
    vp_graph *g = c->g;
    int64_t B = c->batch, D = swin_dim(c->m, i);
    char n[SWIN_NAME_LEN];
    x = swin_merge_gather(c, H->reshape(g, x, 4, (int64_t[]){B, Hs, Ws, D}));
    x = H->reshape(g, x, 3, (int64_t[]){B, ((Hs + 1) / 2) * ((Ws + 1) / 2), 4 * D});
    snprintf(n, sizeof n, c->nm->merge_norm, i);
    x = norm(c, n, x, 4 * D, SWIN_TORCH_LN_EPS);
    snprintf(n, sizeof n, c->nm->merge_red, i);
    return linear(c, n, x, 2 * D, false);
}

/* Name t an output of the model; hidden: only with output_hidden_states. */
static vp_gt *output(swin_build *c, const char *fmt, int i, vp_gt *t, bool hidden)
{
    if (swin_failed(c) || (hidden && !c->m->hidden_states))
        return t;
    char name[64];
    snprintf(name, sizeof name, fmt, i);
    return H->output(c->b, name, t);
}

static vp_status build_all(swin_build *c, vp_gt *image, vp_features *out)
{
    const swin *m = c->m;
    vp_graph *g = c->g;
    int64_t B = c->batch, w = m->window;
    int64_t Hs = (m->image[0] + m->patch - 1) / m->patch;
    int64_t Ws = (m->image[1] + m->patch - 1) / m->patch;
    uint32_t k = 0; /* feature levels so far */
    c->rel_index = swin_rel_index(c, w);
    vp_gt *x = output(c, "backbone.hidden_states.%d", 0, embeddings(c, image, Hs, Ws), true);
    for (int i = 0; i < m->n_stages && !swin_failed(c); i++) {
        int64_t D = swin_dim(m, i), Hp = (Hs + w - 1) / w * w, Wp = (Ws + w - 1) / w * w;
        /* One mask for the stage's shifted blocks (their shift is w / 2). */
        vp_gt *mask = m->depths[i] > 1 && w / 2 > 0
                          ? swin_shift_mask(c, i, Hp, Wp, w, w / 2, m->heads[i]) : NULL;
        for (int j = 0; j < m->depths[i] && !swin_failed(c); j++)
            x = block(c, i, j, x, Hs, Ws, mask);
        /* HF's hidden_states[i + 1]: the stage before downsampling. */
        x = output(c, "backbone.hidden_states.%d", i + 1, x, true);
        char n[SWIN_NAME_LEN];
        snprintf(n, sizeof n, c->nm->stage_norm, i + c->nm->stage_norm_base);
        if (m->out_stages >> i & 1u) {
            vp_gt *f = H->reshape(g, norm(c, n, x, D, SWIN_TORCH_LN_EPS), 4,
                                  (int64_t[]){B, Hs, Ws, D});
            out->map[k] = output(c, "backbone.features.%d", (int)k, f, false);
            out->stride[k++] = (int32_t)(m->patch << i);
            vp_gt *nchw = m->m2f_names || m->d2 ? H->permute(g, f, (int[]){0, 3, 1, 2}) : NULL;
            if (m->m2f_names) /* Mask2Former's encoder_hidden_states: NCHW */
                output(c, "encoder_hidden_states.%d", i, nchw, false);
            if (m->d2) /* D2SwinTransformer's outputs res2 .. res5: NCHW */
                output(c, "backbone.res%d", i + 2, nchw, false);
        } else {
            /* Not in OUT_FEATURES: D2SwinTransformer still has the norm
             * (its out_indices are every stage), unused; frozen by default,
             * as no gradient reaches it. */
            char wn[SWIN_NAME_LEN + 8], bn[SWIN_NAME_LEN + 8];
            snprintf(wn, sizeof wn, "%s.weight", n);
            snprintf(bn, sizeof bn, "%s.bias", n);
            param_ex(c, wn, 1, &D, vp_init_ones(), false);
            param_ex(c, bn, 1, &D, vp_init_zeros(), false);
        }
        if (i + 1 < m->n_stages) {
            x = merge(c, i, x, Hs, Ws);
            Hs = (Hs + 1) / 2;
            Ws = (Ws + 1) / 2;
        }
    }
    out->n = k;
    if (!swin_failed(c) && c->w)
        c->st = check_unused(c);
    return c->st ? c->st : H->graph_status(g);
}

vp_status swin_build_fn(void *self, vp_build *b, vp_gt *image, vp_features *out)
{
    const swin *m = self;
    const int64_t *is = H->shape(image);
    if (H->ndim(image) != 4 || is[1] != m->channels || is[2] != m->image[0] ||
        is[3] != m->image[1])
        return H->error(VP_ERR_SHAPE, "swin: the image must be (B, %lld, %lld, %lld)",
                        (long long)m->channels, (long long)m->image[0], (long long)m->image[1]);
    swin_build c = {.m = m, .nm = m->d2 ? &d2_names : &hf_names, .b = b, .g = H->graph(b),
                    .batch = is[0], .fpfx = "", .pfx = m->m2f_names ? M2F_PREFIX : "backbone."};
    vp_status st = m->weights ? open_weights(&c) : VP_OK;
    if (!st)
        st = build_all(&c, image, out);
    free(c.used);
    return st;
}
