#version 450
// Depth-to-space by 2, the rearrangement half of a 2x2 stride-2 transposed
// convolution (the matmul is vp_op_matmul's):
//   x (B, H, W, C*4)  y (B, 2H, 2W, C)
//   y[b, 2h+ky, 2w+kx, c] = x[b, h, w, c*4 + ky*2 + kx] + bias[c]
// MODE 0: src = x, dst = y; bias when has_bias (else binding 1 is a
//         placeholder).
// MODE 1: src = dy, dst = dx (+)=.
// VEC 1: one invocation per element of dst. VEC 4 (C a multiple of 4): one
// invocation per pixel (b, h, w) of x and 4 channels c0..c0+3: it loads the
// 16 values x[b, h, w, c*4 + k] as 4 vec4s (one per channel, k along the
// vector), transposes them in registers and stores 4 vec4s (one per kernel
// position, the channels along the vector); MODE 1 the other way round.
#extension GL_GOOGLE_include_directive : require
#include "common.glsl"

LOCAL_SIZE_FROM_SPEC;
layout(constant_id = 3) const uint MODE = 0;
layout(constant_id = 4) const uint VEC = 1;

layout(push_constant) uniform Push {
    uint total;    // invocations
    uint h, w, c;  // x's H, W and y's channels
    uint has_bias, acc;
} p;
layout(binding = 0) readonly buffer Src { float src[]; };
layout(binding = 0) readonly buffer Src4 { vec4 src4[]; };
layout(binding = 1) readonly buffer Bias { float bias[]; };
layout(binding = 1) readonly buffer Bias4 { vec4 bias4[]; };
layout(binding = 2) buffer Dst { float dst[]; };
layout(binding = 2) buffer Dst4 { vec4 dst4[]; };

// Offset (in floats) of y[b, 2h+ky, 2w+kx, c].
uint y_at(uint b, uint h, uint w, uint k, uint c)
{
    return ((b * 2 * p.h + 2 * h + k / 2) * 2 * p.w + 2 * w + k % 2) * p.c + c;
}

void blocks()
{
    uint i = flat_index();
    if (i >= p.total)
        return;
    uint c4 = p.c / 4, g = i % c4, t = i / c4;
    uint w = t % p.w;
    t /= p.w;
    uint h = t % p.h, b = t / p.h;
    uint xq = ((b * p.h + h) * p.w + w) * p.c + g * 4; // x in vec4s: channel 4g + j at xq + j
    if (MODE == 0) {
        // r[j] = x[b, h, w, (4g + j)*4 .. +3]: the 4 kernel positions of channel 4g + j
        mat4 r = transpose(mat4(src4[xq], src4[xq + 1], src4[xq + 2], src4[xq + 3]));
        vec4 bv = p.has_bias != 0 ? bias4[g] : vec4(0.0);
        for (uint k = 0; k < 4; k++)
            dst4[y_at(b, h, w, k, g * 4) / 4] = r[k] + bv;
    } else {
        mat4 r = transpose(mat4(src4[y_at(b, h, w, 0, g * 4) / 4],
                                src4[y_at(b, h, w, 1, g * 4) / 4],
                                src4[y_at(b, h, w, 2, g * 4) / 4],
                                src4[y_at(b, h, w, 3, g * 4) / 4]));
        for (uint j = 0; j < 4; j++)
            dst4[xq + j] = p.acc != 0 ? dst4[xq + j] + r[j] : r[j];
    }
}

void main()
{
    if (VEC == 4) {
        blocks();
        return;
    }
    uint i = flat_index();
    if (i >= p.total)
        return;
    if (MODE == 0) {
        uint c = i % p.c, t = i / p.c;
        uint ox = t % (2 * p.w);
        t /= 2 * p.w;
        uint oy = t % (2 * p.h), b = t / (2 * p.h);
        uint k = (oy % 2) * 2 + ox % 2;
        float v = src[((b * p.h + oy / 2) * p.w + ox / 2) * 4 * p.c + c * 4 + k];
        dst[i] = p.has_bias != 0 ? v + bias[c] : v;
    } else {
        uint j = i % (4 * p.c), t = i / (4 * p.c);
        uint x = t % p.w;
        t /= p.w;
        uint y = t % p.h, b = t / p.h;
        float g = src[y_at(b, y, x, j % 4, j / 4)];
        dst[i] = p.acc != 0 ? dst[i] + g : g;
    }
}
