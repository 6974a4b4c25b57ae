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
#include "fm/files.h"
#include "fm/metrics.h"
#include "fm/status.h"
#include "fm/world.h"

typedef struct fm_pipeline {
    const fm_config *cfg;     /* what the stages run with (fm_config_apply_world of given) */
    const fm_config *given;   /* as resolved from the file and --set: recorded in config.yaml and checkpoints */
    char *config_text;        /* given as YAML */
    const fm_world *world;
    fm_dnn dnn;
    fm_metrics metrics;       /* open on rank 0 */
    const fm_dataset *train, *test;
    int force_eval;           /* `fmtrain eval`: recompute eval.json even if it exists */
    int lock_fd;              /* rank 0: the run directory's lock (files.h), held until the end; else -1 */
} fm_pipeline;

/* Create and lock the run directory (rank 0: a second fmtrain on the same
 * directory is refused, exit 2), remove the temporary files of dead runs,
 * write config.yaml, and run the stages of cfg->run.stages in order. */
int fm_pipeline_run(const fm_config *cfg, const fm_dataset *train, const fm_dataset *test, const fm_world *w,
                    int force_eval, fm_err *e);

/* What run.precision p means on this CPU alone: auto is bf16 when the CPU has
 * AVX512-BF16, else fp32 (a run then agrees over its ranks: fp32 if any rank
 * lacks it); fp32 and bf16 are themselves, and with warn an explicit bf16 on
 * a CPU without AVX512-BF16 logs a warning that it will be emulated. */
fm_precision fm_precision_here(fm_precision p, int warn);

int fm_stage_vae(fm_pipeline *P, fm_err *e);
int fm_stage_encode(fm_pipeline *P, fm_err *e);
int fm_stage_guide(fm_pipeline *P, fm_err *e);
int fm_stage_flow(fm_pipeline *P, fm_err *e);
int fm_stage_reflow(fm_pipeline *P, fm_err *e);
int fm_stage_sample(fm_pipeline *P, fm_err *e);
int fm_stage_eval(fm_pipeline *P, fm_err *e);

/* Shared by the stages. */
#define FM_LATENTS_FILE "latents.safetensors"
/* path <- run_dir/name */
void fm_run_path(const fm_pipeline *P, char *path, size_t n, const char *name);

#endif
