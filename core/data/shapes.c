/*
 * The synthetic shapes datasets behind `vpeft make-shapes` (data.h): small
 * COCO instance datasets drawn from a seed, for tests, demos and domain
 * adaptation experiments without downloads.
 *
 * Every shape is a polygon (a ring: two) whose pixels are exactly what
 * pycocotools' rleFrPoly makes of the coordinates written to the JSON
 * (vp_coco_poly_to_rle on coordinates rounded to 1/100 as printed), so a
 * polygon annotation and the picture agree pixel for pixel. Shapes are
 * painted back to front; an instance's annotation is what stays visible.
 * Each image draws from its own generator seeded by (seed, domain, image),
 * so the output is the same bytes for the same options.
 */
#include <cjson/cJSON.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "data/data.h"
#include "eval/cocoeval.h"
#include "eval/rle.h"
#include "io/png.h"
#include "util/error.h"
#include "util/file.h"

#ifndef M_PI
#define M_PI 3.14159265358979323846
#endif

enum { CIRCLE, SQUARE, TRIANGLE, ELLIPSE, STAR, RING, CROSS, N_KINDS };
enum { FLAT, STRIPES, CHECKS, NOISE };
enum { MAX_SHAPES = 6, CIRCLE_POINTS = 48, PLACE_TRIES = 30 };
#define MAX_HIDDEN 0.2

static const char *const kind_name[N_KINDS] = {"circle", "square", "triangle", "ellipse",
                                               "star",   "ring",   "cross"};

typedef struct domain {
    int n;
    int kind[5];
    int64_t id[5];
} domain;

/* A shares triangles with B; B's ids are deliberately sparse. */
static const domain dom_a = {3, {CIRCLE, SQUARE, TRIANGLE}, {1, 2, 3}};
static const domain dom_b = {5, {TRIANGLE, ELLIPSE, STAR, RING, CROSS}, {3, 10, 20, 35, 50}};

static const uint8_t pal_a[8][3] = {{230, 25, 75},  {60, 180, 75},  {0, 130, 200},
                                    {245, 130, 48}, {145, 30, 180}, {240, 50, 230},
                                    {210, 190, 0},  {0, 160, 160}};
static const uint8_t pal_b[8][3] = {{122, 98, 86},  {88, 108, 122}, {128, 118, 78},
                                    {100, 82, 112}, {78, 110, 90},  {140, 96, 96},
                                    {96, 96, 84},   {70, 90, 110}};

/* ---- randomness ---- */

static uint64_t mix64(uint64_t z)
{
    z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ULL;
    z = (z ^ (z >> 27)) * 0x94d049bb133111ebULL;
    return z ^ (z >> 31);
}

typedef struct rng {
    uint64_t s;
} rng;

static uint64_t next(rng *r) { return mix64(r->s += 0x9e3779b97f4a7c15ULL); }
static double unif(rng *r, double a, double b)
{
    return a + (b - a) * (double)(next(r) >> 11) * (1.0 / 9007199254740992.0);
}
static int pick(rng *r, int n) { return (int)(next(r) % (uint64_t)n); }

/* ---- one shape ---- */

typedef struct shape {
    int kind, cls, texture, period;
    uint8_t col[3], col2[3];
    double xy[2][2 * CIRCLE_POINTS]; /* outline; a ring's hole second */
    int np[2];
    double tc, ts; /* texture direction */
    uint8_t *mask; /* size x size, row-major */
    uint64_t area, visible;
    int64_t bbox[4];
} shape;

static double r2(double v) { return round(v * 100.0) / 100.0; }

static void outline(shape *s, rng *r, double cx, double cy, double rad, int size)
{
    double th = unif(r, 0, 2 * M_PI), ratio = unif(r, 0.45, 0.75);
    double px[CIRCLE_POINTS], py[CIRCLE_POINTS];
    int n = 0;
    switch (s->kind) {
    case CIRCLE:
    case RING:
    case ELLIPSE:
        for (n = 0; n < CIRCLE_POINTS; n++) {
            double a = 2 * M_PI * n / CIRCLE_POINTS, u = rad * cos(a);
            double v = rad * sin(a) * (s->kind == ELLIPSE ? ratio : 1);
            px[n] = u * cos(th) - v * sin(th);
            py[n] = u * sin(th) + v * cos(th);
        }
        break;
    case SQUARE:
    case TRIANGLE:
        n = s->kind == SQUARE ? 4 : 3;
        for (int i = 0; i < n; i++) {
            px[i] = rad * cos(th + 2 * M_PI * i / n);
            py[i] = rad * sin(th + 2 * M_PI * i / n);
        }
        break;
    case STAR:
        for (n = 0; n < 10; n++) {
            double q = n % 2 ? rad * 0.45 : rad;
            px[n] = q * cos(th + M_PI * n / 5);
            py[n] = q * sin(th + M_PI * n / 5);
        }
        break;
    case CROSS: {
        static const double u[12] = {1, 1, .3, .3, -.3, -.3, -1, -1, -.3, -.3, .3, .3};
        static const double v[12] = {-.3, .3, .3, 1, 1, .3, .3, -.3, -.3, -1, -1, -.3};
        for (n = 0; n < 12; n++) {
            px[n] = rad * (u[n] * cos(th) - v[n] * sin(th));
            py[n] = rad * (u[n] * sin(th) + v[n] * cos(th));
        }
        break;
    }
    }
    s->np[0] = n;
    s->np[1] = 0;
    for (int i = 0; i < n; i++) {
        s->xy[0][2 * i] = r2(fmin(fmax(cx + px[i], 0), size));
        s->xy[0][2 * i + 1] = r2(fmin(fmax(cy + py[i], 0), size));
    }
    if (s->kind == RING) {
        double k = unif(r, 0.45, 0.6);
        s->np[1] = n;
        for (int i = 0; i < n; i++) {
            s->xy[1][2 * i] = r2(cx + k * px[i]);
            s->xy[1][2 * i + 1] = r2(cy + k * py[i]);
        }
    }
}

/* The shape's pixels (row-major) as rleFrPoly rasterizes its outline(s). */
static vp_status rasterize(shape *s, int size, uint8_t *tmp)
{
    vp_rle rle;
    vp_status st = vp_coco_poly_to_rle(s->xy[0], (size_t)s->np[0], size, size, &rle);
    if (st)
        return st;
    vp_rle_to_mask(&rle, s->mask);
    vp_rle_free(&rle);
    if (s->np[1]) {
        if ((st = vp_coco_poly_to_rle(s->xy[1], (size_t)s->np[1], size, size, &rle)))
            return st;
        vp_rle_to_mask(&rle, tmp);
        vp_rle_free(&rle);
        for (size_t i = 0; i < (size_t)size * size; i++)
            s->mask[i] &= (uint8_t)!tmp[i];
    }
    s->area = 0;
    for (size_t i = 0; i < (size_t)size * size; i++)
        s->area += s->mask[i];
    return VP_OK;
}

static uint8_t clamp8(double v) { return (uint8_t)(v < 0 ? 0 : v > 255 ? 255 : lround(v)); }

/* A textured colour at pixel (x, y): flat, stripes along (tc, ts), checks,
 * or per-pixel noise around col. */
static void texel(const shape *s, uint64_t key, int x, int y, uint8_t *out)
{
    int alt = 0;
    double jitter = 0;
    if (s->texture == STRIPES)
        alt = (int)floor((x * s->tc + y * s->ts) / s->period) & 1;
    else if (s->texture == CHECKS)
        alt = ((x / s->period) + (y / s->period)) & 1;
    else if (s->texture == NOISE)
        jitter = (double)(mix64(key ^ ((uint64_t)y << 32 | (uint64_t)x)) % 61) - 30;
    const uint8_t *c = alt ? s->col2 : s->col;
    for (int ch = 0; ch < 3; ch++)
        out[ch] = clamp8(c[ch] + jitter);
}

/* ---- one image ---- */

typedef struct canvas {
    int size;
    uint8_t *rgb, *tmp;
    int16_t *owner; /* the shape on top at each pixel, -1: background */
    shape sh[MAX_SHAPES];
    int n;
} canvas;

static void pick_colours(shape *s, rng *r, bool b)
{
    const uint8_t(*pal)[3] = b ? pal_b : pal_a;
    memcpy(s->col, pal[pick(r, 8)], 3);
    double f = unif(r, 0.55, 0.75);
    for (int ch = 0; ch < 3; ch++)
        s->col2[ch] = clamp8(s->col[ch] * f);
    s->texture = b ? 1 + pick(r, 3) : pick(r, 4);
    s->period = 2 + pick(r, 5);
    double a = unif(r, 0, M_PI);
    s->tc = cos(a);
    s->ts = sin(a);
}

/* Draw one image into cv from r; shapes with too little left visible are
 * dropped (their pixels stay painted: they are background now). */
static vp_status draw(canvas *cv, rng *r, const domain *d, bool b, uint64_t key)
{
    int size = cv->size;
    size_t np = (size_t)size * size;
    /* Background: a tinted gradient, plain (A only), noisy or striped; A's is
     * lighter than B's. */
    double base[3], grad[3];
    for (int ch = 0; ch < 3; ch++) {
        base[ch] = b ? unif(r, 120, 190) : unif(r, 150, 250);
        grad[ch] = unif(r, -40, 40);
    }
    int bg_tex = b ? pick(r, 2) : pick(r, 3) - 1, bg_period = 3 + pick(r, 6);
    for (int y = 0; y < size; y++)
        for (int x = 0; x < size; x++) {
            double t = (double)(x + y) / (2.0 * size), j = 0;
            if (bg_tex == 0)
                j = (double)(mix64(key ^ 0x5bd1e995ULL ^ ((uint64_t)y << 32 | (uint64_t)x)) % 41) -
                    20;
            else if (bg_tex == 1)
                j = ((x + 2 * y) / bg_period) % 2 ? 12 : -12;
            for (int ch = 0; ch < 3; ch++)
                cv->rgb[3 * ((size_t)y * size + x) + ch] = clamp8(base[ch] + grad[ch] * t + j);
        }
    for (size_t i = 0; i < np; i++)
        cv->owner[i] = -1;
    int want = 1 + pick(r, MAX_SHAPES);
    cv->n = 0;
    for (int k = 0; k < want; k++) {
        shape *s = &cv->sh[k];
        int c = pick(r, d->n);
        s->cls = c;
        s->kind = d->kind[c];
        /* A place where every shape under the new one keeps at least
         * 1 - MAX_HIDDEN of its area, so its outline still names its class;
         * none found in PLACE_TRIES: the image has fewer shapes. */
        bool placed = false;
        for (int t = 0; t < PLACE_TRIES && !placed; t++) {
            double rad = unif(r, 0.15, 0.60) * size / 2;
            double cx = unif(r, rad, size - rad), cy = unif(r, rad, size - rad);
            outline(s, r, cx, cy, rad, size);
            vp_status st = rasterize(s, size, cv->tmp);
            if (st)
                return st;
            placed = true;
            for (int j = 0; j < k && placed; j++) {
                uint64_t left = 0;
                for (size_t i = 0; i < np; i++)
                    left += !s->mask[i] && cv->owner[i] == j;
                placed = (double)left >= (1 - MAX_HIDDEN) * (double)cv->sh[j].area;
            }
        }
        if (!placed)
            break;
        /* a colour no other shape of the image has: touching shapes differ */
        for (int t = 0;; t++) {
            pick_colours(s, r, b);
            bool same = false;
            for (int j = 0; j < k; j++)
                same |= !memcmp(s->col, cv->sh[j].col, 3);
            if (!same || t == 64)
                break;
        }
        cv->n = k + 1;
        uint64_t tkey = key ^ mix64((uint64_t)k + 1);
        for (int y = 0; y < size; y++)
            for (int x = 0; x < size; x++) {
                size_t i = (size_t)y * size + x;
                if (s->mask[i]) {
                    cv->owner[i] = (int16_t)k;
                    texel(s, tkey, x, y, cv->rgb + 3 * i);
                }
            }
    }
    for (int k = 0; k < cv->n; k++) {
        shape *s = &cv->sh[k];
        int64_t x0 = size, y0 = size, x1 = -1, y1 = -1;
        s->visible = 0;
        for (int y = 0; y < size; y++)
            for (int x = 0; x < size; x++)
                if (cv->owner[(size_t)y * size + x] == k) {
                    s->visible++;
                    x0 = x < x0 ? x : x0;
                    x1 = x > x1 ? x : x1;
                    y0 = y < y0 ? y : y0;
                    y1 = y > y1 ? y : y1;
                }
        int64_t bb[4] = {x0, y0, x1 - x0 + 1, y1 - y0 + 1};
        memcpy(s->bbox, bb, sizeof bb);
    }
    return VP_OK;
}

static bool kept(const shape *s, int size)
{
    return s->visible >= 20 && (double)s->visible >= 0.01 * size * size;
}

/* ---- JSON ---- */

static cJSON *polygon_json(const shape *s)
{
    cJSON *segs = cJSON_CreateArray(), *p = cJSON_CreateArray();
    cJSON_AddItemToArray(segs, p);
    for (int i = 0; i < 2 * s->np[0]; i++)
        cJSON_AddItemToArray(p, cJSON_CreateNumber(s->xy[0][i]));
    return segs;
}

static cJSON *rle_json(const canvas *cv, int k)
{
    size_t np = (size_t)cv->size * cv->size;
    for (size_t i = 0; i < np; i++)
        cv->tmp[i] = cv->owner[i] == k;
    vp_rle rle;
    if (vp_rle_from_mask(cv->tmp, cv->size, cv->size, &rle))
        return NULL;
    char *str = vp_rle_to_string(&rle);
    vp_rle_free(&rle);
    if (!str)
        return NULL;
    cJSON *o = cJSON_CreateObject(), *sz = cJSON_CreateArray();
    cJSON_AddItemToArray(sz, cJSON_CreateNumber(cv->size));
    cJSON_AddItemToArray(sz, cJSON_CreateNumber(cv->size));
    cJSON_AddItemToObject(o, "size", sz);
    cJSON_AddStringToObject(o, "counts", str);
    free(str);
    return o;
}

static cJSON *header(const vp_shapes_opts *o, const domain *d)
{
    cJSON *root = cJSON_CreateObject(), *info = cJSON_CreateObject();
    char desc[128];
    snprintf(desc, sizeof desc, "vpeft synthetic shapes, domain %c, seed %llu", o->domain,
             (unsigned long long)o->seed);
    cJSON_AddStringToObject(info, "description", desc);
    cJSON_AddStringToObject(info, "contributor", "vpeft make-shapes");
    cJSON_AddStringToObject(info, "version", "1.0");
    cJSON_AddItemToObject(root, "info", info);
    cJSON_AddItemToObject(root, "licenses", cJSON_CreateArray());
    cJSON_AddItemToObject(root, "images", cJSON_CreateArray());
    cJSON_AddItemToObject(root, "annotations", cJSON_CreateArray());
    cJSON *cats = cJSON_CreateArray();
    for (int c = 0; c < d->n; c++) {
        cJSON *e = cJSON_CreateObject();
        cJSON_AddNumberToObject(e, "id", (double)d->id[c]);
        cJSON_AddStringToObject(e, "name", kind_name[d->kind[c]]);
        cJSON_AddStringToObject(e, "supercategory", "shape");
        cJSON_AddItemToArray(cats, e);
    }
    cJSON_AddItemToObject(root, "categories", cats);
    return root;
}

static vp_status add_annotations(cJSON *anns, const canvas *cv, const domain *d, int64_t image_id,
                                 int64_t *ann_id)
{
    for (int k = 0; k < cv->n; k++) {
        const shape *s = &cv->sh[k];
        if (!kept(s, cv->size))
            continue;
        cJSON *seg = s->visible == s->area && !s->np[1] ? polygon_json(s) : rle_json(cv, k);
        cJSON *a = cJSON_CreateObject(), *bb = cJSON_CreateArray();
        if (!seg || !a || !bb) {
            cJSON_Delete(seg);
            cJSON_Delete(a);
            cJSON_Delete(bb);
            return vp_error_set(VP_ERR_NOMEM, "make-shapes: out of host memory");
        }
        cJSON_AddNumberToObject(a, "id", (double)++*ann_id);
        cJSON_AddNumberToObject(a, "image_id", (double)image_id);
        cJSON_AddNumberToObject(a, "category_id", (double)d->id[s->cls]);
        cJSON_AddItemToObject(a, "segmentation", seg);
        cJSON_AddNumberToObject(a, "area", (double)s->visible);
        for (int q = 0; q < 4; q++)
            cJSON_AddItemToArray(bb, cJSON_CreateNumber((double)s->bbox[q]));
        cJSON_AddItemToObject(a, "bbox", bb);
        cJSON_AddNumberToObject(a, "iscrowd", 0);
        cJSON_AddItemToArray(anns, a);
    }
    return VP_OK;
}

vp_status vp_shapes_write(const vp_shapes_opts *o)
{
    if (!o->out || !*o->out)
        return vp_error_set(VP_ERR_INVALID, "make-shapes: no output directory");
    if (o->domain != 'A' && o->domain != 'B')
        return vp_error_set(VP_ERR_INVALID, "make-shapes: domain '%c' is not A or B",
                            o->domain ? o->domain : '?');
    if (o->n < 1 || o->n > 1000000)
        return vp_error_set(VP_ERR_INVALID, "make-shapes: %d images (1 to 1000000)", o->n);
    if (o->size < 32 || o->size > 4096)
        return vp_error_set(VP_ERR_INVALID, "make-shapes: size %d (32 to 4096)", o->size);
    bool b = o->domain == 'B';
    const domain *d = b ? &dom_b : &dom_a;
    size_t np = (size_t)o->size * o->size, plen = strlen(o->out) + 64;
    char *path = malloc(plen);
    canvas cv = {.size = o->size, .rgb = malloc(3 * np), .tmp = malloc(np),
                 .owner = malloc(np * sizeof *cv.owner)};
    for (int k = 0; k < MAX_SHAPES; k++)
        cv.sh[k].mask = malloc(np);
    cJSON *root = header(o, d);
    vp_status st = VP_OK;
    bool oom = !path || !cv.rgb || !cv.tmp || !cv.owner || !root;
    for (int k = 0; k < MAX_SHAPES; k++)
        oom |= !cv.sh[k].mask;
    if (oom) {
        st = vp_error_set(VP_ERR_NOMEM, "make-shapes: out of host memory");
        goto out;
    }
    snprintf(path, plen, "%s/images", o->out);
    if ((st = vp_mkdir_p(path)))
        goto out;
    cJSON *imgs = cJSON_GetObjectItemCaseSensitive(root, "images");
    cJSON *anns = cJSON_GetObjectItemCaseSensitive(root, "annotations");
    int64_t ann_id = 0;
    for (int i = 0; i < o->n && !st; i++) {
        int64_t id = i + 1;
        uint64_t key = mix64(mix64(o->seed) ^ mix64((uint64_t)o->domain << 40 ^ (uint64_t)id));
        rng r = {key};
        /* Redraw (from the same stream) until some instance stays visible enough. */
        for (int attempt = 0; attempt < 100; attempt++) {
            if ((st = draw(&cv, &r, d, b, key)))
                goto out;
            int n_kept = 0;
            for (int k = 0; k < cv.n; k++)
                n_kept += kept(&cv.sh[k], o->size);
            if (n_kept)
                break;
        }
        char name[32];
        snprintf(name, sizeof name, "images/%06lld.png", (long long)id);
        snprintf(path, plen, "%s/%s", o->out, name);
        if ((st = vp_png_write(path, o->size, o->size, cv.rgb)))
            goto out;
        cJSON *e = cJSON_CreateObject();
        if (!e) {
            st = vp_error_set(VP_ERR_NOMEM, "make-shapes: out of host memory");
            goto out;
        }
        cJSON_AddNumberToObject(e, "id", (double)id);
        cJSON_AddStringToObject(e, "file_name", name);
        cJSON_AddNumberToObject(e, "width", o->size);
        cJSON_AddNumberToObject(e, "height", o->size);
        cJSON_AddItemToArray(imgs, e);
        st = add_annotations(anns, &cv, d, id, &ann_id);
    }
    if (!st) {
        char *text = cJSON_PrintUnformatted(root);
        if (!text) {
            st = vp_error_set(VP_ERR_NOMEM, "make-shapes: out of host memory");
            goto out;
        }
        snprintf(path, plen, "%s/annotations.json", o->out);
        st = vp_file_write_atomic(path, text, strlen(text));
        free(text);
    }
out:
    cJSON_Delete(root);
    for (int k = 0; k < MAX_SHAPES; k++)
        free(cv.sh[k].mask);
    free(cv.rgb);
    free(cv.tmp);
    free(cv.owner);
    free(path);
    return st;
}
