/*
 * CLI and build suite: runs the real `vpeft` binary and the real configure
 * script and checks exit status and messages, including the no-device,
 * bad-VPEFT_DEVICE and missing-dependency paths.
 */
#include "harness.h"

#include <stdarg.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>
#include <unistd.h>

/* The harness's subprocess runner (vt_sh), under this suite's short names. */
#define run vt_sh
#define out vt_out
#define err vt_err
#define assert_has vt_assert_has

static const char *bin(void)
{
    const char *b = getenv("VPEFT_BIN");
    ck_assert_msg(b != NULL, "VPEFT_BIN is not set (run through make check)");
    return b;
}

static const char *srcdir(void)
{
    const char *s = getenv("VPEFT_SRCDIR");
    ck_assert_msg(s != NULL, "VPEFT_SRCDIR is not set (run through make check)");
    return s;
}


START_TEST(test_help_version)
{
    ck_assert_int_eq(run("%s --help", bin()), 0);
    assert_has(out, "usage: vpeft <command>");
    assert_has(out, "devices");
    assert_has(out, "VPEFT_DEVICE");
    ck_assert_int_eq(run("%s --version", bin()), 0);
    assert_has(out, "vpeft 0.1.0 (plugin ABI 1.2)");
    ck_assert_int_eq(run("%s", bin()), 2);
    assert_has(err, "usage: vpeft");
    ck_assert_int_eq(run("%s frobnicate", bin()), 2);
    ck_assert_str_eq(err, "vpeft: unknown command 'frobnicate'; commands: demo init train eval predict devices plugins info embed forward merge make-shapes plugin-test (see vpeft --help)\n");
    ck_assert_int_eq(run("%s devices --help", bin()), 0);
    assert_has(out, "usage: vpeft devices");
    ck_assert_int_eq(run("%s devices --bogus", bin()), 2);
    ck_assert_str_eq(err, "vpeft devices: unknown option '--bogus' (see vpeft devices --help)\n");
}
END_TEST

START_TEST(test_devices)
{
    ck_assert_int_eq(run("unset VPEFT_DEVICE; %s devices", bin()), 0);
    vp_instance *inst = vt_instance();
    uint32_t def = vp_instance_default_device(inst);
    char line[512];
    snprintf(line, sizeof line, "* %u: %s  [default]\n", def, vp_instance_device_info(inst, def)->name);
    assert_has(out, line);
    for (const char *k = "type|vendor|driver|vulkan|memory heap 0|subgroup size|shared memory|fp16|"
                         "float atomics|coop. matrix|push descriptors|timestamps";
         *k;) {
        const char *bar = strchr(k, '|');
        size_t n = bar ? (size_t)(bar - k) : strlen(k);
        char key[64];
        snprintf(key, sizeof key, "    %.*s ", (int)n, k);
        assert_has(out, key);
        k += n + (bar ? 1 : 0);
    }
    ck_assert_str_eq(err, "");

    ck_assert_int_eq(run("%s devices --brief", bin()), 0);
    snprintf(line, sizeof line, "%u\t%s\t%s\tusable\tdefault\n", def,
             vp_instance_device_info(inst, def)->name,
             vp_device_type_str(vp_instance_device_info(inst, def)->type));
    assert_has(out, line);
    ck_assert_int_eq(run("%s devices --brief | wc -l | grep -qx ' *%u'", bin(),
                         vp_instance_device_count(inst)), 0);

    ck_assert_int_eq(run("VPEFT_DEVICE=%u %s devices", def, bin()), 0);
    assert_has(out, "[default]  [VPEFT_DEVICE]");

    ck_assert_int_eq(run("VPEFT_DEVICE=nothing-like-this %s devices", bin()), 1);
    assert_has(err, "vpeft: VPEFT_DEVICE=nothing-like-this matches no Vulkan device; devices: 0: ");
    ck_assert_ptr_eq(strchr(err, '\n'), err + strlen(err) - 1); /* one line */
}
END_TEST

/* No driver at all: the loader finds no ICD. */
START_TEST(test_no_device)
{
    ck_assert_int_eq(run("VK_DRIVER_FILES=/nonexistent/icd.json VK_ICD_FILENAMES=/nonexistent/icd.json "
                         "%s devices", bin()), 1);
    assert_has(err, "vpeft: no Vulkan device found");
    assert_has(err, "apt-get install mesa-vulkan-drivers");
    ck_assert_str_eq(out, "");
}
END_TEST

START_TEST(test_configure)
{
    const char *tmp = getenv("TMPDIR") ? getenv("TMPDIR") : "/tmp";
    char dir[512];
    snprintf(dir, sizeof dir, "%s/cfg-%d", tmp, (int)getpid());
    ck_assert_int_eq(run("mkdir -p %s", dir), 0);

    ck_assert_int_eq(run("cd %s && %s/configure --help", dir, srcdir()), 0);
    assert_has(out, "--enable-sanitize");
    assert_has(out, "--prefix=DIR");

    ck_assert_int_eq(run("cd %s && %s/configure --enable-frobs", dir, srcdir()), 1);
    ck_assert_str_eq(err, "configure: error: unknown option '--enable-frobs' (see ./configure --help)\n");
    ck_assert_int_eq(run("cd %s && %s/configure --prefix=relative", dir, srcdir()), 1);
    assert_has(err, "--prefix must be an absolute path");

    /* pkg-config that knows no packages: the Vulkan probe fails first and
     * names the packages to install; config.log holds the failed probe. */
    ck_assert_int_eq(run("cd %s && PKG_CONFIG_LIBDIR=/nonexistent PKG_CONFIG_PATH= %s/configure",
                         dir, srcdir()), 1);
    assert_has(err, "configure: error: the Vulkan loader and headers (pkg-config vulkan) not found: "
                    "install libvulkan-dev (Debian/Ubuntu)");
    ck_assert_int_eq(run("grep -c '### failed: pkg-config --exists vulkan' %s/config.log", dir), 0);

    ck_assert_int_eq(run("cd %s && %s/configure GLSLANG=/nonexistent/glslangValidator", dir,
                         srcdir()), 1);
    assert_has(err, "glslangValidator not found: install glslang-tools (Debian/Ubuntu)");

    ck_assert_int_eq(run("cd %s && %s/configure CC=/nonexistent/cc", dir, srcdir()), 1);
    assert_has(err, "cannot compile C11");

    /* A good configure writes the four files, marked as generated. */
    ck_assert_int_eq(run("cd %s && %s/configure --prefix=/opt/vp --enable-debug", dir, srcdir()), 0);
    ck_assert_int_eq(run("grep -q '^prefix = /opt/vp$' %s/config.mk && grep -q 'generated by configure' "
                         "%s/config.h && grep -q '^include config.mk$' %s/Makefile && "
                         "grep -q 'enable-debug' %s/config.status", dir, dir, dir, dir), 0);
    run("rm -rf %s", dir);
}
END_TEST

/* Run in the build directory by run.sh: make's own view of dependencies. */
#define MAKE "env -u MAKEFLAGS -u MAKELEVEL -u MFLAGS make --no-print-directory"

/* A changed include rebuilds every shader that includes it; a changed
 * shader only itself; nothing changed, nothing to do. */
START_TEST(test_shader_deps)
{
    ck_assert_int_eq(run(MAKE " -q libvpeft.so"), 0);
    ck_assert_int_eq(run(MAKE " -n -W %s/shaders/common.glsl libvpeft.so", srcdir()), 0);
    assert_has(out, "--vn vp_spv_matmul ");
    assert_has(out, "--vn vp_spv_fill ");
    assert_has(out, "--vn vp_spv_binary ");
    ck_assert_int_eq(run(MAKE " -n -W %s/shaders/fill.comp libvpeft.so", srcdir()), 0);
    assert_has(out, "--vn vp_spv_fill ");
    ck_assert_ptr_null(strstr(out, "--vn vp_spv_matmul "));
}
END_TEST

/* make install honours DESTDIR and PREFIX; the installed command runs. */
START_TEST(test_install)
{
    const char *tmp = getenv("TMPDIR") ? getenv("TMPDIR") : "/tmp";
    char dest[512];
    snprintf(dest, sizeof dest, "%s/dest-%d", tmp, (int)getpid());
    ck_assert_int_eq(run(MAKE " -s install DESTDIR=%s PREFIX=/opt/vpeft", dest), 0);
    ck_assert_int_eq(run("test -x %s/opt/vpeft/bin/vpeft && test -f %s/opt/vpeft/lib/libvpeft.so && "
                         "test -f %s/opt/vpeft/include/vpeft/status.h && "
                         "test -d %s/opt/vpeft/lib/vpeft/plugins", dest, dest, dest, dest), 0);
    /* the demo's base model, where vpeft demo looks once installed */
    ck_assert_int_eq(run("cmp %s/core/cli/demo-base/model.safetensors "
                         "%s/opt/vpeft/share/vpeft/demo-base/model.safetensors && "
                         "test -f %s/opt/vpeft/share/vpeft/demo-base/provenance.json",
                         srcdir(), dest, dest), 0);
    /* Found through $ORIGIN/../lib, not the build tree. */
    ck_assert_int_eq(run("env -u LD_LIBRARY_PATH %s/opt/vpeft/bin/vpeft --version", dest), 0);
    assert_has(out, "vpeft 0.1.0");
    ck_assert_int_eq(run("ldd %s/opt/vpeft/bin/vpeft | grep libvpeft", dest), 0);
    assert_has(out, dest);
    ck_assert_int_eq(run(MAKE " -s uninstall DESTDIR=%s PREFIX=/opt/vpeft", dest), 0);
    ck_assert_int_eq(run("test -e %s/opt/vpeft/bin/vpeft", dest), 1);
    ck_assert_int_eq(run("test -e %s/opt/vpeft/share/vpeft/demo-base", dest), 1);
    run("rm -rf %s", dest);
}
END_TEST

/* A scratch directory with the demo's small model config (ok.json), a file
 * that is not JSON (bad.json) and one that is not safetensors. */
static void scratch(char *dir, size_t n)
{
    const char *tmp = getenv("TMPDIR") ? getenv("TMPDIR") : "/tmp";
    snprintf(dir, n, "%s/cli-keys-%d", tmp, (int)getpid());
    ck_assert_int_eq(run("rm -rf %s && mkdir -p %s && cp %s/docs/configs/demo-model.json "
                         "%s/ok.json && printf '{\"images\": [' > %s/bad.json && "
                         "printf 'not a safetensors file' > %s/notst.safetensors", dir, dir,
                         srcdir(), dir, dir, dir), 0);
}

/* Writes DIR/NAME.json: ok.json's model with EXTRA spliced in at the end of
 * "model" (MODEL_EXTRA) and of the top level (TOP_EXTRA). */
static void variant(const char *dir, const char *name, const char *model_extra,
                    const char *top_extra)
{
    ck_assert_int_eq(run("cd %s && python3 -c 'import json,sys; c=json.load(open(\"ok.json\")); "
                         "c[\"model\"].update(json.loads(sys.argv[1])); "
                         "c.update(json.loads(sys.argv[2])); json.dump(c, open(\"%s.json\", \"w\"))' "
                         "'%s' '%s'", dir, name, model_extra, top_extra), 0);
}

/* Unknown keys at the top level and under model fail with a did-you-mean,
 * through the file and through --set, exit 2 (issue 15). */
START_TEST(test_config_keys)
{
    char dir[512];
    scratch(dir, sizeof dir);
    ck_assert_int_eq(run("cd %s && %s info ok.json", dir, bin()), 0);
    variant(dir, "pfet", "{}", "{\"pfet\": []}");
    ck_assert_int_eq(run("cd %s && %s info pfet.json", dir, bin()), 2);
    ck_assert_str_eq(err, "vpeft: pfet.json: pfet: unknown field, did you mean 'peft'?\n");
    variant(dir, "wieghts", "{\"wieghts\": \"w.safetensors\"}", "{}");
    ck_assert_int_eq(run("cd %s && %s info wieghts.json", dir, bin()), 2);
    ck_assert_str_eq(err, "vpeft: wieghts.json: model.wieghts: unknown field, did you mean "
                          "'weights'?\n");
    variant(dir, "image", "{\"image\": 64}", "{}");
    ck_assert_int_eq(run("cd %s && %s info image.json", dir, bin()), 2);
    ck_assert_str_eq(err, "vpeft: image.json: model.image: an option of model.hf, which is not "
                          "set (without it, the backbone's or head's own fields say this)\n");
    variant(dir, "trian", "{}", "{\"trian\": {}}");
    ck_assert_int_eq(run("cd %s && %s train trian.json", dir, bin()), 2);
    ck_assert_str_eq(err, "vpeft: trian.json: trian: unknown field, did you mean 'train'?\n");
    /* --set of a key nothing reads: caught by the same checks */
    ck_assert_int_eq(run("cd %s && %s train ok.json --set nosuch.key=1", dir, bin()), 2);
    ck_assert_str_eq(err, "vpeft: ok.json: nosuch: unknown field (expected one of: model, peft, "
                          "train)\n");
    ck_assert_int_eq(run("cd %s && %s eval --config ok.json --set model.wieghts=1", dir, bin()),
                     2);
    ck_assert_str_eq(err, "vpeft: ok.json: model.wieghts: unknown field, did you mean "
                          "'weights'?\n");
    run("rm -rf %s", dir);
}
END_TEST

/* vpeft info opens model.weights and checks it as training would. */
START_TEST(test_info_weights)
{
    char dir[512];
    scratch(dir, sizeof dir);
    variant(dir, "notst", "{\"weights\": \"notst.safetensors\"}", "{}");
    ck_assert_int_eq(run("cd %s && %s info notst.json", dir, bin()), 2);
    assert_has(err, "vpeft: notst.json: model.weights: notst.safetensors: header length ");
    ck_assert_ptr_eq(strchr(err, '\n'), err + strlen(err) - 1);
    /* a valid file that holds none of the model's parameters */
    ck_assert_int_eq(run("cd %s && python3 -c 'import struct; h=b\"{\\\"x\\\":{\\\"dtype\\\":"
                         "\\\"F32\\\",\\\"shape\\\":[1],\\\"data_offsets\\\":[0,4]}}\"; "
                         "open(\"other.safetensors\", \"wb\").write(struct.pack(\"<Q\", len(h)) "
                         "+ h + bytes(4))'", dir), 0);
    variant(dir, "other", "{\"weights\": \"other.safetensors\"}", "{}");
    ck_assert_int_eq(run("cd %s && %s info other.json", dir, bin()), 2);
    assert_has(err, "model.weights: ");
    assert_has(err, "other.safetensors holds none of the model's parameters\n");
    run("rm -rf %s", dir);
}
END_TEST

/* A malformed input file is exit status 2 for every command that reads one. */
START_TEST(test_bad_input_exit)
{
    char dir[512];
    scratch(dir, sizeof dir);
    const char *cmds[] = {
        "info bad.json",
        "train bad.json",
        "eval --gt bad.json --results bad.json",
        "eval --config bad.json",
        "predict --config bad.json --out o x.png",
        "embed --config bad.json --image x.png --out o.safetensors",
        "forward --config ok.json --input notst.safetensors --out o.safetensors",
        "merge --config bad.json --adapter a --out o.safetensors",
        "plugin-test --config bad.json",
    };
    for (size_t i = 0; i < sizeof cmds / sizeof *cmds; i++) {
        int rc = run("cd %s && %s %s", dir, bin(), cmds[i]);
        ck_assert_msg(rc == 2, "vpeft %s: exit status %d, not 2 (%s)", cmds[i], rc, err);
        ck_assert_msg(strstr(err, "bad.json") || strstr(err, "notst.safetensors"),
                      "vpeft %s: the message names no file: %s", cmds[i], err);
    }
    /* a results file that is well-formed JSON of the wrong shape */
    ck_assert_int_eq(run("cd %s && printf '{\"images\": [], \"annotations\": [], "
                         "\"categories\": []}' > gt.json && printf '{}' > res.json && "
                         "%s eval --gt gt.json --results res.json", dir, bin()), 2);
    assert_has(err, "res.json");
    /* a training run whose annotations are malformed */
    variant(dir, "data", "{}", "{\"train\": {\"steps\": 1, \"data\": {\"images\": \".\", "
                               "\"annotations\": \"bad.json\"}}}");
    ck_assert_int_eq(run("cd %s && %s train data.json", dir, bin()), 2);
    assert_has(err, "bad.json");
    /* vpeft init on a checkpoint that loads and annotations that do not */
    ck_assert_int_eq(run("cd %s && mkdir -p ck && cp %s/tests/data/hf-mask2former/shared_config.json "
                         "ck/config.json && cp %s/tests/data/hf-mask2former/shared_weights."
                         "safetensors ck/model.safetensors", dir, srcdir(), srcdir()), 0);
    ck_assert_int_eq(run("cd %s && %s init --hf ck --train bad.json --val bad.json --out r.json",
                         dir, bin()), 2);
    assert_has(err, "bad.json");
    ck_assert_int_ne(run("test -e %s/r.json", dir), 0); /* no config written */
    run("rm -rf %s", dir);
}
END_TEST

int main(void)
{
    Suite *s = suite_create("cli");
    TCase *tc = vt_tcase("cli");
    tcase_add_test(tc, test_help_version);
    tcase_add_test(tc, test_devices);
    tcase_add_test(tc, test_no_device);
    tcase_add_test(tc, test_configure);
    tcase_add_test(tc, test_shader_deps);
    tcase_add_test(tc, test_install);
    tcase_add_test(tc, test_config_keys);
    tcase_add_test(tc, test_info_weights);
    tcase_add_test(tc, test_bad_input_exit);
    suite_add_tcase(s, tc);
    return vt_run(s);
}
