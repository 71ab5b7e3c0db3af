/*
 * COCO segmentation evaluation (core/eval/cocoeval.c) against pycocotools:
 * tests/data/coco-eval/case-a scored here gives the 12 numbers pycocotools'
 * COCOeval(iouType='segm') printed for it (expected.json); hand cases with
 * known answers (a perfect detection, no detections, a crowd region that
 * absorbs detections, ties, area ranges); the in-memory API on case-a;
 * polygon rasterization against known pixel counts and the areas
 * pycocotools wrote into case-a; every error message. Needs no Vulkan
 * device.
 */
#include <cjson/cJSON.h>
#include <math.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "eval/cocoeval.h"
#include "harness.h"
#include "util/clock.h"

static const char *case_path(const char *name, char *buf, size_t n)
{
    const char *src = getenv("VPEFT_SRCDIR");
    ck_assert_msg(src != NULL, "VPEFT_SRCDIR is not set (run through make check)");
    snprintf(buf, n, "%s/tests/data/coco-eval/case-a/%s", src, name);
    return buf;
}

static cJSON *load_json(const char *path)
{
    FILE *f = fopen(path, "rb");
    ck_assert_msg(f != NULL, "%s", path);
    fseek(f, 0, SEEK_END);
    long n = ftell(f);
    fseek(f, 0, SEEK_SET);
    char *text = malloc((size_t)n + 1);
    ck_assert_uint_eq(fread(text, 1, (size_t)n, f), (size_t)n);
    text[n] = '\0';
    fclose(f);
    cJSON *j = cJSON_Parse(text);
    free(text);
    ck_assert_ptr_nonnull(j);
    return j;
}

static const double *stat_ptr(const vp_coco_stats *s, int i) { return &s->ap + i; }
static const char *const stat_names[12] = {"AP",  "AP50", "AP75", "APs",  "APm", "APl",
                                           "AR1", "AR10", "AR100", "ARs", "ARm", "ARl"};

static char tmpdir[64];

static const char *write_file(const char *name, const char *text)
{
    static char path[8][160];
    static int slot;
    char *p = path[slot++ % 8];
    snprintf(p, 160, "%s/%s", tmpdir, name);
    FILE *f = fopen(p, "wb");
    ck_assert_ptr_nonnull(f);
    fputs(text, f);
    fclose(f);
    return p;
}

START_TEST(test_pycocotools)
{
    char g[4200], r[4200], e[4200];
    vp_coco_stats s;
    vt_ok(vp_coco_eval_files(case_path("gt.json", g, sizeof g), case_path("results.json", r, sizeof r),
                             &s));
    cJSON *want = load_json(case_path("expected.json", e, sizeof e));
    double maxdiff = 0;
    for (int i = 0; i < 12; i++) {
        const cJSON *w = cJSON_GetObjectItem(want, stat_names[i]);
        ck_assert_ptr_nonnull(w);
        double d = fabs(*stat_ptr(&s, i) - w->valuedouble);
        printf("cocoeval: %-5s %.17g (pycocotools %.17g)\n", stat_names[i], *stat_ptr(&s, i),
               w->valuedouble);
        if (d > maxdiff)
            maxdiff = d;
    }
    printf("cocoeval: case-a, max |difference| from pycocotools %.3g\n", maxdiff);
    ck_assert_msg(maxdiff <= 1e-12, "max difference %g", maxdiff);
    cJSON_Delete(want);
}
END_TEST

/* case-a through the in-memory API gives the same numbers bit for bit. */
START_TEST(test_case_memory)
{
    char g[4200], r[4200];
    vp_coco_stats want, got;
    vt_ok(vp_coco_eval_files(case_path("gt.json", g, sizeof g), case_path("results.json", r, sizeof r),
                             &want));
    vp_coco_gt *gt;
    vt_ok(vp_coco_gt_load(g, &gt));
    cJSON *res = load_json(r);
    int n = cJSON_GetArraySize(res), i = 0;
    vp_rle *rle = calloc((size_t)n, sizeof *rle);
    vp_coco_det *d = calloc((size_t)n, sizeof *d);
    const cJSON *a;
    cJSON_ArrayForEach(a, res) {
        const cJSON *seg = cJSON_GetObjectItem(a, "segmentation");
        const cJSON *size = cJSON_GetObjectItem(seg, "size");
        vt_ok(vp_rle_from_string(cJSON_GetObjectItem(seg, "counts")->valuestring,
                                 (int64_t)cJSON_GetArrayItem(size, 0)->valuedouble,
                                 (int64_t)cJSON_GetArrayItem(size, 1)->valuedouble, &rle[i]));
        d[i] = (vp_coco_det){(int64_t)cJSON_GetObjectItem(a, "image_id")->valuedouble,
                             (int64_t)cJSON_GetObjectItem(a, "category_id")->valuedouble,
                             cJSON_GetObjectItem(a, "score")->valuedouble, &rle[i]};
        i++;
    }
    vt_ok(vp_coco_evaluate(gt, d, (size_t)n, &got));
    for (int q = 0; q < 12; q++)
        ck_assert_msg(*stat_ptr(&got, q) == *stat_ptr(&want, q), "%s", stat_names[q]);
    for (i = 0; i < n; i++)
        vp_rle_free(&rle[i]);
    free(rle);
    free(d);
    cJSON_Delete(res);
    vp_coco_gt_destroy(gt);
}
END_TEST

/* A results file's detections in memory (borrowing *rle, n of them). */
static vp_coco_det *load_dets(const char *path, vp_rle **rle, int *n)
{
    cJSON *res = load_json(path);
    *n = cJSON_GetArraySize(res);
    *rle = calloc((size_t)*n + 1, sizeof **rle);
    vp_coco_det *d = calloc((size_t)*n + 1, sizeof *d);
    int i = 0;
    const cJSON *a;
    cJSON_ArrayForEach(a, res) {
        const cJSON *seg = cJSON_GetObjectItem(a, "segmentation");
        const cJSON *size = cJSON_GetObjectItem(seg, "size");
        vt_ok(vp_rle_from_string(cJSON_GetObjectItem(seg, "counts")->valuestring,
                                 (int64_t)cJSON_GetArrayItem(size, 0)->valuedouble,
                                 (int64_t)cJSON_GetArrayItem(size, 1)->valuedouble, &(*rle)[i]));
        d[i] = (vp_coco_det){(int64_t)cJSON_GetObjectItem(a, "image_id")->valuedouble,
                             (int64_t)cJSON_GetObjectItem(a, "category_id")->valuedouble,
                             cJSON_GetObjectItem(a, "score")->valuedouble, &(*rle)[i]};
        i++;
    }
    cJSON_Delete(res);
    return d;
}

static int cmp_id(const void *a, const void *b)
{
    int64_t x = *(const int64_t *)a, y = *(const int64_t *)b;
    return (x > y) - (x < y);
}

/* The weights the bootstrap scores a resample with: image i counted w[i]
 * times gives, bit for bit, what case-a with w[i] copies of image i (new
 * image and annotation ids, every detection copied with its image) gives
 * scored plainly. Copy c of the i-th image by id gets id (i + 1) * 10 + c,
 * so the copies keep the images' order. */
START_TEST(test_weighted)
{
    char g[4200], r[4200];
    cJSON *gt = load_json(case_path("gt.json", g, sizeof g));
    cJSON *res = load_json(case_path("results.json", r, sizeof r));
    cJSON *imgs = cJSON_GetObjectItem(gt, "images");
    int ni = cJSON_GetArraySize(imgs);
    ck_assert_int_gt(ni, 4);
    int64_t *ids = calloc((size_t)ni, sizeof *ids);
    uint32_t *w = calloc((size_t)ni, sizeof *w);
    for (int i = 0; i < ni; i++)
        ids[i] = (int64_t)cJSON_GetObjectItem(cJSON_GetArrayItem(imgs, i), "id")->valuedouble;
    qsort(ids, (size_t)ni, sizeof *ids, cmp_id);
    int dropped = 0, doubled = 0;
    for (int i = 0; i < ni; i++) {
        w[i] = (uint32_t)((i * 7 + 3) % 4); /* 3, 2, 1, 0, 3, ... */
        dropped += !w[i];
        doubled += w[i] > 1;
    }
    ck_assert(dropped > 0 && doubled > 0);
    cJSON *dgt = cJSON_CreateObject(), *dimgs = cJSON_AddArrayToObject(dgt, "images");
    cJSON *danns = cJSON_AddArrayToObject(dgt, "annotations"), *dres = cJSON_CreateArray();
    cJSON_AddItemToObject(dgt, "categories",
                          cJSON_Duplicate(cJSON_GetObjectItem(gt, "categories"), 1));
    for (int i = 0; i < ni; i++)
        for (uint32_t c = 0; c < w[i]; c++) {
            const cJSON *im;
            cJSON_ArrayForEach(im, imgs)
                if ((int64_t)cJSON_GetObjectItem(im, "id")->valuedouble == ids[i]) {
                    cJSON *x = cJSON_Duplicate(im, 1);
                    cJSON_ReplaceItemInObject(x, "id", cJSON_CreateNumber((i + 1) * 10.0 + c));
                    cJSON_AddItemToArray(dimgs, x);
                }
            const cJSON *e;
            cJSON_ArrayForEach(e, res)
                if ((int64_t)cJSON_GetObjectItem(e, "image_id")->valuedouble == ids[i]) {
                    cJSON *x = cJSON_Duplicate(e, 1);
                    cJSON_ReplaceItemInObject(x, "image_id",
                                              cJSON_CreateNumber((i + 1) * 10.0 + c));
                    cJSON_AddItemToArray(dres, x);
                }
        }
    const cJSON *an;
    cJSON_ArrayForEach(an, cJSON_GetObjectItem(gt, "annotations")) {
        int64_t img = (int64_t)cJSON_GetObjectItem(an, "image_id")->valuedouble;
        int i = (int)((const int64_t *)bsearch(&img, ids, (size_t)ni, sizeof *ids, cmp_id) - ids);
        for (uint32_t c = 0; c < w[i]; c++) {
            cJSON *x = cJSON_Duplicate(an, 1);
            double id = cJSON_GetObjectItem(an, "id")->valuedouble;
            cJSON_ReplaceItemInObject(x, "id", cJSON_CreateNumber(id * 10 + c));
            cJSON_ReplaceItemInObject(x, "image_id", cJSON_CreateNumber((i + 1) * 10.0 + c));
            cJSON_AddItemToArray(danns, x);
        }
    }
    char *t1 = cJSON_PrintUnformatted(dgt), *t2 = cJSON_PrintUnformatted(dres);
    const char *pg = write_file("dgt.json", t1), *pr = write_file("dres.json", t2);
    free(t1);
    free(t2);
    vp_coco_stats want, got, plain, ones;
    vt_ok(vp_coco_eval_files(pg, pr, &want));

    vp_coco_gt *cg;
    vt_ok(vp_coco_gt_load(g, &cg));
    vp_rle *rle;
    int n;
    vp_coco_det *d = load_dets(r, &rle, &n);
    vt_ok(vp_coco_evaluate_weighted(cg, d, (size_t)n, w, &got));
    for (int q = 0; q < 12; q++)
        ck_assert_msg(*stat_ptr(&got, q) == *stat_ptr(&want, q), "%s: weighted %.17g, copies %.17g",
                      stat_names[q], *stat_ptr(&got, q), *stat_ptr(&want, q));
    ck_assert(got.ap > 0); /* a real score */
    /* all weights 1: the plain evaluation */
    for (int i = 0; i < ni; i++)
        w[i] = 1;
    vt_ok(vp_coco_evaluate(cg, d, (size_t)n, &plain));
    vt_ok(vp_coco_evaluate_weighted(cg, d, (size_t)n, w, &ones));
    for (int q = 0; q < 12; q++)
        ck_assert_msg(*stat_ptr(&ones, q) == *stat_ptr(&plain, q), "%s", stat_names[q]);
    ck_assert(got.ap != plain.ap);
    for (int i = 0; i < n; i++)
        vp_rle_free(&rle[i]);
    free(rle);
    free(d);
    vp_coco_gt_destroy(cg);
    free(ids);
    free(w);
    cJSON_Delete(dgt);
    cJSON_Delete(dres);
    cJSON_Delete(gt);
    cJSON_Delete(res);
}
END_TEST

/* The bootstrap intervals: the point estimate is the plain evaluation's;
 * a seed gives the same interval again and another seed another; the 95%
 * interval holds the estimate and the 50% interval of the same draws;
 * bad parameters are refused. */
START_TEST(test_bootstrap)
{
    char g[4200], r[4200];
    case_path("gt.json", g, sizeof g);
    case_path("results.json", r, sizeof r);
    vp_coco_stats plain, s, lo, hi, s2, lo2, hi2, lo50, hi50, lo3, hi3;
    vt_ok(vp_coco_eval_files(g, r, &plain));
    vt_ok(vp_coco_eval_files_ci(g, r, &(vp_coco_boot){300, 7, 0.95}, &s, &lo, &hi));
    vt_ok(vp_coco_eval_files_ci(g, r, &(vp_coco_boot){300, 7, 0.95}, &s2, &lo2, &hi2));
    vt_ok(vp_coco_eval_files_ci(g, r, &(vp_coco_boot){300, 7, 0.5}, &s2, &lo50, &hi50));
    vt_ok(vp_coco_eval_files_ci(g, r, &(vp_coco_boot){300, 8, 0.95}, &s2, &lo3, &hi3));
    int differs = 0;
    for (int q = 0; q < 12; q++) {
        double v = *stat_ptr(&plain, q);
        ck_assert(*stat_ptr(&s, q) == v);
        ck_assert(*stat_ptr(&lo, q) == *stat_ptr(&lo2, q) && *stat_ptr(&hi, q) == *stat_ptr(&hi2, q));
        differs += *stat_ptr(&lo, q) != *stat_ptr(&lo3, q);
        if (v < 0)
            continue;
        printf("cocoeval: %-5s %.3f [%.3f, %.3f] (50%%: [%.3f, %.3f])\n", stat_names[q], v,
               *stat_ptr(&lo, q), *stat_ptr(&hi, q), *stat_ptr(&lo50, q), *stat_ptr(&hi50, q));
        ck_assert_msg(*stat_ptr(&lo, q) < *stat_ptr(&hi, q), "%s", stat_names[q]);
        ck_assert_msg(*stat_ptr(&lo, q) <= *stat_ptr(&lo50, q) &&
                      *stat_ptr(&lo50, q) <= *stat_ptr(&hi50, q) &&
                      *stat_ptr(&hi50, q) <= *stat_ptr(&hi, q), "%s", stat_names[q]);
    }
    ck_assert(lo.ap < plain.ap && plain.ap < hi.ap);
    ck_assert(lo.ap > 0.02 && hi.ap < 0.4); /* case-a's AP 0.119 on 10 images */
    ck_assert_int_gt(differs, 0);
    ck_assert_int_eq(vp_coco_eval_files_ci(g, r, &(vp_coco_boot){0, 7, 0.95}, &s, &lo, &hi),
                     VP_ERR_INVALID);
    vt_assert_has(vp_error_last(), "COCO bootstrap: 0 resamples (from 1 to 100000)");
    ck_assert_int_eq(vp_coco_eval_files_ci(g, r, &(vp_coco_boot){10, 7, 1.0}, &s, &lo, &hi),
                     VP_ERR_INVALID);
    vt_assert_has(vp_error_last(), "COCO bootstrap: level 1 (above 0, below 1)");
}
END_TEST

/* The polygons of case-a rasterize to the areas pycocotools gave them. */
START_TEST(test_case_polygons)
{
    char g[4200];
    cJSON *gt = load_json(case_path("gt.json", g, sizeof g));
    int n = 0;
    const cJSON *a, *im;
    cJSON_ArrayForEach(a, cJSON_GetObjectItem(gt, "annotations")) {
        const cJSON *seg = cJSON_GetObjectItem(a, "segmentation");
        if (!cJSON_IsArray(seg) || cJSON_GetArraySize(seg) != 1)
            continue;
        double id = cJSON_GetObjectItem(a, "image_id")->valuedouble;
        int64_t h = -1, w = -1;
        cJSON_ArrayForEach(im, cJSON_GetObjectItem(gt, "images"))
            if (cJSON_GetObjectItem(im, "id")->valuedouble == id) {
                h = (int64_t)cJSON_GetObjectItem(im, "height")->valuedouble;
                w = (int64_t)cJSON_GetObjectItem(im, "width")->valuedouble;
            }
        const cJSON *poly = cJSON_GetArrayItem(seg, 0);
        int k = cJSON_GetArraySize(poly);
        double xy[64];
        ck_assert_int_le(k, 64);
        for (int i = 0; i < k; i++)
            xy[i] = cJSON_GetArrayItem(poly, i)->valuedouble;
        vp_rle rle;
        vt_ok(vp_coco_poly_to_rle(xy, (size_t)k / 2, h, w, &rle));
        ck_assert_msg((double)vp_rle_area(&rle) == cJSON_GetObjectItem(a, "area")->valuedouble,
                      "annotation %g: area %llu, pycocotools %g",
                      cJSON_GetObjectItem(a, "id")->valuedouble,
                      (unsigned long long)vp_rle_area(&rle),
                      cJSON_GetObjectItem(a, "area")->valuedouble);
        vp_rle_free(&rle);
        n++;
    }
    printf("cocoeval: %d case-a polygons have pycocotools' areas\n", n);
    ck_assert_int_ge(n, 10);
    cJSON_Delete(gt);
}
END_TEST

START_TEST(test_polygons)
{
    vp_rle r;
    uint8_t m[100];
    /* A square with corners on pixel boundaries covers exactly its pixels
     * (pycocotools: frPyObjects([[2, 3, 6, 3, 6, 7, 2, 7]], 10, 10) -> 16). */
    vt_ok(vp_coco_poly_to_rle((const double[]){2, 3, 6, 3, 6, 7, 2, 7}, 4, 10, 10, &r));
    ck_assert_uint_eq(vp_rle_area(&r), 16);
    vp_rle_to_mask(&r, m);
    for (int y = 0; y < 10; y++)
        for (int x = 0; x < 10; x++)
            ck_assert_int_eq(m[y * 10 + x], x >= 2 && x < 6 && y >= 3 && y < 7);
    vp_rle_free(&r);
    /* Clipped to the image: a square over its right and bottom edges. */
    vt_ok(vp_coco_poly_to_rle((const double[]){7, 8, 12, 8, 12, 12, 7, 12}, 4, 10, 10, &r));
    ck_assert_uint_eq(vp_rle_area(&r), 6);
    vp_rle_free(&r);
    /* The right triangle (0,0) (8,0) (0,8), worked by hand through
     * rleFrPoly: scaled by 5, the top edge toggles on at (x, 0) for the
     * column centers u = 5x + 2 it passes (x = 0..7); the hypotenuse
     * u + v = 40, walked back, toggles off at ceil((37.5 - 5x) / 5 - .5) =
     * 7 - x. So column x holds 7 - x pixels: the center (x + .5, 7.5 - x)
     * lying on the hypotenuse is outside. */
    vt_ok(vp_coco_poly_to_rle((const double[]){0, 0, 8, 0, 0, 8}, 3, 10, 10, &r));
    vp_rle_to_mask(&r, m);
    int area = 0;
    for (int x = 0; x < 10; x++) {
        int col = 0;
        for (int y = 0; y < 10; y++)
            col += m[y * 10 + x];
        ck_assert_msg(col == (x < 7 ? 7 - x : 0), "column %d has %d pixels", x, col);
        area += col;
    }
    ck_assert_int_eq(area, 28);
    ck_assert_uint_eq(vp_rle_area(&r), 28);
    vp_rle_free(&r);
    vt_expect_err(vp_coco_poly_to_rle((const double[]){0, 0, 1e9, 0, 0, 1}, 3, 10, 10, &r),
                  VP_ERR_INVALID, "polygon: coordinate 2 (1e+09) is not within the 10 x 10 "
                  "image's margin (-10 to 20)");
    /* Coordinates are bounded by the image (a margin of its larger side),
     * not by 1e6: every point far out cost a walk as long as its range. */
    vt_expect_err(vp_coco_poly_to_rle((const double[]){0, 0, 5, 0, 0, -1e6}, 3, 10, 20, &r),
                  VP_ERR_INVALID, "polygon: coordinate 5 (-1e+06) is not within the 10 x 20 "
                  "image's margin (-20 to 30)");
    /* Within the margin: clipped as before. */
    vt_ok(vp_coco_poly_to_rle((const double[]){-10, -10, 6, -10, 6, 6, -10, 6}, 4, 10, 10, &r));
    ck_assert_uint_eq(vp_rle_area(&r), 36);
    vp_rle_free(&r);
}
END_TEST

/* Several polygons are united run by run; the same pixels as a dense OR,
 * and no mask of the image's size: two squares on a 65535 x 65535 image
 * (4.2 GB as a dense mask) take the memory of their runs. */
/* The process's peak resident memory (VmHWM), reset to the current
 * resident set: false where /proc/self/clear_refs cannot do that (Linux
 * before 4.0, no procfs). */
static bool peak_reset(void)
{
    FILE *f = fopen("/proc/self/clear_refs", "w");
    if (!f)
        return false;
    bool ok = fputs("5", f) >= 0;
    return fclose(f) == 0 && ok;
}

static long peak_kb(void)
{
    FILE *f = fopen("/proc/self/status", "r");
    char line[256];
    long kb = -1;
    while (f && fgets(line, sizeof line, f))
        if (!strncmp(line, "VmHWM:", 6))
            kb = strtol(line + 6, NULL, 10);
    if (f)
        fclose(f);
    return kb;
}

START_TEST(test_polygon_union)
{
    const char *text = "[[2, 3, 6, 3, 6, 7, 2, 7], [4, 5, 9, 5, 9, 8, 4, 8], [0, 0, 3, 0, 0, 3]]";
    cJSON *seg = cJSON_Parse(text);
    ck_assert_ptr_nonnull(seg);
    vp_rle u, one;
    vt_ok(vp_coco_segm_to_rle(seg, 10, 10, 1, "u", &u));
    uint8_t want[100] = {0}, m[100];
    int k = 0;
    for (const cJSON *p = seg->child; p; p = p->next, k++) {
        double xy[8];
        int n = 0;
        for (const cJSON *e = p->child; e; e = e->next)
            xy[n++] = e->valuedouble;
        vt_ok(vp_coco_poly_to_rle(xy, (size_t)n / 2, 10, 10, &one));
        vp_rle_to_mask(&one, m);
        for (int i = 0; i < 100; i++)
            want[i] |= m[i];
        vp_rle_free(&one);
    }
    vp_rle_to_mask(&u, m);
    ck_assert_int_eq(memcmp(m, want, sizeof m), 0);
    uint64_t area = vp_rle_area(&u);
    ck_assert_uint_gt(area, 16 + 15 - 4); /* the triangle adds its own */
    vp_rle_free(&u);
    /* On a 65535 x 65535 image, united run by run: a dense union mask
     * would take 4.3 GB (and minutes); the process's peak resident memory
     * (VmHWM, reset first through /proc/self/clear_refs) stays far below. */
    bool measured = peak_reset();
    vt_ok(vp_coco_segm_to_rle(seg, 65535, 65535, 1, "big", &u));
    if (measured) {
        long kb = peak_kb();
        ck_assert_msg(kb > 0 && kb < 1024 * 1024, "the union's peak resident memory: %ld KiB", kb);
    }
    ck_assert_uint_eq(vp_rle_area(&u), area);
    ck_assert_uint_le(u.n, 64);
    vp_rle_free(&u);
    cJSON_Delete(seg);
}
END_TEST

/* A 500k-point polygon (a 100 x 100 square traced in steps of 1/1250 px):
 * its numbers are walked as a list, not fetched by index (quadratic: over
 * 100 s). Exactly the square's 10000 pixels; the bound is generous (about
 * 0.3 s here, minutes before). */
START_TEST(test_long_polygon)
{
    enum { PER_SIDE = 125000 };
    size_t cap = (size_t)PER_SIDE * 4 * 40 + 16, n = 0;
    char *text = malloc(cap);
    ck_assert_ptr_nonnull(text);
    n += (size_t)snprintf(text + n, cap - n, "[[");
    const double c[5][2] = {{10, 10}, {110, 10}, {110, 110}, {10, 110}, {10, 10}};
    for (int side = 0; side < 4; side++)
        for (int i = 0; i < PER_SIDE; i++) {
            double t = (double)i / PER_SIDE;
            double x = c[side][0] + t * (c[side + 1][0] - c[side][0]);
            double y = c[side][1] + t * (c[side + 1][1] - c[side][1]);
            n += (size_t)snprintf(text + n, cap - n, "%s%.4f, %.4f", n > 2 ? ", " : "", x, y);
        }
    n += (size_t)snprintf(text + n, cap - n, "]]");
    ck_assert_uint_lt(n, cap);
    cJSON *seg = cJSON_Parse(text);
    free(text);
    ck_assert_ptr_nonnull(seg);
    ck_assert_int_eq(cJSON_GetArraySize(seg->child), 4 * PER_SIDE * 2);
    double t0 = vp_now_s();
    vp_rle r;
    alarm(120); /* quadratic, this would run for many minutes: SIGALRM ends the test */
    vt_ok(vp_coco_segm_to_rle(seg, 128, 128, 1, "long", &r));
    alarm(0);
    double dt = vp_now_s() - t0;
    ck_assert_uint_eq(vp_rle_area(&r), 10000);
    ck_assert_msg(dt < 20.0, "a 500k-point polygon took %.1f s", dt);
    vp_rle_free(&r);
    cJSON_Delete(seg);
}
END_TEST

/* Hand cases go through files like a user's. */
/* One 20 x 20 image (id 5), categories 1 and 2; a 4 x 4 square (area 16,
 * small) of category 1 at (2, 3); a crowd region of category 1 covering
 * x 10..20, y 0..20 (area 200). */
static const char *gt_text =
    "{\"images\": [{\"id\": 5, \"width\": 20, \"height\": 20}],"
    " \"categories\": [{\"id\": 2}, {\"id\": 1}],"
    " \"annotations\": ["
    "  {\"id\": 1, \"image_id\": 5, \"category_id\": 1, \"iscrowd\": 0, \"area\": 16,"
    "   \"segmentation\": [[2, 3, 6, 3, 6, 7, 2, 7]]},"
    "  {\"id\": 2, \"image_id\": 5, \"category_id\": 1, \"iscrowd\": 1, \"area\": 200,"
    "   \"segmentation\": {\"size\": [20, 20], \"counts\": [200, 200]}}]}";

/* A results entry with a box-shaped mask given as uncompressed counts. */
static void box_counts(char *buf, size_t n, int x0, int y0, int x1, int y1)
{
    /* column-major runs of the box [x0, x1) x [y0, y1) on 20 x 20 */
    size_t len = (size_t)snprintf(buf, n, "[%d", x0 * 20 + y0);
    for (int x = x0; x < x1; x++)
        len += (size_t)snprintf(buf + len, n - len, ", %d, %d", y1 - y0,
                                x + 1 < x1 ? 20 - (y1 - y0) : 400 - x * 20 - y1);
    snprintf(buf + len, n - len, "]");
}

static void add_result(char *res, size_t n, int cat, double score, int x0, int y0, int x1, int y1)
{
    char c[512];
    box_counts(c, sizeof c, x0, y0, x1, y1);
    size_t len = strlen(res);
    snprintf(res + len, n - len,
             "%s{\"image_id\": 5, \"category_id\": %d, \"score\": %g,"
             " \"segmentation\": {\"size\": [20, 20], \"counts\": %s}}",
             len > 1 ? ", " : "", cat, score, c);
}

static void expect(const vp_coco_stats *s, const double want[12])
{
    for (int i = 0; i < 12; i++)
        ck_assert_msg(fabs(*stat_ptr(s, i) - want[i]) < 1e-12, "%s %.17g, expected %.17g",
                      stat_names[i], *stat_ptr(s, i), want[i]);
}

START_TEST(test_hand)
{
    const char *gt = write_file("gt.json", gt_text);
    char res[8192];
    vp_coco_stats s;

    /* Perfect: AP 1 over the small range; medium and large hold no gt: -1.
     * Category 2 has neither gt nor detections: left out of the means. */
    strcpy(res, "[");
    add_result(res, sizeof res, 1, 0.9, 2, 3, 6, 7);
    strcat(res, "]");
    vt_ok(vp_coco_eval_files(gt, write_file("res.json", res), &s));
    expect(&s, (const double[12]){1, 1, 1, 1, -1, -1, 1, 1, 1, 1, -1, -1});

    /* No detections: 0 where there is gt, -1 where there is none. */
    vt_ok(vp_coco_eval_files(gt, write_file("res.json", "[]"), &s));
    expect(&s, (const double[12]){0, 0, 0, 0, -1, -1, 0, 0, 0, 0, -1, -1});

    /* Three detections inside the crowd region, one above the perfect one:
     * the crowd absorbs them all (IoU = intersection / detection area = 1),
     * none is a false positive. AR1: the top detection is the crowd's,
     * ignored, so at one detection per image nothing is recalled. */
    strcpy(res, "[");
    add_result(res, sizeof res, 1, 0.95, 12, 2, 16, 6);
    add_result(res, sizeof res, 1, 0.9, 2, 3, 6, 7);
    add_result(res, sizeof res, 1, 0.8, 10, 10, 20, 20);
    add_result(res, sizeof res, 1, 0.7, 11, 0, 13, 19);
    strcat(res, "]");
    vt_ok(vp_coco_eval_files(gt, write_file("res.json", res), &s));
    expect(&s, (const double[12]){1, 1, 1, 1, -1, -1, 0, 1, 1, 1, -1, -1});

    /* The same detection outside the crowd is a false positive ranked
     * first: precision 1/2 at every recall; AR1 0 (the top one is wrong). */
    strcpy(res, "[");
    add_result(res, sizeof res, 1, 0.95, 0, 12, 4, 16);
    add_result(res, sizeof res, 1, 0.9, 2, 3, 6, 7);
    strcat(res, "]");
    vt_ok(vp_coco_eval_files(gt, write_file("res.json", res), &s));
    expect(&s, (const double[12]){0.5, 0.5, 0.5, 0.5, -1, -1, 0, 1, 1, 1, -1, -1});

    /* Ties keep the file order: the false positive first when listed first,
     * last when listed last (then precision 1 up to recall 1). */
    strcpy(res, "[");
    add_result(res, sizeof res, 1, 0.9, 2, 3, 6, 7);
    add_result(res, sizeof res, 1, 0.9, 0, 12, 4, 16);
    strcat(res, "]");
    vt_ok(vp_coco_eval_files(gt, write_file("res.json", res), &s));
    expect(&s, (const double[12]){1, 1, 1, 1, -1, -1, 1, 1, 1, 1, -1, -1});

    /* A detection overlapping the square by 12 of 16 pixels, IoU 12/20 =
     * .6: a hit at thresholds .5, .55, .6 (3 of 10), behind a false
     * positive (area 100, small too): precision 1/2 at those, 0 at the
     * rest, AP = .3 * .5; recall .3, but 0 at one detection. */
    strcpy(res, "[");
    add_result(res, sizeof res, 1, 0.9, 2, 4, 6, 8);
    add_result(res, sizeof res, 1, 0.95, 0, 10, 10, 20);
    strcat(res, "]");
    vt_ok(vp_coco_eval_files(gt, write_file("res.json", res), &s));
    expect(&s, (const double[12]){0.15, 0.5, 0, 0.15, -1, -1, 0, 0.3, 0.3, 0.3, -1, -1});

    /* The gt's "area" field decides its range, not its pixels: the square
     * said to be 2000 is medium. The perfect detection (16 pixels) matches
     * it and counts there; the false positive, small and unmatched, is
     * ignored in the medium range; nothing is left for small (-1). */
    char gt2[2048];
    strcpy(gt2, gt_text);
    char *p16 = strstr(gt2, "\"area\": 16,");
    ck_assert_ptr_nonnull(p16); /* 11 characters, then a space to spare */
    memcpy(p16, "\"area\":2000,", 12);
    strcpy(res, "[");
    add_result(res, sizeof res, 1, 0.9, 2, 3, 6, 7);
    add_result(res, sizeof res, 1, 0.95, 0, 10, 10, 20);
    strcat(res, "]");
    vt_ok(vp_coco_eval_files(write_file("gt.json", gt2), write_file("res.json", res), &s));
    expect(&s, (const double[12]){0.5, 0.5, 0.5, -1, 1, -1, 0, 1, 1, -1, 1, -1});
}
END_TEST

/* The in-memory API gives what the files give. */
START_TEST(test_memory)
{
    vp_coco_gt *gt;
    vt_ok(vp_coco_gt_load(write_file("gt.json", gt_text), &gt));
    vp_rle r[2];
    vt_ok(vp_coco_poly_to_rle((const double[]){2, 3, 6, 3, 6, 7, 2, 7}, 4, 20, 20, &r[0]));
    vt_ok(vp_coco_poly_to_rle((const double[]){0, 12, 4, 12, 4, 16, 0, 16}, 4, 20, 20, &r[1]));
    vp_coco_det d[2] = {{5, 1, 0.9, &r[0]}, {5, 1, 0.95, &r[1]}};
    vp_coco_stats s;
    vt_ok(vp_coco_evaluate(gt, d, 2, &s));
    expect(&s, (const double[12]){0.5, 0.5, 0.5, 0.5, -1, -1, 0, 1, 1, 1, -1, -1});
    d[1].image_id = 6;
    vt_expect_err(vp_coco_evaluate(gt, d, 2, &s), VP_ERR_INVALID,
                  "detection 1: image id 6 is not in the ground truth");
    d[1].image_id = 5;
    d[1].category_id = 3;
    vt_expect_err(vp_coco_evaluate(gt, d, 2, &s), VP_ERR_INVALID,
                  "detection 1: category id 3 is not in the ground truth");
    vp_rle small;
    vt_ok(vp_coco_poly_to_rle((const double[]){0, 0, 2, 0, 2, 2}, 3, 10, 20, &small));
    d[1] = (vp_coco_det){5, 1, 0.5, &small};
    vt_expect_err(vp_coco_evaluate(gt, d, 2, &s), VP_ERR_INVALID,
                  "detection 1: the mask is 10 x 20, image 5 is 20 x 20");
    vp_rle_free(&small);
    vp_rle_free(&r[0]);
    vp_rle_free(&r[1]);
    vp_coco_gt_destroy(gt);
    vp_coco_gt_destroy(NULL);
}
END_TEST

static void expect_err_files(const char *gt_text_, const char *res_text, vp_status want,
                             const char *fmt)
{
    const char *g = write_file("egt.json", gt_text_), *r = write_file("eres.json", res_text);
    char msg[1024];
    snprintf(msg, sizeof msg, fmt, g, r);
    vp_coco_stats s = {.ap = 42};
    vt_expect_err(vp_coco_eval_files(g, r, &s), want, msg);
    ck_assert(s.ap == 42);
}

START_TEST(test_errors)
{
    const char *ok_res = "[{\"image_id\": 5, \"category_id\": 1, \"score\": 0.5,"
                         " \"segmentation\": {\"size\": [20, 20], \"counts\": \"0`<\"}}]";
    vp_coco_stats s;
    char missing[300];
    snprintf(missing, sizeof missing, "%s/nothing.json", tmpdir);
    char msg[600];
    snprintf(msg, sizeof msg, "%s: cannot read: No such file or directory", missing);
    vt_expect_err(vp_coco_eval_files(missing, missing, &s), VP_ERR_NOT_FOUND, msg);
    /* FIFOs, as ground truth and as results: refused at once (opening one
     * blocks until a writer comes; the alarm makes a regression fail). */
    char fifo[300];
    snprintf(fifo, sizeof fifo, "%s/fifo.json", tmpdir);
    ck_assert_int_eq(mkfifo(fifo, 0644), 0);
    alarm(20);
    snprintf(msg, sizeof msg, "%s: not a regular file", fifo);
    vt_expect_err(vp_coco_eval_files(fifo, fifo, &s), VP_ERR_INVALID, msg);
    vt_expect_err(vp_coco_eval_files(write_file("fgt.json", gt_text), fifo, &s), VP_ERR_INVALID,
                  msg);
    alarm(0);
    unlink(fifo);
    expect_err_files("{\"images\": [", ok_res, VP_ERR_FORMAT, "%s: not valid JSON (near byte 12)");
    expect_err_files(gt_text, "[{]", VP_ERR_FORMAT, "%2$s: not valid JSON (near byte 3)");
    expect_err_files("{\"images\": [], \"annotations\": []}", ok_res, VP_ERR_FORMAT,
                     "%s: no \"categories\" list");
    expect_err_files("{\"images\": [{\"id\": 5, \"width\": 20}], \"categories\": [],"
                     " \"annotations\": []}",
                     ok_res, VP_ERR_FORMAT,
                     "%s: image 0: no integral \"id\", \"height\" and \"width\"");
    expect_err_files("{\"images\": [{\"id\": 5, \"width\": 20, \"height\": 20}], \"categories\":"
                     " [{\"id\": 1}], \"annotations\": [{\"id\": 1, \"image_id\": 5,"
                     " \"category_id\": 1, \"iscrowd\": 0, \"segmentation\": [[0, 0, 1, 0, 1, 1]]}]}",
                     ok_res, VP_ERR_FORMAT, "%s: annotation 0: no number \"area\"");
    expect_err_files("{\"images\": [{\"id\": 5, \"width\": 20, \"height\": 20}], \"categories\":"
                     " [{\"id\": 1}], \"annotations\": [{\"id\": 1, \"image_id\": 5,"
                     " \"category_id\": 1, \"area\": 1, \"segmentation\": [[0, 0, 1, 0, 1, 1]]}]}",
                     ok_res, VP_ERR_FORMAT, "%s: annotation 0: no integral \"iscrowd\"");
    expect_err_files("{\"images\": [{\"id\": 5, \"width\": 20, \"height\": 20}], \"categories\":"
                     " [{\"id\": 1}], \"annotations\": [{\"id\": 1, \"image_id\": 5, \"area\": 1,"
                     " \"category_id\": 1, \"iscrowd\": 2, \"segmentation\": [[0, 0, 1, 0, 1, 1]]}]}",
                     ok_res, VP_ERR_FORMAT, "%s: annotation 0: \"iscrowd\" is not 0 or 1");
    /* a ground-truth image without pixels is the ground truth's fault */
    expect_err_files("{\"images\": [{\"id\": 5, \"width\": 0, \"height\": 20}], \"categories\": [],"
                     " \"annotations\": []}",
                     ok_res, VP_ERR_FORMAT,
                     "%s: image 0: 20x0 pixels (height and width must be at least 1)");
    expect_err_files("{\"images\": [{\"id\": 5, \"width\": 20, \"height\": 20}], \"categories\":"
                     " [{\"id\": 1}], \"annotations\": [{\"id\": 1, \"image_id\": 7,"
                     " \"category_id\": 1, \"iscrowd\": 0, \"area\": 1, \"segmentation\": [[0, 0,"
                     " 1, 0, 1, 1]]}]}",
                     ok_res, VP_ERR_FORMAT, "%s: annotation 0: image id 7 is not in \"images\"");
    expect_err_files("{\"images\": [{\"id\": 5, \"width\": 20, \"height\": 20}], \"categories\":"
                     " [{\"id\": 1}], \"annotations\": [{\"id\": 1, \"image_id\": 5,"
                     " \"category_id\": 1, \"iscrowd\": 0, \"area\": 1, \"segmentation\":"
                     " {\"size\": [20, 21], \"counts\": \"0`<\"}}]}",
                     ok_res, VP_ERR_FORMAT,
                     "%s: annotation 0: the RLE size is 20 x 21, the image is 20 x 20");
    expect_err_files("{\"images\": [{\"id\": 5, \"width\": 20, \"height\": 20}], \"categories\":"
                     " [{\"id\": 1}], \"annotations\": [{\"id\": 1, \"image_id\": 5,"
                     " \"category_id\": 1, \"iscrowd\": 0, \"area\": 1, \"segmentation\":"
                     " [[0, 0, 1, 0, 1]]}]}",
                     ok_res, VP_ERR_FORMAT,
                     "%s: annotation 0: polygon 0 is not a list of at least 3 (x, y) pairs");
    expect_err_files(gt_text, "{}", VP_ERR_FORMAT, "%2$s: not a list of results");
    expect_err_files(gt_text, "[{\"image_id\": 5, \"category_id\": 1, \"segmentation\": {}}]",
                     VP_ERR_FORMAT, "%2$s: result 0: no number \"score\"");
    expect_err_files(gt_text, "[{\"image_id\": 5, \"score\": 1}]", VP_ERR_FORMAT,
                     "%2$s: result 0: no integral \"category_id\"");
    expect_err_files(gt_text,
                     "[{\"image_id\": 9, \"category_id\": 1, \"score\": 0.5,"
                     " \"segmentation\": {\"size\": [20, 20], \"counts\": \"0`<\"}}]",
                     VP_ERR_FORMAT, "%2$s: result 0: image id 9 is not in %1$s");
    expect_err_files(gt_text,
                     "[{\"image_id\": 5, \"category_id\": 4, \"score\": 0.5,"
                     " \"segmentation\": {\"size\": [20, 20], \"counts\": \"0`<\"}}]",
                     VP_ERR_FORMAT, "%2$s: result 0: category id 4 is not in %1$s");
    expect_err_files(gt_text,
                     "[{\"image_id\": 5, \"category_id\": 1, \"score\": 0.5,"
                     " \"segmentation\": {\"size\": [20, 10], \"counts\": \"0`<\"}}]",
                     VP_ERR_FORMAT,
                     "%2$s: result 0: the RLE size is 20 x 10, the image is 20 x 20");
    expect_err_files(gt_text,
                     "[{\"image_id\": 5, \"category_id\": 1, \"score\": 0.5,"
                     " \"segmentation\": {\"size\": [20, 20], \"counts\": \"0a<\"}}]",
                     VP_ERR_FORMAT,
                     "%2$s: result 0: RLE: the runs cover 401 pixels, a 20 x 20 mask has 400");
    expect_err_files(gt_text,
                     "[{\"image_id\": 5, \"category_id\": 1, \"score\": 0.5,"
                     " \"segmentation\": [[0, 0, 1, 0, 1, 1]]}]",
                     VP_ERR_FORMAT,
                     "%2$s: result 0: segmentation is not {\"size\", \"counts\"}");
}
END_TEST

static void setup(void)
{
    snprintf(tmpdir, sizeof tmpdir, "/tmp/check_cocoeval.XXXXXX");
    ck_assert_ptr_nonnull(mkdtemp(tmpdir));
}

static void teardown(void)
{
    static const char *const names[] = {"gt.json",  "res.json", "egt.json",
                                        "eres.json", "dgt.json", "dres.json"};
    char p[200];
    for (int i = 0; i < 6; i++) {
        snprintf(p, sizeof p, "%s/%s", tmpdir, names[i]);
        unlink(p);
    }
    rmdir(tmpdir);
}

/* `vpeft eval` prints COCOeval.summarize()'s layout with case-a's numbers. */
START_TEST(test_cli)
{
    const char *bin = getenv("VPEFT_BIN"), *src = getenv("VPEFT_SRCDIR");
    ck_assert_msg(bin && src, "VPEFT_BIN and VPEFT_SRCDIR are set by make check");
    ck_assert_int_eq(vt_sh("%s eval --gt %s/tests/data/coco-eval/case-a/gt.json --results "
                           "%s/tests/data/coco-eval/case-a/results.json", bin, src, src), 0);
    vt_assert_has(vt_out, " Average Precision  (AP) @[ IoU=0.50:0.95 | area=   all | maxDets=100 ] "
                          "= 0.119\n");
    vt_assert_has(vt_out, " Average Recall     (AR) @[ IoU=0.50:0.95 | area= large | maxDets=100 ] "
                          "= 0.533\n");
    ck_assert_int_eq(vt_sh("%s eval --gt %s/tests/data/coco-eval/case-a/gt.json", bin, src), 2);
    vt_assert_has(vt_err, "--gt and --results, or --config, are required");
    ck_assert_int_eq(vt_sh("%s eval --gt %s/tests/data/coco-eval/case-a/gt.json --results "
                           "%s/tests/data/coco-eval/case-a/results.json --bootstrap 300 --seed 7",
                           bin, src, src), 0);
    vt_assert_has(vt_out, " Average Precision  (AP) @[ IoU=0.50:0.95 | area=   all | maxDets=100 ] "
                          "= 0.119  [0.0");
    vt_assert_has(vt_out, "95% intervals: percentile bootstrap over images\n");
    ck_assert_int_eq(vt_sh("%s eval --gt a.json --results b.json --seed 3", bin), 2);
    vt_assert_has(vt_err, "--seed goes with --bootstrap");
    ck_assert_int_eq(vt_sh("%s eval --gt a.json --results b.json --bootstrap 0", bin), 2);
    vt_assert_has(vt_err, "--bootstrap '0': expected a number of resamples from 1 to 100000");
    ck_assert_int_eq(vt_sh("%s eval --gt /nonexistent.json --results x.json", bin), 1);
    vt_assert_has(vt_err, "vpeft: /nonexistent.json: ");
}
END_TEST

int main(void)
{
    Suite *s = suite_create("cocoeval");
    TCase *tc = tcase_create("cocoeval");
    tcase_add_checked_fixture(tc, setup, teardown);
    tcase_add_test(tc, test_pycocotools);
    tcase_add_test(tc, test_case_memory);
    tcase_add_test(tc, test_weighted);
    tcase_add_test(tc, test_bootstrap);
    tcase_add_test(tc, test_case_polygons);
    tcase_add_test(tc, test_polygons);
    tcase_add_test(tc, test_polygon_union);
    tcase_add_test(tc, test_long_polygon);
    tcase_add_test(tc, test_hand);
    tcase_add_test(tc, test_memory);
    tcase_add_test(tc, test_errors);
    tcase_add_test(tc, test_cli);
    suite_add_tcase(s, tc);
    return vt_run(s);
}
