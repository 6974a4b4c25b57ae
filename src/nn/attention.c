/* attention.c - multi-head self-attention: projections on fm_linear, the
 * per-head products and the softmax fused into one loop nest per (sample,
 * head) that stays in L1 (see attention.h). */
#include "fm/attention.h"

#include <immintrin.h>
#include <math.h>
#include <omp.h>
#include <stdio.h>
#include <string.h>

#include "fm/act.h"

int fm_attention_init(fm_attention *l, fm_dnn *d, fm_params *p, fm_arena *a, const char *name, int64_t c,
                      int64_t heads, int64_t b, int64_t t, fm_err *e)
{
    memset(l, 0, sizeof *l);
    if (c < 1 || heads < 1 || b < 1 || t < 1 || c % heads != 0)
        return fm_fail(e, FM_ERR_USAGE,
                       "attention %s: bad sizes channels %lld, heads %lld, batch %lld, tokens %lld "
                       "(channels must be a multiple of heads)",
                       name, (long long)c, (long long)heads, (long long)b, (long long)t);
    l->d = d;
    l->b = b;
    l->t = t;
    l->c = c;
    l->heads = heads;
    l->hd = c / heads;
    l->scale = 1.0f / sqrtf((float)l->hd);
    const int64_t m = b * t, h = heads, hd = l->hd;

    /* parameters, in the torch module's state-dict order */
    fm_param *w_in, *b_in;
    FM_TRY(fm_params_add(p, &w_in, 2, (int64_t[]){ 3 * c, c }, e, "%s.in_proj_weight", name));
    FM_TRY(fm_params_add(p, &b_in, 1, (int64_t[]){ 3 * c }, e, "%s.in_proj_bias", name));
    fm_param_init_uniform(p, w_in, sqrtf(6.0f / (float)(c + 3 * c)));
    fm_param_fill(b_in, 0.0f);
    FM_TRY(fm_linear_init_params(&l->in_proj, d, a, w_in, b_in, m, e));
    char sub[FM_PARAM_NAME];
    if (snprintf(sub, sizeof sub, "%s.out_proj", name) >= (int)sizeof sub)
        return fm_fail(e, FM_ERR_USAGE, "attention %s: name too long", name);
    FM_TRY(fm_linear_init(&l->out_proj, d, p, a, sub, c, c, 1, m, e));
    fm_param_fill(l->out_proj.bias, 0.0f);

    FM_TRY(fm_arena_take(a, (size_t)(m * 3 * c), sizeof(float), &l->qkv, name, e));
    FM_TRY(fm_arena_take(a, (size_t)(b * h * t * t), sizeof(float), &l->p, name, e));
    FM_TRY(fm_arena_take(a, (size_t)(m * c), sizeof(float), &l->o, name, e));
    FM_TRY(fm_arena_take(a, (size_t)(b * h * t * t), sizeof(float), &l->dp, name, e));
    FM_TRY(fm_arena_take(a, (size_t)(m * c), sizeof(float), &l->dout, name, e));
    FM_TRY(fm_arena_take(a, (size_t)(m * 3 * c), sizeof(float), &l->dqkv, name, e));

    /* per-thread scratch of the fused core: K^T and V^T of one head */
    l->nthr = omp_get_max_threads();
    l->ws_stride = hd * t;
    FM_TRY(fm_arena_take(a, (size_t)((int64_t)l->nthr * l->ws_stride), sizeof(float), &l->ws, name, e));
    __builtin_cpu_init();
    l->fast16 = t == 16 && hd % 16 == 0 && __builtin_cpu_supports("avx512f");
    return FM_OK;
}


/* q, k, v of head hh of sample bb: rows T apart by 3C in qkv (or dqkv). */
static inline int64_t head_off(const fm_attention *l, int64_t bb, int64_t hh)
{
    return bb * l->t * 3 * l->c + hh * l->hd;
}

/* [T, hd] rows of src (row stride ld) -> dst [hd, T], so that loops over
 * tokens are contiguous. */
static void transpose_head(const float *src, int64_t ld, float *dst, int64_t t, int64_t hd)
{
    for (int64_t j = 0; j < t; j++)
        for (int64_t d = 0; d < hd; d++)
            dst[d * t + j] = src[j * ld + d];
}

/* C [M, N] = A [M, K] B [K, N] for the per-head products: A's element (i, k) is A[i * ars + k * aks] (so A may be a transposed
 * view), B's rows are ldb apart, C's ldc. Tiles of 4 rows x 16 columns keep
 * their sums in registers across the whole K loop (4 independent chains of
 * fused multiply-adds); the last row tile repeats its last row instead of
 * branching and stores only the real rows. */
static void head_mm(int64_t M, int64_t N, int64_t K, const float *A, int64_t ars, int64_t aks, const float *B,
                    int64_t ldb, float *C, int64_t ldc)
{
    for (int64_t i0 = 0; i0 < M; i0 += 4) {
        const int64_t nr = M - i0 < 4 ? M - i0 : 4;
        const float *ar[4];
        for (int r = 0; r < 4; r++)
            ar[r] = A + (i0 + (r < nr ? r : nr - 1)) * ars;
        for (int64_t j0 = 0; j0 + 16 <= N; j0 += 16) {
            float acc[4][16] = { { 0 } };
            for (int64_t k = 0; k < K; k++) {
                const float *bk = B + k * ldb + j0;
#pragma GCC unroll 4
                for (int r = 0; r < 4; r++) {
                    const float a = ar[r][k * aks];
#pragma omp simd
                    for (int j = 0; j < 16; j++)
                        acc[r][j] = fmaf(a, bk[j], acc[r][j]);
                }
            }
            for (int64_t r = 0; r < nr; r++)
                memcpy(C + (i0 + r) * ldc + j0, acc[r], sizeof acc[r]);
        }
    }
    /* columns past the last multiple of 16 (head sizes or token counts that
     * are not multiples of 16): plain dot products */
    for (int64_t i = 0; i < M; i++)
        for (int64_t j = N - N % 16; j < N; j++) {
            float acc = 0.0f;
            for (int64_t k = 0; k < K; k++)
                acc = fmaf(A[i * ars + k * aks], B[k * ldb + j], acc);
            C[i * ldc + j] = acc;
        }
}

/* Row-wise in place over s [T, T]: s <- softmax(s). */
static void softmax_rows(float *s, int64_t t)
{
    for (int64_t i = 0; i < t; i++) {
        float *row = s + i * t, mx = -INFINITY, sum = 0.0f;
#pragma omp simd reduction(max : mx)
        for (int64_t j = 0; j < t; j++)
            mx = row[j] > mx ? row[j] : mx;
#pragma omp simd reduction(+ : sum)
        for (int64_t j = 0; j < t; j++) {
            row[j] = fm_expf_simd(row[j] - mx);
            sum += row[j];
        }
        const float inv = 1.0f / sum;
#pragma omp simd
        for (int64_t j = 0; j < t; j++)
            row[j] *= inv;
    }
}

/* ---- T = 16 tokens, head size a multiple of 16: AVX-512 ------------------ */

#define FM_ATT16_TARGET __attribute__((target("avx512f")))

/* r[0..16), 16 rows of 16 -> their transpose (r[k] = column k). */
FM_ATT16_TARGET static inline void tr16(__m512 r[16])
{
    __m512 t[16];
    for (int i = 0; i < 16; i += 2) {
        t[i] = _mm512_unpacklo_ps(r[i], r[i + 1]);
        t[i + 1] = _mm512_unpackhi_ps(r[i], r[i + 1]);
    }
    for (int i = 0; i < 16; i += 4) {
        r[i] = _mm512_castpd_ps(_mm512_unpacklo_pd(_mm512_castps_pd(t[i]), _mm512_castps_pd(t[i + 2])));
        r[i + 1] = _mm512_castpd_ps(_mm512_unpackhi_pd(_mm512_castps_pd(t[i]), _mm512_castps_pd(t[i + 2])));
        r[i + 2] = _mm512_castpd_ps(_mm512_unpacklo_pd(_mm512_castps_pd(t[i + 1]), _mm512_castps_pd(t[i + 3])));
        r[i + 3] = _mm512_castpd_ps(_mm512_unpackhi_pd(_mm512_castps_pd(t[i + 1]), _mm512_castps_pd(t[i + 3])));
    }
    for (int i = 0; i < 4; i++) {
        t[i] = _mm512_shuffle_f32x4(r[i], r[i + 4], 0x88);
        t[i + 4] = _mm512_shuffle_f32x4(r[i], r[i + 4], 0xdd);
        t[i + 8] = _mm512_shuffle_f32x4(r[i + 8], r[i + 12], 0x88);
        t[i + 12] = _mm512_shuffle_f32x4(r[i + 8], r[i + 12], 0xdd);
    }
    for (int i = 0; i < 8; i++) {
        r[i] = _mm512_shuffle_f32x4(t[i], t[i + 8], 0x88);
        r[i + 8] = _mm512_shuffle_f32x4(t[i], t[i + 8], 0xdd);
    }
}

/* [16, D] rows of src (row stride ld) -> dst [D, 16]. */
FM_ATT16_TARGET static void transpose16(const float *src, int64_t ld, float *dst, int64_t D)
{
    for (int64_t c0 = 0; c0 < D; c0 += 16) {
        __m512 r[16];
        for (int j = 0; j < 16; j++)
            r[j] = _mm512_loadu_ps(src + j * ld + c0);
        tr16(r);
        for (int k = 0; k < 16; k++)
            _mm512_storeu_ps(dst + (c0 + k) * 16, r[k]);
    }
}

/* fm_expf_simd on 16 lanes, the same operations in the same order. */
FM_ATT16_TARGET static inline __m512 exp16(__m512 x)
{
    x = _mm512_max_ps(x, _mm512_set1_ps(-87.0f));
    x = _mm512_min_ps(x, _mm512_set1_ps(88.0f));
    const __m512 shifter = _mm512_set1_ps(12582912.0f);
    const __m512 k = _mm512_sub_ps(_mm512_fmadd_ps(x, _mm512_set1_ps(1.44269504088896341f), shifter), shifter);
    __m512 r = _mm512_fmadd_ps(k, _mm512_set1_ps(-0.693145751953125f), x);
    r = _mm512_fmadd_ps(k, _mm512_set1_ps(-1.428606765330187e-06f), r);
    __m512 p = _mm512_set1_ps(1.0f / 5040.0f);
    p = _mm512_fmadd_ps(p, r, _mm512_set1_ps(1.0f / 720.0f));
    p = _mm512_fmadd_ps(p, r, _mm512_set1_ps(1.0f / 120.0f));
    p = _mm512_fmadd_ps(p, r, _mm512_set1_ps(1.0f / 24.0f));
    p = _mm512_fmadd_ps(p, r, _mm512_set1_ps(1.0f / 6.0f));
    p = _mm512_fmadd_ps(p, r, _mm512_set1_ps(0.5f));
    p = _mm512_fmadd_ps(p, r, _mm512_set1_ps(1.0f));
    p = _mm512_fmadd_ps(p, r, _mm512_set1_ps(1.0f));
    const __m512i bits = _mm512_slli_epi32(_mm512_add_epi32(_mm512_cvttps_epi32(k), _mm512_set1_epi32(127)), 23);
    return _mm512_mul_ps(p, _mm512_castsi512_ps(bits));
}

/* Rows of s [16, 16] in place: s <- softmax(scale s). */
FM_ATT16_TARGET static void softmax16(float *s, float scale)
{
    const __m512 sc = _mm512_set1_ps(scale);
    for (int i = 0; i < 16; i++) {
        const __m512 v = _mm512_mul_ps(_mm512_loadu_ps(s + 16 * i), sc);
        const __m512 e = exp16(_mm512_sub_ps(v, _mm512_set1_ps(_mm512_reduce_max_ps(v))));
        _mm512_storeu_ps(s + 16 * i, _mm512_mul_ps(e, _mm512_set1_ps(1.0f / _mm512_reduce_add_ps(e))));
    }
}

/* ds [16, 16] in place from dP: ds = scale P (dP - rowsum(dP P)). */
FM_ATT16_TARGET static void softmax16_grad(float *ds, const float *p, float scale)
{
    const __m512 sc = _mm512_set1_ps(scale);
    for (int i = 0; i < 16; i++) {
        const __m512 pi = _mm512_loadu_ps(p + 16 * i), si = _mm512_loadu_ps(ds + 16 * i);
        const __m512 dot = _mm512_set1_ps(_mm512_reduce_add_ps(_mm512_mul_ps(si, pi)));
        _mm512_storeu_ps(ds + 16 * i, _mm512_mul_ps(_mm512_mul_ps(sc, pi), _mm512_sub_ps(si, dot)));
    }
}

/* One (sample, head) of the forward: P = softmax(scale Q K^T) into p [T, T],
 * O = P V into o (row stride C). kt: scratch [hd, T]. */
static void core_forward(const fm_attention *l, const float *q, float *p, float *o, float *kt)
{
    const int64_t T = l->t, D = l->hd, ld = 3 * l->c;
    const float *k = q + l->c, *v = q + 2 * l->c;
    if (l->fast16)
        transpose16(k, ld, kt, D);
    else
        transpose_head(k, ld, kt, T, D);
    head_mm(T, T, D, q, ld, 1, kt, T, p, T);  // S = Q K^T
    if (l->fast16) {
        softmax16(p, l->scale);
    } else {
        for (int64_t i = 0; i < T * T; i++)
            p[i] *= l->scale;
        softmax_rows(p, T);
    }
    head_mm(T, D, T, p, T, 1, v, ld, o, l->c);  // O = P V
}

/* One (sample, head) of the backward, from P (p) and dO (dout, row stride
 * C): dV = P^T dO, dP = dO V^T, dS = scale P (dP - rowsum(dP P)) (into ds
 * [T, T]), dQ = dS K, dK = dS^T Q into dq (dqkv rows, stride 3C). vt:
 * scratch [hd, T]. */
static void core_backward(const fm_attention *l, const float *q, const float *p, const float *dout, float *ds,
                          float *dq, float *vt)
{
    const int64_t T = l->t, D = l->hd, ld = 3 * l->c;
    const float *k = q + l->c, *v = q + 2 * l->c;
    float *dk = dq + l->c, *dv = dq + 2 * l->c;
    if (l->fast16)
        transpose16(v, ld, vt, D);
    else
        transpose_head(v, ld, vt, T, D);
    head_mm(T, D, T, p, 1, T, dout, l->c, dv, ld);  // dV = P^T dO
    head_mm(T, T, D, dout, l->c, 1, vt, T, ds, T);  // dP = dO V^T
    if (l->fast16) {
        softmax16_grad(ds, p, l->scale);
    } else {
        for (int64_t i = 0; i < T; i++) {
            const float *pi = p + i * T;
            float *si = ds + i * T, dot = 0.0f;
#pragma omp simd reduction(+ : dot)
            for (int64_t j = 0; j < T; j++)
                dot += si[j] * pi[j];
#pragma omp simd
            for (int64_t j = 0; j < T; j++)
                si[j] = l->scale * pi[j] * (si[j] - dot);
        }
    }
    head_mm(T, D, T, ds, T, 1, k, ld, dq, ld);  // dQ = dS K
    head_mm(T, D, T, ds, 1, T, q, ld, dk, ld);  // dK = dS^T Q
}

static int forward(fm_attention *l, const float *x, float *y, fm_err *e)
{
    const int64_t H = l->heads, T = l->t;
    FM_TRY(fm_linear_forward(&l->in_proj, x, l->qkv, e));  // [B, T, 3C]
#pragma omp parallel for schedule(static) num_threads(l->nthr)
    for (int64_t task = 0; task < l->b * H; task++) {
        const int64_t bb = task / H, hh = task % H;
        float *kt = l->ws + (int64_t)omp_get_thread_num() * l->ws_stride;
        core_forward(l, l->qkv + head_off(l, bb, hh), l->p + task * T * T, l->o + bb * T * l->c + hh * l->hd, kt);
    }
    return fm_linear_forward(&l->out_proj, l->o, y, e);
}

static int backward(fm_attention *l, const float *x, const float *dy, float *dx, fm_err *e)
{
    const int64_t H = l->heads, T = l->t;
    FM_TRY(fm_linear_backward(&l->out_proj, l->o, dy, l->dout, e)); // dO [B, T, C]
#pragma omp parallel for schedule(static) num_threads(l->nthr)
    for (int64_t task = 0; task < l->b * H; task++) {
        const int64_t bb = task / H, hh = task % H;
        float *vt = l->ws + (int64_t)omp_get_thread_num() * l->ws_stride;
        core_backward(l, l->qkv + head_off(l, bb, hh), l->p + task * T * T,
                      l->dout + bb * T * l->c + hh * l->hd, l->dp + task * T * T,
                      l->dqkv + head_off(l, bb, hh), vt);
    }
    return fm_linear_backward(&l->in_proj, x, l->dqkv, dx, e);
}

/* The projections inside are linears without a site of their own: the layer
 * is timed as a whole. */
int fm_attention_forward(fm_attention *l, const float *x, float *y, fm_err *e)
{
    FM_PROF_SITE_CALL(l->prof, FM_PROF_FWD, fm_attention_flops_fwd(l), forward(l, x, y, e));
    return FM_OK;
}

int fm_attention_backward(fm_attention *l, const float *x, const float *dy, float *dx, fm_err *e)
{
    FM_PROF_SITE_CALL(l->prof, FM_PROF_BWD, fm_attention_flops_bwd(l, dx != NULL), backward(l, x, dy, dx, e));
    return FM_OK;
}

int fm_attention_keeps_x(const fm_attention *l, const float *x) { return fm_linear_keeps_x(&l->in_proj, x); }

/* The two per-head products of one pass: 2 * (2 * B * h * T * T * hd). */
static double core_flops(const fm_attention *l)
{
    return 4.0 * (double)l->b * (double)l->t * (double)l->t * (double)l->c;
}

double fm_attention_flops_fwd(const fm_attention *l)
{
    return fm_linear_flops_fwd(&l->in_proj) + core_flops(l) + fm_linear_flops_fwd(&l->out_proj);
}

double fm_attention_flops_bwd(const fm_attention *l, int with_dx)
{
    return fm_linear_flops_bwd(&l->out_proj, 1) + 2.0 * core_flops(l) + fm_linear_flops_bwd(&l->in_proj, with_dx);
}

void fm_attention_free(fm_attention *l)
{
    fm_linear_free(&l->in_proj);
    fm_linear_free(&l->out_proj);
    memset(l, 0, sizeof *l);
}
