/*
 * COCO instance-segmentation datasets and the batches a model trains on.
 *
 *     vp_dataset *ds;
 *     vp_dataset_load("data/train.json", "data/train", &(vp_dataset_opts){.skip_bad = true}, &ds);
 *     vp_loader *l;
 *     vp_loader_create(ds, &(vp_loader_opts){.batch = 2, .size = 128, .mask_h = 16,
 *                      .mask_w = 16, .max_targets = 8, .train = true, .seed = 0}, &l);
 *     for (uint64_t k = 0; k < steps; k++) {
 *         const vp_batch *b;
 *         vp_loader_next(l, &b);      // prepared on a host thread while the device runs
 *         ... b->pixels, b->labels, b->masks into the graph ...
 *     }
 *     vp_loader_destroy(l);
 *     vp_dataset_destroy(ds);
 *
 * Geometry: an image of w x h is resized keeping its aspect so that its
 * longer side is `size` (bilinear, as vp_image_resize), placed at the top
 * left of a size x size canvas, and the rest padded with 0 after
 * normalization (the mean colour). Instance masks go through the same
 * transform and are then area-averaged to mask_h x mask_w (the model's
 * mask resolution, size / mask_h pixels per cell): a target cell holds the
 * fraction of it the instance covers, in [0, 1].
 *
 * Determinism: what batch k contains (which images, flipped or not) is a
 * function of (seed, k) alone, so a resumed run that starts its loader at
 * batch k sees exactly what an uninterrupted run saw. Training batches walk
 * epochs, each a fresh permutation of the images drawn from (seed, epoch);
 * evaluation batches (train = false) walk the images once in file order,
 * unflipped, the last batch possibly short.
 */
#ifndef VP_DATA_DATA_H
#define VP_DATA_DATA_H

#include <stdbool.h>
#include <stdint.h>

#include <vpeft/status.h>

/* ---- datasets ---------------------------------------------------------------- */

typedef struct vp_dataset_opts {
    /* A single bad annotation (a polygon with fewer than 3 points, an RLE
     * whose counts do not sum to its size, a bbox-only entry, a category the
     * file does not list): false: an error naming the file and the
     * annotation id; true: a warning naming them (vp_log) and the
     * annotation is skipped. File-level problems (JSON syntax, a missing
     * key, an annotation pointing at an unknown image, an unreadable image)
     * are errors either way. */
    bool skip_bad;
} vp_dataset_opts;

typedef struct vp_dataset vp_dataset;

/* Load a COCO instances file (images, categories, annotations). image_dir:
 * where images' file_name are relative to (NULL: the JSON file's
 * directory). Images are not decoded here, only checked to exist. Errors
 * name the file and the item (e.g. "train.json: annotations[12] (id 40):
 * image_id 7 is not in images"). */
vp_status vp_dataset_load(const char *ann_path, const char *image_dir, const vp_dataset_opts *o,
                          vp_dataset **out);
void vp_dataset_destroy(vp_dataset *ds); /* NULL: no-op */

const char *vp_dataset_path(const vp_dataset *ds);       /* the annotation file */
uint32_t vp_dataset_size(const vp_dataset *ds);          /* images */
uint32_t vp_dataset_instances(const vp_dataset *ds);     /* non-crowd annotations kept */
uint32_t vp_dataset_skipped(const vp_dataset *ds);       /* bad annotations skipped */
uint32_t vp_dataset_crowd(const vp_dataset *ds);         /* iscrowd annotations (not kept) */

/* Categories in the file's order sorted by id; class index k (what the model
 * predicts) is the k-th. */
uint32_t vp_dataset_classes(const vp_dataset *ds);
int64_t vp_dataset_category_id(const vp_dataset *ds, uint32_t k);
const char *vp_dataset_category_name(const vp_dataset *ds, uint32_t k);

typedef struct vp_dataset_image {
    int64_t id;
    int w, h;           /* as the JSON says (checked against the decoded image) */
    const char *path;   /* image_dir/file_name (file_name when absolute) */
} vp_dataset_image;
const vp_dataset_image *vp_dataset_image_at(const vp_dataset *ds, uint32_t i);

/* ---- batches ------------------------------------------------------------------ */

typedef struct vp_loader_opts {
    int batch;            /* images per batch, >= 1 */
    int size;             /* the model's square input side */
    int mask_h, mask_w;   /* the model's mask resolution (size divisible by both) */
    int max_targets;      /* T: instance slots per image; more instances than T:
                           * the T largest by area are kept (a warning once) */
    bool train;           /* shuffled epochs with random horizontal flips; else
                           * one pass in order, no flips */
    uint64_t seed;
    uint64_t start;       /* the first batch index (a resumed run's) */
    float mean[3], std[3];/* normalization; all 0: ImageNet's
                           * (0.485, 0.456, 0.406), (0.229, 0.224, 0.225) */
    int prefetch;         /* batches prepared ahead on the host thread; 0: 2 */
    bool no_targets;      /* pixels and items only (inference): labels stay -1,
                           * masks 0, max_targets is not warned about */
    int shard_rank, shard_count; /* training in data parallel: the global batch k is
                           * batch * shard_count images, this loader gives slots
                           * [shard_rank * batch, (shard_rank + 1) * batch) of it,
                           * flips included, so the ranks' batches together are
                           * what one process with batch * shard_count would see;
                           * evaluation: images shard_rank, shard_rank +
                           * shard_count, ... in order; 0, 0: one process */
} vp_loader_opts;

/* Where a batch's image i came from, to map predictions back. */
typedef struct vp_batch_item {
    uint32_t index;       /* into the dataset */
    int64_t image_id;
    int w, h;             /* original size */
    int rw, rh;           /* its size on the canvas after resizing (<= size) */
    bool flipped;
} vp_batch_item;

typedef struct vp_batch {
    uint64_t k;           /* its batch index */
    uint32_t epoch;       /* training: the epoch it belongs to */
    int n;                /* real images (<= batch; eval's last may be short:
                           * the rest of the arrays is zeros, labels -1) */
    float *pixels;        /* (batch, 3, size, size), normalized */
    int32_t *labels;      /* (batch, T): class index, -1 for an empty slot */
    float *masks;         /* (batch, T, mask_h * mask_w), row-major, in [0, 1] */
    vp_batch_item *items; /* (batch) */
} vp_batch;

typedef struct vp_loader vp_loader;

vp_status vp_loader_create(const vp_dataset *ds, const vp_loader_opts *o, vp_loader **out);
/* The next batch: training never ends; evaluation gives *out NULL after
 * the last. The batch stays valid until the next call. An image that fails
 * to decode is an error naming its file (the loader is then finished). */
vp_status vp_loader_next(vp_loader *l, const vp_batch **out);
/* Batches per evaluation pass (ceil(images / batch)). */
uint64_t vp_loader_batches(const vp_loader *l);
void vp_loader_destroy(vp_loader *l); /* joins the thread; NULL: no-op */

/* Map one predicted instance back to its original image: mask logits at the
 * mask resolution (mask_h x mask_w, row-major) are bilinearly upsampled to
 * the canvas (align_corners=False), cropped to the image's rw x rh region,
 * unflipped, resized to w x h, and thresholded at 0: out (h * w bytes,
 * row-major) is 1 inside. */
vp_status vp_batch_unproject(const vp_batch_item *it, int size, const float *logits, int mask_h,
                             int mask_w, uint8_t *out);

/* An image that is not in a dataset (vpeft predict) made into one model
 * input exactly as the loader makes its images: resized to fit size x size,
 * normalized (mean, std NULL: ImageNet's), at the top left, the rest 0.
 * pixels: (3, size, size). *it gets the geometry for vp_batch_unproject
 * (index and image_id 0, not flipped). img is not changed. */
struct vp_image;
vp_status vp_image_to_input(const struct vp_image *img, int size, const float mean[3],
                            const float std[3], float *pixels, vp_batch_item *it);

/* ---- the synthetic shapes datasets (vpeft make-shapes) ------------------------ */

/* The shapes generator's version: it changes whenever the same options
 * would give other bytes (the demo's cache keys its datasets by it). */
#define VP_SHAPES_VERSION 3

typedef struct vp_shapes_opts {
    const char *out;      /* a directory: out/images/<id>.png and out/annotations.json */
    char domain;          /* 'A' or 'B' */
    int n;                /* images */
    int size;             /* square side in pixels */
    uint64_t seed;
} vp_shapes_opts;

/* Write a dataset of overlapping shapes. Domain A: circles, squares and
 * triangles in saturated colours, each flat, striped, checked or noisy, on a
 * light tinted gradient, plain, noisy or striped. Domain B:
 * another class set sharing some shapes (e.g. triangles, ellipses, stars,
 * rings, crosses), muted colours, textured shapes (stripes, checks, noise)
 * and textured backgrounds, category ids not contiguous. Each image holds
 * 1 to 6 shapes that may overlap, each in a colour no other shape of the
 * image has and with at least 80% of its area left visible (a shape that
 * finds no such place is not drawn); an instance's segmentation is its visible
 * region: a polygon when nothing covers it, else compressed RLE. The same
 * options give the same bytes. Prints nothing; progress is the caller's. */
vp_status vp_shapes_write(const vp_shapes_opts *o);

#endif
