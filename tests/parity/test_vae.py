"""PyTorch parity of the VAE training step (tests/models/parity_vae.c against
tests/parity/twin_vae.py): the twin loads the dumped parameters with a strict
load_state_dict (same names and shapes, same order), takes the dumped x and
noise eps, and its outputs (xhat, mu, logvar, z), loss parts and EVERY
parameter gradient must match to a max relative error of 1e-4."""
import os
import sys

import numpy as np

sys.path.insert(0, os.path.dirname(__file__))
import fmparity as fp  # noqa: E402
from twin_vae import LOGVAR_MAX, LOGVAR_MIN, VAE  # noqa: E402

DUMPER = "models/parity_vae"
rep = fp.Report()


def nchw(a):
    return fp.t(fp.nhwc_to_nchw(a))


def case(B, size, res, latent, groups, loss, klw, clamp, channels):
    d, meta = fp.run_dump(DUMPER, B, size, res, latent, groups, int(loss == "l1"), klw, clamp, *channels)
    model = VAE(1, channels, res, latent, groups, loss, klw)
    sd = model.state_dict()
    order = meta["param_order"].split(",")
    if order != list(sd.keys()):
        raise AssertionError(f"parameter names/order differ: fmtrain {order[:4]}... vs twin {list(sd)[:4]}...")
    model.load_state_dict({k: fp.t(d[k]) for k in sd}, strict=True)
    x, eps = nchw(d["x"]), nchw(d["eps"])
    total, recon, kl, (xhat, mu, logvar, z) = model.loss(x, eps)
    total.backward()

    pairs = [("xhat", d["xhat"], fp.nchw_to_nhwc(xhat)), ("mu", d["mu"], fp.nchw_to_nhwc(mu)),
             ("logvar", d["logvar"], fp.nchw_to_nhwc(logvar)), ("z", d["z"], fp.nchw_to_nhwc(z)),
             ("recon", d["recon"], recon.detach().numpy().reshape(1)),
             ("kl", d["kl"], kl.detach().numpy().reshape(1)),
             ("total", d["total"], total.detach().numpy().reshape(1))]
    # every gradient is compared; the line shows the worst one
    grads = [(n, d["grad." + n], p.grad.numpy()) for n, p in model.named_parameters()]
    if len(grads) != len(order):
        raise AssertionError(f"{len(grads)} twin parameters vs {len(order)} dumped")
    errs = [fp.rel_err(a, b) for _, a, b in grads]
    worst = max(range(len(grads)), key=lambda i: errs[i])
    n, a, b = grads[worst]
    pairs.append((f"{len(grads)} grads, worst {n}", a, b))
    if clamp:  # the clamp must really be hit, in both directions
        lv = d["logvar"]
        if not ((lv == np.float32(LOGVAR_MAX)).any() and (lv == np.float32(LOGVAR_MIN)).any()):
            raise AssertionError("clamp case does not reach both logvar bounds")
    name = f"vae[B={B},{size}x{size},ch={list(channels)},res={res},latent={latent},G={groups},{loss},kl={klw}" \
           + (",clamped" if clamp else "") + "]"
    rep.case(name, pairs)


CASES = [
    # the default config at B = 3
    (3, 32, 1, 4, 8, "l2", 1e-4, 0, (32, 64, 128)),
    # two ResBlocks per level, L1, a large KL weight, odd channel counts per group
    (2, 16, 2, 3, 4, "l1", 0.5, 0, (8, 12)),
    # logvar beyond both clamp bounds
    (2, 16, 1, 2, 4, "l2", 0.01, 1, (8, 16)),
    # one level (no resampling), one GroupNorm group
    (2, 8, 1, 2, 1, "l2", 0.1, 0, (6,)),
]

for c in CASES:
    rep.run(f"vae{list(c)}", lambda c=c: case(*c))
rep.exit()
