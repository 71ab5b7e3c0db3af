/*
 * The growing string of strbuf.h: doubling capacity, always NUL-terminated.
 */
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
