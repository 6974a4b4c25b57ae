/* sizing.c - a set-up run on a measuring arena, then for real (see sizing.h). */
#include "fm/sizing.h"

#include <stdlib.h>
#include <string.h>

/* ops->setup of obj on a measuring arena and the counting table *count (which
 * the caller frees, as it frees obj). */
static int measure(const fm_sizing_ops *ops, void *obj, fm_dnn *d, fm_params *count, const void *args, fm_err *e)
{
    memset(obj, 0, ops->size);
    FM_TRY(fm_params_init_count(count, e));
    return ops->setup(obj, d, count, args, FM_ARENA_MEASURE, e);
}

int fm_sizing_init(const fm_sizing_ops *ops, void *obj, fm_dnn *d, fm_params *p, const void *args, fm_err *e)
{
    fm_params count;
    int rc = measure(ops, obj, d, &count, args, e);
    const size_t need = ops->arena(obj)->peak;
    ops->free(obj);
    fm_params_free(&count);
    FM_TRY(rc);
    memset(obj, 0, ops->size);
    return ops->setup(obj, d, p, args, need, e);
}

int fm_sizing_measure(const fm_sizing_ops *ops, const void *args, size_t *arena, size_t *padded, int *tensors,
                      size_t *values, fm_err *e)
{
    fm_dnn d;
    fm_params count = { 0 };
    void *obj = malloc(ops->size);
    if (!obj)
        return fm_fail(e, FM_ERR_INTERNAL, "out of memory for a measuring run");
    int rc = fm_dnn_init(&d, e);
    if (rc == FM_OK) {
        rc = measure(ops, obj, &d, &count, args, e);
        if (rc == FM_OK && arena)
            *arena = ops->arena(obj)->peak;
        ops->free(obj);
        fm_dnn_free(&d);
    }
    if (rc == FM_OK) {
        if (tensors)
            *tensors = count.n;
        if (padded)
            *padded = count.numel;
        if (values)
            *values = count.values;
    }
    fm_params_free(&count);
    free(obj);
    return rc;
}

int fm_sizing_param_count(const fm_sizing_ops *ops, const void *args, int *tensors, size_t *padded, size_t *values,
                          fm_err *e)
{
    return fm_sizing_measure(ops, args, NULL, padded, tensors, values, e);
}
