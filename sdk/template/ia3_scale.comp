#version 450
// ia3_scale.comp - the IA3 template plugin's one kernel: every row of x
// scaled by the vector l, element by element.
//
//   x (rows, cols), l (cols) -> out (rows, cols),  out[r, c] = x[r, c] * l[c]
//
// The custom-kernel contract (vpeft/kernel.h): storage buffers at set 0,
// the inputs in order then the output; one push-constant block; the local
// size from specialization constants 0, 1, 2, which the host sets from the
// kernel's vp_kernel_desc. The grid is 1-D over elements and each invocation
// strides by the whole grid, so the plugin may cap the workgroup count at
// 65535 (the least maxComputeWorkGroupCount[0] Vulkan allows) and still cover
// any tensor in one dispatch.

layout(local_size_x_id = 0, local_size_y_id = 1, local_size_z_id = 2) in;

layout(std430, set = 0, binding = 0) readonly buffer X { float x[]; };
layout(std430, set = 0, binding = 1) readonly buffer L { float l[]; };
layout(std430, set = 0, binding = 2) writeonly buffer Out { float o[]; };

// total = rows * cols < 2^31, so that i + stride cannot wrap around.
layout(push_constant) uniform Push { uint total; uint cols; } p;

void main()
{
    uint stride = gl_NumWorkGroups.x * gl_WorkGroupSize.x;
    for (uint i = gl_GlobalInvocationID.x; i < p.total; i += stride)
        o[i] = x[i] * l[i % p.cols];
}
