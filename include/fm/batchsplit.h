/* batchsplit.h - a list of nb batches computed by all ranks together, with
 * the results of one rank alone.
 *
 * Rank r of p takes batches r, r + p, r + 2p, ... (its slots 0, 1, 2, ...)
 * and computes each one exactly as a single rank computes it: the same rows
 * in the same batch of the same size, so a model whose output bits depend on
 * the batch it runs in (oneDNN picks kernels per batch size) still gives the
 * same bits for any p. fm_batches_gather then puts every batch's result back
 * in global order on rank 0, where statistics are taken over them in the
 * order one rank would take them. A list of one batch runs on rank 0 alone.
 *
 * Every rank takes part in each of the fm_batches_rounds(nb, p) rounds (a
 * rank with fewer batches idles in its last one), so that the ranks can agree
 * after each round (fm_batches_agree) on errors and stop signals instead of
 * waiting for a stopped rank until dist.timeout. */
#ifndef FM_BATCHSPLIT_H
#define FM_BATCHSPLIT_H

#include <stddef.h>

#include "fm/status.h"
#include "fm/world.h"

/* Rounds of a list of nb batches over size ranks: ceil(nb / size). */
static inline int fm_batches_rounds(int nb, int size) { return (nb + size - 1) / size; }
/* Batches rank `rank` of `size` computes out of nb. */
static inline int fm_batches_mine(int nb, int rank, int size) { return rank < nb ? (nb - 1 - rank) / size + 1 : 0; }
/* The global index of slot s of rank `rank` (a batch only if < nb). */
static inline int fm_batches_global(int s, int rank, int size) { return s * size + rank; }

/* all [nb, per] on rank 0 <- batch j = slot j / size of rank j % size, where
 * every rank's mine holds its fm_batches_mine batches, [mine, per] floats in
 * slot order. all is ignored (may be NULL) on the other ranks. Collective;
 * every wait is bounded by dist.timeout (fm_world_gather0). Every bit
 * arrives; only rank 0 receives (size · rounds · per floats). */
int fm_batches_gather(const fm_world *w, const float *mine, int nb, size_t per, float *all, fm_err *e);

/* The end of a round: every rank's status (rc, or FM_PREEMPTED when the
 * caller saw a stop signal) is shown to every rank. Returns rc when it is not
 * FM_OK and no other rank's is worse (status.h's precedence; the caller's own
 * message), the collective's error, or the worst other status (its first
 * rank R) with "<what>: rank R stopped with
 * status S (its message says why)" (for FM_PREEMPTED: "<what>: rank R was
 * stopped by a signal: run the same command again ..."). FM_OK when every
 * rank is. Collective. */
int fm_batches_agree(const fm_world *w, int rc, const char *what, fm_err *e);

#endif
