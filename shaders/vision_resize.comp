#version 450
// Bilinear resize with PyTorch's align_corners=False semantics, and its
// backward as a gather (deterministic, no atomics).
//   x (B, H, W, C)   y (B, Ho, Wo, C)
// Along an axis of `n` inputs, output d reads i0 = floor(src) and
// i1 = min(i0 + 1, n - 1) with weights 1 - l and l, where
// src = max(scale * (d + 0.5) - 0.5, 0), l = src - i0, scale = n / out (f32).
// One invocation per element of dst, or per 4 channels when VEC is 4 (C a
// multiple of 4: vec4 loads, 4x fewer index computations; p.c then counts
// vec4s).
// MODE 0: src = x, dst = y.
// MODE 1: src = dy, dst = dx (+)=. For each element of dx: i0 is
//   non-decreasing in d, so the outputs that read input i are the
//   contiguous range with i0(d) in [i - 1, i]; it is found from an estimate
//   corrected with the forward's own i0(), then summed in ascending order.
#extension GL_GOOGLE_include_directive : require
#include "common.glsl"

LOCAL_SIZE_FROM_SPEC;
layout(constant_id = 3) const uint MODE = 0;
layout(constant_id = 4) const uint VEC = 1;

layout(push_constant) uniform Push {
    uint total;          // invocations: elements (or vec4s) of dst
    uint h, w, c;        // x's spatial size and channels (vec4s when VEC is 4)
    uint ho, wo;         // y's spatial size
    float sh, sw;        // h / ho and w / wo, in f32
    uint acc;            // MODE 1: add into dst
} p;
layout(binding = 0) readonly buffer Src { float src[]; };
layout(binding = 0) readonly buffer Src4 { vec4 src4[]; };
layout(binding = 1) buffer Dst { float dst[]; };
layout(binding = 1) buffer Dst4 { vec4 dst4[]; };

// Units of VEC floats; the scalar specialisation's unused lanes fold away.
vec4 load(uint i)
{
    if (VEC == 4)
        return src4[i];
    return vec4(src[i], 0.0, 0.0, 0.0);
}

void store(uint i, vec4 v)
{
    if (VEC == 4)
        dst4[i] = p.acc != 0 ? dst4[i] + v : v;
    else
        dst[i] = p.acc != 0 ? dst[i] + v.x : v.x;
}

float src_coord(uint d, float scale)
{
    return max(scale * (float(d) + 0.5) - 0.5, 0.0);
}

// Source index i0 and the weight l of i0 + 1 (clamped to n - 1).
uint lo_index(uint d, float scale, out float l)
{
    float s = src_coord(d, scale);
    uint i0 = uint(s);
    l = s - float(i0);
    return i0;
}

uint i0_of(uint d, float scale)
{
    float l;
    return lo_index(d, scale, l);
}

// The first output d in [0, out] with i0(d) >= t.
uint first_reading(int t, float scale, uint out_n)
{
    if (t <= 0)
        return 0;
    float est = (float(t) + 0.5) / scale - 0.5;
    uint d = uint(clamp(ceil(est), 0.0, float(out_n)));
    while (d > 0 && i0_of(d - 1, scale) >= uint(t))
        d--;
    while (d < out_n && i0_of(d, scale) < uint(t))
        d++;
    return d;
}

// Weight with which output d reads input i along an axis of n inputs.
float weight(uint d, uint i, float scale, uint n)
{
    float l;
    uint i0 = lo_index(d, scale, l);
    uint i1 = i0 < n - 1 ? i0 + 1 : i0;
    return (i0 == i ? 1.0 - l : 0.0) + (i1 == i ? l : 0.0);
}

void main()
{
    uint i = flat_index();
    if (i >= p.total)
        return;
    uint c = i % p.c, t = i / p.c;
    if (MODE == 0) {
        uint ox = t % p.wo;
        t /= p.wo;
        uint oy = t % p.ho, b = t / p.ho;
        float ly, lx;
        uint y0 = lo_index(oy, p.sh, ly), x0 = lo_index(ox, p.sw, lx);
        uint y1 = y0 < p.h - 1 ? y0 + 1 : y0, x1 = x0 < p.w - 1 ? x0 + 1 : x0;
        uint r0 = (b * p.h + y0) * p.w, r1 = (b * p.h + y1) * p.w;
        vec4 v = (1.0 - ly) * ((1.0 - lx) * load((r0 + x0) * p.c + c) +
                               lx * load((r0 + x1) * p.c + c)) +
                 ly * ((1.0 - lx) * load((r1 + x0) * p.c + c) + lx * load((r1 + x1) * p.c + c));
        store(i, v);
    } else {
        uint ix = t % p.w;
        t /= p.w;
        uint iy = t % p.h, b = t / p.h;
        // the outputs with i0 in [i - 1, i] along each axis
        uint ya = first_reading(int(iy) - 1, p.sh, p.ho);
        uint yb = first_reading(int(iy) + 1, p.sh, p.ho);
        uint xa = first_reading(int(ix) - 1, p.sw, p.wo);
        uint xb = first_reading(int(ix) + 1, p.sw, p.wo);
        vec4 g = vec4(0.0);
        for (uint oy = ya; oy < yb; oy++) {
            float wy = weight(oy, iy, p.sh, p.h);
            if (wy == 0.0)
                continue;
            uint row = (b * p.ho + oy) * p.wo;
            for (uint ox = xa; ox < xb; ox++) {
                float wx = weight(ox, ix, p.sw, p.w);
                g += wy * wx * load((row + ox) * p.c + c);
            }
        }
        store(i, g);
    }
}
