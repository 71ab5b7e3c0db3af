/*
 * Fuzz target: image decoding (core/io/image.c over the vendored stb_image,
 * core/io/stb_image.c, compiled into the fuzz library with the rest of
 * core/io, so the decoder carries the coverage instrumentation and ASan's
 * and UBSan's checks): the input is the file. An accepted image is also
 * resized and normalized, as the data loader does.
 *
 * Images within vpeft's side limit (16384) but over 4096 x 4096 pixels are
 * skipped: their decode legitimately takes gigabytes (3 GiB of floats at
 * the limit), over libFuzzer's 2 GB malloc limit, and a short JPEG can
 * declare any size, its missing data decoded as grey. Headers beyond the
 * side limit still go through: vp_image_load must refuse them from the
 * header, before anything is allocated.
 */
#include <limits.h>

#include "fuzz.h"

#include "io/image.h"
#include "io/stbi.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    int w, h, c;
    if (size <= INT_MAX && stbi_info_from_memory(data, (int)size, &w, &h, &c) && w <= 16384 &&
        h <= 16384 && (int64_t)w * h > 4096 * 4096)
        return 0;
    const char *path = vp_fuzz_write("in.img", data, size);
    vp_image img;
    if (vp_image_load(path, &img) != VP_OK)
        return 0;
    if (vp_image_resize(&img, 7, 5) == VP_OK)
        vp_image_normalize(&img, (const float[3]){0.5f, 0.5f, 0.5f}, (const float[3]){0.2f, 0.3f, 0.4f});
    vp_image_free(&img);
    return 0;
}
