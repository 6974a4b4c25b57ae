/* test_upconv.c - fm_upconv (nearest x2 + 3x3 conv as four 2x2 sub-pixel
 * convolutions) against a naive upsample-then-convolve loop (fp32, and bf16 on
 * rounded operands), a gradient check, the init and arena bound, and a timing
 * line against fm_upsample2x + fm_conv2d. */
#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "fm/conv.h"
#include "fm/rng.h"
#include "fm/timer.h"
#include "fm/updown.h"
#include "fm/upconv.h"
#include "gradcheck.h"
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
    fm_dnn d;
    fm_params p;
    fm_arena a;
    fm_upconv l;
    float *x, *y, *dy, *dx;
    int64_t nx, ny, nw;
} rig;

static void rig_free(rig *r)
{
    fm_upconv_free(&r->l);
    fm_arena_free(&r->a);
    fm_params_free(&r->p);
    fm_dnn_free(&r->d);
    free(r->x);
    free(r->y);
    free(r->dy);
    free(r->dx);
}

static int rig_init(rig *r, const up_case *c, uint64_t seed, int bf16, fm_err *e)
{
    memset(r, 0, sizeof *r);
    r->nw = c->cout * c->cin * 9;
    FM_TRY(fm_dnn_init(&r->d, e));
    r->d.bf16 = bf16;
    FM_TRY(fm_params_init(&r->p, 4, (size_t)(r->nw + c->cout + 64), seed, e));
    size_t bytes;
    FM_TRY(fm_upconv_arena_bytes(&r->d, c->cin, c->cout, c->bias, c->n, c->h, c->w, &bytes, e));
    FM_TRY(fm_arena_init(&r->a, bytes, e));
    FM_TRY(fm_upconv_init(&r->l, &r->d, &r->p, &r->a, "up", c->cin, c->cout, c->bias, c->n, c->h, c->w, e));
    r->nx = c->n * c->h * c->w * c->cin;
    r->ny = c->n * 4 * c->h * c->w * c->cout;
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
static int check_case(const up_case *c)
{
    fm_err e = { 0 };
    rig r;
    int rc = 1;
    float *ry = NULL, *rdx = NULL, *rdw = NULL, *rdb = NULL;
    if (rig_init(&r, c, 11, 0, &e) != FM_OK) {
        fprintf(stderr, "  %s: %s\n", c->label, e.msg);
        goto out;
    }
    fm_upconv *l = &r.l;
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
        if (fm_upconv_forward(l, r.x, r.y, &e) != FM_OK || fm_upconv_backward(l, r.x, r.dy, r.dx, &e) != FM_OK) {
            fprintf(stderr, "  %s: %s\n", c->label, e.msg);
            goto out;
        }
        ref_forward(c, r.x, w, b, ry);
        ref_backward(c, r.x, w, r.dy, rdx, rdw, db ? rdb : NULL);
        double ey = fm_rel_err(r.y, ry, r.ny, 1e-12), edx = fm_rel_err(r.dx, rdx, r.nx, 1e-12);
        double edw = fm_rel_err(dw, rdw, r.nw, 1e-12), edb = db ? fm_rel_err(db, rdb, c->cout, 1e-12) : 0;
        printf("  %s round %d: rel err y %.1e dx %.1e dw %.1e db %.1e\n", c->label, round, ey, edx, edw, edb);
        if (!(ey <= REF_TOL && edx <= REF_TOL && edw <= REF_TOL && edb <= REF_TOL)) {
            fprintf(stderr, "  %s: mismatch against the naive loop (tol %.0e)\n", c->label, REF_TOL);
            goto out;
        }
    }

    /* dx = NULL: parameter gradients only, dx untouched */
    fill(r.dx, r.nx, 7.0f);
    fill(dw, r.nw, 1e30f);
    if (fm_upconv_backward(l, r.x, r.dy, NULL, &e) != FM_OK) {
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
    int ok_names = fm_params_find(&r.p, "up.weight") == r.l.weight && fm_params_find(&r.p, "up.bias") == r.l.bias;
    int ok_shape = r.l.weight->w.ndim == 4 && r.l.weight->w.shape[0] == 5 && r.l.weight->w.shape[1] == 6 &&
                   r.l.weight->w.shape[2] == 3 && r.l.weight->w.shape[3] == 3;
    /* the same values as fm_conv2d registers under the same name and seed */
    fm_params p2;
    fm_conv2d cv;
    CHECK_OK(fm_params_init(&p2, 4, 1024, 3, &e), &e);
    fm_arena a2;
    CHECK_OK(fm_arena_init(&a2, 16 << 20, &e), &e);
    CHECK_OK(fm_conv2d_init(&cv, &r.d, &p2, &a2, "up", 6, 5, 3, 1, 1, 1, 1, 8, 8, &e), &e);
    int same = memcmp(cv.weight->w.data, w, (size_t)r.nw * sizeof(float)) == 0 &&
               memcmp(cv.bias->w.data, b, (size_t)c.cout * sizeof(float)) == 0;
    fm_conv2d_free(&cv);
    fm_arena_free(&a2);
    fm_params_free(&p2);
    fm_upconv bad;
    int rc_bad = fm_upconv_init(&bad, &r.d, &r.p, &r.a, "empty", 6, 0, 1, 1, 4, 4, &e);
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
            size_t bytes = 0, used = r.a.used, scratch = r.l.scratch_bytes;
            if (rc == FM_OK)
                rc = fm_upconv_arena_bytes(&r.d, cs[i].cin, cs[i].cout, cs[i].bias, cs[i].n, cs[i].h, cs[i].w,
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

static int gc_forward(void *ctx, fm_err *e)
{
    rig *r = ctx;
    return fm_upconv_forward(&r->l, r->x, r->y, e);
}

static int gc_backward(void *ctx, fm_err *e)
{
    rig *r = ctx;
    return fm_upconv_backward(&r->l, r->x, r->dy, r->dx, e);
}

static int gradcheck_case(const up_case *c)
{
    fm_err e = { 0 };
    rig r;
    if (rig_init(&r, c, 5, 0, &e) != FM_OK) {
        fprintf(stderr, "  %s: %s\n", c->label, e.msg);
        rig_free(&r);
        return 1;
    }
    fm_gc_op op = { .name = c->label, .ctx = &r, .forward = gc_forward, .backward = gc_backward,
                    .out = r.y, .dout = r.dy, .out_n = r.ny };
    op.vars[op.nvars++] = (fm_gc_var){ "x", r.x, r.dx, r.nx };
    op.vars[op.nvars++] = (fm_gc_var){ "weight", r.l.weight->w.data, r.l.weight->g.data, r.nw };
    if (r.l.bias)
        op.vars[op.nvars++] = (fm_gc_var){ "bias", r.l.bias->w.data, r.l.bias->g.data, c->cout };
    /* fp32, and the op is linear in each variable: eps = 1e-2, tol = 1e-2 */
    int rc = fm_gradcheck(&op, 1e-2, 1e-2, 80, &e);
    if (rc != FM_OK)
        fprintf(stderr, "  %s\n", e.msg);
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

static void round_bf16(float *x, int64_t n)
{
    for (int64_t i = 0; i < n; i++)
        x[i] = fm_bf16_to_f32(fm_f32_to_bf16(x[i]));
}

/* Worst relative error of y, dx, dW and db of rig a against the arrays of b. */
static double worst(const rig *a, const float *y, const float *dx, const float *dw, const float *db, const char **what)
{
    double w = fm_rel_err(a->y, y, (long)a->ny, 1e-12), r;
    *what = "y";
    if ((r = fm_rel_err(a->dx, dx, (long)a->nx, 1e-12)) > w)
        w = r, *what = "dx";
    if ((r = fm_rel_err(a->l.weight->g.data, dw, (long)a->nw, 1e-12)) > w)
        w = r, *what = "weight grad";
    if (a->l.bias && (r = fm_rel_err(a->l.bias->g.data, db, (long)a->l.cout, 1e-12)) > w)
        w = r, *what = "bias grad";
    return w;
}

static int run_rig(rig *r, fm_err *e)
{
    FM_TRY(fm_upconv_forward(&r->l, r->x, r->y, e));
    return fm_upconv_backward(&r->l, r->x, r->dy, r->dx, e);
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
    memcpy(f32.p.data, b16.p.data, b16.p.numel * sizeof(float));
    CHECK_OK(run_rig(&b16, &e), &e);
    CHECK_OK(run_rig(&f32, &e), &e);
    const char *what;
    double vs_fp32 = worst(&b16, f32.y, f32.dx, f32.l.weight->g.data,
                           f32.l.bias ? (const float *)f32.l.bias->g.data : NULL, &what);
    printf("  %s: bf16 vs fp32: worst rel err %.2e (%s)\n", c->label, vs_fp32, what);
    CHECK(vs_fp32 > 1e-5, "%s: bf16 results equal fp32 (%.2e): bf16 was not used", c->label, vs_fp32);
    CHECK(vs_fp32 < 3e-2, "%s: bf16 too far from fp32: %.2e in %s", c->label, vs_fp32, what);

    /* the naive reference on the rounded operands (f32's x and dy, rounded) */
    float *ry = malloc((size_t)b16.ny * sizeof(float)), *rdx = malloc((size_t)b16.nx * sizeof(float));
    float *rdw = malloc((size_t)b16.nw * sizeof(float)), *rdb = malloc((size_t)c->cout * sizeof(float));
    CHECK(ry && rdx && rdw && rdb, "out of memory");
    round_bf16(f32.x, f32.nx);
    round_bf16(f32.dy, f32.ny);
    const float *b = b16.l.bias ? (const float *)b16.l.bias->w.data : NULL;
    ref_forward(c, f32.x, w, b, ry);
    ref_backward(c, f32.x, w, f32.dy, rdx, rdw, b ? rdb : NULL);
    if (b && b16.l.wb.xp) /* fm_wgrad16's layer sums the fp32 dy for the bias gradient: plain fp32's */
        memcpy(rdb, f32.l.bias->g.data, (size_t)c->cout * sizeof(float));
    double vs_rounded = worst(&b16, ry, rdx, rdw, rdb, &what);
    printf("  %s: bf16 vs the reference on bf16-rounded operands: worst rel err %.2e (%s)\n", c->label, vs_rounded,
           what);
    free(ry), free(rdx), free(rdw), free(rdb);
    CHECK(vs_rounded < 1e-4, "%s: bf16 is not fp32 arithmetic on rounded operands: %.2e in %s", c->label,
          vs_rounded, what);

    /* backward given x after a forward on another buffer: rounds x again */
    float *g0 = malloc(b16.p.numel * sizeof(float)), *x2 = malloc((size_t)b16.nx * sizeof(float));
    CHECK(g0 && x2, "out of memory");
    memcpy(g0, b16.p.grad, b16.p.numel * sizeof(float));
    fm_fill_normal(x2, b16.nx, 6, 1, 0);
    CHECK_OK(fm_upconv_forward(&b16.l, x2, b16.y, &e), &e);
    CHECK_OK(fm_upconv_backward(&b16.l, b16.x, b16.dy, b16.dx, &e), &e);
    double eg = fm_rel_err(b16.p.grad, g0, (long)b16.p.numel, 1e-12);
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

static int test_timing(void)
{
    fm_err e = { 0 };
    rig r;
    up_case c = { "timing", 128, 4, 4, 128, 128, 1 };
    CHECK_OK(rig_init(&r, &c, 9, 0, &e), &e);
    /* the unfused pair: upsample into u, conv on u */
    fm_conv2d cv;
    fm_params p2;
    fm_arena a2;
    float *u = malloc((size_t)r.ny * sizeof(float)), *du = malloc((size_t)r.ny * sizeof(float));
    CHECK(u && du, "out of memory");
    CHECK_OK(fm_params_init(&p2, 4, (size_t)(r.nw + 256), 9, &e), &e);
    CHECK_OK(fm_arena_init(&a2, 64 << 20, &e), &e);
    CHECK_OK(fm_conv2d_init(&cv, &r.d, &p2, &a2, "up", c.cin, c.cout, 3, 1, 1, 1, c.n, 2 * c.h, 2 * c.w, &e), &e);
    enum { WARM = 2, REPS = 8 };
    double t[4] = { 0 };
    int rc = FM_OK;
    for (int i = 0; i < WARM + REPS && rc == FM_OK; i++) {
        double t0 = fm_now();
        rc = fm_upconv_forward(&r.l, r.x, r.y, &e);
        double t1 = fm_now();
        if (rc == FM_OK)
            rc = fm_upconv_backward(&r.l, r.x, r.dy, r.dx, &e);
        double t2 = fm_now();
        fm_upsample2x_forward(r.x, u, (int)c.n, (int)c.h, (int)c.w, (int)c.cin);
        if (rc == FM_OK)
            rc = fm_conv2d_forward(&cv, u, r.y, &e);
        double t3 = fm_now();
        if (rc == FM_OK)
            rc = fm_conv2d_backward(&cv, u, r.dy, du, &e);
        fm_upsample2x_backward(du, r.dx, (int)c.n, (int)c.h, (int)c.w, (int)c.cin);
        double t4 = fm_now();
        if (i >= WARM)
            t[0] += t1 - t0, t[1] += t2 - t1, t[2] += t3 - t2, t[3] += t4 - t3;
    }
    for (int k = 0; k < 4; k++)
        t[k] *= 1e3 / REPS;
    printf("  timing N=128 4x4 -> 8x8 128->128: upconv forward %.2f ms backward %.2f ms (%.1f GFLOP/s); "
           "upsample + conv forward %.2f ms backward %.2f ms\n",
           t[0], t[1], (fm_upconv_flops_fwd(&r.l) + fm_upconv_flops_bwd(&r.l, 1)) / (t[0] + t[1]) * 1e-6, t[2],
           t[3]);
    printf("  impl: forward %s, backward-data %s, backward-weights %s; scratchpad %zu KiB\n", prim_impl(r.l.fwd[0]),
           prim_impl(r.l.bwd_data[0]), prim_impl(r.l.bwd_weights[0]), r.l.scratch_bytes >> 10);
    fm_conv2d_free(&cv);
    fm_arena_free(&a2);
    fm_params_free(&p2);
    free(u);
    free(du);
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
