/*
 * draw suite: pictures checked pixel by pixel. Mask blending gives the
 * documented integer blend inside and leaves outside alone; outlines are
 * exactly a hand-made mask's boundary; text stays inside vp_text_size's box
 * and every glyph differs; an instance's label box stays whole near the
 * canvas edges with a contrasting text colour; the palette's colours
 * differ; a chart PNG decodes (io/image.h) at its size with each dot's
 * colour where the axis mapping puts it, round-number ticks and the dashed
 * reference line; every bad chart is refused with its one-line message and
 * writes nothing. Needs no Vulkan device.
 */
#include <check.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

#include "harness.h"
#include "io/draw.h"
#include "io/image.h"
#include "util/error.h"

static char base[512]; /* private directory for this run */
static char dir[700];  /* the current test's directory under it */

static void use_dir(const char *sub)
{
    snprintf(dir, sizeof dir, "%s/%s", base, sub);
    ck_assert_int_eq(mkdir(dir, 0700), 0);
}

static const char *tpath(const char *name)
{
    static char p[4][1024];
    static int k;
    k = (k + 1) % 4;
    snprintf(p[k], sizeof p[k], "%s/%s", dir, name);
    return p[k];
}


static const vp_rgb WHITE = {255, 255, 255}, BLACK = {0, 0, 0};

static vp_rgb px_at(const vp_canvas *c, int x, int y)
{
    const uint8_t *p = c->rgb + 3 * ((size_t)y * (size_t)c->w + (size_t)x);
    return (vp_rgb){p[0], p[1], p[2]};
}

static bool same(vp_rgb a, vp_rgb b)
{
    return a.r == b.r && a.g == b.g && a.b == b.b;
}

/* ---- canvas ---------------------------------------------------------------- */

START_TEST(test_canvas)
{
    vp_canvas c;
    vt_ok(vp_canvas_create(3, 2, (vp_rgb){1, 2, 3}, &c));
    ck_assert_int_eq(c.w, 3);
    ck_assert_int_eq(c.h, 2);
    for (int i = 0; i < 6; i++)
        ck_assert(same(px_at(&c, i % 3, i / 3), (vp_rgb){1, 2, 3}));
    vp_canvas_free(&c);
    ck_assert_ptr_null(c.rgb);
    vp_canvas_free(&c); /* twice and NULL: no-ops */
    vp_canvas_free(NULL);

    vt_expect_err(vp_canvas_create(0, 5, WHITE, &c), VP_ERR_INVALID,
                  "canvas: cannot make a 0x5 picture (sides 1..65535)");
    ck_assert_ptr_null(c.rgb);
    vt_expect_err(vp_canvas_create(4, 70000, WHITE, &c), VP_ERR_INVALID,
                  "canvas: cannot make a 4x70000 picture (sides 1..65535)");

    /* float planes to bytes: rounded, clamped, NaN as 0 */
    float data[3 * 4] = {0.0f, 0.5f, 1.0f, -1.0f, /* R */
                         2.0f, NAN,  0.2f, 1.0f,  /* G */
                         0.0f, 0.0f, 0.0f, 0.999f};
    vp_image img = {2, 2, data};
    vt_ok(vp_canvas_from_image(&img, &c));
    ck_assert(same(px_at(&c, 0, 0), (vp_rgb){0, 255, 0}));
    ck_assert(same(px_at(&c, 1, 0), (vp_rgb){128, 0, 0}));
    ck_assert(same(px_at(&c, 0, 1), (vp_rgb){255, 51, 0}));
    ck_assert(same(px_at(&c, 1, 1), (vp_rgb){0, 255, 255}));
    vp_canvas_free(&c);
}
END_TEST

/* ---- masks ----------------------------------------------------------------- */

START_TEST(test_mask_blend)
{
    const int w = 9, h = 7;
    const vp_rgb bg = {10, 200, 30}, col = {250, 20, 101};
    uint8_t mask[7 * 9] = {0};
    mask[2 * w + 3] = 1;
    mask[2 * w + 4] = 255;
    mask[5 * w + 8] = 7;
    const float alphas[4] = {0.45f, 1.0f, 0.0f, 0.3f};
    for (int t = 0; t < 4; t++) {
        vp_canvas c;
        vt_ok(vp_canvas_create(w, h, bg, &c));
        vp_draw_mask(&c, mask, col, alphas[t]);
        /* the documented blend, worked out here on its own */
        unsigned a = (unsigned)lrintf(alphas[t] * 255.0f);
        vp_rgb want = {(uint8_t)((bg.r * (255 - a) + col.r * a + 127) / 255),
                       (uint8_t)((bg.g * (255 - a) + col.g * a + 127) / 255),
                       (uint8_t)((bg.b * (255 - a) + col.b * a + 127) / 255)};
        if (t == 0) /* alpha 0.45: a = 115 */
            ck_assert(same(want, (vp_rgb){118, 119, 62}));
        if (t == 1)
            ck_assert(same(want, col));
        for (int y = 0; y < h; y++)
            for (int x = 0; x < w; x++) {
                vp_rgb got = px_at(&c, x, y);
                if (mask[y * w + x])
                    ck_assert_msg(same(got, want), "alpha %g (%d,%d): %d %d %d", alphas[t], x, y,
                                  got.r, got.g, got.b);
                else
                    ck_assert(same(got, bg));
            }
        vp_canvas_free(&c);
    }
}
END_TEST

/* A hand-made mask ('#', '+': inside) whose boundary ('+') was marked by
 * hand: inside pixels with a 4-neighbour outside or beyond the canvas. */
static const char *const outline_art[] = {
    "............",
    "..++++......",
    "..+###++....",
    "..+####+....",
    "++##+++++...",
    "+##+.......+",
    "+++.......++",
};

START_TEST(test_outline)
{
    const int w = 12, h = 7;
    uint8_t mask[7 * 12];
    for (int y = 0; y < h; y++)
        for (int x = 0; x < w; x++)
            mask[y * w + x] = outline_art[y][x] != '.';
    vp_canvas c;
    vt_ok(vp_canvas_create(w, h, WHITE, &c));
    const vp_rgb red = {200, 0, 0};
    vp_draw_outline(&c, mask, red);
    int n = 0;
    for (int y = 0; y < h; y++)
        for (int x = 0; x < w; x++) {
            bool edge = outline_art[y][x] == '+';
            ck_assert_msg(same(px_at(&c, x, y), edge ? red : WHITE), "(%d,%d) want %s", x, y,
                          edge ? "outline" : "untouched");
            n += edge;
        }
    ck_assert_int_eq(n, 24);
    vp_canvas_free(&c);
}
END_TEST

/* ---- text ------------------------------------------------------------------ */

/* Bounding box of the pixels that are not bg; false when there are none. */
static bool ink_box(const vp_canvas *c, vp_rgb bg, int *x0, int *y0, int *x1, int *y1)
{
    *x0 = c->w;
    *y0 = c->h;
    *x1 = *y1 = -1;
    for (int y = 0; y < c->h; y++)
        for (int x = 0; x < c->w; x++)
            if (!same(px_at(c, x, y), bg)) {
                *x0 = x < *x0 ? x : *x0;
                *y0 = y < *y0 ? y : *y0;
                *x1 = x > *x1 ? x : *x1;
                *y1 = y > *y1 ? y : *y1;
            }
    return *x1 >= 0;
}

static long count_colour(const vp_canvas *c, vp_rgb col)
{
    long n = 0;
    for (int y = 0; y < c->h; y++)
        for (int x = 0; x < c->w; x++)
            n += same(px_at(c, x, y), col);
    return n;
}

START_TEST(test_text_box)
{
    const char *const s[] = {"circle 0.93", "Ag", "HH", "_", "j|", "~", "lora_deform r=8 (3.1%)"};
    for (int scale = 1; scale <= 3; scale++)
        for (size_t i = 0; i < sizeof s / sizeof s[0]; i++) {
            int tw, th, x0, y0, x1, y1;
            vp_text_size(s[i], scale, &tw, &th);
            ck_assert_int_eq(tw, ((int)strlen(s[i]) * 6 - 1) * scale);
            ck_assert_int_eq(th, 8 * scale);
            vp_canvas c;
            vt_ok(vp_canvas_create(tw + 20, th + 20, WHITE, &c));
            vp_draw_text(&c, 5, 7, s[i], scale, BLACK);
            ck_assert_msg(ink_box(&c, WHITE, &x0, &y0, &x1, &y1), "'%s' drew nothing", s[i]);
            ck_assert_msg(x0 >= 5 && y0 >= 7 && x1 < 5 + tw && y1 < 7 + th,
                          "'%s' x%d: ink (%d,%d)-(%d,%d) outside the box %dx%d at (5,7)", s[i],
                          scale, x0, y0, x1, y1, tw, th);
            /* only the two colours, in whole scale x scale blocks */
            long n = count_colour(&c, BLACK);
            ck_assert_int_eq(n + count_colour(&c, WHITE), (long)c.w * c.h);
            ck_assert_int_eq(n % (scale * scale), 0);
            if (!strcmp(s[i], "HH")) /* H fills its 5 columns and 7 rows */
                ck_assert(x0 == 5 && x1 == 5 + tw - 1 && y0 == 7 && y1 == 7 + 7 * scale - 1);
            if (!strcmp(s[i], "_") || !strcmp(s[i], "j|")) /* the descender row is the last */
                ck_assert_int_eq(y1, 7 + th - 1);
            vp_canvas_free(&c);
        }
    int tw = -1, th = -1;
    vp_text_size("", 2, &tw, &th);
    ck_assert(tw == 0 && th == 0);
    vp_text_size(NULL, 1, &tw, &th);
    ck_assert(tw == 0 && th == 0);
    vp_text_size("ab", 0, &tw, &th); /* scale < 1 counts as 1 */
    ck_assert(tw == 11 && th == 8);
    vp_text_size("ab", 1 << 30, &tw, &th); /* and > 256 as 256 */
    ck_assert(tw == 11 * 256 && th == 8 * 256);

    /* clipped at every side: only pixels that exist are touched */
    vp_canvas c;
    vt_ok(vp_canvas_create(20, 10, WHITE, &c));
    vp_draw_text(&c, -7, -3, "WWWWWW", 2, BLACK);
    vp_draw_text(&c, 15, 6, "MMM", 3, BLACK);
    vp_draw_text(&c, -2000000000, 0, "x", 1, BLACK);
    vp_draw_text(&c, 0, 0, NULL, 1, BLACK);
    vp_draw_text(&c, 3, 2147483000, "y", 1000, BLACK);
    vp_draw_text(&c, 3, -2147483000, "y", 1 << 30, BLACK);
    ck_assert_int_gt(count_colour(&c, BLACK), 0);
    vp_canvas_free(&c);
}
END_TEST

/* One glyph at scale 1 as 40 bytes. */
static void glyph_bits(char ch, uint8_t out[40])
{
    vp_canvas c;
    vt_ok(vp_canvas_create(5, 8, WHITE, &c));
    vp_draw_text(&c, 0, 0, (char[2]){ch, 0}, 1, BLACK);
    for (int i = 0; i < 40; i++)
        out[i] = same(px_at(&c, i % 5, i / 5), BLACK);
    vp_canvas_free(&c);
}

START_TEST(test_glyphs_distinct)
{
    static uint8_t g[95][40];
    for (int ch = 32; ch < 127; ch++) {
        glyph_bits((char)ch, g[ch - 32]);
        int n = 0;
        for (int i = 0; i < 40; i++)
            n += g[ch - 32][i];
        ck_assert_msg(ch == ' ' ? n == 0 : n >= 3, "'%c' has %d pixels", ch, n);
    }
    for (int a = 0; a < 95; a++)
        for (int b = a + 1; b < 95; b++)
            ck_assert_msg(memcmp(g[a], g[b], 40) != 0, "'%c' and '%c' look the same", a + 32,
                          b + 32);
    /* outside printable ASCII: '?' */
    uint8_t q[40], t[40];
    glyph_bits('\t', t);
    ck_assert_int_eq(memcmp(t, g['?' - 32], 40), 0);
    glyph_bits((char)200, q);
    ck_assert_int_eq(memcmp(q, g['?' - 32], 40), 0);
}
END_TEST

/* ---- instances ------------------------------------------------------------- */

/* Draw one instance (a filled rectangle mask) on a grey canvas and check
 * it: the whole label visible (as many text pixels as the text drawn alone
 * has), on a box of the instance colour (the ring around the text's ink is
 * that colour), the mask blended at 0.45 and outlined. Returns the text
 * ink's box (x0, y0, x1, y1). */
static void check_instance(int w, int h, int mx0, int my0, int mx1, int my1, vp_rgb col,
                           vp_rgb text_col, const char *label, int scale, int box[4])
{
    const vp_rgb grey = {128, 128, 128};
    vp_canvas c;
    vt_ok(vp_canvas_create(w, h, grey, &c));
    uint8_t *mask = calloc((size_t)w * h, 1);
    for (int y = my0; y <= my1; y++)
        for (int x = mx0; x <= mx1; x++)
            mask[y * w + x] = 1;
    vp_draw_instance(&c, mask, col, label);

    int tw, th;
    vp_text_size(label, scale, &tw, &th);
    vp_canvas alone;
    vt_ok(vp_canvas_create(tw, th, grey, &alone));
    vp_draw_text(&alone, 0, 0, label, scale, text_col);
    long want = count_colour(&alone, text_col);
    vp_canvas_free(&alone);
    ck_assert_int_gt(want, 0);
    ck_assert_int_eq(count_colour(&c, text_col), want);

    int x0 = w, y0 = h, x1 = -1, y1 = -1;
    for (int y = 0; y < h; y++)
        for (int x = 0; x < w; x++)
            if (same(px_at(&c, x, y), text_col)) {
                x0 = x < x0 ? x : x0, y0 = y < y0 ? y : y0;
                x1 = x > x1 ? x : x1, y1 = y > y1 ? y : y1;
            }
    ck_assert_msg(x0 >= 1 && y0 >= 1 && x1 <= w - 2 && y1 <= h - 2,
                  "'%s': text (%d,%d)-(%d,%d) touches the edge of %dx%d", label, x0, y0, x1, y1,
                  w, h);
    ck_assert_int_le(x1 - x0 + 1, tw);
    ck_assert_int_le(y1 - y0 + 1, th);
    for (int x = x0 - 1; x <= x1 + 1; x++)
        ck_assert(same(px_at(&c, x, y0 - 1), col) && same(px_at(&c, x, y1 + 1), col));
    for (int y = y0 - 1; y <= y1 + 1; y++)
        ck_assert(same(px_at(&c, x0 - 1, y), col) && same(px_at(&c, x1 + 1, y), col));
    /* the mask: its bottom-right corner on the outline, the pixel inside
     * it blended */
    ck_assert(same(px_at(&c, mx1, my1), col));
    vp_rgb in = px_at(&c, mx1 - 1, my1 - 1);
    ck_assert_int_eq(in.r, (128 * 140 + col.r * 115 + 127) / 255);
    ck_assert_int_eq(in.g, (128 * 140 + col.g * 115 + 127) / 255);
    box[0] = x0, box[1] = y0, box[2] = x1, box[3] = y1;
    free(mask);
    vp_canvas_free(&c);
}

START_TEST(test_instance_label)
{
    const vp_rgb navy = {0, 0, 128}, yellow = {255, 225, 25};
    int b[4];
    /* bottom-right corner, 128 px: a long label pushed left and up */
    check_instance(128, 128, 118, 120, 127, 127, navy, WHITE, "circle 0.93", 1, b);
    ck_assert_int_lt(b[3], 120); /* above the mask */
    ck_assert_int_ge(b[2], 127 - 2 - 5); /* pushed against the right edge */
    /* right edge, mid-height, 512 px: scale 2, box above the mask */
    check_instance(512, 512, 470, 200, 511, 260, yellow, BLACK, "triangle 0.51", 2, b);
    ck_assert_int_ge(b[2], 511 - 2 * 2 - 2 * 5);
    ck_assert_int_lt(b[3], 200);
    ck_assert_int_gt(b[1], 200 - 2 * 12); /* just above, not far */
    /* bottom edge, left, with no room above: the box moves inside the
     * mask's top, at its left */
    check_instance(200, 150, 0, 0, 60, 40, vp_palette(2), BLACK, "square 1.00", 1, b);
    ck_assert(b[0] <= 5 && b[1] <= 5);
    check_instance(300, 200, 5, 190, 80, 198, vp_palette(1), BLACK, "blob 0.25", 1, b);
    ck_assert(b[1] < 190 && b[0] <= 5 + 2 + 5);
    /* a label wider than the canvas: kept at the left edge, clipped */
    vp_canvas c;
    vt_ok(vp_canvas_create(40, 30, WHITE, &c));
    uint8_t mask[30 * 40] = {0};
    mask[20 * 40 + 30] = 1;
    vp_draw_instance(&c, mask, navy, "a label far wider than the canvas");
    ck_assert(same(px_at(&c, 0, 10), navy) && same(px_at(&c, 39, 10), navy));
    ck_assert_int_gt(count_colour(&c, WHITE), 0);
    ck_assert(same(px_at(&c, 30, 20), navy));
    vp_canvas_free(&c);
    /* an empty mask draws nothing */
    vt_ok(vp_canvas_create(40, 30, WHITE, &c));
    memset(mask, 0, sizeof mask);
    vp_draw_instance(&c, mask, navy, "nothing");
    ck_assert_int_eq(count_colour(&c, WHITE), 40 * 30);
    vp_canvas_free(&c);
}
END_TEST

START_TEST(test_palette)
{
    for (uint32_t a = 0; a < 12; a++) {
        vp_rgb p = vp_palette(a);
        ck_assert(same(p, vp_palette(a + 12)));
        int mx = p.r > p.g ? (p.r > p.b ? p.r : p.b) : (p.g > p.b ? p.g : p.b);
        int mn = p.r < p.g ? (p.r < p.b ? p.r : p.b) : (p.g < p.b ? p.g : p.b);
        ck_assert_msg(mx - mn >= 100, "palette %u is not saturated", a);
        for (uint32_t b = a + 1; b < 12; b++) {
            vp_rgb q = vp_palette(b);
            int d = abs(p.r - q.r) + abs(p.g - q.g) + abs(p.b - q.b);
            ck_assert_msg(d >= 80, "palette %u and %u differ by %d", a, b, d);
        }
    }
}
END_TEST

START_TEST(test_rect_line)
{
    vp_canvas c;
    vt_ok(vp_canvas_create(10, 8, WHITE, &c));
    vp_draw_rect(&c, -3, 6, 5, 100, BLACK); /* clipped to x 0..1, y 6..7 */
    ck_assert_int_eq(count_colour(&c, BLACK), 4);
    ck_assert(same(px_at(&c, 1, 7), BLACK) && same(px_at(&c, 2, 7), WHITE));
    vp_draw_rect(&c, 5, 5, 0, 3, BLACK);
    vp_draw_rect(&c, 2147483000, 0, 2147483000, 3, BLACK);
    ck_assert_int_eq(count_colour(&c, BLACK), 4);
    vp_canvas_free(&c);

    const vp_rgb red = {255, 0, 0};
    vt_ok(vp_canvas_create(10, 8, WHITE, &c));
    vp_draw_line(&c, 0, 0, 9, 7, red); /* one pixel per column */
    ck_assert_int_eq(count_colour(&c, red), 10);
    ck_assert(same(px_at(&c, 0, 0), red) && same(px_at(&c, 9, 7), red));
    vp_draw_line(&c, -2000000000, 3, 2000000000, 3, BLACK); /* clipped, not walked */
    for (int x = 0; x < 10; x++)
        ck_assert(same(px_at(&c, x, 3), BLACK));
    vp_draw_line(&c, 20, 20, 30, 40, BLACK); /* wholly outside */
    ck_assert_int_eq(count_colour(&c, BLACK), 10);
    vp_canvas_free(&c);
}
END_TEST

/* ---- chart ----------------------------------------------------------------- */

static bool is_125(double step)
{
    double m = step / pow(10.0, floor(log10(step) + 1e-9));
    return fabs(m - 1) < 1e-9 || fabs(m - 2) < 1e-9 || fabs(m - 5) < 1e-9;
}

/* Ticks: ascending, equally spaced by a 1-2-5 step (linear) or each a 1-2-5
 * value (log), inside [lo, hi]; the ends cover [dlo, dhi]. */
static void check_axis(const vp_chart_axis *a, bool log_axis, double dlo, double dhi)
{
    ck_assert_int_ge(a->n_ticks, 2);
    double lo = log_axis ? log10(dlo) : dlo, hi = log_axis ? log10(dhi) : dhi;
    ck_assert_msg(a->lo < lo && a->hi > hi, "axis [%g, %g] does not cover [%g, %g]", a->lo, a->hi,
                  lo, hi);
    for (int i = 0; i < a->n_ticks; i++) {
        double t = a->ticks[i], v = log_axis ? log10(t) : t;
        ck_assert(v >= a->lo - 1e-9 && v <= a->hi + 1e-9);
        if (i)
            ck_assert(t > a->ticks[i - 1]);
        if (log_axis)
            ck_assert_msg(is_125(t), "log tick %g", t);
    }
    if (!log_axis) {
        double step = a->ticks[1] - a->ticks[0];
        ck_assert_msg(is_125(step), "step %g", step);
        for (int i = 1; i < a->n_ticks; i++)
            ck_assert(fabs(a->ticks[i] - a->ticks[i - 1] - step) < 1e-9 * step);
        ck_assert(fabs(a->lo - a->ticks[0]) < 1e-9 * step);
        ck_assert(fabs(a->hi - a->ticks[a->n_ticks - 1]) < 1e-9 * step);
    }
}

/* The decoded PNG as a canvas. */
static void load_png(const char *path, vp_canvas *c)
{
    vp_image img;
    vt_ok(vp_image_load(path, &img));
    vt_ok(vp_canvas_from_image(&img, c));
    vp_image_free(&img);
}

/* Pixels of colour col within r of (x, y). */
static int near(const vp_canvas *c, int x, int y, int r, vp_rgb col)
{
    int n = 0;
    for (int j = y - r; j <= y + r; j++)
        for (int i = x - r; i <= x + r; i++)
            if (i >= 0 && j >= 0 && i < c->w && j < c->h)
                n += same(px_at(c, i, j), col);
    return n;
}

static const vp_chart_point demo_points[] = {
    {"full fine-tuning", 100.0, 0.52}, {"adapter x2", 4.1, 0.47},
    {"adapter x3", 5.9, 0.49},         {"lora r=8", 1.3, 0.44},
    {"lora_deform r=8", 0.9, 0.45},    {"lora r=16", 2.5, 0.46},
    {"head only", 41.0, 0.50},
};

static void check_chart(const vp_chart *ch, const char *path, int w, int h)
{
    ck_assert_msg(vp_chart_write_png(ch, path) == VP_OK, "%s", vp_error_last());
    vp_canvas c;
    load_png(path, &c);
    ck_assert_int_eq(c.w, w);
    ck_assert_int_eq(c.h, h);
    vp_chart_axes ax;
    vt_ok(vp_chart_axes_get(ch, &ax));
    ck_assert(ax.x0 > 0 && ax.x1 < w - 1 && ax.y0 > 0 && ax.y1 < h - 1);
    double xmin = INFINITY, xmax = -INFINITY, ymin = INFINITY, ymax = -INFINITY;
    for (size_t i = 0; i < ch->n; i++) {
        xmin = fmin(xmin, ch->points[i].x), xmax = fmax(xmax, ch->points[i].x);
        ymin = fmin(ymin, ch->points[i].y), ymax = fmax(ymax, ch->points[i].y);
    }
    if (ch->ref_label)
        ymin = fmin(ymin, ch->ref_y), ymax = fmax(ymax, ch->ref_y);
    check_axis(&ax.y, false, ymin, ymax);
    if (ch->log_x)
        check_axis(&ax.x, true, xmin, xmax);
    else if (xmin >= 0) { /* x from 0 */
        ck_assert(ax.x.lo == 0.0 && ax.x.ticks[0] == 0.0);
        check_axis(&ax.x, false, 1e-12, xmax);
    } else
        check_axis(&ax.x, false, xmin, xmax);
    /* each dot in its palette colour where the mapping puts it, computed
     * here from the axes */
    for (size_t i = 0; i < ch->n; i++) {
        const vp_chart_point *p = &ch->points[i];
        double v = ch->log_x ? log10(p->x) : p->x;
        int px = (int)lround(ax.x0 + (v - ax.x.lo) / (ax.x.hi - ax.x.lo) * (ax.x1 - ax.x0));
        int py = (int)lround(ax.y1 - (p->y - ax.y.lo) / (ax.y.hi - ax.y.lo) * (ax.y1 - ax.y0));
        int mx, my;
        vp_chart_map(&ax, p->x, p->y, &mx, &my);
        ck_assert(mx == px && my == py);
        ck_assert(px > ax.x0 - 1 && px < ax.x1 && py > ax.y0 && py < ax.y1);
        ck_assert_msg(same(px_at(&c, px, py), vp_palette((uint32_t)i)), "%s: no dot at (%d,%d)",
                      p->label, px, py);
        ck_assert_int_ge(near(&c, px, py, 2, vp_palette((uint32_t)i)), 25);
    }
    /* the dashed reference line: runs of its grey along its row */
    if (ch->ref_label) {
        int ry = (int)lround(ax.y1 - (ch->ref_y - ax.y.lo) / (ax.y.hi - ax.y.lo) * (ax.y1 - ax.y0));
        vp_rgb g = px_at(&c, ax.x0 + 2, ry);
        ck_assert(g.r == g.g && g.g == g.b && g.r < 160);
        int runs = 0, on = 0, dark = 0;
        for (int x = ax.x0 + 1; x <= ax.x1; x++) {
            bool d = same(px_at(&c, x, ry), g);
            dark += d;
            runs += d && !on;
            on = d;
        }
        int span = ax.x1 - ax.x0;
        ck_assert_msg(runs >= span / 20 && dark > span / 3 && dark < span * 9 / 10,
                      "ref line: %d runs, %d of %d pixels", runs, dark, span);
        int above = 0, below = 0; /* a line, not a band */
        for (int x = ax.x0 + 1; x <= ax.x1; x++)
            above += same(px_at(&c, x, ry - 1), g), below += same(px_at(&c, x, ry + 1), g);
        ck_assert(above < dark / 4 && below < dark / 4);
    }
    /* axes: black along the left and bottom of the plot (dots near them may
     * cover a little) */
    int n_axis = 0;
    for (int y = ax.y0; y <= ax.y1; y++)
        n_axis += same(px_at(&c, ax.x0, y), BLACK);
    for (int x = ax.x0; x <= ax.x1; x++)
        n_axis += same(px_at(&c, x, ax.y1), BLACK);
    ck_assert_int_ge(n_axis, (ax.y1 - ax.y0 + ax.x1 - ax.x0 + 2) * 9 / 10);
    /* the title's ink near the top, centred */
    int x0, y0, x1, y1;
    vp_canvas top = {c.w, 20, c.rgb};
    ck_assert(ink_box(&top, WHITE, &x0, &y0, &x1, &y1));
    ck_assert_int_lt(abs((x0 + x1) / 2 - c.w / 2), 4);
    vp_canvas_free(&c);
}

START_TEST(test_chart)
{
    use_dir("chart");
    vp_chart ch = {.title = "Mask AP vs trainable parameters",
                   .xlabel = "trainable parameters (%)",
                   .ylabel = "mask AP",
                   .points = demo_points,
                   .n = sizeof demo_points / sizeof demo_points[0],
                   .log_x = true,
                   .ref_label = "full fine-tuning",
                   .ref_y = 0.53};
    check_chart(&ch, tpath("log.png"), 800, 500); /* 0 x 0: the default size */
    ch.log_x = false;
    ch.w = 640;
    ch.h = 400;
    check_chart(&ch, tpath("lin.png"), 640, 400);
    /* negative values, one point, no reference, small */
    const vp_chart_point neg[] = {{"a", -3.0, -0.25}, {"b", 2.5, 1.75}, {NULL, 0.1, 0.3}};
    vp_chart ch2 = {.title = "t", .points = neg, .n = 3, .w = 256, .h = 160};
    check_chart(&ch2, tpath("neg.png"), 256, 160);
    vp_chart ch3 = {.title = "one", .points = neg + 1, .n = 1, .log_x = true, .w = 300, .h = 200};
    check_chart(&ch3, tpath("one.png"), 300, 200);
    ck_assert_int_eq(vt_dir_entries(dir), 4);
}
END_TEST

/* A line chart: each series' points joined in its palette colour on the
 * scatter chart's axes (vp_chart_axes_get of the data's corners), the
 * legend's swatches, and the errors. */
START_TEST(test_lines)
{
    use_dir("lines");
    const char *p = tpath("lines.png");
    double x[5] = {0, 10, 20, 30, 40}, ya[5] = {40, 30, 22, 18, 15}, yb[5] = {42, 35, 30, 28, 27};
    vp_series sr[2] = {{"full", x, ya, 5}, {"lora", x, yb, 5}};
    vp_lines ch = {.title = "loss", .xlabel = "step", .ylabel = "loss", .series = sr, .n = 2};
    ck_assert_msg(vp_lines_write_png(&ch, p) == VP_OK, "%s", vp_error_last());
    vp_canvas c;
    load_png(p, &c);
    ck_assert_int_eq(c.w, 800);
    ck_assert_int_eq(c.h, 500);
    const vp_chart_point corners[2] = {{NULL, 0, 15}, {NULL, 40, 42}};
    vp_chart_axes ax;
    vt_ok(vp_chart_axes_get(&(vp_chart){.title = "loss", .xlabel = "step", .ylabel = "loss",
                                        .points = corners, .n = 2},
                            &ax));
    /* the midpoint of each series' segments lies on its colour */
    for (int k = 0; k < 2; k++)
        for (int i = 1; i < 5; i++) {
            int x0, y0, x1, y1;
            vp_chart_map(&ax, x[i - 1], sr[k].y[i - 1], &x0, &y0);
            vp_chart_map(&ax, x[i], sr[k].y[i], &x1, &y1);
            ck_assert_msg(near(&c, (x0 + x1) / 2, (y0 + y1) / 2, 2, vp_palette((uint32_t)k)) > 0,
                          "series %d, segment %d: no pixel of its colour", k, i);
        }
    /* the first series' colour far from both lines: only in the legend */
    int legend = 0;
    for (int j = ax.y0; j < ax.y0 + 60; j++)
        for (int i = ax.x1 - 200; i < ax.x1; i++)
            legend += same(px_at(&c, i, j), vp_palette(0)) && same(px_at(&c, i, j + 1),
                                                                   vp_palette(0));
    ck_assert_msg(legend > 0, "no legend swatch for series 0");
    vp_canvas_free(&c);

    char msg[1024];
    ya[2] = NAN;
    snprintf(msg, sizeof msg, "%s: series 0 (\"full\"), point 2 is not finite (20, nan)", p);
    vt_expect_err(vp_lines_write_png(&ch, p), VP_ERR_INVALID, msg);
    sr[0].n = sr[1].n = 0;
    snprintf(msg, sizeof msg, "%s: the chart has no points", p);
    vt_expect_err(vp_lines_write_png(&ch, p), VP_ERR_INVALID, msg);
}
END_TEST

START_TEST(test_chart_errors)
{
    use_dir("chart-errors");
    const char *p = tpath("x.png");
    char msg[1024];
    vp_chart_point pts[2] = {{"a", 1.0, 0.5}, {"b", 2.0, 0.6}};
    vp_chart ch = {.title = "t", .points = pts, .n = 0};
    snprintf(msg, sizeof msg, "%s: the chart has no points", p);
    vt_expect_err(vp_chart_write_png(&ch, p), VP_ERR_INVALID, msg);
    ch.n = 2;

    pts[1].y = NAN;
    snprintf(msg, sizeof msg, "%s: point 1 (\"b\") is not finite (2, nan)", p);
    vt_expect_err(vp_chart_write_png(&ch, p), VP_ERR_INVALID, msg);
    pts[1].y = 0.6;
    pts[0].x = -INFINITY;
    snprintf(msg, sizeof msg, "%s: point 0 (\"a\") is not finite (-inf, 0.5)", p);
    vt_expect_err(vp_chart_write_png(&ch, p), VP_ERR_INVALID, msg);

    ch.log_x = true;
    pts[0].x = 0.0;
    snprintf(msg, sizeof msg, "%s: point 0 (\"a\") has x = 0, not > 0 on a log x axis", p);
    vt_expect_err(vp_chart_write_png(&ch, p), VP_ERR_INVALID, msg);
    pts[0].x = 1.0;
    pts[1].x = -2.0;
    snprintf(msg, sizeof msg, "%s: point 1 (\"b\") has x = -2, not > 0 on a log x axis", p);
    vt_expect_err(vp_chart_write_png(&ch, p), VP_ERR_INVALID, msg);
    vt_expect_err(vp_chart_axes_get(&ch, &(vp_chart_axes){0}), VP_ERR_INVALID,
                  "chart: point 1 (\"b\") has x = -2, not > 0 on a log x axis");
    pts[1].x = 2.0;

    ch.ref_label = "full";
    ch.ref_y = NAN;
    snprintf(msg, sizeof msg, "%s: the reference line \"full\" is not finite (nan)", p);
    vt_expect_err(vp_chart_write_png(&ch, p), VP_ERR_INVALID, msg);
    ch.ref_y = 0.55;

    ch.w = 100;
    ch.h = 500;
    snprintf(msg, sizeof msg, "%s: a chart of 100x500 pixels (200x150 to 8192x8192)", p);
    vt_expect_err(vp_chart_write_png(&ch, p), VP_ERR_INVALID, msg);
    ch.w = ch.h = 0;

    pts[0].y = -1.5e308;
    pts[1].y = 1.5e308;
    snprintf(msg, sizeof msg, "%s: the chart's values span too far to draw", p);
    vt_expect_err(vp_chart_write_png(&ch, p), VP_ERR_INVALID, msg);
    ch.ref_label = NULL;
    pts[0].y = 1e15;
    pts[1].y = 1e15 + 0.25; /* 2 doubles apart: no room for ticks between */
    snprintf(msg, sizeof msg,
             "%s: the chart's values are too close together for their size to draw", p);
    vt_expect_err(vp_chart_write_png(&ch, p), VP_ERR_INVALID, msg);
    pts[0].y = 0.5;
    pts[1].y = 0.6;
    ch.ref_label = "full";

    /* unwritable: a missing directory; the error names the path */
    char bad[1024];
    snprintf(bad, sizeof bad, "%s/missing/x.png", dir);
    ck_assert_int_eq(vp_chart_write_png(&ch, bad), VP_ERR_IO);
    ck_assert_msg(!strncmp(vp_error_last(), bad, strlen(bad)) && !strchr(vp_error_last(), '\n'),
                  "%s", vp_error_last());
    ck_assert_int_eq(vt_dir_entries(dir), 0);

    /* and the same chart is fine once the values are */
    vt_ok(vp_chart_write_png(&ch, p));
    ck_assert_int_eq(vt_dir_entries(dir), 1);
}
END_TEST

int main(void)
{
    const char *tmp = getenv("TMPDIR");
    snprintf(base, sizeof base, "%s/vpeft-draw-XXXXXX", tmp && *tmp ? tmp : "/tmp");
    if (!mkdtemp(base)) {
        perror("mkdtemp");
        return 1;
    }
    Suite *s = suite_create("draw");
    TCase *tc = tcase_create("draw");
    tcase_add_test(tc, test_canvas);
    tcase_add_test(tc, test_mask_blend);
    tcase_add_test(tc, test_outline);
    tcase_add_test(tc, test_text_box);
    tcase_add_test(tc, test_glyphs_distinct);
    tcase_add_test(tc, test_instance_label);
    tcase_add_test(tc, test_palette);
    tcase_add_test(tc, test_rect_line);
    tcase_add_test(tc, test_chart);
    tcase_add_test(tc, test_chart_errors);
    tcase_add_test(tc, test_lines);
    suite_add_tcase(s, tc);
    SRunner *sr = srunner_create(s);
    srunner_set_fork_status(sr, CK_NOFORK);
    srunner_run_all(sr, CK_NORMAL);
    int failed = srunner_ntests_failed(sr);
    srunner_free(sr);
    vt_rm_rf(base);
    printf("skipped: 0\n");
    return failed ? 1 : 0;
}
