/*
 * safetensors files: a validating reader and an atomic writer.
 *
 * The format (https://github.com/huggingface/safetensors): 8 bytes N
 * (little-endian u64), N bytes of UTF-8 JSON, then the data section. The JSON
 * object maps each tensor name to {"dtype", "shape", "data_offsets": [begin,
 * end)} (offsets relative to the first byte after the header) and may hold
 * "__metadata__", an object of string -> string. The tensors must tile the
 * data section exactly: no overlaps, no holes, nothing left over.
 *
 *     vp_st *st;
 *     if (vp_st_open("model.safetensors", &st)) { puts(vp_error_last()); return; }
 *     const vp_st_tensor *w = vp_st_find(st, "blocks.0.attn.qkv.weight");
 *     float *host = malloc(w->nelem * sizeof *host);
 *     vp_st_read_f32(st, w->name, host, w->nelem);   // F32, F16, BF16, F64
 *     vp_st_close(st);
 *
 * Everything in the header is checked at vp_st_open() before anything is
 * trusted; a failure is one line naming the file and the key, e.g.
 *   x.safetensors: tensor "a.weight": data_offsets [0, 12) hold 12 bytes, shape (2, 3) of F32 needs 24
 * with VP_ERR_NOT_FOUND (no such file), VP_ERR_IO (cannot read it) or
 * VP_ERR_FORMAT (anything wrong with the contents).
 *
 * The reader maps the file (mmap, read-only, private) instead of reading it:
 * checkpoints run to gigabytes and are read once, tensor by tensor, on their
 * way to the device, so mapping costs no second copy and no allocation of the
 * file's size, and pages not (or no longer) needed cost no memory. The
 * mapping lives until vp_st_close(). A file truncated by another process
 * while mapped would fault on access (SIGBUS); vpeft never rewrites a file in
 * place (vp_st_write replaces it by rename), which leaves mapped readers of
 * the old file untouched.
 */
#ifndef VP_IO_SAFETENSORS_H
#define VP_IO_SAFETENSORS_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "util/error.h"

#define VP_ST_MAX_DIMS 8              /* dimensions per tensor vpeft reads */
#define VP_ST_MAX_HEADER 100000000u   /* bytes of JSON, the reference's limit */

/* The dtypes of the format (sub-byte and complex ones excluded). */
typedef enum vp_st_dtype {
    VP_ST_BOOL,
    VP_ST_U8,
    VP_ST_I8,
    VP_ST_F8_E5M2,
    VP_ST_F8_E4M3,
    VP_ST_I16,
    VP_ST_U16,
    VP_ST_F16,
    VP_ST_BF16,
    VP_ST_I32,
    VP_ST_U32,
    VP_ST_F32,
    VP_ST_I64,
    VP_ST_U64,
    VP_ST_F64,
    VP_ST_N_DTYPES
} vp_st_dtype;

/* "F32", ...; "?" for an invalid value. */
const char *vp_st_dtype_str(vp_st_dtype t);
/* Bytes per element; 0 for an invalid value. */
size_t vp_st_dtype_size(vp_st_dtype t);

/* One tensor of an open file. data points into the mapping and is NOT
 * necessarily aligned for the dtype (the format does not require it; files
 * from vp_st_write and from the reference writer are aligned): copy with
 * memcpy, or use vp_st_read_f32 / vp_st_read_i64. */
typedef struct vp_st_tensor {
    const char *name;
    vp_st_dtype dtype;
    int ndim;                         /* 0: a scalar */
    int64_t shape[VP_ST_MAX_DIMS];
    uint64_t nelem;                   /* product of shape (1 for a scalar) */
    uint64_t nbytes;                  /* nelem * dtype size */
    uint64_t offset;                  /* begin, relative to the data section */
    const void *data;
} vp_st_tensor;

typedef struct vp_st vp_st;

/* Open, map and validate a file. */
vp_status vp_st_open(const char *path, vp_st **out);
/* NULL is a no-op. Invalidates every pointer obtained from st. */
void vp_st_close(vp_st *st);

const char *vp_st_path(const vp_st *st);
/* Tensors, sorted by name (byte order). */
size_t vp_st_count(const vp_st *st);
const vp_st_tensor *vp_st_get(const vp_st *st, size_t i);
/* NULL when there is no such tensor (no error is set). */
const vp_st_tensor *vp_st_find(const vp_st *st, const char *name);
/* Like vp_st_find, but a missing tensor is VP_ERR_NOT_FOUND:
 * `x.safetensors: no tensor "name"`. */
vp_status vp_st_lookup(const vp_st *st, const char *name, const vp_st_tensor **out);
/* VP_ERR_SHAPE unless the tensor has exactly this shape:
 * `x.safetensors: tensor "value" has shape (2, 3), expected (3, 2)`. */
vp_status vp_st_check_shape(const vp_st *st, const char *name, int ndim, const int64_t *shape);

/* Copy tensor `name` into out[0..n-1] as float, converting F32, F16, BF16
 * and F64 (rounded to nearest). n must equal its element count
 * (VP_ERR_SHAPE); another dtype is VP_ERR_FORMAT. */
vp_status vp_st_read_f32(const vp_st *st, const char *name, float *out, size_t n);
/* The same for integers (shapes, indices): I64, I32, I16, I8, U64 (values
 * up to INT64_MAX), U32, U16, U8 and BOOL, into int64. */
vp_status vp_st_read_i64(const vp_st *st, const char *name, int64_t *out, size_t n);

/* "__metadata__": number of entries, the i-th key (sorted), and the value of
 * a key (NULL when absent). */
size_t vp_st_meta_count(const vp_st *st);
const char *vp_st_meta_key(const vp_st *st, size_t i);
const char *vp_st_meta(const vp_st *st, const char *key);

/* ---- writing ------------------------------------------------------------ */

typedef struct vp_st_entry {
    const char *name;
    vp_st_dtype dtype;
    int ndim;                         /* 0 .. VP_ST_MAX_DIMS */
    const int64_t *shape;
    const void *data;                 /* product(shape) * dtype size bytes */
} vp_st_entry;

typedef struct vp_st_kv {
    const char *key, *value;
} vp_st_kv;

/* Write n tensors and n_meta metadata pairs (meta may be NULL when n_meta is
 * 0) to path, replacing it atomically: the bytes go to a temporary file in
 * the same directory, which is synced and renamed over path (and the
 * directory synced). On any failure the temporary file is removed and path
 * is untouched: it keeps its old contents, or stays absent.
 *
 * Header keys are sorted by name, "__metadata__" first; the data section
 * holds the tensors in order of decreasing dtype size, then name (as the
 * reference writer does), so every tensor is aligned to its element size;
 * the header is padded with spaces to a multiple of 8 bytes. Names must be
 * unique, valid UTF-8 and not "__metadata__" (VP_ERR_INVALID). */
vp_status vp_st_write(const char *path, const vp_st_entry *entries, size_t n,
                      const vp_st_kv *meta, size_t n_meta);

#endif
