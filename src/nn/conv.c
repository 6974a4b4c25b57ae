/* conv.c - 2-D convolution forward and backward on oneDNN primitives. */
#include "fm/conv.h"

#include <math.h>
#include <string.h>

#include "fm/log.h"
#include "fm/tensor.h"

int64_t fm_conv2d_out_hw(int64_t in, int64_t k, int64_t stride, int64_t pad)
{
    int64_t span = in + 2 * pad - k;
    return span < 0 ? 0 : span / stride + 1;
}

/* The primitive descriptors live only during set-up. */
typedef struct conv_pds {
    dnnl_primitive_desc_t fwd, bwd_data, bwd_weights;
} conv_pds;

/* A memory object for md: `same` itself when md equals same's descriptor,
 * otherwise a new object backed by a fresh arena buffer. */
static int mem_for(fm_conv2d *l, fm_arena *a, const dnnl_memory_desc_t *md, dnnl_memory_t same,
                   dnnl_memory_t *out, const char *what, fm_err *e)
{
    const dnnl_memory_desc_t *same_md = NULL;
    FM_DNN(dnnl_memory_get_memory_desc(same, &same_md), e);
    if (dnnl_memory_desc_equal(md, same_md)) {
        *out = same;
        return FM_OK;
    }
    void *buf;
    FM_TRY(fm_arena_take(a, dnnl_memory_desc_get_size(md), 1, &buf, what, e));
    FM_DNN(dnnl_memory_create(out, md, l->d->engine, buf), e);
    return FM_OK;
}

static int create_pds(fm_conv2d *l, conv_pds *pd, const_dnnl_primitive_attr_t attr, fm_err *e)
{
    const dnnl_dims_t src_dims = { l->n, l->cin, l->h, l->w };
    const dnnl_dims_t w_dims = { l->cout, l->cin, l->k, l->k };
    const dnnl_dims_t b_dims = { l->cout };
    const dnnl_dims_t dst_dims = { l->n, l->cout, l->ho, l->wo };
    const dnnl_dims_t strides = { l->stride, l->stride };
    const dnnl_dims_t pad_l = { l->pad, l->pad };
    /* right padding that makes the output exactly ho x wo (never negative;
     * anything between this and pad gives the same floor division) */
    int64_t prh = (l->ho - 1) * l->stride + l->k - l->h - l->pad;
    int64_t prw = (l->wo - 1) * l->stride + l->k - l->w - l->pad;
    const dnnl_dims_t pad_r = { prh > 0 ? prh : 0, prw > 0 ? prw : 0 };

    /* operands (src, weights, dy) in the operand type; outputs (dst, dx, dW,
     * db) and the bias always fp32 */
    const dnnl_data_type_t op = fm_dnn_op_type(l->d);
    dnnl_memory_desc_t src_md, src32_md, w_md, w32_md, b_md, dst32_md, dst_op_md;
    FM_DNN(dnnl_memory_desc_init_by_tag(&src_md, 4, src_dims, op, dnnl_nhwc), e);
    FM_DNN(dnnl_memory_desc_init_by_tag(&src32_md, 4, src_dims, dnnl_f32, dnnl_nhwc), e);
    FM_DNN(dnnl_memory_desc_init_by_tag(&w_md, 4, w_dims, op, dnnl_format_tag_any), e);
    FM_DNN(dnnl_memory_desc_init_by_tag(&w32_md, 4, w_dims, dnnl_f32, dnnl_format_tag_any), e);
    FM_DNN(dnnl_memory_desc_init_by_tag(&b_md, 1, b_dims, dnnl_f32, dnnl_x), e);
    FM_DNN(dnnl_memory_desc_init_by_tag(&dst32_md, 4, dst_dims, dnnl_f32, dnnl_nhwc), e);
    FM_DNN(dnnl_memory_desc_init_by_tag(&dst_op_md, 4, dst_dims, op, dnnl_nhwc), e);
    const dnnl_memory_desc_t *bias = l->bias ? &b_md : NULL;

    dnnl_convolution_desc_t cd;
    FM_DNN(dnnl_convolution_forward_desc_init(&cd, dnnl_forward_training, dnnl_convolution_direct, &src_md,
                                              &w_md, bias, &dst32_md, strides, pad_l, pad_r), e);
    FM_DNN(dnnl_primitive_desc_create(&pd->fwd, &cd, attr, l->d->engine, NULL), e);

    FM_DNN(dnnl_convolution_backward_data_desc_init(&cd, dnnl_convolution_direct, &src32_md, &w_md, &dst_op_md,
                                                    strides, pad_l, pad_r), e);
    FM_DNN(dnnl_primitive_desc_create(&pd->bwd_data, &cd, attr, l->d->engine, pd->fwd), e);

    if (l->wb.xp) /* weight gradients by fm_wgrad16 */
        return FM_OK;
    FM_DNN(dnnl_convolution_backward_weights_desc_init(&cd, dnnl_convolution_direct, &src_md, &w32_md, bias,
                                                       &dst_op_md, strides, pad_l, pad_r), e);
    FM_DNN(dnnl_primitive_desc_create(&pd->bwd_weights, &cd, attr, l->d->engine, pd->fwd), e);
    return FM_OK;
}

/* Under bf16, take fm_wgrad16 for the weight gradients when it applies:
 * set l->wg and its buffers l->wb. */
static int setup_wgrad16(fm_conv2d *l, fm_arena *a, fm_err *e)
{
    l->wg = (fm_wgrad16){ .n = l->n, .h = l->h, .w = l->w, .cin = l->cin, .ho = l->ho, .wo = l->wo,
                          .cout = l->cout, .kh = l->k, .kw = l->k, .stride = l->stride, .pad_t = l->pad,
                          .pad_l = l->pad };
    if (!l->d->bf16 || l->k == 1 || !fm_wgrad16_usable(&l->wg))
        return FM_OK;
    return fm_wgrad16_bufs_init(&l->wb, a, &l->wg, 1, l->bias != NULL, e);
}

/* Take fm_conv16 (bf16) or fm_conv32 (fp32) for the forward and the
 * backward-data of a 3x3 convolution with stride 1 and padding 1 where its
 * shape suits it (the U-Net's 4- and 8-wide maps): set the geometries and
 * the packed weights' buffers. */
static int setup_conv16(fm_conv2d *l, fm_arena *a, fm_err *e)
{
    l->cg = (fm_conv16){ .n = l->n, .h = l->h, .w = l->w, .cin = l->cin, .cout = l->cout };
    l->cgt = (fm_conv16){ .n = l->n, .h = l->h, .w = l->w, .cin = l->cout, .cout = l->cin };
    if (l->k != 3 || l->stride != 1 || l->pad != 1)
        return FM_OK;
    void *buf;
    if (!l->d->bf16) {
        /* fp32: fm_conv32 for backward-data only; oneDNN's fp32 forward was
         * as fast on these maps (docs/profile.md, "conv16") */
        const fm_conv32 g32 = { .n = l->n, .h = l->h, .w = l->w, .cin = l->cin, .cout = l->cout };
        if (!fm_conv32_usable(&g32))
            return FM_OK;
        l->cg32 = g32;
        l->cgt32 = (fm_conv32){ .n = l->n, .h = l->h, .w = l->w, .cin = l->cout, .cout = l->cin };
        FM_TRY(fm_arena_take(a, fm_conv32_packed_len(&g32), sizeof(float), &buf, "packed weights", e));
        l->wt32 = buf;
        return FM_OK;
    }
    if (fm_conv16_usable(&l->cg)) {
        FM_TRY(fm_arena_take(a, fm_conv16_packed_len(&l->cg), 2, &buf, "packed bf16 weights", e));
        l->wp16 = buf;
    }
    if (fm_conv16_usable(&l->cgt)) {
        FM_TRY(fm_arena_take(a, fm_conv16_packed_len(&l->cgt), 2, &buf, "packed bf16 weights", e));
        l->wpt16 = buf;
    }
    return FM_OK;
}

/* On a measuring arena the primitive descriptors fix every size; the
 * primitives themselves (and the reorders) are not created. */
static int setup(fm_conv2d *l, fm_arena *a, conv_pds *pd, dnnl_primitive_attr_t attr, const char *name,
                 fm_err *e)
{
    const int prims = !fm_arena_measuring(a);
    FM_DNN(dnnl_primitive_attr_set_scratchpad_mode(attr, dnnl_scratchpad_mode_user), e);
    FM_TRY(setup_wgrad16(l, a, e));
    FM_TRY(setup_conv16(l, a, e));
    if (create_pds(l, pd, attr, e) != FM_OK)
        return fm_err_prefix(e, "[%lld, %lld, %lld, %lld] k%lld s%lld p%lld -> %lld", (long long)l->n,
                             (long long)l->h, (long long)l->w, (long long)l->cin, (long long)l->k,
                             (long long)l->stride, (long long)l->pad, (long long)l->cout);
    fm_debug("conv %s: forward %s, backward-data %s, backward-weights %s", name,
             l->wp16 ? "conv16" : fm_dnn_impl_name(pd->fwd),
             l->wpt16 ? "conv16" : l->wt32 ? "conv32" : fm_dnn_impl_name(pd->bwd_data),
             l->wb.xp ? "wgrad16" : fm_dnn_impl_name(pd->bwd_weights));

    if (prims) {
        FM_DNN(dnnl_primitive_create(&l->fwd, pd->fwd), e);
        FM_DNN(dnnl_primitive_create(&l->bwd_data, pd->bwd_data), e);
        if (pd->bwd_weights)
            FM_DNN(dnnl_primitive_create(&l->bwd_weights, pd->bwd_weights), e);
    }

    const dnnl_dims_t src_dims = { l->n, l->cin, l->h, l->w };
    const dnnl_dims_t w_dims = { l->cout, l->cin, l->k, l->k };
    const dnnl_dims_t b_dims = { l->cout };
    const dnnl_dims_t dst_dims = { l->n, l->cout, l->ho, l->wo };
    FM_TRY(fm_dnn_mem(l->d, &l->m_dx, 4, src_dims, dnnl_nhwc, e));
    FM_TRY(fm_dnn_mem(l->d, &l->m_y, 4, dst_dims, dnnl_nhwc, e));
    if (l->d->bf16) { /* the operands' bf16 copies, at fixed addresses */
        void *x16, *dy16;
        FM_TRY(fm_arena_take(a, (size_t)(l->n * l->h * l->w * l->cin), 2, &x16, "bf16 operand buffers", e));
        FM_TRY(fm_arena_take(a, (size_t)(l->n * l->ho * l->wo * l->cout), 2, &dy16, "bf16 operand buffers", e));
        l->x16 = (fm_bf16_copy){ .buf = x16, .n = l->n * l->h * l->w * l->cin };
        l->dy16 = dy16;
        FM_TRY(fm_dnn_mem_dt(l->d, &l->m_x, 4, src_dims, dnnl_bf16, dnnl_nhwc, x16, e));
        FM_TRY(fm_dnn_mem_dt(l->d, &l->m_dy, 4, dst_dims, dnnl_bf16, dnnl_nhwc, dy16, e));
    } else {
        FM_TRY(fm_dnn_mem(l->d, &l->m_x, 4, src_dims, dnnl_nhwc, e));
        FM_TRY(fm_dnn_mem(l->d, &l->m_dy, 4, dst_dims, dnnl_nhwc, e));
    }
    /* parameter memory does not move: attach it once */
    FM_TRY(fm_dnn_mem(l->d, &l->m_w, 4, w_dims, dnnl_oihw, e));
    FM_TRY(fm_dnn_mem(l->d, &l->m_dw, 4, w_dims, dnnl_oihw, e));
    FM_DNN(dnnl_memory_set_data_handle(l->m_w, l->weight->w.data), e);
    FM_DNN(dnnl_memory_set_data_handle(l->m_dw, l->weight->g.data), e);
    if (l->bias) {
        FM_TRY(fm_dnn_mem(l->d, &l->m_b, 1, b_dims, dnnl_x, e));
        FM_TRY(fm_dnn_mem(l->d, &l->m_db, 1, b_dims, dnnl_x, e));
        FM_DNN(dnnl_memory_set_data_handle(l->m_b, l->bias->w.data), e);
        FM_DNN(dnnl_memory_set_data_handle(l->m_db, l->bias->g.data), e);
    }

    /* weights in the layouts the primitives chose, and reorders to/from OIHW */
    size_t scratch = 0;
    fm_dnn_grow_scratch(&scratch, pd->fwd);
    fm_dnn_grow_scratch(&scratch, pd->bwd_data);
    if (pd->bwd_weights)
        fm_dnn_grow_scratch(&scratch, pd->bwd_weights);
    const dnnl_memory_desc_t *w_fwd_md = dnnl_primitive_desc_query_md(pd->fwd, dnnl_query_weights_md, 0);
    const dnnl_memory_desc_t *w_bwd_md = dnnl_primitive_desc_query_md(pd->bwd_data, dnnl_query_weights_md, 0);
    const dnnl_memory_desc_t *oihw_md = NULL;
    FM_DNN(dnnl_memory_get_memory_desc(l->m_w, &oihw_md), e);

    FM_TRY(mem_for(l, a, w_fwd_md, l->m_w, &l->m_w_fwd, "weights buffer", e));
    if (l->m_w_fwd != l->m_w)
        FM_TRY(fm_dnn_make_reorder(l->d, oihw_md, w_fwd_md, attr, prims ? &l->w_reorder : NULL, &scratch, e));
    /* backward-data reuses the forward buffer when the layouts match, else gets its own */
    if (dnnl_memory_desc_equal(w_bwd_md, w_fwd_md)) {
        l->m_w_bwd = l->m_w_fwd;
    } else {
        FM_TRY(mem_for(l, a, w_bwd_md, l->m_w, &l->m_w_bwd, "backward weights buffer", e));
        if (l->m_w_bwd != l->m_w)
            FM_TRY(fm_dnn_make_reorder(l->d, oihw_md, w_bwd_md, attr, prims ? &l->wb_reorder : NULL, &scratch, e));
    }
    if (pd->bwd_weights) {
        const dnnl_memory_desc_t *dw_md =
            dnnl_primitive_desc_query_md(pd->bwd_weights, dnnl_query_diff_weights_md, 0);
        FM_TRY(mem_for(l, a, dw_md, l->m_dw, &l->m_dw_int, "weight gradient buffer", e));
        if (l->m_dw_int != l->m_dw)
            FM_TRY(fm_dnn_make_reorder(l->d, dw_md, oihw_md, attr, prims ? &l->dw_reorder : NULL, &scratch, e));
    }

    l->scratch_bytes = scratch;
    if (scratch > 0) {
        void *buf;
        FM_TRY(fm_arena_take(a, scratch, 1, &buf, "scratchpad", e));
        dnnl_memory_desc_t md;
        const dnnl_dims_t dims = { (int64_t)scratch };
        FM_DNN(dnnl_memory_desc_init_by_tag(&md, 1, dims, dnnl_u8, dnnl_x), e);
        FM_DNN(dnnl_memory_create(&l->m_scratch, &md, l->d->engine, buf), e);
    }
    return FM_OK;
}

int fm_conv2d_init(fm_conv2d *l, fm_dnn *d, fm_params *p, fm_arena *a, const char *name,
                   int64_t cin, int64_t cout, int64_t k, int64_t stride, int64_t pad, int bias,
                   int64_t n, int64_t h, int64_t w, fm_err *e)
{
    memset(l, 0, sizeof *l);
    if (cin < 1 || cout < 1 || k < 1 || stride < 1 || pad < 0 || n < 1 || h < 1 || w < 1)
        return fm_fail(e, FM_ERR_USAGE,
                       "conv %s: bad sizes (cin %lld, cout %lld, k %lld, stride %lld, pad %lld, input %lldx%lldx%lld)",
                       name, (long long)cin, (long long)cout, (long long)k, (long long)stride, (long long)pad,
                       (long long)n, (long long)h, (long long)w);
    l->d = d;
    l->n = n, l->h = h, l->w = w, l->cin = cin, l->cout = cout;
    l->k = k, l->stride = stride, l->pad = pad;
    l->ho = fm_conv2d_out_hw(h, k, stride, pad);
    l->wo = fm_conv2d_out_hw(w, k, stride, pad);
    if (l->ho < 1 || l->wo < 1)
        return fm_fail(e, FM_ERR_USAGE, "conv %s: kernel %lld with padding %lld does not fit a %lldx%lld input",
                       name, (long long)k, (long long)pad, (long long)h, (long long)w);

    const int64_t wshape[4] = { cout, cin, k, k };
    FM_TRY(fm_params_add(p, &l->weight, 4, wshape, e, "%s.weight", name));
    float bound = 1.0f / sqrtf((float)(cin * k * k));
    fm_param_init_uniform(p, l->weight, bound);
    if (bias) {
        FM_TRY(fm_params_add(p, &l->bias, 1, &cout, e, "%s.bias", name));
        fm_param_init_uniform(p, l->bias, bound);
    }

    conv_pds pd = { 0 };
    dnnl_primitive_attr_t attr = NULL;
    int rc;
    dnnl_status_t st = dnnl_primitive_attr_create(&attr);
    if (st != dnnl_success)
        rc = fm_fail(e, FM_ERR_INTERNAL, "conv %s: cannot create primitive attributes: %s", name,
                     dnnl_status2str(st));
    else
        rc = setup(l, a, &pd, attr, name, e);
    if (pd.fwd)
        dnnl_primitive_desc_destroy(pd.fwd);
    if (pd.bwd_data)
        dnnl_primitive_desc_destroy(pd.bwd_data);
    if (pd.bwd_weights)
        dnnl_primitive_desc_destroy(pd.bwd_weights);
    if (attr)
        dnnl_primitive_attr_destroy(attr);
    if (rc != FM_OK) {
        fm_err_prefix(e, "conv %s", name);
        fm_conv2d_free(l);
    }
    return rc;
}

/* Execute p with args plus the layer's scratchpad (args has room for it). */
static int run(fm_conv2d *l, dnnl_primitive_t p, dnnl_exec_arg_t *args, int nargs, fm_err *e)
{
    return fm_dnn_exec_sp(l->d, p, l->m_scratch, nargs, args, e);
}

static int reorder(fm_conv2d *l, dnnl_primitive_t p, dnnl_memory_t from, dnnl_memory_t to, fm_err *e)
{
    return fm_dnn_reorder(l->d, p, l->m_scratch, from, to, e);
}

/* x operand: see fm_dnn_attach_x. */
static int attach_x(fm_conv2d *l, const float *x, int reuse, fm_err *e)
{
    return fm_dnn_attach_x(&l->x16, l->m_x, x, reuse, e);
}

int fm_conv2d_keeps_x(const fm_conv2d *l, const float *x) { return fm_bf16_copy_keeps(&l->x16, x); }

uint16_t *fm_conv2d_operand16(fm_conv2d *l) { return l->x16.buf; }

/* The forward on the x operand as attached, with the current weights. */
static int forward_attached(fm_conv2d *l, float *y, fm_err *e)
{
    if (l->wp16) {
        /* the weights changed since the last forward (an optimiser step):
         * packed on each call, and once a backward has run (training) also
         * for the backward-data that follows, in the same pass over them */
        l->wt_ready = l->wpt16 && l->trains;
        fm_conv16_pack(l->wp16, l->wt_ready ? l->wpt16 : NULL, l->weight->w.data, &l->cg);
        fm_conv16_run(&l->cg, l->x16.buf, l->wp16, l->bias ? l->bias->w.data : NULL, y);
        return FM_OK;
    }
    if (l->w_reorder)
        FM_TRY(reorder(l, l->w_reorder, l->m_w, l->m_w_fwd, e));
    FM_DNN(dnnl_memory_set_data_handle(l->m_y, y), e);
    dnnl_exec_arg_t args[5] = {
        { DNNL_ARG_SRC, l->m_x },
        { DNNL_ARG_WEIGHTS, l->m_w_fwd },
        { DNNL_ARG_DST, l->m_y },
    };
    int nargs = 3;
    if (l->m_b)
        args[nargs++] = (dnnl_exec_arg_t){ DNNL_ARG_BIAS, l->m_b };
    return run(l, l->fwd, args, nargs, e);
}

int fm_conv2d_forward(fm_conv2d *l, const float *x, float *y, fm_err *e)
{
    const double t0 = FM_PROF_START(l->prof);
    FM_TRY(attach_x(l, x, 0, e));
    FM_TRY(forward_attached(l, y, e));
    FM_PROF_END(l->prof, FM_PROF_FWD, t0, fm_conv2d_flops_fwd(l));
    return FM_OK;
}

int fm_conv2d_forward16(fm_conv2d *l, const float *as, float *y, fm_err *e)
{
    if (!l->x16.buf)
        return fm_fail(e, FM_ERR_INTERNAL, "conv: forward16 on a layer without a bf16 operand");
    const double t0 = FM_PROF_START(l->prof);
    l->x16.of = as;
    FM_TRY(forward_attached(l, y, e));
    FM_PROF_END(l->prof, FM_PROF_FWD, t0, fm_conv2d_flops_fwd(l));
    return FM_OK;
}

static int backward(fm_conv2d *l, const float *x, const float *dy, float *dx, fm_err *e)
{
    const int64_t hwo = l->ho * l->wo;
    if (l->wb.xp) { /* the pair-packed and the plain bf16 dy, and the bias gradient, in one pass */
        float *db = l->bias ? l->bias->g.data : NULL;
        if (db)
            memset(db, 0, (size_t)l->cout * sizeof(float));
        fm_wgrad16_pack_f32(l->wb.dyp, l->dy16, dy, l->n, hwo, l->cout, db, l->wb.part, l->wb.threads);
    }
    else if (l->dy16)
        fm_f32_to_bf16_n(l->dy16, dy, l->n * hwo * l->cout);
    else
        FM_DNN(dnnl_memory_set_data_handle(l->m_dy, (void *)dy), e);
    if (dx && l->wt32) {
        fm_conv32_pack(NULL, l->wt32, l->weight->w.data, &l->cg32);
        fm_conv32_run(&l->cgt32, dy, l->wt32, NULL, dx);
    } else if (dx && l->wpt16) {
        if (!l->wt_ready)
            fm_conv16_pack(NULL, l->wpt16, l->weight->w.data, &l->cg);
        l->wt_ready = 0, l->trains = 1;
        fm_conv16_run(&l->cgt, l->dy16, l->wpt16, NULL, dx);
    } else if (dx) {
        if (l->wb_reorder)
            FM_TRY(reorder(l, l->wb_reorder, l->m_w, l->m_w_bwd, e));
        FM_DNN(dnnl_memory_set_data_handle(l->m_dx, dx), e);
        dnnl_exec_arg_t args[4] = {
            { DNNL_ARG_DIFF_DST, l->m_dy },
            { DNNL_ARG_WEIGHTS, l->m_w_bwd },
            { DNNL_ARG_DIFF_SRC, l->m_dx },
        };
        FM_TRY(run(l, l->bwd_data, args, 3, e));
    }
    FM_TRY(attach_x(l, x, 1, e));
    if (l->wb.xp) {
        fm_wgrad16_pack_bf16(l->wb.xp, l->x16.buf, l->n, l->h * l->w, l->cin);
        fm_wgrad16_run(&l->wg, l->wb.xp, l->wb.dyp, l->weight->g.data);
        return FM_OK;
    }
    dnnl_exec_arg_t args[5] = {
        { DNNL_ARG_SRC, l->m_x },
        { DNNL_ARG_DIFF_DST, l->m_dy },
        { DNNL_ARG_DIFF_WEIGHTS, l->m_dw_int },
    };
    int nargs = 3;
    if (l->m_db)
        args[nargs++] = (dnnl_exec_arg_t){ DNNL_ARG_DIFF_BIAS, l->m_db };
    FM_TRY(run(l, l->bwd_weights, args, nargs, e));
    if (l->dw_reorder)
        FM_TRY(reorder(l, l->dw_reorder, l->m_dw_int, l->m_dw, e));
    return FM_OK;
}

int fm_conv2d_backward(fm_conv2d *l, const float *x, const float *dy, float *dx, fm_err *e)
{
    FM_PROF_SITE_CALL(l->prof, FM_PROF_BWD, fm_conv2d_flops_bwd(l, dx != NULL), backward(l, x, dy, dx, e));
    return FM_OK;
}

double fm_conv2d_flops_fwd(const fm_conv2d *l)
{
    return 2.0 * (double)l->n * (double)l->ho * (double)l->wo * (double)l->cout * (double)l->cin *
           (double)l->k * (double)l->k;
}

double fm_conv2d_flops_bwd(const fm_conv2d *l, int with_dx)
{
    return (with_dx ? 2.0 : 1.0) * fm_conv2d_flops_fwd(l);
}

void fm_conv2d_free(fm_conv2d *l)
{
    dnnl_primitive_t prims[] = { l->fwd, l->bwd_data, l->bwd_weights, l->w_reorder, l->wb_reorder, l->dw_reorder };
    for (size_t i = 0; i < sizeof prims / sizeof *prims; i++)
        if (prims[i])
            dnnl_primitive_destroy(prims[i]);
    /* the internal weight memories may alias the parameter views */
    if (l->m_w_bwd && l->m_w_bwd != l->m_w_fwd && l->m_w_bwd != l->m_w)
        dnnl_memory_destroy(l->m_w_bwd);
    if (l->m_w_fwd && l->m_w_fwd != l->m_w)
        dnnl_memory_destroy(l->m_w_fwd);
    if (l->m_dw_int && l->m_dw_int != l->m_dw)
        dnnl_memory_destroy(l->m_dw_int);
    dnnl_memory_t mems[] = { l->m_x, l->m_y, l->m_dy, l->m_dx, l->m_w, l->m_dw, l->m_b, l->m_db, l->m_scratch };
    for (size_t i = 0; i < sizeof mems / sizeof *mems; i++)
        if (mems[i])
            dnnl_memory_destroy(mems[i]);
    memset(l, 0, sizeof *l);
}
