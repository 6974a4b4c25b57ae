/* test_core.c - RNG, arena, tensor, CRC32C and safetensors round trip. */
#include <math.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "fm/arena.h"
#include "fm/crc32c.h"
#include "fm/params.h"
#include "fm/rng.h"
#include "fm/safetensors.h"
#include "fm/tensor.h"
#include "test.h"

/* Known-answer vectors from the Random123 distribution (kat_vectors, philox4x32_10). */
static int test_philox_known_answer(void)
{
    uint32_t r[4];
    fm_philox4x32(0, 0, 0, r);
    CHECK(r[0] == 0x6627e8d5u && r[1] == 0xe169c58du && r[2] == 0xbc57ac4cu && r[3] == 0x9b00dbd8u,
          "zero vector gave %08x %08x %08x %08x", r[0], r[1], r[2], r[3]);
    /* ctr = ffffffff x4, key = ffffffff x2 */
    fm_philox4x32(~0ull, ~0ull, ~0ull, r);
    CHECK(r[0] == 0x408f276du && r[1] == 0x41c83b0eu && r[2] == 0xa20bc7c6u && r[3] == 0x6d5451fdu,
          "ones vector gave %08x %08x %08x %08x", r[0], r[1], r[2], r[3]);
    return 0;
}

static int test_rng_pure_and_distributed(void)
{
    /* a pure function: same inputs, same value, in any order */
    CHECK(fm_rand_normal(7, 3, 1000) == fm_rand_normal(7, 3, 1000), "not repeatable");
    CHECK(fm_rand_normal(7, 3, 1000) != fm_rand_normal(7, 4, 1000), "streams collide");
    enum { N = 200000 };
    float *x = malloc(N * sizeof *x);
    fm_fill_normal(x, N, 42, 1, 0);
    double m = 0, v = 0, m4 = 0;
    for (int i = 0; i < N; i++)
        m += x[i];
    m /= N;
    for (int i = 0; i < N; i++) {
        double d = x[i] - m;
        v += d * d;
        m4 += d * d * d * d;
    }
    v /= N;
    m4 /= N;
    fm_fill_uniform(x, N, 42, 2, 0);
    double um = 0, umin = 1, umax = 0;
    for (int i = 0; i < N; i++) {
        um += x[i];
        umin = fmin(umin, x[i]);
        umax = fmax(umax, x[i]);
    }
    um /= N;
    free(x);
    /* standard errors at N = 2e5: mean 0.0022, var 0.0032, kurtosis ~0.011 */
    CHECK(fabs(m) < 0.01 && fabs(v - 1) < 0.015 && fabs(m4 / (v * v) - 3) < 0.06,
          "normal moments mean %g var %g kurtosis %g", m, v, m4 / (v * v));
    CHECK(fabs(um - 0.5) < 0.005 && umin >= 0 && umax < 1, "uniform mean %g range [%g, %g)", um, umin, umax);
    return 0;
}

static int test_permutation(void)
{
    enum { N = 1000 };
    uint32_t p[N], q[N];
    int seen[N] = { 0 };
    fm_permutation(p, N, 5, 0);
    fm_permutation(q, N, 5, 0);
    int moved = 0;
    for (int i = 0; i < N; i++) {
        CHECK(p[i] < N && !seen[p[i]], "not a permutation at %d", i);
        seen[p[i]] = 1;
        CHECK(p[i] == q[i], "not repeatable");
        moved += p[i] != (uint32_t)i;
    }
    CHECK(moved > N * 9 / 10, "only %d of %d moved", moved, N);
    fm_permutation(q, N, 5, 1);
    CHECK(memcmp(p, q, sizeof p) != 0, "epoch stream ignored");
    return 0;
}

static int test_arena(void)
{
    fm_err e = { 0 };
    fm_arena a;
    CHECK_OK(fm_arena_init(&a, 1000, &e), &e);
    char *p = fm_arena_alloc(&a, 10);
    size_t mark = fm_arena_mark(&a);
    char *q = fm_arena_alloc(&a, 100);
    CHECK(p && q && ((uintptr_t)p % 64) == 0 && ((uintptr_t)q % 64) == 0, "misaligned");
    CHECK(q - p == 64, "blocks not packed: %td", q - p);
    fm_arena_release(&a, mark);
    char *r = fm_arena_alloc(&a, 5);
    CHECK(r == q, "release did not rewind");
    void *big;
    CHECK(fm_arena_alloc_or(&a, 4096, &big, &e) == FM_ERR_INTERNAL && strstr(e.msg, "arena exhausted"),
          "overflow not reported: %s", e.msg);
    CHECK(a.peak >= 192, "peak %zu", a.peak);
    fm_arena_free(&a);
    return 0;
}

/* fm_arena_take types its result; a measuring arena counts exactly what a
 * real one takes for the same sequence, and hands out distinct non-NULL
 * aligned addresses. */
static int test_arena_take_and_measure(void)
{
    fm_err e = { 0 };
    const size_t sizes[] = { 10, 64, 65, 0, 3000 };
    fm_arena m, a;
    CHECK_OK(fm_arena_init(&m, FM_ARENA_MEASURE, &e), &e);
    CHECK(fm_arena_measuring(&m), "not measuring");
    char *prev = NULL;
    for (size_t i = 0; i < sizeof sizes / sizeof *sizes; i++) {
        char *q;
        CHECK_OK(fm_arena_take(&m, sizes[i], 1, &q, "measure", &e), &e);
        CHECK(q && (uintptr_t)q % 64 == 0 && q != prev, "measuring address %p", (void *)q);
        prev = q;
    }
    CHECK_OK(fm_arena_init(&a, m.peak, &e), &e);
    CHECK(!fm_arena_measuring(&a) && a.cap == m.peak, "cap %zu for %zu measured", a.cap, m.peak);
    for (size_t i = 0; i < sizeof sizes / sizeof *sizes; i++) {
        float *f;
        CHECK_OK(fm_arena_take(&a, sizes[i], 1, &f, "real", &e), &e);
    }
    CHECK(a.used == m.used && a.used == a.cap, "real %zu, measured %zu", a.used, m.used);
    double *d;
    CHECK(fm_arena_take(&a, 1, sizeof *d, &d, "one more", &e) == FM_ERR_INTERNAL && !d &&
              strstr(e.msg, "one more: arena exhausted"),
          "full arena: %s", e.msg);
    fm_arena_free(&a);
    CHECK_OK(fm_arena_init(&a, 4096, &e), &e);
    CHECK(fm_arena_take(&a, SIZE_MAX / 2, 4, &d, NULL, &e) == FM_ERR_INTERNAL, "overflowing size accepted");
    CHECK_OK(fm_arena_take(&a, 3, sizeof *d, &d, NULL, &e), &e);
    CHECK(a.used == 64 && d[0] == 0.0 && d[2] == 0.0, "used %zu", a.used);
    fm_arena_free(&a);
    fm_arena_free(&m);
    return 0;
}

static int test_tensor_bf16(void)
{
    CHECK(fm_bf16_to_f32(fm_f32_to_bf16(1.0f)) == 1.0f, "1.0");
    CHECK(fm_f32_to_bf16(1.00390625f) == 0x3f80, "ties to even (down)");
    CHECK(fm_f32_to_bf16(1.01171875f) == 0x3f82, "ties to even (up)");
    CHECK(isnan(fm_bf16_to_f32(fm_f32_to_bf16(NAN))), "NaN");
    fm_err e = { 0 };
    fm_arena a;
    fm_tensor t;
    CHECK_OK(fm_arena_init(&a, 1 << 16, &e), &e);
    CHECK_OK(fm_tensor_nhwc(&t, &a, 2, 4, 4, 8, &e), &e);
    char buf[64];
    CHECK(fm_tensor_numel(&t) == 256 && strcmp(fm_shape_str(&t, buf, 64), "[2, 4, 4, 8]") == 0, "%s", buf);
    fm_arena_free(&a);
    return 0;
}

static int test_crc32c(void)
{
    /* RFC 3720 B.4 check value */
    CHECK(fm_crc32c(0, "123456789", 9) == 0xe3069283u, "got %08x", fm_crc32c(0, "123456789", 9));
    unsigned char z[32] = { 0 };
    CHECK(fm_crc32c(0, z, 32) == 0x8a9136aau, "32 zeros: %08x", fm_crc32c(0, z, 32));
    CHECK(fm_crc32c(fm_crc32c(0, "1234", 4), "56789", 5) == 0xe3069283u, "not incremental");
    return 0;
}

static int test_safetensors_roundtrip_and_corruption(void)
{
    fm_err e = { 0 };
    char path[] = "/tmp/fm_st_XXXXXX";
    int fd = mkstemp(path);
    CHECK(fd >= 0, "mkstemp");
    close(fd);
    float a[6] = { 1, 2, 3, 4, 5, 6 }, b[3] = { -1, 0.5f, 7 };
    fm_st_tensor t[2] = { { "a.weight", a, FM_F32, 2, { 2, 3 } }, { "b", b, FM_F32, 1, { 3 } } };
    fm_st_meta m[2] = { { "step", "12" }, { "config", "run:\n  seed: \"x\"\n" } };
    CHECK_OK(fm_st_write(path, t, 2, m, 2, &e), &e);
    fm_st_file f;
    CHECK_OK(fm_st_read(path, &f, &e), &e);
    const fm_st_tensor *ra = fm_st_get(&f, "a.weight");
    CHECK(f.n == 2 && ra && ra->ndim == 2 && ra->shape[1] == 3 && memcmp(ra->data, a, sizeof a) == 0, "a.weight");
    CHECK(strcmp(fm_st_meta_get(&f, "config"), m[1].value) == 0, "metadata escaped wrongly");
    size_t size = f.size;
    fm_st_free(&f);
    /* flip one byte of tensor data: CRC must catch it */
    FILE *fp = fopen(path, "r+b");
    fseek(fp, (long)size - 2, SEEK_SET);
    int c = fgetc(fp);
    fseek(fp, (long)size - 2, SEEK_SET);
    fputc(c ^ 0x10, fp);
    fclose(fp);
    CHECK(fm_st_read(path, &f, &e) == FM_ERR_DATA && strstr(e.msg, "CRC32C") && strstr(e.msg, path),
          "flipped byte: %s", e.msg);
    /* truncate: offsets outside the file */
    CHECK(truncate(path, (off_t)size - 8) == 0, "truncate");
    CHECK(fm_st_read(path, &f, &e) == FM_ERR_DATA && strstr(e.msg, "truncated"), "truncated: %s", e.msg);
    CHECK(truncate(path, 5) == 0, "truncate");
    CHECK(fm_st_read(path, &f, &e) == FM_ERR_DATA, "5 bytes: %s", e.msg);
    unlink(path);
    CHECK(fm_st_read(path, &f, &e) == FM_ERR_DATA && strstr(e.msg, "cannot open"), "missing: %s", e.msg);
    return 0;
}

static int test_params_table(void)
{
    fm_err e = { 0 };
    fm_params p;
    fm_param *w, *b;
    CHECK_OK(fm_params_init(&p, 8, 1000, 1, &e), &e);
    int64_t s1[2] = { 3, 5 }, s2[1] = { 3 };
    CHECK_OK(fm_params_add(&p, &w, 2, s1, &e, "lin.%d.weight", 0), &e);
    CHECK_OK(fm_params_add(&p, &b, 1, s2, &e, "lin.%d.bias", 0), &e);
    CHECK(b->offset == 16 && ((uintptr_t)b->w.data % 64) == 0, "offset %zu", b->offset);
    CHECK(fm_params_find(&p, "lin.0.bias") == b, "find");
    CHECK(fm_params_add(&p, NULL, 1, s2, &e, "lin.0.bias") == FM_ERR_INTERNAL, "duplicate accepted");
    fm_param_init_uniform(&p, w, 0.5f);
    float *x = w->w.data;
    int inrange = 1;
    for (int i = 0; i < 15; i++)
        inrange &= x[i] >= -0.5f && x[i] < 0.5f;
    CHECK(inrange && x[0] != x[1], "init");
    CHECK(p.values == 18 && p.numel == 32, "values %zu, numel %zu", p.values, p.numel);

    /* a counting table: the same counts, names checked, no values */
    fm_params c;
    fm_param *cw;
    CHECK_OK(fm_params_init_count(&c, &e), &e);
    CHECK(fm_params_counting(&c) && !fm_params_counting(&p), "counting flag");
    CHECK_OK(fm_params_add(&c, &cw, 2, s1, &e, "lin.%d.weight", 0), &e);
    CHECK_OK(fm_params_add(&c, NULL, 1, s2, &e, "lin.%d.bias", 0), &e);
    CHECK(fm_params_add(&c, NULL, 1, s2, &e, "lin.0.bias") == FM_ERR_INTERNAL, "duplicate accepted when counting");
    fm_param_init_uniform(&c, cw, 0.5f);  /* nothing to write: must not crash */
    fm_param_fill(cw, 1.0f);
    CHECK(c.n == p.n && c.numel == p.numel && c.values == p.values && !cw->w.data && cw->w.shape[1] == 5,
          "count %d / %zu / %zu, real %d / %zu / %zu", c.n, c.numel, c.values, p.n, p.numel, p.values);
    fm_params_free(&c);
    fm_params_free(&p);
    return 0;
}

int main(int argc, char **argv)
{
    static const fm_test tests[] = {
        TEST(test_philox_known_answer), TEST(test_rng_pure_and_distributed), TEST(test_permutation),
        TEST(test_arena), TEST(test_arena_take_and_measure), TEST(test_tensor_bf16), TEST(test_crc32c),
        TEST(test_safetensors_roundtrip_and_corruption), TEST(test_params_table),
    };
    return fm_test_main("core", tests, (int)(sizeof tests / sizeof tests[0]), argc, argv);
}
