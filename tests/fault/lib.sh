# shellcheck shell=bash
# lib.sh - shared set-up of the fault tests (sourced by tests/fault/test_*.sh).
#
# Every test trains only the flow stage of configs/tiny.yaml, shrunk (256
# images, 1 OpenMP thread per rank, no sample grids, a metrics line per step),
# on the latents of a 2-step VAE made once per test file by make_base. What a
# test checks is the checkpoint/resume machinery, not the model.
#
#   pass NAME / fail NAME WHY   print PASS/FAIL fault/NAME (fail counts)
#   make_base                   $BASE = a run dir with vae + encode done
#   new_run DIR                 DIR = a copy of $BASE
#   flow DIR ARGS...            fmtrain (1 rank), flow stage, into DIR
#   flow_mpi N DIR ARGS...      the same under mpirun -np N
#   wait_step DIR N SECS        wait until DIR/metrics.jsonl has flow step >= N
#   procs PID NAME              descendants of PID named NAME (rank pids)
#   newest DIR                  the newest flow checkpoint of run DIR
#   finish                      exit status of the test file
set -u
ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)
FMTRAIN=${FMTRAIN:-$ROOT/fmtrain}
FMNAME=$(basename "$FMTRAIN" | cut -c1-15) # its command name, as ps shows it
PY=/usr/bin/python3
CK="$PY $ROOT/tests/fault/ckpt.py"
TINY=$ROOT/configs/tiny.yaml
export OMP_NUM_THREADS=1 # 2 ranks x 1 thread on 2 cores; never oversubscribed
export OMPI_ALLOW_RUN_AS_ROOT=1 OMPI_ALLOW_RUN_AS_ROOT_CONFIRM=1
export OMPI_MCA_rmaps_base_oversubscribe=1 # a 1-core machine still runs -np 2
T=$(mktemp -d /tmp/fmfault.XXXXXX)
CLEANUP=() # commands run at exit (unmounts), before the directory is removed
cleanup() {
  local c
  for c in "${CLEANUP[@]}"; do eval "$c" >/dev/null 2>&1; done
  rm -rf "$T"
}
trap cleanup EXIT
[ -n "${FAULT_KEEP:-}" ] && trap - EXIT && echo "keeping $T" >&2
nfail=0
SUITE=fault
pass() { echo "PASS $SUITE/$1"; }
fail() {
  echo "FAIL $SUITE/$1: $2"
  nfail=$((nfail + 1))
}
# show LOG: the last lines of a log, indented (after a FAIL)
show() { tail -n "${2:-8}" "$1" 2>/dev/null | sed 's/^/    /'; }

# The overrides of every flow run (the tests add their own after these).
SETS=(--set data.train_limit=256 --set data.test_limit=100 --set run.stages=[flow] --set flow.sample_every=0
      --set run.log_every=1)

make_base() {
  BASE=$T/base
  "$FMTRAIN" "$TINY" --out "$BASE" --set data.train_limit=256 --set data.test_limit=100 \
    --set run.stages=[vae,encode] --set vae.steps=2 --set vae.warmup=1 >"$T/base.log" 2>&1 || {
    echo "FAIL $SUITE/setup: the base run (vae + encode) failed"; show "$T/base.log"; exit 1; }
}
new_run() { rm -rf "$1" && cp -r "$BASE" "$1" && rm -f "$1/metrics.jsonl"; }
# timeout: a hung run is a failure (exit 124), never a hung suite
flow() { local d=$1; shift; timeout -k 5 120 "$FMTRAIN" "$TINY" --out "$d" "${SETS[@]}" "$@"; }
flow_mpi() {
  local n=$1 d=$2; shift 2
  timeout -k 5 120 mpirun -np "$n" "$FMTRAIN" "$TINY" --out "$d" "${SETS[@]}" "$@"
}
wait_step() {
  local d=$1 n=$2 secs=$3 i
  for ((i = 0; i < secs * 100; i++)); do
    if [ -f "$d/metrics.jsonl" ] && tail -n 1 "$d/metrics.jsonl" | grep -q '"stage":"flow"' &&
      [ "$(tail -n 1 "$d/metrics.jsonl" | sed 's/.*"step":\([0-9]*\).*/\1/')" -ge "$n" ]; then
      return 0
    fi
    sleep 0.01
  done
  return 1
}
# procs PID NAME: the descendants of PID whose command is NAME (e.g. the
# fmtrain ranks under a backgrounded `flow_mpi`), one pid a line
procs() {
  local c
  for c in $(ps -o pid= --ppid "$1"); do
    [ "$(ps -o comm= -p "$c")" = "$2" ] && echo "$c"
    procs "$c" "$2"
  done
}
newest() { ls "$1"/ckpt/flow-*.safetensors 2>/dev/null | tail -n 1; }
ckpt_step() { basename "$1" .safetensors | sed 's/^flow-0*//; s/^$/0/'; }
finish() { [ "$nfail" -eq 0 ]; }
