/* test_shared.c - node communicators and node-shared blocks (shared.h).
 *
 * Run alone (1 rank: a private block, no MPI call) by the suite, and under
 * mpirun with 2 ranks and with 4 ranks as two nodes of 2
 * (FMTRAIN_RANKS_PER_NODE=2) by tests/comm/test_shared.sh. Checks: every rank
 * of a node sees the bytes node rank 0 wrote, in one block per node (the
 * same memory, not a copy: a write by node rank 0 after the load is seen);
 * the block is 64-byte aligned; a failure in the reader's size or fill on a
 * node stops every rank of the world with that status and message; the
 * agreement picks the lowest failing rank's message; a bad
 * FMTRAIN_RANKS_PER_NODE is refused. */
#include <mpi.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "fm/shared.h"
#include "test.h"

static fm_world g_world;

/* A reader of n uint32 values: value i of node k is i * 7 + k (k = the world
 * rank of node rank 0), so a rank that saw another node's block would notice.
 * fail_size / fail_fill: the node rank 0 of these world ranks fails there. */
typedef struct reader {
    size_t n;
    int fail_size, fail_fill; /* world rank whose size / fill fails, -1 none */
    int calls;
} reader;

static int r_size(void *ctx, size_t *bytes, fm_err *e)
{
    reader *r = ctx;
    r->calls++;
    if (g_world.rank == r->fail_size)
        return fm_fail(e, FM_ERR_DATA, "/data/rank%d.gz: cannot open: No such file or directory", g_world.rank);
    *bytes = r->n * sizeof(uint32_t);
    return FM_OK;
}

static int r_fill(void *ctx, void *base, size_t bytes, fm_err *e)
{
    reader *r = ctx;
    r->calls++;
    if (g_world.rank == r->fail_fill)
        return fm_fail(e, FM_ERR_DATA, "/data/rank%d.gz: truncated", g_world.rank);
    uint32_t *v = base;
    for (size_t i = 0; i < bytes / sizeof *v; i++)
        v[i] = (uint32_t)(i * 7 + (size_t)g_world.rank);
    return FM_OK;
}

static int test_block_seen_by_the_node(void)
{
    fm_err e = { 0 };
    fm_node nd;
    CHECK_OK(fm_node_init(&nd, &g_world, &e), &e);
    CHECK(nd.size >= 1 && nd.rank >= 0 && nd.rank < nd.size, "node rank %d of %d", nd.rank, nd.size);
    /* world rank of this node's rank 0: ranks of a node are consecutive here */
    const int first = g_world.rank - nd.rank;
    reader r = { 1000003, -1, -1, 0 };
    const fm_shared_filler f = { r_size, r_fill, &r };
    fm_shared b;
    CHECK_OK(fm_shared_load(&nd, &f, "the test block", &b, &e), &e);
    CHECK(r.calls == (nd.rank == 0 ? 2 : 0), "rank %d: the reader ran %d times", g_world.rank, r.calls);
    CHECK(b.bytes == r.n * sizeof(uint32_t), "%zu bytes", b.bytes);
    CHECK((uintptr_t)b.base % 64 == 0, "base %p not 64-byte aligned", b.base);
    CHECK(b.in_window == (nd.size > 1), "in_window %d on a node of %d", b.in_window, nd.size);
    const uint32_t *v = b.base;
    for (size_t i = 0; i < r.n; i++)
        CHECK(v[i] == (uint32_t)(i * 7 + (size_t)first), "rank %d: value %zu is %u, expected %zu", g_world.rank, i,
              v[i], i * 7 + (size_t)first);
    /* one block, not copies: node rank 0 writes, the others see it */
    fm_node_agree_world(&nd, FM_OK, &e);
    if (nd.rank == 0) {
        ((uint32_t *)b.base)[5] = 0xdeadbeef;
        if (b.in_window)
            MPI_Win_sync(b.win);
    }
    CHECK_OK(fm_node_agree_world(&nd, FM_OK, &e), &e);
    if (b.in_window)
        MPI_Win_sync(b.win);
    CHECK(v[5] == 0xdeadbeef, "rank %d: node rank 0's write not seen", g_world.rank);
    fm_shared_free(&nd, &b, 1);
    CHECK(b.base == NULL && b.bytes == 0, "not cleared");
    fm_node_free(&nd);
    fm_node_free(&nd); /* twice is safe */
    return 0;
}

/* A size (or fill) failure on the node rank 0 of the last node: every rank
 * of the world returns its status and message. */
static int load_fails(int in_fill)
{
    fm_err e = { 0 };
    fm_node nd;
    CHECK_OK(fm_node_init(&nd, &g_world, &e), &e);
    const int last_node_first = g_world.size - nd.size; /* equal nodes here */
    reader r = { 4096, in_fill ? -1 : last_node_first, in_fill ? last_node_first : -1, 0 };
    const fm_shared_filler f = { r_size, r_fill, &r };
    fm_shared b;
    int rc = fm_shared_load(&nd, &f, "the test block", &b, &e);
    char want[128];
    snprintf(want, sizeof want, "/data/rank%d.gz: %s", last_node_first,
             in_fill ? "truncated" : "cannot open: No such file or directory");
    CHECK(rc == FM_ERR_DATA, "rank %d: status %d (%s)", g_world.rank, rc, e.msg);
    CHECK(strcmp(e.msg, want) == 0, "rank %d: message \"%s\", expected \"%s\"", g_world.rank, e.msg, want);
    CHECK(b.base == NULL, "rank %d: a block after a failure", g_world.rank);
    fm_node_free(&nd);
    return 0;
}

static int test_size_failure_reaches_every_rank(void) { return load_fails(0); }
static int test_fill_failure_reaches_every_rank(void) { return load_fails(1); }

static int test_agree_takes_the_lowest_failed_rank(void)
{
    fm_err e = { 0 };
    fm_node nd;
    CHECK_OK(fm_node_init(&nd, &g_world, &e), &e);
    /* every rank from the middle on fails, each with its own code and message */
    const int from = g_world.size / 2;
    int rc = FM_OK;
    if (g_world.rank >= from)
        rc = fm_fail(&e, g_world.rank == from ? FM_ERR_IO : FM_ERR_DATA, "rank %d's own trouble", g_world.rank);
    rc = fm_node_agree_world(&nd, rc, &e);
    char want[64];
    snprintf(want, sizeof want, "rank %d's own trouble", from);
    CHECK(rc == FM_ERR_IO && strcmp(e.msg, want) == 0, "rank %d: %d \"%s\"", g_world.rank, rc, e.msg);
    CHECK(fm_node_agree_world(&nd, FM_OK, &e) == FM_OK, "all OK: %s", e.msg);
    fm_node_free(&nd);
    return 0;
}

static int test_rejects_bad_ranks_per_node(void)
{
    const char *old = getenv(FM_NODE_ENV);
    char keep[32] = "";
    if (old)
        snprintf(keep, sizeof keep, "%s", old);
    setenv(FM_NODE_ENV, "0", 1);
    fm_err e = { 0 };
    fm_node nd;
    int rc = fm_node_init(&nd, &g_world, &e);
    if (old)
        setenv(FM_NODE_ENV, keep, 1);
    else
        unsetenv(FM_NODE_ENV);
    CHECK(rc == FM_ERR_USAGE && strstr(e.msg, FM_NODE_ENV "=0"), "%d %s", rc, e.msg);
    CHECK(nd.comm == MPI_COMM_NULL && nd.size == 1, "a node after a failure");
    return 0;
}

int main(int argc, char **argv)
{
    fm_err e = { 0 };
    if (fm_world_init(&g_world, &argc, &argv, &e) != FM_OK) {
        fprintf(stderr, "%s\n", e.msg);
        return 1;
    }
    fm_world_set_timeout(&g_world, 60);
    static const fm_test tests[] = {
        TEST(test_block_seen_by_the_node),
        TEST(test_size_failure_reaches_every_rank),
        TEST(test_fill_failure_reaches_every_rank),
        TEST(test_agree_takes_the_lowest_failed_rank),
        TEST(test_rejects_bad_ranks_per_node), /* last: only with more than one rank */
    };
    int n = (int)(sizeof tests / sizeof tests[0]) - (g_world.size == 1);
    int rc = fm_test_main("comm/shared", tests, n, argc, argv);
    fm_world_finalize(&g_world);
    return rc;
}
