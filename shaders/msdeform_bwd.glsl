// Body of msdeform_bwd.comp and msdeform_bwd_atomic.comp. Multi-scale
// deformable attention, backward: the gradients of the sampling
// locations and attention weights, one invocation per sample
// (b, q, h, l, p), a loop over the head's channels; no reduction across
// invocations, so no atomics and a fixed summation order. With ATOMIC
// (msdeform_bwd_atomic.comp) the same invocation also scatters
// attn * weight * grad_out into the value gradient with float atomic adds.
#include "msdeform.glsl"

layout(binding = 0) readonly buffer V1 { float value1[]; };
layout(binding = 0) readonly buffer V4 { vec4 value4[]; };
layout(binding = 1) readonly buffer Loc { vec2 loc[]; };
layout(binding = 2) readonly buffer Attn { float attn[]; };
layout(binding = 3) readonly buffer G1 { float gout1[]; };
layout(binding = 3) readonly buffer G4 { vec4 gout4[]; };
layout(binding = 4) buffer GLoc { vec2 grad_loc[]; };
layout(binding = 5) buffer GAttn { float grad_attn[]; };
#ifdef ATOMIC
layout(binding = 6) buffer GV { float grad_value[]; };
#endif

vec4 load_value(uint i)
{
    return VEC == 4 ? value4[i] : vec4(value1[i], 0.0, 0.0, 0.0);
}

vec4 load_gout(uint i)
{
    return VEC == 4 ? gout4[i] : vec4(gout1[i], 0.0, 0.0, 0.0);
}

void main()
{
    uint lp = p.L * p.P;
    uint s = flat_index();
    if (s >= p.B * p.Q * p.H * lp)
        return;
    uint bqh = s / lp, l = (s % lp) / p.P;
    uint h = bqh % p.H, b = bqh / (p.H * p.Q);
    uint hl = p.lv[l].x, wl = p.lv[l].y;
    uint dv = p.Dh / VEC;
    ivec2 c;
    vec2 f;
    cell(loc[s], hl, wl, c, f);
    float a = attn[s];
    float w[4] = float[4]((1.0 - f.x) * (1.0 - f.y), f.x * (1.0 - f.y), (1.0 - f.x) * f.y,
                          f.x * f.y);
    bool in_[4];
    uint at[4];  // first channel vector of each corner
    [[unroll]] for (uint j = 0; j < 4; j++) {
        ivec2 cj = c + ivec2(j & 1, j >> 1);
        in_[j] = inside(cj, hl, wl);
        at[j] = in_[j] ? ((b * p.S + p.lv[l].z + uint(cj.y) * wl + uint(cj.x)) * p.H + h) * dv : 0;
    }
    float ga = 0.0, gx = 0.0, gy = 0.0;
    for (uint cv = 0; cv < dv; cv++) {
        vec4 g = load_gout(bqh * dv + cv);
        vec4 v[4];
        [[unroll]] for (uint j = 0; j < 4; j++)
            v[j] = in_[j] ? load_value(at[j] + cv) : vec4(0.0);
        ga += dot(g, w[0] * v[0] + w[1] * v[1] + w[2] * v[2] + w[3] * v[3]);
        gx += dot(g, (1.0 - f.y) * (v[1] - v[0]) + f.y * (v[3] - v[2]));
        gy += dot(g, (1.0 - f.x) * (v[2] - v[0]) + f.x * (v[3] - v[1]));
#ifdef ATOMIC
        [[unroll]] for (uint j = 0; j < 4; j++) {
            if (!in_[j])
                continue;
            vec4 d = (a * w[j]) * g;
            [[unroll]] for (uint e = 0; e < VEC; e++)
                atomicAdd(grad_value[(at[j] + cv) * VEC + e], d[e]);
        }
#endif
    }
    // d(pixel x)/d(loc x) = W_l, d(pixel y)/d(loc y) = H_l
    vec2 gl = a * vec2(gx * float(wl), gy * float(hl));
    if ((p.flags & ACC_LOC) != 0)
        gl += grad_loc[s];
    grad_loc[s] = gl;
    if ((p.flags & ACC_ATTN) != 0)
        ga += grad_attn[s];
    grad_attn[s] = ga;
}
