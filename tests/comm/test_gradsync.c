/* test_gradsync.c - the gradient bucket plan and the bucketed allreduce.
 *
 * Run alone (1 rank): the plan against a naive reference planner (ranges,
 * backward order, sizes, a huge tensor alone in an oversized bucket, packing
 * of non-neighbour tensors) and the 1-rank runtime (no MPI call, the fault hook).
 * Run under mpirun (tests/comm/test_multirank.sh does, with 2 and 3 ranks):
 * the runtime with hooks in a model-like order that is not the registration
 * order, so that step 0 re-plans with packed buckets; every step's gradient
 * must equal the mean over ranks; and a rank that never reaches the probe's
 * barrier is named by the others within dist.timeout. */
#include <math.h>
#include <mpi.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "fm/gradsync.h"
#include "fm/shared.h"
#include "fm/world.h"
#include "test.h"

/* numel of the test tensors; index 5 is the huge one (> any bucket below) */
static const int64_t SIZES[] = { 10, 300, 5000, 17, 64, 100000, 64, 1, 2048, 333, 16, 7 };
enum { NT = (int)(sizeof SIZES / sizeof SIZES[0]), HUGE_T = 5 };

static fm_world g_world = { 0, 1, 0, 600 };

static int make_params(fm_params *p, fm_err *e)
{
    FM_TRY(fm_params_init(p, NT, 200000, 1, e));
    for (int i = 0; i < NT; i++)
        FM_TRY(fm_params_add(p, NULL, 1, &SIZES[i], e, "t%d", i));
    return FM_OK;
}

static size_t ext(const fm_params *p, int i)
{
    return (i + 1 < p->n ? p->items[i + 1].offset : p->numel) - p->items[i].offset;
}

/* The reference: greedy buckets over `order`, written the obvious way:
 * member[k] = bucket of order position k. Returns the bucket count. */
static int ref_plan(const fm_params *p, const int *order, size_t cap_floats, int *member)
{
    int b = 0;
    size_t acc = 0;
    for (int k = 0; k < p->n; k++) {
        size_t x = ext(p, order[k]);
        if (acc > 0 && acc + x > cap_floats) {
            b++;
            acc = 0;
        }
        member[k] = b;
        acc += x;
    }
    return p->n ? b + 1 : 0;
}

/* Every property of a plan for this order and cap. */
static int check_plan(const fm_params *p, const fm_gs_plan *pl, const int *order, size_t bucket_bytes)
{
    const size_t cap = bucket_bytes / sizeof(float);
    int member[NT];
    int nref = ref_plan(p, order, cap, member);
    CHECK(pl->nbuckets == nref, "%d buckets, reference %d", pl->nbuckets, nref);
    CHECK(pl->ntensors == p->n, "%d tensors", pl->ntensors);
    for (int k = 0; k < p->n; k++) {
        CHECK(pl->order[k] == order[k], "order[%d] = %d, want %d", k, pl->order[k], order[k]);
        CHECK(pl->bucket_of[order[k]] == member[k], "tensor %d in bucket %d, reference %d", order[k],
              pl->bucket_of[order[k]], member[k]);
    }
    size_t packed_total = 0;
    int pos = 0;
    for (int b = 0; b < pl->nbuckets; b++) {
        const fm_gs_bucket *k = &pl->buckets[b];
        CHECK(k->pos0 == pos && k->ntensors > 0, "bucket %d starts at %d (want %d), %d tensors", b, k->pos0, pos,
              k->ntensors);
        pos += k->ntensors;
        /* which tensors, and are they one run of neighbours? */
        uint8_t in[NT] = { 0 };
        size_t count = 0;
        int lo = NT, hi = -1;
        for (int j = 0; j < k->ntensors; j++) {
            int t = order[k->pos0 + j];
            in[t] = 1;
            count += ext(p, t);
            lo = t < lo ? t : lo;
            hi = t > hi ? t : hi;
        }
        CHECK(k->count == count, "bucket %d: %zu floats, tensors hold %zu", b, k->count, count);
        CHECK(k->count * sizeof(float) <= bucket_bytes || k->ntensors == 1,
              "bucket %d: %zu bytes > %zu with %d tensors", b, k->count * sizeof(float), bucket_bytes, k->ntensors);
        if (b + 1 < pl->nbuckets) /* greedy: the next tensor did not fit */
            CHECK((k->count + ext(p, order[k->pos0 + k->ntensors])) * sizeof(float) > bucket_bytes,
                  "bucket %d closed early", b);
        int run = hi - lo + 1 == k->ntensors;
        CHECK(k->packed == !run, "bucket %d: packed %d, tensors %d..%d of %d", b, k->packed, lo, hi, k->ntensors);
        if (!k->packed) {
            CHECK(k->off == p->items[lo].offset, "bucket %d at %zu, tensor %d at %zu", b, k->off, lo,
                  p->items[lo].offset);
            CHECK(k->nseg == 0, "contiguous bucket with segments");
        } else {
            CHECK(k->off == packed_total, "packed bucket %d at staging %zu, want %zu", b, k->off, packed_total);
            packed_total += k->count;
            /* its segments cover exactly its tensors, in arena order, each a maximal run */
            size_t segsum = 0;
            for (int s = 0; s < k->nseg; s++) {
                const fm_gs_seg *g = &pl->segs[k->seg0 + s];
                segsum += g->count;
                for (int t = 0; t < NT; t++) {
                    size_t a = p->items[t].offset, z = a + ext(p, t);
                    int inside = a >= g->off && z <= g->off + g->count;
                    int overlap = a < g->off + g->count && z > g->off;
                    CHECK(inside == overlap, "segment %d of bucket %d cuts tensor %d", s, b, t);
                    CHECK(!inside || in[t], "segment %d of bucket %d holds foreign tensor %d", s, b, t);
                }
                if (s > 0)
                    CHECK(g->off > pl->segs[k->seg0 + s - 1].off + pl->segs[k->seg0 + s - 1].count,
                          "segments %d, %d of bucket %d touch or are out of order", s - 1, s, b);
            }
            CHECK(segsum == k->count, "bucket %d: segments hold %zu of %zu floats", b, segsum, k->count);
        }
    }
    CHECK(pos == p->n, "buckets hold %d of %d tensors", pos, p->n);
    CHECK(pl->packed_floats == packed_total, "staging %zu, packed buckets %zu", pl->packed_floats, packed_total);
    return 0;
}

/* Default (backward = reverse registration) order: every bucket contiguous,
 * the buckets tile the arena from its end down; the huge tensor is alone. */
static int test_plan_default_order(void)
{
    fm_err e = { 0 };
    fm_params p;
    CHECK_OK(make_params(&p, &e), &e);
    const size_t sizes[] = { 4096, 8192, 40000, 1 << 20, 1 };
    for (size_t c = 0; c < sizeof sizes / sizeof *sizes; c++) {
        fm_gs_plan pl;
        CHECK_OK(fm_gs_plan_build(&pl, &p, NULL, sizes[c], &e), &e);
        int order[NT];
        for (int k = 0; k < NT; k++)
            order[k] = NT - 1 - k;
        int bad = check_plan(&p, &pl, order, sizes[c]);
        size_t end = p.numel;
        for (int b = 0; b < pl.nbuckets && !bad; b++) {
            const fm_gs_bucket *k = &pl.buckets[b];
            bad |= k->packed || k->off + k->count != end;
            end = k->off;
        }
        bad |= end != 0 || pl.packed_floats != 0;
        int huge_b = pl.bucket_of[HUGE_T];
        const fm_gs_bucket *h = &pl.buckets[huge_b];
        int huge_ok = sizes[c] >= ext(&p, HUGE_T) * 4 || (h->ntensors == 1 && h->count * 4 > sizes[c]);
        size_t max_bucket = pl.max_bucket;
        int nb = pl.nbuckets;
        fm_gs_plan_free(&pl);
        CHECK(!bad, "bucket_bytes %zu: buckets do not tile the arena downwards", sizes[c]);
        CHECK(huge_ok, "bucket_bytes %zu: the huge tensor shares its bucket", sizes[c]);
        CHECK(max_bucket >= (size_t)SIZES[HUGE_T], "largest bucket %zu", max_bucket);
        if (sizes[c] == 1)
            CHECK(nb == NT, "1-byte buckets: %d buckets for %d tensors", nb, NT);
        if (sizes[c] == 1 << 20)
            CHECK(nb == 1, "1 MiB: %d buckets", nb);
    }
    fm_params_free(&p);
    return 0;
}

/* A U-Net-like hook order (blocks reported out of registration order):
 * buckets follow it, non-neighbour buckets are packed. */
static int test_plan_hook_order_packs(void)
{
    fm_err e = { 0 };
    fm_params p;
    CHECK_OK(make_params(&p, &e), &e);
    const int order[NT] = { 11, 10, 7, 8, 9, 4, 5, 6, 3, 1, 2, 0 };
    const size_t sizes[] = { 4096, 10000, 1 << 20, 64 };
    int saw_packed = 0, saw_contig = 0;
    for (size_t c = 0; c < sizeof sizes / sizeof *sizes; c++) {
        fm_gs_plan pl;
        CHECK_OK(fm_gs_plan_build(&pl, &p, order, sizes[c], &e), &e);
        int bad = check_plan(&p, &pl, order, sizes[c]);
        for (int b = 0; b < pl.nbuckets; b++) {
            saw_packed |= pl.buckets[b].packed && pl.buckets[b].nseg > 1;
            saw_contig |= !pl.buckets[b].packed;
        }
        fm_gs_plan_free(&pl);
        CHECK(!bad, "bucket_bytes %zu", sizes[c]);
    }
    CHECK(saw_packed && saw_contig, "packed %d contiguous %d: the cases do not cover both", saw_packed, saw_contig);
    fm_params_free(&p);
    return 0;
}

/* Random orders and caps against the reference. */
static int test_plan_random_orders(void)
{
    fm_err e = { 0 };
    fm_params p;
    CHECK_OK(make_params(&p, &e), &e);
    uint64_t s = 12345;
    for (int trial = 0; trial < 200; trial++) {
        int order[NT];
        for (int i = 0; i < NT; i++)
            order[i] = i;
        for (int i = NT - 1; i > 0; i--) {
            s = s * 6364136223846793005ull + 1442695040888963407ull;
            int j = (int)((s >> 33) % (uint64_t)(i + 1)), t = order[i];
            order[i] = order[j];
            order[j] = t;
        }
        s = s * 6364136223846793005ull + 1442695040888963407ull;
        size_t bytes = 4 + (size_t)((s >> 33) % 60000);
        fm_gs_plan pl;
        CHECK_OK(fm_gs_plan_build(&pl, &p, order, bytes, &e), &e);
        int bad = check_plan(&p, &pl, order, bytes);
        fm_gs_plan_free(&pl);
        CHECK(!bad, "trial %d, bucket_bytes %zu", trial, bytes);
    }
    fm_params_free(&p);
    return 0;
}

static int test_plan_rejects_bad_input(void)
{
    fm_err e = { 0 };
    fm_params p;
    CHECK_OK(make_params(&p, &e), &e);
    fm_gs_plan pl;
    int dup[NT];
    for (int i = 0; i < NT; i++)
        dup[i] = i;
    dup[3] = 7;
    CHECK(fm_gs_plan_build(&pl, &p, dup, 4096, &e) == FM_ERR_USAGE && strstr(e.msg, "order"), "%s", e.msg);
    dup[3] = NT;
    CHECK(fm_gs_plan_build(&pl, &p, dup, 4096, &e) == FM_ERR_USAGE, "%s", e.msg);
    CHECK(fm_gs_plan_build(&pl, &p, NULL, 0, &e) == FM_ERR_USAGE && strstr(e.msg, "bucket"), "%s", e.msg);
    fm_params_free(&p);
    return 0;
}

/* A fault hook that makes grad[0] NaN in the bucket holding it, once armed. */
typedef struct poison_ctx {
    int armed, calls;
} poison_ctx;

static void poison(void *ctx, fm_params *p, const fm_gs_plan *pl, int k)
{
    poison_ctx *c = ctx;
    c->calls++;
    if (c->armed && k == pl->bucket_of[0]) {
        p->grad[p->items[0].offset] = NAN;
        c->armed = 0;
    }
}

/* One rank: the gradient is untouched, the fault hook sees every bucket, no MPI. */
static int test_one_rank_runtime(void)
{
    fm_err e = { 0 };
    fm_params p;
    CHECK_OK(make_params(&p, &e), &e);
    fm_world w1 = { 0, 1, 0, 600 };
    fm_gradsync gs;
    CHECK_OK(fm_gradsync_init(&gs, &w1, &p, 4096, FM_GS_HIER_AUTO, 60, FM_COMM_SCHED_NONE, &e), &e);
    poison_ctx pc = { 0, 0 };
    fm_gradsync_set_fault_hook(&gs, poison, &pc);
    for (size_t i = 0; i < p.numel; i++)
        p.grad[i] = (float)(i % 13);
    fm_gradsync_begin(&gs);
    CHECK_OK(fm_gradsync_ready(&gs, 2, 3, &e), &e);
    CHECK_OK(fm_gradsync_finish(&gs, &e), &e);
    int same = 1;
    for (size_t i = 0; i < p.numel; i++)
        same &= p.grad[i] == (float)(i % 13);
    fm_gradsync_begin(&gs);
    pc.armed = 1;
    CHECK_OK(fm_gradsync_finish(&gs, &e), &e);
    CHECK(pc.calls == 2 * gs.plan.nbuckets, "fault hook called %d times for 2 x %d buckets", pc.calls,
          gs.plan.nbuckets);
    int nan0 = isnan(p.grad[0]) && p.grad[1] == 1.0f;
    double comm = gs.comm_ms;
    fm_gradsync_free(&gs);
    fm_params_free(&p);
    CHECK(same, "one rank changed the gradient");
    CHECK(nan0, "poison did not set grad[0] alone");
    CHECK(comm == 0, "comm_ms %g with one rank", comm);
    return 0;
}

/* The value rank r holds at element i in step s (exact in fp32; padding 0). */
static float grad_value(int r, size_t i, int s) { return (float)((r + 1) * (int)((i * 7 + (size_t)s) % 29)) - 40.0f; }

/* Several ranks: hooks in a model-like order (not registration order), one
 * tensor reported twice, two never reported (left to finish); three steps,
 * poison on rank 0 in the last. Failures are collected and checked after the
 * last collective so that no rank leaves early. */
static int test_mpi_runtime(void)
{
    fm_err e = { 0 };
    const fm_world *w = &g_world;
    fm_params p;
    CHECK_OK(make_params(&p, &e), &e);
    fm_gradsync gs;
    CHECK_OK(fm_gradsync_init(&gs, w, &p, 10000, FM_GS_HIER_AUTO, 60, FM_COMM_SCHED_NONE, &e), &e);
    CHECK(gs.comm_ms > 0, "no blocking probe time");
    /* nodes faked k by k (tests/comm/test_hier.sh): the hierarchical scheme when > 1 node of > 1 rank */
    const char *k_env = getenv(FM_NODE_ENV);
    const int k = k_env ? atoi(k_env) : 0;
    if (k > 1 && k < w->size && w->size % k == 0)
        CHECK(gs.hier && gs.nodes == w->size / k && gs.per_node == k, "%d ranks in nodes of %d: hier %d, %d x %d",
              w->size, k, gs.hier, gs.nodes, gs.per_node);
    else if (!k_env)
        CHECK(!gs.hier && gs.nodes == 1 && gs.per_node == w->size, "one node: hier %d, %d x %d", gs.hier, gs.nodes,
              gs.per_node);
    poison_ctx pc = { 0, 0 };
    fm_gradsync_set_fault_hook(&gs, poison, &pc);
    /* hook calls (first, n) in backward order; tensors 0 and 3 are never reported */
    const int calls[][2] = { { 10, 2 }, { 7, 3 }, { 4, 3 }, { 5, 1 }, { 1, 2 } };
    const int ncalls = (int)(sizeof calls / sizeof calls[0]);
    int wrong = 0, wrong_step = -1, replanned = 0, poisoned = 0, rc = FM_OK;
    for (int s = 0; s < 3 && rc == FM_OK; s++) {
        for (size_t i = 0; i < p.numel; i++)
            p.grad[i] = 0;
        for (int t = 0; t < p.n; t++)
            for (int64_t j = 0; j < SIZES[t]; j++)
                p.grad[p.items[t].offset + (size_t)j] = grad_value(w->rank, p.items[t].offset + (size_t)j, s);
        fm_gradsync_begin(&gs);
        pc.armed = s == 2 && w->rank == 0;
        for (int c = 0; c < ncalls && rc == FM_OK; c++)
            rc = fm_gradsync_ready(&gs, calls[c][0], calls[c][1], &e);
        if (rc == FM_OK)
            rc = fm_gradsync_finish(&gs, &e);
        if (s == 0) { /* the recorded order: calls, each high to low, then 3, 0 */
            const int want[NT] = { 11, 10, 9, 8, 7, 6, 5, 4, 2, 1, 3, 0 };
            replanned = memcmp(gs.plan.order, want, sizeof want) == 0;
        }
        for (int t = 0; t < p.n; t++)
            for (int64_t j = 0; j < SIZES[t]; j++) {
                size_t i = p.items[t].offset + (size_t)j;
                double sum = 0;
                for (int r = 0; r < w->size; r++)
                    sum += grad_value(r, i, s);
                float want = (float)sum * (1.0f / (float)w->size);
                float got = p.grad[i];
                if (s == 2 && i == 0) {
                    poisoned = isnan(got);
                    continue;
                }
                if (fabsf(got - want) > 1e-6f * (1 + fabsf(want)) && !wrong++)
                    wrong_step = s;
            }
    }
    int packed = 0;
    for (int b = 0; b < gs.plan.nbuckets; b++)
        packed += gs.plan.buckets[b].packed;
    fm_gs_timing tm = gs.last;
    fm_gradsync_free(&gs);
    fm_params_free(&p);
    CHECK(rc == FM_OK, "%s", e.msg);
    CHECK(!wrong, "%d wrong gradient values, first in step %d (%d ranks)", wrong, wrong_step, w->size);
    CHECK(replanned, "step 0 did not re-plan in hook order");
    CHECK(packed > 0, "the hook order gave no packed bucket: the packing path is not covered");
    CHECK(poisoned, "rank 0's poison did not reach rank %d", w->rank);
    CHECK(tm.wait_ms >= 0 && tm.inflight_ms > 0, "timing wait %g inflight %g", tm.wait_ms, tm.inflight_ms);
    return 0;
}

/* The last rank never comes to the probe (stopped right after the step's
 * last collective): the others must fail within the deadline, naming it,
 * instead of waiting for ever in a barrier. Then it joins their barrier late,
 * so that every rank leaves with no collective open. */
static int test_probe_absent_rank(void)
{
    fm_err e = { 0 };
    fm_world w = g_world;
    w.timeout_s = 2;
    const int absent = w.size - 1;
    fm_params p;
    CHECK_OK(make_params(&p, &e), &e);
    fm_gradsync gs;
    CHECK_OK(fm_gradsync_init(&gs, &w, &p, 10000, FM_GS_HIER_AUTO, 60, FM_COMM_SCHED_NONE, &e), &e);
    int rc = FM_OK;
    double t0 = MPI_Wtime(), waited = 0;
    if (w.rank != absent) {
        rc = fm_gradsync_probe(&gs, 1, &e);
        waited = MPI_Wtime() - t0;
    } else { /* past the others' deadline and the time they listen for each other */
        const struct timespec ts = { 7, 0 };
        nanosleep(&ts, NULL);
        MPI_Request req;
        MPI_Ibarrier(MPI_COMM_WORLD, &req);
        MPI_Wait(&req, MPI_STATUS_IGNORE);
    }
    MPI_Barrier(MPI_COMM_WORLD);
    fm_gradsync_free(&gs);
    fm_params_free(&p);
    if (w.rank == absent)
        return 0;
    char want[32];
    snprintf(want, sizeof want, "rank %d did not arrive", absent);
    CHECK(rc != FM_OK, "rank %d: the probe succeeded without rank %d", w.rank, absent);
    CHECK(strstr(e.msg, want), "rank %d: the error does not say '%s': %s", w.rank, want, e.msg);
    CHECK(waited < 6.5, "rank %d waited %.1f s with a 2 s deadline", w.rank, waited);
    return 0;
}

int main(int argc, char **argv)
{
    fm_err e = { 0 };
    if (fm_world_init(&g_world, &argc, &argv, &e) != FM_OK) {
        printf("FAIL comm/gradsync_init: %s\n", e.msg);
        return 1;
    }
    static const fm_test one[] = {
        TEST(test_plan_default_order),   TEST(test_plan_hook_order_packs), TEST(test_plan_random_orders),
        TEST(test_plan_rejects_bad_input), TEST(test_one_rank_runtime),
    };
    static const fm_test many[] = { TEST(test_mpi_runtime), TEST(test_probe_absent_rank) };
    int rc = g_world.size == 1 ? fm_test_main("comm", one, (int)(sizeof one / sizeof one[0]), argc, argv)
                               : fm_test_main("comm", many, (int)(sizeof many / sizeof many[0]), argc, argv);
    fm_world_finalize(&g_world);
    return rc;
}
