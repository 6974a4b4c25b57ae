/* cguide.c - classifier guidance: the score-to-velocity coefficient and the
 * sampler's correction (see cguide.h). */
#include "fm/cguide.h"

#include <math.h>

#define PAR_MIN 65536 /* elements below which loops stay serial */

double fm_cguide_coef(fm_path_kind k, double t)
{
    fm_path_coef c = fm_path_coefs(k, t);
    if (c.alpha == 0.0)
        return 0.0;
    return c.beta * (c.dalpha * c.beta - c.dbeta * c.alpha) / c.alpha;
}

int fm_cguide_prepare(const fm_cguide *g, fm_path_kind k, const float *x, double t, const int32_t *y, int B, long D,
                      int *on, fm_err *e)
{
    *on = 0;
    if (!g || g->scale == 0.0f)
        return FM_OK;
    const double c = fm_cguide_coef(k, t);
    if (c == 0.0)
        return FM_OK;
    if (!isfinite(g->scale))
        return fm_fail(e, FM_ERR_USAGE, "classifier guidance: scale is not finite");
    int rc = g->grad_fn(g->ctx, x, t, y, B, g->delta, e);
    if (rc != FM_OK)
        return fm_err_prefix(e, "classifier guidance at t=%.4f", t);
    const long n = (long)B * D;
    const float a = (float)(g->scale * c);
#pragma omp parallel for if (n > PAR_MIN) schedule(static)
    for (long i = 0; i < n; i++)
        g->delta[i] *= a;
    *on = 1;
    return FM_OK;
}

void fm_cguide_add(const fm_cguide *g, float *u, long n)
{
#pragma omp parallel for if (n > PAR_MIN) schedule(static)
    for (long i = 0; i < n; i++)
        u[i] += g->delta[i];
}
