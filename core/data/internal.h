/*
 * What coco.c and loader.c share inside core/data: the dataset's layout.
 * Instances are grouped by image (file order within one), each mask an RLE
 * at its image's original h x w.
 */
#ifndef VP_DATA_INTERNAL_H
#define VP_DATA_INTERNAL_H

#include "data/data.h"
#include "eval/rle.h"

typedef struct vp_instance {
    uint32_t cls;  /* class index (categories sorted by id) */
    uint64_t area; /* pixels at the original resolution, > 0 */
    vp_rle rle;
} vp_instance;

struct vp_dataset {
    char *path;
    uint32_t n_img, n_inst, n_cls, skipped, crowd;
    vp_dataset_image *img; /* (n_img), file order; path owned */
    uint32_t *first;       /* (n_img + 1): image i's instances are inst[first[i] .. first[i+1]) */
    vp_instance *inst;     /* (n_inst) */
    int64_t *cat_id;       /* (n_cls), ascending */
    char **cat_name;       /* (n_cls) */
};

#endif
