#version 450
// sine_embed.comp - the maskdino head's query position input, DINO's
// gen_sineembed_for_position for 4-d reference boxes:
//
//   r (n, 4) boxes (cx, cy, w, h) in [0, 1], inv_dim (F) = 1 / 10000^(2 floor(j / 2) / F)
//   -> out (n, 4 F): the blocks of y, x, w, h (that order), each
//      out[j] = sin(v 2 pi inv_dim[j]) for even j, cos(...) for odd j
//
// One invocation per output element; the grid may be capped (the plugin
// strides). No gradient flows through it (the boxes are detached there).

layout(local_size_x_id = 0, local_size_y_id = 1, local_size_z_id = 2) in;

layout(std430, set = 0, binding = 0) readonly buffer R { float r[]; };
layout(std430, set = 0, binding = 1) readonly buffer D { float inv_dim[]; };
layout(std430, set = 0, binding = 2) writeonly buffer Out { float o[]; };

// n * 4 * F < 2^32 (the plugin checks)
layout(push_constant) uniform Push { uint n; uint f; } p;

void main()
{
    uint total = p.n * 4u * p.f;
    uint stride = gl_NumWorkGroups.x * gl_WorkGroupSize.x;
    for (uint i = gl_GlobalInvocationID.x; i < total; i += stride) {
        uint row = i / (4u * p.f), k = i % (4u * p.f), block = k / p.f, j = k % p.f;
        // blocks y, x, w, h read coordinates 1, 0, 2, 3
        uint coord = block == 0u ? 1u : block == 1u ? 0u : block;
        float v = r[row * 4u + coord] * 6.283185307179586;
        float t = v * inv_dim[j];
        o[i] = (j & 1u) == 0u ? sin(t) : cos(t);
    }
}
