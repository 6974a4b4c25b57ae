/* parity_dit.c - dump one DiT forward/backward for tests/parity/test_dit.py.
 *
 * usage: parity_dit OUT.safetensors [IN SIZE PATCH WIDTH DEPTH HEADS MLP_RATIO B T_FREQ]
 * (default: 4 8 1 64 2 4 4 3 256; 10 classes). Builds the model, redraws every
 * parameter (weights ~ N(0, (1.2/sqrt(fan_in))^2), vectors ~ N(0, 0.3^2), so
 * the adaLN-zero layers are live), draws x ~ N(0, 1) [B, H, W, IN], t (t[0] = 0,
 * the rest U[0, 1)), labels (y[0] = 10 = the null label, then (7i + 3) mod 11)
 * and dout ~ N(0, 1), runs forward and backward and writes x, t, y (as F32),
 * dout, out, every parameter under its state-dict name and its gradient as
 * "<name>.grad". The configuration is in the metadata. */
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "fm/dit.h"
#include "fm/dnn.h"
#include "fm/params.h"
#include "fm/rng.h"
#include "fm/safetensors.h"

static int dump(const char *path, const fm_dit_cfg *cfg, int b, fm_params *p, const float *x, const float *t,
                const float *yf, const float *dout, const float *out, fm_err *e)
{
    const int nt = 5 + 2 * p->n;
    fm_st_tensor *tt = calloc((size_t)nt, sizeof *tt);
    char(*gname)[FM_PARAM_NAME + 8] = calloc((size_t)p->n, sizeof *gname);
    if (!tt || !gname) {
        free(tt), free(gname);
        return fm_fail(e, FM_ERR_INTERNAL, "out of memory");
    }
    const int64_t s = cfg->size, c = cfg->in_ch;
    tt[0] = (fm_st_tensor){ "x", x, FM_F32, 4, { b, s, s, c } };
    tt[1] = (fm_st_tensor){ "t", t, FM_F32, 1, { b } };
    tt[2] = (fm_st_tensor){ "y", yf, FM_F32, 1, { b } };
    tt[3] = (fm_st_tensor){ "dout", dout, FM_F32, 4, { b, s, s, c } };
    tt[4] = (fm_st_tensor){ "out", out, FM_F32, 4, { b, s, s, c } };
    for (int i = 0; i < p->n; i++) {
        const fm_param *q = &p->items[i];
        snprintf(gname[i], sizeof gname[i], "%s.grad", q->name);
        tt[5 + 2 * i] = (fm_st_tensor){ q->name, q->w.data, FM_F32, q->w.ndim, { 0 } };
        tt[6 + 2 * i] = (fm_st_tensor){ gname[i], q->g.data, FM_F32, q->w.ndim, { 0 } };
        memcpy(tt[5 + 2 * i].shape, q->w.shape, sizeof q->w.shape);
        memcpy(tt[6 + 2 * i].shape, q->w.shape, sizeof q->w.shape);
    }
    char v[9][32];
    snprintf(v[0], sizeof v[0], "%d", cfg->in_ch);
    snprintf(v[1], sizeof v[1], "%d", cfg->size);
    snprintf(v[2], sizeof v[2], "%d", cfg->patch);
    snprintf(v[3], sizeof v[3], "%d", cfg->width);
    snprintf(v[4], sizeof v[4], "%d", cfg->depth);
    snprintf(v[5], sizeof v[5], "%d", cfg->heads);
    snprintf(v[6], sizeof v[6], "%.17g", cfg->mlp_ratio);
    snprintf(v[7], sizeof v[7], "%d", cfg->num_classes);
    snprintf(v[8], sizeof v[8], "%d", cfg->t_freq);
    const fm_st_meta meta[] = { { "in_ch", v[0] },     { "size", v[1] },      { "patch", v[2] },
                                { "width", v[3] },     { "depth", v[4] },     { "heads", v[5] },
                                { "mlp_ratio", v[6] }, { "num_classes", v[7] }, { "t_freq", v[8] } };
    int rc = fm_st_write(path, tt, nt, meta, (int)(sizeof meta / sizeof *meta), e);
    free(tt);
    free(gname);
    return rc;
}

static int run(const char *path, const fm_dit_cfg *cfg, int b, fm_err *e)
{
    fm_dnn d = { 0 };
    fm_params p = { 0 };
    fm_dit m = { 0 };
    int tensors;
    size_t padded;
    const long n = (long)b * cfg->size * cfg->size * cfg->in_ch;
    float *x = malloc((size_t)n * sizeof(float)), *dout = malloc((size_t)n * sizeof(float));
    float *out = malloc((size_t)n * sizeof(float)), *t = malloc((size_t)b * sizeof(float));
    float *yf = malloc((size_t)b * sizeof(float));
    int32_t *y = malloc((size_t)b * sizeof(int32_t));
    int rc = (!x || !dout || !out || !t || !yf || !y) ? fm_fail(e, FM_ERR_INTERNAL, "out of memory") : FM_OK;
    if (rc == FM_OK)
        rc = fm_dit_param_count(cfg, &tensors, &padded, NULL, e);
    if (rc == FM_OK)
        rc = fm_dnn_init(&d, e);
    if (rc == FM_OK)
        rc = fm_params_init(&p, tensors, padded, 11, e);
    if (rc == FM_OK)
        rc = fm_dit_init(&m, &d, &p, cfg, b, e);
    if (rc == FM_OK) {
        for (int i = 0; i < p.n; i++) {
            fm_param *q = &p.items[i];
            const long k = (long)fm_tensor_numel(&q->w);
            const float sd = q->w.ndim == 2 ? 1.2f / sqrtf((float)q->w.shape[1]) : 0.3f;
            fm_fill_normal(q->w.data, k, 17, (uint64_t)i, 0);
            for (long j = 0; j < k; j++)
                ((float *)q->w.data)[j] *= sd;
        }
        fm_fill_normal(x, n, 18, 1, 0);
        fm_fill_normal(dout, n, 18, 2, 0);
        fm_fill_uniform(t, b, 18, 3, 0);
        t[0] = 0.0f;
        for (int i = 0; i < b; i++) {
            y[i] = i == 0 ? cfg->num_classes : (int32_t)((7 * i + 3) % (cfg->num_classes + 1));
            yf[i] = (float)y[i];
        }
        rc = fm_dit_forward(&m, x, t, y, out, e);
    }
    if (rc == FM_OK)
        rc = fm_dit_backward(&m, dout, e);
    if (rc == FM_OK)
        rc = dump(path, &m.cfg, b, &p, x, t, yf, dout, out, e);
    fm_dit_free(&m);
    fm_params_free(&p);
    fm_dnn_free(&d);
    free(x), free(dout), free(out), free(t), free(yf), free(y);
    return rc;
}

int main(int argc, char **argv)
{
    if (argc != 2 && argc != 11) {
        fprintf(stderr, "usage: %s OUT.safetensors [IN SIZE PATCH WIDTH DEPTH HEADS MLP_RATIO B T_FREQ]\n", argv[0]);
        return 2;
    }
    fm_dit_cfg cfg = { .in_ch = 4, .size = 8, .patch = 1, .width = 64, .depth = 2, .heads = 4, .mlp_ratio = 4,
                       .num_classes = 10, .t_freq = 256 };
    int b = 3;
    if (argc == 11) {
        cfg.in_ch = atoi(argv[2]), cfg.size = atoi(argv[3]), cfg.patch = atoi(argv[4]), cfg.width = atoi(argv[5]);
        cfg.depth = atoi(argv[6]), cfg.heads = atoi(argv[7]), cfg.mlp_ratio = atof(argv[8]), b = atoi(argv[9]);
        cfg.t_freq = atoi(argv[10]);
    }
    fm_err e = { 0 };
    int rc = run(argv[1], &cfg, b, &e);
    if (rc != FM_OK)
        fprintf(stderr, "parity_dit: %s\n", e.msg);
    return rc;
}
