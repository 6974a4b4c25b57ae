/* bench_step.c - time full flow training steps of the configured model, for
 * `make bench` (not a test). One step is what the flow stage does on one
 * rank: gather a batch of latents, build the guided CFM batch (t, noise, x_t,
 * target, label dropout), forward, MSE loss and its gradient, backward,
 * global-norm clipping, AdamW, EMA. The latents are random (the timing does
 * not depend on their values). The model, batch and optimiser settings come
 * from the config, exactly as src/stages/stage_flow.c builds them.
 *
 *   bench_step CONFIG [--set key=value]... [--name NAME] [--steps N]
 *              [--warmup W] [--profile-steps P]
 *
 * Runs W warm-up steps, N timed steps (the median is step_s), then P steps
 * with the per-layer profile (profile.h) on. Prints ONE JSON line to stdout
 * (step_s, GFLOP per step, GFLOP/s, peak RSS, activation bytes per sample,
 * the profile grouped by kind and by block, and the PyTorch twin's
 * constructor arguments for tests/bench/torch_step.py), and the readable
 * profile tables to stderr. */
#include <math.h>
#include <omp.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>

#include "fm/build.h"
#include "fm/clip.h"
#include "fm/config.h"
#include "fm/dnn.h"
#include "fm/ema.h"
#include "fm/flowmodel.h"
#include "fm/loss.h"
#include "fm/optim.h"
#include "fm/params.h"
#include "fm/pipeline.h"
#include "fm/path.h"
#include "fm/profile.h"
#include "fm/rng.h"
#include "fm/timer.h"

#define MAX_SETS 32
#define POOL_BATCHES 4  /* distinct random batches cycled through */
#define PROFILE_CAP 2048

typedef struct opts {
    const char *config, *name;
    const char *sets[MAX_SETS];
    int nsets;
    int steps, warmup, profile_steps;
} opts;

/* Everything one step touches, allocated once. */
typedef struct bench {
    fm_config c;
    fm_dnn dnn;
    fm_params p;
    fm_flow_model model;
    fm_adamw opt;
    fm_ema ema;
    fm_cfm_cfg cfm;
    fm_profile prof;
    int B;
    long D;
    float *pool;        /* [POOL_BATCHES * B, D] random latents */
    int32_t *pool_y;    /* [POOL_BATCHES * B] labels */
    float *z, *xt, *target, *u, *du, *t;
    int32_t *y, *yd;
    uint64_t *gidx;
    double loss;
} bench;

/* Per-phase wall times of one step, seconds. */
typedef struct step_times {
    double data, fwd, loss, bwd, opt, total;
} step_times;

static int usage(const char *msg)
{
    fprintf(stderr, "bench_step: %s\nusage: bench_step CONFIG [--set key=value]... [--name NAME] [--steps N] "
                    "[--warmup W] [--profile-steps P]\n", msg);
    return 2;
}

static int parse(int argc, char **argv, opts *o)
{
    memset(o, 0, sizeof *o);
    o->steps = 10;
    o->warmup = 3;
    o->profile_steps = 3;
    for (int i = 1; i < argc; i++) {
        const char *a = argv[i];
        const int more = i + 1 < argc;
        if (!strcmp(a, "--set") && more) {
            if (o->nsets == MAX_SETS)
                return usage("too many --set");
            o->sets[o->nsets++] = argv[++i];
        } else if (!strcmp(a, "--name") && more) {
            o->name = argv[++i];
        } else if (!strcmp(a, "--steps") && more) {
            o->steps = atoi(argv[++i]);
        } else if (!strcmp(a, "--warmup") && more) {
            o->warmup = atoi(argv[++i]);
        } else if (!strcmp(a, "--profile-steps") && more) {
            o->profile_steps = atoi(argv[++i]);
        } else if (a[0] != '-' && !o->config) {
            o->config = a;
        } else {
            return usage("bad arguments");
        }
    }
    if (!o->config)
        return usage("no config");
    if (o->steps < 1 || o->warmup < 0 || o->profile_steps < 0)
        return usage("--steps must be >= 1, --warmup and --profile-steps >= 0");
    if (!o->name)
        o->name = o->config;
    return 0;
}

static int bench_init(bench *b, const opts *o, fm_err *e)
{
    fm_config *c = &b->c;
    FM_TRY(fm_config_load(c, o->config, e));
    for (int i = 0; i < o->nsets; i++)
        FM_TRY(fm_config_set(c, o->sets[i], e));
    FM_TRY(fm_build_validate(c, e));
    const fm_train_config *tc = &c->flow.train;
    b->B = tc->batch_size;  /* the global batch on one rank */
    FM_TRY(fm_dnn_init(&b->dnn, e));
    c->run.precision = fm_precision_here(c->run.precision, 0); /* as the pipeline resolves it on one rank */
    b->dnn.bf16 = c->run.precision == FM_PRECISION_BF16;
    FM_TRY(fm_build_flow_params(&b->p, c, e));
    FM_TRY(fm_build_flow_model(&b->model, c, &b->dnn, &b->p, b->B, e));
    b->D = b->model.dim;
    fm_adamw_cfg oc = fm_adamw_defaults();
    oc.beta1 = tc->beta1;
    oc.beta2 = tc->beta2;
    oc.weight_decay = tc->weight_decay;
    FM_TRY(fm_adamw_init(&b->opt, &b->p, &oc, e));
    fm_adamw_no_decay_1d(&b->opt);
    FM_TRY(fm_ema_init(&b->ema, &b->p, c->flow.ema_decay.v[0], c->flow.ema_warmup, e));
    FM_TRY(fm_profile_init(&b->prof, PROFILE_CAP, e));
    b->cfm = (fm_cfm_cfg){ .path = (fm_path_kind)c->flow.path,
                           .time = { (fm_time_kind)c->flow.t_dist, (float)c->flow.t_mean, (float)c->flow.t_std },
                           .cfg_dropout = (float)c->flow.cfg_dropout,
                           .num_classes = FM_NUM_CLASSES };

    const size_t per = (size_t)b->B * (size_t)b->D, np = POOL_BATCHES * per;
    b->pool = malloc(np * sizeof(float));
    b->pool_y = malloc(POOL_BATCHES * (size_t)b->B * sizeof(int32_t));
    float **bufs[] = { &b->z, &b->xt, &b->target, &b->u, &b->du };
    for (size_t i = 0; i < sizeof bufs / sizeof *bufs; i++)
        *bufs[i] = malloc(per * sizeof(float));
    b->t = malloc((size_t)b->B * sizeof(float));
    b->y = malloc((size_t)b->B * sizeof(int32_t));
    b->yd = malloc((size_t)b->B * sizeof(int32_t));
    b->gidx = malloc((size_t)b->B * sizeof(uint64_t));
    if (!b->pool || !b->pool_y || !b->z || !b->xt || !b->target || !b->u || !b->du || !b->t || !b->y || !b->yd ||
        !b->gidx)
        return fm_fail(e, FM_ERR_INTERNAL, "out of memory for the batch buffers");
    fm_fill_normal(b->pool, (long)np, 7, 0, 0);
    for (int i = 0; i < POOL_BATCHES * b->B; i++)
        b->pool_y[i] = (int32_t)fm_rand_below(FM_NUM_CLASSES, 7, 1, (uint64_t)i);
    return FM_OK;
}

static void bench_free(bench *b)
{
    fm_profile_free(&b->prof);
    fm_ema_free(&b->ema);
    fm_adamw_free(&b->opt);
    if (b->model.batch)
        fm_flow_model_free(&b->model);
    fm_params_free(&b->p);
    fm_dnn_free(&b->dnn);
    free(b->pool), free(b->pool_y), free(b->z), free(b->xt), free(b->target), free(b->u), free(b->du);
    free(b->t), free(b->y), free(b->yd), free(b->gidx);
}

/* One training step number s; phase times into *st. With the profile on
 * (the model's table set), the non-model parts are accounted under "step". */
static int step(bench *b, int64_t s, step_times *st, fm_err *e)
{
    fm_profile *pr = b->model.prof;
    const fm_train_config *tc = &b->c.flow.train;
    const int B = b->B;
    const long per = (long)B * b->D;
    const double t0 = fm_now();
    /* the loader's job: rows of the pool, in a fixed cyclic order */
    FM_PROF_VOID(pr, "step", "data", "data", FM_PROF_STEP, 0, {
        const int k = (int)(s % POOL_BATCHES);
        memcpy(b->z, b->pool + (size_t)k * (size_t)per, (size_t)per * sizeof(float));
        memcpy(b->y, b->pool_y + (size_t)k * (size_t)B, (size_t)B * sizeof(int32_t));
        for (int i = 0; i < B; i++)
            b->gidx[i] = (uint64_t)k * (uint64_t)B + (uint64_t)i;
    });
    FM_PROF_CALL(pr, "step", "cfm_batch", "cfm", FM_PROF_STEP, 0,
                 fm_cfm_batch(&b->cfm, b->z, b->y, b->gidx, B, b->D, (uint64_t)b->c.run.seed, (uint64_t)s, b->t,
                              b->xt, b->target, b->yd, e));
    const double t1 = fm_now();
    FM_TRY(fm_flow_model_forward(&b->model, b->xt, b->t, b->yd, b->u, e));
    const double t2 = fm_now();
    FM_PROF_VOID(pr, "step", "mse", "loss", FM_PROF_STEP, 0, {
        b->loss = fm_mse_forward(b->u, b->target, per);
        fm_mse_backward(b->u, b->target, per, 1.0f, b->du);
    });
    const double t3 = fm_now();
    FM_TRY(fm_flow_model_backward(&b->model, b->du, e));
    const double t4 = fm_now();
    const double max_norm = tc->grad_clip > 0 ? tc->grad_clip : INFINITY;
    FM_PROF_VOID(pr, "step", "clip", "clip", FM_PROF_STEP, 0, fm_clip_grad_norm(b->p.grad, b->p.numel, max_norm));
    FM_PROF_CALL(pr, "step", "adamw", "adamw", FM_PROF_STEP, 0, fm_adamw_step(&b->opt, tc->lr, e));
    FM_PROF_CALL(pr, "step", "ema", "ema", FM_PROF_STEP, 0, fm_ema_update(&b->ema, b->opt.step - 1, e));
    const double t5 = fm_now();
    *st = (step_times){ t1 - t0, t2 - t1, t3 - t2, t4 - t3, t5 - t4, t5 - t0 };
    if (!isfinite(b->loss))
        return fm_fail(e, FM_ERR_INTERNAL, "non-finite loss %g at step %lld", b->loss, (long long)s);
    return FM_OK;
}

static int cmp_double(const void *a, const void *b)
{
    const double x = *(const double *)a, y = *(const double *)b;
    return (x > y) - (x < y);
}

static double median(double *v, int n)
{
    qsort(v, (size_t)n, sizeof *v, cmp_double);
    return n % 2 ? v[n / 2] : 0.5 * (v[n / 2 - 1] + v[n / 2]);
}

/* The PyTorch twin's constructor arguments (tests/parity/twin_*.py). */
static void print_twin(FILE *f, const fm_flow_model *m)
{
    if (m->kind == FM_FLOW_DIT) {
        const fm_dit_cfg *c = &m->m.dit.cfg;
        fprintf(f, "{\"in_ch\": %d, \"size\": %d, \"patch\": %d, \"width\": %d, \"depth\": %d, \"heads\": %d, "
                   "\"mlp_ratio\": %.17g, \"num_classes\": %d, \"t_freq\": %d}",
                c->in_ch, c->size, c->patch, c->width, c->depth, c->heads, c->mlp_ratio, c->num_classes, c->t_freq);
        return;
    }
    const fm_unet_cfg *c = &m->m.unet.cfg;
    fprintf(f, "{\"in_ch\": %d, \"size\": %d, \"channels\": [", c->in_ch, c->size);
    for (int i = 0; i < c->levels; i++)
        fprintf(f, "%s%d", i ? ", " : "", c->channels[i]);
    fprintf(f, "], \"res_blocks\": %d, \"attn_res\": [", c->res_blocks);
    for (int i = 0; i < c->n_attn; i++)
        fprintf(f, "%s%d", i ? ", " : "", c->attn_res[i]);
    fprintf(f, "], \"heads\": %d, \"groups\": %d, \"emb_dim\": %d, \"num_classes\": %d}", c->heads, c->groups,
            c->emb_dim, c->num_classes);
}

static void json_name(FILE *f, const char *s)
{
    fputc('"', f);
    for (; *s; s++)
        if (*s == '"' || *s == '\\')
            fprintf(f, "\\%c", *s);
        else if ((unsigned char)*s >= 0x20)
            fputc(*s, f);
    fputc('"', f);
}

static int run(const opts *o, fm_err *e)
{
    bench b;
    memset(&b, 0, sizeof b);
    int rc = bench_init(&b, o, e);
    const int N = o->steps, P = o->profile_steps;
    double *tot = calloc((size_t)N, sizeof *tot), *ph[5];
    for (int k = 0; k < 5; k++)
        ph[k] = calloc((size_t)N, sizeof(double));
    if (rc == FM_OK && (!tot || !ph[0] || !ph[1] || !ph[2] || !ph[3] || !ph[4]))
        rc = fm_fail(e, FM_ERR_INTERNAL, "out of memory");
    step_times st;
    int64_t s = 0;
    const double t_start = fm_now();
    for (int i = 0; rc == FM_OK && i < o->warmup; i++)
        rc = step(&b, s++, &st, e);
    for (int i = 0; rc == FM_OK && i < N; i++) {
        rc = step(&b, s++, &st, e);
        tot[i] = st.total;
        ph[0][i] = st.data, ph[1][i] = st.fwd, ph[2][i] = st.bwd, ph[3][i] = st.opt, ph[4][i] = st.loss;
    }
    const double t_steps = fm_now() - t_start;
    double prof_total = 0;
    if (rc == FM_OK && P > 0) {
        fm_flow_model_set_profile(&b.model, &b.prof);
        for (int i = 0; rc == FM_OK && i < P; i++) {
            rc = step(&b, s++, &st, e);
            prof_total += st.total;
        }
        fm_flow_model_set_profile(&b.model, NULL);
    }
    if (rc != FM_OK)
        goto out;

    double all[1024];
    const int nall = N < 1024 ? N : 1024;
    memcpy(all, tot, (size_t)nall * sizeof *all);
    double min = tot[0];
    for (int i = 1; i < N; i++)
        min = tot[i] < min ? tot[i] : min;
    const double step_s = median(tot, N);
    const double fwd_flops = fm_flow_model_flops(&b.model);
    const double gflop = 3 * fwd_flops * 1e-9;
    const double counted = P > 0 ? fm_profile_flops(&b.prof, -1) / P * 1e-9 : 0;
    struct rusage ru;
    getrusage(RUSAGE_SELF, &ru);
    const size_t act = fm_flow_model_activation_bytes(&b.model);
    size_t nparams = 0;
    fm_flow_model_cfg fc;
    fm_build_flow_cfg(&b.c, &fc);
    fm_flow_model_size(&fc, NULL, NULL, &nparams, e);

    /* readable tables on stderr */
    if (P > 0) {
        fprintf(stderr, "\n== %s: %s, batch %d, %d threads, %zu parameters: step %.1f ms (median of %d), "
                        "%.2f GFLOP/step (3x forward), %.1f GFLOP/s\n",
                o->name, fm_model_names[b.c.flow.model], b.B, omp_get_max_threads(), nparams, 1e3 * step_s, N,
                gflop, gflop / step_s);
        fprintf(stderr, "-- profile over %d steps (%.1f ms/step with the timers on); by kind:\n", P,
                1e3 * prof_total / P);
        fm_profile_print(&b.prof, FM_PROFILE_BY_KIND, P, prof_total, 0, stderr, e);
        fprintf(stderr, "-- by block:\n");
        fm_profile_print(&b.prof, FM_PROFILE_BY_SCOPE, P, prof_total, 40, stderr, e);
        fprintf(stderr, "-- by layer:\n");
        fm_profile_print(&b.prof, FM_PROFILE_BY_ENTRY, P, prof_total, 0, stderr, e);
    }

    FILE *f = stdout;
    fprintf(f, "{\"name\": ");
    json_name(f, o->name);
    fprintf(f, ", \"config\": ");
    json_name(f, o->config);
    fprintf(f, ", \"sets\": [");
    for (int i = 0; i < o->nsets; i++) {
        fputs(i ? ", " : "", f);
        json_name(f, o->sets[i]);
    }
    const fm_train_config *tc = &b.c.flow.train;
    fprintf(f, "], \"precision\": \"%s\"", fm_precision_names[b.c.run.precision]);
    fprintf(f, ", \"model\": \"%s\", \"batch\": %d, \"side\": %d, \"ch\": %d, \"params\": %zu, \"threads\": %d, ",
            fm_model_names[b.c.flow.model], b.B, b.model.side, b.model.ch, nparams, omp_get_max_threads());
    fprintf(f, "\"twin\": ");
    print_twin(f, &b.model);
    fprintf(f, ", \"train\": {\"lr\": %.17g, \"beta1\": %.17g, \"beta2\": %.17g, \"weight_decay\": %.17g, "
               "\"grad_clip\": %.17g, \"ema_decay\": %.17g, \"ema_warmup\": %s, \"cfg_dropout\": %.17g, "
               "\"path\": \"%s\"}, ",
            tc->lr, tc->beta1, tc->beta2, tc->weight_decay, tc->grad_clip, b.c.flow.ema_decay.v[0],
            b.c.flow.ema_warmup ? "true" : "false", b.c.flow.cfg_dropout, fm_path_name((fm_path_kind)b.c.flow.path));
    fprintf(f, "\"steps\": %d, \"warmup\": %d, \"step_s\": %.6g, \"step_s_min\": %.6g, \"step_s_all\": [", N,
            o->warmup, step_s, min);
    for (int i = 0; i < nall; i++)
        fprintf(f, "%s%.6g", i ? ", " : "", all[i]);
    fprintf(f, "], \"phase_s\": {\"data\": %.6g, \"forward\": %.6g, \"loss\": %.6g, \"backward\": %.6g, "
               "\"optimizer_ema\": %.6g}, ",
            median(ph[0], N), median(ph[1], N), median(ph[4], N), median(ph[2], N), median(ph[3], N));
    fprintf(f, "\"gflop_fwd\": %.6g, \"gflop_per_step\": %.6g, \"gflop_per_step_counted\": %.6g, "
               "\"fm_gflops\": %.6g, \"peak_rss_mb\": %.1f, \"activation_bytes\": %zu, "
               "\"activation_bytes_per_sample\": %.0f, \"loss\": %.6g, \"wall_s\": %.3f",
            fwd_flops * 1e-9, gflop, counted, gflop / step_s, ru.ru_maxrss / 1024.0, act, (double)act / b.B, b.loss,
            t_steps);
    if (P > 0) {
        fprintf(f, ", \"profile_steps\": %d, \"profile_step_s\": %.6g, \"profile_coverage\": %.4f", P,
                prof_total / P, fm_profile_seconds(&b.prof, -1) / prof_total);
        fprintf(f, ", \"profile_by_kind\": ");
        if ((rc = fm_profile_json(&b.prof, FM_PROFILE_BY_KIND, P, prof_total, f, e)) != FM_OK)
            goto out;
        fprintf(f, ", \"profile_by_block\": ");
        if ((rc = fm_profile_json(&b.prof, FM_PROFILE_BY_SCOPE, P, prof_total, f, e)) != FM_OK)
            goto out;
    }
    fprintf(f, "}\n");
    fflush(f);
    if (ferror(f))
        rc = fm_fail(e, FM_ERR_IO, "writing the result failed");
out:
    free(tot);
    for (int k = 0; k < 5; k++)
        free(ph[k]);
    bench_free(&b);
    return rc;
}

int main(int argc, char **argv)
{
    opts o;
    int u = parse(argc, argv, &o);
    if (u)
        return u;
    fm_err e = { 0 };
    int rc = run(&o, &e);
    if (rc != FM_OK) {
        if (strcmp(o.name, o.config))
            fprintf(stderr, "bench_step: %s: %s\n", o.name, e.msg);
        else
            fprintf(stderr, "bench_step: %s\n", e.msg);
        return rc;
    }
    return 0;
}
