/*
 * PNG out: 8-bit RGB pixels encoded by stb_image_write (vendored, io/stbi.h)
 * and written atomically (util/file.h), so a killed process never leaves a
 * truncated picture.
 *
 *     vp_png_write("out/0001.png", w, h, rgb);   // rgb: h rows of w RGB triples
 */
#ifndef VP_IO_PNG_H
#define VP_IO_PNG_H

#include <stdint.h>

#include <vpeft/status.h>

vp_status vp_png_write(const char *path, int w, int h, const uint8_t *rgb);

#endif
