/* conv16.h - bf16 3x3 convolutions (stride 1, zero padding 1) on small NHWC
 * maps, forward and backward-data, by AVX512-BF16 dot products over pairs
 * of channels, on the real taps only.
 *
 * y[n][i][j][o] = b[o] + sum over ky, kx, c of x[n][i+ky-1][j+kx-1][c] * W[o][c][ky][kx]
 * (taps outside x are zero). oneDNN 2.6's bf16 forward (brgconv) and
 * backward-data (jit_bf16) multiply the zero padding, which is 31 % of a
 * 3x3 kernel's taps on a 4x4 map and 16 % on an 8x8 map. Here the weights
 * are packed so that channels 2p and 2p+1 of each output channel are
 * adjacent ([ky][kx][Cin/2][Cout][2] bf16), one VDPBF16PS then adds the
 * products of both channels for 16 output channels, and each tap visits only
 * the output pixels whose input pixel exists. A register tile is 8 output
 * pixels (one row of an 8-wide map, two rows of a 4-wide one) x 16 to 48
 * output channels; a task (a block of output channels, a range of images)
 * runs all its tiles over every input channel, its weights read from L2. The
 * accumulation is fp32 and each output element is summed by one thread in a
 * fixed order, so the result does not depend on the thread count.
 *
 * Backward-data is the same convolution of dy with the weights flipped and
 * transposed (the second packing of fm_conv16_pack), Cin and Cout swapped.
 *
 * Needs AVX512-BF16 and: width 4 or 8, height a multiple of 8 / width, the
 * input channels a multiple of 8 and the output channels of 16
 * (fm_conv16_usable). */
#ifndef FM_CONV16_H
#define FM_CONV16_H

#include <stddef.h>
#include <stdint.h>

typedef struct fm_conv16 {
    int64_t n, h, w;  /* x [n, h, w, cin] -> y [n, h, w, cout] */
    int64_t cin, cout;
} fm_conv16;

/* 1 when this CPU runs the kernel and g's shape suits it; else 0. */
int fm_conv16_usable(const fm_conv16 *g);

/* Elements (uint16_t) of the packed weights of g. */
size_t fm_conv16_packed_len(const fm_conv16 *g);

/* Pack fp32 OIHW weights w [cout, cin, 3, 3] of the forward geometry g,
 * rounding to bf16 as fm_f32_to_bf16 does: into wp (NULL: not wanted) for
 * the forward of g, into wt (NULL: not wanted) for backward-data, i.e. for
 * the geometry with cin and cout swapped (the convolution of dy), flipped in
 * both spatial axes. Either packing needs cin and cout multiples of 8. */
void fm_conv16_pack(uint16_t *wp, uint16_t *wt, const float *w, const fm_conv16 *g);

/* y [n, h, w, cout] (fp32, overwritten) = the convolution of bf16 NHWC x
 * [n, h, w, cin] with packed weights wp, plus bias [cout] (NULL: none). */
void fm_conv16_run(const fm_conv16 *g, const uint16_t *x, const uint16_t *wp, const float *bias, float *y);

#endif
