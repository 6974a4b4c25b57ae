/* test_conv16.c - the real-tap bf16 3x3 convolution kernel, forward and
 * backward-data, against a naive double-precision loop over the same
 * bf16-rounded operands, for both map widths, every tile remainder of the
 * output channels, several chunks of input channels and one image; the
 * weight packings against fm_f32_to_bf16; independence of the thread count;
 * and the shapes it refuses. */
#include <math.h>
#include <omp.h>
#include <stdlib.h>
#include <string.h>

#include "fm/conv16.h"
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
    { "8x8, Cin 8 (bwd: Cout 8, no)",  2,  8, 8, 8,   48 },
    { "4x4, 256 inputs: 10 chunks",    2,  4, 4, 256, 128 },
    { "6x4: three row pairs",          2,  6, 4, 48,  64 },
    { "8x8, 192 -> 64 (U-Net up)",     3,  8, 8, 192, 64 },
    { "one image",                     1,  8, 8, 64,  64 },
    { "3x8: odd height, one row",      2,  3, 8, 16,  16 },
};

/* Operands of one case (bf16-rounded values in fp32), the bf16 copies the
 * kernel reads, and fp32 weights and bias. */
typedef struct operands {
    fm_conv16 g, gt;
    float *x, *dy, *w, *b;
    uint16_t *x16, *dy16;
    int64_t nx, ny, nw;
} operands;

static void operands_free(operands *o) { free(o->x), free(o->dy), free(o->w), free(o->b), free(o->x16), free(o->dy16); }

static void round_into(float *v, uint16_t *v16, int64_t n)
{
    for (int64_t i = 0; i < n; i++) {
        v16[i] = fm_f32_to_bf16(v[i]);
        v[i] = fm_bf16_to_f32(v16[i]);
    }
}

static int operands_make(const ccase *c, operands *o)
{
    memset(o, 0, sizeof *o);
    o->g = (fm_conv16){ .n = c->n, .h = c->h, .w = c->w, .cin = c->cin, .cout = c->cout };
    o->gt = (fm_conv16){ .n = c->n, .h = c->h, .w = c->w, .cin = c->cout, .cout = c->cin };
    o->nx = c->n * c->h * c->w * c->cin;
    o->ny = c->n * c->h * c->w * c->cout;
    o->nw = c->cout * c->cin * 9;
    o->x = malloc((size_t)o->nx * sizeof(float));
    o->dy = malloc((size_t)o->ny * sizeof(float));
    o->w = malloc((size_t)o->nw * sizeof(float));
    o->b = malloc((size_t)c->cout * sizeof(float));
    o->x16 = malloc((size_t)o->nx * 2);
    o->dy16 = malloc((size_t)o->ny * 2);
    if (!o->x || !o->dy || !o->w || !o->b || !o->x16 || !o->dy16)
        return 1;
    fm_fill_normal(o->x, o->nx, 7, 1, 0);
    fm_fill_normal(o->dy, o->ny, 7, 2, 0);
    fm_fill_normal(o->w, o->nw, 7, 3, 0);
    fm_fill_normal(o->b, c->cout, 7, 4, 0);
    round_into(o->x, o->x16, o->nx);
    round_into(o->dy, o->dy16, o->ny);
    for (int64_t i = 0; i < o->nw; i++) /* the kernel rounds the weights itself */
        o->w[i] = fm_bf16_to_f32(fm_f32_to_bf16(o->w[i]));
    return 0;
}

static int run_forward(const operands *o, int threads, float *y)
{
    uint16_t *wp = malloc(fm_conv16_packed_len(&o->g) * 2);
    if (!wp)
        return 1;
    const int saved = omp_get_max_threads();
    omp_set_num_threads(threads);
    fm_conv16_pack(wp, NULL, o->w, &o->g);
    fm_conv16_run(&o->g, o->x16, wp, o->b, y);
    omp_set_num_threads(saved);
    free(wp);
    return 0;
}

static int run_backward_data(const operands *o, int threads, float *dx)
{
    uint16_t *wp = malloc(fm_conv16_packed_len(&o->gt) * 2);
    if (!wp)
        return 1;
    const int saved = omp_get_max_threads();
    omp_set_num_threads(threads);
    fm_conv16_pack(NULL, wp, o->w, &o->g);
    fm_conv16_run(&o->gt, o->dy16, wp, NULL, dx);
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
        const int fwd = fm_conv16_usable(&o.g), bwd = fm_conv16_usable(&o.gt);
        const int want_bwd = c->cin % 16 == 0 && c->h % (8 / c->w) == 0, want_fwd = c->h % (8 / c->w) == 0;
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
        CHECK(ey <= 1e-5 && edx <= 1e-5, "%s: rel err y %.3g dx %.3g", c->name, ey, edx);
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

/* The packed weights: element (tap, pair p, channel o, k) is W[o][2p+k][tap]
 * rounded as fm_f32_to_bf16 rounds; the backward-data packing the same for
 * the kernel turned by 180 degrees with the channels swapped. */
static int test_packing(void)
{
    const fm_conv16 g = { .n = 1, .h = 4, .w = 4, .cin = 24, .cout = 32 };
    const int64_t nw = g.cin * g.cout * 9;
    float *w = malloc((size_t)nw * sizeof(float));
    uint16_t *wp = malloc((size_t)nw * 2), *wt = malloc((size_t)nw * 2);
    CHECK(w && wp && wt, "out of memory");
    fm_fill_normal(w, nw, 5, 1, 0);
    w[7] = 1.0f + 0x1p-8f; /* a tie: rounds to even */
    uint16_t *wp1 = malloc((size_t)nw * 2), *wt1 = malloc((size_t)nw * 2);
    CHECK(wp1 && wt1, "out of memory");
    fm_conv16_pack(wp, wt, w, &g);
    fm_conv16_pack(wp1, NULL, w, &g);
    fm_conv16_pack(NULL, wt1, w, &g);
    int bad = memcmp(wp, wp1, (size_t)nw * 2) || memcmp(wt, wt1, (size_t)nw * 2);
    free(wp1), free(wt1);
    CHECK(!bad, "both packings in one pass differ from each alone");
    for (int64_t tap = 0; tap < 9 && !bad; tap++)
        for (int64_t c = 0; c < g.cin && !bad; c++)
            for (int64_t o = 0; o < g.cout && !bad; o++) {
                const uint16_t want = fm_f32_to_bf16(w[(o * g.cin + c) * 9 + tap]);
                const uint16_t got = wp[((tap * (g.cin / 2) + c / 2) * g.cout + o) * 2 + c % 2];
                const uint16_t got_t = wt[(((8 - tap) * (g.cout / 2) + o / 2) * g.cin + c) * 2 + o % 2];
                if (got != want || got_t != want) {
                    fprintf(stderr, "  tap %lld c %lld o %lld: %04x %04x, want %04x\n", (long long)tap,
                            (long long)c, (long long)o, got, got_t, want);
                    bad = 1;
                }
            }
    free(w), free(wp), free(wt);
    CHECK(!bad, "packing");
    return 0;
}

static int test_usable(void)
{
    fm_conv16 g = { .n = 2, .h = 4, .w = 4, .cin = 16, .cout = 16 };
    CHECK(fm_conv16_usable(&g), "4x4 16 -> 16");
    g.w = 16;
    CHECK(!fm_conv16_usable(&g), "width 16");
    g.w = 4, g.h = 5;
    CHECK(!fm_conv16_usable(&g), "4-wide map of odd height");
    g.h = 4, g.cout = 24;
    CHECK(!fm_conv16_usable(&g), "Cout 24");
    g.cout = 16, g.cin = 12;
    CHECK(!fm_conv16_usable(&g), "Cin 12");
    g.cin = 16, g.n = 0;
    CHECK(!fm_conv16_usable(&g), "no images");
    return 0;
}

int main(int argc, char **argv)
{
    static const fm_test tests[] = {
        /* without AVX512-BF16 fm_conv16_usable says no to every shape */
        TEST_UNLESS(test_against_reference, fm_test_no_avx512bf16),
        TEST_UNLESS(test_threads, fm_test_no_avx512bf16),
        TEST_UNLESS(test_packing, fm_test_no_avx512bf16),
        TEST_UNLESS(test_usable, fm_test_no_avx512bf16),
    };
    return fm_test_main("nn/conv16", tests, sizeof tests / sizeof *tests, argc, argv);
}
