"""PyTorch parity of the DiT velocity model: fmtrain's fm_dit (dumped by
tests/models/parity_dit.c with random non-zero weights everywhere) against the
twin tests/parity/twin_dit.py loaded with the same state dict (strict: the
parameter names, shapes and count must match 1:1), on the output and EVERY
parameter gradient (max relative error <= 1e-4 each). Labels include the null
label, t includes 0."""
import os
import sys

import numpy as np
import torch

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import fmparity as fp  # noqa: E402
from twin_dit import DiT  # noqa: E402

# (name, IN SIZE PATCH WIDTH DEPTH HEADS MLP_RATIO B T_FREQ)
CASES = [
    ("dit_default_p1", (4, 8, 1, 64, 2, 4, 4, 3, 256)),
    ("dit_patch2", (4, 8, 2, 48, 2, 3, 4, 2, 256)),
    ("dit_pixels_p4", (1, 16, 4, 32, 1, 2, 2, 2, 32)),
]


def check(rep, name, args):
    d, meta = fp.run_dump("models/parity_dit", *args)
    model = DiT(in_ch=int(meta["in_ch"]), size=int(meta["size"]), patch=int(meta["patch"]), width=int(meta["width"]),
                depth=int(meta["depth"]), heads=int(meta["heads"]), mlp_ratio=float(meta["mlp_ratio"]),
                num_classes=int(meta["num_classes"]), t_freq=int(meta["t_freq"]))
    params = {k: fp.t(v) for k, v in d.items() if k + ".grad" in d}
    model.load_state_dict(params, strict=True)
    # the C registration order is the twin's state-dict order
    order = [k for k in d.keys() if k + ".grad" in d]
    if order != list(model.state_dict().keys()):
        raise AssertionError("parameter order differs from the twin's state dict")
    x = fp.t(fp.nhwc_to_nchw(d["x"]))
    y = torch.from_numpy(d["y"].astype(np.int64))
    out = model(x, fp.t(d["t"]), y)
    out.backward(fp.t(fp.nhwc_to_nchw(d["dout"])))
    pairs = [("out", d["out"], fp.nchw_to_nhwc(out))]
    for k, p in model.named_parameters():
        pairs.append((k + ".grad", d[k + ".grad"], p.grad.numpy()))
    rep.case(name, pairs)


def main():
    rep = fp.Report()
    for name, args in CASES:
        rep.run(name, lambda name=name, args=args: check(rep, name, args))
    rep.exit()


if __name__ == "__main__":
    main()
