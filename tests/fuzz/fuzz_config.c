/*
 * Fuzz target: the run config (core/config/config.c). The input is the
 * JSON text, optionally followed by a NUL byte and one command-line
 * override ("train.steps=10"), which vp_cfg_set applies. The tree is then
 * walked through the host table's accessors and printed back.
 */
#include "fuzz.h"

#include "config/config.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

static void walk(const vp_config *c, int depth)
{
    if (!c || depth > 64)
        return;
    int64_t i64;
    double d;
    bool b;
    const char *s;
    (void)vp_cfg_path(c);
    (void)vp_cfg_key(c);
    (void)vp_cfg_int(c, NULL, 0, &i64);
    (void)vp_cfg_float(c, NULL, 0, &d);
    (void)vp_cfg_bool(c, NULL, false, &b);
    (void)vp_cfg_string(c, NULL, NULL, &s);
    (void)vp_cfg_file(c, NULL, &s);
    static const char *const known[] = {"model", "peft", "train", "data", "eval"};
    (void)vp_cfg_check_keys(c, known, sizeof known / sizeof *known);
    int n = vp_cfg_len(c);
    for (int i = 0; i < n; i++) {
        const vp_config *e = vp_cfg_at(c, i);
        const char *k = vp_cfg_key(e);
        if (k && vp_cfg_get(c, k) == NULL)
            abort(); /* a member must be found under its own key */
        walk(e, depth + 1);
    }
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    vp_fuzz_scratch(); /* quiet logging */
    const uint8_t *nul = memchr(data, 0, size);
    size_t len = nul ? (size_t)(nul - data) : size;
    vp_config *root;
    if (vp_cfg_parse((const char *)data, len, "fuzz/run.json", &root) != VP_OK)
        return 0;
    if (nul) {
        size_t an = size - len - 1;
        char *assign = malloc(an + 1);
        if (!assign)
            abort();
        memcpy(assign, nul + 1, an);
        assign[an] = '\0';
        (void)vp_cfg_set(root, assign);
        free(assign);
    }
    walk(root, 0);
    free(vp_cfg_to_json(root));
    vp_cfg_free(root);
    return 0;
}
