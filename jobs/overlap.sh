#!/bin/bash
# jobs/overlap.sh - how much of the gradient reduction the communication
# thread hides behind backward, on a real slow link: two ranks on this machine
# connected only by TCP over the loopback, whose bandwidth a `tc` token-bucket
# filter limits (root needed), so that one step's gradient traffic takes about
# as long as its backward.
#
# For each bucket size it trains configs/scaling.yaml's pixel U-Net (17.3 MiB
# of gradient) for STEPS flow steps on 2 ranks x 1 thread and reads, from
# metrics.jsonl (steps after the warm-up):
#   compute_ms    forward + backward (rank 0)
#   exposed_ms    time blocked after the last rank's backward until the
#                 gradient is reduced: the reduction not hidden behind backward
#   allreduce_ms  rank 0's wait after its own backward: exposed_ms plus the
#                 wait for a rank whose backward ended later (imbalance_ms)
#   comm_ms       the same buckets reduced with nothing else running (probe)
#   blocked       exposed_ms / comm_ms: 100 % = nothing hidden, 0 % = all hidden
# (On 2 cores a step's two backward passes do not always end together: the
# OS runs the compute threads, the communication threads and the loopback's
# TCP work on the same two cores. A rank that waits for the other's backward
# waits for compute, not for the reduction; rank 0's allreduce_ms and the
# imbalance are in the table too.)
# and prints one table row per bucket size (also written to OUT/overlap.md and
# OUT/overlap.json).
#
# LINK=veth runs the same over a real link between two hosts instead: two nodes
# of a Slurm cluster of network namespaces on this machine
# (tests/cluster/cluster.sh, started under OUT/cluster and stopped on exit, or
# an already running one given as CLUSTER=DIR), each node's veth shaped to
# RATE; each point is one `sbatch --wait -N 2 --ntasks-per-node=1` job running
# mpirun with one rank per node over the nodes' interface (btl tcp on fm0).
#
# Environment (all optional):
#   LINK     lo (default: the shaped loopback) or veth (two nodes, shaped veths)
#   CLUSTER  with LINK=veth: a running cluster's DIR (default: start one)
#   RATE     the link's rate, tc syntax (default 150mbit)
#   BUCKETS  bucket sizes in MiB (default "64 4 1 0.25"; 64 = one bucket)
#   STEPS    flow steps per point (default 12; the first 2 are left out)
#   BATCH    global batch (default 16: 8 per rank)
#   COMM_SCHED  dist.comm_sched of the runs (default: the config's, auto)
#   IDLE_SLOW_START  with LINK=lo: net.ipv4.tcp_slow_start_after_idle for the
#            duration (default 0, restored on exit; "keep" leaves it as it is).
#            Debian's 1 resets a connection's congestion window after every
#            pause, so each bucket's transfer restarts in slow start; nodes
#            that reduce gradients over TCP set it to 0 (docs/scaling.md)
#   OUT      where the runs go (default runs/overlap)
#   FMTRAIN  the binary (default ./fmtrain)
# Usage: sudo jobs/overlap.sh     (or as root; the qdisc is removed on exit)
#        sudo LINK=veth jobs/overlap.sh
set -u
die() { echo "overlap.sh: error: $*" >&2; exit 2; }
cd "$(dirname "$0")/.." || exit 2
[ "$(id -u)" -eq 0 ] || die "needs root to shape the link with tc"
command -v tc >/dev/null || die "tc not found (Debian package iproute2)"
FMTRAIN=${FMTRAIN:-./fmtrain}
[ -x "$FMTRAIN" ] || die "$FMTRAIN not built: run make"
FMTRAIN=$(cd "$(dirname "$FMTRAIN")" && pwd)/$(basename "$FMTRAIN")
LINK=${LINK:-lo}
RATE=${RATE:-150mbit}
read -r -a buckets <<<"${BUCKETS:-64 4 1 0.25}"
STEPS=${STEPS:-12}
BATCH=${BATCH:-16}
OUT=${OUT:-runs/overlap}
export OMPI_ALLOW_RUN_AS_ROOT=1 OMPI_ALLOW_RUN_AS_ROOT_CONFIRM=1
mkdir -p "$OUT" || die "cannot create $OUT"
OUT=$(cd "$OUT" && pwd)
trap 'exit 130' INT TERM
# train B LOG: fmtrain on 2 ranks x 1 thread over the shaped link, B MiB buckets, into $OUT/bB
train_args() {
  echo "$FMTRAIN" configs/scaling.yaml --out "$OUT/b$1" --set flow.steps="$STEPS" --set flow.batch_size="$BATCH" \
    --set flow.bucket_mb="$1" --set run.log_every=1 ${COMM_SCHED:+--set dist.comm_sched=$COMM_SCHED}
}
case $LINK in
lo)
  tc qdisc show dev lo | grep -q tbf && die "lo already has a tbf qdisc: remove it first (tc qdisc del dev lo root)"
  IDLE_SLOW_START=${IDLE_SLOW_START:-0}
  idle_was=$(sysctl -n net.ipv4.tcp_slow_start_after_idle) || die "cannot read net.ipv4.tcp_slow_start_after_idle"
  trap 'tc qdisc del dev lo root 2>/dev/null; sysctl -qw net.ipv4.tcp_slow_start_after_idle="$idle_was"' EXIT
  case $IDLE_SLOW_START in
  keep) ;;
  0 | 1) sysctl -qw net.ipv4.tcp_slow_start_after_idle="$IDLE_SLOW_START" ||
    die "cannot set net.ipv4.tcp_slow_start_after_idle (IDLE_SLOW_START=keep leaves it)" ;;
  *) die "IDLE_SLOW_START must be 0, 1 or keep, got $IDLE_SLOW_START" ;;
  esac
  # limit (queue bytes) large enough that the link never drops: a drop costs TCP a 200 ms timeout
  tc qdisc add dev lo root tbf rate "$RATE" burst 256kb limit 64mb || die "tc qdisc add failed"
  where="Loopback shaped to $RATE, tcp_slow_start_after_idle $(sysctl -n net.ipv4.tcp_slow_start_after_idle); 2 ranks x 1 thread over TCP"
  echo "overlap: loopback shaped to $RATE ($(tc qdisc show dev lo | head -1))"
  train() {
    # shellcheck disable=SC2046 # the arguments, one word each
    mpirun -np 2 --bind-to none --mca btl tcp,self --mca btl_tcp_if_include lo -x OMP_NUM_THREADS=1 \
      $(train_args "$1") >"$2" 2>&1
  } ;;
veth)
  # shellcheck source=jobs/veth_cluster.sh
  . jobs/veth_cluster.sh
  veth_cluster_start "$OUT/cluster" "$RATE"
  where="Two nodes (network namespaces), each one's veth shaped to $VETH_RATE; 1 rank x 1 thread per node over TCP"
  echo "overlap: $where"
  train() {
    # one rank per node, only over the nodes' interface fm0
    # shellcheck disable=SC2046 # the arguments, one word each
    veth_mpirun "$2" 1 $(train_args "$1")
  } ;;
*) die "LINK must be lo or veth, got $LINK" ;;
esac

rows=()
json="["
for b in "${buckets[@]}"; do
  dir=$OUT/b$b
  rm -rf "$dir"
  train "$b" "$OUT/b$b.log" || die "the run with $b MiB buckets failed: see $OUT/b$b.log"
  row=$(/usr/bin/python3 - "$dir/metrics.jsonl" "$b" <<'EOF'
import json, statistics, sys
recs = [json.loads(l) for l in open(sys.argv[1]) if '"stage":"flow"' in l]
recs = [r for r in recs if r["step"] > 2]
med = lambda k: statistics.median(r[k] for r in recs)
c, a, m, s = med("compute_ms"), med("allreduce_ms"), med("comm_ms"), med("step_ms")
x, i = med("exposed_ms"), med("imbalance_ms")
print(json.dumps({"bucket_mb": float(sys.argv[2]), "steps": len(recs), "step_ms": s, "compute_ms": c,
                  "exposed_ms": x, "allreduce_ms": a, "imbalance_ms": i, "comm_ms": m,
                  "blocked": x / m if m > 0 else None, "rank0_blocked": a / m if m > 0 else None}))
EOF
) || die "cannot read $dir/metrics.jsonl"
  json+="$row,"
  rows+=("$(/usr/bin/python3 -c 'import json,sys; r=json.loads(sys.argv[1]); print("| %g | %d | %.0f | %.0f | %.0f | %.0f | %.0f | %.0f | %.0f %% | %.0f %% |" % (r["bucket_mb"], r["steps"], r["step_ms"], r["compute_ms"], r["exposed_ms"], r["allreduce_ms"], r["imbalance_ms"], r["comm_ms"], 100 * r["blocked"], 100 * r["rank0_blocked"]))' "$row")")
  echo "${rows[-1]}"
done
json="${json%,}]"
{
  echo "$where; configs/scaling.yaml, global batch $BATCH, dist.comm_sched ${COMM_SCHED:-auto} (in force: $(sed -n 's/.*dist\.comm_sched: \(auto: \)\{0,1\}\([a-z]*\)[: (].*/\2/p' "$OUT"/b*.log | sort -u | tr '\n' ' ' | sed 's/ $//')); medians of steps 3-$STEPS."
  echo
  echo "| bucket MiB | steps | step ms | compute ms | blocked after the last backward ms | rank 0 blocked ms | imbalance ms | reduced alone ms | blocked / alone | rank 0 blocked / alone |"
  echo "|---|---|---|---|---|---|---|---|---|---|"
  printf '%s\n' "${rows[@]}"
} >"$OUT/overlap.md"
echo "$json" >"$OUT/overlap.json"
cat "$OUT/overlap.md"
