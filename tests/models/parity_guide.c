/* parity_guide.c - dump the guide classifier's training step and its
 * guidance gradient for the PyTorch parity test (tests/parity/test_guide.py).
 *
 *   parity_guide OUT B SIZE CHANNELS WIDTH TIME_DIM CLASSES GROUPS
 *
 * Parameters are Philox-random (GroupNorm affine parameters moved off 1/0),
 * x ~ N(0, 1) [B, S, S, C], t uniform in [0, 1], labels uniform. The file
 * holds every parameter under its name and its training gradient (mean
 * cross-entropy) under "grad.<name>", x, t, labels (F32), logits, loss,
 * then "logp" [B] = log softmax(f(x, t))_y and "dx_logp" [B, S, S, C] =
 * grad_x log softmax_y (fm_guide_grad_logp, each row its own), and the
 * parameter order as metadata. Activations are NHWC. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "fm/guide.h"
#include "fm/rng.h"
#include "paritydump.h"

static int run(fm_pdump *d, const fm_guide_cfg *cfg, int B, fm_err *e)
{
    fm_dnn dnn;
    fm_params p;
    fm_guide m;
    FM_TRY(fm_dnn_init(&dnn, e));
    FM_TRY(fm_params_init(&p, 64, 4 << 20, 2025, e));
    int rc = fm_guide_init(&m, &dnn, &p, cfg, B, 1, e);
    if (rc != FM_OK)
        goto out;
    fm_pdump_perturb_norms(&p, 2025); /* GroupNorm affine parameters off their 1/0 init */
    const long nx = (long)B * cfg->size * cfg->size * cfg->channels;
    float *x = malloc((size_t)(2 * nx + 3 * B) * sizeof(float));
    int32_t *y = malloc((size_t)B * sizeof(int32_t));
    if (!x || !y) {
        rc = fm_fail(e, FM_ERR_INTERNAL, "parity_guide: out of memory");
        goto out_free;
    }
    float *dx = x + nx, *t = dx + nx, *yf = t + B, *logp = yf + B;
    fm_fill_normal(x, nx, 2025, 1, 0);
    fm_fill_uniform(t, B, 2025, 3, 0);
    for (int i = 0; i < B; i++) {
        y[i] = (int32_t)fm_rand_below((uint32_t)cfg->num_classes, 2025, 2, (uint64_t)i);
        yf[i] = (float)y[i];
    }
    double loss;
    const float *logits;
    if ((rc = fm_guide_forward(&m, x, t, &logits, e)) || (rc = fm_guide_loss(&m, y, &loss, NULL, e)) ||
        (rc = fm_guide_backward(&m, y, e)))
        goto out_free;
    const int64_t xs[4] = { B, cfg->size, cfg->size, cfg->channels }, bs[1] = { B }, one[1] = { 1 };
    const int64_t ls[2] = { B, cfg->num_classes };
    const float lf = (float)loss;
    if ((rc = fm_pdump_put(d, "x", x, 4, xs, e)) || (rc = fm_pdump_put(d, "t", t, 1, bs, e)) || (rc = fm_pdump_put(d, "labels", yf, 1, bs, e)) ||
        (rc = fm_pdump_put(d, "logits", logits, 2, ls, e)) || (rc = fm_pdump_put(d, "loss", &lf, 1, one, e)))
        goto out_free;
    if ((rc = fm_pdump_params(d, &p, e))) /* the training gradients, before fm_guide_grad_logp overwrites them */
        goto out_free;
    if ((rc = fm_guide_grad_logp(&m, x, t, y, dx, logp, e)) || (rc = fm_pdump_put(d, "logp", logp, 1, bs, e)) ||
        (rc = fm_pdump_put(d, "dx_logp", dx, 4, xs, e)))
        goto out_free;
out_free:
    free(x);
    free(y);
    fm_guide_free(&m);
out:
    fm_params_free(&p);
    fm_dnn_free(&dnn);
    return rc;
}

int main(int argc, char **argv)
{
    if (argc != 9) {
        fprintf(stderr, "usage: parity_guide OUT B SIZE CHANNELS WIDTH TIME_DIM CLASSES GROUPS\n");
        return 2;
    }
    const int B = atoi(argv[2]);
    fm_guide_cfg cfg = { .size = atoi(argv[3]), .channels = atoi(argv[4]), .width = atoi(argv[5]),
                         .time_dim = atoi(argv[6]), .num_classes = atoi(argv[7]), .groups = atoi(argv[8]) };
    fm_err e = { 0 };
    static fm_pdump d;
    if (fm_pdump_init(&d, "parity_guide", (size_t)64 << 20, &e) != FM_OK) {
        fprintf(stderr, "parity_guide: %s\n", e.msg);
        return 1;
    }
    int rc = run(&d, &cfg, B, &e);
    if (rc == FM_OK)
        rc = fm_pdump_write(&d, argv[1], &e);
    if (rc != FM_OK)
        fprintf(stderr, "parity_guide: %s\n", e.msg);
    fm_pdump_free(&d);
    return rc == FM_OK ? 0 : rc == FM_ERR_USAGE ? 2 : 1;
}
