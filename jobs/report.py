#!/usr/bin/python3
"""report.py - tables and a plot from scaling-study runs.

    /usr/bin/python3 jobs/report.py STUDY_DIR... [--csv FILE] [--png FILE] [--md FILE] [--warmup N]

Each STUDY_DIR holds the points of one study (jobs/strong.sbatch or
jobs/weak.sbatch): rRtT/ run directories (config.yaml, metrics.jsonl) and
rRtT.json files describing them (study, ranks, threads). A run directory found
without its .json is still read: ranks from the final checkpoint's world_size
(or the rRtT name), threads from run.threads in config.yaml.

Per point, over the flow steps after the first N (warm-up, default 2): the
median step time, and the images/s it gives (global batch / step time), and
the best (shortest) step time, the least disturbed by other load on the node; the
medians of compute_ms, allreduce_ms (time blocked waiting for the gradient
reduction after backward), comm_ms (the same reduction measured alone, blocking)
and hidden_frac (share of comm_ms hidden behind backward) when metrics.jsonl
has them (blank otherwise). speed-up = images/s over images/s of the study's
point with the fewest cores; efficiency = speed-up / (cores / base cores). For a
weak study (fixed batch per core) that efficiency is base step time / step time.
speedup_best and efficiency_best are the same from the best step times.
images_per_cpu_s = images/s / (cpu_share x cores), and efficiency_cpu is its
ratio to the base point's: a rough estimate of the efficiency the point would
have on cores of its own (cpu_share counts start-up, and spin-waiting counts as
CPU time).

Also copied from the .json when there: the node's 1-minute load average before
and after the point, and cpu_share = CPU seconds the ranks got / (wall seconds x
cores): 1 means the point had its cores to itself; on a shared node it says how
far to trust the timing.

Writes the CSV (--csv), a PNG with speed-up, efficiency and allreduce share
against cores, and the CPU share of each point, (--png), and a Markdown table (--md, or stdout).
"""
import argparse
import csv
import glob
import json
import os
import re
import statistics
import struct
import sys

FIELDS = ["study", "ranks", "threads", "cores", "bucket_mb", "global_batch", "steps_measured", "images_per_s", "step_ms",
          "best_step_ms", "best_images_per_s", "speedup_best", "efficiency_best", "compute_ms", "allreduce_ms", "comm_ms", "hidden_frac", "allreduce_share", "speedup", "efficiency",
          "load_start", "load_end", "cpu_share", "images_per_cpu_s", "efficiency_cpu"]


def config_value(text, section, key):
    """The scalar section.key of a resolved config.yaml (two-level YAML), or None."""
    m = re.search(r"^%s:\s*\n((?:[ \t]+.*\n?)*)" % re.escape(section), text, re.M)
    if not m:
        return None
    k = re.search(r"^[ \t]+%s:[ \t]*([^#\n]*)" % re.escape(key), m.group(1), re.M)
    return k.group(1).strip().strip('"') if k else None


def world_size_from_ckpt(run):
    """world_size from the metadata of the newest flow checkpoint, or None."""
    cks = sorted(glob.glob(os.path.join(run, "ckpt", "flow-*.safetensors")))
    if not cks:
        return None
    try:
        with open(cks[-1], "rb") as f:
            n = struct.unpack("<Q", f.read(8))[0]
            meta = json.loads(f.read(n)).get("__metadata__", {})
        return int(meta["world_size"])
    except (OSError, ValueError, KeyError, struct.error):
        return None


def median_of(lines, key):
    vals = [float(l[key]) for l in lines if key in l and l[key] is not None]
    return statistics.median(vals) if vals else None


def read_point(run, desc, warmup):
    """One row (dict) for run directory `run`, or None with a warning."""
    cfg_path, met_path = os.path.join(run, "config.yaml"), os.path.join(run, "metrics.jsonl")
    if not (os.path.exists(cfg_path) and os.path.exists(met_path)):
        print(f"report.py: skipping {run}: no config.yaml or metrics.jsonl (did the point run?)", file=sys.stderr)
        return None
    if desc.get("exit") not in (None, 0):
        print(f"report.py: skipping {run}: the point exited with {desc['exit']}", file=sys.stderr)
        return None
    cfg = open(cfg_path).read()
    name = re.match(r"r(\d+)t(\d+)(?:b\d+)?$", os.path.basename(run.rstrip("/")))
    ranks = desc.get("ranks") or world_size_from_ckpt(run) or (int(name.group(1)) if name else None)
    threads = desc.get("threads") or int(config_value(cfg, "run", "threads") or 0) or \
        (int(name.group(2)) if name else None)
    if not ranks or not threads:
        print(f"report.py: skipping {run}: cannot tell ranks and threads", file=sys.stderr)
        return None
    batch = int(config_value(cfg, "flow", "batch_size") or desc.get("global_batch") or 0)
    bucket = config_value(cfg, "flow", "bucket_mb")
    lines = []
    for text in open(met_path):
        try:
            l = json.loads(text)
        except ValueError:
            continue
        if l.get("stage") == "flow":
            lines.append(l)
    measured = [l for l in lines if l.get("step", 0) > warmup] or lines
    if not measured:
        print(f"report.py: skipping {run}: no flow lines in metrics.jsonl", file=sys.stderr)
        return None
    step_ms = median_of(measured, "step_ms")
    best = min((float(l["step_ms"]) for l in measured if "step_ms" in l), default=None)
    row = {"study": desc.get("study") or os.path.basename(os.path.dirname(os.path.abspath(run))).split("-")[0],
           "ranks": ranks, "threads": threads, "cores": ranks * threads, "global_batch": batch,
           "bucket_mb": float(bucket) if bucket else None,
           "steps_measured": len(measured), "step_ms": step_ms,
           "images_per_s": batch / step_ms * 1e3 if step_ms else None,
           "best_step_ms": best, "best_images_per_s": batch / best * 1e3 if best else None}
    for k in ("compute_ms", "allreduce_ms", "comm_ms", "hidden_frac"):
        row[k] = median_of(measured, k)
    for k in ("load_start", "load_end", "cpu_share"):
        row[k] = desc.get(k)
    share = row["cpu_share"]
    row["images_per_cpu_s"] = row["images_per_s"] / (share * row["cores"]) if share and row["images_per_s"] else None
    row["allreduce_share"] = row["allreduce_ms"] / step_ms if row["allreduce_ms"] is not None and step_ms else None
    return row


def collect(study_dirs, warmup):
    rows = []
    for d in study_dirs:
        runs = {}
        for j in glob.glob(os.path.join(d, "*.json")):
            try:
                desc = json.load(open(j))
            except (OSError, ValueError):
                desc = {}
            runs[j[:-len(".json")]] = desc
        for m in glob.glob(os.path.join(d, "*", "metrics.jsonl")):
            runs.setdefault(os.path.dirname(m), {})
        for run, desc in sorted(runs.items()):
            row = read_point(run, desc, warmup)
            if row:
                rows.append(row)
    # speed-up and efficiency against the point with the fewest cores of each study
    for study in sorted({r["study"] for r in rows}):
        pts = [r for r in rows if r["study"] == study and r["images_per_s"]]
        if not pts:
            continue
        base = min(pts, key=lambda r: (r["cores"], r["ranks"], -(r["bucket_mb"] or 0)))
        for r in pts:
            r["speedup"] = r["images_per_s"] / base["images_per_s"]
            r["efficiency"] = r["speedup"] / (r["cores"] / base["cores"])
            if r["images_per_cpu_s"] and base["images_per_cpu_s"]:
                r["efficiency_cpu"] = r["images_per_cpu_s"] / base["images_per_cpu_s"]
            if r["best_images_per_s"] and base["best_images_per_s"]:
                r["speedup_best"] = r["best_images_per_s"] / base["best_images_per_s"]
                r["efficiency_best"] = r["speedup_best"] / (r["cores"] / base["cores"])
    rows.sort(key=lambda r: (r["study"] != "strong", r["study"], r["cores"], -r["threads"], -(r["bucket_mb"] or 0)))
    return rows


def fmt(v, nd=3):
    if v is None:
        return ""
    if isinstance(v, float):
        return f"{v:.{nd}g}" if abs(v) < 1e4 else f"{v:.0f}"
    return str(v)


def write_csv(rows, path):
    with open(path, "w", newline="") as f:
        w = csv.DictWriter(f, fieldnames=FIELDS)
        w.writeheader()
        for r in rows:
            w.writerow({k: fmt(r.get(k), 6) for k in FIELDS})


def load(r):
    """The node's 1-minute load average before -> after the point, if known."""
    a, b = r.get("load_start"), r.get("load_end")
    return "" if a is None else f"{a:.1f}" if b is None else f"{a:.1f} -> {b:.1f}"


def markdown(rows):
    head = ["study", "ranks x threads", "bucket MiB", "global batch", "images/s", "step ms", "compute ms", "allreduce ms",
            "comm ms", "hidden", "allreduce share", "speed-up", "efficiency", "best step ms", "speed-up (best)",
            "efficiency (best)", "node load", "CPU share", "efficiency per CPU-s"]
    out = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for r in rows:
        pct = lambda v: "" if v is None else f"{100 * v:.0f}%"
        cells = [r["study"], f"{r['ranks']} x {r['threads']}", fmt(r["bucket_mb"]), str(r["global_batch"]), fmt(r["images_per_s"]),
                 fmt(r["step_ms"], 4), fmt(r["compute_ms"], 4), fmt(r["allreduce_ms"]), fmt(r["comm_ms"]),
                 pct(r["hidden_frac"]), pct(r["allreduce_share"]), fmt(r.get("speedup")),
                 pct(r.get("efficiency")), fmt(r["best_step_ms"], 4), fmt(r.get("speedup_best")),
                 pct(r.get("efficiency_best")), load(r), pct(r.get("cpu_share")), pct(r.get("efficiency_cpu"))]
        out.append("| " + " | ".join(cells) + " |")
    return "\n".join(out) + "\n"


def plot(rows, path):
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    shares = any(r.get("cpu_share") is not None for r in rows)
    buckets = len({r["bucket_mb"] for r in rows}) > 1

    def name(r, sep=" "):
        b = f"{sep}{r['bucket_mb']:g} MiB" if buckets and r["bucket_mb"] is not None else ""
        return f"{r['ranks']}x{r['threads']}{b}"

    wide = max(0, len(rows) - 6) * 0.6
    fig, ax = plt.subplots(1, 4 if shares else 3, figsize=((17 if shares else 13) + 2 * wide, 4.4))
    studies = sorted({r["study"] for r in rows}, key=lambda s: (s != "strong", s))
    markers = {"strong": "o", "weak": "s"}
    maxc = max(r["cores"] for r in rows)
    for s in studies:
        pts = [r for r in rows if r["study"] == s and r.get("speedup") is not None]
        for r in pts:
            lab = name(r)
            ax[0].scatter(r["cores"], r["speedup"], marker=markers.get(s, "^"), color="C0" if s == "strong" else "C1")
            ax[0].annotate(lab, (r["cores"], r["speedup"]), textcoords="offset points", xytext=(5, 3), fontsize=8)
            ax[1].scatter(r["cores"], r["efficiency"], marker=markers.get(s, "^"),
                          color="C0" if s == "strong" else "C1")
            ax[1].annotate(lab, (r["cores"], r["efficiency"]), textcoords="offset points", xytext=(5, 3), fontsize=8)
        ax[0].scatter([], [], marker=markers.get(s, "^"), color="C0" if s == "strong" else "C1", label=s)
    ax[0].plot([1, maxc], [1, maxc], "k--", lw=0.8, label="ideal (strong)")
    ax[0].set(xlabel="cores (ranks x threads)", ylabel="speed-up (images/s vs 1 core)", title="Speed-up")
    ax[0].legend(fontsize=8)
    ax[1].axhline(1, color="k", ls="--", lw=0.8)
    ax[1].set(xlabel="cores (ranks x threads)", ylabel="efficiency", title="Parallel efficiency",
              ylim=(0, max(1.2, max((r.get("efficiency") or 0) for r in rows) * 1.1)))
    for a in ax[:2]:
        a.set_xticks(sorted({r["cores"] for r in rows}))
    labels = [f"{r['study']}\n{name(r, chr(10))}" for r in rows]
    comp = [(r["compute_ms"] or 0) for r in rows]
    wait = [(r["allreduce_ms"] or 0) for r in rows]
    other = [max(0.0, (r["step_ms"] or 0) - c - w) for r, c, w in zip(rows, comp, wait)]
    x = range(len(rows))
    ax[2].bar(x, comp, label="compute (fwd+bwd)")
    ax[2].bar(x, wait, bottom=comp, label="blocked on allreduce")
    ax[2].bar(x, other, bottom=[c + w for c, w in zip(comp, wait)], label="optimiser, rest")
    for i, r in enumerate(rows):
        if r["allreduce_share"] is not None:
            ax[2].annotate(f"{100 * r['allreduce_share']:.0f}%", (i, r["step_ms"]), ha="center",
                           textcoords="offset points", xytext=(0, 2), fontsize=8)
    ax[2].set_xticks(list(x))
    ax[2].set_xticklabels(labels, fontsize=8)
    ax[2].set(ylabel="ms per step (median)", title="Step time; % = allreduce share")
    ax[2].legend(fontsize=8)
    if shares:
        ax[3].bar(x, [100 * (r.get("cpu_share") or 0) for r in rows], color="C7")
        ax[3].axhline(100, color="k", ls="--", lw=0.8)
        ax[3].set_xticks(list(x))
        ax[3].set_xticklabels(labels, fontsize=8)
        ax[3].set(ylabel="% of the point's cores", ylim=(0, 110),
                  title="CPU share obtained (100% = no contention)")
    fig.tight_layout()
    fig.savefig(path, dpi=110)


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("study_dirs", nargs="+", help="study directories (runs/scaling/<study>-<job id>)")
    ap.add_argument("--csv", help="write the table as CSV")
    ap.add_argument("--png", help="write the plot")
    ap.add_argument("--md", help="write the table as Markdown (default: print it)")
    ap.add_argument("--warmup", type=int, default=2, help="flow steps left out of the medians (default 2)")
    a = ap.parse_args()
    rows = collect(a.study_dirs, a.warmup)
    if not rows:
        print("report.py: no runs found in " + " ".join(a.study_dirs), file=sys.stderr)
        return 1
    if a.csv:
        write_csv(rows, a.csv)
    if a.png:
        plot(rows, a.png)
    md = markdown(rows)
    if a.md:
        open(a.md, "w").write(md)
    else:
        sys.stdout.write(md)
    return 0


if __name__ == "__main__":
    sys.exit(main())
