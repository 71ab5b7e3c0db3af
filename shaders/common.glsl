// Shared declarations for vpeft compute shaders.
//
// Conventions every kernel follows:
// - storage buffers at set 0, bindings 0..n-1, in the order the host's
//   vp_kernel lists them; outputs after inputs;
// - local size from specialization constants 0, 1, 2 (the host picks it per
//   device); further constants from id 3 on;
// - shapes and scalars in push constants (at most 128 bytes).

#define LOCAL_SIZE_FROM_SPEC \
    layout(local_size_x_id = 0, local_size_y_id = 1, local_size_z_id = 2) in

// Flat index of this invocation over a 2D grid of workgroups, so that
// element counts above 65535 workgroups still fit one dispatch.
uint flat_index()
{
    return gl_GlobalInvocationID.x + gl_GlobalInvocationID.y * gl_NumWorkGroups.x * gl_WorkGroupSize.x;
}
