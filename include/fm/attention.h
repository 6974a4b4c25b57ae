/* attention.h - multi-head self-attention with the semantics of
 * torch.nn.MultiheadAttention(C, heads, batch_first=True) called as
 * attn(x, x, x) (no dropout, no mask).
 *
 * x [B, T, C] (the same memory as an NHWC [B, H, W, C] map with T = H*W):
 *   qkv [B, T, 3C] = x W_in^T + b_in          (q, k, v side by side)
 *   per batch b and head i (d = C / heads, channels i*d .. i*d+d-1):
 *     P = softmax(Q K^T / sqrt(d))            [T, T], rows sum to 1
 *     O = P V                                 [T, d], into o [B, T, C]
 *   y [B, T, C] = o W_out^T + b_out
 * Parameters, named as the torch module's state dict: "<name>.in_proj_weight"
 * [3C, C], "<name>.in_proj_bias" [3C], "<name>.out_proj.weight" [C, C],
 * "<name>.out_proj.bias" [C].
 *
 * The projections are oneDNN matmuls (fm_linear). The per-head part is one
 * fused loop nest per (sample, head), threaded over B x heads: S = Q K^T,
 * the softmax and O = P V in forward; dV, dP, the softmax backward, dQ and dK
 * in backward. It reads the heads in place from qkv (rows 3C apart), keeps
 * K^T or V^T of the head in a per-thread scratch so every inner loop runs
 * contiguously over tokens or head channels, and writes o and dqkv in place.
 * At the models' sizes (T = 16-64 tokens, 32-64 channels per head) a head's
 * working set is a few KB and stays in L1; oneDNN's batched matmuls on the
 * same strided views took ten times longer. Each (sample, head) is computed
 * by one thread in a fixed order, so results do not depend on the thread
 * count. With T = 16 (the 4x4 maps of the U-Net, the DiT's 16 patches), a
 * head size that is a multiple of 16 and AVX-512, the transposes, the
 * softmax and its backward take one 16-float register per row (the 16x16
 * transposes in registers); the products are the same loops. Forward saves
 * qkv, P and o in arena buffers for backward. */
#ifndef FM_ATTENTION_H
#define FM_ATTENTION_H

#include <stdint.h>

#include "fm/arena.h"
#include "fm/dnn.h"
#include "fm/linear.h"
#include "fm/params.h"
#include "fm/profile.h"
#include "fm/status.h"

typedef struct fm_attention {
    fm_dnn *d;
    fm_linear in_proj;   /* C -> 3C on "<name>.in_proj_weight" / "<name>.in_proj_bias" */
    fm_linear out_proj;  /* C -> C, "<name>.out_proj.{weight,bias}" */
    int64_t b, t, c, heads, hd;  /* hd = C / heads */
    float scale;                 /* 1 / sqrt(hd) */

    /* arena buffers */
    float *qkv;   /* [B, T, 3C] saved by forward */
    float *p;     /* [B, heads, T, T] softmax probabilities, saved by forward */
    float *o;     /* [B, T, C] head outputs (out_proj input), saved by forward */
    float *dp;    /* [B, heads, T, T] backward scratch: dP, then dS in place */
    float *dout;  /* [B, T, C] backward scratch: gradient of o */
    float *dqkv;  /* [B, T, 3C] backward scratch: gradient of qkv */

    /* per-thread scratch of the fused core: K^T or V^T of one head [hd, T] */
    int nthr;           /* threads the core runs on (omp_get_max_threads() at init) */
    float *ws;          /* [nthr, ws_stride] */
    int64_t ws_stride;  /* hd * T */
    int fast16;         /* T = 16, hd % 16 = 0 and AVX-512: the register-row core (attention.c) */
    fm_prof_site *prof; /* profiling site (profile.h): NULL = off, the default; set by the model's walk */
} fm_attention;

/* Register the four parameters in p with PyTorch's initialisation
 * (in_proj_weight Xavier-uniform, bound sqrt(6 / (C + 3C)); out_proj.weight
 * uniform, bound 1/sqrt(C); both biases zero), create every primitive for
 * x [b, t, c] with `heads` heads and take all buffers from arena a.
 * c % heads != 0 or a size < 1 gives FM_ERR_USAGE naming the layer. */
int fm_attention_init(fm_attention *l, fm_dnn *d, fm_params *p, fm_arena *a, const char *name, int64_t c,
                      int64_t heads, int64_t b, int64_t t, fm_err *e);

/* y [B, T, C] = MultiheadAttention(x, x, x) for x [B, T, C]. Saves qkv, P and
 * o for backward, which also needs x itself unchanged. */
int fm_attention_forward(fm_attention *l, const float *x, float *y, fm_err *e);

/* Given x (the input of the latest forward, which must have run with the
 * current weights) and dy [B, T, C], OVERWRITE dx [B, T, C] (skipped when dx
 * is NULL) and the gradients of all four parameters. dx is written last, so
 * it may alias x or dy. */
int fm_attention_backward(fm_attention *l, const float *x, const float *dy, float *dx, fm_err *e);

/* 1 when fm_attention_backward(l, x, ...) will not read x (bf16: the input
 * projection keeps its rounded copy of x; see fm_linear_keeps_x). */
int fm_attention_keeps_x(const fm_attention *l, const float *x);

/* Floating-point operations of the matrix products (multiply and add counted
 * separately; the softmax is not counted): forward
 * 2*B*T*C*3C + 2 * 2*B*T*T*C + 2*B*T*C*C (+ bias adds); backward twice each
 * product (the in_proj data gradient only when with_dx). */
double fm_attention_flops_fwd(const fm_attention *l);
double fm_attention_flops_bwd(const fm_attention *l, int with_dx);

/* Destroy the oneDNN objects; safe after a failed init. */
void fm_attention_free(fm_attention *l);

#endif
