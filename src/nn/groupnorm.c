/* groupnorm.c - GroupNorm (+ adaGN scale/shift, + fused SiLU) forward and
 * backward on NHWC activations (see groupnorm.h).
 *
 * Every pass walks pixels with the C channels innermost, so the inner loops
 * are contiguous and vectorise; per-(n, c) coefficients fold the group
 * statistics, the affine parameters and scale/shift into one multiply-add.
 * Reductions run over (sample, pixel-range) tasks, each summing in double into
 * its own row, combined afterwards in a fixed order: the result does not
 * depend on the number of threads. The loops subtract the fp32 mean mu_f;
 * the per-channel coefficients absorb the residual mu - mu_f (kept in double),
 * so even |mean| >> std costs no accuracy.
 *
 * Backward, with gam = weight * (1 + scale), M = H*W*C/G and dz = dL/dz:
 *   S1[n, c] = sum_p dz,  S2[n, c] = sum_p dz * xhat
 *   dshift = S1, dscale = weight * S2 + bias * S1
 *   dweight[c] = sum_n (1 + scale) S2,  dbias[c] = sum_n (1 + scale) S1
 *   dx = rstd * (gam dz - m1 - xhat m2),  m1 = sum_{c in g} gam S1 / M,
 *                                         m2 = sum_{c in g} gam S2 / M */
#include "fm/groupnorm.h"

#include <math.h>
#include <string.h>

#include "fm/act.h"

/* Below this many elements a parallel region costs more than it saves. */
#define PAR_MIN 32768

static int take(fm_arena *a, void **out, size_t bytes, const char *name, fm_err *e)
{
    if (fm_arena_alloc_or(a, bytes, out, e) != FM_OK)
        return fm_err_prefix(e, "groupnorm %s", name);
    return FM_OK;
}

int fm_groupnorm_init(fm_groupnorm *l, fm_params *p, fm_arena *a, const char *name, int groups, float eps,
                      int flags, int n, int h, int w, int c, fm_err *e)
{
    memset(l, 0, sizeof *l);
    if (n <= 0 || h <= 0 || w <= 0 || c <= 0 || groups <= 0 || c % groups)
        return fm_fail(e, FM_ERR_INTERNAL, "groupnorm %s: bad shape [%d, %d, %d, %d] with %d groups", name, n, h,
                       w, c, groups);
    if (!(eps > 0))
        return fm_fail(e, FM_ERR_INTERNAL, "groupnorm %s: eps must be > 0, got %g", name, (double)eps);
    l->n = n;
    l->h = h;
    l->w = w;
    l->c = c;
    l->groups = groups;
    l->flags = flags;
    l->eps = eps;
    l->ss_stride = c;
    /* enough (sample, pixel-range) tasks for the threads, >= 16 pixels each */
    const long hw = (long)h * w;
    long k = (32 + n - 1) / n;
    if (k > hw / 16)
        k = hw / 16;
    l->chunks = k < 1 ? 1 : (int)k;

    if (!(flags & FM_GN_NO_AFFINE)) {
        if (!p)
            return fm_fail(e, FM_ERR_INTERNAL, "groupnorm %s: affine but no parameter table", name);
        const int64_t shape[1] = { c };
        FM_TRY(fm_params_add(p, &l->weight, 1, shape, e, "%s.weight", name));
        FM_TRY(fm_params_add(p, &l->bias, 1, shape, e, "%s.bias", name));
        fm_param_fill(l->weight, 1.0f);
        fm_param_fill(l->bias, 0.0f);
    }
    const size_t ng = (size_t)n * groups, nc = (size_t)n * c, acc = (size_t)n * l->chunks * c;
    void *v[9];
    const size_t bytes[9] = { ng * sizeof(float), ng * sizeof(float), ng * sizeof(double),
                              nc * sizeof(float), nc * sizeof(float), nc * sizeof(float),
                              nc * sizeof(float), acc * sizeof(double), acc * sizeof(double) };
    for (int i = 0; i < 9; i++)
        FM_TRY(take(a, &v[i], bytes[i], name, e));
    l->mean = v[0];
    l->rstd = v[1];
    l->gmean = v[2];
    l->cmu = v[3];
    l->crs = v[4];
    l->ca = v[5];
    l->cb = v[6];
    l->acc1 = v[7];
    l->acc2 = v[8];
    return FM_OK;
}

/* weight[c] and bias[c], or 1 and 0 without affine parameters. */
static double weight_of(const fm_groupnorm *l, int c) { return l->weight ? fm_f32(&l->weight->w)[c] : 1.0; }
static double bias_of(const fm_groupnorm *l, int c) { return l->bias ? fm_f32(&l->bias->w)[c] : 0.0; }

/* 1 + scale[n, c] (1 without scale); rows of scale are ss_stride apart. */
static double one_plus_scale(const fm_groupnorm *l, const float *scale, int n, int c)
{
    return 1.0 + (scale ? scale[(long)n * l->ss_stride + c] : 0.0f);
}

/* mu - mu_f for group (n, g): the exact mean minus its fp32 rounding. */
static double mean_residual(const fm_groupnorm *l, int n, int g)
{
    const long i = (long)n * l->groups + g;
    return l->gmean[i] - (double)l->mean[i];
}

/* The forward's z = (x - mu_f) * ca + cb for (n, c) in group g:
 * ca = rstd * weight (1 + scale), cb = bias (1 + scale) + shift - ca (mu - mu_f). */
static void set_coef(fm_groupnorm *l, const float *scale, const float *shift, int n, int c, int g)
{
    const long i = (long)n * l->c + c;
    const double s1 = one_plus_scale(l, scale, n, c);
    const double a = (double)l->rstd[(long)n * l->groups + g] * weight_of(l, c) * s1;
    l->ca[i] = (float)a;
    l->cb[i] = (float)(bias_of(l, c) * s1 + (shift ? shift[(long)n * l->ss_stride + c] : 0.0f) -
                       a * mean_residual(l, n, g));
}

/* Pixel range [*p0, *p1) of chunk k of a sample. */
static void chunk_range(const fm_groupnorm *l, int k, long *p0, long *p1)
{
    const long hw = (long)l->h * l->w;
    *p0 = hw * k / l->chunks;
    *p1 = hw * (k + 1) / l->chunks;
}

/* Sum row k = 0 of every sample's chunk rows: acc[n*K] += acc[n*K + k]. */
static void fold_chunks(const fm_groupnorm *l, double *acc)
{
    const int C = l->c, K = l->chunks;
    for (int n = 0; n < l->n && K > 1; n++) {
        double *r0 = acc + (long)n * K * C;
        for (int k = 1; k < K; k++) {
            const double *rk = r0 + (long)k * C;
            for (int c = 0; c < C; c++)
                r0[c] += rk[c];
        }
    }
}

/* Sum over the channels of group g of row r (C values). */
static double group_sum(const double *r, int g, int cg)
{
    double s = 0;
    for (int c = g * cg; c < (g + 1) * cg; c++)
        s += r[c];
    return s;
}

int fm_groupnorm_forward(fm_groupnorm *l, const float *x, float *y, fm_err *e)
{
    return fm_groupnorm_forward_ada(l, x, NULL, NULL, y, e);
}

int fm_groupnorm_forward_ada(fm_groupnorm *l, const float *x, const float *scale, const float *shift, float *y,
                             fm_err *e)
{
    (void)e;
    const int N = l->n, C = l->c, G = l->groups, K = l->chunks, cg = C / G;
    const long HW = (long)l->h * l->w;
    const double M = (double)HW * cg;
    const int par = (long)N * HW * C >= PAR_MIN;

    /* pass 1: per-channel sums -> group means */
#pragma omp parallel for schedule(static) if (par)
    for (int t = 0; t < N * K; t++) {
        const int n = t / K;
        long p0, p1;
        chunk_range(l, t % K, &p0, &p1);
        double *acc = l->acc1 + (long)t * C;  // [C]
        memset(acc, 0, (size_t)C * sizeof(double));
        for (long p = p0; p < p1; p++) {
            const float *xr = x + ((long)n * HW + p) * C;  // [C]
#pragma omp simd
            for (int c = 0; c < C; c++)
                acc[c] += xr[c];
        }
    }
    fold_chunks(l, l->acc1);
    for (int n = 0; n < N; n++)
        for (int g = 0; g < G; g++) {
            const double mu = group_sum(l->acc1 + (long)n * K * C, g, cg) / M;
            l->gmean[n * G + g] = mu;
            l->mean[n * G + g] = (float)mu;
            for (int c = g * cg; c < (g + 1) * cg; c++)
                l->cmu[(long)n * C + c] = (float)mu;
        }

    /* pass 2: squared deviations from the fp32 mean mu_f; then
     * var = mean((x - mu_f)^2) - (mu - mu_f)^2 exactly */
#pragma omp parallel for schedule(static) if (par)
    for (int t = 0; t < N * K; t++) {
        const int n = t / K;
        long p0, p1;
        chunk_range(l, t % K, &p0, &p1);
        double *acc = l->acc2 + (long)t * C;
        const float *mu = l->cmu + (long)n * C;
        memset(acc, 0, (size_t)C * sizeof(double));
        for (long p = p0; p < p1; p++) {
            const float *xr = x + ((long)n * HW + p) * C;
#pragma omp simd
            for (int c = 0; c < C; c++) {
                const double d = (double)xr[c] - (double)mu[c];
                acc[c] += d * d;
            }
        }
    }
    fold_chunks(l, l->acc2);
    for (int n = 0; n < N; n++)
        for (int g = 0; g < G; g++) {
            const double mu = l->gmean[n * G + g], df = mu - (double)l->mean[n * G + g];
            double var = group_sum(l->acc2 + (long)n * K * C, g, cg) / M - df * df;
            var = var > 0 ? var : 0;
            const double rs = 1.0 / sqrt(var + (double)l->eps);
            l->rstd[n * G + g] = (float)rs;
            for (int c = g * cg; c < (g + 1) * cg; c++)
                set_coef(l, scale, shift, n, c, g);
        }

    /* pass 3: apply */
    const int silu = l->flags & FM_GN_SILU;
#pragma omp parallel for schedule(static) if (par)
    for (long r = 0; r < N * HW; r++) {
        const long o = (r / HW) * C;
        const float *xr = x + r * C, *mu = l->cmu + o, *a = l->ca + o, *b = l->cb + o;
        float *yr = y + r * C;
        if (silu) {
#pragma omp simd
            for (int c = 0; c < C; c++)
                yr[c] = fm_siluf((xr[c] - mu[c]) * a[c] + b[c]);
        } else {
#pragma omp simd
            for (int c = 0; c < C; c++)
                yr[c] = (xr[c] - mu[c]) * a[c] + b[c];
        }
    }
    return FM_OK;
}

int fm_groupnorm_backward(fm_groupnorm *l, const float *x, const float *dy, float *dx, fm_err *e)
{
    return fm_groupnorm_backward_ada(l, x, NULL, NULL, dy, dx, NULL, NULL, e);
}

int fm_groupnorm_backward_ada(fm_groupnorm *l, const float *x, const float *scale, const float *shift,
                              const float *dy, float *dx, float *dscale, float *dshift, fm_err *e)
{
    (void)e;
    const int N = l->n, C = l->c, G = l->groups, K = l->chunks, cg = C / G;
    const long HW = (long)l->h * l->w;
    const double M = (double)HW * cg;
    const int par = (long)N * HW * C >= PAR_MIN;
    const int silu = l->flags & FM_GN_SILU;

    /* the forward coefficients, from the saved statistics */
    for (int n = 0; n < N; n++)
        for (int c = 0; c < C; c++) {
            const long i = (long)n * C + c;
            l->cmu[i] = l->mean[n * G + c / cg];
            l->crs[i] = l->rstd[n * G + c / cg];
            set_coef(l, scale, shift, n, c, c / cg);
        }

    /* pass 1: S1 = sum dz, S2 = sum dz * xhat per (n, c); with SiLU, dz is
     * stored in dx for pass 2 */
#pragma omp parallel for schedule(static) if (par)
    for (int t = 0; t < N * K; t++) {
        const int n = t / K;
        long p0, p1;
        chunk_range(l, t % K, &p0, &p1);
        double *s1 = l->acc1 + (long)t * C, *s2 = l->acc2 + (long)t * C;
        const long o = (long)n * C;
        const float *mu = l->cmu + o, *rs = l->crs + o, *a = l->ca + o, *b = l->cb + o;
        memset(s1, 0, (size_t)C * sizeof(double));
        memset(s2, 0, (size_t)C * sizeof(double));
        for (long p = p0; p < p1; p++) {
            const long r = ((long)n * HW + p) * C;
            const float *xr = x + r, *dr = dy + r;
            if (silu) {
                float *dz = dx ? dx + r : NULL;
#pragma omp simd
                for (int c = 0; c < C; c++) {
                    const float xc = xr[c] - mu[c];
                    const float d = dr[c] * fm_silu_gradf(xc * a[c] + b[c]);
                    if (dz)
                        dz[c] = d;
                    s1[c] += d;
                    s2[c] += (double)d * (double)(xc * rs[c]);
                }
            } else {
#pragma omp simd
                for (int c = 0; c < C; c++) {
                    const float d = dr[c];
                    s1[c] += d;
                    s2[c] += (double)d * (double)((xr[c] - mu[c]) * rs[c]);
                }
            }
        }
    }
    fold_chunks(l, l->acc1);
    fold_chunks(l, l->acc2);
    /* pass 1 took xhat as (x - mu_f) rstd; the exact xhat is that minus
     * (mu - mu_f) rstd */
    for (int n = 0; n < N; n++)
        for (int c = 0; c < C; c++) {
            const long i = (long)n * K * C + c;
            l->acc2[i] -= mean_residual(l, n, c / cg) * (double)l->crs[(long)n * C + c] * l->acc1[i];
        }

    /* parameter and scale/shift gradients */
    for (int c = 0; c < C; c++) {
        double dw = 0, db = 0;
        const double w = weight_of(l, c);
        const double b = bias_of(l, c);
        for (int n = 0; n < N; n++) {
            const long i = (long)n * l->ss_stride + c;
            const double S1 = l->acc1[(long)n * K * C + c], S2 = l->acc2[(long)n * K * C + c];
            const double s1 = one_plus_scale(l, scale, n, c);
            dw += s1 * S2;
            db += s1 * S1;
            if (dshift)
                dshift[i] = (float)S1;
            if (dscale)
                dscale[i] = (float)(w * S2 + b * S1);
        }
        if (l->weight) {
            fm_f32(&l->weight->g)[c] = (float)dw;
            fm_f32(&l->bias->g)[c] = (float)db;
        }
    }
    if (!dx)
        return FM_OK;

    /* dx = dz * P + (x - mu_f) * R + Q per channel: P = rstd gam,
     * R = -rstd^2 m2, Q = -rstd m1 - (mu - mu_f) R (R into crs, Q into cb) */
    for (int n = 0; n < N; n++)
        for (int g = 0; g < G; g++) {
            const double *S1 = l->acc1 + (long)n * K * C, *S2 = l->acc2 + (long)n * K * C;
            double m1 = 0, m2 = 0;
            for (int c = g * cg; c < (g + 1) * cg; c++) {
                const double gam = weight_of(l, c) * one_plus_scale(l, scale, n, c);
                m1 += gam * S1[c];
                m2 += gam * S2[c];
            }
            m1 /= M;
            m2 /= M;
            const double rs = l->rstd[n * G + g];
            for (int c = g * cg; c < (g + 1) * cg; c++) {
                l->crs[(long)n * C + c] = (float)(-rs * rs * m2);
                l->cb[(long)n * C + c] = (float)(-rs * m1 + rs * rs * m2 * mean_residual(l, n, g));
            }
        }
    const float *dz = silu ? dx : dy;
#pragma omp parallel for schedule(static) if (par)
    for (long r = 0; r < N * HW; r++) {
        const long o = (r / HW) * C;
        const float *xr = x + r * C, *dr = dz + r * C;
        const float *mu = l->cmu + o, *P = l->ca + o, *R = l->crs + o, *Q = l->cb + o;
        float *dxr = dx + r * C;
#pragma omp simd
        for (int c = 0; c < C; c++)
            dxr[c] = dr[c] * P[c] + (xr[c] - mu[c]) * R[c] + Q[c];
    }
    return FM_OK;
}
