/* test_targets.c - prediction targets (x1, eps, v) and the guidance interval,
 * known-answer tests on a Gaussian mixture (tests/harness/gmm.h) whose exact
 * velocity, E[z|x] and E[eps|x] are known in closed form:
 *   - the conversion target -> velocity maps each exact target to the exact velocity;
 *   - the minimiser of each target's loss at fixed (x_t, t), estimated by
 *     Monte Carlo, converts to the exact velocity (within 5 standard errors);
 *   - an ODE solve with each exact converted field moves noise to the mixture;
 *   - the guided velocity inside/outside sample.cfg_interval, its schedules,
 *     the skipped unconditional branch (counted calls), and that the interval
 *     [0, 1] reproduces the plain sampler bitwise. */
#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "fm/path.h"
#include "fm/rng.h"
#include "fm/sampler.h"
#include "fm/target.h"
#include "gmm.h"
#include "test.h"

enum { D = 2, C = 3 };
static const fm_path_kind PATHS[2] = { FM_PATH_LINEAR, FM_PATH_COSINE };
static const fm_target_kind TARGETS[4] = { FM_TARGET_VELOCITY, FM_TARGET_X1, FM_TARGET_EPS, FM_TARGET_V };

/* Three components on a circle of radius 2, s = 0.5: overlapping enough that
 * the null branch differs from every class. */
static fm_gmm mixture(void)
{
    fm_gmm g = { .C = C, .D = D };
    for (int k = 0; k < C; k++) {
        g.mu[k][0] = 2 * cos(2.0943951023931953 * k);
        g.mu[k][1] = 2 * sin(2.0943951023931953 * k);
    }
    g.s2[0] = g.s2[1] = 0.25;
    return g;
}

/* The exact target k at (x, t) under label y: p [D]; also the exact velocity u [D]. */
static void exact_target(const fm_gmm *g, fm_path_kind path, fm_target_kind k, double t, int y, const float *x,
                         double *p, double *u)
{
    fm_path_coef c = fm_path_coefs(path, t);
    double Ez[D], Ee[D];
    fm_gmm_means(g, &c, y, x, Ez, Ee, u);
    for (int j = 0; j < D; j++)
        p[j] = k == FM_TARGET_X1 ? Ez[j] : k == FM_TARGET_EPS ? Ee[j] : k == FM_TARGET_V ? c.alpha * Ee[j] - c.beta * Ez[j] : u[j];
}

/* (a) target -> velocity is exact on the exact targets, and per pair the
 * velocity of fm_target_of_pair's target is dalpha z + dbeta eps; the ends of t
 * are moved off the singular coefficient. */
static int test_conversion_exact(void)
{
    const fm_gmm g = mixture();
    const double ts[] = { 0.0, 0.05, 0.3, 0.5, 0.8, 0.97, 1.0 };
    double worst = 0, worst_pair = 0;
    for (int p = 0; p < 2; p++)
        for (int k = 0; k < 4; k++)
            for (size_t q = 0; q < sizeof ts / sizeof ts[0]; q++) {
                const double t = fm_target_time(TARGETS[k], ts[q]);
                CHECK(t >= 0 && t <= 1, "time %g", t);
                if (TARGETS[k] == FM_TARGET_X1)
                    CHECK(t <= 1 - FM_TARGET_T_EDGE + 1e-15, "x1 at t=%g", t);
                if (TARGETS[k] == FM_TARGET_EPS)
                    CHECK(t >= FM_TARGET_T_EDGE - 1e-15, "eps at t=%g", t);
                fm_target_coef tc = fm_target_coefs(TARGETS[k], PATHS[p], t);
                CHECK(isfinite(tc.cx) && isfinite(tc.cp) && tc.cp != 0, "%s coefficients at t=%g",
                      fm_target_name(TARGETS[k]), t);
                for (int r = 0; r < 20; r++) {
                    float x[D], pf[D], uf[D], z[D], eps[D], xt[D], tg[D], uv[D];
                    fm_fill_normal(x, D, 7, 1, (uint64_t)(r * D));
                    x[0] *= 2, x[1] *= 2;
                    double pe[D], ue[D];
                    exact_target(&g, PATHS[p], TARGETS[k], t, r % (C + 1), x, pe, ue);
                    for (int j = 0; j < D; j++)
                        pf[j] = (float)pe[j];
                    fm_target_to_velocity(TARGETS[k], PATHS[p], t, x, pf, D, uf);
                    for (int j = 0; j < D; j++)
                        worst = fmax(worst, fabs(uf[j] - ue[j]) / (1 + fabs(ue[j])));
                    /* one pair: its target's velocity is the pair's velocity */
                    fm_fill_normal(z, D, 8, 1, (uint64_t)(r * D));
                    fm_fill_normal(eps, D, 8, 2, (uint64_t)(r * D));
                    fm_path_interp(PATHS[p], t, z, eps, D, xt, uv);
                    fm_target_of_pair(TARGETS[k], PATHS[p], t, z, eps, D, tg);
                    fm_target_to_velocity(TARGETS[k], PATHS[p], t, xt, tg, D, uf);
                    for (int j = 0; j < D; j++)
                        worst_pair = fmax(worst_pair, fabs(uf[j] - uv[j]) / (1 + fabs(uv[j])));
                }
            }
    fprintf(stderr, "  worst relative error: exact targets %.2e, pairs %.2e (tol 1e-4)\n", worst, worst_pair);
    CHECK(worst < 1e-4 && worst_pair < 1e-4, "conversion error %g / %g", worst, worst_pair);
    CHECK(strcmp(fm_target_name(FM_TARGET_EPS), "eps") == 0 && strcmp(fm_target_name(FM_TARGET_V), "v") == 0 &&
              strcmp(fm_target_name(FM_TARGET_X1), "x1") == 0 && strcmp(fm_target_name(FM_TARGET_VELOCITY), "velocity") == 0,
          "names");
    return 0;
}

/* (b) The loss of target k at a fixed (x_t, t) is E[|f - T|^2 | x_t]; with
 * pairs (z_i ~ class, eps_i = (x_t - alpha z_i)/beta) weighted by the density
 * of x_t given z_i, its Monte Carlo estimate sum_i w_i |f - T_i|^2 is minimised
 * by the weighted mean of the T_i. Converted, that minimiser must be the exact
 * velocity within 5 standard errors (times |cp|), and the standard error small. */
static int test_loss_minimiser(void)
{
    enum { N = 200000 };
    const fm_gmm g = mixture();
    const double ts[] = { 0.15, 0.5, 0.85 };
    static float zs[N * D];
    double worst_sig = 0;
    for (int p = 0; p < 2; p++)
        for (size_t q = 0; q < sizeof ts / sizeof ts[0]; q++)
            for (int y = 0; y <= C; y += C) { /* class 0 and the null label */
                const double t = ts[q];
                const fm_path_coef c = fm_path_coefs(PATHS[p], t);
                fm_fill_normal(zs, N * D, 11, (uint64_t)(100 * p + q), 0);
                for (int i = 0; i < N; i++) { /* z_i from class y (the null label: the mixture) */
                    const int k = y < C ? y : i % C;
                    for (int j = 0; j < D; j++)
                        zs[i * D + j] = (float)(g.mu[k][j] + sqrt(g.s2[j]) * zs[i * D + j]);
                }
                /* x_t: a point the class reaches at t */
                float x[D] = { (float)(c.alpha * g.mu[0][0] + 0.3), (float)(c.alpha * g.mu[0][1] - 0.2) };
                for (int kk = 0; kk < 4; kk++) {
                    const fm_target_kind k = TARGETS[kk];
                    double sw = 0, m[D] = { 0 }, ss[D] = { 0 };
                    for (int pass = 0; pass < 2; pass++)
                        for (int i = 0; i < N; i++) {
                            double w = 0, tg[D];
                            for (int j = 0; j < D; j++) {
                                double d = x[j] - c.alpha * zs[i * D + j];
                                w -= d * d / (2 * c.beta * c.beta);
                            }
                            w = exp(w);
                            for (int j = 0; j < D; j++) {
                                const double z = zs[i * D + j], e = (x[j] - c.alpha * z) / c.beta;
                                tg[j] = k == FM_TARGET_X1 ? z : k == FM_TARGET_EPS ? e : k == FM_TARGET_V ? c.alpha * e - c.beta * z
                                                                                           : c.dalpha * z + c.dbeta * e;
                            }
                            if (pass == 0) {
                                sw += w;
                                for (int j = 0; j < D; j++)
                                    m[j] += w * tg[j];
                            } else {
                                for (int j = 0; j < D; j++)
                                    ss[j] += w * w * (tg[j] - m[j]) * (tg[j] - m[j]);
                            }
                            if (pass == 0 && i == N - 1) /* the weighted mean, for the second pass */
                                for (int jj = 0; jj < D; jj++)
                                    m[jj] /= sw;
                        }
                    float pf[D], uf[D];
                    for (int j = 0; j < D; j++)
                        pf[j] = (float)m[j];
                    fm_target_to_velocity(k, PATHS[p], t, x, pf, D, uf);
                    double pe[D], ue[D];
                    exact_target(&g, PATHS[p], k, t, y, x, pe, ue);
                    const double cp = fabs(fm_target_coefs(k, PATHS[p], t).cp);
                    for (int j = 0; j < D; j++) {
                        const double se = cp * sqrt(ss[j]) / sw, err = fabs(uf[j] - ue[j]);
                        CHECK(se < 0.05, "%s %s t=%g: standard error %g too large to test", fm_path_name(PATHS[p]),
                              fm_target_name(k), t, se);
                        CHECK(err <= 5 * se + 1e-4, "%s %s t=%g y=%d dim %d: minimiser gives u %g, exact %g (se %g)",
                              fm_path_name(PATHS[p]), fm_target_name(k), t, y, j, uf[j], ue[j], se);
                        worst_sig = fmax(worst_sig, err / (se + 1e-12));
                    }
                }
            }
    fprintf(stderr, "  worst |u_mc - u_exact| = %.2f standard errors (tol 5)\n", worst_sig);
    return 0;
}

/* A model that returns the exact target of cfg.target (class labels; the null
 * label: the mixture), counting calls by their row count. */
typedef struct exact_model {
    fm_gmm g;
    fm_path_kind path;
    fm_target_kind target;
    long calls_full, calls_half; /* n = 2B, n = B */
    int B;
    long bad;
} exact_model;

static int exact_fn(void *ctx, const float *x, const float *t, const int32_t *y, int n, float *out, fm_err *e)
{
    (void)e;
    exact_model *m = ctx;
    if (n == 2 * m->B)
        m->calls_full++;
    else if (n == m->B)
        m->calls_half++;
    else
        m->bad++;
    for (int r = 0; r < n; r++) {
        double p[D], u[D];
        exact_target(&m->g, m->path, m->target, t[r], y[r], x + r * D, p, u);
        for (int j = 0; j < D; j++)
            out[r * D + j] = (float)p[j];
    }
    return FM_OK;
}

/* (c) Heun with the exact field of each target, converted, draws the mixture's
 * classes: per class (1000 samples) mean within 5 standard errors (0.16 s) and
 * variance within 5 standard errors (0.22 relative), and every target's samples
 * within 0.02 of the velocity target's from the same noise (the clamped ends
 * of x1 and eps are the only difference). */
static int test_ode_moments(void)
{
    enum { B = 3000 };
    static float x[B * D], xv[B * D];
    static int32_t y[B];
    for (int i = 0; i < B; i++)
        y[i] = i % C;
    double worst_m = 0, worst_v = 0, worst_d = 0;
    for (int p = 0; p < 2; p++)
        for (int kk = 0; kk < 4; kk++) {
            exact_model m = { .g = mixture(), .path = PATHS[p], .target = TARGETS[kk], .B = B };
            fm_sampler_cfg cfg = { .kind = FM_SAMPLER_HEUN, .path = PATHS[p], .steps = 25, .null_label = C,
                                   .target = TARGETS[kk] };
            fm_sampler s;
            fm_err e = { 0 };
            CHECK_OK(fm_sampler_init(&s, &cfg, B, D, &e), &e);
            fm_sample_noise(x, B, D, 5, 0);
            int rc = fm_sample(&s, exact_fn, &m, y, 1.0f, 5, 0, x, &e);
            fm_sampler_free(&s);
            CHECK_OK(rc, &e);
            CHECK(m.bad == 0 && m.calls_half == 0, "call shapes");
            if (TARGETS[kk] == FM_TARGET_VELOCITY)
                memcpy(xv, x, sizeof xv);
            for (int i = 0; i < B * D; i++)
                worst_d = fmax(worst_d, fabs(x[i] - xv[i]));
            CHECK(worst_d < 0.02, "%s %s: samples %g from the velocity target's", fm_path_name(PATHS[p]),
                  fm_target_name(TARGETS[kk]), worst_d);
            for (int c = 0; c < C; c++)
                for (int j = 0; j < D; j++) {
                    double s1 = 0, s2 = 0;
                    int k = 0;
                    for (int i = c; i < B; i += C, k++)
                        s1 += x[i * D + j];
                    s1 /= k;
                    for (int i = c; i < B; i += C)
                        s2 += (x[i * D + j] - s1) * (x[i * D + j] - s1);
                    s2 /= k - 1;
                    const double dm = fabs(s1 - m.g.mu[c][j]) / 0.5, dv = fabs(s2 / m.g.s2[j] - 1);
                    worst_m = fmax(worst_m, dm), worst_v = fmax(worst_v, dv);
                    CHECK(dm < 0.16 && dv < 0.22, "%s %s class %d dim %d: mean %g (mu %g), var %g (s2 %g)",
                          fm_path_name(PATHS[p]), fm_target_name(TARGETS[kk]), c, j, s1, m.g.mu[c][j], s2, m.g.s2[j]);
                }
        }
    fprintf(stderr, "  worst |mean - mu|/s %.3f (tol 0.16), |var/s^2 - 1| %.3f (tol 0.22), |x - x_velocity| %.4f (tol 0.02)\n",
            worst_m, worst_v, worst_d);
    return 0;
}

/* The guided velocity at one (x, t): inside the interval the exact mix of
 * conditional and unconditional velocities, outside the conditional one,
 * whatever the target; the schedules' weights. */
static int test_interval_known_answer(void)
{
    enum { B = 4 };
    float x[B * D], out[B * D];
    fm_fill_normal(x, B * D, 3, 0, 0);
    const float w = 3.0f;
    for (int p = 0; p < 2; p++)
        for (int kk = 0; kk < 4; kk++)
            for (int sch = 0; sch < 3; sch++) {
                exact_model m = { .g = mixture(), .path = PATHS[p], .target = TARGETS[kk], .B = B };
                fm_sampler_cfg cfg = { .kind = FM_SAMPLER_EULER, .path = PATHS[p], .steps = 10, .null_label = C,
                                       .target = TARGETS[kk], .cfg_interval = 1, .cfg_lo = 0.2, .cfg_hi = 0.6,
                                       .cfg_schedule = sch, .half_calls = 1 };
                fm_sampler s;
                fm_err e = { 0 };
                CHECK_OK(fm_sampler_init(&s, &cfg, B, D, &e), &e);
                for (int i = 0; i < B; i++)
                    s.y2[i] = i % C, s.y2[B + i] = C;
                const double ts[] = { 0.1, 0.2, 0.4, 0.6, 0.9 };
                for (size_t q = 0; q < sizeof ts / sizeof ts[0]; q++) {
                    const double t = ts[q], r = (t - 0.2) / 0.4;
                    const int inside = t >= 0.2 && t <= 0.6;
                    const double ramp = sch == 0 ? 1 : sch == 1 ? r : 0.5 * (1 - cos(3.141592653589793 * r));
                    const double wt = inside ? 1 + (w - 1) * ramp : 1;
                    CHECK(fabs(fm_guidance_weight(&cfg, w, t) - wt) < 1e-6, "weight at t=%g: %g, want %g", t,
                          fm_guidance_weight(&cfg, w, t), wt);
                    long full0 = m.calls_full, half0 = m.calls_half;
                    CHECK_OK(fm_guided_velocity(&s, exact_fn, &m, x, t, w, out, &e), &e);
                    const int want_half = (float)wt == 1.0f;
                    CHECK(m.calls_half - half0 == want_half && m.calls_full - full0 == !want_half,
                          "t=%g: %ld half, %ld full calls", t, m.calls_half - half0, m.calls_full - full0);
                    const double tm = fm_target_time(TARGETS[kk], t);
                    for (int i = 0; i < B; i++) {
                        double pc[D], uc[D], pn[D], un[D];
                        exact_target(&m.g, PATHS[p], TARGETS[kk], tm, i % C, x + i * D, pc, uc);
                        exact_target(&m.g, PATHS[p], TARGETS[kk], tm, C, x + i * D, pn, un);
                        for (int j = 0; j < D; j++) {
                            const double want = (1 - wt) * un[j] + wt * uc[j];
                            CHECK(fabs(out[i * D + j] - want) < 1e-4 * (1 + fabs(want)),
                                  "%s %s schedule %d t=%g row %d: guided %g, exact %g", fm_path_name(PATHS[p]),
                                  fm_target_name(TARGETS[kk]), sch, t, i, out[i * D + j], want);
                        }
                    }
                }
                fm_sampler_free(&s);
                CHECK(m.bad == 0, "bad call shapes");
            }
    return 0;
}

/* x [B, D] <- fm_sample of the exact model m with cfg from the noise of seed 9. */
static int draw(exact_model *m, const fm_sampler_cfg *cfg, int B, const int32_t *y, float w, float *x)
{
    fm_sampler s;
    fm_err e = { 0 };
    CHECK_OK(fm_sampler_init(&s, cfg, B, D, &e), &e);
    fm_sample_noise(x, B, D, 9, 0);
    int rc = fm_sample(&s, exact_fn, m, y, w, 9, 0, x, &e);
    fm_sampler_free(&s);
    CHECK_OK(rc, &e);
    return 0;
}

/* The unconditional branch runs only inside the interval; w = 1 and w = 0
 * skip it everywhere; the interval [0, 1] (constant) gives today's samples bitwise. */
static int test_interval_calls_and_bitwise(void)
{
    enum { B = 64, STEPS = 10 };
    static float x0[B * D], x1[B * D];
    int32_t y[B];
    for (int i = 0; i < B; i++)
        y[i] = i % C;
    for (int kind = 0; kind < 3; kind++) {
        const fm_sampler_cfg base = { .kind = (fm_sampler_kind)kind, .path = FM_PATH_LINEAR, .steps = STEPS,
                                      .sde_sigma = 0.5f, .null_label = C };
        const int nfe = fm_sampler_nfe(&base);
        const float ws[] = { 3.0f, 1.0f, 0.0f };
        for (int q = 0; q < 3; q++) {
            exact_model m0 = { .g = mixture(), .path = FM_PATH_LINEAR, .B = B }, m1 = m0;
            fm_sampler_cfg wide = base;
            wide.cfg_interval = 1, wide.cfg_lo = 0.0, wide.cfg_hi = 1.0, wide.half_calls = 1;
            if (draw(&m0, &base, B, y, ws[q], x0) || draw(&m1, &wide, B, y, ws[q], x1))
                return 1;
            CHECK(memcmp(x0, x1, sizeof x0) == 0, "%s w=%g: interval [0, 1] changed the samples",
                  fm_sampler_name((fm_sampler_kind)kind), ws[q]);
            CHECK(m0.calls_full == nfe && m0.calls_half == 0, "default: %ld full calls of %d", m0.calls_full, nfe);
            const int skip = ws[q] == 1.0f || ws[q] == 0.0f;
            CHECK(m1.calls_full == (skip ? 0 : nfe) && m1.calls_half == (skip ? nfe : 0),
                  "%s w=%g: %ld full, %ld half calls", fm_sampler_name((fm_sampler_kind)kind), ws[q], m1.calls_full,
                  m1.calls_half);
        }
        /* interval [0.3, 0.6] on the grid t_k = k/10: full calls at t = 0.3 .. 0.6 only */
        exact_model m = { .g = mixture(), .path = FM_PATH_LINEAR, .B = B };
        fm_sampler_cfg cfg = base;
        cfg.cfg_interval = 1, cfg.cfg_lo = 0.3, cfg.cfg_hi = 0.6, cfg.half_calls = 1;
        if (draw(&m, &cfg, B, y, 3.0f, x1))
            return 1;
        int inside = 0; /* the evaluation times of this sampler inside [0.3, 0.6] */
        for (int k = 0; k < STEPS; k++) {
            inside += k >= 3 && k <= 6;
            if (kind == FM_SAMPLER_HEUN)
                inside += k + 1 >= 3 && k + 1 <= 6;
        }
        CHECK(m.calls_full == inside && m.calls_half == nfe - inside && m.bad == 0,
              "%s [0.3, 0.6]: %ld full (want %d), %ld half (want %d)", fm_sampler_name((fm_sampler_kind)kind),
              m.calls_full, inside, m.calls_half, nfe - inside);
        fprintf(stderr, "  %-5s interval [0.3, 0.6], w=3: %ld of %d model calls on 2B rows, %ld on B\n",
                fm_sampler_name((fm_sampler_kind)kind), m.calls_full, nfe, m.calls_half);
    }
    /* bad settings are refused */
    fm_sampler s;
    fm_err e = { 0 };
    fm_sampler_cfg bad = { .kind = FM_SAMPLER_EULER, .steps = 4, .null_label = C, .cfg_interval = 1, .cfg_lo = 0.7,
                           .cfg_hi = 0.2 };
    CHECK(fm_sampler_init(&s, &bad, 2, D, &e) == FM_ERR_USAGE && strstr(e.msg, "interval"), "reversed interval accepted");
    bad = (fm_sampler_cfg){ .kind = FM_SAMPLER_EULER, .steps = 4, .null_label = C, .target = 9 };
    CHECK(fm_sampler_init(&s, &bad, 2, D, &e) == FM_ERR_USAGE && strstr(e.msg, "target"), "unknown target accepted");
    return 0;
}

int main(int argc, char **argv)
{
    static const fm_test tests[] = {
        TEST(test_conversion_exact), TEST(test_loss_minimiser), TEST(test_ode_moments),
        TEST(test_interval_known_answer), TEST(test_interval_calls_and_bitwise),
    };
    return fm_test_main("flow/targets", tests, sizeof tests / sizeof tests[0], argc, argv);
}
