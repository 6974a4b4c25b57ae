"""ckpt.py - checks the fault tests run on checkpoints and metrics with numpy
only (no fmtrain code), so a bug in the loader cannot hide itself.

    ckpt.py same A B                 every tensor of A equals B's bit for bit
    ckpt.py close A B RTOL           every tensor: max|a-b| <= RTOL * max|b|
    ckpt.py finite FILE...           every value of every tensor is finite
    ckpt.py meta FILE KEY            print one metadata value
    ckpt.py losses M1 M2 FIRST LAST RTOL
                                     flow losses of steps FIRST..LAST in the
                                     metrics logs M1 and M2 agree within RTOL
                                     (relative; 0 = the printed digits equal)
Prints one line of figures; exit 1 (with the reason) on a mismatch."""
import json
import struct
import sys

import numpy as np


def load(path):
    with open(path, "rb") as f:
        n = struct.unpack("<Q", f.read(8))[0]
        hdr = json.loads(f.read(n))
        data = f.read()
    meta = hdr.pop("__metadata__", {})
    out = {}
    for name, t in hdr.items():
        assert t["dtype"] == "F32", (path, name, t["dtype"])
        b, e = t["data_offsets"]
        out[name] = np.frombuffer(data[b:e], np.float32).reshape(t["shape"])
    return meta, out


def fail(msg):
    print("mismatch:", msg)
    sys.exit(1)


def same(a, b):
    ma, ta = load(a)
    mb, tb = load(b)
    if ta.keys() != tb.keys():
        fail(f"tensor names differ: {sorted(ta.keys() ^ tb.keys())[:5]}")
    if ma.get("step") != mb.get("step"):
        fail(f"steps differ: {ma.get('step')} vs {mb.get('step')}")
    n = 0
    for k in ta:
        if ta[k].shape != tb[k].shape or ta[k].tobytes() != tb[k].tobytes():
            d = np.abs(ta[k].astype(np.float64) - tb[k]).max() if ta[k].shape == tb[k].shape else "shape"
            fail(f"tensor {k} differs (max abs diff {d})")
        n += ta[k].size
    print(f"{len(ta)} tensors, {n} values bitwise identical (step {ma.get('step')})")


def close(a, b, rtol):
    _, ta = load(a)
    _, tb = load(b)
    if ta.keys() != tb.keys():
        fail("tensor names differ")
    worst, wname = 0.0, ""
    for k in ta:
        if k.startswith("adam.v."):  # second moments of tiny gradients: relative error is noise
            continue
        d = np.abs(ta[k].astype(np.float64) - tb[k]).max() / max(np.abs(tb[k]).max(), 1e-30)
        if d > worst:
            worst, wname = d, k
    print(f"max relative difference {worst:.3g} ({wname})")
    if worst > rtol:
        fail(f"{wname}: {worst:.3g} > {rtol}")


def finite(paths):
    for p in paths:
        meta, t = load(p)
        bad = [k for k, v in t.items() if not np.isfinite(v).all()]
        if bad:
            fail(f"{p}: non-finite values in {bad[:5]}")
        print(f"{p.split('/')[-1]}: {len(t)} tensors finite (step {meta.get('step')})")


def flow_losses(path):
    out = {}
    for line in open(path):
        r = json.loads(line)
        if r["stage"] == "flow":
            out[r["step"]] = r["loss"]  # a resumed run may repeat steps: keep the last
    return out


def losses(m1, m2, first, last, rtol):
    a, b = flow_losses(m1), flow_losses(m2)
    worst = 0.0
    for s in range(first, last + 1):
        if s not in a or s not in b:
            fail(f"step {s} missing from {m1 if s not in a else m2}")
        if a[s] is None or b[s] is None:
            fail(f"step {s}: loss is null")
        d = abs(a[s] - b[s]) / max(abs(b[s]), 1e-30)
        worst = max(worst, d)
        if d > rtol:
            fail(f"step {s}: loss {a[s]!r} vs {b[s]!r} (relative {d:.3g} > {rtol})")
    print(f"flow losses of steps {first}..{last}: max relative difference {worst:.3g}")


if __name__ == "__main__":
    cmd, args = sys.argv[1], sys.argv[2:]
    if cmd == "same":
        same(*args)
    elif cmd == "close":
        close(args[0], args[1], float(args[2]))
    elif cmd == "finite":
        finite(args)
    elif cmd == "meta":
        print(load(args[0])[0].get(args[1], ""))
    elif cmd == "losses":
        losses(args[0], args[1], int(args[2]), int(args[3]), float(args[4]))
    else:
        sys.exit(f"unknown command {cmd}")
