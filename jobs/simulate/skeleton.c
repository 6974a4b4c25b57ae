/* skeleton.c - replay fmtrain's training steps on p simulated ranks (SimGrid SMPI).
 *
 *   smpirun -np 2P ... skeleton (--schedule RUN/schedule-flow.json | --synthetic FLOATS[xBUCKETS])
 *           [--engine ring|binomial] [--zero] [--bucket-mb M] [--steps N] [--speed S]
 *           [--reduce-gbs G] [--imbalance] [--label TEXT]
 *
 * Run it through jobs/simulate/sim.sh, which sets the SMPI options the model
 * needs and places the actors. Prints one JSON line (simulated rank 0):
 * {"p", "engine", "zero", "bucket_mb", "buckets", "grad_mib", "steps",
 *  "step_ms", "compute_ms", "blocked_ms", "blocked_max_ms", "comm_alone_ms",
 *  ...}: medians over the simulated steps after the first (all steps when
 * there is one; null with --steps 0) of rank 0's step time, forward +
 * backward time and time blocked after backward until the gradients were
 * reduced (what fmtrain logs as allreduce_ms), the slowest rank's blocked
 * time, and after the steps the buckets reduced with nothing else running
 * (first start to last end over the ranks).
 *
 * The world holds 2P actors: ranks 0..P-1 replay the trainer's main thread
 * ("compute actors"), ranks P..2P-1 its communication thread ("comm actors",
 * actor P + r belongs to rank r and runs on the same host). Why a second
 * actor rather than posting a bucket's ring rounds from the compute actor:
 * round s + 1 of the ring sends what round s received (and added), so it can
 * only start when round s has ended; a compute actor inside smpi_execute()
 * cannot start it then, and posting every round at once would drop that
 * dependency and overlap rounds the real ring runs one after another. A comm
 * actor, like the thread, blocks on each round and starts the next at once.
 * The hand-over of a bucket (fmtrain: a condition variable) is a 4-byte
 * message on the host's loopback, and so is "all buckets reduced"; their
 * latency is the platform's loopback latency.
 *
 * Engines:
 *   ring      the communication thread of src/comm/gradsync.c with the ring of
 *             src/comm/ring.c: buckets in plan order, each once handed over
 *             and the previous one done; p - 1 reduce-scatter rounds (send
 *             chunk rank-s-1 to rank+1, receive chunk rank-s-2 from rank-1, add
 *             it) then p - 1 allgather rounds (send chunk rank-s, receive
 *             rank-s-1), chunk c = [n·c/p, n·(c+1)/p). With --zero only the
 *             reduce-scatter per bucket, and after the optimiser phases a
 *             parameter allgather of every bucket.
 *   binomial  the old design: per bucket an in-place MPI_Iallreduce as Open MPI
 *             4.1's libnbc schedules it (binomial reduce to rank 0, then
 *             binomial broadcast; allred_sched_diss), advanced only inside the
 *             main thread's MPI calls, at most one schedule round per call and
 *             bucket: a poll at each hand-over, then the final wait, which
 *             advances every bucket as soon as its round ends.
 * Everything else of a step (trainer.c, fm_trainer_end): the statistics
 * allgather (2 doubles a rank) and, with --zero, the gradient-norm sum are
 * simulated collectives (MPI_Allgather / MPI_Allreduce, the algorithm chosen
 * by smpi/coll-selector), so their cost grows with p; clipping, AdamW and the
 * EMA take their measured times, scaled by the share of the parameters this
 * rank updates (1/p with ZeRO-1) over the measured run's; the rest of the step
 * takes its measured time plus the stop check (MPI_Allreduce of one int).
 *
 * Compute: a phase of t measured ms runs smpi_execute_flops(t · host speed /
 * S), so it takes t / S simulated ms on any platform (S = --speed, default 1:
 * the nodes compute as fast as the machine that wrote the schedule). With
 * --imbalance rank r's forward and backward are scaled by the measured
 * compute time of rank r mod W over rank 0's (W ranks in the measured run).
 * The reduction's additions take n·12 bytes / G (G = --reduce-gbs GB/s: read
 * two floats, write one; 0 = free). Payloads come from SMPI_SHARED_MALLOC: all
 * actors share one block and SMPI copies nothing, so only timing is simulated.
 */
#include <mpi.h>
#include <simgrid/host.h>
#include <smpi/smpi.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "schedule.h"

enum { TAG_CMD = 1, TAG_DONE = 2, TAG_RING = 3, TAG_NBC = 100 };
enum { CMD_QUIT = -1, CMD_ALLGATHER = -2, CMD_PROBE = -3 };

typedef struct opts {
    const char *schedule, *label;
    size_t syn_floats;
    int syn_buckets;
    int ring, zero, steps, imbalance;
    double bucket_mb, speed, reduce_gbs;
} opts;

/* what one rank needs to replay: its ids, the schedule, its buffers */
typedef struct rank_ctx {
    const opts *o;
    const sim_schedule *s;
    int p, r;              /* simulated ranks, this rank */
    MPI_Comm comm;         /* the compute actors' or the comm actors' communicator */
    float *buf, *tmp;      /* the bucket payload and a receive buffer (shared, contents unused) */
    double flops_per_ms;   /* this host's speed / S, per ms */
} rank_ctx;

static void compute_ms(const rank_ctx *c, double ms)
{
    if (ms > 0)
        smpi_execute_flops(ms * c->flops_per_ms);
}

/* the local sum of n floats into a bucket */
static void add_floats(const rank_ctx *c, size_t n)
{
    if (c->o->reduce_gbs > 0 && n > 0)
        compute_ms(c, 1e3 * 12.0 * (double)n / (c->o->reduce_gbs * 1e9) * c->o->speed);
}

static size_t chunk_off(size_t n, int p, int c) { return n * (size_t)c / (size_t)p; }

/* ---- the ring (comm actors; src/comm/ring.c) -------------------------------- */

static void exchange(const rank_ctx *c, float *send, size_t ns, float *recv, size_t nr)
{
    MPI_Request req[2];
    MPI_Irecv(recv, (int)nr, MPI_FLOAT, (c->r + c->p - 1) % c->p, TAG_RING, c->comm, &req[0]);
    MPI_Isend(send, (int)ns, MPI_FLOAT, (c->r + 1) % c->p, TAG_RING, c->comm, &req[1]);
    MPI_Waitall(2, req, MPI_STATUSES_IGNORE);
}

static void ring_reduce_scatter(const rank_ctx *c, size_t n)
{
    const int p = c->p;
    for (int s = 0; s < p - 1; s++) {
        const int cs = ((c->r - s - 1) % p + p) % p, cr = ((c->r - s - 2) % p + p) % p;
        const size_t so = chunk_off(n, p, cs), sn = chunk_off(n, p, cs + 1) - so;
        const size_t ro = chunk_off(n, p, cr), rn = chunk_off(n, p, cr + 1) - ro;
        exchange(c, c->buf + so, sn, c->tmp, rn);
        add_floats(c, rn);
    }
}

static void ring_allgather(const rank_ctx *c, size_t n)
{
    const int p = c->p;
    for (int s = 0; s < p - 1; s++) {
        const int cs = ((c->r - s) % p + p) % p, cr = ((c->r - s - 1) % p + p) % p;
        const size_t so = chunk_off(n, p, cs), sn = chunk_off(n, p, cs + 1) - so;
        const size_t ro = chunk_off(n, p, cr), rn = chunk_off(n, p, cr + 1) - ro;
        exchange(c, c->buf + so, sn, c->buf + ro, rn);
    }
}

/* The communication thread of rank r: commands from compute actor r (a
 * bucket index = that bucket is handed over, or a CMD_*), "done" back after
 * the last bucket, the allgather or the probe. */
static void comm_actor(const rank_ctx *c)
{
    const sim_schedule *s = c->s;
    const int me = c->r, zero = c->o->zero;
    int next = 0, done = 1;
    for (;;) {
        int v;
        MPI_Recv(&v, 1, MPI_INT, me, TAG_CMD, MPI_COMM_WORLD, MPI_STATUS_IGNORE);
        if (v == CMD_QUIT)
            return;
        if (v >= 0) { /* buckets arrive in plan order, as the thread takes them */
            ring_reduce_scatter(c, s->floats[v]);
            if (!zero)
                ring_allgather(c, s->floats[v]);
            if (++next < s->nbuckets)
                continue;
            next = 0;
        } else if (v == CMD_ALLGATHER) {
            for (int k = 0; k < s->nbuckets; k++)
                ring_allgather(c, s->floats[k]);
        } else if (v == CMD_PROBE) {
            for (int k = 0; k < s->nbuckets; k++) { /* the step's collectives back to back */
                ring_reduce_scatter(c, s->floats[k]);
                if (!zero)
                    ring_allgather(c, s->floats[k]);
            }
            for (int k = 0; k < s->nbuckets && zero; k++)
                ring_allgather(c, s->floats[k]);
        }
        MPI_Send(&done, 1, MPI_INT, me, TAG_DONE, MPI_COMM_WORLD);
    }
}

/* ---- the old engine: libnbc's in-place binomial allreduce -------------------- */

enum { NBC_SEND, NBC_RECV, NBC_OP };
#define NBC_MAX 96

/* One bucket's schedule on this rank: actions grouped in rounds; a round's
 * sends and receives are posted together and the next round starts at the
 * first progress call after all of them completed. */
typedef struct nbc {
    int kind[NBC_MAX], peer[NBC_MAX];
    int round0[NBC_MAX + 1], nrounds; /* round i = actions round0[i] .. round0[i+1]-1 */
    int nact, cur, active, done;
    MPI_Request req[NBC_MAX];
    int nreq;
    size_t count;
    int tag;
} nbc;

static void nbc_add(nbc *h, int kind, int peer)
{
    h->kind[h->nact] = kind;
    h->peer[h->nact++] = peer;
}

static void nbc_barrier(nbc *h)
{
    if (h->nact > h->round0[h->nrounds])
        h->round0[++h->nrounds] = h->nact;
}

/* allred_sched_diss of Open MPI 4.1 (ompi/mca/coll/libnbc/nbc_iallreduce.c),
 * in place, root 0: reduce along a binomial tree (receive, then add, each its
 * own round; a rank sends its partial sum once and leaves), then broadcast
 * along the binomial tree (receive from rank - highest bit, then send to every
 * rank + 2^i with rank < 2^i, all in one round). */
static void nbc_build(nbc *h, int rank, int p, size_t count, int tag)
{
    memset(h, 0, sizeof *h);
    h->count = count;
    h->tag = tag;
    int maxr = 0;
    while ((1 << maxr) < p)
        maxr++;
    for (int r = 1; r <= maxr; r++) {
        if (rank % (1 << r) == 0) {
            const int peer = rank + (1 << (r - 1));
            if (peer < p) {
                nbc_add(h, NBC_RECV, peer);
                nbc_barrier(h);
                nbc_add(h, NBC_OP, -1);
                nbc_barrier(h);
            }
        } else {
            nbc_add(h, NBC_SEND, rank - (1 << (r - 1))); /* no barrier: joins the broadcast's receive */
            break;
        }
    }
    if (rank != 0) {
        for (int r = 0; r < maxr; r++)
            if ((1 << r) <= rank && rank < (1 << (r + 1)))
                nbc_add(h, NBC_RECV, rank - (1 << r));
        nbc_barrier(h);
    }
    for (int r = 0; r < maxr; r++)
        if ((rank + (1 << r) < p && rank < (1 << r)) || rank == 0)
            nbc_add(h, NBC_SEND, rank + (1 << r));
    nbc_barrier(h);
}

static void nbc_start_round(const rank_ctx *c, nbc *h)
{
    h->nreq = 0;
    for (int a = h->round0[h->cur]; a < h->round0[h->cur + 1]; a++) {
        if (h->kind[a] == NBC_SEND)
            MPI_Isend(c->buf, (int)h->count, MPI_FLOAT, h->peer[a], h->tag, c->comm, &h->req[h->nreq++]);
        else if (h->kind[a] == NBC_RECV) /* the reduce receives into a temporary, the broadcast in place */
            MPI_Irecv(h->round0[h->cur] == a && a + 1 < h->nact && h->kind[a + 1] == NBC_OP ? c->tmp : c->buf,
                      (int)h->count, MPI_FLOAT, h->peer[a], h->tag, c->comm, &h->req[h->nreq++]);
        else
            add_floats(c, h->count);
    }
}

/* MPI_Iallreduce: the schedule starts with its first round */
static void nbc_start(const rank_ctx *c, nbc *h)
{
    h->active = 1;
    h->cur = 0;
    nbc_start_round(c, h);
}

/* NBC_Progress: when the current round has completed, start the next one
 * (or finish). Returns 1 when the schedule moved. */
static int nbc_progress(const rank_ctx *c, nbc *h)
{
    if (!h->active || h->done)
        return 0;
    int flag = 1;
    if (h->nreq > 0)
        MPI_Testall(h->nreq, h->req, &flag, MPI_STATUSES_IGNORE);
    if (!flag)
        return 0;
    h->nreq = 0;
    if (++h->cur == h->nrounds) {
        h->done = 1;
        return 1;
    }
    nbc_start_round(c, h);
    return 1;
}

/* one MPI call of the main thread: every active schedule moves at most once */
static void nbc_poll(const rank_ctx *c, nbc *h, int n)
{
    for (int k = 0; k < n; k++)
        nbc_progress(c, &h[k]);
}

/* MPI_Waitall on every bucket: progress until all are done, blocking on any
 * outstanding request when nothing can move. */
static int nbc_wait_all(const rank_ctx *c, nbc *h, int n)
{
    MPI_Request *all = malloc((size_t)n * NBC_MAX * sizeof *all);
    int *owner = malloc((size_t)n * NBC_MAX * sizeof *owner);
    if (!all || !owner) {
        free(all);
        free(owner);
        return -1;
    }
    for (;;) {
        int moved = 0, left = 0;
        for (int k = 0; k < n; k++) {
            moved |= nbc_progress(c, &h[k]);
            left += !h[k].done;
        }
        if (!left)
            break;
        if (moved)
            continue;
        int m = 0;
        for (int k = 0; k < n; k++)
            for (int i = 0; i < h[k].nreq && !h[k].done; i++) {
                all[m] = h[k].req[i];
                owner[m++] = k * NBC_MAX + i;
            }
        int idx = MPI_UNDEFINED;
        MPI_Waitany(m, all, &idx, MPI_STATUS_IGNORE);
        if (idx != MPI_UNDEFINED)
            h[owner[idx] / NBC_MAX].req[owner[idx] % NBC_MAX] = MPI_REQUEST_NULL;
    }
    free(all);
    free(owner);
    return 0;
}

/* ---- the trainer's main thread (compute actors) ------------------------------ */

typedef struct step_times {
    double step_ms, compute_ms, blocked_ms;
} step_times;

/* share of the parameters the optimiser phases touch here, over the measured run's */
static double optimiser_scale(const rank_ctx *c)
{
    const double sim = c->o->zero ? 1.0 / c->p : 1.0, meas = c->s->zero ? 1.0 / c->s->world : 1.0;
    return sim / meas;
}

static int compute_step(const rank_ctx *c, int i, nbc *h, step_times *out)
{
    const sim_schedule *s = c->s;
    const sim_step *st = &s->steps[i % s->nsteps];
    const int nb = s->nbuckets, comm_actor = c->p + c->r;
    double f = 1.0;
    if (c->o->imbalance) {
        const double *rc = s->rank_compute_ms + (size_t)(i % s->nsteps) * s->world;
        f = rc[0] > 0 ? rc[c->r % s->world] / rc[0] : 1.0;
    }
    const double t0 = MPI_Wtime();
    compute_ms(c, f * st->forward_ms);
    double prev = 0;
    int *idx = malloc((size_t)nb * sizeof *idx);
    MPI_Request *hand = malloc((size_t)nb * sizeof *hand);
    if (!idx || !hand) {
        free(idx);
        free(hand);
        return -1;
    }
    for (int k = 0; k < nb; k++) { /* backward up to each hand-over */
        compute_ms(c, f * (st->ready_ms[k] - prev));
        prev = st->ready_ms[k];
        idx[k] = k;
        if (c->o->ring) {
            MPI_Isend(&idx[k], 1, MPI_INT, comm_actor, TAG_CMD, MPI_COMM_WORLD, &hand[k]);
        } else {
            nbc_build(&h[k], c->r, c->p, s->floats[k], TAG_NBC + k);
            nbc_start(c, &h[k]);
            nbc_poll(c, h, k + 1);
        }
    }
    compute_ms(c, f * (st->backward_ms - prev));
    const double t_ce = MPI_Wtime();
    int rc = 0;
    if (c->o->ring) {
        int done;
        MPI_Recv(&done, 1, MPI_INT, comm_actor, TAG_DONE, MPI_COMM_WORLD, MPI_STATUS_IGNORE);
        MPI_Waitall(nb, hand, MPI_STATUSES_IGNORE);
    } else {
        rc = nbc_wait_all(c, h, nb);
    }
    const double t_red = MPI_Wtime();
    free(idx);
    free(hand);
    if (rc != 0)
        return rc;
    double mine[2] = { 0, 1e3 * (t_ce - t0) }, *all = malloc(2 * (size_t)c->p * sizeof(double));
    if (!all)
        return -1;
    MPI_Allgather(mine, 2, MPI_DOUBLE, all, 2, MPI_DOUBLE, c->comm);
    free(all);
    const double g = optimiser_scale(c);
    compute_ms(c, g * st->clip_ms);
    if (c->o->zero) {
        double sq = 1, sum;
        MPI_Allreduce(&sq, &sum, 1, MPI_DOUBLE, MPI_SUM, c->comm);
    }
    compute_ms(c, g * (st->adamw_ms + st->ema_ms));
    if (c->o->zero) {
        int cmd = CMD_ALLGATHER, done;
        MPI_Send(&cmd, 1, MPI_INT, comm_actor, TAG_CMD, MPI_COMM_WORLD);
        MPI_Recv(&done, 1, MPI_INT, comm_actor, TAG_DONE, MPI_COMM_WORLD, MPI_STATUS_IGNORE);
    }
    compute_ms(c, st->rest_ms);
    int stop = 0, any;
    MPI_Allreduce(&stop, &any, 1, MPI_INT, MPI_MAX, c->comm);
    const double t_end = MPI_Wtime();
    out->step_ms = 1e3 * (t_end - t0);
    out->compute_ms = 1e3 * (t_ce - t0);
    out->blocked_ms = 1e3 * (t_red - t_ce);
    return 0;
}

/* the step's buckets reduced with nothing else running: first start to last
 * end over all ranks, ms */
static double probe(const rank_ctx *c, nbc *h)
{
    MPI_Barrier(c->comm);
    const double t0 = MPI_Wtime();
    if (c->o->ring) {
        int cmd = CMD_PROBE, done;
        MPI_Send(&cmd, 1, MPI_INT, c->p + c->r, TAG_CMD, MPI_COMM_WORLD);
        MPI_Recv(&done, 1, MPI_INT, c->p + c->r, TAG_DONE, MPI_COMM_WORLD, MPI_STATUS_IGNORE);
    } else {
        for (int k = 0; k < c->s->nbuckets; k++) {
            nbc_build(&h[k], c->r, c->p, c->s->floats[k], TAG_NBC + k);
            nbc_start(c, &h[k]);
        }
        if (nbc_wait_all(c, h, c->s->nbuckets) != 0)
            return -1;
    }
    const double t1 = MPI_Wtime();
    double first, last;
    MPI_Allreduce(&t0, &first, 1, MPI_DOUBLE, MPI_MIN, c->comm);
    MPI_Allreduce(&t1, &last, 1, MPI_DOUBLE, MPI_MAX, c->comm);
    return 1e3 * (last - first);
}

static int cmp_double(const void *a, const void *b)
{
    double x = *(const double *)a, y = *(const double *)b;
    return (x > y) - (x < y);
}

/* median of v[from .. n) (sorts it) */
static double median(double *v, int n, int from)
{
    if (from >= n)
        from = 0;
    qsort(v + from, (size_t)(n - from), sizeof *v, cmp_double);
    const int m = n - from;
    return m % 2 ? v[from + m / 2] : 0.5 * (v[from + m / 2 - 1] + v[from + m / 2]);
}

/* a JSON number, or null for no value (no steps simulated) */
static void json_num(char *out, size_t n, double v) { snprintf(out, n, v == v ? "%.4f" : "null", v); }

static int compute_actor(const rank_ctx *c)
{
    const opts *o = c->o;
    const sim_schedule *s = c->s;
    const int n = o->steps;
    nbc *h = o->ring ? NULL : malloc((size_t)s->nbuckets * sizeof *h);
    double *v = malloc((4 * (size_t)n + 1) * sizeof *v); /* step, compute, blocked, slowest rank's blocked */
    int rc = (!o->ring && !h) || !v ? -1 : 0;
    for (int i = 0; i < n && rc == 0; i++) {
        step_times t = { 0 };
        rc = compute_step(c, i, h, &t);
        v[i] = t.step_ms;
        v[n + i] = t.compute_ms;
        v[2 * n + i] = t.blocked_ms;
    }
    const double alone = rc == 0 ? probe(c, h) : -1;
    int quit = CMD_QUIT;
    MPI_Send(&quit, 1, MPI_INT, c->p + c->r, TAG_CMD, MPI_COMM_WORLD);
    if (rc == 0 && n > 0) /* after the simulated steps: does not delay them */
        MPI_Reduce(v + 2 * n, v + 3 * n, n, MPI_DOUBLE, MPI_MAX, 0, c->comm);
    if (rc == 0 && c->r == 0) {
        double bytes = 0;
        for (int k = 0; k < s->nbuckets; k++)
            bytes += 4.0 * (double)s->floats[k];
        char a[32], b[32], d[32], e[32];
        const double none = 0.0 / 0.0;
        json_num(a, sizeof a, n ? median(v, n, 1) : none);
        json_num(b, sizeof b, n ? median(v + n, n, 1) : none);
        json_num(d, sizeof d, n ? median(v + 2 * n, n, 1) : none);
        json_num(e, sizeof e, n ? median(v + 3 * n, n, 1) : none);
        printf("{\"p\": %d, \"engine\": \"%s\", \"zero\": %s, \"bucket_mb\": %g, \"buckets\": %d, "
               "\"grad_mib\": %.4f, \"steps\": %d, \"speed\": %g, \"reduce_gbs\": %g, \"step_ms\": %s, "
               "\"compute_ms\": %s, \"blocked_ms\": %s, \"blocked_max_ms\": %s, \"comm_alone_ms\": %.4f%s%s%s}\n",
               c->p, o->ring ? "ring" : "binomial", o->zero ? "true" : "false", s->bucket_mb, s->nbuckets,
               bytes / 1048576.0, n, o->speed, o->reduce_gbs, a, b, d, e, alone, o->label ? ", \"label\": \"" : "",
               o->label ? o->label : "", o->label ? "\"" : "");
        fflush(stdout);
    }
    free(h);
    free(v);
    return rc;
}

/* ---- arguments and main ------------------------------------------------------ */

static int parse(int argc, char **argv, opts *o, char *err, size_t n)
{
    *o = (opts){ .ring = 1, .steps = 3, .speed = 1.0, .bucket_mb = 0 };
    for (int i = 1; i < argc; i++) {
        const char *a = argv[i], *v = i + 1 < argc ? argv[i + 1] : NULL;
        int takes = 1;
        if (!strcmp(a, "--zero")) {
            o->zero = 1;
            takes = 0;
        } else if (!strcmp(a, "--imbalance")) {
            o->imbalance = 1;
            takes = 0;
        } else if (!v) {
            snprintf(err, n, "%s: expected a value (see the head of jobs/simulate/skeleton.c)", a);
            return -1;
        } else if (!strcmp(a, "--schedule")) {
            o->schedule = v;
        } else if (!strcmp(a, "--label")) {
            o->label = v;
        } else if (!strcmp(a, "--synthetic")) {
            char *end;
            o->syn_floats = strtoull(v, &end, 10);
            o->syn_buckets = *end == 'x' ? atoi(end + 1) : 1;
            if (o->syn_floats < 1 || o->syn_buckets < 1 || (*end && *end != 'x')) {
                snprintf(err, n, "--synthetic %s: expected FLOATS or FLOATSxBUCKETS, e.g. 3000000x4", v);
                return -1;
            }
        } else if (!strcmp(a, "--engine")) {
            if (strcmp(v, "ring") && strcmp(v, "binomial")) {
                snprintf(err, n, "--engine %s: expected ring or binomial", v);
                return -1;
            }
            o->ring = !strcmp(v, "ring");
        } else if (!strcmp(a, "--steps")) {
            o->steps = atoi(v);
        } else if (!strcmp(a, "--bucket-mb")) {
            o->bucket_mb = atof(v);
        } else if (!strcmp(a, "--speed")) {
            o->speed = atof(v);
        } else if (!strcmp(a, "--reduce-gbs")) {
            o->reduce_gbs = atof(v);
        } else {
            snprintf(err, n, "%s: unknown option (see the head of jobs/simulate/skeleton.c)", a);
            return -1;
        }
        i += takes;
    }
    if (!o->schedule == !o->syn_floats) {
        snprintf(err, n, "give exactly one of --schedule FILE and --synthetic FLOATS[xBUCKETS]");
        return -1;
    }
    if (o->steps < 0 || !(o->speed > 0) || o->reduce_gbs < 0 || o->bucket_mb < 0) {
        snprintf(err, n, "--steps must be >= 0 (0: only the reduction alone), --speed > 0, --reduce-gbs and --bucket-mb >= 0");
        return -1;
    }
    if (o->zero && !o->ring) {
        snprintf(err, n, "--zero needs --engine ring: the old binomial engine had no ZeRO-1");
        return -1;
    }
    return 0;
}

int main(int argc, char **argv)
{
    MPI_Init(&argc, &argv);
    int wr, ws;
    MPI_Comm_rank(MPI_COMM_WORLD, &wr);
    MPI_Comm_size(MPI_COMM_WORLD, &ws);
    opts o;
    sim_schedule s = { 0 };
    char err[512] = "";
    int rc = parse(argc, argv, &o, err, sizeof err);
    if (rc == 0 && (ws < 4 || ws % 2)) {
        snprintf(err, sizeof err, "%d actors: run 2P actors for P >= 2 simulated ranks (jobs/simulate/sim.sh does)", ws);
        rc = -1;
    }
    if (rc == 0)
        rc = o.schedule ? sim_schedule_load(&s, o.schedule, err, sizeof err)
                        : sim_schedule_synthetic(&s, o.syn_floats, o.syn_buckets, err, sizeof err);
    if (rc == 0 && o.bucket_mb > 0)
        sim_schedule_rebucket(&s, o.bucket_mb);
    if (rc != 0) { /* every actor got the same arguments: one says why, the first fails the run */
        if (wr == 0)
            fprintf(stderr, "skeleton: %s\n", err);
        MPI_Finalize();
        return wr == 0 ? 2 : 0;
    }
    const int p = ws / 2, is_comm = wr >= p;
    rank_ctx c = { .o = &o, .s = &s, .p = p, .r = wr % p };
    MPI_Comm_split(MPI_COMM_WORLD, is_comm, c.r, &c.comm);
    /* the actor that moves the payload: the comm actor (ring: the bucket and
     * one chunk) or the compute actor (binomial: the bucket and a whole one) */
    const size_t maxb = sim_schedule_max_bucket(&s);
    if (is_comm == o.ring) {
        c.buf = SMPI_SHARED_MALLOC(maxb * sizeof(float));
        c.tmp = SMPI_SHARED_MALLOC((o.ring ? maxb / (size_t)p + 1 : maxb) * sizeof(float));
    }
    c.flops_per_ms = 1e-3 * sg_host_get_speed(sg_host_self()) / o.speed;
    if (is_comm)
        comm_actor(&c);
    else
        rc = compute_actor(&c);
    if (rc != 0)
        fprintf(stderr, "skeleton: rank %d: out of memory\n", c.r);
    if (c.buf) {
        SMPI_SHARED_FREE(c.tmp);
        SMPI_SHARED_FREE(c.buf);
    }
    MPI_Comm_free(&c.comm);
    sim_schedule_free(&s);
    MPI_Finalize();
    return rc == 0 ? 0 : 1;
}
