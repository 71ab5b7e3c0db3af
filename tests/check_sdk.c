/*
 * SDK suite: what a third-party plugin author gets. Every public header
 * compiles on its own as C11, C17 and C++; vpeft-plugin.mk refuses bad
 * input with one clear line and links nothing from the core; in-tree plugin
 * directories build through it; the template's descriptor is what the
 * loader expects and its init() refuses a host without custom kernels;
 * `make install` puts the SDK where vpeft.pc says; the installed template
 * builds out of tree with nothing but pkg-config, exports only
 * vp_plugin_entry, and loads and trains in the installed vpeft (that last
 * part needs the loader and `vpeft plugin-test`). Runs the real make,
 * compiler, nm and vpeft.
 */
#include "harness.h"

#include <dirent.h>
#include <dlfcn.h>
#include <stdarg.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

#include <vpeft/vpeft.h>

#include "plugin/host.h"

/* The harness's subprocess runner (vt_sh), under this suite's short names. */
#define run vt_sh
#define out vt_out
#define err vt_err
#define assert_has vt_assert_has

static const char *tmp(void) { return getenv("TMPDIR") ? getenv("TMPDIR") : "/tmp"; }


#define run_ok(...)                                                                             \
    do {                                                                                        \
        int rc_ = run(__VA_ARGS__);                                                             \
        ck_assert_msg(rc_ == 0, "exit %d from: %s\nstdout:\n%s\nstderr:\n%s", rc_, #__VA_ARGS__, \
                      out, err);                                                                \
    } while (0)


static const char *srcdir(void)
{
    const char *s = getenv("VPEFT_SRCDIR");
    ck_assert_msg(s != NULL, "VPEFT_SRCDIR is not set (run through make check)");
    return s;
}

/* The build's C compiler, from the config.mk of the build directory (where
 * run.sh runs the suites). */
static const char *cc(void)
{
    static char v[512];
    if (!v[0]) {
        run_ok("sed -n 's/^CC = //p' config.mk");
        out[strcspn(out, "\n")] = '\0';
        ck_assert_msg(out[0] && strlen(out) < sizeof v, "no CC in config.mk");
        memcpy(v, out, strlen(out) + 1);
    }
    return v;
}

/* A make that does not join the outer `make check`'s jobserver or see its
 * command-line variables. */
#define MAKE "env -u MAKEFLAGS -u MAKELEVEL -u MFLAGS make --no-print-directory"

/* ---- the headers ----------------------------------------------------------- */

static int header_names(char names[][64], int max)
{
    char dir[1024];
    snprintf(dir, sizeof dir, "%s/sdk/include/vpeft", srcdir());
    DIR *d = opendir(dir);
    ck_assert_msg(d != NULL, "cannot open %s", dir);
    int n = 0;
    for (struct dirent *e; (e = readdir(d));) {
        size_t len = strlen(e->d_name);
        if (len > 2 && len < 64 && !strcmp(e->d_name + len - 2, ".h") && n < max)
            snprintf(names[n++], 64, "%s", e->d_name);
    }
    closedir(d);
    return n;
}

/* Each header alone in a translation unit (plus one declaration, so that
 * the unit is not empty): nothing it needs may come from an earlier
 * include, and nothing in it may warn. */
START_TEST(test_headers_compile)
{
    char names[64][64];
    int n = header_names(names, 64);
    ck_assert_int_ge(n, 13);
    int found_umbrella = 0;
    for (int i = 0; i < n; i++) {
        found_umbrella |= !strcmp(names[i], "vpeft.h");
        for (int c = 0; c < 2; c++) {
            const char *std = c ? "c17" : "c11";
            int rc = run("printf '#include <vpeft/%s>\\ntypedef int vp_sdk_nonempty;\\n' | "
                         "%s -std=%s -Wall -Wextra -pedantic -Werror -fsyntax-only -I%s/sdk/include "
                         "-x c -", names[i], cc(), std, srcdir());
            ck_assert_msg(rc == 0, "vpeft/%s as %s:\n%s", names[i], std, err);
        }
    }
    ck_assert_msg(found_umbrella, "no vpeft.h in sdk/include/vpeft");
}
END_TEST

/* As C++, and a plugin written in C++ gets the unmangled entry symbol. */
START_TEST(test_headers_cxx)
{
    if (run("command -v g++ || command -v c++") != 0) {
        vt_skip("test_headers_cxx", "-", "no C++ compiler (g++ or c++)");
        return;
    }
    char cxx[512];
    snprintf(cxx, sizeof cxx, "%.*s", (int)strcspn(out, "\n"), out);
    char names[64][64];
    int n = header_names(names, 64);
    for (int i = 0; i < n; i++) {
        int rc = run("printf '#include <vpeft/%s>\\ntypedef int vp_sdk_nonempty;\\n' | "
                     "%s -x c++ -std=c++11 -Wall -Wextra -pedantic -Werror -fsyntax-only "
                     "-I%s/sdk/include -", names[i], cxx, srcdir());
        ck_assert_msg(rc == 0, "vpeft/%s as C++:\n%s", names[i], err);
    }
    run_ok("printf '#include <vpeft/vpeft.h>\\nconst vp_plugin_desc *vp_plugin_entry(void) "
           "{ return nullptr; }\\n' | %s -x c++ -std=c++11 -Wall -Wextra -Werror -fPIC -c "
           "-I%s/sdk/include -o %s/entry.o - && nm --defined-only %s/entry.o",
           cxx, srcdir(), tmp(), tmp());
    assert_has(out, " T vp_plugin_entry\n");
}
END_TEST

/* ---- vpeft-plugin.mk ----------------------------------------------------------- */

/* A plugin directory under $TMPDIR/<name> holding the given C source. */
static void plugin_dir(const char *name, const char *src)
{
    char path[512];
    snprintf(path, sizeof path, "%s/%s", tmp(), name);
    run_ok("rm -rf %s && mkdir -p %s", path, path);
    snprintf(path, sizeof path, "%s/%s/p.c", tmp(), name);
    FILE *f = fopen(path, "w");
    ck_assert_ptr_nonnull(f);
    fputs(src, f);
    fclose(f);
}

/* make -f the fragment in $TMPDIR/<dir>, headers from the source tree. */
#define FRAG MAKE " -C %s/%s -f %s/sdk/vpeft-plugin.mk VPEFT_CFLAGS=-I%s/sdk/include CC='%s'"
#define FRAG_ARGS(dir) tmp(), dir, srcdir(), srcdir(), cc()

START_TEST(test_fragment_errors)
{
    plugin_dir("frag", "#include <vpeft/vpeft.h>\n"
                       "VP_PLUGIN_EXPORT const vp_plugin_desc *vp_plugin_entry(void) { return 0; }\n");

    ck_assert_int_eq(run(FRAG " SOURCES=p.c", FRAG_ARGS("frag")), 2);
    assert_has(err, "vpeft-plugin.mk: set PLUGIN (the plugin's config name, [a-z0-9_]+) before "
                    "including it");
    ck_assert_int_eq(run(FRAG " PLUGIN=My-Plugin SOURCES=p.c", FRAG_ARGS("frag")), 2);
    assert_has(err, "vpeft-plugin.mk: PLUGIN 'My-Plugin' is not a config name: use only a-z, 0-9 "
                    "and _");
    ck_assert_int_eq(run(FRAG " PLUGIN=p", FRAG_ARGS("frag")), 2);
    assert_has(err, "vpeft-plugin.mk: set SOURCES (the plugin's .c files) before including it");
    ck_assert_int_eq(run(FRAG " PLUGIN=p SOURCES='p.c q.cc'", FRAG_ARGS("frag")), 2);
    assert_has(err, "vpeft-plugin.mk: SOURCES must be .c files, not: q.cc");
    ck_assert_int_eq(run(FRAG " PLUGIN=p SOURCES=p.c SHADERS=a-b.comp", FRAG_ARGS("frag")), 2);
    assert_has(err, "vpeft-plugin.mk: shader names must be C identifiers (they name "
                    "vp_spv_<stem>): a-b");
    ck_assert_int_eq(run(FRAG " PLUGIN=p SOURCES=p.c SHADERS='x/s.comp y/s.comp'",
                         FRAG_ARGS("frag")), 2);
    assert_has(err, "vpeft-plugin.mk: two SHADERS have the same file name: x/s.comp y/s.comp");

    /* Without VPEFT_CFLAGS the fragment asks pkg-config, which knows nothing here. */
    ck_assert_int_eq(run("cd %s/frag && PKG_CONFIG_LIBDIR=/nonexistent PKG_CONFIG_PATH= " MAKE
                         " -f %s/sdk/vpeft-plugin.mk PLUGIN=p SOURCES=p.c", tmp(), srcdir()), 2);
    assert_has(err, "vpeft-plugin.mk: 'pkg-config --cflags vpeft' failed: install vpeft, or set "
                    "PKG_CONFIG_PATH to the directory that holds vpeft.pc");

    /* A good one: only the entry point is exported. */
    run_ok(FRAG " PLUGIN=frag SOURCES=p.c", FRAG_ARGS("frag"));
    run_ok("nm -D --defined-only %s/frag/vpeft-frag.so", tmp());
    ck_assert_str_eq(strchr(out, ' ') ? strchr(out, ' ') + 1 : out, "T vp_plugin_entry\n");
}
END_TEST

/* A plugin that calls into the core instead of through the host table does
 * not link, and one without the entry point is no plugin. */
START_TEST(test_fragment_enforces_abi)
{
    plugin_dir("core_call", "#include <vpeft/vpeft.h>\n"
                            "const char *vp_error_last(void);\n"
                            "VP_PLUGIN_EXPORT const vp_plugin_desc *vp_plugin_entry(void)\n"
                            "{ return vp_error_last() ? 0 : 0; }\n");
    ck_assert_int_eq(run(FRAG " PLUGIN=core_call SOURCES=p.c", FRAG_ARGS("core_call")), 2);
    assert_has(err, "undefined reference to `vp_error_last'");
    ck_assert_int_eq(run("test -e %s/core_call/vpeft-core_call.so", tmp()), 1);

    plugin_dir("no_entry", "int vp_not_an_entry(void);\nint vp_not_an_entry(void) { return 1; }\n");
    ck_assert_int_eq(run(FRAG " PLUGIN=no_entry SOURCES=p.c", FRAG_ARGS("no_entry")), 2);
    assert_has(err, "vpeft-plugin.mk: vpeft-no_entry.so does not define vp_plugin_entry "
                    "(see vpeft/plugin.h)");
    ck_assert_int_eq(run("test -e %s/no_entry/vpeft-no_entry.so", tmp()), 1);
}
END_TEST

/* nm's view of a plugin: exactly one defined dynamic symbol, the entry
 * point, a function; and no vp_* symbol it expects from elsewhere. */
static void assert_exports_entry_only(const char *so)
{
    run_ok("nm -D --defined-only %s", so);
    ck_assert_msg(!strcmp(strchr(out, ' ') ? strchr(out, ' ') + 1 : out, "T vp_plugin_entry\n"),
                  "%s exports more or other than vp_plugin_entry:\n%s", so, out);
    run_ok("nm -D --undefined-only %s", so);
    ck_assert_msg(strstr(out, " vp_") == NULL, "%s needs vp_* symbols from elsewhere:\n%s", so, out);
}

/* In the build tree: the template and every plugins/<name>/ become
 * plugins/vpeft-<name>.so; a directory without a Makefile is built from all
 * its .c and .comp files. */
START_TEST(test_in_tree)
{
    assert_exports_entry_only("plugins/vpeft-ia3.so");
    run_ok("test -f obj/plugins/ia3/ia3_scale.spv.h && grep -q '^static const uint32_t "
           "vp_spv_ia3_scale\\[\\]' obj/plugins/ia3/ia3_scale.spv.h");

    run_ok("rm -rf %s/tree && mkdir -p %s/tree/src/scale2 && cp %s/sdk/template/ia3.c "
           "%s/sdk/template/ia3_scale.comp %s/tree/src/scale2/",
           tmp(), tmp(), srcdir(), srcdir(), tmp());
    run_ok(MAKE " PLUGINS_SRCDIR=%s/tree/src PLUGINS_OUT=%s/tree/out PLUGINS_OBJ=%s/tree/obj "
           "%s/tree/out/vpeft-scale2.so", tmp(), tmp(), tmp(), tmp());
    char so[512];
    snprintf(so, sizeof so, "%s/tree/out/vpeft-scale2.so", tmp());
    assert_exports_entry_only(so);
    /* Up to date: the sub-make runs and does nothing. */
    run_ok(MAKE " PLUGINS_SRCDIR=%s/tree/src PLUGINS_OUT=%s/tree/out PLUGINS_OBJ=%s/tree/obj "
           "%s/tree/out/vpeft-scale2.so", tmp(), tmp(), tmp(), tmp());
    ck_assert_str_eq(out, "");
}
END_TEST

/* The template as the loader sees it: its descriptor and interface, and an
 * init() that refuses, by name, a host without custom kernels, whether the
 * members are NULL or beyond the end of an older host's shorter table. */
START_TEST(test_template_descriptor)
{
    void *h = dlopen("plugins/vpeft-ia3.so", RTLD_NOW | RTLD_LOCAL);
    ck_assert_msg(h != NULL, "dlopen: %s", dlerror());
    vp_plugin_entry_fn entry = (vp_plugin_entry_fn)(uintptr_t)dlsym(h, VP_PLUGIN_ENTRY_SYMBOL);
    ck_assert_ptr_nonnull(entry);
    const vp_plugin_desc *d = entry();
    ck_assert_uint_eq(d->size, sizeof(vp_plugin_desc));
    ck_assert_uint_eq(d->abi_major, VP_ABI_MAJOR);
    ck_assert_uint_eq(d->abi_minor, VP_ABI_MINOR);
    ck_assert_str_eq(d->name, "ia3");
    ck_assert_uint_eq(d->kind, VP_PLUGIN_PEFT);
    ck_assert_str_eq(d->version, "0.1.0");
    ck_assert_str_eq(d->description, "IA3: learned per-channel scaling of linear layer outputs");
    ck_assert_ptr_nonnull(d->init);
    ck_assert_ptr_null(d->get_interface(VP_BACKBONE_IFACE_ID));
    ck_assert_ptr_null(d->get_interface("vpeft.peft/2"));
    const vp_peft_iface *pi = d->get_interface(VP_PEFT_IFACE_ID);
    ck_assert_ptr_nonnull(pi);
    ck_assert_uint_eq(pi->size, sizeof(vp_peft_iface));
    ck_assert_str_eq(pi->peft_type, "IA3");
    ck_assert(pi->create && pi->destroy && pi->attach);
    pi->destroy(NULL);

    vp_host_api host = *vp_host_api_get();
    host.custom = NULL;
    vt_expect_err(d->init(&host), VP_ERR_UNSUPPORTED,
                  "ia3: vpeft " VP_VERSION_STRING " has no custom kernels");
    host = *vp_host_api_get();
    host.size = (uint32_t)offsetof(vp_host_api, kernel);
    host.kernel = (vp_status(*)(vp_graph *, const vp_kernel_desc *, vp_custom_kernel **))(uintptr_t)1;
    vt_expect_err(d->init(&host), VP_ERR_UNSUPPORTED,
                  "ia3: vpeft " VP_VERSION_STRING " has no custom kernels");
    dlclose(h);
}
END_TEST

/* ---- install, and the template out of tree ------------------------------------- */

static char stage[512], oot[512];

/* make in directory d against the staged SDK (arguments: d, stage, stage). */
#define STAGED_MAKE                                                                             \
    "cd %s && PKG_CONFIG_LIBDIR=%s/usr/lib/pkgconfig PKG_CONFIG_PATH= " MAKE                    \
    " PKG_CONFIG='pkg-config --define-variable=prefix=%s/usr'"

/* Once per suite: `make install` into $TMPDIR/stage with PREFIX=/usr, the
 * installed template copied to $TMPDIR/oot and built there with only
 * pkg-config to find the SDK. A staged vpeft.pc still says prefix=/usr, so
 * pkg-config is told the real prefix; the search path holds only the stage. */
static void staged(void)
{
    if (stage[0])
        return;
    snprintf(stage, sizeof stage, "%s/stage", tmp());
    snprintf(oot, sizeof oot, "%s/oot", tmp());
    run_ok("rm -rf %s %s && " MAKE " -s install DESTDIR=%s PREFIX=/usr", stage, oot, stage);
    run_ok("cp -r %s/usr/share/vpeft/template %s", stage, oot);
    run_ok(STAGED_MAKE " CC='%s'", oot, stage, stage, cc());
}

START_TEST(test_install_sdk)
{
    staged();
    run_ok("cd %s/usr && test -f lib/pkgconfig/vpeft.pc && test -f share/vpeft/vpeft-plugin.mk && "
           "test -f share/vpeft/vpeft-plugin.map && test -f include/vpeft/vpeft.h && "
           "test -x lib/vpeft/plugins/vpeft-ia3.so", stage);
    run_ok("cd %s/usr/share/vpeft/template && LC_ALL=C ls", stage);
    ck_assert_str_eq(out, "Makefile\nREADME.md\nia3.c\nia3_scale.comp\ntest.json\n");

    /* What the installed vpeft.pc says, as written and relocated to the stage. */
    const char *pc = "PKG_CONFIG_LIBDIR=%s/usr/lib/pkgconfig PKG_CONFIG_PATH= pkg-config %s vpeft";
    static const char *const vars[][2] = {
        {"--variable=prefix", "/usr\n"},
        {"--variable=sdkdir", "/usr/share/vpeft\n"},
        {"--variable=plugindir", "/usr/lib/vpeft/plugins\n"},
        {"--modversion", VP_VERSION_STRING "\n"},
        {"--libs", "\n"}, /* plugins must not link libvpeft */
    };
    for (size_t i = 0; i < sizeof vars / sizeof vars[0]; i++) {
        run_ok(pc, stage, vars[i][0]);
        ck_assert_msg(!strcmp(out, vars[i][1]), "pkg-config %s: '%s', not '%s'", vars[i][0], out,
                      vars[i][1]);
    }
    char want[1024];
    run_ok(pc, stage, "--define-prefix --cflags");
    out[strcspn(out, " \n")] = '\0'; /* pkgconf ends it with a space */
    snprintf(want, sizeof want, "-I%s/usr/include", stage);
    ck_assert_str_eq(out, want);
    run_ok(pc, stage, "--define-prefix --variable=sdkdir");
    snprintf(want, sizeof want, "%s/usr/share/vpeft\n", stage);
    ck_assert_str_eq(out, want);

    /* The out-of-tree build. */
    char so[600];
    snprintf(so, sizeof so, "%s/vpeft-ia3.so", oot);
    run_ok("test -f %s && test -f %s/obj/ia3_scale.spv.h", so, oot);
    assert_exports_entry_only(so);
    assert_exports_entry_only("plugins/vpeft-ia3.so");

    /* Its own install and clean. */
    run_ok(STAGED_MAKE " -s install PLUGINDIR=%s/pd DESTDIR=%s/pdest", oot, stage, stage, tmp(),
           tmp());
    run_ok("test -x %s/pdest%s/pd/vpeft-ia3.so", tmp(), tmp());
    char copy[600];
    snprintf(copy, sizeof copy, "%s/clean", tmp());
    run_ok("rm -rf %s && cp -r %s %s", copy, oot, copy);
    run_ok(STAGED_MAKE " -s clean && LC_ALL=C ls", copy, stage, stage);
    ck_assert_str_eq(out, "Makefile\nREADME.md\nia3.c\nia3_scale.comp\ntest.json\n");
}
END_TEST

/* [needs the loader and plugin-test] The installed vpeft loads the
 * out-of-tree plugin and trains with it. */
START_TEST(test_installed_plugin_runs)
{
    staged();
    char line[2048];
    run_ok("%s/usr/bin/vpeft plugins --check %s/vpeft-ia3.so", stage, oot);
    snprintf(line, sizeof line, "%s/vpeft-ia3.so: ok: ia3 peft 0.1.0, ABI 1.2\n", oot);
    ck_assert_str_eq(out, line);

    run_ok("cd %s && VPEFT_PLUGIN_PATH=%s %s/usr/bin/vpeft plugin-test --config test.json",
           oot, oot, stage);
    const char *last = out + strlen(out);
    if (last > out && last[-1] == '\n')
        last--;
    while (last > out && last[-1] != '\n')
        last--;
    ck_assert_msg(!strncmp(last, "plugin-test: ok", 15), "no final 'plugin-test: ok' in:\n%s", out);

    /* The template's own `make check` runs the same two commands. */
    run_ok("cd %s && PKG_CONFIG_LIBDIR=%s/usr/lib/pkgconfig PKG_CONFIG_PATH= " MAKE
           " -n check PKG_CONFIG='pkg-config --define-prefix'", oot, stage);
    snprintf(line, sizeof line, "%s/usr/bin/vpeft plugins --check ./vpeft-ia3.so\n"
                                "VPEFT_PLUGIN_PATH=. %s/usr/bin/vpeft plugin-test --config ./test.json\n",
             stage, stage);
    assert_has(out, line);

    /* Its config is checked: an unknown field, and targets that match nothing. */
    run_ok("printf '{\"peft\": [{\"plugin\": \"ia3\", \"frobs\": 1}], \"steps\": 1}' >%s/bad.json",
           oot);
    ck_assert_int_eq(run("VPEFT_PLUGIN_PATH=%s %s/usr/bin/vpeft plugin-test --config %s/bad.json",
                         oot, stage, oot), 2); /* a config error: 2 (README, exit status) */
    assert_has(err, "frobs");
    run_ok("printf '{\"peft\": [{\"plugin\": \"ia3\", \"target_modules\": [\"nothing.here\"]}], "
           "\"steps\": 1}' >%s/none.json", oot);
    ck_assert_int_eq(run("VPEFT_PLUGIN_PATH=%s %s/usr/bin/vpeft plugin-test --config %s/none.json",
                         oot, stage, oot), 1);
    assert_has(err, "selects no site");
}
END_TEST

START_TEST(test_uninstall_sdk)
{
    staged();
    run_ok(MAKE " -s uninstall DESTDIR=%s PREFIX=/usr", stage);
    run_ok("cd %s && find . -type f", stage);
    ck_assert_str_eq(out, "");
    stage[0] = '\0';
}
END_TEST

int main(void)
{
    Suite *s = suite_create("sdk");
    TCase *tc = vt_tcase("sdk");
    tcase_add_test(tc, test_headers_compile);
    tcase_add_test(tc, test_headers_cxx);
    tcase_add_test(tc, test_fragment_errors);
    tcase_add_test(tc, test_fragment_enforces_abi);
    tcase_add_test(tc, test_in_tree);
    tcase_add_test(tc, test_template_descriptor);
    tcase_add_test(tc, test_install_sdk);
    tcase_add_test(tc, test_installed_plugin_runs);
    tcase_add_test(tc, test_uninstall_sdk);
    suite_add_tcase(s, tc);
    return vt_run(s);
}
