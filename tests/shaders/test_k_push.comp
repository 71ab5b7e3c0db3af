#version 450
// check_kernel fixture: a 24-byte push block (n at 0, v at 8 after vec2
// alignment, a[2] at 16 with stride 4), to be sized from its offsets.
layout(local_size_x_id = 0, local_size_y_id = 1, local_size_z_id = 2) in;
layout(push_constant) uniform Push { uint n; vec2 v; float a[2]; } p;
layout(binding = 0) readonly buffer X { float x[]; };
layout(binding = 1) writeonly buffer Out { float o[]; };

void main()
{
    uint i = gl_GlobalInvocationID.x;
    if (i < p.n)
        o[i] = x[i] * p.v.x + p.v.y * p.a[0] + p.a[1];
}
