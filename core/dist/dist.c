/*
 * Processes of a data-parallel job (dist.h): MPI calls behind
 * VP_CONFIG_MPI, a job of one without it.
 */
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "config.h"
#include "dist/dist.h"
#include "util/error.h"
#include "util/clock.h"

#if VP_CONFIG_MPI
#include <mpi.h>
#endif

bool vp_dist_built(void) { return VP_CONFIG_MPI != 0; }

bool vp_dist_launched(void)
{
    static const char *const vars[] = {"OMPI_COMM_WORLD_SIZE", "PMI_SIZE", "PMIX_RANK",
                                       "MPI_LOCALNRANKS"};
    for (size_t i = 0; i < sizeof vars / sizeof *vars; i++)
        if (getenv(vars[i]))
            return true;
    return false;
}

static void single(vp_dist *d)
{
    memset(d, 0, sizeof *d);
    d->size = d->local_size = 1;
    if (gethostname(d->host, sizeof d->host))
        snprintf(d->host, sizeof d->host, "localhost");
    d->host[sizeof d->host - 1] = '\0';
}

#if VP_CONFIG_MPI
static vp_status mpi_fail(int rc, const char *what)
{
    char msg[MPI_MAX_ERROR_STRING];
    int len = 0;
    if (MPI_Error_string(rc, msg, &len) != MPI_SUCCESS)
        snprintf(msg, sizeof msg, "error %d", rc);
    return vp_error_set(VP_ERR_IO, "MPI: %s: %s", what, msg);
}
#endif

vp_status vp_dist_init(vp_dist *d)
{
    single(d);
    if (!vp_dist_launched())
        return VP_OK;
#if VP_CONFIG_MPI
    int rc = MPI_Init(NULL, NULL);
    if (rc != MPI_SUCCESS)
        return mpi_fail(rc, "MPI_Init");
    d->mpi = true;
    /* errors come back as codes (and end in vp_dist_agree), not aborts */
    MPI_Comm_set_errhandler(MPI_COMM_WORLD, MPI_ERRORS_RETURN);
    MPI_Comm local;
    rc = MPI_Comm_rank(MPI_COMM_WORLD, &d->rank);
    if (rc == MPI_SUCCESS)
        rc = MPI_Comm_size(MPI_COMM_WORLD, &d->size);
    if (rc == MPI_SUCCESS)
        rc = MPI_Comm_split_type(MPI_COMM_WORLD, MPI_COMM_TYPE_SHARED, d->rank, MPI_INFO_NULL,
                                 &local);
    if (rc == MPI_SUCCESS) {
        MPI_Comm_rank(local, &d->local_rank);
        MPI_Comm_size(local, &d->local_size);
        MPI_Comm_free(&local);
    }
    return rc == MPI_SUCCESS ? VP_OK : mpi_fail(rc, "the job's ranks");
#else
    return vp_error_set(VP_ERR_UNSUPPORTED,
                        "started by an MPI launcher, but this vpeft was built without MPI: every "
                        "rank would train alone; install openmpi-bin and libopenmpi-dev (or MPICH) "
                        "and run ./configure --with-mpi && make");
#endif
}

void vp_dist_finalize(vp_dist *d)
{
#if VP_CONFIG_MPI
    if (d->mpi)
        MPI_Finalize();
#endif
    d->mpi = false;
}

vp_status vp_dist_allreduce_mean(const vp_dist *d, float *x, size_t n)
{
    if (d->size == 1)
        return VP_OK;
#if VP_CONFIG_MPI
    for (size_t off = 0; off < n;) { /* counts are int */
        int k = n - off > (1u << 30) ? 1 << 30 : (int)(n - off);
        int rc = MPI_Allreduce(MPI_IN_PLACE, x + off, k, MPI_FLOAT, MPI_SUM, MPI_COMM_WORLD);
        if (rc != MPI_SUCCESS)
            return mpi_fail(rc, "averaging gradients");
        off += (size_t)k;
    }
    float inv = 1.0f / (float)d->size;
    for (size_t i = 0; i < n; i++)
        x[i] *= inv;
    return VP_OK;
#else
    (void)x;
    (void)n;
    return vp_error_set(VP_ERR_INTERNAL, "a job of %d ranks without MPI", d->size);
#endif
}

vp_status vp_dist_allreduce_sum(const vp_dist *d, double *x, size_t n)
{
    if (d->size == 1)
        return VP_OK;
#if VP_CONFIG_MPI
    int rc = MPI_Allreduce(MPI_IN_PLACE, x, (int)n, MPI_DOUBLE, MPI_SUM, MPI_COMM_WORLD);
    return rc == MPI_SUCCESS ? VP_OK : mpi_fail(rc, "summing across ranks");
#else
    (void)x;
    (void)n;
    return vp_error_set(VP_ERR_INTERNAL, "a job of %d ranks without MPI", d->size);
#endif
}

vp_status vp_dist_gather(const vp_dist *d, const void *buf, size_t n, char **all, size_t *all_n)
{
    *all = NULL;
    *all_n = 0;
    if (d->size == 1) {
        if (!(*all = malloc(n ? n : 1)))
            return vp_error_set(VP_ERR_NOMEM, "out of host memory");
        memcpy(*all, buf, n);
        *all_n = n;
        return VP_OK;
    }
#if VP_CONFIG_MPI
    if (n > (size_t)INT32_MAX)
        return vp_error_set(VP_ERR_INVALID, "gather: %zu bytes from one rank", n);
    int mine = (int)n, *counts = NULL, *displs = NULL;
    vp_status st = VP_OK;
    if (d->rank == 0) {
        counts = calloc((size_t)d->size, sizeof *counts);
        displs = calloc((size_t)d->size, sizeof *displs);
        if (!counts || !displs)
            st = vp_error_set(VP_ERR_NOMEM, "out of host memory");
    }
    /* a failed allocation on rank 0 still takes part, with nothing to receive */
    int rc = MPI_Gather(&mine, 1, MPI_INT, counts, 1, MPI_INT, 0, MPI_COMM_WORLD);
    if (rc != MPI_SUCCESS)
        st = mpi_fail(rc, "gathering sizes");
    size_t total = 0;
    for (int r = 0; counts && r < d->size; r++) {
        displs[r] = (int)total;
        total += (size_t)counts[r];
    }
    if (d->rank == 0 && !st && (total > (size_t)INT32_MAX || !(*all = malloc(total ? total : 1))))
        st = vp_error_set(VP_ERR_NOMEM, "gather: %zu bytes", total);
    rc = MPI_Gatherv(buf, mine, MPI_BYTE, *all, counts, displs, MPI_BYTE, 0, MPI_COMM_WORLD);
    if (rc != MPI_SUCCESS && !st)
        st = mpi_fail(rc, "gathering results");
    free(counts);
    free(displs);
    if (st) {
        free(*all);
        *all = NULL;
        return st;
    }
    *all_n = total;
    return VP_OK;
#else
    (void)buf;
    return vp_error_set(VP_ERR_INTERNAL, "a job of %d ranks without MPI", d->size);
#endif
}

vp_status vp_dist_agree(const vp_dist *d, vp_status st)
{
    if (d->size == 1)
        return st;
#if VP_CONFIG_MPI
    /* The lowest failing rank (size: none) */
    int mine = st ? d->rank : d->size, first = d->size;
    int rc = MPI_Allreduce(&mine, &first, 1, MPI_INT, MPI_MIN, MPI_COMM_WORLD);
    if (rc != MPI_SUCCESS)
        return mpi_fail(rc, "agreeing on a failure");
    if (first == d->size)
        return VP_OK;
    /* its status, host and message, broadcast from it */
    struct {
        int st;
        char host[128];
        char msg[1024];
    } m = {0};
    if (d->rank == first) {
        m.st = (int)st;
        snprintf(m.host, sizeof m.host, "%s", d->host);
        snprintf(m.msg, sizeof m.msg, "%s", vp_error_last());
    }
    rc = MPI_Bcast(&m, (int)sizeof m, MPI_BYTE, first, MPI_COMM_WORLD);
    if (rc != MPI_SUCCESS)
        return mpi_fail(rc, "agreeing on a failure");
    return vp_error_set((vp_status)m.st, "rank %d (%s): %s", first, m.host, m.msg);
#else
    return st;
#endif
}

vp_status vp_dist_agree_sum(const vp_dist *d, vp_status st, double *x, size_t n)
{
    if (d->size == 1)
        return st;
    if (n > 15)
        return vp_error_set(VP_ERR_INTERNAL, "agree_sum: %zu values (at most 15)", n);
#if VP_CONFIG_MPI
    double v[16] = {st ? 1.0 : 0.0}; /* failed ranks, then the values */
    if (!st)
        memcpy(v + 1, x, n * sizeof *x);
    int rc = MPI_Allreduce(MPI_IN_PLACE, v, (int)n + 1, MPI_DOUBLE, MPI_SUM, MPI_COMM_WORLD);
    if (rc != MPI_SUCCESS)
        return mpi_fail(rc, "summing across ranks");
    if (v[0] > 0) /* every rank saw it: all take part in naming the failure */
        return vp_dist_agree(d, st);
    memcpy(x, v + 1, n * sizeof *x);
    return VP_OK;
#else
    (void)x;
    return vp_error_set(VP_ERR_INTERNAL, "a job of %d ranks without MPI", d->size);
#endif
}


vp_status vp_dist_bucket(vp_dist_buckets *b)
{
    if (b->done >= b->n)
        return vp_error_set(VP_ERR_INTERNAL, "bucket %u of %u", b->done + 1, b->n);
    const vp_dist_span *s = &b->span[b->done++];
    double t0 = vp_now_s();
    vp_status st = vp_dist_allreduce_mean(b->d, b->x + s->offset, (size_t)s->count);
    b->seconds += vp_now_s() - t0;
    return st;
}

vp_status vp_dist_buckets_end(vp_dist_buckets *b, vp_status st)
{
    if (!st && b->done != b->n)
        st = vp_error_set(VP_ERR_INTERNAL, "%u of %u gradient buckets were all-reduced",
                          b->done, b->n);
    /* the buckets this rank did not reach: the others wait in them */
    while (st && b->done < b->n && !vp_dist_bucket(b))
        ;
    b->done = 0;
    st = vp_dist_agree(b->d, st);
    return st;
}
