/*
 * What the maskdino head shares with the mask2former head, compiled into
 * this plugin from the one source both use (plugins/mask2former/): the
 * host table's variable, memory owned by a head instance, the pixel
 * decoder (MaskDINOEncoder is Mask2Former's MSDeformAttnPixelDecoder under
 * the same detectron2 names), the instance mask score op, the loss's point
 * sampling (point_sample, importance sampling) and the assignment solver.
 */
#include "../mask2former/owned.c"
#include "../mask2former/pixel.c"
#include "../mask2former/score.c"
#include "../mask2former/loss.c"
#include "../mask2former/match/hungarian.c"

const vp_host_api *m2f_H;
