/* residual.h - the shortcut of a ResBlock (U-Net, VAE): the block's input
 * added to its output, through a 1x1 projection when the widths differ.
 *
 *   forward   y += skip(x)   or   y += x
 *   backward  dx += skip^T(dy) (and skip's parameter gradients)   or   dx += dy
 *
 * skip is that projection, or NULL when the widths are equal. */
#ifndef FM_RESIDUAL_H
#define FM_RESIDUAL_H

#include "fm/conv.h"
#include "fm/status.h"

/* y (ny values) += skip(x) or x; tmp (ny values) holds skip(x). */
int fm_residual_forward(fm_conv2d *skip, const float *x, float *tmp, float *y, long ny, fm_err *e);

/* dx (nx values, the block input's gradient so far) += the shortcut's part
 * of dy: skip's input gradient (through tmp, nx values) or dy itself. */
int fm_residual_backward(fm_conv2d *skip, const float *x, const float *dy, float *tmp, float *dx, long nx,
                         fm_err *e);

#endif
