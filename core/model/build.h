/*
 * The build context plugins see as vp_build: the graph under construction
 * plus what the host keeps about it: every parameter with how it gets its
 * first values, the sites built so far, the declared modules, the PEFT
 * instances to call at each site, and the weights files to read from.
 *
 *     vp_build *b;  vp_build_create(dev, &opts, &b);
 *     vp_build_add_peft(b, "lora", iface, self);       // config order
 *     vp_build_enter(b, "vit", false);                 // calls that follow are the backbone's
 *     backbone->build(self, b, image, &features);
 *     ...
 *     vp_build_check_pefts(b);                         // each attached somewhere
 *     vp_graph_backward(g, loss); vp_graph_compile(g);
 *     vp_build_init_params(b);                         // initializers, weights files
 *
 * One thread. The graph belongs to the build until vp_build_take_graph.
 */
#ifndef VP_MODEL_BUILD_H
#define VP_MODEL_BUILD_H

#include <vpeft/host.h>

#include "graph/graph.h"

typedef struct vp_build_opts {
    uint64_t seed;              /* parameter initialization */
    /* Base parameters (a backbone's or head's) matching one of these globs
     * are trainable and the rest frozen; with none, base parameters are
     * frozen when freeze_base, else trainable as their plugin says. */
    const char *const *trainable;
    uint32_t n_trainable;
    bool freeze_base;
} vp_build_opts;

/* What the model keeps about a site, for listings and tests. */
typedef struct vp_build_site {
    char *path;
    vp_site_kind kind;
    int64_t in_features, out_features;
    uint32_t attached;          /* bit i: PEFT instance i attached here */
} vp_build_site;

typedef struct vp_build_param {
    vp_gt *t;
    uint32_t owner;             /* 0: the base model; i + 1: PEFT instance i */
    vp_init init;               /* data: a copy owned by the build */
    const struct vp_weights *w; /* or values from a weights file */
    char *key;
} vp_build_param;

vp_status vp_build_create(vp_device *dev, const vp_build_opts *opts, vp_build **out);
void vp_build_destroy(vp_build *b);
vp_graph *vp_build_graph(vp_build *b);
/* The graph is the caller's from now on (vp_graph_destroy); the build keeps
 * using it until it is destroyed itself. */
vp_graph *vp_build_take_graph(vp_build *b);

/* Add a PEFT instance, called at every site in the order added; name is
 * the plugin's, for messages. self stays the caller's. */
vp_status vp_build_add_peft(vp_build *b, const char *name, const vp_peft_iface *iface,
                            void *self);
/* Whose calls follow: a plugin name for messages, and whether it is a PEFT
 * method (its parameters are trained as it says) or the base model. */
void vp_build_enter(vp_build *b, const char *plugin, bool peft);
/* VP_ERR_CONFIG for the first PEFT instance that attached nowhere. */
vp_status vp_build_check_pefts(vp_build *b);
/* After vp_graph_compile: every parameter's first values, uploaded. */
vp_status vp_build_init_params(vp_build *b);
/* VP_ERR_FORMAT naming file and tensor when x (n floats read from a
 * weights file) holds a NaN or an infinity: every loader into a model
 * refuses them. */
vp_status vp_build_check_finite(const char *file, const char *tensor, const float *x, size_t n);

uint32_t vp_build_site_count(const vp_build *b);
const vp_build_site *vp_build_site_at(const vp_build *b, uint32_t i);
/* Named outputs (host table: output), in the order declared. */
uint32_t vp_build_output_count(const vp_build *b);
vp_gt *vp_build_output_at(const vp_build *b, uint32_t i, const char **name);
vp_gt *vp_build_output_find(const vp_build *b, const char *name);
uint32_t vp_build_param_count(const vp_build *b);
const vp_build_param *vp_build_param_at(const vp_build *b, uint32_t i);

/* Fill an initializer into data (nelem floats) for a tensor of this shape,
 * from the stream seeded by seed and name: the same on every run and
 * independent of the order parameters are made in. */
vp_status vp_init_fill(const vp_init *init, const char *name, uint64_t seed, int ndim,
                       const int64_t *shape, float *data);

/* The host-table members (see <vpeft/host.h> for their contracts). */
vp_gt *vp_build_param_new(vp_build *b, const char *name, int ndim, const int64_t *shape,
                          const vp_init *init, bool trainable);
vp_gt *vp_build_site_linear(vp_build *b, const char *path, vp_gt *x, int64_t out_features,
                            bool bias, const vp_init *w_init, const vp_init *b_init);
vp_gt *vp_build_site_output(vp_build *b, const char *path, vp_site_kind kind, vp_gt *y);
vp_gt *vp_build_site_output_in(vp_build *b, const char *path, vp_site_kind kind, vp_gt *x,
                               vp_gt *y);
vp_status vp_build_site_module(vp_build *b, const char *path, vp_site_kind kind);
vp_gt *vp_build_output(vp_build *b, const char *name, vp_gt *t);
vp_status vp_build_weights_open(vp_build *b, const char *path, vp_weights **out);
uint32_t vp_weights_count(const vp_weights *w);
const char *vp_weights_key(const vp_weights *w, uint32_t i);
vp_status vp_weights_shape(const vp_weights *w, const char *key, int *ndim,
                           int64_t shape[VP_MAX_DIMS]);
vp_status vp_build_param_load(vp_build *b, vp_gt *param, const vp_weights *w, const char *key);
vp_status vp_build_buffer_key(vp_build *b, const char *key);
/* Whether a plugin declared key a buffer of its checkpoints (buffer_key). */
bool vp_build_is_buffer_key(const vp_build *b, const char *key);

#endif
