/* schedule.h - learning rate: linear warm-up, then cosine decay.
 *
 *   step <  warmup:          lr = base * (step+1) / warmup
 *   warmup <= step < total:  lr = min + (base-min) * (1 + cos(pi*(step-warmup)/(total-warmup))) / 2
 *   step >= total:           lr = min          (min = base * min_ratio)
 * Step 0 trains at base/warmup (never at zero); the cosine starts at base at
 * step == warmup and is one step short of min at step total-1. */
#ifndef FM_SCHEDULE_H
#define FM_SCHEDULE_H

#include <stdint.h>

#include "fm/status.h"

typedef struct fm_lr_schedule {
    double base;       /* peak learning rate, > 0 */
    double min_ratio;  /* final lr / base, in [0, 1] */
    int64_t warmup;    /* warm-up steps, 0 <= warmup <= total */
    int64_t total;     /* steps of the run, >= 1 */
} fm_lr_schedule;

/* FM_ERR_USAGE naming the bad field, if s is out of range. */
int fm_lr_schedule_check(const fm_lr_schedule *s, fm_err *e);

/* The learning rate of step `step` (0-based; negative counts as 0). Pure. */
double fm_lr_at(const fm_lr_schedule *s, int64_t step);

#endif
