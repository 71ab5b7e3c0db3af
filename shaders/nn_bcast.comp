#version 450
// Backward of the reductions: dx[i] (+)= scale * dy[i / C].
//   dy: (n / C)   dx: (n)
// broadcast_rows: C the row length; broadcast_all: C = n (dy has one
// element). acc 1 adds into dx, 0 overwrites it (without reading it).
#extension GL_GOOGLE_include_directive : require
#include "common.glsl"

LOCAL_SIZE_FROM_SPEC;

layout(push_constant) uniform Push { uint n; uint C; float scale; uint acc; } p;
layout(binding = 0) readonly buffer DY { float dy[]; };
layout(binding = 1) buffer DX { float dx[]; };

void main()
{
    uint i = flat_index();
    if (i >= p.n)
        return;
    float d = p.scale * dy[i / p.C];
    dx[i] = p.acc != 0u ? dx[i] + d : d;
}
