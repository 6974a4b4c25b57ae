/* clip.c - global L2 gradient norm and clipping. */
#include "fm/clip.h"

#include <math.h>

/* Fixed number of chunks: partial sums are added in chunk order, so the norm
 * does not depend on the number of threads. */
enum { NCHUNK = 64 };

double fm_grad_norm(const float *g, size_t n)
{
    double part[NCHUNK];
    const size_t chunk = (n + NCHUNK - 1) / NCHUNK;
#pragma omp parallel for schedule(static)
    for (int c = 0; c < NCHUNK; c++) {
        size_t lo = (size_t)c * chunk < n ? (size_t)c * chunk : n;
        size_t hi = lo + chunk < n ? lo + chunk : n;
        double s = 0;
#pragma omp simd reduction(+ : s)
        for (size_t i = lo; i < hi; i++)
            s += (double)g[i] * (double)g[i];
        part[c] = s;
    }
    double s = 0;
    for (int c = 0; c < NCHUNK; c++)
        s += part[c];
    return sqrt(s);
}

double fm_clip_grad_norm(float *g, size_t n, double max_norm)
{
    double norm = fm_grad_norm(g, n);
    if (!isfinite(norm) || !(max_norm > 0))
        return norm;
    double coef = max_norm / (norm + 1e-6);
    if (coef < 1.0) {
        const float c = (float)coef;
        const long len = (long)n;
#pragma omp parallel for simd schedule(static)
        for (long i = 0; i < len; i++)
            g[i] *= c;
    }
    return norm;
}

double fm_grad_sumsq_spans(const float *g, const fm_span *spans, int nspans)
{
    double s = 0;
    for (int i = 0; i < nspans; i++) {
        const float *x = g + spans[i].off;
        const size_t n = spans[i].count;
        double t = 0;
#pragma omp simd reduction(+ : t)
        for (size_t j = 0; j < n; j++)
            t += (double)x[j] * (double)x[j];
        s += t;
    }
    return s;
}

void fm_clip_scale_spans(float *g, const fm_span *spans, int nspans, double norm, double max_norm)
{
    if (!isfinite(norm) || !(max_norm > 0))
        return;
    double coef = max_norm / (norm + 1e-6);
    if (coef >= 1.0)
        return;
    const float c = (float)coef;
    for (int i = 0; i < nspans; i++) {
        float *x = g + spans[i].off;
        const size_t n = spans[i].count;
#pragma omp parallel for simd schedule(static)
        for (size_t j = 0; j < n; j++)
            x[j] *= c;
    }
}
