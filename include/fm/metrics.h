/* metrics.h - the metrics log RUN/metrics.jsonl and the progress line.
 *
 * One JSON object per line, e.g.
 *   {"stage":"flow","step":1200,"loss":0.412300009,"lr":0.0003,"grad_norm":null,
 *    "time":"2026-12-04T10:20:31.123Z","elapsed_s":12.345}
 * (time: UTC when the line was written; elapsed_s: seconds since this
 * process opened the log, so a resumed run starts again from 0) written in one piece and flushed after each line, so a crash loses at most
 * the line being written. The file is opened for appending: a resumed run
 * continues it (steps redone after a resume appear twice; readers keep the
 * last line per (stage, step)). Written by rank 0 only. */
#ifndef FM_METRICS_H
#define FM_METRICS_H

#include <stdint.h>
#include <stdio.h>

#include "fm/status.h"

typedef struct fm_metrics {
    FILE *fp;              /* NULL: not open, logging is a no-op (ranks other than 0) */
    double t0;             /* fm_now() at open: elapsed_s counts from here */
    char path[4096];
    char line[8192];       /* the line being built: no allocation per call */
} fm_metrics;

/* Open path for appending (created if missing). If the file ends in a
 * partial line (a crash mid-write), a newline is added first so the next
 * line parses. Errors -> FM_ERR_IO naming the path. */
int fm_metrics_open(fm_metrics *m, const char *path, fm_err *e);

/* Append {"stage": stage, "step": step, keys[i]: values[i] ..., "time", "elapsed_s"}
 * and flush.
 * Numbers are written with %.9g (integral values below 1e15 exactly),
 * NaN and Inf as null. Does nothing if m is not open. A line longer than
 * the buffer -> FM_ERR_INTERNAL; a failed write -> FM_ERR_IO. */
int fm_metrics_log(fm_metrics *m, const char *stage, int64_t step, int n, const char *const *keys,
                   const double *values, fm_err *e);

/* Close (if open). A failed final flush -> FM_ERR_IO. */
int fm_metrics_close(fm_metrics *m, fm_err *e);

/* Duration as "45s", "3m12s" or "2h05m" (rounded to seconds; "?" if
 * negative or not finite). Returns buf. */
const char *fm_format_duration(double seconds, char *buf, int len);

/* What the progress line shows. */
typedef struct fm_progress {
    const char *stage;
    int64_t step, total;   /* steps done, steps of the stage */
    double loss;           /* the mean since the previous line */
    double images_per_s;
    double mfu;            /* fraction of the peak; NaN: unknown (not shown) */
    double eta_s;          /* the stage's remaining time */
    int stage_i, stage_n;  /* 1-based index among the run's stages; stage_n 0: no run part */
    double run_eta_s;      /* the run's remaining time (an estimate, see trainer.h) */
} fm_progress;

/* The human progress line, without newline:
 *   "flow  step 1200/6000  loss 0.4123  512 img/s  MFU 41%  ETA 3m12s  stage 3/5, run ETA 9m40s"
 * Returns buf. */
const char *fm_progress_format(char *buf, int len, const fm_progress *p);

#endif
