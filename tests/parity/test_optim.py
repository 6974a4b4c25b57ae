"""Parity of fmtrain's optimiser side with PyTorch.

tests/train/parity_optim runs 10 steps of AdamW (LR warm-up + cosine
schedule, one 1-D bias without weight decay, optionally global gradient
clipping) with an EMA of the weights. Here the same gradients are replayed
through torch.optim.AdamW with two param groups (decay / no decay),
torch.nn.utils.clip_grad_norm_ and a torch EMA loop, and after every step
the parameters, their change since the start (what AdamW computes), the EMA,
and at the end the moments exp_avg / exp_avg_sq are compared.
"""
import math
import os
import sys

import numpy as np
import torch

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from fmparity import Report, rel_err, run_dump, t  # noqa: E402

NAMES = ["conv.weight", "conv.bias", "lin.weight", "emb.weight"]


def lr_at(base, min_ratio, warmup, total, step):
    """The schedule of include/fm/schedule.h, written independently."""
    lo = base * min_ratio
    if step < warmup:
        return base * (step + 1) / warmup
    if step >= total:
        return lo
    return lo + (base - lo) * 0.5 * (1 + math.cos(math.pi * (step - warmup) / (total - warmup)))


def replay(case):
    ts, meta = run_dump("train/parity_optim", case)
    f = {k: float(v) for k, v in meta.items() if not k.startswith("crc32c.")}
    steps, clip = int(f["steps"]), bool(f["clip"])
    params = {n: t(ts[f"init.{n}"], grad=True) for n in NAMES}
    decay = [params[n] for n in NAMES if not f[f"nodecay.{n}"]]
    nodecay = [params[n] for n in NAMES if f[f"nodecay.{n}"]]
    assert nodecay == [params["conv.bias"]], "the 1-D bias must be the only tensor without decay"
    opt = torch.optim.AdamW([{"params": decay, "weight_decay": f["weight_decay"]},
                             {"params": nodecay, "weight_decay": 0.0}],
                            lr=f["base_lr"], betas=(f["beta1"], f["beta2"]), eps=f["eps"])
    ema = {n: params[n].detach().clone() for n in NAMES}
    init = {n: ts[f"init.{n}"].astype(np.float64) for n in NAMES}

    sched_err = decay_err = norm_err = 0.0
    worst = {"param": 0.0, "change": 0.0, "ema": 0.0}
    for s in range(steps):
        lr = lr_at(f["base_lr"], f["min_ratio"], int(f["warmup"]), int(f["total"]), s)
        sched_err = max(sched_err, abs(lr - f[f"lr.{s}"]) / lr)
        for n in NAMES:
            params[n].grad = t(ts[f"grad.{s}.{n}"])
        if clip:
            norm = float(torch.nn.utils.clip_grad_norm_([params[n] for n in NAMES], f["max_norm"]))
        else:
            norm = float(torch.norm(torch.stack([torch.norm(params[n].grad) for n in NAMES])))
        norm_err = max(norm_err, abs(norm - f[f"norm.{s}"]) / norm)
        for g in opt.param_groups:
            g["lr"] = f[f"lr.{s}"]
        opt.step()
        d = min(f["ema"], (1 + s) / (10 + s)) if f["ema_warmup"] else f["ema"]
        decay_err = max(decay_err, abs(d - f[f"ema_decay.{s}"]))
        with torch.no_grad():
            for n in NAMES:
                ema[n].mul_(d).add_(params[n], alpha=1 - d)
        for n in NAMES:
            ref = params[n].detach().numpy()
            ours = ts[f"param.{s}.{n}"]
            worst["param"] = max(worst["param"], rel_err(ours, ref))
            worst["change"] = max(worst["change"], rel_err(ours - init[n], ref - init[n]))
            worst["ema"] = max(worst["ema"], rel_err(ts[f"ema.{s}.{n}"], ema[n].numpy()))
    # clip coefficients max_norm / norm of the steps, to check the case covers all regimes
    coefs = [f["max_norm"] / f[f"norm.{s}"] for s in range(steps)] if clip else []
    for n in NAMES:
        assert float(opt.state[params[n]]["step"]) == steps
        for k, key in (("m", "exp_avg"), ("v", "exp_avg_sq")):
            worst["m/v"] = max(worst.get("m/v", 0.0), rel_err(ts[f"{k}.{n}"], opt.state[params[n]][key].numpy()))
    worst.update({"lr": sched_err, "norm": norm_err, "ema decay": decay_err})
    return worst, coefs


def known(label, e):
    """A (label, ours, ref) triple whose relative error is the already computed e."""
    return (label, np.array([1.0 + e]), np.array([1.0]))


def case(rep, name):
    def fn():
        worst, coefs = replay(name)
        if name == "clip" and not (any(c < 0.5 for c in coefs) and any(0.5 < c < 1 for c in coefs)
                                   and any(c > 1 for c in coefs)):
            raise AssertionError(f"clip case must clip hard, mildly and not at all: {coefs}")
        rep.case(f"optim_{name}", [known(k, e) for k, e in worst.items()])
    rep.run(f"optim_{name}", fn)


if __name__ == "__main__":
    rep = Report()
    for name in ("plain", "clip"):
        case(rep, name)
    rep.exit()
