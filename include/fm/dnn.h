/* dnn.h - the oneDNN engine and stream shared by every layer of a process. */
#ifndef FM_DNN_H
#define FM_DNN_H

#include <dnnl.h>
#include <dnnl_debug.h>

#include "fm/status.h"
#include "fm/tensor.h"

typedef struct fm_dnn {
    dnnl_engine_t engine;
    dnnl_stream_t stream;
    /* Precision of the convolutions and matrix products of layers created
     * from now on (run.precision): 0 = fp32; 1 = bf16 operands (activations
     * and weights rounded to bf16 on the way in) with fp32 accumulation,
     * fp32 outputs and fp32 parameters, gradients and everything else. */
    int bf16;
} fm_dnn;

int fm_dnn_init(fm_dnn *d, fm_err *e);

/* 1 when oneDNN's effective ISA on this CPU includes AVX512-BF16 (bf16
 * convolutions and matrix products run natively, not emulated). */
int fm_dnn_cpu_has_bf16(void);
void fm_dnn_free(fm_dnn *d);

/* Wrap every oneDNN call: on failure, return FM_ERR_INTERNAL with the call,
 * file, line and oneDNN's status name in e. */
#define FM_DNN(call, e)                                                                      \
    do {                                                                                     \
        dnnl_status_t fm_dnn_s_ = (call);                                                    \
        if (fm_dnn_s_ != dnnl_success)                                                       \
            return fm_fail((e), FM_ERR_INTERNAL, "%s:%d: oneDNN call %s failed: %s", __FILE__, \
                           __LINE__, #call, dnnl_status2str(fm_dnn_s_));                     \
    } while (0)

/* Run primitive p on the process stream and wait for it. */
int fm_dnn_exec(fm_dnn *d, dnnl_primitive_t p, int nargs, const dnnl_exec_arg_t *args, fm_err *e);

/* fm_dnn_exec with a user scratchpad: appends { DNNL_ARG_SCRATCHPAD, scratch }
 * to args (which must have room for nargs + 1 entries) unless scratch is NULL. */
int fm_dnn_exec_sp(fm_dnn *d, dnnl_primitive_t p, dnnl_memory_t scratch, int nargs, dnnl_exec_arg_t *args,
                   fm_err *e);

/* Run reorder primitive p from -> to with a user scratchpad (may be NULL);
 * nothing when p is NULL (the layouts are the same). */
int fm_dnn_reorder(fm_dnn *d, dnnl_primitive_t p, dnnl_memory_t scratch, dnnl_memory_t from, dnnl_memory_t to,
                   fm_err *e);

/* Attach a layer's x operand: under bf16 (c->buf set) round x into the copy
 * (with reuse, keep the copy when it was made from this same buffer: a
 * backward given its forward's unchanged input), else point m at x. */
int fm_dnn_attach_x(fm_bf16_copy *c, dnnl_memory_t m, const float *x, int reuse, fm_err *e);

/* 1 when c holds the bf16 rounding of buffer x (see fm_conv2d_keeps_x). */
static inline int fm_bf16_copy_keeps(const fm_bf16_copy *c, const float *x) { return c->buf && c->of == x; }

/* Set-up helpers for primitives with a user scratchpad. */
/* Raise *scratch to the scratchpad size pd needs. */
void fm_dnn_grow_scratch(size_t *scratch, const_dnnl_primitive_desc_t pd);

/* oneDNN's name of pd's implementation (e.g. "brgconv:avx512_core"), "?" if unknown. */
const char *fm_dnn_impl_name(const_dnnl_primitive_desc_t pd);

/* A reorder primitive src_md -> dst_md with attr (user scratchpad); grows *scratch.
 * With out NULL only *scratch grows (no primitive: sizing on a measuring arena). */
int fm_dnn_make_reorder(fm_dnn *d, const dnnl_memory_desc_t *src_md, const dnnl_memory_desc_t *dst_md,
                        const_dnnl_primitive_attr_t attr, dnnl_primitive_t *out, size_t *scratch, fm_err *e);

/* A memory object of plain fp32 dims with format tag tag (no data attached;
 * attach with dnnl_memory_set_data_handle before each use). */
int fm_dnn_mem(fm_dnn *d, dnnl_memory_t *m, int ndims, const dnnl_dims_t dims, dnnl_format_tag_t tag,
               fm_err *e);

/* The same for data type dt, with data attached (DNNL_MEMORY_NONE: none). */
int fm_dnn_mem_dt(fm_dnn *d, dnnl_memory_t *m, int ndims, const dnnl_dims_t dims, dnnl_data_type_t dt,
                  dnnl_format_tag_t tag, void *data, fm_err *e);

/* The operand type of convolutions and matrix products: bf16 or f32. */
static inline dnnl_data_type_t fm_dnn_op_type(const fm_dnn *d) { return d->bf16 ? dnnl_bf16 : dnnl_f32; }

/* Create a matmul primitive dst = src x wei (+ bias, may be NULL) with a
 * user-managed scratchpad; raise *scratch to the bytes it needs (out NULL:
 * only that, no primitive). */
int fm_dnn_matmul(fm_dnn *d, dnnl_primitive_t *out, const dnnl_memory_desc_t *src, const dnnl_memory_desc_t *wei,
                  const dnnl_memory_desc_t *bias, const dnnl_memory_desc_t *dst, size_t *scratch, fm_err *e);

#endif
