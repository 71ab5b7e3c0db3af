#version 450
// Fused attention, forward (see attn.glsl): one invocation per (b, h, i)
// query row, a workgroup's rows of one (b, h), walks the keys once with a running maximum and sum (online
// softmax), then writes the row of out and its log-sum-exp.
#extension GL_GOOGLE_include_directive : require
#include "attn.glsl"

layout(binding = 0) readonly buffer Q1 { float q1[]; };
layout(binding = 0) readonly buffer Q4 { vec4 q4[]; };
layout(binding = 1) readonly buffer K1 { float k1[]; };
layout(binding = 1) readonly buffer K4 { vec4 k4[]; };
layout(binding = 2) readonly buffer V1 { float v1[]; };
layout(binding = 2) readonly buffer V4 { vec4 v4[]; };
layout(binding = 3) readonly buffer Bias { float bias[]; };
layout(binding = 4) writeonly buffer O1 { float o1[]; };
layout(binding = 4) writeonly buffer O4 { vec4 o4[]; };
layout(binding = 5) writeonly buffer L { float lse[]; };

void main()
{
    uint bh = group_index(), i = row_index();
    if (i >= p.Nq || bh >= p.B * p.H)
        return;
    uint h = bh % p.H, b = bh / p.H, r = bh * p.Nq + i;
    uint qo = row_off(b, p.Nq, i, h);
    vec4 qv[NV], acc[NV];
    [[unroll]] for (uint c = 0; c < NV; c++) {
        qv[c] = LOAD(q, qo + c) * p.scale;
        acc[c] = vec4(0.0);
    }
    uint bo = bias_row(b, h, i);
    float m = neg_inf(), l = 0.0;
    for (uint j = 0; j < p.Nk; j++) {
        uint ko = row_off(b, p.Nk, j, h);
        float s = 0.0;
        [[unroll]] for (uint c = 0; c < NV; c++)
            s += dot(qv[c], LOAD(k, ko + c));
        if ((p.flags & HAS_BIAS) != 0u)
            s += bias[bo + j];
        if (s == neg_inf())
            continue;
        if (s > m) {
            float f = m == neg_inf() ? 0.0 : exp(m - s);
            l *= f;
            [[unroll]] for (uint c = 0; c < NV; c++)
                acc[c] *= f;
            m = s;
        }
        float e = exp(s - m);
        l += e;
        [[unroll]] for (uint c = 0; c < NV; c++)
            acc[c] += e * LOAD(v, ko + c);
    }
    bool any = l > 0.0 || isnan(l);
    float inv = any ? 1.0 / l : 0.0;
    [[unroll]] for (uint c = 0; c < NV; c++) {
        STORE(o, qo + c, acc[c] * inv);
    }
    lse[r] = any ? m + log(l) : uintBitsToFloat(0x7f800000u);
}
