/*
 * Mask2Former's transformer decoder (MultiScaleMaskedTransformerDecoder):
 * Q learned queries attend to the pixel decoder's levels in turn, coarsest
 * first, each layer masked cross-attention, then self-attention, then an
 * FFN, all post-norm; class and mask predictions before the first layer
 * and after every layer (deep supervision), each layer's cross-attention
 * masked by the previous prediction (sigmoid < 0.5; a query that would see
 * nothing sees everything).
 *
 * Names follow Detectron2's module: head.predictor.query_feat, .query_embed,
 * .level_embed, .transformer_cross_attention_layers.<i>.multihead_attn.
 * {q_proj,k_proj,v_proj,out_proj} and .norm, .transformer_self_attention_
 * layers.<i>.self_attn.{...}, .transformer_ffn_layers.<i>.{linear1,linear2,
 * norm}, .decoder_norm, .class_embed, .mask_embed.layers.<0..2>. PyTorch's
 * fused in_proj of nn.MultiheadAttention is three linears here, so LoRA can
 * target q and v apart. Every linear of the layers is a site; so are each
 * cross- and self-attention output (before the residual) and each FFN
 * output. The prediction heads, shared by all layers, are not (see
 * make_heads).
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "m2f.h"

#define H m2f_H
/* HF's transformer module */
#define TM "model.transformer_module"
/* detectron2's MultiScaleMaskedTransformerDecoder */
#define D2P "sem_seg_head.predictor"

static vp_gt *norm(vp_build *b, const char *path, vp_gt *x, int64_t d)
{
    char wn[224], bn[224];
    snprintf(wn, sizeof wn, "%s.weight", path);
    snprintf(bn, sizeof bn, "%s.bias", path);
    vp_init one = vp_init_ones(), zero = vp_init_zeros();
    return H->layernorm(H->graph(b), x, H->param(b, wn, 1, &d, &one, true),
                        H->param(b, bn, 1, &d, &zero, true), 1e-5f);
}

/* Mask2Former resets every matrix of its attention layers to Xavier. */
static vp_gt *xlinear(vp_build *b, const char *path, vp_gt *x, int64_t out)
{
    vp_init w = vp_init_xavier_uniform(1.0f), z = vp_init_zeros();
    return H->site_linear(b, path, x, out, true, &w, &z);
}

/* HF's cross-attention is a plain nn.MultiheadAttention: its input
 * projections are one packed parameter, in_proj_weight (3d, d) and
 * in_proj_bias (3d), rows q, k, v; only out_proj is a linear site. */
static vp_gt *mha_packed(const m2f_cfg *c, vp_build *b, const char *path, vp_gt *q, vp_gt *k,
                         vp_gt *v, vp_gt *mask)
{
    vp_graph *g = H->graph(b);
    char p[224];
    int64_t d = c->hidden, d3 = 3 * d;
    vp_init w = vp_init_xavier_uniform(1.0f), z = vp_init_zeros();
    snprintf(p, sizeof p, "%s.in_proj_weight", path);
    vp_gt *iw = H->param(b, p, 2, (int64_t[]){d3, d}, &w, true);
    snprintf(p, sizeof p, "%s.in_proj_bias", path);
    vp_gt *ib = H->param(b, p, 1, &d3, &z, true);
    q = H->linear(g, q, H->slice(g, iw, 0, 0, d), H->slice(g, ib, 0, 0, d));
    k = H->linear(g, k, H->slice(g, iw, 0, d, d), H->slice(g, ib, 0, d, d));
    v = H->linear(g, v, H->slice(g, iw, 0, 2 * d, d), H->slice(g, ib, 0, 2 * d, d));
    vp_gt *o = H->attention(g, q, k, v, mask, (int)c->heads);
    snprintf(p, sizeof p, "%s.out_proj", path);
    return xlinear(b, p, o, d);
}

/* nn.MultiheadAttention as three input projections, attention and the
 * output projection. q: (B, Nq, d), k and v: (B, Nk, d) -> (B, Nq, d). */
static vp_gt *mha(const m2f_cfg *c, vp_build *b, const char *path, vp_gt *q, vp_gt *k, vp_gt *v,
                  vp_gt *mask)
{
    char p[224];
    int64_t d = c->hidden;
    snprintf(p, sizeof p, "%s.q_proj", path);
    q = xlinear(b, p, q, d);
    snprintf(p, sizeof p, "%s.k_proj", path);
    k = xlinear(b, p, k, d);
    snprintf(p, sizeof p, "%s.v_proj", path);
    v = xlinear(b, p, v, d);
    vp_gt *o = H->attention(H->graph(b), q, k, v, mask, (int)c->heads);
    snprintf(p, sizeof p, "%s.out_proj", path);
    return xlinear(b, p, o, d);
}

/* The prediction heads, shared by every layer's prediction: so they are
 * parameters used through plain linear ops, not sites (a PEFT method at a
 * site would adapt one of the 10 uses only); train them with
 * train.trainable, as the study did. */
typedef struct heads {
    vp_gt *nw, *nb;        /* decoder_norm */
    vp_gt *cw, *cb;        /* class_embed: d -> C + 1 */
    vp_gt *mw[3], *mb[3];  /* mask_embed: d -> d -> d -> mask_dim */
} heads;

/* A linear layer's two parameters, initialized as nn.Linear. */
static void linear_params(vp_build *b, const char *path, int64_t in, int64_t out, vp_gt **w,
                          vp_gt **bias)
{
    char n[160];
    vp_init wi = vp_init_kaiming_uniform(2.23606798f);
    vp_init bi = {VP_INIT_LINEAR_BIAS, (float)in, 0.0f, NULL};
    snprintf(n, sizeof n, "%s.weight", path);
    *w = H->param(b, n, 2, (int64_t[]){out, in}, &wi, true);
    snprintf(n, sizeof n, "%s.bias", path);
    *bias = H->param(b, n, 1, &out, &bi, true);
}

static void make_heads(const m2f_cfg *c, vp_build *b, heads *h)
{
    int64_t d = c->hidden;
    vp_init one = vp_init_ones(), zero = vp_init_zeros();
    const char *norm = c->d2 ? D2P ".decoder_norm"
                       : c->hf ? TM ".decoder.layernorm" : "head.predictor.decoder_norm";
    char n[160];
    snprintf(n, sizeof n, "%s.weight", norm);
    h->nw = H->param(b, n, 1, &d, &one, true);
    snprintf(n, sizeof n, "%s.bias", norm);
    h->nb = H->param(b, n, 1, &d, &zero, true);
    linear_params(b, c->d2 ? D2P ".class_embed" : c->hf ? "class_predictor"
                                                        : "head.predictor.class_embed",
                  d, c->classes + 1,
                  &h->cw, &h->cb);
    for (int i = 0; i < 3; i++) {
        if (c->d2)
            snprintf(n, sizeof n, D2P ".mask_embed.layers.%d", i);
        else if (c->hf)
            snprintf(n, sizeof n, TM ".decoder.mask_predictor.mask_embedder.%d.0", i);
        else
            snprintf(n, sizeof n, "head.predictor.mask_embed.layers.%d", i);
        linear_params(b, n, d, i == 2 ? c->mask_dim : d, &h->mw[i], &h->mb[i]);
    }
}

/* Class logits and mask logits from the queries' state x (B, Q, d);
 * mf: the mask features (B, Hm * Wm, mask_dim). */
static m2f_pred predict(vp_build *b, const heads *h, vp_gt *x, vp_gt *mf)
{
    vp_graph *g = H->graph(b);
    vp_gt *y = H->layernorm(g, x, h->nw, h->nb, 1e-5f);
    m2f_pred p;
    p.logits = H->linear(g, y, h->cw, h->cb);
    vp_gt *e = H->relu(g, H->linear(g, y, h->mw[0], h->mb[0]));
    e = H->relu(g, H->linear(g, e, h->mw[1], h->mb[1]));
    e = H->linear(g, e, h->mw[2], h->mb[2]);
    p.masks = H->gemm(g, e, false, mf, true, NULL); /* (B, Q, Hm * Wm) */
    return p;
}

/* The attention mask for a level of h x w from mask logits (B, Q, Hm *
 * Wm): resized bilinearly (channels-last, so through a permute), then
 * -inf where sigmoid < 0.5, one mask per image for every head. */
static vp_gt *attn_mask(vp_build *b, vp_gt *masks, int64_t hm, int64_t wm, int64_t h, int64_t w)
{
    vp_graph *g = H->graph(b);
    if (!masks) /* an earlier op failed: the graph holds its error */
        return NULL;
    const int64_t *s = H->shape(masks);
    int64_t B = s[0], Q = s[1];
    static const int to_last[4] = {0, 2, 3, 1}, to_first[4] = {0, 3, 1, 2};
    vp_gt *m = H->permute(g, H->reshape(g, masks, 4, (int64_t[]){B, Q, hm, wm}), to_last);
    if (h != hm || w != wm)
        m = H->resize_bilinear(g, m, h, w);
    m = H->reshape(g, H->permute(g, m, to_first), 4, (int64_t[]){B, 1, Q, h * w});
    return H->logit_mask(g, m);
}

vp_status m2f_decoder(const m2f_cfg *c, vp_build *b, const m2f_pixel_out *px, m2f_decoder_out *out)
{
    vp_graph *g = H->graph(b);
    int64_t d = c->hidden, Q = c->queries, L = px->n;
    const int64_t *ms = H->shape(px->mask_features);
    int64_t B = ms[0], hm = ms[1], wm = ms[2];
    if (c->dec_layers + 1 > M2F_MAX_PREDS)
        return H->error(VP_ERR_INVALID, "mask2former: at most %d decoder layers",
                        M2F_MAX_PREDS - 1);
    vp_gt *mf = H->reshape(g, px->mask_features, 3, (int64_t[]){B, hm * wm, c->mask_dim});

    /* nn.Embedding's N(0, 1) for the queries and the level embeddings. */
    vp_init n01 = vp_init_normal(0.0f, 1.0f);
    vp_gt *qfeat = H->param(b, c->d2 ? D2P ".query_feat.weight"
                               : c->hf ? TM ".queries_features.weight"
                                       : "head.predictor.query_feat.weight",
                            2, (int64_t[]){Q, d}, &n01, true);
    vp_gt *qpos = H->param(b, c->d2 ? D2P ".query_embed.weight"
                              : c->hf ? TM ".queries_embedder.weight"
                                      : "head.predictor.query_embed.weight",
                           2, (int64_t[]){Q, d}, &n01, true);
    vp_gt *lvl = H->param(b, c->d2 ? D2P ".level_embed.weight"
                             : c->hf ? TM ".level_embed.weight"
                                     : "head.predictor.level_embed.weight",
                          2, (int64_t[]){L, d}, &n01, true);

    /* The queries' state starts as query_feat for every image. */
    size_t nz = (size_t)(B * Q * d);
    float *zeros = calloc(nz, sizeof *zeros);
    if (!zeros)
        return H->error(VP_ERR_NOMEM, "mask2former: out of host memory");
    vp_gt *x = H->add(g, H->constant(g, "head.predictor.zeros", 3, (int64_t[]){B, Q, d}, zeros),
                      qfeat);
    free(zeros);

    /* Each level's keys: memory + level embedding (+ position for keys). */
    vp_gt *src[VP_MAX_LEVELS], *key[VP_MAX_LEVELS];
    for (int64_t l = 0; l < L; l++) {
        vp_gt *e = H->reshape(g, H->slice(g, lvl, 0, l, 1), 1, &d);
        src[l] = H->add(g, px->memory[l], e);
        key[l] = H->add(g, src[l], px->pos[l]);
    }

    heads hd;
    make_heads(c, b, &hd);
    out->n = 0;
    out->pred[out->n++] = predict(b, &hd, x, mf);
    char p[96];
    for (int64_t i = 0; i < c->dec_layers; i++) {
        int64_t l = i % L;
        vp_gt *mask = attn_mask(b, out->pred[out->n - 1].masks, hm, wm, px->hw[l][0],
                                px->hw[l][1]);
        vp_gt *q = H->add(g, x, qpos);

        char m[160];
        if (c->d2) {
            /* the repository's forward_post layers: cross-attention, self-
             * attention (both nn.MultiheadAttention, packed in_proj), FFN */
            snprintf(p, sizeof p, D2P ".transformer_cross_attention_layers.%lld", (long long)i);
            snprintf(m, sizeof m, "%s.multihead_attn", p);
            vp_gt *a = mha_packed(c, b, m, q, key[l], src[l], mask);
            a = H->site_output_in(b, m, VP_SITE_ATTN_OUT, x, a);
            snprintf(m, sizeof m, "%s.norm", p);
            x = norm(b, m, H->add(g, x, a), d);
            snprintf(p, sizeof p, D2P ".transformer_self_attention_layers.%lld", (long long)i);
            snprintf(m, sizeof m, "%s.self_attn", p);
            q = H->add(g, x, qpos);
            a = mha_packed(c, b, m, q, q, x, NULL);
            a = H->site_output_in(b, m, VP_SITE_ATTN_OUT, x, a);
            snprintf(m, sizeof m, "%s.norm", p);
            x = norm(b, m, H->add(g, x, a), d);
            snprintf(p, sizeof p, D2P ".transformer_ffn_layers.%lld", (long long)i);
            snprintf(m, sizeof m, "%s.linear1", p);
            vp_gt *f = H->relu(g, xlinear(b, m, x, c->dec_ffn));
            snprintf(m, sizeof m, "%s.linear2", p);
            f = xlinear(b, m, f, d);
            f = H->site_output_in(b, p, VP_SITE_FFN_OUT, x, f);
            snprintf(m, sizeof m, "%s.norm", p);
            x = norm(b, m, H->add(g, x, f), d);
            out->pred[out->n++] = predict(b, &hd, x, mf);
            continue;
        }
        if (c->hf) {
            /* Mask2FormerMaskedAttentionDecoderLayer.forward_post */
            snprintf(p, sizeof p, TM ".decoder.layers.%lld", (long long)i);
            snprintf(m, sizeof m, "%s.cross_attn", p);
            vp_gt *a = mha_packed(c, b, m, q, key[l], src[l], mask);
            a = H->site_output_in(b, m, VP_SITE_ATTN_OUT, x, a);
            snprintf(m, sizeof m, "%s.cross_attn_layer_norm", p);
            x = norm(b, m, H->add(g, x, a), d);
            snprintf(m, sizeof m, "%s.self_attn", p);
            q = H->add(g, x, qpos);
            a = mha(c, b, m, q, q, x, NULL);
            a = H->site_output_in(b, m, VP_SITE_ATTN_OUT, x, a);
            snprintf(m, sizeof m, "%s.self_attn_layer_norm", p);
            x = norm(b, m, H->add(g, x, a), d);
            snprintf(m, sizeof m, "%s.fc1", p);
            vp_gt *f = H->relu(g, xlinear(b, m, x, c->dec_ffn));
            snprintf(m, sizeof m, "%s.fc2", p);
            f = xlinear(b, m, f, d);
            snprintf(m, sizeof m, "%s.ffn", p);
            f = H->site_output_in(b, m, VP_SITE_FFN_OUT, x, f);
            snprintf(m, sizeof m, "%s.final_layer_norm", p);
            x = norm(b, m, H->add(g, x, f), d);
            out->pred[out->n++] = predict(b, &hd, x, mf);
            continue;
        }
        snprintf(p, sizeof p, "head.predictor.transformer_cross_attention_layers.%lld",
                 (long long)i);
        snprintf(m, sizeof m, "%s.multihead_attn", p);
        vp_gt *a = mha(c, b, m, q, key[l], src[l], mask);
        a = H->site_output_in(b, p, VP_SITE_ATTN_OUT, x, a);
        snprintf(m, sizeof m, "%s.norm", p);
        x = norm(b, m, H->add(g, x, a), d);

        snprintf(p, sizeof p, "head.predictor.transformer_self_attention_layers.%lld", (long long)i);
        snprintf(m, sizeof m, "%s.self_attn", p);
        q = H->add(g, x, qpos);
        a = mha(c, b, m, q, q, x, NULL);
        a = H->site_output_in(b, p, VP_SITE_ATTN_OUT, x, a);
        snprintf(m, sizeof m, "%s.norm", p);
        x = norm(b, m, H->add(g, x, a), d);

        snprintf(p, sizeof p, "head.predictor.transformer_ffn_layers.%lld", (long long)i);
        snprintf(m, sizeof m, "%s.linear1", p);
        vp_gt *f = H->relu(g, xlinear(b, m, x, c->dec_ffn));
        snprintf(m, sizeof m, "%s.linear2", p);
        f = H->site_output_in(b, p, VP_SITE_FFN_OUT, x, xlinear(b, m, f, d));
        snprintf(m, sizeof m, "%s.norm", p);
        x = norm(b, m, H->add(g, x, f), d);

        out->pred[out->n++] = predict(b, &hd, x, mf);
    }
    return H->graph_status(g);
}
