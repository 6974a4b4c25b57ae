/* test_cguide.c - classifier guidance against known answers on a Gaussian
 * mixture: data x1 ~ sum_k pi_k N(mu_k, sigma^2 I), class = component, so on
 * the path x_t = alpha x1 + beta x0 every quantity is exact:
 *   v = alpha^2 sigma^2 + beta^2, s_k(x) = -(x - alpha mu_k) / v,
 *   u_k(x) = dalpha (mu_k + alpha sigma^2 (x - alpha mu_k) / v) + dbeta beta (x - alpha mu_k) / v,
 *   p_t(k | x) = w_k(x) ∝ pi_k N(x; alpha mu_k, v I), u(x) = sum_k w_k u_k,
 *   grad_x log p_t(y | x) = s_y - sum_k w_k s_k.
 * Guidance must turn u into u_y: u + c(t) grad log p_t(y | x) = u_y. */
#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "fm/cguide.h"
#include "fm/rng.h"
#include "fm/sampler.h"
#include "test.h"

#define D 2
#define K 2
#define PI_2 1.5707963267948966

static const fm_path_kind PATHS[2] = { FM_PATH_LINEAR, FM_PATH_COSINE };
static const double MU[K][D] = { { 2.0, -1.0 }, { -1.5, 1.0 } };
static const double PRIOR[K] = { 0.3, 0.7 };
static const double SIGMA = 0.5;

typedef struct mix {
    fm_path_kind path;
    int cond; /* velocity fn: 1 = u_{y}, 0 = the mixture's u (labels ignored) */
} mix;

/* posterior w [K], component velocities uk [K][D] and scores sk [K][D] at x, t */
static void exact(fm_path_kind pk, double t, const double *x, double *w, double uk[K][D], double sk[K][D])
{
    fm_path_coef c = fm_path_coefs(pk, t);
    const double v = c.alpha * c.alpha * SIGMA * SIGMA + c.beta * c.beta;
    double lw[K], mx = -INFINITY, z = 0;
    for (int k = 0; k < K; k++) {
        double r2 = 0;
        for (int j = 0; j < D; j++) {
            const double r = x[j] - c.alpha * MU[k][j];
            r2 += r * r;
            sk[k][j] = -r / v;
            uk[k][j] = c.dalpha * (MU[k][j] + c.alpha * SIGMA * SIGMA * r / v) + c.dbeta * c.beta * r / v;
        }
        lw[k] = log(PRIOR[k]) - 0.5 * r2 / v;
        mx = fmax(mx, lw[k]);
    }
    for (int k = 0; k < K; k++)
        z += w[k] = exp(lw[k] - mx);
    for (int k = 0; k < K; k++)
        w[k] /= z;
}

static void exact_grad(fm_path_kind pk, double t, const double *x, int y, double *g, double *u, double *uy)
{
    double w[K], uk[K][D], sk[K][D];
    exact(pk, t, x, w, uk, sk);
    for (int j = 0; j < D; j++) {
        double sm = 0, um = 0;
        for (int k = 0; k < K; k++)
            sm += w[k] * sk[k][j], um += w[k] * uk[k][j];
        g[j] = sk[y][j] - sm;
        u[j] = um;
        uy[j] = uk[y][j];
    }
}

static int grad_fn(void *ctx, const float *x, double t, const int32_t *y, int n, float *grad, fm_err *e)
{
    (void)e;
    const mix *m = ctx;
    for (int i = 0; i < n; i++) {
        double xd[D], g[D], u[D], uy[D];
        for (int j = 0; j < D; j++)
            xd[j] = x[i * D + j];
        if (y[i] < 0 || y[i] >= K) {
            memset(grad + i * D, 0, D * sizeof *grad);
            continue;
        }
        exact_grad(m->path, t, xd, y[i], g, u, uy);
        for (int j = 0; j < D; j++)
            grad[i * D + j] = (float)g[j];
    }
    return FM_OK;
}

static int velocity(void *ctx, const float *x, const float *t, const int32_t *y, int n, float *u, fm_err *e)
{
    (void)e;
    const mix *m = ctx;
    for (int i = 0; i < n; i++) {
        double xd[D], g[D], um[D], uy[D];
        for (int j = 0; j < D; j++)
            xd[j] = x[i * D + j];
        const int yi = y[i] >= 0 && y[i] < K ? y[i] : 0;
        exact_grad(m->path, t[i], xd, yi, g, um, uy);
        for (int j = 0; j < D; j++)
            u[i * D + j] = (float)(m->cond && y[i] < K ? uy[j] : um[j]);
    }
    return FM_OK;
}

/* c(t) = beta gamma / alpha in closed form for both paths, 0 at t = 0 */
static int test_coef(void)
{
    CHECK(fm_cguide_coef(FM_PATH_LINEAR, 0.0) == 0.0 && fm_cguide_coef(FM_PATH_COSINE, 0.0) == 0.0, "c(0) != 0");
    CHECK(fm_cguide_coef(FM_PATH_LINEAR, 1.0) == 0.0 && fm_cguide_coef(FM_PATH_COSINE, 1.0) == 0.0, "c(1) != 0");
    for (int i = 1; i < 20; i++) {
        const double t = i / 20.0;
        const double lin = (1 - t) / t, cosv = PI_2 / tan(PI_2 * t);
        CHECK(fabs(fm_cguide_coef(FM_PATH_LINEAR, t) - lin) < 1e-12 * (1 + lin), "linear c(%g)", t);
        CHECK(fabs(fm_cguide_coef(FM_PATH_COSINE, t) - cosv) < 1e-12 * (1 + cosv), "cosine c(%g)", t);
    }
    return 0;
}

/* u + s c(t) grad log p_t(y|x) through fm_cguide_prepare/add equals u_y (s = 1),
 * and u + s (u_y - u) for any s, at random x, both paths, t in (0, 1). */
static int test_guided_velocity_exact(void)
{
    fm_err e = { 0 };
    enum { N = 64 };
    float x[N * D], delta[N * D], u[N * D];
    int32_t y[N];
    double worst = 0;
    fm_fill_normal(x, N * D, 11, 1, 0);
    for (int i = 0; i < N; i++)
        y[i] = i % 3 == 2 ? K : i % K; /* every third row null: no correction */
    for (int p = 0; p < 2; p++) {
        mix m = { PATHS[p], 0 };
        for (int si = 0; si < 3; si++) {
            const float s = si == 0 ? 1.0f : si == 1 ? 2.5f : -0.5f;
            fm_cguide g = { grad_fn, &m, s, delta };
            for (int q = 1; q <= 9; q++) {
                const double t = q == 9 ? 0.995 : q / 9.0;
                int on = 0;
                for (int i = 0; i < N * D; i++)
                    x[i] *= 1.0f + 0.5f * (float)t; /* spread the points over t */
                CHECK_OK(fm_cguide_prepare(&g, PATHS[p], x, t, y, N, D, &on, &e), &e);
                CHECK(on, "guidance off at t=%g", t);
                float tt[N];
                for (int i = 0; i < N; i++)
                    tt[i] = (float)t;
                int32_t yn[N];
                for (int i = 0; i < N; i++)
                    yn[i] = K;
                CHECK_OK(velocity(&m, x, tt, yn, N, u, &e), &e);
                fm_cguide_add(&g, u, N * D);
                for (int i = 0; i < N; i++) {
                    double xd[D], gr[D], um[D], uy[D];
                    for (int j = 0; j < D; j++)
                        xd[j] = x[i * D + j];
                    exact_grad(PATHS[p], t, xd, y[i] < K ? y[i] : 0, gr, um, uy);
                    for (int j = 0; j < D; j++) {
                        const double want = y[i] < K ? um[j] + s * (uy[j] - um[j]) : um[j];
                        const double err = fabs(u[i * D + j] - want) / (1 + fabs(want));
                        worst = fmax(worst, err);
                        CHECK(err < 2e-5, "%s t=%g s=%g row %d: guided u %g, exact %g", fm_path_name(PATHS[p]), t,
                              (double)s, i, (double)u[i * D + j], want);
                    }
                }
            }
        }
    }
    printf("  guided velocity vs the exact class velocity: worst relative error %.2e (tol 2e-5)\n", worst);
    fm_cguide off = { grad_fn, NULL, 0.0f, delta };
    int on = 1;
    CHECK_OK(fm_cguide_prepare(&off, FM_PATH_LINEAR, x, 0.5, y, N, D, &on, &e), &e);
    CHECK(!on, "scale 0 is not off");
    CHECK_OK(fm_cguide_prepare(NULL, FM_PATH_LINEAR, x, 0.5, y, N, D, &on, &e), &e);
    CHECK(!on, "NULL is not off");
    return 0;
}

/* Sampling an unconditional model (w = 0) with exact classifier guidance
 * (s = 1) follows the class ODE: samples match the exact conditional model's
 * from the same noise, up to the t = 0 evaluation where guidance is off
 * (an error of about h gamma |mu_y - E_w mu| in the first step). Without
 * guidance the samples differ by O(1). */
static int test_sampler_follows_class_ode(void)
{
    fm_err e = { 0 };
    enum { B = 200, STEPS = 100 };
    float *x = malloc(3 * B * D * sizeof *x), *delta = malloc(B * D * sizeof *delta);
    CHECK(x && delta, "out of memory");
    float *xc = x + B * D, *xu = x + 2 * B * D;
    int32_t y[B];
    for (int i = 0; i < B; i++)
        y[i] = i % K;
    for (int p = 0; p < 2; p++) {
        for (int kind = 0; kind < 2; kind++) {
            mix mu = { PATHS[p], 0 }, mc = { PATHS[p], 1 };
            fm_cguide g = { grad_fn, &mu, 1.0f, delta };
            fm_sampler_cfg cfg = { .kind = kind ? FM_SAMPLER_HEUN : FM_SAMPLER_EULER, .path = PATHS[p],
                                   .steps = STEPS, .null_label = K, .cguide = &g };
            fm_sampler s;
            CHECK_OK(fm_sampler_init(&s, &cfg, B, D, &e), &e);
            fm_sample_noise(x, B, D, 5, 0);
            CHECK_OK(fm_sample(&s, velocity, &mu, y, 0.0f, 5, 0, x, &e), &e);
            fm_sampler_free(&s);
            cfg.cguide = NULL;
            CHECK_OK(fm_sampler_init(&s, &cfg, B, D, &e), &e);
            fm_sample_noise(xc, B, D, 5, 0);
            CHECK_OK(fm_sample(&s, velocity, &mc, y, 1.0f, 5, 0, xc, &e), &e);
            fm_sample_noise(xu, B, D, 5, 0);
            CHECK_OK(fm_sample(&s, velocity, &mu, y, 0.0f, 5, 0, xu, &e), &e);
            fm_sampler_free(&s);
            double dg = 0, du = 0;
            for (int i = 0; i < B * D; i++) {
                dg = fmax(dg, fabs(x[i] - xc[i]));
                du = fmax(du, fabs(xu[i] - xc[i]));
            }
            const double tol = (kind ? 0.015 : 0.03) * (p ? PI_2 : 1.0); /* ~ 2 h gamma |mu_y - mu_other|, + Euler */
            printf("  %s %s: max |guided - class ODE| %.4f (tol %.3f), unguided %.3f\n", fm_path_name(PATHS[p]),
                   kind ? "heun" : "euler", dg, tol, du);
            CHECK(dg < tol, "%s: guided samples %.4f from the class ODE's", fm_path_name(PATHS[p]), dg);
            CHECK(du > 1.0, "%s: unguided samples only %.4f from the class ODE's", fm_path_name(PATHS[p]), du);
        }
    }
    free(x);
    free(delta);
    return 0;
}

int main(int argc, char **argv)
{
    static const fm_test tests[] = { TEST(test_coef), TEST(test_guided_velocity_exact),
                                     TEST(test_sampler_follows_class_ode) };
    return fm_test_main("flow/cguide", tests, sizeof tests / sizeof tests[0], argc, argv);
}
