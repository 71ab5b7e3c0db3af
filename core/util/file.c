/*
 * Atomic whole-file writes, mkdir -p, and the one way user-named files are
 * opened for reading: regular files only, checked without blocking (file.h).
 */
#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "util/error.h"
#include "util/file.h"

static int write_all(int fd, const void *data, size_t n)
{
    const char *p = data;
    while (n) {
        ssize_t w = write(fd, p, n);
        if (w < 0 && errno == EINTR)
            continue;
        if (w <= 0)
            return w < 0 ? errno : EIO;
        p += w;
        n -= (size_t)w;
    }
    return 0;
}

vp_status vp_file_write_atomic(const char *path, const void *data, size_t n)
{
    const char *slash = strrchr(path, '/');
    size_t dlen = slash ? (size_t)(slash - path) + 1 : 0;
    size_t tlen = strlen(path) + 64;
    char *tmp = malloc(tlen);
    if (!tmp)
        return vp_error_set(VP_ERR_NOMEM, "%s: out of memory", path);
    /* .<name>.tmp.<pid>.<k> next to path, created exclusively */
    int fd = -1;
    for (int k = 0; k < 100 && fd < 0; k++) {
        snprintf(tmp, tlen, "%.*s.%s.tmp.%ld.%d", (int)dlen, path, path + dlen, (long)getpid(), k);
        fd = open(tmp, O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC, 0666);
        if (fd < 0 && errno != EEXIST)
            break;
    }
    if (fd < 0) {
        vp_status st = vp_error_set(VP_ERR_IO, "%s: cannot create a temporary file next to it: %s",
                                    path, strerror(errno));
        free(tmp);
        return st;
    }
    int err = write_all(fd, data, n);
    if (!err && fsync(fd))
        err = errno;
    if (close(fd) && !err)
        err = errno;
    if (!err && rename(tmp, path))
        err = errno;
    if (err) {
        unlink(tmp);
        free(tmp);
        return vp_error_set(VP_ERR_IO, "%s: cannot write: %s", path, strerror(err));
    }
    free(tmp);
    /* make the rename itself durable */
    char dir[PATH_MAX];
    snprintf(dir, sizeof dir, "%.*s", dlen ? (int)dlen : 1, dlen ? path : ".");
    int dfd = open(dir, O_RDONLY | O_CLOEXEC);
    if (dfd >= 0) {
        fsync(dfd);
        close(dfd);
    }
    return VP_OK;
}

vp_status vp_mkdir_p(const char *dir)
{
    char buf[PATH_MAX];
    size_t n = strlen(dir);
    if (!n || n >= sizeof buf)
        return vp_error_set(VP_ERR_INVALID, "%.64s: not a usable directory path", dir);
    memcpy(buf, dir, n + 1);
    for (size_t i = 1; i <= n; i++) {
        if (buf[i] != '/' && buf[i] != '\0')
            continue;
        char c = buf[i];
        buf[i] = '\0';
        if (mkdir(buf, 0755) && errno != EEXIST) {
            vp_status st = vp_error_set(VP_ERR_IO, "%s: cannot create the directory: %s", buf,
                                        strerror(errno));
            return st;
        }
        buf[i] = c;
    }
    struct stat sb;
    if (stat(dir, &sb) || !S_ISDIR(sb.st_mode))
        return vp_error_set(VP_ERR_IO, "%s: not a directory", dir);
    return VP_OK;
}

vp_status vp_file_open_read(const char *path, int *fd)
{
    *fd = -1;
    int d = open(path, O_RDONLY | O_NONBLOCK | O_CLOEXEC);
    if (d < 0) {
        int e = errno;
        vp_status st = vp_error_set(e == ENOENT || e == ENOTDIR ? VP_ERR_NOT_FOUND : VP_ERR_IO,
                                    "%s: cannot read: %s", path, strerror(e));
        errno = e;
        return st;
    }
    struct stat sb;
    if (fstat(d, &sb) || !S_ISREG(sb.st_mode)) {
        close(d);
        return vp_error_set(VP_ERR_INVALID, "%s: not a regular file", path);
    }
    int fl = fcntl(d, F_GETFL);
    if (fl < 0 || fcntl(d, F_SETFL, fl & ~O_NONBLOCK) < 0) {
        int e = errno;
        close(d);
        vp_status st = vp_error_set(VP_ERR_IO, "%s: cannot read: %s", path, strerror(e));
        errno = e;
        return st;
    }
    *fd = d;
    return VP_OK;
}

vp_status vp_file_fopen_read(const char *path, FILE **f)
{
    int fd;
    vp_status st = vp_file_open_read(path, &fd);
    *f = NULL;
    if (st)
        return st;
    if (!(*f = fdopen(fd, "rb"))) {
        int e = errno;
        close(fd);
        return vp_error_set(VP_ERR_IO, "%s: cannot read: %s", path, strerror(e));
    }
    return VP_OK;
}

vp_status vp_file_read(const char *path, char **data, size_t *n)
{
    *data = NULL;
    *n = 0;
    FILE *f;
    vp_status st = vp_file_fopen_read(path, &f);
    if (st)
        return st;
    size_t cap = 1 << 16, len = 0;
    char *buf = malloc(cap + 1);
    while (buf) {
        size_t r = fread(buf + len, 1, cap - len, f);
        len += r;
        if (len < cap)
            break;
        char *nb = realloc(buf, 2 * cap + 1);
        if (!nb) {
            free(buf);
            buf = NULL;
            break;
        }
        buf = nb;
        cap *= 2;
    }
    int rerr = ferror(f);
    fclose(f);
    if (!buf)
        return vp_error_set(VP_ERR_NOMEM, "%s: out of memory", path);
    if (rerr) {
        free(buf);
        return vp_error_set(VP_ERR_IO, "%s: read error", path);
    }
    buf[len] = '\0';
    *data = buf;
    *n = len;
    return VP_OK;
}
