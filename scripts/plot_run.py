#!/usr/bin/python3
"""plot_run.py - one PNG report of an fmtrain run directory (`fmtrain plot RUN`).

usage: /usr/bin/python3 scripts/plot_run.py RUN_DIR [-o FILE.png]   (default RUN_DIR/report.png)

Reads RUN_DIR/metrics.jsonl, eval.json and samples/*.png (whatever exists) and
draws, in one figure:
  - the loss of each trained stage against its step: every logged step
    (faint) and a moving average; a resumed run repeats steps, the last line of
    each (stage, step) wins, so resumes are stitched;
  - the learning rate of each stage;
  - images/s of each stage and the split of a step into compute (forward +
    backward), allreduce (blocked on gradients) and the rest (clipping,
    optimiser, EMA, logging), medians over the logged steps;
  - MFU (when run.peak_gflops was set) against the step;
  - classifier accuracy and Frechet distance against the guidance scale w
    (eval.json);
  - the final sample grid of the largest w, labelled with class names, w and
    the flow step, and a montage of the periodic grids (samples/flow-*-w*.png)
    over training.
Needs Debian's python3-matplotlib (python3-numpy, python3-pil come with it).
Exit status: 0 written, 2 bad usage or no such run directory, 3 nothing to
plot (no metrics lines), 4 cannot write the output."""
import json
import math
import os
import re
import sys

CLASSES = ["T-shirt/top", "Trouser", "Pullover", "Dress", "Coat", "Sandal", "Shirt", "Sneaker", "Bag", "Ankle boot"]
STAGES = ["vae", "flow", "classifier"]
CELL, PAD = 64, 2  # grid geometry of fmtrain's PNG grids: 32 px x 2, 2 px lines


def die(code, msg):
    print(f"plot_run.py: {msg}", file=sys.stderr)
    sys.exit(code)


def load_metrics(path):
    """{stage: [line, ...] sorted by step, last line per step}, [eval lines]."""
    by = {}
    evals = []
    with open(path) as f:
        for n, text in enumerate(f, 1):
            text = text.strip()
            if not text:
                continue
            try:
                j = json.loads(text)
            except ValueError:
                print(f"plot_run.py: {path}:{n}: not JSON (a line cut by a crash?): skipped", file=sys.stderr)
                continue
            if j.get("stage") == "eval":
                evals.append(j)
            elif "loss" in j and "step" in j:
                by.setdefault(j["stage"], {})[j["step"]] = j
    return {s: [d[k] for k in sorted(d)] for s, d in by.items()}, evals


def num(v):
    return float("nan") if v is None else float(v)


def smooth(y, k):
    """Centred moving average over k points (shorter at the ends)."""
    out = []
    for i in range(len(y)):
        w = [v for v in y[max(0, i - k // 2):i + k // 2 + 1] if not math.isnan(v)]
        out.append(sum(w) / len(w) if w else float("nan"))
    return out


def median(v):
    v = sorted(x for x in v if not math.isnan(x))
    return v[len(v) // 2] if v else float("nan")


def grids(run):
    """(final grids {w: (step, path)}, periodic grids {w: [(step, path)]})."""
    final, periodic = {}, {}
    d = os.path.join(run, "samples")
    for name in sorted(os.listdir(d)) if os.path.isdir(d) else []:
        m = re.fullmatch(r"(flow|sample)-(\d+)-w([0-9.eE+-]+)\.png", name)
        if not m:
            continue
        step, w, path = int(m.group(2)), float(m.group(3)), os.path.join(d, name)
        if m.group(1) == "sample":
            if w not in final or final[w][0] < step:
                final[w] = (step, path)
        else:
            periodic.setdefault(w, []).append((step, path))
    return final, {w: sorted(v) for w, v in periodic.items()}


def main(argv):
    args = [a for a in argv[1:]]
    out = None
    if "-o" in args:
        i = args.index("-o")
        if i + 1 >= len(args):
            die(2, "-o needs a file name")
        out = args[i + 1]
        del args[i:i + 2]
    if len(args) != 1 or args[0].startswith("-"):
        die(2, "usage: plot_run.py RUN_DIR [-o FILE.png]")
    run = args[0]
    if not os.path.isdir(run):
        die(2, f"{run}: no such run directory")
    met = os.path.join(run, "metrics.jsonl")
    if not os.path.isfile(met):
        die(3, f"{met}: missing: is {run} an fmtrain run directory (has a stage run yet)?")
    stages, evals = load_metrics(met)
    if not stages:
        die(3, f"{met}: no metrics lines: nothing to plot yet")
    out = out or os.path.join(run, "report.png")
    try:
        import matplotlib
        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
        import numpy as np
    except ImportError as err:
        die(2, f"{err}: install Debian's python3-matplotlib and run with /usr/bin/python3")

    order = [s for s in STAGES if s in stages] + sorted(s for s in stages if s not in STAGES)
    ev = None
    ev_path = os.path.join(run, "eval.json")
    if os.path.isfile(ev_path):
        try:
            ev = json.load(open(ev_path))
        except ValueError:
            print(f"plot_run.py: {ev_path}: not JSON: skipped", file=sys.stderr)
    final, periodic = grids(run)
    montage_w = max(periodic) if periodic else None
    montage = periodic.get(montage_w, []) if periodic else []
    if len(montage) > 6:  # six, evenly over training, the last included
        montage = [montage[round(i * (len(montage) - 1) / 5)] for i in range(6)]

    fig = plt.figure(figsize=(16, 17), layout="constrained")
    gs = fig.add_gridspec(3, 4, height_ratios=[1, 1, 2.4])
    title = os.path.basename(os.path.abspath(run))
    ws = {l.get("world_size") for s in order for l in stages[s] if l.get("world_size")}
    first = min((l for s in order for l in stages[s] if "time" in l), key=lambda l: l["time"], default=None)
    last = max((l for s in order for l in stages[s] if "time" in l), key=lambda l: l["time"], default=None)
    sub = []
    if ws:
        sub.append(f"{'/'.join(str(int(w)) for w in sorted(ws))} rank(s)")
    if first and last:
        sub.append(f"{first['time'][:19]}Z .. {last['time'][:19]}Z")
    fig.suptitle(f"fmtrain run {title}" + ("   (" + ", ".join(sub) + ")" if sub else ""), fontsize=14)

    # row 1: loss per stage (up to 3), learning rate
    for k, s in enumerate(order[:3]):
        ax = fig.add_subplot(gs[0, k])
        x = [l["step"] for l in stages[s]]
        y = [num(l["loss"]) for l in stages[s]]
        ax.plot(x, y, color="C%d" % k, alpha=0.3, lw=1, label="loss of the logged step")
        if all("loss_mean" in l for l in stages[s]):  # the mean over every step since the previous line
            ax.plot(x, [num(l["loss_mean"]) for l in stages[s]], color="C%d" % k, lw=2,
                    label="mean since the previous line")
        else:
            n = max(1, min(9, len(y) // 5))
            ax.plot(x, smooth(y, n), color="C%d" % k, lw=2, label=f"moving mean of {n} lines")
        if all(v > 0 for v in y if not math.isnan(v)):
            ax.set_yscale("log")
        ax.set_title(f"{s} loss")
        ax.set_xlabel("step")
        ax.legend(fontsize=7)
        ax.grid(alpha=0.3)
    ax = fig.add_subplot(gs[0, 3])
    for k, s in enumerate(order):
        ax.plot([l["step"] for l in stages[s]], [num(l.get("lr")) for l in stages[s]], color="C%d" % k, label=s)
    ax.set_title("learning rate")
    ax.set_xlabel("step")
    ax.legend(fontsize=8)
    ax.grid(alpha=0.3)

    # row 2: images/s, step split, MFU, accuracy and FD against w
    ax = fig.add_subplot(gs[1, 0])
    for k, s in enumerate(order):
        ax.plot([l["step"] for l in stages[s]], [num(l.get("images_per_s")) for l in stages[s]], color="C%d" % k,
                label=s)
    ax.set_title("images/s (since the stage's start)")
    ax.set_xlabel("step")
    ax.legend(fontsize=8)
    ax.grid(alpha=0.3)

    ax = fig.add_subplot(gs[1, 1])
    comp = [median([num(l.get("compute_ms")) for l in stages[s]]) for s in order]
    red = [median([num(l.get("allreduce_ms")) for l in stages[s]]) for s in order]
    tot = [median([num(l.get("step_ms")) for l in stages[s]]) for s in order]
    rest = [max(0.0, t - c - (0 if math.isnan(r) else r)) for t, c, r in zip(tot, comp, red)]
    red = [0 if math.isnan(r) else r for r in red]
    xs = np.arange(len(order))
    ax.bar(xs, comp, label="compute (fwd+bwd)", color="C0")
    ax.bar(xs, red, bottom=comp, label="allreduce (blocked)", color="C3")
    ax.bar(xs, rest, bottom=[c + r for c, r in zip(comp, red)], label="optimiser, clip, EMA, log", color="C2")
    for i, t in enumerate(tot):
        if not math.isnan(t):
            ax.annotate(f"{t:.0f} ms", (i, t), ha="center", va="bottom", fontsize=8)
    ax.set_xticks(xs, order)
    ax.set_ylabel("ms per step (median)")
    ax.set_title("where a step's time goes")
    ax.legend(fontsize=7)

    ax = fig.add_subplot(gs[1, 2])
    any_mfu = False
    for k, s in enumerate(order):
        m = [num(l.get("mfu")) * 100 for l in stages[s]]
        if any(not math.isnan(v) for v in m):
            any_mfu = True
            ax.plot([l["step"] for l in stages[s]], m, color="C%d" % k, label=s)
    if any_mfu:
        ax.set_ylabel("% of run.peak_gflops")
        ax.legend(fontsize=8)
        ax.grid(alpha=0.3)
    else:
        ax.text(0.5, 0.5, "no MFU: set run.peak_gflops\n(make bench prints peak_gflops)", ha="center", va="center",
                transform=ax.transAxes)
    ax.set_title("MFU")
    ax.set_xlabel("step")

    ax = fig.add_subplot(gs[1, 3])
    by_cfg = (ev or {}).get("by_cfg") or [{"cfg": l["cfg"], "accuracy": l["accuracy"], "fd": l["fd"]} for l in evals]
    if by_cfg:
        w = [b["cfg"] for b in by_cfg]
        ax.plot(w, [100 * b["accuracy"] for b in by_cfg], "o-", color="C0", label="class accuracy")
        ax.set_xlabel("guidance scale w")
        ax.set_ylabel("classifier accuracy of samples, %", color="C0")
        if ev and "classifier_test_accuracy" in ev:
            ax.axhline(100 * ev["classifier_test_accuracy"], color="C0", ls=":", lw=1, label="on real test images")
        ax2 = ax.twinx()
        ax2.plot(w, [b["fd"] for b in by_cfg], "s--", color="C1", label="Frechet distance")
        if ev and "fd_floor" in ev:
            ax2.axhline(ev["fd_floor"], color="C1", ls=":", lw=1)
        ax2.set_ylabel("Frechet distance (dotted: real floor)", color="C1")
        ax.legend(fontsize=7, loc="center left")
        ax.set_title("eval against w" + (f" (flow step {ev['flow_step']})" if ev and "flow_step" in ev else ""))
    else:
        ax.text(0.5, 0.5, "no eval.json yet", ha="center", va="center", transform=ax.transAxes)
        ax.set_title("eval against w")

    # row 3: the final grid, labelled; the periodic grids over training
    ax = fig.add_subplot(gs[2, :2])
    if final:
        gw = max(final)
        step, path = final[gw]
        img = plt.imread(path)
        ax.imshow(img, cmap="gray", vmin=0, vmax=1, interpolation="nearest")
        nrows = (img.shape[0] - PAD) // (CELL + PAD)
        ax.set_yticks([PAD + r * (CELL + PAD) + CELL / 2 for r in range(nrows)],
                      CLASSES[:nrows] if nrows <= len(CLASSES) else [str(r) for r in range(nrows)])
        ax.set_xticks([])
        ax.set_title(f"final samples: w = {gw:g}, flow step {step} ({os.path.basename(path)})")
    else:
        ax.text(0.5, 0.5, "no final grid (samples/sample-*.png) yet", ha="center", va="center", transform=ax.transAxes)
        ax.axis("off")

    if montage:
        ncol = min(len(montage), 3)
        sub = gs[2, 2:].subgridspec((len(montage) + ncol - 1) // ncol, ncol)
        for i, (step, path) in enumerate(montage):
            ax = fig.add_subplot(sub[i // ncol, i % ncol])
            ax.imshow(plt.imread(path), cmap="gray", vmin=0, vmax=1, interpolation="nearest")
            ax.set_xticks([])
            ax.set_yticks([])
            ax.set_title(f"w = {montage_w:g}, step {step}", fontsize=9)
    else:
        ax = fig.add_subplot(gs[2, 2:])
        ax.text(0.5, 0.5, "no periodic grids (flow.sample_every)", ha="center", va="center", transform=ax.transAxes)
        ax.axis("off")
    try:
        fig.savefig(out + ".tmp.png", dpi=80)
        os.replace(out + ".tmp.png", out)
    except OSError as err:
        die(4, f"{out}: cannot write: {err}")
    print(f"plot_run.py: wrote {out}", file=sys.stderr)


if __name__ == "__main__":
    main(sys.argv)
