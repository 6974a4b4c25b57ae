/* test_ring.c - the ring reduce-scatter / allgather / allreduce (ring.h).
 *
 * Run alone (1 rank) by the suite and under mpirun with 2, 3 and 4 ranks by
 * tests/comm/test_multirank.sh. Checks, at sizes from 0 to more than the
 * chunk count: exact sums of integers, the documented summation order on
 * arbitrary floats (bit for bit), the same bits on every rank, the owned
 * chunk after a reduce-scatter, and the deadline naming the rank that did
 * not arrive. */
#include <math.h>
#include <mpi.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "fm/crc32c.h"
#include "fm/ring.h"
#include "test.h"

static int g_rank, g_size;

/* Deterministic values: small integers (exact sums) or arbitrary floats. */
static float int_value(int r, size_t i) { return (float)((int)((i * 2654435761u + (size_t)r * 97) % 61) - 30); }

static float any_value(int r, size_t i)
{
    uint64_t z = (i + 1) * 0x9E3779B97F4A7C15ull ^ (uint64_t)(r + 1) * 0xBF58476D1CE4E5B9ull;
    z ^= z >> 31;
    z *= 0x94D049BB133111EBull;
    z ^= z >> 29;
    return (float)((double)(z >> 11) / 9007199254740992.0 * 2.0 - 1.0) * 1e3f;
}

/* 1 when every rank holds the same bytes in x [n]. */
static int same_everywhere(const float *x, size_t n)
{
    uint32_t c = fm_crc32c(0, x, n * sizeof(float));
    uint32_t lo = c, hi = c;
    MPI_Allreduce(MPI_IN_PLACE, &lo, 1, MPI_UINT32_T, MPI_MIN, MPI_COMM_WORLD);
    MPI_Allreduce(MPI_IN_PLACE, &hi, 1, MPI_UINT32_T, MPI_MAX, MPI_COMM_WORLD);
    return lo == hi;
}

static const size_t SIZES[] = { 0, 1, 2, 3, 4, 5, 7, 64, 1000, 100003 };
#define NSIZES (sizeof SIZES / sizeof SIZES[0])

static int test_allreduce_exact(void)
{
    fm_err e = { 0 };
    fm_ring r;
    CHECK_OK(fm_ring_init(&r, MPI_COMM_WORLD, 100003, 60, &e), &e);
    float *x = malloc(100003 * sizeof(float));
    int wrong = 0, differ = 0, rc = FM_OK;
    const float scale = 1.0f / (float)g_size;
    for (size_t s = 0; s < NSIZES && rc == FM_OK; s++) {
        const size_t n = SIZES[s];
        for (size_t i = 0; i < n; i++)
            x[i] = int_value(g_rank, i);
        rc = fm_ring_allreduce(&r, x, n, scale, (int)s, &e);
        for (size_t i = 0; i < n && rc == FM_OK; i++) {
            float sum = 0;
            for (int q = 0; q < g_size; q++)
                sum += int_value(q, i);
            wrong += x[i] != sum * scale;
        }
        differ += !same_everywhere(x, n);
    }
    free(x);
    fm_ring_free(&r);
    CHECK_OK(rc, &e);
    CHECK(wrong == 0, "%d wrong sums at %d ranks", wrong, g_size);
    CHECK(differ == 0, "%d sizes left the ranks with different bits", differ);
    return 0;
}

/* Arbitrary floats: chunk c is ((x[c+1] + x[c+2]) + ...) + x[c], then scaled,
 * bit for bit; every rank the same. */
static int test_allreduce_order(void)
{
    fm_err e = { 0 };
    fm_ring r;
    const size_t n = 10007;
    CHECK_OK(fm_ring_init(&r, MPI_COMM_WORLD, n, 60, &e), &e);
    float *x = malloc(n * sizeof(float));
    for (size_t i = 0; i < n; i++)
        x[i] = any_value(g_rank, i);
    const float scale = 0.37f;
    int rc = fm_ring_allreduce(&r, x, n, scale, 7, &e);
    int wrong = 0;
    for (int c = 0; c < g_size; c++)
        for (size_t i = fm_ring_chunk_off(n, g_size, c); i < fm_ring_chunk_off(n, g_size, c + 1); i++) {
            float sum = any_value((c + 1) % g_size, i);
            for (int k = 2; k <= g_size; k++)
                sum = sum + any_value((c + k) % g_size, i);
            if (g_size == 1)
                sum = any_value(0, i);
            wrong += memcmp(&x[i], &(float){ sum * scale }, sizeof(float)) != 0;
        }
    int same = same_everywhere(x, n);
    free(x);
    fm_ring_free(&r);
    CHECK_OK(rc, &e);
    CHECK(wrong == 0, "%d sums not in the documented ring order at %d ranks", wrong, g_size);
    CHECK(same, "the ranks hold different bits");
    return 0;
}

/* After a reduce-scatter, chunk `rank` holds the sum; an allgather of
 * per-rank chunks gives every rank all of them. */
static int test_reduce_scatter_then_allgather(void)
{
    fm_err e = { 0 };
    fm_ring r;
    const size_t n = 4099;
    CHECK_OK(fm_ring_init(&r, MPI_COMM_WORLD, n, 60, &e), &e);
    float *x = malloc(n * sizeof(float));
    for (size_t i = 0; i < n; i++)
        x[i] = int_value(g_rank, i);
    int rc = fm_ring_reduce_scatter(&r, x, n, 1.0f, 1, &e);
    int wrong = 0;
    const size_t o = fm_ring_chunk_off(n, g_size, g_rank), end = fm_ring_chunk_off(n, g_size, g_rank + 1);
    for (size_t i = o; i < end && rc == FM_OK; i++) {
        float sum = 0;
        for (int q = 0; q < g_size; q++)
            sum += int_value(q, i);
        wrong += x[i] != sum;
    }
    /* now every rank writes its own chunk as rank + i and gathers */
    for (size_t i = 0; i < n; i++)
        x[i] = i >= o && i < end ? (float)(g_rank * 100000 + (int)i) : -1.0f;
    if (rc == FM_OK)
        rc = fm_ring_allgather(&r, x, n, 2, &e);
    int bad = 0;
    for (int c = 0; c < g_size && rc == FM_OK; c++)
        for (size_t i = fm_ring_chunk_off(n, g_size, c); i < fm_ring_chunk_off(n, g_size, c + 1); i++)
            bad += x[i] != (float)(c * 100000 + (int)i);
    free(x);
    fm_ring_free(&r);
    CHECK_OK(rc, &e);
    CHECK(wrong == 0, "%d wrong sums in the owned chunk", wrong);
    CHECK(bad == 0, "%d wrong values after the allgather", bad);
    return 0;
}

/* Rank 0 reduces alone: after the deadline it fails naming its left
 * neighbour (rank size-1), which never sent. */
static int test_deadline_names_the_missing_rank(void)
{
    fm_err e = { 0 };
    fm_ring r;
    CHECK_OK(fm_ring_init(&r, MPI_COMM_WORLD, 64, 0.3, &e), &e);
    int rc = FM_OK;
    char want[32];
    snprintf(want, sizeof want, "for rank %d", g_size - 1);
    if (g_rank == 0) {
        float x[64] = { 0 };
        r.what = "test step 1";
        rc = fm_ring_allreduce(&r, x, 64, 1.0f, 3, &e);
    }
    MPI_Barrier(MPI_COMM_WORLD);
    fm_ring_free(&r);
    if (g_rank == 0) {
        CHECK(rc == FM_ERR_INTERNAL, "rank 0 alone: status %d, not a timeout", rc);
        CHECK(strstr(e.msg, want) && strstr(e.msg, "test step 1"), "message does not name rank %d: %s", g_size - 1,
              e.msg);
    }
    return 0;
}

static int test_rejects_bad_timeout(void)
{
    fm_err e = { 0 };
    fm_ring r;
    CHECK(fm_ring_init(&r, MPI_COMM_WORLD, 8, 0, &e) == FM_ERR_USAGE && strstr(e.msg, "timeout"), "%s", e.msg);
    return 0;
}

int main(int argc, char **argv)
{
    int provided = 0;
    MPI_Init_thread(&argc, &argv, MPI_THREAD_SERIALIZED, &provided);
    MPI_Comm_set_errhandler(MPI_COMM_WORLD, MPI_ERRORS_RETURN);
    MPI_Comm_rank(MPI_COMM_WORLD, &g_rank);
    MPI_Comm_size(MPI_COMM_WORLD, &g_size);
    static const fm_test tests[] = {
        TEST(test_allreduce_exact),
        TEST(test_allreduce_order),
        TEST(test_reduce_scatter_then_allgather),
        TEST(test_rejects_bad_timeout),
        TEST(test_deadline_names_the_missing_rank), /* last: only with more than one rank */
    };
    int n = (int)(sizeof tests / sizeof tests[0]) - (g_size == 1);
    int rc = fm_test_main("comm/ring", tests, n, argc, argv);
    MPI_Finalize();
    return rc;
}
