#!/usr/bin/env bash
# test_alpha_beta.sh - the SimGrid skeleton (jobs/simulate) follows the
# alpha-beta model and replays a schedule.
#   1. alpha_beta_4, alpha_beta_16: the ring allreduce of 12 MB on 4 and 16
#      simulated ranks (one a node, alpha 2 us, 12.5 GB/s) is within 10 % of
#      2(p-1)/p n/B + 2(p-1) alpha (jobs/simulate/alpha_beta.sh).
#   2. binomial_4: the old engine's libnbc binomial reduce + broadcast of
#      n bytes on 4 ranks is within 10 % of 5 n/B + 4 alpha (reduce: 1->0 and
#      3->2, then 2->0; broadcast: 0->1 and 0->2 sharing rank 0's link, then 2->3).
#   3. replay_*: schedule-tiny.json (fmtrain --dump-schedule, tiny U-Net, 2
#      ranks, 9 buckets) replays on 8 ranks with the ring, the ring with ZeRO-1
#      and the binomial engine: one JSON line, step >= forward + backward.
#   4. bad_args: --zero with the binomial engine is refused with a message.
# SKIP when SimGrid's smpicc/smpirun are absent (scripts/setup.sh installs them).
source "$(dirname "$0")/simlib.sh"
sim_ready || { finish; exit; }

"$SIM/alpha_beta.sh" 4 16 >"$T/ab.out" 2>"$T/ab.err"
for p in 4 16; do
  row=$(grep "^| $p |" "$T/ab.out")
  if [ -z "$row" ]; then fail "alpha_beta_$p" "no row"; show "$T/ab.err"; continue; fi
  ratio=$(echo "$row" | awk -F'|' '{gsub(/ /, "", $6); print $6}')
  if awk -v r="$ratio" 'BEGIN { exit !(r >= 0.9 && r <= 1.1) }'; then pass "alpha_beta_$p"
  else fail "alpha_beta_$p" "simulated / model = $ratio"; fi
  echo "    $row"
done

if "$SIM/sim.sh" "$PLAT" 4 -- --synthetic 3000000 --engine binomial --steps 0 >"$T/bin.out" 2>"$T/bin.err"; then
  $PY - "$T/bin.out" <<'PY' && pass binomial_4 || fail binomial_4 "off the binomial model"
import json, sys
sim = json.loads(open(sys.argv[1]).read().strip().splitlines()[-1])["comm_alone_ms"]
model = 1e3 * (5 * 12e6 / 12.5e9 + 4 * 2e-6)
print(f"    binomial, 4 ranks: simulated {sim:.4f} ms, model {model:.4f} ms")
sys.exit(0 if abs(sim / model - 1) <= 0.1 else 1)
PY
else
  fail binomial_4 "sim.sh failed"; show "$T/bin.err"
fi

for v in ring zero binomial; do
  args=(--engine ring)
  [ $v = zero ] && args=(--engine ring --zero)
  [ $v = binomial ] && args=(--engine binomial)
  if ! "$SIM/sim.sh" "$PLAT" 8 -- --schedule "$ROOT/tests/simulate/schedule-tiny.json" --steps 3 "${args[@]}" \
       >"$T/$v.out" 2>"$T/$v.err"; then
    fail "replay_$v" "sim.sh failed"; show "$T/$v.err"; continue
  fi
  if $PY - "$T/$v.out" <<'PY'
import json, sys
lines = open(sys.argv[1]).read().strip().splitlines()
j = json.loads(lines[-1])
assert len(lines) == 1 and j["p"] == 8 and j["buckets"] == 9, lines
assert j["step_ms"] >= j["compute_ms"] > 0 and j["blocked_ms"] >= 0 and j["comm_alone_ms"] > 0, j
print(f"    {j['engine']}{' zero' if j['zero'] else ''}: step {j['step_ms']} ms, blocked {j['blocked_ms']} ms, "
      f"alone {j['comm_alone_ms']} ms")
PY
  then pass "replay_$v"; else fail "replay_$v" "unexpected output"; show "$T/$v.out"; fi
done

if "$SIM/sim.sh" "$PLAT" 4 -- --synthetic 1000 --engine binomial --zero >"$T/bad.out" 2>"$T/bad.err"; then
  fail bad_args "--zero --engine binomial was accepted"
elif grep -q "needs --engine ring" "$T/bad.err"; then pass bad_args
else fail bad_args "no message naming the fix"; show "$T/bad.err"; fi
finish
