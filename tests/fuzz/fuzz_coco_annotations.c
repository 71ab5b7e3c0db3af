/*
 * Fuzz target: COCO instance annotations, read two ways: as a training
 * dataset (core/data/coco.c, vp_dataset_load, skipping bad annotations and
 * not) and as evaluation ground truth (core/eval/cocoeval.c,
 * vp_coco_gt_load, which rasterizes every polygon and RLE). The input is
 * the JSON file; images named "a.png" and "b.jpg" exist (empty) beside it,
 * so file-name checks pass for them.
 */
#include "fuzz.h"

#include "data/data.h"
#include "eval/cocoeval.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    static int ready;
    if (!ready) {
        vp_fuzz_write("a.png", NULL, 0);
        vp_fuzz_write("b.jpg", NULL, 0);
        ready = 1;
    }
    const char *path = vp_fuzz_write("ann.json", data, size);
    for (int skip = 0; skip < 2; skip++) {
        vp_dataset *ds = NULL;
        if (vp_dataset_load(path, NULL, &(vp_dataset_opts){.skip_bad = skip}, &ds) == VP_OK) {
            for (uint32_t k = 0; k < vp_dataset_classes(ds); k++)
                (void)vp_dataset_category_name(ds, k);
            for (uint32_t i = 0; i < vp_dataset_size(ds); i++)
                (void)vp_dataset_image_at(ds, i);
        }
        vp_dataset_destroy(ds);
    }
    vp_coco_gt *gt = NULL;
    (void)vp_coco_gt_load(path, &gt);
    vp_coco_gt_destroy(gt);
    return 0;
}
