/* flowmodel.c - the flow stage's velocity model, U-Net or DiT, from the config. */
#include "fm/flowmodel.h"

#include <string.h>

static void unet_cfg(const fm_config *c, fm_unet_cfg *u)
{
    memset(u, 0, sizeof *u);
    fm_config_flow_shape(c, &u->size, &u->in_ch);
    u->levels = c->unet.channels.n;
    for (int i = 0; i < u->levels; i++)
        u->channels[i] = c->unet.channels.v[i];
    u->res_blocks = c->unet.res_blocks;
    u->n_attn = c->unet.attn_res.n;
    for (int i = 0; i < u->n_attn; i++)
        u->attn_res[i] = c->unet.attn_res.v[i];
    u->heads = c->unet.heads;
    u->groups = c->unet.groups;
    u->emb_dim = c->unet.emb_dim;
    u->num_classes = FM_NUM_CLASSES;
}

static void dit_cfg(const fm_config *c, fm_dit_cfg *d)
{
    memset(d, 0, sizeof *d);
    fm_config_flow_shape(c, &d->size, &d->in_ch);
    d->patch = c->dit.patch;
    d->width = c->dit.width;
    d->depth = c->dit.depth;
    d->heads = c->dit.heads;
    d->mlp_ratio = c->dit.mlp_ratio;
    d->num_classes = FM_NUM_CLASSES;
}

int fm_flow_model_size(const fm_config *c, int *tensors, size_t *numel, size_t *count, fm_err *e)
{
    if (c->flow.model == FM_MODEL_DIT) {
        fm_dit_cfg d;
        dit_cfg(c, &d);
        return fm_dit_param_count(&d, tensors, numel, count, e);
    }
    fm_unet_cfg u;
    unet_cfg(c, &u);
    return fm_unet_param_count(&u, tensors, numel, count, e);
}

int fm_flow_model_init(fm_flow_model *f, const fm_config *c, fm_dnn *d, fm_params *p, int batch, fm_err *e)
{
    memset(f, 0, sizeof *f);
    f->kind = c->flow.model;
    f->batch = batch;
    fm_config_flow_shape(c, &f->side, &f->ch);
    f->dim = (long)f->side * f->side * f->ch;
    if (f->kind == FM_MODEL_DIT) {
        fm_dit_cfg dc;
        dit_cfg(c, &dc);
        return fm_dit_init(&f->m.dit, d, p, &dc, batch, e);
    }
    fm_unet_cfg uc;
    unet_cfg(c, &uc);
    return fm_unet_init(&f->m.unet, d, p, &uc, batch, e);
}

int fm_flow_model_forward(fm_flow_model *f, const float *x, const float *t, const int32_t *y, float *out, fm_err *e)
{
    if (f->kind == FM_MODEL_DIT)
        return fm_dit_forward(&f->m.dit, x, t, y, out, e);
    return fm_unet_forward(&f->m.unet, x, t, y, out, e);
}

int fm_flow_model_backward(fm_flow_model *f, const float *dout, fm_err *e)
{
    if (f->kind == FM_MODEL_DIT)
        return fm_dit_backward(&f->m.dit, dout, e);
    return fm_unet_backward(&f->m.unet, dout, e);
}

void fm_flow_model_set_grad_hook(fm_flow_model *f, fm_flow_grad_hook fn, void *ctx)
{
    if (f->kind == FM_MODEL_DIT)
        fm_dit_set_grad_hook(&f->m.dit, fn, ctx);
    else
        fm_unet_set_grad_hook(&f->m.unet, fn, ctx);
}

void fm_flow_model_set_profile(fm_flow_model *f, fm_profile *prof)
{
    if (f->kind == FM_MODEL_DIT)
        fm_dit_set_profile(&f->m.dit, prof);
    else
        fm_unet_set_profile(&f->m.unet, prof);
}

double fm_flow_model_flops(const fm_flow_model *f)
{
    return f->kind == FM_MODEL_DIT ? fm_dit_flops(&f->m.dit) : fm_unet_flops(&f->m.unet);
}

size_t fm_flow_model_activation_bytes(const fm_flow_model *f)
{
    return f->kind == FM_MODEL_DIT ? fm_dit_activation_bytes(&f->m.dit) : fm_unet_activation_bytes(&f->m.unet);
}

void fm_flow_model_free(fm_flow_model *f)
{
    if (f->kind == FM_MODEL_DIT)
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
