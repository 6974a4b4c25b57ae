/* latent_set.h - the encode stage's latents as a training set (flow, guide).
 *
 * latents.safetensors of the run, scaled, read once per node (node rank 0)
 * into a block every rank of the node maps (shared.h); every rank then
 * checks that it holds what rank 0 holds. */
#ifndef FM_LATENT_SET_H
#define FM_LATENT_SET_H

#include <stdint.h>

#include "fm/pipeline.h"
#include "fm/shared.h"
#include "fm/status.h"

typedef struct fm_latent_set {
    const float *x;   /* [n, side, side, ch] scaled latents */
    const int32_t *y; /* [n] labels */
    int n;
    float scale;      /* the latents' scale (latents.h) */
    fm_node node;
    fm_shared block;
} fm_latent_set;

/* Load the run's latents of side x side x ch into d (zeroed). Collective;
 * every rank returns the same status and message: FM_ERR_DATA when the file
 * does not fit side/ch or a rank read another file than rank 0. */
int fm_latent_set_load(const fm_pipeline *P, int side, int ch, fm_latent_set *d, fm_err *e);
/* Unmap (collective: every rank calls it) and forget. */
void fm_latent_set_free(fm_latent_set *d, int collective);

#endif
