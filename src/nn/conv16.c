/* conv16.c - bf16 3x3 convolutions on small maps by AVX512-BF16 dot
 * products over channel pairs, real taps only (see conv16.h). */
#include "fm/conv16.h"

#include <immintrin.h>
#include <omp.h>
#include <string.h>

#include "fm/tensor.h"

#define FM_C16_TARGET __attribute__((target("avx512f,avx512bw,avx512bf16")))

/* the tile loops unroll fully, so that the accumulators live in registers */
#define FM_C16_UNROLL _Pragma("GCC unroll 8")

#define SLOTS 8            /* output pixels per register tile */
#define VMAX 3             /* vectors of 16 output channels per register tile */
#define TASKS 8            /* tasks per thread at least, so that the last ones even out */

int fm_conv16_usable(const fm_conv16 *g)
{
    if (g->n < 1 || g->h < 1 || (g->w != 4 && g->w != 8) || g->h % (SLOTS / g->w) || g->cin < 8 || g->cin % 8 ||
        g->cout < 16 || g->cout % 16 || 9 * g->cin * g->cout > INT32_MAX)
        return 0;
    __builtin_cpu_init();
    return __builtin_cpu_supports("avx512bf16") && __builtin_cpu_supports("avx512bw");
}

size_t fm_conv16_packed_len(const fm_conv16 *g) { return (size_t)(9 * g->cin * g->cout); }

/* The packings gather 8 channels x the 2 channels of a pair per 16-lane
 * gather and round them with VCVTNEPS2BF16, as oneDNN's reorders into its
 * bf16 weight layouts do on this CPU. A block of 8 output x 8 input channels
 * (8 rows of 8 x 9 contiguous floats) is read from memory once and gathered
 * from L1 for each tap: 4 pairs x 9 taps of the forward packing, 4 pairs x
 * 9 taps of the backward-data one. */
FM_C16_TARGET static void pack_block(uint16_t *wp, uint16_t *wt, const float *w, int64_t cin, int64_t cout, int64_t o0,
                                     int64_t c0)
{
    const int64_t cp_n = cin / 2, op_n = cout / 2;
    /* forward, lane l: output channel o0 + l / 2, input channel 2p + l % 2 */
    const __m512i lane_w = _mm512_set_epi32(7 * cin * 9 + 9, 7 * cin * 9, 6 * cin * 9 + 9, 6 * cin * 9,
                                            5 * cin * 9 + 9, 5 * cin * 9, 4 * cin * 9 + 9, 4 * cin * 9,
                                            3 * cin * 9 + 9, 3 * cin * 9, 2 * cin * 9 + 9, 2 * cin * 9,
                                            cin * 9 + 9, cin * 9, 9, 0);
    /* backward-data, lane l: input channel c0 + l / 2, output channel 2q + l % 2 */
    const __m512i lane_t = _mm512_set_epi32(7 * 9 + cin * 9, 7 * 9, 6 * 9 + cin * 9, 6 * 9, 5 * 9 + cin * 9, 5 * 9,
                                            4 * 9 + cin * 9, 4 * 9, 3 * 9 + cin * 9, 3 * 9, 2 * 9 + cin * 9, 2 * 9,
                                            9 + cin * 9, 9, cin * 9, 0);
    for (int64_t k = 0; k < 4; k++)
        for (int64_t tap = 0; tap < 9; tap++) {
            if (wp) {
                const int64_t p = c0 / 2 + k;
                const __m512i idx = _mm512_add_epi32(lane_w, _mm512_set1_epi32((int)((o0 * cin + 2 * p) * 9 + tap)));
                const __m256bh v = _mm512_cvtneps_pbh(_mm512_i32gather_ps(idx, w, 4));
                memcpy(wp + ((tap * cp_n + p) * cout + o0) * 2, &v, 32);
            }
            if (wt) {
                const int64_t q = o0 / 2 + k;
                const __m512i idx = _mm512_add_epi32(lane_t, _mm512_set1_epi32((int)((2 * q * cin + c0) * 9 + tap)));
                const __m256bh v = _mm512_cvtneps_pbh(_mm512_i32gather_ps(idx, w, 4));
                memcpy(wt + (((8 - tap) * op_n + q) * cin + c0) * 2, &v, 32);
            }
        }
}

void fm_conv16_pack(uint16_t *wp, uint16_t *wt, const float *w, const fm_conv16 *g)
{
    const int64_t cin = g->cin, cout = g->cout, ob = cout / 8, cb = cin / 8;
#pragma omp parallel for schedule(static) if (cin * cout >= 4096)
    for (int64_t t = 0; t < ob * cb; t++)
        pack_block(wp, wt, w, cin, cout, t / cb * 8, t % cb * 8);
}

/* One register tile: output pixels (i0 * W) .. (i0 * W + SLOTS) of image n
 * (R = SLOTS / W whole rows), output channels o0 .. o0 + 16 V, summed over
 * every input channel onto the bias (or zero). W and V are constants at
 * each call site (tile_dispatch). Each (tap, pair) loads its V weight vectors once for all R rows; column j
 * of a row takes tap kx from input column j + kx - 1 when that exists, and
 * a row takes tap ky when its input row i + ky - 1 exists. */
FM_C16_TARGET static inline __attribute__((always_inline)) void
tile(const fm_conv16 *g, const uint16_t *x, const uint16_t *wp, const float *bias, float *y, int64_t n, int64_t i0,
     int64_t o0, const int W, const int V)
{
    const int R = SLOTS / W;
    const int64_t H = g->h, cin = g->cin, cout = g->cout, cp_n = cin / 2, wcp = cout * 2;
    float *y0 = y + ((n * H + i0) * W) * cout + o0; /* slot s: pixel i0 * W + s */
    __m512 acc[SLOTS][VMAX];
    FM_C16_UNROLL
    for (int s = 0; s < SLOTS; s++)
        FM_C16_UNROLL
        for (int v = 0; v < V; v++)
            acc[s][v] = bias ? _mm512_loadu_ps(bias + o0 + 16 * v) : _mm512_setzero_ps();
    FM_C16_UNROLL
    for (int ky = 0; ky < 3; ky++) {
        const uint16_t *xr[SLOTS / 4];
        int ok[SLOTS / 4], any = 0;
        FM_C16_UNROLL
        for (int r = 0; r < R; r++) {
            const int64_t iy = i0 + r + ky - 1;
            ok[r] = iy >= 0 && iy < H;
            xr[r] = ok[r] ? x + (n * H + iy) * W * cin : x;
            any |= ok[r];
        }
        if (!any)
            continue;
        FM_C16_UNROLL
        for (int kx = 0; kx < 3; kx++) {
            const int jlo = kx == 0 ? 1 : 0, jhi = kx == 2 ? W - 1 : W;
            const uint16_t *wk = wp + (ky * 3 + kx) * cp_n * wcp + 2 * o0;
            for (int64_t cp = 0; cp < cp_n; cp++) {
                __m512bh wv[VMAX];
                FM_C16_UNROLL
                for (int v = 0; v < V; v++)
                    wv[v] = (__m512bh)_mm512_loadu_si512((const void *)(wk + cp * wcp + 32 * v));
                FM_C16_UNROLL
                for (int r = 0; r < R; r++) {
                    if (!ok[r])
                        continue;
                    FM_C16_UNROLL
                    for (int j = jlo; j < jhi; j++) {
                        int32_t pair;
                        memcpy(&pair, xr[r] + (j + kx - 1) * cin + 2 * cp, 4);
                        const __m512bh b = (__m512bh)_mm512_set1_epi32(pair);
                        FM_C16_UNROLL
                        for (int v = 0; v < V; v++)
                            acc[r * W + j][v] = _mm512_dpbf16_ps(acc[r * W + j][v], b, wv[v]);
                    }
                }
            }
        }
    }
    FM_C16_UNROLL
    for (int s = 0; s < SLOTS; s++)
        FM_C16_UNROLL
        for (int v = 0; v < V; v++)
            _mm512_storeu_ps(y0 + s * cout + 16 * v, acc[s][v]);
}

FM_C16_TARGET static void tile_dispatch(const fm_conv16 *g, const uint16_t *x, const uint16_t *wp, const float *bias,
                                        float *y, int64_t n, int64_t i0, int64_t o0, int v)
{
#define FM_C16_CASE(W, V)                                              \
    case (W) * 8 + (V):                                                \
        tile(g, x, wp, bias, y, n, i0, o0, (W), (V));                  \
        break;
    switch (g->w * 8 + v) {
        FM_C16_CASE(4, 1) FM_C16_CASE(4, 2) FM_C16_CASE(4, 3)
        FM_C16_CASE(8, 1) FM_C16_CASE(8, 2) FM_C16_CASE(8, 3)
    default:
        break;
    }
#undef FM_C16_CASE
}

void fm_conv16_run(const fm_conv16 *g, const uint16_t *x, const uint16_t *wp, const float *bias, float *y)
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
                tile_dispatch(g, x, wp, bias, y, n, gi * rows, v0 * 16, (int)(v1 - v0));
    }
}
