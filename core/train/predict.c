/*
 * Pictures of predictions (train.h): one image through an inference
 * model, its instances mapped back to the image and drawn over it.
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "data/data.h"
#include "io/draw.h"
#include "io/image.h"
#include "train/train.h"
#include "util/error.h"

/* Pictures are drawn at least this large (pixels on the longer side), small
 * images enlarged by a whole factor with nearest neighbours, so that labels
 * stay readable on 64-pixel images. */
#define MIN_SIDE 256

static vp_status enlarge(vp_canvas *c, int f)
{
    vp_canvas big;
    vp_status st = vp_canvas_create(c->w * f, c->h * f, (vp_rgb){0, 0, 0}, &big);
    if (st)
        return st;
    for (int y = 0; y < big.h; y++)
        for (int x = 0; x < big.w; x++)
            memcpy(big.rgb + 3 * ((size_t)y * big.w + x),
                   c->rgb + 3 * ((size_t)(y / f) * c->w + x / f), 3);
    vp_canvas_free(c);
    *c = big;
    return VP_OK;
}

vp_status vp_predict_picture(vp_model *m, const char *image_path, const vp_dataset *names,
                             float threshold, const char *png_path, int *drawn)
{
    *drawn = 0;
    vp_graph *g = vp_model_graph(m);
    vp_gt *img = vp_model_image(m), *scores = vp_model_output(m, "instances.scores"),
          *labels = vp_model_output(m, "instances.labels"),
          *masks = vp_model_output(m, "instances.masks");
    if (!scores || !labels || !masks)
        return vp_error_set(VP_ERR_INVALID, "the head (%s) gives no instances to draw",
                            vp_model_plugin_name(m, VP_PLUGIN_HEAD));
    if (vp_gt_shape(img)[0] != 1)
        return vp_error_set(VP_ERR_INTERNAL, "predict: the model must be built for one image");
    int64_t size = vp_gt_shape(img)[2], K = vp_gt_shape(scores)[1];
    int64_t mh = vp_gt_shape(masks)[2], mw = vp_gt_shape(masks)[3];
    if (vp_gt_shape(img)[3] != size)
        return vp_error_set(VP_ERR_INVALID, "predict takes square images (the loader's canvas); "
                            "the model's input is %lldx%lld (model.image)", (long long)size,
                            (long long)vp_gt_shape(img)[3]);
    vp_image im = {0};
    vp_canvas cv = {0};
    float *px = malloc((size_t)(3 * size * size) * sizeof *px);
    float *sc = malloc((size_t)K * sizeof *sc), *mk = malloc((size_t)(K * mh * mw) * sizeof *mk);
    int32_t *lb = malloc((size_t)K * sizeof *lb);
    uint8_t *bin = NULL;
    vp_status st = px && sc && mk && lb ? VP_OK : vp_error_set(VP_ERR_NOMEM, "out of host memory");
    vp_batch_item it;
    if (!st)
        st = vp_image_load(image_path, &im);
    if (!st)
        st = vp_canvas_from_image(&im, &cv);
    if (!st)
        st = vp_image_to_input(&im, (int)size, NULL, NULL, px, &it);
    int f = 1;
    while (im.w * f < MIN_SIDE && im.h * f < MIN_SIDE)
        f++;
    if (!st && f > 1)
        st = enlarge(&cv, f);
    uint8_t *big = NULL;
    if (!st && !(bin = malloc((size_t)im.w * (size_t)im.h)))
        st = vp_error_set(VP_ERR_NOMEM, "out of host memory");
    if (!st && f > 1 && !(big = malloc((size_t)cv.w * (size_t)cv.h)))
        st = vp_error_set(VP_ERR_NOMEM, "out of host memory");
    if (!st)
        st = vp_graph_write(g, img, px, (size_t)(3 * size * size) * sizeof *px);
    if (!st)
        st = vp_graph_run(g);
    if (!st)
        st = vp_graph_read(g, scores, sc, (size_t)K * sizeof *sc);
    if (!st)
        st = vp_graph_read(g, labels, lb, (size_t)K * sizeof *lb);
    if (!st)
        st = vp_graph_read(g, masks, mk, (size_t)(K * mh * mw) * sizeof *mk);
    /* Lowest score first, so the most confident instance is drawn last, on top. */
    for (int64_t q = K - 1; !st && q >= 0; q--) {
        if (!(sc[q] >= threshold) || lb[q] < 0)
            continue;
        st = vp_batch_unproject(&it, (int)size, mk + q * mh * mw, (int)mh, (int)mw, bin);
        if (st)
            break;
        char label[96];
        const char *name = names && (uint32_t)lb[q] < vp_dataset_classes(names)
                               ? vp_dataset_category_name(names, (uint32_t)lb[q])
                               : NULL;
        if (name)
            snprintf(label, sizeof label, "%.60s %.2f", name, (double)sc[q]);
        else
            snprintf(label, sizeof label, "class %d %.2f", (int)lb[q], (double)sc[q]);
        for (int y = 0; big && y < cv.h; y++)
            for (int x = 0; x < cv.w; x++)
                big[(size_t)y * cv.w + x] = bin[(size_t)(y / f) * im.w + x / f];
        vp_draw_instance(&cv, big ? big : bin, vp_palette((uint32_t)q), label);
        (*drawn)++;
    }
    if (!st)
        st = vp_canvas_write_png(&cv, png_path);
    vp_canvas_free(&cv);
    vp_image_free(&im);
    free(big);
    free(bin);
    free(lb);
    free(mk);
    free(sc);
    free(px);
    return st;
}
