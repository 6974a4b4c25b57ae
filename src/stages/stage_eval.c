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
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "fm/classifier.h"
#include "fm/frechet.h"
#include "fm/generate.h"
#include "fm/loader.h"
#include "fm/log.h"
#include "fm/signals.h"
#include "fm/pipeline.h"
#include "fm/rng.h"
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
    if (rc != FM_OK || P->world->rank != 0) {
        fm_params_free(&p);
        return end_of_stage(P, rc, e);
    }
    /* rank 0: an inference classifier with the trained weights */
    int EB = c->eval.batch_size, per = c->eval.samples_per_class, ngen = per * FM_NUM_CLASSES;
    int nreal = P->test->n < P->train->n ? P->test->n : P->train->n;
    fm_params ip;
    fm_classifier m;
    fm_generator g;
    memset(&m, 0, sizeof m);
    memset(&g, 0, sizeof g);
    fm_classifier_cfg cc = fm_classifier_cfg_default();
    float *xb = malloc((size_t)EB * XD * sizeof(float)), *imgs = malloc((size_t)ngen * XD * sizeof(float));
    float *f_test = NULL, *f_train = NULL, *f_gen = NULL;
    int32_t *ygen = malloc((size_t)ngen * sizeof(int32_t)), *ybatch = malloc((size_t)EB * sizeof(int32_t));
    char *json = NULL;
    size_t json_len = 0;
    FILE *js = NULL;
    double *mu_t = NULL, *c_t = NULL, *mu_x = NULL, *c_x = NULL;
    rc = fm_params_init(&ip, 64, (size_t)4 << 20, 0, e);
    if (rc == FM_OK)
        rc = fm_classifier_init(&m, &P->dnn, &ip, &cc, EB, 0, e);
    if (rc != FM_OK)
        goto out;
    memcpy(ip.data, p.data, p.numel * sizeof(float));
    int nf = m.nfeat;
    f_test = malloc((size_t)P->test->n * nf * sizeof(float));
    f_train = malloc((size_t)nreal * nf * sizeof(float));
    f_gen = malloc((size_t)ngen * nf * sizeof(float));
    mu_t = malloc((size_t)nf * sizeof(double));
    mu_x = malloc((size_t)nf * sizeof(double));
    c_t = malloc((size_t)nf * nf * sizeof(double));
    c_x = malloc((size_t)nf * nf * sizeof(double));
    if (!xb || !imgs || !ygen || !ybatch || !f_test || !f_train || !f_gen || !mu_t || !mu_x || !c_t || !c_x) {
        rc = fm_fail(e, FM_ERR_INTERNAL, "out of memory for evaluation");
        goto out;
    }
    int correct = 0, dummy = 0;
    double t0 = fm_now();
    if ((rc = classify(&m, P->test->images, P->test->labels, P->test->n, f_test, &correct, xb, e)) != FM_OK ||
        (rc = classify(&m, P->train->images, NULL, nreal, f_train, &dummy, xb, e)) != FM_OK)
        goto out;
    double test_acc = (double)correct / P->test->n, fd_floor = 0;
    if ((rc = fm_feature_stats(f_test, P->test->n, nf, mu_t, c_t, e)) != FM_OK ||
        (rc = fm_feature_stats(f_train, nreal, nf, mu_x, c_x, e)) != FM_OK ||
        (rc = fm_frechet(mu_x, c_x, mu_t, c_t, nf, &fd_floor, e)) != FM_OK)
        goto out;
    fm_info("eval: classifier test accuracy %.2f%%, Fréchet floor (%d train vs %d test images) %.3f (%.1fs)",
            100 * test_acc, nreal, P->test->n, fd_floor, fm_now() - t0);
    js = open_memstream(&json, &json_len);
    if (!js) {
        rc = fm_fail(e, FM_ERR_INTERNAL, "out of memory");
        goto out;
    }
    fprintf(js, "{\n  \"classifier_test_accuracy\": %.6f,\n  \"fd_floor\": %.6f,\n", test_acc, fd_floor);
    fprintf(js, "  \"sampler\": \"%s\",\n  \"sampler_steps\": %d,\n  \"samples_per_class\": %d,\n",
            fm_sampler_names[c->sample.sampler], c->sample.steps, per);
    if ((rc = fm_generator_init(&g, c, &P->dnn, EB, (fm_sampler_kind)c->sample.sampler, c->sample.steps, e)) != FM_OK)
        goto out;
    int64_t flow_step = 0;
    if ((rc = fm_generator_load(&g, c, NULL, &flow_step, e)) != FM_OK)
        goto out;
    fprintf(js, "  \"flow_step\": %lld,\n  \"by_cfg\": [", (long long)flow_step);
    for (int i = 0; i < ngen; i++)
        ygen[i] = i % FM_NUM_CLASSES;
    for (int k = 0; k < c->sample.cfg.n; k++) {
        float w = (float)c->sample.cfg.v[k];
        double tg = fm_now();
        for (int first = 0; first < ngen && rc == FM_OK; first += EB) {
            int rows = ngen - first < EB ? ngen - first : EB;
            for (int r = 0; r < EB; r++)
                ybatch[r] = ygen[(first + r) % ngen];
            rc = fm_generate(&g, ybatch, w, (uint64_t)c->run.seed + 1000003u, (uint64_t)first, e);
            if (rc == FM_OK)
                memcpy(imgs + (size_t)first * XD, g.images, (size_t)rows * XD * sizeof(float));
            /* preemption: rank 0 alone generates (the other ranks wait at the
             * end of the stage, where they learn its status) */
            int stop = fm_stop_requested();
            if (rc == FM_OK && stop)
                rc = fm_fail(e, FM_PREEMPTED,
                             "eval: stopped by signal %d while generating (w = %g, %d of %d samples); the "
                             "classifier is saved: run the same command again (or let Slurm requeue the job) "
                             "to redo the generation",
                             stop, w, first + rows, ngen);
        }
        double fd = 0;
        if (rc == FM_OK)
            rc = classify(&m, imgs, ygen, ngen, f_gen, &correct, xb, e);
        if (rc == FM_OK)
            rc = fm_feature_stats(f_gen, ngen, nf, mu_x, c_x, e);
        if (rc == FM_OK)
            rc = fm_frechet(mu_x, c_x, mu_t, c_t, nf, &fd, e);
        if (rc != FM_OK)
            goto out;
        double acc = (double)correct / ngen;
        fm_info("eval: w = %g: class accuracy %.2f%%, Fréchet distance %.3f (floor %.3f), %d samples in %.1fs", w,
                100 * acc, fd, fd_floor, ngen, fm_now() - tg);
        fprintf(js, "%s\n    {\"cfg\": %g, \"accuracy\": %.6f, \"fd\": %.6f}", k ? "," : "", w, acc, fd);
    }
    fprintf(js, "\n  ]\n}\n");
    fclose(js);
    js = NULL;
    rc = fm_write_text_atomic(out_path, json, e);
    if (rc == FM_OK)
        fm_info("eval: wrote %s", out_path);
out:
    if (js)
        fclose(js);
    free(json);
    if (g.B)
        fm_generator_free(&g);
    if (m.n)
        fm_classifier_free(&m);
    fm_params_free(&ip);
    fm_params_free(&p);
    free(xb);
    free(imgs);
    free(ygen);
    free(ybatch);
    free(f_test);
    free(f_train);
    free(f_gen);
    free(mu_t);
    free(mu_x);
    free(c_t);
    free(c_x);
    return end_of_stage(P, rc, e);
}
