#version 450
// Strided copy over a 4-D iteration space: the elementwise permute, slice,
// concat's backward and slice's backward (core/ops/layout.c).
//   for every c in [0, n):  dst[dbase + c.ds] (+)= src[sbase + c.ss]
// With a window (wax < 4), c[wax] is a destination coordinate: the source
// is read at c[wax] - wstart when that lies in [0, wlen), and 0 is written
// elsewhere (the backward of slice that overwrites).
// VEC 4: every index above counts vec4s (the host divided the shapes along
// w, the strides and the bases by 4 where all allowed it).
#extension GL_GOOGLE_include_directive : require
#include "common.glsl"

LOCAL_SIZE_FROM_SPEC;
layout(constant_id = 3) const uint VEC = 1;

layout(push_constant) uniform Push {
    uvec4 n;          // iteration shape, outermost first
    uvec4 ss, ds;     // source and destination strides, in elements
    uint sbase, dbase;
    uint total;       // n.x * n.y * n.z * n.w
    uint acc;         // 1: add into dst
    uint wax, wstart, wlen;
} p;
layout(binding = 0) readonly buffer Src { float src[]; };
layout(binding = 0) readonly buffer Src4 { vec4 src4[]; };
layout(binding = 1) buffer Dst { float dst[]; };
layout(binding = 1) buffer Dst4 { vec4 dst4[]; };

void main()
{
    uint i = flat_index();
    if (i >= p.total)
        return;
    uvec4 c;
    c.w = i % p.n.w;
    i /= p.n.w;
    c.z = i % p.n.z;
    i /= p.n.z;
    c.y = i % p.n.y;
    c.x = i / p.n.y;
    uint d = p.dbase + c.x * p.ds.x + c.y * p.ds.y + c.z * p.ds.z + c.w * p.ds.w;
    bool inside = true;
    if (p.wax < 4) {
        uint cw = c[p.wax];
        inside = cw >= p.wstart && cw - p.wstart < p.wlen;
        c[p.wax] = cw - p.wstart;
    }
    uint s = p.sbase + c.x * p.ss.x + c.y * p.ss.y + c.z * p.ss.z + c.w * p.ss.w;
    if (VEC == 4) {
        vec4 v = vec4(0.0);
        if (inside)
            v = src4[s];
        dst4[d] = p.acc != 0 ? dst4[d] + v : v;
    } else {
        float v = 0.0;
        if (inside)
            v = src[s];
        dst[d] = p.acc != 0 ? dst[d] + v : v;
    }
}
