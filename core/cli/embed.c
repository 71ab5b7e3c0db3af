/*
 * `vpeft embed --config C --image I --out F.safetensors`: run the
 * config's backbone (with its PEFT methods, without the head) on one image
 * and save every output it names (`backbone.last_hidden_state`, the
 * feature maps), so that weight loading can be checked against another
 * implementation. The output file is written atomically: it is either
 * complete or absent.
 */
#include <getopt.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <vpeft/version.h>

#include "cli/cli.h"
#include "config/config.h"
#include "io/image.h"
#include "io/safetensors.h"
#include "model/model.h"
#include "util/error.h"

static void usage(FILE *f)
{
    fprintf(f, "usage: vpeft embed --config FILE --image IMAGE --out OUT.safetensors\n"
               "                   [--mean R,G,B] [--std R,G,B]\n\n"
               "Run the backbone of FILE's model (and its PEFT methods; not the head) on one\n"
               "image and write each output the backbone names (for vit:\n"
               "backbone.last_hidden_state and backbone.features.<level>; a backbone that\n"
               "names none: its feature maps as backbone.features.<level>) to OUT, as float32\n"
               "tensors with their shapes; its metadata records the config and the image.\n\n"
               "IMAGE is a PNG or JPEG file, resized (bilinear) to the backbone's input size\n"
               "and normalized per channel as (x - mean) / std with x in [0, 1]; or a\n"
               ".safetensors file whose tensor pixel_values, (1, 3, H, W) or (3, H, W) at the\n"
               "input size, is used as it is (already normalized).\n\n"
               "options:\n"
               "  --config FILE  the run config (model.backbone, optional peft)\n"
               "  --image IMAGE  the image\n"
               "  --out OUT      the output file, replaced atomically\n"
               "  --mean R,G,B   per-channel mean (default 0.5,0.5,0.5, as HF's\n"
               "                 ViTImageProcessor; ImageNet's is 0.485,0.456,0.406)\n"
               "  --std R,G,B    per-channel standard deviation (default 0.5,0.5,0.5;\n"
               "                 ImageNet's is 0.229,0.224,0.225)\n"
               "  -h, --help     this help\n");
}

static bool parse3(const char *s, float v[3])
{
    char *end;
    for (int i = 0; i < 3; i++) {
        v[i] = strtof(s, &end);
        if (end == s || (i < 2 ? *end != ',' : *end != '\0'))
            return false;
        s = end + 1;
    }
    return true;
}

static bool ends_with(const char *s, const char *suf)
{
    size_t a = strlen(s), b = strlen(suf);
    return a >= b && !strcmp(s + a - b, suf);
}

/* pixel_values (C, H, W) for the model's image input, from a file. */
static vp_status load_pixels(const char *path, const int64_t *shape, const float mean[3],
                             const float std[3], float **out)
{
    int64_t C = shape[1], H = shape[2], W = shape[3];
    size_t n = (size_t)(C * H * W);
    *out = NULL;
    if (ends_with(path, ".safetensors")) {
        vp_st *st;
        vp_status s = vp_st_open(path, &st);
        if (s)
            return s;
        const vp_st_tensor *t;
        s = vp_st_lookup(st, "pixel_values", &t);
        bool ok = !s && ((t->ndim == 4 && t->shape[0] == 1 && t->shape[1] == C &&
                          t->shape[2] == H && t->shape[3] == W) ||
                         (t->ndim == 3 && t->shape[0] == C && t->shape[1] == H &&
                          t->shape[2] == W));
        if (!s && !ok)
            s = vp_error_set(VP_ERR_SHAPE, "%s: pixel_values must be (1, %lld, %lld, %lld), the "
                             "backbone's input", path, (long long)C, (long long)H, (long long)W);
        if (!s && !(*out = malloc(n * sizeof **out)))
            s = vp_error_set(VP_ERR_NOMEM, "out of host memory");
        if (!s)
            s = vp_st_read_f32(st, "pixel_values", *out, n);
        vp_st_close(st);
        if (s) {
            free(*out);
            *out = NULL;
        }
        return s;
    }
    if (C != 3)
        return vp_error_set(VP_ERR_INVALID, "%s: the backbone takes %lld channels; PNG and JPEG "
                            "images give 3 (use a .safetensors pixel_values)", path, (long long)C);
    vp_image img;
    vp_status s = vp_image_load(path, &img);
    if (!s)
        s = vp_image_resize(&img, (int)H, (int)W);
    if (!s) {
        vp_image_normalize(&img, mean, std);
        *out = img.data; /* (3, H, W), ours now */
        img.data = NULL;
    }
    vp_image_free(&img);
    return s;
}

int vp_cli_embed(int argc, char **argv)
{
    static const struct option opts[] = {{"config", required_argument, NULL, 'c'},
                                         {"image", required_argument, NULL, 'i'},
                                         {"out", required_argument, NULL, 'o'},
                                         {"mean", required_argument, NULL, 'm'},
                                         {"std", required_argument, NULL, 's'},
                                         {"help", no_argument, NULL, 'h'},
                                         {NULL, 0, NULL, 0}};
    const char *cfg_path = NULL, *image = NULL, *out_path = NULL;
    float mean[3] = {0.5f, 0.5f, 0.5f}, std[3] = {0.5f, 0.5f, 0.5f};
    int c;
    opterr = 0;
    optind = 1;
    while ((c = getopt_long(argc, argv, ":h", opts, NULL)) != -1) {
        switch (c) {
        case 'h':
            usage(stdout);
            return 0;
        case 'c': cfg_path = optarg; break;
        case 'i': image = optarg; break;
        case 'o': out_path = optarg; break;
        case 'm':
        case 's':
            if (!parse3(optarg, c == 'm' ? mean : std) ||
                (c == 's' && !(std[0] > 0 && std[1] > 0 && std[2] > 0))) {
                fprintf(stderr, "vpeft embed: --%s %s: expected three numbers R,G,B%s\n",
                        c == 'm' ? "mean" : "std", optarg, c == 's' ? ", each > 0" : "");
                return 2;
            }
            break;
        default:
            fprintf(stderr, "vpeft embed: %s '%s' (see vpeft embed --help)\n",
                    c == ':' ? "missing value for" : "unknown option", argv[optind - 1]);
            return 2;
        }
    }
    if (optind < argc || !cfg_path || !image || !out_path) {
        fprintf(stderr, "vpeft embed: %s (see vpeft embed --help)\n",
                optind < argc ? "unexpected argument" : "--config, --image and --out are required");
        return 2;
    }

    vp_config *cfg = NULL;
    vp_instance *inst = NULL;
    vp_device *dev = NULL;
    vp_model *m = NULL;
    float *pixels = NULL, **vals = NULL;
    uint32_t n = 0;
    vp_st_entry *e = NULL;
    int rc = 1;
    vp_status st = vp_cfg_load(cfg_path, &cfg);
    if (st)
        goto fail;
    if (vp_cli_instance(&inst))
        goto out;
    if ((st = vp_cli_device(inst, &dev)) ||
        (st = vp_model_create(dev, cfg, &(vp_model_opts){.batch = 1, .backbone_only = true}, &m)))
        goto fail;
    vp_graph *g = vp_model_graph(m);
    vp_gt *img = vp_model_image(m);
    if ((st = load_pixels(image, vp_gt_shape(img), mean, std, &pixels)) ||
        (st = vp_graph_write(g, img, pixels, (size_t)vp_gt_nelem(img) * sizeof *pixels)) ||
        (st = vp_graph_run(g)))
        goto fail;

    /* What the backbone named, or else its feature maps. */
    const vp_build *b = vp_model_build(m);
    vp_gt *maps[VP_MAX_LEVELS];
    uint32_t n_maps = vp_model_features(m, maps);
    n = vp_build_output_count(b) ? vp_build_output_count(b) : n_maps;
    e = calloc(n, sizeof *e);
    vals = calloc(n, sizeof *vals);
    if (!e || !vals) {
        st = vp_error_set(VP_ERR_NOMEM, "out of host memory");
        goto fail;
    }
    static const char *const level[] = {"backbone.features.0", "backbone.features.1",
                                        "backbone.features.2", "backbone.features.3",
                                        "backbone.features.4", "backbone.features.5"};
    for (uint32_t i = 0; i < n; i++) {
        const char *name = i < sizeof level / sizeof level[0] ? level[i] : NULL;
        vp_gt *t = vp_build_output_count(b) ? vp_build_output_at(b, i, &name) : maps[i];
        size_t bytes = (size_t)vp_gt_nelem(t) * sizeof(float);
        if (!(vals[i] = malloc(bytes))) {
            st = vp_error_set(VP_ERR_NOMEM, "out of host memory");
            goto fail;
        }
        if ((st = vp_graph_read(g, t, vals[i], bytes)))
            goto fail;
        e[i] = (vp_st_entry){name, VP_ST_F32, vp_gt_ndim(t), vp_gt_shape(t), vals[i]};
    }
    vp_st_kv meta[3] = {{"config", cfg_path}, {"image", image}, {"vpeft", VP_VERSION_STRING}};
    if ((st = vp_st_write(out_path, e, n, meta, 3)))
        goto fail;
    printf("embed: %s -> %s:", image, out_path);
    for (uint32_t i = 0; i < n; i++) {
        printf("%s %s (", i ? "," : "", e[i].name);
        for (int d = 0; d < e[i].ndim; d++)
            printf("%s%lld", d ? ", " : "", (long long)e[i].shape[d]);
        printf(")");
    }
    printf("\n");
    rc = 0;
    goto out;
fail:
    fprintf(stderr, "vpeft: %s\n", vp_error_last());
    rc = vp_cli_exit_code(st);
out:
    for (uint32_t i = 0; vals && i < n; i++)
        free(vals[i]);
    free(vals);
    free(e);
    free(pixels);
    vp_model_destroy(m);
    vp_device_destroy(dev);
    vp_instance_destroy(inst);
    vp_cfg_free(cfg);
    return rc;
}
