"""The PyTorch U-Net twin with fmtrain's upsampling (src/nn/upconv.c): nearest
x2 followed by a 3x3 convolution computed as four 2x2 sub-pixel convolutions
on the low-resolution input, one per output parity, with the 3x3 weight folded
into each parity's 2x2 weight. Same parameters and state_dict as the plain
twin (the 3x3 weight stays the parameter; the fold is part of the graph, so
autograd sends each 2x2 tap's gradient back to the 3x3 taps it summed). The
four parities run as one convolution with 4 x Cout outputs on the input padded
by one, then interleave. 16 taps per 2x2 output block instead of 36.

    model = UNetUp4(**twin_args)   # as twin_unet.UNet
"""
import torch
import torch.nn.functional as F

from twin_unet import UNet

# FOLD[q, a, k]: 1 where the 3x3 tap k feeds 2x2 tap a at output parity q
# (along one axis): q = 0: a = 0 <- {0}, a = 1 <- {1, 2}; q = 1: a = 0 <- {0, 1}, a = 1 <- {2}
FOLD = torch.tensor([[[1., 0., 0.], [0., 1., 1.]],
                     [[1., 1., 0.], [0., 0., 1.]]])


def upconv4(x, weight, bias):
    """nearest x2 of x [B, Cin, H, W], then conv2d(weight [Cout, Cin, 3, 3],
    bias, padding=1), computed on the real taps of the four parities."""
    b, _, h, w = x.shape
    cout = weight.shape[0]
    # wf[py, px, o, i, a, c]: parity (py, px)'s 2x2 weight
    wf = torch.einsum("pak,qcl,oikl->pqoiac", FOLD.to(weight.dtype), FOLD.to(weight.dtype), weight)
    wf = wf.reshape(4 * cout, *weight.shape[1:2], 2, 2)
    # output index i + q of the padded 2x2 convolution is parity q's row i
    full = F.conv2d(x, wf, None if bias is None else bias.repeat(4), padding=1)  # [B, 4*Cout, H+1, W+1]
    full = full.view(b, 2, 2, cout, h + 1, w + 1)
    par = torch.stack([torch.stack([full[:, py, px, :, py:py + h, px:px + w] for px in range(2)], 0)
                       for py in range(2)], 0)                                    # [2, 2, B, Cout, H, W]
    if x.is_contiguous(memory_format=torch.channels_last) and not x.is_contiguous():
        # channels_last in, channels_last out: interleave as [B, H, py, W, px, C]
        return par.permute(2, 4, 0, 5, 1, 3).reshape(b, 2 * h, 2 * w, cout).permute(0, 3, 1, 2)
    return par.permute(2, 3, 4, 0, 5, 1).reshape(b, cout, 2 * h, 2 * w)


class UNetUp4(UNet):
    def up_conv(self, conv, h):
        return upconv4(h, conv.weight, conv.bias)
