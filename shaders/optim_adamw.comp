#version 450
// AdamW, one pass over a flat trainable buffer, as torch.optim.AdamW
// (decoupled weight decay, bias correction), with optional clipping by the
// global gradient norm (torch.nn.utils.clip_grad_norm_) and an optional
// per-element learning-rate multiplier (parameter groups):
//   c   = min(1, max_norm / (gs sqrt(sqnorm) + 1e-6)) (1 without clipping)
//   g   = c gs grad,  lr_k = lr * lr_scale[k]         (lr_scale 1 without)
//   w  *= 1 - lr_k wd
//   m   = b1 m + (1 - b1) g,  v = b2 v + (1 - b2) g^2
//   w  -= lr_k / bc1 * m / (sqrt(v) / sqrt(bc2) + eps)
// What changes every step comes from the state tensor, which the host
// writes before each submit so that one recording serves every step:
//   state: (4) = (lr, bc1 = 1 - b1^t, bc2 = 1 - b2^t, gs)
// gs scales the gradient first (1 / k after k accumulated runs, as if the
// loss had been divided by k).
// Betas, eps, wd and max_norm are fixed at record time (push constants).
//   grad, lr_scale, param, m, v: (n)  sqnorm: (1)
// Four elements per invocation (vec4; the last n % 4 scalar).
#extension GL_GOOGLE_include_directive : require
#include "common.glsl"

LOCAL_SIZE_FROM_SPEC;
#include "loss.glsl"

layout(push_constant) uniform Push {
    uint n;
    float beta1, beta2, eps, wd, max_norm; // max_norm 0: no clipping
    uint has_scale;
} p;
#define DECL(i, name, q)                                                        \
    layout(binding = i) q buffer name##1_ { float name##1[]; };                 \
    layout(binding = i) q buffer name##4_ { vec4 name##4[]; };
DECL(0, g, readonly)
layout(binding = 1) readonly buffer State { float state[]; };
layout(binding = 2) readonly buffer SqNorm { float sqnorm[]; };
DECL(3, sc, readonly)
DECL(4, w, )
DECL(5, m, )
DECL(6, v, )

void main()
{
    uint j = flat_index();
    if (j >= (p.n + 3u) / 4u)
        return;
    float lr = state[0], bc1 = state[1], sbc2 = sqrt(state[2]), gs = state[3];
    float clip = 1.0;
    if (p.max_norm > 0.0) {
        float c = p.max_norm / (gs * sqrt(sqnorm[0]) + 1e-6);
        clip = c >= 1.0 ? 1.0 : c; // a NaN norm stays NaN, as in PyTorch
    }
    bool full = 4u * j + 3u < p.n;
    vec4 g, sc = vec4(1.0), w, m, v;
    if (full) {
        g = g4[j];
        if (p.has_scale != 0u)
            sc = sc4[j];
        w = w4[j];
        m = m4[j];
        v = v4[j];
    } else {
        g = w = m = v = vec4(0.0);
        for (uint k = 0u; 4u * j + k < p.n; k++) {
            uint e = 4u * j + k;
            g[k] = g1[e];
            if (p.has_scale != 0u)
                sc[k] = sc1[e];
            w[k] = w1[e];
            m[k] = m1[e];
            v[k] = v1[e];
        }
    }
    g *= clip * gs;
    vec4 lrk = lr * sc;
    w *= 1.0 - lrk * p.wd;
    m = p.beta1 * m + (1.0 - p.beta1) * g;
    v = p.beta2 * v + (1.0 - p.beta2) * (g * g);
    w -= (lrk / bc1) * m / (sqrt(v) / sbc2 + p.eps);
    if (full) {
        w4[j] = w;
        m4[j] = m;
        v4[j] = v;
    } else {
        for (uint k = 0u; 4u * j + k < p.n; k++) {
            uint e = 4u * j + k;
            w1[e] = w[k];
            m1[e] = m[k];
            v1[e] = v[k];
        }
    }
}
