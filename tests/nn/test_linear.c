/* test_linear.c - the linear layer against naive loops, a finite-difference
 * gradient check, PyTorch's default init, and bad sizes. */
#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "fm/arena.h"
#include "fm/dnn.h"
#include "fm/linear.h"
#include "fm/params.h"
#include "fm/rng.h"
#include "gradcheck.h"
#include "test.h"

/* Naive reference in double: y = x W^T + b for x [m, in], W [out, in]. */
static void ref_forward(const float *x, const float *w, const float *b, int64_t m, int64_t in, int64_t out,
                        float *y)
{
    for (int64_t i = 0; i < m; i++)
        for (int64_t j = 0; j < out; j++) {
            double s = b ? b[j] : 0.0;
            for (int64_t k = 0; k < in; k++)
                s += (double)x[i * in + k] * w[j * in + k];
            y[i * out + j] = (float)s;
        }
}

/* dx = dy W, dW = dy^T x, db = column sums of dy. */
static void ref_backward(const float *x, const float *w, const float *dy, int64_t m, int64_t in, int64_t out,
                         float *dx, float *dw, float *db)
{
    for (int64_t i = 0; i < m; i++)
        for (int64_t k = 0; k < in; k++) {
            double s = 0;
            for (int64_t j = 0; j < out; j++)
                s += (double)dy[i * out + j] * w[j * in + k];
            dx[i * in + k] = (float)s;
        }
    for (int64_t j = 0; j < out; j++) {
        double sb = 0;
        for (int64_t i = 0; i < m; i++)
            sb += dy[i * out + j];
        db[j] = (float)sb;
        for (int64_t k = 0; k < in; k++) {
            double s = 0;
            for (int64_t i = 0; i < m; i++)
                s += (double)dy[i * out + j] * x[i * in + k];
            dw[j * in + k] = (float)s;
        }
    }
}

/* One layer with its own engine, parameters and arena, plus activations. */
typedef struct fixture {
    fm_dnn d;
    fm_params p;
    fm_arena a;
    fm_linear l;
    int64_t m, in, out;
    int bias;
    float *x, *y, *dy, *dx;
} fixture;

static void fx_free(fixture *f)
{
    fm_linear_free(&f->l);
    fm_arena_free(&f->a);
    fm_params_free(&f->p);
    fm_dnn_free(&f->d);
    free(f->x);
    free(f->y);
    free(f->dy);
    free(f->dx);
}

static int fx_init(fixture *f, int64_t m, int64_t in, int64_t out, int bias, fm_err *e)
{
    memset(f, 0, sizeof *f);
    f->m = m, f->in = in, f->out = out, f->bias = bias;
    FM_TRY(fm_dnn_init(&f->d, e));
    FM_TRY(fm_params_init(&f->p, 4, (size_t)(out * in + out + 64), 11, e));
    FM_TRY(fm_arena_init(&f->a, 64 << 20, e));
    FM_TRY(fm_linear_init(&f->l, &f->d, &f->p, &f->a, "fc", in, out, bias, m, e));
    f->x = malloc((size_t)(m * in) * sizeof(float));
    f->dx = malloc((size_t)(m * in) * sizeof(float));
    f->y = malloc((size_t)(m * out) * sizeof(float));
    f->dy = malloc((size_t)(m * out) * sizeof(float));
    if (!f->x || !f->dx || !f->y || !f->dy)
        return fm_fail(e, FM_ERR_INTERNAL, "out of memory");
    fm_fill_normal(f->x, m * in, 5, 1, 0);
    fm_fill_normal(f->dy, m * out, 5, 2, 0);
    return FM_OK;
}

static int check_case(int64_t m, int64_t in, int64_t out, int bias)
{
    fm_err e = { 0 };
    fixture f;
    int rc = 1;
    float *ry = malloc((size_t)(m * out) * sizeof(float)), *rdx = malloc((size_t)(m * in) * sizeof(float));
    float *rdw = malloc((size_t)(out * in) * sizeof(float)), *rdb = malloc((size_t)out * sizeof(float));
    if (fx_init(&f, m, in, out, bias, &e) != FM_OK) {
        fprintf(stderr, "  init: %s\n", e.msg);
        goto out;
    }
    const float *w = f.l.weight->w.data, *b = bias ? f.l.bias->w.data : NULL;
    float *dw = f.l.weight->g.data, *db = bias ? f.l.bias->g.data : NULL;
    /* gradients must be overwritten, not accumulated: start from garbage */
    for (int64_t i = 0; i < out * in; i++)
        dw[i] = NAN;
    for (int64_t i = 0; bias && i < out; i++)
        db[i] = NAN;
    if (fm_linear_forward(&f.l, f.x, f.y, &e) != FM_OK || fm_linear_backward(&f.l, f.x, f.dy, f.dx, &e) != FM_OK) {
        fprintf(stderr, "  run: %s\n", e.msg);
        goto out;
    }
    ref_forward(f.x, w, b, m, in, out, ry);
    ref_backward(f.x, w, f.dy, m, in, out, rdx, rdw, rdb);
    double ey = fm_rel_err(f.y, ry, m * out, 1e-12), edx = fm_rel_err(f.dx, rdx, m * in, 1e-12);
    double edw = fm_rel_err(dw, rdw, out * in, 1e-12), edb = bias ? fm_rel_err(db, rdb, out, 1e-12) : 0;
    fprintf(stderr, "  linear m=%lld in=%lld out=%lld bias=%d: rel err y %.1e dx %.1e dW %.1e db %.1e\n",
            (long long)m, (long long)in, (long long)out, bias, ey, edx, edw, edb);
    if (!(ey <= 1e-5 && edx <= 1e-5 && edw <= 1e-5 && edb <= 1e-5)) {
        fprintf(stderr, "  linear m=%lld in=%lld out=%lld: error above 1e-5\n", (long long)m, (long long)in,
                (long long)out);
        goto out;
    }
    /* dx = NULL skips the data gradient and leaves the parameter gradients equal */
    memset(dw, 0, (size_t)(out * in) * sizeof(float));
    if (fm_linear_backward(&f.l, f.x, f.dy, NULL, &e) != FM_OK) {
        fprintf(stderr, "  backward without dx: %s\n", e.msg);
        goto out;
    }
    if (!(fm_rel_err(dw, rdw, out * in, 1e-12) <= 1e-5)) {
        fprintf(stderr, "  backward without dx: wrong weight gradient\n");
        goto out;
    }
    /* dx may alias x: backward into the input buffer itself */
    memset(dw, 0, (size_t)(out * in) * sizeof(float));
    if (fm_linear_backward(&f.l, f.x, f.dy, f.x, &e) != FM_OK) {
        fprintf(stderr, "  backward with dx = x: %s\n", e.msg);
        goto out;
    }
    if (!(fm_rel_err(dw, rdw, out * in, 1e-12) <= 1e-5 && fm_rel_err(f.x, rdx, m * in, 1e-12) <= 1e-5)) {
        fprintf(stderr, "  backward with dx = x: wrong gradients\n");
        goto out;
    }
    rc = 0;
out:
    fx_free(&f);
    free(ry);
    free(rdx);
    free(rdw);
    free(rdb);
    return rc;
}

/* Odd row counts, a single row, no bias, and output widths that end in a
 * partial 64-column block of the bias-gradient loop. */
static int test_linear_vs_naive(void)
{
    static const int64_t cases[][4] = {
        { 7, 5, 3, 1 }, { 33, 32, 64, 1 }, { 48, 64, 17, 0 }, { 1, 16, 16, 1 }, { 129, 64, 130, 1 }, { 255, 96, 32, 1 },
    };
    for (size_t i = 0; i < sizeof cases / sizeof *cases; i++)
        CHECK(check_case(cases[i][0], cases[i][1], cases[i][2], (int)cases[i][3]) == 0, "case %zu", i);
    return 0;
}

static int gc_forward(void *ctx, fm_err *e)
{
    fixture *f = ctx;
    return fm_linear_forward(&f->l, f->x, f->y, e);
}

static int gc_backward(void *ctx, fm_err *e)
{
    fixture *f = ctx;
    return fm_linear_backward(&f->l, f->x, f->dy, f->dx, e);
}

/* eps = 1e-2, tol = 1e-3: the loss is linear in every variable, so the
 * central difference is exact up to fp32 rounding of the loss. */
static int test_linear_gradcheck(void)
{
    fm_err e = { 0 };
    fixture f;
    int rc = fx_init(&f, 5, 7, 3, 1, &e);
    if (rc == FM_OK) {
        fm_gc_op op = {
            .name = "linear", .ctx = &f, .forward = gc_forward, .backward = gc_backward,
            .out = f.y, .dout = f.dy, .out_n = f.m * f.out,
            .vars = { { "x", f.x, f.dx, f.m * f.in },
                      { "weight", f.l.weight->w.data, f.l.weight->g.data, f.out * f.in },
                      { "bias", f.l.bias->w.data, f.l.bias->g.data, f.out } },
            .nvars = 3,
        };
        rc = fm_gradcheck(&op, 1e-2, 1e-3, 200, &e);
    }
    fx_free(&f);
    CHECK_OK(rc, &e);
    return 0;
}

/* Weight and bias are uniform in +-1/sqrt(in), as torch.nn.Linear's default. */
static int test_linear_default_init(void)
{
    fm_err e = { 0 };
    fixture f;
    int rc = fx_init(&f, 2, 50, 40, 1, &e);
    double bound = 1.0 / sqrt(50.0), wmax = 0, bmax = 0;
    if (rc == FM_OK) {
        for (int64_t i = 0; i < 40 * 50; i++)
            wmax = fmax(wmax, fabs(fm_f32(&f.l.weight->w)[i]));
        for (int64_t i = 0; i < 40; i++)
            bmax = fmax(bmax, fabs(fm_f32(&f.l.bias->w)[i]));
    }
    int named = rc == FM_OK && fm_params_find(&f.p, "fc.weight") && fm_params_find(&f.p, "fc.bias");
    fx_free(&f);
    CHECK_OK(rc, &e);
    CHECK(named, "parameters not named fc.weight / fc.bias");
    CHECK(wmax <= bound && wmax > 0.9 * bound, "weight max %g, bound %g", wmax, bound);
    CHECK(bmax <= bound && bmax > 0.7 * bound, "bias max %g, bound %g", bmax, bound);
    return 0;
}

static int test_linear_flops(void)
{
    fm_linear l = { .m = 10, .in = 3, .out = 4 };
    CHECK(fm_linear_flops_fwd(&l) == 240, "forward %g", fm_linear_flops_fwd(&l));
    CHECK(fm_linear_flops_bwd(&l, 1) == 480 && fm_linear_flops_bwd(&l, 0) == 240, "backward %g",
          fm_linear_flops_bwd(&l, 1));
    return 0;
}

static int test_linear_bad_sizes(void)
{
    fm_err e = { 0 };
    fm_dnn d;
    fm_params p;
    fm_arena a;
    fm_linear l;
    CHECK_OK(fm_dnn_init(&d, &e), &e);
    CHECK_OK(fm_params_init(&p, 8, 1024, 1, &e), &e);
    CHECK_OK(fm_arena_init(&a, 1 << 20, &e), &e);
    int rc0 = fm_linear_init(&l, &d, &p, &a, "bad", 0, 4, 1, 8, &e);
    fm_linear_free(&l);
    int named = strstr(e.msg, "bad") != NULL;
    fm_param *w, *b;
    int rc1 = fm_params_add(&p, &w, 2, (int64_t[]){ 4, 3 }, &e, "w");
    rc1 |= fm_params_add(&p, &b, 1, (int64_t[]){ 3 }, &e, "b");
    int rc2 = fm_linear_init_params(&l, &d, &a, w, b, 8, &e);
    fm_linear_free(&l);
    fm_arena_free(&a);
    fm_params_free(&p);
    fm_dnn_free(&d);
    CHECK(rc0 == FM_ERR_USAGE && named, "in = 0 gave %d: %s", rc0, e.msg);
    CHECK(rc1 == FM_OK, "registering params failed");
    CHECK(rc2 == FM_ERR_USAGE, "bias [3] on weight [4, 3] gave %d", rc2);
    return 0;
}

int main(int argc, char **argv)
{
    static const fm_test tests[] = {
        TEST(test_linear_vs_naive),     TEST(test_linear_gradcheck), TEST(test_linear_default_init),
        TEST(test_linear_flops),        TEST(test_linear_bad_sizes),
    };
    return fm_test_main("nn/linear", tests, (int)(sizeof tests / sizeof *tests), argc, argv);
}
