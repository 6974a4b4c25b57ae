/* latents.h - the encode stage's latents file, RUN/latents.safetensors:
 *   "latents" F32 [N, s, s, C]  the encoder means, unscaled
 *   "labels"  F32 [N]           class indices 0..FM_LATENTS_CLASSES - 1
 *   "scale"   F32 [1]           finite and > 0: the factor the flow stage
 *                               multiplies latents by (generation divides)
 * fm_latents_check validates every value the flow stage uses before any is
 * used; fm_latents_copy then turns a checked file into the training set. */
#ifndef FM_LATENTS_H
#define FM_LATENTS_H

#include <stdint.h>

#include "fm/safetensors.h"
#include "fm/status.h"

#define FM_LATENTS_CLASSES 10 /* = FM_NUM_CLASSES (flowmodel.h; io/ includes no model header) */

/* A checked latents file: views into it. */
typedef struct fm_latents {
    const fm_st_tensor *latents, *labels;
    int n;        /* samples, 1 .. INT32_MAX */
    long dim;     /* values per sample */
    float scale;
} fm_latents;

/* Check f (read from path) as a latents file of samples [side, side, ch]
 * (side <= 0: any shape). The tensors exist with the dtypes and ranks above, N >= 1 and
 * fits an int, the shape's products do not overflow, labels has N entries,
 * each a whole number in [0, 9], scale one finite value > 0. Any failure ->
 * FM_ERR_DATA naming path and the field; a file of another latent shape
 * says to delete it (it is re-encoded). */
int fm_latents_check(const fm_st_file *f, const char *path, int side, int ch, fm_latents *out, fm_err *e);

/* x [n, dim] <- latents * scale, y [n] <- labels, from a checked file. */
void fm_latents_copy(const fm_latents *l, float *x, int32_t *y);

#endif
