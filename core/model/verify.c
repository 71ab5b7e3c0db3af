/*
 * The device against the reference executor (verify.h). The reference
 * takes every parameter's current device values, so a model is checked as
 * it is, after initialization or after training. The finite differences
 * are central, in double, with a step of 1e-5: the reference is exact to
 * ~1e-15, so their error is the O(h^2) truncation alone; what is compared
 * is float32 device arithmetic against them.
 */
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "graph/internal.h"
#include "model/verify.h"
#include "util/error.h"

static vp_status read_f64(vp_graph *g, vp_gt *t, double *dst)
{
    size_t n = (size_t)vp_gt_nelem(t);
    float *f = malloc(n * sizeof *f);
    if (!f)
        return vp_error_set(VP_ERR_NOMEM, "out of host memory");
    vp_status st = vp_graph_read(g, t, f, n * sizeof *f);
    for (size_t i = 0; !st && i < n; i++)
        dst[i] = f[i];
    free(f);
    return st;
}

static vp_status ref_loss(vp_graph_ref *ref, vp_gt *loss, double *out)
{
    vp_status st = vp_graph_ref_forward(ref);
    if (!st)
        *out = vp_graph_ref_data(ref, loss)[0];
    return st;
}

vp_status vp_verify_graph(vp_graph *g, vp_gt *loss, vp_gt *out, uint32_t n_in,
                          vp_gt *const *inputs, const void *const *data, uint32_t max_per_param,
                          vp_verify *r)
{
    memset(r, 0, sizeof *r);
    vp_graph_ref *ref = NULL;
    double *outd = NULL, *grad = NULL;
    vp_status st = vp_graph_ref_create(g, &ref);
    for (uint32_t i = 0; !st && i < n_in; i++) {
        size_t n = (size_t)vp_gt_nelem(inputs[i]);
        st = vp_graph_write(g, inputs[i], data[i], n * 4);
        double *d = vp_graph_ref_data(ref, inputs[i]);
        for (size_t k = 0; !st && k < n; k++)
            d[k] = vp_gt_dtype(inputs[i]) == VP_I32 ? (double)((const int32_t *)data[i])[k]
                                                     : (double)((const float *)data[i])[k];
    }
    for (uint32_t i = 0; !st && i < g->n_tensors; i++)
        if (g->tensors[i]->kind == VP_GT_PARAM)
            st = read_f64(g, g->tensors[i], vp_graph_ref_data(ref, g->tensors[i]));
    if (!st)
        st = vp_graph_zero_grads(g);
    if (!st)
        st = vp_graph_run(g);
    float lf = 0;
    if (!st)
        st = vp_graph_read(g, loss, &lf, sizeof lf);
    if (!st)
        st = ref_loss(ref, loss, &r->loss_ref);
    r->loss_dev = lf;
    if (!st && out) {
        size_t n = (size_t)vp_gt_nelem(out);
        outd = malloc(n * sizeof *outd);
        st = outd ? read_f64(g, out, outd) : vp_error_set(VP_ERR_NOMEM, "out of host memory");
        const double *want = vp_graph_ref_data(ref, out);
        double emax = 0, wmax = 1e-30;
        for (size_t k = 0; !st && k < n; k++) {
            double e = fabs(outd[k] - want[k]);
            emax = isfinite(e) ? (e > emax ? e : emax) : INFINITY;
            wmax = fabs(want[k]) > wmax ? fabs(want[k]) : wmax;
        }
        r->out_err = emax / wmax;
    }

    /* Gradients: the largest finite difference over every checked element
     * is the scale, so a parameter whose gradient is ~0 is not judged by
     * its rounding noise alone. */
    double fd_max = 1e-30, err_max = 0;
    for (uint32_t i = 0; !st && i < g->n_tensors; i++) {
        vp_gt *p = g->tensors[i];
        if (p->kind != VP_GT_PARAM || !p->trainable || !p->grad)
            continue;
        size_t n = (size_t)vp_gt_nelem(p);
        free(grad);
        grad = malloc(n * sizeof *grad);
        if (!grad) {
            st = vp_error_set(VP_ERR_NOMEM, "out of host memory");
            break;
        }
        st = read_f64(g, p->grad, grad);
        size_t step = max_per_param && n > max_per_param ? n / max_per_param : 1;
        double *x = vp_graph_ref_data(ref, p);
        for (size_t k = 0; !st && k < n; k += step) {
            const double h = 1e-5;
            double keep = x[k], lp = 0, lm = 0;
            x[k] = keep + h;
            st = ref_loss(ref, loss, &lp);
            x[k] = keep - h;
            if (!st)
                st = ref_loss(ref, loss, &lm);
            x[k] = keep;
            double fd = (lp - lm) / (2 * h), e = fabs(grad[k] - fd);
            fd_max = fabs(fd) > fd_max ? fabs(fd) : fd_max;
            if (!isfinite(e) || e > err_max) {
                err_max = isfinite(e) ? e : INFINITY;
                snprintf(r->grad_worst, sizeof r->grad_worst, "%s", p->name);
            }
            r->grad_checked++;
        }
        r->params_checked++;
    }
    r->grad_err = err_max / fd_max;
    if (!st)
        st = vp_graph_zero_grads(g);
    free(grad);
    free(outd);
    vp_graph_ref_destroy(ref);
    return st;
}
