#version 450
// Dice loss backward (shapes and formula: loss_dice.glsl). With
// A = 2 sum p t + 1 = B - d, d loss_m / d p_j = (A - 2 t_j B) / B^2, so
//   dx_mj = dloss / normalizer * (B (1 - 2 t_mj) - d_m) / B^2 * p_mj (1 - p_mj)
// One workgroup per mask: it sums its mask (as the forward does), then
// writes the mask's gradient.
//   x, target, dx: (M, P)  dloss: (1); dx overwritten or, when accumulate,
//   added to.
#extension GL_GOOGLE_include_directive : require
#include "common.glsl"

LOCAL_SIZE_FROM_SPEC; // before loss.glsl: wg_sum sizes its array by it
#define WG_SUM
#include "loss.glsl"
#include "loss_dice.glsl"

layout(binding = 2) readonly buffer DLoss { float dloss[]; };
layout(binding = 3) buffer DX1 { float dx1[]; };
layout(binding = 3) buffer DX4 { vec4 dx4[]; };

void main()
{
    uint m = gl_WorkGroupID.x + gl_WorkGroupID.y * gl_NumWorkGroups.x;
    if (m >= p.M)
        return; // the whole workgroup: the barriers below stay uniform
    vec3 s = dice_sums(m);
    float B = s.x + s.y + 1.0, d = s.z;
    float coef = dloss[0] / p.normalizer / (B * B);
    uint tid = gl_LocalInvocationID.x, L = gl_WorkGroupSize.x;
    if (p.P % 4u == 0u) {
        uint base = m * (p.P / 4u);
        for (uint j = tid; j < p.P / 4u; j += L) {
            vec4 xv = x4[base + j], tv = t4[base + j];
            vec2 s0 = sigmoid2(xv.x), s1 = sigmoid2(xv.y), s2 = sigmoid2(xv.z),
                 s3 = sigmoid2(xv.w);
            vec4 pq = vec4(s0.x * s0.y, s1.x * s1.y, s2.x * s2.y, s3.x * s3.y);
            vec4 g = coef * (B * (1.0 - 2.0 * tv) - d) * pq;
            dx4[base + j] = p.accumulate != 0u ? dx4[base + j] + g : g;
        }
    } else {
        uint base = m * p.P;
        for (uint j = tid; j < p.P; j += L) {
            vec2 sg = sigmoid2(x1[base + j]);
            float g = coef * (B * (1.0 - 2.0 * t1[base + j]) - d) * (sg.x * sg.y);
            dx1[base + j] = p.accumulate != 0u ? dx1[base + j] + g : g;
        }
    }
}
