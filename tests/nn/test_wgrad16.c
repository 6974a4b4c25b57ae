/* test_wgrad16.c - the pair-packed bf16 weight-gradient kernel against a
 * naive double-precision loop over the same bf16-rounded operands, for
 * every tile remainder, kernel size, stride, padding and odd batches; the
 * packing and the bias sums; and independence of the thread count. */
#include <math.h>
#include <omp.h>
#include <stdlib.h>
#include <string.h>

#include "fm/rng.h"
#include "fm/tensor.h"
#include "fm/wgrad16.h"
#include "test.h"

typedef struct wcase {
    const char *name;
    int64_t n, h, w, cin, cout, kh, kw, stride, pt, pl, pb, pr;
} wcase;

static int64_t out_size(int64_t in, int64_t k, int64_t s, int64_t p0, int64_t p1) { return (in + p0 + p1 - k) / s + 1; }

/* Operands of one case: fp32 x and dy, and their bf16 roundings back in fp32. */
typedef struct operands {
    fm_wgrad16 g;
    float *x, *dy, *xr, *dyr;
    int64_t nx, ndy, nw;
} operands;

static void operands_free(operands *o)
{
    free(o->x), free(o->dy), free(o->xr), free(o->dyr);
}

static int operands_make(const wcase *c, operands *o)
{
    memset(o, 0, sizeof *o);
    o->g = (fm_wgrad16){ .n = c->n, .h = c->h, .w = c->w, .cin = c->cin, .cout = c->cout, .kh = c->kh, .kw = c->kw,
                         .stride = c->stride, .pad_t = c->pt, .pad_l = c->pl };
    o->g.ho = out_size(c->h, c->kh, c->stride, c->pt, c->pb);
    o->g.wo = out_size(c->w, c->kw, c->stride, c->pl, c->pr);
    o->nx = c->n * c->h * c->w * c->cin;
    o->ndy = c->n * o->g.ho * o->g.wo * c->cout;
    o->nw = c->cout * c->cin * c->kh * c->kw;
    o->x = malloc((size_t)o->nx * sizeof(float));
    o->dy = malloc((size_t)o->ndy * sizeof(float));
    o->xr = malloc((size_t)o->nx * sizeof(float));
    o->dyr = malloc((size_t)o->ndy * sizeof(float));
    if (!o->x || !o->dy || !o->xr || !o->dyr)
        return 1;
    fm_fill_normal(o->x, o->nx, 11, 1, 0);
    fm_fill_normal(o->dy, o->ndy, 11, 2, 0);
    for (int64_t i = 0; i < o->nx; i++)
        o->xr[i] = fm_bf16_to_f32(fm_f32_to_bf16(o->x[i]));
    for (int64_t i = 0; i < o->ndy; i++)
        o->dyr[i] = fm_bf16_to_f32(fm_f32_to_bf16(o->dy[i]));
    return 0;
}

/* The definition, in double, over the rounded operands. */
static void reference(const operands *o, double *dw)
{
    const fm_wgrad16 *g = &o->g;
    for (int64_t oc = 0; oc < g->cout; oc++)
        for (int64_t c = 0; c < g->cin; c++)
            for (int64_t ky = 0; ky < g->kh; ky++)
                for (int64_t kx = 0; kx < g->kw; kx++) {
                    double s = 0;
                    for (int64_t n = 0; n < g->n; n++)
                        for (int64_t i = 0; i < g->ho; i++)
                            for (int64_t j = 0; j < g->wo; j++) {
                                const int64_t iy = i * g->stride + ky - g->pad_t, jx = j * g->stride + kx - g->pad_l;
                                if (iy < 0 || iy >= g->h || jx < 0 || jx >= g->w)
                                    continue;
                                s += (double)o->dyr[((n * g->ho + i) * g->wo + j) * g->cout + oc] *
                                     o->xr[((n * g->h + iy) * g->w + jx) * g->cin + c];
                            }
                    dw[((oc * g->cin + c) * g->kh + ky) * g->kw + kx] = s;
                }
}

/* Run the kernel on o with the given thread count; dw [nw]. */
static int run_kernel(const operands *o, int threads, float *dw)
{
    const fm_wgrad16 *g = &o->g;
    const int64_t hw = g->h * g->w, hwo = g->ho * g->wo;
    uint16_t *x16 = malloc((size_t)o->nx * 2), *xp = malloc(fm_wgrad16_packed_len(g->n, hw, g->cin) * 2);
    uint16_t *dyp = malloc(fm_wgrad16_packed_len(g->n, hwo, g->cout) * 2), *dy16 = malloc((size_t)o->ndy * 2);
    int rc = !x16 || !xp || !dyp || !dy16;
    if (!rc) {
        const int saved = omp_get_max_threads();
        omp_set_num_threads(threads);
        fm_f32_to_bf16_n(x16, o->x, o->nx);
        fm_wgrad16_pack_bf16(xp, x16, g->n, hw, g->cin);
        fm_wgrad16_pack_f32(dyp, dy16, o->dy, g->n, hwo, g->cout, NULL, NULL, 2);
        fm_wgrad16_run(g, xp, dyp, dw);
        omp_set_num_threads(saved);
        for (int64_t i = 0; i < o->ndy && !rc; i++) /* the plain copy is the rounding of dy */
            rc = dy16[i] != fm_f32_to_bf16(o->dy[i]);
        if (rc)
            fprintf(stderr, "  plain bf16 dy differs from fm_f32_to_bf16\n");
    }
    free(x16), free(xp), free(dyp), free(dy16);
    return rc;
}

static const wcase cases[] = {
    /* name                 n    h  w  cin cout kh kw s  pt pl pb pr */
    { "3x3 pad 1, 4x4",     6,   4, 4, 64, 64, 3, 3, 1, 1, 1, 1, 1 },
    { "3x3 pad 1, odd n",   5,   5, 3, 32, 13, 3, 3, 1, 1, 1, 1, 1 },
    { "3x3 stride 2",       4,   8, 7, 48, 20, 3, 3, 2, 1, 1, 1, 1 },
    { "1x1",                3,   3, 3, 80, 7, 1, 1, 1, 0, 0, 0, 0 },
    { "2x2 pad before",     4,   4, 4, 16, 6, 2, 2, 1, 1, 1, 0, 0 },
    { "2x2 pad after",      3,   4, 5, 16, 1, 2, 2, 1, 0, 0, 1, 1 },
    { "2x2 mixed pads",     2,   3, 4, 144, 12, 2, 2, 1, 1, 0, 0, 1 },
    { "n = 1",              1,   4, 4, 16, 6, 3, 3, 1, 1, 1, 1, 1 },
    { "kernel > map",       2,   2, 2, 16, 5, 3, 3, 1, 1, 1, 1, 1 },
    /* pairs summed in several chunks (the last one short), output tiles in 3 groups */
    { "chunks and groups",  37,  4, 4, 64, 200, 3, 3, 1, 1, 1, 1, 1 },
    { "one pair per chunk", 9,   8, 8, 64, 100, 3, 3, 1, 1, 1, 1, 1 },
};

static int test_against_reference(void)
{
    for (size_t k = 0; k < sizeof cases / sizeof *cases; k++) {
        const wcase *c = &cases[k];
        operands o;
        CHECK(operands_make(c, &o) == 0, "out of memory");
        CHECK(fm_wgrad16_usable(&o.g), "%s: kernel not usable on this machine", c->name);
        double *ref = malloc((size_t)o.nw * sizeof(double));
        float *dw = malloc((size_t)o.nw * sizeof(float));
        CHECK(ref && dw, "out of memory");
        for (int64_t i = 0; i < o.nw; i++)
            dw[i] = NAN; /* every element must be written */
        reference(&o, ref);
        int bad = run_kernel(&o, 2, dw);
        double max_err = 0, max_ref = 0;
        for (int64_t i = 0; i < o.nw; i++) {
            max_ref = fmax(max_ref, fabs(ref[i]));
            const double d = fabs(dw[i] - ref[i]);
            max_err = isnan(d) ? INFINITY : fmax(max_err, d);
        }
        free(ref), free(dw), operands_free(&o);
        CHECK(!bad, "%s: packing", c->name);
        /* the products of bf16 operands are exact in fp32; only the fp32
         * sums (at most a few hundred terms here) round: well under 1e-5 */
        CHECK(max_err <= 1e-5 * max_ref, "%s: max |dw - ref| %.3g (max |ref| %.3g)", c->name, max_err, max_ref);
    }
    return 0;
}

/* Same bits with 1 and 2 threads: each tile has one owner. */
static int test_threads(void)
{
    const wcase c = { "unet 4x4", 40, 4, 4, 128, 128, 3, 3, 1, 1, 1, 1, 1 }; /* 20 pairs: several chunks */
    operands o;
    CHECK(operands_make(&c, &o) == 0, "out of memory");
    float *a = malloc((size_t)o.nw * sizeof(float)), *b = malloc((size_t)o.nw * sizeof(float));
    CHECK(a && b, "out of memory");
    int bad = run_kernel(&o, 1, a) || run_kernel(&o, 2, b);
    const int same = !bad && memcmp(a, b, (size_t)o.nw * sizeof(float)) == 0;
    free(a), free(b), operands_free(&o);
    CHECK(same, "1 and 2 threads differ");
    return 0;
}

/* Packing: image 2m in the low half, 2m+1 in the high half, zero for the
 * missing image of an odd batch. */
static int test_pack_layout(void)
{
    enum { n = 3, hw = 2, c = 19 }; /* one vector and a tail */
    uint16_t src[n * hw * c], dst[4 * hw * c];
    float srcf[n * hw * c];
    for (int i = 0; i < n * hw * c; i++)
        src[i] = (uint16_t)(100 + i), srcf[i] = fm_bf16_to_f32(src[i]);
    CHECK(fm_wgrad16_packed_len(n, hw, c) == 4 * hw * c, "len %zu", fm_wgrad16_packed_len(n, hw, c));
    uint16_t dst2[4 * hw * c], plain[n * hw * c];
    fm_wgrad16_pack_f32(dst2, plain, srcf, n, hw, c, NULL, NULL, 2); /* exact: srcf holds bf16 values */
    fm_wgrad16_pack_bf16(dst, src, n, hw, c);
    CHECK(memcmp(dst, dst2, sizeof dst) == 0, "the fp32 and bf16 packings differ");
    CHECK(memcmp(plain, src, sizeof plain) == 0, "the plain copy differs");
    for (int64_t m = 0; m < 2; m++)
        for (int64_t p = 0; p < hw; p++)
            for (int64_t k = 0; k < c; k++) {
                const uint16_t *d = dst + ((m * hw + p) * c + k) * 2;
                const uint16_t lo = src[((2 * m) * hw + p) * c + k];
                const uint16_t hi = 2 * m + 1 < n ? src[((2 * m + 1) * hw + p) * c + k] : 0;
                CHECK(d[0] == lo && d[1] == hi, "pair %lld pixel %lld channel %lld", (long long)m, (long long)p,
                      (long long)k);
            }
    return 0;
}

/* The column sums pack_f32 adds: fp32 sums of every row, odd batches
 * included, the same with 1 and 2 threads up to rounding, added to db. */
/* The vector rounding of pack_f32 is fm_f32_to_bf16's, bit for bit, on
 * special values: NaN (stays NaN), infinities, denormals, ties, the largest
 * floats (which round to infinity). */
static int test_pack_rounding(void)
{
    enum { c = 32 };
    uint32_t bits[c] = { 0x7fc00000u, 0xffc00001u, 0x7f800001u, 0x7f800000u, 0xff800000u, 0x00000001u,
                         0x807fffffu, 0x3f808000u, 0x3f818000u, 0x3f80ffffu, 0x7f7fffffu, 0xff7fffffu,
                         0x00000000u, 0x80000000u, 0x3f800000u, 0xbf7fffffu };
    for (int k = 16; k < c; k++)
        bits[k] = 0x3f800000u + (uint32_t)k * 0x00008001u;
    float src[2 * c];
    memcpy(src, bits, sizeof bits);
    memcpy(src + c, bits, sizeof bits); /* the second image */
    uint16_t dst[2 * c], plain[2 * c];
    fm_wgrad16_pack_f32(dst, plain, src, 2, 1, c, NULL, NULL, 1);
    for (int k = 0; k < c; k++) {
        const uint16_t want = fm_f32_to_bf16(src[k]);
        CHECK(plain[k] == want && dst[2 * k] == want && dst[2 * k + 1] == want,
              "0x%08x: packed 0x%04x / plain 0x%04x, want 0x%04x", bits[k], dst[2 * k], plain[k], want);
    }
    return 0;
}

static int test_bias(void)
{
    enum { n = 9, hw = 100, c = 83 }; /* (n + 1) / 2 * hw * c >= 32768: the threaded path */
    float *dy = malloc(n * hw * c * sizeof(float)), db[c], db1[c], part[2 * c];
    uint16_t *dst = malloc(fm_wgrad16_packed_len(n, hw, c) * 2);
    CHECK(dy && dst, "out of memory");
    fm_fill_normal(dy, n * hw * c, 5, 1, 0);
    for (int k = 0; k < c; k++)
        db[k] = 1.0f, db1[k] = 1.0f; /* pack_f32 adds */
    fm_wgrad16_pack_f32(dst, NULL, dy, n, hw, c, db, part, 2);
    fm_wgrad16_pack_f32(dst, NULL, dy, n, hw, c, db1, part, 1);
    int bad = -1;
    double got = 0, want = 0;
    for (int o = 0; o < c && bad < 0; o++) {
        double s = 1.0;
        for (int r = 0; r < n * hw; r++)
            s += dy[r * c + o];
        if (fabs(db[o] - s) > 1e-5 * (1 + fabs(s)) || fabs(db1[o] - s) > 1e-5 * (1 + fabs(s)))
            bad = o, got = db[o], want = s;
    }
    free(dy), free(dst);
    CHECK(bad < 0, "db[%d] = %g, want %g", bad, got, want);
    return 0;
}

static int test_usable(void)
{
    fm_wgrad16 g = { .n = 2, .h = 4, .w = 4, .cin = 24, .ho = 4, .wo = 4, .cout = 8, .kh = 3, .kw = 3, .stride = 1,
                     .pad_t = 1, .pad_l = 1 };
    CHECK(!fm_wgrad16_usable(&g), "Cin 24 is not a multiple of 16");
    g.cin = 4;
    CHECK(!fm_wgrad16_usable(&g), "Cin 4");
    g.cin = 32;
    g.stride = 0;
    CHECK(!fm_wgrad16_usable(&g), "stride 0");
    return 0;
}

int main(int argc, char **argv)
{
    static const fm_test tests[] = {
        /* the kernel and the packing need AVX512-BF16; without it fm_wgrad16_usable
         * says no to every shape, so test_usable would not test anything */
        TEST_UNLESS(test_against_reference, fm_test_no_avx512bf16),
        TEST_UNLESS(test_threads, fm_test_no_avx512bf16),
        TEST_UNLESS(test_pack_layout, fm_test_no_avx512bf16),
        TEST_UNLESS(test_pack_rounding, fm_test_no_avx512bf16),
        TEST_UNLESS(test_bias, fm_test_no_avx512bf16),
        TEST_UNLESS(test_usable, fm_test_no_avx512bf16),
    };
    return fm_test_main("nn/wgrad16", tests, sizeof tests / sizeof *tests, argc, argv);
}
