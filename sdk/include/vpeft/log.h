/*
 * vpeft/log.h - diagnostic levels.
 *
 *     H->log(VP_LOG_INFO, "ia3: %u sites", n);
 *
 * Messages go to stderr as one line each, prefixed "vpeft:"; VPEFT_LOG
 * (debug, info, warn, error) filters them. Levels are only ever appended.
 */
#ifndef VPEFT_LOG_H
#define VPEFT_LOG_H

#ifdef __cplusplus
extern "C" {
#endif

typedef enum vp_log_level {
    VP_LOG_DEBUG = 0,
    VP_LOG_INFO = 1,
    VP_LOG_WARN = 2,
    VP_LOG_ERROR = 3
} vp_log_level;

#ifdef __cplusplus
}
#endif

#endif /* VPEFT_LOG_H */
