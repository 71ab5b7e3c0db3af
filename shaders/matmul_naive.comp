#version 450
// Naive matmul, one output per invocation: the baseline `make bench`
// compares the tiled kernel against, never used by the ops.
//   C[z] (M, N) = op(A[z]) (M, K) x op(B[z]) (K, N)
//   A stored (M, K), or (K, M) when TRANS_A; B stored (K, N), or (N, K) when
//   TRANS_B; per-batch strides sa, sb, sc in elements (0 broadcasts).
#extension GL_GOOGLE_include_directive : require
#include "common.glsl"

LOCAL_SIZE_FROM_SPEC;
layout(constant_id = 3) const bool TRANS_A = false;
layout(constant_id = 4) const bool TRANS_B = false;

layout(push_constant) uniform Push { uint M, N, K, sa, sb, sc; } p;
layout(binding = 0) readonly buffer A { float a[]; };
layout(binding = 1) readonly buffer B { float b[]; };
layout(binding = 2) writeonly buffer C { float c[]; };

void main()
{
    uint n = gl_GlobalInvocationID.x, m = gl_GlobalInvocationID.y, z = gl_WorkGroupID.z;
    if (m >= p.M || n >= p.N)
        return;
    uint ao = z * p.sa, bo = z * p.sb;
    float acc = 0.0;
    for (uint k = 0; k < p.K; k++) {
        float x = TRANS_A ? a[ao + k * p.M + m] : a[ao + m * p.K + k];
        float y = TRANS_B ? b[bo + n * p.K + k] : b[bo + k * p.N + n];
        acc += x * y;
    }
    c[z * p.sc + m * p.N + n] = acc;
}
