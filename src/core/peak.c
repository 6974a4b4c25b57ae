/* peak.c - the fp32 GFLOP/s this process reaches (peak.h). */
#include <stdlib.h>

#include <dnnl.h>

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
