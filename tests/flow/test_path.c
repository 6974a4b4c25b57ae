/* test_path.c - probability paths, time sampling and the CFM batch, against known answers. */
#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "fm/path.h"
#include "fm/rng.h"
#include "test.h"

static const fm_path_kind PATHS[2] = { FM_PATH_LINEAR, FM_PATH_COSINE };

static int test_endpoints(void)
{
    for (int p = 0; p < 2; p++) {
        fm_path_kind k = PATHS[p];
        fm_path_coef c0 = fm_path_coefs(k, 0.0), c1 = fm_path_coefs(k, 1.0);
        CHECK(c0.alpha == 0.0 && c0.beta == 1.0 && c1.alpha == 1.0 && c1.beta == 0.0,
              "%s: coefs alpha_0 %g beta_0 %g alpha_1 %g beta_1 %g", fm_path_name(k), c0.alpha, c0.beta, c1.alpha,
              c1.beta);
        /* the single functions agree up to sin/cos rounding (cos(pi/2) = 6e-17) */
        CHECK(fabs(fm_path_alpha(k, 0)) < 1e-15 && fabs(fm_path_beta(k, 0) - 1) < 1e-15 &&
                  fabs(fm_path_alpha(k, 1) - 1) < 1e-15 && fabs(fm_path_beta(k, 1)) < 1e-15,
              "%s: endpoint functions", fm_path_name(k));
        double g = k == FM_PATH_COSINE ? 1.5707963267948966 : 1.0; /* pi/2 */
        for (int i = 0; i <= 10; i++) {
            double t = i / 10.0;
            CHECK(fabs(fm_path_gamma(k, t) - g) < 1e-12, "%s: gamma(%g) = %.15g, expected %.15g", fm_path_name(k), t,
                  fm_path_gamma(k, t), g);
            fm_path_coef c = fm_path_coefs(k, t);
            CHECK(c.alpha >= 0 && c.beta >= 0 && c.dalpha > 0 && c.dbeta <= 0, "%s: monotone at %g", fm_path_name(k),
                  t);
        }
    }
    return 0;
}

/* dalpha, dbeta against central differences in double: h = 1e-5, so truncation
 * ~h^2 = 1e-10 and rounding ~1e-16/h = 1e-11; tol 1e-8. */
static int test_derivatives_fd(void)
{
    const double h = 1e-5;
    double worst = 0;
    for (int p = 0; p < 2; p++) {
        fm_path_kind k = PATHS[p];
        for (int i = 0; i <= 20; i++) {
            double t = 0.001 + i * (0.998 / 20);
            double fa = (fm_path_alpha(k, t + h) - fm_path_alpha(k, t - h)) / (2 * h);
            double fb = (fm_path_beta(k, t + h) - fm_path_beta(k, t - h)) / (2 * h);
            double ea = fabs(fa - fm_path_dalpha(k, t)), eb = fabs(fb - fm_path_dbeta(k, t));
            worst = fmax(worst, fmax(ea, eb));
            CHECK(ea < 1e-8 && eb < 1e-8, "%s at t=%g: dalpha %g vs fd %g, dbeta %g vs fd %g", fm_path_name(k), t,
                  fm_path_dalpha(k, t), fa, fm_path_dbeta(k, t), fb);
        }
    }
    printf("  path derivatives: worst |analytic - fd| = %.2e (tol 1e-8)\n", worst);
    return 0;
}

/* The CFM batch: eps and t follow the documented streams, x_t is on the path,
 * and u = d/dt x_t with (z, eps) fixed (central difference in double, h = 1e-4:
 * error ~1e-8, against a float target: tol 2e-6 relative to max|u|). */
static int test_target_is_time_derivative(void)
{
    enum { B = 16, D = 5 };
    float z[B * D], t[B], xt[B * D], u[B * D];
    int32_t y[B], yo[B];
    uint64_t gidx[B];
    const uint64_t seed = 11, step = 37;
    fm_fill_normal(z, B * D, 99, 0, 0);
    for (int i = 0; i < B; i++) {
        gidx[i] = step * 64 + 3 * (uint64_t)i; /* any indices */
        y[i] = i % 10;
    }
    fm_err e = { 0 };
    double worst_x = 0, worst_u = 0;
    for (int p = 0; p < 2; p++) {
        fm_cfm_cfg c = { .path = PATHS[p], .time = { FM_TIME_UNIFORM, 0, 1 }, .cfg_dropout = 0, .num_classes = 10 };
        CHECK_OK(fm_cfm_batch(&c, z, y, gidx, B, D, seed, step, t, xt, u, yo, &e), &e);
        double umax = 0;
        for (int i = 0; i < B * D; i++)
            umax = fmax(umax, fabs(u[i]));
        for (int i = 0; i < B; i++) {
            CHECK(t[i] == fm_rand_uniform(seed, fm_flow_stream(step, FM_FLOW_TIME), gidx[i]),
                  "t of row %d is not the documented draw", i);
            CHECK(yo[i] == y[i], "label changed at dropout 0");
            const double hh = 1e-4;
            fm_path_coef c0 = fm_path_coefs(c.path, t[i]);
            fm_path_coef cp = fm_path_coefs(c.path, t[i] + hh), cm = fm_path_coefs(c.path, t[i] - hh);
            for (int j = 0; j < D; j++) {
                double eps = fm_rand_normal(seed, fm_flow_stream(step, FM_FLOW_NOISE), gidx[i] * D + j);
                double zz = z[i * D + j];
                double x = c0.alpha * zz + c0.beta * eps;
                double fd = ((cp.alpha - cm.alpha) * zz + (cp.beta - cm.beta) * eps) / (2 * hh);
                double ex = fabs(xt[i * D + j] - x) / (1 + fabs(x)), eu = fabs(u[i * D + j] - fd) / umax;
                worst_x = fmax(worst_x, ex);
                worst_u = fmax(worst_u, eu);
                CHECK(ex < 1e-6, "%s row %d elem %d: x_t %g, expected %g", fm_path_name(c.path), i, j, xt[i * D + j],
                      x);
                CHECK(eu < 2e-6, "%s row %d elem %d (t=%g): u %g, d/dt x_t %g", fm_path_name(c.path), i, j, t[i],
                      u[i * D + j], fd);
            }
        }
    }
    printf("  cfm: worst x_t error %.2e (tol 1e-6), worst |u - d/dt x_t|/max|u| %.2e (tol 2e-6)\n", worst_x, worst_u);
    return 0;
}

/* Moments of the time draws over N = 2e5 samples. Uniform: mean 1/2 (stderr
 * 6.5e-4), var 1/12 (stderr 1.9e-4). Logit-normal (m = 0.3, s = 1.2): logit(t)
 * has mean m (stderr 2.7e-3) and std s (stderr 1.9e-3). Tolerances ~4-5 stderr. */
static int test_time_moments(void)
{
    enum { N = 200000 };
    uint64_t *g = malloc(N * sizeof *g);
    float *t = malloc(N * sizeof *t);
    CHECK(g && t, "out of memory");
    for (int i = 0; i < N; i++)
        g[i] = (uint64_t)i * 7 + 5;
    fm_time_dist du = { FM_TIME_UNIFORM, 0, 0 }, dl = { FM_TIME_LOGIT_NORMAL, 0.3f, 1.2f };
    fm_time_sample(&du, 3, 8, g, N, t);
    double m = 0, v = 0, lo = 1, hi = 0;
    for (int i = 0; i < N; i++) {
        m += t[i];
        lo = fmin(lo, t[i]);
        hi = fmax(hi, t[i]);
    }
    m /= N;
    for (int i = 0; i < N; i++)
        v += (t[i] - m) * (t[i] - m);
    v /= N;
    printf("  uniform t: mean %.5f (1/2) var %.5f (1/12 = %.5f) range [%g, %g]\n", m, v, 1 / 12.0, lo, hi);
    CHECK(fabs(m - 0.5) < 0.003 && fabs(v - 1 / 12.0) < 0.001 && lo >= 0 && hi < 1, "uniform moments");
    fm_time_sample(&dl, 3, 8, g, N, t);
    CHECK(t[17] == fm_time_draw(&dl, 3, 8, g[17]), "fm_time_sample differs from fm_time_draw");
    m = v = 0;
    for (int i = 0; i < N; i++) {
        CHECK(t[i] > 0 && t[i] < 1, "logit-normal t = %g out of (0, 1)", t[i]);
        double l = log(t[i] / (1.0 - t[i]));
        m += l;
        v += l * l;
    }
    m /= N;
    v = v / N - m * m;
    printf("  logit-normal t: logit mean %.4f (0.3) std %.4f (1.2)\n", m, sqrt(v));
    CHECK(fabs(m - 0.3) < 0.012 && fabs(sqrt(v) - 1.2) < 0.01, "logit-normal moments mean %g std %g", m, sqrt(v));
    /* another step gives other times */
    float t2 = fm_time_draw(&dl, 3, 9, g[0]);
    CHECK(t2 != t[0], "step does not key the time draw");
    free(g);
    free(t);
    return 0;
}

/* CFG label dropout: rate eta = 0.1 over N = 1e5 rows (stderr 9.5e-4, tol 4e-3);
 * eta = 0 keeps every label, eta = 1 drops every label, y = NULL is all null. */
static int test_label_dropout(void)
{
    enum { N = 100000, C = 10 };
    float *z = calloc(N, sizeof *z), *t = malloc(N * sizeof *t), *xt = malloc(N * sizeof *xt),
          *u = malloc(N * sizeof *u);
    int32_t *y = malloc(N * sizeof *y), *yo = malloc(N * sizeof *yo);
    uint64_t *g = malloc(N * sizeof *g);
    CHECK(z && t && xt && u && y && yo && g, "out of memory");
    for (int i = 0; i < N; i++) {
        y[i] = i % C;
        g[i] = 1000 + (uint64_t)i;
    }
    fm_err e = { 0 };
    fm_cfm_cfg c = { FM_PATH_LINEAR, { FM_TIME_UNIFORM, 0, 1 }, 0.1f, C, 0 };
    CHECK_OK(fm_cfm_batch(&c, z, y, g, N, 1, 5, 2, t, xt, u, yo, &e), &e);
    int dropped = 0;
    for (int i = 0; i < N; i++) {
        CHECK(yo[i] == y[i] || yo[i] == C, "row %d: label %d became %d", i, y[i], yo[i]);
        dropped += yo[i] == C;
    }
    double rate = (double)dropped / N;
    printf("  label dropout: rate %.4f (eta 0.1, tol 4e-3)\n", rate);
    CHECK(fabs(rate - 0.1) < 4e-3, "dropout rate %g", rate);
    /* the drop of row i is the documented draw */
    for (int i = 0; i < 100; i++)
        CHECK((yo[i] == C) == (fm_rand_uniform(5, fm_flow_stream(2, FM_FLOW_DROP), g[i]) < 0.1f),
              "row %d: dropout is not the documented draw", i);
    c.cfg_dropout = 0;
    CHECK_OK(fm_cfm_batch(&c, z, y, g, N, 1, 5, 2, t, xt, u, yo, &e), &e);
    CHECK(memcmp(y, yo, N * sizeof *y) == 0, "eta = 0 dropped labels");
    c.cfg_dropout = 1;
    CHECK_OK(fm_cfm_batch(&c, z, y, g, N, 1, 5, 2, t, xt, u, yo, &e), &e);
    for (int i = 0; i < N; i++)
        CHECK(yo[i] == C, "eta = 1 kept label of row %d", i);
    c.cfg_dropout = 0;
    CHECK_OK(fm_cfm_batch(&c, z, NULL, g, N, 1, 5, 2, t, xt, u, yo, &e), &e);
    CHECK(yo[0] == C && yo[N - 1] == C, "y = NULL is not all null");
    /* bad inputs */
    y[7] = C + 1;
    CHECK(fm_cfm_batch(&c, z, y, g, N, 1, 5, 2, t, xt, u, yo, &e) == FM_ERR_DATA && strstr(e.msg, "label 11"),
          "bad label accepted (%s)", e.msg);
    y[7] = 0;
    c.cfg_dropout = 1.5f;
    CHECK(fm_cfm_batch(&c, z, y, g, N, 1, 5, 2, t, xt, u, yo, &e) == FM_ERR_USAGE, "dropout 1.5 accepted");
    free(z), free(t), free(xt), free(u), free(y), free(yo), free(g);
    return 0;
}

/* A row's t, x_t, u and label depend only on (seed, step, gidx, z, y): a batch
 * split in two (uneven) halves gives bitwise identical rows. */
/* Reflow's batch on given couplings (fm_cfm_pairs, rows x1 then x0): on the
 * linear path x_t = t x1 + (1 - t) x0 and u = x1 - x0 (to rounding), with the
 * t and the dropped labels fm_cfm_batch draws for the same (seed, step, gidx). */
static int test_pairs(void)
{
    enum { B = 6, D = 5 };
    float pairs[B * 2 * D], z[B * D], t[B], xt[B * D], u[B * D], t2[B], xt2[B * D], u2[B * D];
    int32_t y[B], yo[B], yo2[B];
    uint64_t g[B];
    fm_fill_normal(pairs, B * 2 * D, 4, 5, 6);
    for (int i = 0; i < B; i++) {
        memcpy(z + i * D, pairs + i * 2 * D, D * sizeof(float));
        g[i] = 3 * B + (uint64_t)i;
        y[i] = i % 3;
    }
    fm_err e = { 0 };
    const fm_cfm_cfg c = { FM_PATH_LINEAR, { FM_TIME_UNIFORM, 0, 1 }, 0.5f, 3, 0 };
    CHECK_OK(fm_cfm_pairs(&c, pairs, y, g, B, D, 9, 3, t, xt, u, yo, &e), &e);
    CHECK_OK(fm_cfm_batch(&c, z, y, g, B, D, 9, 3, t2, xt2, u2, yo2, &e), &e);
    CHECK(memcmp(t, t2, sizeof t) == 0 && memcmp(yo, yo2, sizeof yo) == 0, "t or the dropout differ from fm_cfm_batch");
    for (int i = 0; i < B; i++)
        for (int j = 0; j < D; j++) {
            const float x1 = pairs[i * 2 * D + j], x0 = pairs[i * 2 * D + D + j];
            CHECK(fabsf(xt[i * D + j] - (t[i] * x1 + (1 - t[i]) * x0)) <= 1e-6f, "x_t of row %d", i);
            CHECK(fabsf(u[i * D + j] - (x1 - x0)) <= 1e-6f, "u of row %d", i);
        }
    return 0;
}

static int test_split_invariance(void)
{
    enum { B = 10, D = 7, H = 4 };
    float z[B * D], t[B], xt[B * D], u[B * D], t2[B], xt2[B * D], u2[B * D];
    int32_t y[B], yo[B], yo2[B];
    uint64_t g[B];
    fm_fill_normal(z, B * D, 1, 2, 3);
    for (int i = 0; i < B; i++) {
        g[i] = 5 * B + (uint64_t)((i * 7) % B); /* step 5 of a permuted batch */
        y[i] = i % 3;
    }
    fm_err e = { 0 };
    for (int k = 0; k < 2; k++) {
        fm_cfm_cfg c = { PATHS[k], { k ? FM_TIME_LOGIT_NORMAL : FM_TIME_UNIFORM, 0, 1 }, 0.5f, 3, 0 };
        CHECK_OK(fm_cfm_batch(&c, z, y, g, B, D, 77, 5, t, xt, u, yo, &e), &e);
        CHECK_OK(fm_cfm_batch(&c, z, y, g, H, D, 77, 5, t2, xt2, u2, yo2, &e), &e);
        CHECK_OK(fm_cfm_batch(&c, z + H * D, y + H, g + H, B - H, D, 77, 5, t2 + H, xt2 + H * D, u2 + H * D,
                              yo2 + H, &e),
                 &e);
        CHECK(memcmp(t, t2, sizeof t) == 0 && memcmp(xt, xt2, sizeof xt) == 0 && memcmp(u, u2, sizeof u) == 0 &&
                  memcmp(yo, yo2, sizeof yo) == 0,
              "%s: split batch differs", fm_path_name(c.path));
        /* the step and the seed key the draws */
        CHECK_OK(fm_cfm_batch(&c, z, y, g, B, D, 77, 6, t2, xt2, u2, yo2, &e), &e);
        CHECK(memcmp(t, t2, sizeof t) != 0 && memcmp(xt, xt2, sizeof xt) != 0, "step ignored");
        CHECK_OK(fm_cfm_batch(&c, z, y, g, B, D, 78, 5, t2, xt2, u2, yo2, &e), &e);
        CHECK(memcmp(t, t2, sizeof t) != 0 && memcmp(xt, xt2, sizeof xt) != 0, "seed ignored");
    }
    return 0;
}

/* The score from the velocity, on a Gaussian marginal N(alpha mu, V),
 * V = alpha^2 s^2 + beta^2: exact velocity dalpha mu + (alpha dalpha s^2 + beta dbeta)/V (x - alpha mu),
 * exact score -(x - alpha mu)/V. Includes t = 0 (score -x). Tol 5e-5 relative:
 * near t = 1 the float u loses ~eps_f |alpha u| / (beta gamma) ~ 1e-5 to cancellation. */
static int test_score_from_velocity(void)
{
    enum { N = 9 };
    const double mu = 1.3, s2 = 0.49;
    const double ts[] = { 0.0, 0.01, 0.3, 0.5, 0.8, 0.99 };
    float x[N], u[N], sc[N];
    double worst = 0;
    for (int p = 0; p < 2; p++) {
        for (unsigned q = 0; q < sizeof ts / sizeof ts[0]; q++) {
            fm_path_coef c = fm_path_coefs(PATHS[p], ts[q]);
            double V = c.alpha * c.alpha * s2 + c.beta * c.beta;
            for (int i = 0; i < N; i++) {
                x[i] = (float)(-2.0 + 0.5 * i);
                double B = (c.alpha * c.dalpha * s2 + c.beta * c.dbeta) / V;
                u[i] = (float)(c.dalpha * mu + B * (x[i] - c.alpha * mu));
            }
            fm_path_score(PATHS[p], ts[q], x, u, N, sc);
            for (int i = 0; i < N; i++) {
                double ex = -(x[i] - c.alpha * mu) / V;
                double err = fabs(sc[i] - ex) / (1 + fabs(ex));
                worst = fmax(worst, err);
                CHECK(err < 5e-5, "%s t=%g x=%g: score %g, expected %g", fm_path_name(PATHS[p]), ts[q], x[i], sc[i],
                      ex);
            }
        }
    }
    printf("  score from velocity: worst relative error %.2e (tol 5e-5)\n", worst);
    return 0;
}

static int test_names(void)
{
    CHECK(strcmp(fm_path_name(FM_PATH_COSINE), "cosine") == 0, "cosine");
    CHECK(strcmp(fm_path_name(FM_PATH_LINEAR), "linear") == 0, "linear");
    CHECK(strcmp(fm_time_name(FM_TIME_LOGIT_NORMAL), "logit_normal") == 0, "logit_normal");
    CHECK(strcmp(fm_time_name(FM_TIME_UNIFORM), "uniform") == 0, "uniform");
    return 0;
}

int main(int argc, char **argv)
{
    static const fm_test tests[] = {
        TEST(test_endpoints),     TEST(test_derivatives_fd),  TEST(test_target_is_time_derivative),
        TEST(test_time_moments),  TEST(test_label_dropout),   TEST(test_split_invariance),
        TEST(test_score_from_velocity), TEST(test_names), TEST(test_pairs),
    };
    return fm_test_main("flow/path", tests, sizeof tests / sizeof tests[0], argc, argv);
}
