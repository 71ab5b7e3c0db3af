/*
 * `vpeft forward --config C --input IN --out OUT [--labels L] [--grads]`:
 * run a config's whole model (backbone, PEFT methods, head) once on a
 * batch of pixel values and save every output it names, so that its
 * numbers can be compared with another implementation's, tensor by tensor.
 * With labels (Hugging Face's mask_labels / class_labels layout) the model
 * is built for training: the loss and the head's weighted loss terms join
 * the outputs, and with --grads every trainable parameter's gradient.
 * The output file is written atomically: it is either complete or absent.
 */
#include <getopt.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <vpeft/version.h>

#include "cli/cli.h"
#include "config/config.h"
#include "io/safetensors.h"
#include "model/model.h"
#include "util/error.h"

static void usage(FILE *f)
{
    fprintf(f, "usage: vpeft forward --config C --input IN.safetensors --out OUT.safetensors\n"
               "                     [--labels L.safetensors [--grads]] [--weights F]\n\n"
               "Run C's model (backbone, PEFT methods, head) once on the tensor pixel_values\n"
               "of IN, (B, C, H, W) float32, already normalized, at the backbone's input size\n"
               "(nothing is resized), and write every output the model names to OUT, as the\n"
               "plugins lay them out: the head's (mask2former: pred_logits, pred_masks and,\n"
               "without labels, instances.scores, instances.labels, instances.masks) and\n"
               "those the plugins register (vit: backbone.last_hidden_state,\n"
               "backbone.features.<level>). int32 outputs are I32, the rest F32.\n\n"
               "With --labels, L holds per image b of the batch mask_labels.<b> (n_b, H', W')\n"
               "and class_labels.<b> (n_b), as Hugging Face's Mask2FormerImageProcessor gives\n"
               "them; the model is built for training, the masks area-averaged down to the\n"
               "head's target resolution (H'/Ht and W'/Wt integers), and OUT also holds loss\n"
               "(1) and the loss terms the head registers. With --grads, it also holds\n"
               "grad.<name> for every trainable parameter (train.trainable, peft) that gets\n"
               "a gradient. docs/forward.md has the details.\n\n"
               "options:\n"
               "  --config C       the run config (model, optional peft and train.trainable)\n"
               "  --input IN       a safetensors file with pixel_values\n"
               "  --out OUT        the output file, replaced atomically\n"
               "  --labels L       a safetensors file with the targets of each image\n"
               "  --grads          write the parameters' gradients too (needs --labels)\n"
               "  --weights F      load every parameter F holds (a training run's\n"
               "                   train.out/model.safetensors, vpeft merge's output)\n"
               "  -h, --help       this help\n\n"
               "exit status: 0 done, 1 runtime failure (a file that cannot be read or written,\n"
               "memory, the device), 2 bad usage, config or input (a malformed file)\n");
}

/* ---- the files given ------------------------------------------------------------- */

static void shape_str(char *s, size_t n, int ndim, const int64_t *shape)
{
    size_t k = (size_t)snprintf(s, n, "(");
    for (int d = 0; d < ndim && k < n; d++)
        k += (size_t)snprintf(s + k, n - k, "%s%lld", d ? ", " : "", (long long)shape[d]);
    if (k < n)
        snprintf(s + k, n - k, ")");
}

static bool is_float(vp_st_dtype t)
{
    return t == VP_ST_F16 || t == VP_ST_BF16 || t == VP_ST_F32 || t == VP_ST_F64;
}

/* Tensor name, any dtype the reader converts, as n floats. */
static vp_status read_floats(const vp_st *st, const char *name, float *out, size_t n)
{
    if (!n || is_float(vp_st_find(st, name)->dtype))
        return n ? vp_st_read_f32(st, name, out, n) : VP_OK;
    int64_t *v = malloc(n * sizeof *v);
    if (!v)
        return vp_error_set(VP_ERR_NOMEM, "out of host memory");
    vp_status s = vp_st_read_i64(st, name, v, n);
    for (size_t i = 0; !s && i < n; i++)
        out[i] = (float)v[i];
    free(v);
    return s;
}

/* Class indices: integers of any width, or floats that are integers. */
static vp_status read_classes(const vp_st *st, const char *name, int32_t *out, size_t n)
{
    float *f = malloc((n ? n : 1) * sizeof *f);
    int64_t *v = malloc((n ? n : 1) * sizeof *v);
    vp_status s = f && v ? VP_OK : vp_error_set(VP_ERR_NOMEM, "out of host memory");
    bool fl = is_float(vp_st_find(st, name)->dtype);
    if (!s && n)
        s = fl ? vp_st_read_f32(st, name, f, n) : vp_st_read_i64(st, name, v, n);
    for (size_t i = 0; !s && i < n; i++) {
        double x = fl ? (double)f[i] : (double)v[i];
        if (!(x >= 0 && x <= 2147483647.0 && x == floor(x)))
            s = vp_error_set(VP_ERR_INVALID, "%s: %s[%zu] is %g, not a class index",
                             vp_st_path(st), name, i, x);
        else
            out[i] = (int32_t)x;
    }
    free(f);
    free(v);
    return s;
}

/* The label file's shapes, before any device work: both tensors of every
 * image, one class per mask, none for images the batch lacks. */
static vp_status check_labels(const vp_st *lab, int64_t B, const char *in_path)
{
    char key[64];
    for (int64_t b = 0; b < B; b++) {
        const vp_st_tensor *c, *m;
        snprintf(key, sizeof key, "class_labels.%lld", (long long)b);
        vp_status s = vp_st_lookup(lab, key, &c);
        snprintf(key, sizeof key, "mask_labels.%lld", (long long)b);
        if (s || (s = vp_st_lookup(lab, key, &m)))
            return s;
        char cs[96], ms[96];
        shape_str(cs, sizeof cs, c->ndim, c->shape);
        shape_str(ms, sizeof ms, m->ndim, m->shape);
        if (c->ndim != 1 || m->ndim != 3 || m->shape[0] != c->shape[0])
            return vp_error_set(VP_ERR_SHAPE, "%s: mask_labels.%lld is %s and class_labels.%lld "
                                "is %s; expected (n, H, W) and (n), one class per mask",
                                vp_st_path(lab), (long long)b, ms, (long long)b, cs);
    }
    for (size_t i = 0; i < vp_st_count(lab); i++) {
        const char *name = vp_st_get(lab, i)->name, *dot = strchr(name, '.');
        if (!dot || (strncmp(name, "class_labels.", 13) && strncmp(name, "mask_labels.", 12)))
            continue;
        char *end;
        long long b = strtoll(dot + 1, &end, 10);
        if (end != dot + 1 && !*end && b >= B)
            return vp_error_set(VP_ERR_SHAPE, "%s: %s: %s's pixel_values holds %lld image%s",
                                vp_st_path(lab), name, in_path, (long long)B, B == 1 ? "" : "s");
    }
    return VP_OK;
}

/* The head's targets: labels (B, T) with -1 in empty slots, masks (B, T,
 * ht * wt), from the label file; masks larger than the targets are
 * area-averaged down by integer factors, as the data loader does. */
static vp_status fill_targets(const vp_st *lab, int64_t B, int64_t T, int64_t ht, int64_t wt,
                              int32_t *labels, float *masks)
{
    char key[64];
    vp_status s = VP_OK;
    float *src = NULL;
    for (size_t i = 0; i < (size_t)(B * T); i++)
        labels[i] = -1;
    memset(masks, 0, (size_t)(B * T * ht * wt) * sizeof *masks);
    for (int64_t b = 0; !s && b < B; b++) {
        snprintf(key, sizeof key, "mask_labels.%lld", (long long)b);
        const vp_st_tensor *m = vp_st_find(lab, key);
        int64_t n = m->shape[0], h = m->shape[1], w = m->shape[2];
        if (n > T) {
            s = vp_error_set(VP_ERR_SHAPE, "%s: image %lld has %lld instances, the head takes "
                             "at most %lld (target.labels is (%lld, %lld))", vp_st_path(lab),
                             (long long)b, (long long)n, (long long)T, (long long)B,
                             (long long)T);
            break;
        }
        if (h < ht || w < wt || h % ht || w % wt) {
            s = vp_error_set(VP_ERR_SHAPE, "%s: %s is (%lld, %lld, %lld): the head's targets are "
                             "%lldx%lld, and %lldx%lld does not reduce to that by integer "
                             "factors", vp_st_path(lab), key, (long long)n, (long long)h,
                             (long long)w, (long long)ht, (long long)wt, (long long)h,
                             (long long)w);
            break;
        }
        snprintf(key, sizeof key, "class_labels.%lld", (long long)b);
        if ((s = read_classes(lab, key, labels + b * T, (size_t)n)))
            break;
        snprintf(key, sizeof key, "mask_labels.%lld", (long long)b);
        float *nb = realloc(src, (size_t)(n * h * w + 1) * sizeof *src);
        if (!nb) {
            s = vp_error_set(VP_ERR_NOMEM, "out of host memory");
            break;
        }
        src = nb;
        if ((s = read_floats(lab, key, src, (size_t)(n * h * w))))
            break;
        /* Area average of each fy x fx block into its cell. */
        int64_t fy = h / ht, fx = w / wt;
        float inv = 1.0f / (float)(fy * fx);
        for (int64_t t = 0; t < n; t++) {
            float *cell = masks + (b * T + t) * ht * wt;
            const float *p = src + t * h * w;
            for (int64_t y = 0; y < h; y++)
                for (int64_t x = 0; x < w; x++)
                    cell[(y / fy) * wt + x / fx] += p[y * w + x];
            for (int64_t q = 0; q < ht * wt; q++)
                cell[q] *= inv;
        }
    }
    free(src);
    return s;
}

/* The target map's height and width when target.masks is flat (B, T, n):
 * n = ht * wt cells of the h x w image at an integer stride (the finest
 * feature map, as the trainer takes it). */
static bool target_size(int64_t h, int64_t w, int64_t n, int64_t *ht, int64_t *wt)
{
    for (int64_t s = 1; s <= h && s <= w; s++)
        if (h % s == 0 && w % s == 0 && (h / s) * (w / s) == n) {
            *ht = h / s;
            *wt = w / s;
            return true;
        }
    return false;
}

/* ---- the outputs ------------------------------------------------------------------ */

typedef struct outs {
    vp_st_entry *e;
    void **vals;
    char **names;               /* the ones made here (grad.<p>) */
    size_t n, cap;
} outs;

static bool has_name(const outs *o, const char *name)
{
    for (size_t i = 0; i < o->n; i++)
        if (!strcmp(o->e[i].name, name))
            return true;
    return false;
}

/* Read t into a new entry under name (copied when own). A name already
 * written (a head output the head also registered) is written once. */
static vp_status add_out(outs *o, vp_graph *g, const char *name, vp_gt *t, bool own)
{
    if (has_name(o, name))
        return VP_OK;
    size_t bytes = (size_t)vp_gt_nelem(t) * 4; /* F32 or I32 */
    void *v = malloc(bytes ? bytes : 1);
    char *nm = own ? malloc(strlen(name) + 1) : NULL;
    if (!v || (own && !nm)) {
        free(v);
        free(nm);
        return vp_error_set(VP_ERR_NOMEM, "out of host memory");
    }
    vp_status s = vp_graph_read(g, t, v, bytes);
    if (s) {
        free(v);
        free(nm);
        return s;
    }
    if (nm)
        strcpy(nm, name);
    o->names[o->n] = nm;
    o->vals[o->n] = v;
    o->e[o->n++] = (vp_st_entry){nm ? nm : name, vp_gt_dtype(t) == VP_I32 ? VP_ST_I32 : VP_ST_F32,
                                 vp_gt_ndim(t), vp_gt_shape(t), v};
    return VP_OK;
}

static void outs_free(outs *o)
{
    for (size_t i = 0; i < o->n; i++) {
        free(o->vals[i]);
        free(o->names[i]);
    }
    free(o->e);
    free(o->vals);
    free(o->names);
}

/* Every named output of m, its loss, and with grads the gradients. */
static vp_status collect(const vp_model *m, bool grads, outs *o)
{
    vp_graph *g = vp_model_graph(m);
    const vp_build *b = vp_model_build(m);
    const vp_head_out *h = vp_model_head_out(m);
    /* + 1: the loss (and never calloc(0)) */
    o->cap = h->n_outputs + vp_build_output_count(b) + 1 + (grads ? vp_build_param_count(b) : 0);
    o->e = calloc(o->cap, sizeof *o->e);
    o->vals = calloc(o->cap, sizeof *o->vals);
    o->names = calloc(o->cap, sizeof *o->names);
    if (!o->e || !o->vals || !o->names)
        return vp_error_set(VP_ERR_NOMEM, "out of host memory");
    vp_status s = VP_OK;
    for (uint32_t i = 0; !s && i < h->n_outputs; i++)
        s = add_out(o, g, h->names[i], h->outputs[i], false);
    for (uint32_t i = 0; !s && i < vp_build_output_count(b); i++) {
        const char *name;
        vp_gt *t = vp_build_output_at(b, i, &name);
        s = add_out(o, g, name, t, false);
    }
    if (!s && vp_model_loss(m))
        s = add_out(o, g, "loss", vp_model_loss(m), false);
    for (uint32_t i = 0; !s && grads && i < vp_build_param_count(b); i++) {
        vp_gt *p = vp_build_param_at(b, i)->t, *gr = vp_g_grad(p);
        if (!vp_gt_trainable(p) || !gr)
            continue;
        char name[512];
        snprintf(name, sizeof name, "grad.%s", vp_gt_name(p));
        s = add_out(o, g, name, gr, true);
    }
    return s;
}

/* ---- the command ------------------------------------------------------------------ */

int vp_cli_forward(int argc, char **argv)
{
    static const struct option opts[] = {{"config", required_argument, NULL, 'c'},
                                         {"input", required_argument, NULL, 'i'},
                                         {"out", required_argument, NULL, 'o'},
                                         {"labels", required_argument, NULL, 'l'},
                                         {"grads", no_argument, NULL, 'g'},
                                         {"weights", required_argument, NULL, 'w'},
                                         {"help", no_argument, NULL, 'h'},
                                         {NULL, 0, NULL, 0}};
    const char *cfg_path = NULL, *in_path = NULL, *out_path = NULL, *lab_path = NULL,
               *weights = NULL;
    bool grads = false;
    int c;
    opterr = 0;
    optind = 1;
    while ((c = getopt_long(argc, argv, ":h", opts, NULL)) != -1) {
        switch (c) {
        case 'h':
            usage(stdout);
            return 0;
        case 'c': cfg_path = optarg; break;
        case 'i': in_path = optarg; break;
        case 'o': out_path = optarg; break;
        case 'l': lab_path = optarg; break;
        case 'g': grads = true; break;
        case 'w': weights = optarg; break;
        default:
            fprintf(stderr, "vpeft forward: %s '%s' (see vpeft forward --help)\n",
                    c == ':' ? "missing value for" : "unknown option", argv[optind - 1]);
            return 2;
        }
    }
    if (optind < argc || !cfg_path || !in_path || !out_path || (grads && !lab_path)) {
        fprintf(stderr, "vpeft forward: %s (see vpeft forward --help)\n",
                optind < argc ? "unexpected argument"
                : !cfg_path || !in_path || !out_path ? "--config, --input and --out are required"
                                                     : "--grads needs --labels");
        return 2;
    }

    vp_config *cfg = NULL;
    if (vp_cli_config(cfg_path, NULL, 0, &cfg))
        return 2;
    vp_st *in = NULL, *lab = NULL;
    vp_instance *inst = NULL;
    vp_device *dev = NULL;
    vp_model *m = NULL;
    float *pixels = NULL, *masks = NULL;
    int32_t *labels = NULL;
    outs o = {0};
    int rc = 2; /* the files given are input errors until the device starts */
    const vp_st_tensor *px;
    vp_status st = vp_st_open(in_path, &in);
    if (!st)
        st = vp_st_lookup(in, "pixel_values", &px);
    if (!st && (px->ndim != 4 || px->shape[0] < 1)) {
        char s[96];
        shape_str(s, sizeof s, px->ndim, px->shape);
        st = vp_error_set(VP_ERR_SHAPE, "%s: pixel_values has shape %s; expected (B, C, H, W)",
                          in_path, s);
    }
    int64_t B = st ? 0 : px->shape[0];
    if (!st && lab_path && !(st = vp_st_open(lab_path, &lab)))
        st = check_labels(lab, B, in_path);
    if (st)
        goto fail;

    rc = 1;
    if (vp_cli_instance(&inst))
        goto out;
    if ((st = vp_cli_device(inst, &dev)))
        goto fail;
    st = vp_model_create(dev, cfg, &(vp_model_opts){.batch = B, .train = lab != NULL,
                                                    .deterministic = true}, &m);
    if (st) {
        rc = vp_cli_exit_code(st);
        goto fail;
    }
    rc = 2;
    vp_graph *g = vp_model_graph(m);
    vp_gt *img = vp_model_image(m);
    const int64_t *is = vp_gt_shape(img);
    if (memcmp(is, px->shape, 4 * sizeof *is)) {
        char a[96], b[96];
        shape_str(a, sizeof a, 4, px->shape);
        shape_str(b, sizeof b, 4, is);
        st = vp_error_set(VP_ERR_SHAPE, "%s: pixel_values has shape %s, the model takes %s",
                          in_path, a, b);
    }
    uint32_t n_loaded = 0;
    if (!st && weights && !(st = vp_model_load_params(m, weights, &n_loaded)) && !n_loaded)
        st = vp_error_set(VP_ERR_FORMAT, "%s holds none of the model's parameters", weights);
    if (!st && !(pixels = malloc((size_t)px->nelem * sizeof *pixels)))
        st = vp_error_set(VP_ERR_NOMEM, "out of host memory");
    if (!st)
        st = vp_st_read_f32(in, "pixel_values", pixels, (size_t)px->nelem);
    if (st)
        goto fail;

    if (lab) {
        vp_gt *tl = vp_graph_find(g, "target.labels"), *tm = vp_graph_find(g, "target.masks");
        int64_t T = 0, ht = 0, wt = 0;
        const int64_t *ms = tm ? vp_gt_shape(tm) : NULL;
        rc = 1;
        /* masks (B, T, Ht, Wt) at the head's own resolution, or (B, T, Ht * Wt) */
        if (!tl || !tm || vp_gt_ndim(tl) != 2 || vp_gt_dtype(tl) != VP_I32 ||
            ms[1] != (T = vp_gt_shape(tl)[1]) ||
            (vp_gt_ndim(tm) == 4 ? (ht = ms[2]) < 1 || (wt = ms[3]) < 1
                                 : vp_gt_ndim(tm) != 3 || !target_size(is[2], is[3], ms[2], &ht,
                                                                      &wt))) {
            st = vp_error_set(VP_ERR_INVALID, "the head (%s) has no target.labels (B, T) int32 "
                              "and target.masks (B, T, Hm, Wm) or (B, T, Hm * Wm) inputs: "
                              "--labels fills instance-segmentation targets",
                              vp_model_plugin_name(m, VP_PLUGIN_HEAD));
            goto fail;
        }
        labels = malloc((size_t)(B * T) * sizeof *labels);
        masks = malloc((size_t)(B * T * ht * wt) * sizeof *masks);
        if (!labels || !masks) {
            st = vp_error_set(VP_ERR_NOMEM, "out of host memory");
            goto fail;
        }
        rc = 2;
        if ((st = fill_targets(lab, B, T, ht, wt, labels, masks)))
            goto fail;
        rc = 1;
        /* target.instances stays 0: the head counts this batch's instances */
        if ((st = vp_graph_write(g, tl, labels, (size_t)(B * T) * sizeof *labels)) ||
            (st = vp_graph_write(g, tm, masks, (size_t)(B * T * ht * wt) * sizeof *masks)) ||
            (st = vp_graph_zero_grads(g)))
            goto fail;
    }
    rc = 1;
    if ((st = vp_graph_write(g, img, pixels, (size_t)px->nelem * sizeof *pixels)) ||
        (st = vp_graph_run(g)) || (st = collect(m, grads, &o)))
        goto fail;
    vp_st_kv meta[5] = {{"config", cfg_path}, {"input", in_path}, {"vpeft", VP_VERSION_STRING}};
    size_t n_meta = 3;
    if (lab_path)
        meta[n_meta++] = (vp_st_kv){"labels", lab_path};
    if (weights)
        meta[n_meta++] = (vp_st_kv){"weights", weights};
    if ((st = vp_st_write(out_path, o.e, o.n, meta, n_meta)))
        goto fail;

    printf("forward: %s -> %s:", in_path, out_path);
    size_t n_grads = 0;
    for (size_t i = 0; i < o.n; i++) {
        if (!strncmp(o.e[i].name, "grad.", 5) && o.names[i]) {
            n_grads++;
            continue;
        }
        char s[96];
        shape_str(s, sizeof s, o.e[i].ndim, o.e[i].shape);
        printf("%s %s %s", i ? "," : "", o.e[i].name, s);
    }
    if (lab) {
        float loss;
        if (!vp_graph_read(g, vp_model_loss(m), &loss, sizeof loss))
            printf("; loss %.7g", (double)loss);
    }
    if (grads)
        printf("; %zu gradient%s", n_grads, n_grads == 1 ? "" : "s");
    printf("\n");
    rc = 0;
    goto out;
fail:
    fprintf(stderr, "vpeft: %s\n", vp_error_last());
out:
    outs_free(&o);
    free(pixels);
    free(labels);
    free(masks);
    vp_model_destroy(m);
    vp_device_destroy(dev);
    vp_instance_destroy(inst);
    vp_st_close(lab);
    vp_st_close(in);
    vp_cfg_free(cfg);
    return rc;
}
