/*
 * Polygon rasterization for COCO ground truth (cocoeval.h), with the
 * semantics of pycocotools' rleFrPoly so that evaluation scores the same
 * pixels: the vertices are scaled by 5 and rounded, each edge is walked
 * one upsampled step at a time, and wherever the walk crosses a pixel
 * column center the first pixel center below the crossing toggles the
 * mask; the toggles, sorted in column-major order, are the RLE runs.
 */
#include <math.h>
#include <stdlib.h>

#include "eval/cocoeval.h"
#include "util/error.h"

static int cmp_u32(const void *a, const void *b)
{
    uint32_t x = *(const uint32_t *)a, y = *(const uint32_t *)b;
    return (x > y) - (x < y);
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
    for (size_t j = 0; j < 2 * k; j++)
        if (!(fabs(xy[j]) <= 1e6))
            return vp_error_set(VP_ERR_INVALID, "polygon: coordinate %zu (%g) is not within +-1e6",
                                j, xy[j]);
    int *x = malloc((k + 1) * sizeof *x), *y = malloc((k + 1) * sizeof *y);
    int *u = NULL, *v = NULL;
    uint32_t *a = NULL, *b = NULL;
    vp_status st = VP_OK;
    if (!x || !y)
        goto nomem;
    /* (int)(... + .5) truncates toward zero, as maskApi.c's cast does. */
    for (size_t j = 0; j < k; j++) {
        x[j] = (int)(scale * xy[2 * j] + .5);
        y[j] = (int)(scale * xy[2 * j + 1] + .5);
    }
    x[k] = x[0];
    y[k] = y[0];
    size_t m = 0;
    for (size_t j = 0; j < k; j++) {
        int dx = abs(x[j] - x[j + 1]), dy = abs(y[j] - y[j + 1]);
        m += (size_t)(dx > dy ? dx : dy) + 1;
    }
    u = malloc(m * sizeof *u);
    v = malloc(m * sizeof *v);
    if (!u || !v)
        goto nomem;
    m = 0;
    for (size_t j = 0; j < k; j++) {
        int xs = x[j], xe = x[j + 1], ys = y[j], ye = y[j + 1];
        int dx = abs(xe - xs), dy = abs(ys - ye), t;
        int flip = (dx >= dy && xs > xe) || (dx < dy && ys > ye);
        if (flip) {
            t = xs, xs = xe, xe = t;
            t = ys, ys = ye, ye = t;
        }
        double s = dx >= dy ? (double)(ye - ys) / dx : (double)(xe - xs) / dy;
        if (dx >= dy)
            for (int d = 0; d <= dx; d++) {
                t = flip ? dx - d : d;
                u[m] = t + xs;
                v[m] = (int)(ys + s * t + .5);
                m++;
            }
        else
            for (int d = 0; d <= dy; d++) {
                t = flip ? dy - d : d;
                v[m] = t + ys;
                u[m] = (int)(xs + s * t + .5);
                m++;
            }
    }
    /* Crossings of pixel-column centers, down-sampled; a[] holds their
     * column-major positions, then h * w as the end. */
    a = malloc((m + 1) * sizeof *a);
    if (!a)
        goto nomem;
    size_t na = 0;
    for (size_t j = 1; j < m; j++) {
        if (u[j] == u[j - 1])
            continue;
        double xd = (double)(u[j] < u[j - 1] ? u[j] : u[j] - 1);
        xd = (xd + .5) / scale - .5;
        if (floor(xd) != xd || xd < 0 || xd > (double)(w - 1))
            continue;
        double yd = (double)(v[j] < v[j - 1] ? v[j] : v[j - 1]);
        yd = (yd + .5) / scale - .5;
        if (yd < 0)
            yd = 0;
        else if (yd > (double)h)
            yd = (double)h;
        yd = ceil(yd);
        a[na++] = (uint32_t)((int64_t)xd * h + (int64_t)yd);
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
    free(u);
    free(v);
    free(a);
    free(b);
    return st;
}
