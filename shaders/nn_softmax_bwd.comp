#version 450
// Softmax backward from the forward's output.   y, dy, dx: (rows, C)
//   dx[r, c] (+)= y[r, c] (dy[r, c] - sum_c' dy[r, c'] y[r, c'])
// acc 1 adds into dx, 0 overwrites it (without reading it). Fully masked
// rows (y all 0) get 0.
#extension GL_GOOGLE_include_directive : require
#include "common.glsl"

LOCAL_SIZE_FROM_SPEC;
#include "nn.glsl"

layout(push_constant) uniform Push { uint rows; uint C; uint T; uint acc; } p;
layout(binding = 0) readonly buffer Yb { float y[]; };
layout(binding = 1) readonly buffer DY { float dy[]; };
layout(binding = 2) buffer DX { float dx[]; };

void main()
{
    uint T = p.T, lane = gl_LocalInvocationID.x & (T - 1u);
    uint row = nn_group() * (gl_WorkGroupSize.x / T) + gl_LocalInvocationID.x / T;
    bool valid = row < p.rows;
    uint base = row * p.C;
    vec2 acc = vec2(0.0);
    if (valid)
        for (uint c = lane; c < p.C; c += T)
            kahan_add(acc, dy[base + c] * y[base + c]);
    float s = seg_sum(kahan_value(acc), T);
    if (valid)
        for (uint c = lane; c < p.C; c += T) {
            uint i = base + c;
            float d = y[i] * (dy[i] - s);
            dx[i] = p.acc != 0u ? dx[i] + d : d;
        }
}
