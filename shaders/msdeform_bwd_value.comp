#version 450
// Multi-scale deformable attention, backward: the value gradient without
// atomics (the fallback for devices without float atomic add), and
// deterministic: every position sums its contributions in the same order,
// so the result is the same bits every run.
//
// A workgroup owns the value gradient of one tile of TP positions of one
// level, for one (b, h) and one chunk of channel vectors (one per
// invocation). It clears its slice (unless accumulating), then walks every
// sample (q, p) of that level in order and, for each corner that falls in
// its tile, adds attn * weight * grad_out to that position: a scatter with a
// single writer per element, so no atomics. The invocations of a workgroup
// share each sample (same loc and attn, same branch) and differ only in the
// channels they load and store.
//
// TP: CPUs take a whole level per tile, so every sample is read once per
// (b, h, level) and the work is that of the scatter (on lavapipe a branch
// around the update saves nothing, measured, so testing the samples against
// many small tiles would cost a full scatter per tile); GPUs take
// 64-position tiles, for parallelism, and read every sample of the level
// once per tile: B * H * sum_l ceil(H_l W_l / TP) * Q * P tests next to
// the scatter's B * Q * H * L * P * 4 updates (docs/ops.md).
#extension GL_GOOGLE_include_directive : require
#include "msdeform.glsl"

layout(constant_id = 4) const uint TP = 64; // positions per tile

layout(binding = 0) readonly buffer Loc { vec2 loc[]; };
layout(binding = 1) readonly buffer Attn { float attn[]; };
layout(binding = 2) readonly buffer G1 { float gout1[]; };
layout(binding = 2) readonly buffer G4 { vec4 gout4[]; };
layout(binding = 3) buffer GV1 { float gv1[]; };
layout(binding = 3) buffer GV4 { vec4 gv4[]; };

vec4 load_gout(uint i)
{
    return VEC == 4 ? gout4[i] : vec4(gout1[i], 0.0, 0.0, 0.0);
}

void add_gv(uint i, vec4 x)
{
    if (VEC == 4)
        gv4[i] += x;
    else
        gv1[i] += x.x;
}

void main()
{
    uint lanes = gl_WorkGroupSize.x;
    uint dv = p.Dh / VEC;
    uint chunks = (dv + lanes - 1) / lanes;
    uint last = p.L - 1;
    uint tiles = p.lv[last].w + (p.lv[last].x * p.lv[last].y + TP - 1) / TP;
    uint wg = gl_WorkGroupID.x + gl_WorkGroupID.y * gl_NumWorkGroups.x;
    uint chunk = wg % chunks, rest = wg / chunks;
    uint tile = rest % tiles, bh = rest / tiles;
    if (bh >= p.B * p.H)
        return;
    uint l = 0;
    while (l < last && tile >= p.lv[l + 1].w)
        l++;
    uint hl = p.lv[l].x, wl = p.lv[l].y;
    uint t0 = (tile - p.lv[l].w) * TP, t1 = min(t0 + TP, hl * wl);
    uint b = bh / p.H, h = bh % p.H;
    uint cv = chunk * lanes + gl_LocalInvocationID.x;
    bool live = cv < dv;
    uint stride = p.H * dv; // between positions, in channel vectors
    uint base = ((b * p.S + p.lv[l].z) * p.H + h) * dv + cv;
    uint lp = p.L * p.P;

    if (live && (p.flags & ACC_VALUE) == 0)
        for (uint pos = t0; pos < t1; pos++) {
            if (VEC == 4)
                gv4[base + pos * stride] = vec4(0.0);
            else
                gv1[base + pos * stride] = 0.0;
        }
    for (uint q = 0; q < p.Q; q++) {
        uint bqh = (b * p.Q + q) * p.H + h;
        for (uint k = 0; k < p.P; k++) {
            uint s = bqh * lp + l * p.P + k;
            ivec2 c;
            vec2 f;
            cell(loc[s], hl, wl, c, f);
            bool hit[4];
            bool any = false;
            uint at[4];
            [[unroll]] for (uint j = 0; j < 4; j++) {
                ivec2 cj = c + ivec2(j & 1, j >> 1);
                uint pos = uint(cj.y) * wl + uint(cj.x);
                hit[j] = inside(cj, hl, wl) && pos >= t0 && pos < t1;
                at[j] = pos;
                any = any || hit[j];
            }
            if (live && any) { // the same in every invocation but the channel check
                float a = attn[s];
                vec4 g = load_gout(bqh * dv + cv);
                float w[4] = float[4]((1.0 - f.x) * (1.0 - f.y), f.x * (1.0 - f.y),
                                      (1.0 - f.x) * f.y, f.x * f.y);
                [[unroll]] for (uint j = 0; j < 4; j++)
                    if (hit[j])
                        add_gv(base + at[j] * stride, (a * w[j]) * g);
            }
        }
    }
}
