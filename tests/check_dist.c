/*
 * Data-parallel processes (core/dist): a job of one without a launcher,
 * and, where vpeft was built with MPI and mpirun is installed, this
 * program started as two ranks (`check_dist --probe` under mpirun): their
 * local ranks, the gradient mean across them, and a failure on one rank
 * reported by every rank with its rank and host.
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "harness.h"

#include "dist/dist.h"
#include "util/error.h"

/* Each rank: its place, a mean over 5 floats, then rank 1 fails. */
static int probe(void)
{
    vp_dist d;
    if (vp_dist_init(&d)) {
        printf("init failed: %s\n", vp_error_last());
        return 1;
    }
    float x[5];
    for (int i = 0; i < 5; i++)
        x[i] = (float)(d.rank * 10 + i);
    vp_status st = vp_dist_allreduce_mean(&d, x, 5);
    printf("rank %d of %d, local %d of %d, mpi %d, mean %g %g %g %g %g\n", d.rank, d.size,
           d.local_rank, d.local_size, d.mpi, (double)x[0], (double)x[1], (double)x[2],
           (double)x[3], (double)x[4]);
    st = d.rank == 1 ? vp_error_set(VP_ERR_UNSUPPORTED, "no Vulkan device 7") : VP_OK;
    st = vp_dist_agree(&d, st);
    printf("rank %d agreed: %d %s\n", d.rank, (int)st, st ? vp_error_last() : "ok");
    fflush(stdout);
    vp_dist_finalize(&d);
    return 0;
}

START_TEST(test_single)
{
    vp_dist d;
    ck_assert(!vp_dist_launched()); /* make check does not run under mpirun */
    vt_ok(vp_dist_init(&d));
    ck_assert(d.rank == 0 && d.size == 1 && d.local_rank == 0 && d.local_size == 1 && !d.mpi);
    ck_assert(d.host[0] != '\0');
    float x[3] = {1, 2, 3};
    vt_ok(vp_dist_allreduce_mean(&d, x, 3));
    ck_assert(x[0] == 1 && x[1] == 2 && x[2] == 3);
    vp_error_set(VP_ERR_IO, "disk full");
    ck_assert_int_eq(vp_dist_agree(&d, VP_ERR_IO), VP_ERR_IO);
    ck_assert_str_eq(vp_error_last(), "disk full"); /* one process: the message as it is */
    vp_dist_finalize(&d);
}
END_TEST

START_TEST(test_two_ranks)
{
    if (!vp_dist_built()) {
        vt_skip("test_two_ranks", "-", "built without MPI");
        return;
    }
    if (vt_sh("command -v mpirun") != 0) {
        vt_skip("test_two_ranks", "-", "mpirun not installed");
        return;
    }
    char self[4096];
    ssize_t n = readlink("/proc/self/exe", self, sizeof self - 1);
    ck_assert(n > 0);
    self[n] = '\0';
    bool ompi = vt_sh("mpirun --version | grep -q 'Open MPI'") == 0;
    int rc = vt_sh("mpirun %s -np 2 %s --probe", ompi ? "--allow-run-as-root --oversubscribe" : "",
                   self);
    ck_assert_msg(rc == 0, "mpirun: %d\n%s\n%s", rc, vt_out, vt_err);
    /* both ranks, on this machine, with the mean of rank*10 + i over ranks 0 and 1 */
    vt_assert_has(vt_out, "rank 0 of 2, local 0 of 2, mpi 1, mean 5 6 7 8 9\n");
    vt_assert_has(vt_out, "rank 1 of 2, local 1 of 2, mpi 1, mean 5 6 7 8 9\n");
    char host[128];
    gethostname(host, sizeof host);
    host[sizeof host - 1] = '\0';
    char want[512];
    for (int r = 0; r < 2; r++) {
        snprintf(want, sizeof want, "rank %d agreed: %d rank 1 (%s): no Vulkan device 7\n", r,
                 (int)VP_ERR_UNSUPPORTED, host);
        vt_assert_has(vt_out, want);
    }
}
END_TEST

int main(int argc, char **argv)
{
    if (argc == 2 && !strcmp(argv[1], "--probe"))
        return probe();
    Suite *s = suite_create("dist");
    TCase *tc = vt_tcase("dist");
    tcase_set_timeout(tc, 120);
    tcase_add_test(tc, test_single);
    tcase_add_test(tc, test_two_ranks);
    suite_add_tcase(s, tc);
    return vt_run(s);
}
