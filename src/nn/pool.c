/* pool.c - global average pooling forward and backward (see pool.h). */
#include "fm/pool.h"

/* Below this many elements a parallel region costs more than it saves. */
#define PAR_MIN 32768

void fm_global_avgpool_forward(const float *x, float *y, int n, long hw, int c)
{
    const double inv = 1.0 / (double)hw;
    /* one task per (sample, channel); pixels summed in order */
#pragma omp parallel for collapse(2) schedule(static) if ((long)n * hw * c >= PAR_MIN)
    for (int i = 0; i < n; i++)
        for (int k = 0; k < c; k++) {
            const float *xp = x + (long)i * hw * c + k;  // x[i, :, k], stride c
            double s = 0;
            for (long p = 0; p < hw; p++)
                s += xp[p * c];
            y[(long)i * c + k] = (float)(s * inv);
        }
}

void fm_global_avgpool_backward(const float *dy, float *dx, int n, long hw, int c)
{
    const float inv = (float)(1.0 / (double)hw);
#pragma omp parallel for collapse(2) schedule(static) if ((long)n * hw * c >= PAR_MIN)
    for (int i = 0; i < n; i++)
        for (long p = 0; p < hw; p++) {
            const float *g = dy + (long)i * c;         // [c]
            float *o = dx + ((long)i * hw + p) * c;    // [c]
#pragma omp simd
            for (int k = 0; k < c; k++)
                o[k] = g[k] * inv;
        }
}
