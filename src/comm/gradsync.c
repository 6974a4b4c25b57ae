/* gradsync.c - bucketed, overlapped gradient averaging over MPI ranks. */
#include "fm/gradsync.h"

#include <limits.h>
#include <math.h>
#include <mpi.h>
#include <stdlib.h>
#include <string.h>

#include "fm/log.h"
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

void fm_gs_plan_free(fm_gs_plan *pl)
{
    free(pl->order);
    free(pl->bucket_of);
    free(pl->buckets);
    free(pl->segs);
    memset(pl, 0, sizeof *pl);
}

/* ---- the runtime ------------------------------------------------------------ */

static float *bucket_buf(fm_gradsync *gs, const fm_gs_bucket *b)
{
    return b->packed ? gs->staging + b->off : gs->p->grad + b->off;
}

int fm_gradsync_probe(fm_gradsync *gs, int reps, fm_err *e)
{
    if (gs->world->size == 1)
        return FM_OK;
    for (int r = 0; r < reps; r++) {
        int rc = MPI_Barrier(MPI_COMM_WORLD);
        if (rc != MPI_SUCCESS)
            return fm_world_fail(e, rc, "MPI_Barrier before the allreduce probe");
        double t0 = fm_now();
        MPI_Request *reqs = gs->reqs;
        for (int k = 0; k < gs->plan.nbuckets; k++) {
            const fm_gs_bucket *b = &gs->plan.buckets[k];
            rc = MPI_Iallreduce(MPI_IN_PLACE, bucket_buf(gs, b), (int)b->count, MPI_FLOAT, MPI_SUM, MPI_COMM_WORLD,
                                &reqs[k]);
            if (rc != MPI_SUCCESS)
                return fm_world_fail(e, rc, "MPI_Iallreduce (allreduce probe)");
        }
        rc = MPI_Waitall(gs->plan.nbuckets, reqs, MPI_STATUSES_IGNORE);
        if (rc != MPI_SUCCESS)
            return fm_world_fail(e, rc, "MPI_Waitall (allreduce probe)");
        double ms = 1e3 * (fm_now() - t0);
        gs->comm_ms = gs->nprobes == 0 || ms < gs->comm_ms ? ms : gs->comm_ms;
        gs->nprobes++;
    }
    return FM_OK;
}

int fm_gradsync_init(fm_gradsync *gs, const fm_world *w, fm_params *p, size_t bucket_bytes, fm_err *e)
{
    memset(gs, 0, sizeof *gs);
    gs->world = w;
    gs->p = p;
    gs->bucket_bytes = bucket_bytes;
    FM_TRY(fm_gs_plan_build(&gs->plan, p, NULL, bucket_bytes, e));
    size_t m = p->n > 0 ? (size_t)p->n : 1;
    MPI_Request *reqs = malloc(m * sizeof *reqs);
    gs->reqs = reqs;
    gs->pending = calloc(m, sizeof *gs->pending);
    gs->final = calloc(m, 1);
    gs->rec = malloc(m * sizeof *gs->rec);
    gs->staging = gs->plan.packed_floats ? calloc(gs->plan.packed_floats, sizeof(float)) : NULL;
    if (!reqs || !gs->pending || !gs->final || !gs->rec || (gs->plan.packed_floats && !gs->staging)) {
        fm_gradsync_free(gs);
        return fm_fail(e, FM_ERR_INTERNAL, "out of memory for gradient buckets");
    }
    for (size_t i = 0; i < m; i++)
        reqs[i] = MPI_REQUEST_NULL;
    gs->recording = w->size > 1;
    if (w->size > 1) {
        int rc = fm_gradsync_probe(gs, 3, e);
        if (rc != FM_OK) {
            fm_gradsync_free(gs);
            return rc;
        }
    }
    fm_gradsync_begin(gs);
    return FM_OK;
}

void fm_gradsync_free(fm_gradsync *gs)
{
    fm_gs_plan_free(&gs->plan);
    free(gs->staging);
    free(gs->reqs);
    free(gs->pending);
    free(gs->final);
    free(gs->rec);
    memset(gs, 0, sizeof *gs);
}

void fm_gradsync_begin(fm_gradsync *gs)
{
    memset(gs->final, 0, (size_t)gs->plan.ntensors);
    for (int k = 0; k < gs->plan.nbuckets; k++)
        gs->pending[k] = gs->plan.buckets[k].ntensors;
    gs->nstarted = gs->ndone = 0;
    gs->t_first = gs->t_last = 0;
    gs->poll_s = 0;
    gs->poison = 0;
}

void fm_gradsync_poison(fm_gradsync *gs) { gs->poison = 1; }

static int start_bucket(fm_gradsync *gs, int k, fm_err *e)
{
    const fm_gs_bucket *b = &gs->plan.buckets[k];
    float *grad = gs->p->grad;
    if (gs->poison && gs->plan.ntensors > 0 && k == gs->plan.bucket_of[0]) {
        grad[gs->p->items[0].offset] = NAN;
        gs->poison = 0;
    }
    float *buf = bucket_buf(gs, b);
    if (b->packed) {
        float *dst = buf;
        for (int s = 0; s < b->nseg; s++) {
            const fm_gs_seg *g = &gs->plan.segs[b->seg0 + s];
            memcpy(dst, grad + g->off, g->count * sizeof(float));
            dst += g->count;
        }
    }
    if (gs->nstarted == 0)
        gs->t_first = fm_now();
    MPI_Request *reqs = gs->reqs;
    int rc = MPI_Iallreduce(MPI_IN_PLACE, buf, (int)b->count, MPI_FLOAT, MPI_SUM, MPI_COMM_WORLD, &reqs[k]);
    if (rc != MPI_SUCCESS)
        return fm_world_fail(e, rc, "MPI_Iallreduce of a gradient bucket");
    gs->nstarted++;
    return FM_OK;
}

/* Let the open reductions advance; note when all started ones are done. */
static int poll(fm_gradsync *gs, fm_err *e)
{
    if (gs->ndone == gs->nstarted)
        return FM_OK;
    int flag = 0;
    int rc = MPI_Testall(gs->plan.nbuckets, gs->reqs, &flag, MPI_STATUSES_IGNORE);
    if (rc != MPI_SUCCESS)
        return fm_world_fail(e, rc, "MPI_Testall on gradient buckets");
    if (flag) {
        gs->ndone = gs->nstarted;
        gs->t_last = fm_now();
    }
    return FM_OK;
}

int fm_gradsync_ready(void *ctx, int first, int n, fm_err *e)
{
    fm_gradsync *gs = ctx;
    if (gs->world->size == 1)
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
            FM_TRY(start_bucket(gs, k, e));
    }
    FM_TRY(poll(gs, e));
    gs->poll_s += fm_now() - t0;
    return FM_OK;
}

/* After the first step: plan again if the hooks reported another order. */
static int replan(fm_gradsync *gs, fm_err *e)
{
    const int n = gs->plan.ntensors;
    int nrec = gs->nrec;
    gs->recording = 0;
    if (nrec == 0)
        return FM_OK; /* no hooks: the default order is as good as any */
    for (int i = n - 1; i >= 0; i--)
        if (!gs->final[i])
            gs->rec[nrec++] = i;
    if (memcmp(gs->rec, gs->plan.order, (size_t)n * sizeof(int)) == 0)
        return FM_OK;
    fm_gs_plan pl;
    FM_TRY(fm_gs_plan_build(&pl, gs->p, gs->rec, gs->bucket_bytes, e));
    if (pl.nbuckets == gs->plan.nbuckets &&
        memcmp(pl.bucket_of, gs->plan.bucket_of, (size_t)n * sizeof(int)) == 0) {
        fm_gs_plan_free(&pl); /* the same buckets: the start order follows the hooks anyway */
        return FM_OK;
    }
    if (pl.packed_floats > gs->plan.packed_floats) {
        float *s = realloc(gs->staging, pl.packed_floats * sizeof(float));
        if (!s) {
            fm_gs_plan_free(&pl);
            return fm_fail(e, FM_ERR_INTERNAL, "out of memory for gradient staging");
        }
        gs->staging = s;
    }
    fm_gs_plan_free(&gs->plan);
    gs->plan = pl;
    int packed = 0;
    for (int k = 0; k < pl.nbuckets; k++)
        packed += pl.buckets[k].packed;
    fm_info("gradient sync: the grad hooks report another order than registration: %d bucket%s re-planned in "
            "hook order (%d packed)", pl.nbuckets, pl.nbuckets == 1 ? "" : "s", packed);
    return FM_OK;
}

int fm_gradsync_finish(fm_gradsync *gs, fm_err *e)
{
    double t0 = fm_now();
    fm_params *p = gs->p;
    if (gs->world->size == 1) {
        if (gs->poison && p->n > 0)
            p->grad[p->items[0].offset] = NAN;
        gs->poison = 0;
        gs->last = (fm_gs_timing){ 0, 0, 0 };
        return FM_OK;
    }
    for (int k = 0; k < gs->plan.nbuckets; k++)
        if (gs->pending[k] > 0) {
            gs->pending[k] = 0;
            FM_TRY(start_bucket(gs, k, e));
        }
    int rc = MPI_Waitall(gs->plan.nbuckets, gs->reqs, MPI_STATUSES_IGNORE);
    if (rc != MPI_SUCCESS)
        return fm_world_fail(e, rc, "MPI_Waitall on gradient buckets");
    if (gs->ndone < gs->nstarted) {
        gs->ndone = gs->nstarted;
        gs->t_last = fm_now();
    }
    for (int k = 0; k < gs->plan.nbuckets; k++) {
        const fm_gs_bucket *b = &gs->plan.buckets[k];
        if (!b->packed)
            continue;
        const float *src = gs->staging + b->off;
        for (int s = 0; s < b->nseg; s++) {
            const fm_gs_seg *g = &gs->plan.segs[b->seg0 + s];
            memcpy(p->grad + g->off, src, g->count * sizeof(float));
            src += g->count;
        }
    }
    const float scale = 1.0f / (float)gs->world->size;
    float *g = p->grad;
    const long n = (long)p->numel;
#pragma omp parallel for schedule(static)
    for (long i = 0; i < n; i++)
        g[i] *= scale;
    double now = fm_now();
    gs->last.poll_ms = 1e3 * gs->poll_s;
    gs->last.wait_ms = 1e3 * (now - t0);
    gs->last.inflight_ms = gs->nstarted ? 1e3 * (gs->t_last - gs->t_first) : 0;
    if (gs->recording)
        FM_TRY(replan(gs, e));
    return FM_OK;
}
