// Declarations shared by the multi-scale deformable attention kernels:
// msdeform_fwd.comp (forward), msdeform_bwd.comp (gradients of the sampling
// locations and attention weights, and with ATOMIC defined, in
// msdeform_bwd_atomic.comp, also the scatter of the value gradient with
// float atomics), msdeform_bwd_value.comp (the value gradient without
// atomics, by tiles of value positions: deterministic).
//
//   value (B, S, H, Dh); level l occupies positions lv[l].z ..
//         lv[l].z + lv[l].x * lv[l].y - 1 of S, row-major (y, x)
//   loc   (B, Q, H, L, P) pairs (x, y) in [0, 1]; pixel x * W_l - 0.5,
//         y * H_l - 0.5 (grid_sample, align_corners=False, zero padding)
//   attn  (B, Q, H, L, P)
//   out, grad_out (B, Q, H * Dh)
//
// Channels are handled VEC (4 when Dh % 4 == 0, else 1) at a time, through
// vec4 or float views of the same buffer; with VEC 1 the unused lanes of the
// vec4 values are 0.

#extension GL_EXT_control_flow_attributes : require
#include "common.glsl"

LOCAL_SIZE_FROM_SPEC;
layout(constant_id = 3) const uint VEC = 1;  // channels per load: 1 or 4

#define MAX_LEVELS 6
#define ACC_VALUE 1u
#define ACC_LOC 2u
#define ACC_ATTN 4u

layout(push_constant) uniform Push {
    uint B, S, Q, H, Dh, L, P;
    uint flags;                // ACC_*: add into the gradient instead of overwriting it
    uvec4 lv[MAX_LEVELS];      // (H_l, W_l, start_l, msdeform_bwd_value: first tile of l)
} p;

// Where a sample falls: the top-left corner (x0, y0) of its cell and the
// fractions (fx, fy). Pixel coordinates are clamped to [-2, W + 1] first,
// which changes no corner's validity (a sample beyond one pixel outside has
// no corner inside) and keeps the float-to-int conversion defined.
void cell(vec2 loc, uint hl, uint wl, out ivec2 i0, out vec2 f)
{
    vec2 size = vec2(float(wl), float(hl));
    vec2 pix = clamp(loc * size - 0.5, vec2(-2.0), size + 1.0);
    vec2 fl = floor(pix);
    i0 = ivec2(fl);
    f = pix - fl;
}

bool inside(ivec2 c, uint hl, uint wl)
{
    return c.x >= 0 && c.y >= 0 && uint(c.x) < wl && uint(c.y) < hl;
}
