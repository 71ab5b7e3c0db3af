// Declarations shared by the fused attention kernels: attn_fwd.comp (the
// forward, one invocation per query row, softmax online), attn_bwd_q.comp
// (the query gradient and each row's delta = dO . O), attn_bwd_kv.comp (the
// key and value gradients, one invocation per key row), attn_bwd_ds.comp
// (the score gradients, only for a bias that trains), and their subgroup
// forms *_sg.comp for CPU devices. Nothing of size Nq x Nk is stored but
// those score gradients: the backward recomputes the probabilities from
// the saved log-sum-exp of each row (FlashAttention's recomputation).
//
//   q (B, Nq, H * DH), k and v (B, Nk, H * DH), out and dO like q: head h is
//       channels h * DH .. h * DH + DH - 1 (no permutes needed)
//   bias (M, Hb, Nq, Nk), optional: image b adds bias[b % M], head h adds
//       bias[.., Hb == 1 ? 0 : h, ..]; -inf masks a key
//   lse (B, H, Nq); stats (B, H, Nq, 2): (lse, delta) per row, written by
//       attn_bwd_q.comp for the two kernels after it
//   s = scale * q . k + bias,  out = softmax(s) v over keys
//
// A row with every key masked (all -inf) gives out 0 and lse +inf, so that
// its probabilities, and its gradients, are 0.
//
// Channels go VEC at a time (4 when DH % 4 == 0, else 1) through vec4 or
// float views of the same buffers; with VEC 1 the unused lanes are 0.

// lavapipe (llvmpipe) ends every loop of an invocation once the
// invocation has run 65535 loop iterations in total (gallivm's loop
// limiter, one counter per shader invocation), so the loops over channels
// are unrolled ([[unroll]], VEC channels per step) and only the loops over
// keys or queries remain: vp_op_attention refuses more than
// VP_ATTN_MAX_ROWS of those on CPU devices.

#extension GL_EXT_control_flow_attributes : require
#include "common.glsl"

LOCAL_SIZE_FROM_SPEC;
layout(constant_id = 3) const uint DH = 1;   // channels per head
layout(constant_id = 4) const uint VEC = 1;  // channels per step: 1 or 4
#define NV (DH / VEC)                        // steps per head

#define HAS_BIAS 1u
#define ACC_Q 2u
#define ACC_K 4u
#define ACC_V 8u
#define ACC_BIAS 16u

layout(push_constant) uniform Push {
    uint B, Nq, Nk, H, M, Hb, flags;
    float scale;
} p;

// Offset, in steps of VEC channels, of row i of image b, head h, in q /
// out / dO (Nq rows) or k / v (Nk rows: pass Nk as n).
uint row_off(uint b, uint n, uint i, uint h)
{
    return ((b * n + i) * (p.H * DH) + h * DH) / VEC;
}

// A float or a vec4 buffer view pair, read as vec4 steps.
#define LOAD(name, i) (VEC == 4 ? name##4[i] : vec4(name##1[i], 0.0, 0.0, 0.0))
#define STORE(name, i, val)      \
    if (VEC == 4)                \
        name##4[i] = (val);      \
    else                         \
        name##1[i] = (val).x

// Offset of bias[b % M, h or 0, i, 0].
uint bias_row(uint b, uint h, uint i)
{
    return (((b % p.M) * p.Hb + (p.Hb == 1u ? 0u : h)) * p.Nq + i) * p.Nk;
}

float neg_inf() { return uintBitsToFloat(0xff800000u); }

// The grid: x counts rows within a group, y and z the group, so that every
// invocation of a workgroup shares its group: the same (b, h) for the
// kernels. (lavapipe does not exploit it: inside a loop it loads even a
// uniform address once per lane, hence the subgroup forms.)
uint group_index() { return gl_WorkGroupID.y + gl_WorkGroupID.z * gl_NumWorkGroups.y; }
uint row_index() { return gl_WorkGroupID.x * gl_WorkGroupSize.x + gl_LocalInvocationID.x; }
