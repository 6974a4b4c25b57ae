/* attention.c - multi-head self-attention: projections on fm_linear, per-head
 * products as oneDNN batched matmuls on strided views, fused softmax loops. */
#include "fm/attention.h"

#include <math.h>
#include <stdio.h>
#include <string.h>

/* Create a matmul primitive dst = src x weights with a user-managed
 * scratchpad; raise *scratch to the size it needs. */
static int make_matmul(fm_dnn *d, dnnl_primitive_t *out, dnnl_memory_t src, dnnl_memory_t wei,
                       dnnl_memory_t dst, size_t *scratch, fm_err *e)
{
    const dnnl_memory_desc_t *src_md, *wei_md, *dst_md;
    FM_DNN(dnnl_memory_get_memory_desc(src, &src_md), e);
    FM_DNN(dnnl_memory_get_memory_desc(wei, &wei_md), e);
    FM_DNN(dnnl_memory_get_memory_desc(dst, &dst_md), e);
    return fm_dnn_matmul(d, out, src_md, wei_md, NULL, dst_md, scratch, e);
}

/* A 4-D fp32 view [B, heads, rows, cols] with the given strides over data. */
static int view(fm_dnn *d, dnnl_memory_t *m, const dnnl_dims_t dims, const dnnl_dims_t strides, float *data,
                fm_err *e)
{
    dnnl_memory_desc_t md;
    FM_DNN(dnnl_memory_desc_init_by_strides(&md, 4, dims, dnnl_f32, strides), e);
    FM_DNN(dnnl_memory_create(m, &md, d->engine, data), e);
    return FM_OK;
}

static int alloc_f32(fm_arena *a, float **out, int64_t n, fm_err *e)
{
    void *p;
    FM_TRY(fm_arena_alloc_or(a, (size_t)n * sizeof(float), &p, e));
    *out = p;
    return FM_OK;
}

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

    FM_TRY(alloc_f32(a, &l->qkv, m * 3 * c, e));
    FM_TRY(alloc_f32(a, &l->p, b * h * t * t, e));
    FM_TRY(alloc_f32(a, &l->o, m * c, e));
    FM_TRY(alloc_f32(a, &l->dp, b * h * t * t, e));
    FM_TRY(alloc_f32(a, &l->dout, m * c, e));
    FM_TRY(alloc_f32(a, &l->dqkv, m * 3 * c, e));

    /* Head i of token tt of batch bb sits at channel i*hd of row bb*T + tt:
     * a [B, h, T, hd] view has strides {T*rowlen, hd, rowlen, 1}; the
     * transposed [B, h, hd, T] view swaps the last two strides. */
    const dnnl_dims_t tok = { b, h, t, hd }, tokt = { b, h, hd, t }, sq = { b, h, t, t };
    const dnnl_dims_t s_qkv = { t * 3 * c, hd, 3 * c, 1 }, s_qkvt = { t * 3 * c, hd, 1, 3 * c };
    const dnnl_dims_t s_o = { t * c, hd, c, 1 };
    const dnnl_dims_t s_sq = { h * t * t, t * t, t, 1 }, s_sqt = { h * t * t, t * t, 1, t };
    FM_TRY(view(d, &l->m_q, tok, s_qkv, l->qkv, e));
    FM_TRY(view(d, &l->m_k, tok, s_qkv, l->qkv + c, e));
    FM_TRY(view(d, &l->m_kt, tokt, s_qkvt, l->qkv + c, e));
    FM_TRY(view(d, &l->m_v, tok, s_qkv, l->qkv + 2 * c, e));
    FM_TRY(view(d, &l->m_vt, tokt, s_qkvt, l->qkv + 2 * c, e));
    FM_TRY(view(d, &l->m_dq, tok, s_qkv, l->dqkv, e));
    FM_TRY(view(d, &l->m_dk, tok, s_qkv, l->dqkv + c, e));
    FM_TRY(view(d, &l->m_dv, tok, s_qkv, l->dqkv + 2 * c, e));
    FM_TRY(view(d, &l->m_p, sq, s_sq, l->p, e));
    FM_TRY(view(d, &l->m_pt, sq, s_sqt, l->p, e));
    FM_TRY(view(d, &l->m_ds, sq, s_sq, l->dp, e));
    FM_TRY(view(d, &l->m_dst, sq, s_sqt, l->dp, e));
    FM_TRY(view(d, &l->m_o, tok, s_o, l->o, e));
    FM_TRY(view(d, &l->m_do, tok, s_o, l->dout, e));

    size_t scratch = 0;
    FM_TRY(make_matmul(d, &l->qk, l->m_q, l->m_kt, l->m_p, &scratch, e));
    FM_TRY(make_matmul(d, &l->pv, l->m_p, l->m_v, l->m_o, &scratch, e));
    FM_TRY(make_matmul(d, &l->dv, l->m_pt, l->m_do, l->m_dv, &scratch, e));
    FM_TRY(make_matmul(d, &l->dpm, l->m_do, l->m_vt, l->m_ds, &scratch, e));
    FM_TRY(make_matmul(d, &l->dq, l->m_ds, l->m_k, l->m_dq, &scratch, e));
    FM_TRY(make_matmul(d, &l->dk, l->m_dst, l->m_q, l->m_dk, &scratch, e));
    l->scratch_bytes = scratch;
    void *buf = NULL;
    if (scratch)
        FM_TRY(fm_arena_alloc_or(a, scratch, &buf, e));
    dnnl_memory_desc_t smd;
    FM_DNN(dnnl_memory_desc_init_by_tag(&smd, 1, (dnnl_dims_t){ (dnnl_dim_t)(scratch ? scratch : 1) }, dnnl_u8,
                                        dnnl_a), e);
    FM_DNN(dnnl_memory_create(&l->m_scratch, &smd, d->engine, buf ? buf : DNNL_MEMORY_NONE), e);
    return FM_OK;
}

static int run(fm_attention *l, dnnl_primitive_t prim, dnnl_memory_t src, dnnl_memory_t wei, dnnl_memory_t dst,
               fm_err *e)
{
    dnnl_exec_arg_t args[] = {
        { DNNL_ARG_SRC, src },
        { DNNL_ARG_WEIGHTS, wei },
        { DNNL_ARG_DST, dst },
        { DNNL_ARG_SCRATCHPAD, l->m_scratch },
    };
    return fm_dnn_exec(l->d, prim, 4, args, e);
}

/* exp(x) for x <= 0, written so that loops over it vectorise (libm's expf
 * does not without -ffast-math): x = n ln2 + r with |r| <= ln2/2 (Cody-Waite
 * split of ln2), exp(r) by its Taylor series to degree 7 (truncation below
 * 1e-8 relative) in fused multiply-adds, 2^n put straight into the exponent
 * bits. Relative error about 2e-7; inputs below -87 return exp(-87) ~ 1.6e-38
 * instead of underflowing. */
static inline float exp_nonpos(float x)
{
    x = x < -87.0f ? -87.0f : x;
    const float magic = 12582912.0f; /* 1.5 * 2^23: adding it rounds to an integer */
    float n = fmaf(x, 1.44269504f, magic) - magic;
    float r = fmaf(n, -0.693359375f, x); /* ln2 high part: n * it is exact for |n| < 2^10 */
    r = fmaf(n, 2.12194440e-4f, r);      /* ln2 low part */
    float q = fmaf(1.0f / 5040, r, 1.0f / 720);
    q = fmaf(q, r, 1.0f / 120);
    q = fmaf(q, r, 1.0f / 24);
    q = fmaf(q, r, 1.0f / 6);
    q = fmaf(q, r, 0.5f);
    q = fmaf(q, r, 1.0f);
    q = fmaf(q, r, 1.0f);
    int32_t bits = ((int32_t)n + 127) * (1 << 23);
    float two_n;
    memcpy(&two_n, &bits, sizeof two_n);
    return q * two_n;
}

/* In place over rows x n: s <- softmax(scale * s) per row, max-subtracted. */
static void softmax_rows(float *s, int64_t rows, int64_t n, float scale)
{
#pragma omp parallel for schedule(static)
    for (int64_t r = 0; r < rows; r++) {
        float *row = s + r * n;
        float mx = -INFINITY;
#pragma omp simd reduction(max : mx)
        for (int64_t j = 0; j < n; j++)
            mx = row[j] > mx ? row[j] : mx;
        float sum = 0.0f;
#pragma omp simd reduction(+ : sum)
        for (int64_t j = 0; j < n; j++) {
            float v = exp_nonpos((row[j] - mx) * scale);
            row[j] = v;
            sum += v;
        }
        const float inv = 1.0f / sum;
#pragma omp simd
        for (int64_t j = 0; j < n; j++)
            row[j] *= inv;
    }
}

/* In place over rows x n: g <- scale * p * (g - sum_j g_j p_j) per row, the
 * gradient of the scaled softmax's input given that of its output. */
static void softmax_rows_backward(const float *p, float *g, int64_t rows, int64_t n, float scale)
{
#pragma omp parallel for schedule(static)
    for (int64_t r = 0; r < rows; r++) {
        const float *pr = p + r * n;
        float *gr = g + r * n;
        float dot = 0.0f;
#pragma omp simd reduction(+ : dot)
        for (int64_t j = 0; j < n; j++)
            dot += gr[j] * pr[j];
#pragma omp simd
        for (int64_t j = 0; j < n; j++)
            gr[j] = scale * pr[j] * (gr[j] - dot);
    }
}

int fm_attention_forward(fm_attention *l, const float *x, float *y, fm_err *e)
{
    const int64_t rows = l->b * l->heads * l->t;
    FM_TRY(fm_linear_forward(&l->in_proj, x, l->qkv, e));  // [B, T, 3C]
    FM_TRY(run(l, l->qk, l->m_q, l->m_kt, l->m_p, e));      // S [B, h, T, T]
    softmax_rows(l->p, rows, l->t, l->scale);               // P, in place
    FM_TRY(run(l, l->pv, l->m_p, l->m_v, l->m_o, e));       // o [B, T, C]
    return fm_linear_forward(&l->out_proj, l->o, y, e);
}

int fm_attention_backward(fm_attention *l, const float *x, const float *dy, float *dx, fm_err *e)
{
    const int64_t rows = l->b * l->heads * l->t;
    FM_TRY(fm_linear_backward(&l->out_proj, l->o, dy, l->dout, e)); // dO [B, T, C]
    FM_TRY(run(l, l->dv, l->m_pt, l->m_do, l->m_dv, e));            // dV = P^T dO
    FM_TRY(run(l, l->dpm, l->m_do, l->m_vt, l->m_ds, e));           // dP = dO V^T
    softmax_rows_backward(l->p, l->dp, rows, l->t, l->scale);       // dS, in place
    FM_TRY(run(l, l->dq, l->m_ds, l->m_k, l->m_dq, e));             // dQ = dS K
    FM_TRY(run(l, l->dk, l->m_dst, l->m_q, l->m_dk, e));            // dK = dS^T Q
    return fm_linear_backward(&l->in_proj, x, l->dqkv, dx, e);
}

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
    dnnl_primitive_t prims[] = { l->qk, l->pv, l->dv, l->dpm, l->dq, l->dk };
    for (size_t i = 0; i < sizeof prims / sizeof *prims; i++)
        if (prims[i])
            dnnl_primitive_destroy(prims[i]);
    dnnl_memory_t mems[] = { l->m_q,  l->m_k,  l->m_kt, l->m_v,   l->m_vt, l->m_dq, l->m_dk, l->m_dv,
                             l->m_p,  l->m_pt, l->m_ds, l->m_dst, l->m_o,  l->m_do, l->m_scratch };
    for (size_t i = 0; i < sizeof mems / sizeof *mems; i++)
        if (mems[i])
            dnnl_memory_destroy(mems[i]);
    memset(l, 0, sizeof *l);
}
