/* parity_upconv.c - dump one fm_upconv forward/backward for tests/parity/test_upconv.py.
 *
 * usage: parity_upconv OUT.safetensors [N H W CIN COUT BIAS]
 * Writes x [N, H, W, Cin], up.weight [Cout, Cin, 3, 3], up.bias [Cout],
 * dy [N, 2H, 2W, Cout], y, dx and the gradients up.weight.grad, up.bias.grad
 * (activations NHWC). Parameters start from the layer's own default init;
 * dx and the gradients are pre-filled with garbage so a backward that
 * accumulates instead of overwriting fails the comparison. */
#include <stdio.h>
#include <stdlib.h>

#include "fm/rng.h"
#include "fm/safetensors.h"
#include "fm/upconv.h"

static void fill(float *x, int64_t n, float v)
{
    for (int64_t i = 0; i < n; i++)
        x[i] = v;
}

static int run(const char *path, const int64_t *a, fm_err *e)
{
    int64_t n = a[0], h = a[1], w = a[2], cin = a[3], cout = a[4];
    int bias = a[5] != 0;
    fm_dnn d = { 0 };
    fm_params p = { 0 };
    fm_arena ar = { 0 };
    fm_upconv l = { 0 };
    float *x = NULL, *y = NULL, *dy = NULL, *dx = NULL;
    int rc;
    size_t nparams = (size_t)(cout * cin * 9 + cout + 64);
    size_t bytes;
    if ((rc = fm_dnn_init(&d, e)) != FM_OK || (rc = fm_params_init(&p, 4, nparams, 23, e)) != FM_OK ||
        (rc = fm_upconv_arena_bytes(&d, cin, cout, bias, n, h, w, &bytes, e)) != FM_OK ||
        (rc = fm_arena_init(&ar, bytes, e)) != FM_OK ||
        (rc = fm_upconv_init(&l, &d, &p, &ar, "up", cin, cout, bias, n, h, w, e)) != FM_OK)
        goto out;
    int64_t nx = n * h * w * cin, ny = n * 4 * h * w * cout;
    x = malloc((size_t)nx * sizeof *x);
    dx = malloc((size_t)nx * sizeof *dx);
    y = malloc((size_t)ny * sizeof *y);
    dy = malloc((size_t)ny * sizeof *dy);
    if (!x || !dx || !y || !dy) {
        rc = fm_fail(e, FM_ERR_INTERNAL, "out of memory");
        goto out;
    }
    fm_fill_normal(x, nx, 79, 1, 0);
    fm_fill_normal(dy, ny, 79, 2, 0);
    fill(dx, nx, 1e30f);
    fill(l.weight->g.data, cout * cin * 9, 1e30f);
    if (l.bias)
        fill(l.bias->g.data, cout, 1e30f);
    if ((rc = fm_upconv_forward(&l, x, y, e)) != FM_OK || (rc = fm_upconv_backward(&l, x, dy, dx, e)) != FM_OK)
        goto out;

    fm_st_tensor t[8] = {
        { "x", x, FM_F32, 4, { n, h, w, cin } },
        { "dy", dy, FM_F32, 4, { n, 2 * h, 2 * w, cout } },
        { "y", y, FM_F32, 4, { n, 2 * h, 2 * w, cout } },
        { "dx", dx, FM_F32, 4, { n, h, w, cin } },
        { "up.weight", l.weight->w.data, FM_F32, 4, { cout, cin, 3, 3 } },
        { "up.weight.grad", l.weight->g.data, FM_F32, 4, { cout, cin, 3, 3 } },
    };
    int nt = 6;
    if (l.bias) {
        t[nt++] = (fm_st_tensor){ "up.bias", l.bias->w.data, FM_F32, 1, { cout } };
        t[nt++] = (fm_st_tensor){ "up.bias.grad", l.bias->g.data, FM_F32, 1, { cout } };
    }
    rc = fm_st_write(path, t, nt, NULL, 0, e);
out:
    fm_upconv_free(&l);
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
    int64_t a[6] = { 2, 4, 4, 16, 16, 1 };
    if (argc != 2 && argc != 8) {
        fprintf(stderr, "usage: %s OUT.safetensors [N H W CIN COUT BIAS]\n", argv[0]);
        return 2;
    }
    for (int i = 2; i < argc; i++) {
        char *end;
        a[i - 2] = strtoll(argv[i], &end, 10);
        if (*end || end == argv[i]) {
            fprintf(stderr, "parity_upconv: argument %d: expected an integer, got \"%s\"\n", i - 1, argv[i]);
            return 2;
        }
    }
    fm_err e = { 0 };
    int rc = run(argv[1], a, &e);
    if (rc != FM_OK)
        fprintf(stderr, "parity_upconv: %s\n", e.msg);
    return rc;
}
