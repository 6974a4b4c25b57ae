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
        return fm_fail(e, FM_ERR_INTERNAL, "parity_guide: out of dump space at %s", name);
    strcpy(nm, name);
    memcpy(p, src, (size_t)n * sizeof(float));
    fm_st_tensor *t = &d->t[d->n++];
    *t = (fm_st_tensor){ .name = nm, .data = p, .dtype = FM_F32, .ndim = ndim };
    memcpy(t->shape, shape, (size_t)ndim * sizeof(int64_t));
    return FM_OK;
}

static int run(dump *d, const fm_guide_cfg *cfg, int B, char **order, fm_err *e)
{
    fm_dnn dnn;
    fm_params p;
    fm_guide m;
    FM_TRY(fm_dnn_init(&dnn, e));
    FM_TRY(fm_params_init(&p, 64, 4 << 20, 2025, e));
    int rc = fm_guide_init(&m, &dnn, &p, cfg, B, 1, e);
    if (rc != FM_OK)
        goto out;
    for (int i = 0; i < p.n; i++) { /* GroupNorm affine parameters (features.{1,4,7,10}) off their 1/0 init */
        fm_param *t = &p.items[i];
        if (strncmp(t->name, "features.", 9) || atoi(t->name + 9) % 3 != 1)
            continue;
        const long n = (long)fm_tensor_numel(&t->w);
        fm_fill_normal(t->w.data, n, 2025, 1000 + (uint64_t)i, 0);
        const float base = strstr(t->name, ".weight") ? 1.0f : 0.0f;
        for (long k = 0; k < n; k++)
            fm_f32(&t->w)[k] = base + 0.3f * fm_f32(&t->w)[k];
    }
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
    if ((rc = put(d, "x", x, 4, xs, e)) || (rc = put(d, "t", t, 1, bs, e)) || (rc = put(d, "labels", yf, 1, bs, e)) ||
        (rc = put(d, "logits", logits, 2, ls, e)) || (rc = put(d, "loss", &lf, 1, one, e)))
        goto out_free;
    char gname[FM_PARAM_NAME + 8];
    *order = fm_arena_alloc(&d->a, (size_t)p.n * FM_PARAM_NAME);
    if (!*order) {
        rc = fm_fail(e, FM_ERR_INTERNAL, "parity_guide: out of dump space at the order");
        goto out_free;
    }
    **order = '\0';
    for (int i = 0; i < p.n; i++) { /* the training gradients, before fm_guide_grad_logp overwrites them */
        const fm_param *pt = &p.items[i];
        snprintf(gname, sizeof gname, "grad.%s", pt->name);
        if ((rc = put(d, pt->name, pt->w.data, pt->w.ndim, pt->w.shape, e)) ||
            (rc = put(d, gname, pt->g.data, pt->g.ndim, pt->g.shape, e)))
            goto out_free;
        strcat(*order, pt->name);
        strcat(*order, i + 1 < p.n ? "," : "");
    }
    if ((rc = fm_guide_grad_logp(&m, x, t, y, dx, logp, e)) || (rc = put(d, "logp", logp, 1, bs, e)) ||
        (rc = put(d, "dx_logp", dx, 4, xs, e)))
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
    static dump d;
    char *order = NULL;
    if (fm_arena_init(&d.a, (size_t)64 << 20, &e) != FM_OK) {
        fprintf(stderr, "parity_guide: %s\n", e.msg);
        return 1;
    }
    int rc = run(&d, &cfg, B, &order, &e);
    if (rc == FM_OK) {
        const fm_st_meta meta[1] = { { "param_order", order } };
        rc = fm_st_write(argv[1], d.t, d.n, meta, 1, &e);
    }
    if (rc != FM_OK)
        fprintf(stderr, "parity_guide: %s\n", e.msg);
    fm_arena_free(&d.a);
    return rc == FM_OK ? 0 : rc == FM_ERR_USAGE ? 2 : 1;
}
