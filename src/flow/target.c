/* target.c - prediction targets (x1, eps, v) and their conversion to the velocity. */
#include "fm/target.h"

#include <string.h>

#define PAR_MIN 65536 /* elements below which loops stay serial */

const char *fm_target_name(fm_target_kind k)
{
    switch (k) {
    case FM_TARGET_X1:
        return "x1";
    case FM_TARGET_EPS:
        return "eps";
    case FM_TARGET_V:
        return "v";
    default:
        return "velocity";
    }
}

double fm_target_time(fm_target_kind k, double t)
{
    if (k == FM_TARGET_X1 && t > 1.0 - FM_TARGET_T_EDGE)
        return 1.0 - FM_TARGET_T_EDGE;
    if (k == FM_TARGET_EPS && t < FM_TARGET_T_EDGE)
        return FM_TARGET_T_EDGE;
    return t;
}

fm_target_coef fm_target_coefs(fm_target_kind k, fm_path_kind path, double t)
{
    const fm_path_coef c = fm_path_coefs(path, t);
    const double gamma = c.dalpha * c.beta - c.dbeta * c.alpha;
    switch (k) {
    case FM_TARGET_X1:
        return (fm_target_coef){ c.dbeta / c.beta, gamma / c.beta };
    case FM_TARGET_EPS:
        return (fm_target_coef){ c.dalpha / c.alpha, -gamma / c.alpha };
    case FM_TARGET_V: {
        const double r = c.alpha * c.alpha + c.beta * c.beta;
        return (fm_target_coef){ (c.alpha * c.dalpha + c.beta * c.dbeta) / r, -gamma / r };
    }
    default:
        return (fm_target_coef){ 0.0, 1.0 };
    }
}

void fm_target_of_pair(fm_target_kind k, fm_path_kind path, double t, const float *z, const float *eps, long d,
                       float *out)
{
    const fm_path_coef c = fm_path_coefs(path, t);
    /* out = cz z + ce eps */
    float cz, ce;
    switch (k) {
    case FM_TARGET_X1:
        cz = 1.0f, ce = 0.0f;
        break;
    case FM_TARGET_EPS:
        cz = 0.0f, ce = 1.0f;
        break;
    case FM_TARGET_V:
        cz = (float)-c.beta, ce = (float)c.alpha;
        break;
    default:
        cz = (float)c.dalpha, ce = (float)c.dbeta;
        break;
    }
    for (long j = 0; j < d; j++)
        out[j] = cz * z[j] + ce * eps[j];
}

void fm_target_to_velocity(fm_target_kind k, fm_path_kind path, double t, const float *x, const float *p, long n,
                           float *u)
{
    if (k == FM_TARGET_VELOCITY) {
        if (u != p)
            memcpy(u, p, (size_t)n * sizeof *u);
        return;
    }
    const fm_target_coef c = fm_target_coefs(k, path, t);
    const float cx = (float)c.cx, cp = (float)c.cp;
#pragma omp parallel for if (n > PAR_MIN) schedule(static)
    for (long i = 0; i < n; i++)
        u[i] = cx * x[i] + cp * p[i];
}
