#version 450
// Activations, backward.   x, dy, dx: (n); dx may be dy
//   dx (+)= f'(x) dy
//   OP 0 relu: f'(x) = 1 where x > 0, else 0 (0 at x = 0, like PyTorch)
//   OP 1 gelu: f'(x) = Phi(x) + x phi(x)
//   OP 2 sigmoid: f'(x) = s (1 - s), s = sigmoid(x)
//   OP 3 softplus: f'(x) = sigmoid(x)
//   OP 4 silu: f'(x) = s + x s (1 - s)
// acc 1 adds into dx, 0 overwrites it (without reading it).
#extension GL_GOOGLE_include_directive : require
#include "common.glsl"

LOCAL_SIZE_FROM_SPEC;
layout(constant_id = 3) const uint OP = 0;
#include "nn.glsl"

layout(constant_id = 5) const bool VEC4 = false; // n % 4 == 0: 4 elements per invocation

layout(push_constant) uniform Push { uint n; uint acc; } p;
layout(binding = 0) readonly buffer X { float x[]; };
layout(binding = 1) readonly buffer DY { float dy[]; };
layout(binding = 2) buffer DX { float dx[]; };
layout(binding = 0) readonly buffer X4 { vec4 x4[]; };
layout(binding = 1) readonly buffer DY4 { vec4 dy4[]; };
layout(binding = 2) buffer DX4 { vec4 dx4[]; };

float grad(float v, float g)
{
    float s = nn_sigmoid(v);
    return OP == 0   ? (v > 0.0 ? g : 0.0)
           : OP == 1 ? nn_gelu_grad(v) * g
           : OP == 2 ? s * (1.0 - s) * g
           : OP == 3 ? s * g
                     : (s + v * s * (1.0 - s)) * g;
}

void main()
{
    uint i = flat_index();
    if (VEC4) {
        if (i >= p.n / 4u)
            return;
        vec4 v = x4[i], g = dy4[i], d;
        for (int c = 0; c < 4; c++)
            d[c] = grad(v[c], g[c]);
        dx4[i] = p.acc != 0u ? dx4[i] + d : d;
        return;
    }
    if (i >= p.n)
        return;
    float d = grad(x[i], dy[i]);
    dx[i] = p.acc != 0u ? dx[i] + d : d;
}
