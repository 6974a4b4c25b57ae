/* embed.c - sinusoidal time embedding and class embedding table (see embed.h). */
#include "fm/embed.h"

#include <math.h>
#include <string.h>

#include "fm/rng.h"

int fm_time_embed_init(fm_time_embed *l, fm_arena *a, int n, int dim, double scale, fm_err *e)
{
    memset(l, 0, sizeof *l);
    if (n <= 0 || dim <= 0 || dim % 2)
        return fm_fail(e, FM_ERR_INTERNAL, "time embedding: need batch > 0 and an even width > 0, got %d x %d",
                       n, dim);
    FM_TRY(fm_arena_take(a, (size_t)(dim / 2), sizeof(double), &l->freqs, "time embedding", e));
    l->n = n;
    l->dim = dim;
    l->scale = scale;
    const int half = dim / 2;
    if (!fm_arena_measuring(a))
        for (int i = 0; i < half; i++)
            l->freqs[i] = exp(-log(10000.0) * i / half);
    return FM_OK;
}

int fm_time_embed_forward(const fm_time_embed *l, const float *t, float *y, fm_err *e)
{
    (void)e;
    const double t0 = FM_PROF_START(l->prof);
    const int half = l->dim / 2;
    for (int n = 0; n < l->n; n++) {
        const double ts = (double)t[n] * l->scale;
        float *yr = y + (long)n * l->dim;  // [D] = [cos | sin]
        for (int i = 0; i < half; i++) {
            const double arg = ts * l->freqs[i];
            yr[i] = (float)cos(arg);
            yr[half + i] = (float)sin(arg);
        }
    }
    FM_PROF_END(l->prof, FM_PROF_FWD, t0, 0);
    return FM_OK;
}

int fm_time_embed_backward(const fm_time_embed *l, const float *t, const float *dy, float *dt, fm_err *e)
{
    (void)e;
    const double t0 = FM_PROF_START(l->prof);
    const int half = l->dim / 2;
    for (int n = 0; n < l->n; n++) {
        const double ts = (double)t[n] * l->scale;
        const float *d = dy + (long)n * l->dim;
        double s = 0;
        for (int i = 0; i < half; i++) {
            const double k = l->scale * l->freqs[i], arg = ts * l->freqs[i];
            s += k * (-(double)d[i] * sin(arg) + (double)d[half + i] * cos(arg));
        }
        dt[n] = (float)s;
    }
    FM_PROF_END(l->prof, FM_PROF_BWD, t0, 0);
    return FM_OK;
}

int fm_class_embed_init(fm_class_embed *l, fm_params *p, const char *name, int n, int num_classes,
                        int dim, fm_err *e)
{
    memset(l, 0, sizeof *l);
    if (n <= 0 || num_classes <= 0 || dim <= 0)
        return fm_fail(e, FM_ERR_INTERNAL, "class embedding %s: bad shape: batch %d, %d classes, width %d",
                       name, n, num_classes, dim);
    const int64_t shape[2] = { num_classes + 1, dim };
    FM_TRY(fm_params_add(p, &l->weight, 2, shape, e, "%s.weight", name));
    fm_param_init_normal(p, l->weight, 1.0f);
    l->n = n;
    l->num_classes = num_classes;
    l->dim = dim;
    return FM_OK;
}

static int check_labels(const fm_class_embed *l, const int32_t *labels, fm_err *e)
{
    for (int n = 0; n < l->n; n++)
        if (labels[n] < 0 || labels[n] > l->num_classes)
            return fm_fail(e, FM_ERR_DATA, "%s: label %d of sample %d is outside [0, %d]", l->weight->name,
                           (int)labels[n], n, l->num_classes);
    return FM_OK;
}

int fm_class_embed_forward(const fm_class_embed *l, const int32_t *labels, float *y, fm_err *e)
{
    const double t0 = FM_PROF_START(l->prof);
    FM_TRY(check_labels(l, labels, e));
    const float *w = l->weight->w.data;  // [num_classes + 1, D]
    for (int n = 0; n < l->n; n++)
        memcpy(y + (long)n * l->dim, w + (long)labels[n] * l->dim, (size_t)l->dim * sizeof(float));
    FM_PROF_END(l->prof, FM_PROF_FWD, t0, 0);
    return FM_OK;
}

int fm_class_embed_backward(fm_class_embed *l, const int32_t *labels, const float *dy, fm_err *e)
{
    const double t0 = FM_PROF_START(l->prof);
    FM_TRY(check_labels(l, labels, e));
    float *g = l->weight->g.data;  // [num_classes + 1, D]
    const int d = l->dim;
    memset(g, 0, (size_t)(l->num_classes + 1) * (size_t)d * sizeof(float));
    for (int n = 0; n < l->n; n++) {
        float *gr = g + (long)labels[n] * d;
        const float *dr = dy + (long)n * d;
#pragma omp simd
        for (int i = 0; i < d; i++)
            gr[i] += dr[i];
    }
    FM_PROF_END(l->prof, FM_PROF_BWD, t0, 0);
    return FM_OK;
}
