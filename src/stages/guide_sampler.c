/* guide_sampler.c - the trained latent classifier as the samplers'
 * classifier guidance (see guide_sampler.h). */
#include "fm/guide_sampler.h"

#include <stdlib.h>
#include <string.h>

#include "fm/build.h"
#include "fm/ckpt.h"

/* fm_logp_grad_fn: grad_x log p_t(y | x) from the classifier at time t. */
static int grad_logp(void *ctx, const float *x, double t, const int32_t *y, int n, float *grad, fm_err *e)
{
    fm_guide_sampler *gs = ctx;
    if (n != gs->model.n)
        return fm_fail(e, FM_ERR_INTERNAL, "classifier guidance: %d rows for a classifier of %d", n, gs->model.n);
    for (int i = 0; i < n; i++)
        gs->t[i] = (float)t;
    return fm_guide_grad_logp(&gs->model, x, gs->t, y, grad, NULL, e);
}

int fm_guide_sampler_init(fm_guide_sampler *gs, const fm_config *c, fm_dnn *d, int B, fm_err *e)
{
    memset(gs, 0, sizeof *gs);
    fm_guide_cfg gc;
    fm_build_guide_cfg(c, &gc);
    const long dim = (long)gc.size * gc.size * gc.channels;
    int rc = fm_params_init(&gs->p, 64, (size_t)4 << 20, 0, e);
    if (rc == FM_OK)
        rc = fm_guide_init(&gs->model, d, &gs->p, &gc, B, 1, e);
    if (rc == FM_OK && !(gs->t = malloc(((size_t)B + (size_t)B * dim) * sizeof(float))))
        rc = fm_fail(e, FM_ERR_INTERNAL, "out of memory for classifier guidance of %d samples", B);
    if (rc == FM_OK) {
        fm_ckpt_group grp = { "", &gs->p, gs->p.data };
        fm_ckpt ck;
        rc = fm_ckpt_load_latest(c->run.out, "guide", &grp, 1, NULL, 0, &ck, e);
        if (rc == FM_CKPT_NONE)
            rc = fm_fail(e, FM_ERR_DATA, "%s/ckpt: no guide checkpoint, but sample.classifier_scale is %g: run the "
                         "guide stage first (add guide to run.stages) or set sample.classifier_scale: 0",
                         c->run.out, c->sample.classifier_scale);
        else if (rc == FM_OK) {
            gs->step = ck.step;
            fm_ckpt_close(&ck);
        }
    }
    if (rc != FM_OK) {
        fm_guide_sampler_free(gs);
        return rc;
    }
    gs->delta = gs->t + B;
    gs->cg = (fm_cguide){ grad_logp, gs, (float)c->sample.classifier_scale, gs->delta };
    return FM_OK;
}

void fm_guide_sampler_free(fm_guide_sampler *gs)
{
    if (gs->model.n)
        fm_guide_free(&gs->model);
    fm_params_free(&gs->p);
    free(gs->t); /* with delta */
    memset(gs, 0, sizeof *gs);
}
