/* stage_sample.c - final grids from the flow's EMA weights, one per guidance
 * scale: RUN/samples/sample-<step>-w<w>.png (reflow-sample-* with
 * sample.weights: reflow). Grid k is drawn by rank k mod
 * the rank count (fm_generator_write_grids), rank 0 writes them; the stage is
 * skipped when rank 0 finds every grid. */
#include <stdio.h>
#include <string.h>
#include <unistd.h>

#include "fm/generate.h"
#include "fm/log.h"
#include "fm/pipeline.h"

int fm_stage_sample(fm_pipeline *P, fm_err *e)
{
    const fm_config *c = P->cfg;
    const fm_world *w = P->world;
    const int draws = fm_generator_grids_mine(c, w->rank, w->size) > 0;
    fm_generator g = { 0 };
    int rc = draws ? fm_generator_init(&g, c, &P->dnn, fm_build_grid_batch(FM_NUM_CLASSES * c->sample.per_class),
                                       (fm_sampler_kind)c->sample.sampler, c->sample.steps, e)
                   : FM_OK;
    rc = fm_batches_agree(w, rc, "sample: building the generator", e);
    int64_t step = 0;
    if (rc == FM_OK)
        rc = fm_generator_load_all(&g, c, w, draws, &step, e);
    const char *tag = c->sample.weights == FM_WEIGHTS_REFLOW ? "reflow-sample" : "sample"; /* the grids' names */
    int missing = 0; /* rank 0 looks, every rank learns */
    for (int k = 0; rc == FM_OK && w->rank == 0 && k < c->sample.cfg.n; k++) {
        char name[128], path[4300];
        snprintf(name, sizeof name, "samples/%s-%08lld-w%g.png", tag, (long long)step, c->sample.cfg.v[k]);
        fm_run_path(P, path, sizeof path, name);
        missing += access(path, F_OK) != 0;
    }
    if (rc == FM_OK)
        rc = fm_world_max_int(w, &missing, e);
    if (rc == FM_OK && !missing)
        fm_info("sample: done (grids of step %lld exist)", (long long)step);
    else if (rc == FM_OK)
        rc = fm_generator_write_grids(&g, c, w, tag, step, e);
    fm_generator_free(&g);
    return rc;
}
