#!/usr/bin/env bash
# run.sh - sweep the simulated rank count for both engines and write a CSV.
#
#   jobs/simulate/run.sh SCHEDULE.json PLATFORM.xml [OUT.csv]
#
# For every P in PS (default "2 4 8 16 32 64") and engine in ENGINES (default
# "ring binomial"): jobs/simulate/sim.sh PLATFORM P RPN -- --schedule SCHEDULE
# --engine E --steps STEPS $EXTRA, one CSV row per run (default OUT:
# sim-<schedule name>-<platform name>.csv in the working directory), plus the
# simulation's wall seconds. Environment: PS, ENGINES, RPN (ranks a node,
# default 1), STEPS (default 3), EXTRA (more skeleton options, e.g.
# "--bucket-mb 4 --reduce-gbs 10"; --zero is applied to the ring only, the old
# binomial engine had none). Weak scaling: every simulated rank does the
# measured rank's work. Cost: the simulation grows with P x rounds; 1,024 ranks
# with many buckets take minutes and GBs, so add large P deliberately.
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
[ $# -ge 2 ] || { echo "usage: $0 SCHEDULE.json PLATFORM.xml [OUT.csv]" >&2; exit 2; }
sched=$1 plat=$2
out=${3:-sim-$(basename "$sched" .json)-$(basename "$plat" .xml).csv}
PS=${PS:-2 4 8 16 32 64} ENGINES=${ENGINES:-ring binomial} RPN=${RPN:-1} STEPS=${STEPS:-3} EXTRA=${EXTRA:-}
[ -f "$sched" ] || { echo "run.sh: $sched: no such schedule (fmtrain CONFIG --dump-schedule=N writes one)" >&2; exit 2; }
tmp=$(mktemp /tmp/fm-sim-run.XXXXXX)
trap 'rm -f "$tmp"' EXIT

for p in $PS; do
  for e in $ENGINES; do
    extra=$EXTRA
    [ "$e" = binomial ] && extra=${extra//--zero/}
    t0=$(date +%s.%N)
    # shellcheck disable=SC2086
    line=$("$here/sim.sh" "$plat" "$p" "$RPN" -- --schedule "$sched" --engine "$e" --steps "$STEPS" $extra \
           --label "$(basename "$plat" .xml)/rpn$RPN")
    t1=$(date +%s.%N)
    echo "$line" | sed "s/}\$/, \"wall_s\": $(awk -v a="$t0" -v b="$t1" 'BEGIN { printf "%.2f", b - a }')}/" >>"$tmp"
    echo "run.sh: p=$p $e: $line" >&2
  done
done
/usr/bin/python3 - "$tmp" "$out" <<'PY'
import csv, json, sys
rows = [json.loads(l) for l in open(sys.argv[1]) if l.strip()]
for r in rows:
    r["zero"] = "true" if r["zero"] else "false"
cols = ["label", "p", "engine", "zero", "bucket_mb", "buckets", "grad_mib", "steps", "speed", "reduce_gbs",
        "step_ms", "compute_ms", "blocked_ms", "blocked_max_ms", "comm_alone_ms", "wall_s"]
with open(sys.argv[2], "w", newline="") as f:
    w = csv.DictWriter(f, fieldnames=cols, extrasaction="ignore")
    w.writeheader()
    w.writerows(rows)
print(f"run.sh: {len(rows)} rows in {sys.argv[2]}", file=sys.stderr)
PY
