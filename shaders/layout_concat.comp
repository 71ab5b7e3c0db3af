#version 450
// Concatenation of up to 7 inputs along one axis, one dispatch (more inputs
// take one dispatch per 7). Tensors are seen as (outer, len, inner); this
// dispatch fills y[:, a0:a0+alen, :], where input k covers [off[k],
// off[k+1]) of that range. VEC 4: inner counts vec4s (inner % 4 == 0).
#extension GL_GOOGLE_include_directive : require
#include "common.glsl"

LOCAL_SIZE_FROM_SPEC;
layout(constant_id = 3) const uint VEC = 1;

layout(push_constant) uniform Push {
    uint outer, inner, ylen; // y (outer, ylen, inner)
    uint a0, alen;           // the range of y's axis this dispatch fills
    uint nin;                // inputs bound, 1..7
    uint total;              // outer * alen * inner
    uint off[8];             // off[0] = 0, off[nin] = alen
} p;
layout(binding = 0) readonly buffer X0 { float x0[]; };
layout(binding = 0) readonly buffer V0 { vec4 v0[]; };
layout(binding = 1) readonly buffer X1 { float x1[]; };
layout(binding = 1) readonly buffer V1 { vec4 v1[]; };
layout(binding = 2) readonly buffer X2 { float x2[]; };
layout(binding = 2) readonly buffer V2 { vec4 v2[]; };
layout(binding = 3) readonly buffer X3 { float x3[]; };
layout(binding = 3) readonly buffer V3 { vec4 v3[]; };
layout(binding = 4) readonly buffer X4 { float x4[]; };
layout(binding = 4) readonly buffer V4 { vec4 v4[]; };
layout(binding = 5) readonly buffer X5 { float x5[]; };
layout(binding = 5) readonly buffer V5 { vec4 v5[]; };
layout(binding = 6) readonly buffer X6 { float x6[]; };
layout(binding = 6) readonly buffer V6 { vec4 v6[]; };
layout(binding = 7) writeonly buffer Y { float y[]; };
layout(binding = 7) writeonly buffer Y4 { vec4 y4[]; };

void main()
{
    uint i = flat_index();
    if (i >= p.total)
        return;
    uint in_ = i % p.inner, t = i / p.inner;
    uint a = t % p.alen, o = t / p.alen;
    uint k = 0;
    while (k + 1 < p.nin && a >= p.off[k + 1])
        k++;
    uint len = p.off[k + 1] - p.off[k];
    uint s = (o * len + a - p.off[k]) * p.inner + in_;
    uint d = (o * p.ylen + p.a0 + a) * p.inner + in_;
    if (VEC == 4) {
        vec4 v;
        switch (k) {
        case 0: v = v0[s]; break;
        case 1: v = v1[s]; break;
        case 2: v = v2[s]; break;
        case 3: v = v3[s]; break;
        case 4: v = v4[s]; break;
        case 5: v = v5[s]; break;
        default: v = v6[s]; break;
        }
        y4[d] = v;
    } else {
        float v;
        switch (k) {
        case 0: v = x0[s]; break;
        case 1: v = x1[s]; break;
        case 2: v = x2[s]; break;
        case 3: v = x3[s]; break;
        case 4: v = x4[s]; break;
        case 5: v = x5[s]; break;
        default: v = x6[s]; break;
        }
        y[d] = v;
    }
}
