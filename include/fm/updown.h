/* updown.h - nearest-neighbour x2 upsampling of NHWC activations.
 *
 * Matches F.interpolate(x, scale_factor=2, mode='nearest'): output pixel
 * (i, j) copies input pixel (i / 2, j / 2). No parameters and no saved state,
 * hence plain functions with the shape as arguments. */
#ifndef FM_UPDOWN_H
#define FM_UPDOWN_H

/* x [N, H, W, C] -> y [N, 2H, 2W, C]. y must not overlap x. */
void fm_upsample2x_forward(const float *x, float *y, int n, int h, int w, int c);

/* dy [N, 2H, 2W, C] -> dx [N, H, W, C]: each input pixel's gradient is the sum
 * of its 4 children. Overwrites dx; dx must not overlap dy. */
void fm_upsample2x_backward(const float *dy, float *dx, int n, int h, int w, int c);

#endif
