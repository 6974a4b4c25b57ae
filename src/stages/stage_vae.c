/* stage_vae.c - train the VAE on the training images. */
#include <stdlib.h>
#include <string.h>

#include "fm/build.h"
#include "fm/loader.h"
#include "fm/log.h"
#include "fm/pipeline.h"
#include "fm/trainer.h"
#include "fm/vae.h"

int fm_stage_vae(fm_pipeline *P, fm_err *e)
{
    const fm_config *c = P->cfg;
    const fm_train_config *tc = &c->vae.train;
    const int D = 32 * 32;
    int local = tc->batch_size / P->world->size;
    fm_params p;
    fm_vae v = { 0 };
    fm_trainer t = { 0 };
    fm_loader L = { 0 };
    float *xb = NULL;
    FM_TRY(fm_build_vae_params(&p, e));
    fm_vae_cfg vc;
    fm_build_vae_cfg(c, &vc);
    p.seed = (uint64_t)c->run.seed;
    int rc = fm_vae_init(&v, &P->dnn, &p, &vc, local, e);
    if (rc == FM_OK)
        rc = fm_trainer_init(&t, "vae", tc, c, P->config_text, P->world, &p, &P->metrics, NULL, 0, e);
    if (rc != FM_OK)
        goto out;
    t.flops_per_step = fm_vae_flops(&v);
    if ((rc = fm_trainer_resume(&t, e)) != FM_OK)
        goto out;
    if (t.step >= tc->steps) {
        fm_info("vae: done (checkpoint at step %lld)", (long long)t.step);
        goto out;
    }
    fm_info("vae: %zu parameters, %d steps from step %lld, global batch %d", p.numel, tc->steps,
            (long long)t.step, tc->batch_size);
    rc = fm_loader_init(&L, P->train->images, P->train->labels, P->train->n, D, tc->batch_size, P->world->rank,
                        P->world->size, (uint64_t)c->run.seed ^ 0x56414500u, e);
    xb = malloc((size_t)local * D * sizeof(float));
    if (rc == FM_OK && !xb)
        rc = fm_fail(e, FM_ERR_INTERNAL, "out of memory for a VAE batch");
    while (rc == FM_OK && t.step < tc->steps) {
        fm_trainer_begin(&t);
        fm_loader_batch(&L, t.step, xb, NULL, NULL);
        fm_vae_loss loss;
        rc = fm_vae_forward(&v, xb, (uint64_t)c->run.seed, (uint64_t)t.step, (uint64_t)L.local_first, &loss, e);
        if (rc == FM_OK)
            rc = fm_vae_backward(&v, xb, e);
        if (rc == FM_OK)
            rc = fm_trainer_end(&t, loss.total, e);
    }
out:
    free(xb);
    fm_loader_free(&L);
    fm_trainer_free(&t);
    fm_vae_free(&v);
    fm_params_free(&p);
    return rc;
}
