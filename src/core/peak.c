/* peak.c - the fp32 and bf16 GFLOP/s this process reaches (peak.h). */
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include <dnnl.h>

#include "fm/dnn.h"
#include "fm/peak.h"
#include "fm/rng.h"
#include "fm/timer.h"

int fm_peak_sgemm(int n, int reps, double *gflops, fm_err *e)
{
    const size_t nn = (size_t)n * (size_t)n;
    float *a = malloc(nn * sizeof *a), *b = malloc(nn * sizeof *b), *c = malloc(nn * sizeof *c);
    if (!a || !b || !c) {
        free(a), free(b), free(c);
        return fm_fail(e, FM_ERR_INTERNAL, "peak probe: out of memory for three %dx%d matrices", n, n);
    }
    fm_fill_normal(a, (long)nn, 4, 0, 0);
    fm_fill_normal(b, (long)nn, 4, 1, 0);
    double best = 1e30;
    int rc = FM_OK;
    for (int r = 0; r < reps + 1; r++) {
        const double t0 = fm_now();
        if (dnnl_sgemm('N', 'N', n, n, n, 1.0f, a, n, b, n, 0.0f, c, n) != dnnl_success) {
            rc = fm_fail(e, FM_ERR_INTERNAL, "peak probe: dnnl_sgemm failed");
            break;
        }
        const double dt = fm_now() - t0;
        if (r > 0 && dt < best)
            best = dt;
    }
    *gflops = rc == FM_OK ? 2.0 * (double)n * n * n / best * 1e-9 : 0;
    free(a), free(b), free(c);
    return rc;
}

/* The timed loop of fm_peak_matmul_bf16: C = A B on its engine (d) and
 * memories, n x n each. */
static int time_matmul(fm_dnn *d, int n, int reps, dnnl_memory_t ma, dnnl_memory_t mb, dnnl_memory_t mc,
                       double *gflops, fm_err *e)
{
    const dnnl_memory_desc_t *a_md, *b_md, *c_md;
    FM_DNN(dnnl_memory_get_memory_desc(ma, &a_md), e);
    FM_DNN(dnnl_memory_get_memory_desc(mb, &b_md), e);
    FM_DNN(dnnl_memory_get_memory_desc(mc, &c_md), e);
    dnnl_primitive_t mm = NULL;
    size_t scratch = 0;
    FM_TRY(fm_dnn_matmul(d, &mm, a_md, b_md, NULL, c_md, &scratch, e));
    void *sp = scratch ? malloc(scratch) : NULL;
    dnnl_memory_t msp = NULL;
    int rc = scratch && !sp ? fm_fail(e, FM_ERR_INTERNAL, "peak probe: out of memory for the scratchpad") : FM_OK;
    if (rc == FM_OK && sp)
        rc = fm_dnn_mem_dt(d, &msp, 1, (dnnl_dims_t){ (dnnl_dim_t)scratch }, dnnl_u8, dnnl_x, sp, e);
    double best = 1e30;
    for (int r = 0; rc == FM_OK && r < reps + 1; r++) {
        dnnl_exec_arg_t args[4] = { { DNNL_ARG_SRC, ma }, { DNNL_ARG_WEIGHTS, mb }, { DNNL_ARG_DST, mc } };
        const double t0 = fm_now();
        rc = fm_dnn_exec_sp(d, mm, msp, 3, args, e);
        const double dt = fm_now() - t0;
        if (r > 0 && dt < best)
            best = dt;
    }
    *gflops = rc == FM_OK ? 2.0 * (double)n * n * n / best * 1e-9 : 0;
    if (msp)
        dnnl_memory_destroy(msp);
    free(sp);
    dnnl_primitive_destroy(mm);
    return rc;
}

int fm_peak_matmul_bf16(int n, int reps, double *gflops, fm_err *e)
{
    const size_t nn = (size_t)n * (size_t)n;
    float *f = malloc(nn * sizeof *f), *c = malloc(nn * sizeof *c);
    uint16_t *a = malloc(nn * sizeof *a), *b = malloc(nn * sizeof *b);
    int rc = f && c && a && b ? FM_OK
                              : fm_fail(e, FM_ERR_INTERNAL, "peak probe: out of memory for three %dx%d matrices", n, n);
    if (rc == FM_OK) {
        fm_fill_normal(f, (long)nn, 4, 0, 0);
        fm_f32_to_bf16_n(a, f, (int64_t)nn);
        fm_fill_normal(f, (long)nn, 4, 1, 0);
        fm_f32_to_bf16_n(b, f, (int64_t)nn);
    }
    fm_dnn d;
    memset(&d, 0, sizeof d);
    dnnl_memory_t ma = NULL, mb = NULL, mc = NULL;
    const dnnl_dims_t dims = { n, n };
    if (rc == FM_OK)
        rc = fm_dnn_init(&d, e);
    if (rc == FM_OK)
        rc = fm_dnn_mem_dt(&d, &ma, 2, dims, dnnl_bf16, dnnl_ab, a, e);
    if (rc == FM_OK)
        rc = fm_dnn_mem_dt(&d, &mb, 2, dims, dnnl_bf16, dnnl_ab, b, e);
    if (rc == FM_OK)
        rc = fm_dnn_mem_dt(&d, &mc, 2, dims, dnnl_f32, dnnl_ab, c, e);
    if (rc == FM_OK)
        rc = time_matmul(&d, n, reps, ma, mb, mc, gflops, e);
    dnnl_memory_t ms[3] = { ma, mb, mc };
    for (int k = 0; k < 3; k++)
        if (ms[k])
            dnnl_memory_destroy(ms[k]);
    fm_dnn_free(&d);
    free(f), free(c), free(a), free(b);
    if (rc != FM_OK)
        *gflops = 0;
    return rc;
}
