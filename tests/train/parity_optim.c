/* parity_optim.c - dump 10 AdamW steps (with LR schedule, optional gradient
 * clipping and EMA) for tests/parity/test_optim.py to replay with
 * torch.optim.AdamW, torch.nn.utils.clip_grad_norm_ and a torch EMA loop.
 *
 * usage: parity_optim OUT.safetensors [plain|clip]
 * Tensors: init.<name>, grad.<s>.<name> (before clipping), param.<s>.<name>
 * and ema.<s>.<name> (after step s), m.<name>, v.<name> (after the last step).
 * Metadata: hyper-parameters, lr.<s>, norm.<s>, ema_decay.<s>, nodecay.<name>. */
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "fm/clip.h"
#include "fm/ema.h"
#include "fm/optim.h"
#include "fm/params.h"
#include "fm/rng.h"
#include "fm/safetensors.h"
#include "fm/schedule.h"

enum { STEPS = 10, NT = 4, MAXT = NT * (1 + 3 * STEPS + 2), MAXM = 16 + 4 * STEPS };

static const struct { const char *name; int ndim; int64_t shape[4]; } SPEC[NT] = {
    { "conv.weight", 4, { 4, 3, 3, 3 } },
    { "conv.bias", 1, { 4 } },     /* 1-D: no weight decay */
    { "lin.weight", 2, { 6, 5 } },
    { "emb.weight", 2, { 3, 8 } },
};

typedef struct dump {
    fm_st_tensor t[MAXT];
    fm_st_meta m[MAXM];
    char tname[MAXT][128], mkey[MAXM][128], mval[MAXM][32];
    int nt, nm;
} dump;

/* Record a copy of param k's values (or src) under a printf-style name. */
static void put(dump *d, const fm_param *t, const float *src, float **store, const char *fmt, const char *a,
                const char *b)
{
    int64_t n = fm_tensor_numel(&t->w);
    memcpy(*store, src, (size_t)n * sizeof(float));
    fm_st_tensor *x = &d->t[d->nt];
    snprintf(d->tname[d->nt], sizeof d->tname[0], fmt, a, b);
    x->name = d->tname[d->nt];
    x->data = *store;
    x->dtype = FM_F32;
    x->ndim = t->w.ndim;
    memcpy(x->shape, t->w.shape, sizeof x->shape);
    *store += n;
    d->nt++;
}

/* Record metadata key (printf-style) = v, exactly (%.17g). */
__attribute__((format(printf, 3, 4))) static void meta(dump *d, double v, const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(d->mkey[d->nm], sizeof d->mkey[0], fmt, ap);
    va_end(ap);
    snprintf(d->mval[d->nm], sizeof d->mval[0], "%.17g", v);
    d->m[d->nm] = (fm_st_meta){ d->mkey[d->nm], d->mval[d->nm] };
    d->nm++;
}

static int run(const char *path, int clip, fm_err *e)
{
    const uint64_t seed = clip ? 77 : 76;
    const double max_norm = 2.0;
    fm_lr_schedule sched = { .base = 1e-2, .min_ratio = 0.1, .warmup = 3, .total = STEPS };
    fm_adamw_cfg cfg = { .beta1 = 0.9, .beta2 = 0.99, .eps = 1e-8, .weight_decay = 0.1 };
    const double ema_decay = clip ? 0.8 : 0.9;
    const int ema_warmup = !clip;
    FM_TRY(fm_lr_schedule_check(&sched, e));

    fm_params p;
    FM_TRY(fm_params_init(&p, NT, 1024, seed, e));
    for (int k = 0; k < NT; k++) {
        fm_param *t;
        int rc = fm_params_add(&p, &t, SPEC[k].ndim, SPEC[k].shape, e, "%s", SPEC[k].name);
        if (rc) {
            fm_params_free(&p);
            return rc;
        }
        fm_param_init_uniform(&p, t, 0.5f);
    }
    fm_adamw o = { 0 };
    fm_ema ema = { 0 };
    dump *d = calloc(1, sizeof *d);
    float *buf = malloc(p.numel * sizeof(float) * (3 * STEPS + 3)), *store = buf;
    int rc = !d || !buf ? fm_fail(e, FM_ERR_INTERNAL, "out of memory") : FM_OK;
    if (rc == FM_OK)
        rc = fm_adamw_init(&o, &p, &cfg, e);
    if (rc == FM_OK) {
        fm_adamw_no_decay_1d(&o);
        rc = fm_ema_init(&ema, &p, ema_decay, ema_warmup, e);
    }
    if (rc == FM_OK) {
        for (int k = 0; k < NT; k++) {
            put(d, &p.items[k], p.items[k].w.data, &store, "init.%s%s", p.items[k].name, "");
            meta(d, !o.decay[k], "nodecay.%s", p.items[k].name);
        }
        meta(d, cfg.beta1, "beta1"), meta(d, cfg.beta2, "beta2"), meta(d, cfg.eps, "eps");
        meta(d, cfg.weight_decay, "weight_decay"), meta(d, STEPS, "steps");
        meta(d, clip, "clip"), meta(d, max_norm, "max_norm");
        meta(d, sched.base, "base_lr"), meta(d, sched.min_ratio, "min_ratio");
        meta(d, (double)sched.warmup, "warmup"), meta(d, (double)sched.total, "total");
        meta(d, ema_decay, "ema"), meta(d, ema_warmup, "ema_warmup");
    }
    for (int s = 0; s < STEPS && rc == FM_OK; s++) {
        char step[16];
        snprintf(step, sizeof step, "%d", s);
        /* clip case: gradient norms ~14, ~0.7, ~2.8 in turn against max_norm 2,
         * so steps clip hard, not at all, and by a factor ~0.7 */
        static const float scales[3] = { 1.0f, 0.05f, 0.2f };
        float scale = clip ? scales[s % 3] : 1.0f;
        for (int k = 0; k < NT; k++) {
            fm_param *t = &p.items[k];
            int64_t n = fm_tensor_numel(&t->g);
            float *g = t->g.data;
            fm_fill_normal(g, (long)n, seed, 1000 + (uint64_t)s * NT + (uint64_t)k, 0);
            for (int64_t i = 0; i < n; i++)
                g[i] *= scale;
            put(d, t, g, &store, "grad.%s.%s", step, t->name);
        }
        double lr = fm_lr_at(&sched, s);
        double norm = clip ? fm_clip_grad_norm(p.grad, p.numel, max_norm) : fm_grad_norm(p.grad, p.numel);
        rc = fm_adamw_step(&o, lr, e);
        if (rc == FM_OK)
            rc = fm_ema_update(&ema, s, e);
        meta(d, lr, "lr.%d", s), meta(d, norm, "norm.%d", s), meta(d, fm_ema_decay_at(&ema, s), "ema_decay.%d", s);
        for (int k = 0; k < NT; k++) {
            fm_param *t = &p.items[k];
            put(d, t, t->w.data, &store, "param.%s.%s", step, t->name);
            put(d, t, ema.w + t->offset, &store, "ema.%s.%s", step, t->name);
        }
    }
    if (rc == FM_OK) {
        for (int k = 0; k < NT; k++) {
            fm_param *t = &p.items[k];
            put(d, t, o.m + t->offset, &store, "m.%s%s", t->name, "");
            put(d, t, o.v + t->offset, &store, "v.%s%s", t->name, "");
        }
        rc = fm_st_write(path, d->t, d->nt, d->m, d->nm, e);
    }
    fm_adamw_free(&o);
    fm_ema_free(&ema);
    free(buf);
    free(d);
    fm_params_free(&p);
    return rc;
}

int main(int argc, char **argv)
{
    if (argc < 2 || (argc > 2 && strcmp(argv[2], "plain") && strcmp(argv[2], "clip"))) {
        fprintf(stderr, "usage: %s OUT.safetensors [plain|clip]\n", argv[0]);
        return 2;
    }
    fm_err e = { 0 };
    int rc = run(argv[1], argc > 2 && !strcmp(argv[2], "clip"), &e);
    if (rc)
        fprintf(stderr, "parity_optim: %s\n", e.msg);
    return rc;
}
