/* conv32.h - fp32 3x3 convolutions (stride 1, zero padding 1) on small NHWC
 * maps, forward and backward-data, by AVX-512 FMAs on the real taps only.
 *
 * The fp32 twin of conv16.h: the same register tiles (8 output pixels x 16
 * to 48 output channels), the same tasks and the same skipping of the taps
 * whose input pixel does not exist (31 % of a 3x3 kernel's taps on a 4x4
 * map, 16 % on an 8x8 map, which oneDNN 2.6's fp32 kernels multiply), with
 * one input channel per FMA instead of a pair per VDPBF16PS. The weights are
 * packed (not rounded) into [ky][kx][Cin][Cout] for the forward and into the
 * flipped, transposed [ky][kx][Cout][Cin] for backward-data. Each output
 * element is summed by one thread in a fixed order, so the result does not
 * depend on the thread count.
 *
 * Needs AVX-512 and: width 4 or 8, height a multiple of 8 / width, both
 * channel counts multiples of 16 (fm_conv32_usable). */
#ifndef FM_CONV32_H
#define FM_CONV32_H

#include <stddef.h>
#include <stdint.h>

typedef struct fm_conv32 {
    int64_t n, h, w;  /* x [n, h, w, cin] -> y [n, h, w, cout] */
    int64_t cin, cout;
} fm_conv32;

/* 1 when this CPU runs the kernel and g's shape suits it; else 0. */
int fm_conv32_usable(const fm_conv32 *g);

/* Floats of the packed weights of g (either layout). */
size_t fm_conv32_packed_len(const fm_conv32 *g);

/* Pack OIHW weights w [cout, cin, 3, 3] of the forward geometry g into wq
 * (NULL: not wanted) for its forward and into wt (NULL: not wanted) for its
 * backward-data (the geometry with cin and cout swapped, the kernel turned
 * by 180 degrees), in one pass over w. */
void fm_conv32_pack(float *wq, float *wt, const float *w, const fm_conv32 *g);

/* y [n, h, w, cout] (overwritten) = the convolution of x [n, h, w, cin] with
 * packed weights wq, plus bias [cout] (NULL: none). */
void fm_conv32_run(const fm_conv32 *g, const float *x, const float *wq, const float *bias, float *y);

#endif
