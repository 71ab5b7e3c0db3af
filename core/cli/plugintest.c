/*
 * `vpeft plugin-test --config FILE`: the check a PEFT plugin's author runs
 * on every GPU they have. The config's PEFT methods are attached to the
 * probe model (core/model/probe.c, every kind of site), and then:
 *
 *   forward     the device against the double-precision reference
 *   gradients   every trainable parameter against central differences
 *   identity    whether the adapted model starts as the base model (a report)
 *   training    a few AdamW steps on the fixed batch lower the loss
 *
 * One line per check, then "plugin-test: ok" (exit 0) or
 * "plugin-test: FAILED: ..." (exit 1).
 */
#include <getopt.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "cli/cli.h"
#include "config/config.h"
#include "model/model.h"
#include "model/probe.h"
#include "model/verify.h"
#include "util/error.h"

/* Tolerances for float32 arithmetic against the double reference. */
#define TOL_LOSS 1e-4
#define TOL_OUT 1e-4
#define TOL_GRAD 2e-3

typedef struct pt_run {
    vp_build *b;
    vp_probe p;
    float *tokens, *target;
} pt_run;

static void usage(FILE *f)
{
    fprintf(f, "usage: vpeft plugin-test --config FILE [--steps N] [--lr X] [--seed N]\n\n"
               "Attach the PEFT methods of FILE's \"peft\" list to a small built-in\n"
               "transformer (sites probe.blocks.<i>.attn.qkv, .attn.proj, .mlp.fc1,\n"
               ".mlp.fc2, the outputs probe.blocks.<i>.attn and .mlp, a deformable module\n"
               "probe.deform with .value_proj, .sampling_offsets, .attention_weights,\n"
               ".output_proj, and probe.head) and check them on the device: forward\n"
               "against the CPU reference, gradients against finite differences, whether\n"
               "the model starts as the base model, and a short training run.\n\n"
               "FILE: {\"peft\": [{\"plugin\": \"ia3\", ...}], \"steps\": 10, \"lr\": 0.01,\n"
               "\"seed\": 0}; the options override the file. Plugins are found on\n"
               "VPEFT_PLUGIN_PATH first (see `vpeft plugins`); VPEFT_DEVICE picks the\n"
               "device; with VPEFT_VALIDATION=1 an error from the validation layer fails\n"
               "the test. Exit status: 0 all checks passed, 1 a check failed or an error,\n"
               "2 usage.\n\n"
               "options:\n"
               "  --config FILE  the test config (required)\n"
               "  --steps N      training steps (default 10)\n"
               "  --lr X         AdamW learning rate (default 0.01)\n"
               "  --seed N       parameter and data seed (default 0)\n"
               "  -h, --help     this help\n");
}

static vp_status pt_build(vp_device *dev, const vp_peft_set *pefts, uint64_t seed,
                          const vp_probe_cfg *pc, bool train, pt_run *r)
{
    memset(r, 0, sizeof *r);
    vp_build_opts bo = {.seed = seed, .freeze_base = pefts != NULL};
    vp_status st = vp_build_create(dev, &bo, &r->b);
    if (!st)
        vp_graph_set_training(vp_build_graph(r->b), train);
    if (!st && pefts)
        st = vp_peft_set_attach(pefts, r->b);
    if (st)
        return st;
    vp_build_enter(r->b, "probe", false);
    if ((st = vp_probe_build(r->b, pc, &r->p)))
        return st;
    if (pefts && (st = vp_build_check_pefts(r->b)))
        return st;
    vp_graph *g = vp_build_graph(r->b);
    if (train) {
        if ((st = vp_graph_backward(g, r->p.loss)))
            return st;
        vp_adamw_cfg cfg = vp_adamw_default_cfg();
        cfg.weight_decay = 0.0f;
        if ((st = vp_graph_set_optimizer(g, &cfg)))
            return st;
    }
    if ((st = vp_graph_compile(g)) || (st = vp_build_init_params(r->b)))
        return st;
    size_t nt = (size_t)vp_gt_nelem(r->p.tokens), ny = (size_t)vp_gt_nelem(r->p.target);
    r->tokens = malloc(nt * sizeof *r->tokens);
    r->target = malloc(ny * sizeof *r->target);
    if (!r->tokens || !r->target)
        return vp_error_set(VP_ERR_NOMEM, "out of host memory");
    vp_probe_data(pc, seed, r->tokens, r->target);
    if ((st = vp_graph_write(g, r->p.tokens, r->tokens, nt * 4)) ||
        (st = vp_graph_write(g, r->p.target, r->target, ny * 4)))
        return st;
    return VP_OK;
}

static void pt_release(pt_run *r)
{
    vp_build_destroy(r->b);
    free(r->tokens);
    free(r->target);
}

static float *pt_output(pt_run *r, vp_status *st)
{
    vp_graph *g = vp_build_graph(r->b);
    size_t n = (size_t)vp_gt_nelem(r->p.output);
    float *y = malloc(n * sizeof *y);
    *st = y ? vp_graph_run(g) : vp_error_set(VP_ERR_NOMEM, "out of host memory");
    if (!*st)
        *st = vp_graph_read(g, r->p.output, y, n * sizeof *y);
    if (!*st)
        *st = vp_graph_zero_grads(g);
    if (*st) {
        free(y);
        return NULL;
    }
    return y;
}

/* Sites and parameters per method, as a report line each. */
static void report_methods(const vp_peft_set *pefts, const vp_build *b)
{
    uint64_t total = 0;
    uint64_t *own = calloc(pefts->n + 1, sizeof *own);
    if (!own)
        return;
    for (uint32_t i = 0; i < vp_build_param_count(b); i++) {
        const vp_build_param *p = vp_build_param_at(b, i);
        total += (uint64_t)vp_gt_nelem(p->t);
        own[p->owner] += (uint64_t)vp_gt_nelem(p->t);
    }
    for (uint32_t k = 0; k < pefts->n; k++) {
        uint32_t n = 0;
        char first[3][96] = {"", "", ""};
        for (uint32_t i = 0; i < vp_build_site_count(b); i++) {
            const vp_build_site *s = vp_build_site_at(b, i);
            if (s->attached & (1u << k)) {
                if (n < 3)
                    snprintf(first[n], sizeof first[n], "%s", s->path);
                n++;
            }
        }
        const vp_plugin_desc *d = vp_plugin_descriptor(pefts->items[k].plugin);
        printf("plugin-test: %s %s (ABI %u.%u, %s): %u site%s (%s%s%s%s%s%s), %llu parameters "
               "(%.2f%% of %llu)\n", d->name, d->version, d->abi_major, d->abi_minor,
               vp_plugin_path(pefts->items[k].plugin), n, n == 1 ? "" : "s", first[0],
               n > 1 ? ", " : "", first[1], n > 2 ? ", " : "", first[2], n > 3 ? ", ..." : "",
               (unsigned long long)own[k + 1], 100.0 * (double)own[k + 1] / (double)total,
               (unsigned long long)total);
    }
    free(own);
}

static int fail(const char *what)
{
    printf("plugin-test: FAILED: %s\n", what);
    return 1;
}

static int run_checks(vp_device *dev, const vp_peft_set *pefts, int64_t steps, double lr,
                      uint64_t seed)
{
    const vp_probe_cfg pc = VP_PROBE_DEFAULT;
    pt_run r, base;
    char msg[512];
    vp_status st = pt_build(dev, pefts, seed, &pc, true, &r);
    if (st) {
        fprintf(stderr, "vpeft: plugin-test: %s\n", vp_error_last());
        pt_release(&r);
        return 1;
    }
    report_methods(pefts, r.b);
    vp_graph *g = vp_build_graph(r.b);

    /* Forward and gradients against the reference. */
    vp_verify v;
    st = vp_verify_graph(g, r.p.loss, r.p.output, 2, (vp_gt *[]){r.p.tokens, r.p.target},
                         (const void *[]){r.tokens, r.target}, 64, &v);
    if (st) {
        fprintf(stderr, "vpeft: plugin-test: %s\n", vp_error_last());
        pt_release(&r);
        return 1;
    }
    double loss_err = fabs(v.loss_dev - v.loss_ref) / fmax(fabs(v.loss_ref), 1e-30);
    printf("plugin-test: forward: loss %.6g (reference %.6g), output error %.2g\n", v.loss_dev,
           v.loss_ref, v.out_err);
    printf("plugin-test: gradients: %llu elements of %u trainable parameters against finite "
           "differences, worst error %.2g%s%s\n", (unsigned long long)v.grad_checked,
           v.params_checked, v.grad_err, v.grad_worst[0] ? " at " : "", v.grad_worst);
    int rc = 0;
    if (!(loss_err < TOL_LOSS) || !(v.out_err < TOL_OUT)) {
        snprintf(msg, sizeof msg, "the device's forward pass differs from the reference (loss "
                 "%.2g, output %.2g; limits %g, %g)", loss_err, v.out_err, TOL_LOSS, TOL_OUT);
        rc = fail(msg);
    } else if (!v.params_checked) {
        rc = fail("the methods added no trainable parameter that the loss depends on");
    } else if (!(v.grad_err < TOL_GRAD)) {
        snprintf(msg, sizeof msg, "gradient of %s differs from finite differences by %.2g of "
                 "the largest gradient (limit %g)", v.grad_worst, v.grad_err, TOL_GRAD);
        rc = fail(msg);
    }

    /* Identity at initialization: the same probe without the methods. */
    if (!rc) {
        float *y1 = pt_output(&r, &st), *y0 = NULL;
        st = st ? st : pt_build(dev, NULL, seed, &pc, false, &base);
        if (!st)
            y0 = pt_output(&base, &st);
        if (st) {
            fprintf(stderr, "vpeft: plugin-test: %s\n", vp_error_last());
            rc = 1;
        } else {
            double dmax = 0, ymax = 1e-30;
            for (int64_t i = 0; i < vp_gt_nelem(r.p.output); i++) {
                dmax = fmax(dmax, fabs((double)y1[i] - y0[i]));
                ymax = fmax(ymax, fabs((double)y0[i]));
            }
            if (dmax == 0)
                printf("plugin-test: identity at init: yes (outputs equal the base model's)\n");
            else
                printf("plugin-test: identity at init: no (outputs differ from the base "
                       "model's by up to %.2g of their largest)\n", dmax / ymax);
        }
        pt_release(&base);
        free(y0);
        free(y1);
    }

    /* Training on the fixed batch. */
    if (!rc && steps > 0) {
        float first = 0, last = 0;
        for (int64_t s = 1; !st && s <= steps; s++) {
            st = vp_graph_run(g);
            if (!st)
                st = vp_graph_read(g, r.p.loss, s == 1 ? &first : &last, sizeof first);
            if (!st)
                st = vp_graph_step(g, (float)lr, (int)s);
        }
        if (steps == 1)
            last = first;
        if (st) {
            fprintf(stderr, "vpeft: plugin-test: %s\n", vp_error_last());
            rc = 1;
        } else {
            printf("plugin-test: training: loss %.6g -> %.6g in %lld steps (AdamW, lr %g)\n",
                   first, last, (long long)steps, lr);
            if (!(last < first)) {
                snprintf(msg, sizeof msg, "training did not lower the loss (%.6g -> %.6g)",
                         first, last);
                rc = fail(msg);
            }
            if (!rc)
                printf("plugin-test: ok\n");
        }
    }
    pt_release(&r);
    return rc;
}

static bool parse_num(const char *s, double *out)
{
    char *end;
    *out = strtod(s, &end);
    return *s && !*end && isfinite(*out);
}

int vp_cli_plugin_test(int argc, char **argv)
{
    static const struct option opts[] = {{"config", required_argument, NULL, 'c'},
                                         {"steps", required_argument, NULL, 's'},
                                         {"lr", required_argument, NULL, 'l'},
                                         {"seed", required_argument, NULL, 'S'},
                                         {"help", no_argument, NULL, 'h'},
                                         {NULL, 0, NULL, 0}};
    const char *path = NULL;
    double steps_o = -1, lr_o = -1, seed_o = -1;
    int c;
    opterr = 0;
    optind = 1;
    while ((c = getopt_long(argc, argv, ":h", opts, NULL)) != -1) {
        double *dst = c == 's' ? &steps_o : c == 'l' ? &lr_o : c == 'S' ? &seed_o : NULL;
        if (c == 'h') {
            usage(stdout);
            return 0;
        } else if (c == 'c') {
            path = optarg;
        } else if (dst) {
            if (!parse_num(optarg, dst) || *dst < 0 ||
                (c != 'l' && *dst != floor(*dst))) {
                fprintf(stderr, "vpeft plugin-test: --%s %s: expected a %s\n",
                        opts[c == 's' ? 1 : c == 'l' ? 2 : 3].name, optarg,
                        c == 'l' ? "non-negative number" : "non-negative integer");
                return 2;
            }
        } else {
            fprintf(stderr, "vpeft plugin-test: %s '%s' (see vpeft plugin-test --help)\n",
                    c == ':' ? "missing value for" : "unknown option", argv[optind - 1]);
            return 2;
        }
    }
    if (optind < argc) {
        fprintf(stderr, "vpeft plugin-test: unexpected argument '%s'\n", argv[optind]);
        return 2;
    }
    if (!path) {
        fprintf(stderr, "vpeft plugin-test: --config FILE is required (see --help)\n");
        return 2;
    }

    vp_config *cfg = NULL;
    vp_peft_set pefts = {0};
    int64_t steps = 10, seed = 0;
    double lr = 1e-2;
    static const char *const known[] = {"peft", "steps", "lr", "seed"};
    vp_status st = vp_cfg_load(path, &cfg);
    if (!st)
        st = vp_cfg_check_keys(cfg, known, 4);
    if (!st)
        st = vp_cfg_int(cfg, "steps", 10, &steps);
    if (!st)
        st = vp_cfg_float(cfg, "lr", 1e-2, &lr);
    if (!st)
        st = vp_cfg_int(cfg, "seed", 0, &seed);
    if (!st && (steps < 0 || !(lr >= 0) || seed < 0))
        st = vp_cfg_fail(cfg, steps < 0 ? "steps" : seed < 0 ? "seed" : "lr",
                         "must not be negative");
    if (!st && vp_cfg_type_of(cfg, "peft") != VP_CFG_ARRAY)
        st = vp_cfg_fail(cfg, "peft", "expected a list of PEFT methods to test");
    if (!st && vp_cfg_len(vp_cfg_get(cfg, "peft")) < 1)
        st = vp_cfg_fail(cfg, "peft", "is empty: name at least one method");
    if (!st)
        st = vp_peft_set_load(vp_cfg_get(cfg, "peft"), &pefts);
    if (st) {
        fprintf(stderr, "vpeft: %s\n", vp_error_last());
        vp_peft_set_release(&pefts);
        vp_cfg_free(cfg);
        return vp_cli_exit_code(st);
    }
    if (steps_o >= 0)
        steps = (int64_t)steps_o;
    if (lr_o >= 0)
        lr = lr_o;
    if (seed_o >= 0)
        seed = (int64_t)seed_o;

    vp_instance *inst = NULL;
    vp_device *dev = NULL;
    int rc = 1;
    if (!vp_cli_instance(&inst)) {
        st = vp_cli_device(inst, &dev);
        if (st) {
            fprintf(stderr, "vpeft: %s\n", vp_error_last());
        } else {
            printf("plugin-test: device: %s\n", vp_device_get_info(dev)->name);
            rc = run_checks(dev, &pefts, steps, lr, (uint64_t)seed);
            vp_device_destroy(dev);
            dev = NULL;
            uint64_t verr = vp_instance_validation_errors(inst);
            if (verr) {
                char msg[96];
                snprintf(msg, sizeof msg, "the validation layer reported %llu error%s",
                         (unsigned long long)verr, verr == 1 ? "" : "s");
                rc = fail(msg);
            }
        }
    }
    vp_peft_set_release(&pefts);
    vp_device_destroy(dev);
    vp_instance_destroy(inst);
    vp_cfg_free(cfg);
    return rc;
}
