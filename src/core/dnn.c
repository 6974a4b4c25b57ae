/* dnn.c - the oneDNN engine and stream. */
#include "fm/dnn.h"

#include <string.h>

int fm_dnn_cpu_has_bf16(void)
{
    return (dnnl_get_effective_cpu_isa() & dnnl_cpu_isa_avx512_core_bf16) == dnnl_cpu_isa_avx512_core_bf16;
}

int fm_dnn_init(fm_dnn *d, fm_err *e)
{
    memset(d, 0, sizeof *d);
    FM_DNN(dnnl_engine_create(&d->engine, dnnl_cpu, 0), e);
    FM_DNN(dnnl_stream_create(&d->stream, d->engine, dnnl_stream_default_flags), e);
    return FM_OK;
}

void fm_dnn_free(fm_dnn *d)
{
    if (d->stream)
        dnnl_stream_destroy(d->stream);
    if (d->engine)
        dnnl_engine_destroy(d->engine);
    memset(d, 0, sizeof *d);
}

int fm_dnn_exec(fm_dnn *d, dnnl_primitive_t p, int nargs, const dnnl_exec_arg_t *args, fm_err *e)
{
    FM_DNN(dnnl_primitive_execute(p, d->stream, nargs, args), e);
    FM_DNN(dnnl_stream_wait(d->stream), e);
    return FM_OK;
}

void fm_dnn_grow_scratch(size_t *scratch, const_dnnl_primitive_desc_t pd)
{
    const dnnl_memory_desc_t *md = dnnl_primitive_desc_query_md(pd, dnnl_query_scratchpad_md, 0);
    const size_t need = md ? dnnl_memory_desc_get_size(md) : 0;
    if (need > *scratch)
        *scratch = need;
}

const char *fm_dnn_impl_name(const_dnnl_primitive_desc_t pd)
{
    const char *s = NULL;
    if (dnnl_primitive_desc_query(pd, dnnl_query_impl_info_str, 0, &s) != dnnl_success || !s)
        return "?";
    return s;
}

int fm_dnn_make_reorder(fm_dnn *d, const dnnl_memory_desc_t *src_md, const dnnl_memory_desc_t *dst_md,
                        const_dnnl_primitive_attr_t attr, dnnl_primitive_t *out, size_t *scratch, fm_err *e)
{
    dnnl_primitive_desc_t pd;
    FM_DNN(dnnl_reorder_primitive_desc_create(&pd, src_md, d->engine, dst_md, d->engine, attr), e);
    fm_dnn_grow_scratch(scratch, pd);
    dnnl_status_t st = out ? dnnl_primitive_create(out, pd) : dnnl_success;
    dnnl_primitive_desc_destroy(pd);
    FM_DNN(st, e);
    return FM_OK;
}

int fm_dnn_exec_sp(fm_dnn *d, dnnl_primitive_t p, dnnl_memory_t scratch, int nargs, dnnl_exec_arg_t *args,
                   fm_err *e)
{
    if (scratch)
        args[nargs++] = (dnnl_exec_arg_t){ DNNL_ARG_SCRATCHPAD, scratch };
    return fm_dnn_exec(d, p, nargs, args, e);
}

int fm_dnn_reorder(fm_dnn *d, dnnl_primitive_t p, dnnl_memory_t scratch, dnnl_memory_t from, dnnl_memory_t to,
                   fm_err *e)
{
    if (!p)
        return FM_OK;
    dnnl_exec_arg_t args[3] = { { DNNL_ARG_FROM, from }, { DNNL_ARG_TO, to } };
    return fm_dnn_exec_sp(d, p, scratch, 2, args, e);
}

int fm_dnn_attach_x(fm_bf16_copy *c, dnnl_memory_t m, const float *x, int reuse, fm_err *e)
{
    if (c->buf) {
        fm_bf16_copy_from(c, x, reuse);
        return FM_OK;
    }
    FM_DNN(dnnl_memory_set_data_handle(m, (void *)x), e);
    return FM_OK;
}

int fm_dnn_mem(fm_dnn *d, dnnl_memory_t *m, int ndims, const dnnl_dims_t dims, dnnl_format_tag_t tag,
               fm_err *e)
{
    return fm_dnn_mem_dt(d, m, ndims, dims, dnnl_f32, tag, DNNL_MEMORY_NONE, e);
}

int fm_dnn_mem_dt(fm_dnn *d, dnnl_memory_t *m, int ndims, const dnnl_dims_t dims, dnnl_data_type_t dt,
                  dnnl_format_tag_t tag, void *data, fm_err *e)
{
    dnnl_memory_desc_t md;
    FM_DNN(dnnl_memory_desc_init_by_tag(&md, ndims, dims, dt, tag), e);
    FM_DNN(dnnl_memory_create(m, &md, d->engine, data), e);
    return FM_OK;
}

int fm_dnn_matmul(fm_dnn *d, dnnl_primitive_t *out, const dnnl_memory_desc_t *src, const dnnl_memory_desc_t *wei,
                  const dnnl_memory_desc_t *bias, const dnnl_memory_desc_t *dst, size_t *scratch, fm_err *e)
{
    dnnl_matmul_desc_t desc;
    dnnl_primitive_attr_t attr;
    dnnl_primitive_desc_t pd;
    FM_DNN(dnnl_matmul_desc_init(&desc, src, wei, bias, dst), e);
    FM_DNN(dnnl_primitive_attr_create(&attr), e);
    dnnl_status_t s = dnnl_primitive_attr_set_scratchpad_mode(attr, dnnl_scratchpad_mode_user);
    if (s == dnnl_success)
        s = dnnl_primitive_desc_create(&pd, &desc, attr, d->engine, NULL);
    dnnl_primitive_attr_destroy(attr);
    FM_DNN(s, e);
    fm_dnn_grow_scratch(scratch, pd);
    s = out ? dnnl_primitive_create(out, pd) : dnnl_success;
    dnnl_primitive_desc_destroy(pd);
    FM_DNN(s, e);
    return FM_OK;
}
