"""PyTorch parity of the eval classifier's training step
(tests/models/parity_classifier.c against tests/parity/twin_classifier.py):
the twin loads the dumped parameters with a strict load_state_dict (same names,
shapes and order), and its logits, features, cross-entropy loss, number of
correct predictions and EVERY parameter gradient must match to a max relative
error of 1e-4."""
import os
import sys

import torch

sys.path.insert(0, os.path.dirname(__file__))
import fmparity as fp  # noqa: E402
from twin_classifier import Classifier  # noqa: E402

DUMPER = "models/parity_classifier"
rep = fp.Report()


def case(B, size, width, classes, groups):
    d, meta = fp.run_dump(DUMPER, B, size, width, classes, groups)
    model = Classifier(1, width, classes, groups, size)
    sd = model.state_dict()
    order = meta["param_order"].split(",")
    if order != list(sd.keys()):
        raise AssertionError(f"parameter names/order differ: fmtrain {order} vs twin {list(sd)}")
    model.load_state_dict({k: fp.t(d[k]) for k in sd}, strict=True)
    labels = torch.from_numpy(d["labels"]).long()
    loss, logits, feats = model.loss(fp.t(fp.nhwc_to_nchw(d["x"])), labels)
    loss.backward()
    correct = (logits.argmax(dim=1) == labels).sum().float().reshape(1)
    pairs = [("logits", d["logits"], logits.detach().numpy()), ("features", d["features"], feats.detach().numpy()),
             ("loss", d["loss"], loss.detach().numpy().reshape(1)), ("correct", d["correct"], correct.numpy())]
    pairs += [("d" + n, d["grad." + n], p.grad.numpy()) for n, p in model.named_parameters()]
    rep.case(f"classifier[B={B},{size}x{size},width={width},classes={classes},G={groups}]", pairs)


CASES = [
    (4, 32, 32, 10, 8),   # the default
    (3, 16, 8, 7, 4),     # narrow, 16x16 (last stage 2x2)
    (5, 12, 4, 3, 2),     # odd sizes: 12 -> 6 -> 3 -> 2
]

for c in CASES:
    rep.run(f"classifier{list(c)}", lambda c=c: case(*c))
rep.exit()
