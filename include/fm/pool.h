/* pool.h - global average pooling of NHWC activations, forward and backward.
 *
 * Matches torch.nn.AdaptiveAvgPool2d(1) followed by flatten: x [N, H, W, C]
 * -> y [N, C], y[n, c] = mean over the H*W pixels of x[n, :, :, c]. No
 * parameters and no saved state, hence plain functions with the shape as
 * arguments. */
#ifndef FM_POOL_H
#define FM_POOL_H

/* y [n, c] = mean over hw pixels of x [n, hw, c] (hw = H*W). Sums run in
 * double in a fixed order, so the result does not depend on the threads. */
void fm_global_avgpool_forward(const float *x, float *y, int n, long hw, int c);

/* dx [n, hw, c] = dy [n, c] / hw broadcast over the pixels. Overwrites dx. */
void fm_global_avgpool_backward(const float *dy, float *dx, int n, long hw, int c);

#endif
