#version 450
// Softmax over the last axis.   x, y: (rows, C)
//   y[r, c] = exp(x[r, c] - m) / sum_c' exp(x[r, c'] - m),  m = max_c x[r, c]
// A row whose every element is -inf (fully masked) gives 0s, not NaN.
// Three passes over the row (max, sum, write), segments as in nn.glsl.
#extension GL_GOOGLE_include_directive : require
#include "common.glsl"

LOCAL_SIZE_FROM_SPEC;
#include "nn.glsl"

layout(push_constant) uniform Push { uint rows; uint C; uint T; } p;
layout(binding = 0) readonly buffer X { float x[]; };
layout(binding = 1) writeonly buffer Y { float y[]; };

void main()
{
    uint T = p.T, lane = gl_LocalInvocationID.x & (T - 1u);
    uint row = nn_group() * (gl_WorkGroupSize.x / T) + gl_LocalInvocationID.x / T;
    bool valid = row < p.rows;
    uint base = row * p.C;
    float m = NN_NEG_INF;
    if (valid)
        for (uint c = lane; c < p.C; c += T)
            m = max(m, x[base + c]);
    m = seg_max(m, T);
    bool masked = m == NN_NEG_INF;
    vec2 acc = vec2(0.0);
    if (valid && !masked)
        for (uint c = lane; c < p.C; c += T)
            kahan_add(acc, exp(x[base + c] - m));
    float inv = 1.0 / seg_sum(kahan_value(acc), T);
    if (valid)
        for (uint c = lane; c < p.C; c += T)
            y[base + c] = masked ? 0.0 : exp(x[base + c] - m) * inv;
}
