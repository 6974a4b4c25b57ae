/* guide_sampler.h - the guide stage's classifier as the samplers' classifier
 * guidance (cguide.h): built for B rows, its newest "guide-*" checkpoint of
 * the run loaded, and the hook fm_sampler_cfg.cguide points to. */
#ifndef FM_GUIDE_SAMPLER_H
#define FM_GUIDE_SAMPLER_H

#include <stdint.h>

#include "fm/cguide.h"
#include "fm/config.h"
#include "fm/dnn.h"
#include "fm/guide.h"
#include "fm/params.h"
#include "fm/status.h"

typedef struct fm_guide_sampler {
    fm_params p;
    fm_guide model; /* B rows, with the input gradient */
    fm_cguide cg;   /* scale sample.classifier_scale */
    float *t;       /* [B] the time of one evaluation */
    float *delta;   /* [B, dim] the correction (cg.delta) */
    int64_t step;   /* the guide checkpoint's step */
} fm_guide_sampler;

/* Build for B rows of c's flow input and load the newest guide checkpoint
 * of c->run.out; FM_ERR_DATA naming the run when there is none. On failure
 * gs is freed. */
int fm_guide_sampler_init(fm_guide_sampler *gs, const fm_config *c, fm_dnn *d, int B, fm_err *e);
void fm_guide_sampler_free(fm_guide_sampler *gs);

#endif
