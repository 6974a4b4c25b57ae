/* accum.h - gradient accumulation over the micro-batches of one optimiser
 * step (flow.accum_steps). Backward overwrites params->grad, so the first
 * k-1 micro-batches' gradients are summed into a side buffer; during the last
 * micro-batch's backward the grad hook adds that sum into each tensor as it
 * is finished and only then hands it to the next hook (the gradient sync), so
 * the allreduce runs once per optimiser step. */
#ifndef FM_ACCUM_H
#define FM_ACCUM_H

#include <stdint.h>

#include "fm/flowmodel.h"
#include "fm/params.h"
#include "fm/status.h"

typedef struct fm_accum {
    fm_params *p;
    int steps;              /* micro-batches per optimiser step (>= 1) */
    int micro;              /* the current one, 0..steps-1 */
    float *sum;             /* [numel]: gradients of micro-batches 0..micro-1 */
    uint8_t *added;         /* [ntensors]: sum added into grad this step */
    fm_flow_grad_hook next; /* called for finished tensors of the last micro-batch */
    void *next_ctx;
} fm_accum;

/* steps == 1 allocates nothing and fm_accum_hook only forwards. */
int fm_accum_init(fm_accum *a, fm_params *p, int steps, fm_flow_grad_hook next, void *next_ctx, fm_err *e);
void fm_accum_free(fm_accum *a);
/* Before micro-batch k's backward. */
void fm_accum_micro(fm_accum *a, int k);
/* The grad hook to install in the model (ctx = the fm_accum). */
int fm_accum_hook(void *ctx, int first, int n, fm_err *e);
/* After micro-batch k's backward: a non-last one is added to the sum; after
 * the last, tensors the hook never reported get the sum too. */
void fm_accum_backward_done(fm_accum *a);

#endif
