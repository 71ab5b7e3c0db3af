/*
 * Fuzz target: the safetensors reader (core/io/safetensors.c). The input is
 * a whole file; vp_st_open must accept it and then read every tensor, or
 * refuse it with an error, never crash, overrun or leak.
 */
#include "fuzz.h"

#include "io/safetensors.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    const char *path = vp_fuzz_write("in.safetensors", data, size);
    vp_st *st;
    if (vp_st_open(path, &st) != VP_OK)
        return 0;
    for (size_t i = 0; i < vp_st_count(st); i++) {
        const vp_st_tensor *t = vp_st_get(st, i);
        if (vp_st_find(st, t->name) != t)
            abort(); /* names are unique and sorted: the lookup must find this one */
        if (t->nelem > (1u << 20))
            continue;
        size_t n = t->nelem ? (size_t)t->nelem : 1;
        float *f = malloc(n * sizeof *f);
        int64_t *k = malloc(n * sizeof *k);
        if (f && k) {
            (void)vp_st_read_f32(st, t->name, f, (size_t)t->nelem);
            (void)vp_st_read_i64(st, t->name, k, (size_t)t->nelem);
            (void)vp_st_check_shape(st, t->name, t->ndim, t->shape);
        }
        free(f);
        free(k);
    }
    for (size_t i = 0; i < vp_st_meta_count(st); i++)
        if (!vp_st_meta(st, vp_st_meta_key(st, i)))
            abort(); /* every listed key has a value */
    vp_st_close(st);
    return 0;
}
