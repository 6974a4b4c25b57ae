/* test_dit_layers.c - the small layers of the DiT: LayerNorm (affine or not),
 * GELU (tanh), adaLN modulate and gated residual, patchify/unpatchify. Each
 * fast loop against a naive double reference (forward and backward, including
 * the in-place/aliasing cases the model uses), and a finite-difference
 * gradient check on every input and parameter. */
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "fm/arena.h"
#include "fm/gelu.h"
#include "fm/layernorm.h"
#include "fm/modulate.h"
#include "fm/params.h"
#include "fm/patch.h"
#include "fm/rng.h"
#include "fixture.h"
#include "gradcheck.h"
#include "test.h"

/* ---- LayerNorm ---------------------------------------------------------------- */

/* Naive LayerNorm in double: y, dx, dweight, dbias (w, b NULL = no affine). */
static void ref_layernorm(const float *x, const float *w, const float *b, const float *dy, long rows, long d,
                          double eps, float *y, float *dx, float *dw, float *db)
{
    double *xh = malloc((size_t)d * sizeof(double));
    if (dw)
        for (long j = 0; j < d; j++)
            dw[j] = db[j] = 0;
    double *adw = calloc((size_t)d, sizeof(double)), *adb = calloc((size_t)d, sizeof(double));
    for (long r = 0; r < rows; r++) {
        const float *xr = x + r * d, *g = dy + r * d;
        double mean = 0, var = 0;
        for (long j = 0; j < d; j++)
            mean += xr[j];
        mean /= d;
        for (long j = 0; j < d; j++)
            var += (xr[j] - mean) * (xr[j] - mean);
        var /= d;
        const double rstd = 1 / sqrt(var + eps);
        double mg = 0, mgx = 0;
        for (long j = 0; j < d; j++) {
            xh[j] = (xr[j] - mean) * rstd;
            y[r * d + j] = (float)(w ? xh[j] * w[j] + b[j] : xh[j]);
            const double gj = w ? (double)g[j] * w[j] : g[j];
            mg += gj / d;
            mgx += gj * xh[j] / d;
            adw[j] += (double)g[j] * xh[j];
            adb[j] += g[j];
        }
        for (long j = 0; j < d; j++) {
            const double gj = w ? (double)g[j] * w[j] : g[j];
            dx[r * d + j] = (float)(rstd * (gj - mg - xh[j] * mgx));
        }
    }
    if (dw)
        for (long j = 0; j < d; j++) {
            dw[j] = (float)adw[j];
            db[j] = (float)adb[j];
        }
    free(xh);
    free(adw);
    free(adb);
}

typedef struct ln_fx {
    fm_params p;
    fm_arena a;
    fm_layernorm l;
    long rows, d, n;
    float *x, *y, *dy, *dx;
} ln_fx;

static void ln_free(ln_fx *f)
{
    fm_layernorm_free(&f->l);
    fm_arena_free(&f->a);
    fm_params_free(&f->p);
    free(f->x);
    free(f->y);
    free(f->dy);
    free(f->dx);
}

/* x ~ N(0.5, 2^2) (a non-zero mean), dy ~ N(0, 1); with affine, weight
 * ~ N(1, 0.5^2) and bias ~ N(0, 0.5^2) instead of the 1 / 0 init. */
static int ln_init(ln_fx *f, long rows, long d, int affine, fm_err *e)
{
    memset(f, 0, sizeof *f);
    f->rows = rows, f->d = d, f->n = rows * d;
    FM_TRY(fm_params_init(&f->p, 4, (size_t)(2 * d + 32), 3, e));
    FM_TRY(fm_arena_init(&f->a, (size_t)(2 * rows) * sizeof(float) + 4096, e));
    FM_TRY(fm_layernorm_init(&f->l, &f->p, &f->a, "norm", d, affine, 1e-6f, rows, e));
    if (affine) {
        if (fm_params_find(&f->p, "norm.weight") != f->l.weight || fm_params_find(&f->p, "norm.bias") != f->l.bias)
            return fm_fail(e, FM_ERR_INTERNAL, "layernorm parameters not named norm.weight / norm.bias");
        float *w = f->l.weight->w.data, *b = f->l.bias->w.data;
        for (long j = 0; j < d; j++)
            if (w[j] != 1.0f || b[j] != 0.0f)
                return fm_fail(e, FM_ERR_INTERNAL, "layernorm init is not weight 1, bias 0");
        fm_fill_normal(w, d, 5, 1, 0);
        fm_fill_normal(b, d, 5, 2, 0);
        for (long j = 0; j < d; j++)
            w[j] = 1.0f + 0.5f * w[j], b[j] *= 0.5f;
    } else if (f->p.n != 0) {
        return fm_fail(e, FM_ERR_INTERNAL, "a layernorm without affine registered parameters");
    }
    f->x = fm_fx_randn(f->n, 31, 1, 2.0f);
    for (long i = 0; i < f->n; i++)
        f->x[i] += 0.5f;
    f->dy = fm_fx_randn(f->n, 31, 2, 1.0f);
    f->y = fm_fx_zeros(f->n);
    f->dx = fm_fx_zeros(f->n);
    return FM_OK;
}

static int ln_case(long rows, long d, int affine)
{
    fm_err e = { 0 };
    ln_fx f;
    int rc = ln_init(&f, rows, d, affine, &e);
    float *ry = fm_fx_zeros(rows * d), *rdx = fm_fx_zeros(rows * d), *rdw = fm_fx_zeros(d), *rdb = fm_fx_zeros(d), *y2 = fm_fx_zeros(rows * d);
    double err[5] = { 0 };
    if (rc == FM_OK) {
        rc = fm_layernorm_forward(&f.l, f.x, f.y, &e);
        if (rc == FM_OK)
            rc = fm_layernorm_apply(&f.l, f.x, y2, &e);
        if (rc == FM_OK)
            rc = fm_layernorm_backward(&f.l, f.x, f.dy, f.dx, &e);
    }
    if (rc == FM_OK) {
        ref_layernorm(f.x, affine ? f.l.weight->w.data : NULL, affine ? f.l.bias->w.data : NULL, f.dy, rows, d,
                      1e-6, ry, rdx, affine ? rdw : NULL, rdb);
        err[0] = fm_rel_err(f.y, ry, f.n, 1e-12);
        err[1] = fm_rel_err(f.dx, rdx, f.n, 1e-12);
        err[2] = memcmp(f.y, y2, (size_t)f.n * sizeof(float)) ? INFINITY : 0;  // apply == forward, bitwise
        if (affine) {
            err[3] = fm_rel_err(f.l.weight->g.data, rdw, d, 1e-12);
            err[4] = fm_rel_err(f.l.bias->g.data, rdb, d, 1e-12);
        }
        /* in place: dx = dy (the model's use), and y = x */
        if (fm_layernorm_backward(&f.l, f.x, f.dy, f.dy, &e) == FM_OK &&
            memcmp(f.dy, f.dx, (size_t)f.n * sizeof(float)))
            err[1] = INFINITY;
        if (fm_layernorm_forward(&f.l, f.x, f.x, &e) == FM_OK && memcmp(f.x, f.y, (size_t)f.n * sizeof(float)))
            err[0] = INFINITY;
    }
    fprintf(stderr, "  layernorm [%ld, %ld]%s vs double: y %.1e dx %.1e apply %s dweight %.1e dbias %.1e\n", rows, d,
            affine ? " affine" : "", err[0], err[1], err[2] == 0 ? "bitwise" : "DIFFERS", err[3], err[4]);
    ln_free(&f);
    free(ry), free(rdx), free(rdw), free(rdb), free(y2);
    CHECK_OK(rc, &e);
    for (int i = 0; i < 5; i++)
        CHECK(err[i] <= 2e-6, "layernorm [%ld, %ld] error %d: %.2e", rows, d, i, err[i]);
    return 0;
}

/* Odd sizes, one row, and enough rows for the threaded path. */
static int test_layernorm_vs_naive(void)
{
    CHECK(ln_case(37, 48, 0) == 0, "no affine");
    CHECK(ln_case(37, 48, 1) == 0, "affine");
    CHECK(ln_case(1, 7, 1) == 0, "one row");
    CHECK(ln_case(2000, 96, 1) == 0, "threaded, affine");
    CHECK(ln_case(2000, 130, 0) == 0, "threaded, no affine, odd width");
    return 0;
}

static int ln_gc_fwd(void *ctx, fm_err *e)
{
    ln_fx *f = ctx;
    return fm_layernorm_forward(&f->l, f->x, f->y, e);
}

static int ln_gc_bwd(void *ctx, fm_err *e)
{
    ln_fx *f = ctx;
    return fm_layernorm_backward(&f->l, f->x, f->dy, f->dx, e);
}

/* eps = 1e-2, tol = 1e-2 (fp32 forward; x has std 2, so the step is small
 * against the row spread). Every input and parameter, with and without affine. */
static int test_layernorm_gradcheck(void)
{
    for (int affine = 0; affine <= 1; affine++) {
        fm_err e = { 0 };
        ln_fx f;
        int rc = ln_init(&f, 6, 10, affine, &e);
        if (rc == FM_OK) {
            fm_gc_op op = { .name = affine ? "layernorm affine" : "layernorm", .ctx = &f, .forward = ln_gc_fwd,
                            .backward = ln_gc_bwd, .out = f.y, .dout = f.dy, .out_n = f.n,
                            .vars = { { "x", f.x, f.dx, f.n } }, .nvars = 1 };
            if (affine) {
                op.vars[1] = (fm_gc_var){ "weight", f.l.weight->w.data, f.l.weight->g.data, f.d };
                op.vars[2] = (fm_gc_var){ "bias", f.l.bias->w.data, f.l.bias->g.data, f.d };
                op.nvars = 3;
            }
            rc = fm_gradcheck(&op, 1e-2, 1e-2, 200, &e);
        }
        ln_free(&f);
        CHECK_OK(rc, &e);
    }
    return 0;
}

static int test_layernorm_bad_sizes(void)
{
    fm_err e = { 0 };
    fm_arena a;
    fm_layernorm l;
    CHECK_OK(fm_arena_init(&a, 4096, &e), &e);
    int rc1 = fm_layernorm_init(&l, NULL, &a, "blocks.0.norm", 0, 0, 1e-6f, 4, &e);
    int rc2 = fm_layernorm_init(&l, NULL, &a, "blocks.1.norm", 8, 1, 1e-6f, 4, &e);  // affine needs params
    fm_arena_free(&a);
    CHECK(rc1 == FM_ERR_USAGE, "dim 0 gave %d", rc1);
    CHECK(rc2 == FM_ERR_USAGE && strstr(e.msg, "blocks.1.norm"), "affine without params gave %d: %s", rc2, e.msg);
    return 0;
}

/* ---- GELU ------------------------------------------------------------------------ */

static int test_gelu_vs_naive(void)
{
    const long n = 100003; /* odd: a vector tail, and above the parallel threshold */
    float *x = fm_fx_randn(n, 31, 3, 4.0f), *dy = fm_fx_randn(n, 31, 4, 1.0f);
    float *y = fm_fx_zeros(n), *dx = fm_fx_zeros(n);
    float *ry = fm_fx_zeros(n), *rdx = fm_fx_zeros(n);
    x[0] = -30.0f, x[1] = 30.0f, x[2] = 0.0f, x[3] = -8.0f;  // tails and the origin
    fm_gelu_forward(x, y, n);
    fm_gelu_backward(x, dy, dx, n);
    const double k0 = sqrt(2.0 / 3.14159265358979323846), k1 = 0.044715;
    double worst_y = 0, worst_dx = 0;
    for (long i = 0; i < n; i++) {
        const double v = x[i], u = k0 * (v + k1 * v * v * v), th = tanh(u);
        const double gy = 0.5 * v * (1 + th);  // torch's formula, in double
        const double gd = 0.5 * (1 + th) + 0.5 * v * (1 - th * th) * k0 * (1 + 3 * k1 * v * v);
        ry[i] = (float)gy;
        rdx[i] = (float)(dy[i] * gd);
        /* y: elementwise relative error (floor 1e-6), which covers the far tails;
         * gelu' crosses zero near x = -0.75, so for dx the absolute error of gelu' */
        worst_y = fmax(worst_y, fabs(y[i] - gy) / fmax(fabs(gy), 1e-6));
        worst_dx = fmax(worst_dx, fabs(dx[i] - dy[i] * gd) / fmax(fabs((double)dy[i]), 1e-30));
    }
    double ey = fm_rel_err(y, ry, n, 1e-12), edx = fm_rel_err(dx, rdx, n, 1e-12);
    /* in place, as the model runs it: dx = dy */
    memcpy(ry, dy, (size_t)n * sizeof(float));
    fm_gelu_backward(x, ry, ry, n);
    int same = !memcmp(ry, dx, (size_t)n * sizeof(float));
    fprintf(stderr, "  gelu(tanh) vs double: y %.2e (elementwise %.2e), dx %.2e (gelu' abs %.2e), in place %s\n", ey,
            worst_y, edx, worst_dx, same ? "bitwise" : "DIFFERS");
    free(x), free(dy), free(y), free(dx), free(ry), free(rdx);
    CHECK(ey <= 1e-6 && edx <= 1e-6, "gelu error y %.2e dx %.2e", ey, edx);
    CHECK(worst_y <= 1e-5 && worst_dx <= 1e-6, "gelu elementwise error y %.2e dx %.2e", worst_y, worst_dx);
    CHECK(same, "gelu backward in place differs");
    return 0;
}

typedef struct ew_fx {
    float *x, *y, *dy, *dx;
    float *v, *dv;  /* per-sample vectors [B, ld] */
    float *h, *dh;
    int b, c;
    long t, ld, n;
    int which;      /* 0 gelu, 1 modulate, 2 gate residual */
} ew_fx;

static int ew_fwd(void *ctx, fm_err *e)
{
    (void)e;
    ew_fx *f = ctx;
    if (f->which == 0)
        fm_gelu_forward(f->x, f->y, f->n);
    else if (f->which == 1)
        fm_modulate_forward(f->x, f->v + 1, f->v + 1 + f->c, f->ld, f->y, f->b, f->t, f->c);
    else
        fm_gate_residual_forward(f->x, f->v + 2, f->ld, f->h, f->y, f->b, f->t, f->c);
    return FM_OK;
}

static int ew_bwd(void *ctx, fm_err *e)
{
    (void)e;
    ew_fx *f = ctx;
    if (f->which == 0) {
        fm_gelu_backward(f->x, f->dy, f->dx, f->n);
    } else if (f->which == 1) {
        fm_modulate_backward(f->x, f->v + 1 + f->c, f->dy, f->ld, f->dx, f->dv + 1, f->dv + 1 + f->c, f->b, f->t,
                             f->c);
    } else {
        fm_gate_residual_backward(f->h, f->v + 2, f->ld, f->dy, f->dh, f->dv + 2, f->b, f->t, f->c);
        memcpy(f->dx, f->dy, (size_t)f->n * sizeof(float));  // identity path
    }
    return FM_OK;
}

/* B = 2 samples of T = 5 tokens, C = 6; the vectors sit at column offsets 1
 * and 1 + C (modulate) or 2 (gate) of a [B, 2C + 3] matrix, so the strides are
 * exercised; its unused columns must keep a zero gradient. */
static void ew_init(ew_fx *f, int which)
{
    memset(f, 0, sizeof *f);
    f->b = 2, f->t = 5, f->c = 6, f->ld = 2 * 6 + 3, f->which = which;
    f->n = (long)f->b * f->t * f->c;
    f->x = fm_fx_randn(f->n, 31, 10, 1.5f);
    f->dy = fm_fx_randn(f->n, 31, 11, 1.0f);
    f->h = fm_fx_randn(f->n, 31, 12, 1.0f);
    f->v = fm_fx_randn(f->b * f->ld, 31, 13, 0.7f);
    f->y = fm_fx_zeros(f->n), f->dx = fm_fx_zeros(f->n), f->dh = fm_fx_zeros(f->n), f->dv = fm_fx_zeros(f->b * f->ld);
}

static void ew_free(ew_fx *f)
{
    free(f->x), free(f->y), free(f->dy), free(f->dx), free(f->v), free(f->dv), free(f->h), free(f->dh);
}

/* eps = 1e-2, tol = 1e-2 (fp32). GELU: x. */
static int test_gelu_gradcheck(void)
{
    fm_err e = { 0 };
    ew_fx f;
    ew_init(&f, 0);
    fm_gc_op op = { .name = "gelu", .ctx = &f, .forward = ew_fwd, .backward = ew_bwd, .out = f.y, .dout = f.dy,
                    .out_n = f.n, .vars = { { "x", f.x, f.dx, f.n } }, .nvars = 1 };
    int rc = fm_gradcheck(&op, 1e-2, 1e-2, 200, &e);
    ew_free(&f);
    CHECK_OK(rc, &e);
    return 0;
}

/* ---- modulate and gated residual ----------------------------------------------------- */

static int test_modulate_vs_naive(void)
{
    /* big enough for the threaded path: B = 3, T = 700, C = 200 (4 column blocks, a tail) */
    const int b = 3, c = 200;
    const long t = 700, ld = 3L * c, n = b * t * c;
    float *x = fm_fx_randn(n, 31, 20, 1.0f), *h = fm_fx_randn(n, 31, 21, 1.0f);
    float *dy = fm_fx_randn(n, 31, 22, 1.0f), *v = fm_fx_randn(b * ld, 31, 23, 0.5f);
    float *y = fm_fx_zeros(n), *dx = fm_fx_zeros(n), *dv = fm_fx_zeros(b * ld);
    float *ry = fm_fx_zeros(n), *rdx = fm_fx_zeros(n), *rdv = fm_fx_zeros(b * ld);
    float *g = fm_fx_zeros(n);
    const float *shift = v, *scale = v + c, *gate = v + 2 * c;
    /* modulate */
    fm_modulate_forward(x, shift, scale, ld, y, b, t, c);
    fm_modulate_backward(x, scale, dy, ld, dx, dv, dv + c, b, t, c);
    for (int s = 0; s < b; s++)
        for (int k = 0; k < c; k++) {
            double ash = 0, asc = 0;
            for (long i = 0; i < t; i++) {
                const long o = ((long)s * t + i) * c + k;
                ry[o] = (float)((double)x[o] * (1.0 + scale[s * ld + k]) + shift[s * ld + k]);
                rdx[o] = (float)((double)dy[o] * (1.0 + scale[s * ld + k]));
                ash += dy[o];
                asc += (double)dy[o] * x[o];
            }
            rdv[s * ld + k] = (float)ash;
            rdv[s * ld + c + k] = (float)asc;
        }
    double e_y = fm_rel_err(y, ry, n, 1e-12), e_dx = fm_rel_err(dx, rdx, n, 1e-12);
    double e_dv = fm_rel_err(dv, rdv, b * ld, 1e-12);
    /* in place (y = x, dx = dy), as the model runs them */
    memcpy(g, dy, (size_t)n * sizeof(float));
    fm_modulate_backward(x, scale, g, ld, g, dv, dv + c, b, t, c);
    int same = !memcmp(g, dx, (size_t)n * sizeof(float));
    memcpy(g, x, (size_t)n * sizeof(float));
    fm_modulate_forward(g, shift, scale, ld, g, b, t, c);
    same = same && !memcmp(g, y, (size_t)n * sizeof(float));
    /* gated residual */
    memset(rdv, 0, (size_t)(b * ld) * sizeof(float));
    memset(dv, 0, (size_t)(b * ld) * sizeof(float));
    fm_gate_residual_forward(x, gate, ld, h, y, b, t, c);
    fm_gate_residual_backward(h, gate, ld, dy, dx, dv + 2 * c, b, t, c);
    for (int s = 0; s < b; s++)
        for (int k = 0; k < c; k++) {
            double ag = 0;
            for (long i = 0; i < t; i++) {
                const long o = ((long)s * t + i) * c + k;
                ry[o] = (float)((double)x[o] + (double)gate[s * ld + k] * h[o]);
                rdx[o] = (float)((double)dy[o] * gate[s * ld + k]);
                ag += (double)dy[o] * h[o];
            }
            rdv[s * ld + 2 * c + k] = (float)ag;
        }
    double g_y = fm_rel_err(y, ry, n, 1e-12), g_dh = fm_rel_err(dx, rdx, n, 1e-12);
    double g_dv = fm_rel_err(dv, rdv, b * ld, 1e-12);
    memcpy(g, x, (size_t)n * sizeof(float));
    fm_gate_residual_forward(g, gate, ld, h, g, b, t, c);
    same = same && !memcmp(g, y, (size_t)n * sizeof(float));
    memcpy(g, dy, (size_t)n * sizeof(float));
    fm_gate_residual_backward(h, gate, ld, g, g, dv + 2 * c, b, t, c);
    same = same && !memcmp(g, dx, (size_t)n * sizeof(float));
    fprintf(stderr,
            "  modulate vs double: y %.1e dx %.1e dshift/dscale %.1e; gate residual: y %.1e dh %.1e dgate %.1e; "
            "in place %s\n",
            e_y, e_dx, e_dv, g_y, g_dh, g_dv, same ? "bitwise" : "DIFFERS");
    free(x), free(h), free(dy), free(v), free(y), free(dx), free(dv), free(ry), free(rdx), free(rdv), free(g);
    CHECK(fmax(fmax(e_y, e_dx), e_dv) <= 1e-6, "modulate error");
    CHECK(fmax(fmax(g_y, g_dh), g_dv) <= 1e-6, "gate residual error");
    CHECK(same, "in-place results differ");
    return 0;
}

/* eps = 1e-2, tol = 1e-2 (fp32). modulate: x and the [B, 2C + 3] matrix
 * holding shift and scale; gated residual: x, h and the matrix holding gate. */
static int test_modulate_gradcheck(void)
{
    for (int which = 1; which <= 2; which++) {
        fm_err e = { 0 };
        ew_fx f;
        ew_init(&f, which);
        fm_gc_op op = { .name = which == 1 ? "modulate" : "gate_residual", .ctx = &f, .forward = ew_fwd,
                        .backward = ew_bwd, .out = f.y, .dout = f.dy, .out_n = f.n,
                        .vars = { { "x", f.x, f.dx, f.n }, { "vectors", f.v, f.dv, f.b * f.ld } }, .nvars = 2 };
        if (which == 2)
            op.vars[op.nvars++] = (fm_gc_var){ "h", f.h, f.dh, f.n };
        int rc = fm_gradcheck(&op, 1e-2, 1e-2, 200, &e);
        ew_free(&f);
        CHECK_OK(rc, &e);
    }
    return 0;
}

/* ---- patchify --------------------------------------------------------------------- */

/* Patchify against the index formula of patch.h, unpatchify as its inverse,
 * and bad sizes. */
static int test_patch_vs_naive(void)
{
    static const int cases[][5] = { { 2, 8, 8, 4, 2 }, { 3, 6, 6, 3, 3 }, { 1, 4, 4, 1, 1 }, { 2, 8, 8, 1, 4 },
                                    { 2, 64, 64, 16, 2 } };
    for (size_t ci = 0; ci < sizeof cases / sizeof *cases; ci++) {
        const int b = cases[ci][0], h = cases[ci][1], w = cases[ci][2], c = cases[ci][3], p = cases[ci][4];
        const long n = (long)b * h * w * c, P = (long)p * p * c, wp = w / p;
        float *x = fm_fx_randn(n, 31, 30, 1.0f), *tok = fm_fx_zeros(n), *back = fm_fx_zeros(n);
        fm_patchify(x, tok, b, h, w, c, p);
        fm_unpatchify(tok, back, b, h, w, c, p);
        long bad = 0;
        for (int s = 0; s < b; s++)
            for (int yy = 0; yy < h; yy++)
                for (int xx = 0; xx < w; xx++)
                    for (int ch = 0; ch < c; ch++) {
                        const long tk = (long)s * (h / p) * wp + (yy / p) * wp + xx / p;
                        const long f = ((long)(yy % p) * p + xx % p) * c + ch;
                        bad += tok[tk * P + f] != x[(((long)s * h + yy) * w + xx) * c + ch];
                    }
        int inverse = !memcmp(back, x, (size_t)n * sizeof(float));
        free(x), free(tok), free(back);
        CHECK(bad == 0, "patchify [%d, %d, %d, %d] p=%d: %ld misplaced values", b, h, w, c, p, bad);
        CHECK(inverse, "unpatchify(patchify(x)) != x for [%d, %d, %d, %d] p=%d", b, h, w, c, p);
    }
    fm_err e = { 0 };
    CHECK(fm_patch_check(8, 8, 4, 2, &e) == FM_OK, "8x8 p=2 rejected");
    CHECK(fm_patch_check(8, 6, 4, 4, &e) == FM_ERR_USAGE && strstr(e.msg, "8x6x4"), "8x6 p=4: %s", e.msg);
    CHECK(fm_patch_check(8, 8, 4, 0, &e) == FM_ERR_USAGE, "p=0 accepted");
    return 0;
}

typedef struct patch_fx {
    float *x, *y, *dy, *dx;
    int b, h, w, c, p, inverse;
    long n;
} patch_fx;

static int patch_fwd(void *ctx, fm_err *e)
{
    (void)e;
    patch_fx *f = ctx;
    if (f->inverse)
        fm_unpatchify(f->x, f->y, f->b, f->h, f->w, f->c, f->p);
    else
        fm_patchify(f->x, f->y, f->b, f->h, f->w, f->c, f->p);
    return FM_OK;
}

/* The backward of each direction is the other one. */
static int patch_bwd(void *ctx, fm_err *e)
{
    (void)e;
    patch_fx *f = ctx;
    if (f->inverse)
        fm_patchify(f->dy, f->dx, f->b, f->h, f->w, f->c, f->p);
    else
        fm_unpatchify(f->dy, f->dx, f->b, f->h, f->w, f->c, f->p);
    return FM_OK;
}

/* eps = 1e-2, tol = 1e-2; x of patchify [2, 6, 4, 3] with p = 2 and the
 * tokens of unpatchify. Every entry. */
static int test_patch_gradcheck(void)
{
    for (int inv = 0; inv <= 1; inv++) {
        fm_err e = { 0 };
        patch_fx f = { .b = 2, .h = 6, .w = 4, .c = 3, .p = 2, .inverse = inv, .n = 2 * 6 * 4 * 3 };
        f.x = fm_fx_randn(f.n, 31, 40, 1.0f);
        f.y = fm_fx_zeros(f.n), f.dy = fm_fx_zeros(f.n), f.dx = fm_fx_zeros(f.n);
        fm_gc_op op = { .name = inv ? "unpatchify" : "patchify", .ctx = &f, .forward = patch_fwd,
                        .backward = patch_bwd, .out = f.y, .dout = f.dy, .out_n = f.n,
                        .vars = { { inv ? "tokens" : "x", f.x, f.dx, f.n } }, .nvars = 1 };
        int rc = fm_gradcheck(&op, 1e-2, 1e-2, 1000, &e);
        free(f.x), free(f.y), free(f.dy), free(f.dx);
        CHECK_OK(rc, &e);
    }
    return 0;
}

int main(int argc, char **argv)
{
    static const fm_test tests[] = {
        TEST(test_layernorm_vs_naive), TEST(test_layernorm_gradcheck), TEST(test_layernorm_bad_sizes),
        TEST(test_gelu_vs_naive),      TEST(test_gelu_gradcheck),      TEST(test_modulate_vs_naive),
        TEST(test_modulate_gradcheck), TEST(test_patch_vs_naive),      TEST(test_patch_gradcheck),
    };
    return fm_test_main("nn/dit_layers", tests, (int)(sizeof tests / sizeof *tests), argc, argv);
}
