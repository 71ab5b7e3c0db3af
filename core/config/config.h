/*
 * The run config: a JSON file parsed once into a tree of vp_config nodes
 * that plugins read through the host table's cfg_* members (vpeft/host.h)
 * without seeing cJSON. The accessors below have exactly the signatures of
 * those members, so the host table points straight at them.
 *
 *     vp_config *cfg;
 *     if (vp_cfg_load("run.json", &cfg)) { puts(vp_error_last()); return; }
 *     if (vp_cfg_set(cfg, "train.steps=10")) ...          // a --set override
 *     const vp_config *bb = vp_cfg_get(vp_cfg_get(cfg, "model"), "backbone");
 *     int64_t depth;
 *     if (vp_cfg_int(bb, "depth", 12, &depth)) ...         // absent: 12
 *     // "run.json: model.backbone.depth: expected an integer, got 2.5"
 *     vp_cfg_free(cfg);
 *
 * Every node knows its file, its path ("peft[0].r"; "" for the root) and
 * its key, so each failure is one line "<file>: <path>: <what>" with
 * VP_ERR_CONFIG (VP_ERR_IO for a file that cannot be read), left in
 * vp_error_last(). Parsing is strict where JSON is silent: a duplicate key
 * or a number out of double range is an error, not a last-one-wins.
 *
 * Lifetime: nodes and every string an accessor returns belong to the tree
 * and stay valid until vp_cfg_free() of the root, or until a successful
 * vp_cfg_set() on it, which rebuilds the tree (the root pointer itself
 * stays valid). A tree is used by one thread at a time.
 *
 * NULL configs read as absent everywhere (VP_CFG_ABSENT, the defaults), so
 * `vp_cfg_int(vp_cfg_get(c, "train"), "steps", 100, &n)` needs no check in
 * between. Keys name direct members only ("depth", not "backbone.depth").
 * Paths quote keys that would read ambiguously: a key holding '.', '[', ']',
 * '=', '"', a control character, or the empty key appears as ["a.b"].
 *
 * Integers are read from the parser's double: values beyond 2^53 in
 * magnitude are not exact.
 */
#ifndef VP_CONFIG_CONFIG_H
#define VP_CONFIG_CONFIG_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include <vpeft/config.h>
#include <vpeft/status.h>

#include "util/error.h"

/* Read and parse the JSON file at path, whose top level must be an object.
 * On success *root is a new tree the caller frees with vp_cfg_free(); on
 * failure it is NULL and the message is one of
 *   "<path>: cannot read: <strerror>"                       (VP_ERR_IO)
 *   "<path>:<line>:<col>: JSON syntax error near '<text>'"   (VP_ERR_CONFIG;
 *        "... at end of input" when the text stops early; col counts
 *        UTF-8 characters, both from 1)
 *   "<path>: <json.path>: duplicate key"                    (VP_ERR_CONFIG)
 *   "<path>: <json.path>: number out of range"              (VP_ERR_CONFIG)
 *   "<path>: expected an object at the top level, got an array" (VP_ERR_CONFIG)
 * Relative file names in the config (vp_cfg_file) resolve against the
 * directory part of path. A leading UTF-8 byte order mark is skipped. */
vp_status vp_cfg_load(const char *path, vp_config **root);

/* vp_cfg_load() from the len bytes at text (need not be NUL-terminated;
 * may not hold NUL bytes). name stands for the file in messages and its
 * directory part is the base for relative file names; NULL means
 * "<config>" in messages and names kept relative (to the working
 * directory). */
vp_status vp_cfg_parse(const char *text, size_t len, const char *name, vp_config **root);

/* Free a whole tree. root must be a root (from vp_cfg_load/parse), not a
 * node inside one; NULL is a no-op. */
void vp_cfg_free(vp_config *root);

/* The file name (or vp_cfg_parse's name, or "<config>") that c came from;
 * NULL for a NULL c. Owned by the tree. */
const char *vp_cfg_file_name(const vp_config *c);

/* Apply one command-line override "<path>=<value>" to the tree at root
 * (which must be a root), e.g. "train.steps=10", "peft[0].r=16",
 * "model.head.classes=[1,2]", "train.out=runs/x". path is the syntax
 * vp_cfg_path() prints: keys separated by '.', [i] for an array element,
 * ["key"] (a JSON string) for any key. value is parsed as JSON, and taken
 * as a string when it is not valid JSON ("auto", "", "runs/x").
 *
 * A missing member is added at the end of its object; missing objects on
 * the way are created, and so is a missing array when the next step is
 * [0]. An index may name an existing element or the one past the end
 * (which appends). Anything else fails with VP_ERR_CONFIG and
 *   "override '<assignment>': <path so far>: <what>"
 * leaving the tree untouched. On success the whole tree is rebuilt:
 * every node and string obtained from it before, except root itself, is
 * invalid. */
vp_status vp_cfg_set(vp_config *root, const char *assignment);

/* The value c as JSON text (pretty-printed), malloc'd; NULL when out of
 * memory. Writers of derived files (adapter_config.json) start from it. */
char *vp_cfg_to_json(const vp_config *c);

/* The same with every default a getter (vp_cfg_int, _float, _bool, _string
 * with a non-NULL default) returned for an absent member of c or of an
 * object below it, added as if it had been written: what a plugin used,
 * not only what the user wrote (adapter_config.json). A key read with
 * two different defaults keeps the first. */
char *vp_cfg_to_json_resolved(const vp_config *c);

/* ---- the host table's accessors (vpeft/host.h, "config") ------------------
 * key names a direct member of object c; key NULL means c itself. A key on
 * a c that is not an object reads as absent in vp_cfg_type_of/vp_cfg_get,
 * and is an error ("expected an object, got an array") in the getters that
 * return a status, because that is a config whose shape is wrong. */

/* The JSON type of the member (VP_CFG_ABSENT: none, or c is NULL). This is
 * the table's cfg_type: the name vp_cfg_type is taken by the enum's
 * typedef. */
vp_cfg_type vp_cfg_type_of(const vp_config *c, const char *key);

/* Typed getters: absent -> *out = def and VP_OK; present with another type
 * -> VP_ERR_CONFIG "<file>: <path>: expected an integer, got a string"
 * (JSON null is present: "got null") and *out untouched. vp_cfg_int also
 * refuses a number that is not integral or outside int64 ("expected an
 * integer, got 2.5"). vp_cfg_float takes any number. The string is owned
 * by the tree. */
vp_status vp_cfg_int(const vp_config *c, const char *key, int64_t def, int64_t *out);
vp_status vp_cfg_float(const vp_config *c, const char *key, double def, double *out);
vp_status vp_cfg_bool(const vp_config *c, const char *key, bool def, bool *out);
vp_status vp_cfg_string(const vp_config *c, const char *key, const char *def,
                        const char **out);

/* A string naming a file: absolute names as they are, relative ones joined
 * to the config file's directory ("configs/run.json" with "data/x.json"
 * gives "configs/data/x.json"). Absent: *out = NULL and VP_OK. Not a
 * string, or the empty string: VP_ERR_CONFIG "expected a file name, got
 * ...". Whether the file exists is not checked. Owned by the tree. */
vp_status vp_cfg_file(const vp_config *c, const char *key, const char **out);

/* The member node (key NULL: c itself); NULL when absent or c is NULL. */
const vp_config *vp_cfg_get(const vp_config *c, const char *key);
/* Element count of an array, member count of an object; -1 otherwise
 * (and for NULL). */
int vp_cfg_len(const vp_config *c);
/* Element i of an array, member i of an object in file order; NULL when
 * out of range or c is neither. */
const vp_config *vp_cfg_at(const vp_config *c, int i);
/* A member's key; NULL for array elements, the root and NULL. */
const char *vp_cfg_key(const vp_config *c);
/* "model.backbone.depth", "peft[0].r"; "" for the root and for NULL. */
const char *vp_cfg_path(const vp_config *c);

/* VP_OK when every member key of object c is one of known[0..n-1] (or c is
 * NULL); else VP_ERR_CONFIG for the first stranger in file order:
 *   "<file>: <path>: unknown field, did you mean 'lora_alpha'?"
 * when exactly one known key is nearest, within edit distance 2 (ASCII
 * case ignored) and nearer than its own length, else
 *   "<file>: <path>: unknown field (expected one of: plugin, r, lora_alpha)".
 * c not an object: "<file>: <path>: expected an object, got a number". */
vp_status vp_cfg_check_keys(const vp_config *c, const char *const *known, uint32_t n);

/* Set VP_ERR_CONFIG with "<file>: <path of c>.<key>: <message>" and return
 * it. key NULL names c itself; at the root that leaves
 * "<file>: <key>: <message>" or "<file>: <message>". key need not exist.
 * For a NULL c: "<key>: <message>" or "<message>". */
vp_status vp_cfg_fail(const vp_config *c, const char *key, const char *fmt, ...) VP_PRINTF(3, 4);

#endif
