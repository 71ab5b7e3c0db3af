/*
 * COCO instance files read into a vp_dataset (data.h): the images (kept in
 * file order, checked to exist, not decoded), the categories sorted by id
 * (class index k is the k-th), and every non-crowd annotation's mask kept
 * as an RLE at its image's resolution (polygons rasterized as pycocotools'
 * rleFrPoly, several polygons united), grouped per image. A whole COCO
 * train2017 file keeps its masks in RLE form, a few hundred MB at most,
 * where bytes would take tens of GB.
 */
#include <cjson/cJSON.h>
#include <errno.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "data/data.h"
#include "data/internal.h"
#include "eval/cocoeval.h"
#include "eval/rle.h"
#include "util/error.h"
#include "util/file.h"
#include "util/log.h"

void vp_dataset_destroy(vp_dataset *ds)
{
    if (!ds)
        return;
    for (uint32_t i = 0; i < ds->n_img; i++)
        free((char *)ds->img[i].path);
    for (uint32_t i = 0; i < ds->n_inst; i++)
        vp_rle_free(&ds->inst[i].rle);
    for (uint32_t k = 0; k < ds->n_cls; k++)
        free(ds->cat_name[k]);
    free(ds->img);
    free(ds->first);
    free(ds->inst);
    free(ds->cat_id);
    free(ds->cat_name);
    free(ds->path);
    free(ds);
}

const char *vp_dataset_path(const vp_dataset *ds) { return ds->path; }
uint32_t vp_dataset_size(const vp_dataset *ds) { return ds->n_img; }
uint32_t vp_dataset_instances(const vp_dataset *ds) { return ds->n_inst; }
uint32_t vp_dataset_skipped(const vp_dataset *ds) { return ds->skipped; }
uint32_t vp_dataset_crowd(const vp_dataset *ds) { return ds->crowd; }
uint32_t vp_dataset_classes(const vp_dataset *ds) { return ds->n_cls; }

int64_t vp_dataset_category_id(const vp_dataset *ds, uint32_t k)
{
    VP_ASSERT(k < ds->n_cls);
    return ds->cat_id[k];
}

const char *vp_dataset_category_name(const vp_dataset *ds, uint32_t k)
{
    VP_ASSERT(k < ds->n_cls);
    return ds->cat_name[k];
}

const vp_dataset_image *vp_dataset_image_at(const vp_dataset *ds, uint32_t i)
{
    VP_ASSERT(i < ds->n_img);
    return &ds->img[i];
}

/* ---- JSON helpers ---- */

/* An integral number in int64 range. */
static bool get_int(const cJSON *obj, const char *key, int64_t *v)
{
    const cJSON *e = cJSON_GetObjectItemCaseSensitive(obj, key);
    if (!cJSON_IsNumber(e) || e->valuedouble != floor(e->valuedouble) ||
        fabs(e->valuedouble) > 9e15)
        return false;
    *v = (int64_t)e->valuedouble;
    return true;
}

static int cmp_i64(const void *a, const void *b)
{
    int64_t x = *(const int64_t *)a, y = *(const int64_t *)b;
    return (x > y) - (x < y);
}

/* (id, index) pairs sorted by id, for lookups. */
typedef struct id_ix {
    int64_t id;
    uint32_t ix;
} id_ix;

static int cmp_id_ix(const void *a, const void *b) { return cmp_i64(a, b); }

static int64_t find(const id_ix *t, uint32_t n, int64_t id)
{
    const id_ix key = {id, 0}, *p = bsearch(&key, t, n, sizeof *t, cmp_id_ix);
    return p ? (int64_t)p->ix : -1;
}

/* ---- segmentations ---- */

/* A polygon list ([[x0, y0, x1, y1, ...], ...]) as one RLE at h x w: the
 * union of its polygons. VP_ERR_FORMAT for a bad annotation (message set,
 * naming what). */
static vp_status polygons(const cJSON *seg, int64_t h, int64_t w, const char *what, vp_rle *out)
{
    int np = cJSON_GetArraySize(seg);
    if (np == 0)
        return vp_error_set(VP_ERR_FORMAT, "%s: an empty polygon list", what);
    vp_rle acc = {0};
    double *xy = NULL;
    vp_status st = VP_OK;
    int p = 0;
    for (const cJSON *poly = seg->child; poly && !st; poly = poly->next, p++) {
        int nc = cJSON_GetArraySize(poly);
        if (!cJSON_IsArray(poly) || nc % 2) {
            st = vp_error_set(VP_ERR_FORMAT, "%s: polygon %d is not a list of (x, y) pairs", what,
                              p);
            break;
        }
        if (nc < 6) {
            st = vp_error_set(VP_ERR_FORMAT, "%s: polygon %d has %d points (at least 3 needed)",
                              what, p, nc / 2);
            break;
        }
        double *g = realloc(xy, (size_t)nc * sizeof *xy);
        if (!g) {
            st = vp_error_set(VP_ERR_NOMEM, "%s: out of host memory", what);
            break;
        }
        xy = g;
        int i = 0;
        const cJSON *e;
        cJSON_ArrayForEach(e, poly) {
            if (!cJSON_IsNumber(e) || !isfinite(e->valuedouble) || fabs(e->valuedouble) > 1e6) {
                st = vp_error_set(VP_ERR_FORMAT, "%s: polygon %d: item %d is not a coordinate",
                                  what, p, i);
                break;
            }
            xy[i++] = e->valuedouble;
        }
        if (st)
            break;
        vp_rle r = {0};
        if ((st = vp_coco_poly_to_rle(xy, (size_t)nc / 2, h, w, &r)) != VP_OK) {
            vp_error_wrap(st, "%s: polygon %d", what, p);
            break;
        }
        if (p == 0) {
            acc = r;
            continue;
        }
        /* The union run by run: a dense mask would be h * w bytes. */
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
    free(xy);
    return st;
}

/* ---- loading ---- */

/* "path: JSON syntax error at line L, column C". */
static vp_status parse_json(const char *path, cJSON **out)
{
    char *text;
    size_t n;
    vp_status st = vp_file_read(path, &text, &n);
    if (st)
        return st;
    const char *end = NULL;
    *out = cJSON_ParseWithOpts(text, &end, 1);
    if (!*out) {
        if (!end)
            end = cJSON_GetErrorPtr();
        if (!end || end < text || end > text + n) {
            st = vp_error_set(VP_ERR_FORMAT, "%s: not valid JSON", path);
        } else {
            long line = 1, col = 1;
            for (const char *c = text; c < end; c++, col++)
                if (*c == '\n')
                    line++, col = 0;
            st = vp_error_set(VP_ERR_FORMAT, "%s: JSON syntax error at line %ld, column %ld", path,
                              line, col);
        }
    }
    free(text);
    return st;
}

static const cJSON *list(const cJSON *root, const char *key)
{
    const cJSON *l = cJSON_GetObjectItemCaseSensitive(root, key);
    return cJSON_IsArray(l) ? l : NULL;
}

/* The directory part of path ("." when none); malloc'd. */
static char *dir_of(const char *path)
{
    const char *slash = strrchr(path, '/');
    if (!slash)
        return strdup(".");
    size_t n = slash == path ? 1 : (size_t)(slash - path);
    char *d = malloc(n + 1);
    if (d) {
        memcpy(d, path, n);
        d[n] = '\0';
    }
    return d;
}

static vp_status load_images(vp_dataset *ds, const cJSON *imgs, const char *dir, id_ix *by_id)
{
    const char *path = ds->path;
    uint32_t i = 0;
    const cJSON *e;
    cJSON_ArrayForEach(e, imgs) {
        int64_t id, w, h;
        const cJSON *fn = cJSON_GetObjectItemCaseSensitive(e, "file_name");
        if (!get_int(e, "id", &id))
            return vp_error_set(VP_ERR_FORMAT, "%s: images[%u]: no integral \"id\"", path, i);
        if (!get_int(e, "width", &w) || !get_int(e, "height", &h) || w < 1 || h < 1 ||
            w > 65535 || h > 65535)
            return vp_error_set(VP_ERR_FORMAT, "%s: images[%u] (id %lld): no \"width\" and "
                                "\"height\" from 1 to 65535", path, i, (long long)id);
        if (!cJSON_IsString(fn) || !*fn->valuestring)
            return vp_error_set(VP_ERR_FORMAT, "%s: images[%u] (id %lld): no string \"file_name\"",
                                path, i, (long long)id);
        size_t n = strlen(dir) + strlen(fn->valuestring) + 2;
        char *p = malloc(n);
        if (!p)
            return vp_error_set(VP_ERR_NOMEM, "%s: out of host memory", path);
        if (fn->valuestring[0] == '/')
            snprintf(p, n, "%s", fn->valuestring);
        else
            snprintf(p, n, "%s/%s", dir, fn->valuestring);
        ds->img[i] = (vp_dataset_image){.id = id, .w = (int)w, .h = (int)h, .path = p};
        ds->n_img = i + 1;
        struct stat sb;
        if (access(p, R_OK))
            return vp_error_set(VP_ERR_IO, "%s: images[%u] (id %lld): %s: %s", path, i,
                                (long long)id, p, strerror(errno));
        /* Early word only: the loader reads through vp_file_open_read. */
        if (stat(p, &sb) || !S_ISREG(sb.st_mode))
            return vp_error_set(VP_ERR_INVALID, "%s: images[%u] (id %lld): %s: not a regular file",
                                path, i, (long long)id, p);
        by_id[i] = (id_ix){id, i};
        i++;
    }
    qsort(by_id, ds->n_img, sizeof *by_id, cmp_id_ix);
    for (i = 1; i < ds->n_img; i++)
        if (by_id[i].id == by_id[i - 1].id)
            return vp_error_set(VP_ERR_FORMAT, "%s: images[%u]: id %lld is listed twice", path,
                                by_id[i].ix > by_id[i - 1].ix ? by_id[i].ix : by_id[i - 1].ix,
                                (long long)by_id[i].id);
    return VP_OK;
}

static vp_status load_categories(vp_dataset *ds, const cJSON *cats, id_ix *by_id)
{
    const char *path = ds->path;
    uint32_t i = 0;
    const cJSON *e;
    cJSON_ArrayForEach(e, cats) {
        int64_t id;
        const cJSON *name = cJSON_GetObjectItemCaseSensitive(e, "name");
        if (!get_int(e, "id", &id))
            return vp_error_set(VP_ERR_FORMAT, "%s: categories[%u]: no integral \"id\"", path, i);
        if (!cJSON_IsString(name))
            return vp_error_set(VP_ERR_FORMAT, "%s: categories[%u] (id %lld): no string \"name\"",
                                path, i, (long long)id);
        by_id[i] = (id_ix){id, i};
        i++;
    }
    qsort(by_id, ds->n_cls, sizeof *by_id, cmp_id_ix);
    for (uint32_t k = 0; k < ds->n_cls; k++) {
        if (k && by_id[k].id == by_id[k - 1].id)
            return vp_error_set(VP_ERR_FORMAT, "%s: categories[%u]: id %lld is listed twice", path,
                                by_id[k].ix, (long long)by_id[k].id);
        const cJSON *name = cJSON_GetObjectItemCaseSensitive(cJSON_GetArrayItem(cats,
                                                                                (int)by_id[k].ix),
                                                             "name");
        ds->cat_id[k] = by_id[k].id;
        if (!(ds->cat_name[k] = strdup(name->valuestring)))
            return vp_error_set(VP_ERR_NOMEM, "%s: out of host memory", path);
        by_id[k].ix = k; /* now id -> class index */
    }
    return VP_OK;
}

/* One annotation into *in. VP_OK: kept; 1: a crowd region (kept nothing);
 * VP_ERR_FORMAT: a bad annotation (skip_bad decides); other errors are
 * fatal. *img: its image index. */
static int load_annotation(vp_dataset *ds, const cJSON *e, uint32_t i, const id_ix *imgs,
                           const id_ix *cats, uint32_t *img, vp_instance *in)
{
    const char *path = ds->path;
    int64_t id, image_id, cat_id, crowd = 0;
    if (!get_int(e, "id", &id))
        return vp_error_set(VP_ERR_CONFIG, "%s: annotations[%u]: no integral \"id\"", path, i);
    char what[4200];
    snprintf(what, sizeof what, "%s: annotations[%u] (id %lld)", path, i, (long long)id);
    if (!get_int(e, "image_id", &image_id))
        return vp_error_set(VP_ERR_CONFIG, "%s: no integral \"image_id\"", what);
    int64_t ii = find(imgs, ds->n_img, image_id);
    if (ii < 0)
        return vp_error_set(VP_ERR_CONFIG, "%s: image_id %lld is not in images", what,
                            (long long)image_id);
    *img = (uint32_t)ii;
    const cJSON *cr = cJSON_GetObjectItemCaseSensitive(e, "iscrowd");
    if (cJSON_IsBool(cr))
        crowd = cJSON_IsTrue(cr);
    else if (cr && (!get_int(e, "iscrowd", &crowd) || (crowd != 0 && crowd != 1)))
        return vp_error_set(VP_ERR_FORMAT, "%s: \"iscrowd\" is not 0 or 1", what);
    if (crowd)
        return 1;
    if (!get_int(e, "category_id", &cat_id))
        return vp_error_set(VP_ERR_FORMAT, "%s: no integral \"category_id\"", what);
    int64_t k = find(cats, ds->n_cls, cat_id);
    if (k < 0)
        return vp_error_set(VP_ERR_FORMAT, "%s: category_id %lld is not in categories", what,
                            (long long)cat_id);
    const cJSON *seg = cJSON_GetObjectItemCaseSensitive(e, "segmentation");
    const vp_dataset_image *im = &ds->img[ii];
    vp_status st;
    if (!seg)
        return vp_error_set(VP_ERR_FORMAT, "%s: no \"segmentation\" (a box alone is no mask)",
                            what);
    if (cJSON_IsArray(seg))
        st = polygons(seg, im->h, im->w, what, &in->rle);
    else if (cJSON_IsObject(seg))
        st = vp_coco_segm_to_rle(seg, im->h, im->w, 0, what, &in->rle);
    else
        st = vp_error_set(VP_ERR_FORMAT, "%s: \"segmentation\" is neither polygons nor an RLE",
                          what);
    if (st)
        return st == VP_ERR_NOMEM ? st : VP_ERR_FORMAT;
    in->area = vp_rle_area(&in->rle);
    in->cls = (uint32_t)k;
    if (!in->area) {
        vp_rle_free(&in->rle);
        return vp_error_set(VP_ERR_FORMAT, "%s: the mask covers no pixel", what);
    }
    return VP_OK;
}

static vp_status load_annotations(vp_dataset *ds, const cJSON *anns, const id_ix *imgs,
                                  const id_ix *cats, bool skip_bad)
{
    uint32_t n = (uint32_t)cJSON_GetArraySize(anns), i = 0;
    uint32_t *owner = malloc(((size_t)n + 1) * sizeof *owner);
    vp_instance *tmp = calloc((size_t)n + 1, sizeof *tmp);
    ds->first = calloc((size_t)ds->n_img + 1, sizeof *ds->first);
    ds->inst = calloc((size_t)n + 1, sizeof *ds->inst);
    vp_status st = VP_OK;
    if (!owner || !tmp || !ds->first || !ds->inst) {
        st = vp_error_set(VP_ERR_NOMEM, "%s: out of host memory", ds->path);
        goto out;
    }
    uint32_t kept = 0;
    const cJSON *e;
    cJSON_ArrayForEach(e, anns) {
        int r = load_annotation(ds, e, i++, imgs, cats, &owner[kept], &tmp[kept]);
        if (r == 1) {
            ds->crowd++;
        } else if (r == VP_ERR_FORMAT && skip_bad) {
            vp_warn("%s (skipped)", vp_error_last());
            vp_error_clear();
            ds->skipped++;
        } else if (r == VP_ERR_CONFIG) {
            st = VP_ERR_FORMAT; /* a file-level problem */
            goto out;
        } else if (r) {
            st = (vp_status)r;
            goto out;
        } else {
            ds->first[owner[kept] + 1]++;
            kept++;
        }
    }
    /* Stable counting sort by image: file order within each image. */
    for (uint32_t m = 0; m < ds->n_img; m++)
        ds->first[m + 1] += ds->first[m];
    uint32_t *fill = calloc((size_t)ds->n_img + 1, sizeof *fill);
    if (!fill) {
        st = vp_error_set(VP_ERR_NOMEM, "%s: out of host memory", ds->path);
        goto out;
    }
    for (uint32_t q = 0; q < kept; q++) {
        ds->inst[ds->first[owner[q]] + fill[owner[q]]++] = tmp[q];
        tmp[q].rle.counts = NULL;
    }
    free(fill);
    ds->n_inst = kept;
out:
    if (st)
        for (uint32_t q = 0; q < n; q++)
            vp_rle_free(&tmp[q].rle);
    free(owner);
    free(tmp);
    return st;
}

vp_status vp_dataset_load(const char *ann_path, const char *image_dir, const vp_dataset_opts *o,
                          vp_dataset **out)
{
    *out = NULL;
    vp_dataset_opts defaults = {0};
    if (!o)
        o = &defaults;
    vp_dataset *ds = calloc(1, sizeof *ds);
    if (!ds || !(ds->path = strdup(ann_path))) {
        free(ds);
        return vp_error_set(VP_ERR_NOMEM, "%s: out of host memory", ann_path);
    }
    cJSON *root = NULL;
    char *dir = NULL;
    id_ix *imgs = NULL, *cats = NULL;
    vp_status st = parse_json(ann_path, &root);
    if (st)
        goto out;
    const cJSON *li = list(root, "images"), *lc = list(root, "categories"),
                *la = list(root, "annotations");
    if (!cJSON_IsObject(root) || !li || !lc || !la) {
        st = vp_error_set(VP_ERR_FORMAT, "%s: no \"%s\" list", ann_path,
                          !li ? "images" : !lc ? "categories" : "annotations");
        goto out;
    }
    uint32_t ni = (uint32_t)cJSON_GetArraySize(li), nc = (uint32_t)cJSON_GetArraySize(lc);
    dir = image_dir ? strdup(image_dir) : dir_of(ann_path);
    ds->img = calloc((size_t)ni + 1, sizeof *ds->img);
    ds->cat_id = calloc((size_t)nc + 1, sizeof *ds->cat_id);
    ds->cat_name = calloc((size_t)nc + 1, sizeof *ds->cat_name);
    imgs = malloc(((size_t)ni + 1) * sizeof *imgs);
    cats = malloc(((size_t)nc + 1) * sizeof *cats);
    if (!dir || !ds->img || !ds->cat_id || !ds->cat_name || !imgs || !cats) {
        st = vp_error_set(VP_ERR_NOMEM, "%s: out of host memory", ann_path);
        goto out;
    }
    ds->n_cls = nc;
    if ((st = load_images(ds, li, dir, imgs)) || (st = load_categories(ds, lc, cats)) ||
        (st = load_annotations(ds, la, imgs, cats, o->skip_bad)))
        goto out;
out:
    cJSON_Delete(root);
    free(dir);
    free(imgs);
    free(cats);
    if (st)
        vp_dataset_destroy(ds);
    else
        *out = ds;
    return st;
}
