/*
 * Memory that lives as long as a head instance (m2f.h): host nodes' and
 * custom kernels' user data, freed with the instance. Shared by the
 * mask2former and maskdino heads.
 */
#include <stdlib.h>
#include <string.h>

#include "m2f.h"

void *m2f_own(m2f_owned *o, size_t bytes)
{
    if (o->n == o->cap) {
        size_t cap = o->cap ? 2 * o->cap : 16;
        void **p = realloc(o->p, cap * sizeof *p);
        if (!p)
            return NULL;
        o->p = p;
        o->cap = cap;
    }
    void *m = calloc(1, bytes);
    if (m)
        o->p[o->n++] = m;
    return m;
}

void m2f_owned_free(m2f_owned *o)
{
    for (size_t i = 0; i < o->n; i++)
        free(o->p[i]);
    free(o->p);
    memset(o, 0, sizeof *o);
}
