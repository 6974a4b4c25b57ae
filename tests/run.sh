#!/usr/bin/env bash
# Run every C test binary, every Python parity test and every shell test;
# print one line per test case (PASS/FAIL/SKIP) and end with "N passed,
# N failed, N skipped". Exit 1 on any failure. A skipped case (a prerequisite
# this machine lacks) is never counted as passed. A program that crashes or
# exits non-zero without a FAIL line counts as a failure, and so does one that
# reports nothing.
set -u
cd "$(dirname "$0")/.."
BUILD=${BUILD:-build}
export FM_BUILD=$BUILD
export OMP_NUM_THREADS=${OMP_NUM_THREADS:-2}
PY=/usr/bin/python3
export OMPI_ALLOW_RUN_AS_ROOT=1 OMPI_ALLOW_RUN_AS_ROOT_CONFIRM=1
# sanitizer builds (make test SAN=1): full stacks, and Open MPI's own leaks suppressed
export ASAN_OPTIONS=${ASAN_OPTIONS:-fast_unwind_on_malloc=0}
export LSAN_OPTIONS=${LSAN_OPTIONS:-suppressions=$PWD/tests/harness/lsan-mpi.supp:fast_unwind_on_malloc=0}
pass=0 fail=0 skip=0
log=$(mktemp)
trap 'rm -f "$log"' EXIT

count() { # $1 = name, $2 = exit code; reads output in $log
  local p f s
  p=$(grep -c '^PASS ' "$log"); f=$(grep -c '^FAIL ' "$log"); s=$(grep -c '^SKIP ' "$log")
  grep -E '^(PASS|FAIL|SKIP) ' "$log"
  if [ "$2" -ne 0 ] && [ "$f" -eq 0 ]; then
    echo "FAIL $1 (exit code $2, no result line)"; f=1
  fi
  if [ "$p" -eq 0 ] && [ "$f" -eq 0 ] && [ "$s" -eq 0 ]; then
    echo "FAIL $1 (no tests ran)"; f=1
  fi
  pass=$((pass + p)); fail=$((fail + f)); skip=$((skip + s))
  if [ "$f" -ne 0 ]; then sed -e '/^PASS /d' -e '/^SKIP /d' -e 's/^/    /' "$log" | tail -n 40; fi
}

for t in $(find "$BUILD/tests" -type f -name 'test_*' -perm -u+x | sort); do
  "$t" >"$log" 2>&1; count "$t" $?
done
for t in $(ls tests/*/test_*.py tests/*/test_*.sh 2>/dev/null | sort); do
  case "$t" in
    *.py) $PY "$t" >"$log" 2>&1 ;;
    *.sh) bash "$t" >"$log" 2>&1 ;;
  esac
  count "$t" $?
done
echo "$pass passed, $fail failed, $skip skipped"
[ "$fail" -eq 0 ]
