// Declarations shared by the tiled matmul kernels, matmul.comp (register
// and shared-memory tilings) and matmul_subgroup.comp (subgroup tiling):
// specialization constants, push constants, bindings, the accumulator.
//   C[z] (M, N) = op(A[z]) (M, K) x op(B[z]) (K, N)
//   A stored (M, K), or (K, M) when TRANS_A; B stored (K, N), or (N, K) when
//   TRANS_B; per-batch strides sa, sb, sc in elements (0 broadcasts).
//
// VEC4 (bits) says which operands load four floats at once along their
// contiguous axis (K for A and B^T, M for A^T, N for B) and whether C is
// stored four columns at a time: the host sets a bit where that axis is a
// multiple of 4, and bit 8 where K is. The subgroup tiling uses each bit on
// its own; the others take the vec4 path only with all four bits set.
// Out-of-range rows and columns of C load clamped (valid) data and are not
// stored.

LOCAL_SIZE_FROM_SPEC;
layout(constant_id = 3) const uint TM = 4;       // rows per invocation (multiple of 4)
layout(constant_id = 4) const uint TN = 4;       // columns per invocation (multiple of 4)
layout(constant_id = 5) const bool TRANS_A = false;
layout(constant_id = 6) const bool TRANS_B = false;
layout(constant_id = 7) const uint VEC4 = 0;     // bits: 1 A, 2 B, 4 C as vec4; 8 K % 4 == 0
layout(constant_id = 8) const uint MODE = 0;     // 0 registers, 1 subgroup, 2 shared memory
layout(constant_id = 9) const uint LANES = 8;    // MODE 1: the subgroup size
layout(constant_id = 10) const uint BK = 16;     // MODE 2: K step (multiple of 4)
layout(constant_id = 11) const bool ACC = false;  // C += result, instead of C = result
layout(constant_id = 12) const bool BIAS = false; // add bias[n] (binding 3) to every row

layout(push_constant) uniform Push { uint M, N, K, sa, sb, sc; } p;
layout(binding = 0) readonly buffer A1 { float a1[]; };
layout(binding = 0) readonly buffer A4 { vec4 a4[]; };
layout(binding = 1) readonly buffer B1 { float b1[]; };
layout(binding = 1) readonly buffer B4 { vec4 b4[]; };
layout(binding = 2) buffer C1 { float c1[]; };
layout(binding = 2) buffer C4 { vec4 c4[]; };
// Without BIAS the host binds another operand here; it is never read.
layout(binding = 3) readonly buffer Bias1 { float bias1[]; };
layout(binding = 3) readonly buffer Bias4 { vec4 bias4[]; };

const bool ALL4 = VEC4 == 15u; // MODE 0 and 2: vec4 everywhere, or scalar
const uint TM4 = TM / 4;
const uint TN4 = TN / 4;

vec4 acc[TM][TN4];

// Every store of C goes through these: result + bias[n] (+ old C).
// idx: flat index of the element in C; n: its column.
void store1(uint idx, uint n, float v)
{
    if (BIAS)
        v += bias1[n];
    if (ACC)
        v += c1[idx];
    c1[idx] = v;
}

// Four columns n..n+3 at flat index 4*idx4 (N % 4 == 0, so n % 4 == 0).
void store4(uint idx4, uint n, vec4 v)
{
    if (BIAS)
        v += bias4[n / 4];
    if (ACC)
        v += c4[idx4];
    c4[idx4] = v;
}

void zero_acc()
{
    [[unroll]] for (uint i = 0; i < TM; i++)
        [[unroll]] for (uint j = 0; j < TN4; j++)
            acc[i][j] = vec4(0.0);
}

