/* test_optim.c - AdamW, EMA, LR schedule and gradient clipping against naive
 * reference loops (double precision, and a scalar fp32 loop of the same formula). */
#include <math.h>
#include <omp.h>
#include <stdlib.h>
#include <string.h>

#include "fm/clip.h"
#include "fm/ema.h"
#include "fm/optim.h"
#include "fm/params.h"
#include "fm/rng.h"
#include "fm/schedule.h"
#include "test.h"

enum { STEPS = 10 };
static const uint64_t SEED = 1234;

/* A small model: mixed ranks, sizes that are not multiples of 16 (so the
 * arena has padding), and 1-D tensors that get no weight decay. */
static int make_params(fm_params *p, fm_err *e)
{
    static const struct { const char *name; int ndim; int64_t shape[4]; } spec[] = {
        { "conv.weight", 4, { 4, 3, 3, 3 } }, { "conv.bias", 1, { 4 } },  { "lin.weight", 2, { 7, 5 } },
        { "lin.bias", 1, { 7 } },              { "norm.weight", 1, { 5 } }, { "emb.weight", 2, { 11, 9 } },
    };
    CHECK_OK(fm_params_init(p, 16, 1024, SEED, e), e);
    for (size_t i = 0; i < sizeof spec / sizeof *spec; i++) {
        fm_param *t;
        CHECK_OK(fm_params_add(p, &t, spec[i].ndim, spec[i].shape, e, "%s", spec[i].name), e);
        fm_param_init_uniform(p, t, 0.5f);
    }
    return 0;
}

/* Gradients of step s: N(0, 1) on every tensor, zero in the padding. */
static void fill_grads(fm_params *p, int s)
{
    for (int i = 0; i < p->n; i++)
        fm_fill_normal(p->items[i].g.data, (long)fm_tensor_numel(&p->items[i].g), SEED, 100 + (uint64_t)s, 0);
}

/* Naive double AdamW over one tensor's elements (PyTorch's formula). */
static void ref_adamw(double *w, double *m, double *v, const float *g, long n, double lr, double wd,
                      const fm_adamw_cfg *c, int t)
{
    double bc1 = 1 - pow(c->beta1, t), bc2 = 1 - pow(c->beta2, t);
    for (long i = 0; i < n; i++) {
        w[i] *= 1 - lr * wd;
        m[i] = c->beta1 * m[i] + (1 - c->beta1) * g[i];
        v[i] = c->beta2 * v[i] + (1 - c->beta2) * (double)g[i] * g[i];
        w[i] -= lr / bc1 * m[i] / (sqrt(v[i]) / sqrt(bc2) + c->eps);
    }
}

static double rel_err_d(const float *a, const double *b, long n)
{
    double md = 0, mb = 1e-30;
    for (long i = 0; i < n; i++) {
        md = fmax(md, fabs(a[i] - b[i]));
        mb = fmax(mb, fabs(b[i]));
        if (isnan(a[i]))
            return INFINITY;
    }
    return md / mb;
}

static double lr_of(int s) { return 1e-2 * (1 + s) / STEPS; }

/* Ours vs the double reference after each of 10 steps: params (and their
 * change from the start, which is what AdamW computes), m and v. The biases
 * and norm weights have decay off; a reference that decays them must differ. */
static int test_adamw_vs_double_reference(void)
{
    fm_err e = { 0 };
    fm_params p;
    if (make_params(&p, &e))
        return 1;
    fm_adamw_cfg cfg = { .beta1 = 0.9, .beta2 = 0.99, .eps = 1e-8, .weight_decay = 0.1 };
    fm_adamw o;
    CHECK_OK(fm_adamw_init(&o, &p, &cfg, &e), &e);
    CHECK(fm_adamw_no_decay_1d(&o) == 3, "expected 3 tensors without decay");
    long n = (long)p.numel;
    double *w = calloc(n, sizeof *w), *m = calloc(n, sizeof *m), *v = calloc(n, sizeof *v);
    double *wa = calloc(n, sizeof *wa), *ma = calloc(n, sizeof *ma), *va = calloc(n, sizeof *va);
    float *w0 = malloc(n * sizeof *w0);
    for (long i = 0; i < n; i++)
        w[i] = wa[i] = w0[i] = p.data[i];
    double worst = 0, worst_delta = 0, worst_mv = 0, bias_if_decayed = 0;
    for (int s = 0; s < STEPS; s++) {
        fill_grads(&p, s);
        CHECK_OK(fm_adamw_step(&o, lr_of(s), &e), &e);
        CHECK(o.step == s + 1, "step count %lld after %d steps", (long long)o.step, s + 1);
        for (int k = 0; k < p.n; k++) {
            fm_param *t = &p.items[k];
            long off = (long)t->offset, len = (long)fm_tensor_numel(&t->w);
            double wd = t->w.ndim == 1 ? 0.0 : cfg.weight_decay;
            ref_adamw(w + off, m + off, v + off, p.grad + off, len, lr_of(s), wd, &cfg, s + 1);
            ref_adamw(wa + off, ma + off, va + off, p.grad + off, len, lr_of(s), cfg.weight_decay, &cfg, s + 1);
            worst = fmax(worst, rel_err_d(p.data + off, w + off, len));
            worst_mv = fmax(worst_mv, fmax(rel_err_d(o.m + off, m + off, len), rel_err_d(o.v + off, v + off, len)));
            double dmax = 0, derr = 0, aerr = 0;
            for (long i = off; i < off + len; i++) {
                dmax = fmax(dmax, fabs(w[i] - w0[i]));
                derr = fmax(derr, fabs((p.data[i] - w0[i]) - (w[i] - w0[i])));
                aerr = fmax(aerr, fabs((p.data[i] - w0[i]) - (wa[i] - w0[i])));
            }
            worst_delta = fmax(worst_delta, derr / dmax);
            if (t->w.ndim == 1)
                bias_if_decayed = fmax(bias_if_decayed, aerr / dmax);
        }
    }
    int pad_ok = 1;
    for (int k = 0; k < p.n; k++) {
        size_t end = k + 1 < p.n ? p.items[k + 1].offset : p.numel;
        for (size_t i = p.items[k].offset + (size_t)fm_tensor_numel(&p.items[k].w); i < end; i++)
            pad_ok &= p.data[i] == 0 && o.m[i] == 0 && o.v[i] == 0;
    }
    printf("  adamw vs double: params %.1e, change %.1e, m/v %.1e (decayed-bias reference %.1e)\n", worst,
           worst_delta, worst_mv, bias_if_decayed);
    free(w), free(m), free(v), free(wa), free(ma), free(va), free(w0);
    fm_adamw_free(&o);
    fm_params_free(&p);
    /* fp32 vs double over 10 steps: ~1e-7 on params. The change of a tensor
     * (max 3e-3 .. 5e-2) carries the fp32 rounding of the params (up to 3e-8 a
     * step), so ~3e-5 of it; 1e-4 still catches a 1e-4 error in the update. */
    CHECK(worst < 2e-6, "params rel err %g", worst);
    CHECK(worst_delta < 1e-4, "param change rel err %g", worst_delta);
    CHECK(worst_mv < 2e-6, "m/v rel err %g", worst_mv);
    CHECK(bias_if_decayed > 1e-3, "decay mask has no effect (%g)", bias_if_decayed);
    CHECK(pad_ok, "padding changed");
    return 0;
}

/* The fused pass is bitwise equal to a scalar fp32 loop of torch's
 * formula, and independent of the thread count (slices cut through tensors). */
static int run_fused(int threads, fm_params *p, fm_adamw *o, fm_err *e)
{
    omp_set_num_threads(threads);
    for (int s = 0; s < STEPS; s++) {
        fill_grads(p, s);
        CHECK_OK(fm_adamw_step(o, lr_of(s), e), e);
    }
    omp_set_num_threads(2);
    return 0;
}

static int test_adamw_bitwise_scalar_and_threads(void)
{
    fm_err e = { 0 };
    fm_params p1, p3, pr;
    if (make_params(&p1, &e) || make_params(&p3, &e) || make_params(&pr, &e))
        return 1;
    fm_adamw_cfg cfg = { .beta1 = 0.8, .beta2 = 0.95, .eps = 1e-6, .weight_decay = 0.05 };
    fm_adamw o1, o3;
    CHECK_OK(fm_adamw_init(&o1, &p1, &cfg, &e), &e);
    CHECK_OK(fm_adamw_init(&o3, &p3, &cfg, &e), &e);
    CHECK_OK(fm_adamw_set_decay(&o1, 2, 0, &e), &e); /* lin.weight by index */
    CHECK_OK(fm_adamw_set_decay(&o3, 2, 0, &e), &e);
    CHECK(o1.nseg == 3, "segments %d", o1.nseg); /* decay on, off (lin.weight), on */
    fm_adamw ot;
    CHECK_OK(fm_adamw_init(&ot, &p1, &cfg, &e), &e);
    /* on, off, on, then lin.bias, norm.weight, emb.weight merge into one run */
    int named = fm_adamw_no_decay_named(&ot, "emb"), flat = fm_adamw_no_decay_1d(&ot);
    int nseg = ot.nseg, last_off = !ot.decay[5], first_on = ot.decay[0];
    fm_adamw_free(&ot);
    CHECK(named == 1 && flat == 3 && nseg == 4 && last_off && first_on, "named %d 1-d %d segments %d", named, flat,
          nseg);
    if (run_fused(1, &p1, &o1, &e) || run_fused(3, &p3, &o3, &e))
        return 1;
    /* scalar reference, the same fp32 operations in the same order */
    long n = (long)pr.numel;
    float *m = calloc(n, sizeof *m), *v = calloc(n, sizeof *v);
    for (int s = 0; s < STEPS; s++) {
        fill_grads(&pr, s);
        double lr = lr_of(s), bc1 = 1 - pow(cfg.beta1, s + 1), bc2 = 1 - pow(cfg.beta2, s + 1);
        for (int k = 0; k < pr.n; k++) {
            float keep = (float)(1 - lr * (k == 2 ? 0.0 : cfg.weight_decay));
            float *w = pr.items[k].w.data, *g = pr.items[k].g.data;
            float *mk = m + pr.items[k].offset, *vk = v + pr.items[k].offset;
            for (long i = 0; i < fm_tensor_numel(&pr.items[k].w); i++) {
                w[i] = w[i] * keep;
                mk[i] = mk[i] * (float)cfg.beta1 + (float)(1 - cfg.beta1) * g[i];
                vk[i] = vk[i] * (float)cfg.beta2 + (float)(1 - cfg.beta2) * g[i] * g[i];
                float den = sqrtf(vk[i]) / (float)sqrt(bc2) + (float)cfg.eps;
                w[i] = w[i] + (float)-(lr / bc1) * mk[i] / den;
            }
        }
    }
    size_t bytes = p1.numel * sizeof(float);
    int same_threads = !memcmp(p1.data, p3.data, bytes) && !memcmp(o1.m, o3.m, bytes) && !memcmp(o1.v, o3.v, bytes);
    int same_scalar = !memcmp(p1.data, pr.data, bytes) && !memcmp(o1.m, m, bytes) && !memcmp(o1.v, v, bytes);
    free(m), free(v);
    fm_adamw_free(&o1), fm_adamw_free(&o3);
    fm_params_free(&p1), fm_params_free(&p3), fm_params_free(&pr);
    CHECK(same_threads, "1 and 3 threads differ");
    CHECK(same_scalar, "fused pass differs from the scalar fp32 loop");
    return 0;
}

/* Checkpoint round trip: save params, m, v, step after 4 steps, restore into
 * a fresh optimiser, continue: bitwise equal to the uninterrupted run. */
static int test_adamw_state_resume(void)
{
    fm_err e = { 0 };
    fm_params pa, pb;
    if (make_params(&pa, &e) || make_params(&pb, &e))
        return 1;
    fm_adamw_cfg cfg = fm_adamw_defaults();
    fm_adamw oa, ob;
    CHECK_OK(fm_adamw_init(&oa, &pa, &cfg, &e), &e);
    fm_adamw_no_decay_1d(&oa);
    size_t bytes = pa.numel * sizeof(float);
    float *saved = malloc(3 * bytes);
    int64_t saved_step = 0;
    for (int s = 0; s < STEPS; s++) {
        if (s == 4) {
            memcpy(saved, pa.data, bytes);
            memcpy(saved + pa.numel, oa.m, bytes);
            memcpy(saved + 2 * pa.numel, oa.v, bytes);
            saved_step = oa.step;
        }
        fill_grads(&pa, s);
        CHECK_OK(fm_adamw_step(&oa, lr_of(s), &e), &e);
    }
    CHECK_OK(fm_adamw_init(&ob, &pb, &cfg, &e), &e);
    fm_adamw_no_decay_1d(&ob);
    memcpy(pb.data, saved, bytes);
    memcpy(ob.m, saved + pb.numel, bytes);
    memcpy(ob.v, saved + 2 * pb.numel, bytes);
    ob.step = saved_step;
    for (int s = (int)saved_step; s < STEPS; s++) {
        fill_grads(&pb, s);
        CHECK_OK(fm_adamw_step(&ob, lr_of(s), &e), &e);
    }
    int same = !memcmp(pa.data, pb.data, bytes) && !memcmp(oa.m, ob.m, bytes) && !memcmp(oa.v, ob.v, bytes) &&
               oa.step == ob.step;
    /* misuse is reported, not crashed on */
    int bad_lr = fm_adamw_step(&ob, NAN, &e) != FM_OK && strstr(e.msg, "learning rate");
    int64_t shape[1] = { 3 };
    CHECK_OK(fm_params_add(&pb, NULL, 1, shape, &e, "late.bias"), &e);
    int grown = fm_adamw_step(&ob, 1e-3, &e) != FM_OK && strstr(e.msg, "changed after init");
    fm_adamw_cfg bad = cfg;
    bad.beta2 = 1.0;
    fm_adamw oc;
    int bad_cfg = fm_adamw_init(&oc, &pb, &bad, &e) == FM_ERR_USAGE && strstr(e.msg, "betas");
    free(saved);
    fm_adamw_free(&oa), fm_adamw_free(&ob);
    fm_params_free(&pa), fm_params_free(&pb);
    CHECK(same, "resumed run differs");
    CHECK(bad_lr && grown && bad_cfg, "errors not reported: lr %d grown %d cfg %d", bad_lr, grown, bad_cfg);
    return 0;
}

/* Several EMAs in one pass (fm_ema_update_n, and on spans of a packed
 * shard, fm_ema_update_spans_n): bitwise each one's own update. */
static int test_ema_fused(void)
{
    fm_err e = { 0 };
    fm_params p;
    if (make_params(&p, &e))
        return 1;
    enum { K = 3 };
    const double rates[K] = { 0.99, 0.9, 0.5 };
    const size_t n = p.numel, h = n / 2;
    /* a "shard": the second half of the arena, then the first quarter, packed */
    const fm_span spans[2] = { { h, n - h }, { 0, n / 4 } };
    const size_t at[2] = { 0, n - h }, shard = n - h + n / 4;
    fm_ema fused[K], one[K], fs[K], os[K];
    for (int k = 0; k < K; k++) {
        CHECK_OK(fm_ema_init(&fused[k], &p, rates[k], k == 1, &e), &e);
        CHECK_OK(fm_ema_init(&one[k], &p, rates[k], k == 1, &e), &e);
        CHECK_OK(fm_ema_init_shard(&fs[k], &p, rates[k], k == 1, shard, &e), &e);
        CHECK_OK(fm_ema_init_shard(&os[k], &p, rates[k], k == 1, shard, &e), &e);
    }
    for (int s = 0; s < STEPS; s++) {
        fm_fill_normal(p.data, (long)n, SEED, 700 + (uint64_t)s, 0);
        CHECK_OK(fm_ema_update_n(fused, K, s, &e), &e);
        CHECK_OK(fm_ema_update_spans_n(fs, K, s, spans, at, 2, &e), &e);
        for (int k = 0; k < K; k++) {
            CHECK_OK(fm_ema_update(&one[k], s, &e), &e);
            CHECK_OK(fm_ema_update_spans(&os[k], s, spans, at, 2, &e), &e);
        }
    }
    for (int k = 0; k < K; k++) {
        CHECK(!memcmp(fused[k].w, one[k].w, n * sizeof(float)), "rate %g: fused pass differs", rates[k]);
        CHECK(!memcmp(fs[k].w, os[k].w, shard * sizeof(float)), "rate %g: fused spans differ", rates[k]);
        CHECK(k == 0 || memcmp(one[k].w, one[0].w, n * sizeof(float)), "rates %d and 0 agree", k);
    }
    CHECK(fm_ema_update_spans_n(fs, K, 0, spans, at, 2, &e) == FM_OK, "spans");
    CHECK(fm_ema_update_n(fs, K, 0, &e) == FM_ERR_INTERNAL, "a shard updated whole");
    CHECK(fm_ema_update_n(fused, FM_EMA_MAX + 1, 0, &e) == FM_ERR_INTERNAL, "too many averages");
    char pre[32];
    fm_ema_prefix(0.9999, 1, pre, sizeof pre);
    CHECK(!strcmp(pre, "ema."), "first prefix %s", pre);
    fm_ema_prefix(0.9999, 0, pre, sizeof pre);
    CHECK(!strcmp(pre, "ema@0.9999."), "further prefix %s", pre);
    for (int k = 0; k < K; k++) {
        fm_ema_free(&fused[k]), fm_ema_free(&one[k]);
        fm_ema_free(&fs[k]), fm_ema_free(&os[k]);
    }
    fm_params_free(&p);
    printf("  %d EMAs fused (whole and on 2 spans of a packed shard) = each alone, bitwise\n", K);
    return 0;
}

/* EMA against a double loop, with and without warm-up; swap and copy. */
static int test_ema(void)
{
    fm_err e = { 0 };
    for (int warm = 0; warm <= 1; warm++) {
        fm_params p;
        if (make_params(&p, &e))
            return 1;
        fm_ema ema;
        CHECK_OK(fm_ema_init(&ema, &p, 0.95, warm, &e), &e);
        CHECK(!memcmp(ema.w, p.data, p.numel * sizeof(float)), "ema not initialised to the params");
        long n = (long)p.numel;
        double *ref = malloc(n * sizeof *ref);
        for (long i = 0; i < n; i++)
            ref[i] = p.data[i];
        CHECK(fm_ema_decay_at(&ema, 0) == (warm ? 0.1 : 0.95), "decay at 0: %g", fm_ema_decay_at(&ema, 0));
        CHECK(fm_ema_decay_at(&ema, 1000) == 0.95, "decay at 1000: %g", fm_ema_decay_at(&ema, 1000));
        for (int s = 0; s < STEPS; s++) {
            fm_fill_normal(p.data, n, SEED, 500 + (uint64_t)s, 0); /* new "trained" weights */
            CHECK_OK(fm_ema_update(&ema, s, &e), &e);
            double d = warm ? fmin(0.95, (1.0 + s) / (10.0 + s)) : 0.95;
            for (long i = 0; i < n; i++)
                ref[i] = d * ref[i] + (1 - d) * p.data[i];
        }
        double err = rel_err_d(ema.w, ref, n);
        printf("  ema (warm-up %d) vs double: %.1e\n", warm, err);
        CHECK(err < 1e-6, "ema rel err %g", err);
        float *live = malloc(n * sizeof *live), *avg = malloc(n * sizeof *avg);
        memcpy(live, p.data, n * sizeof *live);
        memcpy(avg, ema.w, n * sizeof *avg);
        CHECK_OK(fm_ema_swap(&ema, &e), &e);
        CHECK(!memcmp(p.data, avg, n * sizeof *avg) && !memcmp(ema.w, live, n * sizeof *live), "swap");
        CHECK_OK(fm_ema_swap(&ema, &e), &e);
        CHECK(!memcmp(p.data, live, n * sizeof *live) && !memcmp(ema.w, avg, n * sizeof *avg), "swap back");
        float *dst = calloc(n, sizeof *dst);
        fm_ema_copy_to(&ema, dst);
        CHECK(!memcmp(dst, avg, n * sizeof *dst), "copy_to");
        free(ref), free(live), free(avg), free(dst);
        fm_ema_free(&ema);
        fm_ema bad;
        CHECK(fm_ema_init(&bad, &p, 1.5, 0, &e) == FM_ERR_USAGE, "decay 1.5 accepted");
        fm_params_free(&p);
    }
    return 0;
}

/* ZeRO-1 shards: the arena cut into pieces that cross tensors and decay runs,
 * dealt alternately to two "ranks" (one in reverse order). Each rank keeps
 * its m, v and EMA packed in span order (fm_adamw_init_shard, at[]) and
 * updates its spans of a shared weight copy; after every step the weights,
 * and each rank's packed state, equal the whole optimiser's and EMA's bit for
 * bit. Whole-state calls on a shard are refused. */
/* fm_ema_warmup_reaches: the first update whose warm-up decay reaches the
 * rate, against fm_ema_decay_at itself */
static int test_ema_warmup_reaches(void)
{
    const double rates[] = { 0.05, 0.1, 0.5, 0.9, 0.99, 0.998, 0.999, 0.9995, 0.9999 };
    for (size_t i = 0; i < sizeof rates / sizeof *rates; i++) {
        fm_ema m = { .decay = 1.0, .warmup = 1 }; /* the warm-up curve alone */
        const int64_t k = fm_ema_warmup_reaches(rates[i]);
        CHECK(fm_ema_decay_at(&m, k) >= rates[i], "rate %g: update %lld gives %.10g", rates[i], (long long)k,
              fm_ema_decay_at(&m, k));
        CHECK(k == 0 || fm_ema_decay_at(&m, k - 1) < rates[i], "rate %g: update %lld is not the first", rates[i],
              (long long)k);
    }
    CHECK(fm_ema_warmup_reaches(0.999) == 8990, "0.999: %lld", (long long)fm_ema_warmup_reaches(0.999));
    CHECK(fm_ema_warmup_reaches(1.0) == INT64_MAX, "a decay of 1 is never reached");
    return 0;
}

static int test_shards_packed(void)
{
    fm_err e = { 0 };
    fm_params pw, ps;
    if (make_params(&pw, &e) || make_params(&ps, &e))
        return 1;
    const size_t n = pw.numel, cuts[] = { 0, 13, 29, 61, 150, 233, n };
    enum { NCUT = sizeof cuts / sizeof *cuts - 1 };
    CHECK(n > 233, "arena of %zu floats", n);
    fm_span spans[2][NCUT];
    size_t at[2][NCUT], floats[2] = { 0, 0 };
    int ns[2] = { 0, 0 };
    for (int k = 0; k < NCUT; k++) {
        const int r = k % 2, j = r ? ns[r]++ : NCUT / 2 - 1 - ns[r]++; /* rank 0's pieces last to first */
        spans[r][j] = (fm_span){ cuts[k], cuts[k + 1] - cuts[k] };
    }
    for (int r = 0; r < 2; r++)
        for (int j = 0; j < ns[r]; j++)
            at[r][j] = floats[r], floats[r] += spans[r][j].count;
    fm_adamw_cfg cfg = fm_adamw_defaults();
    fm_adamw ow, os[2];
    fm_ema ew, es[2];
    CHECK_OK(fm_adamw_init(&ow, &pw, &cfg, &e), &e);
    CHECK_OK(fm_ema_init(&ew, &pw, 0.9, 1, &e), &e);
    fm_adamw_no_decay_1d(&ow);
    for (int r = 0; r < 2; r++) {
        CHECK_OK(fm_adamw_init_shard(&os[r], &ps, &cfg, floats[r], &e), &e);
        fm_adamw_no_decay_1d(&os[r]);
        CHECK_OK(fm_ema_init_shard(&es[r], &ps, 0.9, 1, floats[r], &e), &e);
        for (int j = 0; j < ns[r]; j++) /* the EMA starts at the weights */
            memcpy(es[r].w + at[r][j], ps.data + spans[r][j].off, spans[r][j].count * sizeof(float));
    }
    int same = 1;
    for (int s = 0; s < STEPS && same; s++) {
        fill_grads(&pw, s);
        fill_grads(&ps, s);
        CHECK_OK(fm_adamw_step(&ow, lr_of(s), &e), &e);
        CHECK_OK(fm_ema_update(&ew, s, &e), &e);
        for (int r = 0; r < 2; r++) {
            CHECK_OK(fm_adamw_step_spans(&os[r], lr_of(s), spans[r], at[r], ns[r], &e), &e);
            CHECK_OK(fm_ema_update_spans(&es[r], s, spans[r], at[r], ns[r], &e), &e);
        }
        same = !memcmp(pw.data, ps.data, n * sizeof(float));
        for (int r = 0; r < 2; r++)
            for (int j = 0; j < ns[r]; j++) {
                const size_t o = spans[r][j].off, c = spans[r][j].count * sizeof(float);
                same &= !memcmp(ow.m + o, os[r].m + at[r][j], c) && !memcmp(ow.v + o, os[r].v + at[r][j], c) &&
                        !memcmp(ew.w + o, es[r].w + at[r][j], c);
            }
        CHECK(same, "step %d: the shards differ from the whole optimiser", s);
    }
    /* a shard cannot take a whole step, nor spans beyond what it holds */
    int whole_refused = fm_adamw_step(&os[0], 1e-3, &e) != FM_OK && strstr(e.msg, "shard");
    int ema_refused = fm_ema_update(&es[0], 0, &e) != FM_OK && strstr(e.msg, "shard");
    int over = fm_adamw_step_spans(&os[0], 1e-3, spans[1], at[1], ns[1], &e) != FM_OK ||
               fm_adamw_step_spans(&os[0], 1e-3, spans[0], NULL, ns[0], &e) != FM_OK;
    for (int r = 0; r < 2; r++)
        fm_adamw_free(&os[r]), fm_ema_free(&es[r]);
    fm_adamw_free(&ow), fm_ema_free(&ew);
    fm_params_free(&pw), fm_params_free(&ps);
    printf("  shards of %zu and %zu floats (arena %zu): bitwise equal to the whole state over %d steps\n", floats[0],
           floats[1], n, STEPS);
    CHECK(whole_refused && ema_refused && over, "misuse not refused: adamw %d ema %d spans %d", whole_refused,
          ema_refused, over);
    return 0;
}

static int near(double a, double b) { return fabs(a - b) <= 1e-15 * fabs(b); }

static int test_schedule_edges(void)
{
    fm_err e = { 0 };
    fm_lr_schedule s = { .base = 1e-3, .min_ratio = 0.1, .warmup = 10, .total = 100 };
    CHECK_OK(fm_lr_schedule_check(&s, &e), &e);
    CHECK(near(fm_lr_at(&s, 0), 1e-4), "step 0: %g", fm_lr_at(&s, 0));
    CHECK(near(fm_lr_at(&s, -5), 1e-4), "step -5: %g", fm_lr_at(&s, -5));
    CHECK(near(fm_lr_at(&s, 4), 5e-4), "step 4: %g", fm_lr_at(&s, 4));
    CHECK(near(fm_lr_at(&s, 9), 1e-3), "warmup-1: %g", fm_lr_at(&s, 9));
    CHECK(fm_lr_at(&s, 10) == 1e-3, "warmup: %g", fm_lr_at(&s, 10));
    CHECK(near(fm_lr_at(&s, 55), 5.5e-4), "midpoint of the cosine: %g", fm_lr_at(&s, 55));
    double last = 1e-4 + 9e-4 * 0.5 * (1 + cos(3.14159265358979323846 * 89.0 / 90.0));
    CHECK(near(fm_lr_at(&s, 99), last) && fm_lr_at(&s, 99) > 1e-4, "total-1: %.17g", fm_lr_at(&s, 99));
    CHECK(near(fm_lr_at(&s, 100), 1e-4) && near(fm_lr_at(&s, 1000000), 1e-4), "beyond: %g", fm_lr_at(&s, 100));
    for (int64_t k = 1; k < 120; k++) {
        double a = fm_lr_at(&s, k - 1), b = fm_lr_at(&s, k);
        CHECK(k < 10 ? b > a : b <= a, "not monotone at %lld: %g -> %g", (long long)k, a, b);
    }
    fm_lr_schedule nowarm = { .base = 2.0, .min_ratio = 0.0, .warmup = 0, .total = 4 };
    CHECK_OK(fm_lr_schedule_check(&nowarm, &e), &e);
    CHECK(fm_lr_at(&nowarm, 0) == 2.0 && near(fm_lr_at(&nowarm, 2), 1.0) && fm_lr_at(&nowarm, 4) == 0.0,
          "no warm-up: %g %g %g", fm_lr_at(&nowarm, 0), fm_lr_at(&nowarm, 2), fm_lr_at(&nowarm, 4));
    fm_lr_schedule allwarm = { .base = 1.0, .min_ratio = 0.5, .warmup = 4, .total = 4 };
    CHECK_OK(fm_lr_schedule_check(&allwarm, &e), &e);
    CHECK(fm_lr_at(&allwarm, 3) == 1.0 && fm_lr_at(&allwarm, 4) == 0.5, "warm-up only");
    fm_lr_schedule bad[] = {
        { 0.0, 0.1, 1, 10 }, { 1e-3, 1.5, 1, 10 }, { 1e-3, 0.1, 11, 10 }, { 1e-3, 0.1, -1, 10 }, { 1e-3, 0.1, 0, 0 },
    };
    for (size_t i = 0; i < sizeof bad / sizeof *bad; i++)
        CHECK(fm_lr_schedule_check(&bad[i], &e) == FM_ERR_USAGE, "bad schedule %zu accepted", i);
    return 0;
}

static int test_clip(void)
{
    enum { N = 1001 };
    float *g = malloc(N * sizeof *g), *g0 = malloc(N * sizeof *g0);
    fm_fill_normal(g0, N, SEED, 9, 0);
    double ref = 0;
    for (int i = 0; i < N; i++)
        ref += (double)g0[i] * g0[i];
    ref = sqrt(ref);
    /* thread-count independent to the bit */
    double norms[3];
    for (int t = 1; t <= 3; t++) {
        omp_set_num_threads(t);
        norms[t - 1] = fm_grad_norm(g0, N);
    }
    omp_set_num_threads(2);
    CHECK(norms[0] == norms[1] && norms[1] == norms[2], "norm depends on threads: %.17g %.17g %.17g", norms[0],
          norms[1], norms[2]);
    CHECK(fabs(norms[0] - ref) <= 1e-13 * ref, "norm %.17g vs %.17g", norms[0], ref);
    CHECK(fm_grad_norm(g0, 0) == 0 && fabs(fm_grad_norm(g0, 3) - sqrt((double)g0[0] * g0[0] + (double)g0[1] * g0[1] +
                                                                      (double)g0[2] * g0[2])) < 1e-15,
          "tiny arrays");
    /* below the threshold (and max_norm <= 0): untouched */
    memcpy(g, g0, N * sizeof *g);
    CHECK(fm_clip_grad_norm(g, N, 2 * ref) == norms[0] && !memcmp(g, g0, N * sizeof *g), "clipped below max");
    CHECK(fm_clip_grad_norm(g, N, 0.0) == norms[0] && !memcmp(g, g0, N * sizeof *g), "clipped with max 0");
    /* above: scaled by max/(norm+1e-6), for a large and a small excess */
    for (int k = 0; k < 2; k++) {
        double max = k ? ref / 3 : ref * 0.9;
        memcpy(g, g0, N * sizeof *g);
        CHECK(fm_clip_grad_norm(g, N, max) == norms[0], "returned norm");
        float c = (float)(max / (ref + 1e-6));
        for (int i = 0; i < N; i++)
            CHECK(g[i] == g0[i] * c, "element %d: %g vs %g", i, g[i], g0[i] * c);
        CHECK(fabs(fm_grad_norm(g, N) - max) < 1e-6 * max, "clipped norm %g vs %g", fm_grad_norm(g, N), max);
    }
    /* non-finite: reported, grads untouched */
    float bad[3] = { NAN, INFINITY, -INFINITY };
    for (int k = 0; k < 3; k++) {
        memcpy(g, g0, N * sizeof *g);
        g[N / 2 + k] = bad[k];
        double nrm = fm_clip_grad_norm(g, N, 1.0);
        CHECK(!isfinite(nrm) && (k == 0 ? isnan(nrm) : isinf(nrm)), "case %d: norm %g", k, nrm);
        CHECK(!memcmp(g, g0, (N / 2 + k) * sizeof *g) && g[N / 2 + k + 1] == g0[N / 2 + k + 1], "case %d scaled", k);
    }
    /* huge but finite values do not overflow the double accumulator */
    g[0] = 3e38f, g[1] = -3e38f;
    CHECK(isfinite(fm_grad_norm(g, 2)), "overflow");
    free(g), free(g0);
    return 0;
}

int main(int argc, char **argv)
{
    static const fm_test tests[] = {
        TEST(test_adamw_vs_double_reference), TEST(test_adamw_bitwise_scalar_and_threads),
        TEST(test_adamw_state_resume),        TEST(test_ema),
        TEST(test_ema_fused),                 TEST(test_ema_warmup_reaches),
        TEST(test_schedule_edges),            TEST(test_clip),
        TEST(test_shards_packed),
    };
    return fm_test_main("optim", tests, sizeof tests / sizeof *tests, argc, argv);
}
