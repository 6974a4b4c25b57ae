/* wgrad16.c - bf16 convolution weight gradients by AVX512-BF16 dot products
 * over image pairs (see wgrad16.h). */
#include "fm/wgrad16.h"

#include <immintrin.h>
#include <omp.h>
#include <string.h>

#include "fm/tensor.h"

#define FM_W16_TARGET __attribute__((target("avx512f,avx512bw,avx512bf16")))

/* the tile loops unroll fully, so that the accumulators live in registers */
#define FM_W16_UNROLL _Pragma("GCC unroll 8")

#define OB 6  /* output channels per register tile */
#define CV 4  /* input-channel vectors (16 channels each) per register tile */
#define GROUP 16 /* output-channel tiles per task, whose sums the task keeps */
#define CHUNK_BYTES 24576 /* the x block of one chunk of image pairs */

int fm_wgrad16_usable(const fm_wgrad16 *g)
{
    if (g->n < 1 || g->h < 1 || g->w < 1 || g->ho < 1 || g->wo < 1 || g->cout < 1 || g->kh < 1 || g->kw < 1 ||
        g->stride < 1 || g->cin < 16 || g->cin % 16)
        return 0;
    __builtin_cpu_init();
    return __builtin_cpu_supports("avx512bf16") && __builtin_cpu_supports("avx512bw");
}

size_t fm_wgrad16_packed_len(int64_t n, int64_t hw, int64_t c) { return (size_t)((n + 1) / 2 * hw * c * 2); }

int fm_wgrad16_bufs_init(fm_wgrad16_bufs *b, fm_arena *a, const fm_wgrad16 *g, int ndy, int bias, fm_err *e)
{
    void *xp, *dyp, *part = NULL;
    const int threads = omp_get_max_threads();
    const size_t dy_len = fm_wgrad16_packed_len(g->n, g->ho * g->wo, g->cout);
    const char *what = "pair-packed operand buffers";
    FM_TRY(fm_arena_take(a, fm_wgrad16_packed_len(g->n, g->h * g->w, g->cin), 2, &xp, what, e));
    FM_TRY(fm_arena_take(a, (size_t)ndy * dy_len, 2, &dyp, what, e));
    if (bias)
        FM_TRY(fm_arena_take(a, (size_t)threads * (size_t)g->cout, sizeof(float), &part, what, e));
    *b = (fm_wgrad16_bufs){ .xp = xp, .dyp = dyp, .dy_len = dy_len, .part = part, .threads = threads };
    return FM_OK;
}

/* The pair-packed map is [m][p][c] of uint32: image 2m in the low half,
 * image 2m+1 in the high half. The loops are written with intrinsics: GCC
 * 12 at -O2 leaves their widening scalar forms unvectorised. */

/* fm_bf16_round of 16 floats, in the low half of each 32-bit lane. */
FM_W16_TARGET static inline __m512i round16(__m512 x)
{
    const __m512i u = _mm512_castps_si512(x);
    const __m512i lsb = _mm512_and_si512(_mm512_srli_epi32(u, 16), _mm512_set1_epi32(1));
    const __m512i rounded = _mm512_srli_epi32(_mm512_add_epi32(u, _mm512_add_epi32(lsb, _mm512_set1_epi32(0x7fff))), 16);
    const __m512i quiet = _mm512_or_si512(_mm512_srli_epi32(u, 16), _mm512_set1_epi32(0x40));
    const __mmask16 nan = _mm512_cmpgt_epu32_mask(_mm512_and_si512(u, _mm512_set1_epi32(0x7fffffff)),
                                                  _mm512_set1_epi32(0x7f800000));
    return _mm512_mask_mov_epi32(rounded, nan, quiet);
}

/* One pixel: d[k] = a[k] | b[k] << 16 (b NULL: zero) for k < c. */
FM_W16_TARGET static void pack_row_bf16(uint32_t *d, const uint16_t *a, const uint16_t *b, int64_t c)
{
    int64_t k = 0;
    for (; k + 16 <= c; k += 16) {
        __m512i v = _mm512_cvtepu16_epi32(_mm256_loadu_si256((const __m256i *)(const void *)(a + k)));
        if (b)
            v = _mm512_or_si512(v, _mm512_slli_epi32(
                                       _mm512_cvtepu16_epi32(_mm256_loadu_si256((const __m256i *)(const void *)(b + k))), 16));
        _mm512_storeu_si512((void *)(d + k), v);
    }
    for (; k < c; k++)
        d[k] = (uint32_t)a[k] | (b ? (uint32_t)b[k] << 16 : 0);
}

/* One pixel from fp32: the same with rounding, the plain roundings of a
 * and b into pa and pb (NULL: not wanted), and a + b added to acc (NULL:
 * not wanted); any c. */
FM_W16_TARGET static void pack_row_f32(uint32_t *d, uint16_t *pa, uint16_t *pb, const float *a, const float *b,
                                       float *acc, int64_t c)
{
    int64_t k = 0;
    for (; k + 16 <= c; k += 16) {
        const __m512 fa = _mm512_loadu_ps(a + k), fb = b ? _mm512_loadu_ps(b + k) : _mm512_setzero_ps();
        const __m512i lo = round16(fa), hi = b ? round16(fb) : _mm512_setzero_si512();
        _mm512_storeu_si512((void *)(d + k), _mm512_or_si512(lo, _mm512_slli_epi32(hi, 16)));
        if (pa)
            _mm256_storeu_si256((__m256i *)(void *)(pa + k), _mm512_cvtepi32_epi16(lo));
        if (pa && b)
            _mm256_storeu_si256((__m256i *)(void *)(pb + k), _mm512_cvtepi32_epi16(hi));
        if (acc)
            _mm512_storeu_ps(acc + k, _mm512_add_ps(_mm512_loadu_ps(acc + k), _mm512_add_ps(fa, fb)));
    }
    for (; k < c; k++) {
        const uint16_t lo = fm_bf16_round(a[k]), hi = b ? fm_bf16_round(b[k]) : 0;
        d[k] = (uint32_t)lo | (uint32_t)hi << 16;
        if (pa)
            pa[k] = lo;
        if (pa && b)
            pb[k] = hi;
        if (acc)
            acc[k] += a[k] + (b ? b[k] : 0.0f);
    }
}

void fm_wgrad16_pack_bf16(uint16_t *dst, const uint16_t *src, int64_t n, int64_t hw, int64_t c)
{
    const int64_t rows = (n + 1) / 2 * hw;
#pragma omp parallel for schedule(static) if (rows * c >= 32768)
    for (int64_t r = 0; r < rows; r++) {
        const int64_t m = r / hw, p = r % hw;
        const uint16_t *a = src + ((2 * m) * hw + p) * c;
        pack_row_bf16((uint32_t *)(void *)(dst + r * c * 2), a, 2 * m + 1 < n ? a + hw * c : NULL, c);
    }
}

void fm_wgrad16_pack_f32(uint16_t *dst, uint16_t *plain, const float *src, int64_t n, int64_t hw, int64_t c,
                         float *db, float *part, int threads)
{
    const int64_t rows = (n + 1) / 2 * hw;
    int used = 1;
#pragma omp parallel num_threads(threads) if (rows * c >= 32768)
    {
        float *acc = db ? part + (int64_t)omp_get_thread_num() * c : NULL;
        if (acc)
            memset(acc, 0, (size_t)c * sizeof(float));
#pragma omp master
        used = omp_get_num_threads();
#pragma omp for schedule(static)
        for (int64_t r = 0; r < rows; r++) {
            const int64_t m = r / hw, p = r % hw;
            const float *a = src + ((2 * m) * hw + p) * c;
            const int odd = 2 * m + 1 < n;
            uint16_t *pa = plain ? plain + ((2 * m) * hw + p) * c : NULL;
            pack_row_f32((uint32_t *)(void *)(dst + r * c * 2), pa, pa && odd ? pa + hw * c : NULL, a,
                         odd ? a + hw * c : NULL, acc, c);
        }
    }
    /* the threads' partial sums in thread order: the same bits on every run */
    for (int t = 0; db && t < used; t++)
        for (int64_t k = 0; k < c; k++)
            db[k] += part[t * c + k];
}

/* First output index i >= 0 whose input index i*s + k - pad is >= 0, and
 * one past the last whose input index is < in (clamped to [0, out]). */
static void valid_range(int64_t in, int64_t out, int64_t k, int64_t s, int64_t pad, int64_t *lo, int64_t *hi)
{
    const int64_t a = pad - k, b = in + pad - k;  // need i*s >= a and i*s < b
    int64_t l = a <= 0 ? 0 : (a + s - 1) / s;
    int64_t h = b <= 0 ? 0 : (b + s - 1) / s;
    *lo = l < out ? l : out;
    *hi = h < out ? h : out;
}

/* One register tile: the sums of dw[o0 .. o0+ob)[c0 .. c0+16 cv)[ky][kx]
 * over image pairs m0 .. m1-1 and every output pixel whose input pixel
 * exists, added to sums ([OB][CV] vectors, kept between calls). ob and cv
 * are constants at each call site (tile_dispatch), so the loops unroll and
 * the accumulators stay in registers. The sums of a tile visit the pairs,
 * rows and columns in the same order however the pairs are split into
 * calls, so the result does not depend on the split. */
FM_W16_TARGET static inline __attribute__((always_inline)) void
tile(const fm_wgrad16 *g, const uint16_t *xp, const uint16_t *dyp, int64_t ky, int64_t kx, int64_t o0, const int ob,
     int64_t c0, const int cv, int64_t m0, int64_t m1, float *sums)
{
    __m512 acc[OB][CV];
    FM_W16_UNROLL
    for (int o = 0; o < ob; o++)
        FM_W16_UNROLL
        for (int v = 0; v < cv; v++)
            acc[o][v] = _mm512_load_ps(sums + (o * CV + v) * 16);
    int64_t i_lo, i_hi, j_lo, j_hi;
    valid_range(g->h, g->ho, ky, g->stride, g->pad_t, &i_lo, &i_hi);
    valid_range(g->w, g->wo, kx, g->stride, g->pad_l, &j_lo, &j_hi);
    const int64_t s = g->stride, xs = g->cin * 2, ds = g->cout * 2;
    if (j_lo < j_hi)
        for (int64_t m = m0; m < m1; m++)
            for (int64_t i = i_lo; i < i_hi; i++) {
                const int64_t iy = i * s + ky - g->pad_t, jx = j_lo * s + kx - g->pad_l;
                const uint16_t *xr = xp + ((m * g->h + iy) * g->w + jx) * xs + c0 * 2;
                const uint16_t *dr = dyp + ((m * g->ho + i) * g->wo + j_lo) * ds + o0 * 2;
                for (int64_t j = j_lo; j < j_hi; j++, xr += s * xs, dr += ds) {
                    __m512bh xv[CV];
                    FM_W16_UNROLL
                    for (int v = 0; v < cv; v++)
                        xv[v] = (__m512bh)_mm512_loadu_si512((const void *)(xr + 32 * v));
                    FM_W16_UNROLL
                    for (int o = 0; o < ob; o++) {
                        int32_t pair;
                        memcpy(&pair, dr + 2 * o, 4);
                        const __m512bh b = (__m512bh)_mm512_set1_epi32(pair);
                        FM_W16_UNROLL
                        for (int v = 0; v < cv; v++)
                            acc[o][v] = _mm512_dpbf16_ps(acc[o][v], b, xv[v]);
                    }
                }
            }
    FM_W16_UNROLL
    for (int o = 0; o < ob; o++)
        FM_W16_UNROLL
        for (int v = 0; v < cv; v++)
            _mm512_store_ps(sums + (o * CV + v) * 16, acc[o][v]);
}

FM_W16_TARGET static void tile_dispatch(const fm_wgrad16 *g, const uint16_t *xp, const uint16_t *dyp, int64_t ky,
                                        int64_t kx, int64_t o0, int ob, int64_t c0, int cv, int64_t m0, int64_t m1,
                                        float *sums)
{
#define FM_W16_CASE(B, V)                                              \
    case (B) * 8 + (V):                                                \
        tile(g, xp, dyp, ky, kx, o0, (B), c0, (V), m0, m1, sums);      \
        break;
#define FM_W16_ROW(B) FM_W16_CASE(B, 1) FM_W16_CASE(B, 2) FM_W16_CASE(B, 3) FM_W16_CASE(B, 4)
    switch (ob * 8 + cv) {
        FM_W16_ROW(1) FM_W16_ROW(2) FM_W16_ROW(3) FM_W16_ROW(4) FM_W16_ROW(5) FM_W16_ROW(6)
    default:
        break;
    }
#undef FM_W16_ROW
#undef FM_W16_CASE
}

/* A tile's sums into dw [Cout, Cin, kh, kw]. */
static void store_tile(const fm_wgrad16 *g, const float *sums, int64_t tap, int64_t o0, int ob, int64_t c0, int cv,
                       float *dw)
{
    const int64_t taps = g->kh * g->kw;
    for (int o = 0; o < ob; o++)
        for (int64_t c = 0; c < 16 * cv; c++)
            dw[((o0 + o) * g->cin + c0 + c) * taps + tap] = sums[(o * CV + c / 16) * 16 + c % 16];
}

void fm_wgrad16_run(const fm_wgrad16 *g, const uint16_t *xp, const uint16_t *dyp, float *dw)
{
    const int64_t nob = (g->cout + OB - 1) / OB, ncb = (g->cin + 16 * CV - 1) / (16 * CV), taps = g->kh * g->kw;
    const int64_t groups = (nob + GROUP - 1) / GROUP, per = (nob + groups - 1) / groups;
    const int64_t tasks = ncb * taps * groups, pairs = (g->n + 1) / 2;
    /* the pairs of one chunk: the x block of a chunk (pair-packed pixels of
     * 16 CV channels) stays in L1 while every tile of the task reads it */
    const int64_t pair_bytes = g->h * g->w * 16 * CV * 4;
    const int64_t chunk = pair_bytes >= CHUNK_BYTES ? 1 : CHUNK_BYTES / pair_bytes;
    /* a task is one tap of one block of input channels for a group of
     * output-channel tiles; it owns their sums, so each belongs to one thread */
#pragma omp parallel for schedule(dynamic, 1)
    for (int64_t t = 0; t < tasks; t++) {
        float sums[GROUP * OB * CV * 16] __attribute__((aligned(64)));
        const int64_t gi = t % groups, tap = t / groups % taps, cb = t / groups / taps;
        const int64_t ob_lo = gi * per, ob_hi = ob_lo + per < nob ? ob_lo + per : nob;
        const int64_t c0 = cb * 16 * CV;
        const int cv = (int)((g->cin - c0) / 16 < CV ? (g->cin - c0) / 16 : CV);
        memset(sums, 0, (size_t)(ob_hi - ob_lo) * OB * CV * 16 * sizeof(float));
        for (int64_t m0 = 0; m0 < pairs; m0 += chunk) {
            const int64_t m1 = m0 + chunk < pairs ? m0 + chunk : pairs;
            for (int64_t k = ob_lo; k < ob_hi; k++) {
                const int64_t o0 = k * OB;
                const int ob = (int)(g->cout - o0 < OB ? g->cout - o0 : OB);
                tile_dispatch(g, xp, dyp, tap / g->kw, tap % g->kw, o0, ob, c0, cv, m0, m1,
                              sums + (k - ob_lo) * OB * CV * 16);
            }
        }
        for (int64_t k = ob_lo; k < ob_hi; k++) {
            const int64_t o0 = k * OB;
            const int ob = (int)(g->cout - o0 < OB ? g->cout - o0 : OB);
            store_tile(g, sums + (k - ob_lo) * OB * CV * 16, tap, o0, ob, c0, cv, dw);
        }
    }
}
