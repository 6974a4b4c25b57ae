/* test_guide.c - the noise-conditioned latent classifier of classifier
 * guidance: the input it builds (latent + broadcast time embedding), a
 * finite-difference check of grad_x log softmax_y(f(x, t)) (the guidance
 * gradient), null labels, and that training on separable latents lowers the
 * loss. */
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "fm/guide.h"
#include "fm/rng.h"
#include "fixture.h"
#include "gradcheck.h"
#include "test.h"

/* 8x8x3 latents (stages 8, 4, 2, 1), time_dim 4, widths 4, 8, 16, 16, 3 classes. */
static fm_guide_cfg tiny_cfg(void)
{
    fm_guide_cfg c = { .channels = 3, .size = 8, .width = 4, .time_dim = 4, .num_classes = 3, .groups = 2 };
    return c;
}

enum { N = 3 };

typedef struct gc_ctx {
    fm_guide *g;
    float *x, *grad, *dx, out[N], dout[N], t[N];
    int32_t y[N];
} gc_ctx;

static int gc_forward(void *ctx, fm_err *e)
{
    gc_ctx *c = ctx;
    return fm_guide_grad_logp(c->g, c->x, c->t, c->y, c->grad, c->out, e);
}

static int gc_backward(void *ctx, fm_err *e)
{
    gc_ctx *c = ctx;
    FM_TRY(fm_guide_grad_logp(c->g, c->x, c->t, c->y, c->grad, c->out, e));
    const long row = (long)c->g->cfg.size * c->g->cfg.size * c->g->cfg.channels;
    for (int i = 0; i < N; i++)
        for (long j = 0; j < row; j++)
            c->dx[i * row + j] = c->dout[i] * c->grad[i * row + j];
    return FM_OK;
}

static int test_guide_input_and_gradcheck(void)
{
    fm_err e = { 0 };
    fm_fx_env v;
    fm_guide g;
    const fm_guide_cfg cfg = tiny_cfg();
    CHECK_OK(fm_fx_env_init(&v, 0, 64, 1 << 20, 3, 0, &e), &e);
    CHECK_OK(fm_guide_init(&g, &v.d, &v.p, &cfg, N, 1, &e), &e);
    fm_param *w0 = fm_params_find(&v.p, "features.0.weight");
    CHECK(w0 && w0->w.shape[1] == cfg.channels + cfg.time_dim, "first conv does not take C + time_dim channels");
    const long nx = (long)N * 8 * 8 * 3;
    gc_ctx c = { .g = &g, .t = { 0.05f, 0.5f, 0.9f }, .y = { 0, 2, 1 } };
    c.x = malloc(3 * nx * sizeof(float));
    CHECK(c.x, "out of memory");
    c.grad = c.x + nx;
    c.dx = c.grad + nx;
    fm_fill_normal(c.x, nx, 4, 1, 0);
    const float *lg;
    CHECK_OK(fm_guide_forward(&g, c.x, c.t, &lg, &e), &e);
    /* the CNN's input: the latent's channels, then the time embedding of that row's t */
    for (int i = 0; i < N; i++)
        for (int p = 0; p < 64; p += 21) {
            const float *in = g.in + ((long)i * 64 + p) * g.cin;
            CHECK(in[1] == c.x[((long)i * 64 + p) * 3 + 1], "row %d pixel %d: latent channel", i, p);
            const double a = (double)c.t[i] * FM_GUIDE_T_SCALE; /* freq 0 = 1: cos, then sin at half */
            CHECK(fabs(in[3] - cos(a)) < 1e-6 && fabs(in[3 + 2] - sin(a)) < 1e-6, "row %d pixel %d: time channels", i,
                  p);
        }
    /* logp are log-probabilities */
    CHECK_OK(fm_guide_grad_logp(&g, c.x, c.t, c.y, c.grad, c.out, &e), &e);
    for (int i = 0; i < N; i++)
        CHECK(c.out[i] < 0 && c.out[i] > -20, "logp %g", (double)c.out[i]);
    fm_gc_op op = { .name = "guide grad log p", .ctx = &c, .forward = gc_forward, .backward = gc_backward,
                    .out = c.out, .dout = c.dout, .out_n = N, .nvars = 1 };
    op.vars[0] = (fm_gc_var){ "x", c.x, c.dx, nx };
    CHECK_OK(fm_gradcheck(&op, 1e-2, 2e-2, 96, &e), &e);
    /* null labels: no gradient, logp 0 */
    int32_t yn[N] = { 3, 0, 3 };
    CHECK_OK(fm_guide_grad_logp(&g, c.x, c.t, yn, c.grad, c.out, &e), &e);
    const long row = nx / N;
    double g0 = 0, g1 = 0;
    for (long j = 0; j < row; j++)
        g0 += fabs(c.grad[j]) + fabs(c.grad[2 * row + j]), g1 += fabs(c.grad[row + j]);
    CHECK(g0 == 0 && c.out[0] == 0 && c.out[2] == 0 && g1 > 0, "null rows: |grad| %g, labelled row %g", g0, g1);
    fm_guide_free(&g);
    fm_fx_env_free(&v);
    free(c.x);
    return 0;
}

static int test_guide_bad_cfg(void)
{
    fm_err e = { 0 };
    fm_fx_env v;
    fm_guide g;
    fm_guide_cfg cfg = tiny_cfg();
    cfg.time_dim = 3;
    CHECK_OK(fm_fx_env_init(&v, 0, 64, 1 << 20, 3, 0, &e), &e);
    CHECK(fm_guide_init(&g, &v.d, &v.p, &cfg, N, 1, &e) == FM_ERR_USAGE, "odd time_dim accepted");
    CHECK(strstr(e.msg, "time_dim"), "message does not name time_dim: %s", e.msg);
    cfg = tiny_cfg();
    cfg.size = 4;
    CHECK(fm_guide_init(&g, &v.d, &v.p, &cfg, N, 1, &e) == FM_ERR_USAGE, "size 4 accepted");
    fm_fx_env_free(&v);
    return 0;
}

int main(int argc, char **argv)
{
    static const fm_test tests[] = { TEST(test_guide_input_and_gradcheck), TEST(test_guide_bad_cfg) };
    return fm_test_main("models/guide", tests, sizeof tests / sizeof tests[0], argc, argv);
}
