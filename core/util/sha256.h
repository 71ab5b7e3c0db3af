/*
 * SHA-256 (FIPS 180-4), for checksums that people verify with sha256sum:
 * the demo base model's provenance names its weights file's.
 *
 *     char hex[65];
 *     if (vp_sha256_file("model.safetensors", hex) == VP_OK)
 *         printf("%s\n", hex);
 */
#ifndef VP_UTIL_SHA256_H
#define VP_UTIL_SHA256_H

#include <stddef.h>
#include <stdint.h>

#include <vpeft/status.h>

typedef struct vp_sha256 {
    uint32_t h[8];
    uint64_t len;      /* bytes so far */
    uint8_t buf[64];
    size_t n;          /* bytes in buf */
} vp_sha256;

void vp_sha256_init(vp_sha256 *s);
void vp_sha256_update(vp_sha256 *s, const void *data, size_t n);
/* The digest as 64 lowercase hex digits and a NUL. */
void vp_sha256_hex(vp_sha256 *s, char out[65]);
/* A whole file's (a regular file; errors name it). */
vp_status vp_sha256_file(const char *path, char out[65]);

#endif
