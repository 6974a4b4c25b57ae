/* parity_vae.c - dump one VAE training step for the PyTorch parity test
 * (tests/parity/test_vae.py).
 *
 *   parity_vae OUT B SIZE RES_BLOCKS LATENT GROUPS LOSS KL_WEIGHT CLAMP C0 [C1 ...]
 *     LOSS 0 = L2, 1 = L1; CLAMP 1 pushes latent channel 0's raw logvar above
 *     20 and channel 1's below -30 (through encoder.out_conv.bias); the
 *     channel list gives the levels.
 *
 * Every parameter is Philox-random (GroupNorm affine parameters moved off
 * 1/0), x is uniform in [-1, 1]. The file holds every parameter under its
 * name, its gradient under "grad.<name>", x, the noise eps actually used, the
 * outputs xhat, mu, logvar (clamped), z, the loss parts "recon", "kl",
 * "total", and the config as metadata. Activations are NHWC. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "fm/rng.h"
#include "fm/safetensors.h"
#include "fm/vae.h"

#define MAX_T 512

typedef struct dump {
    fm_st_tensor t[MAX_T];
    int n;
    fm_arena a;
} dump;

/* Record data (not copied) under a copy of name. */
static int put(dump *d, const char *name, const float *data, int ndim, const int64_t *shape, fm_err *e)
{
    char *nm = fm_arena_alloc(&d->a, strlen(name) + 1);
    if (!nm || d->n == MAX_T)
        return fm_fail(e, FM_ERR_INTERNAL, "parity_vae: out of dump space at %s", name);
    strcpy(nm, name);
    fm_st_tensor *t = &d->t[d->n++];
    *t = (fm_st_tensor){ .name = nm, .data = data, .dtype = FM_F32, .ndim = ndim };
    memcpy(t->shape, shape, (size_t)ndim * sizeof(int64_t));
    return FM_OK;
}

/* A copy of n floats (for values that change later, like the loss parts). */
static int put_copy(dump *d, const char *name, const float *src, int ndim, const int64_t *shape, fm_err *e)
{
    long n = 1;
    for (int i = 0; i < ndim; i++)
        n *= shape[i];
    float *p = fm_arena_alloc(&d->a, (size_t)n * sizeof(float));
    if (!p)
        return fm_fail(e, FM_ERR_INTERNAL, "parity_vae: out of dump space at %s", name);
    memcpy(p, src, (size_t)n * sizeof(float));
    return put(d, name, p, ndim, shape, e);
}

static int run(dump *d, fm_vae_cfg *cfg, int B, int clamp, fm_st_meta *meta, char vals[][64], fm_err *e)
{
    fm_dnn dnn;
    fm_params p;
    fm_vae v;
    FM_TRY(fm_dnn_init(&dnn, e));
    FM_TRY(fm_params_init(&p, 512, 8 << 20, 2024, e));
    int rc = fm_vae_init(&v, &dnn, &p, cfg, B, e);
    if (rc != FM_OK)
        goto out;
    /* GroupNorm affine parameters off their 1/0 init */
    for (int i = 0; i < p.n; i++) {
        fm_param *t = &p.items[i];
        if (!strstr(t->name, "norm"))
            continue;
        const long n = (long)fm_tensor_numel(&t->w);
        fm_fill_normal(t->w.data, n, 2024, 1000 + (uint64_t)i, 0);
        const float base = strstr(t->name, ".weight") ? 1.0f : 0.0f;
        for (long k = 0; k < n; k++)
            fm_f32(&t->w)[k] = base + 0.3f * fm_f32(&t->w)[k];
    }
    if (clamp) {
        fm_param *b = fm_params_find(&p, "encoder.out_conv.bias");
        fm_f32(&b->w)[cfg->latent_ch + 0] += 40.0f;
        fm_f32(&b->w)[cfg->latent_ch + 1] -= 50.0f;
    }
    const int S = cfg->size, lat = v.lat, lc = cfg->latent_ch;
    const long nx = (long)B * S * S * cfg->in_ch;
    float *x = fm_arena_alloc(&d->a, (size_t)nx * sizeof(float));
    if (!x) {
        rc = fm_fail(e, FM_ERR_INTERNAL, "parity_vae: out of dump space at x");
        goto out;
    }
    fm_fill_uniform(x, nx, 2024, 1, 0);
    for (long i = 0; i < nx; i++)
        x[i] = 2.0f * x[i] - 1.0f;
    fm_vae_loss l;
    if ((rc = fm_vae_forward(&v, x, 77, 5, 3, &l, e)) != FM_OK || (rc = fm_vae_backward(&v, x, e)) != FM_OK)
        goto out;

    const int64_t xs[4] = { B, S, S, cfg->in_ch }, zs[4] = { B, lat, lat, lc }, one[1] = { 1 };
    const float parts[3] = { (float)l.recon, (float)l.kl, (float)l.total };
    if ((rc = put(d, "x", x, 4, xs, e)) || (rc = put_copy(d, "xhat", v.dec.out, 4, xs, e)) ||
        (rc = put_copy(d, "eps", v.eps, 4, zs, e)) || (rc = put_copy(d, "mu", v.mu, 4, zs, e)) ||
        (rc = put_copy(d, "logvar", v.logvar, 4, zs, e)) || (rc = put_copy(d, "z", v.z, 4, zs, e)) ||
        (rc = put_copy(d, "recon", &parts[0], 1, one, e)) || (rc = put_copy(d, "kl", &parts[1], 1, one, e)) ||
        (rc = put_copy(d, "total", &parts[2], 1, one, e)))
        goto out;
    char gname[FM_PARAM_NAME + 8];
    for (int i = 0; i < p.n; i++) {
        const fm_param *t = &p.items[i];
        snprintf(gname, sizeof gname, "grad.%s", t->name);
        if ((rc = put_copy(d, t->name, t->w.data, t->w.ndim, t->w.shape, e)) ||
            (rc = put_copy(d, gname, t->g.data, t->g.ndim, t->g.shape, e)))
            goto out;
    }
    /* the parameter order, for the state-dict order check */
    char *order = fm_arena_alloc(&d->a, (size_t)p.n * FM_PARAM_NAME);
    if (!order) {
        rc = fm_fail(e, FM_ERR_INTERNAL, "parity_vae: out of dump space at the order");
        goto out;
    }
    for (int i = 0; i < p.n; i++) {
        strcat(order, p.items[i].name);
        strcat(order, i + 1 < p.n ? "," : "");
    }
    snprintf(vals[0], 64, "%d", lat);
    meta[0] = (fm_st_meta){ "latent_hw", vals[0] };
    meta[1] = (fm_st_meta){ "param_order", order };
out:
    fm_vae_free(&v);
    fm_params_free(&p);
    fm_dnn_free(&dnn);
    return rc;
}

int main(int argc, char **argv)
{
    if (argc < 11 || argc > 10 + FM_VAE_MAX_LEVELS) {
        fprintf(stderr, "usage: parity_vae OUT B SIZE RES_BLOCKS LATENT GROUPS LOSS KL_WEIGHT CLAMP C0 [C1 ...]\n");
        return 2;
    }
    fm_vae_cfg cfg = fm_vae_cfg_default();
    const int B = atoi(argv[2]);
    cfg.size = atoi(argv[3]);
    cfg.res_blocks = atoi(argv[4]);
    cfg.latent_ch = atoi(argv[5]);
    cfg.groups = atoi(argv[6]);
    cfg.recon = atoi(argv[7]) ? FM_VAE_LOSS_L1 : FM_VAE_LOSS_L2;
    cfg.kl_weight = (float)atof(argv[8]);
    const int clamp = atoi(argv[9]);
    cfg.levels = argc - 10;
    for (int i = 0; i < cfg.levels; i++)
        cfg.channels[i] = atoi(argv[10 + i]);
    fm_err e = { 0 };
    static dump d;
    fm_st_meta meta[2];
    char vals[1][64];
    if (fm_arena_init(&d.a, (size_t)256 << 20, &e) != FM_OK) {
        fprintf(stderr, "parity_vae: %s\n", e.msg);
        return 1;
    }
    int rc = run(&d, &cfg, B, clamp, meta, vals, &e);
    if (rc == FM_OK)
        rc = fm_st_write(argv[1], d.t, d.n, meta, 2, &e);
    if (rc != FM_OK)
        fprintf(stderr, "parity_vae: %s\n", e.msg);
    fm_arena_free(&d.a);
    return rc == FM_OK ? 0 : rc == FM_ERR_USAGE ? 2 : 1;
}
