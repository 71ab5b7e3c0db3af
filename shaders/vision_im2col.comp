#version 450
// Patch embedding as im2col, and its backward (the inverse rearrangement).
//   img (B, Cin, H, W)   cols (B, Hp*Wp, Cin*P*P), Hp = H/P, Wp = W/P
//   cols[b, py*Wp + px, (cin*P + ky)*P + kx] = img[b, cin, py*P + ky, px*P + kx]
// MODE 0: src = img, dst = cols, one invocation per element of cols.
// MODE 1: src = dcols, dst = dimg (+)=, one invocation per element of dimg.
// VEC 4 (P a multiple of 4): one invocation per 4 consecutive kx (x), which
// are contiguous on both sides: vec4 loads and stores.
#extension GL_GOOGLE_include_directive : require
#include "common.glsl"

LOCAL_SIZE_FROM_SPEC;
layout(constant_id = 3) const uint MODE = 0;
layout(constant_id = 4) const uint VEC = 1;

layout(push_constant) uniform Push {
    uint total;        // invocations: elements (or vec4s) of dst
    uint cin, h, w, psize;
    uint acc;          // MODE 1: add into dst
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
    uint e = i * VEC; // first element of dst this invocation writes
    uint P = p.psize, wp = p.w / P, np = (p.h / P) * wp, K = p.cin * P * P;
    uint from;        // the matching element of src
    if (MODE == 0) {
        uint k = e % K, t = e / K;
        uint pi = t % np, b = t / np;
        uint cin = k / (P * P), ky = (k / P) % P, kx = k % P;
        uint y = (pi / wp) * P + ky, x = (pi % wp) * P + kx;
        from = ((b * p.cin + cin) * p.h + y) * p.w + x;
    } else {
        uint x = e % p.w, t = e / p.w;
        uint y = t % p.h;
        t /= p.h;
        uint cin = t % p.cin, b = t / p.cin;
        from = ((b * np + (y / P) * wp + x / P) * K) + (cin * P + y % P) * P + x % P;
    }
    if (VEC == 4) {
        vec4 v = src4[from / 4];
        dst4[i] = MODE == 1 && p.acc != 0 ? dst4[i] + v : v;
    } else {
        float v = src[from];
        dst[i] = MODE == 1 && p.acc != 0 ? dst[i] + v : v;
    }
}
