"""PyTorch side of `make bench` for whole training steps: the flow stage's step
on the PyTorch twin of the model (tests/parity/twin_unet.py / twin_dit.py),
with the shapes, batch and optimiser settings that tests/bench/bench_step
measured for fmtrain.

Reads bench_step's JSON line(s) on stdin and prints one JSON object per line:
{"name", "mode", "torch_step_s" (median), "torch_step_s_min",
"torch_step_s_all", "torch_phase_s", "torch_peak_rss_mb"}, or {"name", "mode",
"error"} when the mode fails (PyTorch 1.13's bf16 autocast on the U-Net: the
exception's text, kept for the report). The step, as a PyTorch expert writes
it: gather a batch of latents, t ~ U[0, 1), noise, x_t and the target of the
configured path, label dropout to the null class, forward, MSE, backward,
clip_grad_norm_, torch.optim.AdamW(foreach=True), an EMA with
torch._foreach_mul_ / _foreach_add_. torch.set_num_threads(threads). Run it
with OpenBLAS unpinned (tests/bench/run.sh does: env -u OPENBLAS_CORETYPE -u
OPENBLAS_L2_SIZE).

--mode is fp32 or bf16 (forward and loss under torch.autocast('cpu',
dtype=torch.bfloat16); parameters, gradients and optimiser in fp32, as
fmtrain's run.precision: bf16 keeps its master weights), followed by any of
_cl (model and batch in channels_last) and _up4 (the U-Net's upsampling as
fmtrain's 4-parity convolution, tests/bench/twin_upconv.py): fp32,
fp32_cl, fp32_up4, fp32_cl_up4, bf16, bf16_cl, ...

    torch_step.py THREADS [--mode M] [--steps N] [--warmup W] < bench_step.jsonl
"""
import argparse
import json
import math
import os
import resource
import statistics
import sys
import time
import traceback

import torch
import torch.nn.functional as F

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "parity"))
from twin_dit import DiT  # noqa: E402
from twin_unet import UNet  # noqa: E402

from twin_upconv import UNetUp4  # noqa: E402

POOL_BATCHES = 4  # as bench_step.c
NUM_CLASSES = 10


def path_coefs(kind, t):
    """alpha_t, beta_t and their derivatives, [B, 1, 1, 1] each (path.h)."""
    t = t.view(-1, 1, 1, 1)
    if kind == "cosine":
        a, b = torch.sin(0.5 * math.pi * t), torch.cos(0.5 * math.pi * t)
        return a, b, 0.5 * math.pi * b, -0.5 * math.pi * a
    return t, 1 - t, torch.ones_like(t), -torch.ones_like(t)


def bench(spec, steps, warmup, mode):
    torch.manual_seed(0)
    B, side, ch = spec["batch"], spec["side"], spec["ch"]
    tr = spec["train"]
    parts = mode.split("_")
    if parts[0] not in ("fp32", "bf16") or not set(parts[1:]) <= {"cl", "up4"}:
        raise SystemExit(f"torch_step.py: unknown --mode {mode!r}: fp32 or bf16, then any of _cl, _up4")
    bf16, cl, up4 = parts[0] == "bf16", "cl" in parts, "up4" in parts
    if spec["model"] == "dit":
        if up4:
            raise SystemExit("torch_step.py: _up4 is for the U-Net (the DiT has no upsampling)")
        model = DiT(**spec["twin"])
    else:
        model = (UNetUp4 if up4 else UNet)(**spec["twin"])
    fmt = torch.channels_last if cl else torch.contiguous_format
    model = model.to(memory_format=fmt)
    params = [p for p in model.parameters()]
    opt = torch.optim.AdamW(params, lr=tr["lr"], betas=(tr["beta1"], tr["beta2"]), weight_decay=tr["weight_decay"],
                            foreach=True)
    ema = [p.detach().clone() for p in params]
    pool = torch.randn(POOL_BATCHES * B, ch, side, side).contiguous(memory_format=fmt)
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
        with torch.autocast("cpu", dtype=torch.bfloat16, enabled=bf16):
            out = model(xt, t, yd)
            loss = F.mse_loss(out.float(), target)
        t2 = time.perf_counter()
        opt.zero_grad(set_to_none=True)
        loss.backward()
        t3 = time.perf_counter()
        torch.nn.utils.clip_grad_norm_(params, clip)
        opt.step()
        with torch.no_grad():
            d = min(decay, (1 + s) / (10 + s)) if tr.get("ema_warmup", True) else decay
            torch._foreach_mul_(ema, d)
            torch._foreach_add_(ema, params, alpha=1 - d)
        t4 = time.perf_counter()
        if not math.isfinite(loss.item()):
            raise RuntimeError(f"non-finite loss at step {s}")
        return t4 - t0, (t1 - t0, t2 - t1, t3 - t2, t4 - t3)

    try:
        step(0)
    except RuntimeError as e:  # the mode itself fails (bf16 autocast: GroupNorm on the U-Net in 1.13)
        if not bf16:
            raise
        tb = traceback.extract_tb(e.__traceback__)
        ours = [f for f in tb if "/tests/" in f.filename][-1]  # the model line that called it
        return {"name": spec["name"], "mode": mode,
                "error": f"{type(e).__name__}: {str(e).strip()} (in {tb[-1].name}, called from "
                         f"{os.path.basename(ours.filename)}:{ours.lineno}: {ours.line})"}
    for s in range(1, warmup):  # step 0 was the first warm-up step
        step(s)
    times, phases = [], []
    for s in range(max(warmup, 1), max(warmup, 1) + steps):
        total, ph = step(s)
        times.append(total)
        phases.append(ph)
    med = lambda i: statistics.median(p[i] for p in phases)  # noqa: E731
    return {
        "name": spec["name"],
        "mode": mode,
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
    ap.add_argument("--mode", default="fp32", help="fp32 or bf16, then any of _cl, _up4 (see above)")
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
        r = bench(spec, steps, warmup, args.mode)
        r["torch_threads"] = torch.get_num_threads()
        print(json.dumps(r), flush=True)


if __name__ == "__main__":
    main()
