/* schedule.h - the per-step schedule the skeleton replays.
 *
 * Either fmtrain's RUN/schedule-<stage>.json (format "fmtrain-schedule-1",
 * written by src/train/steptrace.c) or a synthetic one. Times are
 * milliseconds; bucket hand-over times are relative to the start of backward
 * and non-decreasing. Buckets are in plan order (the order the communication
 * thread reduces them). All memory is owned by the schedule. */
#ifndef SIM_SCHEDULE_H
#define SIM_SCHEDULE_H

#include <stddef.h>

typedef struct sim_step {
    double forward_ms, backward_ms;                 /* compute */
    double clip_ms, adamw_ms, ema_ms, rest_ms;      /* local phases after the reduction */
    double *ready_ms;                               /* [nbuckets] hand-over of bucket k */
} sim_step;

typedef struct sim_schedule {
    int world;           /* ranks of the measured run */
    int zero;            /* the measured run used ZeRO-1 (its optimiser phases ran on 1/world) */
    double bucket_mb;    /* flow.bucket_mb of the measured run (or the synthetic bucket size) */
    double comm_ms_alone;
    int nbuckets;
    size_t *floats;      /* [nbuckets] */
    int nsteps;
    sim_step *steps;     /* [nsteps] */
    double *rank_compute_ms; /* [nsteps * world]: every rank's forward + backward */
} sim_schedule;

/* Read path (fmtrain-schedule-1). Returns 0, or -1 with a message in err
 * (err_len bytes) naming the file and the key. */
int sim_schedule_load(sim_schedule *s, const char *path, char *err, size_t err_len);

/* A communication-only schedule: nbuckets buckets of floats floats each, all
 * handed over at once, every other phase 0 ms. Returns 0 or -1 (err). */
int sim_schedule_synthetic(sim_schedule *s, size_t floats, int nbuckets, char *err, size_t err_len);

/* Merge neighbouring buckets (in plan order) while the merged one stays at or
 * under bucket_mb MiB, as fmtrain's planner would with that flow.bucket_mb; a
 * merged bucket is handed over when its last part is. Buckets already larger
 * stay whole (the schedule does not say where to split them). */
void sim_schedule_rebucket(sim_schedule *s, double bucket_mb);

size_t sim_schedule_max_bucket(const sim_schedule *s);
void sim_schedule_free(sim_schedule *s);

#endif
