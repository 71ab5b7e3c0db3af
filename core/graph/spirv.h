/*
 * SPIR-V reflection of a plugin's kernel against its vp_kernel_desc
 * (spirv.c): the contract of <vpeft/kernel.h> checked at registration,
 * without the validation layer.
 */
#ifndef VP_GRAPH_SPIRV_H
#define VP_GRAPH_SPIRV_H

#include <stddef.h>
#include <stdint.h>

#include <vpeft/kernel.h>
#include <vpeft/status.h>

/* Whether the module (words words, magic number checked by the caller)
 * fits d: storage buffers in set 0 at exactly bindings 0 .. n_bindings - 1
 * and no other descriptor, a push-constant block of at most push_size
 * bytes, and the local size taken from specialization constants 0, 1, 2
 * (or fixed at d's local_size). Else VP_ERR_INVALID with one line
 * "custom kernel <name>: <what differs>" as the thread's last error. */
vp_status vp_spirv_check(const uint32_t *code, size_t words, const vp_kernel_desc *d,
                         const char *name);

#endif /* VP_GRAPH_SPIRV_H */
