#version 450
// Layer normalization over the last axis (PyTorch semantics, biased
// variance).   x, y: (rows, C)   gamma, beta: (C)   mean, rstd: (rows)
//   mean = sum_c x / C,  var = sum_c (x - mean)^2 / C,  rstd = 1 / sqrt(var + eps)
//   y = (x - mean) rstd gamma + beta
// flags: 1 gamma given (else 1), 2 beta given (else 0), 4 write mean and
// rstd. The mean is accumulated relative to the row's first element and
// the variance in a second pass over (x - mean)^2 (no E[x^2] - E[x]^2
// cancellation), so a large common offset costs no precision.
#extension GL_GOOGLE_include_directive : require
#include "common.glsl"

LOCAL_SIZE_FROM_SPEC;
#include "nn.glsl"

layout(push_constant) uniform Push { uint rows; uint C; uint T; float inv_c; float eps; uint flags; } p;
layout(binding = 0) readonly buffer X { float x[]; };
layout(binding = 1) readonly buffer G { float gamma[]; };
layout(binding = 2) readonly buffer B { float beta[]; };
layout(binding = 3) writeonly buffer Y { float y[]; };
layout(binding = 4) writeonly buffer M { float mean[]; };
layout(binding = 5) writeonly buffer R { float rstd[]; };

void main()
{
    uint T = p.T, lane = gl_LocalInvocationID.x & (T - 1u);
    uint row = nn_group() * (gl_WorkGroupSize.x / T) + gl_LocalInvocationID.x / T;
    bool valid = row < p.rows;
    uint base = row * p.C;
    // Work relative to the row's first element: x - shift is exact where x
    // is near it, and the centred values (x - shift) - moff keep their
    // precision even where the mean itself is large (its float rounding
    // touches only the saved mean).
    float shift = valid ? x[base] : 0.0;
    vec2 acc = vec2(0.0);
    if (valid)
        for (uint c = lane; c < p.C; c += T)
            kahan_add(acc, x[base + c] - shift);
    float moff = seg_sum(kahan_value(acc), T) * p.inv_c;  // mean - shift
    acc = vec2(0.0);
    if (valid)
        for (uint c = lane; c < p.C; c += T) {
            float d = (x[base + c] - shift) - moff;
            kahan_add(acc, d * d);
        }
    float rs = inversesqrt(seg_sum(kahan_value(acc), T) * p.inv_c + p.eps);
    if (!valid)
        return;
    for (uint c = lane; c < p.C; c += T) {
        float v = ((x[base + c] - shift) - moff) * rs;
        if ((p.flags & 1u) != 0u)
            v *= gamma[c];
        if ((p.flags & 2u) != 0u)
            v += beta[c];
        y[base + c] = v;
    }
    if (lane == 0u && (p.flags & 4u) != 0u) {
        mean[row] = shift + moff;
        rstd[row] = rs;
    }
}
