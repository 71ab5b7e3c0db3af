/*
 * vpeft/plugin.h - what a plugin exports: one entry function returning its
 * descriptor.
 *
 *     static vp_status init(const vp_host_api *host) { H = host; return VP_OK; }
 *     static const void *get_interface(const char *id)
 *     {
 *         return strcmp(id, VP_PEFT_IFACE_ID) ? NULL : &ia3_iface;
 *     }
 *     VP_PLUGIN_EXPORT const vp_plugin_desc *vp_plugin_entry(void)
 *     {
 *         static const vp_plugin_desc d = {
 *             sizeof d, VP_ABI_MAJOR, VP_ABI_MINOR, "ia3", VP_PLUGIN_PEFT, "0.1.0",
 *             "IA3: learned per-channel scaling of linear outputs", init, NULL, get_interface};
 *         return &d;
 *     }
 *
 * The file is named vpeft-<name>.so and exports vp_plugin_entry only (the
 * SDK's vpeft-plugin.mk links it so). The loader checks, in order: the
 * entry symbol exists, the descriptor's size covers ABI 1.0's fields, its
 * ABI major equals the host's, its kind is the one the config asked for,
 * no loaded plugin has its name; then it calls init(). A plugin built
 * against 1.M loads in any host 1.N: structs and tables only grow.
 */
#ifndef VPEFT_PLUGIN_H
#define VPEFT_PLUGIN_H

#include <stddef.h>
#include <stdint.h>

#include <vpeft/status.h>
#include <vpeft/version.h>

#ifdef __cplusplus
extern "C" {
#endif

typedef struct vp_host_api vp_host_api;

typedef enum vp_plugin_kind {
    VP_PLUGIN_BACKBONE = 1, /* interface VP_BACKBONE_IFACE_ID (vpeft/backbone.h) */
    VP_PLUGIN_HEAD = 2,     /* interface VP_HEAD_IFACE_ID (vpeft/head.h) */
    VP_PLUGIN_PEFT = 3      /* interface VP_PEFT_IFACE_ID (vpeft/peft.h) */
} vp_plugin_kind;

typedef struct vp_plugin_desc {
    uint32_t size;          /* sizeof(vp_plugin_desc) as the plugin was compiled */
    uint16_t abi_major;     /* VP_ABI_MAJOR the plugin was compiled against */
    uint16_t abi_minor;
    const char *name;       /* the config name: "lora" for vpeft-lora.so; [a-z0-9_]+ */
    uint32_t kind;          /* vp_plugin_kind */
    const char *version;    /* the plugin's own release, "1.2.0" */
    const char *description;/* one line, no newline */
    /* Called once after the checks, before any other call; host is valid
     * until fini. Return VP_OK, or an error with a message set through
     * host->error(). May be NULL. */
    vp_status (*init)(const vp_host_api *host);
    /* Called once before the library is unloaded; may be NULL. */
    void (*fini)(void);
    /* The interface with a versioned id ("vpeft.peft/1"), or NULL when the
     * plugin has none: optional interfaces may be absent. The returned
     * table is owned by the plugin and valid until fini. */
    const void *(*get_interface)(const char *id);
    /* ABI 1.1 and later append here. */
} vp_plugin_desc;

/* The bytes of ABI 1.0's descriptor: the loader refuses anything smaller. */
#define VP_PLUGIN_DESC_SIZE_1_0 \
    (offsetof(vp_plugin_desc, get_interface) + sizeof(void *))

#define VP_PLUGIN_ENTRY_SYMBOL "vp_plugin_entry"
typedef const vp_plugin_desc *(*vp_plugin_entry_fn)(void);

#if defined(__GNUC__)
#define VP_PLUGIN_EXPORT __attribute__((visibility("default")))
#else
#define VP_PLUGIN_EXPORT
#endif

/* The entry point every plugin defines (VP_PLUGIN_EXPORT): returns its
 * descriptor, which must stay valid while the library is loaded. */
VP_PLUGIN_EXPORT const vp_plugin_desc *vp_plugin_entry(void);

#ifdef __cplusplus
}
#endif

#endif /* VPEFT_PLUGIN_H */
