/*
 * Site selectors: how a PEFT method's config picks sites, as Hugging Face
 * PEFT's target_modules does. A string is one regular expression that must
 * match a whole path (re.fullmatch there; POSIX extended syntax here, so
 * no \d or (?:...)); a list holds names or globs, each matching a whole
 * path or its last dot-separated components ("qkv" and "attn.*" both match
 * "backbone.blocks.0.attn.qkv", as HF's `key.endswith("." + target)`).
 */
#include <fnmatch.h>
#include <regex.h>
#include <stdlib.h>
#include <string.h>

#include "config/config.h"
#include "model/select.h"
#include "util/error.h"

struct vp_selector {
    bool all;
    bool regex;
    regex_t re;
    char **globs;
    uint32_t n;
};

void vp_selector_destroy(vp_selector *s)
{
    if (!s)
        return;
    if (s->regex)
        regfree(&s->re);
    for (uint32_t i = 0; i < s->n; i++)
        free(s->globs[i]);
    free(s->globs);
    free(s);
}

static vp_status add_glob(vp_selector *s, const char *g)
{
    size_t len = strlen(g) + 1;
    char *copy = malloc(len);
    if (!copy)
        return vp_error_set(VP_ERR_NOMEM, "out of host memory");
    memcpy(copy, g, len);
    s->globs[s->n++] = copy;
    return VP_OK;
}

vp_status vp_selector_create(const vp_config *c, const char *key, const char *const *defaults,
                             uint32_t n, vp_selector **out)
{
    *out = NULL;
    vp_selector *s = calloc(1, sizeof *s);
    if (!s)
        return vp_error_set(VP_ERR_NOMEM, "out of host memory");
    vp_status st = VP_OK;
    vp_cfg_type t = vp_cfg_type_of(c, key);
    if (t == VP_CFG_ABSENT) {
        s->all = n == 0;
        s->globs = n ? calloc(n, sizeof *s->globs) : NULL;
        if (n && !s->globs)
            st = vp_error_set(VP_ERR_NOMEM, "out of host memory");
        for (uint32_t i = 0; !st && i < n; i++)
            st = add_glob(s, defaults[i]);
    } else if (t == VP_CFG_STRING) {
        const char *re;
        st = vp_cfg_string(c, key, NULL, &re);
        size_t len = st ? 0 : strlen(re);
        char *full = st ? NULL : malloc(len + 5);
        if (!st && !full)
            st = vp_error_set(VP_ERR_NOMEM, "out of host memory");
        if (!st) {
            memcpy(full, "^(", 2);
            memcpy(full + 2, re, len);
            memcpy(full + 2 + len, ")$", 3);
            int rc = regcomp(&s->re, full, REG_EXTENDED | REG_NOSUB);
            if (rc) {
                char why[128];
                regerror(rc, &s->re, why, sizeof why);
                st = vp_cfg_fail(c, key, "\"%s\" is not a POSIX extended regular expression: %s",
                                 re, why);
            } else {
                s->regex = true;
            }
            free(full);
        }
    } else if (t == VP_CFG_ARRAY) {
        const vp_config *arr = vp_cfg_get(c, key);
        int len = vp_cfg_len(arr);
        if (len == 0)
            st = vp_cfg_fail(c, key, "is empty: it selects no site");
        s->globs = len > 0 ? calloc((size_t)len, sizeof *s->globs) : NULL;
        if (len > 0 && !s->globs)
            st = vp_error_set(VP_ERR_NOMEM, "out of host memory");
        for (int i = 0; !st && i < len; i++) {
            const char *g;
            st = vp_cfg_string(vp_cfg_at(arr, i), NULL, NULL, &g);
            if (!st && !g[0])
                st = vp_cfg_fail(vp_cfg_at(arr, i), NULL, "an empty pattern");
            if (!st)
                st = add_glob(s, g);
        }
    } else {
        st = vp_cfg_fail(c, key, "expected a list of names or globs, or one regular expression "
                         "string");
    }
    if (st) {
        vp_selector_destroy(s);
        return st;
    }
    *out = s;
    return VP_OK;
}

bool vp_selector_match(const vp_selector *s, const char *path)
{
    if (!s || !path)
        return false;
    if (s->all)
        return true;
    if (s->regex)
        return regexec(&s->re, path, 0, NULL, 0) == 0;
    for (uint32_t i = 0; i < s->n; i++) {
        if (!fnmatch(s->globs[i], path, 0))
            return true;
        for (const char *p = strchr(path, '.'); p; p = strchr(p + 1, '.'))
            if (!fnmatch(s->globs[i], p + 1, 0))
                return true;
    }
    return false;
}
