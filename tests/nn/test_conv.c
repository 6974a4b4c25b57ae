/* test_conv.c - fm_conv2d against a naive NHWC loop, a gradient check, and a timing line. */
#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "fm/conv.h"
#include "fm/rng.h"
#include "fm/timer.h"
#include "gradcheck.h"
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
    fm_dnn d;
    fm_params p;
    fm_arena a;
    fm_conv2d l;
    float *x, *y, *dy, *dx;
    int64_t nx, ny, nw;
} rig;

static void rig_free(rig *r)
{
    fm_conv2d_free(&r->l);
    fm_arena_free(&r->a);
    fm_params_free(&r->p);
    fm_dnn_free(&r->d);
    free(r->x);
    free(r->y);
    free(r->dy);
    free(r->dx);
}

static int rig_init(rig *r, const conv_case *c, uint64_t seed, fm_err *e)
{
    memset(r, 0, sizeof *r);
    r->nw = c->cout * c->cin * c->k * c->k;
    FM_TRY(fm_dnn_init(&r->d, e));
    FM_TRY(fm_params_init(&r->p, 4, (size_t)(r->nw + c->cout + 64), seed, e));
    FM_TRY(fm_arena_init(&r->a, (size_t)64 << 20, e));
    FM_TRY(fm_conv2d_init(&r->l, &r->d, &r->p, &r->a, "conv", c->cin, c->cout, c->k, c->s, c->p, c->bias, c->n,
                          c->h, c->w, e));
    r->nx = c->n * c->h * c->w * c->cin;
    r->ny = c->n * r->l.ho * r->l.wo * c->cout;
    r->x = malloc((size_t)r->nx * sizeof(float));
    r->dx = malloc((size_t)r->nx * sizeof(float));
    r->y = malloc((size_t)r->ny * sizeof(float));
    r->dy = malloc((size_t)r->ny * sizeof(float));
    if (!r->x || !r->dx || !r->y || !r->dy)
        return fm_fail(e, FM_ERR_INTERNAL, "out of memory");
    fm_fill_normal(r->x, r->nx, seed, 1, 0);
    fm_fill_normal(r->dy, r->ny, seed, 2, 0);
    return FM_OK;
}

static void fill(float *x, int64_t n, float v)
{
    for (int64_t i = 0; i < n; i++)
        x[i] = v;
}

static const char *prim_impl(dnnl_primitive_t p)
{
    const_dnnl_primitive_desc_t pd;
    const char *s = "none";
    if (p && dnnl_primitive_get_primitive_desc(p, &pd) == dnnl_success)
        dnnl_primitive_desc_query(pd, dnnl_query_impl_info_str, 0, &s);
    return s;
}

/* forward and backward of one case against the naive loops */
static int check_case(const conv_case *c)
{
    fm_err e = { 0 };
    rig r;
    int rc = 1;
    float *ry = NULL, *rdx = NULL, *rdw = NULL, *rdb = NULL;
    if (rig_init(&r, c, 11, &e) != FM_OK) {
        fprintf(stderr, "  %s: %s\n", c->label, e.msg);
        goto out;
    }
    fm_conv2d *l = &r.l;
    int64_t ho_want = (c->h + 2 * c->p - c->k) / c->s + 1, wo_want = (c->w + 2 * c->p - c->k) / c->s + 1;
    if (l->ho != ho_want || l->wo != wo_want) {
        fprintf(stderr, "  %s: output %lldx%lld, want %lldx%lld\n", c->label, (long long)l->ho, (long long)l->wo,
                (long long)ho_want, (long long)wo_want);
        goto out;
    }
    fprintf(stderr, "  %s: forward %s, backward-data %s, backward-weights %s\n", c->label, prim_impl(l->fwd),
            prim_impl(l->bwd_data), prim_impl(l->bwd_weights));
    ry = malloc((size_t)r.ny * sizeof(float));
    rdx = malloc((size_t)r.nx * sizeof(float));
    rdw = malloc((size_t)r.nw * sizeof(float));
    rdb = malloc((size_t)c->cout * sizeof(float));
    float *w = l->weight->w.data, *dw = l->weight->g.data;
    float *b = l->bias ? (float *)l->bias->w.data : NULL, *db = l->bias ? (float *)l->bias->g.data : NULL;

    /* twice, with new weights in between: forward must see the current weights */
    for (int round = 0; round < 2; round++) {
        if (round == 1) {
            for (int64_t i = 0; i < r.nw; i++)
                w[i] = -0.5f * w[i] + 0.01f * (float)(i % 7);
            if (b)
                for (int64_t i = 0; i < c->cout; i++)
                    b[i] = 0.1f * (float)i;
        }
        fill(r.y, r.ny, NAN);
        fill(r.dx, r.nx, 1e30f); /* overwrite semantics: stale values must vanish */
        fill(dw, r.nw, 1e30f);
        if (db)
            fill(db, c->cout, 1e30f);
        if (fm_conv2d_forward(l, r.x, r.y, &e) != FM_OK || fm_conv2d_backward(l, r.x, r.dy, r.dx, &e) != FM_OK) {
            fprintf(stderr, "  %s: %s\n", c->label, e.msg);
            goto out;
        }
        ref_forward(c, l->ho, l->wo, r.x, w, b, ry);
        ref_backward(c, l->ho, l->wo, r.x, w, r.dy, rdx, rdw, db ? rdb : NULL);
        double ey = fm_rel_err(r.y, ry, r.ny, 1e-12), edx = fm_rel_err(r.dx, rdx, r.nx, 1e-12);
        double edw = fm_rel_err(dw, rdw, r.nw, 1e-12), edb = db ? fm_rel_err(db, rdb, c->cout, 1e-12) : 0;
        fprintf(stderr, "  %s round %d: rel err y %.1e dx %.1e dw %.1e db %.1e\n", c->label, round, ey, edx, edw,
                edb);
        if (!(ey <= REF_TOL && edx <= REF_TOL && edw <= REF_TOL && edb <= REF_TOL)) {
            fprintf(stderr, "  %s: mismatch against the naive loop (tol %.0e)\n", c->label, REF_TOL);
            goto out;
        }
    }

    /* dx = NULL: parameter gradients only, dx untouched */
    fill(r.dx, r.nx, 7.0f);
    fill(dw, r.nw, 1e30f);
    if (fm_conv2d_backward(l, r.x, r.dy, NULL, &e) != FM_OK) {
        fprintf(stderr, "  %s: %s\n", c->label, e.msg);
        goto out;
    }
    double edw = fm_rel_err(dw, rdw, r.nw, 1e-12);
    int dx_untouched = 1;
    for (int64_t i = 0; i < r.nx; i++)
        dx_untouched &= r.dx[i] == 7.0f;
    if (!(edw <= REF_TOL) || !dx_untouched) {
        fprintf(stderr, "  %s: backward without dx: dw rel err %.1e, dx untouched %d\n", c->label, edw, dx_untouched);
        goto out;
    }
    rc = 0;
out:
    free(ry);
    free(rdx);
    free(rdw);
    free(rdb);
    rig_free(&r);
    return rc;
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
    int ok_names = fm_params_find(&r.p, "conv.weight") == r.l.weight && fm_params_find(&r.p, "conv.bias") == r.l.bias;
    int ok_shape = r.l.weight->w.ndim == 4 && r.l.weight->w.shape[0] == 5 && r.l.weight->w.shape[1] == 6 &&
                   r.l.weight->w.shape[2] == 3 && r.l.weight->w.shape[3] == 3;
    fm_conv2d bad;
    int rc_bad = fm_conv2d_init(&bad, &r.d, &r.p, &r.a, "big", 6, 5, 7, 1, 0, 0, 1, 4, 4, &e);
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

typedef struct gc_ctx {
    rig *r;
} gc_ctx;

static int gc_forward(void *ctx, fm_err *e)
{
    rig *r = ((gc_ctx *)ctx)->r;
    return fm_conv2d_forward(&r->l, r->x, r->y, e);
}

static int gc_backward(void *ctx, fm_err *e)
{
    rig *r = ((gc_ctx *)ctx)->r;
    return fm_conv2d_backward(&r->l, r->x, r->dy, r->dx, e);
}

static int gradcheck_case(const conv_case *c)
{
    fm_err e = { 0 };
    rig r;
    if (rig_init(&r, c, 5, &e) != FM_OK) {
        fprintf(stderr, "  %s: %s\n", c->label, e.msg);
        rig_free(&r);
        return 1;
    }
    gc_ctx ctx = { &r };
    fm_gc_op op = { .name = c->label, .ctx = &ctx, .forward = gc_forward, .backward = gc_backward,
                    .out = r.y, .dout = r.dy, .out_n = r.ny };
    op.vars[op.nvars++] = (fm_gc_var){ "x", r.x, r.dx, r.nx };
    op.vars[op.nvars++] = (fm_gc_var){ "weight", r.l.weight->w.data, r.l.weight->g.data, r.nw };
    if (r.l.bias)
        op.vars[op.nvars++] = (fm_gc_var){ "bias", r.l.bias->w.data, r.l.bias->g.data, c->cout };
    /* fp32, and the op is linear in each variable: eps = 1e-2, tol = 1e-2 */
    int rc = fm_gradcheck(&op, 1e-2, 1e-2, 60, &e);
    if (rc != FM_OK)
        fprintf(stderr, "  %s\n", e.msg);
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
    enum { WARM = 2, REPS = 10 };
    double tf = 0, tb = 0;
    int rc = FM_OK;
    for (int i = 0; i < WARM + REPS && rc == FM_OK; i++) {
        double t0 = fm_now();
        rc = fm_conv2d_forward(&r.l, r.x, r.y, &e);
        double t1 = fm_now();
        if (rc == FM_OK)
            rc = fm_conv2d_backward(&r.l, r.x, r.dy, r.dx, &e);
        double t2 = fm_now();
        if (i >= WARM) {
            tf += t1 - t0;
            tb += t2 - t1;
        }
    }
    tf /= REPS;
    tb /= REPS;
    printf("  timing conv N=128 8x8 128->128 3x3 s1 p1: forward %.2f ms (%.1f GFLOP/s), backward %.2f ms "
           "(%.1f GFLOP/s), scratchpad %zu KiB\n",
           1e3 * tf, fm_conv2d_flops_fwd(&r.l) / tf * 1e-9, 1e3 * tb, fm_conv2d_flops_bwd(&r.l, 1) / tb * 1e-9,
           r.l.scratch_bytes >> 10);
    printf("  impl: forward %s, backward-data %s, backward-weights %s; reorders: w %s, w-bwd %s, dw %s\n",
           prim_impl(r.l.fwd), prim_impl(r.l.bwd_data), prim_impl(r.l.bwd_weights), r.l.w_reorder ? "yes" : "no",
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
