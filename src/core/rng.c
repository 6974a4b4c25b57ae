/* rng.c - Philox-4x32-10 and the draws built on it. */
#include "fm/rng.h"

#include <math.h>

#define PHILOX_M0 0xD2511F53u
#define PHILOX_M1 0xCD9E8D57u
#define PHILOX_W0 0x9E3779B9u
#define PHILOX_W1 0xBB67AE85u

static inline void mulhilo(uint32_t a, uint32_t b, uint32_t *hi, uint32_t *lo)
{
    uint64_t p = (uint64_t)a * b;
    *hi = (uint32_t)(p >> 32);
    *lo = (uint32_t)p;
}

void fm_philox4x32(uint64_t seed, uint64_t stream, uint64_t index, uint32_t out[4])
{
    uint32_t c0 = (uint32_t)index, c1 = (uint32_t)(index >> 32);
    uint32_t c2 = (uint32_t)stream, c3 = (uint32_t)(stream >> 32);
    uint32_t k0 = (uint32_t)seed, k1 = (uint32_t)(seed >> 32);
    for (int r = 0; r < 10; r++) {
        uint32_t hi0, lo0, hi1, lo1;
        mulhilo(PHILOX_M0, c0, &hi0, &lo0);
        mulhilo(PHILOX_M1, c2, &hi1, &lo1);
        uint32_t n0 = hi1 ^ c1 ^ k0, n1 = lo1, n2 = hi0 ^ c3 ^ k1, n3 = lo0;
        c0 = n0; c1 = n1; c2 = n2; c3 = n3;
        k0 += PHILOX_W0;
        k1 += PHILOX_W1;
    }
    out[0] = c0; out[1] = c1; out[2] = c2; out[3] = c3;
}

static inline float u24(uint32_t x) { return (float)(x >> 8) * (1.0f / 16777216.0f); }

float fm_rand_uniform(uint64_t seed, uint64_t stream, uint64_t index)
{
    uint32_t r[4];
    fm_philox4x32(seed, stream, index, r);
    return u24(r[0]);
}

float fm_rand_normal(uint64_t seed, uint64_t stream, uint64_t index)
{
    uint32_t r[4];
    fm_philox4x32(seed, stream, index, r);
    /* u1 in (0, 1]: never log(0). 53-bit doubles for the tails. */
    double u1 = ((double)(((uint64_t)r[0] << 21) ^ r[1]) + 1.0) * (1.0 / 9007199254740992.0);
    double u2 = (double)r[2] * (1.0 / 4294967296.0);
    if (u1 > 1.0)
        u1 = 1.0;
    return (float)(sqrt(-2.0 * log(u1)) * cos(6.283185307179586 * u2));
}

void fm_fill_normal(float *x, long n, uint64_t seed, uint64_t stream, uint64_t first)
{
#pragma omp parallel for if (n > 4096) schedule(static)
    for (long i = 0; i < n; i++)
        x[i] = fm_rand_normal(seed, stream, first + (uint64_t)i);
}

void fm_fill_uniform(float *x, long n, uint64_t seed, uint64_t stream, uint64_t first)
{
#pragma omp parallel for if (n > 4096) schedule(static)
    for (long i = 0; i < n; i++)
        x[i] = fm_rand_uniform(seed, stream, first + (uint64_t)i);
}

uint32_t fm_rand_below(uint32_t n, uint64_t seed, uint64_t stream, uint64_t index)
{
    uint32_t r[4];
    fm_philox4x32(seed, stream, index, r);
    uint64_t x = ((uint64_t)r[0] << 32) | r[1];
    return (uint32_t)(x % n); /* bias < n / 2^64: negligible */
}

void fm_permutation(uint32_t *perm, uint32_t n, uint64_t seed, uint64_t stream)
{
    for (uint32_t i = 0; i < n; i++)
        perm[i] = i;
    for (uint32_t i = n; i > 1; i--) {
        uint32_t j = fm_rand_below(i, seed, stream, i);
        uint32_t t = perm[i - 1];
        perm[i - 1] = perm[j];
        perm[j] = t;
    }
}
