"""PyTorch parity of the guide classifier of classifier guidance
(tests/models/parity_guide.c against tests/parity/twin_guide.py): with the
dumped parameters (strict load_state_dict: same names, shapes and order), the
logits, the mean cross-entropy, EVERY parameter gradient of it, and the
guidance gradient grad_x log softmax(f(x, t))_y (torch.autograd on the input)
must match to a max relative error of 1e-4."""
import os
import sys

import torch
import torch.nn.functional as F

sys.path.insert(0, os.path.dirname(__file__))
import fmparity as fp  # noqa: E402
from twin_guide import Guide  # noqa: E402

DUMPER = "models/parity_guide"
rep = fp.Report()


def case(B, size, ch, width, tdim, classes, groups):
    d, meta = fp.run_dump(DUMPER, B, size, ch, width, tdim, classes, groups)
    model = Guide(ch, width, tdim, classes, groups, size)
    sd = model.state_dict()
    order = meta["param_order"].split(",")
    if order != list(sd.keys()):
        raise AssertionError(f"parameter names/order differ: fmtrain {order} vs twin {list(sd)}")
    model.load_state_dict({k: fp.t(d[k]) for k in sd}, strict=True)
    labels = torch.from_numpy(d["labels"]).long()
    t = fp.t(d["t"])
    x = fp.t(fp.nhwc_to_nchw(d["x"]))
    logits = model(x, t)
    loss = F.cross_entropy(logits, labels)
    loss.backward()
    pairs = [("logits", d["logits"], logits.detach().numpy()), ("loss", d["loss"], loss.detach().numpy().reshape(1))]
    pairs += [("d" + n, d["grad." + n], p.grad.numpy()) for n, p in model.named_parameters()]
    xg = x.clone().requires_grad_(True)
    logp = F.log_softmax(model(xg, t), 1).gather(1, labels[:, None])[:, 0]
    (gx,) = torch.autograd.grad(logp.sum(), xg)
    pairs += [("logp", d["logp"], logp.detach().numpy()), ("dx_logp", d["dx_logp"], fp.nchw_to_nhwc(gx))]
    rep.case(f"guide[B={B},{size}x{size}x{ch},width={width},time_dim={tdim},classes={classes},G={groups}]", pairs)


CASES = [
    (4, 8, 4, 16, 8, 10, 8),  # the default: 8x8x4 latents
    (3, 8, 3, 4, 4, 5, 2),    # narrow
    (2, 12, 1, 8, 2, 3, 4),   # odd sizes: 12 -> 6 -> 3 -> 2, one channel
]

for c in CASES:
    rep.run(f"guide{list(c)}", lambda c=c: case(*c))
rep.exit()
