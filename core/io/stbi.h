/*
 * vpeft's one way into stb_image and stb_image_write: the vendored
 * core/io/stb_image.h (v2.30) and stb_image_write.h (v1.16), both from
 * nothings/stb commit 31c1ad37, public domain or MIT, unmodified (sha256
 * 594c2fe3...4200b3 and cbd5f0ad...914a05), configured here for every file
 * that includes them, implemented once in stb_image.c.
 *
 * Vendored rather than Debian's libstb (2.27) because 2.27 reads out of
 * bounds in stbi__jpeg_huff_decode on crafted Huffman tables (found by
 * tests/fuzz/fuzz_image under ASan; 2.28 added the bounds check, along with
 * its other security fixes), and a distribution's copy cannot be fixed
 * from here. Only the PNG and JPEG decoders are compiled: vpeft reads no
 * other format, and the GIF, TGA and PSD decoders carry most of stb's later
 * advisories. The functions are hidden: libvpeft.so does not export them,
 * so an application's own stb_image never meets this one.
 */
#ifndef VP_IO_STBI_H
#define VP_IO_STBI_H

#define STBIDEF __attribute__((visibility("hidden"))) extern
#define STBIWDEF __attribute__((visibility("hidden"))) extern
#define STBI_WRITE_NO_STDIO /* png.c writes through its own sink */
#define STBI_ONLY_PNG
#define STBI_ONLY_JPEG
#define STBI_NO_LINEAR
#define STBI_NO_HDR
/* STBI_MAX_DIMENSIONS stays stb's 2^24: image.c checks its own, smaller
 * limits against the header stbi_info reads, which a lower value here would
 * make fail and so hide the size from the error message. */

#include "io/stb_image.h"
#include "io/stb_image_write.h"

#endif
