/*
 * The Vulkan runtime: instance and device selection, device memory,
 * pipelines from embedded SPIR-V, command recording with hazard-tracked
 * barriers, per-kernel GPU timing, and device tensors.
 *
 *     vp_instance *inst;  vp_device *dev;  uint32_t idx;
 *     vp_instance_create(&(vp_instance_opts){.validation = true}, &inst);
 *     vp_instance_pick(inst, getenv("VPEFT_DEVICE"), &idx);
 *     vp_device_create(inst, idx, NULL, &dev);
 *     vp_tensor *a;  vp_tensor_create(dev, VP_F32, 2, (int64_t[]){4, 4}, "a", &a);
 *     vp_cmd *cmd;  vp_cmd_create(dev, &cmd);
 *     vp_cmd_begin(cmd);  vp_op_fill(cmd, a, 1.0f);  vp_cmd_submit(cmd);
 *
 * Everything here is single-threaded per vp_device: one thread records and
 * submits. Every fallible call returns a vp_status and sets vp_error_last().
 */
#ifndef VP_RUNTIME_H
#define VP_RUNTIME_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <vulkan/vulkan.h>

#include <vpeft/tensor.h>

#include "util/error.h"

#define VP_MAX_BINDINGS 8   /* storage buffers in the one shared set layout */
#define VP_MAX_PUSH 128     /* bytes; the minimum every device guarantees */
#define VP_MAX_SPEC 16      /* specialization constants per pipeline */

/* ---- instance and devices (instance.c) ---------------------------------- */

typedef struct vp_heap_info {
    uint64_t size;
    bool device_local;
} vp_heap_info;

/* Facts about one physical device, probed once at vp_instance_create(). */
typedef struct vp_device_info {
    uint32_t index;
    char name[VK_MAX_PHYSICAL_DEVICE_NAME_SIZE];
    VkPhysicalDeviceType type;
    uint32_t vendor_id, device_id;
    char driver_name[VK_MAX_DRIVER_NAME_SIZE];
    char driver_info[VK_MAX_DRIVER_INFO_SIZE];
    uint32_t driver_version; /* raw, vendor encoded */
    uint32_t api_version;
    uint8_t cache_uuid[VK_UUID_SIZE]; /* pipelineCacheUUID */
    uint32_t n_heaps;
    vp_heap_info heaps[VK_MAX_MEMORY_HEAPS];
    bool unified; /* device-local memory that the host can map coherently */
    uint32_t subgroup_size, subgroup_min, subgroup_max;
    uint32_t max_shared;          /* bytes of workgroup shared memory */
    uint32_t max_wg_invocations;  /* per workgroup */
    uint32_t max_wg_size[3], max_wg_count[3];
    uint64_t max_storage_range;   /* bytes one storage binding may span */
    uint64_t storage_align;       /* minStorageBufferOffsetAlignment */
    float timestamp_period;       /* ns per tick */
    uint32_t queue_family;        /* the compute queue family vpeft uses */
    struct {
        bool fp16_arith;          /* shaderFloat16 */
        bool fp16_storage;        /* storageBuffer16BitAccess */
        bool float_atomic_add;    /* shaderBufferFloat32AtomicAdd */
        bool coopmat;             /* VK_KHR/NV_cooperative_matrix present */
        bool push_descriptor;     /* VK_KHR_push_descriptor */
        bool timestamps;          /* compute queue has timestamp bits */
        bool subgroup_size_control;
        bool subgroup_shuffle;    /* subgroupShuffle in compute shaders */
    } feat;
    bool usable;                  /* Vulkan >= 1.2 and a compute queue */
    char unusable[96];            /* why not, when !usable */
} vp_device_info;

typedef struct vp_instance vp_instance;

typedef struct vp_instance_opts {
    /* Enable VK_LAYER_KHRONOS_validation when it is installed; its errors
     * are printed and counted (vp_instance_validation_errors). */
    bool validation;
} vp_instance_opts;

/* opts may be NULL. Fails with VP_ERR_NOT_FOUND, and a message that names
 * the driver package to install, when there is no Vulkan device at all. */
vp_status vp_instance_create(const vp_instance_opts *opts, vp_instance **out);
void vp_instance_destroy(vp_instance *inst);

uint32_t vp_instance_device_count(const vp_instance *inst);
/* Valid until vp_instance_destroy(). */
const vp_device_info *vp_instance_device_info(const vp_instance *inst, uint32_t i);
/* Index of the preferred usable device: discrete > integrated > virtual >
 * CPU > other, ties by enumeration order. */
uint32_t vp_instance_default_device(const vp_instance *inst);
/* Resolve a VPEFT_DEVICE-style spec: NULL or "" for the default, a decimal
 * index, or a case-insensitive substring of the device name. No match, or
 * an unusable device, is VP_ERR_NOT_FOUND with the device list in the
 * message. */
vp_status vp_instance_pick(const vp_instance *inst, const char *spec, uint32_t *index);

bool vp_instance_validation_enabled(const vp_instance *inst);
/* Number of validation-layer errors reported so far (all threads). */
uint64_t vp_instance_validation_errors(const vp_instance *inst);

const char *vp_device_type_str(VkPhysicalDeviceType t);
const char *vp_vendor_str(uint32_t vendor_id);
/* Human-readable driver version, decoded the vendor's way. */
void vp_driver_version_str(const vp_device_info *d, char *buf, size_t n);

/* ---- logical device (device.c) ------------------------------------------- */

typedef struct vp_device vp_device;

typedef struct vp_device_opts {
    bool force_staging;          /* never map device memory, always stage */
    bool stage_reads;            /* where memory is mapped, still read large ranges
                                  * through the staging buffer (as discrete GPUs do) */
    bool no_push_descriptors;    /* use descriptor pools even if pushable */
    int profile;                 /* 1 on, 0 off, -1 (default) VPEFT_PROFILE */
    const char *cache_dir;       /* NULL: $XDG_CACHE_HOME/vpeft or ~/.cache/vpeft */
    bool no_pipeline_cache;      /* neither read nor write the cache file */
    uint64_t block_size;         /* memory block bytes; 0: default (64 MiB) */
    uint64_t max_storage_range;  /* a smaller maxStorageBufferRange than the
                                  * device's (tests of work split to fit it); 0: none */
} vp_device_opts;

/* opts may be NULL. The instance must outlive the device. */
vp_status vp_device_create(vp_instance *inst, uint32_t index, const vp_device_opts *opts,
                           vp_device **out);
/* Waits for the device, writes the pipeline cache, prints the profile table
 * when profiling, frees everything. NULL is a no-op. */
void vp_device_destroy(vp_device *dev);
const vp_device_info *vp_device_get_info(const vp_device *dev);
bool vp_device_uses_push_descriptors(const vp_device *dev);
bool vp_device_uses_staging(const vp_device *dev);
/* Mapped memory whose large reads still go through staging (discrete GPUs,
 * or vp_device_opts.stage_reads). */
bool vp_device_stages_reads(const vp_device *dev);
bool vp_device_profiling(const vp_device *dev);
/* The pipeline cache file (NULL when none is used) and what became of it at
 * vp_device_create(): "absent", "loaded N bytes", or "ignored: <reason>". */
const char *vp_device_cache_path(const vp_device *dev);
const char *vp_device_cache_state(const vp_device *dev);

/* ---- memory (memory.c) --------------------------------------------------- */

/* A range of device memory bound as one storage buffer. */
typedef struct vp_range {
    VkBuffer buffer;
    VkDeviceSize offset, size;
} vp_range;

typedef struct vp_alloc {
    struct vp_block *block;  /* NULL: empty allocation */
    VkDeviceSize offset, size;
} vp_alloc;

typedef struct vp_mem_stats {
    uint32_t blocks;
    uint64_t reserved;    /* bytes of device memory held in blocks */
    uint64_t used;        /* bytes currently allocated to callers */
    uint64_t peak_used;
    uint64_t n_device_allocs; /* vkAllocateMemory calls so far */
} vp_mem_stats;

/* Sub-allocates from large blocks; only a new block calls vkAllocateMemory. */
vp_status vp_mem_alloc(vp_device *dev, VkDeviceSize size, vp_alloc *out);
void vp_mem_free(vp_device *dev, vp_alloc *a);
vp_range vp_mem_range(const vp_alloc *a);
/* Copy between host and device; the device must be idle with respect to the
 * range (vpeft waits for every submit, so it is between submits). */
vp_status vp_mem_upload(vp_device *dev, const vp_alloc *a, VkDeviceSize off, const void *src,
                        size_t n);
vp_status vp_mem_download(vp_device *dev, const vp_alloc *a, VkDeviceSize off, void *dst,
                          size_t n);
vp_mem_stats vp_mem_get_stats(const vp_device *dev);
/* The host address of an allocation's bytes when its memory is mapped
 * (unified devices), else NULL. */
void *vp_mem_host_ptr(const vp_alloc *a);

/* ---- pipelines (pipeline.c) ---------------------------------------------- */

/* Static description of a kernel: which embedded SPIR-V module, how many
 * storage buffers it binds (bindings 0..n-1), which of them it writes, and
 * the size of its push constants. */
typedef struct vp_kernel {
    const char *shader;   /* file stem in shaders/, e.g. "matmul"; with code: a name */
    uint32_t n_bindings;
    uint32_t writes;      /* bit i: binding i is written */
    uint32_t push_size;   /* bytes */
    const uint32_t *code; /* SPIR-V not embedded in vpeft (a plugin's), or NULL */
    size_t code_bytes;
} vp_kernel;

typedef struct vp_pipeline {
    const vp_kernel *kernel;
    uint32_t spec[VP_MAX_SPEC];
    uint32_t n_spec;
    uint32_t local[3];    /* local size = spec[0..2] */
    VkShaderModule module;
    VkPipeline pipeline;
    uint32_t prof;        /* row in the profile table */
} vp_pipeline;

/* Find or build the pipeline for kernel k with specialization constants
 * spec[0..n_spec-1]; spec ids 0, 1, 2 are the local size x, y, z, so
 * n_spec >= 3. The pipeline is owned by the device. */
vp_status vp_pipeline_get(vp_device *dev, const vp_kernel *k, const uint32_t *spec,
                          uint32_t n_spec, vp_pipeline **out);
/* Embedded SPIR-V of shaders/<name>.comp; NULL when there is no such file. */
const uint32_t *vp_shader_code(const char *name, size_t *bytes);
uint32_t vp_pipeline_count(const vp_device *dev);
/* Destroy the pipelines built for k, before k (a plugin's kernel) is freed:
 * the device finds pipelines by kernel address. */
void vp_pipeline_forget(vp_device *dev, const vp_kernel *k);

/* ---- command buffers (cmd.c) --------------------------------------------- */

typedef struct vp_cmd vp_cmd;

typedef struct vp_cmd_stats {
    uint32_t dispatches;
    uint32_t barriers;    /* between dispatches, for data hazards */
    uint64_t submits;     /* vp_cmd_submit calls so far */
    double submit_ms;     /* host time inside them (submit until the fence), in total */
} vp_cmd_stats;

vp_status vp_cmd_create(vp_device *dev, vp_cmd **out);
void vp_cmd_destroy(vp_cmd *cmd);
/* Start (re)recording; drops what was recorded before. */
vp_status vp_cmd_begin(vp_cmd *cmd);
/* Record one dispatch of groups (gx, gy, gz). bind[i] is binding i; n_bind
 * and push_size must equal the kernel's. A barrier is recorded first only if
 * this dispatch reads what an earlier one wrote, or writes what an earlier
 * one read or wrote, since the last barrier. */
vp_status vp_cmd_dispatch(vp_cmd *cmd, vp_pipeline *p, const vp_range *bind, uint32_t n_bind,
                          const void *push, uint32_t push_size, uint32_t gx, uint32_t gy,
                          uint32_t gz);
vp_status vp_cmd_end(vp_cmd *cmd);
/* Submit what was recorded and wait on one fence. May be called again to
 * replay the same recording (ending it first if still recording). */
vp_status vp_cmd_submit(vp_cmd *cmd);
/* The same in two halves, for host work while the device runs: nothing
 * else may be submitted (no upload, download or other vp_cmd) between
 * them, except on a device whose memory is mapped (vp_mem_host_ptr), where
 * the host may read what earlier submits wrote. vp_cmd_wait after no
 * submit does nothing; destroying a command waits for it. */
vp_status vp_cmd_submit_async(vp_cmd *cmd);
vp_status vp_cmd_wait(vp_cmd *cmd);
/* Whether the device has finished the last submit (true when none is in
 * flight); does not wait. */
bool vp_cmd_finished(const vp_cmd *cmd);

/* A host-visible buffer that recordings copy device results into, for the
 * host to read after the submit's fence while later submits run (device
 * memory that is not mapped cannot be read then: a download would wait
 * for them). */
typedef struct vp_readback vp_readback;
vp_status vp_readback_create(vp_device *dev, VkDeviceSize size, vp_readback **out);
void vp_readback_destroy(vp_readback *rb);
const void *vp_readback_data(const vp_readback *rb);
/* Record a copy of n bytes at off in src to rb_off in rb, after every
 * dispatch recorded so far. */
vp_status vp_cmd_copy_out(vp_cmd *cmd, const vp_alloc *src, VkDeviceSize off, VkDeviceSize n,
                          vp_readback *rb, VkDeviceSize rb_off);
vp_cmd_stats vp_cmd_get_stats(const vp_cmd *cmd);
vp_device *vp_cmd_device(const vp_cmd *cmd);

/* ---- profiling (profile.c) ---------------------------------------------- */

typedef struct vp_profile_row {
    char kernel[64];      /* a copy: plugins' kernels may be gone when the table prints */
    uint64_t calls;
    double total_ms;
} vp_profile_row;

/* Rows of the per-kernel GPU time table; NULL when not profiling. */
const vp_profile_row *vp_profile_rows(const vp_device *dev, uint32_t *n);
void vp_profile_print(const vp_device *dev, void *file /* FILE* */);

/* ---- tensors (tensor.c) -------------------------------------------------- */

/* vp_dtype and VP_MAX_DIMS come from <vpeft/tensor.h>. */
/* A dense row-major tensor of up to 4 dimensions in device memory. shape[0]
 * is the outermost dimension. */
typedef struct vp_tensor {
    vp_device *dev;
    vp_dtype dtype;
    int ndim;
    int64_t shape[VP_MAX_DIMS];
    vp_alloc mem;
    char name[64];
    bool view;           /* memory owned by someone else (vp_tensor_view_init) */
} vp_tensor;

size_t vp_dtype_size(vp_dtype t);
const char *vp_dtype_str(vp_dtype t);
/* name may be NULL; it is copied and used in error messages. */
vp_status vp_tensor_create(vp_device *dev, vp_dtype dtype, int ndim, const int64_t *shape,
                           const char *name, vp_tensor **out);
void vp_tensor_destroy(vp_tensor *t);
/* Initialise *t (caller-owned storage) as a view of `bytes` bytes at
 * `offset` into the allocation base; it owns nothing and is never passed
 * to vp_tensor_destroy. offset must keep the device's storage alignment. */
void vp_tensor_view_init(vp_tensor *t, vp_device *dev, const vp_alloc *base,
                         VkDeviceSize offset, vp_dtype dtype, int ndim, const int64_t *shape,
                         const char *name);
int64_t vp_tensor_nelem(const vp_tensor *t);
size_t vp_tensor_nbytes(const vp_tensor *t);
vp_range vp_tensor_range(const vp_tensor *t);
/* nbytes must equal vp_tensor_nbytes(t). */
vp_status vp_tensor_upload(vp_tensor *t, const void *src, size_t nbytes);
vp_status vp_tensor_download(const vp_tensor *t, void *dst, size_t nbytes);
/* "(2, 3, 4)" */
void vp_shape_str(const vp_tensor *t, char *buf, size_t n);

#endif
