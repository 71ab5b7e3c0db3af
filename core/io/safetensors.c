/*
 * safetensors reader (mmap + validation of every header field) and atomic
 * writer. See safetensors.h for the format and the choices made.
 */
#include "io/safetensors.h"

#include <cjson/cJSON.h>
#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <unistd.h>

#include "util/file.h"
#include "util/strbuf.h"

static const struct {
    const char *name;
    size_t size;
} dtypes[VP_ST_N_DTYPES] = {
    [VP_ST_BOOL] = {"BOOL", 1},    [VP_ST_U8] = {"U8", 1},     [VP_ST_I8] = {"I8", 1},
    [VP_ST_F8_E5M2] = {"F8_E5M2", 1}, [VP_ST_F8_E4M3] = {"F8_E4M3", 1},
    [VP_ST_I16] = {"I16", 2},      [VP_ST_U16] = {"U16", 2},   [VP_ST_F16] = {"F16", 2},
    [VP_ST_BF16] = {"BF16", 2},    [VP_ST_I32] = {"I32", 4},   [VP_ST_U32] = {"U32", 4},
    [VP_ST_F32] = {"F32", 4},      [VP_ST_I64] = {"I64", 8},   [VP_ST_U64] = {"U64", 8},
    [VP_ST_F64] = {"F64", 8},
};

const char *vp_st_dtype_str(vp_st_dtype t)
{
    return (unsigned)t < VP_ST_N_DTYPES ? dtypes[t].name : "?";
}

size_t vp_st_dtype_size(vp_st_dtype t)
{
    return (unsigned)t < VP_ST_N_DTYPES ? dtypes[t].size : 0;
}

struct vp_st {
    char *path;
    void *map;
    size_t map_size;
    const uint8_t *data;   /* the data section */
    uint64_t data_size;
    vp_st_tensor *t;       /* sorted by name; names owned */
    size_t n;
    char **meta;           /* key, value, key, value ... sorted by key */
    size_t n_meta;
};

/* ---- small helpers ------------------------------------------------------ */

/* The name in double quotes, escaped so that the message stays one printable
 * line, shortened past 96 bytes. */
static const char *quoted(const char *s, char *buf, size_t n)
{
    size_t o = 0, max = n - 8;
    buf[o++] = '"';
    for (size_t i = 0; s[i] && o < max; i++) {
        unsigned char c = (unsigned char)s[i];
        if (i >= 96) {
            o += (size_t)snprintf(buf + o, n - o, "...");
            break;
        }
        if (c == '"' || c == '\\')
            o += (size_t)snprintf(buf + o, n - o, "\\%c", c);
        else if (c < 0x20 || c == 0x7f)
            o += (size_t)snprintf(buf + o, n - o, "\\x%02x", c);
        else
            buf[o++] = (char)c;
    }
    buf[o++] = '"';
    buf[o] = '\0';
    return buf;
}

#define QBUF 160
#define Q(s, b) quoted((s), (b), sizeof(b))

/* "(2, 3)" for a shape; "()" for a scalar. */
static void shape_str(const int64_t *shape, int ndim, char *buf, size_t n)
{
    size_t o = (size_t)snprintf(buf, n, "(");
    for (int i = 0; i < ndim && o < n; i++)
        o += (size_t)snprintf(buf + o, n - o, "%s%lld", i ? ", " : "", (long long)shape[i]);
    if (o < n)
        snprintf(buf + o, n - o, ")");
}

/* Offset of the first byte that is not valid UTF-8 (or is NUL), or -1. */
static long bad_utf8(const uint8_t *s, size_t n)
{
    size_t i = 0;
    while (i < n) {
        uint8_t c = s[i];
        if (c == 0)
            return (long)i;
        if (c < 0x80) {
            i++;
            continue;
        }
        size_t len;
        uint32_t cp, min;
        if ((c & 0xe0) == 0xc0)
            len = 2, cp = c & 0x1f, min = 0x80;
        else if ((c & 0xf0) == 0xe0)
            len = 3, cp = c & 0x0f, min = 0x800;
        else if ((c & 0xf8) == 0xf0)
            len = 4, cp = c & 0x07, min = 0x10000;
        else
            return (long)i;
        if (i + len > n)
            return (long)i;
        for (size_t k = 1; k < len; k++) {
            if ((s[i + k] & 0xc0) != 0x80)
                return (long)i;
            cp = cp << 6 | (s[i + k] & 0x3f);
        }
        if (cp < min || cp > 0x10ffff || (cp >= 0xd800 && cp <= 0xdfff))
            return (long)i;
        i += len;
    }
    return -1;
}

static const char *json_kind(const cJSON *j)
{
    if (cJSON_IsObject(j)) return "an object";
    if (cJSON_IsArray(j)) return "an array";
    if (cJSON_IsString(j)) return "a string";
    if (cJSON_IsNumber(j)) return "a number";
    if (cJSON_IsBool(j)) return "a boolean";
    if (cJSON_IsNull(j)) return "null";
    return "invalid";
}

/* A JSON number that is an integer in [0, 2^53] (exact in a double). */
static bool json_uint(const cJSON *j, uint64_t *v)
{
    if (!cJSON_IsNumber(j))
        return false;
    double d = j->valuedouble;
    if (!(d >= 0.0 && d <= 9007199254740992.0) || d != floor(d))
        return false;
    *v = (uint64_t)d;
    return true;
}

/* How a JSON value prints in a message: numbers as numbers, else its kind. */
static const char *json_show(const cJSON *j, char *buf, size_t n)
{
    if (cJSON_IsNumber(j)) {
        snprintf(buf, n, "%.17g", j->valuedouble);
        return buf;
    }
    if (cJSON_IsString(j)) {
        char q[QBUF];
        snprintf(buf, n, "the string %s", Q(j->valuestring, q));
        return buf;
    }
    return json_kind(j);
}

static uint16_t rd16(const uint8_t *p) { return (uint16_t)(p[0] | p[1] << 8); }
static uint32_t rd32(const uint8_t *p)
{
    return (uint32_t)p[0] | (uint32_t)p[1] << 8 | (uint32_t)p[2] << 16 | (uint32_t)p[3] << 24;
}
static uint64_t rd64(const uint8_t *p) { return rd32(p) | (uint64_t)rd32(p + 4) << 32; }

/* ---- the reader --------------------------------------------------------- */

void vp_st_close(vp_st *st)
{
    if (!st)
        return;
    for (size_t i = 0; i < st->n; i++)
        free((char *)st->t[i].name);
    free(st->t);
    for (size_t i = 0; i < 2 * st->n_meta; i++)
        free(st->meta[i]);
    free(st->meta);
    if (st->map)
        munmap(st->map, st->map_size);
    free(st->path);
    free(st);
}

static int cmp_name(const void *a, const void *b)
{
    return strcmp(((const vp_st_tensor *)a)->name, ((const vp_st_tensor *)b)->name);
}

/* Metadata (key, value) pairs by key. */
static int cmp_pair(const void *a, const void *b)
{
    return strcmp(*(char *const *)a, *(char *const *)b);
}

static int cmp_offsets(const void *a, const void *b)
{
    const vp_st_tensor *x = *(const vp_st_tensor *const *)a, *y = *(const vp_st_tensor *const *)b;
    if (x->offset != y->offset)
        return x->offset < y->offset ? -1 : 1;
    if (x->nbytes != y->nbytes)
        return x->nbytes < y->nbytes ? -1 : 1;
    return strcmp(x->name, y->name);
}

/* Parse one tensor entry `j` named `name` into *t (name not yet set). */
static vp_status parse_tensor(const vp_st *st, const char *name, const cJSON *j, vp_st_tensor *t)
{
    const char *p = st->path;
    char q[QBUF], v[QBUF];
    Q(name, q);
    if (!cJSON_IsObject(j))
        return vp_error_set(VP_ERR_FORMAT, "%s: tensor %s: entry is %s, not an object", p, q,
                            json_kind(j));
    const cJSON *dt = cJSON_GetObjectItemCaseSensitive(j, "dtype");
    const cJSON *sh = cJSON_GetObjectItemCaseSensitive(j, "shape");
    const cJSON *off = cJSON_GetObjectItemCaseSensitive(j, "data_offsets");
    if (!dt)
        return vp_error_set(VP_ERR_FORMAT, "%s: tensor %s: no dtype", p, q);
    if (!cJSON_IsString(dt))
        return vp_error_set(VP_ERR_FORMAT, "%s: tensor %s: dtype is %s, not a string", p, q,
                            json_kind(dt));
    int d = 0;
    while (d < VP_ST_N_DTYPES && strcmp(dtypes[d].name, dt->valuestring))
        d++;
    if (d == VP_ST_N_DTYPES)
        return vp_error_set(VP_ERR_FORMAT, "%s: tensor %s: unknown dtype %s", p, q,
                            Q(dt->valuestring, v));
    t->dtype = (vp_st_dtype)d;

    if (!sh)
        return vp_error_set(VP_ERR_FORMAT, "%s: tensor %s: no shape", p, q);
    if (!cJSON_IsArray(sh))
        return vp_error_set(VP_ERR_FORMAT, "%s: tensor %s: shape is %s, not an array", p, q,
                            json_kind(sh));
    int ndim = cJSON_GetArraySize(sh);
    if (ndim > VP_ST_MAX_DIMS)
        return vp_error_set(VP_ERR_FORMAT, "%s: tensor %s: shape has %d dimensions; vpeft reads "
                            "at most %d", p, q, ndim, VP_ST_MAX_DIMS);
    t->ndim = ndim;
    uint64_t nelem = 1;
    bool overflow = false;
    for (int i = 0; i < ndim; i++) {
        const cJSON *e = cJSON_GetArrayItem(sh, i);
        uint64_t x;
        if (cJSON_IsNumber(e) && e->valuedouble > 9007199254740992.0)
            return vp_error_set(VP_ERR_FORMAT, "%s: tensor %s: shape[%d] is %s, over 2^53 (the "
                                "largest integer a JSON number holds exactly)", p, q, i,
                                json_show(e, v, sizeof v));
        if (!json_uint(e, &x) || x > (uint64_t)INT64_MAX)
            return vp_error_set(VP_ERR_FORMAT, "%s: tensor %s: shape[%d] is %s, not a "
                                "non-negative integer", p, q, i, json_show(e, v, sizeof v));
        t->shape[i] = (int64_t)x;
        if (x && nelem > UINT64_MAX / x)
            overflow = true;
        nelem *= x;
    }
    char ss[VP_ST_MAX_DIMS * 22 + 4];
    shape_str(t->shape, ndim, ss, sizeof ss);
    size_t es = dtypes[d].size;
    if (overflow || nelem > UINT64_MAX / es)
        return vp_error_set(VP_ERR_FORMAT, "%s: tensor %s: shape %s of %s is too large", p, q, ss,
                            dtypes[d].name);
    t->nelem = nelem;

    if (!off)
        return vp_error_set(VP_ERR_FORMAT, "%s: tensor %s: no data_offsets", p, q);
    uint64_t b, e;
    if (!cJSON_IsArray(off) || cJSON_GetArraySize(off) != 2 ||
        !json_uint(cJSON_GetArrayItem(off, 0), &b) || !json_uint(cJSON_GetArrayItem(off, 1), &e))
        return vp_error_set(VP_ERR_FORMAT, "%s: tensor %s: data_offsets must be [begin, end], "
                            "two non-negative integers", p, q);
    if (e < b)
        return vp_error_set(VP_ERR_FORMAT, "%s: tensor %s: data_offsets [%llu, %llu) end before "
                            "they begin", p, q, (unsigned long long)b, (unsigned long long)e);
    if (e - b != nelem * es)
        return vp_error_set(VP_ERR_FORMAT, "%s: tensor %s: data_offsets [%llu, %llu) hold %llu "
                            "bytes, shape %s of %s needs %llu", p, q, (unsigned long long)b,
                            (unsigned long long)e, (unsigned long long)(e - b), ss,
                            dtypes[d].name, (unsigned long long)(nelem * es));
    if (e > st->data_size)
        return vp_error_set(VP_ERR_FORMAT, "%s: tensor %s: data_offsets [%llu, %llu) run past "
                            "the end of the data section (%llu bytes)", p, q,
                            (unsigned long long)b, (unsigned long long)e,
                            (unsigned long long)st->data_size);
    t->offset = b;
    t->nbytes = e - b;
    t->data = st->data + b;
    return VP_OK;
}

static vp_status parse_metadata(vp_st *st, const cJSON *j)
{
    char q[QBUF];
    if (!cJSON_IsObject(j))
        return vp_error_set(VP_ERR_FORMAT, "%s: __metadata__ is %s, not an object of strings",
                            st->path, json_kind(j));
    size_t n = (size_t)cJSON_GetArraySize(j);
    st->meta = calloc(2 * n + 1, sizeof *st->meta);
    if (!st->meta)
        return vp_error_set(VP_ERR_NOMEM, "%s: out of memory for the metadata", st->path);
    const cJSON *e;
    cJSON_ArrayForEach(e, j) {
        if (!cJSON_IsString(e))
            return vp_error_set(VP_ERR_FORMAT, "%s: __metadata__ %s is %s, not a string",
                                st->path, Q(e->string, q), json_kind(e));
        char *k = strdup(e->string), *v = strdup(e->valuestring);
        st->meta[2 * st->n_meta] = k;
        st->meta[2 * st->n_meta + 1] = v;
        st->n_meta++;
        if (!k || !v)
            return vp_error_set(VP_ERR_NOMEM, "%s: out of memory for the metadata", st->path);
    }
    /* Sort the (key, value) pairs by key, then reject duplicates. */
    char **pairs = st->meta;
    qsort(pairs, st->n_meta, 2 * sizeof *pairs, cmp_pair);
    for (size_t i = 1; i < st->n_meta; i++)
        if (!strcmp(pairs[2 * i - 2], pairs[2 * i]))
            return vp_error_set(VP_ERR_FORMAT, "%s: __metadata__ %s appears twice", st->path,
                                Q(pairs[2 * i], q));
    return VP_OK;
}

/* Everything after mapping: header length, JSON, entries, coverage. */
static vp_status parse(vp_st *st)
{
    const char *p = st->path;
    const uint8_t *base = st->map;
    uint64_t size = st->map_size;
    uint64_t hn = rd64(base);
    if (hn > size - 8)
        return vp_error_set(VP_ERR_FORMAT, "%s: header length %llu runs past the end of the file "
                            "(%llu bytes)", p, (unsigned long long)hn, (unsigned long long)size);
    if (hn > VP_ST_MAX_HEADER)
        return vp_error_set(VP_ERR_FORMAT, "%s: header length %llu is over the limit of %u bytes",
                            p, (unsigned long long)hn, VP_ST_MAX_HEADER);
    const uint8_t *h = base + 8;
    if (hn == 0 || h[0] != '{')
        return vp_error_set(VP_ERR_FORMAT, "%s: the header does not start with '{'", p);
    long bad = bad_utf8(h, (size_t)hn);
    if (bad >= 0)
        return vp_error_set(VP_ERR_FORMAT, "%s: header byte %ld is %s", p, bad,
                            h[bad] ? "not valid UTF-8" : "NUL");
    st->data = h + hn;
    st->data_size = size - 8 - hn;

    const char *end = NULL;
    cJSON *root = cJSON_ParseWithLengthOpts((const char *)h, (size_t)hn, &end, false);
    if (!root) {
        long at = end ? (long)(end - (const char *)h) : 0;
        return vp_error_set(VP_ERR_FORMAT, "%s: the header is not valid JSON (at byte %ld of %llu)",
                            p, at, (unsigned long long)hn);
    }
    /* After the object only whitespace (the writer's padding) may follow. */
    for (const char *c = end; c < (const char *)h + hn; c++)
        if (*c != ' ' && *c != '\t' && *c != '\n' && *c != '\r') {
            cJSON_Delete(root);
            return vp_error_set(VP_ERR_FORMAT, "%s: the header has more after its JSON object "
                                "(at byte %ld of %llu)", p, (long)(c - (const char *)h),
                                (unsigned long long)hn);
        }

    vp_status err = VP_OK;
    size_t n = 0, n_meta_keys = 0;
    const cJSON *e;
    cJSON_ArrayForEach(e, root) {
        if (!strcmp(e->string, "__metadata__"))
            n_meta_keys++;
        else
            n++;
    }
    char q[QBUF];
    if (n_meta_keys > 1) {
        err = vp_error_set(VP_ERR_FORMAT, "%s: __metadata__ appears %zu times", p, n_meta_keys);
        goto done;
    }
    st->t = calloc(n ? n : 1, sizeof *st->t);
    if (!st->t) {
        err = vp_error_set(VP_ERR_NOMEM, "%s: out of memory for %zu tensors", p, n);
        goto done;
    }
    cJSON_ArrayForEach(e, root) {
        if (!strcmp(e->string, "__metadata__")) {
            if ((err = parse_metadata(st, e)))
                goto done;
            continue;
        }
        vp_st_tensor *t = &st->t[st->n];
        if ((err = parse_tensor(st, e->string, e, t)))
            goto done;
        if (!(t->name = strdup(e->string))) {
            err = vp_error_set(VP_ERR_NOMEM, "%s: out of memory", p);
            goto done;
        }
        st->n++;
    }
    qsort(st->t, st->n, sizeof *st->t, cmp_name);
    for (size_t i = 1; i < st->n; i++)
        if (!strcmp(st->t[i - 1].name, st->t[i].name)) {
            err = vp_error_set(VP_ERR_FORMAT, "%s: tensor %s appears twice", p,
                               Q(st->t[i].name, q));
            goto done;
        }

    /* The tensors must tile the data section: sorted by offset, each begins
     * where the last ended, and the last ends at the end of the file. */
    const vp_st_tensor **by_off = malloc((st->n ? st->n : 1) * sizeof *by_off);
    if (!by_off) {
        err = vp_error_set(VP_ERR_NOMEM, "%s: out of memory", p);
        goto done;
    }
    for (size_t i = 0; i < st->n; i++)
        by_off[i] = &st->t[i];
    qsort(by_off, st->n, sizeof *by_off, cmp_offsets);
    uint64_t at = 0;
    for (size_t i = 0; i < st->n && !err; i++) {
        const vp_st_tensor *t = by_off[i];
        char q2[QBUF];
        if (t->offset < at)
            err = vp_error_set(VP_ERR_FORMAT, "%s: tensors %s [%llu, %llu) and %s [%llu, %llu) "
                               "overlap", p, Q(by_off[i - 1]->name, q),
                               (unsigned long long)by_off[i - 1]->offset,
                               (unsigned long long)(by_off[i - 1]->offset + by_off[i - 1]->nbytes),
                               Q(t->name, q2), (unsigned long long)t->offset,
                               (unsigned long long)(t->offset + t->nbytes));
        else if (t->offset > at)
            err = vp_error_set(VP_ERR_FORMAT, "%s: bytes [%llu, %llu) of the data section belong "
                               "to no tensor", p, (unsigned long long)at,
                               (unsigned long long)t->offset);
        at = t->offset + t->nbytes;
    }
    free(by_off);
    if (!err && at != st->data_size)
        err = vp_error_set(VP_ERR_FORMAT, "%s: bytes [%llu, %llu) of the data section belong to "
                           "no tensor", p, (unsigned long long)at,
                           (unsigned long long)st->data_size);
done:
    cJSON_Delete(root);
    return err;
}

vp_status vp_st_open(const char *path, vp_st **out)
{
    *out = NULL;
    vp_st *st = calloc(1, sizeof *st);
    if (!st || !(st->path = strdup(path))) {
        free(st);
        return vp_error_set(VP_ERR_NOMEM, "%s: out of memory", path);
    }
    vp_status err = VP_OK;
    int fd;
    struct stat sb;
    if ((err = vp_file_open_read(path, &fd))) {
        if (err != VP_ERR_INVALID) /* this reader's words: "PATH: <strerror>" */
            err = vp_error_set(err, "%s: %s", path, strerror(errno));
    } else if (fstat(fd, &sb)) {
        err = vp_error_set(VP_ERR_IO, "%s: %s", path, strerror(errno));
    } else if (sb.st_size < 8) {
        err = vp_error_set(VP_ERR_FORMAT, "%s: %lld bytes, too short for the 8-byte header "
                           "length", path, (long long)sb.st_size);
    } else if ((uint64_t)sb.st_size > SIZE_MAX) {
        err = vp_error_set(VP_ERR_IO, "%s: too large to map", path);
    } else {
        st->map_size = (size_t)sb.st_size;
        void *m = mmap(NULL, st->map_size, PROT_READ, MAP_PRIVATE, fd, 0);
        if (m == MAP_FAILED)
            err = vp_error_set(VP_ERR_IO, "%s: cannot map: %s", path, strerror(errno));
        else
            st->map = m;
    }
    if (fd >= 0)
        close(fd);
    if (!err)
        err = parse(st);
    if (err) {
        vp_st_close(st);
        return err;
    }
    *out = st;
    return VP_OK;
}

const char *vp_st_path(const vp_st *st) { return st->path; }
size_t vp_st_count(const vp_st *st) { return st->n; }

const vp_st_tensor *vp_st_get(const vp_st *st, size_t i)
{
    return i < st->n ? &st->t[i] : NULL;
}

const vp_st_tensor *vp_st_find(const vp_st *st, const char *name)
{
    size_t lo = 0, hi = st->n;
    while (lo < hi) {
        size_t mid = lo + (hi - lo) / 2;
        int c = strcmp(st->t[mid].name, name);
        if (!c)
            return &st->t[mid];
        if (c < 0)
            lo = mid + 1;
        else
            hi = mid;
    }
    return NULL;
}

vp_status vp_st_lookup(const vp_st *st, const char *name, const vp_st_tensor **out)
{
    char q[QBUF];
    *out = vp_st_find(st, name);
    return *out ? VP_OK
                : vp_error_set(VP_ERR_NOT_FOUND, "%s: no tensor %s", st->path, Q(name, q));
}

vp_status vp_st_check_shape(const vp_st *st, const char *name, int ndim, const int64_t *shape)
{
    const vp_st_tensor *t;
    vp_status err = vp_st_lookup(st, name, &t);
    if (err)
        return err;
    bool same = t->ndim == ndim;
    for (int i = 0; same && i < ndim; i++)
        same = t->shape[i] == shape[i];
    if (same)
        return VP_OK;
    char q[QBUF], a[VP_ST_MAX_DIMS * 22 + 4], b[VP_ST_MAX_DIMS * 22 + 4];
    shape_str(t->shape, t->ndim, a, sizeof a);
    shape_str(shape, ndim > VP_ST_MAX_DIMS ? VP_ST_MAX_DIMS : ndim, b, sizeof b);
    return vp_error_set(VP_ERR_SHAPE, "%s: tensor %s has shape %s, expected %s", st->path,
                        Q(name, q), a, b);
}

/* Lookup and element-count check shared by the typed readers. */
static vp_status lookup_n(const vp_st *st, const char *name, size_t n, const vp_st_tensor **t)
{
    vp_status err = vp_st_lookup(st, name, t);
    if (err)
        return err;
    if ((*t)->nelem != n) {
        char q[QBUF], s[VP_ST_MAX_DIMS * 22 + 4];
        shape_str((*t)->shape, (*t)->ndim, s, sizeof s);
        return vp_error_set(VP_ERR_SHAPE, "%s: tensor %s has %llu elements (shape %s), not the "
                            "%zu expected", st->path, Q(name, q),
                            (unsigned long long)(*t)->nelem, s, n);
    }
    return VP_OK;
}

static float half_to_float(uint16_t h)
{
    uint32_t sign = (uint32_t)(h >> 15) << 31, exp = (h >> 10) & 0x1f, man = h & 0x3ff, bits;
    if (exp == 0x1f) {
        bits = sign | 0x7f800000u | man << 13;           /* inf, NaN */
    } else if (exp) {
        bits = sign | (exp + 112) << 23 | man << 13;     /* normal: rebias 15 -> 127 */
    } else if (man) {
        /* subnormal: value man * 2^-24, normalise */
        int e = -1;
        do {
            man <<= 1;
            e++;
        } while (!(man & 0x400));
        bits = sign | (uint32_t)(112 - e) << 23 | (man & 0x3ff) << 13;
    } else {
        bits = sign;
    }
    float f;
    memcpy(&f, &bits, 4);
    return f;
}

vp_status vp_st_read_f32(const vp_st *st, const char *name, float *out, size_t n)
{
    const vp_st_tensor *t;
    vp_status err = lookup_n(st, name, n, &t);
    if (err)
        return err;
    const uint8_t *s = t->data;
    switch (t->dtype) {
    case VP_ST_F32:
        for (size_t i = 0; i < n; i++) {
            uint32_t b = rd32(s + 4 * i);
            memcpy(&out[i], &b, 4);
        }
        return VP_OK;
    case VP_ST_F64:
        for (size_t i = 0; i < n; i++) {
            uint64_t b = rd64(s + 8 * i);
            double d;
            memcpy(&d, &b, 8);
            out[i] = (float)d;
        }
        return VP_OK;
    case VP_ST_F16:
        for (size_t i = 0; i < n; i++)
            out[i] = half_to_float(rd16(s + 2 * i));
        return VP_OK;
    case VP_ST_BF16:
        for (size_t i = 0; i < n; i++) {
            uint32_t b = (uint32_t)rd16(s + 2 * i) << 16;
            memcpy(&out[i], &b, 4);
        }
        return VP_OK;
    default: {
        char q[QBUF];
        return vp_error_set(VP_ERR_FORMAT, "%s: tensor %s is %s, not a float tensor (F32, F16, "
                            "BF16 or F64)", st->path, Q(name, q), dtypes[t->dtype].name);
    }
    }
}

vp_status vp_st_read_i64(const vp_st *st, const char *name, int64_t *out, size_t n)
{
    const vp_st_tensor *t;
    vp_status err = lookup_n(st, name, n, &t);
    if (err)
        return err;
    const uint8_t *s = t->data;
    char q[QBUF];
    if (t->dtype == VP_ST_F16 || t->dtype == VP_ST_BF16 || t->dtype == VP_ST_F32 ||
        t->dtype == VP_ST_F64 || t->dtype == VP_ST_F8_E5M2 || t->dtype == VP_ST_F8_E4M3)
        return vp_error_set(VP_ERR_FORMAT, "%s: tensor %s is %s, not an integer tensor",
                            st->path, Q(name, q), dtypes[t->dtype].name);
    for (size_t i = 0; i < n; i++) {
        switch (t->dtype) {
        case VP_ST_I64: out[i] = (int64_t)rd64(s + 8 * i); break;
        case VP_ST_U64: {
            uint64_t v = rd64(s + 8 * i);
            if (v > (uint64_t)INT64_MAX)
                return vp_error_set(VP_ERR_FORMAT, "%s: tensor %s: element %zu (%llu) does not "
                                    "fit int64", st->path, Q(name, q), i, (unsigned long long)v);
            out[i] = (int64_t)v;
            break;
        }
        case VP_ST_I32: out[i] = (int32_t)rd32(s + 4 * i); break;
        case VP_ST_U32: out[i] = rd32(s + 4 * i); break;
        case VP_ST_I16: out[i] = (int16_t)rd16(s + 2 * i); break;
        case VP_ST_U16: out[i] = rd16(s + 2 * i); break;
        case VP_ST_I8: out[i] = (int8_t)s[i]; break;
        default: out[i] = s[i]; break; /* U8, BOOL */
        }
    }
    return VP_OK;
}

size_t vp_st_meta_count(const vp_st *st) { return st->n_meta; }

const char *vp_st_meta_key(const vp_st *st, size_t i)
{
    return i < st->n_meta ? st->meta[2 * i] : NULL;
}

const char *vp_st_meta(const vp_st *st, const char *key)
{
    for (size_t i = 0; i < st->n_meta; i++)
        if (!strcmp(st->meta[2 * i], key))
            return st->meta[2 * i + 1];
    return NULL;
}

/* ---- the writer --------------------------------------------------------- */

static void put_json_str(vp_strbuf *b, const char *s)
{
    vp_strbuf_add(b, "\"", 1);
    for (; *s; s++) {
        unsigned char c = (unsigned char)*s;
        char e[8];
        if (c == '"' || c == '\\') {
            e[0] = '\\';
            e[1] = (char)c;
            vp_strbuf_add(b, e, 2);
        } else if (c < 0x20) {
            snprintf(e, sizeof e, "\\u%04x", c);
            vp_strbuf_add(b, e, 6);
        } else {
            vp_strbuf_add(b, (const char *)&c, 1);
        }
    }
    vp_strbuf_add(b, "\"", 1);
}

static void put_u64(vp_strbuf *b, uint64_t v)
{
    char s[24];
    vp_strbuf_str(b, (snprintf(s, sizeof s, "%llu", (unsigned long long)v), s));
}

typedef struct wtensor {
    const vp_st_entry *e;
    uint64_t nbytes, offset;
} wtensor;

static int cmp_wname(const void *a, const void *b)
{
    return strcmp(((const wtensor *)a)->e->name, ((const wtensor *)b)->e->name);
}

/* Data layout order: larger elements first, then by name. */
static int cmp_wlayout(const void *a, const void *b)
{
    const wtensor *x = *(const wtensor *const *)a, *y = *(const wtensor *const *)b;
    size_t sx = dtypes[x->e->dtype].size, sy = dtypes[y->e->dtype].size;
    if (sx != sy)
        return sx > sy ? -1 : 1;
    return strcmp(x->e->name, y->e->name);
}

static int cmp_kv(const void *a, const void *b)
{
    return strcmp((*(const vp_st_kv *const *)a)->key, (*(const vp_st_kv *const *)b)->key);
}

static bool write_all(int fd, const void *p, uint64_t n)
{
    const char *c = p;
    while (n) {
        size_t chunk = n > (1u << 30) ? (1u << 30) : (size_t)n;
        ssize_t w = write(fd, c, chunk);
        if (w < 0 && errno == EINTR)
            continue;
        if (w <= 0) {
            if (w == 0)
                errno = EIO;
            return false;
        }
        c += w;
        n -= (uint64_t)w;
    }
    return true;
}

/* Check the entries and build the header; the order of the data in ws. */
static vp_status build_header(const char *path, const vp_st_entry *entries, size_t n,
                              const vp_st_kv *meta, size_t n_meta, wtensor *ws,
                              const wtensor **order, const vp_st_kv **kvs, vp_strbuf *h)
{
    char q[QBUF];
    for (size_t i = 0; i < n; i++) {
        const vp_st_entry *e = &entries[i];
        if (!e->name)
            return vp_error_set(VP_ERR_INVALID, "%s: tensor %zu has no name", path, i);
        Q(e->name, q);
        if (bad_utf8((const uint8_t *)e->name, strlen(e->name)) >= 0)
            return vp_error_set(VP_ERR_INVALID, "%s: tensor %s: the name is not valid UTF-8",
                                path, q);
        if (!strcmp(e->name, "__metadata__"))
            return vp_error_set(VP_ERR_INVALID, "%s: tensor %s: the name is reserved", path, q);
        if ((unsigned)e->dtype >= VP_ST_N_DTYPES)
            return vp_error_set(VP_ERR_INVALID, "%s: tensor %s: invalid dtype %d", path, q,
                                (int)e->dtype);
        if (e->ndim < 0 || e->ndim > VP_ST_MAX_DIMS || (e->ndim && !e->shape))
            return vp_error_set(VP_ERR_INVALID, "%s: tensor %s: %d dimensions; 0 to %d are "
                                "supported", path, q, e->ndim, VP_ST_MAX_DIMS);
        uint64_t nelem = 1;
        for (int k = 0; k < e->ndim; k++) {
            uint64_t x = (uint64_t)e->shape[k];
            if (e->shape[k] < 0 || (x && nelem > (UINT64_MAX >> 4) / x))
                return vp_error_set(VP_ERR_INVALID, "%s: tensor %s: invalid shape", path, q);
            nelem *= x;
        }
        ws[i].e = e;
        ws[i].nbytes = nelem * dtypes[e->dtype].size;
        if (ws[i].nbytes && !e->data)
            return vp_error_set(VP_ERR_INVALID, "%s: tensor %s: no data", path, q);
    }
    for (size_t i = 0; i < n_meta; i++) {
        if (!meta[i].key || !meta[i].value)
            return vp_error_set(VP_ERR_INVALID, "%s: metadata entry %zu has no key or value",
                                path, i);
        if (bad_utf8((const uint8_t *)meta[i].key, strlen(meta[i].key)) >= 0 ||
            bad_utf8((const uint8_t *)meta[i].value, strlen(meta[i].value)) >= 0)
            return vp_error_set(VP_ERR_INVALID, "%s: metadata %s is not valid UTF-8", path,
                                Q(meta[i].key, q));
        kvs[i] = &meta[i];
    }
    qsort(kvs, n_meta, sizeof *kvs, cmp_kv);
    for (size_t i = 1; i < n_meta; i++)
        if (!strcmp(kvs[i - 1]->key, kvs[i]->key))
            return vp_error_set(VP_ERR_INVALID, "%s: metadata %s appears twice", path,
                                Q(kvs[i]->key, q));

    /* Offsets in layout order, then the JSON in name order. */
    for (size_t i = 0; i < n; i++)
        order[i] = &ws[i];
    qsort(order, n, sizeof *order, cmp_wlayout);
    uint64_t at = 0;
    for (size_t i = 0; i < n; i++) {
        ((wtensor *)order[i])->offset = at;
        at += order[i]->nbytes;
    }
    qsort(ws, n, sizeof *ws, cmp_wname);
    for (size_t i = 1; i < n; i++)
        if (!strcmp(ws[i - 1].e->name, ws[i].e->name))
            return vp_error_set(VP_ERR_INVALID, "%s: tensor %s appears twice", path,
                                Q(ws[i].e->name, q));
    /* cmp_wname moved the entries; rebuild the layout order. */
    for (size_t i = 0; i < n; i++)
        order[i] = &ws[i];
    qsort(order, n, sizeof *order, cmp_wlayout);

    vp_strbuf_str(h, "{");
    if (n_meta) {
        vp_strbuf_str(h, "\"__metadata__\":{");
        for (size_t i = 0; i < n_meta; i++) {
            if (i)
                vp_strbuf_str(h, ",");
            put_json_str(h, kvs[i]->key);
            vp_strbuf_str(h, ":");
            put_json_str(h, kvs[i]->value);
        }
        vp_strbuf_str(h, "}");
    }
    for (size_t i = 0; i < n; i++) {
        const vp_st_entry *e = ws[i].e;
        if (i || n_meta)
            vp_strbuf_str(h, ",");
        put_json_str(h, e->name);
        vp_strbuf_str(h, ":{\"dtype\":\"");
        vp_strbuf_str(h, dtypes[e->dtype].name);
        vp_strbuf_str(h, "\",\"shape\":[");
        for (int k = 0; k < e->ndim; k++) {
            if (k)
                vp_strbuf_str(h, ",");
            put_u64(h, (uint64_t)e->shape[k]);
        }
        vp_strbuf_str(h, "],\"data_offsets\":[");
        put_u64(h, ws[i].offset);
        vp_strbuf_str(h, ",");
        put_u64(h, ws[i].offset + ws[i].nbytes);
        vp_strbuf_str(h, "]}");
    }
    vp_strbuf_str(h, "}");
    while (h->len % 8)
        vp_strbuf_str(h, " ");
    if (h->oom)
        return vp_error_set(VP_ERR_NOMEM, "%s: out of memory for the header", path);
    return VP_OK;
}

vp_status vp_st_write(const char *path, const vp_st_entry *entries, size_t n,
                      const vp_st_kv *meta, size_t n_meta)
{
    wtensor *ws = calloc(n ? n : 1, sizeof *ws);
    const wtensor **order = calloc(n ? n : 1, sizeof *order);
    const vp_st_kv **kvs = calloc(n_meta ? n_meta : 1, sizeof *kvs);
    vp_strbuf h = {0};
    char *tmp = NULL;
    int fd = -1;
    vp_status err = VP_OK;
    if (!ws || !order || !kvs) {
        err = vp_error_set(VP_ERR_NOMEM, "%s: out of memory", path);
        goto done;
    }
    if ((err = build_header(path, entries, n, meta, n_meta, ws, order, kvs, &h)))
        goto done;

    /* A new file next to path: .<name>.tmp.<pid>.<k>, created exclusively
     * with mode 0666 less the umask, as a plain creat() would. */
    const char *slash = strrchr(path, '/');
    size_t dlen = slash ? (size_t)(slash - path) + 1 : 0;
    size_t tlen = strlen(path) + 64;
    if (!(tmp = malloc(tlen))) {
        err = vp_error_set(VP_ERR_NOMEM, "%s: out of memory", path);
        goto done;
    }
    for (int k = 0; k < 100 && fd < 0; k++) {
        snprintf(tmp, tlen, "%.*s.%s.tmp.%ld.%d", (int)dlen, path, path + dlen, (long)getpid(), k);
        fd = open(tmp, O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC, 0666);
        if (fd < 0 && errno != EEXIST)
            break;
    }
    if (fd < 0) {
        err = vp_error_set(VP_ERR_IO, "%s: cannot create the temporary file %s: %s", path, tmp,
                           strerror(errno));
        free(tmp);
        tmp = NULL; /* nothing to remove */
        goto done;
    }
    uint8_t len[8];
    for (int i = 0; i < 8; i++)
        len[i] = (uint8_t)((uint64_t)h.len >> (8 * i));
    bool ok = write_all(fd, len, 8) && write_all(fd, h.p, h.len);
    for (size_t i = 0; ok && i < n; i++)
        ok = write_all(fd, order[i]->e->data, order[i]->nbytes);
    if (!ok || fsync(fd)) {
        err = vp_error_set(VP_ERR_IO, "%s: writing %s: %s", path, tmp, strerror(errno));
        goto done;
    }
    int c = close(fd);
    fd = -1;
    if (c) {
        err = vp_error_set(VP_ERR_IO, "%s: writing %s: %s", path, tmp, strerror(errno));
        goto done;
    }
    if (rename(tmp, path)) {
        err = vp_error_set(VP_ERR_IO, "%s: cannot rename %s to it: %s", path, tmp,
                           strerror(errno));
        goto done;
    }
    free(tmp);
    tmp = NULL;
    /* Make the rename itself durable. */
    char *dir = dlen ? strndup(path, dlen) : strdup(".");
    int dfd = dir ? open(dir, O_RDONLY | O_CLOEXEC) : -1;
    if (dfd >= 0) {
        fsync(dfd);
        close(dfd);
    }
    free(dir);
done:
    if (fd >= 0)
        close(fd);
    if (tmp) {
        unlink(tmp);
        free(tmp);
    }
    free(h.p);
    free(ws);
    free(order);
    free(kvs);
    return err;
}
