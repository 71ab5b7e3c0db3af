#version 450
// Multi-scale deformable attention, forward (see msdeform.glsl for shapes).
// One invocation per (b, q, h, VEC channels): consecutive invocations read
// consecutive channels of the same corner, so value loads coalesce on GPUs;
// loc and attn are the same for all Dh / VEC invocations of a head.
#extension GL_GOOGLE_include_directive : require
#include "msdeform.glsl"

layout(binding = 0) readonly buffer V1 { float value1[]; };
layout(binding = 0) readonly buffer V4 { vec4 value4[]; };
layout(binding = 1) readonly buffer Loc { vec2 loc[]; };
layout(binding = 2) readonly buffer Attn { float attn[]; };
layout(binding = 3) writeonly buffer O1 { float out1[]; };
layout(binding = 3) writeonly buffer O4 { vec4 out4[]; };

vec4 load_value(uint i)
{
    return VEC == 4 ? value4[i] : vec4(value1[i], 0.0, 0.0, 0.0);
}

void main()
{
    uint dv = p.Dh / VEC;
    uint i = flat_index();
    if (i >= p.B * p.Q * p.H * dv)
        return;
    uint cv = i % dv, bqh = i / dv;
    uint h = bqh % p.H, b = bqh / (p.H * p.Q);
    uint lp = p.L * p.P;
    vec4 acc = vec4(0.0);
    for (uint l = 0; l < p.L; l++) {
        uint hl = p.lv[l].x, wl = p.lv[l].y;
        uint base = b * p.S + p.lv[l].z;  // position (b, level start)
        for (uint k = 0; k < p.P; k++) {
            uint s = bqh * lp + l * p.P + k;
            ivec2 c;
            vec2 f;
            cell(loc[s], hl, wl, c, f);
            float a = attn[s];
            float w[4] = float[4]((1.0 - f.x) * (1.0 - f.y), f.x * (1.0 - f.y),
                                  (1.0 - f.x) * f.y, f.x * f.y);
            [[unroll]] for (uint j = 0; j < 4; j++) {
                ivec2 cj = c + ivec2(j & 1, j >> 1);
                if (inside(cj, hl, wl))
                    acc += (a * w[j]) *
                           load_value(((base + uint(cj.y) * wl + uint(cj.x)) * p.H + h) * dv + cv);
            }
        }
    }
    if (VEC == 4)
        out4[i] = acc;
    else
        out1[i] = acc.x;
}
