#version 450
// msdeform_bwd.glsl with the value gradient scattered by float atomic adds
// (VK_EXT_shader_atomic_float, shaderBufferFloat32AtomicAdd): only built on
// devices that report it. The host clears grad_value first unless
// accumulating. The order of the additions, and so the last bits of
// grad_value, vary from run to run.
#extension GL_GOOGLE_include_directive : require
#extension GL_EXT_shader_atomic_float : require
#define ATOMIC 1
#include "msdeform_bwd.glsl"
