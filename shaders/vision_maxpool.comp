#version 450
// 2x2 max-pool, stride 2, channels-last, with the argmax for backward.
//   x (B, H, W, C) -> y (B, H/2, W/2, C) (floor), argmax (i32, y's shape)
//   argmax = h*W + w of the first maximum in row-major window order; a NaN
//   beats every number (the last NaN wins), as PyTorch's kernels compare.
// One invocation per element of y, or per 4 channels when VEC is 4 (C a
// multiple of 4; p.c then counts vec4s).
#extension GL_GOOGLE_include_directive : require
#include "common.glsl"

LOCAL_SIZE_FROM_SPEC;
layout(constant_id = 3) const uint VEC = 1;

layout(push_constant) uniform Push { uint total, h, w, c; } p;
layout(binding = 0) readonly buffer X { float x[]; };
layout(binding = 0) readonly buffer X4 { vec4 x4[]; };
layout(binding = 1) writeonly buffer Y { float y[]; };
layout(binding = 1) writeonly buffer Y4 { vec4 y4[]; };
layout(binding = 2) writeonly buffer Am { int am[]; };
layout(binding = 2) writeonly buffer Am4 { ivec4 am4[]; };

void main()
{
    uint i = flat_index();
    if (i >= p.total)
        return;
    uint ho_n = p.h / 2, wo_n = p.w / 2;
    uint c = i % p.c, t = i / p.c;
    uint wo = t % wo_n;
    t /= wo_n;
    uint ho = t % ho_n, b = t / ho_n;
    vec4 best = vec4(uintBitsToFloat(0xff800000u)); // -inf
    ivec4 at = ivec4((2 * ho) * p.w + 2 * wo);
    for (uint k = 0; k < 4; k++) {
        uint hh = 2 * ho + k / 2, ww = 2 * wo + k % 2;
        uint j = ((b * p.h + hh) * p.w + ww) * p.c + c;
        vec4 v;
        if (VEC == 4)
            v = x4[j];
        else
            v = vec4(x[j], 0.0, 0.0, 0.0);
        bvec4 take = bvec4(uvec4(greaterThan(v, best)) | uvec4(isnan(v)));
        best = mix(best, v, take);
        at = mix(at, ivec4(hh * p.w + ww), take);
    }
    if (VEC == 4) {
        y4[i] = best;
        am4[i] = at;
    } else {
        y[i] = best.x;
        am[i] = at.x;
    }
}
