/* path.c - Gaussian probability paths, time sampling and the CFM training batch. */
#include "fm/path.h"

#include <math.h>
#include <string.h>

#include "fm/rng.h"
#include "fm/target.h"

#define HALF_PI 1.5707963267948966

double fm_path_alpha(fm_path_kind k, double t)
{
    return k == FM_PATH_COSINE ? sin(HALF_PI * t) : t;
}

double fm_path_beta(fm_path_kind k, double t)
{
    return k == FM_PATH_COSINE ? cos(HALF_PI * t) : 1.0 - t;
}

double fm_path_dalpha(fm_path_kind k, double t)
{
    return k == FM_PATH_COSINE ? HALF_PI * cos(HALF_PI * t) : 1.0;
}

double fm_path_dbeta(fm_path_kind k, double t)
{
    return k == FM_PATH_COSINE ? -HALF_PI * sin(HALF_PI * t) : -1.0;
}

fm_path_coef fm_path_coefs(fm_path_kind k, double t)
{
    fm_path_coef c = { fm_path_alpha(k, t), fm_path_beta(k, t), fm_path_dalpha(k, t), fm_path_dbeta(k, t) };
    /* the endpoints exactly, whatever sin/cos round to */
    if (t == 0.0) {
        c.alpha = 0.0;
        c.beta = 1.0;
    } else if (t == 1.0) {
        c.alpha = 1.0;
        c.beta = 0.0;
    }
    return c;
}

double fm_path_gamma(fm_path_kind k, double t)
{
    fm_path_coef c = fm_path_coefs(k, t);
    return c.dalpha * c.beta - c.dbeta * c.alpha;
}

const char *fm_path_name(fm_path_kind k)
{
    return k == FM_PATH_COSINE ? "cosine" : "linear";
}

void fm_path_interp(fm_path_kind k, double t, const float *z, const float *eps, long d, float *xt, float *u)
{
    fm_path_coef c = fm_path_coefs(k, t);
    float a = (float)c.alpha, b = (float)c.beta, da = (float)c.dalpha, db = (float)c.dbeta;
    for (long j = 0; j < d; j++) {
        xt[j] = a * z[j] + b * eps[j];
        u[j] = da * z[j] + db * eps[j];
    }
}

void fm_path_score(fm_path_kind k, double t, const float *x, const float *u, long n, float *s)
{
    fm_path_coef c = fm_path_coefs(k, t);
    double den = c.beta * (c.dalpha * c.beta - c.dbeta * c.alpha); /* dalpha beta^2 - dbeta beta alpha */
    float cu = (float)(c.alpha / den), cx = (float)(-c.dalpha / den);
    for (long i = 0; i < n; i++)
        s[i] = cu * u[i] + cx * x[i];
}

const char *fm_time_name(fm_time_kind k)
{
    return k == FM_TIME_LOGIT_NORMAL ? "logit_normal" : "uniform";
}

float fm_time_draw(const fm_time_dist *d, uint64_t seed, uint64_t step, uint64_t gidx)
{
    uint64_t stream = fm_flow_stream(step, FM_FLOW_TIME);
    if (d->kind == FM_TIME_LOGIT_NORMAL) {
        double n = fm_rand_normal(seed, stream, gidx);
        return (float)(1.0 / (1.0 + exp(-(d->m + d->s * n))));
    }
    return fm_rand_uniform(seed, stream, gidx);
}

void fm_time_sample(const fm_time_dist *d, uint64_t seed, uint64_t step, const uint64_t *gidx, int n, float *t)
{
    for (int i = 0; i < n; i++)
        t[i] = fm_time_draw(d, seed, step, gidx[i]);
}

/* The batch of fm_cfm_batch, rows of stride ld: z row i at z + i ld; eps
 * row i at eps + i ld, or drawn when eps is NULL. */
static int cfm_rows(const fm_cfm_cfg *c, const float *z, const float *eps, long ld, const int32_t *y,
                    const uint64_t *gidx, int B, long D, uint64_t seed, uint64_t step, float *t, float *xt, float *u,
                    int32_t *y_out, fm_err *e)
{
    if (B < 0 || D <= 0)
        return fm_fail(e, FM_ERR_USAGE, "cfm batch: bad shape [%d, %ld]", B, D);
    if (!(c->cfg_dropout >= 0.0f && c->cfg_dropout <= 1.0f))
        return fm_fail(e, FM_ERR_USAGE, "cfm batch: cfg dropout %g is not in [0, 1]", c->cfg_dropout);
    if (c->target < FM_TARGET_VELOCITY || c->target > FM_TARGET_V)
        return fm_fail(e, FM_ERR_USAGE, "cfm batch: unknown target %d", c->target);
    if (c->num_classes < 0)
        return fm_fail(e, FM_ERR_USAGE, "cfm batch: negative class count %d", c->num_classes);
    if (c->time.kind == FM_TIME_LOGIT_NORMAL && !(c->time.s >= 0.0f))
        return fm_fail(e, FM_ERR_USAGE, "cfm batch: logit-normal scale %g is negative", c->time.s);
    if (y) {
        for (int i = 0; i < B; i++)
            if (y[i] < 0 || y[i] > c->num_classes)
                return fm_fail(e, FM_ERR_DATA, "cfm batch: label %d of row %d (sample %llu) is not in [0, %d]",
                               (int)y[i], i, (unsigned long long)gidx[i], c->num_classes);
    }
    uint64_t s_noise = fm_flow_stream(step, FM_FLOW_NOISE);
    uint64_t s_drop = fm_flow_stream(step, FM_FLOW_DROP);
#pragma omp parallel for if ((long)B * D > 4096) schedule(static)
    for (int i = 0; i < B; i++) {
        const float *zi = z + (long)i * ld;
        float *xi = xt + (long)i * D, *ui = u + (long)i * D;
        t[i] = fm_time_draw(&c->time, seed, step, gidx[i]);
        /* eps goes through u as scratch: u <- eps, then both rows at once */
        if (eps)
            memcpy(ui, eps + (long)i * ld, (size_t)D * sizeof *ui);
        else
            fm_fill_normal(ui, D, seed, s_noise, gidx[i] * (uint64_t)D);
        if (c->target == FM_TARGET_VELOCITY) {
            fm_path_interp(c->path, t[i], zi, ui, D, xi, ui);
        } else {
            const fm_path_coef pc = fm_path_coefs(c->path, t[i]);
            const float a = (float)pc.alpha, b = (float)pc.beta;
            for (long j = 0; j < D; j++)
                xi[j] = a * zi[j] + b * ui[j];
            fm_target_of_pair((fm_target_kind)c->target, c->path, t[i], zi, ui, D, ui);
        }
        int32_t label = y ? y[i] : c->num_classes;
        if (c->cfg_dropout > 0.0f && fm_rand_uniform(seed, s_drop, gidx[i]) < c->cfg_dropout)
            label = c->num_classes;
        y_out[i] = label;
    }
    return FM_OK;
}

int fm_cfm_batch(const fm_cfm_cfg *c, const float *z, const int32_t *y, const uint64_t *gidx, int B, long D,
                 uint64_t seed, uint64_t step, float *t, float *xt, float *u, int32_t *y_out, fm_err *e)
{
    return cfm_rows(c, z, NULL, D, y, gidx, B, D, seed, step, t, xt, u, y_out, e);
}

int fm_cfm_pairs(const fm_cfm_cfg *c, const float *pairs, const int32_t *y, const uint64_t *gidx, int B, long D,
                 uint64_t seed, uint64_t step, float *t, float *xt, float *u, int32_t *y_out, fm_err *e)
{
    return cfm_rows(c, pairs, pairs + D, 2 * D, y, gidx, B, D, seed, step, t, xt, u, y_out, e);
}
