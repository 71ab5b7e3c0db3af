#version 450
// Row sums: y[r] = scale * sum_c x[r, c].   x: (rows, C)   y: (rows)
// sum_rows: scale 1; mean_rows: 1/C; sum_all / mean_all: rows 1, C = n.
// Each lane adds its columns with Kahan compensation, the segment adds the
// lanes' sums with a fixed tree (nn.glsl): deterministic, and accurate for
// ~1e6 elements in one row.
#extension GL_GOOGLE_include_directive : require
#include "common.glsl"

LOCAL_SIZE_FROM_SPEC;
#include "nn.glsl"

layout(push_constant) uniform Push { uint rows; uint C; uint T; float scale; } p;
layout(binding = 0) readonly buffer X { float x[]; };
layout(binding = 1) writeonly buffer Y { float y[]; };

void main()
{
    uint T = p.T, lane = gl_LocalInvocationID.x & (T - 1u);
    uint row = nn_group() * (gl_WorkGroupSize.x / T) + gl_LocalInvocationID.x / T;
    bool valid = row < p.rows;
    vec2 acc = vec2(0.0);
    if (valid) {
        uint base = row * p.C;
        for (uint c = lane; c < p.C; c += T)
            kahan_add(acc, x[base + c]);
    }
    float s = seg_sum(kahan_value(acc), T);
    if (valid && lane == 0u)
        y[row] = s * p.scale;
}
