/* stage_eval.c - score generated samples with an in-project classifier.
 *
 * 1. Train the classifier on the real training images (its own checkpoints,
 *    "classifier-*"), or load it when its final checkpoint exists.
 * 2. Its accuracy on the real test set; its penultimate features of the test
 *    set and of as many training images: the train-vs-test Fréchet distance is
 *    the floor a perfect generator would reach.
 * 3. For each guidance scale w of sample.cfg: eval.samples_per_class samples
 *    per class from the flow's EMA weights; accuracy against the requested
 *    class and the Fréchet distance to the test features.
 * 4. RUN/eval.json (rank 0, atomic). Skipped when eval.json exists, unless
 *    forced (`fmtrain eval RUN_DIR`). Generation runs on rank 0. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "fm/classifier.h"
#include "fm/frechet.h"
#include "fm/generate.h"
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
    fm_classifier m;
    fm_trainer t;
    fm_loader L;
    memset(&m, 0, sizeof m);
    memset(&t, 0, sizeof t);
    memset(&L, 0, sizeof L);
    float *xb = malloc((size_t)local * XD * sizeof(float));
    int32_t *yb = malloc((size_t)local * sizeof(int32_t));
    uint64_t *gidx = malloc((size_t)local * sizeof(uint64_t));
    fm_classifier_cfg cc = fm_classifier_cfg_default();
    int rc = xb && yb && gidx ? FM_OK : fm_fail(e, FM_ERR_INTERNAL, "out of memory");
    if (rc == FM_OK)
        rc = fm_classifier_init(&m, &P->dnn, p, &cc, local, 1, e);
    if (rc == FM_OK)
        rc = fm_trainer_init(&t, "classifier", &tc, c, P->config_text, P->world, p, &P->metrics, 0, 0, 0, e);
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
    if (m.n)
        fm_classifier_free(&m);
    free(xb);
    free(yb);
    free(gidx);
    return rc;
}

/* Classify n images in batches of the instance's size: features [n, nfeat]
 * and the number of argmax predictions equal to labels (if labels). */
static int classify(fm_classifier *m, const float *x, const int32_t *labels, int n, float *feats, int *correct,
                    float *xb, fm_err *e)
{
    int B = m->n;
    *correct = 0;
    for (int first = 0; first < n; first += B) {
        int rows = n - first < B ? n - first : B;
        memcpy(xb, x + (size_t)first * XD, (size_t)rows * XD * sizeof(float));
        for (int r = rows; r < B; r++)
            memcpy(xb + (size_t)r * XD, xb, XD * sizeof(float));
        const float *logits, *f;
        FM_TRY(fm_classifier_forward(m, xb, &logits, &f, e));
        memcpy(feats + (size_t)first * m->nfeat, f, (size_t)rows * m->nfeat * sizeof(float));
        for (int r = 0; r < rows && labels; r++) {
            const float *l = logits + (size_t)r * m->cfg.num_classes;
            int best = 0;
            for (int k = 1; k < m->cfg.num_classes; k++)
                if (l[k] > l[best])
                    best = k;
            *correct += best == labels[first + r];
        }
    }
    return FM_OK;
}

/* Every rank waits here for rank 0's generation and learns its status: a
 * rank 0 that stopped (preempted, or an error) stops the others with the same
 * exit status. */
static int end_of_stage(fm_pipeline *P, int rc, fm_err *e)
{
    int status = rc;
    fm_err ce = { 0 };
    int crc = fm_world_max_int(P->world, &status, &ce);
    if (rc != FM_OK)
        return rc;
    if (crc != FM_OK) {
        *e = ce;
        return crc;
    }
    if (status != FM_OK)
        return fm_fail(e, status, "eval: rank 0 stopped with status %d (its message says why)", status);
    return FM_OK;
}

/* Rank 0's buffers of the evaluation: EB rows per batch, ngen generated
 * images per guidance scale, nf features per image. */
typedef struct eval_bufs {
    float *xb;                       /* [EB, XD] one classifier batch */
    float *imgs;                     /* [ngen, XD] the generated images of one guidance scale */
    int32_t *ygen;                   /* [ngen] their classes */
    int32_t *ybatch;                 /* [EB] the classes of one generated batch */
    float *f_test, *f_train, *f_gen; /* [n, nf] features of the test, training and generated images */
    double *mu_t, *c_t;              /* [nf], [nf, nf]: statistics of the test features */
    double *mu_x, *c_x;              /* the same of the features compared with them */
} eval_bufs;

static void eval_bufs_free(eval_bufs *b)
{
    free(b->xb);
    free(b->imgs);
    free(b->ygen);
    free(b->ybatch);
    free(b->f_test);
    free(b->f_train);
    free(b->f_gen);
    free(b->mu_t);
    free(b->c_t);
    free(b->mu_x);
    free(b->c_x);
    memset(b, 0, sizeof *b);
}

static int eval_bufs_init(eval_bufs *b, int EB, int ngen, int ntest, int nreal, int nf, fm_err *e)
{
    b->xb = malloc((size_t)EB * XD * sizeof(float));
    b->imgs = malloc((size_t)ngen * XD * sizeof(float));
    b->ygen = malloc((size_t)ngen * sizeof(int32_t));
    b->ybatch = malloc((size_t)EB * sizeof(int32_t));
    b->f_test = malloc((size_t)ntest * nf * sizeof(float));
    b->f_train = malloc((size_t)nreal * nf * sizeof(float));
    b->f_gen = malloc((size_t)ngen * nf * sizeof(float));
    b->mu_t = malloc((size_t)nf * sizeof(double));
    b->mu_x = malloc((size_t)nf * sizeof(double));
    b->c_t = malloc((size_t)nf * nf * sizeof(double));
    b->c_x = malloc((size_t)nf * nf * sizeof(double));
    if (b->xb && b->imgs && b->ygen && b->ybatch && b->f_test && b->f_train && b->f_gen && b->mu_t && b->mu_x &&
        b->c_t && b->c_x)
        return FM_OK;
    eval_bufs_free(b);
    return fm_fail(e, FM_ERR_INTERNAL, "out of memory for evaluation");
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
 * features of nreal training images: the floor a perfect generator reaches. */
static int real_stats(fm_pipeline *P, fm_classifier *m, eval_bufs *b, int nreal, double *test_acc, double *fd_floor,
                      fm_err *e)
{
    const fm_dataset *test = P->test;
    const int nf = m->nfeat;
    int correct = 0, dummy = 0;
    double t0 = fm_now();
    FM_TRY(classify(m, test->images, test->labels, test->n, b->f_test, &correct, b->xb, e));
    FM_TRY(classify(m, P->train->images, NULL, nreal, b->f_train, &dummy, b->xb, e));
    *test_acc = (double)correct / test->n;
    *fd_floor = 0;
    FM_TRY(fm_feature_stats(b->f_test, test->n, nf, b->mu_t, b->c_t, e));
    FM_TRY(fm_feature_stats(b->f_train, nreal, nf, b->mu_x, b->c_x, e));
    FM_TRY(fm_frechet(b->mu_x, b->c_x, b->mu_t, b->c_t, nf, fd_floor, e));
    fm_info("eval: classifier test accuracy %.2f%%, Fréchet floor (%d train vs %d test images) %.3f (%.1fs)",
            100 * *test_acc, nreal, test->n, *fd_floor, fm_now() - t0);
    return FM_OK;
}

/* Generate b->ygen's ngen images at guidance w in batches of g->B (a
 * preemption stops between batches), then their class accuracy and Fréchet
 * distance to the test features. */
static int score_scale(const fm_config *c, fm_classifier *m, fm_generator *g, eval_bufs *b, int ngen, float w,
                       double fd_floor, double *acc, double *fd, fm_err *e)
{
    const int EB = g->B;
    double tg = fm_now();
    for (int first = 0; first < ngen; first += EB) {
        int rows = ngen - first < EB ? ngen - first : EB;
        for (int r = 0; r < EB; r++)
            b->ybatch[r] = b->ygen[(first + r) % ngen];
        FM_TRY(fm_generate(g, b->ybatch, w, (uint64_t)c->run.seed + 1000003u, (uint64_t)first, e));
        memcpy(b->imgs + (size_t)first * XD, g->images, (size_t)rows * XD * sizeof(float));
        /* preemption: rank 0 alone generates (the other ranks wait at the
         * end of the stage, where they learn its status) */
        int stop = fm_stop_requested();
        if (stop)
            return fm_fail(e, FM_PREEMPTED,
                           "eval: stopped by signal %d while generating (w = %g, %d of %d samples); the "
                           "classifier is saved: run the same command again (or let Slurm requeue the job) "
                           "to redo the generation",
                           stop, w, first + rows, ngen);
    }
    int correct = 0;
    *fd = 0;
    FM_TRY(classify(m, b->imgs, b->ygen, ngen, b->f_gen, &correct, b->xb, e));
    FM_TRY(fm_feature_stats(b->f_gen, ngen, m->nfeat, b->mu_x, b->c_x, e));
    FM_TRY(fm_frechet(b->mu_x, b->c_x, b->mu_t, b->c_t, m->nfeat, fd, e));
    *acc = (double)correct / ngen;
    fm_info("eval: w = %g: class accuracy %.2f%%, Fréchet distance %.3f (floor %.3f), %d samples in %.1fs", w,
            100 * *acc, *fd, fd_floor, ngen, fm_now() - tg);
    return FM_OK;
}

/* Rank 0: score the real images and every guidance scale with the trained
 * classifier weights and write eval.json (the JSON text grows in js). */
static int score_all(fm_pipeline *P, fm_classifier *m, fm_generator *g, eval_bufs *b, FILE *js, fm_err *e)
{
    const fm_config *c = P->cfg;
    const int per = c->eval.samples_per_class, ngen = per * FM_NUM_CLASSES;
    const int nreal = P->test->n < P->train->n ? P->test->n : P->train->n;
    double test_acc, fd_floor;
    FM_TRY(real_stats(P, m, b, nreal, &test_acc, &fd_floor, e));
    fprintf(js, "{\n  \"classifier_test_accuracy\": %.6f,\n  \"fd_floor\": %.6f,\n", test_acc, fd_floor);
    fprintf(js, "  \"sampler\": \"%s\",\n  \"sampler_steps\": %d,\n  \"samples_per_class\": %d,\n",
            fm_sampler_names[c->sample.sampler], c->sample.steps, per);
    FM_TRY(fm_generator_init(g, c, &P->dnn, c->eval.batch_size, (fm_sampler_kind)c->sample.sampler, c->sample.steps,
                             e));
    int64_t flow_step = 0;
    FM_TRY(fm_generator_load(g, c, NULL, &flow_step, e));
    fprintf(js, "  \"flow_step\": %lld,\n  \"by_cfg\": [", (long long)flow_step);
    for (int i = 0; i < ngen; i++)
        b->ygen[i] = i % FM_NUM_CLASSES;
    for (int k = 0; k < c->sample.cfg.n; k++) {
        float w = (float)c->sample.cfg.v[k];
        double acc = 0, fd = 0;
        FM_TRY(score_scale(c, m, g, b, ngen, w, fd_floor, &acc, &fd, e));
        fprintf(js, "%s\n    {\"cfg\": %g, \"accuracy\": %.6f, \"fd\": %.6f}", k ? "," : "", w, acc, fd);
    }
    fprintf(js, "\n  ]\n}\n");
    return FM_OK;
}

/* Rank 0, after training: everything the classifier p scores, into out_path. */
static int eval_rank0(fm_pipeline *P, const fm_params *p, const char *out_path, fm_err *e)
{
    const fm_config *c = P->cfg;
    const int ngen = c->eval.samples_per_class * FM_NUM_CLASSES;
    const int nreal = P->test->n < P->train->n ? P->test->n : P->train->n;
    fm_params ip;
    fm_classifier m;
    fm_generator g;
    eval_bufs b;
    memset(&ip, 0, sizeof ip);
    memset(&m, 0, sizeof m);
    memset(&g, 0, sizeof g);
    memset(&b, 0, sizeof b);
    char *json = NULL;
    size_t json_len = 0;
    FILE *js = NULL;
    int rc = inference_classifier(P, p, c->eval.batch_size, &ip, &m, e);
    if (rc == FM_OK)
        rc = eval_bufs_init(&b, c->eval.batch_size, ngen, P->test->n, nreal, m.nfeat, e);
    if (rc == FM_OK && !(js = open_memstream(&json, &json_len)))
        rc = fm_fail(e, FM_ERR_INTERNAL, "out of memory");
    if (rc == FM_OK)
        rc = score_all(P, &m, &g, &b, js, e);
    if (js)
        fclose(js);
    if (rc == FM_OK)
        rc = fm_write_text_atomic(out_path, json, e);
    if (rc == FM_OK)
        fm_info("eval: wrote %s", out_path);
    free(json);
    if (g.B)
        fm_generator_free(&g);
    if (m.n)
        fm_classifier_free(&m);
    fm_params_free(&ip);
    eval_bufs_free(&b);
    return rc;
}

int fm_stage_eval(fm_pipeline *P, fm_err *e)
{
    const fm_config *c = P->cfg;
    char out_path[4200];
    fm_run_path(P, out_path, sizeof out_path, "eval.json");
    if (!P->force_eval && access(out_path, F_OK) == 0) {
        fm_info("eval: done (%s exists)", out_path);
        return FM_OK;
    }
    fm_params p;
    FM_TRY(fm_params_init(&p, 64, (size_t)4 << 20, (uint64_t)c->run.seed, e));
    int rc = train_classifier(P, &p, e);
    if (rc == FM_OK && P->world->rank == 0)
        rc = eval_rank0(P, &p, out_path, e);
    fm_params_free(&p);
    return end_of_stage(P, rc, e);
}
