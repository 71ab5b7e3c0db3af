#version 450
// Mask2Former's masked-attention mask from mask logits.   x, y: (rows, C)
//   y = -inf where x < 0 (sigmoid(x) < 0.5, the position is masked), else 0;
//   a row with no x >= 0 would mask every key: it is all 0 instead, so the
//   query attends everywhere (Mask2Former unmasks such rows).
// The row's maximum decides that case: segments as in nn.glsl.
#extension GL_GOOGLE_include_directive : require
#include "common.glsl"

LOCAL_SIZE_FROM_SPEC;
#include "nn.glsl"

layout(push_constant) uniform Push { uint rows; uint C; uint T; } p;
layout(binding = 0) readonly buffer X { float x[]; };
layout(binding = 1) writeonly buffer Y { float y[]; };

void main()
{
    uint T = p.T, lane = gl_LocalInvocationID.x & (T - 1u);
    uint row = nn_group() * (gl_WorkGroupSize.x / T) + gl_LocalInvocationID.x / T;
    bool valid = row < p.rows;
    uint base = row * p.C;
    float m = NN_NEG_INF;
    if (valid)
        for (uint c = lane; c < p.C; c += T)
            m = max(m, x[base + c]);
    m = seg_max(m, T);
    bool none = !(m >= 0.0);
    if (valid)
        for (uint c = lane; c < p.C; c += T)
            y[base + c] = !none && x[base + c] < 0.0 ? NN_NEG_INF : 0.0;
}
