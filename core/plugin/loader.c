/*
 * The plugin loader (plugin/loader.h): the search path, the checks a file
 * must pass before any of its code but the entry runs, init, the
 * interface table, and the process-wide registry that makes a name load
 * once. Its shape follows Redis's module loader and ggml's backend
 * registry: dlopen, dlsym one entry, check the versions, init; on any
 * failure undo everything and say why in one line.
 */
#define _GNU_SOURCE /* dladdr, realpath */

#include "plugin/loader.h"

#include <dirent.h>
#include <dlfcn.h>
#include <elf.h>
#include <errno.h>
#include <pthread.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include <vpeft/backbone.h>
#include <vpeft/head.h>
#include <vpeft/peft.h>

#include "config.h"
#include "plugin/host.h"
#include "util/error.h"
#include "util/file.h"

#define REASON_MAX 768
#define NAME_SHOWN 64 /* longest name quoted back in a message */

struct vp_plugin {
    vp_plugin *next;
    void *handle;
    const vp_plugin_desc *desc;
    const void *iface;
    char *name; /* a copy: messages may need it after dlclose */
    char *path;
    unsigned refs;
};

/* Held for every registry walk and across a whole load, init included, so
 * that two threads loading one name get one plugin and one init. */
static pthread_mutex_t registry_lock = PTHREAD_MUTEX_INITIALIZER;
static vp_plugin *registry;

/* ---- kinds ----------------------------------------------------------------- */

#define IFACE_END(type, last) (offsetof(type, last) + sizeof(void *))

/* What a kind's interface table must hold at ABI 1.0: its size covers
 * every member, and the functions are set (the host calls them all). */
static const struct kind_info {
    const char *name;
    const char *iface_id;
    size_t min_size;
    unsigned n_fn;
    size_t fn_off[4];
    const char *fn_name[4];
} kinds[] = {
    [VP_PLUGIN_BACKBONE] = {"backbone", VP_BACKBONE_IFACE_ID, IFACE_END(vp_backbone_iface, build), 4,
                            {offsetof(vp_backbone_iface, create), offsetof(vp_backbone_iface, destroy),
                             offsetof(vp_backbone_iface, input_size), offsetof(vp_backbone_iface, build)},
                            {"create", "destroy", "input_size", "build"}},
    [VP_PLUGIN_HEAD] = {"head", VP_HEAD_IFACE_ID, IFACE_END(vp_head_iface, build), 3,
                        {offsetof(vp_head_iface, create), offsetof(vp_head_iface, destroy),
                         offsetof(vp_head_iface, build)},
                        {"create", "destroy", "build"}},
    [VP_PLUGIN_PEFT] = {"peft", VP_PEFT_IFACE_ID, IFACE_END(vp_peft_iface, attach), 3,
                        {offsetof(vp_peft_iface, create), offsetof(vp_peft_iface, destroy),
                         offsetof(vp_peft_iface, attach)},
                        {"create", "destroy", "attach"}},
};

#define N_KINDS (sizeof kinds / sizeof kinds[0])

static const struct kind_info *kind_info(uint32_t kind)
{
    return kind > 0 && kind < N_KINDS ? &kinds[kind] : NULL;
}

const char *vp_plugin_kind_str(uint32_t kind)
{
    const struct kind_info *k = kind_info(kind);
    return k ? k->name : "unknown";
}

bool vp_plugin_name_valid(const char *name)
{
    if (!name || !*name)
        return false;
    for (const char *c = name; *c; c++)
        if (!((*c >= 'a' && *c <= 'z') || (*c >= '0' && *c <= '9') || *c == '_'))
            return false;
    return true;
}

/* A descriptor string that can go into a one-line message or a listing. */
static bool one_line(const char *s)
{
    for (; *s; s++)
        if ((unsigned char)*s < 0x20 || *s == 0x7f)
            return false;
    return true;
}

/* ---- file names ---------------------------------------------------------- */

static const char *base_name(const char *path)
{
    const char *s = strrchr(path, '/');
    return s ? s + 1 : path;
}

/* <name> of a file named vpeft-<name>.so, copied into buf; NULL when the
 * file is named otherwise. */
static const char *file_plugin_name(const char *path, char *buf, size_t n)
{
    const char *b = base_name(path);
    size_t len = strlen(b);
    if (len <= 9 || strncmp(b, "vpeft-", 6) || strcmp(b + len - 3, ".so") || len - 9 >= n)
        return NULL;
    memcpy(buf, b + 6, len - 9);
    buf[len - 9] = '\0';
    return buf;
}

/* ---- the search path --------------------------------------------------------- */

static char *dup_str(const char *s)
{
    size_t n = strlen(s) + 1;
    char *d = malloc(n);
    return d ? memcpy(d, s, n) : NULL;
}

void vp_plugin_dirs_free(vp_plugin_dir *dirs, uint32_t n)
{
    if (!dirs)
        return;
    for (uint32_t i = 0; i < n; i++)
        free(dirs[i].path);
    free(dirs);
}

/* Append path (of len bytes) when it is an existing directory not already
 * listed; repeats are recognised by canonical path. */
static vp_status add_dir(vp_plugin_dir **dirs, uint32_t *n, const char *path, size_t len,
                         const char *origin)
{
    char *p = malloc(len + 1);
    if (!p)
        return vp_error_set(VP_ERR_NOMEM, "plugin search path: out of memory");
    memcpy(p, path, len);
    p[len] = '\0';
    char *canon = realpath(p, NULL);
    free(p);
    struct stat sb;
    if (!canon || stat(canon, &sb) || !S_ISDIR(sb.st_mode)) {
        free(canon);
        return VP_OK;
    }
    for (uint32_t i = 0; i < *n; i++)
        if (!strcmp((*dirs)[i].path, canon)) {
            free(canon);
            return VP_OK;
        }
    vp_plugin_dir *d = realloc(*dirs, (*n + 1) * sizeof *d);
    if (!d) {
        free(canon);
        return vp_error_set(VP_ERR_NOMEM, "plugin search path: out of memory");
    }
    *dirs = d;
    d[*n].path = canon;
    d[*n].origin = origin;
    (*n)++;
    return VP_OK;
}

/* Any object inside libvpeft.so: dladdr on it names the library's file. */
static const char lib_anchor;

vp_status vp_plugin_search_path(vp_plugin_dir **out, uint32_t *n_out)
{
    vp_plugin_dir *dirs = NULL;
    uint32_t n = 0;
    vp_status st = VP_OK;
    const char *env = getenv("VPEFT_PLUGIN_PATH");
    for (const char *s = env; s && *s && !st;) {
        const char *colon = strchr(s, ':');
        size_t len = colon ? (size_t)(colon - s) : strlen(s);
        if (len)
            st = add_dir(&dirs, &n, s, len, "VPEFT_PLUGIN_PATH");
        s += len + (colon ? 1 : 0);
    }
    Dl_info info;
    char *lib = NULL;
    if (!st && dladdr(&lib_anchor, &info) && info.dli_fname && (lib = realpath(info.dli_fname, NULL))) {
        char *slash = strrchr(lib, '/');
        size_t dlen = slash ? (size_t)(slash - lib) : 0;
        char *p = malloc(dlen + sizeof "/vpeft/plugins");
        if (!p) {
            st = vp_error_set(VP_ERR_NOMEM, "plugin search path: out of memory");
        } else {
            memcpy(p, lib, dlen);
            strcpy(p + dlen, "/plugins");
            st = add_dir(&dirs, &n, p, strlen(p), "build tree");
            strcpy(p + dlen, "/vpeft/plugins");
            if (!st)
                st = add_dir(&dirs, &n, p, strlen(p), "installed tree");
            free(p);
        }
    }
    free(lib);
    if (!st)
        st = add_dir(&dirs, &n, VP_CONFIG_PLUGIN_DIR, strlen(VP_CONFIG_PLUGIN_DIR),
                     "configured prefix");
    if (st) {
        vp_plugin_dirs_free(dirs, n);
        dirs = NULL;
        n = 0;
    }
    *out = dirs;
    *n_out = n;
    return st;
}

/* ---- opening a file and checking its descriptor ------------------------------ */

/* What probe() learnt about a file. */
typedef struct probe {
    void *handle;               /* open while the probe succeeded */
    const vp_plugin_desc *desc; /* valid while handle is open */
    bool has_abi;               /* abi_* read, even when a later check failed */
    uint16_t abi_major, abi_minor;
} probe;

/* The descriptor's checks, in the order plugin.h gives them. */
static vp_status check_desc(const vp_plugin_desc *d, const char *file_name, uint32_t kind,
                            probe *pr, char *why, size_t why_n)
{
    if (!d) {
        snprintf(why, why_n, "%s returned no descriptor", VP_PLUGIN_ENTRY_SYMBOL);
        return VP_ERR_ABI;
    }
    if (d->size < VP_PLUGIN_DESC_SIZE_1_0) {
        snprintf(why, why_n, "descriptor is %u bytes, ABI 1.0 needs at least %zu",
                 (unsigned)d->size, (size_t)VP_PLUGIN_DESC_SIZE_1_0);
        return VP_ERR_ABI;
    }
    pr->has_abi = true;
    pr->abi_major = d->abi_major;
    pr->abi_minor = d->abi_minor;
    if (d->abi_major != VP_ABI_MAJOR) {
        snprintf(why, why_n, "built for ABI %u.%u, this vpeft has ABI %d.%d (majors differ)",
                 (unsigned)d->abi_major, (unsigned)d->abi_minor, VP_ABI_MAJOR, VP_ABI_MINOR);
        return VP_ERR_ABI;
    }
    if (!d->name) {
        snprintf(why, why_n, "descriptor has no name");
        return VP_ERR_INVALID;
    }
    if (!vp_plugin_name_valid(d->name)) {
        if (one_line(d->name))
            snprintf(why, why_n, "invalid name '%.*s' (names are [a-z0-9_]+)", NAME_SHOWN, d->name);
        else
            snprintf(why, why_n, "invalid name, with control characters (names are [a-z0-9_]+)");
        return VP_ERR_INVALID;
    }
    if (file_name && strcmp(d->name, file_name)) {
        snprintf(why, why_n, "descriptor name '%.*s' does not match the file name "
                 "(vpeft-%.*s.so expected)", NAME_SHOWN, d->name, NAME_SHOWN, d->name);
        return VP_ERR_INVALID;
    }
    if (!d->version || !*d->version || !one_line(d->version)) {
        snprintf(why, why_n, "descriptor has %s version",
                 d->version && *d->version ? "a multi-line" : "no");
        return VP_ERR_INVALID;
    }
    if (!d->description || !one_line(d->description)) {
        snprintf(why, why_n, "descriptor has %s description",
                 d->description ? "a multi-line" : "no");
        return VP_ERR_INVALID;
    }
    const struct kind_info *k = kind_info(d->kind);
    if (!k) {
        snprintf(why, why_n, "kind %u is unknown to this vpeft (ABI %d.%d)", (unsigned)d->kind,
                 VP_ABI_MAJOR, VP_ABI_MINOR);
        return VP_ERR_ABI;
    }
    if (kind && d->kind != kind) {
        snprintf(why, why_n, "is a %s plugin, expected a %s", k->name, vp_plugin_kind_str(kind));
        return VP_ERR_INVALID;
    }
    if (!d->get_interface) {
        snprintf(why, why_n, "descriptor has no get_interface");
        return VP_ERR_ABI;
    }
    return VP_OK;
}

/* ---- the file before dlopen -------------------------------------------------- */

/* ELF of this process's class, byte order and machine. */
#if UINTPTR_MAX > 0xffffffffu
#define ELF_CLASS ELFCLASS64
typedef Elf64_Ehdr elf_ehdr;
typedef Elf64_Phdr elf_phdr;
#else
#define ELF_CLASS ELFCLASS32
typedef Elf32_Ehdr elf_ehdr;
typedef Elf32_Phdr elf_phdr;
#endif
#if __BYTE_ORDER__ == __ORDER_LITTLE_ENDIAN__
#define ELF_DATA ELFDATA2LSB
#else
#define ELF_DATA ELFDATA2MSB
#endif
#if defined(__x86_64__)
#define ELF_MACHINE EM_X86_64
#elif defined(__aarch64__)
#define ELF_MACHINE EM_AARCH64
#elif defined(__i386__)
#define ELF_MACHINE EM_386
#elif defined(__riscv)
#define ELF_MACHINE EM_RISCV
#elif defined(__powerpc64__)
#define ELF_MACHINE EM_PPC64
#endif

static bool read_at(int fd, void *buf, size_t n, uint64_t off)
{
    size_t got = 0;
    while (got < n) {
        ssize_t r = pread(fd, (char *)buf + got, n - got, (off_t)(off + got));
        if (r < 0 && errno == EINTR)
            continue;
        if (r <= 0)
            return false;
        got += (size_t)r;
    }
    return true;
}

/* What glibc's loader would map, checked against the file first: it maps
 * each PT_LOAD segment's file range, and touching pages past the end of a
 * truncated file is SIGBUS in the loader, not an error. So: a regular file
 * (a FIFO would block in open), an ELF header of this process's class,
 * byte order and machine, and program headers and segment file ranges that
 * lie inside the file. why: the reason alone. */
static vp_status check_elf(const char *path, char *why, size_t why_n)
{
    int fd;
    vp_status st = vp_file_open_read(path, &fd);
    if (st) {
        /* The helper's message starts with the file, which ours names. */
        const char *e = vp_error_last();
        size_t pl = strlen(path);
        if (!strncmp(e, path, pl) && !strncmp(e + pl, ": ", 2))
            e += pl + 2;
        snprintf(why, why_n, "%s", e);
        return st;
    }
    struct stat sb;
    elf_ehdr eh;
    st = VP_ERR_FORMAT;
    if (fstat(fd, &sb)) {
        snprintf(why, why_n, "cannot read: %s", strerror(errno));
        st = VP_ERR_IO;
        goto out;
    }
    uint64_t size = (uint64_t)sb.st_size;
    if (size < EI_NIDENT || !read_at(fd, eh.e_ident, EI_NIDENT, 0) ||
        memcmp(eh.e_ident, ELFMAG, SELFMAG)) {
        snprintf(why, why_n, "not an ELF shared object (no ELF magic number)");
        goto out;
    }
    if (eh.e_ident[EI_CLASS] != ELF_CLASS || eh.e_ident[EI_DATA] != ELF_DATA) {
        snprintf(why, why_n, "an ELF file of another class or byte order (%d-bit %s-endian; this "
                 "vpeft is %d-bit %s-endian)", eh.e_ident[EI_CLASS] == ELFCLASS64 ? 64 : 32,
                 eh.e_ident[EI_DATA] == ELFDATA2MSB ? "big" : "little",
                 ELF_CLASS == ELFCLASS64 ? 64 : 32, ELF_DATA == ELFDATA2MSB ? "big" : "little");
        goto out;
    }
    if (size < sizeof eh || !read_at(fd, &eh, sizeof eh, 0)) {
        snprintf(why, why_n, "truncated: %llu bytes, the ELF header needs %zu",
                 (unsigned long long)size, sizeof eh);
        goto out;
    }
    if (eh.e_type != ET_DYN) {
        snprintf(why, why_n, "an ELF file that is not a shared object (type %u)",
                 (unsigned)eh.e_type);
        goto out;
    }
#ifdef ELF_MACHINE
    if (eh.e_machine != ELF_MACHINE) {
        snprintf(why, why_n, "an ELF file for another machine (e_machine %u, this one is %u)",
                 (unsigned)eh.e_machine, (unsigned)ELF_MACHINE);
        goto out;
    }
#endif
    if (eh.e_phentsize != sizeof(elf_phdr) || eh.e_phnum == 0) {
        snprintf(why, why_n, "bad ELF header: %u program headers of %u bytes",
                 (unsigned)eh.e_phnum, (unsigned)eh.e_phentsize);
        goto out;
    }
    uint64_t ph_end = (uint64_t)eh.e_phoff + (uint64_t)eh.e_phnum * sizeof(elf_phdr);
    if (eh.e_phoff > size || ph_end > size) {
        snprintf(why, why_n, "truncated: program headers end at byte %llu, the file has %llu",
                 (unsigned long long)ph_end, (unsigned long long)size);
        goto out;
    }
    for (unsigned i = 0; i < eh.e_phnum; i++) {
        elf_phdr ph;
        if (!read_at(fd, &ph, sizeof ph, eh.e_phoff + (uint64_t)i * sizeof ph)) {
            snprintf(why, why_n, "cannot read program header %u", i);
            goto out;
        }
        if (ph.p_type == PT_NULL)
            continue;
        uint64_t off = ph.p_offset, end = off + ph.p_filesz;
        if (off > size || end < off || end > size) {
            snprintf(why, why_n, "truncated: segment %u (file bytes %llu to %llu) ends past the "
                     "file's %llu bytes", i, (unsigned long long)off, (unsigned long long)end,
                     (unsigned long long)size);
            goto out;
        }
    }
    st = VP_OK;
out:
    close(fd);
    return st;
}

/* Open path and check its descriptor: everything that needs no plugin code
 * but the entry. file_name is <name> for a vpeft-<name>.so file, else NULL;
 * kind 0 accepts any known kind. On failure the file is closed again and
 * why holds the reason alone (no name or file prefix). */
static vp_status probe_file(const char *path, const char *file_name, uint32_t kind, probe *pr,
                            char *why, size_t why_n)
{
    memset(pr, 0, sizeof *pr);
    /* A bare file name would make dlopen search the library path. */
    char local[4096];
    const char *open_path = path;
    if (!strchr(path, '/')) {
        snprintf(local, sizeof local, "./%s", path);
        open_path = local;
    }
    vp_status cst = check_elf(open_path, why, why_n);
    if (cst)
        return cst;
    dlerror();
    void *h = dlopen(open_path, RTLD_NOW | RTLD_LOCAL);
    if (!h) {
        const char *e = dlerror();
        struct stat sb;
        vp_status st = stat(open_path, &sb) && errno == ENOENT ? VP_ERR_NOT_FOUND : VP_ERR_IO;
        if (!e)
            e = "dlopen failed";
        /* glibc starts its message with the file, which ours already names. */
        size_t pl = strlen(open_path);
        if (!strncmp(e, open_path, pl) && !strncmp(e + pl, ": ", 2))
            e += pl + 2;
        snprintf(why, why_n, "%s", e);
        return st;
    }
    dlerror();
    void *sym = dlsym(h, VP_PLUGIN_ENTRY_SYMBOL);
    vp_plugin_entry_fn entry = NULL;
    memcpy(&entry, &sym, sizeof entry); /* POSIX: object and function pointers convert */
    const vp_plugin_desc *d = NULL;
    vp_status st;
    if (!entry) {
        st = VP_ERR_ABI;
        snprintf(why, why_n, "no %s symbol (not a vpeft plugin?)", VP_PLUGIN_ENTRY_SYMBOL);
    } else {
        d = entry();
        st = check_desc(d, file_name, kind, pr, why, why_n);
    }
    if (st) {
        dlclose(h);
        return st;
    }
    pr->handle = h;
    pr->desc = d;
    return VP_OK;
}

/* The kind's interface after init, checked; NULL with why set if unfit. */
static const void *get_iface(const vp_plugin_desc *d, char *why, size_t why_n)
{
    const struct kind_info *k = kind_info(d->kind);
    const void *t = d->get_interface(k->iface_id);
    if (!t) {
        snprintf(why, why_n, "get_interface(\"%s\") gave NULL: a %s plugin must provide it",
                 k->iface_id, k->name);
        return NULL;
    }
    uint32_t size;
    memcpy(&size, t, sizeof size); /* every table starts with its size */
    if (size < k->min_size) {
        snprintf(why, why_n, "its %s table is %u bytes, ABI 1.0 needs at least %zu", k->iface_id,
                 (unsigned)size, k->min_size);
        return NULL;
    }
    for (unsigned i = 0; i < k->n_fn; i++) {
        void (*fn)(void);
        memcpy(&fn, (const char *)t + k->fn_off[i], sizeof fn);
        if (!fn) {
            snprintf(why, why_n, "its %s table has no %s", k->iface_id, k->fn_name[i]);
            return NULL;
        }
    }
    return t;
}

/* ---- the registry ------------------------------------------------------------ */

static vp_plugin *find_name(const char *name)
{
    for (vp_plugin *p = registry; p; p = p->next)
        if (!strcmp(p->name, name))
            return p;
    return NULL;
}

/* A registered plugin wanted again: one more reference if its kind fits. */
static vp_status reuse(vp_plugin *p, uint32_t kind, vp_plugin **out)
{
    if (kind && p->desc->kind != kind)
        return vp_error_set(VP_ERR_INVALID, "%s: cannot load %s: is a %s plugin, expected a %s",
                            p->name, p->path, vp_plugin_kind_str(p->desc->kind),
                            vp_plugin_kind_str(kind));
    p->refs++;
    *out = p;
    return VP_OK;
}

/* A plugin's own init message as one line of ours. */
static void plugin_message(vp_status st, char *buf, size_t n)
{
    snprintf(buf, n, "%s", vp_error_last());
    if (!buf[0])
        snprintf(buf, n, "%s (the plugin gave no message)", vp_status_str(st));
    for (char *c = buf; *c; c++)
        if ((unsigned char)*c < 0x20)
            *c = ' ';
}

/* Load path under the lock. label prefixes messages; file_name as probe. */
static vp_status load_locked(const char *label, const char *path, const char *file_name,
                             uint32_t kind, vp_plugin **out)
{
    char why[REASON_MAX];
    probe pr;
    vp_status st = probe_file(path, file_name, kind, &pr, why, sizeof why);
    if (st)
        return vp_error_set(st, "%s: cannot load %s: %s", label, path, why);
    /* The same file again: dlopen gave the handle it gave before. */
    for (vp_plugin *p = registry; p; p = p->next)
        if (p->handle == pr.handle) {
            dlclose(pr.handle);
            return reuse(p, kind, out);
        }
    const vp_plugin_desc *d = pr.desc;
    vp_plugin *other = find_name(d->name);
    if (other) {
        dlclose(pr.handle); /* d goes with it: other's copies name it */
        return vp_error_set(VP_ERR_INVALID, "%s: cannot load %s: a plugin named '%s' is already "
                            "loaded from %s", label, path, other->name, other->path);
    }
    vp_plugin *p = calloc(1, sizeof *p);
    if (!p || !(p->name = dup_str(d->name)) || !(p->path = dup_str(path))) {
        st = vp_error_set(VP_ERR_NOMEM, "%s: cannot load %s: out of memory", label, path);
        goto fail;
    }
    if (d->init) {
        vp_error_clear();
        vp_status ist = d->init(vp_host_api_get());
        if (ist) {
            st = ist < 0 ? ist : VP_ERR_INVALID;
            plugin_message(st, why, sizeof why);
            st = vp_error_set(st, "%s: cannot load %s: init failed: %s", label, path, why);
            goto fail;
        }
    }
    if (!(p->iface = get_iface(d, why, sizeof why))) {
        if (d->fini)
            d->fini();
        st = vp_error_set(VP_ERR_ABI, "%s: cannot load %s: %s", label, path, why);
        goto fail;
    }
    p->handle = pr.handle;
    p->desc = d;
    p->refs = 1;
    p->next = registry;
    registry = p;
    *out = p;
    return VP_OK;
fail:
    if (p) {
        free(p->name);
        free(p->path);
        free(p);
    }
    dlclose(pr.handle);
    return st;
}

vp_status vp_plugin_load_file(const char *path, uint32_t kind, vp_plugin **out)
{
    if (!path || !*path || !out)
        return vp_error_set(VP_ERR_INVALID, "vp_plugin_load_file: no %s", out ? "file" : "out");
    *out = NULL;
    if (kind && !kind_info(kind))
        return vp_error_set(VP_ERR_INVALID, "vp_plugin_load_file: kind %u is not a plugin kind",
                            (unsigned)kind);
    char buf[256];
    const char *file_name = file_plugin_name(path, buf, sizeof buf);
    const char *label = file_name && *file_name ? file_name : base_name(path);
    pthread_mutex_lock(&registry_lock);
    vp_status st = load_locked(label, path, file_name, kind, out);
    pthread_mutex_unlock(&registry_lock);
    return st;
}

vp_status vp_plugin_load(const char *name, vp_plugin_kind kind, vp_plugin **out)
{
    if (!out)
        return vp_error_set(VP_ERR_INVALID, "vp_plugin_load: no out");
    *out = NULL;
    if (!vp_plugin_name_valid(name) || strlen(name) > NAME_SHOWN)
        return vp_error_set(VP_ERR_INVALID, "'%.*s' is not a plugin name: names are [a-z0-9_]+, "
                            "at most %d characters", NAME_SHOWN, name ? name : "", NAME_SHOWN);
    if (!kind_info((uint32_t)kind))
        return vp_error_set(VP_ERR_INVALID, "vp_plugin_load: kind %u is not a plugin kind",
                            (unsigned)kind);
    pthread_mutex_lock(&registry_lock);
    vp_status st;
    vp_plugin *p = find_name(name);
    if (p) {
        st = reuse(p, (uint32_t)kind, out);
        goto done;
    }
    vp_plugin_dir *dirs;
    uint32_t n;
    if ((st = vp_plugin_search_path(&dirs, &n)))
        goto done;
    char file[sizeof "vpeft-.so" + NAME_SHOWN];
    snprintf(file, sizeof file, "vpeft-%s.so", name);
    char *found = NULL;
    for (uint32_t i = 0; i < n && !found; i++) {
        size_t len = strlen(dirs[i].path);
        if (!(found = malloc(len + 1 + strlen(file) + 1))) {
            st = vp_error_set(VP_ERR_NOMEM, "%s: out of memory", name);
            break;
        }
        sprintf(found, "%s/%s", dirs[i].path, file);
        struct stat sb;
        if (stat(found, &sb) || !S_ISREG(sb.st_mode)) {
            free(found);
            found = NULL;
        }
    }
    if (found) {
        st = load_locked(name, found, name, (uint32_t)kind, out);
        free(found);
    } else if (!st) {
        /* One line however long the path: the message buffer truncates. */
        char list[REASON_MAX] = "";
        size_t len = 0;
        for (uint32_t i = 0; i < n && len < sizeof list; i++)
            len += (size_t)snprintf(list + len, sizeof list - len, "%s%s", i ? ":" : "",
                                    dirs[i].path);
        st = vp_error_set(VP_ERR_NOT_FOUND, "%s: cannot find %s in %s (set VPEFT_PLUGIN_PATH to "
                          "add directories)", name, file, n ? list : "any directory: none exists");
    }
    vp_plugin_dirs_free(dirs, n);
done:
    pthread_mutex_unlock(&registry_lock);
    return st;
}

void vp_plugin_unload(vp_plugin *p)
{
    if (!p)
        return;
    pthread_mutex_lock(&registry_lock);
    VP_ASSERT(p->refs > 0);
    if (--p->refs == 0) {
        for (vp_plugin **pp = &registry; *pp; pp = &(*pp)->next)
            if (*pp == p) {
                *pp = p->next;
                break;
            }
        if (p->desc->fini)
            p->desc->fini();
        dlclose(p->handle);
        free(p->name);
        free(p->path);
        free(p);
    }
    pthread_mutex_unlock(&registry_lock);
}

const vp_plugin_desc *vp_plugin_descriptor(const vp_plugin *p) { return p ? p->desc : NULL; }
const char *vp_plugin_name(const vp_plugin *p) { return p ? p->name : NULL; }
const char *vp_plugin_path(const vp_plugin *p) { return p ? p->path : NULL; }
const void *vp_plugin_interface(const vp_plugin *p) { return p ? p->iface : NULL; }

/* ---- listing ----------------------------------------------------------------- */

void vp_plugin_found_free(vp_plugin_found *f, uint32_t n)
{
    if (!f)
        return;
    for (uint32_t i = 0; i < n; i++) {
        free(f[i].path);
        free(f[i].name);
        free(f[i].version);
        free(f[i].description);
        free(f[i].error);
    }
    free(f);
}

static int cmp_str(const void *a, const void *b)
{
    return strcmp(*(char *const *)a, *(char *const *)b);
}

/* The vpeft-*.so names in dir, sorted; a directory that cannot be read
 * holds none (it existed a moment ago: a race or a permission). */
static vp_status list_dir(const char *dir, char ***names, uint32_t *n)
{
    *names = NULL;
    *n = 0;
    DIR *dp = opendir(dir);
    if (!dp)
        return VP_OK;
    struct dirent *e;
    char buf[256];
    while ((e = readdir(dp))) {
        if (!file_plugin_name(e->d_name, buf, sizeof buf))
            continue;
        char **nn = realloc(*names, (*n + 1) * sizeof *nn);
        if (!nn || !(nn[*n] = dup_str(e->d_name))) {
            if (nn)
                *names = nn;
            closedir(dp);
            return vp_error_set(VP_ERR_NOMEM, "%s: out of memory", dir);
        }
        *names = nn;
        (*n)++;
    }
    closedir(dp);
    if (*n)
        qsort(*names, *n, sizeof **names, cmp_str);
    return VP_OK;
}

/* Fill one entry (path and name set) by probing its file. */
static vp_status scan_one(vp_plugin_found *f)
{
    char why[REASON_MAX];
    probe pr;
    vp_status st = probe_file(f->path, f->name, 0, &pr, why, sizeof why);
    f->has_abi = pr.has_abi;
    f->abi_major = pr.abi_major;
    f->abi_minor = pr.abi_minor;
    if (st)
        return (f->error = dup_str(why)) ? VP_OK : VP_ERR_NOMEM;
    f->ok = true;
    f->kind = pr.desc->kind;
    f->version = dup_str(pr.desc->version);
    f->description = dup_str(pr.desc->description);
    dlclose(pr.handle);
    return f->version && f->description ? VP_OK : VP_ERR_NOMEM;
}

vp_status vp_plugin_scan(vp_plugin_found **out, uint32_t *n_out)
{
    *out = NULL;
    *n_out = 0;
    vp_plugin_dir *dirs;
    uint32_t n_dirs;
    vp_status st = vp_plugin_search_path(&dirs, &n_dirs);
    if (st)
        return st;
    vp_plugin_found *f = NULL;
    uint32_t n = 0;
    for (uint32_t i = 0; i < n_dirs && !st; i++) {
        char **names;
        uint32_t n_names;
        st = list_dir(dirs[i].path, &names, &n_names);
        for (uint32_t j = 0; j < n_names && !st; j++) {
            vp_plugin_found *g = realloc(f, (n + 1) * sizeof *g);
            if (!g) {
                st = VP_ERR_NOMEM;
                break;
            }
            f = g;
            vp_plugin_found *e = &f[n++];
            memset(e, 0, sizeof *e);
            char buf[256];
            e->path = malloc(strlen(dirs[i].path) + 1 + strlen(names[j]) + 1);
            e->name = dup_str(file_plugin_name(names[j], buf, sizeof buf));
            if (!e->path || !e->name) {
                st = VP_ERR_NOMEM;
                break;
            }
            sprintf(e->path, "%s/%s", dirs[i].path, names[j]);
            for (uint32_t k = 0; k + 1 < n && !e->shadowed_by; k++)
                if (!strcmp(f[k].name, e->name))
                    e->shadowed_by = f[k].path;
            if (!e->shadowed_by)
                st = scan_one(e);
        }
        for (uint32_t j = 0; j < n_names; j++)
            free(names[j]);
        free(names);
    }
    vp_plugin_dirs_free(dirs, n_dirs);
    if (st) {
        vp_plugin_found_free(f, n);
        return st == VP_ERR_NOMEM ? vp_error_set(st, "listing plugins: out of memory") : st;
    }
    *out = f;
    *n_out = n;
    return VP_OK;
}
