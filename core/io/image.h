/*
 * Images in: PNG and JPEG files decoded by stb_image into float RGB planes,
 * resized and normalized the way vision models expect their pixel_values.
 *
 *     vp_image img;
 *     vp_image_load("cat.png", &img);                 // (3, h, w), values in [0, 1]
 *     vp_image_resize(&img, 224, 224);                // bilinear, align_corners=False
 *     vp_image_normalize(&img, (float[3]){0.5f, 0.5f, 0.5f}, (float[3]){0.5f, 0.5f, 0.5f});
 *     ... img.data is (3, 224, 224) ...
 *     vp_image_free(&img);
 */
#ifndef VP_IO_IMAGE_H
#define VP_IO_IMAGE_H

#include <stdint.h>

#include <vpeft/status.h>

typedef struct vp_image {
    int w, h;
    float *data; /* 3 planes of h * w: R, G, B */
} vp_image;

/* Decode path (PNG or JPEG; grey and alpha become RGB). Errors name the
 * file: unreadable, not an image stb_image decodes, too large. */
vp_status vp_image_load(const char *path, vp_image *out);
void vp_image_free(vp_image *img);
/* In place, bilinear as torch's interpolate(align_corners=False) without
 * antialiasing. */
vp_status vp_image_resize(vp_image *img, int h, int w);
/* (x - mean[c]) / std[c] per channel. */
void vp_image_normalize(vp_image *img, const float mean[3], const float std[3]);

#endif
