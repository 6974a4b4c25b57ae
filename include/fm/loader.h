/* loader.h - global batches drawn from a per-epoch permutation, sharded over ranks.
 *
 * Sample k of the global batch at step s sits at stream position g = s*B + k;
 * its epoch is g / n and its dataset row perm_epoch[g % n], where perm_epoch
 * depends only on (seed, epoch). Rank r of R takes rows [r*B/R, (r+1)*B/R) of
 * every global batch. So the data order is a pure function of (seed, step):
 * it does not depend on the rank count, and resuming at step s needs nothing
 * but s. g is also the "global sample index" that keys each sample's noise. */
#ifndef FM_LOADER_H
#define FM_LOADER_H

#include <stdint.h>

#include "fm/status.h"

typedef struct fm_loader {
    const float *x;        /* [n, d] rows */
    const int32_t *y;      /* [n] labels (may be NULL) */
    int n, d;
    int global_batch, rank, world;
    int local_batch, local_first;  /* this rank's rows of each global batch */
    uint64_t seed;
    uint32_t *perm[2];     /* permutations of two consecutive epochs */
    int64_t perm_epoch[2]; /* which epoch each buffer holds, -1 = none */
} fm_loader;

/* The global batch must split evenly over the ranks (error names both numbers). */
int fm_loader_init(fm_loader *l, const float *x, const int32_t *y, int n, int d, int global_batch, int rank,
                   int world, uint64_t seed, fm_err *e);
void fm_loader_free(fm_loader *l);

/* This rank's rows of global batch `step`: x_out [local_batch, d], y_out
 * [local_batch] (if non-NULL), gidx_out [local_batch] global sample indices
 * (if non-NULL). No allocation: permutations are recomputed in place when the
 * stream crosses into a new epoch. */
void fm_loader_batch(fm_loader *l, int64_t step, float *x_out, int32_t *y_out, uint64_t *gidx_out);

/* Epoch of the first sample of global batch `step`. */
int64_t fm_loader_epoch(const fm_loader *l, int64_t step);

#endif
