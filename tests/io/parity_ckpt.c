/* parity_ckpt.c - write a checkpoint of a toy model to argv[1] for
 * tests/parity/test_ckpt_numpy.py, which reads it with json + numpy only.
 *
 * Model (names and shapes the Python test expects):
 *   conv.weight [16, 8, 3, 3], conv.bias [16], norm.weight [16], lin.weight [10, 33]
 * groups "", "ema.", "adam.m.", "adam.v."; extras latent_scale [1], counters [2, 3].
 * For every tensor the metadata also holds "check.<name>" =
 * "<sum> <sum of squares> <first> <last>" (sums in double, in order; values %.9g),
 * so the reader can confirm it decoded the values the writer held. */
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "fm/ckpt.h"
#include "fm/rng.h"

static void check_string(char *out, size_t n, const float *x, size_t count)
{
    double s = 0, s2 = 0;
    for (size_t i = 0; i < count; i++) {
        s += x[i];
        s2 += (double)x[i] * x[i];
    }
    snprintf(out, n, "%.17g %.17g %.9g %.9g", s, s2, x[0], x[count - 1]);
}

int main(int argc, char **argv)
{
    if (argc < 2) {
        fprintf(stderr, "usage: %s OUT.safetensors\n", argv[0]);
        return 2;
    }
    fm_err e = { 0 };
    fm_params p;
    int64_t conv[4] = { 16, 8, 3, 3 }, c16[1] = { 16 }, lin[2] = { 10, 33 };
    if (fm_params_init(&p, 8, 4096, 1, &e) || fm_params_add(&p, NULL, 4, conv, &e, "conv.weight") ||
        fm_params_add(&p, NULL, 1, c16, &e, "conv.bias") || fm_params_add(&p, NULL, 1, c16, &e, "norm.weight") ||
        fm_params_add(&p, NULL, 2, lin, &e, "lin.weight")) {
        fprintf(stderr, "parity_ckpt: %s\n", e.msg);
        return 1;
    }
    float *ema = calloc(p.numel, sizeof(float)), *m = calloc(p.numel, sizeof(float)),
          *v = calloc(p.numel, sizeof(float));
    float *base[4] = { p.data, ema, m, v };
    const char *pre[4] = { "", "ema.", "adam.m.", "adam.v." };
    fm_ckpt_group g[4];
    enum { NCHECK = 4 * 4 + 2 };
    fm_st_meta meta[NCHECK + 3];
    char keys[NCHECK][160], vals[NCHECK][128];
    int nm = 0;
    for (int k = 0; k < 4; k++) {
        g[k] = (fm_ckpt_group){ pre[k], &p, base[k] };
        for (int i = 0; i < p.n; i++) {
            fm_param *q = &p.items[i];
            size_t cnt = (size_t)fm_tensor_numel(&q->w);
            float *x = base[k] + q->offset;
            fm_fill_normal(x, (long)cnt, 11, (uint64_t)(k * 16 + i), 0);
            if (k == 3) /* second moments are non-negative */
                for (size_t j = 0; j < cnt; j++)
                    x[j] *= x[j];
            snprintf(keys[nm], sizeof keys[nm], "check.%s%s", pre[k], q->name);
            check_string(vals[nm], sizeof vals[nm], x, cnt);
            meta[nm] = (fm_st_meta){ keys[nm], vals[nm] };
            nm++;
        }
    }
    float scale[1] = { 0.18215f }, counters[6] = { 1, 2, 3, 4, 5, 16777216.0f };
    fm_ckpt_extra x[2] = { { "latent_scale", scale, 1, { 1 } }, { "counters", counters, 2, { 2, 3 } } };
    for (int i = 0; i < 2; i++) {
        snprintf(keys[nm], sizeof keys[nm], "check.%s", x[i].name);
        check_string(vals[nm], sizeof vals[nm], x[i].data, i == 0 ? 1 : 6);
        meta[nm] = (fm_st_meta){ keys[nm], vals[nm] };
        nm++;
    }
    meta[nm++] = (fm_st_meta){ "config", "run:\n  seed: 11\nflow:\n  lr: \"3e-4\"\n" };
    meta[nm++] = (fm_st_meta){ "seed", "11" };
    meta[nm++] = (fm_st_meta){ "world_size", "2" };
    int rc = fm_ckpt_write(argv[1], "flow", 1234, g, 4, x, 2, meta, nm, &e);
    if (rc != FM_OK)
        fprintf(stderr, "parity_ckpt: %s\n", e.msg);
    free(ema);
    free(m);
    free(v);
    fm_params_free(&p);
    return rc == FM_OK ? 0 : 1;
}
