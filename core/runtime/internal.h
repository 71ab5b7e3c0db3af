/*
 * Private runtime structures shared by the files of core/runtime. Nothing
 * outside core/runtime includes this.
 */
#ifndef VP_RUNTIME_INTERNAL_H
#define VP_RUNTIME_INTERNAL_H

#include <stdatomic.h>

#include "runtime/runtime.h"

struct vp_instance {
    VkInstance vk;
    VkDebugUtilsMessengerEXT messenger;
    bool validation;
    atomic_uint_least64_t validation_errors;
    uint32_t n_dev;
    VkPhysicalDevice *phys;
    vp_device_info *info;
    uint32_t default_dev;
};

/* One vkAllocateMemory with one VkBuffer over all of it; allocations are
 * ranges of it, kept on a sorted free list. */
typedef struct vp_free_range {
    VkDeviceSize offset, size;
} vp_free_range;

typedef struct vp_block {
    VkDeviceMemory memory;
    VkBuffer buffer;
    VkDeviceSize size;
    void *mapped;            /* non-NULL when host-visible and mapped */
    vp_free_range *free;     /* sorted by offset, coalesced */
    uint32_t n_free, cap_free;
} vp_block;

struct vp_readback {
    vp_device *dev;
    VkBuffer buffer;
    VkDeviceMemory memory;
    VkDeviceSize size;
    void *data;
};

typedef struct vp_profile {
    vp_profile_row *rows;
    uint32_t n, cap;
} vp_profile;

struct vp_device {
    vp_instance *inst;
    const vp_device_info *info;
    vp_device_info own_info;     /* info with vp_device_opts' overrides, when any */
    VkPhysicalDevice phys;
    VkDevice vk;
    VkQueue queue;
    VkCommandPool pool;
    VkPhysicalDeviceMemoryProperties memprops;

    /* memory */
    uint32_t mem_type;        /* for storage blocks */
    bool mapped;              /* blocks are host-mapped (unified, no staging) */
    bool read_staged;         /* mapped, but large reads go through staging: a
                               * discrete GPU's mapped memory is read uncached
                               * across the bus, far slower than a copy */
    uint32_t staging_type;    /* host-visible coherent type (cached if any): staging,
                               * readback buffers */
    VkDeviceSize block_size;
    vp_block **blocks;
    uint32_t n_blocks, cap_blocks;
    vp_mem_stats stats;
    VkBuffer staging;
    VkDeviceMemory staging_mem;
    void *staging_ptr;
    VkDeviceSize staging_size;
    VkCommandBuffer xfer_cb;
    VkFence xfer_fence;

    /* pipelines */
    VkDescriptorSetLayout set_layout;
    VkPipelineLayout layout;
    bool push_desc;
    PFN_vkCmdPushDescriptorSetKHR push_fn;
    VkPipelineCache cache;
    char cache_path[1024];
    char cache_state[160];    /* what happened to the cache file at start */
    bool cache_dirty;
    vp_pipeline **pipes;
    uint32_t n_pipes, cap_pipes;

    /* profiling */
    bool profiling;
    vp_profile prof;
};

/* memory.c */
void vp_mem_release_all(vp_device *dev);
vp_status vp_vk_check(VkResult r, const char *what);

/* pipeline.c */
void vp_pipeline_release_all(vp_device *dev);
vp_status vp_pipecache_load(vp_device *dev, const char *dir);
void vp_pipecache_save(vp_device *dev);

/* profile.c */
uint32_t vp_profile_row_for(vp_device *dev, const char *kernel);
void vp_profile_add(vp_device *dev, uint32_t row, double ms);
void vp_profile_release(vp_device *dev);

const char *vp_vk_result_str(VkResult r);

#endif
