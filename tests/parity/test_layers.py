"""PyTorch parity of the hand-written layers (tests/nn/parity_layers.c):
GroupNorm (+ adaGN scale/shift, + fused SiLU, affine or not), SiLU, nearest x2
upsampling, channel concat, residual and broadcast add, class embedding, time
embedding and the MSE loss. Outputs and every gradient must match to a max
relative error of 1e-4 (fmparity.TOL)."""
import math
import sys

import torch
import torch.nn.functional as F

sys.path.insert(0, __import__("os").path.dirname(__file__))
import fmparity as fp  # noqa: E402

DUMPER = "nn/parity_layers"
rep = fp.Report()


def nchw(a, grad=False):
    return fp.t(fp.nhwc_to_nchw(a), grad)


def groupnorm(n, h, w, c, g, flags, ada):
    d, _ = fp.run_dump(DUMPER, "groupnorm", n, h, w, c, g, flags, ada)
    silu, affine = flags & 1, not flags & 2
    x = nchw(d["x"], True)
    gn = torch.nn.GroupNorm(g, c, eps=1e-5, affine=affine)
    if affine:
        with torch.no_grad():
            gn.weight.copy_(fp.t(d["weight"]))
            gn.bias.copy_(fp.t(d["bias"]))
    z = gn(x)
    if ada:
        scale, shift = fp.t(d["scale"], True), fp.t(d["shift"], True)
        z = z * (1 + scale[:, :, None, None]) + shift[:, :, None, None]
    y = F.silu(z) if silu else z
    y.backward(nchw(d["dy"]))
    pairs = [("y", d["y"], fp.nchw_to_nhwc(y)), ("dx", d["dx"], fp.nchw_to_nhwc(x.grad))]
    if affine:
        pairs += [("dweight", d["dweight"], gn.weight.grad.numpy()), ("dbias", d["dbias"], gn.bias.grad.numpy())]
    if ada:
        pairs += [("dscale", d["dscale"], scale.grad.numpy()), ("dshift", d["dshift"], shift.grad.numpy())]
    name = f"groupnorm[{n},{h},{w},{c}] G={g}" + " silu" * silu + " ada" * ada + " no-affine" * (not affine)
    rep.case(name, pairs)


def silu(n, h, w, c):
    d, _ = fp.run_dump(DUMPER, "silu", n, h, w, c)
    x = nchw(d["x"], True)
    y = F.silu(x)
    y.backward(nchw(d["dy"]))
    rep.case(f"silu[{n},{h},{w},{c}]", [("y", d["y"], fp.nchw_to_nhwc(y)), ("dx", d["dx"], fp.nchw_to_nhwc(x.grad))])


def upsample(n, h, w, c):
    d, _ = fp.run_dump(DUMPER, "upsample", n, h, w, c)
    x = nchw(d["x"], True)
    y = F.interpolate(x, scale_factor=2, mode="nearest")
    y.backward(nchw(d["dy"]))
    rep.case(f"upsample2x[{n},{h},{w},{c}]",
             [("y", d["y"], fp.nchw_to_nhwc(y)), ("dx", d["dx"], fp.nchw_to_nhwc(x.grad))])


def concat(n, h, w, c1, c2):
    d, _ = fp.run_dump(DUMPER, "concat", n, h, w, c1, c2)
    a, b = nchw(d["x"], True), nchw(d["b"], True)
    y = torch.cat((a, b), dim=1)
    y.backward(nchw(d["dy"]))
    rep.case(f"concat[{n},{h},{w},{c1}+{c2}]",
             [("y", d["y"], fp.nchw_to_nhwc(y)), ("da", d["dx"], fp.nchw_to_nhwc(a.grad)),
              ("db", d["db"], fp.nchw_to_nhwc(b.grad))])


def add(n, h, w, c):
    d, _ = fp.run_dump(DUMPER, "add", n, h, w, c)
    a, b = nchw(d["x"], True), nchw(d["b"], True)
    y = a + b
    y.backward(nchw(d["dy"]))
    rep.case(f"add[{n},{h},{w},{c}]",
             [("y", d["y"], fp.nchw_to_nhwc(y)), ("da", d["dx"], fp.nchw_to_nhwc(a.grad)),
              ("db", d["db"], fp.nchw_to_nhwc(b.grad))])


def add_nc(n, h, w, c):
    d, _ = fp.run_dump(DUMPER, "add_nc", n, h, w, c)
    x, v = nchw(d["x"], True), fp.t(d["b"], True)
    y = x + v[:, :, None, None]
    y.backward(nchw(d["dy"]))
    rep.case(f"add_nc[{n},{h},{w},{c}]",
             [("y", d["y"], fp.nchw_to_nhwc(y)), ("dx", d["dx"], fp.nchw_to_nhwc(x.grad)),
              ("dv", d["db"], v.grad.numpy())])


def class_embed(n, k, dim):
    d, _ = fp.run_dump(DUMPER, "class_embed", n, k, dim)
    emb = torch.nn.Embedding(k + 1, dim)
    with torch.no_grad():
        emb.weight.copy_(fp.t(d["weight"]))
    labels = torch.from_numpy(d["labels"]).long()
    y = emb(labels)
    y.backward(fp.t(d["dy"]))
    rep.case(f"class_embed[N={n},K={k}+1,D={dim}]",
             [("y", d["y"], y.detach().numpy()), ("dweight", d["dweight"], emb.weight.grad.numpy())])


def time_embed(n, dim, scale):
    d, _ = fp.run_dump(DUMPER, "time_embed", n, dim, scale)
    # the torch formula, in float64 (fmtrain computes in double and rounds once)
    t = torch.from_numpy(d["x"]).double().requires_grad_(True)
    half = dim // 2
    freqs = torch.exp(-math.log(10000.0) * torch.arange(half, dtype=torch.float64) / half)
    args = t[:, None] * scale * freqs[None, :]
    y = torch.cat([torch.cos(args), torch.sin(args)], dim=1)
    y.backward(torch.from_numpy(d["dy"]).double())
    rep.case(f"time_embed[N={n},D={dim},scale={scale}]",
             [("y", d["y"], y.detach().numpy()), ("dt", d["dx"], t.grad.numpy())])


def mse(n, h, w, c):
    d, _ = fp.run_dump(DUMPER, "mse", n, h, w, c)
    x = nchw(d["x"], True)
    loss = F.mse_loss(x, nchw(d["target"]))
    (loss * float(d["dy"][0])).backward()
    rep.case(f"mse[{n},{h},{w},{c}]",
             [("loss", d["y"], loss.detach().numpy().reshape(1)), ("dpred", d["dx"], fp.nchw_to_nhwc(x.grad))])


CASES = [
    (groupnorm, (3, 5, 7, 32, 1, 0, 0)),
    (groupnorm, (3, 5, 7, 32, 4, 1, 0)),
    (groupnorm, (2, 8, 8, 64, 8, 0, 1)),
    (groupnorm, (3, 3, 5, 64, 32, 1, 1)),
    (groupnorm, (3, 7, 9, 128, 32, 0, 0)),
    (groupnorm, (1, 16, 16, 64, 8, 1, 1)),
    (groupnorm, (2, 4, 4, 96, 32, 2, 1)),
    # batch >= 32: GroupNorm's one-task-per-sample path
    (groupnorm, (32, 4, 4, 64, 8, 1, 1)),
    (groupnorm, (33, 3, 5, 48, 8, 0, 0)),
    (silu, (3, 5, 7, 16)),
    (upsample, (3, 5, 7, 8)),
    (upsample, (2, 4, 4, 3)),
    (concat, (3, 5, 7, 8, 12)),
    (add, (3, 5, 7, 8)),
    (add_nc, (3, 5, 7, 20)),
    (class_embed, (7, 10, 32)),
    (class_embed, (64, 10, 128)),
    (time_embed, (5, 64, 1000)),
    (time_embed, (3, 32, 1)),
    (mse, (3, 5, 7, 4)),
]

for fn, args in CASES:
    rep.run(f"{fn.__name__}{list(args)}", lambda fn=fn, args=args: fn(*args))
rep.exit()
