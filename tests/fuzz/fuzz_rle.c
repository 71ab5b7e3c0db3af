/*
 * Fuzz target: COCO run-length encodings (core/eval/rle.c) and
 * segmentations (core/eval/cocoeval.c, poly.c). Byte 0 chooses the mode
 * and, with byte 1, the mask size (1..64 x 1..64); the rest (up to a NUL)
 * is either
 *   - a compressed RLE string (mode bit 0x80 clear): vp_rle_from_string,
 *     and for an accepted one, the mask, the area and a round trip through
 *     vp_rle_to_string, which must give the same runs back; or
 *   - a JSON "segmentation" (mode bit set): vp_coco_segm_to_rle with
 *     polygons allowed (polygon lists, {"size", "counts"} as a string or
 *     a list).
 */
#include <cjson/cJSON.h>

#include "fuzz.h"

#include "eval/cocoeval.h"
#include "eval/rle.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

static void check_rle(const vp_rle *r)
{
    uint8_t *mask = malloc((size_t)(r->h * r->w));
    if (!mask)
        abort();
    vp_rle_to_mask(r, mask);
    uint64_t area = 0;
    for (int64_t i = 0; i < r->h * r->w; i++)
        area += mask[i];
    if (area != vp_rle_area(r))
        abort(); /* the mask and the area disagree */
    free(mask);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    vp_fuzz_scratch(); /* quiet logging */
    if (size < 2)
        return 0;
    int json = data[0] & 0x80;
    int64_t h = (data[0] & 0x3f) + 1, w = (data[1] & 0x3f) + 1;
    data += 2;
    size -= 2;
    const uint8_t *nul = memchr(data, 0, size);
    size_t len = nul ? (size_t)(nul - data) : size;
    char *s = malloc(len + 1);
    if (!s)
        abort();
    memcpy(s, data, len);
    s[len] = '\0';
    vp_rle r = {0};
    if (!json) {
        if (vp_rle_from_string(s, h, w, &r) == VP_OK) {
            check_rle(&r);
            char *back = vp_rle_to_string(&r);
            vp_rle r2 = {0};
            if (!back || vp_rle_from_string(back, h, w, &r2) != VP_OK || r2.n != r.n ||
                memcmp(r2.counts, r.counts, r.n * sizeof *r.counts) != 0)
                abort(); /* the written string must read back as the same runs */
            vp_rle_free(&r2);
            free(back);
        }
    } else {
        cJSON *seg = cJSON_ParseWithLength(s, len);
        if (seg && vp_coco_segm_to_rle(seg, h, w, 1, "fuzz", &r) == VP_OK)
            check_rle(&r);
        cJSON_Delete(seg);
    }
    vp_rle_free(&r);
    free(s);
    return 0;
}
