#!/usr/bin/env python3
"""gen.py - write the SimGrid cluster platforms of jobs/simulate/platforms.

    jobs/simulate/platforms/gen.py [--gbps G ...] [--lat-us L ...] [--nodes N] [--out DIR]

One file per (G, L): cluster-<G>g-<L>us.xml, N nodes (default 1024, enough for
1,024 ranks at any number of ranks a node) named node-0 .. node-(N-1); see the
comment written into each file for what it models and where its figures come
from. jobs/simulate/sim.sh places the ranks on the nodes.
"""
import argparse
import os

# Measured on this machine (2 cores, Open MPI 4.1 shared memory, btl vader) with
# jobs/simulate/pingpong.c: best of 2,000 round trips for 8 bytes (0.24 us one
# way) and of 50 for 4 MiB (11.2 GB/s; 1 MiB 9.5, 16 MiB 8.9 GB/s). A 64-core
# node's cores reach memory the same way, so one pair of ranks on a node gets
# about this; rounded to 0.25 us and 10 GB/s.
INTRA_LAT_US = 0.25
INTRA_GBPS_BYTES = 10.0

TEMPLATE = """<?xml version='1.0'?>
<!DOCTYPE platform SYSTEM "https://simgrid.org/simgrid.dtd">
<!-- {name}: written by jobs/simulate/platforms/gen.py; do not edit, regenerate.

  {nodes} nodes node-0 .. node-{last}, 64 cores each (an AMD EPYC-class node; the
  skeleton's compute takes its measured time on any host speed, so speed only
  has to be the same everywhere). Ranks a node: chosen per run by sim.sh.

  Between nodes: every node has a private {gbps} Gb/s link ({bw} GB/s, SPLITDUPLEX:
  each direction its own {bw} GB/s, as an InfiniBand HDR/NDR or 100/200 GbE port)
  into a non-blocking backbone (FATPIPE: no flow slows another there), i.e. a
  fat-tree with full bisection bandwidth; oversubscribed trees and adaptive routing
  are not modelled. End-to-end latency alpha = {lat} us (two private links of
  {half} us, backbone 0 us): 1-5 us spans InfiniBand (about 1 us MPI latency)
  to RoCE and kernel TCP (several us). With sim.sh's options a message of b
  bytes between nodes takes alpha + b / {bw} GB/s.

  Inside a node: the loopback link, {ilat} us and {ibw} GB/s, measured here
  (gen.py: Open MPI shared-memory ping-pong, jobs/simulate/pingpong.c). SimGrid
  makes a cluster's loopback FATPIPE: every pair of ranks on a node gets that
  bandwidth at once; the node's memory bandwidth does not cap their sum.
-->
<platform version="4.1">
  <cluster id="cluster" prefix="node-" suffix="" radical="0-{last}" speed="1Gf" core="64"
           bw="{bw}GBps" lat="{half}us" sharing_policy="SPLITDUPLEX"
           bb_bw="{bw}GBps" bb_lat="0us" bb_sharing_policy="FATPIPE"
           loopback_bw="{ibw}GBps" loopback_lat="{ilat}us"/>
</platform>
"""


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--gbps", type=float, nargs="+", default=[100, 200])
    ap.add_argument("--lat-us", type=float, nargs="+", default=[1, 2, 5])
    ap.add_argument("--nodes", type=int, default=1024)
    ap.add_argument("--out", default=os.path.dirname(os.path.abspath(__file__)))
    a = ap.parse_args()
    for g in a.gbps:
        for lat in a.lat_us:
            name = f"cluster-{g:g}g-{lat:g}us.xml"
            text = TEMPLATE.format(name=name, nodes=a.nodes, last=a.nodes - 1, gbps=f"{g:g}", bw=f"{g / 8:g}",
                                   lat=f"{lat:g}", half=f"{lat / 2:g}", ilat=f"{INTRA_LAT_US:g}",
                                   ibw=f"{INTRA_GBPS_BYTES:g}")
            with open(os.path.join(a.out, name), "w") as f:
                f.write(text)
            print(os.path.join(a.out, name))


if __name__ == "__main__":
    main()
