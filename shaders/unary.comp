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

layout(push_constant) uniform Push { uint n; float alpha; } p;
layout(binding = 0) readonly buffer A { float a[]; };
layout(binding = 1) buffer Out { float o[]; };

void main()
{
    uint i = flat_index();
    if (i >= p.n)
        return;
    float x = a[i];
    float y = x;
    if (OP == 0)
        y = p.alpha * x;
    else if (OP == 1)
        y = x != 0.0 ? uintBitsToFloat(0xff800000u) : 0.0; // -inf
    o[i] = ACC ? o[i] + y : y;
}
