#!/usr/bin/env bash
# test_multirank.sh - data parallelism over MPI ranks on configs/tiny.yaml.
#   1. vae -> encode -> flow (U-Net) with 1 rank, `mpirun -np 2` and
#      `mpirun -np 3 --oversubscribe` at the same global batch: the per-step
#      losses of vae and flow agree (max relative difference <= 1e-4).
#   2. Only rank 0 writes: the run directories hold the same files as the
#      1-rank run (no stray temporaries), metrics.jsonl has one line per logged
#      step, and the working directory of every rank stays empty.
#   3. metrics.jsonl of the multi-rank runs carries the allreduce split
#      (compute_ms, allreduce_ms, comm_ms, hidden_frac, imbalance_ms, exposed_ms) and
#      stderr the progress line with it.
#   4. The flow stage with the DiT (another grad-hook order) on 1 and 2 ranks.
#   5. The bucketed allreduce unit test (test_gradsync) under 2 and 3 ranks.
#   6. The ring collectives' unit test (test_ring) under 2, 3 and 4 ranks.
# Buckets are small (flow.bucket_mb) so that many start during backward and
# some are packed. Prints PASS/FAIL comm/<name>; exits non-zero on any failure.
source "$(dirname "$0")/../lib.sh" comm
export OMP_NUM_THREADS=1

SETS=(--set "run.stages=[vae,encode,flow]" --set vae.steps=20 --set flow.steps=20 --set run.log_every=1
      --set vae.batch_size=24 --set flow.batch_size=24 --set encode.batch_size=192 --set flow.bucket_mb=0.05
      --set vae.ckpt_every=10 --set flow.ckpt_every=10 --set flow.sample_every=20)

# compare_losses REF OTHER STAGES: per-step losses of the metrics logs agree
compare_losses() {
  $PY - "$T/$1/metrics.jsonl" "$T/$2/metrics.jsonl" "$3" <<'PYEOF'
import json, sys
def load(p):
    d = {}
    for line in open(p):
        j = json.loads(line)
        if "loss" in j:  # not the eval lines
            d[(j["stage"], j["step"])] = j["loss"]
    return d
a, b, stages = load(sys.argv[1]), load(sys.argv[2]), sys.argv[3].split(",")
worst = 0.0
for st in stages:
    ka = sorted(k for k in a if k[0] == st)
    kb = sorted(k for k in b if k[0] == st)
    assert ka == kb and len(ka) == 20, f"{st}: steps {len(ka)} vs {len(kb)}"
    for k in ka:
        worst = max(worst, abs(a[k] - b[k]) / max(abs(a[k]), 1e-12))
print(f"max relative loss difference {worst:.2e} over {','.join(stages)}")
sys.exit(0 if worst <= 1e-4 else 1)
PYEOF
}

# --- 1. losses of 1, 2, 3 ranks -------------------------------------------------
run np1 1 "$TINY" --out "$T/np1" "${SETS[@]}" || { finish; exit 1; }
for np in 2 3; do
  run "np$np" "$np" "$TINY" --out "$T/np$np" "${SETS[@]}" || continue
  if msg=$(compare_losses np1 "np$np" vae,flow 2>&1); then pass "losses_match_np$np ($msg)"
  else fail "losses_match_np$np" "$msg"; fi

  # --- 2. only rank 0 writes --------------------------------------------------
  (cd "$T/np1" && find . -type f | sort) >"$T/files1"
  (cd "$T/np$np" && find . -type f | sort) >"$T/files$np"
  stray=$(find "$T/cwd-np$np" -mindepth 1 | head -3)
  lines1=$(wc -l <"$T/np1/metrics.jsonl"); linesn=$(wc -l <"$T/np$np/metrics.jsonl")
  if cmp -s "$T/files1" "$T/files$np" && [ -z "$stray" ] && [ "$lines1" = "$linesn" ]; then
    pass "only_rank0_writes_np$np ($(wc -l <"$T/files1") files)"
  else
    fail "only_rank0_writes_np$np" "files differ, stray '$stray' or $linesn metrics lines vs $lines1"
    diff "$T/files1" "$T/files$np" | head -5 | sed 's/^/    /'
  fi

  # --- 3. the allreduce split ---------------------------------------------------
  if msg=$($PY - "$T/np$np/metrics.jsonl" <<'PYEOF' 2>&1
import json, sys
lines = [json.loads(l) for l in open(sys.argv[1])]
for j in lines:
    for k in ("compute_ms", "allreduce_ms", "comm_ms", "hidden_frac", "step_ms", "imbalance_ms", "inflight_ms",
              "exposed_ms"):
        assert isinstance(j.get(k), (int, float)), (k, j)
    assert j["comm_ms"] > 0 and 0 <= j["hidden_frac"] <= 1 and j["compute_ms"] > 0, j
    assert j["allreduce_ms"] >= 0 and j["imbalance_ms"] >= 0 and j["step_ms"] >= j["compute_ms"], j
    # the last rank's wait: no longer than rank 0's, which also waits for slower ranks
    assert 0 <= j["exposed_ms"] <= j["allreduce_ms"] + 1e-6, j
f = [j for j in lines if j["stage"] == "flow"]
m = lambda k: sum(j[k] for j in f[1:]) / len(f[1:])
print("flow: compute %.1f ms, allreduce %.2f ms blocked, comm %.2f ms, hidden %.0f%%, imbalance %.1f ms"
      % (m("compute_ms"), m("allreduce_ms"), f[-1]["comm_ms"], 100 * m("hidden_frac"), m("imbalance_ms")))
PYEOF
  ) && grep -q 'flow  step 20/20 .*allreduce .*hidden' "$T/np$np.err" && grep -q 'gradients in [0-9]* buckets' "$T/np$np.err"
  then pass "allreduce_split_np$np ($msg)"
  else fail "allreduce_split_np$np" "$msg"; grep 'step 20/20' "$T/np$np.err" | sed 's/^/    /'; fi
done

# --- 4. DiT flow (another hook order) on the 1-rank latents -----------------------
for np in 1 2; do
  mkdir -p "$T/dit$np/ckpt"
  cp "$T/np1/latents.safetensors" "$T/dit$np/"
  cp "$T/np1"/ckpt/vae-*.safetensors "$T/dit$np/ckpt/"
  run "dit$np" "$np" "$TINY" --out "$T/dit$np" "${SETS[@]}" --set "run.stages=[flow]" \
    --set flow.model=dit --set flow.bucket_mb=0.02
done
if [ -s "$T/dit2/metrics.jsonl" ] && msg=$(compare_losses dit1 dit2 flow 2>&1); then pass "dit_losses_match_np2 ($msg)"
else fail dit_losses_match_np2 "${msg:-no run}"; fi

# --- 5. the gradsync unit test under mpirun --------------------------------------------
GS=$BUILD/tests/comm/test_gradsync
if [ ! -x "$GS" ]; then fail gradsync_mpi "$GS not built"
else
  for np in 2 3; do
    MPI_TIMEOUT=120 mpi "$np" "$GS" >"$T/gs$np.out" 2>&1
    rc=$?
    if [ $rc -eq 0 ] && [ "$(grep -c '^PASS comm/test_mpi_runtime' "$T/gs$np.out")" -eq "$np" ]; then
      pass "gradsync_mpi_np$np"
    else fail "gradsync_mpi_np$np" "exit $rc"; sed 's/^/    /' "$T/gs$np.out" | head -10; fi
  done
fi

# --- 6. the ring collectives (ring.h) under 2, 3 and 4 ranks ----------------------------
RING=$BUILD/tests/comm/test_ring
if [ ! -x "$RING" ]; then fail ring_mpi "$RING not built"
else
  for np in 2 3 4; do
    MPI_TIMEOUT=120 mpi "$np" "$RING" >"$T/ring$np.out" 2>&1
    rc=$?
    if [ $rc -eq 0 ] && [ "$(grep -c '^PASS comm/ring/' "$T/ring$np.out")" -eq $((5 * np)) ]; then
      pass "ring_mpi_np$np"
    else fail "ring_mpi_np$np" "exit $rc"; grep -v '^PASS' "$T/ring$np.out" | sed 's/^/    /' | head -10; fi
  done
fi

finish
