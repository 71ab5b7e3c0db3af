#version 450
// Dropout, forward and backward.   a, out: (n); seed: (1) uint
//   keep(i) = u(seed, i) >= p, u uniform in [0, 1) from a hash of the seed
//   and the element's index (lowbias32), so the backward recomputes the
//   mask instead of storing it, and a run is reproducible from its seed.
//   OP 0 forward:  out = keep ? a / (1 - p) : 0
//   OP 1 backward: out (+)= keep ? a / (1 - p) : 0   (a = dy; acc adds)
//   OP 2 rand:     out = u(seed ^ salt, i), the salt in acc's place; a unread
#extension GL_GOOGLE_include_directive : require
#include "common.glsl"

LOCAL_SIZE_FROM_SPEC;
layout(constant_id = 3) const uint OP = 0;

layout(push_constant) uniform Push { uint n; float p; uint acc; } p;
layout(binding = 0) readonly buffer A { float a[]; };
layout(binding = 1) readonly buffer S { uint seed[]; };
layout(binding = 2) buffer Out { float o[]; };

uint lowbias32(uint x)
{
    x ^= x >> 16;
    x *= 0x7feb352du;
    x ^= x >> 15;
    x *= 0x846ca68bu;
    x ^= x >> 16;
    return x;
}

void main()
{
    uint i = flat_index();
    if (i >= p.n)
        return;
    uint s = OP == 2 ? seed[0] ^ p.acc : seed[0];
    uint h = lowbias32(s ^ lowbias32(i + 0x9e3779b9u));
    float u = float(h >> 8) * (1.0 / 16777216.0);
    if (OP == 2) {
        o[i] = u;
        return;
    }
    float r = u >= p.p ? a[i] / (1.0 - p.p) : 0.0;
    o[i] = OP == 1 && p.acc != 0u ? o[i] + r : r;
}
