/* upconv.c - nearest x2 upsampling + 3x3 convolution as four 2x2 sub-pixel
 * convolutions on oneDNN (see upconv.h). */
#include "fm/upconv.h"

#include <math.h>
#include <omp.h>
#include <string.h>

#include "fm/log.h"

#define NP FM_UPCONV_PARITIES

/* ---- the fold: which 3x3 taps make each 2x2 tap -----------------------------
 * Along one axis, output parity q in {0, 1} reads x at offsets q - 1 + t for
 * taps t in {0, 1}; tap t sums these of the 3 taps of W:
 *   q = 0: t = 0 <- {0},    t = 1 <- {1, 2}
 *   q = 1: t = 0 <- {0, 1}, t = 1 <- {2}
 * A 2x2 tap (a, b) of parity (py, px) is the row fold (py, a) of the column
 * fold (px, b). The transpose (gradients) sends each 2x2 tap back to every
 * 3x3 tap it summed. */

/* W [Cout, Cin, 3, 3] -> wf[p] = W'_p [Cout, Cin, 2, 2] and wt[p], the same
 * with both taps flipped (wt[p][o][c][a][b] = W'_p[o][c][1-a][1-b]), which
 * read as IOHW is the weight of the transposed convolution. */
static void fold(const float *W, float *wf, float *wt, int64_t cout, int64_t cin)
{
    const int64_t m = cout * cin, ps = m * 4;  // (o, c) pairs; elements per parity
#pragma omp parallel for schedule(static) if (m >= 4096)
    for (int64_t k = 0; k < m; k++) {
        const float *w = W + k * 9;  // [3][3]
        float r[2][2][3];            // r[py][a][kx]: the rows folded for parity py, tap a
        for (int kx = 0; kx < 3; kx++) {
            r[0][0][kx] = w[kx];
            r[0][1][kx] = w[3 + kx] + w[6 + kx];
            r[1][0][kx] = w[kx] + w[3 + kx];
            r[1][1][kx] = w[6 + kx];
        }
        for (int py = 0; py < 2; py++)
            for (int a = 0; a < 2; a++) {
                const float *v = r[py][a];
                const float f[2][2] = { { v[0], v[1] + v[2] }, { v[0] + v[1], v[2] } };  // [px][b]
                for (int px = 0; px < 2; px++)
                    for (int b = 0; b < 2; b++) {
                        const int64_t p = 2 * py + px;
                        wf[p * ps + k * 4 + a * 2 + b] = f[px][b];
                        wt[p * ps + k * 4 + (1 - a) * 2 + (1 - b)] = f[px][b];
                    }
            }
    }
}

/* The transpose of fold: dW [Cout, Cin, 3, 3] = the gradients dwf[p]
 * [Cout, Cin, 2, 2] of the four parities, each 2x2 tap added to the 3x3 taps
 * it was folded from. */
static void unfold(const float *dwf, float *dW, int64_t cout, int64_t cin)
{
    const int64_t m = cout * cin, ps = m * 4;
#pragma omp parallel for schedule(static) if (m >= 4096)
    for (int64_t k = 0; k < m; k++) {
        float c[2][2][3];  // c[py][a][kx]: the column taps unfolded, per row parity and tap
        for (int py = 0; py < 2; py++)
            for (int a = 0; a < 2; a++) {
                const float *g0 = dwf + (2 * py) * ps + k * 4 + a * 2;  // parity (py, 0), taps b
                const float *g1 = g0 + ps;                              // parity (py, 1)
                c[py][a][0] = g0[0] + g1[0];
                c[py][a][1] = g0[1] + g1[0];
                c[py][a][2] = g0[1] + g1[1];
            }
        float *o = dW + k * 9;
        for (int kx = 0; kx < 3; kx++) {
            o[kx] = c[0][0][kx] + c[1][0][kx];
            o[3 + kx] = c[0][1][kx] + c[1][0][kx];
            o[6 + kx] = c[0][1][kx] + c[1][1][kx];
        }
    }
}

/* ---- parity (de)interleave ---------------------------------------------- */

/* Pixel (2i+py, 2j+px) of a map [N, 2H, 2W, C] is pixel (i, j) of its parity
 * p = 2 py + px, stored as part[p] = part + p * N*H*W*C, [N, H, W, C] each.
 * copy_parities walks the full map once, in order (rows = N*H). */

/* Offset of pixel (r = n*H + i, py, j, px) in the full map and in the parts. */
static inline int64_t full_at(int64_t r, int py, int64_t j, int px, int64_t w, int64_t c)
{
    return (((2 * r + py) * w + j) * 2 + px) * c;
}

static inline int64_t part_at(int64_t r, int py, int64_t j, int px, int64_t rows, int64_t w, int64_t c)
{
    return ((2 * py + px) * rows * w + r * w + j) * c;
}

/* Between a full map [N, 2H, 2W, C] and its four parities [4, N, H, W, C]:
 * to_full: dst is the full map and src the parities; else the other way. */
static void copy_parities(float *dst, const float *src, int to_full, int64_t rows, int64_t w, int64_t c)
{
    const size_t bytes = (size_t)c * sizeof(float);
#pragma omp parallel for schedule(static) if (rows * w * c >= 16384)
    for (int64_t r = 0; r < rows; r++)
        for (int py = 0; py < 2; py++)
            for (int64_t j = 0; j < w; j++)
                for (int px = 0; px < 2; px++) {
                    const int64_t f = full_at(r, py, j, px, w, c), q = part_at(r, py, j, px, rows, w, c);
                    memcpy(dst + (to_full ? f : q), src + (to_full ? q : f), bytes);
                }
}

/* ---- set-up ---------------------------------------------------------------- */

/* The primitive descriptors live only during set-up. */
typedef struct upconv_pds {
    dnnl_primitive_desc_t fwd[NP], bwd_data[NP], bwd_weights[NP];
} upconv_pds;

/* The memory for layout md of a plain buffer `plain`: plain itself when md
 * is its layout, else a new arena buffer and a reorder primitive
 * (to_plain: md -> plain, else plain -> md; reorder NULL: none, only its
 * scratchpad counted). */
static int internal_mem(fm_upconv *l, fm_arena *a, const dnnl_memory_desc_t *md, dnnl_memory_t plain, int to_plain,
                        const_dnnl_primitive_attr_t attr, dnnl_memory_t *out, dnnl_primitive_t *reorder,
                        size_t *scratch, fm_err *e)
{
    const dnnl_memory_desc_t *plain_md = NULL;
    FM_DNN(dnnl_memory_get_memory_desc(plain, &plain_md), e);
    if (dnnl_memory_desc_equal(md, plain_md)) {
        *out = plain;
        return FM_OK;
    }
    void *buf;
    FM_TRY(fm_arena_take(a, dnnl_memory_desc_get_size(md), 1, &buf, "weights buffer", e));
    FM_DNN(dnnl_memory_create(out, md, l->d->engine, buf), e);
    return fm_dnn_make_reorder(l->d, to_plain ? md : plain_md, to_plain ? plain_md : md, attr, reorder, scratch, e);
}

/* A primitive descriptor for op_desc: oneDNN's "jit" implementation for
 * the ISA of its first choice when it offers one (faster than its default
 * brgconv on these small maps, see upconv.h), else that first choice. */
static int create_pd(dnnl_primitive_desc_t *out, const_dnnl_op_desc_t op_desc, const_dnnl_primitive_attr_t attr,
                     dnnl_engine_t engine, fm_err *e)
{
    dnnl_primitive_desc_iterator_t it;
    FM_DNN(dnnl_primitive_desc_iterator_create(&it, op_desc, attr, engine, NULL), e);
    dnnl_primitive_desc_t first = dnnl_primitive_desc_iterator_fetch(it), jit = NULL;
    const char *isa = first ? strchr(fm_dnn_impl_name(first), ':') : NULL;  // e.g. ":avx512_core"
    if (isa && strncmp(fm_dnn_impl_name(first), "jit", 3))
        while (!jit && dnnl_primitive_desc_iterator_next(it) == dnnl_success) {
            dnnl_primitive_desc_t pd = dnnl_primitive_desc_iterator_fetch(it);
            const char *name = pd ? fm_dnn_impl_name(pd) : "";
            if (!strncmp(name, "jit", 3) && strchr(name, ':') && !strcmp(strchr(name, ':'), isa))
                jit = pd;
            else if (pd)
                dnnl_primitive_desc_destroy(pd);
        }
    dnnl_primitive_desc_iterator_destroy(it);
    if (jit)
        dnnl_primitive_desc_destroy(first);
    *out = jit ? jit : first;
    if (!*out)
        return fm_fail(e, FM_ERR_INTERNAL, "no convolution implementation");
    return FM_OK;
}

static int create_pds(fm_upconv *l, upconv_pds *pd, const_dnnl_primitive_attr_t attr,
                      const_dnnl_primitive_attr_t attr_sum, fm_err *e)
{
    const dnnl_dims_t x_dims = { l->n, l->cin, l->h, l->w };
    const dnnl_dims_t y_dims = { l->n, l->cout, l->h, l->w };  // one parity
    const dnnl_dims_t w_dims = { l->cout, l->cin, 2, 2 };
    const dnnl_dims_t wt_dims = { l->cin, l->cout, 2, 2 };
    const dnnl_dims_t b_dims = { l->cout };
    const dnnl_dims_t strides = { 1, 1 };
    const dnnl_data_type_t op = fm_dnn_op_type(l->d);
    dnnl_memory_desc_t x_md, yp_md, dyp_md, dx_md, w_md, w32_md, wt_md, b_md;
    FM_DNN(dnnl_memory_desc_init_by_tag(&x_md, 4, x_dims, op, dnnl_nhwc), e);
    FM_DNN(dnnl_memory_desc_init_by_tag(&yp_md, 4, y_dims, dnnl_f32, dnnl_nhwc), e);
    FM_DNN(dnnl_memory_desc_init_by_tag(&dyp_md, 4, y_dims, op, dnnl_nhwc), e);
    FM_DNN(dnnl_memory_desc_init_by_tag(&dx_md, 4, x_dims, dnnl_f32, dnnl_nhwc), e);
    FM_DNN(dnnl_memory_desc_init_by_tag(&w_md, 4, w_dims, op, dnnl_format_tag_any), e);
    FM_DNN(dnnl_memory_desc_init_by_tag(&w32_md, 4, w_dims, dnnl_f32, dnnl_format_tag_any), e);
    FM_DNN(dnnl_memory_desc_init_by_tag(&wt_md, 4, wt_dims, op, dnnl_format_tag_any), e);
    FM_DNN(dnnl_memory_desc_init_by_tag(&b_md, 1, b_dims, dnnl_f32, dnnl_x), e);
    const dnnl_memory_desc_t *bias = l->bias ? &b_md : NULL;

    for (int p = 0; p < NP; p++) {
        const int py = p / 2, px = p % 2;
        /* parity 0 reads rows i-1, i (padding 1 before), parity 1 rows i, i+1
         * (padding 1 after); the transposed convolution swaps the two */
        const dnnl_dims_t pad_l = { 1 - py, 1 - px }, pad_r = { py, px };
        dnnl_convolution_desc_t cd;
        FM_DNN(dnnl_convolution_forward_desc_init(&cd, dnnl_forward_training, dnnl_convolution_direct, &x_md,
                                                  &w_md, bias, &yp_md, strides, pad_l, pad_r), e);
        FM_TRY(create_pd(&pd->fwd[p], &cd, attr, l->d->engine, e));
        if (!l->wb.xp) {
            FM_DNN(dnnl_convolution_backward_weights_desc_init(&cd, dnnl_convolution_direct, &x_md, &w32_md,
                                                               bias, &dyp_md, strides, pad_l, pad_r), e);
            FM_DNN(dnnl_primitive_desc_create(&pd->bwd_weights[p], &cd, attr, l->d->engine, pd->fwd[p]), e);
        }
        FM_DNN(dnnl_convolution_forward_desc_init(&cd, dnnl_forward_inference, dnnl_convolution_direct, &dyp_md,
                                                  &wt_md, NULL, &dx_md, strides, pad_r, pad_l), e);
        FM_TRY(create_pd(&pd->bwd_data[p], &cd, p ? attr_sum : attr, l->d->engine, e));
    }
    return FM_OK;
}

/* Under bf16, take fm_wgrad16 for dW'_p when it applies: set l->wg and the
 * pair-packed buffers. */
static int setup_wgrad16(fm_upconv *l, fm_arena *a, fm_err *e)
{
    for (int p = 0; p < NP; p++)
        l->wg[p] = (fm_wgrad16){ .n = l->n, .h = l->h, .w = l->w, .cin = l->cin, .ho = l->h, .wo = l->w,
                                 .cout = l->cout, .kh = 2, .kw = 2, .stride = 1, .pad_t = 1 - p / 2,
                                 .pad_l = 1 - p % 2 };
    if (!l->d->bf16 || !fm_wgrad16_usable(&l->wg[0]))
        return FM_OK;
    return fm_wgrad16_bufs_init(&l->wb, a, &l->wg[0], NP, l->bias != NULL, e);
}

/* On a measuring arena the primitive descriptors fix every size; the
 * primitives themselves (and the reorders) are not created. */
static int setup(fm_upconv *l, fm_arena *a, upconv_pds *pd, dnnl_primitive_attr_t attr,
                 dnnl_primitive_attr_t attr_sum, const char *name, fm_err *e)
{
    const int prims = !fm_arena_measuring(a);
    FM_TRY(setup_wgrad16(l, a, e));
    FM_DNN(dnnl_primitive_attr_set_scratchpad_mode(attr, dnnl_scratchpad_mode_user), e);
    FM_DNN(dnnl_primitive_attr_set_scratchpad_mode(attr_sum, dnnl_scratchpad_mode_user), e);
    dnnl_post_ops_t po;
    FM_DNN(dnnl_post_ops_create(&po), e);
    dnnl_status_t st = dnnl_post_ops_append_sum(po, 1.0f);
    if (st == dnnl_success)
        st = dnnl_primitive_attr_set_post_ops(attr_sum, po);
    dnnl_post_ops_destroy(po);
    FM_DNN(st, e);
    if (create_pds(l, pd, attr, attr_sum, e) != FM_OK)
        return fm_err_prefix(e, "[%lld, %lld, %lld, %lld] -> %lld", (long long)l->n, (long long)l->h,
                             (long long)l->w, (long long)l->cin, (long long)l->cout);
    fm_debug("upconv %s: forward %s, backward-data %s, backward-weights %s", name, fm_dnn_impl_name(pd->fwd[0]),
             fm_dnn_impl_name(pd->bwd_data[0]), l->wb.xp ? "wgrad16" : fm_dnn_impl_name(pd->bwd_weights[0]));

    const int64_t nx = l->n * l->h * l->w * l->cin, ny = l->n * l->h * l->w * l->cout;
    /* the parity buffers serve forward (outputs) and backward (gradients) */
    const size_t wbytes = (size_t)(NP * l->cout * l->cin * 4) * sizeof(float);
    void *wf, *wt, *dwf, *yp;
    FM_TRY(fm_arena_take(a, wbytes, 1, &wf, "folded weights", e));
    FM_TRY(fm_arena_take(a, wbytes, 1, &wt, "transposed weights", e));
    FM_TRY(fm_arena_take(a, wbytes, 1, &dwf, "folded weight gradients", e));
    FM_TRY(fm_arena_take(a, (size_t)(NP * ny), sizeof(float), &yp, "parity buffers", e));
    l->wf = wf, l->wt = wt, l->dwf = dwf, l->yp = yp, l->dyp = yp;

    const dnnl_dims_t x_dims = { l->n, l->cin, l->h, l->w };
    const dnnl_dims_t y_dims = { l->n, l->cout, l->h, l->w };
    const dnnl_dims_t w_dims = { l->cout, l->cin, 2, 2 };
    const dnnl_dims_t wt_dims = { l->cin, l->cout, 2, 2 };
    const dnnl_dims_t b_dims = { l->cout };
    FM_TRY(fm_dnn_mem(l->d, &l->m_dx, 4, x_dims, dnnl_nhwc, e));
    for (int p = 0; p < NP; p++)
        FM_TRY(fm_dnn_mem_dt(l->d, &l->m_yp[p], 4, y_dims, dnnl_f32, dnnl_nhwc, l->yp + p * ny, e));
    if (l->d->bf16) { /* the operands' bf16 copies, at fixed addresses */
        void *x16, *dy16;
        FM_TRY(fm_arena_take(a, (size_t)nx, 2, &x16, "bf16 operand buffers", e));
        FM_TRY(fm_arena_take(a, (size_t)(NP * ny), 2, &dy16, "bf16 operand buffers", e));
        l->x16 = (fm_bf16_copy){ .buf = x16, .n = nx };
        l->dyp16 = dy16;
        FM_TRY(fm_dnn_mem_dt(l->d, &l->m_x, 4, x_dims, dnnl_bf16, dnnl_nhwc, x16, e));
        for (int p = 0; p < NP; p++)
            FM_TRY(fm_dnn_mem_dt(l->d, &l->m_dyp[p], 4, y_dims, dnnl_bf16, dnnl_nhwc, l->dyp16 + p * ny, e));
    } else {
        FM_TRY(fm_dnn_mem(l->d, &l->m_x, 4, x_dims, dnnl_nhwc, e));
        for (int p = 0; p < NP; p++)
            FM_TRY(fm_dnn_mem_dt(l->d, &l->m_dyp[p], 4, y_dims, dnnl_f32, dnnl_nhwc, l->dyp + p * ny, e));
    }
    if (l->bias) {
        void *db4;
        FM_TRY(fm_arena_take(a, (size_t)(NP * l->cout), sizeof(float), &db4, "bias gradients", e));
        l->db4 = db4;
        FM_TRY(fm_dnn_mem_dt(l->d, &l->m_b, 1, b_dims, dnnl_f32, dnnl_x, l->bias->w.data, e));
        for (int p = 0; p < NP; p++)
            FM_TRY(fm_dnn_mem_dt(l->d, &l->m_db[p], 1, b_dims, dnnl_f32, dnnl_x, l->db4 + p * l->cout, e));
    }

    /* per parity: plain folded weights and their primitives' layouts */
    size_t scratch = 0;
    const int64_t ps = l->cout * l->cin * 4;
    for (int p = 0; p < NP; p++) {
        fm_dnn_grow_scratch(&scratch, pd->fwd[p]);
        fm_dnn_grow_scratch(&scratch, pd->bwd_data[p]);
        if (prims) {
            FM_DNN(dnnl_primitive_create(&l->fwd[p], pd->fwd[p]), e);
            FM_DNN(dnnl_primitive_create(&l->bwd_data[p], pd->bwd_data[p]), e);
        }
        if (pd->bwd_weights[p]) {
            fm_dnn_grow_scratch(&scratch, pd->bwd_weights[p]);
            if (prims)
                FM_DNN(dnnl_primitive_create(&l->bwd_weights[p], pd->bwd_weights[p]), e);
        }
        FM_TRY(fm_dnn_mem_dt(l->d, &l->m_w[p], 4, w_dims, dnnl_f32, dnnl_oihw, l->wf + p * ps, e));
        /* wt[p] is laid out [Cout][Cin][2][2]: IOHW of the transposed weights */
        FM_TRY(fm_dnn_mem_dt(l->d, &l->m_wt[p], 4, wt_dims, dnnl_f32, dnnl_iohw, l->wt + p * ps, e));
        FM_TRY(fm_dnn_mem_dt(l->d, &l->m_dw[p], 4, w_dims, dnnl_f32, dnnl_oihw, l->dwf + p * ps, e));
        FM_TRY(internal_mem(l, a, dnnl_primitive_desc_query_md(pd->fwd[p], dnnl_query_weights_md, 0), l->m_w[p], 0,
                            attr, &l->m_w_int[p], prims ? &l->w_reorder[p] : NULL, &scratch, e));
        FM_TRY(internal_mem(l, a, dnnl_primitive_desc_query_md(pd->bwd_data[p], dnnl_query_weights_md, 0),
                            l->m_wt[p], 0, attr, &l->m_wt_int[p], prims ? &l->wt_reorder[p] : NULL, &scratch, e));
        if (pd->bwd_weights[p])
            FM_TRY(internal_mem(l, a,
                                dnnl_primitive_desc_query_md(pd->bwd_weights[p], dnnl_query_diff_weights_md, 0),
                                l->m_dw[p], 1, attr, &l->m_dw_int[p], prims ? &l->dw_reorder[p] : NULL, &scratch, e));
    }

    l->scratch_bytes = scratch;
    if (scratch > 0) {
        void *buf;
        FM_TRY(fm_arena_take(a, scratch, 1, &buf, "scratchpad", e));
        const dnnl_dims_t dims = { (int64_t)scratch };
        FM_TRY(fm_dnn_mem_dt(l->d, &l->m_scratch, 1, dims, dnnl_u8, dnnl_x, buf, e));
    }
    return FM_OK;
}

int fm_upconv_init(fm_upconv *l, fm_dnn *d, fm_params *p, fm_arena *a, const char *name, int64_t cin,
                   int64_t cout, int bias, int64_t n, int64_t h, int64_t w, fm_err *e)
{
    memset(l, 0, sizeof *l);
    if (cin < 1 || cout < 1 || n < 1 || h < 1 || w < 1)
        return fm_fail(e, FM_ERR_USAGE, "upconv %s: bad sizes (cin %lld, cout %lld, input %lldx%lldx%lld)", name,
                       (long long)cin, (long long)cout, (long long)n, (long long)h, (long long)w);
    l->d = d;
    l->n = n, l->h = h, l->w = w, l->cin = cin, l->cout = cout;

    const int64_t wshape[4] = { cout, cin, 3, 3 };
    FM_TRY(fm_params_add(p, &l->weight, 4, wshape, e, "%s.weight", name));
    float bound = 1.0f / sqrtf((float)(cin * 9));
    fm_param_init_uniform(p, l->weight, bound);
    if (bias) {
        FM_TRY(fm_params_add(p, &l->bias, 1, &cout, e, "%s.bias", name));
        fm_param_init_uniform(p, l->bias, bound);
    }

    upconv_pds pd = { 0 };
    dnnl_primitive_attr_t attr = NULL, attr_sum = NULL;
    int rc;
    dnnl_status_t st = dnnl_primitive_attr_create(&attr);
    if (st == dnnl_success)
        st = dnnl_primitive_attr_create(&attr_sum);
    if (st != dnnl_success)
        rc = fm_fail(e, FM_ERR_INTERNAL, "upconv %s: cannot create primitive attributes: %s", name,
                     dnnl_status2str(st));
    else
        rc = setup(l, a, &pd, attr, attr_sum, name, e);
    for (int q = 0; q < NP; q++) {
        dnnl_primitive_desc_t pds[3] = { pd.fwd[q], pd.bwd_data[q], pd.bwd_weights[q] };
        for (int k = 0; k < 3; k++)
            if (pds[k])
                dnnl_primitive_desc_destroy(pds[k]);
    }
    if (attr)
        dnnl_primitive_attr_destroy(attr);
    if (attr_sum)
        dnnl_primitive_attr_destroy(attr_sum);
    if (rc != FM_OK) {
        fm_err_prefix(e, "upconv %s", name);
        fm_upconv_free(l);
    }
    return rc;
}

/* ---- forward and backward ------------------------------------------------ */

/* Execute p with args plus the layer's scratchpad (args has room for it). */
static int run(fm_upconv *l, dnnl_primitive_t p, dnnl_exec_arg_t *args, int nargs, fm_err *e)
{
    return fm_dnn_exec_sp(l->d, p, l->m_scratch, nargs, args, e);
}

static int reorder(fm_upconv *l, dnnl_primitive_t p, dnnl_memory_t from, dnnl_memory_t to, fm_err *e)
{
    return fm_dnn_reorder(l->d, p, l->m_scratch, from, to, e);
}

/* x operand: see fm_dnn_attach_x. */
static int attach_x(fm_upconv *l, const float *x, int reuse, fm_err *e)
{
    return fm_dnn_attach_x(&l->x16, l->m_x, x, reuse, e);
}

static int forward(fm_upconv *l, const float *x, float *y, fm_err *e)
{
    fold(l->weight->w.data, l->wf, l->wt, l->cout, l->cin);
    for (int p = 0; p < NP; p++)
        FM_TRY(reorder(l, l->w_reorder[p], l->m_w[p], l->m_w_int[p], e));
    FM_TRY(attach_x(l, x, 0, e));
    for (int p = 0; p < NP; p++) {
        dnnl_exec_arg_t args[5] = {
            { DNNL_ARG_SRC, l->m_x },
            { DNNL_ARG_WEIGHTS, l->m_w_int[p] },
            { DNNL_ARG_DST, l->m_yp[p] },
        };
        int nargs = 3;
        if (l->m_b)
            args[nargs++] = (dnnl_exec_arg_t){ DNNL_ARG_BIAS, l->m_b };
        FM_TRY(run(l, l->fwd[p], args, nargs, e));  // yp[p] [N, H, W, Cout]
    }
    copy_parities(y, l->yp, 1, l->n * l->h, l->w, l->cout);  // y [N, 2H, 2W, Cout]
    return FM_OK;
}

static int backward(fm_upconv *l, const float *x, const float *dy, float *dx, fm_err *e)
{
    const int64_t ny = l->n * l->h * l->w * l->cout;
    FM_TRY(attach_x(l, x, 1, e));
    if (dx) {
        for (int p = 0; p < NP; p++)
            FM_TRY(reorder(l, l->wt_reorder[p], l->m_wt[p], l->m_wt_int[p], e));
        FM_DNN(dnnl_memory_set_data_handle(l->m_dx, dx), e);
    }
    copy_parities(l->dyp, dy, 0, l->n * l->h, l->w, l->cout);  // dyp[p] [N, H, W, Cout]
    if (l->wb.xp) { /* the pair-packed and the plain bf16 dy of each parity, and the bias gradient, in one pass */
        float *db = l->bias ? l->bias->g.data : NULL;
        if (db)
            memset(db, 0, (size_t)l->cout * sizeof(float));
        for (int p = 0; p < NP; p++)
            fm_wgrad16_pack_f32(l->wb.dyp + p * l->wb.dy_len, l->dyp16 + p * ny, l->dyp + p * ny, l->n,
                                l->h * l->w, l->cout, db, l->wb.part, l->wb.threads);
    }
    else if (l->dyp16)
        fm_f32_to_bf16_n(l->dyp16, l->dyp, NP * ny);
    for (int p = 0; p < NP; p++) {
        if (dx) { /* parity 0 writes dx, the others add to it */
            dnnl_exec_arg_t args[4] = {
                { DNNL_ARG_SRC, l->m_dyp[p] },
                { DNNL_ARG_WEIGHTS, l->m_wt_int[p] },
                { DNNL_ARG_DST, l->m_dx },
            };
            FM_TRY(run(l, l->bwd_data[p], args, 3, e));
        }
        if (l->wb.xp)
            continue;
        dnnl_exec_arg_t args[5] = {
            { DNNL_ARG_SRC, l->m_x },
            { DNNL_ARG_DIFF_DST, l->m_dyp[p] },
            { DNNL_ARG_DIFF_WEIGHTS, l->m_dw_int[p] },
        };
        int nargs = 3;
        if (l->m_db[p])
            args[nargs++] = (dnnl_exec_arg_t){ DNNL_ARG_DIFF_BIAS, l->m_db[p] };
        FM_TRY(run(l, l->bwd_weights[p], args, nargs, e));
        FM_TRY(reorder(l, l->dw_reorder[p], l->m_dw_int[p], l->m_dw[p], e));
    }
    if (l->wb.xp) {
        fm_wgrad16_pack_bf16(l->wb.xp, l->x16.buf, l->n, l->h * l->w, l->cin);
        for (int p = 0; p < NP; p++)
            fm_wgrad16_run(&l->wg[p], l->wb.xp, l->wb.dyp + p * l->wb.dy_len, l->dwf + p * l->cout * l->cin * 4);
    }
    unfold(l->dwf, l->weight->g.data, l->cout, l->cin);
    if (l->bias && !l->wb.xp) {
        float *db = l->bias->g.data;
        const float *b4 = l->db4;
        const int64_t c = l->cout;
        for (int64_t k = 0; k < c; k++)
            db[k] = (b4[k] + b4[c + k]) + (b4[2 * c + k] + b4[3 * c + k]);
    }
    return FM_OK;
}

int fm_upconv_forward(fm_upconv *l, const float *x, float *y, fm_err *e)
{
    FM_PROF_SITE_CALL(l->prof, FM_PROF_FWD, fm_upconv_flops_fwd(l), forward(l, x, y, e));
    return FM_OK;
}

int fm_upconv_backward(fm_upconv *l, const float *x, const float *dy, float *dx, fm_err *e)
{
    FM_PROF_SITE_CALL(l->prof, FM_PROF_BWD, fm_upconv_flops_bwd(l, dx != NULL), backward(l, x, dy, dx, e));
    return FM_OK;
}

double fm_upconv_flops_fwd(const fm_upconv *l)
{
    return NP * 2.0 * (double)l->n * (double)l->h * (double)l->w * (double)l->cout * (double)l->cin * 4.0;
}

double fm_upconv_flops_bwd(const fm_upconv *l, int with_dx)
{
    return (with_dx ? 2.0 : 1.0) * fm_upconv_flops_fwd(l);
}

int fm_upconv_arena_bytes(fm_dnn *d, int64_t cin, int64_t cout, int bias, int64_t n, int64_t h, int64_t w,
                          size_t *bytes, fm_err *e)
{
    fm_params p;
    fm_arena a;
    fm_upconv l;
    FM_TRY(fm_params_init_count(&p, e));
    int rc = fm_arena_init(&a, FM_ARENA_MEASURE, e);
    if (rc == FM_OK)
        rc = fm_upconv_init(&l, d, &p, &a, "upconv", cin, cout, bias, n, h, w, e);
    if (rc == FM_OK)
        fm_upconv_free(&l);
    *bytes = a.peak;
    fm_arena_free(&a);
    fm_params_free(&p);
    return rc;
}

void fm_upconv_free(fm_upconv *l)
{
    for (int p = 0; p < NP; p++) {
        dnnl_primitive_t prims[] = { l->fwd[p], l->bwd_data[p], l->bwd_weights[p],
                                     l->w_reorder[p], l->wt_reorder[p], l->dw_reorder[p] };
        for (size_t i = 0; i < sizeof prims / sizeof *prims; i++)
            if (prims[i])
                dnnl_primitive_destroy(prims[i]);
        /* the internal weight memories may alias the plain ones */
        if (l->m_w_int[p] && l->m_w_int[p] != l->m_w[p])
            dnnl_memory_destroy(l->m_w_int[p]);
        if (l->m_wt_int[p] && l->m_wt_int[p] != l->m_wt[p])
            dnnl_memory_destroy(l->m_wt_int[p]);
        if (l->m_dw_int[p] && l->m_dw_int[p] != l->m_dw[p])
            dnnl_memory_destroy(l->m_dw_int[p]);
        dnnl_memory_t mems[] = { l->m_w[p], l->m_wt[p], l->m_dw[p], l->m_db[p], l->m_yp[p], l->m_dyp[p] };
        for (size_t i = 0; i < sizeof mems / sizeof *mems; i++)
            if (mems[i])
                dnnl_memory_destroy(mems[i]);
    }
    dnnl_memory_t mems[] = { l->m_x, l->m_dx, l->m_b, l->m_scratch };
    for (size_t i = 0; i < sizeof mems / sizeof *mems; i++)
        if (mems[i])
            dnnl_memory_destroy(mems[i]);
    memset(l, 0, sizeof *l);
}
