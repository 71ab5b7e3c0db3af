#version 450
// check_kernel fixture: bindings 0, 1 and 3, so binding 3 lies beyond a
// layout of three bindings.
layout(local_size_x_id = 0, local_size_y_id = 1, local_size_z_id = 2) in;
layout(push_constant) uniform Push { uint n; } p;
layout(binding = 0) readonly buffer X { float x[]; };
layout(binding = 1) readonly buffer W { float w[]; };
layout(binding = 3) writeonly buffer Out { float o[]; };

void main()
{
    uint i = gl_GlobalInvocationID.x;
    if (i < p.n)
        o[i] = x[i] * w[i];
}
