/*
 * Device tensors: dense, row-major, up to 4 dimensions, one sub-allocation
 * each. fp32 is what the kernels compute in today; the dtype field is there
 * so fp16 storage can follow without changing the struct.
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "runtime/internal.h"

size_t vp_dtype_size(vp_dtype t)
{
    switch (t) {
    case VP_F32: return 4;
    case VP_F16: return 2;
    case VP_I32: return 4;
    }
    return 0;
}

const char *vp_dtype_str(vp_dtype t)
{
    switch (t) {
    case VP_F32: return "f32";
    case VP_F16: return "f16";
    case VP_I32: return "i32";
    }
    return "?";
}

void vp_shape_str(const vp_tensor *t, char *buf, size_t n)
{
    size_t off = 0;
    off += (size_t)snprintf(buf, n, "(");
    for (int i = 0; i < t->ndim && off < n; i++)
        off += (size_t)snprintf(buf + off, n - off, "%s%lld", i ? ", " : "",
                                (long long)t->shape[i]);
    if (off < n)
        snprintf(buf + off, n - off, ")");
}

vp_status vp_tensor_create(vp_device *dev, vp_dtype dtype, int ndim, const int64_t *shape,
                           const char *name, vp_tensor **out)
{
    *out = NULL;
    const char *nm = name ? name : "tensor";
    if (ndim < 1 || ndim > VP_MAX_DIMS)
        return vp_error_set(VP_ERR_SHAPE, "tensor %s: %d dimensions, vpeft supports 1 to %d", nm,
                            ndim, VP_MAX_DIMS);
    if (!vp_dtype_size(dtype))
        return vp_error_set(VP_ERR_INVALID, "tensor %s: unknown dtype %d", nm, (int)dtype);
    int64_t n = 1;
    for (int i = 0; i < ndim; i++) {
        if (shape[i] < 1 || shape[i] > (INT64_C(1) << 40) || n > (INT64_C(1) << 40) / shape[i])
            return vp_error_set(VP_ERR_SHAPE, "tensor %s: bad size %lld in dimension %d", nm,
                                (long long)shape[i], i);
        n *= shape[i];
    }
    vp_tensor *t = calloc(1, sizeof *t);
    if (!t)
        return vp_error_set(VP_ERR_NOMEM, "out of host memory");
    t->dev = dev;
    t->dtype = dtype;
    t->ndim = ndim;
    for (int i = 0; i < VP_MAX_DIMS; i++)
        t->shape[i] = i < ndim ? shape[i] : 1;
    snprintf(t->name, sizeof t->name, "%s", nm);
    vp_status st = vp_mem_alloc(dev, (VkDeviceSize)n * vp_dtype_size(dtype), &t->mem);
    if (st) {
        free(t);
        return vp_error_wrap(st, "tensor %s", nm);
    }
    *out = t;
    return VP_OK;
}

void vp_tensor_view_init(vp_tensor *t, vp_device *dev, const vp_alloc *base,
                         VkDeviceSize offset, vp_dtype dtype, int ndim, const int64_t *shape,
                         const char *name)
{
    memset(t, 0, sizeof *t);
    t->dev = dev;
    t->dtype = dtype;
    t->ndim = ndim;
    for (int i = 0; i < VP_MAX_DIMS; i++)
        t->shape[i] = i < ndim ? shape[i] : 1;
    snprintf(t->name, sizeof t->name, "%s", name ? name : "view");
    t->view = true;
    t->mem.block = base->block;
    t->mem.offset = base->offset + offset;
    t->mem.size = vp_tensor_nbytes(t);
}

void vp_tensor_destroy(vp_tensor *t)
{
    if (!t)
        return;
    VP_ASSERT(!t->view);
    vp_mem_free(t->dev, &t->mem);
    free(t);
}

int64_t vp_tensor_nelem(const vp_tensor *t)
{
    int64_t n = 1;
    for (int i = 0; i < t->ndim; i++)
        n *= t->shape[i];
    return n;
}

size_t vp_tensor_nbytes(const vp_tensor *t)
{
    return (size_t)vp_tensor_nelem(t) * vp_dtype_size(t->dtype);
}

vp_range vp_tensor_range(const vp_tensor *t)
{
    vp_range r = vp_mem_range(&t->mem);
    r.size = vp_tensor_nbytes(t); /* not the alignment padding */
    return r;
}

vp_status vp_tensor_upload(vp_tensor *t, const void *src, size_t nbytes)
{
    if (nbytes != vp_tensor_nbytes(t))
        return vp_error_set(VP_ERR_SHAPE, "tensor %s: upload of %zu bytes, the tensor holds %zu",
                            t->name, nbytes, vp_tensor_nbytes(t));
    vp_status st = vp_mem_upload(t->dev, &t->mem, 0, src, nbytes);
    return st ? vp_error_wrap(st, "tensor %s", t->name) : VP_OK;
}

vp_status vp_tensor_download(const vp_tensor *t, void *dst, size_t nbytes)
{
    if (nbytes != vp_tensor_nbytes(t))
        return vp_error_set(VP_ERR_SHAPE, "tensor %s: download of %zu bytes, the tensor holds %zu",
                            t->name, nbytes, vp_tensor_nbytes(t));
    vp_status st = vp_mem_download(t->dev, &t->mem, 0, dst, nbytes);
    return st ? vp_error_wrap(st, "tensor %s", t->name) : VP_OK;
}
