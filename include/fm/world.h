/* world.h - the MPI world as the trainer sees it: rank, size, and the
 * collectives the stages use. Every call returns a status; MPI errors are
 * returned (MPI_ERRORS_RETURN), not fatal, so main decides how to stop. */
#ifndef FM_WORLD_H
#define FM_WORLD_H

#include <stddef.h>

#include "fm/status.h"

#define FM_WORLD_TIMEOUT_DEFAULT 600.0 /* s, until the config's dist.timeout is known */

typedef struct fm_world {
    int rank, size;
    int owns_mpi;     /* this process called MPI_Init */
    double timeout_s; /* the longest any collective below waits for the other ranks */
} fm_world;

int fm_world_init(fm_world *w, int *argc, char ***argv, fm_err *e);
/* The deadline of every collective below (dist.timeout); seconds > 0. The
 * collectives are non-blocking calls waited for in a loop that yields the
 * core, and that ends with FM_ERR_INTERNAL naming the operation when the
 * other ranks do not all arrive in time. */
void fm_world_set_timeout(fm_world *w, double seconds);
void fm_world_finalize(fm_world *w);

/* In-place sum over ranks, then scale by `scale` (1/size for a mean). */
int fm_world_allreduce_mean(const fm_world *w, float *x, size_t n, fm_err *e);
/* In-place sum over ranks of n floats, every rank gets the result. */
int fm_world_allreduce_sum(const fm_world *w, float *x, size_t n, fm_err *e);
/* Broadcast n floats from rank 0. */
int fm_world_bcast(const fm_world *w, float *x, size_t n, fm_err *e);
/* Sum of one double over ranks. */
int fm_world_sum(const fm_world *w, double *v, fm_err *e);
/* Every rank's n doubles, in rank order: all [size * n]. */
int fm_world_allgather(const fm_world *w, const double *mine, int n, double *all, fm_err *e);
/* Every rank's n floats to rank 0, in rank order: all [size * n] on rank 0
 * (not touched elsewhere, may be NULL there). The bits arrive unchanged. */
int fm_world_gather0(const fm_world *w, const float *mine, int n, float *all, fm_err *e);
/* Whether every rank holds rank 0's n doubles (e.g. the size and checksum of
 * a file each node read on its own): *differs = the first rank that does
 * not, or -1. Collective; every rank gets the same answer. */
int fm_world_same(const fm_world *w, const double *mine, int n, int *differs, fm_err *e);
/* Max of one int over ranks (agreement on flags such as "stop now"). */
int fm_world_max_int(const fm_world *w, int *v, fm_err *e);
int fm_world_barrier(const fm_world *w, fm_err *e);
/* Poll req[0 .. n) until all are complete, yielding the core (sched_yield,
 * then short sleeps: oversubscribed ranks must not spin; or, with sleep_s >
 * 0, tests without pause for 50 us, then sleeps between tests, 10 us doubling
 * up to sleep_s: a thread that preempts the compute threads whenever it wakes,
 * such as a real-time one, to which sched_yield gives nothing back), for at
 * most timeout_s seconds.
 * FM_POLL_DONE; FM_POLL_TIMEOUT with *open the index of the first request
 * still open (the caller cancels or frees them); or FM_POLL_MPI_ERROR with
 * MPI's code in *mpi_rc. */
enum { FM_POLL_DONE, FM_POLL_TIMEOUT, FM_POLL_MPI_ERROR };
#ifdef MPI_VERSION
int fm_world_poll(MPI_Request *req, int n, double timeout_s, double sleep_s, int *open, int *mpi_rc);
/* Wait for one non-blocking call on a communicator of size ranks (the world,
 * or "scope" such as " of this node") for at most w->timeout_s; the error
 * names the operation (what) and the ranks that were waited for. */
int fm_world_wait(const fm_world *w, int size, const char *scope, MPI_Request *req, const char *what, fm_err *e);
#endif
/* FM_ERR_INTERNAL "<what> failed: <MPI's message for mpi_rc>". */
int fm_world_fail(fm_err *e, int mpi_rc, const char *what);
/* Stop every rank (after an error on one of them). */
void fm_world_abort(const fm_world *w, int code);

#endif
