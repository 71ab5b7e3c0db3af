/*
 * Polygon rasterization for COCO ground truth (cocoeval.h), with the
 * semantics of pycocotools' rleFrPoly so that evaluation scores the same
 * pixels: the vertices are scaled by 5 and rounded, each edge is walked
 * one upsampled step at a time, and wherever the walk crosses a pixel
 * column center the first pixel center below the crossing toggles the
 * mask; the toggles, sorted in column-major order, are the RLE runs.
 */
#include <math.h>
#include <stdbool.h>
#include <stdlib.h>

#include "eval/cocoeval.h"
#include "util/error.h"

static int cmp_u32(const void *a, const void *b)
{
    uint32_t x = *(const uint32_t *)a, y = *(const uint32_t *)b;
    return (x > y) - (x < y);
}

/* The crossing between two consecutive walk points, if any, appended to
 * *a (column-major position of the first pixel centre below it). */
static bool crossing(int u0, int v0, int u1, int v1, double scale, int64_t h, int64_t w,
                     uint32_t **a, size_t *na, size_t *cap)
{
    if (u1 == u0)
        return true;
    double xd = (double)(u1 < u0 ? u1 : u1 - 1);
    xd = (xd + .5) / scale - .5;
    if (floor(xd) != xd || xd < 0 || xd > (double)(w - 1))
        return true;
    double yd = (double)(v1 < v0 ? v1 : v0);
    yd = (yd + .5) / scale - .5;
    if (yd < 0)
        yd = 0;
    else if (yd > (double)h)
        yd = (double)h;
    yd = ceil(yd);
    if (*na + 1 >= *cap) {
        uint32_t *g = realloc(*a, 2 * *cap * sizeof *g);
        if (!g)
            return false;
        *a = g;
        *cap *= 2;
    }
    (*a)[(*na)++] = (uint32_t)((int64_t)xd * h + (int64_t)yd);
    return true;
}

vp_status vp_coco_poly_to_rle(const double *xy, size_t k, int64_t h, int64_t w, vp_rle *out)
{
    const double scale = 5;
    out->counts = NULL;
    out->n = 0;
    if (h < 0 || w < 0 || (uint64_t)h * (uint64_t)w > UINT32_MAX)
        return vp_error_set(VP_ERR_INVALID, "polygon: a %lld x %lld image is too large",
                            (long long)h, (long long)w);
    if (k == 0)
        return vp_error_set(VP_ERR_INVALID, "polygon: no points");
    /* Within the image, with a margin of its larger side: what lies
     * further out is clipped anyway, and the walk below is as long as the
     * coordinates' range. */
    double margin = (double)(h > w ? h : w);
    for (size_t j = 0; j < 2 * k; j++) {
        double side = (double)(j % 2 ? h : w);
        if (!(xy[j] >= -margin && xy[j] <= side + margin && fabs(xy[j]) <= 1e6))
            return vp_error_set(VP_ERR_INVALID, "polygon: coordinate %zu (%g) is not within the "
                                "%lld x %lld image's margin (%g to %g)", j, xy[j], (long long)h,
                                (long long)w, fmax(-margin, -1e6), fmin(side + margin, 1e6));
    }
    int *x = malloc((k + 1) * sizeof *x), *y = malloc((k + 1) * sizeof *y);
    size_t cap = 64, na = 0;
    uint32_t *a = malloc(cap * sizeof *a), *b = NULL;
    vp_status st = VP_OK;
    if (!x || !y || !a)
        goto nomem;
    /* (int)(... + .5) truncates toward zero, as maskApi.c's cast does. */
    for (size_t j = 0; j < k; j++) {
        x[j] = (int)(scale * xy[2 * j] + .5);
        y[j] = (int)(scale * xy[2 * j + 1] + .5);
    }
    x[k] = x[0];
    y[k] = y[0];
    /* Walk each edge one upsampled step at a time; the crossings of pixel
     * column centres between consecutive points, down-sampled, go to a[]
     * (then h * w as the end). The points themselves are not kept: there
     * are as many as the coordinates' range, the crossings at most one per
     * pixel column an edge passes inside the image. */
    int pu = 0, pv = 0;
    bool first = true;
    for (size_t j = 0; j < k; j++) {
        int xs = x[j], xe = x[j + 1], ys = y[j], ye = y[j + 1];
        int dx = abs(xe - xs), dy = abs(ys - ye), t;
        int flip = (dx >= dy && xs > xe) || (dx < dy && ys > ye);
        if (flip) {
            t = xs, xs = xe, xe = t;
            t = ys, ys = ye, ye = t;
        }
        /* A repeated point (dx = dy = 0) is 0 / 0 in maskApi.c, a NaN whose
         * (int) is undefined; its one sample shares u with both neighbours,
         * so no crossing ever reads its v: s = 0 gives the same mask. */
        double s = dx == 0 && dy == 0 ? 0
                   : dx >= dy       ? (double)(ye - ys) / dx
                                    : (double)(xe - xs) / dy;
        int n = dx >= dy ? dx : dy;
        for (int d = 0; d <= n; d++) {
            t = flip ? n - d : d;
            int u, v;
            if (dx >= dy) {
                u = t + xs;
                v = (int)(ys + s * t + .5);
            } else {
                v = t + ys;
                u = (int)(xs + s * t + .5);
            }
            if (!first && !crossing(pu, pv, u, v, scale, h, w, &a, &na, &cap))
                goto nomem;
            first = false;
            pu = u;
            pv = v;
        }
    }
    a[na++] = (uint32_t)(h * w);
    qsort(a, na, sizeof *a, cmp_u32);
    uint32_t p = 0;
    for (size_t j = 0; j < na; j++) {
        uint32_t t = a[j];
        a[j] -= p;
        p = t;
    }
    /* A zero run joins its neighbours: two toggles at one pixel cancel. */
    b = malloc(na * sizeof *b);
    if (!b)
        goto nomem;
    size_t nb = 0, j = 0;
    b[nb++] = a[j++];
    while (j < na) {
        if (a[j] > 0) {
            b[nb++] = a[j++];
        } else {
            j++;
            if (j < na)
                b[nb - 1] += a[j++];
        }
    }
    st = vp_rle_from_counts(b, nb, h, w, out);
    goto done;
nomem:
    st = vp_error_set(VP_ERR_NOMEM, "polygon: out of host memory");
done:
    free(x);
    free(y);
    free(a);
    free(b);
    return st;
}
