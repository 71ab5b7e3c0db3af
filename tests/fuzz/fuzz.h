/*
 * Shared by the libFuzzer targets in tests/fuzz/: most of vpeft's parsers
 * read files (mmap for safetensors, stdio for images and JSON), so each
 * target writes its input to one scratch file per process, in a tmpfs
 * (/dev/shm) when there is one, and hands the parser that path. The file
 * is removed at exit. Nothing here touches a Vulkan device.
 */
#ifndef VP_FUZZ_H
#define VP_FUZZ_H

#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "util/log.h"

static char vp_fuzz_dir[256];

static void vp_fuzz_cleanup(void)
{
    char cmd[300];
    if (vp_fuzz_dir[0]) {
        snprintf(cmd, sizeof cmd, "rm -rf '%s'", vp_fuzz_dir);
        if (system(cmd) != 0)
            fprintf(stderr, "fuzz: cannot remove %s\n", vp_fuzz_dir);
    }
}

/* The per-process scratch directory, created on first use. */
static inline const char *vp_fuzz_scratch(void)
{
    if (!vp_fuzz_dir[0]) {
        struct stat st;
        const char *base = stat("/dev/shm", &st) == 0 && S_ISDIR(st.st_mode) ? "/dev/shm" : NULL;
        if (!base)
            base = getenv("TMPDIR") ? getenv("TMPDIR") : "/tmp";
        snprintf(vp_fuzz_dir, sizeof vp_fuzz_dir, "%s/vpeft-fuzz.%ld", base, (long)getpid());
        if (mkdir(vp_fuzz_dir, 0700) != 0) {
            perror(vp_fuzz_dir);
            abort();
        }
        atexit(vp_fuzz_cleanup);
        /* Warnings for skipped items would flood the fuzzer's output. */
        vp_log_set_level(VP_LOG_ERROR);
    }
    return vp_fuzz_dir;
}

/* Write n bytes to <scratch>/name; returns the path (static storage). */
static inline const char *vp_fuzz_write(const char *name, const uint8_t *data, size_t n)
{
    static char path[512];
    snprintf(path, sizeof path, "%s/%s", vp_fuzz_scratch(), name);
    FILE *f = fopen(path, "wb");
    if (!f || (n && fwrite(data, 1, n, f) != n) || fclose(f) != 0) {
        perror(path);
        abort();
    }
    return path;
}

#endif
