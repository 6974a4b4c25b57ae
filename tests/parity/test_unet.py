"""PyTorch parity of the U-Net: fmtrain's fm_unet (dumped by
tests/models/parity_unet) against the twin in twin_unet.py loaded with the same
weights (load_state_dict strict=True, and the parameter order must equal the
twin's state-dict order). Compares the output and EVERY parameter gradient
(max relative error <= 1e-4 each) and prints the worst."""
import json

import numpy as np
import torch

from fmparity import Report, nhwc_to_nchw, rel_err, run_dump, t
from twin_unet import UNet

CASES = ["latent", "pixel"]


def check(rep, case):
    d, meta = run_dump("models/parity_unet", case)
    cfg = json.loads(meta["cfg"])
    model = UNet(**cfg)
    names = [k for k in d if k + ".grad" in d]
    keys = list(model.state_dict().keys())
    if names != keys:
        missing = sorted(set(keys) - set(names))
        extra = sorted(set(names) - set(keys))
        raise AssertionError(f"parameter names/order differ from the twin's state dict "
                             f"(missing {missing[:5]}, extra {extra[:5]}, same set: {set(keys) == set(names)})")
    model.load_state_dict({k: t(d[k]) for k in names}, strict=True)

    x = t(nhwc_to_nchw(d["x"]))
    y = torch.from_numpy(d["y"].astype(np.int64))
    out = model(x, t(d["t"]), y)
    out.backward(t(nhwc_to_nchw(d["dout"])))

    pairs = [("out", nhwc_to_nchw(d["out"]), out.detach().numpy())]
    params = dict(model.named_parameters())
    worst, worst_name = -1.0, None
    for k in names:
        e = rel_err(d[k + ".grad"], params[k].grad.numpy())
        if np.isnan(e):
            e = float("inf")
        if e > worst:
            worst, worst_name = e, k
    pairs.append((f"{len(names)} grads, worst {worst_name}.grad", d[worst_name + ".grad"],
                  params[worst_name].grad.numpy()))
    rep.case(f"unet_{case}_b{x.shape[0]}", pairs)


def main():
    rep = Report()
    for case in CASES:
        rep.run(f"unet_{case}", lambda case=case: check(rep, case))
    rep.exit()


if __name__ == "__main__":
    main()
