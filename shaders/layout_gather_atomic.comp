#version 450
// Backward of the row gather with float atomics (needs
// shaderBufferFloat32AtomicAdd): dtable[clamp(idx[n]), c] += dy[n, c], one
// invocation per element of dy. The host clears dtable first unless
// accumulating. Summation order is up to the device.
#extension GL_GOOGLE_include_directive : require
#extension GL_EXT_shader_atomic_float : require
#include "common.glsl"

LOCAL_SIZE_FROM_SPEC;

layout(push_constant) uniform Push { uint R, C, N, acc; } p;
layout(binding = 0) readonly buffer Src { float dy[]; };
layout(binding = 1) readonly buffer Idx { int idx[]; };
layout(binding = 2) buffer Dst { float dtable[]; };

void main()
{
    uint i = flat_index();
    if (i >= p.N * p.C)
        return;
    uint n = i / p.C, c = i % p.C;
    uint r = uint(clamp(idx[n], 0, int(p.R) - 1));
    atomicAdd(dtable[r * p.C + c], dy[i]);
}
