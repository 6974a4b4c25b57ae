/* loss.c - mean squared error forward and backward (see loss.h). */
#include "fm/loss.h"

/* The sum is split into at most MAX_BLOCKS blocks of at least MIN_BLOCK
 * elements; the block partition depends only on n, never on the threads. */
#define MAX_BLOCKS 256
#define MIN_BLOCK 4096

double fm_mse_forward(const float *pred, const float *target, long n)
{
    if (n <= 0)
        return 0.0;
    long bs = (n + MAX_BLOCKS - 1) / MAX_BLOCKS;
    if (bs < MIN_BLOCK)
        bs = MIN_BLOCK;
    const int nb = (int)((n + bs - 1) / bs);
    double part[MAX_BLOCKS];
#pragma omp parallel for schedule(static) if (nb > 1)
    for (int b = 0; b < nb; b++) {
        long lo = (long)b * bs, hi = lo + bs < n ? lo + bs : n;
        double s = 0;
#pragma omp simd reduction(+ : s)
        for (long i = lo; i < hi; i++) {
            double d = (double)pred[i] - (double)target[i];
            s += d * d;
        }
        part[b] = s;
    }
    double s = 0;
    for (int b = 0; b < nb; b++)
        s += part[b];
    return s / (double)n;
}

void fm_mse_backward(const float *pred, const float *target, long n, float scale, float *dpred)
{
    const float k = (float)(2.0 * (double)scale / (double)n);
#pragma omp parallel for simd schedule(static) if (n >= 32768)
    for (long i = 0; i < n; i++)
        dpred[i] = k * (pred[i] - target[i]);
}
