#version 450
// fill: out[i] = value.   out: (n)
#extension GL_GOOGLE_include_directive : require
#include "common.glsl"

LOCAL_SIZE_FROM_SPEC;

layout(constant_id = 5) const bool VEC4 = false; // n % 4 == 0: 4 elements per invocation

layout(push_constant) uniform Push { uint n; float value; } p;
layout(binding = 0) writeonly buffer Out { float o[]; };
layout(binding = 0) writeonly buffer Out4 { vec4 o4[]; };

void main()
{
    uint i = flat_index();
    if (VEC4) {
        if (i < p.n / 4u)
            o4[i] = vec4(p.value);
    } else if (i < p.n) {
        o[i] = p.value;
    }
}
