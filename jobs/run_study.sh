#!/bin/bash
# jobs/run_study.sh - run the strong and the weak scaling study to completion
# and write the report: OUT.csv, OUT.png, OUT.md.
#
#   jobs/run_study.sh [--local] [OUT]        (from the repository root; OUT default runs/scaling/report)
#
# Submits jobs/strong.sbatch and jobs/weak.sbatch (job arrays, one point at a
# time on a whole node) with sbatch --wait, then runs jobs/report.py on both
# study directories. With --local (root only) it first starts a private
# one-node Slurm on this machine (tests/slurm/cluster.sh) and stops it at the
# end; otherwise it uses the cluster sbatch already talks to.
#
# STRONG_GRID (default "1x1 2x1 1x2 2x1:4 2x1:1": ranks x threads, and two
# smaller gradient bucket sizes in MiB) and WEAK_GRID (default "1x1 2x1 1x2")
# are the points; BATCH, STEPS and FM_SET pass through to jobs/scaling_point.sh.
set -u
cd "$(dirname "$0")/.." || exit 2
local_cluster=0
if [ "${1:-}" = --local ]; then local_cluster=1; shift; fi
out=${1:-runs/scaling/report}
tag=$(date +%Y%m%d-%H%M%S)

if [ $local_cluster -eq 1 ]; then
    C=$(mktemp -d)
    chmod 755 "$C"
    trap 'tests/slurm/cluster.sh stop "$C/c"; rm -rf "$C"' EXIT
    tests/slurm/cluster.sh start "$C/c" || exit 1
    export SLURM_CONF=$C/c/slurm.conf
fi

mkdir -p runs/scaling "$(dirname "$out")"
pids=()
for s in strong weak; do
    if [ $s = strong ]; then grid=${STRONG_GRID:-1x1 2x1 1x2 2x1:4 2x1:1}; else grid=${WEAK_GRID:-1x1 2x1 1x2}; fi
    n=$(wc -w <<<"$grid")
    GRID=$grid STUDY_DIR=runs/scaling/$s-$tag sbatch --wait --array="0-$((n - 1))%1" jobs/$s.sbatch &
    pids+=($!)
done
rc=0
for p in "${pids[@]}"; do wait "$p" || rc=1; done
[ $rc -eq 0 ] || echo "run_study.sh: a study job failed; reporting what ran (see slurm-fm-*.out)" >&2
/usr/bin/python3 jobs/report.py "runs/scaling/strong-$tag" "runs/scaling/weak-$tag" \
    --csv "$out.csv" --png "$out.png" --md "$out.md" && cat "$out.md"
