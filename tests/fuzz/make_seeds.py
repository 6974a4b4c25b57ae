"""make_seeds.py - writes the hand-made seeds of the fuzz corpora (run from the
repository root with /usr/bin/python3; the checkpoint seeds written by the real
writer come from make_ckpt_seeds.c):
  corpus/config/  the project's configs and small YAML snippets (lists, flow
                  sequences, anchors, quoting, errors)
  corpus/idx/     mode byte + file (see fuzz_idx.c): gzip'd IDX files of each
                  rank, a truncated and a concatenated stream, and raw IDX
                  bodies the harness compresses itself
  corpus/ckpt/    safetensors headers that once crashed or misled the reader:
                  a shape whose byte size overflows 64 bits (with the CRC of
                  zero bytes), metadata that is a list, not an object
  corpus/latents/ latents files of 3 samples [2, 2, 1] (see fuzz_latents.c):
                  a valid one and one per check (a label of 10, a NaN scale,
                  BF16 latents, labels [3, 1], a tensor listed twice, two
                  tensors sharing bytes), CRCs made to match (tests/fault/stedit.py)
  corpus/ckpt_meta/ metadata pairs, key NUL value NUL ... (see
                  fuzz_ckpt_meta.c): a valid set and a bad adam_step, step,
                  group count and config"""
import glob
import gzip
import json
import os
import shutil
import struct
import sys

sys.path.insert(0, "tests/fault")
from stedit import pack  # noqa: E402

C = "tests/fuzz/corpus"
for d in ("config", "idx", "ckpt", "latents", "ckpt_meta"):
    os.makedirs(f"{C}/{d}", exist_ok=True)

for f in glob.glob("configs/*.yaml"):
    shutil.copy(f, f"{C}/config/{os.path.basename(f)}")
snippets = {
    "lists.yaml": "run:\n  stages: [vae, encode, flow]\n  fault_nan_steps:\n    - 3\n    - 4\nsample:\n  cfg: [1, 2.5, 1e1]\n",
    "anchor.yaml": "vae: &v\n  steps: 10\nflow: *v\n",
    "quoted.yaml": "run:\n  out: \"runs/a\\tb\\u00e9\"\n  seed: '3'\ndata:\n  dir: |\n    /tmp/x\n",
    "dotted.yaml": "flow.lr: 1e-3\nunet.channels: 32\n",
    "bad.yaml": "run: [1, 2\n",
    "two_docs.yaml": "run:\n  seed: 1\n---\nrun:\n  seed: 2\n",
    "set_override.txt": "unet.attn_res=[4, 8]",
    "empty_values.yaml": "eval:\nrun:\n  stages: []\n  out: ''\n",
}
for name, text in snippets.items():
    open(f"{C}/config/{name}", "w").write(text)


def idx(ndim, dims, payload):
    return struct.pack(">BBBB", 0, 0, 8, ndim) + b"".join(struct.pack(">I", d) for d in dims) + payload


img = idx(3, [2, 4, 4], bytes(range(32)))
lab = idx(1, [5], bytes([0, 1, 2, 9, 3]))
two = idx(2, [3, 2], bytes(6))
four = idx(4, [1, 2, 2, 2], bytes(8))
# mode byte: bit 0 = compress here; (mode >> 1) % 4 + 1 = expected rank
seeds = {
    "img3.gz": bytes([2 << 1]) + gzip.compress(img),
    "lab1.gz": bytes([0]) + gzip.compress(lab),
    "two_members.gz": bytes([0]) + gzip.compress(lab[:6]) + gzip.compress(lab[6:]),
    "truncated.gz": bytes([2 << 1]) + gzip.compress(img)[:-9],
    "trailing.gz": bytes([0]) + gzip.compress(lab) + b"\0junk",
    "raw_img3": bytes([(2 << 1) | 1]) + img,
    "raw_two2": bytes([(1 << 1) | 1]) + two,
    "raw_four4": bytes([(3 << 1) | 1]) + four,
    "raw_huge_claim": bytes([1]) + idx(1, [0x7FFFFFFF], b"ab"),
}
for name, b in seeds.items():
    open(f"{C}/idx/{name}", "wb").write(b)


def st(header):
    h = json.dumps(header, separators=(",", ":")).encode()
    h += b" " * (-len(h) % 8)
    return struct.pack("<Q", len(h)) + h


meta = {"format": "fmtrain-ckpt-1", "stage": "flow", "step": "1", "crc32c.x": "00000000"}
open(f"{C}/ckpt/size_overflow.safetensors", "wb").write(
    st({"__metadata__": meta, "x": {"dtype": "F32", "shape": [4294967296, 4294967296], "data_offsets": [0, 0]}}))
open(f"{C}/ckpt/meta_list.safetensors", "wb").write(st({"__metadata__": ["format", "x"]}))


def f32(*v):
    return struct.pack(f"<{len(v)}f", *v)


LAT = f32(*[0.25 * i - 1 for i in range(12)])
LM = {"format": "fmtrain-latents-1", "latent_scale": "1.5"}


def lat(labels=f32(0, 9, 4), scale=f32(1.5), latents=("F32", [3, 2, 2, 1], LAT), lshape=(3,), **kw):
    return pack(LM, {"latents": latents, "labels": ("F32", list(lshape), labels), "scale": ("F32", [1], scale)}, **kw)


seeds = {
    "valid": lat(),
    "label10": lat(labels=f32(0, 10, 4)),
    "scale_nan": lat(scale=f32(float("nan"))),
    "bf16": lat(latents=("BF16", [3, 2, 2, 1], LAT[:24])),
    "labels_2d": lat(lshape=(3, 1)),
    "dup": lat(dups=["scale"]),
    "overlap": lat(overlaps=[("latents", "labels")]),
}
for name, b in seeds.items():
    open(f"{C}/latents/{name}.safetensors", "wb").write(b)


def pairs(**kv):
    return b"".join(k.replace("_COLON_", ":").replace("_DOT_", ".").encode() + b"\0" + v.encode() + b"\0"
                    for k, v in kv.items())


GOOD = dict(format="fmtrain-ckpt-1", stage="flow", step="3", group_COLON_="3", group_COLON_ema_DOT_="3",
            adam_step="3", config="run:\n  seed: 1\nsample:\n  per_class: 4\n")
seeds = {
    "valid": pairs(**GOOD),
    "adam_negative": pairs(**dict(GOOD, adam_step="-1")),
    "adam_past_step": pairs(**dict(GOOD, adam_step="4")),
    "step_negative": pairs(**dict(GOOD, step="-2")),
    "group_count": pairs(**dict(GOOD, group_COLON_="99999999999999999999")),
    "config_bad": pairs(**dict(GOOD, config="sample:\n  per_class: 100000\n")),
    "tiny_config": pairs(**dict(GOOD, config=open("configs/tiny.yaml").read())),
}
for name, b in seeds.items():
    open(f"{C}/ckpt_meta/{name}", "wb").write(b)
