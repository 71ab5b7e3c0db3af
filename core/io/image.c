/*
 * PNG and JPEG decoding through stb_image (vendored, io/stbi.h), and the two
 * steps between a decoded image and a model's input: resizing and
 * per-channel normalization (image.h).
 */
#include <errno.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "io/stbi.h"

#include "io/image.h"
#include "util/error.h"
#include "util/file.h"

/* Larger images are refused rather than decoded: 16k x 16k RGB floats are
 * already 3 GiB; and so is more than 64 Mpixels in all (8192 x 8192), which
 * a 54-byte BMP header could otherwise declare. */
#define VP_IMAGE_MAX_SIDE 16384
#define VP_IMAGE_MAX_PIXELS ((int64_t)1 << 26)

static uint32_t be32(const unsigned char *p)
{
    return (uint32_t)p[0] << 24 | (uint32_t)p[1] << 16 | (uint32_t)p[2] << 8 | p[3];
}

/* A PNG's chunks must lie inside the file: stb_image allocates what an
 * IDAT chunk's length field claims before reading it (found by
 * tests/fuzz/fuzz_image: a 100-byte PNG claiming gigabytes). Sets *w and *h
 * from the IHDR chunk, which must come first (0 x 0 when it does not: stb
 * then refuses the file). f is at the start; it is left there. */
static bool png_chunks_fit(FILE *f, uint32_t *w, uint32_t *h)
{
    *w = *h = 0;
    if (fseek(f, 0, SEEK_END))
        return false;
    long size = ftell(f);
    long at = 8; /* after the signature */
    bool ok = size >= 8;
    while (ok && at < size) {
        unsigned char hd[8];
        if (fseek(f, at, SEEK_SET) || fread(hd, 1, 8, f) != 8) {
            ok = false;
            break;
        }
        uint32_t len = be32(hd);
        if ((uint64_t)len + 12 > (uint64_t)(size - at)) {
            ok = false;
            break;
        }
        unsigned char ihdr[8];
        if (at == 8 && len == 13 && !memcmp(hd + 4, "IHDR", 4) && fread(ihdr, 1, 8, f) == 8) {
            *w = be32(ihdr);
            *h = be32(ihdr + 4);
        }
        at += 12 + (long)len;
        if (!memcmp(hd + 4, "IEND", 4))
            break;
    }
    rewind(f);
    return ok;
}

vp_status vp_image_load(const char *path, vp_image *out)
{
    memset(out, 0, sizeof *out);
    FILE *f;
    vp_status st = vp_file_fopen_read(path, &f);
    if (st)
        return st;
    /* PNG and JPEG only (docs/data.md), by their signatures, before stb
     * (built with those two decoders only) sees the file. */
    unsigned char sig[8] = {0};
    size_t got = fread(sig, 1, sizeof sig, f);
    rewind(f);
    bool png = got == 8 && !memcmp(sig, "\x89PNG\r\n\x1a\n", 8);
    bool jpeg = got >= 3 && sig[0] == 0xff && sig[1] == 0xd8 && sig[2] == 0xff;
    if (!png && !jpeg) {
        fclose(f);
        return vp_error_set(VP_ERR_FORMAT, "%s: not a PNG or JPEG image", path);
    }
    /* The header's size first: a small file may declare gigabytes. A PNG's
     * is read here (stb_image 2.30's stbi_info scans past IHDR to the first
     * IDAT and fails on a file cut short after its header); a JPEG's SOF
     * through stbi_info. */
    int64_t hw = 0, hh = 0;
    int w = 0, h = 0, c;
    if (png) {
        uint32_t pw, ph;
        if (!png_chunks_fit(f, &pw, &ph)) {
            fclose(f);
            return vp_error_set(VP_ERR_FORMAT, "%s: a corrupt PNG (a chunk runs past the end of "
                                "the file)", path);
        }
        hw = pw;
        hh = ph;
    } else if (stbi_info_from_file(f, &w, &h, &c)) {
        hw = w;
        hh = h;
    }
    if (hw > VP_IMAGE_MAX_SIDE || hh > VP_IMAGE_MAX_SIDE) {
        fclose(f);
        return vp_error_set(VP_ERR_INVALID, "%s: %lldx%lld pixels, vpeft reads images up to %d "
                            "on a side", path, (long long)hw, (long long)hh, VP_IMAGE_MAX_SIDE);
    }
    if (hw * hh > VP_IMAGE_MAX_PIXELS) {
        fclose(f);
        return vp_error_set(VP_ERR_INVALID, "%s: %lldx%lld pixels, vpeft reads images of up to "
                            "%lld pixels (8192 x 8192)", path, (long long)hw, (long long)hh,
                            (long long)VP_IMAGE_MAX_PIXELS);
    }
    unsigned char *px = stbi_load_from_file(f, &w, &h, &c, 3);
    fclose(f);
    if (!px && !strcmp(stbi_failure_reason(), "too large")) /* refused from its header */
        return vp_error_set(VP_ERR_INVALID, "%s: too large for stb_image to decode (vpeft reads "
                            "images up to %d on a side)", path, VP_IMAGE_MAX_SIDE);
    if (!px)
        return vp_error_set(VP_ERR_FORMAT, "%s: not a PNG or JPEG image stb_image can decode (%s)",
                            path, stbi_failure_reason());
    if (w > VP_IMAGE_MAX_SIDE || h > VP_IMAGE_MAX_SIDE) {
        stbi_image_free(px);
        return vp_error_set(VP_ERR_INVALID, "%s: %dx%d pixels, vpeft reads images up to %d on a "
                            "side", path, w, h, VP_IMAGE_MAX_SIDE);
    }
    /* stb_image 2.27 decoded a BMP whose header said width 0 as a 0 x h
     * image (found by tests/fuzz/fuzz_image): resizing it read out of
     * bounds. No decoder left here should return one; this stays the check. */
    if (w < 1 || h < 1) {
        stbi_image_free(px);
        return vp_error_set(VP_ERR_FORMAT, "%s: an empty image (%dx%d pixels)", path, w, h);
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
