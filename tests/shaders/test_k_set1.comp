#version 450
// check_kernel fixture: the output buffer in descriptor set 1.
layout(local_size_x_id = 0, local_size_y_id = 1, local_size_z_id = 2) in;
layout(push_constant) uniform Push { uint n; } p;
layout(set = 0, binding = 0) readonly buffer X { float x[]; };
layout(set = 1, binding = 1) writeonly buffer Out { float o[]; };

void main()
{
    uint i = gl_GlobalInvocationID.x;
    if (i < p.n)
        o[i] = x[i];
}
