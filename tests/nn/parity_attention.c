/* parity_attention.c - dump one self-attention case for
 * tests/parity/test_attention.py.
 *
 * usage: parity_attention OUT.safetensors [B H W C HEADS]
 * Builds layer "attn" on the tokens of an NHWC map x [B, H, W, C] (T = H*W),
 * redraws every parameter ~ N(0, 1) scaled (weights by 1.5/sqrt(C), biases by
 * 0.5) so that the biases are non-zero and the softmax is not uniform, draws
 * x and dy ~ N(0, 1), runs forward and backward and writes x, dy, y, dx
 * ([B, H, W, C]), the four parameters under their state-dict names and their
 * gradients ("<param>.grad"). */
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "fm/arena.h"
#include "fm/attention.h"
#include "fm/dnn.h"
#include "fm/params.h"
#include "fm/rng.h"
#include "fm/safetensors.h"

static int run(const char *path, int64_t b, int64_t h, int64_t w, int64_t c, int64_t heads, fm_err *e)
{
    const int64_t t = h * w, n = b * t * c;
    fm_dnn d;
    fm_params p;
    fm_arena a;
    fm_attention l = { 0 };
    int rc = fm_dnn_init(&d, e);
    if (rc == FM_OK)
        rc = fm_params_init(&p, 8, (size_t)(4 * c * c + 4 * c + 64), 4, e);
    if (rc == FM_OK)
        rc = fm_arena_init(&a, (size_t)(2 * b * heads * t * t + 12 * n) * sizeof(float) + (16 << 20), e);
    if (rc != FM_OK)
        return rc;
    rc = fm_attention_init(&l, &d, &p, &a, "attn", c, heads, b, t, e);
    float *x = fm_arena_alloc(&a, (size_t)n * sizeof(float)), *dx = fm_arena_alloc(&a, (size_t)n * sizeof(float));
    float *y = fm_arena_alloc(&a, (size_t)n * sizeof(float)), *dy = fm_arena_alloc(&a, (size_t)n * sizeof(float));
    if (rc == FM_OK && (!x || !dx || !y || !dy))
        rc = fm_fail(e, FM_ERR_INTERNAL, "arena too small");
    if (rc == FM_OK) {
        for (int i = 0; i < p.n; i++) {
            float *v = fm_f32(&p.items[i].w);
            int64_t k = fm_tensor_numel(&p.items[i].w);
            float sd = p.items[i].w.ndim == 2 ? 1.5f / sqrtf((float)c) : 0.5f;
            fm_fill_normal(v, k, 12, (uint64_t)i, 0);
            for (int64_t j = 0; j < k; j++)
                v[j] *= sd;
        }
        fm_fill_normal(x, n, 13, 1, 0);
        fm_fill_normal(dy, n, 13, 2, 0);
        rc = fm_attention_forward(&l, x, y, e);
    }
    if (rc == FM_OK)
        rc = fm_attention_backward(&l, x, dy, dx, e);
    if (rc == FM_OK) {
        fm_st_tensor tt[12] = {
            { "x", x, FM_F32, 4, { b, h, w, c } },
            { "dy", dy, FM_F32, 4, { b, h, w, c } },
            { "y", y, FM_F32, 4, { b, h, w, c } },
            { "dx", dx, FM_F32, 4, { b, h, w, c } },
        };
        char gname[8][FM_PARAM_NAME + 8];
        int nt = 4;
        for (int i = 0; i < p.n && i < 4; i++) {
            const fm_param *q = &p.items[i];
            snprintf(gname[i], sizeof gname[i], "%s.grad", q->name);
            tt[nt] = (fm_st_tensor){ q->name, q->w.data, FM_F32, q->w.ndim, { 0 } };
            memcpy(tt[nt].shape, q->w.shape, sizeof q->w.shape);
            nt++;
            tt[nt] = (fm_st_tensor){ gname[i], q->g.data, FM_F32, q->w.ndim, { 0 } };
            memcpy(tt[nt].shape, q->w.shape, sizeof q->w.shape);
            nt++;
        }
        rc = fm_st_write(path, tt, nt, NULL, 0, e);
    }
    fm_attention_free(&l);
    fm_arena_free(&a);
    fm_params_free(&p);
    fm_dnn_free(&d);
    return rc;
}

int main(int argc, char **argv)
{
    if (argc != 2 && argc != 7) {
        fprintf(stderr, "usage: %s OUT.safetensors [B H W C HEADS]\n", argv[0]);
        return 2;
    }
    int64_t b = 2, h = 4, w = 4, c = 32, heads = 4;
    if (argc == 7) {
        b = atoll(argv[2]), h = atoll(argv[3]), w = atoll(argv[4]), c = atoll(argv[5]), heads = atoll(argv[6]);
    }
    fm_err e = { 0 };
    int rc = run(argv[1], b, h, w, c, heads, &e);
    if (rc != FM_OK)
        fprintf(stderr, "parity_attention: %s\n", e.msg);
    return rc;
}
