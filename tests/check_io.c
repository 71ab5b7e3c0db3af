/*
 * safetensors suite: the writer's files read back exactly; a hand-made file
 * and the files made by the reference implementation (tests/data/msdeform)
 * read; every kind of corruption refused with its exact one-line message;
 * failed writes leave nothing behind. Needs no Vulkan device.
 */
#include <check.h>
#include <errno.h>
#include <math.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>
#include <sys/stat.h>
#include <unistd.h>

#include "harness.h"
#include "io/image.h"
#include "io/safetensors.h"
#include "util/sha256.h"
#include "util/clock.h"

static char base[512];    /* private directory for this run */
static char dir[700];     /* the current test's directory under it */
static unsigned n_skips;

static void vt_skip_io(const char *test, const char *reason)
{
    n_skips++;
    printf("SKIP: %s: %s\n", test, reason);
}

/* Give the current test a directory of its own. */
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


/* A file: 8-byte length (hlen, or the header's own length when hlen < 0),
 * the header, then n data bytes. */
static const char *raw(const char *name, const char *header, long long hlen, const void *data,
                       size_t n)
{
    const char *p = tpath(name);
    FILE *f = fopen(p, "wb");
    ck_assert_ptr_nonnull(f);
    unsigned long long len = hlen < 0 ? strlen(header) : (unsigned long long)hlen;
    for (int i = 0; i < 8; i++)
        fputc((int)(len >> (8 * i) & 0xff), f);
    fwrite(header, 1, strlen(header), f);
    if (n)
        fwrite(data, 1, n, f);
    ck_assert_int_eq(fclose(f), 0);
    return p;
}

static unsigned char zeros[4096];

/* vp_st_open must fail with this status and exactly this message (with
 * "%s" standing for the file's path). */
static void expect_fail(const char *path, vp_status want, const char *fmt)
{
    char msg[2048];
    snprintf(msg, sizeof msg, fmt, path);
    vp_st *st = (vp_st *)1;
    vp_status got = vp_st_open(path, &st);
    ck_assert_ptr_null(st);
    ck_assert_msg(got == want, "%s: status %d, want %d (%s)", path, got, want, vp_error_last());
    ck_assert_str_eq(vp_error_last(), msg);
}

/* ---- round trip --------------------------------------------------------- */

START_TEST(test_roundtrip)
{
    use_dir("roundtrip");
    float f32[6] = {1.5f, -2.0f, 3.25f, 0.0f, -0.0f, 1e-30f};
    double f64[3] = {1.0 / 3.0, -1e300, 4.0};
    uint16_t f16[5] = {0x3c00, 0xc000, 0x0001, 0x7c00, 0x3555}; /* 1, -2, 2^-24, inf, ~1/3 */
    uint16_t bf16[2] = {0x3f80, 0xc0a0};                        /* 1, -5 */
    int64_t i64[4] = {-1, 0, 1, INT64_MAX};
    uint8_t u8[3] = {0, 200, 255}, bools[2] = {1, 0};
    int32_t i32 = -7;
    const vp_st_entry e[] = {
        {"z.f32", VP_ST_F32, 2, (int64_t[]){2, 3}, f32},
        {"a.u8", VP_ST_U8, 1, (int64_t[]){3}, u8},
        {"f64", VP_ST_F64, 1, (int64_t[]){3}, f64},
        {"f16", VP_ST_F16, 1, (int64_t[]){5}, f16},
        {"bf16", VP_ST_BF16, 2, (int64_t[]){1, 2}, bf16},
        {"i64", VP_ST_I64, 1, (int64_t[]){4}, i64},
        {"bool", VP_ST_BOOL, 1, (int64_t[]){2}, bools},
        {"scalar", VP_ST_I32, 0, NULL, &i32},
        {"empty", VP_ST_F32, 2, (int64_t[]){0, 3}, NULL},
        {"name \"with\" quotes\n", VP_ST_U8, 1, (int64_t[]){1}, u8},
    };
    const size_t n = sizeof e / sizeof e[0];
    const vp_st_kv meta[] = {{"format", "pt"}, {"author", "vpeft \"tests\""}};
    const char *path = tpath("rt.safetensors");
    ck_assert_int_eq(vp_st_write(path, e, n, meta, 2), VP_OK);
    ck_assert_int_eq(vt_dir_entries(dir), 1); /* no temporary file left */

    vp_st *st;
    ck_assert_msg(vp_st_open(path, &st) == VP_OK, "%s", vp_error_last());
    ck_assert_str_eq(vp_st_path(st), path);
    ck_assert_uint_eq(vp_st_count(st), n);
    for (size_t i = 1; i < n; i++) /* sorted by name */
        ck_assert_int_lt(strcmp(vp_st_get(st, i - 1)->name, vp_st_get(st, i)->name), 0);
    ck_assert_ptr_null(vp_st_get(st, n));
    for (size_t i = 0; i < n; i++) {
        const vp_st_tensor *t = vp_st_find(st, e[i].name);
        ck_assert_ptr_nonnull(t);
        ck_assert_int_eq(t->dtype, e[i].dtype);
        ck_assert_int_eq(t->ndim, e[i].ndim);
        uint64_t ne = 1;
        for (int k = 0; k < t->ndim; k++) {
            ck_assert_int_eq(t->shape[k], e[i].shape[k]);
            ne *= (uint64_t)e[i].shape[k];
        }
        ck_assert_uint_eq(t->nelem, ne);
        ck_assert_uint_eq(t->nbytes, ne * vp_st_dtype_size(e[i].dtype));
        if (t->nbytes)
            ck_assert_int_eq(memcmp(t->data, e[i].data, t->nbytes), 0);
        /* aligned to the element size within the data section */
        ck_assert_uint_eq(t->offset % vp_st_dtype_size(t->dtype), 0);
    }
    ck_assert_uint_eq(vp_st_meta_count(st), 2);
    ck_assert_str_eq(vp_st_meta_key(st, 0), "author");
    ck_assert_str_eq(vp_st_meta(st, "author"), "vpeft \"tests\"");
    ck_assert_str_eq(vp_st_meta(st, "format"), "pt");
    ck_assert_ptr_null(vp_st_meta(st, "nope"));
    ck_assert_ptr_null(vp_st_meta_key(st, 2));

    float got[6];
    ck_assert_int_eq(vp_st_read_f32(st, "z.f32", got, 6), VP_OK);
    ck_assert_int_eq(memcmp(got, f32, sizeof f32), 0);
    ck_assert_int_eq(vp_st_read_f32(st, "f64", got, 3), VP_OK);
    ck_assert(got[0] == (float)(1.0 / 3.0) && got[1] == -INFINITY && got[2] == 4.0f);
    ck_assert_int_eq(vp_st_read_f32(st, "f16", got, 5), VP_OK);
    ck_assert(got[0] == 1.0f && got[1] == -2.0f && got[2] == 0x1p-24f && got[3] == INFINITY);
    ck_assert(got[4] == 0x1.554p-2f);
    ck_assert_int_eq(vp_st_read_f32(st, "bf16", got, 2), VP_OK);
    ck_assert(got[0] == 1.0f && got[1] == -5.0f);
    int64_t gi[4];
    ck_assert_int_eq(vp_st_read_i64(st, "i64", gi, 4), VP_OK);
    ck_assert_int_eq(memcmp(gi, i64, sizeof i64), 0);
    ck_assert_int_eq(vp_st_read_i64(st, "a.u8", gi, 3), VP_OK);
    ck_assert(gi[0] == 0 && gi[1] == 200 && gi[2] == 255);
    ck_assert_int_eq(vp_st_read_i64(st, "scalar", gi, 1), VP_OK);
    ck_assert_int_eq(gi[0], -7);
    ck_assert_int_eq(vp_st_read_f32(st, "empty", got, 0), VP_OK);
    ck_assert_int_eq(vp_st_check_shape(st, "z.f32", 2, (int64_t[]){2, 3}), VP_OK);
    vp_st_close(st);

    /* The bytes: the header is padded with spaces to a multiple of 8, its
     * keys are sorted with __metadata__ first, and the data section holds
     * 8-byte tensors first. */
    FILE *f = fopen(path, "rb");
    unsigned char b[4096];
    size_t nb = fread(b, 1, sizeof b, f);
    fclose(f);
    unsigned long long hl = 0;
    for (int i = 0; i < 8; i++)
        hl |= (unsigned long long)b[i] << (8 * i);
    ck_assert_uint_eq(hl % 8, 0);
    ck_assert_uint_lt(8 + hl, nb);
    char *h = strndup((const char *)b + 8, hl);
    ck_assert_ptr_eq(strstr(h, "{\"__metadata__\":{\"author\":\"vpeft \\\"tests\\\"\",\"format\":"
                               "\"pt\"},\"a.u8\":{\"dtype\":\"U8\",\"shape\":[3],"), h);
    ck_assert_ptr_nonnull(strstr(h, "\"empty\":{\"dtype\":\"F32\",\"shape\":[0,3],"));
    ck_assert_ptr_nonnull(strstr(h, "\"f64\":{\"dtype\":\"F64\",\"shape\":[3],\"data_offsets\":"
                                    "[0,24]}"));
    ck_assert_ptr_nonnull(strstr(h, "\"name \\\"with\\\" quotes\\u000a\":"));
    ck_assert_ptr_nonnull(strstr(h, "\"scalar\":{\"dtype\":\"I32\",\"shape\":[],"));
    size_t jl = strlen(h);
    while (jl && h[jl - 1] == ' ')
        jl--;
    ck_assert_int_eq(h[jl - 1], '}');
    ck_assert_uint_lt(hl - jl, 8);
    free(h);

    /* Writing again replaces the file atomically. */
    ck_assert_int_eq(vp_st_write(path, e, 1, NULL, 0), VP_OK);
    ck_assert_int_eq(vp_st_open(path, &st), VP_OK);
    ck_assert_uint_eq(vp_st_count(st), 1);
    ck_assert_uint_eq(vp_st_meta_count(st), 0);
    vp_st_close(st);
    unlink(path);
    vp_st_close(NULL);
}
END_TEST

/* A file made by hand, byte by byte: with metadata, unsorted keys, data not
 * aligned, and padding by other whitespace. */
START_TEST(test_handmade)
{
    use_dir("handmade");
    static const unsigned char bytes[] = {
        /* header length 104 */
        104, 0, 0, 0, 0, 0, 0, 0,
        /* {"b":{"dtype":"F16","shape":[1],"data_offsets":[0,2]},
         *  "__metadata__":{"k":"v"},"a":{"dtype":"F32","shape":[2],"data_offsets":[2,10]}} */
        '{', '"', 'b', '"', ':', '{', '"', 'd', 't', 'y', 'p', 'e', '"', ':', '"', 'F', '1', '6',
        '"', ',', '"', 's', 'h', 'a', 'p', 'e', '"', ':', '[', '1', ']', ',', '"', 'd', 'a', 't',
        'a', '_', 'o', 'f', 'f', 's', 'e', 't', 's', '"', ':', '[', '0', ',', '2', ']', '}', ',',
        '"', '_', '_', 'm', 'e', 't', 'a', 'd', 'a', 't', 'a', '_', '_', '"', ':', '{', '"', 'k',
        '"', ':', '"', 'v', '"', '}', ',', '"', 'a', '"', ':', '{', '"', 'd', 't', 'y', 'p', 'e',
        '"', ':', '"', 'F', '3', '2', '"', ',', '"', 's', 'h', 'a', 'p', 'e', '"', ':', '[', '2',
        ']', ',', '"', 'd', 'a', 't', 'a', '_', 'o', 'f', 'f', 's', 'e', 't', 's', '"', ':', '[',
        '2', ',', '1', '0', ']', '}', '}', '\n', ' ', '\t',
        /* data: b = f16 -1.5, a = f32 {0.5, 2} (unaligned) */
        0x00, 0xbe, 0x00, 0x00, 0x00, 0x3f, 0x00, 0x00, 0x00, 0x40,
    };
    /* the header is 147 bytes, not 104: fix the length byte first */
    unsigned char b[sizeof bytes];
    memcpy(b, bytes, sizeof b);
    b[0] = (unsigned char)(sizeof bytes - 8 - 10);
    const char *path = tpath("hand.safetensors");
    FILE *f = fopen(path, "wb");
    fwrite(b, 1, sizeof b, f);
    fclose(f);
    vp_st *st;
    ck_assert_msg(vp_st_open(path, &st) == VP_OK, "%s", vp_error_last());
    ck_assert_uint_eq(vp_st_count(st), 2);
    ck_assert_str_eq(vp_st_get(st, 0)->name, "a");
    ck_assert_uint_eq(vp_st_get(st, 0)->offset, 2);
    ck_assert_str_eq(vp_st_meta(st, "k"), "v");
    float a[2], bb;
    ck_assert_int_eq(vp_st_read_f32(st, "a", a, 2), VP_OK);
    ck_assert(a[0] == 0.5f && a[1] == 2.0f);
    ck_assert_int_eq(vp_st_read_f32(st, "b", &bb, 1), VP_OK);
    ck_assert(bb == -1.5f);
    vp_st_close(st);

    /* No tensors at all. */
    path = raw("empty.safetensors", "{}      ", -1, NULL, 0);
    ck_assert_int_eq(vp_st_open(path, &st), VP_OK);
    ck_assert_uint_eq(vp_st_count(st), 0);
    ck_assert_ptr_null(vp_st_find(st, "x"));
    vp_st_close(st);
}
END_TEST

/* The reference implementation's files (PyTorch's safetensors). */
START_TEST(test_reference_files)
{
    use_dir("reference_files");
    const char *src = getenv("VPEFT_SRCDIR");
    char path[1024];
    snprintf(path, sizeof path, "%s/tests/data/msdeform/case-a.safetensors", src ? src : ".");
    vp_st *st;
    ck_assert_msg(vp_st_open(path, &st) == VP_OK, "%s", vp_error_last());
    ck_assert_uint_eq(vp_st_count(st), 10);
    ck_assert_int_eq(vp_st_check_shape(st, "value", 4, (int64_t[]){2, 89, 3, 5}), VP_OK);
    ck_assert_int_eq(vp_st_check_shape(st, "loc", 6, (int64_t[]){2, 11, 3, 3, 4, 2}), VP_OK);
    int64_t shapes[6], start[3];
    ck_assert_int_eq(vp_st_read_i64(st, "shapes", shapes, 6), VP_OK);
    ck_assert_int_eq(vp_st_read_i64(st, "level_start", start, 3), VP_OK);
    ck_assert(shapes[0] == 7 && shapes[1] == 9 && shapes[4] == 2 && shapes[5] == 3);
    ck_assert(start[0] == 0 && start[1] == 63 && start[2] == 83);

    /* lookup and typed-read errors */
    const vp_st_tensor *t;
    ck_assert_int_eq(vp_st_lookup(st, "nope", &t), VP_ERR_NOT_FOUND);
    ck_assert_ptr_null(t);
    char want[1200];
    snprintf(want, sizeof want, "%s: no tensor \"nope\"", path);
    ck_assert_str_eq(vp_error_last(), want);
    float x[8];
    ck_assert_int_eq(vp_st_read_f32(st, "shapes", x, 6), VP_ERR_FORMAT);
    snprintf(want, sizeof want, "%s: tensor \"shapes\" is I64, not a float tensor (F32, F16, BF16 "
             "or F64)", path);
    ck_assert_str_eq(vp_error_last(), want);
    ck_assert_int_eq(vp_st_read_i64(st, "attn", shapes, 6), VP_ERR_SHAPE);
    snprintf(want, sizeof want, "%s: tensor \"attn\" has 792 elements (shape (2, 11, 3, 3, 4)), "
             "not the 6 expected", path);
    ck_assert_str_eq(vp_error_last(), want);
    ck_assert_int_eq(vp_st_read_i64(st, "level_start", shapes, 3), VP_OK);
    float *out = malloc(330 * sizeof *out);
    ck_assert_int_eq(vp_st_read_f32(st, "out", out, 330), VP_OK);
    free(out);
    int64_t big[330];
    ck_assert_int_eq(vp_st_read_i64(st, "out", big, 330), VP_ERR_FORMAT);
    snprintf(want, sizeof want, "%s: tensor \"out\" is F32, not an integer tensor", path);
    ck_assert_str_eq(vp_error_last(), want);
    ck_assert_int_eq(vp_st_check_shape(st, "value", 4, (int64_t[]){2, 89, 3, 6}), VP_ERR_SHAPE);
    snprintf(want, sizeof want, "%s: tensor \"value\" has shape (2, 89, 3, 5), expected "
             "(2, 89, 3, 6)", path);
    ck_assert_str_eq(vp_error_last(), want);
    vp_st_close(st);

    snprintf(path, sizeof path, "%s/tests/data/msdeform/case-b.safetensors", src ? src : ".");
    ck_assert_msg(vp_st_open(path, &st) == VP_OK, "%s", vp_error_last());
    ck_assert_int_eq(vp_st_check_shape(st, "value", 4, (int64_t[]){1, 45, 2, 8}), VP_OK);
    vp_st_close(st);
}
END_TEST

/* ---- corruptions ------------------------------------------------------- */

#define T_A "\"a\":{\"dtype\":\"F32\",\"shape\":[2],\"data_offsets\":[0,8]}"

START_TEST(test_missing_and_short)
{
    use_dir("missing_and_short");
    expect_fail(tpath("absent.safetensors"), VP_ERR_NOT_FOUND, "%s: No such file or directory");
    expect_fail(tpath("absent/x.safetensors"), VP_ERR_NOT_FOUND, "%s: No such file or directory");
    expect_fail(dir, VP_ERR_INVALID, "%s: not a regular file");
    /* A FIFO: refused without blocking in open (the alarm turns a
     * regression's hang into a failure). */
    const char *fifo = tpath("fifo.safetensors");
    ck_assert_int_eq(mkfifo(fifo, 0644), 0);
    alarm(20);
    expect_fail(fifo, VP_ERR_INVALID, "%s: not a regular file");
    alarm(0);
    unlink(fifo);

    const char *p = tpath("short.safetensors");
    FILE *f = fopen(p, "wb");
    fwrite("\x10\0\0\0\0", 1, 5, f);
    fclose(f);
    expect_fail(p, VP_ERR_FORMAT, "%s: 5 bytes, too short for the 8-byte header length");
    f = fopen(p, "wb");
    fclose(f);
    expect_fail(p, VP_ERR_FORMAT, "%s: 0 bytes, too short for the 8-byte header length");

    /* a header length beyond the file, and one that is absurd */
    expect_fail(raw("long.safetensors", "{" T_A "}", 1000, zeros, 8), VP_ERR_FORMAT,
                "%s: header length 1000 runs past the end of the file (70 bytes)");
    expect_fail(raw("huge.safetensors", "{}", (long long)0x7fffffffffffffff, NULL, 0),
                VP_ERR_FORMAT, "%s: header length 9223372036854775807 runs past the end of the "
                "file (10 bytes)");
    expect_fail(raw("zero.safetensors", "{}", 0, NULL, 0), VP_ERR_FORMAT,
                "%s: the header does not start with '{'");
    /* truncated data: the tensor runs past the end */
    expect_fail(raw("trunc.safetensors", "{" T_A "}", -1, zeros, 6), VP_ERR_FORMAT,
                "%s: tensor \"a\": data_offsets [0, 8) run past the end of the data section (6 "
                "bytes)");
}
END_TEST

START_TEST(test_bad_header)
{
    use_dir("bad_header");
    expect_fail(raw("json.safetensors", "{\"a\":{\"dtype\":\"F32\",", -1, NULL, 0),
                VP_ERR_FORMAT, "%s: the header is not valid JSON (at byte 19 of 20)");
    expect_fail(raw("json2.safetensors", "{\"a\" {}}", -1, NULL, 0), VP_ERR_FORMAT,
                "%s: the header is not valid JSON (at byte 5 of 8)");
    expect_fail(raw("arr.safetensors", "[1, 2]  ", -1, NULL, 0), VP_ERR_FORMAT,
                "%s: the header does not start with '{'");
    expect_fail(raw("trail.safetensors", "{} {}   ", -1, NULL, 0), VP_ERR_FORMAT,
                "%s: the header has more after its JSON object (at byte 3 of 8)");
    expect_fail(raw("utf8.safetensors", "{\"\xff\":1}", -1, NULL, 0), VP_ERR_FORMAT,
                "%s: header byte 2 is not valid UTF-8");
    const char *p = tpath("nul.safetensors");
    FILE *f = fopen(p, "wb");
    fwrite("\x08\0\0\0\0\0\0\0{}\0     ", 1, 16, f);
    fclose(f);
    expect_fail(p, VP_ERR_FORMAT, "%s: header byte 2 is NUL");
    expect_fail(raw("entry.safetensors", "{\"a\":[1]}", -1, NULL, 0), VP_ERR_FORMAT,
                "%s: tensor \"a\": entry is an array, not an object");
    expect_fail(raw("dup.safetensors", "{" T_A "," T_A "}", -1, zeros, 8), VP_ERR_FORMAT,
                "%s: tensor \"a\" appears twice");
    expect_fail(raw("meta.safetensors", "{\"__metadata__\":[]}", -1, NULL, 0), VP_ERR_FORMAT,
                "%s: __metadata__ is an array, not an object of strings");
    expect_fail(raw("meta2.safetensors", "{\"__metadata__\":{\"k\":\"v\",\"n\":3}}", -1, NULL, 0),
                VP_ERR_FORMAT, "%s: __metadata__ \"n\" is a number, not a string");
    expect_fail(raw("meta3.safetensors", "{\"__metadata__\":{},\"__metadata__\":{}}", -1, NULL, 0),
                VP_ERR_FORMAT, "%s: __metadata__ appears 2 times");
    expect_fail(raw("meta4.safetensors", "{\"__metadata__\":{\"k\":\"v\",\"k\":\"w\"}}", -1,
                    NULL, 0), VP_ERR_FORMAT, "%s: __metadata__ \"k\" appears twice");
    /* a name that would break the line is escaped */
    expect_fail(raw("esc.safetensors", "{\"a\\n\\\"b\":3}", -1, NULL, 0), VP_ERR_FORMAT,
                "%s: tensor \"a\\x0a\\\"b\": entry is a number, not an object");
}
END_TEST

/* 80k metadata keys: sorted in n log n (an insertion sort took 39 s),
 * found, and a repeated key among them still refused. */
START_TEST(test_many_metadata)
{
    use_dir("many_metadata");
    enum { N = 80000 };
    size_t cap = (size_t)N * 32 + 64, n = 0;
    char *h = malloc(cap);
    ck_assert_ptr_nonnull(h);
    n += (size_t)snprintf(h + n, cap - n, "{\"__metadata__\":{");
    for (int i = 0; i < N; i++) /* descending: the worst order for an insertion sort */
        n += (size_t)snprintf(h + n, cap - n, "%s\"k%06d\":\"v%d\"", i ? "," : "", N - 1 - i, i);
    n += (size_t)snprintf(h + n, cap - n, "}}");
    const char *p = raw("many.safetensors", h, -1, NULL, 0);
    vp_st *st;
    double t0 = vp_now_s();
    ck_assert_msg(vp_st_open(p, &st) == VP_OK, "%s", vp_error_last());
    double dt = vp_now_s() - t0;
    ck_assert_msg(dt < 5.0, "%d metadata keys took %.2f s", N, dt);
    ck_assert_uint_eq(vp_st_meta_count(st), N);
    ck_assert_str_eq(vp_st_meta_key(st, 0), "k000000");
    ck_assert_str_eq(vp_st_meta_key(st, N - 1), "k079999");
    ck_assert_str_eq(vp_st_meta(st, "k012345"), "v67654");
    vp_st_close(st);
    /* the same with one key twice */
    memcpy(strstr(h, "\"k000001\""), "\"k054321\"", 9);
    expect_fail(raw("dup.safetensors", h, -1, NULL, 0), VP_ERR_FORMAT,
                "%s: __metadata__ \"k054321\" appears twice");
    free(h);
}
END_TEST

/* Images: a FIFO or a directory is refused before reading; a small file
 * declaring a huge image is refused from its header, before any decoding
 * allocates it, naming the side limit. */
START_TEST(test_image_files)
{
    use_dir("image_files");
    vp_image img;
    char want[2048];
    const char *fifo = tpath("fifo.png");
    ck_assert_int_eq(mkfifo(fifo, 0644), 0);
    alarm(20);
    snprintf(want, sizeof want, "%s: not a regular file", fifo);
    ck_assert_int_eq(vp_image_load(fifo, &img), VP_ERR_INVALID);
    ck_assert_str_eq(vp_error_last(), want);
    alarm(0);
    unlink(fifo);
    snprintf(want, sizeof want, "%s: not a regular file", dir);
    ck_assert_int_eq(vp_image_load(dir, &img), VP_ERR_INVALID);
    ck_assert_str_eq(vp_error_last(), want);
    ck_assert_ptr_null(img.data);

    /* A PNG signature and an IHDR of 26000 x 26000 grey, nothing more:
     * 33 bytes that stb_image would decode to 2 GB of RGB. */
    unsigned char png[] = {
        0x89, 'P', 'N', 'G', '\r', '\n', 0x1a, '\n', 0, 0, 0, 13, 'I', 'H', 'D', 'R',
        0, 0, 0x65, 0x90, 0, 0, 0x65, 0x90, 8, 0, 0, 0, 0, 0x5e, 0x2b, 0x3b, 0x8b};
    const char *big = tpath("big.png");
    FILE *f = fopen(big, "wb");
    ck_assert_ptr_nonnull(f);
    ck_assert_uint_eq(fwrite(png, 1, sizeof png, f), sizeof png);
    ck_assert_int_eq(fclose(f), 0);
    snprintf(want, sizeof want, "%s: 26000x26000 pixels, vpeft reads images up to 16384 on a "
             "side", big);
    ck_assert_msg(vp_image_load(big, &img) == VP_ERR_INVALID, "%s", vp_error_last());
    ck_assert_str_eq(vp_error_last(), want);
    ck_assert_ptr_null(img.data);
    /* 30000 x 30000 RGB: past stb_image's own 2^30-byte limit too; the
     * message names vpeft's limit rather than "outofmem" or a corrupt file. */
    png[18] = png[22] = 0x75;
    png[19] = png[23] = 0x30;
    png[25] = 2;
    f = fopen(big, "wb");
    ck_assert_ptr_nonnull(f);
    ck_assert_uint_eq(fwrite(png, 1, sizeof png, f), sizeof png);
    ck_assert_int_eq(fclose(f), 0);
    snprintf(want, sizeof want, "%s: 30000x30000 pixels, vpeft reads images up to 16384 on a "
             "side", big);
    ck_assert_msg(vp_image_load(big, &img) == VP_ERR_INVALID, "%s", vp_error_last());
    ck_assert_str_eq(vp_error_last(), want);
    ck_assert_ptr_null(img.data);
    /* 10000 x 10000 grey: each side within the limit, 100 Mpixels in all */
    png[18] = png[22] = 0x27;
    png[19] = png[23] = 0x10;
    png[25] = 0;
    f = fopen(big, "wb");
    ck_assert_ptr_nonnull(f);
    ck_assert_uint_eq(fwrite(png, 1, sizeof png, f), sizeof png);
    ck_assert_int_eq(fclose(f), 0);
    snprintf(want, sizeof want, "%s: 10000x10000 pixels, vpeft reads images of up to 67108864 "
             "pixels (8192 x 8192)", big);
    ck_assert_msg(vp_image_load(big, &img) == VP_ERR_INVALID, "%s", vp_error_last());
    ck_assert_str_eq(vp_error_last(), want);
    /* A PNG chunk claiming more bytes than the file has: stb_image would
     * allocate what it claims (tests/fuzz: a 114-byte file, gigabytes) */
    static const unsigned char liar[] = {
        0x89, 'P', 'N', 'G', '\r', '\n', 0x1a, '\n', 0, 0, 0, 13, 'I', 'H', 'D', 'R',
        0, 0, 0, 2, 0, 0, 0, 2, 8, 0, 0, 0, 0, 0x5e, 0x2b, 0x3b, 0x8b,
        0x7f, 0xff, 0xff, 0xff, 'I', 'D', 'A', 'T', 0x78, 0x9c};
    const char *lp = tpath("liar.png");
    f = fopen(lp, "wb");
    ck_assert_ptr_nonnull(f);
    ck_assert_uint_eq(fwrite(liar, 1, sizeof liar, f), sizeof liar);
    ck_assert_int_eq(fclose(f), 0);
    snprintf(want, sizeof want, "%s: a corrupt PNG (a chunk runs past the end of the file)", lp);
    ck_assert_int_eq(vp_image_load(lp, &img), VP_ERR_FORMAT);
    ck_assert_str_eq(vp_error_last(), want);
    /* PNG and JPEG only: a BMP (which stb_image would decode) is refused */
    static const unsigned char bmp[] = {'B', 'M', 58, 0, 0, 0, 0, 0, 0, 0, 54, 0, 0, 0};
    const char *b = tpath("x.bmp");
    f = fopen(b, "wb");
    ck_assert_ptr_nonnull(f);
    ck_assert_uint_eq(fwrite(bmp, 1, sizeof bmp, f), sizeof bmp);
    ck_assert_int_eq(fclose(f), 0);
    snprintf(want, sizeof want, "%s: not a PNG or JPEG image", b);
    ck_assert_int_eq(vp_image_load(b, &img), VP_ERR_FORMAT);
    ck_assert_str_eq(vp_error_last(), want);
}
END_TEST

START_TEST(test_bad_fields)
{
    use_dir("bad_fields");
    static const struct {
        const char *entry; /* the value of tensor "w" */
        size_t data;       /* bytes of data after the header */
        const char *msg;   /* after "<path>: tensor \"w\": " */
    } cases[] = {
        {"{\"shape\":[2],\"data_offsets\":[0,8]}", 8, "no dtype"},
        {"{\"dtype\":\"F32\",\"data_offsets\":[0,8]}", 8, "no shape"},
        {"{\"dtype\":\"F32\",\"shape\":[2]}", 8, "no data_offsets"},
        {"{\"dtype\":4,\"shape\":[2],\"data_offsets\":[0,8]}", 8, "dtype is a number, not a string"},
        {"{\"dtype\":\"F128\",\"shape\":[2],\"data_offsets\":[0,8]}", 8, "unknown dtype \"F128\""},
        {"{\"dtype\":\"f32\",\"shape\":[2],\"data_offsets\":[0,8]}", 8, "unknown dtype \"f32\""},
        {"{\"dtype\":\"F32\",\"shape\":2,\"data_offsets\":[0,8]}", 8,
         "shape is a number, not an array"},
        {"{\"dtype\":\"F32\",\"shape\":[2,-3],\"data_offsets\":[0,8]}", 8,
         "shape[1] is -3, not a non-negative integer"},
        {"{\"dtype\":\"F32\",\"shape\":[1.5],\"data_offsets\":[0,8]}", 8,
         "shape[0] is 1.5, not a non-negative integer"},
        {"{\"dtype\":\"F32\",\"shape\":[\"2\"],\"data_offsets\":[0,8]}", 8,
         "shape[0] is the string \"2\", not a non-negative integer"},
        {"{\"dtype\":\"F32\",\"shape\":[2305843009213693952],\"data_offsets\":[0,8]}", 8,
         "shape[0] is 2.305843009213694e+18, over 2^53 (the largest integer a JSON number "
         "holds exactly)"},
        {"{\"dtype\":\"F32\",\"shape\":[1,1,1,1,1,1,1,1,2],\"data_offsets\":[0,8]}", 8,
         "shape has 9 dimensions; vpeft reads at most 8"},
        {"{\"dtype\":\"F32\",\"shape\":[4294967296,4294967296],\"data_offsets\":[0,8]}", 8,
         "shape (4294967296, 4294967296) of F32 is too large"},
        {"{\"dtype\":\"F32\",\"shape\":[2],\"data_offsets\":[0]}", 8,
         "data_offsets must be [begin, end], two non-negative integers"},
        {"{\"dtype\":\"F32\",\"shape\":[2],\"data_offsets\":[0,-8]}", 8,
         "data_offsets must be [begin, end], two non-negative integers"},
        {"{\"dtype\":\"F32\",\"shape\":[2],\"data_offsets\":{}}", 8,
         "data_offsets must be [begin, end], two non-negative integers"},
        {"{\"dtype\":\"F32\",\"shape\":[2],\"data_offsets\":[8,0]}", 8,
         "data_offsets [8, 0) end before they begin"},
        {"{\"dtype\":\"F32\",\"shape\":[2,3],\"data_offsets\":[0,12]}", 12,
         "data_offsets [0, 12) hold 12 bytes, shape (2, 3) of F32 needs 24"},
        {"{\"dtype\":\"BF16\",\"shape\":[],\"data_offsets\":[0,4]}", 4,
         "data_offsets [0, 4) hold 4 bytes, shape () of BF16 needs 2"},
        {"{\"dtype\":\"F32\",\"shape\":[2],\"data_offsets\":[8,16]}", 8,
         "data_offsets [8, 16) run past the end of the data section (8 bytes)"},
        {"{\"dtype\":\"F32\",\"shape\":[4],\"data_offsets\":[0,16]}", 8,
         "data_offsets [0, 16) run past the end of the data section (8 bytes)"},
    };
    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
        char h[512], fmt[512], name[64];
        snprintf(h, sizeof h, "{\"w\":%s}", cases[i].entry);
        snprintf(fmt, sizeof fmt, "%%s: tensor \"w\": %s", cases[i].msg);
        snprintf(name, sizeof name, "field%zu.safetensors", i);
        expect_fail(raw(name, h, -1, zeros, cases[i].data), VP_ERR_FORMAT, fmt);
    }
}
END_TEST

START_TEST(test_bad_layout)
{
    use_dir("bad_layout");
#define E(n, len, b, e) "\"" n "\":{\"dtype\":\"U8\",\"shape\":[" #len "],\"data_offsets\":[" #b "," #e "]}"
    expect_fail(raw("ov.safetensors", "{" E("a", 8, 0, 8) "," E("b", 8, 4, 12) "}", -1, zeros, 12),
                VP_ERR_FORMAT, "%s: tensors \"a\" [0, 8) and \"b\" [4, 12) overlap");
    expect_fail(raw("same.safetensors", "{" E("a", 8, 0, 8) "," E("b", 8, 0, 8) "}", -1, zeros, 8),
                VP_ERR_FORMAT, "%s: tensors \"a\" [0, 8) and \"b\" [0, 8) overlap");
    expect_fail(raw("inside.safetensors", "{" E("a", 8, 0, 8) "," E("b", 0, 4, 4) "}", -1, zeros,
                    8), VP_ERR_FORMAT, "%s: tensors \"a\" [0, 8) and \"b\" [4, 4) overlap");
    expect_fail(raw("hole.safetensors", "{" E("a", 4, 0, 4) "," E("b", 4, 8, 12) "}", -1, zeros,
                    12), VP_ERR_FORMAT, "%s: bytes [4, 8) of the data section belong to no tensor");
    expect_fail(raw("lead.safetensors", "{" E("a", 4, 4, 8) "}", -1, zeros, 8), VP_ERR_FORMAT,
                "%s: bytes [0, 4) of the data section belong to no tensor");
    expect_fail(raw("tail.safetensors", "{" E("a", 4, 0, 4) "}", -1, zeros, 9), VP_ERR_FORMAT,
                "%s: bytes [4, 9) of the data section belong to no tensor");
    expect_fail(raw("nodata.safetensors", "{}", -1, zeros, 3), VP_ERR_FORMAT,
                "%s: bytes [0, 3) of the data section belong to no tensor");
    /* valid: empty tensors at the boundaries, out of order in the header */
    vp_st *st;
    const char *p = raw("ok.safetensors", "{" E("b", 4, 4, 8) "," E("e", 0, 8, 8) "," E("a", 4, 0, 4)
                        "," E("z", 0, 0, 0) "}", -1, zeros, 8);
    ck_assert_msg(vp_st_open(p, &st) == VP_OK, "%s", vp_error_last());
    ck_assert_uint_eq(vp_st_count(st), 4);
    vp_st_close(st);
#undef E
}
END_TEST

/* ---- writer failures --------------------------------------------------- */

static const float wdata[1024];

START_TEST(test_write_errors)
{
    use_dir("write_errors");
    const vp_st_entry ok = {"w", VP_ST_F32, 1, (int64_t[]){4}, wdata};
    char want[1400];
    /* a directory that does not exist */
    const char *p = tpath("nodir/x.safetensors");
    ck_assert_int_eq(vp_st_write(p, &ok, 1, NULL, 0), VP_ERR_IO);
    snprintf(want, sizeof want, "%s: cannot create the temporary file %s/nodir/.x.safetensors.tmp."
             "%ld.0: No such file or directory", p, dir, (long)getpid());
    ck_assert_str_eq(vp_error_last(), want);
    ck_assert_int_eq(vt_dir_entries(dir), 0);

    /* invalid entries: nothing is created */
    p = tpath("bad.safetensors");
    vp_st_entry two[2] = {ok, ok};
    ck_assert_int_eq(vp_st_write(p, two, 2, NULL, 0), VP_ERR_INVALID);
    snprintf(want, sizeof want, "%s: tensor \"w\" appears twice", p);
    ck_assert_str_eq(vp_error_last(), want);
    two[1].name = "__metadata__";
    ck_assert_int_eq(vp_st_write(p, two, 2, NULL, 0), VP_ERR_INVALID);
    snprintf(want, sizeof want, "%s: tensor \"__metadata__\": the name is reserved", p);
    ck_assert_str_eq(vp_error_last(), want);
    two[1] = (vp_st_entry){"v", VP_ST_F32, 1, (int64_t[]){4}, NULL};
    ck_assert_int_eq(vp_st_write(p, two, 2, NULL, 0), VP_ERR_INVALID);
    snprintf(want, sizeof want, "%s: tensor \"v\": no data", p);
    ck_assert_str_eq(vp_error_last(), want);
    two[1] = (vp_st_entry){"v", VP_ST_F32, 1, (int64_t[]){-4}, wdata};
    ck_assert_int_eq(vp_st_write(p, two, 2, NULL, 0), VP_ERR_INVALID);
    snprintf(want, sizeof want, "%s: tensor \"v\": invalid shape", p);
    ck_assert_str_eq(vp_error_last(), want);
    two[1] = (vp_st_entry){"\xc3(", VP_ST_F32, 1, (int64_t[]){4}, wdata};
    ck_assert_int_eq(vp_st_write(p, two, 2, NULL, 0), VP_ERR_INVALID);
    snprintf(want, sizeof want, "%s: tensor \"\xc3(\": the name is not valid UTF-8", p);
    ck_assert_str_eq(vp_error_last(), want);
    const vp_st_kv kv[2] = {{"k", "1"}, {"k", "2"}};
    ck_assert_int_eq(vp_st_write(p, &ok, 1, kv, 2), VP_ERR_INVALID);
    snprintf(want, sizeof want, "%s: metadata \"k\" appears twice", p);
    ck_assert_str_eq(vp_error_last(), want);
    ck_assert_int_eq(vt_dir_entries(dir), 0);

    /* path is a directory: everything is written, the rename fails, the
     * temporary file goes */
    p = tpath("isdir");
    ck_assert_int_eq(mkdir(p, 0700), 0);
    ck_assert_int_eq(vp_st_write(p, &ok, 1, NULL, 0), VP_ERR_IO);
    snprintf(want, sizeof want, "%s: cannot rename %s/.isdir.tmp.%ld.0 to it: Is a directory", p,
             dir, (long)getpid());
    ck_assert_str_eq(vp_error_last(), want);
    ck_assert_int_eq(vt_dir_entries(dir), 1);
    ck_assert_int_eq(vt_dir_entries(p), 0);
    rmdir(p);

    /* a write that fails half-way (file size limit): the old file stays as
     * it was, no temporary file is left */
    p = tpath("old.safetensors");
    ck_assert_int_eq(vp_st_write(p, &ok, 1, NULL, 0), VP_OK);
    struct rlimit old, lim;
    ck_assert_int_eq(getrlimit(RLIMIT_FSIZE, &old), 0);
    lim = old;
    lim.rlim_cur = 1000;
    void (*prev)(int) = signal(SIGXFSZ, SIG_IGN);
    ck_assert_int_eq(setrlimit(RLIMIT_FSIZE, &lim), 0);
    const vp_st_entry big = {"big", VP_ST_F32, 1, (int64_t[]){1024}, wdata};
    vp_status st = vp_st_write(p, &big, 1, NULL, 0);
    ck_assert_int_eq(setrlimit(RLIMIT_FSIZE, &old), 0);
    signal(SIGXFSZ, prev);
    ck_assert_int_eq(st, VP_ERR_IO);
    snprintf(want, sizeof want, "%s: writing %s/.old.safetensors.tmp.%ld.0: File too large", p,
             dir, (long)getpid());
    ck_assert_str_eq(vp_error_last(), want);
    ck_assert_int_eq(vt_dir_entries(dir), 1);
    vp_st *r;
    ck_assert_int_eq(vp_st_open(p, &r), VP_OK);
    ck_assert_ptr_nonnull(vp_st_find(r, "w"));
    vp_st_close(r);
    unlink(p);

    /* an unwritable directory (root writes anyway, so only as a user) */
    if (geteuid() == 0) {
        vt_skip_io("test_write_errors (unwritable directory)", "running as root");
    } else {
        char ro[1024];
        snprintf(ro, sizeof ro, "%s/ro", dir);
        ck_assert_int_eq(mkdir(ro, 0500), 0);
        snprintf(want, sizeof want, "%s/x.safetensors", ro);
        ck_assert_int_eq(vp_st_write(want, &ok, 1, NULL, 0), VP_ERR_IO);
        ck_assert_ptr_nonnull(strstr(vp_error_last(), "Permission denied"));
        ck_assert_int_eq(vt_dir_entries(ro), 0);
        rmdir(ro);
    }
    ck_assert_int_eq(vt_dir_entries(dir), 0);
}
END_TEST

/* SHA-256 against FIPS 180-4's examples (one block, two blocks, a million
 * bytes fed in uneven pieces) and a file against sha256sum's digest. */
START_TEST(test_sha256)
{
    static const struct {
        const char *in, *want;
    } cases[] = {
        {"", "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855"},
        {"abc", "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad"},
        {"abcdbcdecdefdefgefghfghighijhijkijkljklmklmnlmnomnopnopq",
         "248d6a61d20638b8e5c026930c3e6039a33ce45964ff2167f6ecedd419db06c1"},
    };
    char hex[65];
    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
        vp_sha256 s;
        vp_sha256_init(&s);
        vp_sha256_update(&s, cases[i].in, strlen(cases[i].in));
        vp_sha256_hex(&s, hex);
        ck_assert_str_eq(hex, cases[i].want);
    }
    vp_sha256 s;
    vp_sha256_init(&s);
    char a[1000];
    memset(a, 'a', sizeof a);
    size_t done = 0;
    for (size_t k = 1; done < 1000000; k = k % 997 + 1) {
        size_t n = done + k > 1000000 ? 1000000 - done : k;
        vp_sha256_update(&s, a, n);
        done += n;
    }
    vp_sha256_hex(&s, hex);
    ck_assert_str_eq(hex, "cdc76e5c9914fb9281a1c7e284d73e67f1809a48a497200e046d39ccc7112cd0");
    use_dir("sha");
    const char *p = tpath("f.bin");
    FILE *f = fopen(p, "wb");
    for (int i = 0; i < 200000; i++)
        fputc((i * 7919) & 0xff, f);
    fclose(f);
    vt_ok(vp_sha256_file(p, hex));
    ck_assert_int_eq(vt_sh("sha256sum %s", p), 0);
    ck_assert_msg(!strncmp(vt_out, hex, 64), "%s, sha256sum %s", hex, vt_out);
}
END_TEST

int main(void)
{
    const char *tmp = getenv("TMPDIR");
    snprintf(base, sizeof base, "%s/vpeft-io-XXXXXX", tmp && *tmp ? tmp : "/tmp");
    if (!mkdtemp(base)) {
        perror("mkdtemp");
        return 1;
    }
    Suite *s = suite_create("io");
    TCase *tc = tcase_create("safetensors");
    tcase_add_test(tc, test_roundtrip);
    tcase_add_test(tc, test_handmade);
    tcase_add_test(tc, test_reference_files);
    tcase_add_test(tc, test_missing_and_short);
    tcase_add_test(tc, test_bad_header);
    tcase_add_test(tc, test_many_metadata);
    tcase_add_test(tc, test_image_files);
    tcase_add_test(tc, test_bad_fields);
    tcase_add_test(tc, test_bad_layout);
    tcase_add_test(tc, test_write_errors);
    tcase_add_test(tc, test_sha256);
    suite_add_tcase(s, tc);
    SRunner *sr = srunner_create(s);
    srunner_set_fork_status(sr, CK_NOFORK);
    srunner_run_all(sr, CK_NORMAL);
    int failed = srunner_ntests_failed(sr);
    srunner_free(sr);
    vt_rm_rf(base);
    printf("skipped: %u\n", n_skips);
    return failed ? 1 : 0;
}
