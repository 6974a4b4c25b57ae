/* normconv.h - a GroupNorm(+SiLU) whose output feeds only a convolution (the
 * U-Net's norm1 -> conv1, norm2 -> conv2, out_norm -> out_conv): the pair's
 * forward, and the convolution's backward on that output, which is not kept.
 *
 * Under bf16 the GroupNorm writes straight into the convolution's bf16
 * operand (fm_groupnorm_forward_ada16, fm_conv2d_forward16: the same bits as
 * rounding an fp32 output, one fp32 write and read less) and backward reuses
 * that operand (fm_conv2d_keeps_x); in fp32 the output goes through the
 * scratch `a` and backward recomputes it from the saved statistics
 * (fm_groupnorm_reforward). Either way the numbers are those of the two
 * layers called one after the other, and each layer times itself. */
#ifndef FM_NORMCONV_H
#define FM_NORMCONV_H

#include "fm/conv.h"
#include "fm/groupnorm.h"
#include "fm/status.h"

/* y = conv(norm(x)), norm with adaGN when scale and shift are given (both
 * NULL: plain). a (the conv's input shape) is scratch that the fp32 path
 * writes the norm output to; the bf16 path leaves it alone but records it as
 * the operand's name, so backward must be given the same a. */
int fm_normconv_forward(fm_groupnorm *norm, fm_conv2d *conv, const float *x, const float *scale,
                        const float *shift, float *a, float *y, fm_err *e);

/* The conv's backward (dx from dy, and its parameter gradients) on norm(x) as
 * the latest forward computed it, rebuilt in a unless the conv kept its bf16
 * operand. dx may be NULL. The norm's own backward is the caller's. */
int fm_normconv_backward_conv(fm_groupnorm *norm, fm_conv2d *conv, const float *x, float *a, const float *dy,
                              float *dx, fm_err *e);

#endif
