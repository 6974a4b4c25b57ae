"""PyTorch parity for fm_upconv: output, dx, dweight and dbias against
nn.Conv2d(cin, cout, 3, padding=1) applied to F.interpolate(x, scale_factor=2,
mode="nearest").

Each case runs build/tests/nn/parity_upconv with the case's sizes; the dumper
writes x, the layer's weights (the conv's state dict), dy and its outputs and
gradients. Compared in fp32 and against an fp64 run of the same module.
"""
import torch
import torch.nn.functional as F

from fmparity import Report, nchw_to_nhwc, nhwc_to_nchw, run_dump, t

# (label, N, H, W, Cin, Cout, bias)
CASES = [
    ("upconv_4x4_16", 2, 4, 4, 16, 16, 1),
    ("upconv_odd_3x5_8to12", 3, 3, 5, 8, 12, 1),
    ("upconv_5x3_12to8_nobias", 2, 5, 3, 12, 8, 0),
    ("upconv_1x1_4to6", 2, 1, 1, 4, 6, 1),
    ("upconv_8x8_32", 4, 8, 8, 32, 32, 1),
    ("upconv_4x4_128_unet", 8, 4, 4, 128, 128, 1),
]


def check(rep, label, n, h, w, cin, cout, bias):
    d, _ = run_dump("nn/parity_upconv", n, h, w, cin, cout, bias)
    conv = torch.nn.Conv2d(cin, cout, 3, padding=1, bias=bool(bias))
    state = {"weight": torch.from_numpy(d["up.weight"])}
    if bias:
        state["bias"] = torch.from_numpy(d["up.bias"])
    conv.load_state_dict(state)
    for suffix, dtype in (("", torch.float32), ("_vs_fp64", torch.float64)):
        ref = conv.to(dtype)
        ref.zero_grad(set_to_none=True)
        x = t(nhwc_to_nchw(d["x"])).to(dtype).requires_grad_(True)
        y = ref(F.interpolate(x, scale_factor=2, mode="nearest"))
        y.backward(t(nhwc_to_nchw(d["dy"])).to(dtype))
        pairs = [
            ("y", d["y"], nchw_to_nhwc(y)),
            ("dx", d["dx"], nchw_to_nhwc(x.grad)),
            ("dweight", d["up.weight.grad"], ref.weight.grad.numpy()),
        ]
        if bias:
            pairs.append(("dbias", d["up.bias.grad"], ref.bias.grad.numpy()))
        rep.case(label + suffix, pairs)


def main():
    rep = Report()
    for case in CASES:
        rep.run(case[0], lambda c=case: check(rep, *c))
    rep.exit()


if __name__ == "__main__":
    main()
