/*
 * Leveled logging to stderr. The level comes from VPEFT_LOG once, on first
 * use, unless vp_log_set_level() was called first.
 */
#include "util/log.h"

#include <stdarg.h>
#include <stdio.h>
#include <strings.h>
#include <stdlib.h>

static int level = -1;

vp_log_level vp_log_get_level(void)
{
    if (level < 0) {
        const char *s = getenv("VPEFT_LOG");
        level = VP_LOG_INFO;
        if (s && !strcasecmp(s, "debug"))
            level = VP_LOG_DEBUG;
        else if (s && !strcasecmp(s, "warn"))
            level = VP_LOG_WARN;
        else if (s && !strcasecmp(s, "error"))
            level = VP_LOG_ERROR;
    }
    return (vp_log_level)level;
}

void vp_log_set_level(vp_log_level l) { level = (int)l; }

void vp_log(vp_log_level l, const char *fmt, ...)
{
    static const char *const tag[] = {"debug: ", "", "warning: ", "error: "};
    if (l < vp_log_get_level())
        return;
    char line[2048];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(line, sizeof line, fmt, ap);
    va_end(ap);
    fprintf(stderr, "vpeft: %s%s\n", tag[l], line);
}
