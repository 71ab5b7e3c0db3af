// Shared code of the nn_* kernels (activations, layernorm, softmax,
// reductions): row segments with fixed-order tree reductions, compensated
// summation, and erf.
//
// Include after LOCAL_SIZE_FROM_SPEC (the shared arrays are sized by the
// local size).
//
// Row kernels split the workgroup (local size LOCAL in x) into segments of T
// consecutive invocations, T a power of two <= LOCAL from push constants:
// segment k of workgroup g handles row g * (LOCAL / T) + k, and lane l of a
// segment the columns l, l + T, l + 2T, ... (coalesced). Each lane
// accumulates its columns in order, then the segment adds its T partial
// results with a fixed tree. Nothing depends on timing or atomics, so every
// result is bitwise reproducible on a given device.

// NN_ROW1: one invocation per row (the host passes T = 1, ops/nn.c says
// where). The segment reductions then compile to nothing: no shared memory
// and no barrier left in the kernel. Why (Mesa 22.3 lavapipe, measured): a
// kernel that holds a barrier runs every invocation as a coroutine, and
// each barrier switches all of the workgroup's SIMD fibers, so a (2048, 24)
// layernorm took 4-5x as long with segments of 8 lanes as with one lane
// per row; a CPU pays a lane's loads the same whichever row they are in.
layout(constant_id = 4) const bool NN_ROW1 = false;

// Sized for the whole workgroup; the row helpers below use it with a
// local size of (LOCAL, 1, 1).
shared vec2 nn_red[gl_WorkGroupSize.x * gl_WorkGroupSize.y];

// Flat workgroup index over a 2-D grid (the host splits counts above the
// device's x limit over y).
uint nn_group()
{
    return gl_WorkGroupID.x + gl_WorkGroupID.y * gl_NumWorkGroups.x;
}

#define NN_NEG_INF uintBitsToFloat(0xff800000u)

// Kahan-compensated running sum: acc.x the sum, acc.y the compensation (the
// rounding error still to subtract). `precise` stops the compiler from
// simplifying (t - s) - y to 0, which it may do for ordinary arithmetic.
void kahan_add(inout vec2 acc, float v)
{
    precise float y = v - acc.y;
    precise float t = acc.x + y;
    precise float c = (t - acc.x) - y;
    acc = vec2(t, c);
}

float kahan_value(vec2 acc)
{
    precise float v = acc.x - acc.y;
    return v;
}

// Sum of v over the T invocations of this invocation's segment, returned to
// all of them: lane i adds lane i + s for s = T/2, T/4, ..., 1 (a pairwise
// tree, fixed order). Every invocation of the workgroup must call it with
// the same T (it contains barriers).
vec2 seg_sum2(vec2 v, uint T)
{
    if (NN_ROW1)
        return v;
    uint lid = gl_LocalInvocationID.x;
    barrier();  // earlier readers of nn_red are done
    nn_red[lid] = v;
    barrier();
    for (uint s = T >> 1; s > 0u; s >>= 1) {
        if ((lid & (T - 1u)) < s)
            nn_red[lid] += nn_red[lid + s];
        barrier();
    }
    return nn_red[lid & ~(T - 1u)];
}

float seg_sum(float v, uint T)
{
    return seg_sum2(vec2(v, 0.0), T).x;
}

float seg_max(float v, uint T)
{
    if (NN_ROW1)
        return v;
    uint lid = gl_LocalInvocationID.x;
    barrier();
    nn_red[lid].x = v;
    barrier();
    for (uint s = T >> 1; s > 0u; s >>= 1) {
        if ((lid & (T - 1u)) < s)
            nn_red[lid].x = max(nn_red[lid].x, nn_red[lid + s].x);
        barrier();
    }
    return nn_red[lid & ~(T - 1u)].x;
}

// exp(a) to within 0.7 eps (relative) for a in [-87, 88], checked on every
// float there, on every device: GLSL's exp may be off by 3 + 2|a| ulp, and
// GELU's derivative, where Phi(x) and x phi(x) cancel, shows it. a = j ln2
// + f with ln2 in two parts (Cody-Waite) so that f is exact, |f| <= ln2/2;
// exp(f) by its Taylor polynomial of degree 7 (truncation < 6e-9 relative);
// then times 2^j. Below -87 (exp < 1.7e-38, denormal) it returns 0.
float nn_exp(float a)
{
    if (a < -87.0)
        return 0.0;
    float j = roundEven(a * 1.44269504);
    float f = fma(j, -0.693145751953125, a);  // ln2, high 16 bits: j * it is exact
    f = fma(j, -1.42860677e-6, f);            // ln2, the rest
    float p = 1.0 / 5040.0;
    p = fma(p, f, 1.0 / 720.0);
    p = fma(p, f, 1.0 / 120.0);
    p = fma(p, f, 1.0 / 24.0);
    p = fma(p, f, 1.0 / 6.0);
    p = fma(p, f, 0.5);
    p = fma(p, f, 1.0);
    p = fma(p, f, 1.0);
    return ldexp(p, int(j));
}

// 1 + erf(z), to a few ulp of float everywhere, including z << 0 where it is
// tiny: there it is erfc(-z), computed directly rather than by cancelling 1
// against erf(z) ~ -1.
//
// The approximation is Norbert Juffa's faithfully rounded erff (max error
// about 1 ulp over all floats; published on Stack Overflow, question
// 35148198): for |z| <= 0.927734375 an odd minimax polynomial, above it
// erf(t) = 1 - exp(p(t)) with p a minimax polynomial for log(erfc(t)); so
// exp(p(t)) is erfc(t), which is what we need for negative z.
float one_plus_erf(float z)
{
    float t = abs(z), s = z * z;
    if (t > 0.927734375) {
        float r = fma(-1.72853470e-5, t, 3.83197126e-4);
        float u = fma(-3.88396438e-3, t, 2.42546219e-2);
        r = fma(r, s, u);
        r = fma(r, t, -1.06777877e-1);
        r = fma(r, t, -6.34846687e-1);
        r = fma(r, t, -1.28717512e-1);
        r = fma(r, t, -t);
        float erfc_t = nn_exp(r);
        return z > 0.0 ? 2.0 - erfc_t : erfc_t;
    }
    float r = -5.96761703e-4;
    r = fma(r, s, 4.99119423e-3);
    r = fma(r, s, -2.67681349e-2);
    r = fma(r, s, 1.12819925e-1);
    r = fma(r, s, -3.76125336e-1);
    r = fma(r, s, 1.28379166e-1);
    return 1.0 + fma(r, z, z);
}

// Phi(x) = 0.5 (1 + erf(x / sqrt 2)), the standard normal CDF.
float nn_phi(float x)
{
    return 0.5 * one_plus_erf(x * 0.70710678118654752);
}

// gelu(x) = x Phi(x) (PyTorch's default, exact erf form).
float nn_gelu(float x)
{
    return x * nn_phi(x);
}

// sigmoid(x) = 1 / (1 + e^-x), from e^-|x| only, so neither tail overflows.
float nn_sigmoid(float x)
{
    float e = nn_exp(-abs(x));
    return x >= 0.0 ? 1.0 / (1.0 + e) : e / (1.0 + e);
}

// softplus(x) = log(1 + e^x) = max(x, 0) + log(1 + e^-|x|); log1p's series
// where e^-|x| is tiny, which log(1 + e) would round away.
float nn_softplus(float x)
{
    float e = nn_exp(-abs(x));
    return max(x, 0.0) + (e < 1e-4 ? e * (1.0 - 0.5 * e) : log(1.0 + e));
}

// d gelu / dx = Phi(x) + x phi(x), phi(x) = exp(-x^2 / 2) / sqrt(2 pi).
float nn_gelu_grad(float x)
{
    return nn_phi(x) + x * (0.39894228040143268 * nn_exp(-0.5 * x * x));
}
