/* shared.h - one copy per node: the ranks of a node and the blocks of memory
 * they all map.
 *
 * A node is the ranks that can share memory (MPI_Comm_split_type with
 * MPI_COMM_TYPE_SHARED). A shared block is allocated once per node by node
 * rank 0 (MPI_Win_allocate_shared) and mapped by the other ranks of the node
 * (MPI_Win_shared_query): every rank sees the same bytes at its own address.
 * fm_shared_load fills such a block with data that one rank per node reads
 * and decodes (the dataset, the latents): node rank 0 reads, the others wait
 * for it, then every rank reads the block and none writes it.
 *
 * A node of one rank (the world has one rank, or the only rank on its node)
 * makes no MPI call here: its block is a plain private allocation.
 *
 * Every wait has the world's deadline (fm_world.timeout_s, dist.timeout) and
 * yields the core, like the world collectives (world.h). The few MPI calls
 * that only exist blocking (the communicator split, the window's allocation
 * and its free) are entered right after a deadline-bounded barrier of the
 * same ranks, so that they return promptly.
 *
 * Errors are agreed: the functions that say so return, on every rank of the
 * world, the status and the message of the first rank that failed (so a data
 * file that fails on node rank 0 stops every rank with its code and a message
 * naming the file). A test may set FMTRAIN_RANKS_PER_NODE=k (k > 0) to group
 * consecutive world ranks k by k into nodes (they must still share a
 * machine). */
#ifndef FM_SHARED_H
#define FM_SHARED_H

#include <mpi.h>
#include <stddef.h>

#include "fm/status.h"
#include "fm/world.h"

#define FM_NODE_ENV "FMTRAIN_RANKS_PER_NODE" /* test-only: ranks per node, consecutive */

typedef struct fm_node {
    const fm_world *world; /* rank, size and the deadline of every wait */
    MPI_Comm comm;         /* the ranks of this node; MPI_COMM_NULL for a node of one rank */
    int rank, size;        /* this rank's place on the node, the node's rank count */
} fm_node;

/* Collective over the world: find this rank's node. Errors (a barrier past
 * its deadline, the split failed, a bad FMTRAIN_RANKS_PER_NODE) are agreed. */
int fm_node_init(fm_node *nd, const fm_world *w, fm_err *e);
/* Safe on a node fm_node_init left (failed or not) and on a zeroed one. */
void fm_node_free(fm_node *nd);

/* Every rank of the world passes its status; every rank returns the status of
 * the lowest-numbered world rank whose status is not FM_OK (FM_OK if none),
 * with that rank's message in e. A rank that failed keeps its own message
 * when the agreement itself fails. */
int fm_node_agree_world(const fm_node *nd, int rc, fm_err *e);

/* A block of memory every rank of the node sees. */
typedef struct fm_shared {
    void *base;    /* bytes of the block (64-byte aligned), the same bytes on every rank of the node */
    size_t bytes;
    int in_window; /* 1: an MPI shared window; 0: a private allocation (a node of one rank) */
    int locked;    /* the window's passive epoch (MPI_Win_lock_all) is open */
    MPI_Win win;
} fm_shared;

/* How a block is filled (fm_shared_load): both run on node rank 0 only. */
typedef struct fm_shared_filler {
    /* Read and check the source; *bytes = the size the block needs (> 0). */
    int (*size)(void *ctx, size_t *bytes, fm_err *e);
    /* Write the block: base holds bytes (64-byte aligned, not initialised). */
    int (*fill)(void *ctx, void *base, size_t bytes, fm_err *e);
    void *ctx;
} fm_shared_filler;

/* Collective over the world. On every node, node rank 0 calls f->size, the
 * node allocates a block of that size, node rank 0 calls f->fill, and the
 * other ranks wait (deadline-bounded) until it is filled. Every rank of the
 * world returns the same status (agreed, see above); on success b is the
 * block, to be read and never written. `what` names the block in errors
 * ("the dataset"). On failure b is left empty. */
int fm_shared_load(const fm_node *nd, const fm_shared_filler *f, const char *what, fm_shared *b, fm_err *e);

/* Release b. collective = 1 when every rank of the node frees it at this
 * point (after a success all ranks agreed on): the window is freed (after a
 * deadline-bounded node barrier). collective = 0 on an error path: a window
 * is left mapped until the process ends (freeing it would wait for ranks
 * that may never come); a private block is freed either way. */
void fm_shared_free(const fm_node *nd, fm_shared *b, int collective);
/* (a zeroed fm_shared holds nothing: freeing it is a no-op) */

#endif
