/* stage_reflow.c - rectified flow (seed 004): a copy of the flow model
 * fine-tuned on its own (noise, sample) couplings, so that few ODE steps do.
 *
 * 1. Couplings: reflow.pairs samples from the flow's EMA weights with CFG at
 *    reflow.cfg (reflow.sampler, reflow.sampler_steps); sample i has class
 *    i mod 10 and the noise x0 of (seed ^ REFLOW_SEED, i) (fm_sample_noise),
 *    x1 is where the ODE takes it. The batches of eval.batch_size go
 *    round-robin over the ranks (batchsplit.h), each drawn as one rank alone
 *    draws it: the couplings are the same bits for any rank count. Rank 0
 *    writes them to RUN/reflow-pairs.safetensors ("pairs" [N, 2, D]: x1 then
 *    x0, in the flow's scaled-latent space); a rerun reads that file.
 * 2. Fine-tuning: the flow model, initialised from the flow's EMA weights,
 *    trained data parallel with the CFM loss on the straight paths
 *    x_t = t x1 + (1 - t) x0 (target x1 - x0; path.h: t = 0 is noise), labels
 *    dropped to null with probability reflow.cfg_dropout; checkpoints
 *    "reflow-*" with an EMA, which sample.weights: reflow and eval's table
 *    use. Resumed from its checkpoints; done when the last one exists. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "fm/batchsplit.h"
#include "fm/build.h"
#include "fm/ckpt.h"
#include "fm/generate.h"
#include "fm/loader.h"
#include "fm/log.h"
#include "fm/loss.h"
#include "fm/path.h"
#include "fm/pipeline.h"
#include "fm/safetensors.h"
#include "fm/signals.h"
#include "fm/timer.h"
#include "fm/trainer.h"

#define PAIRS_FILE "reflow-pairs.safetensors"
#define REFLOW_SEED 0x5245464cull /* "REFL": the couplings' noise */

/* The couplings, on every rank: rows [n, 2D] (x1 then x0), labels [n]. */
typedef struct pairs {
    float *rows;
    int32_t *y;
    int n;
    long D;
} pairs;

static void pairs_free(pairs *q)
{
    free(q->rows);
    free(q->y);
    memset(q, 0, sizeof *q);
}

static int pairs_alloc(pairs *q, int n, long D, fm_err *e)
{
    q->n = n;
    q->D = D;
    q->rows = malloc((size_t)n * 2 * D * sizeof(float));
    q->y = malloc((size_t)n * sizeof(int32_t));
    if (!q->rows || !q->y)
        return fm_fail(e, FM_ERR_INTERNAL, "out of memory for %d reflow couplings of %ld values", n, 2 * D);
    for (int i = 0; i < n; i++)
        q->y[i] = i % FM_NUM_CLASSES;
    return FM_OK;
}

/* The generator of the couplings: the flow's EMA weights, whatever sample.ema
 * and sample.weights say. */
static void coupling_config(const fm_config *c, fm_config *g)
{
    *g = *c;
    snprintf(g->sample.ema, sizeof g->sample.ema, "true"); /* the first flow.ema_decay rate */
    g->sample.weights = FM_WEIGHTS_FLOW;
}

/* Draw the couplings (every rank its batches), gathered into q on rank 0.
 * Collective. */
static int draw_pairs(fm_pipeline *P, pairs *q, int64_t *flow_step, fm_err *e)
{
    const fm_config *c = P->cfg;
    const fm_world *w = P->world;
    const int N = c->reflow.pairs, EB = c->eval.batch_size / (c->dist.batch == FM_BATCH_PER_RANK ? w->size : 1);
    const int nb = (N + EB - 1) / EB, own = fm_batches_mine(nb, w->rank, w->size);
    fm_config *gc = malloc(sizeof *gc);
    fm_generator g = { 0 };
    float *mine = NULL, *all = NULL;
    int rc = gc ? FM_OK : fm_fail(e, FM_ERR_INTERNAL, "out of memory for the configuration");
    if (rc == FM_OK) {
        coupling_config(c, gc);
        if (own)
            rc = fm_generator_init(&g, gc, &P->dnn, EB, (fm_sampler_kind)c->reflow.sampler, c->reflow.sampler_steps, e);
    }
    rc = fm_batches_agree(w, rc, "reflow: building the coupling generator", e);
    if (rc == FM_OK)
        rc = fm_generator_load_all(&g, gc, w, own > 0, flow_step, e);
    const long D = q->D;
    const size_t per = (size_t)EB * 2 * D; /* one batch of rows */
    if (rc == FM_OK) {
        mine = malloc((own ? own : 1) * per * sizeof(float));
        all = w->rank == 0 ? malloc((size_t)nb * per * sizeof(float)) : NULL;
        rc = mine && (w->rank != 0 || all) ? FM_OK : fm_fail(e, FM_ERR_INTERNAL, "rank %d: out of memory", w->rank);
        rc = fm_batches_agree(w, rc, "reflow: set-up", e);
    }
    int32_t *y = own ? malloc((size_t)EB * sizeof *y) : NULL;
    if (own && !y && rc == FM_OK)
        rc = fm_fail(e, FM_ERR_INTERNAL, "out of memory for %d labels", EB);
    const uint64_t seed = (uint64_t)c->run.seed ^ REFLOW_SEED;
    const double t0 = fm_now();
    for (int s = 0; rc == FM_OK && s < fm_batches_rounds(nb, w->size); s++) {
        const int j = fm_batches_global(s, w->rank, w->size), first = j * EB;
        int r = FM_OK;
        if (s < own) {
            for (int i = 0; i < EB; i++) /* a last, partial batch runs whole (rows past N are dropped) */
                y[i] = (first + i) % FM_NUM_CLASSES;
            fm_sample_noise(g.x, EB, D, seed, (uint64_t)first);
            float *out = mine + (size_t)s * per;
            for (int i = 0; i < EB; i++) /* x0 */
                memcpy(out + ((size_t)i * 2 + 1) * D, g.x + (size_t)i * D, (size_t)D * sizeof(float));
            r = fm_sample(&g.sampler, fm_flow_model_velocity, &g.model, y, (float)c->reflow.cfg, seed,
                          (uint64_t)first, g.x, e);
            for (int i = 0; r == FM_OK && i < EB; i++) /* x1 */
                memcpy(out + (size_t)i * 2 * D, g.x + (size_t)i * D, (size_t)D * sizeof(float));
        }
        if ((r == FM_OK || r == FM_PREEMPTED) && fm_stop_requested())
            r = fm_fail(e, FM_PREEMPTED, "reflow: stopped by signal %d while drawing the couplings: run the same "
                        "command again to draw them again", fm_stop_requested());
        rc = fm_batches_agree(w, r, "reflow: drawing the couplings", e);
        if (rc == FM_OK && w->rank == 0 && (s + 1) % 10 == 0)
            fm_info("reflow: drew %d of %d batches of couplings (%.1fs)", (s + 1) * w->size < nb ? (s + 1) * w->size : nb,
                    nb, fm_now() - t0);
    }
    if (rc == FM_OK)
        rc = fm_batches_gather(w, mine, nb, per, all, e);
    if (rc == FM_OK && w->rank == 0) {
        memcpy(q->rows, all, (size_t)N * 2 * D * sizeof(float));
        fm_info("reflow: %d couplings at w = %g (%s, %d steps) from the flow's step %lld in %.1fs on %d rank%s", N,
                c->reflow.cfg, fm_sampler_names[c->reflow.sampler], c->reflow.sampler_steps, (long long)*flow_step,
                fm_now() - t0, w->size, w->size > 1 ? "s" : "");
    }
    free(y);
    free(mine);
    free(all);
    fm_generator_free(&g);
    free(gc);
    return rc;
}

static int write_pairs(const fm_pipeline *P, const pairs *q, int64_t flow_step, fm_err *e)
{
    const fm_config *c = P->cfg;
    char path[4200], step[32], w[32], steps[32], n[32];
    fm_run_path(P, path, sizeof path, PAIRS_FILE);
    snprintf(step, sizeof step, "%lld", (long long)flow_step);
    snprintf(w, sizeof w, "%g", c->reflow.cfg);
    snprintf(steps, sizeof steps, "%d", c->reflow.sampler_steps);
    snprintf(n, sizeof n, "%d", q->n);
    const fm_st_tensor t = { "pairs", q->rows, FM_F32, 3, { q->n, 2, q->D } };
    const fm_st_meta m[] = { { "flow_step", step }, { "cfg", w }, { "sampler", fm_sampler_names[c->reflow.sampler] },
                             { "sampler_steps", steps }, { "pairs", n }, { "labels", "i mod 10" } };
    return fm_st_write(path, &t, 1, m, (int)(sizeof m / sizeof *m), e);
}

/* q->rows <- the couplings of RUN/reflow-pairs.safetensors. */
static int read_pairs(const fm_pipeline *P, pairs *q, fm_err *e)
{
    char path[4200];
    fm_run_path(P, path, sizeof path, PAIRS_FILE);
    fm_st_file f;
    FM_TRY(fm_st_read(path, &f, e));
    const fm_st_tensor *t = fm_st_get(&f, "pairs");
    int rc = FM_OK;
    if (!t || t->dtype != FM_F32 || t->ndim != 3 || t->shape[0] != q->n || t->shape[1] != 2 || t->shape[2] != q->D)
        rc = fm_fail(e, FM_ERR_DATA, "%s: no F32 tensor \"pairs\" of shape [%d, 2, %ld] (reflow.pairs and the flow "
                     "model's shape): delete it to draw the couplings again", path, q->n, q->D);
    else
        memcpy(q->rows, t->data, (size_t)q->n * 2 * q->D * sizeof(float));
    fm_st_free(&f);
    return rc;
}

/* The couplings on every rank: read, or drawn and written. Collective. */
static int get_pairs(fm_pipeline *P, pairs *q, fm_err *e)
{
    const fm_world *w = P->world;
    char path[4200];
    fm_run_path(P, path, sizeof path, PAIRS_FILE);
    int have = w->rank == 0 && access(path, F_OK) == 0; /* rank 0 looks, all learn */
    FM_TRY(fm_world_max_int(w, &have, e));
    int rc = FM_OK;
    if (have) {
        if (w->rank == 0) {
            rc = read_pairs(P, q, e);
            if (rc == FM_OK)
                fm_info("reflow: couplings from %s", path);
        }
    } else {
        int64_t flow_step = 0;
        FM_TRY(draw_pairs(P, q, &flow_step, e));
        if (w->rank == 0 && (rc = write_pairs(P, q, flow_step, e)) == FM_OK)
            fm_info("reflow: wrote %s", path);
    }
    FM_TRY(fm_batches_agree(w, rc, "reflow: the couplings", e));
    return fm_world_bcast(w, q->rows, (size_t)q->n * 2 * q->D, e);
}

/* p <- the flow's EMA weights (rank 0; the trainer broadcasts them), *scale
 * <- its latent scale. */
static int load_flow_ema(const fm_pipeline *P, fm_params *p, float *scale, fm_err *e)
{
    if (P->world->rank != 0)
        return FM_OK;
    fm_ckpt_group grp = { "ema.", p, p->data };
    fm_ckpt_extra ex = { "latent_scale", scale, 1, { 1 } };
    fm_ckpt ck;
    int rc = fm_ckpt_load_latest(P->cfg->run.out, "flow", &grp, 1, &ex, 1, &ck, e);
    if (rc == FM_CKPT_NONE)
        return fm_fail(e, FM_ERR_DATA, "%s/ckpt: no flow checkpoint: the reflow stage fine-tunes the trained flow "
                       "(run the flow stage first)", P->cfg->run.out);
    FM_TRY(rc);
    fm_ckpt_close(&ck);
    return FM_OK;
}

/* The fine-tuning on the couplings q. Collective. */
static int finetune(fm_pipeline *P, fm_trainer *t, fm_flow_model *model, const pairs *q, fm_err *e)
{
    const fm_config *c = P->cfg;
    const fm_train_config *tc = &c->reflow.train;
    const fm_world *w = P->world;
    const int local = tc->batch_size / w->size;
    const long D = q->D;
    fm_loader L = { 0 };
    FM_TRY(fm_loader_init(&L, q->rows, q->y, q->n, (int)(2 * D), tc->batch_size, w->rank, w->size,
                          (uint64_t)c->run.seed ^ REFLOW_SEED, e));
    /* one block: the rows [local, 2D]; x_t, target, u, du [local, D]; t; labels, dropped labels; indices */
    const size_t per = (size_t)local * D;
    float *buf = malloc((6 * per + local) * sizeof(float) + 2 * (size_t)local * sizeof(int32_t) +
                        (size_t)local * sizeof(uint64_t));
    int rc = buf ? FM_OK : fm_fail(e, FM_ERR_INTERNAL, "out of memory for a reflow batch");
    float *rows = buf, *xt = rows + 2 * per, *target = xt + per, *u = target + per, *du = u + per, *tt = du + per;
    int32_t *y = (int32_t *)(tt + local), *yd = y + local;
    uint64_t *gidx = (uint64_t *)(yd + local);
    const fm_cfm_cfg cfm = { .path = FM_PATH_LINEAR,
                             .time = { FM_TIME_UNIFORM, 0.0f, 1.0f },
                             .cfg_dropout = (float)c->reflow.cfg_dropout,
                             .num_classes = FM_NUM_CLASSES };
    while (rc == FM_OK && t->step < tc->steps) {
        fm_trainer_begin(t);
        fm_loader_batch(&L, t->step, rows, y, gidx);
        rc = fm_cfm_pairs(&cfm, rows, y, gidx, local, D, (uint64_t)c->run.seed ^ REFLOW_SEED, (uint64_t)t->step, tt,
                          xt, target, yd, e);
        if (rc == FM_OK)
            rc = fm_flow_model_forward(model, xt, tt, yd, u, e);
        if (rc != FM_OK)
            break;
        const double loss = fm_mse_forward(u, target, (long)per);
        fm_mse_backward(u, target, (long)per, 1.0f, du);
        fm_trainer_backward_begins(t);
        if ((rc = fm_flow_model_backward(model, du, e)) == FM_OK)
            rc = fm_trainer_end(t, loss, e);
    }
    free(buf);
    fm_loader_free(&L);
    return rc;
}

int fm_stage_reflow(fm_pipeline *P, fm_err *e)
{
    const fm_config *c = P->cfg;
    const fm_train_config *tc = &c->reflow.train;
    const fm_world *w = P->world;
    fm_params p;
    fm_flow_model model = { 0 };
    fm_trainer t = { 0 };
    pairs q = { 0 };
    float scale = 1.0f;
    const fm_flist reflow_ema = { 1, { c->reflow.ema_decay } }; /* one EMA: the reflowed model's grids and eval */
    FM_TRY(fm_build_flow_params(&p, c, e));
    int rc = fm_build_flow_model(&model, c, &P->dnn, &p, tc->batch_size / w->size, e);
    if (rc == FM_OK)
        rc = fm_batches_agree(w, load_flow_ema(P, &p, &scale, e), "reflow: loading the flow's EMA weights", e);
    if (rc == FM_OK)
        rc = fm_trainer_init(&t, "reflow", tc, c, P->config_text, w, &p, &P->metrics, &reflow_ema, 1, e);
    if (rc == FM_OK)
        rc = fm_trainer_add_extra(&t, "latent_scale", &scale, 1, e);
    if (rc == FM_OK)
        rc = fm_world_bcast(w, &scale, 1, e);
    if (rc == FM_OK) {
        t.global_batch = tc->batch_size;
        t.flops_per_step = 3 * fm_flow_model_flops(&model);
        rc = fm_trainer_resume(&t, e);
    }
    if (rc == FM_OK && t.step >= tc->steps) {
        fm_info("reflow: done (checkpoint at step %lld)", (long long)t.step);
        goto out;
    }
    if (rc == FM_OK)
        rc = pairs_alloc(&q, c->reflow.pairs, model.dim, e);
    rc = fm_batches_agree(w, rc, "reflow: set-up", e);
    if (rc == FM_OK)
        rc = get_pairs(P, &q, e);
    if (rc == FM_OK) {
        fm_info("reflow: %zu parameters from the flow's EMA, %d steps from step %lld on %d couplings, global batch %d",
                p.numel, tc->steps, (long long)t.step, q.n, tc->batch_size);
        rc = finetune(P, &t, &model, &q, e);
    }
out:
    pairs_free(&q);
    fm_trainer_free(&t);
    if (model.batch)
        fm_flow_model_free(&model);
    fm_params_free(&p);
    return rc;
}
