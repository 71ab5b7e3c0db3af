/*
 * A model scored on a COCO split (train.h): every image through the
 * inference graph, each instance's mask mapped back to its original image
 * and run-length encoded, the detections written as a COCO results file
 * and scored as pycocotools would (core/eval/cocoeval.c).
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include <cjson/cJSON.h>

#include "data/data.h"
#include "dist/dist.h"
#include "eval/rle.h"
#include "train/train.h"
#include "util/error.h"
#include "util/file.h"

vp_status vp_model_copy_params(const vp_model *src, vp_model *dst)
{
    const vp_build *a = vp_model_build(src), *b = vp_model_build(dst);
    uint32_t n = vp_build_param_count(a);
    if (n != vp_build_param_count(b))
        return vp_error_set(VP_ERR_INTERNAL, "copy parameters: %u against %u", n,
                            vp_build_param_count(b));
    float *buf = NULL;
    size_t cap = 0;
    vp_status st = VP_OK;
    for (uint32_t i = 0; !st && i < n; i++) {
        vp_gt *s = vp_build_param_at(a, i)->t, *d = vp_build_param_at(b, i)->t;
        size_t k = (size_t)vp_gt_nelem(s);
        if (strcmp(vp_gt_name(s), vp_gt_name(d)) || k != (size_t)vp_gt_nelem(d))
            return vp_error_set(VP_ERR_INTERNAL, "copy parameters: %s against %s",
                                vp_gt_name(s), vp_gt_name(d));
        if (k > cap) {
            float *nb = realloc(buf, k * sizeof *buf);
            if (!nb) {
                st = vp_error_set(VP_ERR_NOMEM, "out of host memory");
                break;
            }
            buf = nb;
            cap = k;
        }
        st = vp_graph_read(vp_model_graph(src), s, buf, k * sizeof *buf);
        if (!st)
            st = vp_graph_write(vp_model_graph(dst), d, buf, k * sizeof *buf);
    }
    free(buf);
    return st;
}

typedef struct det_list {
    vp_coco_det *d;
    vp_rle *rles;
    uint32_t *index; /* the image's place in the dataset */
    size_t n, cap;
} det_list;

static vp_status det_push(det_list *l, int64_t image_id, int64_t cat, double score, vp_rle *r,
                          uint32_t index)
{
    if (l->n == l->cap) {
        size_t cap = l->cap ? 2 * l->cap : 256;
        vp_coco_det *d = realloc(l->d, cap * sizeof *d);
        if (d)
            l->d = d;
        vp_rle *rl = d ? realloc(l->rles, cap * sizeof *rl) : NULL;
        if (rl)
            l->rles = rl;
        uint32_t *ix = rl ? realloc(l->index, cap * sizeof *ix) : NULL;
        if (!d || !rl || !ix) {
            vp_rle_free(r);
            return vp_error_set(VP_ERR_NOMEM, "out of host memory");
        }
        l->index = ix;
        l->cap = cap;
    }
    l->index[l->n] = index;
    l->rles[l->n] = *r;
    l->d[l->n] = (vp_coco_det){image_id, cat, score, NULL};
    l->n++;
    return VP_OK;
}

static void det_free(det_list *l)
{
    for (size_t i = 0; i < l->n; i++)
        vp_rle_free(&l->rles[i]);
    free(l->rles);
    free(l->index);
    free(l->d);
    memset(l, 0, sizeof *l);
}

/* ---- gathering the ranks' detections on rank 0 ---- */

typedef struct wire_det {
    int64_t image_id, category_id, h, w;
    double score;
    uint32_t index;
    uint32_t n; /* counts that follow */
} wire_det;

static vp_status det_pack(const det_list *l, char **out, size_t *len)
{
    size_t n = 0;
    for (size_t i = 0; i < l->n; i++)
        n += sizeof(wire_det) + l->rles[i].n * sizeof(uint32_t);
    char *b = malloc(n ? n : 1), *p = b;
    if (!b)
        return vp_error_set(VP_ERR_NOMEM, "out of host memory");
    for (size_t i = 0; i < l->n; i++) {
        wire_det w = {l->d[i].image_id, l->d[i].category_id, l->rles[i].h, l->rles[i].w,
                      l->d[i].score, l->index[i], (uint32_t)l->rles[i].n};
        memcpy(p, &w, sizeof w);
        p += sizeof w;
        memcpy(p, l->rles[i].counts, l->rles[i].n * sizeof(uint32_t));
        p += l->rles[i].n * sizeof(uint32_t);
    }
    *out = b;
    *len = n;
    return VP_OK;
}

static vp_status det_unpack(const char *b, size_t len, det_list *l)
{
    vp_status st = VP_OK;
    for (size_t off = 0; !st && off < len;) {
        wire_det w;
        memcpy(&w, b + off, sizeof w);
        off += sizeof w;
        vp_rle r;
        st = vp_rle_from_counts((const uint32_t *)(const void *)(b + off), w.n, w.h, w.w, &r);
        off += (size_t)w.n * sizeof(uint32_t);
        if (!st)
            st = det_push(l, w.image_id, w.category_id, w.score, &r, w.index);
    }
    return st;
}

/* Rank 0: the detections in the order one process finds them (by image
 * in file order, then as each image gave them; the ranks' images
 * interleave). Stable, so pycocotools' tie order is the same. */
static vp_status det_sort(det_list *l)
{
    size_t n = l->n;
    size_t *ord = malloc((n ? n : 1) * sizeof *ord), *tmp = malloc((n ? n : 1) * sizeof *tmp);
    det_list s = {0};
    vp_status st = ord && tmp ? VP_OK : vp_error_set(VP_ERR_NOMEM, "out of host memory");
    for (size_t i = 0; !st && i < n; i++)
        ord[i] = i;
    /* merge sort by image index: stable */
    for (size_t w = 1; !st && w < n; w *= 2) {
        for (size_t lo = 0; lo < n; lo += 2 * w) {
            size_t mid = lo + w < n ? lo + w : n, hi = lo + 2 * w < n ? lo + 2 * w : n;
            size_t a = lo, b = mid, k = lo;
            while (a < mid || b < hi)
                tmp[k++] = b >= hi || (a < mid && l->index[ord[a]] <= l->index[ord[b]]) ? ord[a++]
                                                                                       : ord[b++];
        }
        memcpy(ord, tmp, n * sizeof *ord);
    }
    for (size_t i = 0; !st && i < n; i++) {
        size_t j = ord[i];
        st = det_push(&s, l->d[j].image_id, l->d[j].category_id, l->d[j].score, &l->rles[j],
                      l->index[j]);
        l->rles[j] = (vp_rle){0}; /* moved */
    }
    free(ord);
    free(tmp);
    if (st) {
        det_free(&s);
        return st;
    }
    det_free(l);
    *l = s;
    return VP_OK;
}

static vp_status write_results(const det_list *l, const char *path)
{
    cJSON *arr = cJSON_CreateArray();
    vp_status st = arr ? VP_OK : vp_error_set(VP_ERR_NOMEM, "out of host memory");
    for (size_t i = 0; !st && i < l->n; i++) {
        char *counts = vp_rle_to_string(&l->rles[i]);
        cJSON *o = cJSON_CreateObject(), *seg = cJSON_CreateObject(), *size = cJSON_CreateArray();
        if (!counts || !o || !seg || !size) {
            free(counts);
            cJSON_Delete(o);
            cJSON_Delete(seg);
            cJSON_Delete(size);
            st = vp_error_set(VP_ERR_NOMEM, "out of host memory");
            break;
        }
        cJSON_AddNumberToObject(o, "image_id", (double)l->d[i].image_id);
        cJSON_AddNumberToObject(o, "category_id", (double)l->d[i].category_id);
        cJSON_AddItemToArray(size, cJSON_CreateNumber((double)l->rles[i].h));
        cJSON_AddItemToArray(size, cJSON_CreateNumber((double)l->rles[i].w));
        cJSON_AddItemToObject(seg, "size", size);
        cJSON_AddStringToObject(seg, "counts", counts);
        cJSON_AddItemToObject(o, "segmentation", seg);
        cJSON_AddNumberToObject(o, "score", l->d[i].score);
        cJSON_AddItemToArray(arr, o);
        free(counts);
    }
    char *text = st ? NULL : cJSON_PrintUnformatted(arr);
    cJSON_Delete(arr);
    if (!st && !text)
        st = vp_error_set(VP_ERR_NOMEM, "out of host memory");
    if (!st)
        st = vp_file_write_atomic(path, text, strlen(text));
    free(text);
    return st;
}

vp_status vp_evaluate(vp_model *m, int64_t batch, const char *ann, const char *images,
                      const char *results_path, const char *progress_label,
                      const vp_dist *dist, vp_coco_stats *stats)
{
    static const vp_dist one = {.size = 1, .local_size = 1};
    const vp_dist *d = dist ? dist : &one;
    vp_graph *g = vp_model_graph(m);
    vp_gt *scores = vp_model_output(m, "instances.scores"),
          *labels = vp_model_output(m, "instances.labels"),
          *masks = vp_model_output(m, "instances.masks");
    if (!scores || !labels || !masks)
        return vp_error_set(VP_ERR_INVALID, "the head (%s) gives no instances.scores, .labels "
                            "and .masks: it cannot be evaluated as instance segmentation",
                            vp_model_plugin_name(m, VP_PLUGIN_HEAD));
    vp_gt *img = vp_model_image(m);
    int64_t size = vp_gt_shape(img)[2], K = vp_gt_shape(scores)[1];
    int64_t mh = vp_gt_shape(masks)[2], mw = vp_gt_shape(masks)[3];
    if (vp_gt_shape(img)[3] != size)
        return vp_error_set(VP_ERR_INVALID, "evaluation takes square images (the loader's "
                            "canvas); the model's input is %lldx%lld (model.image)",
                            (long long)size, (long long)vp_gt_shape(img)[3]);
    vp_dataset *ds = NULL;
    vp_loader *ld = NULL;
    vp_coco_gt *gt = NULL;
    det_list dl = {0};
    float *sc = malloc((size_t)(batch * K) * sizeof *sc);
    int32_t *lb = malloc((size_t)(batch * K) * sizeof *lb);
    float *mk = malloc((size_t)(batch * K * mh * mw) * sizeof *mk);
    uint8_t *bin = NULL;
    size_t bin_cap = 0;
    vp_status st = sc && lb && mk ? VP_OK : vp_error_set(VP_ERR_NOMEM, "out of host memory");
    if (!st)
        st = vp_dataset_load(ann, images, &(vp_dataset_opts){.skip_bad = true}, &ds);
    if (!st)
        st = vp_coco_gt_load(ann, &gt);
    /* No targets: the loader's mask side is moot (1 divides any size). The
     * predicted masks map back from their own resolution (mh x mw), which
     * need not be the finest feature map's nor divide the image: HF's head
     * predicts at stride 4 of a backbone that pads to its windows. */
    vp_loader_opts lo = {.batch = (int)batch, .size = (int)size, .mask_h = 1, .mask_w = 1,
                         .max_targets = 1, .no_targets = true,
                         .shard_rank = d->size > 1 ? d->rank : 0,
                         .shard_count = d->size > 1 ? d->size : 0};
    if (!st)
        st = vp_loader_create(ds, &lo, &ld);
    uint64_t nb = ld ? vp_loader_batches(ld) : 0, k = 0;
    bool tty = progress_label && isatty(STDERR_FILENO);
    while (!st) {
        const vp_batch *b;
        if ((st = vp_loader_next(ld, &b)) || !b)
            break;
        st = vp_graph_write(g, img, b->pixels, (size_t)(batch * 3 * size * size) * sizeof(float));
        if (!st)
            st = vp_graph_run(g);
        if (!st)
            st = vp_graph_read(g, scores, sc, (size_t)(batch * K) * sizeof *sc);
        if (!st)
            st = vp_graph_read(g, labels, lb, (size_t)(batch * K) * sizeof *lb);
        if (!st)
            st = vp_graph_read(g, masks, mk, (size_t)(batch * K * mh * mw) * sizeof *mk);
        for (int i = 0; !st && i < b->n; i++) {
            const vp_batch_item *it = &b->items[i];
            size_t px = (size_t)it->w * (size_t)it->h;
            if (px > bin_cap) {
                uint8_t *nbin = realloc(bin, px);
                if (!nbin) {
                    st = vp_error_set(VP_ERR_NOMEM, "out of host memory");
                    break;
                }
                bin = nbin;
                bin_cap = px;
            }
            for (int64_t q = 0; !st && q < K; q++) {
                int32_t cls = lb[i * K + q];
                if (cls < 0 || (uint32_t)cls >= vp_dataset_classes(ds))
                    continue; /* a class the dataset does not have */
                st = vp_batch_unproject(it, (int)size, mk + (size_t)((i * K + q) * mh * mw),
                                        (int)mh, (int)mw, bin);
                vp_rle r;
                if (!st)
                    st = vp_rle_from_mask(bin, it->h, it->w, &r);
                if (!st)
                    st = det_push(&dl, it->image_id, vp_dataset_category_id(ds, (uint32_t)cls),
                                  (double)sc[i * K + q], &r, it->index);
            }
        }
        k++;
        if (!st && tty) {
            fprintf(stderr, "\r%s %llu/%llu batches\033[K", progress_label,
                    (unsigned long long)k, (unsigned long long)nb);
            fflush(stderr);
        }
    }
    if (tty)
        fprintf(stderr, "\r\033[K");
    if (d->size > 1) { /* every rank's detections to rank 0, in one process's order */
        char *mine = NULL, *all = NULL;
        size_t n_mine = 0, n_all = 0;
        if ((st = vp_dist_agree(d, st)))
            goto out;
        st = det_pack(&dl, &mine, &n_mine);
        if ((st = vp_dist_agree(d, st))) {
            free(mine);
            goto out;
        }
        st = vp_dist_gather(d, mine, n_mine, &all, &n_all);
        free(mine);
        det_free(&dl);
        if (!st && d->rank == 0)
            st = det_unpack(all, n_all, &dl);
        free(all);
        if (!st && d->rank == 0)
            st = det_sort(&dl);
        if (st || d->rank != 0)
            goto out;
    }
    for (size_t i = 0; !st && i < dl.n; i++)
        dl.d[i].rle = &dl.rles[i];
    if (!st && results_path)
        st = write_results(&dl, results_path);
    if (!st)
        st = vp_coco_evaluate(gt, dl.d, dl.n, stats);
out:
    det_free(&dl);
    vp_coco_gt_destroy(gt);
    vp_loader_destroy(ld);
    vp_dataset_destroy(ds);
    free(bin);
    free(mk);
    free(lb);
    free(sc);
    return st;
}
