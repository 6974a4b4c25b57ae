#!/usr/bin/env bash
# run_scale.sh - `make test-scale`: fmtrain at 64 ranks on this 2-core machine.
#
# `mpirun -np 64 --oversubscribe fmtrain configs/tiny.yaml` with one OpenMP
# thread per rank and dist.batch: per_rank (every batch is one rank's, so every
# batch splits), through vae -> encode -> flow (FLOW_STEPS flow steps), then
# the same global batches on 1 rank. Checks:
#   - the 64-rank job completes;
#   - its flow losses match the 1-rank run's to <= 1e-4 relative (VAE too);
#   - the peak memory of the whole job (all 64 ranks together: the machine's
#     used memory, sampled every 0.2 s, less what was used before it started)
#     is printed and stays under MAX_GB (default 12).
# Environment: NP (default 64), FLOW_STEPS (20), VAE_STEPS (20), MAX_GB (12),
# FMTRAIN (./fmtrain). Prints PASS/FAIL scale/<name> and a summary line.
set -u
source "$(dirname "$0")/../lib.sh" scale
NP=${NP:-64}
FLOW_STEPS=${FLOW_STEPS:-20}
VAE_STEPS=${VAE_STEPS:-20}
MAX_GB=${MAX_GB:-12}

# one image per rank and step for the VAE and the flow, 4 per rank for encode:
# global batches NP, 4 NP
per_rank=(--set dist.batch=per_rank --set vae.batch_size=1 --set flow.batch_size=1 --set encode.batch_size=4
          --set eval.classifier_batch_size=1 --set eval.batch_size=1)
global=(--set vae.batch_size="$NP" --set flow.batch_size="$NP" --set encode.batch_size=$((4 * NP)))
common=(--set "run.stages=[vae,encode,flow]" --set vae.steps="$VAE_STEPS" --set flow.steps="$FLOW_STEPS"
        --set run.log_every=1 --set vae.ckpt_every=1000 --set flow.ckpt_every=1000 --set flow.sample_every=0
        --set dist.timeout=1800)

used_kb() { awk '/^MemTotal:/ {t = $2} /^MemAvailable:/ {a = $2} END {print t - a}' /proc/meminfo; }

# --- the 64-rank job, with a memory sampler beside it ----------------------------------
base_kb=$(used_kb)
echo 0 >"$T/peak"
(
    peak=0
    while [ ! -e "$T/done" ]; do
        u=$(used_kb)
        [ "$u" -gt "$peak" ] && { peak=$u; echo "$peak" >"$T/peak"; }
        sleep 0.2
    done
) &
sampler=$!
t0=$(date +%s)
OMP_NUM_THREADS=1 timeout 3600 mpirun -np "$NP" --oversubscribe --bind-to none -x OMP_NUM_THREADS=1 \
    "$FMTRAIN" "$TINY" --out "$T/np$NP" "${common[@]}" "${per_rank[@]}" >"$T/np$NP.out" 2>"$T/np$NP.err"
rc=$?
secs=$(($(date +%s) - t0))
touch "$T/done"
wait "$sampler"
peak_gb=$(awk -v p="$(cat "$T/peak")" -v b="$base_kb" 'BEGIN {printf "%.2f", (p - b) / 1048576}')
echo "    $NP ranks: exit $rc after ${secs}s; peak memory of the job (all ranks together) ${peak_gb} GB"
if [ $rc -eq 0 ]; then pass "np${NP}_completes (${secs}s, $FLOW_STEPS flow steps)"
else fail "np${NP}_completes" "exit $rc"; tail -n 15 "$T/np$NP.err" | sed 's/^/    /'; finish; exit 1; fi
if awk -v g="$peak_gb" -v m="$MAX_GB" 'BEGIN {exit !(g < m)}'; then pass "np${NP}_peak_memory (${peak_gb} GB < ${MAX_GB} GB)"
else fail "np${NP}_peak_memory" "${peak_gb} GB >= ${MAX_GB} GB"; fi

# --- the same global batches on one rank ---------------------------------------------------
OMP_NUM_THREADS=2 timeout 1200 "$FMTRAIN" "$TINY" --out "$T/np1" "${common[@]}" "${global[@]}" >"$T/np1.out" 2>"$T/np1.err" ||
    { fail np1_reference "exit $?"; finish; exit 1; }
if msg=$($PY - "$T/np1/metrics.jsonl" "$T/np$NP/metrics.jsonl" <<'EOF'
import json, sys
def losses(f):
    return {(r["stage"], r["step"]): r["loss"] for r in map(json.loads, open(f)) if "loss" in r}
a, b = losses(sys.argv[1]), losses(sys.argv[2])
if set(a) != set(b):
    sys.exit("different logged steps: %d against %d" % (len(a), len(b)))
worst = {s: max(abs(a[k] - b[k]) / abs(a[k]) for k in a if k[0] == s) for s in ("vae", "flow")}
print("max relative loss difference: vae %.1e, flow %.1e over %d steps" % (worst["vae"], worst["flow"], len(a)))
sys.exit(0 if max(worst.values()) <= 1e-4 else 1)
EOF
); then pass "np${NP}_losses_match_1_rank ($msg)"; else fail "np${NP}_losses_match_1_rank" "$msg"; fi
finish
