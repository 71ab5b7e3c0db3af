/*
 * Status strings and the per-thread last-error buffer. The core never exits
 * on bad input: it returns a status and leaves the story here.
 */
#include "util/error.h"

#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define VP_ERROR_MAX 1024

static _Thread_local char last_error[VP_ERROR_MAX];

const char *vp_status_str(vp_status st)
{
    switch (st) {
    case VP_OK: return "ok";
    case VP_ERR_INVALID: return "invalid argument";
    case VP_ERR_NOMEM: return "out of memory";
    case VP_ERR_IO: return "input/output error";
    case VP_ERR_VULKAN: return "Vulkan error";
    case VP_ERR_UNSUPPORTED: return "unsupported by the device";
    case VP_ERR_NOT_FOUND: return "not found";
    case VP_ERR_SHAPE: return "shape mismatch";
    case VP_ERR_ABI: return "ABI mismatch";
    case VP_ERR_FORMAT: return "malformed input";
    case VP_ERR_INTERNAL: return "internal error";
    case VP_ERR_CONFIG: return "invalid config";
    }
    return "unknown status";
}

vp_status vp_error_set(vp_status st, const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(last_error, sizeof last_error, fmt, ap);
    va_end(ap);
    return st;
}

/* Append src to dst (holding *len bytes) within VP_ERROR_MAX, truncating. */
static void append(char *dst, size_t *len, const char *src)
{
    size_t n = strlen(src);
    if (n > VP_ERROR_MAX - 1 - *len)
        n = VP_ERROR_MAX - 1 - *len;
    memcpy(dst + *len, src, n);
    *len += n;
    dst[*len] = '\0';
}

vp_status vp_error_wrap(vp_status st, const char *fmt, ...)
{
    char msg[VP_ERROR_MAX], old[VP_ERROR_MAX];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(msg, sizeof msg, fmt, ap);
    va_end(ap);
    memcpy(old, last_error, sizeof old);
    size_t len = strlen(msg);
    append(msg, &len, ": ");
    append(msg, &len, old[0] ? old : vp_status_str(st));
    memcpy(last_error, msg, len + 1);
    return st;
}

const char *vp_error_last(void) { return last_error; }

void vp_error_clear(void) { last_error[0] = '\0'; }

void vp_assert_fail(const char *expr, const char *file, int line)
{
    fprintf(stderr, "vpeft: internal error: %s:%d: assertion '%s' failed\n", file, line, expr);
    abort();
}
