/* test_groupnorm.c - GroupNorm (+ adaGN, + fused SiLU): the fast NHWC loops
 * against a naive double-precision reference, gradient checks of x, weight,
 * bias, scale and shift, thread-count independence, and a timing line. */
#include <math.h>
#include <omp.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "fm/arena.h"
#include "fm/groupnorm.h"
#include "fm/params.h"
#include "fm/rng.h"
#include "fm/timer.h"
#include "gradcheck.h"
#include "test.h"

/* ---- naive reference: straight from the definition, in double ---- */

static double silu_d(double z) { return z / (1.0 + exp(-z)); }
static double silu_grad_d(double z)
{
    double s = 1.0 / (1.0 + exp(-z));
    return s * (1.0 + z * (1.0 - s));
}

typedef struct ref_in {
    int n, h, w, c, g, flags;
    double eps;
    const float *x, *weight, *bias, *scale, *shift, *dy; /* weight..shift may be NULL */
} ref_in;

#define AT(n, p, c) (((long)(n) * hw + (p)) * C + (c))

/* y, and (when dy is set) dx, dweight, dbias, dscale, dshift. */
static void ref_groupnorm(const ref_in *r, float *y, float *dx, float *dw, float *db, float *dscale, float *dshift)
{
    const int C = r->c, cg = C / r->g;
    const long hw = (long)r->h * r->w;
    const double M = (double)hw * cg;
    if (dw) {
        memset(dw, 0, (size_t)C * sizeof(float));
        memset(db, 0, (size_t)C * sizeof(float));
    }
    double *dwd = calloc((size_t)C, sizeof(double)), *dbd = calloc((size_t)C, sizeof(double));
    for (int n = 0; n < r->n; n++)
        for (int g = 0; g < r->g; g++) {
            double mu = 0, var = 0;
            for (long p = 0; p < hw; p++)
                for (int c = g * cg; c < (g + 1) * cg; c++)
                    mu += r->x[AT(n, p, c)];
            mu /= M;
            for (long p = 0; p < hw; p++)
                for (int c = g * cg; c < (g + 1) * cg; c++) {
                    double d = r->x[AT(n, p, c)] - mu;
                    var += d * d;
                }
            var /= M;
            const double rs = 1.0 / sqrt(var + r->eps);
            double mdxh = 0, mdxh_xh = 0; /* means of dxhat and dxhat * xhat over the group */
            for (int pass = 0; pass < 2; pass++)
                for (long p = 0; p < hw; p++)
                    for (int c = g * cg; c < (g + 1) * cg; c++) {
                        const long i = AT(n, p, c), nc = (long)n * C + c;
                        const double w = r->weight ? r->weight[c] : 1, b = r->bias ? r->bias[c] : 0;
                        const double s = r->scale ? r->scale[nc] : 0, sh = r->shift ? r->shift[nc] : 0;
                        const double xh = (r->x[i] - mu) * rs, u = xh * w + b, z = u * (1 + s) + sh;
                        if (pass == 0 && y)
                            y[i] = (float)((r->flags & FM_GN_SILU) ? silu_d(z) : z);
                        if (!r->dy)
                            continue;
                        const double dz = r->dy[i] * ((r->flags & FM_GN_SILU) ? silu_grad_d(z) : 1.0);
                        const double dxh = dz * (1 + s) * w;
                        if (pass == 0) {
                            mdxh += dxh / M;
                            mdxh_xh += dxh * xh / M;
                            dwd[c] += dz * (1 + s) * xh;
                            dbd[c] += dz * (1 + s);
                            if (dscale) {
                                if (p == 0 && c == g * cg)
                                    for (int k = g * cg; k < (g + 1) * cg; k++)
                                        dscale[(long)n * C + k] = dshift[(long)n * C + k] = 0;
                                dscale[nc] += (float)(dz * u);
                                dshift[nc] += (float)dz;
                            }
                        } else if (dx) {
                            dx[i] = (float)(rs * (dxh - mdxh - xh * mdxh_xh));
                        }
                    }
        }
    if (dw)
        for (int c = 0; c < C; c++) {
            dw[c] = (float)dwd[c];
            db[c] = (float)dbd[c];
        }
    free(dwd);
    free(dbd);
}

/* ---- a layer instance with random data ---- */

typedef struct gn_case {
    fm_params p;
    fm_arena a;
    fm_groupnorm l;
    long nx, nc;
    float *x, *y, *dy, *dx, *scale, *shift, *dscale, *dshift;
    int ada;
} gn_case;

/* x = (normal + 0.2 (c % 5)) * x_std + mean_offset: channel-dependent means
 * within each group. */
static int gn_setup(gn_case *t, int n, int h, int w, int c, int g, int flags, int ada, float mean_offset,
                    float x_std, fm_err *e)
{
    memset(t, 0, sizeof *t);
    t->nx = (long)n * h * w * c;
    t->nc = (long)n * c;
    t->ada = ada;
    FM_TRY(fm_params_init(&t->p, 4, 2 * (size_t)c + 64, 11, e));
    FM_TRY(fm_arena_init(&t->a, 64 * 1024 + (size_t)(8 * t->nx + 12 * t->nc) * sizeof(float) * 2, e));
    FM_TRY(fm_groupnorm_init(&t->l, &t->p, &t->a, "gn", g, 1e-5f, flags, n, h, w, c, e));
    float **bufs[8] = { &t->x, &t->y, &t->dy, &t->dx, &t->scale, &t->shift, &t->dscale, &t->dshift };
    for (int i = 0; i < 8; i++)
        FM_TRY(fm_arena_alloc_or(&t->a, (size_t)(i < 4 ? t->nx : t->nc) * sizeof(float), (void **)bufs[i], e));
    fm_fill_normal(t->x, t->nx, 5, 1, 0);
    for (long i = 0; i < t->nx; i++)
        t->x[i] = (t->x[i] + 0.2f * (float)((i % c) % 5)) * x_std + mean_offset;
    fm_fill_normal(t->dy, t->nx, 5, 2, 0);
    fm_fill_normal(t->scale, t->nc, 5, 3, 0);
    fm_fill_normal(t->shift, t->nc, 5, 4, 0);
    for (long i = 0; i < t->nc; i++)
        t->scale[i] *= 0.5f;
    if (t->l.weight) {
        fm_fill_normal(t->l.weight->w.data, c, 5, 5, 0);
        fm_fill_normal(t->l.bias->w.data, c, 5, 6, 0);
        for (int i = 0; i < c; i++)
            fm_f32(&t->l.weight->w)[i] += 1.0f;
    }
    return FM_OK;
}

static void gn_teardown(gn_case *t)
{
    fm_arena_free(&t->a);
    fm_params_free(&t->p);
}

static int gn_run(gn_case *t, fm_err *e)
{
    const float *s = t->ada ? t->scale : NULL, *sh = t->ada ? t->shift : NULL;
    FM_TRY(fm_groupnorm_forward_ada(&t->l, t->x, s, sh, t->y, e));
    return fm_groupnorm_backward_ada(&t->l, t->x, s, sh, t->dy, t->dx, t->ada ? t->dscale : NULL,
                                     t->ada ? t->dshift : NULL, e);
}

/* ---- tests ---- */

static int test_init(void)
{
    fm_err e = { 0 };
    gn_case t;
    CHECK_OK(gn_setup(&t, 2, 3, 3, 8, 4, 0, 0, 0, 1.5f, &e), &e);
    fm_groupnorm l2;
    CHECK_OK(fm_groupnorm_init(&l2, &t.p, &t.a, "gn2", 2, 1e-5f, 0, 1, 2, 2, 8, &e), &e);
    CHECK(fm_params_find(&t.p, "gn2.weight") == l2.weight && fm_params_find(&t.p, "gn2.bias") == l2.bias,
          "parameter names");
    CHECK(l2.weight->w.ndim == 1 && l2.weight->w.shape[0] == 8, "weight shape");
    for (int c = 0; c < 8; c++)
        CHECK(fm_f32(&l2.weight->w)[c] == 1.0f && fm_f32(&l2.bias->w)[c] == 0.0f, "init at %d", c);
    int rc = fm_groupnorm_init(&l2, &t.p, &t.a, "bad", 3, 1e-5f, 0, 1, 2, 2, 8, &e);
    CHECK(rc == FM_ERR_INTERNAL && strstr(e.msg, "bad"), "3 groups of 8 channels accepted (%s)", e.msg);
    fm_groupnorm l3;
    CHECK_OK(fm_groupnorm_init(&l3, NULL, &t.a, "na", 2, 1e-5f, FM_GN_NO_AFFINE, 1, 2, 2, 8, &e), &e);
    CHECK(!l3.weight && !l3.bias, "no-affine registered parameters");
    gn_teardown(&t);
    return 0;
}

/* Fast path vs the naive reference over shapes, group counts and variants. */
static int test_against_reference(void)
{
    static const struct { int n, h, w, c, g, flags, ada; float off, sd; } cs[] = {
        { 3, 5, 7, 32, 1, 0, 0, 0, 1.5f },           { 3, 5, 7, 32, 4, FM_GN_SILU, 0, 0, 1.5f },
        { 2, 8, 8, 64, 8, 0, 1, 0, 1.5f },           { 3, 3, 5, 64, 32, FM_GN_SILU, 1, 0, 1.5f },
        { 1, 4, 4, 96, 32, FM_GN_NO_AFFINE, 1, 0, 1.5f }, { 2, 1, 1, 32, 8, 0, 0, 0, 1.5f },
        { 1, 16, 16, 64, 8, FM_GN_SILU, 1, 0, 1.5f }, /* several chunks per sample */
        { 40, 4, 4, 24, 8, FM_GN_SILU, 1, 0, 1.5f },  /* one chunk per sample; C not a multiple of 16 */
        { 2, 3, 3, 300, 5, FM_GN_SILU, 1, 0, 1.5f },  /* C > 256: two channel blocks in the sums */
        { 1, 8, 8, 300, 10, 0, 1, 0, 1.5f },          /* the same, several chunks */
        /* |mean| >> std: the fp32 mean alone would cost ~1e-4 (half an ulp of 10000 / std) */
        { 2, 6, 6, 16, 4, 0, 0, 10000.0f, 1.5f },     { 2, 5, 3, 32, 8, FM_GN_SILU, 1, -300.0f, 1.5f },
        { 40, 4, 4, 32, 8, FM_GN_SILU, 1, 100.0f, 0.01f }, /* mean / std = 1e4, one chunk per sample */
        { 2, 8, 8, 32, 8, 0, 0, -20.0f, 0.002f },          /* mean / std = 1e4, several chunks */
    };
    fm_err e = { 0 };
    double worst = 0;
    for (size_t k = 0; k < sizeof cs / sizeof cs[0]; k++) {
        gn_case t;
        CHECK_OK(gn_setup(&t, cs[k].n, cs[k].h, cs[k].w, cs[k].c, cs[k].g, cs[k].flags, cs[k].ada, cs[k].off,
                          cs[k].sd, &e), &e);
        CHECK_OK(gn_run(&t, &e), &e);
        float *ry = malloc(t.nx * sizeof(float)), *rdx = malloc(t.nx * sizeof(float));
        float *rdw = malloc(cs[k].c * sizeof(float)), *rdb = malloc(cs[k].c * sizeof(float));
        float *rds = malloc(t.nc * sizeof(float)), *rdsh = malloc(t.nc * sizeof(float));
        ref_in r = { cs[k].n, cs[k].h, cs[k].w, cs[k].c, cs[k].g, cs[k].flags, 1e-5,
                     t.x, t.l.weight ? t.l.weight->w.data : NULL, t.l.bias ? t.l.bias->w.data : NULL,
                     cs[k].ada ? t.scale : NULL, cs[k].ada ? t.shift : NULL, t.dy };
        ref_groupnorm(&r, ry, rdx, rdw, rdb, rds, rdsh);
        double ey = fm_rel_err(t.y, ry, t.nx, 1e-6), edx = fm_rel_err(t.dx, rdx, t.nx, 1e-6);
        double ew = t.l.weight ? fm_rel_err(t.l.weight->g.data, rdw, cs[k].c, 1e-6) : 0;
        double eb = t.l.weight ? fm_rel_err(t.l.bias->g.data, rdb, cs[k].c, 1e-6) : 0;
        double es = cs[k].ada ? fm_rel_err(t.dscale, rds, t.nc, 1e-6) : 0;
        double esh = cs[k].ada ? fm_rel_err(t.dshift, rdsh, t.nc, 1e-6) : 0;
        fprintf(stderr, "  case %zu [%d,%d,%d,%d] G=%d flags=%d ada=%d mean %g std %g chunks=%d: y %.1e dx %.1e dw %.1e "
                "db %.1e dscale %.1e dshift %.1e\n", k, cs[k].n, cs[k].h, cs[k].w, cs[k].c, cs[k].g, cs[k].flags,
                cs[k].ada, (double)cs[k].off, (double)cs[k].sd, t.l.chunks, ey, edx, ew, eb, es, esh);
        double m = fmax(fmax(fmax(ey, edx), fmax(ew, eb)), fmax(es, esh));
        worst = fmax(worst, m);
        free(ry);
        free(rdx);
        free(rdw);
        free(rdb);
        free(rds);
        free(rdsh);
        gn_teardown(&t);
        CHECK(m <= 2e-6, "case %zu: worst relative error %.2e", k, m);
    }
    fprintf(stderr, "  worst relative error vs the double reference: %.2e\n", worst);
    return 0;
}

/* Gradient check context: output buffers for the checker. */
typedef struct gc_ctx {
    gn_case *t;
} gc_ctx;

static int gc_forward(void *ctx, fm_err *e)
{
    gn_case *t = ((gc_ctx *)ctx)->t;
    return fm_groupnorm_forward_ada(&t->l, t->x, t->ada ? t->scale : NULL, t->ada ? t->shift : NULL, t->y, e);
}

static int gc_backward(void *ctx, fm_err *e)
{
    gn_case *t = ((gc_ctx *)ctx)->t;
    return fm_groupnorm_backward_ada(&t->l, t->x, t->ada ? t->scale : NULL, t->ada ? t->shift : NULL, t->dy, t->dx,
                                     t->ada ? t->dscale : NULL, t->ada ? t->dshift : NULL, e);
}

static int gradcheck_variant(int flags, int ada)
{
    fm_err e = { 0 };
    gn_case t;
    CHECK_OK(gn_setup(&t, 2, 3, 5, 8, 4, flags, ada, 0, 1.5f, &e), &e);
    gc_ctx ctx = { &t };
    fm_gc_op op = { .name = "groupnorm", .ctx = &ctx, .forward = gc_forward, .backward = gc_backward,
                    .out = t.y, .dout = t.dy, .out_n = t.nx };
    op.vars[op.nvars++] = (fm_gc_var){ "x", t.x, t.dx, t.nx };
    if (t.l.weight) {
        op.vars[op.nvars++] = (fm_gc_var){ "weight", t.l.weight->w.data, t.l.weight->g.data, 8 };
        op.vars[op.nvars++] = (fm_gc_var){ "bias", t.l.bias->w.data, t.l.bias->g.data, 8 };
    }
    if (ada) {
        op.vars[op.nvars++] = (fm_gc_var){ "scale", t.scale, t.dscale, t.nc };
        op.vars[op.nvars++] = (fm_gc_var){ "shift", t.shift, t.dshift, t.nc };
    }
    /* fp32 central differences: eps = 1e-2 on O(1) inputs, tol = 1e-2 */
    CHECK_OK(fm_gradcheck(&op, 1e-2, 1e-2, 240, &e), &e);
    gn_teardown(&t);
    return 0;
}

static int test_gradcheck_plain(void) { return gradcheck_variant(0, 0); }
static int test_gradcheck_silu_ada(void) { return gradcheck_variant(FM_GN_SILU, 1); }
static int test_gradcheck_no_affine_ada(void) { return gradcheck_variant(FM_GN_NO_AFFINE, 1); }

/* Aliasing and optional outputs: dx == dy, dx = NULL, plain entry points. */
static int test_aliasing_and_nulls(void)
{
    fm_err e = { 0 };
    gn_case t;
    CHECK_OK(gn_setup(&t, 2, 4, 3, 16, 4, FM_GN_SILU, 0, 0, 1.5f, &e), &e);
    CHECK_OK(fm_groupnorm_forward(&t.l, t.x, t.y, &e), &e);
    CHECK_OK(fm_groupnorm_backward(&t.l, t.x, t.dy, t.dx, &e), &e);
    float dw[16], db[16];
    memcpy(dw, t.l.weight->g.data, sizeof dw);
    memcpy(db, t.l.bias->g.data, sizeof db);
    float *d = malloc(t.nx * sizeof(float));
    memcpy(d, t.dy, t.nx * sizeof(float));
    fm_fill_normal(t.l.weight->g.data, 16, 1, 1, 0); /* garbage: backward must overwrite */
    CHECK_OK(fm_groupnorm_backward(&t.l, t.x, d, d, &e), &e);
    CHECK(memcmp(d, t.dx, t.nx * sizeof(float)) == 0, "dx == dy gives a different dx");
    CHECK(memcmp(dw, t.l.weight->g.data, sizeof dw) == 0, "weight gradient not overwritten");
    CHECK_OK(fm_groupnorm_backward(&t.l, t.x, t.dy, NULL, &e), &e);
    CHECK(memcmp(db, t.l.bias->g.data, sizeof db) == 0, "dx = NULL changes dbias");
    free(d);
    gn_teardown(&t);
    return 0;
}

/* scale/shift packed as one [N, 2C] array (ss_stride = 2C) give the same
 * results as separate [N, C] arrays, and the gradients land in the packed rows. */
static int test_packed_scale_shift(void)
{
    fm_err e = { 0 };
    gn_case t;
    enum { N = 3, C = 16 };
    CHECK_OK(gn_setup(&t, N, 4, 5, C, 4, FM_GN_SILU, 1, 0, 1.5f, &e), &e);
    CHECK_OK(gn_run(&t, &e), &e);
    float *y = malloc(t.nx * sizeof(float)), *dx = malloc(t.nx * sizeof(float));
    memcpy(y, t.y, t.nx * sizeof(float));
    memcpy(dx, t.dx, t.nx * sizeof(float));
    float ss[N * 2 * C], dss[N * 2 * C];
    for (int n = 0; n < N; n++)
        for (int c = 0; c < C; c++) {
            ss[n * 2 * C + c] = t.scale[n * C + c];
            ss[n * 2 * C + C + c] = t.shift[n * C + c];
        }
    t.l.ss_stride = 2 * C;
    CHECK_OK(fm_groupnorm_forward_ada(&t.l, t.x, ss, ss + C, t.y, &e), &e);
    CHECK_OK(fm_groupnorm_backward_ada(&t.l, t.x, ss, ss + C, t.dy, t.dx, dss, dss + C, &e), &e);
    CHECK(memcmp(y, t.y, t.nx * sizeof(float)) == 0, "packed y differs");
    CHECK(memcmp(dx, t.dx, t.nx * sizeof(float)) == 0, "packed dx differs");
    for (int n = 0; n < N; n++)
        for (int c = 0; c < C; c++)
            CHECK(dss[n * 2 * C + c] == t.dscale[n * C + c] && dss[n * 2 * C + C + c] == t.dshift[n * C + c],
                  "packed gradient at (%d, %d)", n, c);
    free(y);
    free(dx);
    gn_teardown(&t);
    return 0;
}

/* Results are bitwise identical on 1 and 2 threads, with several chunks per
 * sample and with one (per-sample tasks). */
static int test_thread_independent(void)
{
    static const int shapes[2][3] = { { 3, 15, 13 }, { 64, 4, 4 } }; /* [N, H, W], both above the parallel threshold */
    fm_err e = { 0 };
    for (int k = 0; k < 2; k++) {
        gn_case t;
        CHECK_OK(gn_setup(&t, shapes[k][0], shapes[k][1], shapes[k][2], 64, 8, FM_GN_SILU, 1, 0, 1.5f, &e), &e);
        CHECK(t.l.chunks == (k == 0 ? 11 : 1), "shape %d: %d chunks", k, t.l.chunks);
        int nt = omp_get_max_threads();
        omp_set_num_threads(1);
        CHECK_OK(gn_run(&t, &e), &e);
        float *y1 = malloc(t.nx * sizeof(float)), *dx1 = malloc(t.nx * sizeof(float)), dw1[64];
        float *ds1 = malloc(t.nc * sizeof(float));
        memcpy(y1, t.y, t.nx * sizeof(float));
        memcpy(dx1, t.dx, t.nx * sizeof(float));
        memcpy(ds1, t.dscale, t.nc * sizeof(float));
        memcpy(dw1, t.l.weight->g.data, sizeof dw1);
        omp_set_num_threads(nt > 1 ? nt : 2);
        CHECK_OK(gn_run(&t, &e), &e);
        omp_set_num_threads(nt);
        CHECK(memcmp(y1, t.y, t.nx * sizeof(float)) == 0, "shape %d: y depends on the thread count", k);
        CHECK(memcmp(dx1, t.dx, t.nx * sizeof(float)) == 0, "shape %d: dx depends on the thread count", k);
        CHECK(memcmp(ds1, t.dscale, t.nc * sizeof(float)) == 0, "shape %d: dscale depends on the thread count", k);
        CHECK(memcmp(dw1, t.l.weight->g.data, sizeof dw1) == 0, "shape %d: dweight depends on the thread count", k);
        free(y1);
        free(dx1);
        free(ds1);
        gn_teardown(&t);
    }
    return 0;
}

/* A batch and its first half (as on one of two ranks) have different chunk
 * counts; each sample must still come out the same (up to the rounding of
 * the double sums). */
static int test_batch_split(void)
{
    static const struct { int n, h, c; } cs[] = { { 24, 32, 16 }, { 32, 8, 64 }, { 6, 12, 32 } };
    fm_err e = { 0 };
    for (size_t k = 0; k < sizeof cs / sizeof cs[0]; k++) {
        gn_case a, b;
        CHECK_OK(gn_setup(&a, cs[k].n, cs[k].h, cs[k].h, cs[k].c, 8, FM_GN_SILU, 1, 0.5f, 1.5f, &e), &e);
        CHECK_OK(gn_setup(&b, cs[k].n / 2, cs[k].h, cs[k].h, cs[k].c, 8, FM_GN_SILU, 1, 0.5f, 1.5f, &e), &e);
        CHECK(a.l.chunks != b.l.chunks, "case %zu: same chunk count %d", k, a.l.chunks);
        CHECK(memcmp(a.x, b.x, b.nx * sizeof(float)) == 0, "case %zu: inputs differ", k);
        CHECK_OK(gn_run(&a, &e), &e);
        CHECK_OK(gn_run(&b, &e), &e);
        double ey = fm_rel_err(a.y, b.y, b.nx, 1e-6), edx = fm_rel_err(a.dx, b.dx, b.nx, 1e-6);
        double es = fm_rel_err(a.dscale, b.dscale, b.nc, 1e-6);
        fprintf(stderr, "  [%d | %d, %d, %d, %d] chunks %d | %d: y %.1e dx %.1e dscale %.1e\n", cs[k].n, cs[k].n / 2,
                cs[k].h, cs[k].h, cs[k].c, a.l.chunks, b.l.chunks, ey, edx, es);
        CHECK(ey <= 1e-9 && edx <= 1e-9 && es <= 1e-9, "case %zu: the half batch differs", k);
        gn_teardown(&a);
        gn_teardown(&b);
    }
    return 0;
}

/* Run check on a layer after forward + backward, for each of the shapes
 * that take both chunking paths, with and without adaGN and SiLU. */
static int after_run(int (*check)(gn_case *t, size_t k, fm_err *e))
{
    static const struct { int n, h, c, g, flags, ada; } cs[] = {
        { 3, 8, 32, 8, FM_GN_SILU, 1 }, { 40, 4, 48, 8, FM_GN_SILU, 0 }, { 40, 4, 64, 4, 0, 1 } };
    fm_err e = { 0 };
    for (size_t k = 0; k < sizeof cs / sizeof cs[0]; k++) {
        gn_case t;
        CHECK_OK(gn_setup(&t, cs[k].n, cs[k].h, cs[k].h, cs[k].c, cs[k].g, cs[k].flags, cs[k].ada, 0.5f, 1.5f, &e),
                 &e);
        CHECK_OK(gn_run(&t, &e), &e);
        int rc = check(&t, k, &e);
        gn_teardown(&t);
        if (rc)
            return rc;
    }
    return 0;
}

/* reforward gives the forward's y bitwise, also after a backward. */
static int reforward_same(gn_case *t, size_t k, fm_err *e)
{
    float *y = malloc(t->nx * sizeof(float));
    CHECK(y, "out of memory");
    fm_fill_normal(y, t->nx, 1, 1, 0); /* garbage: reforward must overwrite */
    int rc = fm_groupnorm_reforward(&t->l, t->x, y, e);
    const int same = rc == FM_OK && memcmp(y, t->y, t->nx * sizeof(float)) == 0;
    free(y);
    CHECK_OK(rc, e);
    CHECK(same, "case %zu: reforward y differs (%d chunks)", k, t->l.chunks);
    return 0;
}

static int test_reforward(void) { return after_run(reforward_same); }

/* forward_ada16 writes exactly the bf16 rounding of forward_ada's y and
 * keeps the same saved statistics: backward after it gives the same bits. */
static int forward16_same(gn_case *t, size_t k, fm_err *e)
{
    float *dx = malloc(t->nx * sizeof(float));
    uint16_t *y16 = malloc(t->nx * sizeof(uint16_t));
    if (!dx || !y16) {
        free(dx), free(y16);
        CHECK(0, "out of memory");
    }
    memcpy(dx, t->dx, t->nx * sizeof(float));
    const float *s = t->ada ? t->scale : NULL, *sh = t->ada ? t->shift : NULL;
    int rc = fm_groupnorm_forward_ada16(&t->l, t->x, s, sh, y16, e);
    long bad = -1;
    for (long i = 0; rc == FM_OK && i < t->nx && bad < 0; i++)
        if (y16[i] != fm_f32_to_bf16(t->y[i]))
            bad = i;
    if (rc == FM_OK)
        rc = fm_groupnorm_backward_ada(&t->l, t->x, s, sh, t->dy, t->dx, t->ada ? t->dscale : NULL,
                                       t->ada ? t->dshift : NULL, e);
    const int same_dx = memcmp(dx, t->dx, t->nx * sizeof(float)) == 0;
    free(dx), free(y16);
    CHECK_OK(rc, e);
    CHECK(bad < 0, "case %zu: y16[%ld] is not the rounding of y (%d chunks)", k, bad, t->l.chunks);
    CHECK(same_dx, "case %zu: backward after forward16 differs", k);
    return 0;
}

static int test_forward16(void) { return after_run(forward16_same); }

/* Not asserted: forward + backward time of the U-Net's layer shapes (batch
 * 128, G = 8): norm1 (GN+SiLU) at 8x8x192, norm2 (adaGN+SiLU) at 8x8x128,
 * an attention norm (plain GN) at 4x4x256. */
static int test_timing(void)
{
    static const struct { int h, c, flags, ada; const char *what; } v[] = {
        { 8, 192, FM_GN_SILU, 0, "GN+SiLU" }, { 8, 128, FM_GN_SILU, 1, "adaGN+SiLU" }, { 4, 256, 0, 0, "GN" } };
    fm_err e = { 0 };
    for (int k = 0; k < 3; k++) {
        gn_case t;
        CHECK_OK(gn_setup(&t, 128, v[k].h, v[k].h, v[k].c, 8, v[k].flags, v[k].ada, 0, 1.5f, &e), &e);
        CHECK_OK(gn_run(&t, &e), &e); /* warm up */
        const int reps = 20;
        double tf = 0, tb = 0, bf = 1e9, bb = 1e9;
        for (int r = 0; r < reps; r++) {
            const float *s = t.ada ? t.scale : NULL, *sh = t.ada ? t.shift : NULL;
            double t0 = fm_now();
            CHECK_OK(fm_groupnorm_forward_ada(&t.l, t.x, s, sh, t.y, &e), &e);
            double t1 = fm_now();
            CHECK_OK(fm_groupnorm_backward_ada(&t.l, t.x, s, sh, t.dy, t.dx, t.ada ? t.dscale : NULL,
                                               t.ada ? t.dshift : NULL, &e), &e);
            double t2 = fm_now();
            tf += t1 - t0;
            tb += t2 - t1;
            bf = fmin(bf, t1 - t0);
            bb = fmin(bb, t2 - t1);
        }
        fprintf(stderr, "  %-10s [128, %d, %d, %d] G=8, %d threads: forward %.3f ms (best %.3f), backward %.3f ms "
                "(best %.3f)\n", v[k].what, v[k].h, v[k].h, v[k].c, omp_get_max_threads(), 1e3 * tf / reps,
                1e3 * bf, 1e3 * tb / reps, 1e3 * bb);
        gn_teardown(&t);
    }
    return 0;
}

int main(int argc, char **argv)
{
    static const fm_test tests[] = {
        TEST(test_init),
        TEST(test_against_reference),
        TEST(test_gradcheck_plain),
        TEST(test_gradcheck_silu_ada),
        TEST(test_gradcheck_no_affine_ada),
        TEST(test_aliasing_and_nulls),
        TEST(test_packed_scale_shift),
        TEST(test_thread_independent),
        TEST(test_batch_split),
        TEST(test_reforward),
        TEST(test_forward16),
        TEST(test_timing),
    };
    return fm_test_main("groupnorm", tests, sizeof tests / sizeof tests[0], argc, argv);
}
