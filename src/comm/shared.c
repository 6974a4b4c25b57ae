/* shared.c - the ranks of a node and the memory blocks they share. */
#include "fm/shared.h"

#include <errno.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#define BLOCK_ALIGN 64

static int node_wait(const fm_node *nd, MPI_Request *req, const char *what, fm_err *e)
{
    return fm_world_wait(nd->world, nd->size, " of this node", req, what, e);
}

static int node_barrier(const fm_node *nd, const char *what, fm_err *e)
{
    if (nd->size == 1)
        return FM_OK;
    MPI_Request req;
    int rc = MPI_Ibarrier(nd->comm, &req);
    return rc == MPI_SUCCESS ? node_wait(nd, &req, what, e) : fm_world_fail(e, rc, "MPI_Ibarrier (node)");
}

static int node_bcast(const fm_node *nd, void *buf, int bytes, const char *what, fm_err *e)
{
    if (nd->size == 1)
        return FM_OK;
    MPI_Request req;
    int rc = MPI_Ibcast(buf, bytes, MPI_BYTE, 0, nd->comm, &req);
    return rc == MPI_SUCCESS ? node_wait(nd, &req, what, e) : fm_world_fail(e, rc, "MPI_Ibcast (node)");
}

int fm_node_agree_world(const fm_node *nd, int rc, fm_err *e)
{
    const fm_world *w = nd->world;
    if (w->size == 1)
        return rc;
    fm_err ae = { 0 };
    int *all = malloc((size_t)w->size * sizeof *all);
    if (!all)
        return rc != FM_OK ? rc : fm_fail(e, FM_ERR_INTERNAL, "rank %d: out of memory for %d ranks' status", w->rank,
                                          w->size);
    MPI_Request req;
    int mrc = MPI_Iallgather(&rc, 1, MPI_INT, all, 1, MPI_INT, MPI_COMM_WORLD, &req);
    int arc = mrc == MPI_SUCCESS ? fm_world_wait(w, w->size, "", &req, "agreement of the ranks on a status", &ae)
                                 : fm_world_fail(&ae, mrc, "MPI_Iallgather (status)");
    int first = -1; /* the first rank with the worst status (status.h: a real error wins over FM_PREEMPTED) */
    for (int r = 0; arc == FM_OK && r < w->size; r++)
        if (all[r] != FM_OK && (first < 0 || fm_status_rank(all[r]) > fm_status_rank(all[first])))
            first = r;
    const int code = first >= 0 ? all[first] : FM_OK;
    free(all);
    if (arc == FM_OK && first >= 0) { /* everyone takes the first failed rank's message */
        char msg[sizeof e->msg];
        memset(msg, 0, sizeof msg);
        if (w->rank == first)
            memcpy(msg, e->msg, sizeof msg);
        mrc = MPI_Ibcast(msg, (int)sizeof msg, MPI_CHAR, first, MPI_COMM_WORLD, &req);
        arc = mrc == MPI_SUCCESS ? fm_world_wait(w, w->size, "", &req, "the message of a failed rank", &ae)
                                 : fm_world_fail(&ae, mrc, "MPI_Ibcast (message)");
        if (arc == FM_OK) {
            msg[sizeof msg - 1] = '\0';
            return fm_fail(e, code, "%s", msg);
        }
    }
    if (arc != FM_OK) {
        if (rc != FM_OK) /* this rank's own message */
            return rc;
        *e = ae;
        return arc;
    }
    return FM_OK;
}

/* FMTRAIN_RANKS_PER_NODE: 0 when unset (split by shared memory). */
static int ranks_per_node(const fm_world *w, int *k, fm_err *e)
{
    *k = 0;
    const char *s = getenv(FM_NODE_ENV);
    if (!s || !*s)
        return FM_OK;
    char *end;
    errno = 0;
    long v = strtol(s, &end, 10);
    if (errno || *end || v < 1 || v > w->size)
        return fm_fail(e, FM_ERR_USAGE, "%s=%s: expected a number of ranks in 1..%d (test-only: consecutive ranks "
                       "grouped into nodes); unset it to group the ranks by machine", FM_NODE_ENV, s, w->size);
    *k = (int)v;
    return FM_OK;
}

int fm_node_init(fm_node *nd, const fm_world *w, fm_err *e)
{
    memset(nd, 0, sizeof *nd);
    nd->world = w;
    nd->comm = MPI_COMM_NULL;
    nd->rank = 0;
    nd->size = 1;
    if (w->size == 1)
        return FM_OK;
    int k = 0;
    int rc = ranks_per_node(w, &k, e);
    /* every rank is here: the blocking split below returns promptly */
    if (rc == FM_OK)
        rc = fm_world_barrier(w, e);
    MPI_Comm comm = MPI_COMM_NULL;
    if (rc == FM_OK) {
        int mrc = k > 0 ? MPI_Comm_split(MPI_COMM_WORLD, w->rank / k, w->rank, &comm)
                        : MPI_Comm_split_type(MPI_COMM_WORLD, MPI_COMM_TYPE_SHARED, w->rank, MPI_INFO_NULL, &comm);
        if (mrc != MPI_SUCCESS)
            rc = fm_world_fail(e, mrc, "MPI_Comm_split_type(MPI_COMM_TYPE_SHARED): the ranks of this node");
    }
    if (rc == FM_OK) {
        MPI_Comm_set_errhandler(comm, MPI_ERRORS_RETURN);
        MPI_Comm_rank(comm, &nd->rank);
        MPI_Comm_size(comm, &nd->size);
        if (nd->size == 1)
            MPI_Comm_free(&comm);
        nd->comm = comm;
    }
    rc = fm_node_agree_world(nd, rc, e);
    if (rc != FM_OK)
        fm_node_free(nd);
    return rc;
}

void fm_node_free(fm_node *nd)
{
    if (nd->world && nd->comm != MPI_COMM_NULL) /* a zeroed fm_node holds nothing */
        MPI_Comm_free(&nd->comm);
    nd->comm = MPI_COMM_NULL;
    nd->rank = 0;
    nd->size = 1;
}

/* This rank's view of a new block of `bytes`: a private allocation on a node
 * of one rank, else a window allocated by node rank 0 and mapped here.
 * Collective over the node; not agreed (the caller agrees). */
static int alloc_block(const fm_node *nd, size_t bytes, const char *what, fm_shared *b, fm_err *e)
{
    const double mib = bytes / 1048576.0;
    if (nd->size == 1) {
        void *p = NULL;
        if (posix_memalign(&p, BLOCK_ALIGN, bytes) != 0)
            return fm_fail(e, FM_ERR_INTERNAL, "rank %d: out of memory for %s (%.1f MiB)", nd->world->rank, what,
                           mib);
        b->base = p;
        b->bytes = bytes;
        return FM_OK;
    }
    /* every rank of the node is here: the blocking allocation returns promptly */
    FM_TRY(node_barrier(nd, "barrier before allocating a shared block", e));
    MPI_Aint mine = nd->rank == 0 ? (MPI_Aint)(bytes + BLOCK_ALIGN) : 0;
    void *p = NULL;
    MPI_Win win = MPI_WIN_NULL;
    int mrc = MPI_Win_allocate_shared(mine, 1, MPI_INFO_NULL, nd->comm, &p, &win);
    if (mrc != MPI_SUCCESS) {
        char msg[MPI_MAX_ERROR_STRING];
        int len = 0;
        MPI_Error_string(mrc, msg, &len);
        return fm_fail(e, FM_ERR_INTERNAL, "rank %d: cannot allocate %s in node-shared memory (%.1f MiB on node "
                       "rank 0 of %d): MPI_Win_allocate_shared: %s; Open MPI keeps it in a file under "
                       "osc_sm_backing_directory (default /dev/shm): check its free space with df",
                       nd->world->rank, what, mib, nd->size, msg);
    }
    b->win = win;
    b->in_window = 1;
    /* a passive epoch over the whole block's life: the window's memory is
     * then read and written with plain loads and stores, and MPI_Win_sync
     * orders node rank 0's writes before the other ranks' reads */
    mrc = MPI_Win_lock_all(MPI_MODE_NOCHECK, win);
    if (mrc != MPI_SUCCESS)
        return fm_world_fail(e, mrc, "MPI_Win_lock_all (shared block)");
    b->locked = 1;
    MPI_Aint size = 0;
    int disp = 0;
    void *base = NULL;
    mrc = MPI_Win_shared_query(win, 0, &size, &disp, &base);
    if (mrc != MPI_SUCCESS || !base || (size_t)size < bytes + BLOCK_ALIGN) {
        char msg[MPI_MAX_ERROR_STRING] = "a smaller segment than asked for";
        int len = 0;
        if (mrc != MPI_SUCCESS)
            MPI_Error_string(mrc, msg, &len);
        return fm_fail(e, FM_ERR_INTERNAL, "rank %d (node rank %d of %d): cannot map %s, the %.1f MiB block node "
                       "rank 0 allocated: MPI_Win_shared_query: %s",
                       nd->world->rank, nd->rank, nd->size, what, mib, msg);
    }
    /* the segment is mapped page-aligned on every rank, so the same offset
     * aligns it everywhere */
    uintptr_t a = (uintptr_t)base;
    b->base = (char *)base + (BLOCK_ALIGN - a % BLOCK_ALIGN) % BLOCK_ALIGN;
    b->bytes = bytes;
    return FM_OK;
}

void fm_shared_free(const fm_node *nd, fm_shared *b, int collective)
{
    if (b->in_window) {
        fm_err e = { 0 };
        if (collective && node_barrier(nd, "barrier before freeing a shared block", &e) == FM_OK) {
            if (b->locked)
                MPI_Win_unlock_all(b->win);
            MPI_Win_free(&b->win);
        }
    } else {
        free(b->base);
    }
    memset(b, 0, sizeof *b);
    b->win = MPI_WIN_NULL;
}

int fm_shared_load(const fm_node *nd, const fm_shared_filler *f, const char *what, fm_shared *b, fm_err *e)
{
    memset(b, 0, sizeof *b);
    b->win = MPI_WIN_NULL;
    uint64_t bytes = 0;
    int rc = FM_OK;
    if (nd->rank == 0) {
        size_t n = 0;
        rc = f->size(f->ctx, &n, e);
        if (rc == FM_OK && n == 0)
            rc = fm_fail(e, FM_ERR_INTERNAL, "%s: a block of 0 bytes", what);
        bytes = n;
    }
    FM_TRY(fm_node_agree_world(nd, rc, e));
    rc = node_bcast(nd, &bytes, (int)sizeof bytes, "the size of a shared block", e);
    if (rc == FM_OK)
        rc = alloc_block(nd, (size_t)bytes, what, b, e);
    rc = fm_node_agree_world(nd, rc, e);
    if (rc != FM_OK) {
        fm_shared_free(nd, b, 0); /* a rank may hold no window: no collective free */
        return rc;
    }
    if (nd->rank == 0)
        rc = f->fill(f->ctx, b->base, b->bytes, e);
    if (b->in_window && nd->rank == 0)
        MPI_Win_sync(b->win); /* the writes, before the agreement below releases the others */
    /* the other ranks of the node wait here until node rank 0 has filled it */
    rc = fm_node_agree_world(nd, rc, e);
    if (rc == FM_OK && b->in_window && nd->rank != 0)
        MPI_Win_sync(b->win); /* then read what node rank 0 wrote */
    if (rc != FM_OK)
        fm_shared_free(nd, b, 1); /* every rank holds the window and is here */
    return rc;
}
