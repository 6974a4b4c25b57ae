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
#   compute_ms    forward + backward
#   allreduce_ms  time blocked after backward until the gradient is reduced
#   comm_ms       the same buckets reduced with nothing else running (probe)
#   blocked       allreduce_ms / comm_ms: 100 % = nothing hidden, 0 % = all hidden
# and prints one table row per bucket size (also written to OUT/overlap.md and
# OUT/overlap.json).
#
# Environment (all optional):
#   RATE     the link's rate, tc syntax (default 150mbit)
#   BUCKETS  bucket sizes in MiB (default "64 4 1 0.25"; 64 = one bucket)
#   STEPS    flow steps per point (default 12; the first 2 are left out)
#   BATCH    global batch (default 16: 8 per rank)
#   OUT      where the runs go (default runs/overlap)
#   FMTRAIN  the binary (default ./fmtrain)
# Usage: sudo jobs/overlap.sh     (or as root; the qdisc is removed on exit)
set -u
die() { echo "overlap.sh: error: $*" >&2; exit 2; }
cd "$(dirname "$0")/.." || exit 2
[ "$(id -u)" -eq 0 ] || die "needs root to shape the loopback with tc"
command -v tc >/dev/null || die "tc not found (Debian package iproute2)"
FMTRAIN=${FMTRAIN:-./fmtrain}
[ -x "$FMTRAIN" ] || die "$FMTRAIN not built: run make"
RATE=${RATE:-150mbit}
read -r -a buckets <<<"${BUCKETS:-64 4 1 0.25}"
STEPS=${STEPS:-12}
BATCH=${BATCH:-16}
OUT=${OUT:-runs/overlap}
export OMPI_ALLOW_RUN_AS_ROOT=1 OMPI_ALLOW_RUN_AS_ROOT_CONFIRM=1
tc qdisc show dev lo | grep -q tbf && die "lo already has a tbf qdisc: remove it first (tc qdisc del dev lo root)"

cleanup() { tc qdisc del dev lo root 2>/dev/null; }
trap cleanup EXIT
trap 'exit 130' INT TERM
# limit (queue bytes) large enough that the link never drops: a drop costs TCP a 200 ms timeout
tc qdisc add dev lo root tbf rate "$RATE" burst 256kb limit 64mb || die "tc qdisc add failed"
echo "overlap: loopback shaped to $RATE ($(tc qdisc show dev lo | head -1))"

mkdir -p "$OUT"
rows=()
json="["
for b in "${buckets[@]}"; do
  dir=$OUT/b$b
  rm -rf "$dir"
  mpirun -np 2 --bind-to none --mca btl tcp,self --mca btl_tcp_if_include lo -x OMP_NUM_THREADS=1 \
    "$FMTRAIN" configs/scaling.yaml --out "$dir" --set flow.steps="$STEPS" --set flow.batch_size="$BATCH" \
    --set flow.bucket_mb="$b" --set run.log_every=1 >"$OUT/b$b.log" 2>&1 ||
    die "the run with $b MiB buckets failed: see $OUT/b$b.log"
  row=$(/usr/bin/python3 - "$dir/metrics.jsonl" "$b" <<'EOF'
import json, statistics, sys
recs = [json.loads(l) for l in open(sys.argv[1]) if '"stage":"flow"' in l]
recs = [r for r in recs if r["step"] > 2]
med = lambda k: statistics.median(r[k] for r in recs)
c, a, m, s = med("compute_ms"), med("allreduce_ms"), med("comm_ms"), med("step_ms")
print(json.dumps({"bucket_mb": float(sys.argv[2]), "steps": len(recs), "step_ms": s, "compute_ms": c,
                  "allreduce_ms": a, "comm_ms": m, "blocked": a / m if m > 0 else None}))
EOF
) || die "cannot read $dir/metrics.jsonl"
  json+="$row,"
  rows+=("$(/usr/bin/python3 -c 'import json,sys; r=json.loads(sys.argv[1]); print("| %g | %d | %.0f | %.0f | %.0f | %.0f | %.0f %% |" % (r["bucket_mb"], r["steps"], r["step_ms"], r["compute_ms"], r["allreduce_ms"], r["comm_ms"], 100 * r["blocked"]))' "$row")")
  echo "${rows[-1]}"
done
json="${json%,}]"
{
  echo "Loopback shaped to $RATE; 2 ranks x 1 thread over TCP; configs/scaling.yaml, global batch $BATCH; medians of steps 3-$STEPS."
  echo
  echo "| bucket MiB | steps | step ms | compute ms | blocked after backward ms | reduced alone ms | blocked / alone |"
  echo "|---|---|---|---|---|---|---|"
  printf '%s\n' "${rows[@]}"
} >"$OUT/overlap.md"
echo "$json" >"$OUT/overlap.json"
cat "$OUT/overlap.md"
