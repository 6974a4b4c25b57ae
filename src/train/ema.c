/* ema.c - exponential moving average of the parameter arena. */
#include "fm/ema.h"

#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

int fm_ema_init(fm_ema *m, fm_params *p, double decay, int warmup, fm_err *e)
{
    FM_TRY(fm_ema_init_shard(m, p, decay, warmup, p->numel, e));
    memcpy(m->w, p->data, p->numel * sizeof(float));
    return FM_OK;
}

int fm_ema_init_shard(fm_ema *m, fm_params *p, double decay, int warmup, size_t floats, fm_err *e)
{
    memset(m, 0, sizeof *m);
    if (!(decay >= 0 && decay <= 1))
        return fm_fail(e, FM_ERR_USAGE, "ema: decay %g must be in [0, 1]", decay);
    if (floats > p->numel)
        return fm_fail(e, FM_ERR_INTERNAL, "ema: a shard of %zu floats exceeds the %zu-float arena", floats,
                       p->numel);
    size_t bytes = (floats * sizeof(float) + 63) & ~(size_t)63;
    m->w = aligned_alloc(64, bytes ? bytes : 64);
    if (!m->w)
        return fm_fail(e, FM_ERR_INTERNAL, "ema: out of memory for %zu parameters", floats);
    memset(m->w, 0, bytes ? bytes : 64);
    m->p = p;
    m->numel = p->numel;
    m->nstate = floats;
    m->decay = decay;
    m->warmup = warmup != 0;
    return FM_OK;
}

void fm_ema_free(fm_ema *m)
{
    free(m->w);
    memset(m, 0, sizeof *m);
}

/* The warm-up curve (1+k)/(10+k) at update k. */
static double warmup_curve(double k) { return (1.0 + k) / (10.0 + k); }

double fm_ema_decay_at(const fm_ema *m, int64_t step)
{
    if (!m->warmup)
        return m->decay;
    if (step < 0)
        step = 0;
    double d = warmup_curve((double)step);
    return d < m->decay ? d : m->decay;
}

int64_t fm_ema_warmup_reaches(double decay)
{
    if (decay >= 1.0)
        return INT64_MAX;
    double k = ceil((10.0 * decay - 1.0) / (1.0 - decay)); /* (1+k)/(10+k) >= decay */
    if (k < 0)
        return 0;
    while (k > 0 && warmup_curve(k - 1) >= decay) /* rounding: the first such k */
        k--;
    while (warmup_curve(k) < decay)
        k++;
    return (int64_t)k;
}

/* The arena has not changed; whole: the average is not a shard. */
static int check_size(const fm_ema *m, int whole, fm_err *e)
{
    if (m->p->numel != m->numel)
        return fm_fail(e, FM_ERR_INTERNAL, "ema: parameter arena changed after init (%zu -> %zu floats)",
                       m->numel, m->p->numel);
    if (whole && m->nstate != m->numel)
        return fm_fail(e, FM_ERR_INTERNAL, "ema: the average holds a shard (%zu of %zu floats): use the spans",
                       m->nstate, m->numel);
    return FM_OK;
}

int fm_ema_update(fm_ema *m, int64_t step, fm_err *e)
{
    FM_TRY(check_size(m, 1, e));
    double d = fm_ema_decay_at(m, step);
    const float df = (float)d, omd = (float)(1.0 - d);
    float *restrict w = m->w;
    const float *restrict x = m->p->data;
    const long n = (long)m->numel;
#pragma omp parallel for simd schedule(static)
    for (long i = 0; i < n; i++)
        w[i] = w[i] * df + omd * x[i]; /* ema.mul_(d).add_(p, alpha=1-d) */
    return FM_OK;
}

int fm_ema_update_spans(fm_ema *m, int64_t step, const fm_span *spans, const size_t *at, int nspans, fm_err *e)
{
    FM_TRY(check_size(m, 0, e));
    for (int i = 0; i < nspans; i++) {
        if (spans[i].off + spans[i].count > m->numel)
            return fm_fail(e, FM_ERR_INTERNAL, "ema: span [%zu, +%zu) outside the %zu-float arena", spans[i].off,
                           spans[i].count, m->numel);
        const size_t a = at ? at[i] : spans[i].off;
        if (a + spans[i].count > m->nstate)
            return fm_fail(e, FM_ERR_INTERNAL, "ema: span %d's average [%zu, +%zu) outside the %zu held", i, a,
                           spans[i].count, m->nstate);
    }
    double d = fm_ema_decay_at(m, step);
    const float df = (float)d, omd = (float)(1.0 - d);
#pragma omp parallel for schedule(dynamic)
    for (int s = 0; s < nspans; s++) {
        float *restrict w = m->w + (at ? at[s] : spans[s].off);
        const float *restrict x = m->p->data + spans[s].off;
        const size_t n = spans[s].count;
#pragma omp simd
        for (size_t i = 0; i < n; i++)
            w[i] = w[i] * df + omd * x[i];
    }
    return FM_OK;
}

/* The k averages' decays at `step` and their (1 - d), as fp32. */
static void decays(const fm_ema *m, int k, int64_t step, float *df, float *omd)
{
    for (int j = 0; j < k; j++) {
        const double d = fm_ema_decay_at(&m[j], step);
        df[j] = (float)d;
        omd[j] = (float)(1.0 - d);
    }
}

static int check_many(const fm_ema *m, int k, fm_err *e)
{
    if (k < 1 || k > FM_EMA_MAX)
        return fm_fail(e, FM_ERR_INTERNAL, "ema: %d averages in one pass (1 to %d)", k, FM_EMA_MAX);
    for (int j = 1; j < k; j++)
        if (m[j].p != m[0].p || m[j].nstate != m[0].nstate)
            return fm_fail(e, FM_ERR_INTERNAL, "ema: average %d holds another arena or shard than average 0", j);
    return FM_OK;
}

int fm_ema_update_n(fm_ema *m, int k, int64_t step, fm_err *e)
{
    if (k == 1)
        return fm_ema_update(m, step, e);
    FM_TRY(check_many(m, k, e));
    for (int j = 0; j < k; j++)
        FM_TRY(check_size(&m[j], 1, e));
    float df[FM_EMA_MAX], omd[FM_EMA_MAX];
    decays(m, k, step, df, omd);
    const float *restrict x = m[0].p->data;
    const long n = (long)m[0].numel;
#pragma omp parallel for schedule(static)
    for (long i = 0; i < n; i++) { /* x[i] read once for every rate */
        const float xi = x[i];
        for (int j = 0; j < k; j++)
            m[j].w[i] = m[j].w[i] * df[j] + omd[j] * xi;
    }
    return FM_OK;
}

int fm_ema_update_spans_n(fm_ema *m, int k, int64_t step, const fm_span *spans, const size_t *at, int nspans,
                          fm_err *e)
{
    if (k == 1)
        return fm_ema_update_spans(m, step, spans, at, nspans, e);
    FM_TRY(check_many(m, k, e));
    for (int j = 0; j < k; j++)
        FM_TRY(check_size(&m[j], 0, e));
    for (int i = 0; i < nspans; i++)
        if (spans[i].off + spans[i].count > m->numel || (at ? at[i] : spans[i].off) + spans[i].count > m->nstate)
            return fm_fail(e, FM_ERR_INTERNAL, "ema: span %d [%zu, +%zu) outside the average", i, spans[i].off,
                           spans[i].count);
    float df[FM_EMA_MAX], omd[FM_EMA_MAX];
    decays(m, k, step, df, omd);
#pragma omp parallel for schedule(dynamic)
    for (int s = 0; s < nspans; s++) {
        const size_t a = at ? at[s] : spans[s].off, n = spans[s].count;
        const float *restrict x = m[0].p->data + spans[s].off;
        for (size_t i = 0; i < n; i++) {
            const float xi = x[i];
            for (int j = 0; j < k; j++)
                m[j].w[a + i] = m[j].w[a + i] * df[j] + omd[j] * xi;
        }
    }
    return FM_OK;
}

void fm_ema_prefix(double rate, int first, char *out, size_t cap)
{
    if (first)
        snprintf(out, cap, "ema.");
    else
        snprintf(out, cap, "ema@%.10g.", rate);
}

int fm_ema_swap(fm_ema *m, fm_err *e)
{
    FM_TRY(check_size(m, 1, e));
    float *restrict w = m->w, *restrict x = m->p->data;
    const long n = (long)m->numel;
#pragma omp parallel for simd schedule(static)
    for (long i = 0; i < n; i++) {
        float t = w[i];
        w[i] = x[i];
        x[i] = t;
    }
    return FM_OK;
}

void fm_ema_copy_to(const fm_ema *m, float *dst) { memcpy(dst, m->w, m->numel * sizeof(float)); }
