#version 450
// Backward of the 2x2 max-pool: windows do not overlap, so each element of
// dx has at most one window and takes its gradient iff it is the argmax.
//   dy, argmax (B, H/2, W/2, C)   dx (B, H, W, C) (+)=
// One invocation per element of dx, or per 4 channels when VEC is 4.
#extension GL_GOOGLE_include_directive : require
#include "common.glsl"

LOCAL_SIZE_FROM_SPEC;
layout(constant_id = 3) const uint VEC = 1;

layout(push_constant) uniform Push { uint total, h, w, c, acc; } p;
layout(binding = 0) readonly buffer Dy { float dy[]; };
layout(binding = 0) readonly buffer Dy4 { vec4 dy4[]; };
layout(binding = 1) readonly buffer Am { int am[]; };
layout(binding = 1) readonly buffer Am4 { ivec4 am4[]; };
layout(binding = 2) buffer Dx { float dx[]; };
layout(binding = 2) buffer Dx4 { vec4 dx4[]; };

void main()
{
    uint i = flat_index();
    if (i >= p.total)
        return;
    uint ho_n = p.h / 2, wo_n = p.w / 2;
    uint c = i % p.c, t = i / p.c;
    uint ww = t % p.w;
    t /= p.w;
    uint hh = t % p.h, b = t / p.h;
    vec4 g = vec4(0.0);
    if (hh / 2 < ho_n && ww / 2 < wo_n) {
        uint j = ((b * ho_n + hh / 2) * wo_n + ww / 2) * p.c + c;
        ivec4 a;
        vec4 d;
        if (VEC == 4) {
            a = am4[j];
            d = dy4[j];
        } else {
            a = ivec4(am[j]);
            d = vec4(dy[j]);
        }
        g = mix(vec4(0.0), d, equal(a, ivec4(hh * p.w + ww)));
    }
    if (VEC == 4)
        dx4[i] = p.acc != 0 ? dx4[i] + g : g;
    else
        dx[i] = p.acc != 0 ? dx[i] + g.x : g.x;
}
