/* stage_eval.c - score generated samples with an in-project classifier.
 *
 * 1. Train the classifier on the real training images (its own checkpoints,
 *    "classifier-*"), or load it when its final checkpoint exists.
 * 2. Its accuracy on the real test set; its penultimate features of the test
 *    set and of the first ngen training images (ngen = the generated samples
 *    of one guidance scale): the train-vs-test Fréchet distance is the floor a
 *    perfect generator would reach, measured with the same numbers of images
 *    on each side as every generated scale's distance (the estimate's
 *    small-sample bias is then the same on both: the gap is unbiased).
 *    eval.json says how many images each figure used.
 * 3. For each guidance scale w of sample.cfg: eval.samples_per_class samples
 *    per class from the flow's EMA weights; accuracy against the requested
 *    class and the Fréchet distance to the test features.
 * 4. RUN/eval.json (rank 0, atomic). Skipped when eval.json exists, unless
 *    forced (`fmtrain eval RUN_DIR`).
 * Every rank classifies and generates in 2 and 3: the batches of
 * eval.batch_size go round-robin over the ranks, each computed as one rank
 * alone computes it (batchsplit.h), and the features are gathered to rank 0,
 * which takes the statistics in image order: eval.json has the same bytes for
 * any rank count. Rank 0 logs how many samples each rank generated. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "fm/batchsplit.h"
#include "fm/ckpt.h"
#include "fm/classifier.h"
#include "fm/frechet.h"
#include "fm/generate.h"
#include "fm/json.h"
#include "fm/loader.h"
#include "fm/log.h"
#include "fm/pipeline.h"
#include "fm/rng.h"
#include "fm/signals.h"
#include "fm/timer.h"
#include "fm/trainer.h"

#define XD (32 * 32)
#define FLIP_STREAM 0x464c495000000000ull /* "FLIP" */

/* Augmentation: mirror each training image left-right with probability 1/2,
 * keyed by (seed, step, global sample index) like every other draw. */
static void random_flips(float *x, const uint64_t *gidx, int n, uint64_t seed, int64_t step)
{
    for (int i = 0; i < n; i++) {
        if (fm_rand_uniform(seed, FLIP_STREAM + (uint64_t)step, gidx[i]) >= 0.5f)
            continue;
        float *img = x + (size_t)i * XD;
        for (int r = 0; r < 32; r++)
            for (int c = 0; c < 16; c++) {
                float t = img[r * 32 + c];
                img[r * 32 + c] = img[r * 32 + 31 - c];
                img[r * 32 + 31 - c] = t;
            }
    }
}

static int train_classifier(fm_pipeline *P, fm_params *p, fm_err *e)
{
    const fm_config *c = P->cfg;
    fm_train_config tc = {
        .steps = c->eval.classifier_steps,
        .batch_size = c->eval.classifier_batch_size,
        .lr = c->eval.classifier_lr,
        .min_lr_ratio = 0.05,
        .warmup = c->eval.classifier_steps / 20,
        .weight_decay = 1e-4,
        .beta1 = 0.9,
        .beta2 = 0.999,
        .grad_clip = 0,
        .ckpt_every = c->eval.classifier_steps,
    };
    int local = tc.batch_size / P->world->size;
    fm_classifier m = { 0 };
    fm_trainer t = { 0 };
    fm_loader L = { 0 };
    float *xb = malloc((size_t)local * XD * sizeof(float));
    int32_t *yb = malloc((size_t)local * sizeof(int32_t));
    uint64_t *gidx = malloc((size_t)local * sizeof(uint64_t));
    fm_classifier_cfg cc = fm_classifier_cfg_default();
    int rc = xb && yb && gidx ? FM_OK : fm_fail(e, FM_ERR_INTERNAL, "out of memory");
    if (rc == FM_OK)
        rc = fm_classifier_init(&m, &P->dnn, p, &cc, local, 1, e);
    if (rc == FM_OK)
        rc = fm_trainer_init(&t, "classifier", &tc, c, P->config_text, P->world, p, &P->metrics, NULL, 0, e);
    if (rc == FM_OK) {
        t.flops_per_step = fm_classifier_flops(&m);
        rc = fm_trainer_resume(&t, e);
    }
    if (rc == FM_OK && t.step < tc.steps)
        rc = fm_loader_init(&L, P->train->images, P->train->labels, P->train->n, XD, tc.batch_size, P->world->rank,
                            P->world->size, (uint64_t)c->run.seed ^ 0x434c53u, e);
    while (rc == FM_OK && t.step < tc.steps) {
        fm_trainer_begin(&t);
        fm_loader_batch(&L, t.step, xb, yb, gidx);
        random_flips(xb, gidx, local, (uint64_t)c->run.seed, t.step);
        double loss = 0;
        rc = fm_classifier_forward(&m, xb, NULL, NULL, e);
        if (rc == FM_OK)
            rc = fm_classifier_loss(&m, yb, &loss, NULL, e);
        if (rc == FM_OK)
            rc = fm_classifier_backward(&m, xb, yb, e);
        if (rc == FM_OK)
            rc = fm_trainer_end(&t, loss, e);
    }
    fm_loader_free(&L);
    fm_trainer_free(&t);
    fm_classifier_free(&m);
    free(xb);
    free(yb);
    free(gidx);
    return rc;
}

/* Classify one batch of rows images x [rows, XD] (rows <= m->n; the batch is
 * padded with copies of its first image, so a batch is always the same input
 * whichever rank runs it): feats [rows, nf] and the number of argmax
 * predictions equal to labels (if labels). */
static int classify_batch(fm_classifier *m, const float *x, const int32_t *labels, int rows, float *feats,
                          int *correct, float *xb, fm_err *e)
{
    memcpy(xb, x, (size_t)rows * XD * sizeof(float));
    for (int r = rows; r < m->n; r++)
        memcpy(xb + (size_t)r * XD, xb, XD * sizeof(float));
    const float *logits, *f;
    FM_TRY(fm_classifier_forward(m, xb, &logits, &f, e));
    memcpy(feats, f, (size_t)rows * m->nfeat * sizeof(float));
    *correct = 0;
    for (int r = 0; r < rows && labels; r++) {
        const float *l = logits + (size_t)r * m->cfg.num_classes;
        int best = 0;
        for (int k = 1; k < m->cfg.num_classes; k++)
            if (l[k] > l[best])
                best = k;
        *correct += best == labels[r];
    }
    return FM_OK;
}

/* Buffers of the evaluation: EB rows per batch, nf features per image. The
 * gathered features (f_*: [batches · EB, nf], rows in image order; a partial
 * last batch leaves rows unused) and the statistics live on rank 0; every
 * rank has the rest. */
typedef struct eval_bufs {
    float *xb;               /* [EB, XD] one classifier batch */
    int32_t *ybatch;         /* [EB] the classes of one generated batch */
    float *mine;             /* [rounds, EB, nf] this rank's batches' features */
    float *f_real, *f_gen;   /* rank 0: features of the test then the training images; of the generated ones */
    double *mu_t, *c_t;      /* rank 0: [nf], [nf, nf]: statistics of the test features */
    double *mu_x, *c_x;      /* rank 0: the same of the features compared with them */
} eval_bufs;

static void eval_bufs_free(eval_bufs *b)
{
    free(b->xb);
    free(b->ybatch);
    free(b->mine);
    free(b->f_real);
    free(b->f_gen);
    free(b->mu_t);
    free(b->c_t);
    free(b->mu_x);
    free(b->c_x);
    memset(b, 0, sizeof *b);
}

static int batches(int n, int EB) { return (n + EB - 1) / EB; }

/* The two lists of batches of the evaluation, each split over the ranks as
 * one list (batchsplit.h): the real images (the test set's batches, then the
 * nreal training images'), and the generated ones (for each guidance scale in
 * turn, the batches of its ngen samples). */
typedef struct eval_plan {
    int EB, nf, ntest, nreal, ngen, nscales;
    int nalloc; /* the most guidance scales of one list (sample.cfg, eval.table_cfg): the buffers' */
    int nb_test, nb_real, nb_gen; /* batches of the test set, of the training images, of one scale */
} eval_plan;

static int eval_bufs_init(eval_bufs *b, const fm_world *w, const eval_plan *pl, fm_err *e)
{
    const size_t row = (size_t)pl->EB * pl->nf * sizeof(float); /* one batch's features */
    const int nreal = pl->nb_test + pl->nb_real, ngen = pl->nalloc * pl->nb_gen;
    int rounds = fm_batches_rounds(nreal > ngen ? nreal : ngen, w->size);
    b->xb = malloc((size_t)pl->EB * XD * sizeof(float));
    b->ybatch = malloc((size_t)pl->EB * sizeof(int32_t));
    b->mine = malloc((size_t)(rounds ? rounds : 1) * row);
    int ok = b->xb && b->ybatch && b->mine;
    if (w->rank == 0) {
        const size_t nf = (size_t)pl->nf;
        b->f_real = malloc((size_t)(nreal ? nreal : 1) * row);
        b->f_gen = malloc((size_t)(ngen ? ngen : 1) * row);
        b->mu_t = malloc(nf * sizeof(double));
        b->mu_x = malloc(nf * sizeof(double));
        b->c_t = malloc(nf * nf * sizeof(double));
        b->c_x = malloc(nf * nf * sizeof(double));
        ok = ok && b->f_real && b->f_gen && b->mu_t && b->mu_x && b->c_t && b->c_x;
    }
    if (ok)
        return FM_OK;
    eval_bufs_free(b);
    return fm_fail(e, FM_ERR_INTERNAL, "rank %d: out of memory for evaluation", w->rank);
}

/* An inference classifier for batches of EB with the trained weights. */
static int inference_classifier(fm_pipeline *P, const fm_params *trained, int EB, fm_params *ip, fm_classifier *m,
                                 fm_err *e)
{
    fm_classifier_cfg cc = fm_classifier_cfg_default();
    FM_TRY(fm_params_init(ip, 64, (size_t)4 << 20, 0, e));
    FM_TRY(fm_classifier_init(m, &P->dnn, ip, &cc, EB, 0, e));
    memcpy(ip->data, trained->data, trained->numel * sizeof(float));
    return FM_OK;
}

/* The classifier's accuracy on the test set, the statistics of its test
 * features (b->mu_t, b->c_t), and the Fréchet distance between those and the
 * features of nreal training images: the floor a perfect generator reaches.
 * The batches of both sets are classified by all ranks, the statistics taken
 * on rank 0 (the ranks agree on its status). Collective. */
static int real_stats(fm_pipeline *P, fm_classifier *m, eval_bufs *b, const eval_plan *pl, double *test_acc,
                      double *fd_floor, fm_err *e)
{
    const fm_world *w = P->world;
    const fm_dataset *test = P->test;
    const int EB = pl->EB, nf = pl->nf, nb = pl->nb_test + pl->nb_real, own = fm_batches_mine(nb, w->rank, w->size);
    const size_t per = (size_t)EB * nf;
    const double t0 = fm_now();
    double right = 0;
    int rc = FM_OK;
    for (int s = 0; rc == FM_OK && s < own; s++) {
        const int j = fm_batches_global(s, w->rank, w->size), is_test = j < pl->nb_test;
        const int first = (is_test ? j : j - pl->nb_test) * EB, n = is_test ? pl->ntest : pl->nreal;
        const float *x = is_test ? test->images : P->train->images;
        int c = 0;
        rc = classify_batch(m, x + (size_t)first * XD, is_test ? test->labels + first : NULL,
                            n - first < EB ? n - first : EB, b->mine + s * per, &c, b->xb, e);
        right += c;
        if (rc == FM_OK && fm_stop_requested()) /* the classifier is saved: a rerun starts here */
            rc = fm_fail(e, FM_PREEMPTED, "eval: stopped by signal %d while classifying the real images: run the "
                         "same command again (or let Slurm requeue the job) to resume", fm_stop_requested());
    }
    FM_TRY(fm_batches_agree(w, rc, "eval: classifying the real images", e));
    FM_TRY(fm_batches_gather(w, b->mine, nb, per, b->f_real, e));
    FM_TRY(fm_world_sum(w, &right, e)); /* a sum of integers: exact in any order */
    *test_acc = right / pl->ntest;
    *fd_floor = 0;
    if (w->rank == 0) {
        const float *f_train = b->f_real + (size_t)pl->nb_test * per;
        rc = fm_feature_stats(b->f_real, pl->ntest, nf, b->mu_t, b->c_t, e);
        if (rc == FM_OK)
            rc = fm_feature_stats(f_train, pl->nreal, nf, b->mu_x, b->c_x, e);
        if (rc == FM_OK)
            rc = fm_frechet(b->mu_x, b->c_x, b->mu_t, b->c_t, nf, fd_floor, e);
        if (rc == FM_OK)
            fm_info("eval: classifier test accuracy %.2f%%, Fréchet floor (%d train vs %d test images) %.3f (%.1fs)",
                    100 * *test_acc, pl->nreal, pl->ntest, *fd_floor, fm_now() - t0);
    }
    return fm_batches_agree(w, rc, "eval: the Fréchet floor", e);
}

/* What one rank generated in the eval stage. */
typedef struct gen_count {
    double samples, batches, seconds;
} gen_count;

/* For every guidance scale k = ws[k] (k < nw), ngen samples of classes i mod FM_NUM_CLASSES
 * in batches of g->B (batch j: samples j·B ..), all scales' batches split
 * over the ranks as one list; each batch is classified where it was
 * generated. The ranks agree after each round, so a preemption or an error
 * stops them all between batches. right[k] <- the samples of scale k that
 * the classifier puts in their class (summed on every rank); b->f_gen (rank
 * 0) <- their features. Collective. */
static int generate_all(const fm_pipeline *P, fm_classifier *m, fm_generator *g, eval_bufs *b, const eval_plan *pl,
                        const double *ws, int nw, double *right, gen_count *count, fm_err *e)
{
    const fm_config *c = P->cfg;
    const fm_world *W = P->world;
    const int EB = pl->EB, nb = nw * pl->nb_gen, own = fm_batches_mine(nb, W->rank, W->size);
    const size_t per = (size_t)EB * pl->nf;
    for (int k = 0; k < nw; k++)
        right[k] = 0;
    for (int s = 0; s < fm_batches_rounds(nb, W->size); s++) {
        const int j = fm_batches_global(s, W->rank, W->size), k = j / pl->nb_gen;
        const int first = (j % pl->nb_gen) * EB, rows = pl->ngen - first < EB ? pl->ngen - first : EB;
        const float w = k < nw ? (float)ws[k] : 0;
        int rc = FM_OK;
        if (s < own) {
            const double t0 = fm_now();
            for (int r = 0; r < EB; r++) /* a last, partial batch wraps around (its extra samples are dropped) */
                b->ybatch[r] = ((first + r) % pl->ngen) % FM_NUM_CLASSES;
            int cr = 0;
            rc = fm_generate(g, b->ybatch, w, (uint64_t)c->run.seed + 1000003u, (uint64_t)first, e);
            if (rc == FM_OK)
                rc = classify_batch(m, g->images, b->ybatch, rows, b->mine + s * per, &cr, b->xb, e);
            right[k] += cr;
            count->samples += rows;
            count->batches += 1;
            count->seconds += fm_now() - t0;
        }
        int stop = fm_stop_requested();
        if ((rc == FM_OK || rc == FM_PREEMPTED) && stop) /* FM_PREEMPTED: the sampler saw it within the batch */
            rc = fm_fail(e, FM_PREEMPTED,
                         "eval: stopped by signal %d while generating (rank %d after %d of its %d batches); the "
                         "classifier is saved: run the same command again (or let Slurm requeue the job) to "
                         "redo the generation",
                         stop, W->rank, s < own ? s + 1 : own, own);
        FM_TRY(fm_batches_agree(W, rc, "eval: generating (the classifier is saved)", e));
    }
    FM_TRY(fm_batches_gather(W, b->mine, nb, per, b->f_gen, e));
    for (int k = 0; k < nw; k++) /* sums of integers: exact in any order */
        FM_TRY(fm_world_sum(W, &right[k], e));
    return FM_OK;
}

/* Rank 0 logs how many samples each rank generated. Collective. */
static int log_counts(const fm_world *w, const gen_count *mine, int total, fm_err *e)
{
    double *all = malloc((size_t)w->size * 3 * sizeof(double));
    if (!all)
        return fm_fail(e, FM_ERR_INTERNAL, "rank %d: out of memory", w->rank);
    const double v[3] = { mine->samples, mine->batches, mine->seconds };
    int rc = fm_world_allgather(w, v, 3, all, e);
    for (int r = 0; rc == FM_OK && w->rank == 0 && r < w->size; r++)
        fm_info("eval: rank %d generated %.0f of %d samples (batches: %.0f, %.1fs)", r, all[3 * r], total,
                all[3 * r + 1], all[3 * r + 2]);
    free(all);
    return rc;
}

/* A number of eval.json: null, with a warning naming it, when not finite. */
static void json_value(FILE *js, const char *fmt, double v, const char *what)
{
    if (!fm_json_num(js, fmt, v))
        fm_warn("eval: %s is %g: written as null in eval.json", what, v);
}

/* Rank 0: *fd <- the Fréchet distance of the generated images of scale k
 * (b->f_gen) to the test features. */
static int gen_frechet(eval_bufs *b, const eval_plan *pl, int k, double *fd, fm_err *e)
{
    const size_t per_scale = (size_t)pl->nb_gen * pl->EB * pl->nf;
    FM_TRY(fm_feature_stats(b->f_gen + k * per_scale, pl->ngen, pl->nf, b->mu_x, b->c_x, e));
    return fm_frechet(b->mu_x, b->c_x, b->mu_t, b->c_t, pl->nf, fd, e);
}

/* A way to sample, one group of rows of the quality-vs-cost table: the
 * guidance besides the CFG scale w of each row: CFG over all of t ("cfg"),
 * CFG only in eval.table_interval ("interval"), classifier guidance of
 * scale eval.table_classifier_scale with CFG over all of t ("classifier"),
 * or both ("both"). */
typedef struct eval_method {
    const char *name;
    double t_lo, t_hi;  /* CFG applied for t in [t_lo, t_hi] (w = 1 outside) */
    double cls_scale;   /* classifier-guidance scale (0: none) */
} eval_method;

/* The table's methods (eval.table_interval and eval.table_classifier_scale
 * decide which beyond plain CFG): how many, into me[4]. */
static int table_methods(const fm_config *c, eval_method me[4])
{
    const double lo = c->eval.table_interval.v[0], hi = c->eval.table_interval.v[1];
    const int iv = !(lo == 0 && hi == 1), cs = c->eval.table_classifier_scale > 0;
    int n = 0;
    me[n++] = (eval_method){ "cfg", 0, 1, 0 };
    if (iv)
        me[n++] = (eval_method){ "interval", lo, hi, 0 };
    if (cs)
        me[n++] = (eval_method){ "classifier", 0, 1, c->eval.table_classifier_scale };
    if (iv && cs)
        me[n++] = (eval_method){ "both", lo, hi, c->eval.table_classifier_scale };
    return n;
}

/* The cost of the last generate_all per sample, summed over the ranks (every
 * rank gets the same figures):
 * network evaluations of the flow model (a CFG call on the conditional and
 * the null-label rows counts 2, a call on one branch 1) and of the guide
 * classifier (forward and backward). Collective. */
static int method_cost(const fm_pipeline *P, const fm_generator *g, int has, double *nfe, double *cls, fm_err *e)
{
    const fm_sampler *s = &g->sampler;
    double tot[3] = { has ? (double)s->sampled : 0, has ? (double)s->model_rows : 0, has ? (double)s->guide_rows : 0 };
    for (int i = 0; i < 3; i++) /* sums of integers: exact in any order */
        FM_TRY(fm_world_sum(P->world, &tot[i], e));
    *nfe = tot[0] > 0 ? tot[1] / tot[0] : 0, *cls = tot[0] > 0 ? tot[2] / tot[0] : 0;
    return FM_OK;
}

/* Whether the run has reflow checkpoints (rank 0 looks, every rank learns). Collective. */
static int has_reflow(const fm_pipeline *P, int *has, fm_err *e)
{
    *has = 0;
    if (P->world->rank == 0) {
        fm_ckpt ck;
        fm_err le = { 0 };
        if (fm_ckpt_load_latest(P->cfg->run.out, "reflow", NULL, 0, NULL, 0, &ck, &le) == FM_OK) {
            *has = 1;
            fm_ckpt_close(&ck);
        }
    }
    return fm_world_max_int(P->world, has, e);
}

/* The quality-vs-cost table (eval.table_steps non-empty): for each method
 * (table_methods), each weights (the flow's; the reflowed ones if the run has
 * them) and each sampler steps of eval.table_steps, the samples of every
 * eval.table_cfg scale, scored like by_cfg. Rank 0 writes its "table" into js.
 * right [nalloc] is scratch. nfe counts the flow model's evaluations per
 * sample as the sampler made them (2 per CFG call, 1 where only one branch
 * runs), classifier_evals the guide classifier's (forward + backward).
 * Collective. */
static int score_table(fm_pipeline *P, fm_classifier *m, eval_bufs *b, const eval_plan *pl, double *right, FILE *js,
                       fm_err *e)
{
    const fm_config *c = P->cfg;
    const fm_world *w = P->world;
    const fm_ilist *steps = &c->eval.table_steps;
    const fm_flist *ws = &c->eval.table_cfg;
    const fm_sampler_kind kind = (fm_sampler_kind)c->eval.table_sampler;
    eval_method me[4];
    const int nme = table_methods(c, me);
    int reflow = 0;
    FM_TRY(has_reflow(P, &reflow, e));
    fm_config *gc = malloc(sizeof *gc); /* the generator's configuration: weights and guidance */
    fm_generator g = { 0 };
    const int has = fm_batches_mine(ws->n * pl->nb_gen, w->rank, w->size) > 0;
    int rc = fm_batches_agree(w, gc ? FM_OK : fm_fail(e, FM_ERR_INTERNAL, "rank %d: out of memory", w->rank),
                              "eval: the table's set-up", e);
    if (js)
        fprintf(js, ",\n  \"table\": {\"sampler\": \"%s\", \"samples_per_class\": %d, \"rows\": [", fm_sampler_names[kind],
                c->eval.samples_per_class);
    int row = 0;
    const double t0 = fm_now();
    for (int mi = 0; rc == FM_OK && mi < nme; mi++) {
        *gc = *c;
        gc->sample.cfg_interval.v[0] = me[mi].t_lo, gc->sample.cfg_interval.v[1] = me[mi].t_hi;
        gc->sample.cfg_schedule = FM_CFG_CONSTANT;
        gc->sample.classifier_scale = me[mi].cls_scale;
        rc = has ? fm_generator_init(&g, gc, &P->dnn, pl->EB, kind, steps->v[0], e) : FM_OK;
        rc = fm_batches_agree(w, rc, "eval: building the table's generator", e);
        for (int wt = 0; rc == FM_OK && wt <= reflow; wt++) {
            gc->sample.weights = wt ? FM_WEIGHTS_REFLOW : FM_WEIGHTS_FLOW;
            int64_t step = 0;
            if ((rc = fm_generator_load_all(&g, gc, w, has, &step, e)) != FM_OK)
                break;
            for (int si = 0; rc == FM_OK && si < steps->n; si++) {
                g.sampler.cfg.steps = steps->v[si]; /* the sampler's buffers do not depend on its steps */
                for (int k = 0; rc == FM_OK && k < ws->n; k++) { /* one scale at a time: its own cost */
                    gen_count count = { 0, 0, 0 };
                    g.sampler.sampled = g.sampler.model_rows = g.sampler.guide_rows = 0;
                    double nfe = 0, cls = 0, fd = 0;
                    if ((rc = generate_all(P, m, &g, b, pl, &ws->v[k], 1, right, &count, e)) != FM_OK ||
                        (rc = method_cost(P, &g, has, &nfe, &cls, e)) != FM_OK)
                        break;
                    const double acc = right[0] / pl->ngen;
                    int rc0 = w->rank == 0 ? gen_frechet(b, pl, 0, &fd, e) : FM_OK;
                    if (rc0 == FM_OK && w->rank == 0) {
                        fm_info("eval: table: %s weights (step %lld), %s w = %g, %s %d steps (nfe %g): class accuracy "
                                "%.2f%%, Fréchet distance %.3f", fm_weights_names[gc->sample.weights], (long long)step,
                                me[mi].name, ws->v[k], fm_sampler_names[kind], steps->v[si], nfe, 100 * acc, fd);
                        fprintf(js, "%s\n    {\"weights\": \"%s\", \"weights_step\": %lld, \"method\": \"%s\", "
                                "\"cfg\": %g, \"interval\": [%g, %g], \"classifier_scale\": %g, \"steps\": %d, "
                                "\"nfe\": %g, \"classifier_evals\": %g, \"accuracy\": ",
                                row++ ? "," : "", fm_weights_names[gc->sample.weights], (long long)step, me[mi].name,
                                ws->v[k], me[mi].t_lo, me[mi].t_hi, me[mi].cls_scale, steps->v[si], nfe, cls);
                        json_value(js, "%.6f", acc, "a class accuracy");
                        fputs(", \"fd\": ", js);
                        json_value(js, "%.6f", fd, "a Fréchet distance (non-finite generated images?)");
                        fputc('}', js);
                    }
                    rc = fm_batches_agree(w, rc0, "eval: the table's Fréchet distances", e);
                }
            }
        }
        fm_generator_free(&g);
        memset(&g, 0, sizeof g);
    }
    if (js)
        fputs("\n  ]}", js);
    if (rc == FM_OK && w->rank == 0)
        fm_info("eval: table of %d rows in %.1fs", nme * (reflow + 1) * steps->n * ws->n, fm_now() - t0);
    free(gc);
    return rc;
}

/* Score the real images and every guidance scale with the trained
 * classifier weights; rank 0 writes the JSON text into js (NULL on the
 * other ranks). Collective. */
static int score_all(fm_pipeline *P, fm_classifier *m, fm_generator *g, eval_bufs *b, const eval_plan *pl, FILE *js,
                     fm_err *e)
{
    const fm_config *c = P->cfg;
    const fm_world *w = P->world;
    double test_acc, fd_floor;
    FM_TRY(real_stats(P, m, b, pl, &test_acc, &fd_floor, e));
    if (js) {
        fputs("{\n  \"classifier_test_accuracy\": ", js);
        json_value(js, "%.6f", test_acc, "the classifier's test accuracy");
        fputs(",\n  \"fd_floor\": ", js);
        json_value(js, "%.6f", fd_floor, "the Fréchet floor");
        fprintf(js, ",\n  \"fd_floor_train_images\": %d,\n  \"fd_test_images\": %d,\n", pl->nreal, pl->ntest);
        fprintf(js, "  \"sampler\": \"%s\",\n  \"sampler_steps\": %d,\n  \"samples_per_class\": %d,\n",
                fm_sampler_names[c->sample.sampler], c->sample.steps, c->eval.samples_per_class);
        double rate = 0; /* the weights sampled: the EMA's decay, or false for the trained weights */
        if (fm_config_sample_ema(c, &rate))
            fprintf(js, "  \"ema\": %.10g,\n", rate);
        else
            fputs("  \"ema\": false,\n", js);
    }
    const int has = fm_batches_mine(pl->nscales * pl->nb_gen, w->rank, w->size) > 0;
    int rc = has ? fm_generator_init(g, c, &P->dnn, pl->EB, (fm_sampler_kind)c->sample.sampler, c->sample.steps, e)
                 : FM_OK;
    FM_TRY(fm_batches_agree(w, rc, "eval: building the generator", e));
    int64_t flow_step = 0;
    FM_TRY(fm_generator_load_all(g, c, w, has, &flow_step, e));
    if (js)
        fprintf(js, "  \"flow_step\": %lld,\n  \"by_cfg\": [", (long long)flow_step);
    double *right = malloc((size_t)(pl->nalloc ? pl->nalloc : 1) * sizeof *right); /* [nalloc] */
    rc = fm_batches_agree(w, right ? FM_OK : fm_fail(e, FM_ERR_INTERNAL, "rank %d: out of memory", w->rank),
                          "eval: set-up", e);
    gen_count count = { 0, 0, 0 };
    const double tg = fm_now();
    if (rc == FM_OK)
        rc = generate_all(P, m, g, b, pl, c->sample.cfg.v, pl->nscales, right, &count, e);
    if (rc == FM_OK)
        rc = log_counts(w, &count, pl->ngen * pl->nscales, e);
    int rc0 = FM_OK; /* rank 0: the statistics of every scale */
    for (int k = 0; rc == FM_OK && rc0 == FM_OK && w->rank == 0 && k < pl->nscales; k++) {
        const float gw = (float)c->sample.cfg.v[k];
        const double acc = right[k] / pl->ngen;
        double fd = 0;
        if ((rc0 = gen_frechet(b, pl, k, &fd, e)) != FM_OK)
            break;
        fm_info("eval: w = %g: class accuracy %.2f%%, Fréchet distance %.3f (floor %.3f), %d samples", gw, 100 * acc,
                fd, fd_floor, pl->ngen);
        fprintf(js, "%s\n    {\"cfg\": %g, \"accuracy\": ", k ? "," : "", gw);
        json_value(js, "%.6f", acc, "a class accuracy");
        fputs(", \"fd\": ", js);
        json_value(js, "%.6f", fd, "a Fréchet distance (non-finite generated images?)");
        fprintf(js, ", \"n\": %d}", pl->ngen);
        /* the same as a metrics line (no "loss": readers of losses skip it) */
        static const char *const keys[] = { "cfg", "accuracy", "fd", "fd_floor", "classifier_test_accuracy" };
        const double vals[] = { gw, acc, fd, fd_floor, test_acc };
        rc0 = fm_metrics_log(&P->metrics, "eval", flow_step, 5, keys, vals, e);
    }
    if (rc == FM_OK)
        rc = fm_batches_agree(w, rc0, "eval: the Fréchet distances", e);
    if (rc == FM_OK && w->rank == 0)
        fm_info("eval: %d guidance scales x %d samples in %.1fs on %d rank%s", pl->nscales, pl->ngen,
                fm_now() - tg, w->size, w->size > 1 ? "s" : "");
    if (js)
        fputs("\n  ]", js);
    if (rc == FM_OK && c->eval.table_steps.n > 0)
        rc = score_table(P, m, b, pl, right, js, e);
    free(right);
    if (rc == FM_OK && js)
        fputs("\n}\n", js);
    return rc;
}

/* The batch of one generation and classification call, which one rank runs
 * whole: eval.batch_size; with dist.batch: per_rank, fm_config_apply_world
 * has made that ranks x the configured batch: the configured one then (so a
 * rank never runs more than it was given, and the run scores what one rank
 * with that batch scores). */
static int eval_batch(const fm_config *c, const fm_world *w)
{
    return c->dist.batch == FM_BATCH_PER_RANK ? c->eval.batch_size / w->size : c->eval.batch_size;
}

/* After training, on every rank: everything the classifier p scores; rank 0
 * writes it into out_path. Collective. */
static int eval_all(fm_pipeline *P, const fm_params *p, const char *out_path, fm_err *e)
{
    const fm_config *c = P->cfg;
    fm_params ip = { 0 };
    fm_classifier m = { 0 };
    fm_generator g = { 0 };
    eval_bufs b = { 0 };
    char *json = NULL;
    size_t json_len = 0;
    FILE *js = NULL;
    eval_plan pl = { .EB = eval_batch(c, P->world),
                     .ntest = P->test->n,
                     .ngen = c->eval.samples_per_class * FM_NUM_CLASSES,
                     .nscales = c->sample.cfg.n,
                     .nalloc = c->sample.cfg.n > c->eval.table_cfg.n ? c->sample.cfg.n : c->eval.table_cfg.n };
    pl.nreal = pl.ngen < P->train->n ? pl.ngen : P->train->n; /* the floor on as many images as one scale */
    pl.nb_test = batches(pl.ntest, pl.EB);
    pl.nb_real = batches(pl.nreal, pl.EB);
    pl.nb_gen = batches(pl.ngen, pl.EB);
    int rc = inference_classifier(P, p, pl.EB, &ip, &m, e);
    pl.nf = m.nfeat;
    if (rc == FM_OK)
        rc = eval_bufs_init(&b, P->world, &pl, e);
    if (rc == FM_OK && P->world->rank == 0 && !(js = open_memstream(&json, &json_len)))
        rc = fm_fail(e, FM_ERR_INTERNAL, "out of memory");
    rc = fm_batches_agree(P->world, rc, "eval: setting up", e);
    if (rc == FM_OK)
        rc = score_all(P, &m, &g, &b, &pl, js, e);
    if (js)
        fclose(js);
    if (rc == FM_OK && P->world->rank == 0)
        rc = fm_write_text_atomic(out_path, json, e);
    if (rc == FM_OK && P->world->rank == 0)
        fm_info("eval: wrote %s", out_path);
    free(json);
    fm_generator_free(&g);
    fm_classifier_free(&m);
    fm_params_free(&ip);
    eval_bufs_free(&b);
    return rc;
}

int fm_stage_eval(fm_pipeline *P, fm_err *e)
{
    const fm_config *c = P->cfg;
    const fm_world *w = P->world;
    char out_path[4200];
    fm_run_path(P, out_path, sizeof out_path, "eval.json");
    int exists = !P->force_eval && w->rank == 0 && access(out_path, F_OK) == 0; /* rank 0 looks, all learn */
    FM_TRY(fm_world_max_int(w, &exists, e));
    if (exists) {
        fm_info("eval: done (%s exists)", out_path);
        return FM_OK;
    }
    const double t0 = fm_now();
    fm_params p;
    FM_TRY(fm_params_init(&p, 64, (size_t)4 << 20, (uint64_t)c->run.seed, e));
    int rc = train_classifier(P, &p, e);
    const double t1 = fm_now();
    rc = fm_batches_agree(w, rc, "eval: training the classifier", e);
    if (rc == FM_OK)
        rc = eval_all(P, &p, out_path, e);
    fm_params_free(&p);
    /* every rank learns whether rank 0 could write eval.json */
    rc = fm_batches_agree(w, rc, "eval", e);
    if (rc == FM_OK)
        fm_info("eval: stage took %.1fs on %d rank%s (classifier %.1fs, scoring %.1fs)", fm_now() - t0, w->size,
                w->size > 1 ? "s" : "", t1 - t0, fm_now() - t1);
    return rc;
}
