#version 450
// check_kernel fixture: a local size fixed in the shader (64 x 1 x 1)
// instead of taken from specialization constants.
layout(local_size_x = 64) in;
layout(push_constant) uniform Push { uint n; } p;
layout(binding = 0) readonly buffer X { float x[]; };
layout(binding = 1) writeonly buffer Out { float o[]; };

void main()
{
    uint i = gl_GlobalInvocationID.x;
    if (i < p.n)
        o[i] = 2.0 * x[i];
}
