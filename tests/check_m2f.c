/*
 * The mask2former head plugin (plugins/mask2former/) on the vit backbone:
 * its loss against a CPU reimplementation of Mask2Former's (brute-force
 * matching, weighted cross-entropy, BCE and dice per matched mask), config
 * errors, parameter counts, and a tiny model that overfits one synthetic
 * batch: the loss falls 10x and the matched queries' masks reach an IoU
 * above 0.9 with their targets.
 */
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "config/config.h"
#include "harness.h"
#include "model/build.h"
#include "model/model.h"
#include "model/verify.h"

/* The tiny model: a 32x32 image, a ViT of patch 4 with the pyramid (maps
 * 16x16, 8x8, 4x4), the head at width 16. */
static const char *backbone =
    "{\"plugin\": \"vit\", \"image\": 32, \"patch\": 4, \"width\": 16, \"depth\": 1, "
    "\"heads\": 2, \"mlp_ratio\": 2, \"out_channels\": 16}";

static vp_config *parse(const char *text)
{
    vp_config *c;
    vt_ok(vp_cfg_parse(text, strlen(text), "m.json", &c));
    return c;
}

static vp_status make_model(int dev, const char *head, const char *extra, int64_t batch,
                            bool train, vp_model **m)
{
    char text[2048];
    snprintf(text, sizeof text, "{\"model\": {\"backbone\": %s, \"head\": {\"plugin\": "
             "\"mask2former\", %s}}%s%s}", backbone, head, extra ? ", " : "", extra ? extra : "");
    vp_config *c = parse(text);
    vp_status st = vp_model_create(vt_device((uint32_t)dev), c,
                                   &(vp_model_opts){.batch = batch, .train = train}, m);
    vp_cfg_free(c);
    return st;
}

/* ---- synthetic data --------------------------------------------------------------- */

enum { IMG = 32, HM = 16, T_MAX = 3 };

typedef struct batch {
    int64_t B;
    float *pixels;          /* (B, 3, IMG, IMG) */
    int32_t *labels;        /* (B, T_MAX), -1: none */
    float *masks;           /* (B, T_MAX, HM * HM) */
} batch;

/* Image b holds 1 + b % 2 rectangles of classes 0 and 1, each a colour on
 * a dark background; the targets are their masks at the mask resolution. */
static void make_batch(int64_t B, batch *d)
{
    d->B = B;
    d->pixels = calloc((size_t)(B * 3 * IMG * IMG), sizeof *d->pixels);
    d->labels = malloc((size_t)(B * T_MAX) * sizeof *d->labels);
    d->masks = calloc((size_t)(B * T_MAX * HM * HM), sizeof *d->masks);
    ck_assert(d->pixels && d->labels && d->masks);
    for (int64_t b = 0; b < B; b++) {
        int n = 1 + (int)(b % 2);
        for (int t = 0; t < T_MAX; t++)
            d->labels[b * T_MAX + t] = t < n ? t % 2 : -1;
        for (int t = 0; t < n; t++) {
            /* rectangles in mask cells (2x2 pixels each), apart */
            int x0 = t ? 9 : 2 + (int)b, y0 = t ? 8 : 3, w = t ? 5 : 6, h = t ? 6 : 5;
            for (int y = y0; y < y0 + h; y++)
                for (int x = x0; x < x0 + w; x++) {
                    d->masks[(b * T_MAX + t) * HM * HM + y * HM + x] = 1.0f;
                    for (int dy = 0; dy < 2; dy++)
                        for (int dx = 0; dx < 2; dx++) {
                            int py = 2 * y + dy, px = 2 * x + dx;
                            for (int c = 0; c < 3; c++)
                                d->pixels[((b * 3 + c) * IMG + py) * IMG + px] =
                                    t % 2 ? (c == 0 ? 0.9f : 0.1f) : (c == 2 ? 0.9f : 0.3f);
                        }
                }
        }
    }
}

static void free_batch(batch *d)
{
    free(d->pixels);
    free(d->labels);
    free(d->masks);
}

static void write_batch(vp_model *m, const batch *d)
{
    vp_graph *g = vp_model_graph(m);
    int64_t B = d->B;
    vt_ok(vp_graph_write(g, vp_model_image(m), d->pixels, (size_t)(B * 3 * IMG * IMG) * 4));
    vp_gt *l = vp_graph_find(g, "target.labels"), *t = vp_graph_find(g, "target.masks");
    ck_assert(l && t);
    vt_ok(vp_graph_write(g, l, d->labels, (size_t)(B * T_MAX) * 4));
    vt_ok(vp_graph_write(g, t, d->masks, (size_t)(B * T_MAX * HM * HM) * 4));
}

static float *read_out(vp_model *m, const char *name, int64_t n)
{
    vp_gt *t = vp_model_output(m, name);
    ck_assert_msg(t != NULL, "no output %s", name);
    ck_assert_int_eq(vp_gt_nelem(t), n);
    float *v = malloc((size_t)n * sizeof *v);
    vt_ok(vp_graph_read(vp_model_graph(m), t, v, (size_t)n * sizeof *v));
    return v;
}

/* ---- the loss against a CPU reimplementation --------------------------------------------- */

static double softplus(double x) { return fmax(x, 0) + log1p(exp(-fabs(x))); }
static double sigm(double x) { return 1 / (1 + exp(-x)); }

/* Mask2Former's loss for one prediction, matching by brute force over
 * every injection of the image's targets into the queries. */
static double ref_loss(const float *logits, const float *masks, const batch *d, int64_t Q,
                       int64_t C, double cw, double mw, double dw, double no_obj)
{
    int64_t HW = HM * HM, total = 0;
    double ce_num = 0, ce_den = 0, bce = 0, dice = 0;
    for (int64_t b = 0; b < d->B; b++) {
        int tj[T_MAX], n = 0;
        for (int t = 0; t < T_MAX; t++)
            if (d->labels[b * T_MAX + t] >= 0)
                tj[n++] = t;
        total += n;
        /* cost[q][j] */
        double cost[16][T_MAX];
        ck_assert_int_le(Q, 16);
        for (int64_t q = 0; q < Q; q++) {
            const float *lg = logits + (b * Q + q) * (C + 1), *x = masks + (b * Q + q) * HW;
            double mx = -INFINITY, se = 0;
            for (int64_t k = 0; k <= C; k++)
                mx = fmax(mx, lg[k]);
            for (int64_t k = 0; k <= C; k++)
                se += exp(lg[k] - mx);
            for (int j = 0; j < n; j++) {
                const float *t = d->masks + (b * T_MAX + tj[j]) * HW;
                double p = exp(lg[d->labels[b * T_MAX + tj[j]]] - mx) / se;
                double ce = 0, st = 0, ss = 0, stt = 0;
                for (int64_t i = 0; i < HW; i++) {
                    ce += t[i] * softplus(-x[i]) + (1 - t[i]) * softplus(x[i]);
                    st += sigm(x[i]) * t[i];
                    ss += sigm(x[i]);
                    stt += t[i];
                }
                cost[q][j] = cw * -p + mw * ce / (double)HW + dw * (1 - (2 * st + 1) / (ss + stt + 1));
            }
        }
        /* brute force: q_of[j] distinct queries */
        int best[T_MAX] = {0}, cur[T_MAX];
        double bestc = INFINITY;
        int64_t combos = 1;
        for (int j = 0; j < n; j++)
            combos *= Q;
        for (int64_t code = 0; code < combos; code++) {
            int64_t c2 = code;
            bool ok = true;
            double s = 0;
            for (int j = 0; j < n; j++) {
                cur[j] = (int)(c2 % Q);
                c2 /= Q;
                for (int k = 0; k < j; k++)
                    ok &= cur[k] != cur[j];
                s += cost[cur[j]][j];
            }
            if (ok && s < bestc) {
                bestc = s;
                memcpy(best, cur, sizeof cur);
            }
        }
        /* losses */
        for (int64_t q = 0; q < Q; q++) {
            int64_t cls = C;
            for (int j = 0; j < n; j++)
                if (best[j] == q)
                    cls = d->labels[b * T_MAX + tj[j]];
            const float *lg = logits + (b * Q + q) * (C + 1);
            double mx = -INFINITY, se = 0;
            for (int64_t k = 0; k <= C; k++)
                mx = fmax(mx, lg[k]);
            for (int64_t k = 0; k <= C; k++)
                se += exp(lg[k] - mx);
            double w = cls == C ? no_obj : 1.0;
            ce_num += w * -(lg[cls] - mx - log(se));
            ce_den += w;
        }
        for (int j = 0; j < n; j++) {
            const float *x = masks + (b * Q + best[j]) * HW;
            const float *t = d->masks + (b * T_MAX + tj[j]) * HW;
            double e = 0, st = 0, ss = 0, stt = 0;
            for (int64_t i = 0; i < HW; i++) {
                e += softplus(x[i]) - x[i] * t[i];
                st += sigm(x[i]) * t[i];
                ss += sigm(x[i]);
                stt += t[i];
            }
            bce += e / (double)HW;
            dice += 1 - (2 * st + 1) / (ss + stt + 1);
        }
    }
    double norm = total > 0 ? (double)total : 1.0;
    return cw * ce_num / ce_den + mw * bce / norm + dw * dice / norm;
}

START_TEST(test_loss_reference)
{
    /* No decoder layer: one prediction, the outputs; two classes, 5 queries. */
    vp_model *m;
    vt_ok(make_model(_i, "\"classes\": 2, \"queries\": 5, \"hidden\": 16, \"heads\": 2, "
                         "\"encoder_layers\": 1, \"decoder_layers\": 0, \"points\": 2, "
                         "\"encoder_ffn\": 32, \"decoder_ffn\": 32, \"mask_dim\": 16, "
                         "\"max_targets\": 3", NULL, 2, true, &m));
    batch d;
    make_batch(2, &d);
    write_batch(m, &d);
    vt_ok(vp_graph_run(vp_model_graph(m)));
    float loss;
    vt_ok(vp_graph_read(vp_model_graph(m), vp_model_loss(m), &loss, sizeof loss));
    float *lg = read_out(m, "pred_logits", 2 * 5 * 3), *mk = read_out(m, "pred_masks", 2 * 5 * 256);
    double want = ref_loss(lg, mk, &d, 5, 2, 2.0, 5.0, 5.0, 0.1);
    printf("mask2former: loss %.7g, CPU reference %.7g\n", loss, want);
    ck_assert_msg(fabs(loss - want) <= 1e-4 * fabs(want), "loss %.7g, reference %.7g", loss, want);
    free(lg);
    free(mk);
    free_batch(&d);
    vp_model_destroy(m);
}
END_TEST

/* ---- overfitting one batch --------------------------------------------------------- */

START_TEST(test_overfit)
{
    vp_model *m;
    vt_ok(make_model(_i, "\"classes\": 2, \"queries\": 6, \"hidden\": 16, \"heads\": 2, "
                         "\"encoder_layers\": 1, \"decoder_layers\": 2, \"points\": 2, "
                         "\"encoder_ffn\": 32, \"decoder_ffn\": 32, \"mask_dim\": 16, "
                         "\"max_targets\": 3", "\"train\": {\"seed\": 1}", 2, true, &m));
    batch d;
    make_batch(2, &d);
    write_batch(m, &d);
    vp_graph *g = vp_model_graph(m);
    float first = 0, last = 0;
    int steps = 300;
    for (int s = 1; s <= steps; s++) {
        vt_ok(vp_graph_run(g));
        vt_ok(vp_graph_read(g, vp_model_loss(m), s == 1 ? &first : &last, sizeof first));
        vt_ok(vp_graph_step(g, 3e-3f, s));
    }
    /* The matched queries' masks: for each target, the best IoU over queries
     * whose predicted class is the target's (the matching is not exposed). */
    vt_ok(vp_graph_run(g));
    int64_t Q = 6, HW = HM * HM;
    float *lg = read_out(m, "pred_logits", 2 * Q * 3), *mk = read_out(m, "pred_masks", 2 * Q * HW);
    double worst = 1;
    for (int64_t b = 0; b < 2; b++)
        for (int t = 0; t < T_MAX; t++) {
            int32_t cls = d.labels[b * T_MAX + t];
            if (cls < 0)
                continue;
            double best = 0;
            for (int64_t q = 0; q < Q; q++) {
                const float *l = lg + (b * Q + q) * 3;
                int arg = l[0] >= l[1] && l[0] >= l[2] ? 0 : l[1] >= l[2] ? 1 : 2;
                if (arg != cls)
                    continue;
                double in = 0, un = 0;
                for (int64_t i = 0; i < HW; i++) {
                    bool p = mk[(b * Q + q) * HW + i] > 0, tt = d.masks[(b * T_MAX + t) * HW + i] > 0.5f;
                    in += p && tt;
                    un += p || tt;
                }
                best = fmax(best, un > 0 ? in / un : 0);
            }
            worst = fmin(worst, best);
        }
    printf("mask2former: overfitting one batch, loss %.4g -> %.4g in %d steps, worst IoU %.3f\n",
           first, last, steps, worst);
    ck_assert_msg(last < first / 10, "loss %g -> %g", first, last);
    ck_assert_msg(worst > 0.9, "worst IoU %g", worst);
    free(lg);
    free(mk);
    free_batch(&d);
    vp_model_destroy(m);
}
END_TEST

/* ---- config errors ------------------------------------------------------------------- */

static void expect_err(int dev, const char *head, vp_status code, const char *want)
{
    vp_model *m = (vp_model *)&m;
    ck_assert_int_eq(make_model(dev, head, NULL, 1, false, &m), code);
    ck_assert_ptr_null(m);
    ck_assert_str_eq(vp_error_last(), want);
}

START_TEST(test_config_errors)
{
    expect_err(_i, "\"queries\": 5", VP_ERR_CONFIG,
               "mask2former: m.json: model.head.classes: missing: the number of classes "
               "(without the no-object class)");
    expect_err(_i, "\"classes\": 2, \"querys\": 5", VP_ERR_CONFIG,
               "mask2former: m.json: model.head.querys: unknown field, did you mean 'queries'?");
    expect_err(_i, "\"classes\": 2, \"hidden\": 18, \"heads\": 4", VP_ERR_CONFIG,
               "mask2former: m.json: model.head.heads: 4 heads do not divide hidden 18");
    expect_err(_i, "\"classes\": 2, \"levels\": 4", VP_ERR_INVALID,
               "mask2former: build: levels is 4, the backbone gives 3 feature maps");
    expect_err(_i, "\"classes\": 0", VP_ERR_CONFIG,
               "mask2former: m.json: model.head.classes: 0 is out of range (1 to 100000)");
}
END_TEST

/* ---- instance inference -------------------------------------------------------------- */

/* torch's F.interpolate(bilinear, align_corners=False) of one map. */
static double bilinear(const float *m, int h, int w, int H, int W, int y, int x)
{
    double fy = fmax((y + 0.5) * h / H - 0.5, 0), fx = fmax((x + 0.5) * w / W - 0.5, 0);
    int y0 = (int)fy, x0 = (int)fx, y1 = y0 + 1 < h ? y0 + 1 : y0, x1 = x0 + 1 < w ? x0 + 1 : x0;
    double ly = fy - y0, lx = fx - x0;
    return (1 - ly) * ((1 - lx) * m[y0 * w + x0] + lx * m[y0 * w + x1]) +
           ly * ((1 - lx) * m[y1 * w + x0] + lx * m[y1 * w + x1]);
}

START_TEST(test_instances)
{
    vp_model *m;
    enum { Q = 5, C = 2, K = 4, B = 2 };
    vt_ok(make_model(_i, "\"classes\": 2, \"queries\": 5, \"hidden\": 16, \"heads\": 2, "
                         "\"encoder_layers\": 1, \"decoder_layers\": 1, \"points\": 2, "
                         "\"encoder_ffn\": 32, \"decoder_ffn\": 32, \"mask_dim\": 16, "
                         "\"top_k\": 4", NULL, B, false, &m));
    ck_assert_ptr_null(vp_model_loss(m));
    batch d;
    make_batch(B, &d);
    vt_ok(vp_graph_write(vp_model_graph(m), vp_model_image(m), d.pixels,
                         (size_t)(B * 3 * IMG * IMG) * 4));
    vt_ok(vp_graph_run(vp_model_graph(m)));
    float *lg = read_out(m, "pred_logits", B * Q * (C + 1)), *mk = read_out(m, "pred_masks",
                                                                            B * Q * HM * HM);
    float *sc = read_out(m, "instances.scores", B * K), *im = read_out(m, "instances.masks",
                                                                        B * K * IMG * IMG);
    int32_t *lb = (int32_t *)read_out(m, "instances.labels", B * K);
    for (int b = 0; b < B; b++) {
        /* Mask2Former's instance_inference, in double: the mask score on
         * the mask upsampled to the image, as Detectron2 and HF score it */
        double pr[Q * C], ms[Q];
        for (int q = 0; q < Q; q++) {
            const float *l = lg + (b * Q + q) * (C + 1), *x = mk + (b * Q + q) * HM * HM;
            double mx = fmax(fmax(l[0], l[1]), l[2]), se = 0, in = 0, n = 0;
            for (int c = 0; c <= C; c++)
                se += exp(l[c] - mx);
            for (int c = 0; c < C; c++)
                pr[q * C + c] = exp(l[c] - mx) / se;
            for (int y = 0; y < IMG; y++)
                for (int xx = 0; xx < IMG; xx++) {
                    double v = bilinear(x, HM, HM, IMG, IMG, y, xx);
                    if (v > 0)
                        in += sigm(v), n++;
                }
            ms[q] = in / (n + 1e-6);
        }
        bool used[Q * C] = {false};
        for (int k = 0; k < K; k++) {
            int best = -1;
            for (int i = 0; i < Q * C; i++)
                if (!used[i] && (best < 0 || pr[i] > pr[best]))
                    best = i;
            used[best] = true;
            int q = best / C;
            ck_assert_int_eq(lb[b * K + k], best % C);
            ck_assert_msg(fabs(sc[b * K + k] - pr[best] * ms[q]) <= 1e-5,
                          "score %d,%d: %g, want %g", b, k, sc[b * K + k], pr[best] * ms[q]);
            /* its mask, upsampled from 16x16 to the image's 32x32 */
            const float *x = mk + (b * Q + q) * HM * HM, *u = im + (b * K + k) * IMG * IMG;
            for (int y = 0; y < IMG; y++)
                for (int xx = 0; xx < IMG; xx++)
                    ck_assert_msg(fabs(u[y * IMG + xx] - bilinear(x, HM, HM, IMG, IMG, y, xx)) <
                                  1e-4, "mask %d,%d at %d,%d", b, k, y, xx);
        }
    }
    free(lg);
    free(mk);
    free(sc);
    free(im);
    free(lb);
    free_batch(&d);
    vp_model_destroy(m);
}
END_TEST

/* ---- parameters and sites ----------------------------------------------------------- */

static int64_t head_params(vp_model *m)
{
    const vp_build *b = vp_model_build(m);
    int64_t n = 0;
    for (uint32_t i = 0; i < vp_build_param_count(b); i++)
        if (!strncmp(vp_gt_name(vp_build_param_at(b, i)->t), "head.", 5))
            n += vp_gt_nelem(vp_build_param_at(b, i)->t);
    return n;
}

START_TEST(test_param_counts)
{
    /* d = 16, 2 heads, 3 levels of 16 channels, 2 points, 1 encoder layer
     * (FFN 32), mask_dim 16, 2 classes, 5 queries, decoder FFN 32:
     *   pixel decoder: input_proj 3 x (16*16+16 + 2*16) = 912; level_embed 3*16 = 48;
     *     encoder layer: value_proj 272 + sampling_offsets 16*24+24 = 408
     *       + attention_weights 16*12+12 = 204 + output_proj 272 + norm1 32
     *       + linear1 16*32+32 = 544 + linear2 32*16+16 = 528 + norm2 32 = 2292;
     *     mask_features 272                                       -> 3524
     *   decoder: query_feat 80 + query_embed 80 + level_embed 48 = 208;
     *     decoder_norm 32 + class_embed 16*3+3 = 51 + mask_embed 3 x 272 = 899
     *                                                              -> 4631 with no layer
     *   per decoder layer: cross-attention 4 x 272 + norm 32 = 1120, self-attention
     *     1120, FFN 544 + 528 + norm 32 = 1104                      -> 3344 */
    const char *head = "\"classes\": 2, \"queries\": 5, \"hidden\": 16, \"heads\": 2, "
                       "\"encoder_layers\": 1, \"decoder_layers\": %d, \"points\": 2, "
                       "\"encoder_ffn\": 32, \"decoder_ffn\": 32, \"mask_dim\": 16";
    char text[512];
    int64_t want[2] = {4631, 4631 + 3344};
    for (int layers = 0; layers < 2; layers++) {
        snprintf(text, sizeof text, head, layers);
        char cfg[1024];
        snprintf(cfg, sizeof cfg, "{\"model\": {\"backbone\": %s, \"head\": {\"plugin\": "
                 "\"mask2former\", %s}}}", backbone, text);
        vp_config *c = parse(cfg);
        vp_model *m;
        vt_ok(vp_model_create(vt_device((uint32_t)_i), c,
                              &(vp_model_opts){.batch = 1, .no_compile = true}, &m));
        ck_assert_int_eq(head_params(m), want[layers]);
        vp_model_destroy(m);
        vp_cfg_free(c);
    }

    /* The study's 24 adapter places in a 6-layer encoder and 9-layer
     * decoder: every after-attention site of the head. */
    snprintf(text, sizeof text, "{\"model\": {\"backbone\": %s, \"head\": {\"plugin\": "
             "\"mask2former\", \"classes\": 2, \"queries\": 4, \"hidden\": 16, \"heads\": 2, "
             "\"encoder_layers\": 6, \"decoder_layers\": 9, \"points\": 1, \"encoder_ffn\": 8, "
             "\"decoder_ffn\": 8, \"mask_dim\": 8}}}", backbone);
    vp_config *c = parse(text);
    vp_model *m;
    vt_ok(vp_model_create(vt_device((uint32_t)_i), c,
                          &(vp_model_opts){.batch = 1, .no_compile = true}, &m));
    const vp_build *b = vp_model_build(m);
    int attn = 0, deform = 0, lin = 0;
    for (uint32_t i = 0; i < vp_build_site_count(b); i++) {
        const vp_build_site *st = vp_build_site_at(b, i);
        if (strncmp(st->path, "head.", 5))
            continue;
        attn += st->kind == VP_SITE_ATTN_OUT;
        deform += st->kind == VP_SITE_DEFORM;
        lin += st->kind == VP_SITE_LINEAR;
    }
    ck_assert_int_eq(attn, 24);
    ck_assert_int_eq(deform, 6);
    /* 3 input projections + 6 x (4 deformable + 2 FFN) + mask_features + 9 x (8 + 2) */
    ck_assert_int_eq(lin, 3 + 36 + 1 + 90);
    vp_model_destroy(m);
    vp_cfg_free(c);
}
END_TEST

/* ---- gradients ---------------------------------------------------------------------- */

/* The head's gradients (the backbone frozen by train.trainable) against
 * finite differences of the reference executor, matching and all. */
START_TEST(test_gradients)
{
    vp_model *m;
    vt_ok(make_model(_i, "\"classes\": 2, \"queries\": 4, \"hidden\": 8, \"heads\": 2, "
                         "\"encoder_layers\": 1, \"decoder_layers\": 1, \"points\": 1, "
                         "\"encoder_ffn\": 8, \"decoder_ffn\": 8, \"mask_dim\": 8, "
                         "\"max_targets\": 3",
                     "\"train\": {\"trainable\": [\"head.*\"], \"seed\": 2}", 2, true, &m));
    batch d;
    make_batch(2, &d);
    vp_graph *g = vp_model_graph(m);
    /* Sampling offsets off the pixel grid (their init puts points on it,
     * where bilinear sampling has no derivative). */
    vp_gt *off = vp_graph_find(g, "head.pixel_decoder.encoder.layers.0.self_attn.sampling_offsets.bias");
    ck_assert_ptr_nonnull(off);
    float ob[16];
    ck_assert_int_le(vp_gt_nelem(off), 16);
    vt_rand(ob, (size_t)vp_gt_nelem(off), 9);
    for (int i = 0; i < (int)vp_gt_nelem(off); i++)
        ob[i] = 0.37f + 0.3f * ob[i];
    vt_ok(vp_graph_write(g, off, ob, (size_t)vp_gt_nelem(off) * 4));
    vp_gt *in[3] = {vp_model_image(m), vp_graph_find(g, "target.labels"),
                    vp_graph_find(g, "target.masks")};
    vp_verify r;
    vt_ok(vp_verify_graph(g, vp_model_loss(m), NULL, 3, in,
                          (const void *[]){d.pixels, d.labels, d.masks}, 3, &r));
    printf("mask2former: loss %.7g (reference %.7g), gradients of %u parameters (%llu "
           "elements) within %.2g\n", r.loss_dev, r.loss_ref, r.params_checked,
           (unsigned long long)r.grad_checked, r.grad_err);
    ck_assert_msg(fabs(r.loss_dev - r.loss_ref) <= 1e-4 * fabs(r.loss_ref), "loss %g vs %g",
                  r.loss_dev, r.loss_ref);
    ck_assert_msg(r.grad_err < 2e-3, "gradient error %g at %s", r.grad_err, r.grad_worst);
    free_batch(&d);
    vp_model_destroy(m);
}
END_TEST

int main(void)
{
    Suite *s = suite_create("m2f");
    TCase *tc = vt_tcase("m2f");
    tcase_set_timeout(tc, 600);
    vt_add_per_device(tc, test_config_errors, NULL);
    vt_add_per_device(tc, test_loss_reference, NULL);
    vt_add_per_device(tc, test_instances, NULL);
    vt_add_per_device(tc, test_param_counts, NULL);
    vt_add_per_device(tc, test_gradients, NULL);
    vt_add_per_device(tc, test_overfit, NULL);
    suite_add_tcase(s, tc);
    return vt_run(s);
}
