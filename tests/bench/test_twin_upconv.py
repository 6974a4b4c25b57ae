"""The pieces of make bench's PyTorch baseline that compute something: the
4-parity upsampling convolution of tests/bench/twin_upconv.py equals nearest
x2 + 3x3 (outputs and the gradients of input, weight and bias, float64), the
U-Net twin built with it equals the plain twin on the same state dict (float32,
relative 1e-4), also in channels_last; and real_taps.py's count of the taps inside the input (a
3x3 convolution with padding 1: 22 of 24 per axis on 8, 10 of 12 on 4; the
padding FLOPs of a one-convolution model by hand)."""
import os
import sys

import torch
import torch.nn.functional as F

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, os.path.join(HERE, "..", "parity"))
sys.path.insert(0, HERE)
from real_taps import padding_flops, real_taps  # noqa: E402
from twin_unet import UNet  # noqa: E402
from twin_upconv import UNetUp4, upconv4  # noqa: E402

failed = 0


def check(name, ok, detail):
    global failed
    print(f"{'PASS' if ok else 'FAIL'} bench/{name} ({detail})", flush=True)
    failed += not ok


def err(a, b):
    return max((x - y).abs().max().item() / max(y.abs().max().item(), 1e-30) for x, y in zip(a, b))


def upconv_equals_nearest_conv():
    torch.manual_seed(0)
    for b, cin, cout, h, w in [(2, 3, 5, 4, 4), (1, 4, 2, 3, 5), (3, 8, 8, 1, 1)]:
        x = torch.randn(b, cin, h, w, dtype=torch.float64, requires_grad=True)
        wt = torch.randn(cout, cin, 3, 3, dtype=torch.float64, requires_grad=True)
        bias = torch.randn(cout, dtype=torch.float64, requires_grad=True)
        ref = F.conv2d(F.interpolate(x, scale_factor=2, mode="nearest"), wt, bias, padding=1)
        out = upconv4(x, wt, bias)
        g = torch.randn_like(ref)
        e = err([out] + list(torch.autograd.grad(out, (x, wt, bias), g)),
                [ref] + list(torch.autograd.grad(ref, (x, wt, bias), g)))
        check(f"upconv4_b{b}_{cin}to{cout}_{h}x{w}", e < 1e-12, f"max rel err {e:.1e} on y, dx, dW, db")


def unet_up4_equals_unet():
    torch.manual_seed(1)
    args = dict(in_ch=4, size=8, channels=(16, 32), res_blocks=1, attn_res=(4,), heads=2, groups=4, emb_dim=32,
                num_classes=10)
    ref = UNet(**args)  # float32: the twin's time embedding is float32
    x, t, y = torch.randn(3, 4, 8, 8), torch.rand(3), torch.tensor([0, 5, 10])
    for cl in (False, True):
        up = UNetUp4(**args)
        up.load_state_dict(ref.state_dict(), strict=True)
        fmt = torch.channels_last if cl else torch.contiguous_format
        up = up.to(memory_format=fmt)
        a, b = ref(x, t, y), up(x.contiguous(memory_format=fmt), t, y)
        ga = torch.autograd.grad(a.square().sum(), list(ref.parameters()))
        gb = torch.autograd.grad(b.square().sum(), list(up.parameters()))
        e = err([b] + list(gb), [a] + list(ga))
        check(f"unet_up4{'_channels_last' if cl else ''}", e < 1e-4, f"max rel err {e:.1e} on v and every gradient")


def taps():
    got = [real_taps(8, 3, 1, 1), real_taps(4, 3, 1, 1), real_taps(8, 3, 2, 1), real_taps(8, 1, 1, 0)]
    want = [(22, 24), (10, 12), (11, 12), (8, 8)]
    check("real_taps", got == want, f"{got}")

    class One(torch.nn.Module):  # a 3x3 conv, 2 -> 3 channels on 4x4: 2*3*2 * (144 - 100) padding FLOPs
        def __init__(self):
            super().__init__()
            self.c = torch.nn.Conv2d(2, 3, 3, padding=1)

        def forward(self, x, t, y):
            return self.c(x)
    lost = padding_flops(One(), {"ch": 2, "side": 4})
    check("padding_flops", lost == 2 * 3 * 2 * 44, f"{lost} FLOPs, want {2 * 3 * 2 * 44}")


for fn in (upconv_equals_nearest_conv, unet_up4_equals_unet, taps):
    try:
        fn()
    except Exception as exc:  # a crash is a failure
        check(fn.__name__, False, f"{type(exc).__name__}: {exc}")
sys.exit(1 if failed else 0)
