/* test_attention.c - multi-head self-attention against naive loops (forward
 * and backward), a finite-difference gradient check on every input, init and
 * bad sizes, and a (not asserted) timing of forward + backward. */
#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "fm/arena.h"
#include "fm/attention.h"
#include "fm/dnn.h"
#include "fm/params.h"
#include "fm/rng.h"
#include "fixture.h"
#include "test.h"

/* ---- naive reference, in double ------------------------------------------ */

typedef struct ref {
    int64_t b, t, c, h, d;
    double *qkv;  /* [B, T, 3C] */
    double *p;    /* [B, h, T, T] */
    double *o;    /* [B, T, C] */
} ref;

/* y = MHA(x, x, x), keeping qkv, P and o in r for ref_backward. */
static void ref_forward(ref *r, const float *x, const float *win, const float *bin, const float *wout,
                        const float *bout, float *y)
{
    const int64_t B = r->b, T = r->t, C = r->c, H = r->h, D = r->d;
    const double scale = 1.0 / sqrt((double)D);
    for (int64_t m = 0; m < B * T; m++)
        for (int64_t j = 0; j < 3 * C; j++) {
            double s = bin[j];
            for (int64_t k = 0; k < C; k++)
                s += (double)x[m * C + k] * win[j * C + k];
            r->qkv[m * 3 * C + j] = s;
        }
    for (int64_t b = 0; b < B; b++)
        for (int64_t hh = 0; hh < H; hh++)
            for (int64_t i = 0; i < T; i++) {
                double *p = r->p + ((b * H + hh) * T + i) * T, mx = -INFINITY, sum = 0;
                const double *q = r->qkv + (b * T + i) * 3 * C + hh * D;
                for (int64_t j = 0; j < T; j++) {
                    const double *k = r->qkv + (b * T + j) * 3 * C + C + hh * D;
                    double s = 0;
                    for (int64_t c = 0; c < D; c++)
                        s += q[c] * k[c];
                    p[j] = s * scale;
                    mx = fmax(mx, p[j]);
                }
                for (int64_t j = 0; j < T; j++)
                    sum += (p[j] = exp(p[j] - mx));
                for (int64_t j = 0; j < T; j++)
                    p[j] /= sum;
                for (int64_t c = 0; c < D; c++) {
                    double s = 0;
                    for (int64_t j = 0; j < T; j++)
                        s += p[j] * r->qkv[(b * T + j) * 3 * C + 2 * C + hh * D + c];
                    r->o[(b * T + i) * C + hh * D + c] = s;
                }
            }
    for (int64_t m = 0; m < B * T; m++)
        for (int64_t j = 0; j < C; j++) {
            double s = bout[j];
            for (int64_t k = 0; k < C; k++)
                s += r->o[m * C + k] * wout[j * C + k];
            y[m * C + j] = (float)s;
        }
}

/* Gradients of x and of the four parameters given dy, from ref_forward's state. */
static void ref_backward(const ref *r, const float *x, const float *win, const float *wout, const float *dy,
                         float *dx, float *dwin, float *dbin, float *dwout, float *dbout)
{
    const int64_t B = r->b, T = r->t, C = r->c, H = r->h, D = r->d, M = B * T;
    const double scale = 1.0 / sqrt((double)D);
    double *dout = calloc((size_t)(M * C), sizeof(double)), *dqkv = calloc((size_t)(M * 3 * C), sizeof(double));
    double *dp = calloc((size_t)T, sizeof(double));
    for (int64_t j = 0; j < C; j++) {
        double sb = 0;
        for (int64_t m = 0; m < M; m++)
            sb += dy[m * C + j];
        dbout[j] = (float)sb;
        for (int64_t k = 0; k < C; k++) {
            double s = 0;
            for (int64_t m = 0; m < M; m++)
                s += dy[m * C + j] * r->o[m * C + k];
            dwout[j * C + k] = (float)s;
        }
    }
    for (int64_t m = 0; m < M; m++)
        for (int64_t k = 0; k < C; k++) {
            double s = 0;
            for (int64_t j = 0; j < C; j++)
                s += (double)dy[m * C + j] * wout[j * C + k];
            dout[m * C + k] = s;
        }
    for (int64_t b = 0; b < B; b++)
        for (int64_t hh = 0; hh < H; hh++)
            for (int64_t i = 0; i < T; i++) {
                const double *p = r->p + ((b * H + hh) * T + i) * T;
                const double *g = dout + (b * T + i) * C + hh * D;
                double dot = 0;
                for (int64_t j = 0; j < T; j++) {
                    const double *v = r->qkv + (b * T + j) * 3 * C + 2 * C + hh * D;
                    double *dv = dqkv + (b * T + j) * 3 * C + 2 * C + hh * D;
                    double s = 0;
                    for (int64_t c = 0; c < D; c++) {
                        s += g[c] * v[c];
                        dv[c] += p[j] * g[c];
                    }
                    dp[j] = s;
                    dot += s * p[j];
                }
                const double *q = r->qkv + (b * T + i) * 3 * C + hh * D;
                double *dq = dqkv + (b * T + i) * 3 * C + hh * D;
                for (int64_t j = 0; j < T; j++) {
                    double ds = p[j] * (dp[j] - dot) * scale;
                    const double *k = r->qkv + (b * T + j) * 3 * C + C + hh * D;
                    double *dk = dqkv + (b * T + j) * 3 * C + C + hh * D;
                    for (int64_t c = 0; c < D; c++) {
                        dq[c] += ds * k[c];
                        dk[c] += ds * q[c];
                    }
                }
            }
    for (int64_t j = 0; j < 3 * C; j++) {
        double sb = 0;
        for (int64_t m = 0; m < M; m++)
            sb += dqkv[m * 3 * C + j];
        dbin[j] = (float)sb;
        for (int64_t k = 0; k < C; k++) {
            double s = 0;
            for (int64_t m = 0; m < M; m++)
                s += dqkv[m * 3 * C + j] * x[m * C + k];
            dwin[j * C + k] = (float)s;
        }
    }
    for (int64_t m = 0; m < M; m++)
        for (int64_t k = 0; k < C; k++) {
            double s = 0;
            for (int64_t j = 0; j < 3 * C; j++)
                s += dqkv[m * 3 * C + j] * win[j * C + k];
            dx[m * C + k] = (float)s;
        }
    free(dout);
    free(dqkv);
    free(dp);
}

/* ---- fixture ----------------------------------------------------------------- */

typedef struct fixture {
    fm_fx_env v;
    fm_fx_io io;
    fm_attention l;
    int64_t b, t, c, h, n;  /* n = B*T*C */
    fm_param *win, *bin, *wout, *bout;
    ref r;                  /* the naive reference's state */
    fm_fx_layer L;          /* the layer under test, on io */
} fixture;

static void fx_free(fixture *f)
{
    fm_attention_free(&f->l);
    fm_fx_env_free(&f->v);
    fm_fx_io_free(&f->io);
    free(f->r.qkv), free(f->r.p), free(f->r.o);
}

static int attn_fwd(void *ctx, const float *x, float *y, fm_err *e)
{
    fixture *f = ctx;
    return fm_attention_forward(&f->l, x, y, e);
}

static int attn_bwd(void *ctx, const float *x, const float *dy, float *dx, fm_err *e)
{
    fixture *f = ctx;
    return fm_attention_backward(&f->l, x, dy, dx, e);
}

static void attn_ref(void *ctx, const float *x, const float *dy, float *y, float *dx, float *const *dp)
{
    fixture *f = ctx;
    ref_forward(&f->r, x, fm_f32(&f->win->w), fm_f32(&f->bin->w), fm_f32(&f->wout->w), fm_f32(&f->bout->w), y);
    ref_backward(&f->r, x, fm_f32(&f->win->w), fm_f32(&f->wout->w), dy, dx, dp[0], dp[1], dp[2], dp[3]);
}

/* Layer "attn" for x [b, t, c]; x, dy ~ N(0, 1). With random_params, every
 * weight is redrawn ~ N(0, 1.5^2 / C) and every bias ~ N(0, 0.5^2), so the
 * biases are non-zero and the softmax is far from uniform. */
static int fx_init(fixture *f, int64_t b, int64_t t, int64_t c, int64_t h, int random_params, fm_err *e)
{
    memset(f, 0, sizeof *f);
    f->b = b, f->t = t, f->c = c, f->h = h, f->n = b * t * c;
    size_t arena = (size_t)(2 * b * h * t * t + 8 * b * t * c) * sizeof(float) + (8 << 20);
    FM_TRY(fm_fx_env_init(&f->v, 0, 8, (size_t)(4 * c * c + 4 * c + 64), 21, arena, e));
    FM_TRY(fm_attention_init(&f->l, &f->v.d, &f->v.p, &f->v.a, "attn", c, h, b, t, e));
    f->win = fm_params_find(&f->v.p, "attn.in_proj_weight");
    f->bin = fm_params_find(&f->v.p, "attn.in_proj_bias");
    f->wout = fm_params_find(&f->v.p, "attn.out_proj.weight");
    f->bout = fm_params_find(&f->v.p, "attn.out_proj.bias");
    if (!f->win || !f->bin || !f->wout || !f->bout || f->v.p.n != 4)
        return fm_fail(e, FM_ERR_INTERNAL, "attention parameters not named as torch's state dict");
    fm_param *ps[] = { f->win, f->bin, f->wout, f->bout };
    for (int i = 0; random_params && i < 4; i++) {
        float *w = fm_f32(&ps[i]->w);
        int64_t n = fm_tensor_numel(&ps[i]->w);
        float sd = ps[i]->w.ndim == 2 ? 1.5f / sqrtf((float)c) : 0.5f;
        fm_fill_normal(w, n, 77, (uint64_t)i, 0);
        for (int64_t k = 0; k < n; k++)
            w[k] *= sd;
    }
    FM_TRY(fm_fx_io_init(&f->io, f->n, f->n, 6, e));
    f->L = (fm_fx_layer){ .label = "attention", .ctx = f, .io = &f->io, .forward = attn_fwd, .backward = attn_bwd,
                          .reference = attn_ref, .params = { f->win, f->bin, f->wout, f->bout }, .nparams = 4,
                          .poison = NAN };
    return FM_OK;
}

/* ---- tests ------------------------------------------------------------------- */

/* forward and backward against the naive loops (gradients must be
 * overwritten, not accumulated: they start from garbage); then dx = NULL
 * (same parameter gradients) and dx aliasing dy (backward into the upstream
 * gradient buffer itself). */
static int check_case(int64_t b, int64_t t, int64_t c, int64_t h)
{
    fm_err e = { 0 };
    fixture f;
    fm_fx_ref want = { 0 };
    char label[128];
    snprintf(label, sizeof label, "attention B=%lld T=%lld C=%lld h=%lld", (long long)b, (long long)t, (long long)c,
             (long long)h);
    int rc = 1;
    if (fx_init(&f, b, t, c, h, 1, &e) != FM_OK || fm_fx_ref_init(&want, &f.L) != 0) {
        fprintf(stderr, "  init: %s\n", e.msg[0] ? e.msg : "out of memory");
        goto out;
    }
    f.r = (ref){ b, t, c, h, c / h, malloc((size_t)(3 * f.n) * sizeof(double)),
                 malloc((size_t)(b * h * t * t) * sizeof(double)), malloc((size_t)f.n * sizeof(double)) };
    if (!f.r.qkv || !f.r.p || !f.r.o)
        goto out;
    f.L.label = label;
    if (fm_fx_check(&f.L, &want, 2e-5, label) || fm_fx_check_no_dx(&f.L, &want, 2e-5) ||
        fm_fx_check_alias(&f.L, &want, 2e-5, 1))
        goto out;
    rc = 0;
out:
    fm_fx_ref_free(&want);
    fx_free(&f);
    return rc;
}

/* T = 16 and 64 (4x4 and 8x8 maps), C = 32 and 64, 1, 2 and 4 heads, batch 1
 * and 3, and an odd token count (3x3) with head size 8; T = 16 with head
 * sizes 16, 32 and 64 takes the AVX-512 core where the CPU has it (T = 16
 * with head size 8 and the other T the portable one). */
static int test_attention_vs_naive(void)
{
    static const int64_t cases[][4] = {
        { 1, 16, 32, 1 }, { 3, 16, 32, 2 }, { 3, 16, 64, 4 }, { 1, 64, 64, 4 }, { 3, 64, 32, 2 }, { 2, 9, 24, 3 },
        { 2, 16, 128, 2 }, { 2, 16, 32, 4 },
    };
    for (size_t i = 0; i < sizeof cases / sizeof *cases; i++)
        CHECK(check_case(cases[i][0], cases[i][1], cases[i][2], cases[i][3]) == 0, "case %zu", i);
    return 0;
}

/* eps = 1e-2, tol = 1e-2 (fp32 forward; the O(eps^2) truncation and the
 * rounding of the loss stay near 1e-4). Every input and every parameter. */
static int test_attention_gradcheck(void)
{
    fm_err e = { 0 };
    fixture f;
    int rc = fx_init(&f, 2, 5, 8, 2, 1, &e);
    if (rc == FM_OK)
        rc = fm_fx_gradcheck(&f.L, 1e-2, 1e-2, 200, &e);
    fx_free(&f);
    CHECK_OK(rc, &e);
    /* T = 16, head size 16: the AVX-512 core where the CPU has it */
    rc = fx_init(&f, 2, 16, 32, 2, 1, &e);
    const int fast = rc == FM_OK && f.l.fast16;
    if (rc == FM_OK)
        rc = fm_fx_gradcheck(&f.L, 1e-2, 1e-2, 200, &e);
    fx_free(&f);
    CHECK_OK(rc, &e);
    CHECK(fast || fm_test_no_avx512(), "T = 16, head size 16 did not take the AVX-512 core on an AVX-512 CPU");
    return 0;
}

/* torch's _reset_parameters: in_proj_weight Xavier-uniform, out_proj.weight
 * uniform 1/sqrt(C), biases zero. */
static int test_attention_default_init(void)
{
    fm_err e = { 0 };
    fixture f;
    const int64_t c = 48;
    int rc = fx_init(&f, 1, 4, c, 4, 0, &e);
    double wi = 0, wo = 0, bs = 0;
    if (rc == FM_OK) {
        for (int64_t i = 0; i < 3 * c * c; i++)
            wi = fmax(wi, fabs(fm_f32(&f.win->w)[i]));
        for (int64_t i = 0; i < c * c; i++)
            wo = fmax(wo, fabs(fm_f32(&f.wout->w)[i]));
        for (int64_t i = 0; i < 3 * c; i++)
            bs = fmax(bs, fabs(fm_f32(&f.bin->w)[i]));
        for (int64_t i = 0; i < c; i++)
            bs = fmax(bs, fabs(fm_f32(&f.bout->w)[i]));
    }
    fx_free(&f);
    CHECK_OK(rc, &e);
    double bi = sqrt(6.0 / (4.0 * c)), bo = 1.0 / sqrt((double)c);
    CHECK(wi <= bi && wi > 0.9 * bi, "in_proj_weight max %g, bound %g", wi, bi);
    CHECK(wo <= bo && wo > 0.9 * bo, "out_proj.weight max %g, bound %g", wo, bo);
    CHECK(bs == 0, "biases not zero (max %g)", bs);
    return 0;
}

static int test_attention_bad_sizes(void)
{
    fm_err e = { 0 };
    fm_dnn d;
    fm_params p;
    fm_arena a;
    fm_attention l;
    CHECK_OK(fm_dnn_init(&d, &e), &e);
    CHECK_OK(fm_params_init(&p, 8, 1 << 16, 1, &e), &e);
    CHECK_OK(fm_arena_init(&a, 1 << 20, &e), &e);
    int rc = fm_attention_init(&l, &d, &p, &a, "mid.attn", 30, 4, 2, 16, &e);
    fm_attention_free(&l);
    fm_arena_free(&a);
    fm_params_free(&p);
    fm_dnn_free(&d);
    CHECK(rc == FM_ERR_USAGE && strstr(e.msg, "mid.attn"), "30 channels, 4 heads gave %d: %s", rc, e.msg);
    return 0;
}

static int test_attention_flops(void)
{
    fm_err e = { 0 };
    fixture f;
    int rc = fx_init(&f, 2, 16, 32, 4, 0, &e);
    double fwd = rc == FM_OK ? fm_attention_flops_fwd(&f.l) : 0, bwd = rc == FM_OK ? fm_attention_flops_bwd(&f.l, 1) : 0;
    fx_free(&f);
    CHECK_OK(rc, &e);
    /* in_proj 2*32*32*96 + 32*96, core 2 * 2*2*4*16*16*8, out_proj 2*32*32*32 + 32*32 */
    double mm = 2.0 * 32 * 32 * 96 + 4.0 * 2 * 4 * 16 * 16 * 8 + 2.0 * 32 * 32 * 32;
    CHECK(fwd == mm + 32 * 96 + 32 * 32, "forward %g", fwd);
    CHECK(bwd == 2 * mm + 32 * 96 + 32 * 32, "backward %g", bwd);
    return 0;
}

/* Forward + backward wall time at the U-Net's attention sizes (reported, not
 * asserted): B=128 on a 4x4 map with C=256, 4 heads, and an 8x8 map with
 * C=128, 4 heads. */
static int test_attention_timing(void)
{
    static const int64_t cases[][4] = { { 128, 16, 256, 4 }, { 128, 64, 128, 4 } };
    for (size_t i = 0; i < 2; i++) {
        fm_err e = { 0 };
        fixture f;
        double fl = 0, mib = 0;
        fm_fx_times t = { .best = INFINITY };
        int rc = fx_init(&f, cases[i][0], cases[i][1], cases[i][2], cases[i][3], 0, &e);
        if (rc == FM_OK)
            rc = fm_fx_time_layer(&f.L, 0, 10, &t, &e);
        if (rc == FM_OK) {
            fl = fm_attention_flops_fwd(&f.l) + fm_attention_flops_bwd(&f.l, 1);
            mib = (double)f.v.a.used / (1 << 20);
        }
        const double best = t.best;
        fx_free(&f);
        CHECK_OK(rc, &e);
        fprintf(stderr, "  attention B=%lld T=%lld C=%lld h=%lld: forward+backward %.2f ms (best of 10), %.1f GFLOP/s, "
                "arena %.1f MiB\n",
                (long long)cases[i][0], (long long)cases[i][1], (long long)cases[i][2], (long long)cases[i][3],
                best * 1e3, fl / best * 1e-9, mib);
    }
    return 0;
}

int main(int argc, char **argv)
{
    static const fm_test tests[] = {
        TEST(test_attention_vs_naive),  TEST(test_attention_gradcheck), TEST(test_attention_default_init),
        TEST(test_attention_bad_sizes), TEST(test_attention_flops),     TEST(test_attention_timing),
    };
    return fm_test_main("nn/attention", tests, (int)(sizeof tests / sizeof *tests), argc, argv);
}
