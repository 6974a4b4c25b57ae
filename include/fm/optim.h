/* optim.h - AdamW over the whole parameter arena in one fused pass.
 *
 * Matches torch.optim.AdamW (PyTorch 1.13, amsgrad=False, maximize=False)
 * operation for operation, in fp32, with torch's ordering:
 *   t += 1
 *   p  = p * (1 - lr*wd)                       (wd = 0 for tensors with decay off)
 *   m  = m*b1 + (1-b1)*g
 *   v  = v*b2 + (1-b2)*g*g
 *   p  = p + (-lr/(1-b1^t)) * m / (sqrt(v)/sqrt(1-b2^t) + eps)
 * The scalar coefficients are computed in double, as Python does, and rounded
 * to fp32 once. The pass is element-wise, so results do not depend on the
 * thread count.
 *
 * The moments m and v have the layout of fm_params.data (padding included),
 * so a checkpoint saves and restores them bitwise with `step`; under ZeRO-1
 * (fm_adamw_init_shard) they hold only the floats of one rank's shard,
 * packed in span order. */
#ifndef FM_OPTIM_H
#define FM_OPTIM_H

#include <stddef.h>
#include <stdint.h>

#include "fm/params.h"
#include "fm/status.h"

typedef struct fm_adamw_cfg {
    double beta1, beta2, eps, weight_decay;  /* torch defaults: 0.9, 0.999, 1e-8, 1e-2 */
} fm_adamw_cfg;

/* A run of the arena [begin, end) with one decay setting. */
typedef struct fm_adamw_seg {
    size_t begin, end;
    int decay;
} fm_adamw_seg;

typedef struct fm_adamw {
    fm_params *p;
    fm_adamw_cfg cfg;
    /* State for checkpoints (read and write these directly): */
    float *m, *v;         /* [nstate] each, 64-byte aligned (malloc family), zero at init */
    int64_t step;         /* steps taken; torch's state['step'] */
    size_t numel;         /* = p->numel at init */
    size_t nstate;        /* floats of m and v: numel, or a ZeRO-1 shard's (set by the owner of the shard) */
    /* Per-tensor weight-decay flags (1 = decay), indexed like p->items. */
    unsigned char *decay;
    int ntensors;
    fm_adamw_seg *seg;    /* runs of equal decay over the arena, rebuilt when flags change */
    int nseg;
} fm_adamw;

/* torch.optim.AdamW's defaults. */
fm_adamw_cfg fm_adamw_defaults(void);

/* Set up AdamW over every tensor registered in p so far (register all
 * parameters first). Allocates m and v; decay is on for every tensor.
 * Bad hyper-parameters (beta outside [0, 1), eps <= 0, wd < 0) -> FM_ERR_USAGE. */
int fm_adamw_init(fm_adamw *o, fm_params *p, const fm_adamw_cfg *cfg, fm_err *e);
/* The same with moments of `floats` (<= p->numel) floats each: a ZeRO-1
 * shard, stepped with fm_adamw_step_spans. */
int fm_adamw_init_shard(fm_adamw *o, fm_params *p, const fm_adamw_cfg *cfg, size_t floats, fm_err *e);
void fm_adamw_free(fm_adamw *o);

/* Turn weight decay on (on = 1) or off for tensor `index` of p->items. */
int fm_adamw_set_decay(fm_adamw *o, int index, int on, fm_err *e);

/* Turn decay off for every tensor for which no_decay(tensor, ctx) is true
 * (e.g. a test on the name); returns how many tensors it turned off. */
int fm_adamw_no_decay_if(fm_adamw *o, int (*no_decay)(const fm_param *t, void *ctx), void *ctx);

/* The usual rule: no decay for tensors with ndim == 1 (biases, GroupNorm /
 * LayerNorm weights). Returns how many tensors it turned off. */
int fm_adamw_no_decay_1d(fm_adamw *o);

/* No decay for tensors whose name contains `part` (e.g. "embed" for the
 * class / position embedding tables, which are 2-D). Returns the count. */
int fm_adamw_no_decay_named(fm_adamw *o, const char *part);

/* One AdamW step at learning rate lr using the gradients in p->grad.
 * lr must be finite and >= 0; the arena must not have grown since init; the
 * moments must be whole (nstate == numel). */
int fm_adamw_step(fm_adamw *o, double lr, fm_err *e);
/* The same step on the arena floats of spans only (a ZeRO-1 shard): the
 * values there are those fm_adamw_step gives; the rest of the parameters is
 * not touched. The moments of span i are m and v from float at[i] on (the
 * shard packed: at[i] = the counts of the spans before it); at NULL: whole
 * moments, at the spans' arena offsets. */
int fm_adamw_step_spans(fm_adamw *o, double lr, const fm_span *spans, const size_t *at, int nspans, fm_err *e);

#endif
