/*
 * Fuzz target: COCO results files (core/eval/cocoeval.c,
 * vp_coco_eval_files), scored against a small fixed ground truth: two
 * images, two categories, polygons, an RLE and a crowd region. The input
 * is the results file.
 */
#include "fuzz.h"

#include "eval/cocoeval.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

static const char gt_json[] =
    "{\"images\": [{\"id\": 1, \"width\": 12, \"height\": 10, \"file_name\": \"a.png\"},"
    "              {\"id\": 2, \"width\": 8, \"height\": 9, \"file_name\": \"b.png\"}],"
    " \"categories\": [{\"id\": 1, \"name\": \"cat\"}, {\"id\": 7, \"name\": \"dog\"}],"
    " \"annotations\": ["
    "  {\"id\": 1, \"image_id\": 1, \"category_id\": 1, \"iscrowd\": 0, \"area\": 20,"
    "   \"bbox\": [1, 1, 5, 4], \"segmentation\": [[1, 1, 6, 1, 6, 5, 1, 5]]},"
    "  {\"id\": 2, \"image_id\": 1, \"category_id\": 7, \"iscrowd\": 1, \"area\": 9,"
    "   \"bbox\": [7, 2, 3, 3], \"segmentation\": {\"size\": [10, 12], \"counts\": [72, 3, 7, 3, 7, 3, 25]}},"
    "  {\"id\": 3, \"image_id\": 2, \"category_id\": 7, \"iscrowd\": 0, \"area\": 12,"
    "   \"bbox\": [2, 2, 4, 3], \"segmentation\": [[2, 2, 6, 2, 6, 5, 2, 5], [0, 0, 1, 0, 1, 1]]}"
    " ]}";

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    static char gt_path[512];
    if (!gt_path[0])
        snprintf(gt_path, sizeof gt_path, "%s",
                 vp_fuzz_write("gt.json", (const uint8_t *)gt_json, sizeof gt_json - 1));
    const char *path = vp_fuzz_write("results.json", data, size);
    vp_coco_stats s;
    (void)vp_coco_eval_files(gt_path, path, &s);
    return 0;
}
