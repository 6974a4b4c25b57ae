"""Shared helpers for the PyTorch parity tests.

A C dumper (build/tests/nn/parity_*) runs an fmtrain layer on Philox-drawn
inputs and weights and writes everything (inputs, weights, upstream gradient,
outputs, gradients) to a safetensors file. The Python test loads it, runs the
PyTorch reference on the same weights and inputs, and compares. Activations in
the file are NHWC, as fmtrain keeps them; parameters are in PyTorch's layout.

Relative error: max|a - b| / max|b| over a tensor (b = PyTorch); it must be
<= 1e-4 in fp32.
"""
import json
import os
import struct
import subprocess
import sys
import tempfile

import numpy as np
import torch

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
BUILD = os.path.join(ROOT, os.environ.get("FM_BUILD", "build"))
TOL = 1e-4

torch.set_num_threads(int(os.environ.get("OMP_NUM_THREADS", "2")))


def load_safetensors(path):
    """Return ({name: np.ndarray}, metadata dict) using only json + numpy."""
    with open(path, "rb") as f:
        n = struct.unpack("<Q", f.read(8))[0]
        header = json.loads(f.read(n))
        data = f.read()
    meta = header.pop("__metadata__", {})
    out = {}
    for name, h in header.items():
        b, e = h["data_offsets"]
        dt = {"F32": np.float32, "BF16": np.uint16}[h["dtype"]]
        out[name] = np.frombuffer(data[b:e], dtype=dt).reshape(h["shape"]).copy()
    return out, meta


def run_dump(binary, *args):
    """Run a C dumper and return its tensors and metadata."""
    exe = os.path.join(BUILD, "tests", binary)
    fd, path = tempfile.mkstemp(suffix=".safetensors")
    os.close(fd)
    try:
        subprocess.run([exe, path, *map(str, args)], check=True)
        return load_safetensors(path)
    finally:
        os.unlink(path)


def t(a, grad=False):
    x = torch.from_numpy(np.ascontiguousarray(a)).float()
    return x.requires_grad_(grad)


def nhwc_to_nchw(a):
    return np.ascontiguousarray(np.transpose(a, (0, 3, 1, 2)))


def nchw_to_nhwc(x):
    return x.detach().permute(0, 2, 3, 1).contiguous().numpy()


def rel_err(ours, ref):
    ours = np.asarray(ours, dtype=np.float64)
    ref = np.asarray(ref, dtype=np.float64)
    assert ours.shape == ref.shape, f"shape {ours.shape} vs {ref.shape}"
    scale = max(np.abs(ref).max(), 1e-12)
    return float(np.abs(ours - ref).max() / scale)


class Report:
    """Collects comparisons for one test case and prints PASS/FAIL."""

    def __init__(self):
        self.failed = 0

    def case(self, name, pairs, tol=TOL):
        worst = 0.0
        detail = []
        ok = True
        for label, ours, ref in pairs:
            e = rel_err(ours, ref)
            detail.append(f"{label} {e:.1e}")
            worst = max(worst, e)
            if not (e <= tol):
                ok = False
        print(f"{'PASS' if ok else 'FAIL'} parity/{name} (max rel err {worst:.1e}; {', '.join(detail)})")
        sys.stdout.flush()
        self.failed += not ok

    def run(self, name, fn):
        try:
            fn()
        except Exception as exc:  # a crash is a failure, not a skip
            print(f"FAIL parity/{name} ({type(exc).__name__}: {exc})")
            self.failed += 1

    def exit(self):
        sys.exit(1 if self.failed else 0)
