/* test_frechet.c - Fréchet distance on cases with closed-form answers. */
#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "fm/frechet.h"
#include "fm/rng.h"
#include "test.h"

enum { D = 6 };

/* Diagonal covariances: FD = |mu1 - mu2|^2 + sum (sqrt(a_k) - sqrt(b_k))^2. */
static int test_diagonal_closed_form(void)
{
    fm_err e = { 0 };
    double mu1[D], mu2[D], c1[D * D] = { 0 }, c2[D * D] = { 0 }, want = 0;
    for (int k = 0; k < D; k++) {
        mu1[k] = 0.3 * k;
        mu2[k] = -0.1 * k * k;
        c1[k * D + k] = 1.0 + k;
        c2[k * D + k] = 0.5 + 0.25 * k;
        want += (mu1[k] - mu2[k]) * (mu1[k] - mu2[k]) + pow(sqrt(c1[k * D + k]) - sqrt(c2[k * D + k]), 2);
    }
    double fd;
    CHECK_OK(fm_frechet(mu1, c1, mu2, c2, D, &fd, &e), &e);
    CHECK(fabs(fd - want) < 1e-9 * fmax(1, want), "fd %.12g want %.12g", fd, want);
    CHECK_OK(fm_frechet(mu1, c1, mu1, c1, D, &fd, &e), &e);
    CHECK(fabs(fd) < 1e-9, "self-distance %g", fd);
    return 0;
}

/* A rotation Q applied to both Gaussians leaves FD unchanged (full covariances). */
static int test_rotation_invariance(void)
{
    fm_err e = { 0 };
    double a[D * D], b[D * D], c1[D * D], c2[D * D], mu1[D], mu2[D];
    float r[2 * D * D];
    fm_fill_normal(r, 2 * D * D, 3, 0, 0);
    for (int i = 0; i < D; i++)
        for (int j = 0; j < D; j++) {
            a[i * D + j] = r[i * D + j];
            b[i * D + j] = r[D * D + i * D + j];
        }
    for (int i = 0; i < D; i++) { /* c = a a^T + 0.1 I: positive definite */
        mu1[i] = r[i];
        mu2[i] = r[D + i];
        for (int j = 0; j < D; j++) {
            double s1 = 0, s2 = 0;
            for (int k = 0; k < D; k++) {
                s1 += a[i * D + k] * a[j * D + k];
                s2 += b[i * D + k] * b[j * D + k];
            }
            c1[i * D + j] = s1 + (i == j) * 0.1;
            c2[i * D + j] = s2 + (i == j) * 0.1;
        }
    }
    double fd0;
    CHECK_OK(fm_frechet(mu1, c1, mu2, c2, D, &fd0, &e), &e);
    /* rotation in the (0, 1) plane */
    double th = 0.7, q[D * D] = { 0 };
    for (int i = 0; i < D; i++)
        q[i * D + i] = 1;
    q[0] = cos(th), q[1] = -sin(th), q[D] = sin(th), q[D + 1] = cos(th);
    double rc1[D * D], rc2[D * D], rm1[D], rm2[D];
    for (int i = 0; i < D; i++) {
        rm1[i] = rm2[i] = 0;
        for (int k = 0; k < D; k++) {
            rm1[i] += q[i * D + k] * mu1[k];
            rm2[i] += q[i * D + k] * mu2[k];
        }
        for (int j = 0; j < D; j++) {
            double s1 = 0, s2 = 0;
            for (int k = 0; k < D; k++)
                for (int l = 0; l < D; l++) {
                    s1 += q[i * D + k] * c1[k * D + l] * q[j * D + l];
                    s2 += q[i * D + k] * c2[k * D + l] * q[j * D + l];
                }
            rc1[i * D + j] = s1;
            rc2[i * D + j] = s2;
        }
    }
    double fd1, fd_swapped;
    CHECK_OK(fm_frechet(rm1, rc1, rm2, rc2, D, &fd1, &e), &e);
    CHECK_OK(fm_frechet(mu2, c2, mu1, c1, D, &fd_swapped, &e), &e);
    CHECK(fd0 > 0.1 && fabs(fd1 - fd0) < 1e-8 * fd0, "rotated %.12g vs %.12g", fd1, fd0);
    CHECK(fabs(fd_swapped - fd0) < 1e-8 * fd0, "not symmetric: %.12g vs %.12g", fd_swapped, fd0);
    return 0;
}

static int test_feature_stats(void)
{
    fm_err e = { 0 };
    enum { N = 20000, K = 3 };
    float *x = malloc(sizeof(float) * N * K);
    fm_fill_normal(x, N * K, 9, 1, 0);
    for (int i = 0; i < N; i++) { /* x1 = 2 z1 + 1; x2 = z1 + z2 */
        x[i * K + 1] = x[i * K + 0] + x[i * K + 2];
        x[i * K + 0] = 2 * x[i * K + 0] + 1;
    }
    double mu[K], c[K * K];
    CHECK_OK(fm_feature_stats(x, N, K, mu, c, &e), &e);
    CHECK(fabs(mu[0] - 1) < 0.05 && fabs(c[0] - 4) < 0.15 && fabs(c[1] - 2) < 0.1 && fabs(c[K + 1] - 2) < 0.1 &&
              fabs(c[1] - c[K]) == 0,
          "mu0 %g var0 %g cov01 %g var1 %g", mu[0], c[0], c[1], c[K + 1]);
    CHECK(fm_feature_stats(x, 1, K, mu, c, &e) == FM_ERR_USAGE, "n = 1 accepted");
    free(x);
    return 0;
}

int main(int argc, char **argv)
{
    static const fm_test tests[] = {
        TEST(test_diagonal_closed_form),
        TEST(test_rotation_invariance),
        TEST(test_feature_stats),
    };
    return fm_test_main("frechet", tests, (int)(sizeof tests / sizeof tests[0]), argc, argv);
}
