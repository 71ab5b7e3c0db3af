/*
 * vpeft/status.h - the status codes every fallible call returns.
 *
 *     // in a plugin, through the host table (vpeft/host.h)
 *     vp_status st = H->cfg_int(cfg, "r", 8, &r);
 *     if (st != VP_OK)
 *         return st;  // the message already names the file and key
 *     if (r < 1)
 *         return H->error(VP_ERR_CONFIG, "ia3: r must be at least 1, got %lld", (long long)r);
 *
 * 0 is success, every error is negative. A call that fails also leaves a
 * one-line message naming the file, key or tensor at fault in the calling
 * thread's last-error buffer (a plugin reads it with H->last_error() and
 * sets it with H->error(); H->status_str() names a code).
 * Codes are only ever appended.
 */
#ifndef VPEFT_STATUS_H
#define VPEFT_STATUS_H

#ifdef __cplusplus
extern "C" {
#endif

typedef enum vp_status {
    VP_OK = 0,
    VP_ERR_INVALID = -1,     /* bad argument or bad input data */
    VP_ERR_NOMEM = -2,       /* host or device memory exhausted */
    VP_ERR_IO = -3,          /* a file could not be read or written */
    VP_ERR_VULKAN = -4,      /* a Vulkan call failed */
    VP_ERR_UNSUPPORTED = -5, /* the device lacks a required feature */
    VP_ERR_NOT_FOUND = -6,   /* no such device, file, plugin or key */
    VP_ERR_SHAPE = -7,       /* tensor shapes do not fit together */
    VP_ERR_ABI = -8,         /* plugin ABI mismatch (ABI 1.0) */
    VP_ERR_FORMAT = -9,      /* malformed file contents */
    VP_ERR_INTERNAL = -10,   /* a bug in vpeft: please report it */
    VP_ERR_CONFIG = -11      /* a config field is missing or invalid (ABI 1.0) */
} vp_status;

#ifdef __cplusplus
}
#endif

#endif /* VPEFT_STATUS_H */
