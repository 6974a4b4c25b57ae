#!/bin/bash
# jobs/scaling_point.sh STUDY - one point of a scaling study: the task of a
# Slurm job array (jobs/strong.sbatch, jobs/weak.sbatch) picks grid point
# number $SLURM_ARRAY_TASK_ID, "RxT" = R MPI ranks x T OpenMP threads each
# (or "RxT:B" = the same with gradient buckets of B MiB, flow.bucket_mb), and
# trains configs/scaling.yaml for a fixed number of steps on that layout.
#
#   STUDY=strong  fixed global batch BATCH (default 32) for every point
#   STUDY=weak    fixed batch per core: global batch = BATCH (default 16) x R x T
#
# Environment (all optional; sbatch passes the submitting shell's environment):
#   GRID       the points, e.g. "1x1 2x1 1x2" (default) or "2x1:1 2x1:4 2x1:16";
#              the array must be --array=0-(number of points - 1)
#   BATCH      see above
#   STEPS      training steps per point (default 20; the first 2 are warm-up)
#   STUDY_DIR  where the points go (default runs/scaling/<STUDY>-<array job id>)
#   FM_SET     extra fmtrain arguments for every point, e.g. "--set flow.bucket_mb=4"
#   FMTRAIN    the binary (default ./fmtrain)
#
# Writes STUDY_DIR/rRtT/ (fmtrain's run directory: config.yaml, metrics.jsonl;
# rRtTbB/ for a point with a bucket size) and STUDY_DIR/rRtT.json (the point:
# study, ranks, threads, global batch, job, and how busy the node was).
# jobs/report.py turns a study directory into a CSV and a plot.
set -u
die() { echo "scaling_point.sh: error: $*" >&2; exit 2; }

study=${1:-}
case $study in strong | weak) ;; *) die "usage: scaling_point.sh strong|weak (inside a Slurm job array task)" ;; esac
read -r -a grid <<<"${GRID:-1x1 2x1 1x2}"
i=${SLURM_ARRAY_TASK_ID:-0}
[ "$i" -lt "${#grid[@]}" ] || die "array task $i but GRID has ${#grid[@]} points (${grid[*]}): submit with --array=0-$((${#grid[@]} - 1))%1"
point=${grid[$i]}
[[ $point =~ ^([0-9]+)x([0-9]+)(:([0-9]+))?$ ]] || die "grid point '$point' is not RANKSxTHREADS or RANKSxTHREADS:BUCKET_MB"
ranks=${BASH_REMATCH[1]} threads=${BASH_REMATCH[2]} bucket_mb=${BASH_REMATCH[4]}
cores=$((ranks * threads))
avail=${SLURM_CPUS_ON_NODE:-$(nproc)}
[ "$cores" -le "$avail" ] || die "point $point needs $cores cores, the allocation has $avail"

steps=${STEPS:-20}
if [ "$study" = strong ]; then batch=${BATCH:-32}; global=$batch
else batch=${BATCH:-16}; global=$((batch * cores)); fi
[ $((global % ranks)) -eq 0 ] || die "global batch $global does not split over $ranks ranks"

fmtrain=${FMTRAIN:-./fmtrain}
[ -x "$fmtrain" ] || die "no fmtrain binary at $fmtrain (run make, or set FMTRAIN)"
study_dir=${STUDY_DIR:-runs/scaling/$study-${SLURM_ARRAY_JOB_ID:-${SLURM_JOB_ID:-local}}}
run_dir=$study_dir/r${ranks}t${threads}${bucket_mb:+b$bucket_mb}
bucket_args=()
[ -n "$bucket_mb" ] && bucket_args=(--set flow.bucket_mb="$bucket_mb")
mkdir -p "$study_dir" || die "cannot create $study_dir"
# describe [EXIT]: the point, with what says how noisy its timing is on a
# shared node: the 1-minute load average before and after the run, and
# cpu_share = CPU seconds the ranks got / (wall seconds x cores of the point)
# (1 = they had their cores to themselves; counts start-up too)
load_start=$(cut -d' ' -f1 /proc/loadavg)
started=$(date -u +%FT%TZ)
t_start=$(date +%s.%N)
describe() {
    local load_end=null wall=null cpu=null share=null
    if [ -n "${1:-}" ]; then
        load_end=$(cut -d' ' -f1 /proc/loadavg)
        wall=$(awk -v a="$t_start" -v b="$(date +%s.%N)" 'BEGIN { printf "%.3f", b - a }')
        # bash `times`, second line: user and system time of the finished
        # children (mpirun and its ranks); run in this shell, not a subshell
        local tf
        tf=$(mktemp)
        times >"$tf"
        cpu=$(awk 'NR == 2 { n = 0; for (i = 1; i <= 2; i++) { split($i, t, /[ms]/); n += 60 * t[1] + t[2] } printf "%.3f", n }' "$tf")
        rm -f "$tf"
        share=$(awk -v c="$cpu" -v w="$wall" -v k="$cores" 'BEGIN { printf "%.3f", c / (w * k) }')
    fi
    cat >"$run_dir.json" <<EOF
{"study": "$study", "ranks": $ranks, "threads": $threads, "global_batch": $global, "steps": $steps,
 "job_id": "${SLURM_JOB_ID:-}", "array_job_id": "${SLURM_ARRAY_JOB_ID:-}", "array_task": $i,
 "node": "$(hostname -s)", "started": "$started", "exit": ${1:-null},
 "load_start": $load_start, "load_end": $load_end, "wall_s": $wall, "cpu_s": $cpu, "cpu_share": $share}
EOF
}
describe

export OMP_NUM_THREADS=$threads OMP_PROC_BIND=close OMP_PLACES=cores
if [ "$(id -u)" -eq 0 ]; then export OMPI_ALLOW_RUN_AS_ROOT=1 OMPI_ALLOW_RUN_AS_ROOT_CONFIRM=1; fi
echo "scaling_point.sh: $study point $point: $ranks ranks x $threads threads, global batch $global, $steps steps -> $run_dir"
# the allocation holds the whole node; the point takes ranks x threads cores of it
# shellcheck disable=SC2086 # FM_SET is a list of words
mpirun -np "$ranks" --map-by "slot:PE=$threads" --bind-to core --report-bindings \
    "$fmtrain" configs/scaling.yaml --out "$run_dir" --set flow.steps="$steps" --set flow.batch_size="$global" \
    --set run.threads="$threads" --set run.log_every=1 "${bucket_args[@]}" ${FM_SET:-}
rc=$?
describe "$rc"
exit $rc
