/* ring.c - ring reduce-scatter and allgather with point-to-point calls. */
#include "fm/ring.h"

#include <limits.h>
#include <stdlib.h>
#include <string.h>

#include "fm/timer.h"
#include "fm/world.h"

int fm_ring_init(fm_ring *r, MPI_Comm comm, size_t max_count, double timeout_s, fm_err *e)
{
    memset(r, 0, sizeof *r);
    r->comm = MPI_COMM_NULL;
    if (!(timeout_s > 0))
        return fm_fail(e, FM_ERR_USAGE, "communication timeout must be positive, got %g s", timeout_s);
    r->timeout_s = timeout_s;
    MPI_Comm_rank(comm, &r->rank);
    MPI_Comm_size(comm, &r->size);
    r->left = (r->rank + r->size - 1) % r->size;
    r->right = (r->rank + 1) % r->size;
    int rc = MPI_Comm_dup(comm, &r->comm);
    if (rc != MPI_SUCCESS)
        return fm_world_fail(e, rc, "MPI_Comm_dup for the ring collectives");
    MPI_Comm_set_errhandler(r->comm, MPI_ERRORS_RETURN);
    /* world ranks of the members, for error messages */
    r->world = malloc((size_t)r->size * sizeof *r->world);
    int *mine = malloc((size_t)r->size * sizeof *mine);
    MPI_Group g = MPI_GROUP_NULL, gw = MPI_GROUP_NULL;
    if (!r->world || !mine) {
        free(mine);
        fm_ring_free(r);
        return fm_fail(e, FM_ERR_INTERNAL, "out of memory for a %d-rank ring", r->size);
    }
    for (int i = 0; i < r->size; i++)
        mine[i] = i;
    MPI_Comm_group(r->comm, &g);
    MPI_Comm_group(MPI_COMM_WORLD, &gw);
    MPI_Group_translate_ranks(g, r->size, mine, gw, r->world);
    MPI_Group_free(&g);
    MPI_Group_free(&gw);
    free(mine);
    r->tmp_cap = max_count / (size_t)r->size + 1;
    r->tmp = malloc(r->tmp_cap * sizeof(float));
    if (!r->tmp) {
        fm_ring_free(r);
        return fm_fail(e, FM_ERR_INTERNAL, "out of memory for a %zu-float ring receive buffer", r->tmp_cap);
    }
    return FM_OK;
}

void fm_ring_free(fm_ring *r)
{
    if (r->comm != MPI_COMM_NULL) {
        int fin = 0;
        MPI_Finalized(&fin);
        if (!fin)
            MPI_Comm_free(&r->comm);
    }
    free(r->tmp);
    free(r->world);
    memset(r, 0, sizeof *r);
    r->comm = MPI_COMM_NULL;
}

/* Wait for n requests for at most the ring's timeout; after it cancel what
 * is open and fail with FM_ERR_INTERNAL naming the peer of the first open
 * request (peer[i] is request i's; request 0 is a receive when
 * first_is_recv, every other one a send). */
static int wait_reqs(fm_ring *r, MPI_Request *req, const int *peer, int n, int first_is_recv, const char *phase,
                     int round, fm_err *e)
{
    int open = 0, mpi_rc = MPI_SUCCESS;
    const int st = fm_world_poll(req, n, r->timeout_s, r->poll_sleep_s, &open, &mpi_rc);
    if (st == FM_POLL_DONE)
        return FM_OK;
    if (st == FM_POLL_MPI_ERROR)
        return fm_world_fail(e, mpi_rc, phase);
    for (int k = 0; k < n; k++) /* nothing of this call may match later messages */
        if (req[k] != MPI_REQUEST_NULL) {
            if (k == 0 && first_is_recv)
                MPI_Cancel(&req[k]);
            MPI_Request_free(&req[k]);
        }
    const int recv = open == 0 && first_is_recv;
    return fm_fail(e, FM_ERR_INTERNAL,
                   "%s%s%s round %d: rank %d waited %.0f s for rank %d (%s): that rank is stopped, dead or far "
                   "behind; raise dist.timeout if it is only slow",
                   r->what ? r->what : "", r->what ? ": " : "", phase, round, r->world[r->rank], r->timeout_s,
                   r->world[peer[open]],
                   recv ? "no data arrived" : "it does not take our data");
}

static int exchange(fm_ring *r, const float *send, size_t ns, float *recv, size_t nr, int tag, const char *phase,
                    int round, fm_err *e)
{
    MPI_Request req[2] = { MPI_REQUEST_NULL, MPI_REQUEST_NULL };
    int rc = MPI_Irecv(recv, (int)nr, MPI_FLOAT, r->left, tag, r->comm, &req[0]);
    if (rc == MPI_SUCCESS)
        rc = MPI_Isend(send, (int)ns, MPI_FLOAT, r->right, tag, r->comm, &req[1]);
    if (rc != MPI_SUCCESS) {
        if (req[0] != MPI_REQUEST_NULL) {
            MPI_Cancel(&req[0]);
            MPI_Request_free(&req[0]);
        }
        return fm_world_fail(e, rc, phase);
    }
    const int peer[2] = { r->left, r->right };
    return wait_reqs(r, req, peer, 2, 1, phase, round, e);
}

/* One blocking send (is_send) or receive with the ring's bounded wait. */
static int p2p(fm_ring *r, float *x, size_t n, int peer, int tag, int is_send, fm_err *e)
{
    if (n > INT_MAX)
        return fm_fail(e, FM_ERR_INTERNAL, "ring: a message of %zu floats exceeds an MPI count", n);
    MPI_Request req = MPI_REQUEST_NULL;
    int rc = is_send ? MPI_Isend(x, (int)n, MPI_FLOAT, peer, tag, r->comm, &req)
                     : MPI_Irecv(x, (int)n, MPI_FLOAT, peer, tag, r->comm, &req);
    if (rc != MPI_SUCCESS)
        return fm_world_fail(e, rc, is_send ? "MPI_Isend" : "MPI_Irecv");
    return wait_reqs(r, &req, &peer, 1, !is_send, is_send ? "send" : "receive", 0, e);
}

int fm_ring_send(fm_ring *r, const float *x, size_t n, int to, int tag, fm_err *e)
{
    return p2p(r, (float *)x, n, to, tag, 1, e);
}

int fm_ring_recv(fm_ring *r, float *x, size_t n, int from, int tag, fm_err *e) { return p2p(r, x, n, from, tag, 0, e); }

static int check_count(const fm_ring *r, size_t n, fm_err *e)
{
    size_t chunk = n / (size_t)r->size + 1;
    if (chunk > r->tmp_cap || chunk > INT_MAX)
        return fm_fail(e, FM_ERR_INTERNAL, "ring: %zu floats exceed the %zu set up for", n,
                       (r->tmp_cap - 1) * (size_t)r->size);
    return FM_OK;
}

int fm_ring_reduce_scatter(fm_ring *r, float *x, size_t n, float scale, int tag, fm_err *e)
{
    const int p = r->size;
    if (p == 1) {
        if (scale != 1.0f)
            for (size_t i = 0; i < n; i++)
                x[i] *= scale;
        return FM_OK;
    }
    FM_TRY(check_count(r, n, e));
    /* round s: send chunk (rank - s - 1), receive chunk (rank - s - 2) and
     * add our own to it; after p - 1 rounds chunk rank is complete here */
    for (int s = 0; s < p - 1; s++) {
        const int cs = ((r->rank - s - 1) % p + p) % p, cr = ((r->rank - s - 2) % p + p) % p;
        const size_t so = fm_ring_chunk_off(n, p, cs), sn = fm_ring_chunk_off(n, p, cs + 1) - so;
        const size_t ro = fm_ring_chunk_off(n, p, cr), rn = fm_ring_chunk_off(n, p, cr + 1) - ro;
        FM_TRY(exchange(r, x + so, sn, r->tmp, rn, tag, "ring reduce-scatter", s, e));
        float *dst = x + ro;
        const float *src = r->tmp;
        for (size_t i = 0; i < rn; i++)
            dst[i] = src[i] + dst[i]; /* the partial sum so far, then ours */
    }
    if (scale != 1.0f) {
        const size_t o = fm_ring_chunk_off(n, p, r->rank), m = fm_ring_chunk_off(n, p, r->rank + 1) - o;
        for (size_t i = 0; i < m; i++)
            x[o + i] *= scale;
    }
    return FM_OK;
}

int fm_ring_allgather(fm_ring *r, float *x, size_t n, int tag, fm_err *e)
{
    const int p = r->size;
    if (p == 1)
        return FM_OK;
    FM_TRY(check_count(r, n, e));
    /* round s: send chunk (rank - s), which we own or received last round,
     * and receive chunk (rank - s - 1) in place */
    for (int s = 0; s < p - 1; s++) {
        const int cs = ((r->rank - s) % p + p) % p, cr = ((r->rank - s - 1) % p + p) % p;
        const size_t so = fm_ring_chunk_off(n, p, cs), sn = fm_ring_chunk_off(n, p, cs + 1) - so;
        const size_t ro = fm_ring_chunk_off(n, p, cr), rn = fm_ring_chunk_off(n, p, cr + 1) - ro;
        FM_TRY(exchange(r, x + so, sn, x + ro, rn, tag, "ring allgather", s, e));
    }
    return FM_OK;
}

int fm_ring_allreduce(fm_ring *r, float *x, size_t n, float scale, int tag, fm_err *e)
{
    FM_TRY(fm_ring_reduce_scatter(r, x, n, scale, tag, e));
    return fm_ring_allgather(r, x, n, tag, e);
}
