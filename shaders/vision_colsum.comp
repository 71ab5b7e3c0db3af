#version 450
// Column sums in a fixed order: out[c] (+)= sum over m of x[m, c], x (M, C).
// The bias gradient of depth_to_space2. A workgroup of (CW, RL) invocations
// owns CW units of columns (a unit is one column, or 4 as a vec4 when VEC
// is 4); lane (cx, ry) sums rows ry, ry + RL, ... and the RL partial sums
// are added in a fixed tree in shared memory, so the result is the same
// bits on every run with the same local size. RL a power of 2; CW * RL at
// most 1024 (VEC 1) or 256 (VEC 4). p.c counts units.
#extension GL_GOOGLE_include_directive : require
#include "common.glsl"

LOCAL_SIZE_FROM_SPEC;
layout(constant_id = 3) const uint VEC = 1;

layout(push_constant) uniform Push { uint m, c, acc; } p;
layout(binding = 0) readonly buffer X { float x[]; };
layout(binding = 0) readonly buffer X4 { vec4 x4[]; };
layout(binding = 1) buffer Out { float o[]; };
layout(binding = 1) buffer Out4 { vec4 o4[]; };

shared float part[1024];
shared vec4 part4[256];

void main()
{
    uint cw = gl_WorkGroupSize.x, rl = gl_WorkGroupSize.y;
    uint cx = gl_LocalInvocationID.x, ry = gl_LocalInvocationID.y;
    uint c = gl_WorkGroupID.x * cw + cx, slot = ry * cw + cx;
    if (VEC == 4) {
        vec4 s = vec4(0.0);
        if (c < p.c)
            for (uint m = ry; m < p.m; m += rl)
                s += x4[m * p.c + c];
        part4[slot] = s;
    } else {
        float s = 0.0;
        if (c < p.c)
            for (uint m = ry; m < p.m; m += rl)
                s += x[m * p.c + c];
        part[slot] = s;
    }
    for (uint half_ = rl / 2; half_ > 0; half_ /= 2) {
        barrier();
        if (ry < half_) {
            if (VEC == 4)
                part4[slot] += part4[slot + half_ * cw];
            else
                part[slot] += part[slot + half_ * cw];
        }
    }
    if (ry == 0 && c < p.c) {
        if (VEC == 4)
            o4[c] = p.acc != 0 ? o4[c] + part4[cx] : part4[cx];
        else
            o[c] = p.acc != 0 ? o[c] + part[cx] : part[cx];
    }
}
