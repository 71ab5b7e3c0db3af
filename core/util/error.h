/*
 * Status strings and the per-thread last-error message.
 *
 * Every fallible core call returns a vp_status; on failure it has already
 * written a one-line message with the context (file, key, tensor) through
 * vp_error_set(), which the caller may print or extend with vp_error_wrap().
 */
#ifndef VP_UTIL_ERROR_H
#define VP_UTIL_ERROR_H

#include <vpeft/status.h>

#if defined(__GNUC__)
#define VP_PRINTF(f, a) __attribute__((format(printf, f, a)))
#else
#define VP_PRINTF(f, a)
#endif

/* Short name of a status ("invalid argument", ...). Never NULL, static. */
const char *vp_status_str(vp_status st);

/* Store a message for the calling thread and return st, so that callers can
 * write `return vp_error_set(VP_ERR_IO, "%s: %s", path, strerror(errno));`. */
vp_status vp_error_set(vp_status st, const char *fmt, ...) VP_PRINTF(2, 3);

/* Prefix the current message with more context ("loading x: <old message>")
 * and return st. */
vp_status vp_error_wrap(vp_status st, const char *fmt, ...) VP_PRINTF(2, 3);

/* The calling thread's last message; "" when none. Valid until the next
 * vp_error_set/vp_error_wrap/vp_error_clear on the same thread. */
const char *vp_error_last(void);

void vp_error_clear(void);

/* Programmer errors only (never bad input): print and abort. */
#define VP_ASSERT(x)                                                           \
    do {                                                                       \
        if (!(x))                                                              \
            vp_assert_fail(#x, __FILE__, __LINE__);                            \
    } while (0)
_Noreturn void vp_assert_fail(const char *expr, const char *file, int line);

#endif
