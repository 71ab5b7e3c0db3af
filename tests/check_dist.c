/*
 * Data-parallel processes (core/dist): a job of one without a launcher,
 * and, where vpeft was built with MPI and mpirun is installed, this
 * program started as two ranks (`check_dist --probe` under mpirun): their
 * local ranks, the gradient mean across them, and a failure on one rank
 * reported by every rank with its rank and host.
 */
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "harness.h"

#include "dist/dist.h"
#include "io/png.h"
#include "io/safetensors.h"
#include "util/error.h"
#include "util/file.h"

/* Each rank: its place, a mean over 5 floats, sums with and without a
 * failure, a failure, and a step's gradient buckets, then with a run that
 * fails on rank 1 between buckets. */
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
    double sum[2] = {d.rank + 1, 2};
    st = vp_dist_agree_sum(&d, VP_OK, sum, 2);
    printf("rank %d summed: %d %g %g\n", d.rank, (int)st, sum[0], sum[1]);
    st = d.rank == 1 ? vp_error_set(VP_ERR_UNSUPPORTED, "no Vulkan device 7") : VP_OK;
    st = vp_dist_agree(&d, st);
    printf("rank %d agreed: %d %s\n", d.rank, (int)st, st ? vp_error_last() : "ok");
    /* a failure on rank 0 carried by the sum: both learn it, x stays */
    st = d.rank == 0 ? vp_error_set(VP_ERR_IO, "cannot read 9.png") : VP_OK;
    sum[0] = 7;
    st = vp_dist_agree_sum(&d, st, sum, 1);
    printf("rank %d sum failed: %d %s, x %g\n", d.rank, (int)st, st ? vp_error_last() : "ok",
           sum[0]);
    /* gradient buckets: all three reduced by both ranks, in order */
    float gr[6];
    for (int i = 0; i < 6; i++)
        gr[i] = (float)(d.rank * 6 + i);
    vp_dist_span sp[3] = {{4, 2}, {2, 2}, {0, 2}};
    vp_dist_buckets b = {.d = &d, .x = gr, .span = sp, .n = 3};
    st = VP_OK;
    for (int k = 0; k < 3 && !st; k++)
        st = vp_dist_bucket(&b);
    st = vp_dist_buckets_end(&b, VP_OK);
    printf("rank %d buckets: %d %g %g %g %g %g %g\n", d.rank, (int)st, (double)gr[0],
           (double)gr[1], (double)gr[2], (double)gr[3], (double)gr[4], (double)gr[5]);
    /* rank 1's run fails after the first bucket: it reduces the other two
     * with rank 0, which finished its run, and both learn why */
    st = vp_dist_bucket(&b);
    if (d.rank == 0) {
        vp_dist_bucket(&b);
        vp_dist_bucket(&b);
    } else
        st = vp_error_set(VP_ERR_VULKAN, "device lost in segment 7");
    st = vp_dist_buckets_end(&b, st);
    printf("rank %d bucket failure: %d %s, done %u\n", d.rank, (int)st,
           st ? vp_error_last() : "ok", b.done);
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
    double sum = 5;
    vt_ok(vp_dist_agree_sum(&d, VP_OK, &sum, 1));
    ck_assert(sum == 5);
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
        snprintf(want, sizeof want, "rank %d summed: 0 3 4\n", r);
        vt_assert_has(vt_out, want);
        snprintf(want, sizeof want, "rank %d agreed: %d rank 1 (%s): no Vulkan device 7\n", r,
                 (int)VP_ERR_UNSUPPORTED, host);
        vt_assert_has(vt_out, want);
        snprintf(want, sizeof want, "rank %d sum failed: %d rank 0 (%s): cannot read 9.png, "
                 "x 7\n", r, (int)VP_ERR_IO, host);
        vt_assert_has(vt_out, want);
        snprintf(want, sizeof want, "rank %d buckets: 0 3 4 5 6 7 8\n", r);
        vt_assert_has(vt_out, want);
        snprintf(want, sizeof want, "rank %d bucket failure: %d rank 1 (%s): device lost in "
                 "segment 7, done 0\n", r, (int)VP_ERR_VULKAN, host);
        vt_assert_has(vt_out, want);
    }
}
END_TEST

/* ---- two ranks against one process with the same global batch ---- */

static char dir[512];

/* n images of 32 x 32 with one to three rectangles (classes 1 and 2):
 * image i has a red one, a blue one unless i % 3 == 0, and a second, small
 * red one when i % 3 == 2. The ranks' batches then hold different numbers
 * of instances, which the head's loss must normalize by the global batch's
 * count (target.instances) for the ranks' mean gradient to be the global one. */
static void boxes_dataset(int n)
{
    char path[700];
    snprintf(path, sizeof path, "%s/d/images", dir);
    vt_ok(vp_mkdir_p(path));
    char *json = malloc(1 << 16);
    size_t len = (size_t)snprintf(json, 1 << 16, "{\"images\": [");
    for (int i = 0; i < n; i++)
        len += (size_t)snprintf(json + len, (1 << 16) - len,
                                "%s{\"id\": %d, \"width\": 32, \"height\": 32, "
                                "\"file_name\": \"images/%d.png\"}", i ? ", " : "", i + 1, i + 1);
    len += (size_t)snprintf(json + len, (1 << 16) - len, "], \"annotations\": [");
    uint8_t px[32 * 32 * 3];
    int id = 0;
    for (int i = 0; i < n; i++) {
        /* x, y, w, h, class */
        int box[3][5] = {{2 + i % 5, 3 + i % 3, 10, 9, 1},
                         {17 + i % 4, 16 + (i * 7) % 5, 12, 12, 2},
                         {4 + i % 2, 22, 6, 6, 1}};
        int nb = i % 3 == 0 ? 1 : i % 3 == 1 ? 2 : 3;
        memset(px, 230, sizeof px);
        for (int k = 0; k < nb; k++)
            for (int y = box[k][1]; y < box[k][1] + box[k][3]; y++)
                for (int x = box[k][0]; x < box[k][0] + box[k][2]; x++) {
                    uint8_t *p = px + 3 * (y * 32 + x);
                    p[0] = box[k][4] == 1 ? 200 : 30;
                    p[1] = box[k][4] == 1 ? 40 : 60;
                    p[2] = box[k][4] == 1 ? 40 : 190;
                }
        snprintf(path, sizeof path, "%s/d/images/%d.png", dir, i + 1);
        vt_ok(vp_png_write(path, 32, 32, px));
        for (int k = 0; k < nb; k++) {
            int x0 = box[k][0], y0 = box[k][1], x1 = x0 + box[k][2], y1 = y0 + box[k][3];
            len += (size_t)snprintf(
                json + len, (1 << 16) - len,
                "%s{\"id\": %d, \"image_id\": %d, \"category_id\": %d, \"iscrowd\": 0, "
                "\"area\": %d, \"segmentation\": [[%d, %d, %d, %d, %d, %d, %d, %d]]}",
                id ? ", " : "", id + 1, i + 1, box[k][4], box[k][2] * box[k][3], x0, y0, x1, y0,
                x1, y1, x0, y1);
            id++;
        }
    }
    len += (size_t)snprintf(json + len, (1 << 16) - len,
                            "], \"categories\": [{\"id\": 1, \"name\": \"red\"}, "
                            "{\"id\": 2, \"name\": \"blue\"}]}");
    snprintf(path, sizeof path, "%s/d/annotations.json", dir);
    vt_ok(vp_file_write_atomic(path, json, len));
    free(json);
}

/* AdamW's eps is 1e-6 rather than 1e-8: with 1e-8, parameters whose
 * gradients are near zero move by m / sqrt(v), which turns float
 * reassociation into differences of 4e-6 (7e-6 on an H200) after 4 steps;
 * with 1e-6 they agree to 1e-7, while a wrong normalization (each rank
 * dividing by its own instance count) still differs by 9e-4. */
static void write_run(const char *name, int batch, const char *extra)
{
    char text[4096], path[700];
    snprintf(text, sizeof text,
             "{\"model\": {\"backbone\": {\"plugin\": \"vit\", \"image\": 32, \"patch\": 8, "
             "\"width\": 32, \"depth\": 1, \"heads\": 2, \"out_channels\": 32}, "
             "\"head\": {\"plugin\": \"mask2former\", \"classes\": 2, \"queries\": 6, "
             "\"hidden\": 32, \"heads\": 2, \"encoder_layers\": 1, \"decoder_layers\": 2, "
             "\"points\": 2, \"encoder_ffn\": 64, \"decoder_ffn\": 64, \"mask_dim\": 32, "
             "\"max_targets\": 4}}%s, \"train\": {\"data\": {\"annotations\": "
             "\"d/annotations.json\"}, \"val\": {\"annotations\": \"d/annotations.json\"}, "
             "\"steps\": 4, \"batch\": %d, \"lr\": 1e-3, "
             "\"clip_grad_norm\": 1.0, \"eps\": 1e-6, \"checkpoint_every\": 0, \"out\": \"%s\"}}",
             extra, batch, name);
    snprintf(path, sizeof path, "%s/%s.json", dir, name);
    vt_ok(vp_file_write_atomic(path, text, strlen(text)));
}

/* max |a - b| / max |a| over the trainable tensors both runs saved */
static double compare(const char *a_name, const char *b_name, int *n_tensors)
{
    char pa[700], pb[700];
    snprintf(pa, sizeof pa, "%s/%s/checkpoint.safetensors", dir, a_name);
    snprintf(pb, sizeof pb, "%s/%s/checkpoint.safetensors", dir, b_name);
    vp_st *a, *b;
    vt_ok(vp_st_open(pa, &a));
    vt_ok(vp_st_open(pb, &b));
    double diff = 0, big = 0;
    *n_tensors = 0;
    for (size_t i = 0; i < vp_st_count(a); i++) {
        const vp_st_tensor *t = vp_st_get(a, i);
        if (!strncmp(t->name, "vpeft.", 6))
            continue; /* the AdamW moments */
        const vp_st_tensor *u = vp_st_find(b, t->name);
        ck_assert_msg(u && u->nelem == t->nelem, "%s: missing or another shape", t->name);
        float *x = malloc(t->nelem * sizeof *x), *y = malloc(t->nelem * sizeof *y);
        vt_ok(vp_st_read_f32(a, t->name, x, t->nelem));
        vt_ok(vp_st_read_f32(b, t->name, y, t->nelem));
        for (uint64_t k = 0; k < t->nelem; k++) {
            diff = fmax(diff, fabs((double)x[k] - (double)y[k]));
            big = fmax(big, fabs((double)x[k]));
        }
        free(x);
        free(y);
        (*n_tensors)++;
    }
    vp_st_close(a);
    vp_st_close(b);
    return diff / big;
}

/* The tests that run vpeft under Open MPI's mpirun: the binary, with a
 * fresh directory holding the boxes dataset; NULL (a skip recorded)
 * without MPI in the build or Open MPI's mpirun. */
static const char *ompi_setup(const char *test)
{
    if (!vp_dist_built() || vt_sh("mpirun --version | grep -q 'Open MPI'") != 0) {
        vt_skip(test, "-", "needs vpeft built with MPI and Open MPI's mpirun");
        return NULL;
    }
    const char *bin = getenv("VPEFT_BIN"), *tmp = getenv("TMPDIR");
    ck_assert_msg(bin != NULL, "VPEFT_BIN is not set (run through make check)");
    snprintf(dir, sizeof dir, "%s/vpeft-dist-XXXXXX", tmp ? tmp : "/tmp");
    ck_assert_ptr_nonnull(mkdtemp(dir));
    boxes_dataset(8);
    return bin;
}

/* mpirun for two ranks on a 2-core machine: one lavapipe thread per rank,
 * ranks yielding while they wait, root allowed */
#define MPIRUN "LP_NUM_THREADS=1 mpirun --allow-run-as-root --oversubscribe -x LP_NUM_THREADS " \
               "--mca mpi_yield_when_idle 1 -np 2"

START_TEST(test_same_as_one_process)
{
    const char *bin = ompi_setup("test_same_as_one_process");
    if (!bin)
        return;
    static const char lora[] = ", \"peft\": [{\"plugin\": \"lora\", \"r\": 4, "
                               "\"target_modules\": [\"query\", \"value\", \"q_proj\", "
                               "\"v_proj\"]}]";
    static const struct {
        const char *what, *extra, *bucket_mb, *buckets;
    } runs[3] = {
        /* full: 0.26 MiB of gradients, in buckets of 20 KiB during the backward pass */
        {"full fine-tuning", "", "0.02", "10 buckets"},
        {"lora", lora, "25", "1 bucket during"},
        {"full fine-tuning, one all-reduce after the backward pass", "", "0", "1 bucket after"},
    };
    for (int r = 0; r < 3; r++) {
        write_run("one", 4, runs[r].extra);
        write_run("two", 2, runs[r].extra);
        ck_assert_msg(vt_sh("cd %s && %s train one.json --quiet", dir, bin) == 0, "%s", vt_err);
        ck_assert_msg(vt_sh("cd %s && " MPIRUN " %s train two.json --set train.bucket_mb=%s", dir,
                            bin, runs[r].bucket_mb) == 0, "%s\n%s", vt_out, vt_err);
        vt_assert_has(vt_err, runs[r].buckets);
        int n = 0;
        double rel = compare("one", "two", &n);
        printf("%s: %d trainable tensors after 4 steps, 2 ranks of 2 against 1 of 4: "
               "max relative difference %.3g\n", runs[r].what, n, rel);
        ck_assert_int_gt(n, 0);
        ck_assert_msg(rel < 1e-5, "%s: the two runs differ by %g", runs[r].what, rel);
        if (r == 2)
            break;
        /* the ranks' evaluation, gathered on rank 0, is one process's to the byte */
        ck_assert_msg(vt_sh("cd %s && %s eval --config two.json --weights two/model.safetensors "
                            "--out one-eval.json && cmp one-eval.json two/results.json", dir,
                            bin) == 0, "%s: the sharded evaluation differs\n%s%s", runs[r].what,
                      vt_out, vt_err);
        /* and vpeft eval itself under mpirun */
        ck_assert_msg(vt_sh("cd %s && " MPIRUN " %s eval --config two.json --weights "
                            "two/model.safetensors --out two-eval.json && "
                            "cmp one-eval.json two-eval.json", dir, bin) == 0,
                      "%s: eval under mpirun differs\n%s%s", runs[r].what, vt_out, vt_err);
    }
    vt_rm_rf(dir);
}
END_TEST

/* A rank killed mid-run ends the job, non-zero, within 30 s, naming it. */
START_TEST(test_rank_killed)
{
    const char *bin = ompi_setup("test_rank_killed");
    if (!bin)
        return;
    write_run("long", 2, "");
    /* rank 1 is the process whose environment says so; kill it once both run */
    int rc = vt_sh(
        "cd %s && { " MPIRUN " %s train long.json --quiet --set train.steps=100000 "
        "& m=$!; v=; for i in $(seq 200); do for p in $(pgrep -f 'train long.json'); do "
        "tr '\\0' '\\n' < /proc/$p/environ 2>/dev/null | grep -qx OMPI_COMM_WORLD_RANK=1 && v=$p; "
        "done; [ -n \"$v\" ] && break; sleep 0.1; done; sleep 2; t0=$(date +%%s); kill -9 $v; "
        "wait $m; rc=$?; echo \"exit $rc after $(( $(date +%%s) - t0 )) s\"; }",
        dir, bin);
    ck_assert_int_eq(rc, 0);
    int code = -1, secs = -1;
    const char *e = strstr(vt_out, "exit ");
    ck_assert_ptr_nonnull(e);
    ck_assert_int_eq(sscanf(e, "exit %d after %d s", &code, &secs), 2);
    printf("rank 1 killed: mpirun exited %d after %d s\n", code, secs);
    ck_assert_int_ne(code, 0);
    ck_assert_int_lt(secs, 30);
    vt_assert_has(vt_err, "rank 1");
    vt_rm_rf(dir);
}
END_TEST

/* A rank that cannot decode its image stops both, with the rank, host and
 * file in the message, and no hang. */
START_TEST(test_rank_fails)
{
    const char *bin = ompi_setup("test_rank_fails");
    if (!bin)
        return;
    write_run("bad", 2, "");
    /* every image is some rank's within the first epoch (2 steps of 4) */
    ck_assert_int_eq(vt_sh("cd %s && head -c 60 d/images/5.png > t && mv t d/images/5.png", dir),
                     0);
    int rc = vt_sh("cd %s && timeout 60 sh -c '" MPIRUN " %s train bad.json --quiet'", dir, bin);
    ck_assert_msg(rc != 0 && rc != 124, "exit %d (124: a hang)\n%s", rc, vt_err);
    char host[128];
    gethostname(host, sizeof host);
    host[sizeof host - 1] = '\0';
    char want[256];
    snprintf(want, sizeof want, " (%s): ", host);
    vt_assert_has(vt_err, want);
    vt_assert_has(vt_err, "d/images/5.png");
    vt_assert_has(vt_err, "vpeft: rank ");
    vt_rm_rf(dir);
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
    tcase_add_test(tc, test_same_as_one_process);
    tcase_add_test(tc, test_rank_killed);
    tcase_add_test(tc, test_rank_fails);
    suite_add_tcase(s, tc);
    return vt_run(s);
}
