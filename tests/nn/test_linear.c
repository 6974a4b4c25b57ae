/* test_linear.c - the linear layer against naive loops, a finite-difference
 * gradient check, PyTorch's default init, bad sizes, and the GELU-fused
 * entry points against the unfused calls. */
#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "fm/arena.h"
#include "fm/dnn.h"
#include "fm/gelu.h"
#include "fm/linear.h"
#include "fm/params.h"
#include "fm/rng.h"
#include "fixture.h"
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
    fm_fx_env v;
    fm_fx_io io;
    fm_linear l;
    int64_t m, in, out;
    int bias;
    fm_fx_layer L; /* the layer under test, on io */
} fixture;

static void fx_free(fixture *f)
{
    fm_linear_free(&f->l);
    fm_fx_env_free(&f->v);
    fm_fx_io_free(&f->io);
}

static int lin_fwd(void *ctx, const float *x, float *y, fm_err *e)
{
    fixture *f = ctx;
    return fm_linear_forward(&f->l, x, y, e);
}

static int lin_bwd(void *ctx, const float *x, const float *dy, float *dx, fm_err *e)
{
    fixture *f = ctx;
    return fm_linear_backward(&f->l, x, dy, dx, e);
}

static void lin_ref(void *ctx, const float *x, const float *dy, float *y, float *dx, float *const *dp)
{
    fixture *f = ctx;
    const float *w = f->l.weight->w.data, *b = f->bias ? (const float *)f->l.bias->w.data : NULL;
    float *db = malloc((size_t)f->out * sizeof(float));
    ref_forward(x, w, b, f->m, f->in, f->out, y);
    ref_backward(x, w, dy, f->m, f->in, f->out, dx, dp[0], f->bias ? dp[1] : db);
    free(db);
}

static int fx_init(fixture *f, int64_t m, int64_t in, int64_t out, int bias, fm_err *e)
{
    memset(f, 0, sizeof *f);
    f->m = m, f->in = in, f->out = out, f->bias = bias;
    FM_TRY(fm_fx_env_init(&f->v, 0, 4, (size_t)(out * in + out + 64), 11, 64 << 20, e));
    FM_TRY(fm_linear_init(&f->l, &f->v.d, &f->v.p, &f->v.a, "fc", in, out, bias, m, e));
    FM_TRY(fm_fx_io_init(&f->io, m * in, m * out, 5, e));
    f->L = (fm_fx_layer){ .label = "linear", .ctx = f, .io = &f->io, .forward = lin_fwd, .backward = lin_bwd,
                          .reference = lin_ref, .params = { f->l.weight, f->l.bias }, .nparams = bias ? 2 : 1,
                          .poison = NAN };
    return FM_OK;
}

/* forward and backward against the naive loops (gradients must be
 * overwritten, not accumulated: they start from garbage); then dx = NULL
 * (parameter gradients only) and dx aliasing x (backward into the input
 * buffer itself). */
static int check_case(int64_t m, int64_t in, int64_t out, int bias)
{
    fm_err e = { 0 };
    fixture f;
    fm_fx_ref ref = { 0 };
    char label[128];
    snprintf(label, sizeof label, "linear m=%lld in=%lld out=%lld bias=%d", (long long)m, (long long)in,
             (long long)out, bias);
    int rc = 1;
    if (fx_init(&f, m, in, out, bias, &e) != FM_OK || fm_fx_ref_init(&ref, &f.L) != 0) {
        fprintf(stderr, "  init: %s\n", e.msg[0] ? e.msg : "out of memory");
        goto out;
    }
    f.L.label = label;
    if (fm_fx_check(&f.L, &ref, 1e-5, label) || fm_fx_check_no_dx(&f.L, &ref, 1e-5) ||
        fm_fx_check_alias(&f.L, &ref, 1e-5, 0))
        goto out;
    rc = 0;
out:
    fm_fx_ref_free(&ref);
    fx_free(&f);
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

/* eps = 1e-2, tol = 1e-3: the loss is linear in every variable, so the
 * central difference is exact up to fp32 rounding of the loss. */
static int test_linear_gradcheck(void)
{
    fm_err e = { 0 };
    fixture f;
    int rc = fx_init(&f, 5, 7, 3, 1, &e);
    if (rc == FM_OK)
        rc = fm_fx_gradcheck(&f.L, 1e-2, 1e-3, 200, &e);
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
    int named = rc == FM_OK && fm_params_find(&f.v.p, "fc.weight") && fm_params_find(&f.v.p, "fc.bias");
    fx_free(&f);
    CHECK_OK(rc, &e);
    CHECK(named, "parameters not named fc.weight / fc.bias");
    CHECK(wmax <= bound && wmax > 0.9 * bound, "weight max %g, bound %g", wmax, bound);
    CHECK(bmax <= bound && bmax > 0.7 * bound, "bias max %g, bound %g", bmax, bound);
    return 0;
}

/* fm_linear_forward_gelu and fm_linear_backward_gelu against
 * fm_gelu_forward / fm_gelu_backward and the plain calls on a twin layer
 * (same seed, same weights): bitwise the same y, dx and gradients, in fp32
 * and bf16, at 200 output columns (GELU pass, then the layer) and 600 (bf16:
 * the GELU derivative inside the pass that rounds dy and sums the bias
 * gradient; a partial last block of columns). Under bf16 the forward's x
 * buffer is not written, and the layer keeps its rounding as x. */
static int gelu_case(int bf16, int64_t out)
{
    const int64_t m = 40, in = 24;
    fm_err e = { 0 };
    fm_fx_env va, vb;
    fm_linear la, lb;
    memset(&la, 0, sizeof la), memset(&lb, 0, sizeof lb);
    float *buf = calloc((size_t)(m * in * 4 + m * out * 5), sizeof(float));
    CHECK(buf != NULL, "out of memory");
    float *h = buf, *xa = h + m * in, *xb = xa + m * in, *dx = xb + m * in; /* [m, in] each */
    float *ya = dx + m * in, *yb = ya + m * out, *h1 = yb + m * out, *dga = h1 + m * out, *dgb = dga + m * out;
    int rc = fm_fx_env_init(&va, bf16, 4, (size_t)(out * in + out + 64), 3, 64 << 20, &e);
    rc = rc ? rc : fm_fx_env_init(&vb, bf16, 4, (size_t)(out * in + out + 64), 3, 64 << 20, &e);
    rc = rc ? rc : fm_linear_init(&la, &va.d, &va.p, &va.a, "fc", in, out, 1, m, &e);
    rc = rc ? rc : fm_linear_init(&lb, &vb.d, &vb.p, &vb.a, "fc", in, out, 1, m, &e);
    CHECK_OK(rc, &e);
    fm_fill_normal(h, m * in, 21, 1, 0);
    fm_fill_normal(h1, m * out, 21, 2, 0);
    fm_fill_normal(dga, m * out, 21, 3, 0);
    memcpy(dgb, dga, (size_t)(m * out) * sizeof(float));
    fm_fx_fill(xa, m * in, 7.0f);
    CHECK_OK(fm_linear_forward_gelu(&la, h, xa, ya, &e), &e);
    fm_gelu_forward(h, xb, m * in);
    CHECK_OK(fm_linear_forward(&lb, xb, yb, &e), &e);
    CHECK(memcmp(ya, yb, (size_t)(m * out) * sizeof(float)) == 0, "bf16 %d out %lld: forward differs", bf16,
          (long long)out);
    CHECK(!bf16 || (xa[0] == 7.0f && fm_linear_keeps_x(&la, xa)), "bf16: x written or not kept");
    CHECK(bf16 || memcmp(xa, xb, (size_t)(m * in) * sizeof(float)) == 0, "fp32: x is not gelu(h)");
    CHECK_OK(fm_linear_backward_gelu(&la, xa, h1, dga, dx, &e), &e);
    float *dxa = malloc((size_t)(m * in) * sizeof(float));
    CHECK(dxa != NULL, "out of memory");
    memcpy(dxa, dx, (size_t)(m * in) * sizeof(float));
    fm_gelu_backward(h1, dgb, dgb, m * out);
    CHECK_OK(fm_linear_backward(&lb, xb, dgb, dx, &e), &e);
    int same_dx = memcmp(dxa, dx, (size_t)(m * in) * sizeof(float)) == 0;
    int same_g = memcmp(va.p.grad, vb.p.grad, va.p.numel * sizeof(float)) == 0;
    free(dxa);
    fm_linear_free(&la), fm_linear_free(&lb);
    fm_fx_env_free(&va), fm_fx_env_free(&vb);
    free(buf);
    CHECK(same_dx && same_g, "bf16 %d out %lld: backward differs (dx %s, gradients %s)", bf16, (long long)out,
          same_dx ? "same" : "differ", same_g ? "same" : "differ");
    return 0;
}

static int test_linear_gelu(void)
{
    for (int bf16 = 0; bf16 <= 1; bf16++)
        for (int64_t out = 200; out <= 600; out += 400)
            if (gelu_case(bf16, out))
                return 1;
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
        TEST(test_linear_flops),        TEST(test_linear_bad_sizes), TEST(test_linear_gelu),
    };
    return fm_test_main("nn/linear", tests, (int)(sizeof tests / sizeof *tests), argc, argv);
}
