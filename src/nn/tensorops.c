/* tensorops.c - concat, add, accumulate, scale, broadcast add (see tensorops.h). */
#include "fm/tensorops.h"

#include <string.h>

/* Below this many elements a parallel region costs more than it saves. */
#define PAR_MIN 32768

void fm_concat_forward(const float *a, int ca, const float *b, int cb, float *y, long rows)
{
    const long cy = (long)ca + cb;
#pragma omp parallel for schedule(static) if (rows * cy >= PAR_MIN)
    for (long r = 0; r < rows; r++) {
        memcpy(y + r * cy, a + r * ca, (size_t)ca * sizeof(float));
        memcpy(y + r * cy + ca, b + r * cb, (size_t)cb * sizeof(float));
    }
}

void fm_concat_backward(const float *dy, int ca, int cb, float *da, float *db, long rows)
{
    const long cy = (long)ca + cb;
#pragma omp parallel for schedule(static) if (rows * cy >= PAR_MIN)
    for (long r = 0; r < rows; r++) {
        if (da)
            memcpy(da + r * ca, dy + r * cy, (size_t)ca * sizeof(float));
        if (db)
            memcpy(db + r * cb, dy + r * cy + ca, (size_t)cb * sizeof(float));
    }
}

void fm_add(const float *a, const float *b, float *y, long n)
{
#pragma omp parallel for simd schedule(static) if (n >= PAR_MIN)
    for (long i = 0; i < n; i++)
        y[i] = a[i] + b[i];
}

void fm_add_backward(const float *dy, float *da, float *db, long n)
{
    if (da && da != dy)
        memcpy(da, dy, (size_t)n * sizeof(float));
    if (db && db != dy)
        memcpy(db, dy, (size_t)n * sizeof(float));
}

void fm_acc(float *y, const float *x, long n)
{
#pragma omp parallel for simd schedule(static) if (n >= PAR_MIN)
    for (long i = 0; i < n; i++)
        y[i] += x[i];
}

void fm_axpy(float *y, float alpha, const float *x, long n)
{
#pragma omp parallel for simd schedule(static) if (n >= PAR_MIN)
    for (long i = 0; i < n; i++)
        y[i] += alpha * x[i];
}

void fm_scale(float *y, float s, long n)
{
#pragma omp parallel for simd schedule(static) if (n >= PAR_MIN)
    for (long i = 0; i < n; i++)
        y[i] *= s;
}

void fm_add_nc(float *y, const float *v, int n, long hw, int c)
{
    const long rows = (long)n * hw;
#pragma omp parallel for schedule(static) if (rows * c >= PAR_MIN)
    for (long r = 0; r < rows; r++) {
        float *yr = y + r * c;                 // [C]
        const float *vr = v + (r / hw) * c;    // [C]
#pragma omp simd
        for (int k = 0; k < c; k++)
            yr[k] += vr[k];
    }
}

void fm_add_nc_backward(const float *dy, float *dv, int n, long hw, int c)
{
    /* one sample per iteration: the sum over its pixels runs in a fixed order */
#pragma omp parallel for schedule(static) if ((long)n * hw * c >= PAR_MIN)
    for (int i = 0; i < n; i++) {
        float *o = dv + (long)i * c;
        for (int k0 = 0; k0 < c; k0 += 64) {
            int kn = c - k0 < 64 ? c - k0 : 64;
            double acc[64] = { 0 };
            for (long p = 0; p < hw; p++) {
                const float *d = dy + ((long)i * hw + p) * c + k0;
#pragma omp simd
                for (int k = 0; k < kn; k++)
                    acc[k] += d[k];
            }
            for (int k = 0; k < kn; k++)
                o[k0 + k] = (float)acc[k];
        }
    }
}
