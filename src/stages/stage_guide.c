/* stage_guide.c - train the noise-conditioned latent classifier of
 * classifier guidance (guide.h, cguide.h).
 *
 * Data: the flow's training set (the encode stage's scaled latents, or the
 * images when flow.latent is false). Step s: the loader's global batch s,
 * then fm_cfm_batch on the flow's path (flow.path) draws t ~ U(0, 1) and the
 * noise keyed by (run.seed ^ GUIDE_SEED, s, global sample index), so the
 * classifier sees x_t = alpha_t x1 + beta_t x0 at every t the samplers use;
 * the loss is the cross-entropy of the sample's class. Data parallel over the
 * ranks (trainer.h); checkpoints "guide-<step>"; skipped when the final
 * checkpoint exists. */
#include <stdlib.h>

#include "fm/build.h"
#include "fm/guide.h"
#include "fm/latent_set.h"
#include "fm/loader.h"
#include "fm/log.h"
#include "fm/path.h"
#include "fm/pipeline.h"
#include "fm/trainer.h"

#define GUIDE_SEED 0x47554944u /* "GUID": draws apart from the flow's */

int fm_stage_guide(fm_pipeline *P, fm_err *e)
{
    const fm_config *c = P->cfg;
    const fm_train_config *tc = &c->guide.train;
    const fm_world *w = P->world;
    const int local = tc->batch_size / w->size;
    fm_guide_cfg gc;
    fm_build_guide_cfg(c, &gc);
    const long D = (long)gc.size * gc.size * gc.channels;
    fm_params p = { 0 };
    fm_guide g = { 0 };
    fm_trainer t = { 0 };
    fm_loader L = { 0 };
    fm_latent_set data = { 0 };
    float *buf = NULL;
    int rc = fm_params_init(&p, 64, (size_t)4 << 20, (uint64_t)c->run.seed ^ GUIDE_SEED, e);
    if (rc != FM_OK)
        return rc;
    rc = fm_guide_init(&g, &P->dnn, &p, &gc, local, 1, e);
    if (rc == FM_OK)
        rc = fm_trainer_init(&t, "guide", tc, c, P->config_text, w, &p, &P->metrics, NULL, 0, e);
    if (rc == FM_OK) {
        t.flops_per_step = fm_classifier_flops(&g.cls);
        rc = fm_trainer_resume(&t, e);
    }
    if (rc != FM_OK || t.step >= tc->steps) {
        if (rc == FM_OK)
            fm_info("guide: done (checkpoint at step %lld)", (long long)t.step);
        goto out;
    }
    const float *x = P->train->images;
    const int32_t *y = P->train->labels;
    int n = P->train->n;
    if (c->flow.latent) {
        if ((rc = fm_latent_set_load(P, gc.size, gc.channels, &data, e)) != FM_OK)
            goto out;
        x = data.x, y = data.y, n = data.n;
    }
    if (w->rank == 0)
        fm_info("guide: latent classifier (%ld parameters) on %dx%dx%d %s at flow times t, %s path: %d steps from "
                "%lld, batch %d", (long)p.numel, gc.size, gc.size, gc.channels, c->flow.latent ? "latents" : "pixels",
                fm_path_names[c->flow.path], tc->steps, (long long)t.step, tc->batch_size);
    rc = fm_loader_init(&L, x, y, n, (int)D, tc->batch_size, w->rank, w->size, (uint64_t)c->run.seed ^ GUIDE_SEED, e);
    /* one block: z, x_t, the path's target (unused) [local, D]; t [local]; labels in and out; indexes */
    const size_t nd = (size_t)local * (size_t)D;
    if (rc == FM_OK && !(buf = malloc((3 * nd + local) * sizeof(float) + 2 * (size_t)local * sizeof(int32_t) +
                                      (size_t)local * sizeof(uint64_t))))
        rc = fm_fail(e, FM_ERR_INTERNAL, "guide: out of memory for a batch of %d", local);
    if (rc != FM_OK)
        goto out;
    float *z = buf, *xt = z + nd, *u = xt + nd, *tt = u + nd;
    int32_t *yb = (int32_t *)(tt + local), *yd = yb + local;
    uint64_t *gidx = (uint64_t *)(yd + local);
    const fm_cfm_cfg cfm = { .path = (fm_path_kind)c->flow.path, .time = { FM_TIME_UNIFORM, 0, 1 },
                             .cfg_dropout = 0.0f, .num_classes = gc.num_classes };
    const uint64_t seed = (uint64_t)c->run.seed ^ GUIDE_SEED;
    while (rc == FM_OK && t.step < tc->steps) {
        fm_trainer_begin(&t);
        fm_loader_batch(&L, t.step, z, yb, gidx);
        double loss = 0;
        rc = fm_cfm_batch(&cfm, z, yb, gidx, local, D, seed, (uint64_t)t.step, tt, xt, u, yd, e);
        if (rc == FM_OK)
            rc = fm_guide_forward(&g, xt, tt, NULL, e);
        if (rc == FM_OK)
            rc = fm_guide_loss(&g, yb, &loss, NULL, e);
        if (rc == FM_OK)
            rc = fm_guide_backward(&g, yb, e);
        if (rc == FM_OK)
            rc = fm_trainer_end(&t, loss, e);
    }
out:
    free(buf);
    fm_loader_free(&L);
    fm_trainer_free(&t);
    fm_guide_free(&g);
    fm_params_free(&p);
    if (c->flow.latent)
        fm_latent_set_free(&data, rc == FM_OK);
    return rc;
}
