#version 450
// detach.comp - the maskdino head's copy of a tensor that carries no
// gradient (PyTorch's .detach()): out[i] = x[i]. The grid may be capped
// (invocations stride).

layout(local_size_x_id = 0, local_size_y_id = 1, local_size_z_id = 2) in;

layout(std430, set = 0, binding = 0) readonly buffer X { float x[]; };
layout(std430, set = 0, binding = 1) writeonly buffer Out { float o[]; };

layout(push_constant) uniform Push { uint n; } p;

void main()
{
    uint stride = gl_NumWorkGroups.x * gl_WorkGroupSize.x;
    for (uint i = gl_GlobalInvocationID.x; i < p.n; i += stride)
        o[i] = x[i];
}
