/* accum.c - gradient accumulation over micro-batches (see accum.h). */
#include "fm/accum.h"

#include <stdlib.h>
#include <string.h>

int fm_accum_init(fm_accum *a, fm_params *p, int steps, fm_flow_grad_hook next, void *next_ctx, fm_err *e)
{
    memset(a, 0, sizeof *a);
    a->p = p;
    a->steps = steps;
    a->next = next;
    a->next_ctx = next_ctx;
    if (steps <= 1)
        return FM_OK;
    a->sum = malloc(p->numel * sizeof(float));
    a->added = calloc((size_t)p->n, 1);
    if (!a->sum || !a->added) {
        fm_accum_free(a);
        return fm_fail(e, FM_ERR_INTERNAL, "out of memory for the gradient accumulator (%zu floats)", p->numel);
    }
    return FM_OK;
}

void fm_accum_free(fm_accum *a)
{
    free(a->sum);
    free(a->added);
    memset(a, 0, sizeof *a);
}

void fm_accum_micro(fm_accum *a, int k)
{
    a->micro = k;
    if (a->added && k == a->steps - 1)
        memset(a->added, 0, (size_t)a->p->n);
}

static void add_sum(fm_accum *a, int i)
{
    if (a->added[i])
        return;
    a->added[i] = 1;
    const fm_param *q = &a->p->items[i];
    float *g = a->p->grad + q->offset;
    const float *s = a->sum + q->offset;
    const int64_t n = fm_tensor_numel(&q->g);
    for (int64_t j = 0; j < n; j++)
        g[j] += s[j];
}

int fm_accum_hook(void *ctx, int first, int n, fm_err *e)
{
    fm_accum *a = ctx;
    if (a->steps > 1) {
        if (a->micro < a->steps - 1)
            return FM_OK; /* summed after the backward */
        for (int i = first; i < first + n; i++)
            add_sum(a, i);
    }
    return a->next ? a->next(a->next_ctx, first, n, e) : FM_OK;
}

void fm_accum_backward_done(fm_accum *a)
{
    if (a->steps <= 1)
        return;
    if (a->micro == a->steps - 1) {
        for (int i = 0; i < a->p->n; i++)
            add_sum(a, i);
        return;
    }
    const size_t n = a->p->numel;
    if (a->micro == 0) {
        memcpy(a->sum, a->p->grad, n * sizeof(float));
        return;
    }
    for (size_t j = 0; j < n; j++)
        a->sum[j] += a->p->grad[j];
}
