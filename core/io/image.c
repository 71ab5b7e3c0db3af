/*
 * PNG and JPEG decoding through stb_image (Debian's libstb), and the two
 * steps between a decoded image and a model's input: resizing and
 * per-channel normalization (image.h).
 */
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <stb_image.h>

#include "io/image.h"
#include "util/error.h"

/* Larger images are refused rather than decoded: 16k x 16k RGB floats are
 * already 3 GiB. */
#define VP_IMAGE_MAX_SIDE 16384

vp_status vp_image_load(const char *path, vp_image *out)
{
    memset(out, 0, sizeof *out);
    FILE *f = fopen(path, "rb");
    if (!f)
        return vp_error_set(VP_ERR_IO, "%s: cannot read: %s", path, strerror(errno));
    int w, h, c;
    unsigned char *px = stbi_load_from_file(f, &w, &h, &c, 3);
    fclose(f);
    if (!px)
        return vp_error_set(VP_ERR_FORMAT, "%s: not a PNG or JPEG image stb_image can decode (%s)",
                            path, stbi_failure_reason());
    if (w > VP_IMAGE_MAX_SIDE || h > VP_IMAGE_MAX_SIDE) {
        stbi_image_free(px);
        return vp_error_set(VP_ERR_INVALID, "%s: %dx%d pixels, vpeft reads images up to %d on a "
                            "side", path, w, h, VP_IMAGE_MAX_SIDE);
    }
    size_t n = (size_t)w * (size_t)h;
    out->data = malloc(3 * n * sizeof *out->data);
    if (!out->data) {
        stbi_image_free(px);
        return vp_error_set(VP_ERR_NOMEM, "%s: out of host memory for %dx%d pixels", path, w, h);
    }
    for (size_t i = 0; i < n; i++)
        for (int ch = 0; ch < 3; ch++)
            out->data[ch * n + i] = px[3 * i + (size_t)ch] / 255.0f;
    stbi_image_free(px);
    out->w = w;
    out->h = h;
    return VP_OK;
}

void vp_image_free(vp_image *img)
{
    if (img) {
        free(img->data);
        memset(img, 0, sizeof *img);
    }
}

vp_status vp_image_resize(vp_image *img, int h, int w)
{
    if (h < 1 || w < 1 || h > VP_IMAGE_MAX_SIDE || w > VP_IMAGE_MAX_SIDE)
        return vp_error_set(VP_ERR_INVALID, "resize to %dx%d: sizes must be 1 to %d", w, h,
                            VP_IMAGE_MAX_SIDE);
    if (h == img->h && w == img->w)
        return VP_OK;
    float *out = malloc((size_t)3 * (size_t)h * (size_t)w * sizeof *out);
    if (!out)
        return vp_error_set(VP_ERR_NOMEM, "out of host memory resizing to %dx%d", w, h);
    double sy = (double)img->h / h, sx = (double)img->w / w;
    for (int y = 0; y < h; y++) {
        /* Source coordinate of the output pixel's centre, clamped at 0. */
        double fy = (y + 0.5) * sy - 0.5;
        fy = fy < 0 ? 0 : fy;
        int y0 = (int)fy, y1 = y0 + 1 < img->h ? y0 + 1 : y0;
        double ly = fy - y0;
        for (int x = 0; x < w; x++) {
            double fx = (x + 0.5) * sx - 0.5;
            fx = fx < 0 ? 0 : fx;
            int x0 = (int)fx, x1 = x0 + 1 < img->w ? x0 + 1 : x0;
            double lx = fx - x0;
            for (int c = 0; c < 3; c++) {
                const float *p = img->data + (size_t)c * img->h * img->w;
                double v = (1 - ly) * ((1 - lx) * p[y0 * img->w + x0] + lx * p[y0 * img->w + x1]) +
                           ly * ((1 - lx) * p[y1 * img->w + x0] + lx * p[y1 * img->w + x1]);
                out[((size_t)c * h + y) * w + x] = (float)v;
            }
        }
    }
    free(img->data);
    img->data = out;
    img->h = h;
    img->w = w;
    return VP_OK;
}

void vp_image_normalize(vp_image *img, const float mean[3], const float std[3])
{
    size_t n = (size_t)img->w * img->h;
    for (int c = 0; c < 3; c++)
        for (size_t i = 0; i < n; i++)
            img->data[c * n + i] = (img->data[c * n + i] - mean[c]) / std[c];
}
