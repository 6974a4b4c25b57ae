/* modulate.c - adaLN modulation and gated residual over tokens (see modulate.h). */
#include "fm/modulate.h"

/* Below this many elements a parallel region costs more than it saves. */
#define PAR_MIN 32768
/* Column block of the backward sums: one task is (sample, block of BLK channels). */
#define BLK 64

void fm_modulate_forward(const float *x, const float *shift, const float *scale, long ld, float *y, int b, long t,
                         int c)
{
    const long rows = (long)b * t;
#pragma omp parallel for schedule(static) if (rows * c >= PAR_MIN)
    for (long r = 0; r < rows; r++) {
        const long s = r / t;
        const float *xr = x + r * c, *sh = shift + s * ld, *sc = scale + s * ld;  // [C] each
        float *yr = y + r * c;
#pragma omp simd
        for (int k = 0; k < c; k++)
            yr[k] = xr[k] * (1.0f + sc[k]) + sh[k];
    }
}

void fm_modulate_backward(const float *x, const float *scale, const float *dy, long ld, float *dx, float *dshift,
                          float *dscale, int b, long t, int c)
{
    const int nblk = (c + BLK - 1) / BLK;
#pragma omp parallel for collapse(2) schedule(static) if ((long)b * t * c >= PAR_MIN)
    for (int s = 0; s < b; s++)
        for (int kb = 0; kb < nblk; kb++) {
            const int k0 = kb * BLK, nk = c - k0 < BLK ? c - k0 : BLK;
            const float *sc = scale + s * ld + k0;
            double a_sh[BLK] = { 0 }, a_sc[BLK] = { 0 };
            for (long i = 0; i < t; i++) {
                const long off = ((long)s * t + i) * c + k0;
                const float *g = dy + off, *xr = x + off;
                if (dx) {
                    float *o = dx + off;
#pragma omp simd
                    for (int k = 0; k < nk; k++) {
                        const float gk = g[k], xk = xr[k];
                        a_sh[k] += gk;
                        a_sc[k] += (double)(gk * xk);
                        o[k] = gk * (1.0f + sc[k]);
                    }
                } else {
#pragma omp simd
                    for (int k = 0; k < nk; k++) {
                        a_sh[k] += g[k];
                        a_sc[k] += (double)(g[k] * xr[k]);
                    }
                }
            }
            for (int k = 0; k < nk; k++) {
                dshift[s * ld + k0 + k] = (float)a_sh[k];
                dscale[s * ld + k0 + k] = (float)a_sc[k];
            }
        }
}

void fm_gate_residual_forward(const float *x, const float *gate, long ld, const float *h, float *y, int b, long t,
                              int c)
{
    const long rows = (long)b * t;
#pragma omp parallel for schedule(static) if (rows * c >= PAR_MIN)
    for (long r = 0; r < rows; r++) {
        const float *xr = x + r * c, *hr = h + r * c, *gt = gate + (r / t) * ld;  // [C] each
        float *yr = y + r * c;
#pragma omp simd
        for (int k = 0; k < c; k++)
            yr[k] = xr[k] + gt[k] * hr[k];
    }
}

void fm_gate_residual_backward(const float *h, const float *gate, long ld, const float *dy, float *dh, float *dgate,
                               int b, long t, int c)
{
    const int nblk = (c + BLK - 1) / BLK;
#pragma omp parallel for collapse(2) schedule(static) if ((long)b * t * c >= PAR_MIN)
    for (int s = 0; s < b; s++)
        for (int kb = 0; kb < nblk; kb++) {
            const int k0 = kb * BLK, nk = c - k0 < BLK ? c - k0 : BLK;
            const float *gt = gate + s * ld + k0;
            double acc[BLK] = { 0 };
            for (long i = 0; i < t; i++) {
                const long off = ((long)s * t + i) * c + k0;
                const float *g = dy + off, *hr = h + off;
                if (dh) {
                    float *o = dh + off;
#pragma omp simd
                    for (int k = 0; k < nk; k++) {
                        const float gk = g[k], hk = hr[k];
                        acc[k] += (double)(gk * hk);
                        o[k] = gk * gt[k];
                    }
                } else {
#pragma omp simd
                    for (int k = 0; k < nk; k++)
                        acc[k] += (double)(g[k] * hr[k]);
                }
            }
            for (int k = 0; k < nk; k++)
                dgate[s * ld + k0 + k] = (float)acc[k];
        }
}
