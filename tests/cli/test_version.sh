#!/usr/bin/env bash
# test_version.sh - `fmtrain --version`: the git revision baked in by the
# Makefile (a commit of this repository), compiler, the oneDNN version of the
# installed headers and the ISA oneDNN really runs (DNNL_MAX_CPU_ISA=AVX2 must
# show avx2), the MPI library, OpenMP threads and binding from the
# environment; and the same block at the top of a run's log, once (rank 0)
# under 2 ranks; and the compiler flags each spelling of make ARCH=... gives
# (make -n, nothing built). Env: FMTRAIN.
source "$(dirname "$0")/../lib.sh" cli version_
H=/usr/include/oneapi/dnnl/dnnl_version.h

# make ARCH=...: the flags each spelling compiles with, and the flags --version will report
ok=1
for spec in "native|-march=native" "generic|-march=x86-64 -mtune=generic" "x86-64-v3|-march=x86-64-v3" \
            "-march=x86-64-v2 -mtune=znver3|-march=x86-64-v2 -mtune=znver3"; do
  arch=${spec%%|*} want=${spec#*|}
  make -C "$ROOT" -n V=1 BUILD="$T/b" ARCH="$arch" "$T/b/src/cli/version.o" >"$T/make.out" 2>&1
  if ! grep -q -- "-O2 $want -fno-math-errno .*-c -o $T/b/src/cli/version.o" "$T/make.out" ||
     ! grep -q "FM_BUILD_FLAGS \"%s\".*'-O2 $want'" "$T/make.out"; then
    fail arch "ARCH=$arch does not compile with $want"; show "$T/make.out" 4; ok=0
  fi
done
[ $ok -eq 1 ] && pass arch

# version ENV... : fmtrain --version under ENV, stdout in $T/v.out, status in rc
version() { env "$@" "$FMTRAIN" --version >"$T/v.out" 2>"$T/v.err"; rc=$?; }

version OMP_NUM_THREADS=3 OMP_PROC_BIND=spread OMP_PLACES=cores
rev=$(sed -n 's/^fmtrain [0-9.]* (git \([0-9a-f]*\)\(-dirty\)\{0,1\})$/\1/p' "$T/v.out")
if [ $rc -ne 0 ] || [ -z "$rev" ]; then fail git_revision "expected exit 0 and 'fmtrain X.Y.Z (git REV[-dirty])'"; show "$T/v.out"
elif ! git -C "$ROOT" cat-file -e "$rev^{commit}" 2>/dev/null; then fail git_revision "$rev is not a commit of $ROOT"
else pass git_revision; fi

if grep -q "^  compiler: \(gcc\|clang\) [0-9].*, -O" "$T/v.out"; then pass compiler
else fail compiler "no compiler line with version and flags"; show "$T/v.out"; fi

want=$(awk '/define DNNL_VERSION_(MAJOR|MINOR|PATCH)/ {printf "%s%s", sep, $3; sep="."}' "$H")
if grep -q "^  oneDNN:   $want.*, ISA [a-z0-9_]*$" "$T/v.out" && ! grep -q "ISA unknown" "$T/v.out"; then pass onednn
else fail onednn "expected oneDNN $want (from $H) and its ISA"; show "$T/v.out"; fi

version DNNL_MAX_CPU_ISA=AVX2
if grep -q "ISA avx2 (DNNL_MAX_CPU_ISA=AVX2)$" "$T/v.out"; then pass effective_isa
else fail effective_isa "DNNL_MAX_CPU_ISA=AVX2 does not show ISA avx2"; show "$T/v.out"; fi

version OMP_NUM_THREADS=3 OMP_PROC_BIND=spread OMP_PLACES=cores
mpi_ver=$(mpirun --version 2>/dev/null | sed -n 's/.*(Open MPI) \([0-9.]*\).*/\1/p')
if grep -q "^  MPI:      Open MPI v$mpi_ver (MPI [0-9].[0-9])$" "$T/v.out"; then pass mpi
else fail mpi "expected Open MPI v$mpi_ver"; show "$T/v.out"; fi

if grep -q "^  OpenMP:   3 threads, OMP_PROC_BIND=spread (bind spread), OMP_PLACES=cores ([0-9]* places); CPUs: [0-9]* CPU" "$T/v.out"
then pass openmp
else fail openmp "threads and binding do not follow the environment"; show "$T/v.out"; fi

# the top of a run's log: the same block (here a dry run), once, with the rank count
(cd "$T" && mpi 2 "$FMTRAIN" "$TINY" --out "$T/run" --dry-run >/dev/null 2>"$T/log.err")
rc=$?
head -n 4 "$T/log.err" | sed -E -e 's/^[0-9T:.-]+Z //' -e 's/, 2 ranks$//' >"$T/got" # without the time stamps # the OpenMP line is rank 0's own binding
if [ $rc -ne 0 ]; then fail run_log "the dry run failed (exit $rc)"; show "$T/log.err"
elif ! sed -n 4p "$T/log.err" | grep -q ', 2 ranks$'; then fail run_log "the MPI line lacks ', 2 ranks'"; show "$T/log.err"
elif [ "$(grep -c '\(^\|Z \)fmtrain: fmtrain ' "$T/log.err")" -ne 1 ]; then fail run_log "the block is not logged exactly once"
elif ! "$FMTRAIN" --version | sed 's/^/fmtrain: /' | head -n 4 | diff - "$T/got" >/dev/null
then fail run_log "the log does not start with the --version block"; show "$T/log.err"
else pass run_log; fi

finish
