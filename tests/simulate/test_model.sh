#!/usr/bin/env bash
# test_model.sh - the alpha-beta model of the scaling study (jobs/simulate/model.py)
# agrees with the SMPI skeleton, and the calibration fit reads a ping-pong.
#   1. model_ring_{4,16}, model_binomial_{4,16}: the tiny schedule
#      (tests/simulate/schedule-tiny.json) with 0.2 MiB buckets on 4 and 16 ranks of
#      cluster-100g-2us.xml: the model's step time within 2 % of SMPI's for the ring
#      with ZeRO-1 and 5 % for the binomial engine (its link sharing and the ranks'
#      different finishing times are approximated), its time blocked after backward
#      within 0.05 ms + 25 %.
#   2. fit: calibrate.py fit recovers latency and bandwidth from a synthetic
#      ping-pong (t = 20 us + bytes / 0.1 GB/s) and writes a platform SMPI loads.
# SKIP when SimGrid's smpicc/smpirun are absent (scripts/setup.sh installs them).
source "$(dirname "$0")/simlib.sh"
sim_ready || { finish; exit; }

/usr/bin/python3 - "$SIM" "$ROOT/tests/simulate/schedule-tiny.json" "$T/one.json" <<'PY'
import sys
sys.path.insert(0, sys.argv[1])
import model as M
M.to_skeleton_json(M.load_schedule(sys.argv[2]), sys.argv[3])
PY
for p in 4 16; do
  for e in ring binomial; do
    args=(--engine "$e")
    [ "$e" = ring ] && args+=(--zero)
    if ! "$SIM/sim.sh" "$PLAT" "$p" -- --schedule "$T/one.json" --steps 2 --bucket-mb 0.2 "${args[@]}" \
         >"$T/$e$p.out" 2>"$T/$e$p.err"; then
      fail "model_${e}_$p" "sim.sh failed"; show "$T/$e$p.err"; continue
    fi
    if /usr/bin/python3 - "$SIM" "$T/one.json" "$T/$e$p.out" "$p" "$e" <<'PY'
import json, sys
sys.path.insert(0, sys.argv[1])
import model as M
s = M.load_schedule(sys.argv[2])
sim = json.loads(open(sys.argv[3]).read().strip().splitlines()[-1])
p, e = int(sys.argv[4]), sys.argv[5]
r = M.step(s, p, M.Net(2e-6, 12.5e9), e, e == "ring", 0.2)
print(f"    {e}, {p} ranks, {r['buckets']} buckets: step SMPI {sim['step_ms']:.4f} model {r['step']:.4f} ms, "
      f"blocked SMPI {sim['blocked_ms']:.4f} model {r['blocked']:.4f} ms")
ok = r["buckets"] == sim["buckets"] and abs(r["step"] / sim["step_ms"] - 1) <= (0.02 if e == "ring" else 0.05) \
    and abs(r["blocked"] - sim["blocked_ms"]) <= 0.05 + 0.25 * sim["blocked_ms"]
sys.exit(0 if ok else 1)
PY
    then pass "model_${e}_$p"; else fail "model_${e}_$p" "the model is off SMPI"; fi
  done
done

# a synthetic ping-pong: 20 us + bytes / 0.1 GB/s, in pingpong.c's format
/usr/bin/python3 -c '
for n in (8, 1024, 65536, 1 << 20, 4 << 20, 16 << 20):
    t = 20e-6 + n / 0.1e9
    print("%9d bytes  one-way %9.2f us  %8.3f GB/s" % (n, t * 1e6, n / t * 1e-9))' >"$T/pp.txt"
if /usr/bin/python3 "$SIM/calibrate.py" fit "$T/pp.txt" "$T/lo.xml" 1gbit 2>"$T/fit.err" &&
   grep -q 'bandwidth="0.1000' "$T/lo.xml" && grep -q 'latency="20.0' "$T/lo.xml" &&
   "$SIM/sim.sh" "$T/lo.xml" 2 -- --synthetic 250000 --steps 0 >"$T/lo.out" 2>"$T/lo.err"; then
  # 2 ranks sharing one link both ways: 2 rounds, each (2 x 0.5 MB) / 0.1 GB/s + 20 us = 10.02 ms
  if /usr/bin/python3 -c '
import json, sys
t = json.loads(open(sys.argv[1]).read().strip().splitlines()[-1])["comm_alone_ms"]
print(f"    fitted platform, 2 ranks, 1 MB ring: {t:.3f} ms (model 20.04)")
sys.exit(0 if abs(t / 20.04 - 1) < 0.1 else 1)' "$T/lo.out"; then pass fit; else fail fit "the fitted platform's ring is off"; fi
else
  fail fit "calibrate.py fit or the simulation on its platform failed"; show "$T/fit.err"; show "$T/lo.err"; show "$T/lo.xml"
fi
finish
