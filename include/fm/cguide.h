/* cguide.h - classifier guidance for flow samplers.
 *
 * For the affine Gaussian path x_t = alpha_t x1 + beta_t x0 (path.h; x0 the
 * noise, x1 the data) the velocity and score of p_t are related by
 *   u_t(x) = (beta gamma s_t(x) + dalpha x) / alpha,  gamma = dalpha beta - dbeta alpha
 * (invert fm_path_score). The class-conditional path p_t(x | y) has the same
 * relation, and s_t(x | y) = s_t(x) + grad_x log p_t(y | x) (Bayes), so
 *   u_t(x | y) = u_t(x) + c(t) grad_x log p_t(y | x),  c(t) = beta gamma / alpha.
 * linear (alpha = t, beta = 1 - t, gamma = 1):      c(t) = (1 - t) / t
 * cosine (alpha = sin(pi t/2), beta = cos(pi t/2),
 *         gamma = pi/2):                              c(t) = (pi/2) cot(pi t/2)
 * c(t) -> 0 at t = 1 (no noise left) and -> infinity at t = 0 where
 * grad log p_0(y | x) = 0 (x_0 is independent of y); their product has a
 * finite limit that a learned classifier cannot give, so guidance is off at
 * alpha_t = 0 (the first step of every sampler, t = 0).
 *
 * The sampler adds s c(t) grad_x log p_t(y | x) (s = the classifier scale) to
 * its CFG-mixed velocity at every model evaluation; s = 1 with w = 0 turns an
 * unconditional model into the conditional one when the classifier is exact. */
#ifndef FM_CGUIDE_H
#define FM_CGUIDE_H

#include <stdint.h>

#include "fm/path.h"
#include "fm/status.h"

/* grad [n, D] <- grad_x log p_t(y_i | x_i) at one time t for every row
 * (0 for a null label y_i); returns FM_OK or fills e. */
typedef int (*fm_logp_grad_fn)(void *ctx, const float *x, double t, const int32_t *y, int n, float *grad,
                               fm_err *e);

typedef struct fm_cguide {
    fm_logp_grad_fn grad_fn;
    void *ctx;
    float scale;  /* s; 0 = off */
    float *delta; /* [B, D] the last correction s c(t) grad (the caller's buffer) */
} fm_cguide;

/* c(t) = beta gamma / alpha of path k; 0 where alpha = 0. */
double fm_cguide_coef(fm_path_kind k, double t);

/* g->delta <- s c(t) grad_x log p_t(y | x) for x [B, D]; nothing (and *on =
 * 0) when g is NULL, s = 0 or c(t) = 0. Call before x can be overwritten. */
int fm_cguide_prepare(const fm_cguide *g, fm_path_kind k, const float *x, double t, const int32_t *y, int B, long D,
                      int *on, fm_err *e);
/* u [n] += g->delta (after fm_cguide_prepare set *on). */
void fm_cguide_add(const fm_cguide *g, float *u, long n);

#endif
