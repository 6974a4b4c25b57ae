"""PyTorch side of `make bench` for whole training steps: the flow stage's step
on the PyTorch twin of the model (tests/parity/twin_unet.py / twin_dit.py),
with the shapes, batch and optimiser settings that tests/bench/bench_step
measured for fmtrain.

Reads bench_step's JSON line(s) on stdin and prints one JSON object per line:
{"name", "torch_step_s" (median), "torch_step_s_min", "torch_step_s_all",
"torch_phase_s", "torch_peak_rss_mb"}. The step, as a plain PyTorch user
writes it: gather a batch of latents, t ~ U[0, 1), noise, x_t and the target
of the configured path, label dropout to the null class, forward, MSE,
backward, clip_grad_norm_, torch.optim.AdamW, an EMA loop over the
parameters. fp32, NCHW, torch.set_num_threads(threads). Run it with OpenBLAS
unpinned (tests/bench/run.sh does: env -u OPENBLAS_CORETYPE -u OPENBLAS_L2_SIZE).

    torch_step.py THREADS [--steps N] [--warmup W] < bench_step.jsonl
"""
import argparse
import json
import math
import os
import resource
import statistics
import sys
import time

import torch
import torch.nn.functional as F

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "parity"))
from twin_dit import DiT  # noqa: E402
from twin_unet import UNet  # noqa: E402

POOL_BATCHES = 4  # as bench_step.c
NUM_CLASSES = 10


def path_coefs(kind, t):
    """alpha_t, beta_t and their derivatives, [B, 1, 1, 1] each (path.h)."""
    t = t.view(-1, 1, 1, 1)
    if kind == "cosine":
        a, b = torch.sin(0.5 * math.pi * t), torch.cos(0.5 * math.pi * t)
        return a, b, 0.5 * math.pi * b, -0.5 * math.pi * a
    return t, 1 - t, torch.ones_like(t), -torch.ones_like(t)


def bench(spec, steps, warmup):
    torch.manual_seed(0)
    B, side, ch = spec["batch"], spec["side"], spec["ch"]
    tr = spec["train"]
    model = DiT(**spec["twin"]) if spec["model"] == "dit" else UNet(**spec["twin"])
    params = [p for p in model.parameters()]
    opt = torch.optim.AdamW(params, lr=tr["lr"], betas=(tr["beta1"], tr["beta2"]), weight_decay=tr["weight_decay"])
    ema = [p.detach().clone() for p in params]
    pool = torch.randn(POOL_BATCHES * B, ch, side, side)
    pool_y = torch.randint(0, NUM_CLASSES, (POOL_BATCHES * B,))
    clip = tr["grad_clip"] if tr["grad_clip"] > 0 else float("inf")
    decay = tr["ema_decay"]

    def step(s):
        t0 = time.perf_counter()
        k = s % POOL_BATCHES
        z, y = pool[k * B:(k + 1) * B], pool_y[k * B:(k + 1) * B]
        t = torch.rand(B)
        eps = torch.randn_like(z)
        a, b, da, db = path_coefs(tr["path"], t)
        xt = a * z + b * eps
        target = da * z + db * eps
        yd = torch.where(torch.rand(B) < tr["cfg_dropout"], torch.full_like(y, NUM_CLASSES), y)
        t1 = time.perf_counter()
        out = model(xt, t, yd)
        loss = F.mse_loss(out, target)
        t2 = time.perf_counter()
        opt.zero_grad(set_to_none=True)
        loss.backward()
        t3 = time.perf_counter()
        torch.nn.utils.clip_grad_norm_(params, clip)
        opt.step()
        with torch.no_grad():
            d = min(decay, (1 + s) / (10 + s)) if tr.get("ema_warmup", True) else decay
            for pe, p in zip(ema, params):
                pe.mul_(d).add_(p, alpha=1 - d)
        t4 = time.perf_counter()
        if not math.isfinite(loss.item()):
            raise RuntimeError(f"non-finite loss at step {s}")
        return t4 - t0, (t1 - t0, t2 - t1, t3 - t2, t4 - t3)

    for s in range(warmup):
        step(s)
    times, phases = [], []
    for s in range(warmup, warmup + steps):
        total, ph = step(s)
        times.append(total)
        phases.append(ph)
    med = lambda i: statistics.median(p[i] for p in phases)  # noqa: E731
    return {
        "name": spec["name"],
        "torch_step_s": statistics.median(times),
        "torch_step_s_min": min(times),
        "torch_step_s_all": [round(x, 6) for x in times],
        "torch_phase_s": {"data": med(0), "forward_loss": med(1), "backward": med(2), "optimizer_ema": med(3)},
        "torch_params": sum(p.numel() for p in params),
        "torch_peak_rss_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0,
    }


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("threads", type=int)
    ap.add_argument("--steps", type=int, default=None, help="default: bench_step's")
    ap.add_argument("--warmup", type=int, default=None, help="default: bench_step's")
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    for line in sys.stdin:
        if not line.strip():
            continue
        spec = json.loads(line)
        steps = args.steps or spec["steps"]
        warmup = spec["warmup"] if args.warmup is None else args.warmup
        r = bench(spec, steps, warmup)
        r["torch_threads"] = torch.get_num_threads()
        print(json.dumps(r), flush=True)


if __name__ == "__main__":
    main()
