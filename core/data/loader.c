/*
 * Batches from a vp_dataset (data.h), prepared ahead on one host thread
 * while the caller's device works.
 *
 * Which images batch k holds and whether each is flipped depend on (seed,
 * k) alone: training positions k * batch .. k * batch + batch - 1 of an
 * endless walk where position p is image perm_e[p % N] of epoch e = p / N,
 * perm_e a Fisher-Yates shuffle drawn from (seed, e); the flip of slot j
 * is a bit of a hash of (seed, k, j). A loader started at k therefore makes
 * exactly the batches an uninterrupted one makes from k on.
 *
 * The thread and the caller share a ring of prefetch + 1 batch buffers:
 * the thread fills batch `prod` while fewer than prefetch + 1 are in use
 * (ready, or held by the caller until its next call). One mutex guards
 * the counters; one condition variable wakes either side.
 */
#include <math.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "data/data.h"
#include "data/internal.h"
#include "io/image.h"
#include "util/error.h"
#include "util/log.h"

struct vp_loader {
    const vp_dataset *ds;
    vp_loader_opts o;
    int slots;    /* ring buffers: prefetch + 1 */
    uint64_t nb;  /* batches per pass */
    vp_batch *ring;

    pthread_t thread;
    bool started;
    pthread_mutex_t mu;
    pthread_cond_t cv;
    atomic_bool stop;
    uint64_t prod, cons, released; /* batches made, handed out, given back (from start) */
    bool done;                     /* evaluation: the pass is complete */
    vp_status err;                 /* the thread's failure, sticky */
    char msg[1024];

    /* The thread's own: the two epochs' permutations a batch may span. */
    uint32_t *perm[2];
    int64_t perm_epoch[2];
    bool warned;
    int shards; /* o.shard_count, at least 1 */
};

/* ---- determinism ---- */

static uint64_t mix64(uint64_t z)
{
    z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ULL;
    z = (z ^ (z >> 27)) * 0x94d049bb133111ebULL;
    return z ^ (z >> 31);
}

/* splitmix64 from (seed, epoch): the epoch's shuffle. */
static const uint32_t *epoch_perm(vp_loader *l, uint64_t e)
{
    int s = (int)(e & 1);
    if (l->perm_epoch[s] == (int64_t)e)
        return l->perm[s];
    uint32_t n = l->ds->n_img, *p = l->perm[s];
    for (uint32_t i = 0; i < n; i++)
        p[i] = i;
    uint64_t st = mix64(l->o.seed ^ 0x243f6a8885a308d3ULL) ^ mix64(e + 0x13198a2e03707344ULL);
    for (uint32_t i = n - 1; i > 0; i--) {
        uint64_t r = mix64(st += 0x9e3779b97f4a7c15ULL);
        uint32_t j = (uint32_t)(r % ((uint64_t)i + 1));
        uint32_t t = p[i];
        p[i] = p[j];
        p[j] = t;
    }
    l->perm_epoch[s] = (int64_t)e;
    return p;
}

static bool flip_of(uint64_t seed, uint64_t k, int slot)
{
    return mix64(mix64(mix64(seed ^ 0xa4093822299f31d0ULL) + k) + (uint64_t)slot) & 1;
}

/* Evaluation: how many of the images are this rank's (every shards-th,
 * from shard_rank). */
static uint64_t eval_share(const vp_loader *l)
{
    uint64_t n = l->ds->n_img, r = (uint64_t)l->o.shard_rank, k = (uint64_t)l->shards;
    return r < n ? (n - r + k - 1) / k : 0;
}

/* ---- geometry ---- */

/* The canvas size of a w x h image: longer side `size`, aspect kept. */
static void fit(int w, int h, int size, int *rw, int *rh)
{
    if (w >= h) {
        *rw = size;
        *rh = (int)lround((double)h * size / w);
    } else {
        *rh = size;
        *rw = (int)lround((double)w * size / h);
    }
    *rw = *rw < 1 ? 1 : *rw;
    *rh = *rh < 1 ? 1 : *rh;
}

/* dst (dh x dw) sampled bilinearly from a plane sh x sw (src: bytes msk or
 * floats) as align_corners=False sampling does: output pixel (y, x) reads
 * the source at ((y + 0.5) sy - 0.5, (x + 0.5) sx - 0.5), clamped; written
 * mirrored when flip. With sy = sh / dh, sx = sw / dw it is a resize (as
 * vp_image_resize, no antialiasing); with other scales, the top-left dh x dw
 * part of a resize to a larger canvas. */
static void sample_plane(const uint8_t *msk, const float *src, int sh, int sw, double sy,
                         double sx, float *dst, int dh, int dw, bool flip)
{
    for (int y = 0; y < dh; y++) {
        double fy = (y + 0.5) * sy - 0.5;
        fy = fy < 0 ? 0 : fy;
        int y0 = (int)fy, y1 = y0 + 1 < sh ? y0 + 1 : y0;
        double ly = fy - y0;
        for (int x = 0; x < dw; x++) {
            double fx = (x + 0.5) * sx - 0.5;
            fx = fx < 0 ? 0 : fx;
            int x0 = (int)fx, x1 = x0 + 1 < sw ? x0 + 1 : x0;
            double lx = fx - x0, a, b, c, d;
            if (msk) {
                a = msk[y0 * sw + x0], b = msk[y0 * sw + x1];
                c = msk[y1 * sw + x0], d = msk[y1 * sw + x1];
            } else {
                a = src[y0 * sw + x0], b = src[y0 * sw + x1];
                c = src[y1 * sw + x0], d = src[y1 * sw + x1];
            }
            dst[(size_t)y * dw + (flip ? dw - 1 - x : x)] =
                (float)((1 - ly) * ((1 - lx) * a + lx * b) + ly * ((1 - lx) * c + lx * d));
        }
    }
}

static void resize_plane(const uint8_t *msk, const float *src, int sh, int sw, float *dst, int dh,
                         int dw)
{
    sample_plane(msk, src, sh, sw, (double)sh / dh, (double)sw / dw, dst, dh, dw, false);
}

vp_status vp_batch_unproject(const vp_batch_item *it, int size, const float *logits, int mask_h,
                             int mask_w, uint8_t *out)
{
    if (size < 1 || mask_h < 1 || mask_w < 1 || it->rw < 1 || it->rh < 1 || it->rw > size ||
        it->rh > size || it->w < 1 || it->h < 1)
        return vp_error_set(VP_ERR_INVALID, "unproject: image %lld: a %dx%d region of a %dx%d "
                            "canvas, %dx%d masks", (long long)it->image_id, it->rw, it->rh, size,
                            size, mask_w, mask_h);
    int rw = it->rw, rh = it->rh;
    float *crop = malloc((size_t)rw * rh * sizeof *crop);
    float *full = malloc((size_t)it->w * it->h * sizeof *full);
    if (!crop || !full) {
        free(crop);
        free(full);
        return vp_error_set(VP_ERR_NOMEM, "unproject: out of host memory");
    }
    /* The canvas upsampling restricted to the image's region, unflipped. */
    sample_plane(NULL, logits, mask_h, mask_w, (double)mask_h / size, (double)mask_w / size, crop,
                 rh, rw, it->flipped);
    resize_plane(NULL, crop, rh, rw, full, it->h, it->w);
    for (size_t i = 0; i < (size_t)it->w * it->h; i++)
        out[i] = full[i] > 0;
    free(crop);
    free(full);
    return VP_OK;
}

/* ---- making a batch ---- */

/* Instance order for max_targets: larger first, file order among equals. */
typedef struct by_area {
    uint64_t area;
    uint32_t ix;
} by_area;

static int cmp_area(const void *a, const void *b)
{
    const by_area *x = a, *y = b;
    if (x->area != y->area)
        return x->area > y->area ? -1 : 1;
    return (x->ix > y->ix) - (x->ix < y->ix);
}

static int cmp_u32(const void *a, const void *b)
{
    uint32_t x = *(const uint32_t *)a, y = *(const uint32_t *)b;
    return (x > y) - (x < y);
}

/* img resized in place to fit size x size, normalized, and written at the
 * top left of px (3, size, size), mirrored when flip; the rest 0. */
static vp_status place_image(vp_image *img, int size, const float *mean, const float *std,
                             bool flip, float *px, int *rw, int *rh)
{
    fit(img->w, img->h, size, rw, rh);
    vp_status st = vp_image_resize(img, *rh, *rw);
    if (st)
        return st;
    vp_image_normalize(img, mean, std);
    memset(px, 0, (size_t)3 * size * size * sizeof *px);
    for (int c = 0; c < 3; c++)
        for (int y = 0; y < *rh; y++)
            for (int x = 0; x < *rw; x++)
                px[((size_t)c * size + y) * size + (flip ? *rw - 1 - x : x)] =
                    img->data[((size_t)c * *rh + y) * *rw + x];
    return VP_OK;
}

/* Image `index` into slot j of b: pixels, labels, masks, item. */
static vp_status fill_item(vp_loader *l, vp_batch *b, int j, uint32_t index, bool flip)
{
    const vp_dataset *ds = l->ds;
    const vp_dataset_image *im = &ds->img[index];
    const vp_loader_opts *o = &l->o;
    int size = o->size, T = o->max_targets, mh = o->mask_h, mw = o->mask_w;
    vp_image img;
    vp_status st = vp_image_load(im->path, &img);
    if (st)
        return st;
    if (img.w != im->w || img.h != im->h) {
        int w = img.w, h = img.h;
        vp_image_free(&img);
        return vp_error_set(VP_ERR_FORMAT, "%s: the image is %dx%d, %s says %dx%d (id %lld)",
                            im->path, w, h, ds->path, im->w, im->h, (long long)im->id);
    }
    int rw, rh;
    st = place_image(&img, size, o->mean, o->std, flip, b->pixels + (size_t)j * 3 * size * size,
                     &rw, &rh);
    if (st) {
        vp_image_free(&img);
        return vp_error_wrap(st, "%s", im->path);
    }
    vp_image_free(&img);
    b->items[j] = (vp_batch_item){.index = index, .image_id = im->id, .w = im->w, .h = im->h,
                                  .rw = rw, .rh = rh, .flipped = flip};

    uint32_t first = ds->first[index], n = ds->first[index + 1] - first;
    if (!n || o->no_targets)
        return VP_OK;
    by_area *order = malloc(n * sizeof *order);
    uint32_t *keep = malloc(n * sizeof *keep);
    uint8_t *m = malloc((size_t)im->w * im->h);
    float *r = malloc((size_t)rw * rh * sizeof *r);
    if (!order || !keep || !m || !r) {
        st = vp_error_set(VP_ERR_NOMEM, "%s: out of host memory for its masks", im->path);
        goto out;
    }
    for (uint32_t i = 0; i < n; i++)
        order[i] = (by_area){ds->inst[first + i].area, i};
    uint32_t nk = n;
    if (n > (uint32_t)T) {
        qsort(order, n, sizeof *order, cmp_area);
        nk = (uint32_t)T;
        if (!l->warned)
            vp_warn("%s: image %lld has %u instances, max_targets is %d: the %d largest are "
                    "kept (warned once)", ds->path, (long long)im->id, n, T, T);
        l->warned = true;
    }
    for (uint32_t i = 0; i < nk; i++)
        keep[i] = order[i].ix;
    qsort(keep, nk, sizeof *keep, cmp_u32); /* slots in file order */
    int ch = size / mh, cw = size / mw;
    float inv = 1.0f / (float)(ch * cw);
    for (uint32_t t = 0; t < nk; t++) {
        const vp_instance *in = &ds->inst[first + keep[t]];
        b->labels[(size_t)j * T + t] = (int32_t)in->cls;
        vp_rle_to_mask(&in->rle, m);
        resize_plane(m, NULL, im->h, im->w, r, rh, rw);
        /* Area average of the canvas (zero outside rw x rh) into cells. */
        float *cell = b->masks + ((size_t)j * T + t) * mh * mw;
        for (int y = 0; y < rh; y++)
            for (int x = 0; x < rw; x++) {
                int cx = (flip ? rw - 1 - x : x) / cw;
                cell[(y / ch) * mw + cx] += r[(size_t)y * rw + x];
            }
        for (int q = 0; q < mh * mw; q++)
            cell[q] *= inv;
    }
out:
    free(order);
    free(keep);
    free(m);
    free(r);
    return st;
}

static vp_status make_batch(vp_loader *l, uint64_t k, vp_batch *b)
{
    const vp_loader_opts *o = &l->o;
    int B = o->batch, T = o->max_targets;
    uint32_t N = l->ds->n_img;
    memset(b->pixels, 0, (size_t)B * 3 * o->size * o->size * sizeof *b->pixels);
    memset(b->masks, 0, (size_t)B * T * o->mask_h * o->mask_w * sizeof *b->masks);
    memset(b->items, 0, (size_t)B * sizeof *b->items);
    for (size_t i = 0; i < (size_t)B * T; i++)
        b->labels[i] = -1;
    b->k = k;
    b->epoch = 0;
    b->n = B;
    if (!o->train) {
        uint64_t p0 = k * (uint64_t)B, mine = eval_share(l);
        b->n = (int)(mine - p0 < (uint64_t)B ? mine - p0 : (uint64_t)B);
    } else {
        b->epoch = (uint32_t)(k * (uint64_t)B * (uint64_t)l->shards / N);
    }
    for (int j = 0; j < b->n; j++) {
        if (atomic_load(&l->stop))
            return VP_OK;
        uint64_t p = k * (uint64_t)B + (uint64_t)j;
        /* evaluation: this rank's images are shard_rank, + shard_count, ... */
        uint32_t index = (uint32_t)((uint64_t)o->shard_rank + p * (uint64_t)l->shards);
        bool flip = false;
        if (o->train) {
            /* this rank's slots of the global batch k (all of it for one rank) */
            int slot = o->shard_rank * B + j;
            p = k * (uint64_t)B * (uint64_t)l->shards + (uint64_t)slot;
            index = epoch_perm(l, p / N)[p % N];
            flip = flip_of(o->seed, k, slot);
        }
        vp_status st = fill_item(l, b, j, index, flip);
        if (st)
            return st;
    }
    return VP_OK;
}

static void *worker(void *arg)
{
    vp_loader *l = arg;
    for (;;) {
        pthread_mutex_lock(&l->mu);
        while (!atomic_load(&l->stop) && l->prod - l->released >= (uint64_t)l->slots)
            pthread_cond_wait(&l->cv, &l->mu);
        uint64_t i = l->prod;
        pthread_mutex_unlock(&l->mu);
        if (atomic_load(&l->stop))
            break;
        uint64_t k = l->o.start + i;
        if (!l->o.train && k >= l->nb) {
            pthread_mutex_lock(&l->mu);
            l->done = true;
            pthread_cond_broadcast(&l->cv);
            pthread_mutex_unlock(&l->mu);
            break;
        }
        vp_status st = make_batch(l, k, &l->ring[i % (uint64_t)l->slots]);
        pthread_mutex_lock(&l->mu);
        if (st) {
            l->err = st;
            snprintf(l->msg, sizeof l->msg, "%s", vp_error_last());
        } else {
            l->prod++;
        }
        pthread_cond_broadcast(&l->cv);
        pthread_mutex_unlock(&l->mu);
        if (st)
            break;
    }
    return NULL;
}

/* ---- the public side ---- */

void vp_loader_destroy(vp_loader *l)
{
    if (!l)
        return;
    if (l->started) {
        pthread_mutex_lock(&l->mu);
        atomic_store(&l->stop, true);
        pthread_cond_broadcast(&l->cv);
        pthread_mutex_unlock(&l->mu);
        pthread_join(l->thread, NULL);
        pthread_cond_destroy(&l->cv);
        pthread_mutex_destroy(&l->mu);
    }
    for (int s = 0; l->ring && s < l->slots; s++) {
        free(l->ring[s].pixels);
        free(l->ring[s].labels);
        free(l->ring[s].masks);
        free(l->ring[s].items);
    }
    free(l->ring);
    free(l->perm[0]);
    free(l->perm[1]);
    free(l);
}

vp_status vp_loader_create(const vp_dataset *ds, const vp_loader_opts *o, vp_loader **out)
{
    *out = NULL;
    const char *path = ds->path;
    if (o->batch < 1 || o->size < 1 || o->size > 16384 || o->mask_h < 1 || o->mask_w < 1 ||
        o->size % o->mask_h || o->size % o->mask_w || o->max_targets < 1 || o->prefetch < 0)
        return vp_error_set(VP_ERR_INVALID, "%s: loader: batch %d, size %d, masks %dx%d, "
                            "max_targets %d, prefetch %d: need batch, max_targets >= 1, prefetch "
                            ">= 0 and a size divisible by the mask sides", path, o->batch,
                            o->size, o->mask_w, o->mask_h, o->max_targets, o->prefetch);
    if (!ds->n_img)
        return vp_error_set(VP_ERR_INVALID, "%s: no images to load", path);
    if (o->shard_count < 0 || o->shard_rank < 0 ||
        (o->shard_count ? o->shard_rank >= o->shard_count : o->shard_rank != 0))
        return vp_error_set(VP_ERR_INVALID, "%s: loader: shard %d of %d", path, o->shard_rank,
                            o->shard_count);
    vp_loader *l = calloc(1, sizeof *l);
    if (!l)
        return vp_error_set(VP_ERR_NOMEM, "%s: out of host memory for the loader", path);
    l->ds = ds;
    l->o = *o;
    l->shards = o->shard_count > 0 ? o->shard_count : 1;
    bool zero = true;
    for (int c = 0; c < 3; c++)
        zero &= o->mean[c] == 0 && o->std[c] == 0;
    if (zero) {
        static const float mean[3] = {0.485f, 0.456f, 0.406f}, sd[3] = {0.229f, 0.224f, 0.225f};
        memcpy(l->o.mean, mean, sizeof mean);
        memcpy(l->o.std, sd, sizeof sd);
    }
    for (int c = 0; c < 3; c++)
        if (!(l->o.std[c] > 0) || !isfinite(l->o.mean[c])) {
            double sd = l->o.std[c];
            free(l);
            return vp_error_set(VP_ERR_INVALID, "%s: loader: normalization std[%d] = %g is not "
                                "positive", path, c, sd);
        }
    l->slots = (o->prefetch ? o->prefetch : 2) + 1;
    l->nb = (eval_share(l) + (uint64_t)o->batch - 1) / (uint64_t)o->batch;
    l->perm_epoch[0] = l->perm_epoch[1] = -1;
    l->perm[0] = malloc(ds->n_img * sizeof *l->perm[0]);
    l->perm[1] = malloc(ds->n_img * sizeof *l->perm[1]);
    l->ring = calloc((size_t)l->slots, sizeof *l->ring);
    bool oom = !l->perm[0] || !l->perm[1] || !l->ring;
    size_t B = (size_t)o->batch, T = (size_t)o->max_targets;
    for (int s = 0; !oom && s < l->slots; s++) {
        vp_batch *b = &l->ring[s];
        b->pixels = malloc(B * 3 * (size_t)o->size * o->size * sizeof *b->pixels);
        b->labels = malloc(B * T * sizeof *b->labels);
        b->masks = malloc(B * T * (size_t)o->mask_h * o->mask_w * sizeof *b->masks);
        b->items = malloc(B * sizeof *b->items);
        oom = !b->pixels || !b->labels || !b->masks || !b->items;
    }
    if (oom) {
        vp_loader_destroy(l);
        return vp_error_set(VP_ERR_NOMEM, "%s: out of host memory for %d batches of %d", path,
                            o->prefetch ? o->prefetch + 1 : 3, o->batch);
    }
    atomic_init(&l->stop, false);
    pthread_mutex_init(&l->mu, NULL);
    pthread_cond_init(&l->cv, NULL);
    if (pthread_create(&l->thread, NULL, worker, l)) {
        pthread_cond_destroy(&l->cv);
        pthread_mutex_destroy(&l->mu);
        vp_loader_destroy(l);
        return vp_error_set(VP_ERR_NOMEM, "%s: cannot start the loader thread", path);
    }
    l->started = true;
    *out = l;
    return VP_OK;
}

vp_status vp_loader_next(vp_loader *l, const vp_batch **out)
{
    *out = NULL;
    pthread_mutex_lock(&l->mu);
    l->released = l->cons; /* the batch handed out last time is the thread's again */
    pthread_cond_broadcast(&l->cv);
    while (l->prod == l->cons && !l->err && !l->done)
        pthread_cond_wait(&l->cv, &l->mu);
    vp_status st = VP_OK;
    if (l->prod > l->cons)
        *out = &l->ring[l->cons++ % (uint64_t)l->slots];
    else if (l->err)
        st = vp_error_set(l->err, "%s", l->msg);
    pthread_mutex_unlock(&l->mu);
    return st;
}

uint64_t vp_loader_batches(const vp_loader *l) { return l->nb; }

vp_status vp_image_to_input(const vp_image *img, int size, const float mean[3],
                            const float std[3], float *pixels, vp_batch_item *it)
{
    static const float mean0[3] = {0.485f, 0.456f, 0.406f}, sd0[3] = {0.229f, 0.224f, 0.225f};
    size_t n = (size_t)3 * img->w * img->h;
    vp_image r = {img->w, img->h, malloc(n * sizeof(float))};
    if (!r.data)
        return vp_error_set(VP_ERR_NOMEM, "out of host memory for a %dx%d image", img->w, img->h);
    memcpy(r.data, img->data, n * sizeof(float));
    int rw, rh;
    vp_status st = place_image(&r, size, mean ? mean : mean0, std ? std : sd0, false, pixels, &rw,
                               &rh);
    vp_image_free(&r);
    if (!st)
        *it = (vp_batch_item){.w = img->w, .h = img->h, .rw = rw, .rh = rh};
    return st;
}
