#version 450
// Dice loss forward (shapes and formula: loss_dice.glsl). One workgroup
// walks the masks in order, each summed along a fixed tree (loss.glsl), so
// the loss is deterministic.
//   x, target: (M, P)  loss: (1)
#extension GL_GOOGLE_include_directive : require
#include "common.glsl"

LOCAL_SIZE_FROM_SPEC; // before loss.glsl: wg_sum sizes its array by it
#define WG_SUM
#include "loss.glsl"
#include "loss_dice.glsl"

layout(binding = 2) writeonly buffer Loss { float loss[]; };

void main()
{
    float total = 0.0;
    for (uint m = 0u; m < p.M; m++) {
        vec3 s = dice_sums(m);
        total += s.z / (s.x + s.y + 1.0);
    }
    if (gl_LocalInvocationID.x == 0u)
        loss[0] = total / p.normalizer;
}
