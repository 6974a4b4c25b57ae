/* convref.h - naive double-precision 3x3 convolutions (stride 1, zero
 * padding 1, NHWC maps, OIHW weights) for the kernel tests of conv16 and
 * conv32. */
#ifndef FM_TEST_CONVREF_H
#define FM_TEST_CONVREF_H

#include <stdint.h>

/* y [n, h, w, cout] = conv(x [n, h, w, cin], wt [cout, cin, 3, 3]) + b (NULL: none). */
void fm_ref_conv3x3(const float *x, const float *wt, const float *b, int64_t n, int64_t h, int64_t w, int64_t cin,
                    int64_t cout, double *y);

/* dx [n, h, w, cin] = the input gradient of that convolution for dy [n, h, w, cout]. */
void fm_ref_conv3x3_dx(const float *dy, const float *wt, int64_t n, int64_t h, int64_t w, int64_t cin, int64_t cout,
                       double *dx);

/* Largest |got - want| over the largest |want| (1 when want is all zero); any NaN in got: infinity. */
double fm_ref_rel_err(const float *got, const double *want, int64_t len);

#endif
