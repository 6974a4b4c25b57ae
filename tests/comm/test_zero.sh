#!/usr/bin/env bash
# test_zero.sh - ZeRO-1 (dist.zero) and the ring reduction at several rank
# counts, on the flow stage of configs/tiny.yaml (one VAE + latents, then 40
# flow steps at global batch 48, which every rank count below divides):
#   1. flow losses of 2, 3, 4 and 8 ranks with ZeRO and 2 and 3 without agree
#      with 1 rank to <= 1e-5 relative;
#   2. a ZeRO run checkpointed at step 20 on 2 ranks resumes on 3 ranks with
#      ZeRO and on 1 rank without it, and the 1-rank run's checkpoint without
#      ZeRO resumes on 2 ranks with it: steps 21..40 agree with the
#      uninterrupted 1-rank run to <= 1e-5, and the checkpoints are whole
#      (the same tensors and shapes as a run without ZeRO);
#   3. the memory ZeRO saves: the optimiser + EMA state each rank holds (the
#      trainer's "zero: state" line) is the whole state without ZeRO and
#      whole/p with it, within the rounding of each bucket's chunks (at most one
#      float per bucket and array), for the tiny config at 1, 2, 4, 8 ranks
#      and the default U-Net (configs/ldm.yaml, 2 flow steps on a 2-step VAE)
#      at 1, 2, 4, 8 ranks; and measured: at 4 ranks the peak RSS of ranks
#      1-3 drops by at least half of what their state shrinks (rank 0 holds the
#      whole state while it writes a checkpoint).
# Prints PASS/FAIL comm/zero_<name>; exits non-zero on any failure.
source "$(dirname "$0")/../lib.sh" comm zero_

FLOW=(--set "run.stages=[flow]" --set flow.steps=40 --set flow.batch_size=48 --set run.log_every=1
      --set flow.sample_every=0 --set flow.bucket_mb=0.05 --set flow.ckpt_every=20)

tiny_latents || exit 1


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

# --- resume: a ZeRO checkpoint of step 20 (2 ranks) on 3 ranks with ZeRO and on 1 rank without;
# the 1-rank checkpoint without ZeRO on 2 ranks with it
# cut_at_20 RUN NEW: rebuild the state of step 20 of RUN in NEW: its checkpoint, and the metrics up to it
cut_at_20() {
  cp -r "$T/$1" "$T/$2"
  rm -f "$T/$2"/ckpt/flow-00000040.safetensors
  $PY - "$T/$2/metrics.jsonl" <<'EOF'
import json, sys
f = sys.argv[1]
keep = [l for l in open(f) if not (json.loads(l)["stage"] == "flow" and json.loads(l)["step"] > 20)]
open(f, "w").writelines(keep)
EOF
}
cut_at_20 z2 r3; cut_at_20 z2 r1; cut_at_20 n1 rz2
for c in "r3 3 true resume_2_to_3_ranks" "r1 1 false resume_2_ranks_zero_to_1_rank" \
         "rz2 2 true resume_1_rank_to_2_ranks_zero"; do
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

# --- 3. the state per rank --------------------------------------------------------------------
# state_ok LOG NP ZERO: the last "flow: zero: state" line of LOG against whole/NP (ZERO true) or whole
state_ok() {
  $PY - "$1" "$2" "$3" <<'EOF'
import re, sys
log, p, zero = open(sys.argv[1]).read(), int(sys.argv[2]), sys.argv[3] == "true"
st = re.findall(r"flow: zero: state .*?bytes per rank (\d+) to (\d+), whole (\d+)\)", log)
if not st:
    sys.exit("no 'flow: zero: state' line")
least, most, whole = map(int, st[-1])
on = re.findall(r"flow: zero: state .*?ZeRO (on|off)", log)[-1] == "on"
arrays = 3  # AdamW m and v, the EMA
buckets = max([int(b) for b in re.findall(r"gradients in (\d+) buckets?", log) +
               re.findall(r"(\d+) buckets? re-planned", log)] or [1])
if on != (zero and p > 1):
    sys.exit("ZeRO %s at %d ranks with dist.zero %s" % ("on" if on else "off", p, zero))
slack = arrays * 4 * buckets  # a bucket's chunks differ by at most one float
ideal = whole / p if on else whole
ok = ideal - slack <= least <= most <= ideal + slack
print("%d rank%s, ZeRO %s: %.3f MB per rank (largest), whole %.3f MB, whole/p %.3f MB, %d bucket%s"
      % (p, "" if p == 1 else "s", "on" if on else "off", most / 1e6, whole / 1e6, whole / p / 1e6, buckets,
         "" if buckets == 1 else "s"))
sys.exit(0 if ok else 1)
EOF
}
for c in "n1 1 false" "n2 2 false" "z2 2 true" "z4 4 true" "z8 8 true"; do
  read -r name np zero <<<"$c"
  if msg=$(state_ok "$T/$name.log" "$np" "$zero"); then pass "state_tiny_${np}_ranks_zero_${zero} ($msg)"
  else fail "state_tiny_${np}_ranks_zero_${zero}" "$msg"; fi
done

# the default U-Net: a 2-step VAE and its latents of 512 images, then 2 flow steps;
# each rank's peak RSS (KiB) as seen by a wrapper, one line "rank R maxrss_kb K" per rank
LDM=(--set data.train_limit=512 --set data.test_limit=256)
if ! timeout 300 "$FMTRAIN" "$ROOT/configs/ldm.yaml" --out "$T/ldm" "${LDM[@]}" --set "run.stages=[vae,encode]" \
     --set vae.steps=2 --set vae.warmup=0 --set vae.ckpt_every=2 >"$T/ldm.log" 2>&1; then
  fail ldm_latents "the VAE and encode stages of ldm.yaml failed"; show "$T/ldm.log" 5
else
  RSS='import os, resource, subprocess, sys
rc = subprocess.call(sys.argv[1:])
print("rank %s maxrss_kb %d" % (os.environ.get("OMPI_COMM_WORLD_RANK", "0"),
      resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss), file=sys.stderr)
sys.exit(rc)'
  for c in "l1 1 false" "l2 2 true" "l4 4 true" "l8 8 true" "ln4 4 false"; do
    read -r name np zero <<<"$c"
    cp -r "$T/ldm" "$T/$name"
    if ! MPI_TIMEOUT=300 mpi "$np" $PY -c "$RSS" "$FMTRAIN" "$ROOT/configs/ldm.yaml" --out "$T/$name" "${LDM[@]}" \
         --set "run.stages=[flow]" --set flow.steps=2 --set flow.warmup=0 --set flow.batch_size=16 \
         --set flow.sample_every=0 --set flow.ckpt_every=2 --set dist.zero="$zero" >"$T/$name.log" 2>&1; then
      fail "state_ldm_${np}_ranks_zero_${zero}" "exit code (see below)"; show "$T/$name.log" 5
    elif msg=$(state_ok "$T/$name.log" "$np" "$zero"); then pass "state_ldm_${np}_ranks_zero_${zero} ($msg)"
    else fail "state_ldm_${np}_ranks_zero_${zero}" "$msg"; fi
  done
  if msg=$($PY - "$T/l4.log" "$T/ln4.log" <<'EOF'
import re, sys
def rss(f):
    return {int(r): int(k) for r, k in re.findall(r"rank (\d+) maxrss_kb (\d+)", open(f).read())}
def state(f):
    return [int(x) for x in re.findall(r"bytes per rank (\d+) to (\d+), whole", open(f).read())[-1]]
on, off = rss(sys.argv[1]), rss(sys.argv[2])
if sorted(on) != [0, 1, 2, 3] or sorted(off) != [0, 1, 2, 3]:
    sys.exit("no peak RSS of every rank")
shrink = (state(sys.argv[2])[1] - state(sys.argv[1])[1]) / 1024  # KiB less state per rank
saved = sum(off[r] - on[r] for r in (1, 2, 3)) / 3
print("ranks 1-3 peak RSS %.1f MiB with ZeRO, %.1f MiB without: %.1f MiB saved per rank, the state shrinks by "
      "%.1f MiB; rank 0 %.1f MiB / %.1f MiB" % (sum(on[r] for r in (1, 2, 3)) / 3 / 1024, sum(off[r] for r in (1, 2, 3)) / 3 / 1024,
                                    saved / 1024, shrink / 1024, on[0] / 1024, off[0] / 1024))
sys.exit(0 if saved >= 0.5 * shrink else 1)
EOF
  ); then pass "rss_ldm_4_ranks ($msg)"; else fail rss_ldm_4_ranks "$msg"; fi
fi

finish
