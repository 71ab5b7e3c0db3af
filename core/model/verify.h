/*
 * Checking a compiled graph against the CPU reference: the device's
 * forward pass against the double-precision reference executor, and the
 * device's gradients of every trainable parameter against central finite
 * differences of the reference. For `vpeft plugin-test` and the tests.
 */
#ifndef VP_MODEL_VERIFY_H
#define VP_MODEL_VERIFY_H

#include "graph/graph.h"

typedef struct vp_verify {
    double loss_dev, loss_ref;
    double out_err;            /* max |device - reference| / max |reference| over out */
    double grad_err;           /* worst |device - fd| / max |fd| (over all checked) */
    char grad_worst[160];      /* the parameter where grad_err was found */
    uint64_t grad_checked;     /* elements compared */
    uint32_t params_checked;   /* trainable parameters with a gradient */
} vp_verify;

/* Inputs are written from data (float32, or int32 for int inputs), then one
 * forward and backward run from zeroed gradients; parameters keep their
 * current device values. At most max_per_param evenly spaced elements of
 * each trainable parameter are perturbed (0: all). Leaves the gradients
 * zeroed. A graph holding an op without a CPU reference is
 * VP_ERR_UNSUPPORTED. */
vp_status vp_verify_graph(vp_graph *g, vp_gt *loss, vp_gt *out, uint32_t n_in,
                          vp_gt *const *inputs, const void *const *data, uint32_t max_per_param,
                          vp_verify *r);

#endif
