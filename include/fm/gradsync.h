/* gradsync.h - data-parallel gradient averaging in buckets, reduced by a
 * communication thread while backward computes.
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
 * With more than one rank, each rank runs one communication thread (created at
 * init, MPI_THREAD_SERIALIZED or better required). It reduces the buckets in
 * plan order, each as soon as backward has handed it over, by a ring
 * reduce-scatter + allgather (ring.h: about 2·n bytes per rank whatever the rank
 * count, every rank ending with the same bits) on its own duplicate of the
 * world communicator; it also unpacks packed buckets and scales by 1/world.
 * The thread progresses the reduction by itself (MPI calls in a yielding poll),
 * so overlap does not depend on how often backward calls the hook. While a
 * step's buckets are in flight the calling thread makes no MPI call; finish
 * waits for the thread. Every wait has a deadline (timeout_s): a rank that does
 * not arrive ends the step with an error naming it.
 *
 * Hierarchical (node-aware) reduction (hier_mode, dist.hierarchical): with
 * ranks on several nodes of L > 1 ranks each, each bucket is reduce-scattered
 * by a ring inside the node (local rank l holds the node's sum of chunk l of
 * L), chunk l is ring-allreduced across the nodes among the ranks of local
 * rank l (L rings at once, every node's link carrying L streams), then
 * allgathered inside the node. Each node sends 2·(N-1)/N·n floats across
 * nodes per bucket of n (N nodes) where the flat ring, with the nodes'
 * ranks consecutive, sends 2·(p-1)/p·n over its one link out of each node:
 * (N-1)/N · p/(p-1) of the flat ring's inter-node bytes (2/3 for 2 x 2).
 * The sums are taken in another order than the flat ring's (equal up to
 * rounding), all ranks still ending with the same bits. FM_GS_HIER_AUTO takes
 * it when there are > 1 nodes and > 1 ranks per node, all nodes equal, so a
 * single node reduces exactly as before; FM_GS_HIER_ON whenever the nodes are
 * equal (an error otherwise); FM_GS_HIER_OFF never. ZeRO-1's reduce-scatter and
 * the parameter allgather keep the flat ring (its shards are the flat
 * ring's chunks), whatever the mode. Nodes are found as shared.h does
 * (FMTRAIN_RANKS_PER_NODE fakes them for tests).
 *
 * Per step:
 *     fm_gradsync_begin(&gs);
 *     ... backward; the model's grad hook calls fm_gradsync_ready(&gs, first, n, e)
 *         each time tensors p->items[first .. first+n) are final: a bucket whose
 *         last tensor turns final is packed (if it must be) and handed to the thread ...
 *     fm_gradsync_finish(&gs, e);   // the rest handed over; wait for the thread
 * A model without hooks just calls finish: every bucket reduced then, no
 * overlap. With one rank there is no thread and no MPI call.
 *
 * The first step also records the hook order; if planning in that order gives
 * other buckets, they replace the plan (once, after that step: the only
 * allocation after init).
 *
 * Timing of the last step (fm_gradsync.last), all wall-clock milliseconds:
 *   poll_ms      in the hooks during backward (packing and handing over)
 *   wait_ms      in finish: handing over the rest, waiting for the thread
 *   inflight_ms  from the thread's start of the first bucket to the end of the last
 * and comm_ms: the same buckets reduced with nothing else running (after a
 * barrier, every bucket handed over at once): the communication the overlap
 * tries to hide. It is the minimum over the probes taken at init and whenever
 * the caller asks (the trainer: at logged steps), so that a probe slowed down
 * by a descheduled rank does not stick. hidden share = 1 - wait_ms / comm_ms. */
#ifndef FM_GRADSYNC_H
#define FM_GRADSYNC_H

#include <stddef.h>
#include <stdint.h>

#include "fm/commsched.h"
#include "fm/params.h"
#include "fm/status.h"
#include "fm/world.h"

typedef enum fm_gs_hier { FM_GS_HIER_AUTO, FM_GS_HIER_ON, FM_GS_HIER_OFF } fm_gs_hier;

typedef struct fm_gs_bucket {
    size_t off, count; /* floats: p->grad[off ..) when contiguous, staging[off ..) when packed */
    int packed;
    int seg0, nseg;    /* packed: its arena pieces segs[seg0 .. seg0 + nseg) */
    int pos0, ntensors; /* its tensors: order[pos0 .. pos0 + ntensors) */
} fm_gs_bucket;

typedef fm_span fm_gs_seg; /* floats of p->grad */

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

/* The arena spans of rank r's shard under ZeRO-1 (of `size` ranks): chunk r
 * (ring.h) of every bucket, mapped back onto p's arena (a packed bucket's
 * chunk may cover several pieces). Writes at most pl->nbuckets + pl->nsegs
 * spans to out, in bucket order; returns how many. */
int fm_gs_plan_shard(const fm_gs_plan *pl, int size, int r, fm_gs_seg *out);

/* Test-only fault injection (run.fault_nan_steps): called on the caller's
 * thread just before bucket k of plan pl is packed and handed to the reduction
 * (with one rank: for every bucket, in finish). NULL = none, the default. */
typedef void (*fm_gs_fault_hook)(void *ctx, fm_params *p, const fm_gs_plan *pl, int k);

typedef struct fm_gradsync {
    const fm_world *world;
    fm_params *p;
    size_t bucket_bytes;
    fm_gs_plan plan;
    float *staging;       /* [plan.packed_floats] */
    int *pending;         /* [ntensors]: per bucket, tensors not yet final this step */
    uint8_t *final;       /* [ntensors]: tensor final this step */
    int *rec;             /* [ntensors]: hook order seen in the first step */
    int nrec, recording;
    int nhanded;          /* buckets handed to the thread this step */
    fm_gs_fault_hook fault;
    void *fault_ctx;
    double poll_s;
    fm_gs_timing last;
    double comm_ms;       /* best probe so far (0 with one rank) */
    int nprobes;
    int64_t step;         /* steps begun, for error messages */
    /* the last step's gradient round, times (fm_now, s) per bucket in plan
     * order: handed to the thread, and the thread's start and end of its
     * reduction (probes and allgathers are not recorded) */
    double *t_handed, *t_reduce0, *t_reduce1; /* [ntensors] each */
    /* ZeRO-1 (fm_gradsync_set_zero): finish only reduce-scatters; this rank
     * owns and updates shard[0 .. nshard) of the arena, then allgathers. Its
     * state arrays (AdamW moments, EMA) hold only these floats, packed in span
     * order: span i from float shard_at[i] on, shard_floats in all. */
    int zero;
    fm_gs_seg *shard;     /* [plan.nbuckets + plan.nsegs + 1] arena spans of this rank's shard */
    size_t *shard_at;     /* [same] packed position of each span */
    int nshard;
    size_t shard_floats;
    int replan_due;       /* ZeRO: the hook order asks for a new plan (see fm_gradsync_replan) */
    int nodes, per_node;  /* the node layout: nodes, ranks on each (0: they differ); 0, 0 with one rank */
    int hier;             /* 1: gradient allreduces take the hierarchical scheme */
    struct fm_gs_thread *th; /* the communication thread (NULL with one rank) */
    int sched_want;       /* dist.comm_sched as asked (fm_comm_sched) */
    fm_comm_sched_state sched; /* what the communication thread put in force (commsched.h) */
    int sched_differs;    /* the first rank whose policy is not rank 0's, or -1 */
} fm_gradsync;

/* Plan with the default order and, with more than one rank, find the nodes,
 * start the communication thread under the scheduling policy comm_sched (an
 * fm_comm_sched: dist.comm_sched) and take 3 probes (collective: every rank
 * calls it; see fm_gradsync_probe). hier_mode is an fm_gs_hier. timeout_s > 0
 * bounds every wait of the thread. FM_ERR_USAGE when MPI gives less than
 * MPI_THREAD_SERIALIZED, on nodes of unequal size with FM_GS_HIER_ON, or when a
 * rank cannot put an explicitly requested policy in force (every rank fails
 * then). */
int fm_gradsync_init(fm_gradsync *gs, const fm_world *w, fm_params *p, size_t bucket_bytes, int hier_mode,
                     double timeout_s, int comm_sched, fm_err *e);
void fm_gradsync_free(fm_gradsync *gs);
/* On rank 0 with more than one rank: one line "<stage>: dist.comm_sched: ..."
 * saying what is in force and what auto found not available (a warning when
 * that left none, and one when another rank has another policy). */
void fm_gradsync_log_sched(const fm_gradsync *gs, const char *stage);

/* ZeRO-1 on (1) or off (0), between steps. With it, finish leaves in
 * p->grad only this rank's shard reduced (the mean over ranks); the rest is
 * garbage. The caller updates the shard and calls fm_gradsync_allgather on
 * the parameters. Collective in effect: every rank must set the same. With
 * one rank it stays off (the whole arena is the shard). */
int fm_gradsync_set_zero(fm_gradsync *gs, int on, fm_err *e);
/* Floats of rank r's shard (p->numel without ZeRO): what its packed state
 * arrays hold. Computed, no communication. */
size_t fm_gradsync_shard_floats(const fm_gradsync *gs, int r);
/* Every rank's shard of x [p->numel] (an array laid out like the arena:
 * parameters, EMA, AdamW moments) copied to every rank, by ring allgathers per
 * bucket. Collective; blocking. With one rank, nothing to do. */
int fm_gradsync_allgather(fm_gradsync *gs, float *x, fm_err *e);
/* This rank's shard of the arena-shaped x into packed [shard_floats], and
 * back. */
void fm_gradsync_pack(const fm_gradsync *gs, const float *x, float *packed);
void fm_gradsync_unpack(const fm_gradsync *gs, const float *packed, float *x);
/* Every rank's packed shard into the whole arena-shaped x on every rank
 * (unpack, then fm_gradsync_allgather). Collective. */
int fm_gradsync_allgather_shard(fm_gradsync *gs, const float *packed, float *x, fm_err *e);
/* ZeRO: every rank's packed shard into x [p->numel] on rank 0 (for a
 * checkpoint; x is not touched elsewhere), and the inverse: each rank's
 * shard of rank 0's x into its packed (a resume). Rank 0 sends or receives
 * rank by rank through a buffer of one shard, allocated for the call; waits
 * are bounded by dist.timeout. Collective; no-op without ZeRO. */
int fm_gradsync_gather0(fm_gradsync *gs, const float *packed, float *x, fm_err *e);
int fm_gradsync_scatter0(fm_gradsync *gs, const float *x, float *packed, fm_err *e);
/* ZeRO, after the first step: put the plan of the hook order in place and
 * move each of the n packed state arrays *xs[i] (malloc family, holding this
 * rank's old shard) to the new shard: each goes whole through scratch
 * [p->numel] (an allgather under the old plan; scratch is garbage
 * afterwards), is freed and replaced by a 64-byte aligned array of the new
 * shard_floats. The only allocation after init; one array at a time, so the
 * state never exists twice. No-op when no new plan is due. Collective. */
int fm_gradsync_replan(fm_gradsync *gs, float **xs[], int n, float *scratch, fm_err *e);

/* reps times: barrier, hand every bucket to the thread at once, wait for all;
 * keeps the fastest in comm_ms. Collective. It sums p->grad over the ranks in
 * place, so the gradient is garbage afterwards (padding stays zero): call it
 * between steps, after the update. No-op with one rank. */
int fm_gradsync_probe(fm_gradsync *gs, int reps, fm_err *e);

/* A new step: nothing final, nothing in flight. */
void fm_gradsync_begin(fm_gradsync *gs);
void fm_gradsync_set_fault_hook(fm_gradsync *gs, fm_gs_fault_hook fn, void *ctx);
/* Grad-hook callback (the fm_unet_grad_hook / fm_dit_grad_hook type; ctx is
 * the fm_gradsync): p->items[first .. first+n) are final. Hands every bucket
 * this completes to the thread. Reporting a tensor twice is harmless. */
int fm_gradsync_ready(void *ctx, int first, int n, fm_err *e);
/* Every tensor is final: hand over the remaining buckets and wait for the
 * thread. Afterwards p->grad holds the mean over ranks and gs->last the
 * step's timing. An error of the thread (a peer that did not arrive) is
 * returned here. */
int fm_gradsync_finish(fm_gradsync *gs, fm_err *e);

#endif
