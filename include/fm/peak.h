/* peak.h - the fp32 GFLOP/s this process reaches, measured.
 *
 * fm_peak_sgemm: the best of `reps` oneDNN sgemm calls of n x n x n (after
 * one untimed warm-up) on the process's OpenMP threads. `make bench`
 * (tests/bench/bench_peak.c) uses it at n = 2048; a run whose run.peak_gflops
 * is 0 measures its mfu denominator with it once at start (pipeline.c, rank 0,
 * n = 1024, best of 10: about 0.15 s). */
#ifndef FM_PEAK_H
#define FM_PEAK_H

#include "fm/status.h"

int fm_peak_sgemm(int n, int reps, double *gflops, fm_err *e);

#endif
