/* embed.h - the conditioning inputs of the flow model: sinusoidal features of
 * the time t and a learned table of class embeddings.
 *
 * Time embedding (no parameters): t [N] in [0, 1] -> y [N, D], D even,
 *   half = D / 2, freq_i = exp(-ln(10000) * i / half) for i < half,
 *   arg_i = t * scale * freq_i,
 *   y[n, :] = [cos(arg_0..arg_{half-1}), sin(arg_0..arg_{half-1})]   (COS FIRST).
 * Computed in double and rounded once to fp32 (with scale = 1000 an fp32
 * argument would already be off by ~6e-5 rad).
 *
 * Class embedding: a table `<name>.weight` [num_classes + 1, D] like
 * torch.nn.Embedding (init N(0, 1)); the last row (index num_classes) is the
 * null label used for classifier-free guidance.
 * Neither holds anything to free (arena and parameter table own the memory). */
#ifndef FM_EMBED_H
#define FM_EMBED_H

#include <stdint.h>

#include "fm/arena.h"
#include "fm/params.h"
#include "fm/profile.h"
#include "fm/status.h"

typedef struct fm_time_embed {
    int n, dim;       /* batch size N, output width D */
    double scale;     /* t multiplier (1000 by default) */
    double *freqs;    /* [D / 2] from the arena */
    fm_prof_site *prof; /* profiling site (profile.h): NULL = off, the default; set by the model's walk */
} fm_time_embed;

/* Set up for batches of n times -> [n, dim]; dim must be even and > 0.
 * Takes the frequency table from arena a (left uncomputed on a measuring arena). */
int fm_time_embed_init(fm_time_embed *l, fm_arena *a, int n, int dim, double scale, fm_err *e);

/* t [N] -> y [N, D] (cos first, then sin). */
int fm_time_embed_forward(const fm_time_embed *l, const float *t, float *y, fm_err *e);

/* dt[n] = sum_i dy[n, i] * d y[n, i] / d t[n]. t is data, so the model never
 * needs this; it is here so the gradient check covers the formula.
 * Overwrites dt. */
int fm_time_embed_backward(const fm_time_embed *l, const float *t, const float *dy, float *dt, fm_err *e);

typedef struct fm_class_embed {
    int n, num_classes, dim;  /* batch size N, classes (without the null label), D */
    fm_param *weight;         /* [num_classes + 1, D] */
    fm_prof_site *prof; /* profiling site (profile.h): NULL = off, the default; set by the model's walk */
} fm_class_embed;

/* Register `<name>.weight` [num_classes + 1, dim] in p, initialised N(0, 1)
 * from Philox keyed by (p->seed, parameter name); batches of n labels. */
int fm_class_embed_init(fm_class_embed *l, fm_params *p, const char *name, int n, int num_classes,
                        int dim, fm_err *e);

/* labels [N] (int32 in [0, num_classes], num_classes = null) -> y [N, D]
 * (row gather). A label out of range is FM_ERR_DATA. */
int fm_class_embed_forward(const fm_class_embed *l, const int32_t *labels, float *y, fm_err *e);

/* Overwrites the weight gradient: zero, then scatter-add dy [N, D] into the rows
 * named by labels (duplicate labels accumulate, in batch order). */
int fm_class_embed_backward(fm_class_embed *l, const int32_t *labels, const float *dy, fm_err *e);

#endif
