#!/usr/bin/env bash
# test_skips.sh - a case that cannot run is a SKIP, never a PASS, and in CI
# (FM_TEST_STRICT=1, set by .ci/run) it is a FAIL unless no set-up can
# provide what it lacks (skip_hw: the CPU).
#   strict_skip_fails     skip under FM_TEST_STRICT=1 prints FAIL and counts it
#   skip_counts_apart     skip without it prints SKIP, counted in nskip only
#   skip_hw_stays_skip    skip_hw prints SKIP even when strict
#   no_pass_for_skipped   no shell test reports a skipped case with pass
#   ci_is_strict          .ci/run exports FM_TEST_STRICT=1
source "$(dirname "$0")/../lib.sh" harness

# out STRICT FN: the result lines and counters of one call of FN in a fresh shell
out() {
  FM_TEST_STRICT=$1 bash -c "source '$ROOT/tests/lib.sh' probe; $2 case 'why'; "'echo "counts $npass $nfail $nskip"' 2>&1
}

o=$(out 1 skip)
if echo "$o" | grep -q '^FAIL probe/case: skipped in strict mode' && echo "$o" | grep -q '^counts 0 1 0$'; then
  pass strict_skip_fails
else fail strict_skip_fails "got: $(echo "$o" | tr '\n' '|')"; fi

o=$(out 0 skip)
if echo "$o" | grep -q '^SKIP probe/case: why$' && echo "$o" | grep -q '^counts 0 0 1$'; then pass skip_counts_apart
else fail skip_counts_apart "got: $(echo "$o" | tr '\n' '|')"; fi

o=$(out 1 skip_hw)
if echo "$o" | grep -q '^SKIP probe/case: why$' && echo "$o" | grep -q '^counts 0 0 1$'; then pass skip_hw_stays_skip
else fail skip_hw_stays_skip "got: $(echo "$o" | tr '\n' '|')"; fi

bad=$(grep -nE '(^|[^_a-z])pass [^#]*\((skip|not run|cannot run|unavailable)' "$ROOT"/tests/*/test_*.sh)
if [ -z "$bad" ]; then pass no_pass_for_skipped
else fail no_pass_for_skipped "a skipped case reported as passed: $bad"; fi

if grep -q '^export FM_TEST_STRICT=1' "$ROOT/.ci/run"; then pass ci_is_strict
else fail ci_is_strict ".ci/run does not export FM_TEST_STRICT=1"; fi

finish
