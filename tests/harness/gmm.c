/* gmm.c - closed-form flow quantities of a Gaussian mixture (gmm.h). */
#include "gmm.h"

#include <math.h>

/* Component k's E[z|x], E[eps|x] and velocity, accumulated with weight wk. */
static void comp_add(const fm_gmm *g, const fm_path_coef *c, int k, const float *x, double wk, double *Ez, double *Ee,
                     double *u)
{
    for (int j = 0; j < g->D; j++) {
        const double V = c->alpha * c->alpha * g->s2[j] + c->beta * c->beta, d = x[j] - c->alpha * g->mu[k][j];
        if (Ez)
            Ez[j] += wk * (g->mu[k][j] + c->alpha * g->s2[j] / V * d);
        if (Ee)
            Ee[j] += wk * (c->beta / V * d);
        if (u)
            u[j] += wk * (c->dalpha * g->mu[k][j] + (c->alpha * c->dalpha * g->s2[j] + c->beta * c->dbeta) / V * d);
    }
}

void fm_gmm_means(const fm_gmm *g, const fm_path_coef *c, int y, const float *x, double *Ez, double *Ee, double *u)
{
    for (int j = 0; j < g->D; j++) {
        if (Ez)
            Ez[j] = 0;
        if (Ee)
            Ee[j] = 0;
        if (u)
            u[j] = 0;
    }
    if (y < g->C) {
        comp_add(g, c, y, x, 1.0, Ez, Ee, u);
        return;
    }
    double lw[FM_GMM_MAXC], mx = -INFINITY, sum = 0;
    for (int k = 0; k < g->C; k++) {
        lw[k] = 0;
        for (int j = 0; j < g->D; j++) {
            const double V = c->alpha * c->alpha * g->s2[j] + c->beta * c->beta, d = x[j] - c->alpha * g->mu[k][j];
            lw[k] -= d * d / (2 * V);
        }
        mx = fmax(mx, lw[k]);
    }
    for (int k = 0; k < g->C; k++)
        sum += (lw[k] = exp(lw[k] - mx));
    for (int k = 0; k < g->C; k++)
        comp_add(g, c, k, x, lw[k] / sum, Ez, Ee, u);
}
