/*
 * Growable arrays (see array.h).
 */
#include "util/array.h"

#include <stdlib.h>
#include <string.h>

vp_status vp_reserve_(void *arrp, uint32_t *cap, uint32_t need, size_t elem)
{
    if (need <= *cap)
        return VP_OK;
    uint64_t n = *cap ? *cap : 8;
    while (n < need)
        n *= 2;
    void *old;
    memcpy(&old, arrp, sizeof old);
    void *p = n > UINT32_MAX ? NULL : realloc(old, (size_t)n * elem);
    if (!p)
        return vp_error_set(VP_ERR_NOMEM, "out of host memory growing an array to %llu elements",
                            (unsigned long long)n);
    memcpy(arrp, &p, sizeof p);
    *cap = (uint32_t)n;
    return VP_OK;
}
