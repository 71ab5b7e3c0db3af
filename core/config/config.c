/*
 * The run config: cJSON parses the text, and one pass then wraps every JSON
 * value in a vp_config node that carries its path, key and resolved file
 * name, so that accessors are lookups and every message can name the file
 * and the full path without walking back up. Configs are small (a few
 * hundred values), so the wrappers are built eagerly and rebuilt whole
 * after an override. See config.h for the contract.
 */
#include "config/config.h"

#include <cjson/cJSON.h>
#include <errno.h>
#include <math.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "util/file.h"
#include "util/strbuf.h"

/* What every node of one tree shares; owned by the root, stable across
 * vp_cfg_set rebuilds. */
typedef struct cfg_info {
    char *name; /* the file, for messages */
    char *base; /* directory prefix ending in '/', for relative names; NULL: none */
    /* The defaults the getters returned for absent members, by the object's
     * path, then the key: {"peft[0]": {"r": 8}} (vp_cfg_to_json_resolved).
     * The first read of a key is kept. NULL until one is recorded. */
    cJSON *used;
} cfg_info;

struct vp_config {
    cJSON *json;          /* the value; the root owns the whole document */
    cfg_info *info;       /* shared; owned by the root */
    const char *key;      /* json->string for members; NULL for elements and the root */
    char *path;           /* "" for the root */
    char *file;           /* strings only: base + value for relative names, else NULL */
    vp_config *kids;      /* elements or members, in order */
    int n_kids;
    bool is_root;
};

/* ---- small strings -------------------------------------------------------- */

static char *dup_str(const char *s)
{
    size_t n = strlen(s) + 1;
    char *p = malloc(n);
    return p ? memcpy(p, s, n) : NULL;
}

/* The length of the valid UTF-8 sequence at p (1 to 4), or 0 when the
 * bytes there are not one (a stray continuation byte, a truncated or
 * overlong sequence, a surrogate, beyond U+10FFFF). */
static int utf8_len(const unsigned char *p)
{
    if (p[0] < 0x80)
        return 1;
    int n = p[0] >= 0xf0 && p[0] <= 0xf4 ? 4 : p[0] >= 0xe0 ? 3 : p[0] >= 0xc2 && p[0] < 0xe0 ? 2 : 0;
    for (int i = 1; i < n; i++)
        if ((p[i] & 0xc0) != 0x80)
            return 0;
    if ((n == 3 && p[0] == 0xe0 && p[1] < 0xa0) || (n == 3 && p[0] == 0xed && p[1] >= 0xa0) ||
        (n == 4 && p[0] == 0xf0 && p[1] < 0x90) || (n == 4 && p[0] == 0xf4 && p[1] >= 0x90))
        return 0;
    return n;
}

/* Keys that would make a dotted path ambiguous (or unreadable) are written
 * as ["..."], which vp_cfg_set also accepts; so are keys that are not valid
 * UTF-8, whose stray bytes show as \xNN rather than raw. */
static bool key_needs_quotes(const char *k)
{
    if (!*k)
        return true;
    for (const unsigned char *p = (const unsigned char *)k; *p; p++) {
        if (*p < 0x20 || *p == 0x7f || strchr(".[]=\"\\", *p))
            return true;
        int n = utf8_len(p);
        if (!n)
            return true;
        p += n - 1;
    }
    return false;
}

static void sb_key(vp_strbuf *b, bool first, const char *key)
{
    if (!key_needs_quotes(key)) {
        if (!first)
            vp_strbuf_str(b, ".");
        vp_strbuf_str(b, key);
        return;
    }
    vp_strbuf_str(b, "[\"");
    for (const unsigned char *p = (const unsigned char *)key; *p; p++) {
        char esc[8];
        if (*p == '"' || *p == '\\') {
            esc[0] = '\\';
            esc[1] = (char)*p;
            vp_strbuf_add(b, esc, 2);
        } else if (*p < 0x20 || *p == 0x7f) {
            snprintf(esc, sizeof esc, "\\u%04x", *p);
            vp_strbuf_str(b, esc);
        } else if (*p >= 0x80 && !utf8_len(p)) {
            snprintf(esc, sizeof esc, "\\x%02x", *p);
            vp_strbuf_str(b, esc);
        } else {
            int n = utf8_len(p);
            vp_strbuf_add(b, (const char *)p, (size_t)n);
            p += n - 1;
        }
    }
    vp_strbuf_str(b, "\"]");
}

/* parent's path extended by a member key; NULL when out of memory. */
static char *path_member(const char *parent, const char *key)
{
    vp_strbuf b = {0};
    vp_strbuf_str(&b, parent);
    sb_key(&b, !*parent, key);
    return vp_strbuf_done(&b);
}

static char *path_index(const char *parent, int i)
{
    char idx[24];
    snprintf(idx, sizeof idx, "[%d]", i);
    vp_strbuf b = {0};
    vp_strbuf_str(&b, parent);
    vp_strbuf_str(&b, idx);
    return vp_strbuf_done(&b);
}

/* ---- messages ------------------------------------------------------------- */

static const char *type_word(const cJSON *j)
{
    if (cJSON_IsObject(j)) return "an object";
    if (cJSON_IsArray(j)) return "an array";
    if (cJSON_IsString(j)) return "a string";
    if (cJSON_IsNumber(j)) return "a number";
    if (cJSON_IsBool(j)) return "a boolean";
    if (cJSON_IsNull(j)) return "null";
    return "an unknown value";
}

/* The shortest %g form that reads back as d ("2.5", not "2.5000000000000000"). */
static void fmt_num(double d, char buf[40])
{
    for (int prec = 1; prec <= 17; prec++) {
        snprintf(buf, 40, "%.*g", prec, d);
        if (strtod(buf, NULL) == d)
            return;
    }
}

/* "<prefix>: <path>: <what>" ("<prefix>: <what>" for the empty path). */
static vp_status loc_error(vp_status st, const char *prefix, const char *path, const char *what)
{
    if (path && *path)
        return vp_error_set(st, "%s: %s: %s", prefix, path, what);
    return vp_error_set(st, "%s: %s", prefix, what);
}

static vp_status node_error(const vp_config *c, const char *fmt, ...) VP_PRINTF(2, 3);
static vp_status node_error(const vp_config *c, const char *fmt, ...)
{
    char what[768];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(what, sizeof what, fmt, ap);
    va_end(ap);
    return loc_error(VP_ERR_CONFIG, c->info->name, c->path, what);
}

static vp_status type_error(const vp_config *c, const char *expected)
{
    return node_error(c, "expected %s, got %s", expected, type_word(c->json));
}

/* ---- the wrapper tree ----------------------------------------------------- */

static void node_clear(vp_config *c)
{
    for (int i = 0; i < c->n_kids; i++)
        node_clear(&c->kids[i]);
    free(c->kids);
    free(c->path);
    free(c->file);
    c->kids = NULL;
    c->n_kids = 0;
    c->path = NULL;
    c->file = NULL;
}

static vp_status nomem(void) { return vp_error_set(VP_ERR_NOMEM, "config: out of memory"); }

/* Wrap j (path already set in c) and everything below it. Refuses what JSON
 * allows but a config must not hold: duplicate keys (which one would win is
 * an accident of the parser) and numbers beyond double range (parsed as
 * infinity). prefix names the source in messages. On failure c keeps what
 * was built, for node_clear(). The parser's nesting limit bounds the
 * recursion. */
static vp_status build(vp_config *c, cJSON *j, cfg_info *info, const char *prefix)
{
    c->json = j;
    c->info = info;
    if (cJSON_IsNumber(j) && !isfinite(j->valuedouble))
        return loc_error(VP_ERR_CONFIG, prefix, c->path, "number out of range");
    if (cJSON_IsString(j)) {
        const char *s = j->valuestring;
        if (info->base && s[0] && s[0] != '/') {
            vp_strbuf b = {0};
            vp_strbuf_str(&b, info->base);
            vp_strbuf_str(&b, s);
            if (!(c->file = vp_strbuf_done(&b)))
                return nomem();
        }
        return VP_OK;
    }
    if (!cJSON_IsArray(j) && !cJSON_IsObject(j))
        return VP_OK;
    int n = cJSON_GetArraySize(j);
    if (n == 0)
        return VP_OK;
    if (!(c->kids = calloc((size_t)n, sizeof *c->kids)))
        return nomem();
    bool object = cJSON_IsObject(j);
    int i = 0;
    for (cJSON *k = j->child; k; k = k->next, i++) {
        vp_config *kid = &c->kids[i];
        c->n_kids = i + 1;
        if (object) {
            kid->key = k->string ? k->string : "";
            kid->path = path_member(c->path, kid->key);
        } else {
            kid->path = path_index(c->path, i);
        }
        if (!kid->path)
            return nomem();
        if (object)
            for (int p = 0; p < i; p++)
                if (!strcmp(c->kids[p].key, kid->key))
                    return loc_error(VP_ERR_CONFIG, prefix, kid->path, "duplicate key");
        vp_status st = build(kid, k, info, prefix);
        if (st)
            return st;
    }
    return VP_OK;
}

/* ---- parsing -------------------------------------------------------------- */

/* "<name>:<line>:<col>: JSON syntax error ..." for the error at byte pos
 * of text; col counts UTF-8 characters, as editors do. */
static vp_status syntax_error(const char *name, const char *text, size_t len, size_t pos,
                              const char *why)
{
    unsigned long line = 1, col = 1;
    for (size_t i = 0; i < pos; i++) {
        if (text[i] == '\n') {
            line++;
            col = 1;
        } else if (((unsigned char)text[i] & 0xc0) != 0x80) {
            col++;
        }
    }
    if (why)
        return vp_error_set(VP_ERR_CONFIG, "%s:%lu:%lu: JSON syntax error: %s", name, line, col,
                            why);
    if (pos >= len)
        return vp_error_set(VP_ERR_CONFIG, "%s:%lu:%lu: JSON syntax error at end of input", name,
                            line, col);
    /* Up to 20 characters of the rest of the line, never cutting one in two. */
    char near[100];
    size_t n = 0, chars = 0;
    for (size_t i = pos; i < len && n < sizeof near - 8; i++) {
        unsigned char ch = (unsigned char)text[i];
        bool lead = (ch & 0xc0) != 0x80;
        if (ch == '\n' || ch == '\r' || (lead && chars == 20))
            break;
        if (lead)
            chars++;
        near[n++] = ch == '\t' || ch < 0x20 || ch == 0x7f ? ' ' : (char)ch;
    }
    near[n] = '\0';
    if (!n)
        return vp_error_set(VP_ERR_CONFIG, "%s:%lu:%lu: JSON syntax error at end of line", name,
                            line, col);
    return vp_error_set(VP_ERR_CONFIG, "%s:%lu:%lu: JSON syntax error near '%s'", name, line, col,
                        near);
}

static void info_free(cfg_info *info)
{
    if (!info)
        return;
    free(info->name);
    free(info->base);
    cJSON_Delete(info->used);
    free(info);
}

static cfg_info *info_new(const char *name)
{
    cfg_info *info = calloc(1, sizeof *info);
    if (!info)
        return NULL;
    if (!(info->name = dup_str(name ? name : "<config>"))) {
        free(info);
        return NULL;
    }
    const char *slash = name ? strrchr(name, '/') : NULL;
    if (slash) {
        size_t n = (size_t)(slash - name) + 1;
        if (!(info->base = malloc(n + 1))) {
            info_free(info);
            return NULL;
        }
        memcpy(info->base, name, n);
        info->base[n] = '\0';
    }
    return info;
}

vp_status vp_cfg_parse(const char *text, size_t len, const char *name, vp_config **root)
{
    VP_ASSERT(root && (text || !len));
    *root = NULL;
    const char *shown = name ? name : "<config>";
    if (len >= 3 && !memcmp(text, "\xef\xbb\xbf", 3)) {
        text += 3;
        len -= 3;
    }
    const char *nul = len ? memchr(text, '\0', len) : NULL;
    if (nul)
        return syntax_error(shown, text, len, (size_t)(nul - text), "NUL byte");
    /* cJSON wants the terminating NUL inside the length when it must check
     * that nothing follows the value. */
    char *buf = malloc(len + 1);
    if (!buf)
        return nomem();
    if (len)
        memcpy(buf, text, len);
    buf[len] = '\0';
    const char *end = NULL;
    cJSON *doc = cJSON_ParseWithLengthOpts(buf, len + 1, &end, 1);
    if (!doc) {
        size_t pos = end && end >= buf ? (size_t)(end - buf) : 0;
        vp_status st = syntax_error(shown, buf, len, pos, NULL);
        free(buf);
        return st;
    }
    free(buf);
    if (!cJSON_IsObject(doc)) {
        vp_status st = vp_error_set(VP_ERR_CONFIG, "%s: expected an object at the top level, got %s",
                                    shown, type_word(doc));
        cJSON_Delete(doc);
        return st;
    }
    vp_config *c = calloc(1, sizeof *c);
    cfg_info *info = info_new(name);
    char *path = dup_str("");
    if (!c || !info || !path) {
        free(c);
        info_free(info);
        free(path);
        cJSON_Delete(doc);
        return nomem();
    }
    c->is_root = true;
    c->path = path;
    vp_status st = build(c, doc, info, info->name);
    if (st) {
        node_clear(c);
        free(c);
        info_free(info);
        cJSON_Delete(doc);
        return st;
    }
    *root = c;
    return VP_OK;
}

vp_status vp_cfg_load(const char *path, vp_config **root)
{
    VP_ASSERT(path && root);
    *root = NULL;
    FILE *f;
    vp_status fst = vp_file_fopen_read(path, &f); /* a FIFO would block: refused */
    if (fst)
        return fst;
    /* Read to the end rather than trusting the size: it may change. */
    char *text = NULL;
    size_t len = 0, cap = 0;
    for (;;) {
        if (len == cap) {
            size_t ncap = cap ? 2 * cap : 4096;
            char *p = realloc(text, ncap);
            if (!p) {
                free(text);
                fclose(f);
                return nomem();
            }
            text = p;
            cap = ncap;
        }
        size_t got = fread(text + len, 1, cap - len, f);
        len += got;
        if (got == 0 || len < cap) {
            if (ferror(f)) {
                int err = errno;
                free(text);
                fclose(f);
                return vp_error_set(VP_ERR_IO, "%s: cannot read: %s", path, strerror(err));
            }
            if (feof(f))
                break;
        }
    }
    fclose(f);
    vp_status st = vp_cfg_parse(text, len, path, root);
    free(text);
    return st;
}

void vp_cfg_free(vp_config *root)
{
    if (!root)
        return;
    VP_ASSERT(root->is_root);
    node_clear(root);
    cJSON_Delete(root->json);
    info_free(root->info);
    free(root);
}

const char *vp_cfg_file_name(const vp_config *c) { return c ? c->info->name : NULL; }

/* ---- accessors ------------------------------------------------------------ */

static const vp_config *find(const vp_config *c, const char *key)
{
    if (!cJSON_IsObject(c->json))
        return NULL;
    for (int i = 0; i < c->n_kids; i++)
        if (!strcmp(c->kids[i].key, key))
            return &c->kids[i];
    return NULL;
}

/* The node a getter reads: c itself for key NULL, else member key of
 * object c; *node NULL when absent. A key on a non-object is an error. */
static vp_status member(const vp_config *c, const char *key, const vp_config **node)
{
    *node = NULL;
    if (!c)
        return VP_OK;
    if (!key) {
        *node = c;
        return VP_OK;
    }
    if (!cJSON_IsObject(c->json))
        return type_error(c, "an object");
    *node = find(c, key);
    return VP_OK;
}

vp_cfg_type vp_cfg_type_of(const vp_config *c, const char *key)
{
    const vp_config *m = vp_cfg_get(c, key);
    if (!m)
        return VP_CFG_ABSENT;
    const cJSON *j = m->json;
    if (cJSON_IsNull(j)) return VP_CFG_NULL;
    if (cJSON_IsBool(j)) return VP_CFG_BOOL;
    if (cJSON_IsNumber(j)) return VP_CFG_NUMBER;
    if (cJSON_IsString(j)) return VP_CFG_STRING;
    if (cJSON_IsArray(j)) return VP_CFG_ARRAY;
    return VP_CFG_OBJECT;
}

/* Records that c's absent member key read as v (taken over; freed when
 * it is not kept). Out of memory, the record is dropped: it only adds
 * detail to derived files. */
static void used_default(const vp_config *c, const char *key, cJSON *v)
{
    cfg_info *info = c && key ? c->info : NULL;
    if (info && !info->used)
        info->used = cJSON_CreateObject();
    cJSON *at = info && info->used ? cJSON_GetObjectItemCaseSensitive(info->used, c->path) : NULL;
    if (info && info->used && !at && (at = cJSON_CreateObject()) &&
        !cJSON_AddItemToObject(info->used, c->path, at)) {
        cJSON_Delete(at);
        at = NULL;
    }
    if (!v || !at || cJSON_GetObjectItemCaseSensitive(at, key) || !cJSON_AddItemToObject(at, key, v))
        cJSON_Delete(v);
}

vp_status vp_cfg_int(const vp_config *c, const char *key, int64_t def, int64_t *out)
{
    VP_ASSERT(out);
    const vp_config *m;
    vp_status st = member(c, key, &m);
    if (st)
        return st;
    if (!m) {
        *out = def;
        used_default(c, key, cJSON_CreateNumber((double)def));
        return VP_OK;
    }
    if (!cJSON_IsNumber(m->json))
        return type_error(m, "an integer");
    double d = m->json->valuedouble;
    /* 2^63 is exact as a double; the cast is defined only inside the range. */
    if (!(d >= -0x1p63 && d < 0x1p63) || (double)(int64_t)d != d) {
        char num[40];
        fmt_num(d, num);
        return node_error(m, "expected an integer, got %s", num);
    }
    *out = (int64_t)d;
    return VP_OK;
}

vp_status vp_cfg_float(const vp_config *c, const char *key, double def, double *out)
{
    VP_ASSERT(out);
    const vp_config *m;
    vp_status st = member(c, key, &m);
    if (st)
        return st;
    if (!m) {
        *out = def;
        used_default(c, key, cJSON_CreateNumber(def));
        return VP_OK;
    }
    if (!cJSON_IsNumber(m->json))
        return type_error(m, "a number");
    *out = m->json->valuedouble;
    return VP_OK;
}

vp_status vp_cfg_bool(const vp_config *c, const char *key, bool def, bool *out)
{
    VP_ASSERT(out);
    const vp_config *m;
    vp_status st = member(c, key, &m);
    if (st)
        return st;
    if (!m) {
        *out = def;
        used_default(c, key, cJSON_CreateBool(def));
        return VP_OK;
    }
    if (!cJSON_IsBool(m->json))
        return type_error(m, "a boolean");
    *out = cJSON_IsTrue(m->json);
    return VP_OK;
}

vp_status vp_cfg_string(const vp_config *c, const char *key, const char *def, const char **out)
{
    VP_ASSERT(out);
    const vp_config *m;
    vp_status st = member(c, key, &m);
    if (st)
        return st;
    if (!m) {
        *out = def;
        if (def)
            used_default(c, key, cJSON_CreateString(def));
        return VP_OK;
    }
    if (!cJSON_IsString(m->json))
        return type_error(m, "a string");
    *out = m->json->valuestring;
    return VP_OK;
}

vp_status vp_cfg_file(const vp_config *c, const char *key, const char **out)
{
    VP_ASSERT(out);
    const vp_config *m;
    vp_status st = member(c, key, &m);
    if (st)
        return st;
    if (!m) {
        *out = NULL;
        return VP_OK;
    }
    if (!cJSON_IsString(m->json))
        return type_error(m, "a file name");
    if (!m->json->valuestring[0])
        return node_error(m, "expected a file name, got an empty string");
    *out = m->file ? m->file : m->json->valuestring;
    return VP_OK;
}

const vp_config *vp_cfg_get(const vp_config *c, const char *key)
{
    if (!c || !key)
        return c;
    return find(c, key);
}

int vp_cfg_len(const vp_config *c)
{
    if (!c || !(cJSON_IsArray(c->json) || cJSON_IsObject(c->json)))
        return -1;
    return c->n_kids;
}

const vp_config *vp_cfg_at(const vp_config *c, int i)
{
    if (!c || i < 0 || i >= c->n_kids)
        return NULL;
    return &c->kids[i];
}

const char *vp_cfg_key(const vp_config *c) { return c ? c->key : NULL; }

const char *vp_cfg_path(const vp_config *c) { return c ? c->path : ""; }

/* Levenshtein distance with ASCII case folded, capped: anything above cap
 * is reported as cap + 1 (only small distances make a suggestion). */
static size_t edit_distance(const char *a, const char *b, size_t cap)
{
    size_t la = strlen(a), lb = strlen(b);
    if ((la > lb ? la - lb : lb - la) > cap || lb > 255)
        return cap + 1;
    size_t row[256], prev;
    for (size_t j = 0; j <= lb; j++)
        row[j] = j;
    for (size_t i = 1; i <= la; i++) {
        prev = row[0];
        row[0] = i;
        for (size_t j = 1; j <= lb; j++) {
            char ca = a[i - 1], cb = b[j - 1];
            if (ca >= 'A' && ca <= 'Z') ca = (char)(ca - 'A' + 'a');
            if (cb >= 'A' && cb <= 'Z') cb = (char)(cb - 'A' + 'a');
            size_t best = prev + (ca != cb);
            if (row[j] + 1 < best) best = row[j] + 1;
            if (row[j - 1] + 1 < best) best = row[j - 1] + 1;
            prev = row[j];
            row[j] = best;
        }
    }
    return row[lb] > cap ? cap + 1 : row[lb];
}

vp_status vp_cfg_check_keys(const vp_config *c, const char *const *known, uint32_t n)
{
    VP_ASSERT(known || !n);
    if (!c)
        return VP_OK;
    if (!cJSON_IsObject(c->json))
        return type_error(c, "an object");
    for (int i = 0; i < c->n_kids; i++) {
        const vp_config *m = &c->kids[i];
        bool ok = false;
        for (uint32_t k = 0; k < n && !ok; k++)
            ok = known[k] && !strcmp(known[k], m->key);
        if (ok)
            continue;
        const char *best = NULL;
        size_t best_d = 3;
        bool tie = false;
        for (uint32_t k = 0; k < n; k++) {
            if (!known[k])
                continue;
            size_t d = edit_distance(m->key, known[k], 2);
            if (d < best_d) {
                best = known[k];
                best_d = d;
                tie = false;
            } else if (d == best_d && best && strcmp(best, known[k])) {
                tie = true;
            }
        }
        /* A one-letter key is within distance 1 of every other one: only
         * suggest a key nearer than its own length. */
        if (best && !tie && best_d < strlen(best))
            return node_error(m, "unknown field, did you mean '%s'?", best);
        vp_strbuf b = {0};
        vp_strbuf_str(&b, "unknown field (expected ");
        vp_strbuf_str(&b, n ? "one of: " : "no fields");
        for (uint32_t k = 0, first = 1; k < n; k++) {
            if (!known[k])
                continue;
            if (!first)
                vp_strbuf_str(&b, ", ");
            vp_strbuf_str(&b, known[k]);
            first = 0;
        }
        vp_strbuf_str(&b, ")");
        char *what = vp_strbuf_done(&b);
        if (!what)
            return nomem();
        vp_status st = loc_error(VP_ERR_CONFIG, c->info->name, m->path, what);
        free(what);
        return st;
    }
    return VP_OK;
}

vp_status vp_cfg_fail(const vp_config *c, const char *key, const char *fmt, ...)
{
    char what[768];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(what, sizeof what, fmt, ap);
    va_end(ap);
    char *path = key ? path_member(c ? c->path : "", key) : NULL;
    if (key && !path)
        return nomem();
    const char *where = path ? path : c ? c->path : "";
    vp_status st = c ? loc_error(VP_ERR_CONFIG, c->info->name, where, what)
                 : *where ? vp_error_set(VP_ERR_CONFIG, "%s: %s", where, what)
                          : vp_error_set(VP_ERR_CONFIG, "%s", what);
    free(path);
    return st;
}

/* ---- overrides ------------------------------------------------------------ */

typedef struct seg {
    char *key; /* a member key (owned), or NULL for an index */
    int index;
} seg;

static void segs_free(seg *s, int n)
{
    for (int i = 0; i < n; i++)
        free(s[i].key);
    free(s);
}

/* Parse the path of an assignment up to its '=' into segments; *value
 * points after the '='. Errors name the assignment and a column. */
static vp_status parse_path(const char *a, seg **out, int *n_out, const char **value)
{
    *out = NULL;
    *n_out = 0;
    seg *s = NULL;
    int n = 0, cap = 0;
    const char *p = a;
    vp_status st = VP_OK;
    const char *why = NULL;
    for (;;) {
        if (n == cap) {
            cap = cap ? 2 * cap : 8;
            seg *ns = realloc(s, (size_t)cap * sizeof *ns);
            if (!ns) {
                st = nomem();
                goto fail;
            }
            s = ns;
        }
        seg *g = &s[n];
        g->key = NULL;
        g->index = -1;
        if (*p == '[' && p[1] == '"') {
            /* ["key"]: the quoted part is a JSON string, escapes and all. */
            const char *q = p + 2;
            while (*q && *q != '"')
                q += *q == '\\' && q[1] ? 2 : 1;
            if (*q != '"' || q[1] != ']') {
                why = "expected a quoted key and ']'";
                goto bad;
            }
            cJSON *js = cJSON_ParseWithLength(p + 1, (size_t)(q + 1 - (p + 1)));
            if (!cJSON_IsString(js)) {
                cJSON_Delete(js);
                why = "bad quoted key";
                goto bad;
            }
            g->key = dup_str(js->valuestring);
            cJSON_Delete(js);
            if (!g->key) {
                st = nomem();
                goto fail;
            }
            p = q + 2;
        } else if (*p == '[') {
            if (!n) {
                why = "the top level is an object: expected a key";
                goto bad;
            }
            const char *q = p + 1;
            long v = 0;
            while (*q >= '0' && *q <= '9' && v <= 100000000)
                v = v * 10 + (*q++ - '0');
            if (q == p + 1 || *q != ']' || v > 100000000) {
                why = "expected an index and ']'";
                goto bad;
            }
            g->index = (int)v;
            p = q + 1;
        } else {
            if (n) {
                if (*p != '.') {
                    why = "expected '.', '[' or '='";
                    goto bad;
                }
                p++;
                if (*p == '[' && p[1] == '"') /* a.["b"] is as good as a["b"] */
                    continue;
            }
            size_t k = strcspn(p, ".[]=\"");
            if (!k) {
                why = "expected a key";
                goto bad;
            }
            if (!(g->key = malloc(k + 1))) {
                st = nomem();
                goto fail;
            }
            memcpy(g->key, p, k);
            g->key[k] = '\0';
            p += k;
        }
        n++;
        if (*p == '=') {
            *value = p + 1;
            *out = s;
            *n_out = n;
            return VP_OK;
        }
        if (!*p) {
            st = vp_error_set(VP_ERR_CONFIG, "override '%s': expected <path>=<value>", a);
            goto fail;
        }
    }
bad:
    if (!*p && !n)
        st = vp_error_set(VP_ERR_CONFIG, "override '%s': expected <path>=<value>", a);
    else
        st = vp_error_set(VP_ERR_CONFIG, "override '%s': column %d: %s", a, (int)(p - a) + 1, why);
fail:
    segs_free(s, n); /* the segment being parsed never owns a key here */
    return st;
}

/* A new empty container for what the path does next with it. */
static cJSON *container_for(const seg *next)
{
    return next->key ? cJSON_CreateObject() : cJSON_CreateArray();
}

/* Walk s[0..n) from doc (a copy, so failure leaves the tree alone),
 * creating what is missing, and put val at the end. Takes val. */
static vp_status apply(const char *a, cJSON *doc, const seg *s, int n, cJSON *val)
{
    cJSON *cur = doc;
    char *path = dup_str("");
    vp_status st = VP_OK;
    if (!path) {
        cJSON_Delete(val);
        return nomem();
    }
    for (int i = 0; i < n; i++) {
        bool last = i == n - 1;
        cJSON *item = NULL, *add = NULL;
        if (s[i].key) {
            if (!cJSON_IsObject(cur)) {
                st = vp_error_set(VP_ERR_CONFIG, "override '%s': %s: expected an object, got %s",
                                  a, path, type_word(cur));
                break;
            }
            item = cJSON_GetObjectItemCaseSensitive(cur, s[i].key);
            char *np = path_member(path, s[i].key);
            free(path);
            if (!(path = np)) {
                st = nomem();
                break;
            }
        } else {
            if (!cJSON_IsArray(cur)) {
                st = vp_error_set(VP_ERR_CONFIG, "override '%s': %s: expected an array, got %s",
                                  a, path, type_word(cur));
                break;
            }
            int len = cJSON_GetArraySize(cur);
            if (s[i].index > len) {
                st = vp_error_set(VP_ERR_CONFIG,
                                  "override '%s': %s: index %d is past the end (length %d)", a,
                                  path, s[i].index, len);
                break;
            }
            item = cJSON_GetArrayItem(cur, s[i].index);
            char *np = path_index(path, s[i].index);
            free(path);
            if (!(path = np)) {
                st = nomem();
                break;
            }
        }
        if (!last && item) {
            cur = item;
            continue;
        }
        if (!last && !s[i + 1].key && s[i + 1].index != 0) {
            st = vp_error_set(VP_ERR_CONFIG, "override '%s': %s: not found (only [0] creates an array)",
                              a, path);
            break;
        }
        add = last ? val : container_for(&s[i + 1]);
        if (last)
            val = NULL;
        if (!add) {
            st = nomem();
            break;
        }
        bool done;
        if (item && s[i].key)
            done = cJSON_ReplaceItemInObjectCaseSensitive(cur, s[i].key, add);
        else if (item)
            done = cJSON_ReplaceItemInArray(cur, s[i].index, add);
        else if (s[i].key)
            done = cJSON_AddItemToObject(cur, s[i].key, add);
        else
            done = cJSON_AddItemToArray(cur, add);
        if (!done) {
            cJSON_Delete(add);
            st = nomem();
            break;
        }
        cur = add;
    }
    cJSON_Delete(val);
    free(path);
    return st;
}

vp_status vp_cfg_set(vp_config *root, const char *assignment)
{
    VP_ASSERT(root && root->is_root && assignment);
    seg *s;
    int n;
    const char *value = NULL;
    vp_status st = parse_path(assignment, &s, &n, &value);
    if (st)
        return st;
    const char *end = NULL;
    cJSON *val = cJSON_ParseWithOpts(value, &end, 1);
    if (!val)
        val = cJSON_CreateString(value);
    cJSON *doc = cJSON_Duplicate(root->json, 1);
    if (!val || !doc) {
        cJSON_Delete(val);
        cJSON_Delete(doc);
        segs_free(s, n);
        return nomem();
    }
    st = apply(assignment, doc, s, n, val);
    segs_free(s, n);
    if (st) {
        cJSON_Delete(doc);
        return st;
    }
    /* Build the new wrappers beside the old ones and swap only when they are
     * complete: a failure (a duplicate key inside the value) changes nothing. */
    char prefix[600];
    snprintf(prefix, sizeof prefix, "override '%s'", assignment);
    vp_config fresh = {.is_root = true, .path = dup_str("")};
    st = fresh.path ? build(&fresh, doc, root->info, prefix) : nomem();
    if (st) {
        node_clear(&fresh);
        cJSON_Delete(doc);
        return st;
    }
    node_clear(root);
    cJSON_Delete(root->json);
    root->json = doc;
    root->path = fresh.path;
    root->kids = fresh.kids;
    root->n_kids = fresh.n_kids;
    return VP_OK;
}

char *vp_cfg_to_json(const vp_config *c)
{
    return c ? cJSON_Print(c->json) : NULL;
}

/* Adds to j (a copy of node c's value) the defaults read at c and in the
 * objects below it. */
static bool add_used(cJSON *j, const vp_config *c)
{
    if (!cJSON_IsObject(c->json) && !cJSON_IsArray(c->json))
        return true;
    const cJSON *at = c->info->used ? cJSON_GetObjectItemCaseSensitive(c->info->used, c->path)
                                    : NULL;
    const cJSON *v;
    cJSON_ArrayForEach(v, at) {
        cJSON *d = cJSON_Duplicate(v, true);
        if (!d || !cJSON_AddItemToObject(j, v->string, d)) {
            cJSON_Delete(d);
            return false;
        }
    }
    cJSON *kid = j->child; /* the copy's members, in c's order, before the added ones */
    for (int i = 0; i < c->n_kids; i++, kid = kid->next)
        if (!add_used(kid, &c->kids[i]))
            return false;
    return true;
}

char *vp_cfg_to_json_resolved(const vp_config *c)
{
    if (!c)
        return NULL;
    cJSON *j = cJSON_Duplicate(c->json, true);
    char *out = j && add_used(j, c) ? cJSON_Print(j) : NULL;
    cJSON_Delete(j);
    return out;
}
