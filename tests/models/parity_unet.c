/* parity_unet.c - dump one U-Net forward/backward for tests/parity/test_unet.py.
 *
 * usage: parity_unet OUT.safetensors [latent|pixel]
 *   latent: in_ch 4, 8x8, channels {32, 64}, res_blocks 2, attention at 4, heads 4,
 *           groups 8, emb 64, B = 3 (the default config, narrower)
 *   pixel:  in_ch 1, 16x16, channels {16, 32, 32}, res_blocks 1, attention at 4,
 *           heads 2, groups 8, emb 32, B = 2 (three levels, an identity skip)
 * Every parameter is redrawn from Philox (the zero-initialised conv2 / out_conv
 * too, so every path carries signal): matrices N(0, 1/fan_in), GroupNorm
 * weights 1 + 0.2 N(0, 1), biases 0.2 N(0, 1), the class table N(0, 1).
 * Inputs: x, dout ~ N(0, 1), t ~ U[0, 1), y random with a repeated label and the
 * null label. Writes x [B, H, W, C], t [B], y [B] (as floats), dout, out, every
 * parameter under its name and its gradient as "<name>.grad" (registration
 * order), and the config as JSON in the metadata key "cfg". */
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "fm/dnn.h"
#include "fm/params.h"
#include "fm/rng.h"
#include "fm/safetensors.h"
#include "fm/unet.h"

static void perturb(fm_params *p)
{
    for (int i = 0; i < p->n; i++) {
        fm_param *q = &p->items[i];
        float *v = q->w.data;
        const long n = (long)fm_tensor_numel(&q->w);
        fm_fill_normal(v, n, 77, 1000 + (uint64_t)i, 0);
        const size_t len = strlen(q->name);
        const int is_weight = len > 7 && strcmp(q->name + len - 7, ".weight") == 0;
        if (strcmp(q->name, "class_emb.weight") == 0)
            continue;
        if (q->w.ndim >= 2) {
            const float sd = 1.0f / sqrtf((float)(n / q->w.shape[0]));
            for (long j = 0; j < n; j++)
                v[j] *= sd;
        } else if (is_weight && strstr(q->name, "norm")) {
            for (long j = 0; j < n; j++)
                v[j] = 1.0f + 0.2f * v[j];
        } else {
            for (long j = 0; j < n; j++)
                v[j] *= 0.2f;
        }
    }
}

static int run(const char *path, const fm_unet_cfg *cfg, int B, fm_err *e)
{
    fm_dnn d = { 0 };
    fm_params p = { 0 };
    fm_unet u = { 0 };
    int nt_cap = 0, tensors;
    size_t padded;
    float *buf = NULL;
    fm_st_tensor *tt = NULL;
    char(*gname)[FM_PARAM_NAME + 8] = NULL;
    int rc = fm_unet_param_count(cfg, &tensors, &padded, NULL, e);
    if (rc == FM_OK)
        rc = fm_dnn_init(&d, e);
    if (rc == FM_OK)
        rc = fm_params_init(&p, tensors, padded, 5, e);
    if (rc == FM_OK)
        rc = fm_unet_init(&u, &d, &p, cfg, B, e);
    if (rc != FM_OK)
        goto out;
    perturb(&p);

    const long S = cfg->size, nx = (long)B * S * S * cfg->in_ch;
    buf = malloc((size_t)(3 * nx + 2 * B) * sizeof(float));
    nt_cap = 2 * p.n + 8;
    tt = calloc((size_t)nt_cap, sizeof *tt);
    gname = calloc((size_t)p.n, sizeof *gname);
    int32_t *y = malloc((size_t)B * sizeof(int32_t));
    if (!buf || !tt || !gname || !y) {
        free(y);
        rc = fm_fail(e, FM_ERR_INTERNAL, "out of memory");
        goto out;
    }
    float *x = buf, *dout = x + nx, *o = dout + nx, *t = o + nx, *yf = t + B;
    fm_fill_normal(x, nx, 78, 1, 0);
    fm_fill_normal(dout, nx, 78, 2, 0);
    fm_fill_uniform(t, B, 78, 3, 0);
    for (int i = 0; i < B; i++)
        y[i] = (int32_t)fm_rand_below((uint32_t)cfg->num_classes, 78, 4, (uint64_t)i);
    if (B >= 3)
        y[1] = y[0];                      /* a repeated label: its table row sums two gradients */
    y[B - 1] = cfg->num_classes;          /* the null label */
    for (int i = 0; i < B; i++)
        yf[i] = (float)y[i];
    rc = fm_unet_forward(&u, x, t, y, o, e);
    if (rc == FM_OK)
        rc = fm_unet_backward(&u, dout, e);
    free(y);
    if (rc != FM_OK)
        goto out;

    int nt = 0;
    tt[nt++] = (fm_st_tensor){ "x", x, FM_F32, 4, { B, S, S, cfg->in_ch } };
    tt[nt++] = (fm_st_tensor){ "t", t, FM_F32, 1, { B } };
    tt[nt++] = (fm_st_tensor){ "y", yf, FM_F32, 1, { B } };
    tt[nt++] = (fm_st_tensor){ "dout", dout, FM_F32, 4, { B, S, S, cfg->in_ch } };
    tt[nt++] = (fm_st_tensor){ "out", o, FM_F32, 4, { B, S, S, cfg->in_ch } };
    for (int i = 0; i < p.n; i++) {
        const fm_param *q = &p.items[i];
        snprintf(gname[i], sizeof gname[i], "%s.grad", q->name);
        tt[nt] = (fm_st_tensor){ q->name, q->w.data, FM_F32, q->w.ndim, { 0 } };
        memcpy(tt[nt].shape, q->w.shape, sizeof q->w.shape);
        nt++;
        tt[nt] = (fm_st_tensor){ gname[i], q->g.data, FM_F32, q->w.ndim, { 0 } };
        memcpy(tt[nt].shape, q->w.shape, sizeof q->w.shape);
        nt++;
    }
    char js[1024], list[256] = "", alist[256] = "";
    for (int i = 0; i < cfg->levels; i++)
        snprintf(list + strlen(list), sizeof list - strlen(list), "%s%d", i ? ", " : "", cfg->channels[i]);
    for (int i = 0; i < cfg->n_attn; i++)
        snprintf(alist + strlen(alist), sizeof alist - strlen(alist), "%s%d", i ? ", " : "", cfg->attn_res[i]);
    snprintf(js, sizeof js,
             "{\"in_ch\": %d, \"size\": %d, \"channels\": [%s], \"res_blocks\": %d, \"attn_res\": [%s], "
             "\"heads\": %d, \"groups\": %d, \"emb_dim\": %d, \"num_classes\": %d}",
             cfg->in_ch, cfg->size, list, cfg->res_blocks, alist, cfg->heads, cfg->groups, cfg->emb_dim,
             cfg->num_classes);
    fm_st_meta meta[1] = { { "cfg", js } };
    rc = fm_st_write(path, tt, nt, meta, 1, e);
out:
    free(gname);
    free(tt);
    free(buf);
    fm_unet_free(&u);
    fm_params_free(&p);
    fm_dnn_free(&d);
    return rc;
}

int main(int argc, char **argv)
{
    if (argc < 2 || argc > 3) {
        fprintf(stderr, "usage: %s OUT.safetensors [latent|pixel]\n", argv[0]);
        return 2;
    }
    const char *which = argc == 3 ? argv[2] : "latent";
    fm_unet_cfg cfg;
    int B;
    if (strcmp(which, "latent") == 0) {
        cfg = (fm_unet_cfg){ .in_ch = 4, .size = 8, .levels = 2, .channels = { 32, 64 }, .res_blocks = 2,
                             .n_attn = 1, .attn_res = { 4 }, .heads = 4, .groups = 8, .emb_dim = 64,
                             .num_classes = 10 };
        B = 3;
    } else if (strcmp(which, "pixel") == 0) {
        cfg = (fm_unet_cfg){ .in_ch = 1, .size = 16, .levels = 3, .channels = { 16, 32, 32 }, .res_blocks = 1,
                             .n_attn = 1, .attn_res = { 4 }, .heads = 2, .groups = 8, .emb_dim = 32,
                             .num_classes = 10 };
        B = 2;
    } else {
        fprintf(stderr, "parity_unet: unknown case %s (latent or pixel)\n", which);
        return 2;
    }
    fm_err e = { 0 };
    int rc = run(argv[1], &cfg, B, &e);
    if (rc != FM_OK)
        fprintf(stderr, "parity_unet: %s\n", e.msg);
    return rc;
}
