#version 450
// Layer normalization backward, the affine parameters' gradients:
//   dgamma[c] (+)= sum_r dy[r, c] xh[r, c],  dbeta[c] (+)= sum_r dy[r, c]
//   xh = (x - mean) rstd;  x, dy: (rows, C)   mean, rstd: (rows)
// A workgroup of CX x RY invocations owns CX columns: invocation (i, j)
// adds rows j, j + RY, ... of column i with Kahan compensation (coalesced
// across i), then the RY partial sums of each column are added with a fixed
// tree. No atomics: deterministic. flags: 1 write dgamma, 2 write dbeta,
// 4 add into them (else overwrite, unread). RY is a power of two.
#extension GL_GOOGLE_include_directive : require
#include "common.glsl"

LOCAL_SIZE_FROM_SPEC;
#include "nn.glsl"

layout(push_constant) uniform Push { uint rows; uint C; uint flags; } p;
layout(binding = 0) readonly buffer X { float x[]; };
layout(binding = 1) readonly buffer M { float mean[]; };
layout(binding = 2) readonly buffer R { float rstd[]; };
layout(binding = 3) readonly buffer DY { float dy[]; };
layout(binding = 4) buffer DG { float dgamma[]; };
layout(binding = 5) buffer DB { float dbeta[]; };

void main()
{
    uint CX = gl_WorkGroupSize.x, RY = gl_WorkGroupSize.y;
    uint lx = gl_LocalInvocationID.x, ly = gl_LocalInvocationID.y;
    uint col = nn_group() * CX + lx;
    bool valid = col < p.C;
    vec2 a_g = vec2(0.0), a_b = vec2(0.0);
    if (valid)
        for (uint r = ly; r < p.rows; r += RY) {
            uint i = r * p.C + col;
            float g = dy[i];
            kahan_add(a_g, g * ((x[i] - mean[r]) * rstd[r]));
            kahan_add(a_b, g);
        }
    uint idx = ly * CX + lx;
    nn_red[idx] = vec2(kahan_value(a_g), kahan_value(a_b));
    barrier();
    for (uint s = RY >> 1; s > 0u; s >>= 1) {
        if (ly < s)
            nn_red[idx] += nn_red[idx + s * CX];
        barrier();
    }
    if (ly != 0u || !valid)
        return;
    vec2 v = nn_red[lx];
    bool acc = (p.flags & 4u) != 0u;
    if ((p.flags & 1u) != 0u)
        dgamma[col] = acc ? dgamma[col] + v.x : v.x;
    if ((p.flags & 2u) != 0u)
        dbeta[col] = acc ? dbeta[col] + v.y : v.y;
}
