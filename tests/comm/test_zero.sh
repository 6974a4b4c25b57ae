#!/usr/bin/env bash
# test_zero.sh - ZeRO-1 (dist.zero) and the ring reduction at several rank
# counts, on the flow stage of configs/tiny.yaml (one VAE + latents, then 40
# flow steps at global batch 48, which every rank count below divides):
#   1. flow losses of 2, 3, 4 and 8 ranks with ZeRO and 2 and 3 without agree
#      with 1 rank to <= 1e-5 relative;
#   2. a ZeRO run checkpointed at step 20 on 2 ranks resumes on 3 ranks with
#      ZeRO and on 1 rank without it: steps 21..40 agree with the
#      uninterrupted 1-rank run to <= 1e-5, and the checkpoints are whole
#      (the same tensors and shapes as a run without ZeRO).
# Prints PASS/FAIL comm/zero_<name>; exits non-zero on any failure.
source "$(dirname "$0")/../lib.sh" comm zero_

FLOW=(--set "run.stages=[flow]" --set flow.steps=40 --set flow.batch_size=48 --set run.log_every=1
      --set flow.sample_every=0 --set flow.bucket_mb=0.05 --set flow.ckpt_every=20)

if ! timeout 300 "$FMTRAIN" "$TINY" --out "$T/base" --set "run.stages=[vae,encode]" >"$T/base.log" 2>&1; then
  fail latents "the VAE and encode stages failed"; show "$T/base.log" 5; exit 1
fi

# run_flow NAME NP ARGS...: the flow stage on a copy of the latents run, under mpirun -np NP
run_flow() {
  local name=$1 np=$2; shift 2
  [ -d "$T/$name" ] || cp -r "$T/base" "$T/$name"
  MPI_TIMEOUT=600 mpi "$np" "$FMTRAIN" "$TINY" --out "$T/$name" "${FLOW[@]}" "$@" >"$T/$name.log" 2>&1
}

# compare REF RUN FIRST_STEP: max relative flow-loss difference from FIRST_STEP on
compare() {
  $PY - "$T/$1/metrics.jsonl" "$T/$2/metrics.jsonl" "$3" <<'EOF'
import json, sys
def losses(f):
    out = {}
    for l in open(f):
        r = json.loads(l)
        if r["stage"] == "flow":
            out[r["step"]] = r["loss"]  # a resumed run's later lines win
    return out
a, b, first = losses(sys.argv[1]), losses(sys.argv[2]), int(sys.argv[3])
steps = [s for s in range(first, 41)]
missing = [s for s in steps if s not in b]
if missing:
    sys.exit("no loss at steps %s" % missing[:5])
m = max(abs(a[s] - b[s]) / abs(a[s]) for s in steps)
print("max relative loss difference %.2e over steps %d..40" % (m, first))
sys.exit(0 if m <= 1e-5 else 1)
EOF
}

run_flow n1 1 || { fail reference "1-rank run failed"; show "$T/n1.log" 5; exit 1; }
for c in "z2 2 true" "z3 3 true" "z4 4 true" "z8 8 true" "n2 2 false" "n3 3 false"; do
  read -r name np zero <<<"$c"
  if ! run_flow "$name" "$np" --set dist.zero="$zero"; then fail "$name" "exit code $? (see below)"; show "$T/$name.log" 5
  elif msg=$(compare n1 "$name" 1); then pass "losses_${np}_ranks_zero_${zero} ($msg)"
  else fail "losses_${np}_ranks_zero_${zero}" "$msg"; fi
done

# --- resume: a ZeRO checkpoint of step 20 (2 ranks) on 3 ranks with ZeRO and on 1 rank without
# rebuild the state of step 20: its checkpoint, and the metrics up to it
cut_at_20() {
  cp -r "$T/z2" "$T/$1"
  rm -f "$T/$1"/ckpt/flow-00000040.safetensors
  $PY - "$T/$1/metrics.jsonl" <<'EOF'
import json, sys
f = sys.argv[1]
keep = [l for l in open(f) if not (json.loads(l)["stage"] == "flow" and json.loads(l)["step"] > 20)]
open(f, "w").writelines(keep)
EOF
}
cut_at_20 r3; cut_at_20 r1
for c in "r3 3 true resume_2_to_3_ranks" "r1 1 false resume_2_ranks_zero_to_1_rank"; do
  read -r name np zero what <<<"$c"
  if ! run_flow "$name" "$np" --set dist.zero="$zero"; then fail "$what" "exit code (see below)"; show "$T/$name.log" 5
  elif ! grep -q "flow: resumed from .*flow-00000020.safetensors (step 20)" "$T/$name.log"; then
    fail "$what" "did not resume from the step-20 checkpoint"
  elif msg=$(compare n1 "$name" 21); then pass "$what ($msg)"
  else fail "$what" "$msg"; fi
done

# the checkpoints of a ZeRO run are whole: the same tensors and shapes as without ZeRO, moments non-zero everywhere
if msg=$($PY - "$T/z2/ckpt/flow-00000040.safetensors" "$T/n2/ckpt/flow-00000040.safetensors" <<'EOF'
import json, struct, sys
import numpy as np
def load(f):
    b = open(f, "rb").read()
    n = struct.unpack("<Q", b[:8])[0]
    h = json.loads(b[8:8 + n]); h.pop("__metadata__", None)
    return {k: np.frombuffer(b[8 + n + v["data_offsets"][0]:8 + n + v["data_offsets"][1]], dtype=np.float32)
            for k, v in h.items()}, {k: v["shape"] for k, v in h.items()}
z, zs = load(sys.argv[1]); n, ns = load(sys.argv[2])
if zs != ns:
    sys.exit("tensor names or shapes differ from a run without ZeRO")
# every second moment of a trained tensor is filled in (a shard left out would stay 0)
empty = [k for k in z if k.startswith("adam.v.") and not np.any(z[k]) and np.any(n[k])]
if empty:
    sys.exit("second moments all zero in %s" % empty[:3])
worst = max(float(np.max(np.abs(z[k] - n[k])) / (float(np.max(np.abs(n[k]))) + 1e-30)) for k in z)
print("%d tensors, same names and shapes; largest difference to the run without ZeRO %.1e of the tensor's scale" % (len(z), worst))
sys.exit(0 if worst < 1e-3 else 1)
EOF
); then pass "checkpoint_whole ($msg)"; else fail checkpoint_whole "$msg"; fi

finish
