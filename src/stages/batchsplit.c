/* batchsplit.c - batches split over the ranks round-robin, gathered back in
 * global order (see batchsplit.h). */
#include "fm/batchsplit.h"

#include <limits.h>
#include <stdlib.h>
#include <string.h>

int fm_batches_gather(const fm_world *w, const float *mine, int nb, size_t per, float *all, fm_err *e)
{
    const int p = w->size, r = w->rank;
    if (p == 1) { /* slot s is batch s */
        memcpy(all, mine, (size_t)nb * per * sizeof(float));
        return FM_OK;
    }
    const int rounds = fm_batches_rounds(nb, p), own = fm_batches_mine(nb, r, p);
    const size_t n = (size_t)rounds * per;
    if (n > INT_MAX)
        return fm_fail(e, FM_ERR_INTERNAL, "rank %d: gathering %d batches of %zu values over %d ranks: %zu values "
                       "per rank exceed MPI's int count; use a smaller eval.batch_size", r, nb, per, p, n);
    /* every rank sends `rounds` slots (the unused ones zero); rank 0 receives [p, rounds, per] */
    float *send = calloc(n ? n : 1, sizeof *send), *recv = r == 0 ? malloc((size_t)p * (n ? n : 1) * sizeof *recv) : NULL;
    int rc = send && (recv || r != 0)
                 ? FM_OK
                 : fm_fail(e, FM_ERR_INTERNAL, "rank %d: out of memory to gather %d batches of %zu values", r, nb, per);
    if (rc == FM_OK && own > 0)
        memcpy(send, mine, (size_t)own * per * sizeof(float));
    if (rc == FM_OK)
        rc = fm_world_gather0(w, send, (int)n, recv, e);
    for (int j = 0; rc == FM_OK && r == 0 && j < nb; j++)
        memcpy(all + (size_t)j * per, recv + (size_t)(j % p) * n + (size_t)(j / p) * per, per * sizeof(float));
    free(send);
    free(recv);
    return rc;
}

int fm_batches_agree(const fm_world *w, int rc, const char *what, fm_err *e)
{
    if (w->size == 1)
        return rc;
    double mine = rc, *all = malloc((size_t)w->size * sizeof *all);
    if (!all)
        return rc != FM_OK ? rc : fm_fail(e, FM_ERR_INTERNAL, "rank %d: out of memory (%s)", w->rank, what);
    fm_err ce = { 0 };
    int crc = fm_world_allgather(w, &mine, 1, all, &ce);
    int bad = -1; /* the first rank with the worst status (status.h: a real error wins over FM_PREEMPTED) */
    for (int q = 0; crc == FM_OK && q < w->size; q++)
        if (all[q] != FM_OK && (bad < 0 || fm_status_rank((int)all[q]) > fm_status_rank((int)all[bad])))
            bad = q;
    const int status = bad >= 0 ? (int)all[bad] : FM_OK;
    free(all);
    if (rc != FM_OK && (crc != FM_OK || fm_status_rank(rc) >= fm_status_rank(status)))
        return rc; /* this rank's own status is the worst: its own message */
    if (crc != FM_OK) {
        *e = ce;
        return crc;
    }
    if (bad >= 0 && status == FM_PREEMPTED) /* only rank 0's message is shown: say what to do */
        return fm_fail(e, status, "%s: rank %d was stopped by a signal: run the same command again (or let Slurm "
                       "requeue the job) to resume", what, bad);
    if (bad >= 0)
        return fm_fail(e, status, "%s: rank %d stopped with status %d (its message says why)", what, bad, status);
    return FM_OK;
}
