/* conv.h - 2-D convolution (PyTorch nn.Conv2d semantics) on oneDNN.
 *
 * Activations are fp32 NHWC: x [N, H, W, Cin] -> y [N, Ho, Wo, Cout] with
 * Ho = (H + 2*pad - k) / stride + 1 (floor), likewise Wo. Parameters keep
 * PyTorch's layout: "<name>.weight" [Cout, Cin, k, k] (OIHW) and, when bias is
 * on, "<name>.bias" [Cout].
 *
 * All primitives are created at init for one fixed batch shape. oneDNN picks
 * its own (blocked) weights layouts: forward reorders the OIHW weights into an
 * internal buffer every call (weights change after each optimiser step).
 * Backward-data reuses that buffer when it wants the same layout; on AVX-512 it
 * usually wants a transposed one (forcing the forward layout falls back to
 * oneDNN's reference kernel, ~1000x slower), so backward then reorders the OIHW
 * weights into a second buffer. Weight gradients are computed in oneDNN's layout
 * and reordered into the OIHW gradient view. Scratchpad memory is user-managed:
 * one buffer per layer, from the arena, sized for the largest primitive.
 * Arena use per layer: up to three weight-sized buffers plus the scratchpad.
 *
 * bf16 (d->bf16 at init): x, dy and the weights are rounded to bf16 operands
 * (x and dy into two arena buffers per layer, the weights by the reorders;
 * backward reuses forward's copy of x when given the same buffer);
 * y, dx and the weight and bias gradients stay fp32 (oneDNN accumulates in
 * fp32), as do the parameters themselves. Weight gradients of kernels larger
 * than 1x1 come from fm_wgrad16 (wgrad16.h) where the CPU has AVX512-BF16 and
 * Cin % 16 == 0, from pair-packed copies of x and dy (two more arena buffers);
 * 1x1 kernels (nothing to skip) and other shapes keep oneDNN's. */
#ifndef FM_CONV_H
#define FM_CONV_H

#include <stdint.h>

#include "fm/arena.h"
#include "fm/dnn.h"
#include "fm/params.h"
#include "fm/profile.h"
#include "fm/status.h"
#include "fm/tensor.h"
#include "fm/conv16.h"
#include "fm/conv32.h"
#include "fm/wgrad16.h"

typedef struct fm_conv2d {
    fm_dnn *d;
    fm_param *weight;  /* [Cout, Cin, k, k] */
    fm_param *bias;    /* [Cout], NULL without bias */
    int64_t n, h, w, cin, cout, k, stride, pad;
    int64_t ho, wo;    /* output height and width */

    dnnl_primitive_t fwd, bwd_data, bwd_weights;
    dnnl_primitive_t w_reorder;   /* OIHW -> forward layout; NULL when equal */
    dnnl_primitive_t wb_reorder;  /* OIHW -> backward-data layout; NULL when it reuses w_fwd */
    dnnl_primitive_t dw_reorder;  /* backward-weights layout -> OIHW; NULL when equal */

    /* memory objects; activation handles are attached on each call */
    dnnl_memory_t m_x, m_y, m_dy, m_dx;        /* NHWC; m_x and m_dy bf16 under bf16 */
    fm_bf16_copy x16;                          /* bf16 copy of x (arena; buf NULL in fp32) */
    uint16_t *dy16;                            /* bf16 copy of dy (arena); NULL in fp32 */
    dnnl_memory_t m_w, m_dw;                   /* OIHW parameter / gradient views */
    dnnl_memory_t m_w_fwd, m_w_bwd, m_dw_int;  /* oneDNN layouts (may alias m_w / m_dw) */
    dnnl_memory_t m_b, m_db;                   /* [Cout], NULL without bias */
    dnnl_memory_t m_scratch;
    size_t scratch_bytes;                      /* size of the shared scratchpad */
    fm_wgrad16 wg;                             /* geometry for fm_wgrad16 */
    fm_wgrad16_bufs wb;                        /* its buffers; wb.xp NULL: oneDNN's weight gradients */
    fm_conv16 cg, cgt;                         /* geometry for fm_conv16: forward, backward-data */
    uint16_t *wp16, *wpt16;                    /* their packed weights (arena); NULL: oneDNN's */
    fm_conv32 cg32, cgt32;                     /* geometry for fm_conv32 (fp32): forward, backward-data */
    float *wt32;                               /* packed weights of its backward-data (arena); NULL: oneDNN's */
    int wt_ready;                              /* wpt16 packed by the last forward from the current weights */
    int trains;                                /* a backward-data has run: forwards pack wpt16 too */
    fm_prof_site *prof; /* profiling site (profile.h): NULL = off, the default; set by the model's walk */
} fm_conv2d;

/* Output size of one spatial dimension: (in + 2*pad - k) / stride + 1, or a
 * value < 1 when the kernel does not fit. */
int64_t fm_conv2d_out_hw(int64_t in, int64_t k, int64_t stride, int64_t pad);

/* Register "<name>.weight" (and "<name>.bias" if bias) in p with PyTorch's
 * default init (uniform, bound 1/sqrt(cin*k*k), for both), create every oneDNN
 * primitive for input [n, h, w, cin], kernel k x k, the given stride and
 * zero padding, and take the internal buffers from arena a. Bad sizes give
 * FM_ERR_USAGE naming the layer. On a measuring arena (arena.h) it only sizes
 * (no primitives; the layer may then only be freed). */
int fm_conv2d_init(fm_conv2d *l, fm_dnn *d, fm_params *p, fm_arena *a, const char *name,
                   int64_t cin, int64_t cout, int64_t k, int64_t stride, int64_t pad, int bias,
                   int64_t n, int64_t h, int64_t w, fm_err *e);

/* y [N, Ho, Wo, Cout] = conv(x [N, H, W, Cin]) + bias. */
int fm_conv2d_forward(fm_conv2d *l, const float *x, float *y, fm_err *e);

/* Under bf16, the buffer the layer rounds its x operand into ([N, H, W,
 * Cin] bf16), for a producer that writes it directly
 * (fm_groupnorm_forward_ada16); NULL in fp32. */
uint16_t *fm_conv2d_operand16(fm_conv2d *l);

/* fm_conv2d_forward with the bf16 operand already in fm_conv2d_operand16(l):
 * `as` stands for it (it is never read): fm_conv2d_keeps_x(l, as) holds and
 * fm_conv2d_backward(l, as, ...) takes that operand for x. */
int fm_conv2d_forward16(fm_conv2d *l, const float *as, float *y, fm_err *e);

/* Given x (the forward input) and dy [N, Ho, Wo, Cout], OVERWRITE dx
 * [N, H, W, Cin] (skipped when dx is NULL) and the weight and bias gradient
 * views. Must follow a forward call made with the current weights (it may
 * reuse that call's reordered weights). */
int fm_conv2d_backward(fm_conv2d *l, const float *x, const float *dy, float *dx, fm_err *e);

/* 1 when fm_conv2d_backward(l, x, ...) will not read x: under bf16 the layer
 * keeps the rounded copy of its latest forward input, and x is that same
 * buffer. A model that recomputes x for backward may then skip it. */
int fm_conv2d_keeps_x(const fm_conv2d *l, const float *x);

/* Floating-point operations (multiply and add counted separately):
 * forward 2*N*Ho*Wo*Cout*Cin*k*k; backward the same per product computed
 * (weights, plus data when with_dx). */
double fm_conv2d_flops_fwd(const fm_conv2d *l);
double fm_conv2d_flops_bwd(const fm_conv2d *l, int with_dx);

/* Destroy the oneDNN objects (arena and parameter memory stay with their owners). */
void fm_conv2d_free(fm_conv2d *l);

#endif
