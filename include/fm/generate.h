/* generate.h - images from a trained flow: sample latents (or pixels) with
 * CFG, then decode them with the VAE decoder; the weights from a run's
 * checkpoints; grids of them as PNG files. The one generator of the flow
 * stage's periodic grids, the sample and eval stages, and `fmtrain sample`.
 * Over several ranks the work is split by whole batches (batchsplit.h): grid
 * k of fm_generator_write_grids is drawn by rank k mod size, the eval stage's
 * batches go round-robin, and rank 0 alone writes.
 *
 * The generator owns a copy of the flow model built for 2B rows (the
 * conditional and null branches of CFG run as one batch), the sampler, and,
 * for latent flows, a VAE decoder for B rows with its weights. Weights are
 * given to it (set_flow_weights: typically the EMA), so it never touches the
 * training model. */
#ifndef FM_GENERATE_H
#define FM_GENERATE_H

#include <stdint.h>

#include "fm/batchsplit.h"
#include "fm/build.h"
#include "fm/config.h"
#include "fm/dnn.h"
#include "fm/flowmodel.h"
#include "fm/params.h"
#include "fm/guide_sampler.h"
#include "fm/sampler.h"
#include "fm/vae.h"
#include "fm/world.h"

typedef struct fm_generator {
    int B;                 /* samples per call */
    int latent;            /* decode with the VAE */
    long dim;              /* values per flow sample */
    fm_params flow_p;
    fm_flow_model model;   /* built for 2B rows */
    fm_params half_p;      /* a copy of flow_p for half (fm_generate copies the weights) */
    fm_flow_model half;    /* built for B rows when sample.cfg_interval is not [0, 1]: the sampler skips
                            * the unused branch outside it (else half.batch = 0 and half_p is empty) */
    fm_sampler sampler;
    fm_guide_sampler guide; /* classifier guidance (sample.classifier_scale > 0), else zero */
    fm_params vae_p;
    fm_vae_encoder enc;    /* batch 1, only so vae_p has the VAE checkpoint's layout */
    fm_vae_decoder dec;    /* batch B */
    float latent_scale;
    int64_t vae_step;      /* the step of the VAE checkpoint loaded (0: none, a pixel flow) */
    float *x;              /* [B, dim] flow samples (one block with z and images) */
    float *z;              /* [B, dim] latents / scale */
    float *images;         /* [B, 32, 32, 1] in [-1, 1] (clamped) */
} fm_generator;

int fm_generator_init(fm_generator *g, const fm_config *c, fm_dnn *d, int B, fm_sampler_kind kind, int steps,
                      fm_err *e);
/* Frees g and zeroes it; a zeroed g (never built, or after a failed init) is fine. */
void fm_generator_free(fm_generator *g);

/* Copy flow weights laid out like the flow model's fm_params.data. */
void fm_generator_set_flow_weights(fm_generator *g, const float *w, size_t numel);
/* Load the VAE decoder from the newest valid `vae` checkpoint of run_dir
 * (its step in g->vae_step) and set the latent scale (no-op for pixel flows). */
int fm_generator_load_vae(fm_generator *g, const char *run_dir, float latent_scale, fm_err *e);
/* After each rank that passes has != 0 loaded its VAE (rc its status): the
 * ranks compare, and a rank that could not load, or loaded another VAE
 * checkpoint step than the lowest loading rank, stops every rank (the same
 * status everywhere). Collective. */
int fm_generator_agree_vae(const fm_generator *g, const fm_world *w, const char *run_dir, int has, int rc,
                           fm_err *e);
/* Everything from a run's checkpoints: the flow weights ("ema." ones if
 * sample.ema) and latent scale of the flow checkpoint file ckpt, or of the
 * newest valid flow checkpoint of run.out when ckpt is NULL (FM_ERR_DATA if
 * there is none), then the VAE (fm_generator_load_vae from run.out). *step
 * (if not NULL) <- the flow checkpoint's step. */
int fm_generator_load(fm_generator *g, const fm_config *c, const char *ckpt, int64_t *step, fm_err *e);
/* fm_generator_load with the VAE from the checkpoint file vae_ckpt (a `vae`
 * checkpoint, e.g. copied out of its run directory) unless it is NULL. */
int fm_generator_load_files(fm_generator *g, const fm_config *c, const char *ckpt, const char *vae_ckpt,
                            int64_t *step, fm_err *e);

/* g->images <- B images of classes y [B] at guidance w; sample i is sample
 * number first + i of the run (keys its noise). */
int fm_generate(fm_generator *g, const int32_t *y, float w, uint64_t seed, uint64_t first, fm_err *e);

/* Samples 0 .. rows * cols - 1 of seed, drawn in calls of g->B =
 * fm_build_grid_batch(rows * cols) (sample i keyed by i wherever the
 * calls split), written to path as a PNG grid of rows x cols: every row of
 * class cls, or (cls < 0) row r of class r mod FM_NUM_CLASSES. */
int fm_generator_grid(fm_generator *g, int rows, int cols, int cls, float w, uint64_t seed, const char *path,
                      fm_err *e);
/* fm_generator_grid with labels: the class name left of each row and the
 * text header in a strip above (png.h: fm_png_write_grid_labelled). The
 * same images as fm_generator_grid; only `fmtrain sample` labels its grid
 * (the run's own grids stay plain). */
int fm_generator_grid_labelled(fm_generator *g, int rows, int cols, int cls, float w, uint64_t seed,
                               const char *header, const char *path, fm_err *e);

/* Receives samples first .. first + count - 1: images [count, 32, 32, 1] in
 * [-1, 1], labels [count]. */
typedef int (*fm_sample_sink)(void *ctx, int64_t first, int count, const float *images, const int32_t *labels,
                              fm_err *e);
/* Samples 0 .. n-1 of seed at guidance w, g->B at a time (memory does not
 * grow with n), each batch handed to sink: sample i is of class cls, or
 * (cls < 0) of class i mod FM_NUM_CLASSES, its noise keyed by i (so the
 * samples do not depend on g->B). */
int fm_generator_samples(fm_generator *g, int64_t n, int cls, float w, uint64_t seed, fm_sample_sink sink,
                         void *ctx, fm_err *e);

/* Grids of fm_generator_write_grids that rank `rank` of `size` draws (grid k
 * is rank k mod size's): only such a rank needs an initialised generator. */
static inline int fm_generator_grids_mine(const fm_config *c, int rank, int size)
{
    return fm_batches_mine(c->sample.cfg.n, rank, size);
}
/* One grid per guidance scale of sample.cfg, seed run.seed, rows = classes
 * and sample.per_class columns (g->B = fm_build_grid_batch(FM_NUM_CLASSES
 * * per_class) on the ranks that draw: fm_generator_grids_mine; g is not used
 * on the others), each drawn by one rank as fm_generator_grid would, gathered and
 * written by rank 0: RUN/samples/<tag>-<step>-w<w>.png; logs each file. The
 * ranks agree on errors after drawing and after writing. Collective. */
int fm_generator_write_grids(fm_generator *g, const fm_config *c, const fm_world *w, const char *tag, int64_t step,
                             fm_err *e);
/* fm_generator_load(g, c, NULL, ...) on the ranks that pass has != 0 (the
 * others pass a g they did not initialise), then the ranks compare: a rank
 * that could not load, or found another flow or VAE checkpoint step than the
 * lowest loading rank (a run directory not shared by the nodes, or not in
 * sync), stops every
 * rank. *step <- that rank's step, on every rank. Collective. */
int fm_generator_load_all(fm_generator *g, const fm_config *c, const fm_world *w, int has, int64_t *step,
                          fm_err *e);

#endif
