"""A checkpoint is readable with json + numpy alone (no safetensors package,
no torch): layout, names and shapes, CRC32C per tensor (re-implemented in
tests/harness/crc32c.py, table-driven), and values (against sums the C writer stored in metadata).

Runs $FM_BUILD/tests/io/parity_ckpt OUT (see tests/io/parity_ckpt.c).
"""
import json
import os
import struct
import subprocess
import sys
import tempfile

import numpy as np

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
BUILD = os.path.join(ROOT, os.environ.get("FM_BUILD", "build"))
sys.path.insert(0, os.path.join(ROOT, "tests", "harness"))
from crc32c import crc32c  # noqa: E402  (tests/harness/crc32c.py)

PARAMS = {"conv.weight": [16, 8, 3, 3], "conv.bias": [16], "norm.weight": [16], "lin.weight": [10, 33]}
PREFIXES = ["", "ema.", "adam.m.", "adam.v."]
EXTRAS = {"latent_scale": [1], "counters": [2, 3]}
EXPECTED = {p + n: s for p in PREFIXES for n, s in PARAMS.items()}
EXPECTED.update(EXTRAS)


def read(path):
    """Return (header dict without metadata, metadata, raw data bytes, header length)."""
    with open(path, "rb") as f:
        blob = f.read()
    n = struct.unpack("<Q", blob[:8])[0]
    header = json.loads(blob[8:8 + n])
    meta = header.pop("__metadata__")
    return header, meta, blob[8 + n:], n


failed = 0


def report(name, ok, detail):
    global failed
    print(f"{'PASS' if ok else 'FAIL'} parity/{name} ({detail})")
    sys.stdout.flush()
    failed += not ok


def check_layout(header, meta, data, hlen):
    problems = []
    if hlen % 8:
        problems.append(f"header length {hlen} not a multiple of 8")
    if set(header) != set(EXPECTED):
        problems.append(f"names differ: extra {set(header) - set(EXPECTED)}, missing {set(EXPECTED) - set(header)}")
    spans = []
    for name, h in header.items():
        if h["dtype"] != "F32":
            problems.append(f"{name}: dtype {h['dtype']}")
        if name in EXPECTED and h["shape"] != EXPECTED[name]:
            problems.append(f"{name}: shape {h['shape']}, expected {EXPECTED[name]}")
        b, e = h["data_offsets"]
        if e - b != 4 * int(np.prod(h["shape"])):
            problems.append(f"{name}: {e - b} bytes for shape {h['shape']}")
        spans.append((b, e))
    spans.sort()
    pos = 0
    for b, e in spans:
        if b != pos:
            problems.append(f"gap or overlap at byte {pos}")
        pos = e
    if pos != len(data):
        problems.append(f"tensors cover {pos} of {len(data)} data bytes")
    want_meta = {"format": "fmtrain-ckpt-1", "stage": "flow", "step": "1234", "seed": "11", "world_size": "2",
                 "config": "run:\n  seed: 11\nflow:\n  lr: \"3e-4\"\n"}
    want_meta.update({f"group:{p}": str(len(PARAMS)) for p in PREFIXES})
    for k, v in want_meta.items():
        if meta.get(k) != v:
            problems.append(f"metadata {k} = {meta.get(k)!r}, expected {v!r}")
    report("ckpt_layout", not problems, "; ".join(problems) if problems else
           f"{len(header)} tensors, {len(data)} data bytes, header {hlen} bytes")


def check_crc(header, meta, data):
    problems = []
    if crc32c(b"123456789") != 0xE3069283:
        problems.append("crc32c self-check failed")
    for name, h in header.items():
        b, e = h["data_offsets"]
        got = f"{crc32c(data[b:e]):08x}"
        if meta.get("crc32c." + name) != got:
            problems.append(f"{name}: stored {meta.get('crc32c.' + name)}, computed {got}")
    # the check can fail: one flipped bit is caught
    name, h = next(iter(header.items()))
    b, e = h["data_offsets"]
    damaged = bytearray(data[b:e])
    damaged[len(damaged) // 2] ^= 0x04
    if f"{crc32c(bytes(damaged)):08x}" == meta.get("crc32c." + name):
        problems.append("a flipped bit was not detected")
    report("ckpt_crc32c", not problems, "; ".join(problems) if problems else f"{len(header)} tensors match")


def check_values(header, meta, data):
    problems = []
    worst = 0.0
    arrays = {}
    for name, h in header.items():
        b, e = h["data_offsets"]
        x = np.frombuffer(data[b:e], dtype="<f4").reshape(h["shape"])
        arrays[name] = x
        s, s2, first, last = meta["check." + name].split()
        flat = x.astype(np.float64).ravel()
        for label, ours, ref in (("sum", flat.sum(), float(s)), ("sumsq", (flat * flat).sum(), float(s2))):
            err = abs(ours - ref) / max(abs(ref), 1e-30)
            worst = max(worst, err)
            if err > 1e-12:
                problems.append(f"{name}: {label} {ours!r} vs {ref!r}")
        if x.ravel()[0] != np.float32(first) or x.ravel()[-1] != np.float32(last):
            problems.append(f"{name}: first/last {x.ravel()[0]}/{x.ravel()[-1]} vs {first}/{last}")
        if not np.isfinite(x).all():
            problems.append(f"{name}: non-finite values")
    if (arrays["adam.v.lin.weight"] < 0).any():
        problems.append("adam.v holds negative values")
    if not np.array_equal(arrays["counters"], np.array([[1, 2, 3], [4, 5, 16777216]], dtype=np.float32)):
        problems.append(f"counters {arrays['counters'].tolist()}")
    if arrays["latent_scale"][0] != np.float32(0.18215):
        problems.append(f"latent_scale {arrays['latent_scale'][0]}")
    if np.array_equal(arrays["conv.weight"], arrays["ema.conv.weight"]):
        problems.append("weights and EMA are identical: groups not distinct")
    report("ckpt_values", not problems, "; ".join(problems) if problems else f"max rel err of sums {worst:.1e}")


def main():
    exe = os.path.join(BUILD, "tests", "io", "parity_ckpt")
    fd, path = tempfile.mkstemp(suffix=".safetensors")
    os.close(fd)
    try:
        subprocess.run([exe, path], check=True)
        header, meta, data, hlen = read(path)
    except Exception as exc:  # a crash is a failure
        report("ckpt_numpy", False, f"{type(exc).__name__}: {exc}")
        return 1
    finally:
        os.unlink(path)
    for fn in (check_layout, check_crc, check_values):
        try:
            fn(header, meta, data, hlen) if fn is check_layout else fn(header, meta, data)
        except Exception as exc:
            report(fn.__name__, False, f"{type(exc).__name__}: {exc}")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
