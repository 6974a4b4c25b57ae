"""Executed FLOPs of a training step: bench_step's nominal count
(gflop_per_step, 3 x forward FLOPs of convolutions and matrix products, the
upsampling already as fmtrain's four 2x2 parity convolutions) less the taps
that only read padding. A 3x3 convolution with padding 1 on an 8x8 map has 22
real taps per axis out of 24 (84 % of its nominal work), on 4x4 10 of 12
(69 %); a 2x2 parity convolution on H x W has 2H - 1 of 2H. The shapes come
from the PyTorch twin's convolutions (one forward on a batch of one, hooks on
every nn.Conv2d); linear layers and attention have no padding.

Reads bench_step's JSON line(s) on stdin; prints one JSON object per line:
{"name", "gflop_per_step", "gflop_per_step_executed", "padding_gflop_per_step"}.

    real_taps.py < bench_step.jsonl
"""
import json
import os
import sys

import torch

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "parity"))
from twin_dit import DiT  # noqa: E402
from twin_unet import UNet  # noqa: E402


def real_taps(n, k, stride, pad):
    """Sum over the outputs along one axis of length n of the taps that land
    inside the input (n_out outputs of a k-tap window)."""
    n_out = (n + 2 * pad - k) // stride + 1
    return sum(sum(1 for t in range(k) if 0 <= o * stride - pad + t < n) for o in range(n_out)), n_out * k


def padding_flops(model, spec):
    """Forward FLOPs per sample of nominal minus real taps over the convolutions."""
    ups = {id(lvl.upsample) for lvl in getattr(model, "up", []) if hasattr(lvl, "upsample")}
    lost = [0.0]

    def hook(m, inp, _out):
        _, cin, h, w = inp[0].shape
        mac = 2.0 * m.out_channels * cin // m.groups
        if id(m) in ups:  # fmtrain: four 2x2 parity convolutions on the map before the x2
            h, w = h // 2, w // 2
            lost[0] += mac * 4 * (4 * h * w - (2 * h - 1) * (2 * w - 1))
            return
        rh, nh = real_taps(h, m.kernel_size[0], m.stride[0], m.padding[0])
        rw, nw = real_taps(w, m.kernel_size[1], m.stride[1], m.padding[1])
        lost[0] += mac * (nh * nw - rh * rw)

    hs = [m.register_forward_hook(hook) for m in model.modules() if isinstance(m, torch.nn.Conv2d)]
    with torch.no_grad():
        model(torch.zeros(1, spec["ch"], spec["side"], spec["side"]), torch.zeros(1), torch.zeros(1, dtype=torch.long))
    for h in hs:
        h.remove()
    return lost[0]


def main():
    for line in sys.stdin:
        if not line.strip():
            continue
        spec = json.loads(line)
        model = DiT(**spec["twin"]) if spec["model"] == "dit" else UNet(**spec["twin"])
        pad = 3 * spec["batch"] * padding_flops(model, spec) * 1e-9
        print(json.dumps({"name": spec["name"], "gflop_per_step": spec["gflop_per_step"],
                          "gflop_per_step_executed": spec["gflop_per_step"] - pad, "padding_gflop_per_step": pad}))


if __name__ == "__main__":
    main()
