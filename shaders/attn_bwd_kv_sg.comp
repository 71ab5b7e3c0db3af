#version 450
// Fused attention, backward for k and v, subgroup form (attn_bwd_kv.comp is
// the plain form and says what it computes; attn_fwd_sg.comp says why this
// form): a workgroup is one subgroup, the LANES key rows j0 .. of one
// (b, h); the queries go LANES at a time, each lane loading one query's q,
// dO and (lse, delta) and shuffling them to the others.
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
layout(binding = 4) readonly buffer DOUT1 { float dout1[]; };
layout(binding = 4) readonly buffer DOUT4 { vec4 dout4[]; };
layout(binding = 5) readonly buffer Stats { vec2 stats[]; };
layout(binding = 6) buffer DK1 { float dk1[]; };
layout(binding = 6) buffer DK4 { vec4 dk4[]; };
layout(binding = 7) buffer DV1 { float dv1[]; };
layout(binding = 7) buffer DV4 { vec4 dv4[]; };

void main()
{
    uint bh = group_index(), lane = gl_SubgroupInvocationID;
    if (bh >= p.B * p.H)  // the whole workgroup
        return;
    uint j0 = gl_WorkGroupID.x * LANES, j = min(j0 + lane, p.Nk - 1u);
    uint h = bh % p.H, b = bh / p.H;
    uint ko = row_off(b, p.Nk, j, h);
    vec4 kv[NV], vv[NV], ak[NV], av[NV];
    [[unroll]] for (uint c = 0; c < NV; c++) {
        kv[c] = LOAD(k, ko + c) * p.scale;
        vv[c] = LOAD(v, ko + c);
        ak[c] = vec4(0.0);
        av[c] = vec4(0.0);
    }
    uint rows = bh * p.Nq;
    bool has_bias = (p.flags & HAS_BIAS) != 0u;
    for (uint i0 = 0; i0 < p.Nq; i0 += LANES) {
        uint il = min(i0 + lane, p.Nq - 1u);
        uint qo = row_off(b, p.Nq, il, h);
        vec4 qr[NV], gr[NV];
        [[unroll]] for (uint c = 0; c < NV; c++) {
            qr[c] = LOAD(q, qo + c);
            gr[c] = LOAD(dout, qo + c);
        }
        vec2 str = stats[rows + il];  // (lse, delta)
        [[unroll]] for (uint t = 0; t < LANES; t++) {
            float s = 0.0, dp = 0.0;
            [[unroll]] for (uint c = 0; c < NV; c++) {
                s += dot(subgroupShuffle(qr[c], t), kv[c]);
                dp += dot(subgroupShuffle(gr[c], t), vv[c]);
            }
            uint i = min(i0 + t, p.Nq - 1u);
            if (has_bias)
                s += bias[bias_row(b, h, i) + j];
            vec2 st = subgroupShuffle(str, t);
            float e = i0 + t < p.Nq ? exp(s - st.x) : 0.0;
            float ds = e * (dp - st.y);
            [[unroll]] for (uint c = 0; c < NV; c++) {
                av[c] += e * subgroupShuffle(gr[c], t);
                ak[c] += ds * subgroupShuffle(qr[c], t);
            }
        }
    }
    if (j0 + lane >= p.Nk)
        return;
    bool addk = (p.flags & ACC_K) != 0u, addv = (p.flags & ACC_V) != 0u;
    [[unroll]] for (uint c = 0; c < NV; c++) {
        vec4 xk = p.scale * ak[c] + (addk ? LOAD(dk, ko + c) : vec4(0.0));
        vec4 xv = av[c] + (addv ? LOAD(dv, ko + c) : vec4(0.0));
        STORE(dk, ko + c, xk);
        STORE(dv, ko + c, xv);
    }
}
