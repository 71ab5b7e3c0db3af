/*
 * Custom kernels checked against their descriptors at registration
 * (core/graph/spirv.c): small shaders that break one rule each of
 * <vpeft/kernel.h>'s contract are refused with one line naming the kernel,
 * before any pipeline (and so without the validation layer); the
 * template's and the in-tree plugins' kernels still register.
 */
#include <stdlib.h>
#include <string.h>

#include "harness.h"
#include "graph/graph.h"
#include "graph/spirv.h"
#include "tests/shaders/ia3_scale.spv.h"
#include "tests/shaders/mask_score.spv.h"
#include "tests/shaders/test_k_fixed.spv.h"
#include "tests/shaders/test_k_gap.spv.h"
#include "tests/shaders/test_k_push.spv.h"
#include "tests/shaders/test_k_set1.spv.h"
#include "tests/shaders/test_k_two.spv.h"
#include "tests/shaders/test_rowdot.spv.h"

#define DESC(nm, spv, nb, push, lx) \
    ((vp_kernel_desc){sizeof(vp_kernel_desc), nm, spv, sizeof spv, nb, push, {lx, 1, 1}})

/* Registering d in a new graph fails with exactly msg, recorded in the
 * graph too. */
static void refused(vp_device *dev, vp_kernel_desc d, const char *msg)
{
    vp_graph *g;
    vp_custom_kernel *k = NULL;
    vt_ok(vp_graph_create(dev, &g));
    vt_expect_err(vp_graph_kernel(g, &d, &k), VP_ERR_INVALID, msg);
    ck_assert_ptr_null(k);
    vt_expect_err(vp_graph_status(g), VP_ERR_INVALID, msg);
    vp_graph_destroy(g);
}

static void accepted(vp_device *dev, vp_kernel_desc d)
{
    vp_graph *g;
    vp_custom_kernel *k = NULL;
    vt_ok(vp_graph_create(dev, &g));
    vt_ok(vp_graph_kernel(g, &d, &k));
    ck_assert_ptr_nonnull(k);
    vp_graph_destroy(g);
}

START_TEST(test_kernel_bindings)
{
    vp_device *dev = vt_device((uint32_t)_i);
    /* The descriptor declares a binding the shader never writes: the
     * output would keep whatever the buffer held. */
    refused(dev, DESC("t.extra", vp_spv_test_k_two, 3, 8, 64),
            "custom kernel t.extra: the descriptor has 3 bindings but the shader has no "
            "storage buffer at binding 2");
    /* The shader binds past the pipeline layout. */
    refused(dev, DESC("t.gap", vp_spv_test_k_gap, 3, 4, 64),
            "custom kernel t.gap: the shader binds a buffer at binding 3, the descriptor has 3 "
            "bindings (0 to 2)");
    refused(dev, DESC("t.fewer", vp_spv_test_k_two, 1, 8, 64),
            "custom kernel t.fewer: the shader binds a buffer at binding 1, the descriptor has 1 "
            "bindings (0 to 0)");
    refused(dev, DESC("t.set", vp_spv_test_k_set1, 2, 4, 64),
            "custom kernel t.set: the shader binds a buffer in descriptor set 1 (binding 1); "
            "vpeft binds set 0 only");
    accepted(dev, DESC("t.two", vp_spv_test_k_two, 2, 8, 64));
}
END_TEST

START_TEST(test_kernel_push)
{
    vp_device *dev = vt_device((uint32_t)_i);
    /* 24 bytes: the vec2's alignment and the array's stride counted. */
    refused(dev, DESC("t.push", vp_spv_test_k_push, 2, 20, 64),
            "custom kernel t.push: the shader's push-constant block is 24 bytes, the "
            "descriptor's push_size is 20");
    refused(dev, DESC("t.push4", vp_spv_test_k_two, 2, 4, 64),
            "custom kernel t.push4: the shader's push-constant block is 8 bytes, the "
            "descriptor's push_size is 4");
    accepted(dev, DESC("t.push", vp_spv_test_k_push, 2, 24, 64));
    /* More push constants than the shader reads is harmless. */
    accepted(dev, DESC("t.push", vp_spv_test_k_push, 2, 32, 64));
}
END_TEST

START_TEST(test_kernel_local_size)
{
    vp_device *dev = vt_device((uint32_t)_i);
    refused(dev, DESC("t.fixed", vp_spv_test_k_fixed, 2, 4, 32),
            "custom kernel t.fixed: the local size's x is fixed at 64 in the shader, the "
            "descriptor says 32 (use local_size_x_id = 0)");
    /* A fixed size that is what the descriptor says dispatches as described. */
    accepted(dev, DESC("t.fixed", vp_spv_test_k_fixed, 2, 4, 64));
    accepted(dev, DESC("t.spec", vp_spv_test_k_two, 2, 8, 128));
}
END_TEST

START_TEST(test_kernel_in_tree)
{
    vp_device *dev = vt_device((uint32_t)_i);
    accepted(dev, DESC("ia3.scale", vp_spv_ia3_scale, 3, 8, 64));
    accepted(dev, DESC("mask2former.mask_score", vp_spv_mask_score, 2, 8, 128));
    accepted(dev, DESC("test.rowdot", vp_spv_test_rowdot, 3, 12, 64));
}
END_TEST

/* Malformed modules are refused without reading past their end. */
START_TEST(test_kernel_malformed)
{
    vp_kernel_desc d = DESC("t.bad", vp_spv_test_k_two, 2, 8, 64);
    size_t words = sizeof vp_spv_test_k_two / 4;
    uint32_t *code = malloc(sizeof vp_spv_test_k_two);
    ck_assert_ptr_nonnull(code);
    memcpy(code, vp_spv_test_k_two, sizeof vp_spv_test_k_two);
    vt_ok(vp_spirv_check(code, words, &d, "t.bad"));
    /* Every truncation is an error or a shorter valid module, never a crash
     * (the sanitizer build checks the reads). */
    for (size_t n = 5; n < words; n++)
        (void)vp_spirv_check(code, n, &d, "t.bad");
    code[3] = 0;
    vt_expect_err(vp_spirv_check(code, words, &d, "t.bad"), VP_ERR_INVALID,
                  "custom kernel t.bad: malformed SPIR-V header (id bound 0)");
    code[3] = vp_spv_test_k_two[3];
    code[5] = 0; /* an instruction of word count 0 */
    vt_expect_err(vp_spirv_check(code, words, &d, "t.bad"), VP_ERR_INVALID,
                  "custom kernel t.bad: malformed SPIR-V at word 5");
    free(code);
}
END_TEST

int main(void)
{
    Suite *s = suite_create("kernel");
    TCase *tc = vt_tcase("kernel");
    tcase_add_test(tc, test_kernel_malformed);
    vt_add_per_device(tc, test_kernel_bindings, NULL);
    vt_add_per_device(tc, test_kernel_push, NULL);
    vt_add_per_device(tc, test_kernel_local_size, NULL);
    vt_add_per_device(tc, test_kernel_in_tree, NULL);
    suite_add_tcase(s, tc);
    return vt_run(s);
}
