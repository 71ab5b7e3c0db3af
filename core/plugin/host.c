/*
 * The vp_host_api table. Entries are the core's own functions where the
 * ABI copies their signatures (graph ops, config, errors); the model
 * builder supplies the ones that need the build context (parameters,
 * sites, weights).
 */
#include "plugin/host.h"

#include "config/config.h"
#include "graph/graph.h"
#include "model/build.h"
#include "model/select.h"
#include "util/error.h"
#include "util/log.h"

#include <stdio.h>
#include <string.h>

/* A "peft" entry's "name" (its adapter name, read by the host: see
 * vp_peft_set_load) is a key every PEFT plugin knows without listing it. */
static vp_status check_keys(const vp_config *c, const char *const *known, uint32_t n)
{
    const char *path = vp_cfg_path(c);
    int end = 0;
    if (n < 64 && sscanf(path, "peft[%*u]%n", &end) == 0 && end > 0 && !path[end]) {
        const char *with[64];
        memcpy(with, known, n * sizeof *known);
        with[n] = "name";
        return vp_cfg_check_keys(c, with, n + 1);
    }
    return vp_cfg_check_keys(c, known, n);
}

static const vp_host_api host_api = {
    .size = sizeof(vp_host_api),
    .abi_major = VP_ABI_MAJOR,
    .abi_minor = VP_ABI_MINOR,
    .version = VP_VERSION_STRING,

    .log = vp_log,
    .error = vp_error_set,
    .last_error = vp_error_last,
    .status_str = vp_status_str,

    .cfg_type = vp_cfg_type_of,
    .cfg_int = vp_cfg_int,
    .cfg_float = vp_cfg_float,
    .cfg_bool = vp_cfg_bool,
    .cfg_string = vp_cfg_string,
    .cfg_file = vp_cfg_file,
    .cfg_get = vp_cfg_get,
    .cfg_len = vp_cfg_len,
    .cfg_at = vp_cfg_at,
    .cfg_key = vp_cfg_key,
    .cfg_path = vp_cfg_path,
    .cfg_check_keys = check_keys,
    .cfg_fail = vp_cfg_fail,

    .graph = vp_build_graph,
    .graph_status = vp_graph_status,
    .name = vp_gt_name,
    .ndim = vp_gt_ndim,
    .shape = vp_gt_shape,
    .nelem = vp_gt_nelem,
    .dtype = vp_gt_dtype,
    .keep = vp_g_keep,
    .find = vp_graph_find,

    .param = vp_build_param_new,
    .param_lr_scale = vp_g_param_lr_scale,
    .constant = vp_g_const,
    .input = vp_g_input,
    .input_i32 = vp_g_input_i32,

    .gemm = vp_g_gemm,
    .linear = vp_g_linear,
    .add = vp_g_add,
    .mul = vp_g_mul,
    .scale = vp_g_scale,
    .reshape = vp_g_reshape,
    .relu = vp_g_relu,
    .gelu = vp_g_gelu,
    .layernorm = vp_g_layernorm,
    .softmax = vp_g_softmax,
    .cross_entropy = vp_g_cross_entropy,
    .bce_logits = vp_g_bce_logits,
    .dice = vp_g_dice,
    .permute = vp_g_permute,
    .transpose = vp_g_transpose,
    .concat = vp_g_concat,
    .slice = vp_g_slice,
    .gather_rows = vp_g_gather_rows,
    .patch_embed = vp_g_patch_embed,
    .maxpool2 = vp_g_maxpool2,
    .conv_transpose2 = vp_g_conv_transpose2,
    .resize_bilinear = vp_g_resize_bilinear,
    .msdeform = vp_g_msdeform,
    .bool_mask = vp_g_bool_mask,
    .attention = vp_g_attention,
    .sum = vp_g_sum,
    .mean = vp_g_mean,
    .host = vp_g_host,

    .site_linear = vp_build_site_linear,
    .site_output = vp_build_site_output,
    .site_module = vp_build_site_module,

    .selector_create = vp_selector_create,
    .selector_match = vp_selector_match,
    .selector_destroy = vp_selector_destroy,

    .weights_open = vp_build_weights_open,
    .weights_count = vp_weights_count,
    .weights_key = vp_weights_key,
    .weights_shape = vp_weights_shape,
    .param_load = vp_build_param_load,

    .kernel = vp_graph_kernel,
    .custom = vp_g_custom,

    .output = vp_build_output,

    .sigmoid = vp_g_sigmoid,
    .softplus = vp_g_softplus,
    .silu = vp_g_silu,
    .logit_mask = vp_g_logit_mask,
    .dropout = vp_g_dropout,

    .constant_i32 = vp_g_const_i32,
    .cfg_load = vp_cfg_load,
    .cfg_free = vp_cfg_free,
    .buffer_key = vp_build_buffer_key,
    .rand = vp_g_rand,
    .site_output_in = vp_build_site_output_in,
    .attention_ex = vp_g_attention_ex,
    .row_map = vp_g_row_map,
};

const vp_host_api *vp_host_api_get(void) { return &host_api; }
