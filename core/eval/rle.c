/*
 * COCO RLE (rle.h): the runs of a mask in column-major order and their
 * compressed text form, byte for byte as pycocotools' maskApi.c
 * (rleToString / rleFrString): each count, after the third as the
 * difference from the count two before it, in 5-bit groups, least
 * significant first, with a continuation bit (0x20) and the sign carried
 * by the last group's 0x10 bit, each group + 48 as a character.
 */
#include <stdbool.h>
#include <stdlib.h>
#include <string.h>

#include "eval/rle.h"
#include "util/error.h"

void vp_rle_free(vp_rle *r)
{
    if (r) {
        free(r->counts);
        memset(r, 0, sizeof *r);
    }
}

static vp_status check_size(int64_t h, int64_t w)
{
    if (h < 0 || w < 0 || h > UINT32_MAX || w > UINT32_MAX ||
        (uint64_t)h * (uint64_t)w > UINT32_MAX)
        return vp_error_set(VP_ERR_INVALID, "RLE: a %lld x %lld mask is too large", (long long)h,
                            (long long)w);
    return VP_OK;
}

/* Runs of `inside(i)` over the column-major positions. */
#define RUNS(h, w, inside_at)                                                                    \
    do {                                                                                         \
        vp_status st_ = check_size(h, w);                                                        \
        if (st_)                                                                                 \
            return st_;                                                                          \
        size_t cap_ = 16, n_ = 0;                                                                \
        uint32_t *c_ = malloc(cap_ * sizeof *c_), run_ = 0;                                      \
        bool cur_ = false;                                                                       \
        for (int64_t x_ = 0; c_ && x_ < (w); x_++)                                               \
            for (int64_t y_ = 0; c_ && y_ < (h); y_++) {                                         \
                bool v_ = inside_at(y_ * (w) + x_);                                              \
                if (v_ != cur_) {                                                                \
                    if (n_ + 1 >= cap_) {                                                        \
                        uint32_t *g_ = realloc(c_, 2 * cap_ * sizeof *c_);                       \
                        if (!g_) {                                                               \
                            free(c_);                                                            \
                            c_ = NULL;                                                           \
                            break;                                                               \
                        }                                                                        \
                        c_ = g_;                                                                 \
                        cap_ *= 2;                                                               \
                    }                                                                            \
                    c_[n_++] = run_;                                                             \
                    run_ = 0;                                                                    \
                    cur_ = v_;                                                                   \
                }                                                                                \
                run_++;                                                                          \
            }                                                                                    \
        if (!c_)                                                                                 \
            return vp_error_set(VP_ERR_NOMEM, "RLE: out of host memory");                       \
        c_[n_++] = run_;                                                                         \
        *out = (vp_rle){h, w, c_, n_};                                                           \
        return VP_OK;                                                                            \
    } while (0)

vp_status vp_rle_from_mask(const uint8_t *mask, int64_t h, int64_t w, vp_rle *out)
{
#define MASK_AT(i) (mask[(i)] != 0)
    RUNS(h, w, MASK_AT);
#undef MASK_AT
}

vp_status vp_rle_from_logits(const float *logits, int64_t h, int64_t w, vp_rle *out)
{
#define LOGIT_AT(i) (logits[(i)] > 0.0f)
    RUNS(h, w, LOGIT_AT);
#undef LOGIT_AT
}

vp_status vp_rle_from_counts(const uint32_t *counts, size_t n, int64_t h, int64_t w, vp_rle *out)
{
    memset(out, 0, sizeof *out);
    vp_status st = check_size(h, w);
    if (st)
        return st;
    uint64_t sum = 0;
    for (size_t i = 0; i < n; i++)
        sum += counts[i];
    if (sum != (uint64_t)(h * w))
        return vp_error_set(VP_ERR_FORMAT, "RLE: the counts sum to %llu, a %lld x %lld mask has "
                            "%lld pixels", (unsigned long long)sum, (long long)h, (long long)w,
                            (long long)(h * w));
    uint32_t *c = malloc((n ? n : 1) * sizeof *c);
    if (!c)
        return vp_error_set(VP_ERR_NOMEM, "RLE: out of host memory");
    memcpy(c, counts, n * sizeof *c);
    *out = (vp_rle){h, w, c, n};
    return VP_OK;
}

char *vp_rle_to_string(const vp_rle *r)
{
    /* At most 7 characters per count (a 32-bit difference in 5-bit groups). */
    char *s = malloc(r->n * 7 + 1);
    if (!s)
        return NULL;
    size_t p = 0;
    for (size_t i = 0; i < r->n; i++) {
        int64_t x = r->counts[i];
        if (i > 2)
            x -= r->counts[i - 2];
        bool more = true;
        while (more) {
            int c = (int)(x & 0x1f);
            x >>= 5; /* arithmetic: the sign stays */
            more = (c & 0x10) ? x != -1 : x != 0;
            if (more)
                c |= 0x20;
            s[p++] = (char)(c + 48);
        }
    }
    s[p] = '\0';
    return s;
}

vp_status vp_rle_from_string(const char *s, int64_t h, int64_t w, vp_rle *out)
{
    memset(out, 0, sizeof *out);
    vp_status st = check_size(h, w);
    if (st)
        return st;
    size_t len = strlen(s), n = 0;
    uint32_t *c = malloc((len ? len : 1) * sizeof *c);
    if (!c)
        return vp_error_set(VP_ERR_NOMEM, "RLE: out of host memory");
    uint64_t sum = 0;
    for (size_t p = 0; p < len;) {
        int64_t x = 0;
        int k = 0;
        bool more = true;
        while (more) {
            if (p >= len || s[p] < 48 || s[p] > 48 + 63 || k > 6) {
                free(c);
                return vp_error_set(VP_ERR_FORMAT, "RLE: not a compressed COCO string (%s at "
                                    "character %zu)", p >= len ? "it ends inside a count"
                                    : k > 6 ? "a count too long" : "a character out of range", p);
            }
            int v = s[p++] - 48;
            x |= (int64_t)(v & 0x1f) << (5 * k);
            more = v & 0x20;
            k++;
            if (!more && (v & 0x10))
                x |= -((int64_t)1 << (5 * k));
        }
        if (n > 2)
            x += c[n - 2];
        if (x < 0 || x > UINT32_MAX) {
            free(c);
            return vp_error_set(VP_ERR_FORMAT, "RLE: run %zu has the length %lld", n,
                                (long long)x);
        }
        c[n++] = (uint32_t)x;
        sum += (uint64_t)x;
    }
    if (sum != (uint64_t)(h * w)) {
        free(c);
        return vp_error_set(VP_ERR_FORMAT, "RLE: the runs cover %llu pixels, a %lld x %lld mask "
                            "has %lld", (unsigned long long)sum, (long long)h, (long long)w,
                            (long long)(h * w));
    }
    *out = (vp_rle){h, w, c, n};
    return VP_OK;
}

void vp_rle_to_mask(const vp_rle *r, uint8_t *mask)
{
    int64_t pos = 0;
    for (size_t i = 0; i < r->n; i++)
        for (uint32_t k = 0; k < r->counts[i]; k++, pos++) {
            int64_t x = pos / r->h, y = pos % r->h;
            mask[y * r->w + x] = (uint8_t)(i & 1);
        }
}

uint64_t vp_rle_area(const vp_rle *r)
{
    uint64_t a = 0;
    for (size_t i = 1; i < r->n; i += 2)
        a += r->counts[i];
    return a;
}

vp_status vp_rle_union(const vp_rle *a, const vp_rle *b, vp_rle *out)
{
    memset(out, 0, sizeof *out);
    if (a->h != b->h || a->w != b->w)
        return vp_error_set(VP_ERR_INVALID, "RLE: union of a %lld x %lld and a %lld x %lld mask",
                            (long long)a->h, (long long)a->w, (long long)b->h, (long long)b->w);
    /* Walk both run lists together; each step ends at the nearer run end. */
    uint32_t *c = malloc((a->n + b->n + 1) * sizeof *c);
    if (!c)
        return vp_error_set(VP_ERR_NOMEM, "RLE: out of host memory");
    size_t ia = 0, ib = 0, n = 0;
    uint64_t left_a = a->n ? a->counts[0] : 0, left_b = b->n ? b->counts[0] : 0;
    uint64_t total = (uint64_t)(a->h * a->w), pos = 0;
    int cur = 0; /* the value of run c[n] */
    c[0] = 0;
    while (pos < total) {
        while (ia < a->n && !left_a && ++ia < a->n)
            left_a = a->counts[ia];
        while (ib < b->n && !left_b && ++ib < b->n)
            left_b = b->counts[ib];
        if (ia >= a->n || ib >= b->n)
            break; /* counts that sum short: cannot happen for valid RLEs */
        uint64_t step = left_a < left_b ? left_a : left_b;
        int v = (ia % 2) | (ib % 2);
        if (v != cur) {
            c[++n] = 0;
            cur = v;
        }
        c[n] += (uint32_t)step;
        left_a -= step;
        left_b -= step;
        pos += step;
    }
    *out = (vp_rle){a->h, a->w, c, n + 1};
    return VP_OK;
}
