/* rng.h - counter-based random numbers (Philox-4x32-10, Salmon et al. 2011).
 *
 * A random number is a pure function of (seed, stream, index): no state is
 * carried between calls, so any sample's noise can be recomputed on any rank,
 * in any order, after any resume. `stream` separates independent uses
 * (e.g. the noise of step s for sample i: stream = s, index = i * k + j). */
#ifndef FM_RNG_H
#define FM_RNG_H

#include <stdint.h>

/* The raw block: four 32-bit words for counter (stream, index), key seed. */
void fm_philox4x32(uint64_t seed, uint64_t stream, uint64_t index, uint32_t out[4]);

/* Uniform in [0, 1) with 24 random bits. */
float fm_rand_uniform(uint64_t seed, uint64_t stream, uint64_t index);

/* Standard normal (Box-Muller on one Philox block). */
float fm_rand_normal(uint64_t seed, uint64_t stream, uint64_t index);

/* Fill x[0..n) with N(0,1) (or U[0,1)) values for indices first..first+n-1. */
void fm_fill_normal(float *x, long n, uint64_t seed, uint64_t stream, uint64_t first);
void fm_fill_uniform(float *x, long n, uint64_t seed, uint64_t stream, uint64_t first);

/* Uniform integer in [0, n), n > 0. */
uint32_t fm_rand_below(uint32_t n, uint64_t seed, uint64_t stream, uint64_t index);

/* A permutation of 0..n-1 that depends only on (seed, stream): Fisher-Yates
 * with Philox draws. */
void fm_permutation(uint32_t *perm, uint32_t n, uint64_t seed, uint64_t stream);

#endif
