/*
 * Files written whole or not at all, and directories made with their
 * parents. Every writer of a result (checkpoints, adapter files, PNGs,
 * results JSON) goes through vp_file_write_atomic: a temporary file next
 * to the target, fsync, rename, then fsync of the directory, so a reader or
 * a process killed mid-write sees the old file or the new one, never half.
 *
 *     vp_file_write_atomic("out/results.json", text, strlen(text));
 */
#ifndef VP_UTIL_FILE_H
#define VP_UTIL_FILE_H

#include <stddef.h>

#include <vpeft/status.h>

/* Replace path with the n bytes of data atomically. Errors name path. */
vp_status vp_file_write_atomic(const char *path, const void *data, size_t n);
/* mkdir -p: dir and any missing parents (mode 0755). An existing
 * non-directory is an error naming it. */
vp_status vp_mkdir_p(const char *dir);
/* The whole file into a malloc'd buffer with a NUL after it (*n: its size
 * without the NUL). Errors name path. */
vp_status vp_file_read(const char *path, char **data, size_t *n);

#endif
