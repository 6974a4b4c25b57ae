/* normconv.c - GroupNorm(+SiLU) feeding a convolution (see normconv.h). */
#include "fm/normconv.h"

int fm_normconv_forward(fm_groupnorm *norm, fm_conv2d *conv, const float *x, const float *scale,
                        const float *shift, float *a, float *y, fm_err *e)
{
    uint16_t *a16 = fm_conv2d_operand16(conv);
    if (a16) {
        FM_TRY(fm_groupnorm_forward_ada16(norm, x, scale, shift, a16, e));
        return fm_conv2d_forward16(conv, a, y, e);
    }
    FM_TRY(fm_groupnorm_forward_ada(norm, x, scale, shift, a, e));
    return fm_conv2d_forward(conv, a, y, e);
}

int fm_normconv_backward_conv(fm_groupnorm *norm, fm_conv2d *conv, const float *x, float *a, const float *dy,
                              float *dx, fm_err *e)
{
    if (!fm_conv2d_keeps_x(conv, a))
        FM_TRY(fm_groupnorm_reforward(norm, x, a, e));
    return fm_conv2d_backward(conv, a, dy, dx, e);
}
