/* act.h - SiLU, y = x * sigmoid(x), forward and backward.
 *
 * Elementwise over a flat array, so one call covers any activation shape
 * ([N, H, W, C] or [B, T, C]); no parameters and no saved state, hence plain
 * functions instead of a layer struct. The scalar helpers below are shared
 * with the fused GroupNorm+SiLU path so both compute bit-identical values. */
#ifndef FM_ACT_H
#define FM_ACT_H

#include <math.h>
#include <stdint.h>
#include <string.h>

/* exp(x) within ~2 ulp for x in [-87, 88] (inputs outside are clamped to that
 * range). No libm call, so loops that use it vectorise under `omp simd`.
 * Range reduction x = k ln2 + r, |r| <= ln2/2, then a degree-7 Taylor
 * polynomial (truncation < 6e-9 relative) scaled by 2^k via the exponent bits,
 * in explicit fused multiply-adds (-std=c11 does not contract a * b + c, and
 * with -march=native fmaf is one instruction that vectorises). */
static inline float fm_expf_simd(float x)
{
    x = x < -87.0f ? -87.0f : x;
    x = x > 88.0f ? 88.0f : x;
    const float shifter = 12582912.0f; /* 1.5 * 2^23: adding it rounds to an integer */
    float k = fmaf(x, 1.44269504088896341f, shifter) - shifter;
    float r = fmaf(k, -0.693145751953125f, x); /* ln2 high part (exact in k * hi) */
    r = fmaf(k, -1.428606765330187e-06f, r);   /* ln2 low part */
    float p = 1.0f / 5040.0f;
    p = fmaf(p, r, 1.0f / 720.0f);
    p = fmaf(p, r, 1.0f / 120.0f);
    p = fmaf(p, r, 1.0f / 24.0f);
    p = fmaf(p, r, 1.0f / 6.0f);
    p = fmaf(p, r, 0.5f);
    p = fmaf(p, r, 1.0f);
    p = fmaf(p, r, 1.0f);
    int32_t bits = ((int32_t)k + 127) << 23; /* 2^k, k in [-126, 127] */
    float two_k;
    memcpy(&two_k, &bits, sizeof two_k);
    return p * two_k;
}

/* sigmoid(x) = 1 / (1 + exp(-x)). */
static inline float fm_sigmoidf(float x) { return 1.0f / (1.0f + fm_expf_simd(-x)); }

/* silu(x) = x * sigmoid(x). */
static inline float fm_siluf(float x) { return x * fm_sigmoidf(x); }

/* d silu / dx = s * (1 + x * (1 - s)), s = sigmoid(x). */
static inline float fm_silu_gradf(float x)
{
    float s = fm_sigmoidf(x);
    return s * (1.0f + x * (1.0f - s));
}

/* y[i] = silu(x[i]) for i < n. y may equal x (in place). */
void fm_silu_forward(const float *x, float *y, long n);

/* dx[i] = dy[i] * silu'(x[i]) for i < n, from the forward INPUT x.
 * Overwrites dx; dx may equal dy. */
void fm_silu_backward(const float *x, const float *dy, float *dx, long n);

#endif
