/* test_embed.c - sinusoidal time embedding (values, cos-first order, t
 * gradient) and the class embedding table (init, gather, scatter-add with
 * duplicate labels, label checks, gradient check). */
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "fm/arena.h"
#include "fm/embed.h"
#include "fm/params.h"
#include "fm/rng.h"
#include "gradcheck.h"
#include "test.h"

static int test_time_embed_values(void)
{
    fm_err e = { 0 };
    fm_arena a;
    CHECK_OK(fm_arena_init(&a, 1 << 16, &e), &e);
    fm_time_embed l;
    CHECK(fm_time_embed_init(&l, &a, 2, 7, 1000, &e) == FM_ERR_INTERNAL, "odd width accepted");
    enum { N = 5, D = 64 };
    CHECK_OK(fm_time_embed_init(&l, &a, N, D, 1000, &e), &e);
    const float t[N] = { 0.0f, 0.25f, 0.5f, 0.999f, 0.0371f };
    float y[N * D];
    CHECK_OK(fm_time_embed_forward(&l, t, y, &e), &e);
    double worst = 0;
    for (int n = 0; n < N; n++)
        for (int i = 0; i < D / 2; i++) {
            /* the formula written out: freq = 10000^(-i/half) */
            double arg = t[n] * 1000.0 * pow(10000.0, -(double)i / (D / 2));
            worst = fmax(worst, fabs(y[n * D + i] - cos(arg)));
            worst = fmax(worst, fabs(y[n * D + D / 2 + i] - sin(arg)));
        }
    CHECK(worst < 1e-6, "worst abs error %.2e", worst);
    /* t = 0: all cos = 1 first, then all sin = 0 */
    for (int i = 0; i < D; i++)
        CHECK(y[i] == (i < D / 2 ? 1.0f : 0.0f), "t = 0: y[%d] = %g (cos must come first)", i, y[i]);
    /* i = 0 has frequency 1: cos(1000 t) */
    CHECK(fabs(y[D] - cos(250.0)) < 1e-6, "y[1, 0] = %g, want cos(250) = %g", y[D], cos(250.0));
    fm_arena_free(&a);
    return 0;
}

typedef struct te_ctx {
    fm_time_embed *l;
    float *t, *y, *dy, *dt;
} te_ctx;

static int te_f(void *p, fm_err *e)
{
    te_ctx *c = p;
    return fm_time_embed_forward(c->l, c->t, c->y, e);
}
static int te_b(void *p, fm_err *e)
{
    te_ctx *c = p;
    return fm_time_embed_backward(c->l, c->t, c->dy, c->dt, e);
}

static int test_time_embed_gradcheck(void)
{
    fm_err e = { 0 };
    fm_arena a;
    CHECK_OK(fm_arena_init(&a, 1 << 16, &e), &e);
    fm_time_embed l;
    enum { N = 6, D = 32 };
    /* scale 10 keeps dy/dt ~ 10: with eps = 1e-3 the central difference is
     * good to ~(10 eps)^2 / 6; tol 1e-2 */
    CHECK_OK(fm_time_embed_init(&l, &a, N, D, 10, &e), &e);
    float t[N], y[N * D], dy[N * D], dt[N];
    fm_fill_uniform(t, N, 3, 0, 0);
    te_ctx c = { &l, t, y, dy, dt };
    fm_gc_op op = { .name = "time_embed", .ctx = &c, .forward = te_f, .backward = te_b, .out = y, .dout = dy,
                    .out_n = N * D };
    op.vars[op.nvars++] = (fm_gc_var){ "t", t, dt, N };
    CHECK_OK(fm_gradcheck(&op, 1e-3, 1e-2, 100, &e), &e);
    fm_arena_free(&a);
    return 0;
}

static int test_class_embed_init(void)
{
    fm_err e = { 0 };
    fm_params p, q;
    CHECK_OK(fm_params_init(&p, 4, 20000, 7, &e), &e);
    CHECK_OK(fm_params_init(&q, 4, 20000, 7, &e), &e);
    fm_class_embed l, m;
    CHECK_OK(fm_class_embed_init(&l, &p, "y_embed", 4, 10, 1000, &e), &e);
    CHECK(fm_params_find(&p, "y_embed.weight") == l.weight, "name");
    CHECK(l.weight->w.ndim == 2 && l.weight->w.shape[0] == 11 && l.weight->w.shape[1] == 1000, "shape");
    /* N(0, 1): 11000 draws, standard error of the mean ~0.01 */
    const float *w = l.weight->w.data;
    double s = 0, s2 = 0;
    for (int i = 0; i < 11000; i++) {
        s += w[i];
        s2 += (double)w[i] * w[i];
    }
    s /= 11000;
    s2 = s2 / 11000 - s * s;
    CHECK(fabs(s) < 0.05 && fabs(s2 - 1) < 0.05, "init mean %g var %g", s, s2);
    /* keyed by (seed, name): same in a second table, different for another name */
    CHECK_OK(fm_class_embed_init(&m, &q, "y_embed", 4, 10, 1000, &e), &e);
    CHECK(memcmp(m.weight->w.data, w, 11000 * sizeof(float)) == 0, "init not repeatable");
    fm_class_embed o;
    CHECK_OK(fm_class_embed_init(&o, &q, "other", 4, 1, 1000, &e), &e);
    CHECK(memcmp(o.weight->w.data, w, 2000 * sizeof(float)) != 0, "init ignores the name");
    fm_params_free(&p);
    fm_params_free(&q);
    return 0;
}

static int test_class_embed_gather_scatter(void)
{
    fm_err e = { 0 };
    fm_params p;
    CHECK_OK(fm_params_init(&p, 4, 1000, 7, &e), &e);
    fm_class_embed l;
    enum { N = 6, K = 4, D = 5 };
    CHECK_OK(fm_class_embed_init(&l, &p, "emb", N, K, D, &e), &e);
    const int32_t y[N] = { 2, 4, 2, 0, 4, 2 }; /* 4 = the null label; duplicates */
    float out[N * D], dy[N * D];
    CHECK_OK(fm_class_embed_forward(&l, y, out, &e), &e);
    for (int n = 0; n < N; n++)
        CHECK(memcmp(out + n * D, fm_f32(&l.weight->w) + y[n] * D, D * sizeof(float)) == 0, "row %d", n);
    fm_fill_normal(dy, N * D, 1, 1, 0);
    fm_fill_normal(l.weight->g.data, (K + 1) * D, 2, 2, 0); /* garbage: must be overwritten */
    CHECK_OK(fm_class_embed_backward(&l, y, dy, &e), &e);
    const float *g = l.weight->g.data;
    for (int k = 0; k <= K; k++)
        for (int i = 0; i < D; i++) {
            double r = 0;
            for (int n = 0; n < N; n++)
                if (y[n] == k)
                    r += dy[n * D + i];
            CHECK(fabs(g[k * D + i] - r) < 1e-6, "grad[%d, %d] = %g, want %g", k, i, g[k * D + i], r);
        }
    const int32_t bad[N] = { 0, 1, 5, 0, 0, 0 };
    int rc = fm_class_embed_forward(&l, bad, out, &e);
    CHECK(rc == FM_ERR_DATA && strstr(e.msg, "emb.weight") && strstr(e.msg, "5"), "label 5 accepted: %s", e.msg);
    const int32_t neg[N] = { 0, 0, 0, 0, 0, -1 };
    CHECK(fm_class_embed_backward(&l, neg, dy, &e) == FM_ERR_DATA, "label -1 accepted");
    fm_params_free(&p);
    return 0;
}

typedef struct ce_ctx {
    fm_class_embed *l;
    const int32_t *y;
    float *out, *dout;
} ce_ctx;

static int ce_f(void *p, fm_err *e)
{
    ce_ctx *c = p;
    return fm_class_embed_forward(c->l, c->y, c->out, e);
}
static int ce_b(void *p, fm_err *e)
{
    ce_ctx *c = p;
    return fm_class_embed_backward(c->l, c->y, c->dout, e);
}

static int test_class_embed_gradcheck(void)
{
    fm_err e = { 0 };
    fm_params p;
    CHECK_OK(fm_params_init(&p, 4, 1000, 7, &e), &e);
    fm_class_embed l;
    enum { N = 7, K = 3, D = 8 };
    CHECK_OK(fm_class_embed_init(&l, &p, "emb", N, K, D, &e), &e);
    const int32_t y[N] = { 1, 3, 1, 1, 0, 3, 2 };
    float out[N * D], dout[N * D];
    ce_ctx c = { &l, y, out, dout };
    fm_gc_op op = { .name = "class_embed", .ctx = &c, .forward = ce_f, .backward = ce_b, .out = out,
                    .dout = dout, .out_n = N * D };
    op.vars[op.nvars++] = (fm_gc_var){ "weight", l.weight->w.data, l.weight->g.data, (K + 1) * D };
    /* linear in the weights: eps = 1e-2, tol = 1e-2 */
    CHECK_OK(fm_gradcheck(&op, 1e-2, 1e-2, 100, &e), &e);
    fm_params_free(&p);
    return 0;
}

int main(int argc, char **argv)
{
    static const fm_test tests[] = {
        TEST(test_time_embed_values), TEST(test_time_embed_gradcheck), TEST(test_class_embed_init),
        TEST(test_class_embed_gather_scatter), TEST(test_class_embed_gradcheck),
    };
    return fm_test_main("embed", tests, sizeof tests / sizeof tests[0], argc, argv);
}
