/* world.c - MPI world wrapper. */
#include "fm/world.h"

#include <mpi.h>
#include <sched.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "fm/timer.h"

#define MPI_CHUNK ((size_t)1 << 28) /* counts are int: reduce in chunks */
#define FM_POLL_SPIN_S 50e-6         /* paced polls: test without pause this long first */
#define FM_ARRIVAL_TAG 32000         /* after a timeout: "I am here" (missing_ranks) */
#define FM_ARRIVAL_GRACE_S 3.0       /* how long a timed-out rank listens for the others */

int fm_world_fail(fm_err *e, int rc, const char *what)
{
    char msg[MPI_MAX_ERROR_STRING];
    int len = 0;
    MPI_Error_string(rc, msg, &len);
    return fm_fail(e, FM_ERR_INTERNAL, "%s failed: %s", what, msg);
}

int fm_world_init(fm_world *w, int *argc, char ***argv, fm_err *e)
{
    memset(w, 0, sizeof *w);
    int inited = 0;
    MPI_Initialized(&inited);
    if (!inited) {
        int provided = 0;
        int rc = MPI_Init_thread(argc, argv, MPI_THREAD_SERIALIZED, &provided);
        if (rc != MPI_SUCCESS)
            return fm_world_fail(e, rc, "MPI_Init_thread");
        w->owns_mpi = 1;
    }
    MPI_Comm_set_errhandler(MPI_COMM_WORLD, MPI_ERRORS_RETURN);
    w->timeout_s = FM_WORLD_TIMEOUT_DEFAULT;
    MPI_Comm_rank(MPI_COMM_WORLD, &w->rank);
    MPI_Comm_size(MPI_COMM_WORLD, &w->size);
    return FM_OK;
}

void fm_world_set_timeout(fm_world *w, double seconds)
{
    if (seconds > 0)
        w->timeout_s = seconds;
}

int fm_world_poll(MPI_Request *req, int n, double timeout_s, double sleep_s, int *open, int *mpi_rc)
{
    const double t0 = fm_now();
    const long paced_ns = sleep_s > 0 ? (long)(sleep_s * 1e9) : 0;
    unsigned naps = 0; /* paced: sleeps so far */
    for (unsigned long it = 0;; it++) {
        int flag = 0;
        *mpi_rc = MPI_Testall(n, req, &flag, MPI_STATUSES_IGNORE);
        if (*mpi_rc != MPI_SUCCESS)
            return FM_POLL_MPI_ERROR;
        if (flag)
            return FM_POLL_DONE;
        if (paced_ns ? fm_now() - t0 < FM_POLL_SPIN_S : it < 256) {
            if (!paced_ns)
                sched_yield();
            continue; /* paced: test again at once, a fast link's round ends within this */
        }
        if ((it & 63) == 0 && fm_now() - t0 > timeout_s) {
            *open = 0;
            for (int k = 0; k < n; k++) {
                int done = req[k] == MPI_REQUEST_NULL;
                if (!done)
                    MPI_Test(&req[k], &done, MPI_STATUS_IGNORE);
                if (!done) {
                    *open = k;
                    break;
                }
            }
            return FM_POLL_TIMEOUT;
        }
        /* paced: 10 us, doubling up to the caller's interval (a slow link's
         * transfer costs few wake-ups); else 5 us, then 50 us */
        long ns = it < 4096 ? 5000 : 50000;
        if (paced_ns) {
            ns = naps < 16 && (10000l << naps) < paced_ns ? 10000l << naps : paced_ns;
            naps++;
        }
        const struct timespec ts = { 0, ns };
        nanosleep(&ts, NULL);
    }
}

/* After a world collective timed out: which ranks did not arrive? Every
 * rank that timed out says so to all others (one int, FM_ARRIVAL_TAG on
 * MPI_COMM_WORLD, no collective) and listens for FM_ARRIVAL_GRACE_S; the
 * ranks that timed out in the same collective do so within that grace, so the
 * ones not heard from are the stopped, dead or far-behind ones. Writes "rank
 * 3" or "ranks 3, 5 and 2 more" into who; returns how many are missing (0:
 * every rank answered, or the probe itself failed: then the caller says
 * "not every one"). Only on the failure path: the buffers are malloc'd. */
static int missing_ranks(const fm_world *w, char *who, size_t n)
{
    const int p = w->size;
    char *heard = calloc((size_t)p, 1);
    MPI_Request *req = malloc((size_t)p * sizeof *req);
    int rc = heard && req ? MPI_SUCCESS : MPI_ERR_NO_MEM, missing = 0;
    for (int q = 0; req && q < p; q++)
        req[q] = MPI_REQUEST_NULL;
    for (int q = 0; q < p && rc == MPI_SUCCESS; q++) {
        if (q != w->rank)
            rc = MPI_Isend(&w->rank, 1, MPI_INT, q, FM_ARRIVAL_TAG, MPI_COMM_WORLD, &req[q]);
    }
    if (rc == MPI_SUCCESS) {
        heard[w->rank] = 1;
        const double t0 = fm_now();
        int left = p - 1;
        while (left > 0 && fm_now() - t0 < FM_ARRIVAL_GRACE_S) {
            int flag = 0, from = -1;
            MPI_Status st;
            if (MPI_Iprobe(MPI_ANY_SOURCE, FM_ARRIVAL_TAG, MPI_COMM_WORLD, &flag, &st) != MPI_SUCCESS)
                break;
            if (!flag) {
                const struct timespec ts = { 0, 1000000 };
                nanosleep(&ts, NULL);
                continue;
            }
            MPI_Recv(&from, 1, MPI_INT, st.MPI_SOURCE, FM_ARRIVAL_TAG, MPI_COMM_WORLD, MPI_STATUS_IGNORE);
            if (!heard[st.MPI_SOURCE]) {
                heard[st.MPI_SOURCE] = 1;
                left--;
            }
        }
        char list[128] = "";
        size_t len = 0;
        for (int q = 0; q < p; q++) {
            if (heard[q])
                continue;
            if (missing < 4 && len < sizeof list)
                len += (size_t)snprintf(list + len, sizeof list - len, "%s%d", missing ? ", " : "", q);
            missing++;
        }
        if (missing > 4 && len < sizeof list)
            snprintf(list + len, sizeof list - len, " and %d more", missing - 4);
        if (missing > 0) /* "rank 3" / "ranks 3, 5 and 2 more" */
            snprintf(who, n, "%s %s", missing > 1 ? "ranks" : "rank", list);
    }
    for (int q = 0; req && q < p; q++) /* a stopped rank never receives: do not wait for the sends */
        if (req[q] != MPI_REQUEST_NULL)
            MPI_Request_free(&req[q]);
    free(heard);
    free(req);
    return missing;
}

int fm_world_wait(const fm_world *w, int size, const char *scope, MPI_Request *req, const char *what, fm_err *e)
{
    int open = 0, mpi_rc = MPI_SUCCESS;
    switch (fm_world_poll(req, 1, w->timeout_s, 0, &open, &mpi_rc)) {
    case FM_POLL_DONE:
        return FM_OK;
    case FM_POLL_MPI_ERROR:
        return fm_world_fail(e, mpi_rc, what);
    default:
        break;
    }
    char who[160];
    int missing = 0;
    if (size == 2 && w->size == 2) /* the world of two: then we know who */
        missing = snprintf(who, sizeof who, "rank %d", 1 - w->rank) > 0;
    else if (size == w->size)
        missing = missing_ranks(w, who, sizeof who);
    if (missing > 0)
        return fm_fail(e, FM_ERR_INTERNAL, "rank %d: %s: %s did not arrive within %.0f s (dist.timeout): %s stopped, "
                       "dead or far behind", w->rank, what, who, w->timeout_s, missing > 1 ? "they are" : "it is");
    return fm_fail(e, FM_ERR_INTERNAL,
                   "rank %d: %s: not every one of the %d ranks%s arrived within %.0f s (dist.timeout): a rank is "
                   "stopped, dead or far behind",
                   w->rank, what, size, scope, w->timeout_s);
}

/* Wait for a non-blocking collective of the world. */
static int wait_req(const fm_world *w, MPI_Request *req, const char *what, fm_err *e)
{
    return fm_world_wait(w, w->size, "", req, what, e);
}

void fm_world_finalize(fm_world *w)
{
    int fin = 0;
    MPI_Finalized(&fin);
    if (w->owns_mpi && !fin)
        MPI_Finalize();
    w->owns_mpi = 0;
}

/* In-place sum over ranks (bcast 0) or broadcast from rank 0 (bcast 1) of
 * n floats, in chunks of int counts. */
static int chunked(const fm_world *w, float *x, size_t n, int bcast, fm_err *e)
{
    const char *what = bcast ? "broadcast from rank 0" : "sum over the ranks (MPI_Iallreduce)";
    for (size_t off = 0; off < n && w->size > 1; off += MPI_CHUNK) {
        const int c = (int)(n - off < MPI_CHUNK ? n - off : MPI_CHUNK);
        MPI_Request req;
        int rc = bcast ? MPI_Ibcast(x + off, c, MPI_FLOAT, 0, MPI_COMM_WORLD, &req)
                       : MPI_Iallreduce(MPI_IN_PLACE, x + off, c, MPI_FLOAT, MPI_SUM, MPI_COMM_WORLD, &req);
        if (rc != MPI_SUCCESS)
            return fm_world_fail(e, rc, what);
        FM_TRY(wait_req(w, &req, what, e));
    }
    return FM_OK;
}

int fm_world_allreduce_sum(const fm_world *w, float *x, size_t n, fm_err *e) { return chunked(w, x, n, 0, e); }

int fm_world_allreduce_mean(const fm_world *w, float *x, size_t n, fm_err *e)
{
    if (w->size == 1)
        return FM_OK;
    FM_TRY(fm_world_allreduce_sum(w, x, n, e));
    float s = 1.0f / (float)w->size;
    for (size_t i = 0; i < n; i++)
        x[i] *= s;
    return FM_OK;
}

int fm_world_bcast(const fm_world *w, float *x, size_t n, fm_err *e) { return chunked(w, x, n, 1, e); }

int fm_world_sum(const fm_world *w, double *v, fm_err *e)
{
    if (w->size == 1)
        return FM_OK;
    MPI_Request req;
    int rc = MPI_Iallreduce(MPI_IN_PLACE, v, 1, MPI_DOUBLE, MPI_SUM, MPI_COMM_WORLD, &req);
    return rc == MPI_SUCCESS ? wait_req(w, &req, "sum over the ranks", e) : fm_world_fail(e, rc, "MPI_Iallreduce(sum)");
}

int fm_world_allgather(const fm_world *w, const double *mine, int n, double *all, fm_err *e)
{
    if (w->size == 1) {
        memmove(all, mine, (size_t)n * sizeof(double));
        return FM_OK;
    }
    MPI_Request req;
    int rc = MPI_Iallgather(mine, n, MPI_DOUBLE, all, n, MPI_DOUBLE, MPI_COMM_WORLD, &req);
    return rc == MPI_SUCCESS ? wait_req(w, &req, "allgather of per-rank values", e)
                             : fm_world_fail(e, rc, "MPI_Iallgather");
}

int fm_world_gather0(const fm_world *w, const float *mine, int n, float *all, fm_err *e)
{
    if (w->size == 1) {
        memmove(all, mine, (size_t)n * sizeof(float));
        return FM_OK;
    }
    MPI_Request req;
    int rc = MPI_Igather(mine, n, MPI_FLOAT, all, n, MPI_FLOAT, 0, MPI_COMM_WORLD, &req);
    return rc == MPI_SUCCESS ? wait_req(w, &req, "gather of per-rank values to rank 0", e)
                             : fm_world_fail(e, rc, "MPI_Igather");
}

int fm_world_same(const fm_world *w, const double *mine, int n, int *differs, fm_err *e)
{
    *differs = -1;
    double *all = malloc((size_t)w->size * n * sizeof *all);
    if (!all)
        return fm_fail(e, FM_ERR_INTERNAL, "rank %d: out of memory for %d ranks' values", w->rank, w->size);
    int rc = fm_world_allgather(w, mine, n, all, e);
    for (int r = 1; rc == FM_OK && r < w->size && *differs < 0; r++)
        if (memcmp(all + (size_t)r * n, all, (size_t)n * sizeof *all) != 0)
            *differs = r;
    free(all);
    return rc;
}

int fm_world_max_int(const fm_world *w, int *v, fm_err *e)
{
    if (w->size == 1)
        return FM_OK;
    MPI_Request req;
    int rc = MPI_Iallreduce(MPI_IN_PLACE, v, 1, MPI_INT, MPI_MAX, MPI_COMM_WORLD, &req);
    return rc == MPI_SUCCESS ? wait_req(w, &req, "agreement of the ranks (max)", e)
                             : fm_world_fail(e, rc, "MPI_Iallreduce(max)");
}

int fm_world_barrier(const fm_world *w, fm_err *e)
{
    if (w->size == 1)
        return FM_OK;
    MPI_Request req;
    int rc = MPI_Ibarrier(MPI_COMM_WORLD, &req);
    return rc == MPI_SUCCESS ? wait_req(w, &req, "barrier", e) : fm_world_fail(e, rc, "MPI_Ibarrier");
}

void fm_world_abort(const fm_world *w, int code)
{
    if (w->size > 1)
        MPI_Abort(MPI_COMM_WORLD, code);
}
