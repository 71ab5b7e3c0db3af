#version 450
// Sum of squares over up to seven tensors (the trainable gradients), for
// clipping by the global norm on the device: optim_adamw.comp reads the
// result, so no value travels to the host.
//   x0..x6: (n[i]) each (n[i] = 0: binding unused)   out: (1)
//   out = (accumulate ? out : 0) + sum_i sum_k x_i[k]^2
// One workgroup; each invocation sums a fixed strided subset with four
// accumulators (vec4 loads, the last n % 4 elements as scalars), then a fixed
// tree adds them (loss.glsl): deterministic. More than seven tensors take
// several dispatches, each accumulating into out in order.
#extension GL_GOOGLE_include_directive : require
#include "common.glsl"

LOCAL_SIZE_FROM_SPEC; // before loss.glsl: wg_sum sizes its array by it
#define WG_SUM
#include "loss.glsl"

layout(push_constant) uniform Push { uint n[7]; uint accumulate; } p;

#define DECL(i)                                                                 \
    layout(binding = i) readonly buffer S##i { float s##i[]; };                 \
    layout(binding = i) readonly buffer V##i { vec4 v##i[]; };
DECL(0) DECL(1) DECL(2) DECL(3) DECL(4) DECL(5) DECL(6)
layout(binding = 7) buffer Out { float o[]; };

// GLSL cannot index an array of buffer blocks with a variable, hence a macro
// per binding.
#define SUMSQ(i)                                                                \
    {                                                                           \
        uint n4 = p.n[i] / 4u;                                                  \
        for (uint j = tid; j < n4; j += L) {                                    \
            vec4 a = v##i[j];                                                   \
            acc = fma(a, a, acc);                                               \
        }                                                                       \
        for (uint k = 4u * n4 + tid; k < p.n[i]; k += L) {                      \
            float a = s##i[k];                                                  \
            acc.x = fma(a, a, acc.x);                                           \
        }                                                                       \
    }

void main()
{
    uint tid = gl_LocalInvocationID.x, L = gl_WorkGroupSize.x;
    vec4 acc = vec4(0.0);
    SUMSQ(0) SUMSQ(1) SUMSQ(2) SUMSQ(3) SUMSQ(4) SUMSQ(5) SUMSQ(6)
    vec4 s = wg_sum(acc);
    if (tid == 0u) {
        float total = (s.x + s.y) + (s.z + s.w);
        o[0] = p.accumulate != 0u ? o[0] + total : total;
    }
}
