/* peak.h - the fp32 (and bf16) GFLOP/s this process reaches, measured.
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

/* The same for bf16 operands with fp32 accumulation, the products of
 * run.precision: bf16: the best of `reps` oneDNN matmuls of n x n x n (bf16
 * A and B, f32 C) after one warm-up, on an engine of its own. */
int fm_peak_matmul_bf16(int n, int reps, double *gflops, fm_err *e);

#endif
