/*
 * COCO segmentation evaluation (cocoeval.h): loading COCO ground truth and
 * results files, then pycocotools' COCOeval in its three steps with its
 * default parameters: evaluateImg per (category, area range, image) with
 * the crowd and ignore rules, accumulate per (category, area range, max
 * detections) into precision at 101 recall points and recall, summarize
 * into the 12 printed numbers. Orders that decide ties follow numpy's
 * stable mergesort (input order), and the means numpy's pairwise sum, so
 * that the numbers agree with pycocotools' to rounding.
 */
#include <cjson/cJSON.h>
#include <errno.h>
#include <float.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "eval/cocoeval.h"
#include "util/error.h"
#include "util/file.h"

enum { T = 10, R = 101, A = 4, M = 3 };
static const int max_dets[M] = {1, 10, 100};
static const double area_rng[A][2] = {
    {0, 1e5 * 1e5}, {0, 32 * 32}, {32 * 32, 96 * 96}, {96 * 96, 1e5 * 1e5}};

typedef struct gt_ann {
    int64_t id;
    double area;
    int crowd;
    vp_rle rle;
} gt_ann;

struct vp_coco_gt {
    size_t ni, nk, na;
    int64_t *img_id, *img_h, *img_w; /* sorted by id */
    int64_t *cat_id;                 /* sorted */
    gt_ann *ann;                     /* grouped by cell k * ni + i, file order within */
    size_t *cell;                    /* ann[cell[c] .. cell[c + 1]) */
};

_Static_assert(sizeof(vp_coco_stats) == 12 * sizeof(double), "vp_coco_stats: 12 doubles");

typedef struct det {
    size_t img, cat, idx; /* idx: position in the results, the tie-breaker */
    double score, area;
    const vp_rle *rle;
} det;

/* ---- JSON helpers ---- */

static vp_status read_json(const char *path, cJSON **out)
{
    *out = NULL;
    FILE *f;
    vp_status fst = vp_file_fopen_read(path, &f);
    if (fst)
        return fst;
    size_t cap = 1 << 16, n = 0;
    char *text = malloc(cap);
    while (text) {
        n += fread(text + n, 1, cap - n - 1, f);
        if (n < cap - 1)
            break;
        char *g = realloc(text, cap * 2);
        if (!g)
            free(text);
        text = g;
        cap *= 2;
    }
    int err = ferror(f);
    fclose(f);
    if (!text)
        return vp_error_set(VP_ERR_NOMEM, "%s: out of host memory", path);
    if (err) {
        free(text);
        return vp_error_set(VP_ERR_IO, "%s: read error", path);
    }
    text[n] = '\0';
    const char *end = NULL;
    *out = cJSON_ParseWithOpts(text, &end, 1);
    long at = end ? (long)(end - text) : -1;
    free(text);
    if (!*out)
        return vp_error_set(VP_ERR_FORMAT, "%s: not valid JSON (near byte %ld)", path, at);
    return VP_OK;
}

/* A number field of an object; 0 when missing or not a number. */
static int num(const cJSON *o, const char *key, double *v)
{
    const cJSON *j = cJSON_GetObjectItemCaseSensitive(o, key);
    if (!cJSON_IsNumber(j) || !isfinite(j->valuedouble))
        return 0;
    *v = j->valuedouble;
    return 1;
}

/* An integral id; 0 when missing, not a number or not integral. */
static int id_field(const cJSON *o, const char *key, int64_t *v)
{
    double d;
    if (!num(o, key, &d) || d != floor(d) || fabs(d) > 9e15)
        return 0;
    *v = (int64_t)d;
    return 1;
}

static int cmp_i64(const void *a, const void *b)
{
    int64_t x = *(const int64_t *)a, y = *(const int64_t *)b;
    return (x > y) - (x < y);
}

/* Index of id in a sorted list, or (size_t)-1. */
static size_t find_id(const int64_t *ids, size_t n, int64_t id)
{
    const int64_t *p = bsearch(&id, ids, n, sizeof *ids, cmp_i64);
    return p ? (size_t)(p - ids) : (size_t)-1;
}

vp_status vp_coco_segm_to_rle(const cJSON *seg, int64_t h, int64_t w, int allow_poly,
                              const char *what, vp_rle *out)
{
    out->counts = NULL;
    out->n = 0;
    if (cJSON_IsArray(seg) && allow_poly) {
        int np = cJSON_GetArraySize(seg);
        if (np == 0)
            return vp_error_set(VP_ERR_FORMAT, "%s: an empty polygon list", what);
        /* pycocotools reads [[x, y, w, h], ...] (4 numbers first) as boxes. */
        int boxes = cJSON_GetArraySize(seg->child) == 4;
        vp_rle acc = {0};
        vp_status st = VP_OK;
        int p = 0;
        /* The linked lists walked in order: cJSON_GetArrayItem(i) walks
         * from the head each time, quadratic on a long polygon. */
        for (const cJSON *poly = seg->child; poly && !st; poly = poly->next, p++) {
            int nc = cJSON_GetArraySize(poly);
            if (!cJSON_IsArray(poly) || (boxes ? nc != 4 : nc < 6 || nc % 2)) {
                st = vp_error_set(VP_ERR_FORMAT, "%s: polygon %d is not a list of %s", what, p,
                                  boxes ? "4 numbers (a box)" : "at least 3 (x, y) pairs");
                break;
            }
            double xy[8], *c = boxes ? xy : malloc((size_t)nc * sizeof *c);
            if (!c) {
                st = vp_error_set(VP_ERR_NOMEM, "%s: out of host memory", what);
                break;
            }
            int i = 0;
            for (const cJSON *e = poly->child; e && i < nc && !st; e = e->next, i++) {
                if (!cJSON_IsNumber(e))
                    st = vp_error_set(VP_ERR_FORMAT, "%s: polygon %d: item %d is not a number",
                                      what, p, i);
                else
                    c[i] = e->valuedouble;
            }
            if (!st && boxes) {
                double x0 = c[0], x1 = c[0] + c[2], y0 = c[1], y1 = c[1] + c[3];
                double q[8] = {x0, y0, x0, y1, x1, y1, x1, y0};
                memcpy(xy, q, sizeof q);
                nc = 8;
            }
            vp_rle r = {0};
            if (!st && (st = vp_coco_poly_to_rle(c, (size_t)nc / 2, h, w, &r)) != VP_OK)
                vp_error_wrap(st, "%s: polygon %d", what, p);
            if (c != xy)
                free(c);
            if (st)
                break;
            if (p == 0) {
                acc = r;
                continue;
            }
            /* Several polygons: their union (pycocotools' merge), run by
             * run: a dense mask would be h * w bytes. */
            vp_rle u;
            st = vp_rle_union(&acc, &r, &u);
            vp_rle_free(&r);
            vp_rle_free(&acc);
            if (st)
                vp_error_wrap(st, "%s", what);
            acc = u;
        }
        if (st)
            vp_rle_free(&acc);
        else
            *out = acc;
        return st;
    }
    const cJSON *size = cJSON_GetObjectItemCaseSensitive(seg, "size");
    const cJSON *counts = cJSON_GetObjectItemCaseSensitive(seg, "counts");
    if (!cJSON_IsObject(seg) || !size || !counts)
        return vp_error_set(VP_ERR_FORMAT, "%s: segmentation is not %s{\"size\", \"counts\"}",
                            what, allow_poly ? "a polygon list or " : "");
    const cJSON *sh = cJSON_GetArrayItem(size, 0), *sw = cJSON_GetArrayItem(size, 1);
    if (!cJSON_IsArray(size) || cJSON_GetArraySize(size) != 2 || !cJSON_IsNumber(sh) ||
        !cJSON_IsNumber(sw))
        return vp_error_set(VP_ERR_FORMAT, "%s: \"size\" is not [height, width]", what);
    if (sh->valuedouble != (double)h || sw->valuedouble != (double)w)
        return vp_error_set(VP_ERR_FORMAT, "%s: the RLE size is %g x %g, the image is %lld x %lld",
                            what, sh->valuedouble, sw->valuedouble, (long long)h, (long long)w);
    vp_status st;
    if (cJSON_IsString(counts)) {
        st = vp_rle_from_string(counts->valuestring, h, w, out);
    } else if (cJSON_IsArray(counts)) {
        int nc = cJSON_GetArraySize(counts);
        uint32_t *c = malloc(((size_t)nc + 1) * sizeof *c);
        if (!c)
            return vp_error_set(VP_ERR_NOMEM, "%s: out of host memory", what);
        int i = 0;
        const cJSON *e;
        cJSON_ArrayForEach(e, counts) {
            if (!cJSON_IsNumber(e) || e->valuedouble < 0 || e->valuedouble > UINT32_MAX ||
                e->valuedouble != floor(e->valuedouble)) {
                free(c);
                return vp_error_set(VP_ERR_FORMAT, "%s: count %d is not a run length", what, i);
            }
            c[i++] = (uint32_t)e->valuedouble;
        }
        st = vp_rle_from_counts(c, (size_t)nc, h, w, out);
        free(c);
    } else {
        return vp_error_set(VP_ERR_FORMAT, "%s: \"counts\" is neither a string nor a list", what);
    }
    if (st)
        return vp_error_wrap(st, "%s", what);
    return VP_OK;
}

/* ---- ground truth ---- */

void vp_coco_gt_destroy(vp_coco_gt *gt)
{
    if (!gt)
        return;
    for (size_t i = 0; gt->ann && i < gt->na; i++)
        vp_rle_free(&gt->ann[i].rle);
    free(gt->ann);
    free(gt->cell);
    free(gt->img_id);
    free(gt->img_h);
    free(gt->img_w);
    free(gt->cat_id);
    free(gt);
}

typedef struct img_rec {
    int64_t id, h, w;
} img_rec;

static int cmp_img(const void *a, const void *b)
{
    return cmp_i64(&((const img_rec *)a)->id, &((const img_rec *)b)->id);
}

static vp_status gt_from_json(const cJSON *root, const char *path, vp_coco_gt *gt)
{
    const cJSON *images = cJSON_GetObjectItemCaseSensitive(root, "images");
    const cJSON *cats = cJSON_GetObjectItemCaseSensitive(root, "categories");
    const cJSON *anns = cJSON_GetObjectItemCaseSensitive(root, "annotations");
    if (!cJSON_IsObject(root))
        return vp_error_set(VP_ERR_FORMAT, "%s: not a COCO instances object", path);
    if (!cJSON_IsArray(images) || !cJSON_IsArray(cats) || !cJSON_IsArray(anns))
        return vp_error_set(VP_ERR_FORMAT, "%s: no \"%s\" list", path,
                            !cJSON_IsArray(images) ? "images"
                            : !cJSON_IsArray(cats) ? "categories"
                                                   : "annotations");
    gt->ni = (size_t)cJSON_GetArraySize(images);
    gt->nk = (size_t)cJSON_GetArraySize(cats);
    gt->na = (size_t)cJSON_GetArraySize(anns);
    img_rec *im = malloc((gt->ni + 1) * sizeof *im);
    gt->img_id = malloc((gt->ni + 1) * sizeof *gt->img_id);
    gt->img_h = malloc((gt->ni + 1) * sizeof *gt->img_h);
    gt->img_w = malloc((gt->ni + 1) * sizeof *gt->img_w);
    gt->cat_id = malloc((gt->nk + 1) * sizeof *gt->cat_id);
    gt->ann = calloc(gt->na + 1, sizeof *gt->ann);
    gt->cell = calloc(gt->nk * gt->ni + 2, sizeof *gt->cell);
    size_t *where = malloc((gt->na + 1) * sizeof *where);
    gt_ann *tmp = calloc(gt->na + 1, sizeof *tmp);
    vp_status st = VP_OK;
    if (!im || !gt->img_id || !gt->img_h || !gt->img_w || !gt->cat_id || !gt->ann || !gt->cell ||
        !where || !tmp) {
        st = vp_error_set(VP_ERR_NOMEM, "%s: out of host memory", path);
        goto out;
    }
    size_t i = 0;
    const cJSON *e;
    cJSON_ArrayForEach(e, images) {
        double h, w;
        if (!id_field(e, "id", &im[i].id) || !num(e, "height", &h) || !num(e, "width", &w) ||
            h < 0 || w < 0 || h != floor(h) || w != floor(w) || h > UINT32_MAX ||
            w > UINT32_MAX || h * w > UINT32_MAX) { /* each side: 0 x 1e23 passed the product */
            st = vp_error_set(VP_ERR_FORMAT, "%s: image %zu: no integral \"id\", \"height\" and "
                              "\"width\"", path, i);
            goto out;
        }
        if (h < 1 || w < 1) { /* here, not later in a results file's masks */
            st = vp_error_set(VP_ERR_FORMAT, "%s: image %zu: %gx%g pixels (height and width "
                              "must be at least 1)", path, i, h, w);
            goto out;
        }
        im[i].h = (int64_t)h;
        im[i++].w = (int64_t)w;
    }
    qsort(im, gt->ni, sizeof *im, cmp_img);
    for (i = 0; i < gt->ni; i++) {
        if (i && im[i].id == im[i - 1].id) {
            st = vp_error_set(VP_ERR_FORMAT, "%s: image id %lld is listed twice", path,
                              (long long)im[i].id);
            goto out;
        }
        gt->img_id[i] = im[i].id;
        gt->img_h[i] = im[i].h;
        gt->img_w[i] = im[i].w;
    }
    i = 0;
    cJSON_ArrayForEach(e, cats) {
        if (!id_field(e, "id", &gt->cat_id[i++])) {
            st = vp_error_set(VP_ERR_FORMAT, "%s: category %zu: no integral \"id\"", path, i - 1);
            goto out;
        }
    }
    qsort(gt->cat_id, gt->nk, sizeof *gt->cat_id, cmp_i64);
    for (i = 1; i < gt->nk; i++)
        if (gt->cat_id[i] == gt->cat_id[i - 1]) {
            st = vp_error_set(VP_ERR_FORMAT, "%s: category id %lld is listed twice", path,
                              (long long)gt->cat_id[i]);
            goto out;
        }
    i = 0;
    cJSON_ArrayForEach(e, anns) {
        char what[4300];
        int64_t img_id, cat_id, crowd;
        double area;
        snprintf(what, sizeof what, "%s: annotation %zu", path, i);
        static const char *const keys[] = {"id", "image_id", "category_id", "iscrowd"};
        int64_t *vals[] = {&tmp[i].id, &img_id, &cat_id, &crowd};
        const cJSON *cr = cJSON_GetObjectItemCaseSensitive(e, "iscrowd");
        for (int q = 0; q < 4; q++)
            if (q == 3 && cJSON_IsBool(cr))
                crowd = cJSON_IsTrue(cr);
            else if (!id_field(e, keys[q], vals[q])) {
                st = vp_error_set(VP_ERR_FORMAT, "%s: no integral \"%s\"", what, keys[q]);
                goto out;
            }
        if (crowd != 0 && crowd != 1) {
            st = vp_error_set(VP_ERR_FORMAT, "%s: \"iscrowd\" is not 0 or 1", what);
            goto out;
        }
        if (!num(e, "area", &area)) {
            st = vp_error_set(VP_ERR_FORMAT, "%s: no number \"area\"", what);
            goto out;
        }
        const cJSON *seg = cJSON_GetObjectItemCaseSensitive(e, "segmentation");
        if (!seg) {
            st = vp_error_set(VP_ERR_FORMAT, "%s: no \"segmentation\"", what);
            goto out;
        }
        size_t ii = find_id(gt->img_id, gt->ni, img_id), kk = find_id(gt->cat_id, gt->nk, cat_id);
        if (ii == (size_t)-1 || kk == (size_t)-1) {
            st = vp_error_set(VP_ERR_FORMAT, "%s: %s id %lld is not in \"%s\"", what,
                              ii == (size_t)-1 ? "image" : "category",
                              (long long)(ii == (size_t)-1 ? img_id : cat_id),
                              ii == (size_t)-1 ? "images" : "categories");
            goto out;
        }
        tmp[i].area = area;
        tmp[i].crowd = crowd != 0;
        if ((st = vp_coco_segm_to_rle(seg, gt->img_h[ii], gt->img_w[ii], 1, what, &tmp[i].rle)) != VP_OK)
            goto out;
        where[i] = kk * gt->ni + ii;
        gt->cell[where[i] + 1]++;
        i++;
    }
    /* Stable counting sort into cells: file order within each. */
    for (size_t c = 0; c < gt->nk * gt->ni; c++)
        gt->cell[c + 1] += gt->cell[c];
    size_t *fill = calloc(gt->nk * gt->ni + 1, sizeof *fill);
    if (!fill) {
        st = vp_error_set(VP_ERR_NOMEM, "%s: out of host memory", path);
        goto out;
    }
    for (i = 0; i < gt->na; i++) {
        gt->ann[gt->cell[where[i]] + fill[where[i]]++] = tmp[i];
        memset(&tmp[i].rle, 0, sizeof tmp[i].rle);
    }
    free(fill);
out:
    for (i = 0; tmp && i < gt->na; i++)
        vp_rle_free(&tmp[i].rle);
    free(tmp);
    free(where);
    free(im);
    return st;
}

vp_status vp_coco_gt_load(const char *path, vp_coco_gt **out)
{
    *out = NULL;
    cJSON *root;
    vp_status st = read_json(path, &root);
    if (st)
        return st;
    vp_coco_gt *gt = calloc(1, sizeof *gt);
    if (!gt) {
        cJSON_Delete(root);
        return vp_error_set(VP_ERR_NOMEM, "%s: out of host memory", path);
    }
    st = gt_from_json(root, path, gt);
    cJSON_Delete(root);
    if (st) {
        vp_coco_gt_destroy(gt);
        return st;
    }
    *out = gt;
    return VP_OK;
}

/* ---- evaluation ---- */

/* pycocotools' rleIou for one pair: a crowd region's union is the
 * detection's area; no intersection is 0. */
static double rle_iou(const vp_rle *d, const vp_rle *g, int crowd)
{
    uint64_t inter = 0, uni = 0;
    size_t a = 0, b = 0;
    uint64_t ca = d->n ? d->counts[0] : 0, cb = g->n ? g->counts[0] : 0;
    int va = 0, vb = 0;
    while (a < d->n && b < g->n) {
        uint64_t c = ca < cb ? ca : cb;
        if (va || vb) {
            uni += c;
            if (va && vb)
                inter += c;
        }
        ca -= c;
        cb -= c;
        while (!ca && ++a < d->n)
            ca = d->counts[a], va = !va;
        while (!cb && ++b < g->n)
            cb = g->counts[b], vb = !vb;
    }
    if (!inter)
        return 0;
    if (crowd) {
        uint64_t ad = 0;
        for (size_t j = 1; j < d->n; j += 2)
            ad += d->counts[j];
        uni = ad;
    }
    return (double)inter / (double)uni;
}

static int cmp_det(const void *pa, const void *pb)
{
    const det *a = *(const det *const *)pa, *b = *(const det *const *)pb;
    if (a->score != b->score)
        return a->score > b->score ? -1 : 1;
    return (a->idx > b->idx) - (a->idx < b->idx);
}

/* One evaluateImg result: nd detections (score order) of a cell for one
 * area range, their matches per IoU threshold. */
typedef struct eimg {
    int present;
    size_t nd, npig;
    const double *score;
    int64_t *dtm; /* T x nd: the matched gt id, 0 none */
    uint8_t *dtig;
} eimg;

/* A stable order by score, descending: pointers into a list of n items
 * of score s[] (ties keep index order). */
typedef struct sidx {
    double s;
    size_t i;
} sidx;

static int cmp_sidx(const void *pa, const void *pb)
{
    const sidx *a = pa, *b = pb;
    if (a->s != b->s)
        return a->s > b->s ? -1 : 1;
    return (a->i > b->i) - (a->i < b->i);
}

/* numpy's pairwise summation (what np.mean uses on a contiguous array). */
static double pairwise_sum(const double *a, size_t n)
{
    if (n < 8) {
        double r = 0;
        for (size_t i = 0; i < n; i++)
            r += a[i];
        return r;
    }
    if (n <= 128) {
        double r[8];
        size_t i;
        for (int j = 0; j < 8; j++)
            r[j] = a[j];
        for (i = 8; i < n - n % 8; i += 8)
            for (int j = 0; j < 8; j++)
                r[j] += a[i + j];
        double res = ((r[0] + r[1]) + (r[2] + r[3])) + ((r[4] + r[5]) + (r[6] + r[7]));
        for (; i < n; i++)
            res += a[i];
        return res;
    }
    size_t n2 = n / 2;
    n2 -= n2 % 8;
    return pairwise_sum(a, n2) + pairwise_sum(a + n2, n - n2);
}

/* Mean of the entries > -1 of v (n of them, numpy's C order); -1 if none. */
static double mean_valid(double *v, size_t n)
{
    size_t m = 0;
    for (size_t i = 0; i < n; i++)
        if (v[i] > -1)
            v[m++] = v[i];
    return m ? pairwise_sum(v, m) / (double)m : -1;
}

/* How evaluate() scores: every image once, or image i weight[i] times
 * (as if the ground truth held that many copies of it and the results
 * each copy's detections); with resamples > 0 also the percentile
 * bootstrap interval over images into *lo and *hi. */
typedef struct how {
    const uint32_t *weight;
    int resamples;
    uint64_t seed;
    double level;
    vp_coco_stats *lo, *hi;
} how;

static vp_status score(const vp_coco_gt *gt, const struct eimg *ev, const size_t *per_img,
                       const uint32_t *weight, vp_coco_stats *out);
static vp_status bootstrap(const vp_coco_gt *gt, const struct eimg *ev, const size_t *per_img,
                           const how *h);

static vp_status evaluate(const vp_coco_gt *gt, det *d, size_t n, const how *h,
                          vp_coco_stats *out)
{
    const size_t ni = gt->ni, nk = gt->nk, nc = ni * nk;
    double thr[T];
    const double tstep = (0.95 - 0.5) / (T - 1);
    /* np.linspace: i * step + start, the last exactly the end. */
    for (int t = 0; t < T; t++)
        thr[t] = t * tstep + 0.5;
    thr[T - 1] = 0.95;

    size_t *dcell = calloc(nc + 2, sizeof *dcell), *fill = calloc(nc + 1, sizeof *fill);
    size_t *per_img = calloc(ni + 1, sizeof *per_img); /* detections per image */
    det **dp = malloc((n + 1) * sizeof *dp);
    eimg *ev = calloc(nk * A * ni + 1, sizeof *ev);
    double *scores = malloc((n + 1) * sizeof *scores);
    vp_status st = VP_OK;
    if (!dcell || !fill || !per_img || !dp || !ev || !scores)
        goto nomem;
    for (size_t j = 0; j < n; j++) {
        dcell[d[j].cat * ni + d[j].img + 1]++;
        per_img[d[j].img]++;
    }
    for (size_t c = 0; c < nc; c++)
        dcell[c + 1] += dcell[c];
    for (size_t j = 0; j < n; j++) {
        size_t c = d[j].cat * ni + d[j].img;
        dp[dcell[c] + fill[c]++] = &d[j];
    }

    /* evaluateImg for every (category, area range, image). */
    for (size_t c = 0; c < nc; c++) {
        size_t k = c / ni, i = c % ni;
        det **cd = dp + dcell[c];
        size_t D = dcell[c + 1] - dcell[c];
        const gt_ann *g = gt->ann + gt->cell[c];
        size_t G = gt->cell[c + 1] - gt->cell[c];
        if (!D && !G)
            continue;
        qsort(cd, D, sizeof *cd, cmp_det);
        if (D > (size_t)max_dets[M - 1])
            D = (size_t)max_dets[M - 1];
        for (size_t j = 0; j < D; j++)
            scores[dcell[c] + j] = cd[j]->score;
        double *iou = malloc((D * G + 1) * sizeof *iou);
        size_t *gord = malloc((G + 1) * sizeof *gord);
        uint8_t *gig = malloc(G + 1);
        int64_t *gtm = malloc((T * G + 1) * sizeof *gtm);
        if (!iou || !gord || !gig || !gtm) {
            free(iou), free(gord), free(gig), free(gtm);
            goto nomem;
        }
        for (size_t j = 0; j < D; j++)
            for (size_t q = 0; q < G; q++)
                iou[j * G + q] = rle_iou(cd[j]->rle, &g[q].rle, g[q].crowd);
        for (int a = 0; a < A; a++) {
            eimg *e = &ev[(k * A + (size_t)a) * ni + i];
            const double lo = area_rng[a][0], hi = area_rng[a][1];
            /* gt: not ignored first, each part in file order */
            size_t ng = 0;
            e->npig = 0;
            for (int pass = 0; pass < 2; pass++)
                for (size_t q = 0; q < G; q++) {
                    int ig = g[q].crowd || g[q].area < lo || g[q].area > hi;
                    if (ig == pass)
                        gord[ng] = q, gig[ng++] = (uint8_t)ig;
                }
            for (size_t q = 0; q < G; q++)
                e->npig += !gig[q];
            e->present = 1;
            e->nd = D;
            e->score = scores + dcell[c];
            e->dtm = calloc(T * D + 1, sizeof *e->dtm);
            e->dtig = calloc(T * D + 1, 1);
            if (!e->dtm || !e->dtig) {
                free(iou), free(gord), free(gig), free(gtm);
                goto nomem;
            }
            memset(gtm, 0, (T * G + 1) * sizeof *gtm);
            for (int t = 0; t < T; t++)
                for (size_t j = 0; j < D; j++) {
                    double best = thr[t] < 1 - 1e-10 ? thr[t] : 1 - 1e-10;
                    ptrdiff_t m = -1;
                    for (size_t q = 0; q < G; q++) {
                        if (gtm[t * G + q] > 0 && !g[gord[q]].crowd)
                            continue;
                        if (m > -1 && !gig[m] && gig[q])
                            break;
                        double v = iou[j * G + gord[q]];
                        if (v < best)
                            continue;
                        best = v;
                        m = (ptrdiff_t)q;
                    }
                    if (m == -1)
                        continue;
                    e->dtig[t * D + j] = gig[m];
                    e->dtm[t * D + j] = g[gord[m]].id;
                    gtm[t * G + (size_t)m] = (int64_t)cd[j]->idx + 1;
                }
            for (int t = 0; t < T; t++)
                for (size_t j = 0; j < D; j++)
                    if (!e->dtm[t * D + j] && (cd[j]->area < lo || cd[j]->area > hi))
                        e->dtig[t * D + j] = 1;
        }
        free(iou), free(gord), free(gig), free(gtm);
    }

    st = score(gt, ev, per_img, h ? h->weight : NULL, out);
    if (!st && h && h->resamples > 0)
        st = bootstrap(gt, ev, per_img, h);
    goto done;
nomem:
    st = vp_error_set(VP_ERR_NOMEM, "COCO evaluation: out of host memory");
done:
    for (size_t x = 0; ev && x < nk * A * ni; x++) {
        free(ev[x].dtm);
        free(ev[x].dtig);
    }
    free(ev);
    free(dcell);
    free(fill);
    free(per_img);
    free(dp);
    free(scores);
    return st;
}

/* accumulate and summarize, image i counted weight[i] times (NULL: once) */
static vp_status score(const vp_coco_gt *gt, const eimg *ev, const size_t *per_img,
                       const uint32_t *weight, vp_coco_stats *out)
{
    const size_t ni = gt->ni, nk = gt->nk;
    double rec_thr[R];
    const double rstep = 1.0 / (R - 1);
    /* np.linspace: i * step + start, the last exactly the end. */
    for (int r = 0; r < R; r++)
        rec_thr[r] = r * rstep + 0.0;
    rec_thr[R - 1] = 1.0;
    size_t n = 0; /* detections counted with their weights */
    for (size_t i = 0; i < ni; i++)
        n += per_img[i] * (weight ? weight[i] : 1);
    double *prec = malloc((size_t)T * R * nk * A * M * sizeof *prec + 1);
    double *recall = malloc((size_t)T * nk * A * M * sizeof *recall + 1);
    vp_status st = VP_OK;
    if (!prec || !recall)
        goto nomem;
    for (size_t x = 0; x < (size_t)T * R * nk * A * M; x++)
        prec[x] = -1;
    for (size_t x = 0; x < (size_t)T * nk * A * M; x++)
        recall[x] = -1;
    sidx *ord = malloc((n + 1) * sizeof *ord);
    size_t *src = malloc((n + 1) * 2 * sizeof *src);
    double *rc = malloc((n + 1) * sizeof *rc), *pr = malloc((n + 1) * sizeof *pr);
    if (!ord || !src || !rc || !pr) {
        free(ord), free(src), free(rc), free(pr);
        goto nomem;
    }
    for (size_t k = 0; k < nk; k++)
        for (size_t a = 0; a < A; a++)
            for (size_t m = 0; m < M; m++) {
                const eimg *E = &ev[(k * A + a) * ni];
                size_t nd = 0, npig = 0, any = 0;
                for (size_t i = 0; i < ni; i++) {
                    uint32_t wi = weight ? weight[i] : 1;
                    if (!E[i].present || !wi)
                        continue;
                    any = 1;
                    npig += wi * E[i].npig;
                    size_t lim = E[i].nd < (size_t)max_dets[m] ? E[i].nd : (size_t)max_dets[m];
                    for (uint32_t copy = 0; copy < wi; copy++)
                        for (size_t j = 0; j < lim; j++) {
                            ord[nd].s = E[i].score[j];
                            ord[nd].i = nd;
                            src[2 * nd] = i, src[2 * nd + 1] = j;
                            nd++;
                        }
                }
                if (!any || !npig)
                    continue;
                qsort(ord, nd, sizeof *ord, cmp_sidx);
                for (int t = 0; t < T; t++) {
                    double tp = 0, fp = 0;
                    for (size_t j = 0; j < nd; j++) {
                        const eimg *e = &E[src[2 * ord[j].i]];
                        size_t jj = src[2 * ord[j].i + 1];
                        if (!e->dtig[(size_t)t * e->nd + jj]) {
                            if (e->dtm[(size_t)t * e->nd + jj])
                                tp += 1;
                            else
                                fp += 1;
                        }
                        rc[j] = tp / (double)npig;
                        pr[j] = tp / (fp + tp + DBL_EPSILON);
                    }
                    recall[((size_t)t * nk + k) * A * M + a * M + m] = nd ? rc[nd - 1] : 0;
                    for (size_t j = nd; j-- > 1;)
                        if (pr[j] > pr[j - 1])
                            pr[j - 1] = pr[j];
                    for (int r = 0; r < R; r++) {
                        /* searchsorted(rc, thr, 'left'): the first rc >= thr */
                        size_t lo = 0, hi = nd;
                        while (lo < hi) {
                            size_t mid = lo + (hi - lo) / 2;
                            if (rc[mid] < rec_thr[r])
                                lo = mid + 1;
                            else
                                hi = mid;
                        }
                        prec[(((size_t)t * R + (size_t)r) * nk + k) * A * M + a * M + m] =
                            lo < nd ? pr[lo] : 0;
                    }
                }
            }
    free(ord), free(src), free(rc), free(pr);

    /* summarize: means over numpy's C order (t, r, k) and (t, k) */
    double *v = malloc(((size_t)T * R * nk + 1) * sizeof *v);
    if (!v)
        goto nomem;
    double s[12];
    for (int q = 0; q < 12; q++) {
        int ap = q < 6, t0 = 0, t1 = T, a = 0, m = M - 1;
        if (q == 1)
            t1 = 1;
        if (q == 2)
            t0 = 5, t1 = 6;
        if (q >= 3 && q <= 5)
            a = q - 2;
        if (q >= 6 && q <= 8)
            m = q - 6;
        if (q >= 9)
            a = q - 8;
        size_t nv = 0;
        for (int t = t0; t < t1; t++) {
            if (ap) {
                for (int r = 0; r < R; r++)
                    for (size_t k = 0; k < nk; k++)
                        v[nv++] = prec[(((size_t)t * R + (size_t)r) * nk + k) * A * M +
                                       (size_t)a * M + (size_t)m];
            } else {
                for (size_t k = 0; k < nk; k++)
                    v[nv++] = recall[((size_t)t * nk + k) * A * M + (size_t)a * M + (size_t)m];
            }
        }
        s[q] = mean_valid(v, nv);
    }
    free(v);
    *out = (vp_coco_stats){s[0], s[1], s[2], s[3], s[4],  s[5],
                           s[6], s[7], s[8], s[9], s[10], s[11]};
    goto done;
nomem:
    st = vp_error_set(VP_ERR_NOMEM, "COCO evaluation: out of host memory");
done:
    free(prec);
    free(recall);
    return st;
}

/* SplitMix64: the resamples' images, the same for a seed on every machine. */
static uint64_t splitmix64(uint64_t *x)
{
    uint64_t z = (*x += 0x9e3779b97f4a7c15u);
    z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9u;
    z = (z ^ (z >> 27)) * 0x94d049bb133111ebu;
    return z ^ (z >> 31);
}

static int cmp_double(const void *pa, const void *pb)
{
    double a = *(const double *)pa, b = *(const double *)pb;
    return (a > b) - (a < b);
}

/* numpy's percentile with its default linear interpolation, of the m
 * sorted values v, at fraction q. */
static double percentile(const double *v, size_t m, double q)
{
    double pos = q * (double)(m - 1);
    size_t i = (size_t)pos;
    if (i + 1 >= m)
        return v[m - 1];
    return v[i] + (v[i + 1] - v[i]) * (pos - (double)i);
}

/* The percentile bootstrap: h->resamples draws of ni images with
 * replacement, each scored by score() with the draw's counts as weights;
 * per number the (1 - level) / 2 and (1 + level) / 2 percentiles of the
 * draws where it is defined (-1: in none). */
static vp_status bootstrap(const vp_coco_gt *gt, const eimg *ev, const size_t *per_img,
                           const how *h)
{
    const size_t ni = gt->ni, B = (size_t)h->resamples;
    uint32_t *w = malloc((ni + 1) * sizeof *w);
    double *all = malloc((12 * B + 1) * sizeof *all), *v = malloc((B + 1) * sizeof *v);
    vp_status st = VP_OK;
    if (!w || !all || !v)
        st = vp_error_set(VP_ERR_NOMEM, "COCO evaluation: out of host memory");
    uint64_t x = h->seed;
    for (size_t b = 0; !st && b < B; b++) {
        memset(w, 0, ni * sizeof *w);
        for (size_t i = 0; i < ni; i++)
            w[splitmix64(&x) % ni]++; /* bias below ni / 2^64 */
        vp_coco_stats s;
        if (!(st = score(gt, ev, per_img, w, &s)))
            memcpy(all + 12 * b, &s, sizeof s);
    }
    double lo[12], hi[12];
    for (int q = 0; !st && q < 12; q++) {
        size_t m = 0;
        for (size_t b = 0; b < B; b++)
            if (all[12 * b + (size_t)q] > -1)
                v[m++] = all[12 * b + (size_t)q];
        qsort(v, m, sizeof *v, cmp_double);
        lo[q] = m ? percentile(v, m, (1 - h->level) / 2) : -1;
        hi[q] = m ? percentile(v, m, (1 + h->level) / 2) : -1;
    }
    if (!st) {
        memcpy(h->lo, lo, sizeof lo);
        memcpy(h->hi, hi, sizeof hi);
    }
    free(w);
    free(all);
    free(v);
    return st;
}

static vp_status evaluate_dets(const vp_coco_gt *gt, const vp_coco_det *dets, size_t n,
                               const how *h, vp_coco_stats *out)
{
    det *d = malloc((n + 1) * sizeof *d);
    if (!d)
        return vp_error_set(VP_ERR_NOMEM, "COCO evaluation: out of host memory");
    for (size_t j = 0; j < n; j++) {
        const vp_coco_det *x = &dets[j];
        size_t i = find_id(gt->img_id, gt->ni, x->image_id);
        size_t k = find_id(gt->cat_id, gt->nk, x->category_id);
        vp_status st = VP_OK;
        if (i == (size_t)-1 || k == (size_t)-1)
            st = vp_error_set(VP_ERR_INVALID, "detection %zu: %s id %lld is not in the ground truth",
                              j, i == (size_t)-1 ? "image" : "category",
                              (long long)(i == (size_t)-1 ? x->image_id : x->category_id));
        else if (!x->rle || x->rle->h != gt->img_h[i] || x->rle->w != gt->img_w[i])
            st = vp_error_set(VP_ERR_INVALID, "detection %zu: the mask is %lld x %lld, image %lld "
                              "is %lld x %lld", j, x->rle ? (long long)x->rle->h : 0LL,
                              x->rle ? (long long)x->rle->w : 0LL, (long long)x->image_id,
                              (long long)gt->img_h[i], (long long)gt->img_w[i]);
        else if (!isfinite(x->score))
            st = vp_error_set(VP_ERR_INVALID, "detection %zu: the score is not finite", j);
        if (st) {
            free(d);
            return st;
        }
        d[j] = (det){.img = i, .cat = k, .idx = j, .score = x->score,
                     .area = (double)vp_rle_area(x->rle), .rle = x->rle};
    }
    vp_status st = evaluate(gt, d, n, h, out);
    free(d);
    return st;
}

vp_status vp_coco_evaluate(const vp_coco_gt *gt, const vp_coco_det *dets, size_t n,
                           vp_coco_stats *out)
{
    return evaluate_dets(gt, dets, n, NULL, out);
}

vp_status vp_coco_evaluate_weighted(const vp_coco_gt *gt, const vp_coco_det *dets, size_t n,
                                    const uint32_t *weight, vp_coco_stats *out)
{
    return evaluate_dets(gt, dets, n, &(how){.weight = weight}, out);
}

static vp_status check_boot(const vp_coco_boot *b)
{
    if (b->resamples < 1 || b->resamples > VP_COCO_MAX_RESAMPLES)
        return vp_error_set(VP_ERR_INVALID, "COCO bootstrap: %d resamples (from 1 to %d)",
                            b->resamples, VP_COCO_MAX_RESAMPLES);
    if (!(b->level > 0 && b->level < 1))
        return vp_error_set(VP_ERR_INVALID, "COCO bootstrap: level %g (above 0, below 1)",
                            b->level);
    return VP_OK;
}

vp_status vp_coco_evaluate_ci(const vp_coco_gt *gt, const vp_coco_det *dets, size_t n,
                              const vp_coco_boot *boot, vp_coco_stats *out, vp_coco_stats *lo,
                              vp_coco_stats *hi)
{
    vp_status st = check_boot(boot);
    return st ? st
              : evaluate_dets(gt, dets, n, &(how){NULL, boot->resamples, boot->seed, boot->level,
                                                  lo, hi},
                              out);
}

static vp_status eval_files(const char *gt_path, const char *res_path, const how *h,
                            vp_coco_stats *out);

vp_status vp_coco_eval_files(const char *gt_path, const char *res_path, vp_coco_stats *out)
{
    return eval_files(gt_path, res_path, NULL, out);
}

vp_status vp_coco_eval_files_ci(const char *gt_path, const char *res_path,
                                const vp_coco_boot *boot, vp_coco_stats *out, vp_coco_stats *lo,
                                vp_coco_stats *hi)
{
    vp_status st = check_boot(boot);
    return st ? st
              : eval_files(gt_path, res_path,
                           &(how){NULL, boot->resamples, boot->seed, boot->level, lo, hi}, out);
}

static vp_status eval_files(const char *gt_path, const char *res_path, const how *h,
                            vp_coco_stats *out)
{
    vp_coco_gt *gt = NULL;
    cJSON *root = NULL;
    vp_rle *rle = NULL;
    det *d = NULL;
    size_t n = 0;
    vp_status st = vp_coco_gt_load(gt_path, &gt);
    if (!st)
        st = read_json(res_path, &root);
    if (st)
        goto done;
    if (!cJSON_IsArray(root)) {
        st = vp_error_set(VP_ERR_FORMAT, "%s: not a list of results", res_path);
        goto done;
    }
    n = (size_t)cJSON_GetArraySize(root);
    rle = calloc(n + 1, sizeof *rle);
    d = malloc((n + 1) * sizeof *d);
    if (!rle || !d) {
        st = vp_error_set(VP_ERR_NOMEM, "%s: out of host memory", res_path);
        goto done;
    }
    /* pycocotools' loadRes: with a "bbox" in the first result, every
     * result's area is its box's (w * h), else its mask's. */
    const cJSON *bb0 = cJSON_GetObjectItemCaseSensitive(cJSON_GetArrayItem(root, 0), "bbox");
    int box_area = cJSON_IsArray(bb0) && cJSON_GetArraySize(bb0) > 0;
    size_t j = 0;
    const cJSON *e;
    cJSON_ArrayForEach(e, root) {
        char what[4300];
        snprintf(what, sizeof what, "%s: result %zu", res_path, j);
        int64_t img_id, cat_id;
        double score;
        const cJSON *seg = cJSON_GetObjectItemCaseSensitive(e, "segmentation");
        const char *missing = !id_field(e, "image_id", &img_id)      ? "integral \"image_id\""
                              : !id_field(e, "category_id", &cat_id) ? "integral \"category_id\""
                              : !num(e, "score", &score)             ? "number \"score\""
                              : !seg                                 ? "\"segmentation\""
                                                                     : NULL;
        if (missing) {
            st = vp_error_set(VP_ERR_FORMAT, "%s: no %s", what, missing);
            goto done;
        }
        size_t i = find_id(gt->img_id, gt->ni, img_id), k = find_id(gt->cat_id, gt->nk, cat_id);
        if (i == (size_t)-1 || k == (size_t)-1) {
            st = vp_error_set(VP_ERR_FORMAT, "%s: %s id %lld is not in %s", what,
                              i == (size_t)-1 ? "image" : "category",
                              (long long)(i == (size_t)-1 ? img_id : cat_id), gt_path);
            goto done;
        }
        if ((st = vp_coco_segm_to_rle(seg, gt->img_h[i], gt->img_w[i], 0, what, &rle[j])) != VP_OK)
            goto done;
        double area = (double)vp_rle_area(&rle[j]);
        if (box_area) {
            const cJSON *bb = cJSON_GetObjectItemCaseSensitive(e, "bbox");
            const cJSON *bw = cJSON_GetArrayItem(bb, 2), *bh = cJSON_GetArrayItem(bb, 3);
            if (!cJSON_IsArray(bb) || !cJSON_IsNumber(bw) || !cJSON_IsNumber(bh)) {
                st = vp_error_set(VP_ERR_FORMAT, "%s: no \"bbox\" [x, y, w, h] (result 0 has one)",
                                  what);
                goto done;
            }
            area = bw->valuedouble * bh->valuedouble;
        }
        d[j] = (det){.img = i, .cat = k, .idx = j, .score = score, .area = area, .rle = &rle[j]};
        j++;
    }
    st = evaluate(gt, d, n, h, out);
done:
    for (size_t q = 0; rle && q < n; q++)
        vp_rle_free(&rle[q]);
    free(rle);
    free(d);
    cJSON_Delete(root);
    vp_coco_gt_destroy(gt);
    return st;
}
