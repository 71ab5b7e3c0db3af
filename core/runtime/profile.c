/*
 * Per-kernel GPU time, from the timestamps vp_cmd brackets each dispatch
 * with when VPEFT_PROFILE=1. The table is printed when the device is
 * destroyed: kernel, calls, total milliseconds, share of the total.
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "runtime/internal.h"
#include "util/array.h"

uint32_t vp_profile_row_for(vp_device *dev, const char *kernel)
{
    vp_profile *p = &dev->prof;
    for (uint32_t i = 0; i < p->n; i++)
        if (!strncmp(p->rows[i].kernel, kernel, sizeof p->rows[i].kernel - 1))
            return i;
    if (VP_RESERVE(p->rows, p->cap, p->n + 1))
        return UINT32_MAX; /* not timed; vp_profile_add ignores the row */
    p->rows[p->n] = (vp_profile_row){.calls = 0};
    snprintf(p->rows[p->n].kernel, sizeof p->rows[p->n].kernel, "%s", kernel);
    return p->n++;
}

void vp_profile_add(vp_device *dev, uint32_t row, double ms)
{
    if (row < dev->prof.n) {
        dev->prof.rows[row].calls++;
        dev->prof.rows[row].total_ms += ms;
    }
}

const vp_profile_row *vp_profile_rows(const vp_device *dev, uint32_t *n)
{
    *n = dev->profiling ? dev->prof.n : 0;
    return dev->profiling ? dev->prof.rows : NULL;
}

static int by_time(const void *a, const void *b)
{
    double x = ((const vp_profile_row *)a)->total_ms, y = ((const vp_profile_row *)b)->total_ms;
    return x < y ? 1 : x > y ? -1 : 0;
}

void vp_profile_print(const vp_device *dev, void *file)
{
    FILE *f = file;
    uint32_t n;
    const vp_profile_row *rows = vp_profile_rows(dev, &n);
    if (!rows)
        return;
    vp_profile_row *s = malloc((n ? n : 1) * sizeof *s);
    if (!s)
        return;
    memcpy(s, rows, n * sizeof *s);
    qsort(s, n, sizeof *s, by_time);
    double total = 0;
    for (uint32_t i = 0; i < n; i++)
        total += s[i].total_ms;
    fprintf(f, "vpeft: GPU time by kernel on %s\n", dev->info->name);
    fprintf(f, "%-24s %10s %12s %7s\n", "kernel", "calls", "total ms", "share");
    for (uint32_t i = 0; i < n; i++)
        fprintf(f, "%-24s %10llu %12.3f %6.1f%%\n", s[i].kernel, (unsigned long long)s[i].calls,
                s[i].total_ms, total > 0 ? 100.0 * s[i].total_ms / total : 0.0);
    fprintf(f, "%-24s %10s %12.3f %6.1f%%\n", "total", "", total, total > 0 ? 100.0 : 0.0);
    free(s);
}

void vp_profile_release(vp_device *dev)
{
    free(dev->prof.rows);
    memset(&dev->prof, 0, sizeof dev->prof);
}
