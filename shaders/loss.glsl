// Shared by the loss and optimizer kernels (loss_*.comp, optim_*.comp):
// numerically careful log1p and sigmoid, and, where a kernel defines
// WG_SUM before including this file, a deterministic workgroup sum.
//
// Reductions in these kernels never use float atomics: each invocation sums
// a fixed, strided subset of the elements, then wg_sum() adds the partial
// sums along a fixed tree over invocation ids. The same inputs therefore
// give the same bits on every run on a device (the order depends on the
// local size, which the host picks per device).

// A quiet NaN, written explicitly where a result is undefined (an invalid
// class index, 0/0): arithmetic on NaN is not guaranteed to propagate it
// under the relaxed float rules drivers apply.
#define NAN_F uintBitsToFloat(0x7fc00000u)

// log(1 + u) for u >= 0, accurate to a few ulp also where u is tiny. GLSL's
// log() is only bounded by an absolute error (2^-21) near 1, which would be
// a large relative error in log(1 + 1e-4), so small u use the series
// log(1 + u) = 2 atanh(s) = 2 (s + s^3/3 + s^5/5 + ...), s = u / (2 + u) <= 1/3;
// the first omitted term, s^17/17, is below 2e-9 of the sum.
float log1p_pos(float u)
{
    if (u > 1.0)
        return log(1.0 + u); // >= log 2, where log's error is relative (3 ulp)
    float s = u / (2.0 + u);
    float s2 = s * s;
    float r = 1.0 / 15.0;
    r = fma(r, s2, 1.0 / 13.0);
    r = fma(r, s2, 1.0 / 11.0);
    r = fma(r, s2, 1.0 / 9.0);
    r = fma(r, s2, 1.0 / 7.0);
    r = fma(r, s2, 1.0 / 5.0);
    r = fma(r, s2, 1.0 / 3.0);
    r = fma(r, s2, 1.0);
    return 2.0 * s * r;
}

// (sigmoid(x), 1 - sigmoid(x)), both from exp(-|x|): no overflow for any x,
// and 1 - sigmoid(x) without cancellation for large positive x.
vec2 sigmoid2(float x)
{
    float e = exp(-abs(x));
    float r = 1.0 / (1.0 + e);
    return x >= 0.0 ? vec2(r, e * r) : vec2(e * r, r);
}

#ifdef WG_SUM
// Sum of v over the workgroup along a fixed tree. local_size_x must be a
// power of two and the call in uniform control flow; the result is the same
// in every invocation. The including kernel declares its local size
// (LOCAL_SIZE_FROM_SPEC) before this file: the array below is sized by it,
// and would otherwise get the default size of 1.
shared vec4 wg_red[gl_WorkGroupSize.x];

vec4 wg_sum(vec4 v)
{
    uint t = gl_LocalInvocationID.x;
    wg_red[t] = v;
    memoryBarrierShared();
    barrier();
    for (uint s = gl_WorkGroupSize.x / 2u; s > 0u; s >>= 1) {
        if (t < s)
            wg_red[t] += wg_red[t + s];
        memoryBarrierShared();
        barrier();
    }
    vec4 r = wg_red[0];
    barrier(); // every invocation has read the sum before wg_red is reused
    return r;
}
#endif
