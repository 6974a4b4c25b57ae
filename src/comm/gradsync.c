/* gradsync.c - bucketed gradient averaging over MPI ranks, reduced by a
 * communication thread while backward computes. */
#include "fm/gradsync.h"

#include <limits.h>
#include <mpi.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "fm/commsched.h"
#include "fm/log.h"
#include "fm/ring.h"
#include "fm/shared.h"
#include "fm/timer.h"

/* ---- the plan ------------------------------------------------------------- */

/* Floats from tensor i's offset to the next tensor's (its padded extent). */
static size_t extent(const fm_params *p, int i)
{
    size_t end = i + 1 < p->n ? p->items[i + 1].offset : p->numel;
    return end - p->items[i].offset;
}

static int cmp_int(const void *a, const void *b)
{
    int x = *(const int *)a, y = *(const int *)b;
    return (x > y) - (x < y);
}

/* Close the bucket of tensors order[pos0 .. pos0 + nt): contiguous when
 * their indices form one run (neighbours in the arena), else packed. */
static int close_bucket(fm_gs_plan *pl, const fm_params *p, int pos0, int nt, int *tmp, fm_err *e)
{
    fm_gs_bucket *b = &pl->buckets[pl->nbuckets];
    memcpy(tmp, pl->order + pos0, (size_t)nt * sizeof(int));
    qsort(tmp, (size_t)nt, sizeof(int), cmp_int);
    size_t count = 0;
    int runs = 1;
    for (int j = 0; j < nt; j++) {
        count += extent(p, tmp[j]);
        runs += j > 0 && tmp[j] != tmp[j - 1] + 1;
    }
    if (count > INT_MAX)
        return fm_fail(e, FM_ERR_INTERNAL, "gradient bucket of %zu floats (tensor %s) exceeds an MPI count", count,
                       p->items[tmp[0]].name);
    b->pos0 = pos0;
    b->ntensors = nt;
    b->count = count;
    b->packed = runs > 1;
    b->seg0 = pl->nsegs;
    b->nseg = 0;
    if (!b->packed) {
        b->off = p->items[tmp[0]].offset;
    } else {
        b->off = pl->packed_floats;
        pl->packed_floats += count;
        for (int j = 0; j < nt; j++) {
            if (j == 0 || tmp[j] != tmp[j - 1] + 1) {
                pl->segs[pl->nsegs++] = (fm_gs_seg){ p->items[tmp[j]].offset, 0 };
                b->nseg++;
            }
            pl->segs[pl->nsegs - 1].count += extent(p, tmp[j]);
        }
    }
    for (int j = 0; j < nt; j++)
        pl->bucket_of[pl->order[pos0 + j]] = pl->nbuckets;
    if (count > pl->max_bucket)
        pl->max_bucket = count;
    pl->nbuckets++;
    return FM_OK;
}

int fm_gs_plan_build(fm_gs_plan *pl, const fm_params *p, const int *order, size_t bucket_bytes, fm_err *e)
{
    memset(pl, 0, sizeof *pl);
    const int n = p->n;
    if (bucket_bytes == 0)
        return fm_fail(e, FM_ERR_USAGE, "gradient bucket size must be positive");
    for (int i = 0; i + 1 < n; i++)
        if (p->items[i + 1].offset <= p->items[i].offset)
            return fm_fail(e, FM_ERR_INTERNAL, "parameter %s does not follow %s in the arena", p->items[i + 1].name,
                           p->items[i].name);
    pl->ntensors = n;
    size_t m = n > 0 ? (size_t)n : 1;
    pl->order = malloc(m * sizeof(int));
    pl->bucket_of = malloc(m * sizeof(int));
    pl->buckets = calloc(m, sizeof *pl->buckets);
    pl->segs = calloc(m, sizeof *pl->segs);
    int *tmp = malloc(m * sizeof(int));
    int rc = FM_OK;
    if (!pl->order || !pl->bucket_of || !pl->buckets || !pl->segs || !tmp) {
        rc = fm_fail(e, FM_ERR_INTERNAL, "out of memory for a gradient bucket plan of %d tensors", n);
        goto out;
    }
    for (int i = 0; i < n; i++)
        pl->bucket_of[i] = -1; /* doubles as "seen" while checking the order */
    for (int k = 0; k < n; k++) {
        int t = order ? order[k] : n - 1 - k;
        if (t < 0 || t >= n || pl->bucket_of[t] != -1) {
            rc = fm_fail(e, FM_ERR_USAGE, "gradient order: entry %d (%d) is not a new tensor index below %d", k, t, n);
            goto out;
        }
        pl->bucket_of[t] = 0;
        pl->order[k] = t;
    }
    size_t cap = bucket_bytes / sizeof(float) > 0 ? bucket_bytes / sizeof(float) : 1;
    int pos0 = 0;
    size_t acc = 0;
    for (int k = 0; k < n && rc == FM_OK; k++) {
        size_t x = extent(p, pl->order[k]);
        if (k > pos0 && acc + x > cap) { /* full: this tensor opens the next bucket */
            rc = close_bucket(pl, p, pos0, k - pos0, tmp, e);
            pos0 = k;
            acc = 0;
        }
        acc += x;
    }
    if (rc == FM_OK && n > pos0)
        rc = close_bucket(pl, p, pos0, n - pos0, tmp, e);
out:
    free(tmp);
    if (rc != FM_OK)
        fm_gs_plan_free(pl);
    return rc;
}

int fm_gs_plan_shard(const fm_gs_plan *pl, int size, int r, fm_gs_seg *out)
{
    int n = 0;
    for (int k = 0; k < pl->nbuckets; k++) {
        const fm_gs_bucket *b = &pl->buckets[k];
        const size_t a = fm_ring_chunk_off(b->count, size, r), z = fm_ring_chunk_off(b->count, size, r + 1);
        if (a == z)
            continue;
        if (!b->packed) {
            out[n++] = (fm_gs_seg){ b->off + a, z - a };
            continue;
        }
        size_t pos = 0; /* the bucket's packed coordinate of piece s */
        for (int s = 0; s < b->nseg && pos < z; s++) {
            const fm_gs_seg *g = &pl->segs[b->seg0 + s];
            const size_t lo = a > pos ? a : pos, hi = z < pos + g->count ? z : pos + g->count;
            if (lo < hi)
                out[n++] = (fm_gs_seg){ g->off + (lo - pos), hi - lo };
            pos += g->count;
        }
    }
    return n;
}

void fm_gs_plan_free(fm_gs_plan *pl)
{
    free(pl->order);
    free(pl->bucket_of);
    free(pl->buckets);
    free(pl->segs);
    memset(pl, 0, sizeof *pl);
}

/* ---- the communication thread ---------------------------------------------- */

/* The thread reduces buckets 0, 1, ... of the plan in order, each once the
 * caller has handed it over (ready[k]); all ranks therefore run the same
 * sequence of ring collectives. Shared fields are guarded by mu. */
typedef struct fm_gs_thread {
    pthread_t tid;
    pthread_mutex_t mu;
    pthread_cond_t work, done;
    uint8_t *ready;     /* [ntensors]: bucket handed over this round */
    int nbuckets;       /* buckets this round */
    int next;           /* the thread's next bucket */
    int quit;
    int rc;             /* first error of the round */
    int probe;          /* this round is a probe: nothing is unpacked */
    int op;             /* the round's collective (enum round_op) */
    float *x;           /* the round's arena-shaped array (p->grad, or what fm_gradsync_allgather got) */
    fm_err err;
    double t_first, t_last;
    fm_ring ring;       /* the flat ring over the world */
    fm_ring node, across; /* hierarchical: the ranks of this node; the ranks of this local rank on every node */
    int hier;           /* 1: allreduce rounds take the hierarchical scheme */
    fm_gradsync *gs;
    char what[96], what_node[120], what_across[120];
    int sched_want;     /* dist.comm_sched (fm_comm_sched) */
    int started;        /* the thread has put its scheduling policy in force (or failed to) */
    int start_rc;
    fm_err start_err;
} fm_gs_thread;

enum round_op { OP_ALLREDUCE, OP_REDUCE_SCATTER, OP_ALLGATHER };

/* Copy the packed bucket b's elements [a, z) (packed coordinates) between
 * the staging buffer and the arena-shaped x. */
static void copy_packed(const fm_gs_plan *pl, const fm_gs_bucket *b, float *staging, float *x, size_t a, size_t z,
                        int to_x)
{
    size_t pos = 0;
    for (int s = 0; s < b->nseg && pos < z; s++) {
        const fm_gs_seg *g = &pl->segs[b->seg0 + s];
        const size_t lo = a > pos ? a : pos, hi = z < pos + g->count ? z : pos + g->count;
        if (lo < hi) {
            float *arena = x + g->off + (lo - pos), *buf = staging + b->off + lo;
            if (to_x)
                memcpy(arena, buf, (hi - lo) * sizeof(float));
            else
                memcpy(buf, arena, (hi - lo) * sizeof(float));
        }
        pos += g->count;
    }
}

/* The hierarchical allreduce of x [n] (tag k): a ring reduce-scatter inside
 * the node leaves local rank l the node's sum of chunk l (of L); a ring
 * allreduce of that chunk across the nodes, among the ranks of local rank l
 * (every local rank's link busy at once), scales it; a ring allgather inside
 * the node gives every rank the whole. Every rank ends with the same bits. */
static int hier_allreduce(fm_gs_thread *th, float *x, size_t n, float scale, int k, fm_err *e)
{
    snprintf(th->what_node, sizeof th->what_node, "%s (inside the node)", th->what);
    snprintf(th->what_across, sizeof th->what_across, "%s (across the nodes)", th->what);
    th->node.what = th->what_node;
    th->across.what = th->what_across;
    const int L = th->node.size, l = th->node.rank;
    FM_TRY(fm_ring_reduce_scatter(&th->node, x, n, 1.0f, k, e));
    const size_t o = fm_ring_chunk_off(n, L, l), m = fm_ring_chunk_off(n, L, l + 1) - o;
    FM_TRY(fm_ring_allreduce(&th->across, x + o, m, scale, k, e));
    return fm_ring_allgather(&th->node, x, n, k, e);
}

/* On the thread: the round's collective on bucket k; for a packed bucket,
 * unpack what this rank now holds (all of it, or its chunk after a
 * reduce-scatter). Gradients are scaled by 1/world. */
static int reduce_bucket(fm_gs_thread *th, int k, fm_err *e)
{
    fm_gradsync *gs = th->gs;
    const fm_gs_bucket *b = &gs->plan.buckets[k];
    float *buf = b->packed ? gs->staging + b->off : th->x + b->off;
    const int p = gs->world->size, r = gs->world->rank;
    snprintf(th->what, sizeof th->what, "%s of step %lld, bucket %d of %d",
             th->op == OP_ALLGATHER ? "parameter allgather" : "gradient reduction", (long long)gs->step, k,
             gs->plan.nbuckets);
    th->ring.what = th->what;
    const float scale = 1.0f / (float)p;
    size_t a = 0, z = b->count; /* what this rank holds afterwards */
    if (th->op == OP_ALLREDUCE && th->hier) {
        FM_TRY(hier_allreduce(th, buf, b->count, scale, k, e));
    } else if (th->op == OP_ALLREDUCE) {
        FM_TRY(fm_ring_allreduce(&th->ring, buf, b->count, scale, k, e));
    } else if (th->op == OP_REDUCE_SCATTER) {
        FM_TRY(fm_ring_reduce_scatter(&th->ring, buf, b->count, scale, k, e));
        a = fm_ring_chunk_off(b->count, p, r), z = fm_ring_chunk_off(b->count, p, r + 1);
    } else {
        FM_TRY(fm_ring_allgather(&th->ring, buf, b->count, k, e));
    }
    if (b->packed && !th->probe)
        copy_packed(&gs->plan, b, gs->staging, th->x, a, z, 1);
    return FM_OK;
}

static void *thread_main(void *arg)
{
    fm_gs_thread *th = arg;
    fm_err se = { 0 };
    int src = fm_comm_sched_thread(th->sched_want, &th->gs->sched, &se); /* before any MPI call */
    th->ring.poll_sleep_s = th->node.poll_sleep_s = th->across.poll_sleep_s = th->gs->sched.poll_sleep_s;
    pthread_mutex_lock(&th->mu);
    th->started = 1;
    th->start_rc = src;
    th->start_err = se;
    pthread_cond_signal(&th->done);
    for (;;) {
        while (!th->quit && !(th->next < th->nbuckets && th->ready[th->next]))
            pthread_cond_wait(&th->work, &th->mu);
        if (th->quit)
            break;
        const int k = th->next;
        pthread_mutex_unlock(&th->mu);
        double t0 = fm_now();
        fm_err e = { 0 };
        int rc = reduce_bucket(th, k, &e);
        double t1 = fm_now();
        pthread_mutex_lock(&th->mu);
        if (k == 0)
            th->t_first = t0;
        th->t_last = t1;
        if (th->op != OP_ALLGATHER && !th->probe) /* the step's gradient round */
            th->gs->t_reduce0[k] = t0, th->gs->t_reduce1[k] = t1;
        if (rc != FM_OK) {
            th->rc = rc;
            th->err = e;
            th->next = th->nbuckets; /* the rest of the round is abandoned */
        } else {
            th->next++;
        }
        if (th->next == th->nbuckets)
            pthread_cond_signal(&th->done);
    }
    pthread_mutex_unlock(&th->mu);
    return NULL;
}

static const char *thread_level_name(int level)
{
    switch (level) {
    case MPI_THREAD_SINGLE:
        return "MPI_THREAD_SINGLE";
    case MPI_THREAD_FUNNELED:
        return "MPI_THREAD_FUNNELED";
    case MPI_THREAD_SERIALIZED:
        return "MPI_THREAD_SERIALIZED";
    default:
        return "MPI_THREAD_MULTIPLE";
    }
}

/* The node layout (gs->nodes, gs->per_node; 0 when the nodes differ in
 * size) and, when mode asks for it and it applies, the two rings of the
 * hierarchical scheme (th->hier). Collective over the world. */
static int hier_setup(fm_gradsync *gs, fm_gs_thread *th, int mode, double timeout_s, fm_err *e)
{
    const fm_world *w = gs->world;
    fm_node nd;
    FM_TRY(fm_node_init(&nd, w, e));
    double leaders = nd.rank == 0;
    int most = nd.size, least = -nd.size;
    int rc = fm_world_sum(w, &leaders, e);
    if (rc == FM_OK)
        rc = fm_world_max_int(w, &most, e);
    if (rc == FM_OK)
        rc = fm_world_max_int(w, &least, e);
    if (rc != FM_OK) {
        fm_node_free(&nd);
        return rc;
    }
    gs->nodes = (int)leaders;
    gs->per_node = most == -least ? most : 0;
    if (mode == FM_GS_HIER_ON && gs->per_node == 0) {
        fm_node_free(&nd);
        return fm_fail(e, FM_ERR_USAGE,
                       "dist.hierarchical: on needs the same number of ranks on every node; the %d nodes hold %d to %d "
                       "ranks: place the ranks evenly (e.g. --ntasks-per-node) or set dist.hierarchical: auto",
                       gs->nodes, -least, most);
    }
    const int use = mode == FM_GS_HIER_ON || (mode == FM_GS_HIER_AUTO && gs->nodes > 1 && gs->per_node > 1);
    if (use) {
        MPI_Comm across = MPI_COMM_NULL;
        /* every rank has just passed the max above: the blocking split returns promptly */
        int mrc = MPI_Comm_split(MPI_COMM_WORLD, nd.rank, w->rank, &across);
        if (mrc != MPI_SUCCESS)
            rc = fm_world_fail(e, mrc, "MPI_Comm_split: the ranks of one local rank across the nodes");
        if (rc == FM_OK)
            rc = fm_ring_init(&th->node, nd.size > 1 ? nd.comm : MPI_COMM_SELF, gs->p->numel, timeout_s, e);
        if (rc == FM_OK)
            rc = fm_ring_init(&th->across, across, gs->p->numel / (size_t)nd.size + 1, timeout_s, e);
        if (across != MPI_COMM_NULL)
            MPI_Comm_free(&across);
        th->hier = gs->hier = rc == FM_OK;
    }
    fm_node_free(&nd);
    return rc;
}

static int thread_start(fm_gradsync *gs, int hier_mode, double timeout_s, int comm_sched, fm_err *e)
{
    int level = MPI_THREAD_SINGLE;
    MPI_Query_thread(&level);
    if (level < MPI_THREAD_SERIALIZED)
        return fm_fail(e, FM_ERR_USAGE,
                       "rank %d: the MPI library gives %s, and the gradient communication thread needs "
                       "MPI_THREAD_SERIALIZED or better: use an MPI built with thread support (Open MPI's default "
                       "build has it)",
                       gs->world->rank, thread_level_name(level));
    fm_gs_thread *th = calloc(1, sizeof *th);
    size_t m = gs->plan.ntensors > 0 ? (size_t)gs->plan.ntensors : 1;
    if (!th || !(th->ready = calloc(m, 1))) {
        free(th);
        return fm_fail(e, FM_ERR_INTERNAL, "out of memory for the communication thread");
    }
    /* the largest bucket any plan can make: the whole gradient */
    th->node.comm = th->across.comm = MPI_COMM_NULL;
    int rc = fm_ring_init(&th->ring, MPI_COMM_WORLD, gs->p->numel, timeout_s, e);
    if (rc == FM_OK)
        rc = hier_setup(gs, th, hier_mode, timeout_s, e);
    if (rc != FM_OK) {
        fm_ring_free(&th->ring);
        fm_ring_free(&th->node);
        fm_ring_free(&th->across);
        free(th->ready);
        free(th);
        return rc;
    }
    th->gs = gs;
    th->nbuckets = 0;
    th->sched_want = comm_sched;
    pthread_mutex_init(&th->mu, NULL);
    pthread_cond_init(&th->work, NULL);
    pthread_cond_init(&th->done, NULL);
    if (pthread_create(&th->tid, NULL, thread_main, th) != 0) {
        fm_ring_free(&th->ring);
        fm_ring_free(&th->node);
        fm_ring_free(&th->across);
        free(th->ready);
        free(th);
        return fm_fail(e, FM_ERR_INTERNAL, "cannot start the communication thread");
    }
    gs->th = th;
    pthread_mutex_lock(&th->mu);
    while (!th->started)
        pthread_cond_wait(&th->done, &th->mu);
    rc = th->start_rc;
    if (rc != FM_OK)
        *e = th->start_err;
    pthread_mutex_unlock(&th->mu);
    if (rc == FM_OK)
        rc = fm_comm_sched_compute(&gs->sched, e); /* nice: this thread and the OpenMP workers */
    if (rc != FM_OK)
        fm_err_prefix(e, "rank %d", gs->world->rank);
    return rc;
}

/* Every rank's policy (or its failure) to every rank: all ranks stop when
 * one could not put an explicitly requested policy in force; the first rank
 * whose policy differs from rank 0's is kept for the log. */
static int sched_agree(fm_gradsync *gs, int rc, fm_err *e)
{
    const fm_world *w = gs->world;
    double mine[2] = { rc == FM_OK ? gs->sched.mode : -1, rc }, *all = malloc((size_t)w->size * 2 * sizeof *all);
    if (!all)
        return rc != FM_OK ? rc : fm_fail(e, FM_ERR_INTERNAL, "out of memory for %d ranks' values", w->size);
    fm_err ae = { 0 };
    int arc = fm_world_allgather(w, mine, 2, all, &ae);
    int bad = -1, differs = -1;
    for (int r = 0; arc == FM_OK && r < w->size; r++) {
        if (all[2 * r] < 0 && bad < 0)
            bad = r;
        if (all[2 * r] != all[0] && differs < 0)
            differs = r;
    }
    const int bad_rc = bad >= 0 ? (int)all[2 * bad + 1] : FM_OK;
    free(all);
    if (rc != FM_OK)
        return rc; /* this rank's own message */
    if (arc != FM_OK) {
        *e = ae;
        return arc;
    }
    if (bad >= 0)
        return fm_fail(e, bad_rc, "rank %d: rank %d could not put dist.comm_sched: %s in force (its message says why)",
                       w->rank, bad, fm_comm_sched_name(gs->sched_want));
    gs->sched_differs = differs;
    return FM_OK;
}

/* dist.comm_sched auto with a gradient of one bucket: nothing overlaps
 * backward, so the communication thread gets no priority (none). */
static int auto_one_bucket(const fm_gradsync *gs)
{
    return gs->sched_want == FM_COMM_SCHED_AUTO && gs->plan.nbuckets <= 1;
}

void fm_gradsync_log_sched(const fm_gradsync *gs, const char *stage)
{
    if (!gs->th || gs->world->rank != 0)
        return;
    char what[320];
    fm_comm_sched_describe(&gs->sched, what, sizeof what);
    const int is_auto = gs->sched_want == FM_COMM_SCHED_AUTO;
    if (auto_one_bucket(gs))
        fm_info("%s: dist.comm_sched: auto: none (one gradient bucket: nothing to overlap with backward)", stage);
    else if (is_auto && gs->sched.mode == FM_COMM_SCHED_NONE) /* nothing helps the thread */
        fm_warn("%s: dist.comm_sched: auto: %s; so %s", stage, gs->sched.tried, what);
    else
        fm_info("%s: dist.comm_sched: %s%s%s%s%s", stage, is_auto ? "auto: " : "", what, gs->sched.tried[0] ? " (" : "",
                gs->sched.tried, gs->sched.tried[0] ? ")" : "");
    if (gs->sched_differs >= 0)
        fm_warn("%s: dist.comm_sched: rank %d put another policy in force than rank 0's %s (another kernel or other "
                "limits on its node)",
                stage, gs->sched_differs, fm_comm_sched_name(gs->sched.mode));
}

static void thread_stop(fm_gradsync *gs)
{
    fm_gs_thread *th = gs->th;
    if (!th)
        return;
    pthread_mutex_lock(&th->mu);
    th->quit = 1;
    pthread_cond_signal(&th->work);
    pthread_mutex_unlock(&th->mu);
    pthread_join(th->tid, NULL);
    fm_ring_free(&th->ring);
    fm_ring_free(&th->node);
    fm_ring_free(&th->across);
    pthread_mutex_destroy(&th->mu);
    pthread_cond_destroy(&th->work);
    pthread_cond_destroy(&th->done);
    free(th->ready);
    free(th);
    gs->th = NULL;
}

/* A new round of the plan's buckets, nothing handed over (the thread is idle):
 * the collective op on the arena-shaped array x. */
static void round_begin(fm_gradsync *gs, int op, float *x)
{
    fm_gs_thread *th = gs->th;
    pthread_mutex_lock(&th->mu);
    th->op = op;
    th->x = x;
    memset(th->ready, 0, (size_t)gs->plan.nbuckets);
    th->nbuckets = gs->plan.nbuckets;
    th->next = 0;
    th->rc = FM_OK;
    th->t_first = th->t_last = 0;
    pthread_mutex_unlock(&th->mu);
}

static void hand_over(fm_gradsync *gs, int k)
{
    fm_gs_thread *th = gs->th;
    pthread_mutex_lock(&th->mu);
    th->ready[k] = 1;
    if (k == th->next)
        pthread_cond_signal(&th->work);
    pthread_mutex_unlock(&th->mu);
    gs->nhanded++;
}

/* Wait until the thread has finished the round; its error, if any. */
static int round_wait(fm_gradsync *gs, fm_err *e)
{
    fm_gs_thread *th = gs->th;
    pthread_mutex_lock(&th->mu);
    while (th->next < th->nbuckets)
        pthread_cond_wait(&th->done, &th->mu);
    int rc = th->rc;
    if (rc != FM_OK)
        *e = th->err;
    pthread_mutex_unlock(&th->mu);
    return rc;
}

/* ---- the runtime ------------------------------------------------------------ */

int fm_gradsync_probe(fm_gradsync *gs, int reps, fm_err *e)
{
    if (!gs->th)
        return FM_OK;
    for (int r = 0; r < reps; r++) {
        /* with a deadline: a rank stopped right after the step's last
         * collective would hold a blocking barrier for ever, unnamed */
        FM_TRY(fm_world_barrier(gs->world, e));
        double t0 = fm_now();
        round_begin(gs, gs->zero ? OP_REDUCE_SCATTER : OP_ALLREDUCE, gs->p->grad);
        gs->th->probe = 1;
        for (int k = 0; k < gs->plan.nbuckets; k++)
            hand_over(gs, k);
        int rc = round_wait(gs, e);
        gs->th->probe = 0;
        FM_TRY(rc);
        double ms = 1e3 * (fm_now() - t0);
        gs->comm_ms = gs->nprobes == 0 || ms < gs->comm_ms ? ms : gs->comm_ms;
        gs->nprobes++;
    }
    return FM_OK;
}

int fm_gradsync_init(fm_gradsync *gs, const fm_world *w, fm_params *p, size_t bucket_bytes, int hier_mode,
                     double timeout_s, int comm_sched, fm_err *e)
{
    memset(gs, 0, sizeof *gs);
    gs->world = w;
    gs->p = p;
    gs->bucket_bytes = bucket_bytes;
    FM_TRY(fm_gs_plan_build(&gs->plan, p, NULL, bucket_bytes, e));
    size_t m = p->n > 0 ? (size_t)p->n : 1;
    gs->pending = calloc(m, sizeof *gs->pending);
    gs->final = calloc(m, 1);
    gs->rec = malloc(m * sizeof *gs->rec);
    gs->t_handed = calloc(3 * m, sizeof(double));
    gs->t_reduce0 = gs->t_handed ? gs->t_handed + m : NULL;
    gs->t_reduce1 = gs->t_handed ? gs->t_handed + 2 * m : NULL;
    gs->staging = gs->plan.packed_floats ? calloc(gs->plan.packed_floats, sizeof(float)) : NULL;
    if (!gs->pending || !gs->final || !gs->rec || !gs->t_handed || (gs->plan.packed_floats && !gs->staging)) {
        fm_gradsync_free(gs);
        return fm_fail(e, FM_ERR_INTERNAL, "out of memory for gradient buckets");
    }
    gs->recording = w->size > 1;
    if (w->size > 1) {
        gs->sched_want = comm_sched;
        /* with one bucket the reduction starts when backward ends: a thread that
         * preempts compute would only cost (measured: the eval classifier's 1000
         * steps at 2 ranks x 1 thread 52 s under rt against 46 s) */
        int rc = thread_start(gs, hier_mode, timeout_s, auto_one_bucket(gs) ? FM_COMM_SCHED_NONE : comm_sched, e);
        if (gs->th) /* the thread is up: every rank agrees before the first collective of the ring */
            rc = sched_agree(gs, rc, e);
        if (rc == FM_OK)
            rc = fm_gradsync_probe(gs, 3, e);
        if (rc != FM_OK) {
            fm_gradsync_free(gs);
            return rc;
        }
    }
    fm_gradsync_begin(gs);
    gs->step = 0;
    return FM_OK;
}

void fm_gradsync_free(fm_gradsync *gs)
{
    thread_stop(gs);
    fm_gs_plan_free(&gs->plan);
    free(gs->staging);
    free(gs->pending);
    free(gs->final);
    free(gs->rec);
    free(gs->t_handed);
    free(gs->shard);
    free(gs->shard_at);
    memset(gs, 0, sizeof *gs);
}

void fm_gradsync_begin(fm_gradsync *gs)
{
    memset(gs->final, 0, (size_t)gs->plan.ntensors);
    for (int k = 0; k < gs->plan.nbuckets; k++)
        gs->pending[k] = gs->plan.buckets[k].ntensors;
    gs->nhanded = 0;
    gs->poll_s = 0;
    gs->step++;
    if (gs->th)
        round_begin(gs, gs->zero ? OP_REDUCE_SCATTER : OP_ALLREDUCE, gs->p->grad);
}

void fm_gradsync_set_fault_hook(fm_gradsync *gs, fm_gs_fault_hook fn, void *ctx)
{
    gs->fault = fn;
    gs->fault_ctx = ctx;
}

/* Pack bucket k if it must be and hand it to the thread. */
static void start_bucket(fm_gradsync *gs, int k)
{
    const fm_gs_bucket *b = &gs->plan.buckets[k];
    if (gs->fault)
        gs->fault(gs->fault_ctx, gs->p, &gs->plan, k);
    if (b->packed) /* the whole bucket into the staging buffer */
        copy_packed(&gs->plan, b, gs->staging, gs->p->grad, 0, b->count, 0);
    gs->t_handed[k] = fm_now();
    hand_over(gs, k);
}

int fm_gradsync_ready(void *ctx, int first, int n, fm_err *e)
{
    fm_gradsync *gs = ctx;
    if (!gs->th)
        return FM_OK;
    if (first < 0 || n < 0 || first > gs->plan.ntensors - n)
        return fm_fail(e, FM_ERR_INTERNAL, "grad hook: tensors [%d, %d) outside the %d registered", first, first + n,
                       gs->plan.ntensors);
    double t0 = fm_now();
    for (int i = first + n - 1; i >= first; i--) {
        if (gs->final[i])
            continue;
        gs->final[i] = 1;
        if (gs->recording)
            gs->rec[gs->nrec++] = i;
        int k = gs->plan.bucket_of[i];
        if (--gs->pending[k] == 0)
            start_bucket(gs, k);
    }
    gs->poll_s += fm_now() - t0;
    return FM_OK;
}

/* After the first step: the plan of the hook order into *pl when it makes
 * other buckets than the current plan (*changed 1), else *changed 0. */
static int next_plan(fm_gradsync *gs, fm_gs_plan *pl, int *changed, fm_err *e)
{
    const int n = gs->plan.ntensors;
    int nrec = gs->nrec;
    gs->recording = 0;
    *changed = 0;
    if (nrec == 0)
        return FM_OK; /* no hooks: the default order is as good as any */
    for (int i = n - 1; i >= 0; i--)
        if (!gs->final[i])
            gs->rec[nrec++] = i;
    if (memcmp(gs->rec, gs->plan.order, (size_t)n * sizeof(int)) == 0)
        return FM_OK;
    FM_TRY(fm_gs_plan_build(pl, gs->p, gs->rec, gs->bucket_bytes, e));
    if (pl->nbuckets == gs->plan.nbuckets &&
        memcmp(pl->bucket_of, gs->plan.bucket_of, (size_t)n * sizeof(int)) == 0) {
        fm_gs_plan_free(pl); /* the same buckets: the start order follows the hooks anyway */
        return FM_OK;
    }
    *changed = 1;
    return FM_OK;
}

/* Put the plan pl in place (it is consumed, also on failure). */
static int install_plan(fm_gradsync *gs, fm_gs_plan *pl, fm_err *e)
{
    if (pl->packed_floats > gs->plan.packed_floats) {
        float *s = realloc(gs->staging, pl->packed_floats * sizeof(float));
        if (!s) {
            fm_gs_plan_free(pl);
            return fm_fail(e, FM_ERR_INTERNAL, "out of memory for gradient staging");
        }
        gs->staging = s;
    }
    fm_gs_plan_free(&gs->plan);
    gs->plan = *pl;
    int packed = 0;
    for (int k = 0; k < pl->nbuckets; k++)
        packed += pl->buckets[k].packed;
    fm_info("gradient sync: the grad hooks report another order than registration: %d bucket%s re-planned in "
            "hook order (%d packed)", pl->nbuckets, pl->nbuckets == 1 ? "" : "s", packed);
    return FM_OK;
}

/* After the first step without ZeRO: plan again if the hooks reported another order. */
static int replan(fm_gradsync *gs, fm_err *e)
{
    fm_gs_plan pl;
    int changed;
    FM_TRY(next_plan(gs, &pl, &changed, e));
    return changed ? install_plan(gs, &pl, e) : FM_OK;
}

int fm_gradsync_finish(fm_gradsync *gs, fm_err *e)
{
    double t0 = fm_now();
    if (!gs->th) {
        if (gs->fault)
            for (int k = 0; k < gs->plan.nbuckets; k++)
                gs->fault(gs->fault_ctx, gs->p, &gs->plan, k);
        gs->last = (fm_gs_timing){ 0, 0, 0 };
        return FM_OK;
    }
    for (int k = 0; k < gs->plan.nbuckets; k++)
        if (gs->pending[k] > 0) {
            gs->pending[k] = 0;
            start_bucket(gs, k);
        }
    FM_TRY(round_wait(gs, e));
    double now = fm_now();
    gs->last.poll_ms = 1e3 * gs->poll_s;
    gs->last.wait_ms = 1e3 * (now - t0);
    gs->last.inflight_ms = gs->nhanded ? 1e3 * (gs->th->t_last - gs->th->t_first) : 0;
    if (gs->recording && gs->zero) { /* the shards change with the plan: see fm_gradsync_replan */
        gs->recording = 0;
        gs->replan_due = 1;
    } else if (gs->recording) {
        FM_TRY(replan(gs, e));
    }
    return FM_OK;
}

/* Rank r's shard of plan pl: its spans into *spans ([nbuckets + nsegs],
 * allocated), their packed positions into *at, the floats into *floats. */
static int shard_of(const fm_gs_plan *pl, int size, int r, fm_gs_seg **spans, size_t **at, int *n, size_t *floats,
                    fm_err *e)
{
    const size_t cap = (size_t)(pl->nbuckets + pl->nsegs) + 1;
    *spans = malloc(cap * sizeof **spans);
    *at = malloc(cap * sizeof **at);
    if (!*spans || !*at) {
        free(*spans);
        free(*at);
        *spans = NULL, *at = NULL;
        return fm_fail(e, FM_ERR_INTERNAL, "out of memory for the ZeRO shard's %zu spans", cap);
    }
    *n = fm_gs_plan_shard(pl, size, r, *spans);
    *floats = 0;
    for (int i = 0; i < *n; i++) {
        (*at)[i] = *floats;
        *floats += (*spans)[i].count;
    }
    return FM_OK;
}

/* The shard of the plan just made to be this rank's (spans, at, n, floats from shard_of). */
static void shard_take(fm_gradsync *gs, fm_gs_seg *spans, size_t *at, int n, size_t floats)
{
    free(gs->shard);
    free(gs->shard_at);
    gs->shard = spans, gs->shard_at = at, gs->nshard = n, gs->shard_floats = floats;
}

int fm_gradsync_set_zero(fm_gradsync *gs, int on, fm_err *e)
{
    gs->zero = on && gs->th;
    if (gs->zero) {
        fm_gs_seg *spans;
        size_t *at, floats;
        int n;
        FM_TRY(shard_of(&gs->plan, gs->world->size, gs->world->rank, &spans, &at, &n, &floats, e));
        shard_take(gs, spans, at, n, floats);
    }
    if (gs->th)
        round_begin(gs, gs->zero ? OP_REDUCE_SCATTER : OP_ALLREDUCE, gs->p->grad);
    return FM_OK;
}

size_t fm_gradsync_shard_floats(const fm_gradsync *gs, int r)
{
    const int p = gs->world->size;
    if (!gs->zero)
        return gs->p->numel;
    size_t n = 0;
    for (int k = 0; k < gs->plan.nbuckets; k++) {
        const size_t c = gs->plan.buckets[k].count;
        n += fm_ring_chunk_off(c, p, r + 1) - fm_ring_chunk_off(c, p, r);
    }
    return n;
}

int fm_gradsync_allgather(fm_gradsync *gs, float *x, fm_err *e)
{
    if (!gs->th)
        return FM_OK;
    round_begin(gs, OP_ALLGATHER, x);
    const int p = gs->world->size, r = gs->world->rank;
    for (int k = 0; k < gs->plan.nbuckets; k++) {
        const fm_gs_bucket *b = &gs->plan.buckets[k];
        if (b->packed) /* our chunk into the staging buffer */
            copy_packed(&gs->plan, b, gs->staging, x, fm_ring_chunk_off(b->count, p, r),
                        fm_ring_chunk_off(b->count, p, r + 1), 0);
        hand_over(gs, k);
    }
    int rc = round_wait(gs, e);
    round_begin(gs, gs->zero ? OP_REDUCE_SCATTER : OP_ALLREDUCE, gs->p->grad);
    return rc;
}

/* Copy the arena spans of x to the packed buffer buf (to_x 0) or back
 * (to_x 1); returns the floats copied. */
static size_t copy_spans(float *buf, float *x, const fm_gs_seg *spans, int n, int to_x)
{
    size_t off = 0;
    for (int i = 0; i < n; i++) {
        float *a = x + spans[i].off, *b = buf + off;
        memcpy(to_x ? a : b, to_x ? b : a, spans[i].count * sizeof(float));
        off += spans[i].count;
    }
    return off;
}

void fm_gradsync_pack(const fm_gradsync *gs, const float *x, float *packed)
{
    copy_spans(packed, (float *)x, gs->shard, gs->nshard, 0); /* x is only read */
}

void fm_gradsync_unpack(const fm_gradsync *gs, const float *packed, float *x)
{
    copy_spans((float *)packed, x, gs->shard, gs->nshard, 1); /* packed is only read */
}

int fm_gradsync_allgather_shard(fm_gradsync *gs, const float *packed, float *x, fm_err *e)
{
    fm_gradsync_unpack(gs, packed, x);
    return fm_gradsync_allgather(gs, x, e);
}

/* Every rank's packed shard to rank 0 (gather 1), which unpacks each into
 * the arena-shaped x, or from rank 0 (gather 0), which packs each from x.
 * Rank 0 takes the ranks in order through one buffer of the largest shard. */
static int shards_rank0(fm_gradsync *gs, float *x, float *packed, int gather, fm_err *e)
{
    if (!gs->zero)
        return FM_OK;
    const int p = gs->world->size, r = gs->world->rank;
    fm_ring *ring = &gs->th->ring;
    snprintf(gs->th->what, sizeof gs->th->what, "%s the optimiser state %s rank 0 at step %lld",
             gather ? "gathering" : "scattering", gather ? "on" : "from", (long long)gs->step);
    ring->what = gs->th->what;
    const int tag = 1 << 20;
    if (r != 0)
        return gather ? fm_ring_send(ring, packed, gs->shard_floats, 0, tag, e)
                      : fm_ring_recv(ring, packed, gs->shard_floats, 0, tag, e);
    copy_spans(packed, x, gs->shard, gs->nshard, gather);
    size_t most = 0;
    for (int q = 1; q < p; q++) {
        const size_t n = fm_gradsync_shard_floats(gs, q);
        most = n > most ? n : most;
    }
    float *buf = malloc((most ? most : 1) * sizeof(float));
    if (!buf)
        return fm_fail(e, FM_ERR_INTERNAL, "out of memory for a shard of %zu floats on rank 0", most);
    int rc = FM_OK;
    for (int q = 1; q < p && rc == FM_OK; q++) {
        fm_gs_seg *spans;
        size_t *at, n;
        int ns;
        if ((rc = shard_of(&gs->plan, p, q, &spans, &at, &ns, &n, e)) != FM_OK)
            break;
        if (gather && (rc = fm_ring_recv(ring, buf, n, q, tag, e)) == FM_OK)
            copy_spans(buf, x, spans, ns, 1);
        if (!gather) {
            copy_spans(buf, x, spans, ns, 0);
            rc = fm_ring_send(ring, buf, n, q, tag, e);
        }
        free(spans);
        free(at);
    }
    free(buf);
    return rc;
}

int fm_gradsync_gather0(fm_gradsync *gs, const float *packed, float *x, fm_err *e)
{
    return shards_rank0(gs, x, (float *)packed, 1, e); /* packed is only read */
}

int fm_gradsync_scatter0(fm_gradsync *gs, const float *x, float *packed, fm_err *e)
{
    return shards_rank0(gs, (float *)x, packed, 0, e); /* x is only read */
}

int fm_gradsync_replan(fm_gradsync *gs, float **xs[], int n, float *scratch, fm_err *e)
{
    if (!gs->replan_due)
        return FM_OK;
    gs->replan_due = 0;
    fm_gs_plan pl;
    int changed;
    FM_TRY(next_plan(gs, &pl, &changed, e));
    if (!changed)
        return FM_OK;
    fm_gs_seg *spans = NULL;
    size_t *at = NULL, floats = 0;
    int ns = 0;
    int rc = shard_of(&pl, gs->world->size, gs->world->rank, &spans, &at, &ns, &floats, e);
    const size_t bytes = (floats * sizeof(float) + 63) & ~(size_t)63;
    for (int i = 0; i < n && rc == FM_OK; i++) { /* old shard -> whole (old plan) -> new shard */
        fm_gradsync_unpack(gs, *xs[i], scratch);
        free(*xs[i]);
        *xs[i] = NULL;
        rc = fm_gradsync_allgather(gs, scratch, e);
        if (rc == FM_OK && !(*xs[i] = aligned_alloc(64, bytes ? bytes : 64)))
            rc = fm_fail(e, FM_ERR_INTERNAL, "out of memory for a ZeRO shard of %zu floats", floats);
        if (rc == FM_OK)
            copy_spans(*xs[i], scratch, spans, ns, 0);
    }
    if (rc == FM_OK) {
        rc = install_plan(gs, &pl, e);
    } else {
        fm_gs_plan_free(&pl);
    }
    if (rc != FM_OK) {
        free(spans);
        free(at);
        return rc;
    }
    shard_take(gs, spans, at, ns, floats);
    return FM_OK;
}
