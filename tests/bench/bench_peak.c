/* bench_peak.c - the fp32 peak this process can reach, for `make bench` (not
 * a test): a large oneDNN 3x3 convolution forward (N=64, 32x32, 256->256,
 * every layout chosen by oneDNN, no reorders in the timed loop) and a 2048^3
 * oneDNN sgemm, each the best of several runs after a warm-up; then the same
 * convolution at the default U-Net's size (N=128, 8x8, 128->128) in oneDNN's
 * layout and in NHWC, the ceiling of fmtrain's convolutions there. Prints one
 * JSON line: {"conv_gflops", "sgemm_gflops", "peak_gflops" (the larger of
 * the two), "conv8x8_any_gflops", "conv8x8_nhwc_gflops", "threads"}. */
#include <omp.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "fm/dnn.h"
#include "fm/peak.h"
#include "fm/rng.h"
#include "fm/timer.h"

#define REPS 5

/* A memory object of descriptor md with its own buffer, filled with N(0, 1)
 * values (stream k). */
static int filled(fm_dnn *d, const dnnl_memory_desc_t *md, dnnl_memory_t *m, uint64_t k, fm_err *e)
{
    FM_DNN(dnnl_memory_create(m, md, d->engine, DNNL_MEMORY_ALLOCATE), e);
    void *p;
    FM_DNN(dnnl_memory_get_data_handle(*m, &p), e);
    fm_fill_normal(p, (long)(dnnl_memory_desc_get_size(md) / sizeof(float)), 3, k, 0);
    return FM_OK;
}

/* Forward GFLOP/s of a 3x3 convolution (pad 1) on [N, C, H, H], C -> C, with
 * activations in layout `act` (dnnl_format_tag_any: oneDNN's choice) and the
 * weights in oneDNN's layout, best of REPS runs after one. */
static int conv_probe(fm_dnn *d, int64_t N, int64_t C, int64_t H, dnnl_format_tag_t act, double *gflops, fm_err *e)
{
    const int64_t K = 3;
    dnnl_dims_t src = { N, C, H, H }, wei = { C, C, K, K }, bia = { C }, dst = { N, C, H, H };
    dnnl_dims_t strides = { 1, 1 }, pad = { 1, 1 };
    dnnl_memory_desc_t src_md, wei_md, bia_md, dst_md;
    FM_DNN(dnnl_memory_desc_init_by_tag(&src_md, 4, src, dnnl_f32, act), e);
    FM_DNN(dnnl_memory_desc_init_by_tag(&wei_md, 4, wei, dnnl_f32, dnnl_format_tag_any), e);
    FM_DNN(dnnl_memory_desc_init_by_tag(&bia_md, 1, bia, dnnl_f32, dnnl_x), e);
    FM_DNN(dnnl_memory_desc_init_by_tag(&dst_md, 4, dst, dnnl_f32, act), e);
    dnnl_convolution_desc_t cd;
    FM_DNN(dnnl_convolution_forward_desc_init(&cd, dnnl_forward_training, dnnl_convolution_direct, &src_md, &wei_md,
                                              &bia_md, &dst_md, strides, pad, pad),
           e);
    dnnl_primitive_desc_t pd;
    FM_DNN(dnnl_primitive_desc_create(&pd, &cd, NULL, d->engine, NULL), e);
    dnnl_memory_t m[4] = { 0 };
    dnnl_primitive_t prim = NULL;
    int rc = filled(d, dnnl_primitive_desc_query_md(pd, dnnl_query_src_md, 0), &m[0], 0, e);
    if (rc == FM_OK)
        rc = filled(d, dnnl_primitive_desc_query_md(pd, dnnl_query_weights_md, 0), &m[1], 1, e);
    if (rc == FM_OK)
        rc = filled(d, dnnl_primitive_desc_query_md(pd, dnnl_query_weights_md, 1), &m[2], 2, e);
    if (rc == FM_OK)
        rc = filled(d, dnnl_primitive_desc_query_md(pd, dnnl_query_dst_md, 0), &m[3], 3, e);
    if (rc == FM_OK && dnnl_primitive_create(&prim, pd) != dnnl_success)
        rc = fm_fail(e, FM_ERR_INTERNAL, "peak probe: cannot create the convolution");
    const dnnl_exec_arg_t args[] = { { DNNL_ARG_SRC, m[0] }, { DNNL_ARG_WEIGHTS, m[1] }, { DNNL_ARG_BIAS, m[2] },
                                     { DNNL_ARG_DST, m[3] } };
    double best = 1e30;
    for (int r = 0; rc == FM_OK && r < REPS + 1; r++) {
        const double t0 = fm_now();
        rc = fm_dnn_exec(d, prim, 4, args, e);
        const double dt = fm_now() - t0;
        if (r > 0 && dt < best)
            best = dt;
    }
    *gflops = 2.0 * N * H * H * C * C * K * K / best * 1e-9;
    if (prim)
        dnnl_primitive_destroy(prim);
    for (int i = 0; i < 4; i++)
        if (m[i])
            dnnl_memory_destroy(m[i]);
    dnnl_primitive_desc_destroy(pd);
    return rc;
}

int main(void)
{
    fm_err e = { 0 };
    fm_dnn d;
    double conv = 0, gemm = 0, small_any = 0, small_nhwc = 0;
    int rc = fm_dnn_init(&d, &e);
    if (rc == FM_OK)
        rc = conv_probe(&d, 64, 256, 32, dnnl_format_tag_any, &conv, &e);
    if (rc == FM_OK)
        rc = fm_peak_sgemm(2048, REPS, &gemm, &e);
    /* the ceiling at the U-Net's own sizes: 8x8, 128 -> 128, batch 128, in
     * oneDNN's blocked layout and in NHWC (what fmtrain's layers use) */
    if (rc == FM_OK)
        rc = conv_probe(&d, 128, 128, 8, dnnl_format_tag_any, &small_any, &e);
    if (rc == FM_OK)
        rc = conv_probe(&d, 128, 128, 8, dnnl_nhwc, &small_nhwc, &e);
    fm_dnn_free(&d);
    if (rc != FM_OK) {
        fprintf(stderr, "bench_peak: %s\n", e.msg);
        return 1;
    }
    printf("{\"conv_gflops\": %.1f, \"sgemm_gflops\": %.1f, \"peak_gflops\": %.1f, \"conv8x8_any_gflops\": %.1f, "
           "\"conv8x8_nhwc_gflops\": %.1f, \"threads\": %d}\n",
           conv, gemm, conv > gemm ? conv : gemm, small_any, small_nhwc, omp_get_max_threads());
    return 0;
}
