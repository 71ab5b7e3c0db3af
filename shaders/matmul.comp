#version 450
// Register-tiled matmul: each invocation computes a TM x TN block of C.
//   C[z] (M, N) = op(A[z]) (M, K) x op(B[z]) (K, N)
//   A stored (M, K), or (K, M) when TRANS_A; B stored (K, N), or (N, K) when
//   TRANS_B; per-batch strides sa, sb, sc in elements (0 broadcasts).
//
// Why this shape: on a CPU driver (lavapipe) the lanes of local_size_x run
// as SIMD and every non-uniform load becomes a gather, so speed follows the
// number of loads per FMA: VEC4 loads four floats at once along whichever
// axis is contiguous (K for A and B^T, M for A^T, N for B), and large tiles
// reuse each load TM or TN times. GPUs want small tiles and many
// invocations. The host picks TM, TN and the local size per device.
// VEC4 needs M, N, K all multiples of 4; otherwise the scalar path runs.
// Out-of-range rows and columns load clamped (valid) data and are not stored.
#extension GL_GOOGLE_include_directive : require
#include "common.glsl"

LOCAL_SIZE_FROM_SPEC;
layout(constant_id = 3) const uint TM = 4;       // rows per invocation (multiple of 4)
layout(constant_id = 4) const uint TN = 4;       // columns per invocation (multiple of 4)
layout(constant_id = 5) const bool TRANS_A = false;
layout(constant_id = 6) const bool TRANS_B = false;
layout(constant_id = 7) const bool VEC4 = false;

layout(push_constant) uniform Push { uint M, N, K, sa, sb, sc; } p;
layout(binding = 0) readonly buffer A1 { float a1[]; };
layout(binding = 0) readonly buffer A4 { vec4 a4[]; };
layout(binding = 1) readonly buffer B1 { float b1[]; };
layout(binding = 1) readonly buffer B4 { vec4 b4[]; };
layout(binding = 2) writeonly buffer C1 { float c1[]; };
layout(binding = 2) writeonly buffer C4 { vec4 c4[]; };

const uint TN4 = TN / 4;

vec4 acc[TM][TN4];

void main()
{
    uint z = gl_WorkGroupID.z;
    uint m0 = gl_GlobalInvocationID.y * TM;
    uint n0 = gl_GlobalInvocationID.x * TN;
    if (m0 >= p.M || n0 >= p.N)
        return;
    uint M = p.M, N = p.N, K = p.K;
    uint ao = z * p.sa, bo = z * p.sb;

    for (uint i = 0; i < TM; i++)
        for (uint j = 0; j < TN4; j++)
            acc[i][j] = vec4(0.0);

    if (VEC4) {
        // Row / column indices clamped once; every block start stays a
        // multiple of 4 because M and N are.
        uint mrow[TM];
        for (uint i = 0; i < TM; i++)
            mrow[i] = min(m0 + i, M - 1);
        for (uint k = 0; k < K; k += 4) {
            vec4 av[TM];     // av[i][kk] = A(m0 + i, k + kk)
            vec4 bv[4][TN4]; // bv[kk][j][jj] = B(k + kk, n0 + 4 j + jj)
            if (!TRANS_A) {
                for (uint i = 0; i < TM; i++)
                    av[i] = a4[(ao + mrow[i] * K + k) / 4];
            } else {
                for (uint kk = 0; kk < 4; kk++)
                    for (uint i = 0; i < TM; i += 4) {
                        vec4 v = a4[(ao + (k + kk) * M + min(m0 + i, M - 4)) / 4];
                        av[i][kk] = v.x; av[i + 1][kk] = v.y;
                        av[i + 2][kk] = v.z; av[i + 3][kk] = v.w;
                    }
            }
            if (!TRANS_B) {
                for (uint kk = 0; kk < 4; kk++)
                    for (uint j = 0; j < TN4; j++)
                        bv[kk][j] = b4[(bo + (k + kk) * N + min(n0 + 4 * j, N - 4)) / 4];
            } else {
                for (uint j = 0; j < TN; j++) {
                    vec4 v = b4[(bo + min(n0 + j, N - 1) * K + k) / 4];
                    bv[0][j / 4][j % 4] = v.x; bv[1][j / 4][j % 4] = v.y;
                    bv[2][j / 4][j % 4] = v.z; bv[3][j / 4][j % 4] = v.w;
                }
            }
            for (uint kk = 0; kk < 4; kk++)
                for (uint i = 0; i < TM; i++)
                    for (uint j = 0; j < TN4; j++)
                        acc[i][j] += av[i][kk] * bv[kk][j];
        }
        for (uint i = 0; i < TM; i++) {
            if (m0 + i >= M)
                break;
            for (uint j = 0; j < TN4; j++)
                if (n0 + 4 * j < N)
                    c4[(z * p.sc + (m0 + i) * N + n0) / 4 + j] = acc[i][j];
        }
    } else {
        for (uint k = 0; k < K; k++) {
            float av[TM];
            float bv[TN];
            for (uint i = 0; i < TM; i++) {
                uint m = min(m0 + i, M - 1);
                av[i] = TRANS_A ? a1[ao + k * M + m] : a1[ao + m * K + k];
            }
            for (uint j = 0; j < TN; j++) {
                uint n = min(n0 + j, N - 1);
                bv[j] = TRANS_B ? b1[bo + n * K + k] : b1[bo + k * N + n];
            }
            for (uint i = 0; i < TM; i++)
                for (uint j = 0; j < TN; j++)
                    acc[i][j / 4][j % 4] += av[i] * bv[j];
        }
        for (uint i = 0; i < TM; i++) {
            if (m0 + i >= M)
                break;
            for (uint j = 0; j < TN; j++)
                if (n0 + j < N)
                    c1[z * p.sc + (m0 + i) * N + n0 + j] = acc[i][j / 4][j % 4];
        }
    }
}
