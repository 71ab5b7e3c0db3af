/*
 * vpeft devices: every Vulkan device with the facts vpeft decides on, the
 * default marked, and the device VPEFT_DEVICE selects when it is set.
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "cli/cli.h"

static void print_size(char *buf, size_t n, uint64_t bytes)
{
    if (bytes >= (1ull << 30))
        snprintf(buf, n, "%.1f GiB", (double)bytes / (1ull << 30));
    else
        snprintf(buf, n, "%.0f MiB", (double)bytes / (1ull << 20));
}

static const char *yn(bool b) { return b ? "yes" : "no"; }

static void print_device(const vp_device_info *d, bool is_default, bool is_selected)
{
    char drv[64], sz[32];
    printf("%c %u: %s%s%s\n", is_default ? '*' : ' ', d->index, d->name,
           is_default ? "  [default]" : "", is_selected ? "  [VPEFT_DEVICE]" : "");
    printf("    type            %s\n", vp_device_type_str(d->type));
    printf("    vendor          %s (0x%04x), device 0x%04x\n", vp_vendor_str(d->vendor_id),
           d->vendor_id, d->device_id);
    vp_driver_version_str(d, drv, sizeof drv);
    printf("    driver          %s %s%s%s%s\n", d->driver_name[0] ? d->driver_name : "?", drv,
           d->driver_info[0] ? " (" : "", d->driver_info, d->driver_info[0] ? ")" : "");
    printf("    vulkan          %u.%u.%u\n", VK_API_VERSION_MAJOR(d->api_version),
           VK_API_VERSION_MINOR(d->api_version), VK_API_VERSION_PATCH(d->api_version));
    for (uint32_t h = 0; h < d->n_heaps; h++) {
        print_size(sz, sizeof sz, d->heaps[h].size);
        printf("    memory heap %u   %s%s\n", h, sz, d->heaps[h].device_local ? ", device-local" : "");
    }
    printf("    unified memory  %s\n", yn(d->unified));
    if (!d->usable) {
        printf("    usable          no: %s\n", d->unusable);
        return;
    }
    printf("    subgroup size   %u (min %u, max %u%s), shuffles %s\n", d->subgroup_size,
           d->subgroup_min, d->subgroup_max, d->feat.subgroup_size_control ? ", controllable" : "",
           yn(d->feat.subgroup_shuffle));
    printf("    shared memory   %u KiB per workgroup\n", d->max_shared / 1024);
    printf("    fp16            arithmetic %s, storage %s\n", yn(d->feat.fp16_arith),
           yn(d->feat.fp16_storage));
    printf("    float atomics   %s\n", yn(d->feat.float_atomic_add));
    printf("    coop. matrix    %s\n", yn(d->feat.coopmat));
    printf("    push descriptors %s\n", yn(d->feat.push_descriptor));
    printf("    timestamps      %s\n", yn(d->feat.timestamps));
}

int vp_cli_devices(int argc, char **argv)
{
    bool brief = false;
    for (int i = 1; i < argc; i++) {
        if (!strcmp(argv[i], "-h") || !strcmp(argv[i], "--help")) {
            printf("usage: vpeft devices [--brief]\n\n"
                   "Lists every Vulkan device: index, name, type, vendor, driver, Vulkan\n"
                   "version, memory heaps, subgroup size, shared memory and the optional\n"
                   "features vpeft uses. '*' marks the default device; VPEFT_DEVICE (an\n"
                   "index or a name substring) selects another. Exit status 1 when there\n"
                   "is no device, or when VPEFT_DEVICE matches none.\n\n"
                   "  --brief   one tab-separated line per device, for scripts:\n"
                   "            index, name, type, usable|unusable, default|-\n");
            return 0;
        }
        if (!strcmp(argv[i], "--brief")) {
            brief = true;
            continue;
        }
        fprintf(stderr, "vpeft devices: unknown option '%s' (see vpeft devices --help)\n",
                argv[i]);
        return 2;
    }
    vp_instance *inst;
    if (vp_cli_instance(&inst))
        return 1;
    const char *spec = getenv("VPEFT_DEVICE");
    uint32_t sel = UINT32_MAX, def = vp_instance_default_device(inst);
    vp_status st = VP_OK;
    if (spec && *spec)
        st = vp_instance_pick(inst, spec, &sel);
    uint32_t n = vp_instance_device_count(inst);
    if (!brief)
        printf("%u Vulkan device%s:\n", n, n == 1 ? "" : "s");
    for (uint32_t i = 0; i < n; i++) {
        const vp_device_info *d = vp_instance_device_info(inst, i);
        if (brief)
            printf("%u\t%s\t%s\t%s\t%s\n", i, d->name, vp_device_type_str(d->type),
                   d->usable ? "usable" : "unusable", i == def ? "default" : "-");
        else
            print_device(d, i == def, i == sel);
    }
    int rc = 0;
    if (st) {
        fprintf(stderr, "vpeft: %s\n", vp_error_last());
        rc = 1;
    } else if (def == UINT32_MAX) {
        fprintf(stderr, "vpeft: no device here is usable: vpeft needs Vulkan 1.2 and a compute "
                        "queue\n");
        rc = 1;
    }
    vp_instance_destroy(inst);
    return rc;
}
