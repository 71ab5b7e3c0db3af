/*
 * `vpeft make-shapes --out DIR --domain A|B`: a synthetic COCO instance
 * dataset of overlapping shapes (core/data/shapes.c), for trying training
 * and domain adaptation without downloads. docs/data.md describes the two
 * domains.
 */
#include <errno.h>
#include <getopt.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "cli/cli.h"
#include "data/data.h"
#include "util/error.h"

static void usage(FILE *f)
{
    fprintf(f, "usage: vpeft make-shapes --out DIR --domain A|B [--n N] [--size S] [--seed K]\n\n"
               "Write a synthetic COCO instance-segmentation dataset: DIR/images/000001.png ...\n"
               "and DIR/annotations.json. Each image holds 1 to 6 shapes that may overlap,\n"
               "each in its own colour with at least 80%% of it left visible; an instance's\n"
               "mask is what stays visible of it. The same options give the same bytes.\n\n"
               "  domain A: circle (id 1), square (2), triangle (3); saturated colours, flat or\n"
               "            textured, on a light tinted background\n"
               "  domain B: triangle (3), ellipse (10), star (20), ring (35), cross (50);\n"
               "            muted, textured shapes (stripes, checks, noise) on textured\n"
               "            backgrounds\n\n"
               "options:\n"
               "  --out DIR      output directory (created)\n"
               "  --domain A|B   which dataset\n"
               "  --n N          images (default 200)\n"
               "  --size S       image side in pixels, 32 to 4096 (default 128)\n"
               "  --seed K       random seed (default 0)\n"
               "  -h, --help     this help\n");
}

static int bad_usage(const char *what, const char *arg)
{
    fprintf(stderr, "vpeft make-shapes: %s%s%s%s (see vpeft make-shapes --help)\n", what,
            arg ? " '" : "", arg ? arg : "", arg ? "'" : "");
    return 2;
}

/* A whole decimal number in [lo, hi]. */
static bool number(const char *s, unsigned long long lo, unsigned long long hi,
                   unsigned long long *v)
{
    char *end;
    errno = 0;
    if (!*s || *s == '-' || *s == '+')
        return false;
    *v = strtoull(s, &end, 10);
    return !errno && !*end && *v >= lo && *v <= hi;
}

int vp_cli_make_shapes(int argc, char **argv)
{
    static const struct option opts[] = {{"out", required_argument, NULL, 'o'},
                                         {"domain", required_argument, NULL, 'd'},
                                         {"n", required_argument, NULL, 'n'},
                                         {"size", required_argument, NULL, 's'},
                                         {"seed", required_argument, NULL, 'k'},
                                         {"help", no_argument, NULL, 'h'},
                                         {NULL, 0, NULL, 0}};
    vp_shapes_opts o = {.n = 200, .size = 128};
    unsigned long long v;
    int c;
    opterr = 0;
    optind = 1;
    while ((c = getopt_long(argc, argv, ":h", opts, NULL)) != -1) {
        switch (c) {
        case 'h':
            usage(stdout);
            return 0;
        case 'o':
            o.out = optarg;
            break;
        case 'd':
            if (strcmp(optarg, "A") && strcmp(optarg, "B"))
                return bad_usage("--domain must be A or B, not", optarg);
            o.domain = optarg[0];
            break;
        case 'n':
            if (!number(optarg, 1, 1000000, &v))
                return bad_usage("--n must be a whole number from 1 to 1000000, not", optarg);
            o.n = (int)v;
            break;
        case 's':
            if (!number(optarg, 32, 4096, &v))
                return bad_usage("--size must be a whole number from 32 to 4096, not", optarg);
            o.size = (int)v;
            break;
        case 'k':
            if (!number(optarg, 0, UINT64_MAX, &v))
                return bad_usage("--seed must be a whole number >= 0, not", optarg);
            o.seed = v;
            break;
        default:
            return bad_usage(c == ':' ? "missing value for" : "unknown option", argv[optind - 1]);
        }
    }
    if (optind < argc)
        return bad_usage("unexpected argument", argv[optind]);
    if (!o.out || !o.domain)
        return bad_usage(!o.out ? "--out is required" : "--domain is required", NULL);
    if (vp_shapes_write(&o)) {
        fprintf(stderr, "vpeft: %s\n", vp_error_last());
        return 1;
    }
    /* Read back what was written: the counts printed are the file's. */
    char path[4096];
    snprintf(path, sizeof path, "%s/annotations.json", o.out);
    vp_dataset *ds;
    if (vp_dataset_load(path, NULL, NULL, &ds)) {
        fprintf(stderr, "vpeft: %s\n", vp_error_last());
        return 1;
    }
    printf("make-shapes: wrote %u images, %u instances, %u classes (domain %c) to %s\n",
           vp_dataset_size(ds), vp_dataset_instances(ds), vp_dataset_classes(ds), o.domain, path);
    vp_dataset_destroy(ds);
    return 0;
}
