/*
 * Growable arrays: the one place that doubles a capacity and reallocs.
 *
 *     if ((st = VP_RESERVE(dev->pipes, dev->cap_pipes, dev->n_pipes + 1)))
 *         return st;
 *     dev->pipes[dev->n_pipes++] = p;
 */
#ifndef VP_UTIL_ARRAY_H
#define VP_UTIL_ARRAY_H

#include <stddef.h>
#include <stdint.h>

#include "util/error.h"

/* Make room for `need` elements in array `arr` (a pointer lvalue) whose
 * capacity lvalue is `cap`; capacity at least doubles. On failure the array
 * is unchanged and VP_ERR_NOMEM is returned with a message. */
#define VP_RESERVE(arr, cap, need) vp_reserve_((void *)&(arr), &(cap), (need), sizeof *(arr))

vp_status vp_reserve_(void *arrp, uint32_t *cap, uint32_t need, size_t elem);

#endif
