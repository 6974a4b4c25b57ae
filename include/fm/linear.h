/* linear.h - fully connected layer (PyTorch nn.Linear semantics) on oneDNN matmul.
 *
 * y [M, out] = x [M, in] W^T + b for a number of rows M (batch x tokens) fixed
 * at init. Parameters keep PyTorch's layout: "<name>.weight" [out, in] and,
 * when bias is on, "<name>.bias" [out]. The transposes (W^T in forward, dy^T in
 * the weight gradient) are strided memory descriptors over the same buffers:
 * nothing is copied. Scratchpad memory is user-managed: one buffer per layer,
 * from the arena, sized for the largest of the three primitives.
 *
 * bf16 (d->bf16 at init): x, dy and W are rounded into bf16 arena copies
 * (W once per forward; backward reuses it, and forward's copy of x when
 * given the same buffer), the matmuls accumulate in fp32
 * and y, dx, dW and db stay fp32, as do the parameters. */
#ifndef FM_LINEAR_H
#define FM_LINEAR_H

#include <stdint.h>

#include "fm/arena.h"
#include "fm/dnn.h"
#include "fm/params.h"
#include "fm/profile.h"
#include "fm/status.h"
#include "fm/tensor.h"

typedef struct fm_linear {
    fm_dnn *d;
    fm_param *weight;  /* [out, in] */
    fm_param *bias;    /* [out], NULL without bias */
    int64_t m, in, out;

    dnnl_primitive_t fwd;          /* y = x W^T (+ b)  */
    dnnl_primitive_t bwd_data;     /* dx = dy W        */
    dnnl_primitive_t bwd_weights;  /* dW = dy^T x      */

    /* memory objects; activation handles are attached on each call */
    dnnl_memory_t m_x;    /* [M, in]                          */
    dnnl_memory_t m_y;    /* [M, out]                         */
    dnnl_memory_t m_dy;   /* dy [M, out] (operand type)       */
    dnnl_memory_t m_dx;   /* [M, in]                          */
    dnnl_memory_t m_dyt;  /* dy^T [out, M], strides {1, out}  */
    dnnl_memory_t m_wt;   /* W^T [in, out], strides {1, in}   */
    dnnl_memory_t m_w;    /* W [out, in]                      */
    dnnl_memory_t m_dw;   /* dW [out, in]                     */
    dnnl_memory_t m_b;    /* [1, out], NULL without bias      */
    dnnl_memory_t m_scratch;
    size_t scratch_bytes;
    fm_bf16_copy x16;           /* bf16 copy of x (arena; buf NULL in fp32) */
    uint16_t *dy16, *w16;       /* bf16 copies of dy and W (arena); NULL in fp32 */
    fm_prof_site *prof; /* profiling site (profile.h): NULL = off, the default; set by the model's walk */
} fm_linear;

/* Register "<name>.weight" [out, in] (and "<name>.bias" [out] if bias) in p
 * with PyTorch's default init (uniform, bound 1/sqrt(in), for both), then
 * create the primitives as fm_linear_init_params does. Bad sizes give
 * FM_ERR_USAGE naming the layer. */
int fm_linear_init(fm_linear *l, fm_dnn *d, fm_params *p, fm_arena *a, const char *name, int64_t in,
                   int64_t out, int bias, int64_t m, fm_err *e);

/* Build the layer on parameters registered by the caller (for modules whose
 * state dict names them differently, e.g. attention's "in_proj_weight"):
 * weight must be [out, in], bias [out] or NULL. Values are left as they are.
 * Creates every oneDNN primitive for M rows and takes the scratchpad from a
 * (on a measuring arena, arena.h, it only sizes: no primitives; the layer may
 * then only be freed). */
int fm_linear_init_params(fm_linear *l, fm_dnn *d, fm_arena *a, fm_param *weight, fm_param *bias,
                          int64_t m, fm_err *e);

/* y [M, out] = x [M, in] W^T + b. */
int fm_linear_forward(fm_linear *l, const float *x, float *y, fm_err *e);

/* Given x [M, in] (the forward input) and dy [M, out], OVERWRITE the weight
 * gradient (dy^T x), the bias gradient (column sums of dy) and dx [M, in] =
 * dy W (skipped when dx is NULL), in that order: dx may alias x, not dy.
 * Needs no state from forward. */
int fm_linear_backward(fm_linear *l, const float *x, const float *dy, float *dx, fm_err *e);

/* The second linear of an MLP, after its GELU: y = gelu(h) W^T + b, h
 * [M, in]. x [M, in] is the caller's buffer for gelu(h) (the x of the
 * backward): fp32 writes it and runs fm_linear_forward; bf16 rounds gelu(h)
 * straight into the layer's bf16 copy of x, which then stands for x
 * (fm_linear_keeps_x(l, x) holds until the next forward), and x is not
 * written. Same results as fm_gelu_forward(h, x) then fm_linear_forward. */
int fm_linear_forward_gelu(fm_linear *l, const float *h, float *x, float *y, fm_err *e);

/* The first linear of an MLP, before its GELU: fm_linear_backward with
 * dy = dg * gelu'(h), where h [M, out] is this layer's forward OUTPUT and dg
 * the gradient of gelu(h). dg may be overwritten (fp32, and narrow layers:
 * with dy, by fm_gelu_backward); under bf16 with a bias and at least 512
 * output columns dy is never stored: the pass that rounds it for the matrix
 * products also sums the bias gradient. Same results as
 * fm_gelu_backward(h, dg, dg) then fm_linear_backward(l, x, dg, dx). */
int fm_linear_backward_gelu(fm_linear *l, const float *x, const float *h, float *dg, float *dx, fm_err *e);

/* 1 when fm_linear_backward(l, x, ...) will not read x: under bf16 the layer
 * keeps the rounded copy of its latest forward input, and x is that same
 * buffer. A model that recomputes x for backward may then skip it. */
int fm_linear_keeps_x(const fm_linear *l, const float *x);

/* Floating-point operations (multiply and add counted separately): forward
 * 2*M*in*out (+ M*out with bias); backward 2*M*in*out for the weights
 * (+ M*out with bias) plus 2*M*in*out when with_dx. */
double fm_linear_flops_fwd(const fm_linear *l);
double fm_linear_flops_bwd(const fm_linear *l, int with_dx);

/* Destroy the oneDNN objects (arena and parameter memory stay with their
 * owners). Safe after a failed init, which leaves the layer zeroed or partly
 * built. */
void fm_linear_free(fm_linear *l);

#endif
