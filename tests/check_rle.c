/*
 * COCO run-length encoding (core/eval/rle.c) against pycocotools: every
 * compressed and uncompressed RLE of tests/data/coco-eval (a COCO case
 * made and scored by pycocotools outside this project) decodes and encodes
 * back to the same string, with the annotation's area; a hand-worked mask;
 * masks from logits; malformed strings. Needs no Vulkan device.
 */
#include <cjson/cJSON.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "eval/rle.h"
#include "harness.h"

START_TEST(test_hand)
{
    /* rows [0 1], [1 1], [0 0]: column-major 0 1 0 | 1 1 0 -> runs 1 1 1 2 1 */
    const uint8_t m[6] = {0, 1, 1, 1, 0, 0};
    vp_rle r;
    vt_ok(vp_rle_from_mask(m, 3, 2, &r));
    ck_assert_uint_eq(r.n, 5);
    const uint32_t want[5] = {1, 1, 1, 2, 1};
    for (int i = 0; i < 5; i++)
        ck_assert_uint_eq(r.counts[i], want[i]);
    ck_assert_uint_eq(vp_rle_area(&r), 3);
    char *s = vp_rle_to_string(&r);
    ck_assert_str_eq(s, "11110"); /* the 4th and 5th counts as differences: 1, 0 */
    uint8_t back[6];
    vp_rle r2;
    vt_ok(vp_rle_from_string(s, 3, 2, &r2));
    vp_rle_to_mask(&r2, back);
    ck_assert(!memcmp(back, m, 6));
    free(s);
    vp_rle_free(&r);
    vp_rle_free(&r2);

    /* Logits: inside where > 0 (sigmoid > 0.5); all outside: one run. */
    const float lg[6] = {-1, 2, 0.5f, 3, 0, -0.1f};
    vt_ok(vp_rle_from_logits(lg, 3, 2, &r));
    ck_assert_uint_eq(vp_rle_area(&r), 3); /* the 0 is outside */
    vp_rle_free(&r);
    const float none[4] = {-1, -2, -3, -4};
    vt_ok(vp_rle_from_logits(none, 2, 2, &r));
    ck_assert_uint_eq(r.n, 1);
    ck_assert_uint_eq(r.counts[0], 4);
    s = vp_rle_to_string(&r);
    ck_assert_str_eq(s, "4");
    free(s);
    vp_rle_free(&r);
}
END_TEST

START_TEST(test_errors)
{
    vp_rle r;
    vt_expect_err(vp_rle_from_string("11110", 3, 3, &r), VP_ERR_FORMAT,
                  "RLE: the runs cover 6 pixels, a 3 x 3 mask has 9");
    vt_expect_err(vp_rle_from_string("11 10", 3, 2, &r), VP_ERR_FORMAT,
                  "RLE: not a compressed COCO string (a character out of range at character 2)");
    vt_expect_err(vp_rle_from_string("1\x60", 3, 2, &r), VP_ERR_FORMAT,
                  "RLE: not a compressed COCO string (it ends inside a count at character 2)");
    vt_expect_err(vp_rle_from_counts((const uint32_t[]){2, 2}, 2, 3, 2, &r), VP_ERR_FORMAT,
                  "RLE: the counts sum to 4, a 3 x 2 mask has 6 pixels");
    ck_assert_ptr_null(r.counts);
}
END_TEST

static cJSON *load_json(const char *name)
{
    const char *src = getenv("VPEFT_SRCDIR");
    ck_assert_msg(src != NULL, "VPEFT_SRCDIR is not set (run through make check)");
    char path[4200];
    snprintf(path, sizeof path, "%s/tests/data/coco-eval/case-a/%s", src, name);
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

/* One segmentation object: round trips, and its area when known. */
static int check_segm(const cJSON *seg, double area)
{
    const cJSON *size = cJSON_GetObjectItem(seg, "size"), *counts = cJSON_GetObjectItem(seg, "counts");
    int64_t h = (int64_t)cJSON_GetArrayItem(size, 0)->valuedouble;
    int64_t w = (int64_t)cJSON_GetArrayItem(size, 1)->valuedouble;
    vp_rle r, r2;
    if (cJSON_IsString(counts)) {
        vt_ok(vp_rle_from_string(counts->valuestring, h, w, &r));
    } else {
        int n = cJSON_GetArraySize(counts);
        uint32_t *c = malloc((size_t)n * sizeof *c);
        for (int i = 0; i < n; i++)
            c[i] = (uint32_t)cJSON_GetArrayItem(counts, i)->valuedouble;
        vt_ok(vp_rle_from_counts(c, (size_t)n, h, w, &r));
        free(c);
    }
    uint8_t *m = malloc((size_t)(h * w));
    vp_rle_to_mask(&r, m);
    vt_ok(vp_rle_from_mask(m, h, w, &r2));
    char *a = vp_rle_to_string(&r), *b = vp_rle_to_string(&r2);
    ck_assert_str_eq(a, b);
    if (cJSON_IsString(counts))
        ck_assert_str_eq(a, counts->valuestring);
    if (area >= 0)
        ck_assert_msg((double)vp_rle_area(&r) == area, "area %llu, the file says %g",
                      (unsigned long long)vp_rle_area(&r), area);
    free(a);
    free(b);
    free(m);
    vp_rle_free(&r);
    vp_rle_free(&r2);
    return 1;
}

START_TEST(test_pycocotools)
{
    cJSON *gt = load_json("gt.json"), *res = load_json("results.json");
    int n = 0;
    const cJSON *a;
    cJSON_ArrayForEach(a, cJSON_GetObjectItem(gt, "annotations")) {
        const cJSON *seg = cJSON_GetObjectItem(a, "segmentation");
        if (cJSON_IsObject(seg))
            n += check_segm(seg, cJSON_GetObjectItem(a, "area")->valuedouble);
    }
    int n_gt = n;
    cJSON_ArrayForEach(a, res)
        n += check_segm(cJSON_GetObjectItem(a, "segmentation"), -1);
    printf("rle: %d ground-truth and %d result masks round-trip\n", n_gt, n - n_gt);
    ck_assert_int_ge(n_gt, 10);
    ck_assert_int_ge(n - n_gt, 50);
    cJSON_Delete(gt);
    cJSON_Delete(res);
}
END_TEST

int main(void)
{
    Suite *s = suite_create("rle");
    TCase *tc = tcase_create("rle");
    tcase_add_test(tc, test_hand);
    tcase_add_test(tc, test_errors);
    tcase_add_test(tc, test_pycocotools);
    suite_add_tcase(s, tc);
    return vt_run(s);
}
