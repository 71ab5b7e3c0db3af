#version 450
// fill: out[i] = value.   out: (n)
#extension GL_GOOGLE_include_directive : require
#include "common.glsl"

LOCAL_SIZE_FROM_SPEC;

layout(push_constant) uniform Push { uint n; float value; } p;
layout(binding = 0) writeonly buffer Out { float o[]; };

void main()
{
    uint i = flat_index();
    if (i < p.n)
        o[i] = p.value;
}
