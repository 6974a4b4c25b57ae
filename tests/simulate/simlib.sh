# simlib.sh - the common head of tests/simulate/test_*.sh (sourced, not a test):
# tests/lib.sh for the suite "simulate", SIM (jobs/simulate), PLAT (the 100 Gb/s,
# 2 us cluster), and sim_ready, which SKIPs the suite when SimGrid's smpicc/smpirun
# are absent (scripts/setup.sh installs them) or builds the skeleton (case "build")
# and returns 1 when the test cannot go on.
source "$(dirname "${BASH_SOURCE[0]}")/../lib.sh" simulate
SIM=$ROOT/jobs/simulate
PLAT=$SIM/platforms/cluster-100g-2us.xml

sim_ready() {
  if ! command -v smpicc >/dev/null || ! command -v smpirun >/dev/null; then
    skip all "smpicc/smpirun not found: install libsimgrid-dev (scripts/setup.sh)"
    return 1
  fi
  if ! make -s -C "$SIM" >"$T/make.out" 2>&1; then
    fail build "make -C jobs/simulate failed"; show "$T/make.out"; return 1
  fi
  pass build
}
