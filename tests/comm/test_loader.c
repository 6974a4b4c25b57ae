/* test_loader.c - data order is a function of (seed, step), split over ranks. */
#include <stdlib.h>
#include <string.h>

#include "fm/loader.h"
#include "test.h"

enum { N = 50, D = 3, B = 12 };

static void make_data(float *x, int32_t *y)
{
    for (int i = 0; i < N; i++) {
        for (int j = 0; j < D; j++)
            x[i * D + j] = (float)(i * 10 + j);
        y[i] = i % 10;
    }
}

static int test_epoch_covers_each_row_once(void)
{
    fm_err e = { 0 };
    float x[N * D], xb[B * D];
    int32_t y[N], yb[B];
    uint64_t g[B];
    make_data(x, y);
    fm_loader l;
    CHECK_OK(fm_loader_init(&l, x, y, N, D, B, 0, 1, 7, &e), &e);
    int seen[N] = { 0 };
    /* positions 0..N-1 are epoch 0: every row exactly once */
    for (int64_t s = 0; s * B < N; s++) {
        fm_loader_batch(&l, s, xb, yb, g);
        for (int i = 0; i < B && s * B + i < N; i++) {
            int row = (int)(xb[i * D] / 10);
            CHECK(yb[i] == row % 10 && xb[i * D + 2] == row * 10 + 2, "row payload");
            CHECK(g[i] == (uint64_t)(s * B + i), "global index");
            seen[row]++;
        }
    }
    for (int i = 0; i < N; i++)
        CHECK(seen[i] == 1, "row %d seen %d times", i, seen[i]);
    CHECK(fm_loader_epoch(&l, 4) == 0 && fm_loader_epoch(&l, 5) == 1, "epoch of step");
    fm_loader_free(&l);
    return 0;
}

static int test_ranks_shard_the_same_global_batch(void)
{
    fm_err e = { 0 };
    float x[N * D], one[B * D], part[B * D];
    int32_t y[N];
    uint64_t g1[B], g2[B];
    make_data(x, y);
    for (int world = 2; world <= 4; world++) {
        if (B % world)
            continue;
        for (int64_t s = 0; s < 9; s++) {
            fm_loader l1;
            CHECK_OK(fm_loader_init(&l1, x, y, N, D, B, 0, 1, 3, &e), &e);
            fm_loader_batch(&l1, s, one, NULL, g1);
            fm_loader_free(&l1);
            for (int r = 0; r < world; r++) {
                fm_loader l;
                CHECK_OK(fm_loader_init(&l, x, y, N, D, B, r, world, 3, &e), &e);
                fm_loader_batch(&l, s, part + r * l.local_batch * D, NULL, g2 + r * l.local_batch);
                fm_loader_free(&l);
            }
            CHECK(memcmp(one, part, sizeof one) == 0 && memcmp(g1, g2, sizeof g1) == 0,
                  "world %d step %lld differs from one rank", world, (long long)s);
        }
    }
    return 0;
}

static int test_bad_split_is_a_usage_error(void)
{
    fm_err e = { 0 };
    float x[N * D];
    int32_t y[N];
    make_data(x, y);
    fm_loader l;
    CHECK(fm_loader_init(&l, x, y, N, D, 10, 0, 3, 1, &e) == FM_ERR_USAGE && strstr(e.msg, "10") &&
              strstr(e.msg, "3 ranks"),
          "%s", e.msg);
    return 0;
}

int main(int argc, char **argv)
{
    static const fm_test tests[] = {
        TEST(test_epoch_covers_each_row_once),
        TEST(test_ranks_shard_the_same_global_batch),
        TEST(test_bad_split_is_a_usage_error),
    };
    return fm_test_main("loader", tests, (int)(sizeof tests / sizeof tests[0]), argc, argv);
}
