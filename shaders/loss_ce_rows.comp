#version 450
// Softmax cross-entropy, forward part 1: per-row statistics of the logits.
//   x: (N, C) logits    saved: (N + 1, 2); row i gets (m_i, s_i) with
//   m_i = max_c x[i, c] and s_i = sum over c but the (first) arg max of
//   exp(x[i, c] - m_i), so logsumexp_i = m_i + log1p(s_i) and
//   softmax_i[c] = exp(x[i, c] - m_i) / (1 + s_i). Row N is written by
//   loss_ce_reduce.comp.
// Why not logsumexp as one float: at logits of magnitude 1e4 it would round
// log1p(s_i) to the ulp of m_i (1e-3). Why s_i rather than log1p(s_i): where
// one class dominates, softmax - 1 at that class is -s_i / (1 + s_i), which
// s_i gives without the cancellation of exp(...) - 1 (the backward uses it).
// One invocation per row: the classifier losses of a segmentation head have
// few rows (batch x queries) and up to a few hundred classes.
#extension GL_GOOGLE_include_directive : require
#include "common.glsl"

LOCAL_SIZE_FROM_SPEC;

layout(push_constant) uniform Push { uint N, C; } p;
layout(binding = 0) readonly buffer X { float x[]; };
layout(binding = 1) writeonly buffer Saved { float saved[]; };

void main()
{
    uint i = flat_index();
    if (i >= p.N)
        return;
    uint base = i * p.C;
    float m = x[base];
    uint am = 0u;
    for (uint c = 1u; c < p.C; c++) {
        float v = x[base + c];
        if (v > m) {
            m = v;
            am = c;
        }
    }
    float s = 0.0;
    for (uint c = 0u; c < p.C; c++)
        if (c != am)
            s += exp(x[base + c] - m);
    saved[2u * i] = m;
    saved[2u * i + 1u] = s;
}
