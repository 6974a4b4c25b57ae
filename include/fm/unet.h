/* unet.h - the U-Net velocity model u_theta(x, t, y) of the flow stage
 * (ADM-style, small; DESIGN.md section 3), composed from the layers of src/nn.
 *
 * Activations are fp32 NHWC. For cfg.channels = {ch_0 .. ch_{L-1}}:
 *   c      = SiLU(time_mlp.2(SiLU(time_mlp.0(sinusoidal(t, ch_0)))) + class_emb[y])   [B, E]
 *   h      = conv_in(x)                                     3x3, in_ch -> ch_0
 *   down.i (side size/2^i): res_blocks x [ResBlock (+ AttnBlock when the side is in
 *          attn_res)], then a stride-2 3x3 conv "down.i.downsample" (not at the last
 *          level); conv_in's output and every block output are kept as skips
 *   mid    = ResBlock, AttnBlock, ResBlock                  "mid.0", "mid.1", "mid.2"
 *   up.i   (levels in reverse): res_blocks + 1 x [ResBlock on concat(h, skip.pop())
 *          (+ AttnBlock)], then nearest x2 + 3x3 conv "up.i.upsample" (not at level 0;
 *          fused, fm_upconv: four 2x2 convs on the low-resolution map)
 *   out    = out_conv(SiLU(out_norm(h)))                    3x3, ch_0 -> in_ch
 * ResBlock(Cin -> Cout), "<blk>.{norm1,conv1,emb_proj,norm2,conv2,skip}":
 *   h = conv1(SiLU(norm1(x))); (scale, shift) = emb_proj(c) split in halves;
 *   h = conv2(SiLU(norm2(h) * (1 + scale) + shift)); out = skip(x) + h,
 *   skip = 1x1 conv when Cin != Cout, identity otherwise.
 * AttnBlock(C), "<blk>.{norm,attn}": out = x + MultiheadAttention(norm(x)) over
 * the H*W tokens. Names are "down.{i}.res.{j}", "down.{i}.attn.{j}", "up.{i}.res.{j}",
 * "up.{i}.attn.{j}"; they equal the state-dict keys of the PyTorch twin
 * (tests/parity/twin_unet.py), and parameters are registered in the twin's
 * state-dict order.
 *
 * GroupNorm layers over C channels use min(groups, C) groups (eps 1e-5), which
 * must divide C. The time features use scale 1000 (t in [0, 1)). The class table
 * has num_classes + 1 rows; the last one is the null label of CFG.
 * Init: PyTorch defaults of each layer, except that every ResBlock's conv2 and
 * out_conv start at zero (weights and biases; ADM's "zero_module"), so the
 * model starts as the identity on its skip paths and outputs 0.
 *
 * Memory: one arena per instance holds every saved activation, the gradient
 * buffers and all scratch (the layers' internal buffers included). Backward
 * recomputes the cheap GroupNorm+SiLU outputs and channel concatenations
 * instead of keeping them; the activation gradients ping-pong
 * between two buffers, and only the skip gradients (produced by the up path,
 * consumed by the down path) have buffers of their own. forward and backward
 * never allocate. */
#ifndef FM_UNET_H
#define FM_UNET_H

#include <stddef.h>
#include <stdint.h>

#include "fm/arena.h"
#include "fm/attention.h"
#include "fm/conv.h"
#include "fm/dnn.h"
#include "fm/embed.h"
#include "fm/groupnorm.h"
#include "fm/linear.h"
#include "fm/params.h"
#include "fm/status.h"
#include "fm/upconv.h"

#define FM_UNET_MAX_LEVELS 8
#define FM_UNET_T_SCALE 1000.0
#define FM_UNET_GN_EPS 1e-5f

typedef struct fm_unet_cfg {
    int in_ch;                            /* 4 for latents, 1 for pixels */
    int size;                             /* H = W of the input */
    int levels;                           /* number of entries in channels */
    int channels[FM_UNET_MAX_LEVELS];     /* width per level; level i has side size / 2^i */
    int res_blocks;                       /* ResBlocks per level on the way down */
    int n_attn;                           /* number of entries in attn_res */
    int attn_res[FM_UNET_MAX_LEVELS];     /* sides that get self-attention */
    int heads;                            /* attention heads (divide every attended width) */
    int groups;                           /* GroupNorm groups (min(groups, C) per layer) */
    int emb_dim;                          /* width E of the (t, y) conditioning */
    int num_classes;                      /* classes without the null label */
} fm_unet_cfg;

/* ResBlock(Cin -> Cout) at side r. */
typedef struct fm_unet_res {
    fm_groupnorm norm1, norm2;  /* norm1 fused with SiLU; norm2 adaGN fused with SiLU */
    fm_conv2d conv1, conv2;     /* 3x3 */
    fm_conv2d skip;             /* 1x1, only when has_skip */
    int has_skip;
    fm_linear emb_proj;         /* E -> 2 Cout on c */
    float *h1;                  /* [B, r, r, Cout] conv1 output, saved */
    float *scale, *shift;       /* [B, Cout] each, saved */
} fm_unet_res;

/* AttnBlock(C) at side r. */
typedef struct fm_unet_attn {
    fm_groupnorm norm;
    fm_attention attn;
} fm_unet_attn;

typedef enum fm_unet_kind { FM_UNET_RES, FM_UNET_ATTN, FM_UNET_DOWN, FM_UNET_UP } fm_unet_kind;

/* One step of the chain conv_in -> blocks -> out (execution order). */
typedef struct fm_unet_block {
    int kind;            /* fm_unet_kind */
    int layer;           /* index into res[], attn[] or conv[] */
    int group;           /* registration group: down level i = i, mid = L, up level i = L + 1 + i */
    char name[48];       /* e.g. "up.1.res.2" */
    int side;            /* input side */
    int cin, cout;       /* input channels (with the concatenated skip), output channels */
    int skip_in;         /* skip concatenated to the input (up-path ResBlocks), -1 none */
    int skip_out;        /* the output is kept as skip number k, -1 none */
    int first_param, n_params; /* its parameters: p->items[first_param .. + n_params) */
    float *out;          /* [B, side', side', cout] output, saved */
} fm_unet_block;

/* Called by fm_unet_backward each time the gradients of parameters
 * p->items[first .. first + n) are final (e.g. to start their allreduce);
 * a non-OK status aborts backward with that status. */
typedef int (*fm_unet_grad_hook)(void *ctx, int first, int n, fm_err *e);

typedef struct fm_unet {
    fm_unet_cfg cfg;
    fm_dnn *d;
    fm_params *p;
    int batch;
    fm_arena arena;

    /* conditioning */
    fm_time_embed temb;
    fm_linear time_mlp0, time_mlp2;
    fm_class_embed class_emb;
    int cond_first_param, cond_n_params;

    fm_conv2d conv_in;
    fm_groupnorm out_norm;
    fm_conv2d out_conv;
    int conv_in_first_param, out_first_param;  /* 2 and 4 parameters */

    int nblocks, nres, nattn, nconv, nskips;
    fm_unet_block *blocks;  /* [nblocks] */
    fm_unet_res *res;       /* [nres] */
    fm_unet_attn *attn;     /* [nattn] */
    fm_conv2d *conv;        /* [nconv] downsample convs (conv[i] of an up block unused) */
    fm_upconv *upconv;      /* [nconv] nearest x2 + 3x3 conv of the up blocks (same index) */

    /* saved activations and inputs */
    float *x;               /* [B, H, W, in] copy of the input */
    float *t;               /* [B] */
    int32_t *y;             /* [B] */
    float *sin, *t1, *t1s, *tproj, *yemb, *pre, *c;  /* [B, ch0], then [B, E] each */
    float *h0;              /* [B, H, W, ch0] conv_in output (skip 0) */
    float **skip;           /* [nskips] the skip activations (pointers into the above) */
    int *skip_ch, *skip_side;  /* [nskips] channels and side of each skip */
    float **dskip;          /* [nskips] their gradients, [B, side, side, ch] each */

    /* scratch shared by forward and backward, max_numel floats each */
    float *sa, *sb, *t1buf, *g0, *g1;
    float *ep;              /* [B, 2 Cmax] emb_proj output / its gradient */
    float *dscale, *dshift; /* [B, Cmax] adaGN gradients */
    float *dc, *dcpart, *dpre;  /* [B, E] */
    size_t max_numel;

    int forward_done;
    fm_unet_grad_hook hook;
    void *hook_ctx;
    double flops;
} fm_unet;

/* Check cfg: sizes > 0, at most FM_UNET_MAX_LEVELS levels, size divisible by
 * 2^(levels-1), ch_0 even (sinusoidal features), every attn_res entry the
 * side of some level, every GroupNorm width (those of the levels, then those
 * of the blocks, concatenations included) divisible by its group count, every
 * attended width by heads. FM_ERR_USAGE whose message starts with the config
 * key of the field at fault ("unet.groups: 8 does not divide unet.channels[1]
 * = 100 (GroupNorm groups)"; build.c adds where the key was set). */
int fm_unet_cfg_check(const fm_unet_cfg *cfg, fm_err *e);

/* How large an fm_params must be for this cfg: *tensors entries, *padded
 * floats (including the per-tensor alignment fm_params_add uses; pass it to
 * fm_params_init), and *count the number of parameters (either may be NULL):
 * what fm_unet_init registers, counted by running it on a counting table. */
/* The arena bytes and padded parameter floats of fm_unet_init at batch,
 * measured without building it (sizing.h). */
int fm_unet_measure(const fm_unet_cfg *cfg, int batch, size_t *arena, size_t *params, fm_err *e);
int fm_unet_param_count(const fm_unet_cfg *cfg, int *tensors, size_t *padded, size_t *count, fm_err *e);

/* Register every parameter in p (in the twin's state-dict order; the same
 * names, order and offsets for any batch size, so p->data of one instance can
 * be copied into another built on a separate fm_params), initialise them (see
 * above; from p->seed), build every layer for `batch` samples and take all
 * activation, gradient and scratch memory from one arena, sized exactly by
 * running the same set-up on a measuring arena first (arena.h). */
int fm_unet_init(fm_unet *u, fm_dnn *d, fm_params *p, const fm_unet_cfg *cfg, int batch, fm_err *e);

/* The flow stage uses the model through fm_unet_ops (flowmodel.h), which adds
 * the walk over its layers for profiling (scopes: the block names, "cond",
 * "conv_in", "out"); the typed functions below are what that table calls, and
 * what the tests call directly. */

/* out [B, H, W, in_ch] = u_theta(x [B, H, W, in_ch], t [B], y [B]); labels in
 * [0, num_classes] (num_classes = null). The inputs are copied: the caller may
 * reuse them before backward. */
int fm_unet_forward(fm_unet *u, const float *x, const float *t, const int32_t *y, float *out, fm_err *e);

/* Given dout [B, H, W, in_ch] = dL/dout for the latest forward, OVERWRITE the
 * gradient of every parameter (p->grad). The input gradient is not computed. */
int fm_unet_backward(fm_unet *u, const float *dout, fm_err *e);

/* Install (or clear, with fn = NULL) the gradient-ready hook. */
void fm_unet_set_grad_hook(fm_unet *u, fm_unet_grad_hook fn, void *ctx);

/* Forward floating-point operations for the whole batch (matrix products and
 * convolutions; a training step is about 3x). */
double fm_unet_flops(const fm_unet *u);

/* Bytes of the instance's arena in use (activations, gradients, scratch,
 * the layers' internal buffers). */
size_t fm_unet_activation_bytes(const fm_unet *u);

/* Destroy every layer and free the arena; safe after a failed init. */
void fm_unet_free(fm_unet *u);

#endif
