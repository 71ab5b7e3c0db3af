#version 450
// Sigmoid binary cross-entropy with logits, mean over elements (PyTorch's
// F.binary_cross_entropy_with_logits, reduction='mean'):
//   loss = 1/n sum_k max(x_k, 0) - x_k t_k + log1p(exp(-|x_k|))
// which neither overflows nor loses the small term for |x| up to 1e4.
//   x, target: (n), targets in [0, 1]    loss: (1)
// One workgroup, a fixed summation order (loss.glsl); vec4 loads (tensors
// start on 16 bytes), the last n % 4 elements as scalars.
#extension GL_GOOGLE_include_directive : require
#include "common.glsl"

LOCAL_SIZE_FROM_SPEC; // before loss.glsl: wg_sum sizes its array by it
#define WG_SUM
#include "loss.glsl"

layout(push_constant) uniform Push { uint n; } p;
layout(binding = 0) readonly buffer X1 { float x1[]; };
layout(binding = 0) readonly buffer X4 { vec4 x4[]; };
layout(binding = 1) readonly buffer T1 { float t1[]; };
layout(binding = 1) readonly buffer T4 { vec4 t4[]; };
layout(binding = 2) writeonly buffer Loss { float loss[]; };

float bce(float x, float t)
{
    return max(x, 0.0) - x * t + log1p_pos(exp(-abs(x)));
}

void main()
{
    uint tid = gl_LocalInvocationID.x, L = gl_WorkGroupSize.x;
    vec4 acc = vec4(0.0);
    uint n4 = p.n / 4u;
    for (uint j = tid; j < n4; j += L) {
        vec4 a = x4[j], b = t4[j];
        acc += vec4(bce(a.x, b.x), bce(a.y, b.y), bce(a.z, b.z), bce(a.w, b.w));
    }
    for (uint k = 4u * n4 + tid; k < p.n; k += L)
        acc.x += bce(x1[k], t1[k]);
    vec4 s = wg_sum(acc);
    if (tid == 0u)
        loss[0] = ((s.x + s.y) + (s.z + s.w)) / float(p.n);
}
