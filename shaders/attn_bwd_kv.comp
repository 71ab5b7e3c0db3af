#version 450
// Fused attention, backward for k and v (see attn.glsl): one invocation per
// (b, h, j) key row (a workgroup's rows of one (b, h)) walks the queries, recomputing p_ij from each row's
// log-sum-exp, and writes
//   dv = sum_i p_ij dO_i,   dk = scale * sum_i p_ij (dO_i . v_j - delta_i) q_i
// (each added to its tensor's contents with ACC_V / ACC_K). Reads the
// (lse, delta) pairs attn_bwd_q.comp wrote.
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
layout(binding = 6) buffer DK1 { float dk1[]; };
layout(binding = 6) buffer DK4 { vec4 dk4[]; };
layout(binding = 7) buffer DV1 { float dv1[]; };
layout(binding = 7) buffer DV4 { vec4 dv4[]; };

void main()
{
    uint bh = group_index(), j = row_index();
    if (j >= p.Nk || bh >= p.B * p.H)
        return;
    uint h = bh % p.H, b = bh / p.H;
    uint ko = row_off(b, p.Nk, j, h);
    vec4 kv[NV], vv[NV], ak[NV], av[NV];
    [[unroll]] for (uint c = 0; c < NV; c++) {
        kv[c] = LOAD(k, ko + c) * p.scale;
        vv[c] = LOAD(v, ko + c);
        ak[c] = vec4(0.0);
        av[c] = vec4(0.0);
    }
    uint rows = (b * p.H + h) * p.Nq;
    for (uint i = 0; i < p.Nq; i++) {
        uint qo = row_off(b, p.Nq, i, h);
        float s = 0.0, dp = 0.0;
        [[unroll]] for (uint c = 0; c < NV; c++) {
            s += dot(LOAD(q, qo + c), kv[c]);
            dp += dot(LOAD(dout, qo + c), vv[c]);
        }
        if ((p.flags & HAS_BIAS) != 0u)
            s += bias[bias_row(b, h, i) + j];
        vec2 st = stats[rows + i];  // (lse, delta)
        float e = exp(s - st.x);
        float ds = e * (dp - st.y);
        [[unroll]] for (uint c = 0; c < NV; c++) {
            av[c] += e * LOAD(dout, qo + c);
            ak[c] += ds * LOAD(q, qo + c);
        }
    }
    bool addk = (p.flags & ACC_K) != 0u, addv = (p.flags & ACC_V) != 0u;
    [[unroll]] for (uint c = 0; c < NV; c++) {
        vec4 xk = p.scale * ak[c] + (addk ? LOAD(dk, ko + c) : vec4(0.0));
        vec4 xv = av[c] + (addv ? LOAD(dv, ko + c) : vec4(0.0));
        STORE(dk, ko + c, xk);
        STORE(dv, ko + c, xv);
    }
}
