/* gelu.h - GELU with the tanh approximation (torch.nn.GELU(approximate="tanh")),
 * forward and backward.
 *
 *   gelu(x) = 0.5 x (1 + tanh(u)),  u = sqrt(2/pi) (x + 0.044715 x^3)
 *           = x * sigmoid(2u)        (the same function: 0.5 (1 + tanh(u)) = sigmoid(2u))
 *   gelu'(x) = s + x s (1 - s) 2u',  s = sigmoid(2u),  u' = sqrt(2/pi) (1 + 3 * 0.044715 x^2)
 * The sigmoid form needs one exp (fm_expf_simd, no libm call, so the loops
 * vectorise) and keeps full relative accuracy for large negative x, where
 * 1 + tanh(u) would cancel. Elementwise over a flat array, no parameters and no
 * saved state, hence plain functions (as act.h). */
#ifndef FM_GELU_H
#define FM_GELU_H

#include <stdint.h>

#include "fm/act.h"

#define FM_GELU_K0 0.7978845608028654f /* sqrt(2 / pi) */
#define FM_GELU_K1 0.044715f

/* gelu(x), tanh approximation. */
static inline float fm_geluf(float x)
{
    const float u = FM_GELU_K0 * (x + FM_GELU_K1 * x * x * x);
    return x * fm_sigmoidf(2.0f * u);
}

/* d gelu / dx, tanh approximation. */
static inline float fm_gelu_gradf(float x)
{
    const float x2 = x * x;
    const float u = FM_GELU_K0 * (x + FM_GELU_K1 * x2 * x);
    const float du = FM_GELU_K0 * (1.0f + 3.0f * FM_GELU_K1 * x2);
    /* s (1 - s) = e s^2 with e = exp(-2u): no cancellation in 1 - s as s -> 1 */
    const float ex = fm_expf_simd(-2.0f * u);
    const float s = 1.0f / (1.0f + ex);
    return s + x * (ex * s * s) * 2.0f * du;
}

/* y[i] = gelu(x[i]) for i < n. y may equal x (in place). */
void fm_gelu_forward(const float *x, float *y, long n);

/* y[i] = the bf16 rounding (fm_bf16_round) of gelu(x[i]) for i < n. */
void fm_gelu_forward_bf16(const float *x, uint16_t *y, long n);

/* dx[i] = dy[i] * gelu'(x[i]) for i < n, from the forward INPUT x.
 * Overwrites dx; dx may equal dy or x. */
void fm_gelu_backward(const float *x, const float *dy, float *dx, long n);

#endif
