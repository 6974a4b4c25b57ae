#!/usr/bin/env bash
# calibrate.sh - the simulator against real fmtrain runs on this machine's shaped loopback.
#
#   sudo jobs/simulate/calibrate.sh [OUT_DIR]        (default runs/calibrate)
#
# For each loopback rate in RATES (tc tbf syntax, default "2gbit 1gbit"; the qdisc is
# removed on exit):
#   1. ping-pong (jobs/simulate/pingpong.c) between 2 ranks over TCP on the shaped `lo`;
#      calibrate.py fits latency and bandwidth to it and writes the platform
#      OUT/loopback-<rate>.xml (4 hosts, every route through one shared link: `tc`
#      shapes everything that crosses `lo`, both directions, in one queue);
#   2. fmtrain on P = 2, 3 and 4 ranks x 1 thread over TCP only (`--mca btl tcp,self`),
#      configs/scaling.yaml's pixel U-Net, BATCH images per rank, BUCKET_MB buckets,
#      `--dump-schedule=STEPS` (after 3 warm-up steps);
#   3. the skeleton replays each run's schedule (its own compute times, --imbalance) on the
#      fitted platform (jobs/simulate/sim.sh, one rank a host).
# Then calibrate.py writes OUT/calibration.md and OUT/calibration.csv: measured against
# simulated step time and time blocked after backward (medians over the recorded steps),
# the error of each and the load average; the table is copied to
# docs/scaling-calibration.md (not with NO_DOC=1), which `make scaling` puts into
# docs/scaling.md.
#
# LINK=veth runs the same on two hosts joined by a real link instead: for each rate a
# 2-node Slurm cluster of network namespaces on this machine (tests/cluster/cluster.sh,
# through jobs/veth_cluster.sh as jobs/overlap.sh uses it; CLUSTER=DIR takes a running
# one and its rate), each node's veth shaped to the rate; the ping-pong runs between the
# two nodes, the platform OUT/veth-<rate>.xml has each node's own out and in link
# (calibrate.py), and fmtrain runs as `sbatch --wait -N 2 --ntasks-per-node=R` jobs,
# mpirun over fm0, for R in PS (default "1 2": 2 and 4 ranks) with dist.hierarchical: off
# (the skeleton models the flat ring), simulated with R ranks a host. The table goes to
# OUT/calibration.md and, unless NO_DOC=1, docs/scaling-calibration-veth.md.
#
# Environment: LINK (lo or veth), RATES, PS (default "2 3 4"; veth: ranks per node,
# "1 2"), STEPS (default 8), BATCH (default 8),
# BUCKET_MB (default 4), FMTRAIN (default ./fmtrain). Run it on a quiet machine: the
# ranks of P = 3 and 4 share this machine's cores, and the comparison is only as good as
# the measured times. Needs root (tc), mpicc, smpicc. Duration: printed at the end; 415 s
# here with STEPS=3 under a load of 13-24, expect 5-10 minutes with the defaults.
# No `netem` here (the kernel lacks sch_netem), so the settings vary the bandwidth only;
# the latency is the loopback's own, as fitted.
set -u
die() { echo "calibrate.sh: error: $*" >&2; exit 2; }
here=$(cd "$(dirname "$0")" && pwd)
cd "$here/../.." || exit 2
[ "$(id -u)" -eq 0 ] || die "needs root to shape the loopback with tc"
command -v tc >/dev/null || die "tc not found (Debian package iproute2)"
command -v mpicc >/dev/null || die "mpicc not found (Debian libopenmpi-dev)"
OUT=${1:-runs/calibrate}
LINK=${LINK:-lo}
case $LINK in lo | veth) ;; *) die "LINK must be lo or veth, got $LINK" ;; esac
read -r -a rates <<<"${RATES:-2gbit 1gbit}"
if [ "$LINK" = veth ]; then read -r -a ps <<<"${PS:-1 2}"; else read -r -a ps <<<"${PS:-2 3 4}"; fi
STEPS=${STEPS:-8} BATCH=${BATCH:-8} BUCKET_MB=${BUCKET_MB:-4}
FMTRAIN=${FMTRAIN:-./fmtrain}
[ -x "$FMTRAIN" ] || die "$FMTRAIN not built: run make"
export OMPI_ALLOW_RUN_AS_ROOT=1 OMPI_ALLOW_RUN_AS_ROOT_CONFIRM=1
[ "$LINK" = lo ] && tc qdisc show dev lo | grep -q -e tbf -e netem && die "lo already has a shaping qdisc: remove it first (tc qdisc del dev lo root)"
t_start=$(date +%s)
mkdir -p "$OUT" build/simulate
make -s -C "$here" >&2 || die "cannot build the skeleton (make -C jobs/simulate)"
mpicc -O2 -o build/simulate/pingpong "$here/pingpong.c" || die "cannot build jobs/simulate/pingpong.c"

trap 'exit 130' INT TERM
if [ "$LINK" = veth ]; then
  mkdir -p "$OUT" && OUT=$(cd "$OUT" && pwd) || die "cannot create $OUT"
  FMTRAIN=$(cd "$(dirname "$FMTRAIN")" && pwd)/$(basename "$FMTRAIN")
  # shellcheck source=jobs/veth_cluster.sh
  . jobs/veth_cluster.sh
  [ -n "${CLUSTER:-}" ] && rates=("$(. "$CLUSTER/cluster.env" 2>/dev/null && echo "$RATE")")
  : >"$OUT/points.jsonl"
  for rate in "${rates[@]}"; do
    veth_cluster_start "$OUT/cluster-$rate" "$rate"
    echo "calibrate: 2 nodes, veths shaped to $VETH_RATE (load $(cut -d' ' -f1 /proc/loadavg))" >&2
    veth_mpirun "$OUT/pingpong-veth-$rate.txt" 1 "$PWD/build/simulate/pingpong" ||
      die "the ping-pong between the nodes at $rate failed: see $OUT/pingpong-veth-$rate.txt"
    plat=$OUT/veth-$rate.xml
    /usr/bin/python3 "$here/calibrate.py" fit "$OUT/pingpong-veth-$rate.txt" "$plat" "$rate" veth ||
      die "cannot fit $OUT/pingpong-veth-$rate.txt"
    for rpn in "${ps[@]}"; do
      p=$((2 * rpn)) dir=$OUT/veth-$rate-p$p
      rm -rf "$dir"
      veth_mpirun "$dir.log" "$rpn" "$FMTRAIN" configs/scaling.yaml --out "$dir" --set dist.batch=per_rank \
        --set flow.batch_size="$BATCH" --set flow.steps=$((STEPS + 4)) --set flow.bucket_mb="$BUCKET_MB" \
        --set dist.hierarchical=off --dump-schedule="$STEPS" || die "fmtrain on 2 x $rpn ranks at $rate failed: see $dir.log"
      [ -f "$dir/schedule-flow.json" ] || die "$dir/schedule-flow.json was not written: see $dir.log"
      echo "calibrate: veth $rate, 2 nodes x $rpn ranks measured (load $(cut -d' ' -f1 /proc/loadavg))" >&2
      sim=$("$here/sim.sh" "$plat" "$p" "$rpn" -- --schedule "$dir/schedule-flow.json" --engine ring \
            $(grep -q '"zero": true' "$dir/schedule-flow.json" && echo --zero) --steps "$STEPS" --imbalance) ||
        die "the simulation of $dir failed"
      printf '{"rate": "%s", "p": %d, "per_node": %d, "platform": "%s", "schedule": "%s", "load": %s, "sim": %s}\n' \
        "$rate" "$p" "$rpn" "$plat" "$dir/schedule-flow.json" "$(cut -d' ' -f1 /proc/loadavg)" "$sim" >>"$OUT/points.jsonl"
    done
    veth_cluster_stop
  done
  /usr/bin/python3 "$here/calibrate.py" table "$OUT/points.jsonl" "$OUT/calibration.md" "$OUT/calibration.csv" \
    "$(( $(date +%s) - t_start ))" || die "cannot write the table"
  cat "$OUT/calibration.md"
  [ -n "${NO_DOC:-}" ] || cp "$OUT/calibration.md" docs/scaling-calibration-veth.md
  echo "calibrate: done in $(( $(date +%s) - t_start )) s" >&2
  exit 0
fi
cleanup() { tc qdisc del dev lo root 2>/dev/null; }
trap cleanup EXIT
tcp=(--bind-to none --oversubscribe --mca btl tcp,self --mca btl_tcp_if_include lo -x OMP_NUM_THREADS=1)
: >"$OUT/points.jsonl"
for rate in "${rates[@]}"; do
  tc qdisc add dev lo root tbf rate "$rate" burst 256kb limit 64mb || die "tc qdisc add ... rate $rate failed"
  echo "calibrate: loopback shaped to $rate (load $(cut -d' ' -f1 /proc/loadavg))" >&2
  mpirun -np 2 "${tcp[@]}" build/simulate/pingpong >"$OUT/pingpong-$rate.txt" 2>&1 ||
    die "the ping-pong at $rate failed: see $OUT/pingpong-$rate.txt"
  /usr/bin/python3 "$here/calibrate.py" fit "$OUT/pingpong-$rate.txt" "$OUT/loopback-$rate.xml" "$rate" ||
    die "cannot fit $OUT/pingpong-$rate.txt"
  for p in "${ps[@]}"; do
    dir=$OUT/$rate-p$p
    rm -rf "$dir"
    mpirun -np "$p" "${tcp[@]}" "$FMTRAIN" configs/scaling.yaml --out "$dir" --set dist.batch=per_rank \
      --set flow.batch_size="$BATCH" --set flow.steps=$((STEPS + 4)) --set flow.bucket_mb="$BUCKET_MB" \
      --dump-schedule="$STEPS" >"$dir.log" 2>&1 || die "fmtrain on $p ranks at $rate failed: see $dir.log"
    [ -f "$dir/schedule-flow.json" ] || die "$dir/schedule-flow.json was not written: see $dir.log"
    echo "calibrate: $rate, $p ranks measured (load $(cut -d' ' -f1 /proc/loadavg))" >&2
    # the simulation needs no shaping, but runs within it harmlessly (no network use)
    sim=$("$here/sim.sh" "$OUT/loopback-$rate.xml" "$p" 1 -- --schedule "$dir/schedule-flow.json" --engine ring \
          $(grep -q '"zero": true' "$dir/schedule-flow.json" && echo --zero) --steps "$STEPS" --imbalance) ||
      die "the simulation of $dir failed"
    printf '{"rate": "%s", "p": %d, "schedule": "%s", "load": %s, "sim": %s}\n' "$rate" "$p" \
      "$dir/schedule-flow.json" "$(cut -d' ' -f1 /proc/loadavg)" "$sim" >>"$OUT/points.jsonl"
  done
  tc qdisc del dev lo root || die "cannot remove the qdisc (tc qdisc del dev lo root)"
done
/usr/bin/python3 "$here/calibrate.py" table "$OUT/points.jsonl" "$OUT/calibration.md" "$OUT/calibration.csv" \
  "$(( $(date +%s) - t_start ))" || die "cannot write the table"
cat "$OUT/calibration.md"
[ -n "${NO_DOC:-}" ] || cp "$OUT/calibration.md" docs/scaling-calibration.md
echo "calibrate: done in $(( $(date +%s) - t_start )) s; the table is in docs/scaling-calibration.md, which make scaling puts into docs/scaling.md" >&2
