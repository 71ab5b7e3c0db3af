/*
 * COCO's run-length encoding of binary masks, as pycocotools writes and
 * reads it: runs over the mask in column-major order (down each column,
 * then the next), starting with a run of zeros, and the compressed string
 * form of the counts used by COCO annotation and results files.
 *
 *     vp_rle r;
 *     vp_rle_from_logits(logits, h, w, &r);        // an instance mask: logit > 0
 *     char *s = vp_rle_to_string(&r);              // {"size": [h, w], "counts": s}
 *     ...
 *     vp_rle_free(&r); free(s);
 */
#ifndef VP_EVAL_RLE_H
#define VP_EVAL_RLE_H

#include <stddef.h>
#include <stdint.h>

#include <vpeft/status.h>

typedef struct vp_rle {
    int64_t h, w;
    uint32_t *counts; /* alternating runs of 0s and 1s, first of 0s; they sum to h * w */
    size_t n;
} vp_rle;

/* From a row-major mask of h x w bytes (nonzero: inside). */
vp_status vp_rle_from_mask(const uint8_t *mask, int64_t h, int64_t w, vp_rle *out);
/* From row-major mask logits (inside where > 0, sigmoid > 0.5). */
vp_status vp_rle_from_logits(const float *logits, int64_t h, int64_t w, vp_rle *out);
/* Uncompressed counts (an annotation's "counts": [...]); they must sum to
 * h * w (VP_ERR_FORMAT otherwise). */
vp_status vp_rle_from_counts(const uint32_t *counts, size_t n, int64_t h, int64_t w, vp_rle *out);
/* The compressed string (pycocotools' rleToString); malloc'd, NULL when
 * out of memory. */
char *vp_rle_to_string(const vp_rle *r);
/* Parse a compressed string for an h x w mask; a string that is not one
 * (bad characters, negative runs, runs not summing to h * w) is
 * VP_ERR_FORMAT with the reason. */
vp_status vp_rle_from_string(const char *s, int64_t h, int64_t w, vp_rle *out);
/* Into a row-major mask of h x w bytes (0 or 1). */
void vp_rle_to_mask(const vp_rle *r, uint8_t *mask);
uint64_t vp_rle_area(const vp_rle *r);
/* The union of two masks of one size (pycocotools' rleMerge, intersect 0),
 * run by run: no dense mask, memory proportional to the runs. */
vp_status vp_rle_union(const vp_rle *a, const vp_rle *b, vp_rle *out);
void vp_rle_free(vp_rle *r);

#endif
