/* test_bf16.c - bf16 operands (run.precision: bf16) in the conv, linear and
 * attention layers.
 *
 * bf16 mode promises: x, dy and W are rounded to bf16, products accumulate
 * in fp32, outputs and gradients are fp32. So each layer is run twice on the
 * same weights and inputs, once with a bf16 engine and once with an fp32
 * engine fed the bf16-rounded x, dy and W: the two must agree to fp32
 * accumulation-order noise (rel 1e-4). Against the plain fp32 layer they
 * must differ (rel > 1e-5: bf16 did happen) by no more than bf16 rounding
 * allows (rel 3e-2). Backward given x after a forward on another buffer
 * must round x again. Plus the array rounding against the scalar one. */
#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "fm/arena.h"
#include "fm/attention.h"
#include "fm/conv.h"
#include "fm/dnn.h"
#include "fm/linear.h"
#include "fm/params.h"
#include "fm/rng.h"
#include "fm/tensor.h"
#include "test.h"

static void round_bf16(float *x, int64_t n)
{
    for (int64_t i = 0; i < n; i++)
        x[i] = fm_bf16_to_f32(fm_f32_to_bf16(x[i]));
}

/* One layer of any kind, with its own engine, parameters and arena. */
typedef enum kind { CONV, LINEAR, ATTN } kind;

typedef struct shape {
    kind k;
    int64_t n, h, w, cin, cout, ksz, stride, pad; /* conv; linear uses n (rows), cin, cout; attn n, h (tokens), cin, cout (heads) */
} shape;

typedef struct layer {
    fm_dnn d;
    fm_params p;
    fm_arena a;
    fm_conv2d conv;
    fm_linear lin;
    fm_attention attn;
    int64_t nx, ny; /* elements of x and y */
    float *x, *y, *dy, *dx;
} layer;

static void layer_free(layer *l, kind k)
{
    if (k == CONV)
        fm_conv2d_free(&l->conv);
    else if (k == LINEAR)
        fm_linear_free(&l->lin);
    else
        fm_attention_free(&l->attn);
    fm_arena_free(&l->a);
    fm_params_free(&l->p);
    fm_dnn_free(&l->d);
    free(l->x), free(l->y), free(l->dy), free(l->dx);
}

static int layer_init(layer *l, const shape *s, int bf16, fm_err *e)
{
    memset(l, 0, sizeof *l);
    FM_TRY(fm_dnn_init(&l->d, e));
    l->d.bf16 = bf16;
    FM_TRY(fm_params_init(&l->p, 8, 1 << 22, 7, e));
    FM_TRY(fm_arena_init(&l->a, 256 << 20, e));
    if (s->k == CONV) {
        FM_TRY(fm_conv2d_init(&l->conv, &l->d, &l->p, &l->a, "c", s->cin, s->cout, s->ksz, s->stride, s->pad, 1,
                              s->n, s->h, s->w, e));
        l->nx = s->n * s->h * s->w * s->cin;
        l->ny = s->n * l->conv.ho * l->conv.wo * s->cout;
    } else if (s->k == LINEAR) {
        FM_TRY(fm_linear_init(&l->lin, &l->d, &l->p, &l->a, "fc", s->cin, s->cout, 1, s->n, e));
        l->nx = s->n * s->cin;
        l->ny = s->n * s->cout;
    } else {
        FM_TRY(fm_attention_init(&l->attn, &l->d, &l->p, &l->a, "at", s->cin, s->cout, s->n, s->h, e));
        /* nonzero biases, so that their paths are exercised too */
        fm_fill_normal(l->attn.in_proj.bias->w.data, 3 * s->cin, 9, 1, 0);
        fm_fill_normal(l->attn.out_proj.bias->w.data, s->cin, 9, 2, 0);
        l->nx = l->ny = s->n * s->h * s->cin;
    }
    l->x = malloc((size_t)l->nx * sizeof(float));
    l->dx = malloc((size_t)l->nx * sizeof(float));
    l->y = malloc((size_t)l->ny * sizeof(float));
    l->dy = malloc((size_t)l->ny * sizeof(float));
    if (!l->x || !l->dx || !l->y || !l->dy)
        return fm_fail(e, FM_ERR_INTERNAL, "out of memory");
    fm_fill_normal(l->x, l->nx, 5, 1, 0);
    fm_fill_normal(l->dy, l->ny, 5, 2, 0);
    return FM_OK;
}

static int layer_run(layer *l, kind k, fm_err *e)
{
    if (k == CONV) {
        FM_TRY(fm_conv2d_forward(&l->conv, l->x, l->y, e));
        return fm_conv2d_backward(&l->conv, l->x, l->dy, l->dx, e);
    }
    if (k == LINEAR) {
        FM_TRY(fm_linear_forward(&l->lin, l->x, l->y, e));
        return fm_linear_backward(&l->lin, l->x, l->dy, l->dx, e);
    }
    FM_TRY(fm_attention_forward(&l->attn, l->x, l->y, e));
    return fm_attention_backward(&l->attn, l->x, l->dy, l->dx, e);
}

/* Worst relative error of y, dx and every parameter gradient of a vs b
 * (but the 1-D ones when skip_1d). */
static double worst(const layer *a, const layer *b, int skip_1d, const char **what)
{
    double w = fm_rel_err(a->y, b->y, a->ny, 1e-12);
    *what = "y";
    double r = fm_rel_err(a->dx, b->dx, a->nx, 1e-12);
    if (r > w)
        w = r, *what = "dx";
    for (int i = 0; i < a->p.n; i++) {
        const fm_param *pa = &a->p.items[i], *pb = &b->p.items[i];
        if (skip_1d && pa->g.ndim == 1)
            continue;
        r = fm_rel_err(pa->g.data, pb->g.data, (long)fm_tensor_numel(&pa->g), 1e-12);
        if (r > w)
            w = r, *what = pa->name;
    }
    return w;
}

static int check(const shape *s, const char *name)
{
    fm_err e = { 0 };
    layer b16, f32, r32; /* bf16; fp32 on rounded operands; plain fp32 */
    CHECK_OK(layer_init(&b16, s, 1, &e), &e);
    CHECK_OK(layer_init(&f32, s, 0, &e), &e);
    CHECK_OK(layer_init(&r32, s, 0, &e), &e);
    CHECK(b16.p.numel == f32.p.numel, "parameter counts differ");
    if (s->k == CONV) /* fm_wgrad16 where the CPU has AVX512-BF16 (tests/nn/test_wgrad16) and the shape suits it */
        CHECK((b16.conv.wb.xp != NULL) == (s->ksz > 1 && s->cin % 16 == 0 && !fm_test_no_avx512bf16()),
              "%s: fm_wgrad16 %s", name,
              b16.conv.wb.xp ? "taken where it does not apply" : "not taken");
    /* same weights everywhere (also the attention biases set above) */
    memcpy(f32.p.data, b16.p.data, b16.p.numel * sizeof(float));
    memcpy(r32.p.data, b16.p.data, b16.p.numel * sizeof(float));
    CHECK_OK(layer_run(&b16, s->k, &e), &e);
    CHECK_OK(layer_run(&f32, s->k, &e), &e);
    const char *what;
    double vs_fp32 = worst(&b16, &f32, 0, &what);
    printf("  %s: bf16 vs fp32: worst rel err %.2e (%s)\n", name, vs_fp32, what);
    CHECK(vs_fp32 > 1e-5, "%s: bf16 results equal fp32 (%.2e): bf16 was not used", name, vs_fp32);
    CHECK(vs_fp32 < 3e-2, "%s: bf16 too far from fp32: %.2e in %s", name, vs_fp32, what);
    if (s->k != ATTN) { /* attention keeps its per-head products in fp32: no exact twin */
        round_bf16(r32.x, r32.nx);
        round_bf16(r32.dy, r32.ny);
        for (int i = 0; i < r32.p.n; i++) /* the weights, not the biases (fp32 in bf16 mode too) */
            if (r32.p.items[i].w.ndim > 1)
                round_bf16(r32.p.items[i].w.data, fm_tensor_numel(&r32.p.items[i].w));
        CHECK_OK(layer_run(&r32, s->k, &e), &e);
        /* linear, and conv where fm_wgrad16 makes its weight gradients,
         * sum the fp32 dy for the bias gradient (oneDNN's conv kernel sums
         * the bf16 operand): that one equals plain fp32 */
        const fm_param *fp32_bias = s->k == LINEAR ? b16.lin.bias : s->k == CONV && b16.conv.wb.xp ? b16.conv.bias : NULL;
        const fm_param *f32_bias = s->k == LINEAR ? f32.lin.bias : f32.conv.bias;
        double vs_rounded = worst(&b16, &r32, fp32_bias != NULL, &what);
        if (fp32_bias) {
            double eb = fm_rel_err(fp32_bias->g.data, f32_bias->g.data, s->cout, 1e-12);
            CHECK(eb < 1e-6, "%s: the bias gradient must be the fp32 column sum of dy: %.2e", name, eb);
        }
        printf("  %s: bf16 vs fp32 on bf16-rounded operands: worst rel err %.2e (%s)\n", name, vs_rounded, what);
        CHECK(vs_rounded < 1e-4, "%s: bf16 is not fp32 arithmetic on rounded operands: %.2e in %s", name,
              vs_rounded, what);
    }
    if (s->k != ATTN) { /* backward given x after a forward on another buffer: rounds x again */
        float *g0 = malloc(b16.p.numel * sizeof(float)), *x2 = malloc((size_t)b16.nx * sizeof(float));
        CHECK(g0 && x2, "out of memory");
        memcpy(g0, b16.p.grad, b16.p.numel * sizeof(float));
        fm_fill_normal(x2, b16.nx, 6, 1, 0);
        if (s->k == CONV) {
            CHECK_OK(fm_conv2d_forward(&b16.conv, x2, b16.y, &e), &e);
            CHECK_OK(fm_conv2d_backward(&b16.conv, b16.x, b16.dy, b16.dx, &e), &e);
        } else {
            CHECK_OK(fm_linear_forward(&b16.lin, x2, b16.y, &e), &e);
            CHECK_OK(fm_linear_backward(&b16.lin, b16.x, b16.dy, b16.dx, &e), &e);
        }
        double eg = fm_rel_err(b16.p.grad, g0, (long)b16.p.numel, 1e-12);
        CHECK(eg < 1e-6, "%s: backward used the bf16 copy of another input: %.2e", name, eg);
        free(g0);
        free(x2);
    }
    layer_free(&b16, s->k);
    layer_free(&f32, s->k);
    layer_free(&r32, s->k);
    return 0;
}

static int test_conv3x3(void)
{
    shape s = { CONV, 16, 8, 8, 64, 128, 3, 1, 1 };
    return check(&s, "conv 3x3 64->128 8x8 b16");
}

static int test_conv_stride2_odd(void)
{
    shape s = { CONV, 3, 9, 7, 5, 12, 3, 2, 1 };
    return check(&s, "conv 3x3 s2 5->12 9x7 b3");
}

static int test_conv1x1(void)
{
    shape s = { CONV, 4, 8, 8, 32, 16, 1, 1, 0 };
    return check(&s, "conv 1x1 32->16");
}

static int test_linear(void)
{
    shape s = { LINEAR, 96, 0, 0, 72, 200, 0, 0, 0 };
    return check(&s, "linear 72->200 x96");
}

/* 600 output columns: the bias gradient summed in the pass that rounds dy
 * (linear.c's column_sum with dy16), with a partial last block of columns */
static int test_linear_wide(void)
{
    shape s = { LINEAR, 40, 0, 0, 48, 600, 0, 0, 0 };
    return check(&s, "linear 48->600 x40");
}

static int test_linear_odd(void)
{
    shape s = { LINEAR, 5, 0, 0, 3, 7, 0, 0, 0 };
    return check(&s, "linear 3->7 x5");
}

static int test_attention(void)
{
    shape s = { ATTN, 8, 16, 0, 64, 4, 0, 0, 0 };
    return check(&s, "attention C64 4 heads T16 b8");
}

static int keeps_x(const layer *l, kind k, const float *x)
{
    if (k == LINEAR)
        return fm_linear_keeps_x(&l->lin, x);
    if (k == ATTN)
        return fm_attention_keeps_x(&l->attn, x);
    return fm_conv2d_keeps_x(&l->conv, x);
}

/* fm_linear_keeps_x / fm_attention_keeps_x / fm_conv2d_keeps_x: true under bf16 for the buffer
 * of the latest forward only, never in fp32; and when true, backward really
 * does not read x (the models skip recomputing it): the gradients stay the
 * same with x overwritten. */
static int test_keeps_x(void)
{
    fm_err e;
    const shape sl = { LINEAR, 32, 1, 1, 24, 40, 0, 0, 0 }, sa = { ATTN, 3, 16, 1, 32, 2, 0, 0, 0 };
    const shape sc = { CONV, 2, 5, 6, 16, 8, 3, 1, 1 };
    const shape *shapes[3] = { &sl, &sa, &sc };
    static const char *names[3] = { "linear", "attention", "conv" };
    for (int k = 0; k < 3; k++) {
        const shape *s = shapes[k];
        layer f32, b16;
        CHECK_OK(layer_init(&f32, s, 0, &e), &e);
        CHECK_OK(layer_init(&b16, s, 1, &e), &e);
        CHECK_OK(layer_run(&f32, s->k, &e), &e);
        CHECK_OK(layer_run(&b16, s->k, &e), &e);
        CHECK(!keeps_x(&f32, s->k, f32.x), "fp32 %s must not claim to keep x", names[k]);
        CHECK(keeps_x(&b16, s->k, b16.x), "bf16 %s must keep the copy of its forward input", names[k]);
        CHECK(!keeps_x(&b16, s->k, b16.dx), "bf16 %s keeps the copy of x, not of another buffer", names[k]);
        float *g0 = malloc(b16.p.numel * sizeof(float));
        CHECK(g0, "out of memory");
        memcpy(g0, b16.p.grad, b16.p.numel * sizeof(float));
        fm_fill_normal(b16.x, b16.nx, 77, 1, 0); /* x overwritten: backward must not see it */
        if (s->k == LINEAR)
            CHECK_OK(fm_linear_backward(&b16.lin, b16.x, b16.dy, b16.dx, &e), &e);
        else if (s->k == ATTN)
            CHECK_OK(fm_attention_backward(&b16.attn, b16.x, b16.dy, b16.dx, &e), &e);
        else
            CHECK_OK(fm_conv2d_backward(&b16.conv, b16.x, b16.dy, b16.dx, &e), &e);
        double eg = fm_rel_err(b16.p.grad, g0, (long)b16.p.numel, 1e-12);
        CHECK(eg == 0.0, "%s: keeps_x is set but backward read x: gradients moved by %.2e", names[k], eg);
        free(g0);
        layer_free(&b16, s->k);
        layer_free(&f32, s->k);
    }
    return 0;
}

/* fm_conv2d_forward16 on an operand a producer rounded into
 * fm_conv2d_operand16 gives forward's y and backward's gradients bit for
 * bit; `as` is never read and keeps_x(as) holds. */
static int test_forward16(void)
{
    fm_err e;
    const shape sc = { CONV, 3, 5, 6, 32, 8, 3, 1, 1 };
    layer a, b;
    CHECK_OK(layer_init(&a, &sc, 1, &e), &e);
    CHECK_OK(layer_init(&b, &sc, 1, &e), &e);
    memcpy(b.p.data, a.p.data, a.p.numel * sizeof(float));
    CHECK(fm_conv2d_operand16(&b.conv) != NULL, "no bf16 operand under bf16");
    CHECK_OK(layer_run(&a, CONV, &e), &e);
    fm_f32_to_bf16_n(fm_conv2d_operand16(&b.conv), b.x, b.nx);
    float *as = malloc((size_t)b.nx * sizeof(float));
    CHECK(as, "out of memory");
    fm_fill_normal(as, b.nx, 9, 9, 0); /* garbage: never read */
    CHECK_OK(fm_conv2d_forward16(&b.conv, as, b.y, &e), &e);
    CHECK(fm_conv2d_keeps_x(&b.conv, as), "keeps_x(as) must hold after forward16");
    CHECK_OK(fm_conv2d_backward(&b.conv, as, b.dy, b.dx, &e), &e);
    const int same = memcmp(a.y, b.y, (size_t)a.ny * sizeof(float)) == 0 &&
                     memcmp(a.dx, b.dx, (size_t)a.nx * sizeof(float)) == 0 &&
                     memcmp(a.p.grad, b.p.grad, a.p.numel * sizeof(float)) == 0;
    free(as);
    layer_free(&a, CONV);
    layer_free(&b, CONV);
    CHECK(same, "forward16 + backward differ from forward + backward");
    return 0;
}

/* The threaded array rounding equals the scalar rule on every class of input. */
static int test_round_array(void)
{
    enum { N = 200000 };
    float *x = malloc(N * sizeof(float));
    uint16_t *a = malloc(N * sizeof(uint16_t));
    CHECK(x && a, "out of memory");
    fm_fill_normal(x, N, 3, 1, 0);
    const float special[] = { 0.0f, -0.0f, INFINITY, -INFINITY, NAN, 1e-40f, -1e-40f, 3.4e38f, 1.00390625f,
                              1.01171875f /* ties to even, both ways */ };
    for (size_t i = 0; i < sizeof special / sizeof *special; i++)
        x[i] = special[i];
    for (int i = 100; i < 1000; i++) /* exponents far apart */
        x[i] = ldexpf(x[i], (i % 200) - 100);
    fm_f32_to_bf16_n(a, x, N);
    for (int i = 0; i < N; i++)
        CHECK(a[i] == fm_f32_to_bf16(x[i]), "element %d (%g): %04x vs %04x", i, x[i], a[i], fm_f32_to_bf16(x[i]));
    CHECK(isnan(fm_bf16_to_f32(a[4])), "NaN must stay NaN");
    CHECK(fm_bf16_to_f32(a[8]) == 1.0f && fm_bf16_to_f32(a[9]) == 1.015625f, "ties must round to even");
    free(x);
    free(a);
    return 0;
}

int main(int argc, char **argv)
{
    const fm_test tests[] = {
        TEST(test_round_array), TEST(test_conv3x3), TEST(test_conv_stride2_odd), TEST(test_conv1x1),
        TEST(test_linear),      TEST(test_linear_wide), TEST(test_linear_odd), TEST(test_attention), TEST(test_keeps_x), TEST(test_forward16),
    };
    return fm_test_main("nn/bf16", tests, (int)(sizeof tests / sizeof tests[0]), argc, argv);
}
