/* convref.c - naive double-precision 3x3 convolutions (see convref.h). */
#include "convref.h"

#include <math.h>
#include <string.h>

void fm_ref_conv3x3(const float *x, const float *wt, const float *b, int64_t n, int64_t h, int64_t w, int64_t cin,
                    int64_t cout, double *y)
{
    for (int64_t im = 0; im < n; im++)
        for (int64_t i = 0; i < h; i++)
            for (int64_t j = 0; j < w; j++)
                for (int64_t oc = 0; oc < cout; oc++) {
                    double s = b ? b[oc] : 0.0;
                    for (int ky = 0; ky < 3; ky++)
                        for (int kx = 0; kx < 3; kx++) {
                            const int64_t iy = i + ky - 1, jx = j + kx - 1;
                            if (iy < 0 || iy >= h || jx < 0 || jx >= w)
                                continue;
                            for (int64_t c = 0; c < cin; c++)
                                s += (double)x[((im * h + iy) * w + jx) * cin + c] * wt[((oc * cin + c) * 3 + ky) * 3 + kx];
                        }
                    y[((im * h + i) * w + j) * cout + oc] = s;
                }
}

void fm_ref_conv3x3_dx(const float *dy, const float *wt, int64_t n, int64_t h, int64_t w, int64_t cin, int64_t cout,
                       double *dx)
{
    memset(dx, 0, (size_t)(n * h * w * cin) * sizeof(double));
    for (int64_t im = 0; im < n; im++)
        for (int64_t i = 0; i < h; i++)
            for (int64_t j = 0; j < w; j++)
                for (int ky = 0; ky < 3; ky++)
                    for (int kx = 0; kx < 3; kx++) {
                        const int64_t iy = i + ky - 1, jx = j + kx - 1;
                        if (iy < 0 || iy >= h || jx < 0 || jx >= w)
                            continue;
                        for (int64_t c = 0; c < cin; c++) {
                            double s = 0;
                            for (int64_t oc = 0; oc < cout; oc++)
                                s += (double)dy[((im * h + i) * w + j) * cout + oc] * wt[((oc * cin + c) * 3 + ky) * 3 + kx];
                            dx[((im * h + iy) * w + jx) * cin + c] += s;
                        }
                    }
}

double fm_ref_rel_err(const float *got, const double *want, int64_t len)
{
    double e = 0, m = 0;
    for (int64_t i = 0; i < len; i++) {
        const double d = fabs(got[i] - want[i]);
        e = isnan(d) ? INFINITY : fmax(e, d);
        m = fmax(m, fabs(want[i]));
    }
    return e / (m > 0 ? m : 1);
}
