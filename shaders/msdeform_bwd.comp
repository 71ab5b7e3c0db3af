#version 450
// Multi-scale deformable attention, backward without atomics: the gradients
// of the sampling locations and attention weights (msdeform_bwd.glsl). The
// value gradient comes from msdeform_bwd_value.comp.
#extension GL_GOOGLE_include_directive : require
#include "msdeform_bwd.glsl"
