#!/usr/bin/python3
"""study.py - the simulated scaling study of fmtrain at 2-1,024 ranks (`make scaling`).

    jobs/simulate/study.py [--schedules DIR] [--csv F] [--md F] [--png F] [--smpi-max P]
                           [--measured CSV ...] [--calibration MD] [--doc docs/scaling.md]

For the default U-Net (configs/ldm.yaml), the DiT (configs/dit.yaml) and the 16 M U-Net
(tests/bench's unet_16m), replays the schedules jobs/simulate/dump_schedules.sh recorded
(jobs/simulate/schedules/<model>-b<batch>.json) at P = 2 ... 1,024 ranks on the cluster
platforms (jobs/simulate/platforms), for both engines:
  old  the in-place libnbc binomial MPI_Iallreduce, progressed by the main thread's polls
  new  ring reduce-scatter + allgather on a communication thread, ZeRO-1 shard update
Weak scaling: WEAK_BATCH images per rank (the schedule as measured); strong scaling: a
global batch of STRONG_BATCH split over the ranks (compute affine in the batch, fitted
through the two measured batches, model.scale_batch).

Every point is computed by the alpha-beta model (model.py); points with P <= --smpi-max
on the central platform (100 Gb/s, 2 us, one rank a node) are also simulated with SMPI
(jobs/simulate/sim.sh + skeleton.c, one steady-state step after a first one) and the
table shows the SMPI figure there (source "smpi", with the model's error beside it),
the model's elsewhere (source "model"). The bucket size is chosen per point: the one of
BUCKETS_MB that gives the shortest step by the model. Bands: the extremes over bandwidth
x0.5-2, latency 1-5 us and 1-16 ranks a node (bucket re-chosen at each).

Writes the CSV, a Markdown section (tables, method, assumptions, calibration error) and a
PNG; with --doc, replaces the part of docs/scaling.md between the markers
<!-- simulated-study:begin --> and <!-- simulated-study:end --> with the Markdown.
Prints the weak-scaling efficiency of the default U-Net at 64 ranks on the 100 Gb/s
platform with its band.
"""
import argparse
import csv
import json
import math
import os
import statistics
import subprocess
import sys
import tempfile
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import model as M  # noqa: E402

HERE = os.path.dirname(os.path.abspath(__file__))
MODELS = [("unet", "default U-Net (configs/ldm.yaml)"), ("dit", "DiT (configs/dit.yaml)"),
          ("unet16m", "16 M U-Net (bench unet_16m)")]
PS = [2, 4, 8, 16, 32, 64, 128, 256, 512, 1024]
BUCKETS_MB = [0.25, 1, 2, 4, 8, 16, 32, 64, 1e6]  # 0.25: the dumped buckets; 1e6: one bucket
WEAK_BATCH, STRONG_BATCH = 64, 2048
GBPS, LAT_US, RPN = [100, 200], 2.0, 1
BAND_BW, BAND_LAT, BAND_RPN = [0.5, 1, 2], [1, 2, 5], [1, 2, 4, 8, 16]
# sample grids (configs/ldm.yaml): 3 guidance scales x 10 classes x 8 images, 50 Euler steps,
# one model call for w = 1 and two (conditional and unconditional) for w = 3 and 5, every 500 steps
GRID_IMAGE_CALLS, GRID_EVERY = 10 * 8 * 50 * (1 + 2 + 2), 500
ENGINES = [("old", "binomial", False), ("new", "ring", True)]
SPEEDS, SPEED_PS = [4, 16], [64, 256, 1024]  # faster ranks (model only): compute / S


def net_for(gbps, lat_us, rpn):
    return M.Net(lat_us * 1e-6, gbps / 8 * 1e9, q=rpn)


def grid_of(s):
    """(image model calls, ms per image call, every): the forward of one image at the schedule's batch"""
    return (GRID_IMAGE_CALLS, s["forward"] / s["batch_per_rank"], GRID_EVERY)


def best(s, p, net, engine, zero):
    """the bucket size (MiB) with the shortest step and that step"""
    out = None
    for bm in BUCKETS_MB:
        r = M.step(s, p, net, engine, zero, bm, grid_of(s))
        if out is None or r["step"] < out[1]["step"] - 1e-9:  # the grids do not depend on the buckets
            out = (bm, r)
    return out


def single(s):
    """one rank's training step (no communication, the whole optimiser)"""
    return M.single_rank_ms(s)


def smpi_point(s, p, gbps, bm, engine, zero, tmpdir):
    path = os.path.join(tmpdir, "sched.json")
    M.to_skeleton_json(s, path)
    plat = os.path.join(HERE, "platforms", f"cluster-{gbps}g-{LAT_US:g}us.xml")
    args = [os.path.join(HERE, "sim.sh"), plat, str(p), str(RPN), "--", "--schedule", path, "--engine", engine,
            "--steps", "2", "--bucket-mb", f"{bm:g}"] + (["--zero"] if zero else [])
    t0 = time.time()
    r = subprocess.run(args, capture_output=True, text=True)
    if r.returncode != 0:
        raise SystemExit(f"study.py: {' '.join(args)} failed:\n{r.stderr}")
    out = json.loads(r.stdout.strip().splitlines()[-1])
    out["wall_s"] = time.time() - t0
    return out


def bucket_name(bm):
    return "one" if bm >= 1e5 else ("dumped" if bm == 0.25 else f"{bm:g}")


def run(a):
    rows = []
    tmpdir = tempfile.mkdtemp(prefix="fm-study-")
    smpi_wall = 0.0
    for name, desc in MODELS:
        lo = M.load_schedule(os.path.join(a.schedules, f"{name}-b8.json"))
        hi = M.load_schedule(os.path.join(a.schedules, f"{name}-b64.json"))
        for mode in ("weak", "strong"):
            for p in PS:
                batch = WEAK_BATCH if mode == "weak" else STRONG_BATCH // p
                s = M.scale_batch(lo, hi, batch)
                t1 = single(M.scale_batch(lo, hi, WEAK_BATCH if mode == "weak" else STRONG_BATCH))
                for gbps in GBPS:
                    central = net_for(gbps, LAT_US, RPN)
                    for ename, engine, zero in ENGINES:
                        bm, r = best(s, p, central, engine, zero)
                        eff = lambda t: (t1 / t) if mode == "weak" else (t1 / t / p)
                        lo_e, hi_e = 1e9, -1e9
                        for f in BAND_BW:
                            for lat in BAND_LAT:
                                for q in BAND_RPN:
                                    if q > p:
                                        continue
                                    e = eff(best(s, p, net_for(gbps * f, lat, q), engine, zero)[1]["step"])
                                    lo_e, hi_e = min(lo_e, e), max(hi_e, e)
                        row = {"model": name, "mode": mode, "gbps": gbps, "lat_us": LAT_US, "rpn": RPN, "p": p,
                               "engine": ename, "batch_per_rank": batch, "bucket_mb": bucket_name(bm),
                               "buckets": r["buckets"], "grad_mib": round(4 * sum(s["floats"]) / 1048576, 2),
                               "single_rank_ms": round(t1, 3), "source": "model",
                               "step_ms": r["step"], "compute_ms": r["compute"], "blocked_ms": r["blocked"],
                               "comm_exposed_ms": r["comm_exposed"], "optimiser_ms": r["optimiser"],
                               "rank0_ms": r["rank0"], "comm_alone_ms": r["comm_alone"],
                               "model_step_ms": r["step"], "smpi_vs_model": "", "smpi_wall_s": ""}
                        if p <= a.smpi_max and mode == "weak" and gbps == GBPS[0]:
                            o = smpi_point(s, p, gbps, bm, engine, zero, tmpdir)
                            smpi_wall += o["wall_s"]
                            # the skeleton has no grids: add the model's amortised rank-0 phase
                            st = o["step_ms"]
                            row.update(source="smpi", step_ms=st, blocked_ms=o["blocked_ms"],
                                       comm_exposed_ms=st - r["compute"] - r["optimiser"] - s["rest"],
                                       comm_alone_ms=o["comm_alone_ms"],
                                       smpi_vs_model=round(st / r["step"] - 1, 5),
                                       smpi_wall_s=round(o["wall_s"], 1))
                            print(f"study: smpi {name} p={p} {ename} {bucket_name(bm)} MiB: step "
                                  f"{o['step_ms']:.2f} ms (model {r['step']:.2f}), blocked "
                                  f"{o['blocked_ms']:.3f} (model {r['blocked']:.3f}), {o['wall_s']:.1f} s",
                                  file=sys.stderr)
                        row["efficiency"] = eff(row["step_ms"])
                        row["eff_lo"], row["eff_hi"] = min(lo_e, row["efficiency"]), max(hi_e, row["efficiency"])
                        rows.append(row)
    fast = []
    for name, desc in MODELS:
        lo = M.load_schedule(os.path.join(a.schedules, f"{name}-b8.json"))
        hi = M.load_schedule(os.path.join(a.schedules, f"{name}-b64.json"))
        for mode in ("weak", "strong"):
            for sp in SPEEDS:
                for p in SPEED_PS:
                    s = M.faster(M.scale_batch(lo, hi, WEAK_BATCH if mode == "weak" else STRONG_BATCH // p), sp)
                    t1 = single(M.faster(M.scale_batch(lo, hi, WEAK_BATCH if mode == "weak" else STRONG_BATCH), sp))
                    for ename, engine, zero in ENGINES:
                        bm, r = best(s, p, net_for(GBPS[0], LAT_US, RPN), engine, zero)
                        e = t1 / r["step"] if mode == "weak" else t1 / r["step"] / p
                        fast.append({"model": name, "mode": mode, "speed": sp, "p": p, "engine": ename,
                                     "bucket_mb": bucket_name(bm), "step_ms": r["step"], "efficiency": e,
                                     "comm_share": r["comm_exposed"] / r["step"]})
    return rows, smpi_wall, fast


def write_csv(rows, path):
    cols = list(rows[0].keys())
    with open(path, "w", newline="") as f:
        w = csv.DictWriter(f, fieldnames=cols)
        w.writeheader()
        for r in rows:
            w.writerow({k: (f"{v:.5g}" if isinstance(v, float) else v) for k, v in r.items()})


def pct(x):
    return f"{100 * x:.0f} %"


def measured_points(paths):
    """jobs/report.py CSVs (one row per run; repeats = rows of the same study, layout and bucket):
    median efficiency, min-max spread, contention when a repeat got < 90 % of its cores"""
    groups = {}
    for path in paths or []:
        if not os.path.exists(path):
            continue
        for r in csv.DictReader(open(path)):
            key = (r["study"], int(r["ranks"]), int(r["threads"]), r["bucket_mb"])
            groups.setdefault(key, []).append(r)
    out = []
    for (study, ranks, threads, bucket), rs in sorted(groups.items()):
        e = [float(r["efficiency"]) for r in rs]
        share = [float(r["cpu_share"]) for r in rs if r.get("cpu_share")]
        out.append({"study": study, "ranks": ranks, "threads": threads, "bucket_mb": bucket, "repeats": len(rs),
                    "eff_median": statistics.median(e), "eff_min": min(e), "eff_max": max(e),
                    "contended": bool(share) and min(share) < 0.9})
    return out


def markdown(rows, smpi_wall, meas, calib, wall, fast=()):
    L = []
    key = lambda r: (r["model"], r["mode"], r["gbps"], r["engine"], r["p"])
    by = {key(r): r for r in rows}
    L.append("<!-- simulated-study:begin -->")
    L.append("<!-- written by jobs/simulate/study.py (make scaling); do not edit by hand -->")
    L.append("## Simulated study: 2-1,024 ranks (`make scaling`)\n")
    u = by[("unet", "weak", 100, "new", 64)]
    L.append(f"**Weak-scaling efficiency of the default U-Net at 64 ranks, 100 Gb/s platform (new engine): "
             f"{pct(u['efficiency'])} (band {pct(u['eff_lo'])}-{pct(u['eff_hi'])})**; the old engine "
             f"{pct(by[('unet', 'weak', 100, 'old', 64)]['efficiency'])} (band "
             f"{pct(by[('unet', 'weak', 100, 'old', 64)]['eff_lo'])}-{pct(by[('unet', 'weak', 100, 'old', 64)]['eff_hi'])}).\n")
    L.append(f"Files: [`scaling-sim.csv`](scaling-sim.csv) (every point), [`scaling-sim.png`](scaling-sim.png). "
             f"Regenerated by `make scaling` in {wall:.0f} s on this 2-core machine "
             f"(SMPI runs {smpi_wall:.0f} s of it).\n")
    L.append("![weak and strong scaling efficiency, both engines, with bands](scaling-sim.png)\n")
    L.append("### Method\n")
    L.append(f"- **Schedules**: `jobs/simulate/dump_schedules.sh` ran each model's flow stage on 2 ranks x 1 "
             f"thread of this machine with `--dump-schedule` at 8 and 64 images per rank and 0.25 MiB buckets; the "
             f"files are in `jobs/simulate/schedules/` (re-measure on a quiet machine with that one command, then "
             f"`make scaling`). One step is built from the medians of the recorded steps. **The machine was shared "
             f"while they were measured (load 2-4.5): compute times are inflated**, which flatters the efficiencies "
             f"(communication is a smaller share of a longer step).")
    L.append(f"- **Weak scaling**: {WEAK_BATCH} images per rank at every P; efficiency = one rank's training "
             f"step / the training step at P. **Strong scaling**: a global batch of {STRONG_BATCH} "
             f"({STRONG_BATCH // 2} a rank at 2 ranks, {STRONG_BATCH // 1024} at 1,024); forward, backward and the "
             f"rest of the step piecewise linear in the batch through 0, the two measured batches (8 and 64) and "
             f"proportional above 64; efficiency = one rank's training step at batch {STRONG_BATCH} / (P x the "
             f"training step at P). The training step leaves out the periodic grids (their share is a column of "
             f"its own). The new engine can exceed 100 %: ZeRO-1 divides the optimiser that one rank does whole.")
    L.append("- **Every point is computed by the alpha-beta model** (`jobs/simulate/model.py`, the skeleton's "
             "logic in closed form); points at P <= 64 of the weak study on the 100 Gb/s platform are also "
             "replayed by SMPI (`skeleton.c`, one step after a first), and there the tables give SMPI's figure "
             "(source `smpi`, with SMPI / model − 1 in the CSV). SMPI is not run beyond 64 ranks here: one ring "
             "allreduce at 1,024 ranks takes 985 s of simulation, a step with several buckets hours.")
    L.append(f"- **Bucket size**: per point the size of {', '.join(bucket_name(b) for b in BUCKETS_MB)} MiB "
             f"(`dumped` = the 0.25 MiB buckets as recorded; `one` = one bucket) with the shortest step; "
             f"neighbouring buckets are merged as fmtrain's planner would.")
    L.append(f"- **Platforms**: `platforms/cluster-<G>g-2us.xml` (G = 100, 200 Gb/s), one rank a node; bands: "
             f"the lowest and highest efficiency over bandwidth x{BAND_BW[0]:g}-{BAND_BW[-1]:g}, latency "
             f"{BAND_LAT[0]}-{BAND_LAT[-1]} us and {BAND_RPN[0]}-{BAND_RPN[-1]} ranks a node, the bucket size "
             f"re-chosen at each.")
    L.append("- **Phases**: exposed communication = time blocked after backward + (new) the ZeRO-1 parameter "
             "allgather and gradient-norm sum + the small per-step collectives; optimiser = clip + AdamW + EMA "
             "(1/P of it with ZeRO-1); rank 0 = the periodic sample grids (configs/ldm.yaml: 3 scales x 80 images x "
             "50 steps every 500 steps, at the measured forward time per image) amortised per step: the old engine "
             "drew them on rank 0 while the others waited, the new one splits them over the ranks.\n")
    L.append("### Assumptions\n")
    L.append("- The communication thread has a core of its own; the old engine is polled only at bucket "
             "hand-overs and in the final wait, and a posted transfer completes without further polls (in its "
             "favour). The additions of a reduction are free. Nodes compute as fast as this machine.")
    L.append("- Full-bisection fat-tree, no congestion from other jobs, no OS noise or rank imbalance: a "
             "real cluster will do worse at the largest P.")
    L.append("- The model's old engine approximates the sharing of rank 0's node link by the buckets in flight "
             "(first come, first served) where SMPI shares it fairly; see the model's error in the CSV "
             "(`smpi_vs_model`).\n")
    if calib:
        L.append("### Calibration on this machine's loopback (`sudo jobs/simulate/calibrate.sh`)\n")
        L.append(open(calib).read().strip() + "\n")
    else:
        L.append("### Calibration\n")
        L.append("Not run yet: `sudo jobs/simulate/calibrate.sh` writes the table (measured against simulated "
                 "step and blocked time at 2-4 ranks on the tc-shaped loopback) to docs/scaling-calibration.md, "
                 "which `make scaling` puts here.\n")
    for gbps in GBPS:
        for mode in ("weak", "strong"):
            L.append(f"### {mode.capitalize()} scaling, {gbps} Gb/s, 2 us, one rank a node\n")
            L.append("| model | P | engine | source | bucket MiB | step ms | efficiency (band) | exposed comm | "
                     "optimiser | grids (rank 0 / split) | blocked ms |")
            L.append("|---|---|---|---|---|---|---|---|---|---|---|")
            for name, desc in MODELS:
                for p in [2, 8, 64, 256, 1024]:
                    for e in ("old", "new"):
                        r = by[(name, mode, gbps, e, p)]
                        st = r["step_ms"]
                        L.append(f"| {name} | {p} | {e} | {r['source']} | {r['bucket_mb']} | {st:.1f} | "
                                 f"{pct(r['efficiency'])} ({pct(r['eff_lo'])}-{pct(r['eff_hi'])}) | "
                                 f"{pct(r['comm_exposed_ms'] / st)} | {pct(r['optimiser_ms'] / st)} | "
                                 f"{pct(r['rank0_ms'] / (st + r['rank0_ms']))} | {r['blocked_ms']:.2f} |")
            L.append("")
    L.append("Step, efficiency and the exposed-communication and optimiser shares are of the training step; "
             "the grids' share is of the training step plus the grids amortised per step. All P of 2-1,024 (also 4, 16, 32, 128, 512) are in the CSV.\n")
    if fast:
        L.append("### Faster ranks (model only, 100 Gb/s, 2 us, one rank a node)\n")
        L.append("The schedules were measured with one thread a rank on this machine; a rank of a cluster node "
                 "computes faster (more cores, or a faster CPU), which leaves less compute to hide the "
                 "communication behind. Every computed phase divided by S (the skeleton's `--speed S`):\n")
        L.append("| model | scaling | S | engine | " + " | ".join(f"P = {p}: efficiency, exposed comm, bucket MiB"
                                                           for p in SPEED_PS) + " |")
        L.append("|---|---|---|---|" + "---|" * len(SPEED_PS))
        fk = {(f["model"], f["mode"], f["speed"], f["engine"], f["p"]): f for f in fast}
        for name, _ in MODELS:
            for mode in ("weak", "strong"):
                for sp in SPEEDS:
                    for e in ("old", "new"):
                        cells = [fk[(name, mode, sp, e, p)] for p in SPEED_PS]
                        L.append(f"| {name} | {mode} | {sp} | {e} | " + " | ".join(
                            f"{pct(c['efficiency'])}, {pct(c['comm_share'])}, {c['bucket_mb']}" for c in cells) + " |")
        L.append("")
    sm = [r for r in rows if r["source"] == "smpi"]
    if sm:
        errs = [abs(float(r["smpi_vs_model"])) for r in sm]
        L.append(f"**SMPI against the model** ({len(sm)} points, P = 2-64): step time within "
                 f"{100 * max(errs):.1f} % (median {100 * statistics.median(errs):.2f} %).\n")
    if meas:
        L.append("### Measured points (jobs/ studies, configs/scaling.yaml)\n")
        L.append("Drawn on the default U-Net's panels (black). Points with fewer than 3 repeats are marked, "
                 "not trusted; contention = a repeat got under 90 % of its cores' CPU time.\n")
        L.append("| study | ranks x threads | bucket MiB | repeats | efficiency median (min-max) | contention |")
        L.append("|---|---|---|---|---|---|")
        for m in meas:
            L.append(f"| {m['study']} | {m['ranks']} x {m['threads']} | {m['bucket_mb']} | {m['repeats']} | "
                     f"{pct(m['eff_median'])} ({pct(m['eff_min'])}-{pct(m['eff_max'])}) | "
                     f"{'yes' if m['contended'] else 'no'}{'' if m['repeats'] >= 3 else ' (too few repeats)'} |")
        L.append("")
    L.append("<!-- simulated-study:end -->")
    return "\n".join(L) + "\n"


def plot(rows, meas, path):
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    fig, axes = plt.subplots(2, 3, figsize=(15, 8.5), sharex=True)
    labelled = False
    for j, (name, desc) in enumerate(MODELS):
        for i, mode in enumerate(("weak", "strong")):
            ax = axes[i][j]
            for e, color in (("old", "tab:red"), ("new", "tab:blue")):
                for gbps, ls in ((100, "-"), (200, "--")):
                    rs = sorted((r for r in rows if r["model"] == name and r["mode"] == mode and r["engine"] == e
                                 and r["gbps"] == gbps), key=lambda r: r["p"])
                    ps = [r["p"] for r in rs]
                    ax.plot(ps, [100 * r["efficiency"] for r in rs], ls, color=color, label=f"{e} engine, {gbps} Gb/s")
                    if gbps == 100:
                        ax.fill_between(ps, [100 * r["eff_lo"] for r in rs], [100 * r["eff_hi"] for r in rs],
                                        color=color, alpha=0.15)
                        sm = [r for r in rs if r["source"] == "smpi"]
                        ax.plot([r["p"] for r in sm], [100 * r["efficiency"] for r in sm], "o", color=color, ms=4)
            for m in meas if name == "unet" else []:  # the jobs/ studies train configs/scaling.yaml
                if m["study"] != mode:
                    continue
                c = m["ranks"] * m["threads"]
                ax.errorbar([c], [100 * m["eff_median"]], yerr=[[100 * (m["eff_median"] - m["eff_min"])],
                            [100 * (m["eff_max"] - m["eff_median"])]], fmt="x" if m["repeats"] < 3 else "s",
                            color="k", mfc="none" if m["contended"] else "k",
                            label="measured, configs/scaling.yaml" if not labelled else None)
                labelled = True
            ax.set_xscale("log", base=2)
            top = max([105] + [100 * r["eff_hi"] + 5 for r in rows if r["model"] == name and r["mode"] == mode])
            ax.set_ylim(0, min(top, 250))
            ax.grid(alpha=0.3)
            ax.set_title(f"{desc}: {mode}", fontsize=10)
            if j == 0:
                ax.set_ylabel("efficiency %")
            if i == 1:
                ax.set_xlabel("ranks")
    axes[0][0].legend(fontsize=8, loc="lower left")
    fig.suptitle("fmtrain, simulated (lines: model, dots: SMPI; bands at 100 Gb/s: bandwidth x0.5-2, latency 1-5 us, "
                 "1-16 ranks a node)\nblack: measured jobs/ points of configs/scaling.yaml, median and min-max, "
                 "hollow = contended, x = fewer than 3 repeats", fontsize=10)
    fig.tight_layout()
    fig.savefig(path, dpi=90)


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--schedules", default=os.path.join(HERE, "schedules"))
    ap.add_argument("--csv", default="docs/scaling-sim.csv")
    ap.add_argument("--md", help="write the Markdown section here (default: only into --doc)")
    ap.add_argument("--png", default="docs/scaling-sim.png")
    ap.add_argument("--doc", default="docs/scaling.md", help="replace its simulated-study section ('' = none)")
    ap.add_argument("--smpi-max", type=int, default=64, help="largest P replayed with SMPI (0 = none)")
    ap.add_argument("--measured", nargs="*", default=["docs/scaling-measured.csv"],
                    help="jobs/report.py CSVs of measured repeats to draw (missing files are skipped)")
    ap.add_argument("--calibration", default="docs/scaling-calibration.md",
                    help="the calibration table calibrate.sh writes (default docs/scaling-calibration.md; "
                         "'' or a missing default = none)")
    a = ap.parse_args()
    t0 = time.time()
    for name, _ in MODELS:
        for b in (8, 64):
            f = os.path.join(a.schedules, f"{name}-b{b}.json")
            if not os.path.exists(f):
                raise SystemExit(f"study.py: {f}: no such schedule; jobs/simulate/dump_schedules.sh writes it")
    if a.calibration == "docs/scaling-calibration.md" and not os.path.exists(a.calibration):
        a.calibration = ""
    if a.calibration and not os.path.exists(a.calibration):
        raise SystemExit(f"study.py: {a.calibration}: no such file (sudo jobs/simulate/calibrate.sh writes it)")
    rows, smpi_wall, fast = run(a)
    meas = measured_points(a.measured)
    write_csv(rows, a.csv)
    plot(rows, meas, a.png)
    md = markdown(rows, smpi_wall, meas, a.calibration, time.time() - t0, fast)
    if a.md:
        open(a.md, "w").write(md)
    if a.doc:
        text = open(a.doc).read()
        b, e = "<!-- simulated-study:begin -->", "<!-- simulated-study:end -->\n"
        if b in text and e in text:
            text = text[:text.index(b)] + md + text[text.index(e) + len(e):]
        else:
            text = text.rstrip("\n") + "\n\n" + md
        open(a.doc, "w").write(text)
    u = next(r for r in rows if r["model"] == "unet" and r["mode"] == "weak" and r["gbps"] == 100
             and r["engine"] == "new" and r["p"] == 64)
    o = next(r for r in rows if r["model"] == "unet" and r["mode"] == "weak" and r["gbps"] == 100
             and r["engine"] == "old" and r["p"] == 64)
    print(f"weak-scaling efficiency, default U-Net, 64 ranks, 100 Gb/s: new engine {pct(u['efficiency'])} "
          f"(band {pct(u['eff_lo'])}-{pct(u['eff_hi'])}), old engine {pct(o['efficiency'])} "
          f"(band {pct(o['eff_lo'])}-{pct(o['eff_hi'])}) [{u['source']}]")
    print(f"study.py: {len(rows)} points in {a.csv}, plot {a.png}, {time.time() - t0:.0f} s", file=sys.stderr)


if __name__ == "__main__":
    main()
