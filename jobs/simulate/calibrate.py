#!/usr/bin/python3
"""calibrate.py - the two halves of jobs/simulate/calibrate.sh that are not shell.

    calibrate.py fit PINGPONG.txt PLATFORM.xml RATE
        fit one-way time = alpha + bytes / B to jobs/simulate/pingpong.c's output (alpha: the
        8-byte time; B: least squares over the messages of 1 MiB and up, which the tc token
        bucket's 256 KiB burst cannot carry) and write a SimGrid platform of 8 hosts whose
        routes all cross one SHARED link (the shaped loopback: one queue for every flow and
        both directions); a host's own actors talk over 0.25 us / 10 GB/s (shared memory,
        platforms/gen.py).
    calibrate.py fit PINGPONG.txt PLATFORM.xml RATE veth
        the same fit to a ping-pong between two nodes of tests/cluster/cluster.sh (one rank
        each, TCP over their shaped veths), written as a platform of 2 hosts: node-i's
        outgoing link (its fm0, SHARED by its ranks) and incoming link (its port on the
        head's bridge, shaped too), half the fitted latency each; a route from node-i to
        node-j crosses node-i's out and node-j's in, as the packets do.
    calibrate.py table POINTS.jsonl OUT.md OUT.csv SECONDS
        measured (the schedule's recorded steps: step_ms, wait_after_backward_ms; medians)
        against simulated (the skeleton's medians) step and blocked time, with the errors.
"""
import csv
import json
import re
import statistics
import sys

PLATFORM = """<?xml version='1.0'?>
<!DOCTYPE platform SYSTEM "https://simgrid.org/simgrid.dtd">
<!-- {name}: written by jobs/simulate/calibrate.py from {src}; do not edit.
  This machine's loopback shaped with `tc qdisc add dev lo root tbf rate {rate} burst 256kb
  limit 64mb`, as Open MPI's TCP transport sees it (2 ranks, jobs/simulate/pingpong.c):
  fitted one-way time = {lat_us:.2f} us + bytes / {bw_gbs:.4f} GB/s ({npts} sizes from 1 MiB,
  worst residual {resid:.1f} %). Every route crosses the one SHARED link `lo`: tc shapes
  all traffic on lo, both directions, in one queue. A host's own actors (a rank and its
  communication thread) talk over shared memory: 0.25 us, 10 GB/s.
-->
<platform version="4.1">
  <zone id="loopback" routing="Full">
{hosts}
    <link id="lo" bandwidth="{bw_gbs:.6f}GBps" latency="{lat_us:.3f}us" sharing_policy="SHARED"/>
{selfs}
{routes}
  </zone>
</platform>
"""


VETH = """<?xml version='1.0'?>
<!DOCTYPE platform SYSTEM "https://simgrid.org/simgrid.dtd">
<!-- {name}: written by jobs/simulate/calibrate.py from {src}; do not edit.
  Two nodes of tests/cluster/cluster.sh (network namespaces on this machine), each node's veth
  and its port on the head's bridge shaped with `tc qdisc add ... tbf rate {rate} burst 256kb
  limit 64mb`, as Open MPI's TCP transport sees it (1 rank a node, jobs/simulate/pingpong.c):
  fitted one-way time = {lat_us:.2f} us + bytes / {bw_gbs:.4f} GB/s ({npts} sizes from 1 MiB,
  worst residual {resid:.1f} %). A route from node-i to node-j crosses node-i's out link and
  node-j's in link (half the latency each), each SHARED by the flows of that node's ranks in that
  direction. A host's own actors (its ranks and their communication threads) talk over shared
  memory: 0.25 us, 10 GB/s.
-->
<platform version="4.1">
  <zone id="veth" routing="Full">
{hosts}
{links}
{selfs}
{routes}
  </zone>
</platform>
"""


def fit(src, dst, rate, topology="loopback", nhosts=8):
    pts = []
    for line in open(src):
        m = re.match(r"\s*(\d+) bytes\s+one-way\s+([\d.]+) us", line)
        if m:
            pts.append((int(m.group(1)), float(m.group(2)) * 1e-6))
    if len(pts) < 3:
        raise SystemExit(f"calibrate.py: {src}: expected pingpong.c's lines '<n> bytes  one-way <t> us ...'")
    alpha = min(pts)[1]
    big = [(s, t) for s, t in pts if s >= 1 << 20]
    # least squares of t - alpha = s / B through the origin: 1/B = sum(s (t - alpha)) / sum(s^2)
    inv_b = sum(s * (t - alpha) for s, t in big) / sum(s * s for s, _ in big)
    bw = 1.0 / inv_b
    resid = max(abs((alpha + s / bw) / t - 1) for s, t in big) * 100
    if topology == "veth":
        nhosts = 2
    hosts = "\n".join(f'    <host id="node-{i}" speed="1Gf" core="4"/>' for i in range(nhosts))
    selfs = "\n".join(f'    <link id="self-{i}" bandwidth="10GBps" latency="0.25us" sharing_policy="FATPIPE"/>'
                      for i in range(nhosts))
    routes = [f'    <route src="node-{i}" dst="node-{i}"><link_ctn id="self-{i}"/></route>' for i in range(nhosts)]
    routes += [f'    <route src="node-{i}" dst="node-{j}"><link_ctn id="lo"/></route>'
               for i in range(nhosts) for j in range(i + 1, nhosts)]
    if topology == "veth":
        links = "\n".join(f'    <link id="{d}-{i}" bandwidth="{bw * 1e-9:.6f}GBps" latency="{alpha * 1e6 / 2:.3f}us" '
                          f'sharing_policy="SHARED"/>' for i in range(nhosts) for d in ("out", "in"))
        routes = [f'    <route src="node-{i}" dst="node-{i}"><link_ctn id="self-{i}"/></route>' for i in range(nhosts)]
        routes += [f'    <route src="node-{i}" dst="node-{j}" symmetrical="NO"><link_ctn id="out-{i}"/>'
                   f'<link_ctn id="in-{j}"/></route>' for i in range(nhosts) for j in range(nhosts) if i != j]
        with open(dst, "w") as f:
            f.write(VETH.format(name=dst.split("/")[-1], src=src, rate=rate, lat_us=alpha * 1e6, bw_gbs=bw * 1e-9,
                                npts=len(big), resid=resid, hosts=hosts, links=links, selfs=selfs,
                                routes="\n".join(routes)))
        print(f"calibrate: veth {rate}: alpha {alpha * 1e6:.2f} us, B {bw * 1e-9:.4f} GB/s (worst residual "
              f"{resid:.1f} %) -> {dst}", file=sys.stderr)
        return
    with open(dst, "w") as f:
        f.write(PLATFORM.format(name=dst.split("/")[-1], src=src, rate=rate, lat_us=alpha * 1e6, bw_gbs=bw * 1e-9,
                                npts=len(big), resid=resid, hosts=hosts, selfs=selfs, routes="\n".join(routes)))
    print(f"calibrate: {rate}: alpha {alpha * 1e6:.2f} us, B {bw * 1e-9:.4f} GB/s (worst residual {resid:.1f} %)"
          f" -> {dst}", file=sys.stderr)


def table(points, md, out_csv, seconds):
    rows = []
    for line in open(points):
        if not line.strip():
            continue
        pt = json.loads(line)
        sched = json.load(open(pt["schedule"]))
        st = sched["steps"]
        meas_step = statistics.median(s["step_ms"] for s in st)
        meas_blk = statistics.median(s["wait_after_backward_ms"] for s in st)
        sim = pt["sim"]
        plat = open(pt.get("platform") or pt["schedule"].rsplit("/", 2)[0] + f"/loopback-{pt['rate']}.xml").read()
        m = re.search(r"fitted one-way time = ([\d.]+) us \+ bytes / ([\d.]+) GB/s", plat)
        rows.append({"rate": pt["rate"], "p": pt["p"], "per_node": pt.get("per_node", ""),
                     "alpha_us": float(m.group(1)) if m else "",
                     "bw_gbs": float(m.group(2)) if m else "", "grad_mib": sim["grad_mib"], "buckets": sim["buckets"],
                     "steps": len(st), "measured_step_ms": meas_step, "simulated_step_ms": sim["step_ms"],
                     "step_error": sim["step_ms"] / meas_step - 1, "measured_blocked_ms": meas_blk,
                     "simulated_blocked_ms": sim["blocked_ms"], "blocked_error_ms": sim["blocked_ms"] - meas_blk,
                     "blocked_error": sim["blocked_ms"] / meas_blk - 1 if meas_blk > 0 else "",
                     "load": pt.get("load", "")})
    with open(out_csv, "w", newline="") as f:
        w = csv.DictWriter(f, fieldnames=list(rows[0].keys()))
        w.writeheader()
        w.writerows(rows)
    worst = max(abs(r["step_error"]) for r in rows)
    with open(md, "w") as f:
        veth = rows[0]["per_node"] != ""
        f.write(f"`sudo {'LINK=veth ' if veth else ''}jobs/simulate/calibrate.sh` ({seconds} s): fmtrain "
                f"(configs/scaling.yaml, {rows[0]['grad_mib']:.1f} MiB of gradient in {rows[0]['buckets']} buckets) "
                + ("on 2 nodes (network namespaces, tests/cluster/cluster.sh) x P/2 ranks x 1 thread, TCP over the "
                   "nodes' veths shaped by `tc`, the flat ring (dist.hierarchical: off, which the skeleton models), "
                   if veth else "on P ranks x 1 thread over TCP on this machine's loopback shaped by `tc`, ")
                + "against the skeleton replaying the same run's "
                f"schedule on the platform fitted to a ping-pong at that rate. Medians over the recorded steps; "
                f"load = the 1-minute load average after the point (2 = this machine's cores busy). "
                f"Step time within {100 * worst:.1f} % at every point.\n\n")
        f.write("| tc rate | P | fitted latency us | fitted GB/s | measured step ms | simulated step ms | error | "
                "measured blocked ms | simulated blocked ms | error | load |\n"
                "|---|---|---|---|---|---|---|---|---|---|---|\n")
        for r in rows:
            be = f"{100 * r['blocked_error']:+.0f} %" if r["blocked_error"] != "" else "–"
            f.write(f"| {r['rate']} | {r['p']} | {r['alpha_us']:.1f} | {r['bw_gbs']:.4f} | {r['measured_step_ms']:.1f} | "
                    f"{r['simulated_step_ms']:.1f} | {100 * r['step_error']:+.1f} % | {r['measured_blocked_ms']:.1f} | "
                    f"{r['simulated_blocked_ms']:.1f} | {be} ({r['blocked_error_ms']:+.1f} ms) | {r['load']} |\n")


def main():
    if len(sys.argv) in (5, 6) and sys.argv[1] == "fit":
        fit(sys.argv[2], sys.argv[3], sys.argv[4], *sys.argv[5:])
    elif len(sys.argv) == 6 and sys.argv[1] == "table":
        table(sys.argv[2], sys.argv[3], sys.argv[4], sys.argv[5])
    else:
        raise SystemExit(__doc__)


if __name__ == "__main__":
    main()
