/*
 * Device memory: large blocks (one VkDeviceMemory and one VkBuffer each),
 * sub-allocated first-fit from a sorted, coalescing free list, so that once
 * a model's tensors exist nothing calls vkAllocateMemory again. Host copies
 * go through a mapping on unified devices and a staging buffer elsewhere;
 * on a discrete GPU whose memory is mapped (resizable BAR), large reads
 * still go through staging: reading its mapping is uncached, across the
 * bus (on an H200, data-parallel steps that read 1.6 MiB of gradients that
 * way spent 71 ms each in the all-reduce; docs/distributed.md).
 */
#include <stdlib.h>
#include <string.h>

#include "runtime/internal.h"
#include "util/array.h"

#define STAGING_MAX (32u << 20)
/* Reads of mapped memory from this size on go through staging where the
 * device says so (read_staged): below it, an uncached read costs less
 * than a submit. */
#define READ_STAGED_MIN 4096u

static VkDeviceSize align_up(VkDeviceSize v, VkDeviceSize a) { return (v + a - 1) / a * a; }

static VkDeviceSize alloc_align(const vp_device *dev)
{
    /* 16 bytes at least, so that every tensor starts on a vec4. */
    VkDeviceSize a = dev->info->storage_align;
    return a < 16 ? 16 : a;
}

static void block_destroy(vp_device *dev, vp_block *b)
{
    if (!b)
        return;
    if (b->buffer)
        vkDestroyBuffer(dev->vk, b->buffer, NULL);
    if (b->memory) {
        if (b->mapped)
            vkUnmapMemory(dev->vk, b->memory);
        vkFreeMemory(dev->vk, b->memory, NULL);
    }
    free(b->free);
    free(b);
}

static vp_status buffer_create(vp_device *dev, VkDeviceSize size, uint32_t type, VkBuffer *buf,
                               VkDeviceMemory *mem)
{
    VkBufferCreateInfo bi = {.sType = VK_STRUCTURE_TYPE_BUFFER_CREATE_INFO,
                             .size = size,
                             .usage = VK_BUFFER_USAGE_STORAGE_BUFFER_BIT |
                                      VK_BUFFER_USAGE_TRANSFER_SRC_BIT |
                                      VK_BUFFER_USAGE_TRANSFER_DST_BIT,
                             .sharingMode = VK_SHARING_MODE_EXCLUSIVE};
    vp_status st = vp_vk_check(vkCreateBuffer(dev->vk, &bi, NULL, buf), "vkCreateBuffer");
    if (st)
        return st;
    VkMemoryRequirements req;
    vkGetBufferMemoryRequirements(dev->vk, *buf, &req);
    if (!(req.memoryTypeBits & (1u << type)))
        return vp_error_set(VP_ERR_UNSUPPORTED, "%s: buffers cannot live in memory type %u",
                            dev->info->name, type);
    VkMemoryAllocateInfo ai = {.sType = VK_STRUCTURE_TYPE_MEMORY_ALLOCATE_INFO,
                               .allocationSize = req.size,
                               .memoryTypeIndex = type};
    st = vp_vk_check(vkAllocateMemory(dev->vk, &ai, NULL, mem), "vkAllocateMemory");
    if (st)
        return vp_error_wrap(st, "allocating %llu bytes of device memory",
                             (unsigned long long)size);
    dev->stats.n_device_allocs++;
    return vp_vk_check(vkBindBufferMemory(dev->vk, *buf, *mem, 0), "vkBindBufferMemory");
}

static vp_status block_create(vp_device *dev, VkDeviceSize size, vp_block **out)
{
    vp_block *b = calloc(1, sizeof *b);
    if (!b)
        return vp_error_set(VP_ERR_NOMEM, "out of host memory");
    b->size = size;
    vp_status st = buffer_create(dev, size, dev->mem_type, &b->buffer, &b->memory);
    if (!st && dev->mapped)
        st = vp_vk_check(vkMapMemory(dev->vk, b->memory, 0, VK_WHOLE_SIZE, 0, &b->mapped),
                         "vkMapMemory");
    if (!st && !(st = VP_RESERVE(b->free, b->cap_free, 1)))
        b->free[b->n_free++] = (vp_free_range){0, size};
    if (st) {
        block_destroy(dev, b);
        return st;
    }
    *out = b;
    return VP_OK;
}

static bool block_take(vp_block *b, VkDeviceSize size, VkDeviceSize *off)
{
    for (uint32_t i = 0; i < b->n_free; i++) {
        if (b->free[i].size < size)
            continue;
        *off = b->free[i].offset;
        b->free[i].offset += size;
        b->free[i].size -= size;
        if (b->free[i].size == 0) {
            memmove(&b->free[i], &b->free[i + 1], (b->n_free - i - 1) * sizeof *b->free);
            b->n_free--;
        }
        return true;
    }
    return false;
}

vp_status vp_mem_alloc(vp_device *dev, VkDeviceSize size, vp_alloc *out)
{
    memset(out, 0, sizeof *out);
    if (size == 0)
        return vp_error_set(VP_ERR_INVALID, "zero-byte device allocation");
    VkDeviceSize sz = align_up(size, alloc_align(dev)), off;
    for (uint32_t i = 0; i < dev->n_blocks; i++) {
        if (block_take(dev->blocks[i], sz, &off)) {
            *out = (vp_alloc){dev->blocks[i], off, sz};
            goto done;
        }
    }
    vp_status st = VP_RESERVE(dev->blocks, dev->cap_blocks, dev->n_blocks + 1);
    if (st)
        return st;
    vp_block *b = NULL;
    st = block_create(dev, sz > dev->block_size ? sz : dev->block_size, &b);
    if (st)
        return st;
    dev->blocks[dev->n_blocks++] = b;
    dev->stats.blocks++;
    dev->stats.reserved += b->size;
    block_take(b, sz, &off);
    *out = (vp_alloc){b, off, sz};
done:
    dev->stats.used += sz;
    if (dev->stats.used > dev->stats.peak_used)
        dev->stats.peak_used = dev->stats.used;
    return VP_OK;
}

void vp_mem_free(vp_device *dev, vp_alloc *a)
{
    if (!a || !a->block)
        return;
    vp_block *b = a->block;
    uint32_t i = 0;
    while (i < b->n_free && b->free[i].offset < a->offset)
        i++;
    bool join_prev = i > 0 && b->free[i - 1].offset + b->free[i - 1].size == a->offset;
    bool join_next = i < b->n_free && a->offset + a->size == b->free[i].offset;
    if (join_prev && join_next) {
        b->free[i - 1].size += a->size + b->free[i].size;
        memmove(&b->free[i], &b->free[i + 1], (b->n_free - i - 1) * sizeof *b->free);
        b->n_free--;
    } else if (join_prev) {
        b->free[i - 1].size += a->size;
    } else if (join_next) {
        b->free[i].offset = a->offset;
        b->free[i].size += a->size;
    } else {
        if (VP_RESERVE(b->free, b->cap_free, b->n_free + 1)) {
            /* The range is lost to this block until it is destroyed; the
             * device keeps working. */
            dev->stats.used -= a->size;
            memset(a, 0, sizeof *a);
            return;
        }
        memmove(&b->free[i + 1], &b->free[i], (b->n_free - i) * sizeof *b->free);
        b->free[i] = (vp_free_range){a->offset, a->size};
        b->n_free++;
    }
    dev->stats.used -= a->size;
    memset(a, 0, sizeof *a);
}

vp_range vp_mem_range(const vp_alloc *a)
{
    return (vp_range){a->block ? a->block->buffer : VK_NULL_HANDLE, a->offset, a->size};
}

vp_mem_stats vp_mem_get_stats(const vp_device *dev) { return dev->stats; }

void vp_mem_release_all(vp_device *dev)
{
    for (uint32_t i = 0; i < dev->n_blocks; i++)
        block_destroy(dev, dev->blocks[i]);
    free(dev->blocks);
    dev->blocks = NULL;
    dev->n_blocks = dev->cap_blocks = 0;
    if (dev->staging)
        vkDestroyBuffer(dev->vk, dev->staging, NULL);
    if (dev->staging_mem) {
        vkUnmapMemory(dev->vk, dev->staging_mem);
        vkFreeMemory(dev->vk, dev->staging_mem, NULL);
    }
    dev->staging = VK_NULL_HANDLE;
    dev->staging_mem = VK_NULL_HANDLE;
}

static vp_status staging_reserve(vp_device *dev, VkDeviceSize n)
{
    if (dev->staging_size >= n)
        return VP_OK;
    if (dev->staging) {
        vkDestroyBuffer(dev->vk, dev->staging, NULL);
        vkUnmapMemory(dev->vk, dev->staging_mem);
        vkFreeMemory(dev->vk, dev->staging_mem, NULL);
        dev->staging = VK_NULL_HANDLE;
        dev->staging_mem = VK_NULL_HANDLE;
        dev->staging_size = 0;
    }
    VkDeviceSize sz = 1u << 20;
    while (sz < n)
        sz *= 2;
    vp_status st = buffer_create(dev, sz, dev->staging_type, &dev->staging, &dev->staging_mem);
    if (!st)
        st = vp_vk_check(vkMapMemory(dev->vk, dev->staging_mem, 0, VK_WHOLE_SIZE, 0,
                                     &dev->staging_ptr),
                         "vkMapMemory");
    if (st) {
        if (dev->staging)
            vkDestroyBuffer(dev->vk, dev->staging, NULL);
        if (dev->staging_mem)
            vkFreeMemory(dev->vk, dev->staging_mem, NULL);
        dev->staging = VK_NULL_HANDLE;
        dev->staging_mem = VK_NULL_HANDLE;
        return st;
    }
    dev->staging_size = sz;
    return VP_OK;
}

/* One copy between the staging buffer and a block, submitted and waited. */
static vp_status staged_copy(vp_device *dev, VkBuffer src, VkDeviceSize src_off, VkBuffer dst,
                             VkDeviceSize dst_off, VkDeviceSize n)
{
    VkCommandBufferBeginInfo bi = {.sType = VK_STRUCTURE_TYPE_COMMAND_BUFFER_BEGIN_INFO,
                                   .flags = VK_COMMAND_BUFFER_USAGE_ONE_TIME_SUBMIT_BIT};
    vp_status st = vp_vk_check(vkBeginCommandBuffer(dev->xfer_cb, &bi), "vkBeginCommandBuffer");
    if (st)
        return st;
    VkMemoryBarrier mb = {.sType = VK_STRUCTURE_TYPE_MEMORY_BARRIER,
                          .srcAccessMask = VK_ACCESS_SHADER_WRITE_BIT | VK_ACCESS_HOST_WRITE_BIT,
                          .dstAccessMask = VK_ACCESS_TRANSFER_READ_BIT |
                                           VK_ACCESS_TRANSFER_WRITE_BIT};
    vkCmdPipelineBarrier(dev->xfer_cb,
                         VK_PIPELINE_STAGE_COMPUTE_SHADER_BIT | VK_PIPELINE_STAGE_HOST_BIT,
                         VK_PIPELINE_STAGE_TRANSFER_BIT, 0, 1, &mb, 0, NULL, 0, NULL);
    VkBufferCopy c = {src_off, dst_off, n};
    vkCmdCopyBuffer(dev->xfer_cb, src, dst, 1, &c);
    mb.srcAccessMask = VK_ACCESS_TRANSFER_WRITE_BIT;
    mb.dstAccessMask = VK_ACCESS_HOST_READ_BIT | VK_ACCESS_SHADER_READ_BIT |
                       VK_ACCESS_SHADER_WRITE_BIT;
    vkCmdPipelineBarrier(dev->xfer_cb, VK_PIPELINE_STAGE_TRANSFER_BIT,
                         VK_PIPELINE_STAGE_HOST_BIT | VK_PIPELINE_STAGE_COMPUTE_SHADER_BIT, 0, 1,
                         &mb, 0, NULL, 0, NULL);
    st = vp_vk_check(vkEndCommandBuffer(dev->xfer_cb), "vkEndCommandBuffer");
    if (st)
        return st;
    VkSubmitInfo si = {.sType = VK_STRUCTURE_TYPE_SUBMIT_INFO,
                       .commandBufferCount = 1,
                       .pCommandBuffers = &dev->xfer_cb};
    st = vp_vk_check(vkQueueSubmit(dev->queue, 1, &si, dev->xfer_fence), "vkQueueSubmit");
    if (!st)
        st = vp_vk_check(vkWaitForFences(dev->vk, 1, &dev->xfer_fence, VK_TRUE, UINT64_MAX),
                         "vkWaitForFences");
    vkResetFences(dev->vk, 1, &dev->xfer_fence);
    return st;
}

static vp_status check_range(const vp_alloc *a, VkDeviceSize off, size_t n, const char *what)
{
    if (!a->block)
        return vp_error_set(VP_ERR_INVALID, "%s: empty allocation", what);
    if (off > a->size || n > a->size - off)
        return vp_error_set(VP_ERR_INVALID, "%s: %zu bytes at offset %llu exceed the %llu-byte "
                            "allocation", what, n, (unsigned long long)off,
                            (unsigned long long)a->size);
    return VP_OK;
}

vp_status vp_mem_upload(vp_device *dev, const vp_alloc *a, VkDeviceSize off, const void *src,
                        size_t n)
{
    vp_status st = check_range(a, off, n, "upload");
    if (st || n == 0)
        return st;
    if (a->block->mapped) {
        memcpy((char *)a->block->mapped + a->offset + off, src, n);
        return VP_OK;
    }
    for (size_t done = 0; done < n;) {
        size_t chunk = n - done < STAGING_MAX ? n - done : STAGING_MAX;
        if ((st = staging_reserve(dev, chunk)))
            return st;
        memcpy(dev->staging_ptr, (const char *)src + done, chunk);
        st = staged_copy(dev, dev->staging, 0, a->block->buffer, a->offset + off + done, chunk);
        if (st)
            return st;
        done += chunk;
    }
    return VP_OK;
}

vp_status vp_mem_download(vp_device *dev, const vp_alloc *a, VkDeviceSize off, void *dst,
                          size_t n)
{
    vp_status st = check_range(a, off, n, "download");
    if (st || n == 0)
        return st;
    if (a->block->mapped && !(dev->read_staged && n >= READ_STAGED_MIN)) {
        memcpy(dst, (const char *)a->block->mapped + a->offset + off, n);
        return VP_OK;
    }
    for (size_t done = 0; done < n;) {
        size_t chunk = n - done < STAGING_MAX ? n - done : STAGING_MAX;
        if ((st = staging_reserve(dev, chunk)))
            return st;
        st = staged_copy(dev, a->block->buffer, a->offset + off + done, dev->staging, 0, chunk);
        if (st)
            return st;
        memcpy((char *)dst + done, dev->staging_ptr, chunk);
        done += chunk;
    }
    return VP_OK;
}

void *vp_mem_host_ptr(const vp_alloc *a)
{
    return a->block && a->block->mapped ? (char *)a->block->mapped + a->offset : NULL;
}

vp_status vp_readback_create(vp_device *dev, VkDeviceSize size, vp_readback **out)
{
    *out = NULL;
    vp_readback *rb = calloc(1, sizeof *rb);
    if (!rb)
        return vp_error_set(VP_ERR_NOMEM, "out of host memory");
    rb->dev = dev;
    rb->size = size ? size : 4;
    /* the staging type: host-visible and coherent, cached where there is one */
    vp_status st = buffer_create(dev, rb->size, dev->staging_type, &rb->buffer, &rb->memory);
    if (!st)
        st = vp_vk_check(vkMapMemory(dev->vk, rb->memory, 0, VK_WHOLE_SIZE, 0, &rb->data),
                         "vkMapMemory");
    if (st) {
        vp_readback_destroy(rb);
        return vp_error_wrap(st, "a %llu-byte readback buffer", (unsigned long long)size);
    }
    *out = rb;
    return VP_OK;
}

void vp_readback_destroy(vp_readback *rb)
{
    if (!rb)
        return;
    if (rb->buffer)
        vkDestroyBuffer(rb->dev->vk, rb->buffer, NULL);
    if (rb->memory) {
        if (rb->data)
            vkUnmapMemory(rb->dev->vk, rb->memory);
        vkFreeMemory(rb->dev->vk, rb->memory, NULL);
    }
    free(rb);
}

const void *vp_readback_data(const vp_readback *rb) { return rb->data; }
