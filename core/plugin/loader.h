/*
 * The plugin loader: finds vpeft-<name>.so on the search path, dlopens it,
 * checks its descriptor against this host's ABI (vpeft/plugin.h), calls its
 * init with the host table, and keeps it in a process-wide registry of
 * reference-counted plugins, one per name. It also lists what the search
 * path holds, for `vpeft plugins`.
 *
 *     vp_plugin *p;
 *     if (vp_plugin_load("lora", VP_PLUGIN_PEFT, &p))
 *         return vp_error_wrap(VP_ERR_CONFIG, "%s: peft[0].plugin", path);
 *     const vp_peft_iface *lora = vp_plugin_interface(p);
 *     ...
 *     vp_plugin_unload(p);
 *
 * The search path, in order: each entry of $VPEFT_PLUGIN_PATH (colon
 * separated), <dir of libvpeft.so>/plugins (the build tree),
 * <dir of libvpeft.so>/vpeft/plugins (an installed tree, wherever it was
 * moved), then the configured <prefix>/lib/vpeft/plugins; directories that
 * do not exist and repeats are left out, and the first file of a name wins.
 *
 * A load checks, in order: the file opens (dlopen RTLD_NOW|RTLD_LOCAL); it
 * has vp_plugin_entry; the entry gives a descriptor; the descriptor covers
 * ABI 1.0's fields; its major is ours (a later minor loads: only the 1.0
 * fields are read); its name is [a-z0-9_]+ and, for a vpeft-<name>.so
 * file, equal to <name>; its version and one-line description are set; its
 * kind is known and the expected one; no other file of that name is
 * loaded; it has get_interface. Then init(host) runs, and after it (the ABI
 * promises init comes before any other call) get_interface(<the kind's
 * id>) must give a table whose size covers ABI 1.0's members, none of them
 * NULL. Any failure is undone (fini if init succeeded, dlclose) and leaves
 * one line, "<name>: cannot load <file>: <reason>".
 *
 * Every function here is thread-safe.
 */
#ifndef VP_PLUGIN_LOADER_H
#define VP_PLUGIN_LOADER_H

#include <stdbool.h>
#include <stdint.h>

#include <vpeft/plugin.h>
#include <vpeft/status.h>

/* A loaded, initialised plugin; owned by the registry. */
typedef struct vp_plugin vp_plugin;

/* Load plugin name (its config name, [a-z0-9_]+) of the given kind. A name
 * already loaded gives the same plugin with one more reference, without
 * searching again. Errors: VP_ERR_INVALID for a bad name or the wrong kind,
 * VP_ERR_NOT_FOUND when no directory of the search path holds
 * vpeft-<name>.so (the message lists them), else as vp_plugin_load_file. */
vp_status vp_plugin_load(const char *name, vp_plugin_kind kind, vp_plugin **out);

/* Load an explicit file (a path; one without '/' is taken relative to the
 * current directory, never searched for). kind 0 accepts any known kind.
 * The same file already loaded gives that plugin with one more reference; a
 * different file whose plugin has an already loaded name is refused.
 * Errors: VP_ERR_NOT_FOUND (no such file), VP_ERR_IO (dlopen fails for
 * another reason), VP_ERR_ABI (no entry, descriptor too small, another
 * major, no interface or one too small), VP_ERR_INVALID (bad descriptor
 * fields, wrong kind, name taken), or init's own status. */
vp_status vp_plugin_load_file(const char *path, uint32_t kind, vp_plugin **out);

/* Drop one reference; at none, call fini and dlclose. NULL is a no-op. */
void vp_plugin_unload(vp_plugin *p);

/* The plugin's descriptor (only its ABI 1.0 fields may be read: it may come
 * from an older or newer 1.x plugin), its name, the file it was loaded
 * from, and its kind's interface table (vp_peft_iface, vp_backbone_iface or
 * vp_head_iface, checked at load). All valid until the last unload; NULL
 * for a NULL plugin. */
const vp_plugin_desc *vp_plugin_descriptor(const vp_plugin *p);
const char *vp_plugin_name(const vp_plugin *p);
const char *vp_plugin_path(const vp_plugin *p);
const void *vp_plugin_interface(const vp_plugin *p);

/* "backbone", "head", "peft", or "unknown". Static. */
const char *vp_plugin_kind_str(uint32_t kind);

/* Whether name is a valid plugin name: [a-z0-9_]+. */
bool vp_plugin_name_valid(const char *name);

/* One directory of the search path: its canonical path and where it comes
 * from ("VPEFT_PLUGIN_PATH", "build tree", "installed tree" or
 * "configured prefix", static). */
typedef struct vp_plugin_dir {
    char *path;
    const char *origin;
} vp_plugin_dir;

/* The search path as it is now (it reads $VPEFT_PLUGIN_PATH each time):
 * existing directories only, in order, without repeats. *dirs is a new
 * array (NULL when *n is 0) for vp_plugin_dirs_free. VP_ERR_NOMEM only. */
vp_status vp_plugin_search_path(vp_plugin_dir **dirs, uint32_t *n);
void vp_plugin_dirs_free(vp_plugin_dir *dirs, uint32_t n);

/* One vpeft-*.so file found on the search path. The file is opened and its
 * descriptor checked as a load would (any kind), but init is not called and
 * the registry is not touched. Strings are copies owned by the list. */
typedef struct vp_plugin_found {
    char *path;              /* the file */
    char *name;              /* <name> of vpeft-<name>.so */
    const char *shadowed_by; /* an earlier entry's path with the same name (this
                              * file is then not opened), else NULL */
    bool ok;                 /* the checks passed; kind, version, description set */
    bool has_abi;            /* the descriptor was read: abi_major/minor set */
    uint16_t abi_major, abi_minor;
    uint32_t kind;
    char *version;
    char *description;
    char *error;             /* when !ok and not shadowed: the reason, one line
                              * without the "<name>: cannot load <file>: " prefix */
} vp_plugin_found;

/* Every vpeft-*.so in the search path's directories, directory by
 * directory, by name within one. *found is NULL when *n is 0; free it with
 * vp_plugin_found_free. VP_ERR_NOMEM only: a file that cannot be loaded is
 * an entry with its reason. */
vp_status vp_plugin_scan(vp_plugin_found **found, uint32_t *n);
void vp_plugin_found_free(vp_plugin_found *found, uint32_t n);

#endif
