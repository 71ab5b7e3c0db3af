/*
 * Data suite (core/data): COCO datasets loaded from hand-made files and
 * from generated shapes, the loader's batches (geometry, area-averaged
 * targets, flips, max_targets, determinism and resuming, the evaluation
 * pass), vp_batch_unproject, every error the loading path reports, and
 * `vpeft make-shapes`. The generated ground truth scored against itself
 * through core/eval proves the annotations are consistent.
 */
#include "harness.h"

#include <math.h>
#include <stdarg.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include "data/data.h"
#include "data/internal.h"
#include "eval/cocoeval.h"
#include "eval/rle.h"
#include "io/image.h"
#include "io/png.h"
#include "util/error.h"
#include "util/file.h"

static char base[512];

/* base/name, formatted. */
static const char *at(const char *fmt, ...) __attribute__((format(printf, 1, 2)));
static const char *at(const char *fmt, ...)
{
    static char bufs[4][1024];
    static int i;
    char *b = bufs[i++ % 4], name[512];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(name, sizeof name, fmt, ap);
    va_end(ap);
    snprintf(b, 1024, "%s/%s", base, name);
    return b;
}

static void put(const char *path, const char *text)
{
    vt_ok(vp_file_write_atomic(path, text, strlen(text)));
}

static char *slurp(const char *path, size_t *n)
{
    char *d;
    vt_ok(vp_file_read(path, &d, n));
    return d;
}

static void shapes(const char *dir, char domain, int n, int size, uint64_t seed)
{
    vt_ok(vp_shapes_write(&(vp_shapes_opts){.out = dir, .domain = domain, .n = n, .size = size,
                                            .seed = seed}));
}

static vp_dataset *load(const char *json, bool skip_bad)
{
    vp_dataset *ds = NULL;
    vt_ok(vp_dataset_load(json, NULL, &(vp_dataset_opts){.skip_bad = skip_bad}, &ds));
    return ds;
}

static size_t count(const char *hay, const char *needle)
{
    size_t n = 0;
    for (const char *p = hay; (p = strstr(p, needle)); p++)
        n++;
    return n;
}

/* A w x h PNG whose pixel (x, y) is (x * 10, y * 20, 7) at dir/name. */
static void gradient_png(const char *path, int w, int h)
{
    uint8_t *rgb = malloc((size_t)3 * w * h);
    for (int y = 0; y < h; y++)
        for (int x = 0; x < w; x++) {
            uint8_t *p = rgb + 3 * ((size_t)y * w + x);
            p[0] = (uint8_t)(x * 10);
            p[1] = (uint8_t)(y * 20);
            p[2] = 7;
        }
    vt_ok(vp_png_write(path, w, h, rgb));
    free(rgb);
}

/* The counts of a rectangle [x0, x1) x [y0, y1) on an h x w image, as a
 * JSON list. */
static void rect_counts(int h, int w, int x0, int x1, int y0, int y1, char *out, size_t cap)
{
    uint8_t *m = calloc((size_t)h * w, 1);
    for (int y = y0; y < y1; y++)
        for (int x = x0; x < x1; x++)
            m[y * w + x] = 1;
    vp_rle r;
    vt_ok(vp_rle_from_mask(m, h, w, &r));
    size_t n = (size_t)snprintf(out, cap, "[");
    for (size_t i = 0; i < r.n; i++)
        n += (size_t)snprintf(out + n, cap - n, "%s%u", i ? ", " : "", r.counts[i]);
    snprintf(out + n, cap - n, "]");
    vp_rle_free(&r);
    free(m);
}

static bool same_batch(const vp_batch *a, const vp_batch *b, const vp_loader_opts *o)
{
    size_t B = (size_t)o->batch, T = (size_t)o->max_targets;
    if (a->k != b->k || a->n != b->n || a->epoch != b->epoch)
        return false;
    for (size_t j = 0; j < B; j++) {
        const vp_batch_item *x = &a->items[j], *y = &b->items[j];
        if (x->index != y->index || x->image_id != y->image_id || x->flipped != y->flipped ||
            x->rw != y->rw || x->rh != y->rh || x->w != y->w || x->h != y->h)
            return false;
    }
    return !memcmp(a->pixels, b->pixels, B * 3 * o->size * o->size * sizeof(float)) &&
           !memcmp(a->labels, b->labels, B * T * sizeof(int32_t)) &&
           !memcmp(a->masks, b->masks, B * T * o->mask_h * o->mask_w * sizeof(float));
}

/* ---- datasets from make-shapes ---- */

START_TEST(test_shapes_load)
{
    shapes(at("a"), 'A', 12, 64, 1);
    size_t n;
    char *text = slurp(at("a/annotations.json"), &n);
    vp_dataset *ds = load(at("a/annotations.json"), false);
    ck_assert_str_eq(vp_dataset_path(ds), at("a/annotations.json"));
    ck_assert_uint_eq(vp_dataset_size(ds), 12);
    ck_assert_uint_eq(vp_dataset_size(ds), count(text, "\"file_name\""));
    ck_assert_uint_eq(vp_dataset_instances(ds), count(text, "\"iscrowd\":0"));
    ck_assert_uint_ge(vp_dataset_instances(ds), 12); /* at least one per image */
    ck_assert_uint_le(vp_dataset_instances(ds), 6 * 12);
    ck_assert_uint_eq(vp_dataset_skipped(ds), 0);
    ck_assert_uint_eq(vp_dataset_crowd(ds), 0);
    ck_assert_uint_eq(vp_dataset_classes(ds), 3);
    static const char *const names[] = {"circle", "square", "triangle"};
    for (uint32_t k = 0; k < 3; k++) {
        ck_assert_int_eq(vp_dataset_category_id(ds, k), k + 1);
        ck_assert_str_eq(vp_dataset_category_name(ds, k), names[k]);
    }
    const vp_dataset_image *im = vp_dataset_image_at(ds, 4);
    ck_assert_int_eq(im->id, 5);
    ck_assert_int_eq(im->w, 64);
    ck_assert_int_eq(im->h, 64);
    ck_assert_str_eq(im->path, at("a/images/000005.png"));
    /* Both segmentation forms occur, and every kept area is >= 1% and >= 20. */
    ck_assert_uint_gt(count(text, "\"counts\""), 0);
    ck_assert_uint_gt(count(text, "\"segmentation\":[["), 0);
    for (uint32_t i = 0; i < ds->n_inst; i++)
        ck_assert_uint_ge(ds->inst[i].area, 41);
    free(text);
    vp_dataset_destroy(ds);
    vp_dataset_destroy(NULL);
}
END_TEST

START_TEST(test_shapes_domain_b)
{
    shapes(at("b"), 'B', 10, 64, 2);
    vp_dataset *ds = load(at("b/annotations.json"), false);
    ck_assert_uint_eq(vp_dataset_classes(ds), 5);
    static const int64_t ids[] = {3, 10, 20, 35, 50};
    static const char *const names[] = {"triangle", "ellipse", "star", "ring", "cross"};
    for (uint32_t k = 0; k < 5; k++) {
        ck_assert_int_eq(vp_dataset_category_id(ds, k), ids[k]);
        ck_assert_str_eq(vp_dataset_category_name(ds, k), names[k]);
    }
    /* Class indices are dense even though ids are not. */
    uint32_t seen[5] = {0};
    for (uint32_t i = 0; i < ds->n_inst; i++) {
        ck_assert_uint_lt(ds->inst[i].cls, 5);
        seen[ds->inst[i].cls]++;
    }
    size_t n;
    char *text = slurp(at("b/annotations.json"), &n);
    for (uint32_t k = 0; k < 5; k++) {
        char key[64];
        snprintf(key, sizeof key, "\"category_id\":%lld,", (long long)ids[k]);
        ck_assert_uint_eq(seen[k], count(text, key));
    }
    free(text);
    vp_dataset_destroy(ds);
}
END_TEST

static bool same_file(const char *a, const char *b)
{
    size_t na, nb;
    char *x = slurp(a, &na), *y = slurp(b, &nb);
    bool same = na == nb && !memcmp(x, y, na);
    free(x);
    free(y);
    return same;
}

START_TEST(test_shapes_deterministic)
{
    shapes(at("d1"), 'B', 6, 48, 7);
    shapes(at("d2"), 'B', 6, 48, 7);
    shapes(at("d3"), 'B', 6, 48, 8);
    ck_assert(same_file(at("d1/annotations.json"), at("d2/annotations.json")));
    for (int i = 1; i <= 6; i++)
        ck_assert(same_file(at("d1/images/%06d.png", i), at("d2/images/%06d.png", i)));
    ck_assert(!same_file(at("d1/annotations.json"), at("d3/annotations.json")));
    ck_assert(!same_file(at("d1/images/000001.png"), at("d3/images/000001.png")));
    vt_expect_err(vp_shapes_write(&(vp_shapes_opts){.out = at("x"), .domain = 'C', .n = 1,
                                                    .size = 64}),
                  VP_ERR_INVALID, "make-shapes: domain 'C' is not A or B");
    vt_expect_err(vp_shapes_write(&(vp_shapes_opts){.out = at("x"), .domain = 'A', .n = 1,
                                                    .size = 8}),
                  VP_ERR_INVALID, "make-shapes: size 8 (32 to 4096)");
}
END_TEST

/* Results built from the ground truth's own masks score AP 1. */
START_TEST(test_shapes_self_eval)
{
    for (int d = 0; d < 2; d++) {
        const char *dir = at("e%d", d);
        shapes(dir, d ? 'B' : 'A', 8, 96, 3);
        char gt[1024];
        snprintf(gt, sizeof gt, "%s/annotations.json", dir);
        vp_dataset *ds = load(gt, false);
        size_t cap = 1 << 20, n = 0;
        char *res = malloc(cap);
        n += (size_t)snprintf(res + n, cap - n, "[");
        for (uint32_t i = 0; i < ds->n_img; i++)
            for (uint32_t a = ds->first[i]; a < ds->first[i + 1]; a++) {
                char *s = vp_rle_to_string(&ds->inst[a].rle), *e = malloc(2 * strlen(s) + 1);
                size_t m = 0;
                for (const char *c = s; *c; c++) {
                    if (*c == '\\' || *c == '"')
                        e[m++] = '\\';
                    e[m++] = *c;
                }
                e[m] = '\0';
                free(s);
                s = e;
                n += (size_t)snprintf(res + n, cap - n,
                                      "%s{\"image_id\": %lld, \"category_id\": %lld, \"score\": "
                                      "0.9, \"segmentation\": {\"size\": [96, 96], \"counts\": "
                                      "\"%s\"}}",
                                      n > 1 ? ", " : "", (long long)ds->img[i].id,
                                      (long long)ds->cat_id[ds->inst[a].cls], s);
                free(s);
            }
        snprintf(res + n, cap - n, "]");
        ck_assert_uint_lt(n, cap - 8);
        put(at("res%d.json", d), res);
        vp_coco_stats st;
        vt_ok(vp_coco_eval_files(gt, at("res%d.json", d), &st));
        ck_assert_double_eq_tol(st.ap, 1.0, 1e-12);
        ck_assert_double_eq_tol(st.ar100, 1.0, 1e-12);
        free(res);
        vp_dataset_destroy(ds);
    }
}
END_TEST

/* ---- the loader ---- */

START_TEST(test_loader_determinism)
{
    shapes(at("l"), 'A', 10, 64, 4);
    vp_dataset *ds = load(at("l/annotations.json"), false);
    vp_loader_opts o = {.batch = 3, .size = 32, .mask_h = 8, .mask_w = 8, .max_targets = 6,
                        .train = true, .seed = 11};
    vp_loader *a, *b, *c, *r;
    vt_ok(vp_loader_create(ds, &o, &a));
    vt_ok(vp_loader_create(ds, &o, &b));
    o.seed = 12;
    vt_ok(vp_loader_create(ds, &o, &c));
    o.seed = 11;
    o.start = 5;
    o.prefetch = 1;
    vt_ok(vp_loader_create(ds, &o, &r));
    o.start = 0;
    ck_assert_uint_eq(vp_loader_batches(a), 4);
    /* 8 batches of 3 over 10 images: positions 0..23, epochs 0..2. */
    uint32_t seen[3][10] = {{0}};
    int flips = 0, differ = 0;
    for (uint64_t k = 0; k < 8; k++) {
        const vp_batch *x, *y, *z;
        vt_ok(vp_loader_next(a, &x));
        vt_ok(vp_loader_next(b, &y));
        vt_ok(vp_loader_next(c, &z));
        ck_assert_uint_eq(x->k, k);
        ck_assert_int_eq(x->n, 3);
        ck_assert_uint_eq(x->epoch, k * 3 / 10);
        ck_assert(same_batch(x, y, &o));
        differ += !same_batch(x, z, &o);
        if (k >= 5) {
            const vp_batch *w;
            vt_ok(vp_loader_next(r, &w));
            ck_assert_uint_eq(w->k, k);
            ck_assert(same_batch(x, w, &o));
        }
        for (int j = 0; j < 3; j++) {
            uint64_t p = k * 3 + (uint64_t)j;
            seen[p / 10][x->items[j].index]++;
            flips += x->items[j].flipped;
            ck_assert_int_eq(x->items[j].image_id, x->items[j].index + 1);
            ck_assert_int_eq(x->items[j].rw, 32);
            ck_assert_int_eq(x->items[j].rh, 32);
        }
    }
    /* Each full epoch is a permutation of the images. */
    for (int e = 0; e < 2; e++)
        for (int i = 0; i < 10; i++)
            ck_assert_uint_eq(seen[e][i], 1);
    ck_assert_int_gt(flips, 3);
    ck_assert_int_lt(flips, 21);
    ck_assert_int_ge(differ, 6);
    vp_loader_destroy(a);
    vp_loader_destroy(b);
    vp_loader_destroy(c);
    vp_loader_destroy(r);
    /* Destroyed mid-epoch with its queue full and the thread waiting. */
    vt_ok(vp_loader_create(ds, &o, &a));
    const vp_batch *x;
    vt_ok(vp_loader_next(a, &x));
    nanosleep(&(struct timespec){.tv_nsec = 20000000}, NULL);
    vp_loader_destroy(a);
    vp_loader_destroy(NULL);
    vp_dataset_destroy(ds);
}
END_TEST

/* A 16 x 8 image, size 16 (scale 1: resizing is the identity), 4 x 4
 * cells of 16 pixels; instances are rectangles given as RLE counts. */
static vp_dataset *hand_dataset(bool crowd)
{
    vt_ok(vp_mkdir_p(at("h")));
    gradient_png(at("h/img.png"), 16, 8);
    char r0[512], r1[512], r2[512], json[4096];
    rect_counts(8, 16, 2, 9, 1, 6, r0, sizeof r0);   /* 35 pixels, class 1 (id 7) */
    rect_counts(8, 16, 12, 14, 0, 2, r1, sizeof r1); /* 4 pixels, class 0 (id 5) */
    rect_counts(8, 16, 10, 16, 4, 8, r2, sizeof r2); /* 24 pixels, class 2 (id 9) */
    snprintf(json, sizeof json,
             "{\"images\": [{\"id\": 3, \"width\": 16, \"height\": 8, \"file_name\": \"img.png\"}],\n"
             " \"categories\": [{\"id\": 9, \"name\": \"c\"}, {\"id\": 5, \"name\": \"a\"},"
             " {\"id\": 7, \"name\": \"b\"}],\n"
             " \"annotations\": [\n"
             "  {\"id\": 1, \"image_id\": 3, \"category_id\": 7, \"iscrowd\": 0,"
             " \"segmentation\": {\"size\": [8, 16], \"counts\": %s}},\n"
             "  {\"id\": 2, \"image_id\": 3, \"category_id\": 5,"
             " \"segmentation\": {\"size\": [8, 16], \"counts\": %s}},\n"
             "  {\"id\": 3, \"image_id\": 3, \"category_id\": 9, \"iscrowd\": %d,"
             " \"segmentation\": {\"size\": [8, 16], \"counts\": %s}}]}\n",
             r0, r1, crowd, r2);
    put(at("h/ann.json"), json);
    return load(at("h/ann.json"), false);
}

/* Two shards of batch 2 together are one loader's batch of 4, slot for
 * slot, flips included, over several epochs (global batches straddle them). */
START_TEST(test_loader_shards)
{
    shapes(at("sh"), 'B', 7, 32, 5);
    vp_dataset *ds = load(at("sh/annotations.json"), false);
    vp_loader_opts o = {.batch = 4, .size = 32, .mask_h = 8, .mask_w = 8, .max_targets = 6,
                        .train = true, .seed = 3};
    vp_loader *whole, *part[2];
    vt_ok(vp_loader_create(ds, &o, &whole));
    vp_loader_opts h = o;
    h.batch = 2;
    h.shard_count = 2;
    for (int r = 0; r < 2; r++) {
        h.shard_rank = r;
        vt_ok(vp_loader_create(ds, &h, &part[r]));
    }
    size_t px = (size_t)3 * 32 * 32, mk = (size_t)6 * 8 * 8;
    int flips = 0;
    for (int k = 0; k < 6; k++) {
        const vp_batch *w, *p[2];
        vt_ok(vp_loader_next(whole, &w));
        for (int r = 0; r < 2; r++) {
            vt_ok(vp_loader_next(part[r], &p[r]));
            ck_assert_uint_eq(p[r]->epoch, w->epoch);
            for (int j = 0; j < 2; j++) {
                int slot = 2 * r + j;
                const vp_batch_item *a = &p[r]->items[j], *b = &w->items[slot];
                ck_assert_msg(a->index == b->index && a->flipped == b->flipped,
                              "batch %d, rank %d, slot %d: image %u%s, want %u%s", k, r, j,
                              a->index, a->flipped ? " flipped" : "", b->index,
                              b->flipped ? " flipped" : "");
                flips += a->flipped;
                ck_assert(!memcmp(p[r]->pixels + j * px, w->pixels + slot * px,
                                  px * sizeof(float)));
                ck_assert(!memcmp(p[r]->masks + j * mk, w->masks + slot * mk,
                                  mk * sizeof(float)));
                ck_assert(!memcmp(p[r]->labels + j * 6, w->labels + slot * 6,
                                  6 * sizeof(int32_t)));
            }
        }
    }
    ck_assert_int_gt(flips, 0);
    ck_assert_int_lt(flips, 24);
    h.shard_rank = 2;
    vp_loader *bad;
    ck_assert_int_eq(vp_loader_create(ds, &h, &bad), VP_ERR_INVALID);
    vp_loader_destroy(whole);
    vp_loader_destroy(part[0]);
    vp_loader_destroy(part[1]);
    vp_dataset_destroy(ds);
}
END_TEST

START_TEST(test_loader_targets)
{
    vp_dataset *ds = hand_dataset(false);
    ck_assert_uint_eq(vp_dataset_instances(ds), 3);
    ck_assert_int_eq(vp_dataset_category_id(ds, 0), 5);
    ck_assert_str_eq(vp_dataset_category_name(ds, 2), "c");
    vp_loader_opts o = {.batch = 1, .size = 16, .mask_h = 2, .mask_w = 4, .max_targets = 4};
    vp_loader *l;
    vt_ok(vp_loader_create(ds, &o, &l));
    const vp_batch *b;
    vt_ok(vp_loader_next(l, &b));
    ck_assert_int_eq(b->n, 1);
    ck_assert_int_eq(b->items[0].rw, 16);
    ck_assert_int_eq(b->items[0].rh, 8);
    ck_assert(!b->items[0].flipped);
    /* Slots in file order, the empty one -1. */
    ck_assert_int_eq(b->labels[0], 1);
    ck_assert_int_eq(b->labels[1], 0);
    ck_assert_int_eq(b->labels[2], 2);
    ck_assert_int_eq(b->labels[3], -1);
    /* Cells are 8 rows x 4 columns; the image covers the top row of cells. */
    static const float want[3][8] = {
        {10 / 32.f, 20 / 32.f, 5 / 32.f, 0, 0, 0, 0, 0},
        {0, 0, 0, 4 / 32.f, 0, 0, 0, 0},
        {0, 0, 8 / 32.f, 16 / 32.f, 0, 0, 0, 0},
    };
    for (int t = 0; t < 3; t++)
        for (int q = 0; q < 8; q++)
            ck_assert_float_eq_tol(b->masks[t * 8 + q], want[t][q], 1e-7);
    for (int q = 0; q < 8; q++)
        ck_assert_float_eq(b->masks[3 * 8 + q], 0);
    /* Normalized pixels on the image, exactly 0 in the padding. */
    static const float mean[3] = {0.485f, 0.456f, 0.406f}, sd[3] = {0.229f, 0.224f, 0.225f};
    for (int y = 0; y < 16; y++)
        for (int x = 0; x < 16; x++) {
            float v[3] = {x * 10 / 255.f, y * 20 / 255.f, 7 / 255.f};
            for (int c = 0; c < 3; c++)
                ck_assert_float_eq_tol(b->pixels[(c * 16 + y) * 16 + x],
                                       y < 8 ? (v[c] - mean[c]) / sd[c] : 0, 1e-5);
        }
    ck_assert_uint_eq(vp_loader_batches(l), 1);
    vt_ok(vp_loader_next(l, &b));
    ck_assert_ptr_null(b);
    vt_ok(vp_loader_next(l, &b));
    ck_assert_ptr_null(b);
    vp_loader_destroy(l);

    /* max_targets 2: the two largest (35 and 24 pixels) in file order. */
    o.max_targets = 2;
    vt_ok(vp_loader_create(ds, &o, &l));
    vt_ok(vp_loader_next(l, &b));
    ck_assert_int_eq(b->labels[0], 1);
    ck_assert_int_eq(b->labels[1], 2);
    ck_assert_float_eq_tol(b->masks[8 + 3], 16 / 32.f, 1e-7);
    vp_loader_destroy(l);
    vp_dataset_destroy(ds);

    /* A crowd region is counted, not kept. */
    ds = hand_dataset(true);
    ck_assert_uint_eq(vp_dataset_instances(ds), 2);
    ck_assert_uint_eq(vp_dataset_crowd(ds), 1);
    o.max_targets = 4;
    vt_ok(vp_loader_create(ds, &o, &l));
    vt_ok(vp_loader_next(l, &b));
    ck_assert_int_eq(b->labels[0], 1);
    ck_assert_int_eq(b->labels[1], 0);
    ck_assert_int_eq(b->labels[2], -1);
    vp_loader_destroy(l);
    vp_dataset_destroy(ds);
}
END_TEST

/* A flipped item is the mirror of the unflipped one, pixels and targets. */
START_TEST(test_loader_flip)
{
    vp_dataset *ds = hand_dataset(false);
    vp_loader_opts o = {.batch = 1, .size = 16, .mask_h = 4, .mask_w = 4, .max_targets = 3,
                        .train = true, .seed = 5, .prefetch = 3};
    vp_loader *l;
    vt_ok(vp_loader_create(ds, &o, &l));
    float *pix[2] = {malloc(3 * 256 * sizeof(float)), malloc(3 * 256 * sizeof(float))};
    float *msk[2] = {malloc(3 * 16 * sizeof(float)), malloc(3 * 16 * sizeof(float))};
    int have[2] = {0, 0};
    for (int k = 0; k < 40 && !(have[0] && have[1]); k++) {
        const vp_batch *b;
        vt_ok(vp_loader_next(l, &b));
        ck_assert_uint_eq(b->epoch, (uint32_t)k);
        int f = b->items[0].flipped;
        memcpy(pix[f], b->pixels, 3 * 256 * sizeof(float));
        memcpy(msk[f], b->masks, 3 * 16 * sizeof(float));
        have[f] = 1;
    }
    ck_assert(have[0] && have[1]);
    for (int c = 0; c < 3; c++)
        for (int y = 0; y < 16; y++)
            for (int x = 0; x < 16; x++)
                ck_assert_float_eq(pix[1][(c * 16 + y) * 16 + x],
                                   pix[0][(c * 16 + y) * 16 + 15 - x]);
    for (int t = 0; t < 3; t++)
        for (int y = 0; y < 4; y++)
            for (int x = 0; x < 4; x++)
                ck_assert_float_eq(msk[1][t * 16 + y * 4 + x], msk[0][t * 16 + y * 4 + 3 - x]);
    ck_assert_float_eq_tol(msk[0][0 * 16 + 1], 12 / 16.f, 1e-7); /* rows 1..3, columns 4..7 */
    for (int i = 0; i < 2; i++) {
        free(pix[i]);
        free(msk[i]);
    }
    vp_loader_destroy(l);
    vp_dataset_destroy(ds);
}
END_TEST

START_TEST(test_loader_eval)
{
    shapes(at("v"), 'B', 5, 40, 9);
    vp_dataset *ds = load(at("v/annotations.json"), false);
    vp_loader_opts o = {.batch = 2, .size = 40, .mask_h = 10, .mask_w = 10, .max_targets = 6,
                        .seed = 3};
    vp_loader *l;
    vt_ok(vp_loader_create(ds, &o, &l));
    ck_assert_uint_eq(vp_loader_batches(l), 3);
    const vp_batch *b;
    for (int k = 0; k < 3; k++) {
        vt_ok(vp_loader_next(l, &b));
        ck_assert_ptr_nonnull(b);
        ck_assert_uint_eq(b->k, k);
        ck_assert_int_eq(b->n, k < 2 ? 2 : 1);
        for (int j = 0; j < b->n; j++) {
            ck_assert_uint_eq(b->items[j].index, (uint32_t)(2 * k + j));
            ck_assert(!b->items[j].flipped);
            ck_assert_int_ne(b->labels[j * 6], -1);
        }
    }
    /* The short batch's empty slot: zeros and -1. */
    ck_assert_int_eq(b->items[1].w, 0);
    for (int t = 0; t < 6; t++)
        ck_assert_int_eq(b->labels[6 + t], -1);
    for (int i = 0; i < 3 * 40 * 40; i++)
        ck_assert_float_eq(b->pixels[3 * 40 * 40 + i], 0);
    for (int i = 0; i < 6 * 100; i++)
        ck_assert_float_eq(b->masks[6 * 100 + i], 0);
    vt_ok(vp_loader_next(l, &b));
    ck_assert_ptr_null(b);
    vp_loader_destroy(l);
    /* Started at the last batch. */
    o.start = 2;
    vt_ok(vp_loader_create(ds, &o, &l));
    vt_ok(vp_loader_next(l, &b));
    ck_assert_uint_eq(b->k, 2);
    ck_assert_uint_eq(b->items[0].index, 4);
    vt_ok(vp_loader_next(l, &b));
    ck_assert_ptr_null(b);
    vp_loader_destroy(l);
    o.start = 0;
    o.mask_h = 7;
    l = (vp_loader *)1;
    ck_assert_int_eq(vp_loader_create(ds, &o, &l), VP_ERR_INVALID);
    ck_assert_ptr_null(l);
    vp_dataset_destroy(ds);
}
END_TEST

/* Targets mapped back: logits 2m - 1 recover the original masks. Each
 * instance of at least min_area pixels must reach IoU > 0.9; smaller ones
 * (occluded slivers a few cells wide) count in the pooled IoU, which must
 * exceed 0.95. */
static void check_unproject(vp_dataset *ds, const vp_loader_opts *o, int batches,
                            uint64_t min_area, int *flips)
{
    vp_loader *l;
    vt_ok(vp_loader_create(ds, o, &l));
    int M = o->mask_h * o->mask_w;
    float *lg = malloc((size_t)M * sizeof *lg);
    size_t inter = 0, uni = 0, checked = 0;
    for (int k = 0; k < batches; k++) {
        const vp_batch *b;
        vt_ok(vp_loader_next(l, &b));
        for (int j = 0; j < b->n; j++) {
            const vp_batch_item *it = &b->items[j];
            const vp_dataset_image *im = vp_dataset_image_at(ds, it->index);
            size_t np = (size_t)im->w * im->h;
            uint8_t *got = malloc(np), *want = malloc(np);
            flips[it->flipped]++;
            for (int t = 0; t < o->max_targets && b->labels[j * o->max_targets + t] >= 0; t++) {
                const float *m = b->masks + ((size_t)j * o->max_targets + t) * M;
                for (int q = 0; q < M; q++)
                    lg[q] = 2 * m[q] - 1;
                vt_ok(vp_batch_unproject(it, o->size, lg, o->mask_h, o->mask_w, got));
                const vp_instance *in = &ds->inst[ds->first[it->index] + (uint32_t)t];
                vp_rle_to_mask(&in->rle, want);
                size_t i_ = 0, u = 0;
                for (size_t i = 0; i < np; i++) {
                    i_ += got[i] && want[i];
                    u += got[i] || want[i];
                }
                inter += i_;
                uni += u;
                if (in->area >= min_area) {
                    ck_assert_msg((double)i_ / (double)u > 0.9,
                                  "image %lld instance %d (%llu pixels) flipped %d: IoU %g",
                                  (long long)it->image_id, t, (unsigned long long)in->area,
                                  it->flipped, (double)i_ / (double)u);
                    checked++;
                }
            }
            free(got);
            free(want);
        }
    }
    ck_assert_uint_gt(checked, 0);
    ck_assert_msg((double)inter / (double)uni > 0.95, "pooled IoU %g", (double)inter / (double)uni);
    free(lg);
    vp_loader_destroy(l);
}

START_TEST(test_unproject)
{
    shapes(at("u"), 'A', 24, 128, 21);
    vp_dataset *ds = load(at("u/annotations.json"), false);
    int flips[2] = {0, 0};
    check_unproject(ds, &(vp_loader_opts){.batch = 2, .size = 64, .mask_h = 32, .mask_w = 32,
                                          .max_targets = 6, .train = true, .seed = 1},
                    12, 600, flips);
    ck_assert_int_gt(flips[0], 0);
    ck_assert_int_gt(flips[1], 0);
    vp_dataset_destroy(ds);

    /* A wide image: the region is 32 x 13 of a 32 x 32 canvas. */
    vt_ok(vp_mkdir_p(at("w")));
    gradient_png(at("w/img.png"), 80, 32);
    char r0[512], json[2048];
    rect_counts(32, 80, 10, 60, 5, 27, r0, sizeof r0);
    snprintf(json, sizeof json,
             "{\"images\": [{\"id\": 1, \"width\": 80, \"height\": 32, \"file_name\": \"img.png\"}],"
             " \"categories\": [{\"id\": 1, \"name\": \"r\"}], \"annotations\": [{\"id\": 1,"
             " \"image_id\": 1, \"category_id\": 1, \"segmentation\": {\"size\": [32, 80],"
             " \"counts\": %s}}]}",
             r0);
    put(at("w/ann.json"), json);
    ds = load(at("w/ann.json"), false);
    flips[0] = flips[1] = 0;
    check_unproject(ds, &(vp_loader_opts){.batch = 1, .size = 32, .mask_h = 16, .mask_w = 16,
                                          .max_targets = 2, .train = true, .seed = 2},
                    8, 1, flips);
    ck_assert_int_gt(flips[0], 0);
    ck_assert_int_gt(flips[1], 0);
    vp_loader *l;
    vt_ok(vp_loader_create(ds, &(vp_loader_opts){.batch = 1, .size = 32, .mask_h = 16,
                                                 .mask_w = 16, .max_targets = 2}, &l));
    const vp_batch *b;
    vt_ok(vp_loader_next(l, &b));
    ck_assert_int_eq(b->items[0].rw, 32);
    ck_assert_int_eq(b->items[0].rh, 13);
    vp_loader_destroy(l);
    vp_dataset_destroy(ds);
}
END_TEST

/* ---- errors ---- */

static const char *img_json = "{\"id\": 1, \"width\": 16, \"height\": 8, \"file_name\": \"img.png\"}";

/* Write text to err/ann.json (img.png beside it) and expect loading it to
 * fail with status and message (%1$s: the JSON's path, %2$s: the dir). */
static void expect_load_err(const char *text, bool skip_bad, vp_status status, const char *fmt)
{
    put(at("err/ann.json"), text);
    char want[2048];
    snprintf(want, sizeof want, fmt, at("err/ann.json"), at("err"));
    vp_dataset *ds = (vp_dataset *)1;
    vt_expect_err(vp_dataset_load(at("err/ann.json"), NULL,
                                  &(vp_dataset_opts){.skip_bad = skip_bad}, &ds),
                  status, want);
    ck_assert_ptr_null(ds);
}

START_TEST(test_errors)
{
    vt_ok(vp_mkdir_p(at("err")));
    gradient_png(at("err/img.png"), 16, 8);
    char text[4096];
    expect_load_err("{\"images\": [\n  {\"id\": 1,, \"width\": 2}\n]}", false, VP_ERR_FORMAT,
                    "%s: JSON syntax error at line 2, column 13");
    expect_load_err("{\"images\": [], \"categories\": []}", false, VP_ERR_FORMAT,
                    "%s: no \"annotations\" list");
    expect_load_err("{\"images\": [{\"id\": 1, \"width\": 16, \"height\": 8}], \"categories\": [],"
                    " \"annotations\": []}",
                    false, VP_ERR_FORMAT, "%s: images[0] (id 1): no string \"file_name\"");
    expect_load_err("{\"images\": [{\"id\": 1, \"width\": 16, \"height\": 8, \"file_name\": "
                    "\"gone.png\"}], \"categories\": [], \"annotations\": []}",
                    true, VP_ERR_IO,
                    "%1$s: images[0] (id 1): %2$s/gone.png: No such file or directory");
    expect_load_err("{\"images\": [{\"id\": 1, \"width\": 16, \"height\": 8, \"file_name\": "
                    "\"img.png\"}], \"categories\": [{\"name\": \"x\"}], \"annotations\": []}",
                    false, VP_ERR_FORMAT, "%s: categories[0]: no integral \"id\"");
    /* File-level annotation problems are errors even with skip_bad. */
    snprintf(text, sizeof text,
             "{\"images\": [%s], \"categories\": [{\"id\": 1, \"name\": \"x\"}], \"annotations\": "
             "[{\"id\": 39, \"image_id\": 1, \"category_id\": 1, \"segmentation\": "
             "[[1, 1, 5, 1, 5, 5]]}, {\"id\": 40, \"image_id\": 7, \"category_id\": 1, "
             "\"segmentation\": [[1, 1, 5, 1, 5, 5]]}]}", img_json);
    expect_load_err(text, true, VP_ERR_FORMAT,
                    "%s: annotations[1] (id 40): image_id 7 is not in images");
    snprintf(text, sizeof text,
             "{\"images\": [%s], \"categories\": [{\"id\": 1, \"name\": \"x\"}], \"annotations\": "
             "[{\"image_id\": 1, \"category_id\": 1, \"segmentation\": [[1, 1, 5, 1, 5, 5]]}]}",
             img_json);
    expect_load_err(text, true, VP_ERR_FORMAT, "%s: annotations[0]: no integral \"id\"");

    /* Bad single annotations: an error without skip_bad, skipped with it. */
    static const char *const bad[] = {
        "\"segmentation\": [[1, 1, 5, 1]]",
        "\"segmentation\": {\"size\": [8, 16], \"counts\": [10, 5]}",
        "\"bbox\": [1, 1, 4, 4]",
        "\"segmentation\": {\"size\": [8, 15], \"counts\": \"0\"}",
        "\"segmentation\": [[1, 1, 1000, 1, 5, 5]]",
        "\"iscrowd\": 2, \"segmentation\": [[1, 1, 5, 1, 5, 5]]",
    };
    static const char *const why[] = {
        "%s: annotations[1] (id 41): polygon 0 has 2 points (at least 3 needed)",
        "%s: annotations[1] (id 41): RLE: the counts sum to 15, a 8 x 16 mask has 128 pixels",
        "%s: annotations[1] (id 41): no \"segmentation\" (a box alone is no mask)",
        "%s: annotations[1] (id 41): the RLE size is 8 x 15, the image is 8 x 16",
        /* bounded by the image, not 1e6: far points cost time and memory */
        "%s: annotations[1] (id 41): polygon 0: polygon: coordinate 2 (1000) is not within the "
        "8 x 16 image's margin (-16 to 32)",
        /* docs/data.md: 0 or 1 */
        "%s: annotations[1] (id 41): \"iscrowd\" is not 0 or 1",
    };
    enum { N_BAD = sizeof bad / sizeof bad[0] };
    for (int i = 0; i <= N_BAD; i++) {
        snprintf(text, sizeof text,
                 "{\"images\": [%s], \"categories\": [{\"id\": 1, \"name\": \"x\"}], "
                 "\"annotations\": [{\"id\": 40, \"image_id\": 1, \"category_id\": 1, "
                 "\"segmentation\": [[1, 1, 5, 1, 5, 5]]}, {\"id\": 41, \"image_id\": 1, "
                 "\"category_id\": %d, %s}, {\"id\": 42, \"image_id\": 1, \"category_id\": 1, "
                 "\"iscrowd\": 1, \"segmentation\": {\"size\": [8, 16], \"counts\": [128]}}]}",
                 img_json, i < N_BAD ? 1 : 2,
                 i < N_BAD ? bad[i] : "\"segmentation\": [[1, 1, 5, 1, 5, 5]]");
        expect_load_err(text, false, VP_ERR_FORMAT,
                        i < N_BAD ? why[i]
                              : "%s: annotations[1] (id 41): category_id 2 is not in categories");
        vp_dataset *ds = load(at("err/ann.json"), true);
        ck_assert_uint_eq(vp_dataset_skipped(ds), 1);
        ck_assert_uint_eq(vp_dataset_instances(ds), 1);
        ck_assert_uint_eq(vp_dataset_crowd(ds), 1);
        ck_assert_uint_eq(ds->inst[0].area, 6); /* the triangle (1,1) (5,1) (5,5) as rleFrPoly */
        vp_dataset_destroy(ds);
    }

    /* FIFOs, as the annotations and as an image: refused at once (open
     * would block for a writer; the alarm turns a regression's hang into
     * a failure). */
    ck_assert_int_eq(mkfifo(at("err/fifo.json"), 0644), 0);
    ck_assert_int_eq(mkfifo(at("err/fifo.png"), 0644), 0);
    alarm(20);
    {
        char fwant[2048];
        vp_dataset *fds = (vp_dataset *)1;
        snprintf(fwant, sizeof fwant, "%s: not a regular file", at("err/fifo.json"));
        vt_expect_err(vp_dataset_load(at("err/fifo.json"), NULL, &(vp_dataset_opts){0}, &fds),
                      VP_ERR_INVALID, fwant);
        ck_assert_ptr_null(fds);
        expect_load_err("{\"images\": [{\"id\": 1, \"width\": 16, \"height\": 8, \"file_name\": "
                        "\"fifo.png\"}], \"categories\": [], \"annotations\": []}",
                        false, VP_ERR_INVALID,
                        "%1$s: images[0] (id 1): %2$s/fifo.png: not a regular file");
        vp_image fimg;
        snprintf(fwant, sizeof fwant, "%s: not a regular file", at("err/fifo.png"));
        vt_expect_err(vp_image_load(at("err/fifo.png"), &fimg), VP_ERR_INVALID, fwant);
    }
    alarm(0);

    /* An image that fails to decode: the loader's next batch names it. */
    size_t n;
    char *png = slurp(at("err/img.png"), &n);
    FILE *f = fopen(at("err/img.png"), "wb");
    fwrite(png, 1, n / 2, f);
    fclose(f);
    free(png);
    snprintf(text, sizeof text,
             "{\"images\": [%s], \"categories\": [], \"annotations\": []}", img_json);
    put(at("err/ann.json"), text);
    vp_dataset *ds = load(at("err/ann.json"), false);
    vp_loader *l;
    vt_ok(vp_loader_create(ds, &(vp_loader_opts){.batch = 1, .size = 16, .mask_h = 4,
                                                 .mask_w = 4, .max_targets = 1, .train = true},
                           &l));
    const vp_batch *b = (const vp_batch *)1;
    for (int k = 0; k < 2; k++) {
        ck_assert_int_eq(vp_loader_next(l, &b), VP_ERR_FORMAT);
        ck_assert_ptr_null(b);
        char want[1024];
        /* cut in half: its last chunk runs past the end of the file */
        snprintf(want, sizeof want, "%s: a corrupt PNG (a chunk runs past the end of the file)",
                 at("err/img.png"));
        vt_assert_has(vp_error_last(), want);
    }
    vp_loader_destroy(l);
    /* A decoded size that is not the JSON's. */
    gradient_png(at("err/img.png"), 16, 9);
    vt_ok(vp_loader_create(ds, &(vp_loader_opts){.batch = 1, .size = 16, .mask_h = 4,
                                                 .mask_w = 4, .max_targets = 1}, &l));
    char want[2048];
    snprintf(want, sizeof want, "%s: the image is 16x9, %s says 16x8 (id 1)", at("err/img.png"),
             at("err/ann.json"));
    vt_expect_err(vp_loader_next(l, &b), VP_ERR_FORMAT, want);
    vp_loader_destroy(l);
    snprintf(want, sizeof want, "%s: loader: batch 1, size 16, masks 5x4, max_targets 1, "
             "prefetch 0: need batch, max_targets >= 1, prefetch >= 0 and a size divisible by "
             "the mask sides", at("err/ann.json"));
    vt_expect_err(vp_loader_create(ds, &(vp_loader_opts){.batch = 1, .size = 16, .mask_h = 4,
                                                         .mask_w = 5, .max_targets = 1}, &l),
                  VP_ERR_INVALID, want);
    vp_dataset_destroy(ds);
}
END_TEST

/* ---- vpeft make-shapes ---- */

START_TEST(test_cli)
{
    const char *bin = getenv("VPEFT_BIN");
    ck_assert_msg(bin != NULL, "VPEFT_BIN is not set (run through make check)");
    ck_assert_int_eq(vt_sh("%s make-shapes --help", bin), 0);
    vt_assert_has(vt_out, "usage: vpeft make-shapes --out DIR --domain A|B");
    ck_assert_int_eq(vt_sh("%s make-shapes --domain A", bin), 2);
    ck_assert_str_eq(vt_err, "vpeft make-shapes: --out is required (see vpeft make-shapes --help)\n");
    ck_assert_int_eq(vt_sh("%s make-shapes --out %s --domain C", bin, at("cli")), 2);
    ck_assert_str_eq(vt_err, "vpeft make-shapes: --domain must be A or B, not 'C' (see vpeft "
                             "make-shapes --help)\n");
    ck_assert_int_eq(vt_sh("%s make-shapes --out %s --domain A --n 0", bin, at("cli")), 2);
    vt_assert_has(vt_err, "--n must be a whole number from 1 to 1000000, not '0'");
    ck_assert_int_eq(vt_sh("%s make-shapes --out %s --domain A --bogus", bin, at("cli")), 2);
    vt_assert_has(vt_err, "unknown option '--bogus'");
    put(at("file"), "x");
    ck_assert_int_eq(vt_sh("%s make-shapes --out %s --domain A --n 1", bin, at("file")), 1);
    vt_assert_has(vt_err, "vpeft: ");
    vt_assert_has(vt_err, at("file"));
    ck_assert_int_eq(vt_sh("%s make-shapes --out %s --domain B --n 3 --size 64 --seed 5", bin,
                           at("cli")), 0);
    vp_dataset *ds = load(at("cli/annotations.json"), false);
    char line[1024];
    snprintf(line, sizeof line,
             "make-shapes: wrote 3 images, %u instances, 5 classes (domain B) to %s\n",
             vp_dataset_instances(ds), at("cli/annotations.json"));
    ck_assert_str_eq(vt_out, line);
    vp_dataset_destroy(ds);
    struct stat s;
    ck_assert_int_eq(stat(at("cli/images/000003.png"), &s), 0);
    ck_assert_int_ne(stat(at("cli/images/000004.png"), &s), 0);
    /* The library and the command write the same bytes. */
    shapes(at("cli2"), 'B', 3, 64, 5);
    ck_assert(same_file(at("cli/annotations.json"), at("cli2/annotations.json")));
}
END_TEST

int main(void)
{
    const char *tmp = getenv("TMPDIR");
    snprintf(base, sizeof base, "%s/vpeft-data-XXXXXX", tmp && *tmp ? tmp : "/tmp");
    if (!mkdtemp(base)) {
        perror("mkdtemp");
        return 1;
    }
    Suite *s = suite_create("data");
    TCase *tc = vt_tcase("data");
    tcase_set_timeout(tc, 60);
    tcase_add_test(tc, test_shapes_load);
    tcase_add_test(tc, test_shapes_domain_b);
    tcase_add_test(tc, test_shapes_deterministic);
    tcase_add_test(tc, test_shapes_self_eval);
    tcase_add_test(tc, test_loader_determinism);
    tcase_add_test(tc, test_loader_shards);
    tcase_add_test(tc, test_loader_targets);
    tcase_add_test(tc, test_loader_flip);
    tcase_add_test(tc, test_loader_eval);
    tcase_add_test(tc, test_unproject);
    tcase_add_test(tc, test_errors);
    tcase_add_test(tc, test_cli);
    suite_add_tcase(s, tc);
    int rc = vt_run(s);
    vt_rm_rf(base);
    return rc;
}
