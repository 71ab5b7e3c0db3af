/*
 * The maskdino head's decoder: MaskDINODecoder.forward (maskdino/modeling/
 * transformer_decoder/maskdino_decoder.py) with dino_decoder.py's
 * TransformerDecoder, for instance segmentation without denoising.
 *
 *   pixel decoder levels (coarsest first) -> the decoder's 1x1 input
 *   projections (input_proj.<l>), flattened finest first to src (B, S, d)
 *   -> two-stage query selection: proposals (gen_encoder_output_proposals:
 *   each token's own centre, side 0.05 * 2^level, as logits; tokens whose
 *   box leaves (0.01, 0.99) are masked), output_memory = enc_output_norm(
 *   enc_output(src)), class logits and box logits (the shared box MLP plus
 *   the proposal) per token, the top Q tokens by their largest class logit
 *   (a host node) -> the interm prediction on the selected tokens (boxes =
 *   sigmoid of their box logits); the queries start from them detached
 *   -> reference boxes from the interm masks (mask_box.comp: 'bitmask' or
 *   'mask2box'), or the selected box logits detached ('no')
 *   -> the initial prediction (INITIAL_PRED), then per layer: query_pos =
 *   ref_point_head(sine embedding of the reference box); self-attention
 *   (q = k = tgt + query_pos, v = tgt) -> norm2; deformable cross-attention
 *   around the reference box (loc = ref_xy + offset / points * ref_wh / 2)
 *   -> norm1; FFN -> norm3; box refinement ref' = sigmoid(bbox_embed(out) +
 *   inverse_sigmoid(ref)), detached for the next layer; the prediction heads
 *   on decoder_norm(out).
 *
 * The returned boxes are MaskDINODecoder.pred_box's: box_0 = the initial
 * reference, box_l+1 = sigmoid(bbox_embed(hs_l) + inverse_sigmoid(ref_l))
 * with ref_l (l > 0) the undetached refinement, so the gradient reaches one
 * layer back ("look forward twice").
 *
 * inverse_sigmoid(sigmoid(u)) is computed from the logit u itself, clamped
 * to +-ln(1e5) as the repository's clamp at eps = 1e-5 bounds it: equal up
 * to rounding, with the same zero gradient where the clamp binds.
 *
 * One box MLP (_bbox_embed) serves every layer and the encoder; the
 * checkpoint also holds it as bbox_embed.<l> and decoder.bbox_embed.<l>,
 * and decoder_norm as decoder.norm: those keys are declared buffer keys.
 */
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "maskdino.h"

#define PR "sem_seg_head.predictor"
#define NAME 224

/* ln(1e5): inverse_sigmoid's bound at eps = 1e-5 */
#define MD_LOGIT_BOUND 11.512925464970229

typedef struct mlp {
    int n;
    vp_gt *w[3], *b[3];
} mlp;

typedef struct heads {
    vp_gt *nw, *nb;  /* decoder_norm */
    vp_gt *cw, *cb;  /* class_embed */
    mlp mask, box;   /* mask_embed, _bbox_embed */
    vp_gt *bound, *bound2; /* (4) constants: the logit bound and twice it */
} heads;

typedef struct dec {
    const md_cfg *c;
    vp_build *b;
    vp_graph *g;
    int64_t B, S, L;
    vp_msdeform_levels lv;
    heads h;
    vp_gt *src;          /* (B, S, d) */
    vp_gt *mf;           /* mask features (B, Hm * Wm, mask_dim) */
    vp_gt *exy, *ewh;    /* (4, NH * L * P * 2): reference centres, half sides / P */
    float *grid;         /* MSDeformAttn's sampling-offset bias */
    vp_gt *sa_bias;      /* denoising's self-attention mask (-inf), or NULL */
} dec;

static vp_gt *param(dec *x, const char *name, int ndim, const int64_t *shape, vp_init init)
{
    return H->param(x->b, name, ndim, shape, &init, true);
}

/* nn.Linear(in, out) parameters <path>.weight and .bias, nn.Linear's init
 * unless w0 (then bias 0). */
static void linear_params(dec *x, const char *path, int64_t in, int64_t out, bool zero,
                          vp_gt **w, vp_gt **bias)
{
    char n[NAME];
    vp_init wi = zero ? vp_init_zeros() : vp_init_kaiming_uniform(2.23606798f);
    vp_init bi = zero ? vp_init_zeros() : (vp_init){VP_INIT_LINEAR_BIAS, (float)in, 0.0f, NULL};
    snprintf(n, sizeof n, "%s.weight", path);
    *w = param(x, n, 2, (int64_t[]){out, in}, wi);
    snprintf(n, sizeof n, "%s.bias", path);
    *bias = param(x, n, 1, &out, bi);
}

/* MaskDINO's MLP(in, hidden, out, layers): <path>.layers.<i>; the box MLP's
 * last layer starts at zero (MaskDINODecoder.__init__). */
static void make_mlp(dec *x, const char *path, int n, int64_t in, int64_t hid, int64_t out,
                     bool zero_last, mlp *m)
{
    char p[NAME];
    m->n = n;
    for (int i = 0; i < n; i++) {
        snprintf(p, sizeof p, "%s.layers.%d", path, i);
        linear_params(x, p, i ? hid : in, i + 1 < n ? hid : out, zero_last && i + 1 == n,
                      &m->w[i], &m->b[i]);
    }
}

static vp_gt *run_mlp(dec *x, const mlp *m, vp_gt *t)
{
    for (int i = 0; i < m->n; i++) {
        t = H->linear(x->g, t, m->w[i], m->b[i]);
        if (i + 1 < m->n)
            t = H->relu(x->g, t);
    }
    return t;
}

static vp_gt *norm(dec *x, const char *path, vp_gt *t)
{
    char wn[NAME + 16], bn[NAME + 16];
    int64_t d = x->c->hidden;
    snprintf(wn, sizeof wn, "%s.weight", path);
    snprintf(bn, sizeof bn, "%s.bias", path);
    return H->layernorm(x->g, t, param(x, wn, 1, &d, vp_init_ones()),
                        param(x, bn, 1, &d, vp_init_zeros()), 1e-5f);
}

/* The shared heads and the checkpoint's aliases of them. */
static vp_status make_heads(dec *x)
{
    const md_cfg *c = x->c;
    int64_t d = c->hidden;
    heads *h = &x->h;
    vp_init one = vp_init_ones(), zero = vp_init_zeros();
    h->nw = H->param(x->b, PR ".decoder_norm.weight", 1, &d, &one, true);
    h->nb = H->param(x->b, PR ".decoder_norm.bias", 1, &d, &zero, true);
    linear_params(x, PR ".class_embed", d, c->classes, false, &h->cw, &h->cb);
    make_mlp(x, PR ".mask_embed", 3, d, d, c->mask_dim, false, &h->mask);
    make_mlp(x, PR "._bbox_embed", 3, d, d, 4, true, &h->box);
    float a[4], a2[4];
    for (int i = 0; i < 4; i++)
        a[i] = (float)MD_LOGIT_BOUND, a2[i] = (float)(2 * MD_LOGIT_BOUND);
    h->bound = H->constant(x->g, "maskdino.logit_bound", 1, (int64_t[]){4}, a);
    h->bound2 = H->constant(x->g, "maskdino.logit_bound2", 1, (int64_t[]){4}, a2);
    vp_status st = H->graph_status(x->g);
    static const char *const part[] = {"weight", "bias"};
    char n[NAME];
    for (int p = 0; !st && p < 2; p++) {
        snprintf(n, sizeof n, PR ".decoder.norm.%s", part[p]);
        st = H->buffer_key(x->b, n);
    }
    for (int64_t l = 0; !st && l < c->dec_layers; l++)
        for (int i = 0; !st && i < 3; i++)
            for (int p = 0; !st && p < 2; p++) {
                snprintf(n, sizeof n, PR ".bbox_embed.%lld.layers.%d.%s", (long long)l, i, part[p]);
                if (!(st = H->buffer_key(x->b, n))) {
                    snprintf(n, sizeof n, PR ".decoder.bbox_embed.%lld.layers.%d.%s",
                             (long long)l, i, part[p]);
                    st = H->buffer_key(x->b, n);
                }
            }
    return st;
}

/* forward_prediction_heads on the queries' state t (B, Q, d). */
static md_pred predict(dec *x, vp_gt *t, bool with_mask)
{
    vp_gt *y = H->layernorm(x->g, t, x->h.nw, x->h.nb, 1e-5f);
    md_pred p = {0};
    p.logits = H->linear(x->g, y, x->h.cw, x->h.cb);
    if (with_mask)
        p.masks = H->gemm(x->g, run_mlp(x, &x->h.mask, y), false, x->mf, true, NULL);
    return p;
}

/* inverse_sigmoid(sigmoid(u)) for box logits u (..., 4): u clamped to
 * +-ln(1e5), as bound - relu(2 bound - relu(u + bound)). */
static vp_gt *clamp_logit(dec *x, vp_gt *u)
{
    vp_graph *g = x->g;
    vp_gt *t = H->relu(g, H->add(g, u, x->h.bound));
    t = H->relu(g, H->add(g, H->scale(g, t, -1.0f), x->h.bound2));
    return H->add(g, H->scale(g, t, -1.0f), x->h.bound);
}

/* ---- two-stage query selection ---------------------------------------------------------- */

typedef struct topk_user {
    int64_t B, S, K, Q;
    float *best;   /* S: each token's largest class logit */
    int32_t *idx;  /* S */
} topk_user;

static const float *sort_key;

static int by_key(const void *a, const void *b)
{
    int32_t i = *(const int32_t *)a, j = *(const int32_t *)b;
    if (sort_key[i] != sort_key[j])
        return sort_key[i] < sort_key[j] ? 1 : -1;
    return (i > j) - (i < j); /* ties: the lower index first */
}

/* in: class logits (B, S, K). out: rows (B * Q) int32, b * S + token, the
 * Q tokens with the largest max-over-classes logit, largest first
 * (torch.topk(enc_outputs_class_unselected.max(-1)[0], Q)). */
static vp_status topk_tokens(void *user, const vp_host_io *io)
{
    const topk_user *u = user;
    const float *cls = io->in[0];
    int32_t *rows = (int32_t *)io->out[0];
    for (int64_t b = 0; b < u->B; b++) {
        for (int64_t s = 0; s < u->S; s++) {
            const float *r = cls + (b * u->S + s) * u->K;
            float m = r[0];
            for (int64_t k = 1; k < u->K; k++)
                m = r[k] > m || isnan(r[k]) ? r[k] : m;
            u->best[s] = m;
            u->idx[s] = (int32_t)s;
        }
        sort_key = u->best;
        qsort(u->idx, (size_t)u->S, sizeof *u->idx, by_key);
        for (int64_t q = 0; q < u->Q; q++)
            rows[b * u->Q + q] = (int32_t)(b * u->S + u->idx[q]);
    }
    return VP_OK;
}

/* The proposals (S, 4) as logits and which tokens are valid (S). */
static vp_status proposals(dec *x, float *prop, float *valid)
{
    for (int64_t l = 0; l < x->L; l++) {
        int64_t hl = x->lv.shape[l][0], wl = x->lv.shape[l][1];
        float side = 0.05f * (float)(1 << l);
        for (int64_t t = 0; t < hl * wl; t++) {
            float p[4] = {((float)(t % wl) + 0.5f) / (float)wl,
                          ((float)(t / wl) + 0.5f) / (float)hl, side, side};
            bool ok = true;
            for (int i = 0; i < 4; i++)
                ok = ok && p[i] > 0.01f && p[i] < 0.99f;
            int64_t s = x->lv.start[l] + t;
            valid[s] = ok ? 1.0f : 0.0f;
            for (int i = 0; i < 4; i++)
                prop[s * 4 + i] = ok ? logf(p[i] / (1.0f - p[i])) : INFINITY;
        }
    }
    return VP_OK;
}

/* ---- a decoder layer ------------------------------------------------------------------ */

/* nn.MultiheadAttention(d, 8) with its packed in_proj: q = k = qk, v. */
static vp_gt *self_attention(dec *x, const char *path, vp_gt *qk, vp_gt *v)
{
    vp_graph *g = x->g;
    char p[NAME + 32];
    int64_t d = x->c->hidden, d3 = 3 * d;
    snprintf(p, sizeof p, "%s.in_proj_weight", path);
    vp_gt *iw = param(x, p, 2, (int64_t[]){d3, d}, vp_init_xavier_uniform(1.0f));
    snprintf(p, sizeof p, "%s.in_proj_bias", path);
    vp_gt *ib = param(x, p, 1, &d3, vp_init_zeros());
    vp_gt *q = H->linear(g, qk, H->slice(g, iw, 0, 0, d), H->slice(g, ib, 0, 0, d));
    vp_gt *k = H->linear(g, qk, H->slice(g, iw, 0, d, d), H->slice(g, ib, 0, d, d));
    vp_gt *vv = H->linear(g, v, H->slice(g, iw, 0, 2 * d, d), H->slice(g, ib, 0, 2 * d, d));
    vp_gt *o = x->sa_bias ? H->attention_ex(g, q, k, vv, x->sa_bias, MD_DEC_HEADS,
                                            (float)(1.0 / sqrt((double)(d / MD_DEC_HEADS))))
                          : H->attention(g, q, k, vv, NULL, MD_DEC_HEADS);
    snprintf(p, sizeof p, "%s.out_proj", path);
    vp_init w = vp_init_xavier_uniform(1.0f), z = vp_init_zeros();
    return H->site_linear(x->b, p, o, d, true, &w, &z);
}

/* MSDeformAttn around 4-d reference boxes r (B, Q, 4), queries (B, Q, d). */
static vp_gt *cross_attention(dec *x, const char *mod, vp_gt *query, vp_gt *r)
{
    vp_graph *g = x->g;
    const int64_t d = x->c->hidden, NH = MD_DEC_HEADS, L = x->L, P = MD_DEC_POINTS;
    const int64_t B = x->B, Q = H->shape(query)[1], LP2 = L * P * 2;
    vp_init xavier = vp_init_xavier_uniform(1.0f), zero = vp_init_zeros();
    vp_init offset_bias = vp_init_data(x->grid);
    char name[NAME + 64];
    if (H->site_module(x->b, mod, VP_SITE_DEFORM))
        return NULL;
    snprintf(name, sizeof name, "%s.value_proj", mod);
    vp_gt *value = H->reshape(g, H->site_linear(x->b, name, x->src, d, true, &xavier, &zero), 4,
                              (int64_t[]){B, x->S, NH, d / NH});
    snprintf(name, sizeof name, "%s.sampling_offsets", mod);
    vp_gt *off = H->site_linear(x->b, name, query, NH * LP2, true, &zero, &offset_bias);
    vp_gt *r2 = H->reshape(g, r, 2, (int64_t[]){B * Q, 4});
    vp_gt *base = H->gemm(g, r2, false, x->exy, false, NULL);   /* (B Q, NH L P 2) */
    vp_gt *half = H->gemm(g, r2, false, x->ewh, false, NULL);
    off = H->reshape(g, off, 2, (int64_t[]){B * Q, NH * LP2});
    vp_gt *loc = H->reshape(g, H->add(g, base, H->mul(g, off, half)), 4,
                            (int64_t[]){B, Q, NH, LP2});
    snprintf(name, sizeof name, "%s.attention_weights", mod);
    vp_gt *aw = H->site_linear(x->b, name, query, NH * L * P, true, &zero, &zero);
    aw = H->softmax(g, H->reshape(g, aw, 4, (int64_t[]){B, Q, NH, L * P}));
    vp_gt *a = H->msdeform(g, value, &x->lv, loc, aw);            /* (B, Q, d) */
    snprintf(name, sizeof name, "%s.output_proj", mod);
    return H->site_linear(x->b, name, a, d, true, &xavier, &zero);
}

/* DeformableTransformerDecoderLayer i: tgt (B, Q, d), query_pos (B, Q, d),
 * r the reference boxes (B, Q, 4). */
static vp_gt *layer(dec *x, int i, vp_gt *tgt, vp_gt *qpos, vp_gt *r)
{
    vp_graph *g = x->g;
    const int64_t d = x->c->hidden;
    char lay[96], n[NAME];
    snprintf(lay, sizeof lay, PR ".decoder.layers.%d", i);

    vp_gt *qk = H->add(g, tgt, qpos);
    snprintf(n, sizeof n, "%s.self_attn", lay);
    vp_gt *a = H->site_output_in(x->b, n, VP_SITE_ATTN_OUT, tgt, self_attention(x, n, qk, tgt));
    snprintf(n, sizeof n, "%s.norm2", lay);
    tgt = norm(x, n, H->add(g, tgt, a));

    snprintf(n, sizeof n, "%s.cross_attn", lay);
    a = cross_attention(x, n, H->add(g, tgt, qpos), r);
    a = H->site_output_in(x->b, n, VP_SITE_ATTN_OUT, tgt, a);
    snprintf(n, sizeof n, "%s.norm1", lay);
    tgt = norm(x, n, H->add(g, tgt, a));

    /* the FFN keeps nn.Linear's init (the decoder's xavier reset covers
     * its matrices) */
    vp_init xavier = vp_init_xavier_uniform(1.0f);
    snprintf(n, sizeof n, "%s.linear1", lay);
    vp_gt *h = H->relu(g, H->site_linear(x->b, n, tgt, x->c->dec_ffn, true, &xavier, NULL));
    snprintf(n, sizeof n, "%s.linear2", lay);
    h = H->site_linear(x->b, n, h, d, true, &xavier, NULL);
    snprintf(n, sizeof n, "%s.ffn", lay);
    h = H->site_output_in(x->b, n, VP_SITE_FFN_OUT, tgt, h);
    snprintf(n, sizeof n, "%s.norm3", lay);
    return norm(x, n, H->add(g, tgt, h));
}

/* The selection matrices of the reference boxes (B Q, 4) -> the sampled
 * coordinates' centre and half side over points (NH L P 2 columns: x then
 * y per point). */
static vp_status box_maps(dec *x)
{
    const int64_t cols = MD_DEC_HEADS * x->L * MD_DEC_POINTS * 2;
    float *e = calloc((size_t)(8 * cols), sizeof *e);
    if (!e)
        return H->error(VP_ERR_NOMEM, "maskdino: out of host memory");
    float *exy = e, *ewh = e + 4 * cols;
    for (int64_t j = 0; j < cols; j++) {
        int a = (int)(j % 2);                         /* 0: x, 1: y */
        exy[a * cols + j] = 1.0f;
        ewh[(2 + a) * cols + j] = 0.5f / (float)MD_DEC_POINTS;
    }
    x->exy = H->constant(x->g, "maskdino.ref_centre", 2, (int64_t[]){4, cols}, exy);
    x->ewh = H->constant(x->g, "maskdino.ref_half_side", 2, (int64_t[]){4, cols}, ewh);
    free(e);
    return H->graph_status(x->g);
}

/* ---- denoising ----------------------------------------------------------------------- */

typedef struct dn_user {
    int64_t B, T, G, K;
    double noise; /* DN_NOISE_SCALE */
} dn_user;

/* prepare_for_dn with groups of T (max_targets) slots. in: labels (B, T)
 * int32, tbox (B T, 4), noise (B pad, 6) uniform [0, 1), instances (1).
 * out: idx (B pad) int32 the label_enc row of each noised query (K: the zero
 * row of an empty slot), u (B pad, 4) its reference box as logits (0 for an
 * empty slot), gidx (B G T) int32, tclass (B pad) int32, w (B G T), norm (1):
 * the fixed assignment (md_dn). A label is replaced by a uniformly drawn
 * class with probability noise / 2; a box (cx, cy, w, h) moves by (2 U - 1)
 * (w/2, h/2, w, h) noise and is clamped to [0, 1]. */
static vp_status dn_prepare(void *user, const vp_host_io *io)
{
    const dn_user *u = user;
    const int32_t *labels = (const int32_t *)io->in[0];
    const float *tbox = io->in[1], *noise = io->in[2];
    int32_t *idx = (int32_t *)io->out[0], *gidx = (int32_t *)io->out[2],
            *tclass = (int32_t *)io->out[3];
    float *ref = io->out[1], *w = io->out[4];
    const int64_t B = u->B, T = u->T, G = u->G, K = u->K, pad = G * T;
    int64_t total = 0;
    for (int64_t b = 0; b < B; b++)
        for (int64_t g = 0; g < G; g++)
            for (int64_t t = 0; t < T; t++) {
                int64_t e = b * pad + g * T + t, s = (b * G + g) * T + t;
                int32_t l = labels[b * T + t];
                if (l >= K)
                    return H->error(VP_ERR_INVALID, "maskdino: image %lld, target %lld: class %d, "
                                    "the head has %lld classes", (long long)b, (long long)t, l,
                                    (long long)K);
                const float *nz = noise + e * 6;
                if (l < 0) {
                    idx[e] = (int32_t)K;
                    tclass[e] = (int32_t)K;
                    gidx[s] = (int32_t)(B * pad);
                    w[s] = 0;
                    for (int i = 0; i < 4; i++)
                        ref[e * 4 + i] = 0;
                    continue;
                }
                total += g == 0;
                int32_t nl = l;
                if (u->noise > 0 && nz[0] < u->noise * 0.5) {
                    nl = (int32_t)(nz[1] * (double)K);
                    nl = nl >= K ? (int32_t)K - 1 : nl;
                }
                idx[e] = nl;
                tclass[e] = l;
                gidx[s] = (int32_t)e;
                w[s] = 1;
                const float *bx = tbox + (b * T + t) * 4;
                double diff[4] = {bx[2] / 2.0, bx[3] / 2.0, bx[2], bx[3]};
                for (int i = 0; i < 4; i++) {
                    double v = bx[i] + (u->noise > 0 ? (nz[2 + i] * 2.0 - 1.0) * diff[i] * u->noise
                                                    : 0.0);
                    v = v < 0 ? 0 : v > 1 ? 1 : v;
                    double x1 = v < 1e-5 ? 1e-5 : v, x2 = 1 - v < 1e-5 ? 1e-5 : 1 - v;
                    ref[e * 4 + i] = (float)log(x1 / x2);
                }
            }
    double given = (double)io->in[3][0], inst = given > 0 ? given : (double)total;
    io->out[5][0] = (float)(1.0 / ((inst > 1.0 ? inst : 1.0) * (double)G));
    return VP_OK;
}

/* The noised queries (B, pad, d) and their reference logits (B, pad, 4),
 * the self-attention mask, and the fixed assignment. */
static vp_status dn_build(dec *x, const md_targets *tg, vp_gt *label_enc, m2f_owned *own,
                          md_dn *dn, vp_gt **tgt, vp_gt **u)
{
    const md_cfg *c = x->c;
    vp_graph *g = x->g;
    const int64_t B = x->B, T = c->max_targets, G = c->dn_num / T, pad = G * T, K = c->classes,
                  d = c->hidden, Q = c->queries, Qa = pad + Q;
    dn_user *du = m2f_own(own, sizeof *du);
    if (!du)
        return H->error(VP_ERR_NOMEM, "maskdino: out of host memory");
    *du = (dn_user){B, T, G, K, c->dn_noise};
    vp_gt *noise = H->rand(g, "head.dn.noise", 2, (int64_t[]){B * pad, 6});
    vp_gt *o[6];
    vp_status st = H->host(g, "head.dn.prepare", dn_prepare, du, 4,
                           (vp_gt *[]){tg->labels, tg->tbox, noise, tg->inst}, 6,
                           (int[]){1, 2, 1, 1, 1, 1},
                           (const int64_t *const[]){(int64_t[]){B * pad}, (int64_t[]){B * pad, 4},
                                                    (int64_t[]){B * pad}, (int64_t[]){B * pad},
                                                    (int64_t[]){B * pad}, (int64_t[]){1}},
                           (vp_dtype[]){VP_I32, VP_F32, VP_I32, VP_I32, VP_F32, VP_F32}, o);
    if (st)
        return st;
    float *zero = calloc((size_t)d, sizeof *zero);
    int32_t *trow = malloc((size_t)(B * pad) * sizeof *trow);
    float *mask = malloc((size_t)(Qa * Qa) * sizeof *mask);
    if (!zero || !trow || !mask) {
        free(zero);
        free(trow);
        free(mask);
        return H->error(VP_ERR_NOMEM, "maskdino: out of host memory");
    }
    vp_gt *zrow = H->constant(g, "head.dn.zero_label", 2, (int64_t[]){1, d}, zero);
    free(zero);
    for (int64_t b = 0; b < B; b++)
        for (int64_t gr = 0; gr < G; gr++)
            for (int64_t t = 0; t < T; t++)
                trow[(b * G + gr) * T + t] = (int32_t)(b * T + t);
    /* a matching query sees the matching ones; a noised one its group and
     * the matching ones (prepare_for_dn's attn_mask) */
    for (int64_t i = 0; i < Qa; i++)
        for (int64_t j = 0; j < Qa; j++) {
            bool see = j >= pad || (i < pad && i / T == j / T);
            mask[i * Qa + j] = see ? 0.0f : -INFINITY;
        }
    x->sa_bias = H->constant(g, "head.dn.attn_mask", 2, (int64_t[]){Qa, Qa}, mask);
    free(mask);
    dn->trow = H->constant_i32(g, "head.dn.target_rows", 1, (int64_t[]){B * pad}, trow);
    free(trow);
    vp_gt *tbl = H->concat(g, (vp_gt *[]){label_enc, zrow}, 2, 0);
    *tgt = H->reshape(g, H->gather_rows(g, tbl, o[0]), 3, (int64_t[]){B, pad, d});
    *u = H->reshape(g, o[1], 3, (int64_t[]){B, pad, 4});
    dn->pad = pad;
    dn->groups = G;
    dn->seg = c->dn_seg;
    dn->gidx = o[2];
    dn->tclass = o[3];
    dn->wslot = H->reshape(g, o[4], 2, (int64_t[]){B * pad, 1});
    dn->norm = o[5];
    return H->graph_status(g);
}

/* p's rows [start, start + n) of the query axis. */
static md_pred split(vp_graph *g, md_pred p, int64_t start, int64_t n)
{
    md_pred r = {0};
    r.logits = H->slice(g, p.logits, 1, start, n);
    r.boxes = H->slice(g, p.boxes, 1, start, n);
    if (p.masks)
        r.masks = H->slice(g, p.masks, 1, start, n);
    return r;
}

vp_status md_decoder(const md_cfg *c, vp_build *b, const m2f_pixel_out *px, bool with_masks,
                     const md_targets *tg, m2f_owned *own, md_decoder_out *out)
{
    vp_graph *g = H->graph(b);
    memset(out, 0, sizeof *out);
    const int64_t d = c->hidden, L = px->n, Q = c->queries, K = c->classes;
    const int64_t *ms = H->shape(px->mask_features);
    const int64_t B = ms[0], hm = ms[1], wm = ms[2];
    dec x = {.c = c, .b = b, .g = g, .B = B, .L = L, .lv = {.n = (int)L}};
    if (c->dec_layers > MD_MAX_LAYERS)
        return H->error(VP_ERR_INVALID, "maskdino: at most %d decoder layers", MD_MAX_LAYERS);
    x.mf = H->reshape(g, px->mask_features, 3, (int64_t[]){B, hm * wm, c->mask_dim});

    /* The decoder's inputs, finest level first (x[idx], idx = L-1 .. 0, in
     * the repository's high2low list). */
    vp_gt *srcs[VP_MAX_LEVELS];
    char n[NAME];
    for (int64_t i = 0; i < L; i++) {
        int64_t l = L - 1 - i, hl = px->hw[l][0], wl = px->hw[l][1];
        vp_gt *m = px->memory[l];
        if (c->input_proj) {
            int64_t cd = H->shape(m)[2];
            snprintf(n, sizeof n, PR ".input_proj.%lld.weight", (long long)l);
            vp_gt *w = param(&x, n, 4, (int64_t[]){d, cd, 1, 1}, vp_init_kaiming_uniform(1.0f));
            snprintf(n, sizeof n, PR ".input_proj.%lld.bias", (long long)l);
            vp_gt *bb = param(&x, n, 1, &d, vp_init_zeros());
            m = H->linear(g, m, H->reshape(g, w, 2, (int64_t[]){d, cd}), bb);
        }
        srcs[i] = m;
        x.lv.shape[i][0] = hl, x.lv.shape[i][1] = wl, x.lv.start[i] = x.S;
        x.S += hl * wl;
    }
    x.src = L > 1 ? H->concat(g, srcs, (uint32_t)L, 1) : srcs[0];
    vp_status st = make_heads(&x);
    if (!st)
        st = box_maps(&x);
    if (st || (st = H->graph_status(g)))
        return st;

    /* Two-stage selection. */
    float *prop = malloc((size_t)x.S * 4 * sizeof *prop);
    float *valid = malloc((size_t)x.S * sizeof *valid);
    if (!prop || !valid) {
        free(prop);
        free(valid);
        return H->error(VP_ERR_NOMEM, "maskdino: out of host memory");
    }
    proposals(&x, prop, valid);
    bool all_valid = true;
    for (int64_t s = 0; s < x.S; s++)
        all_valid = all_valid && valid[s] > 0;
    vp_gt *memory = x.src;
    if (!all_valid) {
        float *vm = malloc((size_t)(x.S * d) * sizeof *vm);
        if (!vm) {
            free(prop);
            free(valid);
            return H->error(VP_ERR_NOMEM, "maskdino: out of host memory");
        }
        for (int64_t s = 0; s < x.S; s++)
            for (int64_t j = 0; j < d; j++)
                vm[s * d + j] = valid[s];
        memory = H->mul(g, memory, H->constant(g, "maskdino.valid_tokens", 2,
                                               (int64_t[]){x.S, d}, vm));
        free(vm);
    }
    vp_gt *proposal = H->constant(g, "maskdino.proposals", 2, (int64_t[]){x.S, 4}, prop);
    free(prop);
    free(valid);
    vp_gt *ew, *eb;
    linear_params(&x, PR ".enc_output", d, d, false, &ew, &eb);
    vp_gt *omem = norm(&x, PR ".enc_output_norm", H->linear(g, memory, ew, eb)); /* (B, S, d) */
    vp_gt *enc_cls = H->linear(g, omem, x.h.cw, x.h.cb);                        /* (B, S, K) */
    vp_gt *enc_box = H->add(g, run_mlp(&x, &x.h.box, omem), proposal);            /* (B, S, 4) */
    if ((st = H->graph_status(g)))
        return st;
    if (Q > x.S)
        return H->error(VP_ERR_INVALID, "maskdino: %lld queries, but the encoder gives only %lld "
                        "tokens to select them from", (long long)Q, (long long)x.S);
    topk_user *tu = m2f_own(own, sizeof *tu);
    float *best = m2f_own(own, (size_t)x.S * sizeof *best);
    int32_t *idx = m2f_own(own, (size_t)x.S * sizeof *idx);
    if (!tu || !best || !idx)
        return H->error(VP_ERR_NOMEM, "maskdino: out of host memory");
    *tu = (topk_user){B, x.S, K, Q, best, idx};
    vp_gt *rows;
    st = H->host(g, "head.query_selection", topk_tokens, tu, 1, (vp_gt *[]){enc_cls}, 1,
                 (int[]){1}, (const int64_t *const[]){(int64_t[]){B * Q}},
                 (vp_dtype[]){VP_I32}, &rows);
    if (st)
        return st;
    vp_gt *tgt_u = H->reshape(g, H->gather_rows(g, H->reshape(g, omem, 2, (int64_t[]){B * x.S, d}),
                                                rows), 3, (int64_t[]){B, Q, d});
    vp_gt *ref_u = H->reshape(g, H->gather_rows(g, H->reshape(g, enc_box, 2,
                                                             (int64_t[]){B * x.S, 4}), rows),
                              3, (int64_t[]){B, Q, 4});
    out->interm = predict(&x, tgt_u, true);
    out->interm.boxes = H->sigmoid(g, ref_u);

    vp_gt *tgt;
    if (c->learn_tgt) {
        vp_gt *qf = param(&x, PR ".query_feat.weight", 2, (int64_t[]){Q, d}, vp_init_normal(0, 1));
        vp_gt *copies[64];
        if (B > 64)
            return H->error(VP_ERR_INVALID, "maskdino: LEARN_TGT takes at most 64 images a batch");
        for (int64_t i = 0; i < B; i++)
            copies[i] = H->reshape(g, qf, 3, (int64_t[]){1, Q, d});
        tgt = B > 1 ? H->concat(g, copies, (uint32_t)B, 0) : copies[0];
    } else {
        tgt = md_detach(g, tgt_u);
    }
    vp_gt *u0 = c->box_init == MD_BOX_NO
                    ? md_detach(g, ref_u)
                    : H->reshape(g, md_mask_box(g, H->reshape(g, out->interm.masks, 2,
                                                              (int64_t[]){B * Q, hm * wm}),
                                                hm, wm, c->box_init, own),
                                 3, (int64_t[]){B, Q, 4});
    /* label_enc: the denoising queries' label embedding (a parameter of
     * the checkpoint; no gradient reaches it without denoising) */
    vp_gt *label_enc = param(&x, PR ".label_enc.weight", 2, (int64_t[]){K, d},
                             vp_init_normal(0, 1));
    /* Denoising: the noised queries go first (prepare_for_dn). */
    int64_t Qa = Q, pad = 0;
    if (tg && c->dn && c->dn_num / c->max_targets > 0) {
        vp_gt *tgt_dn = NULL, *u_dn = NULL;
        st = dn_build(&x, tg, label_enc, own, &out->dn, &tgt_dn, &u_dn);
        if (st)
            return st;
        pad = out->dn.pad;
        Qa = pad + Q;
        tgt = H->concat(g, (vp_gt *[]){tgt_dn, tgt}, 2, 1);
        u0 = H->concat(g, (vp_gt *[]){u_dn, u0}, 2, 1);
    }

    /* INITIAL_PRED: the heads on the queries before the first layer. */
    out->pred[0] = predict(&x, tgt, with_masks);
    out->pred[0].boxes = H->sigmoid(g, u0);
    out->n = 1;

    mlp rp;
    make_mlp(&x, PR ".decoder.ref_point_head", 2, 4 * MD_SINE_FREQS, d, d, false, &rp);
    x.grid = m2f_offset_grid(MD_DEC_HEADS, L, MD_DEC_POINTS);
    if (!x.grid)
        return H->error(VP_ERR_NOMEM, "maskdino: out of host memory");
    vp_gt *u_det = u0, *u_prev = u0, *o = tgt;
    for (int i = 0; i < (int)c->dec_layers; i++) {
        vp_gt *r = H->sigmoid(g, u_det);                                  /* (B, Q, 4) */
        vp_gt *sine = md_sine_embed(g, H->reshape(g, r, 2, (int64_t[]){B * Qa, 4}));
        vp_gt *qpos = H->reshape(g, run_mlp(&x, &rp, sine), 3, (int64_t[]){B, Qa, d});
        o = layer(&x, i, o, qpos, r);
        vp_gt *u_new = H->add(g, run_mlp(&x, &x.h.box, o), clamp_logit(&x, u_det));
        vp_gt *hs = H->layernorm(g, o, x.h.nw, x.h.nb, 1e-5f); /* decoder.norm is decoder_norm */
        bool last = i + 1 == (int)c->dec_layers;
        md_pred p = predict(&x, hs, with_masks || last);
        p.boxes = H->sigmoid(g, H->add(g, run_mlp(&x, &x.h.box, hs), clamp_logit(&x, u_prev)));
        out->pred[out->n++] = p;
        u_prev = u_new;
        if (!last)
            u_det = md_detach(g, u_new);
    }
    free(x.grid);
    if (pad) { /* dn_post_process: the noised queries' part apart */
        for (uint32_t i = 0; i < out->n; i++) {
            out->dn_pred[i] = split(g, out->pred[i], 0, pad);
            out->pred[i] = split(g, out->pred[i], pad, Q);
        }
    }
    return H->graph_status(g);
}
