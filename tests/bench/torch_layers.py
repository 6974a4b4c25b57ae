"""PyTorch side of `make bench` for single layers: forward + backward time of a
3x3 convolution and of multi-head self-attention at U-Net sizes.

Prints one JSON object per case: {"case": ..., "torch_ms": ...}. Run it with the
same thread count as fmtrain, and OpenBLAS unpinned (tests/bench/run.sh does).
"""
import json
import sys
import time

import torch

threads = int(sys.argv[1]) if len(sys.argv) > 1 else 2
torch.set_num_threads(threads)
torch.manual_seed(0)


def timeit(fn, warmup=3, reps=10):
    for _ in range(warmup):
        fn()
    best = float("inf")
    for _ in range(reps):
        t0 = time.perf_counter()
        fn()
        best = min(best, time.perf_counter() - t0)
    return best * 1e3


def conv_case(n, h, c_in, c_out):
    conv = torch.nn.Conv2d(c_in, c_out, 3, padding=1)
    x = torch.randn(n, c_in, h, h, requires_grad=True)
    dy = torch.randn(n, c_out, h, h)

    def step():
        x.grad = None
        conv.zero_grad(set_to_none=True)
        conv(x).backward(dy)

    return timeit(step)


def attn_case(b, t, c, heads):
    mha = torch.nn.MultiheadAttention(c, heads, batch_first=True)
    x = torch.randn(b, t, c, requires_grad=True)
    dy = torch.randn(b, t, c)

    def step():
        x.grad = None
        mha.zero_grad(set_to_none=True)
        y, _ = mha(x, x, x, need_weights=False)
        y.backward(dy)

    return timeit(step)


for line in sys.stdin:
    spec = json.loads(line)
    if spec["kind"] == "conv":
        ms = conv_case(spec["n"], spec["h"], spec["cin"], spec["cout"])
    else:
        ms = attn_case(spec["b"], spec["t"], spec["c"], spec["heads"])
    print(json.dumps({"case": spec["case"], "torch_ms": ms}), flush=True)
