#!/bin/bash
# slurm/train.sh - run fmtrain as a Slurm batch job: hybrid MPI x OpenMP, one
# run directory per job id, checkpoint-and-requeue on preemption.
#
#   sbatch slurm/train.sh [CONFIG] [fmtrain args...]     (CONFIG default configs/ldm.yaml)
#   sbatch -N 4 --ntasks-per-node=8 --cpus-per-task=6 -t 4:00:00 slurm/train.sh configs/ldm.yaml --set flow.steps=20000
#
# Submit from the repository root (relative paths are taken from the submit
# directory). Command-line sbatch options override the #SBATCH lines below.
#
# The run directory is runs/<config stem>-<job id> (e.g. runs/ldm-1234), unless
# the arguments hold --out DIR. A requeued job keeps its job id, so it runs the
# same command into the same run directory and fmtrain resumes every stage from
# its newest checkpoint.
#
# Preemption: Slurm sends SIGUSR1 to this batch shell 120 s before the time
# limit (--signal=B:USR1@120; `scancel --signal=USR1 --batch JOBID` does the
# same by hand). The shell forwards it to the launcher (mpirun and srun both pass
# SIGUSR1 on to every rank); the ranks agree at the next step boundary, rank 0
# writes a checkpoint, and fmtrain exits 75. On 75 this script runs
# `scontrol requeue $SLURM_JOB_ID`: the job goes back to the queue with the same
# id and, when it starts again, resumes. A SIGTERM to this shell is forwarded as
# SIGUSR1 too (mpirun would answer SIGTERM by killing the ranks 1 s later).
#
# Environment knobs (all optional):
#   FMTRAIN      the binary (default: ./fmtrain in the submit directory, else fmtrain on PATH)
#   FM_LAUNCHER  mpirun (default) or srun (srun --mpi=pmix)
#   FM_NO_REQUEUE=1  on exit 75 do not requeue; the job ends with exit code 75
#   FM_MAX_STALLED=N requeue at most N times in a row without a new checkpoint
#                    (default 3): a job that keeps being preempted before it
#                    writes anything new is not requeued forever. The count is
#                    kept in RUN_DIR/requeue.state.
#   FM_SITE_SETUP=/path/script  sourced (bash) before anything else runs: the
#                    place for a site's `module load openmpi onednn ...`, a
#                    virtual environment or scratch paths. It may set FMTRAIN,
#                    FM_LAUNCHER or OMP_* too. A missing file or a failing script
#                    ends the job with exit 2. (sbatch passes the variable on:
#                    FM_SITE_SETUP=$HOME/site.sh sbatch slurm/train.sh ...)
#
# Rank layout (--ntasks-per-node x --cpus-per-task = the node's cores):
#   - one rank per NUMA domain, or per L3 cache domain where several share one
#     NUMA node (AMD EPYC: one per CCD/CCX), so a rank's threads share its
#     memory and cache; `lscpu | grep -E "NUMA|L3"` shows them. E.g. 2 sockets x
#     32 cores, 4 NUMA domains: --ntasks-per-node=4 --cpus-per-task=16.
#   - batch sizes in the config are global: each rank trains on batch / ranks
#     samples a step, which must be a whole number (fmtrain checks it and says
#     so). More ranks at the same global batch give each rank less work per
#     step, with the same gradient allreduce to pay: keep several samples per
#     thread, or raise the batch with the ranks (jobs/weak.sbatch does).
#   - --hint=nomultithread below counts cores, not hardware threads; OpenMP
#     then runs one thread per core (OMP_PLACES=cores).
#
# Every #SBATCH line (explained in the README too):
#   --job-name: the name squeue shows, and %x in the log file name.
#SBATCH --job-name=fmtrain
#   --nodes: one node by default (this machine); -N 4 on the command line runs 4 nodes.
#SBATCH --nodes=1
#   --ntasks-per-node: MPI ranks per node (data-parallel replicas). Ranks x
#   threads should equal the cores of a node; on a 2-core machine 2 x 1.
#SBATCH --ntasks-per-node=2
#   --cpus-per-task: cores per rank; becomes OMP_NUM_THREADS (OpenMP + oneDNN
#   threads of each rank), and each rank is bound to that many cores.
#SBATCH --cpus-per-task=1
#   --hint=nomultithread: on nodes with SMT (hyper-threading) a "CPU" is a
#   hardware thread, so --cpus-per-task=8 would give a rank 4 cores; with this
#   hint Slurm hands out whole cores and uses one thread of each. No effect on
#   nodes without SMT.
#SBATCH --hint=nomultithread
#   --mem: memory per node. A 1-rank run of configs/ldm.yaml peaks at 1.4 GB
#   RSS, 0.3 GB of it the data, which is held once per node: 4G covers the 2
#   ranks here; add about 1.1 GB per further rank on a node (or --mem-per-cpu).
#SBATCH --mem=4G
#   --account, --partition: site-specific (the project to charge, the queue);
#   remove one "#" and fill in, or pass them to sbatch (-A, -p).
##SBATCH --account=PROJECT
##SBATCH --partition=PARTITION
#   --time: wall-clock limit. Required for --signal to fire (the signal is
#   timed from the end of the job). Long runs span several requeued jobs.
#SBATCH --time=01:00:00
#   --signal=B:USR1@120: 120 s before the limit, send SIGUSR1 to the batch
#   shell only (B:); this script forwards it to the ranks. Slurm may send it up
#   to 60 s earlier than asked. A checkpoint takes far less than 120 s.
#SBATCH --signal=B:USR1@120
#   --requeue: allow this job to be requeued (by `scontrol requeue` below, or by
#   Slurm after a node failure or preemption); it keeps its job id.
#SBATCH --requeue
#   --open-mode=append: a requeued job appends to its log instead of truncating
#   it, so the log holds every attempt.
#SBATCH --open-mode=append
#   --output: the log, slurm-<job name>-<job id>.out in the submit directory.
#SBATCH --output=slurm-%x-%j.out
set -u

log() { echo "train.sh: [$(date +%T)] $*"; }
die() { echo "train.sh: error: $*" >&2; exit 2; }

# SIGUSR1 (Slurm's warning, or scancel --signal=USR1 --batch) and SIGTERM are
# forwarded to the launcher as SIGUSR1. Bash runs a trap only between commands,
# so the launcher runs in the background while the script waits in short slices.
pid=
stop=
# shellcheck disable=SC2317 # called from the traps
forward() {
    log "got SIG$1: asking the ranks to checkpoint and stop"
    stop=1
    [ -n "$pid" ] && kill -USR1 "$pid" 2>/dev/null
}
trap 'forward USR1' USR1
trap 'forward TERM' TERM

[ -n "${SLURM_JOB_ID:-}" ] || die "not inside a Slurm job: submit with sbatch slurm/train.sh [CONFIG] [args...]"

# the site hook, before anything looks for binaries (module load may provide them)
if [ -n "${FM_SITE_SETUP:-}" ]; then
    if [ ! -f "$FM_SITE_SETUP" ] || [ ! -r "$FM_SITE_SETUP" ]; then
        die "FM_SITE_SETUP=$FM_SITE_SETUP: no such readable file (the site hook sourced before the run)"
    fi
    log "sourcing the site hook $FM_SITE_SETUP"
    set +u # module systems and site scripts often read unset variables
    # shellcheck disable=SC1090 # the site's own script
    . "$FM_SITE_SETUP"
    hook_rc=$?
    set -u
    [ "$hook_rc" -eq 0 ] || die "the site hook $FM_SITE_SETUP failed with exit code $hook_rc"
fi
# Slurm starts this script in the submit directory (or sbatch --chdir)

# arguments: an optional CONFIG (first argument not starting with -), then fmtrain args
config=configs/ldm.yaml
if [ $# -gt 0 ] && [ "${1#-}" = "$1" ]; then config=$1; shift; fi
if [ ! -f "$config" ] && [ -f "${SLURM_SUBMIT_DIR:-.}/$config" ]; then config=$SLURM_SUBMIT_DIR/$config; fi
[ -f "$config" ] || die "config $config not found (in $PWD or ${SLURM_SUBMIT_DIR:-.})"

if [ -n "${FMTRAIN:-}" ]; then fmtrain=$FMTRAIN
elif [ -x ./fmtrain ]; then fmtrain=$PWD/fmtrain
elif [ -x "${SLURM_SUBMIT_DIR:-.}/fmtrain" ]; then fmtrain=$SLURM_SUBMIT_DIR/fmtrain
elif command -v fmtrain >/dev/null; then fmtrain=$(command -v fmtrain)
else die "no fmtrain binary: run make in $PWD, or set FMTRAIN"
fi

# run directory: --out DIR from the arguments, else runs/<config stem>-<job id>
run_dir=
prev=
for a in "$@"; do
    [ "$prev" = --out ] && run_dir=$a
    case $a in --out=*) run_dir=${a#--out=} ;; esac
    prev=$a
done
out_args=()
if [ -z "$run_dir" ]; then
    stem=$(basename "$config"); stem=${stem%.*}
    run_dir=runs/$stem-$SLURM_JOB_ID
    out_args=(--out "$run_dir")
fi

# hybrid MPI x OpenMP: one OpenMP thread per allocated core of the rank, kept
# on those cores (close = neighbouring cores, one place per core)
threads=${SLURM_CPUS_PER_TASK:-1}
ntasks=${SLURM_NTASKS:-${SLURM_NPROCS:-1}}
export OMP_NUM_THREADS=$threads OMP_PROC_BIND=close OMP_PLACES=cores
# Open MPI refuses to start as root unless told it is intended
if [ "$(id -u)" -eq 0 ]; then export OMPI_ALLOW_RUN_AS_ROOT=1 OMPI_ALLOW_RUN_AS_ROOT_CONFIRM=1; fi

launcher=${FM_LAUNCHER:-mpirun}
case $launcher in
mpirun)
    # one slot per task from the Slurm allocation, PE=threads cores per rank,
    # each rank bound to its cores
    launch=(mpirun -np "$ntasks" --map-by "slot:PE=$threads" --bind-to core --report-bindings) ;;
srun)
    # srun does not inherit --cpus-per-task from sbatch (Slurm >= 22.05): pass it.
    # --kill-on-bad-exit=1: a rank that dies (or exits non-zero) ends the whole
    # step at once, instead of leaving the others waiting for it (mpirun does
    # this by default)
    launch=(srun --mpi=pmix --cpus-per-task="$threads" --cpu-bind=cores --kill-on-bad-exit=1) ;;
*) die "FM_LAUNCHER must be mpirun or srun, got $launcher" ;;
esac

log "job $SLURM_JOB_ID (attempt $((${SLURM_RESTART_COUNT:-0} + 1))) on ${SLURM_JOB_NODELIST:-?}:" \
    "$ntasks ranks x $threads threads, $launcher"
log "run directory $run_dir"
log "$fmtrain $config ${out_args[*]} $*"

# progress_made: 0 (true) when the set of checkpoints differs from the one
# recorded at the previous preemption; counts the stalled attempts in
# RUN_DIR/requeue.state ("<checkpoint set hash> <stalled count>")
max_stalled=${FM_MAX_STALLED:-3}
progress_made() {
    local state=$run_dir/requeue.state newest prev_ckpt prev_n
    mkdir -p "$run_dir" 2>/dev/null
    newest=$(ls -1 "$run_dir"/ckpt 2>/dev/null | md5sum | cut -c1-16) # the set of checkpoints
    read -r prev_ckpt prev_n 2>/dev/null <"$state" || { prev_ckpt=; prev_n=0; }
    if [ "$newest" = "$prev_ckpt" ]; then stalled=$((prev_n + 1)); else stalled=0; fi
    echo "$newest $stalled" >"$state" 2>/dev/null
    [ "$stalled" -lt "$max_stalled" ]
}

what="checkpoint written"
if [ -n "$stop" ]; then
    # stopped before fmtrain started: nothing to checkpoint, just requeue
    rc=75 what="before fmtrain started"
else
    "${launch[@]}" "$fmtrain" "$config" "${out_args[@]}" "$@" &
    pid=$!
    # wait in 1 s slices (a trap runs between them); once a stop is asked for,
    # repeat it every 15 s: a signal that reaches mpirun before it has started
    # the ranks is not passed on
    waited=0
    while kill -0 "$pid" 2>/dev/null; do
        sleep 1 & wait $!
        if [ -n "$stop" ]; then
            waited=$((waited + 1))
            [ $((waited % 15)) -eq 0 ] && kill -USR1 "$pid" 2>/dev/null
        fi
    done
    wait "$pid"; rc=$?
fi

case $rc in
0)  log "done: $run_dir" ;;
75)
    if [ "${FM_NO_REQUEUE:-0}" = 1 ]; then
        log "preempted ($what); not requeued (FM_NO_REQUEUE=1)"
    elif ! progress_made; then
        log "preempted ($what) for the $stalled. time in a row without a new checkpoint in $run_dir/ckpt;" \
            "not requeued (FM_MAX_STALLED=$max_stalled): look at the log, then resubmit with --out $run_dir"
    else
        log "preempted ($what); requeueing job $SLURM_JOB_ID, it will resume in $run_dir"
        # the requeue ends this attempt of the job with a SIGTERM to this shell
        trap 'exit 75' TERM USR1
        scontrol requeue "$SLURM_JOB_ID" ||
            log "requeue failed; resubmit with --out $run_dir to resume"
    fi ;;
*)  log "fmtrain failed with exit code $rc" ;;
esac
exit "$rc"
