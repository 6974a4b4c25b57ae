/* ema.h - exponential moving average of the parameter arena.
 *
 *   ema = d*ema + (1-d)*p     over all of fm_params.data, one fused pass,
 * with fp32 arithmetic in torch's order (ema.mul_(d).add_(p, alpha=1-d)).
 * With warm-up, the decay used at update `step` (0 for the first update) is
 * d = min(decay, (1+step)/(10+step)), so early averages are not dominated by
 * the random initialisation. */
#ifndef FM_EMA_H
#define FM_EMA_H

#include <stddef.h>
#include <stdint.h>

#include "fm/params.h"
#include "fm/status.h"

/* Averages one fused update may carry (= the list limit of flow.ema_decay). */
#define FM_EMA_MAX 16

typedef struct fm_ema {
    fm_params *p;
    float *w;        /* [nstate] EMA weights, layout of p->data (or a ZeRO-1 shard's floats, packed in
                        span order); 64-byte aligned, malloc family; save/restore for checkpoints */
    size_t numel;    /* = p->numel at init */
    size_t nstate;   /* floats of w: numel, or the shard's (set by the owner of the shard) */
    double decay;
    int warmup;      /* 1: use min(decay, (1+step)/(10+step)) */
} fm_ema;

/* Allocate the EMA buffer and copy the current parameters into it.
 * decay must be in [0, 1] -> else FM_ERR_USAGE. */
int fm_ema_init(fm_ema *m, fm_params *p, double decay, int warmup, fm_err *e);
/* The same for a ZeRO-1 shard of `floats` (<= p->numel) floats, all zero:
 * the owner of the shard fills them in. */
int fm_ema_init_shard(fm_ema *m, fm_params *p, double decay, int warmup, size_t floats, fm_err *e);
void fm_ema_free(fm_ema *m);

/* The decay applied at update `step` (pure). */
double fm_ema_decay_at(const fm_ema *m, int64_t step);

/* With warm-up: the first update k at which (1+k)/(10+k) reaches decay, so
 * that the EMA's own rate applies (0 for decay <= 0.1; INT64_MAX for 1). */
int64_t fm_ema_warmup_reaches(double decay);

/* Fold the current parameters into the average; `step` counts earlier
 * updates (0 on the first). */
int fm_ema_update(fm_ema *m, int64_t step, fm_err *e);
/* The same update on the arena floats of spans only (a ZeRO-1 shard): span
 * i's average is w from float at[i] on (at NULL: a whole average, at the
 * spans' arena offsets). */
int fm_ema_update_spans(fm_ema *m, int64_t step, const fm_span *spans, const size_t *at, int nspans, fm_err *e);

/* The same updates of k averages m[0..k-1] of one arena (and one shard
 * layout), with their own decays, in one pass that reads each parameter once;
 * each average's floats equal those of its own fm_ema_update(_spans). */
int fm_ema_update_n(fm_ema *m, int k, int64_t step, fm_err *e);
int fm_ema_update_spans_n(fm_ema *m, int k, int64_t step, const fm_span *spans, const size_t *at, int nspans,
                          fm_err *e);

/* The checkpoint prefix of the average of decay `rate`: "ema." for the first
 * rate of flow.ema_decay (the name of a single-rate run's EMA), else
 * "ema@<rate %.10g>." (e.g. "ema@0.9999."). cap >= 32. */
void fm_ema_prefix(double rate, int first, char *out, size_t cap);

/* Exchange the EMA weights (whole) and the live parameters in place: call once to run
 * the model on EMA weights, call again to get the trained weights back. */
int fm_ema_swap(fm_ema *m, fm_err *e);

/* Copy the EMA weights into dst ([numel] floats, e.g. another fm_params.data
 * built with the same registration order). */
void fm_ema_copy_to(const fm_ema *m, float *dst);

#endif
