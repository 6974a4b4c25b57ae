/* test_elementwise.c - SiLU, nearest x2 upsampling, concat, add helpers and
 * the MSE loss: fast loops against naive references, and gradient checks. */
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "fm/act.h"
#include "fm/loss.h"
#include "fm/rng.h"
#include "fm/tensorops.h"
#include "fm/updown.h"
#include "gradcheck.h"
#include "test.h"

static float *randn(long n, uint64_t stream)
{
    float *x = malloc((size_t)n * sizeof(float));
    fm_fill_normal(x, n, 21, stream, 0);
    return x;
}

/* ---- SiLU ---- */

static int test_expf_accuracy(void)
{
    double worst = 0, at = 0;
    for (int i = 0; i <= 2000000; i++) {
        float x = -87.0f + 175.0f * (float)i / 2000000.0f;
        double ref = exp((double)x), err = fabs(fm_expf_simd(x) - ref) / ref;
        if (err > worst) {
            worst = err;
            at = x;
        }
    }
    fprintf(stderr, "  fm_expf_simd on [-87, 88]: worst relative error %.2e (%.1f ulp) at %g\n", worst,
            worst / 5.96e-8, at);
    CHECK(worst < 3e-7, "exp relative error %.2e at %g", worst, at);
    CHECK(fm_expf_simd(-1000.0f) > 0 && isfinite(fm_expf_simd(1000.0f)), "clamping");
    CHECK(fm_siluf(-200.0f) == 0.0f || fabsf(fm_siluf(-200.0f)) < 1e-30f, "silu(-200) = %g", fm_siluf(-200.0f));
    CHECK(fm_siluf(200.0f) == 200.0f, "silu(200) = %g", fm_siluf(200.0f));
    return 0;
}

static int test_silu_reference(void)
{
    const long n = 100003; /* odd: a vector tail, and above the parallel threshold */
    float *x = randn(n, 1), *dy = randn(n, 2), *y = malloc(n * sizeof(float)), *dx = malloc(n * sizeof(float));
    float *ry = malloc(n * sizeof(float)), *rdx = malloc(n * sizeof(float));
    for (long i = 0; i < n; i++)
        x[i] *= 4.0f;
    fm_silu_forward(x, y, n);
    fm_silu_backward(x, dy, dx, n);
    for (long i = 0; i < n; i++) {
        double s = 1.0 / (1.0 + exp(-(double)x[i]));
        ry[i] = (float)(x[i] * s);
        rdx[i] = (float)(dy[i] * s * (1 + x[i] * (1 - s)));
    }
    double ey = fm_rel_err(y, ry, n, 1e-6), edx = fm_rel_err(dx, rdx, n, 1e-6);
    fprintf(stderr, "  silu vs double reference: y %.2e, dx %.2e\n", ey, edx);
    CHECK(ey < 1e-6 && edx < 1e-6, "y %.2e dx %.2e", ey, edx);
    memcpy(ry, x, n * sizeof(float)); /* in place */
    fm_silu_forward(ry, ry, n);
    CHECK(memcmp(ry, y, n * sizeof(float)) == 0, "in-place forward differs");
    free(x), free(dy), free(y), free(dx), free(ry), free(rdx);
    return 0;
}

/* Generic context for the stateless ops' gradient checks. */
typedef struct ew_ctx {
    int n, h, w, c, c2;
    float *a, *b, *out, *dout, *da, *db;
} ew_ctx;

static int silu_f(void *p, fm_err *e)
{
    (void)e;
    ew_ctx *c = p;
    fm_silu_forward(c->a, c->out, c->n);
    return FM_OK;
}
static int silu_b(void *p, fm_err *e)
{
    (void)e;
    ew_ctx *c = p;
    fm_silu_backward(c->a, c->dout, c->da, c->n);
    return FM_OK;
}

static int up_f(void *p, fm_err *e)
{
    (void)e;
    ew_ctx *c = p;
    fm_upsample2x_forward(c->a, c->out, c->n, c->h, c->w, c->c);
    return FM_OK;
}
static int up_b(void *p, fm_err *e)
{
    (void)e;
    ew_ctx *c = p;
    fm_upsample2x_backward(c->dout, c->da, c->n, c->h, c->w, c->c);
    return FM_OK;
}

static int cat_f(void *p, fm_err *e)
{
    (void)e;
    ew_ctx *c = p;
    fm_concat_forward(c->a, c->c, c->b, c->c2, c->out, (long)c->n * c->h * c->w);
    return FM_OK;
}
static int cat_b(void *p, fm_err *e)
{
    (void)e;
    ew_ctx *c = p;
    fm_concat_backward(c->dout, c->c, c->c2, c->da, c->db, (long)c->n * c->h * c->w);
    return FM_OK;
}

static int add_f(void *p, fm_err *e)
{
    (void)e;
    ew_ctx *c = p;
    fm_add(c->a, c->b, c->out, c->n);
    return FM_OK;
}
static int add_b(void *p, fm_err *e)
{
    (void)e;
    ew_ctx *c = p;
    fm_add_backward(c->dout, c->da, c->db, c->n);
    return FM_OK;
}

/* out = x + broadcast(v): a = x [n, hw, c], b = v [n, c] */
static int addnc_f(void *p, fm_err *e)
{
    (void)e;
    ew_ctx *c = p;
    long nx = (long)c->n * c->h * c->w * c->c;
    memcpy(c->out, c->a, nx * sizeof(float));
    fm_add_nc(c->out, c->b, c->n, (long)c->h * c->w, c->c);
    return FM_OK;
}
static int addnc_b(void *p, fm_err *e)
{
    (void)e;
    ew_ctx *c = p;
    memcpy(c->da, c->dout, (long)c->n * c->h * c->w * c->c * sizeof(float));
    fm_add_nc_backward(c->dout, c->db, c->n, (long)c->h * c->w, c->c);
    return FM_OK;
}

/* out[0] = mse(a, b): both pred and target are variables (d target = -d pred) */
static int mse_f(void *p, fm_err *e)
{
    (void)e;
    ew_ctx *c = p;
    c->out[0] = (float)fm_mse_forward(c->a, c->b, c->n);
    return FM_OK;
}
static int mse_b(void *p, fm_err *e)
{
    (void)e;
    ew_ctx *c = p;
    fm_mse_backward(c->a, c->b, c->n, c->dout[0], c->da);
    for (long i = 0; i < c->n; i++)
        c->db[i] = -c->da[i];
    return FM_OK;
}

/* Run the gradient check of one op with inputs a [na] and (optional) b [nb]. */
static int check_op(const char *name, ew_ctx *c, long na, long nb, long nout, int (*f)(void *, fm_err *),
                    int (*b)(void *, fm_err *), double eps)
{
    fm_err e = { 0 };
    c->a = randn(na, 10);
    c->b = nb ? randn(nb, 11) : NULL;
    c->da = malloc(na * sizeof(float));
    c->db = nb ? malloc(nb * sizeof(float)) : NULL;
    c->out = malloc(nout * sizeof(float));
    c->dout = malloc(nout * sizeof(float));
    fm_gc_op op = { .name = name, .ctx = c, .forward = f, .backward = b, .out = c->out, .dout = c->dout,
                    .out_n = nout };
    op.vars[op.nvars++] = (fm_gc_var){ "a", c->a, c->da, na };
    if (nb)
        op.vars[op.nvars++] = (fm_gc_var){ "b", c->b, c->db, nb };
    /* tol = 1e-2 in fp32 (linear ops are exact up to rounding) */
    int rc = fm_gradcheck(&op, eps, 1e-2, 300, &e);
    if (rc != FM_OK)
        fprintf(stderr, "  %s\n", e.msg);
    free(c->a), free(c->b), free(c->da), free(c->db), free(c->out), free(c->dout);
    return rc;
}

static int test_silu_gradcheck(void)
{
    ew_ctx c = { .n = 500 };
    /* eps = 1e-2: the central difference error of silu is ~eps^2 |silu'''| / 6 < 1e-5 */
    CHECK(check_op("silu", &c, 500, 0, 500, silu_f, silu_b, 1e-2) == FM_OK, "silu");
    return 0;
}

/* ---- upsampling ---- */

static int test_upsample_reference(void)
{
    const int n = 3, h = 5, w = 7, c = 6;
    const long nx = (long)n * h * w * c, ny = 4 * nx;
    float *x = randn(nx, 3), *y = malloc(ny * sizeof(float)), *dy = randn(ny, 4), *dx = malloc(nx * sizeof(float));
    float *rdx = calloc(nx, sizeof(float));
    fm_upsample2x_forward(x, y, n, h, w, c);
    fm_upsample2x_backward(dy, dx, n, h, w, c);
    for (int i = 0; i < n; i++)
        for (int r = 0; r < 2 * h; r++)
            for (int s = 0; s < 2 * w; s++)
                for (int k = 0; k < c; k++) {
                    long yi = (((long)i * 2 * h + r) * 2 * w + s) * c + k;
                    long xi = (((long)i * h + r / 2) * w + s / 2) * c + k;
                    CHECK(y[yi] == x[xi], "y[%d,%d,%d,%d]", i, r, s, k);
                    rdx[xi] += dy[yi];
                }
    double ed = fm_rel_err(dx, rdx, nx, 1e-6);
    CHECK(ed < 1e-6, "dx relative error %.2e", ed);
    free(x), free(y), free(dy), free(dx), free(rdx);
    return 0;
}

static int test_upsample_gradcheck(void)
{
    ew_ctx c = { .n = 2, .h = 3, .w = 5, .c = 4 };
    long nx = 2 * 3 * 5 * 4;
    CHECK(check_op("upsample2x", &c, nx, 0, 4 * nx, up_f, up_b, 1e-2) == FM_OK, "upsample");
    return 0;
}

/* ---- concat and add ---- */

static int test_concat_reference(void)
{
    const long rows = 3 * 5 * 7;
    const int ca = 5, cb = 12;
    float *a = randn(rows * ca, 5), *b = randn(rows * cb, 6), *y = malloc(rows * (ca + cb) * sizeof(float));
    float *da = malloc(rows * ca * sizeof(float)), *db = malloc(rows * cb * sizeof(float));
    fm_concat_forward(a, ca, b, cb, y, rows);
    for (long r = 0; r < rows; r++)
        for (int k = 0; k < ca + cb; k++)
            CHECK(y[r * (ca + cb) + k] == (k < ca ? a[r * ca + k] : b[r * cb + k - ca]), "y[%ld, %d]", r, k);
    fm_concat_backward(y, ca, cb, da, db, rows);
    CHECK(memcmp(da, a, rows * ca * sizeof(float)) == 0 && memcmp(db, b, rows * cb * sizeof(float)) == 0,
          "backward does not split");
    fm_concat_backward(y, ca, cb, NULL, db, rows); /* NULL = not needed */
    free(a), free(b), free(y), free(da), free(db);
    return 0;
}

static int test_concat_add_gradcheck(void)
{
    ew_ctx c = { .n = 3, .h = 3, .w = 5, .c = 4, .c2 = 6 };
    long rows = 3 * 3 * 5;
    CHECK(check_op("concat", &c, rows * 4, rows * 6, rows * 10, cat_f, cat_b, 1e-2) == FM_OK, "concat");
    ew_ctx d = { .n = 300 };
    CHECK(check_op("add", &d, 300, 300, 300, add_f, add_b, 1e-2) == FM_OK, "add");
    ew_ctx g = { .n = 3, .h = 3, .w = 5, .c = 7 };
    CHECK(check_op("add_nc", &g, 3 * 15 * 7, 3 * 7, 3 * 15 * 7, addnc_f, addnc_b, 1e-2) == FM_OK, "add_nc");
    return 0;
}

static int test_add_helpers(void)
{
    const long n = 70001;
    float *a = randn(n, 7), *b = randn(n, 8), *y = malloc(n * sizeof(float)), *z = malloc(n * sizeof(float));
    fm_add(a, b, y, n);
    for (long i = 0; i < n; i++)
        CHECK(y[i] == a[i] + b[i], "add at %ld", i);
    memcpy(z, a, n * sizeof(float));
    fm_acc(z, b, n);
    CHECK(memcmp(z, y, n * sizeof(float)) == 0, "acc differs from add");
    fm_add(a, b, a, n); /* y aliases a */
    CHECK(memcmp(a, y, n * sizeof(float)) == 0, "in-place add differs");
    memcpy(z, y, n * sizeof(float));
    fm_scale(z, 0.5f, n);
    fm_axpy(z, -0.25f, b, n);
    for (long i = 0; i < n; i++)
        CHECK(z[i] == y[i] * 0.5f + -0.25f * b[i], "scale/axpy at %ld", i);
    /* broadcast add: v [2, 3] over hw = 4 */
    float yb[2 * 4 * 3] = { 0 }, v[6] = { 1, 2, 3, 4, 5, 6 }, dv[6];
    fm_add_nc(yb, v, 2, 4, 3);
    for (int i = 0; i < 24; i++)
        CHECK(yb[i] == v[(i / 12) * 3 + i % 3], "add_nc at %d", i);
    fm_add_nc_backward(yb, dv, 2, 4, 3);
    for (int i = 0; i < 6; i++)
        CHECK(dv[i] == 4 * v[i], "add_nc backward at %d", i);
    /* broadcast add with more than 64 channels (the backward's channel blocks) */
    float *big = calloc(2 * 3 * 130, sizeof(float)), vb[260], dvb[260];
    for (int i = 0; i < 260; i++)
        vb[i] = (float)i;
    fm_add_nc(big, vb, 2, 3, 130);
    fm_add_nc_backward(big, dvb, 2, 3, 130);
    for (int i = 0; i < 260; i++)
        CHECK(dvb[i] == 3.0f * i, "add_nc backward (130 channels) at %d: %g", i, dvb[i]);
    free(a), free(b), free(y), free(z), free(big);
    return 0;
}

/* ---- MSE ---- */

static int test_mse(void)
{
    const long n = 1000003; /* several blocks, odd tail */
    float *p = randn(n, 12), *t = randn(n, 13), *d = malloc(n * sizeof(float));
    double s = 0;
    for (long i = 0; i < n; i++)
        s += ((double)p[i] - t[i]) * ((double)p[i] - t[i]);
    double l = fm_mse_forward(p, t, n), ref = s / n;
    fprintf(stderr, "  mse %.10f vs reference %.10f (relative %.1e)\n", l, ref, fabs(l - ref) / ref);
    CHECK(fabs(l - ref) <= 1e-12 * ref, "mse %.12g vs %.12g", l, ref);
    fm_mse_backward(p, t, n, 0.5f, d);
    for (long i = 0; i < n; i += 997) {
        double r = 0.5 * 2 * ((double)p[i] - t[i]) / n;
        CHECK(fabs(d[i] - r) <= 1e-6 * fabs(r) + 1e-20, "dpred[%ld] = %g vs %g", i, d[i], r);
    }
    CHECK(fm_mse_forward(p, p, n) == 0.0, "mse(x, x) != 0");
    ew_ctx c = { .n = 200 };
    CHECK(check_op("mse", &c, 200, 200, 1, mse_f, mse_b, 1e-2) == FM_OK, "mse");
    free(p), free(t), free(d);
    return 0;
}

int main(int argc, char **argv)
{
    static const fm_test tests[] = {
        TEST(test_expf_accuracy),      TEST(test_silu_reference),  TEST(test_silu_gradcheck),
        TEST(test_upsample_reference), TEST(test_upsample_gradcheck), TEST(test_concat_reference),
        TEST(test_concat_add_gradcheck), TEST(test_add_helpers),   TEST(test_mse),
    };
    return fm_test_main("elementwise", tests, sizeof tests / sizeof tests[0], argc, argv);
}
