"""stedit.py - rewrite a safetensors file the way a bug, a foreign tool or a
hand edit could, with every CRC32C (per tensor and of the metadata) made to
match again, so that a loader has to notice the bad value itself.

    stedit.py IN OUT OP...
      set NAME INDEX VALUE    float INDEX of F32 tensor NAME := VALUE (nan, inf ok)
      bf16 NAME               tensor NAME stored as BF16 (same shape, half the bytes)
      reshape NAME D0,D1,...  tensor NAME gets this shape (same number of values)
      meta KEY VALUE          metadata KEY := VALUE
      nometacrc               drop the metadata checksum (a file of an older fmtrain)
      dup NAME                the header lists tensor NAME twice
      overlap A B             tensor B's data_offsets point into A's bytes (B no larger)
The metadata checksum is recomputed as fmtrain does (safetensors.h): CRC32C of
every other pair sorted by key, each as key NUL value NUL. No fmtrain code."""
import json
import os
import struct
import sys

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "harness"))
from crc32c import crc32c  # noqa: E402  (tests/harness/crc32c.py)

META_CRC = "crc32c.__metadata__"


def pack(meta, tensors, dirty=(), dups=(), overlaps=(), keep_crc=True):
    """The bytes of a safetensors file: tensors (name -> [dtype, shape, bytes]) laid out in order, the CRC32C of
    each tensor in dirty or without one in meta (pure Python: only what changed), the metadata checksum unless
    not keep_crc; dups: names listed twice in the header; overlaps: (a, b), b's offsets at a's first bytes."""
    meta = dict(meta)
    out, off, blob = {}, 0, bytearray()
    for k, (dt, shape, b) in tensors.items():
        if k in dirty or "crc32c." + k not in meta:
            meta["crc32c." + k] = "%08x" % crc32c(b)
        out[k] = {"dtype": dt, "shape": shape, "data_offsets": [off, off + len(b)]}
        off += len(b)
        blob += b
    for a, b in overlaps:
        beg = out[a]["data_offsets"][0]
        n = len(tensors[b][2])
        assert n <= len(tensors[a][2]), (a, b)
        out[b]["data_offsets"] = [beg, beg + n]
        meta["crc32c." + b] = "%08x" % crc32c(blob[beg:beg + n])
    meta.pop(META_CRC, None)
    if keep_crc:
        c = 0
        for k in sorted(meta, key=lambda s: s.encode()):
            c = crc32c(k.encode() + b"\0" + meta[k].encode() + b"\0", c)
        meta[META_CRC] = "%08x" % c
    items = [("__metadata__", meta)] + list(out.items()) + [(k, out[k]) for k in dups]
    h = ("{" + ",".join(json.dumps(k) + ":" + json.dumps(v, separators=(",", ":")) for k, v in items) + "}").encode()
    h += b" " * (-len(h) % 8)
    return struct.pack("<Q", len(h)) + h + blob


def main(argv):
    src, dst, ops = argv[1], argv[2], argv[3:]
    with open(src, "rb") as f:
        n = struct.unpack("<Q", f.read(8))[0]
        hdr = json.loads(f.read(n))
        data = f.read()
    meta = hdr.pop("__metadata__", {})
    tensors = {k: [t["dtype"], t["shape"], bytearray(data[t["data_offsets"][0]:t["data_offsets"][1]])]
               for k, t in hdr.items()}
    keep_crc, dirty, dups, overlaps = True, set(), [], []
    while ops:
        op = ops.pop(0)
        if op == "set":
            name, idx, val = ops.pop(0), int(ops.pop(0)), float(ops.pop(0))
            struct.pack_into("<f", tensors[name][2], 4 * idx, val)
            dirty.add(name)
        elif op == "bf16":
            name = ops.pop(0)
            t = tensors[name]
            dirty.add(name)
            t[0], t[2] = "BF16", bytearray(b"".join(t[2][i + 2:i + 4] for i in range(0, len(t[2]), 4)))
        elif op == "reshape":
            name = ops.pop(0)
            tensors[name][1] = [int(d) for d in ops.pop(0).split(",")]
        elif op == "meta":
            k = ops.pop(0)
            meta[k] = ops.pop(0)
        elif op == "dup":
            dups.append(ops.pop(0))
        elif op == "overlap":
            overlaps.append((ops.pop(0), ops.pop(0)))
        elif op == "nometacrc":
            keep_crc = False
        else:
            sys.exit(f"stedit.py: unknown op {op}")
    with open(dst, "wb") as f:
        f.write(pack(meta, tensors, dirty, dups, overlaps, keep_crc))


if __name__ == "__main__":
    main(sys.argv)
