/*
 * The mask2former head's assignment solver (plugins/mask2former/match/
 * hungarian.c) at the sizes its loss meets: queries x targets per image,
 * real-valued costs shaped like Mask2Former's (class + mask + dice terms,
 * all of one order), and the transposed shapes. Microseconds per call, the
 * median of several timed batches. Numbers, never pass/fail; needs no
 * device.
 */
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <time.h>

#include "../plugins/mask2former/match/hungarian.h"

static double now(void)
{
    struct timespec t;
    clock_gettime(CLOCK_MONOTONIC, &t);
    return (double)t.tv_sec + (double)t.tv_nsec * 1e-9;
}

static uint64_t rng = 0x243f6a8885a308d3ull;
static double uniform(void) /* [0, 1) */
{
    rng ^= rng << 13;
    rng ^= rng >> 7;
    rng ^= rng << 17;
    return (double)(rng >> 11) * 0x1p-53;
}

static int cmp_double(const void *a, const void *b)
{
    double x = *(const double *)a, y = *(const double *)b;
    return (x > y) - (x < y);
}

static void bench(int rows, int cols)
{
    enum { BATCHES = 9, MATS = 16 };
    size_t n = (size_t)rows * (size_t)cols;
    double *cost = malloc(sizeof(double) * n * MATS);
    int *col = malloc(sizeof(int) * (size_t)rows);
    if (!cost || !col) {
        fprintf(stderr, "bench_hungarian: out of memory\n");
        exit(1);
    }
    /* -p(class) in [-1, 0) weighted 2, mask BCE ~ [0.3, 1.3) and dice in
     * [0, 1) weighted 5: Mask2Former's default matcher weights. */
    for (size_t k = 0; k < n * MATS; k++)
        cost[k] = -2.0 * uniform() + 5.0 * (0.3 + uniform()) + 5.0 * uniform();
    /* Calls per batch so that a batch takes some milliseconds. */
    int reps = 1;
    for (;;) {
        double t0 = now();
        for (int i = 0; i < reps; i++)
            if (m2f_hungarian(cost + (size_t)(i % MATS) * n, rows, cols, col, NULL)) {
                fprintf(stderr, "bench_hungarian: %dx%d refused\n", rows, cols);
                exit(1);
            }
        if (now() - t0 > 0.02 || reps >= 1 << 20)
            break;
        reps *= 2;
    }
    double us[BATCHES];
    for (int b = 0; b < BATCHES; b++) {
        double t0 = now();
        for (int i = 0; i < reps; i++)
            m2f_hungarian(cost + (size_t)(i % MATS) * n, rows, cols, col, NULL);
        us[b] = (now() - t0) / reps * 1e6;
    }
    qsort(us, BATCHES, sizeof us[0], cmp_double);
    printf("%4d x %-4d %10.2f us/call (median of %d batches of %d; min %.2f, max %.2f)\n", rows,
           cols, us[BATCHES / 2], BATCHES, reps, us[0], us[BATCHES - 1]);
    free(cost);
    free(col);
}

int main(void)
{
    static const int shapes[][2] = {{100, 10}, {100, 50}, {200, 100}, {50, 100},
                                    {100, 200}, {100, 100}, {200, 200}};
    printf("m2f_hungarian, rows x cols (queries x targets), random real costs\n");
    for (size_t k = 0; k < sizeof shapes / sizeof shapes[0]; k++)
        bench(shapes[k][0], shapes[k][1]);
    return 0;
}
