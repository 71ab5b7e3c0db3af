/*
 * Runtime suite: device enumeration and selection, device memory, staged
 * and mapped transfers, push and pooled descriptors, barrier placement,
 * replay, the pipeline cache file, profiling, and the validation hook.
 */
#include "harness.h"

#include <math.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "ops/util.h"
#include "runtime/internal.h" /* white-box: the validation-hook test */
#include <strings.h>

/* ---- instance and selection ------------------------------------------- */

START_TEST(test_enumerate)
{
    vp_instance *inst = vt_instance();
    uint32_t n = vp_instance_device_count(inst), def = vp_instance_default_device(inst);
    ck_assert_uint_ge(n, 1);
    ck_assert_uint_lt(def, n);
    const vp_device_info *d = vp_instance_device_info(inst, def);
    ck_assert(d->usable);
    ck_assert_uint_ge(d->api_version, VK_API_VERSION_1_2);
    ck_assert_uint_gt(d->subgroup_size, 0);
    ck_assert_uint_le(d->subgroup_min, d->subgroup_size);
    ck_assert_uint_ge(d->subgroup_max, d->subgroup_size);
    ck_assert_uint_ge(d->max_shared, 16384); /* the Vulkan minimum */
    ck_assert_uint_ge(d->n_heaps, 1);
    ck_assert_ptr_null(vp_instance_device_info(inst, n));
    /* The default outranks every other usable device by type. */
    static const int rank[] = {[VK_PHYSICAL_DEVICE_TYPE_OTHER] = 0,
                               [VK_PHYSICAL_DEVICE_TYPE_INTEGRATED_GPU] = 3,
                               [VK_PHYSICAL_DEVICE_TYPE_DISCRETE_GPU] = 4,
                               [VK_PHYSICAL_DEVICE_TYPE_VIRTUAL_GPU] = 2,
                               [VK_PHYSICAL_DEVICE_TYPE_CPU] = 1};
    for (uint32_t i = 0; i < n; i++) {
        const vp_device_info *o = vp_instance_device_info(inst, i);
        if (o->usable)
            ck_assert_int_le(rank[o->type], rank[d->type]);
    }
}
END_TEST

START_TEST(test_pick)
{
    vp_instance *inst = vt_instance();
    uint32_t idx = 99, def = vp_instance_default_device(inst);
    vt_ok(vp_instance_pick(inst, NULL, &idx));
    ck_assert_uint_eq(idx, def);
    vt_ok(vp_instance_pick(inst, "", &idx));
    ck_assert_uint_eq(idx, def);
    char spec[16];
    snprintf(spec, sizeof spec, "%u", def);
    idx = 99;
    vt_ok(vp_instance_pick(inst, spec, &idx));
    ck_assert_uint_eq(idx, def);

    /* A case-flipped substring of the name selects the device. */
    const char *name = vp_instance_device_info(inst, def)->name;
    char sub[8] = {0};
    size_t len = strlen(name) < 4 ? strlen(name) : 4;
    for (size_t i = 0; i < len; i++) {
        char c = name[i];
        sub[i] = (c >= 'a' && c <= 'z') ? (char)(c - 32) : (c >= 'A' && c <= 'Z') ? (char)(c + 32) : c;
    }
    idx = 99;
    vt_ok(vp_instance_pick(inst, sub, &idx));
    /* The first device whose name holds the substring, ignoring case. */
    uint32_t first = 99;
    for (uint32_t i = 0; i < vp_instance_device_count(inst) && first == 99; i++)
        for (const char *p = vp_instance_device_info(inst, i)->name; *p && first == 99; p++)
            if (!strncasecmp(p, sub, strlen(sub)))
                first = i;
    ck_assert_uint_eq(idx, first);
    ck_assert_uint_le(first, def);

    ck_assert_int_eq(vp_instance_pick(inst, "no-such-device-xyz", &idx), VP_ERR_NOT_FOUND);
    char want[512];
    snprintf(want, sizeof want, "VPEFT_DEVICE=no-such-device-xyz matches no Vulkan device; "
                                "devices: 0: %s [", vp_instance_device_info(inst, 0)->name);
    ck_assert_msg(!strncmp(vp_error_last(), want, strlen(want)), "message: %s", vp_error_last());
    ck_assert_int_eq(vp_instance_pick(inst, "4000000000", &idx), VP_ERR_NOT_FOUND);
}
END_TEST

/* ---- memory ------------------------------------------------------------ */

START_TEST(test_memory)
{
    vp_device *dev = vt_device((uint32_t)_i);
    vp_mem_stats s0 = vp_mem_get_stats(dev);
    enum { N = 40 };
    vp_alloc a[N];
    for (int i = 0; i < N; i++)
        vt_ok(vp_mem_alloc(dev, (VkDeviceSize)(1 + i * 37), &a[i]));
    /* Aligned for vec4 loads and for the device's storage offsets, disjoint. */
    const vp_device_info *d = vt_device_info((uint32_t)_i);
    for (int i = 0; i < N; i++) {
        ck_assert_uint_eq(a[i].offset % 16, 0);
        ck_assert_uint_eq(a[i].offset % d->storage_align, 0);
        for (int j = 0; j < i; j++)
            ck_assert(!vp_ranges_overlap(vp_mem_range(&a[i]), vp_mem_range(&a[j])));
    }
    vp_mem_stats s1 = vp_mem_get_stats(dev);
    ck_assert_uint_le(s1.n_device_allocs - s0.n_device_allocs, 1);
    /* Freeing in a scattered order coalesces: one allocation of everything
     * freed fits again without a new block. */
    for (int i = 0; i < N; i += 2)
        vp_mem_free(dev, &a[i]);
    for (int i = 1; i < N; i += 2)
        vp_mem_free(dev, &a[i]);
    ck_assert_ptr_null(a[0].block);
    vp_mem_stats s2 = vp_mem_get_stats(dev);
    ck_assert_uint_eq(s2.used, s0.used);
    vp_alloc big;
    vt_ok(vp_mem_alloc(dev, 1u << 20, &big));
    vp_mem_stats s3 = vp_mem_get_stats(dev);
    ck_assert_uint_eq(s3.n_device_allocs, s2.n_device_allocs);
    vp_mem_free(dev, &big);
    vp_mem_free(dev, &big); /* a second free of a cleared alloc is a no-op */

    /* Larger than a block: its own block. */
    vt_ok(vp_mem_alloc(dev, (65u << 20) + 5, &big));
    ck_assert_uint_ge(big.block->size, (65u << 20) + 5);
    ck_assert_uint_eq(vp_mem_get_stats(dev).n_device_allocs, s3.n_device_allocs + 1);
    vp_mem_free(dev, &big);

    ck_assert_int_eq(vp_mem_alloc(dev, 0, &big), VP_ERR_INVALID);
}
END_TEST

/* Upload, download and partial copies on a device: round trip exact. */
static void roundtrip(vp_device *dev)
{
    enum { N = 3001 };
    float h[N], back[N];
    vt_rand(h, N, 7);
    vp_tensor *t = vt_tensor(dev, "rt", 1, (int64_t[]){N}, h);
    vt_ok(vp_tensor_download(t, back, sizeof back));
    ck_assert(!memcmp(h, back, sizeof h));
    float part[5] = {1, 2, 3, 4, 5}, got[5];
    vt_ok(vp_mem_upload(dev, &t->mem, 400, part, sizeof part));
    vt_ok(vp_mem_download(dev, &t->mem, 400, got, sizeof got));
    ck_assert(!memcmp(part, got, sizeof got));
    vt_ok(vp_mem_download(dev, &t->mem, 396, got, 4));
    ck_assert(got[0] == h[99]);
    ck_assert_int_eq(vp_tensor_upload(t, h, 12), VP_ERR_SHAPE);
    ck_assert_str_eq(vp_error_last(), "tensor rt: upload of 12 bytes, the tensor holds 12004");
    ck_assert_int_eq(vp_mem_upload(dev, &t->mem, t->mem.size - 4, part, 8), VP_ERR_INVALID);
    vp_tensor_destroy(t);
}

/* A matmul, an add with broadcast, and many dispatches in one recording. */
static void small_ops(uint32_t d, vp_device *dev, int n_adds)
{
    float ha[6 * 5], hb[5 * 4], bias[4];
    double want[6 * 4];
    vt_rand(ha, 30, 1);
    vt_rand(hb, 20, 2);
    vt_rand(bias, 4, 3);
    double *da = vt_f64(ha, 30), *db = vt_f64(hb, 20), *dbias = vt_f64(bias, 4);
    vp_ref_matmul(da, false, db, false, want, 1, 6, 4, 5, 0, 0, 0);
    /* The device adds in float, one bias at a time. */
    for (int i = 0; i < 24; i++) {
        float w = (float)want[i];
        for (int r = 0; r < n_adds; r++)
            w += bias[i % 4];
        want[i] = w;
    }
    free(da), free(db), free(dbias);
    vp_tensor *a = vt_tensor(dev, "a", 2, (int64_t[]){6, 5}, ha);
    vp_tensor *b = vt_tensor(dev, "b", 2, (int64_t[]){5, 4}, hb);
    vp_tensor *bi = vt_tensor(dev, "bias", 1, (int64_t[]){4}, bias);
    vp_tensor *c = vt_tensor(dev, "c", 2, (int64_t[]){6, 4}, NULL);
    vp_cmd *cmd;
    vt_ok(vp_cmd_create(dev, &cmd));
    vt_ok(vp_cmd_begin(cmd));
    vt_ok(vp_op_matmul(cmd, a, false, b, false, c));
    for (int r = 0; r < n_adds; r++)
        vt_ok(vp_op_add(cmd, c, bi, c));
    vt_ok(vp_cmd_submit(cmd));
    float *got = vt_download(c);
    vt_assert_close(got, want, 24, 1e-7, "%s: matmul + %d bias adds", vt_device_info(d)->name,
                    n_adds);
    free(got);
    vp_cmd_destroy(cmd);
    vp_tensor_destroy(a);
    vp_tensor_destroy(b);
    vp_tensor_destroy(bi);
    vp_tensor_destroy(c);
}

START_TEST(test_mapped_or_staged)
{
    vp_device *dev = vt_device((uint32_t)_i);
    ck_assert(vp_device_uses_staging(dev) == !vt_device_info((uint32_t)_i)->unified);
    roundtrip(dev);
    small_ops((uint32_t)_i, dev, 3);
}
END_TEST

/* The staging path and the descriptor-pool path, forced on any device, and
 * mapped memory whose large reads are staged. */
START_TEST(test_staged_pooled)
{
    vp_device *dev;
    vp_device_opts o = {.force_staging = true, .no_push_descriptors = true, .profile = 0,
                        .no_pipeline_cache = true};
    vt_ok(vp_device_create(vt_instance(), vt_device_info((uint32_t)_i)->index, &o, &dev));
    ck_assert(vp_device_uses_staging(dev));
    ck_assert(!vp_device_uses_push_descriptors(dev));
    ck_assert_ptr_null(vp_device_cache_path(dev));
    roundtrip(dev);
    small_ops((uint32_t)_i, dev, 300); /* > one descriptor pool's 128 sets */
    /* Large transfers go through the staging buffer in chunks. */
    size_t n = (40u << 20) / 4 + 3;
    float *h = malloc(n * 4), *back = malloc(n * 4);
    for (size_t i = 0; i < n; i++)
        h[i] = (float)i;
    vp_tensor *t = vt_tensor(dev, "large", 1, (int64_t[]){(int64_t)n}, h);
    vt_ok(vp_tensor_download(t, back, n * 4));
    ck_assert(!memcmp(h, back, n * 4));
    vp_tensor_destroy(t);
    free(h);
    free(back);
    vp_device_destroy(dev);

    /* mapped memory with large reads staged, as on discrete GPUs */
    vp_device_opts r = {.stage_reads = true, .profile = 0};
    vt_ok(vp_device_create(vt_instance(), vt_device_info((uint32_t)_i)->index, &r, &dev));
    ck_assert(vp_device_stages_reads(dev) == !vp_device_uses_staging(dev));
    roundtrip(dev); /* a 12 KB read staged, 4 and 20-byte reads through the mapping */
    small_ops((uint32_t)_i, dev, 3);
    vp_device_destroy(dev);
}
END_TEST

/* ---- command recording ------------------------------------------------- */

START_TEST(test_barriers)
{
    vp_device *dev = vt_device((uint32_t)_i);
    int64_t sh[1] = {100};
    vp_tensor *a = vt_tensor(dev, "a", 1, sh, NULL), *b = vt_tensor(dev, "b", 1, sh, NULL);
    vp_tensor *c = vt_tensor(dev, "c", 1, sh, NULL), *e = vt_tensor(dev, "e", 1, sh, NULL);
    vp_cmd *cmd;
    vt_ok(vp_cmd_create(dev, &cmd));
    vt_ok(vp_cmd_begin(cmd));
    vt_ok(vp_op_fill(cmd, a, 2.0f));     /* independent ...                 */
    vt_ok(vp_op_fill(cmd, b, 3.0f));     /* ... of each other: no barrier   */
    ck_assert_uint_eq(vp_cmd_get_stats(cmd).barriers, 0);
    vt_ok(vp_op_add(cmd, a, b, c));      /* reads a, b: barrier 1           */
    ck_assert_uint_eq(vp_cmd_get_stats(cmd).barriers, 1);
    vt_ok(vp_op_scale(cmd, a, 0.5f, e)); /* reads a (not written since): no */
    ck_assert_uint_eq(vp_cmd_get_stats(cmd).barriers, 1);
    vt_ok(vp_op_fill(cmd, a, -1.0f));    /* overwrites what add reads: 2    */
    ck_assert_uint_eq(vp_cmd_get_stats(cmd).barriers, 2);
    vt_ok(vp_op_mul(cmd, c, e, c));      /* reads c and e, written before barrier 2: no */
    ck_assert_uint_eq(vp_cmd_get_stats(cmd).barriers, 2);
    vt_ok(vp_op_add(cmd, c, c, b));      /* reads c, just written: 3        */
    vp_cmd_stats s = vp_cmd_get_stats(cmd);
    ck_assert_uint_eq(s.barriers, 3);
    ck_assert_uint_eq(s.dispatches, 7);
    vt_ok(vp_cmd_submit(cmd));
    float *ha = vt_download(a), *hb = vt_download(b), *hc = vt_download(c), *he = vt_download(e);
    for (int i = 0; i < 100; i++) {
        ck_assert_float_eq(ha[i], -1.0f);
        ck_assert_float_eq(he[i], 1.0f);
        ck_assert_float_eq(hc[i], 5.0f);
        ck_assert_float_eq(hb[i], 10.0f);
    }
    free(ha), free(hb), free(hc), free(he);
    vp_cmd_destroy(cmd);
    vp_tensor_destroy(a), vp_tensor_destroy(b), vp_tensor_destroy(c), vp_tensor_destroy(e);
}
END_TEST

/* Recorded once, submitted many times: x += y three times. */
START_TEST(test_replay)
{
    vp_device *dev = vt_device((uint32_t)_i);
    float hx[37], hy[37];
    vt_rand(hx, 37, 4);
    vt_rand(hy, 37, 5);
    vp_tensor *x = vt_tensor(dev, "x", 1, (int64_t[]){37}, hx);
    vp_tensor *y = vt_tensor(dev, "y", 1, (int64_t[]){37}, hy);
    vp_cmd *cmd;
    vt_ok(vp_cmd_create(dev, &cmd));
    vt_ok(vp_cmd_begin(cmd));
    vt_ok(vp_op_add(cmd, x, y, x));
    vt_ok(vp_cmd_end(cmd));
    vp_mem_stats m0 = vp_mem_get_stats(dev);
    for (int r = 0; r < 3; r++) {
        vt_ok(vp_cmd_submit(cmd));
        for (int i = 0; i < 37; i++)
            hx[i] += hy[i];
    }
    /* Replays allocate nothing. */
    ck_assert_uint_eq(vp_mem_get_stats(dev).n_device_allocs, m0.n_device_allocs);
    float *got = vt_download(x);
    double *want = vt_f64(hx, 37);
    vt_assert_close(got, want, 37, 1e-12, "replayed add");
    free(want);
    free(got);
    /* Dispatching into an ended recording is an error, not a crash. */
    ck_assert_int_eq(vp_op_fill(cmd, x, 0.0f), VP_ERR_INVALID);
    vp_cmd_destroy(cmd);
    vp_tensor_destroy(x);
    vp_tensor_destroy(y);
}
END_TEST

static const vp_kernel k_fill_test = {"fill", 1, 0x1, 8, NULL, 0};

START_TEST(test_dispatch_checks)
{
    vp_device *dev = vt_device((uint32_t)_i);
    vp_pipeline *p;
    uint32_t spec[4] = {64, 1, 1, 0};
    vt_ok(vp_pipeline_get(dev, &k_fill_test, spec, 4, &p));
    vp_pipeline *p2;
    vt_ok(vp_pipeline_get(dev, &k_fill_test, spec, 4, &p2));
    ck_assert_ptr_eq(p, p2); /* cached */
    vp_tensor *t = vt_tensor(dev, "t", 1, (int64_t[]){8}, NULL);
    vp_range r[2] = {vp_tensor_range(t), vp_tensor_range(t)};
    float push[2] = {0};
    vp_cmd *cmd;
    vt_ok(vp_cmd_create(dev, &cmd));
    ck_assert_int_eq(vp_cmd_dispatch(cmd, p, r, 1, push, 8, 1, 1, 1), VP_ERR_INVALID);
    ck_assert_str_eq(vp_error_last(), "fill: dispatch outside vp_cmd_begin/vp_cmd_end");
    vt_ok(vp_cmd_begin(cmd));
    ck_assert_int_eq(vp_cmd_dispatch(cmd, p, r, 2, push, 8, 1, 1, 1), VP_ERR_INVALID);
    ck_assert_str_eq(vp_error_last(), "fill: 2 bindings given, the kernel has 1");
    ck_assert_int_eq(vp_cmd_dispatch(cmd, p, r, 1, push, 4, 1, 1, 1), VP_ERR_INVALID);
    ck_assert_str_eq(vp_error_last(), "fill: 4 bytes of push constants given, the kernel takes 8");
    vp_range empty = {0};
    ck_assert_int_eq(vp_cmd_dispatch(cmd, p, &empty, 1, push, 8, 1, 1, 1), VP_ERR_INVALID);
    ck_assert_int_eq(vp_cmd_dispatch(cmd, p, r, 1, push, 8, UINT32_MAX, 1, 1), VP_ERR_UNSUPPORTED);
    vt_ok(vp_cmd_submit(cmd));
    vp_cmd_destroy(cmd);
    vp_tensor_destroy(t);

    static const vp_kernel missing = {"no_such_shader", 1, 1, 0, NULL, 0};
    ck_assert_int_eq(vp_pipeline_get(dev, &missing, spec, 3, &p), VP_ERR_NOT_FOUND);
    ck_assert_str_eq(vp_error_last(), "no embedded shader named 'no_such_shader'");
    uint32_t huge[4] = {100000, 1, 1, 0};
    ck_assert_int_eq(vp_pipeline_get(dev, &k_fill_test, huge, 4, &p), VP_ERR_UNSUPPORTED);
}
END_TEST

/* ---- pipeline cache ---------------------------------------------------- */

static char cache_dir[256];

static vp_device *cache_device(uint32_t d)
{
    vp_device *dev;
    vp_device_opts o = {.profile = 0, .cache_dir = cache_dir};
    vt_ok(vp_device_create(vt_instance(), vt_device_info(d)->index, &o, &dev));
    return dev;
}

static void build_some(vp_device *dev)
{
    vp_tensor *t = vt_tensor(dev, "t", 1, (int64_t[]){16}, NULL);
    vp_cmd *cmd;
    vt_ok(vp_cmd_create(dev, &cmd));
    vt_ok(vp_cmd_begin(cmd));
    vt_ok(vp_op_fill(cmd, t, 1.0f));
    vt_ok(vp_op_scale(cmd, t, 2.0f, t));
    vt_ok(vp_cmd_submit(cmd));
    float *h = vt_download(t);
    ck_assert_float_eq(h[15], 2.0f);
    free(h);
    vp_cmd_destroy(cmd);
    vp_tensor_destroy(t);
}

static long file_size(const char *p)
{
    struct stat sb;
    return stat(p, &sb) ? -1 : (long)sb.st_size;
}

static void write_file(const char *p, const void *data, size_t n)
{
    FILE *f = fopen(p, "wb");
    ck_assert_ptr_nonnull(f);
    ck_assert_uint_eq(fwrite(data, 1, n, f), n);
    fclose(f);
}

static void *read_file(const char *p, long *n)
{
    *n = file_size(p);
    ck_assert_int_gt(*n, 0);
    void *b = malloc((size_t)*n);
    FILE *f = fopen(p, "rb");
    ck_assert_uint_eq(fread(b, 1, (size_t)*n, f), (size_t)*n);
    fclose(f);
    return b;
}

START_TEST(test_pipeline_cache)
{
    uint32_t d = (uint32_t)_i;
    snprintf(cache_dir, sizeof cache_dir, "%s/pc-%d/sub", getenv("TMPDIR") ? getenv("TMPDIR") : "/tmp",
             (int)getpid());
    char path[1024];

    vp_device *dev = cache_device(d);
    ck_assert_str_eq(vp_device_cache_state(dev), "absent");
    snprintf(path, sizeof path, "%s", vp_device_cache_path(dev));
    build_some(dev);
    vp_device_destroy(dev); /* writes the file, creating the directories */
    long n;
    char *good = read_file(path, &n);
    ck_assert(!memcmp(good, "VPEFTPC1", 8));

    dev = cache_device(d);
    ck_assert_msg(!strncmp(vp_device_cache_state(dev), "loaded ", 7), "%s",
                  vp_device_cache_state(dev));
    build_some(dev);
    vp_device_destroy(dev);

    /* Corrupt payload, truncated, foreign, garbage, empty: all ignored, and
     * the device still works and rewrites a good file. */
    struct { const char *why; long len; int flip; } cases[] = {
        {"ignored: checksum mismatch", n, (int)n - 3},
        {"ignored: truncated", n - 1, -1},
        {"ignored: written for another device or driver", n, 20},
        {"ignored: not a vpeft pipeline cache", n, 2},
        {"ignored: shorter than its header", 10, -1},
        {"ignored: empty or unreadable", 0, -1},
    };
    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
        char *bad = malloc((size_t)n);
        memcpy(bad, good, (size_t)n);
        if (cases[i].flip >= 0)
            bad[cases[i].flip] ^= 0x5a;
        write_file(path, bad, (size_t)cases[i].len);
        free(bad);
        dev = cache_device(d);
        ck_assert_str_eq(vp_device_cache_state(dev), cases[i].why);
        build_some(dev);
        vp_device_destroy(dev);
        long m;
        char *again = read_file(path, &m);
        ck_assert(!memcmp(again, "VPEFTPC1", 8));
        free(again);
    }
    free(good);

    /* An unwritable cache location only warns. */
    snprintf(cache_dir, sizeof cache_dir, "/proc/vpeft-cannot-write");
    dev = cache_device(d);
    build_some(dev);
    vp_device_destroy(dev);
}
END_TEST

/* ---- profiling ---------------------------------------------------------- */

static const char *needs_timestamps(const vp_device_info *d)
{
    return d->feat.timestamps ? NULL : "no timestamp queries on the compute queue";
}

START_TEST(test_profile)
{
    vp_device *dev;
    vp_device_opts o = {.profile = 1, .no_pipeline_cache = true};
    vt_ok(vp_device_create(vt_instance(), vt_device_info((uint32_t)_i)->index, &o, &dev));
    ck_assert(vp_device_profiling(dev));
    vp_tensor *t = vt_tensor(dev, "t", 1, (int64_t[]){4096}, NULL);
    vp_cmd *cmd;
    vt_ok(vp_cmd_create(dev, &cmd));
    vt_ok(vp_cmd_begin(cmd));
    for (int i = 0; i < 300; i++) /* > one query pool */
        vt_ok(vp_op_fill(cmd, t, (float)i));
    vt_ok(vp_op_scale(cmd, t, 2.0f, t));
    vt_ok(vp_cmd_submit(cmd));
    vt_ok(vp_cmd_submit(cmd));
    uint32_t n;
    const vp_profile_row *rows = vp_profile_rows(dev, &n);
    ck_assert_uint_eq(n, 2);
    bool seen_fill = false, seen_scale = false;
    for (uint32_t i = 0; i < n; i++) {
        if (!strcmp(rows[i].kernel, "fill")) {
            seen_fill = true;
            ck_assert_uint_eq(rows[i].calls, 600);
        } else if (!strcmp(rows[i].kernel, "unary")) {
            seen_scale = true;
            ck_assert_uint_eq(rows[i].calls, 2);
        }
        ck_assert(rows[i].total_ms > 0 && rows[i].total_ms < 60000);
    }
    ck_assert(seen_fill && seen_scale);
    float *h = vt_download(t);
    ck_assert_float_eq(h[0], 598.0f);
    free(h);
    vp_cmd_destroy(cmd);
    vp_tensor_destroy(t);
    char *buf = NULL;
    size_t len = 0;
    FILE *mf = open_memstream(&buf, &len);
    vp_profile_print(dev, mf);
    fclose(mf);
    ck_assert_ptr_nonnull(strstr(buf, "kernel"));
    ck_assert_ptr_nonnull(strstr(buf, "fill"));
    ck_assert_ptr_nonnull(strstr(buf, "600"));
    free(buf);
    vp_device_destroy(dev); /* prints the table to stderr */
}
END_TEST

/* ---- validation hook ---------------------------------------------------- */

static const char *needs_validation(const vp_device_info *d)
{
    (void)d;
    return vp_instance_validation_enabled(vt_instance())
               ? NULL
               : "VK_LAYER_KHRONOS_validation is not installed";
}

/* The validation layer's errors reach vpeft's counter: a zero-size buffer
 * is invalid usage the layer must report. */
START_TEST(test_validation_hook)
{
    vp_device *dev = vt_device((uint32_t)_i);
    uint64_t before = vp_instance_validation_errors(vt_instance());
    VkBufferCreateInfo bi = {.sType = VK_STRUCTURE_TYPE_BUFFER_CREATE_INFO,
                             .size = 0,
                             .usage = VK_BUFFER_USAGE_STORAGE_BUFFER_BIT};
    VkBuffer buf = VK_NULL_HANDLE;
    printf("note: the next validation error is provoked on purpose\n");
    fflush(stdout);
    VkResult r = vkCreateBuffer(dev->vk, &bi, NULL, &buf);
    if (r == VK_SUCCESS && buf)
        vkDestroyBuffer(dev->vk, buf, NULL);
    uint64_t after = vp_instance_validation_errors(vt_instance());
    ck_assert_uint_ge(after, before + 1);
    vt_expect_validation_errors(after - before);
}
END_TEST

int main(void)
{
    Suite *s = suite_create("runtime");
    TCase *tc = vt_tcase("instance");
    tcase_add_test(tc, test_enumerate);
    tcase_add_test(tc, test_pick);
    suite_add_tcase(s, tc);
    tc = vt_tcase("memory");
    vt_add_per_device(tc, test_memory, NULL);
    vt_add_per_device(tc, test_mapped_or_staged, NULL);
    vt_add_per_device(tc, test_staged_pooled, NULL);
    suite_add_tcase(s, tc);
    tc = vt_tcase("commands");
    vt_add_per_device(tc, test_barriers, NULL);
    vt_add_per_device(tc, test_replay, NULL);
    vt_add_per_device(tc, test_dispatch_checks, NULL);
    suite_add_tcase(s, tc);
    tc = vt_tcase("pipelines");
    vt_add_per_device(tc, test_pipeline_cache, NULL);
    vt_add_per_device(tc, test_profile, needs_timestamps);
    vt_add_per_device(tc, test_validation_hook, needs_validation);
    suite_add_tcase(s, tc);
    return vt_run(s);
}
