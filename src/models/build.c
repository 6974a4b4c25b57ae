/* build.c - the run configuration turned into models (see build.h). */
#include "fm/build.h"

#include <string.h>

#define VAE_MAX_TENSORS 4096
#define VAE_MAX_NUMEL ((size_t)64 << 20)

/* The config's enumerations and limits are the models' (those of the flow:
 * stages/generate.c). */
_Static_assert(FM_MODEL_UNET == (int)FM_FLOW_UNET && FM_MODEL_DIT == (int)FM_FLOW_DIT, "fm_model_names order");
_Static_assert(FM_VAE_LOSS_L2 == (int)FM_RECON_L2 && FM_VAE_LOSS_L1 == (int)FM_RECON_L1, "fm_recon_names order");
_Static_assert(FM_CFG_VAE_MAX_RES == FM_VAE_MAX_RES, "vae.res_blocks range");

/* Copy at most cap elements of a list (the checks report a longer one). */
static void copy_list(int *dst, const fm_ilist *src, int cap)
{
    for (int i = 0; i < src->n && i < cap; i++)
        dst[i] = src->v[i];
}

void fm_build_vae_cfg(const fm_config *c, fm_vae_cfg *v)
{
    *v = fm_vae_cfg_default();
    v->size = FM_CFG_IMAGE_SIDE;
    v->levels = c->vae.channels.n;
    copy_list(v->channels, &c->vae.channels, FM_VAE_MAX_LEVELS);
    v->res_blocks = c->vae.res_blocks;
    v->latent_ch = c->vae.latent_channels;
    v->groups = c->vae.groups;
    v->recon = c->vae.loss == FM_RECON_L1 ? FM_VAE_LOSS_L1 : FM_VAE_LOSS_L2;
    v->kl_weight = (float)c->vae.kl_weight;
}

void fm_build_flow_shape(const fm_config *c, int *side, int *channels)
{
    if (c->flow.latent) {
        fm_vae_cfg v;
        fm_build_vae_cfg(c, &v);
        *side = v.levels >= 1 && v.levels <= 30 ? fm_vae_latent_hw(&v) : 0;
        *channels = v.latent_ch;
    } else {
        *side = FM_CFG_IMAGE_SIDE;
        *channels = 1;
    }
}

void fm_build_flow_cfg(const fm_config *c, fm_flow_model_cfg *f)
{
    memset(f, 0, sizeof *f);
    f->kind = c->flow.model == FM_MODEL_DIT ? FM_FLOW_DIT : FM_FLOW_UNET;
    int side, ch;
    fm_build_flow_shape(c, &side, &ch);
    fm_unet_cfg *u = &f->unet;
    u->size = side;
    u->in_ch = ch;
    u->levels = c->unet.channels.n;
    copy_list(u->channels, &c->unet.channels, FM_UNET_MAX_LEVELS);
    u->res_blocks = c->unet.res_blocks;
    u->n_attn = c->unet.attn_res.n;
    copy_list(u->attn_res, &c->unet.attn_res, FM_UNET_MAX_LEVELS);
    u->heads = c->unet.heads;
    u->groups = c->unet.groups;
    u->emb_dim = c->unet.emb_dim;
    u->num_classes = FM_NUM_CLASSES;
    fm_dit_cfg *d = &f->dit;
    d->size = side;
    d->in_ch = ch;
    d->patch = c->dit.patch;
    d->width = c->dit.width;
    d->depth = c->dit.depth;
    d->heads = c->dit.heads;
    d->mlp_ratio = c->dit.mlp_ratio;
    d->num_classes = FM_NUM_CLASSES;
}

/* A model check's error "<key>: <what>" (key possibly indexed, "unet.channels[1]")
 * becomes "<where the key was set>: <key>: <what>"; a message that does not
 * start with a config key is left as it is. */
static int placed(const fm_config *c, int rc, fm_err *e)
{
    if (rc == FM_OK || !e)
        return rc;
    char key[64], where[FM_CFG_STR_MAX + 64];
    size_t n = strcspn(e->msg, ":[");
    if (n >= sizeof key)
        return rc;
    memcpy(key, e->msg, n);
    key[n] = '\0';
    if (fm_config_key_index(key) < 0)
        return rc;
    fm_config_where(c, key, where, sizeof where);
    fm_err_prefix(e, "%s", where);
    return rc;
}

int fm_build_validate(const fm_config *c, fm_err *e)
{
    FM_TRY(fm_config_validate(c, e));
    if (c->flow.latent) { /* the latent shape depends on the VAE even if the vae stage is not run */
        fm_vae_cfg v;
        fm_build_vae_cfg(c, &v);
        FM_TRY(placed(c, fm_vae_cfg_check(&v, e), e));
    }
    fm_flow_model_cfg f;
    fm_build_flow_cfg(c, &f);
    if (f.kind == FM_FLOW_DIT)
        return placed(c, fm_dit_cfg_check(&f.dit, e), e);
    return placed(c, fm_unet_cfg_check(&f.unet, e), e);
}

int fm_build_flow_params(fm_params *p, const fm_config *c, fm_err *e)
{
    fm_flow_model_cfg f;
    fm_build_flow_cfg(c, &f);
    int tensors = 0;
    size_t numel = 0;
    FM_TRY(fm_flow_model_size(&f, &tensors, &numel, NULL, e));
    return fm_params_init(p, tensors, numel, (uint64_t)c->run.seed, e);
}

int fm_build_vae_params(fm_params *p, fm_err *e) { return fm_params_init(p, VAE_MAX_TENSORS, VAE_MAX_NUMEL, 0, e); }

int fm_build_flow_model(fm_flow_model *f, const fm_config *c, fm_dnn *d, fm_params *p, int batch, fm_err *e)
{
    fm_flow_model_cfg fc;
    fm_build_flow_cfg(c, &fc);
    return fm_flow_model_init(f, &fc, d, p, batch, e);
}
