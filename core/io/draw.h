/*
 * Pictures for people: an image with predicted instances overlaid (vpeft
 * predict) and a labelled scatter chart (vpeft demo's AP against trainable
 * %). 8-bit RGB canvases, text from a built-in bitmap font, PNG out through
 * vp_png_write (atomic).
 *
 *     vp_canvas c;
 *     vp_canvas_from_image(&img, &c);                       // img: vp_image in [0, 1]
 *     vp_draw_instance(&c, mask, vp_palette(k), "circle 0.93");
 *     vp_canvas_write_png(&c, "out/0001.png");
 *     vp_canvas_free(&c);
 */
#ifndef VP_IO_DRAW_H
#define VP_IO_DRAW_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include <vpeft/status.h>

#include "io/image.h"

typedef struct vp_rgb {
    uint8_t r, g, b;
} vp_rgb;

typedef struct vp_canvas {
    int w, h;
    uint8_t *rgb; /* h rows of w RGB triples */
} vp_canvas;

/* A w x h canvas (sides 1..65535) filled with fill. *out owns its pixels
 * until vp_canvas_free; on failure *out is zeroed (freeing it is fine). */
vp_status vp_canvas_create(int w, int h, vp_rgb fill, vp_canvas *out);
/* From a decoded image (float planes in [0, 1], clamped). */
vp_status vp_canvas_from_image(const vp_image *img, vp_canvas *out);
void vp_canvas_free(vp_canvas *c);
vp_status vp_canvas_write_png(const vp_canvas *c, const char *path);

/* The k-th of a fixed palette of distinct, saturated colours (cycles). */
vp_rgb vp_palette(uint32_t k);

/* Blend colour over the pixels where mask (c->h * c->w bytes, nonzero:
 * inside) is set, at opacity alpha in [0, 1]: with a = round(255 alpha),
 * each channel becomes (old (255 - a) + colour a + 127) / 255 (integer
 * division), so a pixel's result is exact and reproducible. */
void vp_draw_mask(vp_canvas *c, const uint8_t *mask, vp_rgb colour, float alpha);
/* The mask's boundary pixels (inside pixels with an outside 4-neighbour;
 * beyond the canvas counts as outside) in full colour. */
void vp_draw_outline(vp_canvas *c, const uint8_t *mask, vp_rgb colour);
/* One instance as predict draws it: mask at alpha 0.45, its outline, and
 * the label (e.g. "circle 0.93") in a filled box of the colour at the top
 * left of the mask's bounding box, kept inside the canvas. An empty mask
 * draws nothing. The label (NULL or "": none) is at text scale 1, 2 on
 * canvases of 400 px a side or more, black or white, whichever contrasts
 * more with colour. */
void vp_draw_instance(vp_canvas *c, const uint8_t *mask, vp_rgb colour, const char *label);

void vp_draw_rect(vp_canvas *c, int x, int y, int w, int h, vp_rgb colour); /* filled, clipped */
void vp_draw_line(vp_canvas *c, int x0, int y0, int x1, int y1, vp_rgb colour);
/* Text in the built-in font (printable ASCII; others drawn as '?'), top
 * left at (x, y), each glyph scale times its native size; clipped. The
 * font is 5x8 (descenders in the last row) on a 6-pixel advance; s NULL
 * draws nothing; scale is clamped to 1..256. */
void vp_draw_text(vp_canvas *c, int x, int y, const char *s, int scale, vp_rgb colour);
/* Width and height in pixels that vp_draw_text would cover: (6 n - 1) *
 * scale by 8 * scale for n characters; 0 by 0 for "" or NULL. */
void vp_text_size(const char *s, int scale, int *w, int *h);

/* A labelled scatter chart: axes with ticks and numbers at round values
 * covering every point (x from 0 when all x >= 0), axis labels, a title,
 * each point a filled dot with its label beside it (labels moved so they
 * do not overlap each other), and an optional dashed horizontal reference
 * line (e.g. full fine-tuning's AP) when ref_label is not NULL. */
typedef struct vp_chart_point {
    const char *label;
    double x, y;
} vp_chart_point;

typedef struct vp_chart {
    const char *title, *xlabel, *ylabel;
    const vp_chart_point *points;
    size_t n;
    bool log_x;              /* x on a log10 axis (all x must be > 0) */
    const char *ref_label;   /* NULL: no reference line */
    double ref_y;
    int w, h;                /* pixels; 0: 800 x 500 */
} vp_chart;

/* Draw the chart and write it to path (atomic). Points get vp_palette(i)
 * dots; a point's label may be NULL (no label), as may title and axis
 * labels. Errors (nothing written) name path: no points, a non-finite value,
 * x <= 0 on a log axis, a size outside 200x150..8192x8192, values too far
 * apart or too close together (for their size) to draw, an unwritable
 * path. */
vp_status vp_chart_write_png(const vp_chart *ch, const char *path);

/* Where the chart puts things, for callers that annotate it and for tests.
 * The plot area is pixel columns x0..x1 and rows y0..y1 (y0 the top);
 * axis value lo maps to x0 (y1 for y), hi to x1 (y0). On a log x axis lo
 * and hi are log10 of x and ticks are plain x values. */
#define VP_CHART_MAX_TICKS 64
typedef struct vp_chart_axis {
    double lo, hi;
    double ticks[VP_CHART_MAX_TICKS]; /* ascending, each labelled when room */
    int n_ticks;
    int decimals;                     /* of the tick labels; -1 on a log axis */
} vp_chart_axis;

typedef struct vp_chart_axes {
    int x0, y0, x1, y1;
    bool log_x;
    vp_chart_axis x, y;
} vp_chart_axes;

/* The layout vp_chart_write_png would use; the same errors (naming
 * "chart"). */
vp_status vp_chart_axes_get(const vp_chart *ch, vp_chart_axes *out);
/* A line chart: each series a polyline in vp_palette(k) (a single point
 * a dot), on the scatter chart's axes for the data's extent, with a
 * legend of the labels at the top right of the plot. */
typedef struct vp_series {
    const char *label;
    const double *x, *y;
    size_t n;
} vp_series;

typedef struct vp_lines {
    const char *title, *xlabel, *ylabel;
    const vp_series *series;
    size_t n;
    int w, h; /* pixels; 0: 800 x 500 */
} vp_lines;

/* Draw it and write it to path (atomic). Errors as vp_chart_write_png's
 * (no points, a non-finite value, values too far apart, the size). */
vp_status vp_lines_write_png(const vp_lines *ch, const char *path);

/* The pixel a data point lands on (rounded to the nearest). */
void vp_chart_map(const vp_chart_axes *ax, double x, double y, int *px, int *py);

#endif
