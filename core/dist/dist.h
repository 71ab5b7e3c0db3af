/*
 * Data-parallel training across processes (docs/distributed.md): MPI
 * (Open MPI or MPICH) when vpeft was configured with it and the process
 * was started by an MPI launcher (mpirun, mpiexec, srun); otherwise one
 * process, for which every call below works as a job of size 1.
 *
 *     vp_dist d;
 *     if (vp_dist_init(&d)) ...               // MPI_Init under a launcher
 *     ... device from d.local_rank ...
 *     if (vp_dist_agree(&d, st)) ...          // every rank learns who failed
 *     vp_dist_allreduce_mean(&d, grads, n);   // after each step's runs
 *     vp_dist_finalize(&d);
 *
 * A rank that fails before a collective must still reach vp_dist_agree
 * with its status, so that the others stop with its message instead of
 * waiting forever; a rank that dies is the launcher's to report (Open MPI
 * and MPICH end the whole job and name the rank).
 */
#ifndef VP_DIST_DIST_H
#define VP_DIST_DIST_H

#include <stdbool.h>
#include <stddef.h>

#include <vpeft/status.h>

typedef struct vp_dist {
    int rank, size;             /* in the job */
    int local_rank, local_size; /* among the ranks on this machine */
    char host[128];             /* this machine's name */
    bool mpi;                   /* MPI_Init was called (and MPI_Finalize is due) */
} vp_dist;

/* Whether this build has MPI (configure found it). */
bool vp_dist_built(void);
/* Whether the environment is that of an MPI launcher's child (Open MPI's
 * OMPI_COMM_WORLD_SIZE, PMI_SIZE of MPICH's Hydra and Slurm, PMIX_RANK). */
bool vp_dist_launched(void);

/* Join the job: MPI_Init when built with MPI and launched by a launcher,
 * else a job of one. Launched by a launcher without MPI in the build is
 * an error saying how to build with it (every rank would train alone). */
vp_status vp_dist_init(vp_dist *d);
void vp_dist_finalize(vp_dist *d);

/* x (n floats, the same n on every rank) = the mean over the ranks of x. */
vp_status vp_dist_allreduce_mean(const vp_dist *d, float *x, size_t n);
/* The same for a sum of doubles (counts, losses for the log). */
vp_status vp_dist_allreduce_sum(const vp_dist *d, double *x, size_t n);

/* Rank 0 gets every rank's n bytes concatenated in rank order (*all,
 * malloc'd, *all_n bytes); the others get NULL and 0. Collective; each
 * rank's n below 2 GiB. */
vp_status vp_dist_gather(const vp_dist *d, const void *buf, size_t n, char **all, size_t *all_n);

/* Every rank passes its status; every rank gets VP_OK when all are VP_OK,
 * else the failure of the lowest failing rank, its message prefixed with
 * "rank R (HOST): " (on that rank too). Collective. */
vp_status vp_dist_agree(const vp_dist *d, vp_status st);

/* vp_dist_agree and a sum in one collective: x (n doubles, n <= 15, the
 * same n on every rank) becomes the sum over the ranks when every rank
 * passes VP_OK; otherwise every rank gets vp_dist_agree's failure and x is
 * left as it was. For values a step needs from every rank before it runs
 * (the instances of the global batch): a rank that failed earlier takes
 * part with its status, so no rank waits for it. */
vp_status vp_dist_agree_sum(const vp_dist *d, vp_status st, double *x, size_t n);

/* A step's gradient buckets across the ranks. Every rank reduces the same
 * buckets in the same order (vp_graph_run_buckets hands them over while
 * the backward pass runs): vp_dist_bucket averages span[done] of x in
 * place. After the run, vp_dist_buckets_end with the run's status: a rank
 * whose run failed before its last bucket all-reduces the ones it did not
 * reach (their values do not matter, the step is lost), so that no rank
 * waits in one, and then every rank agrees on the status (vp_dist_agree).
 * done starts again at 0 for the next step. */
typedef struct vp_dist_span {
    uint64_t offset, count; /* floats of x */
} vp_dist_span;

typedef struct vp_dist_buckets {
    const vp_dist *d;
    float *x;                  /* the flat gradient, on the host */
    const vp_dist_span *span;  /* the buckets, in the order they are reduced */
    uint32_t n, done;          /* done: reduced in this step */
    double seconds;            /* in the all-reduces, adding up over the steps */
} vp_dist_buckets;

vp_status vp_dist_bucket(vp_dist_buckets *b);
vp_status vp_dist_buckets_end(vp_dist_buckets *b, vp_status st);

#endif
