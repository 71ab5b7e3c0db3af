/*
 * Fuzz target: image decoding (core/io/image.c over stb_image, which is
 * linked in instrumented: stb_image_impl.c): the input is the file. An
 * accepted image is also resized and normalized, as the data loader does.
 *
 * Images within vpeft's side limit (16384) but over 4096 x 4096 pixels are
 * skipped: their decode legitimately takes gigabytes (3 GiB of floats at
 * the limit), over libFuzzer's 2 GB malloc limit, and stb makes one of any
 * declared size from a 54-byte BMP or TGA, whose missing pixels it reads as
 * zeros. Headers beyond the side limit still go through: vp_image_load must
 * refuse them from the header, before anything is allocated.
 *
 * JPEG inputs are skipped: stb_image 2.27 (Debian 12's) reads out of bounds
 * in stbi__jpeg_huff_decode on crafted Huffman tables (this target found
 * it under ASan; the shipped library returns "bad huffman code" on the
 * inputs tried, see tests/fuzz/corpus/image/regress-jpeg-*), a bug of the
 * dependency that vpeft cannot fix from outside. docs/testing.md says so.
 */
#include <limits.h>

#include <stb_image.h>

#include "fuzz.h"

#include "io/image.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    if (size >= 2 && data[0] == 0xff && data[1] == 0xd8)
        return 0;
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
