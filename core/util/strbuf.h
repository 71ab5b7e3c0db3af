/*
 * A growing string for messages and headers built piece by piece. An
 * allocation failure marks the buffer and later appends do nothing, so a
 * sequence of appends needs one check at the end (vp_strbuf_done, or oom).
 *
 *     vp_strbuf b = {0};
 *     vp_strbuf_str(&b, "peft");
 *     vp_strbuf_add(&b, "[0]", 3);
 *     char *s = vp_strbuf_done(&b);    // malloc'd, or NULL when out of memory
 */
#ifndef VP_UTIL_STRBUF_H
#define VP_UTIL_STRBUF_H

#include <stdbool.h>
#include <stddef.h>

#include "util/error.h" /* VP_PRINTF */

typedef struct vp_strbuf {
    char *p;      /* NUL-terminated once anything was added */
    size_t len, cap;
    bool oom;
} vp_strbuf;

void vp_strbuf_add(vp_strbuf *b, const char *s, size_t n);
void vp_strbuf_str(vp_strbuf *b, const char *s);
/* The string (the caller's to free; "" when nothing was added), or NULL,
 * with the buffer freed, when an append failed. */
char *vp_strbuf_done(vp_strbuf *b);
/* printf into the buffer. */
void vp_strbuf_printf(vp_strbuf *b, const char *fmt, ...) VP_PRINTF(2, 3);
/* s as a JSON string literal: quoted, with '"', '\\' and control
 * characters escaped. */
void vp_strbuf_json(vp_strbuf *b, const char *s);

#endif
