/* flowmodel.c - the flow stage's velocity model, U-Net or DiT, from its cfg. */
#include "fm/flowmodel.h"

#include <string.h>

#include "fm/timer.h"

int fm_flow_model_size(const fm_flow_model_cfg *c, int *tensors, size_t *numel, size_t *count, fm_err *e)
{
    if (c->kind == FM_FLOW_DIT)
        return fm_dit_param_count(&c->dit, tensors, numel, count, e);
    return fm_unet_param_count(&c->unet, tensors, numel, count, e);
}

int fm_flow_model_measure(const fm_flow_model_cfg *c, int batch, size_t *arena, size_t *params, fm_err *e)
{
    return c->kind == FM_FLOW_DIT ? fm_dit_measure(&c->dit, batch, arena, params, e)
                                  : fm_unet_measure(&c->unet, batch, arena, params, e);
}

int fm_flow_model_init(fm_flow_model *f, const fm_flow_model_cfg *c, fm_dnn *d, fm_params *p, int batch,
                       fm_err *e)
{
    memset(f, 0, sizeof *f);
    f->kind = c->kind;
    f->batch = batch;
    f->side = c->kind == FM_FLOW_DIT ? c->dit.size : c->unet.size;
    f->ch = c->kind == FM_FLOW_DIT ? c->dit.in_ch : c->unet.in_ch;
    f->dim = (long)f->side * f->side * f->ch;
    if (f->kind == FM_FLOW_DIT)
        return fm_dit_init(&f->m.dit, d, p, &c->dit, batch, e);
    return fm_unet_init(&f->m.unet, d, p, &c->unet, batch, e);
}

/* ---- dispatch: the architecture's ops on the union member ------------------ */

static const fm_flow_model_ops *const ops_of_kind[] = { [FM_FLOW_UNET] = &fm_unet_ops, [FM_FLOW_DIT] = &fm_dit_ops };

static const fm_flow_model_ops *ops(const fm_flow_model *f) { return ops_of_kind[f->kind]; }

/* Both members start at the union's address. */
static void *impl(fm_flow_model *f) { return &f->m; }
static const void *impl_c(const fm_flow_model *f) { return &f->m; }

/* The time of a forward or backward call that its layers did not account:
 * the wall time since t0 less the seconds its phase gained since s0. */
static void account_other(fm_flow_model *f, int phase, double t0, double s0)
{
    const double other = (fm_now() - t0) - (f->prof->phase_s[phase] - s0);
    fm_profile_add(f->prof, "other", "", "elementwise", phase, other > 0 ? other : 0.0, 0);
}

int fm_flow_model_forward(fm_flow_model *f, const float *x, const float *t, const int32_t *y, float *out, fm_err *e)
{
    if (!f->prof)
        return ops(f)->forward(impl(f), x, t, y, out, e);
    const double t0 = fm_now(), s0 = f->prof->phase_s[FM_PROF_FWD];
    FM_TRY(ops(f)->forward(impl(f), x, t, y, out, e));
    account_other(f, FM_PROF_FWD, t0, s0);
    return FM_OK;
}

int fm_flow_model_backward(fm_flow_model *f, const float *dout, fm_err *e)
{
    if (!f->prof)
        return ops(f)->backward(impl(f), dout, e);
    const double t0 = fm_now(), s0 = f->prof->phase_s[FM_PROF_BWD];
    FM_TRY(ops(f)->backward(impl(f), dout, e));
    account_other(f, FM_PROF_BWD, t0, s0);
    return FM_OK;
}

/* The hook the model calls: the caller's, timed when profiling. */
static int timed_hook(void *ctx, int first, int n, fm_err *e)
{
    fm_flow_model *f = ctx;
    FM_PROF_CALL(f->prof, "grad_hook", "", "hook", FM_PROF_BWD, 0, f->hook(f->hook_ctx, first, n, e));
    return FM_OK;
}

void fm_flow_model_set_grad_hook(fm_flow_model *f, fm_flow_grad_hook fn, void *ctx)
{
    f->hook = fn;
    f->hook_ctx = ctx;
    ops(f)->set_grad_hook(impl(f), fn ? timed_hook : NULL, f);
}

/* Visitor of the walk: attach the layer to its site in the table ctx, or
 * detach it (ctx NULL). */
static void attach(void *ctx, const char *scope, const char *layer, const char *kind, fm_prof_site **site)
{
    *site = ctx ? fm_profile_site(ctx, scope, layer, kind) : NULL;
}

void fm_flow_model_set_profile(fm_flow_model *f, fm_profile *prof)
{
    if (prof == f->prof)
        return;
    ops(f)->walk(impl(f), attach, prof);
    f->prof = prof;
}

double fm_flow_model_flops(const fm_flow_model *f) { return ops(f)->flops(impl_c(f)); }

size_t fm_flow_model_activation_bytes(const fm_flow_model *f) { return ops(f)->activation_bytes(impl_c(f)); }

void fm_flow_model_free(fm_flow_model *f)
{
    ops(f)->free(impl(f));
    memset(f, 0, sizeof *f);
}

int fm_flow_model_velocity(void *ctx, const float *x, const float *t, const int32_t *y, int n, float *u, fm_err *e)
{
    fm_flow_model *f = ctx;
    if (n != f->batch)
        return fm_fail(e, FM_ERR_INTERNAL, "flow model built for %d rows called with %d", f->batch, n);
    return fm_flow_model_forward(f, x, t, y, u, e);
}
