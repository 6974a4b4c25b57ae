/* layernorm.c - LayerNorm over the last dimension, forward and backward
 * (see layernorm.h). Rows are independent; threads split the rows. */
#include "fm/layernorm.h"

#include <math.h>
#include <string.h>

/* Below this many elements a parallel region costs more than it saves. */
#define PAR_MIN 32768

int fm_layernorm_init(fm_layernorm *l, fm_params *p, fm_arena *a, const char *name, int64_t dim, int affine,
                      float eps, int64_t rows, fm_err *e)
{
    memset(l, 0, sizeof *l);
    const char *nm = name ? name : "(unnamed)";
    if (dim < 1 || rows < 1 || !(eps >= 0))
        return fm_fail(e, FM_ERR_USAGE, "layernorm %s: bad sizes dim %lld, rows %lld, eps %g", nm, (long long)dim,
                       (long long)rows, (double)eps);
    if (affine) {
        if (!p || !name)
            return fm_fail(e, FM_ERR_USAGE, "layernorm %s: an affine layer needs a parameter table and a name", nm);
        FM_TRY(fm_params_add(p, &l->weight, 1, (int64_t[]){ dim }, e, "%s.weight", name));
        FM_TRY(fm_params_add(p, &l->bias, 1, (int64_t[]){ dim }, e, "%s.bias", name));
        fm_param_fill(l->weight, 1.0f);
        fm_param_fill(l->bias, 0.0f);
    }
    FM_TRY(fm_arena_take(a, (size_t)rows, sizeof(float), &l->mean, "layernorm statistics", e));
    FM_TRY(fm_arena_take(a, (size_t)rows, sizeof(float), &l->rstd, "layernorm statistics", e));
    l->rows = rows;
    l->dim = dim;
    l->eps = eps;
    return FM_OK;
}

/* y[r] = (x[r] - mean_r) * rstd_r (* w + b) for one row of length d. */
static inline void normalize_row(const float *x, float mean, float rstd, const float *w, const float *b, float *y,
                                 int64_t d)
{
    if (w) {
#pragma omp simd
        for (int64_t i = 0; i < d; i++)
            y[i] = (x[i] - mean) * rstd * w[i] + b[i];
    } else {
#pragma omp simd
        for (int64_t i = 0; i < d; i++)
            y[i] = (x[i] - mean) * rstd;
    }
}

int fm_layernorm_forward(fm_layernorm *l, const float *x, float *y, fm_err *e)
{
    (void)e;
    const double t0 = FM_PROF_START(l->prof);
    const int64_t d = l->dim, rows = l->rows;
    const float *w = l->weight ? l->weight->w.data : NULL, *b = l->bias ? l->bias->w.data : NULL;
#pragma omp parallel for schedule(static) if (rows * d >= PAR_MIN)
    for (int64_t r = 0; r < rows; r++) {
        const float *xr = x + r * d;  // [D]
        double s = 0, ss = 0;
#pragma omp simd reduction(+ : s)
        for (int64_t i = 0; i < d; i++)
            s += xr[i];
        const double mean = s / (double)d;
#pragma omp simd reduction(+ : ss)
        for (int64_t i = 0; i < d; i++) {
            const double c = (double)xr[i] - mean;
            ss += c * c;
        }
        const float rstd = (float)(1.0 / sqrt(ss / (double)d + (double)l->eps));
        l->mean[r] = (float)mean;
        l->rstd[r] = rstd;
        normalize_row(xr, (float)mean, rstd, w, b, y + r * d, d);
    }
    FM_PROF_END(l->prof, FM_PROF_FWD, t0, 0);
    return FM_OK;
}

int fm_layernorm_apply(const fm_layernorm *l, const float *x, float *y, fm_err *e)
{
    (void)e;
    const double t0 = FM_PROF_START(l->prof);
    const int64_t d = l->dim, rows = l->rows;
    const float *w = l->weight ? l->weight->w.data : NULL, *b = l->bias ? l->bias->w.data : NULL;
#pragma omp parallel for schedule(static) if (rows * d >= PAR_MIN)
    for (int64_t r = 0; r < rows; r++)
        normalize_row(x + r * d, l->mean[r], l->rstd[r], w, b, y + r * d, d);
    FM_PROF_END(l->prof, FM_PROF_REDO, t0, 0); /* from the saved statistics: a recomputation */
    return FM_OK;
}

/* dweight[j] = sum_r dy[r, j] * xhat[r, j], dbias[j] = sum_r dy[r, j]:
 * threads take blocks of columns and stream down the rows in order. */
static void affine_grads(const fm_layernorm *l, const float *x, const float *dy)
{
    enum { BLK = 64 };
    const int64_t d = l->dim, rows = l->rows, nblk = (d + BLK - 1) / BLK;
    float *dw = l->weight->g.data, *db = l->bias->g.data;
#pragma omp parallel for schedule(static) if (rows * d >= PAR_MIN)
    for (int64_t jb = 0; jb < nblk; jb++) {
        const int64_t j0 = jb * BLK, nj = d - j0 < BLK ? d - j0 : BLK;
        double aw[BLK] = { 0 }, ab[BLK] = { 0 };
        for (int64_t r = 0; r < rows; r++) {
            const float *xr = x + r * d + j0, *g = dy + r * d + j0;
            const float mean = l->mean[r], rstd = l->rstd[r];
#pragma omp simd
            for (int64_t j = 0; j < nj; j++) {
                aw[j] += (double)(g[j] * ((xr[j] - mean) * rstd));
                ab[j] += (double)g[j];
            }
        }
        for (int64_t j = 0; j < nj; j++) {
            dw[j0 + j] = (float)aw[j];
            db[j0 + j] = (float)ab[j];
        }
    }
}

static void backward(fm_layernorm *l, const float *x, const float *dy, float *dx)
{
    const int64_t d = l->dim, rows = l->rows;
    if (l->weight)
        affine_grads(l, x, dy);  // before dx, which may overwrite dy
    if (!dx)
        return;
    const float *w = l->weight ? l->weight->w.data : NULL;
    const float inv_d = 1.0f / (float)d;
    /* dx = rstd * (g - mean(g) - xhat * mean(g * xhat)), g = dy * weight */
#pragma omp parallel for schedule(static) if (rows * d >= PAR_MIN)
    for (int64_t r = 0; r < rows; r++) {
        const float *xr = x + r * d, *g = dy + r * d;
        float *o = dx + r * d;
        const float mean = l->mean[r], rstd = l->rstd[r];
        float sg = 0, sgx = 0;
        if (w) {
#pragma omp simd reduction(+ : sg, sgx)
            for (int64_t i = 0; i < d; i++) {
                const float gi = g[i] * w[i];
                sg += gi;
                sgx += gi * ((xr[i] - mean) * rstd);
            }
        } else {
#pragma omp simd reduction(+ : sg, sgx)
            for (int64_t i = 0; i < d; i++) {
                sg += g[i];
                sgx += g[i] * ((xr[i] - mean) * rstd);
            }
        }
        const float mg = sg * inv_d, mgx = sgx * inv_d;
        if (w) {
#pragma omp simd
            for (int64_t i = 0; i < d; i++)
                o[i] = rstd * (g[i] * w[i] - mg - (xr[i] - mean) * rstd * mgx);
        } else {
#pragma omp simd
            for (int64_t i = 0; i < d; i++)
                o[i] = rstd * (g[i] - mg - (xr[i] - mean) * rstd * mgx);
        }
    }
}

int fm_layernorm_backward(fm_layernorm *l, const float *x, const float *dy, float *dx, fm_err *e)
{
    (void)e;
    const double t0 = FM_PROF_START(l->prof);
    backward(l, x, dy, dx);
    FM_PROF_END(l->prof, FM_PROF_BWD, t0, 0);
    return FM_OK;
}

void fm_layernorm_free(fm_layernorm *l) { memset(l, 0, sizeof *l); }
