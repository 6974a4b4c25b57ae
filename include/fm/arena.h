/* arena.h - a bump allocator for activations, parameters and scratch.
 *
 * All memory a model needs is taken from arenas once, at set-up; the step loop
 * never calls malloc. Allocations are 64-byte aligned (one cache line, one
 * AVX-512 register) and zero-filled.
 *
 * Sizing: an arena initialised with capacity FM_ARENA_MEASURE is a measuring
 * arena. It holds no memory; every take succeeds and counts exactly the bytes
 * a real arena would use (the same 64-byte rounding), so running a set-up on
 * it first gives the capacity the same set-up needs on a real arena (`peak`). */
#ifndef FM_ARENA_H
#define FM_ARENA_H

#include <stddef.h>

#include "fm/status.h"

/* The capacity that makes fm_arena_init build a measuring arena. */
#define FM_ARENA_MEASURE ((size_t)-1)

typedef struct fm_arena {
    char *base;   /* NULL for a measuring arena */
    size_t cap;   /* bytes */
    size_t used;  /* bytes, always a multiple of 64 */
    size_t peak;  /* high-water mark of used */
    int measure;  /* 1: a measuring arena */
} fm_arena;

/* A real arena of at least cap bytes, or a measuring one (cap = FM_ARENA_MEASURE). */
int fm_arena_init(fm_arena *a, size_t cap, fm_err *e);
void fm_arena_free(fm_arena *a);

/* 1 for a measuring arena. The addresses it hands out are distinct, 64-byte
 * aligned and never NULL (so code that tests a buffer for NULL takes the same
 * path as on a real arena), but they point at no memory: a set-up running on
 * it must not read or write its buffers (it also skips creating oneDNN
 * primitives: their descriptors alone fix the sizes). */
static inline int fm_arena_measuring(const fm_arena *a) { return a->measure; }

/* *(T **)out = a 64-byte-aligned, zeroed block of n elements of elem_size
 * bytes each, where out is the address of a pointer of any object type
 * (e.g. `float **`). When the arena is full: FM_ERR_INTERNAL "<what>: arena
 * exhausted: ..." (what may be NULL). */
int fm_arena_take(fm_arena *a, size_t n, size_t elem_size, void *out, const char *what, fm_err *e);

/* The block of fm_arena_take as a return value, or NULL when the arena is full. */
void *fm_arena_alloc(fm_arena *a, size_t bytes);
/* fm_arena_take of `bytes` single bytes, with no name. */
int fm_arena_alloc_or(fm_arena *a, size_t bytes, void **out, fm_err *e);

/* Marks: release everything allocated after a mark (stack discipline). */
static inline size_t fm_arena_mark(const fm_arena *a) { return a->used; }
void fm_arena_release(fm_arena *a, size_t mark);

#endif
