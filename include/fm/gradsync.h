/* gradsync.h - data-parallel gradient averaging in buckets, overlapped with
 * backward.
 *
 * The parameter tensors of an fm_params are grouped into buckets of about
 * bucket_bytes, in the order backward finishes their gradients (the model's
 * grad hook order; until the first step has shown it, the reverse of
 * registration order; the U-Net's and the DiT's differ from that). A bucket
 * whose tensors are neighbours in the arena is one contiguous range of
 * p->grad, reduced in place; any other bucket is packed into a staging buffer
 * and unpacked after the reduction. A bucket holds at most bucket_bytes,
 * except a bucket made of one tensor larger than that.
 *
 * Per step:
 *     fm_gradsync_begin(&gs);
 *     ... backward; the model's grad hook calls fm_gradsync_ready(&gs, first, n, e)
 *         each time tensors p->items[first .. first+n) are final: a bucket whose
 *         last tensor turns final starts its MPI_Iallreduce, and every hook call
 *         polls the open requests (Open MPI 4.1 progresses non-blocking
 *         collectives only inside MPI calls) ...
 *     fm_gradsync_finish(&gs, e);   // the rest final, wait for all, scale by 1/world
 * A model without hooks just calls finish: one reduction of every bucket, no
 * overlap. With one rank no MPI call is made.
 *
 * The first step also records the hook order; if planning in that order gives
 * other buckets, they replace the plan (once, after that step: the only
 * allocation after init).
 *
 * Timing of the last step (fm_gradsync.last), all wall-clock milliseconds:
 *   poll_ms      inside MPI calls (and packing) made from the hooks during backward
 *   wait_ms      in finish: starting the remaining buckets, waiting, unpacking, scaling
 *   inflight_ms  from the first bucket's start to the observed completion of the last
 * and comm_ms: the same buckets reduced with nothing else running (after a
 * barrier, every bucket's MPI_Iallreduce started at once, then MPI_Waitall):
 * the communication the overlap tries to hide. It is the minimum over the
 * probes taken at init and whenever the caller asks (the trainer: at logged
 * steps), so that a probe slowed down by a descheduled rank does not stick.
 * hidden share = 1 - wait_ms / comm_ms. */
#ifndef FM_GRADSYNC_H
#define FM_GRADSYNC_H

#include <stddef.h>
#include <stdint.h>

#include "fm/params.h"
#include "fm/status.h"
#include "fm/world.h"

typedef struct fm_gs_bucket {
    size_t off, count; /* floats: p->grad[off ..) when contiguous, staging[off ..) when packed */
    int packed;
    int seg0, nseg;    /* packed: its arena pieces segs[seg0 .. seg0 + nseg) */
    int pos0, ntensors; /* its tensors: order[pos0 .. pos0 + ntensors) */
} fm_gs_bucket;

typedef struct fm_gs_seg {
    size_t off, count; /* floats of p->grad */
} fm_gs_seg;

typedef struct fm_gs_plan {
    int ntensors;          /* p->n */
    int *order;            /* [ntensors] tensor indices in reduction order */
    int *bucket_of;        /* [ntensors] tensor index -> bucket */
    fm_gs_bucket *buckets; /* [nbuckets] in start order */
    int nbuckets;
    fm_gs_seg *segs;       /* [nsegs] pieces of the packed buckets */
    int nsegs;
    size_t packed_floats;  /* staging the packed buckets need */
    size_t max_bucket;     /* floats of the largest bucket */
} fm_gs_plan;

/* Plan buckets of at most bucket_bytes (> 0) over the tensors of p taken in
 * `order` (a permutation of 0 .. p->n-1; NULL = p->n-1 down to 0). A tensor
 * spans its padded extent (up to the next tensor's offset), so contiguous
 * buckets tile the arena. FM_ERR_USAGE if order is not a permutation,
 * FM_ERR_INTERNAL if a bucket exceeds INT_MAX floats or out of memory. */
int fm_gs_plan_build(fm_gs_plan *pl, const fm_params *p, const int *order, size_t bucket_bytes, fm_err *e);
void fm_gs_plan_free(fm_gs_plan *pl);

typedef struct fm_gs_timing {
    double poll_ms, wait_ms, inflight_ms;
} fm_gs_timing;

typedef struct fm_gradsync {
    const fm_world *world;
    fm_params *p;
    size_t bucket_bytes;
    fm_gs_plan plan;
    float *staging;       /* [plan.packed_floats] */
    void *reqs;           /* MPI_Request [ntensors]: one per bucket */
    int *pending;         /* [ntensors]: per bucket, tensors not yet final this step */
    uint8_t *final;       /* [ntensors]: tensor final this step */
    int *rec;             /* [ntensors]: hook order seen in the first step */
    int nrec, recording;
    int nstarted, ndone;
    int poison;           /* test-only: make grad[0] NaN before it is reduced */
    double t_first, t_last; /* this step: first start, last completion (s) */
    double poll_s;
    fm_gs_timing last;
    double comm_ms;       /* best probe so far (0 with one rank) */
    int nprobes;
} fm_gradsync;

/* Plan with the default order and, with more than one rank, take 3 probes
 * (collective: every rank calls it; see fm_gradsync_probe). */
int fm_gradsync_init(fm_gradsync *gs, const fm_world *w, fm_params *p, size_t bucket_bytes, fm_err *e);
void fm_gradsync_free(fm_gradsync *gs);

/* reps times: barrier, start every bucket's reduction, wait for all; keeps
 * the fastest in comm_ms. Collective. It sums p->grad over the ranks in
 * place, so the gradient is garbage afterwards (padding stays zero): call it
 * between steps, after the update. No-op with one rank. */
int fm_gradsync_probe(fm_gradsync *gs, int reps, fm_err *e);

/* A new step: nothing final, nothing in flight. */
void fm_gradsync_begin(fm_gradsync *gs);
/* Test-only fault injection for this step: p->grad[0] is set to NaN just
 * before the bucket holding it is reduced (so the reduction spreads it). */
void fm_gradsync_poison(fm_gradsync *gs);
/* Grad-hook callback (the fm_unet_grad_hook / fm_dit_grad_hook type; ctx is
 * the fm_gradsync): p->items[first .. first+n) are final. Starts every bucket
 * this completes and polls the open ones. Reporting a tensor twice is harmless. */
int fm_gradsync_ready(void *ctx, int first, int n, fm_err *e);
/* Every tensor is final: start the remaining buckets, wait for all, unpack,
 * scale the whole gradient by 1/world. Afterwards p->grad holds the mean over
 * ranks and gs->last the step's timing. */
int fm_gradsync_finish(fm_gradsync *gs, fm_err *e);

#endif
