#version 450
// Fused attention, backward for q, subgroup form (attn_bwd_q.comp is the
// plain form and says what it computes; attn_fwd_sg.comp says why this
// form): a workgroup is one subgroup, the LANES query rows i0 .. of one
// (b, h); the keys go LANES at a time, each lane loading one key's k and v
// and shuffling them to the others.
#extension GL_GOOGLE_include_directive : require
#extension GL_KHR_shader_subgroup_basic : require
#extension GL_KHR_shader_subgroup_shuffle : require
#include "attn.glsl"

layout(constant_id = 5) const uint LANES = 8;  // = the subgroup size = local size

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
    uint bh = group_index(), lane = gl_SubgroupInvocationID;
    if (bh >= p.B * p.H)  // the whole workgroup
        return;
    uint i0 = gl_WorkGroupID.x * LANES, i = min(i0 + lane, p.Nq - 1u);
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
    bool has_bias = (p.flags & HAS_BIAS) != 0u;
    for (uint j0 = 0; j0 < p.Nk; j0 += LANES) {
        uint ko = row_off(b, p.Nk, min(j0 + lane, p.Nk - 1u), h);
        vec4 kr[NV], vr[NV];
        [[unroll]] for (uint c = 0; c < NV; c++) {
            kr[c] = LOAD(k, ko + c);
            vr[c] = LOAD(v, ko + c);
        }
        [[unroll]] for (uint t = 0; t < LANES; t++) {
            float s = 0.0, dp = 0.0;
            [[unroll]] for (uint c = 0; c < NV; c++) {
                s += dot(qv[c], subgroupShuffle(kr[c], t));
                dp += dot(g[c], subgroupShuffle(vr[c], t));
            }
            uint j = j0 + t;
            if (has_bias)
                s += bias[bo + min(j, p.Nk - 1u)];
            float e = j < p.Nk ? exp(s - L) : 0.0, w = e * dp;
            dl += w;
            [[unroll]] for (uint c = 0; c < NV; c++) {
                vec4 kc = subgroupShuffle(kr[c], t);
                a[c] += w * kc;
                cs[c] += e * kc;
            }
        }
    }
    if (i0 + lane >= p.Nq)
        return;
    stats[r] = vec2(L, dl);
    bool add = (p.flags & ACC_Q) != 0u;
    [[unroll]] for (uint c = 0; c < NV; c++) {
        vec4 x = p.scale * (a[c] - dl * cs[c]) + (add ? LOAD(dq, qo + c) : vec4(0.0));
        STORE(dq, qo + c, x);
    }
}
