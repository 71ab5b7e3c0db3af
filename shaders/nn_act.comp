#version 450
// Activations, forward.   x, y: (n); y may be x
//   OP 0 relu: y = max(x, 0)
//   OP 1 gelu: y = x Phi(x) (exact erf form, see nn.glsl)
//   OP 2 sigmoid: y = 1 / (1 + e^-x)
//   OP 3 softplus: y = log(1 + e^x)
//   OP 4 silu (swish): y = x sigmoid(x)
#extension GL_GOOGLE_include_directive : require
#include "common.glsl"

LOCAL_SIZE_FROM_SPEC;
layout(constant_id = 3) const uint OP = 0;
#include "nn.glsl"

layout(constant_id = 5) const bool VEC4 = false; // n % 4 == 0: 4 elements per invocation

layout(push_constant) uniform Push { uint n; } p;
layout(binding = 0) readonly buffer X { float x[]; };
layout(binding = 1) writeonly buffer Y { float y[]; };
layout(binding = 0) readonly buffer X4 { vec4 x4[]; };
layout(binding = 1) writeonly buffer Y4 { vec4 y4[]; };

float act(float v)
{
    return OP == 0   ? (v > 0.0 ? v : 0.0)
           : OP == 1 ? nn_gelu(v)
           : OP == 2 ? nn_sigmoid(v)
           : OP == 3 ? nn_softplus(v)
                     : v * nn_sigmoid(v);
}

void main()
{
    uint i = flat_index();
    if (VEC4) {
        if (i >= p.n / 4u)
            return;
        vec4 v = x4[i], r;
        for (int c = 0; c < 4; c++)
            r[c] = act(v[c]);
        y4[i] = r;
        return;
    }
    if (i >= p.n)
        return;
    y[i] = act(x[i]);
}
