#version 450
// mask_box.comp - the maskdino head's reference boxes from its
// intermediate masks (Mask DINO's INITIALIZE_BOX_TYPE), unsigmoided:
//
//   x (rows, h * w) mask logits -> out (rows, 4) inverse_sigmoid of the box
//   (cx, cy, w, h) / (w, h, w, h) around the pixels where x > 0:
//     mode 0, 'bitmask' (detectron2's BitMasks.get_bounding_boxes): x1 the
//       first column, x2 the last + 1 (rows alike); an empty mask 0, 0, 0, 0
//     mode 1, 'mask2box' (box_ops.masks_to_boxes): x2 the last column; an
//       empty mask x1 = y1 = 1e8, x2 = y2 = 0
//   inverse_sigmoid(b) = log(max(b', 1e-5) / max(1 - b', 1e-5)), b' = clamp(b, 0, 1)
//     mode 2, the targets' boxes: 'bitmask' around x > 0.5, not unsigmoided
//
// One workgroup per row (striding over rows), WG invocations taking strided
// pixels, then min/max trees in shared memory. Local size WG (the plugin
// sets it so). No gradient flows through it.

#define WG 64

layout(local_size_x_id = 0, local_size_y_id = 1, local_size_z_id = 2) in;

layout(std430, set = 0, binding = 0) readonly buffer X { float x[]; };
layout(std430, set = 0, binding = 1) writeonly buffer Out { float o[]; };

layout(push_constant) uniform Push { uint rows; uint h; uint w; uint mode; } p;

shared int s_lo[2][WG];
shared int s_hi[2][WG];

float inv_sigmoid(float b)
{
    b = clamp(b, 0.0, 1.0);
    return log(max(b, 1e-5) / max(1.0 - b, 1e-5));
}

void main()
{
    uint t = gl_LocalInvocationID.x, n = p.h * p.w;
    for (uint r = gl_WorkGroupID.x; r < p.rows; r += gl_NumWorkGroups.x) {
        int lo_x = int(p.w), lo_y = int(p.h), hi_x = -1, hi_y = -1;
        uint base = r * n;
        for (uint i = t; i < n; i += WG) {
            if (x[base + i] > (p.mode == 2u ? 0.5 : 0.0)) {
                int cx = int(i % p.w), cy = int(i / p.w);
                lo_x = min(lo_x, cx);
                hi_x = max(hi_x, cx);
                lo_y = min(lo_y, cy);
                hi_y = max(hi_y, cy);
            }
        }
        s_lo[0][t] = lo_x;
        s_lo[1][t] = lo_y;
        s_hi[0][t] = hi_x;
        s_hi[1][t] = hi_y;
        barrier();
        for (uint k = WG / 2; k > 0; k >>= 1) {
            if (t < k) {
                for (int a = 0; a < 2; a++) {
                    s_lo[a][t] = min(s_lo[a][t], s_lo[a][t + k]);
                    s_hi[a][t] = max(s_hi[a][t], s_hi[a][t + k]);
                }
            }
            barrier();
        }
        if (t == 0) {
            float x1, y1, x2, y2;
            bool empty = s_hi[0][0] < 0;
            if (p.mode != 1u) {
                x1 = empty ? 0.0 : float(s_lo[0][0]);
                y1 = empty ? 0.0 : float(s_lo[1][0]);
                x2 = empty ? 0.0 : float(s_hi[0][0] + 1);
                y2 = empty ? 0.0 : float(s_hi[1][0] + 1);
            } else {
                x1 = empty ? 1e8 : float(s_lo[0][0]);
                y1 = empty ? 1e8 : float(s_lo[1][0]);
                x2 = empty ? 0.0 : float(s_hi[0][0]);
                y2 = empty ? 0.0 : float(s_hi[1][0]);
            }
            float fw = float(p.w), fh = float(p.h);
            vec4 b = vec4((x1 + x2) / 2.0 / fw, (y1 + y2) / 2.0 / fh, (x2 - x1) / fw,
                          (y2 - y1) / fh);
            bool raw = p.mode == 2u;
            o[4 * r] = raw ? b.x : inv_sigmoid(b.x);
            o[4 * r + 1] = raw ? b.y : inv_sigmoid(b.y);
            o[4 * r + 2] = raw ? b.z : inv_sigmoid(b.z);
            o[4 * r + 3] = raw ? b.w : inv_sigmoid(b.w);
        }
        barrier();
    }
}
