/*
 * The monotonic clock, for timing steps, submits and all-reduces.
 */
#ifndef VP_UTIL_CLOCK_H
#define VP_UTIL_CLOCK_H

/* Seconds since an arbitrary start; never goes back. */
double vp_now_s(void);

#endif
