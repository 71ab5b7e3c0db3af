/*
 * The logical device: one compute queue, a command pool, the shared
 * descriptor-set and pipeline layouts, and the optional features vpeft can
 * use (fp16, float atomics, push descriptors) enabled only where the device
 * reported them at probe time.
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "runtime/internal.h"
#include "util/log.h"

static vp_status create_logical(vp_device *dev)
{
    const vp_device_info *d = dev->info;
    float prio = 1.0f;
    VkDeviceQueueCreateInfo qci = {.sType = VK_STRUCTURE_TYPE_DEVICE_QUEUE_CREATE_INFO,
                                   .queueFamilyIndex = d->queue_family,
                                   .queueCount = 1,
                                   .pQueuePriorities = &prio};
    const char *exts[4];
    uint32_t n_ext = 0;
    if (dev->push_desc)
        exts[n_ext++] = VK_KHR_PUSH_DESCRIPTOR_EXTENSION_NAME;
    VkPhysicalDeviceShaderAtomicFloatFeaturesEXT af = {
        .sType = VK_STRUCTURE_TYPE_PHYSICAL_DEVICE_SHADER_ATOMIC_FLOAT_FEATURES_EXT,
        .shaderBufferFloat32Atomics = VK_TRUE,
        .shaderBufferFloat32AtomicAdd = VK_TRUE};
    if (d->feat.float_atomic_add)
        exts[n_ext++] = VK_EXT_SHADER_ATOMIC_FLOAT_EXTENSION_NAME;
    VkPhysicalDeviceVulkan11Features f11 = {
        .sType = VK_STRUCTURE_TYPE_PHYSICAL_DEVICE_VULKAN_1_1_FEATURES,
        .pNext = d->feat.float_atomic_add ? &af : NULL,
        .storageBuffer16BitAccess = d->feat.fp16_storage};
    VkPhysicalDeviceVulkan12Features f12 = {
        .sType = VK_STRUCTURE_TYPE_PHYSICAL_DEVICE_VULKAN_1_2_FEATURES,
        .pNext = &f11,
        .shaderFloat16 = d->feat.fp16_arith};
    VkPhysicalDeviceFeatures2 f2 = {.sType = VK_STRUCTURE_TYPE_PHYSICAL_DEVICE_FEATURES_2,
                                    .pNext = &f12};
    VkDeviceCreateInfo ci = {.sType = VK_STRUCTURE_TYPE_DEVICE_CREATE_INFO,
                             .pNext = &f2,
                             .queueCreateInfoCount = 1,
                             .pQueueCreateInfos = &qci,
                             .enabledExtensionCount = n_ext,
                             .ppEnabledExtensionNames = exts};
    vp_status st = vp_vk_check(vkCreateDevice(dev->phys, &ci, NULL, &dev->vk), "vkCreateDevice");
    if (st)
        return vp_error_wrap(st, "device %u (%s)", d->index, d->name);
    vkGetDeviceQueue(dev->vk, d->queue_family, 0, &dev->queue);
    if (dev->push_desc) {
        dev->push_fn = (PFN_vkCmdPushDescriptorSetKHR)vkGetDeviceProcAddr(
            dev->vk, "vkCmdPushDescriptorSetKHR");
        if (!dev->push_fn)
            dev->push_desc = false;
    }
    return VP_OK;
}

static vp_status create_pool(vp_device *dev)
{
    VkCommandPoolCreateInfo ci = {.sType = VK_STRUCTURE_TYPE_COMMAND_POOL_CREATE_INFO,
                                  .flags = VK_COMMAND_POOL_CREATE_RESET_COMMAND_BUFFER_BIT,
                                  .queueFamilyIndex = dev->info->queue_family};
    vp_status st = vp_vk_check(vkCreateCommandPool(dev->vk, &ci, NULL, &dev->pool),
                               "vkCreateCommandPool");
    if (st)
        return st;
    VkCommandBufferAllocateInfo ai = {.sType = VK_STRUCTURE_TYPE_COMMAND_BUFFER_ALLOCATE_INFO,
                                      .commandPool = dev->pool,
                                      .level = VK_COMMAND_BUFFER_LEVEL_PRIMARY,
                                      .commandBufferCount = 1};
    st = vp_vk_check(vkAllocateCommandBuffers(dev->vk, &ai, &dev->xfer_cb),
                     "vkAllocateCommandBuffers");
    if (st)
        return st;
    VkFenceCreateInfo fi = {.sType = VK_STRUCTURE_TYPE_FENCE_CREATE_INFO};
    return vp_vk_check(vkCreateFence(dev->vk, &fi, NULL, &dev->xfer_fence), "vkCreateFence");
}

/* One set layout for every kernel: VP_MAX_BINDINGS storage buffers, and one
 * push-constant range of VP_MAX_PUSH bytes, so that a single pipeline layout
 * serves all pipelines. */
static vp_status create_layouts(vp_device *dev)
{
    VkDescriptorSetLayoutBinding b[VP_MAX_BINDINGS];
    for (uint32_t i = 0; i < VP_MAX_BINDINGS; i++)
        b[i] = (VkDescriptorSetLayoutBinding){.binding = i,
                                              .descriptorType = VK_DESCRIPTOR_TYPE_STORAGE_BUFFER,
                                              .descriptorCount = 1,
                                              .stageFlags = VK_SHADER_STAGE_COMPUTE_BIT};
    VkDescriptorSetLayoutCreateInfo sci = {
        .sType = VK_STRUCTURE_TYPE_DESCRIPTOR_SET_LAYOUT_CREATE_INFO,
        .flags = dev->push_desc ? VK_DESCRIPTOR_SET_LAYOUT_CREATE_PUSH_DESCRIPTOR_BIT_KHR : 0,
        .bindingCount = VP_MAX_BINDINGS,
        .pBindings = b};
    vp_status st = vp_vk_check(vkCreateDescriptorSetLayout(dev->vk, &sci, NULL, &dev->set_layout),
                               "vkCreateDescriptorSetLayout");
    if (st)
        return st;
    VkPushConstantRange pr = {.stageFlags = VK_SHADER_STAGE_COMPUTE_BIT, .size = VP_MAX_PUSH};
    VkPipelineLayoutCreateInfo lci = {.sType = VK_STRUCTURE_TYPE_PIPELINE_LAYOUT_CREATE_INFO,
                                      .setLayoutCount = 1,
                                      .pSetLayouts = &dev->set_layout,
                                      .pushConstantRangeCount = 1,
                                      .pPushConstantRanges = &pr};
    return vp_vk_check(vkCreatePipelineLayout(dev->vk, &lci, NULL, &dev->layout),
                       "vkCreatePipelineLayout");
}

static uint32_t find_type(const VkPhysicalDeviceMemoryProperties *mp, VkMemoryPropertyFlags want,
                          VkMemoryPropertyFlags avoid)
{
    for (uint32_t i = 0; i < mp->memoryTypeCount; i++) {
        VkMemoryPropertyFlags f = mp->memoryTypes[i].propertyFlags;
        if ((f & want) == want && !(f & avoid))
            return i;
    }
    return UINT32_MAX;
}

/* Storage blocks live in device-local memory; on unified devices in a type
 * the host can also map, so uploads are a memcpy. Otherwise a host-visible
 * staging buffer carries copies. */
static vp_status choose_memory(vp_device *dev, bool force_staging, bool stage_reads)
{
    const VkPhysicalDeviceMemoryProperties *mp = &dev->memprops;
    VkMemoryPropertyFlags host = VK_MEMORY_PROPERTY_HOST_VISIBLE_BIT |
                                 VK_MEMORY_PROPERTY_HOST_COHERENT_BIT;
    /* Staging (and readback buffers): cached host memory reads back
     * faster; any coherent will do. */
    dev->staging_type = find_type(mp, host | VK_MEMORY_PROPERTY_HOST_CACHED_BIT, 0);
    if (dev->staging_type == UINT32_MAX)
        dev->staging_type = find_type(mp, host, 0);
    uint32_t t = UINT32_MAX;
    if (dev->info->unified && !force_staging)
        t = find_type(mp, VK_MEMORY_PROPERTY_DEVICE_LOCAL_BIT | host, 0);
    if (t != UINT32_MAX) {
        dev->mem_type = t;
        dev->mapped = true;
        dev->read_staged = (stage_reads || dev->info->type == VK_PHYSICAL_DEVICE_TYPE_DISCRETE_GPU) &&
                           dev->staging_type != UINT32_MAX;
        if (dev->staging_type == UINT32_MAX)
            dev->staging_type = t;
        return VP_OK;
    }
    dev->mapped = false;
    dev->mem_type = find_type(mp, VK_MEMORY_PROPERTY_DEVICE_LOCAL_BIT, 0);
    if (dev->mem_type == UINT32_MAX)
        dev->mem_type = find_type(mp, 0, 0);
    if (dev->mem_type == UINT32_MAX || dev->staging_type == UINT32_MAX)
        return vp_error_set(VP_ERR_UNSUPPORTED, "device %s has no usable memory type",
                            dev->info->name);
    return VP_OK;
}

static const char *cache_dir_default(char *buf, size_t n)
{
    const char *x = getenv("XDG_CACHE_HOME");
    if (x && *x) {
        snprintf(buf, n, "%s/vpeft", x);
        return buf;
    }
    const char *h = getenv("HOME");
    if (h && *h) {
        snprintf(buf, n, "%s/.cache/vpeft", h);
        return buf;
    }
    return NULL;
}

vp_status vp_device_create(vp_instance *inst, uint32_t index, const vp_device_opts *opts,
                           vp_device **out)
{
    *out = NULL;
    vp_device_opts o = {0};
    o.profile = -1;
    if (opts)
        o = *opts;
    if (index >= inst->n_dev)
        return vp_error_set(VP_ERR_NOT_FOUND, "no Vulkan device %u (there are %u)", index,
                            inst->n_dev);
    if (!inst->info[index].usable)
        return vp_error_set(VP_ERR_UNSUPPORTED, "device %u (%s) is unusable: %s", index,
                            inst->info[index].name, inst->info[index].unusable);
    vp_device *dev = calloc(1, sizeof *dev);
    if (!dev)
        return vp_error_set(VP_ERR_NOMEM, "out of memory creating a device");
    dev->inst = inst;
    dev->info = &inst->info[index];
    if (o.max_storage_range && o.max_storage_range < dev->info->max_storage_range) {
        dev->own_info = *dev->info;
        dev->own_info.max_storage_range = o.max_storage_range;
        dev->info = &dev->own_info;
    }
    dev->phys = inst->phys[index];
    dev->push_desc = dev->info->feat.push_descriptor && !o.no_push_descriptors;
    dev->block_size = o.block_size ? o.block_size : (64u << 20);
    snprintf(dev->cache_state, sizeof dev->cache_state, "disabled");
    if (o.profile < 0) {
        const char *p = getenv("VPEFT_PROFILE");
        dev->profiling = p && *p && strcmp(p, "0") != 0;
    } else {
        dev->profiling = o.profile > 0;
    }
    if (dev->profiling && !dev->info->feat.timestamps) {
        vp_warn("VPEFT_PROFILE: %s has no timestamp queries on its compute queue; not profiling",
                dev->info->name);
        dev->profiling = false;
    }
    vkGetPhysicalDeviceMemoryProperties(dev->phys, &dev->memprops);

    vp_status st = create_logical(dev);
    if (!st)
        st = create_pool(dev);
    if (!st)
        st = create_layouts(dev);
    if (!st)
        st = choose_memory(dev, o.force_staging, o.stage_reads);
    if (!st && !o.no_pipeline_cache) {
        char buf[900];
        const char *dir = o.cache_dir ? o.cache_dir : cache_dir_default(buf, sizeof buf);
        if (dir)
            st = vp_pipecache_load(dev, dir);
    }
    if (!st && !dev->cache) {
        VkPipelineCacheCreateInfo ci = {.sType = VK_STRUCTURE_TYPE_PIPELINE_CACHE_CREATE_INFO};
        st = vp_vk_check(vkCreatePipelineCache(dev->vk, &ci, NULL, &dev->cache),
                         "vkCreatePipelineCache");
    }
    if (st) {
        vp_device_destroy(dev);
        return st;
    }
    vp_debug("device %u: %s, %s, %s descriptors, %s memory", index, dev->info->name,
             vp_device_type_str(dev->info->type), dev->push_desc ? "push" : "pooled",
             dev->mapped ? (dev->read_staged ? "mapped (reads staged)" : "mapped") : "staged");
    *out = dev;
    return VP_OK;
}

void vp_device_destroy(vp_device *dev)
{
    if (!dev)
        return;
    if (dev->vk)
        vkDeviceWaitIdle(dev->vk);
    if (dev->profiling)
        vp_profile_print(dev, stderr);
    vp_profile_release(dev);
    if (dev->vk) {
        vp_pipecache_save(dev);
        vp_pipeline_release_all(dev);
        if (dev->cache)
            vkDestroyPipelineCache(dev->vk, dev->cache, NULL);
        vp_mem_release_all(dev);
        if (dev->layout)
            vkDestroyPipelineLayout(dev->vk, dev->layout, NULL);
        if (dev->set_layout)
            vkDestroyDescriptorSetLayout(dev->vk, dev->set_layout, NULL);
        if (dev->xfer_fence)
            vkDestroyFence(dev->vk, dev->xfer_fence, NULL);
        if (dev->pool)
            vkDestroyCommandPool(dev->vk, dev->pool, NULL);
        vkDestroyDevice(dev->vk, NULL);
    }
    free(dev);
}

const vp_device_info *vp_device_get_info(const vp_device *dev) { return dev->info; }
bool vp_device_uses_push_descriptors(const vp_device *dev) { return dev->push_desc; }
bool vp_device_uses_staging(const vp_device *dev) { return !dev->mapped; }
bool vp_device_stages_reads(const vp_device *dev) { return dev->read_staged; }
bool vp_device_profiling(const vp_device *dev) { return dev->profiling; }
const char *vp_device_cache_path(const vp_device *dev)
{
    return dev->cache_path[0] ? dev->cache_path : NULL;
}
const char *vp_device_cache_state(const vp_device *dev) { return dev->cache_state; }
