/* linear.c - fully connected layer: oneDNN matmuls over strided views, a hand
 * column sum for the bias gradient. */
#include "fm/linear.h"

#include <math.h>
#include <string.h>

#include "fm/gelu.h"
#include "fm/tensor.h"

/* A memory object of type dt over dims with the given strides, data attached. */
static int strided_mem_dt(fm_dnn *d, dnnl_memory_t *m, int ndims, const dnnl_dims_t dims,
                          const dnnl_dims_t strides, dnnl_data_type_t dt, void *data, fm_err *e)
{
    dnnl_memory_desc_t md;
    FM_DNN(dnnl_memory_desc_init_by_strides(&md, ndims, dims, dt, strides), e);
    FM_DNN(dnnl_memory_create(m, &md, d->engine, data ? data : DNNL_MEMORY_NONE), e);
    return FM_OK;
}

static int strided_mem(fm_dnn *d, dnnl_memory_t *m, int ndims, const dnnl_dims_t dims,
                       const dnnl_dims_t strides, void *data, fm_err *e)
{
    return strided_mem_dt(d, m, ndims, dims, strides, dnnl_f32, data, e);
}

static const dnnl_memory_desc_t *md_of(dnnl_memory_t m)
{
    const dnnl_memory_desc_t *md = NULL;
    dnnl_memory_get_memory_desc(m, &md);
    return md;
}

int fm_linear_init(fm_linear *l, fm_dnn *d, fm_params *p, fm_arena *a, const char *name, int64_t in,
                   int64_t out, int bias, int64_t m, fm_err *e)
{
    memset(l, 0, sizeof *l);
    if (in < 1 || out < 1 || m < 1)
        return fm_fail(e, FM_ERR_USAGE, "linear %s: bad sizes in %lld, out %lld, rows %lld", name,
                       (long long)in, (long long)out, (long long)m);
    fm_param *w, *b = NULL;
    FM_TRY(fm_params_add(p, &w, 2, (int64_t[]){ out, in }, e, "%s.weight", name));
    fm_param_init_uniform(p, w, 1.0f / sqrtf((float)in));
    if (bias) {
        FM_TRY(fm_params_add(p, &b, 1, (int64_t[]){ out }, e, "%s.bias", name));
        fm_param_init_uniform(p, b, 1.0f / sqrtf((float)in));
    }
    return fm_linear_init_params(l, d, a, w, b, m, e);
}

int fm_linear_init_params(fm_linear *l, fm_dnn *d, fm_arena *a, fm_param *weight, fm_param *bias,
                          int64_t m, fm_err *e)
{
    memset(l, 0, sizeof *l);
    if (weight->w.ndim != 2 || weight->w.shape[0] < 1 || weight->w.shape[1] < 1 || m < 1)
        return fm_fail(e, FM_ERR_USAGE, "linear %s: weight must be [out, in] and rows >= 1 (got %d dims, %lld rows)",
                       weight->name, weight->w.ndim, (long long)m);
    const int64_t in = weight->w.shape[1], out = weight->w.shape[0];
    if (bias && (bias->w.ndim != 1 || bias->w.shape[0] != out))
        return fm_fail(e, FM_ERR_USAGE, "linear %s: bias must be [%lld]", bias->name, (long long)out);
    l->d = d;
    l->weight = weight;
    l->bias = bias;
    l->m = m;
    l->in = in;
    l->out = out;

    /* Operands: x, dy and W (and the views of them), fp32 buffers attached
     * per call, or under bf16 fixed arena copies rounded on each call. The
     * parameter blocks never move, so their handles are attached once. */
    const dnnl_data_type_t op = fm_dnn_op_type(d);
    void *x_op = NULL, *dy_op = NULL, *w_op = weight->w.data;
    if (d->bf16) {
        void *x16, *dy16, *w16;
        if (fm_arena_take(a, (size_t)(m * in), 2, &x16, "bf16 operand buffers", e) != FM_OK ||
            fm_arena_take(a, (size_t)(m * out), 2, &dy16, "bf16 operand buffers", e) != FM_OK ||
            fm_arena_take(a, (size_t)(out * in), 2, &w16, "bf16 operand buffers", e) != FM_OK)
            return fm_err_prefix(e, "linear %s", weight->name);
        l->x16 = (fm_bf16_copy){ .buf = x16, .n = m * in };
        l->dy16 = dy16, l->w16 = w16;
        x_op = x16, dy_op = dy16, w_op = w16;
    }
    FM_TRY(strided_mem_dt(d, &l->m_x, 2, (dnnl_dims_t){ m, in }, (dnnl_dims_t){ in, 1 }, op, x_op, e));
    FM_TRY(strided_mem_dt(d, &l->m_dy, 2, (dnnl_dims_t){ m, out }, (dnnl_dims_t){ out, 1 }, op, dy_op, e));
    FM_TRY(strided_mem_dt(d, &l->m_dyt, 2, (dnnl_dims_t){ out, m }, (dnnl_dims_t){ 1, out }, op, dy_op, e));
    FM_TRY(strided_mem_dt(d, &l->m_wt, 2, (dnnl_dims_t){ in, out }, (dnnl_dims_t){ 1, in }, op, w_op, e));
    FM_TRY(strided_mem_dt(d, &l->m_w, 2, (dnnl_dims_t){ out, in }, (dnnl_dims_t){ in, 1 }, op, w_op, e));
    FM_TRY(strided_mem(d, &l->m_y, 2, (dnnl_dims_t){ m, out }, (dnnl_dims_t){ out, 1 }, NULL, e));
    FM_TRY(strided_mem(d, &l->m_dx, 2, (dnnl_dims_t){ m, in }, (dnnl_dims_t){ in, 1 }, NULL, e));
    FM_TRY(strided_mem(d, &l->m_dw, 2, (dnnl_dims_t){ out, in }, (dnnl_dims_t){ in, 1 }, weight->g.data, e));
    if (bias)
        FM_TRY(strided_mem(d, &l->m_b, 2, (dnnl_dims_t){ 1, out }, (dnnl_dims_t){ out, 1 }, bias->w.data, e));

    /* on a measuring arena: the scratchpad size only, no primitives */
    const int prims = !fm_arena_measuring(a);
    size_t scratch = 0;
    FM_TRY(fm_dnn_matmul(d, prims ? &l->fwd : NULL, md_of(l->m_x), md_of(l->m_wt), bias ? md_of(l->m_b) : NULL,
                         md_of(l->m_y), &scratch, e));
    FM_TRY(fm_dnn_matmul(d, prims ? &l->bwd_data : NULL, md_of(l->m_dy), md_of(l->m_w), NULL, md_of(l->m_dx),
                         &scratch, e));
    FM_TRY(fm_dnn_matmul(d, prims ? &l->bwd_weights : NULL, md_of(l->m_dyt), md_of(l->m_x), NULL, md_of(l->m_dw),
                         &scratch, e));

    l->scratch_bytes = scratch;
    void *buf = NULL;
    if (scratch && fm_arena_take(a, scratch, 1, &buf, "scratchpad", e) != FM_OK)
        return fm_err_prefix(e, "linear %s", weight->name);
    dnnl_memory_desc_t smd;
    FM_DNN(dnnl_memory_desc_init_by_tag(&smd, 1, (dnnl_dims_t){ (dnnl_dim_t)(scratch ? scratch : 1) }, dnnl_u8,
                                        dnnl_a), e);
    FM_DNN(dnnl_memory_create(&l->m_scratch, &smd, d->engine, buf ? buf : DNNL_MEMORY_NONE), e);
    return FM_OK;
}

/* x operand: see fm_dnn_attach_x. */
static int attach_x(fm_linear *l, const float *x, int reuse, fm_err *e)
{
    return fm_dnn_attach_x(&l->x16, l->m_x, x, reuse, e);
}

int fm_linear_keeps_x(const fm_linear *l, const float *x) { return fm_bf16_copy_keeps(&l->x16, x); }

/* Run one of the layer's three matmul primitives, dst = src weights (+ bias
 * unless NULL), with the layer's scratchpad. */
static int matmul(fm_linear *l, dnnl_primitive_t p, dnnl_memory_t src, dnnl_memory_t weights, dnnl_memory_t dst,
                  dnnl_memory_t bias, fm_err *e)
{
    dnnl_exec_arg_t args[] = {
        { DNNL_ARG_SRC, src },
        { DNNL_ARG_WEIGHTS, weights },
        { DNNL_ARG_DST, dst },
        { DNNL_ARG_SCRATCHPAD, l->m_scratch },
        { DNNL_ARG_BIAS, bias },
    };
    return fm_dnn_exec(l->d, p, bias ? 5 : 4, args, e);
}

/* The forward with x attached: rounded into the layer's bf16 copy unless
 * `rounded` says the copy already holds it (fm_linear_forward_gelu). */
static int forward(fm_linear *l, const float *x, int rounded, float *y, fm_err *e)
{
    if (l->w16) /* the weights changed since the last forward (an optimiser step) */
        fm_f32_to_bf16_n(l->w16, l->weight->w.data, l->out * l->in);
    FM_TRY(attach_x(l, x, rounded, e));
    FM_DNN(dnnl_memory_set_data_handle(l->m_y, y), e);
    return matmul(l, l->fwd, l->m_x, l->m_wt, l->m_y, l->bias ? l->m_b : NULL, e);
}

static int forward_gelu(fm_linear *l, const float *h, float *x, float *y, fm_err *e)
{
    if (!l->x16.buf) {
        fm_gelu_forward(h, x, l->m * l->in);
        return forward(l, x, 0, y, e);
    }
    fm_gelu_forward_bf16(h, l->x16.buf, l->m * l->in);
    l->x16.of = x; /* the copy stands for x from now on (fm_linear_keeps_x) */
    return forward(l, x, 1, y, e);
}

/* db[j] = sum_i dy[i, j] for dy [m, n]: threads take blocks of columns and
 * stream down the rows, so each inner loop is a contiguous vector add.
 * With dy16 (not NULL, bf16) the same pass also rounds dy into dy16, which
 * saves a read of dy (6-8 MB per call in the DiT's MLP and attention input
 * projections); with h as well, dy is the product g[i, j] * gelu'(h[i, j])
 * of the rows of g, as fm_gelu_backward computes it
 * (fm_linear_backward_gelu). The blocks and the order of the sums are the
 * same in every variant, so the bias gradient has the same bits as the
 * separate passes. */
static void column_sum(const float *g, const float *h, int64_t m, int64_t n, float *db, uint16_t *dy16)
{
    enum { BLK = 64 };
    const int64_t nblk = (n + BLK - 1) / BLK;
#pragma omp parallel for schedule(static)
    for (int64_t jb = 0; jb < nblk; jb++) {
        const int64_t j0 = jb * BLK, nj = n - j0 < BLK ? n - j0 : BLK;
        float acc[BLK] = { 0 };
        for (int64_t i = 0; i < m; i++) {
            const float *row = g + i * n + j0;
            uint16_t *out = dy16 ? dy16 + i * n + j0 : NULL;
            if (h) {
                const float *hr = h + i * n + j0;
#pragma omp simd
                for (int64_t j = 0; j < nj; j++) {
                    const float d = row[j] * fm_gelu_gradf(hr[j]);
                    acc[j] += d;
                    out[j] = fm_bf16_round(d);
                }
            } else if (out) {
#pragma omp simd
                for (int64_t j = 0; j < nj; j++) {
                    acc[j] += row[j];
                    out[j] = fm_bf16_round(row[j]);
                }
            } else {
#pragma omp simd
                for (int64_t j = 0; j < nj; j++)
                    acc[j] += row[j];
            }
        }
        memcpy(db + j0, acc, (size_t)nj * sizeof(float));
    }
}

/* column_sum rounds dy too (one pass) under bf16, with a bias, from 512
 * output columns. At 256 (4 blocks of columns) its strided walk cost more than the
 * read it saves (cold caches, 2048 rows: 1024 columns 0.66 -> 0.43 ms, 768
 * 0.49 -> 0.37, 256 0.18 -> 0.23). */
static int fused_dy(const fm_linear *l) { return l->dy16 && l->bias && l->out >= 512; }

/* The matrix products of backward, dy's operand and the bias gradient
 * ready: parameter gradients first, since they are the last readers of x,
 * so that dx may overwrite it. */
static int products(fm_linear *l, float *dx, fm_err *e)
{
    FM_TRY(matmul(l, l->bwd_weights, l->m_dyt, l->m_x, l->m_dw, NULL, e));
    if (!dx)
        return FM_OK;
    FM_DNN(dnnl_memory_set_data_handle(l->m_dx, dx), e);
    return matmul(l, l->bwd_data, l->m_dy, l->m_w, l->m_dx, NULL, e);
}

static int backward(fm_linear *l, const float *x, const float *dy, float *dx, fm_err *e)
{
    FM_TRY(attach_x(l, x, 1, e));
    if (fused_dy(l)) {
        column_sum(dy, NULL, l->m, l->out, l->bias->g.data, l->dy16);
        return products(l, dx, e);
    }
    if (l->dy16) {
        fm_f32_to_bf16_n(l->dy16, dy, l->m * l->out);
    } else {
        FM_DNN(dnnl_memory_set_data_handle(l->m_dyt, (void *)dy), e);
        FM_DNN(dnnl_memory_set_data_handle(l->m_dy, (void *)dy), e);
    }
    if (l->bias)
        column_sum(dy, NULL, l->m, l->out, l->bias->g.data, NULL);
    return products(l, dx, e);
}

static int backward_gelu(fm_linear *l, const float *x, const float *h, float *dg, float *dx, fm_err *e)
{
    if (!fused_dy(l)) {
        fm_gelu_backward(h, dg, dg, l->m * l->out);
        return backward(l, x, dg, dx, e);
    }
    FM_TRY(attach_x(l, x, 1, e));
    column_sum(dg, h, l->m, l->out, l->bias->g.data, l->dy16);
    return products(l, dx, e);
}

int fm_linear_forward(fm_linear *l, const float *x, float *y, fm_err *e)
{
    FM_PROF_SITE_CALL(l->prof, FM_PROF_FWD, fm_linear_flops_fwd(l), forward(l, x, 0, y, e));
    return FM_OK;
}

int fm_linear_forward_gelu(fm_linear *l, const float *h, float *x, float *y, fm_err *e)
{
    FM_PROF_SITE_CALL(l->prof, FM_PROF_FWD, fm_linear_flops_fwd(l), forward_gelu(l, h, x, y, e));
    return FM_OK;
}

int fm_linear_backward(fm_linear *l, const float *x, const float *dy, float *dx, fm_err *e)
{
    FM_PROF_SITE_CALL(l->prof, FM_PROF_BWD, fm_linear_flops_bwd(l, dx != NULL), backward(l, x, dy, dx, e));
    return FM_OK;
}

int fm_linear_backward_gelu(fm_linear *l, const float *x, const float *h, float *dg, float *dx, fm_err *e)
{
    FM_PROF_SITE_CALL(l->prof, FM_PROF_BWD, fm_linear_flops_bwd(l, dx != NULL), backward_gelu(l, x, h, dg, dx, e));
    return FM_OK;
}

double fm_linear_flops_fwd(const fm_linear *l)
{
    return 2.0 * (double)l->m * (double)l->in * (double)l->out + (l->bias ? (double)l->m * (double)l->out : 0);
}

double fm_linear_flops_bwd(const fm_linear *l, int with_dx)
{
    double mm = 2.0 * (double)l->m * (double)l->in * (double)l->out;
    return mm * (with_dx ? 2 : 1) + (l->bias ? (double)l->m * (double)l->out : 0);
}

void fm_linear_free(fm_linear *l)
{
    dnnl_primitive_t prims[] = { l->fwd, l->bwd_data, l->bwd_weights };
    for (size_t i = 0; i < sizeof prims / sizeof *prims; i++)
        if (prims[i])
            dnnl_primitive_destroy(prims[i]);
    dnnl_memory_t mems[] = { l->m_x, l->m_y, l->m_dy, l->m_dx, l->m_dyt, l->m_wt, l->m_w, l->m_dw, l->m_b, l->m_scratch };
    for (size_t i = 0; i < sizeof mems / sizeof *mems; i++)
        if (mems[i])
            dnnl_memory_destroy(mems[i]);
    memset(l, 0, sizeof *l);
}
