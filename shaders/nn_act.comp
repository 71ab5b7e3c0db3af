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

layout(push_constant) uniform Push { uint n; } p;
layout(binding = 0) readonly buffer X { float x[]; };
layout(binding = 1) writeonly buffer Y { float y[]; };

void main()
{
    uint i = flat_index();
    if (i >= p.n)
        return;
    float v = x[i];
    y[i] = OP == 0   ? (v > 0.0 ? v : 0.0)
           : OP == 1 ? nn_gelu(v)
           : OP == 2 ? nn_sigmoid(v)
           : OP == 3 ? nn_softplus(v)
                     : v * nn_sigmoid(v);
}
