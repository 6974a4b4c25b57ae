/* residual.c - the shortcut of a ResBlock (see residual.h). */
#include "fm/residual.h"

#include "fm/tensorops.h"

int fm_residual_forward(fm_conv2d *skip, const float *x, float *tmp, float *y, long ny, fm_err *e)
{
    if (skip) {
        FM_TRY(fm_conv2d_forward(skip, x, tmp, e));
        x = tmp;
    }
    fm_acc(y, x, ny);
    return FM_OK;
}

int fm_residual_backward(fm_conv2d *skip, const float *x, const float *dy, float *tmp, float *dx, long nx,
                         fm_err *e)
{
    if (skip) {
        FM_TRY(fm_conv2d_backward(skip, x, dy, tmp, e));
        dy = tmp;
    }
    fm_acc(dx, dy, nx);
    return FM_OK;
}
