/*
 * `vpeft eval --gt ANN.json --results RES.json`: COCO mask AP of a results
 * file against COCO instance ground truth, computed as pycocotools'
 * COCOeval(iouType="segm") computes it (core/eval/cocoeval.c), printed in
 * its summarize() layout.
 */
#include <getopt.h>
#include <stdio.h>

#include "cli/cli.h"
#include "eval/cocoeval.h"
#include "util/error.h"

static void usage(FILE *f)
{
    fprintf(f, "usage: vpeft eval --gt ANN.json --results RES.json\n\n"
               "Score a COCO results file (a list of {image_id, category_id, segmentation:\n"
               "{size, counts}, score}) against COCO instance annotations with mask IoU,\n"
               "as pycocotools' COCOeval(iouType=\"segm\") does: IoU thresholds .50:.05:.95,\n"
               "101-point interpolated precision, maxDets 1/10/100, small/medium/large\n"
               "areas, crowd regions. Prints the 12 numbers of COCOeval.summarize() in its\n"
               "layout (-1: no ground truth for that row). docs/eval.md has the details.\n\n"
               "options:\n"
               "  --gt ANN.json       the ground truth (images, categories, annotations)\n"
               "  --results RES.json  the detections\n"
               "  -h, --help          this help\n");
}

int vp_cli_eval(int argc, char **argv)
{
    static const struct option opts[] = {{"gt", required_argument, NULL, 'g'},
                                         {"results", required_argument, NULL, 'r'},
                                         {"help", no_argument, NULL, 'h'},
                                         {NULL, 0, NULL, 0}};
    const char *gt = NULL, *res = NULL;
    int c;
    opterr = 0;
    optind = 1;
    while ((c = getopt_long(argc, argv, ":h", opts, NULL)) != -1) {
        if (c == 'h') {
            usage(stdout);
            return 0;
        } else if (c == 'g') {
            gt = optarg;
        } else if (c == 'r') {
            res = optarg;
        } else {
            fprintf(stderr, "vpeft eval: %s '%s' (see vpeft eval --help)\n",
                    c == ':' ? "missing value for" : "unknown option", argv[optind - 1]);
            return 2;
        }
    }
    if (optind < argc || !gt || !res) {
        fprintf(stderr, "vpeft eval: %s (see vpeft eval --help)\n",
                optind < argc ? "unexpected argument" : "--gt and --results are required");
        return 2;
    }
    vp_coco_stats s;
    if (vp_coco_eval_files(gt, res, &s)) {
        fprintf(stderr, "vpeft: %s\n", vp_error_last());
        return 1;
    }
    static const struct {
        const char *what, *iou, *area, *dets;
    } rows[12] = {
        {"Average Precision  (AP)", "0.50:0.95", "   all", "100"},
        {"Average Precision  (AP)", "0.50     ", "   all", "100"},
        {"Average Precision  (AP)", "0.75     ", "   all", "100"},
        {"Average Precision  (AP)", "0.50:0.95", " small", "100"},
        {"Average Precision  (AP)", "0.50:0.95", "medium", "100"},
        {"Average Precision  (AP)", "0.50:0.95", " large", "100"},
        {"Average Recall     (AR)", "0.50:0.95", "   all", "  1"},
        {"Average Recall     (AR)", "0.50:0.95", "   all", " 10"},
        {"Average Recall     (AR)", "0.50:0.95", "   all", "100"},
        {"Average Recall     (AR)", "0.50:0.95", " small", "100"},
        {"Average Recall     (AR)", "0.50:0.95", "medium", "100"},
        {"Average Recall     (AR)", "0.50:0.95", " large", "100"},
    };
    const double v[12] = {s.ap, s.ap50, s.ap75, s.aps, s.apm, s.apl,
                          s.ar1, s.ar10, s.ar100, s.ars, s.arm, s.arl};
    for (int i = 0; i < 12; i++)
        printf(" %s @[ IoU=%s | area=%s | maxDets=%s ] = %.3f\n", rows[i].what, rows[i].iou,
               rows[i].area, rows[i].dets, v[i]);
    return 0;
}
