/* upconv.h - nearest x2 upsampling followed by a 3x3 convolution (stride 1,
 * zero padding 1), fused: PyTorch's nn.Conv2d(cin, cout, 3, padding=1) applied
 * to F.interpolate(x, scale_factor=2, mode='nearest'), without the upsampled
 * map.
 *
 * Each output parity (py, px) in {0,1}^2 is a 2x2 convolution of the
 * low-resolution x: y[2i+py, 2j+px] = b + sum_{a,b} W'_p[a][b] x[i+a-1+py, j+b-1+px]
 * (zero outside), where along each axis the three taps of W fold into two:
 * parity 0: (W[0], W[1] + W[2]), parity 1: (W[0] + W[1], W[2]). That is 4/9 of
 * the products of the convolution on the upsampled map.
 *
 * Activations are fp32 NHWC: x [N, H, W, Cin] -> y [N, 2H, 2W, Cout]. The
 * parameters are those of the nn.Conv2d: "<name>.weight" [Cout, Cin, 3, 3]
 * (OIHW) and, with bias, "<name>.bias" [Cout], same names and default init as
 * fm_conv2d_init, so checkpoints do not change.
 *
 * On oneDNN (choices measured on the U-Net's N=128, 4x4 -> 8x8, 128 -> 128,
 * 2 AVX-512 cores). Forward: per parity a 2x2 convolution with asymmetric
 * padding into a dense buffer, the four interleaved into y in one pass
 * (strided destination descriptors fall back to oneDNN's reference kernel;
 * one 2x2 convolution to 4*Cout channels computes 25/16 of the outputs and is
 * slower). Backward splits dy into the four parities in one pass; per parity,
 * backward-data is a forward 2x2 convolution of its dy with the flipped,
 * transposed weights, parities 1..3 adding into dx through a sum post-op (no
 * partial buffers, no summing pass), and backward-weights gives dW'_p, folded
 * back onto the 3x3 gradient. Forward folds the current weights into plain W'
 * and transposed buffers in one pass and reorders W' into the forward layout;
 * backward reorders the transposed set, so it must follow a forward with the
 * current weights. oneDNN's "jit" kernels are taken over its default brgconv
 * when it offers them for the same ISA (4x4 fp32: 14.4 -> 13.8 ms per forward
 * + backward). All primitives are made at init; all buffers come from the
 * arena (fm_upconv_arena_bytes gives their size).
 *
 * bf16 (d->bf16 at init): x, dy and the folded weights W' are rounded to bf16
 * operands (the fold itself in fp32); y, dx and the gradients stay fp32, as in
 * conv.h. The weight gradients dW'_p then come from fm_wgrad16 where it
 * applies (2x2 kernels with one-sided padding: it skips the padded taps,
 * 0.48 against oneDNN's 0.74-1.07 ms per parity at N=128, 4x4, 128 -> 128). */
#ifndef FM_UPCONV_H
#define FM_UPCONV_H

#include <stddef.h>
#include <stdint.h>

#include "fm/arena.h"
#include "fm/dnn.h"
#include "fm/params.h"
#include "fm/profile.h"
#include "fm/status.h"
#include "fm/tensor.h"
#include "fm/wgrad16.h"

#define FM_UPCONV_PARITIES 4

typedef struct fm_upconv {
    fm_dnn *d;
    fm_param *weight;  /* [Cout, Cin, 3, 3] */
    fm_param *bias;    /* [Cout], NULL without bias */
    int64_t n, h, w, cin, cout;  /* input [n, h, w, cin]; output [n, 2h, 2w, cout] */

    /* per parity p = 2 py + px */
    dnnl_primitive_t fwd[FM_UPCONV_PARITIES];         /* x -> yp */
    dnnl_primitive_t bwd_data[FM_UPCONV_PARITIES];    /* dyp -> dx (p > 0: dx +=) */
    dnnl_primitive_t bwd_weights[FM_UPCONV_PARITIES]; /* x, dyp -> dW'_p, db4[p] */
    dnnl_primitive_t w_reorder[FM_UPCONV_PARITIES], wt_reorder[FM_UPCONV_PARITIES],
        dw_reorder[FM_UPCONV_PARITIES];               /* NULL when the layout is the plain one */
    dnnl_memory_t m_w[FM_UPCONV_PARITIES], m_w_int[FM_UPCONV_PARITIES];   /* W'_p [Cout, Cin, 2, 2] */
    dnnl_memory_t m_wt[FM_UPCONV_PARITIES], m_wt_int[FM_UPCONV_PARITIES]; /* flipped W'_p^T [Cin, Cout, 2, 2] */
    dnnl_memory_t m_dw[FM_UPCONV_PARITIES], m_dw_int[FM_UPCONV_PARITIES]; /* dW'_p [Cout, Cin, 2, 2] */
    dnnl_memory_t m_db[FM_UPCONV_PARITIES];           /* [Cout], NULL without bias */
    dnnl_memory_t m_yp[FM_UPCONV_PARITIES], m_dyp[FM_UPCONV_PARITIES];  /* yp[p], dyp[p] (bf16: dyp16[p]) */
    dnnl_memory_t m_x, m_dx, m_b, m_scratch;

    /* plain fp32, [4][Cout][Cin][2][2] each: W'_p (OIHW), W'_p flipped (read
     * as IOHW: the transposed convolution's weights), dW'_p (OIHW) */
    float *wf, *wt, *dwf;
    float *db4;            /* [4][Cout] per-parity bias gradients, NULL without bias */
    float *yp;             /* [4][N, H, W, Cout] the parities' outputs (forward) */
    float *dyp;            /* [4][N, H, W, Cout] the parities' dy (backward; the buffer of yp) */
    uint16_t *dyp16;       /* [4][N, H, W, Cout] their bf16 rounding (NULL in fp32) */
    fm_bf16_copy x16;      /* bf16 copy of x (buf NULL in fp32) */
    size_t scratch_bytes;  /* the shared scratchpad */
    /* bf16 weight gradients by fm_wgrad16 (wgrad16.h) when the CPU has
     * AVX512-BF16 and Cin % 16 == 0; else wb.xp is NULL and oneDNN computes them */
    fm_wgrad16 wg[FM_UPCONV_PARITIES];  /* the parities' 2x2 geometries */
    fm_wgrad16_bufs wb;    /* its buffers: x and the four parities' dy, pair-packed */
    fm_prof_site *prof; /* profiling site (profile.h): NULL = off, the default; set by the model's walk */
} fm_upconv;

/* Register "<name>.weight" [cout, cin, 3, 3] (and "<name>.bias" [cout] if bias)
 * in p with PyTorch's default init (uniform, bound 1/sqrt(cin*9)), create every
 * oneDNN primitive for input [n, h, w, cin] and take the buffers from arena a.
 * Bad sizes give FM_ERR_USAGE naming the layer. On a measuring arena it only
 * sizes (no primitives; the layer may then only be freed). */
int fm_upconv_init(fm_upconv *l, fm_dnn *d, fm_params *p, fm_arena *a, const char *name, int64_t cin,
                   int64_t cout, int bias, int64_t n, int64_t h, int64_t w, fm_err *e);

/* y [N, 2H, 2W, Cout] = conv3x3(upsample2x(x [N, H, W, Cin])) + bias. */
int fm_upconv_forward(fm_upconv *l, const float *x, float *y, fm_err *e);

/* Given x (the forward input) and dy [N, 2H, 2W, Cout], OVERWRITE dx
 * [N, H, W, Cin] (skipped when dx is NULL) and the weight and bias gradient
 * views. Must follow a forward call made with the current weights (it uses
 * that call's folded weights). */
int fm_upconv_backward(fm_upconv *l, const float *x, const float *dy, float *dx, fm_err *e);

/* Floating-point operations done (multiply and add counted separately):
 * forward 4 parities x 2*N*H*W*Cout*Cin*4; backward the same per product
 * computed (weights, plus data when with_dx). */
double fm_upconv_flops_fwd(const fm_upconv *l);
double fm_upconv_flops_bwd(const fm_upconv *l, int with_dx);

/* *bytes = the arena bytes fm_upconv_init(d, ..., cin, cout, bias, n, h, w)
 * takes, exactly (d->bf16 included): that init run on a measuring arena and
 * a counting parameter table (see arena.h, params.h). */
int fm_upconv_arena_bytes(fm_dnn *d, int64_t cin, int64_t cout, int bias, int64_t n, int64_t h, int64_t w,
                          size_t *bytes, fm_err *e);

/* Destroy the oneDNN objects (arena and parameter memory stay with their owners). */
void fm_upconv_free(fm_upconv *l);

#endif
