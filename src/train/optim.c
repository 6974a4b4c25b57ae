/* optim.c - AdamW, one fused OpenMP pass over the parameter arena. */
#include "fm/optim.h"

#include <math.h>
#include <omp.h>
#include <stdlib.h>
#include <string.h>

fm_adamw_cfg fm_adamw_defaults(void)
{
    return (fm_adamw_cfg){ .beta1 = 0.9, .beta2 = 0.999, .eps = 1e-8, .weight_decay = 1e-2 };
}

/* Runs of equal decay flag: each tensor owns [offset, next offset) (its
 * padding included, which stays zero), the last one up to p->numel. */
static void build_segments(fm_adamw *o)
{
    const fm_params *p = o->p;
    o->nseg = 0;
    for (int i = 0; i < o->ntensors; i++) {
        size_t b = p->items[i].offset;
        size_t end = i + 1 < o->ntensors ? p->items[i + 1].offset : o->numel;
        int d = o->decay[i];
        if (o->nseg > 0 && o->seg[o->nseg - 1].decay == d && o->seg[o->nseg - 1].end == b)
            o->seg[o->nseg - 1].end = end;
        else
            o->seg[o->nseg++] = (fm_adamw_seg){ b, end, d };
    }
}

int fm_adamw_init(fm_adamw *o, fm_params *p, const fm_adamw_cfg *cfg, fm_err *e)
{
    return fm_adamw_init_shard(o, p, cfg, p->numel, e);
}

int fm_adamw_init_shard(fm_adamw *o, fm_params *p, const fm_adamw_cfg *cfg, size_t floats, fm_err *e)
{
    memset(o, 0, sizeof *o);
    if (!(cfg->beta1 >= 0 && cfg->beta1 < 1) || !(cfg->beta2 >= 0 && cfg->beta2 < 1))
        return fm_fail(e, FM_ERR_USAGE, "adamw: betas (%g, %g) must be in [0, 1)", cfg->beta1, cfg->beta2);
    if (!(cfg->eps > 0) || !(cfg->weight_decay >= 0) || !isfinite(cfg->eps) || !isfinite(cfg->weight_decay))
        return fm_fail(e, FM_ERR_USAGE, "adamw: eps %g must be > 0 and weight decay %g >= 0", cfg->eps,
                       cfg->weight_decay);
    if (p->n < 1)
        return fm_fail(e, FM_ERR_INTERNAL, "adamw: no parameters registered");
    if (floats > p->numel)
        return fm_fail(e, FM_ERR_INTERNAL, "adamw: a shard of %zu floats exceeds the %zu-float arena", floats,
                       p->numel);
    o->p = p;
    o->cfg = *cfg;
    o->numel = p->numel;
    o->nstate = floats;
    o->ntensors = p->n;
    size_t bytes = (floats * sizeof(float) + 63) & ~(size_t)63;
    o->m = aligned_alloc(64, bytes ? bytes : 64);
    o->v = aligned_alloc(64, bytes ? bytes : 64);
    o->decay = malloc((size_t)p->n);
    o->seg = malloc((size_t)p->n * sizeof *o->seg);
    if (!o->m || !o->v || !o->decay || !o->seg) {
        fm_adamw_free(o);
        return fm_fail(e, FM_ERR_INTERNAL, "adamw: out of memory for %zu parameters", p->numel);
    }
    memset(o->m, 0, bytes);
    memset(o->v, 0, bytes);
    memset(o->decay, 1, (size_t)p->n);
    build_segments(o);
    return FM_OK;
}

void fm_adamw_free(fm_adamw *o)
{
    free(o->m);
    free(o->v);
    free(o->decay);
    free(o->seg);
    memset(o, 0, sizeof *o);
}

int fm_adamw_set_decay(fm_adamw *o, int index, int on, fm_err *e)
{
    if (index < 0 || index >= o->ntensors)
        return fm_fail(e, FM_ERR_INTERNAL, "adamw: tensor index %d out of range [0, %d)", index, o->ntensors);
    o->decay[index] = on != 0;
    build_segments(o);
    return FM_OK;
}

int fm_adamw_no_decay_if(fm_adamw *o, int (*no_decay)(const fm_param *t, void *ctx), void *ctx)
{
    int count = 0;
    for (int i = 0; i < o->ntensors; i++)
        if (no_decay(&o->p->items[i], ctx)) {
            o->decay[i] = 0;
            count++;
        }
    build_segments(o);
    return count;
}

static int is_1d(const fm_param *t, void *ctx)
{
    (void)ctx;
    return t->w.ndim == 1;
}

int fm_adamw_no_decay_1d(fm_adamw *o) { return fm_adamw_no_decay_if(o, is_1d, NULL); }

static int name_contains(const fm_param *t, void *part) { return strstr(t->name, part) != NULL; }

int fm_adamw_no_decay_named(fm_adamw *o, const char *part)
{
    return fm_adamw_no_decay_if(o, name_contains, (void *)part);
}

/* The fp32 coefficients of one step, computed in double like Python does. */
typedef struct step_coef {
    float keep[2];  /* 1 - lr*wd for decay off [0] / on [1] */
    float b1, omb1, b2, omb2, bc2_sqrt, eps, neg_step_size;
} step_coef;

/* n floats with one decay factor: weights w, gradients g, moments m and v
 * (each pointing at the run's first float). The loop vectorises only under
 * -fno-math-errno (else sqrtf keeps a scalar errno path): ~5x at 9M params. */
static void adamw_range(float *restrict w, const float *restrict g, float *restrict m, float *restrict v, size_t n,
                        float keep, const step_coef *c)
{
    const float b1 = c->b1, omb1 = c->omb1, b2 = c->b2, omb2 = c->omb2;
    const float bc2s = c->bc2_sqrt, eps = c->eps, nss = c->neg_step_size;
#pragma omp simd
    for (size_t i = 0; i < n; i++) {
        float gi = g[i];
        float pi = w[i] * keep;                    /* param.mul_(1 - lr*wd) */
        float mi = m[i] * b1 + omb1 * gi;          /* exp_avg.mul_(b1).add_(g, alpha=1-b1) */
        float vi = v[i] * b2 + omb2 * gi * gi;     /* exp_avg_sq.mul_(b2).addcmul_(g, g, value=1-b2) */
        float den = sqrtf(vi) / bc2s + eps;        /* (exp_avg_sq.sqrt() / bc2_sqrt).add_(eps) */
        w[i] = pi + nss * mi / den;                /* param.addcdiv_(exp_avg, denom, value=-step_size) */
        m[i] = mi;
        v[i] = vi;
    }
}

/* Check the arena and lr, count the step and compute its coefficients. */
static int step_begin(fm_adamw *o, double lr, step_coef *c, fm_err *e)
{
    if (o->p->numel != o->numel || o->p->n != o->ntensors)
        return fm_fail(e, FM_ERR_INTERNAL, "adamw: parameter arena changed after init (%zu -> %zu floats)",
                       o->numel, o->p->numel);
    if (!(lr >= 0) || !isfinite(lr))
        return fm_fail(e, FM_ERR_INTERNAL, "adamw: bad learning rate %g at step %lld", lr,
                       (long long)o->step + 1);
    o->step++;
    const fm_adamw_cfg *h = &o->cfg;
    double t = (double)o->step;
    double bc1 = 1.0 - pow(h->beta1, t);
    double bc2 = 1.0 - pow(h->beta2, t);
    *c = (step_coef){
        .keep = { (float)(1.0 - lr * 0.0), (float)(1.0 - lr * h->weight_decay) },
        .b1 = (float)h->beta1,
        .omb1 = (float)(1.0 - h->beta1),
        .b2 = (float)h->beta2,
        .omb2 = (float)(1.0 - h->beta2),
        .bc2_sqrt = (float)sqrt(bc2),
        .eps = (float)h->eps,
        .neg_step_size = (float)-(lr / bc1),
    };
    return FM_OK;
}

/* The update of arena floats [lo, hi), each decay run with its factor; their
 * moments are m and v from float at (arena float lo's). */
static void apply(const fm_adamw *o, const step_coef *c, size_t lo, size_t hi, size_t at)
{
    float *w = o->p->data, *g = o->p->grad, *m = o->m + at, *v = o->v + at;
    for (int s = 0; s < o->nseg && lo < hi; s++) {
        size_t a = o->seg[s].begin > lo ? o->seg[s].begin : lo;
        size_t b = o->seg[s].end < hi ? o->seg[s].end : hi;
        if (a < b)
            adamw_range(w + a, g + a, m + (a - lo), v + (a - lo), b - a, c->keep[o->seg[s].decay], c);
    }
}

int fm_adamw_step(fm_adamw *o, double lr, fm_err *e)
{
    if (o->nstate != o->numel)
        return fm_fail(e, FM_ERR_INTERNAL, "adamw: the moments hold a shard (%zu of %zu floats): step the spans",
                       o->nstate, o->numel);
    step_coef c;
    FM_TRY(step_begin(o, lr, &c, e));
    const size_t n = o->numel;
#pragma omp parallel
    {
        /* each thread takes one contiguous, 16-float aligned slice of the arena */
        size_t nt = (size_t)omp_get_num_threads(), id = (size_t)omp_get_thread_num();
        size_t chunk = ((n + nt - 1) / nt + 15) & ~(size_t)15;
        size_t lo = id * chunk < n ? id * chunk : n;
        size_t hi = lo + chunk < n ? lo + chunk : n;
        apply(o, &c, lo, hi, lo);
    }
    return FM_OK;
}

int fm_adamw_step_spans(fm_adamw *o, double lr, const fm_span *spans, const size_t *at, int nspans, fm_err *e)
{
    for (int i = 0; i < nspans; i++) {
        if (spans[i].off + spans[i].count > o->numel)
            return fm_fail(e, FM_ERR_INTERNAL, "adamw: span [%zu, +%zu) outside the %zu-float arena", spans[i].off,
                           spans[i].count, o->numel);
        const size_t a = at ? at[i] : spans[i].off;
        if (a + spans[i].count > o->nstate)
            return fm_fail(e, FM_ERR_INTERNAL, "adamw: span %d's moments [%zu, +%zu) outside the %zu held", i, a,
                           spans[i].count, o->nstate);
    }
    step_coef c;
    FM_TRY(step_begin(o, lr, &c, e));
#pragma omp parallel for schedule(dynamic)
    for (int i = 0; i < nspans; i++)
        apply(o, &c, spans[i].off, spans[i].off + spans[i].count, at ? at[i] : spans[i].off);
    return FM_OK;
}
