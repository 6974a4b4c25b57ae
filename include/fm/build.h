/* build.h - the run configuration turned into models: their cfgs, the flow's
 * input shape, their parameter tables, and the check that the configured
 * architectures can be built.
 *
 * The bridge between io/ (config.h, which knows no model) and models/ (which
 * know no config): the only models/ file that includes config.h. Stages, the
 * generator and the command line build every model through it. */
#ifndef FM_BUILD_H
#define FM_BUILD_H

#include "fm/config.h"
#include "fm/dnn.h"
#include "fm/flowmodel.h"
#include "fm/guide.h"
#include "fm/params.h"
#include "fm/status.h"
#include "fm/vae.h"

/* fm_config_validate, then the models' own checks of the architectures the
 * configuration uses (fm_vae_cfg_check for a latent flow; fm_unet_cfg_check or
 * fm_dit_cfg_check), their errors placed where the key at fault was set:
 * "tiny.yaml:12:3: unet.groups: 3 does not divide unet.channels[0] = 16 ...".
 * FM_ERR_USAGE on any failure; call it wherever a configuration is accepted. */
int fm_build_validate(const fm_config *c, fm_err *e);

/* The memory one of world_size ranks plans for each configured stage (the
 * arenas of its models measured at their batches without building them,
 * parameters with gradients, optimiser and checkpoint copies, the data, the
 * latents, grids and eval features): a stage above run.memory_limit_gb (0:
 * the machine's physical memory) -> FM_ERR_USAGE placed at the key of its
 * largest part, naming the stage, the figures and the limit. */
int fm_build_check_memory(const fm_config *c, int world_size, fm_err *e);

/* Samples a grid of n draws per call of fm_generate (generate.h), and so the
 * B of the generator that draws it: all n up to FM_GRID_BATCH (one call, as
 * before there was a limit), else calls of FM_GRID_BATCH, so a grid's memory
 * does not grow with sample.per_class beyond its images. */
#define FM_GRID_BATCH 256
static inline int fm_build_grid_batch(int n) { return n < FM_GRID_BATCH ? n : FM_GRID_BATCH; }

/* 1 if sample.cfg_interval is not [0, 1]: a generator then also builds the flow
 * model at B rows, for the steps outside the interval (generate.h). */
static inline int fm_build_guidance_interval(const fm_config *c)
{
    return !(c->sample.cfg_interval.v[0] == 0.0 && c->sample.cfg_interval.v[1] == 1.0);
}

/* Side and channels of the flow model's input: the VAE's latents
 * (fm_vae_latent_hw of fm_build_vae_cfg, vae.latent_channels) or the 32x32x1
 * images. */
void fm_build_flow_shape(const fm_config *c, int *side, int *channels);

/* The latent classifier of guide.* on fm_build_flow_shape's input with
 * FM_NUM_CLASSES classes (guide.h). */
void fm_build_guide_cfg(const fm_config *c, fm_guide_cfg *g);

/* The VAE of vae.* (on 32x32x1 images). */
void fm_build_vae_cfg(const fm_config *c, fm_vae_cfg *v);
/* The flow model of flow.model, unet.* / dit.*, on fm_build_flow_shape's input
 * with FM_NUM_CLASSES classes. */
void fm_build_flow_cfg(const fm_config *c, fm_flow_model_cfg *f);

/* A parameter table sized exactly for the flow model (seed run.seed). */
int fm_build_flow_params(fm_params *p, const fm_config *c, fm_err *e);
/* A parameter table large enough for any VAE encoder + decoder (seed 0). */
int fm_build_vae_params(fm_params *p, fm_err *e);

/* fm_flow_model_init with fm_build_flow_cfg's cfg. */
int fm_build_flow_model(fm_flow_model *f, const fm_config *c, fm_dnn *d, fm_params *p, int batch, fm_err *e);

#endif
