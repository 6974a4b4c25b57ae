#!/usr/bin/env bash
# test_hier.sh - the hierarchical (node-aware) gradient reduction on one
# machine, its 4 oversubscribed ranks faked into 2 nodes of 2 ranks
# (FMTRAIN_RANKS_PER_NODE=2, test-only), on 40 flow steps of configs/tiny.yaml:
#   1. dist.hierarchical: auto on 2 x 2 takes the hierarchical scheme (the
#      trainer's log line says so) and its flow losses agree with 1 rank to
#      <= 1e-5 relative; with ZeRO it logs the flat ring and agrees too;
#   2. dist.hierarchical: off on the same layout logs the flat ring, and its
#      losses differ from the hierarchical run's (another summation order: the
#      switch really changes the reduction) while agreeing with 1 rank;
#   3. auto on one node (no fake nodes) keeps the flat ring;
#   4. dist.hierarchical: on with nodes of unequal size (3 ranks as 2 + 1)
#      stops with exit 2 naming the key;
#   5. the gradsync unit test (exact sums, packed buckets, poison) on 4 ranks
#      as 2 x 2 runs the hierarchical scheme and passes on every rank;
#   6. the deadline on the hierarchical path: rank 3 stopped (SIGSTOP) during
#      the flow stage of a 2 x 2 run with dist.timeout=10 -> the run ends, and
#      a message names the step, the bucket, the ring (inside the node or
#      across the nodes) and world rank 3.
# Prints PASS/FAIL comm/hier_<name>; exits non-zero on any failure.
source "$(dirname "$0")/../lib.sh" comm hier_

FLOW=(--set "run.stages=[flow]" --set flow.steps=40 --set flow.batch_size=48 --set run.log_every=1
      --set flow.sample_every=0 --set flow.bucket_mb=0.05 --set flow.ckpt_every=40)

tiny_latents || exit 1


# compare REF RUN: max relative flow-loss difference over steps 1..40; exits 1 above 1e-5
compare() {
  $PY - "$T/$1/metrics.jsonl" "$T/$2/metrics.jsonl" <<'PYEOF'
import json, sys
def losses(f):
    return {r["step"]: r["loss"] for r in map(json.loads, open(f)) if r["stage"] == "flow"}
a, b = losses(sys.argv[1]), losses(sys.argv[2])
missing = [s for s in range(1, 41) if s not in b]
if missing:
    sys.exit("no loss at steps %s" % missing[:5])
m = max(abs(a[s] - b[s]) / abs(a[s]) for s in range(1, 41))
print("max relative loss difference %.2e" % m)
sys.exit(0 if m <= 1e-5 else 1)
PYEOF
}

# scheme NAME: the trainer's scheme line of run NAME
scheme() { grep -m1 "gradients reduced by a" "$T/$1.log"; }

run_flow n1 1 || { fail reference "1-rank run failed"; show "$T/n1.log" 5; exit 1; }

export FMTRAIN_RANKS_PER_NODE=2
for c in "h4 auto false hierarchical" "hz4 auto true flat" "f4 off false flat"; do
  read -r name mode zero want <<<"$c"
  if ! run_flow "$name" 4 --set dist.hierarchical="$mode" --set dist.zero="$zero"; then
    fail "$name" "exit code $? (see below)"; show "$T/$name.log" 5; continue
  fi
  line=$(scheme "$name")
  if grep -q "2 nodes x 2 ranks, dist.hierarchical: $mode: gradients reduced by a $want" <<<"$line"; then
    pass "scheme_${name} ($want)"
  else fail "scheme_${name}" "expected 2 x 2 and a $want scheme, log says: ${line:-nothing}"; fi
  if msg=$(compare n1 "$name"); then pass "losses_${name}_vs_1_rank ($msg)"
  else fail "losses_${name}_vs_1_rank" "$msg"; fi
done
# the flat and the hierarchical run sum in another order: some loss differs in its bits
if [ -f "$T/h4/metrics.jsonl" ] && [ -f "$T/f4/metrics.jsonl" ]; then
  if cmp -s <(grep '"flow"' "$T/h4/metrics.jsonl" | grep -o '"loss": *[^,]*') \
            <(grep '"flow"' "$T/f4/metrics.jsonl" | grep -o '"loss": *[^,]*'); then
    fail order_differs "hierarchical and flat runs have bitwise equal losses: the switch did nothing"
  else pass order_differs; fi
fi

unset FMTRAIN_RANKS_PER_NODE
if run_flow one 2 && grep -q "1 node x 2 ranks, dist.hierarchical: auto: gradients reduced by a flat ring" "$T/one.log"
then pass auto_single_node_flat
else fail auto_single_node_flat "$(scheme one)"; show "$T/one.log" 5; fi

FMTRAIN_RANKS_PER_NODE=2 run_flow uneven 3 --set flow.batch_size=48 --set dist.hierarchical=on; rc=$?
if [ "$rc" = 2 ] && grep -q "dist.hierarchical: on needs the same number of ranks on every node" "$T/uneven.log"
then pass unequal_nodes_refused
else fail unequal_nodes_refused "exit $rc"; show "$T/uneven.log" 5; fi
# --- 6. a stopped rank on the hierarchical path: the deadline names it
cp -r "$T/base" "$T/stop"
FMTRAIN_RANKS_PER_NODE=2 MPI_TIMEOUT=300 mpi 4 sh -c 'echo $$ >"$0.pid.$OMPI_COMM_WORLD_RANK"; exec "$@"' "$T/stop" \
  "$FMTRAIN" "$TINY" --out "$T/stop" "${FLOW[@]}" --set flow.steps=2000 --set dist.timeout=10 >"$T/stop.log" 2>&1 &
job=$!
stopped=
for _ in $(seq 600); do # up to 120 s for flow step 5
  if grep -q '\(^\|Z \)flow  step 5/' "$T/stop.log" 2>/dev/null && [ -s "$T/stop.pid.3" ]; then
    kill -STOP "$(cat "$T/stop.pid.3")" && stopped=$(date +%s); break
  fi
  kill -0 "$job" 2>/dev/null || break
  sleep 0.2
done
wait "$job"; rc=$?
[ -n "$stopped" ] && kill -CONT "$(cat "$T/stop.pid.3")" 2>/dev/null
# the rank that waits names rank 3: in the gradient reduction ("waited 10 s for rank 3") or, when the stop
# came between reductions, in a world collective ("rank 3 did not arrive")
msg=$(grep -oE 'gradient reduction of step [0-9]*, bucket [0-9]* of [0-9]* \([a-z ]*\): [^:]*: rank [0-9] waited 10 s for rank 3|rank [0-9]: [^:]*: rank 3 did not arrive within 10 s' \
      "$T/stop.log" | head -n 1)
if [ -n "$stopped" ] && [ "$rc" -ne 0 ] && [ $(($(date +%s) - stopped)) -le 90 ] && [ -n "$msg" ]; then
  pass "stopped_rank_named ($(($(date +%s) - stopped)) s after the stop: $msg)"
else fail stopped_rank_named "stopped: ${stopped:-no}, exit $rc, message: ${msg:-none}"; show "$T/stop.log" 8; fi

GS=$BUILD/tests/comm/test_gradsync
FMTRAIN_RANKS_PER_NODE=2 MPI_TIMEOUT=120 mpi 4 "$GS" >"$T/gs4.out" 2>&1; rc=$?
if [ $rc -eq 0 ] && [ "$(grep -c '^PASS comm/test_mpi_runtime' "$T/gs4.out")" -eq 4 ]; then pass gradsync_unit_2x2
else fail gradsync_unit_2x2 "exit $rc"; grep -v '^PASS\|re-planned' "$T/gs4.out" | head -10 | sed 's/^/    /'; fi
finish
