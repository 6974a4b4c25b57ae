/* paritydump.c - the parity dumpers' tensor list (see paritydump.h). */
#include "paritydump.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "fm/rng.h"

int fm_pdump_init(fm_pdump *d, const char *who, size_t bytes, fm_err *e)
{
    memset(d, 0, sizeof *d);
    d->who = who;
    return fm_arena_init(&d->a, bytes, e);
}

void fm_pdump_free(fm_pdump *d) { fm_arena_free(&d->a); }

int fm_pdump_put(fm_pdump *d, const char *name, const float *src, int ndim, const int64_t *shape, fm_err *e)
{
    long n = 1;
    for (int i = 0; i < ndim; i++)
        n *= shape[i];
    char *nm = fm_arena_alloc(&d->a, strlen(name) + 1);
    float *p = fm_arena_alloc(&d->a, (size_t)n * sizeof(float));
    if (!nm || !p || d->n == FM_PDUMP_MAX)
        return fm_fail(e, FM_ERR_INTERNAL, "%s: out of dump space at %s", d->who, name);
    strcpy(nm, name);
    memcpy(p, src, (size_t)n * sizeof(float));
    fm_st_tensor *t = &d->t[d->n++];
    *t = (fm_st_tensor){ .name = nm, .data = p, .dtype = FM_F32, .ndim = ndim };
    memcpy(t->shape, shape, (size_t)ndim * sizeof(int64_t));
    return FM_OK;
}

int fm_pdump_params(fm_pdump *d, const fm_params *p, fm_err *e)
{
    char gname[FM_PARAM_NAME + 8];
    d->order = fm_arena_alloc(&d->a, (size_t)p->n * FM_PARAM_NAME);
    if (!d->order)
        return fm_fail(e, FM_ERR_INTERNAL, "%s: out of dump space at the order", d->who);
    d->order[0] = '\0';
    for (int i = 0; i < p->n; i++) {
        const fm_param *t = &p->items[i];
        snprintf(gname, sizeof gname, "grad.%s", t->name);
        FM_TRY(fm_pdump_put(d, t->name, t->w.data, t->w.ndim, t->w.shape, e));
        FM_TRY(fm_pdump_put(d, gname, t->g.data, t->g.ndim, t->g.shape, e));
        strcat(d->order, t->name);
        strcat(d->order, i + 1 < p->n ? "," : "");
    }
    return FM_OK;
}

void fm_pdump_perturb_norms(fm_params *p, uint64_t seed)
{
    for (int i = 0; i < p->n; i++) {
        fm_param *t = &p->items[i];
        if (strncmp(t->name, "features.", 9) || atoi(t->name + 9) % 3 != 1)
            continue;
        const long n = (long)fm_tensor_numel(&t->w);
        fm_fill_normal(t->w.data, n, seed, 1000 + (uint64_t)i, 0);
        const float base = strstr(t->name, ".weight") ? 1.0f : 0.0f;
        for (long k = 0; k < n; k++)
            fm_f32(&t->w)[k] = base + 0.3f * fm_f32(&t->w)[k];
    }
}

int fm_pdump_write(const fm_pdump *d, const char *path, fm_err *e)
{
    const fm_st_meta meta[1] = { { "param_order", d->order ? d->order : "" } };
    return fm_st_write(path, d->t, d->n, meta, 1, e);
}
