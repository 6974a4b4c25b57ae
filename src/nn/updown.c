/* updown.c - nearest x2 upsampling forward and backward (see updown.h). */
#include "fm/updown.h"

#include <string.h>

void fm_upsample2x_forward(const float *x, float *y, int n, int h, int w, int c)
{
    const long rows = (long)n * h, wc = (long)w * c;
    /* one input row [W, C] makes two identical output rows [2W, C] */
#pragma omp parallel for schedule(static) if (rows * wc >= 16384)
    for (long r = 0; r < rows; r++) {
        const float *xr = x + r * wc;          // [W, C]
        float *y0 = y + 2 * r * (2 * wc);      // output row 2i   [2W, C]
        float *y1 = y0 + 2 * wc;               // output row 2i+1 [2W, C]
        for (long j = 0; j < w; j++) {
            memcpy(y0 + (2 * j) * c, xr + j * c, (size_t)c * sizeof(float));
            memcpy(y0 + (2 * j + 1) * c, xr + j * c, (size_t)c * sizeof(float));
        }
        memcpy(y1, y0, (size_t)(2 * wc) * sizeof(float));
    }
}

void fm_upsample2x_backward(const float *dy, float *dx, int n, int h, int w, int c)
{
    const long rows = (long)n * h, wc = (long)w * c;
#pragma omp parallel for schedule(static) if (rows * wc >= 16384)
    for (long r = 0; r < rows; r++) {
        const float *d0 = dy + 2 * r * (2 * wc);  // [2W, C]
        const float *d1 = d0 + 2 * wc;
        float *dr = dx + r * wc;                  // [W, C]
        for (long j = 0; j < w; j++) {
            const float *a = d0 + 2 * j * c, *b = d1 + 2 * j * c;
            float *o = dr + j * c;
#pragma omp simd
            for (long k = 0; k < c; k++)
                o[k] = (a[k] + a[c + k]) + (b[k] + b[c + k]);
        }
    }
}
