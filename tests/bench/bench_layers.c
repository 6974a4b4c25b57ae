/* bench_layers.c - forward + backward time of single layers at U-Net sizes,
 * for `make bench` (not a test). Prints one JSON object per case:
 *   {"case": ..., "kind": "conv"|"attn", ..., "fm_ms": best of reps, "gflops": ...}
 * tests/bench/run.sh feeds the same cases to the PyTorch side. */
#include <stdio.h>
#include <string.h>

#include "fm/arena.h"
#include "fm/attention.h"
#include "fm/conv.h"
#include "fm/dnn.h"
#include "fm/params.h"
#include "fm/rng.h"
#include "fm/timer.h"

#define REPS 10

typedef struct bcase {
    const char *name;
    int attn; /* 0: conv 3x3 s1 p1, 1: attention */
    int n, h, cin, cout, heads;
} bcase;

static const bcase cases[] = {
    { "conv3x3 8x8 64->64 b128", 0, 128, 8, 64, 64, 0 },
    { "conv3x3 8x8 128->128 b128", 0, 128, 8, 128, 128, 0 },
    { "conv3x3 4x4 256->256 b128", 0, 128, 4, 256, 256, 0 },
    { "conv3x3 32x32 32->32 b128", 0, 128, 32, 32, 32, 0 },
    { "attn 4x4 C128 h4 b128", 1, 128, 4, 128, 128, 4 },
    { "attn 4x4 C256 h4 b128", 1, 128, 4, 256, 256, 4 },
    { "attn 8x8 C128 h4 b128", 1, 128, 8, 128, 128, 4 },
};

static int run_case(fm_dnn *d, const bcase *c, fm_err *e)
{
    fm_params p;
    fm_arena a;
    FM_TRY(fm_params_init(&p, 8, (size_t)4 << 20, 1, e));
    FM_TRY(fm_arena_init(&a, (size_t)512 << 20, e));
    long nin = (long)c->n * c->h * c->h * c->cin, nout = (long)c->n * c->h * c->h * c->cout;
    float *x = fm_arena_alloc(&a, nin * 4), *y = fm_arena_alloc(&a, nout * 4);
    float *dy = fm_arena_alloc(&a, nout * 4), *dx = fm_arena_alloc(&a, nin * 4);
    fm_fill_normal(x, nin, 1, 0, 0);
    fm_fill_normal(dy, nout, 1, 1, 0);
    fm_conv2d conv;
    fm_attention att;
    double flops;
    if (c->attn) {
        FM_TRY(fm_attention_init(&att, d, &p, &a, "attn", c->cin, c->heads, c->n, (int64_t)c->h * c->h, e));
        flops = fm_attention_flops_fwd(&att) + fm_attention_flops_bwd(&att, 1);
    } else {
        FM_TRY(fm_conv2d_init(&conv, d, &p, &a, "conv", c->cin, c->cout, 3, 1, 1, 1, c->n, c->h, c->h, e));
        flops = fm_conv2d_flops_fwd(&conv) + fm_conv2d_flops_bwd(&conv, 1);
    }
    double best = 1e30;
    for (int r = 0; r < REPS + 3; r++) {
        double t0 = fm_now();
        if (c->attn) {
            FM_TRY(fm_attention_forward(&att, x, y, e));
            FM_TRY(fm_attention_backward(&att, x, dy, dx, e));
        } else {
            FM_TRY(fm_conv2d_forward(&conv, x, y, e));
            FM_TRY(fm_conv2d_backward(&conv, x, dy, dx, e));
        }
        double dt = fm_now() - t0;
        if (r >= 3 && dt < best)
            best = dt;
    }
    printf("{\"case\": \"%s\", \"kind\": \"%s\", \"n\": %d, \"h\": %d, \"cin\": %d, \"cout\": %d, \"b\": %d, "
           "\"t\": %d, \"c\": %d, \"heads\": %d, \"fm_ms\": %.3f, \"gflops\": %.1f}\n",
           c->name, c->attn ? "attn" : "conv", c->n, c->h, c->cin, c->cout, c->n, c->h * c->h, c->cin, c->heads,
           best * 1e3, flops / best * 1e-9);
    fflush(stdout);
    if (c->attn)
        fm_attention_free(&att);
    else
        fm_conv2d_free(&conv);
    fm_arena_free(&a);
    fm_params_free(&p);
    return FM_OK;
}

int main(void)
{
    fm_err e = { 0 };
    fm_dnn d;
    if (fm_dnn_init(&d, &e) != FM_OK) {
        fprintf(stderr, "bench_layers: %s\n", e.msg);
        return 1;
    }
    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++)
        if (run_case(&d, &cases[i], &e) != FM_OK) {
            fprintf(stderr, "bench_layers: %s: %s\n", cases[i].name, e.msg);
            return 1;
        }
    fm_dnn_free(&d);
    return 0;
}
