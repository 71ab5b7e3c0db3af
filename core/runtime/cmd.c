/*
 * Command recording. Many dispatches go into one command buffer; a barrier
 * is recorded only where a dispatch depends on an earlier one (read after
 * write, write after read, write after write on overlapping ranges since the
 * last barrier). A recording can be submitted any number of times; each
 * submit waits on one fence. With profiling on, every dispatch is bracketed
 * by timestamps and serialised so the times can be attributed.
 */
#include <stdlib.h>
#include <string.h>

#include "runtime/internal.h"
#include "util/array.h"
#include "util/clock.h"

#define POOL_SETS 128
#define QUERY_POOL_SIZE 512

typedef enum { CMD_IDLE, CMD_RECORDING, CMD_READY } cmd_state;

typedef struct range_list {
    vp_range *v;
    uint32_t n, cap;
} range_list;

struct vp_cmd {
    vp_device *dev;
    VkCommandBuffer cb;
    VkFence fence;
    cmd_state state;
    bool in_flight;             /* submitted, fence not waited on yet */
    bool copied;                /* a vp_cmd_copy_out was recorded */
    double submit_t0;
    range_list reads, writes;   /* pending since the last barrier */
    VkDescriptorPool *pools;
    uint32_t n_pools, cap_pools, cur_pool;
    VkQueryPool *qpools;
    uint32_t n_qpools, cap_qpools;
    uint32_t *qrow;             /* profile row of each timed dispatch */
    uint32_t n_timed, cap_timed;
    vp_cmd_stats stats;
};

static vp_status list_push(range_list *l, vp_range r)
{
    vp_status st = VP_RESERVE(l->v, l->cap, l->n + 1);
    if (st)
        return st;
    l->v[l->n++] = r;
    return VP_OK;
}

static bool overlaps(const range_list *l, vp_range r)
{
    for (uint32_t i = 0; i < l->n; i++)
        if (l->v[i].buffer == r.buffer && l->v[i].offset < r.offset + r.size &&
            r.offset < l->v[i].offset + l->v[i].size)
            return true;
    return false;
}

vp_status vp_cmd_create(vp_device *dev, vp_cmd **out)
{
    *out = NULL;
    vp_cmd *c = calloc(1, sizeof *c);
    if (!c)
        return vp_error_set(VP_ERR_NOMEM, "out of host memory");
    c->dev = dev;
    VkCommandBufferAllocateInfo ai = {.sType = VK_STRUCTURE_TYPE_COMMAND_BUFFER_ALLOCATE_INFO,
                                      .commandPool = dev->pool,
                                      .level = VK_COMMAND_BUFFER_LEVEL_PRIMARY,
                                      .commandBufferCount = 1};
    vp_status st = vp_vk_check(vkAllocateCommandBuffers(dev->vk, &ai, &c->cb),
                               "vkAllocateCommandBuffers");
    VkFenceCreateInfo fi = {.sType = VK_STRUCTURE_TYPE_FENCE_CREATE_INFO};
    if (!st)
        st = vp_vk_check(vkCreateFence(dev->vk, &fi, NULL, &c->fence), "vkCreateFence");
    if (st) {
        vp_cmd_destroy(c);
        return st;
    }
    *out = c;
    return VP_OK;
}

void vp_cmd_destroy(vp_cmd *c)
{
    if (!c)
        return;
    vp_device *dev = c->dev;
    if (c->in_flight) /* the buffer must not be freed while the device runs it */
        vkWaitForFences(dev->vk, 1, &c->fence, VK_TRUE, UINT64_MAX);
    if (c->fence)
        vkDestroyFence(dev->vk, c->fence, NULL);
    if (c->cb)
        vkFreeCommandBuffers(dev->vk, dev->pool, 1, &c->cb);
    for (uint32_t i = 0; i < c->n_pools; i++)
        vkDestroyDescriptorPool(dev->vk, c->pools[i], NULL);
    for (uint32_t i = 0; i < c->n_qpools; i++)
        vkDestroyQueryPool(dev->vk, c->qpools[i], NULL);
    free(c->pools);
    free(c->qpools);
    free(c->qrow);
    free(c->reads.v);
    free(c->writes.v);
    free(c);
}

vp_device *vp_cmd_device(const vp_cmd *c) { return c->dev; }
vp_cmd_stats vp_cmd_get_stats(const vp_cmd *c) { return c->stats; }

static void barrier(vp_cmd *c, VkPipelineStageFlags src, VkAccessFlags src_access,
                    VkPipelineStageFlags dst, VkAccessFlags dst_access)
{
    VkMemoryBarrier mb = {.sType = VK_STRUCTURE_TYPE_MEMORY_BARRIER,
                          .srcAccessMask = src_access,
                          .dstAccessMask = dst_access};
    vkCmdPipelineBarrier(c->cb, src, dst, 0, 1, &mb, 0, NULL, 0, NULL);
}

static void compute_barrier(vp_cmd *c)
{
    barrier(c, VK_PIPELINE_STAGE_COMPUTE_SHADER_BIT, VK_ACCESS_SHADER_WRITE_BIT,
            VK_PIPELINE_STAGE_COMPUTE_SHADER_BIT,
            VK_ACCESS_SHADER_READ_BIT | VK_ACCESS_SHADER_WRITE_BIT);
    c->reads.n = c->writes.n = 0;
}

vp_status vp_cmd_begin(vp_cmd *c)
{
    vp_device *dev = c->dev;
    vp_status st = vp_vk_check(vkResetCommandBuffer(c->cb, 0), "vkResetCommandBuffer");
    if (st)
        return st;
    for (uint32_t i = 0; i < c->n_pools; i++)
        vkResetDescriptorPool(dev->vk, c->pools[i], 0);
    c->cur_pool = 0;
    c->copied = false;
    c->reads.n = c->writes.n = 0;
    c->n_timed = 0;
    c->stats.dispatches = c->stats.barriers = 0; /* per recording; submits count on */
    VkCommandBufferBeginInfo bi = {.sType = VK_STRUCTURE_TYPE_COMMAND_BUFFER_BEGIN_INFO};
    st = vp_vk_check(vkBeginCommandBuffer(c->cb, &bi), "vkBeginCommandBuffer");
    if (st)
        return st;
    c->state = CMD_RECORDING;
    for (uint32_t i = 0; i < c->n_qpools; i++)
        vkCmdResetQueryPool(c->cb, c->qpools[i], 0, QUERY_POOL_SIZE);
    /* Order this recording after earlier submissions, uploads and replays. */
    barrier(c, VK_PIPELINE_STAGE_COMPUTE_SHADER_BIT | VK_PIPELINE_STAGE_TRANSFER_BIT |
                   VK_PIPELINE_STAGE_HOST_BIT,
            VK_ACCESS_SHADER_WRITE_BIT | VK_ACCESS_TRANSFER_WRITE_BIT | VK_ACCESS_HOST_WRITE_BIT,
            VK_PIPELINE_STAGE_COMPUTE_SHADER_BIT,
            VK_ACCESS_SHADER_READ_BIT | VK_ACCESS_SHADER_WRITE_BIT);
    return VP_OK;
}

static vp_status alloc_set(vp_cmd *c, VkDescriptorSet *set)
{
    vp_device *dev = c->dev;
    VkDescriptorSetAllocateInfo ai = {.sType = VK_STRUCTURE_TYPE_DESCRIPTOR_SET_ALLOCATE_INFO,
                                      .descriptorSetCount = 1,
                                      .pSetLayouts = &dev->set_layout};
    while (c->cur_pool < c->n_pools) {
        ai.descriptorPool = c->pools[c->cur_pool];
        VkResult r = vkAllocateDescriptorSets(dev->vk, &ai, set);
        if (r == VK_SUCCESS)
            return VP_OK;
        if (r != VK_ERROR_OUT_OF_POOL_MEMORY && r != VK_ERROR_FRAGMENTED_POOL)
            return vp_vk_check(r, "vkAllocateDescriptorSets");
        c->cur_pool++;
    }
    vp_status st = VP_RESERVE(c->pools, c->cap_pools, c->n_pools + 1);
    if (st)
        return st;
    VkDescriptorPoolSize ps = {VK_DESCRIPTOR_TYPE_STORAGE_BUFFER, POOL_SETS * VP_MAX_BINDINGS};
    VkDescriptorPoolCreateInfo pi = {.sType = VK_STRUCTURE_TYPE_DESCRIPTOR_POOL_CREATE_INFO,
                                     .maxSets = POOL_SETS,
                                     .poolSizeCount = 1,
                                     .pPoolSizes = &ps};
    st = vp_vk_check(vkCreateDescriptorPool(dev->vk, &pi, NULL, &c->pools[c->n_pools]),
                     "vkCreateDescriptorPool");
    if (st)
        return st;
    c->cur_pool = c->n_pools++;
    ai.descriptorPool = c->pools[c->cur_pool];
    return vp_vk_check(vkAllocateDescriptorSets(dev->vk, &ai, set), "vkAllocateDescriptorSets");
}

/* Two timestamps per dispatch; a fresh query pool when the last is full. */
static vp_status timestamp_slot(vp_cmd *c, uint32_t row, VkQueryPool *pool, uint32_t *q)
{
    uint32_t idx = c->n_timed * 2;
    vp_status st;
    if (idx / QUERY_POOL_SIZE >= c->n_qpools) {
        if ((st = VP_RESERVE(c->qpools, c->cap_qpools, c->n_qpools + 1)))
            return st;
        VkQueryPoolCreateInfo qi = {.sType = VK_STRUCTURE_TYPE_QUERY_POOL_CREATE_INFO,
                                    .queryType = VK_QUERY_TYPE_TIMESTAMP,
                                    .queryCount = QUERY_POOL_SIZE};
        st = vp_vk_check(vkCreateQueryPool(c->dev->vk, &qi, NULL, &c->qpools[c->n_qpools]),
                         "vkCreateQueryPool");
        if (st)
            return st;
        vkCmdResetQueryPool(c->cb, c->qpools[c->n_qpools], 0, QUERY_POOL_SIZE);
        c->n_qpools++;
    }
    if ((st = VP_RESERVE(c->qrow, c->cap_timed, c->n_timed + 1)))
        return st;
    c->qrow[c->n_timed++] = row;
    *pool = c->qpools[idx / QUERY_POOL_SIZE];
    *q = idx % QUERY_POOL_SIZE;
    return VP_OK;
}

vp_status vp_cmd_dispatch(vp_cmd *c, vp_pipeline *p, const vp_range *bind, uint32_t n_bind,
                          const void *push, uint32_t push_size, uint32_t gx, uint32_t gy,
                          uint32_t gz)
{
    vp_device *dev = c->dev;
    const vp_kernel *k = p->kernel;
    if (c->state != CMD_RECORDING)
        return vp_error_set(VP_ERR_INVALID, "%s: dispatch outside vp_cmd_begin/vp_cmd_end",
                            k->shader);
    if (n_bind != k->n_bindings)
        return vp_error_set(VP_ERR_INVALID, "%s: %u bindings given, the kernel has %u", k->shader,
                            n_bind, k->n_bindings);
    if (push_size != k->push_size)
        return vp_error_set(VP_ERR_INVALID, "%s: %u bytes of push constants given, the kernel "
                            "takes %u", k->shader, push_size, k->push_size);
    const vp_device_info *d = dev->info;
    if (gx > d->max_wg_count[0] || gy > d->max_wg_count[1] || gz > d->max_wg_count[2])
        return vp_error_set(VP_ERR_UNSUPPORTED, "%s: %ux%ux%u workgroups exceed the device's "
                            "%ux%ux%u", k->shader, gx, gy, gz, d->max_wg_count[0],
                            d->max_wg_count[1], d->max_wg_count[2]);
    for (uint32_t i = 0; i < n_bind; i++) {
        if (!bind[i].buffer || !bind[i].size)
            return vp_error_set(VP_ERR_INVALID, "%s: binding %u is empty", k->shader, i);
        if (bind[i].size > d->max_storage_range)
            return vp_error_set(VP_ERR_UNSUPPORTED, "%s: binding %u spans %llu bytes, more than "
                                "the %llu one storage buffer may span on %s", k->shader, i,
                                (unsigned long long)bind[i].size,
                                (unsigned long long)d->max_storage_range, d->name);
    }
    if (gx == 0 || gy == 0 || gz == 0)
        return VP_OK; /* nothing to do */

    bool hazard = false;
    for (uint32_t i = 0; i < n_bind && !hazard; i++) {
        bool w = k->writes & (1u << i);
        hazard = overlaps(&c->writes, bind[i]) || (w && overlaps(&c->reads, bind[i]));
    }
    vp_status st;
    if (hazard) {
        compute_barrier(c);
        c->stats.barriers++;
    } else if (dev->profiling && c->stats.dispatches > 0) {
        compute_barrier(c); /* serialise so each dispatch's time is its own */
    }
    for (uint32_t i = 0; i < n_bind; i++) {
        st = list_push(k->writes & (1u << i) ? &c->writes : &c->reads, bind[i]);
        if (st)
            return st;
    }

    vkCmdBindPipeline(c->cb, VK_PIPELINE_BIND_POINT_COMPUTE, p->pipeline);
    VkDescriptorBufferInfo bi[VP_MAX_BINDINGS];
    VkWriteDescriptorSet wr[VP_MAX_BINDINGS];
    VkDescriptorSet set = VK_NULL_HANDLE;
    if (!dev->push_desc && (st = alloc_set(c, &set)))
        return st;
    for (uint32_t i = 0; i < n_bind; i++) {
        bi[i] = (VkDescriptorBufferInfo){bind[i].buffer, bind[i].offset, bind[i].size};
        wr[i] = (VkWriteDescriptorSet){.sType = VK_STRUCTURE_TYPE_WRITE_DESCRIPTOR_SET,
                                       .dstSet = set,
                                       .dstBinding = i,
                                       .descriptorCount = 1,
                                       .descriptorType = VK_DESCRIPTOR_TYPE_STORAGE_BUFFER,
                                       .pBufferInfo = &bi[i]};
    }
    if (dev->push_desc) {
        dev->push_fn(c->cb, VK_PIPELINE_BIND_POINT_COMPUTE, dev->layout, 0, n_bind, wr);
    } else {
        vkUpdateDescriptorSets(dev->vk, n_bind, wr, 0, NULL);
        vkCmdBindDescriptorSets(c->cb, VK_PIPELINE_BIND_POINT_COMPUTE, dev->layout, 0, 1, &set, 0,
                                NULL);
    }
    if (push_size)
        vkCmdPushConstants(c->cb, dev->layout, VK_SHADER_STAGE_COMPUTE_BIT, 0, push_size, push);

    VkQueryPool qp = VK_NULL_HANDLE;
    uint32_t q = 0;
    if (dev->profiling) {
        if ((st = timestamp_slot(c, p->prof, &qp, &q)))
            return st;
        vkCmdWriteTimestamp(c->cb, VK_PIPELINE_STAGE_COMPUTE_SHADER_BIT, qp, q);
    }
    vkCmdDispatch(c->cb, gx, gy, gz);
    if (dev->profiling)
        vkCmdWriteTimestamp(c->cb, VK_PIPELINE_STAGE_COMPUTE_SHADER_BIT, qp, q + 1);
    c->stats.dispatches++;
    return VP_OK;
}

vp_status vp_cmd_end(vp_cmd *c)
{
    if (c->state == CMD_READY)
        return VP_OK;
    if (c->state != CMD_RECORDING)
        return vp_error_set(VP_ERR_INVALID, "vp_cmd_end without vp_cmd_begin");
    /* Make the results visible to the host and to later submissions. */
    barrier(c, VK_PIPELINE_STAGE_COMPUTE_SHADER_BIT |
                   (c->copied ? VK_PIPELINE_STAGE_TRANSFER_BIT : 0),
            VK_ACCESS_SHADER_WRITE_BIT | (c->copied ? VK_ACCESS_TRANSFER_WRITE_BIT : 0),
            VK_PIPELINE_STAGE_HOST_BIT | VK_PIPELINE_STAGE_TRANSFER_BIT,
            VK_ACCESS_HOST_READ_BIT | VK_ACCESS_TRANSFER_READ_BIT);
    vp_status st = vp_vk_check(vkEndCommandBuffer(c->cb), "vkEndCommandBuffer");
    if (st)
        return st;
    c->state = CMD_READY;
    return VP_OK;
}

static void collect_times(vp_cmd *c)
{
    vp_device *dev = c->dev;
    double ns_per_tick = dev->info->timestamp_period;
    for (uint32_t pool = 0; pool * (QUERY_POOL_SIZE / 2) < c->n_timed; pool++) {
        uint32_t first = pool * (QUERY_POOL_SIZE / 2);
        uint32_t n = c->n_timed - first < QUERY_POOL_SIZE / 2 ? c->n_timed - first
                                                              : QUERY_POOL_SIZE / 2;
        uint64_t ts[QUERY_POOL_SIZE];
        if (vkGetQueryPoolResults(dev->vk, c->qpools[pool], 0, 2 * n, sizeof ts, ts,
                                  sizeof ts[0], VK_QUERY_RESULT_64_BIT | VK_QUERY_RESULT_WAIT_BIT)
            != VK_SUCCESS)
            return;
        for (uint32_t i = 0; i < n; i++) {
            uint64_t dt = ts[2 * i + 1] >= ts[2 * i] ? ts[2 * i + 1] - ts[2 * i] : 0;
            vp_profile_add(dev, c->qrow[first + i], (double)dt * ns_per_tick * 1e-6);
        }
    }
}


vp_status vp_cmd_submit_async(vp_cmd *c)
{
    if (c->in_flight)
        return vp_error_set(VP_ERR_INVALID, "vp_cmd_submit: the last submit was not waited on");
    vp_status st = vp_cmd_end(c);
    if (st)
        return st;
    c->submit_t0 = 1e3 * vp_now_s();
    VkSubmitInfo si = {.sType = VK_STRUCTURE_TYPE_SUBMIT_INFO,
                       .commandBufferCount = 1,
                       .pCommandBuffers = &c->cb};
    st = vp_vk_check(vkQueueSubmit(c->dev->queue, 1, &si, c->fence), "vkQueueSubmit");
    c->in_flight = !st;
    return st;
}

vp_status vp_cmd_wait(vp_cmd *c)
{
    if (!c->in_flight)
        return VP_OK;
    vp_device *dev = c->dev;
    vp_status st = vp_vk_check(vkWaitForFences(dev->vk, 1, &c->fence, VK_TRUE, UINT64_MAX),
                               "vkWaitForFences");
    vkResetFences(dev->vk, 1, &c->fence);
    c->in_flight = false;
    c->stats.submits++;
    c->stats.submit_ms += 1e3 * vp_now_s() - c->submit_t0;
    if (!st && dev->profiling)
        collect_times(c);
    return st;
}

bool vp_cmd_finished(const vp_cmd *c)
{
    return !c->in_flight || vkGetFenceStatus(c->dev->vk, c->fence) == VK_SUCCESS;
}

vp_status vp_cmd_submit(vp_cmd *c)
{
    vp_status st = vp_cmd_submit_async(c);
    return st ? st : vp_cmd_wait(c);
}

vp_status vp_cmd_copy_out(vp_cmd *c, const vp_alloc *src, VkDeviceSize off, VkDeviceSize n,
                          vp_readback *rb, VkDeviceSize rb_off)
{
    if (c->state != CMD_RECORDING)
        return vp_error_set(VP_ERR_INVALID, "vp_cmd_copy_out outside a recording");
    if (!src->block || off > src->size || n > src->size - off || rb_off > rb->size ||
        n > rb->size - rb_off)
        return vp_error_set(VP_ERR_INVALID, "copy out: %llu bytes at %llu of a %llu-byte "
                            "allocation to %llu of a %llu-byte readback buffer",
                            (unsigned long long)n, (unsigned long long)off,
                            (unsigned long long)src->size, (unsigned long long)rb_off,
                            (unsigned long long)rb->size);
    if (n == 0)
        return VP_OK;
    /* after every dispatch so far; dispatches after it may overwrite the source */
    barrier(c, VK_PIPELINE_STAGE_COMPUTE_SHADER_BIT, VK_ACCESS_SHADER_WRITE_BIT,
            VK_PIPELINE_STAGE_TRANSFER_BIT, VK_ACCESS_TRANSFER_READ_BIT);
    VkBufferCopy r = {src->offset + off, rb_off, n};
    vkCmdCopyBuffer(c->cb, src->block->buffer, rb->buffer, 1, &r);
    barrier(c, VK_PIPELINE_STAGE_TRANSFER_BIT, 0, VK_PIPELINE_STAGE_COMPUTE_SHADER_BIT, 0);
    c->reads.n = c->writes.n = 0;
    c->copied = true;
    return VP_OK;
}
