/* frechet.h - Fréchet distance between two Gaussians fitted to feature sets:
 *   FD = |mu1 - mu2|^2 + tr(S1) + tr(S2) - 2 tr((S1^1/2 S2 S1^1/2)^1/2)
 * (the FID formula, with our classifier's features instead of Inception's).
 * The matrix square roots come from LAPACK's symmetric eigensolver (dsyevd),
 * so the trace term is computed on a symmetric matrix and stays real. */
#ifndef FM_FRECHET_H
#define FM_FRECHET_H

#include "fm/status.h"

/* Mean [d] and covariance [d, d] (unbiased, n-1) of n feature rows [n, d]. */
int fm_feature_stats(const float *x, int n, int d, double *mean, double *cov, fm_err *e);

/* FD between N(mu1, c1) and N(mu2, c2) in d dimensions. */
int fm_frechet(const double *mu1, const double *c1, const double *mu2, const double *c2, int d, double *out,
               fm_err *e);

#endif
