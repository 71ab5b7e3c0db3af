/*
 * Plugin loader suite: the fixture plugins (tests/plugins/fixture.c, built
 * into obj/tests/plugins/{a,b}/ as real .so files the way a third-party
 * plugin is) loaded by file and by name, each fault refused with its exact
 * one-line message and nothing left behind; the search path's order and
 * the not-found message; reference counting and one init per load, seen
 * through the plugins' debug log; the listing, `vpeft plugins` and
 * `--check` as a user runs them, an installed tree included; and that
 * every fixture exports its entry alone and never links the core. Needs no
 * Vulkan device.
 */
#define _GNU_SOURCE /* realpath */

#include <check.h>
#include <dlfcn.h>
#include <elf.h>
#include <fcntl.h>
#include <pthread.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

#include <vpeft/peft.h>

#include "config.h"
#include "harness.h"
#include "plugin/loader.h"
#include "util/error.h"
#include "util/log.h"

static char build[4096];   /* the build directory (libvpeft.so, vpeft) */
static char dir_a[4200];   /* obj/tests/plugins/a: every fixture */
static char dir_b[4200];   /* obj/tests/plugins/b: the second "dup" */
static char tmp[4096];     /* private directory for this run */
static bool made_build_plugins; /* we created <build>/plugins for the search path test */

/* Rotating buffers, so that one statement can take several; a string kept
 * across many calls is copied. */
static const char *pathf(const char *fmt, ...)
{
    static char p[64][4600];
    static int k;
    k = (k + 1) % 64;
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(p[k], sizeof p[k], fmt, ap);
    va_end(ap);
    return p[k];
}

static const char *fx(const char *name) { return pathf("%s/vpeft-%s.so", dir_a, name); }

static void set_path(const char *fmt, ...)
{
    char v[9000];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(v, sizeof v, fmt, ap);
    va_end(ap);
    ck_assert_int_eq(setenv("VPEFT_PLUGIN_PATH", v, 1), 0);
}

/* ---- stderr capture: the fixtures log "<name>: init" / "<name>: fini" ---- */

static int saved_stderr = -1;
static vp_log_level saved_level;
static char captured[1 << 14];

static void capture_start(void)
{
    fflush(stderr);
    saved_stderr = dup(2);
    int fd = open(pathf("%s/stderr.txt", tmp), O_CREAT | O_TRUNC | O_WRONLY, 0600);
    ck_assert_int_ge(fd, 0);
    dup2(fd, 2);
    close(fd);
    saved_level = vp_log_get_level();
    vp_log_set_level(VP_LOG_DEBUG);
}

/* Stop capturing; captured holds what was written meanwhile. */
static const char *capture_end(void)
{
    fflush(stderr);
    dup2(saved_stderr, 2);
    close(saved_stderr);
    vp_log_set_level(saved_level);
    FILE *f = fopen(pathf("%s/stderr.txt", tmp), "rb");
    ck_assert_ptr_nonnull(f);
    size_t n = fread(captured, 1, sizeof captured - 1, f);
    captured[n] = '\0';
    fclose(f);
    return captured;
}

/* ---- subprocesses (as tests/check_cli.c) ---------------------------------- */

/* The harness's subprocess runner (vt_sh), under this suite's short names. */
#define run vt_sh
#define out vt_out
#define err vt_err
#define assert_has vt_assert_has

static const char *bin(void) { return pathf("%s/vpeft", build); }


/* buf with every run of spaces made one, for rows whose padding depends on
 * the other rows (the build tree may hold real plugins). */
static const char *squeeze(const char *buf)
{
    static char s[1 << 16];
    size_t n = 0;
    for (const char *c = buf; *c && n + 1 < sizeof s; c++)
        if (!(*c == ' ' && n && s[n - 1] == ' '))
            s[n++] = *c;
    s[n] = '\0';
    return s;
}

/* ---- the search path, worked out independently of the loader ------------- */

/* Append d to list (':' separated) when it is a directory not yet listed. */
static void expect_dir(char *list, size_t n, const char *d)
{
    char *canon = realpath(d, NULL);
    struct stat sb;
    if (canon && !stat(canon, &sb) && S_ISDIR(sb.st_mode)) {
        size_t cl = strlen(canon);
        bool listed = false;
        for (const char *e = list; *e && !listed;) {
            size_t el = strcspn(e, ":");
            listed = el == cl && !strncmp(e, canon, cl);
            e += el + (e[el] == ':');
        }
        size_t len = strlen(list);
        if (!listed)
            ck_assert_int_lt(snprintf(list + len, n - len, "%s%s", len ? ":" : "", canon),
                             (int)(n - len));
    }
    free(canon);
}

/* The directories after VPEFT_PLUGIN_PATH's, as expected here. */
static const char *expected_tail(const char *head)
{
    static char list[9000];
    snprintf(list, sizeof list, "%s", head);
    expect_dir(list, sizeof list, pathf("%s/plugins", build));
    expect_dir(list, sizeof list, pathf("%s/vpeft/plugins", build));
    expect_dir(list, sizeof list, VP_CONFIG_PLUGIN_DIR);
    return list;
}

static const char *joined_search_path(void)
{
    static char list[9000];
    vp_plugin_dir *d;
    uint32_t n;
    ck_assert_int_eq(vp_plugin_search_path(&d, &n), VP_OK);
    list[0] = '\0';
    for (uint32_t i = 0; i < n; i++) {
        size_t len = strlen(list);
        snprintf(list + len, sizeof list - len, "%s%s", i ? ":" : "", d[i].path);
    }
    vp_plugin_dirs_free(d, n);
    return list;
}

START_TEST(test_search_path)
{
    const char *s1 = pathf("%s/sp1", tmp), *s2 = pathf("%s/sp2", tmp);
    const char *link = pathf("%s/sp1-link", tmp), *file = pathf("%s/sp-file", tmp);
    ck_assert_int_eq(mkdir(s1, 0700), 0);
    ck_assert_int_eq(mkdir(s2, 0700), 0);
    ck_assert_int_eq(symlink(s1, link), 0);
    FILE *f = fopen(file, "w");
    ck_assert_ptr_nonnull(f);
    fclose(f);

    /* Empty entries, a missing directory, a file, a repeat and a link to
     * an earlier entry all drop out; the order is VPEFT_PLUGIN_PATH's. */
    set_path(":%s::/nonexistent/vpeft:%s:%s:%s:%s:", s2, file, s1, s2, link);
    vp_plugin_dir *d;
    uint32_t n;
    ck_assert_int_eq(vp_plugin_search_path(&d, &n), VP_OK);
    ck_assert_uint_ge(n, 3);
    ck_assert_str_eq(d[0].path, s2);
    ck_assert_str_eq(d[0].origin, "VPEFT_PLUGIN_PATH");
    ck_assert_str_eq(d[1].path, s1);
    ck_assert_str_eq(d[1].origin, "VPEFT_PLUGIN_PATH");
    /* Then the build tree: this suite's libvpeft.so is at the top of it. */
    ck_assert_str_eq(d[2].path, pathf("%s/plugins", build));
    ck_assert_str_eq(d[2].origin, "build tree");
    for (uint32_t i = 3; i < n; i++)
        ck_assert_str_eq(d[i].origin, "configured prefix");
    vp_plugin_dirs_free(d, n);
    ck_assert_str_eq(joined_search_path(), expected_tail(pathf("%s:%s", s2, s1)));

    /* Unset, the build tree comes first. */
    unsetenv("VPEFT_PLUGIN_PATH");
    ck_assert_str_eq(joined_search_path(), expected_tail(""));
    vp_plugin_dirs_free(NULL, 0);
}
END_TEST

START_TEST(test_names_and_args)
{
    ck_assert_str_eq(vp_plugin_kind_str(VP_PLUGIN_BACKBONE), "backbone");
    ck_assert_str_eq(vp_plugin_kind_str(VP_PLUGIN_HEAD), "head");
    ck_assert_str_eq(vp_plugin_kind_str(VP_PLUGIN_PEFT), "peft");
    ck_assert_str_eq(vp_plugin_kind_str(0), "unknown");
    ck_assert_str_eq(vp_plugin_kind_str(4), "unknown");
    ck_assert(vp_plugin_name_valid("lora_deform2"));
    ck_assert(!vp_plugin_name_valid(""));
    ck_assert(!vp_plugin_name_valid(NULL));
    ck_assert(!vp_plugin_name_valid("LoRA"));
    ck_assert(!vp_plugin_name_valid("../x"));
    ck_assert(!vp_plugin_name_valid("a-b"));

    vp_plugin *p = (vp_plugin *)&p;
    vt_expect_err(vp_plugin_load("../evil", VP_PLUGIN_PEFT, &p), VP_ERR_INVALID,
                   "'../evil' is not a plugin name: names are [a-z0-9_]+, at most 64 characters");
    ck_assert_ptr_null(p);
    char longname[80];
    memset(longname, 'a', 65);
    longname[65] = '\0';
    ck_assert_int_eq(vp_plugin_load(longname, VP_PLUGIN_PEFT, &p), VP_ERR_INVALID);
    ck_assert_int_eq(vp_plugin_load("good", (vp_plugin_kind)7, &p), VP_ERR_INVALID);
    ck_assert_str_eq(vp_error_last(), "vp_plugin_load: kind 7 is not a plugin kind");
    ck_assert_int_eq(vp_plugin_load("good", VP_PLUGIN_PEFT, NULL), VP_ERR_INVALID);
    ck_assert_int_eq(vp_plugin_load_file(NULL, 0, &p), VP_ERR_INVALID);
    ck_assert_int_eq(vp_plugin_load_file(fx("good"), 4, &p), VP_ERR_INVALID);
    ck_assert_str_eq(vp_error_last(), "vp_plugin_load_file: kind 4 is not a plugin kind");

    vp_plugin_unload(NULL);
    ck_assert_ptr_null(vp_plugin_descriptor(NULL));
    ck_assert_ptr_null(vp_plugin_name(NULL));
    ck_assert_ptr_null(vp_plugin_path(NULL));
    ck_assert_ptr_null(vp_plugin_interface(NULL));
}
END_TEST

/* The good fixture, by file: its descriptor, its working interface, and
 * the same plugin again for the same file however it is spelt. */
START_TEST(test_good)
{
    vp_plugin *p = NULL, *q = NULL;
    capture_start();
    vp_status st = vp_plugin_load_file(fx("good"), VP_PLUGIN_PEFT, &p);
    ck_assert_str_eq(capture_end(), "vpeft: debug: good: init\n");
    ck_assert_msg(st == VP_OK, "%s", vp_error_last());
    const vp_plugin_desc *d = vp_plugin_descriptor(p);
    ck_assert_uint_eq(d->size, sizeof(vp_plugin_desc));
    ck_assert_uint_eq(d->abi_major, VP_ABI_MAJOR);
    ck_assert_uint_eq(d->abi_minor, VP_ABI_MINOR);
    ck_assert_str_eq(d->name, "good");
    ck_assert_uint_eq(d->kind, VP_PLUGIN_PEFT);
    ck_assert_str_eq(d->version, "1.0.0");
    ck_assert_str_eq(d->description, "a test fixture");
    ck_assert_str_eq(vp_plugin_name(p), "good");
    ck_assert_str_eq(vp_plugin_path(p), fx("good"));

    const vp_peft_iface *ia = vp_plugin_interface(p);
    ck_assert_ptr_nonnull(ia);
    ck_assert_uint_eq(ia->size, sizeof(vp_peft_iface));
    ck_assert_str_eq(ia->peft_type, "FIXTURE");
    void *self = NULL;
    ck_assert_int_eq(ia->create(NULL, &self), VP_OK);
    ck_assert_ptr_nonnull(self);
    vp_site site = {sizeof site, VP_SITE_LINEAR, "backbone.blocks.0.attn.qkv", "qkv", NULL, 0,
                    8, 24, NULL, NULL};
    vp_gt *y0 = (vp_gt *)&site, *y = y0; /* opaque: never dereferenced */
    bool attached = false;
    ck_assert_int_eq(ia->attach(self, NULL, &site, NULL, &y, &attached), VP_OK);
    ck_assert_ptr_eq(y, y0);
    ck_assert(!attached);
    ia->destroy(self);
    ia->destroy(NULL);

    /* Any kind accepted with 0; another spelling of the file, and a bare
     * file name (taken relative to the current directory, not searched). */
    capture_start();
    ck_assert_int_eq(vp_plugin_load_file(fx("good"), 0, &q), VP_OK);
    ck_assert_ptr_eq(q, p);
    ck_assert_int_eq(vp_plugin_load_file(pathf("%s/../a/./vpeft-good.so", dir_a), 0, &q), VP_OK);
    ck_assert_ptr_eq(q, p);
    char cwd[4096];
    ck_assert_ptr_nonnull(getcwd(cwd, sizeof cwd));
    ck_assert_int_eq(chdir(dir_a), 0);
    st = vp_plugin_load_file("vpeft-good.so", VP_PLUGIN_PEFT, &q);
    ck_assert_int_eq(chdir(cwd), 0);
    ck_assert_msg(st == VP_OK, "%s", vp_error_last());
    ck_assert_ptr_eq(q, p);
    vp_plugin_unload(q);
    vp_plugin_unload(q);
    vp_plugin_unload(q);
    ck_assert_str_eq(capture_end(), ""); /* neither init nor fini again */
    capture_start();
    vp_plugin_unload(p);
    ck_assert_str_eq(capture_end(), "vpeft: debug: good: fini\n");
}
END_TEST

/* By name: one init for every load of the name, one fini at the last unload. */
START_TEST(test_refcount)
{
    set_path("%s:%s", dir_a, dir_b);
    vp_plugin *p1, *p2, *p3;
    capture_start();
    vp_status st = vp_plugin_load("good", VP_PLUGIN_PEFT, &p1);
    ck_assert_str_eq(capture_end(), "vpeft: debug: good: init\n");
    ck_assert_msg(st == VP_OK, "%s", vp_error_last());
    ck_assert_str_eq(vp_plugin_path(p1), fx("good"));
    capture_start();
    ck_assert_int_eq(vp_plugin_load("good", VP_PLUGIN_PEFT, &p2), VP_OK);
    ck_assert_int_eq(vp_plugin_load_file(fx("good"), VP_PLUGIN_PEFT, &p3), VP_OK);
    ck_assert_ptr_eq(p2, p1);
    ck_assert_ptr_eq(p3, p1);
    /* Loaded already, but not as what this caller wants: no reference. */
    vp_plugin *h = (vp_plugin *)&h;
    char want[9000];
    snprintf(want, sizeof want, "good: cannot load %s: is a peft plugin, expected a head",
             fx("good"));
    vt_expect_err(vp_plugin_load("good", VP_PLUGIN_HEAD, &h), VP_ERR_INVALID, want);
    ck_assert_ptr_null(h);
    vt_expect_err(vp_plugin_load_file(fx("good"), VP_PLUGIN_HEAD, &h), VP_ERR_INVALID, want);
    vp_plugin_unload(p3);
    vp_plugin_unload(p2);
    ck_assert_str_eq(capture_end(), "");
    capture_start();
    vp_plugin_unload(p1);
    ck_assert_str_eq(capture_end(), "vpeft: debug: good: fini\n");

    /* Unloaded for good: the next load is a new one, with its own init. */
    capture_start();
    st = vp_plugin_load("good", VP_PLUGIN_PEFT, &p1);
    vp_plugin_unload(p1);
    ck_assert_str_eq(capture_end(), "vpeft: debug: good: init\nvpeft: debug: good: fini\n");
    ck_assert_int_eq(st, VP_OK);
}
END_TEST

static void *load_good(void *arg)
{
    vp_plugin **out = arg;
    return vp_plugin_load("good", VP_PLUGIN_PEFT, out) ? (void *)1 : NULL;
}

/* Threads racing to load one name get one plugin and one init. */
START_TEST(test_threads)
{
    set_path("%s", dir_a);
    enum { N = 8 };
    pthread_t th[N];
    vp_plugin *p[N];
    capture_start();
    for (int i = 0; i < N; i++)
        ck_assert_int_eq(pthread_create(&th[i], NULL, load_good, &p[i]), 0);
    int failed = 0;
    for (int i = 0; i < N; i++) {
        void *r;
        pthread_join(th[i], &r);
        failed += r != NULL;
    }
    for (int i = 1; i < N; i++)
        ck_assert_ptr_eq(p[i], p[0]);
    for (int i = 0; i < N; i++)
        vp_plugin_unload(p[i]);
    ck_assert_str_eq(capture_end(), "vpeft: debug: good: init\nvpeft: debug: good: fini\n");
    ck_assert_int_eq(failed, 0);
}
END_TEST

START_TEST(test_not_found)
{
    set_path("%s:%s", dir_b, dir_a);
    vp_plugin *p = (vp_plugin *)&p;
    char want[9500];
    snprintf(want, sizeof want, "nosuch: cannot find vpeft-nosuch.so in %s (set VPEFT_PLUGIN_PATH "
             "to add directories)", expected_tail(pathf("%s:%s", dir_b, dir_a)));
    vt_expect_err(vp_plugin_load("nosuch", VP_PLUGIN_PEFT, &p), VP_ERR_NOT_FOUND, want);
    ck_assert_ptr_null(p);
}
END_TEST

/* The message a file's load must fail with: "<label>: cannot load <path>: <why>". */
static void expect_refused(const char *path, uint32_t kind, vp_status st, const char *label,
                           const char *why)
{
    char want[9000];
    snprintf(want, sizeof want, "%s: cannot load %s: %s", label, path, why);
    vp_plugin *p = (vp_plugin *)&p;
    vp_status got = vp_plugin_load_file(path, kind, &p);
    ck_assert_msg(got == st, "%s: status %d, expected %d (%s)", path, got, st, vp_error_last());
    ck_assert_str_eq(vp_error_last(), want);
    ck_assert_ptr_null(p);
}

/* The same by name, where the name is the file's. */
static void expect_refused_by_name(const char *name, vp_plugin_kind kind, vp_status st,
                                   const char *why)
{
    char want[9000];
    snprintf(want, sizeof want, "%s: cannot load %s: %s", name, fx(name), why);
    vp_plugin *p = (vp_plugin *)&p;
    vp_status got = vp_plugin_load(name, kind, &p);
    ck_assert_msg(got == st, "%s: status %d, expected %d (%s)", name, got, st, vp_error_last());
    ck_assert_str_eq(vp_error_last(), want);
    ck_assert_ptr_null(p);
}

/* Every fault a file can have, each with its own reason and status, by
 * file and by name; and none leaves a plugin loaded behind it. */
START_TEST(test_faults)
{
    char why[512];
    set_path("%s", dir_a);

    snprintf(why, sizeof why, "built for ABI %d.%d, this vpeft has ABI %d.%d (majors differ)",
             VP_ABI_MAJOR + 1, VP_ABI_MINOR, VP_ABI_MAJOR, VP_ABI_MINOR);
    expect_refused(fx("wrongmajor"), VP_PLUGIN_PEFT, VP_ERR_ABI, "wrongmajor", why);
    expect_refused_by_name("wrongmajor", VP_PLUGIN_PEFT, VP_ERR_ABI, why);

    const char *noentry = "no vp_plugin_entry symbol (not a vpeft plugin?)";
    expect_refused(fx("noentry"), 0, VP_ERR_ABI, "noentry", noentry);
    expect_refused_by_name("noentry", VP_PLUGIN_PEFT, VP_ERR_ABI, noentry);

    snprintf(why, sizeof why, "descriptor is %zu bytes, ABI 1.0 needs at least %zu",
             offsetof(vp_plugin_desc, get_interface), offsetof(vp_plugin_desc, get_interface) +
             sizeof(void *));
    expect_refused(fx("smalldesc"), VP_PLUGIN_PEFT, VP_ERR_ABI, "smalldesc", why);
    expect_refused_by_name("smalldesc", VP_PLUGIN_PEFT, VP_ERR_ABI, why);

    const char *misnamed = "descriptor name 'other' does not match the file name "
                           "(vpeft-other.so expected)";
    expect_refused(fx("misnamed"), VP_PLUGIN_PEFT, VP_ERR_INVALID, "misnamed", misnamed);
    expect_refused_by_name("misnamed", VP_PLUGIN_PEFT, VP_ERR_INVALID, misnamed);

    const char *badname = "invalid name 'Bad Name' (names are [a-z0-9_]+)";
    expect_refused(fx("badname"), 0, VP_ERR_INVALID, "badname", badname);
    expect_refused_by_name("badname", VP_PLUGIN_PEFT, VP_ERR_INVALID, badname);

    char oddkind[80];
    snprintf(oddkind, sizeof oddkind, "kind 9 is unknown to this vpeft (ABI %d.%d)", VP_ABI_MAJOR,
             VP_ABI_MINOR);
    expect_refused(fx("oddkind"), 0, VP_ERR_ABI, "oddkind", oddkind);
    expect_refused_by_name("oddkind", VP_PLUGIN_HEAD, VP_ERR_ABI, oddkind);

    /* The kind is checked before init: no log line. */
    capture_start();
    expect_refused(fx("good"), VP_PLUGIN_HEAD, VP_ERR_INVALID, "good",
                   "is a peft plugin, expected a head");
    expect_refused_by_name("good", VP_PLUGIN_BACKBONE, VP_ERR_INVALID,
                           "is a peft plugin, expected a backbone");
    ck_assert_str_eq(capture_end(), "");

    /* A failed init: no fini, and the plugin's own message, every time. */
    for (int i = 0; i < 2; i++) {
        capture_start();
        expect_refused(fx("initfail"), VP_PLUGIN_PEFT, VP_ERR_CONFIG, "initfail",
                       "init failed: needs FX_MAGIC to be set");
        ck_assert_str_eq(capture_end(), "vpeft: debug: initfail: init\n");
    }
    capture_start();
    expect_refused_by_name("initfail", VP_PLUGIN_PEFT, VP_ERR_CONFIG,
                           "init failed: needs FX_MAGIC to be set");
    capture_end();

    /* Interfaces are asked for after init, so a bad one is undone by fini. */
    capture_start();
    expect_refused(fx("headless"), VP_PLUGIN_HEAD, VP_ERR_ABI, "headless",
                   "get_interface(\"vpeft.head/1\") gave NULL: a head plugin must provide it");
    ck_assert_str_eq(capture_end(), "vpeft: debug: headless: init\nvpeft: debug: headless: fini\n");
    snprintf(why, sizeof why, "its vpeft.peft/1 table is %zu bytes, ABI 1.0 needs at least %zu",
             offsetof(vp_peft_iface, attach), offsetof(vp_peft_iface, attach) + sizeof(void *));
    capture_start();
    expect_refused(fx("smalliface"), 0, VP_ERR_ABI, "smalliface", why);
    ck_assert_str_eq(capture_end(),
                     "vpeft: debug: smalliface: init\nvpeft: debug: smalliface: fini\n");

    /* Not a shared object, and no file at all: dlopen's own words, less
     * the file name it starts with. */
    const char *junk = pathf("%s/vpeft-junk.so", tmp);
    FILE *f = fopen(junk, "w");
    ck_assert_ptr_nonnull(f);
    fputs("not an ELF file\n", f);
    fclose(f);
    const char *missing = pathf("%s/nowhere/vpeft-gone.so", tmp);
    expect_refused(junk, 0, VP_ERR_FORMAT, "junk", "not an ELF shared object (no ELF magic number)");
    expect_refused(missing, 0, VP_ERR_NOT_FOUND, "gone", "cannot read: No such file or directory");

    /* Nothing stayed registered: the good fixture loads fresh as a peft. */
    vp_plugin *p;
    capture_start();
    ck_assert_int_eq(vp_plugin_load("good", VP_PLUGIN_PEFT, &p), VP_OK);
    vp_plugin_unload(p);
    ck_assert_str_eq(capture_end(), "vpeft: debug: good: init\nvpeft: debug: good: fini\n");
}
END_TEST

static const vp_plugin_found *find_found(const vp_plugin_found *f, uint32_t n, const char *path);

/* The first n bytes of the good fixture. */
static void elf_prefix(const char *to, long n)
{
    ck_assert_int_eq(run("head -c %ld %s > %s", n, fx("good"), to), 0);
}

/* Files that would crash or block dlopen are refused before it: a .so cut
 * short by a failed copy (its segments lie past the end: SIGBUS in the
 * dynamic loader), a FIFO (open blocks for a writer), an ELF file of
 * another class. Each is one line naming the file; the listing turns each
 * into a row and goes on. The alarm turns a hang into a failure. */
START_TEST(test_hostile_files)
{
    alarm(60);
    const char *d = pathf("%s/hostile", tmp);
    char dir[4600];
    snprintf(dir, sizeof dir, "%s", d);
    ck_assert_int_eq(run("rm -rf %s && mkdir -p %s", dir, dir), 0);
    struct stat sb;
    ck_assert_int_eq(stat(fx("good"), &sb), 0);
    long size = (long)sb.st_size;

    /* Cut at the page where the last segment the loader maps starts: the
     * loader would map pages past the end and touch them (SIGBUS). Past
     * that segment lie only sections dlopen never reads. */
    FILE *g = fopen(fx("good"), "rb");
    ck_assert_ptr_nonnull(g);
    Elf64_Ehdr e;
    ck_assert_uint_eq(fread(&e, sizeof e, 1, g), 1);
    Elf64_Phdr ph_all[64];
    ck_assert_uint_le(e.e_phnum, 64);
    ck_assert_int_eq(fseek(g, (long)e.e_phoff, SEEK_SET), 0);
    ck_assert_uint_eq(fread(ph_all, sizeof ph_all[0], e.e_phnum, g), e.e_phnum);
    fclose(g);
    uint64_t last_off = 0;
    for (unsigned i = 0; i < e.e_phnum; i++)
        if (ph_all[i].p_type == PT_LOAD && ph_all[i].p_offset > last_off)
            last_off = ph_all[i].p_offset;
    long cut = (long)(last_off & ~(uint64_t)4095);
    ck_assert_int_gt(cut, 0);
    ck_assert_int_lt(cut, size);
    unsigned last = 0;
    while (last < e.e_phnum && (ph_all[last].p_type == PT_NULL ||
                                ph_all[last].p_offset + ph_all[last].p_filesz <= (uint64_t)cut))
        last++;
    ck_assert_uint_lt(last, e.e_phnum);
    Elf64_Phdr lp = ph_all[last];
    char half[4700];
    snprintf(half, sizeof half, "%s/vpeft-half.so", dir);
    elf_prefix(half, cut);
    char want[9000];
    snprintf(want, sizeof want, "truncated: segment %u (file bytes %llu to %llu) ends past the "
             "file's %ld bytes", last, (unsigned long long)lp.p_offset,
             (unsigned long long)(lp.p_offset + lp.p_filesz), cut);
    expect_refused(half, 0, VP_ERR_FORMAT, "half", want);

    /* Cut inside the program headers, and inside the ELF header. */
    char ph[4700], eh[4700];
    snprintf(ph, sizeof ph, "%s/vpeft-ph.so", dir);
    snprintf(eh, sizeof eh, "%s/vpeft-eh.so", dir);
    elf_prefix(ph, 100);
    elf_prefix(eh, 40);
    FILE *f = fopen(fx("good"), "rb");
    ck_assert_ptr_nonnull(f);
    unsigned char hdr[64];
    ck_assert_uint_eq(fread(hdr, 1, sizeof hdr, f), sizeof hdr);
    fclose(f);
    unsigned long phoff = 0;
    for (int i = 7; i >= 0; i--)
        phoff = phoff << 8 | hdr[32 + i];
    unsigned phnum = hdr[56] | hdr[57] << 8, phent = hdr[54] | hdr[55] << 8;
    char why[512];
    snprintf(why, sizeof why, "truncated: program headers end at byte %lu, the file has 100",
             phoff + (unsigned long)phnum * phent);
    expect_refused(ph, 0, VP_ERR_FORMAT, "ph", why);
    expect_refused(eh, 0, VP_ERR_FORMAT, "eh", "truncated: 40 bytes, the ELF header needs 64");

    /* Another class: the same header with EI_CLASS 32-bit. */
    char c32[4700];
    snprintf(c32, sizeof c32, "%s/vpeft-c32.so", dir);
    ck_assert_int_eq(run("cp %s %s && printf '\\001' | dd of=%s bs=1 seek=4 conv=notrunc "
                         "2>/dev/null", fx("good"), c32, c32), 0);
    expect_refused(c32, 0, VP_ERR_FORMAT, "c32", "an ELF file of another class or byte order "
                   "(32-bit little-endian; this vpeft is 64-bit little-endian)");

    /* A FIFO: refused at once, by file; by name it is no candidate. */
    char fifo[4700];
    snprintf(fifo, sizeof fifo, "%s/vpeft-fifo.so", dir);
    ck_assert_int_eq(mkfifo(fifo, 0644), 0);
    expect_refused(fifo, 0, VP_ERR_INVALID, "fifo", "not a regular file");

    /* The listing: a row for each, the good copy still listed. */
    ck_assert_int_eq(run("cp %s %s/vpeft-good.so", fx("good"), dir), 0);
    set_path("%s", dir);
    vp_plugin_found *found;
    uint32_t n;
    ck_assert_int_eq(vp_plugin_scan(&found, &n), VP_OK);
    ck_assert_uint_ge(n, 6);
    ck_assert(find_found(found, n, pathf("%s/vpeft-good.so", dir))->ok);
    ck_assert_str_eq(find_found(found, n, fifo)->error, "not a regular file");
    ck_assert_str_eq(find_found(found, n, half)->error, want);
    vp_plugin_found_free(found, n);

    /* As a user runs it: no signal, every row there. */
    ck_assert_int_eq(run("VPEFT_PLUGIN_PATH=%s timeout 30 %s plugins", dir, bin()), 0);
    assert_has(squeeze(out), pathf("\nfifo - - - %s cannot load: not a regular file\n", fifo));
    assert_has(squeeze(out), pathf("\nph - - - %s cannot load: %s\n", ph, why));
    assert_has(squeeze(out), pathf("\nhalf - - - %s cannot load: %s\n", half, want));
    assert_has(squeeze(out), pathf("\ngood peft 1.0.0 %d.%d %s/vpeft-good.so", VP_ABI_MAJOR,
                                   VP_ABI_MINOR, dir));
    ck_assert_int_eq(run("timeout 30 %s plugins --check %s", bin(), ph), 1);
    ck_assert_str_eq(err, pathf("vpeft: ph: cannot load %s: %s\n", ph, why));
    ck_assert_int_eq(run("timeout 30 %s plugins --check %s", bin(), fifo), 1);
    ck_assert_str_eq(err, pathf("vpeft: fifo: cannot load %s: not a regular file\n", fifo));
    alarm(0);
}
END_TEST

/* A plugin built against a later minor of ABI 1 loads: its descriptor and
 * interface are bigger than ours, and only our members are read. */
START_TEST(test_newer_minor)
{
    vp_plugin *p;
    vp_status st = vp_plugin_load_file(fx("newminor"), VP_PLUGIN_PEFT, &p);
    ck_assert_msg(st == VP_OK, "%s", vp_error_last());
    const vp_plugin_desc *d = vp_plugin_descriptor(p);
    ck_assert_uint_eq(d->abi_major, VP_ABI_MAJOR);
    ck_assert_uint_eq(d->abi_minor, VP_ABI_MINOR + 1);
    ck_assert_uint_eq(d->size, sizeof(vp_plugin_desc) + sizeof(void *));
    ck_assert_str_eq(d->description, "a fixture built against a newer minor ABI");
    const vp_peft_iface *ia = vp_plugin_interface(p);
    ck_assert_uint_eq(ia->size, sizeof(vp_peft_iface) + sizeof(void *));
    void *self;
    ck_assert_int_eq(ia->create(NULL, &self), VP_OK);
    ia->destroy(self);
    vp_plugin_unload(p);
}
END_TEST

/* One name in two directories: the first on the path wins; another file
 * with a loaded name is refused, whichever way it comes. */
START_TEST(test_duplicate)
{
    char a[4600], b[4600];
    snprintf(a, sizeof a, "%s", fx("dup"));
    snprintf(b, sizeof b, "%s", pathf("%s/vpeft-dup.so", dir_b));
    vp_plugin *p, *q;
    set_path("%s:%s", dir_a, dir_b);
    ck_assert_int_eq(vp_plugin_load("dup", VP_PLUGIN_PEFT, &p), VP_OK);
    ck_assert_str_eq(vp_plugin_descriptor(p)->version, "1.0.0-a");
    ck_assert_str_eq(vp_plugin_path(p), a);
    char why[9000];
    snprintf(why, sizeof why, "a plugin named 'dup' is already loaded from %s", a);
    expect_refused(b, VP_PLUGIN_PEFT, VP_ERR_INVALID, "dup", why);
    vp_plugin_unload(p);

    /* Loaded from b first, the name means b's file until it is unloaded. */
    ck_assert_int_eq(vp_plugin_load_file(b, VP_PLUGIN_PEFT, &q), VP_OK);
    ck_assert_int_eq(vp_plugin_load("dup", VP_PLUGIN_PEFT, &p), VP_OK);
    ck_assert_ptr_eq(p, q);
    ck_assert_str_eq(vp_plugin_descriptor(p)->version, "1.0.0-b");
    snprintf(why, sizeof why, "a plugin named 'dup' is already loaded from %s", b);
    expect_refused(a, 0, VP_ERR_INVALID, "dup", why);
    vp_plugin_unload(p);
    vp_plugin_unload(q);

    set_path("%s:%s", dir_b, dir_a);
    ck_assert_int_eq(vp_plugin_load("dup", VP_PLUGIN_PEFT, &p), VP_OK);
    ck_assert_str_eq(vp_plugin_descriptor(p)->version, "1.0.0-b");
    vp_plugin_unload(p);

    /* A file not named vpeft-<name>.so loads (its name is not checked
     * against the file's) and takes the name; its messages use the file. */
    const char *copy = pathf("%s/custom-build.so", tmp), *wm = pathf("%s/wm.so", tmp);
    ck_assert_int_eq(run("cp %s %s && cp %s %s", fx("good"), copy, fx("wrongmajor"), wm), 0);
    ck_assert_int_eq(vp_plugin_load_file(copy, VP_PLUGIN_PEFT, &p), VP_OK);
    ck_assert_str_eq(vp_plugin_name(p), "good");
    snprintf(why, sizeof why, "a plugin named 'good' is already loaded from %s", copy);
    expect_refused(fx("good"), VP_PLUGIN_PEFT, VP_ERR_INVALID, "good", why);
    vp_plugin_unload(p);
    snprintf(why, sizeof why, "built for ABI %d.%d, this vpeft has ABI %d.%d (majors differ)",
             VP_ABI_MAJOR + 1, VP_ABI_MINOR, VP_ABI_MAJOR, VP_ABI_MINOR);
    expect_refused(wm, 0, VP_ERR_ABI, "wm.so", why);
}
END_TEST

static const vp_plugin_found *find_found(const vp_plugin_found *f, uint32_t n, const char *path)
{
    for (uint32_t i = 0; i < n; i++)
        if (!strcmp(f[i].path, path))
            return &f[i];
    ck_abort_msg("%s not listed", path);
    return NULL;
}

/* The fixtures of the two directories, in the order the listing gives. */
static const char *const fixtures_a[] = {"badname", "dup", "good", "headless", "initfail",
                                         "misnamed", "newminor", "noentry", "oddkind",
                                         "smalldesc", "smalliface", "wrongmajor"};
#define N_FIXTURES_A (sizeof fixtures_a / sizeof fixtures_a[0])

START_TEST(test_scan)
{
    set_path("%s:%s", dir_a, dir_b);
    vp_plugin_found *f;
    uint32_t n;
    ck_assert_int_eq(vp_plugin_scan(&f, &n), VP_OK);
    /* Directory by directory, by name within one. */
    ck_assert_uint_ge(n, N_FIXTURES_A + 1);
    for (uint32_t i = 0; i < N_FIXTURES_A; i++) {
        ck_assert_str_eq(f[i].path, fx(fixtures_a[i]));
        ck_assert_str_eq(f[i].name, fixtures_a[i]);
    }
    ck_assert_str_eq(f[N_FIXTURES_A].path, pathf("%s/vpeft-dup.so", dir_b));

    const vp_plugin_found *e = find_found(f, n, fx("good"));
    ck_assert(e->ok && e->has_abi && !e->shadowed_by && !e->error);
    ck_assert_uint_eq(e->kind, VP_PLUGIN_PEFT);
    ck_assert_uint_eq(e->abi_major, VP_ABI_MAJOR);
    ck_assert_uint_eq(e->abi_minor, VP_ABI_MINOR);
    ck_assert_str_eq(e->version, "1.0.0");
    ck_assert_str_eq(e->description, "a test fixture");

    e = find_found(f, n, fx("wrongmajor"));
    ck_assert(!e->ok && e->has_abi);
    ck_assert_uint_eq(e->abi_major, VP_ABI_MAJOR + 1);
    ck_assert_ptr_null(e->version);
    char why[256];
    snprintf(why, sizeof why, "built for ABI %d.%d, this vpeft has ABI %d.%d (majors differ)",
             VP_ABI_MAJOR + 1, VP_ABI_MINOR, VP_ABI_MAJOR, VP_ABI_MINOR);
    ck_assert_str_eq(e->error, why);

    e = find_found(f, n, fx("noentry"));
    ck_assert(!e->ok && !e->has_abi);
    ck_assert_str_eq(e->error, "no vp_plugin_entry symbol (not a vpeft plugin?)");

    /* Listing runs no init: these fail only under --check or a load. */
    ck_assert(find_found(f, n, fx("initfail"))->ok);
    ck_assert(find_found(f, n, fx("headless"))->ok);

    e = find_found(f, n, pathf("%s/vpeft-dup.so", dir_b));
    ck_assert(!e->ok && !e->error);
    ck_assert_str_eq(e->shadowed_by, fx("dup"));
    ck_assert_str_eq(find_found(f, n, fx("dup"))->version, "1.0.0-a");
    vp_plugin_found_free(f, n);
    vp_plugin_found_free(NULL, 0);
}
END_TEST

/* Each fixture exports its entry and nothing else, and leaves no vp_*
 * symbol undefined: it never links the core. */
START_TEST(test_exports)
{
    char files[N_FIXTURES_A + 1][4600];
    for (uint32_t i = 0; i < N_FIXTURES_A; i++)
        snprintf(files[i], sizeof files[i], "%s", fx(fixtures_a[i]));
    snprintf(files[N_FIXTURES_A], sizeof files[0], "%s", pathf("%s/vpeft-dup.so", dir_b));
    for (uint32_t i = 0; i <= N_FIXTURES_A; i++) {
        const char *entry = strstr(files[i], "noentry") ? "vpeft_plugin_entry" : "vp_plugin_entry";
        ck_assert_int_eq(run("nm -D --defined-only %s | awk '{print $NF}'", files[i]), 0);
        char want[64];
        snprintf(want, sizeof want, "%s\n", entry);
        ck_assert_msg(!strcmp(out, want), "%s exports:\n%s", files[i], out);
        ck_assert_int_eq(run("nm -D --undefined-only %s | awk '{print $NF}' | grep '^vp_'",
                             files[i]), 1);
        ck_assert_int_eq(run("readelf -d %s | grep NEEDED | grep vpeft", files[i]), 1);
    }
}
END_TEST

START_TEST(test_cli_list)
{
    char b[4600];
    snprintf(b, sizeof b, "%s", pathf("%s/vpeft-dup.so", dir_b));
    ck_assert_int_eq(run("VPEFT_PLUGIN_PATH=%s:%s %s plugins", dir_a, dir_b, bin()), 0);
    ck_assert_str_eq(err, "");
    /* The search path first, each directory with where it comes from. */
    char want[9000];
    snprintf(want, sizeof want, "plugin search path, in order:\n %s (VPEFT_PLUGIN_PATH)\n %s "
             "(VPEFT_PLUGIN_PATH)\n", dir_a, dir_b);
    ck_assert_msg(!strncmp(squeeze(out), want, strlen(want)), "got:\n%s", out);
    const char *rows[] = {
        "\nNAME KIND VERSION ABI FILE DESCRIPTION\n",
        pathf("\nbadname - - %d.%d %s cannot load: invalid name 'Bad Name' (names are [a-z0-9_]+)\n",
              VP_ABI_MAJOR, VP_ABI_MINOR, fx("badname")),
        pathf("\ngood peft 1.0.0 %d.%d %s a test fixture\n", VP_ABI_MAJOR, VP_ABI_MINOR, fx("good")),
        pathf("\nheadless head 1.0.0 %d.%d %s a test fixture\n", VP_ABI_MAJOR, VP_ABI_MINOR,
              fx("headless")),
        pathf("\nnewminor peft 1.0.0 %d.%d %s a fixture built against a newer minor ABI\n",
              VP_ABI_MAJOR, VP_ABI_MINOR + 1, fx("newminor")),
        pathf("\nnoentry - - - %s cannot load: no vp_plugin_entry symbol (not a vpeft plugin?)\n",
              fx("noentry")),
        pathf("\nwrongmajor - - %d.%d %s cannot load: built for ABI %d.%d, this vpeft has ABI "
              "%d.%d (majors differ)\n", VP_ABI_MAJOR + 1, VP_ABI_MINOR, fx("wrongmajor"),
              VP_ABI_MAJOR + 1, VP_ABI_MINOR, VP_ABI_MAJOR, VP_ABI_MINOR),
        pathf("\ndup - - - %s shadowed by %s\n", b, fx("dup")),
    };
    for (size_t i = 0; i < sizeof rows / sizeof rows[0]; i++)
        assert_has(squeeze(out), rows[i]);
    /* Columns line up: every row's file starts under FILE. */
    const char *hdr = strstr(out, "\nNAME ");
    ck_assert_ptr_nonnull(hdr);
    long col = strstr(hdr, "FILE") - (hdr + 1);
    for (const char *line = strchr(hdr + 1, '\n'); line && line[1]; line = strchr(line + 1, '\n'))
        ck_assert_msg(line[1 + col] == '/' && line[col] == ' ', "misaligned row:%.*s", 200, line);

    /* --strict: the same listing, and a failure when a file cannot load. */
    ck_assert_int_eq(run("VPEFT_PLUGIN_PATH=%s:%s %s plugins --strict", dir_a, dir_b, bin()), 1);
    assert_has(out, "NAME");
    ck_assert_str_eq(err, "vpeft plugins: 6 files on the search path cannot be loaded\n");
    ck_assert_int_eq(run("VPEFT_PLUGIN_PATH=%s %s plugins --strict", dir_b, bin()), 0);
    assert_has(squeeze(out), pathf("\ndup peft 1.0.0-b %d.%d %s a test fixture\n", VP_ABI_MAJOR, VP_ABI_MINOR, b));
}
END_TEST

START_TEST(test_cli_check)
{
    ck_assert_int_eq(run("%s plugins --check %s", bin(), fx("good")), 0);
    ck_assert_str_eq(out, pathf("%s: ok: good peft 1.0.0, ABI %d.%d\n", fx("good"), VP_ABI_MAJOR,
                                VP_ABI_MINOR));
    ck_assert_str_eq(err, "");
    /* --check runs init and fini. */
    ck_assert_int_eq(run("VPEFT_LOG=debug %s plugins --check %s", bin(), fx("good")), 0);
    ck_assert_str_eq(err, "vpeft: debug: good: init\nvpeft: debug: good: fini\n");
    ck_assert_int_eq(run("cd %s && %s plugins --check vpeft-newminor.so", dir_a, bin()), 0);
    ck_assert_str_eq(out, pathf("vpeft-newminor.so: ok: newminor peft 1.0.0, ABI %d.%d\n",
                                VP_ABI_MAJOR, VP_ABI_MINOR + 1));

    ck_assert_int_eq(run("%s plugins --check %s", bin(), fx("wrongmajor")), 1);
    ck_assert_str_eq(out, "");
    ck_assert_str_eq(err, pathf("vpeft: wrongmajor: cannot load %s: built for ABI %d.%d, this "
                                "vpeft has ABI %d.%d (majors differ)\n", fx("wrongmajor"),
                                VP_ABI_MAJOR + 1, VP_ABI_MINOR, VP_ABI_MAJOR, VP_ABI_MINOR));
    /* What listing cannot see, --check does. */
    ck_assert_int_eq(run("%s plugins --check %s", bin(), fx("initfail")), 1);
    ck_assert_str_eq(err, pathf("vpeft: initfail: cannot load %s: init failed: needs FX_MAGIC to "
                                "be set\n", fx("initfail")));
    ck_assert_int_eq(run("%s plugins --check %s", bin(), fx("headless")), 1);
    ck_assert_str_eq(err, pathf("vpeft: headless: cannot load %s: get_interface(\"vpeft.head/1\") "
                                "gave NULL: a head plugin must provide it\n", fx("headless")));
    /* Several files: each reported, failure if any fails. */
    ck_assert_int_eq(run("%s plugins --check %s %s", bin(), fx("noentry"), fx("good")), 1);
    assert_has(out, pathf("%s: ok: good peft", fx("good")));
    ck_assert_str_eq(err, pathf("vpeft: noentry: cannot load %s: no vp_plugin_entry symbol (not "
                                "a vpeft plugin?)\n", fx("noentry")));

    /* Usage errors. */
    ck_assert_int_eq(run("%s plugins --check", bin()), 2);
    ck_assert_str_eq(err, "vpeft plugins: --check needs at least one FILE (see vpeft plugins "
                          "--help)\n");
    ck_assert_int_eq(run("%s plugins --bogus", bin()), 2);
    ck_assert_str_eq(err, "vpeft plugins: unknown option '--bogus' (see vpeft plugins --help)\n");
    ck_assert_int_eq(run("%s plugins good", bin()), 2);
    ck_assert_str_eq(err, "vpeft plugins: unexpected argument 'good' (files go after --check; see "
                          "vpeft plugins --help)\n");
    ck_assert_int_eq(run("%s plugins --strict --check %s", bin(), fx("good")), 2);
    ck_assert_str_eq(err, "vpeft plugins: --strict is for the listing, not --check (see vpeft "
                          "plugins --help)\n");
    ck_assert_str_eq(out, "");

    ck_assert_int_eq(run("%s plugins --help", bin()), 0);
    assert_has(out, "usage: vpeft plugins [--strict]\n       vpeft plugins --check FILE...\n");
    assert_has(out, "VPEFT_PLUGIN_PATH");
    assert_has(out, VP_CONFIG_PLUGIN_DIR);
    ck_assert_int_eq(run("%s --help", bin()), 0);
    assert_has(out, "  plugins      list the plugins on the search path");
    assert_has(out, "VPEFT_PLUGIN_PATH");
}
END_TEST

/* Run in the build directory by run.sh: make's own view (as check_cli). */
#define MAKE "env -u MAKEFLAGS -u MAKELEVEL -u MFLAGS make --no-print-directory"

/* An installed tree finds its plugins next to its library, wherever it was
 * installed to (DESTDIR here): the configured prefix plays no part. */
START_TEST(test_installed_tree)
{
    char dest[4200], pdir[4600];
    snprintf(dest, sizeof dest, "%s/dest", tmp);
    ck_assert_int_eq(run("cd %s && " MAKE " -s install DESTDIR=%s PREFIX=/opt/vpeft", build, dest),
                     0);
    snprintf(pdir, sizeof pdir, "%s/opt/vpeft/lib/vpeft/plugins", dest);
    ck_assert_int_eq(run("cp %s %s/", fx("good"), pdir), 0);
    ck_assert_int_eq(run("env -u VPEFT_PLUGIN_PATH %s/opt/vpeft/bin/vpeft plugins", dest), 0);
    assert_has(squeeze(out), pathf("in order:\n %s (installed tree)\n", pdir));
    assert_has(squeeze(out), pathf("\ngood peft 1.0.0 %d.%d %s/vpeft-good.so a test fixture\n",
                                   VP_ABI_MAJOR, VP_ABI_MINOR, pdir));
    ck_assert_ptr_null(strstr(out, build)); /* nothing from the build tree */
    ck_assert_int_eq(run("rm -rf %s", dest), 0);
}
END_TEST

int main(void)
{
    char exe[4096];
    ssize_t n = readlink("/proc/self/exe", exe, sizeof exe - 1);
    if (n <= 0) {
        perror("readlink /proc/self/exe");
        return 1;
    }
    exe[n] = '\0';
    /* This suite is <build>/obj/tests/check_plugin. */
    for (int up = 0; up < 3; up++)
        *strrchr(exe, '/') = '\0';
    snprintf(build, sizeof build, "%s", exe);
    snprintf(dir_a, sizeof dir_a, "%s/obj/tests/plugins/a", build);
    snprintf(dir_b, sizeof dir_b, "%s/obj/tests/plugins/b", build);
    const char *t = getenv("TMPDIR");
    char tdir[4096];
    snprintf(tdir, sizeof tdir, "%s/vpeft-plugin-XXXXXX", t && *t ? t : "/tmp");
    char *real = mkdtemp(tdir) ? realpath(tdir, NULL) : NULL;
    if (!real) {
        perror("mkdtemp");
        return 1;
    }
    snprintf(tmp, sizeof tmp, "%s", real);
    free(real);
    /* The build tree's plugin directory holds the real plugins once they
     * are built; without it the search path test would have nothing to
     * see there, so make it for the run. */
    made_build_plugins = mkdir(pathf("%s/plugins", build), 0755) == 0;

    Suite *s = suite_create("plugin");
    TCase *tc = tcase_create("loader");
    tcase_set_timeout(tc, 300);
    tcase_add_test(tc, test_search_path);
    tcase_add_test(tc, test_names_and_args);
    tcase_add_test(tc, test_good);
    tcase_add_test(tc, test_refcount);
    tcase_add_test(tc, test_threads);
    tcase_add_test(tc, test_not_found);
    tcase_add_test(tc, test_faults);
    tcase_add_test(tc, test_newer_minor);
    tcase_add_test(tc, test_duplicate);
    tcase_add_test(tc, test_scan);
    tcase_add_test(tc, test_hostile_files);
    tcase_add_test(tc, test_exports);
    tcase_add_test(tc, test_cli_list);
    tcase_add_test(tc, test_cli_check);
    tcase_add_test(tc, test_installed_tree);
    suite_add_tcase(s, tc);
    SRunner *sr = srunner_create(s);
    srunner_set_fork_status(sr, CK_NOFORK);
    srunner_run_all(sr, CK_NORMAL);
    int failed = srunner_ntests_failed(sr);
    srunner_free(sr);
    if (made_build_plugins)
        rmdir(pathf("%s/plugins", build));
    char rm[4200];
    snprintf(rm, sizeof rm, "rm -rf '%s'", tmp);
    if (system(rm) != 0)
        fprintf(stderr, "could not remove %s\n", tmp);
    printf("skipped: 0\n");
    return failed ? 1 : 0;
}
