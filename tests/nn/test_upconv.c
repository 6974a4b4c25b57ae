/* test_upconv.c - fm_upconv (nearest x2 + 3x3 conv as four 2x2 sub-pixel
 * convolutions) against a naive upsample-then-convolve loop (fp32, and bf16 on
 * rounded operands), a gradient check, the init and arena bound, and a timing
 * line against fm_upsample2x + fm_conv2d. */
#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "fm/conv.h"
#include "fm/updown.h"
#include "fm/upconv.h"
#include "fixture.h"
#include "test.h"

/* oneDNN and the naive loop sum in different orders (and the fold adds taps
 * before multiplying): fp32 rounding only */
#define REF_TOL 2e-5

typedef struct up_case {
    const char *label;
    int64_t n, h, w, cin, cout;
    int bias;
} up_case;

/* ---- the naive reference (double accumulation) ----
 * u = upsample2x(x) [N, 2H, 2W, Cin]; y = conv3x3(u, pad 1) + b. */

static double up_at(const up_case *c, const float *x, int64_t n, int64_t uy, int64_t ux, int64_t ci)
{
    return x[((n * c->h + uy / 2) * c->w + ux / 2) * c->cin + ci];
}

static void ref_forward(const up_case *c, const float *x, const float *w, const float *b, float *y)
{
    const int64_t H2 = 2 * c->h, W2 = 2 * c->w;
    for (int64_t n = 0; n < c->n; n++)
        for (int64_t oy = 0; oy < H2; oy++)
            for (int64_t ox = 0; ox < W2; ox++)
                for (int64_t co = 0; co < c->cout; co++) {
                    double s = b ? b[co] : 0.0;
                    for (int64_t ky = 0; ky < 3; ky++)
                        for (int64_t kx = 0; kx < 3; kx++) {
                            int64_t uy = oy - 1 + ky, ux = ox - 1 + kx;
                            if (uy < 0 || uy >= H2 || ux < 0 || ux >= W2)
                                continue;
                            for (int64_t ci = 0; ci < c->cin; ci++)
                                s += up_at(c, x, n, uy, ux, ci) * w[((co * c->cin + ci) * 3 + ky) * 3 + kx];
                        }
                    y[((n * H2 + oy) * W2 + ox) * c->cout + co] = (float)s;
                }
}

/* dx, dw, db: scatter each output gradient over its window of u, then sum
 * the 4 children of each input pixel (upsample's backward). */
static void ref_backward(const up_case *c, const float *x, const float *w, const float *dy, float *dx, float *dw,
                         float *db)
{
    const int64_t H2 = 2 * c->h, W2 = 2 * c->w;
    const int64_t nx = c->n * c->h * c->w * c->cin, nw = c->cout * c->cin * 9;
    double *ax = calloc((size_t)nx, sizeof *ax), *aw = calloc((size_t)nw, sizeof *aw);
    double *ab = calloc((size_t)c->cout, sizeof *ab);
    for (int64_t n = 0; n < c->n; n++)
        for (int64_t oy = 0; oy < H2; oy++)
            for (int64_t ox = 0; ox < W2; ox++)
                for (int64_t co = 0; co < c->cout; co++) {
                    double g = dy[((n * H2 + oy) * W2 + ox) * c->cout + co];
                    ab[co] += g;
                    for (int64_t ky = 0; ky < 3; ky++)
                        for (int64_t kx = 0; kx < 3; kx++) {
                            int64_t uy = oy - 1 + ky, ux = ox - 1 + kx;
                            if (uy < 0 || uy >= H2 || ux < 0 || ux >= W2)
                                continue;
                            int64_t xi = ((n * c->h + uy / 2) * c->w + ux / 2) * c->cin;
                            for (int64_t ci = 0; ci < c->cin; ci++) {
                                int64_t wi = ((co * c->cin + ci) * 3 + ky) * 3 + kx;
                                ax[xi + ci] += g * w[wi];
                                aw[wi] += g * x[xi + ci];
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
    fm_upconv l;
    const up_case *c;
    int64_t nw;
    fm_fx_layer L; /* the layer under test, on io */
} rig;

static void rig_free(rig *r)
{
    fm_upconv_free(&r->l);
    fm_fx_env_free(&r->v);
    fm_fx_io_free(&r->io);
}

static int up_fwd(void *ctx, const float *x, float *y, fm_err *e)
{
    rig *r = ctx;
    return fm_upconv_forward(&r->l, x, y, e);
}

static int up_bwd(void *ctx, const float *x, const float *dy, float *dx, fm_err *e)
{
    rig *r = ctx;
    return fm_upconv_backward(&r->l, x, dy, dx, e);
}

static void up_ref(void *ctx, const float *x, const float *dy, float *y, float *dx, float *const *dp)
{
    rig *r = ctx;
    const float *w = r->l.weight->w.data, *b = r->l.bias ? (const float *)r->l.bias->w.data : NULL;
    ref_forward(r->c, x, w, b, y);
    ref_backward(r->c, x, w, dy, dx, dp[0], b ? dp[1] : NULL);
}

static int rig_init(rig *r, const up_case *c, uint64_t seed, int bf16, fm_err *e)
{
    memset(r, 0, sizeof *r);
    r->c = c;
    r->nw = c->cout * c->cin * 9;
    FM_TRY(fm_fx_env_init(&r->v, bf16, 4, (size_t)(r->nw + c->cout + 64), seed, 0, e));
    size_t bytes;
    FM_TRY(fm_upconv_arena_bytes(&r->v.d, c->cin, c->cout, c->bias, c->n, c->h, c->w, &bytes, e));
    FM_TRY(fm_arena_init(&r->v.a, bytes, e));
    FM_TRY(fm_upconv_init(&r->l, &r->v.d, &r->v.p, &r->v.a, "up", c->cin, c->cout, c->bias, c->n, c->h, c->w, e));
    FM_TRY(fm_fx_io_init(&r->io, c->n * c->h * c->w * c->cin, c->n * 4 * c->h * c->w * c->cout, seed, e));
    r->L = (fm_fx_layer){ .label = c->label, .ctx = r, .io = &r->io, .forward = up_fwd, .backward = up_bwd,
                          .reference = up_ref, .params = { r->l.weight, r->l.bias }, .nparams = r->l.bias ? 2 : 1,
                          .poison = 1e30f };
    return FM_OK;
}

/* forward and backward of one case against the naive loops */
static int check_case(const up_case *c)
{
    fm_err e = { 0 };
    rig r;
    int rc = rig_init(&r, c, 11, 0, &e);
    if (rc != FM_OK)
        fprintf(stderr, "  %s: %s\n", c->label, e.msg);
    else
        rc = fm_fx_check_reweighted(&r.L, REF_TOL);
    rig_free(&r);
    return rc != 0;
}

static int run_cases(const up_case *cs, int n)
{
    int failed = 0;
    for (int i = 0; i < n; i++)
        failed += check_case(&cs[i]);
    return failed;
}

static int test_shapes(void)
{
    const up_case cs[] = {
        { "4x4 16->16 N=2", 2, 4, 4, 16, 16, 1 },
        { "3x5 8->12 N=3", 3, 3, 5, 8, 12, 1 },
        { "5x3 12->8 N=2 no bias", 2, 5, 3, 12, 8, 0 },
        { "1x1 4->6 N=2", 2, 1, 1, 4, 6, 1 },
        { "2x7 33->17 N=1", 1, 2, 7, 33, 17, 1 },
        { "4x4 64->64 N=2", 2, 4, 4, 64, 64, 1 },
    };
    return run_cases(cs, (int)(sizeof cs / sizeof *cs));
}

static int test_init_and_errors(void)
{
    fm_err e = { 0 };
    rig r;
    up_case c = { "init", 1, 4, 4, 6, 5, 1 };
    CHECK_OK(rig_init(&r, &c, 3, 0, &e), &e);
    /* PyTorch default: uniform(-1/sqrt(cin*9), 1/sqrt(cin*9)) for weight and bias, as fm_conv2d */
    float bound = 1.0f / sqrtf(6 * 9), wmax = 0, bmax = 0;
    const float *w = r.l.weight->w.data, *b = r.l.bias->w.data;
    for (int64_t i = 0; i < r.nw; i++)
        wmax = fmaxf(wmax, fabsf(w[i]));
    for (int64_t i = 0; i < c.cout; i++)
        bmax = fmaxf(bmax, fabsf(b[i]));
    int ok_names = fm_params_find(&r.v.p, "up.weight") == r.l.weight && fm_params_find(&r.v.p, "up.bias") == r.l.bias;
    int ok_shape = r.l.weight->w.ndim == 4 && r.l.weight->w.shape[0] == 5 && r.l.weight->w.shape[1] == 6 &&
                   r.l.weight->w.shape[2] == 3 && r.l.weight->w.shape[3] == 3;
    /* the same values as fm_conv2d registers under the same name and seed */
    fm_params p2;
    fm_conv2d cv;
    CHECK_OK(fm_params_init(&p2, 4, 1024, 3, &e), &e);
    fm_arena a2;
    CHECK_OK(fm_arena_init(&a2, 16 << 20, &e), &e);
    CHECK_OK(fm_conv2d_init(&cv, &r.v.d, &p2, &a2, "up", 6, 5, 3, 1, 1, 1, 1, 8, 8, &e), &e);
    int same = memcmp(cv.weight->w.data, w, (size_t)r.nw * sizeof(float)) == 0 &&
               memcmp(cv.bias->w.data, b, (size_t)c.cout * sizeof(float)) == 0;
    fm_conv2d_free(&cv);
    fm_arena_free(&a2);
    fm_params_free(&p2);
    fm_upconv bad;
    int rc_bad = fm_upconv_init(&bad, &r.v.d, &r.v.p, &r.v.a, "empty", 6, 0, 1, 1, 4, 4, &e);
    rig_free(&r);
    CHECK(ok_names && ok_shape, "parameter names or shape wrong");
    CHECK(same, "weights differ from fm_conv2d's init of the same name");
    CHECK(wmax <= bound && wmax > 0.5f * bound, "weight range %g, bound %g", wmax, bound);
    CHECK(bmax <= bound && bmax > 0.3f * bound, "bias range %g, bound %g", bmax, bound);
    CHECK(rc_bad == FM_ERR_USAGE && strstr(e.msg, "empty"), "cout 0: rc %d, %s", rc_bad, e.msg);
    return 0;
}

/* fm_upconv_arena_bytes is exactly what init takes, for both precisions. */
static int test_arena_bytes(void)
{
    const up_case cs[] = {
        { "unet up.1", 128, 4, 4, 128, 128, 1 }, { "vae up.1", 128, 8, 8, 32, 32, 1 },
        { "odd", 3, 3, 5, 8, 12, 0 },            { "wide", 16, 4, 4, 256, 96, 1 },
    };
    for (size_t i = 0; i < sizeof cs / sizeof *cs; i++)
        for (int bf16 = 0; bf16 < 2; bf16++) {
            fm_err e = { 0 };
            rig r;
            int rc = rig_init(&r, &cs[i], 1, bf16, &e);
            size_t bytes = 0, used = r.v.a.used, scratch = r.l.scratch_bytes;
            if (rc == FM_OK)
                rc = fm_upconv_arena_bytes(&r.v.d, cs[i].cin, cs[i].cout, cs[i].bias, cs[i].n, cs[i].h, cs[i].w,
                                           &bytes, &e);
            rig_free(&r);
            CHECK(rc == FM_OK, "%s %s: %s", cs[i].label, bf16 ? "bf16" : "fp32", e.msg);
            CHECK(bytes == used, "%s %s: measured %zu bytes, init took %zu", cs[i].label, bf16 ? "bf16" : "fp32",
                  bytes, used);
            printf("  %s %s: arena %.2f MiB (scratchpad %zu KiB)\n", cs[i].label, bf16 ? "bf16" : "fp32",
                   (double)used / (1 << 20), scratch >> 10);
        }
    return 0;
}

/* ---- gradient check ---- */

static int gradcheck_case(const up_case *c)
{
    fm_err e = { 0 };
    rig r;
    int rc = rig_init(&r, c, 5, 0, &e);
    /* fp32, and the op is linear in each variable: eps = 1e-2, tol = 1e-2 */
    if (rc == FM_OK)
        rc = fm_fx_gradcheck(&r.L, 1e-2, 1e-2, 80, &e);
    if (rc != FM_OK)
        fprintf(stderr, "  %s: %s\n", c->label, e.msg);
    rig_free(&r);
    return rc != FM_OK;
}

static int test_gradcheck(void)
{
    const up_case cs[] = {
        { "gc 3x4 3->4", 2, 3, 4, 3, 4, 1 },
        { "gc 2x2 5->3 no bias", 1, 2, 2, 5, 3, 0 },
    };
    int failed = 0;
    for (size_t i = 0; i < sizeof cs / sizeof *cs; i++)
        failed += gradcheck_case(&cs[i]);
    return failed;
}

/* ---- bf16 operands ---- */

/* Worst relative error of y, dx, dW and db of rig a against the arrays of b. */
static double worst(const rig *a, const float *y, const float *dx, const float *dw, const float *db, const char **what)
{
    double w = fm_rel_err(a->io.y, y, (long)a->io.ny, 1e-12), r;
    *what = "y";
    if ((r = fm_rel_err(a->io.dx, dx, (long)a->io.nx, 1e-12)) > w)
        w = r, *what = "dx";
    if ((r = fm_rel_err(a->l.weight->g.data, dw, (long)a->nw, 1e-12)) > w)
        w = r, *what = "weight grad";
    if (a->l.bias && (r = fm_rel_err(a->l.bias->g.data, db, (long)a->l.cout, 1e-12)) > w)
        w = r, *what = "bias grad";
    return w;
}

static int run_rig(rig *r, fm_err *e)
{
    FM_TRY(fm_upconv_forward(&r->l, r->io.x, r->io.y, e));
    return fm_upconv_backward(&r->l, r->io.x, r->io.dy, r->io.dx, e);
}

/* bf16 promises fp32 arithmetic on bf16-rounded x, dy and folded weights W'.
 * With weights k/256, |k| <= 31, every fold (a sum of up to 4 taps) is exact
 * in bf16, so the bf16 layer must equal the naive reference on rounded x and
 * dy (rel 1e-4); against the fp32 layer it must differ (bf16 happened) by no
 * more than bf16 rounding allows. Backward after a forward on another x
 * rounds x again. */
static int check_bf16(const up_case *c)
{
    fm_err e = { 0 };
    rig b16, f32; /* bf16; plain fp32 */
    CHECK_OK(rig_init(&b16, c, 7, 1, &e), &e);
    CHECK_OK(rig_init(&f32, c, 7, 0, &e), &e);
    float *w = b16.l.weight->w.data;
    for (int64_t i = 0; i < b16.nw; i++)
        w[i] = fminf(fmaxf(roundf(w[i] * 256.0f), -31.0f), 31.0f) / 256.0f;
    memcpy(f32.v.p.data, b16.v.p.data, b16.v.p.numel * sizeof(float));
    CHECK_OK(run_rig(&b16, &e), &e);
    CHECK_OK(run_rig(&f32, &e), &e);
    const char *what;
    double vs_fp32 = worst(&b16, f32.io.y, f32.io.dx, f32.l.weight->g.data,
                           f32.l.bias ? (const float *)f32.l.bias->g.data : NULL, &what);
    printf("  %s: bf16 vs fp32: worst rel err %.2e (%s)\n", c->label, vs_fp32, what);
    CHECK(vs_fp32 > 1e-5, "%s: bf16 results equal fp32 (%.2e): bf16 was not used", c->label, vs_fp32);
    CHECK(vs_fp32 < 3e-2, "%s: bf16 too far from fp32: %.2e in %s", c->label, vs_fp32, what);

    /* the naive reference on the rounded operands (f32's x and dy, rounded) */
    fm_fx_ref ref = { 0 };
    CHECK(fm_fx_ref_init(&ref, &b16.L) == 0, "out of memory");
    fm_fx_round_bf16(f32.io.x, f32.io.nx);
    fm_fx_round_bf16(f32.io.dy, f32.io.ny);
    b16.L.reference(&b16, f32.io.x, f32.io.dy, ref.y, ref.dx, ref.dp); /* b16's weights */
    if (b16.l.bias && b16.l.wb.xp) /* fm_wgrad16's layer sums the fp32 dy for the bias gradient: plain fp32's */
        memcpy(ref.dp[1], f32.l.bias->g.data, (size_t)c->cout * sizeof(float));
    double vs_rounded = worst(&b16, ref.y, ref.dx, ref.dp[0], ref.dp[1], &what);
    printf("  %s: bf16 vs the reference on bf16-rounded operands: worst rel err %.2e (%s)\n", c->label, vs_rounded,
           what);
    fm_fx_ref_free(&ref);
    CHECK(vs_rounded < 1e-4, "%s: bf16 is not fp32 arithmetic on rounded operands: %.2e in %s", c->label,
          vs_rounded, what);

    /* backward given x after a forward on another buffer: rounds x again */
    float *g0 = malloc(b16.v.p.numel * sizeof(float)), *x2 = fm_fx_randn(b16.io.nx, 6, 1, 1.0f);
    CHECK(g0 && x2, "out of memory");
    memcpy(g0, b16.v.p.grad, b16.v.p.numel * sizeof(float));
    CHECK_OK(fm_upconv_forward(&b16.l, x2, b16.io.y, &e), &e);
    CHECK_OK(fm_upconv_backward(&b16.l, b16.io.x, b16.io.dy, b16.io.dx, &e), &e);
    double eg = fm_rel_err(b16.v.p.grad, g0, (long)b16.v.p.numel, 1e-12);
    free(g0);
    free(x2);
    rig_free(&b16);
    rig_free(&f32);
    CHECK(eg < 1e-6, "%s: backward used the bf16 copy of another input: %.2e", c->label, eg);
    return 0;
}

static int test_bf16(void)
{
    const up_case cs[] = {
        { "bf16 4x4 64->128 N=8", 8, 4, 4, 64, 128, 1 },
        { "bf16 3x5 5->12 N=3", 3, 3, 5, 5, 12, 1 },
    };
    int failed = 0;
    for (size_t i = 0; i < sizeof cs / sizeof *cs; i++)
        failed += check_bf16(&cs[i]);
    return failed;
}

/* ---- timing (printed, not asserted): the U-Net's up.1.upsample ---- */

/* the unfused pair: upsample into u, conv on u */
typedef struct unfused {
    rig *r;
    fm_conv2d cv;
    float *u, *du;
} unfused;

static int unfused_fwd(void *ctx, fm_err *e)
{
    unfused *f = ctx;
    const up_case *c = f->r->c;
    fm_upsample2x_forward(f->r->io.x, f->u, (int)c->n, (int)c->h, (int)c->w, (int)c->cin);
    return fm_conv2d_forward(&f->cv, f->u, f->r->io.y, e);
}

static int unfused_bwd(void *ctx, fm_err *e)
{
    unfused *f = ctx;
    const up_case *c = f->r->c;
    FM_TRY(fm_conv2d_backward(&f->cv, f->u, f->r->io.dy, f->du, e));
    fm_upsample2x_backward(f->du, f->r->io.dx, (int)c->n, (int)c->h, (int)c->w, (int)c->cin);
    return FM_OK;
}

static int test_timing(void)
{
    fm_err e = { 0 };
    rig r;
    up_case c = { "timing", 128, 4, 4, 128, 128, 1 };
    CHECK_OK(rig_init(&r, &c, 9, 0, &e), &e);
    unfused f = { .r = &r, .u = fm_fx_zeros(r.io.ny), .du = fm_fx_zeros(r.io.ny) };
    fm_params p2;
    fm_arena a2;
    CHECK(f.u && f.du, "out of memory");
    CHECK_OK(fm_params_init(&p2, 4, (size_t)(r.nw + 256), 9, &e), &e);
    CHECK_OK(fm_arena_init(&a2, 64 << 20, &e), &e);
    CHECK_OK(fm_conv2d_init(&f.cv, &r.v.d, &p2, &a2, "up", c.cin, c.cout, 3, 1, 1, 1, c.n, 2 * c.h, 2 * c.w, &e), &e);
    fm_fx_times tu, tc;
    int rc = fm_fx_time_layer(&r.L, 2, 8, &tu, &e);
    if (rc == FM_OK)
        rc = fm_fx_time(unfused_fwd, unfused_bwd, &f, 2, 8, &tc, &e);
    if (rc == FM_OK) {
        printf("  timing N=128 4x4 -> 8x8 128->128: upconv forward %.2f ms backward %.2f ms (%.1f GFLOP/s); "
               "upsample + conv forward %.2f ms backward %.2f ms\n",
               tu.fwd * 1e3, tu.bwd * 1e3,
               (fm_upconv_flops_fwd(&r.l) + fm_upconv_flops_bwd(&r.l, 1)) / (tu.fwd + tu.bwd) * 1e-9, tc.fwd * 1e3,
               tc.bwd * 1e3);
        printf("  impl: forward %s, backward-data %s, backward-weights %s; scratchpad %zu KiB\n",
               fm_fx_impl(r.l.fwd[0]), fm_fx_impl(r.l.bwd_data[0]), fm_fx_impl(r.l.bwd_weights[0]),
               r.l.scratch_bytes >> 10);
    }
    fm_conv2d_free(&f.cv);
    fm_arena_free(&a2);
    fm_params_free(&p2);
    free(f.u);
    free(f.du);
    rig_free(&r);
    CHECK(rc == FM_OK, "%s", e.msg);
    return 0;
}

int main(int argc, char **argv)
{
    const fm_test tests[] = {
        TEST(test_shapes), TEST(test_init_and_errors), TEST(test_arena_bytes), TEST(test_gradcheck),
        TEST(test_bf16),   TEST(test_timing),
    };
    return fm_test_main("nn/upconv", tests, (int)(sizeof tests / sizeof tests[0]), argc, argv);
}
