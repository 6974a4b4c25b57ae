/* test_vae.c - the VAE: parameter names and layout, a gradient check of the
 * full training loss, per-sample noise independent of the batch split, the
 * logvar clamp, encoder-/decoder-only instances, bad configs, and a timing line. */
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "fm/rng.h"
#include "fm/vae.h"
#include "fixture.h"
#include "test.h"

/* A small config: 8x8x1 -> 4x4x2 latents through two levels {4, 8}. */
static fm_vae_cfg tiny_cfg(void)
{
    fm_vae_cfg c = fm_vae_cfg_default();
    c.size = 8;
    c.levels = 2;
    c.channels[0] = 4;
    c.channels[1] = 8;
    c.channels[2] = 0;
    c.latent_ch = 2;
    c.groups = 2;
    c.kl_weight = 0.5f;
    return c;
}

/* Images in [-1, 1]. */
static void fill_images(float *x, long n, uint64_t stream)
{
    fm_fill_uniform(x, n, 5, stream, 0);
    for (long i = 0; i < n; i++)
        x[i] = 2.0f * x[i] - 1.0f;
}

/* Move every GroupNorm off its (1, 0) init so the check covers general values. */
static void perturb_norms(fm_params *p)
{
    for (int i = 0; i < p->n; i++) {
        fm_param *t = &p->items[i];
        if (!strstr(t->name, "norm"))
            continue;
        const long n = (long)fm_tensor_numel(&t->w);
        const int is_w = strstr(t->name, ".weight") != NULL;
        fm_fill_normal(t->w.data, n, 8, (uint64_t)i, 0);
        for (long k = 0; k < n; k++)
            fm_f32(&t->w)[k] = (is_w ? 1.0f : 0.0f) + 0.2f * fm_f32(&t->w)[k];
    }
}

static int test_vae_names(void)
{
    fm_err e = { 0 };
    fm_dnn d;
    fm_params p, pe, pd;
    fm_vae v;
    fm_vae_encoder enc;
    fm_vae_decoder dec;
    const fm_vae_cfg c = fm_vae_cfg_default();
    CHECK_OK(fm_dnn_init(&d, &e), &e);
    CHECK_OK(fm_params_init(&p, 256, 4 << 20, 7, &e), &e);
    CHECK_OK(fm_params_init(&pe, 256, 4 << 20, 7, &e), &e);
    CHECK_OK(fm_params_init(&pd, 256, 4 << 20, 7, &e), &e);
    CHECK_OK(fm_vae_init(&v, &d, &p, &c, 2, &e), &e);
    CHECK_OK(fm_vae_encoder_init(&enc, &d, &pe, &c, 3, 0, &e), &e);
    CHECK_OK(fm_vae_decoder_init(&dec, &d, &pd, &c, 5, 0, &e), &e);

    static const struct { const char *name; int64_t s0, s1; } want[] = {
        { "encoder.conv_in.weight", 32, 1 },
        { "encoder.down.0.res.0.norm1.weight", 32, 0 },
        { "encoder.down.0.res.0.conv2.bias", 32, 0 },
        { "encoder.down.0.downsample.weight", 32, 32 },
        { "encoder.down.1.res.0.conv1.weight", 64, 32 },
        { "encoder.down.1.res.0.skip.weight", 64, 32 },
        { "encoder.down.2.res.0.skip.bias", 128, 0 },
        { "encoder.out_norm.weight", 128, 0 },
        { "encoder.out_conv.weight", 8, 128 },
        { "decoder.conv_in.weight", 128, 4 },
        { "decoder.up.2.res.0.conv1.weight", 128, 128 },
        { "decoder.up.2.upsample.weight", 128, 128 },
        { "decoder.up.1.res.0.skip.weight", 64, 128 },
        { "decoder.up.1.upsample.weight", 64, 64 },
        { "decoder.up.0.res.0.skip.weight", 32, 64 },
        { "decoder.out_conv.weight", 1, 32 },
    };
    for (size_t i = 0; i < sizeof want / sizeof *want; i++) {
        fm_param *t = fm_params_find(&p, want[i].name);
        CHECK(t, "missing %s", want[i].name);
        CHECK(t->w.shape[0] == want[i].s0 && (!want[i].s1 || t->w.shape[1] == want[i].s1), "%s: shape [%lld, %lld]",
              want[i].name, (long long)t->w.shape[0], (long long)t->w.shape[1]);
    }
    const char *absent[] = { "encoder.down.0.res.0.skip.weight", "encoder.down.2.downsample.weight",
                             "decoder.up.0.upsample.weight", "decoder.up.2.res.0.skip.weight" };
    for (size_t i = 0; i < sizeof absent / sizeof *absent; i++)
        CHECK(!fm_params_find(&p, absent[i]), "unexpected %s", absent[i]);

    /* encoder first, then decoder, each one contiguous block; the separate
     * instances (other batch sizes) list the same names, shapes and values in
     * the same order, so one memcpy per block moves the weights */
    CHECK(v.enc.p_first == 0 && v.dec.p_first == v.enc.p_numel && v.dec.p_first + v.dec.p_numel == p.numel,
          "blocks: encoder %zu+%zu, decoder %zu+%zu, total %zu", v.enc.p_first, v.enc.p_numel, v.dec.p_first,
          v.dec.p_numel, p.numel);
    CHECK(pe.n + pd.n == p.n && pe.numel == v.enc.p_numel && pd.numel == v.dec.p_numel, "instance sizes");
    for (int i = 0; i < p.n; i++) {
        const fm_param *a = &p.items[i], *b = i < pe.n ? &pe.items[i] : &pd.items[i - pe.n];
        const size_t base = i < pe.n ? v.enc.p_first : v.dec.p_first;
        CHECK(!strcmp(a->name, b->name) && a->offset == base + b->offset, "entry %d: %s at %zu vs %s at %zu", i,
              a->name, a->offset, b->name, b->offset);
        CHECK(!memcmp(a->w.data, b->w.data, (size_t)fm_tensor_numel(&a->w) * sizeof(float)), "%s: values differ",
              a->name);
    }
    fprintf(stderr, "  default vae: %d tensors, %ld parameters (encoder %d tensors, decoder %d)\n", p.n,
            fm_fx_param_count(&p), pe.n, pd.n);
    fm_vae_free(&v);
    fm_vae_half_free(&enc);
    fm_vae_half_free(&dec);
    fm_params_free(&p);
    fm_params_free(&pe);
    fm_params_free(&pd);
    fm_dnn_free(&d);
    return 0;
}

/* ---- gradient check of the whole training loss ---- */

typedef struct vae_ctx {
    fm_vae v;
    float *x;
} vae_ctx;

static int vae_loss(void *p, double *l, fm_err *e)
{
    vae_ctx *c = p;
    fm_vae_loss vl;
    /* the same (seed, step, first) every call: the same eps */
    FM_TRY(fm_vae_forward(&c->v, c->x, 42, 3, 5, &vl, e));
    *l = vl.total;
    return FM_OK;
}

static int vae_bwd(void *p, fm_err *e)
{
    vae_ctx *c = p;
    return fm_vae_backward(&c->v, c->x, e);
}

static int test_vae_gradcheck(void)
{
    static const char *vars[] = {
        "encoder.conv_in.weight",       "encoder.down.0.res.0.norm1.weight", "encoder.down.1.res.0.conv1.weight",
        "encoder.down.1.res.0.skip.weight", "encoder.down.0.downsample.bias", "encoder.out_conv.weight",
        "encoder.out_conv.bias",        "decoder.conv_in.weight",           "decoder.up.1.upsample.weight",
        "decoder.up.0.res.0.conv2.weight", "decoder.up.0.res.0.norm2.bias",  "decoder.out_conv.bias",
    };
    fm_err e = { 0 };
    fm_fx_env v;
    static vae_ctx c;
    const fm_vae_cfg cfg = tiny_cfg();
    const int B = 2;
    CHECK_OK(fm_fx_env_init(&v, 0, 128, 1 << 20, 11, 0, &e), &e);
    CHECK_OK(fm_vae_init(&c.v, &v.d, &v.p, &cfg, B, &e), &e);
    perturb_norms(&v.p);
    const long nx = (long)B * 8 * 8;
    c.x = malloc((size_t)nx * sizeof(float));
    fill_images(c.x, nx, 1);
    fm_vae_loss l;
    CHECK_OK(fm_vae_forward(&c.v, c.x, 42, 3, 5, &l, &e), &e);
    fprintf(stderr, "  tiny vae loss: recon %.5f, kl %.5f, total %.5f\n", l.recon, l.kl, l.total);
    CHECK(l.kl > 0.0 && l.recon > 0.0, "loss parts");
    fm_fx_loss m = { .name = "vae", .ctx = &c, .loss = vae_loss, .backward = vae_bwd, .p = &v.p };
    /* fp32 model, loss difference in fp32: eps = 1e-2, tol = 2e-2; 20 entries per
     * tensor (a stride that is not a multiple of 9 visits every kernel tap) */
    int rc = fm_fx_gradcheck_loss(&m, vars, (int)(sizeof vars / sizeof *vars), 1e-2, 2e-2, 20, &e);
    fm_vae_free(&c.v);
    fm_fx_env_free(&v);
    free(c.x);
    CHECK_OK(rc, &e);
    return 0;
}

/* ---- the noise of a sample depends on its global index only ---- */

static int test_vae_batch_split(void)
{
    fm_err e = { 0 };
    fm_dnn d;
    fm_params p2, p1;
    fm_vae v2, v1;
    const fm_vae_cfg cfg = tiny_cfg();
    CHECK_OK(fm_dnn_init(&d, &e), &e);
    CHECK_OK(fm_params_init(&p2, 128, 1 << 20, 11, &e), &e);
    CHECK_OK(fm_params_init(&p1, 128, 1 << 20, 11, &e), &e);
    CHECK_OK(fm_vae_init(&v2, &d, &p2, &cfg, 2, &e), &e);
    CHECK_OK(fm_vae_init(&v1, &d, &p1, &cfg, 1, &e), &e);
    CHECK(p1.numel == p2.numel && !memcmp(p1.data, p2.data, p1.numel * sizeof(float)), "same init");
    const long D = v1.nlat, npx = 64;
    float x[128];
    fill_images(x, 128, 2);
    fm_vae_loss l2, la, lb;
    CHECK_OK(fm_vae_forward(&v2, x, 9, 17, 10, &l2, &e), &e);
    float *eps2 = malloc(2 * D * sizeof(float)), *mu2 = malloc(2 * D * sizeof(float));
    memcpy(eps2, v2.eps, 2 * D * sizeof(float));
    memcpy(mu2, v2.mu, 2 * D * sizeof(float));
    CHECK_OK(fm_vae_forward(&v1, x, 9, 17, 10, &la, &e), &e);
    CHECK(!memcmp(v1.eps, eps2, D * sizeof(float)), "row 0 noise differs between batch 2 and batch 1");
    double emu = fm_rel_err(v1.mu, mu2, D, 1e-6);
    CHECK_OK(fm_vae_forward(&v1, x + npx, 9, 17, 11, &lb, &e), &e);
    CHECK(!memcmp(v1.eps, eps2 + D, D * sizeof(float)), "row 1 noise differs between batch 2 and batch 1");
    emu = fmax(emu, fm_rel_err(v1.mu, mu2 + D, D, 1e-6));
    const double mean = 0.5 * (la.total + lb.total), el = fabs(l2.total - mean) / fabs(mean);
    fprintf(stderr, "  batch 2 vs 2 x batch 1: noise identical, mu rel err %.2e, loss %.7f vs %.7f (%.1e)\n", emu,
            l2.total, mean, el);
    CHECK(emu < 1e-5 && el < 1e-5, "per-sample results differ: mu %.2e loss %.2e", emu, el);
    /* other step or sample: other noise */
    CHECK(memcmp(eps2, eps2 + D, D * sizeof(float)), "rows share noise");
    CHECK_OK(fm_vae_forward(&v1, x, 9, 18, 10, &la, &e), &e);
    CHECK(memcmp(v1.eps, eps2, D * sizeof(float)), "steps share noise");
    free(eps2);
    free(mu2);
    fm_vae_free(&v2);
    fm_vae_free(&v1);
    fm_params_free(&p2);
    fm_params_free(&p1);
    fm_dnn_free(&d);
    return 0;
}

/* ---- logvar clamp: values at the bounds, no gradient through them ---- */

static int test_vae_logvar_clamp(void)
{
    fm_err e = { 0 };
    fm_fx_env env;
    fm_vae v;
    const fm_vae_cfg cfg = tiny_cfg();
    const int lc = cfg.latent_ch;
    CHECK_OK(fm_fx_env_init(&env, 0, 128, 1 << 20, 11, 0, &e), &e);
    CHECK_OK(fm_vae_init(&v, &env.d, &env.p, &cfg, 2, &e), &e);
    /* raw logvar = bias exactly: +100 for latent channel 0, -100 for channel 1 */
    fm_param *w = fm_params_find(&env.p, "encoder.out_conv.weight");
    fm_param *b = fm_params_find(&env.p, "encoder.out_conv.bias");
    const long per_out = (long)(w->w.shape[1] * w->w.shape[2] * w->w.shape[3]);
    memset(fm_f32(&w->w) + lc * per_out, 0, (size_t)(lc * per_out) * sizeof(float));
    fm_f32(&b->w)[lc + 0] = 100.0f;
    fm_f32(&b->w)[lc + 1] = -100.0f;
    float x[128];
    fill_images(x, 128, 3);
    fm_vae_loss l;
    CHECK_OK(fm_vae_forward(&v, x, 1, 1, 0, &l, &e), &e);
    CHECK_OK(fm_vae_backward(&v, x, &e), &e);
    CHECK(isfinite(l.total), "loss %g", l.total);
    for (long i = 0; i < v.nlat; i++) {
        const float want = i % lc == 0 ? FM_VAE_LOGVAR_MAX : FM_VAE_LOGVAR_MIN;
        CHECK(v.logvar[i] == want && v.dlogvar[i] == 0.0f, "logvar[%ld] = %g (grad %g)", i, v.logvar[i],
              v.dlogvar[i]);
    }
    for (long i = lc * per_out; i < 2 * lc * per_out; i++)
        CHECK(fm_f32(&w->g)[i] == 0.0f, "logvar weight gradient %g at %ld", fm_f32(&w->g)[i], i);
    CHECK(fm_f32(&b->g)[lc] == 0.0f && fm_f32(&b->g)[lc + 1] == 0.0f && fm_f32(&b->g)[0] != 0.0f,
          "bias gradients %g %g %g", fm_f32(&b->g)[lc], fm_f32(&b->g)[lc + 1], fm_f32(&b->g)[0]);
    fm_vae_free(&v);
    fm_fx_env_free(&env);
    return 0;
}

/* ---- inference instances: encode_mean and decode at other batch sizes ---- */

static int test_vae_inference(void)
{
    fm_err e = { 0 };
    fm_dnn d;
    fm_params p, pe, pd;
    fm_vae v;
    fm_vae_encoder enc;
    fm_vae_decoder dec;
    const fm_vae_cfg cfg = tiny_cfg();
    CHECK_OK(fm_dnn_init(&d, &e), &e);
    CHECK_OK(fm_params_init(&p, 128, 1 << 20, 11, &e), &e);
    CHECK_OK(fm_params_init(&pe, 128, 1 << 20, 99, &e), &e); /* other seed: the weights must come from the copy */
    CHECK_OK(fm_params_init(&pd, 128, 1 << 20, 99, &e), &e);
    CHECK_OK(fm_vae_init(&v, &d, &p, &cfg, 3, &e), &e);
    perturb_norms(&p);
    CHECK_OK(fm_vae_encoder_init(&enc, &d, &pe, &cfg, 3, 0, &e), &e);
    CHECK_OK(fm_vae_decoder_init(&dec, &d, &pd, &cfg, 1, 0, &e), &e);
    memcpy(pe.data + enc.p_first, p.data + v.enc.p_first, enc.p_numel * sizeof(float));
    memcpy(pd.data + dec.p_first, p.data + v.dec.p_first, dec.p_numel * sizeof(float));
    float x[3 * 64], mu[3 * 32], xhat[64];
    fill_images(x, 3 * 64, 4);
    fm_vae_loss l;
    CHECK_OK(fm_vae_forward(&v, x, 1, 1, 0, &l, &e), &e);
    CHECK_OK(fm_vae_encode_mean(&enc, x, mu, &e), &e);
    double emu = fm_rel_err(mu, v.mu, v.nlat, 1e-6);
    const long D = v.nlat / 3;
    CHECK_OK(fm_vae_decode(&dec, v.z + 2 * D, xhat, &e), &e);
    double ex = fm_rel_err(xhat, v.dec.out + 2 * 64, 64, 1e-6);
    fprintf(stderr, "  encode_mean vs training mu: %.2e; decode (batch 1) vs training xhat row 2: %.2e\n", emu, ex);
    CHECK(emu < 1e-6 && ex < 1e-5, "inference differs: mu %.2e xhat %.2e", emu, ex);
    CHECK(fm_vae_half_backward(&enc, x, mu, &e) == FM_ERR_INTERNAL, "backward without train accepted");
    fm_vae_free(&v);
    fm_vae_half_free(&enc);
    fm_vae_half_free(&dec);
    fm_params_free(&p);
    fm_params_free(&pe);
    fm_params_free(&pd);
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

/* The encoder's, decoder's and training model's arenas are sized by
 * measuring their own set-up: exactly what they take, fp32 and bf16, for
 * training and inference instances, small and larger batches. */
static int test_vae_arena_exact(void)
{
    for (int bf16 = 0; bf16 < 2; bf16++)
        for (int b = 1; b <= 65; b += 64) {
            fm_err e = { 0 };
            const fm_vae_cfg c = tiny_cfg();
            fm_dnn d;
            fm_params p, pe, pd;
            fm_vae v;
            fm_vae_encoder enc;
            fm_vae_decoder dec;
            CHECK_OK(fm_dnn_init(&d, &e), &e);
            d.bf16 = bf16;
            CHECK_OK(fm_params_init(&p, 256, 1 << 20, 3, &e), &e);
            CHECK_OK(fm_params_init(&pe, 256, 1 << 20, 3, &e), &e);
            CHECK_OK(fm_params_init(&pd, 256, 1 << 20, 3, &e), &e);
            CHECK_OK(fm_vae_init(&v, &d, &p, &c, b, &e), &e);
            CHECK_OK(fm_vae_encoder_init(&enc, &d, &pe, &c, b, 0, &e), &e);
            CHECK_OK(fm_vae_decoder_init(&dec, &d, &pd, &c, b, 0, &e), &e);
            const fm_arena a[5] = { v.enc.arena, v.dec.arena, v.arena, enc.arena, dec.arena };
            fm_vae_free(&v);
            fm_vae_half_free(&enc);
            fm_vae_half_free(&dec);
            fm_params_free(&p);
            fm_params_free(&pe);
            fm_params_free(&pd);
            fm_dnn_free(&d);
            for (int k = 0; k < 5; k++)
                CHECK(arena_exact(&a[k]), "%s batch %d arena %d: %zu used, %zu reserved", bf16 ? "bf16" : "fp32", b,
                      k, a[k].used, a[k].cap);
        }
    return 0;
}

static int test_vae_bad_cfg(void)
{
    fm_err e = { 0 };
    fm_fx_env env;
    fm_vae v;
    CHECK_OK(fm_fx_env_init(&env, 0, 128, 1 << 20, 11, 0, &e), &e);
    fm_vae_cfg c = tiny_cfg();
    c.channels[1] = 6; /* 6 channels, 2 groups: fine; 5 is not */
    c.channels[1] = 5;
    CHECK(fm_vae_init(&v, &env.d, &env.p, &c, 2, &e) == FM_ERR_USAGE, "5 channels in 2 groups accepted");
    fprintf(stderr, "  %s\n", e.msg);
    c = tiny_cfg();
    c.size = 9;
    CHECK(fm_vae_init(&v, &env.d, &env.p, &c, 2, &e) == FM_ERR_USAGE, "size 9 with 2 levels accepted");
    c = tiny_cfg();
    c.levels = 5;
    CHECK(fm_vae_init(&v, &env.d, &env.p, &c, 2, &e) == FM_ERR_USAGE, "5 levels accepted");
    c = tiny_cfg();
    c.kl_weight = -1.0f;
    CHECK(fm_vae_init(&v, &env.d, &env.p, &c, 2, &e) == FM_ERR_USAGE, "negative kl_weight accepted");
    CHECK(env.p.n == 0, "a rejected config registered parameters");
    fm_fx_env_free(&env);
    return 0;
}

/* Forward + backward time of the default VAE (not asserted). Batch from
 * FM_BENCH_VAE_B (default 16; the report quotes 128). */
typedef struct vae_run {
    fm_vae v;
    const float *x;
    uint64_t step; /* a new eps every run */
    fm_vae_loss l;
} vae_run;

static int vae_run_fwd(void *p, fm_err *e)
{
    vae_run *r = p;
    return fm_vae_forward(&r->v, r->x, 1, r->step++, 0, &r->l, e);
}

static int vae_run_bwd(void *p, fm_err *e)
{
    vae_run *r = p;
    return fm_vae_backward(&r->v, r->x, e);
}

static int test_vae_timing(void)
{
    const char *env = getenv("FM_BENCH_VAE_B");
    const int B = env ? atoi(env) : 16;
    CHECK(B > 0, "FM_BENCH_VAE_B = %s", env);
    fm_err e = { 0 };
    fm_fx_env v;
    vae_run r = { 0 };
    const fm_vae_cfg c = fm_vae_cfg_default();
    CHECK_OK(fm_fx_env_init(&v, 0, 256, 4 << 20, 7, 0, &e), &e);
    CHECK_OK(fm_vae_init(&r.v, &v.d, &v.p, &c, B, &e), &e);
    const long nx = (long)B * c.size * c.size;
    float *x = malloc((size_t)nx * sizeof(float));
    fill_images(x, nx, 5);
    r.x = x;
    fm_fx_times t;
    CHECK_OK(fm_fx_time(vae_run_fwd, vae_run_bwd, &r, 1, 2, &t, &e), &e); /* the first is a warm-up */
    const double fl = fm_vae_flops(&r.v), best = t.best;
    fprintf(stderr,
            "  vae default: %ld parameters; B = %d: forward+backward %.1f ms (%.2f ms/image, %.1f GFLOP, %.1f GFLOP/s); "
            "arenas: encoder %.1f of %.1f MiB, decoder %.1f of %.1f MiB\n",
            fm_fx_param_count(&v.p), B, best * 1e3, best * 1e3 / B, fl * 1e-9, fl / best * 1e-9,
            r.v.enc.arena.peak / 1048576.0, r.v.enc.arena.cap / 1048576.0, r.v.dec.arena.peak / 1048576.0,
            r.v.dec.arena.cap / 1048576.0);
    CHECK(isfinite(r.l.total), "loss %g", r.l.total);
    free(x);
    fm_vae_free(&r.v);
    fm_fx_env_free(&v);
    return 0;
}

int main(int argc, char **argv)
{
    const fm_test tests[] = {
        TEST(test_vae_names),     TEST(test_vae_gradcheck), TEST(test_vae_batch_split), TEST(test_vae_logvar_clamp),
        TEST(test_vae_inference), TEST(test_vae_bad_cfg), TEST(test_vae_arena_exact),   TEST(test_vae_timing),
    };
    return fm_test_main("models/vae", tests, (int)(sizeof tests / sizeof *tests), argc, argv);
}
