/* params.c - the parameter arena and its table of named views. */
#include "fm/params.h"

#include <stdarg.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "fm/rng.h"

int fm_params_init(fm_params *p, int max_tensors, size_t max_numel, uint64_t seed, fm_err *e)
{
    memset(p, 0, sizeof *p);
    max_numel = (max_numel + 15) & ~(size_t)15;
    p->items = calloc((size_t)max_tensors, sizeof *p->items);
    p->data = aligned_alloc(64, max_numel * sizeof(float));
    p->grad = aligned_alloc(64, max_numel * sizeof(float));
    if (!p->items || !p->data || !p->grad) {
        fm_params_free(p);
        return fm_fail(e, FM_ERR_INTERNAL, "out of memory for %zu parameters", max_numel);
    }
    /* not zeroed here: fm_params_add zeroes what it hands out, so a generous
     * capacity costs address space, not memory */
    p->cap = max_tensors;
    p->numel_cap = max_numel;
    p->seed = seed;
    return FM_OK;
}

int fm_params_init_count(fm_params *p, fm_err *e)
{
    memset(p, 0, sizeof *p);
    /* calloc leaves untouched pages unmapped: the generous table costs
     * address space, not memory */
    p->items = calloc(FM_PARAMS_COUNT_MAX, sizeof *p->items);
    if (!p->items)
        return fm_fail(e, FM_ERR_INTERNAL, "out of memory for a parameter count");
    p->cap = FM_PARAMS_COUNT_MAX;
    p->numel_cap = SIZE_MAX / 2;
    return FM_OK;
}

void fm_params_free(fm_params *p)
{
    free(p->items);
    free(p->data);
    free(p->grad);
    memset(p, 0, sizeof *p);
}

int fm_params_add(fm_params *p, fm_param **out, int ndim, const int64_t *shape, fm_err *e,
                  const char *fmt, ...)
{
    char name[FM_PARAM_NAME];
    va_list ap;
    va_start(ap, fmt);
    int len = vsnprintf(name, sizeof name, fmt, ap);
    va_end(ap);
    if (len < 0 || len >= (int)sizeof name)
        return fm_fail(e, FM_ERR_INTERNAL, "parameter name too long: %s...", name);
    if (fm_params_find(p, name))
        return fm_fail(e, FM_ERR_INTERNAL, "parameter %s registered twice", name);
    if (p->n == p->cap)
        return fm_fail(e, FM_ERR_INTERNAL, "more than %d parameter tensors", p->cap);
    if (ndim < 1 || ndim > FM_MAX_DIMS)
        return fm_fail(e, FM_ERR_INTERNAL, "parameter %s: %d dimensions", name, ndim);
    size_t numel = 1;
    for (int i = 0; i < ndim; i++)
        numel *= (size_t)shape[i];
    size_t padded = (numel + 15) & ~(size_t)15;
    if (padded > p->numel_cap - p->numel)
        return fm_fail(e, FM_ERR_INTERNAL, "parameter arena full at %s (%zu of %zu floats)", name,
                       p->numel, p->numel_cap);
    fm_param *t = &p->items[p->n++];
    memset(t, 0, sizeof *t);
    memcpy(t->name, name, (size_t)len + 1);
    t->offset = p->numel;
    t->w.ndim = t->g.ndim = ndim;
    for (int i = 0; i < ndim; i++)
        t->w.shape[i] = t->g.shape[i] = shape[i];
    if (!fm_params_counting(p)) {
        t->w.data = p->data + p->numel;
        t->g.data = p->grad + p->numel;
        memset(t->w.data, 0, padded * sizeof(float));
        memset(t->g.data, 0, padded * sizeof(float));
    }
    p->numel += padded;
    p->values += numel;
    if (out)
        *out = t;
    return FM_OK;
}

fm_param *fm_params_find(const fm_params *p, const char *name)
{
    for (int i = 0; i < p->n; i++)
        if (strcmp(p->items[i].name, name) == 0)
            return &p->items[i];
    return NULL;
}

static uint64_t name_hash(const char *s)
{
    uint64_t h = 1469598103934665603ull; /* FNV-1a */
    for (; *s; s++)
        h = (h ^ (unsigned char)*s) * 1099511628211ull;
    return h;
}

void fm_param_init_uniform(const fm_params *p, fm_param *t, float bound)
{
    if (!t->w.data)
        return;
    float *w = t->w.data;
    int64_t n = fm_tensor_numel(&t->w);
    uint64_t stream = name_hash(t->name);
    for (int64_t i = 0; i < n; i++)
        w[i] = (2.0f * fm_rand_uniform(p->seed, stream, (uint64_t)i) - 1.0f) * bound;
}

void fm_param_init_normal(const fm_params *p, fm_param *t, float std)
{
    if (!t->w.data)
        return;
    float *w = t->w.data;
    int64_t n = fm_tensor_numel(&t->w);
    fm_fill_normal(w, n, p->seed, name_hash(t->name), 0);
    for (int64_t i = 0; i < n; i++)
        w[i] *= std;
}

void fm_param_fill(fm_param *t, float v)
{
    if (!t->w.data)
        return;
    float *w = t->w.data;
    int64_t n = fm_tensor_numel(&t->w);
    for (int64_t i = 0; i < n; i++)
        w[i] = v;
}

void fm_params_zero_grad(fm_params *p) { memset(p->grad, 0, p->numel * sizeof(float)); }
