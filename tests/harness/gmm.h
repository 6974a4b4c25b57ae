/* gmm.h - a Gaussian mixture in low dimension whose flow quantities are known
 * in closed form, for the sampler and target tests.
 *
 * Classes c < C: z ~ N(mu_c, diag(s2)); the null label C: the equal-weight
 * mixture of the C components. For the Gaussian path x = alpha z + beta eps
 * (path.h), component c's marginal is N(alpha mu_c, V), V = alpha^2 s2 + beta^2
 * per dim, and, (z, eps, x) being jointly Gaussian given c,
 *   E[z | x, c]   = mu_c + alpha s2 / V (x - alpha mu_c)
 *   E[eps | x, c] = beta / V (x - alpha mu_c)
 *   u_c(x) = dalpha E[z | x, c] + dbeta E[eps | x, c]
 *          = dalpha mu_c + (alpha dalpha s2 + beta dbeta) / V (x - alpha mu_c).
 * For the null label each is the posterior-weighted sum over the components,
 * weights proportional to N(x; alpha mu_c, V) (the velocity by linearity of
 * the continuity equation, the conditional means by Bayes). */
#ifndef FM_TEST_GMM_H
#define FM_TEST_GMM_H

#include "fm/path.h"

enum { FM_GMM_MAXC = 4, FM_GMM_MAXD = 4 };

typedef struct fm_gmm {
    int C, D;
    double mu[FM_GMM_MAXC][FM_GMM_MAXD];
    double s2[FM_GMM_MAXD]; /* per-dim variance of every component */
} fm_gmm;

/* The exact conditional means of one point x [D] at path coefficients c under
 * label y (C = the mixture): Ez = E[z|x], Ee = E[eps|x], u = the velocity
 * (any may be NULL), each [D]. */
void fm_gmm_means(const fm_gmm *g, const fm_path_coef *c, int y, const float *x, double *Ez, double *Ee, double *u);

#endif
