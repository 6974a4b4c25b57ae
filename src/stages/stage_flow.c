/* stage_flow.c - train the velocity model with the guided CFM loss.
 *
 * Data: the scaled latents of the encode stage (or the images themselves
 * when flow.latent is false). Step s: the loader's global batch s, then
 * fm_cfm_batch draws t, the noise and the label dropout keyed by (seed, s,
 * global sample index), the model predicts u, the loss is the mean squared
 * error to the CFM target. Every flow.sample_every steps and at the end,
 * one grid per guidance scale from the EMA weights: grid k drawn by rank k
 * mod the rank count, written by rank 0 (fm_generator_write_grids). With
 * run.profile_steps > 0 the trainer's profile table times the model's layers
 * and the parts of the step for that many steps (trainer.h). */
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "fm/accum.h"
#include "fm/build.h"
#include "fm/generate.h"
#include "fm/latent_set.h"
#include "fm/latents.h"
#include "fm/loader.h"
#include "fm/log.h"
#include "fm/loss.h"
#include "fm/path.h"
#include "fm/pipeline.h"
#include "fm/signals.h"
#include "fm/trainer.h"

_Static_assert(FM_LATENTS_CLASSES == FM_NUM_CLASSES, "the latents' labels are the flow's classes");

/* A preemption seen while drawing the grids of step t->step (every rank
 * agreed on it): its checkpoint, then FM_PREEMPTED. Collective. */
static int save_preempted(fm_trainer *t, const fm_train_config *tc, fm_err *e)
{
    const int saved = t->step == tc->steps || (tc->ckpt_every > 0 && t->step % tc->ckpt_every == 0);
    if (!saved)
        FM_TRY(fm_trainer_save(t, e));
    /* the trainer's own wording, so that logs and scripts see one message */
    const int sig = fm_stop_requested();
    return fm_fail(e, FM_PREEMPTED, "flow: stopped by signal %d after step %lld: checkpoint written; run the same "
                   "command again (or let Slurm requeue the job) to resume (the signal came while drawing the grids; "
                   "signal 0: another rank's)",
                   sig, (long long)t->step);
}

int fm_stage_flow(fm_pipeline *P, fm_err *e)
{
    const fm_config *c = P->cfg;
    const fm_train_config *tc = &c->flow.train;
    const fm_world *w = P->world;
    int local = tc->batch_size / w->size; /* the micro-batch on this rank */
    const int accum = c->flow.accum_steps, big = local * accum; /* the step's rows on this rank */
    fm_latent_set data = { 0 };
    fm_params p;
    fm_flow_model model = { 0 };
    fm_trainer t = { 0 };
    fm_accum acc = { 0 };
    fm_loader L = { 0 };
    fm_generator gen = { 0 };
    float *buf = NULL;
    FM_TRY(fm_build_flow_params(&p, c, e));
    int rc = fm_build_flow_model(&model, c, &P->dnn, &p, local, e);
    if (rc == FM_OK)
        rc = fm_trainer_init(&t, "flow", tc, c, P->config_text, w, &p, &P->metrics, &c->flow.ema_decay,
                             c->flow.ema_warmup, e);
    /* the weights of the grids (sample.ema): an EMA's index, or -1 for the trained weights */
    double rate = 0;
    const int ema = fm_config_sample_ema(c, &rate) ? fm_trainer_ema_index(&t, rate) : -1;
    if (rc == FM_OK)
        rc = fm_accum_init(&acc, &p, accum, fm_gradsync_ready, &t.sync, e);
    if (rc == FM_OK)
        rc = fm_trainer_profile_init(&t, c->run.profile_steps, e);
    if (rc == FM_OK)
        rc = fm_trainer_trace_init(&t, c->run.schedule_steps, e);
    if (rc != FM_OK)
        goto out;
    long D = model.dim;
    data.scale = 1.0f;
    if (c->flow.latent) {
        if ((rc = fm_latent_set_load(P, model.side, model.ch, &data, e)) != FM_OK)
            goto out;
    } else {
        data.x = P->train->images;
        data.y = P->train->labels;
        data.n = P->train->n;
    }
    if ((rc = fm_trainer_add_extra(&t, "latent_scale", &data.scale, 1, e)) != FM_OK)
        goto out;
    t.global_batch = tc->batch_size * accum;
    /* reduce buckets during the last micro-batch's backward */
    fm_flow_model_set_grad_hook(&model, fm_accum_hook, &acc);
    float scale_now = data.scale;
    t.flops_per_step = 3 * fm_flow_model_flops(&model);
    if ((rc = fm_trainer_resume(&t, e)) != FM_OK)
        goto out;
    if (data.scale != scale_now) {
        rc = fm_fail(e, FM_ERR_DATA, "the flow checkpoint was trained on latents of scale %g, %s has %g: "
                     "delete the flow checkpoints or the latents", data.scale, FM_LATENTS_FILE, scale_now);
        goto out;
    }
    if (t.step >= tc->steps) {
        fm_info("flow: done (checkpoint at step %lld)", (long long)t.step);
        goto out;
    }
    fm_info("flow: %s with %zu parameters on %dx%dx%d %s, %d steps from step %lld, global batch %d, "
            "%d micro-batch%s, activations %.1f MiB",
            fm_model_names[c->flow.model], p.numel, model.side, model.side, model.ch,
            c->flow.latent ? "latents" : "pixels", tc->steps, (long long)t.step, tc->batch_size * accum,
            accum, accum == 1 ? "" : "es", fm_flow_model_activation_bytes(&model) / 1048576.0);
    rc = fm_loader_init(&L, data.x, data.y, data.n, (int)D, tc->batch_size * accum, w->rank, w->size,
                        (uint64_t)c->run.seed, e);
    if (rc != FM_OK)
        goto out;
    /* grid k is drawn by rank k mod size (fm_generator_write_grids) */
    const int grids = c->flow.sample_every > 0 && c->sample.cfg.n > 0;
    const int draws = grids && fm_generator_grids_mine(c, w->rank, w->size) > 0;
    if (draws) {
        rc = fm_generator_init(&gen, c, &P->dnn, fm_build_grid_batch(FM_NUM_CLASSES * c->sample.per_class),
                               (fm_sampler_kind)c->sample.sampler, c->sample.steps, e);
        if (rc == FM_OK)
            rc = fm_generator_load_vae(&gen, c->run.out, data.scale, e);
    }
    if (grids && (rc = fm_batches_agree(w, rc, "flow: building the grids' generator", e)) != FM_OK)
        goto out;
    if (grids && (rc = fm_generator_agree_vae(&gen, w, c->run.out, draws, rc, e)) != FM_OK)
        goto out; /* the drawing ranks decode with one VAE */
    /* one block for the step's buffers: z, x_t, target [big, D]; u, du [local, D]; t; labels; indices
     * [big]: the step's draws are those of one batch of big rows, the micro-batches slice them */
    size_t per = (size_t)local * D, bigper = (size_t)big * D;
    buf = malloc((3 * bigper + 2 * per + big) * sizeof(float) + 2 * (size_t)big * sizeof(int32_t) +
                 (size_t)big * sizeof(uint64_t));
    if (!buf) {
        rc = fm_fail(e, FM_ERR_INTERNAL, "out of memory for a flow batch");
        goto out;
    }
    float *z = buf, *xt = z + bigper, *target = xt + bigper, *u = target + bigper, *du = u + per, *tt = du + per;
    int32_t *y = (int32_t *)(tt + big), *yd = y + big;
    uint64_t *gidx = (uint64_t *)(yd + big);
    fm_cfm_cfg cfm = { .path = (fm_path_kind)c->flow.path,
                       .time = { (fm_time_kind)c->flow.t_dist, (float)c->flow.t_mean, (float)c->flow.t_std },
                       .cfg_dropout = (float)c->flow.cfg_dropout,
                       .num_classes = FM_NUM_CLASSES,
                       .target = c->flow.target };
    while (rc == FM_OK && t.step < tc->steps) {
        fm_trainer_begin(&t);
        fm_profile *pr = t.prof; /* NULL unless this step is profiled */
        fm_flow_model_set_profile(&model, pr);
        FM_PROF_VOID(pr, "step", "data", "data", FM_PROF_STEP, 0, fm_loader_batch(&L, t.step, z, y, gidx));
        double t0 = FM_PROF_START(pr);
        rc = fm_cfm_batch(&cfm, z, y, gidx, big, D, (uint64_t)c->run.seed, (uint64_t)t.step, tt, xt, target, yd, e);
        FM_PROF_STOP(pr, t0, "step", "cfm_batch", "cfm", FM_PROF_STEP, 0);
        double loss = 0;
        for (int k = 0; rc == FM_OK && k < accum; k++) { /* mean of equal micro-batches' means */
            const size_t at = (size_t)k * per;
            rc = fm_flow_model_forward(&model, xt + at, tt + (size_t)k * local, yd + (size_t)k * local, u, e);
            if (rc != FM_OK)
                break;
            double micro_loss;
            FM_PROF_VOID(pr, "step", "mse", "loss", FM_PROF_STEP, 0, {
                micro_loss = fm_mse_forward(u, target + at, (long)per);
                fm_mse_backward(u, target + at, (long)per, 1.0f / (float)accum, du);
            });
            loss += micro_loss;
            fm_accum_micro(&acc, k);
            if (k == accum - 1)
                fm_trainer_backward_begins(&t);
            if ((rc = fm_flow_model_backward(&model, du, e)) == FM_OK)
                fm_accum_backward_done(&acc);
        }
        if (rc != FM_OK)
            break;
        loss /= accum;
        if ((rc = fm_trainer_end(&t, loss, e)) != FM_OK)
            break;
        const int grid_now = grids && (t.step % c->flow.sample_every == 0 || t.step == tc->steps);
        /* ZeRO: every rank's shard of the EMA, whole, into the spent gradient
         * arena on every rank (the weights are whole everywhere) */
        if (grid_now && ema >= 0 && t.sync.zero && (rc = fm_trainer_ema_whole(&t, ema, p.grad, e)) != FM_OK)
            break;
        if (grid_now) {
            if (gen.B)
                fm_generator_set_flow_weights(&gen, ema < 0 ? p.data : t.sync.zero ? p.grad : t.ema[ema].w, p.numel);
            rc = fm_generator_write_grids(&gen, c, w, "flow", t.step, e);
            if (rc == FM_PREEMPTED) /* stopped while drawing: save the step's state, unless saved already */
                rc = save_preempted(&t, tc, e);
        }
    }
out:
    free(buf);
    fm_generator_free(&gen);
    fm_loader_free(&L);
    fm_trainer_free(&t);
    fm_accum_free(&acc);
    if (model.batch) {
        fm_flow_model_set_profile(&model, NULL); /* the table goes with the trainer */
        fm_flow_model_free(&model);
    }
    fm_params_free(&p);
    if (c->flow.latent) {
        fm_latent_set_free(&data, rc == FM_OK);
    }
    return rc;
}
