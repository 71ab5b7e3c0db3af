#version 450
// Rows of a table by index (embedding lookup) and the deterministic
// backward. Indices outside [0, R) are clamped to the nearest row (MODE 0,
// 1); MODE 2 reads a zero row for them instead.
//   MODE 0, forward:  y[n, c] = table[clamp(idx[n]), c]
//            src = table (R, C), dst = y (N, C); one invocation per element
//   MODE 1, backward: dst[r, c] (+)= sum over n with clamp(idx[n]) == r, in
//            ascending n, of src[n, c]; src = dy (N, C), dst = dtable (R, C).
//            One workgroup per table row r (flat over the x and y grid).
//            Per chunk of L indices (L = local size, at most 256), each lane
//            tests one index, one lane compacts the hits into an ordered
//            list in shared memory, and every lane adds the listed dy rows
//            into its columns (c = lane, lane + L, ...). Each index is
//            compared once per row (R*N compares), each dy element read
//            once, and the sums run in ascending n: the same bits on every
//            run. (A shared-memory prefix sum instead of the one-lane
//            compaction was 1.3x slower on lavapipe, where every barrier is
//            expensive; one invocation per (row, 16 columns) walking all N
//            indices itself was 4x slower.)
//   MODE 2, row map:  dst[n, c] (+)= idx[n] in [0, R) ? src[idx[n], c] : 0
//            one invocation per element; acc adds. An injective map's
//            backward is the same with the inverse map (vp_op_row_map).
#extension GL_GOOGLE_include_directive : require
#include "common.glsl"

LOCAL_SIZE_FROM_SPEC;
layout(constant_id = 3) const uint MODE = 0;

layout(push_constant) uniform Push {
    uint R, C, N;
    uint acc;   // MODE 1: add into dst
} p;
layout(binding = 0) readonly buffer Src { float src[]; };
layout(binding = 1) readonly buffer Idx { int idx[]; };
layout(binding = 2) buffer Dst { float dst[]; };

shared uint hits[256];
shared uint list[256];

int row_of(uint n)
{
    return clamp(idx[n], 0, int(p.R) - 1);
}

void backward()
{
    uint r = gl_WorkGroupID.x + gl_WorkGroupID.y * gl_NumWorkGroups.x;
    if (r >= p.R)
        return; // the whole workgroup
    uint lid = gl_LocalInvocationID.x, nloc = gl_WorkGroupSize.x, base = r * p.C;
    // each lane owns columns lid, lid + nloc, ... from here to the end
    if (p.acc == 0)
        for (uint c = lid; c < p.C; c += nloc)
            dst[base + c] = 0.0;
    for (uint n0 = 0; n0 < p.N; n0 += nloc) {
        uint n = n0 + lid;
        uint hit = n < p.N && row_of(n) == int(r) ? 1 : 0;
        hits[lid] = hit;
        barrier();
        if (lid == 0) { // compact the hits in order: one lane, no more barriers
            uint m = 0;
            for (uint t = 0; t < nloc; t++)
                if (hits[t] != 0)
                    list[m++] = n0 + t;
            hits[0] = m;
        }
        barrier();
        uint m = hits[0];
        if (m > 0)
            for (uint c = lid; c < p.C; c += nloc) {
                float v = dst[base + c];
                for (uint k = 0; k < m; k++)
                    v += src[list[k] * p.C + c];
                dst[base + c] = v;
            }
        barrier(); // hits and list are rewritten next chunk
    }
}

void main()
{
    if (MODE == 1) {
        backward();
        return;
    }
    uint i = flat_index();
    if (i >= p.N * p.C)
        return;
    uint n = i / p.C, c = i % p.C;
    if (MODE == 2) {
        int r = idx[n];
        float v = r >= 0 && uint(r) < p.R ? src[uint(r) * p.C + c] : 0.0;
        dst[i] = p.acc != 0 ? dst[i] + v : v;
        return;
    }
    dst[i] = src[uint(row_of(n)) * p.C + c];
}
