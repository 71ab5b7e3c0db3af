#version 450
// Fused attention, forward, subgroup form (see attn.glsl; attn_fwd.comp is
// the plain form): a workgroup is one subgroup of LANES invocations, the
// LANES query rows i0 .. i0 + LANES - 1 of one (b, h). The keys go LANES at
// a time: lane t loads key j0 + t's k and v, and subgroupShuffle hands each
// of them to every lane in turn, so each k and v value is loaded once per
// workgroup instead of once per row. On lavapipe a buffer load is a loop
// over the lanes (~100 cycles a vec4) and a shuffle by a constant lane one
// vector permute (matmul_subgroup.comp measured the same).
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
layout(binding = 4) writeonly buffer O1 { float o1[]; };
layout(binding = 4) writeonly buffer O4 { vec4 o4[]; };
layout(binding = 5) writeonly buffer L { float lse[]; };

void main()
{
    uint bh = group_index(), lane = gl_SubgroupInvocationID;
    if (bh >= p.B * p.H)  // the whole workgroup
        return;
    uint i0 = gl_WorkGroupID.x * LANES, i = min(i0 + lane, p.Nq - 1u);
    uint h = bh % p.H, b = bh / p.H;
    uint qo = row_off(b, p.Nq, i, h);
    vec4 qv[NV], acc[NV];
    [[unroll]] for (uint c = 0; c < NV; c++) {
        qv[c] = LOAD(q, qo + c) * p.scale;
        acc[c] = vec4(0.0);
    }
    uint bo = bias_row(b, h, i);
    bool has_bias = (p.flags & HAS_BIAS) != 0u;
    float m = neg_inf(), l = 0.0;
    for (uint j0 = 0; j0 < p.Nk; j0 += LANES) {
        uint ko = row_off(b, p.Nk, min(j0 + lane, p.Nk - 1u), h);
        vec4 kr[NV], vr[NV];
        [[unroll]] for (uint c = 0; c < NV; c++) {
            kr[c] = LOAD(k, ko + c);
            vr[c] = LOAD(v, ko + c);
        }
        [[unroll]] for (uint t = 0; t < LANES; t++) {
            float s = 0.0;
            [[unroll]] for (uint c = 0; c < NV; c++)
                s += dot(qv[c], subgroupShuffle(kr[c], t));
            uint j = j0 + t;
            if (has_bias)
                s += bias[bo + min(j, p.Nk - 1u)];
            s = j < p.Nk ? s : neg_inf();
            float mn = max(m, s);
            bool none = mn == neg_inf();
            float f = none ? 1.0 : exp(m - mn), e = none ? 0.0 : exp(s - mn);
            l = l * f + e;
            [[unroll]] for (uint c = 0; c < NV; c++)
                acc[c] = acc[c] * f + e * subgroupShuffle(vr[c], t);
            m = mn;
        }
    }
    if (i0 + lane >= p.Nq)
        return;
    bool any = l > 0.0 || isnan(l);
    float inv = any ? 1.0 / l : 0.0;
    [[unroll]] for (uint c = 0; c < NV; c++) {
        STORE(o, qo + c, acc[c] * inv);
    }
    lse[bh * p.Nq + i] = any ? m + log(l) : uintBitsToFloat(0x7f800000u);
}
