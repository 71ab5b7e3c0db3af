/*
 * The mask2former head's pixel decoder: Mask2Former's
 * MSDeformAttnPixelDecoder (Detectron2), built through the host table.
 *
 *   backbone levels (finest first) -> the cfg->levels coarsest, reordered
 *   coarsest first -> per level a 1x1 projection (a linear site) and a
 *   layernorm -> flattened and concatenated to src (B, S, d), S = sum of
 *   H_l W_l; pos = sine encoding + level embedding (S, d) -> enc_layers
 *   Deformable DETR encoder layers (post-norm): multi-scale deformable
 *   self-attention, each position sampling every level around its own
 *   centre; FFN -> split back per level (memory) -> mask features, a 1x1
 *   projection of the finest level's memory.
 *
 * Level order: level 0 is the coarsest everywhere here (input_proj.0,
 * level_embed row 0, the msdeform level 0, memory[0]), as in Mask2Former,
 * whose pixel decoder walks transformer_in_features[::-1] (res5, res4,
 * res3) and whose decoder visits the levels in that order.
 *
 * Differences from Mask2Former, on purpose:
 *   - the input projections are normalized by a layernorm over channels
 *     (head.pixel_decoder.input_proj.<l>.norm) instead of GroupNorm(32, d):
 *     the graph has no group norm, and a per-position norm needs no
 *     statistics over the map;
 *   - no FPN from the stride-4 level: mask features are a 1x1 projection of
 *     the finest encoder level (stride 8 for res3-res5), the one Mask2Former
 *     applies to its FPN output;
 *   - no dropout, no padding masks (every image fills its maps, so the
 *     valid ratios are 1).
 *
 * Initialization as Mask2Former's: input projections Xavier-uniform
 * weights and zero biases; the encoder's matrices Xavier-uniform (its
 * _reset_parameters), the FFN biases nn.Linear's default; inside each
 * deformable attention MSDeformAttn._reset_parameters (sampling-offset
 * weight 0 and bias a per-head direction grid scaled by point index,
 * attention weights 0, value and output projections Xavier-uniform with
 * zero bias); level_embed N(0, 1); mask_features Detectron2's
 * c2_xavier_fill (kaiming_uniform with a = 1, zero bias); norms 1 and 0.
 *
 * Sites: every projection is a linear site: input_proj.<l>,
 * encoder.layers.<i>.self_attn.{value_proj,sampling_offsets,
 * attention_weights,output_proj} (inside the VP_SITE_DEFORM module
 * encoder.layers.<i>.self_attn), encoder.layers.<i>.linear1, .linear2,
 * mask_features; after-attention sites encoder.layers.<i>.self_attn
 * (VP_SITE_ATTN_OUT) and after-FFN sites encoder.layers.<i>.ffn
 * (VP_SITE_FFN_OUT); all under "head.pixel_decoder.".
 */
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "m2f.h"

/* The pixel decoder's module names: vpeft's own (under "head."), Hugging
 * Face's (model.hf), or the detectron2 repositories' (Mask2Former's
 * MSDeformAttnPixelDecoder and Mask DINO's MaskDINOEncoder name their
 * modules alike, under "sem_seg_head."). HF and detectron2 share the
 * architecture: GroupNorm(32) input projections and the stride-4 FPN
 * level; only vpeft's own variant differs (see above). */
typedef struct px_names {
    const char *root;                  /* the module path */
    const char *in_proj, *level_embed; /* under root */
    const char *enc;                   /* the encoder, under root */
    const char *norm1, *fc1, *fc2, *norm2; /* an encoder layer's, under enc.layers.<i> */
    const char *adapter, *adapter_norm, *layer, *layer_norm, *mask; /* FPN, under root */
} px_names;

static const px_names px_vpeft = {"head.pixel_decoder", "input_proj", "level_embed", "encoder",
                                  "norm1", "linear1", "linear2", "norm2", NULL, NULL, NULL, NULL,
                                  "mask_features"};
static const px_names px_hf = {"model.pixel_level_module.decoder", "input_projections",
                               "level_embed", "encoder", "self_attn_layer_norm", "fc1", "fc2",
                               "final_layer_norm", "adapter_1.0", "adapter_1.1", "layer_1.0",
                               "layer_1.1", "mask_projection"};
static const px_names px_d2 = {"sem_seg_head.pixel_decoder", "input_proj",
                               "transformer.level_embed", "transformer.encoder", "norm1",
                               "linear1", "linear2", "norm2", "adapter_1", "adapter_1.norm",
                               "layer_1", "layer_1.norm", "mask_features"};

static const px_names *px_names_of(const m2f_cfg *c)
{
    return c->d2 ? &px_d2 : c->hf ? &px_hf : &px_vpeft;
}

/* Constants' names (not parameters: any unique name). */
#define PX_D2 "head.pixel_decoder"
/* Name buffers; a module path is at most PX_MOD long, a name under it fits. */
#define PX_MOD 128
#define PX_NAME 192

/* Deformable DETR and Mask2Former use nn.LayerNorm's default. */
#define PX_LN_EPS 1e-5f

static const double px_pi = 3.14159265358979323846;

void m2f_sine_pos(int64_t h, int64_t w, int64_t d, float *data)
{
    /* DETR's PositionEmbeddingSine with normalize=True: the cumulative sum
     * of an unpadded mask at row r is r + 1, normalized by its last value
     * (h) and scaled to (0, 2 pi]. Channel i of each half divides by
     * 10000^(2 floor(i / 2) / npf); even channels take the sine, odd the
     * cosine (DETR's stack of sin(0::2) and cos(1::2), flattened). */
    const int64_t npf = d / 2;
    const double scale = 2.0 * px_pi, eps = 1e-6;
    for (int64_t r = 0; r < h; r++)
        for (int64_t c = 0; c < w; c++) {
            double e[2] = {(double)(r + 1) / ((double)h + eps) * scale,
                           (double)(c + 1) / ((double)w + eps) * scale};
            float *o = data + (r * w + c) * d;
            for (int a = 0; a < 2; a++) /* y first, then x */
                for (int64_t i = 0; i < npf; i++) {
                    double t = e[a] / pow(10000.0, (double)(2 * (i / 2)) / (double)npf);
                    o[a * npf + i] = (float)((i & 1) ? cos(t) : sin(t));
                }
        }
}

/* nn.LayerNorm(C) as <name>.weight and <name>.bias. x: (..., C) */
static vp_gt *px_norm(vp_build *b, const char *name, vp_gt *x, int64_t C)
{
    const vp_host_api *H = m2f_H;
    char wn[PX_NAME], bn[PX_NAME];
    snprintf(wn, sizeof wn, "%s.weight", name);
    snprintf(bn, sizeof bn, "%s.bias", name);
    vp_init one = vp_init_ones(), zero = vp_init_zeros();
    vp_gt *w = H->param(b, wn, 1, &C, &one, true);
    vp_gt *bias = H->param(b, bn, 1, &C, &zero, true);
    return H->layernorm(H->graph(b), x, w, bias, PX_LN_EPS);
}

/* nn.GroupNorm(G, C) as <name>.weight and .bias on a channels-last map x
 * (B, H, W, C): each image's group of C / G channels over the whole map
 * normalized together (biased variance, eps 1e-5), through a permute that
 * makes every group one row of a layernorm, then the per-channel affine. */
static vp_gt *px_groupnorm(vp_build *b, const char *name, vp_gt *x, int64_t G)
{
    const vp_host_api *H = m2f_H;
    vp_graph *g = H->graph(b);
    if (!x)
        return NULL;
    const int64_t *s = H->shape(x);
    int64_t B = s[0], hw = s[1] * s[2], C = s[3], cg = C / G;
    static const int swap[4] = {0, 2, 1, 3};
    vp_gt *v = H->permute(g, H->reshape(g, x, 4, (int64_t[]){B, hw, G, cg}), swap);
    v = H->layernorm(g, H->reshape(g, v, 3, (int64_t[]){B, G, hw * cg}), NULL, NULL, PX_LN_EPS);
    v = H->permute(g, H->reshape(g, v, 4, (int64_t[]){B, G, hw, cg}), swap);
    v = H->reshape(g, v, 4, (int64_t[]){B, s[1], s[2], C});
    char wn[PX_NAME + 16], bn[PX_NAME + 16];
    snprintf(wn, sizeof wn, "%s.weight", name);
    snprintf(bn, sizeof bn, "%s.bias", name);
    vp_init one = vp_init_ones(), zero = vp_init_zeros();
    return H->add(g, H->mul(g, v, H->param(b, wn, 1, &C, &one, true)),
                  H->param(b, bn, 1, &C, &zero, true));
}

/* nn.Conv2d(C, out, 1) on a channels-last map: a linear layer whose weight
 * keeps PyTorch's (out, C, 1, 1) shape (HF's checkpoints hold it so). Not a
 * PEFT site. x: (B, H, W, C) -> (B, H, W, out) */
static vp_gt *px_conv1x1(vp_build *b, const char *name, vp_gt *x, int64_t out, bool bias,
                         vp_init wi)
{
    const vp_host_api *H = m2f_H;
    vp_graph *g = H->graph(b);
    if (!x)
        return NULL;
    int64_t C = H->shape(x)[3];
    char n[PX_NAME + 16];
    vp_init zero = vp_init_zeros();
    snprintf(n, sizeof n, "%s.weight", name);
    vp_gt *w = H->param(b, n, 4, (int64_t[]){out, C, 1, 1}, &wi, true);
    vp_gt *bb = NULL;
    if (bias) {
        snprintf(n, sizeof n, "%s.bias", name);
        bb = H->param(b, n, 1, &out, &zero, true);
    }
    return H->linear(g, x, H->reshape(g, w, 2, (int64_t[]){out, C}), bb);
}

/* nn.Conv2d(C, out, 3, padding=1, bias=False) on a channels-last map: the
 * sum over the nine kernel taps of the zero-padded map's shifted window
 * times that tap's (out, C) slice of the weight (out, C, 3, 3). Nine gemms
 * rather than one over the windows side by side: that im2col map is nine
 * times the input (150 MiB at 384 px and batch 2, over what lavapipe lets
 * one binding span). x: (B, H, W, C) -> (B, H, W, out) */
static vp_gt *px_conv3x3(vp_build *b, const char *name, vp_gt *x, int64_t out, vp_init wi)
{
    const vp_host_api *H = m2f_H;
    vp_graph *g = H->graph(b);
    if (!x)
        return NULL;
    const int64_t *s = H->shape(x);
    int64_t B = s[0], h = s[1], w = s[2], C = s[3];
    size_t nz = (size_t)(B * (h + 2) * C);
    float *zeros = calloc(nz, sizeof *zeros);
    if (!zeros) {
        H->error(VP_ERR_NOMEM, "mask2former: out of host memory");
        return NULL;
    }
    char n[PX_NAME + 16];
    snprintf(n, sizeof n, "%s.pad_rows", name);
    vp_gt *zr = H->constant(g, n, 4, (int64_t[]){B, 1, w, C}, zeros);
    snprintf(n, sizeof n, "%s.pad_cols", name);
    vp_gt *zc = H->constant(g, n, 4, (int64_t[]){B, h + 2, 1, C}, zeros);
    free(zeros);
    vp_gt *p = H->concat(g, (vp_gt *[]){zr, x, zr}, 3, 1);
    p = H->concat(g, (vp_gt *[]){zc, p, zc}, 3, 2);          /* (B, h + 2, w + 2, C) */
    snprintf(n, sizeof n, "%s.weight", name);
    vp_gt *wt = H->param(b, n, 4, (int64_t[]){out, C, 3, 3}, &wi, true);
    static const int taps_first[3] = {2, 0, 1};
    wt = H->permute(g, H->reshape(g, wt, 3, (int64_t[]){out, C, 9}), taps_first); /* (9, out, C) */
    vp_gt *y = NULL;
    for (int ky = 0; ky < 3; ky++) {
        vp_gt *r = H->slice(g, p, 1, ky, h);
        for (int kx = 0; kx < 3; kx++) {
            vp_gt *wk = H->reshape(g, H->slice(g, wt, 0, ky * 3 + kx, 1), 2,
                                   (int64_t[]){out, C});
            vp_gt *t = H->linear(g, H->slice(g, r, 2, kx, w), wk, NULL);
            y = y ? H->add(g, y, t) : t;
        }
    }
    return y;
}

/* nn.Conv2d(C, out, 3, stride=2, padding=1) with its bias on a
 * channels-last map: the stride-1 convolution's even rows and columns (one
 * row map), ceil(H / 2) x ceil(W / 2). x: (B, H, W, C) -> (B, H2, W2, out) */
static vp_gt *px_conv3x3_s2(vp_build *b, const char *name, vp_gt *x, int64_t out, vp_init wi)
{
    const vp_host_api *H = m2f_H;
    vp_graph *g = H->graph(b);
    if (!x)
        return NULL;
    if (H->abi_minor < 2) {
        H->error(VP_ERR_UNSUPPORTED, "mask2former: extra encoder levels need a vpeft host of "
                 "ABI 1.2 or later (this one is 1.%u)", H->abi_minor);
        return NULL;
    }
    const int64_t *s = H->shape(x);
    int64_t B = s[0], h = s[1], w = s[2], h2 = (h + 1) / 2, w2 = (w + 1) / 2;
    vp_gt *y = px_conv3x3(b, name, x, out, wi);
    char n[PX_NAME + 16];
    snprintf(n, sizeof n, "%s.bias", name);
    vp_init zero = vp_init_zeros();
    y = H->add(g, y, H->param(b, n, 1, &out, &zero, true));
    int32_t *idx = malloc((size_t)(B * h2 * w2) * sizeof *idx);
    if (!idx) {
        H->error(VP_ERR_NOMEM, "mask2former: out of host memory");
        return NULL;
    }
    for (int64_t i = 0; i < B * h2; i++)
        for (int64_t j = 0; j < w2; j++)
            idx[i * w2 + j] = (int32_t)(((i / h2) * h + 2 * (i % h2)) * w + 2 * j);
    y = H->row_map(g, y, idx, 4, (int64_t[]){B, h2, w2, out});
    free(idx);
    return y;
}

/* A channels-last map (B, H, W, C) as PyTorch's NCHW, for outputs under
 * HF's names. */
static vp_gt *px_nchw(vp_graph *g, vp_gt *x)
{
    static const int to_nchw[4] = {0, 3, 1, 2};
    return m2f_H->permute(g, x, to_nchw);
}

/* Which cfg values the pixel decoder cannot build, as a message. */
static vp_status px_check(const m2f_cfg *c, const vp_features *f)
{
    const vp_host_api *H = m2f_H;
    if (!f || f->n < 1 || f->n > VP_MAX_LEVELS)
        return H->error(VP_ERR_INVALID, "mask2former: the backbone gave %u feature levels",
                        f ? f->n : 0u);
    if (c->levels < 1 || c->levels > (int64_t)f->n || c->levels > VP_MSDEFORM_MAX_LEVELS)
        return H->error(VP_ERR_INVALID,
                        "mask2former: levels is %lld, but the backbone gives %u levels (and "
                        "deformable attention takes at most %d)",
                        (long long)c->levels, f->n, VP_MSDEFORM_MAX_LEVELS);
    uint32_t lv = (uint32_t)c->levels;
    if (c->d2 && (c->levels + c->extra_levels > VP_MSDEFORM_MAX_LEVELS ||
                  c->extra_levels > VP_MAX_LEVELS || (int64_t)f->n > c->levels + 1))
        return H->error(VP_ERR_INVALID,
                        "mask2former: the encoder's %lld levels and %lld extra ones (at most %d in "
                        "all) must be the backbone's coarsest %u or all but its finest (the FPN "
                        "level)", (long long)c->levels, (long long)c->extra_levels,
                        VP_MSDEFORM_MAX_LEVELS, f->n);
    if (c->hf && ((int64_t)f->n < c->levels + 1 ||
                  f->stride[f->n - lv] != 2 * f->stride[f->n - 1 - lv]))
        return H->error(VP_ERR_INVALID,
                        "mask2former: this pixel decoder needs %lld feature levels and, below "
                        "them, one of half their finest stride (the FPN level); the backbone "
                        "gives %u", (long long)c->levels, f->n);
    if (c->hidden < 2 || c->hidden % 2 || c->heads < 1 || c->hidden % c->heads)
        return H->error(VP_ERR_INVALID,
                        "mask2former: hidden (%lld) must be even and a multiple of heads (%lld)",
                        (long long)c->hidden, (long long)c->heads);
    if (c->points < 1 || c->enc_layers < 0 || c->enc_ffn < 1 || c->mask_dim < 1)
        return H->error(VP_ERR_INVALID,
                        "mask2former: points (%lld), enc_ffn (%lld) and mask_dim (%lld) must be "
                        "at least 1 and enc_layers (%lld) at least 0",
                        (long long)c->points, (long long)c->enc_ffn, (long long)c->mask_dim,
                        (long long)c->enc_layers);
    return VP_OK;
}

/* The constants every encoder layer shares: the reference points (S, NH,
 * L*P*2) - each position's own pixel centre (x, y) in [0, 1], repeated for
 * every head, sampled level and point (valid ratios 1) - and the offset
 * normalizer (L*P*2): 1 / W_l for x and 1 / H_l for y of the sampled level,
 * so an offset of 1 moves one pixel of the level it samples. */
static vp_status px_locations(vp_graph *g, const vp_msdeform_levels *lv, int64_t S, int64_t NH,
                              int64_t P, vp_gt **ref, vp_gt **inv_wh)
{
    const vp_host_api *H = m2f_H;
    const int64_t L = lv->n, LP2 = L * P * 2;
    float *r = malloc((size_t)(S * NH * LP2) * sizeof *r), *n = malloc((size_t)LP2 * sizeof *n);
    if (!r || !n) {
        free(r);
        free(n);
        return H->error(VP_ERR_NOMEM, "mask2former: out of host memory");
    }
    for (int64_t l = 0; l < L; l++) {
        int64_t hl = lv->shape[l][0], wl = lv->shape[l][1];
        for (int64_t p = 0; p < P; p++) {
            n[(l * P + p) * 2] = (float)(1.0 / (double)wl);
            n[(l * P + p) * 2 + 1] = (float)(1.0 / (double)hl);
        }
        for (int64_t t = 0; t < hl * wl; t++) {
            float x = (float)(((double)(t % wl) + 0.5) / (double)wl);
            float y = (float)(((double)(t / wl) + 0.5) / (double)hl);
            float *row = r + (lv->start[l] + t) * NH * LP2;
            for (int64_t j = 0; j < NH * LP2; j += 2)
                row[j] = x, row[j + 1] = y;
        }
    }
    *ref = H->constant(g, PX_D2 ".reference_points", 3, (int64_t[]){S, NH, LP2}, r);
    *inv_wh = H->constant(g, PX_D2 ".offset_normalizer", 1, &LP2, n);
    free(r);
    free(n);
    return H->graph_status(g);
}

/* MSDeformAttn's sampling-offset bias: head h points along the angle
 * 2 pi h / NH, scaled so its larger coordinate is 1, and point p of every
 * level goes p + 1 steps that way. (NH * L * P * 2) as (NH, L, P, 2). */
float *m2f_offset_grid(int64_t NH, int64_t L, int64_t P)
{
    float *grid = malloc((size_t)(NH * L * P * 2) * sizeof *grid);
    if (!grid)
        return NULL;
    for (int64_t h = 0; h < NH; h++) {
        double th = (double)h * (2.0 * px_pi / (double)NH), gx = cos(th), gy = sin(th);
        double m = fabs(gx) > fabs(gy) ? fabs(gx) : fabs(gy);
        for (int64_t l = 0; l < L; l++)
            for (int64_t p = 0; p < P; p++) {
                float *o = grid + ((h * L + l) * P + p) * 2;
                o[0] = (float)(gx / m * (double)(p + 1));
                o[1] = (float)(gy / m * (double)(p + 1));
            }
    }
    return grid;
}

/* One DeformableTransformerEncoderLayer (post-norm). src: (B, S, d), pos
 * (S, d) -> (B, S, d). */
static vp_gt *px_layer(const m2f_cfg *c, vp_build *b, int i, vp_gt *src, vp_gt *pos,
                       const vp_msdeform_levels *lv, vp_gt *ref, vp_gt *inv_wh,
                       const float *grid)
{
    const vp_host_api *H = m2f_H;
    vp_graph *g = H->graph(b);
    const int64_t d = c->hidden, NH = c->heads, L = lv->n, P = c->points;
    const int64_t B = H->shape(src)[0], S = H->shape(src)[1];
    vp_init xavier = vp_init_xavier_uniform(1.0f), zero = vp_init_zeros();
    vp_init offset_bias = vp_init_data(grid);
    const px_names *nm = px_names_of(c);
    char lay[PX_MOD], mod[PX_MOD + 16], name[PX_NAME];
    snprintf(lay, sizeof lay, "%s.%s.layers.%d", nm->root, nm->enc, i);
    snprintf(mod, sizeof mod, "%s.self_attn", lay);
    if (H->site_module(b, mod, VP_SITE_DEFORM))
        return NULL;

    /* The queries carry the positions; the values do not. */
    vp_gt *query = H->add(g, src, pos);
    snprintf(name, sizeof name, "%s.value_proj", mod);
    vp_gt *value = H->reshape(g, H->site_linear(b, name, src, d, true, &xavier, &zero), 4,
                              (int64_t[]){B, S, NH, d / NH});
    snprintf(name, sizeof name, "%s.sampling_offsets", mod);
    vp_gt *off = H->reshape(g, H->site_linear(b, name, query, NH * L * P * 2, true, &zero,
                                              &offset_bias),
                            4, (int64_t[]){B, S, NH, L * P * 2});
    vp_gt *loc = H->add(g, H->mul(g, off, inv_wh), ref);        /* (B, S, NH, L*P*2) */
    snprintf(name, sizeof name, "%s.attention_weights", mod);
    vp_gt *aw = H->site_linear(b, name, query, NH * L * P, true, &zero, &zero);
    vp_gt *attn = H->softmax(g, H->reshape(g, aw, 4, (int64_t[]){B, S, NH, L * P}));
    vp_gt *a = H->msdeform(g, value, lv, loc, attn);            /* (B, S, d) */
    snprintf(name, sizeof name, "%s.output_proj", mod);
    a = H->site_linear(b, name, a, d, true, &xavier, &zero);
    a = H->site_output_in(b, mod, VP_SITE_ATTN_OUT, src, a);
    snprintf(name, sizeof name, "%s.%s", lay, nm->norm1);
    src = px_norm(b, name, H->add(g, src, a), d);

    /* FFN; its biases keep nn.Linear's default (Mask2Former resets only
     * the matrices). */
    snprintf(name, sizeof name, "%s.%s", lay, nm->fc1);
    vp_gt *h = H->relu(g, H->site_linear(b, name, src, c->enc_ffn, true, &xavier, NULL));
    snprintf(name, sizeof name, "%s.%s", lay, nm->fc2);
    h = H->site_linear(b, name, h, d, true, &xavier, NULL);
    snprintf(name, sizeof name, "%s.ffn", lay);
    h = H->site_output_in(b, name, VP_SITE_FFN_OUT, src, h);
    snprintf(name, sizeof name, "%s.%s", lay, nm->norm2);
    return px_norm(b, name, H->add(g, src, h), d);
}

vp_status m2f_pixel_decoder(const m2f_cfg *c, vp_build *b, const vp_features *f,
                            m2f_pixel_out *out)
{
    const vp_host_api *H = m2f_H;
    vp_graph *g = H->graph(b);
    memset(out, 0, sizeof *out);
    vp_status st = px_check(c, f);
    if (st)
        return st;
    /* L backbone levels, E extra ones (detectron2's MaskDINOEncoder), NL in all */
    const int64_t L = c->levels, E = c->d2 ? c->extra_levels : 0, NL = L + E;
    const int64_t d = c->hidden, NH = c->heads, P = c->points;
    const px_names *nm = px_names_of(c);
    const bool fpn = c->hf || c->d2; /* GroupNorm projections and the stride-4 FPN level */
    vp_init xavier = vp_init_xavier_uniform(1.0f), zero = vp_init_zeros();
    /* Detectron2's c2_xavier_fill: kaiming_uniform(a = 1), i.e.
     * U(-sqrt(3 / fan_in), sqrt(3 / fan_in)), zero bias. */
    vp_init c2 = vp_init_kaiming_uniform(1.0f);
    /* HF's _init_weights sets the level embedding to normal(std=0). */
    vp_init unit = c->hf ? vp_init_zeros() : vp_init_normal(0.0f, 1.0f);
    char name[PX_NAME];
    snprintf(name, sizeof name, "%s.%s", nm->root, nm->level_embed);
    vp_gt *level_embed = H->param(b, name, 2, (int64_t[]){NL, d}, &unit, true);

    /* The encoder's levels in its order (coarsest first; detectron2's
     * "low2high" order: the backbone's finest first, then the extra ones),
     * each src_l (B, H_l W_l, d) with its query position (H_l W_l, d).
     * proj[k]: the input projection's index of level k (its module name). */
    vp_gt *srcs[VP_MAX_LEVELS], *qpos[VP_MAX_LEVELS], *maps[VP_MAX_LEVELS];
    int64_t proj[VP_MAX_LEVELS];
    vp_msdeform_levels lv = {.n = (int)NL};
    int64_t B = 0, S = 0;
    for (int64_t j = 0; j < L; j++) {
        /* backbone level j of the projections: coarsest first, or finest
         * first in low2high */
        int64_t k = c->low2high ? j : E + j;
        uint32_t fi = c->low2high ? f->n - (uint32_t)L + (uint32_t)j : f->n - 1 - (uint32_t)j;
        maps[k] = f->map[fi];
        proj[k] = j;
        if (!maps[k])
            return H->graph_status(g) ? H->graph_status(g)
                                      : H->error(VP_ERR_INVALID, "mask2former: feature level "
                                                 "%u is missing", fi);
    }
    for (int64_t l = 0; l < NL; l++) {
        if (c->low2high ? l >= L : l < E)
            continue; /* an extra level: made below */
        vp_gt *x = maps[l];
        const int64_t *s = H->shape(x);
        if (H->ndim(x) != 4 || (B && s[0] != B))
            return H->error(VP_ERR_SHAPE, "mask2former: feature map %s is not (B, H, W, C) with "
                            "the other levels' B", H->name(x));
        B = s[0];
        int64_t hl = s[1], wl = s[2];
        lv.shape[l][0] = hl, lv.shape[l][1] = wl;
        if (fpn) { /* Conv2d 1x1 + GroupNorm(32) */
            snprintf(name, sizeof name, "%s.%s.%lld.0", nm->root, nm->in_proj, (long long)proj[l]);
            vp_gt *y = px_conv1x1(b, name, x, d, true, xavier);
            snprintf(name, sizeof name, "%s.%s.%lld.1", nm->root, nm->in_proj, (long long)proj[l]);
            srcs[l] = px_groupnorm(b, name, y, 32);
        } else {
            snprintf(name, sizeof name, "%s.%s.%lld", nm->root, nm->in_proj, (long long)proj[l]);
            vp_gt *y = H->site_linear(b, name, x, d, true, &xavier, &zero); /* (B, H, W, d) */
            snprintf(name, sizeof name, "%s.%s.%lld.norm", nm->root, nm->in_proj,
                     (long long)proj[l]);
            srcs[l] = px_norm(b, name, y, d);
        }
    }
    /* MaskDINOEncoder's extra levels: a 3x3 stride-2 conv + GroupNorm of
     * the backbone's coarsest map (the most channels), then of the
     * previous extra level; placed coarsest first (before the backbone's)
     * or, in low2high, after them in reverse order of making. */
    vp_gt *prev = f->map[f->n - 1];
    for (int64_t e = 0; e < E; e++) {
        int64_t k = c->low2high ? L + (E - 1 - e) : E - 1 - e;
        snprintf(name, sizeof name, "%s.%s.%lld.0", nm->root, nm->in_proj, (long long)(L + e));
        vp_gt *y = px_conv3x3_s2(b, name, prev, d, xavier);
        snprintf(name, sizeof name, "%s.%s.%lld.1", nm->root, nm->in_proj, (long long)(L + e));
        srcs[k] = prev = px_groupnorm(b, name, y, 32);
        if (!srcs[k])
            return H->graph_status(g);
        lv.shape[k][0] = H->shape(srcs[k])[1], lv.shape[k][1] = H->shape(srcs[k])[2];
    }
    for (int64_t l = 0; l < NL; l++) {
        int64_t hl = lv.shape[l][0], wl = lv.shape[l][1];
        lv.start[l] = S;
        out->hw[l][0] = hl, out->hw[l][1] = wl;
        S += hl * wl;
        srcs[l] = H->reshape(g, srcs[l], 3, (int64_t[]){B, hl * wl, d});
        float *sine = malloc((size_t)(hl * wl * d) * sizeof *sine);
        if (!sine)
            return H->error(VP_ERR_NOMEM, "mask2former: out of host memory");
        m2f_sine_pos(hl, wl, d, sine);
        snprintf(name, sizeof name, PX_D2 ".pos.%lld", (long long)l);
        out->pos[l] = H->constant(g, name, 2, (int64_t[]){hl * wl, d}, sine);
        free(sine);
        vp_gt *row = H->reshape(g, H->slice(g, level_embed, 0, l, 1), 1, &d);
        qpos[l] = H->add(g, out->pos[l], row);
    }
    vp_gt *src = NL > 1 ? H->concat(g, srcs, (uint32_t)NL, 1) : srcs[0]; /* (B, S, d) */
    vp_gt *pos = NL > 1 ? H->concat(g, qpos, (uint32_t)NL, 0) : qpos[0]; /* (S, d) */
    if ((st = H->graph_status(g)))
        return st;

    vp_gt *ref = NULL, *inv_wh = NULL;
    if ((st = px_locations(g, &lv, S, NH, P, &ref, &inv_wh)))
        return st;
    float *grid = m2f_offset_grid(NH, NL, P);
    if (!grid)
        return H->error(VP_ERR_NOMEM, "mask2former: out of host memory");
    for (int i = 0; i < (int)c->enc_layers && src; i++)
        src = px_layer(c, b, i, src, pos, &lv, ref, inv_wh, grid);
    free(grid);
    if ((st = H->graph_status(g)))
        return st;

    out->n = (uint32_t)NL;
    for (int64_t l = 0; l < NL; l++)
        out->memory[l] = H->slice(g, src, 1, lv.start[l], lv.shape[l][0] * lv.shape[l][1]);

    /* the finest encoder level: the last, or the first in low2high */
    const int64_t fine_l = c->low2high ? 0 : NL - 1;
    int64_t hm = out->hw[fine_l][0], wm = out->hw[fine_l][1];
    if (fpn) {
        /* The FPN level (Mask2FormerPixelDecoder.forward, MaskDINOEncoder.
         * forward_features): the backbone's level below the encoder's
         * finest (detectron2: the backbone's finest, which the encoder may
         * use too) through adapter_1, plus the finest encoder output
         * upsampled to it, through layer_1; the mask features are its 1x1
         * projection. multi_scale_features are the encoder's outputs in its
         * order. */
        for (int64_t l = 0; l < NL; l++) {
            vp_gt *m = H->reshape(g, out->memory[l], 4,
                                  (int64_t[]){B, out->hw[l][0], out->hw[l][1], d});
            if (c->hf && !c->d2)
                snprintf(name, sizeof name, "pixel_decoder_hidden_states.%lld", (long long)l);
            else
                snprintf(name, sizeof name, "pixel_decoder.multi_scale_features.%lld",
                         (long long)l);
            H->output(b, name, px_nchw(g, m));
            if (c->d2 && l == 0)
                H->output(b, "pixel_decoder.transformer_encoder_features", px_nchw(g, m));
        }
        uint32_t fl = c->d2 ? 0 : f->n - 1 - (uint32_t)L;
        vp_gt *x4 = f->map[fl];
        int64_t h4 = H->shape(x4)[1], w4 = H->shape(x4)[2];
        vp_init wi = c->d2 ? c2 : xavier;
        snprintf(name, sizeof name, "%s.%s", nm->root, nm->adapter);
        vp_gt *lat = px_conv1x1(b, name, x4, d, false, wi);
        snprintf(name, sizeof name, "%s.%s", nm->root, nm->adapter_norm);
        lat = px_groupnorm(b, name, lat, 32);
        vp_gt *fine = H->reshape(g, out->memory[fine_l], 4, (int64_t[]){B, hm, wm, d});
        if (h4 != hm || w4 != wm)
            fine = H->resize_bilinear(g, fine, h4, w4);
        vp_gt *y = H->add(g, lat, fine);
        snprintf(name, sizeof name, "%s.%s", nm->root, nm->layer);
        y = px_conv3x3(b, name, y, d, wi);
        snprintf(name, sizeof name, "%s.%s", nm->root, nm->layer_norm);
        y = H->relu(g, px_groupnorm(b, name, y, 32));
        snprintf(name, sizeof name, "%s.%s", nm->root, nm->mask);
        out->mask_features = px_conv1x1(b, name, y, c->mask_dim, true, wi);
        out->mask_stride = f->stride[fl];
        H->output(b, c->hf && !c->d2 ? "pixel_decoder_last_hidden_state"
                                     : "pixel_decoder.mask_features",
                  px_nchw(g, out->mask_features));
        return H->graph_status(g);
    }
    snprintf(name, sizeof name, "%s.%s", nm->root, nm->mask);
    vp_gt *mf = H->site_linear(b, name, out->memory[L - 1], c->mask_dim, true, &c2, &zero);
    out->mask_features = H->reshape(g, mf, 4, (int64_t[]){B, hm, wm, c->mask_dim});
    out->mask_stride = f->stride[f->n - (uint32_t)L];
    return H->graph_status(g);
}
