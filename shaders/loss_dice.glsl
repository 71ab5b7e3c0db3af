// Declarations shared by the dice loss kernels (loss_dice.comp and
// loss_dice_backward.comp): bindings 0 and 1, push constants, and the
// per-mask sums. Mask2Former's dice loss on sigmoid masks:
//   x, target: (M, P), mask m is row m; p = sigmoid(x)
//   loss = 1/normalizer sum_m 1 - (2 sum_j p_j t_j + 1) / (sum_j p_j + sum_j t_j + 1)
// computed as d_m / B_m with B_m = sum p + sum t + 1 and
//   d_m = B_m - (2 sum p t + 1) = sum_j p_j (1 - t_j) + t_j (1 - p_j)
// a sum of non-negative terms (1 - p from sigmoid2, without cancellation):
// for masks that nearly match, 1 - (ratio close to 1) would cancel to a
// relative error of 1e-4 and worse.
// Rows load as vec4 where P is a multiple of 4 (tensors start on 16 bytes,
// so every row does), as scalars otherwise.

layout(push_constant) uniform Push { uint M, P; float normalizer; uint accumulate; } p;
layout(binding = 0) readonly buffer X1 { float x1[]; };
layout(binding = 0) readonly buffer X4 { vec4 x4[]; };
layout(binding = 1) readonly buffer T1 { float t1[]; };
layout(binding = 1) readonly buffer T4 { vec4 t4[]; };

// (sum p, sum t, d) of one element
vec3 dice_terms(float x, float t)
{
    vec2 pq = sigmoid2(x);
    return vec3(pq.x, t, pq.x * (1.0 - t) + t * pq.y);
}

// (sum p, sum t, d_m) of mask m, in every invocation of the workgroup;
// call in uniform control flow.
vec3 dice_sums(uint m)
{
    uint tid = gl_LocalInvocationID.x, L = gl_WorkGroupSize.x;
    vec3 acc = vec3(0.0);
    if (p.P % 4u == 0u) {
        uint base = m * (p.P / 4u);
        for (uint j = tid; j < p.P / 4u; j += L) {
            vec4 xv = x4[base + j], tv = t4[base + j];
            acc += (dice_terms(xv.x, tv.x) + dice_terms(xv.y, tv.y)) +
                   (dice_terms(xv.z, tv.z) + dice_terms(xv.w, tv.w));
        }
    } else {
        uint base = m * p.P;
        for (uint j = tid; j < p.P; j += L)
            acc += dice_terms(x1[base + j], t1[base + j]);
    }
    return wg_sum(vec4(acc, 0.0)).xyz;
}
