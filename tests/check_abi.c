/*
 * ABI 1.0 frozen: the offset of every member of every struct that crosses
 * the plugin boundary, as released. A minor version may only append, so
 * these never change; a member inserted, removed, retyped or reordered
 * fails here, before any plugin in the field breaks. Appending grows a
 * struct, which is allowed: sizes are checked as lower bounds. The
 * numbers are those of LP64 (64-bit Linux, the platforms vpeft supports);
 * elsewhere the suite records a skip. Regenerate nothing: a failure here
 * means the change must be undone or become an append.
 */
#include <stddef.h>
#include <limits.h>
#include <stdint.h>
#include <string.h>

#include <vpeft/vpeft.h>

#include "harness.h"

#define M(s, m, off) {#s "." #m, offsetof(s, m), off}

static const struct {
    const char *what;
    size_t got, want;
} members[] = {
    M(vp_plugin_desc, size, 0),
    M(vp_plugin_desc, abi_major, 4),
    M(vp_plugin_desc, abi_minor, 6),
    M(vp_plugin_desc, name, 8),
    M(vp_plugin_desc, kind, 16),
    M(vp_plugin_desc, version, 24),
    M(vp_plugin_desc, description, 32),
    M(vp_plugin_desc, init, 40),
    M(vp_plugin_desc, fini, 48),
    M(vp_plugin_desc, get_interface, 56),
    M(vp_host_api, size, 0),
    M(vp_host_api, abi_major, 4),
    M(vp_host_api, abi_minor, 6),
    M(vp_host_api, version, 8),
    M(vp_host_api, log, 16),
    M(vp_host_api, error, 24),
    M(vp_host_api, last_error, 32),
    M(vp_host_api, status_str, 40),
    M(vp_host_api, cfg_type, 48),
    M(vp_host_api, cfg_int, 56),
    M(vp_host_api, cfg_float, 64),
    M(vp_host_api, cfg_bool, 72),
    M(vp_host_api, cfg_string, 80),
    M(vp_host_api, cfg_file, 88),
    M(vp_host_api, cfg_get, 96),
    M(vp_host_api, cfg_len, 104),
    M(vp_host_api, cfg_at, 112),
    M(vp_host_api, cfg_key, 120),
    M(vp_host_api, cfg_path, 128),
    M(vp_host_api, cfg_check_keys, 136),
    M(vp_host_api, cfg_fail, 144),
    M(vp_host_api, graph, 152),
    M(vp_host_api, graph_status, 160),
    M(vp_host_api, name, 168),
    M(vp_host_api, ndim, 176),
    M(vp_host_api, shape, 184),
    M(vp_host_api, nelem, 192),
    M(vp_host_api, dtype, 200),
    M(vp_host_api, keep, 208),
    M(vp_host_api, find, 216),
    M(vp_host_api, param, 224),
    M(vp_host_api, param_lr_scale, 232),
    M(vp_host_api, constant, 240),
    M(vp_host_api, input, 248),
    M(vp_host_api, input_i32, 256),
    M(vp_host_api, gemm, 264),
    M(vp_host_api, linear, 272),
    M(vp_host_api, add, 280),
    M(vp_host_api, mul, 288),
    M(vp_host_api, scale, 296),
    M(vp_host_api, reshape, 304),
    M(vp_host_api, relu, 312),
    M(vp_host_api, gelu, 320),
    M(vp_host_api, layernorm, 328),
    M(vp_host_api, softmax, 336),
    M(vp_host_api, cross_entropy, 344),
    M(vp_host_api, bce_logits, 352),
    M(vp_host_api, dice, 360),
    M(vp_host_api, permute, 368),
    M(vp_host_api, transpose, 376),
    M(vp_host_api, concat, 384),
    M(vp_host_api, slice, 392),
    M(vp_host_api, gather_rows, 400),
    M(vp_host_api, patch_embed, 408),
    M(vp_host_api, maxpool2, 416),
    M(vp_host_api, conv_transpose2, 424),
    M(vp_host_api, resize_bilinear, 432),
    M(vp_host_api, msdeform, 440),
    M(vp_host_api, bool_mask, 448),
    M(vp_host_api, attention, 456),
    M(vp_host_api, sum, 464),
    M(vp_host_api, mean, 472),
    M(vp_host_api, host, 480),
    M(vp_host_api, site_linear, 488),
    M(vp_host_api, site_output, 496),
    M(vp_host_api, site_module, 504),
    M(vp_host_api, selector_create, 512),
    M(vp_host_api, selector_match, 520),
    M(vp_host_api, selector_destroy, 528),
    M(vp_host_api, weights_open, 536),
    M(vp_host_api, weights_count, 544),
    M(vp_host_api, weights_key, 552),
    M(vp_host_api, weights_shape, 560),
    M(vp_host_api, param_load, 568),
    M(vp_host_api, kernel, 576),
    M(vp_host_api, custom, 584),
    M(vp_host_api, output, 592),
    M(vp_host_api, sigmoid, 600),
    M(vp_host_api, softplus, 608),
    M(vp_host_api, silu, 616),
    M(vp_host_api, logit_mask, 624),
    M(vp_host_api, dropout, 632),
    /* ABI 1.1 */
    M(vp_host_api, constant_i32, 640),
    M(vp_host_api, cfg_load, 648),
    M(vp_host_api, cfg_free, 656),
    M(vp_host_api, buffer_key, 664),
    M(vp_host_api, rand, 672),
    M(vp_host_api, site_output_in, 680),
    /* ABI 1.2 */
    M(vp_host_api, attention_ex, 688),
    M(vp_host_api, row_map, 696),
    M(vp_peft_iface, size, 0),
    M(vp_peft_iface, peft_type, 8),
    M(vp_peft_iface, create, 16),
    M(vp_peft_iface, destroy, 24),
    M(vp_peft_iface, attach, 32),
    M(vp_peft_iface, merge, 40),
    M(vp_merge_io, size, 0),
    M(vp_merge_io, path, 8),
    M(vp_merge_io, in_features, 16),
    M(vp_merge_io, out_features, 24),
    M(vp_merge_io, weight, 32),
    M(vp_merge_io, bias, 40),
    M(vp_merge_io, param, 48),
    M(vp_merge_io, host, 56),
    M(vp_merge_io, sign, 64),
    M(vp_backbone_iface, size, 0),
    M(vp_backbone_iface, create, 8),
    M(vp_backbone_iface, destroy, 16),
    M(vp_backbone_iface, input_size, 24),
    M(vp_backbone_iface, build, 32),
    M(vp_features, size, 0),
    M(vp_features, n, 4),
    M(vp_features, map, 8),
    M(vp_features, stride, 56),
    M(vp_head_iface, size, 0),
    M(vp_head_iface, create, 8),
    M(vp_head_iface, destroy, 16),
    M(vp_head_iface, build, 24),
    M(vp_head_out, size, 0),
    M(vp_head_out, loss, 8),
    M(vp_head_out, n_outputs, 16),
    M(vp_head_out, outputs, 24),
    M(vp_head_out, names, 88),
    M(vp_site, size, 0),
    M(vp_site, kind, 4),
    M(vp_site, path, 8),
    M(vp_site, role, 16),
    M(vp_site, module, 24),
    M(vp_site, module_kind, 32),
    M(vp_site, in_features, 40),
    M(vp_site, out_features, 48),
    M(vp_site, weight, 56),
    M(vp_site, bias, 64),
    M(vp_kernel_desc, size, 0),
    M(vp_kernel_desc, name, 8),
    M(vp_kernel_desc, spirv, 16),
    M(vp_kernel_desc, spirv_bytes, 24),
    M(vp_kernel_desc, n_bindings, 32),
    M(vp_kernel_desc, push_size, 36),
    M(vp_kernel_desc, local_size, 40),
    M(vp_custom_grad, size, 0),
    M(vp_custom_grad, n_in, 4),
    M(vp_custom_grad, in, 8),
    M(vp_custom_grad, needs, 16),
    M(vp_custom_grad, out, 24),
    M(vp_custom_grad, dout, 32),
    M(vp_custom_grad, din, 40),
    M(vp_custom_ref_io, size, 0),
    M(vp_custom_ref_io, n_in, 4),
    M(vp_custom_ref_io, in, 8),
    M(vp_custom_ref_io, in_shape, 16),
    M(vp_custom_ref_io, in_ndim, 24),
    M(vp_custom_ref_io, out, 32),
    M(vp_custom_call, size, 0),
    M(vp_custom_call, kernel, 8),
    M(vp_custom_call, n_in, 16),
    M(vp_custom_call, in, 24),
    M(vp_custom_call, out_ndim, 32),
    M(vp_custom_call, out_shape, 40),
    M(vp_custom_call, push, 48),
    M(vp_custom_call, push_size, 56),
    M(vp_custom_call, groups, 60),
    M(vp_custom_call, backward, 72),
    M(vp_custom_call, reference, 80),
    M(vp_custom_call, user, 88),
    M(vp_init, kind, 0),
    M(vp_init, a, 4),
    M(vp_init, b, 8),
    M(vp_init, data, 16),
    M(vp_msdeform_levels, n, 0),
    M(vp_msdeform_levels, shape, 8),
    M(vp_msdeform_levels, start, 104),
    M(vp_host_io, n_in, 0),
    M(vp_host_io, n_out, 4),
    M(vp_host_io, in, 8),
    M(vp_host_io, in_shape, 16),
    M(vp_host_io, in_ndim, 24),
    M(vp_host_io, out, 32),
};

static const struct {
    const char *what;
    size_t got, want;
} sizes[] = {
    {"vp_plugin_desc", sizeof(vp_plugin_desc), 64},
    {"vp_host_api", sizeof(vp_host_api), 640},
    {"vp_peft_iface", sizeof(vp_peft_iface), 48},
    {"vp_merge_io", sizeof(vp_merge_io), 72},
    {"vp_backbone_iface", sizeof(vp_backbone_iface), 40},
    {"vp_features", sizeof(vp_features), 80},
    {"vp_head_iface", sizeof(vp_head_iface), 32},
    {"vp_head_out", sizeof(vp_head_out), 152},
    {"vp_site", sizeof(vp_site), 72},
    {"vp_kernel_desc", sizeof(vp_kernel_desc), 56},
    {"vp_custom_grad", sizeof(vp_custom_grad), 48},
    {"vp_custom_ref_io", sizeof(vp_custom_ref_io), 40},
    {"vp_custom_call", sizeof(vp_custom_call), 96},
    {"vp_init", sizeof(vp_init), 24},
    {"vp_msdeform_levels", sizeof(vp_msdeform_levels), 152},
    {"vp_host_io", sizeof(vp_host_io), 40},
};

START_TEST(test_member_offsets)
{
    for (size_t i = 0; i < sizeof members / sizeof members[0]; i++)
        ck_assert_msg(members[i].got == members[i].want, "%s is at offset %zu, ABI 1.0 has it at %zu",
                      members[i].what, members[i].got, members[i].want);
    for (size_t i = 0; i < sizeof sizes / sizeof sizes[0]; i++)
        ck_assert_msg(sizes[i].got >= sizes[i].want, "%s is %zu bytes, smaller than ABI 1.0's %zu",
                      sizes[i].what, sizes[i].got, sizes[i].want);
    ck_assert_uint_eq(VP_PLUGIN_DESC_SIZE_1_0, 64);
}
END_TEST

START_TEST(test_values)
{
    /* Enumerators and identifiers only ever append. */
    ck_assert_int_eq(VP_ABI_MAJOR, 1);
    ck_assert_int_eq(VP_PLUGIN_BACKBONE, 1);
    ck_assert_int_eq(VP_PLUGIN_HEAD, 2);
    ck_assert_int_eq(VP_PLUGIN_PEFT, 3);
    ck_assert_int_eq(VP_SITE_LINEAR, 1);
    ck_assert_int_eq(VP_SITE_ATTN_OUT, 2);
    ck_assert_int_eq(VP_SITE_FFN_OUT, 3);
    ck_assert_int_eq(VP_SITE_DEFORM, 4);
    ck_assert_int_eq(VP_F32, 0);
    ck_assert_int_eq(VP_F16, 1);
    ck_assert_int_eq(VP_I32, 2);
    ck_assert_int_eq(VP_INIT_ZEROS, 0);
    ck_assert_int_eq(VP_INIT_KAIMING_UNIFORM, 6);
    ck_assert_int_eq(VP_INIT_DATA, 7);
    ck_assert_int_eq(VP_INIT_LINEAR_BIAS, 8);
    ck_assert_int_eq(VP_CFG_ABSENT, 0);
    ck_assert_int_eq(VP_CFG_OBJECT, 6);
    ck_assert_int_eq(VP_LOG_DEBUG, 0);
    ck_assert_int_eq(VP_LOG_ERROR, 3);
    ck_assert_int_eq(VP_ERR_INVALID, -1);
    ck_assert_int_eq(VP_ERR_ABI, -8);
    ck_assert_int_eq(VP_ERR_INTERNAL, -10);
    ck_assert_int_eq(VP_ERR_CONFIG, -11);
    ck_assert_int_eq(VP_MAX_DIMS, 4);
    ck_assert_int_eq(VP_MAX_LEVELS, 6);
    ck_assert_int_eq(VP_HEAD_MAX_OUTPUTS, 8);
    ck_assert_int_eq(VP_MSDEFORM_MAX_LEVELS, 6);
    ck_assert_str_eq(VP_PEFT_IFACE_ID, "vpeft.peft/1");
    ck_assert_str_eq(VP_BACKBONE_IFACE_ID, "vpeft.backbone/1");
    ck_assert_str_eq(VP_HEAD_IFACE_ID, "vpeft.head/1");
    ck_assert_str_eq(VP_PLUGIN_ENTRY_SYMBOL, "vp_plugin_entry");
}
END_TEST

int main(void)
{
    Suite *s = suite_create("abi");
    TCase *tc = tcase_create("abi");
#if UINTPTR_MAX == UINT64_MAX && ULONG_MAX == UINT64_MAX
    tcase_add_test(tc, test_member_offsets);
#else
    vt_skip("test_member_offsets", "-", "the recorded offsets are LP64's");
#endif
    tcase_add_test(tc, test_values);
    suite_add_tcase(s, tc);
    return vt_run(s);
}
