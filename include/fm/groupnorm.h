/* groupnorm.h - GroupNorm over NHWC activations, optionally with per-sample
 * scale/shift (adaGN) and a fused SiLU, forward and backward.
 *
 * x [N, H, W, C] with C channels in G groups of C/G consecutive channels.
 * For each (n, g), mean and variance (biased, like torch) run over the
 * H*W*(C/G) values of the group:
 *   xhat = (x - mean) / sqrt(var + eps)
 *   u    = xhat * weight[c] + bias[c]               (torch.nn.GroupNorm)
 *   z    = u * (1 + scale[n, c]) + shift[n, c]      (adaGN; scale = shift = 0 without it)
 *   y    = silu(z) with FM_GN_SILU, else z
 * Statistics are per-channel sums of x - s and (x - s)^2 (s = the sample's
 * first pixel) in fp32 over short pixel blocks, the blocks summed in double,
 * and the fp32 rounding of the mean is compensated, so results stay accurate
 * to fp32 even when |mean| >> std. Thread count does not change any result.
 * All memory comes from the arena given to init: there is nothing to free.
 *
 * Parameters `<name>.weight` [C] (init 1) and `<name>.bias` [C] (init 0), as
 * torch.nn.GroupNorm(G, C, eps, affine=True) names them; none with
 * FM_GN_NO_AFFINE (then weight = 1, bias = 0). */
#ifndef FM_GROUPNORM_H
#define FM_GROUPNORM_H

#include <stdint.h>

#include "fm/arena.h"
#include "fm/params.h"
#include "fm/profile.h"
#include "fm/status.h"

enum {
    FM_GN_SILU = 1,       /* fuse y = silu(z) into forward and backward */
    FM_GN_NO_AFFINE = 2   /* no weight/bias parameters (affine=False) */
};

typedef struct fm_groupnorm {
    int n, h, w, c, groups;  /* fixed batch shape [N, H, W, C] and G */
    int flags;               /* FM_GN_* */
    float eps;
    int ss_stride;           /* floats between rows of scale/shift/dscale/dshift (default C) */
    int chunks;              /* pixel ranges per sample in the reductions (depends on the shape only) */
    fm_param *weight, *bias; /* [C] each; NULL with FM_GN_NO_AFFINE */
    float *mean, *rstd;      /* [N, G] saved by forward for backward */
    double *gmean;           /* [N, G] the mean in double, also saved (mean is its fp32 rounding) */
    float *cmu, *ca, *cb;    /* [N, C] forward: z = (x - cmu) * ca + cb per channel, kept for backward */
    float *cr, *cq;          /* [N, C] backward: dx = dz * ca + (x - cmu) * cr + cq (scratch) */
    double *acc1, *acc2;     /* [N * chunks + 1, C] partial sums (scratch) */
    fm_prof_site *prof; /* profiling site (profile.h): NULL = off, the default; set by the model's walk */
} fm_groupnorm;

/* Set up GroupNorm(groups, c, eps) for batches [n, h, w, c]; groups must divide
 * c. Registers `<name>.weight` and `<name>.bias` in p (p may be NULL with
 * FM_GN_NO_AFFINE) and takes saved statistics and scratch from arena a. */
int fm_groupnorm_init(fm_groupnorm *l, fm_params *p, fm_arena *a, const char *name, int groups, float eps,
                      int flags, int n, int h, int w, int c, fm_err *e);

/* y = groupnorm(x) (then silu with FM_GN_SILU). Saves mean and rstd.
 * y may equal x only if backward is not needed (backward reads x). */
int fm_groupnorm_forward(fm_groupnorm *l, const float *x, float *y, fm_err *e);

/* The adaGN form: scale [N, C] and shift [N, C]; either may be NULL (= 0).
 * Rows are l->ss_stride floats apart: set it to 2C after init to read
 * scale = emb[:, :C] and shift = emb[:, C:] straight from a Linear output
 * emb [N, 2C] (pass scale = emb, shift = emb + C), and to write dscale and
 * dshift into that Linear's output gradient the same way. */
int fm_groupnorm_forward_ada(fm_groupnorm *l, const float *x, const float *scale, const float *shift, float *y,
                             fm_err *e);

/* fm_groupnorm_forward_ada writing y16, the bf16 rounding (fm_f32_to_bf16)
 * of y, instead of y: for a consumer that reads bf16 operands
 * (fm_conv2d_operand16), without the fp32 output and a rounding pass. */
int fm_groupnorm_forward_ada16(fm_groupnorm *l, const float *x, const float *scale, const float *shift,
                               uint16_t *y16, fm_err *e);

/* y again, from the statistics and coefficients kept by the last forward,
 * which must have been on this x (with the same scale, shift and parameters):
 * the elementwise pass alone, for recomputing an output that was not stored
 * (bitwise the forward's y). Profiled as "<layer>.recompute" of backward
 * (profile.h). */
int fm_groupnorm_reforward(fm_groupnorm *l, const float *x, float *y, fm_err *e);

/* From the forward input x and dy [N, H, W, C]: overwrites dx (may be NULL;
 * may equal dy; must not overlap x) and the weight and bias gradients. Needs
 * the statistics and coefficients of the last forward, which must have been
 * on this x (with the same scale, shift and parameters). */
int fm_groupnorm_backward(fm_groupnorm *l, const float *x, const float *dy, float *dx, fm_err *e);

/* The adaGN backward: scale/shift as given to forward (shift is only read
 * there); also overwrites dscale [N, C] and dshift [N, C] (either may be
 * NULL = not needed). */
int fm_groupnorm_backward_ada(fm_groupnorm *l, const float *x, const float *scale, const float *shift,
                              const float *dy, float *dx, float *dscale, float *dshift, fm_err *e);

#endif
