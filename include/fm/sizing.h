/* sizing.h - a set-up run twice: once to measure its arena, once for real.
 *
 * A model takes all its buffers from one arena of exactly the bytes its
 * set-up needs: the set-up runs first on a measuring arena (arena.h) with a
 * counting parameter table (params.h), and then on a real arena of the peak
 * that first run took. The measuring run alone also counts the parameters a
 * configuration has (a model's *_param_count). */
#ifndef FM_SIZING_H
#define FM_SIZING_H

#include <stddef.h>

#include "fm/arena.h"
#include "fm/dnn.h"
#include "fm/params.h"
#include "fm/status.h"

/* One kind of object that sets itself up on an arena of its own. */
typedef struct fm_sizing_ops {
    size_t size; /* sizeof the object */
    /* Sets up obj (zeroed) as args says, on an arena of arena_cap bytes
     * (FM_ARENA_MEASURE: a measuring one), registering its parameters in p;
     * on failure obj is left freed. */
    int (*setup)(void *obj, fm_dnn *d, fm_params *p, const void *args, size_t arena_cap, fm_err *e);
    const fm_arena *(*arena)(const void *obj); /* the arena setup built */
    void (*free)(void *obj);                   /* also safe on a freed or zeroed obj */
} fm_sizing_ops;

/* ops->setup of obj on a real arena of exactly the bytes it takes, measured
 * by a first run on a measuring arena and a counting table (both freed). On
 * failure obj is left freed. */
int fm_sizing_init(const fm_sizing_ops *ops, void *obj, fm_dnn *d, fm_params *p, const void *args, fm_err *e);

/* A measuring run only (on an object and a oneDNN engine of its own, freed
 * after), nothing allocated for the arena: the bytes of the arena ops->setup
 * takes for args, and its parameters: floats with the per-tensor padding
 * (padded), tensors, floats without padding (values); each may be NULL. */
int fm_sizing_measure(const fm_sizing_ops *ops, const void *args, size_t *arena, size_t *padded, int *tensors,
                      size_t *values, fm_err *e);

/* The parameters ops->setup registers for args, from a measuring run only
 * (on an object and a oneDNN engine of its own, freed after): tensors, floats
 * with the per-tensor padding (padded) and without (values); each may be NULL. */
int fm_sizing_param_count(const fm_sizing_ops *ops, const void *args, int *tensors, size_t *padded, size_t *values,
                          fm_err *e);

#endif
