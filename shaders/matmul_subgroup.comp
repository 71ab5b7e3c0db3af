#version 450
// Tiled matmul, subgroup tiling (MODE 1 of the tiled kernels; shapes and the
// VEC4 bits: matmul.glsl). A file of its own because it needs subgroup
// shuffles, which the host only uses where the device reports them.
//
// The LANES invocations of a subgroup compute a TM x (LANES*TN) block
// together. Lane l owns the 4-column chunks l, l + LANES, l + 2 LANES, ...
// of it, so each B value is loaded by one lane only; the block's A values
// are loaded once too, spread over the lanes, and subgroupShuffle hands
// every lane each row in turn.
//
// Why (Mesa 22.3 lavapipe, measured): a subgroup is one SIMD vector, and
// every buffer load is a loop over its lanes with a branch and a bounds
// check per component (a vec4 load costs ~100 cycles), while a shuffle by a
// constant lane is a single vector permute (subgroupBroadcast is a loop
// again). Loads per 4 steps along K: TM/LANES + TN vec4 per lane, against
// TM + TN in MODE 0 (matmul.comp), for the same 4*TM*TN multiply-adds.
// The host uses it only where the subgroup size is fixed (wg_x a multiple
// of it) and shuffles are supported in compute shaders.
#extension GL_GOOGLE_include_directive : require
#extension GL_EXT_control_flow_attributes : require
#extension GL_KHR_shader_subgroup_basic : require
#extension GL_KHR_shader_subgroup_shuffle : require
#include "common.glsl"
#include "matmul.glsl"

// ROWSUM (TRANS_A only, one batch): rs[m] (+)= sum over k of A(k, m), the
// row sums of op(A), written by the subgroups of the first column block:
// with A = dy of a linear layer, C = dy^T x is the weight's gradient and rs
// the bias's, in the same pass over dy. RS_ACC adds into rs.
layout(constant_id = 13) const bool ROWSUM = false;
layout(constant_id = 14) const bool RS_ACC = false;
layout(binding = 4) buffer RS { float rs[]; };

// ---- MODE 1 ----------------------------------------------------------------

// Each lane loads TMR of the subgroup block's A vectors per step of 4 along
// K, c = lane + LANES r: A(m0 + c, k..k+3), or with TRANS_A the rows
// m0 + 4 (c / 4) .. + 3 at k + c % 4. The others read them by shuffle.
const uint TMR = (TM + LANES - 1) / LANES;
const bool VA = (VEC4 & 1u) != 0, VB = (VEC4 & 2u) != 0, VC = (VEC4 & 4u) != 0;
const bool K4 = (VEC4 & 8u) != 0;

void main_subgroup(uint z, uint ao, uint bo)
{
    uint lane = gl_SubgroupInvocationID;
    uint sgx_n = gl_WorkGroupSize.x / LANES; // subgroups along x in a workgroup
    uint sgx = gl_SubgroupID % sgx_n, sgy = gl_SubgroupID / sgx_n;
    uint m0 = (gl_WorkGroupID.y * gl_WorkGroupSize.y + sgy) * TM;
    uint nb = (gl_WorkGroupID.x * sgx_n + sgx) * LANES * TN;
    uint M = p.M, N = p.N, K = p.K;
    if (m0 >= M || nb >= N) // uniform in the subgroup
        return;
    zero_acc();
    vec4 rsum[TMR]; // ROWSUM: this lane's share of the row sums, as its la[]
    [[unroll]] for (uint r = 0; r < TMR; r++)
        rsum[r] = vec4(0.0);
    uint ncol[TN4]; // first column of this lane's chunk j: 4 columns from there
    [[unroll]] for (uint j = 0; j < TN4; j++)
        ncol[j] = nb + 4 * (lane + LANES * j);
    // Steps of 4 along K; without K4 the last one is partial and k >= K
    // loads clamped data that is zeroed (so inf or NaN there cannot leak).
    for (uint k = 0; k < K; k += 4) {
        vec4 la[TMR];
        [[unroll]] for (uint r = 0; r < TMR; r++) {
            uint c = lane + LANES * r;
            if (!TRANS_A) {
                uint row = ao + min(m0 + c, M - 1) * K;
                if (VA) {
                    la[r] = a4[(row + k) / 4];
                } else {
                    [[unroll]] for (uint kk = 0; kk < 4; kk++)
                        la[r][kk] = a1[row + min(k + kk, K - 1)];
                    if (!K4)
                        [[unroll]] for (uint kk = 0; kk < 4; kk++)
                            la[r][kk] = k + kk < K ? la[r][kk] : 0.0;
                }
            } else {
                uint kr = k + c % 4, m = m0 + 4 * (c / 4);
                uint row = ao + min(kr, K - 1) * M;
                if (VA) {
                    la[r] = a4[(row + min(m, M - 4)) / 4];
                } else {
                    [[unroll]] for (uint ii = 0; ii < 4; ii++)
                        la[r][ii] = a1[row + min(m + ii, M - 1)];
                }
                if (!K4)
                    la[r] = kr < K ? la[r] : vec4(0.0);
                if (ROWSUM)
                    rsum[r] += la[r];
            }
        }
        vec4 bv[4][TN4]; // bv[kk][j][jj] = B(k + kk, ncol[j] + jj)
        if (!TRANS_B) {
            [[unroll]] for (uint kk = 0; kk < 4; kk++) {
                uint row = bo + min(k + kk, K - 1) * N;
                [[unroll]] for (uint j = 0; j < TN4; j++) {
                    if (VB) {
                        bv[kk][j] = b4[(row + min(ncol[j], N - 4)) / 4];
                    } else {
                        [[unroll]] for (uint jj = 0; jj < 4; jj++)
                            bv[kk][j][jj] = b1[row + min(ncol[j] + jj, N - 1)];
                    }
                    if (!K4)
                        bv[kk][j] = k + kk < K ? bv[kk][j] : vec4(0.0);
                }
            }
        } else {
            [[unroll]] for (uint j = 0; j < TN4; j++)
                [[unroll]] for (uint jj = 0; jj < 4; jj++) {
                    uint col = bo + min(ncol[j] + jj, N - 1) * K;
                    vec4 v;
                    if (VB) {
                        v = b4[(col + k) / 4];
                    } else {
                        [[unroll]] for (uint kk = 0; kk < 4; kk++)
                            v[kk] = b1[col + min(k + kk, K - 1)];
                        if (!K4)
                            [[unroll]] for (uint kk = 0; kk < 4; kk++)
                                v[kk] = k + kk < K ? v[kk] : 0.0;
                    }
                    bv[0][j][jj] = v.x; bv[1][j][jj] = v.y;
                    bv[2][j][jj] = v.z; bv[3][j][jj] = v.w;
                }
        }
        if (!TRANS_A) {
            [[unroll]] for (uint i = 0; i < TM; i++) {
                vec4 ai = subgroupShuffle(la[i / LANES], i % LANES); // A(m0 + i, k..k+3)
                [[unroll]] for (uint j = 0; j < TN4; j++)
                    acc[i][j] += ai.x * bv[0][j] + ai.y * bv[1][j] + ai.z * bv[2][j] +
                                 ai.w * bv[3][j];
            }
        } else {
            [[unroll]] for (uint i4 = 0; i4 < TM4; i4++)
                [[unroll]] for (uint kk = 0; kk < 4; kk++) {
                    uint c = 4 * i4 + kk;
                    vec4 ak = subgroupShuffle(la[c / LANES], c % LANES); // A(m0 + 4 i4.., k + kk)
                    [[unroll]] for (uint ii = 0; ii < 4; ii++)
                        [[unroll]] for (uint j = 0; j < TN4; j++)
                            acc[4 * i4 + ii][j] += ak[ii] * bv[kk][j];
                }
        }
    }
    if (ROWSUM && TRANS_A && nb == 0u) {
        // entry c = lane + LANES r holds A(k + c % 4, m0 + 4 (c / 4) ..+3)
        // summed over the steps: add the four k offsets (lanes differing in
        // their two low bits, LANES a multiple of 4), then lane c % 4 == 0
        // writes rows m0 + 4 (c / 4) .. + 3
        [[unroll]] for (uint r = 0; r < TMR; r++) {
            vec4 t = rsum[r];
            t += subgroupShuffleXor(t, 1u);
            t += subgroupShuffleXor(t, 2u);
            uint c = lane + LANES * r, m = m0 + 4u * (c / 4u);
            if (c < TM && c % 4u == 0u)
                [[unroll]] for (uint ii = 0; ii < 4; ii++)
                    if (m + ii < M)
                        rs[m + ii] = t[ii] + (RS_ACC ? rs[m + ii] : 0.0);
        }
    }
    [[unroll]] for (uint i = 0; i < TM; i++) {
        if (m0 + i >= M)
            break;
        uint row = z * p.sc + (m0 + i) * N;
        [[unroll]] for (uint j = 0; j < TN4; j++) {
            if (VC) {
                if (ncol[j] < N)
                    store4((row + ncol[j]) / 4, ncol[j], acc[i][j]);
            } else {
                [[unroll]] for (uint jj = 0; jj < 4; jj++)
                    if (ncol[j] + jj < N)
                        store1(row + ncol[j] + jj, ncol[j] + jj, acc[i][j][jj]);
            }
        }
    }
}

void main()
{
    uint z = gl_WorkGroupID.z;
    main_subgroup(z, z * p.sa, z * p.sb);
}
