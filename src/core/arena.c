/* arena.c - bump allocator. */
#define _DEFAULT_SOURCE /* madvise, MADV_HUGEPAGE */
#include "fm/arena.h"

#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>

#define ARENA_ALIGN 64
#define HUGE_PAGE ((size_t)2 << 20)
/* Where a measuring arena's addresses start: non-canonical on x86-64, so a
 * stray access through one faults at once instead of touching real memory. */
#define MEASURE_BASE ((uintptr_t)1 << 62)

int fm_arena_init(fm_arena *a, size_t cap, fm_err *e)
{
    memset(a, 0, sizeof *a);
    if (cap == FM_ARENA_MEASURE) {
        a->cap = cap;
        a->measure = 1;
        return FM_OK;
    }
    cap = (cap + ARENA_ALIGN - 1) & ~(size_t)(ARENA_ALIGN - 1);
    if (cap == 0)
        cap = ARENA_ALIGN;
    /* Arenas of 2 MiB or more start on a 2 MiB boundary and ask for
     * transparent huge pages (where the kernel's setting is "madvise"): the
     * activations of a step then sit on a few hundred TLB entries instead of
     * tens of thousands. The advice is only advice: if the kernel declines,
     * the arena works as before, so its result is not an error. */
    const int huge = cap >= HUGE_PAGE;
    if (huge)
        cap = (cap + HUGE_PAGE - 1) & ~(HUGE_PAGE - 1);
    a->base = aligned_alloc(huge ? HUGE_PAGE : ARENA_ALIGN, cap);
    if (!a->base)
        return fm_fail(e, FM_ERR_INTERNAL, "out of memory: cannot reserve an arena of %zu MiB", cap >> 20);
    if (huge)
        (void)madvise(a->base, cap, MADV_HUGEPAGE);
    a->cap = cap;
    return FM_OK;
}

void fm_arena_free(fm_arena *a)
{
    free(a->base);
    memset(a, 0, sizeof *a);
}

void *fm_arena_alloc(fm_arena *a, size_t bytes)
{
    size_t need = (bytes + ARENA_ALIGN - 1) & ~(size_t)(ARENA_ALIGN - 1);
    if (need == 0)
        need = ARENA_ALIGN;
    if ((!a->base && !a->measure) || need < bytes || need > a->cap - a->used)
        return NULL;
    const size_t at = a->used;
    a->used += need;
    if (a->used > a->peak)
        a->peak = a->used;
    if (a->measure)
        return (void *)(MEASURE_BASE + at);
    char *p = a->base + at;
    memset(p, 0, need);
    return p;
}

int fm_arena_take(fm_arena *a, size_t n, size_t elem_size, void *out, const char *what, fm_err *e)
{
    void *p = NULL;
    if (elem_size == 0 || n <= SIZE_MAX / elem_size)
        p = fm_arena_alloc(a, n * elem_size);
    memcpy(out, &p, sizeof p); /* *(T **)out = p */
    if (!p) {
        char req[64];
        if (elem_size == 1)
            snprintf(req, sizeof req, "%zu bytes", n);
        else
            snprintf(req, sizeof req, "%zu x %zu bytes", n, elem_size);
        return fm_fail(e, FM_ERR_INTERNAL, "%s%sarena exhausted: %s requested, %zu of %zu in use", what ? what : "",
                       what ? ": " : "", req, a->used, a->cap);
    }
    return FM_OK;
}

int fm_arena_alloc_or(fm_arena *a, size_t bytes, void **out, fm_err *e)
{
    return fm_arena_take(a, bytes, 1, out, NULL, e);
}

void fm_arena_release(fm_arena *a, size_t mark)
{
    if (mark <= a->used)
        a->used = mark;
}
