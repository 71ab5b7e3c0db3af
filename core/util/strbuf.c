/*
 * The growing string of strbuf.h: doubling capacity, always NUL-terminated.
 */
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "util/strbuf.h"

void vp_strbuf_add(vp_strbuf *b, const char *s, size_t n)
{
    if (b->oom)
        return;
    if (!b->p || b->len + n + 1 > b->cap) {
        size_t cap = b->cap ? b->cap : 64;
        while (cap < b->len + n + 1)
            cap *= 2;
        char *p = realloc(b->p, cap);
        if (!p) {
            b->oom = true;
            return;
        }
        b->p = p;
        b->cap = cap;
    }
    memcpy(b->p + b->len, s, n);
    b->len += n;
    b->p[b->len] = '\0';
}

void vp_strbuf_str(vp_strbuf *b, const char *s) { vp_strbuf_add(b, s, strlen(s)); }

char *vp_strbuf_done(vp_strbuf *b)
{
    if (!b->oom && !b->p)
        vp_strbuf_add(b, "", 0);
    if (b->oom) {
        free(b->p);
        b->p = NULL;
        return NULL;
    }
    return b->p;
}

void vp_strbuf_printf(vp_strbuf *b, const char *fmt, ...)
{
    char small[512];
    va_list ap;
    va_start(ap, fmt);
    int n = vsnprintf(small, sizeof small, fmt, ap);
    va_end(ap);
    if (n < 0)
        return;
    if ((size_t)n < sizeof small) {
        vp_strbuf_add(b, small, (size_t)n);
        return;
    }
    char *big = malloc((size_t)n + 1);
    if (!big) {
        b->oom = true;
        return;
    }
    va_start(ap, fmt);
    vsnprintf(big, (size_t)n + 1, fmt, ap);
    va_end(ap);
    vp_strbuf_add(b, big, (size_t)n);
    free(big);
}

void vp_strbuf_json(vp_strbuf *b, const char *s)
{
    vp_strbuf_add(b, "\"", 1);
    for (; *s; s++) {
        unsigned char c = (unsigned char)*s;
        if (c == '"' || c == '\\')
            vp_strbuf_printf(b, "\\%c", c);
        else if (c < 0x20)
            vp_strbuf_printf(b, "\\u%04x", c);
        else
            vp_strbuf_add(b, s, 1);
    }
    vp_strbuf_add(b, "\"", 1);
}
