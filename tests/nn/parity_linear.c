/* parity_linear.c - dump one linear-layer case for tests/parity/test_linear.py.
 *
 * usage: parity_linear OUT.safetensors [M IN OUT BIAS]
 * Builds layer "fc" (default init), draws x [M, IN] and dy [M, OUT] ~ N(0, 1),
 * runs forward and backward, and writes x, dy, y, dx, the parameters and
 * their gradients ("<param>.grad"). */
#include <stdio.h>
#include <stdlib.h>

#include "fm/arena.h"
#include "fm/dnn.h"
#include "fm/linear.h"
#include "fm/params.h"
#include "fm/rng.h"
#include "fm/safetensors.h"

static int run(const char *path, int64_t m, int64_t in, int64_t out, int bias, fm_err *e)
{
    fm_dnn d;
    fm_params p;
    fm_arena a;
    fm_linear l = { 0 };
    int rc = fm_dnn_init(&d, e);
    if (rc == FM_OK)
        rc = fm_params_init(&p, 4, (size_t)(out * in + out + 32), 3, e);
    if (rc == FM_OK)
        rc = fm_arena_init(&a, (size_t)(4 * m * (in + out)) * sizeof(float) + (16 << 20), e);
    if (rc != FM_OK)
        return rc;
    rc = fm_linear_init(&l, &d, &p, &a, "fc", in, out, bias, m, e);
    float *x = fm_arena_alloc(&a, (size_t)(m * in) * sizeof(float)), *dx = fm_arena_alloc(&a, (size_t)(m * in) * sizeof(float));
    float *y = fm_arena_alloc(&a, (size_t)(m * out) * sizeof(float)), *dy = fm_arena_alloc(&a, (size_t)(m * out) * sizeof(float));
    if (rc == FM_OK && (!x || !dx || !y || !dy))
        rc = fm_fail(e, FM_ERR_INTERNAL, "arena too small");
    if (rc == FM_OK) {
        fm_fill_normal(x, m * in, 9, 1, 0);
        fm_fill_normal(dy, m * out, 9, 2, 0);
        rc = fm_linear_forward(&l, x, y, e);
    }
    if (rc == FM_OK)
        rc = fm_linear_backward(&l, x, dy, dx, e);
    if (rc == FM_OK) {
        fm_st_tensor t[8] = {
            { "x", x, FM_F32, 2, { m, in } },
            { "dy", dy, FM_F32, 2, { m, out } },
            { "y", y, FM_F32, 2, { m, out } },
            { "dx", dx, FM_F32, 2, { m, in } },
            { "fc.weight", l.weight->w.data, FM_F32, 2, { out, in } },
            { "fc.weight.grad", l.weight->g.data, FM_F32, 2, { out, in } },
        };
        int nt = 6;
        if (bias) {
            t[nt++] = (fm_st_tensor){ "fc.bias", l.bias->w.data, FM_F32, 1, { out } };
            t[nt++] = (fm_st_tensor){ "fc.bias.grad", l.bias->g.data, FM_F32, 1, { out } };
        }
        rc = fm_st_write(path, t, nt, NULL, 0, e);
    }
    fm_linear_free(&l);
    fm_arena_free(&a);
    fm_params_free(&p);
    fm_dnn_free(&d);
    return rc;
}

int main(int argc, char **argv)
{
    if (argc != 2 && argc != 6) {
        fprintf(stderr, "usage: %s OUT.safetensors [M IN OUT BIAS]\n", argv[0]);
        return 2;
    }
    int64_t m = 5, in = 7, out = 3;
    int bias = 1;
    if (argc == 6) {
        m = atoll(argv[2]), in = atoll(argv[3]), out = atoll(argv[4]), bias = atoi(argv[5]);
    }
    fm_err e = { 0 };
    int rc = run(argv[1], m, in, out, bias, &e);
    if (rc != FM_OK)
        fprintf(stderr, "parity_linear: %s\n", e.msg);
    return rc;
}
