/* test_conv.c - fm_conv2d against a naive NHWC loop, a gradient check, and a timing line. */
#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "fm/conv.h"
#include "fixture.h"
#include "test.h"

/* oneDNN and the naive loop sum in different orders: fp32 rounding only */
#define REF_TOL 2e-5

typedef struct conv_case {
    const char *label;
    int64_t n, h, w, cin, cout, k, s, p;
    int bias;
} conv_case;

/* ---- the naive reference (double accumulation) ---- */

/* y [N, Ho, Wo, Cout] = sum over (ky, kx, ci) of x [N, H, W, Cin] * w [Cout, Cin, k, k] + b */
static void ref_forward(const conv_case *c, int64_t ho, int64_t wo, const float *x, const float *w,
                        const float *b, float *y)
{
    for (int64_t n = 0; n < c->n; n++)
        for (int64_t oy = 0; oy < ho; oy++)
            for (int64_t ox = 0; ox < wo; ox++)
                for (int64_t co = 0; co < c->cout; co++) {
                    double s = b ? b[co] : 0.0;
                    for (int64_t ky = 0; ky < c->k; ky++) {
                        int64_t iy = oy * c->s - c->p + ky;
                        if (iy < 0 || iy >= c->h)
                            continue;
                        for (int64_t kx = 0; kx < c->k; kx++) {
                            int64_t ix = ox * c->s - c->p + kx;
                            if (ix < 0 || ix >= c->w)
                                continue;
                            const float *xp = x + ((n * c->h + iy) * c->w + ix) * c->cin;
                            for (int64_t ci = 0; ci < c->cin; ci++)
                                s += (double)xp[ci] * w[((co * c->cin + ci) * c->k + ky) * c->k + kx];
                        }
                    }
                    y[((n * ho + oy) * wo + ox) * c->cout + co] = (float)s;
                }
}

/* dx, dw, db from dy, by scattering each output's gradient back over its window */
static void ref_backward(const conv_case *c, int64_t ho, int64_t wo, const float *x, const float *w,
                         const float *dy, float *dx, float *dw, float *db)
{
    int64_t nx = c->n * c->h * c->w * c->cin, nw = c->cout * c->cin * c->k * c->k;
    double *ax = calloc((size_t)nx, sizeof *ax), *aw = calloc((size_t)nw, sizeof *aw);
    double *ab = calloc((size_t)c->cout, sizeof *ab);
    for (int64_t n = 0; n < c->n; n++)
        for (int64_t oy = 0; oy < ho; oy++)
            for (int64_t ox = 0; ox < wo; ox++)
                for (int64_t co = 0; co < c->cout; co++) {
                    double g = dy[((n * ho + oy) * wo + ox) * c->cout + co];
                    ab[co] += g;
                    for (int64_t ky = 0; ky < c->k; ky++) {
                        int64_t iy = oy * c->s - c->p + ky;
                        if (iy < 0 || iy >= c->h)
                            continue;
                        for (int64_t kx = 0; kx < c->k; kx++) {
                            int64_t ix = ox * c->s - c->p + kx;
                            if (ix < 0 || ix >= c->w)
                                continue;
                            int64_t xi = ((n * c->h + iy) * c->w + ix) * c->cin;
                            for (int64_t ci = 0; ci < c->cin; ci++) {
                                int64_t wi = ((co * c->cin + ci) * c->k + ky) * c->k + kx;
                                ax[xi + ci] += g * w[wi];
                                aw[wi] += g * x[xi + ci];
                            }
                        }
                    }
                }
    for (int64_t i = 0; i < nx; i++)
        dx[i] = (float)ax[i];
    for (int64_t i = 0; i < nw; i++)
        dw[i] = (float)aw[i];
    if (db)
        for (int64_t i = 0; i < c->cout; i++)
            db[i] = (float)ab[i];
    free(ax);
    free(aw);
    free(ab);
}

/* ---- a layer with everything it needs ---- */

typedef struct rig {
    fm_fx_env v;
    fm_fx_io io;
    fm_conv2d l;
    const conv_case *c;
    int64_t nw;
    fm_fx_layer L; /* the layer under test, on io */
} rig;

static void rig_free(rig *r)
{
    fm_conv2d_free(&r->l);
    fm_fx_env_free(&r->v);
    fm_fx_io_free(&r->io);
}

static int conv_fwd(void *ctx, const float *x, float *y, fm_err *e)
{
    rig *r = ctx;
    return fm_conv2d_forward(&r->l, x, y, e);
}

static int conv_bwd(void *ctx, const float *x, const float *dy, float *dx, fm_err *e)
{
    rig *r = ctx;
    return fm_conv2d_backward(&r->l, x, dy, dx, e);
}

static void conv_ref(void *ctx, const float *x, const float *dy, float *y, float *dx, float *const *dp)
{
    rig *r = ctx;
    const float *w = r->l.weight->w.data, *b = r->l.bias ? (const float *)r->l.bias->w.data : NULL;
    ref_forward(r->c, r->l.ho, r->l.wo, x, w, b, y);
    ref_backward(r->c, r->l.ho, r->l.wo, x, w, dy, dx, dp[0], b ? dp[1] : NULL);
}

static int rig_init(rig *r, const conv_case *c, uint64_t seed, fm_err *e)
{
    memset(r, 0, sizeof *r);
    r->c = c;
    r->nw = c->cout * c->cin * c->k * c->k;
    FM_TRY(fm_fx_env_init(&r->v, 0, 4, (size_t)(r->nw + c->cout + 64), seed, (size_t)64 << 20, e));
    FM_TRY(fm_conv2d_init(&r->l, &r->v.d, &r->v.p, &r->v.a, "conv", c->cin, c->cout, c->k, c->s, c->p, c->bias,
                          c->n, c->h, c->w, e));
    FM_TRY(fm_fx_io_init(&r->io, c->n * c->h * c->w * c->cin, c->n * r->l.ho * r->l.wo * c->cout, seed, e));
    r->L = (fm_fx_layer){ .label = c->label, .ctx = r, .io = &r->io, .forward = conv_fwd, .backward = conv_bwd,
                          .reference = conv_ref, .params = { r->l.weight, r->l.bias }, .nparams = r->l.bias ? 2 : 1,
                          .poison = 1e30f };
    return FM_OK;
}

/* forward and backward of one case against the naive loops */
static int check_case(const conv_case *c)
{
    fm_err e = { 0 };
    rig r;
    int rc = rig_init(&r, c, 11, &e);
    const int64_t ho = (c->h + 2 * c->p - c->k) / c->s + 1, wo = (c->w + 2 * c->p - c->k) / c->s + 1;
    if (rc == FM_OK && (r.l.ho != ho || r.l.wo != wo))
        rc = fm_fail(&e, FM_ERR_INTERNAL, "output %lldx%lld, want %lldx%lld", (long long)r.l.ho, (long long)r.l.wo,
                     (long long)ho, (long long)wo);
    if (rc == FM_OK)
        fprintf(stderr, "  %s: forward %s, backward-data %s, backward-weights %s\n", c->label, fm_fx_impl(r.l.fwd),
                fm_fx_impl(r.l.bwd_data), fm_fx_impl(r.l.bwd_weights));
    if (rc != FM_OK)
        fprintf(stderr, "  %s: %s\n", c->label, e.msg);
    else
        rc = fm_fx_check_reweighted(&r.L, REF_TOL);
    rig_free(&r);
    return rc != 0;
}

static int run_cases(const conv_case *cs, int n)
{
    int failed = 0;
    for (int i = 0; i < n; i++)
        failed += check_case(&cs[i]);
    return failed;
}

static int test_3x3(void)
{
    const conv_case cs[] = {
        { "3x3 s1 p1", 2, 8, 8, 16, 32, 3, 1, 1, 1 },
        { "3x3 s2 p1", 2, 8, 8, 16, 24, 3, 2, 1, 1 },
        { "3x3 s1 p0", 2, 6, 6, 8, 8, 3, 1, 0, 0 },
        { "3x3 s1 p1 N=3 cin 64", 3, 4, 4, 64, 32, 3, 1, 1, 1 },
    };
    return run_cases(cs, (int)(sizeof cs / sizeof *cs));
}

static int test_1x1(void)
{
    const conv_case cs[] = {
        { "1x1 s1 p0", 2, 6, 6, 32, 16, 1, 1, 0, 0 },
        { "1x1 s1 p0 bias", 3, 5, 7, 12, 20, 1, 1, 0, 1 },
        { "1x1 s2 p0", 2, 7, 7, 8, 8, 1, 2, 0, 1 },
    };
    return run_cases(cs, (int)(sizeof cs / sizeof *cs));
}

static int test_odd_sizes(void)
{
    const conv_case cs[] = {
        { "7x5 3x3 s1 p1", 2, 7, 5, 5, 7, 3, 1, 1, 1 },
        { "7x5 3x3 s2 p1", 3, 7, 5, 6, 10, 3, 2, 1, 1 },
        { "9x9 3x3 s2 p1 N=3", 3, 9, 9, 8, 8, 3, 2, 1, 0 },
        { "7x6 5x5 s1 p2", 2, 7, 6, 3, 5, 5, 1, 2, 1 },
        { "8x8 2x2 s2 p0 (patchify)", 2, 8, 8, 4, 16, 2, 2, 0, 1 },
    };
    return run_cases(cs, (int)(sizeof cs / sizeof *cs));
}

static int test_first_layer(void)
{
    const conv_case cs[] = {
        { "cin=1 32x32 3x3 s1 p1", 2, 32, 32, 1, 32, 3, 1, 1, 1 },
        { "cin=1 28x28 3x3 s2 p1 N=3", 3, 28, 28, 1, 16, 3, 2, 1, 1 },
    };
    return run_cases(cs, (int)(sizeof cs / sizeof *cs));
}

static int test_init_and_errors(void)
{
    fm_err e = { 0 };
    rig r;
    conv_case c = { "init", 1, 4, 4, 6, 5, 3, 1, 1, 1 };
    CHECK_OK(rig_init(&r, &c, 3, &e), &e);
    /* PyTorch default: uniform(-1/sqrt(cin*k*k), 1/sqrt(cin*k*k)) for weight and bias */
    float bound = 1.0f / sqrtf(6 * 9), wmax = 0, bmax = 0;
    const float *w = r.l.weight->w.data, *b = r.l.bias->w.data;
    for (int64_t i = 0; i < r.nw; i++)
        wmax = fmaxf(wmax, fabsf(w[i]));
    for (int64_t i = 0; i < c.cout; i++)
        bmax = fmaxf(bmax, fabsf(b[i]));
    int ok_names =
        fm_params_find(&r.v.p, "conv.weight") == r.l.weight && fm_params_find(&r.v.p, "conv.bias") == r.l.bias;
    int ok_shape = r.l.weight->w.ndim == 4 && r.l.weight->w.shape[0] == 5 && r.l.weight->w.shape[1] == 6 &&
                   r.l.weight->w.shape[2] == 3 && r.l.weight->w.shape[3] == 3;
    fm_conv2d bad;
    int rc_bad = fm_conv2d_init(&bad, &r.v.d, &r.v.p, &r.v.a, "big", 6, 5, 7, 1, 0, 0, 1, 4, 4, &e);
    rig_free(&r);
    CHECK(ok_names && ok_shape, "parameter names or shape wrong");
    CHECK(wmax <= bound && wmax > 0.5f * bound, "weight range %g, bound %g", wmax, bound);
    CHECK(bmax <= bound && bmax > 0.3f * bound, "bias range %g, bound %g", bmax, bound);
    CHECK(rc_bad == FM_ERR_USAGE && strstr(e.msg, "big"), "7x7 kernel on 4x4 input: rc %d, %s", rc_bad, e.msg);
    CHECK(fm_conv2d_out_hw(8, 3, 2, 1) == 4 && fm_conv2d_out_hw(7, 3, 2, 1) == 4 && fm_conv2d_out_hw(8, 1, 1, 0) == 8,
          "out_hw formula");
    return 0;
}

/* ---- gradient check ---- */

static int gradcheck_case(const conv_case *c)
{
    fm_err e = { 0 };
    rig r;
    int rc = rig_init(&r, c, 5, &e);
    /* fp32, and the op is linear in each variable: eps = 1e-2, tol = 1e-2 */
    if (rc == FM_OK)
        rc = fm_fx_gradcheck(&r.L, 1e-2, 1e-2, 60, &e);
    if (rc != FM_OK)
        fprintf(stderr, "  %s: %s\n", c->label, e.msg);
    rig_free(&r);
    return rc != FM_OK;
}

static int test_gradcheck(void)
{
    const conv_case cs[] = {
        { "gc 3x3 s1 p1", 2, 5, 4, 3, 4, 3, 1, 1, 1 },
        { "gc 3x3 s2 p1", 2, 5, 6, 3, 2, 3, 2, 1, 1 },
        { "gc 1x1 s1 p0", 1, 3, 3, 4, 3, 1, 1, 0, 1 },
    };
    int failed = 0;
    for (size_t i = 0; i < sizeof cs / sizeof *cs; i++)
        failed += gradcheck_case(&cs[i]);
    return failed;
}

/* ---- timing (printed, not asserted) ---- */

static int test_timing(void)
{
    fm_err e = { 0 };
    rig r;
    conv_case c = { "timing", 128, 8, 8, 128, 128, 3, 1, 1, 1 };
    CHECK_OK(rig_init(&r, &c, 9, &e), &e);
    fm_fx_times t;
    int rc = fm_fx_time_layer(&r.L, 2, 10, &t, &e);
    const double tf = t.fwd, tb = t.bwd;
    printf("  timing conv N=128 8x8 128->128 3x3 s1 p1: forward %.2f ms (%.1f GFLOP/s), backward %.2f ms "
           "(%.1f GFLOP/s), scratchpad %zu KiB\n",
           1e3 * tf, fm_conv2d_flops_fwd(&r.l) / tf * 1e-9, 1e3 * tb, fm_conv2d_flops_bwd(&r.l, 1) / tb * 1e-9,
           r.l.scratch_bytes >> 10);
    printf("  impl: forward %s, backward-data %s, backward-weights %s; reorders: w %s, w-bwd %s, dw %s\n",
           fm_fx_impl(r.l.fwd), fm_fx_impl(r.l.bwd_data), fm_fx_impl(r.l.bwd_weights), r.l.w_reorder ? "yes" : "no",
           r.l.wb_reorder ? "yes" : "no", r.l.dw_reorder ? "yes" : "no");
    rig_free(&r);
    CHECK(rc == FM_OK, "%s", e.msg);
    return 0;
}

int main(int argc, char **argv)
{
    const fm_test tests[] = {
        TEST(test_3x3),   TEST(test_1x1),       TEST(test_odd_sizes), TEST(test_first_layer),
        TEST(test_init_and_errors), TEST(test_gradcheck), TEST(test_timing),
    };
    return fm_test_main("conv", tests, (int)(sizeof tests / sizeof *tests), argc, argv);
}
