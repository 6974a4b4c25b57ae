/* fixture.c - naive-vs-fast layer comparisons (see fixture.h). */
#include "fixture.h"

#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "fm/rng.h"
#include "fm/tensor.h"
#include "fm/timer.h"
#include "gradcheck.h"
#include "test.h"

float *fm_fx_randn(int64_t n, uint64_t seed, uint64_t stream, float sd)
{
    float *x = malloc((size_t)n * sizeof(float));
    if (!x)
        return NULL;
    fm_fill_normal(x, n, seed, stream, 0);
    for (int64_t i = 0; i < n; i++)
        x[i] *= sd;
    return x;
}

float *fm_fx_zeros(int64_t n) { return calloc((size_t)n, sizeof(float)); }

void fm_fx_fill(float *x, int64_t n, float v)
{
    for (int64_t i = 0; i < n; i++)
        x[i] = v;
}

void fm_fx_round_bf16(float *x, int64_t n)
{
    for (int64_t i = 0; i < n; i++)
        x[i] = fm_bf16_to_f32(fm_f32_to_bf16(x[i]));
}

const char *fm_fx_impl(dnnl_primitive_t p)
{
    const_dnnl_primitive_desc_t pd;
    const char *s = "none";
    if (p && dnnl_primitive_get_primitive_desc(p, &pd) == dnnl_success)
        dnnl_primitive_desc_query(pd, dnnl_query_impl_info_str, 0, &s);
    return s;
}

long fm_fx_param_count(const fm_params *p)
{
    long count = 0;
    for (int i = 0; i < p->n; i++)
        count += (long)fm_tensor_numel(&p->items[i].w);
    return count;
}

int fm_fx_env_init(fm_fx_env *v, int bf16, int max_tensors, size_t max_numel, uint64_t seed, size_t arena_bytes,
                   fm_err *e)
{
    memset(v, 0, sizeof *v);
    FM_TRY(fm_dnn_init(&v->d, e));
    v->d.bf16 = bf16;
    FM_TRY(fm_params_init(&v->p, max_tensors, max_numel, seed, e));
    if (arena_bytes > 0)
        FM_TRY(fm_arena_init(&v->a, arena_bytes, e));
    return FM_OK;
}

void fm_fx_env_free(fm_fx_env *v)
{
    fm_arena_free(&v->a);
    fm_params_free(&v->p);
    fm_dnn_free(&v->d);
}

int fm_fx_io_init(fm_fx_io *io, int64_t nx, int64_t ny, uint64_t seed, fm_err *e)
{
    memset(io, 0, sizeof *io);
    io->nx = nx, io->ny = ny;
    io->x = malloc((size_t)nx * sizeof(float));
    io->dx = fm_fx_zeros(nx);
    io->y = fm_fx_zeros(ny);
    io->dy = malloc((size_t)ny * sizeof(float));
    if (!io->x || !io->dx || !io->y || !io->dy)
        return fm_fail(e, FM_ERR_INTERNAL, "out of memory");
    fm_fill_normal(io->x, nx, seed, 1, 0);
    fm_fill_normal(io->dy, ny, seed, 2, 0);
    return FM_OK;
}

void fm_fx_io_free(fm_fx_io *io)
{
    free(io->x), free(io->y), free(io->dy), free(io->dx);
    memset(io, 0, sizeof *io);
}

int fm_fx_compare(const char *label, double tol, const fm_fx_cmp *c, int n)
{
    char line[1024];
    int len = snprintf(line, sizeof line, "  %s: rel err", label), worst_i = -1;
    double worst = 0;
    for (int i = 0; i < n; i++) {
        if (!c[i].got)
            continue;
        const double r = fm_rel_err(c[i].got, c[i].want, (long)c[i].n, 1e-12);
        if (len < (int)sizeof line)
            len += snprintf(line + len, sizeof line - (size_t)len, " %s %.1e", c[i].name, r);
        if (worst_i < 0 || r > worst || isnan(r))
            worst = isnan(r) ? INFINITY : r, worst_i = i;
    }
    fprintf(stderr, "%s\n", line);
    if (worst_i >= 0 && !(worst <= tol)) {
        fprintf(stderr, "  %s: %s rel err %.2e above %.0e against the naive reference\n", label, c[worst_i].name,
                worst, tol);
        return 1;
    }
    return 0;
}

/* ---- a layer against its naive reference ---- */

static int64_t pnumel(const fm_param *p) { return fm_tensor_numel(&p->w); }

int fm_fx_ref_init(fm_fx_ref *r, const fm_fx_layer *l)
{
    memset(r, 0, sizeof *r);
    r->y = malloc((size_t)l->io->ny * sizeof(float));
    r->dx = malloc((size_t)l->io->nx * sizeof(float));
    int ok = r->y && r->dx;
    for (int i = 0; i < l->nparams; i++)
        ok &= (r->dp[i] = malloc((size_t)pnumel(l->params[i]) * sizeof(float))) != NULL;
    return ok ? 0 : 1;
}

void fm_fx_ref_free(fm_fx_ref *r)
{
    free(r->y), free(r->dx);
    for (int i = 0; i < FM_FX_MAX_PARAMS; i++)
        free(r->dp[i]);
    memset(r, 0, sizeof *r);
}

static void poison_grads(const fm_fx_layer *l)
{
    for (int i = 0; i < l->nparams; i++)
        fm_fx_fill(l->params[i]->g.data, pnumel(l->params[i]), l->poison);
}

/* The comparison rows of every parameter gradient, after the first k rows. */
static int grad_rows(const fm_fx_layer *l, const fm_fx_ref *r, fm_fx_cmp *c, int k, char names[][FM_PARAM_NAME + 1])
{
    for (int i = 0; i < l->nparams; i++) {
        const char *dot = strchr(l->params[i]->name, '.');
        snprintf(names[i], FM_PARAM_NAME + 1, "d%s", dot ? dot + 1 : l->params[i]->name);
        c[k++] = (fm_fx_cmp){ names[i], l->params[i]->g.data, r->dp[i], pnumel(l->params[i]) };
    }
    return k;
}

int fm_fx_check(const fm_fx_layer *l, fm_fx_ref *r, double tol, const char *label)
{
    fm_err e = { 0 };
    fm_fx_io *io = l->io;
    fm_fx_fill(io->y, io->ny, NAN);
    fm_fx_fill(io->dx, io->nx, l->poison);
    poison_grads(l);
    if (l->forward(l->ctx, io->x, io->y, &e) != FM_OK || l->backward(l->ctx, io->x, io->dy, io->dx, &e) != FM_OK) {
        fprintf(stderr, "  %s: %s\n", label, e.msg);
        return 1;
    }
    l->reference(l->ctx, io->x, io->dy, r->y, r->dx, r->dp);
    fm_fx_cmp c[2 + FM_FX_MAX_PARAMS] = { { "y", io->y, r->y, io->ny }, { "dx", io->dx, r->dx, io->nx } };
    char names[FM_FX_MAX_PARAMS][FM_PARAM_NAME + 1];
    return fm_fx_compare(label, tol, c, grad_rows(l, r, c, 2, names));
}

int fm_fx_check_no_dx(const fm_fx_layer *l, const fm_fx_ref *r, double tol)
{
    fm_err e = { 0 };
    fm_fx_io *io = l->io;
    char label[256];
    snprintf(label, sizeof label, "%s, backward without dx", l->label);
    fm_fx_fill(io->dx, io->nx, 7.0f);
    poison_grads(l);
    if (l->backward(l->ctx, io->x, io->dy, NULL, &e) != FM_OK) {
        fprintf(stderr, "  %s: %s\n", label, e.msg);
        return 1;
    }
    int64_t touched = 0;
    for (int64_t i = 0; i < io->nx; i++)
        touched += io->dx[i] != 7.0f;
    fm_fx_cmp c[FM_FX_MAX_PARAMS];
    char names[FM_FX_MAX_PARAMS][FM_PARAM_NAME + 1];
    int rc = fm_fx_compare(label, tol, c, grad_rows(l, r, c, 0, names));
    if (touched) {
        fprintf(stderr, "  %s: %lld elements of the dx buffer changed\n", label, (long long)touched);
        rc = 1;
    }
    return rc;
}

int fm_fx_check_alias(const fm_fx_layer *l, const fm_fx_ref *r, double tol, int alias_dy)
{
    fm_err e = { 0 };
    fm_fx_io *io = l->io;
    char label[256];
    snprintf(label, sizeof label, "%s, backward with dx = %s", l->label, alias_dy ? "dy" : "x");
    float *buf = alias_dy ? io->dy : io->x;
    poison_grads(l);
    if (l->backward(l->ctx, io->x, io->dy, buf, &e) != FM_OK) {
        fprintf(stderr, "  %s: %s\n", label, e.msg);
        return 1;
    }
    fm_fx_cmp c[1 + FM_FX_MAX_PARAMS] = { { "dx", buf, r->dx, io->nx } };
    char names[FM_FX_MAX_PARAMS][FM_PARAM_NAME + 1];
    return fm_fx_compare(label, tol, c, grad_rows(l, r, c, 1, names));
}

void fm_fx_reweight(const fm_fx_layer *l)
{
    for (int k = 0; k < l->nparams; k++) {
        float *w = l->params[k]->w.data;
        const int64_t n = pnumel(l->params[k]);
        if (l->params[k]->w.ndim > 1)
            for (int64_t i = 0; i < n; i++)
                w[i] = -0.5f * w[i] + 0.01f * (float)(i % 7);
        else
            for (int64_t i = 0; i < n; i++)
                w[i] = 0.1f * (float)i;
    }
}

int fm_fx_check_reweighted(const fm_fx_layer *l, double tol)
{
    fm_fx_ref r;
    int rc = fm_fx_ref_init(&r, l);
    if (rc)
        fprintf(stderr, "  %s: out of memory\n", l->label);
    for (int round = 0; round < 2 && !rc; round++) {
        char label[256];
        snprintf(label, sizeof label, "%s round %d", l->label, round);
        if (round == 1)
            fm_fx_reweight(l);
        rc = fm_fx_check(l, &r, tol, label);
    }
    if (!rc)
        rc = fm_fx_check_no_dx(l, &r, tol);
    fm_fx_ref_free(&r);
    return rc;
}

static int layer_fwd(void *ctx, fm_err *e)
{
    const fm_fx_layer *l = ctx;
    return l->forward(l->ctx, l->io->x, l->io->y, e);
}

static int layer_bwd(void *ctx, fm_err *e)
{
    const fm_fx_layer *l = ctx;
    return l->backward(l->ctx, l->io->x, l->io->dy, l->io->dx, e);
}

int fm_fx_gradcheck(const fm_fx_layer *l, double eps, double tol, int max_checks, fm_err *e)
{
    fm_gc_op op = { .name = l->label, .ctx = (void *)l, .forward = layer_fwd, .backward = layer_bwd,
                    .out = l->io->y, .dout = l->io->dy, .out_n = l->io->ny };
    op.vars[op.nvars++] = (fm_gc_var){ "x", l->io->x, l->io->dx, l->io->nx };
    for (int i = 0; i < l->nparams; i++) {
        const char *dot = strchr(l->params[i]->name, '.');
        op.vars[op.nvars++] = (fm_gc_var){ dot ? dot + 1 : l->params[i]->name, l->params[i]->w.data,
                                           l->params[i]->g.data, pnumel(l->params[i]) };
    }
    return fm_gradcheck(&op, eps, tol, max_checks, e);
}

/* ---- a model's scalar loss ---- */

static int loss_fwd(void *ctx, fm_err *e)
{
    fm_fx_loss *m = ctx;
    double l;
    FM_TRY(m->loss(m->ctx, &l, e));
    m->out[0] = (float)(l - m->ref);
    return FM_OK;
}

static int loss_bwd(void *ctx, fm_err *e)
{
    fm_fx_loss *m = ctx;
    FM_TRY(m->backward(m->ctx, e));
    for (size_t i = 0; i < m->p->numel; i++)
        m->p->grad[i] *= m->dout[0];
    return FM_OK;
}

int fm_fx_gradcheck_loss(fm_fx_loss *m, const char *const *vars, int nvars, double eps, double tol, int max_checks,
                         fm_err *e)
{
    if (nvars > FM_GC_MAX_VARS)
        return fm_fail(e, FM_ERR_USAGE, "%s: %d variables, at most %d", m->name, nvars, FM_GC_MAX_VARS);
    FM_TRY(m->loss(m->ctx, &m->ref, e));
    fm_gc_op op = { .name = m->name, .ctx = m, .forward = loss_fwd, .backward = loss_bwd, .out = m->out,
                    .dout = m->dout, .out_n = 1, .nvars = nvars };
    for (int i = 0; i < nvars; i++) {
        fm_param *t = fm_params_find(m->p, vars[i]);
        if (!t)
            return fm_fail(e, FM_ERR_USAGE, "%s: no parameter %s", m->name, vars[i]);
        op.vars[i] = (fm_gc_var){ vars[i], t->w.data, t->g.data, (long)fm_tensor_numel(&t->w) };
    }
    return fm_gradcheck(&op, eps, tol, max_checks, e);
}

/* ---- timing ---- */

int fm_fx_time(int (*forward)(void *ctx, fm_err *e), int (*backward)(void *ctx, fm_err *e), void *ctx, int warm,
               int reps, fm_fx_times *t, fm_err *e)
{
    *t = (fm_fx_times){ 0, 0, INFINITY, INFINITY };
    for (int i = 0; i < warm + reps; i++) {
        const double t0 = fm_now();
        FM_TRY(forward(ctx, e));
        const double t1 = fm_now();
        if (backward)
            FM_TRY(backward(ctx, e));
        const double t2 = fm_now();
        if (i >= warm) {
            t->fwd += (t1 - t0) / reps;
            t->bwd += (t2 - t1) / reps;
            t->fwd_best = fmin(t->fwd_best, t1 - t0);
            t->best = fmin(t->best, t2 - t0);
        }
    }
    return FM_OK;
}

int fm_fx_time_layer(const fm_fx_layer *l, int warm, int reps, fm_fx_times *t, fm_err *e)
{
    return fm_fx_time(layer_fwd, layer_bwd, (void *)l, warm, reps, t, e);
}
