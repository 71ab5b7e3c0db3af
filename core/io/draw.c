/*
 * Pictures for people (draw.h): 8-bit RGB canvases, mask overlays with
 * outlines and labels for `vpeft predict`, a built-in 5x8 bitmap font, and
 * the labelled scatter chart of `vpeft demo`, written as PNG through
 * vp_png_write. Everything here is integer pixel work on the host; nothing
 * is antialiased, so the pictures are exact and tests can check pixels.
 */
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "io/draw.h"
#include "io/png.h"
#include "util/error.h"

#define MAX_SIDE 65535 /* what vp_png_write accepts */

/* ---- canvas ---- */

vp_status vp_canvas_create(int w, int h, vp_rgb fill, vp_canvas *out)
{
    VP_ASSERT(out);
    memset(out, 0, sizeof *out);
    if (w <= 0 || h <= 0 || w > MAX_SIDE || h > MAX_SIDE)
        return vp_error_set(VP_ERR_INVALID, "canvas: cannot make a %dx%d picture (sides 1..%d)",
                            w, h, MAX_SIDE);
    size_t n = (size_t)w * (size_t)h;
    uint8_t *p = malloc(3 * n);
    if (!p)
        return vp_error_set(VP_ERR_NOMEM, "canvas: out of memory for a %dx%d picture", w, h);
    for (size_t i = 0; i < n; i++) {
        p[3 * i] = fill.r;
        p[3 * i + 1] = fill.g;
        p[3 * i + 2] = fill.b;
    }
    out->w = w;
    out->h = h;
    out->rgb = p;
    return VP_OK;
}

static uint8_t to_u8(float v)
{
    if (!(v > 0.0f)) /* also NaN */
        return 0;
    if (v >= 1.0f)
        return 255;
    return (uint8_t)lrintf(v * 255.0f);
}

vp_status vp_canvas_from_image(const vp_image *img, vp_canvas *out)
{
    VP_ASSERT(img && out);
    memset(out, 0, sizeof *out);
    if (!img->data)
        return vp_error_set(VP_ERR_INVALID, "canvas: the image has no pixels");
    vp_status st = vp_canvas_create(img->w, img->h, (vp_rgb){0, 0, 0}, out);
    if (st != VP_OK)
        return st;
    size_t n = (size_t)img->w * (size_t)img->h;
    for (size_t i = 0; i < n; i++)
        for (int c = 0; c < 3; c++)
            out->rgb[3 * i + (size_t)c] = to_u8(img->data[(size_t)c * n + i]);
    return VP_OK;
}

void vp_canvas_free(vp_canvas *c)
{
    if (!c)
        return;
    free(c->rgb);
    memset(c, 0, sizeof *c);
}

vp_status vp_canvas_write_png(const vp_canvas *c, const char *path)
{
    VP_ASSERT(c && path);
    if (!c->rgb)
        return vp_error_set(VP_ERR_INVALID, "%s: nothing drawn (empty canvas)", path);
    return vp_png_write(path, c->w, c->h, c->rgb);
}

static void put_px(vp_canvas *c, int x, int y, vp_rgb col)
{
    if (x < 0 || y < 0 || x >= c->w || y >= c->h)
        return;
    uint8_t *p = c->rgb + 3 * ((size_t)y * (size_t)c->w + (size_t)x);
    p[0] = col.r;
    p[1] = col.g;
    p[2] = col.b;
}

/* ---- palette and colour ---- */

/* Sasha Trubetskoy's "20 distinct colours", the saturated twelve: each
 * tells apart from its neighbours on photos and on white. */
static const vp_rgb palette[12] = {
    {230, 25, 75},  {60, 180, 75},  {0, 130, 200}, {245, 130, 48},
    {145, 30, 180}, {70, 240, 240}, {240, 50, 230}, {255, 225, 25},
    {128, 128, 0},  {170, 110, 40}, {128, 0, 0},   {0, 0, 128},
};

vp_rgb vp_palette(uint32_t k)
{
    return palette[k % 12];
}

static double srgb_linear(uint8_t v)
{
    double c = v / 255.0;
    return c <= 0.04045 ? c / 12.92 : pow((c + 0.055) / 1.055, 2.4);
}

/* Black or white, whichever has the higher WCAG contrast ratio against bg:
 * white wins when (L + 0.05)^2 < 1.05 * 0.05, i.e. relative luminance L
 * below about 0.179. */
static vp_rgb text_colour_on(vp_rgb bg)
{
    double l = 0.2126 * srgb_linear(bg.r) + 0.7152 * srgb_linear(bg.g) + 0.0722 * srgb_linear(bg.b);
    return (l + 0.05) * (l + 0.05) < 1.05 * 0.05 ? (vp_rgb){255, 255, 255} : (vp_rgb){0, 0, 0};
}

/* ---- masks ---- */

void vp_draw_mask(vp_canvas *c, const uint8_t *mask, vp_rgb colour, float alpha)
{
    VP_ASSERT(c && mask);
    if (!(alpha > 0.0f)) /* also NaN */
        return;
    unsigned a = alpha >= 1.0f ? 255u : (unsigned)lrintf(alpha * 255.0f);
    const unsigned col[3] = {colour.r, colour.g, colour.b};
    size_t n = (size_t)c->w * (size_t)c->h;
    for (size_t i = 0; i < n; i++) {
        if (!mask[i])
            continue;
        uint8_t *p = c->rgb + 3 * i;
        for (int k = 0; k < 3; k++)
            p[k] = (uint8_t)((p[k] * (255u - a) + col[k] * a + 127u) / 255u);
    }
}

static int mask_at(const vp_canvas *c, const uint8_t *mask, int x, int y)
{
    if (x < 0 || y < 0 || x >= c->w || y >= c->h)
        return 0;
    return mask[(size_t)y * (size_t)c->w + (size_t)x] != 0;
}

void vp_draw_outline(vp_canvas *c, const uint8_t *mask, vp_rgb colour)
{
    VP_ASSERT(c && mask);
    for (int y = 0; y < c->h; y++)
        for (int x = 0; x < c->w; x++)
            if (mask_at(c, mask, x, y) &&
                (!mask_at(c, mask, x - 1, y) || !mask_at(c, mask, x + 1, y) ||
                 !mask_at(c, mask, x, y - 1) || !mask_at(c, mask, x, y + 1)))
                put_px(c, x, y, colour);
}

/* The label's text scale on a canvas: 1 below 400 px, 2 from there. */
static int label_scale(const vp_canvas *c)
{
    return c->w >= 400 && c->h >= 400 ? 2 : 1;
}

void vp_draw_instance(vp_canvas *c, const uint8_t *mask, vp_rgb colour, const char *label)
{
    VP_ASSERT(c && mask);
    int x0 = c->w, y0 = c->h, x1 = -1, y1 = -1;
    for (int y = 0; y < c->h; y++)
        for (int x = 0; x < c->w; x++)
            if (mask[(size_t)y * (size_t)c->w + (size_t)x]) {
                x0 = x < x0 ? x : x0;
                x1 = x > x1 ? x : x1;
                y0 = y < y0 ? y : y0;
                y1 = y > y1 ? y : y1;
            }
    if (x1 < 0)
        return;
    vp_draw_mask(c, mask, colour, 0.45f);
    vp_draw_outline(c, mask, colour);
    if (!label || !*label)
        return;
    int s = label_scale(c), tw, th;
    vp_text_size(label, s, &tw, &th);
    int pad = 2 * s, bw = tw + 2 * pad, bh = th + 2 * s;
    /* Above the box when there is room (the mask stays visible), else just
     * inside its top edge; then pulled back inside the canvas. */
    int bx = x0, by = y0 - bh >= 0 ? y0 - bh : y0;
    if (bx > c->w - bw)
        bx = c->w - bw;
    if (by > c->h - bh)
        by = c->h - bh;
    bx = bx < 0 ? 0 : bx;
    by = by < 0 ? 0 : by;
    vp_draw_rect(c, bx, by, bw, bh, colour);
    vp_draw_text(c, bx + pad, by + s, label, s, text_colour_on(colour));
}

/* ---- primitives ---- */

void vp_draw_rect(vp_canvas *c, int x, int y, int w, int h, vp_rgb colour)
{
    VP_ASSERT(c);
    long long xa = x, ya = y, xb = (long long)x + w, yb = (long long)y + h;
    xa = xa < 0 ? 0 : xa;
    ya = ya < 0 ? 0 : ya;
    xb = xb > c->w ? c->w : xb;
    yb = yb > c->h ? c->h : yb;
    for (long long j = ya; j < yb; j++)
        for (long long i = xa; i < xb; i++)
            put_px(c, (int)i, (int)j, colour);
}

/* Liang-Barsky: clip the segment to [lo, hi] on each axis; false when
 * nothing is left. Keeps Bresenham's walk to pixels that exist. */
static bool clip_segment(double *x0, double *y0, double *x1, double *y1, double xmax, double ymax)
{
    double dx = *x1 - *x0, dy = *y1 - *y0, t0 = 0.0, t1 = 1.0;
    const double p[4] = {-dx, dx, -dy, dy};
    const double q[4] = {*x0 + 0.5, xmax + 0.5 - *x0, *y0 + 0.5, ymax + 0.5 - *y0};
    for (int i = 0; i < 4; i++) {
        if (p[i] == 0.0) {
            if (q[i] < 0.0)
                return false;
            continue;
        }
        double t = q[i] / p[i];
        if (p[i] < 0.0) {
            if (t > t1)
                return false;
            if (t > t0)
                t0 = t;
        } else {
            if (t < t0)
                return false;
            if (t < t1)
                t1 = t;
        }
    }
    double ax = *x0 + t0 * dx, ay = *y0 + t0 * dy, bx = *x0 + t1 * dx, by = *y0 + t1 * dy;
    *x0 = ax;
    *y0 = ay;
    *x1 = bx;
    *y1 = by;
    return true;
}

void vp_draw_line(vp_canvas *c, int x0, int y0, int x1, int y1, vp_rgb colour)
{
    VP_ASSERT(c);
    double fx0 = x0, fy0 = y0, fx1 = x1, fy1 = y1;
    if (!clip_segment(&fx0, &fy0, &fx1, &fy1, c->w - 1, c->h - 1))
        return;
    long long ax = llround(fx0), ay = llround(fy0), bx = llround(fx1), by = llround(fy1);
    long long dx = llabs(bx - ax), dy = -llabs(by - ay);
    long long sx = ax < bx ? 1 : -1, sy = ay < by ? 1 : -1, err = dx + dy;
    for (;;) {
        put_px(c, (int)ax, (int)ay, colour);
        if (ax == bx && ay == by)
            break;
        long long e2 = 2 * err;
        if (e2 >= dy) {
            err += dy;
            ax += sx;
        }
        if (e2 <= dx) {
            err += dx;
            ay += sy;
        }
    }
}

static void draw_disc(vp_canvas *c, int cx, int cy, int r, vp_rgb colour)
{
    for (int dy = -r; dy <= r; dy++)
        for (int dx = -r; dx <= r; dx++)
            if (dx * dx + dy * dy <= r * r + r)
                put_px(c, cx + dx, cy + dy, colour);
}

/* ---- font ---- */

/* Printable ASCII 32..126, 5 columns by 8 rows each: caps and digits on
 * rows 0-6 (baseline under row 6), x-height from row 2, descenders in row
 * 7. A glyph advances 6 columns (one blank between glyphs). */
#define GLYPH_W 5
#define GLYPH_H 8
#define GLYPH_ADV 6
static const char font[95][48] = {
    "..... ..... ..... ..... ..... ..... ..... .....", /*   */
    "..#.. ..#.. ..#.. ..#.. ..#.. ..... ..#.. .....", /* ! */
    ".#.#. .#.#. .#.#. ..... ..... ..... ..... .....", /* " */
    ".#.#. .#.#. ##### .#.#. ##### .#.#. .#.#. .....", /* # */
    "..#.. .#### #.#.. .###. ..#.# ####. ..#.. .....", /* $ */
    "##... ##..# ...#. ..#.. .#... #..## ...## .....", /* % */
    ".##.. #..#. #.#.. .#... #.#.# #..#. .##.# .....", /* & */
    "..#.. ..#.. .#... ..... ..... ..... ..... .....", /* ' */
    "...#. ..#.. .#... .#... .#... ..#.. ...#. .....", /* ( */
    ".#... ..#.. ...#. ...#. ...#. ..#.. .#... .....", /* ) */
    "..... ..#.. #.#.# .###. #.#.# ..#.. ..... .....", /* * */
    "..... ..#.. ..#.. ##### ..#.. ..#.. ..... .....", /* + */
    "..... ..... ..... ..... ..... .##.. ..#.. .#...", /* , */
    "..... ..... ..... ##### ..... ..... ..... .....", /* - */
    "..... ..... ..... ..... ..... .##.. .##.. .....", /* . */
    "..... ....# ...#. ..#.. .#... #.... ..... .....", /* / */
    ".###. #...# #..## #.#.# ##..# #...# .###. .....", /* 0 */
    "..#.. .##.. ..#.. ..#.. ..#.. ..#.. .###. .....", /* 1 */
    ".###. #...# ....# ...#. ..#.. .#... ##### .....", /* 2 */
    "##### ...#. ..#.. ...#. ....# #...# .###. .....", /* 3 */
    "...#. ..##. .#.#. #..#. ##### ...#. ...#. .....", /* 4 */
    "##### #.... ####. ....# ....# #...# .###. .....", /* 5 */
    "..##. .#... #.... ####. #...# #...# .###. .....", /* 6 */
    "##### ....# ...#. ..#.. .#... .#... .#... .....", /* 7 */
    ".###. #...# #...# .###. #...# #...# .###. .....", /* 8 */
    ".###. #...# #...# .#### ....# ...#. .##.. .....", /* 9 */
    "..... .##.. .##.. ..... .##.. .##.. ..... .....", /* : */
    "..... .##.. .##.. ..... .##.. ..#.. .#... .....", /* ; */
    "...#. ..#.. .#... #.... .#... ..#.. ...#. .....", /* < */
    "..... ..... ##### ..... ##### ..... ..... .....", /* = */
    ".#... ..#.. ...#. ....# ...#. ..#.. .#... .....", /* > */
    ".###. #...# ....# ...#. ..#.. ..... ..#.. .....", /* ? */
    ".###. #...# ....# .##.# #.#.# #.#.# .###. .....", /* @ */
    ".###. #...# #...# ##### #...# #...# #...# .....", /* A */
    "####. #...# #...# ####. #...# #...# ####. .....", /* B */
    ".###. #...# #.... #.... #.... #...# .###. .....", /* C */
    "###.. #..#. #...# #...# #...# #..#. ###.. .....", /* D */
    "##### #.... #.... ####. #.... #.... ##### .....", /* E */
    "##### #.... #.... ####. #.... #.... #.... .....", /* F */
    ".###. #...# #.... #.### #...# #...# .#### .....", /* G */
    "#...# #...# #...# ##### #...# #...# #...# .....", /* H */
    ".###. ..#.. ..#.. ..#.. ..#.. ..#.. .###. .....", /* I */
    "..### ...#. ...#. ...#. ...#. #..#. .##.. .....", /* J */
    "#...# #..#. #.#.. ##... #.#.. #..#. #...# .....", /* K */
    "#.... #.... #.... #.... #.... #.... ##### .....", /* L */
    "#...# ##.## #.#.# #.#.# #...# #...# #...# .....", /* M */
    "#...# #...# ##..# #.#.# #..## #...# #...# .....", /* N */
    ".###. #...# #...# #...# #...# #...# .###. .....", /* O */
    "####. #...# #...# ####. #.... #.... #.... .....", /* P */
    ".###. #...# #...# #...# #.#.# #..#. .##.# .....", /* Q */
    "####. #...# #...# ####. #.#.. #..#. #...# .....", /* R */
    ".#### #.... #.... .###. ....# ....# ####. .....", /* S */
    "##### ..#.. ..#.. ..#.. ..#.. ..#.. ..#.. .....", /* T */
    "#...# #...# #...# #...# #...# #...# .###. .....", /* U */
    "#...# #...# #...# #...# #...# .#.#. ..#.. .....", /* V */
    "#...# #...# #...# #.#.# #.#.# #.#.# .#.#. .....", /* W */
    "#...# #...# .#.#. ..#.. .#.#. #...# #...# .....", /* X */
    "#...# #...# .#.#. ..#.. ..#.. ..#.. ..#.. .....", /* Y */
    "##### ....# ...#. ..#.. .#... #.... ##### .....", /* Z */
    ".###. .#... .#... .#... .#... .#... .###. .....", /* [ */
    "..... #.... .#... ..#.. ...#. ....# ..... .....", /* \ */
    ".###. ...#. ...#. ...#. ...#. ...#. .###. .....", /* ] */
    "..#.. .#.#. #...# ..... ..... ..... ..... .....", /* ^ */
    "..... ..... ..... ..... ..... ..... ..... #####", /* _ */
    ".#... ..#.. ...#. ..... ..... ..... ..... .....", /* ` */
    "..... ..... .###. ....# .#### #...# .#### .....", /* a */
    "#.... #.... #.##. ##..# #...# #...# ####. .....", /* b */
    "..... ..... .###. #.... #.... #...# .###. .....", /* c */
    "....# ....# .##.# #..## #...# #...# .#### .....", /* d */
    "..... ..... .###. #...# ##### #.... .###. .....", /* e */
    "..##. .#..# .#... ###.. .#... .#... .#... .....", /* f */
    "..... ..... .#### #...# #...# .#### ....# .###.", /* g */
    "#.... #.... #.##. ##..# #...# #...# #...# .....", /* h */
    "..#.. ..... .##.. ..#.. ..#.. ..#.. .###. .....", /* i */
    "...#. ..... ..##. ...#. ...#. ...#. #..#. .##..", /* j */
    "#.... #.... #..#. #.#.. ##... #.#.. #..#. .....", /* k */
    ".##.. ..#.. ..#.. ..#.. ..#.. ..#.. .###. .....", /* l */
    "..... ..... ##.#. #.#.# #.#.# #...# #...# .....", /* m */
    "..... ..... #.##. ##..# #...# #...# #...# .....", /* n */
    "..... ..... .###. #...# #...# #...# .###. .....", /* o */
    "..... ..... ####. #...# #...# ####. #.... #....", /* p */
    "..... ..... .#### #...# #...# .#### ....# ....#", /* q */
    "..... ..... #.##. ##..# #.... #.... #.... .....", /* r */
    "..... ..... .###. #.... .###. ....# ####. .....", /* s */
    ".#... .#... ###.. .#... .#... .#..# ..##. .....", /* t */
    "..... ..... #...# #...# #...# #..## .##.# .....", /* u */
    "..... ..... #...# #...# #...# .#.#. ..#.. .....", /* v */
    "..... ..... #...# #...# #.#.# #.#.# .#.#. .....", /* w */
    "..... ..... #...# .#.#. ..#.. .#.#. #...# .....", /* x */
    "..... ..... #...# #...# #...# .#### ....# .###.", /* y */
    "..... ..... ##### ...#. ..#.. .#... ##### .....", /* z */
    "...#. ..#.. ..#.. .#... ..#.. ..#.. ...#. .....", /* { */
    "..#.. ..#.. ..#.. ..#.. ..#.. ..#.. ..#.. .....", /* | */
    ".#... ..#.. ..#.. ...#. ..#.. ..#.. .#... .....", /* } */
    "..... ..... .#... #.#.# ...#. ..... ..... .....", /* ~ */
};

/* Scales beyond this would only draw blocks larger than any picture. */
#define MAX_SCALE 256

static int clamp_scale(int scale)
{
    return scale < 1 ? 1 : scale > MAX_SCALE ? MAX_SCALE : scale;
}

static const char *glyph(unsigned char ch)
{
    return font[(ch >= 32 && ch <= 126 ? ch : '?') - 32];
}

void vp_text_size(const char *s, int scale, int *w, int *h)
{
    VP_ASSERT(w && h);
    scale = clamp_scale(scale);
    size_t n = s ? strlen(s) : 0;
    if (n == 0) {
        *w = *h = 0;
        return;
    }
    long long tw = ((long long)n * GLYPH_ADV - (GLYPH_ADV - GLYPH_W)) * scale;
    *w = tw > 0x7fffffff ? 0x7fffffff : (int)tw;
    *h = GLYPH_H * scale;
}

void vp_draw_text(vp_canvas *c, int x, int y, const char *s, int scale, vp_rgb colour)
{
    VP_ASSERT(c);
    scale = clamp_scale(scale);
    if (!s || y >= c->h || (long long)y + GLYPH_H * scale <= 0)
        return;
    long long gx = x;
    for (const unsigned char *p = (const unsigned char *)s; *p; p++, gx += GLYPH_ADV * scale) {
        if (gx >= c->w)
            break;
        if (gx + GLYPH_W * scale <= 0)
            continue;
        const char *g = glyph(*p);
        for (int r = 0; r < GLYPH_H; r++)
            for (int k = 0; k < GLYPH_W; k++)
                if (g[r * (GLYPH_W + 1) + k] == '#')
                    vp_draw_rect(c, (int)(gx + k * scale), (int)((long long)y + r * scale), scale,
                                 scale, colour);
    }
}

/* ---- chart ---- */

static const vp_rgb WHITE = {255, 255, 255}, BLACK = {0, 0, 0};
static const vp_rgb GRID = {225, 225, 225}, INK = {40, 40, 40}, REF = {90, 90, 90};

/* Heckbert's nice number ("Nice numbers for graph labels", Graphics Gems
 * 1990): the 1, 2 or 5 (or 10) times a power of ten nearest x. */
static double nice_num(double x)
{
    double e = floor(log10(x)), f = x / pow(10.0, e);
    return (f < 1.5 ? 1 : f < 3 ? 2 : f < 7 ? 5 : 10) * pow(10.0, e);
}

/* A linear axis over [lo, hi] (data already padded) with about want ticks:
 * the ends go out to multiples of the step. */
static void linear_axis(double lo, double hi, int want, vp_chart_axis *ax)
{
    double step = nice_num((hi - lo) / (want > 1 ? want - 1 : 1));
    double a = floor(lo / step) * step, b = ceil(hi / step) * step;
    long long n = llround((b - a) / step);
    if (n < 1)
        n = 1;
    if (n > VP_CHART_MAX_TICKS - 1) /* precision loss at huge offsets; never for sane data */
        n = VP_CHART_MAX_TICKS - 1;
    ax->lo = a;
    ax->hi = a + (double)n * step;
    ax->n_ticks = (int)n + 1;
    for (long long i = 0; i <= n; i++) {
        double v = a + (double)i * step;
        ax->ticks[i] = fabs(v) < step * 1e-9 ? 0.0 : v; /* no "-0.00" */
    }
    int dec = (int)-floor(log10(step) + 1e-9);
    ax->decimals = dec < 0 ? 0 : dec > 12 ? 12 : dec;
}

/* The next 1-2-5 value (1, 2 or 5 times a power of ten) strictly above v
 * (dir > 0) or strictly below it (dir < 0); v > 0. */
static double step125(double v, int dir)
{
    static const double m[] = {1, 2, 5};
    double e = floor(log10(v));
    if (dir > 0) {
        for (int k = -1; k <= 1; k++)
            for (int i = 0; i < 3; i++) {
                double c = m[i] * pow(10.0, e + k);
                if (c > v * (1 + 1e-12))
                    return c;
            }
    } else {
        for (int k = 1; k >= -1; k--)
            for (int i = 2; i >= 0; i--) {
                double c = m[i] * pow(10.0, e + k);
                if (c < v * (1 - 1e-12))
                    return c;
            }
    }
    return v; /* unreachable for finite v > 0 */
}

/* A log10 axis over data [lo, hi] (both > 0): ends at the 1-2-5 values
 * just beyond the data (so no dot sits on the frame), ticks at 1-2-5
 * values, or only at decades when those would be more than want. lo and hi
 * are stored as log10. */
static void log_axis(double lo, double hi, int want, vp_chart_axis *ax)
{
    double a = step125(lo, -1), b = step125(hi, 1);
    ax->lo = log10(a);
    ax->hi = log10(b);
    double decades = ax->hi - ax->lo;
    bool only_decades = decades * 3 > want + 1;
    int n = 0;
    for (double e = floor(ax->lo) - 1; e <= ceil(ax->hi) && n < VP_CHART_MAX_TICKS; e++)
        for (int i = 0; i < 3 && n < VP_CHART_MAX_TICKS; i++) {
            if (only_decades && i > 0)
                continue;
            double v = (i == 0 ? 1 : i == 1 ? 2 : 5) * pow(10.0, e), lv = log10(v);
            if (lv >= ax->lo - 1e-9 && lv <= ax->hi + 1e-9)
                ax->ticks[n++] = v;
        }
    ax->n_ticks = n;
    ax->decimals = -1;
}

static void tick_text(const vp_chart_axis *ax, double v, char *buf, size_t n)
{
    if (fabs(v) >= 1e7 || (v != 0 && fabs(v) < 1e-7))
        snprintf(buf, n, "%g", v);
    else if (ax->decimals >= 0)
        snprintf(buf, n, "%.*f", ax->decimals, v);
    else {
        int dec = v >= 1 ? 0 : (int)-floor(log10(v) + 1e-9);
        snprintf(buf, n, "%.*f", dec, v);
    }
}

/* The sizes the chart's text and margins are laid out with. */
typedef struct chart_style {
    int s, ts;     /* text scale of labels and of the title */
    int dot;       /* dot radius */
    int w, h;
} chart_style;

static vp_status chart_check(const vp_chart *ch, const char *name, chart_style *st)
{
    VP_ASSERT(ch && name);
    st->w = ch->w ? ch->w : 800;
    st->h = ch->h ? ch->h : 500;
    if (st->w < 200 || st->h < 150 || st->w > 8192 || st->h > 8192)
        return vp_error_set(VP_ERR_INVALID, "%s: a chart of %dx%d pixels (200x150 to 8192x8192)",
                            name, st->w, st->h);
    if (ch->n == 0)
        return vp_error_set(VP_ERR_INVALID, "%s: the chart has no points", name);
    VP_ASSERT(ch->points);
    double xmin = INFINITY, xmax = -INFINITY, ymin = INFINITY, ymax = -INFINITY;
    for (size_t i = 0; i < ch->n; i++) {
        const vp_chart_point *p = &ch->points[i];
        const char *l = p->label ? p->label : "";
        if (!isfinite(p->x) || !isfinite(p->y))
            return vp_error_set(VP_ERR_INVALID, "%s: point %zu (\"%s\") is not finite (%g, %g)",
                                name, i, l, p->x, p->y);
        if (ch->log_x && !(p->x > 0))
            return vp_error_set(VP_ERR_INVALID,
                                "%s: point %zu (\"%s\") has x = %g, not > 0 on a log x axis",
                                name, i, l, p->x);
        xmin = fmin(xmin, p->x);
        xmax = fmax(xmax, p->x);
        ymin = fmin(ymin, p->y);
        ymax = fmax(ymax, p->y);
    }
    if (ch->ref_label && !isfinite(ch->ref_y))
        return vp_error_set(VP_ERR_INVALID, "%s: the reference line \"%s\" is not finite (%g)",
                            name, ch->ref_label, ch->ref_y);
    if (ch->ref_label) {
        ymin = fmin(ymin, ch->ref_y);
        ymax = fmax(ymax, ch->ref_y);
    }
    if (!isfinite(xmax - xmin) || !isfinite(ymax - ymin) || fabs(xmin) > 1e300 ||
        fabs(xmax) > 1e300 || fabs(ymin) > 1e300 || fabs(ymax) > 1e300 ||
        (ch->log_x && xmin < 1e-300))
        return vp_error_set(VP_ERR_INVALID, "%s: the chart's values span too far to draw", name);
    st->s = st->w >= 1200 && st->h >= 700 ? 2 : 1;
    st->ts = st->s + 1;
    st->dot = 4 * st->s;
    return VP_OK;
}

/* Data range of one axis, padded by 4% each side so no dot sits on the
 * frame; x stays at 0 when all x >= 0, y at 0 when all y >= 0 and the pad
 * would cross it. A single value gets a range around it. */
static void pad_range(double *lo, double *hi, bool zero_floor)
{
    double span = *hi - *lo;
    if (span <= 0)
        span = fabs(*lo) > 0 ? fabs(*lo) * 0.2 : 1.0;
    double a = *lo - 0.04 * span, b = *hi + 0.04 * span;
    if (zero_floor && *lo >= 0 && a < 0)
        a = 0;
    if (b <= a)
        b = a + span;
    *lo = a;
    *hi = b;
}

static double map_x(const vp_chart_axes *ax, double x)
{
    double v = ax->log_x ? log10(x) : x;
    return ax->x0 + (v - ax->x.lo) / (ax->x.hi - ax->x.lo) * (ax->x1 - ax->x0);
}

static double map_y(const vp_chart_axes *ax, double y)
{
    return ax->y1 - (y - ax->y.lo) / (ax->y.hi - ax->y.lo) * (ax->y1 - ax->y0);
}

static vp_status chart_axes(const vp_chart *ch, const char *name, chart_style *st,
                            vp_chart_axes *ax)
{
    vp_status s = chart_check(ch, name, st);
    if (s != VP_OK)
        return s;
    memset(ax, 0, sizeof *ax);
    double xmin = INFINITY, xmax = -INFINITY, ymin = INFINITY, ymax = -INFINITY;
    for (size_t i = 0; i < ch->n; i++) {
        xmin = fmin(xmin, ch->points[i].x);
        xmax = fmax(xmax, ch->points[i].x);
        ymin = fmin(ymin, ch->points[i].y);
        ymax = fmax(ymax, ch->points[i].y);
    }
    if (ch->ref_label) {
        ymin = fmin(ymin, ch->ref_y);
        ymax = fmax(ymax, ch->ref_y);
    }
    int ch_h = GLYPH_H * st->s, tw, th;
    /* Rows from the top: title, y label, plot; from the bottom: x label,
     * tick labels, ticks. */
    int top = 8;
    if (ch->title && *ch->title)
        top += GLYPH_H * st->ts + 8;
    top += ch_h + 8; /* the y label row (kept even without a label: room for the top tick's text) */
    int bottom = 8 + (ch->xlabel && *ch->xlabel ? ch_h + 8 : 0) + ch_h + 4 + 5;
    ax->y0 = top;
    ax->y1 = st->h - 1 - bottom;
    pad_range(&ymin, &ymax, true);
    linear_axis(ymin, ymax, (ax->y1 - ax->y0) / (40 * st->s) + 2, &ax->y);
    int lw = 0;
    for (int i = 0; i < ax->y.n_ticks; i++) {
        char buf[64];
        tick_text(&ax->y, ax->y.ticks[i], buf, sizeof buf);
        vp_text_size(buf, st->s, &tw, &th);
        lw = tw > lw ? tw : lw;
    }
    ax->x0 = 8 + lw + 4 + 5;
    ax->x1 = st->w - 1 - 12 * st->s;
    if (ch->log_x) {
        log_axis(xmin, xmax, (ax->x1 - ax->x0) / (70 * st->s) + 1, &ax->x);
    } else {
        if (xmin >= 0)
            xmin = 0;
        pad_range(&xmin, &xmax, true);
        linear_axis(xmin, xmax, (ax->x1 - ax->x0) / (90 * st->s) + 2, &ax->x);
    }
    ax->log_x = ch->log_x;
    /* Values nearly equal next to their size (1e15 and 1e15 + 1e-3) leave
     * doubles no room for ticks: the axes would not cover them. */
    bool ok = ax->x.hi > ax->x.lo && ax->y.hi > ax->y.lo;
    for (int i = 1; i < ax->x.n_ticks; i++)
        ok = ok && ax->x.ticks[i] > ax->x.ticks[i - 1];
    for (int i = 1; i < ax->y.n_ticks; i++)
        ok = ok && ax->y.ticks[i] > ax->y.ticks[i - 1];
    for (size_t i = 0; ok && i <= ch->n; i++) {
        double x = i < ch->n ? ch->points[i].x : ch->points[0].x;
        double y = i < ch->n ? ch->points[i].y : ch->ref_label ? ch->ref_y : ch->points[0].y;
        double px = map_x(ax, x), py = map_y(ax, y);
        ok = px >= ax->x0 - 1 && px <= ax->x1 + 1 && py >= ax->y0 - 1 && py <= ax->y1 + 1;
    }
    if (!ok)
        return vp_error_set(VP_ERR_INVALID,
                            "%s: the chart's values are too close together for their size to draw",
                            name);
    return VP_OK;
}

vp_status vp_chart_axes_get(const vp_chart *ch, vp_chart_axes *out)
{
    chart_style st;
    return chart_axes(ch, "chart", &st, out);
}

void vp_chart_map(const vp_chart_axes *ax, double x, double y, int *px, int *py)
{
    VP_ASSERT(ax && px && py);
    *px = (int)lround(map_x(ax, x));
    *py = (int)lround(map_y(ax, y));
}

typedef struct box {
    int x, y, w, h;
} box;

static long long overlap(box a, box b)
{
    long long w = (long long)(a.x + a.w < b.x + b.w ? a.x + a.w : b.x + b.w) - (a.x > b.x ? a.x : b.x);
    long long h = (long long)(a.y + a.h < b.y + b.h ? a.y + a.h : b.y + b.h) - (a.y > b.y ? a.y : b.y);
    return w > 0 && h > 0 ? w * h : 0;
}

/* Cost of a label box: area over the boxes already taken (labels, dots,
 * the reference label) plus area outside the plot; a box leaving the
 * canvas is refused. */
static long long place_cost(box b, const box *taken, size_t n_taken, box plot, int w, int h)
{
    if (b.x < 0 || b.y < 0 || b.x + b.w > w || b.y + b.h > h)
        return -1;
    long long cost = 0;
    for (size_t i = 0; i < n_taken; i++)
        cost += 4 * overlap(b, taken[i]);
    cost += (long long)b.w * b.h - overlap(b, plot);
    return cost;
}

/* Greedy: the first candidate around (cx, cy) that touches nothing, else
 * the cheapest. Rings grow outwards; in each ring right, left, above,
 * below, then the diagonals. Returns the ring of the choice (> 0: draw a
 * leader line). */
static int place_label(int cx, int cy, int gap, int tw, int th, const box *taken, size_t n_taken,
                       box plot, int w, int h, box *out)
{
    long long best = -1;
    int best_ring = 0;
    for (int ring = 0; ring < 4; ring++) {
        int d = gap + ring * (th + 4);
        const int cand[8][2] = {
            {cx + d, cy - th / 2},       {cx - d - tw, cy - th / 2}, {cx - tw / 2, cy - d - th},
            {cx - tw / 2, cy + d},       {cx + d, cy - d - th},      {cx + d, cy + d},
            {cx - d - tw, cy - d - th}, {cx - d - tw, cy + d},
        };
        for (int k = 0; k < 8; k++) {
            box b = {cand[k][0], cand[k][1], tw, th};
            long long c = place_cost(b, taken, n_taken, plot, w, h);
            if (c < 0)
                continue;
            if (best < 0 || c < best) {
                best = c;
                best_ring = ring;
                *out = b;
            }
            if (c == 0)
                return ring;
        }
    }
    if (best < 0) { /* nowhere inside the canvas: clamp the first candidate */
        box b = {cx + gap, cy - th / 2, tw, th};
        b.x = b.x + tw > w ? w - tw : b.x;
        b.y = b.y + th > h ? h - th : b.y;
        b.x = b.x < 0 ? 0 : b.x;
        b.y = b.y < 0 ? 0 : b.y;
        *out = b;
    }
    return best_ring;
}

static void draw_dashed_hline(vp_canvas *c, int x0, int x1, int y, int dash, int gap, vp_rgb col)
{
    for (int x = x0; x <= x1; x += dash + gap)
        vp_draw_rect(c, x, y, x + dash - 1 > x1 ? x1 - x + 1 : dash, 1, col);
}

/* Nearest point of b to (x, y), for leader lines. */
static void nearest_on(box b, int x, int y, int *nx, int *ny)
{
    *nx = x < b.x ? b.x : x > b.x + b.w - 1 ? b.x + b.w - 1 : x;
    *ny = y < b.y ? b.y : y > b.y + b.h - 1 ? b.y + b.h - 1 : y;
}

/* Grid, ticks and tick labels (a label that would overlap the previous
 * one on its axis is left out; its tick and grid line stay). */
static void draw_grid(const chart_style *st, const vp_chart_axes *ax, vp_canvas *c)
{
    int s = st->s, tw, th;
    char buf[64];
    int last_right = -(1 << 30);
    for (int i = 0; i < ax->x.n_ticks; i++) {
        double v = ax->x.ticks[i];
        int px = (int)lround(map_x(ax, v));
        vp_draw_line(c, px, ax->y0, px, ax->y1, GRID);
        vp_draw_line(c, px, ax->y1 + 1, px, ax->y1 + 5, INK);
        tick_text(&ax->x, v, buf, sizeof buf);
        vp_text_size(buf, s, &tw, &th);
        int lx = px - tw / 2;
        lx = lx + tw > c->w ? c->w - tw : lx;
        if (lx > last_right + 3 * s) {
            vp_draw_text(c, lx, ax->y1 + 5 + 4, buf, s, INK);
            last_right = lx + tw;
        }
    }
    int last_top = 1 << 30;
    for (int i = 0; i < ax->y.n_ticks; i++) {
        double v = ax->y.ticks[i];
        int py = (int)lround(map_y(ax, v));
        vp_draw_line(c, ax->x0, py, ax->x1, py, GRID);
        vp_draw_line(c, ax->x0 - 5, py, ax->x0 - 1, py, INK);
        tick_text(&ax->y, v, buf, sizeof buf);
        vp_text_size(buf, s, &tw, &th);
        int ly = py - th / 2;
        if (ly + th < last_top - 2 * s) {
            vp_draw_text(c, ax->x0 - 5 - 4 - tw, ly, buf, s, INK);
            last_top = ly;
        }
    }
}

/* The title above the plot, the y label over its axis, the x label below. */
static void draw_titles(const vp_chart *ch, const chart_style *st, const vp_chart_axes *ax,
                        vp_canvas *c)
{
    int s = st->s, tw, th, y = 8;
    if (ch->title && *ch->title) {
        vp_text_size(ch->title, st->ts, &tw, &th);
        vp_draw_text(c, tw < c->w ? (c->w - tw) / 2 : 0, y, ch->title, st->ts, BLACK);
        y += th + 8;
    }
    if (ch->ylabel && *ch->ylabel) {
        vp_text_size(ch->ylabel, s, &tw, &th);
        int lx = ax->x0 - tw / 2;
        vp_draw_text(c, lx < 4 ? 4 : lx, y, ch->ylabel, s, BLACK);
    }
    if (ch->xlabel && *ch->xlabel) {
        vp_text_size(ch->xlabel, s, &tw, &th);
        vp_draw_text(c, (ax->x0 + ax->x1 - tw) / 2, c->h - 8 - th, ch->xlabel, s, BLACK);
    }
}

/* taken: room for 2n + 1 obstacle boxes; lab and ring: n each. */
static void draw_chart(const vp_chart *ch, const chart_style *st, const vp_chart_axes *ax,
                       vp_canvas *c, box *taken, box *lab, int *ring)
{
    int s = st->s, tw, th;
    box plot = {ax->x0, ax->y0, ax->x1 - ax->x0 + 1, ax->y1 - ax->y0 + 1};
    draw_grid(st, ax, c);
    size_t n_taken = 0;
    for (size_t i = 0; i < ch->n; i++) {
        int px, py;
        vp_chart_map(ax, ch->points[i].x, ch->points[i].y, &px, &py);
        int r = st->dot + 2; /* the dot plus a little air */
        taken[n_taken++] = (box){px - r, py - r, 2 * r + 1, 2 * r + 1};
    }
    /* the reference line and its label, placed along the line away from dots */
    if (ch->ref_label) {
        int ry = (int)lround(map_y(ax, ch->ref_y));
        draw_dashed_hline(c, ax->x0, ax->x1, ry, 8 * s, 5 * s, REF);
        vp_text_size(ch->ref_label, s, &tw, &th);
        box best = {0, 0, 0, 0};
        long long best_cost = -1;
        const int xs[3] = {ax->x1 - 4 * s - tw, ax->x0 + 4 * s, (ax->x0 + ax->x1 - tw) / 2};
        for (int k = 0; k < 6; k++) {
            box b = {xs[k / 2], k % 2 ? ry + 3 * s : ry - 3 * s - th, tw, th};
            long long cost = place_cost(b, taken, n_taken, plot, c->w, c->h);
            if (cost >= 0 && (best_cost < 0 || cost < best_cost)) {
                best = b;
                best_cost = cost;
            }
        }
        if (best_cost >= 0) {
            vp_draw_text(c, best.x, best.y, ch->ref_label, s, REF);
            taken[n_taken++] = best;
        }
    }
    /* axes over the grid */
    vp_draw_line(c, ax->x0, ax->y0, ax->x0, ax->y1, BLACK);
    vp_draw_line(c, ax->x0, ax->y1, ax->x1, ax->y1, BLACK);
    /* point labels, greedily, each becoming an obstacle for the next */
    for (size_t i = 0; i < ch->n; i++) {
        lab[i] = (box){0, 0, 0, 0};
        const char *l = ch->points[i].label;
        if (!l || !*l)
            continue;
        int px, py;
        vp_chart_map(ax, ch->points[i].x, ch->points[i].y, &px, &py);
        vp_text_size(l, s, &tw, &th);
        box b;
        int rg = place_label(px, py, st->dot + 4 * s, tw + 2, th + 2, taken, n_taken, plot, c->w,
                             c->h, &b);
        ring[i] = rg;
        lab[i] = b;
        taken[n_taken++] = b;
    }
    for (size_t i = 0; i < ch->n; i++)
        if (ring[i] > 0 && lab[i].w > 0) {
            int px, py, nx, ny;
            vp_chart_map(ax, ch->points[i].x, ch->points[i].y, &px, &py);
            nearest_on(lab[i], px, py, &nx, &ny);
            vp_draw_line(c, px, py, nx, ny, (vp_rgb){150, 150, 150});
        }
    /* dots over lines, labels on white over everything */
    for (size_t i = 0; i < ch->n; i++) {
        int px, py;
        vp_chart_map(ax, ch->points[i].x, ch->points[i].y, &px, &py);
        draw_disc(c, px, py, st->dot + 1, INK);
        draw_disc(c, px, py, st->dot, vp_palette((uint32_t)i));
    }
    for (size_t i = 0; i < ch->n; i++)
        if (lab[i].w > 0) {
            vp_draw_rect(c, lab[i].x, lab[i].y, lab[i].w, lab[i].h, WHITE);
            vp_draw_text(c, lab[i].x + 1, lab[i].y + 1, ch->points[i].label, s, INK);
        }
    draw_titles(ch, st, ax, c);
}

vp_status vp_chart_write_png(const vp_chart *ch, const char *path)
{
    VP_ASSERT(ch && path);
    chart_style st;
    vp_chart_axes ax;
    vp_status s = chart_axes(ch, path, &st, &ax);
    if (s != VP_OK)
        return s;
    vp_canvas c;
    if ((s = vp_canvas_create(st.w, st.h, WHITE, &c)) != VP_OK)
        return vp_error_wrap(s, "%s", path);
    /* obstacles: a box per dot, the reference label, a label per point */
    box *taken = calloc(2 * ch->n + 1, sizeof *taken), *lab = calloc(ch->n, sizeof *lab);
    int *ring = calloc(ch->n, sizeof *ring);
    if (!taken || !lab || !ring) {
        free(taken);
        free(lab);
        free(ring);
        vp_canvas_free(&c);
        return vp_error_set(VP_ERR_NOMEM, "%s: out of memory for %zu points", path, ch->n);
    }
    draw_chart(ch, &st, &ax, &c, taken, lab, ring);
    free(taken);
    free(lab);
    free(ring);
    s = vp_canvas_write_png(&c, path);
    vp_canvas_free(&c);
    return s;
}

/* ---- line charts ------------------------------------------------------------ */

vp_status vp_lines_write_png(const vp_lines *ch, const char *path)
{
    VP_ASSERT(ch && path);
    size_t total = 0;
    double xmin = INFINITY, xmax = -INFINITY, ymin = INFINITY, ymax = -INFINITY;
    for (size_t k = 0; k < ch->n; k++) {
        const vp_series *sr = &ch->series[k];
        for (size_t i = 0; i < sr->n; i++) {
            if (!isfinite(sr->x[i]) || !isfinite(sr->y[i]))
                return vp_error_set(VP_ERR_INVALID, "%s: series %zu (\"%s\"), point %zu is not "
                                    "finite (%g, %g)", path, k, sr->label ? sr->label : "", i,
                                    sr->x[i], sr->y[i]);
            xmin = fmin(xmin, sr->x[i]);
            xmax = fmax(xmax, sr->x[i]);
            ymin = fmin(ymin, sr->y[i]);
            ymax = fmax(ymax, sr->y[i]);
        }
        total += sr->n;
    }
    if (!total)
        return vp_error_set(VP_ERR_INVALID, "%s: the chart has no points", path);
    /* the scatter chart's layout for the two corners of the data */
    const vp_chart_point corners[2] = {{NULL, xmin, ymin}, {NULL, xmax, ymax}};
    const vp_chart box_ch = {.title = ch->title, .xlabel = ch->xlabel, .ylabel = ch->ylabel,
                             .points = corners, .n = 2, .w = ch->w, .h = ch->h};
    chart_style st;
    vp_chart_axes ax;
    vp_status s = chart_axes(&box_ch, path, &st, &ax);
    if (s != VP_OK)
        return s;
    vp_canvas c;
    if ((s = vp_canvas_create(st.w, st.h, WHITE, &c)) != VP_OK)
        return vp_error_wrap(s, "%s", path);
    draw_grid(&st, &ax, &c);
    vp_draw_line(&c, ax.x0, ax.y0, ax.x0, ax.y1, BLACK);
    vp_draw_line(&c, ax.x0, ax.y1, ax.x1, ax.y1, BLACK);
    /* each series a polyline, 2 pixels wide per text scale */
    for (size_t k = 0; k < ch->n; k++) {
        const vp_series *sr = &ch->series[k];
        vp_rgb col = vp_palette((uint32_t)k);
        for (size_t i = 0; i < sr->n; i++) {
            int x1, y1, x0, y0;
            vp_chart_map(&ax, sr->x[i], sr->y[i], &x1, &y1);
            if (sr->n == 1)
                draw_disc(&c, x1, y1, st.dot, col);
            if (!i)
                continue;
            vp_chart_map(&ax, sr->x[i - 1], sr->y[i - 1], &x0, &y0);
            for (int d = 0; d < 2 * st.s; d++)
                vp_draw_line(&c, x0, y0 + d, x1, y1 + d, col);
        }
    }
    /* the legend: a swatch and a label per series, top right, on white */
    int sc = st.s, tw, th, lw = 0, lh = 0;
    for (size_t k = 0; k < ch->n; k++) {
        vp_text_size(ch->series[k].label ? ch->series[k].label : "", sc, &tw, &th);
        lw = tw > lw ? tw : lw;
        lh = th;
    }
    int row = lh + 4 * sc, sw = 14 * sc;
    int bw = 6 * sc + sw + 4 * sc + lw + 6 * sc, bh = (int)ch->n * row + 6 * sc;
    int bx = ax.x1 - 6 * sc - bw, by = ax.y0 + 6 * sc;
    if (bx < ax.x0)
        bx = ax.x0;
    vp_draw_rect(&c, bx, by, bw, bh, WHITE);
    vp_draw_line(&c, bx, by, bx + bw - 1, by, GRID);
    vp_draw_line(&c, bx, by + bh - 1, bx + bw - 1, by + bh - 1, GRID);
    vp_draw_line(&c, bx, by, bx, by + bh - 1, GRID);
    vp_draw_line(&c, bx + bw - 1, by, bx + bw - 1, by + bh - 1, GRID);
    for (size_t k = 0; k < ch->n; k++) {
        int ry = by + 3 * sc + (int)k * row + row / 2;
        vp_draw_rect(&c, bx + 6 * sc, ry - sc, sw, 2 * sc, vp_palette((uint32_t)k));
        vp_draw_text(&c, bx + 6 * sc + sw + 4 * sc, ry - lh / 2, ch->series[k].label, sc, INK);
    }
    draw_titles(&box_ch, &st, &ax, &c);
    s = vp_canvas_write_png(&c, path);
    vp_canvas_free(&c);
    return s;
}
