/* gelu.c - GELU (tanh approximation) forward and backward (see gelu.h). */
#include "fm/gelu.h"

#include "fm/tensor.h"

/* Below this many elements a parallel region costs more than it saves. */
#define PAR_MIN 32768

void fm_gelu_forward(const float *x, float *y, long n)
{
#pragma omp parallel for simd if (n >= PAR_MIN) schedule(static)
    for (long i = 0; i < n; i++)
        y[i] = fm_geluf(x[i]);
}

void fm_gelu_forward_bf16(const float *x, uint16_t *y, long n)
{
#pragma omp parallel for simd if (n >= PAR_MIN) schedule(static)
    for (long i = 0; i < n; i++)
        y[i] = fm_bf16_round(fm_geluf(x[i]));
}

void fm_gelu_backward(const float *x, const float *dy, float *dx, long n)
{
#pragma omp parallel for simd if (n >= PAR_MIN) schedule(static)
    for (long i = 0; i < n; i++)
        dx[i] = dy[i] * fm_gelu_gradf(x[i]);
}
