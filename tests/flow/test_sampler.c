/* test_sampler.c - Euler, Heun and SDE samplers with CFG on targets whose
 * exact velocity is known in closed form.
 *
 * Target: a mixture of C Gaussians N(mu_c, diag(s^2)) with equal weights, whose
 * exact conditional and marginal velocities tests/harness/gmm.h gives in closed
 * form (the null branch is the mixture's). C = 1 is the single Gaussian. */
#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "fm/path.h"
#include "fm/rng.h"
#include "fm/sampler.h"
#include "gmm.h"
#include "test.h"

enum { MAXD = FM_GMM_MAXD };

typedef struct gauss_model {
    fm_path_kind path;
    fm_gmm g;           /* classes (the null label is g.C), dims, components */
    int B;              /* the sampler's batch: every call must have n = 2B */
    long calls;
    long contract_errors; /* calls breaking the sampler's documented contract */
    int fail_at_call;     /* > 0: return an error at that call */
} gauss_model;

static int gauss_velocity(void *ctx, const float *x, const float *t, const int32_t *y, int n, float *u, fm_err *e)
{
    gauss_model *m = ctx;
    m->calls++;
    if (m->fail_at_call && m->calls == m->fail_at_call)
        return fm_fail(e, FM_ERR_INTERNAL, "test model failed on purpose");
    const int D = m->g.D, B = n / 2;
    if (n != 2 * m->B)
        m->contract_errors++;
    fm_path_coef c = fm_path_coefs(m->path, t[0]);
    long bad = 0;
    for (int r = 0; r < n; r++) {
        const float *xr = x + (long)r * D;
        if (t[r] != t[0] || y[r] < 0 || y[r] > m->g.C)
            bad++;
        if (r >= B && (y[r] != m->g.C || memcmp(xr, x + (long)(r - B) * D, D * sizeof *xr) != 0))
            bad++;
        double ur[MAXD];
        fm_gmm_means(&m->g, &c, y[r], xr, NULL, NULL, ur);
        for (int j = 0; j < D; j++)
            u[(long)r * D + j] = (float)ur[j];
    }
    m->contract_errors += bad;
    return FM_OK;
}

/* The single Gaussian of the moment and order tests: D = 3, mu = (1.5, -0.7, 0.3),
 * s = (0.5, 1, 2) (narrower, equal and wider than the noise). */
static gauss_model gaussian(fm_path_kind path, int B)
{
    gauss_model m = { .path = path, .g = { .C = 1, .D = 3 }, .B = B };
    const double mu[3] = { 1.5, -0.7, 0.3 }, s[3] = { 0.5, 1.0, 2.0 };
    for (int j = 0; j < 3; j++) {
        m.g.mu[0][j] = mu[j];
        m.g.s2[j] = s[j] * s[j];
    }
    return m;
}

/* Draw B samples with the given sampler; x [B, D] out; x0 [B, D] the noise (may be NULL). */
static int run(gauss_model *m, const fm_sampler_cfg *cfg, int B, const int32_t *y, float w, uint64_t seed,
               uint64_t first, float *x, float *x0)
{
    fm_sampler s;
    fm_err e = { 0 };
    CHECK_OK(fm_sampler_init(&s, cfg, B, m->g.D, &e), &e);
    fm_sample_noise(x, B, m->g.D, seed, first);
    if (x0)
        memcpy(x0, x, (size_t)B * m->g.D * sizeof *x);
    m->B = B;
    m->calls = 0;
    int rc = fm_sample(&s, gauss_velocity, m, y, w, seed, first, x, &e);
    fm_sampler_free(&s);
    CHECK_OK(rc, &e);
    CHECK(m->contract_errors == 0, "the sampler broke the callback contract %ld times", m->contract_errors);
    CHECK(m->calls == fm_sampler_nfe(cfg), "%ld model calls, nfe says %d", m->calls, fm_sampler_nfe(cfg));
    return 0;
}

/* Mean and variance of column j of the rows r of x [*, D] with sel[r] (sel NULL: all). */
static void moments(const float *x, int n, int D, int j, const int *sel, int want, double *mean, double *var)
{
    double s = 0, q = 0;
    int k = 0;
    for (int r = 0; r < n; r++) {
        if (sel && sel[r] != want)
            continue;
        s += x[(long)r * D + j];
        k++;
    }
    s /= k;
    for (int r = 0; r < n; r++) {
        if (sel && sel[r] != want)
            continue;
        double d = x[(long)r * D + j] - s;
        q += d * d;
    }
    *mean = s;
    *var = q / (k - 1);
}

static const fm_path_kind PATHS[2] = { FM_PATH_LINEAR, FM_PATH_COSINE };

/* The samplers under test and their step counts for the moment tests. */
static const fm_sampler_cfg KINDS[3] = {
    { .kind = FM_SAMPLER_EULER, .steps = 200 },
    { .kind = FM_SAMPLER_HEUN, .steps = 25 },
    { .kind = FM_SAMPLER_SDE, .steps = 200, .sde_sigma = 1.0f },
};

/* Gaussian target, N = 20000 samples per (sampler, path). Tolerance per dim:
 * |mean - mu| / s <= 4/sqrt(N) + 0.02 and |var / s^2 - 1| <= 4 sqrt(2/N) + 0.02
 * (4 standard errors of the estimate plus 0.02 for the discretisation bias,
 * measured with N = 4e5: euler 200 steps <= 0.016 (variance, linear path), sde
 * 200 steps <= 0.011, heun 25 steps <= 0.003). */
static int test_gaussian_moments(void)
{
    enum { N = 20000 };
    float *x = malloc((size_t)N * MAXD * sizeof *x);
    CHECK(x, "out of memory");
    const double tm = 4 / sqrt(N) + 0.02, tv = 4 * sqrt(2.0 / N) + 0.02;
    for (int p = 0; p < 2; p++) {
        for (int k = 0; k < 3; k++) {
            gauss_model m = gaussian(PATHS[p], N);
            fm_sampler_cfg cfg = KINDS[k];
            cfg.path = PATHS[p];
            cfg.null_label = m.g.C;
            int32_t *y = calloc(N, sizeof *y);
            int bad = run(&m, &cfg, N, y, 1.0f, 7, 0, x, NULL);
            free(y);
            if (bad)
                return free(x), 1;
            double wm = 0, wv = 0;
            for (int j = 0; j < m.g.D; j++) {
                double mean, var, s = sqrt(m.g.s2[j]);
                moments(x, N, m.g.D, j, NULL, 0, &mean, &var);
                wm = fmax(wm, fabs(mean - m.g.mu[0][j]) / s);
                wv = fmax(wv, fabs(var / m.g.s2[j] - 1));
            }
            printf("  %-5s %-6s %3d steps: worst |mean-mu|/s %.4f (tol %.4f), |var/s^2-1| %.4f (tol %.4f)\n",
                   fm_sampler_name(cfg.kind), fm_path_name(cfg.path), cfg.steps, wm, tm, wv, tv);
            CHECK(wm <= tm && wv <= tv, "%s on %s: moments off", fm_sampler_name(cfg.kind), fm_path_name(cfg.path));
        }
    }
    free(x);
    return 0;
}

/* RMS over samples and dims of (x_1 - (mu + s x_0)) / s: the exact flow map of
 * the Gaussian target is x_1 = mu + s x_0 (the ODE keeps x - alpha mu
 * proportional to sqrt(V)), so this is the pure discretisation error. */
static double flow_error(gauss_model *m, const fm_sampler_cfg *cfg, int n, float *x, float *x0, int *bad)
{
    int32_t *y = calloc(n, sizeof *y);
    *bad = !y || run(m, cfg, n, y, 1.0f, 3, 0, x, x0);
    free(y);
    double q = 0;
    for (int r = 0; r < n; r++)
        for (int j = 0; j < m->g.D; j++) {
            double s = sqrt(m->g.s2[j]), d = (x[r * m->g.D + j] - (m->g.mu[0][j] + s * x0[r * m->g.D + j])) / s;
            q += d * d;
        }
    return sqrt(q / (n * m->g.D));
}

/* Convergence order, deterministic samplers, steps 10/20/40 on 2000 samples:
 * the error ratio per doubling must be in [1.7, 2.4] for Euler (order 1) and
 * [3.3, 4.8] for Heun (order 2; also with the last step Euler, whose O(h^2)
 * local error keeps the global order 2), and Heun at 20 steps must beat Euler
 * at 20 steps by 10x. */
static int test_convergence_order(void)
{
    enum { N = 2000 };
    static float x[N * MAXD], x0[N * MAXD];
    const fm_sampler_kind kinds[3] = { FM_SAMPLER_EULER, FM_SAMPLER_HEUN, FM_SAMPLER_HEUN };
    const double lo[3] = { 1.7, 3.3, 3.3 }, hi[3] = { 2.4, 4.8, 4.8 };
    for (int p = 0; p < 2; p++) {
        double err[3][3];
        for (int k = 0; k < 3; k++) {
            for (int q = 0; q < 3; q++) {
                gauss_model m = gaussian(PATHS[p], N);
                fm_sampler_cfg cfg = { .kind = kinds[k], .path = PATHS[p], .steps = 10 << q, .null_label = 1,
                                       .heun_euler_last = k == 2 };
                int bad;
                err[k][q] = flow_error(&m, &cfg, N, x, x0, &bad);
                if (bad)
                    return 1;
            }
            double r1 = err[k][0] / err[k][1], r2 = err[k][1] / err[k][2];
            printf("  %-5s%s %-6s rms error 10/20/40 steps: %.3e %.3e %.3e  ratios %.2f %.2f (expect %s)\n",
                   fm_sampler_name(kinds[k]), k == 2 ? "+el" : "   ", fm_path_name(PATHS[p]), err[k][0], err[k][1],
                   err[k][2], r1, r2, k ? "4" : "2");
            CHECK(r1 >= lo[k] && r1 <= hi[k] && r2 >= lo[k] && r2 <= hi[k], "%s on %s: order ratios %g %g",
                  fm_sampler_name(kinds[k]), fm_path_name(PATHS[p]), r1, r2);
        }
        CHECK(err[1][1] * 10 < err[0][1], "%s: heun %g is not 10x better than euler %g at 20 steps",
              fm_path_name(PATHS[p]), err[1][1], err[0][1]);
    }
    return 0;
}

/* A field linear in t, the same for every label: u(x, t) = A + B t, per dim. */
static const double FEW_A[3] = { 1.5, -0.7, 0.3 }, FEW_B[3] = { 0.8, -2.0, 0.5 };

static int few_velocity(void *ctx, const float *x, const float *t, const int32_t *y, int n, float *u, fm_err *e)
{
    (void)x;
    (void)y;
    (void)e;
    long *calls = ctx;
    ++*calls;
    for (int i = 0; i < n; i++)
        for (int j = 0; j < 3; j++)
            u[i * 3 + j] = (float)(FEW_A[j] + FEW_B[j] * t[i]);
    return FM_OK;
}

/* Few steps (reflow's use): on u = A + B t the exact end point is
 * x0 + A + B/2. Heun (trapezoid) reaches it at 1, 2 and 4 steps (its grid
 * runs from t = 0 to exactly 1); Euler (left sums on t_k = k/N) reaches
 * x0 + A + B (N - 1)/(2N); Heun with the last step Euler x0 + A + B/2 -
 * B/(2N^2); each with fm_sampler_nfe model calls, under CFG (w = 3). */
static int test_few_steps(void)
{
    enum { N = 16, D = 3 };
    float x[N * D], x0[N * D];
    int32_t y[N];
    for (int i = 0; i < N; i++)
        y[i] = i % 2;
    const fm_sampler_kind kinds[3] = { FM_SAMPLER_EULER, FM_SAMPLER_HEUN, FM_SAMPLER_HEUN };
    for (int k = 0; k < 3; k++)
        for (int steps = 1; steps <= 4; steps *= 2) {
            fm_sampler_cfg cfg = { .kind = kinds[k], .path = FM_PATH_LINEAR, .steps = steps, .null_label = 2,
                                   .heun_euler_last = k == 2 };
            fm_sampler s;
            fm_err e = { 0 };
            long calls = 0;
            CHECK_OK(fm_sampler_init(&s, &cfg, N, D, &e), &e);
            fm_sample_noise(x, N, D, 7, 0);
            memcpy(x0, x, sizeof x);
            int rc = fm_sample(&s, few_velocity, &calls, y, 3.0f, 7, 0, x, &e);
            fm_sampler_free(&s);
            CHECK_OK(rc, &e);
            CHECK(calls == fm_sampler_nfe(&cfg), "%s at %d steps: %ld model calls, nfe %d", fm_sampler_name(kinds[k]),
                  steps, calls, fm_sampler_nfe(&cfg));
            double worst = 0;
            for (int i = 0; i < N * D; i++) {
                const double b = FEW_B[i % D], n = steps;
                const double want = x0[i] + FEW_A[i % D] +
                                    (k == 0 ? b * (n - 1) / (2 * n) : k == 1 ? b / 2 : b / 2 - b / (2 * n * n));
                worst = fmax(worst, fabs(x[i] - want));
            }
            printf("  %-5s%s %d step%s: worst error %.1e\n", fm_sampler_name(kinds[k]), k == 2 ? "+el" : "   ", steps,
                   steps > 1 ? "s" : " ", worst);
            CHECK(worst <= 1e-5, "%s%s at %d steps: off the known end point by %g", fm_sampler_name(kinds[k]),
                  k == 2 ? " (last step euler)" : "", steps, worst);
        }
    return 0;
}

/* Noise keyed by (seed, global sample index): sampling B = 8 at once or as two
 * halves (first = 0 and 4) is bitwise identical, for the SDE too; a different
 * seed changes the SDE path; sde_sigma = 0 is Euler (to rounding). */
static int test_sde_split_and_sigma0(void)
{
    enum { B = 8, H = 4 };
    gauss_model m = gaussian(FM_PATH_COSINE, B);
    int32_t y[B] = { 0 };
    float a[B * 3], b[B * 3], c[B * 3];
    fm_sampler_cfg cfg = { .kind = FM_SAMPLER_SDE, .path = FM_PATH_COSINE, .steps = 30, .sde_sigma = 0.8f,
                           .null_label = 1 };
    if (run(&m, &cfg, B, y, 1.5f, 42, 100, a, NULL) || run(&m, &cfg, H, y, 1.5f, 42, 100, b, NULL) ||
        run(&m, &cfg, B - H, y, 1.5f, 42, 100 + H, b + H * 3, NULL))
        return 1;
    CHECK(memcmp(a, b, sizeof a) == 0, "sde samples depend on the batch split");
    if (run(&m, &cfg, B, y, 1.5f, 43, 100, c, NULL))
        return 1;
    CHECK(memcmp(a, c, sizeof a) != 0, "the seed does not key the sde noise");
    cfg.sde_sigma = 0;
    if (run(&m, &cfg, B, y, 1.5f, 42, 100, b, NULL))
        return 1;
    cfg.kind = FM_SAMPLER_EULER;
    if (run(&m, &cfg, B, y, 1.5f, 42, 100, c, NULL))
        return 1;
    double err = fm_rel_err(b, c, B * 3, 1.0);
    CHECK(err < 1e-6, "sde with sigma 0 differs from euler by %g", err);
    return 0;
}

/* The same split test with B * D = 72000 > 65536, so that the full batch runs
 * the OpenMP loops and the halves the serial ones: bitwise identical. */
static int test_split_large(void)
{
    enum { B = 24000, H = 12000, D = 3 };
    static float a[B * D], b[B * D];
    static int32_t y[B];
    for (int k = 0; k < 3; k++) {
        gauss_model m = gaussian(FM_PATH_LINEAR, B);
        fm_sampler_cfg cfg = { .kind = (fm_sampler_kind)k, .path = FM_PATH_LINEAR, .steps = 6, .sde_sigma = 0.5f,
                               .null_label = 1 };
        if (run(&m, &cfg, B, y, 2.5f, 4, 7, a, NULL) || run(&m, &cfg, H, y, 2.5f, 4, 7, b, NULL) ||
            run(&m, &cfg, B - H, y, 2.5f, 4, 7 + H, b + H * D, NULL))
            return 1;
        CHECK(memcmp(a, b, sizeof a) == 0, "%s: samples depend on the batch split", fm_sampler_name(cfg.kind));
    }
    return 0;
}

/* The three-class mixture in D = 2: means on a circle of radius 4 (mixture mean
 * 0), s = 0.5 in both dims. */
static gauss_model mixture(fm_path_kind path, int B)
{
    gauss_model m = { .path = path, .g = { .C = 3, .D = 2 }, .B = B };
    for (int k = 0; k < 3; k++) {
        m.g.mu[k][0] = 4 * cos(2.0943951023931953 * k);
        m.g.mu[k][1] = 4 * sin(2.0943951023931953 * k);
    }
    m.g.s2[0] = m.g.s2[1] = 0.25;
    return m;
}

static int nearest(const gauss_model *m, const float *x)
{
    int best = 0;
    double bd = INFINITY;
    for (int k = 0; k < m->g.C; k++) {
        double d = hypot(x[0] - m->g.mu[k][0], x[1] - m->g.mu[k][1]);
        if (d < bd)
            bd = d, best = k;
    }
    return best;
}

/* CFG w = 1 (conditional) and w = 0 (unconditional), every sampler and path,
 * N = 9000 samples. w = 1, labels i % 3: the samples of class c match
 * N(mu_c, s^2): |mean - mu_c|/s <= 4/sqrt(3000) + 0.02, |var/s^2 - 1| <=
 * 4 sqrt(2/3000) + 0.03. w = 0, every label 0: the nearest-mean frequencies
 * match 1/3 within 4 sqrt(2/9 / N) + 0.005 = 0.0249, and (heun) labels 0 or 1
 * give bitwise the same samples (the conditional branch is ignored). */
static int test_cfg_w1_w0(void)
{
    enum { N = 9000 };
    static float x[N * 2], x1[N * 2];
    static int32_t y[N], y1[N];
    static int cls[N];
    const double tm = 4 / sqrt(N / 3.0) + 0.02, tv = 4 * sqrt(2.0 / (N / 3.0)) + 0.03;
    const double tf = 4 * sqrt(2.0 / 9 / N) + 0.005;
    for (int p = 0; p < 2; p++) {
        for (int k = 0; k < 3; k++) {
            gauss_model m = mixture(PATHS[p], N);
            fm_sampler_cfg cfg = KINDS[k];
            cfg.path = PATHS[p];
            cfg.null_label = m.g.C;
            for (int i = 0; i < N; i++)
                y[i] = cls[i] = i % 3;
            if (run(&m, &cfg, N, y, 1.0f, 5, 0, x, NULL))
                return 1;
            double wm = 0, wv = 0;
            for (int c = 0; c < 3; c++)
                for (int j = 0; j < 2; j++) {
                    double mean, var;
                    moments(x, N, 2, j, cls, c, &mean, &var);
                    wm = fmax(wm, fabs(mean - m.g.mu[c][j]) / 0.5);
                    wv = fmax(wv, fabs(var / 0.25 - 1));
                }
            /* w = 0: the mixture, whatever the labels */
            for (int i = 0; i < N; i++) {
                y[i] = 0;
                y1[i] = 1;
            }
            if (run(&m, &cfg, N, y, 0.0f, 6, 0, x, NULL))
                return 1;
            if (cfg.kind == FM_SAMPLER_HEUN) {
                if (run(&m, &cfg, N, y1, 0.0f, 6, 0, x1, NULL))
                    return 1;
                CHECK(memcmp(x, x1, sizeof x) == 0, "w = 0 depends on the label");
            }
            int count[3] = { 0 };
            for (int i = 0; i < N; i++)
                count[nearest(&m, x + 2 * i)]++;
            double wf = 0;
            for (int c = 0; c < 3; c++)
                wf = fmax(wf, fabs(count[c] / (double)N - 1 / 3.0));
            printf("  %-5s %-6s w=1: |mean-mu_c|/s %.4f (tol %.4f) |var/s^2-1| %.4f (tol %.4f);"
                   " w=0: freq %.3f %.3f %.3f, worst |f-1/3| %.4f (tol %.4f)\n",
                   fm_sampler_name(cfg.kind), fm_path_name(cfg.path), wm, tm, wv, tv, count[0] / (double)N,
                   count[1] / (double)N, count[2] / (double)N, wf, tf);
            CHECK(wm <= tm && wv <= tv, "w = 1: class moments off");
            CHECK(wf <= tf, "w = 0: component frequencies off");
        }
    }
    return 0;
}

/* CFG w > 1, Heun 25 steps and the SDE: class-c samples move beyond mu_c, away
 * from the other classes, i.e. along mu_c - (mixture mean); the offset
 * (mean_c - mu_c) . unit(mu_c - mean) is ~0 at w = 1 (|.| < 0.03), grows with w,
 * and exceeds 0.1 (= s/5) at w = 4; the sideways offset stays small (< 0.03 +
 * 0.1 * along). */
static int test_cfg_guidance_direction(void)
{
    enum { N = 6000 };
    static float x[N * 2];
    static int32_t y[N];
    static int cls[N];
    const float ws[3] = { 1.0f, 2.0f, 4.0f };
    const fm_sampler_cfg kinds[2] = { KINDS[1], KINDS[2] };
    for (int p = 0; p < 2; p++) {
        for (int k = 0; k < 2; k++) {
            double along[3][3], side[3][3];
            for (int q = 0; q < 3; q++) {
                gauss_model m = mixture(PATHS[p], N);
                fm_sampler_cfg cfg = kinds[k];
                cfg.path = PATHS[p];
                cfg.null_label = m.g.C;
                for (int i = 0; i < N; i++)
                    y[i] = cls[i] = i % 3;
                if (run(&m, &cfg, N, y, ws[q], 9, 0, x, NULL))
                    return 1;
                for (int c = 0; c < 3; c++) {
                    double m0, m1, v;
                    moments(x, N, 2, 0, cls, c, &m0, &v);
                    moments(x, N, 2, 1, cls, c, &m1, &v);
                    double nx = m.g.mu[c][0] / 4, ny = m.g.mu[c][1] / 4; /* unit(mu_c - 0) */
                    along[q][c] = (m0 - m.g.mu[c][0]) * nx + (m1 - m.g.mu[c][1]) * ny;
                    side[q][c] = -(m0 - m.g.mu[c][0]) * ny + (m1 - m.g.mu[c][1]) * nx;
                }
            }
            printf("  %-5s %-6s offset along mu_c (class 0/1/2): w=1 %+.3f %+.3f %+.3f  w=2 %+.3f %+.3f %+.3f"
                   "  w=4 %+.3f %+.3f %+.3f\n",
                   fm_sampler_name(kinds[k].kind), fm_path_name(PATHS[p]), along[0][0], along[0][1], along[0][2],
                   along[1][0], along[1][1], along[1][2], along[2][0], along[2][1], along[2][2]);
            for (int c = 0; c < 3; c++) {
                CHECK(fabs(along[0][c]) < 0.03, "w = 1 moved class %d by %g", c, along[0][c]);
                CHECK(along[1][c] > along[0][c] + 0.01 && along[2][c] > along[1][c] + 0.01,
                      "class %d: offset does not grow with w: %g %g %g", c, along[0][c], along[1][c], along[2][c]);
                CHECK(along[2][c] > 0.1, "class %d: w = 4 offset %g", c, along[2][c]);
                for (int q = 0; q < 3; q++)
                    CHECK(fabs(side[q][c]) < 0.03 + 0.1 * along[q][c], "class %d w=%g: sideways offset %g", c,
                          ws[q], side[q][c]);
            }
        }
    }
    return 0;
}

/* A failing model call stops the sampler with its status and a message naming
 * the time; bad settings are refused at init; the names. */
static int test_errors_and_names(void)
{
    enum { B = 4 };
    gauss_model m = gaussian(FM_PATH_LINEAR, B);
    m.fail_at_call = 3;
    fm_sampler_cfg cfg = { .kind = FM_SAMPLER_HEUN, .path = FM_PATH_LINEAR, .steps = 4, .null_label = 1 };
    fm_sampler s;
    fm_err e = { 0 };
    float x[B * 3];
    CHECK_OK(fm_sampler_init(&s, &cfg, B, 3, &e), &e);
    fm_sample_noise(x, B, 3, 1, 0);
    int rc = fm_sample(&s, gauss_velocity, &m, NULL, 2.0f, 1, 0, x, &e);
    fm_sampler_free(&s);
    CHECK(rc == FM_ERR_INTERNAL && strstr(e.msg, "sampler: model at t=0.2500: test model failed"),
          "rc %d msg \"%s\"", rc, e.msg);
    cfg.steps = 0;
    CHECK(fm_sampler_init(&s, &cfg, B, 3, &e) == FM_ERR_USAGE && strstr(e.msg, "steps"), "steps 0 accepted");
    cfg.steps = 4;
    cfg.kind = FM_SAMPLER_SDE;
    cfg.sde_sigma = -1;
    CHECK(fm_sampler_init(&s, &cfg, B, 3, &e) == FM_ERR_USAGE, "negative sigma accepted");
    CHECK(strcmp(fm_sampler_name(FM_SAMPLER_HEUN), "heun") == 0, "heun");
    CHECK(strcmp(fm_sampler_name(FM_SAMPLER_SDE), "sde") == 0, "sde");
    cfg = (fm_sampler_cfg){ .kind = FM_SAMPLER_HEUN, .steps = 10, .heun_euler_last = 1 };
    CHECK(fm_sampler_nfe(&cfg) == 19, "heun nfe");
    /* the initial noise of a split run is the same */
    float a[8 * 3], b[8 * 3];
    fm_sample_noise(a, 8, 3, 9, 50);
    fm_sample_noise(b, 3, 3, 9, 50);
    fm_sample_noise(b + 9, 5, 3, 9, 53);
    CHECK(memcmp(a, b, sizeof a) == 0, "initial noise depends on the split");
    return 0;
}

int main(int argc, char **argv)
{
    static const fm_test tests[] = {
        TEST(test_gaussian_moments), TEST(test_convergence_order),      TEST(test_sde_split_and_sigma0),
        TEST(test_split_large),      TEST(test_cfg_w1_w0),              TEST(test_cfg_guidance_direction),
        TEST(test_errors_and_names), TEST(test_few_steps),
    };
    return fm_test_main("flow/sampler", tests, sizeof tests / sizeof tests[0], argc, argv);
}
