"""PyTorch parity for fm_conv2d: output, dx, dweight and dbias against nn.Conv2d.

Each case runs build/tests/nn/parity_conv with the case's sizes; the dumper
writes x, the layer's weights, dy and its outputs and gradients. Here an
nn.Conv2d is loaded with the same weights (OIHW, same as the state dict), run
on the same x (NHWC -> NCHW) and back-propagated with the same dy.
"""
import torch

from fmparity import Report, nchw_to_nhwc, nhwc_to_nchw, run_dump, t

# (label, N, H, W, Cin, Cout, k, stride, pad, bias)
CASES = [
    ("conv_3x3_s1_p1", 2, 8, 8, 16, 32, 3, 1, 1, 1),
    ("conv_3x3_s2_p1", 2, 8, 8, 32, 16, 3, 2, 1, 1),
    ("conv_1x1_s1_p0", 3, 6, 6, 24, 8, 1, 1, 0, 0),
    ("conv_3x3_s2_p1_odd_7x5", 3, 7, 5, 5, 7, 3, 2, 1, 1),
    ("conv_3x3_cin1_32x32", 2, 32, 32, 1, 16, 3, 1, 1, 1),
    ("conv_5x5_s1_p2", 2, 9, 6, 4, 6, 5, 1, 2, 1),
    ("conv_2x2_s2_p0_patchify", 2, 8, 8, 4, 12, 2, 2, 0, 1),
    ("conv_3x3_s1_p1_128ch", 4, 8, 8, 128, 128, 3, 1, 1, 1),
]


def check(rep, label, n, h, w, cin, cout, k, s, p, bias):
    d, meta = run_dump("nn/parity_conv", n, h, w, cin, cout, k, s, p, bias)
    assert int(meta["kernel"]) == k and int(meta["stride"]) == s and int(meta["padding"]) == p, meta
    conv = torch.nn.Conv2d(cin, cout, k, stride=s, padding=p, bias=bool(bias))
    state = {"weight": torch.from_numpy(d["conv.weight"])}
    if bias:
        state["bias"] = torch.from_numpy(d["conv.bias"])
    conv.load_state_dict(state)
    # fp32 PyTorch (itself on oneDNN for CPU convs) and an fp64 run that is not
    for suffix, dtype in (("", torch.float32), ("_vs_fp64", torch.float64)):
        ref = conv.to(dtype)
        ref.zero_grad(set_to_none=True)
        x = t(nhwc_to_nchw(d["x"])).to(dtype).requires_grad_(True)
        y = ref(x)
        y.backward(t(nhwc_to_nchw(d["dy"])).to(dtype))
        pairs = [
            ("y", d["y"], nchw_to_nhwc(y)),
            ("dx", d["dx"], nchw_to_nhwc(x.grad)),
            ("dweight", d["conv.weight.grad"], ref.weight.grad.numpy()),
        ]
        if bias:
            pairs.append(("dbias", d["conv.bias.grad"], ref.bias.grad.numpy()))
        rep.case(label + suffix, pairs)


def main():
    rep = Report()
    for case in CASES:
        rep.run(case[0], lambda c=case: check(rep, *c))
    rep.exit()


if __name__ == "__main__":
    main()
