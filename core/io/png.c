/*
 * PNG encoding through stb_image_write, written atomically (png.h).
 */
#include <stdlib.h>
#include <string.h>

#include "io/png.h"
#include "io/stbi.h"
#include "util/error.h"
#include "util/file.h"

typedef struct sink {
    unsigned char *p;
    size_t n, cap;
    int failed;
} sink;

static void put(void *ctx, void *data, int size)
{
    sink *s = ctx;
    if (s->failed || size <= 0)
        return;
    if (s->n + (size_t)size > s->cap) {
        size_t cap = s->cap ? s->cap : 1 << 16;
        while (cap < s->n + (size_t)size)
            cap *= 2;
        unsigned char *p = realloc(s->p, cap);
        if (!p) {
            s->failed = 1;
            return;
        }
        s->p = p;
        s->cap = cap;
    }
    memcpy(s->p + s->n, data, (size_t)size);
    s->n += (size_t)size;
}

vp_status vp_png_write(const char *path, int w, int h, const uint8_t *rgb)
{
    if (w <= 0 || h <= 0 || w > 65535 || h > 65535)
        return vp_error_set(VP_ERR_INVALID, "%s: cannot write a %dx%d picture", path, w, h);
    sink s = {0};
    if (!stbi_write_png_to_func(put, &s, w, h, 3, rgb, 3 * w) || s.failed) {
        free(s.p);
        return vp_error_set(VP_ERR_NOMEM, "%s: PNG encoding failed (out of memory)", path);
    }
    vp_status st = vp_file_write_atomic(path, s.p, s.n);
    free(s.p);
    return st;
}
