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
#include "fm/safetensors.h"

#define MAX_T 64

typedef struct dump {
    fm_st_tensor t[MAX_T];
    int n;
    fm_arena a;
} dump;

/* Record a copy of the n floats at src under a copy of name. */
static int put(dump *d, const char *name, const float *src, int ndim, const int64_t *shape, fm_err *e)
{
    long n = 1;
    for (int i = 0; i < ndim; i++)
        n *= shape[i];
    char *nm = fm_arena_alloc(&d->a, strlen(name) + 1);
    float *p = fm_arena_alloc(&d->a, (size_t)n * sizeof(float));
    if (!nm || !p || d->n == MAX_T)
        return fm_fail(e, FM_ERR_INTERNAL, "parity_classifier: out of dump space at %s", name);
    strcpy(nm, name);
    memcpy(p, src, (size_t)n * sizeof(float));
    fm_st_tensor *t = &d->t[d->n++];
    *t = (fm_st_tensor){ .name = nm, .data = p, .dtype = FM_F32, .ndim = ndim };
    memcpy(t->shape, shape, (size_t)ndim * sizeof(int64_t));
    return FM_OK;
}

static int run(dump *d, const fm_classifier_cfg *cfg, int B, char **order, fm_err *e)
{
    fm_dnn dnn;
    fm_params p;
    fm_classifier m;
    FM_TRY(fm_dnn_init(&dnn, e));
    FM_TRY(fm_params_init(&p, 64, 4 << 20, 2024, e));
    int rc = fm_classifier_init(&m, &dnn, &p, cfg, B, 1, e);
    if (rc != FM_OK)
        goto out;
    /* GroupNorm affine parameters (features.{1,4,7,10}) off their 1/0 init */
    for (int i = 0; i < p.n; i++) {
        fm_param *t = &p.items[i];
        if (strncmp(t->name, "features.", 9) || atoi(t->name + 9) % 3 != 1)
            continue;
        const long n = (long)fm_tensor_numel(&t->w);
        fm_fill_normal(t->w.data, n, 2024, 1000 + (uint64_t)i, 0);
        const float base = strstr(t->name, ".weight") ? 1.0f : 0.0f;
        for (long k = 0; k < n; k++)
            fm_f32(&t->w)[k] = base + 0.3f * fm_f32(&t->w)[k];
    }
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
    if ((rc = put(d, "x", x, 4, xs, e)) || (rc = put(d, "labels", yf, 1, bs, e)) ||
        (rc = put(d, "logits", m.logits, 2, ls, e)) || (rc = put(d, "features", m.features, 2, fs, e)) ||
        (rc = put(d, "loss", &lf, 1, one, e)) || (rc = put(d, "correct", &cf, 1, one, e)))
        goto out_free;
    char gname[FM_PARAM_NAME + 8];
    *order = fm_arena_alloc(&d->a, (size_t)p.n * FM_PARAM_NAME);
    if (!*order) {
        rc = fm_fail(e, FM_ERR_INTERNAL, "parity_classifier: out of dump space at the order");
        goto out_free;
    }
    for (int i = 0; i < p.n; i++) {
        const fm_param *t = &p.items[i];
        snprintf(gname, sizeof gname, "grad.%s", t->name);
        if ((rc = put(d, t->name, t->w.data, t->w.ndim, t->w.shape, e)) ||
            (rc = put(d, gname, t->g.data, t->g.ndim, t->g.shape, e)))
            goto out_free;
        strcat(*order, t->name);
        strcat(*order, i + 1 < p.n ? "," : "");
    }
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
    static dump d;
    char *order = NULL;
    if (fm_arena_init(&d.a, (size_t)64 << 20, &e) != FM_OK) {
        fprintf(stderr, "parity_classifier: %s\n", e.msg);
        return 1;
    }
    int rc = run(&d, &cfg, B, &order, &e);
    if (rc == FM_OK) {
        const fm_st_meta meta[1] = { { "param_order", order } };
        rc = fm_st_write(argv[1], d.t, d.n, meta, 1, &e);
    }
    if (rc != FM_OK)
        fprintf(stderr, "parity_classifier: %s\n", e.msg);
    fm_arena_free(&d.a);
    return rc == FM_OK ? 0 : rc == FM_ERR_USAGE ? 2 : 1;
}
