/* test_conv32.c - the real-tap fp32 3x3 convolution kernel (conv16's fp32
 * twin), forward and backward-data, against a naive double-precision loop, for both map widths, every tile remainder of the
 * output channels, several chunks of input channels and one image; the
 * weight packings; independence of the thread count;
 * and the shapes it refuses. */
#include <math.h>
#include <omp.h>
#include <stdlib.h>
#include <string.h>

#include "fm/conv32.h"
#include "fm/rng.h"
#include "fm/tensor.h"
#include "convref.h"
#include "test.h"

typedef struct ccase {
    const char *name;
    int64_t n, h, w, cin, cout;
} ccase;

static const ccase cases[] = {
    /* name                            n   h  w  cin  cout */
    { "4x4, one vector of outputs",    3,  4, 4, 16,  16 },
    { "8x8, two vectors",              2,  8, 8, 32,  32 },
    { "4x4, 5 vectors (3 + 2)",        4,  4, 4, 64,  80 },
    { "8x8, Cin 8: refused",           2,  8, 8, 8,   48 },
    { "4x4, 256 inputs",               2,  4, 4, 256, 128 },
    { "6x4: three row pairs",          2,  6, 4, 48,  64 },
    { "8x8, 192 -> 64 (U-Net up)",     3,  8, 8, 192, 64 },
    { "one image",                     1,  8, 8, 64,  64 },
    { "3x8: odd height, one row",      2,  3, 8, 16,  16 },
    { "4x4, Cout 24: refused",         2,  4, 4, 16,  24 },
};

/* Operands of one case: x, dy, weights and bias. */
typedef struct operands {
    fm_conv32 g, gt;
    float *x, *dy, *w, *b;
    int64_t nx, ny, nw;
} operands;

static void operands_free(operands *o) { free(o->x), free(o->dy), free(o->w), free(o->b); }

static int operands_make(const ccase *c, operands *o)
{
    memset(o, 0, sizeof *o);
    o->g = (fm_conv32){ .n = c->n, .h = c->h, .w = c->w, .cin = c->cin, .cout = c->cout };
    o->gt = (fm_conv32){ .n = c->n, .h = c->h, .w = c->w, .cin = c->cout, .cout = c->cin };
    o->nx = c->n * c->h * c->w * c->cin;
    o->ny = c->n * c->h * c->w * c->cout;
    o->nw = c->cout * c->cin * 9;
    o->x = malloc((size_t)o->nx * sizeof(float));
    o->dy = malloc((size_t)o->ny * sizeof(float));
    o->w = malloc((size_t)o->nw * sizeof(float));
    o->b = malloc((size_t)c->cout * sizeof(float));
    if (!o->x || !o->dy || !o->w || !o->b)
        return 1;
    fm_fill_normal(o->x, o->nx, 7, 1, 0);
    fm_fill_normal(o->dy, o->ny, 7, 2, 0);
    fm_fill_normal(o->w, o->nw, 7, 3, 0);
    fm_fill_normal(o->b, c->cout, 7, 4, 0);
    return 0;
}

static int run_forward(const operands *o, int threads, float *y)
{
    float *wp = malloc(fm_conv32_packed_len(&o->g) * sizeof(float));
    if (!wp)
        return 1;
    const int saved = omp_get_max_threads();
    omp_set_num_threads(threads);
    fm_conv32_pack(wp, NULL, o->w, &o->g);
    fm_conv32_run(&o->g, o->x, wp, o->b, y);
    omp_set_num_threads(saved);
    free(wp);
    return 0;
}

static int run_backward_data(const operands *o, int threads, float *dx)
{
    float *wp = malloc(fm_conv32_packed_len(&o->gt) * sizeof(float));
    if (!wp)
        return 1;
    const int saved = omp_get_max_threads();
    omp_set_num_threads(threads);
    fm_conv32_pack(NULL, wp, o->w, &o->g);
    fm_conv32_run(&o->gt, o->dy, wp, NULL, dx);
    omp_set_num_threads(saved);
    free(wp);
    return 0;
}

static int test_against_reference(void)
{
    for (size_t k = 0; k < sizeof cases / sizeof *cases; k++) {
        const ccase *c = &cases[k];
        operands o;
        CHECK(operands_make(c, &o) == 0, "out of memory");
        const int fwd = fm_conv32_usable(&o.g), bwd = fm_conv32_usable(&o.gt);
        const int want_fwd = c->cin % 16 == 0 && c->cout % 16 == 0 && c->h % (8 / c->w) == 0, want_bwd = want_fwd;
        CHECK(fwd == want_fwd && bwd == want_bwd, "%s: usable forward %d backward-data %d", c->name, fwd, bwd);
        float *y = malloc((size_t)o.ny * sizeof(float)), *dx = malloc((size_t)o.nx * sizeof(float));
        double *ry = malloc((size_t)o.ny * sizeof(double)), *rdx = malloc((size_t)o.nx * sizeof(double));
        CHECK(y && dx && ry && rdx, "out of memory");
        double ey = 0, edx = 0;
        if (fwd) {
            for (int64_t i = 0; i < o.ny; i++)
                y[i] = NAN; /* every element must be written */
            CHECK(run_forward(&o, 2, y) == 0, "out of memory");
            fm_ref_conv3x3(o.x, o.w, o.b, c->n, c->h, c->w, c->cin, c->cout, ry);
            ey = fm_ref_rel_err(y, ry, o.ny);
        }
        if (bwd) {
            for (int64_t i = 0; i < o.nx; i++)
                dx[i] = NAN;
            CHECK(run_backward_data(&o, 2, dx) == 0, "out of memory");
            fm_ref_conv3x3_dx(o.dy, o.w, c->n, c->h, c->w, c->cin, c->cout, rdx);
            edx = fm_ref_rel_err(dx, rdx, o.nx);
        }
        free(y), free(dx), free(ry), free(rdx), operands_free(&o);
        fprintf(stderr, "  %s: rel err y %.1e dx %.1e\n", c->name, ey, edx);
        CHECK(ey <= 2e-6 && edx <= 2e-6, "%s: rel err y %.3g dx %.3g", c->name, ey, edx);
    }
    return 0;
}

/* Same bits with 1 and 2 threads: each output belongs to one task. */
static int test_threads(void)
{
    const ccase c = { "unet 4x4", 16, 4, 4, 256, 128 };
    operands o;
    CHECK(operands_make(&c, &o) == 0, "out of memory");
    float *a = malloc((size_t)o.ny * sizeof(float)), *b = malloc((size_t)o.ny * sizeof(float));
    float *da = malloc((size_t)o.nx * sizeof(float)), *db = malloc((size_t)o.nx * sizeof(float));
    CHECK(a && b && da && db, "out of memory");
    int bad = run_forward(&o, 1, a) || run_forward(&o, 2, b) || run_backward_data(&o, 1, da) ||
              run_backward_data(&o, 2, db);
    const int same = !bad && !memcmp(a, b, (size_t)o.ny * sizeof(float)) && !memcmp(da, db, (size_t)o.nx * sizeof(float));
    free(a), free(b), free(da), free(db), operands_free(&o);
    CHECK(same, "1 and 2 threads differ");
    return 0;
}

/* The packed weights: forward [tap][c][o] = W[o][c][tap], backward-data
 * [8 - tap][o][c] = W[o][c][tap], exactly; both in one pass equal each alone. */
static int test_packing(void)
{
    const fm_conv32 g = { .n = 1, .h = 4, .w = 4, .cin = 32, .cout = 16 };
    const int64_t nw = g.cin * g.cout * 9;
    float *w = malloc((size_t)nw * sizeof(float)), *wp = malloc((size_t)nw * sizeof(float));
    float *wt = malloc((size_t)nw * sizeof(float)), *wp1 = malloc((size_t)nw * sizeof(float));
    float *wt1 = malloc((size_t)nw * sizeof(float));
    CHECK(w && wp && wt && wp1 && wt1, "out of memory");
    fm_fill_normal(w, nw, 5, 1, 0);
    fm_conv32_pack(wp, wt, w, &g);
    fm_conv32_pack(wp1, NULL, w, &g);
    fm_conv32_pack(NULL, wt1, w, &g);
    int bad = memcmp(wp, wp1, (size_t)nw * sizeof(float)) || memcmp(wt, wt1, (size_t)nw * sizeof(float));
    for (int64_t tap = 0; tap < 9 && !bad; tap++)
        for (int64_t c = 0; c < g.cin && !bad; c++)
            for (int64_t o = 0; o < g.cout && !bad; o++) {
                const float want = w[(o * g.cin + c) * 9 + tap];
                bad = wp[(tap * g.cin + c) * g.cout + o] != want || wt[((8 - tap) * g.cout + o) * g.cin + c] != want;
            }
    free(w), free(wp), free(wt), free(wp1), free(wt1);
    CHECK(!bad, "packing");
    return 0;
}

static int test_usable(void)
{
    fm_conv32 g = { .n = 2, .h = 4, .w = 4, .cin = 16, .cout = 16 };
    CHECK(fm_conv32_usable(&g), "4x4 16 -> 16");
    g.w = 16;
    CHECK(!fm_conv32_usable(&g), "width 16");
    g.w = 4, g.h = 5;
    CHECK(!fm_conv32_usable(&g), "4-wide map of odd height");
    g.h = 4, g.cout = 24;
    CHECK(!fm_conv32_usable(&g), "Cout 24");
    g.cout = 16, g.cin = 8;
    CHECK(!fm_conv32_usable(&g), "Cin 8");
    g.cin = 16, g.n = 0;
    CHECK(!fm_conv32_usable(&g), "no images");
    return 0;
}

int main(int argc, char **argv)
{
    static const fm_test tests[] = {
        /* without AVX-512 fm_conv32_usable says no to every shape */
        TEST_UNLESS(test_against_reference, fm_test_no_avx512),
        TEST_UNLESS(test_threads, fm_test_no_avx512),
        TEST_UNLESS(test_packing, fm_test_no_avx512),
        TEST_UNLESS(test_usable, fm_test_no_avx512),
    };
    return fm_test_main("nn/conv32", tests, sizeof tests / sizeof *tests, argc, argv);
}
