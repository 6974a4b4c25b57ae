/* schedule.c - linear warm-up then cosine decay of the learning rate. */
#include "fm/schedule.h"

#include <math.h>

static const double PI = 3.14159265358979323846;

int fm_lr_schedule_check(const fm_lr_schedule *s, fm_err *e)
{
    if (!(s->base > 0) || !isfinite(s->base))
        return fm_fail(e, FM_ERR_USAGE, "lr schedule: base lr %g must be > 0", s->base);
    if (!(s->min_ratio >= 0 && s->min_ratio <= 1))
        return fm_fail(e, FM_ERR_USAGE, "lr schedule: min ratio %g must be in [0, 1]", s->min_ratio);
    if (s->total < 1)
        return fm_fail(e, FM_ERR_USAGE, "lr schedule: total steps %lld must be >= 1", (long long)s->total);
    if (s->warmup < 0 || s->warmup > s->total)
        return fm_fail(e, FM_ERR_USAGE, "lr schedule: warm-up %lld must be in [0, total steps %lld]",
                       (long long)s->warmup, (long long)s->total);
    return FM_OK;
}

double fm_lr_at(const fm_lr_schedule *s, int64_t step)
{
    const double min_lr = s->base * s->min_ratio;
    if (step < 0)
        step = 0;
    if (step < s->warmup)
        return s->base * (double)(step + 1) / (double)s->warmup;
    if (step >= s->total)
        return min_lr;
    double progress = (double)(step - s->warmup) / (double)(s->total - s->warmup);
    return min_lr + (s->base - min_lr) * 0.5 * (1.0 + cos(PI * progress));
}
