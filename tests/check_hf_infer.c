/*
 * The mask2former head's HF variant's instance inference: Hugging Face's
 * Mask2FormerImageProcessor.post_process_instance_segmentation (transformers
 * v4.57.6) reimplemented here in double from HF's code and compared with
 * instances.scores, .labels and .masks: on the tiny Swin + Mask2Former of
 * tests/data/hf-mask2former (its own logits and HF's reference logits),
 * with a score threshold, and on hand-made predictions (every class
 * probability tied, masks constant over the image, some of them empty)
 * whose instances are worked out by hand. Also the config's errors.
 */
#include <math.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "config/config.h"
#include "graph/graph.h"
#include "harness.h"
#include "io/safetensors.h"
#include "model/build.h"
#include "model/model.h"
#include "util/error.h"

/* The tiny model: 2 images of 64 x 64, 10 queries, 5 classes, mask logits
 * at stride 4 (16 x 16). */
enum { B = 2, Q = 10, C = 5, HM = 16, IMG = 64 };

static char data[4096];

static void set_data(void)
{
    const char *src = getenv("VPEFT_SRCDIR");
    snprintf(data, sizeof data, "%s/tests/data/hf-mask2former", src ? src : "..");
}

/* A checkpoint directory of the shared config and weights; dir receives
 * its path. */
static void make_ckpt(char *dir, size_t n)
{
    const char *tmp = getenv("TMPDIR");
    snprintf(dir, n, "%s/hfinfer.XXXXXX", tmp ? tmp : "/tmp");
    ck_assert_ptr_nonnull(mkdtemp(dir));
    ck_assert_int_eq(vt_sh("ln -s '%s/shared_config.json' '%s/config.json'", data, dir), 0);
    ck_assert_int_eq(vt_sh("ln -s '%s/shared_weights.safetensors' '%s/model.safetensors'", data,
                           dir), 0);
}

/* The inference model with the head's extra fields (may be ""). */
static vp_status model_from(int dev, const char *dir, const char *extra, vp_model **m)
{
    char json[8800];
    snprintf(json, sizeof json, "{\"model\": {\"hf\": \"%s\"%s%s}}", dir, *extra ? ", " : "",
             extra);
    vp_config *c;
    vt_ok(vp_cfg_parse(json, strlen(json), "run.json", &c));
    vp_status st = vp_model_create(vt_device((uint32_t)dev), c,
                                   &(vp_model_opts){.batch = B, .train = false}, m);
    vp_cfg_free(c);
    return st;
}

/* The same model with the head's entry written out (model.hf's expansion
 * by hand, its weights through model.weights). */
static vp_status model_expanded(int dev, const char *dir, const char *head, vp_model **m)
{
    char json[17000];
    snprintf(json, sizeof json, "{\"model\": {\"backbone\": {\"plugin\": \"swin\", \"hf\": "
             "\"%s\", \"names\": \"mask2former\"}, \"head\": {\"plugin\": \"mask2former\", "
             "\"hf\": \"%s\", %s}, \"weights\": \"%s/model.safetensors\"}}", dir, dir, head, dir);
    vp_config *c;
    vt_ok(vp_cfg_parse(json, strlen(json), "run.json", &c));
    vp_status st = vp_model_create(vt_device((uint32_t)dev), c,
                                   &(vp_model_opts){.batch = B, .train = false}, m);
    vp_cfg_free(c);
    return st;
}

static float *read_st(const vp_st *f, const char *key, size_t want)
{
    const vp_st_tensor *t = vp_st_find(f, key);
    ck_assert_msg(t != NULL, "reference has no %s", key);
    float *x = malloc(want * sizeof *x);
    vt_ok(vp_st_read_f32(f, key, x, want));
    return x;
}

static void *read_out(vp_model *m, const char *name, size_t n)
{
    vp_gt *t = vp_model_output(m, name);
    ck_assert_msg(t != NULL, "the model has no output %s", name);
    ck_assert_int_eq((size_t)vp_gt_nelem(t), n);
    float *x = malloc(n * sizeof *x);
    vt_ok(vp_graph_read(vp_model_graph(m), t, x, n * sizeof *x));
    return x;
}

static void run_on_pixels(vp_model *m)
{
    char path[4300];
    snprintf(path, sizeof path, "%s/shared_io.safetensors", data);
    vp_st *io;
    vt_ok(vp_st_open(path, &io));
    float *px = read_st(io, "pixel_values", (size_t)B * 3 * IMG * IMG);
    vp_st_close(io);
    vt_ok(vp_graph_write(vp_model_graph(m), vp_model_image(m), px,
                         (size_t)B * 3 * IMG * IMG * sizeof *px));
    free(px);
    vt_ok(vp_graph_run(vp_model_graph(m)));
}

/* ---- HF's post_process_instance_segmentation, in double ----------------------------- */

/* torch's F.interpolate(bilinear, align_corners=False) of one map. */
static double bilinear(const float *m, int h, int w, int oh, int ow, int y, int x)
{
    double fy = fmax((y + 0.5) * h / oh - 0.5, 0), fx = fmax((x + 0.5) * w / ow - 0.5, 0);
    int y0 = (int)fy, x0 = (int)fx, y1 = y0 + 1 < h ? y0 + 1 : y0, x1 = x0 + 1 < w ? x0 + 1 : x0;
    double ly = fy - y0, lx = fx - x0;
    return (1 - ly) * ((1 - lx) * m[y0 * w + x0] + lx * m[y0 * w + x1]) +
           ly * ((1 - lx) * m[y1 * w + x0] + lx * m[y1 * w + x1]);
}

typedef struct inst {
    int q;            /* the query */
    int label;        /* -1: not returned (empty mask or score below the threshold) */
    double score;     /* 0 when not returned */
    double near_zero; /* the smallest |upsampled logit| (a pixel that may flip) */
    int area;         /* pixels > 0 */
} inst;

/* One image: cls (Q, C + 1) logits, masks (Q, HM, HM) logits; the top k
 * (query, class) pairs, masks interpolated to IMG x IMG (HF: 384 x 384, the
 * model's input there) into up (k, IMG * IMG).
 *
 *   scores = softmax(mask_cls)[:, :-1]; labels = arange(C).repeat(Q)
 *   scores_per_image, topk = scores.flatten(0, 1).topk(k); labels = labels[topk]
 *   q = topk // C; pred_masks = (mask_pred[q] > 0)
 *   mask_score = (sigmoid(mask_pred) * pred_masks).sum / (pred_masks.sum + 1e-6)
 *   pred_scores = scores_per_image * mask_score
 *   kept: not all(pred_masks == 0) and score >= threshold
 *
 * torch.topk's order among equal values is not specified: the lower
 * flattened index first, as vpeft documents. */
static void hf_reference(const float *cls, const float *masks, int k, double threshold,
                         inst *out, double *up)
{
    double p[Q * C];
    for (int q = 0; q < Q; q++) {
        const float *l = cls + q * (C + 1);
        double mx = l[0], se = 0;
        for (int c = 1; c <= C; c++)
            mx = fmax(mx, l[c]);
        for (int c = 0; c <= C; c++)
            se += exp(l[c] - mx);
        for (int c = 0; c < C; c++)
            p[q * C + c] = exp(l[c] - mx) / se;
    }
    bool used[Q * C] = {false};
    for (int j = 0; j < k; j++) {
        int best = -1;
        for (int i = 0; i < Q * C; i++)
            if (!used[i] && (best < 0 || p[i] > p[best]))
                best = i;
        used[best] = true;
        int q = best / C;
        double *u = up + (size_t)j * IMG * IMG, s = 0, n = 0, nz = INFINITY;
        for (int y = 0; y < IMG; y++)
            for (int x = 0; x < IMG; x++) {
                double v = bilinear(masks + q * HM * HM, HM, HM, IMG, IMG, y, x);
                u[y * IMG + x] = v;
                nz = fmin(nz, fabs(v));
                if (v > 0) {
                    s += 1 / (1 + exp(-v));
                    n++;
                }
            }
        double score = p[best] * (s / (n + 1e-6));
        bool keep = n > 0 && score >= threshold;
        out[j] = (inst){q, keep ? best % C : -1, keep ? score : 0, nz, (int)n};
    }
}

typedef struct got {
    float *scores, *masks;
    int32_t *labels;
    int K;
} got;

static got read_instances(vp_model *m)
{
    vp_gt *s = vp_model_output(m, "instances.scores");
    ck_assert_ptr_nonnull(s);
    int K = (int)vp_gt_shape(s)[1];
    vp_gt *mk = vp_model_output(m, "instances.masks");
    ck_assert_ptr_nonnull(mk);
    ck_assert_int_eq(vp_gt_ndim(mk), 4);
    ck_assert_int_eq(vp_gt_shape(mk)[2], IMG);
    ck_assert_int_eq(vp_gt_shape(mk)[3], IMG);
    return (got){read_out(m, "instances.scores", (size_t)B * K),
                 read_out(m, "instances.masks", (size_t)B * K * IMG * IMG),
                 read_out(m, "instances.labels", (size_t)B * K), K};
}

static void free_got(got *g)
{
    free(g->scores);
    free(g->masks);
    free(g->labels);
}

/* vpeft's instances of image b against the reference's from cls and
 * masks: labels and order exactly, scores within tol, masks within 1e-5 of
 * their largest magnitude. Returns the largest score difference; counts
 * the kept and dropped instances. */
static double compare(const got *g, int b, const float *cls, const float *masks,
                      double threshold, double tol, int *kept, int *dropped)
{
    int K = g->K;
    inst *ref = malloc((size_t)K * sizeof *ref);
    double *up = malloc((size_t)K * IMG * IMG * sizeof *up), worst = 0;
    hf_reference(cls, masks, K, threshold, ref, up);
    for (int k = 0; k < K; k++) {
        int32_t lab = g->labels[b * K + k];
        double sc = g->scores[b * K + k];
        ck_assert_msg(lab == ref[k].label, "image %d instance %d: label %d, HF's %d (query %d, "
                      "score %.7g, area %d)", b, k, lab, ref[k].label, ref[k].q, ref[k].score,
                      ref[k].area);
        ck_assert_msg(fabs(sc - ref[k].score) <= tol, "image %d instance %d: score %.8g, HF's "
                      "%.8g", b, k, sc, ref[k].score);
        worst = fmax(worst, fabs(sc - ref[k].score));
        *kept += lab >= 0;
        *dropped += lab < 0;
        const float *u = g->masks + (size_t)(b * K + k) * IMG * IMG;
        const double *w = up + (size_t)k * IMG * IMG;
        double e = 0, mx = 0;
        for (int i = 0; i < IMG * IMG; i++) {
            e = fmax(e, fabs(u[i] - w[i]));
            mx = fmax(mx, fabs(w[i]));
        }
        ck_assert_msg(e <= 1e-5 * fmax(mx, 1), "image %d instance %d (query %d): mask differs "
                      "by %.3g", b, k, ref[k].q, e);
        /* the same pixels inside as the reference's, pixels at 0 aside */
        int area = 0;
        for (int i = 0; i < IMG * IMG; i++)
            area += u[i] > 0;
        if (ref[k].near_zero > 1e-5)
            ck_assert_int_eq(area, ref[k].area);
    }
    free(ref);
    free(up);
    return worst;
}

/* ---- tests ------------------------------------------------------------------------- */

/* The tiny model's own predictions, and HF's reference logits (which they
 * match to 2e-6), through HF's post-processing; K = num_queries, every
 * non-empty instance kept (score_threshold 0). */
START_TEST(test_tiny_model)
{
    set_data();
    char dir[4200];
    make_ckpt(dir, sizeof dir);
    vp_model *m;
    vt_ok(model_from(_i, dir, "", &m));
    run_on_pixels(m);
    got g = read_instances(m);
    ck_assert_int_eq(g.K, Q); /* HF's k: num_queries */
    float *cls = read_out(m, "class_queries_logits", (size_t)B * Q * (C + 1));
    float *mk = read_out(m, "masks_queries_logits", (size_t)B * Q * HM * HM);
    int kept = 0, dropped = 0;
    double worst = 0;
    for (int b = 0; b < B; b++)
        worst = fmax(worst, compare(&g, b, cls + b * Q * (C + 1), mk + b * Q * HM * HM, 0, 2e-6,
                                    &kept, &dropped));
    printf("note: own logits: %d instances kept, %d dropped, scores within %.2e\n", kept,
           dropped, worst);
    ck_assert_int_gt(kept, 0);

    /* HF's own logits: the same instances, scores within 1e-5 */
    char path[4300];
    snprintf(path, sizeof path, "%s/shared_io.safetensors", data);
    vp_st *io;
    vt_ok(vp_st_open(path, &io));
    float *hc = read_st(io, "class_queries_logits", (size_t)B * Q * (C + 1));
    float *hm = read_st(io, "masks_queries_logits", (size_t)B * Q * HM * HM);
    vp_st_close(io);
    kept = dropped = 0;
    worst = 0;
    for (int b = 0; b < B; b++)
        worst = fmax(worst, compare(&g, b, hc + b * Q * (C + 1), hm + b * Q * HM * HM, 0, 1e-5,
                                    &kept, &dropped));
    printf("note: HF's logits: scores within %.2e\n", worst);

    /* A threshold between two of the scores: HF's `score >= threshold`. */
    float s[B * Q];
    int n = 0;
    for (int i = 0; i < B * g.K; i++)
        if (g.labels[i] >= 0)
            s[n++] = g.scores[i];
    for (int i = 1; i < n; i++) /* insertion sort */
        for (int j = i; j > 0 && s[j - 1] > s[j]; j--) {
            float t = s[j];
            s[j] = s[j - 1];
            s[j - 1] = t;
        }
    double thr = 0.5 * ((double)s[n / 2 - 1] + s[n / 2]);
    ck_assert_msg(s[n / 2] - s[n / 2 - 1] > 1e-5, "no gap between scores to put a threshold");
    vp_model *m2;
    char extra[64];
    snprintf(extra, sizeof extra, "\"score_threshold\": %.9g", thr);
    vt_ok(model_expanded(_i, dir, extra, &m2));
    run_on_pixels(m2);
    got g2 = read_instances(m2);
    kept = dropped = 0;
    for (int b = 0; b < B; b++)
        compare(&g2, b, cls + b * Q * (C + 1), mk + b * Q * HM * HM, thr, 2e-6, &kept, &dropped);
    printf("note: score_threshold %.4g: %d kept, %d dropped\n", thr, kept, dropped);
    ck_assert_int_eq(kept, n - n / 2);
    /* model.hf passes score_threshold on: the same instances */
    vp_model *m3;
    vt_ok(model_from(_i, dir, extra, &m3));
    run_on_pixels(m3);
    got g3 = read_instances(m3);
    ck_assert_int_eq(g3.K, g2.K);
    ck_assert(!memcmp(g3.labels, g2.labels, (size_t)(B * g2.K) * sizeof *g2.labels));
    ck_assert(!memcmp(g3.scores, g2.scores, (size_t)(B * g2.K) * sizeof *g2.scores));
    free_got(&g3);
    vp_model_destroy(m3);
    free_got(&g2);
    vp_model_destroy(m2);

    free(hc);
    free(hm);
    free(cls);
    free(mk);
    free_got(&g);
    vp_model_destroy(m);
    vt_rm_rf(dir);
}
END_TEST

static vp_gt *param(vp_model *m, const char *name)
{
    const vp_build *b = vp_model_build(m);
    for (uint32_t i = 0; i < vp_build_param_count(b); i++)
        if (!strcmp(vp_gt_name(vp_build_param_at(b, i)->t), name))
            return vp_build_param_at(b, i)->t;
    ck_abort_msg("no parameter %s", name);
    return NULL;
}

static void set_param(vp_model *m, const char *name, const float *x, size_t n)
{
    vp_gt *t = param(m, name);
    ck_assert_int_eq((size_t)vp_gt_nelem(t), n);
    vt_ok(vp_graph_write(vp_model_graph(m), t, x, n * sizeof *x));
}

/* Hand-made predictions. The class predictor's weight 0 and bias
 * (1, 1, 0, 0, 0, 0): every query's classes 0 and 1 tie at p = e / (2e +
 * 4), the 20 pairs ahead of all others, so the top 10 are the flattened
 * indices 0..9 in order: queries 0..4, labels 0, 1, 0, 1, ... The mask
 * projection's weight 0: the mask features are its bias v at every pixel,
 * so query q's mask logit is one number L_q over the whole image, and its
 * mask score sigmoid(L_q) n / (n + 1e-6) with n = 64 * 64 when L_q > 0;
 * L_q <= 0 is an empty mask, not returned. v is the first of a few
 * directions that gives both kinds among queries 0..4 of image 0. */
START_TEST(test_by_hand)
{
    set_data();
    char dir[4200];
    make_ckpt(dir, sizeof dir);
    vp_model *m;
    vt_ok(model_from(_i, dir, "", &m));
    float w[(C + 1) * 32] = {0}, bias[C + 1] = {1, 1, 0, 0, 0, 0}, pw[32 * 32] = {0}, v[32];
    set_param(m, "class_predictor.weight", w, sizeof w / sizeof w[0]);
    set_param(m, "class_predictor.bias", bias, C + 1);
    set_param(m, "model.pixel_level_module.decoder.mask_projection.weight", pw, 32 * 32);
    float *mk = NULL;
    int found = -1;
    for (int d = 0; d < 64 && found < 0; d++) {
        for (int i = 0; i < 32; i++)
            v[i] = (float)(i == d % 32 ? (d < 32 ? 1 : -1) : 0.05 * ((i * 7 + d) % 5 - 2));
        set_param(m, "model.pixel_level_module.decoder.mask_projection.bias", v, 32);
        vt_ok(vp_graph_run(vp_model_graph(m)));
        free(mk);
        mk = read_out(m, "masks_queries_logits", (size_t)B * Q * HM * HM);
        int pos = 0, neg = 0;
        for (int q = 0; q < 5; q++) {
            pos += mk[q * HM * HM] > 1e-3;
            neg += mk[q * HM * HM] < -1e-3;
        }
        if (pos && neg)
            found = d;
    }
    ck_assert_msg(found >= 0, "no mask projection bias gives both empty and full masks");
    got g = read_instances(m);
    ck_assert_int_eq(g.K, Q);
    double p = exp(1) / (2 * exp(1) + 4), n = IMG * IMG;
    int kept = 0, dropped = 0;
    for (int b = 0; b < B; b++)
        for (int k = 0; k < g.K; k++) {
            int q = k / 2;
            const float *x = mk + (b * Q + q) * HM * HM;
            for (int i = 1; i < HM * HM; i++) /* one number per query */
                ck_assert_msg(fabs(x[i] - x[0]) <= 1e-6 * fmax(fabs(x[0]), 1), "query %d: "
                              "mask logits %g and %g", q, x[i], x[0]);
            double L = x[0];
            bool keep = L > 0;
            double want = keep ? p * (1 / (1 + exp(-L))) * n / (n + 1e-6) : 0;
            ck_assert_int_eq(g.labels[b * g.K + k], (keep ? k % 2 : -1));
            ck_assert_msg(fabs(g.scores[b * g.K + k] - want) <= 1e-6, "image %d instance %d: "
                          "score %.8g, want %.8g", b, k, g.scores[b * g.K + k], want);
            const float *u = g.masks + (size_t)(b * g.K + k) * IMG * IMG;
            for (int i = 0; i < IMG * IMG; i++)
                ck_assert_msg(fabs(u[i] - L) <= 1e-6 * fmax(fabs(L), 1), "image %d instance %d: "
                              "mask %g, query %d's logit %g", b, k, u[i], q, L);
            kept += keep;
            dropped += !keep;
        }
    printf("note: bias direction %d: %d kept, %d empty\n", found, kept, dropped);
    ck_assert_int_gt(kept, 0);
    ck_assert_int_gt(dropped, 0);
    free(mk);
    free_got(&g);
    vp_model_destroy(m);
    vt_rm_rf(dir);
}
END_TEST

/* K: top_k below and above Q * C. */
START_TEST(test_top_k)
{
    set_data();
    char dir[4200];
    make_ckpt(dir, sizeof dir);
    static const struct {
        const char *extra;
        int K;
    } cases[] = {{"\"top_k\": 3", 3}, {"\"top_k\": 1000", Q * C}};
    for (size_t c = 0; c < sizeof cases / sizeof cases[0]; c++) {
        vp_model *m;
        vt_ok(model_from(_i, dir, cases[c].extra, &m));
        run_on_pixels(m);
        got g = read_instances(m);
        ck_assert_int_eq(g.K, cases[c].K);
        float *cls = read_out(m, "class_queries_logits", (size_t)B * Q * (C + 1));
        float *mk = read_out(m, "masks_queries_logits", (size_t)B * Q * HM * HM);
        int kept = 0, dropped = 0;
        for (int b = 0; b < B; b++)
            compare(&g, b, cls + b * Q * (C + 1), mk + b * Q * HM * HM, 0, 2e-6, &kept, &dropped);
        printf("note: %s: K %d, %d kept, %d dropped\n", cases[c].extra, g.K, kept, dropped);
        free(cls);
        free(mk);
        free_got(&g);
        vp_model_destroy(m);
    }
    vt_rm_rf(dir);
}
END_TEST

START_TEST(test_config_errors)
{
    set_data();
    char dir[4200];
    make_ckpt(dir, sizeof dir);
    static const struct {
        const char *extra, *msg;
    } cases[] = {
        {"\"score_threshold\": 1.5", "score_threshold: 1.5 is out of range (0 to 1)"},
        {"\"score_threshold\": -0.1", "score_threshold: -0.1 is out of range (0 to 1)"},
        {"\"top_k\": 0", "top_k: must be at least 1, got 0"},
    };
    for (size_t c = 0; c < sizeof cases / sizeof cases[0]; c++) {
        vp_model *m = NULL;
        vp_status st = model_expanded(0, dir, cases[c].extra, &m);
        ck_assert_int_eq(st, VP_ERR_CONFIG);
        ck_assert_ptr_null(m);
        ck_assert_msg(strstr(vp_error_last(), cases[c].msg) != NULL, "%s: got \"%s\"",
                      cases[c].extra, vp_error_last());
    }
    vt_rm_rf(dir);
}
END_TEST

int main(void)
{
    Suite *s = suite_create("hf_infer");
    TCase *tc = vt_tcase("hf_infer");
    tcase_set_timeout(tc, 600);
    tcase_add_test(tc, test_config_errors);
    vt_add_per_device(tc, test_tiny_model, NULL);
    vt_add_per_device(tc, test_by_hand, NULL);
    vt_add_per_device(tc, test_top_k, NULL);
    suite_add_tcase(s, tc);
    return vt_run(s);
}
