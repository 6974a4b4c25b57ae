/* loader.c - sharded global batches from per-epoch permutations. */
#include "fm/loader.h"

#include <stdlib.h>
#include <string.h>

#include "fm/rng.h"

/* Philox stream of the epoch permutations, apart from every noise stream. */
#define LOADER_STREAM_BASE 0x5045524d00000000ull /* "PERM" */

int fm_loader_init(fm_loader *l, const float *x, const int32_t *y, int n, int d, int global_batch, int rank,
                   int world, uint64_t seed, fm_err *e)
{
    memset(l, 0, sizeof *l);
    if (n <= 0 || d <= 0)
        return fm_fail(e, FM_ERR_DATA, "loader: empty dataset (%d rows of %d values)", n, d);
    if (global_batch <= 0 || world <= 0 || global_batch % world != 0)
        return fm_fail(e, FM_ERR_USAGE,
                       "the global batch size %d does not split over %d ranks: choose a batch size that is a "
                       "multiple of the rank count",
                       global_batch, world);
    l->x = x;
    l->y = y;
    l->n = n;
    l->d = d;
    l->global_batch = global_batch;
    l->rank = rank;
    l->world = world;
    l->local_batch = global_batch / world;
    l->local_first = rank * l->local_batch;
    l->seed = seed;
    for (int i = 0; i < 2; i++) {
        l->perm[i] = malloc((size_t)n * sizeof(uint32_t));
        l->perm_epoch[i] = -1;
        if (!l->perm[i]) {
            fm_loader_free(l);
            return fm_fail(e, FM_ERR_INTERNAL, "loader: out of memory for a %d-row permutation", n);
        }
    }
    return FM_OK;
}

void fm_loader_free(fm_loader *l)
{
    free(l->perm[0]);
    free(l->perm[1]);
    memset(l, 0, sizeof *l);
}

static const uint32_t *perm_for(fm_loader *l, int64_t epoch)
{
    int slot = (int)(epoch & 1);
    if (l->perm_epoch[slot] != epoch) {
        fm_permutation(l->perm[slot], (uint32_t)l->n, l->seed, LOADER_STREAM_BASE + (uint64_t)epoch);
        l->perm_epoch[slot] = epoch;
    }
    return l->perm[slot];
}

int64_t fm_loader_epoch(const fm_loader *l, int64_t step) { return step * l->global_batch / l->n; }

void fm_loader_batch(fm_loader *l, int64_t step, float *x_out, int32_t *y_out, uint64_t *gidx_out)
{
    for (int i = 0; i < l->local_batch; i++) {
        int64_t g = step * l->global_batch + l->local_first + i;
        const uint32_t *perm = perm_for(l, g / l->n);
        uint32_t row = perm[g % l->n];
        memcpy(x_out + (size_t)i * l->d, l->x + (size_t)row * l->d, (size_t)l->d * sizeof(float));
        if (y_out)
            y_out[i] = l->y ? l->y[row] : 0;
        if (gidx_out)
            gidx_out[i] = (uint64_t)g;
    }
}
