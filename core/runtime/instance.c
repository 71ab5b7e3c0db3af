/*
 * Vulkan instance, device enumeration and selection. Every physical device
 * is probed once for the facts vpeft decides on (API version, subgroup size,
 * shared memory, fp16, float atomics, push descriptors, timestamps,
 * cooperative matrices); nothing is assumed later that was not probed here.
 */
#include <ctype.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#include "runtime/internal.h"
#include "util/log.h"

#define NO_DEVICE_HINT                                                                   \
    "install a Vulkan driver for your GPU, or on a machine without a GPU the CPU "      \
    "driver lavapipe (Debian/Ubuntu: apt-get install mesa-vulkan-drivers; Fedora: "     \
    "dnf install mesa-vulkan-drivers; Arch: pacman -S vulkan-swrast)"

const char *vp_vk_result_str(VkResult r)
{
    switch (r) {
#define C(x) case x: return #x;
        C(VK_SUCCESS) C(VK_NOT_READY) C(VK_TIMEOUT) C(VK_INCOMPLETE)
        C(VK_ERROR_OUT_OF_HOST_MEMORY) C(VK_ERROR_OUT_OF_DEVICE_MEMORY)
        C(VK_ERROR_INITIALIZATION_FAILED) C(VK_ERROR_DEVICE_LOST)
        C(VK_ERROR_MEMORY_MAP_FAILED) C(VK_ERROR_LAYER_NOT_PRESENT)
        C(VK_ERROR_EXTENSION_NOT_PRESENT) C(VK_ERROR_FEATURE_NOT_PRESENT)
        C(VK_ERROR_INCOMPATIBLE_DRIVER) C(VK_ERROR_TOO_MANY_OBJECTS)
        C(VK_ERROR_FORMAT_NOT_SUPPORTED) C(VK_ERROR_FRAGMENTED_POOL)
        C(VK_ERROR_OUT_OF_POOL_MEMORY) C(VK_ERROR_INVALID_SHADER_NV)
#undef C
    default: return "VkResult error";
    }
}

vp_status vp_vk_check(VkResult r, const char *what)
{
    if (r == VK_SUCCESS)
        return VP_OK;
    vp_status st = VP_ERR_VULKAN;
    if (r == VK_ERROR_OUT_OF_DEVICE_MEMORY || r == VK_ERROR_OUT_OF_HOST_MEMORY)
        st = VP_ERR_NOMEM;
    return vp_error_set(st, "%s failed: %s (%d)", what, vp_vk_result_str(r), (int)r);
}

const char *vp_device_type_str(VkPhysicalDeviceType t)
{
    switch (t) {
    case VK_PHYSICAL_DEVICE_TYPE_DISCRETE_GPU: return "discrete GPU";
    case VK_PHYSICAL_DEVICE_TYPE_INTEGRATED_GPU: return "integrated GPU";
    case VK_PHYSICAL_DEVICE_TYPE_VIRTUAL_GPU: return "virtual GPU";
    case VK_PHYSICAL_DEVICE_TYPE_CPU: return "CPU";
    default: return "other";
    }
}

const char *vp_vendor_str(uint32_t id)
{
    switch (id) {
    case 0x10de: return "NVIDIA";
    case 0x1002: return "AMD";
    case 0x8086: return "Intel";
    case 0x13b5: return "ARM";
    case 0x5143: return "Qualcomm";
    case 0x106b: return "Apple";
    case 0x1010: return "Imagination";
    case 0x10005: return "Mesa";
    default: return "unknown";
    }
}

void vp_driver_version_str(const vp_device_info *d, char *buf, size_t n)
{
    uint32_t v = d->driver_version;
    if (d->vendor_id == 0x10de) /* NVIDIA: 10.8.8.6 bits */
        snprintf(buf, n, "%u.%u.%u.%u", v >> 22, (v >> 14) & 0xff, (v >> 6) & 0xff, v & 0x3f);
    else
        snprintf(buf, n, "%u.%u.%u", VK_API_VERSION_MAJOR(v), VK_API_VERSION_MINOR(v),
                 VK_API_VERSION_PATCH(v));
}

static VKAPI_ATTR VkBool32 VKAPI_CALL debug_cb(VkDebugUtilsMessageSeverityFlagBitsEXT sev,
                                               VkDebugUtilsMessageTypeFlagsEXT type,
                                               const VkDebugUtilsMessengerCallbackDataEXT *d,
                                               void *user)
{
    (void)type;
    vp_instance *inst = user;
    if (sev & VK_DEBUG_UTILS_MESSAGE_SEVERITY_ERROR_BIT_EXT) {
        atomic_fetch_add(&inst->validation_errors, 1);
        fprintf(stderr, "vpeft: validation error: %s\n", d->pMessage);
    } else if (sev & VK_DEBUG_UTILS_MESSAGE_SEVERITY_WARNING_BIT_EXT) {
        vp_debug("validation warning: %s", d->pMessage);
    }
    return VK_FALSE;
}

static bool has_layer(const char *name)
{
    uint32_t n = 0;
    if (vkEnumerateInstanceLayerProperties(&n, NULL) != VK_SUCCESS || n == 0)
        return false;
    VkLayerProperties *p = calloc(n, sizeof *p);
    if (!p)
        return false;
    bool found = false;
    if (vkEnumerateInstanceLayerProperties(&n, p) == VK_SUCCESS)
        for (uint32_t i = 0; i < n && !found; i++)
            found = !strcmp(p[i].layerName, name);
    free(p);
    return found;
}

static bool has_instance_ext(const char *name)
{
    uint32_t n = 0;
    if (vkEnumerateInstanceExtensionProperties(NULL, &n, NULL) != VK_SUCCESS || n == 0)
        return false;
    VkExtensionProperties *p = calloc(n, sizeof *p);
    if (!p)
        return false;
    bool found = false;
    if (vkEnumerateInstanceExtensionProperties(NULL, &n, p) == VK_SUCCESS)
        for (uint32_t i = 0; i < n && !found; i++)
            found = !strcmp(p[i].extensionName, name);
    free(p);
    return found;
}

static bool has_device_ext(const VkExtensionProperties *e, uint32_t n, const char *name)
{
    for (uint32_t i = 0; i < n; i++)
        if (!strcmp(e[i].extensionName, name))
            return true;
    return false;
}

/* Fill *d from the physical device. Only Vulkan 1.1 entry points are used
 * here so that older devices can still be listed (as unusable). */
static void probe_device(VkPhysicalDevice pd, uint32_t index, vp_device_info *d)
{
    memset(d, 0, sizeof *d);
    d->index = index;

    VkPhysicalDeviceProperties props;
    vkGetPhysicalDeviceProperties(pd, &props);
    snprintf(d->name, sizeof d->name, "%s", props.deviceName);
    d->type = props.deviceType;
    d->vendor_id = props.vendorID;
    d->device_id = props.deviceID;
    d->driver_version = props.driverVersion;
    d->api_version = props.apiVersion;
    memcpy(d->cache_uuid, props.pipelineCacheUUID, VK_UUID_SIZE);
    d->max_shared = props.limits.maxComputeSharedMemorySize;
    d->max_wg_invocations = props.limits.maxComputeWorkGroupInvocations;
    for (int i = 0; i < 3; i++) {
        d->max_wg_size[i] = props.limits.maxComputeWorkGroupSize[i];
        d->max_wg_count[i] = props.limits.maxComputeWorkGroupCount[i];
    }
    d->max_storage_range = props.limits.maxStorageBufferRange;
    d->storage_align = props.limits.minStorageBufferOffsetAlignment;
    d->timestamp_period = props.limits.timestampPeriod;

    uint32_t n_ext = 0;
    vkEnumerateDeviceExtensionProperties(pd, NULL, &n_ext, NULL);
    VkExtensionProperties *ext = calloc(n_ext ? n_ext : 1, sizeof *ext);
    if (ext)
        vkEnumerateDeviceExtensionProperties(pd, NULL, &n_ext, ext);
    else
        n_ext = 0;
    d->feat.push_descriptor = has_device_ext(ext, n_ext, VK_KHR_PUSH_DESCRIPTOR_EXTENSION_NAME);
    d->feat.coopmat = has_device_ext(ext, n_ext, "VK_KHR_cooperative_matrix") ||
                      has_device_ext(ext, n_ext, "VK_NV_cooperative_matrix");
    bool atomic_ext = has_device_ext(ext, n_ext, VK_EXT_SHADER_ATOMIC_FLOAT_EXTENSION_NAME);
    bool sgctl_ext = has_device_ext(ext, n_ext, VK_EXT_SUBGROUP_SIZE_CONTROL_EXTENSION_NAME);
    free(ext);

    VkPhysicalDeviceMemoryProperties mp;
    vkGetPhysicalDeviceMemoryProperties(pd, &mp);
    d->n_heaps = mp.memoryHeapCount;
    for (uint32_t i = 0; i < mp.memoryHeapCount; i++) {
        d->heaps[i].size = mp.memoryHeaps[i].size;
        d->heaps[i].device_local = mp.memoryHeaps[i].flags & VK_MEMORY_HEAP_DEVICE_LOCAL_BIT;
    }
    /* Unified: the largest device-local heap has a type that is also
     * host-visible and coherent, so tensors can be mapped directly. */
    uint32_t big = 0;
    for (uint32_t i = 1; i < mp.memoryHeapCount; i++)
        if (mp.memoryHeaps[i].size > mp.memoryHeaps[big].size &&
            (mp.memoryHeaps[i].flags & VK_MEMORY_HEAP_DEVICE_LOCAL_BIT))
            big = i;
    VkMemoryPropertyFlags want = VK_MEMORY_PROPERTY_DEVICE_LOCAL_BIT |
                                 VK_MEMORY_PROPERTY_HOST_VISIBLE_BIT |
                                 VK_MEMORY_PROPERTY_HOST_COHERENT_BIT;
    for (uint32_t i = 0; i < mp.memoryTypeCount; i++)
        if (mp.memoryTypes[i].heapIndex == big && (mp.memoryTypes[i].propertyFlags & want) == want)
            d->unified = true;

    uint32_t nq = 0;
    vkGetPhysicalDeviceQueueFamilyProperties(pd, &nq, NULL);
    VkQueueFamilyProperties *q = calloc(nq ? nq : 1, sizeof *q);
    bool have_queue = false;
    if (q) {
        vkGetPhysicalDeviceQueueFamilyProperties(pd, &nq, q);
        /* Prefer a compute family with timestamps; a dedicated compute
         * family (no graphics) wins ties. */
        int best = -1, best_score = -1;
        for (uint32_t i = 0; i < nq; i++) {
            if (!(q[i].queueFlags & VK_QUEUE_COMPUTE_BIT))
                continue;
            int score = (q[i].timestampValidBits ? 2 : 0) +
                        !(q[i].queueFlags & VK_QUEUE_GRAPHICS_BIT);
            if (score > best_score)
                best = (int)i, best_score = score;
        }
        if (best >= 0) {
            have_queue = true;
            d->queue_family = (uint32_t)best;
            d->feat.timestamps = q[best].timestampValidBits > 0 && d->timestamp_period > 0;
        }
        free(q);
    }

    if (props.apiVersion < VK_API_VERSION_1_2) {
        snprintf(d->unusable, sizeof d->unusable, "Vulkan %u.%u, vpeft needs 1.2 or newer",
                 VK_API_VERSION_MAJOR(props.apiVersion), VK_API_VERSION_MINOR(props.apiVersion));
        return;
    }
    if (!have_queue) {
        snprintf(d->unusable, sizeof d->unusable, "no compute queue");
        return;
    }
    d->usable = true;

    VkPhysicalDeviceDriverProperties drv = {
        .sType = VK_STRUCTURE_TYPE_PHYSICAL_DEVICE_DRIVER_PROPERTIES};
    VkPhysicalDeviceSubgroupSizeControlProperties sgc = {
        .sType = VK_STRUCTURE_TYPE_PHYSICAL_DEVICE_SUBGROUP_SIZE_CONTROL_PROPERTIES, .pNext = &drv};
    VkPhysicalDeviceSubgroupProperties sg = {
        .sType = VK_STRUCTURE_TYPE_PHYSICAL_DEVICE_SUBGROUP_PROPERTIES, .pNext = &sgc};
    VkPhysicalDeviceProperties2 p2 = {.sType = VK_STRUCTURE_TYPE_PHYSICAL_DEVICE_PROPERTIES_2,
                                      .pNext = &sg};
    vkGetPhysicalDeviceProperties2(pd, &p2);
    snprintf(d->driver_name, sizeof d->driver_name, "%s", drv.driverName);
    snprintf(d->driver_info, sizeof d->driver_info, "%s", drv.driverInfo);
    d->subgroup_size = sg.subgroupSize;
    d->feat.subgroup_shuffle = (sg.supportedOperations & VK_SUBGROUP_FEATURE_SHUFFLE_BIT) &&
                               (sg.supportedStages & VK_SHADER_STAGE_COMPUTE_BIT);
    bool sgc_core = props.apiVersion >= VK_API_VERSION_1_3;
    d->subgroup_min = (sgc_core || sgctl_ext) && sgc.minSubgroupSize ? sgc.minSubgroupSize
                                                                     : sg.subgroupSize;
    d->subgroup_max = (sgc_core || sgctl_ext) && sgc.maxSubgroupSize ? sgc.maxSubgroupSize
                                                                     : sg.subgroupSize;

    VkPhysicalDeviceShaderAtomicFloatFeaturesEXT af = {
        .sType = VK_STRUCTURE_TYPE_PHYSICAL_DEVICE_SHADER_ATOMIC_FLOAT_FEATURES_EXT};
    VkPhysicalDeviceSubgroupSizeControlFeatures sgf = {
        .sType = VK_STRUCTURE_TYPE_PHYSICAL_DEVICE_SUBGROUP_SIZE_CONTROL_FEATURES,
        .pNext = atomic_ext ? &af : NULL};
    VkPhysicalDeviceVulkan11Features f11 = {
        .sType = VK_STRUCTURE_TYPE_PHYSICAL_DEVICE_VULKAN_1_1_FEATURES,
        .pNext = (sgc_core || sgctl_ext) ? (void *)&sgf : (atomic_ext ? (void *)&af : NULL)};
    VkPhysicalDeviceVulkan12Features f12 = {
        .sType = VK_STRUCTURE_TYPE_PHYSICAL_DEVICE_VULKAN_1_2_FEATURES, .pNext = &f11};
    VkPhysicalDeviceFeatures2 f2 = {.sType = VK_STRUCTURE_TYPE_PHYSICAL_DEVICE_FEATURES_2,
                                    .pNext = &f12};
    vkGetPhysicalDeviceFeatures2(pd, &f2);
    d->feat.fp16_arith = f12.shaderFloat16;
    d->feat.fp16_storage = f11.storageBuffer16BitAccess;
    d->feat.float_atomic_add = atomic_ext && af.shaderBufferFloat32AtomicAdd;
    d->feat.subgroup_size_control = (sgc_core || sgctl_ext) && sgf.subgroupSizeControl;
}

static int type_rank(VkPhysicalDeviceType t)
{
    switch (t) {
    case VK_PHYSICAL_DEVICE_TYPE_DISCRETE_GPU: return 4;
    case VK_PHYSICAL_DEVICE_TYPE_INTEGRATED_GPU: return 3;
    case VK_PHYSICAL_DEVICE_TYPE_VIRTUAL_GPU: return 2;
    case VK_PHYSICAL_DEVICE_TYPE_CPU: return 1;
    default: return 0;
    }
}

vp_status vp_instance_create(const vp_instance_opts *opts, vp_instance **out)
{
    *out = NULL;
    vp_instance *inst = calloc(1, sizeof *inst);
    if (!inst)
        return vp_error_set(VP_ERR_NOMEM, "out of memory creating the Vulkan instance");
    inst->default_dev = UINT32_MAX;
    atomic_init(&inst->validation_errors, 0);

    const char *layers[1];
    uint32_t n_layers = 0;
    const char *exts[2];
    uint32_t n_exts = 0;
    bool want_val = opts && opts->validation;
    if (want_val) {
        if (has_layer("VK_LAYER_KHRONOS_validation") &&
            has_instance_ext(VK_EXT_DEBUG_UTILS_EXTENSION_NAME)) {
            layers[n_layers++] = "VK_LAYER_KHRONOS_validation";
            exts[n_exts++] = VK_EXT_DEBUG_UTILS_EXTENSION_NAME;
            inst->validation = true;
        } else {
            vp_debug("VK_LAYER_KHRONOS_validation is not installed; running without it");
        }
    }
    VkInstanceCreateFlags flags = 0;
    if (has_instance_ext("VK_KHR_portability_enumeration")) { /* MoltenVK */
        exts[n_exts++] = "VK_KHR_portability_enumeration";
        flags |= 0x00000001; /* VK_INSTANCE_CREATE_ENUMERATE_PORTABILITY_BIT_KHR */
    }

    VkApplicationInfo app = {.sType = VK_STRUCTURE_TYPE_APPLICATION_INFO,
                             .pApplicationName = "vpeft",
                             .applicationVersion = VK_MAKE_API_VERSION(0, 0, 1, 0),
                             .pEngineName = "vpeft",
                             .apiVersion = VK_API_VERSION_1_2};
    VkDebugUtilsMessengerCreateInfoEXT dbg = {
        .sType = VK_STRUCTURE_TYPE_DEBUG_UTILS_MESSENGER_CREATE_INFO_EXT,
        .messageSeverity = VK_DEBUG_UTILS_MESSAGE_SEVERITY_WARNING_BIT_EXT |
                           VK_DEBUG_UTILS_MESSAGE_SEVERITY_ERROR_BIT_EXT,
        .messageType = VK_DEBUG_UTILS_MESSAGE_TYPE_GENERAL_BIT_EXT |
                       VK_DEBUG_UTILS_MESSAGE_TYPE_VALIDATION_BIT_EXT |
                       VK_DEBUG_UTILS_MESSAGE_TYPE_PERFORMANCE_BIT_EXT,
        .pfnUserCallback = debug_cb,
        .pUserData = inst};
    VkInstanceCreateInfo ci = {.sType = VK_STRUCTURE_TYPE_INSTANCE_CREATE_INFO,
                               .pNext = inst->validation ? &dbg : NULL,
                               .flags = flags,
                               .pApplicationInfo = &app,
                               .enabledLayerCount = n_layers,
                               .ppEnabledLayerNames = layers,
                               .enabledExtensionCount = n_exts,
                               .ppEnabledExtensionNames = exts};
    VkResult r = vkCreateInstance(&ci, NULL, &inst->vk);
    if (r == VK_ERROR_INCOMPATIBLE_DRIVER || r == VK_ERROR_INITIALIZATION_FAILED) {
        free(inst);
        return vp_error_set(VP_ERR_NOT_FOUND, "no Vulkan device found (%s): " NO_DEVICE_HINT,
                            vp_vk_result_str(r));
    }
    if (r != VK_SUCCESS) {
        free(inst);
        return vp_vk_check(r, "vkCreateInstance");
    }
    if (inst->validation) {
        PFN_vkCreateDebugUtilsMessengerEXT f = (PFN_vkCreateDebugUtilsMessengerEXT)
            vkGetInstanceProcAddr(inst->vk, "vkCreateDebugUtilsMessengerEXT");
        if (f)
            f(inst->vk, &dbg, NULL, &inst->messenger);
    }

    r = vkEnumeratePhysicalDevices(inst->vk, &inst->n_dev, NULL);
    if (r != VK_SUCCESS && r != VK_INCOMPLETE) {
        vp_status st = vp_vk_check(r, "vkEnumeratePhysicalDevices");
        vp_instance_destroy(inst);
        return st;
    }
    if (inst->n_dev == 0) {
        vp_instance_destroy(inst);
        return vp_error_set(VP_ERR_NOT_FOUND, "no Vulkan device found: " NO_DEVICE_HINT);
    }
    inst->phys = calloc(inst->n_dev, sizeof *inst->phys);
    inst->info = calloc(inst->n_dev, sizeof *inst->info);
    if (!inst->phys || !inst->info) {
        vp_instance_destroy(inst);
        return vp_error_set(VP_ERR_NOMEM, "out of memory enumerating devices");
    }
    r = vkEnumeratePhysicalDevices(inst->vk, &inst->n_dev, inst->phys);
    if (r != VK_SUCCESS && r != VK_INCOMPLETE) {
        vp_status st = vp_vk_check(r, "vkEnumeratePhysicalDevices");
        vp_instance_destroy(inst);
        return st;
    }
    int best_rank = -1;
    for (uint32_t i = 0; i < inst->n_dev; i++) {
        probe_device(inst->phys[i], i, &inst->info[i]);
        if (inst->info[i].usable && type_rank(inst->info[i].type) > best_rank) {
            best_rank = type_rank(inst->info[i].type);
            inst->default_dev = i;
        }
    }
    *out = inst;
    return VP_OK;
}

void vp_instance_destroy(vp_instance *inst)
{
    if (!inst)
        return;
    if (inst->messenger) {
        PFN_vkDestroyDebugUtilsMessengerEXT f = (PFN_vkDestroyDebugUtilsMessengerEXT)
            vkGetInstanceProcAddr(inst->vk, "vkDestroyDebugUtilsMessengerEXT");
        if (f)
            f(inst->vk, inst->messenger, NULL);
    }
    if (inst->vk)
        vkDestroyInstance(inst->vk, NULL);
    free(inst->phys);
    free(inst->info);
    free(inst);
}

uint32_t vp_instance_device_count(const vp_instance *inst) { return inst->n_dev; }

const vp_device_info *vp_instance_device_info(const vp_instance *inst, uint32_t i)
{
    return i < inst->n_dev ? &inst->info[i] : NULL;
}

uint32_t vp_instance_default_device(const vp_instance *inst) { return inst->default_dev; }

bool vp_instance_validation_enabled(const vp_instance *inst) { return inst->validation; }

uint64_t vp_instance_validation_errors(const vp_instance *inst)
{
    return atomic_load(&((vp_instance *)inst)->validation_errors);
}

/* "0: llvmpipe (LLVM 15.0.6, 256 bits) [CPU]; 1: ..." */
static void device_list(const vp_instance *inst, char *buf, size_t n)
{
    size_t off = 0;
    buf[0] = '\0';
    for (uint32_t i = 0; i < inst->n_dev && off < n; i++) {
        int w = snprintf(buf + off, n - off, "%s%u: %s [%s%s]", i ? "; " : "", i,
                         inst->info[i].name, vp_device_type_str(inst->info[i].type),
                         inst->info[i].usable ? "" : ", unusable");
        if (w < 0)
            break;
        off += (size_t)w;
    }
}

static bool contains_nocase(const char *hay, const char *needle)
{
    size_t n = strlen(needle);
    for (; *hay; hay++)
        if (!strncasecmp(hay, needle, n))
            return true;
    return n == 0;
}

vp_status vp_instance_pick(const vp_instance *inst, const char *spec, uint32_t *index)
{
    char list[1024];
    if (!spec || !*spec) {
        if (inst->default_dev == UINT32_MAX) {
            device_list(inst, list, sizeof list);
            return vp_error_set(VP_ERR_NOT_FOUND,
                                "no usable Vulkan device (vpeft needs Vulkan 1.2 and a compute "
                                "queue); devices: %s",
                                list);
        }
        *index = inst->default_dev;
        return VP_OK;
    }
    bool numeric = true;
    for (const char *c = spec; *c; c++)
        numeric = numeric && isdigit((unsigned char)*c);
    uint32_t found = UINT32_MAX;
    if (numeric) {
        unsigned long v = strtoul(spec, NULL, 10);
        if (v < inst->n_dev)
            found = (uint32_t)v;
    } else {
        for (uint32_t i = 0; i < inst->n_dev && found == UINT32_MAX; i++)
            if (contains_nocase(inst->info[i].name, spec))
                found = i;
    }
    device_list(inst, list, sizeof list);
    if (found == UINT32_MAX)
        return vp_error_set(VP_ERR_NOT_FOUND, "VPEFT_DEVICE=%s matches no Vulkan device; devices: %s",
                            spec, list);
    if (!inst->info[found].usable)
        return vp_error_set(VP_ERR_UNSUPPORTED, "VPEFT_DEVICE=%s selects device %u (%s), which is "
                            "unusable: %s", spec, found, inst->info[found].name,
                            inst->info[found].unusable);
    *index = found;
    return VP_OK;
}
