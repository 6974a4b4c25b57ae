/* ring.h - bandwidth-optimal collectives on float arrays, written with
 * point-to-point calls: a ring reduce-scatter and a ring allgather, and the
 * allreduce made of the two.
 *
 * Rank r sends to r+1 and receives from r-1 (mod p). A buffer of n floats is
 * cut into p chunks, chunk c = [fm_ring_chunk_off(n, p, c), fm_ring_chunk_off(n,
 * p, c + 1)). Each rank sends and receives 2·(p-1)/p · n floats in 2·(p-1)
 * rounds, whatever p: about 2·n bytes on the critical path where a binomial
 * reduce + broadcast (libnbc's in-place MPI_Iallreduce) moves 2·log2(p)·n.
 *
 * Results: after the reduce-scatter, rank r's chunk r holds the sum over ranks,
 * added in ring order starting at rank r+1 (((x[r+1] + x[r+2]) + ...) + x[r]);
 * the allgather copies every owner's chunk to every rank, so all ranks end
 * with the same bits. With two ranks each element is x[0] + x[1] (one addition,
 * commutative), the bits MPI_Allreduce gives.
 *
 * Waiting is a yielding poll (MPI_Testall, sched_yield, then short sleeps; or
 * sleeps of poll_sleep_s between tests when the caller sets it, e.g. for a
 * real-time thread), so an oversubscribed node is not eaten by busy-waiting
 * ranks, and it has a deadline: a peer that sends nothing within timeout_s
 * ends the call with FM_ERR_INTERNAL naming it (by world rank, whatever the ring's
 * communicator) and the context string (e.g.
 * "flow step 12, gradient bucket 3"). Not thread-safe: one thread drives one fm_ring. */
#ifndef FM_RING_H
#define FM_RING_H

#include <mpi.h>
#include <stddef.h>

#include "fm/status.h"

typedef struct fm_ring {
    MPI_Comm comm;    /* a duplicate of the world communicator, owned */
    int rank, size, left, right; /* in comm */
    int *world;       /* [size] the world rank of each member (error messages name world ranks) */
    double timeout_s; /* deadline of one wait (> 0) */
    double poll_sleep_s; /* 0: the yielding poll; > 0: sleep this long between tests (fm_world_poll) */
    float *tmp;       /* receive buffer of the reduce-scatter: the largest chunk */
    size_t tmp_cap;   /* floats */
    const char *what; /* context for error messages (may be NULL) */
} fm_ring;

/* Duplicate `comm` (collective over it) and take a receive buffer for
 * chunks of buffers up to max_count floats. */
int fm_ring_init(fm_ring *r, MPI_Comm comm, size_t max_count, double timeout_s, fm_err *e);
void fm_ring_free(fm_ring *r);

/* Start of chunk c (0 <= c <= p) of n floats over p ranks: n·c/p, rounded down. */
static inline size_t fm_ring_chunk_off(size_t n, int p, int c)
{
    return (size_t)((unsigned __int128)n * (unsigned)c / (unsigned)p);
}

/* In place over x [n] (n <= INT_MAX·p): afterwards chunk `rank` of x on
 * every rank is the sum over ranks, multiplied by `scale` (1 = plain sum);
 * the other chunks are garbage. tag separates concurrent calls' messages. */
int fm_ring_reduce_scatter(fm_ring *r, float *x, size_t n, float scale, int tag, fm_err *e);
/* In place over x [n]: every rank's chunk `rank` is copied to all ranks. */
int fm_ring_allgather(fm_ring *r, float *x, size_t n, int tag, fm_err *e);
/* Point-to-point on the ring's communicator with the same yielding,
 * deadline-bounded wait (the receive must be posted for exactly n floats). */
int fm_ring_send(fm_ring *r, const float *x, size_t n, int to, int tag, fm_err *e);
int fm_ring_recv(fm_ring *r, float *x, size_t n, int from, int tag, fm_err *e);
/* reduce-scatter then allgather: every rank ends with scale · sum, bitwise equal. */
int fm_ring_allreduce(fm_ring *r, float *x, size_t n, float scale, int tag, fm_err *e);

#endif
