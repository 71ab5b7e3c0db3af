#version 450
// Fused attention, the score gradients for a bias that trains (see
// attn.glsl): one invocation per (b, h, i) query row, a workgroup's rows of
// one (b, h), recomputes p_ij from the row's log-sum-exp and writes
//   ds[b, h, i, j] = p_ij (dO_i . v_j - delta_i)
// for every key, from the (lse, delta) attn_bwd_q.comp wrote. The host
// sums ds over the images and heads that share a bias element (gemms with
// ones: a fixed order).
#extension GL_GOOGLE_include_directive : require
#include "attn.glsl"

layout(binding = 0) readonly buffer Q1 { float q1[]; };
layout(binding = 0) readonly buffer Q4 { vec4 q4[]; };
layout(binding = 1) readonly buffer K1 { float k1[]; };
layout(binding = 1) readonly buffer K4 { vec4 k4[]; };
layout(binding = 2) readonly buffer V1 { float v1[]; };
layout(binding = 2) readonly buffer V4 { vec4 v4[]; };
layout(binding = 3) readonly buffer Bias { float bias[]; };
layout(binding = 4) readonly buffer DOUT1 { float dout1[]; };
layout(binding = 4) readonly buffer DOUT4 { vec4 dout4[]; };
layout(binding = 5) readonly buffer Stats { vec2 stats[]; };
layout(binding = 6) writeonly buffer DS { float ds[]; };

void main()
{
    uint bh = group_index(), i = row_index();
    if (i >= p.Nq || bh >= p.B * p.H)
        return;
    uint h = bh % p.H, b = bh / p.H, r = bh * p.Nq + i;
    uint qo = row_off(b, p.Nq, i, h);
    vec4 qv[NV], g[NV];
    [[unroll]] for (uint c = 0; c < NV; c++) {
        qv[c] = LOAD(q, qo + c) * p.scale;
        g[c] = LOAD(dout, qo + c);
    }
    vec2 st = stats[r];  // (lse, delta)
    uint bo = bias_row(b, h, i);
    for (uint j = 0; j < p.Nk; j++) {
        uint ko = row_off(b, p.Nk, j, h);
        float s = 0.0, dp = 0.0;
        [[unroll]] for (uint c = 0; c < NV; c++) {
            s += dot(qv[c], LOAD(k, ko + c));
            dp += dot(g[c], LOAD(v, ko + c));
        }
        s += bias[bo + j];
        ds[r * p.Nk + j] = exp(s - st.x) * (dp - st.y);
    }
}
