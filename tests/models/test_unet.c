/* test_unet.c - the U-Net model: parameter table (count, names, order, zero
 * init), a finite-difference gradient check of the whole model on a tiny
 * config, independence of the batch split, determinism, the gradient hook,
 * bad configs, and a (not asserted) timing of the default-like config. */
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "fm/dnn.h"
#include "fm/params.h"
#include "fm/rng.h"
#include "fm/timer.h"
#include "fm/unet.h"
#include "gradcheck.h"
#include "test.h"

/* in_ch 2, 8x8, channels {8, 16}, 1 res block, attention at 4x4, 2 heads, 4 groups, emb 16 */
static fm_unet_cfg tiny_cfg(void)
{
    return (fm_unet_cfg){ .in_ch = 2, .size = 8, .levels = 2, .channels = { 8, 16 }, .res_blocks = 1,
                          .n_attn = 1, .attn_res = { 4 }, .heads = 2, .groups = 4, .emb_dim = 16,
                          .num_classes = 10 };
}

/* A model with its own parameter table. */
typedef struct model {
    fm_dnn d;
    fm_params p;
    fm_unet u;
} model;

static int model_init(model *m, const fm_unet_cfg *cfg, int batch, fm_err *e)
{
    memset(m, 0, sizeof *m);
    int tensors;
    size_t padded;
    FM_TRY(fm_unet_param_count(cfg, &tensors, &padded, NULL, e));
    FM_TRY(fm_dnn_init(&m->d, e));
    FM_TRY(fm_params_init(&m->p, tensors, padded, 11, e));
    return fm_unet_init(&m->u, &m->d, &m->p, cfg, batch, e);
}

static void model_free(model *m)
{
    fm_unet_free(&m->u);
    fm_params_free(&m->p);
    fm_dnn_free(&m->d);
}

/* Redraw every parameter (also the zero-initialised ones) so that every
 * path carries signal: matrices N(0, 1/fan_in), norm weights 1 + 0.2 N,
 * vectors 0.2 N, the class table N(0, 1). */
static void perturb(fm_params *p, uint64_t seed)
{
    for (int i = 0; i < p->n; i++) {
        fm_param *q = &p->items[i];
        float *v = q->w.data;
        const long n = (long)fm_tensor_numel(&q->w);
        fm_fill_normal(v, n, seed, (uint64_t)i, 0);
        const size_t len = strlen(q->name);
        if (strcmp(q->name, "class_emb.weight") == 0)
            continue;
        float sd = 0.2f, mean = 0.0f;
        if (q->w.ndim >= 2)
            sd = 1.0f / sqrtf((float)(n / q->w.shape[0]));
        else if (strstr(q->name, "norm") && len > 7 && strcmp(q->name + len - 7, ".weight") == 0)
            mean = 1.0f;
        for (long j = 0; j < n; j++)
            v[j] = mean + sd * v[j];
    }
}

static long numel_x(const fm_unet_cfg *cfg, int b) { return (long)b * cfg->size * cfg->size * cfg->in_ch; }

/* ---- parameters ---------------------------------------------------------- */

static int test_params(void)
{
    fm_err e = { 0 };
    const fm_unet_cfg cfg = tiny_cfg();
    model m;
    CHECK_OK(model_init(&m, &cfg, 2, &e), &e);
    int tensors;
    size_t padded, count, real = 0;
    CHECK_OK(fm_unet_param_count(&cfg, &tensors, &padded, &count, &e), &e);
    for (int i = 0; i < m.p.n; i++)
        real += (size_t)fm_tensor_numel(&m.p.items[i].w);
    CHECK(tensors == m.p.n && padded == m.p.numel && count == real,
          "count says %d tensors / %zu floats / %zu params, init made %d / %zu / %zu", tensors, padded, count,
          m.p.n, m.p.numel, real);
    /* the names the twin's state dict has, in its order where it matters */
    const char *expect[] = { "time_mlp.0.weight", "time_mlp.0.bias", "time_mlp.2.weight", "time_mlp.2.bias",
                             "class_emb.weight", "conv_in.weight", "conv_in.bias", "down.0.res.0.norm1.weight" };
    for (int i = 0; i < 8; i++)
        CHECK(strcmp(m.p.items[i].name, expect[i]) == 0, "param %d is %s, expected %s", i, m.p.items[i].name,
              expect[i]);
    const char *present[] = { "down.0.downsample.weight", "down.1.res.0.skip.weight", "down.1.attn.0.norm.bias",
                              "down.1.attn.0.attn.in_proj_weight", "down.1.attn.0.attn.out_proj.bias",
                              "mid.0.emb_proj.weight", "mid.1.attn.in_proj_bias", "mid.2.conv2.bias",
                              "up.1.res.1.skip.weight", "up.1.attn.1.attn.out_proj.weight", "up.1.upsample.bias",
                              "up.0.res.1.conv1.weight", "out_norm.weight", "out_conv.bias" };
    for (size_t i = 0; i < sizeof present / sizeof *present; i++)
        CHECK(fm_params_find(&m.p, present[i]), "no parameter %s", present[i]);
    CHECK(!fm_params_find(&m.p, "down.0.res.0.skip.weight"), "identity skip has a conv");
    CHECK(!fm_params_find(&m.p, "up.0.upsample.weight"), "level 0 has an upsample");
    CHECK(strcmp(m.p.items[m.p.n - 1].name, "out_conv.bias") == 0, "last param %s", m.p.items[m.p.n - 1].name);
    fm_param *wshape = fm_params_find(&m.p, "up.1.res.1.conv1.weight");  /* 16 + 8 skip channels -> 16 */
    CHECK(wshape->w.shape[0] == 16 && wshape->w.shape[1] == 24 && wshape->w.shape[2] == 3, "conv1 shape");

    /* zero init: every conv2 and out_conv; so the output starts at exactly 0 */
    for (int i = 0; i < m.p.n; i++) {
        const fm_param *q = &m.p.items[i];
        if (!strstr(q->name, ".conv2.") && strncmp(q->name, "out_conv.", 9) != 0)
            continue;
        const float *v = q->w.data;
        for (long j = 0; j < fm_tensor_numel(&q->w); j++)
            CHECK(v[j] == 0.0f, "%s[%ld] = %g, expected zero init", q->name, j, (double)v[j]);
    }
    const long nx = numel_x(&cfg, 2);
    float *x = malloc((size_t)nx * sizeof(float)), *o = malloc((size_t)nx * sizeof(float));
    const float t[2] = { 0.25f, 0.9f };
    const int32_t y[2] = { 1, 10 };
    fm_fill_normal(x, nx, 3, 0, 0);
    CHECK_OK(fm_unet_forward(&m.u, x, t, y, o, &e), &e);
    for (long i = 0; i < nx; i++)
        CHECK(o[i] == 0.0f, "initial output %g at %ld", (double)o[i], i);
    CHECK(fm_unet_flops(&m.u) > 0 && fm_unet_activation_bytes(&m.u) > 0, "flops / bytes");
    /* a label outside [0, num_classes] is a data error */
    const int32_t bad[2] = { 1, 11 };
    CHECK(fm_unet_forward(&m.u, x, t, bad, o, &e) == FM_ERR_DATA, "label 11 accepted");
    CHECK(fm_unet_backward(&m.u, o, &e) != FM_OK, "backward after a failed forward accepted");
    free(x);
    free(o);
    model_free(&m);
    return 0;
}

/* ---- gradient check ------------------------------------------------------ */

typedef struct gc_ctx {
    fm_unet *u;
    const float *x, *t;
    const int32_t *y;
    float *out, *dout;
} gc_ctx;

static int gc_forward(void *ctx, fm_err *e)
{
    gc_ctx *c = ctx;
    return fm_unet_forward(c->u, c->x, c->t, c->y, c->out, e);
}

static int gc_backward(void *ctx, fm_err *e)
{
    gc_ctx *c = ctx;
    return fm_unet_backward(c->u, c->dout, e);
}

static int test_gradcheck(void)
{
    fm_err e = { 0 };
    const fm_unet_cfg cfg = tiny_cfg();
    model m;
    CHECK_OK(model_init(&m, &cfg, 2, &e), &e);
    perturb(&m.p, 21);
    const long nx = numel_x(&cfg, 2);
    float *x = malloc((size_t)nx * sizeof(float)), *o = malloc((size_t)nx * sizeof(float));
    float *dout = malloc((size_t)nx * sizeof(float));
    const float t[2] = { 0.3f, 0.05f };  /* t * 1000 stays small enough for fp32 differences in t's MLP */
    const int32_t y[2] = { 3, 10 };       /* one class, the null label */
    fm_fill_normal(x, nx, 22, 0, 0);
    gc_ctx c = { &m.u, x, t, y, o, dout };
    fm_gc_op op = { .name = "unet", .ctx = &c, .forward = gc_forward, .backward = gc_backward, .out = o,
                    .dout = dout, .out_n = nx };
    const char *vars[] = { "conv_in.weight", "time_mlp.0.weight", "time_mlp.2.bias", "class_emb.weight",
                           "down.0.res.0.emb_proj.weight", "down.1.attn.0.attn.in_proj_weight",
                           "mid.1.attn.out_proj.bias", "down.0.downsample.weight", "up.1.upsample.weight",
                           "up.0.res.0.skip.weight", "up.0.res.1.norm1.weight", "out_conv.weight" };
    for (size_t i = 0; i < sizeof vars / sizeof *vars; i++) {
        fm_param *q = fm_params_find(&m.p, vars[i]);
        CHECK(q, "no parameter %s", vars[i]);
        op.vars[op.nvars++] = (fm_gc_var){ q->name, q->w.data, q->g.data, (long)fm_tensor_numel(&q->w) };
    }
    /* fp32 central differences through the whole network: eps = 1e-2, tol = 1e-2
     * (relative, floored at 0.1 max|grad| of the variable) */
    CHECK_OK(fm_gradcheck(&op, 1e-2, 1e-2, 16, &e), &e);
    free(x);
    free(o);
    free(dout);
    model_free(&m);
    return 0;
}

/* ---- batch split, determinism, hook ------------------------------------- */

static int test_batch_split(void)
{
    fm_err e = { 0 };
    const fm_unet_cfg cfg = tiny_cfg();
    model m2, m1;
    CHECK_OK(model_init(&m2, &cfg, 2, &e), &e);
    CHECK_OK(model_init(&m1, &cfg, 1, &e), &e);
    perturb(&m2.p, 31);
    CHECK(m1.p.n == m2.p.n && m1.p.numel == m2.p.numel, "tables differ: %d/%zu vs %d/%zu", m1.p.n, m1.p.numel,
          m2.p.n, m2.p.numel);
    for (int i = 0; i < m1.p.n; i++)
        CHECK(strcmp(m1.p.items[i].name, m2.p.items[i].name) == 0 && m1.p.items[i].offset == m2.p.items[i].offset,
              "param %d: %s@%zu vs %s@%zu", i, m1.p.items[i].name, m1.p.items[i].offset, m2.p.items[i].name,
              m2.p.items[i].offset);
    memcpy(m1.p.data, m2.p.data, m2.p.numel * sizeof(float)); /* share the weights, e.g. EMA -> sampler */

    const long n1 = numel_x(&cfg, 1), n2 = 2 * n1;
    float *x = malloc((size_t)n2 * sizeof(float)), *dout = malloc((size_t)n2 * sizeof(float));
    float *o2 = malloc((size_t)n2 * sizeof(float)), *o1 = malloc((size_t)n1 * sizeof(float));
    float *g = calloc(m1.p.numel, sizeof(float));
    const float t[2] = { 0.7f, 0.2f };
    const int32_t y[2] = { 4, 10 };
    fm_fill_normal(x, n2, 32, 0, 0);
    fm_fill_normal(dout, n2, 32, 1, 0);
    CHECK_OK(fm_unet_forward(&m2.u, x, t, y, o2, &e), &e);
    CHECK_OK(fm_unet_backward(&m2.u, dout, &e), &e);
    double worst = 0, worst_g;
    for (int r = 0; r < 2; r++) {
        CHECK_OK(fm_unet_forward(&m1.u, x + r * n1, t + r, y + r, o1, &e), &e);
        CHECK_OK(fm_unet_backward(&m1.u, dout + r * n1, &e), &e);
        for (size_t i = 0; i < m1.p.numel; i++)
            g[i] += m1.p.grad[i];
        const double err = fm_rel_err(o1, o2 + r * n1, n1, 1e-30);
        worst = err > worst ? err : worst;
    }
    /* the parameter gradient of a batch is the sum of its rows' gradients */
    worst_g = fm_rel_err(g, m2.p.grad, (long)m1.p.numel, 1e-30);
    fprintf(stderr, "  batch 2 vs 2 x batch 1: output rel err %.2e, summed gradient rel err %.2e\n", worst, worst_g);
    CHECK(worst <= 1e-6, "rows depend on the batch split: rel err %.2e", worst);
    CHECK(worst_g <= 1e-5, "gradients depend on the batch split: rel err %.2e", worst_g);
    free(x);
    free(dout);
    free(o2);
    free(o1);
    free(g);
    model_free(&m1);
    model_free(&m2);
    return 0;
}

typedef struct hook_log {
    int *seen;   /* [n params] times reported */
    int calls;
    const fm_params *p;
    int grads_final; /* every reported gradient equals the final one (checked after) */
    float *snap;     /* gradient values at the time of the report */
} hook_log;

static int on_grads(void *ctx, int first, int n, fm_err *e)
{
    (void)e;
    hook_log *h = ctx;
    h->calls++;
    for (int i = first; i < first + n; i++) {
        h->seen[i]++;
        const fm_param *q = &h->p->items[i];
        memcpy(h->snap + q->offset, q->g.data, (size_t)fm_tensor_numel(&q->g) * sizeof(float));
    }
    return FM_OK;
}

static int test_deterministic_and_hook(void)
{
    fm_err e = { 0 };
    const fm_unet_cfg cfg = tiny_cfg();
    model m;
    CHECK_OK(model_init(&m, &cfg, 2, &e), &e);
    perturb(&m.p, 41);
    const long nx = numel_x(&cfg, 2);
    float *x = malloc((size_t)nx * sizeof(float)), *dout = malloc((size_t)nx * sizeof(float));
    float *o1 = malloc((size_t)nx * sizeof(float)), *o2 = malloc((size_t)nx * sizeof(float));
    float *g1 = malloc(m.p.numel * sizeof(float));
    const float t[2] = { 0.5f, 0.99f };
    const int32_t y[2] = { 9, 0 };
    fm_fill_normal(x, nx, 42, 0, 0);
    fm_fill_normal(dout, nx, 42, 1, 0);
    CHECK_OK(fm_unet_forward(&m.u, x, t, y, o1, &e), &e);
    CHECK_OK(fm_unet_backward(&m.u, dout, &e), &e);
    memcpy(g1, m.p.grad, m.p.numel * sizeof(float));

    hook_log h = { calloc((size_t)m.p.n, sizeof(int)), 0, &m.p, 1, calloc(m.p.numel, sizeof(float)) };
    fm_unet_set_grad_hook(&m.u, on_grads, &h);
    memset(m.p.grad, 0x7f, m.p.numel * sizeof(float)); /* backward must overwrite, not accumulate */
    CHECK_OK(fm_unet_forward(&m.u, x, t, y, o2, &e), &e);
    CHECK_OK(fm_unet_backward(&m.u, dout, &e), &e);
    CHECK(memcmp(o1, o2, (size_t)nx * sizeof(float)) == 0, "forward is not deterministic");
    for (int i = 0; i < m.p.n; i++) {
        const fm_param *q = &m.p.items[i];
        const size_t bytes = (size_t)fm_tensor_numel(&q->g) * sizeof(float);
        CHECK(memcmp(g1 + q->offset, q->g.data, bytes) == 0, "gradient of %s is not deterministic", q->name);
        CHECK(h.seen[i] == 1, "hook reported %s %d times", q->name, h.seen[i]);
        CHECK(memcmp(h.snap + q->offset, q->g.data, bytes) == 0, "%s changed after the hook reported it", q->name);
    }
    fprintf(stderr, "  hook: %d calls cover all %d tensors once\n", h.calls, m.p.n);
    free(h.seen);
    free(h.snap);
    free(x);
    free(dout);
    free(o1);
    free(o2);
    free(g1);
    model_free(&m);
    return 0;
}

/* ---- config errors ------------------------------------------------------- */

static int test_bad_cfg(void)
{
    fm_err e = { 0 };
    fm_unet_cfg c = tiny_cfg();
    c.groups = 3; /* 8 channels into 3 groups */
    CHECK(fm_unet_cfg_check(&c, &e) == FM_ERR_USAGE && strstr(e.msg, "groups"), "groups: %s", e.msg);
    c = tiny_cfg();
    c.heads = 3;
    CHECK(fm_unet_cfg_check(&c, &e) == FM_ERR_USAGE && strstr(e.msg, "heads"), "heads: %s", e.msg);
    c = tiny_cfg();
    c.size = 6, c.levels = 3, c.channels[2] = 16;
    CHECK(fm_unet_cfg_check(&c, &e) == FM_ERR_USAGE && strstr(e.msg, "halve"), "side: %s", e.msg);
    c = tiny_cfg();
    c.levels = 0;
    CHECK(fm_unet_cfg_check(&c, &e) == FM_ERR_USAGE, "no levels accepted");
    c = tiny_cfg();
    c.channels[0] = 7, c.groups = 7;
    CHECK(fm_unet_cfg_check(&c, &e) == FM_ERR_USAGE && strstr(e.msg, "even"), "odd ch0: %s", e.msg);
    c = tiny_cfg();
    c.attn_res[0] = 5;
    CHECK(fm_unet_cfg_check(&c, &e) == FM_ERR_USAGE && strstr(e.msg, "attn_res"), "attn_res: %s", e.msg);
    c = tiny_cfg();
    c.res_blocks = 0;
    CHECK(fm_unet_cfg_check(&c, &e) == FM_ERR_USAGE, "no res blocks accepted");
    fm_dnn d;
    fm_params p;
    fm_unet u;
    CHECK_OK(fm_dnn_init(&d, &e), &e);
    CHECK_OK(fm_params_init(&p, 4, 64, 1, &e), &e);
    c = tiny_cfg();
    CHECK(fm_unet_init(&u, &d, &p, &c, 2, &e) != FM_OK, "a too small parameter table accepted");
    fm_unet_free(&u); /* safe after a failed init */
    fm_params_free(&p);
    fm_dnn_free(&d);
    return 0;
}

/* The arena init reserved is exactly what the model took: capacity = bytes
 * used, rounded up only to fm_arena_init's 2 MiB granule for large arenas. */
static int arena_exact(const fm_arena *a)
{
    const size_t huge = (size_t)2 << 20;
    return a->used == a->peak && a->used > 0 &&
           (a->cap == a->used || (a->used >= huge && a->cap % huge == 0 && a->cap - a->used < huge));
}

/* ---- arena size ---------------------------------------------------------- */

/* fm_unet_init sizes its arena by measuring its own set-up: exactly what it
 * takes, in fp32 and bf16, for small (exact capacity) and larger batches. */
static int test_arena_exact(void)
{
    const fm_unet_cfg cfg = tiny_cfg();
    const int batches[2] = { 1, 48 };
    for (int bf16 = 0; bf16 < 2; bf16++)
        for (int i = 0; i < 2; i++) {
            fm_err e = { 0 };
            model m;
            int tensors;
            size_t padded;
            memset(&m, 0, sizeof m);
            CHECK_OK(fm_unet_param_count(&cfg, &tensors, &padded, NULL, &e), &e);
            CHECK_OK(fm_dnn_init(&m.d, &e), &e);
            m.d.bf16 = bf16;
            CHECK_OK(fm_params_init(&m.p, tensors, padded, 11, &e), &e);
            CHECK_OK(fm_unet_init(&m.u, &m.d, &m.p, &cfg, batches[i], &e), &e);
            const fm_arena a = m.u.arena;
            model_free(&m);
            printf("  %s batch %d: %zu bytes used of %zu reserved\n", bf16 ? "bf16" : "fp32", batches[i], a.used,
                   a.cap);
            CHECK(arena_exact(&a), "%s batch %d: %zu used, %zu reserved", bf16 ? "bf16" : "fp32", batches[i],
                  a.used, a.cap);
        }
    return 0;
}

/* ---- timing (not asserted) ----------------------------------------------- */

static int test_timing_default(void)
{
    fm_err e = { 0 };
    const fm_unet_cfg cfg = { .in_ch = 4, .size = 8, .levels = 2, .channels = { 64, 128 }, .res_blocks = 2,
                              .n_attn = 1, .attn_res = { 4 }, .heads = 4, .groups = 8, .emb_dim = 256,
                              .num_classes = 10 };
    const int B = 128;
    size_t count;
    CHECK_OK(fm_unet_param_count(&cfg, NULL, NULL, &count, &e), &e);
    model m;
    double t0 = fm_now();
    CHECK_OK(model_init(&m, &cfg, B, &e), &e);
    const double t_init = fm_now() - t0;
    perturb(&m.p, 51);
    const long nx = numel_x(&cfg, B);
    float *x = malloc((size_t)nx * sizeof(float)), *o = malloc((size_t)nx * sizeof(float));
    float *t = malloc((size_t)B * sizeof(float));
    int32_t *y = malloc((size_t)B * sizeof(int32_t));
    fm_fill_normal(x, nx, 52, 0, 0);
    fm_fill_uniform(t, B, 52, 1, 0);
    for (int i = 0; i < B; i++)
        y[i] = i % 11;
#ifdef __SANITIZE_ADDRESS__
    const int iters = 1; /* the figure means nothing under the sanitizers */
#else
    const int iters = 3;
#endif
    double tf = 0, tb = 0;
    for (int it = 0; it <= iters; it++) { /* iteration 0 warms up */
        double a = fm_now();
        CHECK_OK(fm_unet_forward(&m.u, x, t, y, o, &e), &e);
        double b = fm_now();
        CHECK_OK(fm_unet_backward(&m.u, o, &e), &e);
        double c = fm_now();
        if (it > 0)
            tf += b - a, tb += c - b;
    }
    tf /= iters, tb /= iters;
    const double fl = fm_unet_flops(&m.u);
    fprintf(stderr,
            "  default-like unet (channels {64, 128}, 2 res blocks, attn 4, emb 256) at B=%d: %zu params, "
            "forward %.1f ms, backward %.1f ms, forward+backward %.1f ms (%.1f GFLOP/s at 3x forward), "
            "arena %.1f MiB, init %.2f s\n",
            B, count, tf * 1e3, tb * 1e3, (tf + tb) * 1e3, 3 * fl / (tf + tb) * 1e-9,
            (double)fm_unet_activation_bytes(&m.u) / (1 << 20), t_init);
    free(x);
    free(o);
    free(t);
    free(y);
    model_free(&m);
    return 0;
}

int main(int argc, char **argv)
{
    const fm_test tests[] = {
        TEST(test_params), TEST(test_gradcheck), TEST(test_batch_split), TEST(test_deterministic_and_hook),
        TEST(test_bad_cfg), TEST(test_arena_exact), TEST(test_timing_default),
    };
    return fm_test_main("unet", tests, (int)(sizeof tests / sizeof *tests), argc, argv);
}
