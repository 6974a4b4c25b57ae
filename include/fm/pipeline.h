/* pipeline.h - the stages of a run (DESIGN §1) and what they share.
 *
 *   vae     train the VAE                      -> ckpt/vae-*.safetensors
 *   encode  latents of the training set        -> latents.safetensors
 *   flow    train the flow model (CFM + CFG)   -> ckpt/flow-*.safetensors, samples/flow-*.png
 *   sample  grids from the final EMA weights   -> samples/sample-*-w*.png
 *   eval    classifier accuracy + Fréchet      -> ckpt/classifier-*.safetensors, eval.json
 *
 * Each stage is skipped when its output exists and resumes from its newest
 * valid checkpoint otherwise. Only rank 0 writes into the run directory. */
#ifndef FM_PIPELINE_H
#define FM_PIPELINE_H

#include <stdint.h>

#include "fm/config.h"
#include "fm/dataset.h"
#include "fm/dnn.h"
#include "fm/metrics.h"
#include "fm/status.h"
#include "fm/world.h"

typedef struct fm_pipeline {
    const fm_config *cfg;
    char *config_text;        /* the resolved config as YAML */
    const fm_world *world;
    fm_dnn dnn;
    fm_metrics metrics;       /* open on rank 0 */
    const fm_dataset *train, *test;
    int force_eval;           /* `fmtrain eval`: recompute eval.json even if it exists */
} fm_pipeline;

/* Create the run directory (rank 0), write config.yaml, and run the stages
 * of cfg->run.stages in order. */
int fm_pipeline_run(const fm_config *cfg, const fm_dataset *train, const fm_dataset *test, const fm_world *w,
                    int force_eval, fm_err *e);

int fm_stage_vae(fm_pipeline *P, fm_err *e);
int fm_stage_encode(fm_pipeline *P, fm_err *e);
int fm_stage_flow(fm_pipeline *P, fm_err *e);
int fm_stage_sample(fm_pipeline *P, fm_err *e);
int fm_stage_eval(fm_pipeline *P, fm_err *e);

/* Shared by the stages. */
#define FM_LATENTS_FILE "latents.safetensors"
/* path <- run_dir/name */
void fm_run_path(const fm_pipeline *P, char *path, size_t n, const char *name);
/* Write text to path atomically (temporary file, fsync, rename); FM_ERR_IO. */
int fm_write_text_atomic(const char *path, const char *text, fm_err *e);
/* mkdir -p (FM_ERR_IO naming the directory). */
int fm_mkdir_p(const char *dir, fm_err *e);
/* One grid per guidance scale of sample.cfg from the generator's weights:
 * RUN/samples/<tag>-<step>-w<w>.png, rows = classes, sample.per_class columns. */
struct fm_generator;
int fm_flow_write_grids(fm_pipeline *P, struct fm_generator *g, const char *tag, int64_t step, fm_err *e);
/* Load the newest valid flow checkpoint's weights ("ema." if sample.ema)
 * and latent scale into a generator (and its VAE decoder). Sets *step. */
int fm_generator_from_run(fm_pipeline *P, struct fm_generator *g, int64_t *step, fm_err *e);
/* Write the grid of g->images-like rows x cols images to path (rank 0). */
int fm_write_sample_grid(const char *path, const float *images, int rows, int cols, fm_err *e);

#endif
