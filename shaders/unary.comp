#version 450
// Elementwise unary ops.   a, out: (n)
//   OP 0 scale: out = alpha * a
//   OP 1 boolean mask to additive: out = a != 0 ? -inf : 0
//   ACC: out += the result instead (axpy; gradient accumulation)
#extension GL_GOOGLE_include_directive : require
#include "common.glsl"

LOCAL_SIZE_FROM_SPEC;
layout(constant_id = 3) const uint OP = 0;
layout(constant_id = 4) const bool ACC = false;
layout(constant_id = 5) const bool VEC4 = false; // n % 4 == 0: 4 elements per invocation

layout(push_constant) uniform Push { uint n; float alpha; } p;
layout(binding = 0) readonly buffer A { float a[]; };
layout(binding = 1) buffer Out { float o[]; };
layout(binding = 0) readonly buffer A4 { vec4 a4[]; };
layout(binding = 1) buffer Out4 { vec4 o4[]; };

vec4 f(vec4 x)
{
    if (OP == 0)
        return p.alpha * x;
    vec4 y; // OP 1
    for (int c = 0; c < 4; c++)
        y[c] = x[c] != 0.0 ? uintBitsToFloat(0xff800000u) : 0.0; // -inf
    return y;
}

void main()
{
    uint i = flat_index();
    if (VEC4) {
        if (i >= p.n / 4u)
            return;
        vec4 y = f(a4[i]);
        o4[i] = ACC ? o4[i] + y : y;
        return;
    }
    if (i >= p.n)
        return;
    float y = f(vec4(a[i])).x;
    o[i] = ACC ? o[i] + y : y;
}
