/*
 * Compute pipelines from the SPIR-V embedded at build time, specialised by
 * constants (ids 0-2: local size; the rest: tile sizes and variants), and the
 * on-disk VkPipelineCache that makes the second start fast.
 *
 * The cache file is ours around the driver's blob: a header with a magic,
 * the payload size, an FNV-1a checksum and the device identity, so that a
 * truncated, corrupt or foreign file is ignored instead of handed to a
 * driver that may trust it.
 */
#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "runtime/internal.h"
#include "shaders.h"
#include "util/array.h"
#include "util/log.h"

const uint32_t *vp_shader_code(const char *name, size_t *bytes)
{
    for (unsigned i = 0; i < vp_shader_table_n; i++)
        if (!strcmp(vp_shader_table[i].name, name)) {
            *bytes = vp_shader_table[i].bytes;
            return vp_shader_table[i].code;
        }
    return NULL;
}

uint32_t vp_pipeline_count(const vp_device *dev) { return dev->n_pipes; }

static void pipeline_destroy(vp_device *dev, vp_pipeline *p)
{
    if (!p)
        return;
    if (p->pipeline)
        vkDestroyPipeline(dev->vk, p->pipeline, NULL);
    if (p->module)
        vkDestroyShaderModule(dev->vk, p->module, NULL);
    free(p);
}

void vp_pipeline_release_all(vp_device *dev)
{
    for (uint32_t i = 0; i < dev->n_pipes; i++)
        pipeline_destroy(dev, dev->pipes[i]);
    free(dev->pipes);
    dev->pipes = NULL;
    dev->n_pipes = dev->cap_pipes = 0;
}

static vp_status pipeline_build(vp_device *dev, const vp_kernel *k, const uint32_t *spec,
                                uint32_t n_spec, vp_pipeline **out)
{
    size_t bytes = k->code_bytes;
    const uint32_t *code = k->code ? k->code : vp_shader_code(k->shader, &bytes);
    if (!code)
        return vp_error_set(VP_ERR_NOT_FOUND, "no embedded shader named '%s'", k->shader);
    const vp_device_info *d = dev->info;
    uint64_t inv = (uint64_t)spec[0] * spec[1] * spec[2];
    if (!spec[0] || !spec[1] || !spec[2] || spec[0] > d->max_wg_size[0] ||
        spec[1] > d->max_wg_size[1] || spec[2] > d->max_wg_size[2] || inv > d->max_wg_invocations)
        return vp_error_set(VP_ERR_UNSUPPORTED, "%s: local size %ux%ux%u exceeds what %s allows "
                            "(%ux%ux%u, %u invocations)", k->shader, spec[0], spec[1], spec[2],
                            d->name, d->max_wg_size[0], d->max_wg_size[1], d->max_wg_size[2],
                            d->max_wg_invocations);

    vp_pipeline *p = calloc(1, sizeof *p);
    if (!p)
        return vp_error_set(VP_ERR_NOMEM, "out of host memory");
    p->kernel = k;
    p->n_spec = n_spec;
    memcpy(p->spec, spec, n_spec * sizeof *spec);
    memcpy(p->local, spec, sizeof p->local);

    VkShaderModuleCreateInfo mi = {.sType = VK_STRUCTURE_TYPE_SHADER_MODULE_CREATE_INFO,
                                   .codeSize = bytes,
                                   .pCode = code};
    vp_status st = vp_vk_check(vkCreateShaderModule(dev->vk, &mi, NULL, &p->module),
                               "vkCreateShaderModule");
    if (!st) {
        VkSpecializationMapEntry map[VP_MAX_SPEC];
        for (uint32_t i = 0; i < n_spec; i++)
            map[i] = (VkSpecializationMapEntry){i, i * 4, 4};
        VkSpecializationInfo si = {n_spec, map, n_spec * 4, p->spec};
        VkComputePipelineCreateInfo ci = {
            .sType = VK_STRUCTURE_TYPE_COMPUTE_PIPELINE_CREATE_INFO,
            .stage = {.sType = VK_STRUCTURE_TYPE_PIPELINE_SHADER_STAGE_CREATE_INFO,
                      .stage = VK_SHADER_STAGE_COMPUTE_BIT,
                      .module = p->module,
                      .pName = "main",
                      .pSpecializationInfo = &si},
            .layout = dev->layout};
        st = vp_vk_check(vkCreateComputePipelines(dev->vk, dev->cache, 1, &ci, NULL, &p->pipeline),
                         "vkCreateComputePipelines");
    }
    if (st) {
        pipeline_destroy(dev, p);
        return vp_error_wrap(st, "building pipeline '%s'", k->shader);
    }
    p->prof = dev->profiling ? vp_profile_row_for(dev, k->shader) : 0;
    dev->cache_dirty = true;
    *out = p;
    return VP_OK;
}

vp_status vp_pipeline_get(vp_device *dev, const vp_kernel *k, const uint32_t *spec,
                          uint32_t n_spec, vp_pipeline **out)
{
    VP_ASSERT(n_spec >= 3 && n_spec <= VP_MAX_SPEC);
    VP_ASSERT(k->n_bindings <= VP_MAX_BINDINGS && k->push_size <= VP_MAX_PUSH);
    for (uint32_t i = 0; i < dev->n_pipes; i++) {
        vp_pipeline *p = dev->pipes[i];
        if (p->kernel == k && p->n_spec == n_spec && !memcmp(p->spec, spec, n_spec * 4)) {
            *out = p;
            return VP_OK;
        }
    }
    vp_status st = VP_RESERVE(dev->pipes, dev->cap_pipes, dev->n_pipes + 1);
    if (st)
        return st;
    vp_pipeline *p;
    st = pipeline_build(dev, k, spec, n_spec, &p);
    if (st)
        return st;
    dev->pipes[dev->n_pipes++] = p;
    *out = p;
    return VP_OK;
}

void vp_pipeline_forget(vp_device *dev, const vp_kernel *k)
{
    uint32_t kept = 0;
    for (uint32_t i = 0; i < dev->n_pipes; i++) {
        if (dev->pipes[i]->kernel == k)
            pipeline_destroy(dev, dev->pipes[i]);
        else
            dev->pipes[kept++] = dev->pipes[i];
    }
    dev->n_pipes = kept;
}

/* ---- the cache file ------------------------------------------------------ */

#define CACHE_MAGIC "VPEFTPC1"

typedef struct cache_header {
    char magic[8];
    uint32_t version;        /* of this header: 1 */
    uint32_t vendor_id, device_id, driver_version;
    uint8_t uuid[VK_UUID_SIZE];
    uint64_t payload_size;
    uint64_t checksum;       /* FNV-1a 64 of the payload */
} cache_header;

static uint64_t fnv1a(const uint8_t *p, size_t n)
{
    uint64_t h = 0xcbf29ce484222325ull;
    for (size_t i = 0; i < n; i++)
        h = (h ^ p[i]) * 0x100000001b3ull;
    return h;
}

static void cache_header_fill(const vp_device_info *d, cache_header *h)
{
    memset(h, 0, sizeof *h);
    memcpy(h->magic, CACHE_MAGIC, 8);
    h->version = 1;
    h->vendor_id = d->vendor_id;
    h->device_id = d->device_id;
    h->driver_version = d->driver_version;
    memcpy(h->uuid, d->cache_uuid, VK_UUID_SIZE);
}

/* Why the blob cannot be used, or NULL when it can. */
static const char *cache_reject(const vp_device_info *d, const uint8_t *buf, size_t n)
{
    cache_header want, got;
    if (n < sizeof got)
        return "shorter than its header";
    memcpy(&got, buf, sizeof got);
    cache_header_fill(d, &want);
    if (memcmp(got.magic, want.magic, 8) || got.version != 1)
        return "not a vpeft pipeline cache";
    if (got.vendor_id != want.vendor_id || got.device_id != want.device_id ||
        got.driver_version != want.driver_version || memcmp(got.uuid, want.uuid, VK_UUID_SIZE))
        return "written for another device or driver";
    if (got.payload_size != n - sizeof got)
        return "truncated";
    const uint8_t *pl = buf + sizeof got;
    if (fnv1a(pl, (size_t)got.payload_size) != got.checksum)
        return "checksum mismatch";
    /* The driver's own header (VkPipelineCacheHeaderVersionOne). */
    uint32_t vk_hdr[4];
    if (got.payload_size < 16 + VK_UUID_SIZE)
        return "driver data too short";
    memcpy(vk_hdr, pl, 16);
    if (vk_hdr[0] < 16 + VK_UUID_SIZE || vk_hdr[1] != VK_PIPELINE_CACHE_HEADER_VERSION_ONE ||
        vk_hdr[2] != d->vendor_id || vk_hdr[3] != d->device_id ||
        memcmp(pl + 16, d->cache_uuid, VK_UUID_SIZE))
        return "driver header does not match the device";
    return NULL;
}

vp_status vp_pipecache_load(vp_device *dev, const char *dir)
{
    const vp_device_info *d = dev->info;
    char uuid[2 * VK_UUID_SIZE + 1];
    for (unsigned i = 0; i < VK_UUID_SIZE; i++)
        snprintf(uuid + 2 * i, 3, "%02x", d->cache_uuid[i]);
    snprintf(dev->cache_path, sizeof dev->cache_path, "%s/pipelines-%04x-%04x-%s-%08x.bin", dir,
             d->vendor_id, d->device_id, uuid, d->driver_version);

    uint8_t *buf = NULL;
    size_t n = 0;
    FILE *f = fopen(dev->cache_path, "rb");
    bool exists = f != NULL;
    if (f) {
        struct stat sb;
        if (fstat(fileno(f), &sb) == 0 && sb.st_size > 0 && sb.st_size < (1 << 30)) {
            buf = malloc((size_t)sb.st_size);
            if (buf)
                n = fread(buf, 1, (size_t)sb.st_size, f);
        }
        fclose(f);
    }
    const char *why = buf ? cache_reject(d, buf, n) : exists ? "empty or unreadable" : NULL;
    if (why)
        vp_warn("ignoring pipeline cache %s: %s", dev->cache_path, why);
    if (!exists)
        snprintf(dev->cache_state, sizeof dev->cache_state, "absent");
    else if (why)
        snprintf(dev->cache_state, sizeof dev->cache_state, "ignored: %s", why);
    else
        snprintf(dev->cache_state, sizeof dev->cache_state, "loaded %zu bytes",
                 n - sizeof(cache_header));
    VkPipelineCacheCreateInfo ci = {.sType = VK_STRUCTURE_TYPE_PIPELINE_CACHE_CREATE_INFO};
    if (buf && !why) {
        ci.initialDataSize = n - sizeof(cache_header);
        ci.pInitialData = buf + sizeof(cache_header);
    }
    VkResult r = vkCreatePipelineCache(dev->vk, &ci, NULL, &dev->cache);
    if (r != VK_SUCCESS && ci.initialDataSize) { /* the driver refused it: start empty */
        snprintf(dev->cache_state, sizeof dev->cache_state, "ignored: refused by the driver");
        ci.initialDataSize = 0;
        ci.pInitialData = NULL;
        r = vkCreatePipelineCache(dev->vk, &ci, NULL, &dev->cache);
    }
    free(buf);
    return vp_vk_check(r, "vkCreatePipelineCache");
}

static int mkdir_p(const char *path)
{
    char tmp[1024];
    snprintf(tmp, sizeof tmp, "%s", path);
    for (char *p = tmp + 1; *p; p++) {
        if (*p != '/')
            continue;
        *p = '\0';
        if (mkdir(tmp, 0755) && errno != EEXIST)
            return -1;
        *p = '/';
    }
    return mkdir(tmp, 0755) && errno != EEXIST ? -1 : 0;
}

/* Written to a temporary file, synced, then renamed over the old one, so a
 * crash leaves either the old cache or the new one. Failure only warns. */
void vp_pipecache_save(vp_device *dev)
{
    if (!dev->cache || !dev->cache_path[0] || !dev->cache_dirty)
        return;
    size_t n = 0;
    if (vkGetPipelineCacheData(dev->vk, dev->cache, &n, NULL) != VK_SUCCESS || n == 0)
        return;
    uint8_t *buf = malloc(sizeof(cache_header) + n);
    if (!buf)
        return;
    cache_header h;
    cache_header_fill(dev->info, &h);
    if (vkGetPipelineCacheData(dev->vk, dev->cache, &n, buf + sizeof h) != VK_SUCCESS) {
        free(buf);
        return;
    }
    h.payload_size = n;
    h.checksum = fnv1a(buf + sizeof h, n);
    memcpy(buf, &h, sizeof h);

    char dir[1024], tmp[1100];
    snprintf(dir, sizeof dir, "%s", dev->cache_path);
    char *slash = strrchr(dir, '/');
    if (slash)
        *slash = '\0';
    snprintf(tmp, sizeof tmp, "%s.tmp.%ld", dev->cache_path, (long)getpid());
    int fd = -1;
    bool ok = mkdir_p(dir) == 0 && (fd = open(tmp, O_WRONLY | O_CREAT | O_TRUNC, 0644)) >= 0;
    size_t total = sizeof h + n, off = 0;
    while (ok && off < total) {
        ssize_t w = write(fd, buf + off, total - off);
        if (w <= 0)
            ok = false;
        else
            off += (size_t)w;
    }
    if (fd >= 0) {
        ok = ok && fsync(fd) == 0;
        ok = close(fd) == 0 && ok;
    }
    ok = ok && rename(tmp, dev->cache_path) == 0;
    if (!ok) {
        vp_warn("cannot write pipeline cache %s: %s", dev->cache_path, strerror(errno));
        unlink(tmp);
    }
    free(buf);
    dev->cache_dirty = false;
}
