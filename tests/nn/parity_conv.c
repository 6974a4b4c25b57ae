/* parity_conv.c - dump one fm_conv2d forward/backward for tests/parity/test_conv.py.
 *
 * usage: parity_conv OUT.safetensors [N H W CIN COUT K STRIDE PAD BIAS]
 * Writes x [N, H, W, Cin], conv.weight [Cout, Cin, k, k], conv.bias [Cout],
 * dy [N, Ho, Wo, Cout], y, dx and the gradients conv.weight.grad,
 * conv.bias.grad (activations NHWC). Parameters start from the layer's own
 * default init; gradients are pre-filled with garbage so a backward that
 * accumulates instead of overwriting fails the comparison. */
#include <stdio.h>
#include <stdlib.h>

#include "fm/conv.h"
#include "fm/rng.h"
#include "fm/safetensors.h"

static int run(const char *path, const int64_t *a, fm_err *e)
{
    int64_t n = a[0], h = a[1], w = a[2], cin = a[3], cout = a[4], k = a[5], s = a[6], pad = a[7];
    int bias = a[8] != 0;
    fm_dnn d = { 0 };
    fm_params p = { 0 };
    fm_arena ar = { 0 };
    fm_conv2d l = { 0 };
    float *x = NULL, *y = NULL, *dy = NULL, *dx = NULL;
    int rc;
    size_t nparams = (size_t)(cout * cin * k * k + cout + 64);
    if ((rc = fm_dnn_init(&d, e)) != FM_OK || (rc = fm_params_init(&p, 4, nparams, 21, e)) != FM_OK ||
        (rc = fm_arena_init(&ar, (size_t)64 << 20, e)) != FM_OK ||
        (rc = fm_conv2d_init(&l, &d, &p, &ar, "conv", cin, cout, k, s, pad, bias, n, h, w, e)) != FM_OK)
        goto out;
    int64_t nx = n * h * w * cin, ny = n * l.ho * l.wo * cout, nw = cout * cin * k * k;
    x = malloc((size_t)nx * sizeof *x);
    dx = malloc((size_t)nx * sizeof *dx);
    y = malloc((size_t)ny * sizeof *y);
    dy = malloc((size_t)ny * sizeof *dy);
    if (!x || !dx || !y || !dy) {
        rc = fm_fail(e, FM_ERR_INTERNAL, "out of memory");
        goto out;
    }
    fm_fill_normal(x, nx, 77, 1, 0);
    fm_fill_normal(dy, ny, 77, 2, 0);
    float *gw = l.weight->g.data;
    for (int64_t i = 0; i < nw; i++)
        gw[i] = 1e30f;
    if (l.bias)
        for (int64_t i = 0; i < cout; i++)
            ((float *)l.bias->g.data)[i] = 1e30f;
    if ((rc = fm_conv2d_forward(&l, x, y, e)) != FM_OK || (rc = fm_conv2d_backward(&l, x, dy, dx, e)) != FM_OK)
        goto out;

    fm_st_tensor t[8] = {
        { "x", x, FM_F32, 4, { n, h, w, cin } },
        { "dy", dy, FM_F32, 4, { n, l.ho, l.wo, cout } },
        { "y", y, FM_F32, 4, { n, l.ho, l.wo, cout } },
        { "dx", dx, FM_F32, 4, { n, h, w, cin } },
        { "conv.weight", l.weight->w.data, FM_F32, 4, { cout, cin, k, k } },
        { "conv.weight.grad", l.weight->g.data, FM_F32, 4, { cout, cin, k, k } },
    };
    int nt = 6;
    if (l.bias) {
        t[nt++] = (fm_st_tensor){ "conv.bias", l.bias->w.data, FM_F32, 1, { cout } };
        t[nt++] = (fm_st_tensor){ "conv.bias.grad", l.bias->g.data, FM_F32, 1, { cout } };
    }
    char ks[24], ss[24], ps[24];
    snprintf(ks, sizeof ks, "%lld", (long long)k);
    snprintf(ss, sizeof ss, "%lld", (long long)s);
    snprintf(ps, sizeof ps, "%lld", (long long)pad);
    const fm_st_meta m[] = { { "kernel", ks }, { "stride", ss }, { "padding", ps } };
    rc = fm_st_write(path, t, nt, m, 3, e);
out:
    fm_conv2d_free(&l);
    fm_arena_free(&ar);
    fm_params_free(&p);
    fm_dnn_free(&d);
    free(x);
    free(y);
    free(dy);
    free(dx);
    return rc;
}

int main(int argc, char **argv)
{
    int64_t a[9] = { 2, 8, 8, 16, 32, 3, 1, 1, 1 };
    if (argc != 2 && argc != 11) {
        fprintf(stderr, "usage: %s OUT.safetensors [N H W CIN COUT K STRIDE PAD BIAS]\n", argv[0]);
        return 2;
    }
    for (int i = 2; i < argc; i++) {
        char *end;
        a[i - 2] = strtoll(argv[i], &end, 10);
        if (*end || end == argv[i]) {
            fprintf(stderr, "parity_conv: argument %d: expected an integer, got \"%s\"\n", i - 1, argv[i]);
            return 2;
        }
    }
    fm_err e = { 0 };
    int rc = run(argv[1], a, &e);
    if (rc != FM_OK)
        fprintf(stderr, "parity_conv: %s\n", e.msg);
    return rc;
}
