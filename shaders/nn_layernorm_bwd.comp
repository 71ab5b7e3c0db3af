#version 450
// Layer normalization backward, the input gradient.
//   x, dy, dx: (rows, C)   gamma: (C)   mean, rstd: (rows), from the forward
//   xh = (x - mean) rstd,  g = dy gamma
//   dx (+)= rstd (g - sum_c g / C - xh sum_c (g xh) / C)
// flags: 1 gamma given (else 1), 2 add into dx (else overwrite, unread).
#extension GL_GOOGLE_include_directive : require
#include "common.glsl"

LOCAL_SIZE_FROM_SPEC;
#include "nn.glsl"

layout(push_constant) uniform Push { uint rows; uint C; uint T; float inv_c; uint flags; } p;
layout(binding = 0) readonly buffer X { float x[]; };
layout(binding = 1) readonly buffer G { float gamma[]; };
layout(binding = 2) readonly buffer M { float mean[]; };
layout(binding = 3) readonly buffer R { float rstd[]; };
layout(binding = 4) readonly buffer DY { float dy[]; };
layout(binding = 5) buffer DX { float dx[]; };

void main()
{
    uint T = p.T, lane = gl_LocalInvocationID.x & (T - 1u);
    uint row = nn_group() * (gl_WorkGroupSize.x / T) + gl_LocalInvocationID.x / T;
    bool valid = row < p.rows;
    bool has_gamma = (p.flags & 1u) != 0u;
    uint base = row * p.C;
    float mu = valid ? mean[row] : 0.0, rs = valid ? rstd[row] : 0.0;
    vec2 a_g = vec2(0.0), a_gx = vec2(0.0);
    if (valid)
        for (uint c = lane; c < p.C; c += T) {
            float xh = (x[base + c] - mu) * rs;
            float g = has_gamma ? dy[base + c] * gamma[c] : dy[base + c];
            kahan_add(a_g, g);
            kahan_add(a_gx, g * xh);
        }
    vec2 s = seg_sum2(vec2(kahan_value(a_g), kahan_value(a_gx)), T) * p.inv_c;
    if (!valid)
        return;
    for (uint c = lane; c < p.C; c += T) {
        uint i = base + c;
        float xh = (x[i] - mu) * rs;
        float g = has_gamma ? dy[i] * gamma[c] : dy[i];
        float d = rs * (g - s.x - xh * s.y);
        dx[i] = (p.flags & 2u) != 0u ? dx[i] + d : d;
    }
}
