/* arena.h - a bump allocator for activations, parameters and scratch.
 *
 * All memory a model needs is taken from arenas once, at set-up; the step loop
 * never calls malloc. Allocations are 64-byte aligned (one cache line, one
 * AVX-512 register) and zero-filled. */
#ifndef FM_ARENA_H
#define FM_ARENA_H

#include <stddef.h>

#include "fm/status.h"

typedef struct fm_arena {
    char *base;
    size_t cap;   /* bytes */
    size_t used;  /* bytes, always a multiple of 64 */
    size_t peak;  /* high-water mark of used */
} fm_arena;

int fm_arena_init(fm_arena *a, size_t cap, fm_err *e);
void fm_arena_free(fm_arena *a);

/* 64-byte-aligned, zeroed block of `bytes`, or NULL when the arena is full
 * (use fm_arena_alloc_or for a status). */
void *fm_arena_alloc(fm_arena *a, size_t bytes);
int fm_arena_alloc_or(fm_arena *a, size_t bytes, void **out, fm_err *e);

/* Marks: release everything allocated after a mark (stack discipline). */
static inline size_t fm_arena_mark(const fm_arena *a) { return a->used; }
void fm_arena_release(fm_arena *a, size_t mark);

#endif
