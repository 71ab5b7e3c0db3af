#version 450
// Layer normalization backward, every gradient in one dispatch: the first
// p.ga workgroups compute the input gradient by rows, the ones after them
// the affine parameters' gradients by columns. The two parts read the same
// inputs and write different outputs, so one dispatch holds both.
//   x, dy, dx: (rows, C)   gamma, dgamma, dbeta: (C)   mean, rstd: (rows)
//   xh = (x - mean) rstd,  g = dy gamma
//   dx (+)= rstd (g - sum_c g / C - xh sum_c (g xh) / C)
//   dgamma[c] (+)= sum_r dy[r, c] xh[r, c],  dbeta[c] (+)= sum_r dy[r, c]
// Rows: segments of T lanes per row (nn.glsl). Columns: a workgroup owns
// 8 columns; invocation (i, j) = (lid % 8, lid / 8) adds rows j, j + RY, ...
// (RY = local size / 8) of column i with Kahan compensation, then the RY
// partial sums of each column are added with a fixed tree; with NN_ROW1
// (nn.glsl: no barriers) a workgroup owns LOCAL columns, one invocation
// adds all rows of its column in order. No atomics: deterministic.
// flags: 1 gamma given (else 1), 2 add into dx (else overwrite, unread),
// 4 write dgamma, 8 write dbeta, 16 add into them.
#extension GL_GOOGLE_include_directive : require
#include "common.glsl"

LOCAL_SIZE_FROM_SPEC;
#include "nn.glsl"

layout(push_constant) uniform Push {
    uint rows; uint C; uint T; float inv_c; uint flags; uint ga;
} p;
layout(binding = 0) readonly buffer X { float x[]; };
layout(binding = 1) readonly buffer G { float gamma[]; };
layout(binding = 2) readonly buffer M { float mean[]; };
layout(binding = 3) readonly buffer R { float rstd[]; };
layout(binding = 4) readonly buffer DY { float dy[]; };
layout(binding = 5) buffer DX { float dx[]; };
layout(binding = 6) buffer DG { float dgamma[]; };
layout(binding = 7) buffer DB { float dbeta[]; };

void input_grad(uint grp)
{
    uint T = p.T, lane = gl_LocalInvocationID.x & (T - 1u);
    uint row = grp * (gl_WorkGroupSize.x / T) + gl_LocalInvocationID.x / T;
    bool valid = row < p.rows;
    bool has_gamma = (p.flags & 1u) != 0u;
    uint base = row * p.C;
    float mu = valid ? mean[row] : 0.0, rs = valid ? rstd[row] : 0.0;
    vec2 a_g = vec2(0.0), a_gx = vec2(0.0);
    if (valid)
        for (uint c = lane; c < p.C; c += T) {
            float xh = (x[base + c] - mu) * rs;
            float g = has_gamma ? dy[base + c] * gamma[c] : dy[base + c];
            kahan_add(a_g, g);
            kahan_add(a_gx, g * xh);
        }
    vec2 s = seg_sum2(vec2(kahan_value(a_g), kahan_value(a_gx)), T) * p.inv_c;
    if (!valid)
        return;
    for (uint c = lane; c < p.C; c += T) {
        uint i = base + c;
        float xh = (x[i] - mu) * rs;
        float g = has_gamma ? dy[i] * gamma[c] : dy[i];
        float d = rs * (g - s.x - xh * s.y);
        dx[i] = (p.flags & 2u) != 0u ? dx[i] + d : d;
    }
}

void write_param_grads(uint col, vec2 v)
{
    bool acc = (p.flags & 16u) != 0u;
    if ((p.flags & 4u) != 0u)
        dgamma[col] = acc ? dgamma[col] + v.x : v.x;
    if ((p.flags & 8u) != 0u)
        dbeta[col] = acc ? dbeta[col] + v.y : v.y;
}

void param_grads_row1(uint grp)
{
    uint col = grp * gl_WorkGroupSize.x + gl_LocalInvocationID.x;
    if (col >= p.C)
        return;
    vec2 a_g = vec2(0.0), a_b = vec2(0.0);
    for (uint r = 0u, i = col; r < p.rows; r++, i += p.C) {
        float g = dy[i];
        kahan_add(a_g, g * ((x[i] - mean[r]) * rstd[r]));
        kahan_add(a_b, g);
    }
    write_param_grads(col, vec2(kahan_value(a_g), kahan_value(a_b)));
}

void param_grads(uint grp)
{
    if (NN_ROW1) {
        param_grads_row1(grp);
        return;
    }
    const uint CX = 8u;
    uint RY = gl_WorkGroupSize.x / CX, lid = gl_LocalInvocationID.x;
    uint lx = lid % CX, ly = lid / CX;
    uint col = grp * CX + lx;
    bool valid = col < p.C;
    vec2 a_g = vec2(0.0), a_b = vec2(0.0);
    if (valid)
        for (uint r = ly; r < p.rows; r += RY) {
            uint i = r * p.C + col;
            float g = dy[i];
            kahan_add(a_g, g * ((x[i] - mean[r]) * rstd[r]));
            kahan_add(a_b, g);
        }
    nn_red[lid] = vec2(kahan_value(a_g), kahan_value(a_b));
    barrier();
    for (uint s = RY >> 1; s > 0u; s >>= 1) {
        if (ly < s)
            nn_red[lid] += nn_red[lid + s * CX];
        barrier();
    }
    if (ly == 0u && valid)
        write_param_grads(col, nn_red[lx]);
}

void main()
{
    uint g = nn_group(); // the same for the whole workgroup: the barriers are uniform
    if (g < p.ga)
        input_grad(g);
    else
        param_grads(g - p.ga);
}
