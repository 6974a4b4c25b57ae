/* dit.h - the diffusion-transformer velocity model u_theta(x, t, y) of the flow
 * stage (DiT with adaLN-zero, Peebles & Xie 2023; DESIGN.md section 3),
 * composed from the layers of src/nn. The second architecture beside the U-Net
 * (flow.model: dit); same API shape as unet.h.
 *
 * Sizes: x [B, H, W, in] NHWC with H = W = size, patch side p, tokens
 * T = (size/p)^2 of P = p*p*in features (patch.h), width D, MLP width
 * Hd = (int)(mlp_ratio * D), F sinusoidal time features. Names are the
 * state-dict keys of the PyTorch twin (tests/parity/twin_dit.py), registered in
 * its state-dict order:
 *   h   = x_embed(patchify(x)) + pos              Linear(P, D)            "x_embed"
 *   c   = t_embed(t) + y_embed(y)                                          [B, D]
 *         t_embed = Linear(D, D)(SiLU(Linear(F, D)(sinusoidal(t, F))))  "t_embed.0", "t_embed.2"
 *         (embed.h: cos first, t scaled by 1000); y_embed = Embedding(num_classes + 1, D) "y_embed",
 *         last row = the null label of CFG
 *   block i, "blocks.{i}":
 *     (shift1, scale1, gate1, shift2, scale2, gate2) = adaLN(SiLU(c)) Linear(D, 6D) "adaLN",
 *                                                     chunks of D in this order
 *     h = h + gate1 * attn(LN(h) * (1 + scale1) + shift1)   MultiheadAttention "attn"
 *     h = h + gate2 * mlp(LN(h) * (1 + scale2) + shift2)    Linear(D, Hd) "mlp.0", GELU(tanh),
 *                                                           Linear(Hd, D) "mlp.2"
 *   final: (shift, scale) = final.adaLN(SiLU(c))           Linear(D, 2D) "final.adaLN"
 *     out = unpatchify(final.linear(LN(h) * (1 + scale) + shift))   Linear(D, P) "final.linear"
 * Every LN is LayerNorm(D) without affine, eps 1e-6.
 *
 * Position embedding (fixed, not a parameter; the 2-D sin-cos table of DiT/MAE),
 * computed in double at init and rounded to fp32: with q = D/4,
 * omega_k = 10000^(-k/q) (k < q), the token in patch row i, patch column j gets
 *   pos[i*(size/p) + j, :] = [sin(j omega), cos(j omega), sin(i omega), cos(i omega)]
 * (four blocks of q; the column coordinate first, as MAE's meshgrid order).
 * D must be a multiple of 4.
 *
 * Init: PyTorch's defaults of each layer (Linear uniform 1/sqrt(fan_in),
 * Embedding N(0, 1), MultiheadAttention as attention.h), then adaLN-zero: the
 * weights and biases of every blocks.{i}.adaLN, of final.adaLN and of
 * final.linear are zero, so every block starts as the identity and the model
 * outputs 0.
 *
 * Memory: one arena per instance holds the saved activations (the residual
 * stream before every block and between its two halves, the attention and MLP
 * branch outputs, the MLP hidden pre-activation, the attention layer's own
 * buffers), the gradient buffers and all scratch. Backward recomputes the
 * cheap LayerNorm/modulate outputs and the GELU output instead of keeping
 * them. forward and backward never allocate. */
#ifndef FM_DIT_H
#define FM_DIT_H

#include <stddef.h>
#include <stdint.h>

#include "fm/arena.h"
#include "fm/attention.h"
#include "fm/dnn.h"
#include "fm/embed.h"
#include "fm/layernorm.h"
#include "fm/linear.h"
#include "fm/params.h"
#include "fm/status.h"

#define FM_DIT_T_SCALE 1000.0
#define FM_DIT_T_FREQ 256  /* default F */
#define FM_DIT_LN_EPS 1e-6f

typedef struct fm_dit_cfg {
    int in_ch;          /* 4 for latents, 1 for pixels */
    int size;           /* H = W of the input */
    int patch;          /* patch side p, divides size */
    int width;          /* token width D, a multiple of 4 and of heads */
    int depth;          /* number of blocks */
    int heads;          /* attention heads */
    double mlp_ratio;   /* MLP hidden width = (int)(mlp_ratio * D) */
    int num_classes;    /* classes without the null label */
    int t_freq;         /* sinusoidal time features F (even); 0 = FM_DIT_T_FREQ */
} fm_dit_cfg;

typedef struct fm_dit_block {
    fm_linear ada;                 /* D -> 6D on SiLU(c) */
    fm_layernorm ln1, ln2;
    fm_attention attn;
    fm_linear mlp0, mlp2;          /* D -> Hd, Hd -> D */
    int first_param, n_params;     /* p->items[first_param .. + n_params) */
    float *x;                      /* [B, T, D] block input (residual stream), saved */
    float *xmid;                   /* [B, T, D] after the attention half, saved */
    float *a;                      /* [B, T, D] attention output, saved */
    float *h1;                     /* [B, T, Hd] mlp.0 output (GELU input), saved */
    float *f;                      /* [B, T, D] mlp.2 output, saved */
    float *mod;                    /* [B, 6D] adaLN output, saved */
} fm_dit_block;

/* Called by fm_dit_backward each time the gradients of parameters
 * p->items[first .. first + n) are final (e.g. to start their allreduce);
 * a non-OK status aborts backward with that status. Order: final.*, blocks
 * from last to first, x_embed, then t_embed/y_embed. */
typedef int (*fm_dit_grad_hook)(void *ctx, int first, int n, fm_err *e);

typedef struct fm_dit {
    fm_dit_cfg cfg;
    fm_dnn *d;
    fm_params *p;
    int batch;
    int64_t tokens, pdim, hidden;  /* T, P, Hd */
    fm_arena arena;

    /* conditioning */
    fm_time_embed temb;
    fm_linear t0, t2;              /* F -> D, D -> D */
    fm_class_embed yemb;
    fm_linear x_embed;             /* P -> D */
    fm_linear final_ada;           /* D -> 2D */
    fm_layernorm final_ln;
    fm_linear final_linear;        /* D -> P */
    fm_dit_block *blocks;          /* [depth], from the arena */
    int x_first, x_n;              /* x_embed's parameter range */
    int cond_first, cond_n;        /* t_embed.0, t_embed.2, y_embed */
    int final_first, final_n;      /* final.adaLN, final.linear */

    /* saved inputs and activations */
    float *pos;                    /* [T, D] position embedding */
    float *tok;                    /* [B, T, P] patchified input */
    float *t;                      /* [B] */
    int32_t *y;                    /* [B] */
    float *tf;                     /* [B, F] sinusoidal features */
    float *t1, *t1s, *ye, *c, *sc; /* [B, D]: t_embed.0 out, its SiLU, y_embed out, c, SiLU(c) */
    float *fmod;                   /* [B, 2D] final.adaLN output */
    float *xout;                   /* [B, T, D] residual stream after the last block */
    float *mfin;                   /* [B, T, D] final.linear input */
    float *otok;                   /* [B, T, P] final.linear output (p > 1) */

    /* scratch */
    float *s_n, *s_m, *s_g, *s_d;  /* [B, T, D] each */
    float *s_h;                    /* [B, T, Hd] */
    float *dmod, *dfmod;           /* [B, 6D], [B, 2D] */
    float *dsc, *dpart, *dc, *dt1; /* [B, D] */

    int forward_done;
    fm_dit_grad_hook hook;
    void *hook_ctx;
    double flops;
} fm_dit;

/* Check cfg: sizes > 0, width divisible by heads, size by patch, mlp_ratio *
 * width a whole number >= 1, width divisible by 4, t_freq even (>= 0).
 * FM_ERR_USAGE whose message starts with the config key of the field at fault
 * ("dit.heads: 3 does not divide dit.width = 256"; build.c adds where the key
 * was set). */
int fm_dit_cfg_check(const fm_dit_cfg *cfg, fm_err *e);

/* How large an fm_params must be for this cfg: *tensors entries, *padded
 * floats (with the per-tensor alignment fm_params_add uses; pass it to
 * fm_params_init) and *count parameters (any pointer may be NULL): what
 * fm_dit_init registers, counted by running it on a counting table. */
/* The arena bytes and padded parameter floats of fm_dit_init at batch,
 * measured without building it (sizing.h). */
int fm_dit_measure(const fm_dit_cfg *cfg, int batch, size_t *arena, size_t *params, fm_err *e);
int fm_dit_param_count(const fm_dit_cfg *cfg, int *tensors, size_t *padded, size_t *count, fm_err *e);

/* Register every parameter in p (the twin's state-dict order; the same names,
 * order and offsets for any batch size, so p->data of one instance can be
 * memcpy'd into another built on a separate fm_params), initialise them (see
 * above; from p->seed), build every layer for `batch` samples and take all
 * activation, gradient and scratch memory from one arena, sized exactly by
 * running the same set-up on a measuring arena first (arena.h). */
int fm_dit_init(fm_dit *m, fm_dnn *d, fm_params *p, const fm_dit_cfg *cfg, int batch, fm_err *e);

/* The flow stage uses the model through fm_dit_ops (flowmodel.h), which adds
 * the walk over its layers for profiling (scopes "cond", "embed",
 * "blocks.{i}", "final"); the typed functions below are what that table
 * calls, and what the tests call directly. */

/* out [B, H, W, in] = u_theta(x [B, H, W, in], t [B], y [B]); labels in
 * [0, num_classes] (num_classes = null; others give FM_ERR_DATA). The inputs
 * are copied: the caller may reuse them before backward. out must not overlap x. */
int fm_dit_forward(fm_dit *m, const float *x, const float *t, const int32_t *y, float *out, fm_err *e);

/* Given dout [B, H, W, in] = dL/dout for the latest forward, OVERWRITE the
 * gradient of every parameter (p->grad). The input gradient is not computed. */
int fm_dit_backward(fm_dit *m, const float *dout, fm_err *e);

/* Install (or clear, with fn = NULL) the gradient-ready hook. */
void fm_dit_set_grad_hook(fm_dit *m, fm_dit_grad_hook fn, void *ctx);

/* Forward floating-point operations for the whole batch (the matrix products;
 * a training step is about 3x). */
double fm_dit_flops(const fm_dit *m);

/* Bytes of the instance's arena in use (activations, gradients, scratch,
 * the layers' internal buffers). */
size_t fm_dit_activation_bytes(const fm_dit *m);

/* Destroy every layer and free the arena; safe after a failed init. */
void fm_dit_free(fm_dit *m);

#endif
