/* conv32.c - fp32 3x3 convolutions on small maps by AVX-512 FMAs, real taps
 * only: conv16's tiles (conv16.h) with single channels instead of pairs
 * (see conv32.h). */
#include "fm/conv32.h"

#include <immintrin.h>
#include <omp.h>
#include <string.h>

#define FM_C32_TARGET __attribute__((target("avx512f")))

/* the tile loops unroll fully, so that the accumulators live in registers */
#define FM_C32_UNROLL _Pragma("GCC unroll 8")

#define SLOTS 8  /* output pixels per register tile */
#define VMAX 3   /* vectors of 16 output channels per register tile */
#define TASKS 8  /* tasks per thread at least, so that the last ones even out */

int fm_conv32_usable(const fm_conv32 *g)
{
    if (g->n < 1 || g->h < 1 || (g->w != 4 && g->w != 8) || g->h % (SLOTS / g->w) || g->cin < 16 || g->cin % 16 ||
        g->cout < 16 || g->cout % 16 || 9 * g->cin * g->cout > INT32_MAX)
        return 0;
    __builtin_cpu_init();
    return __builtin_cpu_supports("avx512f") != 0;
}

size_t fm_conv32_packed_len(const fm_conv32 *g) { return (size_t)(9 * g->cin * g->cout); }

/* A block of 16 output x 16 input channels (16 rows of 16 x 9 contiguous
 * floats) read from memory once and gathered from L1 for each tap: 16 input
 * channels x 9 taps of the forward layout [tap][c][o], 16 output channels x
 * 9 taps of the backward-data one [8 - tap][o][c]. */
FM_C32_TARGET static void pack_block(float *wq, float *wt, const float *w, int64_t cin, int64_t cout, int64_t o0,
                                     int64_t c0)
{
    const int s = (int)(cin * 9);
    const __m512i lane_o = _mm512_set_epi32(15 * s, 14 * s, 13 * s, 12 * s, 11 * s, 10 * s, 9 * s, 8 * s, 7 * s,
                                            6 * s, 5 * s, 4 * s, 3 * s, 2 * s, s, 0);
    const __m512i lane_c = _mm512_set_epi32(135, 126, 117, 108, 99, 90, 81, 72, 63, 54, 45, 36, 27, 18, 9, 0);
    for (int64_t k = 0; k < 16; k++)
        for (int64_t tap = 0; tap < 9; tap++) {
            if (wq) { /* input channel c0 + k, output channels o0 .. o0 + 15 */
                const __m512i idx = _mm512_add_epi32(lane_o, _mm512_set1_epi32((int)((o0 * cin + c0 + k) * 9 + tap)));
                _mm512_storeu_ps(wq + (tap * cin + c0 + k) * cout + o0, _mm512_i32gather_ps(idx, w, 4));
            }
            if (wt) { /* output channel o0 + k, input channels c0 .. c0 + 15 */
                const __m512i idx = _mm512_add_epi32(lane_c, _mm512_set1_epi32((int)(((o0 + k) * cin + c0) * 9 + tap)));
                _mm512_storeu_ps(wt + ((8 - tap) * cout + o0 + k) * cin + c0, _mm512_i32gather_ps(idx, w, 4));
            }
        }
}

void fm_conv32_pack(float *wq, float *wt, const float *w, const fm_conv32 *g)
{
    const int64_t cin = g->cin, cout = g->cout, ob = cout / 16, cb = cin / 16;
#pragma omp parallel for schedule(static) if (cin * cout >= 4096)
    for (int64_t t = 0; t < ob * cb; t++)
        pack_block(wq, wt, w, cin, cout, t / cb * 16, t % cb * 16);
}

/* One register tile: output pixels (i0 * W) .. (i0 * W + SLOTS) of image n
 * (R = SLOTS / W whole rows), output channels o0 .. o0 + 16 V, summed over
 * every input channel onto the bias (or zero). W and V are constants at
 * each call site (tile_dispatch). Each (tap, channel) loads its V weight
 * vectors once for all R rows; column j of a row takes tap kx from input
 * column j + kx - 1 when that exists, and a row takes tap ky when its input
 * row i + ky - 1 exists. */
FM_C32_TARGET static inline __attribute__((always_inline)) void
tile(const fm_conv32 *g, const float *x, const float *wq, const float *bias, float *y, int64_t n, int64_t i0,
     int64_t o0, const int W, const int V)
{
    const int R = SLOTS / W;
    const int64_t H = g->h, cin = g->cin, cout = g->cout;
    float *y0 = y + ((n * H + i0) * W) * cout + o0; /* slot s: pixel i0 * W + s */
    __m512 acc[SLOTS][VMAX];
    FM_C32_UNROLL
    for (int s = 0; s < SLOTS; s++)
        FM_C32_UNROLL
        for (int v = 0; v < V; v++)
            acc[s][v] = bias ? _mm512_loadu_ps(bias + o0 + 16 * v) : _mm512_setzero_ps();
    FM_C32_UNROLL
    for (int ky = 0; ky < 3; ky++) {
        const float *xr[SLOTS / 4];
        int ok[SLOTS / 4], any = 0;
        FM_C32_UNROLL
        for (int r = 0; r < R; r++) {
            const int64_t iy = i0 + r + ky - 1;
            ok[r] = iy >= 0 && iy < H;
            xr[r] = ok[r] ? x + (n * H + iy) * W * cin : x;
            any |= ok[r];
        }
        if (!any)
            continue;
        FM_C32_UNROLL
        for (int kx = 0; kx < 3; kx++) {
            const int jlo = kx == 0 ? 1 : 0, jhi = kx == 2 ? W - 1 : W;
            const float *wk = wq + (ky * 3 + kx) * cin * cout + o0;
            for (int64_t c = 0; c < cin; c++) {
                __m512 wv[VMAX];
                FM_C32_UNROLL
                for (int v = 0; v < V; v++)
                    wv[v] = _mm512_loadu_ps(wk + c * cout + 16 * v);
                FM_C32_UNROLL
                for (int r = 0; r < R; r++) {
                    if (!ok[r])
                        continue;
                    FM_C32_UNROLL
                    for (int j = jlo; j < jhi; j++) {
                        const __m512 b = _mm512_set1_ps(xr[r][(j + kx - 1) * cin + c]);
                        FM_C32_UNROLL
                        for (int v = 0; v < V; v++)
                            acc[r * W + j][v] = _mm512_fmadd_ps(b, wv[v], acc[r * W + j][v]);
                    }
                }
            }
        }
    }
    FM_C32_UNROLL
    for (int s = 0; s < SLOTS; s++)
        FM_C32_UNROLL
        for (int v = 0; v < V; v++)
            _mm512_storeu_ps(y0 + s * cout + 16 * v, acc[s][v]);
}

FM_C32_TARGET static void tile_dispatch(const fm_conv32 *g, const float *x, const float *wq, const float *bias, float *y,
                                        int64_t n, int64_t i0, int64_t o0, int v)
{
#define FM_C32_CASE(W, V)                                      \
    case (W) * 8 + (V):                                        \
        tile(g, x, wq, bias, y, n, i0, o0, (W), (V));          \
        break;
    switch (g->w * 8 + v) {
        FM_C32_CASE(4, 1) FM_C32_CASE(4, 2) FM_C32_CASE(4, 3)
        FM_C32_CASE(8, 1) FM_C32_CASE(8, 2) FM_C32_CASE(8, 3)
    default:
        break;
    }
#undef FM_C32_CASE
}

void fm_conv32_run(const fm_conv32 *g, const float *x, const float *wq, const float *bias, float *y)
{
    const int64_t rows = SLOTS / g->w, groups = g->h / rows; /* tiles per image and output-channel block */
    const int64_t nv = g->cout / 16, nob = (nv + VMAX - 1) / VMAX;
    const int64_t want = ((int64_t)omp_get_max_threads() * TASKS + nob - 1) / nob;
    const int64_t splits = want < g->n ? want : g->n;
    /* a task is a block of output channels for a range of images: its
     * weights (every tap and input channel, from L2) serve all its tiles */
#pragma omp parallel for schedule(dynamic, 1)
    for (int64_t t = 0; t < nob * splits; t++) {
        const int64_t b = t % nob, sp = t / nob;
        const int64_t v0 = b * nv / nob, v1 = (b + 1) * nv / nob;
        const int64_t n0 = sp * g->n / splits, n1 = (sp + 1) * g->n / splits;
        for (int64_t n = n0; n < n1; n++)
            for (int64_t gi = 0; gi < groups; gi++)
                tile_dispatch(g, x, wq, bias, y, n, gi * rows, v0 * 16, (int)(v1 - v0));
    }
}
