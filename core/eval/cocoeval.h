/*
 * COCO instance-segmentation evaluation, computed as pycocotools'
 * COCOeval(iouType='segm') with its default parameters computes it: mask
 * IoU (crowd regions scored against the detection's area), greedy matching
 * at IoU .50:.05:.95, precision at 101 recall points, and the 12 summary
 * numbers it prints. Ground truth polygons are rasterized as its rleFrPoly
 * does, so the numbers agree with pycocotools' to rounding.
 *
 *     vp_coco_stats s;
 *     if (vp_coco_eval_files("instances_val.json", "results.json", &s) != VP_OK)
 *         fprintf(stderr, "%s\n", vp_error_last());
 *     printf("mask AP %.3f\n", s.ap);
 *
 * Results held in memory (the trainer's) go through vp_coco_gt_load once
 * and vp_coco_evaluate per evaluation.
 */
#ifndef VP_EVAL_COCOEVAL_H
#define VP_EVAL_COCOEVAL_H

#include <stddef.h>
#include <stdint.h>

#include <vpeft/status.h>

#include "eval/rle.h"

#ifdef __cplusplus
extern "C" {
#endif

/* The 12 numbers COCOeval.summarize() prints, in its order; -1 where it
 * prints -1 (no ground truth in that area range, say). */
typedef struct vp_coco_stats {
    double ap, ap50, ap75, aps, apm, apl, ar1, ar10, ar100, ars, arm, arl;
} vp_coco_stats;

/* Score a COCO results file (a JSON list of {image_id, category_id,
 * segmentation: {size, counts}, score}) against COCO instance ground truth.
 * Categories are all of gt's "categories", images all of its "images".
 * A malformed file, a missing key, a result for an image or category the
 * ground truth lacks, or an RLE whose size is not its image's: an error
 * naming the file and the item, and *out untouched. */
vp_status vp_coco_eval_files(const char *gt_path, const char *res_path, vp_coco_stats *out);

/* Ground truth loaded once (images, categories, annotations rasterized). */
typedef struct vp_coco_gt vp_coco_gt;

/* Load a COCO instances file; *out is the caller's, freed with
 * vp_coco_gt_destroy. On failure *out is NULL. */
vp_status vp_coco_gt_load(const char *path, vp_coco_gt **out);
/* NULL is a no-op. */
void vp_coco_gt_destroy(vp_coco_gt *gt);

/* One detection held in memory; rle is borrowed for the call. */
typedef struct vp_coco_det {
    int64_t image_id, category_id;
    double score;
    const vp_rle *rle;
} vp_coco_det;

/* Score n detections (the order matters only between equal scores, as in
 * pycocotools: the earlier one ranks first) against gt; the detection's
 * area is its mask's. Errors as vp_coco_eval_files', naming
 * "detection <index>". gt is only read: one gt may serve several threads. */
vp_status vp_coco_evaluate(const vp_coco_gt *gt, const vp_coco_det *dets, size_t n,
                           vp_coco_stats *out);

/* Image i of the ground truth (in ascending image id order) counted
 * weight[i] times, as if the ground truth held weight[i] copies of it and
 * the results each copy's detections (0: left out). What the bootstrap
 * below scores each resample with; exposed for its test. */
vp_status vp_coco_evaluate_weighted(const vp_coco_gt *gt, const vp_coco_det *dets, size_t n,
                                    const uint32_t *weight, vp_coco_stats *out);

/* Confidence intervals by the percentile bootstrap over images: each of
 * `resamples` draws takes the ground truth's images with replacement (as
 * many as it has; SplitMix64 from seed, so a seed gives the same draws on
 * every machine), scores them with their detections as
 * vp_coco_evaluate_weighted, and each of the 12 numbers' interval is the
 * (1 - level) / 2 and (1 + level) / 2 percentiles (numpy's linear
 * interpolation) of the draws where it is defined, -1 where it is in
 * none. Images are the unit, as they are what a validation split samples:
 * a reader sees whether two methods' APs on the same split differ by more
 * than the choice of images explains. */
typedef struct vp_coco_boot {
    int resamples; /* 1 to VP_COCO_MAX_RESAMPLES; 200 is usual */
    uint64_t seed;
    double level;  /* 0.95 */
} vp_coco_boot;
#define VP_COCO_MAX_RESAMPLES 100000

/* *out as vp_coco_evaluate's; *lo and *hi the intervals' ends. */
vp_status vp_coco_evaluate_ci(const vp_coco_gt *gt, const vp_coco_det *dets, size_t n,
                              const vp_coco_boot *boot, vp_coco_stats *out, vp_coco_stats *lo,
                              vp_coco_stats *hi);
vp_status vp_coco_eval_files_ci(const char *gt_path, const char *res_path,
                                const vp_coco_boot *boot, vp_coco_stats *out, vp_coco_stats *lo,
                                vp_coco_stats *hi);

/* One polygon of k points (x0, y0, x1, y1, ...) rasterized on an h x w
 * image exactly as pycocotools' rleFrPoly (vertices upsampled by 5,
 * pixel centers inside). Coordinates must be finite and within +-1e6. */
vp_status vp_coco_poly_to_rle(const double *xy, size_t k, int64_t h, int64_t w, vp_rle *out);

/* One annotation's "segmentation" (a cJSON node) as an RLE of the image's
 * h x w: polygons (when allow_poly; several are united, as pycocotools'
 * frPyObjects and merge do) or {"size": [h, w], "counts": string or list}.
 * A size other than the image's, a bad count or polygon: VP_ERR_FORMAT
 * naming `what`. */
struct cJSON;
vp_status vp_coco_segm_to_rle(const struct cJSON *seg, int64_t h, int64_t w, int allow_poly,
                              const char *what, vp_rle *out);

#ifdef __cplusplus
}
#endif

#endif
