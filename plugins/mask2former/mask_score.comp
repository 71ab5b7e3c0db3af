#version 450
// mask_score.comp - the mask2former head's (HF variant) instance mask
// score, the part of Hugging Face's post_process_instance_segmentation
// that reads every upsampled pixel:
//
//   x (rows, cols) mask logits -> out (rows, 2):
//     out[r, 0] = sum over x[r, i] > 0 of sigmoid(x[r, i])
//     out[r, 1] = the number of x[r, i] > 0
//
// One workgroup per row (striding over rows, so the plugin may cap the
// grid), WG invocations summing strided columns, then a tree in shared
// memory. The local size must be WG (mask2former.c sets it so).

#define WG 128

layout(local_size_x_id = 0, local_size_y_id = 1, local_size_z_id = 2) in;

layout(std430, set = 0, binding = 0) readonly buffer X { float x[]; };
layout(std430, set = 0, binding = 1) writeonly buffer Out { float o[]; };

// rows * cols < 2^32 (the plugin checks), cols < 2^24 (counts exact).
layout(push_constant) uniform Push { uint rows; uint cols; } p;

shared float s_sum[WG];
shared float s_cnt[WG];

void main()
{
    uint t = gl_LocalInvocationID.x;
    for (uint r = gl_WorkGroupID.x; r < p.rows; r += gl_NumWorkGroups.x) {
        float s = 0.0, n = 0.0;
        uint base = r * p.cols;
        for (uint i = t; i < p.cols; i += WG) {
            float v = x[base + i];
            if (v > 0.0) {
                s += 1.0 / (1.0 + exp(-v));
                n += 1.0;
            }
        }
        s_sum[t] = s;
        s_cnt[t] = n;
        barrier();
        for (uint h = WG / 2; h > 0; h >>= 1) {
            if (t < h) {
                s_sum[t] += s_sum[t + h];
                s_cnt[t] += s_cnt[t + h];
            }
            barrier();
        }
        if (t == 0) {
            o[2 * r] = s_sum[0];
            o[2 * r + 1] = s_cnt[0];
        }
        barrier();
    }
}
