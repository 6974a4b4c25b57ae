/* arena.c - bump allocator. */
#define _DEFAULT_SOURCE /* madvise, MADV_HUGEPAGE */
#include "fm/arena.h"

#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>

#define ARENA_ALIGN 64
#define HUGE_PAGE ((size_t)2 << 20)

int fm_arena_init(fm_arena *a, size_t cap, fm_err *e)
{
    memset(a, 0, sizeof *a);
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
    if (!a->base || need > a->cap - a->used)
        return NULL;
    char *p = a->base + a->used;
    a->used += need;
    if (a->used > a->peak)
        a->peak = a->used;
    memset(p, 0, need);
    return p;
}

int fm_arena_alloc_or(fm_arena *a, size_t bytes, void **out, fm_err *e)
{
    *out = fm_arena_alloc(a, bytes);
    if (!*out)
        return fm_fail(e, FM_ERR_INTERNAL, "arena exhausted: %zu bytes requested, %zu of %zu in use",
                       bytes, a->used, a->cap);
    return FM_OK;
}

void fm_arena_release(fm_arena *a, size_t mark)
{
    if (mark <= a->used)
        a->used = mark;
}
