#version 450
// Softmax cross-entropy, forward part 2: the weighted mean, PyTorch's
// F.cross_entropy(x, target, weight, reduction='mean'):
//   loss = sum_i w[t_i] nll_i / sum_i w[t_i],  nll_i = logsumexp_i - x[i, t_i]
// over the rows with t_i >= 0 (t_i < 0: ignored). A target >= C, or a total
// weight of 0 (every row ignored), makes the loss NaN.
//   x: (N, C)  target: (N) int  weight: (C), read only when has_weight
//   saved: (N + 1, 2) from loss_ce_rows.comp; this kernel writes row N:
//   (total weight, number of rows counted), which the backward reads.
//   loss: (1)
// One workgroup, a fixed summation order (loss.glsl).
#extension GL_GOOGLE_include_directive : require
#include "common.glsl"

LOCAL_SIZE_FROM_SPEC; // before loss.glsl: wg_sum sizes its array by it
#define WG_SUM
#include "loss.glsl"

layout(push_constant) uniform Push { uint N, C, has_weight; } p;
layout(binding = 0) readonly buffer X { float x[]; };
layout(binding = 1) readonly buffer T { int target[]; };
layout(binding = 2) readonly buffer W { float weight[]; };
layout(binding = 3) buffer Saved { float saved[]; };
layout(binding = 4) writeonly buffer Loss { float loss[]; };

void main()
{
    uint tid = gl_LocalInvocationID.x;
    vec4 acc = vec4(0.0); // (sum w nll, sum w, rows counted, bad targets)
    for (uint i = tid; i < p.N; i += gl_WorkGroupSize.x) {
        int t = target[i];
        if (t < 0)
            continue;
        if (uint(t) >= p.C) {
            acc.w += 1.0;
            continue;
        }
        float w = p.has_weight != 0u ? weight[t] : 1.0;
        float nll = (saved[2u * i] - x[i * p.C + uint(t)]) + log1p_pos(saved[2u * i + 1u]);
        acc.xyz += vec3(w * nll, w, 1.0);
    }
    vec4 s = wg_sum(acc);
    if (tid == 0u) {
        saved[2u * p.N] = s.y;
        saved[2u * p.N + 1u] = s.z;
        loss[0] = s.w > 0.0 || s.y == 0.0 ? NAN_F : s.x / s.y;
    }
}
