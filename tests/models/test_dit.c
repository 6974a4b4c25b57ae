/* test_dit.c - the DiT velocity model: parameter names, order and count,
 * adaLN-zero init, a finite-difference gradient check on parameters of every
 * part, batch-split invariance across two instances sharing weights by memcpy,
 * determinism, labels, the gradient-ready hook, config errors, and a (not
 * asserted) timing. Layer-level correctness is in tests/nn; parity with the
 * PyTorch twin in tests/parity/test_dit.py. */
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "fm/dit.h"
#include "fm/dnn.h"
#include "fm/params.h"
#include "fm/rng.h"
#include "fm/timer.h"
#include "gradcheck.h"
#include "test.h"

/* in 2, size 4, width 16, depth 2, heads 2, mlp_ratio 4, 10 classes, 32 time features */
static fm_dit_cfg tiny_cfg(int patch)
{
    return (fm_dit_cfg){ .in_ch = 2, .size = 4, .patch = patch, .width = 16, .depth = 2, .heads = 2,
                         .mlp_ratio = 4, .num_classes = 10, .t_freq = 32 };
}

typedef struct fixture {
    fm_dnn d;
    fm_params p;
    fm_dit m;
    fm_dit_cfg cfg;
    int b;
    long n;              /* B*H*W*in */
    float *x, *t, *out, *dout;
    int32_t *y;
} fixture;

static void fx_free(fixture *f)
{
    fm_dit_free(&f->m);
    fm_params_free(&f->p);
    fm_dnn_free(&f->d);
    free(f->x), free(f->t), free(f->out), free(f->dout), free(f->y);
}

/* Every parameter redrawn: weights ~ N(0, (scale / sqrt(fan_in))^2), vectors
 * ~ N(0, (0.3 scale)^2), so the adaLN-zero layers are live. */
static void randomize(fm_params *p, uint64_t seed, float scale)
{
    for (int i = 0; i < p->n; i++) {
        fm_param *q = &p->items[i];
        long k = (long)fm_tensor_numel(&q->w);
        float sd = q->w.ndim == 2 ? scale / sqrtf((float)q->w.shape[1]) : 0.3f * scale;
        fm_fill_normal(q->w.data, k, seed, (uint64_t)i, 0);
        for (long j = 0; j < k; j++)
            ((float *)q->w.data)[j] *= sd;
    }
}

/* Model for batch b; inputs x ~ N(0, 1), t ~ U[0, 1), labels (i * 7) mod 11 (the
 * null label 10 included), dout ~ N(0, 1). */
static int fx_init(fixture *f, fm_dit_cfg cfg, int b, uint64_t seed, fm_err *e)
{
    memset(f, 0, sizeof *f);
    f->cfg = cfg, f->b = b;
    f->n = (long)b * cfg.size * cfg.size * cfg.in_ch;
    int tensors;
    size_t padded;
    FM_TRY(fm_dit_param_count(&cfg, &tensors, &padded, NULL, e));
    FM_TRY(fm_dnn_init(&f->d, e));
    FM_TRY(fm_params_init(&f->p, tensors, padded, seed, e));
    FM_TRY(fm_dit_init(&f->m, &f->d, &f->p, &cfg, b, e));
    f->x = malloc((size_t)f->n * sizeof(float)), f->out = malloc((size_t)f->n * sizeof(float));
    f->dout = malloc((size_t)f->n * sizeof(float)), f->t = malloc((size_t)b * sizeof(float));
    f->y = malloc((size_t)b * sizeof(int32_t));
    if (!f->x || !f->out || !f->dout || !f->t || !f->y)
        return fm_fail(e, FM_ERR_INTERNAL, "out of memory");
    fm_fill_normal(f->x, f->n, 8, 1, 0);
    fm_fill_normal(f->dout, f->n, 8, 2, 0);
    fm_fill_uniform(f->t, b, 8, 3, 0);
    for (int i = 0; i < b; i++)
        f->y[i] = (int32_t)((i * 7 + 3) % (cfg.num_classes + 1));
    return FM_OK;
}

static int run(fixture *f, fm_err *e)
{
    FM_TRY(fm_dit_forward(&f->m, f->x, f->t, f->y, f->out, e));
    return fm_dit_backward(&f->m, f->dout, e);
}

/* ---- structure and init ---------------------------------------------------------- */

static int test_dit_params_and_init(void)
{
    fm_err e = { 0 };
    fixture f;
    fm_dit_cfg cfg = tiny_cfg(2);
    int rc = fx_init(&f, cfg, 2, 1, &e);
    static const char *const names[] = {
        "x_embed.weight", "x_embed.bias", "t_embed.0.weight", "t_embed.0.bias", "t_embed.2.weight",
        "t_embed.2.bias", "y_embed.weight", "blocks.0.adaLN.weight", "blocks.0.adaLN.bias",
        "blocks.0.attn.in_proj_weight", "blocks.0.attn.in_proj_bias", "blocks.0.attn.out_proj.weight",
        "blocks.0.attn.out_proj.bias", "blocks.0.mlp.0.weight", "blocks.0.mlp.0.bias", "blocks.0.mlp.2.weight",
        "blocks.0.mlp.2.bias", "blocks.1.adaLN.weight", "blocks.1.adaLN.bias", "blocks.1.attn.in_proj_weight",
        "blocks.1.attn.in_proj_bias", "blocks.1.attn.out_proj.weight", "blocks.1.attn.out_proj.bias",
        "blocks.1.mlp.0.weight", "blocks.1.mlp.0.bias", "blocks.1.mlp.2.weight", "blocks.1.mlp.2.bias",
        "final.adaLN.weight", "final.adaLN.bias", "final.linear.weight", "final.linear.bias",
    };
    const int nn = (int)(sizeof names / sizeof *names);
    int tensors = 0, order_ok = 1, zero_ok = 1, live_ok = 1;
    size_t padded = 0, count = 0, numel = 0;
    double out_max = 1;
    if (rc == FM_OK) {
        rc = fm_dit_param_count(&cfg, &tensors, &padded, &count, &e);
        for (int i = 0; i < f.p.n && i < nn; i++)
            order_ok &= !strcmp(f.p.items[i].name, names[i]);
        for (int i = 0; i < f.p.n; i++) {
            const fm_param *q = &f.p.items[i];
            const long k = (long)fm_tensor_numel(&q->w);
            numel += (size_t)k;
            double mx = 0;
            for (long j = 0; j < k; j++)
                mx = fmax(mx, fabs(((float *)q->w.data)[j]));
            int zero_expected = strstr(q->name, "adaLN") || strstr(q->name, "final.linear") ||
                                strstr(q->name, "in_proj_bias") || strstr(q->name, "out_proj.bias");
            if (zero_expected)
                zero_ok &= mx == 0;
            else
                live_ok &= mx > 0;
        }
        /* shapes of a few */
        fm_param *xw = fm_params_find(&f.p, "x_embed.weight"), *ye = fm_params_find(&f.p, "y_embed.weight");
        fm_param *aw = fm_params_find(&f.p, "blocks.1.adaLN.weight"), *fl = fm_params_find(&f.p, "final.linear.weight");
        order_ok &= xw && xw->w.shape[0] == 16 && xw->w.shape[1] == 8;  // P = 2*2*2
        order_ok &= ye && ye->w.shape[0] == 11 && ye->w.shape[1] == 16;
        order_ok &= aw && aw->w.shape[0] == 96 && aw->w.shape[1] == 16;
        order_ok &= fl && fl->w.shape[0] == 8 && fl->w.shape[1] == 16;
        if (rc == FM_OK)
            rc = fm_dit_forward(&f.m, f.x, f.t, f.y, f.out, &e);
        out_max = 0;
        for (long i = 0; i < f.n; i++)
            out_max = fmax(out_max, fabs(f.out[i]));
    }
    int np = f.p.n;
    size_t pnumel = f.p.numel;
    fx_free(&f);
    CHECK_OK(rc, &e);
    CHECK(np == nn && tensors == nn, "%d tensors registered, %d counted, %d expected", np, tensors, nn);
    CHECK(order_ok, "parameter names, order or shapes differ from the twin's state dict");
    CHECK(padded == pnumel && count == numel, "param_count %zu/%zu vs registered %zu/%zu", padded, count, pnumel,
          numel);
    CHECK(zero_ok, "adaLN / final.linear / attention biases not zero at init");
    CHECK(live_ok, "a parameter that should be random is all zero");
    CHECK(out_max == 0, "adaLN-zero model should output exactly 0, got max |out| %g", out_max);
    return 0;
}

/* ---- gradient check ---------------------------------------------------------------- */

static int gc_fwd(void *ctx, fm_err *e)
{
    fixture *f = ctx;
    return fm_dit_forward(&f->m, f->x, f->t, f->y, f->out, e);
}

static int gc_bwd(void *ctx, fm_err *e)
{
    fixture *f = ctx;
    return fm_dit_backward(&f->m, f->dout, e);
}

/* eps = 1e-2, tol = 1e-2 (fp32 forward through 2 blocks; parameters redrawn
 * at 0.7/sqrt(fan_in) so nothing is zero). 16 entries of one parameter from
 * every part of the model, for patch 1 and patch 2. */
static int test_dit_gradcheck(void)
{
    static const char *const vars[] = {
        "x_embed.weight", "t_embed.0.weight", "t_embed.2.bias", "y_embed.weight", "blocks.0.adaLN.weight",
        "blocks.1.adaLN.bias", "blocks.0.attn.in_proj_weight", "blocks.1.attn.out_proj.weight",
        "blocks.0.mlp.0.weight", "blocks.1.mlp.2.weight", "final.adaLN.weight", "final.linear.weight",
    };
    for (int patch = 1; patch <= 2; patch++) {
        fm_err e = { 0 };
        fixture f;
        int rc = fx_init(&f, tiny_cfg(patch), 2, 2, &e);
        if (rc == FM_OK) {
            randomize(&f.p, 40 + patch, 0.7f);
            fm_gc_op op = { .name = patch == 1 ? "dit p=1" : "dit p=2", .ctx = &f, .forward = gc_fwd,
                            .backward = gc_bwd, .out = f.out, .dout = f.dout, .out_n = f.n };
            for (size_t i = 0; i < sizeof vars / sizeof *vars && rc == FM_OK; i++) {
                fm_param *q = fm_params_find(&f.p, vars[i]);
                if (!q) {
                    rc = fm_fail(&e, FM_ERR_INTERNAL, "no parameter %s", vars[i]);
                    break;
                }
                op.vars[op.nvars++] = (fm_gc_var){ q->name, q->w.data, q->g.data, (long)fm_tensor_numel(&q->w) };
            }
            if (rc == FM_OK)
                rc = fm_gradcheck(&op, 1e-2, 1e-2, 16, &e);
        }
        fx_free(&f);
        CHECK_OK(rc, &e);
    }
    return 0;
}

/* ---- batch split, determinism ---------------------------------------------------------- */

/* A B=3 instance against a B=1 instance (separate fm_params, weights memcpy'd)
 * run on each sample: outputs match per sample and the B=3 gradients equal the
 * sum of the three single-sample gradients (mean-free loss: dout is split too). */
static int test_dit_batch_split(void)
{
    fm_err e = { 0 };
    fixture big = { 0 }, one = { 0 };
    int rc = fx_init(&big, tiny_cfg(2), 3, 5, &e);
    if (rc == FM_OK)
        rc = fx_init(&one, tiny_cfg(2), 1, 6, &e);  // another seed: the memcpy must carry the weights
    double eo = INFINITY, eg = INFINITY;
    float *gsum = NULL;
    if (rc == FM_OK) {
        randomize(&big.p, 9, 1.0f);
        if (big.p.numel != one.p.numel)
            rc = fm_fail(&e, FM_ERR_INTERNAL, "parameter layouts differ: %zu vs %zu", big.p.numel, one.p.numel);
    }
    if (rc == FM_OK) {
        memcpy(one.p.data, big.p.data, big.p.numel * sizeof(float));
        gsum = calloc(big.p.numel, sizeof(float));
        rc = run(&big, &e);
    }
    const long per = one.n;
    eo = 0;
    for (int s = 0; s < 3 && rc == FM_OK; s++) {
        memcpy(one.x, big.x + s * per, (size_t)per * sizeof(float));
        memcpy(one.dout, big.dout + s * per, (size_t)per * sizeof(float));
        one.t[0] = big.t[s];
        one.y[0] = big.y[s];
        rc = run(&one, &e);
        if (rc != FM_OK)
            break;
        eo = fmax(eo, fm_rel_err(one.out, big.out + s * per, per, 1e-12));
        for (size_t i = 0; i < big.p.numel; i++)
            gsum[i] += one.p.grad[i];
    }
    if (rc == FM_OK) {
        eg = 0;
        for (int i = 0; i < big.p.n; i++) {
            const fm_param *q = &big.p.items[i];
            eg = fmax(eg, fm_rel_err(gsum + q->offset, q->g.data, (long)fm_tensor_numel(&q->g), 1e-12));
        }
        fprintf(stderr, "  batch 3 vs 3 x batch 1: output rel err %.1e, worst parameter gradient rel err %.1e\n", eo,
                eg);
    }
    free(gsum);
    fx_free(&big);
    fx_free(&one);
    CHECK_OK(rc, &e);
    CHECK(eo <= 1e-5 && eg <= 1e-5, "batch split: output %.2e, gradients %.2e", eo, eg);
    return 0;
}

/* Two runs give bitwise the same outputs and gradients, gradients are
 * overwritten (not accumulated), and an instance with the same seed has
 * bitwise the same initial parameters. */
static int test_dit_determinism(void)
{
    fm_err e = { 0 };
    fixture f = { 0 }, g = { 0 };
    int rc = fx_init(&f, tiny_cfg(1), 2, 3, &e);
    if (rc == FM_OK)
        rc = fx_init(&g, tiny_cfg(1), 2, 3, &e);
    int same_init = 0, same_out = 0, same_grad = 0;
    float *out1 = NULL, *grad1 = NULL;
    if (rc == FM_OK) {
        same_init = f.p.numel == g.p.numel && !memcmp(f.p.data, g.p.data, f.p.numel * sizeof(float));
        randomize(&f.p, 4, 1.0f);
        out1 = malloc((size_t)f.n * sizeof(float));
        grad1 = malloc(f.p.numel * sizeof(float));
        rc = run(&f, &e);
    }
    if (rc == FM_OK) {
        memcpy(out1, f.out, (size_t)f.n * sizeof(float));
        memcpy(grad1, f.p.grad, f.p.numel * sizeof(float));
        for (size_t i = 0; i < f.p.numel; i++)
            f.p.grad[i] = NAN;  // must all be overwritten
        rc = run(&f, &e);
    }
    if (rc == FM_OK) {
        same_out = !memcmp(out1, f.out, (size_t)f.n * sizeof(float));
        same_grad = 1;
        for (int i = 0; i < f.p.n; i++) {  // the tensors, not the alignment padding between them
            const fm_param *q = &f.p.items[i];
            same_grad &= !memcmp(grad1 + q->offset, q->g.data, (size_t)fm_tensor_numel(&q->g) * sizeof(float));
        }
    }
    free(out1), free(grad1);
    fx_free(&f);
    fx_free(&g);
    CHECK_OK(rc, &e);
    CHECK(same_init, "two instances with one seed start from different parameters");
    CHECK(same_out && same_grad, "second run differs: output %s, gradients %s", same_out ? "same" : "differs",
          same_grad ? "same" : "differ (or not all overwritten)");
    return 0;
}

/* ---- labels, hook, config errors ------------------------------------------------------ */

/* The null label changes the output; a label above it is FM_ERR_DATA;
 * backward without forward is refused. */
static int test_dit_labels(void)
{
    fm_err e = { 0 };
    fixture f;
    int rc = fx_init(&f, tiny_cfg(1), 2, 7, &e);
    int rc_bwd = FM_OK, rc_bad = FM_OK;
    double diff = 0;
    if (rc == FM_OK) {
        randomize(&f.p, 5, 1.0f);
        rc_bwd = fm_dit_backward(&f.m, f.dout, &e);
        f.y[0] = 10, f.y[1] = 3;
        rc = fm_dit_forward(&f.m, f.x, f.t, f.y, f.out, &e);
    }
    if (rc == FM_OK) {
        float *o = malloc((size_t)f.n * sizeof(float));
        memcpy(o, f.out, (size_t)f.n * sizeof(float));
        f.y[0] = 3;
        rc = fm_dit_forward(&f.m, f.x, f.t, f.y, f.out, &e);
        for (long i = 0; i < f.n / 2; i++)
            diff = fmax(diff, fabs(o[i] - f.out[i]));
        for (long i = f.n / 2; i < f.n; i++)  // sample 1 unchanged: samples do not mix
            diff = o[i] == f.out[i] ? diff : -1;
        free(o);
        f.y[1] = 11;
        rc_bad = fm_dit_forward(&f.m, f.x, f.t, f.y, f.out, &e);
    }
    fx_free(&f);
    CHECK_OK(rc, &e);
    CHECK(rc_bwd == FM_ERR_INTERNAL, "backward before forward gave %d", rc_bwd);
    CHECK(diff > 1e-4, "null label vs class 3: max diff %g (or sample 1 changed)", diff);
    CHECK(rc_bad == FM_ERR_DATA && strstr(e.msg, "y_embed"), "label 11 gave %d: %s", rc_bad, e.msg);
    return 0;
}

typedef struct hook_log {
    int calls, first[64], n[64];
} hook_log;

static int log_hook(void *ctx, int first, int n, fm_err *e)
{
    (void)e;
    hook_log *h = ctx;
    if (h->calls < 64)
        h->first[h->calls] = first, h->n[h->calls] = n;
    h->calls++;
    return FM_OK;
}

/* Ranges in backward order: final (27, 4), blocks 1 and 0 (10 each), x_embed
 * (0, 2), conditioning (2, 5); together every tensor once. */
static int test_dit_grad_hook(void)
{
    fm_err e = { 0 };
    fixture f;
    hook_log h = { 0 };
    int rc = fx_init(&f, tiny_cfg(2), 2, 3, &e);
    if (rc == FM_OK) {
        fm_dit_set_grad_hook(&f.m, log_hook, &h);
        rc = run(&f, &e);
    }
    fx_free(&f);
    CHECK_OK(rc, &e);
    static const int want[][2] = { { 27, 4 }, { 17, 10 }, { 7, 10 }, { 0, 2 }, { 2, 5 } };
    CHECK(h.calls == 5, "%d hook calls", h.calls);
    for (int i = 0; i < 5; i++)
        CHECK(h.first[i] == want[i][0] && h.n[i] == want[i][1], "call %d: [%d, +%d), want [%d, +%d)", i, h.first[i],
              h.n[i], want[i][0], want[i][1]);
    return 0;
}

static int test_dit_cfg_errors(void)
{
    fm_err e = { 0 };
    fm_dit_cfg c = tiny_cfg(3);
    CHECK(fm_dit_cfg_check(&c, &e) == FM_ERR_USAGE && strstr(e.msg, "patch"), "patch 3 of 4: %s", e.msg);
    c = tiny_cfg(1), c.width = 18;
    CHECK(fm_dit_cfg_check(&c, &e) == FM_ERR_USAGE && strstr(e.msg, "width"), "width 18: %s", e.msg);
    c = tiny_cfg(1), c.heads = 3;
    CHECK(fm_dit_cfg_check(&c, &e) == FM_ERR_USAGE && strstr(e.msg, "heads"), "heads 3: %s", e.msg);
    c = tiny_cfg(1), c.t_freq = 15;
    CHECK(fm_dit_cfg_check(&c, &e) == FM_ERR_USAGE && strstr(e.msg, "t_freq"), "t_freq 15: %s", e.msg);
    c = tiny_cfg(1), c.depth = 0;
    CHECK(fm_dit_cfg_check(&c, &e) == FM_ERR_USAGE && strstr(e.msg, "depth"), "depth 0: %s", e.msg);
    c = tiny_cfg(1), c.mlp_ratio = 0;
    CHECK(fm_dit_cfg_check(&c, &e) == FM_ERR_USAGE && strstr(e.msg, "mlp_ratio"), "mlp_ratio 0: %s", e.msg);
    c = tiny_cfg(1), c.t_freq = 0;
    CHECK(fm_dit_cfg_check(&c, &e) == FM_OK, "t_freq 0 (default) rejected: %s", e.msg);
    /* a failed init leaves a model fm_dit_free accepts */
    fm_dnn d;
    fm_params p;
    fm_dit m;
    CHECK_OK(fm_dnn_init(&d, &e), &e);
    CHECK_OK(fm_params_init(&p, 4, 1024, 1, &e), &e);  // far too small
    c = tiny_cfg(1);
    int rc = fm_dit_init(&m, &d, &p, &c, 2, &e);
    fm_dit_free(&m);
    fm_params_free(&p);
    fm_dnn_free(&d);
    CHECK(rc != FM_OK && strstr(e.msg, "dit init"), "init into a small parameter table gave %d: %s", rc, e.msg);
    return 0;
}

/* ---- timing (not asserted) ----------------------------------------------------------- */

static int time_cfg(const char *label, fm_dit_cfg cfg, int b, int iters)
{
    fm_err e = { 0 };
    fixture f;
    int rc = fx_init(&f, cfg, b, 1, &e);
    double best = INFINITY, fwd_best = INFINITY;
    size_t count = 0;
    if (rc == FM_OK)
        rc = fm_dit_param_count(&cfg, NULL, NULL, &count, &e);
    for (int it = 0; rc == FM_OK && it < iters; it++) {
        double t0 = fm_now();
        rc = fm_dit_forward(&f.m, f.x, f.t, f.y, f.out, &e);
        double t1 = fm_now();
        if (rc == FM_OK)
            rc = fm_dit_backward(&f.m, f.dout, &e);
        best = fmin(best, fm_now() - t0);
        fwd_best = fmin(fwd_best, t1 - t0);
    }
    if (rc == FM_OK) {
        const double fl = fm_dit_flops(&f.m);
        fprintf(stderr,
                "  %s: %.2fM params, B=%d: forward %.1f ms, forward+backward %.1f ms (best of %d), "
                "%.1f GFLOP forward, ~%.1f GFLOP/s (3x forward), arena %.0f MiB\n",
                label, count / 1e6, b, fwd_best * 1e3, best * 1e3, iters, fl * 1e-9, 3 * fl / best * 1e-9,
                fm_dit_activation_bytes(&f.m) / 1048576.0);
    }
    fx_free(&f);
    CHECK_OK(rc, &e);
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

/* fm_dit_init sizes its arena by measuring its own set-up: exactly what it
 * takes, in fp32 and bf16, patch 1 and 2, for a small and a larger batch. */
static int test_dit_arena_exact(void)
{
    for (int bf16 = 0; bf16 < 2; bf16++)
        for (int patch = 1; patch <= 2; patch++)
            for (int b = 1; b <= 129; b += 128) {
                fm_err e = { 0 };
                const fm_dit_cfg cfg = tiny_cfg(patch);
                fm_dnn d;
                fm_params p;
                fm_dit m;
                int tensors;
                size_t padded;
                CHECK_OK(fm_dit_param_count(&cfg, &tensors, &padded, NULL, &e), &e);
                CHECK_OK(fm_dnn_init(&d, &e), &e);
                d.bf16 = bf16;
                CHECK_OK(fm_params_init(&p, tensors, padded, 5, &e), &e);
                int rc = fm_dit_init(&m, &d, &p, &cfg, b, &e);
                const fm_arena a = m.arena;
                fm_dit_free(&m);
                fm_params_free(&p);
                fm_dnn_free(&d);
                CHECK_OK(rc, &e);
                CHECK(arena_exact(&a), "%s patch %d batch %d: %zu used, %zu reserved", bf16 ? "bf16" : "fp32",
                      patch, b, a.used, a.cap);
            }
    return 0;
}

/* The small default (width 128, depth 6, heads 4, patch 1, 8x8x4 latents) at
 * B=128 (skipped in a sanitizer build); DiT-S-like (width 384, depth 12, heads 6) only with FM_DIT_BENCH=1
 * (several seconds and ~3 GiB). */
static int test_dit_timing(void)
{
    fm_dit_cfg c = { .in_ch = 4, .size = 8, .patch = 1, .width = 128, .depth = 6, .heads = 4, .mlp_ratio = 4,
                     .num_classes = 10, .t_freq = 256 };
    CHECK(time_cfg("DiT small (w128 d6 h4 p1, 8x8x4)", c, 128, 2) == 0, "small default");
    const char *bench = getenv("FM_DIT_BENCH");
    if (bench && *bench == '1') {
        c.width = 384, c.depth = 12, c.heads = 6;
        CHECK(time_cfg("DiT-S-like (w384 d12 h6 p1, 8x8x4)", c, 128, 3) == 0, "DiT-S");
        c.patch = 2;
        CHECK(time_cfg("DiT-S-like (w384 d12 h6 p2, 8x8x4)", c, 128, 3) == 0, "DiT-S/2");
    }
    return 0;
}

int main(int argc, char **argv)
{
    static const fm_test tests[] = {
        TEST(test_dit_params_and_init), TEST(test_dit_gradcheck), TEST(test_dit_batch_split),
        TEST(test_dit_determinism),     TEST(test_dit_labels),    TEST(test_dit_grad_hook),
        TEST(test_dit_cfg_errors),      TEST(test_dit_arena_exact), TEST_UNLESS(test_dit_timing, fm_test_sanitized),
    };
    return fm_test_main("models/dit", tests, (int)(sizeof tests / sizeof *tests), argc, argv);
}
