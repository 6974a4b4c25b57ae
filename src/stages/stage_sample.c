/* stage_sample.c - final grids from the flow's EMA weights, one per guidance
 * scale: RUN/samples/sample-<step>-w<w>.png. Rank 0 samples; the stage is
 * skipped when every grid exists. */
#include <stdio.h>
#include <string.h>
#include <unistd.h>

#include "fm/generate.h"
#include "fm/log.h"
#include "fm/pipeline.h"

int fm_stage_sample(fm_pipeline *P, fm_err *e)
{
    const fm_config *c = P->cfg;
    if (P->world->rank != 0)
        return fm_world_barrier(P->world, e);
    fm_generator g;
    int rc = fm_generator_init(&g, c, &P->dnn, FM_NUM_CLASSES * c->sample.per_class, (fm_sampler_kind)c->sample.sampler,
                               c->sample.steps, e);
    int64_t step = 0;
    if (rc == FM_OK)
        rc = fm_generator_load(&g, c, NULL, &step, e);
    int missing = 0;
    for (int k = 0; rc == FM_OK && k < c->sample.cfg.n; k++) {
        char name[128], path[4300];
        snprintf(name, sizeof name, "samples/sample-%08lld-w%g.png", (long long)step, c->sample.cfg.v[k]);
        fm_run_path(P, path, sizeof path, name);
        missing += access(path, F_OK) != 0;
    }
    if (rc == FM_OK && !missing)
        fm_info("sample: done (grids of step %lld exist)", (long long)step);
    else if (rc == FM_OK)
        rc = fm_generator_write_grids(&g, c, "sample", step, e);
    if (g.B)
        fm_generator_free(&g);
    int rc2 = fm_world_barrier(P->world, e);
    return rc != FM_OK ? rc : rc2;
}
