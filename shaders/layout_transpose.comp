#version 450
// Tiled permute for permutations that move the innermost dimension
// (core/ops/layout.c canonicalises the permutation first). The iteration
// space is y's shape n (4-D, outermost first); y is contiguous along n.w,
// and x is contiguous along n[q] (ss[q] == 1, q < 3).
// MODE 0 (GPUs): each workgroup moves one 32x32 tile of the (n[q], n.w)
//   plane through shared memory: it reads rows of x along q and writes rows
//   of y along w, both contiguous. The two remaining dimensions come from
//   gl_WorkGroupID.z.
//   local size: (32, ROWS)   groups: (ceil(n.w/32), ceil(n[q]/32), n[o1]*n[o2])
// MODE 1 (CPUs): each invocation transposes a 4x4 block in registers: four
//   vec4 loads along q, four vec4 stores along w. On lavapipe a workgroup
//   barrier serialises the SIMD loop and each load is a per-lane loop, so
//   this is the fast form there. Needs n[q], n.w, ss.w and the other source
//   strides to be multiples of 4; one invocation per block, flat_index().
#extension GL_GOOGLE_include_directive : require
#include "common.glsl"

LOCAL_SIZE_FROM_SPEC;
layout(constant_id = 3) const uint MODE = 0;
#define TILE 32

layout(push_constant) uniform Push {
    uvec4 n;          // y's (canonical) shape
    uvec4 ss;         // x's strides along y's dimensions
    uvec4 ds;         // y's strides (ds.w == 1)
    uint q;           // the dimension along which x is contiguous
    uint acc;         // 1: add into y
    uint total;       // MODE 1: number of 4x4 blocks
} p;
layout(binding = 0) readonly buffer Src { float src[]; };
layout(binding = 0) readonly buffer Src4 { vec4 src4[]; };
layout(binding = 1) buffer Dst { float dst[]; };
layout(binding = 1) buffer Dst4 { vec4 dst4[]; };

shared float tile[TILE][TILE + 1]; // +1: columns hit different banks

void blocks()
{
    uint i = flat_index();
    if (i >= p.total)
        return;
    uint q = p.q;
    uvec4 nb = p.n, c;
    nb[q] /= 4;
    nb.w /= 4;
    c.w = i % nb.w;
    i /= nb.w;
    c.z = i % nb.z;
    i /= nb.z;
    c.y = i % nb.y;
    c.x = i / nb.y;
    c[q] *= 4;
    c.w *= 4;
    uint xs = c.x * p.ss.x + c.y * p.ss.y + c.z * p.ss.z + c.w * p.ss.w;
    uint yd = c.x * p.ds.x + c.y * p.ds.y + c.z * p.ds.z + c.w;
    // r[j] = x[q0 .. q0+3, w0 + j]; y[q0 + k, w0 .. w0+3] = (r[0][k], .., r[3][k])
    mat4 r = mat4(src4[xs / 4], src4[(xs + p.ss.w) / 4], src4[(xs + 2 * p.ss.w) / 4],
                  src4[(xs + 3 * p.ss.w) / 4]);
    mat4 t = transpose(r);
    for (uint k = 0; k < 4; k++) {
        uint d = (yd + k * p.ds[q]) / 4;
        dst4[d] = p.acc != 0 ? dst4[d] + t[k] : t[k];
    }
}

void main()
{
    if (MODE == 1) {
        blocks();
        return;
    }
    uint q = p.q;
    uint o1 = q == 0 ? 1 : 0, o2 = q == 2 ? 1 : 2;
    uint z = gl_WorkGroupID.z;
    uint c2 = z % p.n[o2], c1 = z / p.n[o2];
    uint xb = c1 * p.ss[o1] + c2 * p.ss[o2];
    uint yb = c1 * p.ds[o1] + c2 * p.ds[o2];
    uint w0 = gl_WorkGroupID.x * TILE, q0 = gl_WorkGroupID.y * TILE;
    uint tx = gl_LocalInvocationID.x, rows = gl_WorkGroupSize.y;
    uint nq = p.n[q];
    for (uint j = gl_LocalInvocationID.y; j < TILE; j += rows) {
        uint qi = q0 + tx, wi = w0 + j;
        if (qi < nq && wi < p.n.w)
            tile[j][tx] = src[xb + qi + wi * p.ss.w];
    }
    barrier();
    for (uint j = gl_LocalInvocationID.y; j < TILE; j += rows) {
        uint wi = w0 + tx, qi = q0 + j;
        if (wi < p.n.w && qi < nq) {
            uint d = yb + qi * p.ds[q] + wi;
            float v = tile[tx][j];
            dst[d] = p.acc != 0 ? dst[d] + v : v;
        }
    }
}
