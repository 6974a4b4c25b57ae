/* parity_classifier.c - dump one classifier training step for the PyTorch
 * parity test (tests/parity/test_classifier.py).
 *
 *   parity_classifier OUT B SIZE WIDTH CLASSES GROUPS
 *
 * Parameters are Philox-random (GroupNorm affine parameters moved off 1/0), x
 * is uniform in [-1, 1], labels uniform in [0, CLASSES). The file holds every
 * parameter under its name and its gradient under "grad.<name>", x, labels
 * (as F32), logits, features, the loss and the number of correct predictions
 * ("correct", F32), and the parameter order as metadata. Activations are NHWC. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "fm/classifier.h"
#include "fm/rng.h"
#include "paritydump.h"

static int run(fm_pdump *d, const fm_classifier_cfg *cfg, int B, fm_err *e)
{
    fm_dnn dnn;
    fm_params p;
    fm_classifier m;
    FM_TRY(fm_dnn_init(&dnn, e));
    FM_TRY(fm_params_init(&p, 64, 4 << 20, 2024, e));
    int rc = fm_classifier_init(&m, &dnn, &p, cfg, B, 1, e);
    if (rc != FM_OK)
        goto out;
    fm_pdump_perturb_norms(&p, 2024); /* GroupNorm affine parameters off their 1/0 init */
    const long nx = (long)B * cfg->size * cfg->size * cfg->in_ch;
    float *x = malloc((size_t)nx * sizeof(float)), *yf = malloc((size_t)B * sizeof(float));
    int32_t *y = malloc((size_t)B * sizeof(int32_t));
    if (!x || !yf || !y) {
        rc = fm_fail(e, FM_ERR_INTERNAL, "parity_classifier: out of memory");
        goto out_free;
    }
    fm_fill_uniform(x, nx, 2024, 1, 0);
    for (long i = 0; i < nx; i++)
        x[i] = 2.0f * x[i] - 1.0f;
    for (int i = 0; i < B; i++) {
        y[i] = (int32_t)fm_rand_below((uint32_t)cfg->num_classes, 2024, 2, (uint64_t)i);
        yf[i] = (float)y[i];
    }
    double loss;
    int correct;
    if ((rc = fm_classifier_forward(&m, x, NULL, NULL, e)) || (rc = fm_classifier_loss(&m, y, &loss, &correct, e)) ||
        (rc = fm_classifier_backward(&m, x, y, e)))
        goto out_free;
    const int64_t xs[4] = { B, cfg->size, cfg->size, cfg->in_ch }, bs[1] = { B }, one[1] = { 1 };
    const int64_t ls[2] = { B, cfg->num_classes }, fs[2] = { B, m.nfeat };
    const float lf = (float)loss, cf = (float)correct;
    if ((rc = fm_pdump_put(d, "x", x, 4, xs, e)) || (rc = fm_pdump_put(d, "labels", yf, 1, bs, e)) ||
        (rc = fm_pdump_put(d, "logits", m.logits, 2, ls, e)) || (rc = fm_pdump_put(d, "features", m.features, 2, fs, e)) ||
        (rc = fm_pdump_put(d, "loss", &lf, 1, one, e)) || (rc = fm_pdump_put(d, "correct", &cf, 1, one, e)))
        goto out_free;
    rc = fm_pdump_params(d, &p, e);
out_free:
    free(x);
    free(yf);
    free(y);
out:
    fm_classifier_free(&m);
    fm_params_free(&p);
    fm_dnn_free(&dnn);
    return rc;
}

int main(int argc, char **argv)
{
    if (argc != 7) {
        fprintf(stderr, "usage: parity_classifier OUT B SIZE WIDTH CLASSES GROUPS\n");
        return 2;
    }
    fm_classifier_cfg cfg = fm_classifier_cfg_default();
    const int B = atoi(argv[2]);
    cfg.size = atoi(argv[3]);
    cfg.width = atoi(argv[4]);
    cfg.num_classes = atoi(argv[5]);
    cfg.groups = atoi(argv[6]);
    fm_err e = { 0 };
    static fm_pdump d;
    if (fm_pdump_init(&d, "parity_classifier", (size_t)64 << 20, &e) != FM_OK) {
        fprintf(stderr, "parity_classifier: %s\n", e.msg);
        return 1;
    }
    int rc = run(&d, &cfg, B, &e);
    if (rc == FM_OK)
        rc = fm_pdump_write(&d, argv[1], &e);
    if (rc != FM_OK)
        fprintf(stderr, "parity_classifier: %s\n", e.msg);
    fm_pdump_free(&d);
    return rc == FM_OK ? 0 : rc == FM_ERR_USAGE ? 2 : 1;
}
