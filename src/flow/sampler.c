/* sampler.c - Euler, Heun and Euler-Maruyama samplers with classifier-free guidance. */
#include "fm/sampler.h"

#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "fm/cguide.h"
#include "fm/rng.h"
#include "fm/signals.h"
#include "fm/target.h"

#define PAR_MIN 65536 /* elements below which loops stay serial */

const char *fm_sampler_name(fm_sampler_kind k)
{
    return k == FM_SAMPLER_HEUN ? "heun" : k == FM_SAMPLER_SDE ? "sde" : "euler";
}

int fm_sampler_nfe(const fm_sampler_cfg *cfg)
{
    if (cfg->kind == FM_SAMPLER_HEUN)
        return 2 * cfg->steps - (cfg->heun_euler_last ? 1 : 0);
    return cfg->steps;
}

int fm_sampler_init(fm_sampler *s, const fm_sampler_cfg *cfg, int B, long D, fm_err *e)
{
    memset(s, 0, sizeof *s);
    if (cfg->kind != FM_SAMPLER_EULER && cfg->kind != FM_SAMPLER_HEUN && cfg->kind != FM_SAMPLER_SDE)
        return fm_fail(e, FM_ERR_USAGE, "sampler: unknown kind %d", (int)cfg->kind);
    if (cfg->path != FM_PATH_LINEAR && cfg->path != FM_PATH_COSINE)
        return fm_fail(e, FM_ERR_USAGE, "sampler: unknown path %d", (int)cfg->path);
    if (cfg->steps < 1)
        return fm_fail(e, FM_ERR_USAGE, "sampler: steps must be >= 1, got %d", cfg->steps);
    if (!(cfg->sde_sigma >= 0.0f) || isinf(cfg->sde_sigma))
        return fm_fail(e, FM_ERR_USAGE, "sampler: sde sigma must be finite and >= 0, got %g", cfg->sde_sigma);
    if (cfg->target < FM_TARGET_VELOCITY || cfg->target > FM_TARGET_V)
        return fm_fail(e, FM_ERR_USAGE, "sampler: unknown target %d", cfg->target);
    if (cfg->cfg_schedule < FM_CFG_CONSTANT || cfg->cfg_schedule > FM_CFG_COSINE)
        return fm_fail(e, FM_ERR_USAGE, "sampler: unknown guidance schedule %d", cfg->cfg_schedule);
    if (cfg->cfg_interval && !(cfg->cfg_lo >= 0.0 && cfg->cfg_lo <= cfg->cfg_hi && cfg->cfg_hi <= 1.0))
        return fm_fail(e, FM_ERR_USAGE, "sampler: guidance interval [%g, %g] is not within [0, 1] in order",
                       cfg->cfg_lo, cfg->cfg_hi);
    if (cfg->null_label < 0)
        return fm_fail(e, FM_ERR_USAGE, "sampler: negative null label %d", cfg->null_label);
    if (B < 1 || D < 1)
        return fm_fail(e, FM_ERR_USAGE, "sampler: bad shape [%d, %ld]", B, D);
    s->cfg = *cfg;
    s->B = B;
    s->D = D;
    /* one block: x2, u2 [2n], k1 [n], heun's x1 [n], t2 [2B], then the labels y2 [2B] */
    const size_t n = (size_t)B * (size_t)D, heun = cfg->kind == FM_SAMPLER_HEUN, B2 = 2 * (size_t)B;
    s->x2 = malloc((5 * n + heun * n + B2) * sizeof(float) + B2 * sizeof(int32_t));
    if (!s->x2)
        return fm_fail(e, FM_ERR_INTERNAL, "sampler: out of memory for %d samples of %ld values", B, D);
    s->u2 = s->x2 + 2 * n;
    s->k1 = s->u2 + 2 * n;
    s->x1 = heun ? s->k1 + n : NULL;
    s->t2 = s->k1 + n + heun * n;
    s->y2 = (int32_t *)(s->t2 + B2);
    return FM_OK;
}

void fm_sampler_free(fm_sampler *s)
{
    free(s->x2); /* the block of every buffer */
    memset(s, 0, sizeof *s);
}

void fm_sample_noise(float *x, int B, long D, uint64_t seed, uint64_t first)
{
    /* row i, element j at index (first + i) * D + j: one contiguous range */
    fm_fill_normal(x, (long)B * D, seed, FM_SAMPLE_STREAM_BASE, first * (uint64_t)D);
}

float fm_guidance_weight(const fm_sampler_cfg *c, float w, double t)
{
    const double lo = c->cfg_interval ? c->cfg_lo : 0.0, hi = c->cfg_interval ? c->cfg_hi : 1.0;
    if (c->cfg_interval && (t < lo || t > hi))
        return 1.0f;
    if (c->cfg_schedule == FM_CFG_CONSTANT)
        return w;
    const double r = hi > lo ? (t - lo) / (hi - lo) : 1.0;
    const double ramp = c->cfg_schedule == FM_CFG_LINEAR ? r : 0.5 * (1.0 - cos(3.14159265358979323846 * r));
    return (float)(1.0 + ((double)w - 1.0) * ramp);
}

int fm_guided_velocity(fm_sampler *s, fm_velocity_fn f, void *ctx, const float *x, double t, float w, float *out,
                       fm_err *e)
{
    const fm_sampler_cfg *c = &s->cfg;
    const int B = s->B;
    const long n = (long)B * s->D;
    int cg = 0; /* classifier guidance (cguide.h) is taken from x before out (may alias x) is written */
    FM_TRY(fm_cguide_prepare(s->cfg.cguide, s->cfg.path, x, t, s->y2, B, s->D, &cg, e));
    const float wt = fm_guidance_weight(c, w, t);
    const double tm = fm_target_time((fm_target_kind)c->target, t); /* t away from the target's singular end */
    const int half = c->half_calls && (wt == 1.0f || wt == 0.0f);   /* one branch only: B rows */
    memcpy(s->x2, x, (size_t)n * sizeof *x);
    if (!half)
        memcpy(s->x2 + n, x, (size_t)n * sizeof *x);
    for (int i = 0; i < 2 * B; i++)
        s->t2[i] = (float)tm;
    /* the conditional rows' labels, or (half and w = 0) the null labels */
    const int32_t *labels = half && wt == 0.0f ? s->y2 + B : s->y2;
    s->model_rows += half ? B : 2 * B;
    s->guide_rows += cg ? B : 0;
    int rc = f(ctx, s->x2, s->t2, labels, half ? B : 2 * B, s->u2, e);
    if (rc != FM_OK) {
        fm_err_prefix(e, "sampler: model at t=%.4f", tm);
        return rc;
    }
    const float *uc = s->u2, *un = s->u2 + n;
    if (half || wt == 1.0f) {
        memcpy(out, uc, (size_t)n * sizeof *out);
    } else if (wt == 0.0f) {
        memcpy(out, un, (size_t)n * sizeof *out);
    } else {
        const float a = 1.0f - wt;
#pragma omp parallel for if (n > PAR_MIN) schedule(static)
        for (long i = 0; i < n; i++)
            out[i] = a * un[i] + wt * uc[i];
    }
    /* the conversion is affine in the prediction, so converting the mix is converting each branch */
    fm_target_to_velocity((fm_target_kind)c->target, c->path, tm, s->x2, out, n, out);
    if (cg)
        fm_cguide_add(s->cfg.cguide, out, n);
    return FM_OK;
}

int fm_sample(fm_sampler *s, fm_velocity_fn f, void *ctx, const int32_t *y, float w, uint64_t seed, uint64_t first,
              float *x, fm_err *e)
{
    const fm_sampler_cfg *c = &s->cfg;
    const int B = s->B, steps = c->steps;
    const long D = s->D, n = (long)B * D;
    const double h = 1.0 / steps;
    if (!isfinite(w))
        return fm_fail(e, FM_ERR_USAGE, "sampler: guidance scale is not finite");
    s->sampled += B;
    for (int i = 0; i < B; i++) {
        s->y2[i] = y ? y[i] : c->null_label;
        s->y2[B + i] = c->null_label;
    }
    for (int k = 0; k < steps; k++) {
        if (fm_stop_requested()) /* preemption: a grid of many steps must not delay it */
            return fm_fail(e, FM_PREEMPTED, "stopped by signal %d while sampling (step %d of %d): run the same "
                           "command again (or let Slurm requeue the job) to resume",
                           fm_stop_requested(), k, steps);
        const double t = (double)k / steps, t1 = (double)(k + 1) / steps;
        float *u = s->k1;
        FM_TRY(fm_guided_velocity(s, f, ctx, x, t, w, u, e));
        if (c->kind == FM_SAMPLER_EULER) {
            const float hf = (float)h;
#pragma omp parallel for if (n > PAR_MIN) schedule(static)
            for (long i = 0; i < n; i++)
                x[i] += hf * u[i];
        } else if (c->kind == FM_SAMPLER_HEUN) {
            const float hf = (float)h;
            float *xp = s->x1;
#pragma omp parallel for if (n > PAR_MIN) schedule(static)
            for (long i = 0; i < n; i++)
                xp[i] = x[i] + hf * u[i];
            if (k == steps - 1 && c->heun_euler_last) {
                memcpy(x, xp, (size_t)n * sizeof *x);
                continue;
            }
            FM_TRY(fm_guided_velocity(s, f, ctx, xp, t1, w, xp, e)); /* xp <- k2 */
            const float hh = (float)(0.5 * h);
#pragma omp parallel for if (n > PAR_MIN) schedule(static)
            for (long i = 0; i < n; i++)
                x[i] += hh * (u[i] + xp[i]);
        } else {
            /* drift u + sigma_t^2/2 s = (1 + cs alpha) u - cs dalpha x, cs = sigma^2 beta / (2 gamma) */
            fm_path_coef pc = fm_path_coefs(c->path, t);
            const double sig = c->sde_sigma;
            const double cs = sig * sig * pc.beta / (2.0 * fm_path_gamma(c->path, t));
            const float cu = (float)(h * (1.0 + cs * pc.alpha)), cx = (float)(-h * cs * pc.dalpha);
            const float cn = (float)(sig * pc.beta * sqrt(h));
            const uint64_t stream = FM_SAMPLE_STREAM_BASE + 1 + (uint64_t)k;
            const uint64_t first_idx = first * (uint64_t)D;
#pragma omp parallel for if (n > PAR_MIN) schedule(static)
            for (long i = 0; i < n; i++) {
                float xi = cn != 0.0f ? fm_rand_normal(seed, stream, first_idx + (uint64_t)i) : 0.0f;
                x[i] += cu * u[i] + cx * x[i] + cn * xi;
            }
        }
    }
    return FM_OK;
}
