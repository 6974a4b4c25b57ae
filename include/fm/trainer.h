/* trainer.h - what every trained stage (vae, flow, classifier) does around its
 * model's forward and backward: gradient averaging over ranks, clipping, the
 * non-finite guard, AdamW on the scheduled learning rate, EMA, metrics, the
 * progress line, and checkpoints (save every K steps and at the end; resume
 * from the newest valid one).
 *
 * A stage's loop:
 *     fm_trainer_resume(&t, e);                 // t.step = first step to run
 *     for (; t.step < t.tc->steps; ) {
 *         fm_trainer_begin(&t);
 *         ... load the batch of step t.step, forward, loss, backward (grads in params->grad) ...
 *         fm_trainer_end(&t, local_loss, e);    // averages, updates, logs, checkpoints; t.step++
 *     }
 * A model with a grad hook (unet, dit) installs fm_gradsync_ready with ctx
 * &t.sync so that gradient buckets are reduced during backward (gradsync.h);
 * the bucket size is flow.bucket_mb for every stage.
 * Only rank 0 writes (metrics, checkpoints); every rank runs the same updates.
 *
 * Timing keys of each metrics line (means over the steps since the previous
 * line; milliseconds): step_ms (whole step), compute_ms (begin to the end of
 * backward, including poll_ms), poll_ms (MPI calls made from the grad hooks),
 * allreduce_ms (blocked after backward until gradients and loss are
 * averaged), inflight_ms (first bucket start to last bucket completion),
 * comm_ms (the same buckets reduced alone, after a barrier: the
 * communication there is to hide; the best of the probes taken at init, at
 * the first 8 logged steps and every 100 steps, see fm_gradsync_probe) and
 * hidden_frac = 1 - allreduce_ms / comm_ms clamped to [0, 1] (0 with one
 * rank: nothing to hide). allreduce_ms also holds waiting for a slower rank:
 * imbalance_ms is the slowest rank's compute_ms minus rank 0's (per step,
 * then averaged), so on a busy machine hidden_frac
 * understates the overlap. Timing keys are rank 0's.
 *
 * The other keys: loss is the step's loss (averaged over the ranks), and
 * loss_mean its mean over the steps since the previous line (the progress
 * line shows loss_mean); gflops is rank 0's forward+backward FLOPs of its
 * share of the batch over compute_ms (GFLOP/s of one rank; the job's is
 * world_size times it); mfu is the same FLOPs over step_ms divided by
 * run.peak_gflops (measured at start when that is 0: pipeline.c); world_size the number of ranks;
 * time and elapsed_s are added by fm_metrics_log (metrics.h). The progress
 * line adds the stage's place in run.stages and the run's ETA: this stage's
 * ETA plus the images of the later trained stages (vae, flow, the eval
 * classifier) at this stage's images/s, a rough estimate.
 *
 * Per-layer profile (run.profile_steps, fm_trainer_profile_init): after
 * fm_trainer_begin, t.prof is the profile table while the step is in the
 * profiled window (else NULL); the stage hands it to its model
 * (fm_flow_model_set_profile) and times its own parts of the step into it
 * under scope "step" (FM_PROF_STEP: "data", "cfm_batch", "mse");
 * fm_trainer_end adds "allreduce" (fm_gradsync_finish), "allgather",
 * "clip", "adamw", "ema", "log", "comm_probe", "ckpt" and "stop_check". */
#ifndef FM_TRAINER_H
#define FM_TRAINER_H

#include <stdint.h>

#include "fm/ckpt.h"
#include "fm/config.h"
#include "fm/ema.h"
#include "fm/gradsync.h"
#include "fm/steptrace.h"
#include "fm/metrics.h"
#include "fm/optim.h"
#include "fm/params.h"
#include "fm/profile.h"
#include "fm/schedule.h"
#include "fm/status.h"
#include "fm/world.h"

#define FM_TRAINER_MAX_EXTRA 4
#define FM_TRAINER_PROFILE_WARMUP 3  /* steps of a run before its profiled window */
#define FM_TRAINER_PROFILE_CAP 4096  /* entries of the profile table (a U-Net has a few hundred) */
#define FM_TRAINER_PROFILE_ROWS 40   /* rows of the by-layer table in the report */

typedef struct fm_trainer {
    const char *stage;            /* "vae", "flow", "classifier": names checkpoints and metrics */
    const fm_train_config *tc;
    const fm_config *cfg;
    const fm_world *world;
    const char *config_text;      /* resolved YAML, stored in checkpoint metadata */
    fm_params *params;
    fm_metrics *metrics;          /* open on rank 0 only */
    fm_adamw opt;                 /* under ZeRO-1 m and v hold this rank's shard (sync.shard), packed */
    fm_ema ema[FM_EMA_MAX];       /* the same for each EMA, one per rate of flow.ema_decay */
    int nema;                     /* EMAs kept (0: none) */
    int use_ema;                  /* nema > 0 */
    char ema_prefix[FM_EMA_MAX][32]; /* checkpoint prefix of each (fm_ema_prefix) */
    fm_lr_schedule sched;
    int64_t step;                 /* the next step to run */
    int global_batch;
    double flops_per_step;        /* forward+backward FLOPs of one rank's share of a global batch (0 = unknown) */
    int max_bad_steps;            /* stop after this many consecutive non-finite steps */
    int bad_steps;
    fm_ckpt_extra extra[FM_TRAINER_MAX_EXTRA]; /* extra tensors saved with each checkpoint */
    int nextra;
    fm_gradsync sync;             /* bucketed gradient averaging over the ranks */
    int poison;                   /* test-only: this step's gradient turns NaN (run.fault_nan_steps) */
    /* timing of the current step and of the run */
    double t_begin, t_compute_end, t_start;
    double *gathered;             /* [world size * 3]: every rank's (loss, compute ms, ms waited after its own
                                     backward) of the step */
    double win[7];                /* sums since the last metrics line: step, compute, allreduce, poll, inflight,
                                     imbalance, exposed ms */
    double win_loss;              /* sum of the step losses since the last metrics line */
    int win_n;
    int64_t step_at_start;
    double last_loss, last_grad_norm, last_lr, last_step_ms;
    /* per-layer profile (fm_trainer_profile_init) */
    fm_profile *prof;             /* &prof_table while the current step is profiled, else NULL */
    fm_profile prof_table;        /* allocated by fm_trainer_profile_init */
    int prof_steps;               /* steps to profile; 0 = off */
    int prof_done;                /* steps profiled so far */
    int64_t prof_first;           /* the window's first step (set at the run's first step) */
    fm_steptrace trace;           /* the schedule window (run.schedule_steps): steptrace.h */
    int trace_steps, tracing;
    fm_steptrace_marks marks;     /* this step's phase ends when tracing */
    double prof_wall;             /* wall time of the profiled steps, s (begin to the end of fm_trainer_end) */
} fm_trainer;

/* params must hold every parameter of the model. ema_decay (NULL: none)
 * keeps one EMA per rate, all updated in one pass each step. Weight decay is
 * off for 1-D tensors and embedding tables. */
int fm_trainer_init(fm_trainer *t, const char *stage, const fm_train_config *tc, const fm_config *cfg,
                    const char *config_text, const fm_world *w, fm_params *params, fm_metrics *metrics,
                    const fm_flist *ema_decay, int ema_warmup, fm_err *e);
void fm_trainer_free(fm_trainer *t);

/* Add an extra fp32 tensor saved with (and restored from) each checkpoint. */
int fm_trainer_add_extra(fm_trainer *t, const char *name, float *data, int n, fm_err *e);

/* Broadcast rank 0's initial parameters, then load the newest valid
 * checkpoint of the stage if there is one (weights, EMA, moments, step,
 * extras). Sets t->step. */
int fm_trainer_resume(fm_trainer *t, fm_err *e);

/* Profile `steps` training steps per layer (0 = off; the default): allocates
 * the table now, the only allocation. The window opens
 * FM_TRAINER_PROFILE_WARMUP steps after the first step this run executes (so
 * after a resume too) and closes after `steps` steps or at the stage's last
 * step; then rank 0 prints the table by kind and the top
 * FM_TRAINER_PROFILE_ROWS rows by layer to stderr, with shares of the
 * measured wall time of those steps, and writes the same to
 * <run.out>/profile-<stage>.txt and both tables to profile-<stage>.json
 * (atomically; a failure to write is a warning). Every rank times the same
 * steps and makes the same collective calls as without profiling. */
int fm_trainer_profile_init(fm_trainer *t, int steps, fm_err *e);

/* Start step t->step: timers, gradient buckets; t->prof for this step. */
void fm_trainer_begin(fm_trainer *t);
/* After backward: average gradients and loss over ranks, clip, skip the
 * update if anything is non-finite, AdamW + EMA, log, checkpoint. */
int fm_trainer_end(fm_trainer *t, double local_loss, fm_err *e);

/* Record the schedule of `steps` steps (after the same warm-up as the
 * profile) into RUN/schedule-<stage>.json (steptrace.h); 0 = off. */
int fm_trainer_trace_init(fm_trainer *t, int steps, fm_err *e);
/* The model's backward starts now (splits forward from backward in the
 * schedule; call it between forward and backward). */
void fm_trainer_backward_begins(fm_trainer *t);

/* The EMA weights, whole, into dst [params->numel] on every rank: with
 * ZeRO-1 (dist.zero) every rank's shard allgathered (collective), else a
 * copy. dst may be params->grad between steps (the gradient is spent). */
int fm_trainer_ema_whole(fm_trainer *t, int k, float *dst, fm_err *e);
/* The index of the EMA of decay `rate`, or -1. */
int fm_trainer_ema_index(const fm_trainer *t, double rate);
/* Write a checkpoint of the current state now (collective: every rank calls
 * it; rank 0 writes). With ZeRO-1 every rank's shard of m, v and the EMAs goes
 * to rank 0, which holds the whole state only while it writes: the first EMA
 * in params->grad (so call it between steps), m, v and any further EMA in a
 * buffer it frees afterwards.
 * Resume: the first EMA is read from "ema.", every further rate from its
 * "ema@<rate>." tensors; a rate the checkpoint lacks (written with fewer rates)
 * starts from the resumed weights, logged. */
int fm_trainer_save(fm_trainer *t, fm_err *e);

#endif
