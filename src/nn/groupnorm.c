/* groupnorm.c - GroupNorm (+ adaGN scale/shift, + fused SiLU) forward and
 * backward on NHWC activations (see groupnorm.h).
 *
 * Work is split into (sample, pixel-range) tasks; the number of ranges per
 * sample (chunks) depends on the shape only. With one range per sample (any
 * batch >= 32) each task does everything for its sample - statistics, the
 * per-channel coefficients, then the elementwise pass - while the sample is
 * still in the core's cache, in one parallel loop. With several ranges the
 * same steps run as three loops (ranges, samples, ranges). Partial sums are
 * combined in a fixed order, so no result depends on the number of threads.
 *
 * Sums: fp32 over blocks of BLK pixels (full SIMD width), the blocks in
 * double. Forward sums d = x - s and d^2 per channel, with s the sample's
 * first pixel, in one pass; the group variance is then assembled exactly in
 * double from the per-channel sums, so |mean| >> std costs no accuracy. The
 * elementwise loops subtract the fp32 mean mu_f; the per-channel coefficients
 * absorb the residual mu - mu_f (kept in double).
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
/* Pixels summed in fp32 before the partial sums are folded into double. */
#define BLK 16
/* Channels per block of fp32 partial sums (stack arrays). */
#define CB 256

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
    /* enough (sample, pixel-range) tasks for the threads, >= BLK pixels each */
    const long hw = (long)h * w;
    long k = (32 + n - 1) / n;
    if (k > hw / BLK)
        k = hw / BLK;
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
    /* N * chunks < N + 32 rows of partial sums, plus one for the parameter gradients */
    const size_t ng = (size_t)n * groups, nc = (size_t)n * c, acc = ((size_t)n * l->chunks + 1) * c;
    void *v[10];
    const size_t bytes[10] = { ng * sizeof(float), ng * sizeof(float), ng * sizeof(double),
                               nc * sizeof(float), nc * sizeof(float), nc * sizeof(float),
                               nc * sizeof(float), nc * sizeof(float), acc * sizeof(double),
                               acc * sizeof(double) };
    for (int i = 0; i < 10; i++)
        if (fm_arena_take(a, bytes[i], 1, &v[i], NULL, e) != FM_OK)
            return fm_err_prefix(e, "groupnorm %s", name);
    l->mean = v[0];
    l->rstd = v[1];
    l->gmean = v[2];
    l->cmu = v[3];
    l->ca = v[4];
    l->cb = v[5];
    l->cr = v[6];
    l->cq = v[7];
    l->acc1 = v[8];
    l->acc2 = v[9];
    return FM_OK;
}

/* Pixel range [*p0, *p1) of chunk k of a sample: whole blocks of BLK pixels,
 * so the fp32 block sums (and hence the statistics, up to the rounding of
 * the double sums) do not depend on the chunk count, which depends on the
 * batch size: a batch split over ranks normalises each sample the same way. */
static void chunk_range(const fm_groupnorm *l, int k, long *p0, long *p1)
{
    const long hw = (long)l->h * l->w, nb = (hw + BLK - 1) / BLK;
    *p0 = BLK * (nb * k / l->chunks);
    *p1 = k + 1 == l->chunks ? hw : BLK * (nb * (k + 1) / l->chunks);
}

/* Row 0 of sample n's chunk rows += rows 1..K-1, in that order. */
static void fold_chunks(const fm_groupnorm *l, double *acc, int n)
{
    const int C = l->c, K = l->chunks;
    double *r0 = acc + (long)n * K * C;
    for (int k = 1; k < K; k++) {
        const double *rk = r0 + (long)k * C;
#pragma omp simd
        for (int c = 0; c < C; c++)
            r0[c] += rk[c];
    }
}

/* Prefetch one pixel row of C floats (the next sample's, while this one
 * computes: the input often comes from DRAM). */
static inline void prefetch_row(const float *r, int C)
{
    for (int c = 0; c < C; c += 16)
        __builtin_prefetch(r + c);
}

/* ---- forward ------------------------------------------------------------ */

/* Over the np pixel rows of x [np, C]: S[c] = sum (x - s[c]) and
 * Q[c] = sum (x - s[c])^2, in fp32 over BLK pixels, then in double. */
static void moments(const float *x, long np, int C, const float *s, double *S, double *Q)
{
    for (int c0 = 0; c0 < C; c0 += CB) {
        const int cw = C - c0 < CB ? C - c0 : CB;
        const float *sc = s + c0;
        double *Sc = S + c0, *Qc = Q + c0;
        for (int c = 0; c < cw; c++)
            Sc[c] = Qc[c] = 0;
        for (long p0 = 0; p0 < np; p0 += BLK) {
            const long p1 = p0 + BLK < np ? p0 + BLK : np;
            float fs[CB] = { 0 }, fq[CB] = { 0 };
            for (long p = p0; p < p1; p++) {
                const float *xr = x + p * C + c0;
#pragma omp simd
                for (int c = 0; c < cw; c++) {
                    const float d = xr[c] - sc[c];
                    fs[c] += d;
                    fq[c] += d * d;
                }
            }
#pragma omp simd
            for (int c = 0; c < cw; c++) {
                Sc[c] += fs[c];
                Qc[c] += fq[c];
            }
        }
    }
}

/* Sum of v[0..n) with four accumulators (a fixed order, not a latency chain). */
static double sum4(const double *v, int n)
{
    double a0 = 0, a1 = 0, a2 = 0, a3 = 0;
    int i = 0;
    for (; i + 4 <= n; i += 4) {
        a0 += v[i];
        a1 += v[i + 1];
        a2 += v[i + 2];
        a3 += v[i + 3];
    }
    for (; i < n; i++)
        a0 += v[i];
    return (a0 + a1) + (a2 + a3);
}

/* Sample n's group statistics from its (folded) moments S, Q about s = its
 * first pixel, and its per-channel coefficients z = (x - mu_f) * ca + cb:
 * ca = rstd * weight (1 + scale), cb = bias (1 + scale) + shift - ca (mu - mu_f).
 * Overwrites the moment rows. */
static void sample_coef(fm_groupnorm *l, int n, const float *s, const float *scale, const float *shift)
{
    const int C = l->c, G = l->groups, cg = C / G;
    const long HW = (long)l->h * l->w;
    const double P = (double)HW, iP = 1.0 / P, icg = 1.0 / cg, iM = iP * icg;
    double *S = l->acc1 + (long)n * l->chunks * C, *Q = l->acc2 + (long)n * l->chunks * C;
    const float *w = l->weight ? fm_f32(&l->weight->w) : NULL, *b = l->bias ? fm_f32(&l->bias->w) : NULL;
    const float *sc = scale ? scale + (long)n * l->ss_stride : NULL;
    const float *sh = shift ? shift + (long)n * l->ss_stride : NULL;
    float *cmu = l->cmu + (long)n * C, *ca = l->ca + (long)n * C, *cb = l->cb + (long)n * C;
    /* per channel: S <- the channel mean m, Q <- the sum of squares about m */
#pragma omp simd
    for (int c = 0; c < C; c++) {
        const double m = S[c] * iP;
        Q[c] -= S[c] * m;
        S[c] = m + (double)s[c];
    }
    for (int g = 0; g < G; g++) {
        const int c0 = g * cg;
        /* mean of the channel means; variance = within-channel + between-channel parts */
        const double mu = sum4(S + c0, cg) * icg;
#pragma omp simd
        for (int c = c0; c < c0 + cg; c++)
            S[c] = (S[c] - mu) * (S[c] - mu);
        const double v = (sum4(Q + c0, cg) + P * sum4(S + c0, cg)) * iM;
        const double rs = 1.0 / sqrt((v > 0 ? v : 0) + (double)l->eps);
        const float mf = (float)mu;
        l->gmean[n * G + g] = mu;
        l->mean[n * G + g] = mf;
        l->rstd[n * G + g] = (float)rs;
        const double res = mu - (double)mf;
        for (int c = c0; c < c0 + cg; c++) {
            const double s1 = 1.0 + (double)(sc ? sc[c] : 0.0f);
            const double a = rs * (double)(w ? w[c] : 1.0f) * s1;
            cmu[c] = mf;
            ca[c] = (float)a;
            cb[c] = (float)((double)(b ? b[c] : 0.0f) * s1 + (double)(sh ? sh[c] : 0.0f) - a * res);
        }
    }
}

/* y = z or silu(z), z = (x - mu) * a + b per channel, over np pixel rows
 * [np, C]; or, with y16 (y NULL), its bf16 rounding into y16. Prefetches
 * the rows at next (the following sample) unless it is NULL: the input
 * often comes from DRAM. */
static void apply(const float *x, float *y, uint16_t *y16, long np, int C, const float *mu, const float *a,
                  const float *b, int silu, const float *next)
{
    for (long p = 0; p < np; p++) {
        const float *xr = x + p * C;
        if (next)
            prefetch_row(next + p * C, C);
        if (y16) {
            uint16_t *yr = y16 + p * C;
            if (silu) {
#pragma omp simd
                for (int c = 0; c < C; c++)
                    yr[c] = fm_bf16_round(fm_siluf((xr[c] - mu[c]) * a[c] + b[c]));
            } else {
#pragma omp simd
                for (int c = 0; c < C; c++)
                    yr[c] = fm_bf16_round((xr[c] - mu[c]) * a[c] + b[c]);
            }
            continue;
        }
        float *yr = y + p * C;
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
}

int fm_groupnorm_forward(fm_groupnorm *l, const float *x, float *y, fm_err *e)
{
    return fm_groupnorm_forward_ada(l, x, NULL, NULL, y, e);
}

/* The forward into y (fp32) or y16 (bf16; y NULL). */
static void forward(fm_groupnorm *l, const float *x, const float *scale, const float *shift, float *y,
                    uint16_t *y16)
{
    const int N = l->n, C = l->c, K = l->chunks, silu = l->flags & FM_GN_SILU;
    const long HW = (long)l->h * l->w;
    const int par = (long)N * HW * C >= PAR_MIN;
#pragma omp parallel if (par)
    {
        if (K == 1) {
            /* per sample: statistics, coefficients, output */
#pragma omp for schedule(static)
            for (int n = 0; n < N; n++) {
                const long o = (long)n * C, r = o * HW;
                moments(x + r, HW, C, x + r, l->acc1 + o, l->acc2 + o);
                sample_coef(l, n, x + r, scale, shift);
                apply(x + r, y ? y + r : NULL, y16 ? y16 + r : NULL, HW, C, l->cmu + o, l->ca + o, l->cb + o,
                      silu, n + 1 < N ? x + r + HW * C : NULL);
            }
        } else {
#pragma omp for schedule(static)
            for (int t = 0; t < N * K; t++) {
                const int n = t / K;
                long p0, p1;
                chunk_range(l, t % K, &p0, &p1);
                const float *xs = x + (long)n * HW * C;  // [HW, C] sample n
                moments(xs + p0 * C, p1 - p0, C, xs, l->acc1 + (long)t * C, l->acc2 + (long)t * C);
            }
#pragma omp for schedule(static)
            for (int n = 0; n < N; n++) {
                fold_chunks(l, l->acc1, n);
                fold_chunks(l, l->acc2, n);
                sample_coef(l, n, x + (long)n * HW * C, scale, shift);
            }
#pragma omp for schedule(static)
            for (int t = 0; t < N * K; t++) {
                const int n = t / K;
                long p0, p1;
                chunk_range(l, t % K, &p0, &p1);
                const long o = (long)n * C, r = (o * HW) + p0 * C;
                apply(x + r, y ? y + r : NULL, y16 ? y16 + r : NULL, p1 - p0, C, l->cmu + o, l->ca + o,
                      l->cb + o, silu, NULL);
            }
        }
    }
}

int fm_groupnorm_forward_ada(fm_groupnorm *l, const float *x, const float *scale, const float *shift, float *y,
                             fm_err *e)
{
    (void)e;
    const double t0 = FM_PROF_START(l->prof);
    forward(l, x, scale, shift, y, NULL);
    FM_PROF_END(l->prof, FM_PROF_FWD, t0, 0);
    return FM_OK;
}

int fm_groupnorm_forward_ada16(fm_groupnorm *l, const float *x, const float *scale, const float *shift,
                               uint16_t *y16, fm_err *e)
{
    (void)e;
    const double t0 = FM_PROF_START(l->prof);
    forward(l, x, scale, shift, NULL, y16);
    FM_PROF_END(l->prof, FM_PROF_FWD, t0, 0);
    return FM_OK;
}

int fm_groupnorm_reforward(fm_groupnorm *l, const float *x, float *y, fm_err *e)
{
    (void)e;
    const double t0 = FM_PROF_START(l->prof);
    const int N = l->n, C = l->c, K = l->chunks, silu = l->flags & FM_GN_SILU;
    const long HW = (long)l->h * l->w;
#pragma omp parallel for schedule(static) if ((long)N * HW * C >= PAR_MIN)
    for (int t = 0; t < N * K; t++) {
        const int n = t / K;
        long p0, p1;
        chunk_range(l, t % K, &p0, &p1);
        const long o = (long)n * C, r = o * HW + p0 * C;
        apply(x + r, y + r, NULL, p1 - p0, C, l->cmu + o, l->ca + o, l->cb + o, silu,
              K == 1 && n + 1 < N ? x + r + HW * C : NULL);
    }
    FM_PROF_END(l->prof, FM_PROF_REDO, t0, 0);
    return FM_OK;
}

/* ---- backward ----------------------------------------------------------- */

/* Over np pixel rows [np, C]: S1[c] = sum dz, S2[c] = sum dz (x - mu), with
 * dz = dy * silu'(z) (z = (x - mu) a + b) under silu, else dy; under silu dz
 * is also written to dz_out unless it is NULL. fp32 over BLK pixels, then
 * double. */
static void grad_sums(const float *x, const float *dy, float *dz_out, long np, int C, const float *mu,
                      const float *a, const float *b, int silu, double *S1, double *S2)
{
    for (int c0 = 0; c0 < C; c0 += CB) {
        const int cw = C - c0 < CB ? C - c0 : CB;
        const float *m = mu + c0, *ac = a + c0, *bc = b + c0;
        double *s1 = S1 + c0, *s2 = S2 + c0;
        for (int c = 0; c < cw; c++)
            s1[c] = s2[c] = 0;
        for (long p0 = 0; p0 < np; p0 += BLK) {
            const long p1 = p0 + BLK < np ? p0 + BLK : np;
            float f1[CB] = { 0 }, f2[CB] = { 0 };
            for (long p = p0; p < p1; p++) {
                const long r = p * C + c0;
                const float *xr = x + r, *dr = dy + r;
                if (!silu) {
#pragma omp simd
                    for (int c = 0; c < cw; c++) {
                        const float d = dr[c];
                        f1[c] += d;
                        f2[c] += d * (xr[c] - m[c]);
                    }
                } else if (dz_out) {
                    float *zr = dz_out + r;
#pragma omp simd
                    for (int c = 0; c < cw; c++) {
                        const float xc = xr[c] - m[c];
                        const float d = dr[c] * fm_silu_gradf(xc * ac[c] + bc[c]);
                        zr[c] = d;
                        f1[c] += d;
                        f2[c] += d * xc;
                    }
                } else {
#pragma omp simd
                    for (int c = 0; c < cw; c++) {
                        const float xc = xr[c] - m[c];
                        const float d = dr[c] * fm_silu_gradf(xc * ac[c] + bc[c]);
                        f1[c] += d;
                        f2[c] += d * xc;
                    }
                }
            }
#pragma omp simd
            for (int c = 0; c < cw; c++) {
                s1[c] += f1[c];
                s2[c] += f2[c];
            }
        }
    }
}

/* Sample n, from its (folded) S1 and S2 = sum dz (x - mu_f): makes S2 the
 * exact sum dz * xhat, writes the rows of dscale and dshift (either may be
 * NULL), and the dx coefficients dx = dz * ca + (x - mu_f) * cr + cq:
 * cr = -rstd^2 m2, cq = -rstd m1 - (mu - mu_f) cr. */
static void sample_grad_coef(fm_groupnorm *l, int n, const float *scale, float *dscale, float *dshift)
{
    const int C = l->c, G = l->groups, cg = C / G;
    const double M = (double)l->h * l->w * cg;
    const double *S1 = l->acc1 + (long)n * l->chunks * C;
    double *S2 = l->acc2 + (long)n * l->chunks * C;
    const float *w = l->weight ? fm_f32(&l->weight->w) : NULL, *b = l->bias ? fm_f32(&l->bias->w) : NULL;
    const float *sc = scale ? scale + (long)n * l->ss_stride : NULL;
    float *cr = l->cr + (long)n * C, *cq = l->cq + (long)n * C;
    for (int g = 0; g < G; g++) {
        const int c0 = g * cg, c1 = c0 + cg;
        const double rs = l->rstd[n * G + g], res = l->gmean[n * G + g] - (double)l->mean[n * G + g];
        double m1 = 0, m2 = 0;
        for (int c = c0; c < c1; c++) {
            S2[c] = rs * (S2[c] - res * S1[c]);
            const double wc = w ? w[c] : 1.0f, gam = wc * (1.0 + (sc ? sc[c] : 0.0f));
            m1 += gam * S1[c];
            m2 += gam * S2[c];
            if (dshift)
                dshift[(long)n * l->ss_stride + c] = (float)S1[c];
            if (dscale)
                dscale[(long)n * l->ss_stride + c] = (float)(wc * S2[c] + (b ? b[c] : 0.0f) * S1[c]);
        }
        m1 /= M;
        m2 /= M;
        const double r = -rs * rs * m2;
        for (int c = c0; c < c1; c++) {
            cr[c] = (float)r;
            cq[c] = (float)(-rs * m1 - res * r);
        }
    }
}

/* dx = dz * p + (x - mu) * r + q per channel over np pixel rows [np, C]. */
static void apply_grad(const float *x, const float *dz, float *dx, long np, int C, const float *mu, const float *p,
                       const float *r, const float *q)
{
    for (long i = 0; i < np; i++) {
        const float *xr = x + i * C, *dr = dz + i * C;
        float *o = dx + i * C;
#pragma omp simd
        for (int c = 0; c < C; c++)
            o[c] = dr[c] * p[c] + (xr[c] - mu[c]) * r[c] + q[c];
    }
}

/* dweight[c] = sum_n (1 + scale) S2, dbias[c] = sum_n (1 + scale) S1, in
 * double in sample order (in the spare last rows of acc2 and acc1). */
static void param_grads(fm_groupnorm *l, const float *scale)
{
    const int N = l->n, C = l->c, K = l->chunks;
    double *dw = l->acc2 + (long)N * K * C, *db = l->acc1 + (long)N * K * C;
    memset(dw, 0, (size_t)C * sizeof(double));
    memset(db, 0, (size_t)C * sizeof(double));
    for (int n = 0; n < N; n++) {
        const double *S1 = l->acc1 + (long)n * K * C, *S2 = l->acc2 + (long)n * K * C;
        const float *sc = scale ? scale + (long)n * l->ss_stride : NULL;
        if (sc) {
#pragma omp simd
            for (int c = 0; c < C; c++) {
                const double s1 = 1.0 + (double)sc[c];
                dw[c] += s1 * S2[c];
                db[c] += s1 * S1[c];
            }
        } else {
#pragma omp simd
            for (int c = 0; c < C; c++) {
                dw[c] += S2[c];
                db[c] += S1[c];
            }
        }
    }
    float *gw = fm_f32(&l->weight->g), *gb = fm_f32(&l->bias->g);
    for (int c = 0; c < C; c++) {
        gw[c] = (float)dw[c];
        gb[c] = (float)db[c];
    }
}

/* Both backward entry points (scale may be NULL). */
static void backward(fm_groupnorm *l, const float *x, const float *scale, const float *dy, float *dx,
                     float *dscale, float *dshift)
{
    const int N = l->n, C = l->c, K = l->chunks, silu = l->flags & FM_GN_SILU;
    const long HW = (long)l->h * l->w;
    const int par = (long)N * HW * C >= PAR_MIN;
    /* with SiLU, dz goes to dx between the two passes */
    float *dzo = silu ? dx : NULL;
    const float *dz = dzo ? dzo : dy;
#pragma omp parallel if (par)
    {
        if (K == 1) {
            /* per sample: sums, coefficients, dx */
#pragma omp for schedule(static)
            for (int n = 0; n < N; n++) {
                const long o = (long)n * C, r = o * HW;
                const float *mu = l->cmu + o;
                grad_sums(x + r, dy + r, dzo ? dzo + r : NULL, HW, C, mu, l->ca + o, l->cb + o, silu, l->acc1 + o,
                          l->acc2 + o);
                sample_grad_coef(l, n, scale, dscale, dshift);
                if (dx)
                    apply_grad(x + r, dz + r, dx + r, HW, C, mu, l->ca + o, l->cr + o, l->cq + o);
            }
        } else {
#pragma omp for schedule(static)
            for (int t = 0; t < N * K; t++) {
                const int n = t / K;
                long p0, p1;
                chunk_range(l, t % K, &p0, &p1);
                const long o = (long)n * C, r = o * HW + p0 * C;
                grad_sums(x + r, dy + r, dzo ? dzo + r : NULL, p1 - p0, C, l->cmu + o, l->ca + o, l->cb + o, silu,
                          l->acc1 + (long)t * C, l->acc2 + (long)t * C);
            }
#pragma omp for schedule(static)
            for (int n = 0; n < N; n++) {
                fold_chunks(l, l->acc1, n);
                fold_chunks(l, l->acc2, n);
                sample_grad_coef(l, n, scale, dscale, dshift);
            }
            if (dx) {
#pragma omp for schedule(static)
                for (int t = 0; t < N * K; t++) {
                    const int n = t / K;
                    long p0, p1;
                    chunk_range(l, t % K, &p0, &p1);
                    const long o = (long)n * C, r = o * HW + p0 * C;
                    apply_grad(x + r, dz + r, dx + r, p1 - p0, C, l->cmu + o, l->ca + o, l->cr + o, l->cq + o);
                }
            }
        }
    }
    if (l->weight)
        param_grads(l, scale);
}

int fm_groupnorm_backward(fm_groupnorm *l, const float *x, const float *dy, float *dx, fm_err *e)
{
    (void)e;
    const double t0 = FM_PROF_START(l->prof);
    backward(l, x, NULL, dy, dx, NULL, NULL);
    FM_PROF_END(l->prof, FM_PROF_BWD, t0, 0);
    return FM_OK;
}

int fm_groupnorm_backward_ada(fm_groupnorm *l, const float *x, const float *scale, const float *shift,
                              const float *dy, float *dx, float *dscale, float *dshift, fm_err *e)
{
    (void)e;
    (void)shift; /* already in the forward's coefficients */
    const double t0 = FM_PROF_START(l->prof);
    backward(l, x, scale, dy, dx, dscale, dshift);
    FM_PROF_END(l->prof, FM_PROF_BWD, t0, 0);
    return FM_OK;
}
