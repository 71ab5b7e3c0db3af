#version 450
// check_kernel fixture: two storage buffers (bindings 0 and 1), 8 bytes of
// push constants; registered with a descriptor of another binding count.
layout(local_size_x_id = 0, local_size_y_id = 1, local_size_z_id = 2) in;
layout(push_constant) uniform Push { uint n; float s; } p;
layout(binding = 0) readonly buffer X { float x[]; };
layout(binding = 1) writeonly buffer Out { float o[]; };

void main()
{
    uint i = gl_GlobalInvocationID.x;
    if (i < p.n)
        o[i] = p.s * x[i];
}
