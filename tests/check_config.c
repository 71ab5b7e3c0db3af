/*
 * config suite: the JSON run config (core/config). A sample file written to
 * a private directory is read through every accessor; absent keys give
 * their defaults; every kind of bad input (wrong types, syntax errors,
 * duplicate keys, missing files, unknown fields, bad overrides) fails with
 * its exact one-line message; NULL configs read as absent. Also checks at
 * compile time that the accessors fit the host table's config members.
 * Needs no Vulkan device.
 */
#include <check.h>
#include <dirent.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include <vpeft/host.h>

#include "config/config.h"
#include "harness.h"

static char base[512]; /* private directory for this run */

/* The accessors must have exactly the host table's signatures, so that the
 * table can point at them: a mismatch is a compile error (or, with older
 * compilers, a warning that CI's -Werror turns into one). */
static const vp_host_api table_fit = {
    .cfg_type = vp_cfg_type_of,
    .cfg_int = vp_cfg_int,
    .cfg_float = vp_cfg_float,
    .cfg_bool = vp_cfg_bool,
    .cfg_string = vp_cfg_string,
    .cfg_file = vp_cfg_file,
    .cfg_get = vp_cfg_get,
    .cfg_len = vp_cfg_len,
    .cfg_at = vp_cfg_at,
    .cfg_key = vp_cfg_key,
    .cfg_path = vp_cfg_path,
    .cfg_check_keys = vp_cfg_check_keys,
    .cfg_fail = vp_cfg_fail,
};

static const char sample[] =
    "{\n"
    "  \"device\": \"auto\",\n"
    "  \"model\": {\n"
    "    \"backbone\": { \"plugin\": \"vit\", \"weights\": \"weights/vit.safetensors\",\n"
    "                  \"abs\": \"/data/x.bin\", \"depth\": 12, \"scale\": 0.5,\n"
    "                  \"frozen\": true, \"half\": false },\n"
    "    \"head\": { \"plugin\": \"mask2former\", \"classes\": 8, \"opt\": null }\n"
    "  },\n"
    "  \"peft\": [\n"
    "    { \"plugin\": \"lora\", \"r\": 8, \"lora_alpha\": 16,\n"
    "      \"target_modules\": [\"*.qkv\", \"*.proj\"] },\n"
    "    { \"plugin\": \"adapter\", \"per_site\": 2.5 }\n"
    "  ],\n"
    "  \"train\": { \"steps\": 5000, \"lr\": 1e-3, \"big\": 1e300, \"neg\": -9007199254740992,\n"
    "             \"out\": \"runs/lora\", \"empty\": \"\", \"list\": [], \"obj\": {} },\n"
    "  \"gr\xc3\xb6\xc3\x9f" "e\": \"gro\xc3\x9f\"\n"
    "}\n";

/* Write text to base/<name> (creating one level of directory) and return
 * the path (static, one at a time). */
static const char *write_file(const char *name, const char *text)
{
    static char p[1024];
    snprintf(p, sizeof p, "%s/%s", base, name);
    char *slash = strrchr(p, '/');
    *slash = '\0';
    mkdir(p, 0700);
    *slash = '/';
    FILE *f = fopen(p, "wb");
    ck_assert_ptr_nonnull(f);
    fwrite(text, 1, strlen(text), f);
    ck_assert_int_eq(fclose(f), 0);
    return p;
}

static vp_config *parse(const char *text, const char *name)
{
    vp_config *c = NULL;
    vt_ok(vp_cfg_parse(text, strlen(text), name, &c));
    ck_assert_ptr_nonnull(c);
    return c;
}

/* vp_cfg_parse must fail with st and exactly msg, leaving *root NULL. */
static void expect_parse_err(const char *text, const char *name, vp_status st, const char *msg)
{
    vp_config *c = (vp_config *)1;
    vt_expect_err(vp_cfg_parse(text, strlen(text), name, &c), st, msg);
    ck_assert_ptr_null(c);
}

static const vp_config *at_path(const vp_config *root, const char *a, const char *b)
{
    const vp_config *c = vp_cfg_get(root, a);
    return b ? vp_cfg_get(c, b) : c;
}

/* ---- reading a good file ------------------------------------------------ */

START_TEST(test_accessors)
{
    const char *path = write_file("cfgs/run.json", sample);
    vp_config *root = NULL;
    vt_ok(vp_cfg_load(path, &root));
    ck_assert_str_eq(vp_cfg_file_name(root), path);
    ck_assert_str_eq(vp_cfg_path(root), "");
    ck_assert_ptr_null(vp_cfg_key(root));
    ck_assert_int_eq(vp_cfg_len(root), 5);
    ck_assert_ptr_eq(vp_cfg_get(root, NULL), root);

    const char *s = NULL;
    vt_ok(vp_cfg_string(root, "device", "cpu", &s));
    ck_assert_str_eq(s, "auto");

    const vp_config *bb = at_path(root, "model", "backbone");
    ck_assert_ptr_nonnull(bb);
    ck_assert_str_eq(vp_cfg_path(bb), "model.backbone");
    ck_assert_str_eq(vp_cfg_key(bb), "backbone");
    ck_assert_str_eq(vp_cfg_file_name(bb), path);
    int64_t i = 0;
    vt_ok(vp_cfg_int(bb, "depth", 1, &i));
    ck_assert_int_eq(i, 12);
    double d = 0;
    vt_ok(vp_cfg_float(bb, "scale", 1, &d));
    ck_assert(d == 0.5);
    vt_ok(vp_cfg_float(bb, "depth", 1, &d)); /* an integer is a number too */
    ck_assert(d == 12.0);
    bool b = false;
    vt_ok(vp_cfg_bool(bb, "frozen", false, &b));
    ck_assert(b);
    vt_ok(vp_cfg_bool(bb, "half", true, &b));
    ck_assert(!b);

    const vp_config *train = vp_cfg_get(root, "train");
    vt_ok(vp_cfg_float(train, "lr", 0, &d));
    ck_assert(d == 1e-3);
    vt_ok(vp_cfg_int(train, "neg", 0, &i));
    ck_assert_int_eq(i, -9007199254740992LL);
    vt_ok(vp_cfg_string(train, "empty", "x", &s));
    ck_assert_str_eq(s, "");

    ck_assert_int_eq(vp_cfg_type_of(root, "device"), VP_CFG_STRING);
    ck_assert_int_eq(vp_cfg_type_of(root, "model"), VP_CFG_OBJECT);
    ck_assert_int_eq(vp_cfg_type_of(root, "peft"), VP_CFG_ARRAY);
    ck_assert_int_eq(vp_cfg_type_of(bb, "depth"), VP_CFG_NUMBER);
    ck_assert_int_eq(vp_cfg_type_of(bb, "frozen"), VP_CFG_BOOL);
    ck_assert_int_eq(vp_cfg_type_of(at_path(root, "model", "head"), "opt"), VP_CFG_NULL);
    ck_assert_int_eq(vp_cfg_type_of(bb, "nope"), VP_CFG_ABSENT);
    ck_assert_int_eq(vp_cfg_type_of(bb, NULL), VP_CFG_OBJECT);
    ck_assert_int_eq(vp_cfg_type_of(vp_cfg_get(root, "peft"), "r"), VP_CFG_ABSENT);

    /* A UTF-8 key and value, found and named as written. */
    vt_ok(vp_cfg_string(root, "gr\xc3\xb6\xc3\x9f" "e", NULL, &s));
    ck_assert_str_eq(s, "gro\xc3\x9f");
    const vp_config *u = vp_cfg_get(root, "gr\xc3\xb6\xc3\x9f" "e");
    ck_assert_str_eq(vp_cfg_path(u), "gr\xc3\xb6\xc3\x9f" "e");
    char want[1200];
    snprintf(want, sizeof want, "%s: gr\xc3\xb6\xc3\x9f" "e: expected an integer, got a string",
             path);
    vt_expect_err(vp_cfg_int(root, "gr\xc3\xb6\xc3\x9f" "e", 0, &i), VP_ERR_CONFIG, want);
    vp_cfg_free(root);
}
END_TEST

START_TEST(test_defaults)
{
    vp_config *root = parse(sample, "run.json");
    const vp_config *bb = at_path(root, "model", "backbone");
    int64_t i = 0;
    double d = 0;
    bool b = false;
    const char *s = "unset";
    vt_ok(vp_cfg_int(bb, "heads", 6, &i));
    ck_assert_int_eq(i, 6);
    vt_ok(vp_cfg_float(bb, "eps", 1e-6, &d));
    ck_assert(d == 1e-6);
    vt_ok(vp_cfg_bool(bb, "bias", true, &b));
    ck_assert(b);
    vt_ok(vp_cfg_string(bb, "act", "gelu", &s));
    ck_assert_str_eq(s, "gelu");
    vt_ok(vp_cfg_string(bb, "act", NULL, &s));
    ck_assert_ptr_null(s);
    s = "unset";
    vt_ok(vp_cfg_file(bb, "extra", &s));
    ck_assert_ptr_null(s);
    ck_assert_ptr_null(vp_cfg_get(bb, "heads"));
    /* An absent sub-object reads as absent all the way down. */
    vt_ok(vp_cfg_int(vp_cfg_get(root, "data"), "workers", 2, &i));
    ck_assert_int_eq(i, 2);

    /* The defaults read at backbone, written out beside what was given:
     * the first read of a key kept, a NULL default and a present key not
     * recorded, other objects untouched. */
    vt_ok(vp_cfg_int(bb, "heads", 99, &i));
    vt_ok(vp_cfg_int(bb, "depth", 3, &i));
    char *js = vp_cfg_to_json_resolved(bb);
    vp_config *r = parse(js, "resolved.json");
    vt_ok(vp_cfg_int(r, "heads", 0, &i));
    ck_assert_int_eq(i, 6);
    vt_ok(vp_cfg_float(r, "eps", 0, &d));
    ck_assert(d == 1e-6);
    vt_ok(vp_cfg_bool(r, "bias", false, &b));
    ck_assert(b);
    vt_ok(vp_cfg_string(r, "act", NULL, &s));
    ck_assert_str_eq(s, "gelu");
    vt_ok(vp_cfg_int(r, "depth", 0, &i));
    ck_assert_int_eq(i, 12);
    ck_assert_int_eq(vp_cfg_type_of(r, "extra"), VP_CFG_ABSENT);
    ck_assert_int_eq(vp_cfg_len(r), vp_cfg_len(bb) + 4);
    vp_cfg_free(r);
    free(js);
    /* from the root: the same members at model.backbone, and nothing for
     * data, which is absent */
    js = vp_cfg_to_json_resolved(root);
    r = parse(js, "resolved.json");
    vt_ok(vp_cfg_int(at_path(r, "model", "backbone"), "heads", 0, &i));
    ck_assert_int_eq(i, 6);
    ck_assert_int_eq(vp_cfg_type_of(r, "data"), VP_CFG_ABSENT);
    vp_cfg_free(r);
    free(js);
    /* the plain copy has none of them */
    js = vp_cfg_to_json(bb);
    ck_assert_ptr_null(strstr(js, "heads"));
    free(js);
    vp_cfg_free(root);
}
END_TEST

START_TEST(test_arrays_and_members)
{
    vp_config *root = parse(sample, "run.json");
    const vp_config *peft = vp_cfg_get(root, "peft");
    ck_assert_int_eq(vp_cfg_len(peft), 2);
    ck_assert_str_eq(vp_cfg_path(peft), "peft");
    const vp_config *p0 = vp_cfg_at(peft, 0), *p1 = vp_cfg_at(peft, 1);
    ck_assert_str_eq(vp_cfg_path(p0), "peft[0]");
    ck_assert_ptr_null(vp_cfg_key(p0));
    ck_assert_ptr_null(vp_cfg_at(peft, 2));
    ck_assert_ptr_null(vp_cfg_at(peft, -1));
    int64_t r = 0;
    vt_ok(vp_cfg_int(p0, "r", 0, &r));
    ck_assert_int_eq(r, 8);
    const vp_config *tm = vp_cfg_get(p0, "target_modules");
    ck_assert_str_eq(vp_cfg_path(tm), "peft[0].target_modules");
    ck_assert_int_eq(vp_cfg_len(tm), 2);
    const char *s = NULL;
    vt_ok(vp_cfg_string(vp_cfg_at(tm, 1), NULL, NULL, &s)); /* key NULL: the element itself */
    ck_assert_str_eq(s, "*.proj");
    ck_assert_str_eq(vp_cfg_path(vp_cfg_at(tm, 1)), "peft[0].target_modules[1]");
    vt_expect_err(vp_cfg_int(vp_cfg_at(tm, 0), NULL, 0, &r), VP_ERR_CONFIG,
                  "run.json: peft[0].target_modules[0]: expected an integer, got a string");
    vt_expect_err(vp_cfg_int(p1, "per_site", 0, &r), VP_ERR_CONFIG,
                  "run.json: peft[1].per_site: expected an integer, got 2.5");

    /* Object members in file order, with keys and paths. */
    const char *keys[] = {"plugin", "r", "lora_alpha", "target_modules"};
    ck_assert_int_eq(vp_cfg_len(p0), 4);
    for (int i = 0; i < 4; i++) {
        const vp_config *m = vp_cfg_at(p0, i);
        ck_assert_str_eq(vp_cfg_key(m), keys[i]);
        char want[64];
        snprintf(want, sizeof want, "peft[0].%s", keys[i]);
        ck_assert_str_eq(vp_cfg_path(m), want);
        ck_assert_ptr_eq(vp_cfg_get(p0, keys[i]), m);
    }
    ck_assert_ptr_null(vp_cfg_at(p0, 4));

    const vp_config *train = vp_cfg_get(root, "train");
    ck_assert_int_eq(vp_cfg_len(vp_cfg_get(train, "list")), 0);
    ck_assert_int_eq(vp_cfg_len(vp_cfg_get(train, "obj")), 0);
    ck_assert_ptr_null(vp_cfg_at(vp_cfg_get(train, "list"), 0));
    ck_assert_int_eq(vp_cfg_len(vp_cfg_get(train, "steps")), -1);
    ck_assert_ptr_null(vp_cfg_at(vp_cfg_get(train, "steps"), 0));
    vp_cfg_free(root);
}
END_TEST

/* ---- wrong types -------------------------------------------------------- */

START_TEST(test_wrong_types)
{
    vp_config *root = parse(sample, "run.json");
    const vp_config *bb = at_path(root, "model", "backbone");
    const vp_config *head = at_path(root, "model", "head");
    const vp_config *train = vp_cfg_get(root, "train");
    int64_t i = 77;
    double d = 77;
    bool b = true;
    const char *s = "keep";
    vt_expect_err(vp_cfg_int(bb, "plugin", 0, &i), VP_ERR_CONFIG,
                  "run.json: model.backbone.plugin: expected an integer, got a string");
    vt_expect_err(vp_cfg_int(bb, "scale", 0, &i), VP_ERR_CONFIG,
                  "run.json: model.backbone.scale: expected an integer, got 0.5");
    vt_expect_err(vp_cfg_int(train, "big", 0, &i), VP_ERR_CONFIG,
                  "run.json: train.big: expected an integer, got 1e+300");
    vt_expect_err(vp_cfg_int(bb, "frozen", 0, &i), VP_ERR_CONFIG,
                  "run.json: model.backbone.frozen: expected an integer, got a boolean");
    vt_expect_err(vp_cfg_int(head, "opt", 0, &i), VP_ERR_CONFIG,
                  "run.json: model.head.opt: expected an integer, got null");
    vt_expect_err(vp_cfg_int(root, "peft", 0, &i), VP_ERR_CONFIG,
                  "run.json: peft: expected an integer, got an array");
    vt_expect_err(vp_cfg_int(root, "model", 0, &i), VP_ERR_CONFIG,
                  "run.json: model: expected an integer, got an object");
    ck_assert_int_eq(i, 77);
    vt_expect_err(vp_cfg_float(bb, "plugin", 0, &d), VP_ERR_CONFIG,
                  "run.json: model.backbone.plugin: expected a number, got a string");
    vt_expect_err(vp_cfg_float(head, "opt", 0, &d), VP_ERR_CONFIG,
                  "run.json: model.head.opt: expected a number, got null");
    ck_assert(d == 77);
    vt_expect_err(vp_cfg_bool(bb, "depth", false, &b), VP_ERR_CONFIG,
                  "run.json: model.backbone.depth: expected a boolean, got a number");
    vt_expect_err(vp_cfg_string(bb, "depth", "x", &s), VP_ERR_CONFIG,
                  "run.json: model.backbone.depth: expected a string, got a number");
    vt_expect_err(vp_cfg_string(head, "opt", "x", &s), VP_ERR_CONFIG,
                  "run.json: model.head.opt: expected a string, got null");
    vt_expect_err(vp_cfg_file(bb, "depth", &s), VP_ERR_CONFIG,
                  "run.json: model.backbone.depth: expected a file name, got a number");
    vt_expect_err(vp_cfg_file(train, "empty", &s), VP_ERR_CONFIG,
                  "run.json: train.empty: expected a file name, got an empty string");
    ck_assert_str_eq(s, "keep");
    ck_assert(b);
    /* A key on something that is not an object: the config has the wrong shape. */
    vt_expect_err(vp_cfg_int(vp_cfg_get(root, "peft"), "r", 0, &i), VP_ERR_CONFIG,
                  "run.json: peft: expected an object, got an array");
    vt_expect_err(vp_cfg_string(vp_cfg_get(root, "device"), "x", NULL, &s), VP_ERR_CONFIG,
                  "run.json: device: expected an object, got a string");
    /* The root itself, read with key NULL. */
    vt_expect_err(vp_cfg_int(root, NULL, 0, &i), VP_ERR_CONFIG,
                  "run.json: expected an integer, got an object");
    vp_cfg_free(root);
}
END_TEST

START_TEST(test_int_range)
{
    vp_config *root = parse("{\"max\": 9223372036854775807, \"two63\": 9223372036854775808,"
                            " \"min\": -9223372036854775808, \"below\": -9.3e18, \"z\": -0,"
                            " \"e\": 1e3, \"third\": 0.3333333333333333}",
                            NULL);
    int64_t i = 0;
    /* 2^63 - 1 is not a double: it parses as 2^63, out of range. */
    vt_expect_err(vp_cfg_int(root, "max", 0, &i), VP_ERR_CONFIG,
                  "<config>: max: expected an integer, got 9.223372036854776e+18");
    vt_expect_err(vp_cfg_int(root, "two63", 0, &i), VP_ERR_CONFIG,
                  "<config>: two63: expected an integer, got 9.223372036854776e+18");
    vt_ok(vp_cfg_int(root, "min", 0, &i));
    ck_assert(i == INT64_MIN);
    vt_expect_err(vp_cfg_int(root, "below", 0, &i), VP_ERR_CONFIG,
                  "<config>: below: expected an integer, got -9.3e+18");
    vt_ok(vp_cfg_int(root, "z", 5, &i));
    ck_assert_int_eq(i, 0);
    vt_ok(vp_cfg_int(root, "e", 5, &i));
    ck_assert_int_eq(i, 1000);
    vt_expect_err(vp_cfg_int(root, "third", 0, &i), VP_ERR_CONFIG,
                  "<config>: third: expected an integer, got 0.3333333333333333");
    vp_cfg_free(root);
}
END_TEST

/* ---- bad files ---------------------------------------------------------- */

START_TEST(test_syntax_errors)
{
    const char *path = write_file("bad/broken.json", "{\n  \"a\": 1,\n  \"b\": [1, 2,, 3]\n}\n");
    vp_config *root = (vp_config *)1;
    char want[1200];
    snprintf(want, sizeof want, "%s:3:14: JSON syntax error near ', 3]'", path);
    vt_expect_err(vp_cfg_load(path, &root), VP_ERR_CONFIG, want);
    ck_assert_ptr_null(root);

    expect_parse_err("{\"a\": tru}", "x.json", VP_ERR_CONFIG,
                     "x.json:1:7: JSON syntax error near 'tru}'");
    expect_parse_err("{\"a\" 1}", "x.json", VP_ERR_CONFIG,
                     "x.json:1:6: JSON syntax error near '1}'");
    /* Columns count characters, not bytes. */
    expect_parse_err("{\"\xc3\xa9\xc3\xa9\": x}", "x.json", VP_ERR_CONFIG,
                     "x.json:1:8: JSON syntax error near 'x}'");
    /* The excerpt stops at the end of the line and at 20 characters. */
    expect_parse_err("{\"a\": 1 \"b\": 2}\n", NULL, VP_ERR_CONFIG,
                     "<config>:1:9: JSON syntax error near '\"b\": 2}'");
    expect_parse_err("{\"a\": nope_this_is_a_long_bare_word}", NULL, VP_ERR_CONFIG,
                     "<config>:1:7: JSON syntax error near 'nope_this_is_a_long_'");
    expect_parse_err("{\"a\": 1", "x.json", VP_ERR_CONFIG,
                     "x.json:1:8: JSON syntax error at end of input");
    expect_parse_err("{\"a\": 1} x", "x.json", VP_ERR_CONFIG,
                     "x.json:1:10: JSON syntax error near 'x'");
    expect_parse_err("", "x.json", VP_ERR_CONFIG, "x.json:1:1: JSON syntax error at end of input");
    expect_parse_err("\n\n  ", "x.json", VP_ERR_CONFIG,
                     "x.json:3:3: JSON syntax error at end of input");
    vp_config *c = (vp_config *)1;
    vt_expect_err(vp_cfg_parse("{\"a\": 1}\0{}", 11, "x.json", &c), VP_ERR_CONFIG,
                  "x.json:1:9: JSON syntax error: NUL byte");
    ck_assert_ptr_null(c);
    /* Only len bytes are read: the rest of the buffer is not JSON. */
    c = NULL;
    vt_ok(vp_cfg_parse("{\"a\": 1}garbage", 8, "x.json", &c));
    vp_cfg_free(c);
    /* A byte order mark is not an error. */
    c = parse("\xef\xbb\xbf{\"a\": 1}", "x.json");
    ck_assert_int_eq(vp_cfg_len(c), 1);
    vp_cfg_free(c);
}
END_TEST

START_TEST(test_bad_documents)
{
    expect_parse_err("[1, 2]", "x.json", VP_ERR_CONFIG,
                     "x.json: expected an object at the top level, got an array");
    expect_parse_err("\"run\"", "x.json", VP_ERR_CONFIG,
                     "x.json: expected an object at the top level, got a string");
    expect_parse_err("null", NULL, VP_ERR_CONFIG,
                     "<config>: expected an object at the top level, got null");
    expect_parse_err("{\"a\": 1, \"b\": 2, \"a\": 3}", "x.json", VP_ERR_CONFIG,
                     "x.json: a: duplicate key");
    expect_parse_err("{\"peft\": [{}, {\"r\": 8, \"x\": {\"k\": 1, \"k\": 1}}]}", "x.json",
                     VP_ERR_CONFIG, "x.json: peft[1].x.k: duplicate key");
    expect_parse_err("{\"train\": {\"lr\": 1e999}}", "x.json", VP_ERR_CONFIG,
                     "x.json: train.lr: number out of range");
    /* Same key spelled differently is two keys. */
    vp_config *c = parse("{\"a\": 1, \"A\": 2}", NULL);
    ck_assert_int_eq(vp_cfg_len(c), 2);
    vp_cfg_free(c);
}
END_TEST

START_TEST(test_missing_file)
{
    char p[1024];
    snprintf(p, sizeof p, "%s/no/such.json", base);
    vp_config *root = (vp_config *)1;
    char want[1200];
    snprintf(want, sizeof want, "%s: cannot read: No such file or directory", p);
    vt_expect_err(vp_cfg_load(p, &root), VP_ERR_NOT_FOUND, want);
    ck_assert_ptr_null(root);
    /* A directory, a FIFO: refused before reading (a FIFO would block in
     * open until a writer came; the alarm makes a regression fail). */
    root = (vp_config *)1;
    snprintf(want, sizeof want, "%s: not a regular file", base);
    vt_expect_err(vp_cfg_load(base, &root), VP_ERR_INVALID, want);
    ck_assert_ptr_null(root);
    snprintf(p, sizeof p, "%s/fifo.json", base);
    ck_assert_int_eq(mkfifo(p, 0644), 0);
    alarm(20);
    snprintf(want, sizeof want, "%s: not a regular file", p);
    vt_expect_err(vp_cfg_load(p, &root), VP_ERR_INVALID, want);
    alarm(0);
    ck_assert_ptr_null(root);
    unlink(p);
}
END_TEST

/* ---- file names ---------------------------------------------------------- */

START_TEST(test_files)
{
    const char *path = write_file("cfgs/run.json", sample);
    char p[1024], want[1200];
    snprintf(p, sizeof p, "%s", path);
    vp_config *root = NULL;
    vt_ok(vp_cfg_load(p, &root));
    const vp_config *bb = at_path(root, "model", "backbone");
    const char *f = NULL;
    vt_ok(vp_cfg_file(bb, "weights", &f));
    snprintf(want, sizeof want, "%s/cfgs/weights/vit.safetensors", base);
    ck_assert_str_eq(f, want);
    /* Resolution does not change what vp_cfg_string sees. */
    const char *s = NULL;
    vt_ok(vp_cfg_string(bb, "weights", NULL, &s));
    ck_assert_str_eq(s, "weights/vit.safetensors");
    vt_ok(vp_cfg_file(bb, "abs", &f));
    ck_assert_str_eq(f, "/data/x.bin");
    vt_ok(vp_cfg_file(vp_cfg_at(vp_cfg_get(vp_cfg_at(vp_cfg_get(root, "peft"), 0),
                                           "target_modules"), 0), NULL, &f));
    snprintf(want, sizeof want, "%s/cfgs/*.qkv", base);
    ck_assert_str_eq(f, want);
    vp_cfg_free(root);

    /* A config in the working directory, and one parsed without a name:
     * names stay relative (to the working directory). */
    root = parse(sample, "run.json");
    vt_ok(vp_cfg_file(at_path(root, "model", "backbone"), "weights", &f));
    ck_assert_str_eq(f, "weights/vit.safetensors");
    vp_cfg_free(root);
    root = parse(sample, NULL);
    ck_assert_str_eq(vp_cfg_file_name(root), "<config>");
    vt_ok(vp_cfg_file(at_path(root, "model", "backbone"), "weights", &f));
    ck_assert_str_eq(f, "weights/vit.safetensors");
    vp_cfg_free(root);
    root = parse(sample, "/etc/vpeft/run.json");
    vt_ok(vp_cfg_file(vp_cfg_get(root, "train"), "out", &f));
    ck_assert_str_eq(f, "/etc/vpeft/runs/lora");
    vp_cfg_free(root);
    root = parse(sample, "/run.json");
    vt_ok(vp_cfg_file(vp_cfg_get(root, "train"), "out", &f));
    ck_assert_str_eq(f, "/runs/lora");
    vp_cfg_free(root);
}
END_TEST

/* ---- unknown fields and plugin-made errors ------------------------------- */

START_TEST(test_check_keys)
{
    vp_config *root = parse("{\"peft\": [{\"plugin\": \"lora\", \"r\": 8, \"lora_alfa\": 16}],"
                            " \"x\": {\"Plugin\": 1}, \"y\": {\"q\": 1}, \"z\": {\"rate\": 1}}",
                            "run.json");
    const vp_config *p0 = vp_cfg_at(vp_cfg_get(root, "peft"), 0);
    static const char *const lora[] = {"plugin", "r", "lora_alpha", "target_modules"};
    vt_expect_err(vp_cfg_check_keys(p0, lora, 4), VP_ERR_CONFIG,
                  "run.json: peft[0].lora_alfa: unknown field, did you mean 'lora_alpha'?");
    vt_ok(vp_cfg_check_keys(p0, (const char *const[]){"plugin", "r", "lora_alfa"}, 3));
    /* Case alone is a distance of 0. */
    vt_expect_err(vp_cfg_check_keys(vp_cfg_get(root, "x"), lora, 4), VP_ERR_CONFIG,
                  "run.json: x.Plugin: unknown field, did you mean 'plugin'?");
    /* "q" is one edit from "r", but so is every one-letter key: no guess. */
    vt_expect_err(vp_cfg_check_keys(vp_cfg_get(root, "y"), lora, 4), VP_ERR_CONFIG,
                  "run.json: y.q: unknown field (expected one of: plugin, r, lora_alpha, "
                  "target_modules)");
    /* Two keys equally near: no guess either. */
    static const char *const two[] = {"rates", "rate_"};
    vt_expect_err(vp_cfg_check_keys(vp_cfg_get(root, "z"), two, 2), VP_ERR_CONFIG,
                  "run.json: z.rate: unknown field (expected one of: rates, rate_)");
    vt_expect_err(vp_cfg_check_keys(vp_cfg_get(root, "z"), NULL, 0), VP_ERR_CONFIG,
                  "run.json: z.rate: unknown field (expected no fields)");
    /* At the root, and on something that is not an object. */
    vt_expect_err(vp_cfg_check_keys(root, (const char *const[]){"peft", "x", "y"}, 3),
                  VP_ERR_CONFIG, "run.json: z: unknown field (expected one of: peft, x, y)");
    vt_expect_err(vp_cfg_check_keys(vp_cfg_get(root, "peft"), lora, 4), VP_ERR_CONFIG,
                  "run.json: peft: expected an object, got an array");
    vt_ok(vp_cfg_check_keys(root, (const char *const[]){"z", "y", "x", "peft"}, 4));
    vp_cfg_free(root);
    /* A key that is not valid UTF-8 shows its stray bytes escaped, never
     * raw; valid UTF-8 stays as it is. */
    root = parse("{\"a\xff" "b\": 1, \"\xc3\xa9t\xc3\xa9\": 2}", "run.json");
    vt_expect_err(vp_cfg_check_keys(root, (const char *const[]){"\xc3\xa9t\xc3\xa9"}, 1),
                  VP_ERR_CONFIG, "run.json: [\"a\\xffb\"]: unknown field (expected one of: "
                  "\xc3\xa9t\xc3\xa9)");
    vt_expect_err(vp_cfg_check_keys(root, (const char *const[]){"a\xff" "b"}, 1), VP_ERR_CONFIG,
                  "run.json: \xc3\xa9t\xc3\xa9: unknown field (expected one of: a\xff" "b)");
    vp_cfg_free(root);
}
END_TEST

START_TEST(test_fail)
{
    vp_config *root = parse(sample, "run.json");
    const vp_config *p0 = vp_cfg_at(vp_cfg_get(root, "peft"), 0);
    vt_expect_err(vp_cfg_fail(p0, "r", "must be at least 1, got %d", 0), VP_ERR_CONFIG,
                  "run.json: peft[0].r: must be at least 1, got 0");
    vt_expect_err(vp_cfg_fail(p0, NULL, "no sites matched '%s'", "*.qkv"), VP_ERR_CONFIG,
                  "run.json: peft[0]: no sites matched '*.qkv'");
    vt_expect_err(vp_cfg_fail(root, "seed", "required"), VP_ERR_CONFIG,
                  "run.json: seed: required");
    vt_expect_err(vp_cfg_fail(root, NULL, "no model"), VP_ERR_CONFIG, "run.json: no model");
    vt_expect_err(vp_cfg_fail(root, "a.b", "odd key"), VP_ERR_CONFIG,
                  "run.json: [\"a.b\"]: odd key");
    vt_expect_err(vp_cfg_fail(NULL, "r", "bad"), VP_ERR_CONFIG, "r: bad");
    vt_expect_err(vp_cfg_fail(NULL, NULL, "bad %d", 1), VP_ERR_CONFIG, "bad 1");
    vp_cfg_free(root);
}
END_TEST

START_TEST(test_null_config)
{
    int64_t i = 0;
    double d = 0;
    bool b = false;
    const char *s = NULL;
    ck_assert_int_eq(vp_cfg_type_of(NULL, "x"), VP_CFG_ABSENT);
    ck_assert_int_eq(vp_cfg_type_of(NULL, NULL), VP_CFG_ABSENT);
    vt_ok(vp_cfg_int(NULL, "x", 3, &i));
    ck_assert_int_eq(i, 3);
    vt_ok(vp_cfg_int(NULL, NULL, 4, &i));
    ck_assert_int_eq(i, 4);
    vt_ok(vp_cfg_float(NULL, "x", 0.25, &d));
    ck_assert(d == 0.25);
    vt_ok(vp_cfg_bool(NULL, "x", true, &b));
    ck_assert(b);
    vt_ok(vp_cfg_string(NULL, "x", "def", &s));
    ck_assert_str_eq(s, "def");
    vt_ok(vp_cfg_file(NULL, "x", &s));
    ck_assert_ptr_null(s);
    ck_assert_ptr_null(vp_cfg_get(NULL, "x"));
    ck_assert_ptr_null(vp_cfg_get(NULL, NULL));
    ck_assert_int_eq(vp_cfg_len(NULL), -1);
    ck_assert_ptr_null(vp_cfg_at(NULL, 0));
    ck_assert_ptr_null(vp_cfg_key(NULL));
    ck_assert_str_eq(vp_cfg_path(NULL), "");
    ck_assert_ptr_null(vp_cfg_file_name(NULL));
    vt_ok(vp_cfg_check_keys(NULL, NULL, 0));
    vp_cfg_free(NULL);
}
END_TEST

/* ---- overrides ------------------------------------------------------------ */

START_TEST(test_set)
{
    vp_config *root = parse(sample, "cfgs/run.json");
    int64_t i = 0;
    const char *s = NULL;
    vt_ok(vp_cfg_set(root, "train.steps=10"));
    vt_ok(vp_cfg_int(vp_cfg_get(root, "train"), "steps", 0, &i));
    ck_assert_int_eq(i, 10);
    /* Replaced in place: member order is kept. */
    ck_assert_str_eq(vp_cfg_key(vp_cfg_at(vp_cfg_get(root, "train"), 0)), "steps");
    vt_ok(vp_cfg_set(root, "peft[0].r=16"));
    vt_ok(vp_cfg_int(vp_cfg_at(vp_cfg_get(root, "peft"), 0), "r", 0, &i));
    ck_assert_int_eq(i, 16);
    vt_ok(vp_cfg_set(root, "model.head.classes=[1,2]"));
    const vp_config *cl = at_path(root, "model", "head");
    cl = vp_cfg_get(cl, "classes");
    ck_assert_int_eq(vp_cfg_len(cl), 2);
    vt_ok(vp_cfg_int(vp_cfg_at(cl, 1), NULL, 0, &i));
    ck_assert_int_eq(i, 2);
    ck_assert_str_eq(vp_cfg_path(vp_cfg_at(cl, 1)), "model.head.classes[1]");
    /* Not JSON: a string. Strings resolve as files like the file's own. */
    vt_ok(vp_cfg_set(root, "train.out=runs/x"));
    vt_ok(vp_cfg_file(vp_cfg_get(root, "train"), "out", &s));
    ck_assert_str_eq(s, "cfgs/runs/x");
    vt_ok(vp_cfg_set(root, "device="));
    vt_ok(vp_cfg_string(root, "device", NULL, &s));
    ck_assert_str_eq(s, "");
    vt_ok(vp_cfg_set(root, "device=\"cpu\""));
    vt_ok(vp_cfg_string(root, "device", NULL, &s));
    ck_assert_str_eq(s, "cpu");
    vt_ok(vp_cfg_set(root, "model.head.opt=true"));
    ck_assert_int_eq(vp_cfg_type_of(at_path(root, "model", "head"), "opt"), VP_CFG_BOOL);
    vt_ok(vp_cfg_set(root, "model.head.opt=null"));
    ck_assert_int_eq(vp_cfg_type_of(at_path(root, "model", "head"), "opt"), VP_CFG_NULL);
    /* Intermediate objects and arrays are created; new members go last. */
    vt_ok(vp_cfg_set(root, "train.data.images=data/train"));
    vt_ok(vp_cfg_file(at_path(root, "train", "data"), "images", &s));
    ck_assert_str_eq(s, "cfgs/data/train");
    vt_ok(vp_cfg_set(root, "eval.sets[0].name=val"));
    ck_assert_str_eq(vp_cfg_path(vp_cfg_at(root, 5)), "eval");
    vt_ok(vp_cfg_string(vp_cfg_at(vp_cfg_get(vp_cfg_get(root, "eval"), "sets"), 0), "name",
                        NULL, &s));
    ck_assert_str_eq(s, "val");
    /* One past the end appends. */
    vt_ok(vp_cfg_set(root, "peft[2]={\"plugin\": \"lora_deform\"}"));
    ck_assert_int_eq(vp_cfg_len(vp_cfg_get(root, "peft")), 3);
    vt_ok(vp_cfg_set(root, "peft[3].plugin=adapter"));
    vt_ok(vp_cfg_string(vp_cfg_at(vp_cfg_get(root, "peft"), 3), "plugin", NULL, &s));
    ck_assert_str_eq(s, "adapter");
    vt_ok(vp_cfg_set(root, "peft[0].target_modules[1]=\"*.fc1\""));
    vt_ok(vp_cfg_string(vp_cfg_at(vp_cfg_get(vp_cfg_at(vp_cfg_get(root, "peft"), 0),
                                             "target_modules"), 1), NULL, NULL, &s));
    ck_assert_str_eq(s, "*.fc1");
    /* Quoted keys, as vp_cfg_path prints them; '=' inside one is no split. */
    vt_ok(vp_cfg_set(root, "model[\"a.b=c\"].x=1"));
    const vp_config *q = vp_cfg_get(vp_cfg_get(vp_cfg_get(root, "model"), "a.b=c"), "x");
    ck_assert_ptr_nonnull(q);
    ck_assert_str_eq(vp_cfg_path(q), "model[\"a.b=c\"].x");
    vt_ok(vp_cfg_set(root, "[\"gr\\u00f6\\u00dfe\"]=2"));
    vt_ok(vp_cfg_int(root, "gr\xc3\xb6\xc3\x9f" "e", 0, &i));
    ck_assert_int_eq(i, 2);
    /* A whole object replaced by a scalar. */
    vt_ok(vp_cfg_set(root, "model.backbone=5"));
    vt_ok(vp_cfg_int(vp_cfg_get(root, "model"), "backbone", 0, &i));
    ck_assert_int_eq(i, 5);
    ck_assert_str_eq(vp_cfg_file_name(vp_cfg_get(root, "model")), "cfgs/run.json");
    vp_cfg_free(root);
}
END_TEST

START_TEST(test_set_errors)
{
    vp_config *root = parse(sample, "run.json");
    const vp_config *train = vp_cfg_get(root, "train");
    vt_expect_err(vp_cfg_set(root, "train.steps"), VP_ERR_CONFIG,
                  "override 'train.steps': expected <path>=<value>");
    vt_expect_err(vp_cfg_set(root, ""), VP_ERR_CONFIG, "override '': expected <path>=<value>");
    vt_expect_err(vp_cfg_set(root, "=3"), VP_ERR_CONFIG,
                  "override '=3': column 1: expected a key");
    vt_expect_err(vp_cfg_set(root, "train..steps=3"), VP_ERR_CONFIG,
                  "override 'train..steps=3': column 7: expected a key");
    vt_expect_err(vp_cfg_set(root, "peft[x]=3"), VP_ERR_CONFIG,
                  "override 'peft[x]=3': column 5: expected an index and ']'");
    vt_expect_err(vp_cfg_set(root, "[0]=3"), VP_ERR_CONFIG,
                  "override '[0]=3': column 1: the top level is an object: expected a key");
    vt_expect_err(vp_cfg_set(root, "peft[0]r=3"), VP_ERR_CONFIG,
                  "override 'peft[0]r=3': column 8: expected '.', '[' or '='");
    vt_expect_err(vp_cfg_set(root, "a[\"b=1"), VP_ERR_CONFIG,
                  "override 'a[\"b=1': column 2: expected a quoted key and ']'");
    vt_expect_err(vp_cfg_set(root, "train.steps.x=1"), VP_ERR_CONFIG,
                  "override 'train.steps.x=1': train.steps: expected an object, got a number");
    vt_expect_err(vp_cfg_set(root, "train[0]=1"), VP_ERR_CONFIG,
                  "override 'train[0]=1': train: expected an array, got an object");
    vt_expect_err(vp_cfg_set(root, "peft[5].r=1"), VP_ERR_CONFIG,
                  "override 'peft[5].r=1': peft: index 5 is past the end (length 2)");
    vt_expect_err(vp_cfg_set(root, "eval.sets[1]=1"), VP_ERR_CONFIG,
                  "override 'eval.sets[1]=1': eval.sets: not found (only [0] creates an array)");
    vt_expect_err(vp_cfg_set(root, "model.head={\"a\": 1, \"a\": 2}"), VP_ERR_CONFIG,
                  "override 'model.head={\"a\": 1, \"a\": 2}': model.head.a: duplicate key");
    vt_expect_err(vp_cfg_set(root, "train.lr=1e999"), VP_ERR_CONFIG,
                  "override 'train.lr=1e999': train.lr: number out of range");
    /* A failed override changes nothing and invalidates nothing. */
    ck_assert_ptr_eq(vp_cfg_get(root, "train"), train);
    ck_assert_ptr_null(vp_cfg_get(root, "eval"));
    int64_t i = 0;
    vt_ok(vp_cfg_int(train, "steps", 0, &i));
    ck_assert_int_eq(i, 5000);
    ck_assert_int_eq(vp_cfg_len(vp_cfg_get(root, "model")), 2);
    vp_cfg_free(root);
}
END_TEST

int main(void)
{
    (void)table_fit;
    const char *tmp = getenv("TMPDIR");
    snprintf(base, sizeof base, "%s/vpeft-config-XXXXXX", tmp && *tmp ? tmp : "/tmp");
    if (!mkdtemp(base)) {
        perror("mkdtemp");
        return 1;
    }
    Suite *s = suite_create("config");
    TCase *tc = tcase_create("config");
    tcase_add_test(tc, test_accessors);
    tcase_add_test(tc, test_defaults);
    tcase_add_test(tc, test_arrays_and_members);
    tcase_add_test(tc, test_wrong_types);
    tcase_add_test(tc, test_int_range);
    tcase_add_test(tc, test_syntax_errors);
    tcase_add_test(tc, test_bad_documents);
    tcase_add_test(tc, test_missing_file);
    tcase_add_test(tc, test_files);
    tcase_add_test(tc, test_check_keys);
    tcase_add_test(tc, test_fail);
    tcase_add_test(tc, test_null_config);
    tcase_add_test(tc, test_set);
    tcase_add_test(tc, test_set_errors);
    suite_add_tcase(s, tc);
    SRunner *sr = srunner_create(s);
    srunner_set_fork_status(sr, CK_NOFORK);
    srunner_run_all(sr, CK_NORMAL);
    int failed = srunner_ntests_failed(sr);
    srunner_free(sr);
    vt_rm_rf(base);
    printf("skipped: %u\n", 0u);
    return failed ? 1 : 0;
}
