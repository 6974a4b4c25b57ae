/* parity_layers.c - dump the hand-written layers for the PyTorch parity test
 * (tests/parity/test_layers.py).
 *
 *   parity_layers OUT groupnorm N H W C G FLAGS ADA   (FLAGS: 1 = SiLU, 2 = no affine)
 *   parity_layers OUT silu|upsample|add|add_nc|mse N H W C
 *   parity_layers OUT concat N H W C1 C2
 *   parity_layers OUT class_embed N NUM_CLASSES D
 *   parity_layers OUT time_embed N D SCALE
 *
 * Inputs, parameters and dy are Philox draws; everything (inputs, params, dy,
 * outputs, input and parameter gradients) goes to one safetensors file.
 * Activations are NHWC; labels are stored as F32. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "fm/act.h"
#include "fm/arena.h"
#include "fm/embed.h"
#include "fm/groupnorm.h"
#include "fm/loss.h"
#include "fm/params.h"
#include "fm/rng.h"
#include "fm/safetensors.h"
#include "fm/tensorops.h"
#include "fm/updown.h"

#define MAX_T 16

typedef struct dump {
    fm_st_tensor t[MAX_T];
    int n;
    fm_arena a;
} dump;

/* A new zeroed tensor named name in the dump. */
static float *add(dump *d, const char *name, int ndim, int64_t d0, int64_t d1, int64_t d2, int64_t d3)
{
    const int64_t s[4] = { d0, d1, d2, d3 };
    long numel = 1;
    for (int i = 0; i < ndim; i++)
        numel *= s[i];
    float *p = fm_arena_alloc(&d->a, (size_t)numel * sizeof(float));
    if (!p || d->n == MAX_T) { /* a test program: stop rather than write a partial file */
        fprintf(stderr, "parity_layers: out of dump space at %s\n", name);
        exit(1);
    }
    fm_st_tensor *t = &d->t[d->n++];
    t->name = name;
    t->dtype = FM_F32;
    t->ndim = ndim;
    for (int i = 0; i < ndim; i++)
        t->shape[i] = s[i];
    t->data = p;
    return p;
}

static float *randn(dump *d, const char *name, int ndim, int64_t d0, int64_t d1, int64_t d2, int64_t d3,
                    uint64_t stream, float mul, float off)
{
    float *p = add(d, name, ndim, d0, d1, d2, d3);
    long numel = (long)d0 * (ndim > 1 ? d1 : 1) * (ndim > 2 ? d2 : 1) * (ndim > 3 ? d3 : 1);
    fm_fill_normal(p, numel, 2024, stream, 0);
    for (long i = 0; i < numel; i++)
        p[i] = p[i] * mul + off;
    return p;
}

static int usage(void)
{
    fprintf(stderr, "usage: parity_layers OUT CASE ARGS... (see the comment at the top of parity_layers.c)\n");
    return 2;
}

static int run(dump *d, const char *cs, int na, const int *v, fm_err *e)
{
    fm_params p;
    FM_TRY(fm_params_init(&p, 8, 1 << 20, 77, e));
    int rc = FM_OK;
    if (!strcmp(cs, "groupnorm") && na == 7) {
        const int N = v[0], H = v[1], W = v[2], C = v[3], G = v[4], flags = v[5], ada = v[6];
        fm_groupnorm l;
        if ((rc = fm_groupnorm_init(&l, &p, &d->a, "gn", G, 1e-5f, flags, N, H, W, C, e)) != FM_OK)
            goto out;
        float *x = randn(d, "x", 4, N, H, W, C, 1, 2.0f, 0.5f);
        float *dy = randn(d, "dy", 4, N, H, W, C, 2, 1.0f, 0.0f);
        float *y = add(d, "y", 4, N, H, W, C), *dx = add(d, "dx", 4, N, H, W, C);
        float *s = NULL, *sh = NULL, *ds = NULL, *dsh = NULL;
        if (ada) {
            s = randn(d, "scale", 2, N, C, 0, 0, 3, 0.5f, 0.0f);
            sh = randn(d, "shift", 2, N, C, 0, 0, 4, 1.0f, 0.0f);
            ds = add(d, "dscale", 2, N, C, 0, 0);
            dsh = add(d, "dshift", 2, N, C, 0, 0);
        }
        if (l.weight) {
            float *w = randn(d, "weight", 1, C, 0, 0, 0, 5, 0.5f, 1.0f);
            float *b = randn(d, "bias", 1, C, 0, 0, 0, 6, 0.5f, 0.0f);
            memcpy(l.weight->w.data, w, (size_t)C * sizeof(float));
            memcpy(l.bias->w.data, b, (size_t)C * sizeof(float));
        }
        if ((rc = fm_groupnorm_forward_ada(&l, x, s, sh, y, e)) != FM_OK ||
            (rc = fm_groupnorm_backward_ada(&l, x, s, sh, dy, dx, ds, dsh, e)) != FM_OK)
            goto out;
        if (l.weight) {
            memcpy(add(d, "dweight", 1, C, 0, 0, 0), l.weight->g.data, (size_t)C * sizeof(float));
            memcpy(add(d, "dbias", 1, C, 0, 0, 0), l.bias->g.data, (size_t)C * sizeof(float));
        }
    } else if ((!strcmp(cs, "silu") || !strcmp(cs, "upsample") || !strcmp(cs, "add") || !strcmp(cs, "add_nc") ||
                !strcmp(cs, "mse")) && na == 4) {
        const int N = v[0], H = v[1], W = v[2], C = v[3];
        const long nx = (long)N * H * W * C;
        float *x = randn(d, "x", 4, N, H, W, C, 1, 2.0f, 0.0f);
        float *dx = add(d, "dx", 4, N, H, W, C);
        if (!strcmp(cs, "silu")) {
            float *dy = randn(d, "dy", 4, N, H, W, C, 2, 1.0f, 0.0f), *y = add(d, "y", 4, N, H, W, C);
            fm_silu_forward(x, y, nx);
            fm_silu_backward(x, dy, dx, nx);
        } else if (!strcmp(cs, "upsample")) {
            float *dy = randn(d, "dy", 4, N, 2 * H, 2 * W, C, 2, 1.0f, 0.0f);
            float *y = add(d, "y", 4, N, 2 * H, 2 * W, C);
            fm_upsample2x_forward(x, y, N, H, W, C);
            fm_upsample2x_backward(dy, dx, N, H, W, C);
        } else if (!strcmp(cs, "add")) {
            float *b = randn(d, "b", 4, N, H, W, C, 3, 1.0f, 0.0f), *db = add(d, "db", 4, N, H, W, C);
            float *dy = randn(d, "dy", 4, N, H, W, C, 2, 1.0f, 0.0f), *y = add(d, "y", 4, N, H, W, C);
            fm_add(x, b, y, nx);
            fm_add_backward(dy, dx, db, nx);
        } else if (!strcmp(cs, "add_nc")) {
            float *b = randn(d, "b", 2, N, C, 0, 0, 3, 1.0f, 0.0f), *db = add(d, "db", 2, N, C, 0, 0);
            float *dy = randn(d, "dy", 4, N, H, W, C, 2, 1.0f, 0.0f), *y = add(d, "y", 4, N, H, W, C);
            memcpy(y, x, (size_t)nx * sizeof(float));
            fm_add_nc(y, b, N, (long)H * W, C);
            memcpy(dx, dy, (size_t)nx * sizeof(float));
            fm_add_nc_backward(dy, db, N, (long)H * W, C);
        } else {
            float *t = randn(d, "target", 4, N, H, W, C, 3, 1.0f, 0.3f);
            float *up = randn(d, "dy", 1, 1, 0, 0, 0, 2, 1.0f, 0.0f); /* the upstream scalar */
            float *loss = add(d, "y", 1, 1, 0, 0, 0);
            loss[0] = (float)fm_mse_forward(x, t, nx);
            fm_mse_backward(x, t, nx, up[0], dx);
        }
    } else if (!strcmp(cs, "concat") && na == 5) {
        const int N = v[0], H = v[1], W = v[2], C1 = v[3], C2 = v[4];
        const long rows = (long)N * H * W;
        float *a = randn(d, "x", 4, N, H, W, C1, 1, 1.0f, 0.0f), *b = randn(d, "b", 4, N, H, W, C2, 3, 1.0f, 0.0f);
        float *dy = randn(d, "dy", 4, N, H, W, C1 + C2, 2, 1.0f, 0.0f), *y = add(d, "y", 4, N, H, W, C1 + C2);
        float *da = add(d, "dx", 4, N, H, W, C1), *db = add(d, "db", 4, N, H, W, C2);
        fm_concat_forward(a, C1, b, C2, y, rows);
        fm_concat_backward(dy, C1, C2, da, db, rows);
    } else if (!strcmp(cs, "class_embed") && na == 3) {
        const int N = v[0], K = v[1], D = v[2];
        fm_class_embed l;
        if ((rc = fm_class_embed_init(&l, &p, "emb", N, K, D, e)) != FM_OK)
            goto out;
        float *lf = add(d, "labels", 1, N, 0, 0, 0);
        int32_t *lab = fm_arena_alloc(&d->a, (size_t)N * sizeof(int32_t));
        for (int n = 0; n < N; n++) {
            lab[n] = n == 0 ? K : (int32_t)fm_rand_below((uint32_t)K + 1, 2024, 7, (uint64_t)n); /* the null label at least once */
            lf[n] = (float)lab[n];
        }
        memcpy(add(d, "weight", 2, K + 1, D, 0, 0), l.weight->w.data, (size_t)(K + 1) * D * sizeof(float));
        float *dy = randn(d, "dy", 2, N, D, 0, 0, 2, 1.0f, 0.0f), *y = add(d, "y", 2, N, D, 0, 0);
        if ((rc = fm_class_embed_forward(&l, lab, y, e)) != FM_OK ||
            (rc = fm_class_embed_backward(&l, lab, dy, e)) != FM_OK)
            goto out;
        memcpy(add(d, "dweight", 2, K + 1, D, 0, 0), l.weight->g.data, (size_t)(K + 1) * D * sizeof(float));
    } else if (!strcmp(cs, "time_embed") && na == 3) {
        const int N = v[0], D = v[1];
        fm_time_embed l;
        if ((rc = fm_time_embed_init(&l, &d->a, N, D, (double)v[2], e)) != FM_OK)
            goto out;
        float *t = add(d, "x", 1, N, 0, 0, 0);
        fm_fill_uniform(t, N, 2024, 1, 0);
        float *dy = randn(d, "dy", 2, N, D, 0, 0, 2, 1.0f, 0.0f), *y = add(d, "y", 2, N, D, 0, 0);
        float *dt = add(d, "dx", 1, N, 0, 0, 0);
        if ((rc = fm_time_embed_forward(&l, t, y, e)) != FM_OK || (rc = fm_time_embed_backward(&l, t, dy, dt, e)))
            goto out;
    } else {
        rc = fm_fail(e, FM_ERR_USAGE, "unknown case %s with %d arguments", cs, na);
    }
out:
    fm_params_free(&p);
    return rc;
}

int main(int argc, char **argv)
{
    if (argc < 3 || argc > 10)
        return usage();
    int v[8], na = argc - 3;
    for (int i = 0; i < na; i++)
        v[i] = atoi(argv[3 + i]);
    fm_err e = { 0 };
    dump d = { .n = 0 };
    if (fm_arena_init(&d.a, (size_t)256 << 20, &e) != FM_OK) {
        fprintf(stderr, "parity_layers: %s\n", e.msg);
        return 1;
    }
    int rc = run(&d, argv[2], na, v, &e);
    if (rc == FM_OK)
        rc = fm_st_write(argv[1], d.t, d.n, NULL, 0, &e);
    if (rc != FM_OK)
        fprintf(stderr, "parity_layers %s: %s\n", argv[2], e.msg);
    fm_arena_free(&d.a);
    return rc == FM_OK ? 0 : rc == FM_ERR_USAGE ? 2 : 1;
}
