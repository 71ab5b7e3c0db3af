/*
 * Diagnostics to stderr with a level filter. VPEFT_LOG=debug|info|warn|error
 * sets the level (default info). Messages are single lines prefixed "vpeft:".
 */
#ifndef VP_UTIL_LOG_H
#define VP_UTIL_LOG_H

#include <vpeft/log.h>

#include "util/error.h"


void vp_log(vp_log_level level, const char *fmt, ...) VP_PRINTF(2, 3);
vp_log_level vp_log_get_level(void);
void vp_log_set_level(vp_log_level level);

#define vp_debug(...) vp_log(VP_LOG_DEBUG, __VA_ARGS__)
#define vp_info(...) vp_log(VP_LOG_INFO, __VA_ARGS__)
#define vp_warn(...) vp_log(VP_LOG_WARN, __VA_ARGS__)

#endif
