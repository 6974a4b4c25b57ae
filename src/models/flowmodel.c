/* flowmodel.c - the flow stage's velocity model, U-Net or DiT, from its cfg. */
#include "fm/flowmodel.h"

#include <string.h>

int fm_flow_model_size(const fm_flow_model_cfg *c, int *tensors, size_t *numel, size_t *count, fm_err *e)
{
    if (c->kind == FM_FLOW_DIT)
        return fm_dit_param_count(&c->dit, tensors, numel, count, e);
    return fm_unet_param_count(&c->unet, tensors, numel, count, e);
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

int fm_flow_model_forward(fm_flow_model *f, const float *x, const float *t, const int32_t *y, float *out, fm_err *e)
{
    if (f->kind == FM_FLOW_DIT)
        return fm_dit_forward(&f->m.dit, x, t, y, out, e);
    return fm_unet_forward(&f->m.unet, x, t, y, out, e);
}

int fm_flow_model_backward(fm_flow_model *f, const float *dout, fm_err *e)
{
    if (f->kind == FM_FLOW_DIT)
        return fm_dit_backward(&f->m.dit, dout, e);
    return fm_unet_backward(&f->m.unet, dout, e);
}

void fm_flow_model_set_grad_hook(fm_flow_model *f, fm_flow_grad_hook fn, void *ctx)
{
    if (f->kind == FM_FLOW_DIT)
        fm_dit_set_grad_hook(&f->m.dit, fn, ctx);
    else
        fm_unet_set_grad_hook(&f->m.unet, fn, ctx);
}

void fm_flow_model_set_profile(fm_flow_model *f, fm_profile *prof)
{
    if (f->kind == FM_FLOW_DIT)
        fm_dit_set_profile(&f->m.dit, prof);
    else
        fm_unet_set_profile(&f->m.unet, prof);
}

double fm_flow_model_flops(const fm_flow_model *f)
{
    return f->kind == FM_FLOW_DIT ? fm_dit_flops(&f->m.dit) : fm_unet_flops(&f->m.unet);
}

size_t fm_flow_model_activation_bytes(const fm_flow_model *f)
{
    return f->kind == FM_FLOW_DIT ? fm_dit_activation_bytes(&f->m.dit) : fm_unet_activation_bytes(&f->m.unet);
}

void fm_flow_model_free(fm_flow_model *f)
{
    if (f->kind == FM_FLOW_DIT)
        fm_dit_free(&f->m.dit);
    else
        fm_unet_free(&f->m.unet);
    memset(f, 0, sizeof *f);
}

int fm_flow_model_velocity(void *ctx, const float *x, const float *t, const int32_t *y, int n, float *u, fm_err *e)
{
    fm_flow_model *f = ctx;
    if (n != f->batch)
        return fm_fail(e, FM_ERR_INTERNAL, "flow model built for %d rows called with %d", f->batch, n);
    return fm_flow_model_forward(f, x, t, y, u, e);
}
