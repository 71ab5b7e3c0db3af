#version 450
// Sigmoid binary cross-entropy with logits, backward:
//   dx_k = dloss / n * (sigmoid(x_k) - t_k)
// with sigmoid(x) - t taken as (1 - t) - (1 - sigmoid(x)) for x >= 0, so
// that it does not cancel to 0 for large x and t = 1.
//   x, target, dx: (n)  dloss: (1); dx overwritten or, when accumulate,
//   added to. Four elements per invocation (vec4; the last n % 4 scalar).
#extension GL_GOOGLE_include_directive : require
#include "common.glsl"

LOCAL_SIZE_FROM_SPEC;
#include "loss.glsl"

layout(push_constant) uniform Push { uint n, accumulate; } p;
layout(binding = 0) readonly buffer X1 { float x1[]; };
layout(binding = 0) readonly buffer X4 { vec4 x4[]; };
layout(binding = 1) readonly buffer T1 { float t1[]; };
layout(binding = 1) readonly buffer T4 { vec4 t4[]; };
layout(binding = 2) readonly buffer DLoss { float dloss[]; };
layout(binding = 3) buffer DX1 { float dx1[]; };
layout(binding = 3) buffer DX4 { vec4 dx4[]; };

float grad(float x, float t)
{
    vec2 pq = sigmoid2(x);
    return x >= 0.0 ? (1.0 - t) - pq.y : pq.x - t;
}

void main()
{
    uint j = flat_index();
    if (j >= (p.n + 3u) / 4u)
        return;
    float scale = dloss[0] / float(p.n);
    if (4u * j + 3u < p.n) {
        vec4 a = x4[j], b = t4[j];
        vec4 g = scale * vec4(grad(a.x, b.x), grad(a.y, b.y), grad(a.z, b.z), grad(a.w, b.w));
        dx4[j] = p.accumulate != 0u ? dx4[j] + g : g;
    } else {
        for (uint k = 4u * j; k < p.n; k++) {
            float g = scale * grad(x1[k], t1[k]);
            dx1[k] = p.accumulate != 0u ? dx1[k] + g : g;
        }
    }
}
