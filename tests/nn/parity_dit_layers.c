/* parity_dit_layers.c - dump LayerNorm and GELU cases for
 * tests/parity/test_dit_layers.py.
 *
 *   parity_dit_layers OUT layernorm N T D AFFINE EPS_EXP   (eps = 10^-EPS_EXP)
 *   parity_dit_layers OUT gelu N T D
 *
 * x [N, T, D] ~ N(0.3, 2^2) (LayerNorm) or N(0, 3^2) (GELU), dy ~ N(0, 1);
 * with AFFINE = 1, weight ~ N(1, 0.5^2) and bias ~ N(0, 0.5^2) replace the
 * 1 / 0 init. Writes x, dy, y, dx and, with affine, "norm.weight",
 * "norm.bias" and their gradients "norm.weight.grad", "norm.bias.grad". */
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "fm/arena.h"
#include "fm/gelu.h"
#include "fm/layernorm.h"
#include "fm/params.h"
#include "fm/rng.h"
#include "fm/safetensors.h"

static void fill(float *x, long n, uint64_t stream, float sd, float mean)
{
    fm_fill_normal(x, n, 2025, stream, 0);
    for (long i = 0; i < n; i++)
        x[i] = x[i] * sd + mean;
}

static int run(const char *path, const char *kind, int64_t nb, int64_t t, int64_t d, int affine, int eps_exp,
               fm_err *e)
{
    const int64_t rows = nb * t, n = rows * d;
    const int is_ln = !strcmp(kind, "layernorm");
    if (!is_ln && strcmp(kind, "gelu"))
        return fm_fail(e, FM_ERR_USAGE, "unknown case %s", kind);
    if (nb < 1 || t < 1 || d < 1)
        return fm_fail(e, FM_ERR_USAGE, "bad shape [%lld, %lld, %lld]", (long long)nb, (long long)t, (long long)d);
    fm_params p;
    fm_arena a;
    fm_layernorm l = { 0 };
    FM_TRY(fm_params_init(&p, 4, (size_t)(2 * d + 32), 9, e));
    int rc = fm_arena_init(&a, (size_t)(4 * n + 2 * rows) * sizeof(float) + 4096, e);
    float *x = NULL, *y = NULL, *dy = NULL, *dx = NULL;
    if (rc == FM_OK) {
        x = fm_arena_alloc(&a, (size_t)n * sizeof(float)), y = fm_arena_alloc(&a, (size_t)n * sizeof(float));
        dy = fm_arena_alloc(&a, (size_t)n * sizeof(float)), dx = fm_arena_alloc(&a, (size_t)n * sizeof(float));
        if (!x || !y || !dy || !dx)
            rc = fm_fail(e, FM_ERR_INTERNAL, "arena too small");
    }
    if (rc == FM_OK && is_ln)
        rc = fm_layernorm_init(&l, &p, &a, "norm", d, affine, powf(10.0f, (float)-eps_exp), rows, e);
    if (rc == FM_OK) {
        fill(x, n, 1, is_ln ? 2.0f : 3.0f, is_ln ? 0.3f : 0.0f);
        fill(dy, n, 2, 1.0f, 0.0f);
        if (is_ln && affine) {
            fill(l.weight->w.data, d, 3, 0.5f, 1.0f);
            fill(l.bias->w.data, d, 4, 0.5f, 0.0f);
        }
        if (is_ln) {
            rc = fm_layernorm_forward(&l, x, y, e);
            if (rc == FM_OK)
                rc = fm_layernorm_backward(&l, x, dy, dx, e);
        } else {
            fm_gelu_forward(x, y, n);
            fm_gelu_backward(x, dy, dx, n);
        }
    }
    if (rc == FM_OK) {
        fm_st_tensor tt[8] = {
            { "x", x, FM_F32, 3, { nb, t, d } },
            { "dy", dy, FM_F32, 3, { nb, t, d } },
            { "y", y, FM_F32, 3, { nb, t, d } },
            { "dx", dx, FM_F32, 3, { nb, t, d } },
        };
        int nt = 4;
        if (is_ln && affine) {
            tt[nt++] = (fm_st_tensor){ "norm.weight", l.weight->w.data, FM_F32, 1, { d } };
            tt[nt++] = (fm_st_tensor){ "norm.bias", l.bias->w.data, FM_F32, 1, { d } };
            tt[nt++] = (fm_st_tensor){ "norm.weight.grad", l.weight->g.data, FM_F32, 1, { d } };
            tt[nt++] = (fm_st_tensor){ "norm.bias.grad", l.bias->g.data, FM_F32, 1, { d } };
        }
        rc = fm_st_write(path, tt, nt, NULL, 0, e);
    }
    fm_layernorm_free(&l);
    fm_arena_free(&a);
    fm_params_free(&p);
    return rc;
}

int main(int argc, char **argv)
{
    if (argc < 6) {
        fprintf(stderr, "usage: %s OUT layernorm N T D AFFINE EPS_EXP | OUT gelu N T D\n", argv[0]);
        return 2;
    }
    fm_err e = { 0 };
    int affine = argc > 6 ? atoi(argv[6]) : 0, eps_exp = argc > 7 ? atoi(argv[7]) : 6;
    int rc = run(argv[1], argv[2], atoll(argv[3]), atoll(argv[4]), atoll(argv[5]), affine, eps_exp, &e);
    if (rc != FM_OK)
        fprintf(stderr, "parity_dit_layers: %s\n", e.msg);
    return rc;
}
