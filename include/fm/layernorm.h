/* layernorm.h - LayerNorm over the last dimension (torch.nn.LayerNorm(dim,
 * eps, elementwise_affine)), forward and backward.
 *
 * x [rows, D] (rows = B*T tokens of a [B, T, D] tensor):
 *   mean_r = sum_i x[r, i] / D,  var_r = sum_i (x[r, i] - mean_r)^2 / D (biased),
 *   rstd_r = 1 / sqrt(var_r + eps),  xhat = (x - mean_r) * rstd_r,
 *   y = xhat * weight + bias   (affine), or y = xhat (no affine).
 * Parameters (affine only), named as the torch module's state dict:
 * "<name>.weight" [D] (init 1) and "<name>.bias" [D] (init 0).
 * Row statistics are accumulated in double. Forward saves mean and rstd per
 * row (arena buffers) for backward. */
#ifndef FM_LAYERNORM_H
#define FM_LAYERNORM_H

#include <stdint.h>

#include "fm/arena.h"
#include "fm/params.h"
#include "fm/profile.h"
#include "fm/status.h"

typedef struct fm_layernorm {
    int64_t rows, dim;
    float eps;
    fm_param *weight;  /* [D], NULL without affine */
    fm_param *bias;    /* [D], NULL without affine */
    float *mean;       /* [rows] saved by forward */
    float *rstd;       /* [rows] saved by forward */
    fm_prof_site *prof; /* profiling site (profile.h): NULL = off, the default; set by the model's walk */
} fm_layernorm;

/* Set up for x [rows, dim]; with affine, register "<name>.weight" and
 * "<name>.bias" in p (p and name are unused without affine and may be NULL).
 * The row statistics come from arena a. Bad sizes or eps < 0 give
 * FM_ERR_USAGE naming the layer. */
int fm_layernorm_init(fm_layernorm *l, fm_params *p, fm_arena *a, const char *name, int64_t dim, int affine,
                      float eps, int64_t rows, fm_err *e);

/* y [rows, D] = LayerNorm(x); saves mean and rstd. y may equal x. */
int fm_layernorm_forward(fm_layernorm *l, const float *x, float *y, fm_err *e);

/* y = LayerNorm(x) from the statistics saved by the latest forward on this
 * same x (recomputes an output that was not kept, without new statistics).
 * y may equal x. Profiled as "<layer>.recompute" of backward (profile.h). */
int fm_layernorm_apply(const fm_layernorm *l, const float *x, float *y, fm_err *e);

/* Given x (the input of the latest forward) and dy [rows, D], OVERWRITE
 * dx = dL/dx (skipped when dx is NULL; dx may equal dy) and, with affine, the
 * weight gradient sum_r dy * xhat and the bias gradient sum_r dy. The
 * parameter sums run in a fixed order, independent of the thread count. */
int fm_layernorm_backward(fm_layernorm *l, const float *x, const float *dy, float *dx, fm_err *e);

/* Nothing to destroy (arena and parameter memory stay with their owners);
 * clears the struct. */
void fm_layernorm_free(fm_layernorm *l);

#endif
