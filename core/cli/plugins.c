/*
 * vpeft plugins: the plugin search path and every vpeft-*.so on it, with
 * kind, version, ABI and description, or the reason a file cannot be
 * loaded; and --check, which loads one file as a config would (every
 * check, init and fini) for plugin authors and packagers.
 */
#include <stdio.h>
#include <string.h>

#include "cli/cli.h"
#include "config.h"
#include "plugin/loader.h"
#include "util/error.h"

static void usage(void)
{
    printf("usage: vpeft plugins [--strict]\n"
           "       vpeft plugins --check FILE...\n\n"
           "Prints the plugin search path, then one row per vpeft-<name>.so found on\n"
           "it: name, kind, version, plugin ABI, file and description. A file that\n"
           "cannot be loaded shows the reason instead of a description, and a file\n"
           "shadowed by an earlier one of the same name says so: the first wins.\n"
           "Listing opens each file (dlopen) and checks its descriptor, but does not\n"
           "call the plugin's init, nor ask for its interface: --check does both.\n\n"
           "The search path, in order: each directory in VPEFT_PLUGIN_PATH (separated\n"
           "by ':'), <dir of libvpeft.so>/plugins (a build tree),\n"
           "<dir of libvpeft.so>/vpeft/plugins (an installed tree, wherever it is),\n"
           "and %s; directories that do not exist are left out.\n\n"
           "  --strict         exit status 1 when a file on the search path cannot be\n"
           "                   loaded (without it the listing exits 0 and shows why)\n"
           "  --check FILE...  load each FILE as vpeft does (every check, then init and\n"
           "                   fini) and print 'FILE: ok: <name> <kind> <version>, ABI\n"
           "                   <major>.<minor>', or the reason on stderr; exit status 1\n"
           "                   when any FILE fails\n\n"
           "Exit status: 0 ok, 1 a file failed (--strict, --check), 2 usage error.\n",
           VP_CONFIG_PLUGIN_DIR);
}

/* The FILE arguments are the ones that are not options. */
static int check_files(int argc, char **argv)
{
    int rc = 0;
    for (int i = 1; i < argc; i++) {
        if (argv[i][0] == '-')
            continue;
        vp_plugin *p;
        if (vp_plugin_load_file(argv[i], 0, &p)) {
            fprintf(stderr, "vpeft: %s\n", vp_error_last());
            rc = 1;
            continue;
        }
        const vp_plugin_desc *d = vp_plugin_descriptor(p);
        printf("%s: ok: %s %s %s, ABI %u.%u\n", argv[i], d->name, vp_plugin_kind_str(d->kind),
               d->version, (unsigned)d->abi_major, (unsigned)d->abi_minor);
        vp_plugin_unload(p);
    }
    return rc;
}

static int width(int w, const char *s)
{
    int n = (int)strlen(s);
    return n > w ? n : w;
}

static int list(bool strict)
{
    vp_plugin_dir *dirs;
    uint32_t n_dirs;
    vp_plugin_found *f;
    uint32_t n;
    if (vp_plugin_search_path(&dirs, &n_dirs)) {
        fprintf(stderr, "vpeft: %s\n", vp_error_last());
        return 1;
    }
    if (vp_plugin_scan(&f, &n)) {
        fprintf(stderr, "vpeft: %s\n", vp_error_last());
        vp_plugin_dirs_free(dirs, n_dirs);
        return 1;
    }
    if (!n_dirs) {
        printf("plugin search path: empty, none of its directories exists (set "
               "VPEFT_PLUGIN_PATH)\n");
    } else {
        int w = 0;
        for (uint32_t i = 0; i < n_dirs; i++)
            w = width(w, dirs[i].path);
        printf("plugin search path, in order:\n");
        for (uint32_t i = 0; i < n_dirs; i++)
            printf("  %-*s  (%s)\n", w, dirs[i].path, dirs[i].origin);
    }
    vp_plugin_dirs_free(dirs, n_dirs);

    if (!n) {
        printf("\nno plugins: no vpeft-<name>.so file in %s\n",
               n_dirs ? "these directories" : "any directory");
        return 0;
    }
    /* The ABI column holds "x.y" (major and minor are 16 bits: "65535.65535"). */
    char abi[32];
    int wn = width(0, "NAME"), wk = width(0, "KIND"), wv = width(0, "VERSION"),
        wa = width(0, "ABI"), wf = width(0, "FILE");
    for (uint32_t i = 0; i < n; i++) {
        wn = width(wn, f[i].name);
        wk = width(wk, f[i].ok ? vp_plugin_kind_str(f[i].kind) : "-");
        wv = width(wv, f[i].ok ? f[i].version : "-");
        snprintf(abi, sizeof abi, "%u.%u", (unsigned)f[i].abi_major, (unsigned)f[i].abi_minor);
        wa = width(wa, f[i].has_abi ? abi : "-");
        wf = width(wf, f[i].path);
    }
    printf("\n%-*s  %-*s  %-*s  %-*s  %-*s  %s\n", wn, "NAME", wk, "KIND", wv, "VERSION", wa,
           "ABI", wf, "FILE", "DESCRIPTION");
    int failed = 0;
    for (uint32_t i = 0; i < n; i++) {
        snprintf(abi, sizeof abi, "%u.%u", (unsigned)f[i].abi_major, (unsigned)f[i].abi_minor);
        printf("%-*s  %-*s  %-*s  %-*s  %-*s  ", wn, f[i].name, wk,
               f[i].ok ? vp_plugin_kind_str(f[i].kind) : "-", wv, f[i].ok ? f[i].version : "-",
               wa, f[i].has_abi ? abi : "-", wf, f[i].path);
        if (f[i].shadowed_by) {
            printf("shadowed by %s\n", f[i].shadowed_by);
        } else if (f[i].ok) {
            printf("%s\n", f[i].description);
        } else {
            printf("cannot load: %s\n", f[i].error);
            failed++;
        }
    }
    vp_plugin_found_free(f, n);
    if (strict && failed) {
        fprintf(stderr, "vpeft plugins: %d file%s on the search path cannot be loaded\n", failed,
                failed == 1 ? "" : "s");
        return 1;
    }
    return 0;
}

int vp_cli_plugins(int argc, char **argv)
{
    bool strict = false, check = false;
    int n_files = 0;
    for (int i = 1; i < argc; i++) {
        if (!strcmp(argv[i], "-h") || !strcmp(argv[i], "--help")) {
            usage();
            return 0;
        }
        if (!strcmp(argv[i], "--strict")) {
            strict = true;
        } else if (!strcmp(argv[i], "--check")) {
            check = true;
        } else if (argv[i][0] == '-') {
            fprintf(stderr, "vpeft plugins: unknown option '%s' (see vpeft plugins --help)\n",
                    argv[i]);
            return 2;
        } else if (!check) {
            fprintf(stderr, "vpeft plugins: unexpected argument '%s' (files go after --check; "
                            "see vpeft plugins --help)\n", argv[i]);
            return 2;
        } else {
            n_files++;
        }
    }
    if (check && strict) {
        fprintf(stderr, "vpeft plugins: --strict is for the listing, not --check (see vpeft "
                        "plugins --help)\n");
        return 2;
    }
    if (check && !n_files) {
        fprintf(stderr, "vpeft plugins: --check needs at least one FILE (see vpeft plugins "
                        "--help)\n");
        return 2;
    }
    return check ? check_files(argc, argv) : list(strict);
}
