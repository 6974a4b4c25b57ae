# shellcheck shell=bash
# lib.sh - what every shell test (tests/*/test_*.sh) shares. Source it first,
# naming the suite (the prefix of every result line) and, optionally, a
# prefix of every case name:
#
#   source "$(dirname "$0")/../lib.sh" SUITE [CASE_PREFIX]
#
# It sets ROOT (the repository), FMTRAIN (default $ROOT/fmtrain), BUILD (the
# build directory, absolute; default $FM_BUILD, else build), PY, TINY
# (configs/tiny.yaml) and T (a fresh temporary directory, removed at exit
# unless FM_TEST_KEEP is set); exports OMP_NUM_THREADS (default 2), the
# variables Open MPI needs to run as root, and the sanitizer options of
# tests/run.sh (Open MPI's own leaks suppressed).
#
#   pass NAME                print "PASS SUITE/CASE_PREFIXNAME"
#   fail NAME WHY            print "FAIL SUITE/CASE_PREFIXNAME: WHY" (counted)
#   skip NAME WHY            print "SKIP SUITE/CASE_PREFIXNAME: WHY": a prerequisite of
#                            this machine is missing; never counted as passed. With
#                            FM_TEST_STRICT=1 (.ci/run sets it) a FAIL instead: CI
#                            provides every package, root and mounts, so a skip
#                            there is a missing set-up, not a passed case
#   skip_hw NAME WHY         the same for a prerequisite no set-up can provide (the
#                            CPU's features or count): SKIP even when strict
#   show FILE [N]            the last N (8) lines of FILE, indented
#   at_exit CMD              run CMD (eval) at exit, before T is removed
#   mpi NP CMD...            CMD under mpirun -np NP: 1 OpenMP thread a rank,
#                            unbound, oversubscribed (a 1-core machine still
#                            runs -np 2); $MPI_TIMEOUT s at most when set
#   run NAME NP ARGS...      fmtrain ARGS (NP > 1: under mpi) in the empty
#                            working directory $T/cwd-NAME, for at most
#                            $RUN_TIMEOUT s (300; the caller may change it);
#                            stdout and stderr in $T/NAME.out and
#                            $T/NAME.err; pass or fail run_NAME
#   finish                   print the summary; the status of the test file
#   prerequisites NAME WHY CMD...
#                            end the test file here unless it runs as root (WHY:
#                            what root is for) with every CMD on PATH (skip NAME)
#                            and $FMTRAIN is built (fail NAME)
#
# Result lines start with PASS, FAIL or SKIP and nothing else does (other
# output is indented): tests/run.sh counts them.
set -u
ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
SUITE=${1:?usage: source tests/lib.sh SUITE [CASE_PREFIX]}
CASE_PREFIX=${2:-}
FMTRAIN=${FMTRAIN:-$ROOT/fmtrain}
BUILD=${FM_BUILD:-build}
case "$BUILD" in /*) ;; *) BUILD=$ROOT/$BUILD ;; esac
PY=/usr/bin/python3
TINY=$ROOT/configs/tiny.yaml
RUN_TIMEOUT=300
export OMP_NUM_THREADS=${OMP_NUM_THREADS:-2}
export OMPI_ALLOW_RUN_AS_ROOT=1 OMPI_ALLOW_RUN_AS_ROOT_CONFIRM=1
export ASAN_OPTIONS=${ASAN_OPTIONS:-fast_unwind_on_malloc=0}
export LSAN_OPTIONS=${LSAN_OPTIONS:-suppressions=$ROOT/tests/harness/lsan-mpi.supp:fast_unwind_on_malloc=0}

T=$(mktemp -d "/tmp/fm-$(echo "$SUITE" | tr / -).XXXXXX")
T0=$(date +%s)
npass=0 nfail=0 nskip=0
AT_EXIT=()
_lib_exit() {
  local c
  for c in "${AT_EXIT[@]}"; do eval "$c" >/dev/null 2>&1; done
  if [ -n "${FM_TEST_KEEP:-}" ]; then echo "    keeping $T" >&2; else rm -rf "$T"; fi
}
trap _lib_exit EXIT
trap 'exit 130' INT TERM
at_exit() { AT_EXIT+=("$1"); }

pass() { echo "PASS $SUITE/$CASE_PREFIX$1"; npass=$((npass + 1)); }
fail() { echo "FAIL $SUITE/$CASE_PREFIX$1: $2"; nfail=$((nfail + 1)); }
skip() {
  if [ "${FM_TEST_STRICT:-0}" = 1 ]; then
    fail "$1" "skipped in strict mode (FM_TEST_STRICT=1, CI): $2"
  else
    echo "SKIP $SUITE/$CASE_PREFIX$1: $2"; nskip=$((nskip + 1))
  fi
}
skip_hw() { echo "SKIP $SUITE/$CASE_PREFIX$1: $2"; nskip=$((nskip + 1)); }
show() { tail -n "${2:-8}" "$1" 2>/dev/null | sed 's/^/    /'; }

mpi() {
  local np=$1; shift
  local limit=()
  [ -n "${MPI_TIMEOUT:-}" ] && limit=(timeout -k 5 "$MPI_TIMEOUT")
  OMP_NUM_THREADS=1 "${limit[@]}" mpirun --bind-to none --oversubscribe -np "$np" -x OMP_NUM_THREADS "$@"
}

run() {
  local name=$1 np=$2; shift 2
  mkdir -p "$T/cwd-$name"
  if [ "$np" -eq 1 ]; then
    (cd "$T/cwd-$name" && timeout "$RUN_TIMEOUT" "$FMTRAIN" "$@") >"$T/$name.out" 2>"$T/$name.err"
  else
    (cd "$T/cwd-$name" && MPI_TIMEOUT=$RUN_TIMEOUT mpi "$np" "$FMTRAIN" "$@") >"$T/$name.out" 2>"$T/$name.err"
  fi
  local rc=$?
  if [ $rc -ne 0 ]; then
    fail "run_$name" "exit $rc"; show "$T/$name.err" 5; return 1
  fi
  pass "run_$name"
}

# tiny_latents: the VAE and encode stages of configs/tiny.yaml into $T/base (log
# $T/base.log), the latents the flow-stage tests copy; FAIL latents and status 1 if they fail
tiny_latents() {
  timeout 300 "$FMTRAIN" "$TINY" --out "$T/base" --set "run.stages=[vae,encode]" >"$T/base.log" 2>&1 && return 0
  fail latents "the VAE and encode stages failed"; show "$T/base.log" 5; return 1
}

# run_flow NAME NP ARGS...: the flow stage on a copy of $T/base (tiny_latents) in
# $T/NAME (kept if it exists), with the caller's FLOW=(--set ...) array and ARGS,
# under mpirun -np NP; the log in $T/NAME.log
run_flow() {
  local name=$1 np=$2; shift 2
  [ -d "$T/$name" ] || cp -r "$T/base" "$T/$name"
  MPI_TIMEOUT=600 mpi "$np" "$FMTRAIN" "$TINY" --out "$T/$name" "${FLOW[@]}" "$@" >"$T/$name.log" 2>&1
}

finish() {
  echo "    $SUITE: $npass passed, $nfail failed, $nskip skipped ($(($(date +%s) - T0))s)"
  [ "$nfail" -eq 0 ]
}

prerequisites() {
  local name=$1 why= b
  [ "$(id -u)" -eq 0 ] || why="needs root ($2)"
  shift 2
  for b in "$@"; do command -v "$b" >/dev/null || why="$why $b missing (scripts/setup.sh installs it)"; done
  if [ -n "$why" ]; then skip "$name" "${why# }"; finish; exit; fi
  if [ ! -x "$FMTRAIN" ]; then fail "$name" "no fmtrain binary at $FMTRAIN (run make)"; finish; exit; fi
}
