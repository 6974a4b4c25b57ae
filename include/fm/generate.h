/* generate.h - images from a trained flow: sample latents (or pixels) with
 * CFG, then decode them with the VAE decoder. Used by the flow stage's
 * periodic grids, the sample and eval stages, and `fmtrain sample`.
 *
 * The generator owns a copy of the flow model built for 2B rows (the
 * conditional and null branches of CFG run as one batch), the sampler, and,
 * for latent flows, a VAE decoder for B rows with its weights. Weights are
 * given to it (set_flow_weights: typically the EMA), so it never touches the
 * training model. */
#ifndef FM_GENERATE_H
#define FM_GENERATE_H

#include <stdint.h>

#include "fm/config.h"
#include "fm/dnn.h"
#include "fm/flowmodel.h"
#include "fm/params.h"
#include "fm/sampler.h"
#include "fm/vae.h"

typedef struct fm_generator {
    int B;                 /* samples per call */
    int latent;            /* decode with the VAE */
    long dim;              /* values per flow sample */
    fm_params flow_p;
    fm_flow_model model;   /* built for 2B rows */
    fm_sampler sampler;
    fm_params vae_p;
    fm_vae_encoder enc;    /* batch 1, only so vae_p has the VAE checkpoint's layout */
    fm_vae_decoder dec;    /* batch B */
    float latent_scale;
    float *x;              /* [B, dim] flow samples */
    float *z;              /* [B, dim] latents / scale */
    float *images;         /* [B, 32, 32, 1] in [-1, 1] (clamped) */
} fm_generator;

int fm_generator_init(fm_generator *g, const fm_config *c, fm_dnn *d, int B, fm_sampler_kind kind, int steps,
                      fm_err *e);
void fm_generator_free(fm_generator *g);

/* Copy flow weights laid out like the flow model's fm_params.data. */
void fm_generator_set_flow_weights(fm_generator *g, const float *w, size_t numel);
/* Load the VAE decoder from the newest valid `vae` checkpoint of run_dir and
 * set the latent scale (no-op for pixel flows). */
int fm_generator_load_vae(fm_generator *g, const char *run_dir, float latent_scale, fm_err *e);

/* g->images <- B images of classes y [B] at guidance w; sample i is sample
 * number first + i of the run (keys its noise). */
int fm_generate(fm_generator *g, const int32_t *y, float w, uint64_t seed, uint64_t first, fm_err *e);

#endif
