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
#include <stdio.h>

#include <vpeft/status.h>

/* Replace path with the n bytes of data atomically. Errors name path. */
vp_status vp_file_write_atomic(const char *path, const void *data, size_t n);
/* mkdir -p: dir and any missing parents (mode 0755). An existing
 * non-directory is an error naming it. */
vp_status vp_mkdir_p(const char *dir);
/* Open path for reading, refusing anything but a regular file (or a link to
 * one) without blocking on it: the open is O_RDONLY|O_NONBLOCK|O_CLOEXEC, so
 * a FIFO or a device does not wait for a writer, fstat on that same
 * descriptor must say S_ISREG, and only then is O_NONBLOCK cleared. Every
 * reader of a user-named file goes through here. On success *fd is the
 * caller's to close; on failure *fd is -1 and the error is one line naming
 * path: "PATH: cannot read: <strerror>" (VP_ERR_NOT_FOUND for a missing
 * file, else VP_ERR_IO; errno keeps open's value) or "PATH: not a regular
 * file" (VP_ERR_INVALID). */
vp_status vp_file_open_read(const char *path, int *fd);
/* vp_file_open_read as a stdio stream ("rb"): *f is the caller's to fclose,
 * NULL on failure. */
vp_status vp_file_fopen_read(const char *path, FILE **f);
/* The whole file into a malloc'd buffer with a NUL after it (*n: its size
 * without the NUL). A non-regular file is refused (vp_file_open_read).
 * Errors name path. */
vp_status vp_file_read(const char *path, char **data, size_t *n);

#endif
