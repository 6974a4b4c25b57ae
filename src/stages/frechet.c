/* frechet.c - Fréchet distance between Gaussians, via symmetric eigensolves. */
#include "fm/frechet.h"

#include <lapacke.h>
#include <math.h>
#include <stdlib.h>
#include <string.h>

int fm_feature_stats(const float *x, int n, int d, double *mean, double *cov, fm_err *e)
{
    if (n < 2)
        return fm_fail(e, FM_ERR_USAGE, "feature statistics need at least 2 samples, got %d", n);
    memset(mean, 0, (size_t)d * sizeof *mean);
    for (int i = 0; i < n; i++)
        for (int j = 0; j < d; j++)
            mean[j] += x[(size_t)i * d + j];
    for (int j = 0; j < d; j++)
        mean[j] /= n;
#pragma omp parallel for schedule(dynamic)
    for (int a = 0; a < d; a++) {
        for (int b = a; b < d; b++) {
            double s = 0;
            for (int i = 0; i < n; i++)
                s += ((double)x[(size_t)i * d + a] - mean[a]) * ((double)x[(size_t)i * d + b] - mean[b]);
            cov[(size_t)a * d + b] = cov[(size_t)b * d + a] = s / (n - 1);
        }
    }
    return FM_OK;
}

/* out = V diag(f(w)) V^T for symmetric a = V diag(w) V^T, f = sqrt(max(w, 0)). */
static int sym_sqrt(const double *a, int d, double *out, double *v, double *w, fm_err *e)
{
    memcpy(v, a, (size_t)d * d * sizeof *v);
    lapack_int info = LAPACKE_dsyevd(LAPACK_ROW_MAJOR, 'V', 'U', d, v, d, w);
    if (info != 0)
        return fm_fail(e, FM_ERR_INTERNAL, "eigensolver (LAPACKE_dsyevd) failed: info %d", (int)info);
    for (int k = 0; k < d; k++)
        w[k] = sqrt(w[k] > 0 ? w[k] : 0);
#pragma omp parallel for
    for (int i = 0; i < d; i++)
        for (int j = 0; j < d; j++) {
            double s = 0;
            for (int k = 0; k < d; k++)
                s += v[(size_t)i * d + k] * w[k] * v[(size_t)j * d + k];
            out[(size_t)i * d + j] = s;
        }
    return FM_OK;
}

/* out = a b for d x d row-major matrices (out distinct from both). */
static void matmul(const double *a, const double *b, int d, double *out)
{
#pragma omp parallel for
    for (int i = 0; i < d; i++)
        for (int j = 0; j < d; j++) {
            double s = 0;
            for (int k = 0; k < d; k++)
                s += a[(size_t)i * d + k] * b[(size_t)k * d + j];
            out[(size_t)i * d + j] = s;
        }
}

int fm_frechet(const double *mu1, const double *c1, const double *mu2, const double *c2, int d, double *out,
               fm_err *e)
{
    size_t dd = (size_t)d * d;
    double *s1 = malloc(dd * sizeof *s1), *m = malloc(dd * sizeof *m), *t = malloc(dd * sizeof *t);
    double *v = malloc(dd * sizeof *v), *w = malloc((size_t)d * sizeof *w);
    int rc = FM_OK;
    if (!s1 || !m || !t || !v || !w) {
        rc = fm_fail(e, FM_ERR_INTERNAL, "out of memory for a %dx%d Fréchet distance", d, d);
        goto out;
    }
    if ((rc = sym_sqrt(c1, d, s1, v, w, e)) != FM_OK)
        goto out;
    /* m = s1 c2 s1: symmetric, positive semi-definite */
    matmul(s1, c2, d, t);
    matmul(t, s1, d, m);
    for (int i = 0; i < d; i++) /* symmetrise against rounding */
        for (int j = i + 1; j < d; j++)
            m[(size_t)i * d + j] = m[(size_t)j * d + i] = 0.5 * (m[(size_t)i * d + j] + m[(size_t)j * d + i]);
    memcpy(v, m, dd * sizeof *v);
    lapack_int info = LAPACKE_dsyevd(LAPACK_ROW_MAJOR, 'N', 'U', d, v, d, w);
    if (info != 0) {
        rc = fm_fail(e, FM_ERR_INTERNAL, "eigensolver (LAPACKE_dsyevd) failed: info %d", (int)info);
        goto out;
    }
    double tr_sqrt = 0, tr1 = 0, tr2 = 0, dmu = 0;
    for (int k = 0; k < d; k++) {
        tr_sqrt += sqrt(w[k] > 0 ? w[k] : 0);
        tr1 += c1[(size_t)k * d + k];
        tr2 += c2[(size_t)k * d + k];
        dmu += (mu1[k] - mu2[k]) * (mu1[k] - mu2[k]);
    }
    *out = dmu + tr1 + tr2 - 2 * tr_sqrt;
out:
    free(s1);
    free(m);
    free(t);
    free(v);
    free(w);
    return rc;
}
