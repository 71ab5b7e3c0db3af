#version 450
// The next dropout seed, on the device: seed = lowbias32(seed + golden
// ratio). One invocation; recorded at the start of every run of a graph
// with dropout, so runs draw new masks without a host upload, and the
// sequence is the same from the same start (0 after compile).
#extension GL_GOOGLE_include_directive : require
#include "common.glsl"

LOCAL_SIZE_FROM_SPEC;

layout(push_constant) uniform Push { uint unused; } p;
layout(binding = 0) buffer S { uint seed[]; };

void main()
{
    if (gl_GlobalInvocationID.x != 0u)
        return;
    uint x = seed[0] + 0x9e3779b9u;
    x ^= x >> 16;
    x *= 0x7feb352du;
    x ^= x >> 15;
    x *= 0x846ca68bu;
    x ^= x >> 16;
    seed[0] = x;
}
