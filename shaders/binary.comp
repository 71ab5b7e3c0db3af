#version 450
// Elementwise binary ops with trailing broadcast of b.
//   a, out: (n)   b: (nb), nb divides n; b repeats along a's leading dims
//   OP 0 add: out = a + b     OP 1 mul: out = a * b
//   ACC: out += the result instead (gradient accumulation)
#extension GL_GOOGLE_include_directive : require
#include "common.glsl"

LOCAL_SIZE_FROM_SPEC;
layout(constant_id = 3) const uint OP = 0;
layout(constant_id = 4) const bool ACC = false;
layout(constant_id = 5) const bool VEC4 = false; // n, nb % 4 == 0: 4 elements per invocation

layout(push_constant) uniform Push { uint n; uint nb; } p;
layout(binding = 0) readonly buffer A { float a[]; };
layout(binding = 1) readonly buffer B { float b[]; };
layout(binding = 2) buffer Out { float o[]; };
layout(binding = 0) readonly buffer A4 { vec4 a4[]; };
layout(binding = 1) readonly buffer B4 { vec4 b4[]; };
layout(binding = 2) buffer Out4 { vec4 o4[]; };

void main()
{
    uint i = flat_index();
    if (VEC4) {
        if (i >= p.n / 4u)
            return;
        vec4 x = a4[i];
        vec4 y = b4[p.nb == p.n ? i : i % (p.nb / 4u)];
        vec4 r = OP == 0 ? x + y : x * y;
        o4[i] = ACC ? o4[i] + r : r;
        return;
    }
    if (i >= p.n)
        return;
    float x = a[i];
    float y = b[p.nb == p.n ? i : i % p.nb];
    float r = OP == 0 ? x + y : x * y;
    o[i] = ACC ? o[i] + r : r;
}
