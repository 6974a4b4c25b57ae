/* steptrace.h - the per-step schedule of a training stage, for a simulator.
 *
 * For a window of steps the trainer records, on every rank, when each phase of
 * the step ended, and from the gradient sync when each bucket was handed to
 * the communication thread and when its reduction started and ended; every
 * rank's compute time comes from the step's statistics allgather. Rank 0
 * writes the window as JSON (fm_steptrace_write): what jobs/simulate replays
 * (compute segments between bucket starts, bucket sizes in start order, the
 * optimiser's phases, the collectives). Times are milliseconds; bucket times
 * are relative to the start of backward.
 *
 * All memory is taken at init; recording never allocates. */
#ifndef FM_STEPTRACE_H
#define FM_STEPTRACE_H

#include <stdint.h>

#include "fm/gradsync.h"
#include "fm/status.h"

/* Phase ends of one step, fm_now() seconds (0 = the phase did not run). */
typedef struct fm_steptrace_marks {
    double begin, backward, compute_end, reduced, stats, clip, adamw, ema, param_allgather, end;
} fm_steptrace_marks;

typedef struct fm_steptrace_step {
    int64_t step;
    fm_steptrace_marks m;
    int nbuckets;
    double *ready_ms, *reduce0_ms, *reduce1_ms; /* [nbuckets], relative to m.backward */
    double *rank_compute_ms;                    /* [world] */
} fm_steptrace_step;

typedef struct fm_steptrace {
    int cap, n;          /* steps recorded so far, of cap */
    int world;
    int max_buckets;
    fm_steptrace_step *steps;
    double *pool;        /* the steps' arrays */
} fm_steptrace;

/* Room for cap steps of up to max_buckets buckets on world ranks. */
int fm_steptrace_init(fm_steptrace *s, int cap, int max_buckets, int world, fm_err *e);
void fm_steptrace_free(fm_steptrace *s);

/* Record one step: its marks, the sync's bucket times of its last round, and
 * the ranks' (loss, compute ms, wait ms) triples of the step statistics.
 * No-op when full. */
void fm_steptrace_add(fm_steptrace *s, int64_t step, const fm_steptrace_marks *m, const fm_gradsync *gs,
                      const double *gathered);

/* What the JSON says besides the steps. */
typedef struct fm_steptrace_info {
    const char *stage, *model;
    int world, threads, zero;
    int64_t global_batch;
    double bucket_mb, flops_per_step, comm_ms;
    size_t params;
} fm_steptrace_info;

/* Write the recorded steps and the bucket plan of gs to path as JSON
 * (atomically: a temporary file renamed). FM_ERR_IO naming the file. */
int fm_steptrace_write(const fm_steptrace *s, const fm_steptrace_info *info, const fm_gradsync *gs,
                       const char *path, fm_err *e);

#endif
