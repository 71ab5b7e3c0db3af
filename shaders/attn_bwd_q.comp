#version 450
// Fused attention, backward for q (see attn.glsl): one invocation per
// (b, h, i) query row recomputes the row's probabilities p_j from its
// log-sum-exp and, in one pass over the keys, sums
//   delta = sum_j p_j dp_j,  a = sum_j p_j dp_j k_j,  c = sum_j p_j k_j
// with dp_j = dO . v_j (delta equals dO . out), then writes
//   dq = scale * sum_j p_j (dp_j - delta) k_j = scale (a - delta c)
// (added to dq's contents with ACC_Q) and the row's (lse, delta), which the
// k/v and score-gradient kernels read.
#extension GL_GOOGLE_include_directive : require
#include "attn.glsl"

layout(binding = 0) readonly buffer Q1 { float q1[]; };
layout(binding = 0) readonly buffer Q4 { vec4 q4[]; };
layout(binding = 1) readonly buffer K1 { float k1[]; };
layout(binding = 1) readonly buffer K4 { vec4 k4[]; };
layout(binding = 2) readonly buffer V1 { float v1[]; };
layout(binding = 2) readonly buffer V4 { vec4 v4[]; };
layout(binding = 3) readonly buffer Bias { float bias[]; };
layout(binding = 4) readonly buffer L { float lse[]; };
layout(binding = 5) readonly buffer DOUT1 { float dout1[]; };
layout(binding = 5) readonly buffer DOUT4 { vec4 dout4[]; };
layout(binding = 6) writeonly buffer Stats { vec2 stats[]; };
layout(binding = 7) buffer DQ1 { float dq1[]; };
layout(binding = 7) buffer DQ4 { vec4 dq4[]; };

void main()
{
    uint bh = group_index(), i = row_index();
    if (i >= p.Nq || bh >= p.B * p.H)
        return;
    uint h = bh % p.H, b = bh / p.H, r = bh * p.Nq + i;
    uint qo = row_off(b, p.Nq, i, h);
    vec4 qv[NV], g[NV], a[NV], cs[NV];
    [[unroll]] for (uint c = 0; c < NV; c++) {
        qv[c] = LOAD(q, qo + c) * p.scale;
        g[c] = LOAD(dout, qo + c);
        a[c] = vec4(0.0);
        cs[c] = vec4(0.0);
    }
    float L = lse[r], dl = 0.0;
    uint bo = bias_row(b, h, i);
    for (uint j = 0; j < p.Nk; j++) {
        uint ko = row_off(b, p.Nk, j, h);
        float s = 0.0, dp = 0.0;
        [[unroll]] for (uint c = 0; c < NV; c++) {
            s += dot(qv[c], LOAD(k, ko + c));
            dp += dot(g[c], LOAD(v, ko + c));
        }
        if ((p.flags & HAS_BIAS) != 0u)
            s += bias[bo + j];
        float e = exp(s - L), w = e * dp;
        dl += w;
        [[unroll]] for (uint c = 0; c < NV; c++) {
            vec4 kc = LOAD(k, ko + c);
            a[c] += w * kc;
            cs[c] += e * kc;
        }
    }
    stats[r] = vec2(L, dl);
    bool add = (p.flags & ACC_Q) != 0u;
    [[unroll]] for (uint c = 0; c < NV; c++) {
        vec4 x = p.scale * (a[c] - dl * cs[c]) + (add ? LOAD(dq, qo + c) : vec4(0.0));
        STORE(dq, qo + c, x);
    }
}
