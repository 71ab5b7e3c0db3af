#version 450
// Tiled matmul, two tilings chosen by the MODE specialization constant (the
// third, MODE 1, is matmul_subgroup.comp: it needs subgroup shuffles, which
// not every device has). Shapes and the VEC4 bits: matmul.glsl.
//
// MODE 0, registers: each invocation computes a TM x TN block of C on its
//   own, at rows y*TM, columns x*TN (gl_GlobalInvocationID). The fallback.
// MODE 2, shared memory (GPUs): a workgroup computes a BM x BN block,
//   BM = local_size_y*TM, BN = local_size_x*TN; per step of BK along K it
//   stages the A (BM x BK) and B (BK x BN) tiles in shared memory with
//   coalesced loads (zero-filled outside the matrices), then invocation
//   (x, y) accumulates rows y*TM.., columns x*TN.. from shared memory with
//   vec4 reads. Shared memory: (BM + BN) * BK * 4 bytes.
#extension GL_GOOGLE_include_directive : require
#extension GL_EXT_control_flow_attributes : require
#include "common.glsl"
#include "matmul.glsl"

// MODE 2's tiles, k-major: as[k * BM4 + m / 4][m % 4] = A(m, k) of the
// block. Sized 1 in the other modes (SH = 0) so they cost nothing there.
const uint SH = MODE / 2;
const uint BM4 = gl_WorkGroupSize.y * TM4;
const uint BN4 = gl_WorkGroupSize.x * TN4;
shared vec4 as[SH * (BK * BM4 - 1) + 1];
shared vec4 bs[SH * (BK * BN4 - 1) + 1];

// ---- MODE 0 ----------------------------------------------------------------

void main_registers(uint z, uint ao, uint bo)
{
    uint m0 = gl_GlobalInvocationID.y * TM;
    uint n0 = gl_GlobalInvocationID.x * TN;
    if (m0 >= p.M || n0 >= p.N)
        return;
    uint M = p.M, N = p.N, K = p.K;
    zero_acc();
    if (ALL4) {
        uint mrow[TM];
        [[unroll]] for (uint i = 0; i < TM; i++)
            mrow[i] = min(m0 + i, M - 1);
        for (uint k = 0; k < K; k += 4) {
            vec4 av[TM];     // av[i][kk] = A(m0 + i, k + kk)
            vec4 bv[4][TN4]; // bv[kk][j][jj] = B(k + kk, n0 + 4 j + jj)
            if (!TRANS_A) {
                [[unroll]] for (uint i = 0; i < TM; i++)
                    av[i] = a4[(ao + mrow[i] * K + k) / 4];
            } else {
                [[unroll]] for (uint kk = 0; kk < 4; kk++)
                    [[unroll]] for (uint i = 0; i < TM; i += 4) {
                        vec4 v = a4[(ao + (k + kk) * M + min(m0 + i, M - 4)) / 4];
                        av[i][kk] = v.x; av[i + 1][kk] = v.y;
                        av[i + 2][kk] = v.z; av[i + 3][kk] = v.w;
                    }
            }
            if (!TRANS_B) {
                [[unroll]] for (uint kk = 0; kk < 4; kk++)
                    [[unroll]] for (uint j = 0; j < TN4; j++)
                        bv[kk][j] = b4[(bo + (k + kk) * N + min(n0 + 4 * j, N - 4)) / 4];
            } else {
                [[unroll]] for (uint j = 0; j < TN; j++) {
                    vec4 v = b4[(bo + min(n0 + j, N - 1) * K + k) / 4];
                    bv[0][j / 4][j % 4] = v.x; bv[1][j / 4][j % 4] = v.y;
                    bv[2][j / 4][j % 4] = v.z; bv[3][j / 4][j % 4] = v.w;
                }
            }
            // fma with kk innermost: 1.4x faster on lavapipe than acc += a * b
            // with kk outermost.
            [[unroll]] for (uint i = 0; i < TM; i++)
                [[unroll]] for (uint j = 0; j < TN4; j++)
                    [[unroll]] for (uint kk = 0; kk < 4; kk++)
                        acc[i][j] = fma(vec4(av[i][kk]), bv[kk][j], acc[i][j]);
        }
        [[unroll]] for (uint i = 0; i < TM; i++) {
            if (m0 + i >= M)
                break;
            [[unroll]] for (uint j = 0; j < TN4; j++)
                if (n0 + 4 * j < N)
                    store4((z * p.sc + (m0 + i) * N + n0) / 4 + j, n0 + 4 * j, acc[i][j]);
        }
    } else {
        for (uint k = 0; k < K; k++) {
            float av[TM];
            float bv[TN];
            [[unroll]] for (uint i = 0; i < TM; i++) {
                uint m = min(m0 + i, M - 1);
                av[i] = TRANS_A ? a1[ao + k * M + m] : a1[ao + m * K + k];
            }
            [[unroll]] for (uint j = 0; j < TN; j++) {
                uint n = min(n0 + j, N - 1);
                bv[j] = TRANS_B ? b1[bo + n * K + k] : b1[bo + k * N + n];
            }
            [[unroll]] for (uint i = 0; i < TM; i++)
                [[unroll]] for (uint j = 0; j < TN; j++)
                    acc[i][j / 4][j % 4] += av[i] * bv[j];
        }
        [[unroll]] for (uint i = 0; i < TM; i++) {
            if (m0 + i >= M)
                break;
            [[unroll]] for (uint j = 0; j < TN; j++)
                if (n0 + j < N)
                    store1(z * p.sc + (m0 + i) * N + n0 + j, n0 + j, acc[i][j / 4][j % 4]);
        }
    }
}

// ---- MODE 2 ----------------------------------------------------------------

const uint NT = gl_WorkGroupSize.x * gl_WorkGroupSize.y;

// Stage A(mb.., k0..) and B(k0.., nb..) into as and bs. Loads walk the
// contiguous axis of each operand; elements outside the matrices (rows,
// columns, or k >= K) are zero.
void stage(uint ao, uint bo, uint mb, uint nb, uint k0)
{
    uint M = p.M, N = p.N, K = p.K, tid = gl_LocalInvocationIndex;
    uint BM = 4 * BM4, BN = 4 * BN4;
    if (ALL4) {
        const uint BK4 = BK / 4;
        // A: BM x BK as BM*BK/4 vec4 chunks, TRANS_A: along m; else along k.
        [[unroll]] for (uint r = 0; r < (BM4 * BK + NT - 1) / NT; r++) {
            uint e = tid + r * NT;
            if (e >= BM4 * BK)
                break;
            if (TRANS_A) {
                uint kr = e / BM4, mc = e % BM4, m = mb + 4 * mc, k = k0 + kr;
                vec4 v = a4[(ao + min(k, K - 1) * M + min(m, M - 4)) / 4];
                as[kr * BM4 + mc] = k < K ? v : vec4(0.0);
            } else {
                uint row = e / BK4, kc = e % BK4, m = mb + row, k = k0 + 4 * kc;
                vec4 v = a4[(ao + min(m, M - 1) * K + min(k, K - 4)) / 4];
                v = k < K ? v : vec4(0.0);
                [[unroll]] for (uint c = 0; c < 4; c++)
                    as[(4 * kc + c) * BM4 + row / 4][row % 4] = v[c];
            }
        }
        [[unroll]] for (uint r = 0; r < (BN4 * BK + NT - 1) / NT; r++) {
            uint e = tid + r * NT;
            if (e >= BN4 * BK)
                break;
            if (!TRANS_B) {
                uint kr = e / BN4, nc = e % BN4, n = nb + 4 * nc, k = k0 + kr;
                vec4 v = b4[(bo + min(k, K - 1) * N + min(n, N - 4)) / 4];
                bs[kr * BN4 + nc] = k < K ? v : vec4(0.0);
            } else {
                uint col = e / BK4, kc = e % BK4, n = nb + col, k = k0 + 4 * kc;
                vec4 v = b4[(bo + min(n, N - 1) * K + min(k, K - 4)) / 4];
                v = k < K ? v : vec4(0.0);
                [[unroll]] for (uint c = 0; c < 4; c++)
                    bs[(4 * kc + c) * BN4 + col / 4][col % 4] = v[c];
            }
        }
    } else {
        [[unroll]] for (uint r = 0; r < (BM * BK + NT - 1) / NT; r++) {
            uint e = tid + r * NT;
            if (e >= BM * BK)
                break;
            uint row = TRANS_A ? e % BM : e / BK, kr = TRANS_A ? e / BM : e % BK;
            uint m = min(mb + row, M - 1), k = k0 + kr;
            float v = TRANS_A ? a1[ao + min(k, K - 1) * M + m] : a1[ao + m * K + min(k, K - 1)];
            as[kr * BM4 + row / 4][row % 4] = k < K ? v : 0.0;
        }
        [[unroll]] for (uint r = 0; r < (BN * BK + NT - 1) / NT; r++) {
            uint e = tid + r * NT;
            if (e >= BN * BK)
                break;
            uint col = TRANS_B ? e / BK : e % BN, kr = TRANS_B ? e % BK : e / BN;
            uint n = min(nb + col, N - 1), k = k0 + kr;
            float v = TRANS_B ? b1[bo + n * K + min(k, K - 1)] : b1[bo + min(k, K - 1) * N + n];
            bs[kr * BN4 + col / 4][col % 4] = k < K ? v : 0.0;
        }
    }
}

void main_shared(uint z, uint ao, uint bo)
{
    uint M = p.M, N = p.N, K = p.K;
    uint mb = gl_WorkGroupID.y * 4 * BM4, nb = gl_WorkGroupID.x * 4 * BN4;
    uint tx = gl_LocalInvocationID.x, ty = gl_LocalInvocationID.y;
    zero_acc();
    // No early return: every invocation takes part in staging and barriers.
    for (uint k0 = 0; k0 < K; k0 += BK) {
        stage(ao, bo, mb, nb, k0);
        barrier();
        [[unroll]] for (uint kk = 0; kk < BK; kk++) {
            vec4 av[TM4], bv[TN4];
            [[unroll]] for (uint i = 0; i < TM4; i++)
                av[i] = as[kk * BM4 + ty * TM4 + i];
            [[unroll]] for (uint j = 0; j < TN4; j++)
                bv[j] = bs[kk * BN4 + tx * TN4 + j];
            [[unroll]] for (uint i = 0; i < TM; i++)
                [[unroll]] for (uint j = 0; j < TN4; j++)
                    acc[i][j] += av[i / 4][i % 4] * bv[j];
        }
        barrier();
    }
    uint m0 = mb + ty * TM, n0 = nb + tx * TN;
    [[unroll]] for (uint i = 0; i < TM; i++) {
        if (m0 + i >= M)
            break;
        [[unroll]] for (uint j = 0; j < TN4; j++) {
            uint n = n0 + 4 * j;
            if (ALL4) {
                if (n < N)
                    store4((z * p.sc + (m0 + i) * N + n) / 4, n, acc[i][j]);
            } else {
                [[unroll]] for (uint jj = 0; jj < 4; jj++)
                    if (n + jj < N)
                        store1(z * p.sc + (m0 + i) * N + n + jj, n + jj, acc[i][j][jj]);
            }
        }
    }
}

void main()
{
    uint z = gl_WorkGroupID.z;
    uint ao = z * p.sa, bo = z * p.sb;
    if (MODE == 2)
        main_shared(z, ao, bo);
    else
        main_registers(z, ao, bo);
}
