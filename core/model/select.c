/*
 * Site selectors: how a PEFT method's config picks sites, as Hugging Face
 * PEFT's target_modules does. A string is one regular expression that must
 * match a whole path (re.fullmatch there; POSIX extended syntax here, so
 * no \d or (?:...)); a list holds names or globs, each matching a whole
 * path or its last dot-separated components ("qkv" and "attn.*" both match
 * "backbone.blocks.0.attn.qkv", as HF's `key.endswith("." + target)`).
 *
 * vp_selector_check_modules holds a model to HF PEFT's reading of
 * target_modules: a name or regex that HF would apply to a layer vpeft
 * has no linear site for (a Conv2d, an Embedding, a packed
 * MultiheadAttention, a shared prediction layer) is an error, not a
 * silently smaller selection.
 */
#include <fnmatch.h>
#include <regex.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "config/config.h"
#include "model/build.h"
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

/* ---- what HF PEFT would adapt and vpeft cannot ----------------------------------------- */

/* A list entry with glob characters is vpeft's own form; HF PEFT reads it
 * literally (a module whose name contains '*' does not exist). */
static bool hf_form(const char *t) { return !strpbrk(t, "*?["); }

/* HF PEFT's check_target_module_exists for one module name: a string is
 * re.fullmatch (POSIX here, as vp_selector_match), a list entry matches
 * the whole name or its end after a dot. Only entries in HF's form. */
static bool hf_selects(const vp_config *c, const vp_selector *regex, const char *path)
{
    if (regex)
        return vp_selector_match(regex, path);
    const vp_config *arr = vp_cfg_get(c, "target_modules");
    size_t n = strlen(path);
    for (int i = 0; i < vp_cfg_len(arr); i++) {
        const char *t = NULL;
        if (vp_cfg_string(vp_cfg_at(arr, i), NULL, NULL, &t) || !t || !hf_form(t))
            continue;
        size_t k = strlen(t);
        if (!strcmp(path, t) || (n > k && path[n - k - 1] == '.' && !strcmp(path + n - k, t)))
            return true;
    }
    return false;
}

static bool ends_with(const char *s, const char *suffix, size_t *stem)
{
    size_t n = strlen(s), k = strlen(suffix);
    *stem = n - k;
    return n > k && !strcmp(s + n - k, suffix);
}

vp_status vp_selector_check_modules(const vp_config *entry, const vp_build *b)
{
    vp_cfg_type t = vp_cfg_type_of(entry, "target_modules");
    const char *s = NULL;
    if (t == VP_CFG_STRING && !vp_cfg_string(entry, "target_modules", NULL, &s) &&
        !strcmp(s, "all-linear"))
        return VP_OK; /* vpeft's all-linear is its linear sites: docs/lora.md */
    if (t != VP_CFG_STRING && t != VP_CFG_ARRAY)
        return VP_OK;
    vp_selector *regex = NULL, *exclude = NULL, *any = NULL;
    vp_status st = t == VP_CFG_STRING ? vp_selector_create(entry, "target_modules", NULL, 0, &regex)
                                      : VP_OK;
    if (!st)
        st = vp_selector_create(entry, "target_modules", NULL, 0, &any);
    vp_cfg_type te = vp_cfg_type_of(entry, "exclude_modules");
    if (!st && (te == VP_CFG_STRING || te == VP_CFG_ARRAY))
        st = vp_selector_create(entry, "exclude_modules", NULL, 0, &exclude);
    /* The out_proj of a packed MultiheadAttention is a linear site, but
     * PyTorch never calls its forward: HF PEFT's LoRA there is ignored, so
     * vpeft's lora leaves it alone, and selecting it in any form is an
     * error here rather than a difference after loading into HF. */
    for (uint32_t j = 0; !st && j < vp_build_site_count(b); j++) {
        const vp_build_site *bs = vp_build_site_at(b, j);
        size_t stem;
        char packed[512];
        if (bs->kind != VP_SITE_LINEAR || !ends_with(bs->path, ".out_proj", &stem) ||
            stem + 16 > sizeof packed)
            continue;
        snprintf(packed, sizeof packed, "%.*s.in_proj_weight", (int)stem, bs->path);
        bool mha = false;
        for (uint32_t i = 0; !mha && i < vp_build_param_count(b); i++)
            mha = !vp_build_param_at(b, i)->owner &&
                  !strcmp(vp_gt_name(vp_build_param_at(b, i)->t), packed);
        if (mha && vp_selector_match(any, bs->path) &&
            !(exclude && vp_selector_match(exclude, bs->path)))
            st = vp_cfg_fail(entry, "target_modules", "selects %s, the out_proj of an "
                             "nn.MultiheadAttention: PyTorch never calls its forward, so HF "
                             "PEFT ignores LoRA there and vpeft does not adapt it; leave it out, "
                             "e.g. with exclude_modules: [\"cross_attn.out_proj\"]", bs->path);
    }
    /* Modules HF PEFT's LoRA takes (Linear, Embedding, ConvNd,
     * MultiheadAttention), known by their parameters: "<m>.weight" of 2 or
     * more dimensions, or a packed "<m>.in_proj_weight". */
    for (uint32_t i = 0; !st && i < vp_build_param_count(b); i++) {
        const vp_build_param *p = vp_build_param_at(b, i);
        const char *name = vp_gt_name(p->t);
        int nd = vp_gt_ndim(p->t);
        size_t stem;
        const char *kind;
        if (p->owner)
            continue;
        if (ends_with(name, ".in_proj_weight", &stem))
            kind = "an nn.MultiheadAttention (its q, k, v packed in in_proj_weight)";
        else if (ends_with(name, ".weight", &stem) && nd >= 2)
            kind = nd == 4 ? "a Conv2d" : nd == 3 ? "a Conv1d" : "a Linear or Embedding layer";
        else
            continue;
        char path[512];
        if (stem >= sizeof path)
            continue;
        memcpy(path, name, stem);
        path[stem] = 0;
        bool site = false;
        for (uint32_t j = 0; !site && j < vp_build_site_count(b); j++) {
            const vp_build_site *bs = vp_build_site_at(b, j);
            site = bs->kind == VP_SITE_LINEAR && !strcmp(bs->path, path);
        }
        if (site || !hf_selects(entry, regex, path) || (exclude && vp_selector_match(exclude, path)))
            continue;
        st = vp_cfg_fail(entry, "target_modules", "selects %s, %s: Hugging Face PEFT would adapt "
                         "it, vpeft has no LoRA for it (not a linear site); leave it out, e.g. "
                         "with exclude_modules", path, kind);
    }
    vp_selector_destroy(regex);
    vp_selector_destroy(any);
    vp_selector_destroy(exclude);
    return st;
}
