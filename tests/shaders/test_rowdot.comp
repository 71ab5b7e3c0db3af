#version 450
// A custom-kernel fixture for tests/check_model.c: a kernel unlike any of
// vpeft's own, so that the custom path is what is tested.
//   x: (rows, cols)  w: (cols)  ->  out: (rows, cols) = x * w + rows_scale * row index
// push: rows, cols, and a float added per row (to tell rows apart).
layout(local_size_x_id = 0, local_size_y_id = 1, local_size_z_id = 2) in;
layout(push_constant) uniform Push { uint rows; uint cols; float row_scale; } p;
layout(binding = 0) readonly buffer X { float x[]; };
layout(binding = 1) readonly buffer W { float w[]; };
layout(binding = 2) writeonly buffer Out { float o[]; };

void main()
{
    uint i = gl_GlobalInvocationID.x;
    if (i >= p.rows * p.cols)
        return;
    o[i] = x[i] * w[i % p.cols] + p.row_scale * float(i / p.cols);
}
