/* test_pool_xent.c - global average pooling and softmax cross-entropy: naive
 * references, extreme logits, label checks and gradient checks. */
#include <float.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "fm/pool.h"
#include "fm/rng.h"
#include "fm/xent.h"
#include "fixture.h"
#include "gradcheck.h"
#include "test.h"

/* ---- global average pooling ---- */

static int test_pool_reference(void)
{
    /* the second shape is above the parallel threshold */
    const int shapes[2][4] = { { 3, 5, 7, 6 }, { 4, 16, 16, 130 } };
    for (int s = 0; s < 2; s++) {
        const int n = shapes[s][0], c = shapes[s][3];
        const long hw = (long)shapes[s][1] * shapes[s][2], nx = n * hw * c;
        float *x = fm_fx_randn(nx, 31, 1, 1.0f), *dy = fm_fx_randn((long)n * c, 31, 2, 1.0f);
        float *y = malloc((size_t)n * c * sizeof(float)), *ry = malloc((size_t)n * c * sizeof(float));
        float *dx = malloc((size_t)nx * sizeof(float)), *rdx = malloc((size_t)nx * sizeof(float));
        for (int i = 0; i < n; i++)
            for (int k = 0; k < c; k++) {
                double acc = 0;
                for (long p = 0; p < hw; p++)
                    acc += x[(i * hw + p) * c + k];
                ry[i * c + k] = (float)(acc / hw);
                for (long p = 0; p < hw; p++)
                    rdx[(i * hw + p) * c + k] = (float)(dy[i * c + k] / (double)hw);
            }
        fm_global_avgpool_forward(x, y, n, hw, c);
        fm_global_avgpool_backward(dy, dx, n, hw, c);
        double ey = fm_rel_err(y, ry, (long)n * c, 1e-6), edx = fm_rel_err(dx, rdx, nx, 1e-6);
        fprintf(stderr, "  pool [%d, %ld, %d] vs naive: y %.2e, dx %.2e\n", n, hw, c, ey, edx);
        CHECK(ey < 1e-6 && edx < 1e-6, "pool mismatch: y %.2e dx %.2e", ey, edx);
        free(x), free(dy), free(y), free(ry), free(dx), free(rdx);
    }
    return 0;
}

typedef struct pool_ctx {
    int n, c;
    long hw;
    float *x, *dx, *y, *dy;
} pool_ctx;

static int pool_fwd(void *p, fm_err *e)
{
    (void)e;
    pool_ctx *c = p;
    fm_global_avgpool_forward(c->x, c->y, c->n, c->hw, c->c);
    return FM_OK;
}

static int pool_bwd(void *p, fm_err *e)
{
    (void)e;
    pool_ctx *c = p;
    fm_global_avgpool_backward(c->dy, c->dx, c->n, c->hw, c->c);
    return FM_OK;
}

static int test_pool_gradcheck(void)
{
    pool_ctx c = { .n = 2, .c = 5, .hw = 12 };
    const long nx = c.n * c.hw * c.c;
    c.x = fm_fx_randn(nx, 31, 3, 1.0f);
    c.dx = calloc((size_t)nx, sizeof(float));
    c.y = calloc((size_t)c.n * c.c, sizeof(float));
    c.dy = calloc((size_t)c.n * c.c, sizeof(float));
    fm_gc_op op = { .name = "global_avgpool", .ctx = &c, .forward = pool_fwd, .backward = pool_bwd, .out = c.y,
                    .dout = c.dy, .out_n = (long)c.n * c.c, .vars = { { "x", c.x, c.dx, nx } }, .nvars = 1 };
    fm_err e = { 0 };
    /* linear op: eps = 1e-2, tol = 1e-3 */
    int rc = fm_gradcheck(&op, 1e-2, 1e-3, 200, &e);
    free(c.x), free(c.dx), free(c.y), free(c.dy);
    CHECK_OK(rc, &e);
    return 0;
}

/* ---- cross-entropy ---- */

/* The textbook formula in double without the max shift (fine for moderate logits). */
static double naive_xent(const float *x, const int32_t *lab, int n, int k, float *dx, int *correct)
{
    double loss = 0;
    *correct = 0;
    for (int i = 0; i < n; i++) {
        double s = 0;
        int arg = 0;
        for (int j = 0; j < k; j++) {
            s += exp((double)x[i * k + j]);
            if (x[i * k + j] > x[i * k + arg])
                arg = j;
        }
        loss += log(s) - x[i * k + lab[i]];
        *correct += arg == lab[i];
        for (int j = 0; j < k; j++)
            dx[i * k + j] = (float)((exp((double)x[i * k + j]) / s - (j == lab[i])) / n);
    }
    return loss / n;
}

static int test_xent_reference(void)
{
    const int n = 37, k = 10;
    float *x = fm_fx_randn((long)n * k, 31, 4, 3.0f);
    float *dx = malloc(n * k * sizeof(float)), *rdx = malloc(n * k * sizeof(float));
    int32_t lab[37];
    for (int i = 0; i < n; i++)
        lab[i] = (int32_t)fm_rand_below(k, 31, 5, (uint64_t)i);
    lab[0] = 0; /* one sure hit: make row 0's label its argmax */
    x[0] = 50.0f;
    fm_err e = { 0 };
    double loss;
    int correct, rcorrect;
    CHECK_OK(fm_xent_forward(x, lab, n, k, &loss, &correct, &e), &e);
    CHECK_OK(fm_xent_backward(x, lab, n, k, 1.0f, dx, &e), &e);
    double rloss = naive_xent(x, lab, n, k, rdx, &rcorrect);
    double el = fabs(loss - rloss) / fabs(rloss), edx = fm_rel_err(dx, rdx, (long)n * k, 1e-9);
    fprintf(stderr, "  xent [%d, %d] vs naive: loss %.2e, dlogits %.2e, correct %d (naive %d)\n", n, k, el, edx,
            correct, rcorrect);
    CHECK(el < 1e-12 && edx < 1e-6, "xent mismatch: loss %.2e dlogits %.2e", el, edx);
    CHECK(correct == rcorrect && correct >= 1, "correct %d vs %d", correct, rcorrect);
    /* scale and in-place backward */
    CHECK_OK(fm_xent_backward(x, lab, n, k, -2.5f, x, &e), &e);
    for (long i = 0; i < (long)n * k; i++)
        rdx[i] *= -2.5f;
    CHECK(fm_rel_err(x, rdx, (long)n * k, 1e-9) < 1e-6, "scaled in-place backward");
    free(x), free(dx), free(rdx);
    return 0;
}

static int test_xent_extreme(void)
{
    /* rows: huge spread, FLT_MAX spread, ties, all equal, tiny differences */
    enum { N = 6, K = 4 };
    const float big = FLT_MAX;
    float x[N * K] = { 1e30f, 0.0f, -1e30f, 5.0f,  /* label 0: loss 0 */
                       1e30f, 0.0f, -1e30f, 5.0f,  /* label 2: loss 2e30 */
                       big, -big, 0.0f, big,       /* label 1: loss 2 FLT_MAX (finite in double) */
                       7.0f, 7.0f, 7.0f, 7.0f,     /* label 3: log 4 */
                       -1e38f, -1e38f, -1e38f, 3e38f,
                       88.0f, -88.0f, 88.7f, -104.0f };
    const int32_t lab[N] = { 0, 2, 1, 3, 3, 2 };
    float dx[N * K];
    fm_err e = { 0 };
    double loss;
    int correct;
    CHECK_OK(fm_xent_forward(x, lab, N, K, &loss, &correct, &e), &e);
    CHECK_OK(fm_xent_backward(x, lab, N, K, 1.0f, dx, &e), &e);
    CHECK(isfinite(loss), "loss %g", loss);
    for (int i = 0; i < N * K; i++)
        CHECK(isfinite(dx[i]), "dlogits[%d] = %g", i, dx[i]);
    /* expected, from the stored float values in double */
    const double r5 = log(exp((double)x[20] - x[22]) + exp((double)x[21] - x[22]) + 1.0 + exp((double)x[23] - x[22]));
    const double expect = (0.0 + 2.0 * (double)x[4] + (2.0 * (double)big + log(2.0)) + log(4.0) + 0.0 + r5) / N;
    fprintf(stderr, "  extreme logits: loss %.6g (expected %.6g), %d correct\n", loss, expect, correct);
    CHECK(fabs(loss - expect) <= 1e-6 * fabs(expect), "loss %.9g vs %.9g", loss, expect);
    /* row 0: softmax is one-hot on the label -> zero gradient; row 1: +1/N at 0, -1/N at the label */
    CHECK(fabsf(dx[0]) < 1e-12f && fabsf(dx[1]) < 1e-12f, "row 0 gradient %g %g", dx[0], dx[1]);
    CHECK(fabsf(dx[K + 0] - 1.0f / N) < 1e-7f && fabsf(dx[K + 2] + 1.0f / N) < 1e-7f, "row 1 gradient");
    /* row 2: two tied maxima share the mass; row 3: uniform */
    CHECK(fabsf(dx[2 * K] - 0.5f / N) < 1e-7f && fabsf(dx[2 * K + 1] + 1.0f / N) < 1e-7f, "row 2 gradient");
    CHECK(fabsf(dx[3 * K + 3] - (0.25f - 1.0f) / N) < 1e-7f, "row 3 gradient");
    for (int i = 0; i < N; i++) {
        double s = 0;
        for (int j = 0; j < K; j++)
            s += dx[i * K + j];
        CHECK(fabs(s) < 1e-7, "row %d gradient sums to %g", i, s);
    }
    /* hits: rows 0 (argmax 0), 4 (argmax 3) and 5 (argmax 2); row 2's first max is 0, row 3's is 0 */
    CHECK(correct == 3, "correct = %d, expected 3", correct);
    return 0;
}

static int test_xent_bad_labels(void)
{
    float x[6] = { 0 }, dx[6];
    int32_t lab[2] = { 1, 3 };
    fm_err e = { 0 };
    double loss;
    CHECK(fm_xent_forward(x, lab, 2, 3, &loss, NULL, &e) == FM_ERR_DATA, "label 3 of 3 classes accepted");
    CHECK(strstr(e.msg, "row 1") != NULL, "message: %s", e.msg);
    lab[1] = -1;
    CHECK(fm_xent_backward(x, lab, 2, 3, 1.0f, dx, &e) == FM_ERR_DATA, "label -1 accepted");
    return 0;
}

typedef struct xent_ctx {
    int n, k;
    float *x, *dx;
    int32_t *lab;
    float out[1], dout[1];
} xent_ctx;

static int xent_fwd(void *p, fm_err *e)
{
    xent_ctx *c = p;
    double l;
    FM_TRY(fm_xent_forward(c->x, c->lab, c->n, c->k, &l, NULL, e));
    c->out[0] = (float)l;
    return FM_OK;
}

static int xent_bwd(void *p, fm_err *e)
{
    xent_ctx *c = p;
    return fm_xent_backward(c->x, c->lab, c->n, c->k, c->dout[0], c->dx, e);
}

static int test_xent_gradcheck(void)
{
    xent_ctx c = { .n = 5, .k = 7 };
    const long nx = (long)c.n * c.k;
    int32_t lab[5] = { 0, 6, 3, 3, 1 };
    c.lab = lab;
    c.x = fm_fx_randn(nx, 31, 6, 2.0f);
    c.dx = calloc((size_t)nx, sizeof(float));
    fm_gc_op op = { .name = "xent", .ctx = &c, .forward = xent_fwd, .backward = xent_bwd, .out = c.out,
                    .dout = c.dout, .out_n = 1, .vars = { { "logits", c.x, c.dx, nx } }, .nvars = 1 };
    fm_err e = { 0 };
    /* the loss is stored as fp32 (|loss| ~ 2, ulp ~ 2.4e-7): eps = 1e-2 keeps the
     * rounding below 1e-5 of the differences; tol = 1e-2 */
    int rc = fm_gradcheck(&op, 1e-2, 1e-2, 100, &e);
    free(c.x), free(c.dx);
    CHECK_OK(rc, &e);
    return 0;
}

int main(int argc, char **argv)
{
    const fm_test tests[] = {
        TEST(test_pool_reference), TEST(test_pool_gradcheck), TEST(test_xent_reference),
        TEST(test_xent_extreme),   TEST(test_xent_bad_labels), TEST(test_xent_gradcheck),
    };
    return fm_test_main("nn/pool_xent", tests, (int)(sizeof tests / sizeof *tests), argc, argv);
}
