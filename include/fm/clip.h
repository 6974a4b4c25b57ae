/* clip.h - global gradient norm and clipping (torch.nn.utils.clip_grad_norm_).
 *
 * The L2 norm is accumulated in double over a fixed split of the array (64
 * chunks summed in order), so it is the same for any thread count. A finite
 * sum of squares of fp32 values cannot overflow a double, so the norm is
 * NaN or Inf exactly when a gradient is. */
#ifndef FM_CLIP_H
#define FM_CLIP_H

#include <stddef.h>

#include "fm/params.h"

/* sqrt(sum g[i]^2) in double. */
double fm_grad_norm(const float *g, size_t n);

/* Returns the global norm of g[0..n). If it is finite, max_norm > 0 and
 * c = max_norm / (norm + 1e-6) < 1, scales every g[i] by (float)c, as
 * clip_grad_norm_ does. If the norm is NaN or Inf, leaves g untouched and
 * returns it: the caller tests isfinite() and skips the step. */
double fm_clip_grad_norm(float *g, size_t n, double max_norm);

/* ZeRO-1 pieces: the sum of squares over the spans of g (add the ranks'
 * sums for the global norm), and the scaling of those spans that
 * fm_clip_grad_norm applies for a global norm `norm`. */
double fm_grad_sumsq_spans(const float *g, const fm_span *spans, int nspans);
void fm_clip_scale_spans(float *g, const fm_span *spans, int nspans, double norm, double max_norm);

#endif
