#!/usr/bin/env bash
# alpha_beta.sh - does the simulated ring allreduce follow the alpha-beta model?
#
#   jobs/simulate/alpha_beta.sh [P ...]         (default: 4 64 1024)
#
# For each P: the skeleton's communication-only schedule (one bucket of FLOATS
# floats, default 3,000,000 = 12 MB; no compute, --steps 0) on PLATFORM (default
# platforms/cluster-100g-2us.xml, one rank a node: alpha = ALPHA_US = 2 us between
# nodes, B = BW_GBS = 12.5 GB/s), against
#     T(n, p) = 2 (p - 1) / p * n / B + 2 (p - 1) * alpha      (n bytes)
# Prints a Markdown table (with the simulation's wall time and peak memory) and
# exits 1 when a simulated time is off the model by more than TOL (0.10).
# Cost on this machine: P = 1024 took about a minute and several GB.
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
PLATFORM=${PLATFORM:-$here/platforms/cluster-100g-2us.xml}
ALPHA_US=${ALPHA_US:-2} BW_GBS=${BW_GBS:-12.5} FLOATS=${FLOATS:-3000000} TOL=${TOL:-0.10}
[ $# -gt 0 ] || set -- 4 64 1024
out=$(mktemp /tmp/fm-alpha-beta.XXXXXX)
trap 'rm -f "$out" "$out.time"' EXIT

echo "| p | n (bytes) | alpha-beta ms | simulated ms | simulated / model | wall s | peak MB |"
echo "|---|---|---|---|---|---|---|"
bad=0
for p in "$@"; do
  t0=$(date +%s.%N)
  if [ -x /usr/bin/time ]; then
    /usr/bin/time -f %M -o "$out.time" "$here/sim.sh" "$PLATFORM" "$p" -- --synthetic "$FLOATS" --steps 0 >"$out"
  else
    "$here/sim.sh" "$PLATFORM" "$p" -- --synthetic "$FLOATS" --steps 0 >"$out"; echo 0 >"$out.time"
  fi
  t1=$(date +%s.%N)
  line=$(/usr/bin/python3 - "$out" "$p" "$FLOATS" "$ALPHA_US" "$BW_GBS" "$TOL" "$t0" "$t1" "$(tail -1 "$out.time")" <<'PY'
import json, sys
path, p, floats, alpha_us, bw, tol, t0, t1, kb = sys.argv[1:]
p, n = int(p), 4 * int(floats)
sim = json.loads(open(path).read().strip().splitlines()[-1])["comm_alone_ms"]
model = 1e3 * (2 * (p - 1) / p * n / (float(bw) * 1e9) + 2 * (p - 1) * float(alpha_us) * 1e-6)
r = sim / model
ok = abs(r - 1) <= float(tol)
print(f"| {p} | {n} | {model:.4f} | {sim:.4f} | {r:.4f} | {float(t1) - float(t0):.1f} | {int(kb) // 1024} |"
      + ("" if ok else " OFF"))
PY
)
  echo "${line% OFF}"
  case "$line" in *" OFF") bad=1 ;; esac
done
[ "$bad" -eq 0 ] || { echo "alpha_beta: a simulated ring allreduce is more than $TOL off the model" >&2; exit 1; }
